/* libFuzzer target for the tokenizer.
 *
 *   make fuzz     (or, by hand:)
 *   clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 \
 *       -D_DEFAULT_SOURCE tests/fuzz/fuzz_tokenizer.c -o /tmp/fuzz_tokenizer -lm
 *   clang -DOB_FUZZ_SEED_MAIN -D_DEFAULT_SOURCE -g -O1 tests/fuzz/fuzz_tokenizer.c -o /tmp/fuzz_seeds -lm
 *   /tmp/fuzz_seeds ../shared/data /tmp/fuzz_corpus          # writes a few small seed models
 *   OB_FUZZ_DATA=../shared/data /tmp/fuzz_tokenizer -max_len=8192 -runs=1000000 /tmp/fuzz_corpus
 *
 * Each input is used twice:
 *  1. as a .model file: ob_tokenizer_load_bytes, and when it loads, the second half of the
 *     input (at most 1 KiB) is encoded and decoded, random ids are decoded, the BPB tables are
 *     built; the word-at-a-time merge path must agree with the single-queue path;
 *  2. its first KiB as text for the two real models (if OB_FUZZ_DATA points at them): encode
 *     must succeed, the ids must decode to the normalized text (8192 model: byte fallback, lossless), and the two
 *     merge paths must agree.
 * A broken invariant calls __builtin_trap() so libFuzzer records the input. */
#define ONEBIT_IMPLEMENTATION
#include "../../onebit.h"

#ifndef OB_FUZZ_SEED_MAIN
#define OB_FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "invariant failed: %s (line %d): %s\n", #cond, __LINE__, ob_last_error()); \
            __builtin_trap(); \
        } \
    } while (0)

/* encode with the single-queue path, as SentencePiece does it, for comparison */
static int fuzz_encode_reference(const ob_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
    struct ob__tok_priv copy = *tok->priv;
    ob_tokenizer t = *tok;
    copy.split_words = 0;
    t.priv = &copy;
    return ob_tokenizer_encode(&t, text, len, ids, n);
}

static void fuzz_exercise(const ob_tokenizer *tok, const uint8_t *text, size_t len, int check_roundtrip) {
    int32_t *ids = NULL, *ref = NULL;
    size_t n = 0, n_ref = 0;
    OB_FUZZ_CHECK(ob_tokenizer_encode(tok, (const char *)text, len, &ids, &n) == OB_OK);
    for (size_t i = 0; i < n; i++) OB_FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok->vocab_size);
    OB_FUZZ_CHECK(fuzz_encode_reference(tok, (const char *)text, len, &ref, &n_ref) == OB_OK);
    OB_FUZZ_CHECK(n == n_ref && (n == 0 || memcmp(ids, ref, n * sizeof(int32_t)) == 0));
    char *dec = NULL;
    size_t dec_n = 0;
    OB_FUZZ_CHECK(ob_tokenizer_decode(tok, ids, n, &dec, &dec_n) == OB_OK);
    OB_FUZZ_CHECK(dec[dec_n] == 0);
    if (check_roundtrip) {
        /* the normalized text with U+2581 shown as spaces, unless it starts with U+2581 (a literal one
         * in the input), whose removal on decode depends on the pieces */
        ob__tok_buf b;
        memset(&b, 0, sizeof b);
        OB_FUZZ_CHECK(ob__tok_normalize(&tok->priv->norm, tok->priv->ud, text, len, &b) == 0);
        if (!(b.n >= 3 && memcmp(b.p, "\xE2\x96\x81", 3) == 0)) {
            size_t k = 0;
            for (size_t i = 0; i < b.n;) {
                if (i + 3 <= b.n && memcmp(b.p + i, "\xE2\x96\x81", 3) == 0) { b.p[k++] = ' '; i += 3; }
                else b.p[k++] = b.p[i++];
            }
            OB_FUZZ_CHECK(k == dec_n && (k == 0 || memcmp(b.p, dec, k) == 0));
        }
        free(b.p);
    }
    free(dec);
    free(ids);
    free(ref);
}

static ob_tokenizer g_real[2];
static int g_have_real[2];

static void fuzz_init(void) {
    static int done = 0;
    if (done) return;
    done = 1;
    const char *dir = getenv("OB_FUZZ_DATA");
    if (!dir) return;
    const char *files[2] = {"fineweb_1024_bpe.model", "fineweb_8192_bpe.model"};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        g_have_real[i] = ob_tokenizer_load(&g_real[i], path) == OB_OK;
        if (!g_have_real[i]) fprintf(stderr, "fuzz: %s\n", ob_last_error());
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_init();
    ob_tokenizer tok;
    int st = ob_tokenizer_load_bytes(&tok, data, size, "fuzz.model");
    if (st == OB_OK) {
        OB_FUZZ_CHECK(tok.vocab_size > 0 && tok.unk_id >= 0 && tok.unk_id < tok.vocab_size);
        size_t half = size - size / 2;
        fuzz_exercise(&tok, data + size / 2, half < 1024 ? half : 1024, 0);
        /* arbitrary ids, out-of-range ones included */
        size_t n = size / 2 < 64 ? size / 2 : 64;
        int32_t ids[64];
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            ids[i] = (int32_t)((data[2 * i] | data[2 * i + 1] << 8) % (tok.vocab_size + 2)) - 1;
            bad |= ids[i] < 0 || ids[i] >= tok.vocab_size;
        }
        char *text = NULL;
        size_t text_n = 0;
        st = ob_tokenizer_decode(&tok, ids, n, &text, &text_n);
        OB_FUZZ_CHECK(bad ? st == OB_ERR_ARG && text == NULL : st == OB_OK && text[text_n] == 0);
        free(text);
        int16_t *base = (int16_t *)malloc((size_t)(tok.vocab_size + 3) * sizeof(int16_t));
        uint8_t *lead = (uint8_t *)malloc((size_t)tok.vocab_size + 3), *bound = (uint8_t *)malloc((size_t)tok.vocab_size + 3);
        ob_tokenizer_bpb_tables(&tok, tok.vocab_size + 3, base, lead, bound);
        free(base);
        free(lead);
        free(bound);
        char piece[16];
        size_t pl = size < 15 ? size : 15;
        memcpy(piece, data, pl);
        piece[pl] = 0;
        (void)ob_tokenizer_piece_to_id(&tok, piece);
        ob_tokenizer_free(&tok);
    } else {
        OB_FUZZ_CHECK(st < 0 && strstr(ob_last_error(), "fuzz.model") != NULL);
        OB_FUZZ_CHECK(tok.vocab_size == 0 && tok.priv == NULL && tok.pieces == NULL);
    }
    for (int i = 0; i < 2; i++)
        if (g_have_real[i]) fuzz_exercise(&g_real[i], data, size < 1024 ? size : 1024, g_real[i].byte_fallback);
    return 0;
}
#else
/* ---- seed writer: small models that load, so mutations start from valid structure ---- */

static size_t seed_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t seed_piece(uint8_t *out, const char *s, float score, int type) {
    uint8_t sp[256];
    size_t m = 0, len = strlen(s);
    sp[m++] = 0x0A;
    m += seed_varint(sp + m, len);
    memcpy(sp + m, s, len);
    m += len;
    sp[m++] = 0x15;
    memcpy(sp + m, &score, 4);
    m += 4;
    sp[m++] = 0x18;
    sp[m++] = (uint8_t)type;
    size_t k = 0;
    out[k++] = 0x0A;
    k += seed_varint(out + k, m);
    memcpy(out + k, sp, m);
    return k + m;
}

/* A hand-made darts-clone array: "A" -> "a", "\t" -> " ", "\xC2\xA0" (NBSP) -> " ", "\x01" -> "". */
static size_t seed_charsmap(uint8_t *out) {
    uint32_t u[400];
    memset(u, 0, sizeof u);
    const char strings[] = "a\0 \0";
    /* root: offset 0, so the child for byte c sits at c; a child with offset 1 keeps its leaf at c^1 */
    u[0] = 0;
    u[0x41] = (1u << 10) | (1u << 8) | 0x41;
    u[0x40] = 0x80000000u | 0;
    u[0x09] = (1u << 10) | (1u << 8) | 0x09;
    u[0x08] = 0x80000000u | 2;
    u[0x01] = (4u << 10) | (1u << 8) | 0x01;
    u[0x05] = 0x80000000u | 3; /* the NUL that ends " ": an empty replacement */
    u[0xC2] = (256u << 10) | 0xC2; /* its children at 0xC2 ^ 256 ^ c */
    u[0xC2 ^ 256 ^ 0xA0] = (1u << 10) | (1u << 8) | 0xA0;
    u[0xC2 ^ 256 ^ 0xA0 ^ 1] = 0x80000000u | 2;
    uint32_t n_units = 400, trie = 4 * n_units;
    memcpy(out, &trie, 4);
    memcpy(out + 4, u, trie);
    memcpy(out + 4 + trie, strings, sizeof strings - 1);
    return 4 + trie + sizeof strings - 1;
}

static size_t seed_normspec(uint8_t *out, int with_charsmap, int dummy, int extra_ws) {
    uint8_t ns[4096];
    size_t m = 0;
    ns[m++] = 0x0A; /* name */
    ns[m++] = 8;
    memcpy(ns + m, "nmt_nfkc", 8);
    m += 8;
    if (with_charsmap) {
        uint8_t cm[2048];
        size_t c = seed_charsmap(cm);
        ns[m++] = 0x12;
        m += seed_varint(ns + m, c);
        memcpy(ns + m, cm, c);
        m += c;
    }
    ns[m++] = 0x18;
    ns[m++] = (uint8_t)dummy;
    ns[m++] = 0x20;
    ns[m++] = (uint8_t)extra_ws;
    size_t k = 0;
    out[k++] = 0x1A;
    k += seed_varint(out + k, m);
    memcpy(out + k, ns, m);
    return k + m;
}

static size_t seed_trainer(uint8_t *out, int byte_fallback) {
    size_t k = 0;
    out[k++] = 0x12;
    out[k++] = byte_fallback ? 5 : 2;
    out[k++] = 0x18; /* model_type BPE */
    out[k++] = 2;
    if (byte_fallback) {
        out[k++] = 0x98; /* field 35 (byte_fallback), varint */
        out[k++] = 0x02;
        out[k++] = 1;
    }
    return k;
}

static void seed_write(const char *dir, const char *name, const uint8_t *p, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fwrite(p, 1, n, f);
    fclose(f);
    ob_tokenizer tok;
    int st = ob_tokenizer_load_bytes(&tok, p, n, name);
    printf("%-28s %6zu bytes: %s\n", name, n, st == OB_OK ? "loads" : ob_last_error());
    ob_tokenizer_free(&tok);
}

/* The first n_pieces pieces and the trainer_spec of a real model, with a small normalizer_spec. */
static size_t seed_from_real(uint8_t *out, size_t cap, const char *path, int n_pieces) {
    size_t size = 0;
    uint8_t *data = ob__read_file(path, &size);
    if (!data) return 0;
    ob__tok_pb r;
    ob__tok_field f;
    r.p = data;
    r.n = size;
    r.pos = 0;
    r.base = 0;
    r.name = path;
    r.what = "ModelProto";
    size_t k = 0;
    int count = 0;
    while (ob__tok_pb_next(&r, &f) == 1) {
        size_t start = f.at, end = r.pos;
        if ((f.num == 1 && count++ < n_pieces) || f.num == 2) {
            if (k + (end - start) > cap) break;
            memcpy(out + k, data + start, end - start);
            k += end - start;
        }
    }
    free(data);
    k += seed_normspec(out + k, 1, 0, 1);
    return k;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s DATA_DIR OUT_DIR\n", argv[0]); return 2; }
    static uint8_t buf[1 << 16];
    size_t k = 0;
    /* tiny: <unk> <s> </s> a b ab, default normalizer (dummy prefix) */
    k += seed_piece(buf + k, "<unk>", 0, 2);
    k += seed_piece(buf + k, "<s>", 0, 3);
    k += seed_piece(buf + k, "</s>", 0, 3);
    k += seed_piece(buf + k, "a", -1, 1);
    k += seed_piece(buf + k, "b", -2, 1);
    k += seed_piece(buf + k, "ab", -3, 1);
    size_t base = k;
    k += seed_trainer(buf + k, 0);
    seed_write(argv[2], "tiny.model", buf, k);
    /* + user-defined and unused pieces, a pieces with U+2581 inside, a charsmap */
    k = base;
    k += seed_piece(buf + k, "<ud>", 0, 4);
    k += seed_piece(buf + k, "\xE2\x96\x81" "a", -4, 1);
    k += seed_piece(buf + k, "ba", -5, 5);
    k += seed_piece(buf + k, "bab", -6, 1);
    k += seed_piece(buf + k, "a\xE2\x96\x81" "b", -7, 1);
    k += seed_trainer(buf + k, 0);
    k += seed_normspec(buf + k, 1, 1, 1);
    seed_write(argv[2], "tiny_ud_unused_charsmap.model", buf, k);
    k = base;
    k += seed_trainer(buf + k, 0);
    k += seed_normspec(buf + k, 1, 0, 0);
    seed_write(argv[2], "tiny_noextraws.model", buf, k);
    char path[1024];
    snprintf(path, sizeof path, "%s/fineweb_8192_bpe.model", argv[1]);
    k = seed_from_real(buf, sizeof buf, path, 300);
    if (k) seed_write(argv[2], "mini8192.model", buf, k);
    snprintf(path, sizeof path, "%s/fineweb_1024_bpe.model", argv[1]);
    k = seed_from_real(buf, sizeof buf, path, 150);
    if (k) seed_write(argv[2], "mini1024.model", buf, k);
    size_t size = 0;
    uint8_t *real = ob__read_file(path, &size);
    if (real) {
        seed_write(argv[2], "real1024_prefix.model", real, size < 3000 ? size : 3000);
        free(real);
    }
    const char *text = "Abdication \\Ab`di*ca\"tion\\, n. [L. abdicatio: cf. F.] \xEF\xAC\x81 \xEF\xBC\xA1 \xF0\x9F\x98\x80 e\xCC\x81\t\n  x";
    seed_write(argv[2], "text.txt", (const uint8_t *)text, strlen(text));
    return 0;
}
#endif
