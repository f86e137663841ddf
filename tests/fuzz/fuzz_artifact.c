/* libFuzzer target for the artifact unpacker (onebit_pack.h). The input is an artifact; the harness
 * re-signs its header checksum so the mutations reach the header and table parsers, not only the
 * checksum check. With -DOB_FUZZ_SEED_MAIN it instead writes seed artifacts into the folder argv[1]. */
#define ONEBIT_IMPLEMENTATION
#include "../../onebit_pack.h"

#ifndef OB_FUZZ_SEED_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *a = (uint8_t *)malloc(size ? size : 1);
    memcpy(a, data, size);
    if (size >= 56) {
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = (h << 8) | a[16 + i];
        if (h <= size - 56) {
            uint64_t s = ob_fnv1a64(a + 56, (size_t)h, ob_fnv1a64(a, 48, 0));
            for (int i = 0; i < 8; i++) a[48 + i] = (uint8_t)(s >> (8 * i));
        }
    }
    ob_model m;
    if (ob_artifact_load_bytes(&m, a, size, "fuzz", NULL) == OB_OK) {
        /* a loaded model must run */
        int32_t x[4] = {0, 1, 2, 3};
        for (int i = 0; i < 4; i++) x[i] %= m.cfg.vocab_size;
        if (m.cfg.train_seq_len >= 4 && m.n_params < 4000000) ob_model_forward(&m, x, x, 1, 4);
        ob_model_free(&m);
    }
    free(a);
    return 0;
}
#else
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.num_layers = 1; c.model_dim = 32; c.num_heads = 2; c.num_kv_heads = 1; c.embed_dim = 16; c.group_size = 16; c.vocab_size = 64; c.train_seq_len = 8;
    for (int v = 0; v < 4; v++) {
        ob_config cc = c;
        if (v == 1) { cc.weight_quant = OB_WEIGHTS_TERNARY; cc.scale_fp8 = 1; }
        if (v == 2) { cc.fp8_qat = 0; cc.storage_exact = 0; cc.attn_res = 2; }
        if (v == 3) { cc.activation = OB_ACT_SWIGLU; cc.smear = 1; }
        ob_model m;
        ob_model_init(&m, &cc);
        ob_model_init_weights(&m, (uint64_t)v + 1);
        ob_pack_options o;
        ob_pack_options_default(&o);
        o.codec = v % 2 ? OB_CODEC_NONE : OB_CODEC_BROTLI; /* uncompressed seeds let mutations reach the tensors */
        uint8_t *a;
        size_t n;
        ob_artifact_info info;
        ob_artifact_pack(&m, NULL, &o, &a, &n, &info);
        char p[512];
        snprintf(p, sizeof p, "%s/seed%d.ob1", argv[1], v);
        ob_artifact_write(p, a, n);
        free(a);
        ob_model_free(&m);
    }
    return 0;
}
#endif
