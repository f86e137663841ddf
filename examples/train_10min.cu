/* train_10min: the XNOR-Net seed's 10-minute recipe end to end -- 600 s of training with the
 * sequence-length ladder 128 -> 1024 and the cosine schedule, then the artifact, its roundtrip
 * evaluation, the temperature search and the sliding-window evaluation, printing the seed's final
 * lines. With no data given it trains the embedded default (this repository's text) for a minute.
 *
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a examples/train_10min.cu -o build/train_10min_gpu \
 *        -lcublas -lbrotlienc -lbrotlidec -llzma                        (GPU; --cpu still trains on the CPU)
 *   cc -std=c99 -D_DEFAULT_SOURCE -O2 -march=native -fopenmp -x c examples/train_10min.cu \
 *        -o build/train_10min -lm -lbrotlienc -lbrotlidec -llzma     (CPU)
 *   DATA_PATH=../shared/data/gcide_sp1024 TOKENIZER_PATH=../shared/data/fineweb_1024_bpe.model \
 *        MAX_WALLCLOCK_SECONDS=150 build/train_10min
 * Several GPUs: one process each, started with RANK / WORLD_SIZE / LOCAL_RANK and MASTER_ADDR /
 * MASTER_PORT (or mpirun, srun): README, Multi-GPU.
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
    /* the preset, unless the first flag names another; no data anywhere means the embedded default */
    int given = argc > 2 && !strcmp(argv[1], "--preset");
    int have_data = getenv("DATA_PATH") != NULL;
    for (int i = 1; i < argc; i++) have_data |= !strcmp(argv[i], "--data");
    if (!given) ob_run_options_preset(&opt, have_data ? "xnor-10min" : "embedded");
    if (ob_run_options_from_args(&opt, argc, argv, stderr) != OB_OK) {
        fprintf(stderr, "train_10min: %s\n", ob_last_error());
        ob_run_options_usage(stderr, argv[0]);
        return 2;
    }
    char who[64] = "train_10min"; /* a data-parallel run's errors say which rank */
    if (opt.dist.world > 1) snprintf(who, sizeof who, "train_10min (rank %d of %d)", opt.dist.rank, opt.dist.world);
    if (ob_run_setup(&run, &opt) != OB_OK) { fprintf(stderr, "%s: %s\n", who, ob_last_error()); return 1; }
    /* the code counted in the artifact's 16 MB: the headers this program is built from, and itself */
    static const char *code[] = {"onebit.h", "onebit_muon.h", "onebit_pack.h", "examples/train_10min.cu", "onebit_cuda.cuh"};
    int r = ob_run_open_backend(&run); /* one GPU, or this rank's of a data-parallel run */
    if (!r) r = ob_run_train(&run);
    if (!r) r = ob_run_finish(&run, code, strcmp(run.be.name, "cpu") ? 5 : 4);
    if (r) fprintf(stderr, "%s: %s\n", who, ob_last_error());
    ob_run_free(&run);
    return r == OB_ERR_INTERRUPTED ? 130 : r ? 1 : 0; /* 130: stopped by a signal, checkpoint written */
}
