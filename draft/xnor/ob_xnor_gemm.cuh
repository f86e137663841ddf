/* ob_xnor_gemm.cuh - DRAFT (issue 8) - binary tensor-core XNOR GEMM, its packers, and a binary-weight x bf16 GEMM.
 * MIT licence (see onebit.h). Standalone: needs only the CUDA runtime. sm_90a (H100); mma.sync b1 also exists on sm_80+.
 *
 * DO THIS in exactly one .cu file:
 *     #define ONEBIT_IMPLEMENTATION          (or OB_XNOR_IMPLEMENTATION)
 *     #include "ob_xnor_gemm.cuh"
 * and build with nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a. Anywhere else include it for the
 * declarations (they are plain C: pointers, ints, cudaError_t, cudaStream_t).
 *
 * API, by task (every launcher is stream-ordered, allocates nothing, returns a cudaError_t and never
 * synchronises, so all of them can be captured in a CUDA graph; call ob_xnor_prepare() once before the first
 * capture: it sets the kernels' shared-memory limits, which a launcher otherwise does on its first call):
 *   ob_xnor_pack_weights(wbits, alpha, wpopc, w, N, K, gs, stream)   W (N x K fp32) -> bits, alpha[N][G], popc[N][G]
 *   ob_xnor_pack_acts(xbits, beta, xpopc, x, M, K, gs, stream)       X (M x K fp32) -> bits, beta[M],     popc[M][G]
 *   ob_xnor_gemm(y, out, xbits, beta, xpopc, wbits, alpha, wpopc, M, N, K, gs, stream)
 *        Y[m][n] = beta[m] * sum_g alpha[n][g] * dot_g(m, n)           (M x N, out = OB_XNOR_OUT_F32 or _BF16)
 *   ob_bwn_gemm(y, out, x_bf16, wbits, alpha, M, N, K, gs, stream)
 *        Y[m][n] = sum_g alpha[n][g] * sum_{k in g} s(w[n][k]) * x[m][k]  (binary weights x bf16 activations)
 *   ob_xnor_gemm_ex / ob_bwn_gemm_ex: the same with the variant chosen (benchmarks and tests).
 *
 * FORMATS (G = K / gs groups per row; gs = 128 or 256; K % gs == 0):
 *   bits   uint32 [rows][K/32]: element k of a row is bit (k % 32) of word k / 32, LSB first (the seed
 *          artifact's order). Bit 1 means +1, bit 0 means -1; sign(0) = +1, i.e. bit = (v >= 0) (so -0.0 -> +1;
 *          NaN -> -1).
 *   popc   uint16 [rows][G]: number of 1 bits in the group (0..gs).
 *   alpha  fp32   [N][G]: max(mean over the group of |w|, 1e-8), the seeds' group scale (onebit.h
 *          ob_binarize_weights_ref without its optional fp8 rounding: round alpha afterwards if wanted; the
 *          GEMM reads whatever alpha it is given).
 *   beta   fp32   [M]: max(mean over the row of |x|, 1e-8) (ob_binarize_act_ref).
 *   Sums of |v| are fp32 in a fixed order (one float4 per lane: (|v0|+|v1|)+(|v2|+|v3|); the lanes' values of
 *   a group added (two chunks per lane first when gs = 256) by the xor butterfly 16, 8, 4, 2, 1; beta's row
 *   sum adds the group sums in order), so a CPU mirror reproduces them bit for bit (the test does). They
 *   differ from onebit.h's double-precision sums by about one fp32 rounding (relative <= 1e-6).
 *
 * THE XNOR GEMM. For +-1 vectors a, b of one group stored as bits, a.b = gs - 2 popc(a ^ b) and
 * popc(a ^ b) = pa + pb - 2 popc(a & b) (pa, pb the group popcounts), so
 *        dot_g = 4 c - 2 pa - 2 pb + gs = 2 (2c - pa) + (gs - 2 pb),     c = popc(a & b)  (the MMA's AND.POPC)
 * and    Y[m][n] / beta[m] = 2 sum_g alpha[n][g] (2 c_g - pa[m][g]) + s[n],    s[n] = sum_g alpha[n][g] (gs - 2 pb[n][g]).
 * The tensor core gives c_g exactly (mma.sync.m16n8k256 .and.popc: one MMA per 16x8 tile per group at
 * gs = 256; m16n8k128 per group at gs = 128). s[n] depends on n only (computed per CTA from alpha and pb).
 * The per-(element, group) term 2c - pa is centred (about 0 for random signs, |2c - pa| <= |dot|/2 + |gs/2 - pb|),
 * so folding it does not cancel catastrophically the way sum alpha c - sum alpha pa / 2 would.
 *
 * THE FOLD, int32 -> fp32 without I2F (the inner loop's hot spot: I2F issues at 16/clk/SM and would cap the
 * kernel near 2,100 TOPS). The MMA's int32 result c (0 <= c <= 256) is reinterpreted as a float: its bits
 * are the subnormal c * 2^-149. One FFMA with an exact power-of-two factor turns it into a normal number and
 * subtracts pa in the same rounding-free step:
 *        r = fma(2^127, as_float(c), -pa * 2^-23) = (2c - pa) * 2^-23          (exact: a small integer times 2^-23)
 *        acc = fma(alpha, r, acc)                                              (the only rounding per group)
 *        Y = beta * fma(2^24, acc, s[n])                                      (epilogue)
 * Two FFMAs per (element, group) and nothing else: no IADD, no FADD, no I2F, no per-(m, n) constant. This needs
 * subnormal inputs to FFMA: the FMAs are written as PTX fma.rn.f32 (no .ftz), so --use_fast_math / -ftz=true
 * cannot break them. Variant OB_XNOR_FOLD_MAGIC (the fallback, if subnormal FFMA turned out slow) seeds the
 * MMA's C input with 0x4B000000, so its result is the float 2^23 + c, and folds with FADD (-2^23, exact),
 * FFMA (2x - pa, exact), FFMA (alpha): three ops. Both variants give bit-identical acc (same exact r, same FFMA).
 * Ceiling (issue-bound: 4 warp-instructions/clk/SM): the fold alone is 8 FFMA per 16x8 tile-group (per BMMA),
 * i.e. <= 0.5 BMMA/clk/SM -> 65,536 ops x 0.5 x 132 SMs x 1.755 GHz ~ 7.6 POPS; the SASS as compiled spends
 * ~10.7 warp-instructions per BMMA (fold + LDSM/LDS + index math) -> ~5.7 POPS at K = 4,096 (the MMA itself
 * would allow ~10.3). The fold, not the tensor core, bounds the compute-bound shape: the >= 8,000 TOPS target
 * of issue 8 needs fewer than 2 fp32 ops per (element, group) -- README "left to do" says how.
 *
 * TILING (ob__k_xnor_gemm): CTA tile 128 (M) x 128 (N), 8 warps as 2 (M) x 4 (N), warp tile 64 x 32 = 4 m16 x 4 n8
 * MMA tiles, 64 fp32 accumulators per thread; __launch_bounds__(256, 2): two CTAs per SM so that one CTA's
 * epilogue (the HBM write, which is the bound at K = 1,024) overlaps the other's MMAs.
 *   Shared memory: a stage holds 1,024 bits (128 bytes) of every one of the 128 activation rows and 128 weight
 *   rows (16 KB + 16 KB); two stages (double buffering with cp.async.cg 16-byte copies, zero-filled past M, N
 *   or K) when K > 1,024, one when K <= 1,024 (then the two co-resident CTAs provide the overlap). A 128-byte
 *   row is eight 16-byte chunks; chunk j of row r is stored at chunk j ^ (r & 7) (the 128B swizzle), so the
 *   8 rows that one ldmatrix phase reads fall in 8 different bank groups (without it: 8-way conflicts).
 *   Per CTA also: -pa * 2^-23 [G][128] (rows permuted so rows g, g+8 of an m16 tile are adjacent: one LDS.64),
 *   alpha [G][128], s[128], beta[128], loaded once; the epilogue reuses the stage buffers as the output tile
 *   (row pitch padded by 16 / 32 bytes: conflict-free fragment stores) and writes it with 16-byte coalesced
 *   stores, masked at the M and N edges.
 *   Fragments (PTX ISA, mma.m16n8k256 .b1, lane = 4 g + t): a0 = row g, bits 32t..32t+31 of the k-step; a1 = row
 *   g + 8; a2, a3 = rows g, g + 8 at bit + 128. b0 = column (weight row) g, bits 32t..; b1 = bits + 128.
 *   C: c0, c1 = row g, columns 2t, 2t + 1; c2, c3 = row g + 8. Register bit i = k 32t + i (LSB first).
 *   ldmatrix is type-blind: .x4 on a 16-row x 32-byte slice with lanes 0-15 addressing rows 0-15 at byte 0 and
 *   lanes 16-31 rows 0-15 at byte 16 returns exactly a0..a3; on weights (lanes 0-7 rows 0-7 byte 0, 8-15 rows
 *   0-7 byte 16, 16-23 rows 8-15 byte 0, 24-31 rows 8-15 byte 16) it returns b0, b1 of two n8 tiles. For
 *   m16n8k128 (gs = 128) the same loads give {a0, a1, b0} of the first group and {a2, a3, b1} of the second.
 *   (Correctness does not depend on the bit order inside a group -- A and B are read through the same byte
 *   mapping and AND.POPC sums over the whole k-slice -- only on the row mapping; the test checks it.)
 * Bounds (H100 SXM, 3.0 TB/s copy, 10.3 POPS mma.sync b1): at M = 65,536, N = 2,048, K = 1,024 the bf16 output is
 * 268 MB: ~89 us to write, against ~27 us of b1 MMA and ~55 us of issue for the fold and epilogue, spread over
 * both CTAs of an SM; target <= 0.105 ms (85% of the write floor, >= 3x cuBLAS bf16). At K = 4,096, M = 65,536,
 * N = 1,024 the kernel is compute-bound (~45 us of output write against ~54 us of b1 MMA at the mma.sync
 * peak): the issue's target is >= 8,000 TOPS (69 us); the estimate above for this design is ~5,700 (96 us).
 *
 * THE BINARY-WEIGHT x BF16 GEMM (ob__k_bwn; for layers whose input is not binarised; tuned for M = 1..64).
 * mma.sync.m16n8k16 bf16 with fp32 accumulation, weight rows as the MMA's M (a slab of 16 per warp, 1..8 slabs
 * per CTA so that the grid keeps ~2 CTAs per SM), tokens as its N (8 per n-tile, MT = 1, 2, 4, 8 n-tiles per
 * CTA), each slab's groups split over its warps (cross-warp sum in shared memory, fixed order: deterministic),
 * a fresh fp32 fragment per group folded with alpha by FFMA. The weight
 * bits are decoded in registers to bf16 +-1 (0x3F80 / 0xBF80): the MMA's k order inside a 32-bit word is
 * permuted so that one register's two bf16 come from bits q and q + 16 of the same word -- then one shift
 * and one LOP3 make a register: ((~(w << (15 - q))) & 0x80008000) | 0x3F803F80. The activations are read with
 * the same permutation (pair q = {x[32 j + q], x[32 j + q + 16]}), staged in shared memory when the CTA's
 * tokens x K fit (else read from global/L1 as two u16 each). Lane (g, t) of k16-step s uses q = 8s + t for
 * a0/a1/b0 and q = 8s + 4 + t for a2/a3/b1.
 * At M = 1 the kernel streams N K / 8 bytes of bits (+ 4 N G bytes of alpha), the next group's words loaded
 * while the current one is computed, and spends ~11 warp-instructions per 16 x 16 weight block (8 for the
 * decode, 2 LDS, 1 HMMA): the issue time is ~1.2x the HBM time of the bits, so expect ~70-85% of the copy rate
 * on a matrix much larger than L2; model-sized matrices (128-512 KB of bits) are launch-latency bound.
 */
#ifndef OB_XNOR_GEMM_CUH
#define OB_XNOR_GEMM_CUH

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifndef OB_XNOR_DEF
#ifdef ONEBIT_STATIC
#define OB_XNOR_DEF static
#else
#define OB_XNOR_DEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum { OB_XNOR_OUT_F32 = 0, OB_XNOR_OUT_BF16 = 1 };        /* output element type of the GEMMs */
/* ob_xnor_gemm_ex's variant, bits: the fold (see the top comment); OB_XNOR_ONE_TILE (the first design, one output
 * tile per CTA) or OB_XNOR_PERSISTENT forces a kernel, else the persistent one runs where it was measured faster
 * (K <= 1,024 and N <= 3,072) and the one-tile one elsewhere; every variant gives the same bits */
enum { OB_XNOR_FOLD_SUBNORMAL = 0, OB_XNOR_FOLD_MAGIC = 1, OB_XNOR_ONE_TILE = 2, OB_XNOR_PERSISTENT = 4 };
enum { OB_BWN_AUTO = 0, OB_BWN_XSMEM = 1, OB_BWN_XGLOBAL = 2 }; /* ob_bwn_gemm_ex: where B fragments come from */

/* Sets the dynamic shared-memory limits of every kernel; call once per device before capturing a graph. */
OB_XNOR_DEF cudaError_t ob_xnor_prepare(void);
/* W (N x K fp32, row-major, 16-byte aligned) -> wbits (N x K/32), alpha (N x G), wpopc (N x G). */
OB_XNOR_DEF cudaError_t ob_xnor_pack_weights(uint32_t *wbits, float *alpha, uint16_t *wpopc, const float *w, int N, int K,
                                             int gs, cudaStream_t stream);
/* X (M x K fp32, row-major, 16-byte aligned) -> xbits (M x K/32), beta (M), xpopc (M x G). */
OB_XNOR_DEF cudaError_t ob_xnor_pack_acts(uint32_t *xbits, float *beta, uint16_t *xpopc, const float *x, int M, int K,
                                          int gs, cudaStream_t stream);
/* Y (M x N, row-major, fp32 or bf16 by out) = beta . (XNOR dots scaled by alpha); any M >= 0, N >= 1, K % gs == 0. */
OB_XNOR_DEF cudaError_t ob_xnor_gemm(void *y, int out, const uint32_t *xbits, const float *beta, const uint16_t *xpopc,
                                     const uint32_t *wbits, const float *alpha, const uint16_t *wpopc, int M, int N, int K,
                                     int gs, cudaStream_t stream);
OB_XNOR_DEF cudaError_t ob_xnor_gemm_ex(void *y, int out, const uint32_t *xbits, const float *beta, const uint16_t *xpopc,
                                        const uint32_t *wbits, const float *alpha, const uint16_t *wpopc, int M, int N,
                                        int K, int gs, int variant, cudaStream_t stream);
/* Bytes of dynamic shared memory ob_xnor_gemm needs (0: K too large for one CTA's tables). */
OB_XNOR_DEF size_t ob_xnor_gemm_smem_bytes(int K, int gs, int out);
/* Y (M x N) = x (M x K bf16 bits, row-major, 4-byte aligned) times the binary weights (wbits, alpha). */
OB_XNOR_DEF cudaError_t ob_bwn_gemm(void *y, int out, const void *x_bf16, const uint32_t *wbits, const float *alpha, int M,
                                    int N, int K, int gs, cudaStream_t stream);
OB_XNOR_DEF cudaError_t ob_bwn_gemm_ex(void *y, int out, const void *x_bf16, const uint32_t *wbits, const float *alpha,
                                       int M, int N, int K, int gs, int xpath, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

/* ------------------------------------------------------------------------------------------------
 * Index helpers shared by the kernels and the host-side fragment emulation in test_xnor_gemm.cu
 * ---------------------------------------------------------------------------------------------- */
#ifdef __CUDACC__
#define OB__XHD static __host__ __device__ __forceinline__
#else
#define OB__XHD static inline
#endif
enum { OB__XG_BM = 128, OB__XG_BN = 128, OB__XG_ROWB = 128 /* bytes of a row in a stage: 1,024 bits */ };
/* byte offset of 16-byte chunk ch (0..7) of stage row r: the 128B XOR swizzle */
OB__XHD int ob__xg_swz(int r, int ch) { return r * OB__XG_ROWB + ((ch ^ (r & 7)) << 4); }
/* ldmatrix.x4 address (byte offset in the A stage) of `lane` for the m16 tile at row mb, 256-bit k-step ks */
OB__XHD int ob__xg_a_off(int mb, int ks, int lane) { return ob__xg_swz(mb + (lane & 15), 2 * ks + (lane >> 4)); }
/* the same for two n8 weight tiles at row nb: regs = {b0, b1} of tile nb, {b0, b1} of tile nb + 8 */
OB__XHD int ob__xg_b_off(int nb, int ks, int lane) {
    return ob__xg_swz(nb + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1));
}
/* position in the smem table of tile row r (0..127): rows g and g + 8 of each m16 tile adjacent */
OB__XHD int ob__xg_rowperm(int r) { return (r & ~15) + ((r & 7) << 1) + ((r >> 3) & 1); }
/* binary-weight kernel: pair index q (0..15) of k16-step s (0, 1) of a 32-k word, register half h (0: a0/a1/b0,
 * 1: a2/a3/b1), lane column t: the MMA's k = 2t + 8h, 2t + 8h + 1 are the word's bits q, q + 16 */
OB__XHD int ob__bwn_q(int s, int h, int t) { return 8 * s + 4 * h + t; }
/* bits q and q + 16 of w as a bf16 pair (low half: bit q): bit 1 -> +1.0 (0x3F80), bit 0 -> -1.0 (0xBF80) */
OB__XHD uint32_t ob__bwn_dec(uint32_t w, int q) { return (~(w << (15 - q)) & 0x80008000u) | 0x3F803F80u; }

#endif /* OB_XNOR_GEMM_CUH */

/* ================================================================================================
 * Implementation
 * ============================================================================================== */
#if defined(ONEBIT_IMPLEMENTATION) || defined(OB_XNOR_IMPLEMENTATION)
#ifndef OB_XNOR_GEMM_IMPLEMENTED
#define OB_XNOR_GEMM_IMPLEMENTED

#include <cuda_runtime.h>
#include <cuda_bf16.h>

/* ------------------------------------------------------------------------------------------------
 * Device helpers
 * ---------------------------------------------------------------------------------------------- */
/* exact float of 0 <= u < 2^23 without I2F: 2^23 + u has u as its mantissa */
static __device__ __forceinline__ float ob__u2f(uint32_t u) { return __uint_as_float(0x4B000000u | u) - 8388608.0f; }
/* a * b + c with subnormals honoured whatever -ftz says (the fold feeds FFMA a subnormal operand) */
static __device__ __forceinline__ float ob__fma(float a, float b, float c) {
    float d;
    asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(a), "f"(b), "f"(c));
    return d;
}
static __device__ __forceinline__ uint32_t ob__smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
/* 16-byte global -> shared copy, zero-filled (no read) when !valid */
static __device__ __forceinline__ void ob__cp16(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
static __device__ __forceinline__ void ob__cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void ob__cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
static __device__ __forceinline__ void ob__ldsm4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
/* d = popc(A & B) + cin over 256 bits (one group at gs = 256) */
static __device__ __forceinline__ void ob__bmma256(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int cin) {
    asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(cin), "r"(cin), "r"(cin), "r"(cin));
}
/* d = popc(A & B) + cin over 128 bits (one group at gs = 128) */
static __device__ __forceinline__ void ob__bmma128(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0, int cin) {
    asm("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%7, %8, %9, %10};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(cin), "r"(cin), "r"(cin), "r"(cin));
}
/* c += A (16 x 16 bf16) B (16 x 8 bf16), fp32 accumulation */
static __device__ __forceinline__ void ob__hmma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* ob__bwn_dec in two instructions: SHF + one LOP3 (d = ~a & b | c, LUT 0xAE); written out because the compiler
 * otherwise splits the two constants over two LOP3s */
static __device__ __forceinline__ uint32_t ob__bwn_dec_dev(uint32_t w, int q) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xAE;" : "=r"(d) : "r"(w << (15 - q)), "r"(0x80008000u), "n"(0x3F803F80));
    return d;
}
static __device__ __forceinline__ float ob__warp_sum(float v) { /* xor butterfly 16, 8, 4, 2, 1: all lanes equal */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * Packing: one warp per row; one float4 per lane per 128-element chunk, 8 chunks loaded before use (32 KB
 * in flight per SM at 64 warps: enough for HBM). The 4 signs of a lane form a nibble; an OR butterfly over
 * 8 lanes (xor 1, 2, 4) assembles word j of a chunk in lanes 8j..8j+7, and a shuffle hands word w of the
 * 8-chunk batch to lane w, so the bits leave as one coalesced 128-byte store per 1,024 elements.
 * ACT: beta per row (group sums added in order); else alpha per group.
 * ---------------------------------------------------------------------------------------------- */
template <int GS, bool ACT>
__global__ void __launch_bounds__(256) ob__k_xnor_pack(uint32_t *__restrict__ bits, uint16_t *__restrict__ popc,
                                                       float *__restrict__ scale, const float *__restrict__ src, int rows,
                                                       int K) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (row >= rows) return; /* uniform per warp */
    const float4 *s4 = reinterpret_cast<const float4 *>(src + (size_t)row * K);
    uint32_t *brow = bits + (size_t)row * (K / 32);
    const int G = K / GS, nch = K / 128;
    float rowsum = 0.0f;
    for (int b0 = 0; b0 < nch; b0 += 8) {
        float4 v[8];
#pragma unroll
        for (int i = 0; i < 8; i++)
            if (b0 + i < nch) v[i] = __ldg(s4 + (size_t)(b0 + i) * 32 + lane);
        uint32_t mine = 0;
        float part = 0.0f;
        int ppart = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            if (b0 + i >= nch) break; /* uniform */
            const float4 q = v[i];
            const uint32_t nib = (q.x >= 0.0f ? 1u : 0u) | (q.y >= 0.0f ? 2u : 0u) | (q.z >= 0.0f ? 4u : 0u) |
                                 (q.w >= 0.0f ? 8u : 0u);
            const float sa = (fabsf(q.x) + fabsf(q.y)) + (fabsf(q.z) + fabsf(q.w));
            uint32_t u = nib << (4 * (lane & 7));
            u |= __shfl_xor_sync(0xffffffffu, u, 1);
            u |= __shfl_xor_sync(0xffffffffu, u, 2);
            u |= __shfl_xor_sync(0xffffffffu, u, 4);
            const uint32_t wv = __shfl_sync(0xffffffffu, u, (lane & 3) * 8);
            if ((lane >> 2) == i) mine = wv;
            const int cnt = __popc(nib);
            float gsum;
            int gcnt, gi;
            if (GS == 128) {
                gsum = ob__warp_sum(sa);
                gcnt = __reduce_add_sync(0xffffffffu, cnt);
                gi = b0 + i;
            } else {
                if ((i & 1) == 0) { part = sa; ppart = cnt; continue; }
                gsum = ob__warp_sum(part + sa);
                gcnt = __reduce_add_sync(0xffffffffu, ppart + cnt);
                gi = (b0 + i) >> 1;
            }
            if (lane == 0) {
                popc[(size_t)row * G + gi] = (uint16_t)gcnt;
                if (!ACT) scale[(size_t)row * G + gi] = fmaxf(gsum / (float)GS, 1e-8f);
            }
            if (ACT) rowsum += gsum;
        }
        const int nw = 4 * min(8, nch - b0);
        if (lane < nw) brow[b0 * 4 + lane] = mine;
    }
    if (ACT && lane == 0) scale[row] = fmaxf(rowsum / (float)K, 1e-8f);
}

/* ------------------------------------------------------------------------------------------------
 * The XNOR GEMM (design in the top comment)
 * ---------------------------------------------------------------------------------------------- */
enum { OB__XG_THREADS = 256, OB__XG_STAGE = (OB__XG_BM + OB__XG_BN) * OB__XG_ROWB /* 32 KB */ };
/* output tile row pitch in bytes: +16 (bf16) / +32 (fp32) keeps the fragment stores conflict-free */
#define OB__XG_OPITCH(out) ((out) == OB_XNOR_OUT_BF16 ? OB__XG_BN * 2 + 16 : OB__XG_BN * 4 + 32)

static size_t ob__xg_ops_bytes(int K, int out) {
    const int nch = (K / 8 + OB__XG_ROWB - 1) / OB__XG_ROWB;
    const size_t st = (size_t)(nch > 1 ? 2 : 1) * OB__XG_STAGE, ot = (size_t)OB__XG_BM * OB__XG_OPITCH(out);
    return st > ot ? st : ot;
}

/* One K chunk (up to 4 k-steps of 256 bits) of a CTA tile from stage buffer `stage`: the binary MMAs and the
 * fold into acc (design in the top comment). Shared by both XNOR kernels, so their results are the same bits. */
template <int GS, int FOLD>
static __device__ __forceinline__ void ob__xg_chunk(float (&acc)[4][4][4], const unsigned char *stage, const float *km_s,
                                                    const float *al_s, int c, int K, int wm, int wn, int lane) {
    constexpr int BM = OB__XG_BM, BN = OB__XG_BN;
    const int g = lane >> 2, t = lane & 3;
    const int cin = FOLD == OB_XNOR_FOLD_SUBNORMAL ? 0 : 0x4B000000;
    const uint32_t sA = ob__smem_addr(stage), sB = sA + BM * OB__XG_ROWB;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        const int kbit = c * 1024 + ks * 256;
        if (kbit >= K) break;
        uint32_t b[4][2];
#pragma unroll
        for (int np = 0; np < 2; np++) {
            uint32_t r[4];
            ob__ldsm4(r, sB + ob__xg_b_off(wn * 32 + np * 16, ks, lane));
            b[2 * np][0] = r[0]; b[2 * np][1] = r[1]; b[2 * np + 1][0] = r[2]; b[2 * np + 1][1] = r[3];
        }
        /* the groups of this k-step: one at gs = 256, two (second only inside K) at gs = 128 */
        constexpr int NGRP = 256 / GS;
#pragma unroll
        for (int mt = 0; mt < 4; mt++) {
            uint32_t a[4];
            ob__ldsm4(a, sA + ob__xg_a_off(wm * 64 + mt * 16, ks, lane));
#pragma unroll
            for (int h = 0; h < NGRP; h++) {
                if (h == 1 && kbit + 128 >= K) break;
                const int gi = kbit / GS + h;
                const float2 km = reinterpret_cast<const float2 *>(km_s + gi * BM + wm * 64 + mt * 16)[g];
                const float2 *alp = reinterpret_cast<const float2 *>(al_s + gi * BN + wn * 32);
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    const float2 al = alp[nt * 4 + t];
                    int d[4];
                    if (GS == 256) ob__bmma256(d, a, b[nt][0], b[nt][1], cin);
                    else ob__bmma128(d, a[2 * h], a[2 * h + 1], b[nt][h], cin);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float kmv = i < 2 ? km.x : km.y, alv = (i & 1) ? al.y : al.x;
                        float r;
                        if (FOLD == OB_XNOR_FOLD_SUBNORMAL) {
                            r = ob__fma(0x1p127f, __int_as_float(d[i]), kmv); /* (2c - pa) 2^-23, exact */
                        } else {
                            r = __int_as_float(d[i]) - 8388608.0f; /* c, exact */
                            r = ob__fma(2.0f, r, kmv);             /* 2c - pa, exact */
                        }
                        acc[mt][nt][i] = ob__fma(alv, r, acc[mt][nt][i]);
                    }
                }
            }
        }
    }
}

template <int GS, int OUT, int FOLD>
__global__ void __launch_bounds__(OB__XG_THREADS, 2)
    ob__k_xnor_gemm(void *__restrict__ y, const uint32_t *__restrict__ xb, const float *__restrict__ beta,
                    const uint16_t *__restrict__ xpc, const uint32_t *__restrict__ wb, const float *__restrict__ alpha,
                    const uint16_t *__restrict__ wpc, int M, int N, int K, int ops_bytes) {
    extern __shared__ __align__(128) unsigned char ob__xg_smem[];
    constexpr int BM = OB__XG_BM, BN = OB__XG_BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3; /* warp tile: rows wm*64.., cols wn*32.. */
    const int g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int G = K / GS, KB = K / 8, nch = (KB + OB__XG_ROWB - 1) / OB__XG_ROWB;
    unsigned char *ops = ob__xg_smem;
    float *km_s = reinterpret_cast<float *>(ob__xg_smem + ops_bytes); /* [G][BM] -pa 2^-23 (FOLD 1: -pa), rowperm */
    float *al_s = km_s + (size_t)G * BM;                             /* [G][BN] alpha */
    float *sn_s = al_s + (size_t)G * BN;                             /* [BN] s[n] */
    float *be_s = sn_s + BN;                                         /* [BM] beta */

    /* stage c of the K loop -> buffer st: 128 rows x 8 chunks for A and for B, 4 + 4 cp.async per thread */
    const unsigned char *xg = reinterpret_cast<const unsigned char *>(xb), *wg = reinterpret_cast<const unsigned char *>(wb);
    auto load_stage = [&](int c, int st) {
        const uint32_t sA = ob__smem_addr(ops + (size_t)st * OB__XG_STAGE), sB = sA + BM * OB__XG_ROWB;
        const int kb0 = c * OB__XG_ROWB;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int idx = tid + i * OB__XG_THREADS, r = idx >> 3, ch = idx & 7, kb = kb0 + ch * 16;
            const bool va = m0 + r < M && kb < KB, vb = n0 + r < N && kb < KB;
            ob__cp16(sA + ob__xg_swz(r, ch), va ? xg + (size_t)(m0 + r) * KB + kb : xg, va);
            ob__cp16(sB + ob__xg_swz(r, ch), vb ? wg + (size_t)(n0 + r) * KB + kb : wg, vb);
        }
    };
    load_stage(0, 0);
    ob__cp_commit();
    if (nch > 1) load_stage(1, 1);
    ob__cp_commit(); /* always: keeps the group count uniform */

    /* per-CTA tables, while the first stages are in flight (no integer division: it would bring I2F) */
    static_assert(BM == 128 && BN == 128 && OB__XG_THREADS == 256, "table loops assume 2 x 128 threads");
    for (int gi = tid >> 7; gi < G; gi += 2) {
        const int r = tid & 127, m = m0 + r, n = n0 + r;
        const float pa = m < M ? ob__u2f(xpc[(size_t)m * G + gi]) : 0.0f;
        km_s[gi * BM + ob__xg_rowperm(r)] = FOLD == OB_XNOR_FOLD_SUBNORMAL ? pa * -0x1p-23f : -pa;
        al_s[gi * BN + r] = n < N ? alpha[(size_t)n * G + gi] : 0.0f;
    }
    if (tid < BN) { /* s[n] = sum_g alpha (gs - 2 pb), in g order */
        const int n = n0 + tid;
        float s = 0.0f;
        if (n < N)
            for (int gi = 0; gi < G; gi++)
                s = ob__fma(alpha[(size_t)n * G + gi], (float)GS - 2.0f * ob__u2f(wpc[(size_t)n * G + gi]), s);
        sn_s[tid] = s;
    } else if (tid < BN + BM) {
        const int m = m0 + tid - BN;
        be_s[tid - BN] = m < M ? beta[m] : 0.0f;
    }

    float acc[4][4][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;

    for (int c = 0; c < nch; c++) {
        const int st = nch > 1 ? (c & 1) : 0;
        ob__cp_wait<1>();
        __syncthreads();
        ob__xg_chunk<GS, FOLD>(acc, ops + (size_t)st * OB__XG_STAGE, km_s, al_s, c, K, wm, wn, lane);
        __syncthreads(); /* everyone is done with buffer st */
        if (c + 2 < nch) load_stage(c + 2, st);
        ob__cp_commit();
    }
    ob__cp_wait<0>();

    /* epilogue: Y = beta (2^24 acc + s) (FOLD 1: 2 acc + s) -> output tile in smem -> 16-byte stores */
    constexpr float SC = FOLD == OB_XNOR_FOLD_SUBNORMAL ? 0x1p24f : 2.0f;
    constexpr int OP = OB__XG_OPITCH(OUT);
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        const int r0 = wm * 64 + mt * 16 + g;
        const float be0 = be_s[r0], be1 = be_s[r0 + 8];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int cc = wn * 32 + nt * 8 + 2 * t;
            const float2 sn = *reinterpret_cast<const float2 *>(sn_s + cc);
            const float v00 = be0 * ob__fma(SC, acc[mt][nt][0], sn.x), v01 = be0 * ob__fma(SC, acc[mt][nt][1], sn.y);
            const float v10 = be1 * ob__fma(SC, acc[mt][nt][2], sn.x), v11 = be1 * ob__fma(SC, acc[mt][nt][3], sn.y);
            if (OUT == OB_XNOR_OUT_BF16) {
                *reinterpret_cast<__nv_bfloat162 *>(ops + r0 * OP + cc * 2) = __floats2bfloat162_rn(v00, v01);
                *reinterpret_cast<__nv_bfloat162 *>(ops + (r0 + 8) * OP + cc * 2) = __floats2bfloat162_rn(v10, v11);
            } else {
                *reinterpret_cast<float2 *>(ops + r0 * OP + cc * 4) = make_float2(v00, v01);
                *reinterpret_cast<float2 *>(ops + (r0 + 8) * OP + cc * 4) = make_float2(v10, v11);
            }
        }
    }
    __syncthreads();
    constexpr int ES = OUT == OB_XNOR_OUT_BF16 ? 2 : 4, CPR = BN * ES / 16; /* 16-byte chunks per tile row */
    const bool vec = (N % (16 / ES)) == 0;
    for (int idx = tid; idx < BM * CPR; idx += OB__XG_THREADS) {
        const int r = idx / CPR, ch = idx - r * CPR, m = m0 + r, n = n0 + ch * (16 / ES);
        if (m >= M || n >= N) continue;
        const unsigned char *src = ops + r * OP + ch * 16;
        unsigned char *dst = reinterpret_cast<unsigned char *>(y) + ((size_t)m * N + n) * ES;
        if (vec && n + 16 / ES <= N) {
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
        } else {
            for (int j = 0; j < 16 / ES && n + j < N; j++) {
                if (ES == 2) reinterpret_cast<uint16_t *>(dst)[j] = reinterpret_cast<const uint16_t *>(src)[j];
                else reinterpret_cast<float *>(dst)[j] = reinterpret_cast<const float *>(src)[j];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * The persistent XNOR GEMM (the default since session 6). Same tiles, fragments, fold and results as
 * ob__k_xnor_gemm (bit for bit: the same fp32 operations in the same order), but a grid of 2 CTAs per SM
 * that walk the output tiles (tile t = blockIdx.x + i gridDim.x) and keep one stream of K chunks across
 * tiles: chunk q + 2 (possibly the next tile's, or the one after) is requested as soon as chunk q's buffer
 * is free, so at K = 1,024 (one chunk per tile) the next tile's operands land during this tile's MMAs and
 * epilogue. The profile of ob__k_xnor_gemm at 65,536 x 1,024 x 1,024 (ncu, H100) put 17 % of the stall samples
 * on one instruction waiting for the per-CTA tables' global loads and 6 % on barriers, with the SM issuing
 * only 2.0 instructions per clock of 4: the fixed cost per tile, not the MMAs. Here the tables' raw inputs
 * (popcounts, alpha, beta: contiguous ranges, since rows m0.. and n0.. of [rows][G] arrays are consecutive)
 * travel with the tile's first chunk by cp.async, and the per-tile tables are built from shared memory.
 * The bf16 output tile is staged in the buffer of the tile's last chunk (128 rows x 256 bytes, 16-byte chunks
 * XOR-swizzled by row & 15: conflict-free fragment stores), fp32 output is stored from the fragments
 * (float2: a quad covers one 32-byte sector). Needs 16-byte aligned xpopc, alpha, wpopc and beta (the
 * launcher falls back to ob__k_xnor_gemm otherwise).
 * ---------------------------------------------------------------------------------------------- */
/* 16-byte global -> shared copy of the first `bytes` (0..16) bytes, the rest zero-filled */
static __device__ __forceinline__ void ob__cp16n(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
/* raw per-tile table bytes: popc a [128][G] u16, alpha [128][G] f32, popc b [128][G] u16, beta [128] f32 */
static __host__ __device__ __forceinline__ int ob__xgp_raw_bytes(int G) { return 1024 * G + 512; }

template <int GS, int OUT, int FOLD>
__global__ void __launch_bounds__(OB__XG_THREADS, 2)
    ob__k_xnor_gemm_p(void *__restrict__ y, const uint32_t *__restrict__ xb, const float *__restrict__ beta,
                      const uint16_t *__restrict__ xpc, const uint32_t *__restrict__ wb, const float *__restrict__ alpha,
                      const uint16_t *__restrict__ wpc, int M, int N, int K, int tiles_m, int tiles_n, int step_m,
                      int step_n) {
    extern __shared__ __align__(128) unsigned char ob__xg_smem[];
    constexpr int BM = OB__XG_BM, BN = OB__XG_BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int g = lane >> 2, t = lane & 3;
    const int G = K / GS, KB = K / 8, nch = (KB + OB__XG_ROWB - 1) / OB__XG_ROWB;
    const int nraw = nch == 1 ? 2 : 1, RAW = ob__xgp_raw_bytes(G);
    unsigned char *ops = ob__xg_smem;                                  /* 2 stages */
    unsigned char *raw = ob__xg_smem + 2 * OB__XG_STAGE;               /* nraw x RAW */
    float *km_s = reinterpret_cast<float *>(raw + nraw * RAW);         /* [G][BM] -pa 2^-23 (FOLD 1: -pa), rowperm */
    float *al_s = km_s + (size_t)G * BM;                               /* [G][BN] alpha */
    float *sn_s = al_s + (size_t)G * BN;                               /* [BN] s[n] */
    float *be_s = sn_s + BN;                                           /* [BM] beta */
    const unsigned char *xg = reinterpret_cast<const unsigned char *>(xb), *wg = reinterpret_cast<const unsigned char *>(wb);

    /* this CTA's first tile; later ones are step_m / step_n (gridDim.x = step_m tiles_n + step_n) further on */
    int tm = blockIdx.x / tiles_n, tn = blockIdx.x - (blockIdx.x / tiles_n) * tiles_n;
    /* the load cursor: tile (lm, ln), its i-th of this CTA, chunk lc */
    int lm = tm, ln = tn, li = 0, lc = 0;
    auto issue = [&](int st) { /* the cursor's chunk into buffer st (+ the tile's raw tables at chunk 0), then advance */
        if (lm < tiles_m) {
            const int m0 = lm * BM, n0 = ln * BN, kb0 = lc * OB__XG_ROWB;
            const uint32_t sA = ob__smem_addr(ops + (size_t)st * OB__XG_STAGE), sB = sA + BM * OB__XG_ROWB;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int idx = tid + i * OB__XG_THREADS, r = idx >> 3, ch = idx & 7, kb = kb0 + ch * 16;
                const bool va = m0 + r < M && kb < KB, vb = n0 + r < N && kb < KB;
                ob__cp16(sA + ob__xg_swz(r, ch), va ? xg + (size_t)(m0 + r) * KB + kb : xg, va);
                ob__cp16(sB + ob__xg_swz(r, ch), vb ? wg + (size_t)(n0 + r) * KB + kb : wg, vb);
            }
            if (lc == 0) { /* four contiguous ranges, cut at the arrays' ends */
                const uint32_t rb = ob__smem_addr(raw + (size_t)(li & (nraw - 1)) * RAW);
                const int seg_off[4] = {0, 256 * G, 768 * G, 1024 * G}, seg_len[4] = {256 * G, 512 * G, 256 * G, 512};
                const unsigned char *seg_src[4] = {reinterpret_cast<const unsigned char *>(xpc) + (size_t)m0 * G * 2,
                                                   reinterpret_cast<const unsigned char *>(alpha) + (size_t)n0 * G * 4,
                                                   reinterpret_cast<const unsigned char *>(wpc) + (size_t)n0 * G * 2,
                                                   reinterpret_cast<const unsigned char *>(beta) + (size_t)m0 * 4};
                const long long seg_end[4] = {(long long)(M - m0) * G * 2, (long long)(N - n0) * G * 4,
                                              (long long)(N - n0) * G * 2, (long long)(M - m0) * 4};
#pragma unroll
                for (int sgi = 0; sgi < 4; sgi++)
                    for (int o = tid * 16; o < seg_len[sgi]; o += OB__XG_THREADS * 16) {
                        const long long left = seg_end[sgi] - o;
                        const int nb = left >= 16 ? 16 : left > 0 ? (int)left : 0;
                        ob__cp16n(rb + seg_off[sgi] + o, seg_src[sgi] + (nb ? o : 0), nb); /* nb = 0 reads nothing */
                    }
            }
            if (++lc == nch) {
                lc = 0;
                ++li;
                lm += step_m;
                ln += step_n;
                if (ln >= tiles_n) { ln -= tiles_n; ++lm; }
            }
        }
        ob__cp_commit(); /* always: keeps the group count uniform */
    };
    issue(0);
    issue(1);

    float acc[4][4][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;

    for (int q = 0, ti = 0; tm < tiles_m; ti++) {
        const int m0 = tm * BM, n0 = tn * BN;
        for (int c = 0; c < nch; c++, q++) {
            const int st = q & 1;
            ob__cp_wait<1>();
            __syncthreads(); /* chunk q (and at c = 0 the tile's raw tables) landed for everyone; the last tile's epilogue is done */
            if (c == 0) {    /* the per-tile tables, from the raw copies (no integer division: no I2F) */
                const unsigned char *rw = raw + (size_t)(ti & (nraw - 1)) * RAW;
                const uint16_t *rpa = reinterpret_cast<const uint16_t *>(rw), *rpb = reinterpret_cast<const uint16_t *>(rw + 768 * G);
                const float *ral = reinterpret_cast<const float *>(rw + 256 * G), *rbe = reinterpret_cast<const float *>(rw + 1024 * G);
                for (int gi = tid >> 7; gi < G; gi += 2) {
                    const int r = tid & 127;
                    const float pa = ob__u2f(rpa[r * G + gi]);
                    km_s[gi * BM + ob__xg_rowperm(r)] = FOLD == OB_XNOR_FOLD_SUBNORMAL ? pa * -0x1p-23f : -pa;
                    al_s[gi * BN + r] = ral[r * G + gi];
                }
                if (tid < BN) { /* s[n] = sum_g alpha (gs - 2 pb), in g order (zeros past N) */
                    float sv = 0.0f;
                    for (int gi = 0; gi < G; gi++) sv = ob__fma(ral[tid * G + gi], (float)GS - 2.0f * ob__u2f(rpb[tid * G + gi]), sv);
                    sn_s[tid] = n0 + tid < N ? sv : 0.0f;
                } else {
                    be_s[tid - BN] = rbe[tid - BN];
                }
                __syncthreads();
            }
            ob__xg_chunk<GS, FOLD>(acc, ops + (size_t)st * OB__XG_STAGE, km_s, al_s, c, K, wm, wn, lane);
            if (c == nch - 1) { /* epilogue: Y = beta (2^24 acc + s) (FOLD 1: 2 acc + s), then zero acc */
                constexpr float SC = FOLD == OB_XNOR_FOLD_SUBNORMAL ? 0x1p24f : 2.0f;
                unsigned char *ot = ops + (size_t)st * OB__XG_STAGE;
                if (OUT == OB_XNOR_OUT_BF16) __syncthreads(); /* everyone is done reading stage st */
#pragma unroll
                for (int mt = 0; mt < 4; mt++) {
                    const int r0 = wm * 64 + mt * 16 + g;
                    const float be0 = be_s[r0], be1 = be_s[r0 + 8];
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        const int cc = wn * 32 + nt * 8 + 2 * t;
                        const float2 sn = *reinterpret_cast<const float2 *>(sn_s + cc);
                        const float v00 = be0 * ob__fma(SC, acc[mt][nt][0], sn.x), v01 = be0 * ob__fma(SC, acc[mt][nt][1], sn.y);
                        const float v10 = be1 * ob__fma(SC, acc[mt][nt][2], sn.x), v11 = be1 * ob__fma(SC, acc[mt][nt][3], sn.y);
                        if (OUT == OB_XNOR_OUT_BF16) { /* chunk wn 4 + nt of the row, swizzled by row & 15 */
                            const int chk = wn * 4 + nt;
                            *reinterpret_cast<__nv_bfloat162 *>(ot + r0 * 256 + ((chk ^ (r0 & 15)) << 4) + 4 * t) = __floats2bfloat162_rn(v00, v01);
                            *reinterpret_cast<__nv_bfloat162 *>(ot + (r0 + 8) * 256 + ((chk ^ ((r0 + 8) & 15)) << 4) + 4 * t) =
                                __floats2bfloat162_rn(v10, v11);
                        } else {
                            const int n = n0 + cc;
                            float *y0 = reinterpret_cast<float *>(y);
#pragma unroll
                            for (int hr = 0; hr < 2; hr++) {
                                const int m = m0 + r0 + 8 * hr;
                                const float va = hr ? v10 : v00, vb = hr ? v11 : v01;
                                if (m >= M || n >= N) continue;
                                float *dst = y0 + (size_t)m * N + n;
                                if ((N & 1) == 0) *reinterpret_cast<float2 *>(dst) = make_float2(va, vb);
                                else {
                                    dst[0] = va;
                                    if (n + 1 < N) dst[1] = vb;
                                }
                            }
                        }
#pragma unroll
                        for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
                    }
                }
                if (OUT == OB_XNOR_OUT_BF16) {
                    __syncthreads();
                    const bool vec = (N & 7) == 0;
                    for (int idx = tid; idx < BM * 16; idx += OB__XG_THREADS) {
                        const int r = idx >> 4, ch = idx & 15, m = m0 + r, n = n0 + ch * 8;
                        if (m >= M || n >= N) continue;
                        const unsigned char *src = ot + r * 256 + ((ch ^ (r & 15)) << 4);
                        unsigned char *dst = reinterpret_cast<unsigned char *>(y) + ((size_t)m * N + n) * 2;
                        if (vec && n + 8 <= N) *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
                        else
                            for (int j = 0; j < 8 && n + j < N; j++) reinterpret_cast<uint16_t *>(dst)[j] = reinterpret_cast<const uint16_t *>(src)[j];
                    }
                }
            }
            __syncthreads(); /* everyone is done with buffer st (stage or output tile) */
            issue(st);
        }
        tm += step_m;
        tn += step_n;
        if (tn >= tiles_n) { tn -= tiles_n; ++tm; }
    }
    ob__cp_wait<0>();
}

/* ------------------------------------------------------------------------------------------------
 * Binary weights x bf16 activations (design in the top comment). A CTA covers RS slabs of 16 weight rows
 * (RS = 1, 2, 4 or 8, chosen by the launcher so that the grid still fills the GPU) and 8 MT tokens; each slab
 * has WPS = blockDim / (32 RS) warps splitting its groups. grid (ceil(N / (16 RS)), ceil(M / (8 MT))).
 * smem: [XS: ntok x (K/2 + 4) uint32 x pairs, staged once per CTA] + [warps][16][8 MT] fp32 partial sums.
 * With MT <= 2 the next group's weight words are loaded before the current group is computed (twice the
 * bytes in flight: at M = 1 the kernel is a stream of weight bits).
 * ---------------------------------------------------------------------------------------------- */
template <int MT, int GS, int OUT, bool XS>
__global__ void __launch_bounds__(256) ob__k_bwn(void *__restrict__ y, const uint16_t *__restrict__ x,
                                                 const uint32_t *__restrict__ wb, const float *__restrict__ alpha, int M,
                                                 int N, int K, int RS) {
    extern __shared__ __align__(16) unsigned char ob__bwn_smem[];
    constexpr int TOK = 8 * MT, WPG = GS / 32; /* tokens per CTA, words per group */
    constexpr bool PF = MT <= 2;               /* prefetch the next group's words */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5, WPS = nwarps / RS;
    const int slab = warp / WPS, split = warp - slab * WPS;
    const int g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * 16 * RS, tb0 = blockIdx.y * TOK;
    const int ntok = min(TOK, M - tb0), G = K / GS, KW = K / 32, KP = K / 2 + 4; /* KP: padded pair pitch */
    uint32_t *xs = reinterpret_cast<uint32_t *>(ob__bwn_smem);
    float *red = reinterpret_cast<float *>(ob__bwn_smem + (XS ? (size_t)ntok * KP * 4 : 0));

    if (XS) { /* x pairs in the kernel's k order: pair q of word j = {x[32j + q], x[32j + q + 16]} */
        for (int tl = 0; tl < ntok; tl++) {
            const uint16_t *xr = x + (size_t)(tb0 + tl) * K;
            for (int p = tid; p < K / 2; p += blockDim.x) {
                const int k = (p >> 4) * 32 + (p & 15);
                xs[tl * KP + p] = (uint32_t)xr[k] | ((uint32_t)xr[k + 16] << 16);
            }
        }
        __syncthreads();
    }
    const int rlo = n0 + 16 * slab + g, rhi = rlo + 8;
    const bool vlo = rlo < N, vhi = rhi < N;
    const uint4 *wlo = reinterpret_cast<const uint4 *>(wb + (size_t)(vlo ? rlo : 0) * KW);
    const uint4 *whi = reinterpret_cast<const uint4 *>(wb + (size_t)(vhi ? rhi : 0) * KW);
    float acc[MT][4];
#pragma unroll
    for (int j = 0; j < MT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;

    uint4 nl[WPG / 4], nh[WPG / 4]; /* the next group's words (PF) */
    auto load_words = [&](int gi, uint4 (&l)[WPG / 4], uint4 (&h)[WPG / 4]) {
#pragma unroll
        for (int u = 0; u < WPG / 4; u++) {
            l[u] = vlo && gi < G ? __ldg(wlo + gi * (WPG / 4) + u) : make_uint4(0, 0, 0, 0);
            h[u] = vhi && gi < G ? __ldg(whi + gi * (WPG / 4) + u) : make_uint4(0, 0, 0, 0);
        }
    };
    if (PF) load_words(split, nl, nh);
    for (int gi = split; gi < G; gi += WPS) {
        uint4 cl[WPG / 4], ch[WPG / 4];
        if (PF) {
#pragma unroll
            for (int u = 0; u < WPG / 4; u++) { cl[u] = nl[u]; ch[u] = nh[u]; }
            load_words(gi + WPS, nl, nh);
        } else {
            load_words(gi, cl, ch);
        }
        uint32_t Wl[WPG], Wh[WPG];
#pragma unroll
        for (int u = 0; u < WPG / 4; u++) {
            Wl[4 * u] = cl[u].x; Wl[4 * u + 1] = cl[u].y; Wl[4 * u + 2] = cl[u].z; Wl[4 * u + 3] = cl[u].w;
            Wh[4 * u] = ch[u].x; Wh[4 * u + 1] = ch[u].y; Wh[4 * u + 2] = ch[u].z; Wh[4 * u + 3] = ch[u].w;
        }
        const float al_lo = vlo ? __ldg(alpha + (size_t)rlo * G + gi) : 0.0f;
        const float al_hi = vhi ? __ldg(alpha + (size_t)rhi * G + gi) : 0.0f;
        float cf[MT][4];
#pragma unroll
        for (int j = 0; j < MT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) cf[j][i] = 0.0f;
#pragma unroll
        for (int w = 0; w < WPG; w++) {
            const int kw = gi * GS + 32 * w; /* first k of this word */
#pragma unroll
            for (int s = 0; s < 2; s++) {
                const int q0 = ob__bwn_q(s, 0, t), q1 = ob__bwn_q(s, 1, t);
                const uint32_t a[4] = {ob__bwn_dec_dev(Wl[w], q0), ob__bwn_dec_dev(Wh[w], q0),
                                       ob__bwn_dec_dev(Wl[w], q1), ob__bwn_dec_dev(Wh[w], q1)};
#pragma unroll
                for (int j = 0; j < MT; j++) {
                    const int tl = 8 * j + g;
                    uint32_t b0 = 0, b1 = 0;
                    if (tl < ntok) {
                        if (XS) {
                            const uint32_t *xp = xs + tl * KP + (kw >> 5) * 16;
                            b0 = xp[q0];
                            b1 = xp[q1];
                        } else {
                            const uint16_t *xr = x + (size_t)(tb0 + tl) * K + kw;
                            b0 = (uint32_t)__ldg(xr + q0) | ((uint32_t)__ldg(xr + q0 + 16) << 16);
                            b1 = (uint32_t)__ldg(xr + q1) | ((uint32_t)__ldg(xr + q1 + 16) << 16);
                        }
                    }
                    ob__hmma16816(cf[j], a, b0, b1);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < MT; j++) {
            acc[j][0] = ob__fma(al_lo, cf[j][0], acc[j][0]);
            acc[j][1] = ob__fma(al_lo, cf[j][1], acc[j][1]);
            acc[j][2] = ob__fma(al_hi, cf[j][2], acc[j][2]);
            acc[j][3] = ob__fma(al_hi, cf[j][3], acc[j][3]);
        }
    }
    /* C fragment: c0, c1 = weight row g, tokens 2t, 2t + 1 of n-tile j; c2, c3 = row g + 8 */
    float *rw = red + (size_t)warp * 16 * TOK;
#pragma unroll
    for (int j = 0; j < MT; j++) {
        rw[g * TOK + 8 * j + 2 * t] = acc[j][0];
        rw[g * TOK + 8 * j + 2 * t + 1] = acc[j][1];
        rw[(g + 8) * TOK + 8 * j + 2 * t] = acc[j][2];
        rw[(g + 8) * TOK + 8 * j + 2 * t + 1] = acc[j][3];
    }
    __syncthreads();
    for (int tl = 0; tl < ntok; tl++)
        for (int rr = tid; rr < 16 * RS; rr += blockDim.x) {
            const int sl = rr >> 4, row = rr & 15, n = n0 + rr;
            if (n >= N) continue;
            float s = 0.0f;
            for (int w = 0; w < WPS; w++) s += red[((size_t)(sl * WPS + w) * 16 + row) * TOK + tl]; /* fixed order */
            const size_t o = (size_t)(tb0 + tl) * N + n;
            if (OUT == OB_XNOR_OUT_BF16) reinterpret_cast<__nv_bfloat16 *>(y)[o] = __float2bfloat16_rn(s);
            else reinterpret_cast<float *>(y)[o] = s;
        }
}

/* ------------------------------------------------------------------------------------------------
 * Launchers
 * ---------------------------------------------------------------------------------------------- */
static int ob__xnor_gs_ok(int K, int gs) { return (gs == 128 || gs == 256) && K > 0 && K % gs == 0; }

OB_XNOR_DEF cudaError_t ob_xnor_pack_weights(uint32_t *wbits, float *alpha, uint16_t *wpopc, const float *w, int N, int K,
                                             int gs, cudaStream_t stream) {
    if (!ob__xnor_gs_ok(K, gs) || N < 0 || ((uintptr_t)w & 15)) return cudaErrorInvalidValue;
    if (N == 0) return cudaSuccess;
    const dim3 grid((unsigned)((N + 7) / 8));
    if (gs == 128) ob__k_xnor_pack<128, false><<<grid, 256, 0, stream>>>(wbits, wpopc, alpha, w, N, K);
    else ob__k_xnor_pack<256, false><<<grid, 256, 0, stream>>>(wbits, wpopc, alpha, w, N, K);
    return cudaGetLastError();
}

OB_XNOR_DEF cudaError_t ob_xnor_pack_acts(uint32_t *xbits, float *beta, uint16_t *xpopc, const float *x, int M, int K,
                                          int gs, cudaStream_t stream) {
    if (!ob__xnor_gs_ok(K, gs) || M < 0 || ((uintptr_t)x & 15)) return cudaErrorInvalidValue;
    if (M == 0) return cudaSuccess;
    const dim3 grid((unsigned)((M + 7) / 8));
    if (gs == 128) ob__k_xnor_pack<128, true><<<grid, 256, 0, stream>>>(xbits, xpopc, beta, x, M, K);
    else ob__k_xnor_pack<256, true><<<grid, 256, 0, stream>>>(xbits, xpopc, beta, x, M, K);
    return cudaGetLastError();
}

OB_XNOR_DEF size_t ob_xnor_gemm_smem_bytes(int K, int gs, int out) {
    if (!ob__xnor_gs_ok(K, gs)) return 0;
    const size_t b = ob__xg_ops_bytes(K, out) + ((size_t)(K / gs) * (OB__XG_BM + OB__XG_BN) + OB__XG_BM + OB__XG_BN) * 4;
    return b <= 227 * 1024 ? b : 0;
}

/* the kernel's max dynamic smem attribute, raised to 227 KB once per kernel */
template <typename F> static cudaError_t ob__xnor_smem_attr(F *kernel, int *done) {
    if (*done) return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024);
    if (e == cudaSuccess) *done = 1;
    return e;
}

/* one flag per kernel, shared by its launcher and ob_xnor_prepare */
template <int GS, int OUT, int FOLD> static cudaError_t ob__xg_attr() {
    static int done = 0;
    return ob__xnor_smem_attr(ob__k_xnor_gemm<GS, OUT, FOLD>, &done);
}

template <int GS, int OUT, int FOLD> static cudaError_t ob__xgp_attr() {
    static int done = 0;
    return ob__xnor_smem_attr(ob__k_xnor_gemm_p<GS, OUT, FOLD>, &done);
}
/* bytes of dynamic shared memory of the persistent kernel */
static size_t ob__xgp_smem_bytes(int K, int gs) {
    const int G = K / gs, nch = (K / 8 + OB__XG_ROWB - 1) / OB__XG_ROWB;
    return 2 * (size_t)OB__XG_STAGE + (size_t)(nch == 1 ? 2 : 1) * ob__xgp_raw_bytes(G) +
           ((size_t)G * (OB__XG_BM + OB__XG_BN) + OB__XG_BM + OB__XG_BN) * 4;
}
template <int GS, int OUT, int FOLD>
static cudaError_t ob__xgp_launch(void *y, const uint32_t *xb, const float *beta, const uint16_t *xpc, const uint32_t *wb,
                                  const float *alpha, const uint16_t *wpc, int M, int N, int K, size_t smem,
                                  cudaStream_t stream) {
    cudaError_t e = ob__xgp_attr<GS, OUT, FOLD>();
    if (e != cudaSuccess) return e;
    int dev = 0, sms = 0, per_sm = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess || (e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess ||
        (e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ob__k_xnor_gemm_p<GS, OUT, FOLD>, OB__XG_THREADS, smem)) != cudaSuccess)
        return e;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;
    const int tiles_m = (M + OB__XG_BM - 1) / OB__XG_BM, tiles_n = (N + OB__XG_BN - 1) / OB__XG_BN;
    const long long tiles = (long long)tiles_m * tiles_n;
    const int grid = (int)(tiles < (long long)per_sm * sms ? tiles : (long long)per_sm * sms);
    ob__k_xnor_gemm_p<GS, OUT, FOLD><<<grid, OB__XG_THREADS, smem, stream>>>(y, xb, beta, xpc, wb, alpha, wpc, M, N, K, tiles_m,
                                                                             tiles_n, grid / tiles_n, grid % tiles_n);
    return cudaGetLastError();
}

template <int GS, int OUT, int FOLD>
static cudaError_t ob__xg_launch(void *y, const uint32_t *xb, const float *beta, const uint16_t *xpc, const uint32_t *wb,
                                 const float *alpha, const uint16_t *wpc, int M, int N, int K, size_t smem,
                                 cudaStream_t stream) {
    cudaError_t e = ob__xg_attr<GS, OUT, FOLD>();
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((N + OB__XG_BN - 1) / OB__XG_BN), (unsigned)((M + OB__XG_BM - 1) / OB__XG_BM));
    ob__k_xnor_gemm<GS, OUT, FOLD><<<grid, OB__XG_THREADS, smem, stream>>>(y, xb, beta, xpc, wb, alpha, wpc, M, N, K,
                                                                           (int)ob__xg_ops_bytes(K, OUT));
    return cudaGetLastError();
}

OB_XNOR_DEF cudaError_t ob_xnor_gemm_ex(void *y, int out, const uint32_t *xbits, const float *beta, const uint16_t *xpopc,
                                        const uint32_t *wbits, const float *alpha, const uint16_t *wpopc, int M, int N,
                                        int K, int gs, int variant, cudaStream_t stream) {
    const int fold = variant & OB_XNOR_FOLD_MAGIC;
    if (!ob__xnor_gs_ok(K, gs) || M < 0 || N <= 0 || (out != OB_XNOR_OUT_F32 && out != OB_XNOR_OUT_BF16) ||
        (variant & ~(OB_XNOR_FOLD_MAGIC | OB_XNOR_ONE_TILE | OB_XNOR_PERSISTENT)) ||
        ((variant & OB_XNOR_ONE_TILE) && (variant & OB_XNOR_PERSISTENT)))
        return cudaErrorInvalidValue;
    if (((uintptr_t)xbits | (uintptr_t)wbits) & 15) return cudaErrorMisalignedAddress;
    const size_t smem = ob_xnor_gemm_smem_bytes(K, gs, out);
    if (!smem) return cudaErrorInvalidValue;
    if (M == 0) return cudaSuccess;
    /* the persistent kernel where asked, or by default where it was measured faster: K <= 1,024 and N <= 3,072 (H100,
     * M = 65,536, K = 1,024: 0.193 against 0.210 ms at N = 2,048, 0.288 against 0.324 at N = 3,072, but 0.38-0.43
     * against 0.40 at N = 4,096 over three runs; at K = 4,096: 0.317 against 0.284), and only where its tables'
     * inputs are 16-byte aligned and its shared memory fits; the first design's grid has M / 128 rows (<= 65,535) */
    const size_t smem_p = ob__xgp_smem_bytes(K, gs);
    const bool want_p = (variant & OB_XNOR_PERSISTENT) || (!(variant & OB_XNOR_ONE_TILE) && K <= 1024 && N <= 3072);
    const bool persist = want_p && smem_p <= 227 * 1024 &&
                         !(((uintptr_t)xpopc | (uintptr_t)alpha | (uintptr_t)wpopc | (uintptr_t)beta) & 15);
    if (!persist && M > 65535 * OB__XG_BM) return cudaErrorInvalidValue;
#define OB__XG_CASE(GS_, OUT_, FOLD_)                                                                                  \
    if (gs == GS_ && out == OUT_ && fold == FOLD_)                                                                     \
        return persist ? ob__xgp_launch<GS_, OUT_, FOLD_>(y, xbits, beta, xpopc, wbits, alpha, wpopc, M, N, K, smem_p, stream) \
                       : ob__xg_launch<GS_, OUT_, FOLD_>(y, xbits, beta, xpopc, wbits, alpha, wpopc, M, N, K, smem, stream);
    OB__XG_CASE(256, OB_XNOR_OUT_BF16, OB_XNOR_FOLD_SUBNORMAL)
    OB__XG_CASE(256, OB_XNOR_OUT_F32, OB_XNOR_FOLD_SUBNORMAL)
    OB__XG_CASE(128, OB_XNOR_OUT_BF16, OB_XNOR_FOLD_SUBNORMAL)
    OB__XG_CASE(128, OB_XNOR_OUT_F32, OB_XNOR_FOLD_SUBNORMAL)
    OB__XG_CASE(256, OB_XNOR_OUT_BF16, OB_XNOR_FOLD_MAGIC)
    OB__XG_CASE(256, OB_XNOR_OUT_F32, OB_XNOR_FOLD_MAGIC)
    OB__XG_CASE(128, OB_XNOR_OUT_BF16, OB_XNOR_FOLD_MAGIC)
    OB__XG_CASE(128, OB_XNOR_OUT_F32, OB_XNOR_FOLD_MAGIC)
#undef OB__XG_CASE
    return cudaErrorInvalidValue;
}

OB_XNOR_DEF cudaError_t ob_xnor_gemm(void *y, int out, const uint32_t *xbits, const float *beta, const uint16_t *xpopc,
                                     const uint32_t *wbits, const float *alpha, const uint16_t *wpopc, int M, int N, int K,
                                     int gs, cudaStream_t stream) {
    return ob_xnor_gemm_ex(y, out, xbits, beta, xpopc, wbits, alpha, wpopc, M, N, K, gs, OB_XNOR_FOLD_SUBNORMAL, stream);
}

enum { OB__BWN_XS_MAX = 160 * 1024 }; /* stage x in smem when ntok x (K/2 + 4) x 4 bytes fits in this */

template <int MT, int GS, int OUT, bool XS> static cudaError_t ob__bwn_attr() {
    static int done = 0;
    return ob__xnor_smem_attr(ob__k_bwn<MT, GS, OUT, XS>, &done);
}

template <int MT, int GS, int OUT, bool XS>
static cudaError_t ob__bwn_launch(void *y, const void *x, const uint32_t *wb, const float *alpha, int M, int N, int K,
                                  cudaStream_t stream) {
    cudaError_t e = ob__bwn_attr<MT, GS, OUT, XS>();
    if (e != cudaSuccess) return e;
    /* RS slabs of 16 rows per CTA: as many as keep >= ~2 CTAs per SM (264 on an H100); WPS warps per slab */
    const int G = K / GS, slabs = (N + 15) / 16, ntok = M < 8 * MT ? M : 8 * MT;
    int RS = 1;
    while (RS < 8 && slabs / (2 * RS) >= 264) RS *= 2;
    const int WPS = (8 / RS) < G ? 8 / RS : G, nwarps = RS * WPS;
    const size_t smem = (XS ? (size_t)ntok * (K / 2 + 4) * 4 : 0) + (size_t)nwarps * 16 * 8 * MT * 4;
    const dim3 grid((unsigned)((N + 16 * RS - 1) / (16 * RS)), (unsigned)((M + 8 * MT - 1) / (8 * MT)));
    ob__k_bwn<MT, GS, OUT, XS><<<grid, 32 * nwarps, smem, stream>>>(y, (const uint16_t *)x, wb, alpha, M, N, K, RS);
    return cudaGetLastError();
}

template <int GS, int OUT, bool XS>
static cudaError_t ob__bwn_mt(int mt, void *y, const void *x, const uint32_t *wb, const float *alpha, int M, int N, int K,
                              cudaStream_t stream) {
    switch (mt) {
    case 1: return ob__bwn_launch<1, GS, OUT, XS>(y, x, wb, alpha, M, N, K, stream);
    case 2: return ob__bwn_launch<2, GS, OUT, XS>(y, x, wb, alpha, M, N, K, stream);
    case 4: return ob__bwn_launch<4, GS, OUT, XS>(y, x, wb, alpha, M, N, K, stream);
    default: return ob__bwn_launch<8, GS, OUT, XS>(y, x, wb, alpha, M, N, K, stream);
    }
}

OB_XNOR_DEF cudaError_t ob_bwn_gemm_ex(void *y, int out, const void *x_bf16, const uint32_t *wbits, const float *alpha,
                                       int M, int N, int K, int gs, int xpath, cudaStream_t stream) {
    if (!ob__xnor_gs_ok(K, gs) || M < 0 || N <= 0 || (out != OB_XNOR_OUT_F32 && out != OB_XNOR_OUT_BF16) ||
        xpath < OB_BWN_AUTO || xpath > OB_BWN_XGLOBAL)
        return cudaErrorInvalidValue;
    if ((uintptr_t)wbits & 15) return cudaErrorMisalignedAddress;
    if (M == 0) return cudaSuccess;
    const int mt = M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8;
    if (M > 65535 * 8 * mt) return cudaErrorInvalidValue;
    const int ntok = M < 8 * mt ? M : 8 * mt;
    const bool fits = (size_t)ntok * (K / 2 + 4) * 4 <= OB__BWN_XS_MAX;
    if (xpath == OB_BWN_XSMEM && !fits) return cudaErrorInvalidValue;
    const bool xs = xpath == OB_BWN_XSMEM || (xpath == OB_BWN_AUTO && fits);
    if (gs == 256) {
        if (out == OB_XNOR_OUT_BF16)
            return xs ? ob__bwn_mt<256, OB_XNOR_OUT_BF16, true>(mt, y, x_bf16, wbits, alpha, M, N, K, stream)
                      : ob__bwn_mt<256, OB_XNOR_OUT_BF16, false>(mt, y, x_bf16, wbits, alpha, M, N, K, stream);
        return xs ? ob__bwn_mt<256, OB_XNOR_OUT_F32, true>(mt, y, x_bf16, wbits, alpha, M, N, K, stream)
                  : ob__bwn_mt<256, OB_XNOR_OUT_F32, false>(mt, y, x_bf16, wbits, alpha, M, N, K, stream);
    }
    if (out == OB_XNOR_OUT_BF16)
        return xs ? ob__bwn_mt<128, OB_XNOR_OUT_BF16, true>(mt, y, x_bf16, wbits, alpha, M, N, K, stream)
                  : ob__bwn_mt<128, OB_XNOR_OUT_BF16, false>(mt, y, x_bf16, wbits, alpha, M, N, K, stream);
    return xs ? ob__bwn_mt<128, OB_XNOR_OUT_F32, true>(mt, y, x_bf16, wbits, alpha, M, N, K, stream)
              : ob__bwn_mt<128, OB_XNOR_OUT_F32, false>(mt, y, x_bf16, wbits, alpha, M, N, K, stream);
}

OB_XNOR_DEF cudaError_t ob_bwn_gemm(void *y, int out, const void *x_bf16, const uint32_t *wbits, const float *alpha, int M,
                                    int N, int K, int gs, cudaStream_t stream) {
    return ob_bwn_gemm_ex(y, out, x_bf16, wbits, alpha, M, N, K, gs, OB_BWN_AUTO, stream);
}

template <int GS, int OUT> static cudaError_t ob__xnor_attr_all() {
    cudaError_t e;
    if ((e = ob__xg_attr<GS, OUT, OB_XNOR_FOLD_SUBNORMAL>()) != cudaSuccess) return e;
    if ((e = ob__xg_attr<GS, OUT, OB_XNOR_FOLD_MAGIC>()) != cudaSuccess) return e;
    if ((e = ob__xgp_attr<GS, OUT, OB_XNOR_FOLD_SUBNORMAL>()) != cudaSuccess) return e;
    if ((e = ob__xgp_attr<GS, OUT, OB_XNOR_FOLD_MAGIC>()) != cudaSuccess) return e;
    for (int xs = 0; xs < 2; xs++) {
        if ((e = xs ? ob__bwn_attr<1, GS, OUT, true>() : ob__bwn_attr<1, GS, OUT, false>()) != cudaSuccess) return e;
        if ((e = xs ? ob__bwn_attr<2, GS, OUT, true>() : ob__bwn_attr<2, GS, OUT, false>()) != cudaSuccess) return e;
        if ((e = xs ? ob__bwn_attr<4, GS, OUT, true>() : ob__bwn_attr<4, GS, OUT, false>()) != cudaSuccess) return e;
        if ((e = xs ? ob__bwn_attr<8, GS, OUT, true>() : ob__bwn_attr<8, GS, OUT, false>()) != cudaSuccess) return e;
    }
    return cudaSuccess;
}

OB_XNOR_DEF cudaError_t ob_xnor_prepare(void) {
    cudaError_t e;
    if ((e = ob__xnor_attr_all<256, OB_XNOR_OUT_BF16>()) != cudaSuccess) return e;
    if ((e = ob__xnor_attr_all<256, OB_XNOR_OUT_F32>()) != cudaSuccess) return e;
    if ((e = ob__xnor_attr_all<128, OB_XNOR_OUT_BF16>()) != cudaSuccess) return e;
    return ob__xnor_attr_all<128, OB_XNOR_OUT_F32>();
}

#endif /* OB_XNOR_GEMM_IMPLEMENTED */
#endif /* ONEBIT_IMPLEMENTATION || OB_XNOR_IMPLEMENTATION */
