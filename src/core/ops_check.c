/* ops_check.c — shape, option and geometry checks shared by the op recorders. */
#include "ops_check.h"

#include <math.h>
#include <stdio.h>

const char *nm_dims_str(int ndim, const int64_t *dims, char *buf) {
    if (ndim == 0) {
        snprintf(buf, NM_SHAPE_STR, "[]");
        return buf;
    }
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && used < NM_SHAPE_STR; i++)
        used += (size_t)snprintf(buf + used, NM_SHAPE_STR - used, i ? "x%lld" : "%lld",
                                 (long long)dims[i]);
    return buf;
}

int64_t nm_dims_prod(const int64_t *dims, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++)
        if (__builtin_mul_overflow(p, dims[i], &p)) p = INT64_MAX;
    return p;
}

void nm_rows_cols(const nm_tensor *t, int64_t *rows, int64_t *cols) {
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = t->ndim ? nm_dims_prod(t->shape, 0, t->ndim - 1) : 1;
}

neat_status nm_check_no_alias_all(const char *fn, const char *out_name, const nm_tensor *out, int n,
                                  const char *const *names, nm_tensor *const *ins) {
    for (int i = 0; i < n; i++) TRY(nm_check_no_alias(fn, out_name, out, names[i], ins[i]));
    return NEAT_OK;
}

neat_status nm_check_linear(const char *fn, const nm_tensor *x, const nm_tensor *w,
                            const nm_tensor *b, nm_linear_dims *d) {
    TRY(nm_check_ndim(fn, "x", x, 2, "[N,in]"));
    TRY(nm_check_ndim(fn, "w", w, 2, "[out,in]"));
    if (w->shape[1] != x->shape[1]) {
        char xs[NM_SHAPE_STR], ws[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: x is %s, w is %s: in features %lld and "
                        "%lld differ",
                        fn, nm_shape_str(x, xs), nm_shape_str(w, ws), (long long)x->shape[1],
                        (long long)w->shape[1]);
    }
    *d = (nm_linear_dims){.n = x->shape[0], .in = x->shape[1], .out = w->shape[0]};
    if (b) TRY(nm_check_shape(fn, "b", b, 1, &d->out, "[out] of w"));
    return NEAT_OK;
}

neat_status nm_check_conv(const char *fn, const neat_conv2d_desc *desc, const nm_tensor *x,
                          const nm_tensor *w, const nm_tensor *b, nm_conv_geom *g) {
    TRY(nm_conv_geometry(fn, desc, x, w, g));
    if (b) TRY(nm_check_shape(fn, "b", b, 1, &g->k, "[K] of w"));
    return NEAT_OK;
}

neat_status nm_check_ndim(const char *fn, const char *arg, const nm_tensor *t, int ndim,
                          const char *layout) {
    if (t->ndim == ndim) return NEAT_OK;
    char s[NM_SHAPE_STR];
    return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: %s is %s (%d-D), expected %d-D %s", fn, arg,
                    nm_shape_str(t, s), t->ndim, ndim, layout);
}

neat_status nm_check_shape(const char *fn, const char *arg, const nm_tensor *t, int ndim,
                           const int64_t *dims, const char *layout) {
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == dims[i];
    if (same) return NEAT_OK;
    char s[NM_SHAPE_STR], e[NM_SHAPE_STR];
    return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: %s is %s, expected %s = %s", fn, arg,
                    nm_shape_str(t, s), nm_dims_str(ndim, dims, e), layout);
}

neat_status nm_check_same_shape(const char *fn, const char *arg, const nm_tensor *t,
                                const char *ref_name, const nm_tensor *ref) {
    int same = t->ndim == ref->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == ref->shape[i];
    if (same) return NEAT_OK;
    char s[NM_SHAPE_STR], r[NM_SHAPE_STR];
    return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: %s is %s, %s is %s: shapes differ", fn, arg,
                    nm_shape_str(t, s), ref_name, nm_shape_str(ref, r));
}

neat_status nm_check_finite(const char *fn, const char *name, float value) {
    if (isfinite(value)) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is %g: must be finite", fn, name,
                    (double)value);
}

neat_status nm_check_act(const char *fn, neat_activation act) {
    if (act >= NEAT_ACT_NONE && act <= NEAT_ACT_GELU) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: act %d is not a neat_activation", fn, (int)act);
}

neat_status nm_check_no_alias(const char *fn, const char *out_name, const nm_tensor *out,
                              const char *in_name, const nm_tensor *in) {
    if (!out || !in || out->numel == 0 || in->numel == 0) return NEAT_OK;
    return nm_no_alias(fn, out_name, out, in_name, in);
}

/* Option `name` of a descriptor must be >= lo. */
static neat_status check_at_least(const char *fn, const char *name, int64_t v, int64_t lo) {
    if (v >= lo) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: desc->%s is %lld: must be >= %lld", fn, name,
                    (long long)v, (long long)lo);
}

/* Output size along one axis: (in + 2 pad - extent) / stride + 1, floor, where extent is the
 * (dilated) kernel extent; -1 when the padded input is smaller than the extent. in + 2 pad
 * overflows only for absurd descriptors: *overflow is set then. */
static int64_t out_size(int64_t in, int64_t pad, int64_t extent, int64_t stride, int *overflow) {
    int64_t padded;
    if (__builtin_mul_overflow(pad, 2, &padded) || __builtin_add_overflow(padded, in, &padded)) {
        *overflow = 1;
        return -1;
    }
    if (padded < extent) return -1;
    return (padded - extent) / stride + 1;
}

/* The window fields both descriptors have: kernel and stride >= 1, padding >= 0. */
static neat_status check_window(const char *fn, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                int64_t ph, int64_t pw) {
    neat_status st;
    if ((st = check_at_least(fn, "kernel_h", kh, 1)) ||
        (st = check_at_least(fn, "kernel_w", kw, 1)) ||
        (st = check_at_least(fn, "stride_h", sh, 1)) ||
        (st = check_at_least(fn, "stride_w", sw, 1)) || (st = check_at_least(fn, "pad_h", ph, 0)) ||
        (st = check_at_least(fn, "pad_w", pw, 0)))
        return st;
    return NEAT_OK;
}

/* The geometry of a window op over x ([N,C,H,W], or [N,H,W,C] when nhwc) giving k
 * channels of p x q. */
static nm_conv_geom window_geom(const nm_tensor *x, int nhwc, int64_t k, int64_t p, int64_t q,
                                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
    return (nm_conv_geom){.n = x->shape[0],
                          .c = x->shape[nhwc ? 3 : 1],
                          .h = x->shape[nhwc ? 1 : 2],
                          .w = x->shape[nhwc ? 2 : 3],
                          .k = k,
                          .p = p,
                          .q = q,
                          .kh = kh,
                          .kw = kw,
                          .sh = sh,
                          .sw = sw,
                          .ph = ph,
                          .pw = pw,
                          .dh = dh,
                          .dw = dw,
                          .groups = groups,
                          .nhwc = nhwc};
}

/* The layout field of either descriptor: INVALID_ARGUMENT unless one of neat_layout's. */
static neat_status check_layout(const char *fn, neat_layout layout) {
    if (layout != NEAT_LAYOUT_NCHW && layout != NEAT_LAYOUT_NHWC)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: desc layout %d is neither NEAT_LAYOUT_NCHW (0) nor "
                        "NEAT_LAYOUT_NHWC (1)",
                        fn, (int)layout);
    return NEAT_OK;
}

void nm_image_dims(const nm_conv_geom *g, int64_t c, int64_t h, int64_t w, int64_t dims[4]) {
    dims[0] = g->n;
    dims[g->nhwc ? 3 : 1] = c;
    dims[g->nhwc ? 1 : 2] = h;
    dims[g->nhwc ? 2 : 3] = w;
}

neat_status nm_conv_geometry(const char *fn, const neat_conv2d_desc *desc, const nm_tensor *x,
                             const nm_tensor *w, nm_conv_geom *g) {
    if (!desc) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: desc is NULL", fn);
    neat_status st;
    /* Options first: kernel, stride, dilation, groups >= 1; padding >= 0. */
    if ((st = check_window(fn, desc->kernel_h, desc->kernel_w, desc->stride_h, desc->stride_w,
                           desc->pad_h, desc->pad_w)) ||
        (st = check_at_least(fn, "dilation_h", desc->dilation_h, 1)) ||
        (st = check_at_least(fn, "dilation_w", desc->dilation_w, 1)) ||
        (st = check_at_least(fn, "groups", desc->groups, 1)) ||
        (st = check_layout(fn, desc->layout)))
        return st;
    /* Dilated extent e = dilation (k - 1) + 1; padding must stay below it, or whole output
     * rows would see only padding. */
    int64_t ext_h, ext_w;
    if (__builtin_mul_overflow(desc->dilation_h, desc->kernel_h - 1, &ext_h) ||
        __builtin_mul_overflow(desc->dilation_w, desc->kernel_w - 1, &ext_w) ||
        __builtin_add_overflow(ext_h, 1, &ext_h) || __builtin_add_overflow(ext_w, 1, &ext_w))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: desc dilation %lldx%lld times kernel %lldx%lld overflows", fn,
                        (long long)desc->dilation_h, (long long)desc->dilation_w,
                        (long long)desc->kernel_h, (long long)desc->kernel_w);
    if (desc->pad_h >= ext_h || desc->pad_w >= ext_w)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: desc padding %lldx%lld must be smaller than the dilated kernel "
                        "extent %lldx%lld",
                        fn, (long long)desc->pad_h, (long long)desc->pad_w, (long long)ext_h,
                        (long long)ext_w);

    int nhwc = desc->layout == NEAT_LAYOUT_NHWC;
    const char *w_names = nhwc ? "[K,kh,kw,C/groups]" : "[K,C/groups,kh,kw]";
    if ((st = nm_check_ndim(fn, "x", x, 4, nhwc ? "[N,H,W,C]" : "[N,C,H,W]")) ||
        (st = nm_check_ndim(fn, "w", w, 4, w_names)))
        return st;
    char xs[NM_SHAPE_STR], ws[NM_SHAPE_STR], es[NM_SHAPE_STR];
    int64_t c = x->shape[nhwc ? 3 : 1], k = w->shape[0], groups = desc->groups;
    int64_t h = x->shape[nhwc ? 1 : 2], wd = x->shape[nhwc ? 2 : 3];
    if (c % groups)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: x is %s: %lld channels are not divisible "
                        "by desc->groups %lld",
                        fn, nm_shape_str(x, xs), (long long)c, (long long)groups);
    if (k % groups)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: w is %s: %lld filters are not divisible "
                        "by desc->groups %lld",
                        fn, nm_shape_str(w, ws), (long long)k, (long long)groups);
    int64_t want_w[4] = {k, c / groups, desc->kernel_h, desc->kernel_w};
    if (nhwc) want_w[1] = desc->kernel_h, want_w[2] = desc->kernel_w, want_w[3] = c / groups;
    if (w->shape[1] != want_w[1] || w->shape[2] != want_w[2] || w->shape[3] != want_w[3])
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: w is %s, expected %s = %s "
                        "for x %s, desc kernel %lldx%lld, groups %lld",
                        fn, nm_shape_str(w, ws), nm_dims_str(4, want_w, es), w_names,
                        nm_shape_str(x, xs), (long long)desc->kernel_h, (long long)desc->kernel_w,
                        (long long)groups);

    int overflow = 0;
    int64_t p = out_size(h, desc->pad_h, ext_h, desc->stride_h, &overflow);
    int64_t q = out_size(wd, desc->pad_w, ext_w, desc->stride_w, &overflow);
    if (overflow)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: desc padding %lldx%lld overflows", fn,
                        (long long)desc->pad_h, (long long)desc->pad_w);
    if ((p < 1 && h > 0) || (q < 1 && wd > 0))
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: x is %s: the input padded by %lldx%lld "
                        "is smaller than the dilated kernel %lldx%lld (output would be empty)",
                        fn, nm_shape_str(x, xs), (long long)desc->pad_h, (long long)desc->pad_w,
                        (long long)ext_h, (long long)ext_w);
    /* An empty input (H or W = 0) gives an empty output, as every zero-size tensor does. */
    if (h == 0) p = 0;
    if (wd == 0) q = 0;

    *g = window_geom(x, nhwc, k, p, q, desc->kernel_h, desc->kernel_w, desc->stride_h,
                     desc->stride_w, desc->pad_h, desc->pad_w, desc->dilation_h, desc->dilation_w,
                     groups);
    return NEAT_OK;
}

neat_status nm_pool_geometry(const char *fn, const neat_pool2d_desc *desc, const nm_tensor *x,
                             nm_conv_geom *g) {
    if (!desc) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: desc is NULL", fn);
    neat_status st = check_window(fn, desc->kernel_h, desc->kernel_w, desc->stride_h,
                                  desc->stride_w, desc->pad_h, desc->pad_w);
    if (st || (st = check_layout(fn, desc->layout))) return st;
    /* Padding (-inf) of at most half the kernel keeps every window on at least one real
     * element, as PyTorch requires. */
    if (desc->pad_h > desc->kernel_h / 2 || desc->pad_w > desc->kernel_w / 2)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: desc padding %lldx%lld must be at most half the kernel %lldx%lld", fn,
                        (long long)desc->pad_h, (long long)desc->pad_w, (long long)desc->kernel_h,
                        (long long)desc->kernel_w);
    int nhwc = desc->layout == NEAT_LAYOUT_NHWC;
    if ((st = nm_check_ndim(fn, "x", x, 4, nhwc ? "[N,H,W,C]" : "[N,C,H,W]"))) return st;
    int64_t h = x->shape[nhwc ? 1 : 2], wd = x->shape[nhwc ? 2 : 3];
    int overflow = 0; /* pad <= kernel/2 and kernel is an int64: 2 pad cannot overflow */
    int64_t p = out_size(h, desc->pad_h, desc->kernel_h, desc->stride_h, &overflow);
    int64_t q = out_size(wd, desc->pad_w, desc->kernel_w, desc->stride_w, &overflow);
    char xs[NM_SHAPE_STR];
    if (overflow || (p < 1 && h > 0) || (q < 1 && wd > 0))
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: x is %s: the input padded by %lldx%lld "
                        "is smaller than the kernel %lldx%lld (output would be empty)",
                        fn, nm_shape_str(x, xs), (long long)desc->pad_h, (long long)desc->pad_w,
                        (long long)desc->kernel_h, (long long)desc->kernel_w);
    if (h == 0) p = 0;
    if (wd == 0) q = 0;
    *g = window_geom(x, nhwc, x->shape[nhwc ? 3 : 1], p, q, desc->kernel_h, desc->kernel_w,
                     desc->stride_h, desc->stride_w, desc->pad_h, desc->pad_w, 1, 1, 1);
    return NEAT_OK;
}
