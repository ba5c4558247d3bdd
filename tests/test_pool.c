/*
 * test_pool.c — the per-device caching pool, seen through neat_device_memory_stats:
 * in_use returns to its start, peak, reset_peak, no growth of `reserved` under repeated
 * create/destroy, trim, views keeping memory alive, command-buffer temporaries released.
 *
 * The pool rounds sizes up (powers of two to 1 MiB, then eighths of an octave), so the
 * tests compare with lower bounds (the bytes asked for) and with earlier readings, never
 * with a bucket size.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

static const char *dev_name;

/* Status checks whose failure message names the device under test. */
static int check_status(neat_status st, neat_status want, const char *what, int line) {
    return nt_check(st == want, __FILE__, line, "%s: %s: got %s, want %s (%s)", dev_name, what,
                    neat_status_string(st), neat_status_string(want), neat_last_error());
}
#define EXPECT_STATUS(st, want, what) check_status((st), (want), (what), __LINE__)
#define EXPECT_OK(st, what) check_status((st), NEAT_OK, (what), __LINE__)

/* NEATML_DEBUG_POOL=1: exact blocks, nothing cached (the sanitizer runs set it). */
static int debug_pool(void) {
    const char *e = getenv("NEATML_DEBUG_POOL");
    return e && *e && strcmp(e, "0") != 0;
}

static neat_memory_stats stats(neat_device *dev) {
    neat_memory_stats s = {-1, -1, -1, -1};
    EXPECT_OK(neat_device_memory_stats(dev, &s), "neat_device_memory_stats");
    CHECK(s.in_use >= 0 && s.reserved >= s.in_use && s.peak >= s.in_use,
          "%s: inconsistent stats in_use %lld reserved %lld peak %lld", dev_name,
          (long long)s.in_use, (long long)s.reserved, (long long)s.peak);
    return s;
}

static neat_tensor *vector(neat_device *dev, int64_t n) {
    neat_tensor *t = NULL;
    EXPECT_OK(neat_tensor_create(dev, 1, &n, &t), "neat_tensor_create");
    return t;
}

/* in_use grows by at least the bytes created and returns to its start; peak follows. */
static void test_in_use_and_peak(neat_device *dev) {
    static const int64_t sizes[] = {1, 7, 100, 1000, 4096, 65537, 300000, 0, 12345};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    neat_memory_stats s0 = stats(dev);
    neat_tensor *t[NS];
    int64_t bytes = 0;
    for (int i = 0; i < NS; i++) {
        t[i] = vector(dev, sizes[i]);
        bytes += sizes[i] * 4;
    }
    neat_memory_stats s1 = stats(dev);
    CHECK(s1.in_use - s0.in_use >= bytes, "%s: in_use grew by %lld for %lld bytes of tensors",
          dev_name, (long long)(s1.in_use - s0.in_use), (long long)bytes);
    CHECK(s1.peak >= s1.in_use && s1.peak >= s0.in_use + bytes,
          "%s: peak %lld below in_use %lld + created %lld", dev_name, (long long)s1.peak,
          (long long)s0.in_use, (long long)bytes);
    for (int i = 0; i < NS; i++) neat_tensor_destroy(t[i]);
    neat_memory_stats s2 = stats(dev);
    CHECK(s2.in_use == s0.in_use, "%s: in_use %lld after destroying everything, %lld at start",
          dev_name, (long long)s2.in_use, (long long)s0.in_use);
    CHECK(s2.peak >= s1.in_use, "%s: peak %lld forgot the high mark %lld", dev_name,
          (long long)s2.peak, (long long)s1.in_use);
    CHECK(s2.reserved >= s2.in_use, "%s: reserved below in_use", dev_name);

    EXPECT_OK(neat_device_reset_peak(dev), "neat_device_reset_peak");
    neat_memory_stats s3 = stats(dev);
    CHECK(s3.peak == s3.in_use, "%s: peak %lld after reset_peak, in_use %lld", dev_name,
          (long long)s3.peak, (long long)s3.in_use);
    neat_tensor *small = vector(dev, 1000);
    neat_memory_stats s4 = stats(dev);
    CHECK(s4.peak >= s3.in_use + 4000 && s4.peak < s1.peak,
          "%s: peak %lld after reset and a 4000-byte tensor (start %lld, old peak %lld)", dev_name,
          (long long)s4.peak, (long long)s3.in_use, (long long)s1.peak);
    neat_tensor_destroy(small);
}

/* 10,000 create/destroy cycles, up to four tensors alive (a ring), sizes cycling through
 * a list: after the first two rounds every size has a cached block, so reserved stays. */
static void test_no_growth(neat_device *dev) {
    static const int64_t sizes[] = {0,     1,      3,    64,     65,     1000, 4097,
                                    16384, 100003, 1024, 262144, 262145, 7,    300000};
    enum { NS = sizeof sizes / sizeof sizes[0], RING = 4, CYCLES = 10000 };
    neat_tensor *ring[RING] = {0};
    int64_t reserved_after_warmup = -1, max_reserved = 0, failed_creates = 0;
    for (int i = 0; i < CYCLES; i++) {
        neat_tensor_destroy(ring[i % RING]);
        ring[i % RING] = NULL;
        /* shape varies too: the pool sees bytes, not shapes */
        int64_t n = sizes[i % NS], shape[2] = {n > 1 ? 2 : 1, n > 1 ? n / 2 : n};
        if (neat_tensor_create(dev, i % 2 + 1, i % 2 ? shape : &n, &ring[i % RING]) != NEAT_OK)
            failed_creates++;
        if (i == 2 * NS * RING) reserved_after_warmup = stats(dev).reserved;
        if (i > 2 * NS * RING) {
            neat_memory_stats s;
            neat_device_memory_stats(dev, &s);
            if (s.reserved > max_reserved) max_reserved = s.reserved;
        }
    }
    CHECK(failed_creates == 0, "%s: %lld of %d creates failed (%s)", dev_name,
          (long long)failed_creates, CYCLES, neat_last_error());
    if (debug_pool())
        nt_skip("%s: reuse of cached blocks: NEATML_DEBUG_POOL caches nothing", dev_name);
    else
        CHECK(max_reserved <= reserved_after_warmup,
              "%s: reserved grew from %lld after the first rounds to %lld over %d cycles", dev_name,
              (long long)reserved_after_warmup, (long long)max_reserved, CYCLES);
    for (int i = 0; i < RING; i++) neat_tensor_destroy(ring[i]);
}

/* trim gives cached blocks back: reserved == in_use, with and without live tensors. */
static void test_trim(neat_device *dev) {
    if (debug_pool()) {
        /* Nothing is cached: a destroyed tensor's block goes back at once. */
        neat_memory_stats before = stats(dev);
        neat_tensor_destroy(vector(dev, 1000));
        neat_memory_stats after = stats(dev);
        CHECK(after.reserved == before.reserved && after.in_use == before.in_use,
              "%s: debug pool kept a freed block: reserved %lld -> %lld", dev_name,
              (long long)before.reserved, (long long)after.reserved);
        nt_skip("%s: trim of cached blocks: NEATML_DEBUG_POOL caches nothing", dev_name);
        return;
    }
    neat_tensor *keep = vector(dev, 50000);
    for (int i = 0; i < 20; i++) neat_tensor_destroy(vector(dev, 1000 * (i + 1)));
    neat_memory_stats s = stats(dev);
    CHECK(s.reserved > s.in_use,
          "%s: nothing cached after 20 destroyed tensors "
          "(reserved %lld, in_use %lld)",
          dev_name, (long long)s.reserved, (long long)s.in_use);
    EXPECT_OK(neat_device_trim(dev), "neat_device_trim");
    s = stats(dev);
    CHECK(s.reserved == s.in_use, "%s: after trim reserved %lld, in_use %lld", dev_name,
          (long long)s.reserved, (long long)s.in_use);
    CHECK(s.in_use >= 200000, "%s: trim dropped the live tensor: in_use %lld", dev_name,
          (long long)s.in_use);
    /* the live tensor still works after trim */
    float v[3] = {1, 2, 3}, back[3] = {0};
    neat_tensor *t3 = vector(dev, 3);
    EXPECT_OK(neat_tensor_write(t3, v, 3), "write after trim");
    EXPECT_OK(neat_tensor_read(t3, back, 3), "read after trim");
    CHECK(memcmp(v, back, sizeof v) == 0, "%s: data wrong after trim", dev_name);
    neat_tensor_destroy(t3);
    neat_tensor_destroy(keep);
    EXPECT_OK(neat_device_trim(dev), "neat_device_trim");
    s = stats(dev);
    CHECK(s.reserved == s.in_use, "%s: after the last trim reserved %lld, in_use %lld", dev_name,
          (long long)s.reserved, (long long)s.in_use);
}

/* A view keeps its base's memory: destroying the base frees nothing, the data stays
 * readable and usable by an op, and a new tensor does not take that memory. */
static void test_view_keeps_memory(neat_device *dev) {
    enum { R = 100, C = 100 };
    neat_memory_stats s0 = stats(dev);
    float *data = nt_alloc(R * C), *back = nt_alloc(R * C);
    for (int i = 0; i < R * C; i++) data[i] = (float)(i % 251) - 125;
    neat_tensor *base = NULL, *view = NULL, *other = NULL, *out = NULL;
    EXPECT_OK(neat_matrix_create(dev, R, C, &base), "create base");
    EXPECT_OK(neat_tensor_write(base, data, R * C), "write base");
    EXPECT_OK(neat_tensor_view(base, 1, (int64_t[]){R * C}, &view), "neat_tensor_view");
    int64_t with_base = stats(dev).in_use;
    neat_tensor_destroy(base);
    int64_t after = stats(dev).in_use;
    CHECK(after == with_base, "%s: destroying a base with a live view changed in_use %lld -> %lld",
          dev_name, (long long)with_base, (long long)after);
    /* the same size again must get other memory */
    other = vector(dev, R * C);
    float *junk = nt_alloc(R * C);
    for (int i = 0; i < R * C; i++) junk[i] = -7.0f;
    EXPECT_OK(neat_tensor_write(other, junk, R * C), "write the new tensor");
    EXPECT_OK(neat_tensor_read(view, back, R * C), "read the view after its base died");
    CHECK(nt_guard_ok(back, R * C), "%s: guard band overwritten", dev_name);
    CHECK(memcmp(back, data, sizeof(float) * R * C) == 0, "%s: the view's data changed", dev_name);
    /* an op on the view */
    out = vector(dev, R * C);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_scale(cb, view, 2.0f, out), "record scale of the view");
    EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
    EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    EXPECT_OK(neat_tensor_read(out, back, R * C), "read");
    int wrong = 0;
    for (int i = 0; i < R * C; i++) wrong += back[i] != 2 * data[i];
    CHECK(wrong == 0, "%s: scale of a view whose base is gone: %d wrong", dev_name, wrong);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(view);
    neat_tensor_destroy(other);
    neat_tensor_destroy(out);
    neat_memory_stats s1 = stats(dev);
    CHECK(s1.in_use == s0.in_use, "%s: in_use %lld after the view died, %lld before", dev_name,
          (long long)s1.in_use, (long long)s0.in_use);
    nt_free(data), nt_free(back), nt_free(junk);
}

/* An op's temporaries (im2col, workspaces) go back to the pool: in_use returns to the
 * tensors' level once the buffer is destroyed. */
static void test_cmdbuf_temporaries(neat_device *dev) {
    neat_tensor *x = NULL, *w = NULL, *y = NULL;
    EXPECT_OK(neat_tensor_create(dev, 4, (int64_t[]){2, 8, 16, 16}, &x), "create x");
    EXPECT_OK(neat_tensor_create(dev, 4, (int64_t[]){16, 8, 3, 3}, &w), "create w");
    EXPECT_OK(neat_tensor_create(dev, 4, (int64_t[]){2, 16, 16, 16}, &y), "create y");
    float *xv = calloc(2 * 8 * 16 * 16, sizeof(float)), *wv = calloc(16 * 8 * 9, sizeof(float));
    EXPECT_OK(neat_tensor_write(x, xv, 2 * 8 * 16 * 16), "write x");
    EXPECT_OK(neat_tensor_write(w, wv, 16 * 8 * 9), "write w");
    int64_t tensors_only = stats(dev).in_use;
    neat_conv2d_desc d = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_cmdbuf *cb = NULL;
    EXPECT_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    EXPECT_OK(neat_conv2d_forward(cb, &d, NEAT_ACT_RELU, x, w, NULL, y), "record conv");
    for (int i = 0; i < 3; i++) {
        EXPECT_OK(neat_cmdbuf_commit(cb), "commit");
        EXPECT_OK(neat_cmdbuf_wait(cb), "wait");
    }
    neat_cmdbuf_destroy(cb);
    int64_t after = stats(dev).in_use;
    CHECK(after == tensors_only, "%s: in_use %lld after the conv buffer was destroyed, %lld before",
          dev_name, (long long)after, (long long)tensors_only);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(y);
    free(xv), free(wv);
}

static void test_stats_arguments(neat_device *dev) {
    EXPECT_STATUS(neat_device_memory_stats(dev, NULL), NEAT_ERR_INVALID_ARGUMENT,
                  "memory_stats with out NULL");
    CHECK(strstr(neat_last_error(), "neat_device_memory_stats") != NULL,
          "%s: message should name the function: \"%s\"", dev_name, neat_last_error());
}

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++) {
        dev_name = names[d];
        int before = nt_failed;
        test_in_use_and_peak(devs[d]);
        test_no_growth(devs[d]);
        test_trim(devs[d]);
        test_view_keeps_memory(devs[d]);
        test_cmdbuf_temporaries(devs[d]);
        test_stats_arguments(devs[d]);
        printf("%-5s pool: %d failed\n", dev_name, nt_failed - before);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("pool");
}
