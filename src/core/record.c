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
        n += snprintf(buf + n, NM_SHAPE_STR - (size_t)n, i ? "x%lld" : "%lld",
                      (long long)t->shape[i]);
    return buf;
}

neat_status nm_begin(const char *fn, neat_cmdbuf *h, nm_cmdbuf **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: cb is NULL", fn);
    nm_cmdbuf *cb = nm_handle_get(h, NM_H_CMDBUF);
    if (!cb)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: cb is not a live command buffer (destroyed?)",
                        fn);
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
    if (!t)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: %s is not a live tensor (destroyed?)", fn,
                        arg);
    if (t->dev != cb->dev)
        return nm_error(NEAT_ERR_DEVICE_MISMATCH, "%s: %s belongs to another device than cb", fn,
                        arg);
    *out = t;
    return NEAT_OK;
}

neat_status nm_no_alias(const char *fn, const char *out_name, const nm_tensor *out,
                        const char *in_name, const nm_tensor *in) {
    if (out && in && out->storage == in->storage && out->numel > 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: %s shares memory with %s; use a separate output", fn, out_name,
                        in_name);
    return NEAT_OK;
}

nm_tensor *const *nm_op_tensors(const nm_op *op, int *count) {
    switch (op->kind) {
#define NM_OP_TENSORS_(P, E, name, flags)                                                          \
    case NM_OP_##E:                                                                                \
        *count = (int)(sizeof op->u.name.tensors / sizeof op->u.name.tensors[0]);                  \
        return op->u.name.tensors;
        NM_OP_LIST(NM_OP_TENSORS_, _)
#undef NM_OP_TENSORS_
    case NM_OP__COUNT: break;
    }
    *count = 0;
    return NULL;
}

void nm_op_free_list(nm_op *op) {
    free(op->list);
    free(op->list_handles);
    op->list = NULL;
    op->list_handles = NULL;
    op->nlist = 0;
}

int nm_op_flags(nm_op_kind kind) {
    static const int flags[NM_OP__COUNT] = {
#define NM_OP_FLAGS_(P, E, name, f) [NM_OP_##E] = f,
        NM_OP_LIST(NM_OP_FLAGS_, _)
#undef NM_OP_FLAGS_
    };
    return kind >= 0 && kind < NM_OP__COUNT ? flags[kind] : 0;
}

/* NM_OPF_DT_MIXED: the op's slots from the returned index on (and its list) take any dtype,
 * those before it float32; *same: the any-dtype slots share one dtype. The optimizers'
 * grad and param in their mixed form (the plain form is float32 throughout), the
 * loss-scale ops' x and y (one dtype) and list. */
static int mixed_dtype_from(const nm_op *op, int n, int *same) {
    *same = 0;
    switch (op->kind) {
    case NM_OP_SGD_UPDATE:
        return op->u.sgd_update.mixed ? (int)(&op->u.sgd_update.grad - op->u.sgd_update.tensors)
                                      : n;
    case NM_OP_ADAM_UPDATE:
        return op->u.adam_update.mixed ? (int)(&op->u.adam_update.grad - op->u.adam_update.tensors)
                                       : n;
    case NM_OP_LOSS_SCALE: *same = 1; return 1;
    default: return n;
    }
}

/* The element-type rule of the op's flags (op_list.h: NM_OPF_DT_*), DTYPE_MISMATCH with
 * every tensor's dtype in the message otherwise. Tensors are taken in the order of the op's
 * NM_TENSORS, then its list; NULL ones (an absent bias) are skipped. */
static neat_status nm_dtype_check(const char *fn, const nm_op *op) {
    int flags = nm_op_flags(op->kind), n, nl;
    if (flags & NM_OPF_DT_ANY) return NEAT_OK;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    nm_tensor *const *list = nm_op_list(op, &nl);
    int last = n - 1; /* the output: its dtype may be f32 under NM_OPF_DT_OUT_F32 */
    while (last >= 0 && !ts[last]) last--;
    int same = 0, any_from = (flags & NM_OPF_DT_MIXED) ? mixed_dtype_from(op, n, &same) : n;
    const nm_tensor *first = NULL;
    int ok = 1;
    for (int i = 0; i < n + nl; i++) {
        const nm_tensor *t = i < n ? ts[i] : list[i - n];
        if (!t) continue;
        if (flags & NM_OPF_DT_MIXED) {
            if (i < any_from)
                ok &= t->dtype == NEAT_F32;
            else if (same && first)
                ok &= t->dtype == first->dtype;
            else if (same)
                first = t;
        } else if (flags & NM_OPF_DT_F32)
            ok &= t->dtype == NEAT_F32;
        else if (!first)
            first = t;
        else if (!(i == last && (flags & NM_OPF_DT_OUT_F32) && t->dtype == NEAT_F32))
            ok &= t->dtype == first->dtype;
    }
    if (ok) return NEAT_OK;
    char types[NM_MSG_MAX / 2];
    int len = 0;
    for (int i = 0; i < n + nl && len < (int)sizeof types - 8; i++) {
        const nm_tensor *t = i < n ? ts[i] : list[i - n];
        if (t)
            len += snprintf(types + len, sizeof types - (size_t)len, len ? ", %s" : "%s",
                            neat_dtype_name(t->dtype));
    }
    /* (the mixed ops check their any-dtype tensors themselves, naming each) */
    const char *rule = (flags & (NM_OPF_DT_F32 | NM_OPF_DT_MIXED)) ? "takes float32 tensors only"
                       : (flags & NM_OPF_DT_OUT_F32)
                           ? "takes inputs of one dtype and an output of that dtype or f32"
                           : "takes tensors of one dtype";
    return nm_error(NEAT_ERR_DTYPE_MISMATCH,
                    "%s: the tensors are %s; the op %s (neat_cast converts)", fn, types, rule);
}

/* Takes op's list: appended with the op, or freed on failure. */
neat_status nm_record(const char *fn, nm_cmdbuf *cb, nm_op *op) {
    const nm_backend_ops *be = cb->dev->be;
    neat_status st = nm_dtype_check(fn, op);
    if (st == NEAT_OK && !be->op[op->kind])
        st = nm_error(NEAT_ERR_UNSUPPORTED, "%s: the %s backend has no such op", fn, be->name);
    op->fn = fn;
    pthread_mutex_lock(&cb->dev->lock); /* neat_device_set_math_mode writes it under the lock */
    op->math = cb->dev->math;
    pthread_mutex_unlock(&cb->dev->lock);
    /* The backend may refuse what it cannot run exactly (a size, a dtype, a semantics its
     * vendor library lacks), now rather than when the buffer runs. */
    if (st == NEAT_OK && be->op_check) st = be->op_check(cb->dev, op);
    if (st == NEAT_OK && op->nlist > 0) {
        op->list_handles = malloc((size_t)op->nlist * sizeof *op->list_handles);
        if (!op->list_handles) st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        for (int i = 0; st == NEAT_OK && i < op->nlist; i++)
            op->list_handles[i] = op->list[i]->handle;
    }
    if (st != NEAT_OK) {
        nm_op_free_list(op);
        return st;
    }
    int n;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    op->ntensors = 0;
    for (int i = 0; i < n; i++)
        if (ts[i]) op->handles[op->ntensors++] = ts[i]->handle;
    /* Appended under the device's lock, which commit and destroy take too: a buffer
     * committed or a tensor destroyed by another thread since the checks is seen here. */
    pthread_mutex_lock(&cb->dev->lock);
    if (cb->committed)
        st = nm_error(NEAT_ERR_INVALID_ARGUMENT,
                      "%s: cb was already committed; neat_cmdbuf_reset it to record again", fn);
    for (int i = 0; st == NEAT_OK && i < op->ntensors; i++)
        if (!op->handles[i] || !nm_handle_get(op->handles[i], NM_H_TENSOR))
            st = nm_error(NEAT_ERR_INVALID_HANDLE, "%s: a tensor argument was destroyed meanwhile",
                          fn);
    for (int i = 0; st == NEAT_OK && i < op->nlist; i++)
        if (!nm_handle_get(op->list_handles[i], NM_H_TENSOR))
            st = nm_error(NEAT_ERR_INVALID_HANDLE, "%s: a tensor argument was destroyed meanwhile",
                          fn);
    if (st == NEAT_OK && cb->nops == cb->cap) {
        int64_t cap = cb->cap ? cb->cap * 2 : 16;
        nm_op *ops = realloc(cb->ops, (size_t)cap * sizeof *ops);
        if (!ops)
            st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        else
            cb->ops = ops, cb->cap = cap;
    }
    if (st == NEAT_OK) cb->ops[cb->nops++] = *op;
    pthread_mutex_unlock(&cb->dev->lock);
    if (st != NEAT_OK) nm_op_free_list(op);
    return st;
}
