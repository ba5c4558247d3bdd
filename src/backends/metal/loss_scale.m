/*
 * loss_scale.m — dynamic loss scaling on MPSGraph: the scaled loss gradient, the check for
 * non-finite gradients over a list of tensors, and the scale's update, one cached graph
 * each. The scaler is a float32 tensor [scale, found_inf, good steps], an input of each
 * graph (read when the op runs, so a replayed step follows it); the check and the update
 * write it back whole (in place: through a scratch slot, graph.m). Tensors of f16 are
 * Float16 placeholders cast to Float32 (exact) for the math; y is rounded once to its type.
 * As the CPU's (cpu/loss_scale.c) and CUDA's, none of these ops fails when it runs.
 */
#import "metal.h"

static MPSDataType mps_type(neat_dtype dt) {
    return dt == NEAT_F16 ? MPSDataTypeFloat16 : MPSDataTypeFloat32;
}

static MPSGraphTensor *at(MPSGraph *m, MPSGraphTensor *t, int i) {
    return [m sliceTensor:t dimension:0 start:i length:1 name:nil];
}

/* t as float32 (exact from f16; t itself when it is float32). */
static MPSGraphTensor *widen(MPSGraph *m, MPSGraphTensor *t) {
    return t.dataType == MPSDataTypeFloat32 ? t
                                            : [m castTensor:t toType:MPSDataTypeFloat32 name:@"w"];
}

/* y = x * scaler[0], the float32 product rounded once to y's type. */
neat_status metal_loss_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_loss_scale_args *a = &op->u.loss_scale;
    int64_t n = a->x->numel;
    neat_dtype dt = a->x->dtype;
    if (n == 0) return NEAT_OK;
    NSString *key = [NSString stringWithFormat:@"loss_scale:%lld:%d", (long long)n, (int)dt];
    NMGraph *g = metal_cached(dev, op, key, "the loss scale graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n), *ss = METAL_SHAPE(3);
      MPSGraphTensor *scaler = metal_input(m, ss);
      MPSGraphTensor *x = [m placeholderWithShape:s dataType:mps_type(dt) name:nil];
      MPSGraphTensor *y = [m multiplicationWithPrimaryTensor:widen(m, x)
                                             secondaryTensor:at(m, scaler, 0)
                                                        name:nil];
      if (dt != NEAT_F32) y = [m castTensor:y toType:mps_type(dt) name:@"round"];
      return metal_graph(m, @[ scaler, x ], @[ ss, s ], @[ y ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->scaler->data, a->x->data}, *out[] = {a->y->data};
    return metal_run(dev, cb, op, g, in, out);
}

/* scaler[1] = 1 when an element of the list is NaN or infinite, else 0. One graph per list
 * (its types and sizes): each tensor's non-finite elements counted as 1 and reduced by
 * maximum, the maxima of all tensors combined. Empty tensors are left out. */
neat_status metal_loss_scale_check(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    int nl;
    nm_tensor *const *list = nm_op_list(op, &nl);
    nm_tensor *scaler = op->u.loss_scale_check.scaler;
    NSMutableString *key = [NSMutableString stringWithString:@"loss_scale_check"];
    int used = 0;
    for (int i = 0; i < nl; i++)
        if (list[i]->numel > 0) {
            [key appendFormat:@":%lld/%d", (long long)list[i]->numel, (int)list[i]->dtype];
            used++;
        }
    NMGraph *g = metal_cached(dev, op, key, "the loss scale check graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *ss = METAL_SHAPE(3);
      MPSGraphTensor *s = metal_input(m, ss), *found = metal_const(m, 0.0);
      NSMutableArray *ins = [NSMutableArray arrayWithObject:s];
      NSMutableArray *shapes = [NSMutableArray arrayWithObject:ss];
      for (int i = 0; i < nl; i++) {
          if (list[i]->numel == 0) continue;
          MPSShape *sh = METAL_SHAPE(list[i]->numel);
          MPSGraphTensor *t = [m placeholderWithShape:sh
                                             dataType:mps_type(list[i]->dtype)
                                                 name:nil];
          MPSGraphTensor *bad = [m notWithTensor:[m isFiniteWithTensor:widen(m, t) name:nil]
                                            name:nil];
          bad = [m reductionMaximumWithTensor:[m castTensor:bad
                                                     toType:MPSDataTypeFloat32
                                                       name:@"bad"]
                                         axis:0
                                         name:nil];
          found = [m maximumWithPrimaryTensor:found
                              secondaryTensor:[m reshapeTensor:bad
                                                     withShape:METAL_SHAPE(1)
                                                          name:nil]
                                         name:nil];
          [ins addObject:t];
          [shapes addObject:sh];
      }
      found = [m reshapeTensor:found withShape:METAL_SHAPE(1) name:nil];
      MPSGraphTensor *r = [m concatTensors:@[ at(m, s, 0), found, at(m, s, 2) ]
                                 dimension:0
                                      name:nil];
      return metal_graph(m, ins, shapes, @[ r ], @[ ss ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void **in = malloc((size_t)(used + 1) * sizeof *in);
    if (!in) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", op->fn);
    int k = 0;
    in[k++] = scaler->data;
    for (int i = 0; i < nl; i++)
        if (list[i]->numel > 0) in[k++] = list[i]->data;
    void *out[] = {scaler->data};
    neat_status st = metal_run(dev, cb, op, g, in, out);
    free(in);
    return st;
}

/* found_inf: scale *= backoff, good = 0; else good += 1 and at growth_interval scale *=
 * growth (kept only when finite) and good = 0. found_inf is left as it is. */
neat_status metal_loss_scale_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_loss_scale_update_args *a = &op->u.loss_scale_update;
    neat_loss_scale_params p = a->p;
    NSString *key =
        [NSString stringWithFormat:@"loss_scale_update:%a:%a:%d", (double)p.growth_factor,
                                   (double)p.backoff_factor, p.growth_interval];
    NMGraph *g = metal_cached(dev, op, key, "the loss scale update graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *ss = METAL_SHAPE(3);
      MPSGraphTensor *s = metal_input(m, ss);
      MPSGraphTensor *scale = at(m, s, 0), *found = at(m, s, 1), *good = at(m, s, 2);
      MPSGraphTensor *zero = metal_const(m, 0.0);
      MPSGraphTensor *inf = [m notEqualWithPrimaryTensor:found secondaryTensor:zero name:nil];
      MPSGraphTensor *next = [m additionWithPrimaryTensor:good
                                          secondaryTensor:metal_const(m, 1.0)
                                                     name:nil];
      MPSGraphTensor *grow =
          [m greaterThanOrEqualToWithPrimaryTensor:next
                                   secondaryTensor:metal_const(m, (double)(float)p.growth_interval)
                                              name:nil];
      MPSGraphTensor *grown = [m multiplicationWithPrimaryTensor:scale
                                                 secondaryTensor:metal_const(m, p.growth_factor)
                                                            name:nil];
      grown = [m selectWithPredicateTensor:[m isFiniteWithTensor:grown name:nil]
                       truePredicateTensor:grown
                      falsePredicateTensor:scale
                                      name:nil];
      MPSGraphTensor *ok_scale = [m selectWithPredicateTensor:grow
                                          truePredicateTensor:grown
                                         falsePredicateTensor:scale
                                                         name:nil];
      MPSGraphTensor *ok_good = [m selectWithPredicateTensor:grow
                                         truePredicateTensor:zero
                                        falsePredicateTensor:next
                                                        name:nil];
      MPSGraphTensor *backoff = [m multiplicationWithPrimaryTensor:scale
                                                   secondaryTensor:metal_const(m, p.backoff_factor)
                                                              name:nil];
      MPSGraphTensor *new_scale = [m selectWithPredicateTensor:inf
                                           truePredicateTensor:backoff
                                          falsePredicateTensor:ok_scale
                                                          name:nil];
      MPSGraphTensor *new_good = [m selectWithPredicateTensor:inf
                                          truePredicateTensor:zero
                                         falsePredicateTensor:ok_good
                                                         name:nil];
      MPSGraphTensor *r = [m concatTensors:@[ new_scale, found, new_good ] dimension:0 name:nil];
      return metal_graph(m, @[ s ], @[ ss ], @[ r ], @[ ss ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->scaler->data}, *out[] = {a->scaler->data};
    return metal_run(dev, cb, op, g, in, out);
}
