/*
 * test_dtype.c — bf16 and f16 tensors (issue 14) on every backend that opens (cpu always;
 * cuda and metal where a device opens, else reported skipped with the reason): the host
 * conversions (round to nearest even, NaN, infinities, f16 overflow and subnormals, raw
 * copies), the device's neat_cast against them bit for bit, a table of ops in half types
 * against the float64 reference of the half-rounded inputs, and the record-time errors
 * (DTYPE_MISMATCH between types, UNSUPPORTED for what a backend does not run in half). The
 * backward ops are checked against the float32 op on the same values (test_backward): bit
 * for bit after the one rounding where the backend runs the half op on float32 copies (the
 * CPU but for its bf16 oneDNN path, Metal; CUDA but for its native paths), within the
 * accumulation bound below where it runs its own half kernels (CUDA's tensor-core GEMMs and
 * convolutions, and the CPU's oneDNN bf16 kernels where NEATML_CPU_BF16 is not 0, for
 * linear/conv backward without activation or with relu: float32 sums in another order;
 * native_layer says which). Metal runs f16
 * and refuses bf16 (no bfloat16 type in MPS's macOS 12 SDK): there every bf16 op must
 * answer UNSUPPORTED when recorded, which is what its bf16 rows check.
 * Every case is committed twice from one recording (on CUDA the second commit is the
 * captured graph's replay) and checked after each.
 *
 * Tolerances from the formats: u = 2^-8 (bf16) or 2^-11 (f16) is the relative error of one
 * rounding of the output (u = 2^-24 for a float32 output); a product or sum of K terms is
 * accumulated in float32: |got - ref| <= u |ref| + (2K + 4) 2^-24 abs, abs = sum |a||b|;
 * transcendental ops add float32 math error 1e-5 |ref| + 4 2^-24; f16 adds 2^-25 absolute
 * (half its smallest subnormal).
 */
#include "harness.h"
#include "reference.h"
#include "../src/core/dtype.h" /* the scalar conversions: the CPU's exact reference */

#include <math.h>
#include <stdlib.h>
#include <string.h>

static neat_device *dev;
static const char *backend; /* dev's backend name: "cpu", "cuda", "metal" */

/* The backend refuses ops on dt (UNSUPPORTED when recorded): Metal's bf16
 * (src/backends/metal/half.m). Host copies of such tensors still work (the core's). */
static int refuses(neat_dtype dt) { return dt == NEAT_BF16 && !strcmp(backend, "metal"); }

static double unit(neat_dtype dt) {
    return dt == NEAT_BF16 ? 0x1p-8 : dt == NEAT_F16 ? 0x1p-11 : 0x1p-24;
}

static uint16_t bits_of(neat_dtype dt, float v) {
    neat_tensor *t;
    uint16_t h = 0xdead;
    int64_t one = 1;
    CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &one, 0, &t), "create");
    CHECK_OK(neat_tensor_write(t, &v, 1), "write");
    CHECK_OK(neat_tensor_read_raw(t, &h, 2), "read_raw");
    neat_tensor_destroy(t);
    return h;
}

static void test_conversions(void) {
    static const struct {
        neat_dtype dt;
        float v;
        uint16_t want;
    } rows[] = {
        {NEAT_BF16, 1.0f, 0x3f80},
        {NEAT_BF16, 1.0f + 0x1p-8f, 0x3f80},            /* tie: to even (down) */
        {NEAT_BF16, 1.0f + 3 * 0x1p-8f, 0x3f82},        /* tie: to even (up) */
        {NEAT_BF16, 1.0f + 0x1p-8f + 0x1p-20f, 0x3f81}, /* past the tie */
        {NEAT_BF16, -0.0f, 0x8000},
        {NEAT_BF16, INFINITY, 0x7f80},
        {NEAT_BF16, -INFINITY, 0xff80},
        {NEAT_BF16, 3.4028235e38f, 0x7f80}, /* FLT_MAX rounds up to inf */
        {NEAT_F16, 1.0f, 0x3c00},
        {NEAT_F16, 1.0f + 0x1p-11f, 0x3c00},
        {NEAT_F16, 1.0f + 3 * 0x1p-11f, 0x3c02},
        {NEAT_F16, 65504.0f, 0x7bff},
        {NEAT_F16, 65519.0f, 0x7bff},
        {NEAT_F16, 65520.0f, 0x7c00}, /* overflow: inf */
        {NEAT_F16, -1e6f, 0xfc00},
        {NEAT_F16, 0x1p-24f, 0x0001}, /* smallest subnormal */
        {NEAT_F16, 0x1p-25f, 0x0000}, /* tie to even: 0 */
        {NEAT_F16, 0x1.8p-25f, 0x0001},
        {NEAT_F16, 0x1.8p-24f, 0x0002},   /* tie to even: 2 */
        {NEAT_F16, 0x1p-14f, 0x0400},     /* smallest normal */
        {NEAT_F16, 0x1.ffcp-15f, 0x0400}, /* rounds up into the normals */
        {NEAT_F16, -0.0f, 0x8000},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint16_t h = bits_of(rows[i].dt, rows[i].v);
        CHECK(h == rows[i].want, "%s(%a) = 0x%04x, want 0x%04x", neat_dtype_name(rows[i].dt),
              rows[i].v, h, rows[i].want);
    }
    uint16_t nb = bits_of(NEAT_BF16, NAN), nh = bits_of(NEAT_F16, -NAN);
    CHECK((nb & 0x7f80) == 0x7f80 && (nb & 0x7f), "bf16(NaN) = 0x%04x is a NaN", nb);
    CHECK((nh & 0x7c00) == 0x7c00 && (nh & 0x3ff), "f16(NaN) = 0x%04x is a NaN", nh);

    /* Every 16-bit pattern: raw write, converting read, raw read back unchanged; the read
     * value converts back to the same bits (NaNs stay NaN). */
    int64_t n = 65536;
    uint16_t *bits = malloc(n * 2), *back = malloc(n * 2);
    float *f = malloc(n * sizeof *f);
    for (int64_t i = 0; i < n; i++) bits[i] = (uint16_t)i;
    for (neat_dtype dt = NEAT_BF16; dt <= NEAT_F16; dt++) {
        neat_tensor *t;
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &n, 0, &t), "create");
        CHECK_OK(neat_tensor_write_raw(t, bits, (size_t)n * 2), "write_raw");
        CHECK_OK(neat_tensor_read(t, f, n), "read");
        memset(back, 0, (size_t)n * 2);
        CHECK_OK(neat_tensor_read_raw(t, back, (size_t)n * 2), "read_raw");
        CHECK(!memcmp(bits, back, (size_t)n * 2), "%s: raw round trip", neat_dtype_name(dt));
        CHECK_OK(neat_tensor_write(t, f, n), "write");
        CHECK_OK(neat_tensor_read_raw(t, back, (size_t)n * 2), "read_raw");
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            if (!isnan(f[i])) {
                bad += back[i] != bits[i];
            } else {
                uint16_t e = dt == NEAT_BF16 ? 0x7f80 : 0x7c00;
                bad += (back[i] & e) != e || !(back[i] & (uint16_t) ~(e | 0x8000));
            }
        CHECK(bad == 0, "%s: 65536 patterns read and written back: %lld differ",
              neat_dtype_name(dt), (long long)bad);
        neat_dtype got;
        CHECK_OK(neat_tensor_dtype(t, &got), "dtype");
        CHECK(got == dt, "neat_tensor_dtype");
        int64_t shape2[2] = {256, 256};
        neat_tensor *v;
        CHECK_OK(neat_tensor_view(t, 2, shape2, &v), "view");
        CHECK_OK(neat_tensor_dtype(v, &got), "dtype of view");
        CHECK(got == dt, "a view keeps the dtype");
        neat_tensor_destroy(v);
        neat_tensor_destroy(t);
    }
    free(bits), free(back), free(f);
    CHECK(neat_dtype_size(NEAT_F32) == 4 && neat_dtype_size(NEAT_BF16) == 2 &&
              neat_dtype_size(NEAT_F16) == 2 && neat_dtype_size((neat_dtype)7) == 0,
          "neat_dtype_size");
}

/* ---- neat_cast on the device against the host conversions, bit for bit -------------------
 * The host's conversions (neat_tensor_write/read, checked against the formats' rules by
 * test_conversions) are the reference. Widening: every 16-bit pattern to float32.
 * Rounding from float32: each finite value of the type, the midpoint to the next one of
 * larger magnitude (a tie: to even) and the floats on either side of that midpoint, and the
 * overflow threshold, infinities and NaN. NaN must stay NaN (its payload may differ). */

static void expect(neat_status st, neat_status want, const char *what, const char *substr);

static int same_bits16(uint16_t a, uint16_t b, neat_dtype dt) {
    uint16_t e = dt == NEAT_BF16 ? 0x7f80 : 0x7c00;
    int nan_a = (a & e) == e && (a & (uint16_t) ~(e | 0x8000)),
        nan_b = (b & e) == e && (b & (uint16_t) ~(e | 0x8000));
    return a == b || (nan_a && nan_b);
}

/* y (f32 or dt, n elements) = cast of x, committed and waited for. */
static void device_cast(neat_tensor *x, neat_tensor *y, const char *what) {
    neat_cmdbuf *cb;
    CHECK_OK(neat_cmdbuf_create(dev, &cb), what);
    CHECK_OK(neat_cast(cb, x, y), what);
    CHECK_OK(neat_cmdbuf_commit(cb), what);
    CHECK_OK(neat_cmdbuf_wait(cb), what);
    neat_cmdbuf_destroy(cb);
}

static void test_device_casts(void) {
    int64_t n = 65536, extra = 8;
    uint16_t *bits = malloc((size_t)n * 2);
    float *host = malloc((size_t)n * sizeof *host), *dev_f = malloc((size_t)n * sizeof *dev_f);
    float *v = malloc((size_t)(4 * n + extra) * sizeof *v);
    uint16_t *got = malloc((size_t)(4 * n + extra) * 2),
             *want = malloc((size_t)(4 * n + extra) * 2);
    for (int64_t i = 0; i < n; i++) bits[i] = (uint16_t)i;
    for (neat_dtype dt = NEAT_BF16; dt <= NEAT_F16; dt++) {
        char what[96];
        snprintf(what, sizeof what, "%s: neat_cast %s <-> f32 on the device", backend,
                 neat_dtype_name(dt));
        neat_tensor *th = NULL, *tf = NULL;
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &n, 0, &th), what);
        CHECK_OK(neat_tensor_create(dev, 1, &n, &tf), what);
        if (refuses(dt)) {
            neat_cmdbuf *cb;
            CHECK_OK(neat_cmdbuf_create(dev, &cb), what);
            expect(neat_cast(cb, th, tf), NEAT_ERR_UNSUPPORTED, what, "bf16 tensors");
            expect(neat_cast(cb, tf, th), NEAT_ERR_UNSUPPORTED, what, "bf16 tensors");
            neat_cmdbuf_destroy(cb);
            neat_tensor_destroy(th), neat_tensor_destroy(tf);
            continue;
        }
        /* widening: every pattern */
        CHECK_OK(neat_tensor_write_raw(th, bits, (size_t)n * 2), what);
        CHECK_OK(neat_tensor_read(th, host, n), what);
        device_cast(th, tf, what);
        CHECK_OK(neat_tensor_read(tf, dev_f, n), what);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&host[i], &dev_f[i], sizeof(float)) && !(isnan(host[i]) && isnan(dev_f[i])))
                bad++, first = first < 0 ? i : first;
        CHECK(bad == 0, "%s: widening: %lld of 65536 patterns differ (first 0x%04llx: %a, want %a)",
              what, (long long)bad, (long long)first, first >= 0 ? dev_f[first] : 0.0,
              first >= 0 ? host[first] : 0.0);
        /* rounding: values, midpoints and their neighbours */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(host[i])) continue;
            v[m++] = host[i];
            if ((i & 0x7fff) == 0x7fff || !isfinite(host[i + 1])) continue;
            float mid = (float)(((double)host[i] + (double)host[i + 1]) / 2); /* exact */
            v[m++] = mid;
            v[m++] = nextafterf(mid, INFINITY);
            v[m++] = nextafterf(mid, -INFINITY);
        }
        const float specials[8] = {65520.0f, -65520.0f, 65519.996f, 3.4028235e38f,
                                   INFINITY, -INFINITY, NAN,        1e-30f};
        for (int i = 0; i < extra; i++) v[m++] = specials[i];
        neat_tensor *sf = NULL, *sh = NULL, *ref = NULL;
        CHECK_OK(neat_tensor_create(dev, 1, &m, &sf), what);
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &m, 0, &sh), what);
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &m, 0, &ref), what);
        CHECK_OK(neat_tensor_write(sf, v, m), what);
        device_cast(sf, sh, what);
        CHECK_OK(neat_tensor_read_raw(sh, got, (size_t)m * 2), what);
        CHECK_OK(neat_tensor_write(ref, v, m), what); /* the host's rounding */
        CHECK_OK(neat_tensor_read_raw(ref, want, (size_t)m * 2), what);
        bad = 0, first = -1;
        for (int64_t i = 0; i < m; i++)
            if (!same_bits16(got[i], want[i], dt)) bad++, first = first < 0 ? i : first;
        CHECK(bad == 0, "%s: rounding: %lld of %lld values differ (first %a: 0x%04x, want 0x%04x)",
              what, (long long)bad, (long long)m, first >= 0 ? v[first] : 0.0,
              first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
        neat_tensor_destroy(sf), neat_tensor_destroy(sh), neat_tensor_destroy(ref);
        neat_tensor_destroy(th), neat_tensor_destroy(tf);
    }
    free(bits), free(host), free(dev_f), free(v), free(got), free(want);
}

/* ---- the CPU's conversions against dtype.h, bit for bit ------------------------------------
 * The CPU's loops (neat_cast, the native half ops) convert with vector instructions
 * (cpu/half.c); they must give dtype.h's bits exactly, NaN payloads included: widening every
 * 16-bit pattern, rounding 2^20 + 7 floats (random bit patterns: NaNs with payloads,
 * denormals, every exponent; random values around f16's and bf16's rounding boundaries and
 * overflow; specials). Odd lengths and over 32768 elements: vector tails and two threads. */
static void test_cpu_conversion_bits(uint64_t seed) {
    if (strcmp(backend, "cpu")) return;
    nt_rng rng = {seed + 77};
    int64_t n = 65536 + 5, m = (1 << 20) + 7;
    uint16_t *bits = malloc((size_t)n * 2), *got = malloc((size_t)m * 2);
    uint32_t *fb = malloc((size_t)(n > m ? n : m) * 4);
    for (int64_t i = 0; i < n; i++) bits[i] = (uint16_t)i;
    /* the last elements (the vector loops' tail): signalling and quiet NaNs of both types */
    static const uint16_t tail16[5] = {0x7c01, 0xfd01, 0x7f81, 0xffc1, 0x0001};
    memcpy(bits + n - 5, tail16, sizeof tail16);
    for (int64_t i = 0; i < m; i++) {
        uint64_t r = nt_next(&rng);
        uint32_t u = (uint32_t)r;
        switch ((r >> 32) % 4) {
        case 0: break; /* any pattern */
        case 1:        /* f16's range: exponents 2^-26 .. 2^16 */
            u = (u & 0x807fffffu) | ((uint32_t)(101 + (r >> 40) % 42) << 23);
            break;
        case 2:
            u = (u & 0x807f0000u) | ((r >> 40) & 1 ? 0x8000u : 0x7fffu) |
                ((uint32_t)((r >> 41) % 256) << 23); /* bf16 ties and near-ties */
            break;
        case 3: u = (u & 0xffffe000u) | ((r >> 40) & 1 ? 0x1000u : 0x0fffu); /* f16 ties */
        }
        fb[i] = u;
    }
    static const uint32_t specials[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
                                        0x7f800001u, 0x7fbfffffu, 0x477ff000u, 0x477fefffu,
                                        0xc77ff000u, 0x33000000u, 0x33000001u, 0x7f7fffffu,
                                        0x00000001u, 0x80000000u, 0x387fe000u, 0x387fffffu};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) fb[i * 997] = specials[i];
    static const uint32_t tail32[4] = {0x7f800001u, 0xffc12345u, 0x477ff000u, 0x33000001u};
    memcpy(fb + m - 4, tail32, sizeof tail32);
    for (neat_dtype dt = NEAT_BF16; dt <= NEAT_F16; dt++) {
        char what[96];
        snprintf(what, sizeof what, "cpu: %s conversions against dtype.h", neat_dtype_name(dt));
        neat_tensor *th = NULL, *tf = NULL, *sf = NULL, *sh = NULL;
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &n, 0, &th), what);
        CHECK_OK(neat_tensor_create(dev, 1, &n, &tf), what);
        CHECK_OK(neat_tensor_write_raw(th, bits, (size_t)n * 2), what);
        device_cast(th, tf, what);
        uint32_t *wide = malloc((size_t)n * 4);
        CHECK_OK(neat_tensor_read_raw(tf, wide, (size_t)n * 4), what);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < n; i++) {
            float w = dt == NEAT_BF16 ? nm_bf16_to_f32(bits[i]) : nm_f16_to_f32(bits[i]);
            if (wide[i] != nm_f32_bits(w)) bad++, first = first < 0 ? i : first;
        }
        CHECK(bad == 0, "%s: widening: %lld of %lld differ (first 0x%04x: 0x%08x)", what,
              (long long)bad, (long long)n, first >= 0 ? bits[first] : 0,
              first >= 0 ? wide[first] : 0);
        free(wide);
        CHECK_OK(neat_tensor_create(dev, 1, &m, &sf), what);
        CHECK_OK(neat_tensor_create_typed(dev, dt, 1, &m, 0, &sh), what);
        CHECK_OK(neat_tensor_write_raw(sf, fb, (size_t)m * 4), what);
        device_cast(sf, sh, what);
        CHECK_OK(neat_tensor_read_raw(sh, got, (size_t)m * 2), what);
        bad = 0, first = -1;
        for (int64_t i = 0; i < m; i++) {
            float f = nm_bits_f32(fb[i]);
            uint16_t want = dt == NEAT_BF16 ? nm_f32_to_bf16(f) : nm_f32_to_f16(f);
            if (got[i] != want) bad++, first = first < 0 ? i : first;
        }
        CHECK(bad == 0, "%s: rounding: %lld of %lld differ (first 0x%08x: 0x%04x)", what,
              (long long)bad, (long long)m, first >= 0 ? fb[first] : 0,
              first >= 0 ? got[first] : 0);
        neat_tensor_destroy(th), neat_tensor_destroy(tf);
        neat_tensor_destroy(sf), neat_tensor_destroy(sh);
    }
    free(bits), free(got), free(fb);
}

/* ---- ops in half types against float64 ------------------------------------------------ */

enum {
    OP_CAST,
    OP_ADD,
    OP_MUL,
    OP_SCALE,
    OP_FILL,
    OP_SUM_ALL,
    OP_SUM_AXIS,
    OP_SOFTMAX,
    OP_ACT,
    OP_MATMUL,
    OP_LINEAR,
    OP_CONV,
    OP_MAXPOOL,
    OP_BMATMUL
};
static const char *const OP_NAMES[] = {"cast",    "add",      "mul",     "scale",         "fill",
                                       "sum_all", "sum_axis", "softmax", "activation",    "matmul",
                                       "linear",  "conv",     "maxpool", "matmul_batched"};

#define NOBIAS 0x100 /* in row.p of linear and conv (p & 0xff: the activation): no bias */
#define K3 0x200     /* in row.p of conv: 3x3, padding 1 (else 5x5 unpadded) */
#define NHWC 0x400   /* in row.p of conv and maxpool: NEAT_LAYOUT_NHWC (values drawn NCHW) */
#define ALPHA 4      /* in row.p of matmul (bits 0-1: the transposes): alpha -2, else 1 */
#define BATCH 3      /* matrices of an OP_BMATMUL row */

/* m, n, k: the sizes (rows, cols, inner); p: trans/act/broadcast as the op reads it. */
typedef struct row {
    int op;
    neat_dtype in, out;
    int64_t m, n, k;
    int p;
    double range; /* inputs uniform in [-range, range) */
} row;

static const row ROWS[] = {
    {OP_CAST, NEAT_F32, NEAT_BF16, 37, 129, 0, 0, 1},
    {OP_CAST, NEAT_F32, NEAT_F16, 37, 129, 0, 0, 1},
    {OP_CAST, NEAT_F32, NEAT_F16, 5, 17, 0, 0, 1e5}, /* overflow to inf */
    {OP_CAST, NEAT_BF16, NEAT_F16, 300, 257, 0, 0, 1},
    {OP_CAST, NEAT_F16, NEAT_BF16, 300, 257, 0, 0, 1},
    {OP_CAST, NEAT_BF16, NEAT_F32, 1, 1, 0, 0, 1},
    {OP_CAST, NEAT_F16, NEAT_F16, 0, 3, 0, 0, 1},
    {OP_CAST, NEAT_F32, NEAT_F32, 7, 9, 0, 0, 1},
    {OP_CAST, NEAT_BF16, NEAT_F32, 13, 31, 0, 0, 1},
    {OP_CAST, NEAT_BF16, NEAT_BF16, 5, 3, 0, 0, 1},
    {OP_CAST, NEAT_F16, NEAT_F32, 13, 31, 0, 0, 1},
    {OP_CAST, NEAT_F16, NEAT_F16, 9, 7, 0, 0, 1},
    {OP_CAST, NEAT_BF16, NEAT_F16, 3, 5, 0, 0, 1e-6}, /* f16 subnormals */
    {OP_CAST, NEAT_F32, NEAT_F16, 3, 5, 0, 0, 1e-6},
    {OP_ADD, NEAT_BF16, NEAT_BF16, 33, 65, 0, 0, 1},
    {OP_ADD, NEAT_F16, NEAT_F16, 33, 65, 0, 1, 1},
    {OP_MUL, NEAT_BF16, NEAT_BF16, 300, 129, 0, 1, 1},
    {OP_MUL, NEAT_F16, NEAT_F16, 7, 3, 0, 0, 1},
    {OP_SCALE, NEAT_BF16, NEAT_BF16, 1, 1000, 0, 0, 1},
    {OP_SCALE, NEAT_F16, NEAT_F16, 1, 1000, 0, 0, 1},
    {OP_FILL, NEAT_BF16, NEAT_BF16, 3, 5, 0, 0, 1},
    {OP_FILL, NEAT_F16, NEAT_F16, 0, 5, 0, 0, 1},
    {OP_FILL, NEAT_F16, NEAT_F16, 7, 9, 0, 0, 1},
    {OP_FILL, NEAT_F32, NEAT_F32, 3, 3, 0, 0, 1},
    {OP_SUM_ALL, NEAT_BF16, NEAT_BF16, 1, 100003, 0, 0, 1},
    {OP_SUM_ALL, NEAT_F16, NEAT_F16, 17, 31, 0, 0, 1},
    {OP_SUM_AXIS, NEAT_BF16, NEAT_BF16, 65, 33, 0, 0, 1},
    {OP_SUM_AXIS, NEAT_F16, NEAT_F16, 129, 7, 0, 0, 1},
    {OP_SOFTMAX, NEAT_BF16, NEAT_BF16, 31, 1000, 0, 0, 4},
    {OP_SOFTMAX, NEAT_F16, NEAT_F16, 31, 10, 0, 0, 4},
    /* CUDA's row-in-registers kernels: 8 halves per load (cols % 8 == 0) on 128 threads,
     * with the row shorter than 4 x 8 x 128 (-inf padding) and exactly that, and on 256
     * threads (rows past 4096); 4 per load (cols % 4 == 0 only), 4 and 8 groups of 4 */
    {OP_SOFTMAX, NEAT_BF16, NEAT_BF16, 600, 2048, 0, 0, 4},
    {OP_SOFTMAX, NEAT_BF16, NEAT_BF16, 5, 4096, 0, 0, 4},
    {OP_SOFTMAX, NEAT_F16, NEAT_F16, 7, 2056, 0, 0, 4},
    {OP_SOFTMAX, NEAT_F16, NEAT_F16, 3, 8192, 0, 0, 4},
    {OP_SOFTMAX, NEAT_BF16, NEAT_BF16, 4, 1028, 0, 0, 4},
    {OP_SOFTMAX, NEAT_F16, NEAT_F16, 3, 4100, 0, 0, 4},
    {OP_ACT, NEAT_BF16, NEAT_BF16, 9, 513, 0, NEAT_ACT_RELU, 3},
    {OP_ACT, NEAT_BF16, NEAT_BF16, 9, 513, 0, NEAT_ACT_GELU, 3},
    {OP_ACT, NEAT_F16, NEAT_F16, 9, 513, 0, NEAT_ACT_SIGMOID, 3},
    {OP_ACT, NEAT_F16, NEAT_F16, 9, 513, 0, NEAT_ACT_TANH, 3},
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 64, 48, 96, 0, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_F32, 17, 33, 257, 3, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 5, 7, 0, 0, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F16, 31, 29, 130, 1, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F32, 1, 1, 1, 2, 1},
    /* sizes that are not multiples of 8 (odd leading dimensions), beta with a half C, k 0 */
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 13, 7, 5, 0, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F16, 3, 5, 7, 3, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 17, 33, 257, 3, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F16, 129, 65, 33, 2, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 5, 7, 0, 3, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F32, 9, 7, 0, 3, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_F32, 64, 64, 64, 1, 1},
    /* m n k >= 2^30: CUDA times cuBLASLt's candidates at the first commit (beta 0) and the
     * replay's graph runs the one it kept; with beta 0.5 (p = 3) the heuristic's first.
     * b transposed and a small m when a is: the float64 reference's loops stay in cache. */
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 1024, 1024, 1024, 2, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F16, 16, 65536, 1024, 3, 1},
    {OP_BMATMUL, NEAT_BF16, NEAT_BF16, 5, 7, 9, 0, 1},
    {OP_BMATMUL, NEAT_F16, NEAT_F32, 3, 5, 7, 3, 1},
    {OP_BMATMUL, NEAT_BF16, NEAT_BF16, 16, 16, 16, 1, 1},
    {OP_BMATMUL, NEAT_F16, NEAT_F16, 7, 3, 5, 2, 1},
    {OP_BMATMUL, NEAT_BF16, NEAT_F32, 8, 8, 8, 3, 1},
    {OP_BMATMUL, NEAT_F16, NEAT_F32, 512, 512, 1368, 2, 1}, /* BATCH m n k >= 2^30: tuned */
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 32, 10, 784, NEAT_ACT_RELU, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_F32, 7, 33, 65, NEAT_ACT_NONE, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 7, 33, 65, NEAT_ACT_TANH, 1},
    /* every activation, with and without a bias, half and float32 outputs */
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 5, 3, 9, NEAT_ACT_NONE, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 5, 3, 9, NEAT_ACT_RELU | NOBIAS, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 7, 33, 65, NEAT_ACT_GELU, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 7, 33, 65, NEAT_ACT_SIGMOID | NOBIAS, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 16, 24, 40, NEAT_ACT_TANH, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 7, 33, 65, NEAT_ACT_NONE | NOBIAS, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 7, 33, 65, NEAT_ACT_RELU, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 9, 5, 3, NEAT_ACT_GELU | NOBIAS, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 9, 5, 3, NEAT_ACT_SIGMOID, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F16, 9, 5, 3, NEAT_ACT_TANH | NOBIAS, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_F32, 7, 33, 65, NEAT_ACT_RELU, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_F32, 7, 33, 65, NEAT_ACT_GELU | NOBIAS, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_F32, 7, 33, 65, NEAT_ACT_TANH, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_F32, 7, 33, 65, NEAT_ACT_SIGMOID | NOBIAS, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F32, 5, 3, 9, NEAT_ACT_NONE | NOBIAS, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F32, 5, 3, 9, NEAT_ACT_RELU | NOBIAS, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F32, 5, 3, 9, NEAT_ACT_SIGMOID, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F32, 5, 3, 9, NEAT_ACT_GELU, 1},
    {OP_LINEAR, NEAT_F16, NEAT_F32, 5, 3, 9, NEAT_ACT_TANH, 1},
    {OP_LINEAR, NEAT_BF16, NEAT_BF16, 4, 6, 0, NEAT_ACT_RELU, 1},        /* in 0: act(b) */
    {OP_LINEAR, NEAT_F16, NEAT_F16, 1024, 1024, 1024, NEAT_ACT_RELU, 1}, /* tuned, RELU_BIAS */
    {OP_CONV, NEAT_BF16, NEAT_BF16, 2, 6, 3, 0, 1}, /* n, k filters, c channels; 12x12, 5x5 */
    {OP_CONV, NEAT_F16, NEAT_F32, 1, 4, 2, 0, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 2, 5, 3, NEAT_ACT_NONE | NOBIAS, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 5, 3, NEAT_ACT_RELU | NOBIAS, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 1, 3, 2, NEAT_ACT_RELU, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 1, 3, 2, NEAT_ACT_TANH, 1},
    {OP_CONV, NEAT_BF16, NEAT_F32, 1, 3, 2, NEAT_ACT_GELU | NOBIAS, 1},
    {OP_CONV, NEAT_F16, NEAT_F32, 2, 8, 8, NEAT_ACT_SIGMOID, 1},
    /* a bias with relu or none into a half output: on CUDA cuDNN's fused call, which must
     * add the bias before the one rounding (a rounding before it fails the bound) */
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 5, 3, NEAT_ACT_NONE, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 6, 3, NEAT_ACT_RELU, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 2, 16, 8, NEAT_ACT_RELU, 1}, /* tensor-core sizes */
    {OP_CONV, NEAT_BF16, NEAT_BF16, 3, 8, 16, NEAT_ACT_NONE, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 32, 16, NEAT_ACT_RELU, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 1, 16, 32, NEAT_ACT_NONE, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 1, 7, 0, NEAT_ACT_RELU, 1}, /* no input channels: act(b) */
    /* 3x3 over 1 to 4 channels: CUDA's conv_small.cu in half storage (relu or none) */
    {OP_CONV, NEAT_BF16, NEAT_BF16, 3, 33, 1, NEAT_ACT_RELU | K3, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 6, 3, NEAT_ACT_NONE | K3, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 2, 5, 4, NEAT_ACT_NONE | NOBIAS | K3, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 1, 7, 2, NEAT_ACT_RELU | NOBIAS | K3, 1},
    {OP_MAXPOOL, NEAT_BF16, NEAT_BF16, 2, 3, 0, 0, 1}, /* n, c; 12x12, 2x2 stride 2 */
    {OP_MAXPOOL, NEAT_F16, NEAT_F16, 1, 5, 0, 0, 1},
    /* NHWC: on CUDA cuDNN's tensor-core convolutions without transposes (fused bias and relu,
     * the bias-only epilogue of C = 0), channel-fastest pooling */
    {OP_CONV, NEAT_BF16, NEAT_BF16, 2, 16, 8, NEAT_ACT_RELU | NHWC, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 32, 16, NEAT_ACT_NONE | NHWC, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 3, 8, 16, NEAT_ACT_NONE | NOBIAS | K3 | NHWC, 1},
    {OP_CONV, NEAT_F16, NEAT_F16, 2, 6, 3, NEAT_ACT_RELU | NOBIAS | K3 | NHWC, 1},
    {OP_CONV, NEAT_F16, NEAT_F32, 2, 8, 8, NEAT_ACT_SIGMOID | NHWC, 1},
    {OP_CONV, NEAT_BF16, NEAT_BF16, 1, 7, 0, NEAT_ACT_RELU | NHWC, 1},
    {OP_MAXPOOL, NEAT_BF16, NEAT_BF16, 2, 3, 0, NHWC, 1},
    {OP_MAXPOOL, NEAT_F16, NEAT_F16, 1, 16, 0, NHWC, 1},
    /* alpha != 1 in half (the CPU's bf16 oneDNN path takes it as an output scale) */
    {OP_MATMUL, NEAT_BF16, NEAT_BF16, 33, 17, 65, ALPHA | 3, 1},
    {OP_MATMUL, NEAT_BF16, NEAT_F32, 9, 12, 40, ALPHA, 1},
    {OP_BMATMUL, NEAT_BF16, NEAT_BF16, 6, 5, 7, ALPHA | 1, 1},
    {OP_MATMUL, NEAT_F16, NEAT_F16, 10, 11, 12, ALPHA | 2, 1},
};

/* The shape of the NHWC tensor holding NCHW shape s. */
static void nhwc_shape(const int64_t *s, int64_t *out) {
    out[0] = s[0], out[1] = s[2], out[2] = s[3], out[3] = s[1];
}

/* At least 2^30 multiply-adds: CUDA chooses such a GEMM's algorithm by timing (matmul.cu). */
static int large_row(const row *r) {
    return (r->op == OP_MATMUL || r->op == OP_BMATMUL || r->op == OP_LINEAR) &&
           (double)r->m * r->n * r->k * (r->op == OP_BMATMUL ? BATCH : 1) >= 0x1p30;
}

/* A tensor of dt with values uniform in [-r, r), and those values as doubles after the
 * rounding to dt. */
static neat_tensor *input_laid(neat_dtype dt, int nd, const int64_t *shape, int nhwc, double r,
                               nt_rng *rng, double **vals) {
    int64_t n = 1, ts[4];
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f),
          *g = malloc((size_t)(n ? n : 1) * sizeof *g);
    for (int64_t i = 0; i < n; i++) f[i] = (float)nt_uniform(rng, -r, r);
    neat_tensor *t = NULL;
    nhwc = nhwc && nd == 4;
    if (nhwc) nhwc_shape(shape, ts), nt_permute_nhwc(shape, f, g, 1);
    CHECK_OK(neat_tensor_create_typed(dev, dt, nd, nhwc ? ts : shape, 0, &t), "create input");
    CHECK_OK(neat_tensor_write(t, nhwc ? g : f, n), "write input");
    CHECK_OK(neat_tensor_read(t, nhwc ? g : f, n), "read input");
    if (nhwc) nt_permute_nhwc(shape, g, f, 0);
    free(g);
    *vals = malloc((size_t)(n ? n : 1) * sizeof **vals);
    for (int64_t i = 0; i < n; i++) (*vals)[i] = f[i];
    free(f);
    return t;
}

static neat_tensor *input(neat_dtype dt, int nd, const int64_t *shape, double r, nt_rng *rng,
                          double **vals) {
    return input_laid(dt, nd, shape, 0, r, rng, vals);
}

static void run_row(const row *r, int idx, uint64_t seed) {
    nt_rng rng = {seed + (uint64_t)idx};
    int64_t m = r->m, n = r->n, k = r->k;
    double *a = NULL, *b = NULL, *bias = NULL;
    neat_tensor *ta = NULL, *tb = NULL, *tbias = NULL, *ty = NULL;
    int64_t ys[4] = {m, n}, yn = m * n;
    int ynd = 2;
    double *ref, *abs;
    int act = NEAT_ACT_NONE, products = 0, smooth = 0, nhwc = 0;
    float *c0 = NULL;
    int64_t terms = 1;
    neat_cmdbuf *cb;
    CHECK_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    neat_status st = NEAT_OK;
    ref_conv_shape cs = {0};
    switch (r->op) {
    case OP_CAST:
    case OP_SCALE:
    case OP_SOFTMAX:
    case OP_ACT:
    case OP_SUM_ALL:
    case OP_SUM_AXIS:
    case OP_FILL:
    case OP_ADD:
    case OP_MUL: {
        int64_t xs[2] = {m, n};
        ta = input(r->in, 2, xs, r->range, &rng, &a);
        if (r->op == OP_ADD || r->op == OP_MUL) {
            int64_t bs[2] = {r->p ? 1 : m, n};
            tb = input(r->in, 2, bs, r->range, &rng, &b);
        }
        if (r->op == OP_SUM_ALL) ynd = 1, ys[0] = 1, yn = 1;
        if (r->op == OP_SUM_AXIS) ynd = 1, ys[0] = n, yn = n;
        break;
    }
    case OP_MATMUL:
    case OP_BMATMUL: { /* p: bit 0 trans_a, bit 1 trans_b; beta 0.5 when both; ALPHA */
        int batched = r->op == OP_BMATMUL;
        int64_t as[3] = {BATCH, r->p & 1 ? k : m, r->p & 1 ? m : k},
                bs[3] = {BATCH, r->p & 2 ? n : k, r->p & 2 ? k : n};
        ta = input(r->in, 2 + batched, as + !batched, r->range, &rng, &a);
        tb = input(r->in, 2 + batched, bs + !batched, r->range, &rng, &b);
        if (batched) ynd = 3, ys[0] = BATCH, ys[1] = m, ys[2] = n, yn = BATCH * m * n;
        products = 1, terms = k;
        break;
    }
    case OP_LINEAR: { /* x [m,k], w [n,k], b [n] */
        int64_t xs[2] = {m, k}, ws[2] = {n, k}, bs[1] = {n};
        ta = input(r->in, 2, xs, r->range, &rng, &a);
        tb = input(r->in, 2, ws, r->range, &rng, &b);
        if (!(r->p & NOBIAS)) tbias = input(r->in, 1, bs, r->range, &rng, &bias);
        act = r->p & 0xff, products = 1, terms = k + 1,
        smooth = act != NEAT_ACT_NONE && act != NEAT_ACT_RELU;
        break;
    }
    case OP_CONV:
    case OP_MAXPOOL: {
        cs = (ref_conv_shape){.n = m,
                              .c = r->op == OP_CONV ? k : n,
                              .h = 12,
                              .w = 12,
                              .k = n,
                              .kh = r->op == OP_CONV ? (r->p & K3 ? 3 : 5) : 2,
                              .kw = r->op == OP_CONV ? (r->p & K3 ? 3 : 5) : 2,
                              .ph = r->op == OP_CONV && r->p & K3,
                              .pw = r->op == OP_CONV && r->p & K3,
                              .sh = r->op == OP_CONV ? 1 : 2,
                              .sw = r->op == OP_CONV ? 1 : 2,
                              .dh = 1,
                              .dw = 1,
                              .groups = 1};
        int64_t xs[4] = {cs.n, cs.c, 12, 12}, ws[4] = {cs.k, cs.c, cs.kh, cs.kw}, bs[1] = {cs.k};
        nhwc = (r->p & NHWC) != 0;
        ta = input_laid(r->in, 4, xs, nhwc, r->range, &rng, &a);
        if (r->op == OP_CONV) {
            tb = input_laid(r->in, 4, ws, nhwc, r->range, &rng, &b);
            if (!(r->p & NOBIAS)) tbias = input(r->in, 1, bs, r->range, &rng, &bias);
            act = r->p & 0xff & ~NHWC, products = 1, terms = cs.c * cs.kh * cs.kw + 1;
            smooth = act != NEAT_ACT_NONE && act != NEAT_ACT_RELU;
        }
        int64_t p = (12 + 2 * cs.ph - cs.kh) / cs.sh + 1;
        ynd = 4, ys[0] = cs.n, ys[1] = cs.k, ys[2] = p, ys[3] = p, yn = cs.n * cs.k * p * p;
        break;
    }
    }
    ref = calloc((size_t)(yn + 1), sizeof *ref), abs = calloc((size_t)(yn + 1), sizeof *abs);
    int64_t yts[4];
    if (nhwc) nhwc_shape(ys, yts);
    CHECK_OK(neat_tensor_create_typed(dev, r->out, ynd, nhwc ? yts : ys, 0, &ty), "create output");
    switch (r->op) {
    case OP_CAST:
        st = neat_cast(cb, ta, ty);
        memcpy(ref, a, (size_t)yn * sizeof *ref);
        break;
    case OP_ADD:
        st = neat_add(cb, ta, tb, ty);
        ref_add(a, b, ref, m, n, r->p);
        break;
    case OP_MUL:
        st = neat_mul(cb, ta, tb, ty);
        ref_mul(a, b, ref, m, n, r->p);
        break;
    case OP_SCALE:
        st = neat_scale(cb, ta, 0.3f, ty);
        ref_scale(a, (double)0.3f, ref, yn);
        break;
    case OP_FILL:
        st = neat_fill(cb, ty, 0.1f);
        for (int64_t i = 0; i < yn; i++) ref[i] = 0.1f;
        break;
    case OP_SUM_ALL:
        st = neat_sum_all(cb, ta, ty), ref[0] = ref_sum_all(a, m * n, abs), terms = m * n;
        break;
    case OP_SUM_AXIS:
        st = neat_sum_axis(cb, ta, 0, ty), ref_sum_axis(a, ref, abs, 1, m, n), terms = m;
        break;
    case OP_SOFTMAX: st = neat_softmax(cb, ta, ty), ref_softmax(a, ref, m, n), smooth = 1; break;
    case OP_ACT:
        st = neat_activation_forward(cb, (neat_activation)r->p, ta, ty);
        ref_activation((neat_activation)r->p, a, ref, yn), smooth = r->p != NEAT_ACT_RELU;
        break;
    case OP_MATMUL:
    case OP_BMATMUL: {
        int both = (r->p & 3) == 3;
        float alpha = r->p & ALPHA ? -2.0f : 1.0f;
        if (both) { /* c's values, which the op reads (beta 0.5), kept for the replay */
            c0 = malloc((size_t)(yn + 1) * sizeof *c0);
            for (int64_t i = 0; i < yn; i++) c0[i] = (float)nt_uniform(&rng, -1, 1);
            CHECK_OK(neat_tensor_write(ty, c0, yn), "write c");
            CHECK_OK(neat_tensor_read(ty, c0, yn), "read c");
            for (int64_t i = 0; i < yn; i++) ref[i] = c0[i];
        }
        if (r->op == OP_BMATMUL) {
            st = neat_matmul_batched(cb, ta, tb, ty, alpha, both ? 0.5f : 0.0f, r->p & 1,
                                     (r->p >> 1) & 1);
            ref_matmul_batched(a, b, ref, abs, BATCH, m, n, k, alpha, both ? 0.5 : 0.0, r->p & 1,
                               (r->p >> 1) & 1);
        } else {
            st = neat_matmul(cb, ta, tb, ty, alpha, both ? 0.5f : 0.0f, r->p & 1, (r->p >> 1) & 1);
            ref_matmul(a, b, ref, abs, m, n, k, alpha, both ? 0.5 : 0.0, r->p & 1, (r->p >> 1) & 1);
        }
        break;
    }
    case OP_LINEAR:
        st = neat_linear_forward(cb, (neat_activation)act, ta, tb, tbias, ty);
        ref_linear_forward(a, b, bias, (neat_activation)act, ref, NULL, abs, m, k, n);
        break;
    case OP_CONV: {
        neat_conv2d_desc d = neat_conv2d_desc_make(cs.kh, cs.kw, 1, cs.ph);
        d.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
        st = neat_conv2d_forward(cb, &d, (neat_activation)act, ta, tb, tbias, ty);
        ref_conv2d_forward(&cs, a, b, bias, (neat_activation)act, ref, NULL, abs);
        break;
    }
    case OP_MAXPOOL: {
        neat_pool2d_desc d = neat_pool2d_desc_make(2, 2, 2, 0);
        d.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
        st = neat_maxpool2d(cb, &d, ta, ty);
        ref_maxpool2d(&cs, a, ref);
        break;
    }
    }
    char what[200];
    snprintf(what, sizeof what, "%s row %d: %s %s -> %s %lldx%lldx%lld p=%#x (seed %llu)", backend,
             idx, OP_NAMES[r->op], neat_dtype_name(r->in), neat_dtype_name(r->out), (long long)m,
             (long long)n, (long long)k, r->p, (unsigned long long)(seed + (uint64_t)idx));
    if (refuses(r->in) || refuses(r->out)) {
        CHECK_STATUS(st, NEAT_ERR_UNSUPPORTED, what);
        CHECK(strstr(neat_last_error(), "bf16 tensors") != NULL, "%s: message \"%s\"", what,
              neat_last_error());
    } else {
        CHECK_OK(st, what);
    }
    /* gelu's slope reaches 1.13: an error of its argument grows by as much */
    double slope = act == NEAT_ACT_GELU ? 1.2 : 1.0;
    float *got = malloc((size_t)(yn + 1) * sizeof *got), *laid = NULL;
    if (nhwc) laid = malloc((size_t)(yn + 1) * sizeof *laid);
    int passes = st == NEAT_OK ? 2 : 0;
    for (int pass = 0; pass < passes; pass++) { /* the commit, then the replay */
        if (pass == 1 && c0) CHECK_OK(neat_tensor_write(ty, c0, yn), what);
        CHECK_OK(neat_cmdbuf_commit(cb), what);
        CHECK_OK(neat_cmdbuf_wait(cb), what);
        CHECK_OK(neat_tensor_read(ty, nhwc ? laid : got, yn), what);
        if (nhwc) nt_permute_nhwc(ys, laid, got, 0);
        double u = unit(r->out), worst = 0;
        int64_t bad = 0;
        for (int64_t i = 0; i < yn; i++) {
            double want = ref[i];
            if (r->out != NEAT_F32)
                want = (double)(r->out == NEAT_F16 && fabs(want) >= 65520 ? copysign(INFINITY, want)
                                                                          : want);
            double tol = u * fabs(ref[i]) + (r->out == NEAT_F16 ? 0x1p-25 : 0);
            if (products || r->op == OP_SUM_ALL || r->op == OP_SUM_AXIS)
                tol += slope * (2.0 * (double)terms + 4) * 0x1p-24 *
                       (products ? abs[i] : abs[i] + fabs(ref[i]));
            if (smooth) tol += 1e-5 * fabs(ref[i]) + 4 * 0x1p-24;
            double err =
                isinf(want) ? (got[i] == want ? 0 : INFINITY) : fabs((double)got[i] - want);
            if (!(err <= tol)) bad++;
            if (err - tol > worst || isnan(err)) worst = err - tol;
        }
        CHECK(bad == 0, "%s%s: %lld of %lld elements outside the tolerance (worst excess %g)", what,
              pass ? " (replay)" : "", (long long)bad, (long long)yn, worst);
    }
    free(got), free(laid), free(ref), free(abs), free(a), free(b), free(bias), free(c0);
    neat_tensor_destroy(ta), neat_tensor_destroy(tb), neat_tensor_destroy(tbias);
    neat_tensor_destroy(ty);
    neat_cmdbuf_destroy(cb);
}

/* ---- backward ops: half against float32 --------------------------------------------------
 * A half op run on float32 copies runs the float32 op on the exact float32 values of its
 * inputs (and, when it accumulates, of its outputs) and rounds each output once. So its
 * result must equal, bit for bit, the float32 op's result on the same values rounded to the
 * half type (the float32 ops are checked against float64 by test_conformance; the rounding
 * by test_conversions above). A native half op (CUDA's tensor-core GEMMs and cuDNN
 * convolutions: linear and conv backward without activation or with relu) sums in float32
 * in its own order: there each output must lie within u |f| + (2K + 4) 2^-24 abs (+ 2^-25
 * for f16) of the float32 result f, abs = the float32 op run on the inputs' magnitudes (the
 * sum of |terms|; with relu's mask dropped, which only makes it larger). */

typedef struct pair {
    neat_tensor *h, *f; /* the half tensor and a float32 tensor of the same values */
    neat_tensor *a;     /* a float32 tensor of their magnitudes */
    float *v;           /* the values, written again before the replay */
    int64_t n;
} pair;

static pair pair_make(neat_dtype dt, int nd, const int64_t *shape, double r, nt_rng *rng) {
    double *v = NULL;
    pair p = {input(dt, nd, shape, r, rng, &v), NULL, NULL, NULL, 1};
    for (int i = 0; i < nd; i++) p.n *= shape[i];
    p.v = malloc((size_t)(p.n ? p.n : 1) * sizeof *p.v);
    float *mag = malloc((size_t)(p.n ? p.n : 1) * sizeof *mag);
    for (int64_t i = 0; i < p.n; i++) p.v[i] = (float)v[i], mag[i] = fabsf(p.v[i]);
    CHECK_OK(neat_tensor_create(dev, nd, shape, &p.f), "create f32 twin");
    CHECK_OK(neat_tensor_write(p.f, p.v, p.n), "write f32 twin");
    CHECK_OK(neat_tensor_create(dev, nd, shape, &p.a), "create magnitude twin");
    CHECK_OK(neat_tensor_write(p.a, mag, p.n), "write magnitude twin");
    free(mag), free(v);
    return p;
}

/* Every tensor of the three back to its first values (exact: they are the half's). */
static void pair_reset(pair p) {
    float *mag = malloc((size_t)(p.n ? p.n : 1) * sizeof *mag);
    for (int64_t i = 0; i < p.n; i++) mag[i] = fabsf(p.v[i]);
    CHECK_OK(neat_tensor_write(p.h, p.v, p.n), "rewrite half");
    CHECK_OK(neat_tensor_write(p.f, p.v, p.n), "rewrite f32 twin");
    CHECK_OK(neat_tensor_write(p.a, mag, p.n), "rewrite magnitude twin");
    free(mag);
}

/* The values of p as a relu's output: its negative values 0, so that relu's backward meets
 * y == 0 (where act' is 0) as often as a trained layer does. */
static void pair_relu(pair *p) {
    for (int64_t i = 0; i < p->n; i++) p->v[i] = p->v[i] < 0 ? 0.0f : p->v[i];
    pair_reset(*p);
}

/* Native: p.h within the accumulation bound of p.f (terms: the longest sum). */
static void pair_check_bound(pair p, neat_dtype dt, int64_t terms, const char *what) {
    float *got = malloc((size_t)(p.n ? p.n : 1) * sizeof *got);
    float *want = malloc((size_t)(p.n ? p.n : 1) * sizeof *want);
    float *mag = malloc((size_t)(p.n ? p.n : 1) * sizeof *mag);
    CHECK_OK(neat_tensor_read(p.h, got, p.n), what);
    CHECK_OK(neat_tensor_read(p.f, want, p.n), what);
    CHECK_OK(neat_tensor_read(p.a, mag, p.n), what);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < p.n; i++) {
        double tol = unit(dt) * fabs((double)want[i]) + (dt == NEAT_F16 ? 0x1p-25 : 0) +
                     (2.0 * (double)terms + 4) * 0x1p-24 * (double)mag[i];
        if (!(fabs((double)got[i] - (double)want[i]) <= tol)) bad++, first = first < 0 ? i : first;
    }
    CHECK(bad == 0,
          "%s (%s, native): %lld of %lld elements outside the bound of the float32 result "
          "(first [%lld]: %.9g, want %.9g)",
          what, neat_dtype_name(dt), (long long)bad, (long long)p.n, (long long)first,
          first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
    free(got), free(want), free(mag);
}

/* p.h must hold round(p.f): both read back as float32, the float32 values rounded through a
 * scratch half tensor. */
static void pair_check(pair p, neat_dtype dt, const char *what) {
    int64_t shape[NEAT_MAX_DIMS];
    int nd;
    CHECK_OK(neat_tensor_shape(p.f, &nd, shape), what);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    float *want = malloc((size_t)(n ? n : 1) * sizeof *want);
    neat_tensor *r = NULL;
    CHECK_OK(neat_tensor_read(p.h, got, n), what);
    CHECK_OK(neat_tensor_read(p.f, want, n), what);
    CHECK_OK(neat_tensor_create_typed(dev, dt, nd, shape, 0, &r), what);
    CHECK_OK(neat_tensor_write(r, want, n), what);
    CHECK_OK(neat_tensor_read(r, want, n), what);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) && !(isnan(got[i]) && isnan(want[i])))
            bad++, first = first < 0 ? i : first;
    CHECK(bad == 0,
          "%s (%s): %lld of %lld elements differ from the rounded float32 result "
          "(first [%lld]: %.9g, want %.9g)",
          what, neat_dtype_name(dt), (long long)bad, (long long)n, (long long)first,
          first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
    neat_tensor_destroy(r);
    free(got), free(want);
}

static void pair_free(pair p) {
    neat_tensor_destroy(p.h);
    neat_tensor_destroy(p.f);
    neat_tensor_destroy(p.a);
    free(p.v);
}

/* Records op on the half tensors, on their float32 twins and on the magnitudes
 * (record(cb, t, which, ctx): which = HALF, F32, MAG), commits twice (the replay from the
 * first values again) and checks each output pair after each: bit for bit, or within the
 * bound of `terms` terms when `native` (the backend's own half kernels). */
enum { F32 = 0, HALF = 1, MAG = 2 };
typedef neat_status (*record_fn)(neat_cmdbuf *cb, pair *t, int which, const void *ctx);

static void run_pairs(const char *name, neat_dtype dt, pair *t, int nt, int first_out,
                      record_fn record, const void *ctx, int native, int64_t terms) {
    char what[160];
    snprintf(what, sizeof what, "%s %s", backend, name);
    neat_cmdbuf *cb;
    CHECK_OK(neat_cmdbuf_create(dev, &cb), what);
    if (refuses(dt)) {
        CHECK_STATUS(record(cb, t, HALF, ctx), NEAT_ERR_UNSUPPORTED, what);
        CHECK(strstr(neat_last_error(), "bf16 tensors") != NULL, "%s: message \"%s\"", what,
              neat_last_error());
        neat_cmdbuf_destroy(cb);
        return;
    }
    CHECK_OK(record(cb, t, HALF, ctx), what);
    CHECK_OK(record(cb, t, F32, ctx), what);
    if (native) CHECK_OK(record(cb, t, MAG, ctx), what);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            for (int i = first_out; i < nt; i++) pair_reset(t[i]);
            snprintf(what, sizeof what, "%s %s (replay)", backend, name);
        }
        CHECK_OK(neat_cmdbuf_commit(cb), what);
        CHECK_OK(neat_cmdbuf_wait(cb), what);
        for (int i = first_out; i < nt; i++)
            if (native)
                pair_check_bound(t[i], dt, terms, what);
            else
                pair_check(t[i], dt, what);
    }
    neat_cmdbuf_destroy(cb);
}

#define H(i) (which == HALF ? t[i].h : which == MAG ? t[i].a : t[i].f)

static neat_status rec_act(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    neat_activation act = *(const neat_activation *)ctx; /* x for gelu, else y */
    int gelu = act == NEAT_ACT_GELU;
    return neat_activation_backward(cb, act, gelu ? H(0) : NULL, gelu ? NULL : H(0), H(1), H(2));
}

static neat_status rec_softmax(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    (void)ctx;
    return neat_softmax_backward(cb, H(0), H(1), H(2));
}

/* ctx: NULL, or an int: 1 for NHWC tensors */
static neat_status rec_pool(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    neat_pool2d_desc d = neat_pool2d_desc_make(2, 2, 2, 0);
    if (ctx && *(const int *)ctx) d.layout = NEAT_LAYOUT_NHWC;
    return neat_maxpool2d_backward(cb, &d, H(0), H(1), H(2));
}

typedef struct layer_ctx {
    neat_activation act;
    int accumulate;
    int64_t n; /* linear: the rows (0: 9); conv: 1 without dx (CUDA's conv_small.cu) */
    int nhwc;  /* conv: NEAT_LAYOUT_NHWC */
} layer_ctx;

/* t: x, w, b, y, dy, dx, dw, db. On the magnitudes without relu's mask (MAG is used for
 * no activation and relu only). */
static neat_status rec_linear(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    const layer_ctx *c = ctx;
    return neat_linear_backward(cb, which == MAG ? NEAT_ACT_NONE : c->act, H(0), H(1), H(2), H(3),
                                H(4), H(5), H(6), H(7), c->accumulate);
}

static neat_status rec_conv(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    const layer_ctx *c = ctx;
    neat_conv2d_desc d = neat_conv2d_desc_make(3, 3, 1, 1);
    if (c->nhwc) d.layout = NEAT_LAYOUT_NHWC;
    return neat_conv2d_backward(cb, &d, which == MAG ? NEAT_ACT_NONE : c->act, H(0), H(1), H(2),
                                H(3), H(4), c->n ? NULL : H(5), H(6), H(7), c->accumulate);
}

/* Forward ops on half tensors against the float32 op on the same values, bit for bit (the
 * CPU runs them natively, in chunks: elementwise.c, softmax.c). ctx: the op and its form. */
typedef struct fwd_ctx {
    int op; /* OP_ADD, OP_MUL, OP_SCALE, OP_FILL, OP_ACT, OP_SOFTMAX */
    int p;  /* OP_ACT: the activation; OP_ADD/OP_MUL: 1 in place (out is a) */
} fwd_ctx;

static neat_status rec_forward(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    const fwd_ctx *c = ctx;
    switch (c->op) {
    case OP_ADD: return neat_add(cb, H(0), H(1), c->p ? H(0) : H(2));
    case OP_MUL: return neat_mul(cb, H(0), H(1), c->p ? H(0) : H(2));
    case OP_SCALE: return neat_scale(cb, H(0), 0.3f, H(1));
    case OP_FILL: return neat_fill(cb, H(1), 0.1f);
    case OP_ACT: return neat_activation_forward(cb, (neat_activation)c->p, H(0), H(1));
    default: return neat_softmax(cb, H(0), H(1));
    }
}

/* Some of p's values replaced by infinities, NaN, -0, the type's extremes and subnormals
 * (as the half type holds them), and the pair rewritten. */
static void pair_specials(pair *p, neat_dtype dt, nt_rng *rng) {
    const float sp[] = {INFINITY, -INFINITY, NAN,       -0.0f,     65504.0f, -65504.0f,
                        3e38f,    0x1p-24f,  -0x1p-20f, 0x1p-130f, 88.0f,    -104.0f};
    for (int64_t i = 0; i < p->n; i++)
        if (nt_next(rng) % 16 == 0) p->v[i] = sp[nt_next(rng) % (sizeof sp / sizeof sp[0])];
    CHECK_OK(neat_tensor_write(p->h, p->v, p->n), "specials");
    CHECK_OK(neat_tensor_read(p->h, p->v, p->n), "specials"); /* as the half type holds them */
    (void)dt;
    pair_reset(*p);
}

/* ctx: the axis, -1 for neat_sum_all. */
static neat_status rec_sum(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    int axis = *(const int *)ctx;
    return axis < 0 ? neat_sum_all(cb, H(0), H(1)) : neat_sum_axis(cb, H(0), axis, H(1));
}

/* Sums of half tensors against the float32 sums of the same values, bit for bit: on the CPU
 * the same double sums in the same order (reduce.c). Whole tensors of several blocks and
 * two threads, with tails; rows (few and long: every thread on each row; many: a thread a
 * row); columns, of a 2-d and a 3-d tensor. */
static void test_sum_pairs(uint64_t seed) {
    static const struct {
        int nd;
        int64_t shape[3];
        int axis;
    } cases[] = {{2, {1, 100003}, -1}, {2, {3, 1029}, -1}, {2, {1, 64}, -1},
                 {2, {2, 40001}, 1},   {2, {300, 129}, 1}, {2, {65, 33}, 0},
                 {2, {129, 300}, 0},   {3, {5, 17, 9}, 1}, {2, {3, 0}, 1}};
    for (int di = 0; di < 2; di++) {
        neat_dtype dt = di ? NEAT_F16 : NEAT_BF16;
        nt_rng rng = {seed + 3000 + (uint64_t)di};
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            int nd = cases[k].nd, axis = cases[k].axis;
            int64_t ys[3], yn = 0;
            if (axis < 0) ys[yn++] = 1;
            for (int i = 0; i < nd; i++)
                if (axis >= 0 && i != axis) ys[yn++] = cases[k].shape[i];
            pair t[2] = {pair_make(dt, nd, cases[k].shape, 1, &rng),
                         pair_make(dt, (int)yn, ys, 1, &rng)};
            char what[96];
            snprintf(what, sizeof what, "sum axis %d of %lldx%lldx%lld", axis,
                     (long long)cases[k].shape[0], (long long)cases[k].shape[1],
                     nd > 2 ? (long long)cases[k].shape[2] : 1LL);
            run_pairs(what, dt, t, 2, 1, rec_sum, &axis, 0, 0);
            pair_free(t[0]), pair_free(t[1]);
        }
    }
}

static neat_status rec_pool_fwd(neat_cmdbuf *cb, pair *t, int which, const void *ctx) {
    neat_pool2d_desc d = neat_pool2d_desc_make(2, 2, 2, 0);
    (void)ctx;
    return neat_maxpool2d(cb, &d, H(0), H(1));
}

/* 2x2 maxpool forward and backward on half tensors against float32, bit for bit, with
 * infinities, NaN and -0 in x and dy: long rows (pieces of 512 outputs, a tail), odd
 * heights and widths, two threads, short rows gathered many to a chunk. */
static void test_pool_pairs(uint64_t seed) {
    static const int64_t shapes[5][4] = {
        {1, 1, 2, 1030}, {1, 1, 3, 2051}, {2, 3, 64, 101}, {2, 3, 9, 7}, {3, 2, 28, 28}};
    for (int di = 0; di < 2; di++) {
        neat_dtype dt = di ? NEAT_F16 : NEAT_BF16;
        nt_rng rng = {seed + 4000 + (uint64_t)di};
        for (int k = 0; k < 5; k++) {
            const int64_t *xs = shapes[k];
            int64_t ys[4] = {xs[0], xs[1], xs[2] / 2, xs[3] / 2};
            pair t[3] = {pair_make(dt, 4, xs, 2, &rng), pair_make(dt, 4, ys, 2, &rng),
                         pair_make(dt, 4, xs, 2, &rng)};
            pair_specials(&t[0], dt, &rng);
            char what[96];
            snprintf(what, sizeof what, "maxpool forward %lldx%lldx%lldx%lld", (long long)xs[0],
                     (long long)xs[1], (long long)xs[2], (long long)xs[3]);
            run_pairs(what, dt, t, 2, 1, rec_pool_fwd, NULL, 0, 0);
            pair_specials(&t[1], dt, &rng); /* dy */
            snprintf(what, sizeof what, "maxpool backward %lldx%lldx%lldx%lld", (long long)xs[0],
                     (long long)xs[1], (long long)xs[2], (long long)xs[3]);
            run_pairs(what, dt, t, 3, 2, rec_pool, NULL, 0, 0);
            for (int i = 0; i < 3; i++) pair_free(t[i]);
        }
    }
}

static void test_forward_pairs(uint64_t seed) {
    static const neat_dtype dts[] = {NEAT_BF16, NEAT_F16};
    /* rows x cols: odd (vector tails, chunk tails), over 32768 (two threads), one long row
     * (a broadcast split over threads) */
    static const int64_t shapes[5][2] = {{7, 129}, {300, 129}, {1, 40001}, {3, 1029}, {2, 8192}};
    for (int di = 0; di < 2; di++) {
        neat_dtype dt = dts[di];
        nt_rng rng = {seed + 2000 + (uint64_t)di};
        char what[128];
        for (int s = 0; s < 5; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            int64_t xs[2] = {rows, cols}, bs[2] = {1, cols};
            for (int v = 0; v < 12; v++) {
                /* v: 0-3 add/mul plain and broadcast, 4 add in place, 5 scale, 6 fill,
                 * 7-10 the activations, 11 softmax */
                fwd_ctx c = {v < 4    ? (v & 1 ? OP_MUL : OP_ADD)
                             : v == 4 ? OP_ADD
                             : v == 5 ? OP_SCALE
                             : v == 6 ? OP_FILL
                             : v < 11 ? OP_ACT
                                      : OP_SOFTMAX,
                             v == 4};
                static const neat_activation acts[] = {NEAT_ACT_RELU, NEAT_ACT_SIGMOID,
                                                       NEAT_ACT_TANH, NEAT_ACT_GELU};
                if (c.op == OP_ACT) c.p = acts[v - 7];
                int binary = c.op == OP_ADD || c.op == OP_MUL, bcast = v == 2 || v == 3;
                pair t[3];
                t[0] = pair_make(dt, 2, xs, 4, &rng);
                t[1] = pair_make(dt, 2, binary && bcast ? bs : xs, 4, &rng);
                t[2] = pair_make(dt, 2, xs, 4, &rng);
                if (c.op != OP_SOFTMAX) pair_specials(&t[0], dt, &rng);
                if (binary) pair_specials(&t[1], dt, &rng);
                snprintf(what, sizeof what, "forward %s p %d %s %lldx%lld", OP_NAMES[c.op], c.p,
                         bcast ? "broadcast" : "", (long long)rows, (long long)cols);
                int nt = binary && !c.p ? 3 : 2, first = binary ? (c.p ? 0 : 2) : 1;
                run_pairs(what, dt, t, nt, first, rec_forward, &c, 0, 0);
                for (int i = 0; i < 3; i++) pair_free(t[i]);
            }
        }
    }
}

/* Does this backend run the layer's backward on half tensors with its own kernels, whose
 * float32 sums may take another order than the float32 op's? CUDA: without activation or
 * with relu (src/backends/cuda/half.cu, cuda_native_half); the CPU: the same on bf16 where
 * its oneDNN bf16 path may be on (src/backends/cpu/half.c: on by default on a CPU with bf16
 * instructions, forced by NEATML_CPU_BF16=2; NEATML_CPU_BF16=0 keeps the float32 copies,
 * bit for bit). */
static int native_layer(neat_dtype dt, neat_activation act) {
    if (act != NEAT_ACT_NONE && act != NEAT_ACT_RELU) return 0;
    if (!strcmp(backend, "cuda")) return 1;
    const char *env = getenv("NEATML_CPU_BF16");
    return !strcmp(backend, "cpu") && dt == NEAT_BF16 && !(env && !strcmp(env, "0"));
}
#undef H

static void test_backward(uint64_t seed) {
    static const neat_dtype dts[] = {NEAT_BF16, NEAT_F16};
    for (int di = 0; di < 2; di++) {
        neat_dtype dt = dts[di];
        nt_rng rng = {seed + 1000 + (uint64_t)di};
        char what[96];
        static const neat_activation acts[] = {NEAT_ACT_RELU, NEAT_ACT_GELU, NEAT_ACT_SIGMOID,
                                               NEAT_ACT_TANH};
        int64_t s2[2] = {7, 129};
        for (int a = 0; a < 4; a++) {
            pair t[3] = {pair_make(dt, 2, s2, 2, &rng), pair_make(dt, 2, s2, 1, &rng),
                         pair_make(dt, 2, s2, 1, &rng)};
            snprintf(what, sizeof what, "activation backward %d", (int)acts[a]);
            run_pairs(what, dt, t, 3, 2, rec_act, &acts[a], 0, 0);
            for (int i = 0; i < 3; i++) pair_free(t[i]);
        }
        /* the CPU: native rows up to 8192 columns, float32 copies beyond (the long rows on
         * the CPU only: bit for bit is the CPU's promise) */
        static const int64_t soft[3][2] = {{7, 129}, {2, 8192}, {3, 8193}};
        for (int k = 0; k < (strcmp(backend, "cpu") ? 1 : 3); k++) {
            int64_t ss[2] = {soft[k][0], soft[k][1]};
            pair t[3] = {pair_make(dt, 2, ss, 1, &rng), pair_make(dt, 2, ss, 1, &rng),
                         pair_make(dt, 2, ss, 1, &rng)};
            snprintf(what, sizeof what, "softmax backward %lldx%lld", (long long)ss[0],
                     (long long)ss[1]);
            run_pairs(what, dt, t, 3, 2, rec_softmax, NULL, 0, 0);
            for (int i = 0; i < 3; i++) pair_free(t[i]);
        }
        /* W of 8, 12, 14 and 7: CUDA's one-pass 2x2 kernel with 8, 4 and 2 columns a
         * thread, and the two-pass one (odd sizes) */
        static const int64_t pool_hw[4][2] = {{8, 8}, {12, 12}, {6, 14}, {9, 7}};
        for (int k = 0; k < 4; k++) {
            int64_t h = pool_hw[k][0], w = pool_hw[k][1];
            int64_t xs[4] = {2, 3, h, w}, ys[4] = {2, 3, h / 2, w / 2};
            pair t[3] = {pair_make(dt, 4, xs, 1, &rng), pair_make(dt, 4, ys, 1, &rng),
                         pair_make(dt, 4, xs, 1, &rng)};
            snprintf(what, sizeof what, "maxpool backward %lldx%lld", (long long)h, (long long)w);
            run_pairs(what, dt, t, 3, 2, rec_pool, NULL, 0, 0);
            for (int i = 0; i < 3; i++) pair_free(t[i]);
        }
        /* tanh, replacing; gelu (b read), accumulating; then the native cases on CUDA: none
         * and relu, replacing and accumulating (replacing: db by the dw GEMM's BGRADB
         * epilogue in the half type; accumulating: the channel sum), and long columns for
         * db: 4096 rows, replacing and accumulating */
        static const layer_ctx layers[] = {
            {NEAT_ACT_TANH, 0, 0, 0},    {NEAT_ACT_GELU, 1, 0, 0},    {NEAT_ACT_NONE, 0, 0, 0},
            {NEAT_ACT_NONE, 1, 0, 0},    {NEAT_ACT_RELU, 0, 0, 0},    {NEAT_ACT_RELU, 1, 0, 0},
            {NEAT_ACT_SIGMOID, 1, 0, 0}, {NEAT_ACT_NONE, 0, 4096, 0}, {NEAT_ACT_RELU, 0, 4096, 0},
            {NEAT_ACT_NONE, 1, 4096, 0}};
        for (int v = 0; v < 10; v++) {
            layer_ctx c = layers[v];
            int64_t n = c.n ? c.n : 9, in = 33, out = 17;
            int64_t xs[2] = {n, in}, ws[2] = {out, in}, bs[1] = {out}, ys[2] = {n, out};
            pair t[8] = {pair_make(dt, 2, xs, 1, &rng), pair_make(dt, 2, ws, 0.5, &rng),
                         pair_make(dt, 1, bs, 1, &rng), pair_make(dt, 2, ys, 1, &rng),
                         pair_make(dt, 2, ys, 1, &rng), pair_make(dt, 2, xs, 1, &rng),
                         pair_make(dt, 2, ws, 1, &rng), pair_make(dt, 1, bs, 1, &rng)};
            if (c.act == NEAT_ACT_RELU) pair_relu(&t[3]);
            snprintf(what, sizeof what, "linear backward act %d accumulate %d n %lld", (int)c.act,
                     c.accumulate, (long long)n);
            run_pairs(what, dt, t, 8, 5, rec_linear, &c, native_layer(dt, c.act),
                      (n > out ? n : out) + 1); /* the longest sum, + the old value */
            for (int i = 0; i < 8; i++) pair_free(t[i]);
        }
        static const layer_ctx convs[] = {{NEAT_ACT_RELU, 0, 0, 0}, {NEAT_ACT_GELU, 1, 0, 0},
                                          {NEAT_ACT_NONE, 0, 0, 0}, {NEAT_ACT_NONE, 1, 0, 0},
                                          {NEAT_ACT_RELU, 1, 0, 0}, {NEAT_ACT_TANH, 0, 0, 0},
                                          {NEAT_ACT_RELU, 0, 1, 0}, {NEAT_ACT_NONE, 0, 1, 0}};
        /* NCHW x [2,3,6,6], w [4,3,3,3] (3 channels: CUDA's conv_small.cu without dx); then
         * NHWC, 8 channels and 16 filters (tensor-core sizes): x [2,6,6,8], w [16,3,3,8] */
        static const int64_t conv_shapes[2][4][4] = {
            {{2, 3, 6, 6}, {4, 3, 3, 3}, {4}, {2, 4, 6, 6}},
            {{2, 6, 6, 8}, {16, 3, 3, 8}, {16}, {2, 6, 6, 16}}};
        for (int v = 0; v < 16; v++) {
            layer_ctx c = convs[v % 8];
            c.nhwc = v / 8;
            const int64_t *xs = conv_shapes[c.nhwc][0], *ws = conv_shapes[c.nhwc][1],
                          *bs = conv_shapes[c.nhwc][2], *ys = conv_shapes[c.nhwc][3];
            pair t[8] = {pair_make(dt, 4, xs, 1, &rng), pair_make(dt, 4, ws, 0.5, &rng),
                         pair_make(dt, 1, bs, 1, &rng), pair_make(dt, 4, ys, 1, &rng),
                         pair_make(dt, 4, ys, 1, &rng), pair_make(dt, 4, xs, 1, &rng),
                         pair_make(dt, 4, ws, 1, &rng), pair_make(dt, 1, bs, 1, &rng)};
            if (c.act == NEAT_ACT_RELU) pair_relu(&t[3]);
            snprintf(what, sizeof what, "conv2d backward%s act %d accumulate %d%s",
                     c.nhwc ? " nhwc" : "", (int)c.act, c.accumulate, c.n ? " without dx" : "");
            /* the longest sum: dw's and db's over n p q = 72 terms, + the old value */
            run_pairs(what, dt, t, 8, 5, rec_conv, &c, native_layer(dt, c.act), 2 * 6 * 6 + 1);
            for (int i = 0; i < 8; i++) pair_free(t[i]);
        }
        /* NHWC pooling: 2x2 stride 2 over [2, h, w, 5] */
        for (int k = 0; k < 4; k++) {
            int64_t h = pool_hw[k][0], w = pool_hw[k][1], one = 1;
            int64_t xs[4] = {2, h, w, 5}, ys[4] = {2, h / 2, w / 2, 5};
            pair t[3] = {pair_make(dt, 4, xs, 1, &rng), pair_make(dt, 4, ys, 1, &rng),
                         pair_make(dt, 4, xs, 1, &rng)};
            snprintf(what, sizeof what, "maxpool backward nhwc %lldx%lld", (long long)h,
                     (long long)w);
            run_pairs(what, dt, t, 3, 2, rec_pool, &one, 0, 0);
            for (int i = 0; i < 3; i++) pair_free(t[i]);
        }
    }
}

/* ---- errors ------------------------------------------------------------------------------ */

static neat_tensor *make(neat_dtype dt, int64_t r, int64_t c) {
    int64_t s[2] = {r, c};
    neat_tensor *t = NULL;
    CHECK_OK(neat_tensor_create_typed(dev, dt, 2, s, 1, &t), "create zeros");
    return t;
}

static void expect(neat_status st, neat_status want, const char *what, const char *substr) {
    CHECK_STATUS(st, want, what);
    CHECK(strstr(neat_last_error(), substr) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
          neat_last_error(), substr);
}

/* A fused relu keeps a NaN pre-activation on the CPU and Metal, as neat_activation_forward
 * and PyTorch do (the CPU's oneDNN post-op is max(x, 0), which gave 0 for it; CUDA's
 * cuBLASLt and cuDNN epilogues may, as neatml.h says, so CUDA is left out): linear and a 1x1 convolution
 * on the same numbers, float32 and bf16 (on the CPU through the float32 copies, or oneDNN's
 * bf16 kernels under NEATML_CPU_BF16=2). x's rows: a NaN; an infinity (times 1: inf, times
 * 0: NaN); negative pre-activations (relu: 0); finite values. All of it exact in bf16. (A
 * finite overflow is not asserted: +inf + -inf gives NaN or an infinity by the order of the
 * sums.) */
static void test_fused_relu_nan(void) {
    if (!strcmp(backend, "cuda")) { /* not promised there (neatml.h, neat_linear_forward) */
        nt_skip("cuda: a fused relu's NaN (cuBLASLt's and cuDNN's epilogues may give 0)");
        return;
    }
    const float inf = INFINITY, big = 0x1p100f;
    const float xv[16] = {NAN, 1, 2, 3, inf, 1, 0, 0, -1, 0, 0, 0, 1, -2, 3, -4};
    const float wv[16] = {big, -big, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, -1};
    const float bv[4] = {0, 0, 0, -0.5f};
    const float want[16] = {NAN, NAN, NAN, NAN, inf,     inf, NAN, NAN,
                            0,   0,   0,   0,   3 * big, 1,   1,   3.5f};
    static const neat_dtype types[2] = {NEAT_F32, NEAT_BF16};
    for (int t = 0; t < 2; t++)
        for (int conv = 0; conv < 2; conv++) {
            char what[96];
            snprintf(what, sizeof what, "%s: fused relu on NaN, %s %s", backend,
                     conv ? "conv2d 1x1" : "linear", neat_dtype_name(types[t]));
            int64_t s2[2] = {4, 4}, s4[4] = {4, 4, 1, 1}, s1[1] = {4};
            neat_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL;
            CHECK_OK(neat_tensor_create_typed(dev, types[t], conv ? 4 : 2, conv ? s4 : s2, 0, &x),
                     what);
            CHECK_OK(neat_tensor_create_typed(dev, types[t], conv ? 4 : 2, conv ? s4 : s2, 0, &w),
                     what);
            CHECK_OK(neat_tensor_create_typed(dev, types[t], 1, s1, 0, &b), what);
            CHECK_OK(neat_tensor_create_typed(dev, types[t], conv ? 4 : 2, conv ? s4 : s2, 0, &y),
                     what);
            CHECK_OK(neat_tensor_write(x, xv, 16), what);
            CHECK_OK(neat_tensor_write(w, wv, 16), what);
            CHECK_OK(neat_tensor_write(b, bv, 4), what);
            neat_cmdbuf *cb = NULL;
            CHECK_OK(neat_cmdbuf_create(dev, &cb), what);
            neat_conv2d_desc cd = neat_conv2d_desc_make(1, 1, 1, 0);
            neat_status st = conv ? neat_conv2d_forward(cb, &cd, NEAT_ACT_RELU, x, w, b, y)
                                  : neat_linear_forward(cb, NEAT_ACT_RELU, x, w, b, y);
            if (st == NEAT_ERR_UNSUPPORTED) {
                nt_skip("%s: %s", what, neat_last_error());
            } else {
                CHECK_OK(st, what);
                CHECK_OK(neat_cmdbuf_commit(cb), what);
                CHECK_OK(neat_cmdbuf_wait(cb), what);
                float got[16];
                CHECK_OK(neat_tensor_read(y, got, 16), what);
                for (int i = 0; i < 16; i++)
                    CHECK(isnan(want[i]) ? isnan(got[i]) : got[i] == want[i],
                          "%s: y[%d][%d] = %g, want %g", what, i / 4, i % 4, (double)got[i],
                          (double)want[i]);
            }
            neat_cmdbuf_destroy(cb);
            neat_tensor *all[4] = {x, w, b, y};
            for (int i = 0; i < 4; i++) neat_tensor_destroy(all[i]);
        }
}

static void test_errors(void) {
    neat_tensor *b = make(NEAT_BF16, 4, 4), *h = make(NEAT_F16, 4, 4), *f = make(NEAT_F32, 4, 4);
    neat_tensor *bv = make(NEAT_BF16, 1, 4), *fv = make(NEAT_F32, 1, 4), *hv = make(NEAT_F16, 1, 4);
    neat_tensor *f3 = make(NEAT_F32, 4, 3), *f11 = make(NEAT_F32, 1, 1);
    neat_tensor *b2 = make(NEAT_BF16, 4, 4), *b3 = make(NEAT_BF16, 4, 4);
    neat_tensor *h2 = make(NEAT_F16, 4, 4), *h3 = make(NEAT_F16, 4, 4);
    int64_t four = 4, one_ = 1;
    neat_tensor *f4 = NULL;
    CHECK_OK(neat_tensor_create_typed(dev, NEAT_F32, 1, &four, 1, &f4), "create [4]");
    neat_cmdbuf *cb;
    CHECK_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    neat_sgd_params sp = {0};
    int64_t two = 2;
    neat_tensor *hyper = NULL;
    CHECK_OK(neat_tensor_create(dev, 1, &two, &hyper), "hyper");
    float host[16] = {0};
    neat_conv2d_desc cd = neat_conv2d_desc_make(1, 1, 1, 0);
    (void)cd;

    /* record-time rules (the core): DTYPE_MISMATCH with every tensor's dtype */
    expect(neat_add(cb, b, f, b), NEAT_ERR_DTYPE_MISMATCH, "add bf16+f32",
           "neat_add: the tensors are bf16, f32, bf16; the op takes tensors of one dtype");
    expect(neat_mul(cb, h, h, b), NEAT_ERR_DTYPE_MISMATCH, "mul f16 -> bf16", "f16, f16, bf16");
    expect(neat_scale(cb, f, 2.0f, h), NEAT_ERR_DTYPE_MISMATCH, "scale f32 -> f16", "f32, f16");
    expect(neat_softmax(cb, b, f), NEAT_ERR_DTYPE_MISMATCH, "softmax bf16 -> f32", "bf16, f32");
    expect(neat_sum_all(cb, h, f11), NEAT_ERR_DTYPE_MISMATCH, "sum f16 -> f32", "f16, f32");
    expect(neat_matmul(cb, b, h, f, 1, 0, 0, 0), NEAT_ERR_DTYPE_MISMATCH, "matmul bf16 x f16",
           "an output of that dtype or f32");
    expect(neat_matmul(cb, b, b, h, 1, 0, 0, 0), NEAT_ERR_DTYPE_MISMATCH, "matmul bf16 -> f16",
           "bf16, bf16, f16");
    expect(neat_matmul(cb, f, f, b, 1, 0, 0, 0), NEAT_ERR_DTYPE_MISMATCH, "matmul f32 -> bf16",
           "f32, f32, bf16");
    expect(neat_linear_forward(cb, NEAT_ACT_NONE, b, b2, f4, b3), NEAT_ERR_DTYPE_MISMATCH,
           "linear bias f32", "bf16, bf16, f32, bf16");
    expect(neat_sgd_update(cb, &sp, hyper, b, b2, NULL), NEAT_ERR_DTYPE_MISMATCH, "sgd bf16",
           "takes float32 tensors only");
    expect(neat_sgd_update(cb, &sp, hyper, f, b, NULL), NEAT_ERR_DTYPE_MISMATCH,
           "sgd f32 param, bf16 grad", "f32, f32, bf16");
    expect(neat_copy_from_host(cb, host, 16, b), NEAT_ERR_DTYPE_MISMATCH, "copy_from_host bf16",
           "neat_copy_from_host: the tensors are bf16; the op takes float32 tensors only");
    expect(neat_copy_to_host(cb, h, host, 16), NEAT_ERR_DTYPE_MISMATCH, "copy_to_host f16",
           "takes float32 tensors only");
    /* allowed pairs record (where the backend runs bf16: Metal refuses it) */
    neat_status bst[3] = {neat_matmul(cb, b, b, f, 1, 0, 0, 0), neat_add(cb, b, bv, b),
                          neat_cast(cb, b, h)};
    static const char *const bwhat[3] = {"matmul bf16 -> f32", "add bf16 broadcast",
                                         "cast bf16 -> f16"};
    for (int i = 0; i < 3; i++)
        if (refuses(NEAT_BF16))
            expect(bst[i], NEAT_ERR_UNSUPPORTED, bwhat[i],
                   "the metal backend does not run this op on bf16 tensors");
        else
            CHECK_OK(bst[i], bwhat[i]);
    CHECK_OK(neat_matmul(cb, h, h2, f, 1, 0, 0, 0), "matmul f16 -> f32");
    CHECK_OK(neat_add(cb, h, hv, h), "add f16 broadcast");
    CHECK_OK(neat_cast(cb, h, f), "cast f16 -> f32");
    CHECK_OK(neat_cast(cb, f, h3), "cast f32 -> f16");
    CHECK_OK(neat_cast(cb, h, h), "cast in place");
    expect(neat_cast(cb, b, f3), NEAT_ERR_SHAPE_MISMATCH, "cast shapes", "neat_cast: y");

    /* the backend's op_check: UNSUPPORTED for what it does not run in half (the losses) */
    neat_tensor *lb = NULL, *lh = NULL, *lossb = NULL;
    CHECK_OK(neat_tensor_create_typed(dev, NEAT_BF16, 1, &four, 1, &lb), "labels bf16");
    CHECK_OK(neat_tensor_create_typed(dev, NEAT_F16, 1, &four, 1, &lh), "labels f16");
    CHECK_OK(neat_tensor_create_typed(dev, NEAT_BF16, 1, &one_, 1, &lossb), "loss bf16");
    char msg[96];
    snprintf(msg, sizeof msg, "the %s backend does not run this op on bf16 tensors", backend);
    expect(neat_softmax_cross_entropy(cb, b, lb, lossb), NEAT_ERR_UNSUPPORTED, "xent bf16", msg);
    expect(neat_softmax_cross_entropy_backward(cb, h, lb, h3), NEAT_ERR_DTYPE_MISMATCH,
           "xent backward f16 labels bf16", "f16, bf16, f16");
    expect(neat_softmax_cross_entropy_backward(cb, h, lh, h3), NEAT_ERR_UNSUPPORTED,
           "xent backward f16", "does not run this op on f16 tensors");
    CHECK_OK(neat_cmdbuf_commit(cb), "commit the allowed ops");
    CHECK_OK(neat_cmdbuf_wait(cb), "wait");

    /* API arguments */
    int64_t one = 1;
    neat_tensor *t = NULL;
    neat_dtype dt;
    expect(neat_tensor_create_typed(dev, (neat_dtype)3, 1, &one, 0, &t), NEAT_ERR_INVALID_ARGUMENT,
           "dtype 3", "dtype 3 is not a neat_dtype");
    expect(neat_tensor_create_typed(dev, NEAT_BF16, 1, &one, 2, &t), NEAT_ERR_INVALID_ARGUMENT,
           "zero 2", "zero is 2");
    expect(neat_tensor_dtype(b, NULL), NEAT_ERR_INVALID_ARGUMENT, "dtype NULL", "dtype is NULL");
    expect(neat_tensor_dtype(NULL, &dt), NEAT_ERR_INVALID_ARGUMENT, "t NULL", "t is NULL");
    expect(neat_tensor_write_raw(b, host, 64), NEAT_ERR_SHAPE_MISMATCH, "raw bytes",
           "t is bf16 4x4 (32 bytes), bytes is 64");
    expect(neat_tensor_read_raw(f, host, 32), NEAT_ERR_SHAPE_MISMATCH, "raw bytes f32",
           "(64 bytes), bytes is 32");
    expect(neat_tensor_read_raw(h, NULL, 32), NEAT_ERR_INVALID_ARGUMENT, "raw NULL", "dst is NULL");
    float zeros[16];
    CHECK_OK(neat_tensor_read(h, zeros, 16), "read zeros");
    int nz = 0;
    for (int i = 0; i < 16; i++) nz += zeros[i] != 0.0f;
    CHECK(nz == 0, "neat_tensor_create_typed(zero = 1) gives zeros in f16");
    CHECK(!strcmp(neat_dtype_name(NEAT_BF16), "bf16") &&
              !strcmp(neat_dtype_name((neat_dtype)9), "unknown dtype"),
          "neat_dtype_name");

    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {b, h, f, bv, fv, hv, f3, f11, f4, b2, b3, h2, h3, hyper, lb, lh, lossb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) neat_tensor_destroy(all[i]);
}

/* Every candidate the GEMM tuning may pick, held to the same bounds: on CUDA, for k = 0 ..
 * 15, a device opened with NEATML_GEMM_CANDIDATE=k (read at its first GEMM: each GEMM then
 * runs cuBLASLt's heuristic candidate k, or its last) runs the table's small half GEMM rows.
 * Under compute-sanitizer the tuning had picked, for row 43, a candidate that reduces
 * split-K partial sums in f16 (267 ulp off; bench/micro/lt_candidates.cu); half outputs
 * ask for float32 reductions since f0a2880, and this makes that a test. */
static void test_gemm_candidates(uint64_t seed) {
    if (strcmp(backend, "cuda") != 0) return;
    neat_device *own = dev;
    int rows = 0;
    for (int k = 0; k < 16; k++) {
        char v[8];
        snprintf(v, sizeof v, "%d", k);
        setenv("NEATML_GEMM_CANDIDATE", v, 1);
        neat_device *d = NULL;
        neat_status st = neat_device_create(NEAT_BACKEND_CUDA, 0, &d);
        CHECK(st == NEAT_OK, "cuda: a second device for candidate %d: %s", k, neat_last_error());
        if (st != NEAT_OK) break;
        static char name[32];
        snprintf(name, sizeof name, "cuda (GEMM candidate %d)", k);
        dev = d, backend = name;
        for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++) {
            const row *r = &ROWS[i];
            if ((r->op != OP_MATMUL && r->op != OP_BMATMUL && r->op != OP_LINEAR) ||
                r->in == NEAT_F32 || large_row(r))
                continue;
            run_row(r, (int)i, seed); /* its messages name the backend as set below */
            rows++;
        }
        neat_device_destroy(d);
    }
    unsetenv("NEATML_GEMM_CANDIDATE");
    dev = own, backend = "cuda";
    printf("gemm candidates: %d rows run on 16 candidates each\n", rows / 16);
}

/* NEATML_TEST_SHARD=i/n (as test_conformance's): this process runs the table rows whose
 * index is i modulo n, the conversions and the error cases in shard 0 and the backward
 * pairs in shard n - 1, so that n processes (a sanitizer's slow runs side by side) cover the
 * whole test once. Unset: everything. */
static int shard_i = 0, shard_n = 1;

static int shard_parse(void) {
    const char *e = getenv("NEATML_TEST_SHARD");
    if (!e || !*e) return 1;
    if (sscanf(e, "%d/%d", &shard_i, &shard_n) != 2 || shard_n < 1 || shard_i < 0 ||
        shard_i >= shard_n) {
        fprintf(stderr, "FAIL NEATML_TEST_SHARD=\"%s\": want i/n with 0 <= i < n\n", e);
        return 0;
    }
    printf("dtype: shard %d of %d (NEATML_TEST_SHARD)\n", shard_i, shard_n);
    return 1;
}

int main(void) {
    if (!shard_parse()) return 1;
    uint64_t seed = nt_seed_base("dtype", 0x14);
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++) {
        dev = devs[d], backend = names[d];
        if (shard_i == 0) test_conversions(), test_device_casts();
        int large = 0;
        for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++) {
            if ((int)(i % (size_t)shard_n) != shard_i) continue;
            /* the CPU runs the large rows as the small ones, at seconds of reference each */
            if (large_row(&ROWS[i]) && strcmp(backend, "cpu") == 0) {
                large++;
                continue;
            }
            run_row(&ROWS[i], (int)i, seed);
        }
        if (large)
            nt_skip("%s: %d rows of m n k >= 2^30 (CUDA's timed GEMM algorithms; the CPU takes the "
                    "small rows' path)",
                    backend, large);
        if (shard_i == shard_n - 1) test_backward(seed), test_gemm_candidates(seed);
        /* the CPU's half loops promise the float32 copies' bits; other backends' own half
         * kernels (CUDA's softmax and sums) only their accuracy bounds, checked above */
        if (shard_i == shard_n - 1 && !strcmp(backend, "cpu"))
            test_forward_pairs(seed), test_sum_pairs(seed), test_pool_pairs(seed);
        if (shard_i == shard_n - 1) test_cpu_conversion_bits(seed);
        if (shard_i == 0) test_errors(), test_fused_relu_nan();
    }
    nt_close_devices(devs, ndev);
    return nt_finish("dtype");
}
