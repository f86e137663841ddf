/* prepare_data: UTF-8 text files -> parameter-golf token shards (BOS + ids per document, a val split).
 *
 *   cc -std=c99 -D_DEFAULT_SOURCE -O2 examples/prepare_data.c -o build/prepare_data -lm
 *   build/prepare_data --tokenizer ../shared/data/fineweb_1024_bpe.model --out mydata notes.txt more_notes.txt
 *   build/prepare_data --bytes --split blank --val-fraction 0.1 --out mydata book.txt
 *
 * Then point a trainer at it: DATA_PATH=mydata (and TOKENIZER_PATH=... for a SentencePiece model).
 */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"

static void usage(void) {
    fprintf(stderr,
            "usage: prepare_data (--tokenizer FILE.model | --bytes) --out DIR [options] FILE...\n"
            "  --tokenizer F      SentencePiece model (BOS before each document)\n"
            "  --bytes            bytes as tokens (vocab 256, no BOS)\n"
            "  --out DIR          output folder (created; existing shards there are replaced)\n"
            "  --split MODE       file (default: each file a document) | blank (blank lines) | line\n"
            "  --val-fraction X   share of documents, taken first, for fineweb_val_000000.bin (default 0.05)\n"
            "  --shard-tokens N   tokens per train shard (default 100000000)\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = NULL;      /* --tokenizer, --out */
    int bytes = 0, split = OB_DOC_FILE;         /* --bytes, --split */
    double val_fraction = 0.05;                 /* --val-fraction */
    long long shard_tokens = 100000000;         /* --shard-tokens */
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--bytes")) { bytes = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "prepare_data: %s needs a value\n", f); usage(); }
        const char *v = argv[++i];
        char *end = NULL;
        if (!strcmp(f, "--tokenizer")) model = v;
        else if (!strcmp(f, "--out")) out = v;
        else if (!strcmp(f, "--split")) split = !strcmp(v, "file") ? OB_DOC_FILE : !strcmp(v, "blank") ? OB_DOC_BLANK_LINE : !strcmp(v, "line") ? OB_DOC_LINE : -1;
        else if (!strcmp(f, "--val-fraction")) val_fraction = strtod(v, &end);
        else if (!strcmp(f, "--shard-tokens")) shard_tokens = strtoll(v, &end, 10);
        else { fprintf(stderr, "prepare_data: unknown flag %s\n", f); usage(); }
        if ((end && *end) || split < 0) { fprintf(stderr, "prepare_data: bad value '%s' for %s\n", v, f); usage(); }
    }
    if (!out || i >= argc || (!model == !bytes)) usage();
    ob_tokenizer tok;
    if (bytes) ob_tokenizer_init_bytes(&tok);
    else if (ob_tokenizer_load(&tok, model) != OB_OK) { fprintf(stderr, "prepare_data: %s\n", ob_last_error()); return 1; }
    mkdir(out, 0755);
    ob_prepare_stats st;
    if (ob_prepare_shards((const char *const *)argv + i, argc - i, &tok, split, val_fraction, (size_t)shard_tokens, out, &st) != OB_OK) {
        fprintf(stderr, "prepare_data: %s\n", ob_last_error());
        return 1;
    }
    printf("%zu documents (%zu bytes): val %zu documents, %zu tokens; train %zu tokens in %d shard(s) -> %s\n", st.docs, st.bytes,
           st.val_docs, st.val_tokens, st.train_tokens, st.train_shards, out);
    ob_tokenizer_free(&tok);
    return 0;
}
