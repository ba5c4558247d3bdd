/*
 * ops_check.h — checks shared by the op recorders (ops_forward.c, ops_training.c):
 * exact shapes, finite options, activations, aliasing, and the geometry of convolution and
 * pooling. Each returns NEAT_OK, or an error status with a message that names the public
 * function `fn`, the argument and the shapes involved.
 */
#ifndef NEATML_OPS_CHECK_H
#define NEATML_OPS_CHECK_H

#include "internal.h"

/* Return the status of a check that failed (its message is already set). */
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        neat_status st_ = (expr);                                                                  \
        if (st_ != NEAT_OK) return st_;                                                            \
    } while (0)

/* Format a raw shape as nm_shape_str does ("2x5", "[]" for a scalar); buf of NM_SHAPE_STR. */
const char *nm_dims_str(int ndim, const int64_t *dims, char *buf);

/* Product of dims[from..to) (1 when empty). A live tensor's whole shape fits in int64, but
 * a zero-size tensor's other sizes may not: the product saturates at INT64_MAX instead of
 * overflowing (it is then multiplied by 0 wherever it counts elements). */
int64_t nm_dims_prod(const int64_t *dims, int from, int to);

/* A tensor seen as rows x cols with cols its last dimension (a 0-D tensor is 1 x 1). */
void nm_rows_cols(const nm_tensor *t, int64_t *rows, int64_t *cols);

/* SHAPE_MISMATCH unless t has exactly `ndim` dimensions; `layout` names them, e.g.
 * "[N,C,H,W]", for the message. */
neat_status nm_check_ndim(const char *fn, const char *arg, const nm_tensor *t, int ndim,
                          const char *layout);

/* SHAPE_MISMATCH unless t's shape is exactly dims[0..ndim); `layout` says where the
 * expected shape comes from, e.g. "[N,out]". */
neat_status nm_check_shape(const char *fn, const char *arg, const nm_tensor *t, int ndim,
                           const int64_t *dims, const char *layout);

/* SHAPE_MISMATCH unless t has ref's shape. */
neat_status nm_check_same_shape(const char *fn, const char *arg, const nm_tensor *t,
                                const char *ref_name, const nm_tensor *ref);

/* INVALID_ARGUMENT unless value is finite. */
neat_status nm_check_finite(const char *fn, const char *name, float value);

/* INVALID_ARGUMENT unless act is one of neat_activation's values. */
neat_status nm_check_act(const char *fn, neat_activation act);

/* nm_no_alias for optional arguments: NULL tensors and empty ones (no memory, nothing
 * computed) never alias. */
neat_status nm_check_no_alias(const char *fn, const char *out_name, const nm_tensor *out,
                              const char *in_name, const nm_tensor *in);

/* out must alias none of the n tensors ins[] (names in names[]); NULL entries are skipped. */
neat_status nm_check_no_alias_all(const char *fn, const char *out_name, const nm_tensor *out, int n,
                                  const char *const *names, nm_tensor *const *ins);

/* The shapes linear forward and backward share: x [N,in], w [out,in], b [out] (optional). */
typedef struct nm_linear_dims {
    int64_t n, in, out;
} nm_linear_dims;
neat_status nm_check_linear(const char *fn, const nm_tensor *x, const nm_tensor *w,
                            const nm_tensor *b, nm_linear_dims *d);

/* What conv2d forward and backward share: nm_conv_geometry, and b [K] (optional). */
neat_status nm_check_conv(const char *fn, const neat_conv2d_desc *desc, const nm_tensor *x,
                          const nm_tensor *w, const nm_tensor *b, nm_conv_geom *g);

/* Validate a convolution: the descriptor's options, x [N,C,H,W], w [K,C/groups,kh,kw] (NHWC
 * layout: [N,H,W,C], [K,kh,kw,C/groups]), and an output of at least 1x1 unless H or W is 0;
 * fill g (P, Q as in neat_conv2d_forward). */
neat_status nm_conv_geometry(const char *fn, const neat_conv2d_desc *desc, const nm_tensor *x,
                             const nm_tensor *w, nm_conv_geom *g);

/* Validate a max pooling: the descriptor's options, x [N,C,H,W] (NHWC: [N,H,W,C]) and an
 * output of at least 1x1 unless H or W is 0; fill g with k = c, dilation 1 and one group. */
neat_status nm_pool_geometry(const char *fn, const neat_pool2d_desc *desc, const nm_tensor *x,
                             nm_conv_geom *g);

/* The shape of an image tensor of g's batch and layout: [N,c,h,w] or [N,h,w,c]. */
void nm_image_dims(const nm_conv_geom *g, int64_t c, int64_t h, int64_t w, int64_t dims[4]);

#endif
