/*
 * matmul.c — c = act(alpha op(a) op(b) + bias + beta c) on oneDNN's matmul primitive, for
 * neat_matmul, neat_matmul_batched and (through cpu_gemm) linear forward and backward.
 *
 * Layouts: every tensor is dense row-major, so a transpose is only a change of strides in
 * the memory descriptor: a stored k x m and read as op(a) = m x k has strides {1, m}.
 * oneDNN's f32 matmul (the brgemm JIT kernel on AVX-512) reads the strided operands as
 * they are; nothing is copied here. alpha is the output scale, beta a sum post-op
 * (dst = alpha acc + beta dst), the activation an eltwise post-op; all three are fixed at
 * creation and part of the cache key (a program uses few distinct values, and fixed ones
 * need no runtime argument; oneDNN 3 takes alpha only at run time, as the source's scale,
 * which scales the accumulator before the post-ops as v2's output scale did). beta == 0 has
 * no sum post-op, so c is written without being read and a NaN there does not propagate.
 */
#include "dnnl_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct gemm_key {
    int64_t tag, batch, m, n, k, trans_a, trans_b, alpha_bits, beta_bits, has_bias, act, ab_dt,
        c_dt;
} gemm_key;

static int64_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (int64_t)u;
}

/* A dense row-major matrix (or batch of them) seen as rows x cols, transposed or not:
 * transposed means it is stored cols x rows. */
static dnnl_status_t matrix_md(cpu_md *md, int64_t batch, int64_t rows, int64_t cols,
                               int transposed, neat_dtype dt) {
    dnnl_dims_t dims = {0}, strides = {0};
    int nd = 0;
    if (batch != 1) {
        dims[nd] = batch;
        strides[nd++] = rows * cols;
    }
    dims[nd] = rows;
    strides[nd++] = transposed ? 1 : cols;
    dims[nd] = cols;
    strides[nd++] = transposed ? rows : 1;
    return dnnl_memory_desc_create_with_strides(md, nd, dims, cpu_dnnl_type(dt), strides);
}

typedef struct gemm_ctx {
    const cpu_gemm_desc *g;
    const char *fn; /* the public op, for messages */
} gemm_ctx;

static neat_status gemm_build(cpu_dnnl *d, const void *ctx, void **out) {
    const cpu_gemm_desc *g = ((const gemm_ctx *)ctx)->g;
    const char *fn = ((const gemm_ctx *)ctx)->fn;
    neat_status st = NEAT_OK;
    cpu_md a_md = NULL, b_md = NULL, bias_md = NULL, c_md = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    cpu_prim *p = calloc(1, sizeof *p);
    if (!p) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: no memory for a plan", fn);

    dnnl_status_t s = matrix_md(&a_md, g->batch, g->m, g->k, g->trans_a, g->ab_dt);
    if (s == dnnl_success) s = matrix_md(&b_md, g->batch, g->k, g->n, g->trans_b, g->ab_dt);
    if (s == dnnl_success) s = matrix_md(&c_md, g->batch, g->m, g->n, 0, g->c_dt);
    DNNL_TRY_AS(s, "dnnl_memory_desc_create_with_strides");
    if (g->has_bias) {
        /* one row broadcast over the batch and the m rows */
        dnnl_dims_t dims = {1, 1, g->n}, strides = {g->n, g->n, 1};
        int nd = g->batch != 1 ? 3 : 2;
        DNNL_TRY(dnnl_memory_desc_create_with_strides(&bias_md, nd, dims + 3 - nd,
                                                      cpu_dnnl_type(g->ab_dt), strides + 3 - nd));
    }

    st = cpu_dnnl_attr(fn, &attr);
    if (st != NEAT_OK) goto fail;
#if DNNL_VERSION_MAJOR >= 3
    /* v3 has no fixed output scale: alpha scales the source, given with each run (cpu_gemm) */
    if (g->alpha != 1.0f) DNNL_TRY(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_SRC, 0));
#else
    if (g->alpha != 1.0f) DNNL_TRY(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &g->alpha));
#endif
    dnnl_alg_kind_t alg;
    int has_act = cpu_dnnl_act_alg(g->act, &alg);
    if (g->beta != 0.0f || has_act) {
        DNNL_TRY(dnnl_post_ops_create(&ops));
        if (g->beta != 0.0f)
            DNNL_TRY(dnnl_post_ops_append_sum(ops, g->beta, 0, dnnl_data_type_undef));
        if (has_act) DNNL_TRY(dnnl_post_ops_append_eltwise(ops, alg, 0.0f, 0.0f));
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, ops));
    }
    s = dnnl_matmul_primitive_desc_create(&pd, d->engine, a_md, b_md, bias_md, c_md, attr);
    if (s == dnnl_unimplemented && g->ab_dt != NEAT_F32) { /* half.c then takes the copies */
        st = nm_error(NEAT_ERR_UNSUPPORTED, "%s: oneDNN has no bf16 matmul for this case", fn);
        goto fail;
    }
    DNNL_TRY_AS(s, "dnnl_matmul_primitive_desc_create");

    const int with_bias[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    const int no_bias[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    st = g->has_bias ? cpu_prim_init(d, fn, pd, with_bias, 4, p)
                     : cpu_prim_init(d, fn, pd, no_bias, 3, p);
#if DNNL_VERSION_MAJOR >= 3
    if (st == NEAT_OK && g->alpha != 1.0f) { /* one float32 */
        cpu_md scale_md = NULL;
        dnnl_dims_t one = {1};
        s = dnnl_memory_desc_create_with_tag(&scale_md, 1, one, dnnl_f32, dnnl_a);
        st = s != dnnl_success
                 ? cpu_dnnl_fail(s, fn, "dnnl_memory_desc_create_with_tag")
                 : cpu_prim_add_arg(d, fn, p, DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, scale_md);
        if (scale_md) dnnl_memory_desc_destroy(scale_md);
        if (st != NEAT_OK) cpu_prim_destroy(p);
    }
#endif
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    cpu_md mds[4] = {a_md, b_md, bias_md, c_md};
    for (int i = 0; i < 4; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
    if (st != NEAT_OK) {
        free(p);
        return st;
    }
    *out = p;
    return NEAT_OK;
}

static void gemm_free(void *plan) {
    cpu_prim_destroy(plan);
    free(plan);
}

/* k == 0: the product is empty, so c = act(bias + beta c) (beta == 0: c is not read). */
static void gemm_empty_product(int nthreads, const cpu_gemm_desc *g, const float *bias, float *c) {
    int64_t rows = g->batch * g->m, n = g->n;
    float beta = g->beta;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        float *row = c + i * n;
        for (int64_t j = 0; j < n; j++) {
            float v = bias ? bias[j] : 0.0f;
            row[j] = beta == 0.0f ? v : v + beta * row[j];
        }
    }
    if (g->act != NEAT_ACT_NONE) cpu_act_apply(nthreads, g->act, c, c, rows * n);
}

neat_status cpu_gemm(nm_device *dev, nm_cmdbuf *cb, const char *fn, const cpu_gemm_desc *g,
                     const void *a, const void *b, const void *bias, void *c) {
    if (g->batch == 0 || g->m == 0 || g->n == 0) return NEAT_OK;
    if (g->k == 0) {
        if (g->ab_dt != NEAT_F32 || g->c_dt != NEAT_F32) /* half.c takes k == 0 in float32 */
            return nm_error(NEAT_ERR_INTERNAL, "%s: an empty bf16 product", fn);
        gemm_empty_product(cpu_dev(dev)->nthreads, g, g->has_bias ? bias : NULL, c);
        return NEAT_OK;
    }
    /* A transposed vector is laid out as the plain one: drop the flag so that both share a
     * plan and oneDNN sees unambiguous strides. */
    cpu_gemm_desc n = *g;
    if (n.m == 1 || n.k == 1) n.trans_a = 0;
    if (n.n == 1 || n.k == 1) n.trans_b = 0;
    n.trans_a = !!n.trans_a;
    n.trans_b = !!n.trans_b;
    n.has_bias = !!n.has_bias;
    /* A relu oneDNN's post-op could turn a NaN into 0 in (cpu_fused_relu_exact): the product
     * without it, then a relu that keeps NaN. */
    int nthreads = cpu_dev(dev)->nthreads, relu_after = 0;
    if (n.act == NEAT_ACT_RELU &&
        (n.batch != 1 || n.beta != 0.0f ||
         !cpu_fused_relu_exact(nthreads, n.k, n.alpha, n.ab_dt, a, n.m * n.k, b, n.k * n.n,
                               n.has_bias ? bias : NULL, n.n))) {
        n.act = NEAT_ACT_NONE;
        relu_after = 1;
    }
    gemm_key key = {1,
                    n.batch,
                    n.m,
                    n.n,
                    n.k,
                    n.trans_a,
                    n.trans_b,
                    float_bits(n.alpha),
                    float_bits(n.beta),
                    n.has_bias,
                    (int64_t)n.act,
                    (int64_t)n.ab_dt,
                    (int64_t)n.c_dt};
    gemm_ctx ctx = {&n, fn};
    void *plan = NULL;
    neat_status st = cpu_dnnl_plan(dev, &key, sizeof key, gemm_build, gemm_free, &ctx, &plan);
    if (st != NEAT_OK) return st;
    /* a, b, [bias], c, and alpha where the plan takes it at run time (oneDNN 3) */
    void *data[5] = {(void *)a, (void *)b, c, &n.alpha, NULL};
    if (n.has_bias) {
        data[2] = (void *)bias;
        data[3] = c;
        data[4] = &n.alpha;
    }
    st = cpu_prim_run(dev, cb, fn, plan, data);
    if (st != NEAT_OK || !relu_after) return st;
    int64_t count = n.batch * n.m * n.n;
    if (n.c_dt == NEAT_F32)
        cpu_act_apply(nthreads, NEAT_ACT_RELU, c, c, count);
    else
        cpu_relu_half(nthreads, n.c_dt, c, count);
    return NEAT_OK;
}

/* neat_matmul and neat_matmul_batched: c[i] = alpha op(a[i]) op(b[i]) + beta c[i]. */
neat_status cpu_matmul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const char *fn = op->fn;
    cpu_gemm_desc g = {
        .batch = op->u.matmul.batch, /* 1 for neat_matmul */
        .m = op->u.matmul.m,
        .n = op->u.matmul.n,
        .k = op->u.matmul.k,
        .trans_a = op->u.matmul.trans_a,
        .trans_b = op->u.matmul.trans_b,
        .alpha = op->u.matmul.alpha,
        .beta = op->u.matmul.beta,
        .has_bias = 0,
        .act = NEAT_ACT_NONE,
        .ab_dt = op->u.matmul.a->dtype, /* bf16 only on cpu_device.bf16_gemm (half.c) */
        .c_dt = op->u.matmul.c->dtype,
    };
    return cpu_gemm(dev, cb, fn, &g, op->u.matmul.a->data, op->u.matmul.b->data, NULL,
                    op->u.matmul.c->data);
}
