/*
 * elementwise.c — add and mul (same shape or a row broadcast over rows), scale, fill and the
 * activations with their gradients, as OpenMP loops.
 *
 * Every loop is elementwise: out[i] depends on the inputs at i only, so out may be one of
 * the inputs (in place). `#pragma omp simd` states that there is no loop-carried dependence,
 * which lets GCC vectorize without runtime alias checks (an alias at the same index is
 * harmless). Each kernel works on a range [lo, hi) and is compiled for several x86-64 levels
 * (CPU_CLONES); the drivers split the range over threads only when it is large enough to pay
 * for a fork/join (a few microseconds).
 *
 * Activations (neat_activation): relu max(x, 0) (NaN stays NaN); sigmoid 1/(1+e^-x); tanh;
 * gelu in the tanh form 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as
 * x * sigmoid(2u) (the same value, without cancellation for negative x).
 * Gradients: relu dy [y > 0]; sigmoid dy y (1 - y); tanh dy (1 - y^2) — all from the saved
 * output y; gelu from the input x:
 *   d/dx x s(2u) = s + x s (1 - s) 2 u',  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
 */
/* We never read floating-point exception flags; without this GCC refuses to if-convert the
 * selects of the exp/tanh code (it could "trap") and leaves those loops scalar. */
#pragma GCC optimize("no-trapping-math")

#include "../../core/dtype.h"
#include "cpu.h"
#include "loops.h"
#include "vecmath.h"
#include "half_simd.h"

#include <math.h>
#include <string.h>

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

/* ---- kernels on [lo, hi) ------------------------------------------------------------------ */

/* out = a + b, or a * b when mul (two loops: each vectorizes). */
CPU_CLONES static void pair_range(const float *a, const float *b, float *out, int mul, int64_t lo,
                                  int64_t hi) {
    if (mul) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = a[i] * b[i];
    } else {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = a[i] + b[i];
    }
}

/* Rows [lo, hi) of out = a + row (or a * row), a and out rows x cols. */
CPU_CLONES static void pair_row_range(const float *a, const float *row, float *out, int mul,
                                      int64_t cols, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++) pair_range(a + r * cols, row, out + r * cols, mul, 0, cols);
}

CPU_CLONES static void scale_range(const float *x, float alpha, float *out, int64_t lo,
                                   int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) out[i] = alpha * x[i];
}

CPU_CLONES static void fill_range(float *t, float value, int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) t[i] = value;
}

static void copy_range(const float *x, float *out, int64_t lo, int64_t hi) {
    if (out != x) memmove(out + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
}

CPU_CLONES static void act_range(neat_activation act, const float *x, float *y, int64_t lo,
                                 int64_t hi) {
    switch (act) {
    case NEAT_ACT_NONE: copy_range(x, y, lo, hi); break;
    case NEAT_ACT_RELU:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
        break;
    case NEAT_ACT_SIGMOID:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) y[i] = cpu_sigmoidf(x[i]);
        break;
    case NEAT_ACT_TANH:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) y[i] = cpu_tanhf(x[i]);
        break;
    case NEAT_ACT_GELU:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i];
            float two_u = 2.0f * GELU_K0 * (v + GELU_K1 * v * v * v);
            y[i] = v * cpu_sigmoidf(two_u);
        }
        break;
    }
}

CPU_CLONES static void act_grad_range(neat_activation act, const float *x, const float *y,
                                      const float *dy, float *dz, int64_t lo, int64_t hi) {
    switch (act) {
    case NEAT_ACT_NONE: copy_range(dy, dz, lo, hi); break;
    case NEAT_ACT_RELU:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            float g = dy[i];
            dz[i] = y[i] > 0.0f ? g : 0.0f;
        }
        break;
    case NEAT_ACT_SIGMOID:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) dz[i] = dy[i] * (y[i] * (1.0f - y[i]));
        break;
    case NEAT_ACT_TANH:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) dz[i] = dy[i] * (1.0f - y[i] * y[i]);
        break;
    case NEAT_ACT_GELU:
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            /* Beyond |x| = 16 the derivative is 1 (x > 0) or 0 (x < 0) in float32: clamping x
             * there keeps x^2 and x^3 finite, which would otherwise give inf * 0 = NaN (and
             * -inf) for finite |x| > 1.8e19. v - v adds 0 to the result, or NaN for an infinite
             * or NaN x (PyTorch's gelu backward is NaN at +-inf). */
            float v = x[i] > 16.0f ? 16.0f : x[i] < -16.0f ? -16.0f : x[i];
            float inf_nan = x[i] - x[i];
            float two_u = 2.0f * GELU_K0 * (v + GELU_K1 * v * v * v);
            /* e = e^{-2u}, kept finite so that 1 - s = e s stays defined where s underflows */
            float e = cpu_expf(two_u < -88.0f ? 88.0f : -two_u);
            float s = 1.0f / (1.0f + e);
            float one_minus_s = e * s;
            float du = 2.0f * GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
            dz[i] = dy[i] * (s + v * s * one_minus_s * du + inf_nan);
        }
        break;
    }
}

/* ---- half tensors (bf16, f16) ------------------------------------------------------------------
 * Same dtype in and out (half.c's cpu_half_loop decides): each thread takes [lo, hi) in chunks
 * of CPU_HALF_CHUNK, widens every input chunk into a float32 buffer on its stack (exact),
 * runs the float32 kernel above on the buffers and rounds the chunk once into the output. So
 * every output is the float32 op's value on the same floats, rounded once: the bits of the
 * float32-copies path, reading and writing 2 bytes an element instead of 2 + 4 + 4. */

typedef enum { HALF_PAIR, HALF_SCALE, HALF_ACT, HALF_ACT_GRAD } half_kind;

typedef struct half_job {
    half_kind kind;
    neat_dtype dt;
    const uint16_t *in[3]; /* PAIR: a, b; SCALE/ACT: x; ACT_GRAD: x, y, dy (x or y NULL) */
    uint16_t *out;
    int mul;             /* PAIR */
    float alpha;         /* SCALE */
    neat_activation act; /* ACT, ACT_GRAD */
} half_job;

/* add, mul and scale in one pass, without the buffers: bf16's widening and rounding are a few
 * integer operations that vectorize with the arithmetic; f16's are one instruction each way
 * (AVX-512; half_simd.h). The same float32 operation on the same floats, rounded the same
 * way: the bits of the chunks. bb: b indexed like a (a broadcast row shifted by the row's
 * start). Measured on add_4096_bf16: 6.1 ms with the chunks, 4.2 in one pass. */
CPU_CLONES static void bf16_pair_range(const uint16_t *a, const uint16_t *bb, uint16_t *out,
                                       int mul, int64_t lo, int64_t hi) {
    if (mul) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++)
            out[i] = cpu_f32_to_bf16(cpu_bf16_to_f32(a[i]) * cpu_bf16_to_f32(bb[i]));
    } else {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++)
            out[i] = cpu_f32_to_bf16(cpu_bf16_to_f32(a[i]) + cpu_bf16_to_f32(bb[i]));
    }
}

CPU_CLONES static void bf16_scale_range(const uint16_t *x, float alpha, uint16_t *out, int64_t lo,
                                        int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) out[i] = cpu_f32_to_bf16(alpha * cpu_bf16_to_f32(x[i]));
}

#if CPU_X86_F16
/* The full 16-element blocks of [lo, hi); returns where they end. */
__attribute__((target("avx512f"))) static int64_t f16_pair_avx512(const uint16_t *a,
                                                                  const uint16_t *bb, uint16_t *out,
                                                                  int mul, int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
        __m512 x = cpu_f16x16_widen(a + i), y = cpu_f16x16_widen(bb + i);
        cpu_f16x16_narrow(mul ? _mm512_mul_ps(x, y) : _mm512_add_ps(x, y), out + i);
    }
    return i;
}

__attribute__((target("avx512f"))) static int64_t
f16_scale_avx512(const uint16_t *x, float alpha, uint16_t *out, int64_t lo, int64_t hi) {
    const __m512 va = _mm512_set1_ps(alpha);
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16)
        cpu_f16x16_narrow(_mm512_mul_ps(va, cpu_f16x16_widen(x + i)), out + i);
    return i;
}
#endif

/* Elements [lo, hi) of job; for a broadcast pair, in[1] is read from in1_lo (its column). */
static void half_range(const half_job *j, int64_t lo, int64_t hi, const uint16_t *in1) {
    const uint16_t *bb = in1 ? in1 - lo : j->in[1]; /* b indexed like a */
    if (j->kind == HALF_PAIR || j->kind == HALF_SCALE) {
        if (j->dt == NEAT_BF16) {
            if (j->kind == HALF_PAIR)
                bf16_pair_range(j->in[0], bb, j->out, j->mul, lo, hi);
            else
                bf16_scale_range(j->in[0], j->alpha, j->out, lo, hi);
            return;
        }
#if CPU_X86_F16
        if (__builtin_cpu_supports("avx512f")) {
            int64_t done = j->kind == HALF_PAIR
                               ? f16_pair_avx512(j->in[0], bb, j->out, j->mul, lo, hi)
                               : f16_scale_avx512(j->in[0], j->alpha, j->out, lo, hi);
            if (in1) in1 += done - lo;
            lo = done; /* the tail: the chunks below */
        }
#endif
    }
    _Alignas(64) float buf[3][CPU_HALF_CHUNK];
    for (int64_t c = lo; c < hi; c += CPU_HALF_CHUNK) {
        int64_t m = hi - c < CPU_HALF_CHUNK ? hi - c : CPU_HALF_CHUNK;
        const float *f[3] = {NULL, NULL, NULL};
        for (int k = 0; k < 3; k++) {
            const uint16_t *src = k == 1 && in1 ? in1 + (c - lo) : j->in[k] ? j->in[k] + c : NULL;
            if (!src) continue;
            cpu_half_widen(j->dt, src, buf[k], m);
            f[k] = buf[k];
        }
        switch (j->kind) {
        case HALF_PAIR: pair_range(f[0], f[1], buf[0], j->mul, 0, m); break;
        case HALF_SCALE: scale_range(f[0], j->alpha, buf[0], 0, m); break;
        case HALF_ACT: act_range(j->act, f[0], buf[0], 0, m); break;
        case HALF_ACT_GRAD: act_grad_range(j->act, f[0], f[1], f[2], buf[0], 0, m); break;
        }
        cpu_half_narrow(j->dt, buf[0], j->out + c, m);
    }
}

static void half_run(int nthreads, const half_job *j, int64_t n) {
    CPU_SPLIT(cpu_par(nthreads, n), n, lo, hi, half_range(j, lo, hi, NULL));
}

/* ---- shared activation entry points (cpu.h) ------------------------------------------------- */

void cpu_act_apply(int nthreads, neat_activation act, const float *x, float *y, int64_t n) {
    CPU_SPLIT(cpu_par(nthreads, n), n, lo, hi, act_range(act, x, y, lo, hi));
}

void cpu_act_grad(int nthreads, neat_activation act, const float *x, const float *y,
                  const float *dy, float *dz, int64_t n) {
    CPU_SPLIT(cpu_par(nthreads, n), n, lo, hi, act_grad_range(act, x, y, dy, dz, lo, hi));
}

void cpu_relu_grad_bf16(int nthreads, const uint16_t *dy, const uint16_t *y, uint16_t *dz,
                        int64_t n) {
    CPU_SPLIT(cpu_par(nthreads, n), n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) dz[i] = cpu_bf16_to_f32(y[i]) > 0.0f ? dy[i] : 0;
    });
}

/* The largest |v| of n values of type dt (float32 or bf16), +inf when one is not finite. The
 * magnitudes' bits compared as integers (which order like the floats they are), so a NaN
 * cannot drop out of the maximum as it would from a float max. */
CPU_CLONES static uint32_t abs_bits_max(const void *x, neat_dtype dt, int64_t lo, int64_t hi) {
    uint32_t m = 0;
    if (dt == NEAT_F32) {
        const uint32_t *u = x;
#pragma omp simd reduction(max : m)
        for (int64_t i = lo; i < hi; i++) m = m > (u[i] & 0x7fffffffu) ? m : u[i] & 0x7fffffffu;
    } else { /* bf16 and f16 alike: the upper 16 bits of the float32 (f16: its own) */
        const uint16_t *u = x;
#pragma omp simd reduction(max : m)
        for (int64_t i = lo; i < hi; i++) m = m > (uint32_t)(u[i] & 0x7fffu) ? m : u[i] & 0x7fffu;
    }
    return m;
}

double cpu_max_abs(int nthreads, const void *x, neat_dtype dt, int64_t n) {
    uint32_t m = 0;
    int par = cpu_par(nthreads, n);
    if (par <= 1) {
        m = abs_bits_max(x, dt, 0, n);
    } else {
#pragma omp parallel for num_threads(par) reduction(max : m) schedule(static)
        for (int t = 0; t < par; t++) {
            int64_t per = (n + par - 1) / par, lo = t * per, hi = lo + per < n ? lo + per : n;
            uint32_t mt = lo < hi ? abs_bits_max(x, dt, lo, hi) : 0;
            m = m > mt ? m : mt;
        }
    }
    if (dt == NEAT_F32) {
        if (m >= 0x7f800000u) return INFINITY;
        float f;
        memcpy(&f, &m, sizeof f);
        return f;
    }
    if (dt == NEAT_BF16) return m >= 0x7f80u ? INFINITY : (double)cpu_bf16_to_f32((uint16_t)m);
    return m >= 0x7c00u ? INFINITY : (double)nm_f16_to_f32((uint16_t)m);
}

void cpu_relu_half(int nthreads, neat_dtype dt, uint16_t *y, int64_t n) {
    uint16_t inf = dt == NEAT_BF16 ? 0x7f80u : 0x7c00u;
    CPU_SPLIT(cpu_par(nthreads, n), n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) /* negative, not -0, not NaN: +0 */
            if ((y[i] & 0x8000u) && (y[i] & 0x7fffu) != 0 && (y[i] & 0x7fffu) <= inf) y[i] = 0;
    });
}

/* ---- ops ------------------------------------------------------------------------------------ */

/* out = a + b, or out[r, :] = a[r, :] + b[:] when b is one row (broadcast). */
/* add and mul: out = a op b, b of a's shape or one row broadcast over the rows. */
static neat_status pair(nm_device *dev, const nm_add_args *u, int mul) {
    const float *a = u->a->data, *b = u->b->data;
    float *out = u->out->data;
    int64_t rows = u->rows, cols = u->cols;
    int par = cpu_par(cpu_dev(dev)->nthreads, rows * cols);
    if (rows == 0 || cols == 0) return NEAT_OK;
    if (u->out->dtype != NEAT_F32) {
        half_job j = {.kind = HALF_PAIR,
                      .dt = u->out->dtype,
                      .in = {cpu_half_data(u->a), cpu_half_data(u->b)},
                      .out = cpu_half_data(u->out),
                      .mul = mul};
        if (!u->broadcast) {
            CPU_SPLIT(par, rows * cols, lo, hi, half_range(&j, lo, hi, NULL));
        } else if (rows >= par) {
            CPU_FOR(par, r, rows, half_range(&j, r * cols, (r + 1) * cols, cpu_half_data(u->b)));
        } else {
            for (int64_t r = 0; r < rows; r++)
                CPU_SPLIT(par, cols, lo, hi,
                          half_range(&j, r * cols + lo, r * cols + hi, cpu_half_data(u->b) + lo));
        }
        return NEAT_OK;
    }
    if (!u->broadcast) {
        CPU_SPLIT(par, rows * cols, lo, hi, pair_range(a, b, out, mul, lo, hi));
    } else if (rows >= par) {
        CPU_FOR(par, r, rows, pair_row_range(a, b, out, mul, cols, r, r + 1));
    } else {
        /* fewer rows than threads: split each row instead */
        for (int64_t r = 0; r < rows; r++)
            CPU_SPLIT(par, cols, lo, hi, pair_range(a + r * cols, b, out + r * cols, mul, lo, hi));
    }
    return NEAT_OK;
}

neat_status cpu_add(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair(dev, &op->u.add, 0);
}

neat_status cpu_mul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair(dev, &op->u.mul, 1);
}

neat_status cpu_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const float *x = op->u.scale.x->data;
    float *out = op->u.scale.out->data;
    float alpha = op->u.scale.alpha;
    int64_t n = op->u.scale.x->numel;
    if (op->u.scale.out->dtype != NEAT_F32) {
        half_job j = {.kind = HALF_SCALE,
                      .dt = op->u.scale.out->dtype,
                      .in = {cpu_half_data(op->u.scale.x)},
                      .out = cpu_half_data(op->u.scale.out),
                      .alpha = alpha};
        half_run(cpu_dev(dev)->nthreads, &j, n);
        return NEAT_OK;
    }
    CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi, scale_range(x, alpha, out, lo, hi));
    return NEAT_OK;
}

neat_status cpu_fill(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    float *t = op->u.fill.t->data;
    float value = op->u.fill.value;
    int64_t n = op->u.fill.t->numel;
    if (op->u.fill.t->dtype != NEAT_F32) { /* the value rounded once, as every element */
        uint16_t h, *p = cpu_half_data(op->u.fill.t);
        cpu_half_narrow(op->u.fill.t->dtype, &value, &h, 1);
        CPU_FOR(cpu_par(cpu_dev(dev)->nthreads, n), i, n, p[i] = h);
        return NEAT_OK;
    }
    CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi, fill_range(t, value, lo, hi));
    return NEAT_OK;
}

neat_status cpu_activation_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    if (op->u.activation_forward.out->dtype != NEAT_F32) {
        half_job j = {.kind = HALF_ACT,
                      .dt = op->u.activation_forward.out->dtype,
                      .in = {cpu_half_data(op->u.activation_forward.x)},
                      .out = cpu_half_data(op->u.activation_forward.out),
                      .act = op->u.activation_forward.act};
        half_run(cpu_dev(dev)->nthreads, &j, op->u.activation_forward.out->numel);
        return NEAT_OK;
    }
    cpu_act_apply(cpu_dev(dev)->nthreads, op->u.activation_forward.act,
                  op->u.activation_forward.x->data, op->u.activation_forward.out->data,
                  op->u.activation_forward.out->numel);
    return NEAT_OK;
}

/* dx = dy * act'(.): relu/sigmoid/tanh read y, gelu reads x (the other may be NULL). */
neat_status cpu_activation_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *x = op->u.activation_backward.x, *y = op->u.activation_backward.y;
    if (op->u.activation_backward.out->dtype != NEAT_F32) {
        half_job j = {.kind = HALF_ACT_GRAD,
                      .dt = op->u.activation_backward.out->dtype,
                      .in = {x ? cpu_half_data(x) : NULL, y ? cpu_half_data(y) : NULL,
                             cpu_half_data(op->u.activation_backward.dy)},
                      .out = cpu_half_data(op->u.activation_backward.out),
                      .act = op->u.activation_backward.act};
        half_run(cpu_dev(dev)->nthreads, &j, op->u.activation_backward.out->numel);
        return NEAT_OK;
    }
    cpu_act_grad(cpu_dev(dev)->nthreads, op->u.activation_backward.act, x ? x->data : NULL,
                 y ? y->data : NULL, op->u.activation_backward.dy->data,
                 op->u.activation_backward.out->data, op->u.activation_backward.out->numel);
    return NEAT_OK;
}
