/* eval: an artifact and its data -> the seeds' evaluation lines: val_bpb on the validation set, the
 * temperature found on training tokens (never validation), and the sliding-window bpb. With no data
 * given it evaluates on the embedded default's held-out text (the artifacts make run writes).
 *
 *   cc -std=c99 -D_DEFAULT_SOURCE -O2 -march=native -fopenmp -x c examples/eval.cu -o build/eval \
 *        -lm -lbrotlienc -lbrotlidec -llzma                                    (CPU)
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a examples/eval.cu -o build/eval_gpu \
 *        -lcublas -lbrotlienc -lbrotlidec -llzma                               (GPU)
 *   build/eval logs/onebit_embedded.ob1
 *   build/eval run.ob1 --data ../shared/data/gcide_sp1024 --tokenizer ../shared/data/fineweb_1024_bpe.model --stride 16
 */
#define ONEBIT_IMPLEMENTATION
#ifdef __CUDACC__
#include "../onebit_cuda.cuh"
#endif
#include "../onebit_muon.h"
#include "../onebit_pack.h"

static int usage(const char *why, const char *what) {
    fprintf(stderr, "eval: %s %s\nusage: eval ARTIFACT [--data DIR] [--tokenizer FILE] [--val-max-tokens N] [--stride S (0: no sliding)]\n"
                    "            [--temperature T | search] [--batch N] [--cpu | --gpu]\n", why, what);
    return 2;
}

int main(int argc, char **argv) {
    const char *data = "", *tokenizer = "", *temp_arg = "search";
    long long val_max = 0, stride = 64, batch = 32;
    int device = -1;
    if (argc < 2 || argv[1][0] == '-') return usage("the first argument is the artifact, not", argc < 2 ? "nothing" : argv[1]);
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = (char *)"";
        if (!strcmp(f, "--cpu")) { device = 0; continue; }
        if (!strcmp(f, "--gpu")) { device = 1; continue; }
        if (!v) return usage("a value is missing after", f);
        i++;
        if (!strcmp(f, "--data")) data = v;
        else if (!strcmp(f, "--tokenizer")) tokenizer = v;
        else if (!strcmp(f, "--temperature")) temp_arg = v;
        else if (!strcmp(f, "--val-max-tokens")) val_max = strtoll(v, &end, 10);
        else if (!strcmp(f, "--stride")) stride = strtoll(v, &end, 10);
        else if (!strcmp(f, "--batch")) batch = strtoll(v, &end, 10);
        else return usage("unknown flag", f);
        if (*end || val_max < 0 || stride < 0 || batch < 1 || batch > 65536) return usage("bad value for", f);
    }
    ob_model m;
    ob_data d;
    ob_backend be;
    memset(&be, 0, sizeof be);
    uint64_t tok_hash;
    if (ob_artifact_load(&m, argv[1], &tok_hash)) { fprintf(stderr, "eval: %s\n", ob_last_error()); return 1; }
    int T = m.cfg.train_seq_len, r = ob_data_open(&d, data, tokenizer, m.cfg.vocab_size, T, val_max);
    if (!r && tok_hash != d.tok.hash)
        r = ob_set_error(OB_ERR_FORMAT, "%s was written for another tokenizer than %s (give the one it was trained with)", argv[1],
                         tokenizer[0] ? tokenizer : "bytes");
    if (!r) r = ob_backend_open(&be, &m, NULL, device);
    ob_eval_result ev;
    float temp = 1.0f;
    if (!r) r = ob_eval_val(be.score, be.ctx, &d.val, &d.bpb, T, (int)batch, 1.0f, 1, m.cfg.z_loss, 0, 1, &ev);
    if (!r) printf("%s on %s: %zu validation tokens\nval_loss:%.4f val_bpb:%.4f\n", argv[1], be.name, d.val.n_tokens, ev.val_loss, ev.bpb);
    if (!r && !strcmp(temp_arg, "search")) {
        size_t nc = data[0] ? 65536 : 8192;
        int32_t *calib = (int32_t *)malloc(nc * sizeof(int32_t));
        r = ob_token_stream_take(&d.train, calib, nc);
        if (!r) r = ob_find_temperature(be.score, be.ctx, calib, nc, &d.bpb, T, (int)batch, m.cfg.z_loss, &temp);
        if (!r) printf("temp_scaling optimal_T:%.2f (on %zu training tokens)\n", temp, nc);
        free(calib);
    } else if (!r) {
        char *end;
        temp = strtof(temp_arg, &end);
        if (*end || !(temp > 0.0f && temp < 100.0f)) r = ob_set_error(OB_ERR_ARG, "--temperature %s: not a number in (0, 100) or 'search'", temp_arg);
    }
    if (!r && stride > 0) {
        r = ob_eval_sliding(be.score, be.ctx, &d.val, &d.bpb, T, (int)stride, (int)batch, temp, 0, 0, 1, &ev);
        if (!r) printf("final_sliding val_loss:%.4f val_bpb:%.4f (stride=%lld, T=%.2f)\n", ev.val_loss, ev.bpb, stride, temp);
    }
    if (r) fprintf(stderr, "eval: %s\n", ob_last_error());
    if (be.destroy) be.destroy(&be);
    ob_data_close(&d);
    ob_model_free(&m);
    return r ? 1 : 0;
}
