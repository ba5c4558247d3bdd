/*
 * backend.m — the Metal backend's table: device, memory (shared-storage MTLBuffers),
 * copies, command-buffer execution, and op_check.
 *
 * Submission: commit hands the buffer to the device's serial encoder queue and returns at
 * once. There, its ops are encoded in order into one MPSCommandBuffer (MPSGraph may split
 * it with commitAndContinue; the queue keeps the order) and committed; its completion
 * handler records the command buffer's error, the device time and the end of the submission
 * for wait(). An op that can fail on data (the loss, on a label that is not a class index)
 * ends its command buffer: the encoder waits for it, reads the op's validity record, and
 * either goes on with the next command buffer or stops the submission there (the failing
 * op wrote nothing: its graph selects the old output when a label is bad). A failure while
 * encoding (a graph that does not build) stops the submission at that op too; what was
 * encoded before it runs, as on the other backends.
 *
 * Replays re-encode every op from the device's graph cache: nothing is rebuilt or recompiled.
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
                                "%s: no Metal device: MTLCreateSystemDefaultDevice() returned nil", fn);
        } else {
            NSArray<id<MTLDevice>> *all = MTLCopyAllDevices();
            if ((NSUInteger)index >= all.count)
                return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no Metal device %d: %lu present", fn, index,
                                (unsigned long)all.count);
            mtl = all[(NSUInteger)index];
        }
        if (!MPSSupportsMTLDevice(mtl))
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: Metal device \"%s\" is not supported by MPS", fn,
                            mtl.name.UTF8String);
        NMMetalDevice *d = [NMMetalDevice new];
        d.device = mtl;
        d.queue = [mtl newCommandQueue];
        if (!d.queue)
            return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: -[MTLDevice newCommandQueue] returned nil", fn);
        d.encoder = dispatch_queue_create("neatml.metal.encoder", DISPATCH_QUEUE_SERIAL);
        if (!d.encoder)
            return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: dispatch_queue_create returned NULL", fn);
        d.buffers = [NSMutableDictionary dictionary];
        d.cache = [NSMutableDictionary dictionary];
        d.cacheOrder = [NSMutableArray array];
        dev->impl = (__bridge_retained void *)d;
        snprintf(dev->props.name, sizeof dev->props.name, "%.127s", mtl.name.UTF8String);
        dev->props.total_memory = (int64_t)mtl.recommendedMaxWorkingSetSize;
        dev->props.num_threads = 1;
    }
    return NEAT_OK;
}

static void wait_idle(NMMetalDevice *d) {
    pthread_mutex_lock(&d->lock);
    while (d->inflight > 0) pthread_cond_wait(&d->cv, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

static void metal_device_close(nm_device *dev) {
    if (!dev->impl) return;
    @autoreleasepool {
        NMMetalDevice *d = (__bridge_transfer NMMetalDevice *)dev->impl;
        dev->impl = NULL;
        wait_idle(d);
        dispatch_sync(d.encoder, ^{ /* drain */ });
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
            return nm_error(NEAT_ERR_OUT_OF_MEMORY, "-[MTLDevice newBufferWithLength:] of %zu bytes: "
                            "the device's maxBufferLength is %lu", bytes,
                            (unsigned long)d.device.maxBufferLength);
        id<MTLBuffer> b = [d.device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
        if (!b)
            return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                            "-[MTLDevice newBufferWithLength:options:] of %zu bytes returned nil", bytes);
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

/* ---- submission --------------------------------------------------------------------------- */

static neat_status cmdbuf_state(nm_cmdbuf *cb) {
    NMMetalCmdbuf *c = [NMMetalCmdbuf new];
    c->nslots = (cb->nops > 0 ? cb->nops : 1) * METAL_SLOTS;
    c->slot_ptr = calloc((size_t)c->nslots, sizeof *c->slot_ptr);
    c->slot_bytes = calloc((size_t)c->nslots, sizeof *c->slot_bytes);
    if (!c->slot_ptr || !c->slot_bytes)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_cmdbuf_commit: out of host memory");
    cb->impl = (__bridge_retained void *)c;
    return NEAT_OK;
}

/* The op's validity record after its command buffer completed: 0 or a failure recorded. */
static int check_record(nm_cmdbuf *cb, int64_t i, char *msg) {
    NMMetalCmdbuf *c = metal_cb(cb);
    const float *rec = c->slot_ptr[i * METAL_SLOTS + METAL_SLOT_FLAG];
    if (!rec || rec[0] < 0.0f) return 0;
    const nm_op *op = &cb->ops[i];
    snprintf(msg, NM_MSG_MAX,
             "%s: labels[%lld] = %g is not a class index in 0..%lld (op %lld of the command buffer)",
             op->fn, (long long)rec[0], (double)rec[1], (long long)op->u.softmax_xent.cols - 1,
             (long long)i);
    return 1;
}

/* Called once per command buffer that ends a submission or a checked op, after it
 * completed: records its error, the validity record of `checked` (>= 0), and when `last`,
 * the submission's end. Returns 1 when the submission must stop. */
static int finish(nm_device *dev, nm_cmdbuf *cb, id<MTLCommandBuffer> done, int64_t first,
                  int64_t end, int64_t checked, int last) {
    NMMetalDevice *d = metal_dev(dev);
    NMMetalCmdbuf *c = metal_cb(cb);
    char msg[NM_MSG_MAX];
    int stop = 0;
    pthread_mutex_lock(&d->lock);
    if (done.status == MTLCommandBufferStatusError || done.error) {
        snprintf(msg, sizeof msg,
                 "neat_cmdbuf_wait: the Metal command buffer of ops %lld..%lld (%s..%s) failed: %s",
                 (long long)first, (long long)end - 1, cb->ops[first].fn, cb->ops[end - 1].fn,
                 done.error ? done.error.localizedDescription.UTF8String : "no NSError given");
        nm_cmdbuf_fail(cb, NEAT_ERR_BACKEND_ERROR, msg);
        stop = 1;
    } else if (checked >= 0 && check_record(cb, checked, msg)) {
        nm_cmdbuf_fail(cb, NEAT_ERR_INVALID_ARGUMENT, msg);
        stop = 1;
    }
    if (c->gpu_start <= 0.0) c->gpu_start = done.GPUStartTime;
    if (last || stop) {
        if (!stop && cb->async_status == NEAT_OK && done.GPUEndTime > c->gpu_start) {
            int64_t ns = (int64_t)((done.GPUEndTime - c->gpu_start) * 1e9);
            __atomic_store_n(&cb->device_ns, ns > 0 ? ns : 1, __ATOMIC_RELEASE);
        }
        cb->pending--;
        d->inflight--;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->lock);
    return stop;
}

static void fail_now(nm_device *dev, nm_cmdbuf *cb, neat_status st, const char *msg) {
    NMMetalDevice *d = metal_dev(dev);
    pthread_mutex_lock(&d->lock);
    nm_cmdbuf_fail(cb, st, msg);
    pthread_mutex_unlock(&d->lock);
}

/* Encode op i; a raise inside is a failure of that op. */
static neat_status encode_op(nm_device *dev, nm_cmdbuf *cb, int64_t i) {
    const nm_op *op = &cb->ops[i];
    metal_cb(cb)->cur = i;
    @try {
        neat_status st = dev->be->op[op->kind](dev, cb, op);
        if (st) {
            char msg[NM_MSG_MAX];
            snprintf(msg, sizeof msg, "%s (op %lld of the command buffer)", neat_last_error(), (long long)i);
            return nm_error(st, "%s", msg);
        }
    } @catch (NSException *e) {
        return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: encoding raised %s: %s (op %lld of the command buffer)",
                        op->fn, e.name.UTF8String, e.reason ? e.reason.UTF8String : "", (long long)i);
    }
    return NEAT_OK;
}

/* Runs on the encoder queue: the whole submission, command buffer after command buffer. */
static void run_submission(nm_device *dev, nm_cmdbuf *cb) {
    NMMetalDevice *d = metal_dev(dev);
    metal_cb(cb)->gpu_start = 0.0;
    int64_t i = 0, n = cb->nops;
    for (;;) {
        @autoreleasepool {
            int64_t first = i, checked = -1;
            neat_status st = NEAT_OK;
            d.mcb = [MPSCommandBuffer commandBufferFromCommandQueue:d.queue];
            for (; i < n; i++) {
                st = encode_op(dev, cb, i);
                if (st) break;
                if (nm_op_flags(cb->ops[i].kind) & NM_OPF_RUNTIME_CHECK &&
                    metal_cb(cb)->slot_ptr[i * METAL_SLOTS + METAL_SLOT_FLAG]) {
                    checked = i++;
                    break;
                }
            }
            if (st) fail_now(dev, cb, st, neat_last_error());
            int last = st != NEAT_OK || i >= n;
            int64_t end = st ? i + 1 : i;
            id<MTLCommandBuffer> root = d.mcb.rootCommandBuffer;
            d.mcb = nil;
            if (last) {
                [root addCompletedHandler:^(id<MTLCommandBuffer> done) {
                    finish(dev, cb, done, first, end, checked, 1);
                }];
                [root commit];
                return;
            }
            [root commit];
            [root waitUntilCompleted];
            if (finish(dev, cb, root, first, end, checked, 0)) return;
        }
    }
}

static neat_status metal_submit(nm_device *dev, nm_cmdbuf *cb) {
    NMMetalDevice *d = metal_dev(dev);
    neat_status st = cb->impl ? NEAT_OK : cmdbuf_state(cb);
    if (st) return st;
    if (cb->nops == 0) return NEAT_OK;
    pthread_mutex_lock(&d->lock);
    cb->pending++;
    d->inflight++;
    pthread_mutex_unlock(&d->lock);
    dispatch_async(d.encoder, ^{
        run_submission(dev, cb);
    });
    return NEAT_OK;
}

static neat_status metal_wait(nm_device *dev, nm_cmdbuf *cb) {
    NMMetalDevice *d = metal_dev(dev);
    pthread_mutex_lock(&d->lock);
    while (cb->pending > 0) pthread_cond_wait(&d->cv, &d->lock);
    neat_status st = cb->async_status;
    if (st != NEAT_OK) {
        nm_set_error_text(cb->async_msg);
        cb->async_status = NEAT_OK;
        cb->async_msg[0] = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

static neat_status metal_synchronize(nm_device *dev) {
    wait_idle(metal_dev(dev));
    return NEAT_OK;
}

static void metal_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb) {
    if (!cb->impl) return;
    NMMetalDevice *d = metal_dev(dev);
    pthread_mutex_lock(&d->lock);
    while (cb->pending > 0) pthread_cond_wait(&d->cv, &d->lock);
    pthread_mutex_unlock(&d->lock);
    NMMetalCmdbuf *c = (__bridge_transfer NMMetalCmdbuf *)cb->impl;
    cb->impl = NULL;
    (void)c; /* released here; its slots are the core's scratch, freed after this */
}

/* ---- record-time checks ------------------------------------------------------------------- */

/* What MPS and MPSGraph cannot do exactly as neatml.h says: refused when recorded. */
static neat_status metal_op_check(nm_device *dev, const nm_op *op) {
    switch (op->kind) {
    case NM_OP_LINEAR_FORWARD: {
        const nm_linear_forward_args *a = &op->u.linear_forward;
        if (a->in == 0 && a->n > 0 && a->out > 0)
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: metal backend: in = 0 (an empty product "
                            "giving y = act(b)) is not run by MPSGraph's matrix multiplication", op->fn);
        break;
    }
    case NM_OP_LINEAR_BACKWARD: {
        const nm_linear_backward_args *a = &op->u.linear_backward;
        if (a->in == 0 && a->n > 0 && a->out > 0 && a->act == NEAT_ACT_GELU)
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: metal backend: in = 0 with gelu "
                            "(the pre-activation is an empty product)", op->fn);
        break;
    }
    case NM_OP_CONV2D_FORWARD:
    case NM_OP_CONV2D_BACKWARD: {
        const nm_conv_geom *g = op->kind == NM_OP_CONV2D_FORWARD ? &op->u.conv2d_forward.g
                                                                 : &op->u.conv2d_backward.g;
        if (g->c == 0 && g->n > 0 && g->k > 0 && g->p > 0 && g->q > 0)
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: metal backend: C = 0 input channels "
                            "(an empty convolution) is not run by MPSGraph", op->fn);
        break;
    }
    case NM_OP_SOFTMAX_XENT:
    case NM_OP_SOFTMAX_XENT_BACKWARD:
        /* the validity record holds the bad row as a float: exact up to 2^24 */
        if (op->u.softmax_xent.rows > (1 << 24))
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: metal backend: more than 2^24 rows (%lld)",
                            op->fn, (long long)op->u.softmax_xent.rows);
        break;
    default:
        break;
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
    .wait = metal_wait,
    .synchronize = metal_synchronize,
    .cmdbuf_release = metal_cmdbuf_release,
    .op_check = metal_op_check,
    .op = NM_OP_TABLE(metal),
};
