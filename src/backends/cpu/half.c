/*
 * half.c — bf16 and f16 tensors on the CPU: which ops run in them (cpu_op_check), neat_cast,
 * and how an op runs on half tensors (cpu_run_op).
 *
 * Half types are storage: the math is float32. An op that takes half tensors runs its
 * float32 function on float32 copies: every half input is widened into scratch memory
 * (exact), the float32 op runs, and the output is rounded once back into its half tensor
 * (to nearest, ties to even). That is the accuracy the header promises (float32 math and
 * accumulation, one rounding of the result) for every op at once, at the cost of a pass
 * over the data and 2x the tensor in scratch. The memory-bound ops on tensors of one half
 * type (half_loop below) instead convert inside their own loops (elementwise.c, softmax.c,
 * reduce.c) with the conversions of this file, and give the same bits.
 */
#include "cpu.h"
#include "../../core/dtype.h"
#include "../half_ops.h"
#include "loops.h"
#include "vecmath.h"

#include "half_simd.h"

#include <string.h>
#if CPU_X86_F16
#include <cpuid.h>
#endif

/* ---- conversions that vectorize, the same bits as dtype.h's ----------------------------------
 * bf16 -> f32 is a shift. f32 -> bf16 is dtype.h's integer rounding written as a select, so
 * the loop vectorizes. f16 on x86-64 uses the conversion instructions (exact for widening;
 * narrowing with an explicit round-to-nearest-even immediate, which ignores MXCSR's rounding
 * mode; overflow gives inf and tiny values f16 subnormals as IEEE 754 says, as dtype.h does),
 * with every NaN first replaced by the quiet NaN of its sign with an empty payload, since the
 * instruction keeps the payload's top bits where dtype.h gives sign | 0x7e00; widening, the
 * instruction quiets a signalling NaN where dtype.h keeps its bits, so a block holding a NaN
 * is converted again by dtype.h's function (NaN inputs are rare: the cost is nil). Elsewhere
 * dtype.h's scalar functions. test_dtype holds both against dtype.h, bit for bit. */

CPU_CLONES static void bf16_widen(const uint16_t *src, float *dst, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = cpu_bf16_to_f32(src[i]);
}

CPU_CLONES static void bf16_narrow(const float *src, uint16_t *dst, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = cpu_f32_to_bf16(src[i]);
}

#if CPU_X86_F16
__attribute__((target("avx512f"))) static int64_t f16_widen_avx512(const uint16_t *src, float *dst,
                                                                   int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = cpu_f16x16_widen(src + i);
        _mm512_storeu_ps(dst + i, v);
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) /* NaN: keep the payload as dtype.h does */
            for (int k = 0; k < 16; k++) dst[i + k] = nm_f16_to_f32(src[i + k]);
    }
    if (i < n) { /* the tail (short rows: pooling): its halves through a 32-byte buffer, a
                  * masked store (see f16_narrow_avx512 for why no 64-byte buffer) */
        uint16_t h[16] = {0};
        memcpy(h, src + i, (size_t)(n - i) * sizeof *h);
        __m512 v = cpu_f16x16_widen(h);
        _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << (n - i)) - 1), v);
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q))
            for (int64_t k = i; k < n; k++) dst[k] = nm_f16_to_f32(src[k]);
        i = n;
    }
    return i;
}

__attribute__((target("avx512f"))) static int64_t f16_narrow_avx512(const float *src, uint16_t *dst,
                                                                    int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) cpu_f16x16_narrow(_mm512_loadu_ps(src + i), dst + i);
    if (i < n) {
        /* The tail: a masked load (0 in the lanes past n), the halves through a 32-byte
         * buffer. Not a 64-byte float buffer: gcc 13.3 under ASan zeroes one with an aligned
         * 64-byte store (vmovdqa64) into ASan's stack frame, which does not have that
         * alignment: SEGV at the first fill of an f16 tensor (test_errors_ops on the GPU
         * machine, 2026-12-01). gcc 12 stores it unaligned. */
        uint16_t h[16];
        cpu_f16x16_narrow(_mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), src + i), h);
        memcpy(dst + i, h, (size_t)(n - i) * sizeof *h);
        i = n;
    }
    return i;
}

__attribute__((target("avx,f16c"))) static int64_t f16_widen_f16c(const uint16_t *src, float *dst,
                                                                  int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, v);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
            for (int k = 0; k < 8; k++) dst[i + k] = nm_f16_to_f32(src[i + k]);
    }
    return i;
}

__attribute__((target("avx,f16c"))) static int64_t f16_narrow_f16c(const float *src, uint16_t *dst,
                                                                   int64_t n) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)),
                 qnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
        x = _mm256_blendv_ps(x, _mm256_or_ps(_mm256_and_ps(x, sign), qnan), nan);
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return i;
}
#endif

#if CPU_X86_F16
/* F16C with the AVX state the OS saves: from cpuid, since clang 14's
 * __builtin_cpu_supports knows no "f16c" (gcc's does); AVX implies the OS part. Asked once;
 * threads that ask together find the same answer (relaxed atomics: no data race). */
static int has_f16c(void) {
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k < 0) {
        unsigned a, b, c, d;
        k = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx");
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k;
}
#endif

void cpu_half_widen(neat_dtype dt, const uint16_t *src, float *dst, int64_t n) {
    if (dt == NEAT_BF16) {
        bf16_widen(src, dst, n);
        return;
    }
    int64_t i = 0;
#if CPU_X86_F16
    if (__builtin_cpu_supports("avx512f"))
        i = f16_widen_avx512(src, dst, n);
    else if (has_f16c())
        i = f16_widen_f16c(src, dst, n);
#endif
    for (; i < n; i++) dst[i] = nm_f16_to_f32(src[i]);
}

void cpu_half_narrow(neat_dtype dt, const float *src, uint16_t *dst, int64_t n) {
    if (dt == NEAT_BF16) {
        bf16_narrow(src, dst, n);
        return;
    }
    int64_t i = 0;
#if CPU_X86_F16
    if (__builtin_cpu_supports("avx512f"))
        i = f16_narrow_avx512(src, dst, n);
    else if (has_f16c())
        i = f16_narrow_f16c(src, dst, n);
#endif
    for (; i < n; i++) dst[i] = nm_f32_to_f16(src[i]);
}

/* dst[i] = src[i] converted, i < n (float32 between the two types). */
static void convert(int nthreads, neat_dtype sdt, const void *src, neat_dtype ddt, void *dst,
                    int64_t n) {
    if (sdt == ddt) {
        if (src != dst) memmove(dst, src, (size_t)n * neat_dtype_size(sdt));
        return;
    }
    int par = cpu_par(nthreads, n);
    if (sdt == NEAT_F32) {
        CPU_SPLIT(par, n, lo, hi,
                  cpu_half_narrow(ddt, (const float *)src + lo, (uint16_t *)dst + lo, hi - lo));
    } else if (ddt == NEAT_F32) {
        CPU_SPLIT(par, n, lo, hi,
                  cpu_half_widen(sdt, (const uint16_t *)src + lo, (float *)dst + lo, hi - lo));
    } else {
        CPU_FOR(par, i, n, nm_store(ddt, dst, i, nm_load(sdt, src, i)));
    }
}

neat_status cpu_cast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const nm_cast_args *a = &op->u.cast;
    if (a->x->numel == 0) return NEAT_OK;
    convert(cpu_dev(dev)->nthreads, a->x->dtype, a->x->data, a->y->dtype, a->y->data, a->x->numel);
    return NEAT_OK;
}

/* The first half tensor of op, NULL when every tensor is float32. */
static const nm_tensor *first_half(const nm_op *op) {
    int n;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    for (int i = 0; i < n; i++)
        if (ts[i] && ts[i]->dtype != NEAT_F32) return ts[i];
    return NULL;
}

neat_status cpu_op_check(nm_device *dev, const nm_op *op) {
    (void)dev;
    neat_status st = cpu_conv_check(op);
    if (st != NEAT_OK) return st;
    const nm_tensor *h = first_half(op);
    if (h && !nm_half_via_f32(op->kind) && !nm_half_native(op->kind))
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: the cpu backend does not run this op on %s tensors yet (float32 "
                        "only; neat_cast converts)",
                        op->fn, neat_dtype_name(h->dtype));
    return NEAT_OK;
}

/* 2x2 stride 2 without padding, NCHW: the pooling pool.c runs on half tensors. */
static int pool_2x2(const nm_conv_geom *g) {
    return !g->nhwc && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 &&
           g->pw == 0;
}

/* Ops whose CPU function runs half tensors itself (elementwise.c, softmax.c, reduce.c,
 * pool.c): those of the list below when every tensor is of the one half type (a softmax row
 * of at most CPU_SOFTMAX_HALF_COLS, a 2x2 stride-2 pooling without padding). Mixed types
 * and every other op take the float32 copies. */
static int half_loop(const nm_op *op) {
    switch (op->kind) {
    case NM_OP_ADD:
    case NM_OP_MUL:
    case NM_OP_SCALE:
    case NM_OP_FILL:
    case NM_OP_ACTIVATION_FORWARD:
    case NM_OP_ACTIVATION_BACKWARD:
    case NM_OP_SUM: break;
    case NM_OP_MAXPOOL2D:
        if (!pool_2x2(&op->u.maxpool2d.g)) return 0;
        break;
    case NM_OP_MAXPOOL2D_BACKWARD:
        if (!pool_2x2(&op->u.maxpool2d_backward.g)) return 0;
        break;
    case NM_OP_SOFTMAX:
        if (op->u.softmax.cols > CPU_SOFTMAX_HALF_COLS) return 0;
        break;
    case NM_OP_SOFTMAX_BACKWARD:
        if (op->u.softmax_backward.cols > CPU_SOFTMAX_HALF_COLS) return 0;
        break;
    default: return 0;
    }
    int n;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    neat_dtype dt = NEAT_F32;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (dt == NEAT_F32) dt = ts[i]->dtype;
        if (ts[i]->dtype != dt) return 0;
    }
    return dt == NEAT_BF16 || dt == NEAT_F16;
}

/* A convolution with outputs and a non-empty reduction (conv.c's float32 code takes the
 * others: bias only, zeros). */
static int conv_nonempty(const nm_conv_geom *g) {
    return g->n * g->k * g->p * g->q > 0 && g->c / g->groups * g->kh * g->kw * g->h * g->w > 0;
}

/* The path flag (cpu_device.bf16_gemm, .bf16_conv) of an op that oneDNN's bf16 kernels take,
 * NULL when it takes the float32 copies: a matmul or linear forward with bf16 inputs (one
 * type: ops_check.c), a bf16 or float32 output and a product of k > 0 terms (the empty
 * product's loop is float32); a linear backward on bf16 tensors with act NONE or RELU (dz
 * exact in bf16) and no empty size; a conv2d forward likewise, non-empty; a conv2d backward
 * on bf16 tensors, non-empty, with act NONE or RELU and db only beside dw (the bias gradient
 * alone is a float32 loop there). */
static int *bf16_path(nm_device *dev, const nm_op *op) {
    cpu_device *c = cpu_dev(dev);
    switch (op->kind) {
    case NM_OP_MATMUL:
        return c->bf16_gemm && op->u.matmul.a->dtype == NEAT_BF16 && op->u.matmul.k > 0
                   ? &c->bf16_gemm
                   : NULL;
    case NM_OP_LINEAR_FORWARD:
        return c->bf16_gemm && op->u.linear_forward.x->dtype == NEAT_BF16 &&
                       op->u.linear_forward.in > 0
                   ? &c->bf16_gemm
                   : NULL;
    case NM_OP_LINEAR_BACKWARD: {
        const nm_linear_backward_args *u = &op->u.linear_backward;
        return c->bf16_gemm && u->x->dtype == NEAT_BF16 && u->n > 0 && u->in > 0 && u->out > 0 &&
                       (u->act == NEAT_ACT_NONE || u->act == NEAT_ACT_RELU)
                   ? &c->bf16_gemm
                   : NULL;
    }
    case NM_OP_CONV2D_FORWARD:
        return c->bf16_conv && op->u.conv2d_forward.x->dtype == NEAT_BF16 &&
                       conv_nonempty(&op->u.conv2d_forward.g)
                   ? &c->bf16_conv
                   : NULL;
    case NM_OP_CONV2D_BACKWARD: {
        const nm_conv2d_backward_args *u = &op->u.conv2d_backward;
        return c->bf16_conv && u->x->dtype == NEAT_BF16 && conv_nonempty(&u->g) &&
                       (u->act == NEAT_ACT_NONE || u->act == NEAT_ACT_RELU) && (u->dw || !u->db)
                   ? &c->bf16_conv
                   : NULL;
    }
    default: return NULL;
    }
}

neat_status cpu_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    nm_op_fn run = dev->be->op[op->kind];
    if (nm_half_native(op->kind) || !first_half(op) || half_loop(op)) return run(dev, cb, op);
    int *path = bf16_path(dev, op);
    if (path) {
        neat_status st = run(dev, cb, op);
        if (st != NEAT_ERR_UNSUPPORTED) return st;
        /* oneDNN refused to create a bf16 primitive before anything was written (linear.c's
         * backward reports a refusal after a write as BACKEND_ERROR): this op and every later
         * one of its family take the float32 copies on this device */
        *path = 0;
    }
    nm_op f32 = *op;
    nm_tensor shadow[NM_OP_MAX_TENSORS];
    int n, nthreads = cpu_dev(dev)->nthreads;
    nm_tensor **ts = (nm_tensor **)nm_op_tensors(&f32, &n);
    int last = n - 1, reads;
    while (last >= 0 && !ts[last]) last--;
    int out = nm_half_first_output(op, last, &reads);
    for (int i = 0; i < n; i++) {
        if (!ts[i] || ts[i]->dtype == NEAT_F32) continue;
        nm_half_shadow(&shadow[i], ts[i]);
        if (ts[i]->numel > 0) {
            void *p;
            neat_status st = nm_scratch_alloc(cb, (size_t)ts[i]->numel * sizeof(float), &p);
            if (st != NEAT_OK) return st;
            shadow[i].data = p;
            if (i < out || reads)
                convert(nthreads, ts[i]->dtype, ts[i]->data, NEAT_F32, p, ts[i]->numel);
        }
        ts[i] = &shadow[i];
    }
    neat_status st = run(dev, cb, &f32);
    if (st != NEAT_OK) return st;
    nm_tensor *const *orig = nm_op_tensors(op, &n);
    for (int i = out; i >= 0 && i < n; i++) {
        const nm_tensor *o = orig[i];
        if (o && o->dtype != NEAT_F32 && o->numel > 0)
            convert(nthreads, NEAT_F32, ts[i]->data, o->dtype, o->data, o->numel);
    }
    return NEAT_OK;
}
