/* generate: an artifact, its tokenizer and a prompt -> sampled text (temperature, top-k, seed), on
 * the GPU (the trainer's forward, XNOR kernels included) when built with nvcc and a GPU is present,
 * else on the CPU reference path. With no tokenizer the artifact must be a bytes-as-tokens model
 * (the embedded default's, which make run writes).
 *
 *   cc -std=c99 -D_DEFAULT_SOURCE -O2 -march=native -fopenmp -x c examples/generate.cu -o build/generate \
 *        -lm -lbrotlienc -lbrotlidec -llzma                                    (CPU)
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a examples/generate.cu -o build/generate_gpu \
 *        -lcublas -lbrotlienc -lbrotlidec -llzma                               (GPU)
 *   build/generate logs/onebit_embedded.ob1 --prompt "The model" --tokens 200
 *   build/generate run.ob1 --tokenizer ../shared/data/fineweb_1024_bpe.model --prompt "Once upon a time" --temperature 0.8
 */
#define ONEBIT_IMPLEMENTATION
#ifdef __CUDACC__
#include "../onebit_cuda.cuh"
#endif
#include "../onebit_muon.h"
#include "../onebit_pack.h"

static int usage(const char *why, const char *what) {
    fprintf(stderr, "generate: %s %s\nusage: generate ARTIFACT [--tokenizer FILE] [--prompt TEXT] [--tokens N] [--temperature T]\n"
                    "                [--top-k K (0: all)] [--seed N] [--cpu | --gpu]\n", why, what);
    return 2;
}

int main(int argc, char **argv) {
    const char *tokenizer = "", *prompt = "The ";
    long long n_new = 200, top_k = 40, seed = 1;
    float temperature = 0.8f;
    int device = -1;
    if (argc < 2 || argv[1][0] == '-') return usage("the first argument is the artifact, not", argc < 2 ? "nothing" : argv[1]);
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = (char *)"";
        if (!strcmp(f, "--cpu")) { device = 0; continue; }
        if (!strcmp(f, "--gpu")) { device = 1; continue; }
        if (!v) return usage("a value is missing after", f);
        i++;
        if (!strcmp(f, "--tokenizer")) tokenizer = v;
        else if (!strcmp(f, "--prompt")) prompt = v;
        else if (!strcmp(f, "--tokens")) n_new = strtoll(v, &end, 10);
        else if (!strcmp(f, "--top-k")) top_k = strtoll(v, &end, 10);
        else if (!strcmp(f, "--seed")) seed = strtoll(v, &end, 10);
        else if (!strcmp(f, "--temperature")) temperature = strtof(v, &end);
        else return usage("unknown flag", f);
        if (*end || n_new < 1 || n_new > 1000000 || top_k < 0 || top_k > 1000000 || !(temperature >= 0.0f && temperature < 100.0f)) return usage("bad value for", f);
    }
    ob_model m;
    ob_tokenizer tok;
    ob_backend be;
    memset(&be, 0, sizeof be);
    uint64_t tok_hash;
    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0;
    char *text = NULL;
    if (ob_artifact_load(&m, argv[1], &tok_hash)) { fprintf(stderr, "generate: %s\n", ob_last_error()); return 1; }
    int r = tokenizer[0] ? ob_tokenizer_load(&tok, tokenizer) : (ob_tokenizer_init_bytes(&tok), OB_OK);
    if (!r && tok_hash != tok.hash)
        r = ob_set_error(OB_ERR_FORMAT, "%s was written for another tokenizer than %s (give the one it was trained with)", argv[1],
                         tokenizer[0] ? tokenizer : "bytes");
    if (!r) r = ob_tokenizer_encode(&tok, prompt, strlen(prompt), &ids, &n_ids);
    if (!r && n_ids == 0) r = ob_set_error(OB_ERR_ARG, "--prompt: the prompt encodes to no tokens");
    if (!r) out = (int32_t *)malloc((n_ids + (size_t)n_new) * sizeof(int32_t));
    if (!r) r = ob_backend_open(&be, &m, NULL, device);
    if (!r) r = ob_generate(be.next_logits, be.ctx, m.cfg.vocab_size, m.cfg.train_seq_len, ids, (int)n_ids, (int)n_new,
                            temperature, (int)top_k, (uint64_t)seed, out);
    if (!r) r = ob_tokenizer_decode(&tok, out, n_ids + (size_t)n_new, &text, NULL);
    if (!r) printf("%s\n", text);
    if (r) fprintf(stderr, "generate: %s\n", ob_last_error());
    if (be.destroy) be.destroy(&be);
    free(text); free(out); free(ids);
    ob_tokenizer_free(&tok);
    ob_model_free(&m);
    return r ? 1 : 0;
}
