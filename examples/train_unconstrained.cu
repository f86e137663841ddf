/* train_unconstrained: the long runs with no wall-clock cap -- the XNOR seed's 100k-step recipe
 * (default) or, by preset, the binary seed's 50k-step one (15 layers, d 768, vocab 8192, SmearGate,
 * linear warmdown, momentum warm-up 0.85 -> 0.95) -- checkpointing every few thousand steps; after
 * an interruption (a crash, SIGINT, SIGTERM) the same command with --resume continues bit-identically
 * from the newest checkpoint. Then the artifact, its roundtrip, temperature and sliding evaluations.
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a examples/train_unconstrained.cu \
 *        -o build/train_unconstrained_gpu -lcublas -lbrotlienc -lbrotlidec -llzma
 *   cc -std=c99 -D_DEFAULT_SOURCE -O2 -march=native -fopenmp -x c examples/train_unconstrained.cu \
 *        -o build/train_unconstrained -lm -lbrotlienc -lbrotlidec -llzma     (CPU: only for small models)
 *   build/train_unconstrained_gpu --preset binary-50k --data ../shared/data/gcide_sp8192 \
 *        --tokenizer ../shared/data/fineweb_8192_bpe.model --checkpoint-every 2000
 *   build/train_unconstrained_gpu --preset binary-50k ... --resume      (after an interruption)
 * Several GPUs: one process each (README, Multi-GPU); rank 0 writes the checkpoints and, on --resume,
 * reads them and sends its state to the others.
 */
#define ONEBIT_IMPLEMENTATION
#ifdef __CUDACC__
#include "../onebit_cuda.cuh"
#endif
#include "../onebit_muon.h"
#include "../onebit_pack.h"

int main(int argc, char **argv) {
    ob_run_options opt;
    ob_run run;
    if (!(argc > 2 && !strcmp(argv[1], "--preset"))) ob_run_options_preset(&opt, "xnor-100k");
    if (ob_run_options_from_args(&opt, argc, argv, stderr) != OB_OK) {
        fprintf(stderr, "train_unconstrained: %s\n", ob_last_error());
        ob_run_options_usage(stderr, argv[0]);
        return 2;
    }
    if (!opt.data_path[0] && opt.model.vocab_size != 256) {
        fprintf(stderr, "train_unconstrained: the %s preset needs data: --data DIR (or DATA_PATH)\n", opt.preset);
        return 2;
    }
    if (opt.checkpoint_every <= 0) opt.checkpoint_every = 1000; /* a long run always checkpoints */
    /* a run resumed after its last step trains nothing and goes straight to the artifact */
    char who[64] = "train_unconstrained"; /* a data-parallel run's errors say which rank */
    if (opt.dist.world > 1) snprintf(who, sizeof who, "train_unconstrained (rank %d of %d)", opt.dist.rank, opt.dist.world);
    if (ob_run_setup(&run, &opt) != OB_OK) { fprintf(stderr, "%s: %s\n", who, ob_last_error()); return 1; }
    static const char *code[] = {"onebit.h", "onebit_muon.h", "onebit_pack.h", "examples/train_unconstrained.cu", "onebit_cuda.cuh"};
    int r = ob_run_open_backend(&run); /* one GPU, or this rank's of a data-parallel run */
    if (!r) r = ob_run_train(&run);
    if (!r) r = ob_checkpoint_save(&run); /* the last step, so the trained state outlives the artifact */
    if (!r) r = ob_run_finish(&run, code, strcmp(run.be.name, "cpu") ? 5 : 4);
    if (r) fprintf(stderr, "%s: %s\n", who, ob_last_error());
    ob_run_free(&run);
    return r == OB_ERR_INTERRUPTED ? 130 : r ? 1 : 0;
}
