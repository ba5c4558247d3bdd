/*
 * test_copy_overlap.c — recorded copies from host that the backend may run ahead of their
 * buffer (on CUDA: on a copy stream, overlapping the previous submission), on every
 * backend. Each case computes results that reveal which host data each step saw:
 *   alternating        two buffers with their own inputs, committed one ahead of the wait
 *                      as a training loop does, a shared accumulator; every step checked,
 *                      and one step with a bad label (its outputs untouched, later steps
 *                      right);
 *   recommitted        one buffer committed again and again without a wait, new host data
 *                      each time: each copy must wait for the previous step's late read;
 *   shared_destination two buffers copying into the same tensor, committed alternately
 *                      without a wait: the copies keep the commit order;
 *   used_before        a copy whose destination an earlier op of its buffer writes, or
 *                      reads: it stays in its place;
 *   destroyed          the copy's destination destroyed (and its memory asked for again)
 *                      right after the commit;
 *   copy_run           11 copies to the host in one buffer (CUDA batches up to 8 a kernel);
 *   large              a 64 MiB copy (on a GPU) into an idle device: the first op must
 *                      wait for all of it.
 * NEATML_TEST_ONLY=alternating,large (say) runs only the parts named.
 * Each step has a long op (a run of adds, larger on a GPU) between an early and a late read of
 * the copied tensor, so that a copy run too early lands in the middle of a step. Values are
 * small integers: every sum is exact.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 4096, STEPS = 60 };

static const char *dev_name;
static int64_t delay_n; /* side of the long op's matrices */

static int check_status(neat_status st, neat_status want, const char *what, int line) {
    return nt_check(st == want, __FILE__, line, "%s: %s: got %s, want %s (%s)", dev_name, what,
                    neat_status_string(st), neat_status_string(want), neat_last_error());
}
#define EXPECT_STATUS(st, want, what) check_status((st), (want), (what), __LINE__)
#define EXPECT_OK(st, what) check_status((st), NEAT_OK, (what), __LINE__)

static neat_tensor *vec(neat_device *dev, int64_t n, float value) {
    neat_tensor *t = NULL;
    EXPECT_OK(neat_tensor_create(dev, 1, &n, &t), "neat_tensor_create");
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; v && i < n; i++) v[i] = value;
    if (t && v) EXPECT_OK(neat_tensor_write(t, v, n), "neat_tensor_write");
    free(v);
    return t;
}

/* The host data of step k: small integers, different in every step and element. */
static float data(int k, int i) { return (float)((k * 7 + i * 3) % 29 - 14 + k); }

static void fill_step(float *h, int k) {
    for (int i = 0; i < N; i++) h[i] = data(k, i);
}

/* The long op: LONG_ADDS times c = a + b on delay_n x delay_n matrices (its value is not
 * checked): neatml's own elementwise kernel, 8 passes over 192 MiB on a GPU (beyond its L2),
 * about as long as the 2048^3 strict matmul the long op was until 2026-11-30, whose
 * cuBLAS SIMT kernel drew synccheck's barrier report (inside NVIDIA's kernel) and kept
 * racecheck from finishing in 330 s: the delay is what the test needs, not a vendor kernel. */
enum { LONG_ADDS = 8 };
typedef struct delay {
    neat_tensor *a, *b, *c;
} delay;

static void delay_create(neat_device *dev, delay *d) {
    int64_t s[2] = {delay_n, delay_n};
    neat_tensor **all[3] = {&d->a, &d->b, &d->c};
    for (int i = 0; i < 3; i++) {
        *all[i] = NULL;
        EXPECT_OK(neat_tensor_create(dev, 2, s, all[i]), "neat_tensor_create(delay)");
    }
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_fill(cb, d->a, 0.5f), "fill"), EXPECT_OK(neat_fill(cb, d->b, 0.25f), "fill");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit"), EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    neat_cmdbuf_destroy(cb);
}

static void record_long(neat_cmdbuf *cb, const delay *d) {
    neat_status st = NEAT_OK;
    for (int i = 0; i < LONG_ADDS && st == NEAT_OK; i++) st = neat_add(cb, d->a, d->b, d->c);
    EXPECT_OK(st, "record the long op");
}

static void delay_destroy(delay *d) {
    neat_tensor_destroy(d->a), neat_tensor_destroy(d->b), neat_tensor_destroy(d->c);
}

/* What a step does with x: acc += x; the long op; out = acc + x, read back. So
 * out = (sum of the x seen so far) + x, read late. */
static void record_reads(neat_cmdbuf *cb, neat_tensor *x, neat_tensor *acc, const delay *d,
                         neat_tensor *out, float *dst) {
    EXPECT_OK(neat_add(cb, acc, x, acc), "record acc += x");
    record_long(cb, d);
    EXPECT_OK(neat_add(cb, acc, x, out), "record out = acc + x");
    EXPECT_OK(neat_copy_to_host(cb, out, dst, N), "record copy_to_host");
}

/* A step: x copied from host, then read. */
static void record_step(neat_cmdbuf *cb, const float *src, neat_tensor *x, neat_tensor *acc,
                        const delay *d, neat_tensor *out, float *dst) {
    EXPECT_OK(neat_copy_from_host(cb, src, N, x), "record copy_from_host");
    record_reads(cb, x, acc, d, out, dst);
}

/* Elements of dst that differ from sum + data(k, .), sum[i] the running sum up to step k. */
static int wrong(const float *dst, const double *sum, int k) {
    int bad = 0;
    for (int i = 0; i < N; i++) bad += (double)dst[i] != sum[i] + data(k, i);
    return bad;
}

static void test_alternating(neat_device *dev, const delay *d) {
    neat_tensor *x[2] = {vec(dev, N, 0), vec(dev, N, 0)}, *acc = vec(dev, N, 0);
    neat_tensor *out[2] = {vec(dev, N, 0), vec(dev, N, 0)};
    int64_t ls[2] = {1, 3}, one = 1;
    neat_tensor *logits = NULL, *labels[2] = {vec(dev, 1, 0), vec(dev, 1, 0)}, *loss[2];
    EXPECT_OK(neat_tensor_create(dev, 2, ls, &logits), "create logits");
    EXPECT_OK(neat_tensor_write(logits, (float[]){1, 2, 3}, 3), "write logits");
    for (int b = 0; b < 2; b++) {
        loss[b] = NULL;
        EXPECT_OK(neat_tensor_create(dev, 1, &one, &loss[b]), "create loss");
    }
    static float src[2][N], dst[2][N];
    float label[2] = {0, 0};
    neat_cmdbuf *cb[2] = {NULL, NULL};
    for (int b = 0; b < 2; b++) {
        EXPECT_OK(neat_cmdbuf_create(dev, &cb[b]), "cmdbuf");
        /* The copies come first, as a training step's; the loss can fail, and then the
         * rest of the step is skipped (its accumulation and its copy to host). */
        EXPECT_OK(neat_copy_from_host(cb[b], &label[b], 1, labels[b]), "record labels copy");
        EXPECT_OK(neat_copy_from_host(cb[b], src[b], N, x[b]), "record copy_from_host");
        EXPECT_OK(neat_softmax_cross_entropy(cb[b], logits, labels[b], loss[b]), "record loss");
        record_reads(cb[b], x[b], acc, d, out[b], dst[b]);
    }
    enum { BAD = 21 };
    double sum[N] = {0};
    int failures = 0;
    for (int k = -1; k < STEPS; k++) {
        int next = k + 1;
        if (next < STEPS) {
            fill_step(src[next & 1], next);
            label[next & 1] = next == BAD ? 9 : (float)(next % 3);
            for (int i = 0; i < N; i++) dst[next & 1][i] = NAN;
            EXPECT_OK(neat_cmdbuf_commit(cb[next & 1]), "commit");
            /* The host data of the next commit of this buffer, written at once: the
             * submission must not see it. */
            for (int i = 0; i < N; i++) src[next & 1][i] = 1e6f;
            label[next & 1] = 1;
        }
        if (k < 0) continue;
        neat_status st = neat_cmdbuf_wait(cb[k & 1]);
        if (k == BAD) {
            EXPECT_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "wait of the step with a bad label");
            int untouched = 0;
            for (int i = 0; i < N; i++) untouched += isnan(dst[k & 1][i]);
            CHECK(untouched == N, "%s: step %d failed, yet its copy to host wrote %d of %d",
                  dev_name, k, N - untouched, N);
            continue;
        }
        EXPECT_OK(st, "wait");
        for (int i = 0; i < N; i++) sum[i] += data(k, i);
        int bad = wrong(dst[k & 1], sum, k);
        failures += bad != 0;
        if (bad)
            CHECK(0, "%s: alternating step %d: %d of %d elements wrong (dst[0] %g, want %g)",
                  dev_name, k, bad, N, (double)dst[k & 1][0], sum[0] + data(k, 0));
    }
    CHECK(failures == 0, "%s: alternating: %d of %d steps wrong", dev_name, failures, STEPS);
    static float got[N];
    EXPECT_OK(neat_tensor_read(acc, got, N), "read acc");
    int bad = 0;
    for (int i = 0; i < N; i++) bad += (double)got[i] != sum[i];
    CHECK(bad == 0, "%s: alternating: the accumulator is wrong in %d of %d", dev_name, bad, N);
    for (int b = 0; b < 2; b++) {
        neat_cmdbuf_destroy(cb[b]);
        neat_tensor_destroy(x[b]), neat_tensor_destroy(out[b]);
        neat_tensor_destroy(labels[b]), neat_tensor_destroy(loss[b]);
    }
    neat_tensor_destroy(acc), neat_tensor_destroy(logits);
}

/* Buffers cb[0..nb) share x, acc and out; step k goes to cb[k % nb], committed with no
 * wait in between. out's copy holds the last step's value; acc the sum of every step. */
static void run_queued(neat_device *dev, const delay *d, int nb, const char *what) {
    neat_tensor *x = vec(dev, N, 0), *acc = vec(dev, N, 0), *out = vec(dev, N, 0);
    static float src[N], dst[N];
    neat_cmdbuf *cb[2] = {NULL, NULL};
    for (int b = 0; b < nb; b++) {
        EXPECT_OK(neat_cmdbuf_create(dev, &cb[b]), "cmdbuf");
        record_step(cb[b], src, x, acc, d, out, dst);
    }
    double sum[N] = {0};
    for (int k = 0; k < STEPS; k++) {
        fill_step(src, k);
        EXPECT_OK(neat_cmdbuf_commit(cb[k % nb]), "commit");
        for (int i = 0; i < N; i++) sum[i] += data(k, i);
    }
    for (int b = 0; b < nb; b++) EXPECT_OK(neat_cmdbuf_wait(cb[b]), "wait");
    int bad = wrong(dst, sum, STEPS - 1);
    CHECK(bad == 0, "%s: %s: the last step's result wrong in %d of %d (got %g, want %g)", dev_name,
          what, bad, N, (double)dst[0], sum[0] + data(STEPS - 1, 0));
    static float got[N];
    EXPECT_OK(neat_tensor_read(acc, got, N), "read acc");
    bad = 0;
    for (int i = 0; i < N; i++) bad += (double)got[i] != sum[i];
    CHECK(bad == 0, "%s: %s: the accumulator is wrong in %d of %d (got %g, want %g)", dev_name,
          what, bad, N, (double)got[0], sum[0]);
    for (int b = 0; b < nb; b++) neat_cmdbuf_destroy(cb[b]);
    neat_tensor_destroy(x), neat_tensor_destroy(acc), neat_tensor_destroy(out);
}

static void test_recommitted(neat_device *dev, const delay *d) {
    run_queued(dev, d, 1, "one buffer recommitted");
}

static void test_shared_destination(neat_device *dev, const delay *d) {
    run_queued(dev, d, 2, "two buffers, one destination");
}

/* ops: y = x + x, reading the x of the previous commit (or, when `written`, x filled with
 * 5 first), the long op, the copy from host into x, z = x + y; y and z to the host. */
static void test_used_before(neat_device *dev, const delay *d) {
    for (int written = 0; written < 2; written++) {
        neat_tensor *x = vec(dev, N, 1), *y = vec(dev, N, 0), *z = vec(dev, N, 0);
        static float src[N], ydst[N], zdst[N];
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
        if (written) EXPECT_OK(neat_fill(cb, x, 5), "record fill x");
        EXPECT_OK(neat_add(cb, x, x, y), "record y = x + x");
        record_long(cb, d);
        EXPECT_OK(neat_copy_from_host(cb, src, N, x), "record copy_from_host");
        EXPECT_OK(neat_add(cb, x, y, z), "record z = x + y");
        EXPECT_OK(neat_copy_to_host(cb, y, ydst, N), "record y copy");
        EXPECT_OK(neat_copy_to_host(cb, z, zdst, N), "record z copy");
        int bad = 0;
        for (int k = 0; k < 8; k++) {
            fill_step(src, k);
            EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
            if (k % 2 == 0) continue; /* two submissions in flight at a time */
            EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
            for (int i = 0; i < N; i++) {
                /* x at y's op: 5, or the previous commit's data (k is odd) */
                double xin = written ? 5 : data(k - 1, i);
                bad += (double)ydst[i] != 2 * xin;
                bad += (double)zdst[i] != data(k, i) + 2 * xin;
            }
        }
        CHECK(bad == 0, "%s: a copy into memory an earlier op %s: %d wrong", dev_name,
              written ? "writes" : "reads", bad);
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(x), neat_tensor_destroy(y), neat_tensor_destroy(z);
    }
}

/* The destination destroyed right after the commit and its memory handed out again. */
static void test_destroyed(neat_device *dev, const delay *d) {
    neat_tensor *x = vec(dev, N, 0), *acc = vec(dev, N, 0), *out = vec(dev, N, 0), *more[4];
    static float src[N], dst[N];
    neat_cmdbuf *busy = NULL, *cb = NULL;
    /* Work queued ahead, so that the copy is still to run when x is destroyed. */
    EXPECT_OK(neat_cmdbuf_create(dev, &busy), "cmdbuf");
    for (int i = 0; i < 4; i++) record_long(busy, d);
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    record_step(cb, src, x, acc, d, out, dst);
    fill_step(src, 3);
    EXPECT_OK(neat_cmdbuf_commit(busy), "commit the long ops");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    neat_tensor_destroy(x);
    for (int i = 0; i < 4; i++) more[i] = vec(dev, N, 1e6f);
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    double sum[N];
    for (int i = 0; i < N; i++) sum[i] = data(3, i);
    int bad = wrong(dst, sum, 3);
    CHECK(bad == 0, "%s: the copy's destination destroyed in flight: %d of %d wrong", dev_name, bad,
          N);
    EXPECT_STATUS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "commit after the destroy");
    EXPECT_OK(neat_cmdbuf_wait(busy), "wait the long ops");
    neat_cmdbuf_destroy(cb), neat_cmdbuf_destroy(busy);
    for (int i = 0; i < 4; i++) neat_tensor_destroy(more[i]);
    neat_tensor_destroy(acc), neat_tensor_destroy(out);
}

/* y = x + x right after a copy that takes a while (64 MiB on a GPU), the device idle. */
static void test_large(neat_device *dev, int64_t n) {
    neat_tensor *x = vec(dev, n, 0), *y = vec(dev, n, 0);
    float *src = malloc(sizeof(float) * (size_t)n), *dst = malloc(sizeof(float) * (size_t)n);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_copy_from_host(cb, src, n, x), "record copy_from_host");
    EXPECT_OK(neat_add(cb, x, x, y), "record y = x + x");
    EXPECT_OK(neat_copy_to_host(cb, y, dst, n), "record copy_to_host");
    for (int k = 0; k < 3 && src && dst; k++) {
        for (int64_t i = 0; i < n; i++) src[i] = data(k, (int)(i % 100003));
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += dst[i] != 2 * src[i];
        CHECK(bad == 0, "%s: large copy, round %d: %lld of %lld wrong", dev_name, k, (long long)bad,
              (long long)n);
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
    free(src), free(dst);
}

/* A run of 11 copies to the host, one of them empty (CUDA puts up to 8 in one kernel, and
 * the ninth on starts the next): every destination gets its own tensor, at every commit. */
static void test_copy_run(neat_device *dev) {
    enum { K = 11 };
    neat_tensor *t[K];
    float *dst[K];
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    for (int k = 0; k < K; k++) {
        int64_t n = k == 3 ? 0 : 1 + 37 * k;
        t[k] = vec(dev, n, 0);
        dst[k] = calloc((size_t)n + 1, sizeof(float));
        EXPECT_OK(neat_fill(cb, t[k], (float)(k + 1)), "record fill");
    }
    for (int k = 0; k < K; k++)
        EXPECT_OK(neat_copy_to_host(cb, t[k], dst[k], k == 3 ? 0 : 1 + 37 * k), "record copy");
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < K; k++)
            if (dst[k]) dst[k][0] = -1.0f;
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        for (int k = 0; k < K; k++) {
            int64_t n = k == 3 ? 0 : 1 + 37 * k, bad = 0;
            for (int64_t i = 0; dst[k] && i < n; i++) bad += dst[k][i] != (float)(k + 1);
            CHECK(dst[k] && bad == 0 && (n > 0 || dst[k][0] == -1.0f),
                  "%s: copy %d of a run, round %d: %lld of %lld wrong", dev_name, k, round,
                  (long long)bad, (long long)n);
        }
    }
    neat_cmdbuf_destroy(cb);
    for (int k = 0; k < K; k++) neat_tensor_destroy(t[k]), free(dst[k]);
}

/* NEATML_TEST_ONLY=name[,name...]: only those parts (to narrow down a tool's failure). */
static int wanted(const char *name) { return nt_env_lists("NEATML_TEST_ONLY", name); }

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int n = nt_open_devices(devs, names);
    if (getenv("NEATML_TEST_ONLY") && *getenv("NEATML_TEST_ONLY"))
        printf("copy_overlap: only the parts %s (NEATML_TEST_ONLY)\n", getenv("NEATML_TEST_ONLY"));
    for (int i = 0; i < n; i++) {
        dev_name = names[i];
        /* the long op's matrices: 3 x 64 MiB on a GPU (beyond the H200's L2); small on a CPU */
        delay_n = strcmp(dev_name, "cpu") == 0 ? 64 : 4096;
        int before = nt_failed;
        delay d;
        delay_create(devs[i], &d);
        if (wanted("alternating")) test_alternating(devs[i], &d);
        if (wanted("recommitted")) test_recommitted(devs[i], &d);
        if (wanted("shared_destination")) test_shared_destination(devs[i], &d);
        if (wanted("used_before")) test_used_before(devs[i], &d);
        if (wanted("destroyed")) test_destroyed(devs[i], &d);
        if (wanted("copy_run")) test_copy_run(devs[i]);
        if (wanted("large")) test_large(devs[i], strcmp(dev_name, "cpu") == 0 ? 1 << 16 : 1 << 24);
        delay_destroy(&d);
        printf("%-5s copy_overlap: %d failed\n", dev_name, nt_failed - before);
    }
    nt_close_devices(devs, n);
    return nt_finish("copy_overlap");
}
