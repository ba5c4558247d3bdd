/*
 * vecmath.h — exp, tanh, sigmoid and sqrt written so that GCC vectorizes the loops that call
 * them (no libm call, no branch: selects only), without -ffast-math. Private to the CPU
 * loops (elementwise.c, softmax.c, optim.c); inlined into each CPU_CLONES kernel, so each
 * clone gets the instructions of its target. Includers add
 * `#pragma GCC optimize("no-trapping-math")`, or GCC will not if-convert the selects.
 *
 * cpu_expf: exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2]
 * (ln2 split in two parts so that n ln2 is exact), exp(r) by the Cephes degree-7 polynomial
 * (1 + r + r^2 P(r)): under 1 ulp on the whole range. 2^n is applied as 2^(n/2) 2^(n-n/2)
 * so that results between FLT_MIN and the smallest denormal come out right and overflow
 * gives +inf, underflow 0, NaN stays NaN.
 */
#ifndef NEATML_CPU_VECMATH_H
#define NEATML_CPU_VECMATH_H

#include <stdint.h>
#include <string.h>

/* 2^k for -126 <= k <= 127 by building the exponent field. */
static inline float cpu_pow2i(int32_t k) {
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float cpu_expf(float x) {
    /* Clamp so that n stays within [-150, 129]; beyond, the result is 0 or +inf anyway.
     * Written as selects (not fminf) so that NaN passes through. */
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    /* round to nearest by the 1.5 * 2^23 trick (exact for |t| < 2^22) */
    const float shifter = 12582912.0f;
    float nf = (xc * 1.44269504088896341f + shifter) - shifter;
    float r = xc - nf * 0.693359375f; /* ln2 high part: 8 bits, so nf * hi is exact */
    r = r - nf * -2.12194440e-4f;     /* ln2 low part */
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    /* A NaN x keeps p NaN; its exponent is taken as 0, since converting NaN to an integer
     * is undefined (a select: the loop still vectorizes). */
    int32_t n = (int32_t)(nf == nf ? nf : 0.0f);
    int32_t n1 = n >> 1;
    return p * cpu_pow2i(n1) * cpu_pow2i(n - n1);
}

/* 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: the exp never overflows, and tiny
 * results for very negative x keep their precision (1 / (1 + inf) would give 0). */
static inline float cpu_sigmoidf(float x) {
    float e = cpu_expf(x < 0.0f ? x : -x); /* e^-|x| in (0, 1] */
    float inv = 1.0f / (1.0f + e);
    return x < 0.0f ? e * inv : inv;
}

/* tanh: for |x| < 0.625 the Cephes odd polynomial x + x^3 P(x^2) (1 - 2/(e^2x + 1) would
 * lose the low bits there); beyond, sign(x) (1 - 2 / (e^{2|x|} + 1)), which tends to 1. */
static inline float cpu_tanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float small = -5.70498872745e-3f;
    small = small * z + 2.06390887954e-2f;
    small = small * z - 5.37397155531e-2f;
    small = small * z + 1.33314422036e-1f;
    small = small * z - 3.33332819422e-1f;
    small = small * z * x + x;
    float big = 1.0f - 2.0f / (cpu_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
}

/* sqrt of v >= 0 (finite or +inf) without libm: GCC keeps sqrtf's errno branch even under
 * `#pragma GCC optimize("no-math-errno")`, which leaves a loop that calls it scalar.
 * 1/sqrt(v) from the exponent-halving bit trick (3.5% off), three Newton steps
 * r <- r (3/2 - v r^2 / 2) (error 3.5e-2 -> 1.8e-3 -> 5e-6 -> float rounding), then
 * s = v r corrected once by s += r (v - s^2) / 2: within 1 ulp of the rounded sqrt.
 * Inputs below FLT_MIN are scaled by 2^24 first (the bit trick needs a normal number). */
static inline float cpu_sqrtf(float v) {
    int tiny = v < 1.17549435e-38f;
    float vs = tiny ? v * 16777216.0f : v;
    uint32_t bits;
    memcpy(&bits, &vs, sizeof bits);
    bits = 0x5f375a86u - (bits >> 1);
    float r;
    memcpy(&r, &bits, sizeof r);
    float half = 0.5f * vs;
    r = r * (1.5f - half * r * r);
    r = r * (1.5f - half * r * r);
    r = r * (1.5f - half * r * r);
    float s = vs * r;
    s = s + 0.5f * r * (vs - s * s);
    s = tiny ? s * 2.44140625e-4f : s; /* 2^-12 = sqrt(2^-24) */
    /* +inf (Adam's v after g^2 overflowed) would come out of the steps above as NaN */
    return v > 3.40282347e38f ? v : s;
}

/* dtype.h's nm_f32_to_bf16 written with a select instead of the early return for NaN, so
 * that loops calling it vectorize: the same bits for every float (test_dtype checks). */
static inline uint16_t cpu_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t nan = (u >> 16) | 0x40, rounded = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/* bf16 bits to float32 (exact: a shift). */
static inline float cpu_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
