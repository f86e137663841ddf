/* Tie handling shared by the fixture tests (see tests/test_fixtures.c for why ties exist):
 * tests/data/seed_tie_signs.txt lists, per forward pass ("label"), the binariser inputs that the
 * seed's own float32 forward left negative within 1e-5 of zero. The hook takes onebit's exact zeros
 * at those places as -1 and checks that every listed entry is either such a tie or negative here too. */
#ifndef ONEBIT_TEST_TIES_H
#define ONEBIT_TEST_TIES_H
typedef struct { int layer, site, row, col; } tie_key;
typedef struct {
    int relu_like;
    tie_key *neg;          /* the seed's negative ties for this fixture */
    int n_neg;
    unsigned char *used;   /* each listed tie found as an exact zero here */
    int n_ties, n_flipped;
} tie_ctx;

static inline void tie_hook(void *ctx, int layer, int site, float *xb, const float *x, int M, int K) {
    tie_ctx *t = (tie_ctx *)ctx;
    /* relu / relu^2 outputs are >= 0 in the seed too: their zeros binarise to +1 on both sides */
    if (site == OB_SITE_MLP_PROJ && t->relu_like) return;
    for (size_t i = 0; i < (size_t)M * K; i++) t->n_ties += x[i] == 0.0f;
    for (int j = 0; j < t->n_neg; j++) {
        const tie_key *n = &t->neg[j];
        if (n->layer != layer || n->site != site || n->row >= M || n->col >= K) continue;
        size_t i = (size_t)n->row * K + n->col;
        if (x[i] == 0.0f) { xb[i] = -xb[i]; t->n_flipped++; t->used[j] = 1; } /* a tie: the seed's sign */
        else if (x[i] < 0.0f) t->used[j] = 1; /* a genuinely small negative value: the signs agree anyway */
    }
}

/* Reads the seed's negative ties of one fixture from tests/data/seed_tie_signs.txt. */
static inline int load_ties(tie_ctx *t, const char *fixture) {
    free(t->neg);
    free(t->used);
    t->neg = NULL;
    t->used = NULL;
    t->n_neg = 0;
    FILE *f = fopen("tests/data/seed_tie_signs.txt", "r");
    if (!f) return -1;
    char name[128];
    tie_key k;
    int cap = 0;
    while (fscanf(f, "%127s %d %d %d %d", name, &k.layer, &k.site, &k.row, &k.col) == 5) {
        if (strcmp(name, fixture)) continue;
        if (t->n_neg == cap) { cap = cap ? 2 * cap : 64; t->neg = (tie_key *)realloc(t->neg, (size_t)cap * sizeof k); }
        t->neg[t->n_neg++] = k;
    }
    fclose(f);
    t->used = (unsigned char *)calloc((size_t)(t->n_neg ? t->n_neg : 1), 1);
    return 0;
}

static inline int ties_unused(const tie_ctx *t) {
    int unused = 0;
    for (int j = 0; j < t->n_neg; j++) unused += !t->used[j];
    return unused;
}
#endif
