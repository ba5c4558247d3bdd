/*
 * half_simd.h — 16 f16 values to and from float32 in one AVX-512 register, for the CPU's
 * conversion loops (half.c) and the one-pass half loops (elementwise.c). x86-64 with GCC or
 * clang only (CPU_X86_F16); callers are functions with target("avx512f") and check the CPU.
 *
 * vcvtph2ps is exact but quiets a signalling NaN (dtype.h's nm_f16_to_f32 keeps its bits):
 * half.c's widening converts a block holding a NaN again by dtype.h. Where the float is only
 * an operand of float math rounded back to f16, the quieting changes nothing: every NaN
 * rounds to sign | 0x7e00, and quieting keeps the sign.
 * vcvtps2ph with the round-to-nearest-even immediate (MXCSR's mode ignored) rounds as dtype.h
 * does (overflow to inf, f16 subnormals), except that it keeps a NaN's payload: NaNs are
 * first replaced by the quiet NaN of their sign with an empty payload, which gives
 * sign | 0x7e00.
 */
#ifndef NEATML_CPU_HALF_SIMD_H
#define NEATML_CPU_HALF_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CPU_X86_F16 1

__attribute__((target("avx512f"))) static inline __m512 cpu_f16x16_widen(const uint16_t *src) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
}

__attribute__((target("avx512f"))) static inline void cpu_f16x16_narrow(__m512 x, uint16_t *dst) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u), qnan = _mm512_set1_epi32(0x7fc00000);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512i canon = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(x), sign), qnan);
    x = _mm512_mask_mov_ps(x, nan, _mm512_castsi512_ps(canon));
    _mm256_storeu_si256((__m256i *)dst,
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

#endif
