/* onebit_pack.h: bit and trit layouts, pack -> unpack exactness for every parameter kind, bit-identical
 * logits after a reload, corrupted artifacts, and the report for the XNOR 10-minute model. */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_pack.h"
#include "test_util.h"
#include <time.h>

static void test_layouts(void) {
    /* the documented bit order: element i is bit (i % 8) of byte (i / 8), 1 = w >= 0 */
    float w[20];
    for (int i = 0; i < 20; i++) w[i] = (i % 3 == 0) ? 1.0f : -1.0f;
    w[4] = 0.0f;  /* sign(0) = +1 */
    w[5] = -0.0f; /* -0 >= 0 too */
    uint8_t b[3];
    ob_pack_bits(w, 20, b);
    /* bits set at 0, 3, 4, 5, 6, 9, 12, 15, 18 */
    int ok1 = b[0] == (1 | 8 | 16 | 32 | 64) && b[1] == (2 | 16 | 128) && b[2] == 4;
    ob_rng rng;
    ob_rng_seed(&rng, 3);
    size_t n = 100003;
    float *x = (float *)malloc(n * 4), *y = (float *)malloc(n * 4);
    uint8_t *p = (uint8_t *)malloc(n);
    for (size_t i = 0; i < n; i++) x[i] = ob_rng_normal(&rng) >= 0 ? 1.0f : -1.0f;
    ob_pack_bits(x, n, p);
    ob_unpack_bits(p, n, y);
    int ok2 = !memcmp(x, y, n * 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)(ob_rng_u64(&rng) % 3) - 1);
    ob_pack_trits(x, n, p);
    int ok3 = ob_unpack_trits(p, n, y) && !memcmp(x, y, n * 4);
    double bits_per = 8.0 * ((n + 4) / 5) / n;
    uint8_t bad = 243;
    int ok4 = !ob_unpack_trits(&bad, 5, y);
    TU_CHECK(ok1 && ok2 && ok3 && ok4 && bits_per <= 1.6 + 1e-4, "pack_layouts",
             "bit order LSB-first with sign(0) = sign(-0) = +1; 100,003 signs and trits roundtrip; %.4f bits per trit; byte 243 refused", bits_per);
    free(x); free(y); free(p);
}

/* A small trained-looking model: the tiny preset with random weights, in a given variant. */
static int make_model(ob_model *m, ob_config *c, uint64_t seed) {
    if (ob_model_init(m, c)) return -1;
    ob_model_init_weights(m, seed);
    ob_rng rng;
    ob_rng_seed(&rng, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.02f * ob_rng_normal(&rng);
    m->quantized = 0;
    return 0;
}

static void roundtrip(const char *name, ob_config *c) {
    ob_model a, b;
    if (make_model(&a, c, 5)) { tu_report("FAIL", name, "%s", ob_last_error()); return; }
    ob_model_quantize(&a);
    uint8_t *art;
    size_t n;
    ob_artifact_info info;
    ob_pack_options opt;
    ob_pack_options_default(&opt);
    int r = ob_artifact_pack(&a, NULL, &opt, &art, &n, &info);
    if (!r) r = ob_artifact_load_bytes(&b, art, n, name, NULL);
    if (r) { tu_report("FAIL", name, "%s", ob_last_error()); ob_model_free(&a); if (!r) free(art); return; }
    /* the forward weights: every stored tensor bit for bit */
    int diff_t = 0;
    for (int i = 0; i < a.n_tensors; i++) {
        const ob_tensor_info *t = &a.tensors[i];
        if (!t->has_grad) continue;
        if (memcmp(a.qparams + t->offset, b.qparams + t->offset, t->numel * 4)) diff_t++;
    }
    /* logits on random tokens */
    int32_t x[64], y[64];
    ob_rng rng;
    ob_rng_seed(&rng, 9);
    for (int i = 0; i < 64; i++) { x[i] = (int32_t)(ob_rng_u64(&rng) % (uint64_t)c->vocab_size); y[i] = (int32_t)(ob_rng_u64(&rng) % (uint64_t)c->vocab_size); }
    size_t nl = (size_t)64 * c->vocab_size;
    float *la = (float *)malloc(nl * 4);
    r = ob_model_forward(&a, x, y, 2, 32);
    memcpy(la, a.acts.logits, nl * 4);
    if (!r) r = ob_model_forward(&b, x, y, 2, 32);
    int same = !r && !memcmp(la, b.acts.logits, nl * 4);
    TU_CHECK(!r && diff_t == 0 && same, name, "%zu-byte artifact (payload %zu raw, %zu stored): %d tensors differ, logits %s",
             n, info.payload_raw, info.payload_stored, diff_t, same ? "bit-identical" : "DIFFER");
    free(la);
    free(art);
    ob_model_free(&a);
    ob_model_free(&b);
}

static void test_roundtrips(void) {
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.train_seq_len = 32;
    ob_config base = c;
    roundtrip("pack_binary_bf16_xnor_mode2", &c);
    c = base; c.scale_fp8 = 1; c.binarize_act = 1; c.activation = OB_ACT_RELU2;
    roundtrip("pack_binary_fp8_scales_mode1", &c);
    c = base; c.weight_quant = OB_WEIGHTS_TERNARY; c.binarize_act = 0; c.recurrence = 2;
    roundtrip("pack_ternary_bf16_recurrence", &c);
    c = base; c.weight_quant = OB_WEIGHTS_TERNARY; c.scale_fp8 = 1; c.binarize_act = 0;
    roundtrip("pack_ternary_fp8_scales", &c);
    c = base; c.fp8_qat = 0; c.tie_embeddings = 0; c.vocab_bias = 1; c.smear = 1; c.attn_res = 2;
    roundtrip("pack_bf16_untied_smear_attnres2", &c);
    c = base; c.activation = OB_ACT_SWIGLU; c.attn_res = 1; c.smear = 1; c.embed_dim = 0;
    roundtrip("pack_swiglu_attnres1_unfactored", &c);
}

static void test_seed_forward_gap(void) {
    /* the seeds' forward (storage_exact = 0): vectors in f32; only the tied head's raw E differs */
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.storage_exact = 0;
    ob_model a, b;
    make_model(&a, &c, 7);
    ob_model_quantize(&a);
    uint8_t *art;
    size_t n;
    ob_artifact_info info;
    int r = ob_artifact_pack(&a, NULL, NULL, &art, &n, &info);
    if (!r) { r = ob_artifact_load_bytes(&b, art, n, "seedgap", NULL); free(art); }
    int32_t x[64], y[64];
    for (int i = 0; i < 64; i++) { x[i] = (i * 37) % 256; y[i] = (i * 11 + 3) % 256; }
    double ea = 0, eb = 0;
    if (!r) { ob_model_forward(&a, x, y, 2, 32); ea = a.loss; ob_model_forward(&b, x, y, 2, 32); eb = b.loss; ob_model_free(&b); }
    TU_CHECK(!r && fabs(ea - eb) < 1e-3, "pack_seed_forward", "seed forward (raw E in the head): loss %.6f before, %.6f after the roundtrip (the stored fp8 E differs from the raw one)", ea, eb);
    ob_model_free(&a);
}

static void test_corruption(void) {
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.num_layers = 2;
    ob_model a, b;
    make_model(&a, &c, 3);
    uint8_t *art;
    size_t n;
    ob_artifact_info info;
    ob_pack_options opt;
    ob_pack_options_default(&opt);
    ob_artifact_pack(&a, NULL, &opt, &art, &n, &info);
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | art[16 + i];
    int nc = 0, ok = 0;
    char detail[1024] = "";
    uint8_t *x = (uint8_t *)malloc(n + 16);
#define TRY(WHAT, EXPECT, LEN) do { int r_ = ob_artifact_load_bytes(&b, x, (LEN), "bad.ob1", NULL); \
        if (r_ == OB_ERR_FORMAT && strstr(ob_last_error(), "bad.ob1") && strstr(ob_last_error(), EXPECT)) ok++; \
        else { if (!r_) ob_model_free(&b); snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [%s: %d %.80s]", WHAT, r_, ob_last_error()); } \
        nc++; } while (0)
    /* truncations */
    size_t cuts[] = {0, 30, 56, 56 + hlen / 2, 56 + hlen, n - 1};
    for (int i = 0; i < 6; i++) { memcpy(x, art, n); TRY("truncated", cuts[i] < 56 ? "shorter than" : "truncated", cuts[i]); }
    /* one flipped bit in the fixed part, the header and the payload */
    size_t flips[] = {40, 56 + 10, 56 + hlen + 3, n / 2, n - 2};
    const char *fexp[] = {"checksum", "checksum", "", "", ""};
    for (int i = 0; i < 5; i++) { memcpy(x, art, n); x[flips[i]] ^= 0x10; TRY("flipped bit", fexp[i], n); }
    memcpy(x, art, n); x[0] = 'X'; TRY("magic", "magic", n);
    memcpy(x, art, n); x[4] = 9; TRY("version", "version 9", n);
    memcpy(x, art, n); memcpy(x + n, "PADDING", 7); TRY("trailing bytes", "padded", n + 7);
    /* a header that parses and checks out but does not match the payload: num_layers 2 -> 3, checksum fixed */
    memcpy(x, art, n);
    char *nl = strstr((char *)x + 56, "num_layers=2");
    if (nl) {
        nl[11] = '3';
        uint64_t h = ob_fnv1a64(x + 56, hlen, ob_fnv1a64(x, 48, 0));
        for (int i = 0; i < 8; i++) x[48 + i] = (uint8_t)(h >> (8 * i));
        TRY("config mismatch", "tensor table ends", n);
    }
    /* a raw size claim the model cannot fill (the fuzzer's 4 GB allocation): refused before allocating */
    memcpy(x, art, n);
    for (int i = 0; i < 8; i++) x[32 + i] = (uint8_t)((1ull << 34) >> (8 * i));
    {
        uint64_t h = ob_fnv1a64(x + 56, hlen, ob_fnv1a64(x, 48, 0));
        for (int i = 0; i < 8; i++) x[48 + i] = (uint8_t)(h >> (8 * i));
    }
    TRY("huge raw size", "can hold", n);
    TU_CHECK(ok == nc, "pack_corruption", "%d of %d corrupted artifacts refused with a format error naming the file "
             "(6 truncations, 5 single-bit flips, magic, version, trailing bytes, a header that disagrees with the payload, a raw size of 16 GB)%s", ok, nc, detail);
    free(x);
    free(art);
    ob_model_free(&a);
}

/* Inputs the fuzzer found (tests/data/fuzz_*.bin), header checksums re-signed as the fuzz harness
 * does: each must be refused with a format error, without a large allocation. */
static void test_fuzz_regressions(void) {
    static const char *files[] = {"tests/data/fuzz_artifact_oom_1.bin"};
    for (int f = 0; f < 1; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (!fp) { tu_report("FAIL", "pack_fuzz_regression", "%s: cannot open (run from the repository root)", files[f]); continue; }
        uint8_t buf[65536];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = (h << 8) | buf[16 + i];
        if (n >= 56 && h <= n - 56) {
            uint64_t s = ob_fnv1a64(buf + 56, (size_t)h, ob_fnv1a64(buf, 48, 0));
            for (int i = 0; i < 8; i++) buf[48 + i] = (uint8_t)(s >> (8 * i));
        }
        ob_model m;
        int r = ob_artifact_load_bytes(&m, buf, n, files[f], NULL);
        if (!r) ob_model_free(&m);
        TU_CHECK(r == OB_ERR_FORMAT, "pack_fuzz_regression", "%s (%zu bytes; once a 4 GB allocation): %s", files[f], n, ob_last_error());
    }
}

static void test_xnor_10min_report(void) {
    ob_config c;
    ob_config_preset(&c, "xnor-10min");
    ob_model m;
    if (ob_model_init(&m, &c)) { tu_report("FAIL", "pack_xnor_10min", "%s", ob_last_error()); return; }
    ob_model_init_weights(&m, 42);
    ob_model_quantize(&m);
    uint8_t *art;
    size_t n;
    ob_artifact_info info;
    ob_pack_options opt;
    ob_pack_options_default(&opt);
    opt.try_lzma = 0; /* Brotli only here: LZMA -9e on 16 MB takes a minute on two cores */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = ob_artifact_pack(&m, NULL, &opt, &art, &n, &info);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (r) { tu_report("FAIL", "pack_xnor_10min", "%s", ob_last_error()); ob_model_free(&m); return; }
    printf("---- artifact report, XNOR 10-minute configuration (init weights) ----\n");
    static const char *code[] = {"onebit.h", "onebit_muon.h", "onebit_pack.h"};
    ob_artifact_report(stdout, &info, code, 3);
    size_t binary = 0;
    for (int i = 0; i < info.n_parts; i++)
        if (!strcmp(info.parts[i].what, "weight signs / trits") || !strcmp(info.parts[i].what, "group scales")) binary += info.parts[i].raw_bytes;
    TU_CHECK(info.binary_weights == 115343360 && binary <= 15319040, "pack_xnor_10min",
             "115,343,360 binary weights with their scales in %zu bytes before compression (seed: 15,319,040); artifact %zu bytes, packed in %.1f s",
             binary, n, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    free(art);
    ob_model_free(&m);
}

/* Ternary packing: 5 trits per byte (3^5 = 243 <= 256), 1.6 bits per weight before compression, an
 * exact roundtrip of every trit (roundtrip() above checks the whole model). */
static void test_ternary_bits(void) {
    ob_config c;
    ob_config_preset(&c, "tiny");
    c.weight_quant = OB_WEIGHTS_TERNARY; c.binarize_act = 0; c.recurrence = 3;
    ob_model a;
    if (make_model(&a, &c, 8)) { tu_report("FAIL", "ternary_bits", "%s", ob_last_error()); return; }
    ob_model_quantize(&a);
    uint8_t *art = NULL;
    size_t n = 0, trits = 0;
    ob_artifact_info info;
    ob_pack_options opt;
    ob_pack_options_default(&opt);
    opt.codec = OB_CODEC_NONE;
    int r = ob_artifact_pack(&a, NULL, &opt, &art, &n, &info);
    for (int i = 0; !r && i < info.n_parts; i++) if (strstr(info.parts[i].what, "trits")) trits = info.parts[i].raw_bytes;
    /* 5 trits a byte, each tensor padded to whole bytes: at most one byte over 1.6 bits per tensor */
    size_t want = 0;
    int n_tern = 0;
    for (int i = 0; i < a.n_tensors; i++)
        if (a.tensors[i].kind == OB_PARAM_QUANT && a.tensors[i].has_grad) { want += (a.tensors[i].numel + 4) / 5; n_tern++; }
    double bits = info.binary_weights ? 8.0 * (double)trits / (double)info.binary_weights : 99.0;
    TU_CHECK(!r && trits > 0 && trits == want && trits * 5 < info.binary_weights + 5 * (size_t)n_tern, "ternary_bits_per_weight",
             "%zu ternary weights in %zu bytes: %.5f bits per weight before compression (1.6 plus the padding of %d tensors to whole "
             "bytes; the seed's 2-bit packing: 2.0)", info.binary_weights, trits, bits, n_tern);
    /* every 5-trit pattern through ob_pack_trits / ob_unpack_trits, and the codes above 242 refused */
    float q[5 * 243], back[5 * 243];
    for (int v = 0; v < 243; v++) for (int k = 0, x = v; k < 5; k++, x /= 3) q[5 * v + k] = (float)(x % 3 - 1);
    uint8_t packed[243], bad = 243;
    ob_pack_trits(q, 5 * 243, packed);
    int ok = ob_unpack_trits(packed, 5 * 243, back) && !memcmp(q, back, sizeof q) && !ob_unpack_trits(&bad, 5, back);
    TU_CHECK(ok, "ternary_trits_exhaustive", "all 243 five-trit patterns pack into one byte each and unpack exactly; byte 243 is refused");
    free(art);
    ob_model_free(&a);
}

int main(void) {
    test_layouts();
    test_roundtrips();
    test_ternary_bits();
    test_seed_forward_gap();
    test_corruption();
    test_fuzz_regressions();
    test_xnor_10min_report();
    return tu_exit();
}
