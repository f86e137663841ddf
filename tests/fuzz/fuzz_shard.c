/* libFuzzer target for the shard reader: header validation, then reading every token through the
 * vocabulary check as the loaders do. */
#define ONEBIT_IMPLEMENTATION
#include "../../onebit.h"

#ifndef OB_FUZZ_SEED_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ob_shard s;
    if (ob_shard_parse(&s, data, size, "fuzz.bin") == OB_OK) {
        unsigned sum = 0;
        for (size_t i = 0; i < s.n_tokens; i++) if (s.tokens[i] < 1024) sum += s.tokens[i];
        (void)sum;
    }
    return 0;
}
#else
int main(int argc, char **argv) { /* seed: a valid 16-token shard */
    if (argc < 2) return 2;
    uint16_t t[16];
    for (int i = 0; i < 16; i++) t[i] = (uint16_t)(i * 97);
    char p[512];
    snprintf(p, sizeof p, "%s/seed0.bin", argv[1]);
    return ob_shard_write(p, t, 16) ? 1 : 0;
}
#endif
