/*
 * test_reliability.c — the defects of the reliability issue, one test each, on every
 * backend that opens (each failed before its fix):
 *   destroy_while_running   a tensor destroyed (and its memory asked for again) while a
 *                           committed buffer still uses it: the buffer's result is intact;
 *   destroy_commit_race     one thread destroys what another commits: never a crash, every
 *                           status is OK or INVALID_HANDLE (ASan/TSan runs watch the rest);
 *   zero_size_overflow      a zero-size tensor whose other sizes multiply past 2^63 (UBSan);
 *   pool_pad_overflow       a pooling padding near INT64_MAX in the error message (UBSan);
 *   pool_huge_window        valid poolings with a stride near INT64_MAX (UBSan: an overflow
 *                           in the CPU's column range) and a window of 2^62 + 1 (the CPU
 *                           walked every window column: no end), NCHW and NHWC, forward and
 *                           backward, exact;
 *   synchronize_reports     neat_device_synchronize reports a failure wait has not;
 *   failure_stops_buffer    an op failing at run time stops the rest of its submission, its
 *                           outputs and the later ones untouched; the buffer replays after;
 *   label_past_2p24         the cross-entropy takes label 2^25 of 2^25 + 1 classes (the count
 *                           compared as a float refused it);
 *   hyper_checked           SGD/Adam with a NaN rate or step 0 fail, parameters untouched;
 *   memory_limit            OUT_OF_MEMORY past neat_device_set_memory_limit, at creation and
 *                           at run time with the op's name;
 *   oom_message             OUT_OF_MEMORY from the backend's allocator (more than the device
 *                           has) names the call and the bytes, not an earlier call's message;
 *   empty_spatial           conv and pool on H = 0 succeed with an empty output;
 *   concurrent_recording    two threads recording into one buffer lose no op;
 *   destroy_queued          a buffer committed twice, then destroyed: both submissions
 *                           complete and the buffer is freed once, after the last (ASan);
 *   recorded_copies         neat_copy_from_host reads src at commit (refilled right after
 *                           for the next step), neat_copy_to_host writes dst by wait, and
 *                           not when an earlier op failed;
 *   debug_pool_canary       NEATML_DEBUG_POOL=1 (the ASan run; skipped otherwise): a float
 *                           written past a tensor's end is INTERNAL at the next wait, and at
 *                           the next synchronize when the tensor was destroyed first;
 *   replay_after_failure    a buffer committed again while its failed run is still in
 *                           flight: the second run is its own (it runs and succeeds), the
 *                           failure is the first run's;
 *   backend_limits          a size a backend cannot take is refused when recorded (CUDA:
 *                           a stride or dilation past cuDNN's int; CPU: a padded input
 *                           past oneDNN's int, while a stride or dilation that cannot
 *                           matter runs), and zero-size ops with sizes past every limit
 *                           record and run;
 *   current_device_kept     CUDA with two GPUs: every call leaves the calling thread's
 *                           current device as it found it.
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "harness.h"

#include "../src/backends/lru.h" /* NM_LRU_CAPACITY: the plan caches' size */
#include "../src/core/testing.h" /* nm_testing_tensor_memory: a faulty kernel's writes */

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const char *dev_name;

static int check_status(neat_status st, neat_status want, const char *what, int line) {
    return nt_check(st == want, __FILE__, line, "%s: %s: got %s, want %s (%s)", dev_name, what,
                    neat_status_string(st), neat_status_string(want), neat_last_error());
}
#define EXPECT_STATUS(st, want, what) check_status((st), (want), (what), __LINE__)
#define EXPECT_OK(st, what) check_status((st), NEAT_OK, (what), __LINE__)
#define EXPECT_MSG(sub, what)                                                                      \
    CHECK(strstr(neat_last_error(), (sub)) != NULL, "%s: %s: message \"%s\" lacks \"%s\"",         \
          dev_name, (what), neat_last_error(), (sub))

static neat_tensor *tensor(neat_device *dev, int ndim, const int64_t *shape, const float *v) {
    neat_tensor *t = NULL;
    EXPECT_OK(neat_tensor_create(dev, ndim, shape, &t), "neat_tensor_create");
    /* The count from the tensor, not the product of shape: an empty tensor's other sizes
     * may multiply past 2^63 (test_zero_size_overflow's). */
    int64_t n = 0;
    if (t && v) neat_tensor_numel(t, &n);
    if (t && v) EXPECT_OK(neat_tensor_write(t, v, n), "neat_tensor_write");
    return t;
}

/* c = a b for N x N integer matrices, committed; a and b destroyed at once and new tensors
 * of the same size written with garbage while it runs: c must still be exact. */
static void test_destroy_while_running(neat_device *dev) {
    enum { N = 384 };
    float *av = malloc(sizeof(float) * N * N), *bv = malloc(sizeof(float) * N * N);
    float *cv = malloc(sizeof(float) * N * N), *junk = malloc(sizeof(float) * N * N);
    for (int i = 0; i < N * N; i++) av[i] = (float)(i % 7 - 3), bv[i] = (float)(i % 5 - 2);
    for (int i = 0; i < N * N; i++) junk[i] = 1e30f;
    int64_t shape[2] = {N, N};
    neat_tensor *a = tensor(dev, 2, shape, av), *b = tensor(dev, 2, shape, bv);
    neat_tensor *c = tensor(dev, 2, shape, NULL), *more[4] = {0};
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_matmul(cb, a, b, c, 1, 0, 0, 0), "neat_matmul");
    EXPECT_OK(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit");
    neat_tensor_destroy(a);
    neat_tensor_destroy(b);
    for (int i = 0; i < 4; i++) more[i] = tensor(dev, 2, shape, junk);
    EXPECT_OK(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait");
    EXPECT_OK(neat_tensor_read(c, cv, N * N), "neat_tensor_read");
    int64_t bad = -1;
    for (int i = 0; i < N && bad < 0; i++)
        for (int j = 0; j < N && bad < 0; j++) {
            double s = 0;
            for (int k = 0; k < N; k++) s += (double)av[i * N + k] * bv[k * N + j];
            if ((double)cv[i * N + j] != s) bad = (int64_t)i * N + j;
        }
    CHECK(bad < 0, "%s: c[%lld] wrong after its inputs were destroyed mid-run", dev_name,
          (long long)bad);
    /* The buffer's tensors are gone: committing again is refused, nothing runs. */
    EXPECT_STATUS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "commit after destroy");
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(c);
    for (int i = 0; i < 4; i++) neat_tensor_destroy(more[i]);
    free(av), free(bv), free(cv), free(junk);
}

typedef struct race_arg {
    neat_tensor *t;
    atomic_int ready, go; /* the destroying thread is running; the committing one lets it go */
} race_arg;

static void *destroy_later(void *p) {
    race_arg *r = p;
    atomic_store(&r->ready, 1);
    while (!atomic_load(&r->go)) {
    }
    neat_tensor_destroy(r->t);
    return NULL;
}

static void test_destroy_commit_race(neat_device *dev) {
    enum { ROUNDS = 200, N = 4096 };
    int64_t shape[1] = {N};
    float *v = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) v[i] = (float)i;
    int bad_status = 0, ran = 0;
    for (int round = 0; round < ROUNDS; round++) {
        neat_tensor *x = tensor(dev, 1, shape, v), *y = tensor(dev, 1, shape, NULL);
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
        EXPECT_OK(neat_add(cb, x, x, y), "neat_add");
        race_arg r = {x, 0, 0};
        pthread_t th;
        pthread_create(&th, NULL, destroy_later, &r);
        /* The commit after a delay that grows with the round, from none (the two calls at
         * once) to well after the destroy, so that both orders and the overlap occur. */
        while (!atomic_load(&r.ready)) {
        }
        atomic_store(&r.go, 1);
        for (volatile int k = 0; k < (round % 40) * 500; k++) {
        }
        neat_status st = neat_cmdbuf_commit(cb);
        if (st != NEAT_OK && st != NEAT_ERR_INVALID_HANDLE) bad_status++;
        if (st == NEAT_OK) {
            ran++;
            if (neat_cmdbuf_wait(cb) != NEAT_OK) bad_status++;
            if (neat_tensor_read(y, v, N) == NEAT_OK)
                for (int i = 0; i < N; i++)
                    if (v[i] != (float)(2 * i)) bad_status++, i = N;
            for (int i = 0; i < N; i++) v[i] = (float)i;
        }
        pthread_join(th, NULL);
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(y);
    }
    CHECK(bad_status == 0, "%s: %d rounds with a wrong status or result", dev_name, bad_status);
    printf("%s: destroy/commit race: %d of %d commits ran before the destroy\n", dev_name, ran,
           ROUNDS);
    free(v);
}

/* [2^40, 2^40, 0]: zero elements, yet its leading sizes multiply past 2^63. */
static void test_zero_size_overflow(neat_device *dev) {
    int64_t shape[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 0}, yshape[2] = {(int64_t)1 << 40, 0};
    neat_tensor *x = tensor(dev, 3, shape, NULL), *y = tensor(dev, 2, yshape, NULL);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_softmax(cb, x, x), "softmax of an empty [2^40,2^40,0]");
    EXPECT_OK(neat_sum_axis(cb, x, 0, y), "sum_axis of an empty [2^40,2^40,0]");
    EXPECT_OK(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait");
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x);
    neat_tensor_destroy(y);
}

static void test_pool_pad_overflow(neat_device *dev) {
    int64_t shape[4] = {1, 1, 5, 5};
    neat_tensor *x = tensor(dev, 4, shape, NULL), *y = tensor(dev, 4, shape, NULL);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    neat_pool2d_desc d = neat_pool2d_desc_full(INT64_MAX, 2, 1, 1, INT64_MAX / 2, 0);
    EXPECT_STATUS(neat_maxpool2d(cb, &d, x, y), NEAT_ERR_SHAPE_MISMATCH, "pad near INT64_MAX");
    EXPECT_MSG("smaller than the kernel", "pad near INT64_MAX");
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x);
    neat_tensor_destroy(y);
}

/* x [1,2,2,3] (NCHW) of distinct values, pooled by windows that each cover a whole plane:
 * a kernel of the plane's size with a stride near INT64_MAX (one output), and a kernel of
 * 2^62 + 1 padded by 2^61 (an output per input position, each the plane's maximum). y is
 * the plane's maximum; dx holds the sum of dy at its first position, 0 elsewhere. */
static void test_pool_huge_window(neat_device *dev) {
    const int64_t K = ((int64_t)1 << 62) + 1, PAD = (int64_t)1 << 61;
    const float xv[12] = {3, 9, -1, 9, 2, 0, /* plane 0: max 9 at 1 */ -5, -7, -6, -8, -4, -9};
    for (int nhwc = 0; nhwc < 2; nhwc++)
        for (int huge_kernel = 0; huge_kernel < 2; huge_kernel++) {
            neat_pool2d_desc d = huge_kernel
                                     ? neat_pool2d_desc_full(K, K, 1, 1, PAD, PAD)
                                     : neat_pool2d_desc_full(3, 4, INT64_MAX, INT64_MAX - 1, 1, 1);
            d.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
            int64_t ph = huge_kernel ? 2 : 1, pw = huge_kernel ? 3 : 1; /* output plane */
            int64_t xs[4] = {1, 2, 2, 3}, ys[4] = {1, 2, ph, pw};
            float x_in[12], dx_want[12] = {0}, y_want[12];
            int64_t out = ph * pw; /* outputs per channel */
            for (int c = 0; c < 2; c++)
                for (int e = 0; e < 6; e++) /* NHWC: element e of channel c at e * 2 + c */
                    x_in[nhwc ? e * 2 + c : c * 6 + e] = xv[c * 6 + e];
            for (int c = 0; c < 2; c++) {
                int at = c ? 4 : 1; /* the first maximum of the plane */
                dx_want[nhwc ? at * 2 + c : c * 6 + at] = (float)out;
                for (int64_t e = 0; e < out; e++)
                    y_want[nhwc ? e * 2 + c : c * out + e] = c ? -4 : 9;
            }
            if (nhwc) xs[1] = 2, xs[2] = 3, xs[3] = 2, ys[1] = ph, ys[2] = pw, ys[3] = 2;
            float ones[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, y_got[12], dx_got[12];
            neat_tensor *x = tensor(dev, 4, xs, x_in), *y = tensor(dev, 4, ys, NULL);
            neat_tensor *dy = tensor(dev, 4, ys, ones), *dx = tensor(dev, 4, xs, NULL);
            neat_cmdbuf *cb = NULL;
            char what[96];
            snprintf(what, sizeof what, "%s pooling, %s", nhwc ? "NHWC" : "NCHW",
                     huge_kernel ? "kernel 2^62 + 1, pad 2^61" : "stride near INT64_MAX");
            EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
            EXPECT_OK(neat_maxpool2d(cb, &d, x, y), what);
            EXPECT_OK(neat_maxpool2d_backward(cb, &d, x, dy, dx), what);
            EXPECT_OK(neat_cmdbuf_commit(cb), what);
            EXPECT_OK(neat_cmdbuf_wait(cb), what);
            EXPECT_OK(neat_tensor_read(y, y_got, 2 * out), "read y");
            EXPECT_OK(neat_tensor_read(dx, dx_got, 12), "read dx");
            CHECK(!memcmp(y_got, y_want, (size_t)(2 * out) * sizeof(float)), "%s: %s: y[0] = %g",
                  dev_name, what, (double)y_got[0]);
            CHECK(!memcmp(dx_got, dx_want, sizeof dx_want), "%s: %s: dx wrong (dx[1] = %g)",
                  dev_name, what, (double)dx_got[1]);
            neat_cmdbuf_destroy(cb);
            neat_tensor_destroy(x), neat_tensor_destroy(y);
            neat_tensor_destroy(dy), neat_tensor_destroy(dx);
        }
}

/* logits [2,3], labels {0, 7}: label 7 is out of range. */
static neat_cmdbuf *bad_label_buffer(neat_device *dev, neat_tensor **keep) {
    int64_t ls[2] = {2, 3}, ns[1] = {2}, one[1] = {1};
    float lv[6] = {1, 2, 3, 4, 5, 6}, labv[2] = {0, 7};
    keep[0] = tensor(dev, 2, ls, lv);
    keep[1] = tensor(dev, 1, ns, labv);
    keep[2] = tensor(dev, 1, one, (float[]){42});
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_softmax_cross_entropy(cb, keep[0], keep[1], keep[2]), "record xent");
    return cb;
}

static void test_synchronize_reports(neat_device *dev) {
    neat_tensor *t[3];
    neat_cmdbuf *cb = bad_label_buffer(dev, t);
    EXPECT_OK(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit");
    EXPECT_STATUS(neat_device_synchronize(dev), NEAT_ERR_INVALID_ARGUMENT, "synchronize");
    EXPECT_MSG("neat_softmax_cross_entropy (op 0 of 1", "synchronize");
    EXPECT_MSG("labels[1] = 7", "synchronize");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait after synchronize reported the failure");
    EXPECT_OK(neat_device_synchronize(dev), "second synchronize");
    neat_cmdbuf_destroy(cb);
    for (int i = 0; i < 3; i++) neat_tensor_destroy(t[i]);
}

static float read1(const neat_tensor *t) {
    float v = NAN;
    EXPECT_OK(neat_tensor_read(t, &v, 1), "neat_tensor_read");
    return v;
}

static void test_failure_stops_buffer(neat_device *dev) {
    neat_tensor *t[3];
    neat_cmdbuf *cb = bad_label_buffer(dev, t);
    int64_t ps[1] = {4}, hs[1] = {2};
    float pv[4] = {1, 2, 3, 4}, gv[4] = {1, 1, 1, 1}, got[4];
    neat_tensor *param = tensor(dev, 1, ps, pv), *grad = tensor(dev, 1, ps, gv);
    neat_tensor *hyper = tensor(dev, 1, hs, (float[]){0.5f, 1});
    neat_sgd_params sp = {0};
    /* ops: 0 fill (runs), 1 xent (fails), 2 sgd and 3 fill (must not run) */
    EXPECT_OK(neat_cmdbuf_reset(cb), "reset");
    EXPECT_OK(neat_fill(cb, grad, 2), "record fill grad");
    EXPECT_OK(neat_softmax_cross_entropy(cb, t[0], t[1], t[2]), "record xent");
    EXPECT_OK(neat_sgd_update(cb, &sp, hyper, param, grad, NULL), "record sgd");
    EXPECT_OK(neat_fill(cb, t[0], 0), "record fill after");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_STATUS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_ARGUMENT, "wait");
    EXPECT_MSG("neat_softmax_cross_entropy (op 1 of 4 in the command buffer): labels[1] = 7",
               "wait");
    EXPECT_OK(neat_tensor_read(param, got, 4), "read param");
    CHECK(!memcmp(got, pv, sizeof got), "%s: param changed by an op after the failure", dev_name);
    CHECK(read1(t[2]) == 42, "%s: the failing op wrote its output", dev_name);
    EXPECT_OK(neat_tensor_read(grad, got, 4), "read grad");
    CHECK(got[0] == 2, "%s: the op before the failure did not run", dev_name);
    float lv[6];
    EXPECT_OK(neat_tensor_read(t[0], lv, 6), "read logits");
    CHECK(lv[5] == 6, "%s: the last op ran after the failure", dev_name);
    /* After the failure the buffer stays committed and replays once the label is fixed. */
    EXPECT_OK(neat_tensor_write(t[1], (float[]){0, 2}, 2), "fix labels");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit again");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait again");
    EXPECT_OK(neat_tensor_read(param, got, 4), "read param");
    CHECK(got[0] == 0 && got[3] == 3, "%s: replay after a failure: param %g %g", dev_name,
          (double)got[0], (double)got[3]);
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {t[0], t[1], t[2], param, grad, hyper};
    for (int i = 0; i < 6; i++) neat_tensor_destroy(all[i]);
}

/* A label past 2^24 with more classes than that: compared with the class count as a float,
 * the count 2^25 + 1 rounded to 2^25 and refused the valid label 2^25. Zero logits: the loss
 * is log(C). */
static void test_label_past_2p24(neat_device *dev) {
    int64_t cols = ((int64_t)1 << 25) + 1, sx[2] = {1, cols}, sl[1] = {1}, s1[1] = {1};
    neat_tensor *x = tensor(dev, 2, sx, NULL), *l = tensor(dev, 1, sl, (float[]){33554432.0f});
    neat_tensor *loss = tensor(dev, 1, s1, (float[]){-1});
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_fill(cb, x, 0), "record fill");
    EXPECT_OK(neat_softmax_cross_entropy(cb, x, l, loss), "record xent");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait: label 2^25 of 2^25 + 1 classes");
    double want = log((double)cols), got = read1(loss);
    CHECK(fabs(got - want) <= 1e-5 * want, "%s: label 2^25: loss %.8g, want %.8g", dev_name, got,
          want);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(l), neat_tensor_destroy(loss);
}

static void test_hyper_checked(neat_device *dev) {
    int64_t ps[1] = {3}, hs[1] = {2};
    float pv[3] = {1, 2, 3}, got[3];
    neat_tensor *param = tensor(dev, 1, ps, pv), *grad = tensor(dev, 1, ps, pv);
    neat_tensor *m = NULL, *v = NULL;
    EXPECT_OK(neat_tensor_create_zeros(dev, 1, ps, &m), "zeros m");
    EXPECT_OK(neat_tensor_create_zeros(dev, 1, ps, &v), "zeros v");
    neat_tensor *hyper = tensor(dev, 1, hs, (float[]){NAN, 1});
    neat_tensor *scaler = tensor(dev, 1, (int64_t[]){3}, (float[]){1, 0, 0}), *copy = NULL;
    EXPECT_OK(neat_tensor_create_typed(dev, NEAT_BF16, 1, ps, 1, &copy), "zeros bf16 copy");
    neat_sgd_params sp = {0};
    neat_adam_params ap = {0.9f, 0.999f, 1e-8f, 0};
    static const struct {
        float lr, t;
        int adam; /* 0 SGD, 1 Adam, 2 and 3 their mixed forms (a scaler, a bf16 copy) */
        const char *msg;
    } rows[] = {
        {NAN, 1, 0, "hyper[0] (the learning rate) is nan"},
        {-1, 1, 0, "hyper[0] (the learning rate) is -1"},
        {INFINITY, 1, 1, "hyper[0] (the learning rate) is inf"},
        {0.1f, 0, 1, "hyper[1] (the step) is 0"},
        {0.1f, NAN, 1, "hyper[1] (the step) is nan"},
        {-2, 1, 2, "hyper[0] (the learning rate) is -2"},
        {0.1f, -1, 3, "hyper[1] (the step) is -1"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_tensor_write(hyper, (float[]){rows[i].lr, rows[i].t}, 2), "write hyper");
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
        neat_status st;
        switch (rows[i].adam) {
        case 0: st = neat_sgd_update(cb, &sp, hyper, param, grad, NULL); break;
        case 1: st = neat_adam_update(cb, &ap, hyper, param, grad, m, v); break;
        case 2: st = neat_sgd_update_mixed(cb, &sp, hyper, scaler, param, grad, NULL, copy); break;
        default:
            st = neat_adam_update_mixed(cb, &ap, hyper, scaler, param, grad, m, v, copy);
            break;
        }
        EXPECT_OK(st, "record update");
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_STATUS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_ARGUMENT, rows[i].msg);
        EXPECT_MSG(rows[i].msg, rows[i].msg);
        EXPECT_OK(neat_tensor_read(param, got, 3), "read param");
        CHECK(!memcmp(got, pv, sizeof got), "%s: %s: param changed", dev_name, rows[i].msg);
        EXPECT_OK(neat_tensor_read(copy, got, 3), "read the bf16 copy");
        CHECK(got[0] == 0 && got[1] == 0 && got[2] == 0, "%s: %s: the bf16 copy changed", dev_name,
              rows[i].msg);
        neat_cmdbuf_destroy(cb);
    }
    neat_tensor *all[] = {param, grad, m, v, hyper, scaler, copy};
    for (int i = 0; i < 7; i++) neat_tensor_destroy(all[i]);
}

static void test_memory_limit(neat_device *dev) {
    const int64_t MiB = 1 << 20;
    neat_memory_stats s;
    EXPECT_OK(neat_device_trim(dev), "trim");
    EXPECT_OK(neat_device_memory_stats(dev, &s), "stats");
    CHECK(s.limit > 0, "%s: default limit %lld", dev_name, (long long)s.limit);
    EXPECT_OK(neat_device_set_memory_limit(dev, s.reserved + 64 * MiB), "set limit");
    EXPECT_STATUS(neat_device_set_memory_limit(dev, -1), NEAT_ERR_INVALID_ARGUMENT, "limit -1");
    int64_t big[1] = {40 * MiB / 4};
    neat_tensor *a = NULL, *b = NULL;
    EXPECT_OK(neat_tensor_create(dev, 1, big, &a), "first 40 MiB");
    EXPECT_STATUS(neat_tensor_create(dev, 1, big, &b), NEAT_ERR_OUT_OF_MEMORY, "second 40 MiB");
    EXPECT_MSG("limit", "second 40 MiB");
    CHECK(b == NULL, "%s: out written on failure", dev_name);
    neat_tensor_destroy(a);
    EXPECT_OK(neat_tensor_create(dev, 1, big, &b), "40 MiB after freeing the first");
    neat_tensor_destroy(b);
    /* At run time: a conv backward takes scratch when it first runs. */
    int64_t xs[4] = {8, 16, 32, 32}, ws[4] = {16, 16, 3, 3};
    neat_tensor *x = NULL, *w = NULL, *dy = NULL, *dx = NULL, *dw = NULL;
    EXPECT_OK(neat_tensor_create_zeros(dev, 4, xs, &x), "x");
    EXPECT_OK(neat_tensor_create_zeros(dev, 4, ws, &w), "w");
    EXPECT_OK(neat_tensor_create_zeros(dev, 4, xs, &dy), "dy");
    EXPECT_OK(neat_tensor_create(dev, 4, xs, &dx), "dx");
    EXPECT_OK(neat_tensor_create(dev, 4, ws, &dw), "dw");
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_conv2d_backward(cb, &cd, NEAT_ACT_NONE, x, w, NULL, NULL, dy, dx, dw, NULL, 0),
              "record conv backward");
    EXPECT_OK(neat_device_memory_stats(dev, &s), "stats");
    EXPECT_OK(neat_device_trim(dev), "trim");
    EXPECT_OK(neat_device_set_memory_limit(dev, s.in_use + 1024), "tight limit");
    neat_status st = neat_cmdbuf_commit(cb);
    if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
    if (st == NEAT_OK) {
        nt_skip("%s: conv backward took no scratch at run time here", dev_name);
    } else {
        EXPECT_STATUS(st, NEAT_ERR_OUT_OF_MEMORY, "conv backward past the limit");
        EXPECT_MSG("neat_conv2d_backward", "conv backward past the limit");
    }
    EXPECT_OK(neat_device_set_memory_limit(dev, 0), "default limit again");
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, w, dy, dx, dw};
    for (int i = 0; i < 5; i++) neat_tensor_destroy(all[i]);
}

/* Past the pool's limit the pool writes the message; past what the device has, with the limit
 * lifted, the backend's allocator answers, and its message must replace the one an earlier
 * failure left (the CPU's said nothing, so a failed create reported the shape of the one
 * before it). */
static void test_oom_message(neat_device *dev) {
    neat_device_props props;
    EXPECT_OK(neat_device_info(dev, &props), "neat_device_info");
    int64_t bytes = (int64_t)1 << 20; /* a power of two: no bucket rounding */
    while (bytes <= props.total_memory) bytes *= 2;
    int64_t bad[1] = {-1}, big[1] = {bytes / 4};
    neat_tensor *t = NULL;
    EXPECT_STATUS(neat_tensor_create(dev, 1, bad, &t), NEAT_ERR_INVALID_ARGUMENT, "shape[0] -1");
    EXPECT_MSG("shape[0]", "shape[0] -1");
    EXPECT_OK(neat_device_set_memory_limit(dev, INT64_MAX), "no limit");
    EXPECT_STATUS(neat_tensor_create(dev, 1, big, &t), NEAT_ERR_OUT_OF_MEMORY,
                  "more than the device has");
    EXPECT_MSG("neat_tensor_create: ", "more than the device has");
    EXPECT_MSG(" bytes", "more than the device has");
    CHECK(!strstr(neat_last_error(), "shape[0]"), "%s: an earlier call's message: \"%s\"", dev_name,
          neat_last_error());
    CHECK(t == NULL, "%s: out written on failure", dev_name);
    EXPECT_OK(neat_device_set_memory_limit(dev, 0), "default limit again");
}

static void test_empty_spatial(neat_device *dev) {
    int64_t xs[4] = {2, 3, 0, 5}, ws[4] = {4, 3, 3, 3}, ys[4] = {2, 4, 0, 5}, ps[4] = {2, 3, 0, 2};
    neat_tensor *x = tensor(dev, 4, xs, NULL), *w = tensor(dev, 4, ws, NULL);
    neat_tensor *y = tensor(dev, 4, ys, NULL), *p = tensor(dev, 4, ps, NULL);
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_pool2d_desc pd = neat_pool2d_desc_make(2, 2, 2, 0);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_conv2d_forward(cb, &cd, NEAT_ACT_RELU, x, w, NULL, y), "conv on H = 0");
    EXPECT_OK(neat_maxpool2d(cb, &pd, x, p), "pool on H = 0");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, w, y, p};
    for (int i = 0; i < 4; i++) neat_tensor_destroy(all[i]);
}

typedef struct rec_arg {
    neat_cmdbuf *cb;
    neat_tensor *t;
    int failures;
} rec_arg;

static void *record_many(void *p) {
    rec_arg *r = p;
    for (int i = 0; i < 500; i++)
        if (neat_scale(r->cb, r->t, 1.0f, r->t) != NEAT_OK) r->failures++;
    return NULL;
}

static void test_concurrent_recording(neat_device *dev) {
    int64_t s1[1] = {16};
    neat_tensor *a = tensor(dev, 1, s1, NULL), *b = tensor(dev, 1, s1, NULL);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    rec_arg ra = {cb, a, 0}, rb = {cb, b, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, record_many, &ra);
    pthread_create(&tb, NULL, record_many, &rb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int64_t n = -1;
    EXPECT_OK(neat_cmdbuf_op_count(cb, &n), "op count");
    CHECK(n == 1000 && ra.failures + rb.failures == 0, "%s: %lld ops recorded of 1000 (%d failed)",
          dev_name, (long long)n, ra.failures + rb.failures);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a);
    neat_tensor_destroy(b);
}

static void test_destroy_queued(neat_device *dev) {
    enum { N = 1 << 16 };
    int64_t s1[1] = {N};
    neat_tensor *x = tensor(dev, 1, s1, NULL), *y = tensor(dev, 1, s1, NULL);
    float *got = malloc(sizeof(float) * N);
    for (int round = 0; round < 20; round++) {
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
        EXPECT_OK(neat_fill(cb, x, (float)round), "record fill");
        EXPECT_OK(neat_add(cb, x, x, y), "record add");
        EXPECT_OK(neat_cmdbuf_commit(cb), "first commit");
        EXPECT_OK(neat_cmdbuf_commit(cb), "second commit, queued behind the first");
        neat_cmdbuf_destroy(cb);
        EXPECT_OK(neat_device_synchronize(dev), "synchronize after the destroy");
        EXPECT_OK(neat_tensor_read(y, got, N), "read");
        CHECK(got[0] == 2.0f * (float)round && got[N - 1] == got[0], "%s: round %d: y = %g",
              dev_name, round, (double)got[0]);
    }
    free(got);
    neat_tensor_destroy(x);
    neat_tensor_destroy(y);
}

static void test_recorded_copies(neat_device *dev) {
    enum { N = 1000 };
    int64_t s1[1] = {N}, one[1] = {1};
    float src[N], dst[N], dst2[N], loss = 1234;
    neat_tensor *x = tensor(dev, 1, s1, NULL), *y = tensor(dev, 1, s1, NULL);
    neat_tensor *y2 = tensor(dev, 1, s1, NULL);
    neat_tensor *logits = tensor(dev, 2, (int64_t[]){1, 2}, (float[]){1, 2});
    neat_tensor *labels = tensor(dev, 1, one, NULL), *l = tensor(dev, 1, one, NULL);
    float label = 0;
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_copy_from_host(cb, src, N, x), "record copy_from_host");
    EXPECT_OK(neat_add(cb, x, x, y), "record add");
    EXPECT_OK(neat_copy_to_host(cb, y, dst, N), "record copy_to_host");
    EXPECT_OK(neat_copy_from_host(cb, &label, 1, labels), "record labels");
    EXPECT_OK(neat_softmax_cross_entropy(cb, logits, labels, l), "record xent");
    EXPECT_OK(neat_copy_to_host(cb, l, &loss, 1), "record loss copy");
    /* An op after the loss (guarded: it must not run after a failure) and a copy of its
     * result: on CUDA both sit in a graph's conditional body (NEATML_CUDA_GRAPHS=1 runs
     * this whole buffer as a graph, and fails the commit if it cannot be captured). */
    EXPECT_OK(neat_add(cb, x, y, y2), "record add after the loss");
    EXPECT_OK(neat_copy_to_host(cb, y2, dst2, N), "record copy after the loss");
    EXPECT_STATUS(neat_copy_to_host(cb, y, dst, N - 1), NEAT_ERR_SHAPE_MISMATCH, "count off");
    EXPECT_STATUS(neat_copy_from_host(cb, NULL, N, x), NEAT_ERR_INVALID_ARGUMENT, "NULL src");
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) src[i] = (float)(i + 1000 * round);
        for (int i = 0; i < N; i++) dst[i] = NAN;
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        for (int i = 0; i < N; i++) src[i] = -1; /* the next batch, while this one runs */
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        int bad = 0;
        for (int i = 0; i < N; i++) bad += dst[i] != 2.0f * (float)(i + 1000 * round);
        for (int i = 0; i < N; i++) bad += dst2[i] != 3.0f * (float)(i + 1000 * round);
        CHECK(bad == 0, "%s: round %d: %d of %d copied elements wrong", dev_name, round, bad, N);
        CHECK(fabsf(loss - 1.3132617f) < 1e-5f, "%s: loss %g", dev_name, (double)loss);
    }
    /* A failing op before a copy to host: dst and loss untouched. */
    label = 5;
    loss = 1234;
    for (int i = 0; i < N; i++) dst[i] = 7, dst2[i] = 7, src[i] = (float)i;
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit with a bad label");
    EXPECT_STATUS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_ARGUMENT, "wait with a bad label");
    CHECK(loss == 1234, "%s: copy_to_host after a failed op wrote %g", dev_name, (double)loss);
    CHECK(dst[0] == 0 && dst[1] == 2, "%s: the copy before the failure did not run", dev_name);
    CHECK(dst2[1] == 7, "%s: a copy after the failure wrote %g", dev_name, (double)dst2[1]);
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, y, y2, logits, labels, l};
    for (int i = 0; i < 6; i++) neat_tensor_destroy(all[i]);
}

/* A command buffer replayed after the plans its convolutions were captured with were evicted
 * from the backend's plan cache (more geometries than its capacity used in between): the
 * replay must give the same exact results. On CUDA the second commit captures the buffer as
 * a graph; evicting a plan destroys its cuDNN descriptors and, when an engine of cuDNN's
 * backend API was chosen (NEATML_CONV_ENGINE=2 forces one wherever one is admitted), that
 * engine's execution plan, while the graph that launched its kernels lives on. */
static void test_plan_evicted_under_graph(neat_device *dev) {
    enum { N = 2, C = 8, H = 12, K = 16, NX = N * C * H * H, NW = K * C * 9, NY = N * K * H * H };
    static float xv[NX], wv[NW], dyv[NY], first[NY + NX + NW], again[NY + NX + NW];
    for (int i = 0; i < NX; i++) xv[i] = (float)(i * 7 % 5 - 2);
    for (int i = 0; i < NW; i++) wv[i] = (float)(i * 3 % 5 - 2);
    for (int i = 0; i < NY; i++) dyv[i] = (float)(i * 11 % 5 - 2);
    int64_t xs[4] = {N, C, H, H}, ws[4] = {K, C, 3, 3}, ys[4] = {N, K, H, H};
    neat_tensor *x = tensor(dev, 4, xs, xv), *w = tensor(dev, 4, ws, wv),
                *dy = tensor(dev, 4, ys, dyv);
    neat_tensor *y = tensor(dev, 4, ys, NULL), *dx = tensor(dev, 4, xs, NULL),
                *dw = tensor(dev, 4, ws, NULL);
    neat_conv2d_desc d = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_conv2d_forward(cb, &d, NEAT_ACT_NONE, x, w, NULL, y), "record conv");
    EXPECT_OK(neat_conv2d_backward(cb, &d, NEAT_ACT_NONE, x, w, NULL, y, dy, dx, dw, NULL, 0),
              "record conv backward");
    float *out[2] = {first, again};
    for (int round = 0; round < 3; round++) { /* eager, captured, replayed after the eviction */
        if (round == 2) { /* more convolution geometries than the plan cache holds */
            int evictions = 0;
            for (int64_t g = 0; g < NM_LRU_CAPACITY + 8; g++) {
                int64_t s1[4] = {1, 1, 4 + g, 5}, s2[4] = {1, 1, 3, 3};
                neat_tensor *a = NULL, *k = NULL, *o = NULL;
                neat_cmdbuf *e = NULL;
                neat_status st = neat_tensor_create(dev, 4, s1, &a);
                if (!st) st = neat_tensor_create(dev, 4, s2, &k);
                if (!st) st = neat_tensor_create(dev, 4, s1, &o);
                if (!st) st = neat_cmdbuf_create(dev, &e);
                if (!st) st = neat_fill(e, a, 1);
                if (!st) st = neat_fill(e, k, 1);
                if (!st) st = neat_conv2d_forward(e, &d, NEAT_ACT_NONE, a, k, NULL, o);
                if (!st) st = neat_cmdbuf_commit(e);
                if (!st) st = neat_cmdbuf_wait(e);
                evictions += st == NEAT_OK;
                neat_cmdbuf_destroy(e);
                neat_tensor_destroy(a), neat_tensor_destroy(k), neat_tensor_destroy(o);
            }
            CHECK(evictions == NM_LRU_CAPACITY + 8, "%s: %d of %d other convolutions ran", dev_name,
                  evictions, NM_LRU_CAPACITY + 8);
        }
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        float *o = out[round > 0];
        EXPECT_OK(neat_tensor_read(y, o, NY), "read y");
        EXPECT_OK(neat_tensor_read(dx, o + NY, NX), "read dx");
        EXPECT_OK(neat_tensor_read(dw, o + NY + NX, NW), "read dw");
        if (round > 0)
            CHECK(!memcmp(first, again, sizeof first), "%s: round %d differs from the first run",
                  dev_name, round);
    }
    int bad = 0; /* the first run's y against the sum itself (integers: exact) */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < H; p++)
                for (int q = 0; q < H; q++) {
                    float sum = 0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                int h = p + i - 1, v = q + j - 1;
                                if (h >= 0 && h < H && v >= 0 && v < H)
                                    sum += xv[((n * C + c) * H + h) * H + v] *
                                           wv[((k * C + c) * 3 + i) * 3 + j];
                            }
                    bad += first[((n * K + k) * H + p) * H + q] != sum;
                }
    CHECK(bad == 0, "%s: conv with evicted plans: %d of %d outputs wrong", dev_name, bad, NY);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(dy);
    neat_tensor_destroy(y), neat_tensor_destroy(dx), neat_tensor_destroy(dw);
}

/* A kernel that writes one float too many, played through the tensor's host memory on the
 * CPU: the debug pool's canary after the block catches it at the next check. */
static void test_debug_pool_canary(neat_device *dev) {
    const char *env = getenv("NEATML_DEBUG_POOL");
    neat_device_props props;
    EXPECT_OK(neat_device_info(dev, &props), "neat_device_info");
    if (!env || !*env || strcmp(env, "0") == 0) {
        nt_skip("%s: debug pool canary: NEATML_DEBUG_POOL is off", dev_name);
        return;
    }
    if (props.backend != NEAT_BACKEND_CPU) {
        nt_skip("%s: debug pool canary: written through a host pointer, CPU only", dev_name);
        return;
    }
    enum { N = 100 };
    int64_t n = N;
    float twos[N], got[N];
    for (int i = 0; i < N; i++) twos[i] = 2.0f;
    neat_tensor *x = tensor(dev, 1, &n, twos), *y = tensor(dev, 1, &n, NULL);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_scale(cb, x, 0.5f, y), "record scale");
    size_t bytes = 0;
    float *p = nm_testing_tensor_memory(y, &bytes);
    if (!CHECK(p && bytes == N * sizeof(float), "%s: y's memory %p, %zu bytes", dev_name, (void *)p,
               bytes))
        goto done;
    unsigned char canary[sizeof(float)];
    memcpy(canary, p + N, sizeof canary);
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait, canary intact");

    p[N] = 1.0f; /* one past the end */
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_STATUS(neat_cmdbuf_wait(cb), NEAT_ERR_INTERNAL, "wait after a write past the end");
    EXPECT_MSG("neat_cmdbuf_wait: debug pool", "wait after a write past the end");
    EXPECT_MSG("block of 400 bytes", "wait after a write past the end");
    memcpy(p + N, canary, sizeof canary); /* the damage undone: nothing left to report */
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait, canary restored");
    EXPECT_OK(neat_tensor_read(y, got, N), "read y");
    CHECK(got[0] == 1.0f && got[N - 1] == 1.0f, "%s: y = %g ... %g, want 1", dev_name,
          (double)got[0], (double)got[N - 1]);

    /* Written past the end, then destroyed before any check: the block is gone, the next
     * synchronize still reports it, once. */
    neat_cmdbuf_destroy(cb);
    cb = NULL;
    p[N] = 1.0f;
    neat_tensor_destroy(y);
    y = NULL;
    EXPECT_STATUS(neat_device_synchronize(dev), NEAT_ERR_INTERNAL,
                  "synchronize after a damaged tensor's destroy");
    EXPECT_MSG("neat_device_synchronize: debug pool", "synchronize after destroy");
    EXPECT_MSG("block of 400 bytes", "synchronize after destroy");
    EXPECT_OK(neat_device_synchronize(dev), "synchronize once reported");
done:
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x);
    neat_tensor_destroy(y);
}

/* A training-like buffer (a long op, the labels copied in, the loss, an op after it)
 * committed with a bad label and at once again with good ones, before the first run has
 * finished: each submission's failure is its own, so the second one runs every op, as the
 * CPU's worker does. On CUDA both are graph launches (the buffer ran once before), the
 * second queued behind the first on the stream; the first failure used to stay in the
 * buffer's error record until the host read it, so the second run skipped its ops. */
static void test_replay_after_failure(neat_device *dev) {
    const int64_t N = strcmp(dev_name, "cuda") == 0 ? 2048 : 64; /* the first run still runs */
    int64_t sq[2] = {N, N}, ls[2] = {2, 3}, two[1] = {2}, one[1] = {1};
    neat_tensor *a = tensor(dev, 2, sq, NULL), *c = tensor(dev, 2, sq, NULL);
    neat_tensor *logits = tensor(dev, 2, ls, (float[]){1, 2, 3, 4, 5, 6});
    neat_tensor *labels = tensor(dev, 1, two, NULL), *loss = tensor(dev, 1, one, NULL);
    neat_tensor *after = tensor(dev, 1, one, NULL);
    float lab[2] = {0, 2};
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    /* ops: 0 fill, 1 matmul, 2 labels in, 3 loss (may fail), 4 fill after it */
    EXPECT_OK(neat_fill(cb, a, 0.5f), "record fill");
    EXPECT_OK(neat_matmul(cb, a, a, c, 1, 0, 0, 0), "record matmul");
    EXPECT_OK(neat_copy_from_host(cb, lab, 2, labels), "record labels");
    EXPECT_OK(neat_softmax_cross_entropy(cb, logits, labels, loss), "record xent");
    EXPECT_OK(neat_fill(cb, after, 5), "record fill after the loss");
    EXPECT_OK(neat_cmdbuf_commit(cb), "first commit (good labels)");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    float want = read1(loss);
    for (int round = 0; round < 3; round++) { /* on CUDA: captured, then replayed twice */
        EXPECT_OK(neat_tensor_write(loss, (float[]){42}, 1), "reset loss");
        EXPECT_OK(neat_tensor_write(after, (float[]){0}, 1), "reset after");
        lab[1] = 7;
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit with a bad label");
        lab[1] = 2; /* copied at commit: the next commit takes the good one */
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit again at once, good labels");
        EXPECT_STATUS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_ARGUMENT, "wait for both");
        EXPECT_MSG("neat_softmax_cross_entropy (op 3 of 5 in the command buffer): labels[1] = 7",
                   "wait for both");
        EXPECT_OK(neat_cmdbuf_wait(cb), "the failure is reported once");
        float got = read1(loss), got_after = read1(after);
        CHECK(got == want && got_after == 5,
              "%s: round %d: the run after the failed one: loss %g (want %g), the op after it "
              "wrote %g (want 5)",
              dev_name, round, (double)got, (double)want, (double)got_after);
    }
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {a, c, logits, labels, loss, after};
    for (int i = 0; i < 6; i++) neat_tensor_destroy(all[i]);
}

/* Backend limits are checked at record time. The only CUDA limit that tensors of a few
 * bytes reach is cuDNN's int, through a stride or a dilation (a 1x1 kernel keeps every tensor
 * [1,1,1,1]): refused there when recorded, UNSUPPORTED naming the field, the buffer's other
 * op unaffected; the CPU computes y = x w. The other limits (cuBLASLt's batch, the pooling
 * backward's plane, the sums' grid) need tensors of 2^31 elements or more: their checks
 * mirror the run's turns, which the zero-size rows below take past them on every backend. */
static void test_backend_limits(neat_device *dev) {
    const int64_t BIG = (int64_t)INT32_MAX + 1;
    int cuda = strcmp(dev_name, "cuda") == 0;
    int64_t one4[4] = {1, 1, 1, 1};
    neat_tensor *x = tensor(dev, 4, one4, (float[]){3}), *w = tensor(dev, 4, one4, (float[]){5});
    /* dx and dw written first: on CUDA the refused backward must leave them as they were */
    neat_tensor *y = tensor(dev, 4, one4, NULL), *dx = tensor(dev, 4, one4, (float[]){9});
    neat_tensor *dw = tensor(dev, 4, one4, (float[]){9}), *dy = tensor(dev, 4, one4, (float[]){2});
    const struct {
        neat_conv2d_desc d;
        const char *field;
        int elsewhere; /* run on the other backends too */
    } rows[] = {
        /* The CPU runs them: a stride of one output position and a dilation of a 1-tap
         * kernel do not matter, and reach oneDNN made small (they failed at wait before) */
        {neat_conv2d_desc_full(1, 1, BIG, 1, 0, 0, 1, 1, 1), "stride_h = 2147483648", 1},
        {neat_conv2d_desc_full(1, 1, 1, BIG, 0, 0, 1, 1, 1), "stride_w = 2147483648", 1},
        {neat_conv2d_desc_full(1, 1, 1, 1, 0, 0, BIG, 1, 1), "dilation_h = 2147483648", 1},
        {neat_conv2d_desc_full(1, 1, 1, 1, 0, 0, 1, BIG, 1), "dilation_w = 2147483648", 1},
        {neat_conv2d_desc_full(1, 1, INT64_MAX, INT64_MAX, 0, 0, 1, 1, 1),
         "stride_h = 9223372036854775807", 1},
        {neat_conv2d_desc_full(1, 1, 1, 1, 0, 0, INT64_MAX, INT64_MAX, 1),
         "dilation_h = 9223372036854775807", 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!cuda && !rows[i].elsewhere) continue;
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
        EXPECT_OK(neat_fill(cb, y, 7), "record fill");
        char fmsg[512];
        neat_status f = neat_conv2d_forward(cb, &rows[i].d, NEAT_ACT_NONE, x, w, NULL, y);
        snprintf(fmsg, sizeof fmsg, "%s", f ? neat_last_error() : "");
        neat_status b = neat_conv2d_backward(cb, &rows[i].d, NEAT_ACT_NONE, x, w, NULL, NULL, dy,
                                             dx, dw, NULL, 0);
        const char *bmsg = b ? neat_last_error() : "";
        neat_status want = cuda ? NEAT_ERR_UNSUPPORTED : NEAT_OK;
        CHECK(f == want &&
                  (!cuda || (strstr(fmsg, "neat_conv2d_forward: ") && strstr(fmsg, rows[i].field))),
              "%s: forward, %s: %s (%s), want %s naming it", dev_name, rows[i].field,
              neat_status_string(f), fmsg, neat_status_string(want));
        CHECK(b == want && (!cuda || (strstr(bmsg, "neat_conv2d_backward: ") &&
                                      strstr(bmsg, rows[i].field))),
              "%s: backward, %s: %s (%s), want %s naming it", dev_name, rows[i].field,
              neat_status_string(b), bmsg, neat_status_string(want));
        int64_t nops = 0;
        EXPECT_OK(neat_cmdbuf_op_count(cb, &nops), "op count");
        CHECK(nops == (cuda ? 1 : 3), "%s: %s: %lld ops recorded", dev_name, rows[i].field,
              (long long)nops);
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        float g[3] = {read1(y), read1(dx), read1(dw)};
        if (cuda)
            CHECK(g[0] == 7 && g[1] == 9 && g[2] == 9,
                  "%s: %s: the fill before the refused ops gave %g, dx dw %g %g (want 7, 9 9)",
                  dev_name, rows[i].field, (double)g[0], (double)g[1], (double)g[2]);
        else
            CHECK(g[0] == 15 && g[1] == 10 && g[2] == 6, "%s: %s: y dx dw = %g %g %g", dev_name,
                  rows[i].field, (double)g[0], (double)g[1], (double)g[2]);
        neat_cmdbuf_destroy(cb);
    }
    /* A geometry no backend takes: a 2-tap kernel dilated by 2^31 over one row padded by
     * 2^31 - 1 (one output position). Refused when recorded, on every backend, naming the
     * size; the buffer's other ops run. */
    {
        int64_t w21[4] = {1, 1, 2, 1};
        neat_tensor *w2 = tensor(dev, 4, w21, (float[]){5, 6});
        neat_conv2d_desc d = neat_conv2d_desc_full(2, 1, BIG, 1, BIG - 1, 0, BIG, 1, 1);
        float dx_before = read1(dx);
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
        EXPECT_OK(neat_fill(cb, y, 7), "record fill");
        EXPECT_STATUS(neat_conv2d_forward(cb, &d, NEAT_ACT_NONE, x, w2, NULL, y),
                      NEAT_ERR_UNSUPPORTED, "forward, dilation and padding 2^31");
        EXPECT_MSG("neat_conv2d_forward: ", "forward, dilation and padding 2^31");
        EXPECT_MSG("2147483647", "forward, dilation and padding 2^31");
        EXPECT_STATUS(
            neat_conv2d_backward(cb, &d, NEAT_ACT_NONE, x, w2, NULL, NULL, dy, dx, NULL, NULL, 0),
            NEAT_ERR_UNSUPPORTED, "backward, dilation and padding 2^31");
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
        CHECK(read1(y) == 7 && read1(dx) == dx_before, "%s: refused conv: y dx = %g %g (want 7 %g)",
              dev_name, (double)read1(y), (double)read1(dx), (double)dx_before);
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(w2);
    }
    /* Zero-size ops with sizes past the limits: the run returns before each limit. */
    int64_t pa[3] = {BIG, 0, 0}, pb[3] = {BIG, 0, 5}, pc[3] = {BIG, 0, 5};
    int64_t px[4] = {0, 1, 65536, 65537}, py[4] = {0, 1, 65534, 65535};
    int64_t cx[4] = {0, 1, 1, 1};
    neat_tensor *ma = tensor(dev, 3, pa, NULL), *mb = tensor(dev, 3, pb, NULL),
                *mc = tensor(dev, 3, pc, NULL);
    neat_tensor *qx = tensor(dev, 4, px, NULL), *qy = tensor(dev, 4, py, NULL),
                *qdx = tensor(dev, 4, px, NULL);
    neat_tensor *zx = tensor(dev, 4, cx, NULL), *zy = tensor(dev, 4, cx, NULL);
    neat_pool2d_desc pd = neat_pool2d_desc_make(3, 3, 1, 0);
    neat_conv2d_desc cd = neat_conv2d_desc_full(1, 1, 1, 1, 0, 0, BIG, BIG, 1);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    EXPECT_OK(neat_matmul_batched(cb, ma, mb, mc, 1, 0, 0, 0), "matmul, batch 2^31, m = k = 0");
    EXPECT_OK(neat_maxpool2d_backward(cb, &pd, qx, qy, qdx), "pool backward, N = 0, H*W > 2^31");
    EXPECT_OK(neat_conv2d_forward(cb, &cd, NEAT_ACT_NONE, zx, w, NULL, zy),
              "conv, N = 0, dilation 2^31");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit the zero-size ops");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, w, y, dx, dw, dy, ma, mb, mc, qx, qy, qdx, zx, zy};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) neat_tensor_destroy(all[i]);
}

/* The thread's current CUDA device after each call on a neatml device of another GPU: the
 * caller's (device `app` selected first, so its context exists), never neatml's. The CUDA
 * runtime's calls are looked up in the process (libneatml loaded libcudart): the test links
 * no CUDA library and skips where there is none. */
static void test_current_device_kept(neat_device *dev) {
    (void)dev;
    if (strcmp(dev_name, "cuda") != 0) return;
    int (*get_count)(int *) = dlsym(RTLD_DEFAULT, "cudaGetDeviceCount");
    int (*get)(int *) = dlsym(RTLD_DEFAULT, "cudaGetDevice");
    int (*set)(int) = dlsym(RTLD_DEFAULT, "cudaSetDevice");
    int count = 0;
    if (!get_count || !get || !set || get_count(&count) != 0 || count < 2) {
        nt_skip("%s: current_device_kept needs two GPUs (%d found)", dev_name, count);
        return;
    }
    enum { N = 256 };
    int64_t s1[1] = {N};
    float v[N], got[N];
    for (int i = 0; i < N; i++) v[i] = (float)i;
    for (int app = 0; app < 2; app++) {
        int mine = 1 - app, cur = -1;
#define STILL_APP(what)                                                                            \
    (cur = -1, get(&cur),                                                                          \
     CHECK(cur == app, "%s: after %s on device %d the current device is %d, not the caller's %d",  \
           dev_name, (what), mine, cur, app))
        CHECK(set(app) == 0, "%s: cudaSetDevice(%d)", dev_name, app);
        neat_device *d = NULL;
        EXPECT_OK(neat_device_create(NEAT_BACKEND_CUDA, mine, &d), "neat_device_create");
        if (!d) continue;
        STILL_APP("neat_device_create");
        neat_tensor *x = tensor(d, 1, s1, v), *y = tensor(d, 1, s1, NULL);
        STILL_APP("neat_tensor_create and write");
        neat_cmdbuf *cb = NULL;
        EXPECT_OK(neat_cmdbuf_create(d, &cb), "cmdbuf");
        EXPECT_OK(neat_scale(cb, x, 2.0f, y), "record scale");
        for (int round = 0; round < 3; round++) { /* eager, captured, replayed */
            EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
            STILL_APP("neat_cmdbuf_commit");
            EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
            STILL_APP("neat_cmdbuf_wait");
        }
        EXPECT_OK(neat_tensor_read(y, got, N), "read");
        STILL_APP("neat_tensor_read");
        CHECK(got[N - 1] == 2.0f * (N - 1), "%s: y[%d] = %g", dev_name, N - 1, (double)got[N - 1]);
        EXPECT_OK(neat_cmdbuf_reset(cb), "reset");
        neat_cmdbuf_destroy(cb);
        neat_tensor_destroy(x);
        neat_tensor_destroy(y);
        EXPECT_OK(neat_device_trim(d), "trim");
        STILL_APP("reset, destroy and trim");
        neat_device_destroy(d);
        STILL_APP("neat_device_destroy");
#undef STILL_APP
    }
}

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int n = nt_open_devices(devs, names);
    for (int i = 0; i < n; i++) {
        dev_name = names[i];
        test_destroy_while_running(devs[i]);
        test_destroy_commit_race(devs[i]);
        test_zero_size_overflow(devs[i]);
        test_pool_pad_overflow(devs[i]);
        test_pool_huge_window(devs[i]);
        test_synchronize_reports(devs[i]);
        test_failure_stops_buffer(devs[i]);
        test_label_past_2p24(devs[i]);
        test_hyper_checked(devs[i]);
        test_memory_limit(devs[i]);
        test_oom_message(devs[i]);
        test_empty_spatial(devs[i]);
        test_concurrent_recording(devs[i]);
        test_destroy_queued(devs[i]);
        test_recorded_copies(devs[i]);
        test_plan_evicted_under_graph(devs[i]);
        test_debug_pool_canary(devs[i]);
        test_replay_after_failure(devs[i]);
        test_backend_limits(devs[i]);
        test_current_device_kept(devs[i]);
    }
    nt_close_devices(devs, n);
    return nt_finish("reliability");
}
