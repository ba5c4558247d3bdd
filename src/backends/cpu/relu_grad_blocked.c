/*
 * relu_grad_blocked.c — relu's backward written straight into oneDNN's nChw16c layout
 * (aBcd16b), the layout in which a convolution's backward primitives read dz on AVX-512.
 *
 *   dz[n, k, s] = y[n, k, s] > 0 ? dy[n, k, s] : 0      dy, y NCHW [N,K,P,Q], s = p*Q + q
 *   stored at dzb[((n*KB + k/16)*S + s)*16 + k%16]      KB = ceil(K/16), S = P*Q
 *   channels K .. KB*16-1 of the last block are written 0 (oneDNN reads them).
 *
 * Why: conv_backward.c used to compute dz into an NCHW scratch (read dy and y, write dz) and
 * then reorder it into nChw16c with oneDNN (read dz, write dzb): on LeNet's step that second
 * pass over the activation-sized dz was 1.7 ms of about 30 (oneDNN's verbose timings).
 * Here one pass reads dy and y and writes dzb: per block of 16 channels, 16 spatial
 * positions at a time, 16 rows of 16 (one per channel, contiguous loads) are masked by
 * y > 0 and transposed in registers into 16 channel vectors (contiguous stores). The
 * result is relu's exact gradient, bit for bit what cpu_act_grad then the reorder gave.
 */
#include "cpu.h"
#include "loops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RELU16_X86 1
#endif

/* One block of 16 channels (ch of them real) and S positions, the portable way. */
static void relu_grad_block(const float *dy, const float *y, int64_t S, int ch, float *out,
                            int64_t s_from) {
    for (int64_t s = s_from; s < S; s++)
        for (int c = 0; c < 16; c++)
            out[s * 16 + c] = c < ch && y[c * S + s] > 0.0f ? dy[c * S + s] : 0.0f;
}

#if RELU16_X86
/* r[i] = row i of a 16x16 tile -> r[j] = column j (three shuffle stages: 32-bit, 64-bit and
 * 128-bit granules, then the 128-bit lanes across rows four apart). */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4i+j], 128-bit lane L: column 4L+j of rows 4i..4i+3 */
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int j = 0; j < 4; j++) {
        __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        __m512 v2 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
        r[j] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(v2, w2, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
        r[12 + j] = _mm512_shuffle_f32x4(v2, w2, 0xdd);
    }
}

/* The block's positions in tiles of 16; returns the first position not done. */
__attribute__((target("avx512f"))) static int64_t
relu_grad_block_avx512(const float *dy, const float *y, int64_t S, int ch, float *out) {
    const __m512 zero = _mm512_setzero_ps();
    int64_t s0 = 0;
    for (; s0 + 16 <= S; s0 += 16) {
        __m512 r[16];
        for (int c = 0; c < 16; c++) {
            if (c < ch) {
                __mmask16 pos = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + c * S + s0), zero,
                                                   _CMP_GT_OQ); /* false for NaN, as y > 0 */
                r[c] = _mm512_maskz_mov_ps(pos, _mm512_loadu_ps(dy + c * S + s0));
            } else {
                r[c] = zero;
            }
        }
        transpose16(r);
        for (int j = 0; j < 16; j++) _mm512_storeu_ps(out + (s0 + j) * 16, r[j]);
    }
    return s0;
}
#endif

void cpu_relu_grad_nchw16c(int nthreads, const float *dy, const float *y, int64_t n, int64_t k,
                           int64_t s, float *dzb) {
    int64_t kb = (k + 15) / 16;
#if RELU16_X86
    int avx512 = __builtin_cpu_supports("avx512f");
#endif
    CPU_FOR(cpu_par(nthreads, n * kb * 16 * s), blk, n * kb, {
        int64_t img = blk / kb, c0 = (blk % kb) * 16;
        int ch = (int)(k - c0 < 16 ? k - c0 : 16);
        const float *dyb = dy + (img * k + c0) * s, *yb = y + (img * k + c0) * s;
        float *out = dzb + blk * s * 16;
        int64_t done = 0;
#if RELU16_X86
        if (avx512) done = relu_grad_block_avx512(dyb, yb, s, ch, out);
#endif
        relu_grad_block(dyb, yb, s, ch, out, done);
    });
}
