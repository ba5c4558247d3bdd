/*
 * loss.m — softmax cross-entropy (mean over rows) and its gradient, one MPSGraph each.
 *
 * Layout: logits [N,C]; labels [N] hold class indices as floats; loss [1]; dlogits [N,C].
 * Per row, m = max_j x_j, s = sum_j e_j with e_j = exp(x_j - m):
 *   loss     = (1/N) sum_rows ((m - x_label) + log s)
 *   dlogits  = e_j / (s N) off the label, -(sum_{j != label} e_j) / (s N) at it (no
 *              cancellation in 1 - p; the CPU's form).
 * The label's column is picked by comparing labels [N,1] with the column indices [1,C] (an
 * exact float compare; no gather, no cast).
 * Run-time check (neatml.h): a label that is not an exact integer in 0..C-1 (NaN included)
 * fails the op. The graph computes, besides the result, the validity record of check.m with
 * a = the first bad row, b = its label; when a label is bad (or a checked op before it in
 * the command buffer failed) the result is the output's old contents (the output is also an
 * input: select(ok, new, old)), so the op writes nothing. submit.m ends the command buffer
 * after it, reads the record when it completed, and stops the submission with
 * INVALID_ARGUMENT "labels[i] = v is not a class index in 0..C-1". With C = 0 every label is
 * bad: the graph is the check alone.
 */
#import "metal.h"

static MPSGraphTensor *iota(MPSGraph *m, int64_t n, MPSShape *shape) {
    NSMutableData *d = [NSMutableData dataWithLength:(NSUInteger)n * sizeof(float)];
    float *f = d.mutableBytes;
    for (int64_t i = 0; i < n; i++) f[i] = (float)i;
    return [m constantWithData:d shape:shape dataType:MPSDataTypeFloat32];
}

/* all_valid [1] (bool), the first bad row and its label ([1] each; rows and 0 when none), and
 * is_label [N,C] (when C > 0) from labels [N]. */
static void label_check(MPSGraph *m, MPSGraphTensor *l, int64_t rows, int64_t cols,
                        MPSGraphTensor **all_valid, MPSGraphTensor **bad_row,
                        MPSGraphTensor **bad_label, MPSGraphTensor **is_label) {
    MPSGraphTensor *valid = [m
        logicalANDWithPrimaryTensor:[m greaterThanOrEqualToWithPrimaryTensor:l
                                                             secondaryTensor:metal_const(m, 0.0)
                                                                        name:nil]
                    secondaryTensor:[m lessThanOrEqualToWithPrimaryTensor:l
                                                          secondaryTensor:metal_const(
                                                                              m, (double)(cols - 1))
                                                                     name:nil]
                               name:nil];
    valid = [m logicalANDWithPrimaryTensor:valid
                           secondaryTensor:[m equalWithPrimaryTensor:[m floorWithTensor:l name:nil]
                                                     secondaryTensor:l
                                                                name:nil]
                                      name:nil];
    MPSGraphTensor *row = iota(m, rows, METAL_SHAPE(rows));
    *bad_row =
        [m reductionMinimumWithTensor:[m selectWithPredicateTensor:valid
                                               truePredicateTensor:metal_const(m, (double)rows)
                                              falsePredicateTensor:row
                                                              name:nil]
                                 axis:0
                                 name:nil]; /* [1]; rows when none */
    *all_valid = [m equalWithPrimaryTensor:*bad_row
                           secondaryTensor:metal_const(m, (double)rows)
                                      name:nil];
    *bad_label =
        [m reductionSumWithTensor:[m selectWithPredicateTensor:[m equalWithPrimaryTensor:row
                                                                         secondaryTensor:*bad_row
                                                                                    name:nil]
                                           truePredicateTensor:l
                                          falsePredicateTensor:metal_const(m, 0.0)
                                                          name:nil]
                             axis:0
                             name:nil];
    *is_label = cols == 0 ? nil
                          : [m equalWithPrimaryTensor:[m reshapeTensor:l
                                                             withShape:METAL_SHAPE(rows, 1)
                                                                  name:nil]
                                      secondaryTensor:iota(m, cols, METAL_SHAPE(1, cols))
                                                 name:nil];
}

static neat_status run_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, int backward) {
    const nm_softmax_xent_args *a = &op->u.softmax_xent;
    int64_t rows = a->rows, cols = a->cols;
    if (rows == 0) return backward ? NEAT_OK : metal_zero(dev, op, a->out->data, sizeof(float));
    NSString *key = [NSString stringWithFormat:@"xent%s:%lld:%lld", backward ? "_bwd" : "",
                                               (long long)rows, (long long)cols];
    NMGraph *g = metal_cached(dev, op, key, "the softmax cross-entropy graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sx = METAL_SHAPE(rows, cols), *sl = METAL_SHAPE(rows),
               *so = backward ? sx : METAL_SHAPE(1);
      MPSShape *sr = METAL_SHAPE(4);
      MPSGraphTensor *l = metal_input(m, sl), *prior = metal_input(m, sr);
      MPSGraphTensor *all_valid, *bad_row, *bad_label, *is_label, *ok;
      label_check(m, l, rows, cols, &all_valid, &bad_row, &bad_label, &is_label);
      MPSGraphTensor *record = metal_check_record(m, prior, all_valid, bad_row, bad_label, &ok);
      if (cols == 0) /* no class: every label is bad, nothing to compute */
          return metal_graph(m, @[ l, prior ], @[ sl, sr ], @[ record ], @[ sr ]);
      MPSGraphTensor *x = metal_input(m, sx), *old = metal_input(m, so);
      MPSGraphTensor *mx = [m reductionMaximumWithTensor:x axis:1 name:nil]; /* [N,1] */
      MPSGraphTensor *e = [m exponentWithTensor:[m subtractionWithPrimaryTensor:x
                                                                secondaryTensor:mx
                                                                           name:nil]
                                           name:nil];
      MPSGraphTensor *s = [m reductionSumWithTensor:e axis:1 name:nil];
      MPSGraphTensor *zero = metal_const(m, 0.0), *result;
      if (!backward) {
          MPSGraphTensor *xl = [m reductionSumWithTensor:[m selectWithPredicateTensor:is_label
                                                                  truePredicateTensor:x
                                                                 falsePredicateTensor:zero
                                                                                 name:nil]
                                                    axis:1
                                                    name:nil];
          /* (m - x_label) + log s: m + log s would lose log s next to a large logit */
          MPSGraphTensor *row = [m
              additionWithPrimaryTensor:[m subtractionWithPrimaryTensor:mx
                                                        secondaryTensor:xl
                                                                   name:nil]
                        secondaryTensor:[m logarithmWithTensor:s name:nil]
                                   name:nil];
          result = [m divisionWithPrimaryTensor:[m reshapeTensor:[m reductionSumWithTensor:row
                                                                                      axes:nil
                                                                                      name:nil]
                                                       withShape:so
                                                            name:nil]
                                secondaryTensor:metal_const(m, (double)rows)
                                           name:nil];
      } else {
          MPSGraphTensor *sn = [m multiplicationWithPrimaryTensor:s
                                                  secondaryTensor:metal_const(m, (double)rows)
                                                             name:nil];
          MPSGraphTensor *other = [m reductionSumWithTensor:[m selectWithPredicateTensor:is_label
                                                                     truePredicateTensor:zero
                                                                    falsePredicateTensor:e
                                                                                    name:nil]
                                                       axis:1
                                                       name:nil];
          result = [m
              selectWithPredicateTensor:is_label
                    truePredicateTensor:[m negativeWithTensor:[m divisionWithPrimaryTensor:other
                                                                           secondaryTensor:sn
                                                                                      name:nil]
                                                         name:nil]
                   falsePredicateTensor:[m divisionWithPrimaryTensor:e secondaryTensor:sn name:nil]
                                   name:nil];
      }
      result = [m selectWithPredicateTensor:ok
                        truePredicateTensor:result
                       falsePredicateTensor:old
                                       name:nil];
      return metal_graph(m, @[ x, l, old, prior ], @[ sx, sl, so, sr ], @[ result, record ],
                         @[ so, sr ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *prior, *record;
    neat_status st = metal_check_slots(dev, cb, op, &prior, &record);
    if (st) return st;
    if (cols == 0) {
        void *in[] = {a->labels->data, prior}, *out[] = {record};
        return metal_run(dev, cb, op, g, in, out);
    }
    void *in[] = {a->logits->data, a->labels->data, a->out->data, prior},
         *out[] = {a->out->data, record};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_softmax_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return run_xent(dev, cb, op, 0);
}

neat_status metal_softmax_xent_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return run_xent(dev, cb, op, 1);
}
