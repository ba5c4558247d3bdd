/*
 * optim.m — SGD (momentum, Nesterov, L2 weight decay) and AdamW, one MPSGraph each.
 *
 * hyper [2] = [lr, step t] is an input of the graph, read when the op runs (a replayed
 * training step follows a schedule written between commits). Same formulas as the CPU:
 *   SGD:   g = grad + wd param;  v = momentum v + g;  param -= lr (g + momentum v) (Nesterov)
 *          or lr v; without velocity param -= lr g.
 *   AdamW: param = param (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),
 *          m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2.
 * param, velocity, m and v are inputs and outputs: they go through scratch slots and a blit
 * (graph.m), so the update reads only old values.
 * Run-time check (ops.h: nm_hyper_valid): lr finite and >= 0, and for Adam the step finite
 * and >= 1, tested in the graph (NaN fails every comparison, and is tested as well); the
 * validity record of check.m holds [.., .., lr, step], and every output keeps its old value
 * when the check (or a checked op before it in the command buffer) failed. submit.m reports
 * INVALID_ARGUMENT with nm_hyper_valid's message.
 */
#import "metal.h"

static MPSGraphTensor *mul(MPSGraph *m, MPSGraphTensor *a, MPSGraphTensor *b) {
    return [m multiplicationWithPrimaryTensor:a secondaryTensor:b name:nil];
}
static MPSGraphTensor *add(MPSGraph *m, MPSGraphTensor *a, MPSGraphTensor *b) {
    return [m additionWithPrimaryTensor:a secondaryTensor:b name:nil];
}
static MPSGraphTensor *sub(MPSGraph *m, MPSGraphTensor *a, MPSGraphTensor *b) {
    return [m subtractionWithPrimaryTensor:a secondaryTensor:b name:nil];
}
static MPSGraphTensor *hyper_at(MPSGraph *m, MPSGraphTensor *hyper, int i) {
    return [m sliceTensor:hyper dimension:0 start:i length:1 name:nil];
}
static MPSGraphTensor * and (MPSGraph * m, MPSGraphTensor *a, MPSGraphTensor *b) {
    return [m logicalANDWithPrimaryTensor:a secondaryTensor:b name:nil];
}

/* lo <= v <= 3.4e38 and not NaN: nm_hyper_valid's test of lr (lo 0) and step (lo 1). */
static MPSGraphTensor *in_range(MPSGraph *m, MPSGraphTensor *v, double lo) {
    MPSGraphTensor *ge = [m greaterThanOrEqualToWithPrimaryTensor:v
                                                  secondaryTensor:metal_const(m, lo)
                                                             name:nil];
    MPSGraphTensor *le = [m lessThanOrEqualToWithPrimaryTensor:v
                                               secondaryTensor:metal_const(m, 3.4e38)
                                                          name:nil];
    MPSGraphTensor *num = [m notWithTensor:[m isNaNWithTensor:v name:nil] name:nil];
    return and(m, and(m, ge, le), num);
}

/* select(ok, v, old): an output is written only when the check passed. */
static MPSGraphTensor *if_ok(MPSGraph *m, MPSGraphTensor *ok, MPSGraphTensor *v,
                             MPSGraphTensor *old) {
    return [m selectWithPredicateTensor:ok truePredicateTensor:v falsePredicateTensor:old name:nil];
}

neat_status metal_sgd_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_sgd_update_args *a = &op->u.sgd_update;
    neat_sgd_params p = a->p;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    int vel = a->velocity != NULL && p.momentum != 0.0f;
    NSString *key =
        [NSString stringWithFormat:@"sgd:%lld:%a:%a:%d:%d", (long long)n, (double)p.momentum,
                                   (double)p.weight_decay, p.nesterov != 0, vel];
    NMGraph *g = metal_cached(dev, op, key, "the SGD graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n), *sh = METAL_SHAPE(2), *sr = METAL_SHAPE(4);
      MPSGraphTensor *hyper = metal_input(m, sh), *prior = metal_input(m, sr);
      MPSGraphTensor *param = metal_input(m, s), *grad = metal_input(m, s);
      MPSGraphTensor *lr = hyper_at(m, hyper, 0), *ok;
      MPSGraphTensor *record =
          metal_check_record(m, prior, in_range(m, lr, 0.0), lr, hyper_at(m, hyper, 1), &ok);
      MPSGraphTensor *gr = add(m, grad, mul(m, metal_const(m, p.weight_decay), param));
      if (!vel)
          return metal_graph(m, @[ hyper, prior, param, grad ], @[ sh, sr, s, s ],
                             @[ if_ok(m, ok, sub(m, param, mul(m, lr, gr)), param), record ],
                             @[ s, sr ]);
      MPSGraphTensor *v0 = metal_input(m, s), *mom = metal_const(m, p.momentum);
      MPSGraphTensor *v = add(m, mul(m, mom, v0), gr);
      MPSGraphTensor *step = p.nesterov ? add(m, gr, mul(m, mom, v)) : v;
      return metal_graph(
          m, @[ hyper, prior, param, grad, v0 ], @[ sh, sr, s, s, s ],
          @[ if_ok(m, ok, sub(m, param, mul(m, lr, step)), param), if_ok(m, ok, v, v0), record ],
          @[ s, s, sr ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *prior, *record;
    neat_status st = metal_check_slots(dev, cb, op, &prior, &record);
    if (st) return st;
    void *in[] = {a->hyper->data, prior, a->master->data, a->grad->data,
                  vel ? a->velocity->data : NULL};
    void *out[] = {a->master->data, vel ? a->velocity->data : record,
                   record}; /* the graph's outputs */
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_adam_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_adam_update_args *a = &op->u.adam_update;
    neat_adam_params p = a->p;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    NSString *key =
        [NSString stringWithFormat:@"adam:%lld:%a:%a:%a:%a", (long long)n, (double)p.beta1,
                                   (double)p.beta2, (double)p.eps, (double)p.weight_decay];
    NMGraph *g = metal_cached(dev, op, key, "the Adam graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n), *sh = METAL_SHAPE(2), *sr = METAL_SHAPE(4);
      MPSGraphTensor *hyper = metal_input(m, sh), *prior = metal_input(m, sr);
      MPSGraphTensor *param = metal_input(m, s), *grad = metal_input(m, s);
      MPSGraphTensor *m0 = metal_input(m, s), *v0 = metal_input(m, s);
      MPSGraphTensor *lr = hyper_at(m, hyper, 0), *t = hyper_at(m, hyper, 1),
                     *one = metal_const(m, 1.0), *ok;
      MPSGraphTensor *record = metal_check_record(
          m, prior, and(m, in_range(m, lr, 0.0), in_range(m, t, 1.0)), lr, t, &ok);
      MPSGraphTensor *b1 = metal_const(m, p.beta1), *b2 = metal_const(m, p.beta2);
      MPSGraphTensor *bc1 = sub(m, one, [m powerWithPrimaryTensor:b1 secondaryTensor:t name:nil]);
      MPSGraphTensor *bc2 = sub(m, one, [m powerWithPrimaryTensor:b2 secondaryTensor:t name:nil]);
      MPSGraphTensor *mi =
          add(m, mul(m, b1, m0), mul(m, metal_const(m, 1.0 - (double)p.beta1), grad));
      MPSGraphTensor *vi =
          add(m, mul(m, b2, v0),
              mul(m, metal_const(m, 1.0 - (double)p.beta2), [m squareWithTensor:grad name:nil]));
      MPSGraphTensor *denom = add(m,
                                  [m divisionWithPrimaryTensor:[m squareRootWithTensor:vi name:nil]
                                               secondaryTensor:[m squareRootWithTensor:bc2 name:nil]
                                                          name:nil],
                                  metal_const(m, p.eps));
      MPSGraphTensor *step = [m divisionWithPrimaryTensor:lr secondaryTensor:bc1 name:nil];
      MPSGraphTensor *decay = sub(m, one, mul(m, lr, metal_const(m, p.weight_decay)));
      MPSGraphTensor *np = sub(m, mul(m, param, decay),
                               [m divisionWithPrimaryTensor:mul(m, step, mi)
                                            secondaryTensor:denom
                                                       name:nil]);
      return metal_graph(
          m, @[ hyper, prior, param, grad, m0, v0 ], @[ sh, sr, s, s, s, s ],
          @[ if_ok(m, ok, np, param), if_ok(m, ok, mi, m0), if_ok(m, ok, vi, v0), record ],
          @[ s, s, s, sr ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *prior, *record;
    neat_status st = metal_check_slots(dev, cb, op, &prior, &record);
    if (st) return st;
    void *in[] = {a->hyper->data, prior, a->master->data, a->grad->data, a->m->data, a->v->data};
    void *out[] = {a->master->data, a->m->data, a->v->data, record};
    return metal_run(dev, cb, op, g, in, out);
}
