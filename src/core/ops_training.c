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
#include <stdio.h>
#include <stdlib.h>

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
    if (a->db) TRY(nm_check_shape(fn, "db", a->db, 1, a->w->shape, "[out] of w"));
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
 * db [K] (NHWC: [N,P,Q,K], [N,H,W,C], [K,kh,kw,C/groups]); y, b as in neat_linear_backward. */
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
    int64_t yd[4];
    nm_image_dims(&g, g.k, g.p, g.q, yd);
    TRY(check_grad_shapes(fn, &a, 4, yd,
                          g.nhwc ? "[N,P,Q,K] of x, w and desc" : "[N,K,P,Q] of x, w and desc"));

    nm_op op = {.kind = NM_OP_CONV2D_BACKWARD,
                .u.conv2d_backward = {GRAD_FIELDS(a, act, accumulate), .g = g}};
    return nm_record(fn, buf, &op);
}

/* dx [N,C,H,W] (overwritten) from dy [N,C,P,Q] and the forward's input x (NHWC: [N,H,W,C]
 * from [N,P,Q,C]). */
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
    int64_t yd[4];
    nm_image_dims(&g, g.c, g.p, g.q, yd);
    TRY(nm_check_shape(fn, "dy", tdy, 4, yd,
                       g.nhwc ? "[N,P,Q,C] of x and desc" : "[N,C,P,Q] of x and desc"));
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

/* A tensor of the optimizers' state (master, velocity, m, v, hyper, scaler) must be float32;
 * the message names it and its dtype. */
static neat_status check_f32(const char *fn, const char *name, const nm_tensor *t) {
    if (!t || t->dtype == NEAT_F32) return NEAT_OK;
    return nm_error(NEAT_ERR_DTYPE_MISMATCH, "%s: %s is %s: must be f32", fn, name,
                    neat_dtype_name(t->dtype));
}

/* A loss scaler: float32, exactly 3 elements [scale, found_inf, good steps]. */
static neat_status check_scaler(const char *fn, const nm_tensor *scaler) {
    if (!scaler) return NEAT_OK;
    TRY(check_f32(fn, "scaler", scaler));
    if (scaler->numel == 3) return NEAT_OK;
    char s[NM_SHAPE_STR];
    return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                    "%s: scaler is %s: must have exactly 3 elements [scale, found_inf, good]", fn,
                    nm_shape_str(scaler, s));
}

/* The tensors of an optimizer step, in the order of names[]: hyper, scaler, the weights
 * (master, or "param" in the plain calls), grad, the state (velocity, or m and v), then
 * the rounded copy param. Shapes: all of the weights' shape. Float32: all but grad and
 * param (in the plain calls nm_dtype_check words it, as before). The outputs (the
 * weights, the state, param) alias nothing: alias[] lists the slots outputs first, each
 * checked against every slot after it (the order keeps the plain calls' messages). */
typedef struct opt_tensors {
    int n, nout;
    int unread; /* a slot validated but not read (velocity without momentum), or -1 */
    const char *names[7];
    nm_tensor *t[7];
    int alias[7];
} opt_tensors;

static neat_status check_opt_tensors(const char *fn, const opt_tensors *o, int mixed) {
    nm_tensor *w = o->t[2];
    TRY(check_hyper(fn, o->t[0]));
    if (mixed) {
        for (int i = 0; i < o->n; i++)
            if (i != 3 && i != o->n - 1) TRY(check_f32(fn, o->names[i], o->t[i]));
        TRY(check_scaler(fn, o->t[1]));
    }
    for (int i = 3; i < o->n; i++)
        if (o->t[i]) TRY(nm_check_same_shape(fn, o->names[i], o->t[i], o->names[2], w));
    for (int k = 0; k < o->nout; k++) {
        int i = o->alias[k];
        if (i == o->unread) continue;
        for (int j = k + 1; j < o->n; j++)
            if (o->alias[j] != o->unread)
                TRY(nm_check_no_alias(fn, o->names[i], o->t[i], o->names[o->alias[j]],
                                      o->t[o->alias[j]]));
    }
    return NEAT_OK;
}

static neat_status sgd_params_check(const char *fn, const neat_sgd_params *p) {
    if (!p) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p is NULL", fn);
    TRY(check_nonneg(fn, "p->momentum", p->momentum));
    TRY(check_nonneg(fn, "p->weight_decay", p->weight_decay));
    if (p->nesterov && p->momentum == 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->nesterov needs p->momentum > 0", fn);
    return NEAT_OK;
}

/* Both SGD calls: mixed = 0 is neat_sgd_update (scaler, param NULL; master named "param"). */
static neat_status record_sgd(const char *fn, neat_cmdbuf *cb, const neat_sgd_params *p,
                              const neat_tensor *hyper, const neat_tensor *scaler,
                              neat_tensor *master, const neat_tensor *grad, neat_tensor *velocity,
                              neat_tensor *param, int mixed) {
    nm_cmdbuf *buf;
    TRY(nm_begin(fn, cb, &buf));
    TRY(sgd_params_check(fn, p));
    int uses_v = p->momentum != 0;
    opt_tensors o = {
        .n = 6,
        .nout = 3,
        .unread = uses_v ? -1 : 4,
        .names = {"hyper", "scaler", mixed ? "master" : "param", "grad", "velocity", "param"},
        .alias = {4, 2, 5, 3, 0, 1}};
    const neat_tensor *h[6] = {hyper, scaler, master, grad, velocity, param};
    const int required[6] = {1, 0, 1, 1, uses_v, 0};
    for (int i = 0; i < 6; i++) TRY(nm_arg(fn, o.names[i], buf, h[i], required[i], &o.t[i]));
    TRY(check_opt_tensors(fn, &o, mixed));

    nm_op op = {.kind = NM_OP_SGD_UPDATE,
                .u.sgd_update = {.hyper = o.t[0],
                                 .scaler = o.t[1],
                                 .master = o.t[2],
                                 .grad = o.t[3],
                                 .velocity = uses_v ? o.t[4] : NULL,
                                 .param = o.t[5],
                                 .p = *p,
                                 .mixed = mixed}};
    op.u.sgd_update.p.nesterov = p->nesterov != 0;
    return nm_record(fn, buf, &op);
}

/* Momentum SGD (dampening 0): g = grad + wd param; v = momentum v + g;
 * param -= lr (nesterov ? g + momentum v : v). momentum, wd finite and >= 0; nesterov needs
 * momentum > 0; velocity (param's shape) is required exactly when momentum != 0. param and
 * velocity are updated in place and alias no input nor each other. */
NEAT_API neat_status neat_sgd_update(neat_cmdbuf *cb, const neat_sgd_params *p,
                                     const neat_tensor *hyper, neat_tensor *param,
                                     const neat_tensor *grad, neat_tensor *velocity) {
    return record_sgd("neat_sgd_update", cb, p, hyper, NULL, param, grad, velocity, NULL, 0);
}

/* The same on float32 master weights from a grad of any dtype (/ scaler[0], skipped when
 * scaler[1] != 0), then param = master rounded to param's dtype. */
NEAT_API neat_status neat_sgd_update_mixed(neat_cmdbuf *cb, const neat_sgd_params *p,
                                           const neat_tensor *hyper, const neat_tensor *scaler,
                                           neat_tensor *master, const neat_tensor *grad,
                                           neat_tensor *velocity, neat_tensor *param) {
    return record_sgd("neat_sgd_update_mixed", cb, p, hyper, scaler, master, grad, velocity, param,
                      1);
}

/* Option `name` must lie in [0, 1) (NaN fails). */
static neat_status check_beta(const char *fn, const char *name, float v) {
    if (v >= 0 && v < 1) return NEAT_OK;
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is %g: must be in [0, 1)", fn, name,
                    (double)v);
}

static neat_status adam_params_check(const char *fn, const neat_adam_params *p) {
    if (!p) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p is NULL", fn);
    TRY(check_beta(fn, "p->beta1", p->beta1));
    TRY(check_beta(fn, "p->beta2", p->beta2));
    TRY(nm_check_finite(fn, "p->eps", p->eps));
    if (!(p->eps > 0))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->eps is %g: must be > 0", fn,
                        (double)p->eps);
    return check_nonneg(fn, "p->weight_decay", p->weight_decay);
}

/* Both Adam calls, as record_sgd. */
static neat_status record_adam(const char *fn, neat_cmdbuf *cb, const neat_adam_params *p,
                               const neat_tensor *hyper, const neat_tensor *scaler,
                               neat_tensor *master, const neat_tensor *grad, neat_tensor *m,
                               neat_tensor *v, neat_tensor *param, int mixed) {
    nm_cmdbuf *buf;
    TRY(nm_begin(fn, cb, &buf));
    TRY(adam_params_check(fn, p));
    opt_tensors o = {
        .n = 7,
        .nout = 4,
        .unread = -1,
        .names = {"hyper", "scaler", mixed ? "master" : "param", "grad", "m", "v", "param"},
        .alias = {2, 4, 5, 6, 3, 0, 1}};
    const neat_tensor *h[7] = {hyper, scaler, master, grad, m, v, param};
    const int required[7] = {1, 0, 1, 1, 1, 1, 0};
    for (int i = 0; i < 7; i++) TRY(nm_arg(fn, o.names[i], buf, h[i], required[i], &o.t[i]));
    TRY(check_opt_tensors(fn, &o, mixed));

    nm_op op = {.kind = NM_OP_ADAM_UPDATE,
                .u.adam_update = {.hyper = o.t[0],
                                  .scaler = o.t[1],
                                  .master = o.t[2],
                                  .grad = o.t[3],
                                  .m = o.t[4],
                                  .v = o.t[5],
                                  .param = o.t[6],
                                  .p = *p,
                                  .mixed = mixed}};
    return nm_record(fn, buf, &op);
}

/* AdamW on param with moments m, v (all of param's shape). beta1, beta2 in [0, 1) (a beta
 * of 1 makes the bias correction divide by zero), eps finite > 0, wd finite >= 0. param, m
 * and v are updated in place and alias no input nor each other. */
NEAT_API neat_status neat_adam_update(neat_cmdbuf *cb, const neat_adam_params *p,
                                      const neat_tensor *hyper, neat_tensor *param,
                                      const neat_tensor *grad, neat_tensor *m, neat_tensor *v) {
    return record_adam("neat_adam_update", cb, p, hyper, NULL, param, grad, m, v, NULL, 0);
}

NEAT_API neat_status neat_adam_update_mixed(neat_cmdbuf *cb, const neat_adam_params *p,
                                            const neat_tensor *hyper, const neat_tensor *scaler,
                                            neat_tensor *master, const neat_tensor *grad,
                                            neat_tensor *m, neat_tensor *v, neat_tensor *param) {
    return record_adam("neat_adam_update_mixed", cb, p, hyper, scaler, master, grad, m, v, param,
                       1);
}

/* ---- dynamic loss scaling ----------------------------------------------------------------
 * The scaler (float32 [scale, found_inf, good]) is read and written only by recorded ops. */

/* y = x * scaler[0]; x, y of one shape and dtype, y may be x. */
NEAT_API neat_status neat_loss_scale(neat_cmdbuf *cb, const neat_tensor *scaler,
                                     const neat_tensor *x, neat_tensor *y) {
    static const char fn[] = "neat_loss_scale";
    nm_cmdbuf *buf;
    nm_tensor *ts, *tx, *ty;
    TRY(nm_begin(fn, cb, &buf));
    TRY(nm_arg(fn, "scaler", buf, scaler, 1, &ts));
    TRY(nm_arg(fn, "x", buf, x, 1, &tx));
    TRY(nm_arg(fn, "y", buf, y, 1, &ty));
    TRY(check_scaler(fn, ts));
    TRY(nm_check_same_shape(fn, "y", ty, "x", tx));
    if (tx->dtype != ty->dtype)
        return nm_error(NEAT_ERR_DTYPE_MISMATCH, "%s: x is %s, y is %s: must be of one dtype", fn,
                        neat_dtype_name(tx->dtype), neat_dtype_name(ty->dtype));
    TRY(nm_check_no_alias(fn, "y", ty, "scaler", ts));

    nm_op op = {.kind = NM_OP_LOSS_SCALE, .u.loss_scale = {.scaler = ts, .x = tx, .y = ty}};
    return nm_record(fn, buf, &op);
}

/* scaler[1] = any element of tensors[0..n) not finite; one op over the list. */
NEAT_API neat_status neat_loss_scale_check(neat_cmdbuf *cb, const neat_tensor *const *tensors,
                                           int n, neat_tensor *scaler) {
    static const char fn[] = "neat_loss_scale_check";
    nm_cmdbuf *buf;
    nm_tensor *ts;
    TRY(nm_begin(fn, cb, &buf));
    if (n < 0 || n > NEAT_LOSS_SCALE_CHECK_MAX)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: n is %d: must be in [0, %d]", fn, n,
                        NEAT_LOSS_SCALE_CHECK_MAX);
    if (n > 0 && !tensors) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: tensors is NULL", fn);
    TRY(nm_arg(fn, "scaler", buf, scaler, 1, &ts));
    TRY(check_scaler(fn, ts));
    nm_tensor **list = n ? malloc((size_t)n * sizeof *list) : NULL;
    if (n && !list) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    neat_status st = NEAT_OK;
    char arg[32];
    for (int i = 0; i < n && !st; i++) {
        snprintf(arg, sizeof arg, "tensors[%d]", i);
        st = nm_arg(fn, arg, buf, tensors[i], 1, &list[i]);
        if (!st) st = nm_check_no_alias(fn, "scaler", ts, arg, list[i]);
    }
    if (st) {
        free(list);
        return st;
    }
    nm_op op = {.kind = NM_OP_LOSS_SCALE_CHECK, .u.loss_scale_check = {.scaler = ts}};
    op.list = list;
    op.nlist = n;
    return nm_record(fn, buf, &op); /* owns list from here */
}

/* Backoff after a step with non-finite gradients, growth after growth_interval good ones. */
NEAT_API neat_status neat_loss_scale_update(neat_cmdbuf *cb, const neat_loss_scale_params *p,
                                            neat_tensor *scaler) {
    static const char fn[] = "neat_loss_scale_update";
    nm_cmdbuf *buf;
    nm_tensor *ts;
    TRY(nm_begin(fn, cb, &buf));
    if (!p) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p is NULL", fn);
    TRY(nm_check_finite(fn, "p->growth_factor", p->growth_factor));
    if (!(p->growth_factor >= 1))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->growth_factor is %g: must be >= 1", fn,
                        (double)p->growth_factor);
    if (!(p->backoff_factor > 0 && p->backoff_factor <= 1))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->backoff_factor is %g: must be in (0, 1]",
                        fn, (double)p->backoff_factor);
    if (p->growth_interval < 1)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: p->growth_interval is %d: must be >= 1", fn,
                        p->growth_interval);
    TRY(nm_arg(fn, "scaler", buf, scaler, 1, &ts));
    TRY(check_scaler(fn, ts));

    nm_op op = {.kind = NM_OP_LOSS_SCALE_UPDATE, .u.loss_scale_update = {.scaler = ts, .p = *p}};
    return nm_record(fn, buf, &op);
}
