/*
 * copy.c — the recorded host copies. From host: submit (at commit) stages src into a
 * buffer of the job, so the caller may refill src as soon as commit returns; the op copies
 * the staged floats into the tensor when it runs. To host: the op copies the tensor into
 * dst when it runs, in order with the ops around it.
 */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>

neat_status cpu_stage_host_copies(nm_cmdbuf *cb, float ***staging) {
    *staging = NULL;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (op->kind != NM_OP_COPY_FROM_HOST || op->u.copy_from_host.t->numel == 0) continue;
        if (!*staging && !(*staging = calloc((size_t)cb->nops, sizeof **staging)))
            return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_cmdbuf_commit: out of host memory");
        size_t bytes = (size_t)op->u.copy_from_host.t->numel * sizeof(float);
        float *buf = malloc(bytes);
        if (!buf) {
            cpu_free_staging(cb, *staging);
            *staging = NULL;
            return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                            "neat_cmdbuf_commit: out of host memory "
                            "staging %zu bytes for op %lld (neat_copy_from_host)",
                            bytes, (long long)i);
        }
        memcpy(buf, op->u.copy_from_host.src, bytes);
        (*staging)[i] = buf;
    }
    return NEAT_OK;
}

void cpu_free_staging(nm_cmdbuf *cb, float **staging) {
    if (!staging) return;
    for (int64_t i = 0; i < cb->nops; i++) free(staging[i]);
    free(staging);
}

neat_status cpu_copy_from_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.copy_from_host.t;
    if (t->numel == 0) return NEAT_OK;
    const float *src = cpu_dev(dev)->staging[op - cb->ops];
    memcpy(t->data, src, (size_t)t->numel * sizeof(float));
    return NEAT_OK;
}

neat_status cpu_copy_to_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.copy_to_host.t;
    if (t->numel) memcpy(op->u.copy_to_host.dst, t->data, (size_t)t->numel * sizeof(float));
    return NEAT_OK;
}
