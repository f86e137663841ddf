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
 *   distribute  data-parallel runs, the host side: ob_dist_from_env (the launcher's variables),
 *               ob_dist_accum, ob_dist_muon_owner / ob_muon_plan (Muon's matrices over ranks),
 *               ob_grad_buckets (the overlapped all-reduce), ob_dist_exchange_id (the NCCL id through
 *               a file or TCP); the run loop's agreement on time and signals, split evaluation,
 *               rank 0's logs and checkpoints. onebit_cuda.cuh does the communication (NCCL).
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

/* ------------------------------------------------------------------------------------------------
 * Data-parallel runs: one process per GPU, the seeds' DDP arithmetic. This part is host code only
 * (no NCCL): where each process stands (the launcher's variables), the split of the work (data,
 * micro-batches, Muon's matrices, the gradient buckets) and the rendezvous that hands rank 0's NCCL
 * unique id -- an opaque blob here -- to the other ranks. onebit_cuda.cuh does the communication.
 *
 *   data        every rank reads the whole stream; of each global chunk rank r takes its slice
 *               (ob_loader_next with world, rank); accum / world micro-batches per rank
 *               (ob_dist_accum), so one GPU and eight see the same tokens per step.
 *   gradients   each rank backpropagates loss / (accum_local x world) and the buffers are summed:
 *               the mean over all micro-batches of all ranks, the one-GPU gradient.
 *   Muon        matrix i (parameter-table order) is orthogonalised on rank i mod world
 *               (ob_dist_muon_owner); the updates are shared, every rank applies all of them.
 *   evaluation  windows split over ranks (ob_eval_val / ob_eval_sliding take rank, world), sums reduced.
 * ---------------------------------------------------------------------------------------------- */
#define OB_DIST_ID_BYTES 128          /* the NCCL unique id (ncclUniqueId) */
typedef struct ob_dist {
    int rank, world;                  /* 0 / 1: a single process (no NCCL at all) */
    int local_rank;                   /* the GPU on this node; -1 when the launcher gave none (rank mod the visible GPUs) */
    char launcher[16];                /* whose variables named them: "torchrun" (RANK ...), "Open MPI", "Slurm"; "" alone */
    char id_file[512];                /* ONEBIT_NCCL_ID_FILE: the id through this file (a file system every rank sees) */
    char master_addr[256];            /* MASTER_ADDR: else through a TCP rendezvous on rank 0's host */
    int master_port;                  /* ONEBIT_NCCL_PORT, else MASTER_PORT */
    double timeout_s;                 /* ONEBIT_NCCL_TIMEOUT (default 300): rendezvous, NCCL start-up, every collective */
} ob_dist;
enum { OB_REDUCE_SUM = 0, OB_REDUCE_MAX = 1 };

/* This process's place from the launcher's environment: RANK / WORLD_SIZE / LOCAL_RANK (torchrun and
 * plain launchers), else OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (mpirun), else SLURM_PROCID /
 * SLURM_NTASKS / SLURM_LOCALID (srun); none set: rank 0 of 1. With world > 1 the id travels through
 * ONEBIT_NCCL_ID_FILE when set, else MASTER_ADDR:MASTER_PORT (ONEBIT_NCCL_PORT overrides the port).
 * A half-set family, a value that is not an integer, rank >= world, or world > 1 with no way to meet
 * is OB_ERR_ARG naming the variable. */
OB_DEF int ob_dist_from_env(ob_dist *d);
/* Micro-batches per rank for accum on one GPU: accum / world (world divides accum), or 1 when world
 * is a multiple of accum (the seeds' max(1, 8 // world)); anything else is OB_ERR_ARG -- the seeds'
 * own arithmetic would leave BATCH / (world x (8 // world)) tokens, not whole sequences, per rank. */
OB_DEF int ob_dist_accum(int accum, int world, int *local_accum);
/* The rank that orthogonalises Muon matrix i (i counts the Muon matrices in parameter-table order). */
OB_DEF int ob_dist_muon_owner(int i, int world);
/* Rank 0 publishes id (OB_DIST_ID_BYTES); every other rank receives it into id. Through d->id_file
 * (rank 0 writes it atomically; the others poll for it) or a TCP rendezvous on master_addr:master_port
 * (rank 0 listens and answers each rank that connects; the others retry until they get through),
 * both within d->timeout_s. Errors name the rank, the file or address, and the reason. */
OB_DEF int ob_dist_exchange_id(const ob_dist *d, uint8_t *id);
/* Rank 0, once every rank has joined: removes the id file, so no later launch reads a stale id. */
OB_DEF void ob_dist_id_done(const ob_dist *d);

/* Muon's matrices as the GPU optimizer lays them out: rank-major (each rank's matrices contiguous, so
 * one broadcast per rank shares its updates), then by shape group (first appearance; a rank's matrices
 * of one shape are orthogonalised by one batched product), then parameter-table order. With world 1
 * this is the one-GPU layout. Matrices without a gradient only decay (decay_only). */
typedef struct ob_muon_plan {
    int world, n_mats, n_groups, n_decay_only;
    int *tensor;                  /* [n_mats] the tensor of each matrix, in layout order */
    int *owner;                   /* [n_mats] the rank that orthogonalises it */
    int *group;                   /* [n_mats] its shape group */
    size_t *offset;               /* [n_mats] its first element in the workspace */
    int *group_rows, *group_cols; /* [n_groups] */
    int *sub_first, *sub_count;   /* [world x n_groups]: rank r's matrices of group k, from matrix sub_first[r n_groups + k] */
    size_t *rank_begin;           /* [world + 1]: rank r's workspace range [rank_begin[r], rank_begin[r + 1]) */
    int *decay_only;              /* [n_decay_only] tensor indices */
} ob_muon_plan;
OB_DEF int ob_muon_plan_init(ob_muon_plan *p, const ob_model *m, const ob_optim_config *c, int world);
OB_DEF void ob_muon_plan_free(ob_muon_plan *p);

/* The gradient buffer cut for all-reduces overlapped with the backward: the ranges of the tensors with
 * a gradient, merged where contiguous; stage b < num_layers holds block b's tensors (final once the
 * backward has passed block b, its last use), stage num_layers everything else (final at the end).
 * out holds m->n_tensors entries; returns how many were filled. */
typedef struct ob_grad_bucket { size_t offset, count; int stage; } ob_grad_bucket;
OB_DEF int ob_grad_buckets(const ob_model *m, ob_grad_bucket *out);

/* ------------------------------------------------------------------------------------------------
 * Runs: the options of a training run (presets named after the seeds, their environment variables,
 * command-line flags), a backend interface that the CPU path and the GPU trainer both implement, the
 * training loop with its logs (the seeds' step lines, JSONL, an SVG plot), and checkpoints.
 * ---------------------------------------------------------------------------------------------- */
typedef struct ob_run_options {
    char preset[32];
    ob_config model;
    ob_optim_config optim;
    ob_schedule sched;
    uint64_t seed;                /* SEED */
    int64_t batch_tokens;         /* TRAIN_BATCH_TOKENS per optimizer step */
    int accum;                    /* micro-batches per step: max(1, 8 / world) in the seeds */
    int seq_len_schedule;         /* SEQ_LEN_SCHEDULE: 128 -> ... -> train_seq_len */
    int seq_warmup_steps;         /* SEQ_WARMUP_STEPS: the ladder spans these first steps (0: the whole run) */
    int rope_ntk;                 /* ROPE_NTK_WARMUP: NTK-aware RoPE base scaling while the ladder is short */
    int64_t batch_tokens_start;   /* BATCH_TOKENS_START (0: off) */
    double batch_schedule_fraction;
    char data_path[512];          /* DATA_PATH; empty: the embedded default (this repository's text) */
    char tokenizer_path[512];     /* TOKENIZER_PATH; empty: bytes */
    int64_t val_max_tokens;       /* VAL_MAX_TOKENS (0: all) */
    int val_loss_every;           /* VAL_LOSS_EVERY (0: at the end only) */
    int val_batch_seqs;           /* windows per evaluation batch */
    int train_log_every;          /* TRAIN_LOG_EVERY */
    int sliding_eval, sliding_stride, sliding_batch, temp_scaling;
    int checkpoint_every;         /* CHECKPOINT_EVERY (0: none) */
    char checkpoint_dir[512];     /* CHECKPOINT_DIR */
    int resume;                   /* continue from the newest valid checkpoint in checkpoint_dir */
    char out_dir[512];            /* logs, plot, artifact */
    char run_id[64];              /* RUN_ID */
    int device;                   /* -1 auto, 0 CPU, 1 GPU */
    int generate_tokens;          /* a sample of this many tokens at the end (0: none) */
    int on_nonfinite;             /* 0: stop with the last checkpoint, 1: skip the batch */
    ob_dist dist;                 /* this process's place in a data-parallel run (the launcher's variables) */
} ob_run_options;

/* A preset (xnor-10min, xnor-100k, binary-50k, ternary-bitnet, tiny, embedded): model, optimizer,
 * schedule and evaluation as the seed's run script sets them. */
OB_DEF int ob_run_options_preset(ob_run_options *o, const char *preset);
/* One setting by the seeds' environment-variable name (NUM_LAYERS, MATRIX_LR, ITERATIONS, ...) or the
 * model's field names; unknown names and bad values are OB_ERR_ARG naming them. */
OB_DEF int ob_run_options_set(ob_run_options *o, const char *key, const char *value, FILE *notices);
/* Applies every seed environment variable that is set (the run script's own) */
OB_DEF int ob_run_options_from_env(ob_run_options *o, FILE *notices);
/* Flags: --preset NAME (first), --data DIR, --tokenizer FILE, --iterations N, --max-seconds S,
 * --seed N, --out DIR, --resume, --cpu, --gpu, --checkpoint-every N, --grad-clip X, --set KEY=VALUE.
 * Unknown flags and bad values are OB_ERR_ARG naming them. */
OB_DEF int ob_run_options_from_args(ob_run_options *o, int argc, char **argv, FILE *notices);
OB_DEF void ob_run_options_usage(FILE *f, const char *program);

/* What a device provides to the loop. The host model mirrors the device's weights on demand. */
typedef struct ob_backend {
    const char *name;
    void *ctx;
    ob_model *host;
    ob_optimizer *host_opt;
    int (*train_step)(struct ob_backend *b, ob_token_stream *s, int64_t batch_tokens, int seq_len, int accum, float lr_scale,
                      float momentum, float *loss);
    ob_score_fn score;            /* called with ctx */
    ob_next_logits_fn next_logits;/* called with ctx: generation's logits of the last token */
    int (*pull)(struct ob_backend *b, int with_optimizer);  /* device -> host (weights, optionally optimizer state) */
    int (*push)(struct ob_backend *b, int with_optimizer);  /* host -> device */
    int (*ema_update)(struct ob_backend *b, int start_now); /* NULL: ob_ema_update on the host optimizer */
    int (*set_rope)(struct ob_backend *b);                  /* the host model's RoPE tables changed (NULL: nothing to do) */
    void (*memory_report)(struct ob_backend *b, char *line, size_t n); /* where the device memory went (NULL: host) */
    void (*destroy)(struct ob_backend *b);
    /* Data-parallel runs (the GPU backend with world > 1; rank 0, world 1 and NULL otherwise). The
     * backend's train_step then reads this rank's slice of each global chunk and returns the mean loss
     * over ranks, its gradients and updates shared. */
    int rank, world;
    int (*allreduce)(struct ob_backend *b, double *v, int n, int op); /* host values, OB_REDUCE_SUM / _MAX, every rank gets the result */
    int (*broadcast_state)(struct ob_backend *b);                      /* rank 0's weights and optimizer state to every rank */
} ob_backend;
OB_DEF void ob_backend_cpu(ob_backend *b, ob_model *m, ob_optimizer *o);
/* The backend for a device choice (-1: the GPU when there is one, 0: the CPU, 1: the GPU or an
 * error): the GPU trainer when this translation unit includes onebit_cuda.cuh (compiled by nvcc),
 * else the CPU path. o NULL: evaluation only (score, pull, push; no train_step). */
OB_DEF int ob_backend_open(ob_backend *b, ob_model *m, ob_optimizer *o, int device);

typedef struct ob_run {
    ob_run_options opt;
    ob_data data;                 /* tokenizer, byte tables, training stream, validation set */
    ob_model model;
    ob_optimizer optim;
    ob_backend be;
    int64_t step;
    double elapsed_ms;            /* training time, evaluation excluded */
    int stages[16], n_stages;
    FILE *log, *jsonl;
    float *hist;                  /* (step, train loss) pairs */
    float *val_hist;              /* (step, val loss) pairs */
    int n_hist, n_val_hist, cap_hist;
    volatile int stop_signal;     /* set by SIGINT / SIGTERM: checkpoint, then stop */
    int memory_logged;            /* the backend's memory report was logged (after the first step) */
    int rank, world;              /* from opt.dist: only rank 0 logs, checkpoints and writes files */
} ob_run;

/* Opens the data (or builds the embedded default), the tokenizer, the host model and optimizer,
 * the logs; resumes from a checkpoint when asked. Attach a backend (ob_backend_cpu or the GPU
 * trainer's) before ob_run_train. */
OB_DEF int ob_run_setup(ob_run *r, const ob_run_options *o);
/* Trains until ITERATIONS or the wall-clock cap: schedules, logs, periodic validation,
 * checkpoints, SIGINT / SIGTERM (checkpoint, then stop with OB_ERR_INTERRUPTED), a non-finite
 * loss or gradient (OB_ERR_NUMERIC naming the tensor and the last good checkpoint, or skipped). */
OB_DEF int ob_run_train(ob_run *r);
/* Validation of the backend's current weights (the seeds' val_bpb: z-loss included). */
OB_DEF int ob_run_eval(ob_run *r, float temperature, ob_eval_result *out);
/* Attaches the backend for opt.device: ob_backend_open alone; in a data-parallel run (opt.dist.world
 * > 1) the GPU backend joined to the other ranks, then rank 0's state (weights, optimizer, step,
 * training time, stream position: a resumed run's) copied to every rank. */
OB_DEF int ob_run_open_backend(ob_run *r);
/* In a data-parallel run, sums an evaluation's sums over ranks and finishes it, so every rank holds
 * the whole figure. Every rank must call it, a failed one too (status: its own result): a failure on
 * any rank is returned on all. Alone: returns status. */
OB_DEF int ob_run_reduce_eval(ob_run *r, ob_eval_result *res, int status);
OB_DEF void ob_run_log(ob_run *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Writes out_dir/<run_id>.svg: train and validation loss against steps. */
OB_DEF int ob_run_plot(ob_run *r);
OB_DEF void ob_run_free(ob_run *r);
OB_DEF double ob_now_ms(void);

/* Checkpoints: the configuration's hash, weights, optimizer state (moments, momentum, EMA, step),
 * data-stream position, step and training time -- everything the next step reads; no random number
 * is drawn while training, so nothing else is needed for an identical continuation. Written to
 * dir/ckpt_<step>.ob1c through a temporary file, fsync and rename; the newest two are kept, older
 * ones removed only after the new one is complete. Loading checks every field and the checksum. */
OB_DEF int ob_checkpoint_save(ob_run *r);
OB_DEF int ob_checkpoint_load(ob_run *r, const char *path);
/* The same from bytes in memory (name for messages); the run changes only when every check passed. */
OB_DEF int ob_checkpoint_load_bytes(ob_run *r, const uint8_t *bytes, size_t n, const char *name);
/* --resume: the newest checkpoint that loads; a damaged newest one is reported and the one before
 * it is tried. No checkpoint: a fresh start (logged). None usable: OB_ERR_FORMAT. */
OB_DEF int ob_checkpoint_resume(ob_run *r);
OB_DEF int ob_checkpoint_latest(const char *dir, char *path, size_t cap); /* 0 and path, or OB_ERR_IO if none */
/* Paths of the checkpoints in dir, newest first (at most cap); 0 when none or no folder. */
OB_DEF int ob_checkpoint_list(const char *dir, char (*paths)[1200], int cap);

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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a 64 for checkpoints (onebit_pack.h has its own; the headers stay independent). */
static uint64_t ob_fnv1a64_ckpt_continue(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}
static uint64_t ob_fnv1a64_ckpt(const void *data, size_t n) { return ob_fnv1a64_ckpt_continue(0xcbf29ce484222325ull, data, n); }

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


OB_DEF int ob_optim_config_set(ob_optim_config *c, const char *key, const char *v, const char **notice) {
    if (notice) *notice = NULL;
#define OB__F(name, field) if (!strcmp(key, name)) return ob__parse_float(key, v, &c->field)
#define OB__I(name, field) if (!strcmp(key, name)) return ob__parse_int(key, v, &c->field)
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
        int r = ob__parse_float(key, v, &f);
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
        int r = ob__parse_float(key, v, &x);
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

/* ================================================================================================
 * Data-parallel runs: the launch environment, the split of the work, the id rendezvous
 * ============================================================================================== */
#if defined(__unix__) || defined(__APPLE__)
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#endif

/* A launcher variable as a non-negative integer; *set 0 when absent. */
static int ob__dist_env_int(const char *name, int *out, int *set) {
    const char *v = getenv(name);
    *set = v != NULL;
    if (!v) return OB_OK;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 0 || x > (1L << 20))
        return ob_set_error(OB_ERR_ARG, "%s='%s' is not a rank count or index (an integer from 0 to %ld)", name, v, 1L << 20);
    *out = (int)x;
    return OB_OK;
}

OB_DEF int ob_dist_from_env(ob_dist *d) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    d->local_rank = -1;
    d->timeout_s = 300.0;
    /* the first family with any of its variables set names this process; the names are the
     * launchers' own, so a seed user's torchrun / mpirun / srun line works unchanged */
    static const char *fam[3][4] = {{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
                                    {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                                    {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}};
    for (int f = 0; f < 3; f++) {
        int rank = 0, world = 1, local = -1, has_rank, has_world, has_local, e;
        if ((e = ob__dist_env_int(fam[f][1], &rank, &has_rank)) || (e = ob__dist_env_int(fam[f][2], &world, &has_world)) ||
            (e = ob__dist_env_int(fam[f][3], &local, &has_local)))
            return e;
        if (!has_rank && !has_world) continue;
        if (!has_world) return ob_set_error(OB_ERR_ARG, "%s=%d is set but %s is not (%s's variables come together)", fam[f][1], rank, fam[f][2], fam[f][0]);
        if (!has_rank) return ob_set_error(OB_ERR_ARG, "%s=%d is set but %s is not (%s's variables come together)", fam[f][2], world, fam[f][1], fam[f][0]);
        if (world < 1) return ob_set_error(OB_ERR_ARG, "%s=0: a run needs at least one process", fam[f][2]);
        if (rank >= world) return ob_set_error(OB_ERR_ARG, "%s=%d is not below %s=%d", fam[f][1], rank, fam[f][2], world);
        d->rank = rank;
        d->world = world;
        d->local_rank = has_local ? local : -1;
        snprintf(d->launcher, sizeof d->launcher, "%s", fam[f][0]);
        break;
    }
    if (d->world == 1) return OB_OK; /* alone: the rendezvous settings are not read */
    const char *t = getenv("ONEBIT_NCCL_TIMEOUT");
    if (t) {
        char *end;
        double x = strtod(t, &end);
        if (!*t || *end || !isfinite(x) || x <= 0.0)
            return ob_set_error(OB_ERR_ARG, "ONEBIT_NCCL_TIMEOUT='%s' is not a positive number of seconds", t);
        d->timeout_s = x;
    }
    const char *file = getenv("ONEBIT_NCCL_ID_FILE"), *addr = getenv("MASTER_ADDR");
    if (file && *file) {
        if (strlen(file) >= sizeof d->id_file) return ob_set_error(OB_ERR_ARG, "ONEBIT_NCCL_ID_FILE: the path is longer than %zu bytes", sizeof d->id_file - 1);
        snprintf(d->id_file, sizeof d->id_file, "%s", file);
        return OB_OK;
    }
    if (!addr || !*addr)
        return ob_set_error(OB_ERR_ARG, "rank %d of %d (%s): set MASTER_ADDR and MASTER_PORT (a TCP rendezvous on rank 0's host) or "
                            "ONEBIT_NCCL_ID_FILE (a path every rank sees) so the ranks can find each other", d->rank, d->world, d->launcher);
    if (strlen(addr) >= sizeof d->master_addr) return ob_set_error(OB_ERR_ARG, "MASTER_ADDR: longer than %zu bytes", sizeof d->master_addr - 1);
    snprintf(d->master_addr, sizeof d->master_addr, "%s", addr);
    /* ONEBIT_NCCL_PORT first: under torchrun the launcher's own store already listens on MASTER_PORT */
    const char *pn = getenv("ONEBIT_NCCL_PORT") ? "ONEBIT_NCCL_PORT" : "MASTER_PORT", *pv = getenv(pn);
    if (!pv) return ob_set_error(OB_ERR_ARG, "MASTER_ADDR=%s is set but MASTER_PORT is not", addr);
    char *end;
    errno = 0;
    long port = strtol(pv, &end, 10);
    if (!*pv || *end || errno || port < 1 || port > 65535) return ob_set_error(OB_ERR_ARG, "%s='%s' is not a TCP port (1..65535)", pn, pv);
    d->master_port = (int)port;
    return OB_OK;
}

OB_DEF int ob_dist_accum(int accum, int world, int *local_accum) {
    *local_accum = 0;
    if (accum < 1 || world < 1) return ob_set_error(OB_ERR_ARG, "%d micro-batches over %d ranks", accum, world);
    if (world <= accum && accum % world == 0) { *local_accum = accum / world; return OB_OK; }
    if (world > accum && world % accum == 0) { *local_accum = 1; return OB_OK; }
    return ob_set_error(OB_ERR_ARG, "GRAD_ACCUM %d micro-batches cannot be shared by %d ranks: the world size must divide it or be a multiple of it "
                        "(the seeds' max(1, 8 // %d) = %d would leave TRAIN_BATCH_TOKENS / %d tokens per rank, not whole sequences)",
                        accum, world, world, accum / world > 1 ? accum / world : 1, world * (accum / world > 1 ? accum / world : 1));
}

OB_DEF int ob_dist_muon_owner(int i, int world) { return world > 1 ? i % world : 0; }

OB_DEF void ob_muon_plan_free(ob_muon_plan *p) {
    if (!p) return;
    free(p->tensor); free(p->owner); free(p->group); free(p->offset); free(p->group_rows); free(p->group_cols);
    free(p->sub_first); free(p->sub_count); free(p->rank_begin); free(p->decay_only);
    memset(p, 0, sizeof *p);
}

OB_DEF int ob_muon_plan_init(ob_muon_plan *p, const ob_model *m, const ob_optim_config *c, int world) {
    memset(p, 0, sizeof *p);
    if (world < 1) return ob_set_error(OB_ERR_ARG, "Muon plan: world %d", world);
    int nt = m->n_tensors;
    p->world = world;
    int *idx = (int *)ob__calloc((size_t)nt, sizeof(int)), *grp = (int *)ob__calloc((size_t)nt, sizeof(int)), *own = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->tensor = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->owner = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->group = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->offset = (size_t *)ob__calloc((size_t)nt, sizeof(size_t));
    p->group_rows = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->group_cols = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->decay_only = (int *)ob__calloc((size_t)nt, sizeof(int));
    p->rank_begin = (size_t *)ob__calloc((size_t)world + 1, sizeof(size_t));
    if (!idx || !grp || !own || !p->tensor || !p->owner || !p->group || !p->offset || !p->group_rows || !p->group_cols || !p->decay_only || !p->rank_begin) {
        free(idx); free(grp); free(own);
        ob_muon_plan_free(p);
        return ob_set_error(OB_ERR_NOMEM, "Muon plan: out of memory");
    }
    /* the matrices in table order (the seeds' parameter order), their shape groups by first appearance */
    int n = 0;
    for (int i = 0; i < nt; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        if (t->group != OB_GROUP_MUON || t->ndim != 2 || c->matrix_optimizer != OB_MATRIX_MUON) continue;
        if (!t->has_grad) { p->decay_only[p->n_decay_only++] = i; continue; }
        int k = 0;
        while (k < p->n_groups && !(p->group_rows[k] == t->shape[0] && p->group_cols[k] == t->shape[1])) k++;
        if (k == p->n_groups) { p->group_rows[k] = t->shape[0]; p->group_cols[k] = t->shape[1]; p->n_groups++; }
        idx[n] = i;
        grp[n] = k;
        own[n] = ob_dist_muon_owner(n, world);
        n++;
    }
    p->n_mats = n;
    p->sub_first = (int *)ob__calloc((size_t)world * (size_t)(p->n_groups ? p->n_groups : 1), sizeof(int));
    p->sub_count = (int *)ob__calloc((size_t)world * (size_t)(p->n_groups ? p->n_groups : 1), sizeof(int));
    if (!p->sub_first || !p->sub_count) {
        free(idx); free(grp); free(own);
        ob_muon_plan_free(p);
        return ob_set_error(OB_ERR_NOMEM, "Muon plan: out of memory");
    }
    /* layout: rank-major, then group, then table order */
    int mi = 0;
    size_t off = 0;
    for (int r = 0; r < world; r++) {
        p->rank_begin[r] = off;
        for (int k = 0; k < p->n_groups; k++) {
            p->sub_first[r * p->n_groups + k] = mi;
            for (int j = 0; j < n; j++) {
                if (own[j] != r || grp[j] != k) continue;
                p->tensor[mi] = idx[j];
                p->owner[mi] = r;
                p->group[mi] = k;
                p->offset[mi] = off;
                off += m->tensors[idx[j]].numel;
                mi++;
            }
            p->sub_count[r * p->n_groups + k] = mi - p->sub_first[r * p->n_groups + k];
        }
    }
    p->rank_begin[world] = off;
    free(idx); free(grp); free(own);
    return OB_OK;
}

OB_DEF int ob_grad_buckets(const ob_model *m, ob_grad_bucket *out) {
    int nt = m->n_tensors, L = m->cfg.num_layers, n = 0;
    /* tensors in buffer order (the table's offsets need not follow its order) */
    int *ord = (int *)ob__malloc((size_t)(nt ? nt : 1) * sizeof(int));
    if (!ord) return 0;
    for (int i = 0; i < nt; i++) ord[i] = i;
    for (int i = 1; i < nt; i++)
        for (int j = i; j > 0 && m->tensors[ord[j]].offset < m->tensors[ord[j - 1]].offset; j--) { int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t; }
    for (int q = 0; q < nt; q++) {
        const ob_tensor_info *t = &m->tensors[ord[q]];
        if (!t->has_grad || !t->numel) continue; /* no gradient: zeros on every rank, nothing to send */
        int b = -1, used = 0, stage = L;
        if (sscanf(t->name, "blocks.%d.%n", &b, &used) == 1 && used > 0 && b >= 0 && b < L) stage = b;
        if (n > 0 && out[n - 1].stage == stage && out[n - 1].offset + out[n - 1].count == t->offset) { out[n - 1].count += t->numel; continue; }
        out[n].offset = t->offset;
        out[n].count = t->numel;
        out[n].stage = stage;
        n++;
    }
    free(ord);
    return n;
}

#if defined(__unix__) || defined(__APPLE__)
/* ---- the id rendezvous ---- */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* where there is no such flag (macOS), a closed peer's SIGPIPE is left to the default */
#endif
#define OB__ID_MAGIC "OB1NCCL1"   /* file and TCP messages: 8 bytes, then world (uint32), then the id */
#define OB__ID_MSG (8 + 4 + OB_DIST_ID_BYTES)

static double ob__dist_now_s(void) { return ob_now_ms() * 1e-3; }
static void ob__dist_sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}
static void ob__id_msg(uint8_t *msg, int world, const uint8_t *id) {
    uint32_t w = (uint32_t)world;
    memcpy(msg, OB__ID_MAGIC, 8);
    memcpy(msg + 8, &w, 4);
    if (id) memcpy(msg + 12, id, OB_DIST_ID_BYTES);
    else memset(msg + 12, 0, OB_DIST_ID_BYTES);
}

static int ob__id_file_publish(const ob_dist *d, const uint8_t *id) {
    uint8_t msg[OB__ID_MSG];
    ob__id_msg(msg, d->world, id);
    const void *parts[1] = {msg};
    size_t sizes[1] = {sizeof msg};
    int e = ob__write_file_atomic(d->id_file, parts, sizes, 1);
    if (e) return ob_set_error(e, "rank 0: cannot publish the NCCL id (ONEBIT_NCCL_ID_FILE): %s", ob_last_error());
    return OB_OK;
}

static int ob__id_file_fetch(const ob_dist *d, uint8_t *id) {
    double deadline = ob__dist_now_s() + d->timeout_s;
    for (;;) {
        /* rank 0 renames a whole file into place: one that is there is complete */
        FILE *f = fopen(d->id_file, "rb");
        if (f) {
            uint8_t msg[OB__ID_MSG + 1];
            size_t got = fread(msg, 1, sizeof msg, f);
            fclose(f);
            uint32_t w = 0;
            if (got != OB__ID_MSG || memcmp(msg, OB__ID_MAGIC, 8))
                return ob_set_error(OB_ERR_FORMAT, "rank %d: %s (ONEBIT_NCCL_ID_FILE) is not a onebit NCCL id file (%zu bytes)", d->rank, d->id_file, got);
            memcpy(&w, msg + 8, 4);
            if ((int)w != d->world)
                return ob_set_error(OB_ERR_ARG, "rank %d: %s was written by a rank 0 of %u ranks, this one has %d (a file left by another run?)", d->rank,
                                    d->id_file, w, d->world);
            memcpy(id, msg + 12, OB_DIST_ID_BYTES);
            return OB_OK;
        }
        if (errno != ENOENT)
            return ob_set_error(OB_ERR_IO, "rank %d: cannot read %s (ONEBIT_NCCL_ID_FILE): %s", d->rank, d->id_file, strerror(errno));
        if (ob__dist_now_s() > deadline)
            return ob_set_error(OB_ERR_IO, "rank %d: the NCCL id file %s (ONEBIT_NCCL_ID_FILE) did not appear within %g s: is rank 0 running, "
                                "and is the path on a file system every rank sees?", d->rank, d->id_file, d->timeout_s);
        ob__dist_sleep_ms(50);
    }
}

/* n bytes to or from a socket by deadline (poll, so a silent peer cannot hold us past it) */
static int ob__sock_io(int fd, uint8_t *buf, size_t n, double deadline, int sending) {
    size_t done = 0;
    while (done < n) {
        double left = deadline - ob__dist_now_s();
        if (left <= 0) return -1;
        struct pollfd pf;
        pf.fd = fd;
        pf.events = sending ? POLLOUT : POLLIN;
        pf.revents = 0;
        int pr = poll(&pf, 1, (int)(left * 1e3) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1;
        ssize_t k = sending ? send(fd, buf + done, n - done, MSG_NOSIGNAL) : recv(fd, buf + done, n - done, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

static int ob__id_tcp_serve(const ob_dist *d, const uint8_t *id) {
    char port[16];
    snprintf(port, sizeof port, "%d", d->master_port);
    struct addrinfo hints, *res = NULL, *a;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gr = getaddrinfo(NULL, port, &hints, &res);
    if (gr) return ob_set_error(OB_ERR_IO, "rank 0: no address to listen on port %s: %s", port, gai_strerror(gr));
    int fd = -1, why = 0;
    for (a = res; a && fd < 0; a = a->ai_next) { /* the wildcard address: MASTER_ADDR names this host as the others see it */
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) { why = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* a restart soon after a failed run */
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 64)) { why = errno; close(fd); fd = -1; }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ob_set_error(OB_ERR_IO, "rank 0: cannot listen on port %d (MASTER_PORT / ONEBIT_NCCL_PORT): %s%s", d->master_port, strerror(why),
                            why == EADDRINUSE ? " -- under torchrun the launcher's store holds MASTER_PORT: set ONEBIT_NCCL_PORT to a free port" : "");
    uint8_t *served = (uint8_t *)ob__calloc((size_t)d->world, 1);
    int n_served = 0, e = OB_OK;
    double deadline = ob__dist_now_s() + d->timeout_s;
    uint8_t reply[OB__ID_MSG];
    ob__id_msg(reply, d->world, id);
    while (!e && n_served < d->world - 1) {
        double left = deadline - ob__dist_now_s();
        struct pollfd pf;
        pf.fd = fd;
        pf.events = POLLIN;
        pf.revents = 0;
        int pr = left > 0 ? poll(&pf, 1, (int)(left * 1e3) + 1) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            e = ob_set_error(OB_ERR_IO, "rank 0: only %d of the %d other ranks fetched the NCCL id from port %d within %g s (ONEBIT_NCCL_TIMEOUT): "
                             "did every rank start, with MASTER_ADDR=%s naming this host?", n_served, d->world - 1, d->master_port, d->timeout_s,
                             d->master_addr);
            break;
        }
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        /* a rank says who it is (magic, world, rank); it gets the id, or the reason it cannot have it */
        uint8_t hello[8 + 4 + 4];
        double until = ob__dist_now_s() + 10.0 < deadline ? ob__dist_now_s() + 10.0 : deadline;
        if (ob__sock_io(c, hello, sizeof hello, until, 0) == 0 && !memcmp(hello, OB__ID_MAGIC, 8)) {
            uint32_t w, r;
            memcpy(&w, hello + 8, 4);
            memcpy(&r, hello + 12, 4);
            if ((int)w != d->world || r == 0 || r >= (uint32_t)d->world) {
                uint8_t no[OB__ID_MSG];
                ob__id_msg(no, d->world, NULL);
                ob__sock_io(c, no, sizeof no, until, 1);
                e = ob_set_error(OB_ERR_ARG, "rank 0: a process calling itself rank %u of %u joined the rendezvous on port %d of a run of %d ranks",
                                 r, w, d->master_port, d->world);
            } else if (ob__sock_io(c, reply, sizeof reply, until, 1) == 0 && !served[r]) {
                served[r] = 1; /* a rank that retries after a broken connection is answered again, counted once */
                n_served++;
            }
        }
        close(c);
    }
    free(served);
    close(fd);
    return e;
}

static int ob__id_tcp_fetch(const ob_dist *d, uint8_t *id) {
    char port[16];
    snprintf(port, sizeof port, "%d", d->master_port);
    double deadline = ob__dist_now_s() + d->timeout_s;
    char last[256] = "no attempt";
    while (ob__dist_now_s() < deadline) {
        struct addrinfo hints, *res = NULL, *a;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int gr = getaddrinfo(d->master_addr, port, &hints, &res);
        if (gr) { snprintf(last, sizeof last, "cannot resolve it: %s", gai_strerror(gr)); ob__dist_sleep_ms(200); continue; }
        for (a = res; a; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd < 0) { snprintf(last, sizeof last, "socket: %s", strerror(errno)); continue; }
            /* a non-blocking connect, so an unreachable host costs at most a few seconds a try */
            int fl = fcntl(fd, F_GETFL, 0);
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
            int cr = connect(fd, a->ai_addr, a->ai_addrlen), ok = cr == 0;
            if (cr < 0 && errno == EINPROGRESS) {
                struct pollfd pf;
                pf.fd = fd;
                pf.events = POLLOUT;
                pf.revents = 0;
                double left = deadline - ob__dist_now_s();
                int pr = poll(&pf, 1, left > 3.0 ? 3000 : left > 0 ? (int)(left * 1e3) + 1 : 0);
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (pr > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) ok = 1;
                else snprintf(last, sizeof last, "connect: %s", pr > 0 ? strerror(soerr) : "no answer");
            } else if (!ok) snprintf(last, sizeof last, "connect: %s", strerror(errno));
            if (ok) {
                uint8_t hello[8 + 4 + 4], msg[OB__ID_MSG];
                uint32_t w = (uint32_t)d->world, r = (uint32_t)d->rank;
                memcpy(hello, OB__ID_MAGIC, 8);
                memcpy(hello + 8, &w, 4);
                memcpy(hello + 12, &r, 4);
                if (ob__sock_io(fd, hello, sizeof hello, deadline, 1) == 0 && ob__sock_io(fd, msg, sizeof msg, deadline, 0) == 0) {
                    close(fd);
                    freeaddrinfo(res);
                    uint32_t got_w;
                    memcpy(&got_w, msg + 8, 4);
                    if (memcmp(msg, OB__ID_MAGIC, 8))
                        return ob_set_error(OB_ERR_FORMAT, "rank %d: %s:%d answered, but not as onebit's rendezvous (under torchrun the launcher's store "
                                            "holds MASTER_PORT: set ONEBIT_NCCL_PORT to a free port on every rank)", d->rank, d->master_addr, d->master_port);
                    if ((int)got_w != d->world)
                        return ob_set_error(OB_ERR_ARG, "rank %d: rank 0 at %s:%d runs %u ranks, this one was started for %d", d->rank, d->master_addr,
                                            d->master_port, got_w, d->world);
                    int zero = 1;
                    for (int i = 0; i < OB_DIST_ID_BYTES; i++) zero &= msg[12 + i] == 0;
                    if (zero) return ob_set_error(OB_ERR_ARG, "rank %d: rank 0 at %s:%d refused this rank", d->rank, d->master_addr, d->master_port);
                    memcpy(id, msg + 12, OB_DIST_ID_BYTES);
                    return OB_OK;
                }
                snprintf(last, sizeof last, "the connection closed before the id arrived");
            }
            close(fd);
        }
        freeaddrinfo(res);
        ob__dist_sleep_ms(200); /* rank 0 may not be listening yet: it loads its data first */
    }
    return ob_set_error(OB_ERR_IO, "rank %d: no NCCL id from rank 0 at MASTER_ADDR=%s port %d within %g s (ONEBIT_NCCL_TIMEOUT); last: %s", d->rank,
                        d->master_addr, d->master_port, d->timeout_s, last);
}
#endif

OB_DEF int ob_dist_exchange_id(const ob_dist *d, uint8_t *id) {
    if (d->world <= 1) return OB_OK;
#if defined(__unix__) || defined(__APPLE__)
    if (d->id_file[0]) return d->rank == 0 ? ob__id_file_publish(d, id) : ob__id_file_fetch(d, id);
    if (!d->master_addr[0] || d->master_port < 1)
        return ob_set_error(OB_ERR_ARG, "rank %d: no rendezvous: set ONEBIT_NCCL_ID_FILE, or MASTER_ADDR and MASTER_PORT", d->rank);
    return d->rank == 0 ? ob__id_tcp_serve(d, id) : ob__id_tcp_fetch(d, id);
#else
    (void)id;
    return ob_set_error(OB_ERR_UNSUPPORTED, "the rendezvous of data-parallel runs needs a POSIX system");
#endif
}

OB_DEF void ob_dist_id_done(const ob_dist *d) {
    if (d->world > 1 && d->rank == 0 && d->id_file[0]) remove(d->id_file);
}

/* ================================================================================================
 * Runs
 * ============================================================================================== */
#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#endif

OB_DEF double ob_now_ms(void) {
#if defined(__unix__) || defined(__APPLE__)
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
#else
    return (double)clock() * 1e3 / CLOCKS_PER_SEC;
#endif
}

static void ob__copy_str(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src ? src : ""); }

OB_DEF int ob_run_options_preset(ob_run_options *o, const char *preset) {
    memset(o, 0, sizeof *o);
    ob_optim_config_default(&o->optim);
    o->seed = 1337;
    o->batch_tokens = 524288;
    o->accum = 8;
    o->val_batch_seqs = 64;
    o->train_log_every = 100;
    o->sliding_stride = 16;
    o->sliding_batch = 256;
    o->device = -1;
    o->dist.world = 1; /* alone until the launcher's variables say otherwise (ob_run_options_from_env) */
    o->dist.local_rank = -1;
    o->dist.timeout_s = 300.0;
    o->batch_schedule_fraction = 0.33;
    o->sched.kind = OB_LR_LINEAR_WARMDOWN;
    o->sched.iterations = 2000;
    o->sched.warmdown_fraction = 0.15;
    o->sched.warmup_steps = 5;
    ob__copy_str(o->out_dir, sizeof o->out_dir, "logs");
    ob__copy_str(o->checkpoint_dir, sizeof o->checkpoint_dir, "checkpoints");
    ob__copy_str(o->preset, sizeof o->preset, preset);
    snprintf(o->run_id, sizeof o->run_id, "onebit_%s", preset);
    if (!strcmp(preset, "xnor-10min") || !strcmp(preset, "xnor-100k")) {
        /* the XNOR seed's run script (run_cuda_xnor.sh) with the U-Net; 10 minutes: cap 600 s */
        ob_config_preset(&o->model, "xnor-10min");
        o->seed = 42;
        o->optim.matrix_lr = 0.008f; o->optim.scalar_lr = 0.01f; o->optim.tied_embed_lr = 0.05f;
        o->optim.muon_wd = 0.04f; o->optim.muon_momentum = 0.80f; o->optim.muon_momentum_warmup_start = 0.80f;
        o->optim.muon_momentum_warmup_steps = 200; o->optim.adam_wd = 0.04f;
        o->sched.kind = OB_LR_COSINE; o->sched.warmup_steps = 5; o->sched.warmdown_fraction = 0.3; o->sched.iterations = 100000;
        o->batch_tokens = 65536;
        o->seq_len_schedule = 1;
        o->sliding_eval = 1; o->sliding_batch = 512; o->temp_scaling = 1;
        if (!strcmp(preset, "xnor-10min")) o->sched.max_wallclock_ms = 600000.0;
        else o->checkpoint_every = 10000;
        return OB_OK;
    }
    if (!strcmp(preset, "binary-50k")) {
        /* the binary seed's run script (run_cuda_binary.sh) */
        ob_config_preset(&o->model, "binary-50k");
        o->seed = 42;
        o->sched.kind = OB_LR_LINEAR_WARMDOWN; o->sched.iterations = 50000; o->sched.warmdown_fraction = 0.2;
        o->sliding_eval = 1; o->sliding_batch = 256; o->temp_scaling = 1;
        o->checkpoint_every = 5000;
        return OB_OK;
    }
    if (!strcmp(preset, "ternary-bitnet")) {
        /* PR #126: BitNet b1.58 with depth recurrence and NorMuon; warmup 100, constant, cosine over
         * the last 2,000 steps to 0.1x */
        ob_config_preset(&o->model, "ternary-bitnet");
        o->seed = 42;
        o->optim.normuon = 1;
        o->sched.kind = OB_LR_WARMUP_CONSTANT_COSINE; o->sched.iterations = 10000; o->sched.warmup_steps = 100;
        o->sched.cooldown_steps = 2000; o->sched.final_fraction = 0.1;
        /* sequence-length warm-up 128 -> 1024 over the first 2,000 steps, NTK-aware RoPE base */
        o->seq_len_schedule = 1; o->seq_warmup_steps = 2000; o->rope_ntk = 1;
        o->sliding_eval = 1; o->sliding_stride = 512; o->sliding_batch = 64;
        return OB_OK;
    }
    if (!strcmp(preset, "tiny") || !strcmp(preset, "embedded")) {
        /* a small XNOR model that trains on two CPU cores; "embedded": about a minute on this
         * repository's own text, bytes as tokens */
        ob_config_preset(&o->model, "tiny");
        o->optim.matrix_lr = 0.02f; o->optim.scalar_lr = 0.02f; o->optim.tied_embed_lr = 0.05f;
        o->optim.muon_momentum_warmup_steps = 50;
        o->batch_tokens = 2048; o->accum = 1;
        o->sched.kind = OB_LR_LINEAR_WARMDOWN; o->sched.warmdown_fraction = 0.3; o->sched.iterations = 100000;
        o->val_batch_seqs = 16; o->train_log_every = 10;
        o->sliding_eval = 1; o->sliding_stride = 64; o->sliding_batch = 32; o->temp_scaling = 1;
        if (!strcmp(preset, "embedded")) { o->sched.max_wallclock_ms = 60000.0; o->generate_tokens = 200; }
        return OB_OK;
    }
    return ob_set_error(OB_ERR_ARG, "unknown preset '%s' (xnor-10min, xnor-100k, binary-50k, ternary-bitnet, tiny, embedded)", preset);
}

static int ob__opt_int64(const char *key, const char *v, int64_t *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end) return ob_set_error(OB_ERR_ARG, "%s: '%s' is not an integer", key, v);
    *out = x;
    return OB_OK;
}
static int ob__opt_double(const char *key, const char *v, double *out) {
    *out = 0.0;
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) return ob_set_error(OB_ERR_ARG, "%s: '%s' is not a number", key, v);
    *out = x;
    return OB_OK;
}

/* Seed settings onebit accepts but does not need: what they did there, and why it does not apply. */
static const char *ob__inert_setting(const char *key, const char *v) {
    if (!strcmp(key, "USE_TRITON_KERNEL") || !strcmp(key, "USE_INT8_KERNEL"))
        return "the seed's Triton / INT8 kernels are replaced by onebit's own (the XNOR tensor-core GEMM)";
    if (!strcmp(key, "COMPILE_MODE")) return "torch.compile has no counterpart here";
    if (!strcmp(key, "CHURN_LOG_EVERY") || !strcmp(key, "WARMUP_STEPS")) return "a diagnostic / compile warm-up of the seed";
    if (!strcmp(key, "SIGN_COMPRESS_REG") || !strcmp(key, "BIGRAM_HASH") || !strcmp(key, "MTP_HEADS") || !strcmp(key, "TRAINING_DEPTH_RECURRENCE") ||
        !strcmp(key, "EVAL_DEPTH_RECURRENCE") || !strcmp(key, "DIFF_ATTN") || !strcmp(key, "REFINER") || !strcmp(key, "MLP_GROUPS") ||
        !strcmp(key, "UNTIE_AT_FRACTION") || !strcmp(key, "SEQ_LEN_START") || !strcmp(key, "TVERSKY_NUM_FEATURES") ||
        !strcmp(key, "TVERSKY_FEATURE_POOLS"))
        return (!strcmp(v, "0") || !strcmp(v, "0.0") || !strcmp(v, "0.00")) ? "off in every published run" : NULL;
    if (!strcmp(key, "ATTN_PROJ_TYPE") || !strcmp(key, "LOGIT_HEAD_TYPE")) return !strcmp(v, "standard") ? "the standard layer" : NULL;
    if (!strcmp(key, "TVERSKY_MEMBERSHIP") || !strcmp(key, "REFINER_KERNEL") || !strcmp(key, "CORR_WEIGHT_LR") || !strcmp(key, "SEQ_SCHEDULE_FRACTION"))
        return "only read by features that are off";
    return NULL;
}

OB_DEF int ob_run_options_set(ob_run_options *o, const char *key, const char *v, FILE *notices) {
    int r;
    double d;
    if (!strcmp(key, "DATA_PATH")) { ob__copy_str(o->data_path, sizeof o->data_path, v); return OB_OK; }
    if (!strcmp(key, "TOKENIZER_PATH")) { ob__copy_str(o->tokenizer_path, sizeof o->tokenizer_path, v); return OB_OK; }
    if (!strcmp(key, "RUN_ID")) { ob__copy_str(o->run_id, sizeof o->run_id, v); return OB_OK; }
    if (!strcmp(key, "CHECKPOINT_DIR")) { ob__copy_str(o->checkpoint_dir, sizeof o->checkpoint_dir, v); return OB_OK; }
    if (!strcmp(key, "OUT_DIR")) { ob__copy_str(o->out_dir, sizeof o->out_dir, v); return OB_OK; }
    if (!strcmp(key, "SEED")) { int64_t x = 0; r = ob__opt_int64(key, v, &x); if (!r) o->seed = (uint64_t)x; return r; }
    if (!strcmp(key, "ITERATIONS")) return ob__parse_int(key, v, &o->sched.iterations);
    if (!strcmp(key, "MAX_WALLCLOCK_SECONDS")) { r = ob__opt_double(key, v, &d); if (!r) o->sched.max_wallclock_ms = d > 0 ? 1000.0 * d : 0.0; return r; }
    if (!strcmp(key, "WARMDOWN_FRACTION")) return ob__opt_double(key, v, &o->sched.warmdown_fraction);
    if (!strcmp(key, "LR_WARMUP_STEPS")) return ob__parse_int(key, v, &o->sched.warmup_steps);
    if (!strcmp(key, "LR_SCHEDULE")) {
        if (!strcmp(v, "linear")) o->sched.kind = OB_LR_LINEAR_WARMDOWN;
        else if (!strcmp(v, "cosine")) o->sched.kind = OB_LR_COSINE;
        else if (!strcmp(v, "warmup_constant_cosine")) o->sched.kind = OB_LR_WARMUP_CONSTANT_COSINE;
        else return ob_set_error(OB_ERR_ARG, "%s: '%s' is not linear, cosine or warmup_constant_cosine", key, v);
        return OB_OK;
    }
    if (!strcmp(key, "COOLDOWN_STEPS")) return ob__parse_int(key, v, &o->sched.cooldown_steps);
    if (!strcmp(key, "SEQ_LEN_SCHEDULE")) return ob__parse_int(key, v, &o->seq_len_schedule);
    if (!strcmp(key, "SEQ_WARMUP_STEPS")) return ob__parse_int(key, v, &o->seq_warmup_steps);
    if (!strcmp(key, "ROPE_NTK_WARMUP")) return ob__parse_int(key, v, &o->rope_ntk);
    if (!strcmp(key, "TRAIN_BATCH_TOKENS")) return ob__opt_int64(key, v, &o->batch_tokens);
    if (!strcmp(key, "GRAD_ACCUM")) return ob__parse_int(key, v, &o->accum);
    if (!strcmp(key, "BATCH_TOKENS_START")) return ob__opt_int64(key, v, &o->batch_tokens_start);
    if (!strcmp(key, "BATCH_SCHEDULE_FRACTION")) return ob__opt_double(key, v, &o->batch_schedule_fraction);
    if (!strcmp(key, "VAL_MAX_TOKENS")) return ob__opt_int64(key, v, &o->val_max_tokens);
    if (!strcmp(key, "VAL_LOSS_EVERY")) return ob__parse_int(key, v, &o->val_loss_every);
    if (!strcmp(key, "VAL_BATCH_SIZE")) { /* tokens in the seeds; windows here */
        int64_t x = 0;
        r = ob__opt_int64(key, v, &x);
        if (!r) o->val_batch_seqs = (int)(x / 8 / (o->model.train_seq_len > 0 ? o->model.train_seq_len : 1)) > 0 ? (int)(x / 8 / o->model.train_seq_len) : 1;
        return r;
    }
    if (!strcmp(key, "TRAIN_LOG_EVERY")) return ob__parse_int(key, v, &o->train_log_every);
    if (!strcmp(key, "SLIDING_EVAL")) return ob__parse_int(key, v, &o->sliding_eval);
    if (!strcmp(key, "SLIDING_EVAL_STRIDE")) return ob__parse_int(key, v, &o->sliding_stride);
    if (!strcmp(key, "SLIDING_BATCH_SIZE")) return ob__parse_int(key, v, &o->sliding_batch);
    if (!strcmp(key, "TEMP_SCALING")) return ob__parse_int(key, v, &o->temp_scaling);
    if (!strcmp(key, "CHECKPOINT_EVERY")) return ob__parse_int(key, v, &o->checkpoint_every);
    if (!strcmp(key, "GENERATE_TOKENS")) return ob__parse_int(key, v, &o->generate_tokens);
    if (!strcmp(key, "ON_NONFINITE")) {
        if (!strcmp(v, "stop")) o->on_nonfinite = 0;
        else if (!strcmp(v, "skip")) o->on_nonfinite = 1;
        else return ob_set_error(OB_ERR_ARG, "%s: '%s' is not stop or skip", key, v);
        return OB_OK;
    }
    const char *note = NULL;
    r = ob_optim_config_set(&o->optim, key, v, &note);
    if (r == OB_OK) { if (note && notices) fprintf(notices, "notice: %s=%s: %s\n", key, v, note); return OB_OK; }
    if (r != OB_ERR_ARG || strstr(ob_last_error(), "unknown optimizer setting") == NULL) return r;
    r = ob_config_set(&o->model, key, v);
    if (r == OB_OK || strstr(ob_last_error(), "unknown model setting") == NULL) return r;
    const char *inert = ob__inert_setting(key, v);
    if (inert) { if (notices) fprintf(notices, "notice: %s=%s ignored: %s\n", key, v, inert); return OB_OK; }
    return ob_set_error(OB_ERR_ARG, "unknown setting %s=%s", key, v);
}

OB_DEF int ob_run_options_from_env(ob_run_options *o, FILE *notices) {
    static const char *names[] = {
        "DATA_PATH", "TOKENIZER_PATH", "RUN_ID", "SEED", "VAL_BATCH_SIZE", "VAL_LOSS_EVERY", "TRAIN_LOG_EVERY", "SLIDING_EVAL",
        "SLIDING_EVAL_STRIDE", "SLIDING_BATCH_SIZE", "TEMP_SCALING", "ITERATIONS", "WARMDOWN_FRACTION", "LR_WARMUP_STEPS",
        "LR_SCHEDULE", "SEQ_LEN_SCHEDULE", "TRAIN_BATCH_TOKENS", "TRAIN_SEQ_LEN", "MAX_WALLCLOCK_SECONDS", "VOCAB_SIZE",
        "NUM_LAYERS", "NUM_KV_HEADS", "MODEL_DIM", "NUM_HEADS", "MLP_MULT", "TIE_EMBEDDINGS", "EMBED_DIM", "ACTIVATION",
        "ROPE_BASE", "ROPE_TYPE", "YARN_MAX_LEN", "QK_GAIN_INIT", "LOGIT_SOFTCAP", "SOFTCAP_TYPE", "TIED_EMBED_INIT_STD",
        "SMEAR", "ATTN_RES", "XNOR_GROUP_SIZE", "BITNET_GROUP_SIZE", "BINARIZE_ACTIVATIONS", "USE_INT8_KERNEL",
        "USE_TRITON_KERNEL", "FP_STORAGE", "SCALE_STORAGE", "SIGN_COMPRESS_REG", "MATRIX_OPTIMIZER", "MATRIX_LR", "SCALAR_LR",
        "TIED_EMBED_LR", "EMBED_LR", "HEAD_LR", "MUON_MOMENTUM", "MUON_BACKEND_STEPS", "MUON_WD", "USE_GRAM_NS",
        "MUON_MOMENTUM_WARMUP_START", "MUON_MOMENTUM_WARMUP_STEPS", "ADAM_LR", "ADAM_WD", "BETA1", "BETA2", "ADAM_EPS",
        "GRAD_CLIP_NORM", "EMA", "EMA_DECAY", "EMA_START_FRACTION", "CHECKPOINT_EVERY", "CHECKPOINT_DIR", "COMPILE_MODE",
        "CHURN_LOG_EVERY", "BATCH_TOKENS_START", "BATCH_SCHEDULE_FRACTION", "SEQ_LEN_START", "SEQ_SCHEDULE_FRACTION",
        "VAL_MAX_TOKENS", "WARMUP_STEPS", "BIGRAM_HASH", "MTP_HEADS", "TRAINING_DEPTH_RECURRENCE", "EVAL_DEPTH_RECURRENCE",
        "DIFF_ATTN", "REFINER", "REFINER_KERNEL", "MLP_GROUPS", "UNTIE_AT_FRACTION", "ATTN_PROJ_TYPE", "LOGIT_HEAD_TYPE",
        "TVERSKY_MEMBERSHIP", "TVERSKY_NUM_FEATURES", "TVERSKY_FEATURE_POOLS", "CORR_WEIGHT_LR", "NORMUON", "ON_NONFINITE", "SEQ_WARMUP_STEPS", "ROPE_NTK_WARMUP"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = getenv(names[i]);
        if (!v) continue;
        int r = ob_run_options_set(o, names[i], v, notices);
        if (r) return ob_set_error(r, "environment variable %s=%s: %s", names[i], v, ob_last_error());
    }
    return ob_dist_from_env(&o->dist); /* RANK / WORLD_SIZE / ... : the launcher's, as the seeds read them */
}

OB_DEF void ob_run_options_usage(FILE *f, const char *program) {
    fprintf(f,
            "usage: %s [--preset NAME] [flags]\n"
            "  --preset NAME        xnor-10min | xnor-100k | binary-50k | ternary-bitnet | tiny | embedded (must come first)\n"
            "  --data DIR           shards fineweb_train_*.bin / fineweb_val_*.bin (default: DATA_PATH, else the embedded default)\n"
            "  --tokenizer FILE     SentencePiece .model for bits per byte (TOKENIZER_PATH)\n"
            "  --iterations N       step cap (ITERATIONS)\n"
            "  --max-seconds S      wall-clock cap on training (MAX_WALLCLOCK_SECONDS)\n"
            "  --seed N             (SEED)\n"
            "  --out DIR            logs, plot and artifact (default logs)\n"
            "  --checkpoint-every N checkpoints every N steps into --checkpoint-dir (default checkpoints)\n"
            "  --resume             continue from the newest valid checkpoint\n"
            "  --grad-clip X        clip the global gradient norm (onebit's option; the seeds never clip)\n"
            "  --on-nonfinite stop|skip  a non-finite loss or gradient: stop (default; the weights are the\n"
            "                       last good step's, resume from the last checkpoint) or skip the batch\n"
            "  --cpu | --gpu        choose the device (default: the GPU when there is one)\n"
            "  --set KEY=VALUE      any seed environment variable (NUM_LAYERS, MATRIX_LR, BINARIZE_ACTIVATIONS, ...)\n"
            "Every seed environment variable is read first; flags override it.\n", program);
}

OB_DEF int ob_run_options_from_args(ob_run_options *o, int argc, char **argv, FILE *notices) {
    int i = 1;
    if (argc > 2 && !strcmp(argv[1], "--preset")) {
        int r = ob_run_options_preset(o, argv[2]);
        if (r) return r;
        i = 3;
    }
    int r = ob_run_options_from_env(o, notices);
    if (r) return r;
    for (; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--resume")) { o->resume = 1; continue; }
        if (!strcmp(f, "--cpu")) { o->device = 0; continue; }
        if (!strcmp(f, "--gpu")) { o->device = 1; continue; }
        if (!strcmp(f, "--preset")) return ob_set_error(OB_ERR_ARG, "--preset must be the first flag");
        if (i + 1 >= argc) return ob_set_error(OB_ERR_ARG, "flag %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--data")) r = ob_run_options_set(o, "DATA_PATH", v, notices);
        else if (!strcmp(f, "--tokenizer")) r = ob_run_options_set(o, "TOKENIZER_PATH", v, notices);
        else if (!strcmp(f, "--iterations")) r = ob_run_options_set(o, "ITERATIONS", v, notices);
        else if (!strcmp(f, "--max-seconds")) r = ob_run_options_set(o, "MAX_WALLCLOCK_SECONDS", v, notices);
        else if (!strcmp(f, "--seed")) r = ob_run_options_set(o, "SEED", v, notices);
        else if (!strcmp(f, "--out")) r = ob_run_options_set(o, "OUT_DIR", v, notices);
        else if (!strcmp(f, "--checkpoint-every")) r = ob_run_options_set(o, "CHECKPOINT_EVERY", v, notices);
        else if (!strcmp(f, "--checkpoint-dir")) r = ob_run_options_set(o, "CHECKPOINT_DIR", v, notices);
        else if (!strcmp(f, "--grad-clip")) r = ob_run_options_set(o, "grad_clip_norm", v, notices);
        else if (!strcmp(f, "--on-nonfinite")) r = ob_run_options_set(o, "ON_NONFINITE", v, notices);
        else if (!strcmp(f, "--set")) {
            const char *eq = strchr(v, '=');
            if (!eq) return ob_set_error(OB_ERR_ARG, "--set %s: expected KEY=VALUE", v);
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)(eq - v), v);
            r = ob_run_options_set(o, key, eq + 1, notices);
        } else return ob_set_error(OB_ERR_ARG, "unknown flag %s", f);
        if (r) return ob_set_error(r, "%s %s: %s", f, v, ob_last_error());
    }
    if (o->batch_tokens % ((int64_t)o->accum * o->model.train_seq_len))
        return ob_set_error(OB_ERR_ARG, "TRAIN_BATCH_TOKENS %lld is not a multiple of %d micro-batches x TRAIN_SEQ_LEN %d",
                            (long long)o->batch_tokens, o->accum, o->model.train_seq_len);
    if (o->dist.world > 1) { /* each rank's micro-batch must be whole sequences too */
        int a = 0;
        if ((r = ob_dist_accum(o->accum, o->dist.world, &a))) return ob_set_error(r, "WORLD_SIZE %d: %s", o->dist.world, ob_last_error());
        if (o->batch_tokens % ((int64_t)a * o->dist.world * o->model.train_seq_len))
            return ob_set_error(OB_ERR_ARG, "TRAIN_BATCH_TOKENS %lld is not a multiple of %d ranks x %d micro-batches x TRAIN_SEQ_LEN %d",
                                (long long)o->batch_tokens, o->dist.world, a, o->model.train_seq_len);
        if (o->device == 0) return ob_set_error(OB_ERR_ARG, "--cpu: a data-parallel run (WORLD_SIZE %d) trains on GPUs", o->dist.world);
    }
    return ob_config_validate(&o->model);
}

/* ---- the CPU backend ---- */
static int ob__cpu_train_step(ob_backend *b, ob_token_stream *s, int64_t batch_tokens, int seq_len, int accum, float lr_scale,
                              float momentum, float *loss) {
    return ob_train_step(b->host, b->host_opt, s, batch_tokens, seq_len, accum, lr_scale, momentum, loss);
}
static int ob__cpu_sync(ob_backend *b, int with_optimizer) { (void)b; (void)with_optimizer; return OB_OK; }
OB_DEF void ob_backend_cpu(ob_backend *b, ob_model *m, ob_optimizer *o) {
    memset(b, 0, sizeof *b);
    b->name = "cpu";
    b->world = 1;
    b->ctx = m;
    b->host = m;
    b->host_opt = o;
    b->train_step = o ? ob__cpu_train_step : NULL;
    b->score = ob_model_scorer;
    b->next_logits = ob_model_next_logits;
    b->pull = ob__cpu_sync;
    b->push = ob__cpu_sync;
}

#ifdef ONEBIT_CUDA_CUH /* onebit_cuda.cuh includes this header first and defines these below */
OB_DEF int ob_cuda_available(void);
OB_DEF int ob_backend_cuda(ob_backend *b, ob_model *m, ob_optimizer *o);
OB_DEF int ob_backend_cuda_dist(ob_backend *b, ob_model *m, ob_optimizer *o, const ob_dist *d);
#endif
OB_DEF int ob_backend_open(ob_backend *b, ob_model *m, ob_optimizer *o, int device) {
#ifdef ONEBIT_CUDA_CUH
    if (device != 0 && ob_cuda_available()) return ob_backend_cuda(b, m, o);
    if (device == 1) return ob_set_error(OB_ERR_CUDA, "--gpu: no CUDA device is available");
#else
    if (device == 1) return ob_set_error(OB_ERR_UNSUPPORTED, "--gpu: this program was built without CUDA (build it with nvcc)");
#endif
    ob_backend_cpu(b, m, o);
    return OB_OK;
}

OB_DEF int ob_run_open_backend(ob_run *r) {
    if (r->world <= 1) return ob_backend_open(&r->be, &r->model, &r->optim, r->opt.device);
#ifdef ONEBIT_CUDA_CUH
    int e = ob_backend_cuda_dist(&r->be, &r->model, &r->optim, &r->opt.dist);
    if (e) return e;
    /* rank 0's state on every rank: only rank 0 read a checkpoint (--resume), and the weights must
     * start equal for the shared gradients to keep them so */
    if ((e = r->be.broadcast_state(&r->be))) return e;
    double v[4] = {0.0, 0.0, 0.0, 0.0}; /* summed: rank 0's values, exact (integers below 2^53) */
    if (r->rank == 0) { v[0] = (double)r->step; v[1] = r->elapsed_ms; v[2] = (double)r->data.train.file_idx; v[3] = (double)r->data.train.pos; }
    if ((e = r->be.allreduce(&r->be, v, 4, OB_REDUCE_SUM))) return e;
    r->step = (int64_t)v[0];
    r->elapsed_ms = v[1];
    if (r->rank != 0 && (e = ob_token_stream_seek(&r->data.train, (int)v[2], (size_t)v[3]))) return e;
    return OB_OK;
#else
    return ob_set_error(OB_ERR_UNSUPPORTED, "rank %d of %d: a data-parallel run trains on GPUs: use the nvcc build of this program (make gpu)", r->rank, r->world);
#endif
}

OB_DEF int ob_run_reduce_eval(ob_run *r, ob_eval_result *res, int status) {
    if (r->world <= 1) return status;
    if (!r->be.allreduce) return ob_set_error(OB_ERR_ARG, "rank %d of %d: the backend %s is not data-parallel", r->rank, r->world, r->be.name);
    /* a failed rank still takes part, so the others do not wait for it until the timeout */
    double v[4] = {status ? 0.0 : res->loss_sum, status ? 0.0 : res->targets, status ? 0.0 : res->bytes, status ? 1.0 : 0.0};
    char why[512];
    snprintf(why, sizeof why, "%s", status ? ob_last_error() : "");
    int e = r->be.allreduce(&r->be, v, 4, OB_REDUCE_SUM);
    if (e) return e;
    if (status) return ob_set_error(status, "%s", why);
    if (v[3] > 0.0) return ob_set_error(OB_ERR_ARG, "rank %d: the evaluation failed on %.0f other rank(s) (their logs say why)", r->rank, v[3]);
    res->loss_sum = v[0];
    res->targets = v[1];
    res->bytes = v[2];
    ob_eval_finish(res);
    return OB_OK;
}

static ob_run *ob__signal_run;
#if defined(__unix__) || defined(__APPLE__)
static void ob__on_signal(int sig) { (void)sig; if (ob__signal_run) ob__signal_run->stop_signal = 1; }
#endif

OB_DEF void ob_run_log(ob_run *r, const char *fmt, ...) {
    if (r->rank > 0) return; /* rank 0 speaks for a data-parallel run: the others compute the same figures */
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (r->log) {
        va_start(ap, fmt);
        vfprintf(r->log, fmt, ap);
        va_end(ap);
        fprintf(r->log, "\n");
        fflush(r->log);
    }
}

OB_DEF int ob_run_setup(ob_run *r, const ob_run_options *o) {
    memset(r, 0, sizeof *r);
    r->opt = *o;
    r->rank = o->dist.world > 1 ? o->dist.rank : 0;
    r->world = o->dist.world > 1 ? o->dist.world : 1;
    int e;
    int train_seq = o->model.train_seq_len;
    if ((e = ob_data_open(&r->data, o->data_path, o->tokenizer_path, o->model.vocab_size, train_seq, o->val_max_tokens))) return e;
    if ((e = ob_model_init(&r->model, &o->model))) return e;
    ob_model_init_weights(&r->model, o->seed);
    if ((e = ob_optimizer_init(&r->optim, &r->model, &o->optim))) return e;
    r->n_stages = o->seq_len_schedule ? ob_seq_len_stages(train_seq, r->stages) : 1;
    if (!o->seq_len_schedule) r->stages[0] = train_seq;
    if (r->rank > 0) return OB_OK; /* rank 0 keeps the logs and reads the checkpoint; the others get its state (ob_run_open_backend) */
#if defined(__unix__) || defined(__APPLE__)
    mkdir(o->out_dir, 0755);
#endif
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.txt", o->out_dir, o->run_id);
    r->log = fopen(path, "a");
    snprintf(path, sizeof path, "%s/%s.jsonl", o->out_dir, o->run_id);
    r->jsonl = fopen(path, "a");
    if (!r->log || !r->jsonl) return ob_set_error(OB_ERR_IO, "%s: cannot open the run's logs: %s", path, strerror(errno));
    if (o->resume && (e = ob_checkpoint_resume(r))) return e;
    return OB_OK;
}

static void ob__hist_push(ob_run *r, float **h, int *n, float step, float v) {
    if (*n + 1 > r->cap_hist) {
        r->cap_hist = r->cap_hist ? 2 * r->cap_hist : 1024;
        r->hist = (float *)realloc(r->hist, (size_t)r->cap_hist * 2 * sizeof(float));
        r->val_hist = (float *)realloc(r->val_hist, (size_t)r->cap_hist * 2 * sizeof(float));
        h = h == &r->hist ? &r->hist : &r->val_hist;
    }
    (*h)[2 * *n] = step;
    (*h)[2 * *n + 1] = v;
    (*n)++;
}

OB_DEF int ob_run_eval(ob_run *r, float temperature, ob_eval_result *out) {
    int world = r->world > 1 ? r->world : 1; /* a run set up by hand may leave it 0: alone */
    int e = ob_eval_val(r->be.score, r->be.ctx, &r->data.val, &r->data.bpb, r->opt.model.train_seq_len, r->opt.val_batch_seqs, temperature, 1,
                        r->opt.model.z_loss, world > 1 ? r->rank : 0, world, out);
    return ob_run_reduce_eval(r, out, e); /* alone: e itself */
}

static int ob__run_validate(ob_run *r) {
    ob_eval_result ev;
    int e = ob_run_eval(r, 1.0f, &ev);
    if (e) return e;
    ob_run_log(r, "step:%lld/%d val_loss:%.4f val_bpb:%.4f train_time:%.0fms", (long long)r->step, r->opt.sched.iterations, ev.val_loss, ev.bpb, r->elapsed_ms);
    if (r->jsonl) { /* rank 0's */
        fprintf(r->jsonl, "{\"step\":%lld,\"val_loss\":%.6f,\"val_bpb\":%.6f,\"train_ms\":%.1f}\n", (long long)r->step, ev.val_loss, ev.bpb, r->elapsed_ms);
        fflush(r->jsonl);
    }
    ob__hist_push(r, &r->val_hist, &r->n_val_hist, (float)r->step, (float)ev.val_loss);
    return OB_OK;
}

static int ob__run_set_rope(ob_run *r, float scale) {
    if (scale == r->model.rope_base_scale) return OB_OK;
    ob_model_set_rope_scale(&r->model, scale);
    return r->be.set_rope ? r->be.set_rope(&r->be) : OB_OK;
}

OB_DEF int ob_run_train(ob_run *r) {
    const ob_run_options *o = &r->opt;
    if (!r->be.train_step) return ob_set_error(OB_ERR_ARG, "run: no backend attached");
    ob__signal_run = r;
#if defined(__unix__) || defined(__APPLE__)
    signal(SIGINT, ob__on_signal);
    signal(SIGTERM, ob__on_signal);
#endif
    size_t nparams = r->model.n_params;
    /* data-parallel: accum / world micro-batches per rank (the seeds' 8 // world), the same tokens per step */
    int accum = o->accum, world = r->world;
    if (world > 1) {
        int e0 = ob_dist_accum(o->accum, world, &accum);
        if (e0) return e0;
        if (!r->be.allreduce || r->be.world != world)
            return ob_set_error(OB_ERR_ARG, "rank %d of %d: the backend %s is not joined to the other ranks (ob_run_open_backend)", r->rank, world, r->be.name);
        ob_run_log(r, "onebit | %s on %s x %d ranks | params:%zu L:%d d:%d h:%d kv:%d mlp:%dx act:%s xnor_act:%d g:%d | %lld tokens/step in %d micro-batches "
                   "of %lld tokens on each rank", o->preset, r->be.name, world, nparams, o->model.num_layers, o->model.model_dim, o->model.num_heads,
                   o->model.num_kv_heads, o->model.mlp_mult, ob_activation_name(o->model.activation), o->model.binarize_act, o->model.group_size,
                   (long long)o->batch_tokens, accum, (long long)ob_loader_local_tokens(o->batch_tokens, world, accum));
    } else {
        ob_run_log(r, "onebit | %s on %s | params:%zu L:%d d:%d h:%d kv:%d mlp:%dx act:%s xnor_act:%d g:%d | %lld tokens/step in %d micro-batches",
                   o->preset, r->be.name, nparams, o->model.num_layers, o->model.model_dim, o->model.num_heads, o->model.num_kv_heads,
                   o->model.mlp_mult, ob_activation_name(o->model.activation), o->model.binarize_act, o->model.group_size,
                   (long long)o->batch_tokens, o->accum);
    }
    double cap = o->sched.max_wallclock_ms;
    int e = OB_OK;
    double t_start = ob_now_ms(), base = r->elapsed_ms, log_t = t_start;
    int64_t log_step = r->step;
    for (;;) {
        double elapsed = base + (ob_now_ms() - t_start);
        if (world > 1) {
            /* every rank must take the same decisions: the wall-clock schedule, the cap, validation and
             * a stop follow one training time and any rank's signal. The time is rank 0's (the others
             * send -1 to the maximum): its clock leaves out its checkpoint writes, which the others
             * spend waiting here, and counts its waits for slower ranks, which are training time. */
            double v[2] = {r->rank == 0 ? elapsed : -1.0, r->stop_signal ? 1.0 : 0.0};
            if ((e = r->be.allreduce(&r->be, v, 2, OB_REDUCE_MAX))) break;
            elapsed = v[0];
            if (v[1] > 0.0) { /* a signal reached some rank during the last step: checkpoint (rank 0), stop everywhere */
                r->elapsed_ms = elapsed;
                double t = ob_now_ms();
                if ((e = ob_checkpoint_save(r))) break;
                t_start += ob_now_ms() - t;
                e = ob_set_error(OB_ERR_INTERRUPTED, "interrupted at step %lld: checkpoint written to %s by rank 0 (continue with --resume)", (long long)r->step,
                                 o->checkpoint_dir);
                break;
            }
        }
        int done = r->step >= o->sched.iterations || (cap > 0 && elapsed >= cap);
        if (o->val_loss_every > 0 && r->step % o->val_loss_every == 0 && !done) {
            double t = ob_now_ms();
            if ((e = ob__run_validate(r))) break;
            t_start += ob_now_ms() - t; /* evaluation is not training time */
        }
        if (done) {
            r->elapsed_ms = elapsed;
            if (cap > 0 && elapsed >= cap && r->step < o->sched.iterations)
                ob_run_log(r, "stopping_early: wallclock_cap train_time:%.0fms step:%lld/%d", elapsed, (long long)r->step, o->sched.iterations);
            break;
        }
        float lr = ob_lr_multiplier(&o->sched, r->step, elapsed);
        float mom = ob_muon_momentum_at(&o->optim, r->step);
        int seq = o->seq_warmup_steps > 0 ? ob_seq_len_at(r->stages, r->n_stages, r->step, o->seq_warmup_steps, 0.0, 0.0)
                                          : ob_seq_len_at(r->stages, r->n_stages, r->step, o->sched.iterations, elapsed, cap);
        if (o->rope_ntk && (e = ob__run_set_rope(r, ob_rope_ntk_scale(seq, o->model.train_seq_len, o->model.model_dim / o->model.num_heads))))
            break;
        int64_t bt = ob_batch_tokens_at(o->batch_tokens_start, o->batch_tokens, o->batch_schedule_fraction, r->step, o->sched.iterations, elapsed, cap);
        float loss = 0.0f;
        e = r->be.train_step(&r->be, &r->data.train, bt, seq, accum, lr, mom, &loss);
        if (e == OB_ERR_NUMERIC && o->on_nonfinite == 1) {
            ob_run_log(r, "step:%lld skipped: %s", (long long)r->step + 1, ob_last_error());
            e = OB_OK;
            r->step++;
            continue;
        }
        if (e == OB_ERR_NUMERIC) { /* stop: the weights are those of the step before; say where to resume */
            char ck[1200];
            char why[1024];
            snprintf(why, sizeof why, "%s", ob_last_error());
            if (ob_checkpoint_latest(o->checkpoint_dir, ck, sizeof ck) == OB_OK)
                e = ob_set_error(OB_ERR_NUMERIC, "step %lld stopped: %s; the last good checkpoint is %s (--resume; ON_NONFINITE=skip skips such batches)", (long long)r->step + 1, why, ck);
            else e = ob_set_error(OB_ERR_NUMERIC, "step %lld stopped: %s; no checkpoint was written (CHECKPOINT_EVERY; ON_NONFINITE=skip skips such batches)", (long long)r->step + 1, why);
            break;
        }
        if (e) break;
        r->step++;
        if (r->optim.ema) {
            int start = cap > 0 ? elapsed >= o->optim.ema_start_fraction * cap : r->step >= (int64_t)(o->sched.iterations * o->optim.ema_start_fraction);
            if (r->be.ema_update) { if ((e = r->be.ema_update(&r->be, start))) break; }
            else ob_ema_update(&r->optim, start);
        }
        ob__hist_push(r, &r->hist, &r->n_hist, (float)r->step, loss);
        if (r->be.memory_report && !r->memory_logged) { /* after the first step: its buffers are sized then */
            char line[256];
            r->be.memory_report(&r->be, line, sizeof line);
            ob_run_log(r, "%s", line);
            r->memory_logged = 1;
        }
        double now = ob_now_ms();
        r->elapsed_ms = base + (now - t_start);
        if (o->train_log_every > 0 && r->step % o->train_log_every == 0) {
            double dt = now - log_t, per = dt / (double)(r->step - log_step);
            double tps = (double)bt * (double)(r->step - log_step) / (dt > 0 ? dt : 1e-9) * 1e3;
            double remaining = cap > 0 ? (cap - r->elapsed_ms) : per * (double)(o->sched.iterations - r->step);
            ob_run_log(r, "step:%lld/%d loss:%.4f t:%.0fms step_avg:%.1fms tok/s:%.0f lr:%.3f seq:%d eta:%.0fs", (long long)r->step, o->sched.iterations,
                       loss, r->elapsed_ms, r->elapsed_ms / (double)r->step, tps, lr, seq, remaining > 0 ? remaining / 1e3 : 0.0);
            if (r->jsonl) { /* rank 0's */
                fprintf(r->jsonl, "{\"step\":%lld,\"loss\":%.6f,\"lr\":%.6f,\"seq_len\":%d,\"train_ms\":%.1f,\"tokens_per_s\":%.0f}\n",
                        (long long)r->step, loss, lr, seq, r->elapsed_ms, tps);
                fflush(r->jsonl);
            }
            log_t = now;
            log_step = r->step;
        }
        /* data-parallel: a signal is agreed on at the top of the next step (above), not here */
        int stop = world > 1 ? 0 : r->stop_signal;
        if ((o->checkpoint_every > 0 && r->step % o->checkpoint_every == 0) || stop) {
            double t = ob_now_ms();
            if ((e = ob_checkpoint_save(r))) break;
            t_start += ob_now_ms() - t;
        }
        if (stop) { e = ob_set_error(OB_ERR_INTERRUPTED, "interrupted at step %lld: checkpoint written to %s (continue with --resume)", (long long)r->step, o->checkpoint_dir); break; }
    }
    ob__signal_run = NULL;
    if (!e && o->rope_ntk) e = ob__run_set_rope(r, 1.0f); /* evaluation and the artifact use the plain tables */
    return e;
}

OB_DEF int ob_run_plot(ob_run *r) {
    if (r->rank > 0) return OB_OK; /* rank 0's file */
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.svg", r->opt.out_dir, r->opt.run_id);
    FILE *f = fopen(path, "w");
    if (!f) return ob_set_error(OB_ERR_IO, "%s: cannot write the plot: %s", path, strerror(errno));
    float xmax = 1, ymin = 1e30f, ymax = -1e30f;
    for (int i = 0; i < r->n_hist; i++) { float y = r->hist[2 * i + 1]; if (r->hist[2 * i] > xmax) xmax = r->hist[2 * i]; if (y < ymin) ymin = y; if (y > ymax) ymax = y; }
    for (int i = 0; i < r->n_val_hist; i++) { float y = r->val_hist[2 * i + 1]; if (r->val_hist[2 * i] > xmax) xmax = r->val_hist[2 * i]; if (y < ymin) ymin = y; if (y > ymax) ymax = y; }
    if (ymax <= ymin) { ymin -= 1; ymax += 1; }
    const float W = 800, H = 480, L = 60, B = 40;
#define OB__X(v) (L + (v) / xmax * (W - L - 20))
#define OB__Y(v) (H - B - ((v) - ymin) / (ymax - ymin) * (H - B - 20))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"14\">%s: train loss (blue), validation loss (red)</text>\n", L, r->opt.run_id);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - 20, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"20\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, L, H - B);
    for (int k = 0; k <= 4; k++) {
        float y = ymin + (ymax - ymin) * k / 4, x = xmax * k / 4;
        fprintf(f, "<text x=\"4\" y=\"%.1f\">%.2f</text><text x=\"%.1f\" y=\"%.0f\">%.0f</text>\n", OB__Y(y) + 4, y, OB__X(x) - 10, H - B + 16, x);
    }
    for (int pass = 0; pass < 2; pass++) {
        const float *h = pass ? r->val_hist : r->hist;
        int n = pass ? r->n_val_hist : r->n_hist;
        if (!n) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", pass ? "red" : "steelblue");
        int stride = n > 2000 ? n / 2000 : 1;
        for (int i = 0; i < n; i += stride) fprintf(f, "%.1f,%.1f ", OB__X(h[2 * i]), OB__Y(h[2 * i + 1]));
        fprintf(f, "\"/>\n");
    }
#undef OB__X
#undef OB__Y
    fprintf(f, "</svg>\n");
    fclose(f);
    return OB_OK;
}

OB_DEF void ob_run_free(ob_run *r) {
    if (r->be.destroy) r->be.destroy(&r->be);
    if (r->log) fclose(r->log);
    if (r->jsonl) fclose(r->jsonl);
    ob_data_close(&r->data);
    ob_optimizer_free(&r->optim);
    ob_model_free(&r->model);
    free(r->hist);
    free(r->val_hist);
    memset(r, 0, sizeof *r);
}

/* ---- checkpoints ---- */
#define OB__CKPT_MAGIC "OB1C"
#define OB__CKPT_VERSION 1

OB_DEF int ob_checkpoint_list(const char *dir, char (*paths)[1200], int cap) {
#if defined(__unix__) || defined(__APPLE__)
    DIR *d = opendir(dir);
    if (!d) return 0;
    long long steps[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long st;
        char tail[16];
        if (sscanf(e->d_name, "ckpt_%lld.%15s", &st, tail) != 2 || strcmp(tail, "ob1c") || st < 0) continue;
        if (n < 64) steps[n++] = st;
        else { /* keep the 64 newest */
            int lo = 0;
            for (int i = 1; i < n; i++) if (steps[i] < steps[lo]) lo = i;
            if (st > steps[lo]) steps[lo] = st;
        }
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* newest first */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) { long long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t; }
    if (n > cap) n = cap;
    for (int i = 0; i < n; i++) snprintf(paths[i], sizeof paths[i], "%s/ckpt_%010lld.ob1c", dir, steps[i]);
    return n;
#else
    (void)dir; (void)paths; (void)cap;
    return 0;
#endif
}

OB_DEF int ob_checkpoint_latest(const char *dir, char *path, size_t cap) {
    char paths[1][1200];
    if (ob_checkpoint_list(dir, paths, 1) < 1) return ob_set_error(OB_ERR_IO, "%s: no checkpoint", dir);
    snprintf(path, cap, "%s", paths[0]);
    return OB_OK;
}

OB_DEF int ob_checkpoint_save(ob_run *r) {
    if (r->rank > 0) return OB_OK; /* rank 0 writes; every rank holds the same state (weights, moments, all momentum buffers) */
    int e;
    if (r->be.pull && (e = r->be.pull(&r->be, 1))) return e;
    const ob_model *m = &r->model;
    const ob_optimizer *o = &r->optim;
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr,
                      "preset=%s\nstep=%lld\nelapsed_ms=%.17g\nstream_file=%d\nstream_pos=%zu\nn_params=%zu\nopt_step=%lld\nema=%d\nema_started=%d\n"
                      "ema_steps=%d\nseed=%llu\nmodel_hash=%016llx\n",
                      r->opt.preset, (long long)r->step, r->elapsed_ms, r->data.train.file_idx, r->data.train.pos, m->n_params, (long long)o->step,
                      o->ema != NULL, o->ema_started, o->ema_steps, (unsigned long long)r->opt.seed,
                      (unsigned long long)ob_fnv1a64_ckpt(&m->cfg, sizeof m->cfg));
    size_t n = m->n_params * sizeof(float);
    const void *parts[8];
    size_t sizes[8];
    int np = 0;
    uint8_t fixed[24];
    memcpy(fixed, OB__CKPT_MAGIC, 4);
    uint32_t ver = OB__CKPT_VERSION, hlen = (uint32_t)hl;
    memcpy(fixed + 4, &ver, 4);
    memcpy(fixed + 8, &hlen, 4);
    uint64_t h = ob_fnv1a64_ckpt(hdr, (size_t)hl);
    const float *arrays[5] = {m->params, o->m1, o->m2, o->momentum, o->ema};
    int n_arrays = o->ema ? 5 : 4;
    for (int i = 0; i < n_arrays; i++) h = ob_fnv1a64_ckpt_continue(h, arrays[i], n);
    memcpy(fixed + 12, &h, 8);
    memset(fixed + 20, 0, 4);
    parts[np] = fixed; sizes[np++] = 24;
    parts[np] = hdr; sizes[np++] = (size_t)hl;
    for (int i = 0; i < n_arrays; i++) { parts[np] = arrays[i]; sizes[np++] = n; }
#if defined(__unix__) || defined(__APPLE__)
    mkdir(r->opt.checkpoint_dir, 0755);
#endif
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt_%010lld.ob1c", r->opt.checkpoint_dir, (long long)r->step);
    if ((e = ob__write_file_atomic(path, parts, sizes, np))) return e;
    /* Only once the new one is whole: keep it and the one before it (a fallback should the newest
     * be damaged on disk later), remove the older ones. */
    char old[8][1200];
    int n_old = ob_checkpoint_list(r->opt.checkpoint_dir, old, 8);
    for (int i = 2; i < n_old; i++) remove(old[i]);
    ob_run_log(r, "step:%lld checkpoint %s", (long long)r->step, path);
    return OB_OK;
}

/* The header's "key=value" lines: the value of key, or NULL. Keys match whole lines only. */
static const char *ob__ckpt_field(const char *hdr, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = hdr; *p;) {
        if (!strncmp(p, key, kl) && p[kl] == '=') return p + kl + 1;
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    return NULL;
}
static int ob__ckpt_int(const char *hdr, const char *key, long long lo, long long hi, long long *out) {
    const char *v = ob__ckpt_field(hdr, key);
    if (!v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || (*end != '\n' && *end) || errno || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

OB_DEF int ob_checkpoint_load_bytes(ob_run *r, const uint8_t *b, size_t n, const char *path) {
    ob_model *m = &r->model;
    ob_optimizer *o = &r->optim;
    uint32_t ver = 0, hlen = 0;
    uint64_t h = 0;
    if (n < 24 || memcmp(b, OB__CKPT_MAGIC, 4)) return ob_set_error(OB_ERR_FORMAT, "%s: not a onebit checkpoint", path);
    memcpy(&ver, b + 4, 4);
    memcpy(&hlen, b + 8, 4);
    memcpy(&h, b + 12, 8);
    if (ver != OB__CKPT_VERSION) return ob_set_error(OB_ERR_FORMAT, "%s: checkpoint version %u, this build reads %d", path, ver, OB__CKPT_VERSION);
    if (hlen > n - 24 || hlen > 4096) return ob_set_error(OB_ERR_FORMAT, "%s: truncated checkpoint header", path);
    char hdr[4100];
    memcpy(hdr, b + 24, hlen);
    hdr[hlen] = 0;
    if (strlen(hdr) != hlen) return ob_set_error(OB_ERR_FORMAT, "%s: the checkpoint header holds a NUL byte", path);
    long long step, opt_step, sf, sp, np, ema, ema_started, ema_steps;
    const char *ev = ob__ckpt_field(hdr, "elapsed_ms"), *mv = ob__ckpt_field(hdr, "model_hash");
    char *end = NULL;
    double elapsed = ev ? strtod(ev, &end) : -1.0;
    if (!ob__ckpt_int(hdr, "step", 0, INT64_MAX, &step) || !ob__ckpt_int(hdr, "opt_step", 0, INT64_MAX, &opt_step) ||
        !ob__ckpt_int(hdr, "stream_file", 0, INT32_MAX, &sf) || !ob__ckpt_int(hdr, "stream_pos", 0, INT64_MAX, &sp) ||
        !ob__ckpt_int(hdr, "n_params", 0, INT64_MAX, &np) || !ob__ckpt_int(hdr, "ema", 0, 1, &ema) ||
        !ob__ckpt_int(hdr, "ema_started", 0, 1, &ema_started) || !ob__ckpt_int(hdr, "ema_steps", 0, INT32_MAX, &ema_steps) ||
        !ev || end == ev || !isfinite(elapsed) || elapsed < 0.0 || !mv)
        return ob_set_error(OB_ERR_FORMAT, "%s: the checkpoint header is incomplete or malformed", path);
    unsigned long long mh = strtoull(mv, NULL, 16);
    if ((size_t)np != m->n_params || mh != ob_fnv1a64_ckpt(&m->cfg, sizeof m->cfg))
        return ob_set_error(OB_ERR_FORMAT, "%s: the checkpoint's model (%lld parameters) is not this run's (%zu): different settings", path, np, m->n_params);
    if ((ema != 0) != (o->ema != NULL))
        return ob_set_error(OB_ERR_FORMAT, "%s: the checkpoint %s an EMA, this run %s", path, ema ? "has" : "has no", o->ema ? "keeps one" : "keeps none");
    int n_arrays = ema ? 5 : 4;
    size_t bytes = m->n_params * sizeof(float);
    if (n != 24 + hlen + (size_t)n_arrays * bytes)
        return ob_set_error(OB_ERR_FORMAT, "%s: %zu bytes, expected %zu (truncated?)", path, n, 24 + hlen + (size_t)n_arrays * bytes);
    uint64_t hh = ob_fnv1a64_ckpt(b + 24, hlen);
    for (int i = 0; i < n_arrays; i++) hh = ob_fnv1a64_ckpt_continue(hh, b + 24 + hlen + (size_t)i * bytes, bytes);
    if (hh != h) return ob_set_error(OB_ERR_FORMAT, "%s: checksum mismatch (corrupted)", path);
    /* every check passed: only now does anything of the run change */
    int e = ob_token_stream_seek(&r->data.train, (int)sf, (size_t)sp);
    if (e) return ob_set_error(e, "%s: %s", path, ob_last_error());
    float *dst[5] = {m->params, o->m1, o->m2, o->momentum, o->ema};
    for (int i = 0; i < n_arrays; i++) memcpy(dst[i], b + 24 + hlen + (size_t)i * bytes, bytes);
    r->step = step;
    r->elapsed_ms = elapsed;
    o->step = opt_step;
    o->ema_started = (int)ema_started;
    o->ema_steps = (int)ema_steps;
    m->quantized = 0;
    return r->be.push ? r->be.push(&r->be, 1) : OB_OK;
}

OB_DEF int ob_checkpoint_load(ob_run *r, const char *path) {
    size_t n;
    uint8_t *b = ob__read_file(path, &n);
    if (!b) return OB_ERR_IO;
    int e = ob_checkpoint_load_bytes(r, b, n, path);
    free(b);
    return e;
}

OB_DEF int ob_checkpoint_resume(ob_run *r) {
    char paths[8][1200];
    int n = ob_checkpoint_list(r->opt.checkpoint_dir, paths, 8);
    if (n == 0) { ob_run_log(r, "no checkpoint in %s: starting fresh", r->opt.checkpoint_dir); return OB_OK; }
    for (int i = 0; i < n; i++) {
        int e = ob_checkpoint_load(r, paths[i]);
        if (!e) { ob_run_log(r, "resumed from %s at step %lld (%.0f ms of training)", paths[i], (long long)r->step, r->elapsed_ms); return OB_OK; }
        if (e != OB_ERR_FORMAT && e != OB_ERR_IO) return e;
        ob_run_log(r, "warning: %s", ob_last_error()); /* damaged: try the one before */
    }
    return ob_set_error(OB_ERR_FORMAT, "%s: no usable checkpoint (the newest: %s); remove the folder or drop --resume to start fresh",
                        r->opt.checkpoint_dir, paths[0]);
}

#endif /* ONEBIT_MUON_IMPLEMENTATION */
