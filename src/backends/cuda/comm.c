/*
 * comm.c — the CUDA backend's collectives on NCCL (built with NEATML_HAVE_NCCL; otherwise
 * every entry answers UNSUPPORTED with the reason).
 *
 * Communicators are non-blocking (ncclConfig_t.blocking = 0), so that nothing waits on a
 * peer without the comm's timeout: init and each enqueue poll ncclCommGetAsyncError until
 * the call has settled, and neat_cmdbuf_wait polls the device's event while it polls the
 * comms of the buffer's collectives (cuda_comm_wait): an asynchronous error, or the comm's
 * timeout passing, aborts those comms (ncclCommAbort makes their kernels return), fails the
 * buffer (BACKEND_ERROR or TIMEOUT) and leaves the comm broken (the core refuses commits of
 * buffers that use it).
 *
 * Collectives are enqueued on d->stream like every op, so a replayed buffer captures them
 * into its CUDA graph. They are neither ops that check the error record (guard.cu) nor
 * guards: after an op that can fail (cross-entropy's labels, the optimizers' hyper), a
 * collective is guarded like any other op, so on that rank it does not run — its peers
 * then see a silent rank and fail at their timeout, rather than reduce half-written data.
 * Inside a guard's conditional body only kernels, memcopies, memsets and conditionals may
 * be captured: NCCL's kernels are kernels, but NCCL may also record host nodes or events
 * during capture (proxy work for network transports); then the capture fails and the buffer
 * falls back to eager enqueue (backend.c; each guard is then one host wait), which is
 * correct, only slower. NEATML_CUDA_GRAPHS=1 reports such a failure at commit instead.
 *
 * Before a buffer first runs, the ranks check that they recorded the same collectives
 * (cuda_comm_agree, "agreement" below): SHAPE_MISMATCH on every rank rather than a hang.
 *
 * AVG is NCCL's ncclAvg: the division happens inside the reduction, so the bucket's
 * unpack is a plain copy (the fused division of the CPU backend's unpack).
 * Several devices in one process (neat_comm_create_all): each device's buffers must be
 * committed from a thread of its own (NCCL's rule for one thread per device without
 * ncclGroupStart around the ranks' calls).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef NEATML_HAVE_NCCL
#include <nccl.h>

_Static_assert(sizeof(ncclUniqueId) == sizeof(neat_comm_id), "neat_comm_id holds an ncclUniqueId");

typedef struct cuda_comm {
    ncclComm_t nccl;
    int device; /* CUDA device index */
} cuda_comm;

static ncclComm_t nccl_of(const nm_comm *c) { return ((cuda_comm *)c->impl)->nccl; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double timeout_of(nm_comm *comm) {
    double t;
    __atomic_load(&comm->timeout, &t, __ATOMIC_RELAXED);
    return t;
}

static neat_status nccl_error(const char *fn, nm_comm *comm, ncclResult_t r, const char *call) {
    __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
    return nm_error(r == ncclInvalidArgument || r == ncclInvalidUsage ? NEAT_ERR_INVALID_ARGUMENT
                                                                      : NEAT_ERR_BACKEND_ERROR,
                    "%s: rank %d of %d: %s failed: %s (%s)", fn, comm->rank, comm->nranks, call,
                    ncclGetErrorString(r), ncclGetLastError(nccl_of(comm)));
}

/* Abort comm's NCCL communicator (its kernels return) and mark the comm broken. */
static void comm_abort(nm_comm *comm) {
    ncclCommAbort(nccl_of(comm));
    ((cuda_comm *)comm->impl)->nccl = NULL;
    __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
}

static neat_status comm_timeout(const char *fn, nm_comm *comm, const char *call, double timeout) {
    return nm_error(NEAT_ERR_TIMEOUT,
                    "%s: rank %d of %d: %s: the other ranks did not take part within %g s "
                    "(neat_comm_set_timeout); the comm is broken: destroy it",
                    fn, comm->rank, comm->nranks, call, timeout);
}

/* After a call on a non-blocking comm returned r: wait until it has settled (not
 * ncclInProgress), at most the comm's timeout (then abort: TIMEOUT). */
static neat_status nccl_settle(const char *fn, nm_comm *comm, ncclResult_t r, const char *call) {
    double timeout = timeout_of(comm), deadline = now_s() + timeout;
    while (r == ncclInProgress) {
        if (timeout > 0 && now_s() > deadline) {
            comm_abort(comm);
            return comm_timeout(fn, comm, call, timeout);
        }
        nanosleep(&(struct timespec){0, 100000}, NULL);
        if (ncclCommGetAsyncError(nccl_of(comm), &r) != ncclSuccess) break;
    }
    return r == ncclSuccess ? NEAT_OK : nccl_error(fn, comm, r, call);
}

neat_status cuda_comm_id_create(neat_comm_id *id) {
    ncclUniqueId uid;
    ncclResult_t r = ncclGetUniqueId(&uid);
    if (r != ncclSuccess)
        return nm_error(NEAT_ERR_BACKEND_ERROR, "neat_comm_id_create: ncclGetUniqueId failed: %s",
                        ncclGetErrorString(r));
    memcpy(id->bytes, &uid, sizeof uid);
    return NEAT_OK;
}

/* Start comm's init (inside a group for create_all) on its device, which it leaves current
 * (the caller gives the thread's own device back: cuda_leave). */
static neat_status init_start(const char *fn, nm_comm *comm, const neat_comm_id *id,
                              ncclResult_t *r) {
    int device = cuda_dev(comm->dev)->index;
    neat_status st = cuda_check(cudaSetDevice(device), fn, "cudaSetDevice");
    if (st) return st;
    cuda_comm *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    c->device = device;
    comm->impl = c;
    ncclUniqueId uid;
    memcpy(&uid, id->bytes, sizeof uid);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    *r = ncclCommInitRankConfig(&c->nccl, comm->nranks, uid, comm->rank, &config);
    return NEAT_OK;
}

/* Wait for comm's init; on failure release it. */
static neat_status init_finish(const char *fn, nm_comm *comm, ncclResult_t r) {
    cuda_comm *c = comm->impl;
    neat_status st = r == ncclSuccess || r == ncclInProgress
                         ? NEAT_OK
                         : nccl_error(fn, comm, r, "ncclCommInitRankConfig");
    if (!st && c->nccl) {
        if (r == ncclInProgress || ncclCommGetAsyncError(c->nccl, &r) == ncclSuccess)
            st = nccl_settle(fn, comm, r, "ncclCommInitRankConfig");
    }
    if (st) {
        if (c->nccl) ncclCommAbort(c->nccl);
        free(c);
        comm->impl = NULL;
    }
    return st;
}

neat_status cuda_comm_create(nm_comm *comm, const neat_comm_id *id) {
    static const char fn[] = "neat_comm_create";
    ncclResult_t r = ncclInternalError;
    int prev;
    neat_status st = cuda_enter(cuda_dev(comm->dev)->index, fn, &prev);
    if (!st) st = init_start(fn, comm, id, &r);
    if (!st) st = init_finish(fn, comm, r);
    cuda_leave(prev);
    return st;
}

neat_status cuda_comm_create_all(int n, nm_comm *const *comms) {
    static const char fn[] = "neat_comm_create_all";
    neat_comm_id id;
    neat_status st = cuda_comm_id_create(&id);
    if (st) return st;
    ncclResult_t *rs = calloc((size_t)n, sizeof *rs);
    if (!rs) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    /* init_start switches the thread to each rank's device in turn; prev is the caller's */
    int prev;
    st = cuda_enter(cuda_dev(comms[0]->dev)->index, fn, &prev);
    if (st) {
        free(rs);
        return st;
    }
    /* One thread initialising several ranks: in one group (ncclCommInitAll's way). */
    ncclGroupStart();
    int started = 0;
    for (; started < n && !st; started++) st = init_start(fn, comms[started], &id, &rs[started]);
    ncclResult_t g = ncclGroupEnd();
    for (int i = 0; i < started; i++) {
        if (rs[i] == ncclSuccess && g != ncclSuccess) rs[i] = g;
        neat_status e = comms[i]->impl ? init_finish(fn, comms[i], rs[i]) : NEAT_OK;
        if (!st) st = e;
    }
    if (st)
        for (int i = 0; i < started; i++) cuda_comm_destroy(comms[i]);
    free(rs);
    cuda_leave(prev);
    return st;
}

void cuda_comm_destroy(nm_comm *comm) {
    cuda_comm *c = comm->impl;
    if (!c) return;
    int prev;
    cuda_enter(c->device, "neat_comm_destroy", &prev); /* nothing to report to */
    if (c->nccl) {
        /* A broken comm may have work that never ends: abort; otherwise a clean finalize
         * (non-blocking: settled within the timeout, else aborted). */
        if (__atomic_load_n(&comm->broken, __ATOMIC_RELAXED))
            ncclCommAbort(c->nccl);
        else {
            ncclResult_t r = ncclCommFinalize(c->nccl);
            if (r == ncclInProgress || r == ncclSuccess)
                nccl_settle("neat_comm_destroy", comm, r, "ncclCommFinalize");
            if (c->nccl) ncclCommDestroy(c->nccl);
        }
    }
    free(c);
    comm->impl = NULL;
    cuda_leave(prev);
}

/* ---- ops ----------------------------------------------------------------------------------- */

static neat_status ready(const nm_op *op, nm_comm *comm) {
    if (__atomic_load_n(&comm->broken, __ATOMIC_RELAXED) || !nccl_of(comm))
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: the comm is broken by an earlier failure (a timeout "
                        "or a peer's error): destroy it",
                        op->fn);
    return NEAT_OK;
}

static neat_status all_reduce(const nm_op *op, nm_comm *comm, neat_reduce_op rop, const void *x,
                              void *y, int64_t count, cudaStream_t s) {
    ncclResult_t r = ncclAllReduce(x, y, (size_t)count, ncclFloat32,
                                   rop == NEAT_REDUCE_AVG ? ncclAvg : ncclSum, nccl_of(comm), s);
    return nccl_settle(op->fn, comm, r, "ncclAllReduce");
}

neat_status cuda_all_reduce(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_args *a = &op->u.all_reduce;
    neat_status st = ready(op, a->comm);
    if (st || a->count == 0) return st;
    return all_reduce(op, a->comm, a->op, a->x->data, a->y->data, a->count, cuda_dev(dev)->stream);
}

neat_status cuda_all_reduce_bucket(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_bucket_args *a = &op->u.all_reduce_bucket;
    neat_status st = ready(op, a->comm);
    if (st || a->total == 0) return st;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (a->contiguous) {
        float *first = NULL;
        for (int i = 0; i < op->nlist && !first; i++) first = op->list[i]->data;
        return all_reduce(op, a->comm, a->op, first, first, a->total, s);
    }
    /* Packed into scratch, reduced, unpacked: one kernel each way (bucket.cu). */
    float *packed;
    st = cuda_scratch(cb, 0, (size_t)a->total * sizeof(float), (void **)&packed);
    if (!st) st = cuda_bucket_copy(dev, op, packed, 1);
    if (!st) st = all_reduce(op, a->comm, a->op, packed, packed, a->total, s);
    if (!st) st = cuda_bucket_copy(dev, op, packed, 0);
    return st;
}

neat_status cuda_broadcast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_broadcast_args *a = &op->u.broadcast;
    neat_status st = ready(op, a->comm);
    if (st || a->count == 0) return st;
    ncclResult_t r = ncclBroadcast(a->x ? a->x->data : a->y->data, a->y->data, (size_t)a->count,
                                   ncclFloat32, a->root, nccl_of(a->comm), cuda_dev(dev)->stream);
    return nccl_settle(op->fn, a->comm, r, "ncclBroadcast");
}

/* ---- agreement: what the ranks recorded, checked once per buffer --------------------------
 * NCCL reduces whatever counts it is given: ranks that disagree hang until the timeout or
 * reduce garbage. So at a buffer's first commit, before anything of it runs (and before its
 * capture), each comm of its collectives gets one small host-synchronous all-reduce of the
 * buffer's signature on that comm under MAX, as (v, -v): max and min of every entry. Equal
 * everywhere: the ranks agree, and the buffer is never checked again (a recorded buffer
 * cannot change: replays cost nothing). Otherwise every rank sees the same max and min, so
 * every rank refuses the buffer (SHAPE_MISMATCH) and keeps refusing it without talking to
 * the peers again: the comm's sequence of NCCL calls stays the same on every rank, and the
 * comm stays usable. The check pairs across ranks because every rank commits the same
 * buffers in the same order (the header's rule); comms are checked in the order of their
 * first collective in the buffer, every one of them even after a mismatch on an earlier one
 * (its peers may not be this comm's). It runs on the main stream behind the work already
 * enqueued, so the first commit waits for that work (and the peers) once.
 *
 * Signature of the collectives on one comm (int64 each): their number, a hash of all of them,
 * then for the first AGREE_DETAIL of them: the op kind, the element count, and the reduce op
 * (with a hash of a bucket's tensor counts) or the root. The detailed entries name what
 * differs in the message; the hash catches the rest. */
enum { AGREE_DETAIL = 16, AGREE_LEN = 2 + 3 * AGREE_DETAIL };

static nm_comm *comm_of_op(const nm_op *op) {
    return op->kind == NM_OP_ALL_REDUCE  ? op->u.all_reduce.comm
           : op->kind == NM_OP_BROADCAST ? op->u.broadcast.comm
                                         : op->u.all_reduce_bucket.comm;
}

static uint64_t fnv(uint64_t h, int64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((uint64_t)v >> (8 * i) & 0xff)) * 1099511628211ull;
    return h;
}

/* kind, count and the third entry of a collective */
static void describe(const nm_op *op, int64_t d[3]) {
    d[0] = op->kind;
    if (op->kind == NM_OP_ALL_REDUCE) {
        d[1] = op->u.all_reduce.count, d[2] = op->u.all_reduce.op;
    } else if (op->kind == NM_OP_BROADCAST) {
        d[1] = op->u.broadcast.count, d[2] = op->u.broadcast.root;
    } else {
        uint64_t h = fnv(1469598103934665603ull, op->nlist);
        for (int i = 0; i < op->nlist; i++) h = fnv(h, op->list[i]->numel);
        d[1] = op->u.all_reduce_bucket.total;
        d[2] = op->u.all_reduce_bucket.op + 2 * (int64_t)(h >> 33); /* both fit, >= 0 */
    }
}

static void signature(const nm_cmdbuf *cb, const nm_comm *comm, int64_t v[AGREE_LEN]) {
    uint64_t h = 1469598103934665603ull;
    memset(v, 0, AGREE_LEN * sizeof *v);
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (!(nm_op_flags(op->kind) & NM_OPF_COLLECTIVE) || comm_of_op(op) != comm) continue;
        int64_t d[3];
        describe(op, d);
        for (int k = 0; k < 3; k++) h = fnv(h, d[k]);
        if (v[0] < AGREE_DETAIL) memcpy(&v[2 + 3 * v[0]], d, sizeof d);
        v[0]++;
    }
    v[1] = (int64_t)(h >> 1);
}

/* Index of the j-th collective on comm in cb (from 0), or cb->nops. */
static int64_t nth_collective(const nm_cmdbuf *cb, const nm_comm *comm, int64_t j) {
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if ((nm_op_flags(op->kind) & NM_OPF_COLLECTIVE) && comm_of_op(op) == comm && j-- == 0)
            return i;
    }
    return cb->nops;
}

/* Wait for ev (the signature's all-reduce), polling comm for an asynchronous error and its
 * timeout, as cuda_comm_wait does for a buffer's collectives. */
static neat_status agree_wait(const char *fn, nm_comm *comm, cudaEvent_t ev) {
    static const char call[] = "ncclAllReduce (the ranks' collectives)";
    double timeout = timeout_of(comm), start = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return NEAT_OK;
        if (e != cudaErrorNotReady) return cuda_check(e, fn, "cudaEventQuery");
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(nccl_of(comm), &r);
        int late = timeout > 0 && now_s() - start > timeout;
        if ((r != ncclSuccess && r != ncclInProgress) || late) {
            neat_status st =
                late ? comm_timeout(fn, comm, call, timeout) : nccl_error(fn, comm, r, call);
            comm_abort(comm); /* its kernels return: the stream drains */
            for (double t = now_s(); cudaEventQuery(ev) == cudaErrorNotReady && now_s() - t < 30;)
                nanosleep(&(struct timespec){0, 50000}, NULL);
            cudaGetLastError();
            return st;
        }
        nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

/* Exchange the signature of cb's collectives on comm: max in hi, min in lo. */
static neat_status agree_exchange(const char *fn, nm_device *dev, nm_cmdbuf *cb, nm_comm *comm,
                                  const int64_t v[AGREE_LEN], int64_t hi[AGREE_LEN],
                                  int64_t lo[AGREE_LEN]) {
    cudaStream_t s = cuda_dev(dev)->main_stream;
    int64_t h[2 * AGREE_LEN];
    for (int k = 0; k < AGREE_LEN; k++) h[k] = v[k], h[AGREE_LEN + k] = -v[k];
    void *buf;
    cudaEvent_t ev = NULL;
    neat_status st = nm_scratch_alloc(cb, sizeof h, &buf);
    if (!st)
        st = cuda_check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), fn,
                        "cudaEventCreate");
    if (!st)
        st = cuda_check(cudaMemcpyAsync(buf, h, sizeof h, cudaMemcpyHostToDevice, s), fn,
                        "cudaMemcpyAsync");
    if (!st)
        st = nccl_settle(
            fn, comm, ncclAllReduce(buf, buf, 2 * AGREE_LEN, ncclInt64, ncclMax, nccl_of(comm), s),
            "ncclAllReduce (the ranks' collectives)");
    if (!st) st = cuda_check(cudaEventRecord(ev, s), fn, "cudaEventRecord");
    if (!st) st = agree_wait(fn, comm, ev);
    /* ev passed: the copy back waits for nothing else (the device lock is held) */
    if (!st)
        st = cuda_check(cudaMemcpyAsync(h, buf, sizeof h, cudaMemcpyDeviceToHost, s), fn,
                        "cudaMemcpyAsync");
    if (!st) st = cuda_check(cudaStreamSynchronize(s), fn, "cudaStreamSynchronize");
    if (ev) cudaEventDestroy(ev);
    for (int k = 0; k < AGREE_LEN && !st; k++) hi[k] = h[k], lo[k] = -h[AGREE_LEN + k];
    return st;
}

/* The first entry that differs between the ranks, as SHAPE_MISMATCH of the op it is about
 * (*op_index); NEAT_OK when none does. */
static neat_status disagreement(const nm_cmdbuf *cb, const nm_comm *comm, const int64_t v[],
                                const int64_t hi[], const int64_t lo[], int64_t *op_index) {
    const char *same = "every rank must record the same collectives in the same order";
    int rank = comm->rank;
    long long mine, max, min;
    if (hi[0] != lo[0]) {
        *op_index = nth_collective(cb, comm, 0);
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: rank %d records %lld collectives on this comm in the buffer, the "
                        "ranks from %lld to %lld: %s",
                        cb->ops[*op_index].fn, rank, (long long)v[0], (long long)lo[0],
                        (long long)hi[0], same);
    }
    for (int64_t j = 0; j < v[0] && j < AGREE_DETAIL; j++) {
        const int64_t *d = &v[2 + 3 * j], *dh = &hi[2 + 3 * j], *dl = &lo[2 + 3 * j];
        *op_index = nth_collective(cb, comm, j);
        const nm_op *op = &cb->ops[*op_index];
        mine = d[1], max = dh[1], min = dl[1];
        if (dh[0] != dl[0])
            return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                            "%s: rank %d records it as collective %lld on this comm, another rank "
                            "another kind of collective: %s",
                            op->fn, rank, (long long)j, same);
        if (max != min)
            return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                            "%s: rank %d has %lld elements, the ranks from %lld to %lld: every "
                            "rank must record the same element count",
                            op->fn, rank, mine, min, max);
        if (dh[2] != dl[2] && op->kind == NM_OP_BROADCAST)
            return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                            "%s: rank %d names root %lld, the ranks from %lld to %lld: every rank "
                            "must name the same root",
                            op->fn, rank, (long long)d[2], (long long)dl[2], (long long)dh[2]);
        if (dh[2] != dl[2] && (dh[2] & 1) != (dl[2] & 1))
            return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                            "%s: rank %d reduces by %s, another rank by %s: every rank must "
                            "pass the same neat_reduce_op",
                            op->fn, rank, (d[2] & 1) ? "AVG" : "SUM", (d[2] & 1) ? "SUM" : "AVG");
        if (dh[2] != dl[2])
            return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                            "%s: rank %d's bucket of %d tensors and %lld elements splits them "
                            "otherwise than another rank's: every rank must pass tensors of the "
                            "same element counts in the same order",
                            op->fn, rank, op->nlist, mine);
    }
    if (hi[1] != lo[1]) {
        *op_index = nth_collective(cb, comm, AGREE_DETAIL);
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: the ranks' collectives on this comm differ after the first %d (a "
                        "kind, an element count, a reduce op, a root or a bucket's tensors): %s",
                        cb->ops[*op_index].fn, AGREE_DETAIL, same);
    }
    return NEAT_OK;
}

neat_status cuda_comm_agree(nm_device *dev, nm_cmdbuf *cb, int64_t *op_index) {
    neat_status first = NEAT_OK;
    char msg[NM_MSG_MAX] = "";
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        nm_comm *comm = (nm_op_flags(op->kind) & NM_OPF_COLLECTIVE) ? comm_of_op(op) : NULL;
        if (!comm || comm->nranks == 1 || nth_collective(cb, comm, 0) != i) continue;
        int64_t v[AGREE_LEN], hi[AGREE_LEN], lo[AGREE_LEN], at = i;
        signature(cb, comm, v);
        neat_status st = ready(op, comm);
        if (!st) st = agree_exchange(op->fn, dev, cb, comm, v, hi, lo);
        if (!st) st = disagreement(cb, comm, v, hi, lo, &at);
        if (st && !first) {
            first = st, *op_index = at;
            snprintf(msg, sizeof msg, "%s", neat_last_error());
        }
    }
    return first ? nm_error(first, "%s", msg) : NEAT_OK;
}

/* ---- waiting ------------------------------------------------------------------------------- */

cudaError_t cuda_comm_wait(nm_device *dev, cudaEvent_t ev, nm_cmdbuf *cb) {
    double start = now_s(), aborted = 0;
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e != cudaErrorNotReady) return e;
        /* An aborted comm's kernels return at once; should the stream still not drain,
         * report the device as stuck rather than wait without end. */
        if (aborted > 0 && now_s() - aborted > 30) return cudaErrorTimeout;
        for (int64_t i = 0; i < cb->nops; i++) {
            const nm_op *op = &cb->ops[i];
            if (!(nm_op_flags(op->kind) & NM_OPF_COLLECTIVE)) continue;
            nm_comm *comm = op->kind == NM_OP_ALL_REDUCE  ? op->u.all_reduce.comm
                            : op->kind == NM_OP_BROADCAST ? op->u.broadcast.comm
                                                          : op->u.all_reduce_bucket.comm;
            cuda_comm *c = comm->impl;
            if (!c || !c->nccl) continue;
            ncclResult_t r = ncclSuccess;
            ncclCommGetAsyncError(c->nccl, &r);
            double timeout = timeout_of(comm);
            int late = timeout > 0 && now_s() - start > timeout;
            if ((r == ncclSuccess || r == ncclInProgress) && !late) continue;
            char msg[NM_MSG_MAX];
            if (late)
                snprintf(msg, sizeof msg,
                         "rank %d of %d: the other ranks did not take part within %g s "
                         "(neat_comm_set_timeout); the comm is broken: destroy it",
                         comm->rank, comm->nranks, timeout);
            else
                snprintf(msg, sizeof msg,
                         "rank %d of %d: NCCL failed: %s (%s); the comm is broken: destroy it",
                         comm->rank, comm->nranks, ncclGetErrorString(r),
                         ncclGetLastError(c->nccl));
            comm_abort(comm); /* its kernels return: the stream drains */
            aborted = now_s();
            nm_cmdbuf_fail(cb, i, late ? NEAT_ERR_TIMEOUT : NEAT_ERR_BACKEND_ERROR, msg);
        }
        nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

#else /* no NCCL */

#define NO_NCCL(fn)                                                                                \
    nm_error(NEAT_ERR_UNSUPPORTED,                                                                 \
             "%s: the CUDA backend was built without NCCL (nccl.h, libnccl)", fn)

neat_status cuda_comm_id_create(neat_comm_id *id) { return NO_NCCL("neat_comm_id_create"); }
neat_status cuda_comm_create(nm_comm *comm, const neat_comm_id *id) {
    return NO_NCCL("neat_comm_create");
}
neat_status cuda_comm_create_all(int n, nm_comm *const *comms) {
    return NO_NCCL("neat_comm_create_all");
}
void cuda_comm_destroy(nm_comm *comm) {}
neat_status cuda_all_reduce(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
neat_status cuda_all_reduce_bucket(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
neat_status cuda_broadcast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
neat_status cuda_comm_agree(nm_device *dev, nm_cmdbuf *cb, int64_t *op_index) {
    return NO_NCCL("neat_cmdbuf_commit");
}
cudaError_t cuda_comm_wait(nm_device *dev, cudaEvent_t ev, nm_cmdbuf *cb) {
    return cudaEventSynchronize(ev);
}

#endif
