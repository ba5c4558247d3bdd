/*
 * softmax.c — softmax over rows, its backward, and the fused softmax cross-entropy.
 *
 * x [rows, cols]; per row, with m = max_j x_j (so that no exp overflows and a row of large
 * negatives does not underflow to 0/0):
 *   softmax      y_j = e^(x_j - m) / s,   s = sum_j e^(x_j - m)
 *   backward     dx_j = y_j (dy_j - sum_k dy_k y_k)
 *   xent         loss = (1/N) sum_rows ((m - x_label) + log s)     (= -log softmax_label)
 *   xent bwd     dlogits_j = (softmax_j - [j == label]) / N; at the label the value is
 *                -(sum_{j != label} e_j) / (s N), computed without the cancellation 1 - p.
 * Row sums (s, the dot of the backward, the loss over rows) accumulate in double; the max
 * and the sums use 16 lanes in a fixed order, so results do not depend on threads.
 * exp is vecmath.h's cpu_expf so that the loops vectorize without -ffast-math.
 *
 * Memory traffic of the forward (a bandwidth-bound op: 4096x4096 is 64 MiB each way): one
 * read of x and one write of y per element. A row of up to SCRATCH_COLS floats (32 KiB)
 * stays in L1/L2 between the passes: max (reads x from memory), e = exp(x - m) into a
 * per-thread scratch row with the sum (x now from cache), then y = e / s. When the output
 * is larger than STREAM_MIN_BYTES that last pass uses non-temporal stores: y is written
 * without being read first (a plain store of a line not in cache reads it: 3 transfers per
 * element instead of 2). Two exps per element (an online max and rescaled sum, then exp
 * again) would save the scratch but cost more than the cached pass on AVX-512.
 * Labels are floats holding exact integers in [0, C); any other value fails the op with
 * INVALID_ARGUMENT (reported by neat_cmdbuf_wait) before an output is written.
 */
/* We never read floating-point exception flags; without this GCC refuses to if-convert the
 * selects of the exp code (it could "trap") and leaves those loops scalar. */
#pragma GCC optimize("no-trapping-math")

#include "cpu.h"
#include "loops.h"
#include "vecmath.h"
#include "half_simd.h"

#include <math.h>
#include <stdint.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h> /* streaming stores: SSE in every x86-64, AVX-512 where the CPU has it */
#define CPU_X86_INTRINSICS 1
#endif

#define LANES 16
/* The cross-entropy adds row losses in at most XENT_MAX_BLOCKS fixed blocks of rows. */
#define XENT_MAX_BLOCKS 1024
/* Rows up to this many columns go through a per-thread scratch row held in cache. */
#define SCRATCH_COLS 8192
/* Outputs at least this large are written with non-temporal stores: they would not stay in
 * the cache for the next op anyway (the development machine's L3 is 48 MiB shared). */
#define STREAM_MIN_BYTES ((int64_t)32 << 20)

/* max of x[0, n), n >= 1, NaN ignored (a NaN still reaches every output through exp).
 * 4 x 16 lanes: four independent compare chains keep several loads from memory in flight
 * (the max does not depend on the order, so the lane count changes no result). */
#define MAX_LANES (4 * LANES)
CPU_CLONES static float row_max(const float *x, int64_t n) {
    float lane[MAX_LANES];
    for (int j = 0; j < MAX_LANES; j++) lane[j] = -INFINITY;
    int64_t full = n - n % MAX_LANES;
    for (int64_t i = 0; i < full; i += MAX_LANES)
        for (int j = 0; j < MAX_LANES; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    for (int64_t i = full; i < n; i++) lane[0] = x[i] > lane[0] ? x[i] : lane[0];
    float m = lane[0];
    for (int j = 1; j < MAX_LANES; j++) m = lane[j] > m ? lane[j] : m;
    return m;
}

static double lanes_total(double *lane) {
    for (int width = LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) lane[j] += lane[j + width];
    return lane[0];
}

#if CPU_X86_INTRINSICS
/* row_exp's full 16-lane blocks with AVX-512 instructions GCC does not derive from cpu_expf:
 * vscalefps applies 2^n in one instruction (overflow, denormal results and NaN included,
 * one rounding like cpu_expf's two-step product), and x - m <= 0 (or NaN) needs no upper
 * clamp. Same rounding trick, reduction and polynomial, with the contractions into FMAs that
 * GCC makes in the avx512f clone, so the same floats and the same lane sums: about half the
 * instructions per element of the clone. Returns the index of the first element not done;
 * lane[16] accumulates as row_exp's does. */
__attribute__((target("avx512f"))) static int64_t
row_exp_avx512(const float *x, float *e, int64_t n, float m, const float *next, double *lane) {
    const __m512 vm = _mm512_set1_ps(m), lo = _mm512_set1_ps(-104.0f);
    __m512d acc0 = _mm512_loadu_pd(lane), acc1 = _mm512_loadu_pd(lane + 8);
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        if (next) __builtin_prefetch(next + i, 0, 3);
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
        t = _mm512_max_ps(lo, t); /* a NaN t passes (vmaxps returns its second operand) */
        const __m512 shifter = _mm512_set1_ps(12582912.0f);
        __m512 nf = _mm512_sub_ps(_mm512_fmadd_ps(t, _mm512_set1_ps(1.44269504088896341f), shifter),
                                  shifter);
        __m512 r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(0.693359375f), t);
        r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(-2.12194440e-4f), r);
        __m512 r2 = _mm512_mul_ps(r, r);
        __m512 p = _mm512_set1_ps(1.9875691500e-4f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
        p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
        __m512 v = _mm512_scalef_ps(p, nf);
        _mm512_storeu_ps(e + i, v);
        acc0 = _mm512_add_pd(acc0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        acc1 = _mm512_add_pd(acc1, _mm512_cvtps_pd(_mm256_castpd_ps(
                                       _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    }
    _mm512_storeu_pd(lane, acc0);
    _mm512_storeu_pd(lane + 8, acc1);
    return i;
}
#endif

/* e_j = e^(x_j - m) stored in e (may be x); returns sum_j e_j in double. When next is not
 * NULL, its first n floats are prefetched meanwhile (the next row: its loads from memory then
 * overlap this row's exps instead of stalling the next row's max). */
CPU_CLONES static double row_exp(const float *x, float *e, int64_t n, float m, const float *next) {
    double lane[LANES] = {0};
    int64_t start = 0, full = n - n % LANES;
#if CPU_X86_INTRINSICS
    if (__builtin_cpu_supports("avx512f")) start = row_exp_avx512(x, e, n, m, next, lane);
#endif
    for (int64_t i = start; i < full; i += LANES) {
        if (next) __builtin_prefetch(next + i, 0, 3);
#pragma omp simd
        for (int j = 0; j < LANES; j++) {
            float v = cpu_expf(x[i + j] - m);
            e[i + j] = v;
            lane[j] += (double)v;
        }
    }
    for (int64_t i = full; i < n; i++) {
        float v = cpu_expf(x[i] - m);
        e[i] = v;
        lane[i - full] += (double)v;
    }
    return lanes_total(lane);
}

/* sum_j e^(x_j - m) without storing. */
CPU_CLONES static double row_exp_sum(const float *x, int64_t n, float m) {
    double lane[LANES] = {0};
    int64_t full = n - n % LANES;
    for (int64_t i = 0; i < full; i += LANES) {
#pragma omp simd
        for (int j = 0; j < LANES; j++) lane[j] += (double)cpu_expf(x[i + j] - m);
    }
    for (int64_t i = full; i < n; i++) lane[i - full] += (double)cpu_expf(x[i] - m);
    return lanes_total(lane);
}

CPU_CLONES static void row_scale(float *y, int64_t n, float alpha) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] *= alpha;
}

/* y = e * alpha with non-temporal stores where the target has them (x86-64: from the first
 * aligned y, 64-byte stores with AVX-512, else 16-byte ones that write-combine into whole
 * lines); the same products as row_scale, so the results are identical. */
#if CPU_X86_INTRINSICS
__attribute__((target("avx512f"))) static int64_t
row_scale_stream_avx512(const float *e, float *y, int64_t i, int64_t n, float alpha) {
    __m512 a = _mm512_set1_ps(alpha);
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(e + i), a));
    return i;
}
#endif

static void row_scale_stream(const float *e, float *y, int64_t n, float alpha) {
    int64_t i = 0;
#if CPU_X86_INTRINSICS
    int has_avx512 = __builtin_cpu_supports("avx512f");
    uintptr_t align = has_avx512 ? 63 : 15;
    for (; i < n && ((uintptr_t)(y + i) & align) != 0; i++) y[i] = e[i] * alpha;
    if (has_avx512) i = row_scale_stream_avx512(e, y, i, n, alpha);
    __m128 a = _mm_set1_ps(alpha);
    for (; i + 4 <= n && ((uintptr_t)(y + i) & 15) == 0; i += 4)
        _mm_stream_ps(y + i, _mm_mul_ps(_mm_loadu_ps(e + i), a));
#endif
    for (; i < n; i++) y[i] = e[i] * alpha;
#if CPU_X86_INTRINSICS
    _mm_sfence(); /* streaming stores are weakly ordered: complete them before the op ends */
#endif
}

/* sum_j a_j b_j in double. */
CPU_CLONES static double row_dot(const float *a, const float *b, int64_t n) {
    double lane[LANES] = {0};
    int64_t full = n - n % LANES;
    for (int64_t i = 0; i < full; i += LANES)
        for (int j = 0; j < LANES; j++) lane[j] += (double)a[i + j] * (double)b[i + j];
    for (int64_t i = full; i < n; i++) lane[i - full] += (double)a[i] * (double)b[i];
    return lanes_total(lane);
}

/* dx_j = y_j (dy_j - dot) */
CPU_CLONES static void row_softmax_grad(const float *y, const float *dy, float *dx, int64_t n,
                                        float dot) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dx[i] = y[i] * (dy[i] - dot);
}

/* Threads over rows: one row is never split. */
static int par_threads(nm_device *dev, int64_t rows, int64_t cols) {
    return rows > 1 ? cpu_par(cpu_dev(dev)->nthreads, rows * cols) : 1;
}

/* ---- softmax -------------------------------------------------------------------------------- */

/* stream: write y with non-temporal stores (cols <= SCRATCH_COLS only), and prefetch the
 * next row (x + cols) while this one is computed. */
static void softmax_row(const float *x, float *y, int64_t cols, int stream, int last) {
    float m = row_max(x, cols);
    if (stream) {
        _Alignas(64) float e[SCRATCH_COLS];
        double s = row_exp(x, e, cols, m, last ? NULL : x + cols);
        row_scale_stream(e, y, cols, (float)(1.0 / s));
    } else {
        double s = row_exp(x, y, cols, m, NULL);
        row_scale(y, cols, (float)(1.0 / s));
    }
}

/* ---- half tensors (bf16, f16; half.c sends rows of up to CPU_SOFTMAX_HALF_COLS) ------------
 * The row is widened once into a float32 row on the thread's stack, the float32 row
 * functions run on it in cache, and the result is rounded once into y: one read and one
 * write of 2-byte elements. The same functions on the same floats as the float32-copies path,
 * so the same bits. */
_Static_assert(CPU_SOFTMAX_HALF_COLS <= SCRATCH_COLS, "a half row fits a scratch row");

static uint16_t *half_row(const nm_tensor *t, int64_t r, int64_t cols) {
    return cpu_half_data(t) + r * cols;
}

/* next: the next row, or NULL; row_exp prefetches 4 cols bytes from it (the next two half
 * rows: the caller passes NULL unless both exist), so that memory works during the exps. */
/* y = round(e * alpha): row_scale's products, rounded as cpu_half_narrow rounds, in one pass. */
CPU_CLONES static void bf16_scale_out(const float *e, float alpha, uint16_t *y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = cpu_f32_to_bf16(e[i] * alpha);
}

#if CPU_X86_F16
__attribute__((target("avx512f"))) static int64_t f16_scale_out_avx512(const float *e, float alpha,
                                                                       uint16_t *y, int64_t n) {
    const __m512 a = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) cpu_f16x16_narrow(_mm512_mul_ps(_mm512_loadu_ps(e + i), a), y + i);
    return i;
}
#endif

static void half_scale_out(neat_dtype dt, float *e, float alpha, uint16_t *y, int64_t n) {
    if (dt == NEAT_BF16) {
        bf16_scale_out(e, alpha, y, n);
        return;
    }
    int64_t i = 0;
#if CPU_X86_F16
    if (__builtin_cpu_supports("avx512f")) i = f16_scale_out_avx512(e, alpha, y, n);
#endif
    row_scale(e + i, n - i, alpha);
    cpu_half_narrow(dt, e + i, y + i, n - i);
}

static void softmax_half_row(neat_dtype dt, const uint16_t *x, uint16_t *y, int64_t cols,
                             const uint16_t *next) {
    _Alignas(64) float e[CPU_SOFTMAX_HALF_COLS];
    cpu_half_widen(dt, x, e, cols);
    float m = row_max(e, cols);
    double s = row_exp(e, e, cols, m, (const float *)(const void *)next);
    half_scale_out(dt, e, (float)(1.0 / s), y, cols);
}

static void softmax_backward_half_row(neat_dtype dt, const uint16_t *y, const uint16_t *dy,
                                      uint16_t *dx, int64_t cols) {
    _Alignas(64) float fy[CPU_SOFTMAX_HALF_COLS], fdy[CPU_SOFTMAX_HALF_COLS];
    cpu_half_widen(dt, y, fy, cols);
    cpu_half_widen(dt, dy, fdy, cols);
    float dot = (float)row_dot(fdy, fy, cols);
    row_softmax_grad(fy, fdy, fy, cols, dot);
    cpu_half_narrow(dt, fy, dx, cols);
}

neat_status cpu_softmax(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const float *x = op->u.softmax.x->data;
    float *y = op->u.softmax.y->data;
    int64_t rows = op->u.softmax.rows, cols = op->u.softmax.cols;
    if (rows == 0 || cols == 0) return NEAT_OK;
    int par = par_threads(dev, rows, cols);
    if (op->u.softmax.y->dtype != NEAT_F32) {
        neat_dtype dt = op->u.softmax.y->dtype;
        CPU_FOR(par, r, rows,
                softmax_half_row(dt, half_row(op->u.softmax.x, r, cols),
                                 half_row(op->u.softmax.y, r, cols), cols,
                                 r + 2 < rows ? half_row(op->u.softmax.x, r + 1, cols) : NULL));
        return NEAT_OK;
    }
    int stream = cols <= SCRATCH_COLS && rows * cols * (int64_t)sizeof(float) >= STREAM_MIN_BYTES;
    CPU_FOR(par, r, rows, softmax_row(x + r * cols, y + r * cols, cols, stream, r == rows - 1));
    return NEAT_OK;
}

neat_status cpu_softmax_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const float *y = op->u.softmax_backward.y->data, *dy = op->u.softmax_backward.dy->data;
    float *dx = op->u.softmax_backward.dx->data;
    int64_t rows = op->u.softmax_backward.rows, cols = op->u.softmax_backward.cols;
    if (rows == 0 || cols == 0) return NEAT_OK;
    int par = par_threads(dev, rows, cols);
    if (op->u.softmax_backward.dx->dtype != NEAT_F32) {
        const nm_softmax_backward_args *a = &op->u.softmax_backward;
        CPU_FOR(par, r, rows,
                softmax_backward_half_row(a->dx->dtype, half_row(a->y, r, cols),
                                          half_row(a->dy, r, cols), half_row(a->dx, r, cols),
                                          cols));
        return NEAT_OK;
    }
    CPU_FOR(par, r, rows, {
        const float *yr = y + r * cols, *dyr = dy + r * cols;
        float dot = (float)row_dot(dyr, yr, cols);
        row_softmax_grad(yr, dyr, dx + r * cols, cols, dot);
    });
    return NEAT_OK;
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

/* OK when every label is an integer in [0, cols); otherwise the error of the first bad row. */
static neat_status check_labels(const char *fn, const float *labels, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float l = labels[r];
        if (!(l >= 0.0f && (double)l < (double)cols && l == floorf(l)))
            return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                            "%s: labels[%lld] = %g is not a class index in 0..%lld", fn,
                            (long long)r, (double)l, (long long)cols - 1);
    }
    return NEAT_OK;
}

/* -log softmax(x)[label] of one row, in double. */
static double xent_row(const float *x, int64_t cols, int64_t label) {
    float m = row_max(x, cols);
    double s = row_exp_sum(x, cols, m);
    /* m - x_label first: m + log s would lose log s next to a logit beyond 2^53 */
    return ((double)m - (double)x[label]) + log(s);
}

neat_status cpu_softmax_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const float *x = op->u.softmax_xent.logits->data, *labels = op->u.softmax_xent.labels->data;
    float *loss = op->u.softmax_xent.out->data;
    int64_t rows = op->u.softmax_xent.rows, cols = op->u.softmax_xent.cols;
    neat_status st = check_labels("neat_softmax_cross_entropy", labels, rows, cols);
    if (st != NEAT_OK) return st;
    if (rows == 0) {
        loss[0] = 0.0f;
        return NEAT_OK;
    }
    /* rows in fixed blocks (sizes from `rows` only): block sums, then the blocks in order */
    int64_t bs = (rows + XENT_MAX_BLOCKS - 1) / XENT_MAX_BLOCKS;
    int64_t nb = (rows + bs - 1) / bs;
    double block[XENT_MAX_BLOCKS];
    int par = par_threads(dev, rows, cols);
    CPU_FOR(par, b, nb, {
        int64_t r1 = (b + 1) * bs < rows ? (b + 1) * bs : rows;
        double acc = 0.0;
        for (int64_t r = b * bs; r < r1; r++)
            acc += xent_row(x + r * cols, cols, (int64_t)labels[r]);
        block[b] = acc;
    });
    double total = 0.0;
    for (int64_t b = 0; b < nb; b++) total += block[b];
    loss[0] = (float)(total / (double)rows);
    return NEAT_OK;
}

neat_status cpu_softmax_xent_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const float *x = op->u.softmax_xent_backward.logits->data,
                *labels = op->u.softmax_xent_backward.labels->data;
    float *dx = op->u.softmax_xent_backward.out->data;
    int64_t rows = op->u.softmax_xent_backward.rows, cols = op->u.softmax_xent_backward.cols;
    neat_status st = check_labels("neat_softmax_cross_entropy_backward", labels, rows, cols);
    if (st != NEAT_OK || rows == 0 || cols == 0) return st;
    int par = par_threads(dev, rows, cols);
    CPU_FOR(par, r, rows, {
        const float *xr = x + r * cols;
        float *dr = dx + r * cols;
        int64_t label = (int64_t)labels[r];
        float m = row_max(xr, cols);
        double s = row_exp(xr, dr, cols, m, NULL);
        double e_label = dr[label];
        row_scale(dr, cols, (float)(1.0 / (s * (double)rows)));
        dr[label] = (float)(-(s - e_label) / (s * (double)rows));
    });
    return NEAT_OK;
}
