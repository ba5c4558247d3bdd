/*
 * metal.h — the Metal backend's private header (Objective-C, ARC; macOS 12+).
 *
 * Every op runs on Apple's own primitives: MPSMatrixMultiplication (matmul), MPSMatrixSoftMax
 * (softmax rows) and MPSGraph for everything else (linear, convolution, pooling, sums,
 * every backward, the loss and the optimizers). No own Metal Shading Language kernel.
 *
 * Files: backend.m (table, device, memory, copies, op_check), submit.m (submissions: command
 * buffers, completion, the run-time checks' failures), check.m (the checked ops' validity
 * records), copy.m (the recorded host copies), graph.m (graph cache, MTLBuffer lookup,
 * scratch slots, running a cached graph, blits, activation math),
 * matmul.m (matmul), linear.m (linear forward/backward), conv.m (conv2d forward/backward),
 * pool.m (maxpool2d forward/backward), reduce.m (sum, softmax, softmax backward),
 * elementwise.m (add, scale, fill, activations), loss.m (softmax cross-entropy),
 * optim.m (SGD, Adam), half.m (f16 tensors: neat_cast, ops on float32 copies).
 *
 * Memory: every tensor lives in an MTLResourceStorageModeShared buffer from the core's pool;
 * mem_alloc hands the pool the buffer's CPU-visible `contents` pointer, so tensor->data is
 * that pointer and the device maps it back to its id<MTLBuffer> (metal_buffer). Pool blocks
 * are whole buffers (the pool never splits one), so tensors start at offset 0.
 */
#ifndef NEATML_METAL_H
#define NEATML_METAL_H

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#import <MetalPerformanceShaders/MetalPerformanceShaders.h>
#import <MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h>

#include "../backend.h"

/* Bounded caches: graphs and MPS kernels by key (op + shapes + options). */
#define METAL_CACHE_MAX 512
/* Scratch slots per op (pool memory kept for the buffer's life, reused by replays). */
#define METAL_SLOT_FLAG 0  /* a checked op's validity record (check.m) */
#define METAL_SLOT_ALIAS 1 /* 1..5: an output that is also an input goes through a slot */
#define METAL_SLOT_HALF 6  /* 6 + i: the float32 copy of the op's f16 tensor i (half.m) */
#define METAL_SLOTS (METAL_SLOT_HALF + NM_OP_MAX_TENSORS)

/* One compiled-once MPSGraph: its placeholders (fed in order) and results (in order). */
@interface NMGraph : NSObject
@property(nonatomic, strong) MPSGraph *graph;
@property(nonatomic, strong) NSArray<MPSGraphTensor *> *inputs;
@property(nonatomic, strong) NSArray<MPSShape *> *inputShapes;
@property(nonatomic, strong) NSArray<MPSGraphTensor *> *outputs;
@property(nonatomic, strong) NSArray<MPSShape *> *outputShapes;
@end

@interface NMMetalDevice : NSObject {
  @public
    pthread_mutex_t lock; /* guards done_seq (written under it, read atomically) and finished */
    pthread_cond_t cv;    /* broadcast when done_seq grows */
    uint64_t done_seq;    /* every submission up to it has completed (backend.h: completed) */
    void *chain;          /* encoder: the record of the segment's last checked op, or zeros */
}
@property(nonatomic, strong) id<MTLDevice> device;
@property(nonatomic, strong) id<MTLCommandQueue> queue;
/* Submissions are encoded in order on this serial queue (commit returns at once). */
@property(nonatomic, strong) dispatch_queue_t encoder;
@property(nonatomic, strong) NSMutableDictionary<NSNumber *, id<MTLBuffer>> *buffers;
@property(nonatomic, strong) NSMutableDictionary<NSString *, id> *cache;
@property(nonatomic, strong) NSMutableArray<NSString *> *cacheOrder;
/* Submissions that completed after a later one did (their seqs), until done_seq reaches them. */
@property(nonatomic, strong) NSMutableIndexSet *finished;
/* Four zero floats in the buffer map: the prior record of a segment's first checked op. */
@property(nonatomic, strong) id<MTLBuffer> zeros;
/* Encoder state (touched only on the encoder queue): the command buffer being encoded, the
 * submission's staged host sources (op index -> buffer) and the segment's to-host copies. */
@property(nonatomic, strong) MPSCommandBuffer *mcb;
@property(nonatomic, strong) NSDictionary<NSNumber *, id<MTLBuffer>> *fromHost;
@property(nonatomic, strong) NSMutableArray *toHost;
@end

/* A to-host copy waiting for its command buffer: staging (blitted at the op's place) -> dst. */
@interface NMHostCopy : NSObject
@property(nonatomic, strong) id<MTLBuffer> staging;
@property(nonatomic) void *dst;
@property(nonatomic) size_t bytes;
@end

@interface NMMetalCmdbuf : NSObject {
  @public
    int64_t cur; /* index of the op being encoded */
    int64_t nslots;
    void **slot_ptr; /* nops * METAL_SLOTS scratch blocks, NULL until first used */
    size_t *slot_bytes;
}
@end

static inline NMMetalDevice *metal_dev(nm_device *dev) {
    return (__bridge NMMetalDevice *)dev->impl;
}
static inline NMMetalCmdbuf *metal_cb(nm_cmdbuf *cb) { return (__bridge NMMetalCmdbuf *)cb->impl; }

/* ---- graph.m ------------------------------------------------------------------------- */

/* The buffer whose contents pointer is `data`; nil when none. */
id<MTLBuffer> metal_buffer(nm_device *dev, const void *data);
/* Scratch slot `slot` of the op being encoded, at least `bytes` long. */
neat_status metal_slot(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, int slot, size_t bytes,
                       void **ptr);
/* The cached object under key, built by `build` on a miss (which may throw: reported as
 * BACKEND_ERROR naming op->fn and `what`). nil on failure, with the message set. */
id metal_cached(nm_device *dev, const nm_op *op, NSString *key, const char *what,
                id (^build)(void));
/* Encode graph g on the current command buffer: in[i] feeds g.inputs[i], out[i] receives
 * g.outputs[i]. An output that is also an input is computed into a slot and copied back. */
neat_status metal_run(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, NMGraph *g, void *const *in,
                      void *const *out);
/* Blit copy and blit zero on the current command buffer. */
neat_status metal_copy(nm_device *dev, const nm_op *op, void *dst, const void *src, size_t bytes);
neat_status metal_zero(nm_device *dev, const nm_op *op, void *dst, size_t bytes);
/* dst = alpha * src over n elements (a NaN or inf in src stays NaN with alpha 0). */
neat_status metal_scale_into(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, const float *src,
                             float *dst, int64_t n, float alpha);

/* An NMGraph from its placeholders and results (shapes taken from the given arrays). */
NMGraph *metal_graph(MPSGraph *g, NSArray<MPSGraphTensor *> *in, NSArray<MPSShape *> *in_shapes,
                     NSArray<MPSGraphTensor *> *out, NSArray<MPSShape *> *out_shapes);
MPSGraphTensor *metal_input(MPSGraph *g, MPSShape *shape);
MPSGraphTensor *metal_const(MPSGraph *g, double v);
MPSShape *metal_shape(int n, const int64_t *dims);
#define METAL_SHAPE(...)                                                                           \
    metal_shape((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
/* An image tensor's shape from its sizes: [n,c,h,w] (NCHW), or [n,h,w,c] when nhwc. */
MPSShape *metal_layout_shape(int nhwc, int64_t n, int64_t c, int64_t h, int64_t w);
/* act(x), and dy act'(.) from y (relu, sigmoid, tanh) or x (gelu), as neatml.h defines
 * them (relu keeps NaN: x < 0 ? 0 : x; gelu is the tanh form). */
MPSGraphTensor *metal_act(MPSGraph *g, neat_activation act, MPSGraphTensor *x);
MPSGraphTensor *metal_act_grad(MPSGraph *g, neat_activation act, MPSGraphTensor *x,
                               MPSGraphTensor *y, MPSGraphTensor *dy);
/* The name of an activation, for cache keys. */
const char *metal_act_name(neat_activation act);

/* The backward pass of a layer y = act(f(x, w) + b) (linear, conv2d): from dy the gradients
 * dx, dw, db, each when given (NULL: not wanted), added into it when acc. The layer gives
 * its shapes, its cache key (the geometry), z = f(x, w) + b (needed for gelu, whose
 * gradient takes z) and the product for gradient i (0 dx, 1 dw, 2 db) of dz; the
 * placeholders, the activation's gradient, accumulation and the buffers, in one order, are
 * here. A nil from either block fails the build (BACKEND_ERROR naming `what`). */
typedef struct metal_layer {
    const nm_tensor *x, *w, *y, *dy, *b;
    nm_tensor *dx, *dw, *db;
    neat_activation act;
    int acc;
} metal_layer;
typedef MPSGraphTensor * (^metal_layer_z)(MPSGraph *g, MPSGraphTensor *x, MPSGraphTensor *w,
                                          MPSGraphTensor *b);
typedef MPSGraphTensor * (^metal_layer_grad)(MPSGraph *g, int i, MPSGraphTensor *dz,
                                             MPSGraphTensor *x, MPSGraphTensor *w);
neat_status metal_layer_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op,
                                 const metal_layer *l, NSString *key, const char *what,
                                 MPSShape *sx, MPSShape *sw, MPSShape *sb, MPSShape *sy,
                                 metal_layer_z zf, metal_layer_grad gf);

/* ---- check.m: ops that check their input while they run (NM_OPF_RUNTIME_CHECK) ----------
 * Each writes a record [failed so far, valid, a, b] into its METAL_SLOT_FLAG slot and reads
 * the record of the checked op before it in the same command buffer (`prior`): it writes its
 * outputs only when it is valid and nothing before it failed (ok). */
/* The prior record and this op's record slot; the op becomes the segment's last checked op. */
neat_status metal_check_slots(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, void **prior,
                              void **record);
/* In a graph: record [4] from prior [4], valid [1] (bool), a [1], b [1]; *ok [1] (bool). */
MPSGraphTensor *metal_check_record(MPSGraph *m, MPSGraphTensor *prior, MPSGraphTensor *valid,
                                   MPSGraphTensor *a, MPSGraphTensor *b, MPSGraphTensor **ok);
/* After the command buffer completed: the first checked op of [first, end) whose record says
 * invalid, with its failure; -1 when none. */
int64_t metal_check_failed(nm_cmdbuf *cb, int64_t first, int64_t end, neat_status *status,
                           char *detail, size_t size);

/* ---- submit.m / copy.m ----------------------------------------------------------------- */

neat_status metal_submit(nm_device *dev, nm_cmdbuf *cb, uint64_t seq);
uint64_t metal_completed(nm_device *dev);
neat_status metal_wait_seq(nm_device *dev, uint64_t seq);
/* The submission's staged sources of its neat_copy_from_host ops (op index -> buffer). */
neat_status metal_stage_host_copies(nm_device *dev, nm_cmdbuf *cb,
                                    NSDictionary<NSNumber *, id<MTLBuffer>> **out);
/* Blit between two buffers at offset 0 on the current command buffer. */
neat_status metal_blit_buffers(nm_device *dev, const nm_op *op, id<MTLBuffer> dst,
                               id<MTLBuffer> src, size_t bytes);

/* ---- half.m: f16 tensors ------------------------------------------------------------------ */

/* UNSUPPORTED (with the message) for a half tensor where the backend does not run it. */
neat_status metal_half_check(const nm_op *op);
/* Encode op: its table function, on float32 copies of its f16 tensors when it has any. */
neat_status metal_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);

/* ---- the ops ------------------------------------------------------------------------- */

NM_DECLARE_OPS(metal)

#endif
