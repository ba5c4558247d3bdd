/*
 * conv_backward.c — gradients of y = act(conv2d(x, w) + b) on oneDNN (shapes in conv.c).
 *
 *   dz = dy * act'(.)                      [N,K,P,Q]; dy itself when act is NONE
 *   dx (+)= conv_backward_data(dz, w)      [N,C,H,W]  (a transposed convolution)
 *   dw (+)= conv_backward_weights(x, dz)   [K,C/G,kh,kw]
 *   db (+)= sum of dz over N, P, Q          [K]
 *
 * relu, sigmoid and tanh take act' from the saved output y; GELU recomputes the
 * pre-activation z = conv2d(x, w) + b into scratch with the forward plan. When dw is asked
 * for, db comes out of the same backward-weights primitive (its diff_bias); alone, it is a
 * loop over dz. oneDNN's backward primitives take no post-ops, so accumulate (+=) goes
 * through scratch and a reorder with a sum post-op, the same pass that turns a blocked
 * result back into NCHW (cpu_staged in dnnl_util.h). Layouts are format any, as forward.
 * When both primitives read dz in nChw16c (AVX-512) and act is relu, dz is written in that
 * layout by relu's backward itself (relu_grad_blocked.c), not reordered from NCHW after.
 * dx of 3x3 stride-1 convolutions on small planes is conv_direct.c's loop instead
 * (cpu_conv_direct_dx: NCHW dz, or the nChw16c one the backward-weights primitive reads).
 * NHWC: the user descriptors of conv.c, dz in the user's layout, db as column sums.
 * bf16 (every tensor bf16, act NONE or RELU, dw asked for whenever db is, a non-empty
 * convolution: half.c's bf16_path, on cpu_device.bf16_conv): the same primitives on bf16
 * data, dz = dy or dy where y > 0 (exact in bf16), db fused; products exact and sums float32
 * as in the float32 copies; an accumulating output comes out of the primitive in float32
 * and is added and rounded once by the sum reorder (a bf16 result added would round twice).
 */
#include "dnnl_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct conv_bwd_plan {
    int want_dx, want_dw, fused_db;
    cpu_prim data; /* DIFF_DST, WEIGHTS -> DIFF_SRC */
    cpu_staged d_dz, d_w, d_dx;
    cpu_prim weights; /* SRC, DIFF_DST -> DIFF_WEIGHTS, [DIFF_BIAS] */
    cpu_staged w_x, w_dz, w_dw, w_db;
    int dz_shared;  /* both read dz in the same non-plain layout: reorder once */
    int dz_nchw16c; /* every primitive that reads dz takes it in nChw16c (aBcd16b) */
    size_t dz_nchw16c_bytes;
} conv_bwd_plan;

typedef struct conv_bwd_ctx {
    const char *fn;
    const nm_conv_geom *g;
    int want_dx, want_dw, fused_db, accumulate;
    neat_dtype dt; /* of every tensor: float32, or bf16 on cpu_device.bf16_conv */
} conv_bwd_ctx;

static void conv_bwd_free(void *plan) {
    conv_bwd_plan *p = plan;
    cpu_prim_destroy(&p->data);
    cpu_prim_destroy(&p->weights);
    cpu_staged *staged[] = {&p->d_dz, &p->d_w, &p->d_dx, &p->w_x, &p->w_dz, &p->w_dw, &p->w_db};
    for (size_t i = 0; i < sizeof staged / sizeof *staged; i++) cpu_staged_destroy(staged[i]);
    free(p);
}

static cpu_md_c arg_md(const_dnnl_primitive_desc_t pd, int arg) {
    return dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
}

/* UNSUPPORTED for a bf16 primitive oneDNN does not implement (half.c then takes the float32
 * copies), else 0: the caller reports s itself. */
static neat_status bf16_unimplemented(const char *fn, neat_dtype dt, const char *which,
                                      dnnl_status_t s) {
    if (s != dnnl_unimplemented || dt == NEAT_F32) return NEAT_OK;
    return nm_error(NEAT_ERR_UNSUPPORTED, "%s: oneDNN has no bf16 backward-%s convolution here", fn,
                    which);
}

static neat_status conv_bwd_build(cpu_dnnl *d, const void *ctx_, void **out) {
    const conv_bwd_ctx *ctx = ctx_;
    const char *fn = ctx->fn;
    const nm_conv_geom *g = ctx->g;
    int acc = ctx->accumulate;
    neat_status st = NEAT_OK;
    dnnl_primitive_desc_t fwd_pd = NULL, data_pd = NULL, weights_pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    cpu_md blocked = NULL;
    cpu_conv_mds user = {0}, any = {0}, any_out = {0};
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    conv_bwd_plan *p = calloc(1, sizeof *p);
    if (!p) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: no memory for a plan", fn);
    p->want_dx = ctx->want_dx;
    p->want_dw = ctx->want_dw;
    p->fused_db = ctx->fused_db;

    /* dx, dw, db as the primitives write them (any_out): float32 when added to bf16 tensors */
    neat_dtype dt = ctx->dt, out_dt = acc ? NEAT_F32 : dt;
    DNNL_TRY_AS(cpu_conv_mds_create(g, 0, dt, dt, &user), "dnnl_memory_desc_create_with_tag");
    DNNL_TRY_AS(cpu_conv_mds_create(g, 1, dt, dt, &any), "dnnl_memory_desc_create_with_tag");
    DNNL_TRY_AS(cpu_conv_mds_create(g, 1, out_dt, out_dt, &any_out),
                "dnnl_memory_desc_create_with_tag");
    cpu_conv_params(g, strides, dilates, pad_l, pad_r);
    st = cpu_conv_fwd_pd(d, fn, g, ctx->fused_db, NEAT_ACT_NONE, dt, dt, &fwd_pd);
    if (st != NEAT_OK) goto fail;
    st = cpu_dnnl_attr(fn, &attr);
    if (st != NEAT_OK) goto fail;

    if (p->want_dx) {
        dnnl_status_t s = dnnl_convolution_backward_data_primitive_desc_create(
            &data_pd, d->engine, dnnl_convolution_direct, any_out.src, any.wei, any.dst, strides,
            dilates, pad_l, pad_r, fwd_pd, attr);
        if ((st = bf16_unimplemented(fn, dt, "data", s)) != NEAT_OK) goto fail;
        DNNL_TRY_AS(s, "dnnl_convolution_backward_data_primitive_desc_create");
        const int args[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
        if ((st = cpu_prim_init(d, fn, data_pd, args, 3, &p->data)) != NEAT_OK) goto fail;
        st = cpu_staged_init(d, fn, user.dst, arg_md(data_pd, DNNL_ARG_DIFF_DST), 0, 0, &p->d_dz);
        if (st != NEAT_OK) goto fail;
        st = cpu_staged_init(d, fn, user.wei, arg_md(data_pd, DNNL_ARG_WEIGHTS), 0, 0, &p->d_w);
        if (st != NEAT_OK) goto fail;
        st = cpu_staged_init(d, fn, user.src, arg_md(data_pd, DNNL_ARG_DIFF_SRC), 1, acc, &p->d_dx);
        if (st != NEAT_OK) goto fail;
    }
    if (p->want_dw) {
        dnnl_status_t s = dnnl_convolution_backward_weights_primitive_desc_create(
            &weights_pd, d->engine, dnnl_convolution_direct, any.src, any_out.wei,
            p->fused_db ? any_out.bias : NULL, any.dst, strides, dilates, pad_l, pad_r, fwd_pd,
            attr);
        if ((st = bf16_unimplemented(fn, dt, "weights", s)) != NEAT_OK) goto fail;
        DNNL_TRY_AS(s, "dnnl_convolution_backward_weights_primitive_desc_create");
        const int args[4] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS,
                             DNNL_ARG_DIFF_BIAS};
        st = cpu_prim_init(d, fn, weights_pd, args, p->fused_db ? 4 : 3, &p->weights);
        if (st != NEAT_OK) goto fail;
        st = cpu_staged_init(d, fn, user.src, arg_md(weights_pd, DNNL_ARG_SRC), 0, 0, &p->w_x);
        if (st != NEAT_OK) goto fail;
        st =
            cpu_staged_init(d, fn, user.dst, arg_md(weights_pd, DNNL_ARG_DIFF_DST), 0, 0, &p->w_dz);
        if (st != NEAT_OK) goto fail;
        st = cpu_staged_init(d, fn, user.wei, arg_md(weights_pd, DNNL_ARG_DIFF_WEIGHTS), 1, acc,
                             &p->w_dw);
        if (st != NEAT_OK) goto fail;
        if (p->fused_db) {
            st = cpu_staged_init(d, fn, user.bias, arg_md(weights_pd, DNNL_ARG_DIFF_BIAS), 1, acc,
                                 &p->w_db);
            if (st != NEAT_OK) goto fail;
        }
        p->dz_shared = p->want_dx && p->d_dz.staged && p->w_dz.staged &&
                       dnnl_memory_desc_equal(arg_md(data_pd, DNNL_ARG_DIFF_DST),
                                              arg_md(weights_pd, DNNL_ARG_DIFF_DST));
    }
    if (g->groups == 1 && !g->nhwc && dt == NEAT_F32) { /* relu_grad_blocked.c: float32 NCHW */
        dnnl_dims_t y_dims = {g->n, g->k, g->p, g->q};
        DNNL_TRY(dnnl_memory_desc_create_with_tag(&blocked, 4, y_dims, dnnl_f32, dnnl_aBcd16b));
        p->dz_nchw16c =
            (!p->want_dx || dnnl_memory_desc_equal(arg_md(data_pd, DNNL_ARG_DIFF_DST), blocked)) &&
            (!p->want_dw || dnnl_memory_desc_equal(arg_md(weights_pd, DNNL_ARG_DIFF_DST), blocked));
        p->dz_nchw16c_bytes = dnnl_memory_desc_get_size(blocked);
    }
fail:
    if (blocked) dnnl_memory_desc_destroy(blocked);
    if (weights_pd) dnnl_primitive_desc_destroy(weights_pd);
    if (data_pd) dnnl_primitive_desc_destroy(data_pd);
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    cpu_conv_mds_destroy(&user);
    cpu_conv_mds_destroy(&any);
    cpu_conv_mds_destroy(&any_out);
    if (st != NEAT_OK) {
        conv_bwd_free(p);
        return st;
    }
    *out = p;
    return NEAT_OK;
}

/* db (+)= the sums of dz over N, P, Q: dz seen as [N, K, P*Q], or [N*P*Q, K, 1] in NHWC. */
static void bias_grad(int nthreads, const nm_conv_geom *g, const float *dz, float *db, int acc) {
    int64_t pq = g->p * g->q;
    cpu_bias_grad(nthreads, dz, g->nhwc ? g->n * pq : g->n, g->k, g->nhwc ? 1 : pq, db, acc);
}

static void zero_unless_accumulate(nm_tensor *t, int accumulate) {
    if (t && !accumulate && t->numel > 0) memset(t->data, 0, (size_t)t->numel * sizeof(float));
}

/* dz = dy * act'(.) into scratch, or dy itself for NONE (bf16: NONE or RELU). */
static neat_status conv_act_grad(nm_device *dev, nm_cmdbuf *cb, const char *fn, const nm_op *op,
                                 const float **dz) {
    const nm_conv_geom *g = &op->u.conv2d_backward.g;
    neat_activation act = op->u.conv2d_backward.act;
    int64_t count = g->n * g->k * g->p * g->q;
    *dz = op->u.conv2d_backward.dy->data;
    if (act == NEAT_ACT_NONE || count == 0) return NEAT_OK;
    int nthreads = cpu_dev(dev)->nthreads;
    size_t bytes = (size_t)count * neat_dtype_size(op->u.conv2d_backward.dy->dtype);
    void *grad = NULL;
    neat_status st = nm_scratch_alloc(cb, bytes, &grad);
    if (st != NEAT_OK) return st;
    if (op->u.conv2d_backward.dy->dtype == NEAT_BF16) {
        cpu_relu_grad_bf16(nthreads, cpu_half_data(op->u.conv2d_backward.dy),
                           cpu_half_data(op->u.conv2d_backward.y), grad, count);
    } else if (act == NEAT_ACT_GELU) {
        const nm_tensor *b = op->u.conv2d_backward.b;
        void *z = NULL;
        if ((st = nm_scratch_alloc(cb, bytes, &z)) != NEAT_OK) return st;
        st = cpu_conv_forward_run(dev, cb, fn, g, NEAT_F32, NEAT_F32, op->u.conv2d_backward.x->data,
                                  op->u.conv2d_backward.w->data, b ? b->data : NULL, NEAT_ACT_NONE,
                                  z);
        if (st != NEAT_OK) return st;
        cpu_act_grad(nthreads, act, z, NULL, *dz, grad, count);
    } else {
        cpu_act_grad(nthreads, act, NULL, op->u.conv2d_backward.y->data, *dz, grad, count);
    }
    *dz = grad;
    return NEAT_OK;
}

neat_status cpu_conv2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const char *fn = "neat_conv2d_backward";
    const nm_conv_geom *g = &op->u.conv2d_backward.g;
    nm_tensor *dx = op->u.conv2d_backward.dx, *dw = op->u.conv2d_backward.dw,
              *db = op->u.conv2d_backward.db;
    int acc = op->u.conv2d_backward.accumulate;
    int nthreads = cpu_dev(dev)->nthreads;
    neat_dtype dt = op->u.conv2d_backward.x->dtype; /* bf16: half.c's bf16_path */
    neat_status st;

    if (g->n * g->k * g->p * g->q == 0) { /* no output: every gradient is an empty sum */
        zero_unless_accumulate(dx, acc);
        zero_unless_accumulate(dw, acc);
        zero_unless_accumulate(db, acc);
        return NEAT_OK;
    }
    const float *dz = NULL;
    if (g->c / g->groups * g->kh * g->kw * g->h * g->w == 0) {
        /* empty reduction or an input made only of padding: y = act(b), dx and dw are 0 */
        if ((st = conv_act_grad(dev, cb, fn, op, &dz)) != NEAT_OK) return st;
        zero_unless_accumulate(dx, acc);
        zero_unless_accumulate(dw, acc);
        if (db) bias_grad(nthreads, g, dz, db->data, acc);
        return NEAT_OK;
    }
    if (!dx && !dw && !db) return NEAT_OK;

    int want_dx = dx && dx->numel > 0, want_dw = dw != NULL, fused_db = dw && db;
    /* dx by conv_direct.c's loop where it takes the shape (then no oneDNN primitive for it) */
    int direct_dx =
        want_dx && dt == NEAT_F32 && cpu_dev(dev)->conv_direct && cpu_conv_direct_dx_ok(g);
    int dnnl_dx = want_dx && !direct_dx;
    void *plan_ = NULL;
    if (dnnl_dx || want_dw) {
        int64_t key[23] = {2,         g->n,    g->c,    g->h,     g->w,  g->k,    g->p,  g->q,
                           g->kh,     g->kw,   g->sh,   g->sw,    g->ph, g->pw,   g->dh, g->dw,
                           g->groups, dnnl_dx, want_dw, fused_db, acc,   g->nhwc, dt};
        conv_bwd_ctx ctx = {fn, g, dnnl_dx, want_dw, fused_db, acc, dt};
        st = cpu_dnnl_plan(dev, key, sizeof key, conv_bwd_build, conv_bwd_free, &ctx, &plan_);
        if (st != NEAT_OK) return st;
    }
    conv_bwd_plan *p = plan_;
    void *dz_data = NULL; /* dz in the layout of the primitives that read it */
    int blocked_relu = p && p->dz_nchw16c && op->u.conv2d_backward.act == NEAT_ACT_RELU &&
                       !(db && !fused_db); /* the bias loop alone reads NCHW dz */
    if (blocked_relu) {
        if ((st = nm_scratch_alloc(cb, p->dz_nchw16c_bytes, &dz_data)) != NEAT_OK) return st;
        cpu_relu_grad_nchw16c(nthreads, op->u.conv2d_backward.dy->data,
                              op->u.conv2d_backward.y->data, g->n, g->k, g->p * g->q, dz_data);
    } else if ((st = conv_act_grad(dev, cb, fn, op, &dz)) != NEAT_OK) {
        return st;
    }
    if (direct_dx) {
        void *scratch = NULL;
        if ((st = nm_scratch_alloc(cb, cpu_conv_direct_dx_scratch(g, nthreads), &scratch)) !=
            NEAT_OK)
            return st;
        cpu_conv_direct_dx(nthreads, g, blocked_relu ? dz_data : dz, blocked_relu,
                           op->u.conv2d_backward.w->data, acc, dx->data, scratch);
    } else if (want_dx) {
        void *ws, *dxs;
        if (!blocked_relu && (st = cpu_staged_in(dev, cb, fn, &p->d_dz, dz, &dz_data)) != NEAT_OK)
            return st;
        if ((st = cpu_staged_in(dev, cb, fn, &p->d_w, op->u.conv2d_backward.w->data, &ws)) !=
            NEAT_OK)
            return st;
        if ((st = cpu_staged_out(cb, &p->d_dx, dx->data, &dxs)) != NEAT_OK) return st;
        void *data[3] = {dz_data, ws, dxs};
        if ((st = cpu_prim_run(dev, cb, fn, &p->data, data)) != NEAT_OK) return st;
        if ((st = cpu_staged_out_finish(dev, cb, fn, &p->d_dx, dxs, dx->data)) != NEAT_OK)
            return st;
    }
    if (want_dw) {
        void *xs, *dzs, *dws, *dbs = NULL;
        if ((st = cpu_staged_in(dev, cb, fn, &p->w_x, op->u.conv2d_backward.x->data, &xs)) !=
            NEAT_OK)
            return st;
        if (blocked_relu || p->dz_shared)
            dzs = dz_data;
        else if ((st = cpu_staged_in(dev, cb, fn, &p->w_dz, dz, &dzs)) != NEAT_OK)
            return st;
        if ((st = cpu_staged_out(cb, &p->w_dw, dw->data, &dws)) != NEAT_OK) return st;
        if (fused_db && (st = cpu_staged_out(cb, &p->w_db, db->data, &dbs)) != NEAT_OK) return st;
        void *data[4] = {xs, dzs, dws, dbs};
        if ((st = cpu_prim_run(dev, cb, fn, &p->weights, data)) != NEAT_OK) return st;
        if ((st = cpu_staged_out_finish(dev, cb, fn, &p->w_dw, dws, dw->data)) != NEAT_OK)
            return st;
        if (fused_db && (st = cpu_staged_out_finish(dev, cb, fn, &p->w_db, dbs, db->data)))
            return st;
    }
    if (db && !fused_db) bias_grad(nthreads, g, dz, db->data, acc);
    return NEAT_OK;
}
