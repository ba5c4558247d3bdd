/* record.c — the shared steps of every op function: resolve, check, append. */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *nm_shape_str(const nm_tensor *t, char *buf) {
    if (t->ndim == 0) {
        snprintf(buf, NM_SHAPE_STR, "[]");
        return buf;
    }
    int n = 0;
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(buf + n, NM_SHAPE_STR - (size_t)n, i ? "x%lld" : "%lld", (long long)t->shape[i]);
    return buf;
}

neat_status nm_begin(const char *fn, neat_cmdbuf *h, nm_cmdbuf **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: cb is NULL", fn);
    nm_cmdbuf *cb = nm_handle_get(h, NM_H_CMDBUF);
    if (!cb) return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: cb is not a live command buffer (destroyed?)", fn);
    if (cb->committed)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: cb was already committed; neat_cmdbuf_reset it to record again", fn);
    *out = cb;
    return NEAT_OK;
}

neat_status nm_arg(const char *fn, const char *arg, const nm_cmdbuf *cb, const neat_tensor *h,
                   int required, nm_tensor **out) {
    *out = NULL;
    if (!h) {
        if (!required) return NEAT_OK;
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, arg);
    }
    nm_tensor *t = nm_handle_get(h, NM_H_TENSOR);
    if (!t) return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: %s is not a live tensor (destroyed?)", fn, arg);
    if (t->dev != cb->dev)
        return nm_error(NEAT_ERR_DEVICE_MISMATCH, "%s: %s belongs to another device than cb", fn, arg);
    *out = t;
    return NEAT_OK;
}

neat_status nm_no_alias(const char *fn, const char *out_name, const nm_tensor *out,
                        const char *in_name, const nm_tensor *in) {
    if (out && in && out->storage == in->storage && out->numel > 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s shares memory with %s; use a separate output",
                        fn, out_name, in_name);
    return NEAT_OK;
}

neat_status nm_record(const char *fn, nm_cmdbuf *cb, nm_op *op, nm_tensor *const *tensors,
                      int ntensors) {
    if (!cb->dev->be->op[op->kind])
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: the %s backend has no such op", fn, cb->dev->be->name);
    if (ntensors > NM_OP_MAX_TENSORS)
        return nm_error(NEAT_ERR_INTERNAL, "%s: %d tensors exceed NM_OP_MAX_TENSORS", fn, ntensors);
    if (cb->nops == cb->cap) {
        int64_t cap = cb->cap ? cb->cap * 2 : 16;
        nm_op *ops = realloc(cb->ops, (size_t)cap * sizeof *ops);
        if (!ops) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        cb->ops = ops;
        cb->cap = cap;
    }
    op->ntensors = 0;
    for (int i = 0; i < ntensors; i++)
        if (tensors[i]) op->handles[op->ntensors++] = tensors[i]->handle;
    cb->ops[cb->nops++] = *op;
    return NEAT_OK;
}
