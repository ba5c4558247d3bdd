/*
 * ops_forward.c — the public forward ops: validate every argument, then record an nm_op.
 *
 * Order of checks in every op: the command buffer (live, still recording), each tensor
 * argument (NULL, destroyed, other device), options, shapes, then aliasing of outputs. A
 * failing call returns before nm_record, so nothing is recorded and no output is touched.
 * Shapes must match exactly (no implicit broadcasting beyond neat_add's row); zero-size
 * tensors are valid everywhere a size may be 0.
 */
#include "ops_check.h"

/* ---- matmul ------------------------------------------------------------------------------
 * c = alpha op(a) op(b) + beta c. Plain: a, b, c 2-D; batched: 3-D with one batch size B.
 * op(a) is MxK (a is MxK, or KxM when transposed), op(b) KxN, c [B,]MxN. c must not alias
 * a or b (the product reads them while c is written). c is required even when beta is 0:
 * it is the output; its contents are then not read. */
static neat_status matmul_record(const char *fn, int batched, neat_cmdbuf *cb, const neat_tensor *a,
                                 const neat_tensor *b, neat_tensor *c, float alpha, float beta,
                                 int trans_a, int trans_b) {
    nm_cmdbuf *buf;
    nm_tensor *ta, *tb, *tc;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "a", buf, a, 1, &ta));
    TRY(nm_arg(fn, "b", buf, b, 1, &tb));
    TRY(nm_arg(fn, "c", buf, c, 1, &tc));
    TRY(nm_check_finite(fn, "alpha", alpha));
    TRY(nm_check_finite(fn, "beta", beta));

    int nd = batched ? 3 : 2, o = batched; /* o: index of the first matrix dimension */
    const char *layout = batched ? "[B,rows,cols]" : "[rows,cols]";
    TRY(nm_check_ndim(fn, "a", ta, nd, layout));
    TRY(nm_check_ndim(fn, "b", tb, nd, layout));
    TRY(nm_check_ndim(fn, "c", tc, nd, batched ? "[B,M,N]" : "[M,N]"));
    char as[NM_SHAPE_STR], bs[NM_SHAPE_STR];
    if (batched && ta->shape[0] != tb->shape[0])
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: a is %s, b is %s: batch sizes %lld and %lld "
                        "differ",
                        fn, nm_shape_str(ta, as), nm_shape_str(tb, bs), (long long)ta->shape[0],
                        (long long)tb->shape[0]);
    int64_t m = trans_a ? ta->shape[o + 1] : ta->shape[o];
    int64_t ka = trans_a ? ta->shape[o] : ta->shape[o + 1];
    int64_t kb = trans_b ? tb->shape[o + 1] : tb->shape[o];
    int64_t n = trans_b ? tb->shape[o] : tb->shape[o + 1];
    if (ka != kb)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: a is %s%s, b is %s%s: inner dimensions "
                        "%lld and %lld differ",
                        fn, nm_shape_str(ta, as), trans_a ? " (transposed)" : "",
                        nm_shape_str(tb, bs), trans_b ? " (transposed)" : "", (long long)ka,
                        (long long)kb);
    int64_t want_c[3] = {ta->shape[0], m, n};
    TRY(nm_check_shape(fn, "c", tc, nd, batched ? want_c : want_c + 1,
                       batched ? "[B,M,N] of op(a) MxK times op(b) KxN"
                               : "[M,N] of op(a) MxK times op(b) KxN"));
    TRY(nm_check_no_alias(fn, "c", tc, "a", ta));
    TRY(nm_check_no_alias(fn, "c", tc, "b", tb));

    nm_op op = {.kind = NM_OP_MATMUL,
                .u.matmul = {.a = ta,
                             .b = tb,
                             .c = tc,
                             .alpha = alpha,
                             .beta = beta,
                             .trans_a = trans_a != 0,
                             .trans_b = trans_b != 0,
                             .batch = batched ? ta->shape[0] : 1,
                             .m = m,
                             .n = n,
                             .k = ka}};
    return nm_record(fn, buf, &op);
}

NEAT_API neat_status neat_matmul(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                                 neat_tensor *c, float alpha, float beta, int trans_a,
                                 int trans_b) {
    return matmul_record("neat_matmul", 0, cb, a, b, c, alpha, beta, trans_a, trans_b);
}

NEAT_API neat_status neat_matmul_batched(neat_cmdbuf *cb, const neat_tensor *a,
                                         const neat_tensor *b, neat_tensor *c, float alpha,
                                         float beta, int trans_a, int trans_b) {
    return matmul_record("neat_matmul_batched", 1, cb, a, b, c, alpha, beta, trans_a, trans_b);
}

/* ---- elementwise -------------------------------------------------------------------------
 * out = a + b (or a * b) with b of a's shape, or one row [n] / [1,n] (n = a's last dimension) added to
 * each of the rows = numel / n rows. out has a's shape and may be a or b: each element is
 * read before it is written. A 0-D a is one row of one column. */
static neat_status record_pair(const char *fn, nm_op_kind kind, neat_cmdbuf *cb,
                               const neat_tensor *a, const neat_tensor *b, neat_tensor *out) {
    nm_cmdbuf *buf;
    nm_tensor *ta, *tb, *tout;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "a", buf, a, 1, &ta));
    TRY(nm_arg(fn, "b", buf, b, 1, &tb));
    TRY(nm_arg(fn, "out", buf, out, 1, &tout));

    int64_t rows, cols;
    nm_rows_cols(ta, &rows, &cols);
    int same = tb->ndim == ta->ndim;
    for (int i = 0; same && i < ta->ndim; i++) same = tb->shape[i] == ta->shape[i];
    int row = ta->ndim >= 1 && ((tb->ndim == 1 && tb->shape[0] == cols) ||
                                (tb->ndim == 2 && tb->shape[0] == 1 && tb->shape[1] == cols));
    if (!same && !row) {
        char as[NM_SHAPE_STR], bs[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: a is %s, b is %s: b must have a's shape "
                        "or be one row [%lld] or [1,%lld]",
                        fn, nm_shape_str(ta, as), nm_shape_str(tb, bs), (long long)cols,
                        (long long)cols);
    }
    TRY(nm_check_same_shape(fn, "out", tout, "a", ta));

    /* add and mul share one args struct (ops.h), so either member describes the op */
    nm_op op = {
        .kind = kind,
        .u.add = {.a = ta, .b = tb, .out = tout, .rows = rows, .cols = cols, .broadcast = !same}};
    return nm_record(fn, buf, &op);
}

NEAT_API neat_status neat_add(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                              neat_tensor *out) {
    return record_pair("neat_add", NM_OP_ADD, cb, a, b, out);
}

NEAT_API neat_status neat_mul(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                              neat_tensor *out) {
    return record_pair("neat_mul", NM_OP_MUL, cb, a, b, out);
}

/* out = alpha x, same shapes, out may be x. */
NEAT_API neat_status neat_scale(neat_cmdbuf *cb, const neat_tensor *x, float alpha,
                                neat_tensor *out) {
    static const char fn[] = "neat_scale";
    nm_cmdbuf *buf;
    nm_tensor *tx, *tout;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "out", buf, out, 1, &tout));
    TRY(nm_check_finite(fn, "alpha", alpha));
    TRY(nm_check_same_shape(fn, "out", tout, "x", tx));

    nm_op op = {.kind = NM_OP_SCALE, .u.scale = {.x = tx, .out = tout, .alpha = alpha}};
    return nm_record(fn, buf, &op);
}

/* y = x in y's dtype: any pair of dtypes (the op's NM_OPF_DT_ANY), same shapes, y may be x
 * (the same memory: then the dtypes are the same and it is a no-op). */
NEAT_API neat_status neat_cast(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_cast";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(nm_check_same_shape(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_CAST, .u.cast = {.x = tx, .y = ty}};
    return nm_record(fn, buf, &op);
}

/* t = value everywhere. Any value is accepted, NaN and infinities included: filling with
 * NaN (poisoning) or -inf (masks) is a legitimate use, unlike a non-finite scale factor. */
NEAT_API neat_status neat_fill(neat_cmdbuf *cb, neat_tensor *t, float value) {
    static const char fn[] = "neat_fill";
    nm_cmdbuf *buf;
    nm_tensor *tt;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "t", buf, t, 1, &tt));

    nm_op op = {.kind = NM_OP_FILL, .u.fill = {.t = tt, .value = value}};
    return nm_record(fn, buf, &op);
}

/* ---- linear and convolution -------------------------------------------------------------
 * y = act(x w^T + b) and y = act(conv2d(x, w) + b): the same arguments, resolved and
 * checked alike (act, x, w, b or NULL, y; y aliases nothing); nm_check_linear and
 * nm_check_conv, the shapes, are shared with the backward ops. */
typedef struct layer_args {
    nm_tensor *x, *w, *b, *y;
} layer_args;

static neat_status resolve_layer_args(const char *fn, nm_cmdbuf *buf, neat_activation act,
                                      const neat_tensor *x, const neat_tensor *w,
                                      const neat_tensor *b, neat_tensor *y, layer_args *a) {
    TRY(nm_check_act(fn, act));
    TRY(nm_arg(fn, "x", buf, x, 1, &a->x));
    TRY(nm_arg(fn, "w", buf, w, 1, &a->w));
    TRY(nm_arg(fn, "b", buf, b, 0, &a->b));
    return nm_arg(fn, "y", buf, y, 1, &a->y);
}

static neat_status check_layer_output(const char *fn, const layer_args *a, int ndim,
                                      const int64_t *dims, const char *layout) {
    static const char *const in_names[] = {"x", "w", "b"};
    TRY(nm_check_shape(fn, "y", a->y, ndim, dims, layout));
    return nm_check_no_alias_all(fn, "y", a->y, 3, in_names, (nm_tensor *[]){a->x, a->w, a->b});
}

NEAT_API neat_status neat_linear_forward(neat_cmdbuf *cb, neat_activation act, const neat_tensor *x,
                                         const neat_tensor *w, const neat_tensor *b,
                                         neat_tensor *y) {
    static const char fn[] = "neat_linear_forward";
    nm_cmdbuf *buf;
    layer_args a;
    nm_linear_dims d;
    TRY(nm_begin(fn, cb, &buf));
    TRY(resolve_layer_args(fn, buf, act, x, w, b, y, &a));
    TRY(nm_check_linear(fn, a.x, a.w, a.b, &d));
    TRY(check_layer_output(fn, &a, 2, (int64_t[]){d.n, d.out}, "[N,out] of x and w"));
    nm_op op = {.kind = NM_OP_LINEAR_FORWARD,
                .u.linear_forward = {.x = a.x,
                                     .w = a.w,
                                     .b = a.b,
                                     .y = a.y,
                                     .act = act,
                                     .n = d.n,
                                     .in = d.in,
                                     .out = d.out}};
    return nm_record(fn, buf, &op);
}

NEAT_API neat_conv2d_desc neat_conv2d_desc_make(int64_t kernel_h, int64_t kernel_w, int64_t stride,
                                                int64_t pad) {
    return neat_conv2d_desc_full(kernel_h, kernel_w, stride, stride, pad, pad, 1, 1, 1);
}

NEAT_API neat_conv2d_desc neat_conv2d_desc_full(int64_t kernel_h, int64_t kernel_w,
                                                int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                                int64_t pad_w, int64_t dilation_h,
                                                int64_t dilation_w, int64_t groups) {
    neat_conv2d_desc d = {.kernel_h = kernel_h,
                          .kernel_w = kernel_w,
                          .stride_h = stride_h,
                          .stride_w = stride_w,
                          .pad_h = pad_h,
                          .pad_w = pad_w,
                          .dilation_h = dilation_h,
                          .dilation_w = dilation_w,
                          .groups = groups};
    return d;
}

/* y = act(conv2d(x, w) + b): x [N,C,H,W], w [K,C/groups,kh,kw], b [K] or NULL,
 * y [N,K,P,Q] (nm_check_conv checks the descriptor and derives P, Q; NHWC: [N,H,W,C],
 * [K,kh,kw,C/groups], [N,P,Q,K]). */
NEAT_API neat_status neat_conv2d_forward(neat_cmdbuf *cb, const neat_conv2d_desc *desc,
                                         neat_activation act, const neat_tensor *x,
                                         const neat_tensor *w, const neat_tensor *b,
                                         neat_tensor *y) {
    static const char fn[] = "neat_conv2d_forward";
    nm_cmdbuf *buf;
    layer_args a;
    nm_conv_geom g;
    TRY(nm_begin(fn, cb, &buf));
    TRY(resolve_layer_args(fn, buf, act, x, w, b, y, &a));
    TRY(nm_check_conv(fn, desc, a.x, a.w, a.b, &g));
    int64_t yd[4];
    nm_image_dims(&g, g.k, g.p, g.q, yd);
    TRY(check_layer_output(fn, &a, 4, yd,
                           g.nhwc ? "[N,P,Q,K] of x, w and desc" : "[N,K,P,Q] of x, w and desc"));
    nm_op op = {.kind = NM_OP_CONV2D_FORWARD,
                .u.conv2d_forward = {.x = a.x, .w = a.w, .b = a.b, .y = a.y, .act = act, .g = g}};
    return nm_record(fn, buf, &op);
}

NEAT_API neat_pool2d_desc neat_pool2d_desc_make(int64_t kernel_h, int64_t kernel_w, int64_t stride,
                                                int64_t pad) {
    return neat_pool2d_desc_full(kernel_h, kernel_w, stride, stride, pad, pad);
}

NEAT_API neat_pool2d_desc neat_pool2d_desc_full(int64_t kernel_h, int64_t kernel_w,
                                                int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                                int64_t pad_w) {
    neat_pool2d_desc d = {.kernel_h = kernel_h,
                          .kernel_w = kernel_w,
                          .stride_h = stride_h,
                          .stride_w = stride_w,
                          .pad_h = pad_h,
                          .pad_w = pad_w};
    return d;
}

/* y [N,C,P,Q] = max over each kh x kw window of x [N,C,H,W] (padding is -inf; NHWC:
 * [N,P,Q,C] from [N,H,W,C]). */
NEAT_API neat_status neat_maxpool2d(neat_cmdbuf *cb, const neat_pool2d_desc *desc,
                                    const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_maxpool2d";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    nm_conv_geom g;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(nm_pool_geometry(fn, desc, tx, &g));
    int64_t yd[4];
    nm_image_dims(&g, g.c, g.p, g.q, yd);
    TRY(nm_check_shape(fn, "y", ty, 4, yd,
                       g.nhwc ? "[N,P,Q,C] of x and desc" : "[N,C,P,Q] of x and desc"));
    TRY(nm_check_no_alias(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_MAXPOOL2D, .u.maxpool2d = {.x = tx, .y = ty, .g = g}};
    return nm_record(fn, buf, &op);
}

/* ---- reductions and softmax -------------------------------------------------------------
 * Sums see x as [outer, len, inner] and reduce len: SUM_ALL is [1, numel, 1], axis -1. */
NEAT_API neat_status neat_sum_all(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_sum_all";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    if (ty->numel != 1) {
        char ys[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: y is %s: must have exactly one element", fn,
                        nm_shape_str(ty, ys));
    }
    TRY(nm_check_no_alias(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_SUM,
                .u.sum = {.x = tx, .y = ty, .axis = -1, .outer = 1, .len = tx->numel, .inner = 1}};
    return nm_record(fn, buf, &op);
}

/* y = sum of x along `axis`. y is x's shape with that dimension removed, or kept as 1 (the
 * same layout); for a 1-D x these are [] and [1]. */
NEAT_API neat_status neat_sum_axis(neat_cmdbuf *cb, const neat_tensor *x, int axis,
                                   neat_tensor *y) {
    static const char fn[] = "neat_sum_axis";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    char xs[NM_SHAPE_STR], ys[NM_SHAPE_STR], rs[NM_SHAPE_STR], ks[NM_SHAPE_STR];
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    if (axis < 0 || axis >= tx->ndim)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: axis %d is outside [0, %d) for x %s", fn,
                        axis, tx->ndim, nm_shape_str(tx, xs));

    int64_t removed[NEAT_MAX_DIMS], kept[NEAT_MAX_DIMS];
    for (int i = 0, j = 0; i < tx->ndim; i++) {
        kept[i] = i == axis ? 1 : tx->shape[i];
        if (i != axis) removed[j++] = tx->shape[i];
    }
    int is_removed = ty->ndim == tx->ndim - 1, is_kept = ty->ndim == tx->ndim;
    for (int i = 0; is_removed && i < ty->ndim; i++) is_removed = ty->shape[i] == removed[i];
    for (int i = 0; is_kept && i < ty->ndim; i++) is_kept = ty->shape[i] == kept[i];
    if (!is_removed && !is_kept)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: x is %s, axis %d: y is %s, expected %s or "
                        "%s",
                        fn, nm_shape_str(tx, xs), axis, nm_shape_str(ty, ys),
                        nm_dims_str(tx->ndim - 1, removed, rs), nm_dims_str(tx->ndim, kept, ks));
    TRY(nm_check_no_alias(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_SUM,
                .u.sum = {.x = tx,
                          .y = ty,
                          .axis = axis,
                          .outer = nm_dims_prod(tx->shape, 0, axis),
                          .len = tx->shape[axis],
                          .inner = nm_dims_prod(tx->shape, axis + 1, tx->ndim)}};
    return nm_record(fn, buf, &op);
}

/* y = softmax over the last dimension: x seen as rows x cols, cols = last dimension (a 0-D
 * x is one row of one column). y has x's shape and may be x. */
NEAT_API neat_status neat_softmax(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_softmax";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(nm_check_same_shape(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_SOFTMAX, .u.softmax = {.x = tx, .y = ty}};
    nm_rows_cols(tx, &op.u.softmax.rows, &op.u.softmax.cols);
    return nm_record(fn, buf, &op);
}

/* ---- recorded host copies ----------------------------------------------------------------
 * count must be t's element count; a NULL host pointer is refused unless count is 0. The
 * host memory must stay valid for as long as the buffer may run. */
static neat_status host_copy_args(const char *fn, const char *arg, nm_cmdbuf *buf,
                                  const neat_tensor *t, const void *host, const char *host_name,
                                  int64_t count, nm_tensor **out) {
    TRY(nm_arg(fn, arg, buf, t, 1, out));
    if (count != (*out)->numel) {
        char s[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: %s is %s (%lld elements), count is %lld", fn,
                        arg, nm_shape_str(*out, s), (long long)(*out)->numel, (long long)count);
    }
    if (!host && count > 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, host_name);
    return NEAT_OK;
}

NEAT_API neat_status neat_copy_from_host(neat_cmdbuf *cb, const float *src, int64_t count,
                                         neat_tensor *t) {
    static const char fn[] = "neat_copy_from_host";
    nm_cmdbuf *buf;
    nm_tensor *tt;
    TRY(nm_begin(fn, cb, &buf));
    TRY(host_copy_args(fn, "t", buf, t, src, "src", count, &tt));
    nm_op op = {.kind = NM_OP_COPY_FROM_HOST, .u.copy_from_host = {.t = tt, .src = src}};
    return nm_record(fn, buf, &op);
}

NEAT_API neat_status neat_copy_to_host(neat_cmdbuf *cb, const neat_tensor *t, float *dst,
                                       int64_t count) {
    static const char fn[] = "neat_copy_to_host";
    nm_cmdbuf *buf;
    nm_tensor *tt;
    TRY(nm_begin(fn, cb, &buf));
    TRY(host_copy_args(fn, "t", buf, t, dst, "dst", count, &tt));
    nm_op op = {.kind = NM_OP_COPY_TO_HOST, .u.copy_to_host = {.t = tt, .dst = dst}};
    return nm_record(fn, buf, &op);
}
