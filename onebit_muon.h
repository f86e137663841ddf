/* onebit_muon.h - v0.1 - the seed trainers' optimizers and schedules, with a float32 CPU reference
 * and the CPU training step.  MIT licence (see onebit.h).
 *
 * DO THIS in exactly one C or C++ file (the same one that builds onebit.h is fine):
 *     #define ONEBIT_IMPLEMENTATION
 *     #include "onebit_muon.h"      (includes onebit.h)
 *
 * What it holds, by task:
 *   optimise    ob_optim_config_default / ob_optim_config_set (the seeds' env variable names),
 *               ob_optimizer_init / _step / _free: Muon (Nesterov momentum, row-RMS, Newton-Schulz,
 *               sqrt(max(1, rows/cols)), bf16-rounded update, decoupled decay), NorMuon, Adam, AdamW,
 *               the seeds' parameter grouping, global-norm clipping (onebit's option), EMA.
 *   schedule    ob_lr_multiplier (linear warmdown, cosine with warmup, warmup-constant-cosine;
 *               by steps or by wall clock), ob_muon_momentum_at, ob_seq_len_stages / ob_seq_len_at,
 *               ob_batch_tokens_at.
 *   train       ob_train_step: gradient accumulation over micro-batches from the seeds' loader,
 *               one optimizer step, on the CPU reference model.
 *
 * The seeds' quirks are the defaults, each named where it is implemented: the cosine schedule's lr of
 * exactly 0 at step 0, the untied head that never learns (head lr 0), GRAD_CLIP_NORM read and never
 * applied, weight decay applied to every Muon matrix even without a gradient.
 */
#ifndef ONEBIT_MUON_H
#define ONEBIT_MUON_H

#include "onebit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
 * Optimizer configuration
 * ---------------------------------------------------------------------------------------------- */
typedef enum ob_matrix_optimizer { OB_MATRIX_MUON = 0, OB_MATRIX_ADAMW = 1 } ob_matrix_optimizer;

typedef struct ob_optim_config {
    float matrix_lr;          /* Muon (MATRIX_LR) */
    float scalar_lr;          /* Adam on scales, gains, mixes, skips, gates, AttnRes (SCALAR_LR) */
    float tied_embed_lr;      /* Adam on tok_emb when tied (TIED_EMBED_LR) */
    float embed_lr;           /* ... when untied (EMBED_LR) */
    float head_lr;            /* the untied head: 0 in the seeds, whose HEAD_LR is never used */
    float beta1, beta2, adam_eps;
    float muon_momentum;      /* MUON_MOMENTUM */
    float muon_momentum_warmup_start; /* MUON_MOMENTUM_WARMUP_START */
    int muon_momentum_warmup_steps;   /* MUON_MOMENTUM_WARMUP_STEPS */
    int muon_backend_steps;   /* Newton-Schulz iterations (3 in the seeds) */
    float muon_wd;            /* decoupled weight decay of the matrices (MUON_WD) */
    int normuon;              /* 1: each row of the orthogonalised update to unit RMS (NorMuon) */
    int bf16_update;          /* 1: the Muon update is rounded to bf16 before it is applied (the seeds) */
    int matrix_optimizer;     /* ob_matrix_optimizer (MATRIX_OPTIMIZER) */
    float adam_wd;            /* AdamW decay in adamw mode (ADAM_WD); its lr is MATRIX_LR, as the seeds overwrite it */
    float grad_clip_norm;     /* onebit's option (0 = off). The seeds read GRAD_CLIP_NORM and never apply it:
                                 ob_optim_config_set accepts that name and ignores it, saying so. */
    int ema;                  /* keep an EMA of the weights (EMA) */
    float ema_decay;
    double ema_start_fraction; /* double, as the seeds' int(ITERATIONS * fraction) needs */
} ob_optim_config;

OB_DEF void ob_optim_config_default(ob_optim_config *c);   /* the seeds' script defaults */
/* Sets a field by its seed environment-variable name (MATRIX_LR, MUON_WD, ...) or onebit name
 * (grad_clip_norm, normuon, ...). A notice for inert seed knobs goes to *notice (may be NULL). */
OB_DEF int ob_optim_config_set(ob_optim_config *c, const char *key, const char *value, const char **notice);

/* ------------------------------------------------------------------------------------------------
 * Optimizer state and step
 * ---------------------------------------------------------------------------------------------- */
typedef struct ob_optimizer {
    ob_optim_config cfg;
    ob_model *model;          /* not owned */
    float *m1, *m2;           /* Adam moments (n_params; the Muon group's entries unused) */
    float *momentum;          /* Muon momentum buffers (n_params; other entries unused) */
    float *ema;               /* EMA of the weights (n_params), NULL unless cfg.ema */
    int ema_started, ema_steps;
    int64_t step;             /* optimizer steps taken (Adam's t - 1) */
    float last_grad_norm;     /* global gradient norm before clipping, from the last step */
    float *ns_scratch;        /* Newton-Schulz work space */
    size_t ns_floats;
} ob_optimizer;

OB_DEF int ob_optimizer_init(ob_optimizer *o, ob_model *m, const ob_optim_config *cfg);
OB_DEF void ob_optimizer_free(ob_optimizer *o);
/* One step from the gradients in m->grads (already averaged over micro-batches): every group's
 * learning rate is its base rate times lr_scale; momentum is Muon's for this step. A non-finite
 * gradient norm stops before any weight changes (OB_ERR_NUMERIC naming the first bad tensor). */
OB_DEF int ob_optimizer_step(ob_optimizer *o, float lr_scale, float momentum);
/* Newton-Schulz orthogonalisation of G (rows x cols) in place, as the seeds: X = G / (|G|_F + 1e-7),
 * transposed when rows > cols, then steps of X <- a X + (b A + c A^2) X with A = X X^T and
 * (a, b, c) = (3.4445, -4.7750, 2.0315). scratch holds 3 min(rows,cols)^2 + rows cols floats. */
OB_DEF void ob_newton_schulz(float *G, int rows, int cols, int steps, float *scratch);
/* EMA: starts at start_now (copying the weights), then ema <- d ema + (1 - d) w with
 * d = min(decay, (1 + k) / (10 + k)) on the k-th update. */
OB_DEF void ob_ema_update(ob_optimizer *o, int start_now);

/* ------------------------------------------------------------------------------------------------
 * Schedules
 * ---------------------------------------------------------------------------------------------- */
typedef enum ob_lr_kind {
    OB_LR_LINEAR_WARMDOWN = 0,  /* 1, then linear to 0 over the last warmdown_fraction (no warmup) */
    OB_LR_COSINE = 1,           /* linear warmup over warmup_steps, then cosine from 1 to 0 */
    OB_LR_WARMUP_CONSTANT_COSINE = 2 /* linear warmup, constant, cosine over the last cooldown_steps to final_fraction */
} ob_lr_kind;

typedef struct ob_schedule {
    int kind;                  /* ob_lr_kind */
    int iterations;            /* ITERATIONS */
    double max_wallclock_ms;   /* > 0: by elapsed training time against this cap (the seeds' formulas) */
    int warmup_steps;          /* LR_WARMUP_STEPS (cosine) / the ternary seed's 100 */
    double warmdown_fraction;  /* WARMDOWN_FRACTION (linear); double, as Python parses it: 1000 (1 - 0.2f) is 799 */
    int cooldown_steps;        /* warmup-constant-cosine: the cosine spans the last cooldown_steps */
    double final_fraction;     /* ... down to this multiple of the base lr (0.1) */
} ob_schedule;

/* The multiplier of every base lr before step `step`, after elapsed_ms of training (validation
 * excluded). Cosine by steps is exactly 0 at step 0 (the seeds' first step only fills the optimizer
 * state); by wall clock its warmup lasts warmup_steps average steps (1000 ms before the first). */
OB_DEF float ob_lr_multiplier(const ob_schedule *s, int64_t step, double elapsed_ms);
/* Muon momentum before step t: (1 - f) start + f final, f = min(t / warmup_steps, 1). */
OB_DEF float ob_muon_momentum_at(const ob_optim_config *c, int64_t step);
/* The seeds' sequence-length ladder: 128, 256, ... <= train_seq_len, plus train_seq_len if missing.
 * Returns the number of stages (at most 16). */
OB_DEF int ob_seq_len_stages(int train_seq_len, int *stages);
/* Stage min(floor(elapsed / (cap / n)), n - 1) by wall clock (cap > 0), else
 * min(floor(step / (iterations / n)), n - 1). */
OB_DEF int ob_seq_len_at(const int *stages, int n, int64_t step, int iterations, double elapsed_ms, double cap_ms);
/* The binary seed's batch schedule: start_tokens until fraction of the run (by wall clock when
 * cap_ms > 0, else steps), then full_tokens. start_tokens <= 0: always full_tokens. */
OB_DEF int64_t ob_batch_tokens_at(int64_t start_tokens, int64_t full_tokens, double fraction, int64_t step, int iterations,
                                  double elapsed_ms, double cap_ms);

/* ------------------------------------------------------------------------------------------------
 * The CPU training step
 * ---------------------------------------------------------------------------------------------- */
/* Zeroes the gradients, runs `accum` micro-batches of batch_tokens / accum tokens from the seeds'
 * loader (world 1), each backward of loss / accum, then one optimizer step. *loss_out is the mean
 * micro-batch loss (what the seeds log). */
OB_DEF int ob_train_step(ob_model *m, ob_optimizer *o, ob_token_stream *stream, int64_t batch_tokens, int seq_len, int accum,
                         float lr_scale, float momentum, float *loss_out);

#ifdef __cplusplus
}
#endif
#endif /* ONEBIT_MUON_H */

/* ================================================================================================
 * Implementation
 * ============================================================================================== */
#if defined(ONEBIT_IMPLEMENTATION) && !defined(ONEBIT_MUON_IMPLEMENTATION_DONE)
#define ONEBIT_MUON_IMPLEMENTATION_DONE

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

OB_DEF void ob_optim_config_default(ob_optim_config *c) {
    memset(c, 0, sizeof *c);
    c->matrix_lr = 0.04f;
    c->scalar_lr = 0.02f;
    c->tied_embed_lr = 0.02f;
    c->embed_lr = 0.6f;
    c->head_lr = 0.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->adam_eps = 1e-8f;
    c->muon_momentum = 0.95f;
    c->muon_momentum_warmup_start = 0.85f;
    c->muon_momentum_warmup_steps = 500;
    c->muon_backend_steps = 3;
    c->muon_wd = 0.0f;
    c->normuon = 0;
    c->bf16_update = 1;
    c->matrix_optimizer = OB_MATRIX_MUON;
    c->adam_wd = 0.05f;
    c->grad_clip_norm = 0.0f;
    c->ema = 0;
    c->ema_decay = 0.995f;
    c->ema_start_fraction = 0.6f;
}

static int ob__muon_float(const char *key, const char *v, float *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) return ob_set_error(OB_ERR_ARG, "%s: '%s' is not a finite number", key, v);
    *out = (float)x;
    return OB_OK;
}
static int ob__muon_int(const char *key, const char *v, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < -2147483647L || x > 2147483647L) return ob_set_error(OB_ERR_ARG, "%s: '%s' is not an integer", key, v);
    *out = (int)x;
    return OB_OK;
}

OB_DEF int ob_optim_config_set(ob_optim_config *c, const char *key, const char *v, const char **notice) {
    if (notice) *notice = NULL;
#define OB__F(name, field) if (!strcmp(key, name)) return ob__muon_float(key, v, &c->field)
#define OB__I(name, field) if (!strcmp(key, name)) return ob__muon_int(key, v, &c->field)
    OB__F("MATRIX_LR", matrix_lr); OB__F("matrix_lr", matrix_lr);
    OB__F("SCALAR_LR", scalar_lr); OB__F("scalar_lr", scalar_lr);
    OB__F("TIED_EMBED_LR", tied_embed_lr); OB__F("tied_embed_lr", tied_embed_lr);
    OB__F("EMBED_LR", embed_lr); OB__F("embed_lr", embed_lr);
    OB__F("head_lr", head_lr);
    OB__F("BETA1", beta1); OB__F("BETA2", beta2); OB__F("ADAM_EPS", adam_eps);
    OB__F("MUON_MOMENTUM", muon_momentum);
    OB__F("MUON_MOMENTUM_WARMUP_START", muon_momentum_warmup_start);
    OB__I("MUON_MOMENTUM_WARMUP_STEPS", muon_momentum_warmup_steps);
    OB__I("MUON_BACKEND_STEPS", muon_backend_steps);
    OB__F("MUON_WD", muon_wd); OB__F("muon_wd", muon_wd);
    OB__I("normuon", normuon); OB__I("NORMUON", normuon);
    OB__I("bf16_update", bf16_update);
    OB__F("ADAM_WD", adam_wd);
    OB__F("grad_clip_norm", grad_clip_norm);
    OB__I("EMA", ema); OB__F("EMA_DECAY", ema_decay);
    if (!strcmp(key, "EMA_START_FRACTION")) {
        float f;
        int r = ob__muon_float(key, v, &f);
        if (!r) c->ema_start_fraction = strtod(v, NULL);
        return r;
    }
#undef OB__F
#undef OB__I
    if (!strcmp(key, "MATRIX_OPTIMIZER")) {
        if (!strcmp(v, "muon")) c->matrix_optimizer = OB_MATRIX_MUON;
        else if (!strcmp(v, "adamw")) c->matrix_optimizer = OB_MATRIX_ADAMW;
        else return ob_set_error(OB_ERR_ARG, "%s: '%s' is not muon or adamw", key, v);
        return OB_OK;
    }
    if (!strcmp(key, "GRAD_CLIP_NORM") || !strcmp(key, "HEAD_LR") || !strcmp(key, "ADAM_LR")) {
        float x;
        int r = ob__muon_float(key, v, &x);
        if (r) return r;
        if (notice) *notice = !strcmp(key, "GRAD_CLIP_NORM")
            ? "GRAD_CLIP_NORM is read but never applied by the seed trainers, so onebit ignores it too (use --grad-clip to clip)"
            : "HEAD_LR / ADAM_LR are read but never take effect in the seed trainers; onebit ignores them as well";
        return OB_OK;
    }
    if (!strcmp(key, "USE_GRAM_NS"))
        return !strcmp(v, "0") ? OB_OK : ob_set_error(OB_ERR_UNSUPPORTED, "USE_GRAM_NS=%s: Gram Newton-Schulz is not implemented (the published runs use 0)", v);
    return ob_set_error(OB_ERR_ARG, "unknown optimizer setting '%s'", key);
}

OB_DEF void ob_optimizer_free(ob_optimizer *o) {
    if (!o) return;
    free(o->m1); free(o->m2); free(o->momentum); free(o->ema); free(o->ns_scratch);
    memset(o, 0, sizeof *o);
}

OB_DEF int ob_optimizer_init(ob_optimizer *o, ob_model *m, const ob_optim_config *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->model = m;
    o->m1 = (float *)calloc(m->n_params ? m->n_params : 1, sizeof(float));
    o->m2 = (float *)calloc(m->n_params ? m->n_params : 1, sizeof(float));
    o->momentum = (float *)calloc(m->n_params ? m->n_params : 1, sizeof(float));
    size_t worst = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        if (t->group != OB_GROUP_MUON || t->ndim != 2) continue;
        size_t r = (size_t)(t->shape[0] < t->shape[1] ? t->shape[0] : t->shape[1]);
        size_t need = 3 * r * r + 3 * t->numel; /* NS: X, A, A^2, B, BX; then the update itself */
        if (need > worst) worst = need;
    }
    o->ns_floats = worst;
    o->ns_scratch = (float *)calloc(worst ? worst : 1, sizeof(float));
    if (cfg->ema) o->ema = (float *)calloc(m->n_params ? m->n_params : 1, sizeof(float));
    if (!o->m1 || !o->m2 || !o->momentum || !o->ns_scratch || (cfg->ema && !o->ema)) {
        ob_optimizer_free(o);
        return ob_set_error(OB_ERR_NOMEM, "optimizer: cannot allocate its state for %zu parameters", m->n_params);
    }
    return OB_OK;
}

OB_DEF void ob_newton_schulz(float *G, int rows, int cols, int steps, float *scratch) {
    const float a = 3.4445f, b = -4.7750f, c = 2.0315f;
    int tr = rows > cols, r = tr ? cols : rows, n = tr ? rows : cols; /* X is r x n, r <= n */
    float *X = scratch, *A = X + (size_t)r * n, *A2 = A + (size_t)r * r, *Bm = A2 + (size_t)r * r, *Y = Bm + (size_t)r * r;
    double ss = 0.0;
    for (size_t i = 0; i < (size_t)rows * cols; i++) ss += (double)G[i] * G[i];
    float inv = 1.0f / ((float)sqrt(ss) + 1e-7f);
    if (tr) { for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) X[(size_t)j * n + i] = G[(size_t)i * cols + j] * inv; }
    else for (size_t i = 0; i < (size_t)rows * cols; i++) X[i] = G[i] * inv;
    for (int s = 0; s < steps; s++) {
        ob_matmul_forward(A, X, X, r, n, r, 0);          /* A = X X^T */
        ob_matmul_forward(A2, A, A, r, r, r, 0);         /* A^2 = A A^T (A symmetric) */
        for (size_t i = 0; i < (size_t)r * r; i++) Bm[i] = b * A[i] + c * A2[i];
        ob_gemm(Y, Bm, X, r, n, r, 0);                   /* B X */
        for (size_t i = 0; i < (size_t)r * n; i++) X[i] = a * X[i] + Y[i];
    }
    if (tr) { for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) G[(size_t)i * cols + j] = X[(size_t)j * n + i]; }
    else memcpy(G, X, (size_t)rows * cols * sizeof(float));
}

/* The global gradient norm over the tensors that have gradients; names the first non-finite one. */
static int ob__grad_norm(const ob_model *m, double *norm) {
    double s = 0.0;
    for (int i = 0; i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        if (!t->has_grad) continue;
        double ts = 0.0;
        const float *g = m->grads + t->offset;
        for (size_t k = 0; k < t->numel; k++) ts += (double)g[k] * g[k];
        if (!isfinite(ts)) return ob_set_error(OB_ERR_NUMERIC, "the gradient of %s is not finite: the step was skipped, no weight changed", t->name);
        s += ts;
    }
    *norm = sqrt(s);
    return OB_OK;
}

static void ob__adam_tensor(ob_optimizer *o, const ob_tensor_info *t, float lr, float wd) {
    ob_model *m = o->model;
    float *p = m->params + t->offset, *g = m->grads + t->offset, *m1 = o->m1 + t->offset, *m2 = o->m2 + t->offset;
    float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.adam_eps;
    double t1 = (double)(o->step + 1);
    float bc1 = (float)(1.0 - pow(b1, t1)), bc2 = (float)(1.0 - pow(b2, t1));
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    for (size_t k = 0; k < t->numel; k++) {
        m1[k] = b1 * m1[k] + (1.0f - b1) * g[k];
        m2[k] = b2 * m2[k] + (1.0f - b2) * g[k] * g[k];
        if (wd > 0.0f) p[k] *= 1.0f - lr * wd;   /* AdamW: decoupled decay first, as torch does */
        p[k] -= step_size * m1[k] / (sqrtf(m2[k]) / sqrt_bc2 + eps);
    }
}

static void ob__muon_tensor(ob_optimizer *o, const ob_tensor_info *t, float lr, float momentum) {
    ob_model *m = o->model;
    int rows = t->shape[0], cols = t->shape[1];
    float *p = m->params + t->offset, *buf = o->momentum + t->offset;
    float *u = o->ns_scratch + (o->ns_floats - t->numel); /* the update, after NS's own work space */
    if (t->has_grad) {
        const float *g = m->grads + t->offset;
        for (size_t k = 0; k < t->numel; k++) {
            buf[k] = momentum * buf[k] + g[k];
            u[k] = g[k] + momentum * buf[k];               /* Nesterov */
        }
        /* each row to unit RMS (rms_norm over the last dimension, eps = float32 epsilon) */
        for (int i = 0; i < rows; i++) {
            float *ui = u + (size_t)i * cols;
            double ss = 0.0;
            for (int j = 0; j < cols; j++) ss += (double)ui[j] * ui[j];
            float r = 1.0f / sqrtf((float)(ss / cols) + 1.1920928955078125e-07f);
            for (int j = 0; j < cols; j++) ui[j] *= r;
        }
        ob_newton_schulz(u, rows, cols, o->cfg.muon_backend_steps, o->ns_scratch);
        if (o->cfg.normuon)
            for (int i = 0; i < rows; i++) {
                float *ui = u + (size_t)i * cols;
                double ss = 0.0;
                for (int j = 0; j < cols; j++) ss += (double)ui[j] * ui[j];
                float r = 1.0f / sqrtf((float)(ss / cols) + 1.1920928955078125e-07f);
                for (int j = 0; j < cols; j++) ui[j] *= r;
            }
        float scale = sqrtf(rows > cols ? (float)rows / (float)cols : 1.0f);
        for (size_t k = 0; k < t->numel; k++) {
            u[k] *= scale;
            if (o->cfg.bf16_update) u[k] = ob_bf16_round(u[k]); /* the seeds' bf16 update buffer */
        }
    }
    /* decoupled decay multiplies before the update, and reaches matrices without a gradient too */
    for (size_t k = 0; k < t->numel; k++) {
        if (o->cfg.muon_wd > 0.0f) p[k] *= 1.0f - lr * o->cfg.muon_wd;
        if (t->has_grad) p[k] -= lr * u[k];
    }
}

OB_DEF int ob_optimizer_step(ob_optimizer *o, float lr_scale, float momentum) {
    ob_model *m = o->model;
    double norm = 0.0;
    int r = ob__grad_norm(m, &norm);
    if (r) return r;
    o->last_grad_norm = (float)norm;
    if (o->cfg.grad_clip_norm > 0.0f && norm > o->cfg.grad_clip_norm) {
        float s = (float)(o->cfg.grad_clip_norm / (norm + 1e-6));
        for (int i = 0; i < m->n_tensors; i++) {
            const ob_tensor_info *t = &m->tensors[i];
            if (!t->has_grad) continue;
            for (size_t k = 0; k < t->numel; k++) m->grads[t->offset + k] *= s;
        }
    }
    const ob_optim_config *c = &o->cfg;
    for (int i = 0; i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        switch (t->group) {
        case OB_GROUP_TOKEN:
            if (t->has_grad) ob__adam_tensor(o, t, (m->cfg.tie_embeddings ? c->tied_embed_lr : c->embed_lr) * lr_scale, 0.0f);
            break;
        case OB_GROUP_SCALAR:
            if (t->has_grad) ob__adam_tensor(o, t, c->scalar_lr * lr_scale, 0.0f);
            break;
        case OB_GROUP_HEAD:
            /* the seeds' head optimizer runs at lr 0: an untied head never moves unless head_lr is set */
            if (t->has_grad && c->head_lr > 0.0f) ob__adam_tensor(o, t, c->head_lr * lr_scale, 0.0f);
            break;
        case OB_GROUP_MUON:
            if (c->matrix_optimizer == OB_MATRIX_ADAMW) { if (t->has_grad) ob__adam_tensor(o, t, c->matrix_lr * lr_scale, c->adam_wd); }
            else ob__muon_tensor(o, t, c->matrix_lr * lr_scale, momentum);
            break;
        }
    }
    o->step++;
    m->quantized = 0;
    return OB_OK;
}

OB_DEF void ob_ema_update(ob_optimizer *o, int start_now) {
    ob_model *m = o->model;
    if (!o->ema) return;
    if (!o->ema_started) {
        if (!start_now) return;
        memcpy(o->ema, m->params, m->n_params * sizeof(float));
        o->ema_started = 1;
        o->ema_steps = 0;
    }
    o->ema_steps++;
    float d = (1.0f + o->ema_steps) / (10.0f + o->ema_steps);
    if (d > o->cfg.ema_decay) d = o->cfg.ema_decay;
    for (size_t k = 0; k < m->n_params; k++) o->ema[k] = d * o->ema[k] + (1.0f - d) * m->params[k];
}

/* ================================================================================================
 * Schedules
 * ============================================================================================== */
OB_DEF float ob_lr_multiplier(const ob_schedule *s, int64_t step, double elapsed_ms) {
    const double pi = 3.14159265358979323846;
    int by_clock = s->max_wallclock_ms > 0.0;
    if (s->kind == OB_LR_COSINE) {
        double progress;
        if (!by_clock) {
            int64_t w = s->warmup_steps < s->iterations ? s->warmup_steps : s->iterations;
            if (step < w) return (float)((double)step / (double)(w > 1 ? w : 1)); /* 0 at step 0: the seeds' quirk */
            int64_t span = s->iterations - w;
            progress = (double)(step - w) / (double)(span > 1 ? span : 1);
        } else {
            /* warmup lasts warmup_steps average steps; before the first step it is 1000 ms */
            double warm = step > 0 ? s->warmup_steps * (elapsed_ms / (double)step) : 1000.0;
            if (elapsed_ms < warm) return (float)(elapsed_ms / (warm > 1e-9 ? warm : 1e-9));
            double span = s->max_wallclock_ms - warm;
            progress = (elapsed_ms - warm) / (span > 1e-9 ? span : 1e-9);
        }
        return (float)(0.5 * (1.0 + cos(pi * (progress < 1.0 ? progress : 1.0))));
    }
    if (s->kind == OB_LR_WARMUP_CONSTANT_COSINE) {
        double f = s->final_fraction;
        if (!by_clock) {
            if (step < s->warmup_steps) return (float)((double)(step + 1) / (double)s->warmup_steps);
            int64_t start = s->iterations - s->cooldown_steps;
            if (step < start) return 1.0f;
            double progress = (double)(step - start) / (double)(s->cooldown_steps > 0 ? s->cooldown_steps : 1);
            if (progress > 1.0) progress = 1.0;
            return (float)(f + (1.0 - f) * 0.5 * (1.0 + cos(pi * progress)));
        }
        double frac_cool = s->iterations > 0 ? (double)s->cooldown_steps / (double)s->iterations : 0.0;
        double start = s->max_wallclock_ms * (1.0 - frac_cool);
        if (step < s->warmup_steps) return (float)((double)(step + 1) / (double)s->warmup_steps);
        if (elapsed_ms < start) return 1.0f;
        double progress = (elapsed_ms - start) / (s->max_wallclock_ms - start > 1e-9 ? s->max_wallclock_ms - start : 1e-9);
        if (progress > 1.0) progress = 1.0;
        return (float)(f + (1.0 - f) * 0.5 * (1.0 + cos(pi * progress)));
    }
    /* linear warmdown (the seeds' default), no warmup */
    if (s->warmdown_fraction <= 0.0) return 1.0f;
    if (!by_clock) {
        int64_t start = (int64_t)(s->iterations * (1.0 - s->warmdown_fraction));
        if (step < start) return 1.0f;
        double len = s->iterations * s->warmdown_fraction;
        double v = (double)(s->iterations - step) / (len > 1.0 ? len : 1.0);
        return (float)(v > 0.0 ? v : 0.0);
    }
    double warmdown = s->max_wallclock_ms * s->warmdown_fraction;
    double remaining = s->max_wallclock_ms - elapsed_ms;
    if (remaining < 0.0) remaining = 0.0;
    return remaining <= warmdown ? (float)(remaining / (warmdown > 1e-9 ? warmdown : 1e-9)) : 1.0f;
}

OB_DEF float ob_muon_momentum_at(const ob_optim_config *c, int64_t step) {
    double f = c->muon_momentum_warmup_steps > 0 ? (double)step / c->muon_momentum_warmup_steps : 1.0;
    if (f > 1.0) f = 1.0;
    return (float)((1.0 - f) * c->muon_momentum_warmup_start + f * c->muon_momentum);
}

OB_DEF int ob_seq_len_stages(int train_seq_len, int *stages) {
    int n = 0;
    for (int sl = 128; sl <= train_seq_len && n < 15; sl *= 2) stages[n++] = sl;
    if (n == 0 || stages[n - 1] != train_seq_len) stages[n++] = train_seq_len;
    return n;
}

OB_DEF int ob_seq_len_at(const int *stages, int n, int64_t step, int iterations, double elapsed_ms, double cap_ms) {
    if (n <= 1) return stages[0];
    int idx;
    if (cap_ms > 0.0) idx = (int)(elapsed_ms / (cap_ms / n));
    else idx = (int)((double)step / ((double)iterations / n));
    if (idx > n - 1) idx = n - 1;
    if (idx < 0) idx = 0;
    return stages[idx];
}

OB_DEF int64_t ob_batch_tokens_at(int64_t start_tokens, int64_t full_tokens, double fraction, int64_t step, int iterations,
                                  double elapsed_ms, double cap_ms) {
    if (start_tokens <= 0) return full_tokens;
    int switched = cap_ms > 0.0 ? elapsed_ms >= fraction * cap_ms : step >= (int64_t)(iterations * fraction);
    return switched ? full_tokens : start_tokens;
}

/* ================================================================================================
 * The CPU training step
 * ============================================================================================== */
OB_DEF int ob_train_step(ob_model *m, ob_optimizer *o, ob_token_stream *stream, int64_t batch_tokens, int seq_len, int accum,
                         float lr_scale, float momentum, float *loss_out) {
    int64_t local = ob_loader_local_tokens(batch_tokens, 1, accum);
    if (local < seq_len || local % seq_len)
        return ob_set_error(OB_ERR_ARG, "train step: %lld tokens per micro-batch is not a multiple of the sequence length %d",
                            (long long)local, seq_len);
    int32_t *x = (int32_t *)malloc((size_t)local * sizeof(int32_t)), *y = (int32_t *)malloc((size_t)local * sizeof(int32_t));
    if (!x || !y) { free(x); free(y); return ob_set_error(OB_ERR_NOMEM, "train step: out of memory"); }
    ob_model_zero_grad(m);
    double loss = 0.0;
    int r = OB_OK;
    for (int a = 0; a < accum && !r; a++) {
        r = ob_loader_next(stream, batch_tokens, 1, 0, accum, x, y);
        if (!r) r = ob_model_forward(m, x, y, (int)(local / seq_len), seq_len);
        if (!r) { loss += m->loss; r = ob_model_backward(m, 1.0f / (float)accum); }
    }
    free(x);
    free(y);
    if (r) return r;
    *loss_out = (float)(loss / accum);
    return ob_optimizer_step(o, lr_scale, momentum);
}

#endif /* ONEBIT_MUON_IMPLEMENTATION */
