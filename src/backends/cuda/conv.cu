/*
 * conv.cu — conv2d forward and backward on cuDNN's convolution API (NCHW float32, groups,
 * dilation; a cross-correlation). Plans and the choice of algorithms: conv_plan.cu.
 *
 * forward:  y = conv(x, w), then y = act(y + b[k]) as one elementwise pass when needed; with a
 *           bias and relu or no activation, cuDNN's fused call instead where it runs (below).
 * backward: dz = dy act'(y) (gelu: act'(z) with z recomputed by the forward), then
 *           dx = conv_bwd_data(w, dz), dw = conv_bwd_filter(x, dz) with beta = accumulate,
 *           db[k] = sum over n, p, q of dz (reduce.cu: over p, q then over n; deterministic).
 * 3x3 stride-1 layers of 1 to 4 input channels take neither: conv_small.cu does the forward
 * (bias and activation included) and the backward without dx (act', dw and db at once).
 * NHWC (g.nhwc): the same calls on descriptors in CUDNN_TENSOR_NHWC (conv_plan.cu), the
 * bias of channel i % K (conv_inner 1) and db as the column sums of dz [NPQ, K];
 * conv_small.cu and conv_gemm.cu's direct backward filter take both layouts, its im2col
 * backward filter NCHW only.
 * Scratch slots: 0 dz (conv_small.cu: its partial sums), 1 workspace, 2 the [N, K] sums, 3-4
 * and 5-6 the two reductions (half tensors: 2-6 through cuda_half_channel_sum).
 *
 * bf16/f16 (the plan's key holds the dtype): the descriptors in CUDNN_DATA_BFLOAT16/HALF
 * with a CUDNN_DATA_FLOAT convolution (exact products, float32 sums, one rounding), any
 * math type cuDNN ranks (tensor cores). cuDNN writes a half y from half inputs only, and
 * cudnnConvolutionForward rounds before any bias: so natively y = conv(x, w) (relu after
 * the rounding is the same), y = act(conv(x, w) + b) for relu or none through the fused
 * call, and the backward with dz exact in half (no activation, relu); half.cu runs the
 * other cases on float32 copies. cuDNN's half kernels for tensor cores are NHWC: an NCHW
 * half convolution pays transposes inside cuDNN (conv2d_256f_bf16: docs/BENCHMARKS.md), which
 * the NHWC layout of the API avoids.
 *
 * Fused forward (issue 13): y = act(alpha1 conv(x, w) + alpha2 z + b) by
 * cudnnConvolutionBiasActivationForward, with alpha1 = 1, alpha2 = 0 and z = y (cuDNN does not read
 * z when alpha2 is 0, as it does not read y when beta is 0 elsewhere; the tests' NaN-poisoned
 * outputs check it), b a [1, K, 1, 1] tensor in y's type (cuDNN's configurations for float, half
 * and bfloat16), and cuDNN's RELU or IDENTITY activation (the only two it fuses; sigmoid, tanh and
 * gelu keep the elementwise pass). The call runs only on IMPLICIT_PRECOMP_GEMM here: the one
 * algorithm cuDNN takes IDENTITY on, a sign that it is the one whose kernel applies bias and
 * activation, where the others would add passes of cuDNN's own, no faster than the one pass here
 * and, for half tensors, after the rounding. So float32 fuses where that is the algorithm chosen
 * anyway (a faster one is not traded for it), and half tensors with a bias always take it (an
 * algorithm slot of its own, chosen from the same ranking), so that the bias meets the float32
 * accumulator before the one rounding; the half rows of test_dtype check that bound. Whether cuDNN
 * accepts the fused call for a plan is learned at its first use and kept in the plan: a refusal (a
 * NOT_SUPPORTED or BAD_PARAM status, which cuDNN returns before it enqueues anything) runs the
 * unfused path instead (float32: the convolution and the pass; half: the float32 copies of
 * half.cu). NEATML_CONV_FUSE (read at a device's first convolution): "0" never fuses (the path
 * before issue 13, for comparisons); "2" makes a refusal the op's error instead of a fallback (to
 * check on a GPU that the fused call runs); "3" as "2", and float32 with a bias takes
 * IMPLICIT_PRECOMP_GEMM whatever cuDNN's choice (so the tests reach the float32 fused call on
 * every such row, and the benchmark can time it against the choice); anything else fuses and
 * falls back.
 */
#include "conv.cuh"

/* y seen as [outer, K, inner]: inner the elements between consecutive channels (a plane in
 * NCHW, 1 in NHWC; cuda_bias_act and cuda_half_epilogue add b[(i / inner) % K]), outer the
 * rest (N, or N*P*Q in NHWC). */
static int64_t conv_inner(const nm_conv_geom &g) { return g.nhwc ? 1 : g.p * g.q; }
static int64_t conv_outer(const nm_conv_geom &g) { return g.nhwc ? g.n * g.p * g.q : g.n; }

static neat_status run_forward(cuda_device *d, conv_plan *p, const conv_algo *a, void *ws,
                               const void *x, const void *w, void *y, const char *what) {
    const float one = 1.0f, zero = 0.0f;
    if (a->engine && conv_engine_aligned(x, w, y))
        return cudnn_check(conv_engine_run(d, a->engine, x, w, y, ws), what, "cudnnBackendExecute");
    neat_status st = cudnn_check(cudnnSetConvolutionMathType(p->cd, a->math), what,
                                 "cudnnSetConvolutionMathType");
    if (st) return st;
    return cudnn_check(cudnnConvolutionForward(d->dnn, &one, p->xd, x, p->wd, w, p->cd,
                                               (cudnnConvolutionFwdAlgo_t)a->algo, ws, a->ws, &zero,
                                               p->yd, y),
                       what, "cudnnConvolutionForward");
}

/* y = act(conv(x, w) + b) in one cuDNN call (act NONE or RELU) with algorithm a. *done is 1
 * when it ran, 0 when cuDNN refused it, now or at an earlier use of the plan: the caller then
 * runs the unfused path. A refusal is learned only at the plan's first fused call; with
 * NEATML_CONV_FUSE=2 or 3 it is the op's error. */
static neat_status run_fused(cuda_device *d, conv_plan *p, const conv_algo *a, void *ws,
                             neat_activation act, const void *x, const void *w, const void *b,
                             void *y, int *done, const char *what) {
    int i = act == NEAT_ACT_RELU;
    *done = 0;
    if (p->fused[i] == FUSE_REFUSED) return NEAT_OK;
    const float one = 1.0f, zero = 0.0f;
    neat_status st = cudnn_check(cudnnSetConvolutionMathType(p->cd, a->math), what,
                                 "cudnnSetConvolutionMathType");
    if (st) return st;
    cudnnStatus_t s = cudnnConvolutionBiasActivationForward(
        d->dnn, &one, p->xd, x, p->wd, w, p->cd, (cudnnConvolutionFwdAlgo_t)a->algo, ws, a->ws,
        &zero, p->yd, y, p->bd, b, p->ad[i], p->yd, y);
    int category = CUDNN_STATUS_CATEGORY(s);
    if (s != CUDNN_STATUS_SUCCESS && p->fused[i] == FUSE_UNTRIED && d->conv->fuse == 1 &&
        (category == CUDNN_STATUS_NOT_SUPPORTED || category == CUDNN_STATUS_BAD_PARAM)) {
        p->fused[i] = FUSE_REFUSED;
        return NEAT_OK;
    }
    st = cudnn_check(s, what, "cudnnConvolutionBiasActivationForward");
    if (st) return st;
    p->fused[i] = FUSE_OK;
    *done = 1;
    return NEAT_OK;
}

/* Half tensors (cuda_native_half: a half y, no activation or relu), rounded once. Without a
 * bias y = conv(x, w) by cuDNN, then relu over the rounded values (relu(round(z)) =
 * round(relu(z))). With one, cuDNN's fused call on IMPLICIT_PRECOMP_GEMM adds it (and applies
 * relu) before the rounding; where that call is off (NEATML_CONV_FUSE=0), has no algorithm
 * or is refused, the float32 copies of half.cu, as before the fused call existed. */
static neat_status conv2d_forward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_forward";
    const auto &u = op->u.conv2d_forward;
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    neat_dtype dt = u.y->dtype;
    int64_t ny = u.y->numel;
    if (ny == 0) return NEAT_OK;
    if (u.x->numel == 0 || u.w->numel == 0) { /* no input channels: y = act(b), or 0 */
        if (!u.b) return cuda_fill_typed(dev, dt, u.y->data, ny, 0.0f, what);
        return cuda_half_epilogue(dev, dt, u.y->data, NULL, 0.0f, dt, u.b->data, ny, conv_inner(g),
                                  g.k, u.act, what);
    }
    neat_status st;
    if ((st = conv_cache_get(d, what))) return st;
    if (d->conv->small && cuda_conv_small_fits(&g)) /* conv_small.cu: one rounding, after b */
        return cuda_conv_small_forward(dev, &g, dt, u.act, u.x->data, u.w->data,
                                       u.b ? u.b->data : NULL, u.y->data, what);
    conv_plan *p;
    const conv_algo *a[1];
    void *ws;
    const conv_inputs in = {u.x->data, u.w->data, NULL};
    if (!u.b) {
        static const int which[] = {CONV_FWD};
        st = conv_prepare(dev, cb, &g, op->math, dt, which, 1, &in, &p, a, &ws, what);
        if (!st) st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, u.y->data, what);
        if (st || u.act == NEAT_ACT_NONE) return st;
        return cuda_half_epilogue(dev, dt, u.y->data, NULL, 1.0f, dt, NULL, ny, 1, 1, u.act, what);
    }
    if (d->conv->fuse == 0) return cuda_run_f32_copies(dev, cb, op);
    static const int which[] = {CONV_FWD_PRECOMP};
    st = conv_prepare(dev, cb, &g, op->math, dt, which, 1, &in, &p, a, &ws, what);
    if (st) return st;
    int done = 0;
    if (a[0]->algo >= 0)
        st = run_fused(d, p, a[0], ws, u.act, u.x->data, u.w->data, u.b->data, u.y->data, &done,
                       what);
    else if (d->conv->fuse >= 2)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: cuDNN offers no IMPLICIT_PRECOMP_GEMM algorithm for the fused "
                        "convolution (NEATML_CONV_FUSE=%d)",
                        what, d->conv->fuse);
    if (st || done) return st;
    return cuda_run_f32_copies(dev, cb, op);
}

/* dx = conv_bwd_data(w, dz) and dw = conv_bwd_filter(x, dz), each with beta (accumulate),
 * for the gradients asked for; their algorithms are a[first], a[first + 1] in that order
 * (after the forward's, for gelu). Any dtype: the plan's descriptors carry it. */
static neat_status backward_data_filter(nm_device *dev, conv_plan *p, const conv_algo *const *a,
                                        int first, void *ws, const nm_conv2d_backward_args &u,
                                        const void *dz, float beta, const char *what) {
    cuda_device *d = cuda_dev(dev);
    const float one = 1.0f;
    neat_status st = NEAT_OK;
    int ai = first;
    if (p && u.dx) { /* an engine's graph has beta 0: an accumulating run takes the legacy call */
        const conv_algo *al = a[ai++];
        if (al->engine && beta == 0.0f && conv_engine_aligned(u.dx->data, u.w->data, dz)) {
            st = cudnn_check(conv_engine_run(d, al->engine, u.dx->data, u.w->data, dz, ws), what,
                             "cudnnBackendExecute");
        } else {
            st = cudnn_check(cudnnSetConvolutionMathType(p->cd, al->math), what,
                             "cudnnSetConvolutionMathType");
            if (!st)
                st = cudnn_check(
                    cudnnConvolutionBackwardData(d->dnn, &one, p->wd, u.w->data, p->yd, dz, p->cd,
                                                 (cudnnConvolutionBwdDataAlgo_t)al->algo, ws,
                                                 al->ws, &beta, p->xd, u.dx->data),
                    what, "cudnnConvolutionBackwardData");
        }
        if (st) return st;
    }
    if (p && u.dw) {
        const conv_algo *al = a[ai++];
        if (al->engine && beta == 0.0f && conv_engine_aligned(u.x->data, u.dw->data, dz))
            return cudnn_check(conv_engine_run(d, al->engine, u.x->data, u.dw->data, dz, ws), what,
                               "cudnnBackendExecute");
        if (conv_is_own(al->algo))
            return conv_own_wgrad(dev, al->algo, &p->g, u.x->data, dz, beta, u.dw->data, ws, what);
        st = cudnn_check(cudnnSetConvolutionMathType(p->cd, al->math), what,
                         "cudnnSetConvolutionMathType");
        if (!st)
            st = cudnn_check(
                cudnnConvolutionBackwardFilter(d->dnn, &one, p->xd, u.x->data, p->yd, dz, p->cd,
                                               (cudnnConvolutionBwdFilterAlgo_t)al->algo, ws,
                                               al->ws, &beta, p->wd, u.dw->data),
                what, "cudnnConvolutionBackwardFilter");
    }
    return st;
}

/* conv_small.cu's backward where it applies (*done = 1): no dx (the input is the data), 1 to
 * 4 channels, act' taken on the fly; any dtype (the half path: not accumulating). */
static neat_status small_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, float beta,
                                  int *done) {
    static const char what[] = "neat_conv2d_backward";
    const auto &u = op->u.conv2d_backward;
    cuda_device *d = cuda_dev(dev);
    neat_dtype dt = u.dy->dtype;
    *done = 0;
    if (u.dx || !u.dw || !cuda_conv_small_act(dt, u.act, 1) || !cuda_conv_small_fits(&u.g))
        return NEAT_OK;
    neat_status st = conv_cache_get(d, what);
    if (st || !d->conv->small) return st;
    void *ws;
    st = cuda_scratch(cb, 0, cuda_conv_small_backward_ws(&u.g), &ws);
    if (st) return st;
    *done = 1;
    return cuda_conv_small_backward(dev, &u.g, dt, u.act, u.x->data, u.y ? u.y->data : NULL,
                                    u.dy->data, beta, u.dw->data, u.db ? u.db->data : NULL, ws,
                                    what);
}

/* Half tensors with no activation or relu, not accumulating (cuda_native_half: one of cuDNN's
 * half backward-data algorithms rounds before it adds beta times the old dx, so an
 * accumulating backward runs on float32 copies): dz = dy or relu's mask of it (exact in half,
 * scratch slot 0), dx and dw by cuDNN, db by half.cu's channel sums. */
static neat_status conv2d_backward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_backward";
    const auto &u = op->u.conv2d_backward;
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    neat_dtype dt = u.dy->dtype;
    int64_t ny = u.dy->numel;
    neat_status st = NEAT_OK;
    if (ny == 0) { /* nothing flows back: the gradients are zero */
        if (u.dx) st = cuda_fill_typed(dev, dt, u.dx->data, u.dx->numel, 0.0f, what);
        if (!st && u.dw) st = cuda_fill_typed(dev, dt, u.dw->data, u.dw->numel, 0.0f, what);
        if (!st && u.db) st = cuda_fill_typed(dev, dt, u.db->data, u.db->numel, 0.0f, what);
        return st;
    }
    int small = 0;
    st = small_backward(dev, cb, op, 0.0f, &small);
    if (st || small) return st;
    int which[2], nwhich = 0;
    if (u.dx) which[nwhich++] = CONV_BWD_DATA;
    if (u.dw) which[nwhich++] = CONV_BWD_FILTER;
    conv_plan *p = NULL;
    const conv_algo *a[2] = {NULL, NULL};
    void *ws = NULL;
    if (u.x->numel > 0 && u.w->numel > 0) { /* else C = 0: dx and dw are empty */
        const conv_inputs in = {u.x->data, u.w->data, u.dy->data};
        st = conv_prepare(dev, cb, &g, op->math, dt, which, nwhich, &in, &p, a, &ws, what);
        if (st) return st;
    }
    const void *dz = u.dy->data;
    if (u.act == NEAT_ACT_RELU) {
        void *z;
        st = cuda_scratch(cb, 0, (size_t)ny * neat_dtype_size(dt), &z);
        if (!st) st = cuda_half_relu_grad(dev, dt, u.y->data, u.dy->data, z, ny, what);
        if (st) return st;
        dz = z;
    }
    st = backward_data_filter(dev, p, a, 0, ws, u, dz, 0.0f, what);
    if (st) return st;
    if (u.db) /* db[k] = sum over n, p, q of dz[n, k, p, q] */
        st = cuda_half_channel_sum(dev, cb, 2, dt, dz, conv_outer(g), g.k, conv_inner(g), 0,
                                   u.db->data, what);
    return st;
}

extern "C" {

neat_status cuda_conv2d_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_forward";
    const auto &u = op->u.conv2d_forward;
    if (u.x->dtype != NEAT_F32) return conv2d_forward_half(dev, cb, op);
    const nm_conv_geom &g = u.g;
    int64_t ny = u.y->numel;
    if (ny == 0) return NEAT_OK;
    const float *b = u.b ? u.b->data : NULL;
    cuda_device *d = cuda_dev(dev);
    neat_status st;
    int done = 0;                             /* the fused call ran: bias and activation are in y */
    if (u.x->numel == 0 || u.w->numel == 0) { /* no input channels: y = act(b) */
        st = cuda_fill_f32(dev, u.y->data, ny, 0.0f, what);
    } else {
        static const int fwd[] = {CONV_FWD}, precomp[] = {CONV_FWD_PRECOMP};
        conv_plan *p;
        const conv_algo *a[1];
        void *ws;
        const conv_inputs in = {u.x->data, u.w->data, NULL};
        st = conv_cache_get(d, what);
        if (!st && d->conv->small && cuda_conv_small_fits(&g)) /* conv_small.cu */
            return cuda_conv_small_forward(dev, &g, NEAT_F32, u.act, u.x->data, u.w->data, b,
                                           u.y->data, what);
        int fusable =
            !st && b && d->conv->fuse && (u.act == NEAT_ACT_RELU || u.act == NEAT_ACT_NONE);
        int forced = fusable && d->conv->fuse == 3; /* IMPLICIT_PRECOMP_GEMM whatever the choice */
        if (!st)
            st = conv_prepare(dev, cb, &g, op->math, NEAT_F32, forced ? precomp : fwd, 1, &in, &p,
                              a, &ws, what);
        if (!st && forced && a[0]->algo < 0)
            return nm_error(NEAT_ERR_BACKEND_ERROR,
                            "%s: cuDNN offers no IMPLICIT_PRECOMP_GEMM algorithm for the fused "
                            "convolution (NEATML_CONV_FUSE=3)",
                            what);
        /* fused only on IMPLICIT_PRECOMP_GEMM (see the top), and only where it is the chosen
         * algorithm: a faster one followed by the pass is not traded for it. An engine timed
         * faster than that algorithm by less than 10% (the separate bias and activation pass
         * cost about 9% on conv2d_bias_relu_256f) leaves the fused call in place. */
        if (!st && fusable && a[0]->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
            !(a[0]->engine && a[0]->engine_ratio < 0.9f))
            st = run_fused(d, p, a[0], ws, u.act, u.x->data, u.w->data, b, u.y->data, &done, what);
        if (!st && !done) st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, u.y->data, what);
    }
    if (st || done) return st;
    return cuda_bias_act(dev, u.y->data, b, ny, conv_inner(g), g.k, u.act, what);
}

/* Record time: whether the op's run reaches a cuDNN plan (conv_prepare -> plan_get, whose
 * descriptors take int sizes), by the same turns the functions above take before it: an
 * empty output (dy), no input channels (an empty x or w), conv_small.cu's kernels. The half
 * paths turn alike, and a half op on float32 copies runs the float32 function (half.cu); the
 * small backward's activation rule is asked in the type the run uses. Where the run reaches
 * a plan, every size of the geometry must fit cuDNN's int. */
neat_status cuda_conv2d_check(nm_device *dev, const nm_op *op) {
    cuda_device *d = cuda_dev(dev);
    const nm_conv_geom *g;
    bool plan;
    if (op->kind == NM_OP_CONV2D_FORWARD) {
        const auto &u = op->u.conv2d_forward;
        g = &u.g;
        plan = u.y->numel > 0 && u.x->numel > 0 && u.w->numel > 0 &&
               !(d->conv_small && cuda_conv_small_fits(g));
    } else {
        const auto &u = op->u.conv2d_backward;
        g = &u.g;
        neat_dtype dt = u.dy->dtype != NEAT_F32 && cuda_native_half(op) ? u.dy->dtype : NEAT_F32;
        plan = u.dy->numel > 0 &&
               !(d->conv_small && !u.dx && u.dw && cuda_conv_small_act(dt, u.act, 1) &&
                 cuda_conv_small_fits(g)) &&
               u.x->numel > 0 && u.w->numel > 0;
    }
    return plan ? cuda_conv_dims_fit(g, op->fn) : NEAT_OK;
}

neat_status cuda_conv2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_backward";
    const auto &u = op->u.conv2d_backward;
    if (u.dy->dtype != NEAT_F32) return conv2d_backward_half(dev, cb, op);
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    const float beta = u.accumulate ? 1.0f : 0.0f;
    int64_t ny = u.dy->numel;
    neat_status st = NEAT_OK;
    if (ny == 0) { /* nothing flows back: the gradients are zero */
        if (u.accumulate) return NEAT_OK;
        if (u.dx) st = cuda_fill_f32(dev, u.dx->data, u.dx->numel, 0.0f, what);
        if (!st && u.dw) st = cuda_fill_f32(dev, u.dw->data, u.dw->numel, 0.0f, what);
        if (!st && u.db) st = cuda_fill_f32(dev, u.db->data, u.db->numel, 0.0f, what);
        return st;
    }
    int small = 0;
    st = small_backward(dev, cb, op, beta, &small);
    if (st || small) return st;
    int which[3], nwhich = 0;
    if (u.act == NEAT_ACT_GELU) which[nwhich++] = CONV_FWD;
    if (u.dx) which[nwhich++] = CONV_BWD_DATA;
    if (u.dw) which[nwhich++] = CONV_BWD_FILTER;
    conv_plan *p = NULL;
    const conv_algo *a[3] = {NULL, NULL, NULL};
    void *ws = NULL;
    if (u.x->numel > 0 && u.w->numel > 0) { /* else C = 0: dx and dw are empty */
        const conv_inputs in = {u.x->data, u.w->data, u.dy->data};
        st = conv_prepare(dev, cb, &g, op->math, NEAT_F32, which, nwhich, &in, &p, a, &ws, what);
        if (st) return st;
    }
    const float *dz = u.dy->data;
    if (u.act != NEAT_ACT_NONE) {
        void *buf;
        st = cuda_scratch(cb, 0, (size_t)ny * sizeof(float), &buf);
        if (st) return st;
        float *z = (float *)buf;
        if (u.act == NEAT_ACT_GELU) { /* z = conv(x, w) + b, then dz = dy gelu'(z) in place */
            if (p)
                st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, z, what);
            else
                st = cuda_fill_f32(dev, z, ny, 0.0f, what);
            if (!st)
                st = cuda_bias_act(dev, z, u.b ? u.b->data : NULL, ny, conv_inner(g), g.k,
                                   NEAT_ACT_NONE, what);
            if (!st) st = cuda_act_grad(dev, u.act, z, NULL, u.dy->data, z, ny, what);
        } else {
            st = cuda_act_grad(dev, u.act, NULL, u.y->data, u.dy->data, z, ny, what);
        }
        if (st) return st;
        dz = z;
    }
    st = backward_data_filter(dev, p, a, u.act == NEAT_ACT_GELU, ws, u, dz, beta, what);
    if (st) return st;
    if (u.db && g.nhwc) /* db[k] = sum over the N P Q rows of dz [NPQ, K] */
        return cuda_sum3(dev, cb, 3, dz, 1, conv_outer(g), g.k, 1.0f, u.accumulate, u.db->data,
                         what);
    if (u.db) { /* db[k] = sum_n (sum_pq dz[n, k, pq]) */
        void *sums;
        st = cuda_scratch(cb, 2, (size_t)(g.n * g.k) * sizeof(float), &sums);
        if (!st)
            st = cuda_sum3(dev, cb, 3, dz, g.n * g.k, g.p * g.q, 1, 1.0f, 0, (float *)sums, what);
        if (!st)
            st = cuda_sum3(dev, cb, 5, (const float *)sums, 1, g.n, g.k, 1.0f, u.accumulate,
                           u.db->data, what);
    }
    return st;
}

} /* extern "C" */
