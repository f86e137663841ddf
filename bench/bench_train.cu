/* bench_train: the GPU training step of a preset, timed, with where the time goes.
 *
 *   bench_train [--preset xnor-10min] [--steps 20] [--seq 1024] [--profile 1] [--eval N] [--set KEY=VALUE ...]
 *
 * A whole step (ob_backend_cuda's train_step: the loader, accum micro-batches of forward and backward,
 * the optimizer) is timed by the wall clock over --steps steps after 3 warm-up steps (each step ends
 * with the optimizer's gradient-norm read-back, so the clock sees the device's work). Then one
 * micro-batch's forward, backward and one optimizer step are timed apart with CUDA events. Tokens are
 * uniform random ids (speed does not depend on them), or DATA_PATH's shards when set. --profile 1 adds
 * ob_cuda_profile_report's table for one micro-batch's forward and backward and one optimizer step.
 * --eval N times the sliding-window evaluation (ob_eval_sliding: windows of the training length every
 * 64 tokens, 32 windows per call, as examples/eval.cu runs it) over N of the same tokens.
 * ONEBIT_XNOR_GEMM=0 in the environment runs the binarised linears on the bf16 GEMM instead of the
 * XNOR GEMM (the with / without figures of BENCHMARKS.md). */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_cuda.cuh"

static float event_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, a, b);
    return ms;
}

int main(int argc, char **argv) {
    const char *preset = "xnor-10min";
    int steps = 20, seq = 0, profile = 0;
    long long eval_tokens = 0;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--preset")) preset = argv[i + 1];
    ob_run_options o;
    if (ob_run_options_preset(&o, preset)) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 2; }
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) { fprintf(stderr, "bench_train: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--preset")) { i++; continue; }
        if (!strcmp(argv[i], "--steps")) { steps = atoi(argv[++i]); continue; }
        if (!strcmp(argv[i], "--seq")) { seq = atoi(argv[++i]); continue; }
        if (!strcmp(argv[i], "--profile")) { profile = atoi(argv[++i]); continue; }
        if (!strcmp(argv[i], "--eval")) { eval_tokens = atoll(argv[++i]); continue; }
        if (!strcmp(argv[i], "--set")) {
            char kv[256];
            snprintf(kv, sizeof kv, "%s", argv[++i]);
            char *eq = strchr(kv, '=');
            if (!eq) { fprintf(stderr, "bench_train: --set %s: expected KEY=VALUE\n", kv); return 2; }
            *eq = 0;
            if (ob_run_options_set(&o, kv, eq + 1, stderr)) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 2; }
            continue;
        }
        fprintf(stderr, "bench_train: unknown flag %s\n", argv[i]);
        return 2;
    }
    if (steps < 1) { fprintf(stderr, "bench_train: --steps must be positive\n"); return 2; }
    if (eval_tokens < 0 || eval_tokens > (1 << 24)) { fprintf(stderr, "bench_train: --eval must be 0 .. 16,777,216 tokens\n"); return 2; }
    if (seq <= 0) seq = o.model.train_seq_len;
    ob_model m;
    ob_optimizer opt;
    if (ob_model_init(&m, &o.model) || ob_optimizer_init(&opt, &m, &o.optim)) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
    ob_model_init_weights(&m, o.seed);
    /* tokens */
    ob_token_stream ts;
    int32_t *tok = NULL;
    const char *data = getenv("DATA_PATH");
    if (data) {
        if (ob_token_stream_open(&ts, data, "fineweb_train_", o.model.vocab_size)) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
    } else {
        size_t n = (size_t)1 << 24;
        tok = (int32_t *)malloc(n * sizeof(int32_t));
        ob_rng r;
        ob_rng_seed(&r, 1);
        for (size_t i = 0; i < n; i++) tok[i] = (int32_t)(ob_rng_u64(&r) % (uint64_t)o.model.vocab_size);
        ob_token_stream_open_memory(&ts, tok, n, o.model.vocab_size);
    }
    ob_backend be;
    if (ob_backend_cuda(&be, &m, &opt)) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    float loss = 0.0f;
    int e = OB_OK;
    for (int i = 0; i < 3 && !e; i++) e = be.train_step(&be, &ts, o.batch_tokens, seq, o.accum, 1.0f, 0.9f, &loss);
    /* each train_step ends synchronised (the optimizer reads the gradient norm), so one step's wall
     * clock is its time: the median over the steps, as the issue's bar reads */
    double *step_t = (double *)malloc((size_t)steps * sizeof(double)), t_all = ob_now_ms();
    for (int i = 0; i < steps && !e; i++) {
        double t0 = ob_now_ms();
        e = be.train_step(&be, &ts, o.batch_tokens, seq, o.accum, 1.0f, 0.9f, &loss);
        step_t[i] = ob_now_ms() - t0;
    }
    double mean_ms = (ob_now_ms() - t_all) / steps;
    if (e) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
    for (int i = 1; i < steps; i++) /* insertion sort: a few hundred values at most */
        for (int j = i; j > 0 && step_t[j] < step_t[j - 1]; j--) { double t = step_t[j]; step_t[j] = step_t[j - 1]; step_t[j - 1] = t; }
    double step_ms = steps % 2 ? step_t[steps / 2] : 0.5 * (step_t[steps / 2 - 1] + step_t[steps / 2]);
    free(step_t);

    /* the parts, one micro-batch each */
    ob__cuda_backend *cb = (ob__cuda_backend *)be.ctx;
    ob_cuda_model *g = &cb->g;
    /* a micro-batch larger than memory allows runs in pieces (ob__cb_train_step): time one piece */
    int64_t local = ob_loader_local_tokens(o.batch_tokens, 1, o.accum), piece = local < cb->max_tokens ? local : cb->max_tokens;
    int B = (int)(piece / seq), pieces = (int)((local + piece - 1) / piece);
    cudaEvent_t ev[4];
    for (int i = 0; i < 4; i++) cudaEventCreate(&ev[i]);
    float fwd = 0, bwd = 0, optm = 0;
    const int reps = 5;
    for (int r = 0; r < reps && !e; r++) {
        cudaEventRecord(ev[0], g->stream);
        e = ob_cuda_model_forward(g, B, seq, 1);
        cudaEventRecord(ev[1], g->stream);
        if (!e) e = ob_cuda_model_backward(g, 1.0f / o.accum);
        cudaEventRecord(ev[2], g->stream);
        cudaEventSynchronize(ev[2]);
        fwd += event_ms(ev[0], ev[1]);
        bwd += event_ms(ev[1], ev[2]);
        double t = ob_now_ms();
        if (!e) e = ob_cuda_optimizer_step(&cb->o, 0.0f, 0.9f); /* lr 0: the weights stay */
        cudaStreamSynchronize(g->stream);
        optm += (float)(ob_now_ms() - t);
    }
    if (e) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    printf("bench_train preset=%s device=\"%s\" params=%zu seq=%d batch_tokens=%lld accum=%d micro=%dx%d\n", preset, prop.name, m.n_params, seq,
           (long long)o.batch_tokens, o.accum, B, seq);
    /* model FLOPs utilisation: 6 N per token (forward + backward of every parameter's product, attention
     * not counted) against the H100 SXM's 989 TFLOPS of dense bf16 */
    double tflops = 6.0 * (double)m.n_params * (double)o.batch_tokens / (step_ms * 1e-3) / 1e12;
    printf("  step %.1f ms median (mean %.1f) over %d steps: %.0f tokens/s, %.0f TFLOPS by 6N = %.1f%% MFU of 989; loss %.4f\n", step_ms, mean_ms,
           steps, (double)o.batch_tokens / step_ms * 1e3, tflops, 100.0 * tflops / 989.0, loss);
    printf("  one piece of %d x %d tokens: forward %.2f ms, backward %.2f ms; optimizer step %.2f ms; x%d pieces = %.1f ms + optimizer\n",
           B, seq, fwd / reps, bwd / reps, optm / reps, o.accum * pieces, (fwd + bwd) / reps * o.accum * pieces);
    printf("  device memory in use: %.2f GB of %.2f GB (activations %.2f GB); binarised linears on the %s\n", (total_b - free_b) / 1e9,
           total_b / 1e9, g->act_bytes / 1e9, g->xnor_gemm ? "XNOR GEMM (b1 tensor cores)" : "bf16 GEMM");
    if (eval_tokens > 0) {
        /* the sliding-window evaluation over tokens held in memory; bits per byte on a table of one
         * byte per token (the time does not depend on it) */
        if (!tok) { fprintf(stderr, "bench_train: --eval uses the random tokens (unset DATA_PATH)\n"); return 2; }
        int V = o.model.vocab_size;
        ob_val_set vs;
        memset(&vs, 0, sizeof vs);
        vs.n_tokens = (size_t)eval_tokens; vs.vocab_size = V; vs.mem = tok;
        ob_bpb_tables bt;
        bt.size = V;
        bt.base_bytes = (int16_t *)malloc((size_t)V * sizeof(int16_t));
        bt.has_leading_space = (uint8_t *)calloc((size_t)V, 1);
        bt.is_boundary = (uint8_t *)calloc((size_t)V, 1);
        for (int i = 0; i < V; i++) bt.base_bytes[i] = 1;
        ob_eval_result ev;
        /* warm-up: one call's worth of windows (the activations are sized for 32 windows there) */
        ob_val_set warm = vs;
        warm.n_tokens = (size_t)seq + 2 + 64 * 31 < vs.n_tokens ? (size_t)seq + 2 + 64 * 31 : vs.n_tokens;
        e = ob_eval_sliding(be.score, be.ctx, &warm, &bt, seq, 64, 32, 1.0f, 0, 0, 1, &ev);
        if (e) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
        double t0 = ob_now_ms();
        e = ob_eval_sliding(be.score, be.ctx, &vs, &bt, seq, 64, 32, 1.0f, 0, 0, 1, &ev);
        double t_eval = ob_now_ms() - t0;
        if (e) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
        long long windows = (eval_tokens - 1 - seq) / 64 + 1;
        printf("  sliding-window eval (seq %d, stride 64, 32 windows per call): %lld tokens, %lld windows in %.1f ms = %.0f windows/s; val_loss %.4f\n",
               seq, eval_tokens, windows, t_eval, windows / (t_eval * 1e-3), ev.val_loss);
        free(bt.base_bytes); free(bt.has_leading_space); free(bt.is_boundary);
    }
    if (profile) {
        ob_cuda_profile_start(g->stream);
        e = ob_cuda_model_forward(g, B, seq, 1);
        if (!e) e = ob_cuda_model_backward(g, 1.0f / o.accum);
        if (!e) e = ob_cuda_optimizer_step(&cb->o, 0.0f, 0.9f);
        if (e) { fprintf(stderr, "bench_train: %s\n", ob_last_error()); return 1; }
        ob_cuda_profile_report(stdout, 45);
    }
    be.destroy(&be);
    ob_token_stream_close(&ts);
    free(tok);
    ob_optimizer_free(&opt);
    ob_model_free(&m);
    return 0;
}
