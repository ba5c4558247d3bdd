/*
 * graph.m — what every Metal op shares: the map from a tensor's data pointer to its
 * MTLBuffer, the bounded cache of compiled graphs and MPS kernels (keyed by op, shapes and
 * options, as PyTorch's MPS backend does), per-op scratch slots, running a cached MPSGraph on
 * the current MPSCommandBuffer over the tensors' own buffers, blits, and the activation math
 * of neatml.h written with MPSGraph arithmetic (so that NaN and the GELU form are the
 * header's, not whatever Apple's fused activation does).
 *
 * All of it runs on the device's encoder queue (one submission at a time), so the cache and
 * the slots need no lock; the buffer map is also touched by mem_alloc/mem_free on the
 * caller's thread and is guarded by @synchronized.
 */
#import "metal.h"

#include <math.h>

@implementation NMGraph
@end

id<MTLBuffer> metal_buffer(nm_device *dev, const void *data) {
    NMMetalDevice *d = metal_dev(dev);
    if (!data) return nil;
    @synchronized(d.buffers) {
        return d.buffers[@((uintptr_t)data)];
    }
}

neat_status metal_slot(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, int slot, size_t bytes,
                       void **ptr) {
    NMMetalCmdbuf *c = metal_cb(cb);
    int64_t i = c->cur * METAL_SLOTS + slot;
    if (i >= c->nslots)
        return nm_error(NEAT_ERR_INTERNAL, "%s: scratch slot %d of op %lld out of range", op->fn,
                        slot, (long long)c->cur);
    if (c->slot_ptr[i] && c->slot_bytes[i] >= bytes) {
        *ptr = c->slot_ptr[i];
        return NEAT_OK;
    }
    /* The first submission sizes each slot; the block stays with the buffer (replays reuse
     * it; the core returns it to the pool when the buffer is reset or destroyed). */
    void *p;
    neat_status st = nm_scratch_alloc(cb, bytes, &p);
    if (st) return st;
    c->slot_ptr[i] = p;
    c->slot_bytes[i] = bytes;
    *ptr = p;
    return NEAT_OK;
}

id metal_cached(nm_device *dev, const nm_op *op, NSString *key, const char *what,
                id (^build)(void)) {
    NMMetalDevice *d = metal_dev(dev);
    id obj = d.cache[key];
    if (obj) return obj;
    @try {
        obj = build();
    } @catch (NSException *e) {
        nm_error(NEAT_ERR_BACKEND_ERROR, "%s: building %s raised %s: %s", op->fn, what,
                 e.name.UTF8String, e.reason ? e.reason.UTF8String : "");
        return nil;
    }
    if (!obj) {
        nm_error(NEAT_ERR_BACKEND_ERROR, "%s: building %s returned nil", op->fn, what);
        return nil;
    }
    if (d.cacheOrder.count >= METAL_CACHE_MAX) { /* oldest first out */
        [d.cache removeObjectForKey:d.cacheOrder[0]];
        [d.cacheOrder removeObjectAtIndex:0];
    }
    d.cache[key] = obj;
    [d.cacheOrder addObject:key];
    return obj;
}

/* Bytes of a tensor of `type` (its low 16 bits are the element's bit width) and shape. */
static size_t shape_bytes(MPSShape *shape, MPSDataType type) {
    size_t n = (type & 0xffff) / 8;
    for (NSNumber *s in shape) n *= s.unsignedLongLongValue;
    return n;
}

/* The buffer of `data` seen as a tensor of shape and type (the placeholder's or the
 * result's: float32, or float16 for half.m's casts). */
static neat_status tensor_data(nm_device *dev, const nm_op *op, const void *data, MPSShape *shape,
                               MPSDataType type, const char *role, int i,
                               MPSGraphTensorData **out) {
    id<MTLBuffer> b = metal_buffer(dev, data);
    if (!b)
        return nm_error(NEAT_ERR_INTERNAL, "%s: %s %d is not in an MTLBuffer of the device", op->fn,
                        role, i);
    MPSGraphTensorData *td = [[MPSGraphTensorData alloc] initWithMTLBuffer:b
                                                                     shape:shape
                                                                  dataType:type];
    if (!td)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: -[MPSGraphTensorData initWithMTLBuffer:shape:dataType:] returned nil "
                        "for %s %d",
                        op->fn, role, i);
    *out = td;
    return NEAT_OK;
}

neat_status metal_run(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, NMGraph *g, void *const *in,
                      void *const *out) {
    NMMetalDevice *d = metal_dev(dev);
    NSMutableDictionary<MPSGraphTensor *, MPSGraphTensorData *> *feeds =
        [NSMutableDictionary dictionary];
    NSMutableDictionary<MPSGraphTensor *, MPSGraphTensorData *> *results =
        [NSMutableDictionary dictionary];
    NSUInteger nin = g.inputs.count, nout = g.outputs.count;
    void *via[METAL_SLOTS] = {0};
    if (nout >= METAL_SLOT_HALF)
        return nm_error(NEAT_ERR_INTERNAL, "%s: a graph of %lu outputs", op->fn,
                        (unsigned long)nout);
    for (NSUInteger i = 0; i < nin; i++) {
        MPSGraphTensorData *td;
        neat_status st = tensor_data(dev, op, in[i], g.inputShapes[i], g.inputs[i].dataType,
                                     "input", (int)i, &td);
        if (st) return st;
        feeds[g.inputs[i]] = td;
    }
    for (NSUInteger o = 0; o < nout; o++) {
        void *dst = out[o];
        for (NSUInteger i = 0; i < nin; i++)
            if (in[i] == out[o]) { /* MPSGraph does not promise in-place: go through a slot */
                neat_status st =
                    metal_slot(dev, cb, op, METAL_SLOT_ALIAS + (int)o,
                               shape_bytes(g.outputShapes[o], g.outputs[o].dataType), &via[o]);
                if (st) return st;
                dst = via[o];
                break;
            }
        MPSGraphTensorData *td;
        neat_status st = tensor_data(dev, op, dst, g.outputShapes[o], g.outputs[o].dataType,
                                     "output", (int)o, &td);
        if (st) return st;
        results[g.outputs[o]] = td;
    }
    @try {
        [g.graph encodeToCommandBuffer:d.mcb
                                 feeds:feeds
                      targetOperations:nil
                     resultsDictionary:results
                   executionDescriptor:nil];
    } @catch (NSException *e) {
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: -[MPSGraph encodeToCommandBuffer:feeds:targetOperations:"
                        "resultsDictionary:executionDescriptor:] raised %s: %s",
                        op->fn, e.name.UTF8String, e.reason ? e.reason.UTF8String : "");
    }
    for (NSUInteger o = 0; o < nout; o++)
        if (via[o]) {
            neat_status st = metal_copy(dev, op, out[o], via[o],
                                        shape_bytes(g.outputShapes[o], g.outputs[o].dataType));
            if (st) return st;
        }
    return NEAT_OK;
}

neat_status metal_blit_buffers(nm_device *dev, const nm_op *op, id<MTLBuffer> dst,
                               id<MTLBuffer> src, size_t bytes) {
    id<MTLBlitCommandEncoder> enc = [metal_dev(dev).mcb blitCommandEncoder];
    if (!enc)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: -[MTLCommandBuffer blitCommandEncoder] returned nil", op->fn);
    if (src)
        [enc copyFromBuffer:src sourceOffset:0 toBuffer:dst destinationOffset:0 size:bytes];
    else
        [enc fillBuffer:dst range:NSMakeRange(0, bytes) value:0];
    [enc endEncoding];
    return NEAT_OK;
}

/* Copy (src) or zero (src NULL) bytes of tensor memory. */
static neat_status blit(nm_device *dev, const nm_op *op, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return NEAT_OK;
    id<MTLBuffer> bd = metal_buffer(dev, dst), bs = src ? metal_buffer(dev, src) : nil;
    if (!bd || (src && !bs))
        return nm_error(NEAT_ERR_INTERNAL, "%s: a blit operand is not in an MTLBuffer", op->fn);
    return metal_blit_buffers(dev, op, bd, bs, bytes);
}

neat_status metal_copy(nm_device *dev, const nm_op *op, void *dst, const void *src, size_t bytes) {
    return dst == src ? NEAT_OK : blit(dev, op, dst, src, bytes);
}

neat_status metal_zero(nm_device *dev, const nm_op *op, void *dst, size_t bytes) {
    return blit(dev, op, dst, NULL, bytes);
}

neat_status metal_scale_into(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, const float *src,
                             float *dst, int64_t n, float alpha) {
    if (n == 0) return NEAT_OK;
    NSString *key = [NSString stringWithFormat:@"scale:%lld:%a", (long long)n, (double)alpha];
    NMGraph *g = metal_cached(dev, op, key, "the scale graph", ^id {
      MPSGraph *gr = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n);
      MPSGraphTensor *x = metal_input(gr, s);
      MPSGraphTensor *y = [gr multiplicationWithPrimaryTensor:x
                                              secondaryTensor:metal_const(gr, alpha)
                                                         name:nil];
      return metal_graph(gr, @[ x ], @[ s ], @[ y ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {(void *)src}, *out[] = {dst};
    return metal_run(dev, cb, op, g, in, out);
}

/* ---- graph building ------------------------------------------------------------------ */

NMGraph *metal_graph(MPSGraph *g, NSArray<MPSGraphTensor *> *in, NSArray<MPSShape *> *in_shapes,
                     NSArray<MPSGraphTensor *> *out, NSArray<MPSShape *> *out_shapes) {
    for (MPSGraphTensor *t in out)
        if (!t) return nil;
    NMGraph *r = [NMGraph new];
    r.graph = g;
    r.inputs = in;
    r.inputShapes = in_shapes;
    r.outputs = out;
    r.outputShapes = out_shapes;
    return r;
}

MPSShape *metal_shape(int n, const int64_t *dims) {
    NSMutableArray<NSNumber *> *s = [NSMutableArray arrayWithCapacity:(NSUInteger)n];
    for (int i = 0; i < n; i++) [s addObject:@(dims[i])];
    return s;
}

MPSShape *metal_layout_shape(int nhwc, int64_t n, int64_t c, int64_t h, int64_t w) {
    return nhwc ? METAL_SHAPE(n, h, w, c) : METAL_SHAPE(n, c, h, w);
}

MPSGraphTensor *metal_input(MPSGraph *g, MPSShape *shape) {
    return [g placeholderWithShape:shape dataType:MPSDataTypeFloat32 name:nil];
}

MPSGraphTensor *metal_const(MPSGraph *g, double v) {
    return [g constantWithScalar:v dataType:MPSDataTypeFloat32];
}

const char *metal_act_name(neat_activation act) {
    static const char *const names[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    return (unsigned)act < 5 ? names[act] : "?";
}

/* sigmoid(v) = 1 / (1 + e^-v) */
static MPSGraphTensor *sigmoid(MPSGraph *g, MPSGraphTensor *v) {
    return [g sigmoidWithTensor:v name:nil];
}

/* 2u = 2 sqrt(2/pi) (x + 0.044715 x^3); gelu(x) = x sigmoid(2u) = 0.5 x (1 + tanh u) */
static MPSGraphTensor *gelu_two_u(MPSGraph *g, MPSGraphTensor *x) {
    MPSGraphTensor *x3 = [g multiplicationWithPrimaryTensor:[g squareWithTensor:x name:nil]
                                            secondaryTensor:x
                                                       name:nil];
    MPSGraphTensor *inner =
        [g additionWithPrimaryTensor:x
                     secondaryTensor:[g multiplicationWithPrimaryTensor:x3
                                                        secondaryTensor:metal_const(g, 0.044715)
                                                                   name:nil]
                                name:nil];
    return [g multiplicationWithPrimaryTensor:inner
                              secondaryTensor:metal_const(g, 2.0 * sqrt(2.0 / M_PI))
                                         name:nil];
}

MPSGraphTensor *metal_act(MPSGraph *g, neat_activation act, MPSGraphTensor *x) {
    switch (act) {
    case NEAT_ACT_NONE: return x;
    case NEAT_ACT_RELU: /* x < 0 ? 0 : x  (a NaN stays NaN, -0 stays -0, as the CPU's) */
        return [g selectWithPredicateTensor:[g lessThanWithPrimaryTensor:x
                                                         secondaryTensor:metal_const(g, 0.0)
                                                                    name:nil]
                        truePredicateTensor:metal_const(g, 0.0)
                       falsePredicateTensor:x
                                       name:nil];
    case NEAT_ACT_SIGMOID: return sigmoid(g, x);
    case NEAT_ACT_TANH: return [g tanhWithTensor:x name:nil];
    case NEAT_ACT_GELU:
        return [g multiplicationWithPrimaryTensor:x
                                  secondaryTensor:sigmoid(g, gelu_two_u(g, x))
                                             name:nil];
    }
    return nil;
}

MPSGraphTensor *metal_act_grad(MPSGraph *g, neat_activation act, MPSGraphTensor *x,
                               MPSGraphTensor *y, MPSGraphTensor *dy) {
    MPSGraphTensor *one = metal_const(g, 1.0);
    switch (act) {
    case NEAT_ACT_NONE: return dy;
    case NEAT_ACT_RELU: /* y > 0 ? dy : 0 */
        return [g selectWithPredicateTensor:[g greaterThanWithPrimaryTensor:y
                                                            secondaryTensor:metal_const(g, 0.0)
                                                                       name:nil]
                        truePredicateTensor:dy
                       falsePredicateTensor:metal_const(g, 0.0)
                                       name:nil];
    case NEAT_ACT_SIGMOID: /* dy y (1 - y) */
        return [g multiplicationWithPrimaryTensor:dy
                                  secondaryTensor:
                                      [g multiplicationWithPrimaryTensor:y
                                                         secondaryTensor:
                                                             [g subtractionWithPrimaryTensor:one
                                                                             secondaryTensor:y
                                                                                        name:nil]
                                                                    name:nil]
                                             name:nil];
    case NEAT_ACT_TANH: /* dy (1 - y^2) */
        return [g
            multiplicationWithPrimaryTensor:dy
                            secondaryTensor:[g subtractionWithPrimaryTensor:one
                                                            secondaryTensor:[g squareWithTensor:y
                                                                                           name:nil]
                                                                       name:nil]
                                       name:nil];
    case NEAT_ACT_GELU: { /* s = sigmoid(2u): dy (s + x s (1 - s) 2 du/dx) */
        MPSGraphTensor *s = sigmoid(g, gelu_two_u(g, x));
        MPSGraphTensor *one_minus_s = [g subtractionWithPrimaryTensor:one
                                                      secondaryTensor:s
                                                                 name:nil];
        MPSGraphTensor *x2 = [g squareWithTensor:x name:nil];
        MPSGraphTensor *du = [g
            multiplicationWithPrimaryTensor:
                [g additionWithPrimaryTensor:one
                             secondaryTensor:[g multiplicationWithPrimaryTensor:x2
                                                                secondaryTensor:metal_const(
                                                                                    g,
                                                                                    3.0 * 0.044715)
                                                                           name:nil]
                                        name:nil]
                            secondaryTensor:metal_const(g, 2.0 * sqrt(2.0 / M_PI))
                                       name:nil];
        MPSGraphTensor *t =
            [g multiplicationWithPrimaryTensor:[g multiplicationWithPrimaryTensor:x
                                                                  secondaryTensor:s
                                                                             name:nil]
                               secondaryTensor:[g multiplicationWithPrimaryTensor:one_minus_s
                                                                  secondaryTensor:du
                                                                             name:nil]
                                          name:nil];
        return [g multiplicationWithPrimaryTensor:dy
                                  secondaryTensor:[g additionWithPrimaryTensor:s
                                                               secondaryTensor:t
                                                                          name:nil]
                                             name:nil];
    }
    }
    return nil;
}

/* ---- layer backward (linear.m, conv.m) ----------------------------------------------- */

neat_status metal_layer_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op,
                                 const metal_layer *l, NSString *key, const char *what,
                                 MPSShape *sx, MPSShape *sw, MPSShape *sb, MPSShape *sy,
                                 metal_layer_z zf, metal_layer_grad gf) {
    neat_activation act = l->act;
    int acc = l->acc != 0;
    int gelu = act == NEAT_ACT_GELU, bias = gelu && l->b;
    int need_x = l->dw || gelu, need_w = l->dx || gelu, need_y = act != NEAT_ACT_NONE && !gelu;
    NSString *full =
        [NSString stringWithFormat:@"%@:%s:%d%d%d:%d:%d", key, metal_act_name(act), l->dx != NULL,
                                   l->dw != NULL, l->db != NULL, bias, acc];
    NMGraph *gr = metal_cached(dev, op, full, what, ^id {
      MPSGraph *m = [MPSGraph new];
      NSMutableArray *ins = [NSMutableArray array], *ishapes = [NSMutableArray array];
      NSMutableArray *outs = [NSMutableArray array], *oshapes = [NSMutableArray array];
      MPSGraphTensor *x = nil, *w = nil, *y = nil, *z = nil, *dy, *b = nil;
#define INPUT(var, shape)                                                                          \
    do {                                                                                           \
        var = metal_input(m, shape);                                                               \
        [ins addObject:var];                                                                       \
        [ishapes addObject:shape];                                                                 \
    } while (0)
      if (need_x) INPUT(x, sx);
      if (need_w) INPUT(w, sw);
      if (need_y) INPUT(y, sy);
      INPUT(dy, sy);
      if (bias) INPUT(b, sb);
      if (gelu && !(z = zf(m, x, w, b))) return nil;
      MPSGraphTensor *dz = metal_act_grad(m, act, z, y, dy);
      MPSShape *rs[3] = {sx, sw, sb};
      const nm_tensor *want[3] = {l->dx, l->dw, l->db}; /* (a block cannot capture an array) */
      for (int i = 0; i < 3; i++) {
          if (!want[i]) continue;
          MPSGraphTensor *r = gf(m, i, dz, x, w);
          if (!r) return nil;
          if (acc) {
              MPSGraphTensor *old;
              INPUT(old, rs[i]);
              r = [m additionWithPrimaryTensor:old secondaryTensor:r name:nil];
          }
          [outs addObject:r];
          [oshapes addObject:rs[i]];
      }
#undef INPUT
      return metal_graph(m, ins, ishapes, outs, oshapes);
    });
    if (!gr) return NEAT_ERR_BACKEND_ERROR;
    /* the same order as the graph's placeholders and results */
    void *inputs[8], *outputs[3];
    int ni = 0, no = 0;
    if (need_x) inputs[ni++] = l->x->data;
    if (need_w) inputs[ni++] = l->w->data;
    if (need_y) inputs[ni++] = l->y->data;
    inputs[ni++] = l->dy->data;
    if (bias) inputs[ni++] = l->b->data;
    nm_tensor *grads[3] = {l->dx, l->dw, l->db};
    for (int i = 0; i < 3; i++) {
        if (!grads[i]) continue;
        if (acc) inputs[ni++] = grads[i]->data;
        outputs[no++] = grads[i]->data;
    }
    return metal_run(dev, cb, op, gr, inputs, outputs);
}
