/*
 * bench.h — what the benchmark cases share: the run context, the result of a case, the
 * timing loop and the host-side helpers (random fill, float64 checks).
 *
 * A case creates its tensors on ctx->dev, fills them with fresh random values (never zeros),
 * records its ops into ONE command buffer, commits it once and checks a sample of the
 * output against a float64 computation from the inputs read back. Only when that check
 * passes is the buffer replayed: warm-up, then ctx->reps timed commit+wait, median.
 * The time is neat_cmdbuf_device_time of each replay: device events around the work on a
 * GPU, the worker thread's clock around the ops on the CPU. The host's wall clock around
 * commit+wait is kept beside it (wall_ms): on a GPU it adds the launch and the sync.
 * On a GPU each timed replay is committed right behind an untimed one of the same buffer
 * (ctx->queued, --timing queued, the default there): its start event and its launch are
 * queued while the device still runs the first, so the time is the device's work, not the
 * host's launch latency into an idle GPU (which --timing idle keeps, each replay alone).
 * bench/compare.py times PyTorch the same way. wall_ms is then half the host clock around
 * the two commits and the wait.
 */
#ifndef NEATML_BENCH_H
#define NEATML_BENCH_H

#include "rng.h"
#include "neatml.h"

#include <stdint.h>

typedef struct bench_ctx {
    neat_device *dev;
    neat_device_props props;
    int reps;      /* timed replays per case */
    int queued;    /* each timed replay committed behind an untimed one (GPU default) */
    uint64_t seed; /* base seed; each case derives its own and prints it on failure */
} bench_ctx;

typedef enum bench_outcome {
    BENCH_OK = 0,
    BENCH_UNAVAILABLE, /* an op answered NEAT_ERR_UNSUPPORTED: no number */
    BENCH_FAILED,      /* the output check failed: no number */
    BENCH_ERROR        /* another library error (out of memory, backend error) */
} bench_outcome;

typedef struct bench_result {
    bench_outcome outcome;
    char reason[512];     /* for anything but BENCH_OK */
    char shape[96];       /* the work actually measured, e.g. "2048x2048x2048" */
    double median_ms;     /* device time per replay of the command buffer (median) */
    double wall_ms;       /* host wall clock of commit+wait per replay (median) */
    double rate;          /* in `unit` */
    const char *unit;     /* "GFLOP/s", "GB/s", "us/op", "img/s", "us" (a host call) */
    double work;          /* flops, bytes, ops or images per replay (what rate counts) */
    int64_t peak_mem;     /* peak device memory of the case, bytes */
    double check_err;     /* worst error / tolerance of the check (<= 1 passes) */
    char extra_json[256]; /* more members of the case's JSON object (", \"ghz\": 2.9"), or "" */
} bench_result;

typedef void (*bench_fn)(bench_ctx *ctx, bench_result *res);

typedef struct bench_case {
    const char *name;
    const char *work; /* one line, as in DESIGN.md */
    bench_fn run;
} bench_case;

/* cases_ops.c: the single-op cases; cases_models.c: the small MLP and LeNet step. */
void bench_matmul_1024(bench_ctx *ctx, bench_result *res);
void bench_matmul_large(bench_ctx *ctx, bench_result *res);
void bench_linear_relu_1024(bench_ctx *ctx, bench_result *res);
void bench_conv2d_256f(bench_ctx *ctx, bench_result *res);
void bench_maxpool2x2(bench_ctx *ctx, bench_result *res);
void bench_softmax_rows_4096(bench_ctx *ctx, bench_result *res);
void bench_sum_all_4096(bench_ctx *ctx, bench_result *res);
void bench_add_4096(bench_ctx *ctx, bench_result *res);
void bench_mlp_700_small_ops(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step(bench_ctx *ctx, bench_result *res);
/* Issue 14: the same work in bf16/f16 (storage; float32 math, output in the input's type). */
void bench_matmul_1024_bf16(bench_ctx *ctx, bench_result *res);
void bench_matmul_large_bf16(bench_ctx *ctx, bench_result *res);
void bench_matmul_large_f16(bench_ctx *ctx, bench_result *res);
void bench_conv2d_256f_bf16(bench_ctx *ctx, bench_result *res);
void bench_conv2d_256f_nhwc(bench_ctx *ctx, bench_result *res);
void bench_conv2d_256f_bf16_nhwc(bench_ctx *ctx, bench_result *res);
void bench_softmax_rows_4096_bf16(bench_ctx *ctx, bench_result *res);
void bench_sum_all_4096_bf16(bench_ctx *ctx, bench_result *res);
void bench_add_4096_bf16(bench_ctx *ctx, bench_result *res);
/* Issue 13: fused epilogues (strict float32) and the TF32 math mode (GPU only). */
void bench_linear_gelu_1024(bench_ctx *ctx, bench_result *res);
void bench_conv2d_bias_relu_256f(bench_ctx *ctx, bench_result *res);
void bench_matmul_1024_tf32(bench_ctx *ctx, bench_result *res);
void bench_matmul_large_tf32(bench_ctx *ctx, bench_result *res);
void bench_linear_relu_1024_tf32(bench_ctx *ctx, bench_result *res);
void bench_conv2d_256f_tf32(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step_b1024(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step_b128_bf16(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step_b1024_bf16(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step_b128_nhwc(bench_ctx *ctx, bench_result *res);
void bench_lenet_train_step_b128_bf16_nhwc(bench_ctx *ctx, bench_result *res);
/* cases_runtime.c: what the runtime costs a loop (host calls during a replay). */
void bench_destroy_during_replay(bench_ctx *ctx, bench_result *res);
/* fma_peak.c: the CPU's FMA peak measured on the backend's threads (a yardstick, no op). */
void bench_fma_peak(bench_ctx *ctx, bench_result *res);

/* ---- helpers (bench_util.c) ----------------------------------------------------------- */

/* Record a library failure into res: UNSUPPORTED becomes "not available: <message>",
 * anything else an error naming `what`. Returns 0 so that callers can write
 * `if (!bench_ok(res, st, "neat_matmul")) goto done;`. Returns 1 for NEAT_OK. */
int bench_ok(bench_result *res, neat_status st, const char *what);
/* Mark the case FAILED with a formatted reason. */
void bench_fail(bench_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A tensor of the given shape filled with uniform values in [lo, hi) (nonzero with
 * probability one); the host copy is returned in *host when host != NULL (caller frees). */
neat_status bench_random_tensor(bench_ctx *ctx, rng64 *rng, int ndim, const int64_t *shape,
                                double lo, double hi, neat_tensor **out, float **host);
/* The same in element type dtype: the host copy holds the float32 values before their
 * rounding to dtype (checks use the tensor read back: the values the device holds). */
neat_status bench_random_tensor_typed(bench_ctx *ctx, rng64 *rng, neat_dtype dtype, int ndim,
                                      const int64_t *shape, double lo, double hi, neat_tensor **out,
                                      float **host);
/* Unit roundoff of one rounding to dtype: 2^-24 (f32), 2^-8 (bf16), 2^-11 (f16). */
double bench_roundoff(neat_dtype dtype);
/* Record the case's ops under math mode `math`. TF32 on the CPU backend (strict float32
 * whatever the mode: oneDNN's fpmath is set strict) marks the case not available and
 * returns 0: the number would be the float32 case's again. bench_end restores STRICT. */
int bench_math(bench_ctx *ctx, bench_result *res, neat_math_mode math);
/* Read a whole tensor back into a new malloc'd buffer (NULL on failure, status in *st). */
float *bench_read_back(const neat_tensor *t, neat_status *st);

/* Warm-up replays (at least 2 and 0.1 s: a CUDA graph is captured on the second commit,
 * and caches are hot), then ctx->reps timed replays; res->median_ms gets the median of their
 * device times, res->wall_ms the median of the commit+wait wall times. */
neat_status bench_time(bench_ctx *ctx, neat_cmdbuf *cb, bench_result *res);
/* Run cb once (commit + wait). */
neat_status bench_run_once(neat_cmdbuf *cb);

/* Start a case: trim the pool and reset the peak so that res->peak_mem is this case's. */
void bench_begin(bench_ctx *ctx, bench_result *res, rng64 *rng, uint64_t case_salt);
/* End a case: read the device's peak memory into res->peak_mem; math mode back to STRICT. */
void bench_end(bench_ctx *ctx, bench_result *res);

/* Set rate and unit from the work per replay and the median. unit "us/op" divides the
 * other way (microseconds per op). */
void bench_set_rate(bench_result *res, double work, const char *unit);

/* Float64 dot-product helper for the sampled checks: accumulates sum and sum of |terms|. */
typedef struct bench_acc {
    double sum, abs;
} bench_acc;

/* Record a sampled comparison: err/tol into res->check_err (worst so far). Returns 1 when
 * |got - want| <= tol (a NaN fails). */
int bench_compare(bench_result *res, double got, double want, double tol);

#endif
