/*
 * comm.c — the CPU backend's collectives: MPI between processes when built with it
 * (NEATML_HAVE_MPI), and the single-rank comm everywhere (a copy, no MPI).
 *
 * The ops run on the device's worker thread, so MPI is initialised with
 * MPI_THREAD_MULTIPLE (when the caller has not initialised it; the library then finalises
 * it at exit). Each comm is an MPI_Comm_idup of MPI_COMM_WORLD with MPI_ERRORS_RETURN, and
 * every MPI call on it is non-blocking, completed by an MPI_Test loop that gives up at the
 * comm's timeout (NEAT_ERR_TIMEOUT; the comm is then broken: its request is left pending,
 * and later collectives on it fail at once). A rank's place in the comm is the rank the
 * caller passed (world_rank[] maps it to MPI's).
 *
 * Agreement: comm creation gathers (rank, hash of id and nranks) from every process, so a
 * wrong id, nranks or a rank passed twice fails on every rank. Each collective op checks,
 * at its first run in a buffer, that every rank has its element count and (a bucket) its
 * tensors' counts (an all-reduce of (v, -v) under MAX), so that a mismatch is
 * SHAPE_MISMATCH everywhere, not a hang or garbage. (The CUDA backend checks a whole
 * buffer at its first commit instead: cuda/comm.c.)
 * Which ops were checked is kept in cb->impl (one byte per op, freed by cmdbuf_release).
 *
 * Math: SUM is MPI's float sum; AVG divides that sum by nranks (in the bucket's unpack).
 */
#include "cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef NEATML_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#endif

typedef struct cpu_comm {
#ifdef NEATML_HAVE_MPI
    MPI_Comm mpi;       /* MPI_COMM_NULL for a single rank */
    int *world_rank;    /* comm rank -> rank in mpi */
    MPI_Request orphan; /* a request abandoned at a timeout */
#endif
    int single;
} cpu_comm;

static cpu_comm *cpu_comm_of(const nm_comm *c) { return (cpu_comm *)c->impl; }

neat_status cpu_comm_id_create(neat_comm_id *id) {
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(id->bytes, 1, sizeof id->bytes, f) : 0;
    if (f) fclose(f);
    if (got != sizeof id->bytes) {
        /* No /dev/urandom: the time and the process id are unique enough for one job. */
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        uint64_t seed =
            (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
        for (size_t i = 0; i < sizeof id->bytes; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            id->bytes[i] = (unsigned char)(seed >> 56);
        }
    }
    return NEAT_OK;
}

/* ---- MPI ------------------------------------------------------------------------------------ */
#ifdef NEATML_HAVE_MPI

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static neat_status mpi_error(const char *fn, nm_comm *comm, int rc, const char *call) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", rc);
    __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
    return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: rank %d of %d: %s failed: %s", fn, comm->rank,
                    comm->nranks, call, text);
}

/* Complete req by MPI_Test until the comm's timeout. */
static neat_status mpi_wait(const char *fn, nm_comm *comm, MPI_Request *req, const char *call) {
    double timeout;
    __atomic_load(&comm->timeout, &timeout, __ATOMIC_RELAXED);
    double deadline = now_s() + timeout;
    for (long spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(fn, comm, rc, call);
        if (done) return NEAT_OK;
        if (timeout > 0 && (spins & 63) == 0 && now_s() > deadline) {
            cpu_comm *c = cpu_comm_of(comm);
            if (c) c->orphan = *req;
            __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
            return nm_error(NEAT_ERR_TIMEOUT,
                            "%s: rank %d of %d: %s: the other ranks did not take part within %g s "
                            "(neat_comm_set_timeout); the comm is broken: destroy it",
                            fn, comm->rank, comm->nranks, call, timeout);
        }
        /* Yield first (a peer on the same cores), then sleep briefly: the ranks share
         * the machine's cores with their own OpenMP threads. */
        if (spins < 2000)
            sched_yield();
        else
            nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

static void finalize_mpi(void) {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

static uint64_t id_hash(const neat_comm_id *id, int nranks) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof id->bytes; i++) h = (h ^ id->bytes[i]) * 1099511628211ull;
    h = (h ^ (uint64_t)nranks) * 1099511628211ull;
    return h >> 1; /* non-negative as int64 */
}

static neat_status mpi_comm_create(nm_comm *comm, const neat_comm_id *id, cpu_comm *c) {
    static const char fn[] = "neat_comm_create";
    int inited = 0, provided = 0, size = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS)
            return nm_error(NEAT_ERR_BACKEND_ERROR, "%s: MPI_Init_thread failed (%d)", fn, rc);
        atexit(finalize_mpi);
    }
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: MPI was initialised without MPI_THREAD_MULTIPLE (level %d): the CPU "
                        "backend runs collectives on its worker thread",
                        fn, provided);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != comm->nranks)
        return nm_error(
            NEAT_ERR_INVALID_ARGUMENT,
            "%s: nranks is %d but MPI_COMM_WORLD has %d processes (launch with mpirun -np %d)", fn,
            comm->nranks, size, comm->nranks);
    MPI_Request req;
    rc = MPI_Comm_idup(MPI_COMM_WORLD, &c->mpi, &req);
    neat_status st = rc == MPI_SUCCESS ? mpi_wait(fn, comm, &req, "MPI_Comm_idup")
                                       : mpi_error(fn, comm, rc, "MPI_Comm_idup");
    if (st) return st;
    MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN);
    int64_t mine[2] = {comm->rank, (int64_t)id_hash(id, comm->nranks)};
    int64_t *all = malloc((size_t)size * 2 * sizeof *all);
    c->world_rank = malloc((size_t)size * sizeof *c->world_rank);
    if (!all || !c->world_rank) st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    if (!st) {
        rc = MPI_Iallgather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, c->mpi, &req);
        st = rc == MPI_SUCCESS ? mpi_wait(fn, comm, &req, "MPI_Iallgather")
                               : mpi_error(fn, comm, rc, "MPI_Iallgather");
    }
    for (int i = 0; i < size && !st; i++) c->world_rank[i] = -1;
    for (int i = 0; i < size && !st; i++) {
        int r = (int)all[2 * i];
        if (all[2 * i + 1] != mine[1])
            st = nm_error(
                NEAT_ERR_INVALID_ARGUMENT,
                "%s: process %d of MPI_COMM_WORLD passed another id or nranks than this one "
                "(rank %d): every rank must pass rank 0's id and the same nranks",
                fn, i, comm->rank);
        else if (c->world_rank[r] >= 0)
            st = nm_error(NEAT_ERR_INVALID_ARGUMENT,
                          "%s: processes %d and %d both passed rank %d: ranks must be distinct", fn,
                          c->world_rank[r], i, r);
        else
            c->world_rank[r] = i;
    }
    free(all);
    return st;
}

/* A bucket's tensor counts as one non-negative number (FNV-1a); 0 for the other ops. */
static int64_t bucket_layout(const nm_op *op) {
    if (op->kind != NM_OP_ALL_REDUCE_BUCKET) return 0;
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uint64_t)op->nlist) * 1099511628211ull;
    for (int i = 0; i < op->nlist; i++) h = (h ^ (uint64_t)op->list[i]->numel) * 1099511628211ull;
    return (int64_t)(h >> 2);
}

/* The all-reduce of the op's element count (and a bucket's layout) under MAX, as (v, -v):
 * SHAPE_MISMATCH on every rank if one differs. */
static neat_status check_count(const nm_op *op, nm_comm *comm, int64_t count) {
    const char *fn = op->fn;
    int64_t layout = bucket_layout(op), v[4] = {count, -count, layout, -layout};
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, cpu_comm_of(comm)->mpi, &req);
    neat_status st = rc == MPI_SUCCESS ? mpi_wait(fn, comm, &req, "MPI_Iallreduce (element counts)")
                                       : mpi_error(fn, comm, rc, "MPI_Iallreduce");
    if (st) return st;
    if (v[0] != count || -v[1] != count)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: rank %d has %lld elements, another rank %lld: every rank must reduce "
                        "the same count",
                        fn, comm->rank, (long long)count,
                        (long long)(v[0] != count ? v[0] : -v[1]));
    if (v[2] != layout || -v[3] != layout)
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: rank %d's bucket of %d tensors and %lld elements splits them "
                        "otherwise than another rank's: every rank must pass tensors of the "
                        "same element counts in the same order",
                        fn, comm->rank, op->nlist, (long long)count);
    return NEAT_OK;
}

/* In chunks of at most INT_MAX elements (MPI's counts are int). src NULL: in place in dst. */
static neat_status mpi_sum(const char *fn, nm_comm *comm, const float *src, float *dst, int64_t n) {
    for (int64_t off = 0; off < n;) {
        int len = (int)(n - off < INT_MAX ? n - off : INT_MAX);
        MPI_Request req;
        int rc = MPI_Iallreduce(src ? (const void *)(src + off) : MPI_IN_PLACE, dst + off, len,
                                MPI_FLOAT, MPI_SUM, cpu_comm_of(comm)->mpi, &req);
        neat_status st = rc == MPI_SUCCESS ? mpi_wait(fn, comm, &req, "MPI_Iallreduce")
                                           : mpi_error(fn, comm, rc, "MPI_Iallreduce");
        if (st) return st;
        off += len;
    }
    return NEAT_OK;
}

static neat_status mpi_bcast(const char *fn, nm_comm *comm, float *buf, int64_t n, int root) {
    cpu_comm *c = cpu_comm_of(comm);
    for (int64_t off = 0; off < n;) {
        int len = (int)(n - off < INT_MAX ? n - off : INT_MAX);
        MPI_Request req;
        int rc = MPI_Ibcast(buf + off, len, MPI_FLOAT, c->world_rank[root], c->mpi, &req);
        neat_status st = rc == MPI_SUCCESS ? mpi_wait(fn, comm, &req, "MPI_Ibcast")
                                           : mpi_error(fn, comm, rc, "MPI_Ibcast");
        if (st) return st;
        off += len;
    }
    return NEAT_OK;
}

static void divide(float *y, int64_t n, int nranks) {
    for (int64_t i = 0; i < n; i++) y[i] /= (float)nranks;
}

#endif /* NEATML_HAVE_MPI */

/* ---- comms ---------------------------------------------------------------------------------- */

neat_status cpu_comm_create(nm_comm *comm, const neat_comm_id *id) {
    cpu_comm *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_comm_create: out of host memory");
#ifdef NEATML_HAVE_MPI
    c->mpi = MPI_COMM_NULL;
    c->orphan = MPI_REQUEST_NULL;
#endif
    c->single = comm->nranks == 1;
    neat_status st = NEAT_OK;
    if (!c->single) {
#ifdef NEATML_HAVE_MPI
        comm->impl = c; /* mpi_wait records an abandoned request there */
        st = mpi_comm_create(comm, id, c);
        if (st) {
            if (c->mpi != MPI_COMM_NULL && c->orphan == MPI_REQUEST_NULL) MPI_Comm_free(&c->mpi);
            free(c->world_rank);
        }
#else
        st = nm_error(NEAT_ERR_UNSUPPORTED,
                      "neat_comm_create: the CPU backend was built without MPI: only nranks = 1 "
                      "(install libopenmpi-dev and rebuild for collectives between processes)");
#endif
    }
    if (st) {
        comm->impl = NULL;
        free(c);
        return st;
    }
    comm->impl = c;
    return NEAT_OK;
}

neat_status cpu_comm_create_all(int n, nm_comm *const *comms) {
    if (n != 1)
        return nm_error(
            NEAT_ERR_UNSUPPORTED,
            "neat_comm_create_all: the CPU backend has one device: ndev must be 1, not %d", n);
    neat_comm_id id = {{0}};
    return cpu_comm_create(comms[0], &id);
}

void cpu_comm_destroy(nm_comm *comm) {
    cpu_comm *c = cpu_comm_of(comm);
    if (!c) return;
#ifdef NEATML_HAVE_MPI
    int done = 1;
    if (c->orphan != MPI_REQUEST_NULL) MPI_Test(&c->orphan, &done, MPI_STATUS_IGNORE);
    /* A request still pending keeps the communicator: freeing it is left to MPI_Finalize. */
    if (c->mpi != MPI_COMM_NULL && done) MPI_Comm_free(&c->mpi);
    free(c->world_rank);
#endif
    free(c);
    comm->impl = NULL;
}

void cpu_comm_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb) {
    free(cb->impl);
    cb->impl = NULL;
}

/* ---- ops ------------------------------------------------------------------------------------ */

/* Ready to run op on comm: not broken, and (MPI) its count checked once per buffer. */
static neat_status prepare(nm_cmdbuf *cb, const nm_op *op, nm_comm *comm, int64_t count) {
    if (__atomic_load_n(&comm->broken, __ATOMIC_RELAXED))
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: the comm is broken by an earlier failure (a timeout or a "
                        "peer's error): destroy it",
                        op->fn);
    if (cpu_comm_of(comm)->single) return NEAT_OK;
#ifdef NEATML_HAVE_MPI
    if (!cb->impl) cb->impl = calloc((size_t)cb->nops, 1);
    if (!cb->impl) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", op->fn);
    unsigned char *checked = cb->impl;
    int64_t i = op - cb->ops;
    if (checked[i]) return NEAT_OK;
    neat_status st = check_count(op, comm, count);
    if (!st) checked[i] = 1;
    return st;
#else
    return NEAT_ERR_INTERNAL; /* a multi-rank comm cannot exist without MPI */
#endif
}

neat_status cpu_all_reduce(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_args *a = &op->u.all_reduce;
    neat_status st = prepare(cb, op, a->comm, a->count);
    if (st || a->count == 0) return st;
    if (cpu_comm_of(a->comm)->single) {
        if (a->y->data != a->x->data)
            memcpy(a->y->data, a->x->data, (size_t)a->count * sizeof(float));
        return NEAT_OK;
    }
#ifdef NEATML_HAVE_MPI
    st = mpi_sum(op->fn, a->comm, a->x->data == a->y->data ? NULL : a->x->data, a->y->data,
                 a->count);
    if (!st && a->op == NEAT_REDUCE_AVG) divide(a->y->data, a->count, a->comm->nranks);
#endif
    return st;
}

neat_status cpu_all_reduce_bucket(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_bucket_args *a = &op->u.all_reduce_bucket;
    neat_status st = prepare(cb, op, a->comm, a->total);
    if (st || a->total == 0 || cpu_comm_of(a->comm)->single) return st;
#ifdef NEATML_HAVE_MPI
    int nranks = a->comm->nranks;
    if (a->contiguous) {
        float *first = NULL;
        for (int i = 0; i < op->nlist && !first; i++) first = op->list[i]->data;
        st = mpi_sum(op->fn, a->comm, NULL, first, a->total);
        if (!st && a->op == NEAT_REDUCE_AVG) divide(first, a->total, nranks);
        return st;
    }
    float *packed;
    st = nm_scratch_alloc(cb, (size_t)a->total * sizeof(float), (void **)&packed);
    if (st) return st;
    int64_t off = 0;
    for (int i = 0; i < op->nlist; i++) {
        const nm_tensor *t = op->list[i];
        if (t->numel) memcpy(packed + off, t->data, (size_t)t->numel * sizeof(float));
        off += t->numel;
    }
    st = mpi_sum(op->fn, a->comm, NULL, packed, a->total);
    if (st) return st;
    off = 0;
    float inv = a->op == NEAT_REDUCE_AVG ? (float)nranks : 1.0f;
    for (int i = 0; i < op->nlist; i++) {
        nm_tensor *t = op->list[i];
        if (inv == 1.0f)
            memcpy(t->data, packed + off, (size_t)t->numel * sizeof(float));
        else
            for (int64_t j = 0; j < t->numel; j++) t->data[j] = packed[off + j] / inv;
        off += t->numel;
    }
#endif
    return st;
}

neat_status cpu_broadcast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_broadcast_args *a = &op->u.broadcast;
    neat_status st = prepare(cb, op, a->comm, a->count);
    if (st || a->count == 0) return st;
    if (a->x && a->x->data != a->y->data)
        memcpy(a->y->data, a->x->data, (size_t)a->count * sizeof(float));
    if (cpu_comm_of(a->comm)->single) return NEAT_OK;
#ifdef NEATML_HAVE_MPI
    st = mpi_bcast(op->fn, a->comm, a->y->data, a->count, a->root);
#endif
    return st;
}
