/*
 * conv.c — 2-D convolution forward on oneDNN, and the descriptors conv_backward.c shares.
 *
 *   y[n,k,p,q] = act(b[k] + sum_{c,i,j} x[n, g*C/G + c, p*sh - ph + i*dh, q*sw - pw + j*dw]
 *                                       * w[k, c, i, j])
 *   x [N,C,H,W], w [K,C/G,kh,kw] (5-D goihw [G,K/G,C/G,kh,kw] for oneDNN when G > 1),
 *   b [K] or NULL, y [N,K,P,Q]; k in group g = k / (K/G). oneDNN's dilation counts the
 *   gaps: d - 1. Padding right/bottom equals left/top: oneDNN derives P with the same floor.
 *
 * Layout choice: the primitive is created with format_tag any for x, w and y, and the
 * plain NCHW tensors go through cached reorders when oneDNN picks its blocked layouts
 * (nChw16c activations, OIhw16i16o weights on AVX-512). Measured on the 2-core AVX-512
 * development machine for conv2d_256f (N=32, C=64, 56x56, K=256, 3x3, pad 1): forward
 * 326 ms with the blocked JIT kernel and its reorders against 528 ms when the primitive is
 * forced onto NCHW (oneDNN's im2col + GEMM path); backward (dx, dw, db) 552 ms against
 * 1504 ms. Where oneDNN keeps a plain layout itself (a first layer with C = 1 or 3 reads
 * NCHW directly) no reorder is made. Bias and activation are post-ops of the primitive.
 * 3x3 stride-1 convolutions with one input channel per group (C = 1, depthwise) with relu
 * or no activation do not go to oneDNN: conv_direct.c's loop writes NCHW itself, where
 * oneDNN's kernel wrote nChw16c and the reorder back cost more than the convolution.
 * Algorithm: direct (never Winograd, whose transforms change float32 results).
 * NHWC (g->nhwc): the user's memory descriptors say nhwc and ohwi (gohwi); the primitive
 * still picks its own layout (on AVX-512 the same blocked one, with reorders from NHWC), and
 * conv_direct.c's NCHW loops are not used.
 */
#include "dnnl_util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

dnnl_status_t cpu_conv_mds_create(const nm_conv_geom *g, int any, neat_dtype in, neat_dtype out,
                                  cpu_conv_mds *m) {
    dnnl_dims_t x_dims = {g->n, g->c, g->h, g->w}, y_dims = {g->n, g->k, g->p, g->q};
    dnnl_dims_t b_dims = {g->k};
    dnnl_dims_t w_dims = {g->k, g->c, g->kh, g->kw};
    int w_nd = 4;
    /* oneDNN's dims are logical (NCHW order) whatever the layout; the tag says the order */
    dnnl_format_tag_t act_tag = any ? dnnl_format_tag_any : g->nhwc ? dnnl_nhwc : dnnl_nchw;
    dnnl_format_tag_t w_tag = any ? dnnl_format_tag_any : g->nhwc ? dnnl_ohwi : dnnl_oihw;
    if (g->groups > 1) {
        dnnl_dims_t gw = {g->groups, g->k / g->groups, g->c / g->groups, g->kh, g->kw};
        memcpy(w_dims, gw, sizeof gw);
        w_nd = 5;
        w_tag = any ? dnnl_format_tag_any : g->nhwc ? dnnl_gohwi : dnnl_goihw;
    }
    memset(m, 0, sizeof *m);
    dnnl_data_type_t ti = cpu_dnnl_type(in), to = cpu_dnnl_type(out);
    dnnl_status_t s = dnnl_memory_desc_create_with_tag(&m->src, 4, x_dims, ti, act_tag);
    if (s == dnnl_success) s = dnnl_memory_desc_create_with_tag(&m->wei, w_nd, w_dims, ti, w_tag);
    if (s == dnnl_success) s = dnnl_memory_desc_create_with_tag(&m->bias, 1, b_dims, ti, dnnl_a);
    if (s == dnnl_success) s = dnnl_memory_desc_create_with_tag(&m->dst, 4, y_dims, to, act_tag);
    if (s != dnnl_success) cpu_conv_mds_destroy(m);
    return s;
}

void cpu_conv_mds_destroy(cpu_conv_mds *m) {
    cpu_md mds[4] = {m->src, m->wei, m->bias, m->dst};
    for (int i = 0; i < 4; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
    memset(m, 0, sizeof *m);
}

/* A stride or dilation that cannot change the result, made small: oneDNN keeps them in
 * int. A kernel of 1 reads no dilated tap; one output position takes no step, so any stride
 * past the padded input's room (padded - extent + 1, >= 1 when there is an output) gives
 * the same single position. What stays is at most the padded input's size. */
static int64_t conv_stride(int64_t in, int64_t pad, int64_t k, int64_t dil, int64_t out,
                           int64_t stride) {
    int64_t room = in + 2 * pad - (dil * (k - 1) + 1) + 1;
    return out == 1 && stride > room ? room : stride;
}

void cpu_conv_params(const nm_conv_geom *g, dnnl_dims_t strides, dnnl_dims_t dilates,
                     dnnl_dims_t pad_l, dnnl_dims_t pad_r) {
    strides[0] = conv_stride(g->h, g->ph, g->kh, g->dh, g->p, g->sh);
    strides[1] = conv_stride(g->w, g->pw, g->kw, g->dw, g->q, g->sw);
    dilates[0] = g->kh == 1 ? 0 : g->dh - 1;
    dilates[1] = g->kw == 1 ? 0 : g->dw - 1;
    pad_l[0] = pad_r[0] = g->ph;
    pad_l[1] = pad_r[1] = g->pw;
}

/* Record time (cpu_op_check): a convolution that reaches oneDNN (an output and a non-empty
 * reduction; the backward with dx or dw to compute) must fit oneDNN's int sizes, as
 * cpu_conv_params passes them; refused now rather than failing when the buffer runs. */
neat_status cpu_conv_check(const nm_op *op) {
    const nm_conv_geom *g;
    if (op->kind == NM_OP_CONV2D_FORWARD) {
        g = &op->u.conv2d_forward.g;
    } else if (op->kind == NM_OP_CONV2D_BACKWARD) {
        const nm_conv2d_backward_args *u = &op->u.conv2d_backward;
        if (!(u->dx && u->dx->numel > 0) && !u->dw) return NEAT_OK;
        g = &u->g;
    } else {
        return NEAT_OK;
    }
    if (!g->n || !g->k || !g->p || !g->q || !g->c || !g->h || !g->w) return NEAT_OK;
    const struct {
        const char *name;
        int64_t size;
    } dims[] = {{"N", g->n},
                {"C", g->c},
                {"K (filters)", g->k},
                {"output height", g->p},
                {"output width", g->q},
                {"groups", g->groups},
                {"H + 2 pad_h", g->h + 2 * g->ph}, /* bounds kernel, dilation, stride too */
                {"W + 2 pad_w", g->w + 2 * g->pw}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].size > INT_MAX)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: %s = %lld exceeds oneDNN's int range (the cpu backend takes "
                            "sizes up to %d)",
                            op->fn, dims[i].name, (long long)dims[i].size, INT_MAX);
    return NEAT_OK;
}

neat_status cpu_conv_fwd_pd(cpu_dnnl *d, const char *fn, const nm_conv_geom *g, int has_bias,
                            neat_activation act, neat_dtype in, neat_dtype out,
                            dnnl_primitive_desc_t *pd) {
    neat_status st = NEAT_OK;
    cpu_conv_mds any = {0};
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    *pd = NULL;
    DNNL_TRY_AS(cpu_conv_mds_create(g, 1, in, out, &any), "dnnl_memory_desc_create_with_tag");
    cpu_conv_params(g, strides, dilates, pad_l, pad_r);
    st = cpu_dnnl_attr(fn, &attr);
    if (st != NEAT_OK) goto fail;
    dnnl_alg_kind_t alg;
    if (cpu_dnnl_act_alg(act, &alg)) {
        DNNL_TRY(dnnl_post_ops_create(&ops));
        DNNL_TRY(dnnl_post_ops_append_eltwise(ops, alg, 0.0f, 0.0f));
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, ops));
    }
    dnnl_status_t s = dnnl_convolution_forward_primitive_desc_create(
        pd, d->engine, dnnl_forward_training, dnnl_convolution_direct, any.src, any.wei,
        has_bias ? any.bias : NULL, any.dst, strides, dilates, pad_l, pad_r, attr);
    if (s == dnnl_unimplemented && in != NEAT_F32) { /* half.c then takes the copies */
        st = nm_error(NEAT_ERR_UNSUPPORTED, "%s: oneDNN has no bf16 convolution for this case", fn);
        goto fail;
    }
    DNNL_TRY_AS(s, "dnnl_convolution_forward_primitive_desc_create");
fail:
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    cpu_conv_mds_destroy(&any);
    return st;
}

/* ---- forward ------------------------------------------------------------------------------- */

typedef struct conv_fwd_plan {
    cpu_prim conv; /* SRC, WEIGHTS, [BIAS], DST */
    cpu_staged src, wei, dst;
    int has_bias;
} conv_fwd_plan;

typedef struct conv_fwd_ctx {
    const char *fn;
    const nm_conv_geom *g;
    int has_bias;
    neat_activation act;
    neat_dtype in, out;
} conv_fwd_ctx;

static void conv_fwd_free(void *plan) {
    conv_fwd_plan *p = plan;
    cpu_prim_destroy(&p->conv);
    cpu_staged_destroy(&p->src);
    cpu_staged_destroy(&p->wei);
    cpu_staged_destroy(&p->dst);
    free(p);
}

static neat_status conv_fwd_build(cpu_dnnl *d, const void *ctx_, void **out) {
    const conv_fwd_ctx *ctx = ctx_;
    const char *fn = ctx->fn;
    neat_status st = NEAT_OK;
    dnnl_primitive_desc_t pd = NULL;
    cpu_conv_mds user = {0};
    conv_fwd_plan *p = calloc(1, sizeof *p);
    if (!p) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: no memory for a plan", fn);
    p->has_bias = ctx->has_bias;
    DNNL_TRY_AS(cpu_conv_mds_create(ctx->g, 0, ctx->in, ctx->out, &user),
                "dnnl_memory_desc_create_with_tag");
    st = cpu_conv_fwd_pd(d, fn, ctx->g, ctx->has_bias, ctx->act, ctx->in, ctx->out, &pd);
    if (st != NEAT_OK) goto fail;
    const int with_bias[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    const int no_bias[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    st = ctx->has_bias ? cpu_prim_init(d, fn, pd, with_bias, 4, &p->conv)
                       : cpu_prim_init(d, fn, pd, no_bias, 3, &p->conv);
    if (st != NEAT_OK) goto fail;
    st = cpu_staged_init(d, fn, user.src, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), 0,
                         0, &p->src);
    if (st != NEAT_OK) goto fail;
    st = cpu_staged_init(d, fn, user.wei,
                         dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 0, 0, &p->wei);
    if (st != NEAT_OK) goto fail;
    st = cpu_staged_init(d, fn, user.dst, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), 1,
                         0, &p->dst);
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    cpu_conv_mds_destroy(&user);
    if (st != NEAT_OK) {
        conv_fwd_free(p);
        return st;
    }
    *out = p;
    return NEAT_OK;
}

/* y = act(b) in every position: an empty reduction (C/G * kh * kw == 0) or an input of
 * zero height or width, where every window holds only padding. */
static void conv_bias_only(int nthreads, const nm_conv_geom *g, const float *b, neat_activation act,
                           float *y) {
    int64_t planes = g->n * g->k, plane = g->p * g->q;
    if (g->nhwc) { /* N P Q rows of K */
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t i = 0; i < g->n * plane; i++)
            for (int64_t k = 0; k < g->k; k++) y[i * g->k + k] = b ? b[k] : 0.0f;
    } else {
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t i = 0; i < planes; i++) {
            float v = b ? b[i % g->k] : 0.0f;
            for (int64_t s = 0; s < plane; s++) y[i * plane + s] = v;
        }
    }
    if (act != NEAT_ACT_NONE) cpu_act_apply(nthreads, act, y, y, planes * plane);
}

/* The float32 convolutions that do not go to oneDNN: no output, bias only, or conv_direct.c's
 * loops (one input channel per group, or several on small planes). 1 when it ran one (its
 * status in *st), 0 when oneDNN runs it. */
static int conv_forward_own(nm_device *dev, nm_cmdbuf *cb, const nm_conv_geom *g, const float *x,
                            const float *w, const float *b, neat_activation act, float *y,
                            neat_status *st) {
    *st = NEAT_OK;
    if (g->n * g->k * g->p * g->q == 0) return 1;
    int nthreads = cpu_dev(dev)->nthreads;
    if (g->c / g->groups * g->kh * g->kw * g->h * g->w == 0) {
        conv_bias_only(nthreads, g, b, act, y);
        return 1;
    }
    int one = cpu_conv_direct_ok(g, act);
    if (!one && !(cpu_dev(dev)->conv_direct && cpu_conv_direct_multi_ok(g, act))) return 0;
    size_t bytes =
        one ? cpu_conv_direct_scratch(g, nthreads) : cpu_conv_direct_multi_scratch(g, nthreads);
    void *scratch = NULL;
    if ((*st = nm_scratch_alloc(cb, bytes, &scratch)) != NEAT_OK) return 1;
    (one ? cpu_conv_direct_forward : cpu_conv_direct_multi_forward)(nthreads, g, x, w, b, act, y,
                                                                    scratch);
    return 1;
}

neat_status cpu_conv_forward_run(nm_device *dev, nm_cmdbuf *cb, const char *fn,
                                 const nm_conv_geom *g, neat_dtype in, neat_dtype out,
                                 const void *x, const void *w, const void *b, neat_activation act,
                                 void *y) {
    neat_status st;
    if (in == NEAT_F32 && conv_forward_own(dev, cb, g, x, w, b, act, y, &st)) return st;
    /* A relu oneDNN's post-op could turn a NaN into 0 in (cpu_fused_relu_exact): the
     * convolution without it, then a relu that keeps NaN. */
    int nthreads = cpu_dev(dev)->nthreads, relu_after = 0;
    int64_t taps = g->c / g->groups * g->kh * g->kw;
    if (act == NEAT_ACT_RELU &&
        !cpu_fused_relu_exact(nthreads, taps, 1.0f, in, x, g->n * g->c * g->h * g->w, w,
                              g->k * taps, b, g->k)) {
        act = NEAT_ACT_NONE;
        relu_after = 1;
    }
    int64_t key[22] = {1,         g->n,      g->c,         g->h,    g->w,  g->k,  g->p,  g->q,
                       g->kh,     g->kw,     g->sh,        g->sw,   g->ph, g->pw, g->dh, g->dw,
                       g->groups, b != NULL, (int64_t)act, g->nhwc, in,    out};
    conv_fwd_ctx ctx = {fn, g, b != NULL, act, in, out};
    void *plan_ = NULL;
    st = cpu_dnnl_plan(dev, key, sizeof key, conv_fwd_build, conv_fwd_free, &ctx, &plan_);
    if (st != NEAT_OK) return st;
    conv_fwd_plan *p = plan_;
    void *xs, *ws, *ys;
    if ((st = cpu_staged_in(dev, cb, fn, &p->src, x, &xs)) != NEAT_OK) return st;
    if ((st = cpu_staged_in(dev, cb, fn, &p->wei, w, &ws)) != NEAT_OK) return st;
    if ((st = cpu_staged_out(cb, &p->dst, y, &ys)) != NEAT_OK) return st;
    void *with_bias[4] = {xs, ws, (void *)b, ys}, *no_bias[3] = {xs, ws, ys};
    st = cpu_prim_run(dev, cb, fn, &p->conv, p->has_bias ? with_bias : no_bias);
    if (st != NEAT_OK) return st;
    st = cpu_staged_out_finish(dev, cb, fn, &p->dst, ys, y);
    if (st != NEAT_OK || !relu_after) return st;
    int64_t count = g->n * g->k * g->p * g->q;
    if (out == NEAT_F32)
        cpu_act_apply(nthreads, NEAT_ACT_RELU, y, y, count);
    else
        cpu_relu_half(nthreads, out, y, count);
    return NEAT_OK;
}

neat_status cpu_conv2d_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv2d_forward_args *u = &op->u.conv2d_forward;
    return cpu_conv_forward_run(dev, cb, "neat_conv2d_forward", &u->g, u->x->dtype, u->y->dtype,
                                u->x->data, u->w->data, u->b ? u->b->data : NULL, u->act,
                                u->y->data);
}
