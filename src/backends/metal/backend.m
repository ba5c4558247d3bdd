/*
 * backend.m — the Metal backend's table: device, memory (shared-storage MTLBuffers),
 * copies, and op_check.
 *
 * Submission (submit, completed, wait_seq) is submit.m's; the run-time checks are check.m's.
 *
 * Later (not built): the Metal counterpart of the CUDA graph is one MPSGraph for a whole
 * recorded buffer. Every op here already is a function from placeholders to results, so
 * the buffer's ops can be chained in one MPSGraph whose placeholders are the distinct
 * tensors read before being written and whose results are every tensor written, compiled
 * once with -[MPSGraph compileWithDevice:feeds:targetTensors:targetOperations:
 * compilationDescriptor:] into an MPSGraphExecutable and run with -[MPSGraphExecutable
 * encodeToCommandBuffer:inputsArray:resultsArray:executionDescriptor:] at each replay.
 * Two things keep it out for now: matmul and softmax go through MPS kernels (they would
 * become MPSGraph matrixMultiplication/softMax nodes), and tensors that are read and
 * written by several ops (a parameter updated in place) need SSA renaming inside the
 * graph; a loss inside the buffer would also have to move its validity check to the end.
 */
#import "metal.h"
#include "../../core/dtype.h"

#include <stdio.h>
#include <string.h>

@implementation NMMetalDevice
- (instancetype)init {
    if ((self = [super init])) {
        pthread_mutex_init(&lock, NULL);
        pthread_cond_init(&cv, NULL);
    }
    return self;
}
- (void)dealloc {
    pthread_mutex_destroy(&lock);
    pthread_cond_destroy(&cv);
}
@end

@implementation NMMetalCmdbuf
- (void)dealloc {
    free(slot_ptr);
    free(slot_bytes);
}
@end

/* ---- device ---------------------------------------------------------------------------- */

static neat_status metal_device_open(nm_device *dev, int index) {
    static const char fn[] = "neat_device_create";
    @autoreleasepool {
        id<MTLDevice> mtl = nil;
        if (index == 0) {
            mtl = MTLCreateSystemDefaultDevice();
            if (!mtl)
                return nm_error(NEAT_ERR_UNSUPPORTED,
                                "%s: no Metal device: MTLCreateSystemDefaultDevice() returned nil",
                                fn);
        } else {
            NSArray<id<MTLDevice>> *all = MTLCopyAllDevices();
            if ((NSUInteger)index >= all.count)
                return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no Metal device %d: %lu present", fn,
                                index, (unsigned long)all.count);
            mtl = all[(NSUInteger)index];
        }
        if (!MPSSupportsMTLDevice(mtl))
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: Metal device \"%s\" is not supported by MPS",
                            fn, mtl.name.UTF8String);
        NMMetalDevice *d = [NMMetalDevice new];
        d.device = mtl;
        d.queue = [mtl newCommandQueue];
        if (!d.queue)
            return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: -[MTLDevice newCommandQueue] returned nil",
                            fn);
        d.encoder = dispatch_queue_create("neatml.metal.encoder", DISPATCH_QUEUE_SERIAL);
        if (!d.encoder)
            return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: dispatch_queue_create returned NULL", fn);
        d.buffers = [NSMutableDictionary dictionary];
        d.cache = [NSMutableDictionary dictionary];
        d.cacheOrder = [NSMutableArray array];
        d.finished = [NSMutableIndexSet indexSet];
        d.zeros = [mtl newBufferWithLength:4 * sizeof(float) options:MTLResourceStorageModeShared];
        if (!d.zeros)
            return nm_error(NEAT_ERR_BACKEND_ERROR,
                            "%s: -[MTLDevice newBufferWithLength:options:] "
                            "returned nil for 16 bytes",
                            fn);
        memset(d.zeros.contents, 0, 4 * sizeof(float));
        d.buffers[@((uintptr_t)d.zeros.contents)] = d.zeros;
        dev->impl = (__bridge_retained void *)d;
        snprintf(dev->props.name, sizeof dev->props.name, "%.127s", mtl.name.UTF8String);
        /* What Metal recommends this process keep resident, less what it has allocated. */
        uint64_t working_set = mtl.recommendedMaxWorkingSetSize,
                 allocated = mtl.currentAllocatedSize;
        dev->props.total_memory = (int64_t)working_set;
        dev->mem_available = working_set > allocated ? (int64_t)(working_set - allocated) : 0;
        dev->props.num_threads = 1;
    }
    return NEAT_OK;
}

static void metal_device_close(nm_device *dev) {
    if (!dev->impl) return;
    @autoreleasepool {
        NMMetalDevice *d = (__bridge_transfer NMMetalDevice *)dev->impl;
        dev->impl = NULL;
        /* The core waited for every submission; the encoder may still be leaving the last. */
        dispatch_sync(d.encoder, ^{/* drain */});
        [d.cache removeAllObjects];
        [d.buffers removeAllObjects];
    }
}

/* ---- memory ----------------------------------------------------------------------------- */

static neat_status metal_mem_alloc(nm_device *dev, size_t bytes, void **ptr) {
    *ptr = NULL;
    if (bytes == 0) return NEAT_OK;
    @autoreleasepool {
        NMMetalDevice *d = metal_dev(dev);
        if (bytes > d.device.maxBufferLength)
            return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                            "-[MTLDevice newBufferWithLength:] of %zu bytes: "
                            "the device's maxBufferLength is %lu",
                            bytes, (unsigned long)d.device.maxBufferLength);
        id<MTLBuffer> b = [d.device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
        if (!b)
            return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                            "-[MTLDevice newBufferWithLength:options:] of %zu bytes returned nil",
                            bytes);
        void *p = b.contents;
        @synchronized(d.buffers) {
            d.buffers[@((uintptr_t)p)] = b;
        }
        *ptr = p;
    }
    return NEAT_OK;
}

static void metal_mem_free(nm_device *dev, void *ptr, size_t bytes) {
    if (!ptr) return;
    @autoreleasepool {
        NMMetalDevice *d = metal_dev(dev);
        @synchronized(d.buffers) {
            [d.buffers removeObjectForKey:@((uintptr_t)ptr)];
        }
    }
}

/* Unified memory: the device is idle when these are called, so a memcpy is the copy. */
static neat_status metal_copy_in(nm_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return NEAT_OK;
}

static neat_status metal_copy_out(nm_device *dev, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return NEAT_OK;
}

/* ---- command buffers ----------------------------------------------------------------------- */

/* The core calls this on an idle buffer (its last submission completed). */
static void metal_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb) {
    if (!cb->impl) return;
    NMMetalCmdbuf *c = (__bridge_transfer NMMetalCmdbuf *)cb->impl;
    cb->impl = NULL;
    (void)c; /* released here; its slots are the core's scratch, freed after this */
}

/* ---- record-time checks ------------------------------------------------------------------- */

/* What MPS and MPSGraph cannot do exactly as neatml.h says: refused when recorded. */
static neat_status metal_op_check(nm_device *dev, const nm_op *op) {
    /* element types (half.m): f16 on float32 copies, bf16 refused; a fill with +0 (all bits
     * zero in every type: neat_tensor_create_typed's zero) runs in any type */
    if (!(op->kind == NM_OP_FILL && nm_is_zero_bits(op->u.fill.value))) {
        neat_status st = metal_half_check(op);
        if (st) return st;
    }
    switch (op->kind) {
    case NM_OP_LINEAR_FORWARD: {
        const nm_linear_forward_args *a = &op->u.linear_forward;
        if (a->in == 0 && a->n > 0 && a->out > 0)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: metal backend: in = 0 (an empty product "
                            "giving y = act(b)) is not run by MPSGraph's matrix multiplication",
                            op->fn);
        break;
    }
    case NM_OP_LINEAR_BACKWARD: {
        const nm_linear_backward_args *a = &op->u.linear_backward;
        if (a->in == 0 && a->n > 0 && a->out > 0 && a->act == NEAT_ACT_GELU)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: metal backend: in = 0 with gelu "
                            "(the pre-activation is an empty product)",
                            op->fn);
        break;
    }
    case NM_OP_CONV2D_FORWARD:
    case NM_OP_CONV2D_BACKWARD: {
        const nm_conv_geom *g =
            op->kind == NM_OP_CONV2D_FORWARD ? &op->u.conv2d_forward.g : &op->u.conv2d_backward.g;
        if (g->c == 0 && g->n > 0 && g->k > 0 && g->p > 0 && g->q > 0)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: metal backend: C = 0 input channels "
                            "(an empty convolution) is not run by MPSGraph",
                            op->fn);
        break;
    }
    case NM_OP_SOFTMAX_XENT:
    case NM_OP_SOFTMAX_XENT_BACKWARD:
        /* the validity record holds the bad row as a float: exact up to 2^24 */
        if (op->u.softmax_xent.rows > (1 << 24))
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: metal backend: more than 2^24 rows (%lld)",
                            op->fn, (long long)op->u.softmax_xent.rows);
        break;
    default: break;
    }
    return NEAT_OK;
}

const nm_backend_ops nm_metal_backend = {
    .abi_version = NM_BACKEND_ABI,
    .kind = NEAT_BACKEND_METAL,
    .name = "metal",
    .device_open = metal_device_open,
    .device_close = metal_device_close,
    .mem_alloc = metal_mem_alloc,
    .mem_free = metal_mem_free,
    .copy_in = metal_copy_in,
    .copy_out = metal_copy_out,
    .submit = metal_submit,
    .completed = metal_completed,
    .wait_seq = metal_wait_seq,
    .cmdbuf_release = metal_cmdbuf_release,
    .op_check = metal_op_check,
    .op = NM_OP_TABLE(metal),
};
