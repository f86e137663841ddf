/* Data-parallel runs, the parts that need no GPU: the rank arithmetic for world sizes 1, 2, 3 and 8
 * -- each rank's slice of each global chunk (together exactly the one-rank micro-batches), the
 * micro-batches per rank (accum / world, and the refusal where the seeds' arithmetic breaks), Muon's
 * matrices over ranks (each exactly once, i mod world, in the layout the GPU optimizer uses), the
 * gradient buckets of the overlapped all-reduce, the evaluation split (every window once, the sums of
 * one rank) -- the 1 / (accum x world) gradient scaling on the CPU model, the launcher variables
 * (torchrun, Open MPI, Slurm; bad values), and both id rendezvous (a file, TCP) between processes.
 * NCCL itself and the GPU path are exercised on a device (README, Multi-GPU). */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_muon.h"
#include "test_util.h"
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const int WORLDS[4] = {1, 2, 3, 8};

/* ---- the launcher's variables ---------------------------------------------------------------- */
static const char *ENV_NAMES[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                                  "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT", "ONEBIT_NCCL_PORT",
                                  "ONEBIT_NCCL_ID_FILE", "ONEBIT_NCCL_TIMEOUT"};
static void clear_env(void) {
    for (size_t i = 0; i < sizeof ENV_NAMES / sizeof *ENV_NAMES; i++) unsetenv(ENV_NAMES[i]);
}
/* sets "NAME=value" pairs (NULL-terminated) after clearing the rest */
static void set_env(const char *const *kv) {
    clear_env();
    for (int i = 0; kv[i]; i++) {
        char name[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv[i]), kv[i]);
        setenv(name, eq + 1, 1);
    }
}

static void test_env(void) {
    struct {
        const char *kv[8];
        int ok, rank, world, local, port;
        const char *launcher, *expect; /* expect: the error names it (ok = 0) */
    } cases[] = {
        {{NULL}, 1, 0, 1, -1, 0, "", NULL},
        {{"RANK=1", "WORLD_SIZE=2", "LOCAL_RANK=1", "MASTER_ADDR=node0", "MASTER_PORT=29500", NULL}, 1, 1, 2, 1, 29500, "torchrun", NULL},
        {{"OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=3", "MASTER_ADDR=10.0.0.1", "MASTER_PORT=1234", NULL}, 1, 3, 8, 3,
         1234, "Open MPI", NULL},
        {{"SLURM_PROCID=9", "SLURM_NTASKS=16", "SLURM_LOCALID=1", "ONEBIT_NCCL_ID_FILE=/shared/id", NULL}, 1, 9, 16, 1, 0, "Slurm", NULL},
        /* torchrun's names come first; a plain launcher may leave LOCAL_RANK out */
        {{"RANK=0", "WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=4", "MASTER_ADDR=h", "MASTER_PORT=5", NULL}, 1, 0, 2, -1, 5, "torchrun", NULL},
        /* ONEBIT_NCCL_PORT overrides MASTER_PORT (torchrun's own store holds that one) */
        {{"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=29500", "ONEBIT_NCCL_PORT=29501", NULL}, 1, 1, 2, -1, 29501, "torchrun", NULL},
        /* alone, the rendezvous settings are not read */
        {{"WORLD_SIZE=1", "RANK=0", "MASTER_PORT=junk", NULL}, 1, 0, 1, -1, 0, "torchrun", NULL},
        {{"RANK=x", "WORLD_SIZE=2", NULL}, 0, 0, 0, 0, 0, NULL, "RANK='x'"},
        {{"RANK=2", "WORLD_SIZE=2", NULL}, 0, 0, 0, 0, 0, NULL, "RANK=2 is not below WORLD_SIZE=2"},
        {{"RANK=1", NULL}, 0, 0, 0, 0, 0, NULL, "WORLD_SIZE is not"},
        {{"OMPI_COMM_WORLD_SIZE=2", NULL}, 0, 0, 0, 0, 0, NULL, "OMPI_COMM_WORLD_RANK is not"},
        {{"SLURM_PROCID=0", "SLURM_NTASKS=0", NULL}, 0, 0, 0, 0, 0, NULL, "SLURM_NTASKS=0"},
        {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=-1", NULL}, 0, 0, 0, 0, 0, NULL, "LOCAL_RANK='-1'"},
        {{"RANK=0", "WORLD_SIZE=2", NULL}, 0, 0, 0, 0, 0, NULL, "MASTER_ADDR and MASTER_PORT"},
        {{"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", NULL}, 0, 0, 0, 0, 0, NULL, "MASTER_PORT is not"},
        {{"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=99999", NULL}, 0, 0, 0, 0, 0, NULL, "MASTER_PORT='99999'"},
        {{"RANK=0", "WORLD_SIZE=2", "ONEBIT_NCCL_ID_FILE=/x", "ONEBIT_NCCL_TIMEOUT=soon", NULL}, 0, 0, 0, 0, 0, NULL, "ONEBIT_NCCL_TIMEOUT='soon'"},
    };
    int n = (int)(sizeof cases / sizeof *cases), good = 0;
    char detail[2048] = "";
    for (int i = 0; i < n; i++) {
        set_env(cases[i].kv);
        ob_dist d;
        int e = ob_dist_from_env(&d);
        int ok = cases[i].ok ? (!e && d.rank == cases[i].rank && d.world == cases[i].world && d.local_rank == cases[i].local &&
                                 (cases[i].world == 1 || d.master_port == cases[i].port) && !strcmp(d.launcher, cases[i].launcher))
                             : (e == OB_ERR_ARG && strstr(ob_last_error(), cases[i].expect) != NULL);
        if (ok) good++;
        else snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [case %d: %s]", i, e ? ob_last_error() : "accepted");
    }
    set_env((const char *const[]){"RANK=0", "WORLD_SIZE=2", "ONEBIT_NCCL_ID_FILE=/shared/run7.id", "ONEBIT_NCCL_TIMEOUT=2.5", "MASTER_ADDR=h", NULL});
    ob_dist d;
    int e = ob_dist_from_env(&d);
    int file_first = !e && !strcmp(d.id_file, "/shared/run7.id") && d.timeout_s == 2.5 && !d.master_addr[0];
    clear_env();
    TU_CHECK(good == n && file_first, "dist/env", "%d of %d cases: torchrun, Open MPI and Slurm names in that order, LOCAL_RANK optional, "
             "ONEBIT_NCCL_PORT over MASTER_PORT, the id file over MASTER_ADDR (%s); bad values and half-set families refused naming the variable%s",
             good, n, file_first ? "yes" : "no", detail);
}

/* ---- micro-batches per rank ------------------------------------------------------------------- */
static void test_accum(void) {
    struct { int accum, world, want; } c[] = {{8, 1, 8}, {8, 2, 4}, {8, 3, 0}, {8, 8, 1}, {8, 16, 1}, {8, 5, 0}, {6, 3, 2}, {1, 2, 1}, {4, 6, 0}};
    int n = (int)(sizeof c / sizeof *c), good = 0;
    char detail[1024] = "";
    for (int i = 0; i < n; i++) {
        int a = -1, e = ob_dist_accum(c[i].accum, c[i].world, &a);
        int ok = c[i].want ? (!e && a == c[i].want) : (e == OB_ERR_ARG && strstr(ob_last_error(), "GRAD_ACCUM") != NULL);
        if (ok) good++;
        else snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [%d over %d: %d %s]", c[i].accum, c[i].world, a, e ? ob_last_error() : "");
    }
    /* the run options refuse world 3 of the XNOR recipe before anything starts, naming the reason */
    ob_run_options o;
    ob_run_options_preset(&o, "xnor-10min");
    set_env((const char *const[]){"RANK=1", "WORLD_SIZE=3", "MASTER_ADDR=h", "MASTER_PORT=1", NULL});
    char *argv[] = {(char *)"train", NULL};
    int e3 = ob_run_options_from_args(&o, 1, argv, NULL);
    int refused = e3 == OB_ERR_ARG && strstr(ob_last_error(), "WORLD_SIZE 3") && strstr(ob_last_error(), "GRAD_ACCUM 8");
    char why[600];
    snprintf(why, sizeof why, "%s", ob_last_error());
    set_env((const char *const[]){"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=1", NULL});
    ob_run_options_preset(&o, "xnor-10min");
    int e2 = ob_run_options_from_args(&o, 1, argv, NULL);
    int two = !e2 && o.dist.world == 2 && o.dist.rank == 1;
    clear_env();
    TU_CHECK(good == n && refused && two, "dist/accum", "accum / world for 8 over 1, 2, 8 (8, 4, 1), 1 over 16 as the seeds' max(1, 8 // 16); "
             "8 over 3 and 5 refused (the seeds' 8 // 3 leaves 65536 / 6 tokens, not whole sequences: their reshape fails); "
             "the XNOR preset with WORLD_SIZE=3: \"%s\"; WORLD_SIZE=2 accepted%s", why, detail);
}

/* ---- the data: each rank's slice of each global chunk ---------------------------------------- */
static void test_slices(void) {
    /* the stream's token i is i: a token names its stream position */
    const int T = 16;
    const size_t N = 1 << 16;
    int32_t *tok = (int32_t *)malloc(N * sizeof(int32_t));
    for (size_t i = 0; i < N; i++) tok[i] = (int32_t)i;
    int ok = 1, compared = 0;
    char detail[512] = "";
    for (int wi = 0; wi < 4 && ok; wi++) {
        int W = WORLDS[wi], accum1 = W == 3 ? 6 : 8, A = 0;
        if (ob_dist_accum(accum1, W, &A)) { ok = 0; snprintf(detail, sizeof detail, " world %d: %.400s", W, ob_last_error()); break; }
        const int64_t batch = (int64_t)accum1 * 2 * T; /* two sequences per one-rank micro-batch */
        int64_t local1 = ob_loader_local_tokens(batch, 1, accum1), localW = ob_loader_local_tokens(batch, W, A);
        if (local1 != localW) { ok = 0; break; }
        /* one rank: accum1 micro-batches per step; W ranks: A each, every rank reading the whole stream */
        ob_token_stream one, *ranks = (ob_token_stream *)calloc((size_t)W, sizeof *ranks);
        ob_token_stream_open_memory(&one, tok, N, 0);
        for (int r = 0; r < W; r++) ob_token_stream_open_memory(&ranks[r], tok, N, 0);
        int32_t *x1 = (int32_t *)malloc((size_t)accum1 * local1 * 4), *y1 = (int32_t *)malloc((size_t)accum1 * local1 * 4);
        int32_t *x = (int32_t *)malloc((size_t)local1 * 4), *y = (int32_t *)malloc((size_t)local1 * 4);
        uint8_t *seen = (uint8_t *)calloc(N, 1);
        for (int step = 0; step < 3 && ok; step++) {
            for (int m = 0; m < accum1; m++) ob_loader_next(&one, batch, 1, 0, accum1, x1 + (size_t)m * local1, y1 + (size_t)m * local1);
            memset(seen, 0, N);
            for (int r = 0; r < W && ok; r++)
                for (int a = 0; a < A && ok; a++) {
                    if (ob_loader_next(&ranks[r], batch, W, r, A, x, y)) { ok = 0; break; }
                    /* rank r's micro-batch a is the one-rank micro-batch a W + r, input and target */
                    int m = a * W + r;
                    if (memcmp(x, x1 + (size_t)m * local1, (size_t)local1 * 4) || memcmp(y, y1 + (size_t)m * local1, (size_t)local1 * 4)) {
                        ok = 0;
                        snprintf(detail, sizeof detail, " world %d step %d rank %d micro-batch %d differs", W, step, r, a);
                    }
                    for (int64_t i = 0; i < local1 && ok; i++) {
                        if (y[i] != x[i] + 1) ok = 0; /* targets: the next token */
                        if (seen[x[i]]++) { ok = 0; snprintf(detail, sizeof detail, " world %d: position %d read twice", W, x[i]); }
                    }
                    compared++;
                }
            /* the union of the ranks' inputs is exactly the one-rank step's */
            for (int m = 0; m < accum1 && ok; m++)
                for (int64_t i = 0; i < local1; i++)
                    if (!seen[x1[(size_t)m * local1 + i]]) { ok = 0; snprintf(detail, sizeof detail, " world %d: a one-rank token no rank read", W); break; }
        }
        /* every rank stays at the one-rank stream position */
        for (int r = 0; r < W; r++) if (ranks[r].pos != one.pos) { ok = 0; snprintf(detail, sizeof detail, " world %d: rank %d's stream moved apart", W, r); }
        free(x1); free(y1); free(x); free(y); free(seen); free(ranks);
    }
    free(tok);
    TU_CHECK(ok, "dist/slices", "worlds 1, 2, 3, 8 (accum 8, 8, 6, 8 on one rank; 8, 4, 2, 1 per rank), 3 steps, %d rank micro-batches: rank r's "
             "micro-batch a is the one-rank micro-batch a*world + r, the ranks' tokens are the one-rank step's exactly, disjoint, and every "
             "rank's stream stays at the one-rank position%s", compared, detail);
}

/* ---- Muon's matrices over ranks --------------------------------------------------------------- */
/* a model of the preset's tensor table only (no parameter memory: the XNOR recipe's is 1.4 GB) */
static void table_model(ob_model *m, const ob_config *c) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    ob__table tb;
    memset(&tb, 0, sizeof tb);
    ob__build_table(c, &tb);
    m->n_tensors = tb.n;
    m->tensors = (ob_tensor_info *)calloc((size_t)tb.n, sizeof *m->tensors);
    tb.t = m->tensors;
    ob__build_table(c, &tb);
    m->n_params = tb.total;
}

static void test_muon_plan(void) {
    const char *presets[3] = {"xnor-10min", "binary-50k", "ternary-bitnet"};
    int ok = 1, checked = 0;
    char detail[1024] = "", balance[256] = "";
    for (int pi = 0; pi < 3; pi++) {
        ob_config c;
        ob_config_preset(&c, presets[pi]);
        ob_model m;
        table_model(&m, &c);
        ob_optim_config oc;
        ob_optim_config_default(&oc);
        /* the Muon matrices in table order: the seeds' order, whose index i decides the rank */
        int n_muon = 0, *muon = (int *)calloc((size_t)m.n_tensors, sizeof(int));
        for (int i = 0; i < m.n_tensors; i++)
            if (m.tensors[i].group == OB_GROUP_MUON && m.tensors[i].ndim == 2 && m.tensors[i].has_grad) muon[n_muon++] = i;
        size_t total = 0;
        for (int k = 0; k < n_muon; k++) total += m.tensors[muon[k]].numel;
        for (int wi = 0; wi < 4; wi++) {
            int W = WORLDS[wi];
            ob_muon_plan p;
            if (ob_muon_plan_init(&p, &m, &oc, W)) { ok = 0; snprintf(detail, sizeof detail, " %s", ob_last_error()); break; }
            int *count = (int *)calloc((size_t)m.n_tensors, sizeof(int)), per_rank_min = 1 << 30, per_rank_max = 0;
            if (p.n_mats != n_muon || p.rank_begin[0] != 0 || p.rank_begin[W] != total) ok = 0;
            size_t expect_off = 0;
            for (int mi = 0; mi < p.n_mats; mi++) {
                int t = p.tensor[mi], i = 0;
                count[t]++;
                while (i < n_muon && muon[i] != t) i++;
                /* the seeds' assignment, and the layout: rank-major, contiguous, in order */
                if (i == n_muon || p.owner[mi] != i % W || p.offset[mi] != expect_off || (mi && p.owner[mi] < p.owner[mi - 1])) ok = 0;
                if (p.offset[mi] < p.rank_begin[p.owner[mi]] || p.offset[mi] + m.tensors[t].numel > p.rank_begin[p.owner[mi] + 1]) ok = 0;
                if (m.tensors[t].shape[0] != p.group_rows[p.group[mi]] || m.tensors[t].shape[1] != p.group_cols[p.group[mi]]) ok = 0;
                expect_off += m.tensors[t].numel;
            }
            for (int k = 0; k < n_muon; k++) if (count[muon[k]] != 1) ok = 0; /* every matrix exactly once */
            /* each (rank, shape) is one contiguous run of matrices: one batched Newton-Schulz per group */
            for (int r = 0; r < W; r++) {
                int mats = 0;
                for (int g = 0; g < p.n_groups; g++) {
                    int f = p.sub_first[r * p.n_groups + g], n = p.sub_count[r * p.n_groups + g];
                    for (int j = f; j < f + n; j++) if (p.owner[j] != r || p.group[j] != g) ok = 0;
                    mats += n;
                }
                if (mats < per_rank_min) per_rank_min = mats;
                if (mats > per_rank_max) per_rank_max = mats;
            }
            /* world 1: the one-GPU layout (shape groups by first appearance, table order within) */
            if (W == 1) {
                int mi = 0;
                for (int g = 0; g < p.n_groups; g++)
                    for (int k = 0; k < n_muon; k++)
                        if (m.tensors[muon[k]].shape[0] == p.group_rows[g] && m.tensors[muon[k]].shape[1] == p.group_cols[g] && p.tensor[mi++] != muon[k]) ok = 0;
            }
            if (per_rank_max - per_rank_min > 1) ok = 0; /* i mod world: counts differ by at most one */
            if (pi == 0 && W == 2) {
                int r0 = 0;
                for (int g = 0; g < p.n_groups; g++) r0 += p.sub_count[g];
                snprintf(balance, sizeof balance, "xnor-10min on 2 ranks: %d and %d matrices, %.1fM and %.1fM elements", r0, p.n_mats - r0,
                         p.rank_begin[1] / 1e6, (p.rank_begin[2] - p.rank_begin[1]) / 1e6);
            }
            checked++;
            free(count);
            ob_muon_plan_free(&p);
        }
        free(muon);
        free(m.tensors);
    }
    TU_CHECK(ok, "dist/muon_split", "%d plans (xnor-10min, binary-50k, ternary-bitnet x worlds 1, 2, 3, 8): every Muon matrix exactly once, on rank "
             "i mod world (i: its table index among the matrices), each rank's matrices one contiguous range, each rank's matrices of one shape "
             "contiguous, world 1 the one-GPU layout; %s%s", checked, balance, detail);
}

/* ---- the gradient buckets --------------------------------------------------------------------- */
static void test_buckets(void) {
    const char *presets[3] = {"xnor-10min", "binary-50k", "ternary-bitnet"};
    int ok = 1;
    char detail[512] = "";
    for (int pi = 0; pi < 4; pi++) {
        ob_config c;
        ob_config_preset(&c, pi < 3 ? presets[pi] : "tiny");
        if (pi == 3) { c.attn_res = 1; c.smear = 1; } /* sub-layer AttnRes: some SmearGates have no gradient */
        ob_model m;
        table_model(&m, &c);
        ob_grad_bucket *b = (ob_grad_bucket *)calloc((size_t)m.n_tensors + 1, sizeof *b);
        int n = ob_grad_buckets(&m, b);
        uint8_t *cover = (uint8_t *)calloc(m.n_params, 1);
        int *per_stage = (int *)calloc((size_t)c.num_layers + 1, sizeof(int));
        for (int i = 0; i < n; i++) {
            if (b[i].stage < 0 || b[i].stage > c.num_layers) { ok = 0; continue; }
            per_stage[b[i].stage]++;
            for (size_t k = b[i].offset; k < b[i].offset + b[i].count; k++) cover[k]++;
        }
        for (int t = 0; t < m.n_tensors; t++) {
            const ob_tensor_info *ti = &m.tensors[t];
            int blk = -1, stage = c.num_layers;
            if (sscanf(ti->name, "blocks.%d.", &blk) == 1) stage = blk;
            for (size_t k = ti->offset; k < ti->offset + ti->numel; k++)
                if (cover[k] != (ti->has_grad ? 1 : 0)) { ok = 0; snprintf(detail, sizeof detail, " %s covered %d times", ti->name, cover[k]); break; }
            /* its bucket's stage is its block's */
            for (int i = 0; i < n && ti->has_grad; i++)
                if (ti->offset >= b[i].offset && ti->offset < b[i].offset + b[i].count && b[i].stage != stage) ok = 0;
        }
        /* a block's tensors are contiguous in the buffer: one bucket each, unless a tensor without a
         * gradient sits between them (sub-layer AttnRes' SmearGates) */
        for (int s = 0; s < c.num_layers && pi < 3; s++) if (per_stage[s] != 1) ok = 0;
        free(b); free(cover); free(per_stage); free(m.tensors);
    }
    TU_CHECK(ok, "dist/grad_buckets", "the buckets of the overlapped all-reduce: every element with a gradient exactly once, none without; "
             "block b's tensors in stage b (one contiguous bucket per block for the three seed models), the rest in the last stage%s", detail);
}

/* ---- the gradient: loss / (accum x world), summed over ranks = the one-rank gradient ----------- */
static void test_grad_mean(void) {
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.num_layers = 2; c.model_dim = 64; c.num_heads = 2; c.num_kv_heads = 1; c.embed_dim = 32; c.group_size = 32; c.train_seq_len = 32;
    ob_model m;
    if (ob_model_init(&m, &c)) { tu_report("FAIL", "dist/grad_mean", "%s", ob_last_error()); return; }
    ob_model_init_weights(&m, 7);
    const size_t N = 1 << 15;
    int32_t *tok = (int32_t *)malloc(N * sizeof(int32_t));
    uint64_t s = 12345;
    for (size_t i = 0; i < N; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; tok[i] = (int32_t)((s >> 33) % 256); }
    const int T = 32, accum1 = 24; /* divisible by 1, 2, 3 and 8 */
    const int64_t batch = (int64_t)accum1 * T;
    size_t np = m.n_params;
    float *g1 = (float *)malloc(np * sizeof(float)), *gw = (float *)malloc(np * sizeof(float));
    int32_t *x = (int32_t *)malloc((size_t)batch * 4), *y = (int32_t *)malloc((size_t)batch * 4);
    double worst = 0.0, loss1 = 0.0, worst_loss = 0.0;
    int e = 0;
    for (int wi = 0; wi < 4 && !e; wi++) {
        int W = WORLDS[wi], A = 0;
        e = ob_dist_accum(accum1, W, &A);
        int64_t local = ob_loader_local_tokens(batch, W, A);
        memset(gw, 0, np * sizeof(float));
        double loss = 0.0;
        for (int r = 0; r < W && !e; r++) { /* each rank: its own gradient buffer, then the sum over ranks */
            ob_token_stream st;
            ob_token_stream_open_memory(&st, tok, N, 256);
            ob_model_zero_grad(&m);
            double rank_loss = 0.0;
            for (int a = 0; a < A && !e; a++) {
                e = ob_loader_next(&st, batch, W, r, A, x, y);
                if (!e) e = ob_model_forward(&m, x, y, (int)(local / T), T);
                if (!e) { rank_loss += m.loss; e = ob_model_backward(&m, 1.0f / ((float)A * (float)W)); }
            }
            for (size_t k = 0; k < np; k++) gw[k] += m.grads[k];
            loss += rank_loss; /* the train step's loss: summed over ranks, then / (A W) */
        }
        loss /= (double)A * W;
        if (W == 1) { memcpy(g1, gw, np * sizeof(float)); loss1 = loss; continue; }
        double num = 0.0, den = 0.0;
        for (size_t k = 0; k < np; k++) { double d = (double)gw[k] - g1[k]; num += d * d; den += (double)g1[k] * g1[k]; }
        double rel = sqrt(num / (den > 0 ? den : 1.0));
        if (rel > worst) worst = rel;
        if (fabs(loss - loss1) > worst_loss) worst_loss = fabs(loss - loss1);
    }
    TU_CHECK(!e && worst < 1e-6 && worst_loss < 1e-6 * loss1, "dist/grad_mean", "CPU model, 24 micro-batches of 32 tokens per step: each rank "
             "backpropagating loss / (accum_local x world) over its slice, summed over 2, 3, 8 ranks, gives the one-rank gradient (relative "
             "L2 difference %.1e, float summation order only; bound 1e-6) and loss (difference %.1e)%s%s", worst, worst_loss, e ? ": " : "",
             e ? ob_last_error() : "");
    free(tok); free(g1); free(gw); free(x); free(y);
    ob_model_free(&m);
}

/* ---- the evaluation split --------------------------------------------------------------------- */
/* a scorer whose loss depends on each (input, target) pair, and which records the windows it saw */
typedef struct { int *hits; int T; } score_ctx;
static int pair_scorer(void *ctx, const int32_t *x, const int32_t *y, int B, int T, float temperature, float *ce, float *lse) {
    score_ctx *c = (score_ctx *)ctx;
    (void)temperature;
    for (int b = 0; b < B; b++) {
        if (c->hits) c->hits[x[(size_t)b * T] / c->T]++; /* tokens are positions: the window's index */
        for (int i = 0; i < T; i++) {
            size_t k = (size_t)b * T + i;
            ce[k] = (float)((x[k] * 7 + y[k] * 3) % 101) / 17.0f;
            if (lse) lse[k] = (float)(x[k] % 13) / 5.0f;
        }
    }
    return OB_OK;
}

static void test_eval_split(void) {
    const int T = 64, n_win = 37;
    const size_t N = (size_t)n_win * T + 1;
    int32_t *tok = (int32_t *)malloc(N * sizeof(int32_t));
    for (size_t i = 0; i < N; i++) tok[i] = (int32_t)i;
    ob_bpb_tables tb;
    tb.size = (int)N;
    tb.base_bytes = (int16_t *)malloc(N * sizeof(int16_t));
    tb.has_leading_space = (uint8_t *)malloc(N);
    tb.is_boundary = (uint8_t *)malloc(N);
    for (size_t i = 0; i < N; i++) { tb.base_bytes[i] = (int16_t)(1 + i % 3); tb.has_leading_space[i] = i % 2; tb.is_boundary[i] = i % 5 == 0; }
    ob_val_set v;
    ob_val_open_memory(&v, tok, N, T, 0);
    int ok = 1;
    char detail[512] = "";
    ob_eval_result one, slide1;
    score_ctx sc = {NULL, T};
    int e = ob_eval_val(pair_scorer, &sc, &v, &tb, T, 5, 1.0f, 1, 1e-4f, 0, 1, &one);
    if (!e) e = ob_eval_sliding(pair_scorer, &sc, &v, &tb, T, 16, 7, 1.0f, 0, 0, 1, &slide1);
    for (int wi = 1; wi < 4 && !e; wi++) {
        int W = WORLDS[wi];
        int *hits = (int *)calloc((size_t)n_win + 1, sizeof(int));
        ob_eval_result sum, ssum;
        memset(&sum, 0, sizeof sum);
        memset(&ssum, 0, sizeof ssum);
        for (int r = 0; r < W && !e; r++) {
            ob_eval_result part, spart;
            score_ctx hc = {hits, T};
            e = ob_eval_val(pair_scorer, &hc, &v, &tb, T, 5, 1.0f, 1, 1e-4f, r, W, &part);
            if (!e) e = ob_eval_sliding(pair_scorer, &sc, &v, &tb, T, 16, 7, 1.0f, 0, r, W, &spart);
            /* what the ranks' all-reduce adds up */
            sum.loss_sum += part.loss_sum; sum.targets += part.targets; sum.bytes += part.bytes;
            ssum.loss_sum += spart.loss_sum; ssum.targets += spart.targets; ssum.bytes += spart.bytes;
        }
        ob_eval_finish(&sum);
        ob_eval_finish(&ssum);
        for (int w = 0; w < n_win; w++) if (hits[w] != 1) { ok = 0; snprintf(detail, sizeof detail, " world %d: window %d scored %d times", W, w, hits[w]); }
        if (sum.targets != one.targets || sum.bytes != one.bytes || fabs(sum.loss_sum - one.loss_sum) > 1e-12 * one.loss_sum ||
            fabs(sum.bpb - one.bpb) > 1e-12 * one.bpb)
            ok = 0;
        if (ssum.targets != slide1.targets || ssum.bytes != slide1.bytes || fabs(ssum.loss_sum - slide1.loss_sum) > 1e-12 * slide1.loss_sum) ok = 0;
        free(hits);
    }
    free(tok);
    ob_bpb_tables_free(&tb);
    TU_CHECK(!e && ok, "dist/eval_split", "37 windows of 64 over worlds 2, 3, 8: every window scored exactly once (contiguous ranges per rank); "
             "the ranks' sums of loss, targets and bytes equal one rank's (targets and bytes exactly, the loss to 1e-12: double summation order), "
             "so every rank prints val_bpb %.6f; the sliding evaluation (stride 16, starts round-robin) likewise%s%s", one.bpb, detail,
             e ? ob_last_error() : "");
}

/* ---- the id rendezvous between processes ------------------------------------------------------ */
static void make_id(uint8_t *id, int seed) { for (int i = 0; i < OB_DIST_ID_BYTES; i++) id[i] = (uint8_t)(seed * 31 + i * 7 + 1); }

/* rank r of world W fetching the id in a child process: exits 0 when it got the expected one */
static pid_t spawn_fetch(const ob_dist *base, int rank, int seed) {
    fflush(stdout);
    pid_t p = fork();
    if (p != 0) return p;
    ob_dist d = *base;
    d.rank = rank;
    uint8_t got[OB_DIST_ID_BYTES], want[OB_DIST_ID_BYTES];
    make_id(want, seed);
    memset(got, 0, sizeof got);
    int e = ob_dist_exchange_id(&d, got);
    _exit(!e && !memcmp(got, want, sizeof got) ? 0 : e ? 2 : 3);
}
static int child_status(pid_t p) {
    int st = 0;
    if (waitpid(p, &st, 0) != p) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static void test_id_file(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/onebit_test_dist_%d.id", (int)getpid());
    remove(path);
    ob_dist d;
    memset(&d, 0, sizeof d);
    d.world = 3;
    d.timeout_s = 20.0;
    snprintf(d.id_file, sizeof d.id_file, "%s", path);
    /* ranks 1 and 2 wait for the file; rank 0 publishes it a moment later */
    pid_t c1 = spawn_fetch(&d, 1, 5), c2 = spawn_fetch(&d, 2, 5);
    ob__dist_sleep_ms(300);
    uint8_t id[OB_DIST_ID_BYTES];
    make_id(id, 5);
    int e0 = ob_dist_exchange_id(&d, id); /* rank 0 */
    int s1 = child_status(c1), s2 = child_status(c2);
    int there = tu_path_exists(path);
    ob_dist_id_done(&d); /* rank 0 after every rank joined: no stale file for the next launch */
    int removed = !tu_path_exists(path);
    /* nobody publishes: a clear error naming the file, within the timeout */
    ob_dist late = d;
    late.rank = 1;
    late.timeout_s = 0.3;
    double t0 = ob_now_ms();
    int el = ob_dist_exchange_id(&late, id);
    double waited = ob_now_ms() - t0;
    char why_late[600];
    snprintf(why_late, sizeof why_late, "%s", ob_last_error());
    int late_ok = el == OB_ERR_IO && strstr(why_late, path) && strstr(why_late, "did not appear") && waited < 3000;
    /* a file left by a run of another size is refused, not used */
    ob_dist other = d;
    other.world = 2;
    ob_dist_exchange_id(&other, id); /* rank 0 of 2 writes it */
    int es = ob_dist_exchange_id(&late, id);
    int stale_ok = es == OB_ERR_ARG && strstr(ob_last_error(), "2 ranks");
    remove(path);
    TU_CHECK(!e0 && s1 == 0 && s2 == 0 && there && removed && late_ok && stale_ok, "dist/id_file",
             "ranks 1 and 2 (processes) polled ONEBIT_NCCL_ID_FILE until rank 0 wrote it (temp + rename) and read its id (exit %d, %d); "
             "rank 0 removed it afterwards (%s); no writer: \"%s\" after %.0f ms; a file of a 2-rank run refused (%s)", s1, s2,
             removed ? "yes" : "no", why_late, waited, stale_ok ? "yes" : "no");
}


static void test_id_tcp(void) {
    int port = tu_free_port();
    if (port <= 0) { tu_report("SKIP", "dist/id_tcp", "no loopback TCP socket on this machine"); return; }
    ob_dist d;
    memset(&d, 0, sizeof d);
    d.world = 3;
    d.timeout_s = 20.0;
    snprintf(d.master_addr, sizeof d.master_addr, "127.0.0.1");
    d.master_port = port;
    /* the other ranks start first and retry until rank 0 listens */
    pid_t c1 = spawn_fetch(&d, 1, 9), c2 = spawn_fetch(&d, 2, 9);
    ob__dist_sleep_ms(400);
    uint8_t id[OB_DIST_ID_BYTES];
    make_id(id, 9);
    int e0 = ob_dist_exchange_id(&d, id);
    char why0[600];
    snprintf(why0, sizeof why0, "%s", e0 ? ob_last_error() : "");
    int s1 = child_status(c1), s2 = child_status(c2);
    /* no rank 0: the others give up at the timeout, naming the address */
    ob_dist lone = d;
    lone.rank = 2;
    lone.timeout_s = 0.5;
    lone.master_port = tu_free_port();
    double t0 = ob_now_ms();
    int el = ob_dist_exchange_id(&lone, id);
    double waited = ob_now_ms() - t0;
    char why_lone[600];
    snprintf(why_lone, sizeof why_lone, "%s", ob_last_error());
    int lone_ok = el == OB_ERR_IO && strstr(why_lone, "MASTER_ADDR=127.0.0.1") && waited < 5000;
    /* a rank started for another world size is refused on both sides */
    ob_dist two = d;
    two.world = 2;
    two.master_port = tu_free_port();
    two.timeout_s = 10.0;
    ob_dist wrong = two;
    wrong.world = 4;
    pid_t cw = spawn_fetch(&wrong, 1, 9);
    int ew = ob_dist_exchange_id(&two, id);
    char why_w[600];
    snprintf(why_w, sizeof why_w, "%s", ob_last_error());
    int sw = child_status(cw);
    int wrong_ok = ew == OB_ERR_ARG && strstr(why_w, "rank 1 of 4") && sw == 2;
    TU_CHECK(!e0 && s1 == 0 && s2 == 0 && lone_ok && wrong_ok, "dist/id_tcp", "rank 0 served the id on 127.0.0.1:%d to ranks 1 and 2 (processes "
             "that connected before it listened and retried; exit %d, %d)%s%s; no rank 0: \"%s\" after %.0f ms; a rank of a 4-rank run at a "
             "2-rank rendezvous: \"%s\", and it failed too (%d)", port, s1, s2, e0 ? ": " : "", why0, why_lone, waited, why_w, sw);
}

/* ---- the CPU build refuses a data-parallel run ------------------------------------------------ */
static void test_cpu_refuses(void) {
    ob_run r;
    memset(&r, 0, sizeof r);
    r.rank = 1;
    r.world = 2;
    int e = ob_run_open_backend(&r);
    TU_CHECK(e == OB_ERR_UNSUPPORTED && strstr(ob_last_error(), "rank 1 of 2") && strstr(ob_last_error(), "GPU"), "dist/cpu_build",
             "a data-parallel run in a build without CUDA stops at once: \"%s\"", ob_last_error());
}

int main(void) {
    clear_env(); /* the launcher's variables of whoever runs the tests are not the tests' */
    test_id_file();  /* the process tests first: nothing else has started threads yet */
    test_id_tcp();
    test_env();
    test_accum();
    test_slices();
    test_muon_plan();
    test_buckets();
    test_grad_mean();
    test_eval_split();
    test_cpu_refuses();
    return tu_exit();
}
