/* Data and evaluation: shard validation, the seeds' token stream and distributed loader, the
 * validation cut, the bits-per-byte byte counts of the real shards through the evaluation path,
 * sliding-window coverage, and bounded memory over a 62M-token validation set. */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"
#include "test_util.h"
#include <sys/stat.h>

static const char *TMP = "/tmp/onebit_test_data";

static void write_raw(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
}

/* A shard whose token i is (base + i) mod 65536. */
static void make_shard(const char *path, size_t n, unsigned base) {
    uint16_t *t = (uint16_t *)malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)((base + i) & 0xFFFF);
    ob_shard_write(path, t, n);
    free(t);
}

static void test_malformed_shards(void) {
    char p[512];
    mkdir(TMP, 0755);
    int32_t hdr[256];
    memset(hdr, 0, sizeof hdr);
    uint8_t buf[1024 + 64];
    struct { const char *name, *expect; int magic, version, count; size_t size; } cases[] = {
        {"short", "shorter than the", 20240520, 1, 10, 100},
        {"magic", "magic 12345", 12345, 1, 10, 1024 + 20},
        {"version", "version 2", 20240520, 2, 10, 1024 + 20},
        {"truncated", "header says 30 tokens", 20240520, 1, 30, 1024 + 20},
        {"trailing", "after the 5 tokens", 20240520, 1, 5, 1024 + 20},
    };
    int ok = 0, n = (int)(sizeof cases / sizeof *cases);
    char detail[1024] = "";
    for (int i = 0; i < n; i++) {
        hdr[0] = cases[i].magic; hdr[1] = cases[i].version; hdr[2] = cases[i].count;
        memset(buf, 0, sizeof buf);
        memcpy(buf, hdr, sizeof hdr < cases[i].size ? sizeof hdr : cases[i].size);
        snprintf(p, sizeof p, "%s/bad_%s.bin", TMP, cases[i].name);
        write_raw(p, buf, cases[i].size);
        ob_shard s;
        int r = ob_shard_open(&s, p);
        if (r == OB_ERR_FORMAT && strstr(ob_last_error(), p) && strstr(ob_last_error(), cases[i].expect)) ok++;
        else snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [%s: %d %s]", cases[i].name, r, ob_last_error());
        if (!r) ob_shard_close(&s);
    }
    /* an out-of-range token is found when it is read, with its file and offset */
    uint16_t toks[8] = {1, 2, 3, 4, 1500, 6, 7, 8};
    mkdir("/tmp/onebit_test_data/oor", 0755);
    ob_shard_write("/tmp/onebit_test_data/oor/fineweb_train_000000.bin", toks, 8);
    ob_token_stream st;
    int32_t out[8];
    int r = ob_token_stream_open(&st, "/tmp/onebit_test_data/oor", "fineweb_train_", 1024);
    if (!r) { r = ob_token_stream_take(&st, out, 8); ob_token_stream_close(&st); }
    if (r == OB_ERR_FORMAT && strstr(ob_last_error(), "token 1500 at index 4") && strstr(ob_last_error(), "fineweb_train_000000.bin")) ok++;
    else snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [oor: %s]", ob_last_error());
    r = ob_token_stream_open(&st, "/tmp/onebit_test_data/none", "fineweb_train_", 1024);
    if (r == OB_ERR_IO && strstr(ob_last_error(), "none")) ok++;
    TU_CHECK(ok == n + 2, "shard_errors", "%d of %d malformed inputs refused with their own message naming the file%s", ok, n + 2, detail);
}

static void test_stream_wrap(void) {
    /* three shards of 5, 0 and 7 tokens: take(4) x 5 crosses both ends and wraps */
    char d[256], p[600];
    snprintf(d, sizeof d, "%s/wrap", TMP);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/fineweb_train_000000.bin", d); make_shard(p, 5, 0);
    snprintf(p, sizeof p, "%s/fineweb_train_000001.bin", d); make_shard(p, 0, 100);
    snprintf(p, sizeof p, "%s/fineweb_train_000002.bin", d); make_shard(p, 7, 200);
    ob_token_stream st;
    int32_t got[20];
    int r = ob_token_stream_open(&st, d, "fineweb_train_", 0);
    for (int i = 0; i < 5 && !r; i++) r = ob_token_stream_take(&st, got + 4 * i, 4);
    ob_token_stream_close(&st);
    int32_t want[20] = {0, 1, 2, 3, 4, 200, 201, 202, 203, 204, 205, 206, 0, 1, 2, 3, 4, 200, 201, 202};
    TU_CHECK(!r && !memcmp(got, want, sizeof want), "stream_wrap", "20 tokens across a shard end, an empty shard and the wrap to the first shard%s%s", r ? ": " : "", r ? ob_last_error() : "");
}

/* The seed's next_batch, written out in the test: the stream yields world * (local + 1) tokens and
 * rank r takes its span; the stream position is shared. */
static void test_loader(const char *dir) {
    if (!dir) { tu_report("SKIP", "loader_slicing", "../shared is absent"); return; }
    char d[512];
    snprintf(d, sizeof d, "%s/data/gcide_sp1024", dir);
    const int64_t global = 65536;
    const int steps = 3;
    /* the raw stream, from the first shard */
    ob_shard sh;
    char p[600];
    snprintf(p, sizeof p, "%s/fineweb_train_000000.bin", d);
    if (ob_shard_open(&sh, p)) { tu_report("FAIL", "loader_slicing", "%s", ob_last_error()); return; }
    int worlds[2] = {1, 2}, accums[2] = {8, 4}, ok = 1, compared = 0;
    for (int wi = 0; wi < 2 && ok; wi++) {
        int world = worlds[wi], accum = accums[wi];
        int64_t local = global / (world * accum);
        for (int rank = 0; rank < world && ok; rank++) {
            ob_token_stream st;
            if (ob_token_stream_open(&st, d, "fineweb_train_", 1024)) { ok = 0; break; }
            int32_t *x = (int32_t *)malloc((size_t)local * 4), *y = (int32_t *)malloc((size_t)local * 4);
            size_t pos = 0;
            for (int s = 0; s < steps && ok; s++)
                for (int a = 0; a < accum && ok; a++) {
                    if (ob_loader_next(&st, global, world, rank, accum, x, y)) { ok = 0; break; }
                    size_t span0 = pos + (size_t)rank * (size_t)(local + 1);
                    for (int64_t i = 0; i < local; i++)
                        if (x[i] != sh.tokens[span0 + i] || y[i] != sh.tokens[span0 + i + 1]) { ok = 0; break; }
                    pos += (size_t)world * (size_t)(local + 1);
                    compared++;
                }
            free(x); free(y);
            ob_token_stream_close(&st);
        }
    }
    /* 8 micro-batches on one GPU = the 8 ranks of 8 GPUs, micro-batch m = rank m */
    int same8 = 1;
    {
        ob_token_stream a, b;
        ob_token_stream_open(&a, d, "fineweb_train_", 1024);
        int32_t *x1 = (int32_t *)malloc(8192 * 4), *y1 = (int32_t *)malloc(8192 * 4), *x8 = (int32_t *)malloc(8192 * 4), *y8 = (int32_t *)malloc(8192 * 4);
        for (int m = 0; m < 8; m++) {
            ob_loader_next(&a, global, 1, 0, 8, x1, y1);
            ob_token_stream_open(&b, d, "fineweb_train_", 1024);
            ob_loader_next(&b, global, 8, m, 1, x8, y8);
            ob_token_stream_close(&b);
            if (memcmp(x1, x8, 8192 * 4) || memcmp(y1, y8, 8192 * 4)) same8 = 0;
        }
        ob_token_stream_close(&a);
        free(x1); free(y1); free(x8); free(y8);
    }
    ob_shard_close(&sh);
    TU_CHECK(ok && same8, "loader_slicing", "%d micro-batches of the first 3 steps (world 1 / 8 micro-batches, world 2 / 4) equal the seed's slicing; micro-batch m of one GPU = rank m of eight", compared);
}

/* A scorer that returns zero loss: the evaluation then only counts targets and bytes. */
static int zero_scorer(void *ctx, const int32_t *x, const int32_t *y, int B, int T, float temperature, float *ce, float *lse) {
    (void)ctx; (void)x; (void)y; (void)temperature;
    memset(ce, 0, (size_t)B * T * sizeof(float));
    memset(lse, 0, (size_t)B * T * sizeof(float));
    return OB_OK;
}

static void test_bpb_bytes(const char *dir) {
    if (!dir) { tu_report("SKIP", "bpb_bytes_eval_path", "../shared is absent"); return; }
    struct { const char *set, *model; double t_all, b_all, t_cut, b_cut; } sets[] = {
        {"gcide_sp1024", "fineweb_1024_bpe.model", 537363, 979251, 536576, 978002},
        {"gcide_sp8192", "fineweb_8192_bpe.model", 434763, 1041949, 434176, 1040744},
    };
    for (int i = 0; i < 2; i++) {
        char d[512], m[512], name[128];
        snprintf(d, sizeof d, "%s/data/%s", dir, sets[i].set);
        snprintf(m, sizeof m, "%s/data/%s", dir, sets[i].model);
        snprintf(name, sizeof name, "bpb_bytes_%s", sets[i].set);
        ob_tokenizer tok;
        ob_bpb_tables tb;
        ob_val_set all, cut;
        ob_eval_result ra, rc;
        int r = ob_tokenizer_load(&tok, m);
        if (!r) r = ob_bpb_tables_init(&tb, &tok, tok.vocab_size);
        /* seq_len 1 keeps every target; 1024 is the seeds' cut */
        if (!r) r = ob_val_open(&all, d, "fineweb_val_", 1, 0, tok.vocab_size);
        if (!r) r = ob_eval_val(zero_scorer, NULL, &all, &tb, 1, 4096, 1.0f, 1, 1e-4f, 0, 1, &ra);
        if (!r) r = ob_val_open(&cut, d, "fineweb_val_", 1024, 0, tok.vocab_size);
        if (!r) r = ob_eval_val(zero_scorer, NULL, &cut, &tb, 1024, 8, 1.0f, 1, 1e-4f, 0, 1, &rc);
        TU_CHECK(!r && ra.targets == sets[i].t_all && ra.bytes == sets[i].b_all && rc.targets == sets[i].t_cut && rc.bytes == sets[i].b_cut, name,
                 "%.0f targets / %.0f bytes, cut to the seq-len-1024 multiple %.0f / %.0f (data/README.md: %.0f / %.0f, %.0f / %.0f)%s%s",
                 ra.targets, ra.bytes, rc.targets, rc.bytes, sets[i].t_all, sets[i].b_all, sets[i].t_cut, sets[i].b_cut, r ? ": " : "", r ? ob_last_error() : "");
        if (!r) { ob_val_close(&all); ob_val_close(&cut); ob_bpb_tables_free(&tb); }
        ob_tokenizer_free(&tok);
    }
}

/* Records how often each target index is scored (a target's value is its index: token i = i). */
typedef struct { int *hits; size_t n; } hit_ctx;
static int hit_scorer(void *ctx, const int32_t *x, const int32_t *y, int B, int T, float temperature, float *ce, float *lse) {
    (void)x; (void)temperature;
    memset(ce, 0, (size_t)B * T * sizeof(float));
    memset(lse, 0, (size_t)B * T * sizeof(float));
    /* mark every position with its target; the evaluator only counts the positions it scores, so the
     * counts come from a second pass below over ce: put the target index + 1 into ce */
    for (int i = 0; i < B * T; i++) ce[i] = (float)(y[i]);
    (void)ctx;
    return OB_OK;
}

static void test_sliding_coverage(void) {
    /* a val set whose token i is i (vocab 65536): the sum of scored "losses" identifies coverage */
    char d[256], p[600];
    snprintf(d, sizeof d, "%s/slide", TMP);
    mkdir(d, 0755);
    const size_t N = 5000;
    snprintf(p, sizeof p, "%s/fineweb_val_000000.bin", d);
    make_shard(p, N, 0);
    int strides[4] = {1, 16, 48, 64}, ok = 1;
    char detail[512] = "";
    for (int si = 0; si < 4; si++) {
        for (int complete = 0; complete < 2; complete++) {
            ob_val_set v;
            ob_eval_result r1, r2;
            memset(&r1, 0, sizeof r1);
            memset(&r2, 0, sizeof r2);
            if (ob_val_open(&v, d, "fineweb_val_", 1, 0, 0)) { ok = 0; break; }
            /* run on two "ranks" and add them up, as the distributed evaluation reduces */
            int r = ob_eval_sliding(hit_scorer, NULL, &v, NULL, 128, strides[si], 7, 1.0f, complete, 0, 2, &r1);
            if (!r) r = ob_eval_sliding(hit_scorer, NULL, &v, NULL, 128, strides[si], 7, 1.0f, complete, 1, 2, &r2);
            ob_val_close(&v);
            double targets = r1.targets + r2.targets, sum = r1.loss_sum + r2.loss_sum;
            /* targets are tokens 1..N-1 (value = index + 1); scoring [1, E] once each sums to E(E+1)/2 */
            size_t n_t = N - 1, n_starts = (n_t - 128 + strides[si] - 1) / strides[si];
            double E = complete ? (double)n_t : (double)((n_starts - 1) * strides[si] + 128);
            if (r || targets != E || sum != E * (E + 1) / 2) {
                ok = 0;
                snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " [stride %d%s: %.0f targets, expected %.0f]",
                         strides[si], complete ? " complete" : "", targets, E);
            }
        }
    }
    TU_CHECK(ok, "sliding_coverage", "strides 1, 16, 48, 64 over 4,999 targets on 2 ranks: every target scored exactly once "
             "(complete tail), and exactly the seed's set [0, last window end) without it%s", detail);
}

static long rss_anon_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "RssAnon:", 8)) kb = atol(line + 8);
    if (f) fclose(f);
    return kb;
}

static void test_streaming_memory(void) {
    char d[256], p[600];
    snprintf(d, sizeof d, "%s/big", TMP);
    mkdir(d, 0755);
    const size_t N = 62000000; /* the size of FineWeb's validation set */
    snprintf(p, sizeof p, "%s/fineweb_val_000000.bin", d);
    make_shard(p, N / 2, 0);
    snprintf(p, sizeof p, "%s/fineweb_val_000001.bin", d);
    make_shard(p, N - N / 2, 7);
    long before = rss_anon_kb();
    ob_val_set v;
    ob_eval_result r;
    int e = ob_val_open(&v, d, "fineweb_val_", 1024, 0, 0);
    if (!e) e = ob_eval_val(zero_scorer, NULL, &v, NULL, 1024, 64, 1.0f, 0, 0.0f, 0, 1, &r);
    long after = rss_anon_kb();
    if (!e) ob_val_close(&v);
    remove(p);
    snprintf(p, sizeof p, "%s/fineweb_val_000000.bin", d);
    remove(p);
    if (getenv("ONEBIT_TEST_SANITIZE")) {
        /* AddressSanitizer's shadow and quarantine memory make the process's RSS meaningless here */
        TU_CHECK(!e && r.targets == (double)((N - 1) / 1024 * 1024), "streaming_eval_targets", "%.0f targets of a 62M-token validation set%s%s",
                 r.targets, e ? ": " : "", e ? ob_last_error() : "");
        tu_report("SKIP", "streaming_eval_memory", "under the sanitizers RSS is not the program's; make test checks the 16 MB bound");
        return;
    }
    TU_CHECK(!e && r.targets == (double)((N - 1) / 1024 * 1024) && after - before < 16 * 1024, "streaming_eval_memory",
             "%.0f targets of a 62M-token validation set evaluated with %ld KB more anonymous memory (bound 16 MB; the tokens alone are 124 MB)%s%s",
             r.targets, after - before, e ? ": " : "", e ? ob_last_error() : "");
}

static void test_prepare(const char *dir) {
    /* 20 paragraphs separated by blank lines, in two files */
    char d[256], f1[300], f2[300];
    snprintf(d, sizeof d, "%s/prep", TMP);
    mkdir(d, 0755);
    snprintf(f1, sizeof f1, "%s/a.txt", TMP);
    snprintf(f2, sizeof f2, "%s/b.txt", TMP);
    FILE *a = fopen(f1, "w"), *b = fopen(f2, "w");
    for (int i = 0; i < 20; i++) fprintf(i < 12 ? a : b, "\n\nParagraph %d says hello,\nover two lines.\n", i);
    fclose(a); fclose(b);
    const char *files[2] = {f1, f2};
    ob_tokenizer bt;
    ob_tokenizer_init_bytes(&bt);
    ob_prepare_stats st;
    int r = ob_prepare_shards(files, 2, &bt, OB_DOC_BLANK_LINE, 0.1, 0, d, &st);
    ob_val_set v;
    int ok = !r && st.docs == 20 && st.val_docs == 2;
    if (ok && !ob_val_open(&v, d, "fineweb_val_", 1, 0, 256)) {
        int32_t buf[128];
        ob_val_read(&v, 0, v.n_tokens < 128 ? v.n_tokens : 128, buf);
        const char *want = "Paragraph 0 says hello,\nover two lines.\nParagraph 1";
        for (size_t i = 0; i < strlen(want) && ok; i++) ok = buf[i] == (unsigned char)want[i];
        ob_val_close(&v);
    } else ok = 0;
    TU_CHECK(ok, "prepare_bytes", "20 blank-line documents in 2 files -> %zu documents, 2 in val, bytes as tokens in order%s%s",
             st.docs, r ? ": " : "", r ? ob_last_error() : "");
    ob_tokenizer_free(&bt);
    if (!dir) { tu_report("SKIP", "prepare_sentencepiece", "../shared is absent: no tokenizer"); return; }
    char mp[512];
    snprintf(mp, sizeof mp, "%s/data/fineweb_1024_bpe.model", dir);
    ob_tokenizer sp;
    if (ob_tokenizer_load(&sp, mp)) { tu_report("FAIL", "prepare_sentencepiece", "%s", ob_last_error()); return; }
    r = ob_prepare_shards(files, 2, &sp, OB_DOC_BLANK_LINE, 0.1, 0, d, &st);
    ob_token_stream ts;
    int n_bos = 0, match = 0;
    if (!r && !(r = ob_token_stream_open(&ts, d, "fineweb_train_", 1024))) {
        int32_t *t = (int32_t *)malloc(st.train_tokens * sizeof(int32_t));
        r = ob_token_stream_take(&ts, t, st.train_tokens);
        for (size_t i = 0; i < st.train_tokens; i++) n_bos += t[i] == sp.bos_id;
        /* the third train document decodes to its text with the newline normalised to a space */
        size_t k = 0;
        for (int seen = 0; k < st.train_tokens; k++) if (t[k] == sp.bos_id && ++seen == 2) break;
        char *text = NULL;
        size_t e = k + 1;
        while (e < st.train_tokens && t[e] != sp.bos_id) e++;
        if (!r && !ob_tokenizer_decode(&sp, t + k + 1, e - k - 1, &text, NULL)) match = !strcmp(text, "Paragraph 3 says hello, over two lines.");
        free(text);
        free(t);
        ob_token_stream_close(&ts);
    }
    TU_CHECK(!r && n_bos == 18 && match, "prepare_sentencepiece", "sp1024: %d BOS in the train shard for 18 documents, a document decodes back to its (normalised) text%s%s",
             n_bos, r ? ": " : "", r ? ob_last_error() : "");
    ob_tokenizer_free(&sp);
}

int main(void) {
    const char *dir = tu_shared_dir();
    mkdir(TMP, 0755);
    test_malformed_shards();
    test_stream_wrap();
    test_loader(dir);
    test_bpb_bytes(dir);
    test_sliding_coverage();
    test_streaming_memory();
    test_prepare(dir);
    return tu_exit();
}
