/*
 * reduce.c — sums: of every element (neat_sum_all, axis -1) and along one axis (neat_sum_axis,
 * x seen as [outer, len, inner] and summed over len into y [outer, inner]).
 *
 * Accuracy: floats are added in double precision. A float converts to double exactly and
 * each double addition errs by at most 2^-53 of the running magnitude, so summing n values
 * in any fixed order errs by at most about n 2^-53 sum|x|, far below the promised
 * (log2 n + 1) 2^-24 sum|x| for any n below 2^29 per accumulator; the one rounding to float
 * at the end adds at most 2^-24 |sum|. (A float accumulator would drift as n 2^-24: a
 * sum of 10^7 uniform values is then off by ~1e-4 relative.)
 *
 * Determinism: the order of additions depends on the sizes only, never on the thread count.
 * A contiguous run of n floats is cut into blocks of sum_block_size(n) elements (at most
 * SUM_MAX_BLOCKS of them); each block is summed in 64 double lanes (x[i] goes to lane
 * i mod 64: eight vectors of independent additions in flight; lanes combined pairwise), and
 * the block sums are combined pairwise. Threads only decide who computes which block. Along an
 * inner axis (inner > 1), each output is one
 * double accumulator taking x[o, 0, i], x[o, 1, i], ... in order; threads split the outputs.
 */
#include "cpu.h"
#include "loops.h"

#include <string.h>

#define SUM_MIN_BLOCK 8192
#define SUM_MAX_BLOCKS 4096
#define SUM_LANES 64
/* Outputs per task along an inner axis: one double accumulator each, on the stack. */
#define SUM_COLS 256

/* Block length for a run of n: at least SUM_MIN_BLOCK, a multiple of the lane count, and
 * large enough that there are at most SUM_MAX_BLOCKS blocks. */
static int64_t sum_block_size(int64_t n) {
    int64_t b = (n + SUM_MAX_BLOCKS - 1) / SUM_MAX_BLOCKS;
    b = (b + SUM_LANES - 1) / SUM_LANES * SUM_LANES;
    return b > SUM_MIN_BLOCK ? b : SUM_MIN_BLOCK;
}

/* Sum of x[0, n) in double: element i into lane i mod SUM_LANES, the lanes added pairwise. */
CPU_CLONES static double sum_block(const float *x, int64_t n) {
    double lane[SUM_LANES] = {0};
    int64_t full = n - n % SUM_LANES;
    for (int64_t i = 0; i < full; i += SUM_LANES) {
        /* 4 KiB ahead, one line each: on the development VM the hardware prefetch alone left
         * sum_all_4096 at ~80% of the copy bandwidth; with these, 15% faster */
        __builtin_prefetch(x + i + 1024);
        __builtin_prefetch(x + i + 1024 + 16);
        __builtin_prefetch(x + i + 1024 + 32);
        __builtin_prefetch(x + i + 1024 + 48);
        for (int j = 0; j < SUM_LANES; j++) lane[j] += (double)x[i + j];
    }
    for (int64_t i = full; i < n; i++) lane[i - full] += (double)x[i];
    for (int width = SUM_LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) lane[j] += lane[j + width];
    return lane[0];
}

/* ---- half tensors (bf16, f16): the same sums of the same floats ------------------------------
 * Every element is widened exactly and goes to the same lane or accumulator, in the same
 * order, as in the float32 functions: the same double sums, so the same bits as the float32
 * copies, with half the bytes read and no copy. The result is rounded to float32 and then to
 * the half type, as the copies path does. */

/* lane[j] += x[i + j] for each full group of SUM_LANES in x[0, n), n a multiple of it. */
CPU_CLONES static void lanes_add(double *lane, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += SUM_LANES)
        for (int j = 0; j < SUM_LANES; j++) lane[j] += (double)x[i + j];
}

/* One value rounded to half type dt. */
static uint16_t half_round(neat_dtype dt, float f) {
    uint16_t h;
    cpu_half_narrow(dt, &f, &h, 1);
    return h;
}

/* sum_block of a half run: chunks of CPU_HALF_CHUNK (a multiple of SUM_LANES) widened on the
 * stack, the next 4 KiB prefetched as sum_block does. */
static double sum_block_half(neat_dtype dt, const uint16_t *x, int64_t n) {
    _Static_assert(CPU_HALF_CHUNK % SUM_LANES == 0, "chunks keep the lanes");
    _Alignas(64) float buf[CPU_HALF_CHUNK];
    double lane[SUM_LANES] = {0};
    int64_t full = n - n % SUM_LANES;
    for (int64_t c = 0; c < full; c += CPU_HALF_CHUNK) {
        int64_t m = full - c < CPU_HALF_CHUNK ? full - c : CPU_HALF_CHUNK;
        for (int64_t k = 0; k < m; k += 32) __builtin_prefetch(x + c + k + 2048);
        cpu_half_widen(dt, x + c, buf, m);
        lanes_add(lane, buf, m);
    }
    float tail[SUM_LANES];
    cpu_half_widen(dt, x + full, tail, n - full);
    for (int64_t i = full; i < n; i++) lane[i - full] += (double)tail[i - full];
    for (int width = SUM_LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) lane[j] += lane[j + width];
    return lane[0];
}

/* Pairwise combination of v[0, n), n >= 1 (overwrites v): (v0+v1) + (v2+v3) ... level by level. */
static double sum_pairwise(double *v, int64_t n) {
    while (n > 1) {
        int64_t half = n / 2;
        for (int64_t i = 0; i < half; i++) v[i] = v[2 * i] + v[2 * i + 1];
        if (n % 2) v[half] = v[n - 1];
        n = half + n % 2;
    }
    return v[0];
}

/* One block: x[0, n) of type dt (float32 or half). */
static double sum_block_any(neat_dtype dt, const void *x, int64_t off, int64_t n) {
    if (dt == NEAT_F32) return sum_block((const float *)x + off, n);
    return sum_block_half(dt, (const uint16_t *)x + off, n);
}

/* Sum of a contiguous run of type dt, blocks computed by `par` threads (1: the caller). */
static double sum_run(neat_dtype dt, const void *x, int64_t n, int par) {
    int64_t bs = sum_block_size(n);
    int64_t nb = (n + bs - 1) / bs;
    if (nb <= 1) return n == 0 ? 0.0 : sum_block_any(dt, x, 0, n);
    double partial[SUM_MAX_BLOCKS];
    CPU_FOR(par, b, nb,
            partial[b] = sum_block_any(dt, x, b * bs, b * bs + bs < n ? bs : n - b * bs));
    return sum_pairwise(partial, nb);
}

/* Inner axis: y[o, i] for i in [i0, i1), i1 - i0 <= SUM_COLS. */
CPU_CLONES static void sum_columns(const float *x, float *y, int64_t len, int64_t inner, int64_t o,
                                   int64_t i0, int64_t i1) {
    double acc[SUM_COLS] = {0};
    int64_t width = i1 - i0;
    const float *base = x + o * len * inner + i0;
    for (int64_t l = 0; l < len; l++) {
        const float *row = base + l * inner;
        for (int64_t j = 0; j < width; j++) acc[j] += (double)row[j];
    }
    for (int64_t j = 0; j < width; j++) y[o * inner + i0 + j] = (float)acc[j];
}

/* sum_columns of half x into half y, each row's width elements widened first. */
static void sum_columns_half(neat_dtype dt, const uint16_t *x, uint16_t *y, int64_t len,
                             int64_t inner, int64_t o, int64_t i0, int64_t i1) {
    double acc[SUM_COLS] = {0};
    _Alignas(64) float row[SUM_COLS];
    int64_t width = i1 - i0;
    const uint16_t *base = x + o * len * inner + i0;
    for (int64_t l = 0; l < len; l++) {
        cpu_half_widen(dt, base + l * inner, row, width);
        for (int64_t j = 0; j < width; j++) acc[j] += (double)row[j];
    }
    for (int64_t j = 0; j < width; j++) y[o * inner + i0 + j] = half_round(dt, (float)acc[j]);
}

/* y[i] = (float)v, rounded once more when y is half. */
static void store_sum(neat_dtype dt, void *y, int64_t i, double v) {
    if (dt == NEAT_F32)
        ((float *)y)[i] = (float)v;
    else
        ((uint16_t *)y)[i] = half_round(dt, (float)v);
}

/* x and y of one type dt: float32, or bf16/f16 (half.c sends only those together). */
neat_status cpu_sum(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const void *x = op->u.sum.x->data;
    void *y = op->u.sum.y->data;
    neat_dtype dt = op->u.sum.x->dtype;
    size_t es = neat_dtype_size(dt);
    int64_t n = op->u.sum.x->numel;
    int par = cpu_par(cpu_dev(dev)->nthreads, n);

    if (op->u.sum.axis < 0) {
        store_sum(dt, y, 0, n == 0 ? 0.0 : sum_run(dt, x, n, par));
        return NEAT_OK;
    }
    int64_t outer = op->u.sum.outer, len = op->u.sum.len, inner = op->u.sum.inner;
    if (outer == 0 || inner == 0) return NEAT_OK;
    if (len == 0) {
        memset(y, 0, (size_t)(outer * inner) * es);
        return NEAT_OK;
    }
    if (inner == 1) {
        /* rows: one thread per row, or all threads on each row when rows are few and long
         * (same bits either way: a row's block decomposition depends on len only) */
        if (par > 1 && outer < 4 * par && len >= 4 * SUM_MIN_BLOCK) {
            for (int64_t o = 0; o < outer; o++)
                store_sum(dt, y, o, sum_run(dt, (const char *)x + o * len * es, len, par));
        } else {
            CPU_FOR(par, o, outer,
                    store_sum(dt, y, o, sum_run(dt, (const char *)x + o * len * es, len, 1)));
        }
        return NEAT_OK;
    }
    int64_t chunks = (inner + SUM_COLS - 1) / SUM_COLS;
    CPU_FOR(par, t, outer * chunks, {
        int64_t o = t / chunks, i0 = t % chunks * SUM_COLS;
        int64_t i1 = i0 + SUM_COLS < inner ? i0 + SUM_COLS : inner;
        if (dt == NEAT_F32)
            sum_columns(x, y, len, inner, o, i0, i1);
        else
            sum_columns_half(dt, x, y, len, inner, o, i0, i1);
    });
    return NEAT_OK;
}
