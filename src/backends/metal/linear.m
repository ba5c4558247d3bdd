/*
 * linear.m — y = act(x w^T + b) and its gradients, each one cached MPSGraph.
 *
 * Layout: x [n,in], w [out,in], b [out], y and dy [n,out]; row-major float32.
 * Forward: matrixMultiplication(x, transpose(w)) + b, then the activation written with
 * MPSGraph arithmetic (graph.m: relu keeps NaN, gelu is the tanh form), all in one graph
 * that MPSGraph fuses. Apple's MPSMatrixFullyConnected takes its weights as [in,out] with no
 * transpose flag and its MPSCNNNeuronTypeGeLU is the erf form (not neatml's tanh form), so it cannot take
 * neatml's w [out,in] as it is; the graph does the transpose inside the matrix product.
 * Backward: dz = dy act'(.) (from y, or from z = x w^T + b recomputed for gelu), then
 * dx = dz w, dw = dz^T x, db = sum over rows of dz; with accumulate the old gradient is an
 * input of the graph and the result is old + new. Outputs not asked for are not computed.
 */
#import "metal.h"

neat_status metal_linear_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_linear_forward_args *a = &op->u.linear_forward;
    int64_t n = a->n, in = a->in, out = a->out;
    if (n * out == 0) return NEAT_OK; /* in = 0 with n*out > 0 is refused by op_check */
    int bias = a->b != NULL;
    neat_activation act = a->act;
    NSString *key =
        [NSString stringWithFormat:@"linear:%lld:%lld:%lld:%d:%s", (long long)n, (long long)in,
                                   (long long)out, bias, metal_act_name(act)];
    NMGraph *g = metal_cached(dev, op, key, "the linear forward graph", ^id {
      MPSGraph *gr = [MPSGraph new];
      MPSShape *sx = METAL_SHAPE(n, in), *sw = METAL_SHAPE(out, in), *sb = METAL_SHAPE(out),
               *sy = METAL_SHAPE(n, out);
      MPSGraphTensor *x = metal_input(gr, sx), *w = metal_input(gr, sw);
      MPSGraphTensor *z = [gr matrixMultiplicationWithPrimaryTensor:x
                                                    secondaryTensor:[gr transposeTensor:w
                                                                              dimension:0
                                                                          withDimension:1
                                                                                   name:nil]
                                                               name:nil];
      NSMutableArray *ins = [NSMutableArray arrayWithObjects:x, w, nil];
      NSMutableArray *shapes = [NSMutableArray arrayWithObjects:sx, sw, nil];
      if (bias) {
          MPSGraphTensor *b = metal_input(gr, sb);
          z = [gr additionWithPrimaryTensor:z secondaryTensor:b name:nil];
          [ins addObject:b];
          [shapes addObject:sb];
      }
      return metal_graph(gr, ins, shapes, @[ metal_act(gr, act, z) ], @[ sy ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *inputs[] = {a->x->data, a->w->data, bias ? a->b->data : NULL};
    void *outputs[] = {a->y->data};
    return metal_run(dev, cb, op, g, inputs, outputs);
}

neat_status metal_linear_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_linear_backward_args *a = &op->u.linear_backward;
    int64_t n = a->n, in = a->in, out = a->out;
    int acc = a->accumulate != 0;
    neat_activation act = a->act;
    /* Empty products: the gradients that are sums over nothing are 0 (or left as they are). */
    if (n == 0 || out == 0) {
        if (acc) return NEAT_OK;
        neat_status st = NEAT_OK;
        if (a->dx && n * in)
            st = metal_zero(dev, op, a->dx->data, (size_t)(n * in) * sizeof(float));
        if (!st && a->dw && out * in)
            st = metal_zero(dev, op, a->dw->data, (size_t)(out * in) * sizeof(float));
        if (!st && a->db && out) st = metal_zero(dev, op, a->db->data, (size_t)out * sizeof(float));
        return st;
    }
    metal_layer l = {.x = a->x,
                     .w = a->w,
                     .y = a->y,
                     .dy = a->dy,
                     .b = a->b,
                     .dx = in > 0 ? a->dx : NULL,
                     .dw = in > 0 ? a->dw : NULL,
                     .db = a->db,
                     .act = act,
                     .acc = acc};
    if (!l.dx && !l.dw && !l.db) return NEAT_OK;
    NSString *key = [NSString
        stringWithFormat:@"linear_bwd:%lld:%lld:%lld", (long long)n, (long long)in, (long long)out];
    MPSGraphTensor * (^wt)(MPSGraph *, MPSGraphTensor *) = ^(MPSGraph *m, MPSGraphTensor *t) {
      return [m transposeTensor:t dimension:0 withDimension:1 name:nil];
    };
    return metal_layer_backward(
        dev, cb, op, &l, key, "the linear backward graph", METAL_SHAPE(n, in), METAL_SHAPE(out, in),
        METAL_SHAPE(out), METAL_SHAPE(n, out),
        ^(MPSGraph *m, MPSGraphTensor *x, MPSGraphTensor *w, MPSGraphTensor *b) {
          MPSGraphTensor *z = [m matrixMultiplicationWithPrimaryTensor:x
                                                       secondaryTensor:wt(m, w)
                                                                  name:nil];
          return b ? [m additionWithPrimaryTensor:z secondaryTensor:b name:nil] : z;
        },
        ^(MPSGraph *m, int i, MPSGraphTensor *dz, MPSGraphTensor *x, MPSGraphTensor *w) {
          if (i == 0)
              return [m matrixMultiplicationWithPrimaryTensor:dz secondaryTensor:w name:nil];
          if (i == 1)
              return [m matrixMultiplicationWithPrimaryTensor:wt(m, dz) secondaryTensor:x name:nil];
          return [m reshapeTensor:[m reductionSumWithTensor:dz axis:0 name:nil]
                        withShape:METAL_SHAPE(out)
                             name:nil];
        });
}
