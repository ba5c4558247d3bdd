/*
 * conv.cu — conv2d forward and backward on cuDNN's convolution API (NCHW float32, groups,
 * dilation; a cross-correlation).
 *
 * Per geometry and math mode the device caches one plan (a bounded LRU: struct
 * cuda_conv_cache): the tensor, filter and convolution descriptors and, found on first use
 * (so not inside a graph capture, unless the plan was evicted in between), the forward,
 * backward-data and backward-filter algorithms with their workspace sizes, ranked by cuDNN's
 * Find (rank). Strict float32 runs every algorithm with CUDNN_FMA_MATH (no TF32) and, as half
 * tensors do, only the GEMM-like algorithms (gemm_like); NEAT_MATH_TF32 takes the math type
 * cuDNN ranked best, FFT and Winograd included. Among backward algorithms a deterministic one
 * is preferred. The workspace is per-op scratch (the same memory at every replay of the command
 * buffer).
 *
 * Tuning (conv_tune): Find times each algorithm once, and that one timing decides (the TF32
 * conv2d_256f of the benchmark ran at 0.205 ms in one process and 0.350 ms in another, by
 * Find's first). So, as matmul.cu's mm_tune does with cuBLASLt's candidates, a slot's first
 * eager use runs the first CONV_CANDIDATES of Find's ranking that suit it (pick's filters),
 * and for strict float32's backward filter conv_gemm.cu's im2col GEMM (CONV_ALGO_GEMM;
 * NEATML_CONV_GEMM=0 leaves it out, =2 takes it alone), again on the op's inputs,
 * CONV_TUNE_RUNS times each after a warm-up, and keeps the one of least median time, in its
 * own memory; the fused forward's IMPLICIT_PRECOMP_GEMM slot keeps Find's first. Never
 * during a graph capture. NEATML_CONV_TUNE=0 (read at a device's first
 * convolution) keeps Find's first, for comparisons.
 *
 * forward:  y = conv(x, w), then y = act(y + b[k]) as one elementwise pass when needed; with a
 *           bias and relu or no activation, cuDNN's fused call instead where it runs (below).
 * backward: dz = dy act'(y) (gelu: act'(z) with z recomputed by the forward), then
 *           dx = conv_bwd_data(w, dz), dw = conv_bwd_filter(x, dz) with beta = accumulate,
 *           db[k] = sum over n, p, q of dz (reduce.cu: over p, q then over n; deterministic).
 * Scratch slots: 0 dz, 1 workspace, 2 the [N, K] sums, 3-4 and 5-6 the two reductions (half
 * tensors: 2-6 through cuda_half_channel_sum).
 *
 * bf16/f16 (the plan's key holds the dtype): the descriptors in CUDNN_DATA_BFLOAT16/HALF
 * with a CUDNN_DATA_FLOAT convolution (exact products, float32 sums, one rounding), any
 * math type cuDNN ranks (tensor cores). cuDNN writes a half y from half inputs only, and
 * cudnnConvolutionForward rounds before any bias: so natively y = conv(x, w) (relu after
 * the rounding is the same), y = act(conv(x, w) + b) for relu or none through the fused
 * call, and the backward with dz exact in half (no activation, relu); half.cu runs the
 * other cases on float32 copies. Follow-up: the library's NCHW costs tensor-core speed
 * (PyTorch is 1.8x faster channels-last in bf16 on the benchmark conv); a backend-internal
 * NHWC copy of activations and filters kept between layers would recover it.
 *
 * Fused forward (issue 13): y = act(alpha1 conv(x, w) + alpha2 z + b) by
 * cudnnConvolutionBiasActivationForward, with alpha1 = 1, alpha2 = 0 and z = y (cuDNN does not read
 * z when alpha2 is 0, as it does not read y when beta is 0 elsewhere; the tests' NaN-poisoned
 * outputs check it), b a [1, K, 1, 1] tensor in y's type (cuDNN's configurations for float, half
 * and bfloat16), and cuDNN's RELU or IDENTITY activation (the only two it fuses; sigmoid, tanh and
 * gelu keep the elementwise pass). The call runs only on IMPLICIT_PRECOMP_GEMM here: the one
 * algorithm cuDNN takes IDENTITY on, a sign that it is the one whose kernel applies bias and
 * activation, where the others would add passes of cuDNN's own, no faster than the one pass here
 * and, for half tensors, after the rounding. So float32 fuses where that is the algorithm chosen
 * anyway (a faster one is not traded for it), and half tensors with a bias always take it (an
 * algorithm slot of its own, chosen from the same ranking), so that the bias meets the float32
 * accumulator before the one rounding; the half rows of test_dtype check that bound. Whether cuDNN
 * accepts the fused call for a plan is learned at its first use and kept in the plan: a refusal (a
 * NOT_SUPPORTED or BAD_PARAM status, which cuDNN returns before it enqueues anything) runs the
 * unfused path instead (float32: the convolution and the pass; half: the float32 copies of
 * half.cu). NEATML_CONV_FUSE (read at a device's first convolution): "0" never fuses (the path
 * before issue 13, for comparisons); "2" makes a refusal the op's error instead of a fallback (to
 * check on a GPU that the fused call runs); "3" as "2", and float32 with a bias takes
 * IMPLICIT_PRECOMP_GEMM whatever cuDNN's choice (so the tests reach the float32 fused call on
 * every such row, and the benchmark can time it against the choice); anything else fuses and
 * falls back.
 */
#include "common.cuh"
#include "../lru.h"

#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Workspace an algorithm may ask for. */
#define CONV_WS_MAX ((size_t)1 << 30)

/* Find's candidates a slot is timed over again (conv_tune), and the timed runs of each. */
#define CONV_CANDIDATES 4
/* The algorithm number of conv_gemm.cu's backward filter (strict float32, one group): timed
 * beside Find's candidates, never one of cuDNN's numbers. */
#define CONV_ALGO_GEMM 1000
#define CONV_TUNE_RUNS 5 /* after one warm-up; a candidate's time is their median */

/* Algorithm slots of a plan: CONV_FWD_PRECOMP is the forward restricted to
 * IMPLICIT_PRECOMP_GEMM (the fused call of half tensors), chosen from the same ranking. */
enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER, CONV_FWD_PRECOMP, CONV_NALGO };

typedef struct conv_cand {
    int algo;
    cudnnMathType_t math;
    size_t ws;
} conv_cand;

typedef struct conv_algo {
    int ready, algo; /* algo -1: none usable (CONV_FWD_PRECOMP only; the others fail) */
    cudnnMathType_t math;
    size_t ws;
    conv_cand cand[CONV_CANDIDATES + 1]; /* Find's that suit the slot, best first; then ours */
    int ncand; /* > 1 while the candidates wait to be timed; 0 once they were */
} conv_algo;

/* fused[] states: untried, accepted by cuDNN, refused (then the unfused path runs). */
enum { FUSE_UNTRIED, FUSE_OK, FUSE_REFUSED };

typedef struct conv_plan {
    nm_conv_geom g;
    int math;
    int dtype;                          /* neat_dtype of every tensor */
    cudnnTensorDescriptor_t xd, yd, bd; /* bd: the bias, [1, K, 1, 1] */
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnActivationDescriptor_t ad[2]; /* IDENTITY, RELU */
    int fused[2];                      /* FUSE_*, for no activation and for relu */
    conv_algo algo[CONV_NALGO];
} conv_plan;

/* The device's cache of plans (lru.h), keyed by geometry and math mode: at most
 * NM_LRU_CAPACITY plans, the least recently used destroyed past it. Freeing a plan is safe
 * at any time, also while a CUDA graph captured with it lives: its descriptors and algorithm
 * choices are read by the cudnnConvolution* calls when they enqueue (or are captured), and a
 * graph keeps the launched kernels with their arguments, not these host objects. The
 * workspace a graph bakes in is the op's scratch slot 1, owned by the command buffer and not
 * by the plan. A plan evicted between a buffer's first submission and its capture is rebuilt
 * during the capture by host-only calls (descriptor creation, cuDNN's heuristic query), which
 * answer the same algorithm and workspace size as before, so the slot already fits. */
typedef struct conv_key {
    nm_conv_geom g;
    int64_t math, dtype;
} conv_key;

struct cuda_conv_cache {
    nm_lru lru;
    int fuse; /* NEATML_CONV_FUSE: 0 never, 1 fuse or fall back, 2 fuse or fail, 3 2 + forced */
    int tune; /* NEATML_CONV_TUNE is not "0" */
    int gemm; /* NEATML_CONV_GEMM: 0 never conv_gemm.cu's backward filter, 2 always, else timed */
};

static void plan_destroy(conv_plan *p) {
    if (!p) return;
    if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
    if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
    if (p->bd) cudnnDestroyTensorDescriptor(p->bd);
    for (int i = 0; i < 2; i++)
        if (p->ad[i]) cudnnDestroyActivationDescriptor(p->ad[i]);
    if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
    if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
    free(p);
}

static void plan_free(void *p) { plan_destroy((conv_plan *)p); }

extern "C" void cuda_conv_cache_free(cuda_device *d) {
    struct cuda_conv_cache *c = d->conv;
    if (!c) return;
    nm_lru_clear(&c->lru);
    free(c);
    d->conv = NULL;
}

#define DNN_TRY(call)                                                                              \
    do {                                                                                           \
        neat_status st_ = cudnn_check((call), what, #call);                                        \
        if (st_) {                                                                                 \
            plan_destroy(p);                                                                       \
            return st_;                                                                            \
        }                                                                                          \
    } while (0)

/* The device's plan cache, made at its first convolution. */
static neat_status cache_get(cuda_device *d, const char *what) {
    if (d->conv) return NEAT_OK;
    d->conv = (struct cuda_conv_cache *)calloc(1, sizeof *d->conv);
    if (!d->conv) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    nm_lru_init(&d->conv->lru, NM_LRU_CAPACITY);
    const char *env = getenv("NEATML_CONV_FUSE");
    d->conv->fuse = env && env[0] >= '0' && env[0] <= '3' && !env[1] ? env[0] - '0' : 1;
    env = getenv("NEATML_CONV_TUNE");
    d->conv->tune = !(env && strcmp(env, "0") == 0);
    env = getenv("NEATML_CONV_GEMM");
    d->conv->gemm = env && env[0] >= '0' && env[0] <= '2' && !env[1] ? env[0] - '0' : 1;
    return NEAT_OK;
}

static neat_status plan_get(cuda_device *d, const nm_conv_geom *g, neat_math_mode math,
                            neat_dtype dtype, conv_plan **out, const char *what) {
    neat_status st0 = cache_get(d, what);
    if (st0) return st0;
    struct cuda_conv_cache *c = d->conv;
    conv_key key;
    memset(&key, 0, sizeof key); /* hashed and memcmp'd as bytes */
    key.g = *g;
    key.math = (int64_t)math;
    key.dtype = (int64_t)dtype;
    conv_plan *hit = (conv_plan *)nm_lru_get(&c->lru, &key, sizeof key);
    if (hit) {
        *out = hit;
        return NEAT_OK;
    }
    const int64_t dims[] = {g->n,  g->c,  g->h,  g->w,  g->k,  g->p,  g->q,  g->kh,
                            g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->groups};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] > INT_MAX)
            return nm_error(NEAT_ERR_UNSUPPORTED, "%s: a size of %lld exceeds cuDNN's int range",
                            what, (long long)dims[i]);
    conv_plan *p = (conv_plan *)calloc(1, sizeof *p);
    if (!p) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    p->g = *g;
    p->math = (int)math;
    p->dtype = (int)dtype;
    /* Half tensors with float32 compute (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16 configs):
     * exact products, float32 sums, one rounding of the output. */
    cudnnDataType_t dt = dtype == NEAT_BF16  ? CUDNN_DATA_BFLOAT16
                         : dtype == NEAT_F16 ? CUDNN_DATA_HALF
                                             : CUDNN_DATA_FLOAT;
    DNN_TRY(cudnnCreateTensorDescriptor(&p->xd));
    DNN_TRY(cudnnCreateTensorDescriptor(&p->yd));
    DNN_TRY(cudnnCreateFilterDescriptor(&p->wd));
    DNN_TRY(cudnnCreateConvolutionDescriptor(&p->cd));
    DNN_TRY(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, dt, (int)g->n, (int)g->c,
                                       (int)g->h, (int)g->w));
    DNN_TRY(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, dt, (int)g->n, (int)g->k,
                                       (int)g->p, (int)g->q));
    DNN_TRY(cudnnSetFilter4dDescriptor(p->wd, dt, CUDNN_TENSOR_NCHW, (int)g->k,
                                       (int)(g->c / g->groups), (int)g->kh, (int)g->kw));
    DNN_TRY(cudnnSetConvolution2dDescriptor(p->cd, (int)g->ph, (int)g->pw, (int)g->sh, (int)g->sw,
                                            (int)g->dh, (int)g->dw, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
    DNN_TRY(cudnnSetConvolutionGroupCount(p->cd, (int)g->groups));
    /* For the fused call: relu with no upper bound (coef is RELU's ceiling) and
     * CUDNN_NOT_PROPAGATE_NAN, the only NaN option cuDNN lists for it (PyTorch and ONNX
     * Runtime set these two): a NaN before relu may come out as 0 there, where the
     * elementwise pass keeps it. */
    DNN_TRY(cudnnCreateTensorDescriptor(&p->bd));
    DNN_TRY(cudnnSetTensor4dDescriptor(p->bd, CUDNN_TENSOR_NCHW, dt, 1, (int)g->k, 1, 1));
    for (int i = 0; i < 2; i++) {
        DNN_TRY(cudnnCreateActivationDescriptor(&p->ad[i]));
        DNN_TRY(cudnnSetActivationDescriptor(p->ad[i],
                                             i ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
                                             CUDNN_NOT_PROPAGATE_NAN, DBL_MAX));
    }
    if (nm_lru_put(&c->lru, &key, sizeof key, p, plan_free) != 0) {
        plan_destroy(p);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    }
    *out = p;
    return NEAT_OK;
}

/* Workspace of algorithm `algo` of `which` under the descriptor's current math type;
 * NOT_SUPPORTED when the pair cannot run. */
static cudnnStatus_t ws_size(cudnnHandle_t h, const conv_plan *p, int which, int algo, size_t *ws) {
    switch (which) {
    case CONV_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(h, p->xd, p->wd, p->cd, p->yd,
                                                       (cudnnConvolutionFwdAlgo_t)algo, ws);
    case CONV_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            h, p->wd, p->yd, p->cd, p->xd, (cudnnConvolutionBwdDataAlgo_t)algo, ws);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, p->xd, p->yd, p->cd, p->wd, (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
    }
}

/* Half tensors and strict float32 take only the GEMM-like algorithms: each output is a sum
 * of exact products accumulated in float32 (tensor cores for half, FMA for strict float32),
 * rounded once, the bound neatml.h states. FFT and Winograd transform the data in
 * intermediates of their own, whose error follows the whole signal's size rather than the
 * output's own terms. Seen on the H200: under compute-sanitizer (other timings, so Find
 * ranked other algorithms first) half convolutions fell up to 4e-3 outside test_dtype's
 * one-rounding bound; in strict float32 the heuristic's first backward-filter algorithm for
 * x 2x32x14x14, 64 filters 3x3 gave dw = 128.000061 for 128 in test_conformance's integer
 * pass (2026-11-30, 18:20 UTC), and LeNet's conv2 backward at batch 128 ran FFT kernels. */
static int gemm_like(int which, int algo) {
    if (which == CONV_FWD)
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    if (which == CONV_BWD_DATA)
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
           algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
           algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

/* cuDNN's ranking of the algorithms of `kind` (CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER), best
 * first: algos[i] with det[i] (0 cannot run, 1 runs, 2 runs deterministically) and the math
 * type cuDNN ranked it with; measured: by Find (timed once each), not by the heuristic. */
enum { MAXR = 16 };
typedef struct conv_ranking {
    int n, algos[MAXR], det[MAXR];
    cudnnMathType_t maths[MAXR];
    int measured;
} conv_ranking;

static int capturing(cuda_device *d) {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(d->stream, &cap) != cudaSuccess ||
           cap != cudaStreamCaptureStatusNone;
}

#define RANKED(r, out)                                                                             \
    for (int i_ = 0; i_ < (out)->n; i_++) {                                                        \
        (out)->algos[i_] = (int)(r)[i_].algo;                                                      \
        (out)->det[i_] = (r)[i_].status == CUDNN_STATUS_SUCCESS                                    \
                             ? 1 + ((r)[i_].determinism == CUDNN_DETERMINISTIC)                    \
                             : 0;                                                                  \
        (out)->maths[i_] = (r)[i_].mathType;                                                       \
    }

static neat_status rank(cuda_device *d, conv_plan *p, int kind, conv_ranking *out,
                        const char *what) {
    cudnnStatus_t s;
    /* Algorithms are ranked by running them (cuDNN's Find: it times every algorithm once, in
     * its own memory, and synchronizes): the heuristic ranks a 27 TFLOP/s bf16 algorithm
     * first on the H200 where the best runs at 250. Strict float32 too since 2026-11-30
     * (the heuristic before): with FFT and Winograd out (gemm_like) the heuristic's and
     * Find's choices gave the same LeNet step (0.84 and 0.89 ms; 0.33 with FFT), and the
     * timing is what sets conv_gemm.cu's backward filter beside cuDNN's (pick). Strict float32
     * is found in CUDNN_FMA_MATH (CUDNN_DEFAULT_MATH lets cuDNN use TF32 for float data).
     * Not while the stream is being captured (a plan evicted between a buffer's first run
     * and its capture): the heuristic then, whose workspace may exceed the op's scratch slot,
     * which fails the capture and leaves the buffer running op by op: correct, slower.
     * Find's single timing is noisy: its first candidates are timed again (conv_tune). */
    int strict = p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32;
    int measure = !capturing(d);
    out->measured = measure;
    if (measure)
        cudnnSetConvolutionMathType(p->cd, strict                 ? CUDNN_FMA_MATH
                                           : p->dtype == NEAT_F32 ? CUDNN_DEFAULT_MATH
                                                                  : CUDNN_TENSOR_OP_MATH);
    out->n = 0;
    if (kind == CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t r[MAXR];
        s = measure ? cudnnFindConvolutionForwardAlgorithm(d->dnn, p->xd, p->wd, p->cd, p->yd, MAXR,
                                                           &out->n, r)
                    : cudnnGetConvolutionForwardAlgorithm_v7(d->dnn, p->xd, p->wd, p->cd, p->yd,
                                                             MAXR, &out->n, r);
        RANKED(r, out)
    } else if (kind == CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t r[MAXR];
        s = measure ? cudnnFindConvolutionBackwardDataAlgorithm(d->dnn, p->wd, p->yd, p->cd, p->xd,
                                                                MAXR, &out->n, r)
                    : cudnnGetConvolutionBackwardDataAlgorithm_v7(d->dnn, p->wd, p->yd, p->cd,
                                                                  p->xd, MAXR, &out->n, r);
        RANKED(r, out)
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t r[MAXR];
        s = measure ? cudnnFindConvolutionBackwardFilterAlgorithm(d->dnn, p->xd, p->yd, p->cd,
                                                                  p->wd, MAXR, &out->n, r)
                    : cudnnGetConvolutionBackwardFilterAlgorithm_v7(d->dnn, p->xd, p->yd, p->cd,
                                                                    p->wd, MAXR, &out->n, r);
        RANKED(r, out)
    }
    return cudnn_check(
        s, what, measure ? "cudnnFindConvolution*Algorithm" : "cudnnGetConvolution*Algorithm_v7");
}
#undef RANKED

/* The first of the ranking that suits slot `which` (kind: its ranking's): status, workspace,
 * math (strict: FMA only), GEMM-like for half tensors and strict float32, for
 * CONV_FWD_PRECOMP that algorithm only; a deterministic one first. 0 when none does. After
 * Find (with tuning on, and not for CONV_FWD_PRECOMP) also the next ones that suit, up to
 * CONV_CANDIDATES in a->cand for conv_tune: deterministic ones only when the first is; then
 * conv_gemm.cu's backward filter for strict float32 with one group. */
static int pick(cuda_device *d, conv_plan *p, int which, int kind, const conv_ranking *r,
                conv_algo *a) {
    /* Half tensors take cuDNN's math type (tensor cores: exact 16-bit products, float32 sums,
     * no TF32 question); float32 in strict mode FMA only; both GEMM-like only. */
    int strict = p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32;
    int most = r->measured && d->conv->tune && which != CONV_FWD_PRECOMP ? CONV_CANDIDATES : 1;
    a->ncand = 0;
    for (int pass = 0; pass < 2 && a->ncand == 0; pass++) /* 0: deterministic only; 1: any */
        for (int i = 0; i < r->n && a->ncand < most; i++) {
            if (r->det[i] < 2 - pass) continue;
            if ((p->dtype != NEAT_F32 || strict) && !gemm_like(kind, r->algos[i])) continue;
            if (which == CONV_FWD_PRECOMP &&
                r->algos[i] != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
                continue;
            cudnnMathType_t m = strict ? CUDNN_FMA_MATH : r->maths[i];
            if (strict && r->maths[i] == CUDNN_TENSOR_OP_MATH) continue;
            /* float32 never rounded to 16 bits behind the user's back */
            if (p->dtype == NEAT_F32 && m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
            if (cudnnSetConvolutionMathType(p->cd, m) != CUDNN_STATUS_SUCCESS) continue;
            size_t ws = 0;
            if (ws_size(d->dnn, p, kind, r->algos[i], &ws) != CUDNN_STATUS_SUCCESS ||
                ws > CONV_WS_MAX)
                continue;
            conv_cand *c = &a->cand[a->ncand++];
            c->algo = r->algos[i];
            c->math = m;
            c->ws = ws;
        }
    /* Strict float32's backward filter: conv_gemm.cu's too, when candidates are timed; alone
     * under NEATML_CONV_GEMM=2 (so that the tests reach it whatever the timings). */
    size_t own = cuda_conv_gemm_wgrad_ws(&p->g);
    if (which == CONV_BWD_FILTER && strict && p->g.groups == 1 && own <= CONV_WS_MAX &&
        (d->conv->gemm == 2 || (d->conv->gemm && most > 1))) {
        if (d->conv->gemm == 2) a->ncand = 0;
        conv_cand *c = &a->cand[a->ncand++];
        c->algo = CONV_ALGO_GEMM;
        c->math = CUDNN_FMA_MATH;
        c->ws = own;
    }
    if (a->ncand == 0) return 0;
    a->algo = a->cand[0].algo;
    a->math = a->cand[0].math;
    a->ws = a->cand[0].ws;
    a->ready = 1;
    if (a->ncand < 2) a->ncand = 0;
    return 1;
}

/* Choose the algorithm of `which` once. The forward's ranking serves both forward slots, so
 * a half convolution is timed by Find once. CONV_FWD_PRECOMP with nothing usable is kept as
 * algo -1 (the caller runs unfused); the other slots fail. */
static neat_status algo_get(cuda_device *d, conv_plan *p, int which, const conv_algo **out,
                            const char *what) {
    conv_algo *a = &p->algo[which];
    if (!a->ready) {
        int kind = which == CONV_FWD_PRECOMP ? CONV_FWD : which;
        conv_ranking r;
        neat_status st = rank(d, p, kind, &r, what);
        if (st) return st;
        if (kind == CONV_FWD && !p->algo[CONV_FWD].ready)
            pick(d, p, CONV_FWD, kind, &r, &p->algo[CONV_FWD]);
        if (kind == CONV_FWD && !p->algo[CONV_FWD_PRECOMP].ready &&
            !pick(d, p, CONV_FWD_PRECOMP, kind, &r, &p->algo[CONV_FWD_PRECOMP]))
            p->algo[CONV_FWD_PRECOMP].algo = -1, p->algo[CONV_FWD_PRECOMP].ready = 1;
        if (kind != CONV_FWD) pick(d, p, which, kind, &r, a);
    }
    if (a->ready) {
        *out = a;
        return NEAT_OK;
    }
    static const char *names[] = {"forward", "backward-data", "backward-filter", "fused forward"};
    return nm_error(
        NEAT_ERR_BACKEND_ERROR, "%s: cuDNN offers no %s algorithm for this convolution%s", what,
        names[which],
        p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32 ? " in strict float32 (FMA) math" : "");
}

/* The op's tensors its algorithms are timed on (conv_tune), read only: x and w for the
 * forward, w and dy for backward data, x and dy for backward filter (dy standing for the dz of
 * the op's own run: the same shape and type). */
typedef struct conv_inputs {
    const void *x, *w, *dy;
} conv_inputs;

/* One run of candidate c of slot `which` on in, into out (beta = 0), with workspace ws. */
static cudnnStatus_t run_candidate(nm_device *dev, conv_plan *p, int which, const conv_cand *c,
                                   const conv_inputs *in, void *out, void *ws) {
    cuda_device *d = cuda_dev(dev);
    const float one = 1.0f, zero = 0.0f;
    if (c->algo == CONV_ALGO_GEMM)
        return cuda_conv_gemm_wgrad(dev, &p->g, (const float *)in->x, (const float *)in->dy, 0.0f,
                                    (float *)out, ws, "conv_tune") == NEAT_OK
                   ? CUDNN_STATUS_SUCCESS
                   : CUDNN_STATUS_EXECUTION_FAILED;
    if (which == CONV_BWD_DATA)
        return cudnnConvolutionBackwardData(d->dnn, &one, p->wd, in->w, p->yd, in->dy, p->cd,
                                            (cudnnConvolutionBwdDataAlgo_t)c->algo, ws, c->ws,
                                            &zero, p->xd, out);
    if (which == CONV_BWD_FILTER)
        return cudnnConvolutionBackwardFilter(d->dnn, &one, p->xd, in->x, p->yd, in->dy, p->cd,
                                              (cudnnConvolutionBwdFilterAlgo_t)c->algo, ws, c->ws,
                                              &zero, p->wd, out);
    return cudnnConvolutionForward(d->dnn, &one, p->xd, in->x, p->wd, in->w, p->cd,
                                   (cudnnConvolutionFwdAlgo_t)c->algo, ws, c->ws, &zero, p->yd,
                                   out);
}

/* Bytes of what slot `which` writes: y, dx or dw. */
static size_t out_bytes(const conv_plan *p, int which) {
    const nm_conv_geom &g = p->g;
    int64_t n = which == CONV_BWD_DATA     ? g.n * g.c * g.h * g.w
                : which == CONV_BWD_FILTER ? g.k * (g.c / g.groups) * g.kh * g.kw
                                           : g.n * g.k * g.p * g.q;
    return (size_t)n * neat_dtype_size((neat_dtype)p->dtype);
}

static float median_ms(float *t, int n) { /* sorts t */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            float s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[n / 2];
}

/* Time a's candidates on the op's inputs and keep the fastest in a: per candidate one warm-up
 * run, then CONV_TUNE_RUNS runs, each between two events, all on the stream, one wait for
 * all. A candidate's time is the median of its runs, neither the sum nor the minimum: noise
 * on a GPU (clocks, other work) mostly slows single runs down, and a slowed run moves the sum
 * and a lucky one the minimum, not the median; it is also what the benchmark reports. The
 * runs write an output and a workspace of their own (one cudaMalloc, freed after the wait),
 * never the op's tensors. A candidate cuDNN refuses or fails is skipped, its CUDA error
 * cleared; without the memory, or when no candidate ran, Find's first stays. Done once,
 * whatever the outcome; only a failure of the events or of the stream is the op's error. */
static neat_status conv_tune(nm_device *dev, conv_plan *p, int which, conv_algo *a,
                             const conv_inputs *in, const char *what) {
    cuda_device *d = cuda_dev(dev);
    enum { NEV = CONV_TUNE_RUNS + 1 };
    cudaEvent_t ev[CONV_CANDIDATES + 1][NEV];
    int ok[CONV_CANDIDATES + 1] = {0}, nev = 0, n = a->ncand;
    a->ncand = 0;
    size_t out = (out_bytes(p, which) + 255) & ~(size_t)255, ws_max = 0;
    for (int i = 0; i < n; i++)
        if (a->cand[i].ws > ws_max) ws_max = a->cand[i].ws;
    char *mem = NULL;
    if (cudaMalloc((void **)&mem, out + ws_max) != cudaSuccess) {
        cudaGetLastError(); /* not the op's error: Find's first stays */
        return NEAT_OK;
    }
    neat_status st = NEAT_OK;
    for (int i = 0; i < n * NEV && !st; i++) {
        st = cuda_check(cudaEventCreate(&ev[i / NEV][i % NEV]), what, "cudaEventCreate");
        if (!st) nev = i + 1;
    }
    for (int i = 0; i < n && !st; i++) {
        const conv_cand *c = &a->cand[i];
        ok[i] = cudnnSetConvolutionMathType(p->cd, c->math) == CUDNN_STATUS_SUCCESS;
        for (int r = 0; r <= CONV_TUNE_RUNS && ok[i] && !st; r++) {
            if (r >= 1)
                st = cuda_check(cudaEventRecord(ev[i][r - 1], d->stream), what, "cudaEventRecord");
            if (!st)
                ok[i] = run_candidate(dev, p, which, c, in, mem, mem + out) == CUDNN_STATUS_SUCCESS;
        }
        if (!ok[i])
            cudaGetLastError(); /* what a failed launch left (not sticky): not the op's error */
        else if (!st)
            st = cuda_check(cudaEventRecord(ev[i][CONV_TUNE_RUNS], d->stream), what,
                            "cudaEventRecord");
    }
    /* waited for after a failure above too: mem is freed below */
    neat_status waited =
        cuda_check(cudaStreamSynchronize(d->stream), what, "cudaStreamSynchronize");
    if (!st) st = waited;
    float best = -1.0f;
    for (int i = 0; i < n && !st; i++) {
        float t[CONV_TUNE_RUNS];
        int r = 0;
        while (ok[i] && r < CONV_TUNE_RUNS &&
               cudaEventElapsedTime(&t[r], ev[i][r], ev[i][r + 1]) == cudaSuccess)
            r++;
        if (r < CONV_TUNE_RUNS) { /* failed, or an interval CUDA could not give */
            cudaGetLastError();
            continue;
        }
        float ms = median_ms(t, CONV_TUNE_RUNS);
        if (best < 0.0f || ms < best) {
            best = ms;
            a->algo = a->cand[i].algo;
            a->math = a->cand[i].math;
            a->ws = a->cand[i].ws;
        }
    }
    for (int i = 0; i < nev; i++) cudaEventDestroy(ev[i / NEV][i % NEV]);
    cudaFree(mem);
    return st;
}

/* Plan, algorithms and workspace (scratch slot 1, sized for the largest algorithm the op
 * uses: asked with the same size at every submission). A slot's first eager use times its
 * candidates first (conv_tune), so that the scratch is sized for the algorithm kept. */
static neat_status prepare(nm_device *dev, nm_cmdbuf *cb, const nm_conv_geom *g,
                           neat_math_mode math, neat_dtype dtype, const int *which, int nwhich,
                           const conv_inputs *in, conv_plan **plan, const conv_algo **algos,
                           void **ws, const char *what) {
    cuda_device *d = cuda_dev(dev);
    neat_status st = plan_get(d, g, math, dtype, plan, what);
    size_t need = 0;
    for (int i = 0; !st && i < nwhich; i++) {
        st = algo_get(d, *plan, which[i], &algos[i], what);
        if (!st && algos[i]->ncand > 1 && !capturing(d)) /* first eager use: time candidates */
            st = conv_tune(dev, *plan, which[i], &(*plan)->algo[which[i]], in, what);
        if (!st && algos[i]->ws > need) need = algos[i]->ws;
    }
    if (st) return st;
    *ws = NULL;
    return need ? cuda_scratch(cb, 1, need, ws) : NEAT_OK;
}

static neat_status run_forward(cuda_device *d, conv_plan *p, const conv_algo *a, void *ws,
                               const void *x, const void *w, void *y, const char *what) {
    const float one = 1.0f, zero = 0.0f;
    neat_status st = cudnn_check(cudnnSetConvolutionMathType(p->cd, a->math), what,
                                 "cudnnSetConvolutionMathType");
    if (st) return st;
    return cudnn_check(cudnnConvolutionForward(d->dnn, &one, p->xd, x, p->wd, w, p->cd,
                                               (cudnnConvolutionFwdAlgo_t)a->algo, ws, a->ws, &zero,
                                               p->yd, y),
                       what, "cudnnConvolutionForward");
}

/* y = act(conv(x, w) + b) in one cuDNN call (act NONE or RELU) with algorithm a. *done is 1
 * when it ran, 0 when cuDNN refused it, now or at an earlier use of the plan: the caller then
 * runs the unfused path. A refusal is learned only at the plan's first fused call; with
 * NEATML_CONV_FUSE=2 or 3 it is the op's error. */
static neat_status run_fused(cuda_device *d, conv_plan *p, const conv_algo *a, void *ws,
                             neat_activation act, const void *x, const void *w, const void *b,
                             void *y, int *done, const char *what) {
    int i = act == NEAT_ACT_RELU;
    *done = 0;
    if (p->fused[i] == FUSE_REFUSED) return NEAT_OK;
    const float one = 1.0f, zero = 0.0f;
    neat_status st = cudnn_check(cudnnSetConvolutionMathType(p->cd, a->math), what,
                                 "cudnnSetConvolutionMathType");
    if (st) return st;
    cudnnStatus_t s = cudnnConvolutionBiasActivationForward(
        d->dnn, &one, p->xd, x, p->wd, w, p->cd, (cudnnConvolutionFwdAlgo_t)a->algo, ws, a->ws,
        &zero, p->yd, y, p->bd, b, p->ad[i], p->yd, y);
    int category = CUDNN_STATUS_CATEGORY(s);
    if (s != CUDNN_STATUS_SUCCESS && p->fused[i] == FUSE_UNTRIED && d->conv->fuse == 1 &&
        (category == CUDNN_STATUS_NOT_SUPPORTED || category == CUDNN_STATUS_BAD_PARAM)) {
        p->fused[i] = FUSE_REFUSED;
        return NEAT_OK;
    }
    st = cudnn_check(s, what, "cudnnConvolutionBiasActivationForward");
    if (st) return st;
    p->fused[i] = FUSE_OK;
    *done = 1;
    return NEAT_OK;
}

/* Half tensors (cuda_native_half: a half y, no activation or relu), rounded once. Without a
 * bias y = conv(x, w) by cuDNN, then relu over the rounded values (relu(round(z)) =
 * round(relu(z))). With one, cuDNN's fused call on IMPLICIT_PRECOMP_GEMM adds it (and applies
 * relu) before the rounding; where that call is off (NEATML_CONV_FUSE=0), has no algorithm
 * or is refused, the float32 copies of half.cu, as before the fused call existed. */
static neat_status conv2d_forward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_forward";
    const auto &u = op->u.conv2d_forward;
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    neat_dtype dt = u.y->dtype;
    int64_t ny = u.y->numel;
    if (ny == 0) return NEAT_OK;
    if (u.x->numel == 0 || u.w->numel == 0) { /* no input channels: y = act(b), or 0 */
        if (!u.b) return cuda_fill_typed(dev, dt, u.y->data, ny, 0.0f, what);
        return cuda_half_epilogue(dev, dt, u.y->data, NULL, 0.0f, dt, u.b->data, ny, g.p * g.q, g.k,
                                  u.act, what);
    }
    conv_plan *p;
    const conv_algo *a[1];
    void *ws;
    neat_status st;
    const conv_inputs in = {u.x->data, u.w->data, NULL};
    if (!u.b) {
        static const int which[] = {CONV_FWD};
        st = prepare(dev, cb, &g, op->math, dt, which, 1, &in, &p, a, &ws, what);
        if (!st) st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, u.y->data, what);
        if (st || u.act == NEAT_ACT_NONE) return st;
        return cuda_half_epilogue(dev, dt, u.y->data, NULL, 1.0f, dt, NULL, ny, 1, 1, u.act, what);
    }
    if ((st = cache_get(d, what))) return st;
    if (d->conv->fuse == 0) return cuda_run_f32_copies(dev, cb, op);
    static const int which[] = {CONV_FWD_PRECOMP};
    st = prepare(dev, cb, &g, op->math, dt, which, 1, &in, &p, a, &ws, what);
    if (st) return st;
    int done = 0;
    if (a[0]->algo >= 0)
        st = run_fused(d, p, a[0], ws, u.act, u.x->data, u.w->data, u.b->data, u.y->data, &done,
                       what);
    else if (d->conv->fuse >= 2)
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: cuDNN offers no IMPLICIT_PRECOMP_GEMM algorithm for the fused "
                        "convolution (NEATML_CONV_FUSE=%d)",
                        what, d->conv->fuse);
    if (st || done) return st;
    return cuda_run_f32_copies(dev, cb, op);
}

/* dx = conv_bwd_data(w, dz) and dw = conv_bwd_filter(x, dz), each with beta (accumulate),
 * for the gradients asked for; their algorithms are a[first], a[first + 1] in that order
 * (after the forward's, for gelu). Any dtype: the plan's descriptors carry it. */
static neat_status backward_data_filter(nm_device *dev, conv_plan *p, const conv_algo *const *a,
                                        int first, void *ws, const nm_conv2d_backward_args &u,
                                        const void *dz, float beta, const char *what) {
    cuda_device *d = cuda_dev(dev);
    const float one = 1.0f;
    neat_status st = NEAT_OK;
    int ai = first;
    if (p && u.dx) {
        const conv_algo *al = a[ai++];
        st = cudnn_check(cudnnSetConvolutionMathType(p->cd, al->math), what,
                         "cudnnSetConvolutionMathType");
        if (!st)
            st = cudnn_check(cudnnConvolutionBackwardData(d->dnn, &one, p->wd, u.w->data, p->yd, dz,
                                                          p->cd,
                                                          (cudnnConvolutionBwdDataAlgo_t)al->algo,
                                                          ws, al->ws, &beta, p->xd, u.dx->data),
                             what, "cudnnConvolutionBackwardData");
        if (st) return st;
    }
    if (p && u.dw) {
        const conv_algo *al = a[ai++];
        if (al->algo == CONV_ALGO_GEMM)
            return cuda_conv_gemm_wgrad(dev, &p->g, (const float *)u.x->data, (const float *)dz,
                                        beta, (float *)u.dw->data, ws, what);
        st = cudnn_check(cudnnSetConvolutionMathType(p->cd, al->math), what,
                         "cudnnSetConvolutionMathType");
        if (!st)
            st = cudnn_check(
                cudnnConvolutionBackwardFilter(d->dnn, &one, p->xd, u.x->data, p->yd, dz, p->cd,
                                               (cudnnConvolutionBwdFilterAlgo_t)al->algo, ws,
                                               al->ws, &beta, p->wd, u.dw->data),
                what, "cudnnConvolutionBackwardFilter");
    }
    return st;
}

/* Half tensors with no activation or relu, not accumulating (cuda_native_half: one of cuDNN's
 * half backward-data algorithms rounds before it adds beta times the old dx, so an
 * accumulating backward runs on float32 copies): dz = dy or relu's mask of it (exact in half,
 * scratch slot 0), dx and dw by cuDNN, db by half.cu's channel sums. */
static neat_status conv2d_backward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_backward";
    const auto &u = op->u.conv2d_backward;
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    neat_dtype dt = u.dy->dtype;
    int64_t ny = u.dy->numel;
    neat_status st = NEAT_OK;
    if (ny == 0) { /* nothing flows back: the gradients are zero */
        if (u.dx) st = cuda_fill_typed(dev, dt, u.dx->data, u.dx->numel, 0.0f, what);
        if (!st && u.dw) st = cuda_fill_typed(dev, dt, u.dw->data, u.dw->numel, 0.0f, what);
        if (!st && u.db) st = cuda_fill_typed(dev, dt, u.db->data, u.db->numel, 0.0f, what);
        return st;
    }
    int which[2], nwhich = 0;
    if (u.dx) which[nwhich++] = CONV_BWD_DATA;
    if (u.dw) which[nwhich++] = CONV_BWD_FILTER;
    conv_plan *p = NULL;
    const conv_algo *a[2] = {NULL, NULL};
    void *ws = NULL;
    if (u.x->numel > 0 && u.w->numel > 0) { /* else C = 0: dx and dw are empty */
        const conv_inputs in = {u.x->data, u.w->data, u.dy->data};
        st = prepare(dev, cb, &g, op->math, dt, which, nwhich, &in, &p, a, &ws, what);
        if (st) return st;
    }
    const void *dz = u.dy->data;
    if (u.act == NEAT_ACT_RELU) {
        void *z;
        st = cuda_scratch(cb, 0, (size_t)ny * neat_dtype_size(dt), &z);
        if (!st) st = cuda_half_relu_grad(dev, dt, u.y->data, u.dy->data, z, ny, what);
        if (st) return st;
        dz = z;
    }
    st = backward_data_filter(dev, p, a, 0, ws, u, dz, 0.0f, what);
    if (st) return st;
    if (u.db) /* db[k] = sum over n, p, q of dz[n, k, p, q] */
        st = cuda_half_channel_sum(dev, cb, 2, dt, dz, g.n, g.k, g.p * g.q, 0, u.db->data, what);
    return st;
}

extern "C" {

neat_status cuda_conv2d_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_forward";
    const auto &u = op->u.conv2d_forward;
    if (u.x->dtype != NEAT_F32) return conv2d_forward_half(dev, cb, op);
    const nm_conv_geom &g = u.g;
    int64_t ny = u.y->numel;
    if (ny == 0) return NEAT_OK;
    const float *b = u.b ? u.b->data : NULL;
    cuda_device *d = cuda_dev(dev);
    neat_status st;
    int done = 0;                             /* the fused call ran: bias and activation are in y */
    if (u.x->numel == 0 || u.w->numel == 0) { /* no input channels: y = act(b) */
        st = cuda_fill_f32(dev, u.y->data, ny, 0.0f, what);
    } else {
        static const int fwd[] = {CONV_FWD}, precomp[] = {CONV_FWD_PRECOMP};
        conv_plan *p;
        const conv_algo *a[1];
        void *ws;
        const conv_inputs in = {u.x->data, u.w->data, NULL};
        st = cache_get(d, what);
        int fusable =
            !st && b && d->conv->fuse && (u.act == NEAT_ACT_RELU || u.act == NEAT_ACT_NONE);
        int forced = fusable && d->conv->fuse == 3; /* IMPLICIT_PRECOMP_GEMM whatever the choice */
        if (!st)
            st = prepare(dev, cb, &g, op->math, NEAT_F32, forced ? precomp : fwd, 1, &in, &p, a,
                         &ws, what);
        if (!st && forced && a[0]->algo < 0)
            return nm_error(NEAT_ERR_BACKEND_ERROR,
                            "%s: cuDNN offers no IMPLICIT_PRECOMP_GEMM algorithm for the fused "
                            "convolution (NEATML_CONV_FUSE=3)",
                            what);
        /* fused only on IMPLICIT_PRECOMP_GEMM (see the top), and only where it is the chosen
         * algorithm: a faster one followed by the pass is not traded for it */
        if (!st && fusable && a[0]->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
            st = run_fused(d, p, a[0], ws, u.act, u.x->data, u.w->data, b, u.y->data, &done, what);
        if (!st && !done) st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, u.y->data, what);
    }
    if (st || done) return st;
    return cuda_bias_act(dev, u.y->data, b, ny, g.p * g.q, g.k, u.act, what);
}

neat_status cuda_conv2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_conv2d_backward";
    const auto &u = op->u.conv2d_backward;
    if (u.dy->dtype != NEAT_F32) return conv2d_backward_half(dev, cb, op);
    const nm_conv_geom &g = u.g;
    cuda_device *d = cuda_dev(dev);
    const float beta = u.accumulate ? 1.0f : 0.0f;
    int64_t ny = u.dy->numel;
    neat_status st = NEAT_OK;
    if (ny == 0) { /* nothing flows back: the gradients are zero */
        if (u.accumulate) return NEAT_OK;
        if (u.dx) st = cuda_fill_f32(dev, u.dx->data, u.dx->numel, 0.0f, what);
        if (!st && u.dw) st = cuda_fill_f32(dev, u.dw->data, u.dw->numel, 0.0f, what);
        if (!st && u.db) st = cuda_fill_f32(dev, u.db->data, u.db->numel, 0.0f, what);
        return st;
    }
    int which[3], nwhich = 0;
    if (u.act == NEAT_ACT_GELU) which[nwhich++] = CONV_FWD;
    if (u.dx) which[nwhich++] = CONV_BWD_DATA;
    if (u.dw) which[nwhich++] = CONV_BWD_FILTER;
    conv_plan *p = NULL;
    const conv_algo *a[3] = {NULL, NULL, NULL};
    void *ws = NULL;
    if (u.x->numel > 0 && u.w->numel > 0) { /* else C = 0: dx and dw are empty */
        const conv_inputs in = {u.x->data, u.w->data, u.dy->data};
        st = prepare(dev, cb, &g, op->math, NEAT_F32, which, nwhich, &in, &p, a, &ws, what);
        if (st) return st;
    }
    const float *dz = u.dy->data;
    if (u.act != NEAT_ACT_NONE) {
        void *buf;
        st = cuda_scratch(cb, 0, (size_t)ny * sizeof(float), &buf);
        if (st) return st;
        float *z = (float *)buf;
        if (u.act == NEAT_ACT_GELU) { /* z = conv(x, w) + b, then dz = dy gelu'(z) in place */
            if (p)
                st = run_forward(d, p, a[0], ws, u.x->data, u.w->data, z, what);
            else
                st = cuda_fill_f32(dev, z, ny, 0.0f, what);
            if (!st)
                st = cuda_bias_act(dev, z, u.b ? u.b->data : NULL, ny, g.p * g.q, g.k,
                                   NEAT_ACT_NONE, what);
            if (!st) st = cuda_act_grad(dev, u.act, z, NULL, u.dy->data, z, ny, what);
        } else {
            st = cuda_act_grad(dev, u.act, NULL, u.y->data, u.dy->data, z, ny, what);
        }
        if (st) return st;
        dz = z;
    }
    st = backward_data_filter(dev, p, a, u.act == NEAT_ACT_GELU, ws, u, dz, beta, what);
    if (st) return st;
    if (u.db) { /* db[k] = sum_n (sum_pq dz[n, k, pq]) */
        void *sums;
        st = cuda_scratch(cb, 2, (size_t)(g.n * g.k) * sizeof(float), &sums);
        if (!st)
            st = cuda_sum3(dev, cb, 3, dz, g.n * g.k, g.p * g.q, 1, 1.0f, 0, (float *)sums, what);
        if (!st)
            st = cuda_sum3(dev, cb, 5, (const float *)sums, 1, g.n, g.k, 1.0f, u.accumulate,
                           u.db->data, what);
    }
    return st;
}

} /* extern "C" */
