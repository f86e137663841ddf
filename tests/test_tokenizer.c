/* Tests of the onebit tokenizer against the real SentencePiece outputs in $ONEBIT_SHARED/data.
 *
 *   cd /work/main && gcc -std=c99 -D_DEFAULT_SOURCE -O2 -Wall -Wextra -Werror \
 *       draft/tok/test_tokenizer.c -o /tmp/test_tokenizer -lm && /tmp/test_tokenizer
 *
 * Every check prints one PASS/FAIL/SKIP line; the exit status is 1 if any check failed.
 * ONEBIT_TOK_BENCH=1 adds a re-encode of the whole train shards (about 24 MB of text per model). */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"

#include <time.h>

static int g_failures = 0;
static char g_shared[1024];

static void report(const char *verdict, const char *name, const char *fmt, va_list ap) {
    printf("%s %s: ", verdict, name);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}
static void pass(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report("PASS", name, fmt, ap);
    va_end(ap);
}
static void fail(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report("FAIL", name, fmt, ap);
    va_end(ap);
    g_failures++;
}
static void skip(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report("SKIP", name, fmt, ap);
    va_end(ap);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void data_path(char *out, size_t cap, const char *rel) { snprintf(out, cap, "%s/data/%s", g_shared, rel); }

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

/* whole file, NUL-terminated; NULL if unreadable */
static char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap);
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap *= 2;
            buf = (char *)realloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        if (got == 0) break;
        n += got;
    }
    fclose(f);
    buf[n] = 0;
    *size = n;
    return buf;
}

/* A shard: 256 int32 header (magic 20240520, version 1, count), then count uint16 tokens. */
typedef struct shard {
    uint16_t *tok;
    size_t n;
} shard;

static int read_shard(const char *path, shard *s, char *why, size_t why_cap) {
    size_t size = 0;
    char *buf = slurp(path, &size);
    s->tok = NULL;
    s->n = 0;
    if (!buf) { snprintf(why, why_cap, "%s: cannot read", path); return -1; }
    int32_t hdr[256];
    if (size < sizeof hdr) { free(buf); snprintf(why, why_cap, "%s: shorter than its header", path); return -1; }
    memcpy(hdr, buf, sizeof hdr);
    size_t count = (size_t)(uint32_t)hdr[2];
    if (hdr[0] != 20240520 || hdr[1] != 1 || size != sizeof hdr + 2 * count) {
        free(buf);
        snprintf(why, why_cap, "%s: bad header (magic %d version %d count %zu, file %zu bytes)", path, hdr[0], hdr[1], count, size);
        return -1;
    }
    s->tok = (uint16_t *)malloc(2 * count + 2);
    memcpy(s->tok, buf + sizeof hdr, 2 * count);
    s->n = count;
    free(buf);
    return 0;
}

static void ids_to_str(char *out, size_t cap, const int32_t *ids, size_t n) {
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && k + 16 < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s%d", i ? " " : "", (int)ids[i]);
    if (k + 16 >= cap) snprintf(out + k, cap - k, " ...");
}

/* ---- model loading ---- */

static int load_model(const char *check, const char *file, ob_tokenizer *tok) {
    char path[1200];
    data_path(path, sizeof path, file);
    if (!file_exists(path)) {
        skip(check, "%s not found (set ONEBIT_SHARED)", path);
        return -1;
    }
    int st = ob_tokenizer_load(tok, path);
    if (st != OB_OK) {
        fail(check, "load %s: %s", path, ob_last_error());
        return -1;
    }
    return 0;
}

static void check_load(const char *check, const ob_tokenizer *tok, int vocab, int byte_fallback) {
    int n_byte = 0, byte_ok = 1;
    for (int i = 0; i < tok->vocab_size; i++)
        if (tok->types[i] == OB_PIECE_BYTE) {
            n_byte++;
            char want[8];
            snprintf(want, sizeof want, "<0x%02X>", (i - 4) & 0xFF);
            if (strcmp(tok->pieces[i], want) != 0) byte_ok = 0;
        }
    int want_bytes = byte_fallback ? 256 : 0;
    int the = ob_tokenizer_piece_to_id(tok, "\xE2\x96\x81the");
    if (tok->vocab_size != vocab || tok->unk_id != 3 || tok->bos_id != 1 || tok->eos_id != 2 || tok->pad_id != 0 ||
        tok->byte_fallback != byte_fallback || n_byte != want_bytes || !byte_ok || ob_tokenizer_piece_to_id(tok, "<unk>") != 3 ||
        ob_tokenizer_piece_to_id(tok, "no such piece") != -1 || the < 0 || tok->types[3] != OB_PIECE_UNKNOWN ||
        tok->types[1] != OB_PIECE_CONTROL)
        fail(check, "vocab %d unk %d bos %d eos %d pad %d byte_fallback %d byte pieces %d (ids 4.. ok %d), piece_to_id(<unk>) %d",
             tok->vocab_size, tok->unk_id, tok->bos_id, tok->eos_id, tok->pad_id, tok->byte_fallback, n_byte, byte_ok,
             ob_tokenizer_piece_to_id(tok, "<unk>"));
    else
        pass(check, "vocab %d, unk %d, bos %d, eos %d, pad %d, byte_fallback %d, %d byte pieces, \"\xE2\x96\x81the\" = %d, hash %016llx",
             tok->vocab_size, tok->unk_id, tok->bos_id, tok->eos_id, tok->pad_id, tok->byte_fallback, n_byte, the,
             (unsigned long long)tok->hash);
}

/* ---- encode_samples.tsv ---- */

/* Encodes with the word-at-a-time shortcut switched off: one merge queue over the whole text. */
static int encode_single_queue(const ob_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
    struct ob__tok_priv copy = *tok->priv;
    ob_tokenizer t = *tok;
    copy.split_words = 0;
    t.priv = &copy;
    return ob_tokenizer_encode(&t, text, len, ids, n);
}

/* The normalization the challenge models apply to ASCII text, computed independently of the
 * library: tab/CR/LF become spaces (nmt_nfkc), leading and trailing whitespace is dropped, runs of
 * spaces collapse to one (remove_extra_whitespaces; add_dummy_prefix is off in both models).
 * Returns -1 when the text is not plain ASCII (then the library's normalizer is the reference). */
static int simple_normalize(const char *s, size_t n, char *out, size_t *out_n) {
    size_t k = 0;
    int pending_space = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t' || c == '\n' || c == '\r') c = ' ';
        if (c >= 0x7F || (c < 0x20 && c != ' ')) return -1;
        if (c == ' ') {
            if (k) pending_space = 1;
            continue;
        }
        if (pending_space) out[k++] = ' ';
        pending_space = 0;
        out[k++] = (char)c;
    }
    *out_n = k;
    return 0;
}

/* What decoding gives for normalized ASCII text: each maximal run of characters that are not
 * pieces becomes one " ⁇ " when the model has no byte fallback. */
static size_t expected_decode(const ob_tokenizer *tok, const char *norm, size_t n, char *out) {
    size_t k = 0;
    int in_unk = 0;
    for (size_t i = 0; i < n; i++) {
        char piece[4];
        if (norm[i] == ' ') memcpy(piece, "\xE2\x96\x81", 4);
        else { piece[0] = norm[i]; piece[1] = 0; }
        int unknown = !tok->byte_fallback && ob_tokenizer_piece_to_id(tok, piece) < 0;
        if (unknown) {
            if (!in_unk) { memcpy(out + k, " \xE2\x81\x87 ", 5); k += 5; }
        } else {
            out[k++] = norm[i];
        }
        in_unk = unknown;
    }
    out[k] = 0;
    return k;
}

static void check_samples(const char *tag, const ob_tokenizer *tok, const char *tsv_rel) {
    char name_enc[64], name_dec[64], name_norm[64], path[1200];
    snprintf(name_enc, sizeof name_enc, "encode_samples_%s", tag);
    snprintf(name_dec, sizeof name_dec, "decode_samples_%s", tag);
    snprintf(name_norm, sizeof name_norm, "normalize_samples_%s", tag);
    data_path(path, sizeof path, tsv_rel);
    size_t size = 0;
    char *buf = slurp(path, &size);
    if (!buf) {
        skip(name_enc, "%s not found", path);
        skip(name_dec, "%s not found", path);
        skip(name_norm, "%s not found", path);
        return;
    }
    int lines = 0, enc_ok = 0, dec_ok = 0, norm_ok = 0, non_ascii = 0, with_unk = 0, unk_runs_merged = 0;
    char enc_msg[4096] = "", dec_msg[4096] = "", norm_msg[2048] = "";
    char *line = buf;
    while (line < buf + size) {
        char *eol = (char *)memchr(line, '\n', (size_t)(buf + size - line));
        if (!eol) eol = buf + size;
        *eol = 0;
        if (eol > line && eol[-1] == '\r') eol[-1] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) {
            if (*line) snprintf(enc_msg, sizeof enc_msg, "line %d has no tab", lines + 1);
            line = eol + 1;
            continue;
        }
        lines++;
        *tab = 0;
        const char *text = line;
        size_t text_n = strlen(text);
        /* expected ids */
        int32_t want[4096];
        size_t n_want = 0;
        for (char *p = tab + 1; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            if (n_want < 4096) want[n_want++] = (int32_t)v;
            p = end;
        }
        int32_t *ids = NULL;
        size_t n_ids = 0;
        int st = ob_tokenizer_encode(tok, text, text_n, &ids, &n_ids);
        int same = st == OB_OK && n_ids == n_want && (n_ids == 0 || memcmp(ids, want, n_ids * sizeof(int32_t)) == 0);
        if (same) { /* the single-queue path (SentencePiece's own loop) must agree with the per-word one */
            int32_t *ref = NULL;
            size_t n_ref = 0;
            same = encode_single_queue(tok, text, text_n, &ref, &n_ref) == OB_OK && n_ref == n_ids &&
                   (n_ref == 0 || memcmp(ref, ids, n_ref * sizeof(int32_t)) == 0);
            free(ref);
        }
        if (same) enc_ok++;
        else if (!enc_msg[0]) {
            char a[1500], b[1500];
            ids_to_str(a, sizeof a, want, n_want);
            ids_to_str(b, sizeof b, ids ? ids : want, st == OB_OK ? n_ids : 0);
            snprintf(enc_msg, sizeof enc_msg, "line %d \"%.200s\": want [%s] got [%s] (status %d)", lines, text, a, b, st);
        }
        for (size_t i = 0; i < n_want; i++) {
            if (want[i] == tok->unk_id) { with_unk++; break; }
        }
        /* normalized text: independent computation vs the library's normalizer */
        char *norm = (char *)malloc(3 * text_n + 16), *lib_norm_text = NULL;
        size_t norm_n = 0;
        ob__tok_buf lib;
        memset(&lib, 0, sizeof lib);
        ob__tok_normalize(&tok->priv->norm, tok->priv->ud, (const uint8_t *)text, text_n, &lib);
        /* the library's form with U+2581 turned back into spaces */
        lib_norm_text = (char *)malloc(lib.n + 1);
        size_t ln = 0;
        for (size_t i = 0; i < lib.n;) {
            if (i + 3 <= lib.n && memcmp(lib.p + i, "\xE2\x96\x81", 3) == 0) { lib_norm_text[ln++] = ' '; i += 3; }
            else lib_norm_text[ln++] = lib.p[i++];
        }
        if (simple_normalize(text, text_n, norm, &norm_n) != 0) {
            non_ascii++;
            memcpy(norm, lib_norm_text, ln);
            norm_n = ln;
        }
        if (ln == norm_n && memcmp(lib_norm_text, norm, ln) == 0) norm_ok++;
        else if (!norm_msg[0])
            snprintf(norm_msg, sizeof norm_msg, "line %d: \"%.300s\" normalized by the library to \"%.*s\"", lines, text,
                     (int)(ln < 300 ? ln : 300), lib_norm_text);
        /* decode */
        char *expect = (char *)malloc(5 * norm_n + 16);
        size_t expect_n = expected_decode(tok, norm, norm_n, expect);
        if (!tok->byte_fallback) {
            size_t runs = 0;
            for (size_t i = 0; i < n_want; i++) runs += want[i] == tok->unk_id;
            size_t unk_chars = 0;
            for (size_t i = 0; i < norm_n; i++) {
                char piece[4];
                if (norm[i] == ' ') memcpy(piece, "\xE2\x96\x81", 4);
                else { piece[0] = norm[i]; piece[1] = 0; }
                unk_chars += ob_tokenizer_piece_to_id(tok, piece) < 0;
            }
            if (unk_chars > runs) unk_runs_merged++;
        }
        char *dec = NULL;
        size_t dec_n = 0;
        st = ob_tokenizer_decode(tok, want, n_want, &dec, &dec_n);
        if (st == OB_OK && dec_n == expect_n && memcmp(dec, expect, dec_n) == 0) dec_ok++;
        else if (!dec_msg[0])
            snprintf(dec_msg, sizeof dec_msg, "line %d: want \"%.300s\" got \"%.300s\" (status %d)", lines, expect, dec ? dec : "", st);
        free(dec);
        free(expect);
        free(norm);
        free(lib_norm_text);
        free(lib.p);
        free(ids);
        line = eol + 1;
    }
    free(buf);
    if (lines > 0 && enc_ok == lines && !enc_msg[0])
        pass(name_enc, "%d/%d lines reproduce the SentencePiece ids, with the per-word and single-queue merge loops (%d lines contain <unk>)", enc_ok, lines, with_unk);
    else
        fail(name_enc, "%d/%d lines match; first mismatch: %s", enc_ok, lines, enc_msg);
    if (lines > 0 && norm_ok == lines)
        pass(name_norm, "%d/%d lines: library normalizer = trim + collapse whitespace (%d non-ASCII lines)", norm_ok, lines, non_ascii);
    else
        fail(name_norm, "%d/%d lines; first mismatch: %s", norm_ok, lines, norm_msg);
    if (lines > 0 && dec_ok == lines)
        pass(name_dec, "%d/%d lines decode to the normalized text%s (%d lines have runs of unknown characters merged)", dec_ok, lines,
             tok->byte_fallback ? "" : ", runs of unknown characters as \" \xE2\x81\x87 \"", unk_runs_merged);
    else
        fail(name_dec, "%d/%d lines; first mismatch: %s", dec_ok, lines, dec_msg);
}

/* ---- BPB tables ---- */

static void check_bpb(const char *tag, const ob_tokenizer *tok, const char *shard_rel, long long targets, long long bytes,
                      long long targets_1k, long long bytes_1k) {
    char name[64], path[1200], why[1400];
    snprintf(name, sizeof name, "bpb_%s", tag);
    data_path(path, sizeof path, shard_rel);
    if (!file_exists(path)) { skip(name, "%s not found", path); return; }
    shard s;
    if (read_shard(path, &s, why, sizeof why)) { fail(name, "%s", why); return; }
    int table = tok->vocab_size + 7;
    int16_t *base = (int16_t *)malloc((size_t)table * sizeof(int16_t));
    uint8_t *lead = (uint8_t *)malloc((size_t)table), *bound = (uint8_t *)malloc((size_t)table);
    int st = ob_tokenizer_bpb_tables(tok, table, base, lead, bound);
    long long total = 0, total_1k = 0, n_targets = s.n ? (long long)s.n - 1 : 0;
    for (size_t t = 1; t < s.n; t++) {
        int x = s.tok[t - 1], y = s.tok[t];
        total += base[y] + (lead[y] && !bound[x]);
        if ((long long)t <= targets_1k) total_1k += base[y] + (lead[y] && !bound[x]);
    }
    int extra_ok = bound[table - 1] == 1 && base[table - 1] == 0 && lead[table - 1] == 0;
    int small = ob_tokenizer_bpb_tables(tok, tok->vocab_size - 1, base, lead, bound);
    if (st == OB_OK && n_targets == targets && total == bytes && total_1k == bytes_1k && extra_ok && small != OB_OK)
        pass(name, "%lld targets -> %lld bytes, first %lld targets -> %lld bytes (as README)", n_targets, total, targets_1k, total_1k);
    else
        fail(name, "status %d: %lld targets -> %lld bytes (want %lld -> %lld), first %lld -> %lld (want %lld), padding ok %d, short table refused %d",
             st, n_targets, total, targets, bytes, targets_1k, total_1k, bytes_1k, extra_ok, small != OB_OK);
    free(base);
    free(lead);
    free(bound);
    free(s.tok);
}

/* ---- decode the documents of shards and encode them again ----
 * Text comes from decoding src's shards (the 8192 model's byte fallback makes that lossless), is
 * encoded with dst, and must give dst's shard ids document by document (both shard sets hold the
 * same documents in the same order). With src == dst this is a decode/encode roundtrip. Shards of
 * one set are concatenated first: the exporter splits documents across shard boundaries. */

static int read_shards(const char *name, const char *const *rels, int n, shard *out) {
    char path[1200], why[1400];
    out->tok = NULL;
    out->n = 0;
    for (int k = 0; k < n; k++) {
        shard s;
        data_path(path, sizeof path, rels[k]);
        if (!file_exists(path)) { skip(name, "%s not found", path); free(out->tok); return -1; }
        if (read_shard(path, &s, why, sizeof why)) { fail(name, "%s", why); free(out->tok); return -1; }
        out->tok = (uint16_t *)realloc(out->tok, (out->n + s.n + 1) * sizeof(uint16_t));
        memcpy(out->tok + out->n, s.tok, s.n * sizeof(uint16_t));
        out->n += s.n;
        free(s.tok);
    }
    return 0;
}

static void check_reencode(const char *name, const ob_tokenizer *src, const char *const *src_rels, const ob_tokenizer *dst,
                           const char *const *dst_rels, int n_shards) {
    long long docs = 0, docs_ok = 0, docs_unk = 0, tokens = 0, text_bytes = 0;
    double t_enc = 0, t_dec = 0;
    char msg[2048] = "";
    shard s, d;
    if (read_shards(name, src_rels, n_shards, &s)) return;
    if (read_shards(name, dst_rels, n_shards, &d)) { free(s.tok); return; }
    int32_t *sdoc = (int32_t *)malloc((s.n + 1) * sizeof(int32_t)), *ddoc = (int32_t *)malloc((d.n + 1) * sizeof(int32_t));
    size_t i = 0, j = 0;
    while (i < s.n && !msg[0]) {
        if (s.tok[i] != 1 || j >= d.n || d.tok[j] != 1) {
            snprintf(msg, sizeof msg, "documents do not line up (token %zu / %zu)", i, j);
            break;
        }
        size_t ns = 0, nd = 0;
        for (i++; i < s.n && s.tok[i] != 1;) sdoc[ns++] = s.tok[i++];
        for (j++; j < d.n && d.tok[j] != 1;) ddoc[nd++] = d.tok[j++];
        docs++;
        int has_unk = 0;
        for (size_t q = 0; q < ns; q++) has_unk |= sdoc[q] == src->unk_id;
        if (has_unk && !src->byte_fallback) { docs_unk++; continue; } /* " ⁇ " is not the original text */
        char *text = NULL;
        size_t text_n = 0;
        double t0 = now_s();
        int st = ob_tokenizer_decode(src, sdoc, ns, &text, &text_n);
        double t1 = now_s();
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (st == OB_OK) st = ob_tokenizer_encode(dst, text, text_n, &ids, &n_ids);
        double t2 = now_s();
        t_dec += t1 - t0;
        t_enc += t2 - t1;
        tokens += (long long)nd;
        text_bytes += (long long)text_n;
        if (st == OB_OK && n_ids == nd && (nd == 0 || memcmp(ids, ddoc, nd * sizeof(int32_t)) == 0)) docs_ok++;
        else if (!msg[0]) {
            size_t q = 0;
            while (q < nd && q < n_ids && ids[q] == ddoc[q]) q++;
            snprintf(msg, sizeof msg, "doc %lld: first difference at token %zu of %zu (got %zu ids, status %d)", docs, q, nd, n_ids, st);
        }
        free(text);
        free(ids);
    }
    if (!msg[0] && j != d.n) snprintf(msg, sizeof msg, "%s has more documents than %s", dst_rels[0], src_rels[0]);
    free(sdoc);
    free(ddoc);
    free(s.tok);
    free(d.tok);
    if (!msg[0] && docs_ok == docs - docs_unk && docs_ok > 0)
        pass(name, "%lld/%lld documents encode to the shard's ids (%lld skipped), %lld tokens, %.1f MB text; encode %.0f ms (%.1f MB/s), decode %.0f ms",
             docs_ok, docs, docs_unk, tokens, text_bytes / 1e6, t_enc * 1e3, text_bytes / 1e6 / (t_enc > 0 ? t_enc : 1e-9), t_dec * 1e3);
    else
        fail(name, "%lld/%lld documents ok (%lld skipped): %s", docs_ok, docs, docs_unk, msg);
}

/* ---- unit checks on the charsmap and on byte fallback / unknown handling ---- */

static int norm_is(const ob_tokenizer *tok, const char *in, const char *want) {
    ob__tok_buf b;
    memset(&b, 0, sizeof b);
    ob__tok_normalize(&tok->priv->norm, tok->priv->ud, (const uint8_t *)in, strlen(in), &b);
    int ok = b.n == strlen(want) && (b.n == 0 || memcmp(b.p, want, b.n) == 0);
    free(b.p);
    return ok;
}

static void check_nfkc(const ob_tokenizer *tok) {
    /* Unicode NFKC facts plus nmt_nfkc's whitespace/control rules; "\xE2\x96\x81" is U+2581 */
    static const char *const cases[][2] = {
        {"\xEF\xAC\x81", "fi"},                          /* U+FB01 ligature */
        {"\xEF\xBC\xA1\xEF\xBC\xA2", "AB"},              /* fullwidth */
        {"\xE2\x91\xA0", "1"},                           /* circled digit one */
        {"a\xC2\xA0" "b", "a\xE2\x96\x81" "b"},          /* no-break space */
        {"e\xCC\x81", "\xC3\xA9"},                       /* e + combining acute -> composed */
        {"\xE2\x80\xA6", "..."},                         /* ellipsis */
        {"\xE2\x84\xA2", "TM"},                          /* trade mark */
        {"a\tb\nc\r\nd", "a\xE2\x96\x81" "b\xE2\x96\x81" "c\xE2\x96\x81" "d"},
        {"a\x01" "b", "ab"},                             /* control characters dropped */
        {"  a   b  ", "a\xE2\x96\x81" "b"},
        {"\xE3\x80\x80x", "x"},                          /* ideographic space at the start */
        {"\xFF" "a", "\xEF\xBF\xBD" "a"},                /* malformed UTF-8 -> U+FFFD */
        {"\xC3\xA9", "\xC3\xA9"},                        /* already NFC: unchanged */
        {"", ""},
        {" \t\n ", ""},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++)
        if (!norm_is(tok, cases[i][0], cases[i][1])) {
            fail("nfkc_charsmap", "case %d: \"%s\" did not normalize to \"%s\"", i, cases[i][0], cases[i][1]);
            return;
        }
    pass("nfkc_charsmap", "%d cases: ligatures, fullwidth, circled digits, NBSP, composition, tabs/newlines, controls, U+FFFD", n);
}

static int encode_is(const ob_tokenizer *tok, const char *text, const int32_t *want, size_t n_want, char *msg, size_t cap) {
    int32_t *ids = NULL;
    size_t n = 0;
    int st = ob_tokenizer_encode(tok, text, strlen(text), &ids, &n);
    int ok = st == OB_OK && n == n_want && (n == 0 || memcmp(ids, want, n * sizeof(int32_t)) == 0);
    if (!ok) {
        char a[512], b[512];
        ids_to_str(a, sizeof a, want, n_want);
        ids_to_str(b, sizeof b, ids ? ids : want, st == OB_OK ? n : 0);
        snprintf(msg, cap, "\"%s\": want [%s] got [%s]", text, a, b);
    }
    free(ids);
    return ok;
}

static void check_unknowns(const ob_tokenizer *t1k, const ob_tokenizer *t8k) {
    char msg[1200] = "";
    int ok = 1;
    if (t8k) {
        /* U+1F600 is not a piece of the 8192 model: its four UTF-8 bytes become <0xF0><0x9F><0x98><0x80> */
        int32_t smile = ob_tokenizer_piece_to_id(t8k, "\xF0\x9F\x98\x80");
        int32_t want[4] = {4 + 0xF0, 4 + 0x9F, 4 + 0x98, 4 + 0x80};
        ok = smile < 0 && encode_is(t8k, "\xF0\x9F\x98\x80", want, 4, msg, sizeof msg);
        if (ok) {
            char *text = NULL;
            size_t n = 0;
            ob_tokenizer_decode(t8k, want, 4, &text, &n);
            ok = text && n == 4 && memcmp(text, "\xF0\x9F\x98\x80", 4) == 0;
            if (!ok) snprintf(msg, sizeof msg, "byte pieces did not decode to the raw bytes");
            free(text);
        }
    }
    if (ok && t1k) {
        /* two adjacent unknown characters are one <unk>; separated by a known one they are two */
        int32_t a = ob_tokenizer_piece_to_id(t1k, "a");
        int32_t w1[3] = {a, 3, a};
        int32_t w2[5] = {a, 3, a, 3, a};
        ok = a >= 0 && encode_is(t1k, "a\xF0\x9F\x98\x80\xF0\x9F\x98\x80" "a", w1, 3, msg, sizeof msg) &&
             encode_is(t1k, "a\xF0\x9F\x98\x80" "a\xF0\x9F\x98\x80" "a", w2, 5, msg, sizeof msg);
        if (ok) {
            char *text = NULL;
            size_t n = 0;
            ob_tokenizer_decode(t1k, w1, 3, &text, &n);
            ok = text && strcmp(text, "a \xE2\x81\x87 a") == 0;
            if (!ok) snprintf(msg, sizeof msg, "decode of a <unk> a gave \"%s\"", text ? text : "");
            free(text);
        }
    }
    if (ok) {
        /* SentencePiece drops the U+2581 of leading pieces while the output is still empty (these
         * models set remove_extra_whitespaces), and control pieces produce nothing */
        const ob_tokenizer *t = t8k ? t8k : t1k;
        if (t) {
            int32_t the = ob_tokenizer_piece_to_id(t, "\xE2\x96\x81the"), sp = ob_tokenizer_piece_to_id(t, "\xE2\x96\x81");
            int32_t ids[5] = {1, sp, the, the, 2};
            char *text = NULL;
            size_t n = 0;
            ob_tokenizer_decode(t, ids, 5, &text, &n);
            ok = text && strcmp(text, "the the") == 0;
            if (!ok) snprintf(msg, sizeof msg, "decode of <s> \xE2\x96\x81 \xE2\x96\x81the \xE2\x96\x81the </s> gave \"%s\"", text ? text : "");
            free(text);
        }
    }
    if (!t1k && !t8k) skip("unknown_and_bytes", "no model");
    else if (ok) pass("unknown_and_bytes", "byte fallback <0xNN> (8192), runs of unknowns -> one <unk> (1024), leading U+2581 and control pieces on decode");
    else fail("unknown_and_bytes", "%s", msg);
}

static void check_edges(const ob_tokenizer *tok) {
    int32_t *ids = NULL;
    size_t n = 7;
    int ok = 1;
    char msg[256] = "";
    if (ob_tokenizer_encode(tok, NULL, 0, &ids, &n) != OB_OK || n != 0 || !ids) { ok = 0; snprintf(msg, sizeof msg, "NULL/0 text"); }
    free(ids);
    ids = NULL;
    if (ok && (ob_tokenizer_encode(tok, " \t\n  ", 5, &ids, &n) != OB_OK || n != 0)) { ok = 0; snprintf(msg, sizeof msg, "whitespace-only text"); }
    free(ids);
    ids = NULL;
    char nul_text[3] = {'a', 0, 'b'};
    if (ok && (ob_tokenizer_encode(tok, nul_text, 3, &ids, &n) != OB_OK || n < 3)) { ok = 0; snprintf(msg, sizeof msg, "text with a NUL"); }
    free(ids);
    ids = NULL;
    char *text = NULL;
    if (ok && (ob_tokenizer_decode(tok, NULL, 0, &text, NULL) != OB_OK || !text || text[0])) { ok = 0; snprintf(msg, sizeof msg, "decode of nothing"); }
    free(text);
    if (ok) pass("encode_edges", "empty text, whitespace-only text, embedded NUL, empty decode");
    else fail("encode_edges", "%s", msg);
}

/* A single 1 MB line, and 1 MB without any space (the worst case for the merge queue). */
static void check_long_line(const ob_tokenizer *tok, const char *tag) {
    char name[64];
    snprintf(name, sizeof name, "long_line_%s", tag);
    const char *phrase = "Abdication \\Ab`di*ca\"tion\\, n. [L. abdicatio: cf. F. abdication.] The act of abdicating; ";
    size_t plen = strlen(phrase), n = 1 << 20;
    char *a = (char *)malloc(n + 1), *b = (char *)malloc(n + 1);
    for (size_t i = 0; i < n; i++) { a[i] = phrase[i % plen]; b[i] = "abcdefghij"[(i * 7 + i / 13) % 10]; }
    int32_t *ids = NULL;
    size_t n_ids = 0, n_ids2 = 0;
    double t0 = now_s();
    int st = ob_tokenizer_encode(tok, a, n, &ids, &n_ids);
    double t1 = now_s();
    char *text = NULL;
    size_t text_n = 0;
    if (st == OB_OK) st = ob_tokenizer_decode(tok, ids, n_ids, &text, &text_n);
    int ok = st == OB_OK;
    /* no unknowns in the 8192 model, so the text comes back (trailing space trimmed) */
    if (ok && tok->byte_fallback) {
        size_t want = n;
        while (want && a[want - 1] == ' ') want--;
        ok = text_n == want && memcmp(text, a, want) == 0;
    }
    free(ids);
    ids = NULL;
    free(text);
    double t2 = now_s();
    if (ok) ok = ob_tokenizer_encode(tok, b, n, &ids, &n_ids2) == OB_OK;
    double t3 = now_s();
    free(ids);
    free(a);
    free(b);
    if (ok) pass(name, "1 MiB line: %zu ids in %.0f ms; 1 MiB without spaces: %zu ids in %.0f ms", n_ids, (t1 - t0) * 1e3, n_ids2, (t3 - t2) * 1e3);
    else fail(name, "status %d: %s", st, ob_last_error());
}

/* ---- malformed models ---- */

static int expect_refused(const uint8_t *data, size_t size, const char *name, char *msg, size_t cap) {
    ob_tokenizer tok;
    ob_set_error(OB_OK, "%s", "");
    int st = ob_tokenizer_load_bytes(&tok, data, size, name);
    const char *err = ob_last_error();
    if (st == OB_OK) {
        snprintf(msg, cap, "%s: loaded (vocab %d)", name, tok.vocab_size);
        ob_tokenizer_free(&tok);
        return 0;
    }
    if (!strstr(err, name)) {
        snprintf(msg, cap, "%s: message does not name the file: \"%s\"", name, err);
        return 0;
    }
    if (tok.vocab_size != 0 || tok.pieces || tok.priv) {
        snprintf(msg, cap, "%s: tokenizer not left empty", name);
        return 0;
    }
    return 1;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

/* a tiny valid BPE model: <unk>, <s>, </s>, a, b, ab (plus optional extra bytes appended) */
static size_t tiny_model(uint8_t *out, int with_unk, int model_type, int dup) {
    const char *pieces[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "a"};
    int types[] = {2, 3, 3, 1, 1, 1, 1};
    int np = dup ? 7 : 6;
    size_t k = 0;
    for (int i = 0; i < np; i++) {
        if (!with_unk && i == 0) continue;
        uint8_t sp[64];
        size_t m = 0, len = strlen(pieces[i]);
        sp[m++] = 0x0A;
        m += put_varint(sp + m, len);
        memcpy(sp + m, pieces[i], len);
        m += len;
        sp[m++] = 0x15; /* score, fixed32 */
        float score = -(float)i;
        memcpy(sp + m, &score, 4);
        m += 4;
        sp[m++] = 0x18;
        sp[m++] = (uint8_t)types[i];
        out[k++] = 0x0A;
        k += put_varint(out + k, m);
        memcpy(out + k, sp, m);
        k += m;
    }
    out[k++] = 0x12; /* trainer_spec { model_type } */
    out[k++] = 2;
    out[k++] = 0x18;
    out[k++] = (uint8_t)model_type;
    return k;
}

static void check_malformed(void) {
    char msg[1024] = "";
    int ok = 1, cases = 0;
    uint8_t buf[4096];
    /* A valid tiny model without a normalizer_spec takes the proto defaults: add_dummy_prefix, so
     * "abab" is "▁abab" and the unknown "▁" is <unk>; decode shows it as " ⁇ ". With
     * add_dummy_prefix false it is [ab ab]. */
    size_t n = tiny_model(buf, 1, 2, 0);
    ob_tokenizer tok;
    int st = ob_tokenizer_load_bytes(&tok, buf, n, "tiny.model");
    if (st != OB_OK) { ok = 0; snprintf(msg, sizeof msg, "tiny valid model refused: %.900s", ob_last_error()); }
    else {
        int32_t want[3] = {0, 5, 5};
        char *text = NULL;
        ok = encode_is(&tok, "abab", want, 3, msg, sizeof msg) && ob_tokenizer_decode(&tok, want, 3, &text, NULL) == OB_OK &&
             strcmp(text, " \xE2\x81\x87 abab") == 0;
        if (ok) { /* ab > a + b, and unknown "c" next to the unknown prefix is merged into one <unk> */
            int32_t w2[5] = {0, 3, 5, 0, 4};
            ok = encode_is(&tok, "cc aab cb", w2, 5, msg, sizeof msg);
        }
        free(text);
        ob_tokenizer_free(&tok);
    }
    ob_tokenizer_free(&tok); /* twice: must be harmless */
    if (ok) {
        buf[n++] = 0x1A; /* normalizer_spec { add_dummy_prefix: false } */
        buf[n++] = 0x02;
        buf[n++] = 0x18;
        buf[n++] = 0x00;
        st = ob_tokenizer_load_bytes(&tok, buf, n, "tiny_nodummy.model");
        int32_t want[2] = {5, 5};
        ok = st == OB_OK && encode_is(&tok, "abab", want, 2, msg, sizeof msg);
        ob_tokenizer_free(&tok);
        n -= 4;
    }
    cases++;
    if (ok) { ok = expect_refused(buf, 0, "empty.model", msg, sizeof msg); cases++; }
    if (ok) { n = tiny_model(buf, 0, 2, 0); ok = expect_refused(buf, n, "no_unk.model", msg, sizeof msg); cases++; }
    if (ok) { n = tiny_model(buf, 1, 1, 0); ok = expect_refused(buf, n, "unigram.model", msg, sizeof msg); cases++; }
    if (ok) { n = tiny_model(buf, 1, 2, 1); ok = expect_refused(buf, n, "duplicate.model", msg, sizeof msg); cases++; }
    if (ok) { n = tiny_model(buf, 1, 2, 0) - 4; ok = expect_refused(buf, n, "no_trainer.model", msg, sizeof msg); cases++; }
    if (ok) { /* zero pieces: only a trainer_spec and a normalizer_spec */
        const uint8_t zero[] = {0x12, 0x02, 0x18, 0x02, 0x1A, 0x02, 0x18, 0x00};
        ok = expect_refused(zero, sizeof zero, "zero_pieces.model", msg, sizeof msg);
        cases++;
    }
    if (ok) { /* a length field that runs past the end */
        const uint8_t past[] = {0x0A, 0xE8, 0x07, 0x0A, 0x01, 0x61};
        ok = expect_refused(past, sizeof past, "past_end.model", msg, sizeof msg);
        cases++;
    }
    if (ok) { /* a piece whose string length runs past its message */
        const uint8_t bad[] = {0x0A, 0x04, 0x0A, 0x09, 0x61, 0x62, 0x12, 0x02, 0x18, 0x02};
        ok = expect_refused(bad, sizeof bad, "bad_piece_offset.model", msg, sizeof msg);
        cases++;
    }
    if (ok) { /* garbage */
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (int rep = 0; rep < 20 && ok; rep++) {
            for (size_t i = 0; i < sizeof buf; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; buf[i] = (uint8_t)x; }
            char nm[64];
            snprintf(nm, sizeof nm, "garbage%d.model", rep);
            ok = expect_refused(buf, 64 + 200 * (size_t)rep, nm, msg, sizeof msg);
            cases++;
        }
    }
    if (ok) { /* a missing file */
        ob_tokenizer t2;
        st = ob_tokenizer_load(&t2, "/nonexistent/dir/missing.model");
        if (st == OB_OK || !strstr(ob_last_error(), "missing.model")) { ok = 0; snprintf(msg, sizeof msg, "missing file: %s", ob_last_error()); }
        cases++;
    }
    if (ok) { /* an empty file on disk */
        char tmpl[] = "/tmp/ob_tok_empty_XXXXXX";
        int fd = mkstemp(tmpl);
        if (fd >= 0) {
            close(fd);
            ob_tokenizer t2;
            st = ob_tokenizer_load(&t2, tmpl);
            if (st == OB_OK || !strstr(ob_last_error(), tmpl)) { ok = 0; snprintf(msg, sizeof msg, "empty file: %s", ob_last_error()); }
            remove(tmpl);
            cases++;
        }
    }
    if (ok)
        pass("malformed_models", "%d synthetic inputs refused with the name in the message (empty, garbage, length past end, bad piece offset, zero pieces, no <unk>, unigram, duplicate, no trainer_spec, missing and empty files)",
             cases - 1);
    else
        fail("malformed_models", "%s", msg);
}

/* Cuts of the real models, all inside a field (a cut between two fields can be a valid message). */
static void check_truncated(void) {
    const char *models[2] = {"fineweb_1024_bpe.model", "fineweb_8192_bpe.model"};
    char msg[1024] = "", path[1200];
    int ok = 1, cases = 0;
    for (int m = 0; m < 2 && ok; m++) {
        data_path(path, sizeof path, models[m]);
        size_t size = 0;
        char *data = slurp(path, &size);
        if (!data) {
            skip("truncated_models", "%s not found", path);
            return;
        }
        size_t cuts[] = {1, 2, 3, 7, 100, 1000, 4097, size / 3, size / 2, size - 240100, size - 1000, size - 2, size - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0] && ok; c++) {
            if (cuts[c] == 0 || cuts[c] >= size) continue;
            char nm[128];
            snprintf(nm, sizeof nm, "%s[:%zu]", models[m], cuts[c]);
            ok = expect_refused((const uint8_t *)data, cuts[c], nm, msg, sizeof msg);
            cases++;
        }
        free(data);
    }
    if (ok) pass("truncated_models", "%d truncations of the two real models refused with the name in the message", cases);
    else fail("truncated_models", "%s", msg);
}

/* ---- byte tokenizer ---- */

static void check_bytes(void) {
    ob_tokenizer tok;
    ob_tokenizer_init_bytes(&tok);
    int ok = tok.vocab_size == 256 && tok.unk_id == -1 && tok.bos_id == -1 && tok.byte_fallback == 0;
    char msg[256] = "";
    if (!ok) snprintf(msg, sizeof msg, "vocab %d unk %d bos %d", tok.vocab_size, tok.unk_id, tok.bos_id);
    uint64_t x = 88172645463325252ull;
    for (int rep = 0; rep < 50 && ok; rep++) {
        size_t n = (size_t)rep * 97;
        char *data = (char *)malloc(n + 1);
        for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; data[i] = (char)(x >> 11); }
        if (rep == 1) memset(data, 0, n);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        char *back = NULL;
        size_t back_n = 0;
        ok = ob_tokenizer_encode(&tok, data, n, &ids, &n_ids) == OB_OK && n_ids == n;
        for (size_t i = 0; ok && i < n; i++) ok = ids[i] == (uint8_t)data[i];
        if (ok) ok = ob_tokenizer_decode(&tok, ids, n_ids, &back, &back_n) == OB_OK && back_n == n && memcmp(back, data, n) == 0 && back[n] == 0;
        if (!ok) snprintf(msg, sizeof msg, "roundtrip of %zu random bytes failed", n);
        free(ids);
        free(back);
        free(data);
    }
    int16_t base[300];
    uint8_t lead[300], bound[300];
    if (ok) {
        ok = ob_tokenizer_bpb_tables(&tok, 300, base, lead, bound) == OB_OK;
        for (int i = 0; ok && i < 300; i++)
            ok = i < 256 ? (base[i] == 1 && !lead[i] && !bound[i]) : (base[i] == 0 && !lead[i] && bound[i]);
        if (!ok) snprintf(msg, sizeof msg, "bpb tables wrong");
    }
    if (ok) ok = ob_tokenizer_piece_to_id(&tok, "A") == 65 && ob_tokenizer_piece_to_id(&tok, "AB") == -1;
    ob_tokenizer_free(&tok);
    if (ok) pass("byte_tokenizer", "50 random buffers (0..4753 bytes, one all-NUL) roundtrip; tables: 1 byte each");
    else fail("byte_tokenizer", "%s", msg);
}

static void check_decode_range(const ob_tokenizer *sp) {
    ob_tokenizer bytes;
    ob_tokenizer_init_bytes(&bytes);
    const ob_tokenizer *toks[2] = {&bytes, sp};
    int ok = 1, checked = 0;
    char msg[512] = "";
    for (int t = 0; t < 2 && ok; t++) {
        if (!toks[t]) continue;
        int32_t bad[3] = {-1, toks[t]->vocab_size, 0x7FFFFFFF};
        for (int k = 0; k < 3 && ok; k++) {
            int32_t ids[3] = {5, bad[k], 6};
            char *text = (char *)"x";
            size_t n = 99;
            int st = ob_tokenizer_decode(toks[t], ids, 3, &text, &n);
            ok = st == OB_ERR_ARG && text == NULL && strstr(ob_last_error(), "outside the vocabulary");
            if (!ok) snprintf(msg, sizeof msg, "id %d: status %d, \"%.400s\"", (int)bad[k], st, ob_last_error());
            checked++;
        }
    }
    ob_tokenizer_free(&bytes);
    ob_tokenizer unloaded;
    memset(&unloaded, 0, sizeof unloaded);
    int32_t *ids = NULL;
    size_t n = 0;
    if (ok && ob_tokenizer_encode(&unloaded, "a", 1, &ids, &n) == OB_OK) { ok = 0; snprintf(msg, sizeof msg, "encode with an unloaded tokenizer succeeded"); }
    if (ok) pass("decode_out_of_range", "%d out-of-range ids refused with OB_ERR_ARG; an unloaded tokenizer is refused", checked);
    else fail("decode_out_of_range", "%s", msg);
}

int main(void) {
    const char *env = getenv("ONEBIT_SHARED");
    snprintf(g_shared, sizeof g_shared, "%s", env && *env ? env : "../shared");

    ob_tokenizer t1k, t8k;
    int have1k = load_model("load_sp1024", "fineweb_1024_bpe.model", &t1k) == 0;
    int have8k = load_model("load_sp8192", "fineweb_8192_bpe.model", &t8k) == 0;
    if (have1k) check_load("load_sp1024", &t1k, 1024, 0);
    if (have8k) check_load("load_sp8192", &t8k, 8192, 1);

    if (have1k) check_samples("sp1024", &t1k, "gcide_sp1024/encode_samples.tsv");
    else { skip("encode_samples_sp1024", "no model"); skip("normalize_samples_sp1024", "no model"); skip("decode_samples_sp1024", "no model"); }
    if (have8k) check_samples("sp8192", &t8k, "gcide_sp8192/encode_samples.tsv");
    else { skip("encode_samples_sp8192", "no model"); skip("normalize_samples_sp8192", "no model"); skip("decode_samples_sp8192", "no model"); }

    if (have1k) check_bpb("sp1024", &t1k, "gcide_sp1024/fineweb_val_000000.bin", 537363, 979251, 536576, 978002);
    else skip("bpb_sp1024", "no model");
    if (have8k) check_bpb("sp8192", &t8k, "gcide_sp8192/fineweb_val_000000.bin", 434763, 1041949, 434176, 1040744);
    else skip("bpb_sp8192", "no model");

    if (have8k) check_nfkc(&t8k);
    else if (have1k) check_nfkc(&t1k);
    else skip("nfkc_charsmap", "no model");
    check_unknowns(have1k ? &t1k : NULL, have8k ? &t8k : NULL);

    const char *val1k[1] = {"gcide_sp1024/fineweb_val_000000.bin"};
    const char *val8k[1] = {"gcide_sp8192/fineweb_val_000000.bin"};
    if (have8k) check_reencode("reencode_val_sp8192", &t8k, val8k, &t8k, val8k, 1);
    else skip("reencode_val_sp8192", "no model");
    if (have1k && have8k) check_reencode("reencode_val_sp1024", &t8k, val8k, &t1k, val1k, 1);
    else skip("reencode_val_sp1024", "needs both models (the text comes from the lossless 8192 shard)");
    const char *bench = getenv("ONEBIT_TOK_BENCH");
    if (bench && *bench && strcmp(bench, "0") != 0) {
        const char *tr1k[2] = {"gcide_sp1024/fineweb_train_000000.bin", "gcide_sp1024/fineweb_train_000001.bin"};
        const char *tr8k[2] = {"gcide_sp8192/fineweb_train_000000.bin", "gcide_sp8192/fineweb_train_000001.bin"};
        if (have8k) check_reencode("reencode_train_sp8192", &t8k, tr8k, &t8k, tr8k, 2);
        if (have1k && have8k) check_reencode("reencode_train_sp1024", &t8k, tr8k, &t1k, tr1k, 2);
    }

    if (have1k) check_long_line(&t1k, "sp1024");
    else skip("long_line_sp1024", "no model");
    if (have8k) check_long_line(&t8k, "sp8192");
    else skip("long_line_sp8192", "no model");
    if (have8k) check_edges(&t8k);
    else skip("encode_edges", "no model");

    check_malformed();
    check_truncated();
    check_bytes();
    check_decode_range(have8k ? &t8k : NULL);

    if (have1k) ob_tokenizer_free(&t1k);
    if (have8k) ob_tokenizer_free(&t8k);
    printf("%s\n", g_failures ? "SOME CHECKS FAILED" : "all checks passed");
    return g_failures ? 1 : 0;
}
