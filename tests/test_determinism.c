/*
 * test_determinism.c — the same op on the same inputs gives the same bits, run after run, on
 * one device (neatml.h promises it for sums; docs/HACKING.md for the rest of CUDA).
 *
 * Linear backward: on CUDA db comes out of the dw GEMM's BGRADB epilogue (strict float32,
 * and bf16/f16 without accumulate), summed in an order cuBLASLt does not document; cuBLAS
 * promises the same bits for one algorithm on one GPU, and neatml picks a GEMM's algorithm
 * once per shape (large ones timed at their first eager use). Each case runs one linear
 * backward three times on the same inputs (and, accumulating, the same old gradients): a
 * command buffer's first commit, its second (on CUDA the captured graph's replay), and the
 * first commit of a second buffer recorded alike. dx, dw and db must agree bit for bit. The
 * inputs are 2^u with u uniform in [-4, 4] and random signs, so that another order of the
 * sums would change the last bits. The cases of 2^30 multiply-adds per GEMM reach CUDA's
 * timed algorithm choice; the CPU skips them (seconds of oneDNN for nothing new there).
 * Convolution backward likewise (3x3, stride 1, padding 1): on CUDA dw comes from the timed
 * choice among cuDNN's deterministic algorithms and engines and conv_gemm.cu's kernels, or from
 * conv_small.cu's pass over few channels (its sums over lanes, warps and chunks in a fixed
 * order); LeNet's two layers and 3 and 4 input channels without dx.
 * Every backend that opens runs the table; a backend that does not open is reported skipped.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct det_case {
    neat_dtype dt;
    int64_t n, in, out;
    neat_activation act;
    int accumulate;
    neat_math_mode math;
    int64_t hw; /* a convolution over hw x hw planes, in -> out channels; 0: linear */
    int nodx;   /* the convolution without dx */
    int nhwc;   /* the convolution's tensors NHWC (NEAT_LAYOUT_NHWC) */
} det_case;

#define LARGE(c) ((double)(c)->n * (double)(c)->in * (double)(c)->out >= 0x1p30)

static const det_case CASES[] = {
    {NEAT_F32, 4096, 64, 96, NEAT_ACT_NONE, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F32, 4096, 64, 96, NEAT_ACT_RELU, 1, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F32, 1000, 33, 17, NEAT_ACT_GELU, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F32, 4097, 31, 130, NEAT_ACT_SIGMOID, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F32, 4096, 64, 96, NEAT_ACT_NONE, 0, NEAT_MATH_TF32, 0, 0, 0},
    {NEAT_F32, 4096, 512, 512, NEAT_ACT_NONE, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_BF16, 4096, 64, 96, NEAT_ACT_NONE, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_BF16, 4096, 64, 96, NEAT_ACT_RELU, 1, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_BF16, 4096, 512, 512, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F16, 4096, 64, 96, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F16, 2049, 17, 33, NEAT_ACT_NONE, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F16, 4096, 512, 512, NEAT_ACT_NONE, 0, NEAT_MATH_STRICT, 0, 0, 0},
    {NEAT_F32, 128, 1, 32, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 28, 1, 0},
    {NEAT_F32, 64, 3, 16, NEAT_ACT_TANH, 1, NEAT_MATH_STRICT, 32, 1, 0},
    {NEAT_F32, 16, 4, 8, NEAT_ACT_NONE, 0, NEAT_MATH_TF32, 20, 1, 0},
    {NEAT_F32, 128, 32, 64, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 14, 0, 0},
    {NEAT_F32, 8, 64, 64, NEAT_ACT_RELU, 1, NEAT_MATH_STRICT, 14, 0, 0},
    /* NHWC: conv_small.cu's kernels (no dx), cuDNN's */
    {NEAT_F32, 64, 3, 16, NEAT_ACT_TANH, 1, NEAT_MATH_STRICT, 32, 1, 1},
    {NEAT_BF16, 128, 1, 32, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 28, 1, 1},
    {NEAT_F32, 128, 32, 64, NEAT_ACT_RELU, 0, NEAT_MATH_STRICT, 14, 0, 1},
};

enum { X, W, B, Y, DY, DX, DW, DB, NT };

typedef struct det_tensors {
    neat_tensor *t[NT];
    float *host[NT]; /* the values written before each run */
    int64_t n[NT];
} det_tensors;

static const char *const NAMES[NT] = {"x", "w", "b", "y", "dy", "dx", "dw", "db"};

static float draw(nt_rng *r) {
    float v = (float)exp2(nt_uniform(r, -4, 4));
    return nt_next(r) & 1 ? -v : v;
}

static int make(neat_device *dev, const det_case *c, nt_rng *r, det_tensors *d) {
    const int64_t h = c->hw ? c->hw : 1, k = c->hw ? 3 : 1;
    const int64_t shapes[NT][4] = {
        {c->n, c->in, h, h},  {c->out, c->in, k, k}, {c->out, 1, 1, 1},     {c->n, c->out, h, h},
        {c->n, c->out, h, h}, {c->n, c->in, h, h},   {c->out, c->in, k, k}, {c->out, 1, 1, 1}};
    memset(d, 0, sizeof *d);
    for (int i = 0; i < NT; i++) {
        int nd = i == B || i == DB ? 1 : c->hw ? 4 : 2;
        d->n[i] = shapes[i][0] * shapes[i][1] * shapes[i][2] * shapes[i][3];
        int64_t laid[4] = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]};
        if (c->nhwc && nd == 4) /* [N,C,H,W] -> [N,H,W,C]; the values are random either way */
            laid[1] = shapes[i][2], laid[2] = shapes[i][3], laid[3] = shapes[i][1];
        d->host[i] = malloc((size_t)d->n[i] * sizeof(float));
        if (!CHECK(d->host[i] != NULL, "out of host memory") ||
            !CHECK_OK(neat_tensor_create_typed(dev, c->dt, nd, laid, 0, &d->t[i]), "create"))
            return 0;
        for (int64_t k = 0; k < d->n[i]; k++) d->host[i][k] = draw(r);
    }
    return 1;
}

static void release(det_tensors *d) {
    for (int i = 0; i < NT; i++) {
        neat_tensor_destroy(d->t[i]);
        free(d->host[i]);
    }
}

static neat_status record(neat_cmdbuf *cb, const det_case *c, det_tensors *d) {
    int reads_y = c->act == NEAT_ACT_RELU || c->act == NEAT_ACT_SIGMOID || c->act == NEAT_ACT_TANH;
    if (c->hw) {
        neat_conv2d_desc desc = neat_conv2d_desc_make(3, 3, 1, 1);
        desc.layout = c->nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
        return neat_conv2d_backward(cb, &desc, c->act, d->t[X], d->t[W], d->t[B],
                                    reads_y ? d->t[Y] : NULL, d->t[DY], c->nodx ? NULL : d->t[DX],
                                    d->t[DW], d->t[DB], c->accumulate);
    }
    return neat_linear_backward(cb, c->act, d->t[X], d->t[W], d->t[B], reads_y ? d->t[Y] : NULL,
                                d->t[DY], d->t[DX], d->t[DW], d->t[DB], c->accumulate);
}

/* Write every tensor (the outputs too: the old gradients when accumulating, else values the
 * op must overwrite), commit, wait, read the three gradients' bits into bits[0..2]. */
static int run(neat_cmdbuf *cb, det_tensors *d, unsigned char *bits[3], const char *what) {
    for (int i = 0; i < NT; i++)
        if (!CHECK_OK(neat_tensor_write(d->t[i], d->host[i], d->n[i]), what)) return 0;
    if (!CHECK_OK(neat_cmdbuf_commit(cb), what) || !CHECK_OK(neat_cmdbuf_wait(cb), what)) return 0;
    for (int g = 0; g < 3; g++) {
        neat_dtype dt;
        neat_tensor_dtype(d->t[DX + g], &dt);
        if (!CHECK_OK(neat_tensor_read_raw(d->t[DX + g], bits[g],
                                           (size_t)d->n[DX + g] * neat_dtype_size(dt)),
                      what))
            return 0;
    }
    return 1;
}

static void run_case(neat_device *dev, const char *backend, const det_case *c, uint64_t seed) {
    char what[200];
    static const char *const acts[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    char conv[64] = "";
    if (c->hw)
        snprintf(conv, sizeof conv, " %lldx%lld 3x3%s%s", (long long)c->hw, (long long)c->hw,
                 c->nodx ? " no dx" : "", c->nhwc ? " nhwc" : "");
    snprintf(what, sizeof what, "%s %s backward %s n=%lld in=%lld out=%lld%s act=%s acc=%d %s",
             backend, c->hw ? "conv2d" : "linear", neat_dtype_name(c->dt), (long long)c->n,
             (long long)c->in, (long long)c->out, conv, acts[c->act], c->accumulate,
             c->math == NEAT_MATH_TF32 ? "tf32" : "strict");
    nt_rng r = {seed};
    det_tensors d;
    neat_cmdbuf *cb[2] = {NULL, NULL};
    unsigned char *bits[3][3] = {{NULL}};
    size_t es = neat_dtype_size(c->dt);
    int ok = make(dev, c, &r, &d) &&
             CHECK_OK(neat_device_set_math_mode(dev, c->math), "set math mode") &&
             CHECK_OK(neat_cmdbuf_create(dev, &cb[0]), what);
    if (ok) {
        neat_status st = record(cb[0], c, &d);
        if (st == NEAT_ERR_UNSUPPORTED) { /* Metal's bf16 */
            nt_skip("%s: %s", what, neat_last_error());
            ok = 0;
        } else {
            ok = CHECK_OK(st, what);
        }
    }
    for (int k = 0; ok && k < 3; k++)
        for (int g = 0; g < 3; g++)
            ok = CHECK((bits[k][g] = malloc((size_t)d.n[DX + g] * es)) != NULL, "out of memory");
    ok = ok && run(cb[0], &d, bits[0], what) && run(cb[0], &d, bits[1], what) &&
         CHECK_OK(neat_cmdbuf_create(dev, &cb[1]), what) && CHECK_OK(record(cb[1], c, &d), what) &&
         run(cb[1], &d, bits[2], what);
    static const char *const runs[3] = {"first commit", "replay", "second buffer"};
    for (int k = 1; ok && k < 3; k++)
        for (int g = c->nodx; g < 3; g++) {
            int64_t differ = 0, first = -1;
            for (int64_t i = 0; i < d.n[DX + g]; i++)
                if (memcmp(bits[0][g] + i * es, bits[k][g] + i * es, es))
                    differ++, first = first < 0 ? i : first;
            CHECK(differ == 0,
                  "%s (seed %#llx): %s: %lld of %lld elements of the %s differ "
                  "from the first commit's bits (first [%lld])",
                  what, (unsigned long long)seed, NAMES[DX + g], (long long)differ,
                  (long long)d.n[DX + g], runs[k], (long long)first);
        }
    if (ok) printf("%s: the same bits in %s, %s and %s\n", what, runs[0], runs[1], runs[2]);
    for (int k = 0; k < 3; k++)
        for (int g = 0; g < 3; g++) free(bits[k][g]);
    neat_cmdbuf_destroy(cb[0]);
    neat_cmdbuf_destroy(cb[1]);
    release(&d);
    neat_device_set_math_mode(dev, NEAT_MATH_STRICT);
}

int main(void) {
    uint64_t base = nt_seed_base("determinism", 0x13);
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    int ncases = (int)(sizeof CASES / sizeof CASES[0]);
    for (int di = 0; di < ndev; di++) {
        int large = 0;
        for (int i = 0; i < ncases; i++) {
            if (LARGE(&CASES[i]) && !strcmp(names[di], "cpu")) {
                large++;
                continue;
            }
            run_case(devs[di], names[di], &CASES[i], base + (uint64_t)i);
        }
        if (large)
            nt_skip("%s: %d cases of 2^30 multiply-adds per GEMM (CUDA's timed algorithm choice; "
                    "the CPU's path is the small cases')",
                    names[di], large);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("determinism");
}
