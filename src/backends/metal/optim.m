/*
 * optim.m — SGD (momentum, Nesterov, L2 weight decay) and AdamW, one MPSGraph each.
 *
 * hyper [2] = [lr, step t] is an input of the graph, read when the op runs (a replayed
 * training step follows a schedule written between commits). Same formulas as the CPU
 * (param: the float32 master weights):
 *   SGD:   g = grad + wd param;  v = momentum v + g;  param -= lr (g + momentum v) (Nesterov)
 *          or lr v; without velocity param -= lr g.
 *   AdamW: param = param (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),
 *          m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2.
 * param, velocity, m and v are inputs and outputs: they go through scratch slots and a blit
 * (graph.m), so the update reads only old values.
 * The mixed form (neat_*_update_mixed, ops.h): grad of f32 or f16 (a Float16 placeholder
 * cast to Float32, exact), divided by scaler[0] when a scaler is given; the step writes
 * nothing when scaler[1] != 0 (not a failure: the record stays valid); param, when given,
 * is the new master rounded once to its type (castTensor), else its old value.
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

/* The mixed form's grad: float32, divided by the loss scale when there is a scaler. */
static MPSGraphTensor *grad_f32(MPSGraph *m, MPSGraphTensor *grad, MPSGraphTensor *scaler) {
    MPSGraphTensor *g = grad.dataType == MPSDataTypeFloat32
                            ? grad
                            : [m castTensor:grad toType:MPSDataTypeFloat32 name:@"grad"];
    return scaler ? [m divisionWithPrimaryTensor:g secondaryTensor:hyper_at(m, scaler, 0) name:nil]
                  : g;
}

/* Whether the step writes: the check passed and no scaler says found_inf (scaler[1] != 0,
 * NaN included, skips). */
static MPSGraphTensor *writes(MPSGraph *m, MPSGraphTensor *ok, MPSGraphTensor *scaler) {
    if (!scaler) return ok;
    return and(m, ok,
               [m equalWithPrimaryTensor:hyper_at(m, scaler, 1)
                         secondaryTensor:metal_const(m, 0.0)
                                    name:nil]);
}

static MPSDataType mps_type(neat_dtype dt) {
    return dt == NEAT_F16 ? MPSDataTypeFloat16 : MPSDataTypeFloat32;
}

/* select(ok, v, old): an output is written only when the check passed. */
static MPSGraphTensor *if_ok(MPSGraph *m, MPSGraphTensor *ok, MPSGraphTensor *v,
                             MPSGraphTensor *old) {
    return [m selectWithPredicateTensor:ok truePredicateTensor:v falsePredicateTensor:old name:nil];
}

/* The mixed form's optional tensors, in the graphs' order after the state: scaler, then
 * param (its old value: kept when the step writes nothing). */
typedef struct mixed_io {
    int scaler, param;
    neat_dtype gdt, pdt;
} mixed_io;

static mixed_io mixed_of(const nm_tensor *grad, const nm_tensor *scaler, const nm_tensor *param) {
    return (mixed_io){scaler != NULL, param != NULL, grad->dtype, param ? param->dtype : NEAT_F32};
}

/* Adds the mixed form's placeholders (scaler, param; nil when absent) to ins and shapes. */
static void mixed_inputs(MPSGraph *m, const mixed_io *x, MPSShape *s, NSMutableArray *ins,
                         NSMutableArray *shapes, MPSGraphTensor **scaler, MPSGraphTensor **param) {
    MPSShape *ss = METAL_SHAPE(3);
    *scaler = *param = nil;
    if (x->scaler) {
        *scaler = metal_input(m, ss);
        [ins addObject:*scaler];
        [shapes addObject:ss];
    }
    if (x->param) {
        *param = [m placeholderWithShape:s dataType:mps_type(x->pdt) name:nil];
        [ins addObject:*param];
        [shapes addObject:s];
    }
}

/* param's result: the new master rounded once to param's type where the step writes. */
static MPSGraphTensor *param_out(MPSGraph *m, MPSGraphTensor *write, MPSGraphTensor *master,
                                 MPSGraphTensor *param) {
    MPSGraphTensor *r = param.dataType == MPSDataTypeFloat32
                            ? master
                            : [m castTensor:master toType:param.dataType name:@"param"];
    return if_ok(m, write, r, param);
}

static NSString *mixed_key(const mixed_io *x) {
    return [NSString
        stringWithFormat:@"g%d:s%d:p%d", (int)x->gdt, x->scaler, x->param ? (int)x->pdt : -1];
}

neat_status metal_sgd_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_sgd_update_args *a = &op->u.sgd_update;
    neat_sgd_params p = a->p;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    int vel = a->velocity != NULL && p.momentum != 0.0f;
    mixed_io x = mixed_of(a->grad, a->scaler, a->param);
    NSString *key =
        [NSString stringWithFormat:@"sgd:%lld:%a:%a:%d:%d:%@", (long long)n, (double)p.momentum,
                                   (double)p.weight_decay, p.nesterov != 0, vel, mixed_key(&x)];
    NMGraph *g = metal_cached(dev, op, key, "the SGD graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n), *sh = METAL_SHAPE(2), *sr = METAL_SHAPE(4);
      MPSGraphTensor *hyper = metal_input(m, sh), *prior = metal_input(m, sr);
      MPSGraphTensor *master = metal_input(m, s);
      MPSGraphTensor *grad = [m placeholderWithShape:s dataType:mps_type(x.gdt) name:nil];
      NSMutableArray *ins = [NSMutableArray arrayWithObjects:hyper, prior, master, grad, nil];
      NSMutableArray *shapes = [NSMutableArray arrayWithObjects:sh, sr, s, s, nil];
      MPSGraphTensor *v0 = nil, *scaler, *param;
      if (vel) {
          v0 = metal_input(m, s);
          [ins addObject:v0];
          [shapes addObject:s];
      }
      mixed_inputs(m, &x, s, ins, shapes, &scaler, &param);
      MPSGraphTensor *lr = hyper_at(m, hyper, 0), *ok;
      MPSGraphTensor *record =
          metal_check_record(m, prior, in_range(m, lr, 0.0), lr, hyper_at(m, hyper, 1), &ok);
      MPSGraphTensor *write = writes(m, ok, scaler);
      MPSGraphTensor *gr =
          add(m, grad_f32(m, grad, scaler), mul(m, metal_const(m, p.weight_decay), master));
      MPSGraphTensor *step = gr, *v = nil;
      if (vel) {
          MPSGraphTensor *mom = metal_const(m, p.momentum);
          v = add(m, mul(m, mom, v0), gr);
          step = p.nesterov ? add(m, gr, mul(m, mom, v)) : v;
      }
      MPSGraphTensor *nm = sub(m, master, mul(m, lr, step));
      NSMutableArray *outs = [NSMutableArray arrayWithObject:if_ok(m, write, nm, master)];
      NSMutableArray *oshapes = [NSMutableArray arrayWithObject:s];
      if (vel) {
          [outs addObject:if_ok(m, write, v, v0)];
          [oshapes addObject:s];
      }
      if (param) {
          [outs addObject:param_out(m, write, nm, param)];
          [oshapes addObject:s];
      }
      [outs addObject:record];
      [oshapes addObject:sr];
      return metal_graph(m, ins, shapes, outs, oshapes);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *prior, *record;
    neat_status st = metal_check_slots(dev, cb, op, &prior, &record);
    if (st) return st;
    /* the same order as the graph's placeholders and results */
    void *in[7] = {a->hyper->data, prior, a->master->data, a->grad->data},
         *out[4] = {a->master->data};
    int ni = 4, no = 1;
    if (vel) in[ni++] = a->velocity->data, out[no++] = a->velocity->data;
    if (x.scaler) in[ni++] = a->scaler->data;
    if (x.param) in[ni++] = a->param->data, out[no++] = a->param->data;
    out[no++] = record;
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_adam_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_adam_update_args *a = &op->u.adam_update;
    neat_adam_params p = a->p;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    mixed_io x = mixed_of(a->grad, a->scaler, a->param);
    NSString *key = [NSString stringWithFormat:@"adam:%lld:%a:%a:%a:%a:%@", (long long)n,
                                               (double)p.beta1, (double)p.beta2, (double)p.eps,
                                               (double)p.weight_decay, mixed_key(&x)];
    NMGraph *g = metal_cached(dev, op, key, "the Adam graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n), *sh = METAL_SHAPE(2), *sr = METAL_SHAPE(4);
      MPSGraphTensor *hyper = metal_input(m, sh), *prior = metal_input(m, sr);
      MPSGraphTensor *master = metal_input(m, s);
      MPSGraphTensor *grad = [m placeholderWithShape:s dataType:mps_type(x.gdt) name:nil];
      MPSGraphTensor *m0 = metal_input(m, s), *v0 = metal_input(m, s), *scaler, *param;
      NSMutableArray *ins =
          [NSMutableArray arrayWithObjects:hyper, prior, master, grad, m0, v0, nil];
      NSMutableArray *shapes = [NSMutableArray arrayWithObjects:sh, sr, s, s, s, s, nil];
      mixed_inputs(m, &x, s, ins, shapes, &scaler, &param);
      MPSGraphTensor *lr = hyper_at(m, hyper, 0), *t = hyper_at(m, hyper, 1),
                     *one = metal_const(m, 1.0), *ok;
      MPSGraphTensor *record = metal_check_record(
          m, prior, and(m, in_range(m, lr, 0.0), in_range(m, t, 1.0)), lr, t, &ok);
      MPSGraphTensor *write = writes(m, ok, scaler), *g32 = grad_f32(m, grad, scaler);
      MPSGraphTensor *b1 = metal_const(m, p.beta1), *b2 = metal_const(m, p.beta2);
      MPSGraphTensor *bc1 = sub(m, one, [m powerWithPrimaryTensor:b1 secondaryTensor:t name:nil]);
      MPSGraphTensor *bc2 = sub(m, one, [m powerWithPrimaryTensor:b2 secondaryTensor:t name:nil]);
      MPSGraphTensor *mi =
          add(m, mul(m, b1, m0), mul(m, metal_const(m, 1.0 - (double)p.beta1), g32));
      MPSGraphTensor *vi =
          add(m, mul(m, b2, v0),
              mul(m, metal_const(m, 1.0 - (double)p.beta2), [m squareWithTensor:g32 name:nil]));
      MPSGraphTensor *denom = add(m,
                                  [m divisionWithPrimaryTensor:[m squareRootWithTensor:vi name:nil]
                                               secondaryTensor:[m squareRootWithTensor:bc2 name:nil]
                                                          name:nil],
                                  metal_const(m, p.eps));
      MPSGraphTensor *step = [m divisionWithPrimaryTensor:lr secondaryTensor:bc1 name:nil];
      MPSGraphTensor *decay = sub(m, one, mul(m, lr, metal_const(m, p.weight_decay)));
      MPSGraphTensor *np = sub(m, mul(m, master, decay),
                               [m divisionWithPrimaryTensor:mul(m, step, mi)
                                            secondaryTensor:denom
                                                       name:nil]);
      NSMutableArray *outs =
          [NSMutableArray arrayWithObjects:if_ok(m, write, np, master), if_ok(m, write, mi, m0),
                                           if_ok(m, write, vi, v0), nil];
      NSMutableArray *oshapes = [NSMutableArray arrayWithObjects:s, s, s, nil];
      if (param) {
          [outs addObject:param_out(m, write, np, param)];
          [oshapes addObject:s];
      }
      [outs addObject:record];
      [oshapes addObject:sr];
      return metal_graph(m, ins, shapes, outs, oshapes);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *prior, *record;
    neat_status st = metal_check_slots(dev, cb, op, &prior, &record);
    if (st) return st;
    /* the same order as the graph's placeholders and results */
    void *in[8] = {a->hyper->data, prior, a->master->data, a->grad->data, a->m->data, a->v->data};
    void *out[5] = {a->master->data, a->m->data, a->v->data};
    int ni = 6, no = 3;
    if (x.scaler) in[ni++] = a->scaler->data;
    if (x.param) in[ni++] = a->param->data, out[no++] = a->param->data;
    out[no++] = record;
    return metal_run(dev, cb, op, g, in, out);
}
