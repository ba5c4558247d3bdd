/*
 * test_collectives.c — all-reduce (sum, average, bucket) and broadcast across ranks, their
 * errors, and a data-parallel training step, against float64 references.
 *
 * One process per rank. The rank and world size come from --rank/--world-size, RANK/
 * WORLD_SIZE, or Open MPI's OMPI_COMM_WORLD_RANK/_SIZE (mpirun -np 2); rank 0 writes the
 * comm id to --init-file (or NEATML_INIT_FILE) and the others read it. Alone (world size 1)
 * the single-rank cases run and the multi-rank ones are skipped. --backend cpu|cuda
 * (default cpu; CUDA: NCCL, one GPU per rank: LOCAL_RANK or the rank picks it).
 */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank, g_world;

static int env_int(const char *a, const char *b, int dflt) {
    const char *v = getenv(a);
    if (!v && b) v = getenv(b);
    return v && *v ? atoi(v) : dflt;
}

/* Rank 0 makes the id and writes it (write then rename: readers never see half a file);
 * the others poll for the file for up to 120 s. */
static neat_status share_id(neat_backend be, const char *path, neat_comm_id *id) {
    char text[300];
    if (g_rank == 0) {
        neat_status st = neat_comm_id_create(be, id);
        if (st) return st;
        neat_comm_id_to_string(id, text, sizeof text);
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
            return NEAT_ERR_INTERNAL;
        return NEAT_OK;
    }
    for (int i = 0; i < 12000; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int ok = fgets(text, sizeof text, f) != NULL;
            fclose(f);
            if (ok && neat_comm_id_from_string(text, id) == NEAT_OK) return NEAT_OK;
        }
        usleep(10000);
    }
    return NEAT_ERR_TIMEOUT;
}

/* ---- helpers -------------------------------------------------------------------------- */

static neat_tensor *tensor(neat_device *dev, int ndim, const int64_t *shape, const float *data) {
    neat_tensor *t = NULL;
    if (CHECK_OK(neat_tensor_create(dev, ndim, shape, &t), "neat_tensor_create") && data) {
        int64_t n;
        neat_tensor_numel(t, &n);
        neat_tensor_write(t, data, n);
    }
    return t;
}

/* Rank-dependent data of case `salt`: element i of rank r. */
static double value(int r, int64_t i, int salt) {
    return sin(0.37 * (double)i + 1.3 * r + salt) * (1 + r);
}

static void fill(float *p, int64_t n, int r, int salt) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)value(r, i, salt);
}

/* |got - want| within float32 summation tolerance for each element. */
static int close_to(const float *got, const double *want, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i]))))
            return CHECK(0, "%s: element %lld is %g, expected %g", what, (long long)i, got[i],
                         want[i]);
    return CHECK(1, "%s", what);
}

static int run(neat_cmdbuf *cb, int commits) {
    int ok = 1;
    for (int i = 0; i < commits; i++) {
        ok &= CHECK_OK(neat_cmdbuf_commit(cb), "commit");
        ok &= CHECK_OK(neat_cmdbuf_wait(cb), "wait");
    }
    return ok;
}

/* ---- cases ------------------------------------------------------------------------------ */

/* Sum and average of rank-dependent data, in place and out of place, replayed. */
static void case_all_reduce(neat_device *dev, neat_comm *comm) {
    const int64_t n = 1000;
    int64_t shape[2] = {25, 40};
    float *h = malloc(n * sizeof *h), *out = malloc(n * sizeof *out);
    double *want = malloc(n * sizeof *want);
    for (int op = 0; op < 2; op++)
        for (int in_place = 0; in_place < 2; in_place++) {
            fill(h, n, g_rank, op);
            neat_tensor *x = tensor(dev, 2, shape, h),
                        *y = in_place ? x : tensor(dev, 1, &shape[0] + 0, NULL);
            if (!in_place) {
                neat_tensor_destroy(y);
                int64_t flat = n;
                y = tensor(dev, 1, &flat, NULL);
            }
            neat_cmdbuf *cb;
            neat_cmdbuf_create(dev, &cb);
            CHECK_OK(neat_all_reduce(cb, comm, op ? NEAT_REDUCE_AVG : NEAT_REDUCE_SUM, x, y),
                     "neat_all_reduce");
            /* out of place: replayed twice, x unchanged, the same result; in place: once */
            run(cb, in_place ? 1 : 2);
            neat_tensor_read(y, out, n);
            for (int64_t i = 0; i < n; i++) {
                double s = 0;
                for (int r = 0; r < g_world; r++) s += (float)value(r, i, op);
                want[i] = op ? s / g_world : s;
            }
            char what[96];
            snprintf(what, sizeof what, "all_reduce %s %s", op ? "avg" : "sum",
                     in_place ? "in place" : "out of place");
            close_to(out, want, n, 1e-6, what);
            neat_cmdbuf_destroy(cb);
            if (y != x) neat_tensor_destroy(y);
            neat_tensor_destroy(x);
        }
    free(h), free(out), free(want);
}

/* A bucket of several shapes, with empty and one-element tensors: packed; and one tensor
 * between empty ones: reduced where it lies. */
static void case_bucket(neat_device *dev, neat_comm *comm) {
    int64_t shapes[6][3] = {{0}, {1}, {3, 5}, {7}, {2, 2}, {0, 4}};
    int ndims[6] = {1, 1, 2, 1, 2, 2};
    for (int packed = 0; packed < 2; packed++)
        for (int op = 0; op < 2; op++) {
            int n = packed ? 6 : 3;
            int idx[6] = {0, 2, 5, 3, 4, 1}; /* unpacked case: {0-size, 3x5, 0-size} */
            neat_tensor *ts[6];
            int64_t counts[6];
            float *hs[6];
            for (int i = 0; i < n; i++) {
                int k = packed ? i : idx[i];
                counts[i] = 1;
                for (int d = 0; d < ndims[k]; d++) counts[i] *= shapes[k][d];
                hs[i] = malloc((size_t)(counts[i] + 1) * sizeof(float));
                fill(hs[i], counts[i], g_rank, 10 * i + op);
                ts[i] = tensor(dev, ndims[k], shapes[k], hs[i]);
            }
            neat_cmdbuf *cb;
            neat_cmdbuf_create(dev, &cb);
            CHECK_OK(
                neat_all_reduce_bucket(cb, comm, op ? NEAT_REDUCE_AVG : NEAT_REDUCE_SUM, n, ts),
                "neat_all_reduce_bucket");
            run(cb, 1);
            for (int i = 0; i < n; i++) {
                double want[16];
                for (int64_t j = 0; j < counts[i]; j++) {
                    double s = 0;
                    for (int r = 0; r < g_world; r++) s += (float)value(r, j, 10 * i + op);
                    want[j] = op ? s / g_world : s;
                }
                neat_tensor_read(ts[i], hs[i], counts[i]);
                char what[96];
                snprintf(what, sizeof what, "bucket (%s) %s tensor %d of %lld elements",
                         packed ? "packed" : "in place", op ? "avg" : "sum", i,
                         (long long)counts[i]);
                close_to(hs[i], want, counts[i], 1e-6, what);
                neat_tensor_destroy(ts[i]);
                free(hs[i]);
            }
            neat_cmdbuf_destroy(cb);
        }
    /* An empty bucket (n = 0, the list NULL or not): records and runs, moving nothing. */
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    neat_tensor *none[1] = {NULL};
    CHECK_OK(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_SUM, 0, NULL), "bucket of 0, NULL list");
    CHECK_OK(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_AVG, 0, none), "bucket of 0");
    run(cb, 2);
    neat_cmdbuf_destroy(cb);
}

/* A bucket of 40 tensors (more than one pack kernel takes on CUDA: 32), empty ones among
 * them, and one of 70001 elements (more than one grid-stride pass), averaged, replayed. */
static void case_bucket_many(neat_device *dev, neat_comm *comm) {
    enum { N = 40 };
    neat_tensor *ts[N];
    int64_t counts[N];
    float *hs[N];
    for (int i = 0; i < N; i++) {
        counts[i] = i == 33 ? 70001 : (i * 37) % 11; /* 0 for i = 0, 11, 22 */
        hs[i] = malloc((size_t)(counts[i] + 1) * sizeof(float));
        fill(hs[i], counts[i], g_rank, 50 + i);
        ts[i] = tensor(dev, 1, &counts[i], hs[i]);
    }
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_AVG, N, ts), "bucket of 40");
    /* replayed: the second run averages the averages, which are equal on every rank */
    run(cb, 2);
    for (int i = 0; i < N; i++) {
        double *want = malloc((size_t)(counts[i] + 1) * sizeof *want);
        for (int64_t j = 0; j < counts[i]; j++) {
            double sum = 0;
            for (int r = 0; r < g_world; r++) sum += (float)value(r, j, 50 + i);
            want[j] = sum / g_world;
        }
        neat_tensor_read(ts[i], hs[i], counts[i]);
        char what[80];
        snprintf(what, sizeof what, "bucket of 40: tensor %d of %lld elements", i,
                 (long long)counts[i]);
        close_to(hs[i], want, counts[i], 1e-6, what);
        neat_tensor_destroy(ts[i]);
        free(hs[i]), free(want);
    }
    neat_cmdbuf_destroy(cb);
}

/* From each root, out of place and in place, replayed. */
static void case_broadcast(neat_device *dev, neat_comm *comm) {
    const int64_t n = 333;
    float *h = malloc(n * sizeof *h), *out = malloc(n * sizeof *out);
    double *want = malloc(n * sizeof *want);
    for (int root = 0; root < g_world; root++)
        for (int in_place = 0; in_place < 2; in_place++) {
            fill(h, n, g_rank, 7);
            neat_tensor *x = tensor(dev, 1, &n, h), *y = in_place ? x : tensor(dev, 1, &n, NULL);
            neat_cmdbuf *cb;
            neat_cmdbuf_create(dev, &cb);
            CHECK_OK(neat_broadcast(cb, comm, root, x, y), "neat_broadcast");
            run(cb, 2);
            neat_tensor_read(y, out, n);
            for (int64_t i = 0; i < n; i++) want[i] = (float)value(root, i, 7);
            char what[64];
            snprintf(what, sizeof what, "broadcast from %d %s", root,
                     in_place ? "in place" : "out of place");
            close_to(out, want, n, 0, what);
            neat_cmdbuf_destroy(cb);
            if (y != x) neat_tensor_destroy(y);
            neat_tensor_destroy(x);
        }
    free(h), free(out), free(want);
}

static void expect(neat_status st, neat_status want, const char *substr, const char *what) {
    CHECK_STATUS(st, want, what);
    if (substr)
        CHECK(strstr(neat_last_error(), substr) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              neat_last_error(), substr);
}

/* Errors one rank sees alone. */
static void case_local_errors(neat_device *dev, neat_comm *comm, neat_backend be) {
    neat_comm_id id;
    char text[300];
    neat_comm *c = NULL;
    memset(&id, 7, sizeof id);
    expect(neat_comm_id_create((neat_backend)7, &id), NEAT_ERR_INVALID_ARGUMENT, "neat_backend",
           "id_create: a value outside neat_backend");
    CHECK(id.bytes[0] == 7 && id.bytes[127] == 7, "id_create: a refused call left id alone");
    expect(neat_comm_id_to_string(&id, text, 100), NEAT_ERR_INVALID_ARGUMENT, "257",
           "id_to_string: small buffer");
    CHECK_OK(neat_comm_id_to_string(&id, text, sizeof text), "id_to_string");
    neat_comm_id back;
    CHECK(neat_comm_id_from_string(text, &back) == NEAT_OK && !memcmp(&back, &id, sizeof id),
          "id string round trip");
    expect(neat_comm_id_from_string("12zz", &back), NEAT_ERR_INVALID_ARGUMENT,
           "neat_comm_id_from_string", "bad id");
    expect(neat_comm_create(dev, &id, 0, 0, &c), NEAT_ERR_INVALID_ARGUMENT, "nranks", "nranks 0");
    expect(neat_comm_create(dev, &id, 2, 2, &c), NEAT_ERR_INVALID_ARGUMENT, "rank is 2",
           "rank out of range");
    expect(neat_comm_create(dev, NULL, 1, 0, &c), NEAT_ERR_INVALID_ARGUMENT, "id is NULL",
           "id NULL");
    expect(neat_comm_set_timeout(comm, -1), NEAT_ERR_INVALID_ARGUMENT, "seconds",
           "negative timeout");
    int r = -1, nr = -1;
    CHECK(neat_comm_info(comm, &r, &nr) == NEAT_OK && r == g_rank && nr == g_world, "comm_info");

    int64_t n = 4, m = 5;
    neat_tensor *x = tensor(dev, 1, &n, NULL), *y = tensor(dev, 1, &m, NULL);
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    expect(neat_all_reduce(cb, comm, (neat_reduce_op)7, x, x), NEAT_ERR_INVALID_ARGUMENT,
           "neat_reduce_op", "bad op");
    expect(neat_all_reduce(cb, comm, NEAT_REDUCE_SUM, x, y), NEAT_ERR_SHAPE_MISMATCH,
           "neat_all_reduce", "x, y counts");
    expect(neat_all_reduce(cb, NULL, NEAT_REDUCE_SUM, x, x), NEAT_ERR_INVALID_ARGUMENT,
           "comm is NULL", "comm NULL");
    expect(neat_broadcast(cb, comm, g_world, x, x), NEAT_ERR_INVALID_ARGUMENT, "root",
           "root out of range");
    neat_tensor *twice[2] = {x, x};
    expect(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_SUM, 2, twice), NEAT_ERR_INVALID_ARGUMENT,
           "share memory", "bucket: a tensor twice");
    expect(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_SUM, -1, twice), NEAT_ERR_INVALID_ARGUMENT,
           "n is -1", "bucket n");
    /* A comm of another device than cb */
    neat_device *other = NULL;
    if (neat_device_create(be, 0, &other) == NEAT_OK) {
        neat_cmdbuf *ocb;
        neat_tensor *ox = tensor(other, 1, &n, NULL);
        neat_cmdbuf_create(other, &ocb);
        expect(neat_all_reduce(ocb, comm, NEAT_REDUCE_SUM, ox, ox), NEAT_ERR_DEVICE_MISMATCH,
               "another device", "comm of another device");
        neat_cmdbuf_destroy(ocb);
        neat_tensor_destroy(ox);
        neat_device_destroy(other);
    }
    /* A destroyed comm: INVALID_HANDLE at record and at commit. The buffer ran once first,
     * so it holds backend state for the comm (on CUDA, after NEATML_CUDA_GRAPHS=1, a graph
     * of NCCL kernels), which the comm's destroy releases: reset, the buffer records and
     * runs again on a new comm. */
    neat_comm *one = NULL;
    if (CHECK_OK(neat_comm_create_all(1, &dev, &one), "neat_comm_create_all(1)")) {
        const float hx[4] = {1.5f, -2.0f, 0.25f, 8.0f};
        float hy[4] = {0};
        neat_tensor_write(x, hx, 4);
        CHECK_OK(neat_all_reduce(cb, one, NEAT_REDUCE_SUM, x, x), "all_reduce on a 1-rank comm");
        CHECK_OK(neat_cmdbuf_commit(cb), "commit before the comm's destroy");
        CHECK_OK(neat_cmdbuf_wait(cb), "wait before the comm's destroy");
        neat_comm_destroy(one);
        expect(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "comm",
               "commit after comm destroyed");
        expect(neat_comm_info(one, NULL, NULL), NEAT_ERR_INVALID_HANDLE, "comm", "destroyed comm");
        neat_comm *again = NULL;
        neat_tensor *y4 = tensor(dev, 1, &n, NULL);
        if (CHECK_OK(neat_comm_create_all(1, &dev, &again), "neat_comm_create_all(1) again") &&
            CHECK_OK(neat_cmdbuf_reset(cb), "reset after the comm's destroy") &&
            CHECK_OK(neat_all_reduce(cb, again, NEAT_REDUCE_SUM, x, y4), "record on a new comm") &&
            CHECK_OK(neat_cmdbuf_commit(cb), "commit on the new comm") &&
            CHECK_OK(neat_cmdbuf_wait(cb), "wait on the new comm") &&
            CHECK_OK(neat_tensor_read(y4, hy, 4), "read")) {
            int same = 1;
            for (int i = 0; i < 4; i++) same &= hy[i] == hx[i]; /* one rank: the sum is x */
            CHECK(same, "1-rank all_reduce after a reset: got %g %g %g %g", hy[0], hy[1], hy[2],
                  hy[3]);
        }
        neat_comm_destroy(again);
        neat_tensor_destroy(y4);
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

/* A correct in-place SUM of n elements on comm (salt: the data): the comm still works. */
static void check_sum(neat_device *dev, neat_comm *comm, int64_t n, int salt, const char *what) {
    float *h = malloc(n * sizeof *h);
    double *want = malloc(n * sizeof *want);
    fill(h, n, g_rank, salt);
    neat_tensor *x = tensor(dev, 1, &n, h);
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce(cb, comm, NEAT_REDUCE_SUM, x, x), what);
    run(cb, 1);
    neat_tensor_read(x, h, n);
    for (int64_t i = 0; i < n; i++) {
        double sum = 0;
        for (int r = 0; r < g_world; r++) sum += (float)value(r, i, salt);
        want[i] = sum;
    }
    close_to(h, want, n, 1e-6, what);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x);
    free(h), free(want);
}

/* t holds exactly the n floats of want. */
static void check_untouched(neat_tensor *t, const float *want, int64_t n, const char *what) {
    float *got = malloc(n * sizeof *got);
    neat_tensor_read(t, got, n);
    CHECK(!memcmp(got, want, n * sizeof *got), "%s", what);
    free(got);
}

/* Ranks that disagree on their collectives: SHAPE_MISMATCH on every rank, from wait, and
 * the comm still usable; a silent rank: TIMEOUT. On CUDA nothing of a refused buffer runs
 * (the ranks agree on the whole buffer at its first commit); on the CPU each collective is
 * checked at its first run, so the ops before the one that disagrees have run. */
static void case_peer_errors(neat_device *dev, neat_comm *comm, neat_comm *spare, neat_backend be) {
    /* 100 elements on rank 0, 101 on rank 1: refused at every commit, x and y untouched */
    int64_t n = 100 + g_rank;
    float h[101], poison[101];
    fill(h, n, g_rank, 3);
    for (int i = 0; i < 101; i++) poison[i] = -7.5f;
    neat_tensor *x = tensor(dev, 1, &n, h), *y = tensor(dev, 1, &n, poison);
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce(cb, comm, NEAT_REDUCE_SUM, x, y),
             "record all_reduce of rank-dependent count");
    for (int again = 0; again < 2; again++) {
        CHECK_OK(neat_cmdbuf_commit(cb), "commit");
        expect(neat_cmdbuf_wait(cb), NEAT_ERR_SHAPE_MISMATCH, "elements",
               again ? "counts differ, committed again" : "ranks' counts differ (100, 101)");
        check_untouched(y, poison, n, "count mismatch: y untouched");
        check_untouched(x, h, n, "count mismatch: x untouched");
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
    check_sum(dev, comm, 100, 4, "after a mismatch, an agreeing all_reduce on the comm");

    /* A buffer on two comms, the second's counts differ: refused everywhere (the message
     * names op 1), and both comms still work */
    int64_t m = 100, k = 4 + g_rank;
    neat_tensor *a = tensor(dev, 1, &m, h), *b = tensor(dev, 1, &k, NULL);
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce(cb, comm, NEAT_REDUCE_SUM, a, a), "record all_reduce on comm");
    CHECK_OK(neat_all_reduce(cb, spare, NEAT_REDUCE_SUM, b, b), "record all_reduce on spare");
    CHECK_OK(neat_cmdbuf_commit(cb), "commit (two comms)");
    expect(neat_cmdbuf_wait(cb), NEAT_ERR_SHAPE_MISMATCH, "op 1 of 2",
           "two comms, the second's counts differ");
    if (be == NEAT_BACKEND_CUDA) check_untouched(a, h, m, "two comms: op 0 did not run either");
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b);
    check_sum(dev, comm, 7, 5, "after a two-comm mismatch, an all_reduce on comm");
    check_sum(dev, spare, 7, 6, "after a two-comm mismatch, an all_reduce on spare");

    /* A bucket of 3 + 5 elements on rank 0 and 5 + 3 on rank 1: the same total, tensors that
     * do not match */
    int64_t s0 = g_rank ? 5 : 3, s1 = g_rank ? 3 : 5;
    neat_tensor *bucket[2] = {tensor(dev, 1, &s0, NULL), tensor(dev, 1, &s1, NULL)};
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_SUM, 2, bucket), "record bucket");
    CHECK_OK(neat_cmdbuf_commit(cb), "commit (bucket)");
    expect(neat_cmdbuf_wait(cb), NEAT_ERR_SHAPE_MISMATCH, "tensors",
           "buckets of one total, split otherwise");
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(bucket[0]), neat_tensor_destroy(bucket[1]);
    check_sum(dev, comm, 3, 8, "after a bucket mismatch, an all_reduce on comm");

    /* Rank 0 waits 1 s for rank 1, which comes 3 s late: TIMEOUT on rank 0 (the comm is then
     * broken: committing again fails at once). The late rank: on the CPU its op completes
     * (MPI matches the request rank 0 left pending); on CUDA rank 0 aborted its NCCL comm:
     * over sockets rank 1 waits its own 2 s for it (TIMEOUT, or NCCL's error for a peer
     * gone); over NVLink rank 0's kernel had already written its part into rank 1's buffers
     * before the abort, so rank 1's exchange completes (OK: measured on 2 H200s). Never a
     * hang: the wait returns within the timeout either way. */
    int64_t zero = 0;
    neat_tensor *z = tensor(dev, 1, &zero, NULL);
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_all_reduce(cb, spare, NEAT_REDUCE_SUM, z, z), "record all_reduce (timeout case)");
    if (g_rank == 0) {
        neat_comm_set_timeout(spare, 1.0);
        CHECK_OK(neat_cmdbuf_commit(cb), "commit");
        expect(neat_cmdbuf_wait(cb), NEAT_ERR_TIMEOUT, "did not take part within", "silent peer");
        expect(neat_cmdbuf_commit(cb), NEAT_ERR_BACKEND_ERROR, "broken", "commit on a broken comm");
    } else if (g_rank == 1) {
        sleep(3);
        if (be == NEAT_BACKEND_CUDA) {
            neat_comm_set_timeout(spare, 2.0);
            CHECK_OK(neat_cmdbuf_commit(cb), "late commit");
            neat_status st = neat_cmdbuf_wait(cb);
            CHECK(st == NEAT_ERR_TIMEOUT || st == NEAT_ERR_BACKEND_ERROR || st == NEAT_OK,
                  "late rank, its peer gone: TIMEOUT, BACKEND_ERROR or OK, got %s (%s)",
                  neat_status_string(st), neat_last_error());
        } else {
            CHECK_OK(neat_cmdbuf_commit(cb), "late commit");
            CHECK_OK(neat_cmdbuf_wait(cb), "late rank's wait");
        }
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(z);
}

/* One SGD step of logits = x w^T + b, mean cross-entropy: on `world` ranks each with its
 * shard of the batch and the gradients averaged by one bucket, the parameters equal the
 * single-device step on the whole batch (float32 reduction tolerance). */
static void train_step(neat_device *dev, neat_comm *comm, int64_t rows, const float *x_h,
                       const float *lab_h, float *w_h, float *b_h) {
    enum { D = 12, C = 5 };
    int64_t xs[2] = {rows, D}, ws[2] = {C, D}, cs = C, ls[2] = {rows, C}, one = 1, two = 2;
    neat_tensor *x = tensor(dev, 2, xs, x_h), *lab = tensor(dev, 1, &rows, lab_h),
                *w = tensor(dev, 2, ws, w_h), *b = tensor(dev, 1, &cs, b_h),
                *logits = tensor(dev, 2, ls, NULL), *dlog = tensor(dev, 2, ls, NULL),
                *loss = tensor(dev, 1, &one, NULL), *dw = tensor(dev, 2, ws, NULL),
                *db = tensor(dev, 1, &cs, NULL);
    float hyper_h[2] = {0.5f, 1};
    neat_tensor *hyper = tensor(dev, 1, &two, hyper_h);
    neat_sgd_params p = {0};
    neat_cmdbuf *cb;
    neat_cmdbuf_create(dev, &cb);
    CHECK_OK(neat_linear_forward(cb, NEAT_ACT_NONE, x, w, b, logits), "linear");
    CHECK_OK(neat_softmax_cross_entropy(cb, logits, lab, loss), "xent");
    CHECK_OK(neat_softmax_cross_entropy_backward(cb, logits, lab, dlog), "xent backward");
    CHECK_OK(neat_linear_backward(cb, NEAT_ACT_NONE, x, w, b, logits, dlog, NULL, dw, db, 0),
             "linear backward");
    if (comm) {
        neat_tensor *grads[2] = {dw, db};
        CHECK_OK(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_AVG, 2, grads), "bucket");
    }
    CHECK_OK(neat_sgd_update(cb, &p, hyper, w, dw, NULL), "sgd w");
    CHECK_OK(neat_sgd_update(cb, &p, hyper, b, db, NULL), "sgd b");
    run(cb, 1);
    neat_tensor_read(w, w_h, C * D);
    neat_tensor_read(b, b_h, C);
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, lab, w, b, logits, dlog, loss, dw, db, hyper};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) neat_tensor_destroy(all[i]);
}

static void case_training(neat_device *dev, neat_comm *comm) {
    enum { D = 12, C = 5, PER = 8 };
    int64_t rows = (int64_t)PER * g_world;
    float *x = malloc(rows * D * sizeof *x), *lab = malloc(rows * sizeof *lab);
    float w0[C * D], b0[C], w1[C * D], b1[C];
    for (int64_t i = 0; i < rows * D; i++) x[i] = (float)value(0, i, 99);
    for (int64_t i = 0; i < rows; i++) lab[i] = (float)(i * 7 % C);
    for (int i = 0; i < C * D; i++) w0[i] = w1[i] = (float)(0.1 * value(0, i, 5));
    for (int i = 0; i < C; i++) b0[i] = b1[i] = (float)(0.1 * value(0, i, 6));
    train_step(dev, NULL, rows, x, lab, w0, b0); /* the whole batch on this device */
    train_step(dev, comm, PER, x + (int64_t)g_rank * PER * D, lab + (int64_t)g_rank * PER, w1, b1);
    double want[C * D];
    for (int i = 0; i < C * D; i++) want[i] = w0[i];
    close_to(w1, want, C * D, 2e-6, "data-parallel step: w equals the whole-batch step");
    for (int i = 0; i < C; i++) want[i] = b0[i];
    close_to(b1, want, C, 2e-6, "data-parallel step: b equals the whole-batch step");
    free(x), free(lab);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --bench MiB[,MiB...]: all-reduce bus bandwidth through neatml, measured as bench/nccl_peer.c
 * measures NCCL's: ITERS in-place all-reduces (SUM) back to back between two device events,
 * the median of REPS such runs. Here the ITERS are one recorded buffer of ITERS
 * neat_all_reduce (a CUDA graph of ITERS NCCL kernels once replayed), timed by
 * neat_cmdbuf_device_time. Each timed submission is committed right behind an untimed one,
 * so it starts when the ranks' previous all-reduces end: like nccl_peer's events, the clock
 * does not include the time one rank waits for the other to launch (a submission committed
 * after a wait would time that skew too). */
static void bench(neat_device *dev, neat_comm *comm, const char *list) {
    enum { ITERS = 20, REPS = 5 };
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        int64_t mib = atoll(p), n = mib << 18;
        neat_tensor *x = NULL;
        neat_cmdbuf *cb = NULL;
        if (!CHECK_OK(neat_tensor_create_zeros(dev, 1, &n, &x), "bench tensor")) return;
        neat_cmdbuf_create(dev, &cb);
        for (int i = 0; i < ITERS; i++)
            CHECK_OK(neat_all_reduce(cb, comm, NEAT_REDUCE_SUM, x, x), "bench all_reduce");
        run(cb, 2); /* warm-up: the first run (eager), then the graph's capture and replay */
        double sec[REPS];
        int got = 0;
        for (int r = 0; r < REPS; r++) {
            CHECK_OK(neat_cmdbuf_commit(cb), "commit (untimed)");
            CHECK_OK(neat_cmdbuf_commit(cb), "commit (timed)");
            CHECK_OK(neat_cmdbuf_wait(cb), "wait");
            double t;
            if (neat_cmdbuf_device_time(cb, &t) == NEAT_OK) sec[got++] = t / ITERS;
        }
        qsort(sec, (size_t)got, sizeof *sec, by_value);
        double t = got ? sec[got / 2] : 0, bytes = (double)n * 4;
        if (g_rank == 0)
            printf("neatml allreduce %lld MiB ranks=%d time_ms=%.3f busbw_GBps=%.1f\n",
                   (long long)mib, g_world, t * 1e3,
                   t > 0 ? bytes * 2.0 * (g_world - 1) / g_world / t / 1e9 : 0.0);
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(x);
    }
}

int main(int argc, char **argv) {
    const char *backend = "cpu", *init_file = getenv("NEATML_INIT_FILE"), *bench_list = NULL;
    g_rank = env_int("RANK", "OMPI_COMM_WORLD_RANK", 0);
    g_world = env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", 1);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rank"))
            g_rank = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--world-size"))
            g_world = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--init-file"))
            init_file = argv[i + 1];
        else if (!strcmp(argv[i], "--backend"))
            backend = argv[i + 1];
        else if (!strcmp(argv[i], "--bench"))
            bench_list = argv[i + 1];
    }
    nt_seed_base("collectives", 1);
    neat_backend be;
    neat_device *dev = NULL;
    if (neat_backend_from_name(backend, &be) != NEAT_OK) {
        CHECK(0, "unknown backend %s", backend);
        return nt_finish("collectives");
    }
    if (be != NEAT_BACKEND_CUDA)
        nt_skip("CUDA collectives (NCCL): need GPUs; scripts/gpu_dist.sh runs them");
    int index = be == NEAT_BACKEND_CUDA ? env_int("LOCAL_RANK", NULL, g_rank) : 0;
    if (neat_device_create(be, index, &dev) != NEAT_OK) {
        nt_skip("%s collectives: %s", backend, neat_last_error());
        return nt_finish("collectives");
    }
    neat_comm *comm = NULL, *spare = NULL;
    neat_comm_id id;
    neat_status st;
    if (g_world == 1) {
        st = neat_comm_create_all(1, &dev, &comm);
    } else if (!init_file) {
        CHECK(0, "rank %d of %d: no --init-file (or NEATML_INIT_FILE) to share the comm id", g_rank,
              g_world);
        return nt_finish("collectives");
    } else {
        /* One id per communicator: NCCL's bootstrap serves one init per unique id. */
        char spare_file[1100];
        snprintf(spare_file, sizeof spare_file, "%s.spare", init_file);
        st = share_id(be, init_file, &id);
        if (!st) st = neat_comm_create(dev, &id, g_world, g_rank, &comm);
        if (!st) st = share_id(be, spare_file, &id);
        if (!st) st = neat_comm_create(dev, &id, g_world, g_rank, &spare);
    }
    if (st == NEAT_ERR_UNSUPPORTED) {
        nt_skip("%s collectives across %d ranks: %s", backend, g_world, neat_last_error());
        neat_device_destroy(dev);
        return nt_finish("collectives");
    }
    if (!CHECK_OK(st, "neat_comm_create")) return nt_finish("collectives");
    if (bench_list) {
        bench(dev, comm, bench_list);
        neat_comm_destroy(spare), neat_comm_destroy(comm), neat_device_destroy(dev);
        return nt_finish(g_world > 1 && g_rank ? "bench-rank1" : "bench");
    }
    case_local_errors(dev, comm, be);
    case_all_reduce(dev, comm);
    case_bucket(dev, comm);
    case_bucket_many(dev, comm);
    case_broadcast(dev, comm);
    case_training(dev, comm);
    if (g_world > 1)
        case_peer_errors(dev, comm, spare, be);
    else
        nt_skip("cases across ranks (peer errors; sums of 2+ ranks): run under mpirun -np 2 "
                "(scripts/run_tests.sh does)");
    neat_comm_destroy(spare);
    neat_comm_destroy(comm);
    neat_device_destroy(dev);
    /* Across ranks each closing line names its rank (run_tests.sh counts each). */
    char suite[64];
    if (g_world > 1)
        snprintf(suite, sizeof suite, "collectives-rank%d", g_rank);
    else
        snprintf(suite, sizeof suite, "collectives");
    return nt_finish(suite);
}
