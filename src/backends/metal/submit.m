/*
 * submit.m — submissions (backend.h: submit, completed, wait_seq).
 *
 * commit hands the buffer to the device's serial encoder queue and returns at once (submit
 * runs under the device lock and never waits). There, its ops are encoded in order into
 * segments, one MPSCommandBuffer each (MPSGraph may split one with commitAndContinue; the
 * queue keeps the order), committed one after the other.
 *
 * A segment ends after a run of checked ops (check.m: the loss, the optimizers), which
 * chain their validity records so that none writes after one failed. The encoder waits for
 * such a segment and reads its records: on a failure the submission stops there (nothing
 * after it is encoded) and the failing op goes to nm_cmdbuf_fail. A failure while encoding
 * (a graph that does not build, an exception) stops the submission at that op too; what was
 * encoded before it runs. The last segment, when it has no checked op, completes
 * asynchronously: its handler records the command buffer's error, copies the to-host
 * staging buffers (copy.m), the device time, then marks the submission completed. A
 * submission counts as completed only after its failures were handed over and its host
 * copies written.
 *
 * Cost: one GPU round trip per run of checked ops (a training step: the loss, then the
 * optimizer updates at its end), during which the next submission is not encoded.
 *
 * Replays re-encode every op from the device's graph cache: nothing is rebuilt or recompiled.
 */
#import "metal.h"

#include <stdio.h>
#include <string.h>

/* One submission: its seq, its staged host sources and its GPU start time. */
@interface NMSubmission : NSObject {
  @public
    uint64_t seq;
    double gpu_start; /* GPUStartTime of its first command buffer, 0 until known */
}
@property(nonatomic, strong) NSDictionary<NSNumber *, id<MTLBuffer>> *fromHost;
@end
@implementation NMSubmission
@end

/* One command buffer of a submission: ops [first, encoded) were encoded into it; when
 * encode_st is set, op `encoded` failed while being encoded. */
typedef struct segment {
    int64_t first, encoded;
    int checked; /* it ends with a run of checked ops: their records are read */
    neat_status encode_st;
    char encode_msg[NM_MSG_MAX];
} segment;

/* Submission seq completed: done_seq moves up to the highest seq with every one before it
 * completed (a later submission's synchronous segment may finish before an earlier one's
 * completion handler ran). */
static void mark_done(NMMetalDevice *d, uint64_t seq) {
    pthread_mutex_lock(&d->lock);
    [d.finished addIndex:(NSUInteger)seq];
    while ([d.finished containsIndex:(NSUInteger)(d->done_seq + 1)]) {
        [d.finished removeIndex:(NSUInteger)(d->done_seq + 1)];
        __atomic_store_n(&d->done_seq, d->done_seq + 1, __ATOMIC_RELEASE);
    }
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->lock);
}

/* After segment seg's command buffer `done` completed: hand over its failures (the command
 * buffer's error, else the first failed check; then an encoding failure), write its to-host
 * copies, and when the submission ends here, its device time and its completion. Returns 1
 * when the submission must stop. Nothing touches cb after mark_done. */
static int finish(NMMetalDevice *d, nm_cmdbuf *cb, NMSubmission *sub, id<MTLCommandBuffer> done,
                  const segment *seg, NSArray<NMHostCopy *> *toHost, int last) {
    char msg[NM_MSG_MAX];
    int stop = seg->encode_st != NEAT_OK;
    if (sub->gpu_start <= 0.0) sub->gpu_start = done.GPUStartTime;
    if (done.status == MTLCommandBufferStatusError || done.error) {
        int64_t lo = seg->first, hi = seg->encode_st ? seg->encoded : seg->encoded - 1;
        if (hi < lo) hi = lo;
        snprintf(msg, sizeof msg,
                 "neat_cmdbuf_wait: the Metal command buffer of ops %lld..%lld (%s..%s) failed: %s",
                 (long long)lo, (long long)hi, cb->ops[lo].fn, cb->ops[hi].fn,
                 done.error ? done.error.localizedDescription.UTF8String : "no NSError given");
        nm_cmdbuf_fail_all(cb, NEAT_ERR_BACKEND_ERROR, msg);
        stop = 1;
    } else {
        for (NMHostCopy *c in toHost) memcpy(c.dst, c.staging.contents, c.bytes);
        neat_status st = NEAT_OK;
        int64_t bad = seg->checked
                          ? metal_check_failed(cb, seg->first, seg->encoded, &st, msg, sizeof msg)
                          : -1;
        if (bad >= 0) {
            nm_cmdbuf_fail(cb, bad, st, msg);
            stop = 1;
        }
    }
    if (seg->encode_st) nm_cmdbuf_fail(cb, seg->encoded, seg->encode_st, seg->encode_msg);
    if (last || stop) {
        if (!stop && done.GPUEndTime > sub->gpu_start) {
            int64_t ns = (int64_t)((done.GPUEndTime - sub->gpu_start) * 1e9);
            __atomic_store_n(&cb->device_ns, ns > 0 ? ns : 1, __ATOMIC_RELEASE);
        }
        mark_done(d, sub->seq);
    }
    return stop;
}

/* Encode op i (on float32 copies when it has f16 tensors: half.m); a raise inside is a
 * failure of that op. */
static neat_status encode_op(nm_device *dev, nm_cmdbuf *cb, int64_t i) {
    const nm_op *op = &cb->ops[i];
    metal_cb(cb)->cur = i;
    @try {
        return metal_run_op(dev, cb, op);
    } @catch (NSException *e) {
        return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: encoding raised %s: %s", op->fn,
                        e.name.UTF8String, e.reason ? e.reason.UTF8String : "");
    }
}

static int is_checked(const nm_op *op) {
    return (nm_op_flags(op->kind) & NM_OPF_RUNTIME_CHECK) != 0;
}

/* Runs on the encoder queue: the whole submission, segment after segment. */
static void run_submission(nm_device *dev, nm_cmdbuf *cb, NMSubmission *sub) {
    NMMetalDevice *d = metal_dev(dev);
    int64_t i = 0, n = cb->nops;
    d.fromHost = sub.fromHost;
    for (int last = 0; !last;) {
        @autoreleasepool {
            segment seg = {.first = i};
            NSMutableArray<NMHostCopy *> *toHost = [NSMutableArray array];
            d.toHost = toHost;
            d->chain = NULL;
            d.mcb = [MPSCommandBuffer commandBufferFromCommandQueue:d.queue];
            for (; i < n; i++) {
                void *chain = d->chain;
                neat_status st = encode_op(dev, cb, i);
                if (st) {
                    seg.encode_st = st;
                    snprintf(seg.encode_msg, sizeof seg.encode_msg, "%s", neat_last_error());
                    break;
                }
                seg.checked |= d->chain != chain; /* op i wrote a validity record */
                if (seg.checked && (i + 1 == n || !is_checked(&cb->ops[i + 1]))) {
                    i++;
                    break;
                }
            }
            seg.encoded = i;
            last = seg.encode_st != NEAT_OK || i >= n;
            id<MTLCommandBuffer> root = d.mcb.rootCommandBuffer;
            d.mcb = nil;
            d.toHost = nil;
            if (last && !seg.checked) {
                [root addCompletedHandler:^(id<MTLCommandBuffer> done) {
                  finish(d, cb, sub, done, &seg, toHost, 1);
                }];
                [root commit];
            } else {
                [root commit];
                [root waitUntilCompleted];
                if (finish(d, cb, sub, root, &seg, toHost, last)) last = 1;
            }
        }
    }
    d.fromHost = nil;
}

/* Per-buffer state: scratch-slot table sized for its ops (dropped by cmdbuf_release). */
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

neat_status metal_submit(nm_device *dev, nm_cmdbuf *cb, uint64_t seq) {
    @autoreleasepool {
        NMMetalDevice *d = metal_dev(dev);
        neat_status st = cb->impl ? NEAT_OK : cmdbuf_state(cb);
        if (st) return st;
        NMSubmission *sub = [NMSubmission new];
        sub->seq = seq;
        NSDictionary<NSNumber *, id<MTLBuffer>> *staged;
        st = metal_stage_host_copies(dev, cb, &staged);
        if (st) return st;
        sub.fromHost = staged;
        dispatch_async(d.encoder, ^{
          run_submission(dev, cb, sub);
        });
    }
    return NEAT_OK;
}

uint64_t metal_completed(nm_device *dev) {
    return __atomic_load_n(&metal_dev(dev)->done_seq, __ATOMIC_ACQUIRE);
}

/* Op failures are in their buffers; Metal has no sticky device error to return here. */
neat_status metal_wait_seq(nm_device *dev, uint64_t seq) {
    NMMetalDevice *d = metal_dev(dev);
    pthread_mutex_lock(&d->lock);
    while (d->done_seq < seq) pthread_cond_wait(&d->cv, &d->lock);
    pthread_mutex_unlock(&d->lock);
    return NEAT_OK;
}
