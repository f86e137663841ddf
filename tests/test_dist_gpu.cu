/* Data-parallel training on two GPUs over NCCL, end to end (needs 2 GPUs; skips otherwise). The
 * program launches itself: a one-GPU reference run, then two ranks meeting through a TCP rendezvous,
 * then two ranks of which one dies after joining. Each run trains the tiny model on the embedded
 * default (run from the repository root, as make does) with 2 micro-batches per step, so one GPU and
 * two ranks of one micro-batch each see the same tokens.
 *   dist_gpu/ranks_agree     both ranks end with bit-identical weights and optimizer state (the shared
 *                            gradients and Muon updates keep them so) and the same val_loss;
 *   dist_gpu/first_step      the first step's loss equals the one-GPU run's (same weights, same tokens);
 *   dist_gpu/same_learning   after the run: loss and val_loss within 2% of the one-GPU run (the
 *                            reduction order and the batched Newton-Schulz differ, nothing else);
 *   dist_gpu/rank_dies       rank 1 exits after joining: rank 0 ends within ONEBIT_NCCL_TIMEOUT (8 s)
 *                            plus slack, status 1, its message naming the rank and the reason.
 * A rank runs when RANK is set (the launcher sets it, with OB_TEST_DIST_OUT for its result file). */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_cuda.cuh"
#include "test_util.h"
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define STEPS 40

typedef struct {
    int status, n;
    float loss[STEPS];
    double val_loss;
    uint64_t state_hash; /* weights, Adam moments, Muon momentum */
} result;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

static void options(ob_run_options *o, const char *out) {
    ob_run_options_preset(o, "tiny");
    o->accum = 2;
    o->batch_tokens = 4096; /* 2 x 16 sequences of 128 on one GPU; 16 per rank on two */
    o->sched.iterations = STEPS;
    o->sched.max_wallclock_ms = 0.0;
    o->train_log_every = 10;
    o->val_loss_every = 0;
    o->val_max_tokens = 16384;
    o->seq_len_schedule = 0;
    o->device = 1;
    snprintf(o->out_dir, sizeof o->out_dir, "%s", out);
    snprintf(o->checkpoint_dir, sizeof o->checkpoint_dir, "%s/ck", out);
    snprintf(o->run_id, sizeof o->run_id, "dist_gpu");
}

/* one rank (or the one-GPU reference): trains, evaluates, writes its result file */
static int rank_main(const char *out) {
    ob_run_options o;
    options(&o, out);
    result res;
    memset(&res, 0, sizeof res);
    ob_run r;
    memset(&r, 0, sizeof r);
    int e = ob_dist_from_env(&o.dist);
    if (!e) e = ob_run_setup(&r, &o);
    if (!e) e = ob_run_open_backend(&r);
    if (!e && getenv("OB_TEST_DIE") && r.rank == 1) _exit(3); /* joined, then gone without a word */
    if (!e) e = ob_run_train(&r);
    ob_eval_result ev;
    if (!e) e = ob_run_eval(&r, 1.0f, &ev);
    if (!e) e = r.be.pull(&r.be, 1);
    if (!e) {
        res.n = r.n_hist < STEPS ? r.n_hist : STEPS;
        for (int i = 0; i < res.n; i++) res.loss[i] = r.hist[2 * i + 1];
        res.val_loss = ev.val_loss;
        size_t bytes = r.model.n_params * sizeof(float);
        uint64_t h = fnv(0xcbf29ce484222325ull, r.model.params, bytes);
        h = fnv(h, r.optim.m1, bytes);
        h = fnv(h, r.optim.m2, bytes);
        res.state_hash = fnv(h, r.optim.momentum, bytes);
    }
    if (e) fprintf(stderr, "rank %d of %d: %s\n", o.dist.rank, o.dist.world, ob_last_error());
    res.status = e;
    ob_run_free(&r);
    char path[600];
    snprintf(path, sizeof path, "%s/result_w%d_r%d.bin", out, o.dist.world, o.dist.rank);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(&res, sizeof res, 1, f); fclose(f); }
    return e ? 1 : 0;
}

static char g_self[1024], g_out[512];

/* this program again, as rank `rank` of `world`, with extra NAME=value settings; output to a log */
static pid_t spawn(int rank, int world, const char *const *extra) {
    fflush(stdout);
    pid_t p = fork();
    if (p != 0) return p;
    char v[64];
    snprintf(v, sizeof v, "%d", rank); setenv("RANK", v, 1); setenv("LOCAL_RANK", v, 1);
    snprintf(v, sizeof v, "%d", world); setenv("WORLD_SIZE", v, 1);
    setenv("OB_TEST_DIST_OUT", g_out, 1);
    for (int i = 0; extra && extra[i]; i++) {
        char name[64];
        const char *eq = strchr(extra[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        setenv(name, eq + 1, 1);
    }
    char log[700];
    snprintf(log, sizeof log, "%s/log_w%d_r%d%s.txt", g_out, world, rank, getenv("OB_TEST_DIE") ? "_die" : "");
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
    char *argv[] = {g_self, NULL};
    execv(g_self, argv); /* a fresh process: no CUDA state inherited */
    _exit(127);
}
static int wait_status(pid_t p) {
    int st = 0;
    if (waitpid(p, &st, 0) != p) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
static int read_result(int world, int rank, result *res) {
    char path[600];
    snprintf(path, sizeof path, "%s/result_w%d_r%d.bin", g_out, world, rank);
    FILE *f = fopen(path, "rb");
    int ok = f && fread(res, sizeof *res, 1, f) == 1;
    if (f) fclose(f);
    return ok && res->status == 0;
}
static void tail_file(const char *name, char *out, size_t cap) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g_out, name);
    out[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f), from = n > (long)cap - 1 ? n - (long)cap + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t k = fread(out, 1, cap - 1, f);
    out[k] = 0;
    fclose(f);
    for (size_t i = 0; i < k; i++) if (out[i] == '\n') out[i] = ' ';
}

int main(int argc, char **argv) {
    (void)argc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *out = getenv("OB_TEST_DIST_OUT");
    if (getenv("RANK") && out) return rank_main(out);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess) n_dev = 0;
    if (n_dev < 2) {
        tu_report("SKIP", "dist_gpu", "%d GPU(s) visible: the data-parallel test needs 2 (an nvidia-h200-x2)", n_dev);
        return 0;
    }
    if (readlink("/proc/self/exe", g_self, sizeof g_self - 1) < 0) snprintf(g_self, sizeof g_self, "%s", argv[0]);
    snprintf(g_out, sizeof g_out, "/tmp/onebit_test_dist_gpu_%d", (int)getpid());
    mkdir(g_out, 0755);
    printf("logs: %s\n", g_out);

    /* 1. the one-GPU reference (WORLD_SIZE 1: NCCL is never loaded) */
    int s_ref = wait_status(spawn(0, 1, NULL));
    result ref;
    if (s_ref != 0 || !read_result(1, 0, &ref)) {
        char t[600];
        tail_file("log_w1_r0.txt", t, sizeof t);
        tu_report("FAIL", "dist_gpu/reference", "the one-GPU run failed (status %d): %s", s_ref, t);
        return tu_exit();
    }
    /* 2. two ranks, TCP rendezvous */
    char port[32];
    snprintf(port, sizeof port, "MASTER_PORT=%d", tu_free_port());
    const char *tcp[] = {"MASTER_ADDR=127.0.0.1", port, "ONEBIT_NCCL_TIMEOUT=120", NULL};
    double t0 = ob_now_ms();
    pid_t p0 = spawn(0, 2, tcp), p1 = spawn(1, 2, tcp);
    int s0 = wait_status(p0), s1 = wait_status(p1);
    double took = (ob_now_ms() - t0) / 1e3;
    result r0, r1;
    int ok0 = s0 == 0 && read_result(2, 0, &r0), ok1 = s1 == 0 && read_result(2, 1, &r1);
    if (!ok0 || !ok1) {
        char t0s[700], t1s[700];
        tail_file("log_w2_r0.txt", t0s, sizeof t0s);
        tail_file("log_w2_r1.txt", t1s, sizeof t1s);
        tu_report("FAIL", "dist_gpu/run", "two ranks: status %d, %d; rank 0: %s | rank 1: %s", s0, s1, t0s, t1s);
    } else {
        tu_report("PASS", "dist_gpu/run", "two ranks over a TCP rendezvous trained %d steps and evaluated in %.1f s", STEPS, took);
        TU_CHECK(r0.state_hash == r1.state_hash && !memcmp(&r0.val_loss, &r1.val_loss, sizeof(double)) && r0.n == r1.n &&
                     !memcmp(r0.loss, r1.loss, sizeof r0.loss),
                 "dist_gpu/ranks_agree", "weights + Adam moments + Muon momentum: hash %016llx on rank 0, %016llx on rank 1; val_loss %.6f / %.6f; "
                 "the logged losses bit-identical", (unsigned long long)r0.state_hash, (unsigned long long)r1.state_hash, r0.val_loss, r1.val_loss);
        double d1 = fabs((double)r0.loss[0] - ref.loss[0]);
        TU_CHECK(r0.n == STEPS && ref.n == STEPS && d1 <= 1e-5 * fabs(ref.loss[0]), "dist_gpu/first_step",
                 "step 1 loss: two ranks %.7f, one GPU %.7f (the same weights and tokens; bound 1e-5 relative)", r0.loss[0], ref.loss[0]);
        double worst = 0.0;
        for (int i = 0; i < STEPS && i < r0.n && i < ref.n; i++) worst = fmax(worst, fabs((double)r0.loss[i] - ref.loss[i]) / fabs(ref.loss[i]));
        double dl = fabs((double)r0.loss[STEPS - 1] - ref.loss[STEPS - 1]) / ref.loss[STEPS - 1], dv = fabs(r0.val_loss - ref.val_loss) / ref.val_loss;
        TU_CHECK(dl <= 0.02 && dv <= 0.02, "dist_gpu/same_learning", "after %d steps: loss two ranks %.4f, one GPU %.4f; val_loss %.4f / %.4f "
                 "(bound 2%%; the largest step difference %.2e relative)", STEPS, r0.loss[STEPS - 1], ref.loss[STEPS - 1], r0.val_loss, ref.val_loss, worst);
    }
    /* 3. rank 1 dies after joining: rank 0 must not hang (id file rendezvous this time) */
    char idf[700];
    snprintf(idf, sizeof idf, "ONEBIT_NCCL_ID_FILE=%s/nccl.id", g_out);
    const char *die[] = {idf, "ONEBIT_NCCL_TIMEOUT=8", "OB_TEST_DIE=1", NULL};
    t0 = ob_now_ms();
    setenv("OB_TEST_DIE", "1", 1); /* names the logs */
    pid_t q0 = spawn(0, 2, die), q1 = spawn(1, 2, die);
    unsetenv("OB_TEST_DIE");
    int d0 = wait_status(q0), d1s = wait_status(q1);
    double waited = (ob_now_ms() - t0) / 1e3;
    char msg[800];
    tail_file("log_w2_r0_die.txt", msg, sizeof msg);
    TU_CHECK(d1s == 3 && d0 == 1 && strstr(msg, "rank 0 of 2") && waited < 8 + 60, "dist_gpu/rank_dies",
             "rank 1 left after joining (status %d); rank 0 ended with status %d after %.1f s (ONEBIT_NCCL_TIMEOUT 8): %s", d1s, d0, waited, msg);
    return tu_exit();
}
