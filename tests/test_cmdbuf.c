/*
 * test_cmdbuf.c — command buffers on every backend: replay with new inputs, queued replays,
 * reset, op counts, the statuses of misuse, views between ops, asynchronous failures.
 *
 * Values are checked against reference.c; the linear layer replayed 100 times uses the
 * matmul tolerance of test_conformance.c ((2K+4) 2^-24 sum|x||w|). The queued-replay, reset
 * and view cases use integer data so that their results are exact.
 */
#include "harness.h"
#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EPS 0x1.0p-24

static const char *dev_name; /* the device under test, in every failure message */

/* Status checks whose failure message names the device under test. */
static int check_status(neat_status st, neat_status want, const char *what, int line) {
    return nt_check(st == want, __FILE__, line, "%s: %s: got %s, want %s (%s)", dev_name, what,
                    neat_status_string(st), neat_status_string(want), neat_last_error());
}
#define EXPECT_STATUS(st, want, what) check_status((st), (want), (what), __LINE__)
#define EXPECT_OK(st, what) check_status((st), NEAT_OK, (what), __LINE__)

static void fill_uniform(float *v, int64_t n, nt_rng *r, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)nt_uniform(r, lo, hi);
}

static void fill_int(float *v, int64_t n, nt_rng *r) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)nt_randint(r, -4, 4);
}

static neat_tensor *matrix(neat_device *dev, int64_t rows, int64_t cols, const float *data) {
    neat_tensor *t = NULL;
    EXPECT_OK(neat_matrix_create(dev, rows, cols, &t), "neat_matrix_create");
    if (t && data) EXPECT_OK(neat_tensor_write(t, data, rows * cols), "neat_tensor_write");
    return t;
}

/* Read n floats through a guarded buffer; the caller frees with nt_free. */
static float *read_back(const neat_tensor *t, int64_t n) {
    float *v = nt_alloc(n);
    nt_poison(v, n);
    EXPECT_OK(neat_tensor_read(t, v, n), "neat_tensor_read");
    CHECK(nt_guard_ok(v, n), "%s: guard band overwritten by neat_tensor_read", dev_name);
    return v;
}

/* Record y = relu(x w^T + b), z = 0.5 y once; commit it 100 times, each with new x. */
static void test_replay(neat_device *dev) {
    enum { N = 64, IN = 33, OUT = 17, ROUNDS = 100 };
    nt_rng r = {42};
    float xv[N * IN], wv[OUT * IN], bv[OUT];
    fill_uniform(wv, OUT * IN, &r, -1, 1);
    fill_uniform(bv, OUT, &r, -1, 1);
    neat_tensor *x = matrix(dev, N, IN, NULL), *w = matrix(dev, OUT, IN, wv);
    neat_tensor *y = matrix(dev, N, OUT, NULL), *z = matrix(dev, N, OUT, NULL), *b = NULL;
    EXPECT_OK(neat_tensor_create(dev, 1, (int64_t[]){OUT}, &b), "create b");
    EXPECT_OK(neat_tensor_write(b, bv, OUT), "write b");
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_linear_forward(cb, NEAT_ACT_RELU, x, w, b, y), "record linear");
    EXPECT_OK(neat_scale(cb, y, 0.5f, z), "record scale");
    int64_t count = -1;
    EXPECT_OK(neat_cmdbuf_op_count(cb, &count), "neat_cmdbuf_op_count");
    CHECK(count == 2, "%s: op_count %lld after two ops, want 2", dev_name, (long long)count);

    double xd[N * IN], wd[OUT * IN], bd[OUT], yd[N * OUT], abs[N * OUT];
    for (int i = 0; i < OUT * IN; i++) wd[i] = wv[i];
    for (int i = 0; i < OUT; i++) bd[i] = bv[i];
    int bad_rounds = 0, first_bad = -1;
    for (int round = 0; round < ROUNDS; round++) {
        fill_uniform(xv, N * IN, &r, -1, 1);
        EXPECT_OK(neat_tensor_write(x, xv, N * IN), "write x between commits");
        EXPECT_OK(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait");
        float *got = read_back(z, N * OUT);
        for (int i = 0; i < N * IN; i++) xd[i] = xv[i];
        ref_linear_forward(xd, wd, bd, NEAT_ACT_RELU, yd, NULL, abs, N, IN, OUT);
        int ok = 1;
        for (int i = 0; i < N * OUT; i++)
            ok &= fabs(got[i] - 0.5 * yd[i]) <= (2.0 * (IN + 1) + 4) * EPS * abs[i];
        if (!ok && bad_rounds++ == 0) first_bad = round;
        nt_free(got);
    }
    CHECK(bad_rounds == 0, "%s: replay with new inputs wrong in %d of %d rounds (first %d)",
          dev_name, bad_rounds, ROUNDS, first_bad);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(b);
    neat_tensor_destroy(y), neat_tensor_destroy(z);
}

/* a += b committed twice before one wait: the second replay queues behind the first, so
 * a ends at a0 + 2b. Then reset, record a different op (scale) and check it alone runs. */
static void test_queue_and_reset(neat_device *dev) {
    enum { R = 37, C = 129 };
    nt_rng r = {7};
    float av[R * C], bv[R * C];
    fill_int(av, R * C, &r);
    fill_int(bv, R * C, &r);
    neat_tensor *a = matrix(dev, R, C, av), *b = matrix(dev, R, C, bv);
    neat_tensor *s = matrix(dev, R, C, NULL);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_add(cb, a, b, a), "record in-place add");
    EXPECT_OK(neat_cmdbuf_commit(cb), "first commit");
    EXPECT_OK(neat_cmdbuf_commit(cb), "second commit without wait");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait after two commits");
    float *got = read_back(a, R * C);
    int wrong = 0;
    for (int i = 0; i < R * C; i++) wrong += got[i] != av[i] + 2 * bv[i];
    CHECK(wrong == 0, "%s: two queued replays of a += b: %d of %d elements not a0 + 2b", dev_name,
          wrong, R * C);
    nt_free(got);

    /* Reset: no ops left, records again; the add must not run any more. */
    EXPECT_OK(neat_cmdbuf_reset(cb), "neat_cmdbuf_reset");
    int64_t count = -1;
    EXPECT_OK(neat_cmdbuf_op_count(cb, &count), "op_count after reset");
    CHECK(count == 0, "%s: op_count %lld after reset, want 0", dev_name, (long long)count);
    EXPECT_OK(neat_tensor_write(a, av, R * C), "rewrite a");
    EXPECT_OK(neat_scale(cb, a, -3.0f, s), "record scale after reset");
    EXPECT_OK(neat_cmdbuf_op_count(cb, &count), "op_count");
    CHECK(count == 1, "%s: op_count %lld, want 1", dev_name, (long long)count);
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit after reset");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait after reset");
    float *sv = read_back(s, R * C), *a_after = read_back(a, R * C);
    wrong = 0;
    for (int i = 0; i < R * C; i++) wrong += sv[i] != -3.0f * av[i] || a_after[i] != av[i];
    CHECK(wrong == 0, "%s: after reset, scale wrong or the old add ran: %d elements", dev_name,
          wrong);
    nt_free(sv), nt_free(a_after);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(s);
}

/* The statuses of misuse, each with a message naming the problem. */
static void test_misuse(neat_device *dev) {
    neat_tensor *x = matrix(dev, 3, 4, (float[12]){0}), *y = matrix(dev, 3, 4, NULL);
    neat_cmdbuf *cb = NULL;

    /* wait on a buffer never committed, empty or not */
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait on an empty, never committed buffer");
    EXPECT_OK(neat_scale(cb, x, 2.0f, y), "record scale");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait on a never committed buffer");

    /* recording into a committed buffer */
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    neat_status st = neat_scale(cb, x, 3.0f, y);
    EXPECT_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "record into a committed buffer");
    CHECK(strstr(neat_last_error(), "committed") != NULL,
          "%s: message for recording into a committed buffer: \"%s\"", dev_name, neat_last_error());
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    int64_t count = -1;
    EXPECT_OK(neat_cmdbuf_op_count(cb, &count), "op_count");
    CHECK(count == 1, "%s: the refused op was counted: op_count %lld", dev_name, (long long)count);

    /* commit after a recorded tensor was destroyed */
    neat_tensor_destroy(y);
    st = neat_cmdbuf_commit(cb);
    EXPECT_STATUS(st, NEAT_ERR_INVALID_HANDLE, "commit after a recorded tensor was destroyed");
    CHECK(strstr(neat_last_error(), "destroyed") != NULL,
          "%s: message for a destroyed tensor at commit: \"%s\"", dev_name, neat_last_error());
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait after the refused commit");
    neat_cmdbuf_destroy(cb);

    /* a destroyed buffer */
    st = neat_cmdbuf_commit(cb);
    EXPECT_STATUS(st, NEAT_ERR_INVALID_HANDLE, "commit of a destroyed buffer");
    st = neat_cmdbuf_op_count(cb, &count);
    EXPECT_STATUS(st, NEAT_ERR_INVALID_HANDLE, "op_count of a destroyed buffer");

    /* commit after a tensor of an op's list (neat_loss_scale_check) was destroyed */
    neat_tensor *g = matrix(dev, 3, 4, (float[12]){0}), *scaler = NULL;
    EXPECT_OK(neat_tensor_create_zeros(dev, 1, (int64_t[]){3}, &scaler), "scaler");
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    st = neat_loss_scale_check(cb, (const neat_tensor *[]){x, g}, 2, scaler);
    if (st != NEAT_ERR_UNSUPPORTED) { /* Metal has no loss scaling yet */
        EXPECT_OK(st, "record loss_scale_check");
        neat_tensor_destroy(g), g = NULL;
        st = neat_cmdbuf_commit(cb);
        EXPECT_STATUS(st, NEAT_ERR_INVALID_HANDLE, "commit after a listed tensor was destroyed");
        CHECK(strstr(neat_last_error(), "destroyed") != NULL,
              "%s: message for a destroyed listed tensor at commit: \"%s\"", dev_name,
              neat_last_error());
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait after the refused commit");
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(g);
    neat_tensor_destroy(scaler);
    neat_tensor_destroy(x);
}

/* A view as the reshape between two ops: y = x w^T [4,6] seen as [2,12], softmax of it. */
static void test_view_between_ops(neat_device *dev) {
    enum { N = 4, IN = 5, OUT = 6 };
    nt_rng r = {99};
    float xv[N * IN], wv[OUT * IN];
    fill_int(xv, N * IN, &r);
    fill_int(wv, OUT * IN, &r);
    for (int i = 0; i < N * IN; i++) xv[i] *= 0.25f; /* keep softmax inputs moderate */
    neat_tensor *x = matrix(dev, N, IN, xv), *w = matrix(dev, OUT, IN, wv);
    neat_tensor *y = matrix(dev, N, OUT, NULL), *z = matrix(dev, 2, 12, NULL), *v = NULL;
    EXPECT_OK(neat_tensor_view(y, 2, (int64_t[]){2, 12}, &v), "neat_tensor_view");
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_linear_forward(cb, NEAT_ACT_NONE, x, w, NULL, y), "record linear");
    EXPECT_OK(neat_softmax(cb, v, z), "record softmax of the view");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    double xd[N * IN], wd[OUT * IN], yd[N * OUT], zd[N * OUT];
    for (int i = 0; i < N * IN; i++) xd[i] = xv[i];
    for (int i = 0; i < OUT * IN; i++) wd[i] = wv[i];
    /* products of quarters and small integers: y is exact in float32 */
    ref_linear_forward(xd, wd, NULL, NEAT_ACT_NONE, yd, NULL, NULL, N, IN, OUT);
    ref_softmax(yd, zd, 2, 12);
    float *got = read_back(z, N * OUT), *gy = read_back(v, N * OUT);
    int wrong = 0;
    for (int i = 0; i < N * OUT; i++)
        wrong += !(fabs(got[i] - zd[i]) <= 1e-5 * zd[i] + 1e-30) || gy[i] != (float)yd[i];
    CHECK(wrong == 0, "%s: linear -> view [2,12] -> softmax: %d of %d elements wrong", dev_name,
          wrong, N * OUT);
    nt_free(got), nt_free(gy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(v), neat_tensor_destroy(x), neat_tensor_destroy(w);
    neat_tensor_destroy(y), neat_tensor_destroy(z);
}

/* An out-of-range label is found when the op runs: commit succeeds, wait reports
 * INVALID_ARGUMENT with a message; after fixing the label the next replay is OK. */
static void test_async_failure(neat_device *dev) {
    enum { N = 5, C = 10 };
    nt_rng r = {5};
    float logits[N * C], labels[N] = {3, 0, 10, 9, 1}; /* 10 is out of range for C = 10 */
    fill_uniform(logits, N * C, &r, -2, 2);
    neat_tensor *lg = matrix(dev, N, C, logits), *lb = NULL, *loss = NULL;
    EXPECT_OK(neat_tensor_create(dev, 1, (int64_t[]){N}, &lb), "create labels");
    EXPECT_OK(neat_tensor_write(lb, labels, N), "write labels");
    EXPECT_OK(neat_tensor_create(dev, 1, (int64_t[]){1}, &loss), "create loss");
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_softmax_cross_entropy(cb, lg, lb, loss), "record cross-entropy");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit with a bad label (reported at wait)");
    neat_status st = neat_cmdbuf_wait(cb);
    EXPECT_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "wait with label 10 of C=10");
    CHECK(strstr(neat_last_error(), "label") != NULL,
          "%s: the async failure's message should name the label: \"%s\"", dev_name,
          neat_last_error());

    labels[2] = 9;
    EXPECT_OK(neat_tensor_write(lb, labels, N), "fix the label");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit after the fix");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait after the fix");
    /* loss = mean over rows of log(sum exp) - logit[label], in float64 */
    double sm[N * C], want = 0, ld[N * C];
    for (int i = 0; i < N * C; i++) ld[i] = logits[i];
    ref_softmax(ld, sm, N, C);
    for (int i = 0; i < N; i++) want -= log(sm[i * C + (int)labels[i]]) / N;
    float *got = read_back(loss, 1);
    CHECK(fabs(got[0] - want) <= 1e-5 * fabs(want) + 1e-6, "%s: loss %.9g, want %.9g", dev_name,
          got[0], want);
    nt_free(got);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(lg), neat_tensor_destroy(lb), neat_tensor_destroy(loss);
}

/* neat_cmdbuf_device_time: refused before a completed submission and after reset; after
 * commit + wait a positive time inside the host's commit..wait interval. */
static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_device_time(neat_device *dev) {
    enum { N = 192 };
    nt_rng r = {11};
    float *a = nt_alloc(N * N);
    fill_uniform(a, N * N, &r, -1, 1);
    neat_tensor *A = matrix(dev, N, N, a), *C = matrix(dev, N, N, a);
    neat_cmdbuf *cb = NULL;
    double t = -1;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_STATUS(neat_cmdbuf_device_time(cb, &t), NEAT_ERR_INVALID_ARGUMENT,
                  "device_time before any commit");
    CHECK(strstr(neat_last_error(), "completed") != NULL && t == -1,
          "%s: device_time before a commit: message \"%s\", seconds %g (want untouched -1)",
          dev_name, neat_last_error(), t);
    EXPECT_STATUS(neat_cmdbuf_device_time(cb, NULL), NEAT_ERR_INVALID_ARGUMENT,
                  "device_time(NULL)");
    for (int i = 0; i < 4; i++)
        EXPECT_OK(neat_matmul(cb, A, A, C, 1.0f, 0.0f, 0, 0), "record matmul");
    for (int round = 0; round < 3; round++) {
        double w0 = wall_s();
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        double wall = wall_s() - w0;
        t = -1;
        EXPECT_OK(neat_cmdbuf_device_time(cb, &t), "device_time after wait");
        /* 1e-5 s: the device's and the host's clocks tick differently */
        CHECK(t > 0 && t <= wall + 1e-5,
              "%s: round %d: device time %.3g s outside (0, %.3g] of commit..wait", dev_name, round,
              t, wall);
    }
    EXPECT_OK(neat_cmdbuf_reset(cb), "reset");
    EXPECT_STATUS(neat_cmdbuf_device_time(cb, &t), NEAT_ERR_INVALID_ARGUMENT,
                  "device_time after reset");
    neat_cmdbuf_destroy(cb);
    EXPECT_STATUS(neat_cmdbuf_device_time(cb, &t), NEAT_ERR_INVALID_HANDLE,
                  "device_time of a destroyed buffer");
    neat_tensor_destroy(A), neat_tensor_destroy(C);
    nt_free(a);
}

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++) {
        dev_name = names[d];
        int before = nt_failed;
        test_replay(devs[d]);
        test_queue_and_reset(devs[d]);
        test_misuse(devs[d]);
        test_view_between_ops(devs[d]);
        test_async_failure(devs[d]);
        test_device_time(devs[d]);
        printf("%-5s cmdbuf: %d failed\n", dev_name, nt_failed - before);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("cmdbuf");
}
