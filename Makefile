# onebit: every target is one compiler line over the headers; nothing is configured or installed.
#   make test        CPU tests (what CI runs); the last line reads "N passed, N failed, N skipped"
#   make run         the main job: trains on the embedded default (this repository's own text)
#   make test-asan   the CPU tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz        libFuzzer targets (clang), each run for FUZZ_RUNS inputs
#   make clean
# Options: CC=..., NO_OMP=1 (no OpenMP), ONEBIT_SHARED=path (default ../shared, read by the tests).

CC ?= cc
CLANG ?= clang
NVCC ?= nvcc
BUILD := build
FUZZ_RUNS ?= 1000000

# C99 plus POSIX (mmap, fsync, readdir); warnings are errors in every build of the project.
CFLAGS_BASE := -std=c99 -D_DEFAULT_SOURCE -Wall -Wextra -Werror
OPT ?= -O2 -march=native
LDLIBS := -lm

# OpenMP when the compiler has it (a test compile of an empty program decides), unless NO_OMP=1.
ifeq ($(NO_OMP),)
  HAVE_OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_OMP),1)
  OMPFLAGS := -fopenmp
endif
CFLAGS := $(CFLAGS_BASE) $(OPT) $(OMPFLAGS)

HEADERS := onebit.h onebit_muon.h
TESTS := $(BUILD)/test_numerics $(BUILD)/test_model $(BUILD)/test_fixtures $(BUILD)/test_muon $(BUILD)/test_tokenizer $(BUILD)/test_data
TEST_DEPS := $(HEADERS) tests/test_util.h tests/test_ties.h

.PHONY: all test run test-asan fuzz clean check-tools

all: $(TESTS)

$(BUILD):
	@mkdir -p $(BUILD)

# one program per test file, each including the headers it tests with the implementation defined
$(BUILD)/test_%: tests/test_%.c $(TEST_DEPS) | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

test: check-tools $(TESTS)
	@ONEBIT_SHARED=$${ONEBIT_SHARED:-../shared} sh tests/run.sh $(TESTS)

check-tools:
	@echo "onebit: cc $$($(CC) -dumpversion 2>/dev/null) $(if $(OMPFLAGS),✓ OpenMP,✗ OpenMP (single-threaded))"

# sanitizers: the same tests, unoptimised, without OpenMP (whose runtime confuses LeakSanitizer)
ASAN_TESTS := $(patsubst $(BUILD)/%,$(BUILD)/asan/%,$(TESTS))
$(BUILD)/asan/test_%: tests/test_%.c $(TEST_DEPS)
	@mkdir -p $(BUILD)/asan
	$(CC) $(CFLAGS_BASE) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer $< -o $@ $(LDLIBS)
test-asan: $(ASAN_TESTS)
	@ONEBIT_SHARED=$${ONEBIT_SHARED:-../shared} ASAN_OPTIONS=detect_leaks=1 sh tests/run.sh $(ASAN_TESTS)

FUZZERS := $(BUILD)/fuzz/fuzz_tokenizer
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(HEADERS)
	@mkdir -p $(BUILD)/fuzz
	$(CLANG) -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $< -o $@ $(LDLIBS)
fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do echo "== $$f ($(FUZZ_RUNS) inputs)"; mkdir -p $(BUILD)/fuzz/corpus_$$(basename $$f); \
	  $$f -runs=$(FUZZ_RUNS) -max_len=8192 $(BUILD)/fuzz/corpus_$$(basename $$f) 2>&1 | tail -3 || exit 1; done

clean:
	rm -rf $(BUILD)
