/* Reliability of runs on the CPU path (onebit_muon.h's loop): run-to-run determinism, kill-and-resume
 * equality (SIGINT / SIGTERM write a checkpoint, --resume continues bit-identically), the fallback
 * from a damaged newest checkpoint, refused bad checkpoints that change nothing, and a non-finite
 * gradient that stops (or, by option, skips) the step before any weight changes.
 * The runs train a small model on the embedded default (this repository's text), so no data is
 * needed; they are run from the repository root, as make test does. */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_muon.h"
#include "test_util.h"
#include <math.h>
#include <signal.h>
#include <unistd.h>

static char g_tmp[256];

static void small_options(ob_run_options *o, const char *name, int iterations) {
    ob_run_options_preset(o, "tiny");
    o->model.num_layers = 2; o->model.model_dim = 64; o->model.num_heads = 2; o->model.num_kv_heads = 1;
    o->model.embed_dim = 32; o->model.group_size = 32; o->model.train_seq_len = 64;
    o->batch_tokens = 512; o->accum = 2; /* two micro-batches: the accumulation is checked too */
    o->sched.iterations = iterations; o->sched.max_wallclock_ms = 0.0; o->sched.warmdown_fraction = 0.5;
    o->train_log_every = 0; o->val_loss_every = 0; o->seq_len_schedule = 0;
    snprintf(o->out_dir, sizeof o->out_dir, "%s/logs", g_tmp);
    snprintf(o->checkpoint_dir, sizeof o->checkpoint_dir, "%s/ck_%s", g_tmp, name);
    snprintf(o->run_id, sizeof o->run_id, "%s", name);
}

/* A finished run's record: losses of every step and the final weights. */
typedef struct { int n; float loss[64]; int64_t step[64]; float *params; size_t n_params; int status; char err[1100]; } run_record;

static void record_free(run_record *rr) { free(rr->params); memset(rr, 0, sizeof *rr); }

/* ---- backends wrapping the CPU step: raise a signal after step k, or poison a gradient at step k ---- */
static int g_signal_after = -1, g_signal = SIGINT, g_poison_at = -1, g_calls = 0;
static float *g_params_before_poison;
static const char *g_poison_tensor = "blocks.1.mlp.fc.weight";

static int wrapped_step(ob_backend *b, ob_token_stream *s, int64_t batch_tokens, int seq_len, int accum, float lr_scale,
                        float momentum, float *loss) {
    int call = g_calls++;
    if (call != g_poison_at) {
        int e = ob_train_step(b->host, b->host_opt, s, batch_tokens, seq_len, accum, lr_scale, momentum, loss);
        if (!e && call == g_signal_after) raise(g_signal);
        return e;
    }
    /* ob_train_step's body with one gradient made non-finite before the optimizer */
    ob_model *m = b->host;
    int64_t local = ob_loader_local_tokens(batch_tokens, 1, accum);
    int32_t *x = (int32_t *)malloc((size_t)local * sizeof(int32_t)), *y = (int32_t *)malloc((size_t)local * sizeof(int32_t));
    ob_model_zero_grad(m);
    int e = OB_OK;
    for (int a = 0; a < accum && !e; a++) {
        e = ob_loader_next(s, batch_tokens, 1, 0, accum, x, y);
        if (!e) e = ob_model_forward(m, x, y, (int)(local / seq_len), seq_len);
        if (!e) e = ob_model_backward(m, 1.0f / (float)accum);
    }
    free(x);
    free(y);
    if (e) return e;
    *loss = m->loss;
    const ob_tensor_info *t = ob_model_find(m, g_poison_tensor);
    if (!t) return ob_set_error(OB_ERR_ARG, "test: no tensor %s", g_poison_tensor);
    m->grads[t->offset + t->numel / 2] = NAN;
    g_params_before_poison = (float *)malloc(m->n_params * sizeof(float));
    memcpy(g_params_before_poison, m->params, m->n_params * sizeof(float));
    return ob_optimizer_step(b->host_opt, lr_scale, momentum);
}

static void run_once(ob_run_options *o, int wrapped, run_record *rr) {
    memset(rr, 0, sizeof *rr);
    ob_run r;
    g_calls = 0;
    rr->status = ob_run_setup(&r, o);
    if (!rr->status) {
        ob_backend_cpu(&r.be, &r.model, &r.optim);
        if (wrapped) r.be.train_step = wrapped_step;
        rr->status = ob_run_train(&r);
    }
    snprintf(rr->err, sizeof rr->err, "%s", rr->status ? ob_last_error() : "");
    for (int i = 0; i < r.n_hist && i < 64; i++) { rr->step[i] = (int64_t)r.hist[2 * i]; rr->loss[i] = r.hist[2 * i + 1]; }
    rr->n = r.n_hist < 64 ? r.n_hist : 64;
    if (r.model.params) {
        rr->n_params = r.model.n_params;
        rr->params = (float *)malloc(rr->n_params * sizeof(float));
        memcpy(rr->params, r.model.params, rr->n_params * sizeof(float));
    }
    ob_run_free(&r);
}

/* the losses of b equal a's at the same steps, bit for bit */
static int same_tail(const run_record *a, const run_record *b, int *compared) {
    *compared = 0;
    for (int i = 0; i < b->n; i++)
        for (int j = 0; j < a->n; j++)
            if (a->step[j] == b->step[i]) {
                (*compared)++;
                if (memcmp(&a->loss[j], &b->loss[i], sizeof(float))) return 0;
            }
    return *compared > 0;
}

static int count_checkpoints(const char *dir) {
    char paths[16][1200];
    return ob_checkpoint_list(dir, paths, 16);
}

int main(void) {
    if (!tu_path_exists("onebit.h")) { tu_report("FAIL", "run", "run from the repository root (the embedded default reads its text)"); return 1; }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/onebit_test_run_XXXXXX");
    if (!mkdtemp(g_tmp)) { tu_report("FAIL", "run", "mkdtemp failed"); return 1; }
    ob_run_options o;
    const int N = 12;

    /* 1. determinism: the same seed and data, twice */
    run_record a, a2;
    small_options(&o, "det", N);
    run_once(&o, 0, &a);
    run_once(&o, 0, &a2);
    int cmp = 0, same = same_tail(&a, &a2, &cmp);
    TU_CHECK(!a.status && !a2.status && a.n == N && same && cmp == N && !memcmp(a.params, a2.params, a.n_params * sizeof(float)),
             "run/determinism", "two runs of %d steps: %d losses bit-identical, weights %s (loss %.4f -> %.4f) %s", N, cmp,
             a.params && a2.params && !memcmp(a.params, a2.params, a.n_params * sizeof(float)) ? "bit-identical" : "DIFFER",
             a.n ? a.loss[0] : 0.0f, a.n ? a.loss[a.n - 1] : 0.0f, a.err);
    TU_CHECK(a.n == N && a.loss[N - 1] < a.loss[0], "run/loss_falls", "loss %.4f at step 1, %.4f at step %d", a.n ? a.loss[0] : 0.0f,
             a.n ? a.loss[a.n - 1] : 0.0f, N);

    /* 2. kill and resume: SIGINT after step 7 (checkpoints every 3 steps as well), then --resume */
    run_record b1, b2;
    small_options(&o, "resume", N);
    o.checkpoint_every = 3;
    g_signal_after = 6; g_signal = SIGINT; /* the 7th call */
    run_once(&o, 1, &b1);
    g_signal_after = -1;
    char latest[1200] = "";
    ob_checkpoint_latest(o.checkpoint_dir, latest, sizeof latest);
    TU_CHECK(b1.status == OB_ERR_INTERRUPTED && b1.n == 7 && strstr(latest, "ckpt_0000000007.ob1c") != NULL,
             "run/sigint_checkpoint", "SIGINT after step 7: status %d (%s), newest checkpoint %s", b1.status, b1.err, latest);
    TU_CHECK(count_checkpoints(o.checkpoint_dir) == 2, "run/keeps_two", "%d checkpoints kept (steps 7 and 6; 3 removed)",
             count_checkpoints(o.checkpoint_dir));
    o.resume = 1;
    run_once(&o, 0, &b2);
    same = same_tail(&a, &b2, &cmp);
    TU_CHECK(!b2.status && b2.n == N - 7 && same && cmp == N - 7 && !memcmp(a.params, b2.params, a.n_params * sizeof(float)),
             "run/resume_bit_identical", "resumed at step 7: the %d later losses and the final weights equal the uninterrupted run's bit for bit %s",
             cmp, b2.err);

    /* 3. a damaged newest checkpoint: reported, and the one before it is used; SIGTERM this time */
    run_record c1, c2;
    small_options(&o, "fallback", N);
    o.checkpoint_every = 4;
    g_signal_after = 8; g_signal = SIGTERM; /* stops after step 9; checkpoints 8 and 9 */
    run_once(&o, 1, &c1);
    g_signal_after = -1;
    ob_checkpoint_latest(o.checkpoint_dir, latest, sizeof latest);
    FILE *f = fopen(latest, "r+b");
    if (f) { fseek(f, 200, SEEK_SET); int ch = fgetc(f); fseek(f, 200, SEEK_SET); fputc(ch ^ 0x40, f); fclose(f); }
    o.resume = 1;
    run_once(&o, 0, &c2);
    same = same_tail(&a, &c2, &cmp);
    TU_CHECK(c1.status == OB_ERR_INTERRUPTED && !c2.status && c2.n == N - 8 && same && cmp == N - 8 && !memcmp(a.params, c2.params, a.n_params * sizeof(float)),
             "run/resume_fallback", "SIGTERM after step 9 (status %d); newest checkpoint damaged; resumed from step 8: %d losses and the weights equal %s",
             c1.status, cmp, c2.err);

    /* 4. bad checkpoints are refused with the file named, and the run is left as it was */
    {
        ob_run r;
        small_options(&o, "bad", N);
        o.resume = 0;
        int e = ob_run_setup(&r, &o);
        ob_backend_cpu(&r.be, &r.model, &r.optim);
        size_t n = 0;
        uint8_t *good = NULL;
        char path[1200];
        snprintf(path, sizeof path, "%s/ck_resume", g_tmp);
        ob_checkpoint_latest(path, path, sizeof path); /* step 12, the resumed run's last */
        FILE *g = fopen(path, "rb");
        if (g) { fseek(g, 0, SEEK_END); n = (size_t)ftell(g); fseek(g, 0, SEEK_SET); good = (uint8_t *)malloc(n); if (fread(good, 1, n, g) != n) n = 0; fclose(g); }
        float *before = (float *)malloc(r.model.n_params * sizeof(float));
        memcpy(before, r.model.params, r.model.n_params * sizeof(float));
        size_t pos0 = r.data.train.pos;
        struct { const char *name; size_t len; int flip; const char *expect; } cases[] = {
            {"truncated", n - 100, -1, "truncated"}, {"header_cut", 30, -1, "truncated"}, {"weights_flipped", n, (int)n - 5, "checksum"},
            {"magic", n, 0, "not a onebit checkpoint"}, {"version", n, 4, "version"}, {"empty", 0, -1, "not a onebit checkpoint"}};
        for (size_t i = 0; i < sizeof cases / sizeof *cases && !e && n > 200; i++) {
            uint8_t *bad = (uint8_t *)malloc(n);
            memcpy(bad, good, n);
            if (cases[i].flip >= 0) bad[cases[i].flip] ^= 0x01;
            int s = ob_checkpoint_load_bytes(&r, bad, cases[i].len, "ckpt_bad.ob1c");
            char name[64];
            snprintf(name, sizeof name, "run/bad_checkpoint/%s", cases[i].name);
            TU_CHECK(s == OB_ERR_FORMAT && strstr(ob_last_error(), "ckpt_bad.ob1c") && strstr(ob_last_error(), cases[i].expect) && r.step == 0 &&
                         r.data.train.pos == pos0 && !memcmp(before, r.model.params, r.model.n_params * sizeof(float)),
                     name, "refused: %s; weights, step and data position unchanged", ob_last_error());
            free(bad);
        }
        /* a checkpoint of another model (d 96 instead of 64) */
        ob_run r2;
        small_options(&o, "other", N);
        o.model.model_dim = 96;
        if (!e) e = ob_run_setup(&r2, &o);
        if (!e) {
            ob_backend_cpu(&r2.be, &r2.model, &r2.optim);
            int s = ob_checkpoint_load_bytes(&r2, good, n, path);
            TU_CHECK(s == OB_ERR_FORMAT && strstr(ob_last_error(), "not this run's"), "run/bad_checkpoint/other_model", "refused: %s", ob_last_error());
            ob_run_free(&r2);
        }
        /* the good one loads */
        int s = e || !n ? -1 : ob_checkpoint_load_bytes(&r, good, n, path);
        TU_CHECK(!e && s == OB_OK && r.step == N, "run/checkpoint_loads", "the intact checkpoint loads: step %lld %s", (long long)r.step, s ? ob_last_error() : "");
        /* a checkpoint folder that cannot be created: the save fails with the path named */
        snprintf(r.opt.checkpoint_dir, sizeof r.opt.checkpoint_dir, "%s/logs/det.txt/sub", g_tmp);
        s = ob_checkpoint_save(&r);
        TU_CHECK(s == OB_ERR_IO && strstr(ob_last_error(), "det.txt/sub"), "run/checkpoint_unwritable", "%s", ob_last_error());
        free(before);
        free(good);
        ob_run_free(&r);
    }

    /* 5. a non-finite gradient at step 5: stop before the weights change (naming the tensor and the
     *    last checkpoint), or skip the batch by option */
    run_record d1, d2;
    small_options(&o, "nan_stop", N);
    o.checkpoint_every = 2;
    g_poison_at = 4;
    run_once(&o, 1, &d1);
    int unchanged = g_params_before_poison && d1.params && !memcmp(g_params_before_poison, d1.params, d1.n_params * sizeof(float));
    free(g_params_before_poison);
    g_params_before_poison = NULL;
    TU_CHECK(d1.status == OB_ERR_NUMERIC && strstr(d1.err, g_poison_tensor) && strstr(d1.err, "ckpt_0000000004.ob1c") && unchanged && d1.n == 4,
             "run/nonfinite_stop", "stopped at step 5, weights those of step 4 (%s): %s", unchanged ? "unchanged" : "CHANGED", d1.err);
    small_options(&o, "nan_skip", N);
    o.on_nonfinite = 1;
    run_once(&o, 1, &d2);
    int finite = d2.params != NULL;
    for (size_t i = 0; finite && i < d2.n_params; i++) finite = isfinite(d2.params[i]);
    free(g_params_before_poison);
    g_params_before_poison = NULL;
    g_poison_at = -1;
    TU_CHECK(!d2.status && d2.n == N - 1 && d2.step[d2.n - 1] == N && finite, "run/nonfinite_skip",
             "ON_NONFINITE=skip: step 5 skipped, %d steps trained to step %lld, every weight finite %s", d2.n, (long long)(d2.n ? d2.step[d2.n - 1] : 0), d2.err);
    {
        ob_run_options p;
        ob_run_options_preset(&p, "tiny");
        int s1 = ob_run_options_set(&p, "ON_NONFINITE", "skip", NULL), s2 = ob_run_options_set(&p, "ON_NONFINITE", "ignore", NULL);
        TU_CHECK(!s1 && p.on_nonfinite == 1 && s2 == OB_ERR_ARG && strstr(ob_last_error(), "ignore"), "run/on_nonfinite_option", "skip accepted; 'ignore': %s", ob_last_error());
    }

    /* 6. the ternary seed's sequence warm-up: 128 -> 256 over the first 4 steps with NTK-aware RoPE
     *    scaling; afterwards the tables are the plain ones again (evaluation, artifact) */
    {
        small_options(&o, "ntk", 8);
        o.model.train_seq_len = 256; o.seq_len_schedule = 1; o.seq_warmup_steps = 4; o.rope_ntk = 1;
        ob_run r;
        ob_model fresh;
        int e = ob_run_setup(&r, &o);
        if (!e) { ob_backend_cpu(&r.be, &r.model, &r.optim); e = ob_run_train(&r); }
        if (!e) e = ob_model_init(&fresh, &o.model);
        size_t bytes = (size_t)256 * (64 / 2 / 2) * sizeof(float);
        int plain = !e && r.model.rope_base_scale == 1.0f && !memcmp(fresh.rope_cos, r.model.rope_cos, bytes) && !memcmp(fresh.rope_sin, r.model.rope_sin, bytes);
        float s128 = ob_rope_ntk_scale(128, 256, 32);
        int falls = !e && r.n_hist == 8 && isfinite(r.hist[15]) && r.hist[15] < r.hist[1];
        TU_CHECK(plain && falls && fabsf(s128 - powf(0.5f, 32.0f / 30.0f)) < 1e-6f, "run/seq_warmup_ntk",
                 "8 steps, the first 2 at 128 tokens with the RoPE base x %.4f (= 0.5^(32/30)), then 256: loss %.4f -> %.4f; the plain tables "
                 "restored after training: %s %s", s128, r.n_hist ? r.hist[1] : 0.0f, r.n_hist ? r.hist[2 * r.n_hist - 1] : 0.0f,
                 plain ? "yes" : "NO", e ? ob_last_error() : "");
        if (!e) ob_model_free(&fresh);
        ob_run_free(&r);
    }

    record_free(&a); record_free(&a2); record_free(&b1); record_free(&b2); record_free(&c1); record_free(&c2); record_free(&d1); record_free(&d2);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return tu_exit();
}
