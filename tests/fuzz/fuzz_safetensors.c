/* libFuzzer target for the safetensors reader: parse, then read every tensor as float and as int. */
#define ONEBIT_IMPLEMENTATION
#include "../../onebit.h"

#ifndef OB_FUZZ_SEED_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    memcpy(copy, data, size);
    ob_safetensors st;
    if (ob_safetensors_parse(&st, copy, size, "fuzz.safetensors") != OB_OK) return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        int64_t n = ob_st_numel(&st.tensors[i]);
        if (n > (1 << 20)) continue;
        float *f = (float *)malloc((size_t)(n ? n : 1) * sizeof(float));
        ob_safetensors_read_f32(&st, st.tensors[i].name, f, n);
        ob_safetensors_read_i32(&st, st.tensors[i].name, (int32_t *)f, n);
        free(f);
    }
    ob_safetensors_meta(&st, "source");
    ob_safetensors_close(&st);
    return 0;
}
#else
int main(int argc, char **argv) { /* seeds: two small files written by onebit's own writer */
    if (argc < 2) return 2;
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0.5f, 7};
    ob_st_write_item items[2] = {{"blocks.0.attn.q_gain", a, 2, {2, 3}}, {"vocab_bias", b, 1, {3}}};
    const char *k[1] = {"source"}, *v[1] = {"seed \\ with \"escapes\""};
    char p[512];
    snprintf(p, sizeof p, "%s/seed0.safetensors", argv[1]);
    ob_safetensors_write(p, items, 2, k, v, 1);
    snprintf(p, sizeof p, "%s/seed1.safetensors", argv[1]);
    ob_safetensors_write(p, items + 1, 1, NULL, NULL, 0);
    return 0;
}
#endif
