/*
 * loss.m — softmax cross-entropy (mean over rows) and its gradient, one MPSGraph each.
 *
 * Layout: logits [N,C]; labels [N] hold class indices as floats; loss [1]; dlogits [N,C].
 * Per row, m = max_j x_j, s = sum_j e_j with e_j = exp(x_j - m):
 *   loss     = (1/N) sum_rows (m + log s - x_label)
 *   dlogits  = e_j / (s N) off the label, -(sum_{j != label} e_j) / (s N) at it (no
 *              cancellation in 1 - p; the CPU's form).
 * The label's column is picked by comparing labels [N,1] with the column indices [1,C] (an
 * exact float compare; no gather, no cast).
 * Run-time check (neatml.h): a label that is not an exact integer in 0..C-1 (NaN included)
 * fails the op. The graph computes, besides the result, a validity record in a scratch slot:
 * [first bad row or -1, its label]; when a label is bad the result is the output's old
 * contents (the output is also an input: select(all valid, new, old)), so the op writes
 * nothing. backend.m ends the command buffer after this op, reads the record when it
 * completed, and stops the submission with INVALID_ARGUMENT "labels[i] = v is not a class
 * index in 0..C-1".
 */
#import "metal.h"

static MPSGraphTensor *iota(MPSGraph *m, int64_t n, MPSShape *shape) {
    NSMutableData *d = [NSMutableData dataWithLength:(NSUInteger)n * sizeof(float)];
    float *f = d.mutableBytes;
    for (int64_t i = 0; i < n; i++) f[i] = (float)i;
    return [m constantWithData:d shape:shape dataType:MPSDataTypeFloat32];
}

/* is_label [N,C], all_valid [1] (bool) and the record [2] from logits and labels. */
static void label_check(MPSGraph *m, MPSGraphTensor *labels, int64_t rows, int64_t cols,
                        MPSGraphTensor **is_label, MPSGraphTensor **all_valid, MPSGraphTensor **record) {
    MPSGraphTensor *l = labels; /* [N] */
    MPSGraphTensor *valid = [m logicalANDWithPrimaryTensor:
                                   [m greaterThanOrEqualToWithPrimaryTensor:l secondaryTensor:metal_const(m, 0.0) name:nil]
                                           secondaryTensor:[m lessThanOrEqualToWithPrimaryTensor:l
                                                                                 secondaryTensor:metal_const(m, (double)(cols - 1))
                                                                                            name:nil]
                                                      name:nil];
    valid = [m logicalANDWithPrimaryTensor:valid
                           secondaryTensor:[m equalWithPrimaryTensor:[m floorWithTensor:l name:nil] secondaryTensor:l name:nil]
                                      name:nil];
    MPSGraphTensor *row = iota(m, rows, METAL_SHAPE(rows));
    MPSGraphTensor *bad_row = [m reductionMinimumWithTensor:[m selectWithPredicateTensor:valid
                                                                      truePredicateTensor:metal_const(m, (double)rows)
                                                                     falsePredicateTensor:row name:nil]
                                                       axis:0 name:nil]; /* [1]; rows when none */
    *all_valid = [m equalWithPrimaryTensor:bad_row secondaryTensor:metal_const(m, (double)rows) name:nil];
    MPSGraphTensor *bad_label = [m reductionSumWithTensor:[m selectWithPredicateTensor:[m equalWithPrimaryTensor:row secondaryTensor:bad_row name:nil]
                                                                   truePredicateTensor:l
                                                                  falsePredicateTensor:metal_const(m, 0.0) name:nil]
                                                     axis:0 name:nil];
    MPSGraphTensor *first = [m selectWithPredicateTensor:*all_valid truePredicateTensor:metal_const(m, -1.0)
                                    falsePredicateTensor:bad_row name:nil];
    *record = [m concatTensors:@[ first, bad_label ] dimension:0 name:nil];
    *is_label = [m equalWithPrimaryTensor:[m reshapeTensor:l withShape:METAL_SHAPE(rows, 1) name:nil]
                          secondaryTensor:iota(m, cols, METAL_SHAPE(1, cols)) name:nil];
}

static neat_status run_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, int backward) {
    const nm_softmax_xent_args *a = &op->u.softmax_xent;
    int64_t rows = a->rows, cols = a->cols;
    if (rows == 0) return backward ? NEAT_OK : metal_zero(dev, op, a->out->data, sizeof(float));
    if (cols == 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: labels[0] is not a class index: there are no classes (C = 0)",
                        op->fn);
    NSString *key = [NSString stringWithFormat:@"xent%s:%lld:%lld", backward ? "_bwd" : "", (long long)rows,
                              (long long)cols];
    NMGraph *g = metal_cached(dev, op, key, "the softmax cross-entropy graph", ^id {
        MPSGraph *m = [MPSGraph new];
        MPSShape *sx = METAL_SHAPE(rows, cols), *sl = METAL_SHAPE(rows), *so = backward ? sx : METAL_SHAPE(1);
        MPSGraphTensor *x = metal_input(m, sx), *l = metal_input(m, sl), *old = metal_input(m, so);
        MPSGraphTensor *is_label, *all_valid, *record;
        label_check(m, l, rows, cols, &is_label, &all_valid, &record);
        MPSGraphTensor *mx = [m reductionMaximumWithTensor:x axis:1 name:nil]; /* [N,1] */
        MPSGraphTensor *e = [m exponentWithTensor:[m subtractionWithPrimaryTensor:x secondaryTensor:mx name:nil] name:nil];
        MPSGraphTensor *s = [m reductionSumWithTensor:e axis:1 name:nil];
        MPSGraphTensor *zero = metal_const(m, 0.0), *result;
        if (!backward) {
            MPSGraphTensor *xl = [m reductionSumWithTensor:[m selectWithPredicateTensor:is_label truePredicateTensor:x
                                                                   falsePredicateTensor:zero name:nil]
                                                      axis:1 name:nil];
            MPSGraphTensor *row = [m subtractionWithPrimaryTensor:[m additionWithPrimaryTensor:mx
                                                                               secondaryTensor:[m logarithmWithTensor:s name:nil]
                                                                                          name:nil]
                                                  secondaryTensor:xl name:nil];
            result = [m divisionWithPrimaryTensor:[m reshapeTensor:[m reductionSumWithTensor:row axes:nil name:nil]
                                                         withShape:so name:nil]
                                  secondaryTensor:metal_const(m, (double)rows) name:nil];
        } else {
            MPSGraphTensor *sn = [m multiplicationWithPrimaryTensor:s secondaryTensor:metal_const(m, (double)rows) name:nil];
            MPSGraphTensor *other = [m reductionSumWithTensor:[m selectWithPredicateTensor:is_label truePredicateTensor:zero
                                                                      falsePredicateTensor:e name:nil]
                                                         axis:1 name:nil];
            result = [m selectWithPredicateTensor:is_label
                              truePredicateTensor:[m negativeWithTensor:[m divisionWithPrimaryTensor:other secondaryTensor:sn name:nil]
                                                                   name:nil]
                             falsePredicateTensor:[m divisionWithPrimaryTensor:e secondaryTensor:sn name:nil]
                                             name:nil];
        }
        result = [m selectWithPredicateTensor:all_valid truePredicateTensor:result falsePredicateTensor:old name:nil];
        return metal_graph(m, @[ x, l, old ], @[ sx, sl, so ], @[ result, record ], @[ so, METAL_SHAPE(2) ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *record;
    neat_status st = metal_slot(dev, cb, op, METAL_SLOT_FLAG, 2 * sizeof(float), &record);
    if (st) return st;
    void *in[] = {a->logits->data, a->labels->data, a->out->data}, *out[] = {a->out->data, record};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_softmax_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return run_xent(dev, cb, op, 0);
}

neat_status metal_softmax_xent_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return run_xent(dev, cb, op, 1);
}
