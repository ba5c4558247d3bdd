/*
 * copy.m — the recorded host copies on shared-storage buffers.
 *
 * From host: submit (at commit, under the device lock, so it never waits) copies src into a
 * new shared MTLBuffer of the submission; the op blits it into the tensor at its place in the
 * command buffer. The caller may refill src as soon as commit returns.
 * To host: the tensor may be overwritten by a later op of the same command buffer, so the op
 * blits it into a new staging buffer at its place; submit.m copies staging -> dst once that
 * command buffer completed without error, before the submission counts as completed (and
 * never for an op that was not encoded because an op before it failed).
 * Staging buffers belong to one submission (a buffer committed again while it runs gets its
 * own) and are released with the command buffer's completion.
 */
#import "metal.h"

@implementation NMHostCopy
@end

neat_status metal_stage_host_copies(nm_device *dev, nm_cmdbuf *cb,
                                    NSDictionary<NSNumber *, id<MTLBuffer>> **out) {
    NMMetalDevice *d = metal_dev(dev);
    NSMutableDictionary<NSNumber *, id<MTLBuffer>> *staged = nil;
    *out = nil;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (op->kind != NM_OP_COPY_FROM_HOST || op->u.copy_from_host.t->numel == 0) continue;
        size_t bytes = (size_t)op->u.copy_from_host.t->numel * sizeof(float);
        id<MTLBuffer> b = bytes <= d.device.maxBufferLength
                              ? [d.device newBufferWithBytes:op->u.copy_from_host.src
                                                      length:bytes
                                                     options:MTLResourceStorageModeShared]
                              : nil;
        if (!b)
            return nm_error(
                NEAT_ERR_OUT_OF_MEMORY,
                "neat_cmdbuf_commit: -[MTLDevice newBufferWithBytes:"
                "length:options:] of %zu bytes returned nil staging op %lld (neat_copy_from_host)",
                bytes, (long long)i);
        if (!staged) staged = [NSMutableDictionary dictionary];
        staged[@(i)] = b;
    }
    *out = staged;
    return NEAT_OK;
}

neat_status metal_copy_from_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.copy_from_host.t;
    if (t->numel == 0) return NEAT_OK;
    NMMetalDevice *d = metal_dev(dev);
    id<MTLBuffer> src = d.fromHost[@(op - cb->ops)], dst = metal_buffer(dev, t->data);
    if (!src || !dst)
        return nm_error(NEAT_ERR_INTERNAL, "%s: the staged source or the tensor has no MTLBuffer",
                        op->fn);
    return metal_blit_buffers(dev, op, dst, src, (size_t)t->numel * sizeof(float));
}

neat_status metal_copy_to_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.copy_to_host.t;
    if (t->numel == 0) return NEAT_OK;
    NMMetalDevice *d = metal_dev(dev);
    size_t bytes = (size_t)t->numel * sizeof(float);
    id<MTLBuffer> src = metal_buffer(dev, t->data);
    id<MTLBuffer> staging = [d.device newBufferWithLength:bytes
                                                  options:MTLResourceStorageModeShared];
    if (!src)
        return nm_error(NEAT_ERR_INTERNAL, "%s: the tensor is not in an MTLBuffer of the device",
                        op->fn);
    if (!staging)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                        "%s: -[MTLDevice newBufferWithLength:options:] of %zu "
                        "bytes (the staging buffer) returned nil",
                        op->fn, bytes);
    neat_status st = metal_blit_buffers(dev, op, staging, src, bytes);
    if (st) return st;
    NMHostCopy *copy = [NMHostCopy new];
    copy.staging = staging;
    copy.dst = op->u.copy_to_host.dst;
    copy.bytes = bytes;
    [d.toHost addObject:copy];
    return NEAT_OK;
}
