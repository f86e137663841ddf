/* libFuzzer target for the checkpoint loader (onebit_muon.h). The input is a checkpoint of a very
 * small model; the harness re-signs its checksum so mutations reach the header parser and the size,
 * model and stream-position checks. A refused checkpoint must leave the run unchanged; an accepted
 * one must hold finite-or-not floats only where the arrays are (nothing else is read).
 * With -DOB_FUZZ_SEED_MAIN it instead writes seed checkpoints into the folder argv[1]. */
#define ONEBIT_IMPLEMENTATION
#include "../../onebit_muon.h"

static int32_t fz_tokens[4096];

/* a run with no files: a 1-layer d 16 model, its optimizer, a token stream in memory */
static void fz_setup(ob_run *r, int ema) {
    memset(r, 0, sizeof *r);
    ob_run_options_preset(&r->opt, "tiny");
    ob_config *c = &r->opt.model;
    c->vocab_size = 16; c->num_layers = 1; c->model_dim = 16; c->num_heads = 1; c->num_kv_heads = 1; c->mlp_mult = 1;
    c->embed_dim = 8; c->group_size = 16; c->train_seq_len = 8;
    r->opt.optim.ema = ema;
    for (int i = 0; i < 4096; i++) fz_tokens[i] = (i * 7) % 16;
    if (ob_model_init(&r->model, c) || ob_optimizer_init(&r->optim, &r->model, &r->opt.optim) ||
        ob_token_stream_open_memory(&r->data.train, fz_tokens, 4096, 16))
        abort();
    ob_model_init_weights(&r->model, 1);
}

#ifndef OB_FUZZ_SEED_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ob_run run[2];
    static float *before;
    static int ready;
    if (!ready) {
        fz_setup(&run[0], 0);
        fz_setup(&run[1], 1);
        before = (float *)malloc(run[0].model.n_params * sizeof(float));
        ready = 1;
    }
    uint8_t *a = (uint8_t *)malloc(size ? size : 1);
    memcpy(a, data, size);
    if (size >= 24) {
        uint32_t hlen;
        memcpy(&hlen, a + 8, 4);
        if (hlen <= size - 24) { /* re-sign: the checksum covers the header and every array */
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t i = 24; i < size; i++) { h ^= a[i]; h *= 0x100000001b3ull; }
            memcpy(a + 12, &h, 8);
        }
    }
    int with_ema = 0; /* the run that keeps an EMA for a header that says so */
    for (size_t i = 0; i + 6 <= size && i < 1024 && !with_ema; i++) with_ema = !memcmp(a + i, "\nema=1", 6);
    ob_run *r = &run[with_ema];
    memcpy(before, r->model.params, r->model.n_params * sizeof(float));
    int64_t step = r->step;
    size_t pos = r->data.train.pos;
    if (ob_checkpoint_load_bytes(r, a, size, "fuzz.ob1c") != OB_OK) {
        /* refused: nothing changed */
        if (r->step != step || r->data.train.pos != pos || memcmp(before, r->model.params, r->model.n_params * sizeof(float))) abort();
    }
    free(a);
    return 0;
}
#else
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    for (int ema = 0; ema < 2; ema++) {
        ob_run r;
        fz_setup(&r, ema);
        snprintf(r.opt.checkpoint_dir, sizeof r.opt.checkpoint_dir, "%s", argv[1]);
        r.step = 3 + ema;
        r.data.train.pos = 100;
        if (ob_checkpoint_save(&r)) { fprintf(stderr, "%s\n", ob_last_error()); return 1; }
        ob_run_free(&r);
    }
    return 0;
}
#endif
