# Test-data recorder (not part of onebit: onebit has no Python). It wrote tests/data/seed_tie_signs.txt
# once, on a machine with PyTorch, by running the seeds' own XNOR-Net model class on the four XNOR
# fixtures of ../shared/fixtures with the fixtures' float32 procedure, and checking that it reproduces
# each fixture's loss bit for bit. It records every binariser input that the seed's float32 forward
# leaves negative within 1e-5 of zero: the signs of rounding noise at exact XNOR cancellations, which
# the fixture files do not hold (see tests/test_fixtures.c). Usage, from a folder holding the four
# fixtures and train_gpt_cuda_xnor.py:  OUT=. python3 seed_tie_signs.py
import sys, os, torch
torch.Tensor.bfloat16 = lambda self, *a, **k: self   # the fixtures' float32 semantics
import importlib.util
here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("seed", os.path.join(here, "train_gpt_cuda_xnor.py"))
seed = importlib.util.module_from_spec(spec); spec.loader.exec_module(seed)
from safetensors.torch import load_file
from safetensors import safe_open
def make_model(meta):
    b = lambda k: meta[k] == 'True'
    seed._SCALE_FP8_STE = b('scale_fp8_ste')
    return seed.GPT(vocab_size=int(meta['vocab_size']), num_layers=int(meta['num_layers']), model_dim=int(meta['model_dim']),
        num_heads=int(meta['num_heads']), num_kv_heads=int(meta['num_kv_heads']), mlp_mult=int(meta['mlp_mult']),
        tie_embeddings=bool(int(meta['tie_embeddings'])), tied_embed_init_std=float(meta['tied_embed_init_std']),
        logit_softcap=float(meta['logit_softcap']), rope_base=float(meta['rope_base']), qk_gain_init=float(meta['qk_gain_init']),
        group_size=int(meta['group_size']), activation=meta['activation'], embed_dim=int(meta['embed_dim']),
        fp_storage=b('fp_storage'), softcap_type=meta['softcap_type'], rope_type=meta['rope_type'],
        yarn_max_len=int(meta['yarn_max_len']), train_seq_len=int(meta['train_seq_len']),
        binarize_act=b('binarize_act'), binarize_down=b('binarize_down'), smear=b('smear'), attn_res=int(meta['attn_res']))

site_of = {'attn.c_qkv': 0, 'attn.proj': 1, 'mlp.fc': 2, 'mlp.gate_up': 2, 'mlp.proj': 3}
out = open(os.path.join(os.environ.get('OUT', '/tmp'), 'seed_tie_signs.txt'), 'w')
def record(m, ids, tgt, label):
    """Runs one forward, writes the negative near-zero binariser inputs under label, returns the loss."""
    rec, handles = [], []
    def hook(layer, site, normed):
        def f(mod, inp, outp):
            if not mod.binarize_act: return
            x = inp[0].detach()
            if normed: x = torch.nn.functional.rms_norm(x, (x.size(-1),))   # what the binariser sees
            x = x.reshape(-1, x.shape[-1])
            rows, cols = torch.nonzero((x < 0) & (x > -1e-5), as_tuple=True)
            for r, c in zip(rows.tolist(), cols.tolist()): rec.append((layer, site, r, c))
        return f
    for i, blk in enumerate(m.blocks):
        for sub, mod in blk.named_modules():
            if sub in site_of:
                handles.append(mod.register_forward_hook(hook(i, site_of[sub], isinstance(mod, seed.NormedXNORLinear))))
    loss = m(ids.long(), tgt.long())
    for h in handles: h.remove()
    for (l, s, r, c) in rec: out.write(f"{label} {l} {s} {r} {c}\n")
    return loss, len(rec)

for name in ["xnor_mode2_signsq", "xnor_mode1_relu2_smear_scalefp8", "xnor_mode2_attnres2", "xnor_mode1_swiglu_attnres1_smear"]:
    path = os.path.join(here, name + ".safetensors")
    with safe_open(path, "pt") as f: meta = f.metadata()
    t = load_file(path)
    m = make_model(meta)
    m.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith('param.')}, strict=True)
    loss, n = record(m, t['input_ids'], t['target_ids'], name)
    assert loss.item() == t['loss'].item(), (name, loss.item(), t['loss'].item())
    print(name, 'loss reproduced', loss.item(), 'negative ties', n)

# the three-step fixture: each step's two micro-batches, with the weights the seed had before that step
name = "xnor_mode2_signsq_train3"
path = os.path.join(here, name + ".safetensors")
with safe_open(path, "pt") as f: meta = f.metadata()
t = load_file(path)
m = make_model(meta)
for s in range(3):
    prefix = 'param.' if s == 0 else f'after_step{s-1}.'
    m.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}, strict=True)
    losses = []
    for mb in range(2):
        loss, n = record(m, t[f'step{s}.micro{mb}.input_ids'], t[f'step{s}.micro{mb}.target_ids'], f"{name}.step{s}.micro{mb}")
        losses.append(loss.item()); print(name, s, mb, 'negative ties', n)
    print(name, 'step', s, 'mean loss', sum(losses) / 2, 'fixture', t['losses'][s].item())
out.close()
