/*
 * dtype.h — element types: sizes, names and the scalar conversions between float32 and the
 * two 16-bit storage formats, shared by the core (host copies, tensor.c) and the backends'
 * loops. Every conversion to a half type rounds to nearest, ties to even; NaN stays NaN
 * (quiet), infinities stay infinite, and a finite float beyond f16's range (|x| >= 65520,
 * halfway past the largest f16, 65504) becomes an infinity, as IEEE 754 rounding says.
 *
 * bf16 is the top half of a float32 (1 sign, 8 exponent, 7 mantissa bits): widening is a
 * shift. f16 (1, 5, 10) has exponent bias 15, subnormals below 2^-14 down to 2^-24.
 */
#ifndef NEATML_DTYPE_H
#define NEATML_DTYPE_H

#include "neatml.h"

#include <stdint.h>
#include <string.h>

static inline uint32_t nm_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* f is +0: every bit zero, which is 0 in every neat_dtype. */
static inline int nm_is_zero_bits(float f) { return nm_f32_bits(f) == 0; }

static inline float nm_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float nm_bf16_to_f32(uint16_t h) { return nm_bits_f32((uint32_t)h << 16); }

static inline uint16_t nm_f32_to_bf16(float f) {
    uint32_t u = nm_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* ties to even; a carry into the exponent is right */
    return (uint16_t)(u >> 16);
}

static inline float nm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return nm_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    return nm_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t nm_f32_to_f16(float f) {
    uint32_t u = nm_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00;  /* NaN */
    if (u >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 (and inf): infinity */
    if (u < 0x38800000u) {                      /* below 2^-14: subnormal or zero */
        if (u <= 0x33000000u) return sign;      /* <= 2^-25: ties to even give 0 */
        uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value * 2^24 = m * 2^(e - 126) */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    u -= 0x38000000u;              /* rebias the exponent: 127 -> 15 */
    u += 0xfffu + ((u >> 13) & 1); /* ties to even; a carry into the exponent is right */
    return sign | (uint16_t)(u >> 13);
}

/* Element i of a tensor's memory of type dt, as float32. */
static inline float nm_load(neat_dtype dt, const void *p, int64_t i) {
    switch (dt) {
    case NEAT_BF16: return nm_bf16_to_f32(((const uint16_t *)p)[i]);
    case NEAT_F16: return nm_f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* Store v (rounded to dt) as element i. */
static inline void nm_store(neat_dtype dt, void *p, int64_t i, float v) {
    switch (dt) {
    case NEAT_BF16: ((uint16_t *)p)[i] = nm_f32_to_bf16(v); break;
    case NEAT_F16: ((uint16_t *)p)[i] = nm_f32_to_f16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

#endif
