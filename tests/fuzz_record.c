/*
 * fuzz_record.c — libFuzzer harness over the public API, mostly op recording, on two CPU
 * devices (tensors of the second are foreign to buffers of the first).
 *
 * An input is a program: each action reads its choices from the next bytes (0 once the
 * input is used up). Actions create tensors (ndim -1..5, sizes mostly 0..9, at times
 * negative or near INT64_MAX), views, command buffers; record any op of neatml.h with
 * tensor arguments that may be NULL, destroyed, forged, of the other device or of the wrong
 * shape, descriptors with small, zero, negative and huge fields, activations outside the
 * enum, NaN and infinite scalars; commit, wait, reset; read and write with wrong counts;
 * destroy in any order. At the end of an input everything left is destroyed in an order
 * the input chose.
 *
 * Properties (a violation aborts, which libFuzzer reports as a crash):
 *   - no crash, hang or sanitizer report (the build adds ASan and UBSan);
 *   - every call returns NEAT_OK or a status of the enum; a failing one leaves a message
 *     that starts with the called function's name (wait, reset and synchronize may name
 *     the op that failed at run time instead: any "neat_" name);
 *   - a failing constructor leaves *out untouched (NULL here);
 *   - once every tensor and buffer of the input is destroyed, the devices' in_use is back
 *     where it was before the input.
 * Tensors that would hold more than MAX_ELEMS elements (without overflowing) are not
 * created, so that every op is cheap and a run stays fast; shapes whose byte count
 * overflows, and zero-size shapes with huge sizes, are created (and must fail, or succeed
 * holding nothing).
 *
 * Built by CMake with -DNEATML_FUZZ=ON (clang); run by scripts/run_tests.sh (fixed runs)
 * and scripts/fuzz.sh (longer). docs/RELIABILITY.md lists what it found.
 */
#include "neatml.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NT = 12, NCB = 4, NDEAD = 8, MAX_ELEMS = 1024 };

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static uint8_t u8(input *in) {
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

static neat_device *dev, *dev2;
static neat_tensor *tensors[NT];
static neat_cmdbuf *cbs[NCB];
static void *dead[NDEAD]; /* destroyed handles of either kind, passed again later */
static int ndead;
static float host[MAX_ELEMS + 8];

/* What this harness found is fixed; its reproducers stay in tests/fuzz_corpus/, which
 * every run starts from (docs/RELIABILITY.md lists them). */

static void die(const char *fn, neat_status st, const char *why) {
    fprintf(stderr, "fuzz_record: %s returned %d (%s): %s; message \"%s\"\n", fn, (int)st,
            neat_status_string(st), why, neat_last_error());
    abort();
}

/* The status and message contract of one call. */
static neat_status check(const char *fn, neat_status st) {
    if (st == NEAT_OK) return st;
    if (st < NEAT_ERR_TIMEOUT || st > NEAT_OK) /* NEAT_ERR_TIMEOUT: the enum's lowest */
        die(fn, st, "a status outside neat_status");
    const char *msg = neat_last_error();
    if (!msg || !*msg) die(fn, st, "failed with an empty neat_last_error()");
    const int run_time = !strcmp(fn, "neat_cmdbuf_wait") || !strcmp(fn, "neat_cmdbuf_reset") ||
                         !strcmp(fn, "neat_device_synchronize");
    const char *want = run_time ? "neat_" : fn;
    if (strncmp(msg, want, strlen(want)) != 0)
        die(fn, st, "the message does not start with its name");
    return st;
}
#define CALL(fn, ...) check(#fn, fn(__VA_ARGS__))

static void bury(void *handle) {
    if (handle) dead[ndead++ % NDEAD] = handle;
}

/* ---- choices ------------------------------------------------------------------------- */

static int64_t pick_size(input *in) {
    static const int64_t odd[] = {-1,
                                  -7,
                                  INT64_MAX,
                                  INT64_MIN,
                                  (int64_t)1 << 31,
                                  (int64_t)1 << 40,
                                  (int64_t)1 << 62,
                                  INT64_MAX / 4 + 1};
    uint8_t b = u8(in);
    return b < 224 ? b % 10 : odd[b % (sizeof odd / sizeof odd[0])];
}

/* Descriptor fields: mostly 0..4, then the edges. */
static int64_t pick_field(input *in) {
    static const int64_t odd[] = {-1,
                                  -2,
                                  7,
                                  9,
                                  INT64_MAX,
                                  INT64_MIN,
                                  INT64_MAX - 1,
                                  INT64_MAX / 2,
                                  (int64_t)1 << 32,
                                  (int64_t)1 << 62};
    uint8_t b = u8(in);
    return b < 200 ? b % 5 : odd[b % (sizeof odd / sizeof odd[0])];
}

static int pick_int(input *in) {
    static const int odd[] = {-1, 5, INT_MAX, INT_MIN};
    uint8_t b = u8(in);
    return b < 224 ? b % 4 : odd[b % 4];
}

static float pick_float(input *in) {
    static const float v[] = {0.0f,      1.0f,  -1.0f,  0.5f,   2.0f, -0.0f, NAN,  INFINITY,
                              -INFINITY, 1e30f, -1e30f, 1e-40f, 0.1f, 3.0f,  0.9f, 0.999f};
    return v[u8(in) % 16];
}

static neat_activation pick_act(input *in) {
    uint8_t b = u8(in);
    if (b >= 250) return (neat_activation)(b == 255 ? INT_MAX : INT_MIN);
    return (neat_activation)(b % 7 - 1); /* -1 .. 5: the enum and one past each end */
}

/* A tensor argument: a slot (maybe empty: NULL), a destroyed handle, a forged value or a
 * handle of another kind. */
static neat_tensor *pick_tensor(input *in) {
    uint8_t b = u8(in);
    if (b < 216) return tensors[b % NT];
    if (b < 236) return (neat_tensor *)dead[b % NDEAD];
    if (b < 244) return NULL;
    if (b < 250) return (neat_tensor *)cbs[b % NCB];
    return (neat_tensor *)(uintptr_t)(0x100000001ull * (b - 249)); /* slot i, generation i */
}

static neat_cmdbuf *pick_cb(input *in) {
    uint8_t b = u8(in);
    if (b < 224) return cbs[b % NCB];
    if (b < 240) return (neat_cmdbuf *)dead[b % NDEAD];
    if (b < 248) return NULL;
    return (neat_cmdbuf *)tensors[b % NT];
}

/* NCHW or NHWC mostly, now and then a value neat_layout does not have. */
static neat_layout pick_layout(input *in) {
    uint8_t b = u8(in);
    return (neat_layout)(b < 240 ? b % 2 : (int)(b % 8) - 3);
}

static neat_conv2d_desc pick_conv(input *in) {
    neat_conv2d_desc d;
    d.kernel_h = pick_field(in), d.kernel_w = pick_field(in);
    d.stride_h = pick_field(in), d.stride_w = pick_field(in);
    d.pad_h = pick_field(in), d.pad_w = pick_field(in);
    d.dilation_h = pick_field(in), d.dilation_w = pick_field(in);
    d.groups = pick_field(in);
    d.layout = pick_layout(in);
    return d;
}

static neat_pool2d_desc pick_pool(input *in) {
    neat_pool2d_desc d;
    d.kernel_h = pick_field(in), d.kernel_w = pick_field(in);
    d.stride_h = pick_field(in), d.stride_w = pick_field(in);
    d.pad_h = pick_field(in), d.pad_w = pick_field(in);
    d.layout = pick_layout(in);
    return d;
}

/* Element count of a shape; -1 when a size is negative or the byte count overflows. */
static int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
    }
    int64_t bytes;
    return __builtin_mul_overflow(n, (int64_t)sizeof(float), &bytes) ? -1 : n;
}

/* ---- actions ------------------------------------------------------------------------- */

static void act_create(input *in) {
    uint8_t b = u8(in);
    int ndim = b < 250 ? b % 6 : -1; /* 0..4 valid, 5 and -1 not */
    int64_t shape[8];
    for (int i = 0; i < 8; i++) shape[i] = i < ndim ? pick_size(in) : 1;
    const int64_t n = ndim >= 0 && ndim <= 4 ? shape_numel(ndim, shape) : 0;
    if (n > MAX_ELEMS) return; /* would run, but slowly: not this harness's subject */
    neat_device *d = (b & 0x40) && (b & 0x80) ? dev2 : dev;
    const int64_t *sp = (b & 0xc0) == 0x40 && ndim == 0 ? NULL : shape;
    neat_tensor *t = NULL;
    const uint8_t variant = u8(in) % 6;
    neat_tensor **out = variant >= 3 ? NULL : &t;
    neat_status st;
    switch (variant % 3) {
    case 0: st = CALL(neat_tensor_create, d, ndim, sp, out); break;
    case 1: st = CALL(neat_tensor_create_zeros, d, ndim, sp, out); break;
    default:
        if (shape_numel(2, shape) > MAX_ELEMS) return;
        st = CALL(neat_matrix_create, d, shape[0], shape[1], out);
        break;
    }
    if (st != NEAT_OK && t) die("neat_tensor_create", st, "failed but set *out");
    int slot = u8(in) % NT;
    if (t) {
        bury(tensors[slot]);
        neat_tensor_destroy(tensors[slot]);
        tensors[slot] = t;
    }
}

static void act_view(input *in) {
    neat_tensor *base = pick_tensor(in);
    int ndim = u8(in) % 6;
    int64_t shape[8];
    for (int i = 0; i < 8; i++) shape[i] = i < ndim ? pick_size(in) : 1;
    neat_tensor *v = NULL;
    neat_status st = CALL(neat_tensor_view, base, ndim, shape, &v);
    if (st != NEAT_OK && v) die("neat_tensor_view", st, "failed but set *out");
    int slot = u8(in) % NT;
    if (v) {
        bury(tensors[slot]);
        neat_tensor_destroy(tensors[slot]);
        tensors[slot] = v;
    }
}

static void act_destroy_tensor(input *in) {
    int slot = u8(in) % NT;
    bury(tensors[slot]);
    neat_tensor_destroy(tensors[slot]);
    tensors[slot] = NULL;
    neat_tensor_destroy(pick_tensor(in)); /* maybe again, NULL or forged: ignored */
}

static void act_cmdbuf(input *in) {
    int slot = u8(in) % NCB;
    neat_cmdbuf *cb = pick_cb(in);
    int64_t count;
    double seconds;
    switch (u8(in) % 8) {
    case 0: {
        neat_cmdbuf *made = NULL;
        neat_status st = CALL(neat_cmdbuf_create, (u8(in) & 7) ? dev : dev2, &made);
        if (st != NEAT_OK && made) die("neat_cmdbuf_create", st, "failed but set *out");
        if (made) {
            bury(cbs[slot]);
            neat_cmdbuf_destroy(cbs[slot]);
            cbs[slot] = made;
        }
        break;
    }
    case 1:
    case 2: CALL(neat_cmdbuf_commit, cb); break;
    case 3: CALL(neat_cmdbuf_wait, cb); break;
    case 4: CALL(neat_cmdbuf_reset, cb); break;
    case 5: CALL(neat_cmdbuf_op_count, cb, (u8(in) & 1) ? &count : NULL); break;
    case 6: CALL(neat_cmdbuf_device_time, cb, (u8(in) & 1) ? &seconds : NULL); break;
    default:
        bury(cbs[slot]);
        neat_cmdbuf_destroy(cbs[slot]);
        cbs[slot] = NULL;
        break;
    }
}

/* Host transfers with a count that is right, off by one, zero, negative or huge. */
static void act_transfer(input *in) {
    neat_tensor *t = pick_tensor(in);
    int64_t n = 0, count;
    if (neat_tensor_numel(t, &n) != NEAT_OK) n = 0;
    uint8_t b = u8(in);
    switch (b % 6) {
    case 0:
    case 1: count = n; break;
    case 2: count = n + 1; break;
    case 3: count = n - 1; break;
    case 4: count = 0; break;
    default: count = (b & 8) ? INT64_MAX : -5; break;
    }
    float *buf = (b & 0x80) ? NULL : host;
    if (b & 0x40) {
        for (int64_t i = 0; i < n && i < MAX_ELEMS; i++) host[i] = pick_float(in);
        CALL(neat_tensor_write, t, buf, count);
    } else {
        CALL(neat_tensor_read, t, buf, count);
    }
    int ndim;
    int64_t shape[4];
    CALL(neat_tensor_shape, t, (b & 0x20) ? NULL : &ndim, shape);
    CALL(neat_tensor_numel, t, (b & 0x10) ? NULL : &n);
}

static void act_device(input *in) {
    neat_device *d = (u8(in) & 3) ? dev : dev2;
    neat_device_props props;
    neat_memory_stats stats;
    switch (u8(in) % 6) {
    case 0: CALL(neat_device_synchronize, d); break;
    case 1: CALL(neat_device_set_math_mode, d, (neat_math_mode)pick_int(in)); break;
    case 2: CALL(neat_device_info, d, (u8(in) & 1) ? &props : NULL); break;
    case 3: CALL(neat_device_memory_stats, d, (u8(in) & 1) ? &stats : NULL); break;
    case 4: CALL(neat_device_trim, d); break;
    default: CALL(neat_device_reset_peak, d); break;
    }
}

/* One op of neatml.h with every argument chosen by the input. */
static void act_op(input *in) {
    neat_cmdbuf *cb = pick_cb(in);
    neat_tensor *t[7];
    for (int i = 0; i < 7; i++) t[i] = pick_tensor(in);
    const float f0 = pick_float(in), f1 = pick_float(in);
    const int i0 = pick_int(in), i1 = pick_int(in);
    const neat_activation act = pick_act(in);
    const int null_desc = u8(in) >= 240;
    neat_conv2d_desc cd;
    neat_pool2d_desc pd;
    neat_sgd_params sp = {f0, f1, i0};
    neat_adam_params ap = {f0, f1, pick_float(in), pick_float(in)};
    const neat_tensor *hyper = t[6];
    neat_loss_scale_params lp = {f0, f1, i0};
    const neat_tensor *list[6] = {t[3], t[4], t[5], t[0], t[1], t[2]}; /* n: pick_int, <= 5 */
    switch (u8(in) % 26) {
    case 0: CALL(neat_matmul, cb, t[0], t[1], t[2], f0, f1, i0, i1); break;
    case 1: CALL(neat_matmul_batched, cb, t[0], t[1], t[2], f0, f1, i0, i1); break;
    case 2: CALL(neat_add, cb, t[0], t[1], t[2]); break;
    case 3: CALL(neat_scale, cb, t[0], f0, t[1]); break;
    case 4: CALL(neat_fill, cb, t[0], f0); break;
    case 5: CALL(neat_linear_forward, cb, act, t[0], t[1], t[2], t[3]); break;
    case 6:
        cd = pick_conv(in);
        CALL(neat_conv2d_forward, cb, null_desc ? NULL : &cd, act, t[0], t[1], t[2], t[3]);
        break;
    case 7:
        pd = pick_pool(in);
        CALL(neat_maxpool2d, cb, null_desc ? NULL : &pd, t[0], t[1]);
        break;
    case 8: CALL(neat_sum_all, cb, t[0], t[1]); break;
    case 9: CALL(neat_sum_axis, cb, t[0], i0, t[1]); break;
    case 10: CALL(neat_softmax, cb, t[0], t[1]); break;
    case 11: CALL(neat_activation_forward, cb, act, t[0], t[1]); break;
    case 12: CALL(neat_activation_backward, cb, act, t[0], t[1], t[2], t[3]); break;
    case 13:
        CALL(neat_linear_backward, cb, act, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
             pick_tensor(in), i0);
        break;
    case 14:
        cd = pick_conv(in);
        CALL(neat_conv2d_backward, cb, null_desc ? NULL : &cd, act, t[0], t[1], t[2], t[3], t[4],
             t[5], t[6], pick_tensor(in), i0);
        break;
    case 15:
        pd = pick_pool(in);
        CALL(neat_maxpool2d_backward, cb, null_desc ? NULL : &pd, t[0], t[1], t[2]);
        break;
    case 16: CALL(neat_softmax_backward, cb, t[0], t[1], t[2]); break;
    case 17: CALL(neat_softmax_cross_entropy, cb, t[0], t[1], t[2]); break;
    case 18: CALL(neat_softmax_cross_entropy_backward, cb, t[0], t[1], t[2]); break;
    case 19: CALL(neat_sgd_update, cb, null_desc ? NULL : &sp, hyper, t[0], t[1], t[2]); break;
    case 20:
        CALL(neat_adam_update, cb, null_desc ? NULL : &ap, hyper, t[0], t[1], t[2], t[3]);
        break;
    case 21:
        CALL(neat_sgd_update_mixed, cb, null_desc ? NULL : &sp, hyper, t[5], t[0], t[1], t[2],
             t[3]);
        break;
    case 22:
        CALL(neat_adam_update_mixed, cb, null_desc ? NULL : &ap, hyper, t[5], t[0], t[1], t[2],
             t[3], t[4]);
        break;
    case 23: CALL(neat_loss_scale, cb, t[5], t[0], t[1]); break;
    case 24: CALL(neat_loss_scale_check, cb, null_desc ? NULL : list, i0, t[0]); break;
    default: CALL(neat_loss_scale_update, cb, null_desc ? NULL : &lp, t[0]); break;
    }
}

/* The calls that take no device: names and statuses of any value. */
static void act_names(input *in) {
    const int v = pick_int(in); /* 0..3, or -1, 5 and the edges of int */
    const char *s = neat_status_string((neat_status)(u8(in) < 240 ? (int)u8(in) % 14 - 11 : v));
    if (!s || !*s) die("neat_status_string", NEAT_OK, "gave an empty name");
    const char *name = neat_backend_name((neat_backend)v);
    neat_backend b;
    CALL(neat_backend_from_name, (u8(in) & 1) ? name : "nope", (u8(in) & 1) ? &b : NULL);
    (void)neat_backend_is_built((neat_backend)v);
}

static void (*const actions[])(input *) = {
    act_create, act_create, act_view,     act_destroy_tensor,
    act_cmdbuf, act_cmdbuf, act_transfer, act_device,
    act_op,     act_op,     act_op,       act_op,
    act_names,
};

/* Memory the device's pool holds once its work is done: a destroy never waits, so a tensor
 * a running buffer uses returns to the pool when that work completes. Every buffer is
 * destroyed when this is asked, so synchronize has no failure left to report. */
static int64_t in_use(neat_device *d) {
    neat_memory_stats s;
    if (neat_device_synchronize(d) != NEAT_OK) die("neat_device_synchronize", NEAT_OK, "failed");
    if (neat_device_memory_stats(d, &s) != NEAT_OK)
        die("neat_device_memory_stats", NEAT_OK, "failed");
    return s.in_use;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (neat_device_create(NEAT_BACKEND_CPU, 0, &dev) != NEAT_OK ||
        neat_device_create(NEAT_BACKEND_CPU, 0, &dev2) != NEAT_OK) {
        fprintf(stderr, "fuzz_record: no CPU device: %s\n", neat_last_error());
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    input in = {data, size};
    const int64_t start = in_use(dev), start2 = in_use(dev2);
    ndead = 0;
    memset(dead, 0, sizeof dead);
    while (in.left) actions[u8(&in) % (sizeof actions / sizeof actions[0])](&in);
    /* Everything left, in an order the input's last byte chooses. */
    const int rot = size ? data[size - 1] : 0;
    for (int i = 0; i < NT + NCB; i++) {
        int k = (i + rot) % (NT + NCB);
        if (k < NT) {
            neat_tensor_destroy(tensors[k]);
            tensors[k] = NULL;
        } else {
            neat_cmdbuf_destroy(cbs[k - NT]);
            cbs[k - NT] = NULL;
        }
    }
    if (in_use(dev) != start || in_use(dev2) != start2) {
        fprintf(
            stderr,
            "fuzz_record: in_use %lld and %lld after destroying everything, %lld and %lld before\n",
            (long long)in_use(dev), (long long)in_use(dev2), (long long)start, (long long)start2);
        abort();
    }
    return 0;
}
