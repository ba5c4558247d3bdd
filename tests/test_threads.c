/*
 * test_threads.c — one device shared by several application threads, on every backend:
 *   own buffers   each thread creates its own tensors and command buffers, records a small
 *                 layer (linear + relu, scale, sum), commits, waits, replays after a reset,
 *                 reads and checks the results, and destroys everything in its own order,
 *                 while the others do the same on the same device;
 *   shared inputs the threads read the same device tensors (as op inputs and through
 *                 neat_tensor_read) into outputs of their own;
 *   own errors    neat_last_error() is per thread: a thread's failed call leaves its own
 *                 message, not the one of another thread's failure.
 * Data are small integers, so every result is exact and compared bit for bit. The harness's
 * counters are not thread-safe: the threads count their own failures and keep the first
 * message; the main thread turns them into assertions. scripts/run_tests.sh also runs this
 * binary under ThreadSanitizer.
 */
#include "harness.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

enum { NTHREADS = 4, ROUNDS = 12 };

typedef struct worker {
    neat_device *dev;
    int id;
    int failures;
    char first[256];                        /* the first failure's message */
    const neat_tensor *shared_a, *shared_w; /* shared-inputs case: [M,K] and [N,K] */
    const float *shared_a_host, *shared_w_host;
} worker;

static void fail(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(worker *w, const char *fmt, ...) {
    if (w->failures++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = snprintf(w->first, sizeof w->first, "thread %d: ", w->id);
        vsnprintf(w->first + n, sizeof w->first - (size_t)n, fmt, ap);
        va_end(ap);
    }
}

/* Run a call; on failure record its status and message. Evaluates to 1 when it succeeded. */
#define OK(w, call) ok_status((w), (call), #call)
static int ok_status(worker *w, neat_status st, const char *what) {
    if (st != NEAT_OK) fail(w, "%s: %s (%s)", what, neat_status_string(st), neat_last_error());
    return st == NEAT_OK;
}

static neat_tensor *tensor(worker *w, int ndim, const int64_t *shape, const float *data,
                           int64_t n) {
    neat_tensor *t = NULL;
    if (!OK(w, neat_tensor_create(w->dev, ndim, shape, &t))) return NULL;
    if (data) OK(w, neat_tensor_write(t, data, n));
    return t;
}

/* Small integers in [-3, 3] from a per-thread sequence. */
static void fill_int(float *v, int64_t n, nt_rng *r) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)nt_randint(r, -3, 3);
}

static void expect_equal(worker *w, const char *what, const float *got, const double *want,
                         int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (got[i] != (float)want[i]) {
            fail(w, "%s[%lld] = %g, want %g", what, (long long)i, got[i], want[i]);
            return;
        }
}

/* ---- own buffers --------------------------------------------------------------------- */

/* y = relu(x w^T + b) [N,M], z = 0.5 y, s = sum(z), all in double (exact here). */
static void reference_layer(const float *x, const float *wt, const float *b, int64_t n, int64_t k,
                            int64_t m, double *y, double *z, double *s) {
    *s = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = b[j];
            for (int64_t p = 0; p < k; p++) acc += (double)x[i * k + p] * wt[j * k + p];
            y[i * m + j] = acc > 0 ? acc : 0;
            z[i * m + j] = 0.5 * y[i * m + j];
            *s += z[i * m + j];
        }
}

static void own_round(worker *w, nt_rng *r, int round) {
    enum { MAXN = 12, MAXK = 24, MAXM = 10 };
    const int64_t n = nt_randint(r, 1, MAXN), k = nt_randint(r, 1, MAXK),
                  m = nt_randint(r, 1, MAXM);
    float xv[MAXN * MAXK], wv[MAXM * MAXK], bv[MAXM], got[MAXN * MAXM];
    double y[MAXN * MAXM], z[MAXN * MAXM], s;
    fill_int(xv, n * k, r);
    fill_int(wv, m * k, r);
    fill_int(bv, m, r);
    neat_tensor *x = tensor(w, 2, (int64_t[]){n, k}, xv, n * k);
    neat_tensor *wt = tensor(w, 2, (int64_t[]){m, k}, wv, m * k);
    neat_tensor *b = tensor(w, 1, (int64_t[]){m}, bv, m);
    neat_tensor *yt = tensor(w, 2, (int64_t[]){n, m}, NULL, 0);
    neat_tensor *zt = tensor(w, 2, (int64_t[]){n, m}, NULL, 0);
    neat_tensor *st = tensor(w, 0, NULL, NULL, 0);
    neat_tensor *zflat = NULL; /* a view of z, destroyed before or after z */
    if (zt) OK(w, neat_tensor_view(zt, 1, (int64_t[]){n * m}, &zflat));
    neat_cmdbuf *cb = NULL;
    if (!OK(w, neat_cmdbuf_create(w->dev, &cb)) || !x || !wt || !b || !yt || !zt || !st || !zflat)
        goto done;
    if (!OK(w, neat_linear_forward(cb, NEAT_ACT_RELU, x, wt, b, yt)) ||
        !OK(w, neat_scale(cb, yt, 0.5f, zt)) || !OK(w, neat_sum_all(cb, zflat, st)))
        goto done;
    /* Two passes: the recorded buffer, then (reset and recorded anew) on new x. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            fill_int(xv, n * k, r);
            if (!OK(w, neat_tensor_write(x, xv, n * k)) || !OK(w, neat_cmdbuf_reset(cb)) ||
                !OK(w, neat_linear_forward(cb, NEAT_ACT_RELU, x, wt, b, yt)) ||
                !OK(w, neat_scale(cb, yt, 0.5f, zt)) || !OK(w, neat_sum_all(cb, zflat, st)))
                goto done;
        }
        if (!OK(w, neat_cmdbuf_commit(cb))) goto done;
        /* Some rounds wait on the buffer, others on the whole device (every thread's work). */
        if (!OK(w, (round + pass) % 3 ? neat_cmdbuf_wait(cb) : neat_device_synchronize(w->dev)))
            goto done;
        reference_layer(xv, wv, bv, n, k, m, y, z, &s);
        if (OK(w, neat_tensor_read(yt, got, n * m))) expect_equal(w, "y", got, y, n * m);
        if (OK(w, neat_tensor_read(zflat, got, n * m))) expect_equal(w, "z", got, z, n * m);
        if (OK(w, neat_tensor_read(st, got, 1))) expect_equal(w, "sum", got, &s, 1);
    }
done:
    /* Destroy in an order that depends on the round: views before and after their base,
     * the buffer before and after its tensors. */
    if (round % 2) neat_cmdbuf_destroy(cb);
    if (round % 3 == 0) {
        neat_tensor_destroy(zt);
        neat_tensor_destroy(zflat);
    } else {
        neat_tensor_destroy(zflat);
        neat_tensor_destroy(zt);
    }
    neat_tensor_destroy(x);
    neat_tensor_destroy(st);
    neat_tensor_destroy(yt);
    neat_tensor_destroy(b);
    neat_tensor_destroy(wt);
    if (round % 2 == 0) neat_cmdbuf_destroy(cb);
}

/* A failed call's message is this thread's: the shape in it is the one this thread gave. */
static void own_error(worker *w) {
    neat_tensor *t = NULL;
    const int64_t bad = -1000 - w->id;
    neat_status st = neat_tensor_create(w->dev, 1, &bad, &t);
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)bad);
    if (st != NEAT_ERR_INVALID_ARGUMENT || !strstr(neat_last_error(), want))
        fail(w, "neat_tensor_create with size %lld: %s \"%s\", want INVALID_ARGUMENT naming it",
             (long long)bad, neat_status_string(st), neat_last_error());
    neat_tensor_destroy(t);
}

static void *own_buffers_main(void *arg) {
    worker *w = arg;
    nt_rng r = {0x7ead0000u + (uint64_t)w->id};
    for (int round = 0; round < ROUNDS; round++) {
        own_round(w, &r, round);
        own_error(w);
    }
    return NULL;
}

/* ---- shared inputs ------------------------------------------------------------------- */

enum { SM = 16, SK = 20, SN = 8 };

static void *shared_inputs_main(void *arg) {
    worker *w = arg;
    float got[SM * SK];
    double want[SM * SK];
    for (int i = 0; i < SM; i++)
        for (int j = 0; j < SN; j++) {
            double acc = 0;
            for (int p = 0; p < SK; p++)
                acc += (double)w->shared_a_host[i * SK + p] * w->shared_w_host[j * SK + p];
            want[i * SN + j] = (w->id + 1) * acc;
        }
    for (int round = 0; round < ROUNDS; round++) {
        neat_tensor *c = tensor(w, 2, (int64_t[]){SM, SN}, NULL, 0);
        neat_cmdbuf *cb = NULL;
        if (c && OK(w, neat_cmdbuf_create(w->dev, &cb)) &&
            OK(w, neat_matmul(cb, w->shared_a, w->shared_w, c, (float)(w->id + 1), 0, 0, 1)) &&
            OK(w, neat_cmdbuf_commit(cb)) && OK(w, neat_cmdbuf_wait(cb)) &&
            OK(w, neat_tensor_read(c, got, SM * SN)))
            expect_equal(w, "c", got, want, SM * SN);
        /* the shared input itself, read while other threads' ops read it */
        if (OK(w, neat_tensor_read(w->shared_a, got, SM * SK)))
            for (int i = 0; i < SM * SK; i++)
                if (got[i] != w->shared_a_host[i]) {
                    fail(w, "shared a[%d] = %g, want %g", i, got[i], w->shared_a_host[i]);
                    break;
                }
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(c);
    }
    return NULL;
}

/* ---- driver -------------------------------------------------------------------------- */

static void run_threads(const char *dev_name, const char *case_name, worker *ws,
                        void *(*fn)(void *)) {
    pthread_t tid[NTHREADS];
    int started[NTHREADS] = {0};
    for (int i = 0; i < NTHREADS; i++) started[i] = pthread_create(&tid[i], NULL, fn, &ws[i]) == 0;
    for (int i = 0; i < NTHREADS; i++) {
        CHECK(started[i], "%s %s: pthread_create %d failed", dev_name, case_name, i);
        if (started[i]) pthread_join(tid[i], NULL);
        CHECK(ws[i].failures == 0, "%s %s: %d failures; first: %s", dev_name, case_name,
              ws[i].failures, ws[i].first);
    }
}

static int64_t in_use(neat_device *dev) {
    neat_memory_stats s = {-1, -1, -1, -1};
    CHECK_OK(neat_device_memory_stats(dev, &s), "neat_device_memory_stats");
    return s.in_use;
}

static void test_device(neat_device *dev, const char *dev_name) {
    const int64_t start = in_use(dev);
    worker ws[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) ws[i] = (worker){.dev = dev, .id = i};
    run_threads(dev_name, "own buffers", ws, own_buffers_main);

    float av[SM * SK], wv[SN * SK];
    nt_rng r = {0x5a4ed};
    fill_int(av, SM * SK, &r);
    fill_int(wv, SN * SK, &r);
    worker setup = {.dev = dev, .id = -1};
    neat_tensor *a = tensor(&setup, 2, (int64_t[]){SM, SK}, av, SM * SK);
    neat_tensor *w = tensor(&setup, 2, (int64_t[]){SN, SK}, wv, SN * SK);
    CHECK(setup.failures == 0, "%s shared inputs setup: %s", dev_name, setup.first);
    if (a && w) {
        for (int i = 0; i < NTHREADS; i++)
            ws[i] = (worker){.dev = dev,
                             .id = i,
                             .shared_a = a,
                             .shared_w = w,
                             .shared_a_host = av,
                             .shared_w_host = wv};
        run_threads(dev_name, "shared inputs", ws, shared_inputs_main);
    }
    neat_tensor_destroy(a);
    neat_tensor_destroy(w);

    const int64_t end = in_use(dev);
    CHECK(end == start,
          "%s: %lld bytes in use after every thread destroyed its tensors, "
          "%lld before",
          dev_name, (long long)end, (long long)start);
}

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int n = nt_open_devices(devs, names);
    for (int i = 0; i < n; i++) {
        test_device(devs[i], names[i]);
        printf("%-5s threads: %d threads x %d rounds, own buffers and shared inputs\n", names[i],
               NTHREADS, ROUNDS);
    }
    nt_close_devices(devs, n);
    return nt_finish("threads");
}
