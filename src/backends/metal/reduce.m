/*
 * reduce.m — sums (whole tensor or along an axis), softmax over rows and its backward.
 *
 * sum: x seen as [outer, len, inner] (ops.h), reductionSum over the middle axis gives
 * y [outer, inner]; len = 0 gives zeros (a blit). MPSGraph's reduction is a tree in a fixed
 * order: the same input gives the same bits on one GPU, within neatml's bound.
 * softmax: MPSMatrixSoftMax over rows of x [rows, cols] (max-subtracted by Apple); in place
 * (y = x) it writes into a scratch slot that a blit copies back, since MPS does not promise
 * in-place rows. softmax backward: dx = y (dy - sum(dy y)) along the row, one MPSGraph.
 */
#import "metal.h"

neat_status metal_sum(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_sum_args *a = &op->u.sum;
    int64_t outer = a->outer, len = a->len, inner = a->inner;
    if (outer * inner == 0) return NEAT_OK;
    if (len == 0) return metal_zero(dev, op, a->y->data, (size_t)(outer * inner) * sizeof(float));
    NSString *key = [NSString
        stringWithFormat:@"sum:%lld:%lld:%lld", (long long)outer, (long long)len, (long long)inner];
    NMGraph *g = metal_cached(dev, op, key, "the sum graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sx = METAL_SHAPE(outer, len, inner), *sy = METAL_SHAPE(outer, inner);
      MPSGraphTensor *x = metal_input(m, sx);
      MPSGraphTensor *y = [m reshapeTensor:[m reductionSumWithTensor:x axis:1 name:nil]
                                 withShape:sy
                                      name:nil];
      return metal_graph(m, @[ x ], @[ sx ], @[ y ], @[ sy ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data}, *out[] = {a->y->data};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_softmax(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_softmax_args *a = &op->u.softmax;
    int64_t rows = a->rows, cols = a->cols;
    if (rows * cols == 0) return NEAT_OK;
    NMMetalDevice *d = metal_dev(dev);
    NSString *key =
        [NSString stringWithFormat:@"softmax:%lld:%lld", (long long)rows, (long long)cols];
    MPSMatrixSoftMax *k = metal_cached(dev, op, key, "MPSMatrixSoftMax", ^id {
      MPSMatrixSoftMax *s = [[MPSMatrixSoftMax alloc] initWithDevice:d.device];
      s.sourceRows = (NSUInteger)rows;
      s.sourceColumns = (NSUInteger)cols;
      return s;
    });
    if (!k) return NEAT_ERR_BACKEND_ERROR;
    size_t bytes = (size_t)(rows * cols) * sizeof(float);
    void *dst = a->y->data;
    if (dst == a->x->data) {
        neat_status st = metal_slot(dev, cb, op, METAL_SLOT_ALIAS, bytes, &dst);
        if (st) return st;
    }
    MPSMatrixDescriptor *desc =
        [MPSMatrixDescriptor matrixDescriptorWithRows:(NSUInteger)rows
                                              columns:(NSUInteger)cols
                                             rowBytes:(NSUInteger)cols * sizeof(float)
                                             dataType:MPSDataTypeFloat32];
    id<MTLBuffer> bx = metal_buffer(dev, a->x->data), by = metal_buffer(dev, dst);
    if (!bx || !by)
        return nm_error(NEAT_ERR_INTERNAL, "%s: an operand is not in an MTLBuffer", op->fn);
    MPSMatrix *mx = [[MPSMatrix alloc] initWithBuffer:bx descriptor:desc];
    MPSMatrix *my = [[MPSMatrix alloc] initWithBuffer:by descriptor:desc];
    if (!mx || !my)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: -[MPSMatrix initWithBuffer:descriptor:] returned nil", op->fn);
    [k encodeToCommandBuffer:d.mcb inputMatrix:mx resultMatrix:my];
    return metal_copy(dev, op, a->y->data, dst, bytes);
}

neat_status metal_softmax_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_softmax_backward_args *a = &op->u.softmax_backward;
    int64_t rows = a->rows, cols = a->cols;
    if (rows * cols == 0) return NEAT_OK;
    NSString *key =
        [NSString stringWithFormat:@"softmax_bwd:%lld:%lld", (long long)rows, (long long)cols];
    NMGraph *g = metal_cached(dev, op, key, "the softmax backward graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(rows, cols);
      MPSGraphTensor *y = metal_input(m, s), *dy = metal_input(m, s);
      MPSGraphTensor *dot = [m reductionSumWithTensor:[m multiplicationWithPrimaryTensor:dy
                                                                         secondaryTensor:y
                                                                                    name:nil]
                                                 axis:1
                                                 name:nil];
      MPSGraphTensor *dx = [m multiplicationWithPrimaryTensor:y
                                              secondaryTensor:[m subtractionWithPrimaryTensor:dy
                                                                              secondaryTensor:dot
                                                                                         name:nil]
                                                         name:nil];
      return metal_graph(m, @[ y, dy ], @[ s, s ], @[ dx ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->y->data, a->dy->data}, *out[] = {a->dx->data};
    return metal_run(dev, cb, op, g, in, out);
}
