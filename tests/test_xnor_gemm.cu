/* test_xnor_gemm.cu - checks onebit_cuda.cuh's XNOR GEMM, packers and binary-weight GEMM against float/double
 * CPU references on fresh random data.
 *
 *   make build/test_xnor_gemm && build/test_xnor_gemm [--cpu-only] [--seed N]     (part of make test / test-gpu)
 *
 * Part 1 (no GPU needed): the CPU references themselves -- the mirror packer against the definitions, the XNOR
 * identity, an fp32 model of the kernel's fold against the double reference, and host emulations of the
 * fragment layouts (ldmatrix + swizzle + mma.m16n8k256/k128 .b1, and the binary-weight kernel's k permutation
 * with mma.m16n8k16 bf16), built from the same index helpers the kernels use.
 * Part 2 (sm_90 GPU): packers bit-exact against the mirror; the XNOR GEMM against the double reference with a
 * per-element bound (see ob__xnor_bound below), both folds bit-identical to each other; exact zeros; the
 * binary-weight x bf16 kernel against its double reference; argument checks; a CUDA-graph replay.
 * Prints "PASS name: ..." / "FAIL name: ..." per check and "N passed, N failed, N skipped"; exit 1 on failure.
 * Without a device (or without sm_90): "SKIP xnor_gemm: ..." and exit 0 after part 1.
 */
#define ONEBIT_IMPLEMENTATION
#include "../onebit_cuda.cuh"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static int g_pass = 0, g_fail = 0, g_skip = 0;
static void result(bool ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void result(bool ok, const char *name, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("%s %s: %s\n", ok ? "PASS" : "FAIL", name, buf);
    fflush(stdout);
    (ok ? g_pass : g_fail)++;
}
#define CUDA_OK(call)                                                                                                  \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            printf("FAIL cuda: %s -> %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__);                \
            printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail + 1, g_skip);                                \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* ------------------------------------------------------------------------------------------------ data */
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
    uint64_t next() { /* splitmix64 */
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    float uni() { return (float)((next() >> 40) * (1.0 / 16777216.0)); } /* [0, 1) */
    float normal() {
        float u = uni() + 1e-7f, v = uni();
        return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
    }
};
/* random matrix with exact zeros (+0 and -0) and a spread of magnitudes */
static void fill_random(std::vector<float> &a, Rng &r, float scale) {
    for (auto &v : a) {
        uint64_t c = r.next() % 100;
        if (c < 4) v = 0.0f;
        else if (c < 7) v = -0.0f;
        else if (c < 9) v = r.normal() * 1e-30f; /* tiny, still signed */
        else v = r.normal() * scale;
    }
}
static uint16_t f2bf(float f) { /* round to nearest even (no NaN here) */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static float i2f_bits(int32_t i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}

/* ------------------------------------------------------------------------------------------------
 * CPU mirror of the packers: the same fp32 operations in the same order as ob__k_xnor_pack
 * ---------------------------------------------------------------------------------------------- */
static void pack_ref(const float *src, int rows, int K, int gs, bool act, uint32_t *bits, uint16_t *popc, float *scale) {
    const int G = K / gs, nch = K / 128;
    for (int row = 0; row < rows; row++) {
        const float *x = src + (size_t)row * K;
        for (int w = 0; w < K / 32; w++) {
            uint32_t u = 0;
            for (int b = 0; b < 32; b++) u |= (x[32 * w + b] >= 0.0f ? 1u : 0u) << b;
            bits[(size_t)row * (K / 32) + w] = u;
        }
        float rowsum = 0.0f, part[32] = {0};
        int pcnt = 0;
        for (int i = 0; i < nch; i++) {
            float v[32];
            int cnt = 0;
            for (int l = 0; l < 32; l++) {
                const float *q = x + 128 * i + 4 * l;
                v[l] = (fabsf(q[0]) + fabsf(q[1])) + (fabsf(q[2]) + fabsf(q[3]));
                for (int c = 0; c < 4; c++) cnt += q[c] >= 0.0f;
            }
            if (gs == 256) {
                if ((i & 1) == 0) { memcpy(part, v, sizeof v); pcnt = cnt; continue; }
                for (int l = 0; l < 32; l++) v[l] = part[l] + v[l];
                cnt += pcnt;
            }
            for (int o = 16; o > 0; o >>= 1) {
                float nv[32];
                for (int l = 0; l < 32; l++) nv[l] = v[l] + v[l ^ o];
                memcpy(v, nv, sizeof v);
            }
            const int gi = gs == 128 ? i : i >> 1;
            popc[(size_t)row * G + gi] = (uint16_t)cnt;
            if (!act) scale[(size_t)row * G + gi] = fmaxf(v[0] / (float)gs, 1e-8f);
            rowsum += v[0];
        }
        if (act) scale[row] = fmaxf(rowsum / (float)K, 1e-8f);
    }
}
/* onebit.h's definitions (double sums): what the mirror must approximate to one fp32 rounding */
static float alpha_def(const float *wg, int gs) {
    double s = 0;
    for (int k = 0; k < gs; k++) s += fabsf(wg[k]);
    float a = (float)(s / gs);
    return a < 1e-8f ? 1e-8f : a;
}

/* packed operands of one matrix, computed by the mirror */
struct Packed {
    int rows, K, gs, G;
    std::vector<uint32_t> bits;
    std::vector<uint16_t> popc;
    std::vector<float> scale;
    void make(const std::vector<float> &src, int rows_, int K_, int gs_, bool act) {
        rows = rows_; K = K_; gs = gs_; G = K / gs;
        bits.assign((size_t)rows * K / 32, 0);
        popc.assign((size_t)rows * G, 0);
        scale.assign(act ? (size_t)rows : (size_t)rows * G, 0.0f);
        pack_ref(src.data(), rows, K, gs, act, bits.data(), popc.data(), scale.data());
    }
};

/* ------------------------------------------------------------------------------------------------
 * GEMM references
 * ---------------------------------------------------------------------------------------------- */
struct XnorRef {
    std::vector<double> y; /* beta sum_g alpha dot_g, in double (integer dots are exact) */
    std::vector<double> e; /* per-element bound on the kernel's fp32 error before output rounding */
};
/* The kernel computes Y/beta = 2 sum_g alpha (2c - pa) + s[n] with exact integer terms and fp32 sums of G terms
 * each (acc and s[n], one rounding per step), then one fma and one multiply by beta. Each partial sum is at most
 * the sum of the absolute terms, so |error| <= (G + 3) u beta (2 A + S) + 2 u |y|, u = 2^-24,
 * A = sum_g alpha |2c - pa|, S = sum_g alpha |gs - 2 pb|. */
static void xnor_ref(XnorRef &R, const Packed &X, const Packed &W) {
    const int M = X.rows, N = W.rows, G = X.G, gs = X.gs, wpg = gs / 64;
    const double u = ldexp(1.0, -24);
    R.y.assign((size_t)M * N, 0.0);
    R.e.assign((size_t)M * N, 0.0);
    const uint64_t *xb = reinterpret_cast<const uint64_t *>(X.bits.data());
    const uint64_t *wb = reinterpret_cast<const uint64_t *>(W.bits.data());
    const int kw = X.K / 64;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double y = 0, A = 0, S = 0;
            for (int g = 0; g < G; g++) {
                int c = 0, x = 0;
                for (int j = 0; j < wpg; j++) {
                    const uint64_t a = xb[(size_t)m * kw + g * wpg + j], b = wb[(size_t)n * kw + g * wpg + j];
                    c += __builtin_popcountll(a & b);
                    x += __builtin_popcountll(a ^ b);
                }
                const double al = W.scale[(size_t)n * G + g];
                y += al * (gs - 2 * x);
                A += al * fabs(2.0 * c - X.popc[(size_t)m * G + g]);
                S += al * fabs((double)gs - 2.0 * W.popc[(size_t)n * G + g]);
            }
            const double be = X.scale[m];
            R.y[(size_t)m * N + n] = be * y;
            R.e[(size_t)m * N + n] = (G + 3) * u * be * (2 * A + S) + 2 * u * fabs(be * y);
        }
}
/* binary weights x bf16: y = sum_g alpha sum_{k in g} s(w) x; the bound allows two fp32 ulps (2^-22: the tensor
 * core's fp32 adds may truncate) per k16 MMA of a group, G + 12 roundings for the fold and the cross-warp sum,
 * all on L1 = sum_g alpha sum_k |x| */
static void bwn_ref(std::vector<double> &y, std::vector<double> &e, const std::vector<uint16_t> &xbf, const Packed &W,
                    int M) {
    const int N = W.rows, K = W.K, G = W.G, gs = W.gs;
    const double u = ldexp(1.0, -23);
    y.assign((size_t)M * N, 0.0);
    e.assign((size_t)M * N, 0.0);
    std::vector<float> xf(xbf.size());
    for (size_t i = 0; i < xbf.size(); i++) xf[i] = bf2f(xbf[i]);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0, l1 = 0;
            for (int g = 0; g < G; g++) {
                double d = 0, a = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) {
                    const double v = xf[(size_t)m * K + k];
                    d += ((W.bits[(size_t)n * (K / 32) + k / 32] >> (k % 32)) & 1) ? v : -v;
                    a += fabs(v);
                }
                const double al = W.scale[(size_t)n * G + g];
                s += al * d;
                l1 += al * a;
            }
            y[(size_t)m * N + n] = s;
            e[(size_t)m * N + n] = (2 * (gs / 16) + G + 12) * u * l1 + u * fabs(s);
        }
}

/* ------------------------------------------------------------------------------------------------
 * Part 1: CPU self-checks
 * ---------------------------------------------------------------------------------------------- */
static void cpu_checks(uint64_t seed) {
    Rng r(seed);
    /* 1. mirror packer vs definitions */
    {
        const int rows = 9, K = 1536;
        bool ok = true;
        double worst = 0;
        for (int gs = 128; gs <= 256; gs *= 2) {
            std::vector<float> x((size_t)rows * K);
            fill_random(x, r, 1.0f);
            for (int k = 0; k < K; k++) x[k] = 0.0f; /* a row of zeros: alpha, beta clamp to 1e-8, bits all 1 */
            Packed W, X;
            W.make(x, rows, K, gs, false);
            X.make(x, rows, K, gs, true);
            for (int i = 0; i < rows; i++) {
                double s = 0;
                for (int k = 0; k < K; k++) s += fabsf(x[(size_t)i * K + k]);
                float bdef = (float)(s / K);
                if (bdef < 1e-8f) bdef = 1e-8f;
                const double rel = fabs((double)X.scale[i] - bdef) / bdef;
                worst = fmax(worst, rel);
                ok &= rel <= 2e-6;
                for (int g = 0; g < K / gs; g++) {
                    const float adef = alpha_def(&x[(size_t)i * K + g * gs], gs);
                    const double ra = fabs((double)W.scale[(size_t)i * (K / gs) + g] - adef) / adef;
                    worst = fmax(worst, ra);
                    ok &= ra <= 2e-6;
                    int cnt = 0;
                    for (int k = g * gs; k < (g + 1) * gs; k++) cnt += x[(size_t)i * K + k] >= 0.0f;
                    ok &= cnt == W.popc[(size_t)i * (K / gs) + g] && cnt == X.popc[(size_t)i * (K / gs) + g];
                }
                for (int k = 0; k < K; k++)
                    ok &= (((W.bits[(size_t)i * (K / 32) + k / 32] >> (k % 32)) & 1) != 0) == (x[(size_t)i * K + k] >= 0.0f);
            }
            ok &= W.scale[0] == 1e-8f && X.scale[0] == 1e-8f && W.bits[0] == 0xFFFFFFFFu;
        }
        result(ok, "cpu_pack_mirror", "bits = (x >= 0), popcounts exact, fp32 alpha/beta within %.2g of the double sums"
               " (bound 2e-6); zero row -> 1e-8, all ones", worst);
    }
    /* 2. the XNOR identity on random groups */
    {
        bool ok = true;
        for (int it = 0; it < 2000; it++) {
            const int gs = (it & 1) ? 256 : 128;
            uint32_t a[8], b[8];
            int pa = 0, pb = 0, c = 0, x = 0, dot = 0;
            for (int j = 0; j < gs / 32; j++) {
                a[j] = (uint32_t)r.next();
                b[j] = it % 7 == 0 ? a[j] : (uint32_t)r.next();
                pa += __builtin_popcount(a[j]);
                pb += __builtin_popcount(b[j]);
                c += __builtin_popcount(a[j] & b[j]);
                x += __builtin_popcount(a[j] ^ b[j]);
                for (int i = 0; i < 32; i++) dot += (((a[j] >> i) & 1) ? 1 : -1) * (((b[j] >> i) & 1) ? 1 : -1);
            }
            ok &= dot == gs - 2 * x && dot == 4 * c - 2 * pa - 2 * pb + gs && dot == 2 * (2 * c - pa) + (gs - 2 * pb);
        }
        result(ok, "cpu_xnor_identity", "2000 random groups: sum s(a)s(b) = gs - 2 popc(a^b) = 2(2c - pa) + (gs - 2pb)");
    }
    /* 3. fp32 model of the kernel's fold (both variants) against the double reference, and against the naive
     *    float formula sign(x) beta . (sign(w) alpha)^T */
    {
        bool ok = true, same = true;
        double worst = 0, naive = 0;
        for (int gs = 128; gs <= 256; gs *= 2) {
            const int M = 5, N = 6, K = 2048, G = K / gs;
            std::vector<float> xf((size_t)M * K), wf((size_t)N * K);
            fill_random(xf, r, 1.0f);
            fill_random(wf, r, 0.02f);
            for (int k = 0; k < K; k++) { xf[k] = (k % gs) < gs / 2 ? 1.0f : -2.0f; wf[k] = 0.0f; } /* dot_g = 0 */
            Packed X, W;
            X.make(xf, M, K, gs, true);
            W.make(wf, N, K, gs, false);
            XnorRef R;
            xnor_ref(R, X, W);
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    float acc0 = 0, acc1 = 0, s = 0;
                    for (int g = 0; g < G; g++) {
                        int c = 0;
                        for (int j = 0; j < gs / 32; j++)
                            c += __builtin_popcount(X.bits[(size_t)m * (K / 32) + g * gs / 32 + j] &
                                                    W.bits[(size_t)n * (K / 32) + g * gs / 32 + j]);
                        const float pa = (float)X.popc[(size_t)m * G + g], al = W.scale[(size_t)n * G + g];
                        const float r0 = fmaf(0x1p127f, i2f_bits(c), pa * -0x1p-23f); /* subnormal fold */
                        acc0 = fmaf(al, r0, acc0);
                        float r1 = i2f_bits(0x4B000000 + c) - 8388608.0f; /* magic fold */
                        r1 = fmaf(2.0f, r1, -pa);
                        acc1 = fmaf(al, r1, acc1);
                        s = fmaf(al, (float)gs - 2.0f * (float)W.popc[(size_t)n * G + g], s);
                    }
                    const float y0 = X.scale[m] * fmaf(0x1p24f, acc0, s), y1 = X.scale[m] * fmaf(2.0f, acc1, s);
                    same &= y0 == y1;
                    const double ref = R.y[(size_t)m * N + n], err = fabs(y0 - ref), bound = R.e[(size_t)m * N + n];
                    worst = fmax(worst, err / bound);
                    ok &= err <= bound;
                    if (m == 0 && n == 0) ok &= y0 == 0.0f && ref == 0.0;
                    double nv = 0; /* the naive float formula, in double */
                    for (int k = 0; k < K; k++)
                        nv += (double)(xf[(size_t)m * K + k] >= 0 ? X.scale[m] : -X.scale[m]) *
                              (wf[(size_t)n * K + k] >= 0 ? W.scale[(size_t)n * G + k / gs] : -W.scale[(size_t)n * G + k / gs]);
                    naive = fmax(naive, fabs(nv - ref) / fmax(fabs(ref), 1e-30));
                }
        }
        ok &= naive <= 1e-12;
        result(ok && same, "cpu_fold_model", "fp32 fold (subnormal and magic, %s) within the bound: worst err/bound %.3f; "
               "popcount reference = naive sign(x)beta.(sign(w)alpha)^T within %.1e; cancelled dot -> exactly 0",
               same ? "bit-identical" : "DIFFERENT", worst, naive);
    }
    /* 4. fragment emulation of the XNOR GEMM: cp.async swizzle -> ldmatrix.x4 -> mma b1 (PTX layouts) */
    {
        bool ok = true;
        std::vector<uint8_t> ga(128 * 128), gb(128 * 128), sa(128 * 128), sb(128 * 128);
        for (auto &v : ga) v = (uint8_t)r.next();
        for (auto &v : gb) v = (uint8_t)r.next();
        for (int rr = 0; rr < 128; rr++)
            for (int ch = 0; ch < 8; ch++) { /* what load_stage writes */
                memcpy(&sa[ob__xg_swz(rr, ch)], &ga[rr * 128 + ch * 16], 16);
                memcpy(&sb[ob__xg_swz(rr, ch)], &gb[rr * 128 + ch * 16], 16);
            }
        auto ldsm4 = [](const std::vector<uint8_t> &s, const int *addr, uint32_t (*reg)[4]) {
            for (int l = 0; l < 32; l++)
                for (int j = 0; j < 4; j++) memcpy(&reg[l][j], &s[addr[8 * j + l / 4] + 4 * (l % 4)], 4);
        };
        for (int mb = 0; mb < 128; mb += 48) /* a few tiles: 0, 48, 96 */
            for (int nb = 0; nb < 128; nb += 40)
                for (int ks = 0; ks < 4; ks++) {
                    const int mbb = mb & ~15, nbb = nb & ~15;
                    int aa[32], ab[32];
                    uint32_t A[32][4], B[32][4];
                    for (int l = 0; l < 32; l++) { aa[l] = ob__xg_a_off(mbb, ks, l); ab[l] = ob__xg_b_off(nbb, ks, l); }
                    ldsm4(sa, aa, A);
                    ldsm4(sb, ab, B);
                    /* rebuild the MMA operands from the registers per the PTX fragment layouts */
                    uint8_t Am[16][32] = {{0}}, Bm[16][32] = {{0}}; /* [row][byte of the 256-bit k-step] */
                    for (int l = 0; l < 32; l++) {
                        const int g = l >> 2, t = l & 3;
                        memcpy(&Am[g][4 * t], &A[l][0], 4);
                        memcpy(&Am[g + 8][4 * t], &A[l][1], 4);
                        memcpy(&Am[g][16 + 4 * t], &A[l][2], 4);
                        memcpy(&Am[g + 8][16 + 4 * t], &A[l][3], 4);
                        memcpy(&Bm[g][4 * t], &B[l][0], 4);      /* n tile 0: b0 */
                        memcpy(&Bm[g][16 + 4 * t], &B[l][1], 4); /*            b1 */
                        memcpy(&Bm[g + 8][4 * t], &B[l][2], 4);  /* n tile 1: b0 */
                        memcpy(&Bm[g + 8][16 + 4 * t], &B[l][3], 4);
                    }
                    for (int i = 0; i < 16; i++)
                        for (int j = 0; j < 16; j++)
                            for (int h = 0; h < 2; h++) { /* k128 halves (gs = 128) and their sum (gs = 256) */
                                int mma = 0, ref = 0;
                                for (int b = 16 * h; b < 16 * h + 16; b++) {
                                    mma += __builtin_popcount(Am[i][b] & Bm[j][b]);
                                    ref += __builtin_popcount(ga[(mbb + i) * 128 + 32 * ks + b] &
                                                              gb[(nbb + j) * 128 + 32 * ks + b]);
                                }
                                ok &= mma == ref;
                            }
                }
        /* the smem table permutation */
        for (int rr = 0; rr < 128; rr++) {
            const int mt = rr >> 4, g = rr & 7, hi = (rr >> 3) & 1;
            ok &= ob__xg_rowperm(rr) == mt * 16 + 2 * g + hi;
        }
        result(ok, "cpu_fragments_xnor", "swizzled stage + ldmatrix.x4 + m16n8k256/k128 b1 layouts reproduce "
               "popc(a & b) of every row pair of every 256-bit k-step (both 128-bit halves)");
    }
    /* 5. fragment emulation of the binary-weight kernel: bit decode + k permutation + mma.m16n8k16 bf16 */
    {
        bool ok = true;
        for (int it = 0; it < 50; it++) {
            uint32_t W[16];
            float x[8][32];
            uint16_t xb[8][32];
            for (auto &w : W) w = (uint32_t)r.next();
            for (int tk = 0; tk < 8; tk++)
                for (int k = 0; k < 32; k++) {
                    x[tk][k] = (float)((int)(r.next() % 33) - 16) * 0.125f;
                    xb[tk][k] = f2bf(x[tk][k]);
                }
            float D[16][8] = {{0}};
            for (int s = 0; s < 2; s++) {
                float Am[16][16], Bm[16][8];
                for (int l = 0; l < 32; l++) {
                    const int g = l >> 2, t = l & 3, q0 = ob__bwn_q(s, 0, t), q1 = ob__bwn_q(s, 1, t);
                    const uint32_t a[4] = {ob__bwn_dec(W[g], q0), ob__bwn_dec(W[g + 8], q0), ob__bwn_dec(W[g], q1),
                                           ob__bwn_dec(W[g + 8], q1)};
                    const uint32_t b0 = xb[g][q0] | (uint32_t)xb[g][q0 + 16] << 16;
                    const uint32_t b1 = xb[g][q1] | (uint32_t)xb[g][q1 + 16] << 16;
                    /* PTX m16n8k16: a0 (g, 2t..2t+1), a1 (g+8, ..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); b0 (k 2t..2t+1, n g),
                     * b1 (k 2t+8.., n g); low half = lower k */
                    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
                    for (int j = 0; j < 4; j++) {
                        Am[rows[j]][cols[j]] = bf2f((uint16_t)a[j]);
                        Am[rows[j]][cols[j] + 1] = bf2f((uint16_t)(a[j] >> 16));
                    }
                    Bm[2 * t][g] = bf2f((uint16_t)b0);
                    Bm[2 * t + 1][g] = bf2f((uint16_t)(b0 >> 16));
                    Bm[2 * t + 8][g] = bf2f((uint16_t)b1);
                    Bm[2 * t + 9][g] = bf2f((uint16_t)(b1 >> 16));
                }
                for (int i = 0; i < 16; i++)
                    for (int j = 0; j < 8; j++)
                        for (int k = 0; k < 16; k++) D[i][j] += Am[i][k] * Bm[k][j];
            }
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 8; j++) {
                    float ref = 0;
                    for (int k = 0; k < 32; k++) ref += ((W[i] >> k) & 1) ? x[j][k] : -x[j][k];
                    ok &= D[i][j] == ref;
                }
        }
        result(ok, "cpu_fragments_bwn", "decoded +-1 (bits q, q+16 of a word) and permuted x pairs through the m16n8k16 "
               "layouts give sum_k s(w) x exactly (50 random 16x8x32 blocks)");
    }
}

/* ------------------------------------------------------------------------------------------------
 * Part 2: GPU
 * ---------------------------------------------------------------------------------------------- */
template <typename T> static T *dev_upload(const std::vector<T> &h) {
    T *d = nullptr;
    CUDA_OK(cudaMalloc(&d, h.size() * sizeof(T) + 16));
    CUDA_OK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static std::vector<T> dev_download(const T *d, size_t n) {
    std::vector<T> h(n);
    CUDA_OK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}
struct DevPacked {
    uint32_t *bits = nullptr;
    uint16_t *popc = nullptr;
    float *scale = nullptr;
    void alloc(int rows, int K, int gs, bool act) {
        CUDA_OK(cudaMalloc(&bits, (size_t)rows * K / 8 + 16));
        CUDA_OK(cudaMalloc(&popc, (size_t)rows * (K / gs) * 2 + 16));
        CUDA_OK(cudaMalloc(&scale, (act ? (size_t)rows : (size_t)rows * (K / gs)) * 4 + 16));
    }
    void free_all() { cudaFree(bits); cudaFree(popc); cudaFree(scale); }
};
/* GPU packs src (already on the device) and compares with the mirror; returns false on a mismatch */
static bool pack_compare(const DevPacked &d, const Packed &h, bool act, int *nbad) {
    auto b = dev_download(d.bits, h.bits.size());
    auto p = dev_download(d.popc, h.popc.size());
    auto s = dev_download(d.scale, h.scale.size());
    int bad = 0;
    for (size_t i = 0; i < b.size(); i++) bad += b[i] != h.bits[i];
    for (size_t i = 0; i < p.size(); i++) bad += p[i] != h.popc[i];
    for (size_t i = 0; i < s.size(); i++) bad += memcmp(&s[i], &h.scale[i], 4) != 0;
    (void)act;
    *nbad = bad;
    return bad == 0;
}

static void gpu_pack_tests(Rng &r) {
    const int shapes[][3] = {{1, 256, 256}, {7, 384, 128}, {333, 1024, 256}, {64, 4096, 128}, {5, 1152, 128},
                             {3, 2304, 256}, {1000, 1024, 128}};
    for (auto &sh : shapes) {
        const int rows = sh[0], K = sh[1], gs = sh[2];
        std::vector<float> x((size_t)rows * K);
        fill_random(x, r, 1.0f);
        for (int k = 0; k < K; k++) x[k] = 0.0f;
        Packed hw, hx;
        hw.make(x, rows, K, gs, false);
        hx.make(x, rows, K, gs, true);
        float *dx = dev_upload(x);
        DevPacked dw, dxp;
        dw.alloc(rows, K, gs, false);
        dxp.alloc(rows, K, gs, true);
        CUDA_OK(ob_xnor_pack_weights(dw.bits, dw.scale, dw.popc, dx, rows, K, gs, 0));
        CUDA_OK(ob_xnor_pack_acts(dxp.bits, dxp.scale, dxp.popc, dx, rows, K, gs, 0));
        CUDA_OK(cudaDeviceSynchronize());
        int bw = 0, bx = 0;
        const bool ok = pack_compare(dw, hw, false, &bw) & pack_compare(dxp, hx, true, &bx);
        char name[96];
        snprintf(name, sizeof name, "pack rows=%d K=%d gs=%d", rows, K, gs);
        result(ok, name, "weights: bits, alpha, popc; acts: bits, beta, popc bit-exact vs the CPU mirror (%d, %d mismatches)",
               bw, bx);
        cudaFree(dx);
        dw.free_all();
        dxp.free_all();
    }
}

/* the special rows: x row 0 half +1 half -2 per group, w row 0 all zeros (+1): dot_g = 0 -> Y[0][0] = 0 exactly;
 * x row 1 all zeros (beta 1e-8, all +1) */
static void special_rows(std::vector<float> &x, std::vector<float> &w, int M, int N, int K, int gs) {
    for (int k = 0; k < K; k++) {
        x[k] = (k % gs) < gs / 2 ? 1.0f : -2.0f;
        w[k] = (k & 1) ? 0.0f : -0.0f;
        if (M > 1) x[(size_t)K + k] = 0.0f;
    }
    (void)N;
}

static void gpu_gemm_tests(Rng &r) {
    /* 9001 x 1100: 71 x 9 = 639 tiles, more than the persistent grid (2 per SM), so CTAs take several tiles,
     * edge tiles included */
    const int Ms[] = {1, 7, 333, 4096, 9001}, Ns[] = {8, 13, 160, 1024, 1100}, Ks[] = {256, 384, 1024, 1152, 2304, 4096};
    for (int K : Ks)
        for (int gs = 128; gs <= 256; gs *= 2) {
            if (K % gs) continue;
            for (int M : Ms)
                for (int N : Ns) {
                    if (M == 4096 && N == 1024 && K != 4096 && K != 1024) continue; /* keep the CPU reference quick */
                    if ((M == 9001) != (N == 1100) || (M == 9001 && K != 1024 && K != 2304)) continue;
                    std::vector<float> x((size_t)M * K), w((size_t)N * K);
                    fill_random(x, r, 1.0f);
                    fill_random(w, r, 0.02f);
                    special_rows(x, w, M, N, K, gs);
                    Packed hx, hw;
                    hx.make(x, M, K, gs, true);
                    hw.make(w, N, K, gs, false);
                    XnorRef R;
                    xnor_ref(R, hx, hw);
                    float *dxf = dev_upload(x), *dwf = dev_upload(w);
                    DevPacked dx, dw;
                    dx.alloc(M, K, gs, true);
                    dw.alloc(N, K, gs, false);
                    CUDA_OK(ob_xnor_pack_acts(dx.bits, dx.scale, dx.popc, dxf, M, K, gs, 0));
                    CUDA_OK(ob_xnor_pack_weights(dw.bits, dw.scale, dw.popc, dwf, N, K, gs, 0));
                    int bx = 0, bw = 0;
                    const bool packs = pack_compare(dx, hx, true, &bx) & pack_compare(dw, hw, false, &bw);
                    void *dy;
                    CUDA_OK(cudaMalloc(&dy, (size_t)M * N * 4 + 16));
                    /* every variant: 0 / 1 the default kernel with each fold, 2 / 3 the one-tile-per-CTA design, 4 / 5 the
                     * persistent kernel (also where it is not the default), 6 the warpgroup (wgmma) kernel where it
                     * applies (gs 256, K % 1,024 == 0; else variant 0 again) */
                    const int NV = 7, wg_ok = gs == 256 && K % 1024 == 0;
                    const int variants[NV] = {0, 1, 2, 3, 4, 5, wg_ok ? OB_XNOR_WGMMA : 0};
                    std::vector<float> y32[NV];
                    std::vector<uint16_t> y16[NV];
                    for (int v = 0; v < NV; v++) {
                        for (int out = 0; out < 2; out++) { /* OB_XNOR_OUT_F32, OB_XNOR_OUT_BF16 */
                            CUDA_OK(cudaMemset(dy, 0xFF, (size_t)M * N * 4));
                            cudaError_t ce = ob_xnor_gemm_ex(dy, out, dx.bits, dx.scale, dx.popc, dw.bits, dw.scale, dw.popc,
                                                             M, N, K, gs, variants[v], 0);
                            if (ce == cudaErrorNoKernelImageForDevice && variants[v] == OB_XNOR_WGMMA) /* no sm_90a code */
                                ce = ob_xnor_gemm_ex(dy, out, dx.bits, dx.scale, dx.popc, dw.bits, dw.scale, dw.popc, M, N, K, gs, 0, 0);
                            CUDA_OK(ce);
                            if (out == OB_XNOR_OUT_F32) y32[v] = dev_download((const float *)dy, (size_t)M * N);
                            else y16[v] = dev_download((const uint16_t *)dy, (size_t)M * N);
                        }
                    }
                    double w32 = 0, w16 = 0, e32 = 0, e16 = 0, ymax = 0;
                    bool ok32 = true, ok16 = true, same = y32[0].size() == y32[1].size();
                    size_t bad = (size_t)-1;
                    for (size_t i = 0; i < R.y.size(); i++) {
                        const double ref = R.y[i], b32 = R.e[i], b16 = b32 + ldexp(1.0, -8) * (fabs(ref) + b32);
                        const double d32 = fabs((double)y32[0][i] - ref), d16 = fabs((double)bf2f(y16[0][i]) - ref);
                        ymax = fmax(ymax, fabs(ref));
                        e32 = fmax(e32, d32);
                        e16 = fmax(e16, d16);
                        if (b32 > 0) w32 = fmax(w32, d32 / b32), w16 = fmax(w16, d16 / b16);
                        if (!(d32 <= b32)) { ok32 = false; if (bad == (size_t)-1) bad = i; }
                        if (!(d16 <= b16)) { ok16 = false; if (bad == (size_t)-1) bad = i; }
                        for (int v = 1; v < NV; v++) same &= memcmp(&y32[0][i], &y32[v][i], 4) == 0 && y16[0][i] == y16[v][i];
                    }
                    const bool zero = y32[0][0] == 0.0f && y16[0][0] == 0 && R.y[0] == 0.0;
                    const bool norm = e32 <= 1e-5 * ymax && e16 <= 8e-3 * ymax;
                    char name[96];
                    snprintf(name, sizeof name, "xnor_gemm M=%d N=%d K=%d gs=%d", M, N, K, gs);
                    if (packs && ok32 && ok16 && same && zero && norm)
                        result(true, name, "max|err|/max|ref|: f32 %.1e (<= 1e-5), bf16 %.1e (<= 8e-3); per-element "
                               "err/bound f32 %.3f, bf16 %.3f; folds and kernels (persistent, one tile%s) bit-identical; cancelled dot exactly 0",
                               e32 / ymax, e16 / ymax, w32, w16, wg_ok ? ", wgmma" : "");
                    else
                        result(false, name, "packs %s (%d, %d bad), f32 %s, bf16 %s, folds %s, zero %s, normwise %.1e/%.1e; "
                               "first bad element m=%zu n=%zu: ref %.9g gpu f32 %.9g bf16 %.9g bound %.3g",
                               packs ? "ok" : "BAD", bx, bw, ok32 ? "ok" : "BAD", ok16 ? "ok" : "BAD",
                               same ? "identical" : "DIFFER", zero ? "ok" : "BAD", e32 / ymax, e16 / ymax,
                               bad == (size_t)-1 ? 0 : bad / N, bad == (size_t)-1 ? 0 : bad % N,
                               bad == (size_t)-1 ? 0.0 : R.y[bad], bad == (size_t)-1 ? 0.0 : (double)y32[0][bad],
                               bad == (size_t)-1 ? 0.0 : (double)bf2f(y16[0][bad]), bad == (size_t)-1 ? 0.0 : R.e[bad]);
                    cudaFree(dy);
                    cudaFree(dxf);
                    cudaFree(dwf);
                    dx.free_all();
                    dw.free_all();
                }
        }
}

static void gpu_bwn_tests(Rng &r) {
    const int Ms[] = {1, 7, 33, 64, 100}, Ns[] = {8, 160, 1024}, Ks[] = {256, 384, 1024, 4096};
    for (int K : Ks)
        for (int gs = 128; gs <= 256; gs *= 2) {
            if (K % gs) continue;
            for (int M : Ms)
                for (int N : Ns) {
                    if (M >= 64 && N == 1024 && K == 4096 && gs == 128) continue; /* CPU reference time */
                    std::vector<float> w((size_t)N * K), xf((size_t)M * K);
                    fill_random(w, r, 0.02f);
                    fill_random(xf, r, 1.0f);
                    std::vector<uint16_t> xb(xf.size());
                    for (size_t i = 0; i < xf.size(); i++) xb[i] = f2bf(xf[i]);
                    Packed hw;
                    hw.make(w, N, K, gs, false);
                    std::vector<double> ref, bnd;
                    bwn_ref(ref, bnd, xb, hw, M);
                    uint32_t *dbits = dev_upload(hw.bits);
                    float *dal = dev_upload(hw.scale);
                    uint16_t *dx = dev_upload(xb);
                    void *dy;
                    CUDA_OK(cudaMalloc(&dy, (size_t)M * N * 4 + 16));
                    for (int xpath = OB_BWN_XSMEM; xpath <= OB_BWN_XGLOBAL; xpath++)
                        for (int out = 0; out < 2; out++) {
                            CUDA_OK(cudaMemset(dy, 0xFF, (size_t)M * N * 4));
                            cudaError_t e = ob_bwn_gemm_ex(dy, out, dx, dbits, dal, M, N, K, gs, xpath, 0);
                            if (e == cudaErrorInvalidValue && xpath == OB_BWN_XSMEM) continue; /* x too large for smem */
                            CUDA_OK(e);
                            double worst = 0, emax = 0, ymax = 0;
                            bool ok = true;
                            size_t bad = (size_t)-1;
                            std::vector<float> y(ref.size());
                            if (out == OB_XNOR_OUT_F32) y = dev_download((const float *)dy, ref.size());
                            else {
                                auto h = dev_download((const uint16_t *)dy, ref.size());
                                for (size_t i = 0; i < h.size(); i++) y[i] = bf2f(h[i]);
                            }
                            for (size_t i = 0; i < ref.size(); i++) {
                                const double b = out ? bnd[i] + ldexp(1.0, -8) * (fabs(ref[i]) + bnd[i]) : bnd[i];
                                const double d = fabs((double)y[i] - ref[i]);
                                ymax = fmax(ymax, fabs(ref[i]));
                                emax = fmax(emax, d);
                                if (b > 0) worst = fmax(worst, d / b);
                                if (!(d <= b)) { ok = false; if (bad == (size_t)-1) bad = i; }
                            }
                            char name[112];
                            snprintf(name, sizeof name, "bwn_gemm M=%d N=%d K=%d gs=%d %s x%s", M, N, K, gs,
                                     out ? "bf16" : "f32", xpath == OB_BWN_XSMEM ? "smem" : "global");
                            if (ok) result(true, name, "max|err|/max|ref| %.1e, per-element err/bound %.3f", emax / ymax, worst);
                            else
                                result(false, name, "m=%zu n=%zu: ref %.9g gpu %.9g bound %.3g (max err/bound %.3f)",
                                       bad / N, bad % N, ref[bad], (double)y[bad], bnd[bad], worst);
                        }
                    cudaFree(dy);
                    cudaFree(dbits);
                    cudaFree(dal);
                    cudaFree(dx);
                }
        }
}

static void gpu_misc_tests(Rng &r) {
    /* argument checks */
    {
        bool ok = ob_xnor_gemm(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 192, 128, 0) ==
                      cudaErrorInvalidValue &&
                  ob_xnor_gemm(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 256, 64, 0) ==
                      cudaErrorInvalidValue &&
                  ob_xnor_pack_acts(nullptr, nullptr, nullptr, nullptr, 4, 100, 128, 0) == cudaErrorInvalidValue &&
                  ob_bwn_gemm(nullptr, 2, nullptr, nullptr, nullptr, 1, 1, 256, 256, 0) == cudaErrorInvalidValue &&
                  ob_xnor_gemm_ex(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 256, 256,
                                  OB_XNOR_ONE_TILE | OB_XNOR_PERSISTENT, 0) == cudaErrorInvalidValue &&
                  ob_xnor_gemm_ex(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 256, 256, 16, 0) ==
                      cudaErrorInvalidValue &&
                  ob_xnor_gemm_ex(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 256, 256,
                                  OB_XNOR_WGMMA, 0) == cudaErrorInvalidValue && /* wgmma needs K % 1,024 == 0 */
                  ob_xnor_gemm_ex(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 4, 1024, 128,
                                  OB_XNOR_WGMMA, 0) == cudaErrorInvalidValue && /* and gs 256 */
                  ob_xnor_gemm(nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 256, 256, 0) ==
                      cudaSuccess;
        (void)cudaGetLastError();
        result(ok, "xnor_args", "K %% gs != 0, gs = 64, K %% 128 != 0, bad out type, contradictory or unknown variant bits, wgmma off its shapes -> cudaErrorInvalidValue; M = 0 -> no-op");
    }
    /* graph capture: pack + GEMM + BWN captured and replayed equal the direct launches */
    {
        const int M = 300, N = 200, K = 1024, gs = 256;
        std::vector<float> x((size_t)M * K), w((size_t)N * K);
        fill_random(x, r, 1.0f);
        fill_random(w, r, 0.02f);
        std::vector<uint16_t> xb(x.size());
        for (size_t i = 0; i < x.size(); i++) xb[i] = f2bf(x[i]);
        float *dxf = dev_upload(x), *dwf = dev_upload(w);
        uint16_t *dxb = dev_upload(xb);
        DevPacked dx, dw;
        dx.alloc(M, K, gs, true);
        dw.alloc(N, K, gs, false);
        void *y1, *y2, *z1, *z2;
        CUDA_OK(cudaMalloc(&y1, (size_t)M * N * 2));
        CUDA_OK(cudaMalloc(&y2, (size_t)M * N * 2));
        CUDA_OK(cudaMalloc(&z1, (size_t)M * N * 4));
        CUDA_OK(cudaMalloc(&z2, (size_t)M * N * 4));
        CUDA_OK(ob_xnor_prepare());
        cudaStream_t s;
        CUDA_OK(cudaStreamCreate(&s));
        auto run = [&](void *y, void *z) {
            CUDA_OK(ob_xnor_pack_acts(dx.bits, dx.scale, dx.popc, dxf, M, K, gs, s));
            CUDA_OK(ob_xnor_pack_weights(dw.bits, dw.scale, dw.popc, dwf, N, K, gs, s));
            CUDA_OK(ob_xnor_gemm(y, OB_XNOR_OUT_BF16, dx.bits, dx.scale, dx.popc, dw.bits, dw.scale, dw.popc, M, N, K, gs, s));
            CUDA_OK(ob_bwn_gemm(z, OB_XNOR_OUT_F32, dxb, dw.bits, dw.scale, M, N, K, gs, s));
        };
        run(y1, z1);
        CUDA_OK(cudaStreamSynchronize(s));
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        run(y2, z2);
        CUDA_OK(cudaStreamEndCapture(s, &graph));
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        CUDA_OK(cudaMemsetAsync(y2, 0, (size_t)M * N * 2, s));
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaStreamSynchronize(s));
        auto a1 = dev_download((const uint16_t *)y1, (size_t)M * N), a2 = dev_download((const uint16_t *)y2, (size_t)M * N);
        auto b1 = dev_download((const float *)z1, (size_t)M * N), b2 = dev_download((const float *)z2, (size_t)M * N);
        const bool ok = a1 == a2 && memcmp(b1.data(), b2.data(), b1.size() * 4) == 0;
        result(ok, "xnor_graph", "pack + xnor_gemm + bwn_gemm captured in a CUDA graph, replayed twice: bit-identical "
               "to the direct launches (deterministic: no atomics)");
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
        cudaStreamDestroy(s);
        cudaFree(y1); cudaFree(y2); cudaFree(z1); cudaFree(z2);
        cudaFree(dxf); cudaFree(dwf); cudaFree(dxb);
        dx.free_all();
        dw.free_all();
    }
}

int main(int argc, char **argv) {
    uint64_t seed = 20260501;
    bool cpu_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-only")) cpu_only = true;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], nullptr, 10);
        else {
            fprintf(stderr, "usage: %s [--cpu-only] [--seed N (default 20260501)]\n", argv[0]);
            return 2;
        }
    }
    printf("test_xnor_gemm: seed %llu\n", (unsigned long long)seed);
    cpu_checks(seed);
    int ndev = 0;
    cudaDeviceProp prop;
    if (cpu_only) {
        printf("SKIP xnor_gemm: --cpu-only\n");
        g_skip++;
    } else if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        printf("SKIP xnor_gemm: no CUDA device\n");
        g_skip++;
    } else if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9 || prop.minor != 0) {
        printf("SKIP xnor_gemm: device is sm_%d%d, this build is sm_90a only\n", prop.major, prop.minor);
        g_skip++;
    } else {
        printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
        Rng r(seed + 1);
        gpu_pack_tests(r);
        gpu_gemm_tests(r);
        gpu_bwn_tests(r);
        gpu_misc_tests(r);
    }
    printf("%d passed, %d failed, %d skipped\n", g_pass, g_fail, g_skip);
    return g_fail ? 1 : 0;
}
