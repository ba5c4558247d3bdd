/*
 * ops_training.c — the public training ops (activations and their gradients, backward of
 * linear, convolution, pooling and softmax, the fused cross-entropy, SGD and Adam):
 * validate every argument, then record an nm_op.
 *
 * Same order of checks as ops_forward.c: command buffer, options that decide which tensors
 * are required (act, optimizer parameters), tensor arguments, shapes, aliasing. Gradient
 * outputs alias nothing: not an input, not another output. Tensors an op does not read
 * (y for gelu, b outside gelu, velocity without momentum) are still validated when given,
 * but not recorded, so destroying them later does not fail the commit.
 */
#include "ops_check.h"

#include <math.h>

static const char *act_name(neat_activation act) {
    static const char *names[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    return names[act]; /* act was checked */
}

/* relu, sigmoid and tanh differentiate from their saved output y; gelu from its input. */
static int act_reads_y(neat_activation act) {
    return act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
}

/* The forward tensor `name` an activation's gradient reads (y for relu/sigmoid/tanh, x for
 * gelu) must be given; the message says why. */
static neat_status check_act_reads(const char *fn, neat_activation act, const char *name,
                                   const neat_tensor *h, int reads) {
    if (!reads || h) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL: act %s reads it", fn, name,
                    act_name(act));
}

/* ---- activations -------------------------------------------------------------------------
 * y = act(x), same shapes, y may be x. */
NEAT_API neat_status neat_activation_forward(neat_cmdbuf *cb, neat_activation act,
                                             const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_activation_forward";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_check_act(fn, act));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(nm_check_same_shape(fn, "y", ty, "x", tx));

    nm_op op = {.kind = NM_OP_ACTIVATION_FORWARD,
                .u.activation_forward = {.x = tx, .out = ty, .act = act}};
    return nm_record(fn, buf, &op);
}

/* dx = dy * act'(.), all of dy's shape: from y for relu/sigmoid/tanh, from x for gelu,
 * a copy of dy for NONE. dx aliases none of x, y, dy. */
NEAT_API neat_status neat_activation_backward(neat_cmdbuf *cb, neat_activation act,
                                              const neat_tensor *x, const neat_tensor *y,
                                              const neat_tensor *dy, neat_tensor *dx) {
    static const char fn[] = "neat_activation_backward";
    nm_cmdbuf *buf;
    nm_tensor *tx, *ty, *tdy, *tdx;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_check_act(fn, act));
    int reads_y = act_reads_y(act), reads_x = act == NEAT_ACT_GELU;
    TRY(check_act_reads(fn, act, "x", x, reads_x));
    TRY(check_act_reads(fn, act, "y", y, reads_y));
    TRY(nm_arg(fn, "x", buf, x, 0, &tx));
    TRY(nm_arg(fn, "y", buf, y, 0, &ty));
    TRY(nm_arg(fn, "dy", buf, dy, 1, &tdy));
    TRY(nm_arg(fn, "dx", buf, dx, 1, &tdx));
    if (tx) TRY(nm_check_same_shape(fn, "x", tx, "dy", tdy));
    if (ty) TRY(nm_check_same_shape(fn, "y", ty, "dy", tdy));
    TRY(nm_check_same_shape(fn, "dx", tdx, "dy", tdy));
    static const char *const in_names[] = {"x", "y", "dy"};
    nm_tensor *ins[] = {tx, ty, tdy};
    TRY(nm_check_no_alias_all(fn, "dx", tdx, 3, in_names, ins));

    nm_op op = {
        .kind = NM_OP_ACTIVATION_BACKWARD,
        .u.activation_backward = {
            .x = reads_x ? tx : NULL, .y = reads_y ? ty : NULL, .dy = tdy, .out = tdx, .act = act}};
    return nm_record(fn, buf, &op);
}

/* ---- linear and convolution backward -----------------------------------------------------
 * Shared by both: the outputs dx, dw, db (any NULL) alias none of the inputs x, w, b, y, dy
 * nor each other. */
static neat_status check_grad_aliases(const char *fn, nm_tensor *const in[5],
                                      nm_tensor *const out[3]) {
    static const char *const in_names[] = {"x", "w", "b", "y", "dy"};
    static const char *const out_names[] = {"dx", "dw", "db"};
    for (int i = 0; i < 3; i++) {
        TRY(nm_check_no_alias_all(fn, out_names[i], out[i], 5, in_names, in));
        TRY(nm_check_no_alias_all(fn, out_names[i], out[i], i, out_names, out));
    }
    return NEAT_OK;
}

/* The arguments both backward ops share, resolved: act and the tensors in the order of
 * the call. y is required when act reads it (relu/sigmoid/tanh). */
typedef struct grad_args {
    nm_tensor *x, *w, *b, *y, *dy, *dx, *dw, *db;
} grad_args;

static neat_status resolve_grad_args(const char *fn, nm_cmdbuf *buf, neat_activation act,
                                     const neat_tensor *const h[8], grad_args *a) {
    static const char *const names[8] = {"x", "w", "b", "y", "dy", "dx", "dw", "db"};
    static const int required[8] = {1, 1, 0, 0, 1, 0, 0, 0};
    TRY(nm_check_act(fn, act));
    TRY(check_act_reads(fn, act, "y", h[3], act_reads_y(act)));
    nm_tensor **out[8] = {&a->x, &a->w, &a->b, &a->y, &a->dy, &a->dx, &a->dw, &a->db};
    for (int i = 0; i < 8; i++) TRY(nm_arg(fn, names[i], buf, h[i], required[i], out[i]));
    return NEAT_OK;
}

/* y and dy have the forward output's shape `ydims`; dx, dw, db those of x, w, b; outputs
 * alias no input nor each other. */
static neat_status check_grad_shapes(const char *fn, const grad_args *a, int ndim,
                                     const int64_t *ydims, const char *ylayout) {
    TRY(nm_check_shape(fn, "dy", a->dy, ndim, ydims, ylayout));
    if (a->y) TRY(nm_check_shape(fn, "y", a->y, ndim, ydims, ylayout));
    if (a->dx) TRY(nm_check_same_shape(fn, "dx", a->dx, "x", a->x));
    if (a->dw) TRY(nm_check_same_shape(fn, "dw", a->dw, "w", a->w));
    if (a->db) TRY(nm_check_shape(fn, "db", a->db, 1, ydims + 1, "[out] of w"));
    nm_tensor *ins[5] = {a->x, a->w, a->b, a->y, a->dy}, *outs[3] = {a->dx, a->dw, a->db};
    return check_grad_aliases(fn, ins, outs);
}

/* The fields both backward ops record from grad_args: b is kept only for gelu (which
 * recomputes the pre-activation), y only for the activations that read it. */
#define GRAD_FIELDS(a, act, accumulate)                                                            \
    .x = (a).x, .w = (a).w, .b = (act) == NEAT_ACT_GELU ? (a).b : NULL,                            \
    .y = act_reads_y(act) ? (a).y : NULL, .dy = (a).dy, .dx = (a).dx, .dw = (a).dw, .db = (a).db,  \
    .act = (act), .accumulate = (accumulate) != 0

/* From dy [N,out] of y = act(x w^T + b): dx [N,in], dw [out,in], db [out]. y [N,out] is
 * required for relu/sigmoid/tanh; gelu recomputes x w^T + b (b as given, NULL = none). */
NEAT_API neat_status neat_linear_backward(neat_cmdbuf *cb, neat_activation act,
                                          const neat_tensor *x, const neat_tensor *w,
                                          const neat_tensor *b, const neat_tensor *y,
                                          const neat_tensor *dy, neat_tensor *dx, neat_tensor *dw,
                                          neat_tensor *db, int accumulate) {
    static const char fn[] = "neat_linear_backward";
    nm_cmdbuf *buf;
    grad_args a;
    nm_linear_dims d;
    TRY(nm_begin(fn, cb, &buf));
    TRY(resolve_grad_args(fn, buf, act, (const neat_tensor *[]){x, w, b, y, dy, dx, dw, db}, &a));
    TRY(nm_check_linear(fn, a.x, a.w, a.b, &d));
    TRY(check_grad_shapes(fn, &a, 2, (int64_t[]){d.n, d.out}, "[N,out] of x and w"));

    nm_op op = {
        .kind = NM_OP_LINEAR_BACKWARD,
        .u.linear_backward = {GRAD_FIELDS(a, act, accumulate), .n = d.n, .in = d.in, .out = d.out}};
    return nm_record(fn, buf, &op);
}

/* From dy [N,K,P,Q] of y = act(conv2d(x, w) + b): dx [N,C,H,W], dw [K,C/groups,kh,kw],
 * db [K]; y, b as in neat_linear_backward. */
NEAT_API neat_status neat_conv2d_backward(neat_cmdbuf *cb, const neat_conv2d_desc *desc,
                                          neat_activation act, const neat_tensor *x,
                                          const neat_tensor *w, const neat_tensor *b,
                                          const neat_tensor *y, const neat_tensor *dy,
                                          neat_tensor *dx, neat_tensor *dw, neat_tensor *db,
                                          int accumulate) {
    static const char fn[] = "neat_conv2d_backward";
    nm_cmdbuf *buf;
    grad_args a;
    nm_conv_geom g;
    TRY(nm_begin(fn, cb, &buf));
    TRY(resolve_grad_args(fn, buf, act, (const neat_tensor *[]){x, w, b, y, dy, dx, dw, db}, &a));
    TRY(nm_check_conv(fn, desc, a.x, a.w, a.b, &g));
    TRY(check_grad_shapes(fn, &a, 4, (int64_t[]){g.n, g.k, g.p, g.q},
                          "[N,K,P,Q] of x, w and desc"));

    nm_op op = {.kind = NM_OP_CONV2D_BACKWARD,
                .u.conv2d_backward = {GRAD_FIELDS(a, act, accumulate), .g = g}};
    return nm_record(fn, buf, &op);
}

/* dx [N,C,H,W] (overwritten) from dy [N,C,P,Q] and the forward's input x. */
NEAT_API neat_status neat_maxpool2d_backward(neat_cmdbuf *cb, const neat_pool2d_desc *desc,
                                             const neat_tensor *x, const neat_tensor *dy,
                                             neat_tensor *dx) {
    static const char fn[] = "neat_maxpool2d_backward";
    nm_cmdbuf *buf;
    nm_tensor *tx, *tdy, *tdx;
    nm_conv_geom g;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "dy", buf, dy, 1, &tdy));
    TRY(nm_arg(fn, "dx", buf, dx, 1, &tdx));
    TRY(nm_pool_geometry(fn, desc, tx, &g));
    TRY(nm_check_shape(fn, "dy", tdy, 4, (int64_t[]){g.n, g.c, g.p, g.q},
                       "[N,C,P,Q] of x and desc"));
    TRY(nm_check_same_shape(fn, "dx", tdx, "x", tx));
    TRY(nm_check_no_alias(fn, "dx", tdx, "x", tx));
    TRY(nm_check_no_alias(fn, "dx", tdx, "dy", tdy));

    nm_op op = {.kind = NM_OP_MAXPOOL2D_BACKWARD,
                .u.maxpool2d_backward = {.x = tx, .dy = tdy, .dx = tdx, .g = g}};
    return nm_record(fn, buf, &op);
}

/* ---- softmax and cross-entropy ----------------------------------------------------------- */

/* dx = y (dy - sum(dy y)) over the last dimension; y, dy, dx of one shape, dx aliases
 * neither (each row's dot product is read after dx starts being written). */
NEAT_API neat_status neat_softmax_backward(neat_cmdbuf *cb, const neat_tensor *y,
                                           const neat_tensor *dy, neat_tensor *dx) {
    static const char fn[] = "neat_softmax_backward";
    nm_cmdbuf *buf;
    nm_tensor *ty, *tdy, *tdx;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(nm_arg(fn, "dy", buf, dy, 1, &tdy));
    TRY(nm_arg(fn, "dx", buf, dx, 1, &tdx));
    TRY(nm_check_same_shape(fn, "dy", tdy, "y", ty));
    TRY(nm_check_same_shape(fn, "dx", tdx, "y", ty));
    TRY(nm_check_no_alias(fn, "dx", tdx, "y", ty));
    TRY(nm_check_no_alias(fn, "dx", tdx, "dy", tdy));

    nm_op op = {.kind = NM_OP_SOFTMAX_BACKWARD,
                .u.softmax_backward = {.y = ty, .dy = tdy, .dx = tdx}};
    nm_rows_cols(ty, &op.u.softmax_backward.rows, &op.u.softmax_backward.cols);
    return nm_record(fn, buf, &op);
}

/* Shared checks of the cross-entropy pair: logits [N,C] with C >= 1 unless N = 0 (a row
 * needs a class for its label), labels [N]. Fills rows, cols. */
static neat_status check_xent_inputs(const char *fn, const nm_tensor *logits,
                                     const nm_tensor *labels, int64_t *rows, int64_t *cols) {
    TRY(nm_check_ndim(fn, "logits", logits, 2, "[N,C]"));
    char ls[NM_SHAPE_STR];
    if (logits->shape[0] > 0 && logits->shape[1] == 0)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: logits is %s: no classes for %lld rows", fn,
                        nm_shape_str(logits, ls), (long long)logits->shape[0]);
    TRY(nm_check_shape(fn, "labels", labels, 1, logits->shape, "[N] of logits"));
    *rows = logits->shape[0];
    *cols = logits->shape[1];
    return NEAT_OK;
}

/* loss (one element, any shape) = mean over rows of -log softmax(logits)[label]. */
NEAT_API neat_status neat_softmax_cross_entropy(neat_cmdbuf *cb, const neat_tensor *logits,
                                                const neat_tensor *labels, neat_tensor *loss) {
    static const char fn[] = "neat_softmax_cross_entropy";
    nm_cmdbuf *buf;
    nm_tensor *tl, *tlab, *tloss;
    int64_t rows, cols;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "logits", buf, logits, 1, &tl));
    TRY(nm_arg(fn, "labels", buf, labels, 1, &tlab));
    TRY(nm_arg(fn, "loss", buf, loss, 1, &tloss));
    TRY(check_xent_inputs(fn, tl, tlab, &rows, &cols));
    if (tloss->numel != 1) {
        char s[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: loss is %s: must have exactly one element",
                        fn, nm_shape_str(tloss, s));
    }
    TRY(nm_check_no_alias(fn, "loss", tloss, "logits", tl));
    TRY(nm_check_no_alias(fn, "loss", tloss, "labels", tlab));

    nm_op op = {
        .kind = NM_OP_SOFTMAX_XENT,
        .u.softmax_xent = {.logits = tl, .labels = tlab, .out = tloss, .rows = rows, .cols = cols}};
    return nm_record(fn, buf, &op);
}

/* dlogits [N,C] = (softmax(logits) - onehot(labels)) / N. */
NEAT_API neat_status neat_softmax_cross_entropy_backward(neat_cmdbuf *cb, const neat_tensor *logits,
                                                         const neat_tensor *labels,
                                                         neat_tensor *dlogits) {
    static const char fn[] = "neat_softmax_cross_entropy_backward";
    nm_cmdbuf *buf;
    nm_tensor *tl, *tlab, *td;
    int64_t rows, cols;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "logits", buf, logits, 1, &tl));
    TRY(nm_arg(fn, "labels", buf, labels, 1, &tlab));
    TRY(nm_arg(fn, "dlogits", buf, dlogits, 1, &td));
    TRY(check_xent_inputs(fn, tl, tlab, &rows, &cols));
    TRY(nm_check_same_shape(fn, "dlogits", td, "logits", tl));
    TRY(nm_check_no_alias(fn, "dlogits", td, "logits", tl));
    TRY(nm_check_no_alias(fn, "dlogits", td, "labels", tlab));

    nm_op op = {.kind = NM_OP_SOFTMAX_XENT_BACKWARD,
                .u.softmax_xent_backward = {
                    .logits = tl, .labels = tlab, .out = td, .rows = rows, .cols = cols}};
    return nm_record(fn, buf, &op);
}

/* ---- optimizers --------------------------------------------------------------------------
 * hyper holds [lr, step], read when the op runs: exactly 2 elements, any shape. */
static neat_status check_hyper(const char *fn, const nm_tensor *hyper) {
    if (hyper->numel == 2) return NEAT_OK;
    char s[NM_SHAPE_STR];
    return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                    "%s: hyper is %s: must have exactly 2 elements "
                    "[lr, step]",
                    fn, nm_shape_str(hyper, s));
}

/* Option `name` must be finite and >= 0 (NaN fails). */
static neat_status check_nonneg(const char *fn, const char *name, float v) {
    TRY(nm_check_finite(fn, name, v));
    if (v >= 0) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is %g: must be >= 0", fn, name, (double)v);
}

/* Momentum SGD (dampening 0): g = grad + wd param; v = momentum v + g;
 * param -= lr (nesterov ? g + momentum v : v). momentum, wd finite and >= 0; nesterov needs
 * momentum > 0; velocity (param's shape) is required exactly when momentum != 0. param and
 * velocity are updated in place and alias no input nor each other. */
NEAT_API neat_status neat_sgd_update(neat_cmdbuf *cb, const neat_sgd_params *p,
                                     const neat_tensor *hyper, neat_tensor *param,
                                     const neat_tensor *grad, neat_tensor *velocity) {
    static const char fn[] = "neat_sgd_update";
    nm_cmdbuf *buf;
    nm_tensor *th, *tp, *tg, *tv;
    TRY(nm_begin(fn, cb, &buf));
    if (!p) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p is NULL", fn);
    TRY(check_nonneg(fn, "p->momentum", p->momentum));
    TRY(check_nonneg(fn, "p->weight_decay", p->weight_decay));
    if (p->nesterov && p->momentum == 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->nesterov needs p->momentum > 0", fn);
    int uses_v = p->momentum != 0;
    TRY(nm_arg(fn, "hyper", buf, hyper, 1, &th));
    TRY(nm_arg(fn, "param", buf, param, 1, &tp));
    TRY(nm_arg(fn, "grad", buf, grad, 1, &tg));
    TRY(nm_arg(fn, "velocity", buf, velocity, uses_v, &tv));
    TRY(check_hyper(fn, th));
    TRY(nm_check_same_shape(fn, "grad", tg, "param", tp));
    if (tv) TRY(nm_check_same_shape(fn, "velocity", tv, "param", tp));
    TRY(nm_check_no_alias(fn, "param", tp, "grad", tg));
    TRY(nm_check_no_alias(fn, "param", tp, "hyper", th));
    if (uses_v) {
        TRY(nm_check_no_alias(fn, "velocity", tv, "param", tp));
        TRY(nm_check_no_alias(fn, "velocity", tv, "grad", tg));
        TRY(nm_check_no_alias(fn, "velocity", tv, "hyper", th));
    }

    nm_op op = {.kind = NM_OP_SGD_UPDATE,
                .u.sgd_update = {
                    .hyper = th, .param = tp, .grad = tg, .velocity = uses_v ? tv : NULL, .p = *p}};
    op.u.sgd_update.p.nesterov = p->nesterov != 0;
    return nm_record(fn, buf, &op);
}

/* Option `name` must lie in [0, 1) (NaN fails). */
static neat_status check_beta(const char *fn, const char *name, float v) {
    if (v >= 0 && v < 1) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is %g: must be in [0, 1)", fn, name,
                    (double)v);
}

/* AdamW on param with moments m, v (all of param's shape). beta1, beta2 in [0, 1) (a beta
 * of 1 makes the bias correction divide by zero), eps finite > 0, wd finite >= 0. param, m
 * and v are updated in place and alias no input nor each other. */
NEAT_API neat_status neat_adam_update(neat_cmdbuf *cb, const neat_adam_params *p,
                                      const neat_tensor *hyper, neat_tensor *param,
                                      const neat_tensor *grad, neat_tensor *m, neat_tensor *v) {
    static const char fn[] = "neat_adam_update";
    nm_cmdbuf *buf;
    nm_tensor *th, *tp, *tg, *tm, *tv;
    TRY(nm_begin(fn, cb, &buf));
    if (!p) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p is NULL", fn);
    TRY(check_beta(fn, "p->beta1", p->beta1));
    TRY(check_beta(fn, "p->beta2", p->beta2));
    TRY(nm_check_finite(fn, "p->eps", p->eps));
    if (!(p->eps > 0))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->eps is %g: must be > 0", fn,
                        (double)p->eps);
    TRY(check_nonneg(fn, "p->weight_decay", p->weight_decay));
    TRY(nm_arg(fn, "hyper", buf, hyper, 1, &th));
    TRY(nm_arg(fn, "param", buf, param, 1, &tp));
    TRY(nm_arg(fn, "grad", buf, grad, 1, &tg));
    TRY(nm_arg(fn, "m", buf, m, 1, &tm));
    TRY(nm_arg(fn, "v", buf, v, 1, &tv));
    TRY(check_hyper(fn, th));
    TRY(nm_check_same_shape(fn, "grad", tg, "param", tp));
    TRY(nm_check_same_shape(fn, "m", tm, "param", tp));
    TRY(nm_check_same_shape(fn, "v", tv, "param", tp));
    static const char *const names[] = {"param", "m", "v", "grad", "hyper"};
    nm_tensor *all[] = {tp, tm, tv, tg, th};
    for (int o = 0; o < 3; o++) /* each output against everything listed after it */
        TRY(nm_check_no_alias_all(fn, names[o], all[o], 5 - o - 1, names + o + 1, all + o + 1));

    nm_op op = {.kind = NM_OP_ADAM_UPDATE,
                .u.adam_update = {.hyper = th, .param = tp, .grad = tg, .m = tm, .v = tv, .p = *p}};
    return nm_record(fn, buf, &op);
}
