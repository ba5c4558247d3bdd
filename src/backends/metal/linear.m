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
    int want_dx = a->dx && in > 0, want_dw = a->dw && in > 0, want_db = a->db != NULL;
    if (!want_dx && !want_dw && !want_db) return NEAT_OK;
    int gelu = act == NEAT_ACT_GELU, bias = gelu && a->b;
    int need_x = want_dw || gelu, need_w = want_dx || gelu, need_y = act != NEAT_ACT_NONE && !gelu;
    NSString *key = [NSString
        stringWithFormat:@"linear_bwd:%lld:%lld:%lld:%s:%d%d%d:%d:%d", (long long)n, (long long)in,
                         (long long)out, metal_act_name(act), want_dx, want_dw, want_db, bias, acc];
    NMGraph *g = metal_cached(dev, op, key, "the linear backward graph", ^id {
      MPSGraph *gr = [MPSGraph new];
      MPSShape *sx = METAL_SHAPE(n, in), *sw = METAL_SHAPE(out, in), *sb = METAL_SHAPE(out),
               *sy = METAL_SHAPE(n, out);
      NSMutableArray *ins = [NSMutableArray array], *ishapes = [NSMutableArray array];
      NSMutableArray *outs = [NSMutableArray array], *oshapes = [NSMutableArray array];
      MPSGraphTensor *x = nil, *w = nil, *y = nil, *z = nil;
#define INPUT(var, shape)                                                                          \
    do {                                                                                           \
        var = metal_input(gr, shape);                                                              \
        [ins addObject:var];                                                                       \
        [ishapes addObject:shape];                                                                 \
    } while (0)
      if (need_x) INPUT(x, sx);
      if (need_w) INPUT(w, sw);
      if (need_y) INPUT(y, sy);
      MPSGraphTensor *dy;
      INPUT(dy, sy);
      if (gelu) {
          z = [gr matrixMultiplicationWithPrimaryTensor:x
                                        secondaryTensor:[gr transposeTensor:w
                                                                  dimension:0
                                                              withDimension:1
                                                                       name:nil]
                                                   name:nil];
          if (bias) {
              MPSGraphTensor *b;
              INPUT(b, sb);
              z = [gr additionWithPrimaryTensor:z secondaryTensor:b name:nil];
          }
      }
      MPSGraphTensor *dz = metal_act_grad(gr, act, z, y, dy);
      MPSGraphTensor *r[3] = {nil, nil, nil};
      MPSShape *rs[3] = {sx, sw, sb};
      if (want_dx) r[0] = [gr matrixMultiplicationWithPrimaryTensor:dz secondaryTensor:w name:nil];
      if (want_dw)
          r[1] = [gr matrixMultiplicationWithPrimaryTensor:[gr transposeTensor:dz
                                                                     dimension:0
                                                                 withDimension:1
                                                                          name:nil]
                                           secondaryTensor:x
                                                      name:nil];
      if (want_db)
          r[2] = [gr reshapeTensor:[gr reductionSumWithTensor:dz axis:0 name:nil]
                         withShape:sb
                              name:nil];
      for (int i = 0; i < 3; i++) {
          if (!r[i]) continue;
          if (acc) {
              MPSGraphTensor *old;
              INPUT(old, rs[i]);
              r[i] = [gr additionWithPrimaryTensor:old secondaryTensor:r[i] name:nil];
          }
          [outs addObject:r[i]];
          [oshapes addObject:rs[i]];
      }
#undef INPUT
      return metal_graph(gr, ins, ishapes, outs, oshapes);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    /* the same order as the graph's placeholders and results */
    void *inputs[8], *outputs[3];
    int ni = 0, no = 0;
    if (need_x) inputs[ni++] = a->x->data;
    if (need_w) inputs[ni++] = a->w->data;
    if (need_y) inputs[ni++] = a->y->data;
    inputs[ni++] = a->dy->data;
    if (bias) inputs[ni++] = a->b->data;
    nm_tensor *grads[3] = {want_dx ? a->dx : NULL, want_dw ? a->dw : NULL, want_db ? a->db : NULL};
    for (int i = 0; i < 3; i++) {
        if (!grads[i]) continue;
        if (acc) inputs[ni++] = grads[i]->data;
        outputs[no++] = grads[i]->data;
    }
    return metal_run(dev, cb, op, g, inputs, outputs);
}
