/* float8 e4m3fn and bfloat16 rounding against tables this test derives on its own.
 *
 * The reference does not reuse any bit trick of onebit.h: it lists every finite e4m3fn value from
 * its definition (sign, 4-bit exponent with bias 7, 3-bit mantissa, subnormals m * 2^-9, no
 * infinities, 0x7F/0xFF NaN) and rounds a float to the nearest one in double precision, ties to the
 * code with an even mantissa, anything beyond 464 (half an ulp above 448) to NaN -- which is what
 * torch's float32 -> float8_e4m3fn cast does. bfloat16 is checked the same way against the nearest
 * of the two bracketing bf16 values computed in double. Inputs: every fp8 value and every midpoint
 * between neighbours (exact ties) with its float neighbours, zeros, subnormal floats, huge values,
 * infinities, NaNs, and a strided sweep over all 2^32 float32 bit patterns. */
#define ONEBIT_IMPLEMENTATION
#include "../onebit.h"
#include "test_util.h"
#include <math.h>

static float f_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* The value of e4m3fn code c from its definition (NaN for 0x7F / 0xFF). */
static double e4m3_value(int c) {
    int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? ldexp((double)m, -9) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

/* Reference rounding of v to e4m3fn: nearest finite value, ties to an even mantissa code. */
static int e4m3_ref(float v) {
    if (isnan(v)) return (bits_of(v) >> 31) ? 0xFF : 0x7F;
    int neg = signbit(v) != 0;
    double a = fabs((double)v);
    if (a > 464.0) return neg ? 0xFF : 0x7F;
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 0x7F; c++) { /* non-negative finite codes, increasing */
        double d = fabs(e4m3_value(c) - a);
        if (d < bd || (d == bd && (c & 1) == 0)) { bd = d; best = c; }
    }
    return best | (neg ? 0x80 : 0);
}

/* Reference bf16 rounding: the nearer of the two bf16 values that bracket v, ties to even. */
static uint16_t bf16_ref(float v) {
    if (isnan(v)) return 0x7FC0;
    uint32_t u = bits_of(v);
    uint16_t lo = (uint16_t)(u >> 16);       /* truncation: toward zero */
    uint16_t hi = (uint16_t)(lo + 1);        /* next magnitude up (may become infinity) */
    double dv = fabs((double)v), dlo = fabs((double)f_from_bits((uint32_t)lo << 16));
    double dhi = ((hi & 0x7FFF) >= 0x7F80) ? INFINITY : fabs((double)f_from_bits((uint32_t)hi << 16));
    if ((lo & 0x7FFF) == 0x7F7F && dv - dlo >= ldexp(1.0, 127 - 8)) return (uint16_t)((lo & 0x8000) | 0x7F80); /* overflow to inf */
    if (dv - dlo < dhi - dv) return lo;
    if (dv - dlo > dhi - dv) return hi;
    return (lo & 1) ? hi : lo;
}

static int same_fp8(int a, int b) { return a == b || ((a & 0x7F) == 0x7F && (b & 0x7F) == 0x7F); }

int main(void) {
    long n = 0, bad = 0;
    char first[256] = "";
#define CHECK8(v) do { float v_ = (v); int o_ = ob_fp8_from_f32(v_), r_ = e4m3_ref(v_); n++; \
        if (!same_fp8(o_, r_)) { if (!bad++) snprintf(first, sizeof first, "%a: onebit 0x%02X, reference 0x%02X", (double)v_, o_, r_); } } while (0)

    /* 1. every code's value, both signs; the midpoints between neighbours (exact ties) and their
     *    float neighbours; the overflow boundary */
    for (int c = 0; c < 256; c++) {
        double v = e4m3_value(c);
        if (isnan(v)) continue;
        CHECK8((float)v);
        if (c == 0x7E || c == 0xFE || c == 0x7F || c == 0xFF) continue;
        double w = e4m3_value(c + 1);
        if (isnan(w) || (c & 0x7F) == 0x7F) continue;
        float mid = (float)((v + w) / 2);
        CHECK8(mid);
        CHECK8(nextafterf(mid, INFINITY));
        CHECK8(nextafterf(mid, -INFINITY));
    }
    float specials[] = {0.0f, -0.0f, 448.0f, -448.0f, 464.0f, -464.0f, nextafterf(464.0f, 1e9f), 479.9f, 480.0f, 1e6f, 3.4e38f,
                        INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f, 1e-38f, ldexpf(1.0f, -10), -ldexpf(1.0f, -10),
                        nextafterf(ldexpf(1.0f, -10), 1.0f), ldexpf(1.0f, -6), ldexpf(1.5f, -10), ldexpf(3.0f, -11)};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) CHECK8(specials[i]);
    long n_classes = n;
    /* 2. a strided sweep over all 2^32 bit patterns (a prime stride visits every exponent and sign) */
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) CHECK8(f_from_bits((uint32_t)u));
    TU_CHECK(bad == 0, "fp8_e4m3fn_rounding", "%ld inputs (%ld value/tie/special classes + strided sweep), %ld mismatches%s%s",
             n, n_classes, bad, bad ? "; first: " : "", first);

    /* decode of all 256 codes against the definition */
    int dec_bad = 0;
    for (int c = 0; c < 256; c++) {
        double v = e4m3_value(c);
        float o = ob_f32_from_fp8((uint8_t)c);
        if (isnan(v) ? !isnan(o) : ((double)o != v || (signbit(o) != 0) != (c >> 7))) dec_bad++;
    }
    TU_CHECK(dec_bad == 0, "fp8_e4m3fn_decode", "256 codes decoded, %d wrong", dec_bad);

    /* bf16: every bf16 value, every midpoint and its neighbours, specials, a strided sweep */
    n = 0; bad = 0; first[0] = 0;
#define CHECK16(v) do { float v_ = (v); uint16_t o_ = ob_bf16_from_f32(v_), r_ = bf16_ref(v_); n++; \
        if (o_ != r_) { if (!bad++) snprintf(first, sizeof first, "%a: onebit 0x%04X, reference 0x%04X", (double)v_, o_, r_); } } while (0)
    for (uint32_t h = 0; h < 65536; h++) {
        float v = f_from_bits(h << 16);
        if (isnan(v)) continue;
        CHECK16(v);
        if ((h & 0x7FFF) >= 0x7F80) continue;
        float mid = f_from_bits((h << 16) | 0x8000);
        CHECK16(mid);
        CHECK16(nextafterf(mid, INFINITY));
        CHECK16(nextafterf(mid, -INFINITY));
    }
    CHECK16(NAN); CHECK16(-NAN); CHECK16(INFINITY); CHECK16(-INFINITY); CHECK16(3.4028235e38f);
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) CHECK16(f_from_bits((uint32_t)u));
    TU_CHECK(bad == 0, "bf16_rounding", "%ld inputs (every bf16 value, midpoint and neighbour, specials, strided sweep), %ld mismatches%s%s",
             n, bad, bad ? "; first: " : "", first);
    return tu_exit();
}
