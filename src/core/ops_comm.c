/*
 * ops_comm.c — recording the collectives: neat_all_reduce, neat_all_reduce_bucket,
 * neat_broadcast. What can be checked on one rank is checked here (handles, devices,
 * options, aliasing, the rank of root); what needs the peers (that every rank's count
 * agrees) is the backend's, at the op's first run.
 */
#include "backends/backend.h"

#include <stdlib.h>
#include <string.h>

static neat_status reduce_op_arg(const char *fn, neat_reduce_op op) {
    if (op != NEAT_REDUCE_SUM && op != NEAT_REDUCE_AVG)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: op %d is not a neat_reduce_op (SUM, AVG)",
                        fn, (int)op);
    return NEAT_OK;
}

/* A comm whose backend is not the device's cannot happen (nm_comm_arg checks the device);
 * a broken comm is reported when the op runs, like a peer's failure. */
static neat_status record_collective(const char *fn, nm_cmdbuf *cb, nm_comm *comm, nm_op *op) {
    op->comm = comm->handle;
    return nm_record(fn, cb, op);
}

NEAT_API neat_status neat_all_reduce(neat_cmdbuf *h, neat_comm *ch, neat_reduce_op rop,
                                     const neat_tensor *xh, neat_tensor *yh) {
    static const char fn[] = "neat_all_reduce";
    nm_cmdbuf *cb;
    nm_comm *comm;
    nm_tensor *x, *y;
    neat_status st = nm_begin(fn, h, &cb);
    if (!st) st = nm_comm_arg(fn, cb, ch, &comm);
    if (!st) st = reduce_op_arg(fn, rop);
    if (!st) st = nm_arg(fn, "x", cb, xh, 1, &x);
    if (!st) st = nm_arg(fn, "y", cb, yh, 1, &y);
    if (st) return st;
    if (x->numel != y->numel) {
        char xs[NM_SHAPE_STR], ys[NM_SHAPE_STR];
        return nm_error(
            NEAT_ERR_SHAPE_MISMATCH, "%s: x is %s, y is %s: element counts %lld and %lld differ",
            fn, nm_shape_str(x, xs), nm_shape_str(y, ys), (long long)x->numel, (long long)y->numel);
    }
    /* y = x (the same tensor, or a view of the same elements) reduces in place. */
    if (x != y && x->data != y->data && (st = nm_no_alias(fn, "y", y, "x", x))) return st;
    nm_op op = {.kind = NM_OP_ALL_REDUCE};
    op.u.all_reduce.x = x;
    op.u.all_reduce.y = y;
    op.u.all_reduce.comm = comm;
    op.u.all_reduce.op = rop;
    op.u.all_reduce.count = x->numel;
    return record_collective(fn, cb, comm, &op);
}

static int by_address(const void *a, const void *b) {
    const nm_tensor *x = *(nm_tensor *const *)a, *y = *(nm_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

NEAT_API neat_status neat_all_reduce_bucket(neat_cmdbuf *h, neat_comm *ch, neat_reduce_op rop,
                                            int n, neat_tensor *const *tensors) {
    static const char fn[] = "neat_all_reduce_bucket";
    nm_cmdbuf *cb;
    nm_comm *comm;
    neat_status st = nm_begin(fn, h, &cb);
    if (!st) st = nm_comm_arg(fn, cb, ch, &comm);
    if (!st) st = reduce_op_arg(fn, rop);
    if (st) return st;
    if (n < 0) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: n is %d: must be >= 0", fn, n);
    if (n > 0 && !tensors) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: tensors is NULL", fn);
    nm_tensor **list = n ? malloc((size_t)n * sizeof *list) : NULL;
    nm_tensor **sorted = n ? malloc((size_t)n * sizeof *sorted) : NULL;
    if (n && (!list || !sorted)) {
        free(list), free(sorted);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    }
    int64_t total = 0;
    char arg[32];
    for (int i = 0; i < n && !st; i++) {
        snprintf(arg, sizeof arg, "tensors[%d]", i);
        st = nm_arg(fn, arg, cb, tensors[i], 1, &list[i]);
        if (!st) total += list[i]->numel, sorted[i] = list[i];
    }
    /* No two may overlap (each is reduced in place once): sorted by address, neighbours
     * must not share bytes. */
    int ne = 0;
    for (int i = 0; i < n && !st; i++)
        if (list[i]->numel > 0) sorted[ne++] = list[i];
    if (!st && ne > 1) qsort(sorted, (size_t)ne, sizeof *sorted, by_address); /* NULL when n = 0 */
    for (int i = 1; i < ne && !st; i++)
        if (sorted[i - 1]->data + sorted[i - 1]->numel > sorted[i]->data)
            st = nm_error(NEAT_ERR_INVALID_ARGUMENT,
                          "%s: two of the tensors share memory; each must be distinct", fn);
    /* Back to back in the caller's order: reduced where they lie, no packing. */
    int contiguous = ne > 0;
    const float *next = NULL;
    for (int i = 0; i < n && !st && contiguous; i++) {
        if (list[i]->numel == 0) continue;
        if (next && list[i]->data != next) contiguous = 0;
        next = list[i]->data + list[i]->numel;
    }
    free(sorted);
    if (st) {
        free(list);
        return st;
    }
    nm_op op = {.kind = NM_OP_ALL_REDUCE_BUCKET};
    op.u.all_reduce_bucket.comm = comm;
    op.u.all_reduce_bucket.op = rop;
    op.u.all_reduce_bucket.total = total;
    op.u.all_reduce_bucket.contiguous = contiguous;
    op.list = list;
    op.nlist = n;
    return record_collective(fn, cb, comm, &op); /* owns list from here */
}

NEAT_API neat_status neat_broadcast(neat_cmdbuf *h, neat_comm *ch, int root, const neat_tensor *xh,
                                    neat_tensor *yh) {
    static const char fn[] = "neat_broadcast";
    nm_cmdbuf *cb;
    nm_comm *comm;
    nm_tensor *x, *y;
    neat_status st = nm_begin(fn, h, &cb);
    if (!st) st = nm_comm_arg(fn, cb, ch, &comm);
    if (st) return st;
    if (root < 0 || root >= comm->nranks)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: root is %d: must be a rank in 0..%d", fn,
                        root, comm->nranks - 1);
    int is_root = comm->rank == root;
    if (!st) st = nm_arg(fn, "x", cb, xh, is_root, &x);
    if (!st) st = nm_arg(fn, "y", cb, yh, 1, &y);
    if (st) return st;
    if (x && x->numel != y->numel) {
        char xs[NM_SHAPE_STR], ys[NM_SHAPE_STR];
        return nm_error(
            NEAT_ERR_SHAPE_MISMATCH, "%s: x is %s, y is %s: element counts %lld and %lld differ",
            fn, nm_shape_str(x, xs), nm_shape_str(y, ys), (long long)x->numel, (long long)y->numel);
    }
    if (x && x != y && x->data != y->data && (st = nm_no_alias(fn, "y", y, "x", x))) return st;
    nm_op op = {.kind = NM_OP_BROADCAST};
    op.u.broadcast.x = is_root ? x : NULL; /* only root reads it */
    op.u.broadcast.y = y;
    op.u.broadcast.comm = comm;
    op.u.broadcast.root = root;
    op.u.broadcast.count = y->numel;
    return record_collective(fn, cb, comm, &op);
}
