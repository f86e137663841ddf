# onebit: every target is one compiler line over the headers; nothing is configured or installed.
#   make test        CPU tests (what CI runs); the last line reads "N passed, N failed, N skipped".
#                    With nvcc present the GPU tests are built too (they skip without a GPU) and the
#                    other GPU programs compiled as a check (JOBS=n builds at a time; default: the cores).
#   make run         the main job: trains on the embedded default (this repository's own text)
#   make test-gpu    the GPU path against the CPU reference, and data-parallel training on 2 GPUs (needs a GPU; 2 for the latter)
#   make bench       attention, the XNOR GEMM and the training step of the seed presets, timed (needs a GPU)
#   make gpu         the GPU builds: build/{train_10min,train_unconstrained,eval,generate}_gpu, build/test_{gpu,attention,xnor_gemm,dist_gpu}, build/bench_{train,attention,xnor_gemm}
#   make test-asan   the CPU tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz        libFuzzer targets (clang), each run for FUZZ_RUNS inputs
#   make clean
# Options: CC=..., NO_OMP=1 (no OpenMP), ONEBIT_SHARED=path (default ../shared, read by the tests).

CC ?= cc
CLANG ?= clang
NVCC ?= nvcc
BUILD := build
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= tokenizer artifact shard safetensors checkpoint

# C99 plus POSIX (mmap, fsync, readdir); warnings are errors in every build of the project.
CFLAGS_BASE := -std=c99 -D_DEFAULT_SOURCE -Wall -Wextra -Werror
OPT ?= -O2 -march=native
LDLIBS := -lm -lbrotlienc -lbrotlidec -llzma

# CUDA: Hopper's own instructions (sm_90a) plus PTX for other GPUs; cuBLAS for the GEMMs. NCCL is not
# linked: a data-parallel run opens libnccl.so.2 at run time (dlopen: -ldl; its watchdog thread: -lpthread).
NVCC_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
NVCCFLAGS := -O3 -std=c++17 $(NVCC_ARCH) -Xcompiler -fopenmp,-Wall,-Wextra,-Werror
CUDA_LIBS := -lcublas $(LDLIBS) -ldl -lpthread
HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1)
CUDA_HEADERS := onebit_cuda.cuh onebit.h onebit_muon.h onebit_pack.h

# OpenMP when the compiler has it (a test compile of an empty program decides), unless NO_OMP=1.
ifeq ($(NO_OMP),)
  HAVE_OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_OMP),1)
  OMPFLAGS := -fopenmp
endif
CFLAGS := $(CFLAGS_BASE) $(OPT) $(OMPFLAGS)

HEADERS := onebit.h onebit_muon.h onebit_pack.h
TESTS := $(BUILD)/test_numerics $(BUILD)/test_model $(BUILD)/test_fixtures $(BUILD)/test_muon $(BUILD)/test_pack $(BUILD)/test_tokenizer $(BUILD)/test_data $(BUILD)/test_run $(BUILD)/test_dist
TEST_DEPS := $(HEADERS) tests/test_util.h tests/test_ties.h

.PHONY: all test run test-asan fuzz clean check-tools gpu test-gpu bench
ifeq ($(HAVE_NVCC),1)
  GPU_TESTS := $(BUILD)/test_gpu $(BUILD)/test_attention $(BUILD)/test_xnor_gemm $(BUILD)/test_dist_gpu
  GPU_BUILDS := $(BUILD)/train_10min_gpu $(BUILD)/train_unconstrained_gpu $(BUILD)/eval_gpu $(BUILD)/generate_gpu $(BUILD)/bench_train $(BUILD)/bench_attention $(BUILD)/bench_xnor_gemm
endif

# the main job: the 10-minute trainer with no data trains the embedded default (this repository's
# text, bytes as tokens) for about a minute, then evaluates, packs, reloads and samples
$(BUILD)/train_10min: examples/train_10min.cu $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -x c $< -o $@ $(LDLIBS)
$(BUILD)/prepare_data: examples/prepare_data.c onebit.h | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)
$(BUILD)/train_unconstrained $(BUILD)/eval $(BUILD)/generate: $(BUILD)/%: examples/%.cu $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) -x c $< -o $@ $(LDLIBS)
EXAMPLES := $(BUILD)/train_10min $(BUILD)/train_unconstrained $(BUILD)/eval $(BUILD)/generate $(BUILD)/prepare_data
run: $(BUILD)/train_10min
	./$(BUILD)/train_10min

all: $(TESTS) $(EXAMPLES)

$(BUILD):
	@mkdir -p $(BUILD)

# one program per test file, each including the headers it tests with the implementation defined
$(BUILD)/test_%: tests/test_%.c $(TEST_DEPS) | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

# With nvcc, make test builds the GPU tests (they skip without a GPU) and compiles the other GPU
# programs as a check only (host code + PTX, no ptxas: a CUDA build break fails the tests in half the
# time of a full build; make gpu builds them), JOBS at a time (default: the cores).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GPU_CHECKS := $(patsubst $(BUILD)/%,$(BUILD)/check/%.o,$(GPU_BUILDS))
test: check-tools $(TESTS) $(EXAMPLES)
ifeq ($(HAVE_NVCC),1)
	@$(MAKE) --no-print-directory -j$(JOBS) $(GPU_TESTS) $(GPU_CHECKS)
endif
	@ONEBIT_SHARED=$${ONEBIT_SHARED:-../shared} sh tests/run.sh $(TESTS) tests/test_examples.sh $(GPU_TESTS)
$(BUILD)/check/%_gpu.o: examples/%.cu $(CUDA_HEADERS)
	@mkdir -p $(BUILD)/check
	$(NVCC) -O3 -std=c++17 -gencode=arch=compute_90,code=compute_90 -Xcompiler -fopenmp,-Wall,-Wextra,-Werror -c $< -o $@
$(BUILD)/check/bench_%.o: bench/bench_%.cu $(CUDA_HEADERS)
	@mkdir -p $(BUILD)/check
	$(NVCC) -O3 -std=c++17 -gencode=arch=compute_90,code=compute_90 -Xcompiler -fopenmp,-Wall,-Wextra,-Werror -c $< -o $@

# GPU programs: one nvcc line each
$(BUILD)/test_gpu: tests/test_gpu.cu $(CUDA_HEADERS) tests/test_util.h | $(BUILD)
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LIBS)
$(BUILD)/test_attention $(BUILD)/test_xnor_gemm: $(BUILD)/%: tests/%.cu $(CUDA_HEADERS) | $(BUILD)
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LIBS)
# data-parallel training on 2 GPUs (it launches itself as the ranks; skips with fewer GPUs)
$(BUILD)/test_dist_gpu: tests/test_dist_gpu.cu $(CUDA_HEADERS) tests/test_util.h | $(BUILD)
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LIBS)
$(BUILD)/bench_train $(BUILD)/bench_attention $(BUILD)/bench_xnor_gemm: $(BUILD)/%: bench/%.cu $(CUDA_HEADERS) | $(BUILD)
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LIBS)
$(BUILD)/train_10min_gpu $(BUILD)/train_unconstrained_gpu $(BUILD)/eval_gpu $(BUILD)/generate_gpu: $(BUILD)/%_gpu: examples/%.cu $(CUDA_HEADERS) | $(BUILD)
	$(NVCC) $(NVCCFLAGS) $< -o $@ $(CUDA_LIBS)
gpu: $(BUILD)/test_gpu $(BUILD)/test_attention $(BUILD)/test_xnor_gemm $(BUILD)/test_dist_gpu $(BUILD)/bench_train $(BUILD)/bench_attention $(BUILD)/bench_xnor_gemm $(BUILD)/train_10min_gpu $(BUILD)/train_unconstrained_gpu $(BUILD)/eval_gpu $(BUILD)/generate_gpu
test-gpu: $(BUILD)/test_gpu $(BUILD)/test_attention $(BUILD)/test_xnor_gemm $(BUILD)/test_dist_gpu
	@ONEBIT_SHARED=$${ONEBIT_SHARED:-../shared} sh tests/run.sh $(BUILD)/test_gpu $(BUILD)/test_attention $(BUILD)/test_xnor_gemm $(BUILD)/test_dist_gpu
bench: $(BUILD)/bench_train $(BUILD)/bench_attention $(BUILD)/bench_xnor_gemm
	./$(BUILD)/bench_attention
	./$(BUILD)/bench_xnor_gemm
	./$(BUILD)/bench_train --preset xnor-10min
	./$(BUILD)/bench_train --preset binary-50k --steps 5

check-tools:
	@echo "onebit: cc $$($(CC) -dumpversion 2>/dev/null) $(if $(OMPFLAGS),✓ OpenMP,✗ OpenMP (single-threaded)) $(if $(HAVE_NVCC),✓ nvcc (the GPU test is built),✗ nvcc (GPU code not compiled))"

# sanitizers: the same tests, unoptimised, without OpenMP (whose runtime confuses LeakSanitizer)
ASAN_TESTS := $(patsubst $(BUILD)/%,$(BUILD)/asan/%,$(TESTS))
$(BUILD)/asan/test_%: tests/test_%.c $(TEST_DEPS)
	@mkdir -p $(BUILD)/asan
	$(CC) $(CFLAGS_BASE) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer $< -o $@ $(LDLIBS)
test-asan: $(ASAN_TESTS)
	@ONEBIT_SHARED=$${ONEBIT_SHARED:-../shared} ONEBIT_TEST_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1 sh tests/run.sh $(ASAN_TESTS)

FUZZERS := $(BUILD)/fuzz/fuzz_tokenizer $(BUILD)/fuzz/fuzz_artifact $(BUILD)/fuzz/fuzz_shard $(BUILD)/fuzz/fuzz_safetensors $(BUILD)/fuzz/fuzz_checkpoint
FUZZ_SHARED ?= $(or $(ONEBIT_SHARED),../shared)
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(HEADERS)
	@mkdir -p $(BUILD)/fuzz
	$(CLANG) -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $< -o $@ $(LDLIBS)
$(BUILD)/fuzz/seeds_%: tests/fuzz/fuzz_%.c $(HEADERS)
	@mkdir -p $(BUILD)/fuzz
	$(CC) -std=c99 -D_DEFAULT_SOURCE -O1 -DOB_FUZZ_SEED_MAIN $< -o $@ $(LDLIBS)
# seeds (real models, small artifacts, shards, safetensors), then each target runs FUZZ_RUNS inputs
# under ASan + UBSan; a crash, a leak or a sanitizer report stops make with the fuzzer's log
FUZZ_SEEDS := $(BUILD)/fuzz/seeds_tokenizer $(BUILD)/fuzz/seeds_artifact $(BUILD)/fuzz/seeds_shard $(BUILD)/fuzz/seeds_safetensors $(BUILD)/fuzz/seeds_checkpoint
fuzz: $(FUZZERS) $(FUZZ_SEEDS)
	@for t in tokenizer artifact shard safetensors checkpoint; do mkdir -p $(BUILD)/fuzz/corpus_$$t; done
	@if [ -d $(FUZZ_SHARED)/data ]; then $(BUILD)/fuzz/seeds_tokenizer $(FUZZ_SHARED)/data $(BUILD)/fuzz/corpus_tokenizer; fi
	@for t in artifact shard safetensors checkpoint; do $(BUILD)/fuzz/seeds_$$t $(BUILD)/fuzz/corpus_$$t > /dev/null; done
	@for t in $(FUZZ_TARGETS); do echo "== fuzz_$$t: $(FUZZ_RUNS) inputs"; \
	  OB_FUZZ_DATA=$(FUZZ_SHARED)/data ASAN_OPTIONS=allocator_may_return_null=1 $(BUILD)/fuzz/fuzz_$$t -runs=$(FUZZ_RUNS) \
	    -max_len=$$([ $$t = checkpoint ] && echo 65536 || echo 8192) -rss_limit_mb=4096 -artifact_prefix=$(BUILD)/fuzz/crash_$$t- $(BUILD)/fuzz/corpus_$$t > $(BUILD)/fuzz/log_$$t 2>&1 || { tail -40 $(BUILD)/fuzz/log_$$t; exit 1; }; \
	  grep -E "^Done" $(BUILD)/fuzz/log_$$t; done

clean:
	rm -rf $(BUILD)
