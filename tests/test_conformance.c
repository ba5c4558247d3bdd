/*
 * test_conformance.c — every op of src/core/op_list.h on every backend against the float64
 * reference, from one table: a row per op kind and shape, one runner (util_conform.c) for
 * all of them. The kinds (what to create, record and compare) are in
 * util_conform_forward.c, util_conform_train.c and util_conform_optim.c; docs/TESTING.md
 * says which rows reach which kernel of each backend.
 *
 * Each row runs on every device that opens, in the strict pass, the integer pass (kinds
 * whose outputs must then be bit-exact: matmul, linear, conv, sums) and the TF32 pass, and
 * each case is submitted twice from one recording (the replay with fresh inputs).
 * Shapes: 0, 1, primes, 2^k +- 1, the layers of the LeNet example, and the sizes where a
 * kernel changes path; then rows drawn at random from the base seed (NEATML_TEST_SEED
 * overrides it; each case's seed is printed when it fails).
 */
#include "util_conform.h"

#include <stdlib.h>

/* ---- row makers: the meaning of each parameter, per kind -------------------------------- */

#define MATMUL(m, n, k, ta, tb, alpha, beta)                                                       \
    {                                                                                              \
        .kind = CF_MATMUL, .p = {m, n, k, ta, tb, 0}, .f = { alpha, beta }                         \
    }
#define MATMUL_B(b, m, n, k, ta, tb, alpha, beta)                                                  \
    {                                                                                              \
        .kind = CF_MATMUL_BATCHED, .p = {m, n, k, ta, tb, b}, .f = { alpha, beta }                 \
    }
#define LINEAR(n, in, out, bias, act)                                                              \
    {                                                                                              \
        .kind = CF_LINEAR_FORWARD, .p = { n, in, out, bias, act }                                  \
    }
/* x [n,c,h,w], k filters of kh x kw, stride sh x sw, padding ph x pw, dilation dh x dw */
// clang-format off
#define CONV(n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, act) \
    { .kind = CF_CONV2D_FORWARD, .p = { n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, act } }
// clang-format on
#define MAXPOOL(n, c, h, w, kh, kw, sh, sw, ph, pw, neg)                                           \
    {                                                                                              \
        .kind = CF_MAXPOOL2D, .p = { n, c, h, w, kh, kw, sh, sw, ph, pw, neg }                     \
    }
/* shapes: the dimension count, then up to four sizes */
#define SUM_ALL(nd, s0, s1, s2, s3, ydim)                                                          \
    {                                                                                              \
        .kind = CF_SUM_ALL, .p = { nd, s0, s1, s2, s3, ydim }                                      \
    }
#define SUM_AXIS(nd, s0, s1, s2, s3, axis, keep)                                                   \
    {                                                                                              \
        .kind = CF_SUM_AXIS, .p = { nd, s0, s1, s2, s3, axis, keep }                               \
    }
#define SOFTMAX(nd, s0, s1, s2, s3, inplace)                                                       \
    {                                                                                              \
        .kind = CF_SOFTMAX, .p = { nd, s0, s1, s2, s3, inplace }                                   \
    }
#define ACT(nd, s0, s1, s2, s3, act, inplace)                                                      \
    {                                                                                              \
        .kind = CF_ACTIVATION_FORWARD, .p = { nd, s0, s1, s2, s3, act, inplace }                   \
    }
/* broadcast: 0 none, 1 b is [cols], 2 b is [1,cols] */
#define ADD(nd, s0, s1, s2, s3, bcast, inplace)                                                    \
    {                                                                                              \
        .kind = CF_ADD, .p = { nd, s0, s1, s2, s3, bcast, inplace }                                \
    }
#define MUL(nd, s0, s1, s2, s3, bcast, inplace)                                                    \
    {                                                                                              \
        .kind = CF_MUL, .p = { nd, s0, s1, s2, s3, bcast, inplace }                                \
    }
#define SCALE(nd, s0, s1, s2, s3, alpha, inplace)                                                  \
    {                                                                                              \
        .kind = CF_SCALE, .p = {nd, s0, s1, s2, s3, 0, inplace}, .f = { alpha }                    \
    }
#define FILL(nd, s0, s1, s2, s3, value)                                                            \
    {                                                                                              \
        .kind = CF_FILL, .p = {nd, s0, s1, s2, s3}, .f = { value }                                 \
    }
/* mask: bit 0 dx, bit 1 dw, bit 2 db */
#define LINEAR_BWD(n, in, out, act, bias, mask, acc)                                               \
    {                                                                                              \
        .kind = CF_LINEAR_BACKWARD, .p = { n, in, out, act, bias, mask, acc }                      \
    }
/* the same with dy's column 0 built against long sequential sums (util_conform_train.c) */
#define LINEAR_BWD_COL(n, in, out, act, bias, mask, acc)                                           \
    {                                                                                              \
        .kind = CF_LINEAR_BACKWARD, .p = { n, in, out, act, bias, mask, acc, 1 }                   \
    }
// clang-format off
#define CONV_BWD(n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, act, bias, mask, acc) \
    { .kind = CF_CONV2D_BACKWARD, .p = { n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, act, bias, mask, acc } }
// clang-format on
#define MAXPOOL_BWD(n, c, h, w, kh, kw, sh, sw, ph, pw, ties)                                      \
    {                                                                                              \
        .kind = CF_MAXPOOL2D_BACKWARD, .p = { n, c, h, w, kh, kw, sh, sw, ph, pw, ties }           \
    }
#define ACT_BWD(n, act)                                                                            \
    {                                                                                              \
        .kind = CF_ACTIVATION_BACKWARD, .p = { n, act }                                            \
    }
/* the same with every other x far out (util_conform_train.c) */
#define ACT_BWD_WIDE(n, act)                                                                       \
    {                                                                                              \
        .kind = CF_ACTIVATION_BACKWARD, .p = { n, act, 1 }                                         \
    }
#define SOFTMAX_BWD(rows, cols)                                                                    \
    {                                                                                              \
        .kind = CF_SOFTMAX_BACKWARD, .p = { rows, cols }                                           \
    }
#define XENT(rows, cols, big)                                                                      \
    {                                                                                              \
        .kind = CF_SOFTMAX_XENT, .p = { rows, cols, big }                                          \
    }
#define XENT_BWD(rows, cols, big)                                                                  \
    {                                                                                              \
        .kind = CF_SOFTMAX_XENT_BACKWARD, .p = { rows, cols, big }                                 \
    }
#define SGD(n, lr, momentum, wd, nesterov)                                                         \
    {                                                                                              \
        .kind = CF_SGD_UPDATE, .p = {n}, .f = { lr, momentum, wd, nesterov }                       \
    }
#define ADAM(n, lr, b1, b2, eps, wd)                                                               \
    {                                                                                              \
        .kind = CF_ADAM_UPDATE, .p = {n}, .f = { lr, b1, b2, eps, wd }                             \
    }
/* Mixed precision (neat_*_update_mixed): grad and param dtypes (param -1: NULL), scaler 0
 * NULL, 1 [1024, 0, 0], 2 found_inf (nothing written). */
#define SGD_MIXED(n, lr, momentum, wd, nesterov, gdt, pdt, scaler)                                 \
    {                                                                                              \
        .kind = CF_SGD_UPDATE, .p = {n, 1, gdt, pdt, scaler}, .f = { lr, momentum, wd, nesterov }  \
    }
#define ADAM_MIXED(n, lr, b1, b2, eps, wd, gdt, pdt, scaler)                                       \
    {                                                                                              \
        .kind = CF_ADAM_UPDATE, .p = {n, 1, gdt, pdt, scaler}, .f = { lr, b1, b2, eps, wd }        \
    }
#define LOSS_SCALE(n, dtype, inplace, scale)                                                       \
    {                                                                                              \
        .kind = CF_LOSS_SCALE, .p = {n, dtype, inplace}, .f = { scale }                            \
    }
#define LOSS_CHECK(ntensors, what)                                                                 \
    {                                                                                              \
        .kind = CF_LOSS_SCALE_CHECK, .p = { ntensors, what }                                       \
    }
#define LOSS_UPDATE(interval, found, good, scale, growth, backoff)                                 \
    {                                                                                              \
        .kind = CF_LOSS_SCALE_UPDATE, .p = {interval, found, good}, .f = {                         \
            scale,                                                                                 \
            growth,                                                                                \
            backoff                                                                                \
        }                                                                                          \
    }
enum { F32 = NEAT_F32, BF16 = NEAT_BF16, F16 = NEAT_F16, NOPARAM = -1 };

enum { NONE, RELU, SIGMOID, TANH, GELU };

static const cf_row TABLE[] = {
    /* matmul: every transpose; k = 0 with beta 0, 1 and other (c = beta c) */
    MATMUL(1, 1, 1, 0, 0, 1, 0),
    MATMUL(0, 5, 3, 0, 0, 1, 1),
    MATMUL(5, 0, 3, 1, 0, 0.5, -1.5),
    MATMUL(4, 6, 0, 0, 1, -2, 0.25),
    MATMUL(4, 6, 0, 0, 0, 1, 0),
    MATMUL(3, 5, 0, 1, 1, 1, 1),
    MATMUL(3, 7, 13, 0, 0, 1.3, 0),
    MATMUL(7, 13, 31, 1, 0, 1, 0),
    MATMUL(13, 31, 7, 0, 1, 1, 1),
    MATMUL(31, 3, 127, 1, 1, 0.5, -1.5),
    MATMUL(63, 65, 129, 0, 0, -2, 0.25),
    MATMUL(65, 63, 127, 1, 0, 1.3, 0),
    MATMUL(129, 127, 65, 0, 1, 1, 0),
    MATMUL(255, 1, 257, 0, 0, 1, 1),
    MATMUL(1, 257, 255, 1, 1, 0.5, -1.5),
    MATMUL(64, 64, 64, 0, 0, -2, 0.25),
    MATMUL(2, 3, 5, 1, 1, 1.3, 0),
    MATMUL(127, 129, 63, 1, 1, 1, 0),
    MATMUL(1, 9, 1, 1, 1, 1, 0),
    MATMUL(256, 256, 256, 1, 0, 1, 1),
    /* b transposed, k % 4 == 0: the CUDA backend's own small GEMM (alpha; beta != 0 stays
     * on cuBLASLt) */
    MATMUL(37, 21, 132, 0, 1, -2, 0),
    MATMUL(12, 20, 8, 0, 1, 1, 0.25),

    /* matmul_batched */
    MATMUL_B(1, 1, 1, 1, 0, 0, 1, 0),
    MATMUL_B(0, 3, 4, 5, 1, 0, 1, 1),
    MATMUL_B(3, 0, 4, 5, 0, 1, 0.5, -1.5),
    MATMUL_B(2, 7, 13, 0, 1, 1, -2, 0.25),
    MATMUL_B(3, 7, 13, 31, 0, 0, 1.3, 0),
    MATMUL_B(5, 31, 7, 13, 1, 0, 1, 0),
    MATMUL_B(2, 63, 65, 129, 0, 1, 1, 1),
    MATMUL_B(7, 1, 127, 3, 1, 1, 0.5, -1.5),
    MATMUL_B(4, 65, 1, 63, 0, 0, -2, 0.25),
    MATMUL_B(2, 129, 31, 64, 1, 0, 1.3, 0),
    MATMUL_B(13, 3, 3, 3, 0, 1, 1, 0),
    MATMUL_B(1, 127, 2, 257, 1, 1, 1, 1),
    MATMUL_B(3, 5, 7, 2, 0, 0, 1, 0),
    MATMUL_B(2, 17, 31, 33, 1, 0, 0.5, 0),
    MATMUL_B(4, 65, 63, 64, 0, 1, 1, 1),
    MATMUL_B(5, 1, 129, 7, 1, 1, -2, 0.5),
    MATMUL_B(2, 33, 1, 255, 0, 0, 1, 0),
    MATMUL_B(7, 16, 16, 16, 1, 1, 1, -1),
    MATMUL_B(2, 0, 4, 5, 0, 1, 1, 0),
    MATMUL_B(0, 3, 4, 5, 0, 0, 1, 0),
    MATMUL_B(1, 1, 1, 1, 1, 1, 1, 1),
    MATMUL_B(64, 8, 9, 10, 0, 1, 1, 0),

    /* linear_forward: every activation with and without bias; in = 0 (y = act(b)) */
    LINEAR(1, 1, 1, 1, NONE),
    LINEAR(0, 3, 4, 1, RELU),
    LINEAR(3, 0, 4, 1, SIGMOID),
    LINEAR(3, 4, 0, 1, TANH),
    LINEAR(7, 13, 31, 1, GELU),
    LINEAR(13, 31, 7, 0, NONE),
    LINEAR(64, 127, 10, 0, RELU),
    LINEAR(31, 65, 63, 0, SIGMOID),
    LINEAR(128, 63, 129, 0, TANH),
    LINEAR(1, 257, 255, 0, GELU),
    LINEAR(255, 3, 1, 1, NONE),
    LINEAR(65, 64, 65, 1, RELU),
    LINEAR(2, 129, 127, 1, SIGMOID),
    LINEAR(5, 7, 3, 1, TANH),
    LINEAR(129, 31, 13, 1, GELU),
    LINEAR(3, 255, 2, 0, NONE),
    LINEAR(3, 0, 4, 0, RELU),
    LINEAR(3, 0, 5, 1, GELU),
    LINEAR(64, 784, 120, 1, RELU),
    LINEAR(64, 84, 10, 1, NONE),
    /* in % 4 == 0, small: the CUDA backend's own small GEMM (gemm_small.cu) when timed
     * faster, every such row under NEATML_GEMM_OWN=2; GELU's epilogue is its under TF32 */
    LINEAR(33, 132, 17, 1, GELU),
    LINEAR(6, 8, 5, 0, GELU),
    LINEAR(64, 256, 256, 1, NONE),

    /* conv2d_forward: n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, act */
    CONV(1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1, NONE),      /* batch 1, no padding */
    CONV(2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, RELU),      /* padding 1 */
    CONV(2, 3, 13, 13, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, SIGMOID), /* stride 2 */
    CONV(1, 4, 13, 7, 6, 3, 3, 1, 1, 0, 0, 2, 2, 1, 1, TANH),     /* dilation 2 */
    CONV(2, 6, 9, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, GELU),      /* 3 groups */
    CONV(1, 8, 11, 11, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8, 0, NONE),    /* depthwise */
    CONV(2, 16, 7, 7, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, RELU),    /* 1x1 */
    CONV(1, 3, 31, 31, 7, 5, 5, 2, 2, 2, 2, 1, 1, 1, 1, SIGMOID), /* 5x5 stride 2 pad 2 */
    CONV(2, 5, 13, 9, 3, 3, 1, 2, 1, 1, 0, 1, 1, 1, 0, TANH),     /* asymmetric */
    CONV(0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, GELU),      /* empty batch */
    CONV(1, 2, 2, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, NONE),      /* kernel over the padded input */
    CONV(2, 4, 17, 17, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2, 0, RELU), /* stride, pad, dilation, groups */
    CONV(3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, SIGMOID), /* LeNet's first layer */
    CONV(1, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, TANH),   /* LeNet's second layer */
    CONV(1, 3, 5, 5, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, GELU),       /* no filters */
    CONV(1, 7, 1, 1, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, NONE),      /* 1x1 image */
    CONV(2, 0, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, RELU),       /* no input channels: act(b) */
    CONV(2, 0, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, NONE),
    CONV(1, 4, 9, 11, 4, 3, 3, 2, 3, 1, 0, 3, 2, 4, 1, GELU), /* depthwise, mixed */
    /* a bias with relu or none: CUDA's fused cuDNN call where cuDNN's algorithm is implicit
     * precomputed GEMM (conv.cu), over the geometries */
    CONV(2, 4, 17, 17, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2, 1, RELU),  /* stride, pad, dilation, groups */
    CONV(1, 8, 11, 11, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8, 1, RELU),  /* depthwise */
    CONV(2, 6, 9, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, NONE),    /* 3 groups */
    CONV(1, 3, 31, 31, 7, 5, 5, 2, 2, 2, 2, 1, 1, 1, 1, NONE),  /* 5x5 stride 2 pad 2 */
    CONV(1, 4, 13, 7, 6, 3, 3, 1, 1, 0, 0, 2, 2, 1, 1, RELU),   /* dilation 2 */
    CONV(3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, RELU), /* LeNet's layers as trained */
    CONV(2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, RELU),
    CONV(2, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, NONE), /* 64 channels */
    /* the CPU backend's multi-channel direct loop (conv_direct.c; AVX-512): padding 0 and 2,
     * planes that are not square, 8 and 16 filters */
    CONV(2, 3, 9, 13, 8, 3, 3, 1, 1, 0, 2, 1, 1, 1, 1, RELU),
    CONV(1, 5, 20, 6, 16, 3, 3, 1, 1, 2, 1, 1, 1, 1, 0, NONE),
    /* one input channel per group, 3x3 stride 1: conv_direct.c's loop on the CPU */
    CONV(2, 3, 12, 9, 6, 3, 3, 1, 1, 2, 1, 2, 1, 3, 1, RELU), /* 2 per group, dilation 2x1 */
    CONV(1, 1, 3, 40, 2, 3, 3, 1, 1, 0, 1, 1, 3, 1, 0, NONE), /* one output row, dilation 1x3 */
    /* 1 to 4 input channels, 3x3 stride 1: the CUDA backend's small-channel kernel
     * (conv_small.cu): partial filter tiles of 32, padding 0 to 2, each activation */
    CONV(3, 2, 9, 13, 40, 3, 3, 1, 1, 0, 2, 1, 1, 1, 1, GELU),
    CONV(2, 4, 6, 5, 7, 3, 3, 1, 1, 2, 2, 1, 1, 1, 0, TANH),
    CONV(5, 3, 20, 17, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, SIGMOID),
    CONV(9, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, RELU),

    /* maxpool2d: n, c, h, w, kh, kw, sh, sw, ph, pw, all-negative. 2x2 stride 2 unpadded is
     * its own path (CUDA: w % 4 == 0, w % 2 == 0 and general; CPU: output rows of 64 or
     * more in place, shorter ones gathered) */
    MAXPOOL(1, 1, 4, 4, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL(2, 3, 7, 7, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL(2, 3, 13, 13, 3, 3, 2, 2, 1, 1, 0),
    MAXPOOL(1, 2, 9, 9, 3, 3, 1, 1, 1, 1, 1),
    MAXPOOL(1, 3, 5, 5, 1, 1, 1, 1, 0, 0, 0),
    MAXPOOL(1, 2, 31, 31, 3, 3, 3, 3, 0, 0, 1),
    MAXPOOL(2, 2, 7, 13, 2, 2, 1, 1, 0, 0, 0),
    MAXPOOL(1, 3, 9, 8, 3, 2, 2, 1, 1, 1, 1),
    MAXPOOL(0, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL(1, 2, 9, 9, 5, 5, 2, 2, 2, 2, 1),
    MAXPOOL(2, 16, 56, 56, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1),
    MAXPOOL(3, 7, 2, 2, 2, 2, 2, 2, 1, 1, 0),
    MAXPOOL(1, 5, 65, 63, 3, 3, 2, 2, 0, 1, 1),
    MAXPOOL(2, 3, 6, 10, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL(1, 2, 9, 130, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL(1, 3, 6, 128, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL(4, 32, 28, 28, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL(1, 3, 7, 16, 2, 2, 2, 2, 0, 0, 1), /* W % 8 == 0, H odd: 4 outputs a thread */

    /* sum_all: CUDA one warp up to 1024 elements, beyond one pass of about 512 blocks of 1 to
     * 4 tiles of 8192 floats (16-byte loads, the < 4 elements past the last one added at the
     * end): 4095 and 2^20 + 3 end in a tail, 2^22 + 8197 needs 2 tiles per block with a
     * partial last tile, 2^24 + 5 (the benchmark's size plus a tail) 513 blocks of 4 tiles,
     * the last with one load. CPU 8192-element blocks, threads from 32768 */
    SUM_ALL(1, 0, 0, 0, 0, 1),
    SUM_ALL(1, 1, 0, 0, 0, 2),
    SUM_ALL(1, 3, 0, 0, 0, 0),
    SUM_ALL(2, 7, 13, 0, 0, 1),
    SUM_ALL(1, 127, 0, 0, 0, 2),
    SUM_ALL(4, 2, 3, 5, 7, 0),
    SUM_ALL(2, 255, 257, 0, 0, 1),
    SUM_ALL(1, 65537, 0, 0, 0, 2),
    SUM_ALL(4, 1, 1, 1, 1, 0),
    SUM_ALL(2, 63, 65, 0, 0, 1),
    SUM_ALL(0, 0, 0, 0, 0, 2),
    SUM_ALL(2, 0, 5, 0, 0, 0),
    SUM_ALL(3, 129, 31, 2, 0, 1),
    SUM_ALL(1, 1 << 20, 0, 0, 0, 2),
    SUM_ALL(3, 4, 0, 3, 0, 0),
    SUM_ALL(2, 1, 4097, 0, 0, 1),
    SUM_ALL(1, 1023, 0, 0, 0, 1),
    SUM_ALL(1, 1024, 0, 0, 0, 1),
    SUM_ALL(1, 1025, 0, 0, 0, 1),
    SUM_ALL(1, 1028, 0, 0, 0, 1),
    SUM_ALL(1, 8193, 0, 0, 0, 1),
    SUM_ALL(1, 32768, 0, 0, 0, 1),
    SUM_ALL(1, 4095, 0, 0, 0, 1),
    SUM_ALL(1, 4096, 0, 0, 0, 1),
    SUM_ALL(1, (1 << 20) + 3, 0, 0, 0, 1),
    SUM_ALL(1, (1 << 22) + 8197, 0, 0, 0, 1),
    SUM_ALL(1, (1 << 24) + 5, 0, 0, 0, 1),
    /* 10^7 values in [0,1): within 1e-6 of the float64 sum (a naive float loop is not) */
    {.kind = CF_SUM_ALL, .p = {1, 10000000, 0, 0, 0, 1, 1}, .f = {1e-6}},

    /* sum_axis: CUDA rows (inner 1) of up to 1024 by a warp, longer rows in 8192-chunks
     * over levels; columns (inner > 1) 64 at a time over levels; a single row is sum_all's
     * one pass. CPU: rows, long rows split over threads, columns 256 at a time. */
    SUM_AXIS(1, 0, 0, 0, 0, 0, 0),
    SUM_AXIS(1, 1, 0, 0, 0, 0, 1),
    SUM_AXIS(1, 3, 0, 0, 0, 0, 0),
    SUM_AXIS(2, 7, 13, 0, 0, 0, 1),
    SUM_AXIS(2, 7, 13, 0, 0, 1, 0),
    SUM_AXIS(1, 127, 0, 0, 0, 0, 1),
    SUM_AXIS(4, 2, 3, 5, 7, 0, 0),
    SUM_AXIS(4, 2, 3, 5, 7, 1, 1),
    SUM_AXIS(4, 2, 3, 5, 7, 2, 0),
    SUM_AXIS(4, 2, 3, 5, 7, 3, 1),
    SUM_AXIS(2, 255, 257, 0, 0, 0, 0),
    SUM_AXIS(2, 255, 257, 0, 0, 1, 1),
    SUM_AXIS(1, 65537, 0, 0, 0, 0, 0),
    SUM_AXIS(4, 1, 1, 1, 1, 2, 1),
    SUM_AXIS(2, 63, 65, 0, 0, 0, 0),
    SUM_AXIS(2, 63, 65, 0, 0, 1, 1),
    SUM_AXIS(2, 0, 5, 0, 0, 0, 0),
    SUM_AXIS(2, 0, 5, 0, 0, 1, 1),
    SUM_AXIS(3, 129, 31, 2, 0, 0, 0),
    SUM_AXIS(3, 129, 31, 2, 0, 1, 1),
    SUM_AXIS(3, 129, 31, 2, 0, 2, 0),
    SUM_AXIS(3, 4, 0, 3, 0, 0, 1),
    SUM_AXIS(3, 4, 0, 3, 0, 1, 0),
    SUM_AXIS(3, 4, 0, 3, 0, 2, 1),
    SUM_AXIS(2, 1, 4097, 0, 0, 0, 0),
    SUM_AXIS(2, 1, 4097, 0, 0, 1, 1),
    SUM_AXIS(2, 3, 1024, 0, 0, 1, 0),
    SUM_AXIS(2, 3, 5000, 0, 0, 1, 1),
    SUM_AXIS(2, 3, 10001, 0, 0, 1, 0),
    SUM_AXIS(2, 1, 5000, 0, 0, 1, 0),
    SUM_AXIS(2, 50, 7, 0, 0, 0, 1),
    SUM_AXIS(2, 100, 7, 0, 0, 0, 0),
    SUM_AXIS(2, 5000, 3, 0, 0, 0, 0),
    SUM_AXIS(3, 4, 3, 600, 0, 1, 0),
    SUM_AXIS(2, 2, 40000, 0, 0, 1, 0),
    SUM_AXIS(3, 200, 2, 301, 0, 2, 1),

    /* softmax: CUDA rows of up to 1024 by a warp; 1025..4096 and 4097..8192 in registers
     * (4 or 8 float4 per thread) when cols % 4 == 0, on a grid of what fits on the GPU (so
     * 1500 and 1100 rows give each block several rows: the 4-float4 kernel loads the next
     * one early, in place too); otherwise a block per row */
    SOFTMAX(2, 1, 1, 0, 0, 0),
    SOFTMAX(2, 0, 5, 0, 0, 0),
    SOFTMAX(2, 3, 0, 0, 0, 0),
    SOFTMAX(2, 1, 7, 0, 0, 1),
    SOFTMAX(2, 4, 13, 0, 0, 0),
    SOFTMAX(2, 13, 31, 0, 0, 0),
    SOFTMAX(2, 7, 127, 0, 0, 0),
    SOFTMAX(2, 31, 129, 0, 0, 1),
    SOFTMAX(2, 4, 1000, 0, 0, 0),
    SOFTMAX(2, 2, 4097, 0, 0, 0),
    SOFTMAX(3, 3, 5, 7, 0, 0),
    SOFTMAX(4, 2, 3, 4, 255, 1),
    SOFTMAX(2, 64, 10, 0, 0, 0),
    SOFTMAX(1, 257, 0, 0, 0, 0),
    SOFTMAX(2, 8, 63, 0, 0, 0),
    SOFTMAX(2, 9, 65, 0, 0, 1),
    SOFTMAX(2, 5, 1023, 0, 0, 0),
    SOFTMAX(2, 5, 1024, 0, 0, 0),
    SOFTMAX(2, 5, 1025, 0, 0, 0),
    SOFTMAX(2, 5, 1028, 0, 0, 1),
    SOFTMAX(2, 4, 4096, 0, 0, 0),
    SOFTMAX(2, 4, 4100, 0, 0, 0),
    SOFTMAX(2, 4, 8192, 0, 0, 1),
    SOFTMAX(2, 4, 8193, 0, 0, 0),
    SOFTMAX(2, 4, 8196, 0, 0, 0),
    SOFTMAX(2, 3, 20000, 0, 0, 0),
    SOFTMAX(2, 1500, 2048, 0, 0, 1),
    SOFTMAX(2, 1100, 1028, 0, 0, 0),
    /* CPU: outputs of 32 MiB and more go through a cached scratch row and streaming stores
     * (rows of 4099 start at every alignment; in place too) */
    SOFTMAX(2, 2050, 4099, 0, 0, 0),
    SOFTMAX(2, 2048, 4100, 0, 0, 1),

    /* activation_forward, add, scale, fill */
    ACT(1, 0, 0, 0, 0, NONE, 0),
    ACT(1, 1, 0, 0, 0, RELU, 1),
    ACT(1, 7, 0, 0, 0, SIGMOID, 0),
    ACT(2, 13, 31, 0, 0, TANH, 0),
    ACT(2, 257, 65, 0, 0, GELU, 0),
    ACT(4, 3, 5, 7, 11, NONE, 1),
    ACT(2, 0, 3, 0, 0, RELU, 0),
    ACT(3, 2, 63, 129, 0, SIGMOID, 0),
    ACT(1, 4099, 0, 0, 0, TANH, 0),
    ACT(2, 127, 255, 0, 0, GELU, 1),
    ACT(0, 0, 0, 0, 0, NONE, 0),
    ACT(2, 1, 1, 0, 0, RELU, 0),
    ACT(2, 31, 7, 0, 0, NONE, 0),
    ADD(1, 0, 0, 0, 0, 0, 0),
    ADD(1, 1, 0, 0, 0, 1, 1),
    ADD(1, 7, 0, 0, 0, 2, 0),
    ADD(2, 13, 31, 0, 0, 0, 0),
    ADD(2, 257, 65, 0, 0, 1, 0),
    ADD(4, 3, 5, 7, 11, 2, 1),
    ADD(2, 0, 3, 0, 0, 0, 0),
    ADD(3, 2, 63, 129, 0, 1, 0),
    ADD(1, 4099, 0, 0, 0, 2, 0),
    /* mul: the same shapes and broadcasts as add */
    MUL(1, 0, 0, 0, 0, 0, 0),
    MUL(1, 1, 0, 0, 0, 1, 1),
    MUL(2, 13, 31, 0, 0, 0, 0),
    MUL(2, 257, 65, 0, 0, 1, 0),
    MUL(4, 3, 5, 7, 11, 2, 1),
    MUL(3, 2, 63, 129, 0, 1, 0),
    MUL(1, 4099, 0, 0, 0, 2, 0),
    ADD(2, 127, 255, 0, 0, 0, 1),
    ADD(1, 5, 0, 0, 0, 1, 0),
    ADD(2, 1, 1, 0, 0, 2, 0),
    SCALE(1, 0, 0, 0, 0, 0, 0),
    SCALE(1, 1, 0, 0, 0, 1, 1),
    SCALE(1, 7, 0, 0, 0, -1, 0),
    SCALE(2, 13, 31, 0, 0, 0.3, 0),
    SCALE(2, 257, 65, 0, 0, 2.5, 0),
    SCALE(4, 3, 5, 7, 11, -1e-3, 1),
    SCALE(2, 0, 3, 0, 0, 0, 0),
    SCALE(3, 2, 63, 129, 0, 1, 0),
    SCALE(1, 4099, 0, 0, 0, -1, 0),
    SCALE(2, 127, 255, 0, 0, 0.3, 1),
    SCALE(0, 0, 0, 0, 0, 2.5, 0),
    SCALE(2, 1, 1, 0, 0, -1e-3, 0),
    FILL(1, 0, 0, 0, 0, 0),
    FILL(1, 1, 0, 0, 0, -1.5),
    FILL(1, 7, 0, 0, 0, 3e38),
    FILL(2, 13, 31, 0, 0, 1e-40),
    FILL(2, 257, 65, 0, 0, 7),
    FILL(4, 3, 5, 7, 11, 0),
    FILL(2, 0, 3, 0, 0, -1.5),
    FILL(3, 2, 63, 129, 0, 3e38),
    FILL(1, 4099, 0, 0, 0, 1e-40),
    FILL(2, 127, 255, 0, 0, 7),
    FILL(0, 0, 0, 0, 0, 0),
    FILL(2, 1, 1, 0, 0, -1.5),

    /* linear_backward: n, in, out, act, bias, grads, accumulate */
    LINEAR_BWD(1, 1, 1, NONE, 1, 7, 0),
    LINEAR_BWD(2, 3, 5, NONE, 1, 1, 1),
    LINEAR_BWD(7, 13, 17, NONE, 1, 6, 0),
    LINEAR_BWD(17, 33, 31, NONE, 0, 2, 1),
    LINEAR_BWD(64, 65, 63, NONE, 1, 4, 0),
    LINEAR_BWD(3, 257, 10, NONE, 1, 7, 1),
    LINEAR_BWD(33, 2, 129, NONE, 1, 3, 0),
    LINEAR_BWD(1, 1, 1, RELU, 1, 1, 1),
    LINEAR_BWD(2, 3, 5, RELU, 1, 6, 0),
    LINEAR_BWD(7, 13, 17, RELU, 0, 2, 1),
    LINEAR_BWD(17, 33, 31, RELU, 1, 4, 0),
    LINEAR_BWD(64, 65, 63, RELU, 1, 7, 1),
    LINEAR_BWD(3, 257, 10, RELU, 0, 3, 0),
    LINEAR_BWD(33, 2, 129, RELU, 1, 7, 1),
    LINEAR_BWD(1, 1, 1, SIGMOID, 1, 6, 0),
    LINEAR_BWD(2, 3, 5, SIGMOID, 0, 2, 1),
    LINEAR_BWD(7, 13, 17, SIGMOID, 1, 4, 0),
    LINEAR_BWD(17, 33, 31, SIGMOID, 1, 7, 1),
    LINEAR_BWD(64, 65, 63, SIGMOID, 0, 3, 0),
    LINEAR_BWD(3, 257, 10, SIGMOID, 1, 7, 1),
    LINEAR_BWD(33, 2, 129, SIGMOID, 1, 1, 0),
    LINEAR_BWD(1, 1, 1, TANH, 0, 2, 1),
    LINEAR_BWD(2, 3, 5, TANH, 1, 4, 0),
    LINEAR_BWD(7, 13, 17, TANH, 1, 7, 1),
    LINEAR_BWD(17, 33, 31, TANH, 0, 3, 0),
    LINEAR_BWD(64, 65, 63, TANH, 1, 7, 1),
    LINEAR_BWD(3, 257, 10, TANH, 1, 1, 0),
    LINEAR_BWD(33, 2, 129, TANH, 1, 6, 1),
    LINEAR_BWD(1, 1, 1, GELU, 1, 4, 0),
    LINEAR_BWD(2, 3, 5, GELU, 1, 7, 1),
    LINEAR_BWD(7, 13, 17, GELU, 0, 3, 0),
    LINEAR_BWD(17, 33, 31, GELU, 1, 7, 1),
    LINEAR_BWD(64, 65, 63, GELU, 1, 1, 0),
    LINEAR_BWD(3, 257, 10, GELU, 0, 6, 1),
    LINEAR_BWD(33, 2, 129, GELU, 1, 2, 0),
    /* no rows (gradients of empty sums), no inputs, long columns for db */
    LINEAR_BWD(0, 5, 3, RELU, 1, 7, 0),
    LINEAR_BWD(0, 5, 3, NONE, 1, 7, 1),
    LINEAR_BWD(4, 0, 3, GELU, 1, 7, 0),
    LINEAR_BWD(2000, 3, 1, RELU, 1, 7, 1),
    LINEAR_BWD(300, 7, 70, GELU, 1, 7, 0),
    LINEAR_BWD(64, 784, 120, RELU, 1, 7, 0),
    /* db of long columns against the bound of sums: on CUDA in strict float32, grads 6 and 7
     * take the dw GEMM's BGRADB epilogue (accumulate: into scratch, then added), grads 4 (no
     * dw) the sum kernel; the TF32 pass always the sum kernel */
    LINEAR_BWD_COL(4096, 8, 16, NONE, 1, 7, 0),
    LINEAR_BWD_COL(4096, 8, 16, RELU, 1, 7, 0),
    LINEAR_BWD_COL(4096, 5, 3, NONE, 0, 6, 1),
    LINEAR_BWD_COL(8191, 3, 130, NONE, 1, 6, 0),
    LINEAR_BWD_COL(4099, 3, 5, NONE, 1, 4, 0),
    LINEAR_BWD(4096, 32, 64, RELU, 1, 7, 0),
    LINEAR_BWD(1025, 33, 65, GELU, 1, 7, 1),
    LINEAR_BWD(2049, 17, 31, SIGMOID, 0, 6, 0),

    /* conv2d_backward: n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, act, bias,
     * grads, accumulate */
    CONV_BWD(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, NONE, 1, 7, 0),
    CONV_BWD(2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 7, 0),
    CONV_BWD(2, 4, 9, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2, SIGMOID, 1, 7, 1),
    CONV_BWD(1, 2, 11, 10, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1, TANH, 0, 3, 0),
    CONV_BWD(3, 6, 8, 7, 6, 2, 3, 2, 2, 0, 0, 1, 1, 3, GELU, 1, 6, 1),
    CONV_BWD(2, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 6, 0),  /* LeNet conv1 */
    CONV_BWD(2, 8, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 7, 0), /* LeNet conv2 */
    /* the CUDA backend's direct backward filter (conv_gemm.cu; NEATML_CONV_GEMM=3): two
     * channel tiles and a partial filter tile, padding 0 and 2; 150 chunks of 2 images */
    CONV_BWD(3, 40, 10, 12, 20, 3, 3, 1, 1, 0, 2, 1, 1, 1, NONE, 1, 7, 1),
    CONV_BWD(300, 8, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 6, 0),
    /* no dx over 1 to 4 channels, 3x3 stride 1: the CUDA backend's small-channel backward
     * (conv_small.cu, act' taken on the fly): 16 and 64 chunks of pixels (the latter 2083
     * pixels each), partial filter tiles, padding 0 to 2, dw alone, accumulate */
    CONV_BWD(40, 1, 28, 28, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 6, 1),
    CONV_BWD(170, 1, 28, 28, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 6, 0),
    CONV_BWD(3, 2, 11, 9, 5, 3, 3, 1, 1, 0, 2, 1, 1, 1, SIGMOID, 1, 6, 0),
    CONV_BWD(2, 3, 9, 9, 7, 3, 3, 1, 1, 2, 2, 1, 1, 1, TANH, 0, 2, 1),
    CONV_BWD(2, 4, 8, 10, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, NONE, 1, 6, 0),
    CONV_BWD(4, 3, 16, 16, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 0, 2, 0),
    /* relu's backward written in nChw16c (relu_grad_blocked.c): dz read blocked by both
     * primitives; 196 and 81 positions (a partial tile of 16), dw and db only, accumulate */
    CONV_BWD(2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 7, 0),
    CONV_BWD(2, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 6, 0),
    CONV_BWD(1, 32, 9, 9, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 7, 1),
    CONV_BWD(1, 5, 17, 17, 7, 5, 5, 2, 2, 2, 2, 1, 1, 1, NONE, 1, 1, 1),
    CONV_BWD(2, 4, 13, 13, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, GELU, 0, 3, 0), /* depthwise */
    CONV_BWD(1, 3, 16, 15, 5, 3, 3, 2, 2, 2, 2, 2, 2, 1, TANH, 1, 4, 1), /* stride 2 dil 2 */
    CONV_BWD(2, 6, 5, 33, 9, 3, 2, 1, 1, 1, 1, 1, 1, 3, SIGMOID, 1, 2, 0),
    CONV_BWD(2, 16, 7, 7, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1, RELU, 1, 7, 1), /* 1x1 */
    CONV_BWD(1, 4, 9, 11, 4, 3, 3, 2, 3, 1, 0, 3, 2, 4, GELU, 1, 7, 0),  /* asymmetric */
    CONV_BWD(0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 7, 0),   /* empty batch */
    CONV_BWD(0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, NONE, 1, 7, 1),
    CONV_BWD(2, 0, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, GELU, 1, 7, 0), /* no input channels */
    CONV_BWD(2, 0, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, RELU, 1, 4, 1),
    CONV_BWD(1, 3, 5, 5, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, NONE, 1, 7, 0), /* no filters */

    /* maxpool2d_backward: n, c, h, w, kh, kw, sh, sw, ph, pw, ties */
    MAXPOOL_BWD(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0),
    MAXPOOL_BWD(2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL_BWD(2, 3, 9, 7, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL_BWD(1, 4, 11, 13, 3, 3, 2, 2, 1, 1, 0),
    MAXPOOL_BWD(2, 2, 10, 9, 3, 3, 1, 1, 1, 1, 1),
    MAXPOOL_BWD(1, 3, 17, 17, 2, 3, 1, 2, 1, 1, 0),
    MAXPOOL_BWD(4, 32, 28, 28, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL_BWD(2, 5, 33, 31, 3, 3, 2, 2, 1, 1, 1),
    MAXPOOL_BWD(1, 2, 9, 131, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL_BWD(1, 2, 6, 128, 2, 2, 2, 2, 0, 0, 0),
    /* CUDA's one-pass 2x2 backward (even H and W) with ties: 8, 4 and 2 columns a thread */
    MAXPOOL_BWD(2, 2, 16, 16, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL_BWD(3, 2, 12, 12, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL_BWD(2, 3, 14, 14, 2, 2, 2, 2, 0, 0, 1),
    MAXPOOL_BWD(1, 1, 2, 2, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL_BWD(1, 1, 200, 200, 3, 3, 3, 3, 0, 0, 1),
    MAXPOOL_BWD(0, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0),
    MAXPOOL_BWD(1, 2, 1, 1, 2, 2, 2, 2, 1, 1, 0),

    /* activation_backward: n, act */
    ACT_BWD(1, NONE),
    ACT_BWD(17, NONE),
    ACT_BWD(1000, NONE),
    ACT_BWD(4097, NONE),
    ACT_BWD(1, RELU),
    ACT_BWD(17, RELU),
    ACT_BWD(1000, RELU),
    ACT_BWD(4097, RELU),
    ACT_BWD(1, SIGMOID),
    ACT_BWD(17, SIGMOID),
    ACT_BWD(1000, SIGMOID),
    ACT_BWD(4097, SIGMOID),
    ACT_BWD(1, TANH),
    ACT_BWD(17, TANH),
    ACT_BWD(1000, TANH),
    ACT_BWD(4097, TANH),
    ACT_BWD(1, GELU),
    ACT_BWD(17, GELU),
    ACT_BWD(1000, GELU),
    ACT_BWD(4097, GELU),
    ACT_BWD(0, RELU),
    ACT_BWD(0, GELU),
    ACT_BWD_WIDE(28, GELU),
    ACT_BWD_WIDE(1000, GELU),
    ACT_BWD_WIDE(28, SIGMOID),
    ACT_BWD_WIDE(28, TANH),

    /* softmax_backward: rows, cols (CUDA: a warp per row up to 1024, else a block) */
    SOFTMAX_BWD(1, 1),
    SOFTMAX_BWD(3, 7),
    SOFTMAX_BWD(17, 33),
    SOFTMAX_BWD(64, 1000),
    SOFTMAX_BWD(5, 4097),
    SOFTMAX_BWD(2, 2),
    SOFTMAX_BWD(0, 5),
    SOFTMAX_BWD(3, 1024),
    SOFTMAX_BWD(3, 1025),
    SOFTMAX_BWD(3, 1028),

    /* softmax cross-entropy: rows, cols, logits of +-1000 */
    XENT(1, 1, 0),
    XENT(2, 10, 0),
    XENT(17, 3, 0),
    XENT(128, 10, 0),
    XENT(7, 1001, 0),
    XENT(0, 10, 0),
    XENT(16, 10, 1),
    XENT(5, 257, 1),
    XENT(3, 1024, 0),
    XENT(3, 2048, 1),
    XENT(2000, 10, 0),
    XENT(3, 1031, 0),
    XENT(9, 5, 2), /* logits beyond 2^53: log s must survive m */
    XENT(4, 1031, 2),
    XENT_BWD(1, 1, 0),
    XENT_BWD(2, 10, 0),
    XENT_BWD(17, 3, 0),
    XENT_BWD(128, 10, 0),
    XENT_BWD(7, 1001, 0),
    XENT_BWD(0, 10, 0),
    XENT_BWD(16, 10, 1),
    XENT_BWD(5, 257, 1),
    XENT_BWD(3, 1024, 0),
    XENT_BWD(3, 2048, 1),
    XENT_BWD(3, 1031, 0),
    XENT_BWD(9, 5, 2),

    /* optimizers: n, then lr, momentum, weight decay, nesterov (SGD) or lr, beta1, beta2,
     * eps, weight decay (Adam; steps 1 and 1000) */
    SGD(1, 0.1, 0, 0, 0),
    SGD(1031, 0.1, 0, 0, 0),
    SGD(1, 0.05, 0.9, 0, 0),
    SGD(1031, 0.05, 0.9, 0, 0),
    SGD(1, 0.05, 0.9, 0, 1),
    SGD(1031, 0.05, 0.9, 0, 1),
    SGD(1, 0.05, 0.9, 0.01, 0),
    SGD(1031, 0.05, 0.9, 0.01, 0),
    SGD(1, 0.1, 0, 0.1, 0),
    SGD(1031, 0.1, 0, 0.1, 0),
    SGD(0, 0.1, 0.9, 0, 0),
    SGD(4096, 0.01, 0.5, 0.001, 1),
    ADAM(1, 1e-3, 0.9, 0.999, 1e-8, 0.01),
    ADAM(1031, 1e-3, 0.9, 0.999, 1e-8, 0.01),
    ADAM(1, 1e-2, 0.8, 0.99, 1e-3, 0),
    ADAM(1031, 1e-2, 0.8, 0.99, 1e-3, 0),
    ADAM(0, 1e-3, 0.9, 0.999, 1e-8, 0),
    ADAM(4096, 1e-3, 0.9, 0.999, 1e-8, 0.1),

    /* mixed precision: the optimizers on float32 master weights from grad of each dtype,
     * the rounded copy param (exact: the master read back, rounded), a scaler's scale and
     * its found_inf skip (every output unchanged, bit for bit) */
    SGD_MIXED(1031, 0.1, 0, 0, 0, F32, NOPARAM, 0),
    SGD_MIXED(1031, 0.1, 0, 0, 0, BF16, BF16, 0),
    SGD_MIXED(1031, 0.1, 0, 0, 0, F16, F16, 1),
    SGD_MIXED(1031, 0.05, 0.9, 0, 0, BF16, BF16, 1),
    SGD_MIXED(1031, 0.05, 0.9, 0, 0, F16, F16, 1),
    SGD_MIXED(1031, 0.05, 0.9, 0, 1, F16, BF16, 0),
    SGD_MIXED(1031, 0.05, 0.9, 0.01, 0, BF16, F32, 1),
    SGD_MIXED(1031, 0.05, 0.9, 0.01, 1, F32, F16, 1),
    SGD_MIXED(4096, 0.01, 0.5, 0.001, 1, F16, NOPARAM, 1),
    SGD_MIXED(1031, 0.05, 0.9, 0.01, 0, F16, F16, 2),
    SGD_MIXED(1031, 0.1, 0, 0, 0, BF16, BF16, 2),
    SGD_MIXED(0, 0.1, 0.9, 0, 0, F16, F16, 1),
    SGD_MIXED(1, 0.05, 0.9, 0, 1, BF16, F16, 1),
    ADAM_MIXED(1031, 1e-3, 0.9, 0.999, 1e-8, 0.01, F32, NOPARAM, 0),
    ADAM_MIXED(1031, 1e-3, 0.9, 0.999, 1e-8, 0.01, BF16, BF16, 0),
    ADAM_MIXED(1031, 1e-3, 0.9, 0.999, 1e-8, 0.01, F16, F16, 1),
    ADAM_MIXED(1031, 1e-2, 0.8, 0.99, 1e-3, 0, BF16, F16, 1),
    ADAM_MIXED(4096, 1e-3, 0.9, 0.999, 1e-8, 0.1, F16, F32, 1),
    ADAM_MIXED(1031, 1e-3, 0.9, 0.999, 1e-8, 0.01, F16, F16, 2),
    ADAM_MIXED(1031, 1e-3, 0.9, 0.999, 1e-8, 0, F32, BF16, 2),
    ADAM_MIXED(1, 1e-3, 0.9, 0.999, 1e-8, 0.01, F16, NOPARAM, 1),
    ADAM_MIXED(0, 1e-3, 0.9, 0.999, 1e-8, 0.01, BF16, BF16, 1),

    /* loss scaling: n, dtype, in place, scale; the check over tensors f32, bf16, f16 (the
     * first ntensors), 0 all finite, 1 NaN in the last, 2 +inf in the f16, 3 -inf in the
     * first; the update: interval, found_inf, good steps, scale, growth, backoff */
    LOSS_SCALE(1031, F32, 0, 1024),
    LOSS_SCALE(1031, BF16, 0, 65536),
    LOSS_SCALE(1031, F16, 0, 1024),
    LOSS_SCALE(1031, F16, 1, 3),
    LOSS_SCALE(1031, BF16, 1, 0.1),
    LOSS_SCALE(4096, F32, 1, 0.1),
    LOSS_SCALE(1031, F16, 0, 65536), /* |x| up to 8: overflows to inf in f16 */
    LOSS_SCALE(0, F16, 0, 2),
    LOSS_CHECK(0, 0),
    LOSS_CHECK(1, 0),
    LOSS_CHECK(3, 0),
    LOSS_CHECK(3, 1),
    LOSS_CHECK(3, 2),
    LOSS_CHECK(3, 3),
    LOSS_CHECK(2, 1),
    LOSS_CHECK(1, 3),
    LOSS_UPDATE(2000, 0, 1999, 65536, 2, 0.5),
    LOSS_UPDATE(2000, 0, 5, 65536, 2, 0.5),
    LOSS_UPDATE(2000, 1, 1999, 65536, 2, 0.5),
    LOSS_UPDATE(1, 0, 0, 1024, 4, 0.25),
    LOSS_UPDATE(3, 1, 2, 1, 2, 0.5),
    LOSS_UPDATE(1, 0, 0, 3e38, 2, 0.5), /* growth would overflow: the scale stays */
    LOSS_UPDATE(10, 0, 9, 3, 1, 1),
};

/* ---- random rows, drawn from the base seed ------------------------------------------------ */

/* 0, 1, primes and 2^k +- 1 up to 257. */
static const int64_t SIZES[14] = {0, 1, 2, 3, 7, 13, 31, 63, 64, 65, 127, 129, 255, 257};
static int64_t draw_size(nt_rng *r, int max_index) { return SIZES[nt_randint(r, 0, max_index)]; }

static cf_row *rows;
static int nrows, cap;

static cf_row *add_row(int kind) {
    if (nrows == cap) {
        cap = cap ? 2 * cap : 256;
        rows = realloc(rows, sizeof *rows * (size_t)cap);
        if (!rows) abort();
    }
    cf_row *r = &rows[nrows++];
    *r = (cf_row){.kind = kind};
    return r;
}

/* A shape of 1..4 dimensions and at most `cap` elements into p[0..4]. */
static void draw_shape(nt_rng *r, int64_t *p, int64_t limit) {
    int64_t n;
    do {
        p[0] = nt_randint(r, 1, 4);
        n = 1;
        for (int i = 0; i < 4; i++) {
            p[1 + i] = i < p[0] ? draw_size(r, p[0] == 1 ? 13 : 15 - 2 * (int)p[0]) : 0;
            if (i < p[0]) n *= p[1 + i];
        }
    } while (n > limit);
}

static void draw_rows(uint64_t base) {
    nt_rng r = {base + 101};
    static const float ab[][2] = {{1, 0}, {1, 1}, {0.5f, -1.5f}, {-2, 0.25f}, {1.3f, 0}};
    for (int i = 0; i < 10;) { /* matmul */
        int64_t m = draw_size(&r, 13), n = draw_size(&r, 13), k = draw_size(&r, 13);
        if (m * n * k > 2200000) continue;
        *add_row(CF_MATMUL) = (cf_row)MATMUL(m, n, k, nt_randint(&r, 0, 1), nt_randint(&r, 0, 1),
                                             ab[i % 5][0], ab[i % 5][1]);
        i++;
    }
    for (int i = 0; i < 12;) { /* matmul_batched */
        int64_t b = SIZES[nt_randint(&r, 1, 5)], m = draw_size(&r, 11), n = draw_size(&r, 11),
                k = draw_size(&r, 11);
        if (b * m * n * k > 1500000) continue;
        *add_row(CF_MATMUL_BATCHED) = (cf_row)MATMUL_B(
            b, m, n, k, nt_randint(&r, 0, 1), nt_randint(&r, 0, 1), ab[i % 5][0], ab[i % 5][1]);
        i++;
    }
    for (int i = 0; i < 14;) { /* linear_forward */
        int64_t n = draw_size(&r, 12), in = draw_size(&r, 13), out = draw_size(&r, 13);
        if (n * in * out > 2000000) continue;
        *add_row(CF_LINEAR_FORWARD) = (cf_row)LINEAR(n, in, out, nt_randint(&r, 0, 1), i % 5);
        i++;
    }
    static const int64_t hw[] = {1, 3, 7, 13, 16, 31};
    for (int i = 0; i < 14;) { /* conv2d_forward */
        int64_t g = nt_randint(&r, 1, 3), n = nt_randint(&r, 1, 3);
        int64_t c = g * SIZES[nt_randint(&r, 1, 4)], k = g * SIZES[nt_randint(&r, 1, 4)];
        int64_t kh = nt_randint(&r, 1, 5), kw = nt_randint(&r, 1, 5);
        int64_t sh = nt_randint(&r, 1, 3), sw = nt_randint(&r, 1, 3);
        int64_t dh = nt_randint(&r, 1, 2), dw = nt_randint(&r, 1, 2);
        /* padding below the dilated extent, at most 2 */
        int64_t eh = dh * (kh - 1) + 1, ew = dw * (kw - 1) + 1;
        int64_t ph = nt_randint(&r, 0, eh - 1 < 2 ? eh - 1 : 2);
        int64_t pw = nt_randint(&r, 0, ew - 1 < 2 ? ew - 1 : 2);
        int64_t h = hw[nt_randint(&r, 0, 5)], w = hw[nt_randint(&r, 0, 5)];
        int64_t p = (h + 2 * ph - eh) / sh + 1, q = (w + 2 * pw - ew) / sw + 1;
        if (h + 2 * ph < eh || w + 2 * pw < ew || n * k * p * q * c / g * kh * kw > 2000000)
            continue;
        *add_row(CF_CONV2D_FORWARD) = (cf_row)CONV(n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, g,
                                                   nt_randint(&r, 0, 1), i % 5);
        i++;
    }
    for (int i = 0; i < 12;) { /* maxpool2d */
        int64_t n = nt_randint(&r, 1, 3), c = SIZES[nt_randint(&r, 1, 5)];
        int64_t h = SIZES[nt_randint(&r, 1, 9)], w = SIZES[nt_randint(&r, 1, 9)];
        int64_t kh = nt_randint(&r, 1, 4), kw = nt_randint(&r, 1, 4);
        int64_t sh = nt_randint(&r, 1, 3), sw = nt_randint(&r, 1, 3);
        int64_t ph = nt_randint(&r, 0, kh / 2), pw = nt_randint(&r, 0, kw / 2);
        if (h + 2 * ph < kh || w + 2 * pw < kw) continue;
        *add_row(CF_MAXPOOL2D) = (cf_row)MAXPOOL(n, c, h, w, kh, kw, sh, sw, ph, pw, i % 2);
        i++;
    }
    for (int i = 0; i < 10; i++) { /* sum_all */
        cf_row *row = add_row(CF_SUM_ALL);
        draw_shape(&r, row->p, 300000);
        row->p[5] = i % 3;
    }
    for (int i = 0; i < 12; i++) { /* sum_axis */
        cf_row *row = add_row(CF_SUM_AXIS);
        draw_shape(&r, row->p, 200000);
        row->p[5] = nt_randint(&r, 0, row->p[0] - 1), row->p[6] = i % 2;
    }
    for (int i = 0; i < 10; i++) { /* softmax */
        cf_row *row = add_row(CF_SOFTMAX);
        draw_shape(&r, row->p, 200000);
        row->p[5] = i % 4 == 3;
    }
    static const double alphas[] = {0, 1, -1, 0.3, 2.5, -1e-3};
    static const double values[] = {0, -1.5, 3e38, 1e-40, 7};
    for (int kind = CF_ACTIVATION_FORWARD; kind <= CF_FILL; kind++)
        for (int i = 0; i < (kind == CF_ACTIVATION_FORWARD ? 28 : 12); i++) {
            cf_row *row = add_row(kind);
            draw_shape(&r, row->p, 300000);
            row->p[5] = kind == CF_ACTIVATION_FORWARD      ? i % 5
                        : kind == CF_ADD || kind == CF_MUL ? i % 3
                                                           : 0;
            row->p[6] = kind != CF_FILL && i % 4 == 1;
            row->f[0] = kind == CF_SCALE ? alphas[i % 6] : values[i % 5];
        }
}

int main(void) {
    uint64_t base = nt_seed_base("conformance", 20240611);
    int n = (int)(sizeof TABLE / sizeof TABLE[0]);
    for (int i = 0; i < n; i++) *add_row(TABLE[i].kind) = TABLE[i];
    draw_rows(base);
    int status = cf_run_table(rows, nrows, base);
    free(rows);
    return status;
}
