/*
 * elementwise.m — add and mul (same shape, or one row broadcast over every row), scale, fill and
 * the
 * activations forward and backward, each a small cached MPSGraph over the whole tensor
 * (seen as one dimension, or [rows, cols] for the broadcast add). In place (out = an input)
 * goes through a scratch slot and a blit (graph.m). The activation math is graph.m's:
 * relu keeps NaN (x < 0 ? 0 : x), gelu is the tanh form, as neatml.h says.
 * fill: a blit when the value's bytes are all zero, else a constant graph.
 */
#import "metal.h"

#include <string.h>

/* add and mul: one graph per op, shapes and broadcast. */
static neat_status pair(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, const nm_add_args *a,
                        int mul) {
    int64_t rows = a->rows, cols = a->cols;
    int bc = a->broadcast != 0;
    if (rows * cols == 0) return NEAT_OK;
    NSString *key = [NSString stringWithFormat:@"%s:%lld:%lld:%d", mul ? "mul" : "add",
                                               (long long)rows, (long long)cols, bc];
    NMGraph *g = metal_cached(dev, op, key, mul ? "the mul graph" : "the add graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sa = METAL_SHAPE(rows, cols), *sb = bc ? METAL_SHAPE(1, cols) : sa;
      MPSGraphTensor *x = metal_input(m, sa), *y = metal_input(m, sb);
      MPSGraphTensor *r = mul ? [m multiplicationWithPrimaryTensor:x secondaryTensor:y name:nil]
                              : [m additionWithPrimaryTensor:x secondaryTensor:y name:nil];
      return metal_graph(m, @[ x, y ], @[ sa, sb ], @[ r ], @[ sa ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->a->data, a->b->data}, *out[] = {a->out->data};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_add(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair(dev, cb, op, &op->u.add, 0);
}

neat_status metal_mul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair(dev, cb, op, &op->u.mul, 1);
}

neat_status metal_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_scale_args *a = &op->u.scale;
    return metal_scale_into(dev, cb, op, a->x->data, a->out->data, a->x->numel, a->alpha);
}

neat_status metal_fill(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_fill_args *a = &op->u.fill;
    int64_t n = a->t->numel;
    float value = a->value;
    if (n == 0) return NEAT_OK;
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if (bits == 0) /* +0 in any dtype (the only fill metal_op_check lets through on half) */
        return metal_zero(dev, op, a->t->data, (size_t)n * neat_dtype_size(a->t->dtype));
    NSString *key = [NSString stringWithFormat:@"fill:%lld:%08x", (long long)n, bits];
    NMGraph *g = metal_cached(dev, op, key, "the fill graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n);
      MPSGraphTensor *c = [m constantWithScalar:value shape:s dataType:MPSDataTypeFloat32];
      return metal_graph(m, @[], @[], @[ [m identityWithTensor:c name:nil] ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *out[] = {a->t->data};
    return metal_run(dev, cb, op, g, NULL, out);
}

neat_status metal_activation_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_activation_forward_args *a = &op->u.activation_forward;
    int64_t n = a->x->numel;
    neat_activation act = a->act;
    if (n == 0) return NEAT_OK;
    if (act == NEAT_ACT_NONE)
        return metal_copy(dev, op, a->out->data, a->x->data, (size_t)n * sizeof(float));
    NSString *key = [NSString stringWithFormat:@"act:%lld:%s", (long long)n, metal_act_name(act)];
    NMGraph *g = metal_cached(dev, op, key, "the activation graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n);
      MPSGraphTensor *x = metal_input(m, s);
      return metal_graph(m, @[ x ], @[ s ], @[ metal_act(m, act, x) ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data}, *out[] = {a->out->data};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_activation_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_activation_backward_args *a = &op->u.activation_backward;
    int64_t n = a->dy->numel;
    neat_activation act = a->act;
    if (n == 0) return NEAT_OK;
    if (act == NEAT_ACT_NONE)
        return metal_copy(dev, op, a->out->data, a->dy->data, (size_t)n * sizeof(float));
    int gelu = act == NEAT_ACT_GELU;
    NSString *key =
        [NSString stringWithFormat:@"act_bwd:%lld:%s", (long long)n, metal_act_name(act)];
    NMGraph *g = metal_cached(dev, op, key, "the activation backward graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n);
      MPSGraphTensor *xy = metal_input(m, s), *dy = metal_input(m, s); /* x for gelu, else y */
      MPSGraphTensor *dx = metal_act_grad(m, act, gelu ? xy : nil, gelu ? nil : xy, dy);
      return metal_graph(m, @[ xy, dy ], @[ s, s ], @[ dx ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {gelu ? a->x->data : a->y->data, a->dy->data}, *out[] = {a->out->data};
    return metal_run(dev, cb, op, g, in, out);
}
