/*
 * matmul.m — c = alpha op(a) op(b) + beta c, plain and batched, on MPSMatrixMultiplication.
 *
 * Layout: row-major float32; a is stored [m,k] (or [k,m] when trans_a), b [k,n] (or [n,k]),
 * c [m,n]; batched: B matrices back to back (MPSMatrixDescriptor matrices/matrixBytes).
 * The kernel is made once per (shapes, transposes, alpha, beta) and cached.
 * neatml.h's beta = 0 means c is not read (a NaN there must not propagate): c is first
 * zeroed with a blit, then the kernel runs with beta 0. k = 0 (an empty product) is
 * c = beta c, done as a scale. Float32 throughout: MPS has no TF32 mode, so
 * NEAT_MATH_TF32 runs strict (the header allows TF32 only "where the hardware has it").
 */
#import "metal.h"

static MPSMatrix *matrix(nm_device *dev, const void *data, int64_t rows, int64_t cols,
                         int64_t batch) {
    id<MTLBuffer> b = metal_buffer(dev, data);
    if (!b) return nil;
    MPSMatrixDescriptor *desc =
        [MPSMatrixDescriptor matrixDescriptorWithRows:(NSUInteger)rows
                                              columns:(NSUInteger)cols
                                             matrices:(NSUInteger)batch
                                             rowBytes:(NSUInteger)cols * sizeof(float)
                                          matrixBytes:(NSUInteger)(rows * cols) * sizeof(float)
                                             dataType:MPSDataTypeFloat32];
    return [[MPSMatrix alloc] initWithBuffer:b descriptor:desc];
}

neat_status metal_matmul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_matmul_args *a = &op->u.matmul;
    int64_t mn = a->batch * a->m * a->n;
    if (mn == 0) return NEAT_OK;
    if (a->k == 0 && a->beta == 0.0f)
        return metal_zero(dev, op, a->c->data, (size_t)mn * sizeof(float));
    if (a->k == 0) return metal_scale_into(dev, cb, op, a->c->data, a->c->data, mn, a->beta);
    NSString *key =
        [NSString stringWithFormat:@"matmul:%lld:%lld:%lld:%d:%d:%a:%a", (long long)a->m,
                                   (long long)a->n, (long long)a->k, a->trans_a, a->trans_b,
                                   (double)a->alpha, (double)a->beta];
    NMMetalDevice *d = metal_dev(dev);
    MPSMatrixMultiplication *mm = metal_cached(dev, op, key, "MPSMatrixMultiplication", ^id {
      return [[MPSMatrixMultiplication alloc] initWithDevice:d.device
                                               transposeLeft:a->trans_a != 0
                                              transposeRight:a->trans_b != 0
                                                  resultRows:(NSUInteger)a->m
                                               resultColumns:(NSUInteger)a->n
                                             interiorColumns:(NSUInteger)a->k
                                                       alpha:a->alpha
                                                        beta:a->beta];
    });
    if (!mm) return NEAT_ERR_BACKEND_ERROR;
    if (a->beta == 0.0f) {
        neat_status st = metal_zero(dev, op, a->c->data, (size_t)mn * sizeof(float));
        if (st) return st;
    }
    MPSMatrix *ma = a->trans_a ? matrix(dev, a->a->data, a->k, a->m, a->batch)
                               : matrix(dev, a->a->data, a->m, a->k, a->batch);
    MPSMatrix *mb = a->trans_b ? matrix(dev, a->b->data, a->n, a->k, a->batch)
                               : matrix(dev, a->b->data, a->k, a->n, a->batch);
    MPSMatrix *mc = matrix(dev, a->c->data, a->m, a->n, a->batch);
    if (!ma || !mb || !mc)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: -[MPSMatrix initWithBuffer:descriptor:] failed "
                        "(an operand is not in an MTLBuffer of the device)",
                        op->fn);
    mm.batchStart = 0;
    mm.batchSize = (NSUInteger)a->batch;
    [mm encodeToCommandBuffer:d.mcb leftMatrix:ma rightMatrix:mb resultMatrix:mc];
    return NEAT_OK;
}
