/* The model's bookkeeping and its backward pass, independently of the seed fixtures:
 * parameter counts of the seed configurations, configuration errors, the safetensors reader and
 * writer, and a finite-difference check of every gradient kind on configurations the fixtures do not
 * cover (depth recurrence, ternary weights, relu / leaky relu, SwiGLU with sub-layer AttnRes, block
 * AttnRes, untied tanh head, SmearGate). */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"
#include "test_util.h"
#include <math.h>

static void test_param_counts(void) {
    ob_config c;
    ob_config_preset(&c, "xnor-10min");
    size_t n = ob_model_count_params(&c);
    TU_CHECK(n == 117618768, "params_xnor_10min", "%zu parameters (the seed's log: 117,618,768)", n);
    ob_config_preset(&c, "binary-50k");
    n = ob_model_count_params(&c);
    TU_CHECK(n == 106154616, "params_binary_50k", "%zu parameters (the seed's log: 106,154,616)", n);
    /* the binary parameters of the XNOR model: the four block matrices */
    ob_config_preset(&c, "xnor-10min");
    ob_model m;
    if (ob_model_init(&m, &c) != OB_OK) { tu_report("FAIL", "params_binary_part", "%s", ob_last_error()); return; }
    size_t nb = 0;
    for (int i = 0; i < m.n_tensors; i++) if (m.tensors[i].kind == OB_PARAM_QUANT) nb += m.tensors[i].numel;
    TU_CHECK(nb == 115343360, "params_binary_part", "%zu binary weights (seed: 115,343,360)", nb);
    const ob_tensor_info *t = ob_model_find(&m, "blocks.3.attn.c_qkv.weight");
    TU_CHECK(t && t->shape[0] == 2048 && t->shape[1] == 1024 && t->group == OB_GROUP_MUON, "param_table_names",
             "blocks.3.attn.c_qkv.weight [%d, %d], Muon group", t ? t->shape[0] : -1, t ? t->shape[1] : -1);
    ob_model_free(&m);
}

static void test_config_errors(void) {
    ob_config c;
    ob_config_default(&c);
    int r1 = ob_config_set(&c, "NUM_LAYERZ", "3");
    int ok1 = r1 == OB_ERR_ARG && strstr(ob_last_error(), "NUM_LAYERZ");
    int r2 = ob_config_set(&c, "MODEL_DIM", "12x");
    int ok2 = r2 == OB_ERR_ARG && strstr(ob_last_error(), "12x");
    int r3 = ob_config_set(&c, "ACTIVATION", "gelu");
    int ok3 = r3 == OB_ERR_ARG && strstr(ob_last_error(), "gelu");
    ob_config_set(&c, "MODEL_DIM", "1001");
    int r4 = ob_config_validate(&c);
    int ok4 = r4 == OB_ERR_ARG && strstr(ob_last_error(), "1001");
    ob_config_default(&c);
    int r5 = ob_config_set(&c, "BINARIZE_ACTIVATIONS", "7");
    TU_CHECK(ok1 && ok2 && ok3 && ok4 && r5 == OB_OK && c.binarize_act == 2, "config_errors",
             "unknown key, bad integer, unknown activation and an indivisible width are errors naming the value; mode 7 is the seed's mode 2");
}

static void test_safetensors(void) {
    ob_config c;
    ob_config_preset(&c, "tiny");
    ob_model a, b;
    ob_model_init(&a, &c);
    ob_model_init(&b, &c);
    ob_model_init_weights(&a, 7);
    const char *path = "/tmp/onebit_test_model.safetensors";
    int r = ob_model_save_safetensors(&a, path);
    ob_safetensors st;
    if (!r) r = ob_safetensors_open(&st, path);
    if (!r) { r = ob_model_load_safetensors(&b, &st, ""); ob_safetensors_close(&st); }
    int same = !r && !memcmp(a.params, b.params, a.n_params * sizeof(float));
    TU_CHECK(same, "safetensors_roundtrip", "%zu parameters written and read back bit for bit%s%s", a.n_params, r ? ": " : "", r ? ob_last_error() : "");
    /* malformed files: truncated, header length past the end, an offset past the data */
    size_t size;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f) { fseek(f, 0, SEEK_END); size = (size_t)ftell(f); rewind(f); buf = (uint8_t *)malloc(size); if (fread(buf, 1, size, f) != size) size = 0; fclose(f); }
    int errs = 0, total = 0;
    if (buf) {
        size_t cuts[] = {0, 4, 8, 20, size / 2, size - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
            uint8_t *copy = (uint8_t *)malloc(cuts[i] + 1);
            memcpy(copy, buf, cuts[i]);
            total++;
            if (ob_safetensors_parse(&st, copy, cuts[i], "cut.safetensors") == OB_ERR_FORMAT && strstr(ob_last_error(), "cut.safetensors")) errs++;
            else ob_safetensors_close(&st);
        }
        uint8_t *copy = (uint8_t *)malloc(size);
        memcpy(copy, buf, size);
        copy[7] = 0x40; /* header length ~4.6e18 */
        total++;
        if (ob_safetensors_parse(&st, copy, size, "len.safetensors") == OB_ERR_FORMAT) errs++; else ob_safetensors_close(&st);
        copy = (uint8_t *)malloc(size);
        memcpy(copy, buf, size);
        char *hit = strstr((char *)copy + 8, "\"data_offsets\":[0,");
        if (hit) hit[16] = '9'; /* the first tensor now starts at 9: its size no longer matches */
        total++;
        if (hit && ob_safetensors_parse(&st, copy, size, "off.safetensors") == OB_ERR_FORMAT) errs++; else if (hit) ob_safetensors_close(&st);
        free(buf);
    }
    TU_CHECK(total > 0 && errs == total, "safetensors_malformed", "%d of %d malformed files refused with a format error naming the file", errs, total);
    remove(path);
    ob_model_free(&a);
    ob_model_free(&b);
}

/* Directional central differences: for every tensor, the loss along the unit direction of its
 * gradient, (L(w + h u) - L(w - h u)) / 2h, must equal |g| (and along a random direction r, g . r).
 * A whole-tensor direction moves the loss by far more than float32 rounding, unlike a single
 * element. Quantised matrices are perturbed in their effective (quantised) form: the straight-through
 * gradient of the latent weight is the gradient of the effective weight. */
static double loss_at(ob_model *m, const int32_t *x, const int32_t *y, int B, int T, int quant) {
    m->quantized = quant; /* quantised: keep the edited effective weights; else requantise */
    ob_model_forward(m, x, y, B, T);
    return m->loss;
}

static void fd_check(const char *name, ob_config *c) {
    ob_model m;
    if (ob_model_init(&m, c) != OB_OK) { tu_report("FAIL", name, "%s", ob_last_error()); return; }
    ob_model_init_weights(&m, 11);
    ob_rng rng;
    ob_rng_seed(&rng, 5);
    /* move every parameter off its init so that every path carries gradient */
    for (size_t i = 0; i < m.n_params; i++) m.params[i] += 0.05f * ob_rng_normal(&rng);
    int B = 2, T = 16, V = c->vocab_size;
    int32_t x[32], y[32];
    for (int i = 0; i < B * T; i++) { x[i] = (int32_t)(ob_rng_u64(&rng) % (uint64_t)V); y[i] = (int32_t)(ob_rng_u64(&rng) % (uint64_t)V); }
    ob_model_quantize(&m);
    ob_model_zero_grad(&m);
    if (ob_model_forward(&m, x, y, B, T) || ob_model_backward(&m, 1.0f)) { tu_report("FAIL", name, "%s", ob_last_error()); ob_model_free(&m); return; }
    double worst = 0.0;
    char worst_name[96] = "-";
    int checked = 0;
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const ob_tensor_info *t = &m.tensors[ti];
        if (!t->has_grad) continue;
        const float *g = m.grads + t->offset;
        int quant = t->kind == OB_PARAM_QUANT;
        float *w = (quant ? m.qparams : m.params) + t->offset;
        double gn = 0.0, wn = 0.0;
        for (size_t k = 0; k < t->numel; k++) { gn += (double)g[k] * g[k]; wn += (double)w[k] * w[k]; }
        gn = sqrt(gn);
        if (gn < 1e-7) continue;
        float *save = (float *)malloc(t->numel * sizeof(float)), *dir = (float *)malloc(t->numel * sizeof(float));
        memcpy(save, w, t->numel * sizeof(float));
        for (int kind = 0; kind < 2; kind++) {
            /* kind 0: the gradient direction; kind 1: gradient + an equal-norm random direction */
            double dn = 0.0, want = 0.0;
            for (size_t k = 0; k < t->numel; k++) {
                dir[k] = (float)(g[k] / gn) + (kind ? ob_rng_normal(&rng) / sqrtf((float)t->numel) : 0.0f);
                dn += (double)dir[k] * dir[k];
            }
            dn = sqrt(dn);
            for (size_t k = 0; k < t->numel; k++) { dir[k] = (float)(dir[k] / dn); want += (double)g[k] * dir[k]; }
            double h = 1e-3 * fmax(sqrt(wn), 1.0);
            for (size_t k = 0; k < t->numel; k++) w[k] = save[k] + (float)h * dir[k];
            double lp = loss_at(&m, x, y, B, T, quant);
            for (size_t k = 0; k < t->numel; k++) w[k] = save[k] - (float)h * dir[k];
            double lm = loss_at(&m, x, y, B, T, quant);
            memcpy(w, save, t->numel * sizeof(float));
            /* allowed: 1% of |g|, the largest directional derivative, plus the float32 resolution of the
             * loss (a few ulps of it) divided by the step */
            double noise = 8.0 * (double)(nextafterf((float)lp, INFINITY) - (float)lp) / (2.0 * h);
            double fd = (lp - lm) / (2.0 * h), e = fabs(fd - want) / (gn + 10.0 * noise);
            if (e > worst) { worst = e; snprintf(worst_name, sizeof worst_name, "%s (%s)", t->name, kind ? "random" : "gradient"); }
            checked++;
        }
        free(save);
        free(dir);
    }
    loss_at(&m, x, y, B, T, 0);
    ob_model_free(&m);
    TU_CHECK(checked > 0 && worst < 3e-2, name, "%d directional derivatives, worst |fd - g.u| / (|g| + 10 float32 noise) %.2e at %s (bound 3e-2: float32 loss, O(h^2) truncation)", checked, worst, worst_name);
}

static void test_gradients(void) {
    ob_config c;
    /* small models; weights-only binarisation (activation binarisation has no derivative), no fp8
     * rounding (a piecewise-constant function of the weights) */
    ob_config_preset(&c, "tiny");
    c.vocab_size = 64; c.num_layers = 2; c.model_dim = 32; c.num_heads = 4; c.num_kv_heads = 2; c.embed_dim = 16;
    c.group_size = 16; c.train_seq_len = 16; c.binarize_act = 0; c.fp8_qat = 0; c.storage_exact = 0;
    ob_config base = c;
    c.recurrence = 3; c.smear = 1;
    fd_check("fd_recurrence_3x2_smear", &c);
    c = base; c.weight_quant = OB_WEIGHTS_TERNARY; c.softcap_type = OB_SOFTCAP_TANH; c.logit_softcap = 30.0f; c.recurrence = 2;
    fd_check("fd_ternary_recurrence_tanh", &c);
    c = base; c.activation = OB_ACT_SWIGLU; c.attn_res = 1; c.smear = 1;
    fd_check("fd_swiglu_attnres1_smear", &c);
    c = base; c.activation = OB_ACT_LEAKY_RELU; c.attn_res = 2; c.num_layers = 3;
    fd_check("fd_leaky_attnres2", &c);
    c = base; c.activation = OB_ACT_RELU; c.tie_embeddings = 0; c.embed_dim = 0; c.vocab_bias = 1; c.rope_type = OB_ROPE_PLAIN;
    fd_check("fd_relu_untied_vocab_bias", &c);
    c = base; c.activation = OB_ACT_SIGNSQ; c.num_layers = 5; c.qk_norm = 0; c.normed_proj = 0;
    fd_check("fd_signsq_unet5_no_norms", &c);
}

/* The ternary quantiser (BitNet b1.58, the ternary seeds): alpha = max(mean|w|, 1e-8) per group,
 * q = clamp(round(w / alpha), -1, 1) with round half to even, effective weight q * alpha. */
static void test_ternary_quantiser(void) {
    const float w[16] = {0.3f, -0.05f, 1.2f, -0.9f, /* alpha 0.6125: w/a = 0.49, -0.08, 1.96, -1.47 */
                         0.5f, 1.5f, -0.5f, -1.5f,  /* alpha 1: the ties 0.5 -> 0 and 1.5 -> 2 -> 1 */
                         0.0f, 0.0f, 0.0f, 0.0f,    /* alpha clamps to 1e-8, every q 0 */
                         2.0f, 2.0f, 2.0f, -2.0f};  /* alpha 2: all +-1 */
    const float want_q[16] = {0, 0, 1, -1, 0, 1, 0, -1, 0, 0, 0, 0, 1, 1, 1, -1};
    const float want_alpha[4] = {0.6125f, 1.0f, 1e-8f, 2.0f};
    float wq[16], alpha[4];
    ob_ternarize_weights_ref(wq, alpha, w, 16, 4);
    int bad = 0;
    for (int gi = 0; gi < 4; gi++) {
        if (fabsf(alpha[gi] - want_alpha[gi]) > 1e-7f * want_alpha[gi]) bad++;
        for (int k = 0; k < 4; k++) if (wq[4 * gi + k] != want_q[4 * gi + k] * alpha[gi]) bad++;
    }
    TU_CHECK(bad == 0, "ternary_quantiser", "4 hand-computed groups (rounding below and above 1/2, ties to even, clipping, an all-zero "
             "group's 1e-8 floor): %d mismatches", bad);

    /* the straight-through gradient is the identity, with no clipping mask: latent weights far
     * outside [-1.5 alpha, 1.5 alpha] still receive the gradient of their effective weight, which the
     * finite-difference check (fd_ternary_recurrence_tanh) verifies */
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.vocab_size = 64; c.num_layers = 2; c.model_dim = 32; c.num_heads = 4; c.num_kv_heads = 2; c.embed_dim = 16;
    c.group_size = 16; c.train_seq_len = 16; c.binarize_act = 0; c.fp8_qat = 0; c.storage_exact = 0;
    c.weight_quant = OB_WEIGHTS_TERNARY; c.recurrence = 2;
    ob_model m;
    if (ob_model_init(&m, &c)) { tu_report("FAIL", "ternary_ste", "%s", ob_last_error()); return; }
    ob_model_init_weights(&m, 3);
    ob_rng rng;
    ob_rng_seed(&rng, 4);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] += 0.05f * ob_rng_normal(&rng);
    const ob_tensor_info *t = ob_model_find(&m, "blocks.0.mlp.fc.weight");
    float *wt = m.params + t->offset;
    for (size_t k = 0; k < t->numel; k += 7) wt[k] *= 8.0f; /* some far beyond the clip */
    int32_t x[32], y[32];
    for (int i = 0; i < 32; i++) { x[i] = (int32_t)(ob_rng_u64(&rng) % 64); y[i] = (int32_t)(ob_rng_u64(&rng) % 64); }
    ob_model_zero_grad(&m);
    int r = ob_model_forward(&m, x, y, 2, 16);
    if (!r) r = ob_model_backward(&m, 1.0f);
    size_t clipped = 0, with_grad = 0, zeros = 0;
    for (size_t k = 0; !r && k < t->numel; k++) {
        float a = m.qalpha[t->alpha_offset + k / (size_t)c.group_size];
        if (fabsf(wt[k]) > 1.5f * a) { clipped++; with_grad += m.grads[t->offset + k] != 0.0f; }
        zeros += m.qparams[t->offset + k] == 0.0f;
    }
    TU_CHECK(!r && clipped > 50 && with_grad == clipped && zeros > 0, "ternary_ste",
             "%zu latent weights beyond 1.5 alpha (clipped to +-alpha), %zu of them with a gradient; %zu weights quantised to 0 %s",
             clipped, with_grad, zeros, r ? ob_last_error() : "");
    ob_model_free(&m);
}

int main(void) {
    test_param_counts();
    test_config_errors();
    test_safetensors();
    test_gradients();
    test_ternary_quantiser();
    return tu_exit();
}
