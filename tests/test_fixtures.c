/* The CPU reference path against the seeds' own PyTorch models (../shared/fixtures).
 *
 * For each of the six single-step fixtures: build the model from the file's metadata, load param.*,
 * run forward and backward on input_ids / target_ids, and compare, tensor by tensor,
 *     rel = max|ours - ref| / max|ref|
 * with the bounds of fixtures/README.md: logits, ce_per_token, loss <= 1e-5; every gradient <= 1e-4.
 * A parameter the seed gives no gradient must get none here either (and vice versa).
 * The test fails (not skips) on a missing tensor; it skips only when ../shared is absent.
 *
 * Ties. With binarised activations an XNOR product whose group dots all cancel is exactly 0 in exact
 * arithmetic; onebit computes it exactly (0, so sign +1), while the seed's float32 GEMM leaves rounding
 * noise of either sign (~1e-8). Where such a value reaches the next binariser (the attention output at
 * a sequence's first position is that position's v, SwiGLU's u feeds the down projection), the seed's
 * sign is a coin flip that no other implementation can reproduce, and at these tiny shapes it is
 * common (exact cancellation is likely with 64-128 signs per group). The fixture files do not hold
 * those signs, so tests/data/seed_tie_signs.txt records them: every binariser input the seed's own
 * forward on these fixtures left negative within 1e-5 of zero, recorded once by running the seed's
 * model (tests/data/seed_tie_signs.py, the fixtures' own float32 procedure). The test counts the
 * binariser inputs that are exactly 0 here, takes the listed ones as -1, checks that every listed
 * entry is such a tie, and then applies the unchanged bounds. The number of ties is
 * printed. Nothing else is loosened. */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"
#include "test_util.h"
#include <math.h>

#define BOUND_OUT 1e-5  /* logits, per-token CE, loss (float32 both sides, different summation order) */
#define BOUND_GRAD 1e-4 /* every gradient */

static double rel_err(const float *a, const float *ref, size_t n, double *max_ref_out) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d; /* NaN propagates as a failure */
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    if (max_ref_out) *max_ref_out = mr;
    return mr > 0 ? md / mr : md;
}

static void compare(const char *fixture, const char *what, const float *ours, const ob_safetensors *st, const char *ref_name,
                    size_t n, double bound, double *worst, char *worst_name) {
    char name[256];
    snprintf(name, sizeof name, "%s/%s", fixture, what);
    float *ref = (float *)malloc(n * sizeof(float));
    if (ob_safetensors_read_f32(st, ref_name, ref, (int64_t)n) != OB_OK) {
        tu_report("FAIL", name, "%s", ob_last_error());
        free(ref);
        return;
    }
    double mr, e = rel_err(ours, ref, n, &mr);
    TU_CHECK(e <= bound, name, "max|ours-ref|/max|ref| = %.3e (bound %.0e, %.1f%% of it), max|ref| = %.3e", e, bound, 100.0 * e / bound, mr);
    if (worst && (e > *worst || e != e)) { *worst = e; snprintf(worst_name, 128, "%s", what); }
    free(ref);
}

#include "test_ties.h"

static void run_fixture(const char *dir, const char *fixture) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/%s.safetensors", dir, fixture);
    ob_safetensors st;
    if (ob_safetensors_open(&st, path) != OB_OK) { tu_report("FAIL", fixture, "%s", ob_last_error()); return; }
    ob_config cfg;
    ob_model m;
    if (ob_config_from_metadata(&cfg, &st) != OB_OK || ob_model_init(&m, &cfg) != OB_OK) {
        tu_report("FAIL", fixture, "model: %s", ob_last_error());
        ob_safetensors_close(&st);
        return;
    }
    if (ob_model_load_safetensors(&m, &st, "param.") != OB_OK) {
        tu_report("FAIL", fixture, "load: %s", ob_last_error());
        ob_model_free(&m); ob_safetensors_close(&st);
        return;
    }
    const ob_st_tensor *ids = ob_safetensors_find(&st, "input_ids");
    if (!ids || ids->ndim != 2) { tu_report("FAIL", fixture, "input_ids missing"); ob_model_free(&m); ob_safetensors_close(&st); return; }
    int B = (int)ids->shape[0], T = (int)ids->shape[1];
    int32_t *in = (int32_t *)malloc((size_t)B * T * 4), *tg = (int32_t *)malloc((size_t)B * T * 4);
    if (ob_safetensors_read_i32(&st, "input_ids", in, B * T) || ob_safetensors_read_i32(&st, "target_ids", tg, B * T)) {
        tu_report("FAIL", fixture, "%s", ob_last_error());
    } else {
        size_t V = (size_t)cfg.vocab_size;
        tie_ctx ties;
        memset(&ties, 0, sizeof ties);
        ties.relu_like = cfg.activation == OB_ACT_RELU2 || cfg.activation == OB_ACT_RELU;
        if (cfg.binarize_act) {
            if (load_ties(&ties, fixture) != 0) tu_report("FAIL", fixture, "cannot read tests/data/seed_tie_signs.txt (run from the repository root)");
            m.binarize_hook = tie_hook;
            m.binarize_hook_ctx = &ties;
        }
        if (ob_model_forward(&m, in, tg, B, T) != OB_OK) tu_report("FAIL", fixture, "forward: %s", ob_last_error());
        if (cfg.binarize_act) {
            int unused = 0;
            for (int j = 0; j < ties.n_neg; j++) unused += !ties.used[j];
            char name[256];
            snprintf(name, sizeof name, "%s/ties", fixture);
            TU_CHECK(unused == 0, name, "%d binariser inputs exactly 0 (exact XNOR cancellations); the seed's rounding left %d of them "
                     "negative (tests/data/seed_tie_signs.txt); %d listed entries contradict onebit's sign", ties.n_ties, ties.n_flipped, unused);
        }
        compare(fixture, "logits", m.acts.logits, &st, "logits", (size_t)B * T * V, BOUND_OUT, NULL, NULL);
        compare(fixture, "ce_per_token", m.acts.ce, &st, "ce_per_token", (size_t)B * T, BOUND_OUT, NULL, NULL);
        compare(fixture, "loss", &m.loss, &st, "loss", 1, BOUND_OUT, NULL, NULL);
        ob_model_zero_grad(&m);
        if (ob_model_backward(&m, 1.0f) != OB_OK) {
            tu_report("FAIL", fixture, "backward: %s", ob_last_error());
        } else {
            double worst = 0.0;
            char worst_name[128] = "-";
            int n_grads = 0;
            for (int i = 0; i < m.n_tensors; i++) {
                const ob_tensor_info *t = &m.tensors[i];
                char gname[160], label[200];
                snprintf(gname, sizeof gname, "grad.%s", t->name);
                int seed_has = ob_safetensors_find(&st, gname) != NULL;
                if (seed_has != t->has_grad) {
                    snprintf(label, sizeof label, "%s/grad.%s", fixture, t->name);
                    tu_report("FAIL", label, "the seed %s a gradient, onebit %s", seed_has ? "has" : "has no", t->has_grad ? "computes one" : "computes none");
                    continue;
                }
                if (!seed_has) continue;
                snprintf(label, sizeof label, "grad.%s", t->name);
                compare(fixture, label, m.grads + t->offset, &st, gname, t->numel, BOUND_GRAD, &worst, worst_name);
                n_grads++;
            }
            char name[256];
            snprintf(name, sizeof name, "%s/gradients", fixture);
            TU_CHECK(worst <= BOUND_GRAD && n_grads > 0, name, "%d gradient tensors, worst %s at %.3e (bound %.0e)", n_grads, worst_name, worst, BOUND_GRAD);
        }
        free(ties.neg);
        free(ties.used);
    }
    free(in); free(tg);
    ob_model_free(&m);
    ob_safetensors_close(&st);
}

int main(void) {
    static const char *fixtures[] = {"xnor_mode2_signsq", "xnor_mode1_relu2_smear_scalefp8", "xnor_mode2_attnres2",
                                     "xnor_mode1_swiglu_attnres1_smear", "bwn_mode0_untied_tanh", "binary_smear_vocabbias"};
    const char *dir = tu_shared_dir();
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        if (!dir) { tu_report("SKIP", fixtures[i], "../shared (or $ONEBIT_SHARED) is absent: no seed fixtures to compare with"); continue; }
        run_fixture(dir, fixtures[i]);
    }
    return tu_exit();
}
