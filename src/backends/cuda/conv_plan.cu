/*
 * conv_plan.cu — the convolution's plans and the choice of its algorithms (conv.cu runs them).
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
 * and for strict float32's backward filter conv_gemm.cu's im2col GEMM (CONV_ALGO_GEMM) and
 * its direct 3x3 kernel where it fits (CONV_ALGO_DIRECT; NEATML_CONV_GEMM=0 leaves both out,
 * =2 takes the GEMM alone, =3 the direct kernel alone where it fits), again on the op's inputs,
 * several times each after a warm-up (conv_tune.cu), and keeps the one of least median
 * time, in its own memory; the fused forward's IMPLICIT_PRECOMP_GEMM slot keeps Find's first.
 * Never during a graph capture. NEATML_CONV_TUNE=0 (read at a device's first convolution)
 * keeps Find's first, for comparisons.
 *
 * Engines (add_engines, conv_engine.cu): beside the legacy algorithms, up to CONV_ENGINES
 * engine configurations of cuDNN's backend API are timed too (NEATML_CONV_ENGINE=0 leaves them
 * out, =2 takes the first allowed one), admitted by cuDNN's numerical notes under the same
 * rules and, for strict float32 and half tensors, by an exactness probe. A slot keeps its
 * fastest legacy algorithm for the runs an engine cannot take (accumulating, unaligned) and
 * the fastest engine where it beat that algorithm.
 */
#include "conv.cuh"

#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The device's cache of plans (lru.h), keyed by geometry and math mode: at most
 * NM_LRU_CAPACITY plans, the least recently used destroyed past it. Freeing a plan is safe
 * at any time, also while a CUDA graph captured with it lives: its descriptors and algorithm
 * choices are read by the cudnnConvolution* calls when they enqueue (or are captured), and a
 * graph keeps the launched kernels with their arguments, not these host objects. The
 * workspace a graph bakes in is the op's scratch slot 1, owned by the command buffer and not
 * by the plan. A plan evicted between a buffer's first submission and its capture is rebuilt
 * during the capture by host-only calls (descriptor creation, cuDNN's heuristic query: rank),
 * whose algorithm may not be the timed one: where its workspace exceeds the slot the capture
 * fails and the buffer runs op by op (correct, slower). */
typedef struct conv_key {
    nm_conv_geom g;
    int64_t math, dtype;
} conv_key;

static void plan_destroy(conv_plan *p) {
    if (!p) return;
    for (int i = 0; i < CONV_NALGO; i++) conv_drop_engines(&p->algo[i]);
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
neat_status conv_cache_get(cuda_device *d, const char *what) {
    if (d->conv) return NEAT_OK;
    d->conv = (struct cuda_conv_cache *)calloc(1, sizeof *d->conv);
    if (!d->conv) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    nm_lru_init(&d->conv->lru, NM_LRU_CAPACITY);
    const char *env = getenv("NEATML_CONV_FUSE");
    d->conv->fuse = env && env[0] >= '0' && env[0] <= '3' && !env[1] ? env[0] - '0' : 1;
    env = getenv("NEATML_CONV_TUNE");
    d->conv->tune = !(env && strcmp(env, "0") == 0);
    env = getenv("NEATML_CONV_GEMM");
    d->conv->gemm = env && env[0] >= '0' && env[0] <= '3' && !env[1] ? env[0] - '0' : 1;
    env = getenv("NEATML_CONV_ENGINE");
    d->conv->engine = env && env[0] >= '0' && env[0] <= '2' && !env[1] ? env[0] - '0' : 1;
    d->conv->small = d->conv_small; /* read when the device opened (cuda_conv2d_check) */
    return NEAT_OK;
}

/* cuDNN's descriptors take int: every size of the geometry must fit. */
extern "C" neat_status cuda_conv_dims_fit(const nm_conv_geom *g, const char *what) {
    const struct {
        const char *name;
        int64_t size;
    } dims[] = {{"N", g->n},
                {"C", g->c},
                {"H", g->h},
                {"W", g->w},
                {"K (filters)", g->k},
                {"output height", g->p},
                {"output width", g->q},
                {"kernel_h", g->kh},
                {"kernel_w", g->kw},
                {"stride_h", g->sh},
                {"stride_w", g->sw},
                {"pad_h", g->ph},
                {"pad_w", g->pw},
                {"dilation_h", g->dh},
                {"dilation_w", g->dw},
                {"groups", g->groups}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].size > INT_MAX)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: %s = %lld exceeds cuDNN's int range (the cuda backend takes "
                            "sizes up to %d)",
                            what, dims[i].name, (long long)dims[i].size, INT_MAX);
    return NEAT_OK;
}

static neat_status plan_get(cuda_device *d, const nm_conv_geom *g, neat_math_mode math,
                            neat_dtype dtype, conv_plan **out, const char *what) {
    neat_status st0 = conv_cache_get(d, what);
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
    /* Checked when the op was recorded (cuda_conv2d_check); again here, before any (int)
     * cast below, for a path that check might not foresee. */
    neat_status fit = cuda_conv_dims_fit(g, what);
    if (fit) return fit;
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
    /* dims in N, C, H, W order either way; the format gives the order in memory (NHWC:
     * filters KRSC, the [K, kh, kw, C/groups] of the API) */
    cudnnTensorFormat_t fmt = g->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    DNN_TRY(cudnnSetTensor4dDescriptor(p->xd, fmt, dt, (int)g->n, (int)g->c, (int)g->h, (int)g->w));
    DNN_TRY(cudnnSetTensor4dDescriptor(p->yd, fmt, dt, (int)g->n, (int)g->k, (int)g->p, (int)g->q));
    DNN_TRY(cudnnSetFilter4dDescriptor(p->wd, dt, fmt, (int)g->k, (int)(g->c / g->groups),
                                       (int)g->kh, (int)g->kw));
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

/* Memory for Find*Ex to run kind's algorithms in: an output of its own and the largest
 * workspace any algorithm asks for (in any math type pick may keep), at most CONV_WS_MAX;
 * zeroed, so that every byte the algorithms read was written (cuDNN's plain Find ran them on
 * memory it allocated and left uninitialised: 1.8 million initcheck reports inside its
 * kernels at 16:11 UTC). *mem NULL when cudaMalloc fails (the plain Find then). */
static void find_memory(cuda_device *d, conv_plan *p, int kind, cudnnMathType_t math, char **mem,
                        size_t *out, size_t *ws) {
    static const int count[] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
    static const cudnnMathType_t maths[] = {CUDNN_DEFAULT_MATH, CUDNN_TENSOR_OP_MATH,
                                            CUDNN_FMA_MATH};
    *mem = NULL;
    *out = (conv_out_bytes(p, kind) + 255) & ~(size_t)255;
    *ws = 0;
    for (int m = 0; m < 3; m++) {
        if (cudnnSetConvolutionMathType(p->cd, maths[m]) != CUDNN_STATUS_SUCCESS) continue;
        for (int algo = 0; algo < count[kind]; algo++) {
            size_t w = 0;
            if (ws_size(d->dnn, p, kind, algo, &w) == CUDNN_STATUS_SUCCESS && w <= CONV_WS_MAX &&
                w > *ws)
                *ws = w;
        }
    }
    cudnnSetConvolutionMathType(p->cd, math);
    if (cudaMalloc((void **)mem, *out + *ws) != cudaSuccess) {
        cudaGetLastError();
        *mem = NULL;
        return;
    }
    if (cudaMemsetAsync(*mem, 0, *out + *ws, d->stream) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(*mem);
        *mem = NULL;
    }
}

static neat_status rank(cuda_device *d, conv_plan *p, int kind, const conv_inputs *in,
                        conv_ranking *out, const char *what) {
    cudnnStatus_t s;
    /* Algorithms are ranked by running them (cuDNN's Find*Ex: it times every algorithm once,
     * on the op's inputs, in the zeroed memory of find_memory, and synchronizes): the
     * heuristic ranks a 27 TFLOP/s bf16 algorithm first on the H200 where the best runs at
     * 250. Strict float32 too since 2026-11-30 (the heuristic before): with FFT and
     * Winograd out (gemm_like) the heuristic's and Find's choices gave the same LeNet step
     * (0.84 and 0.89 ms; 0.33 with FFT), and the timing is what sets conv_gemm.cu's backward
     * filter beside cuDNN's (pick). Strict float32 is found in CUDNN_FMA_MATH
     * (CUDNN_DEFAULT_MATH lets cuDNN use TF32 for float data).
     * Not while the stream is being captured (a plan evicted between a buffer's first run
     * and its capture): the heuristic then, whose workspace may exceed the op's scratch slot,
     * which fails the capture and leaves the buffer running op by op: correct, slower.
     * Find's single timing is noisy: its first candidates are timed again (conv_tune). */
    int strict = p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32;
    int measure = !capturing(d);
    out->measured = measure;
    cudnnMathType_t math = strict                 ? CUDNN_FMA_MATH
                           : p->dtype == NEAT_F32 ? CUDNN_DEFAULT_MATH
                                                  : CUDNN_TENSOR_OP_MATH;
    char *mem = NULL;
    size_t ob = 0, wb = 0;
    if (measure) find_memory(d, p, kind, math, &mem, &ob, &wb);
    void *o = mem, *w = mem ? mem + ob : NULL;
    const char *call = !measure ? "cudnnGetConvolution*Algorithm_v7"
                       : mem    ? "cudnnFindConvolution*AlgorithmEx"
                                : "cudnnFindConvolution*Algorithm";
    out->n = 0;
    if (kind == CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t r[MAXR];
        if (!measure)
            s = cudnnGetConvolutionForwardAlgorithm_v7(d->dnn, p->xd, p->wd, p->cd, p->yd, MAXR,
                                                       &out->n, r);
        else if (mem)
            s = cudnnFindConvolutionForwardAlgorithmEx(d->dnn, p->xd, in->x, p->wd, in->w, p->cd,
                                                       p->yd, o, MAXR, &out->n, r, w, wb);
        else
            s = cudnnFindConvolutionForwardAlgorithm(d->dnn, p->xd, p->wd, p->cd, p->yd, MAXR,
                                                     &out->n, r);
        RANKED(r, out)
    } else if (kind == CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t r[MAXR];
        if (!measure)
            s = cudnnGetConvolutionBackwardDataAlgorithm_v7(d->dnn, p->wd, p->yd, p->cd, p->xd,
                                                            MAXR, &out->n, r);
        else if (mem)
            s = cudnnFindConvolutionBackwardDataAlgorithmEx(
                d->dnn, p->wd, in->w, p->yd, in->dy, p->cd, p->xd, o, MAXR, &out->n, r, w, wb);
        else
            s = cudnnFindConvolutionBackwardDataAlgorithm(d->dnn, p->wd, p->yd, p->cd, p->xd, MAXR,
                                                          &out->n, r);
        RANKED(r, out)
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t r[MAXR];
        if (!measure)
            s = cudnnGetConvolutionBackwardFilterAlgorithm_v7(d->dnn, p->xd, p->yd, p->cd, p->wd,
                                                              MAXR, &out->n, r);
        else if (mem)
            s = cudnnFindConvolutionBackwardFilterAlgorithmEx(
                d->dnn, p->xd, in->x, p->yd, in->dy, p->cd, p->wd, o, MAXR, &out->n, r, w, wb);
        else
            s = cudnnFindConvolutionBackwardFilterAlgorithm(d->dnn, p->xd, p->yd, p->cd, p->wd,
                                                            MAXR, &out->n, r);
        RANKED(r, out)
    }
    if (mem) cudaFree(mem); /* Find synchronized the device: nothing of it still runs */
    return cudnn_check(s, what, call);
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
    /* Strict float32's backward filter: conv_gemm.cu's two too, when candidates are timed;
     * under NEATML_CONV_GEMM=2 its im2col GEMM alone, under 3 its direct kernel alone where
     * it fits, else the GEMM (so that the tests reach them whatever the timings). The GEMM
     * reads NCHW only; the direct kernel either layout. Forced with neither usable, cuDNN's
     * candidates stay. */
    size_t direct_ws = cuda_conv_direct_wgrad_ws(&p->g), own_ws = cuda_conv_gemm_wgrad_ws(&p->g);
    int gemm = d->conv->gemm, timed = gemm == 1 && most > 1;
    int direct = direct_ws <= CONV_WS_MAX, own = own_ws <= CONV_WS_MAX && !p->g.nhwc;
    int take_direct = direct && (timed || gemm == 3);
    int take_own = own && (timed || gemm == 2 || (gemm == 3 && !direct));
    if (which == CONV_BWD_FILTER && strict && p->g.groups == 1 && (take_direct || take_own)) {
        if (gemm >= 2) a->ncand = 0;
        if (take_direct) {
            conv_cand *c = &a->cand[a->ncand++];
            c->algo = CONV_ALGO_DIRECT;
            c->math = CUDNN_FMA_MATH;
            c->ws = direct_ws;
        }
        if (take_own) {
            conv_cand *c = &a->cand[a->ncand++];
            c->algo = CONV_ALGO_GEMM;
            c->math = CUDNN_FMA_MATH;
            c->ws = own_ws;
        }
    }
    if (a->ncand == 0) return 0;
    a->algo = a->cand[0].algo;
    a->math = a->cand[0].math;
    a->ws = a->cand[0].ws;
    a->ready = 1;
    return 1;
}

/* After pick: the engines of cuDNN's backend API that suit slot `which` join its candidates
 * (conv_engine.cu), when Find measured (not during a capture) and NEATML_CONV_ENGINE allows:
 * up to CONV_ENGINES to be timed, or under NEATML_CONV_ENGINE=2 the first allowed one, which
 * conv_tune then keeps whatever the timings (so that the tests run engines). Not for the fused
 * forward's slot (its call is the legacy one), nor where NEATML_CONV_GEMM=2 forces
 * conv_gemm.cu. Then the slot is timed only with two candidates or more. */
static void add_engines(cuda_device *d, conv_plan *p, int which, const conv_ranking *r,
                        conv_algo *a) {
    int mode = d->conv->engine;
    int strict = p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32;
    if (a->ready && which != CONV_FWD_PRECOMP && r->measured &&
        (mode == 2 || (mode == 1 && d->conv->tune)) &&
        !(which == CONV_BWD_FILTER && strict && d->conv->gemm >= 2))
        a->ncand += conv_engines(d, p, which, CONV_WS_MAX, &a->cand[a->ncand],
                                 mode == 2 ? 1 : CONV_ENGINES);
    if (a->ncand < 2) a->ncand = 0;
}

/* Choose the algorithm of `which` once. The forward's ranking serves both forward slots, so
 * a half convolution is timed by Find once. CONV_FWD_PRECOMP with nothing usable is kept as
 * algo -1 (the caller runs unfused); the other slots fail. */
static neat_status algo_get(cuda_device *d, conv_plan *p, int which, const conv_inputs *in,
                            const conv_algo **out, const char *what) {
    conv_algo *a = &p->algo[which];
    if (!a->ready) {
        int kind = which == CONV_FWD_PRECOMP ? CONV_FWD : which;
        conv_ranking r;
        neat_status st = rank(d, p, kind, in, &r, what);
        if (st) return st;
        if (kind == CONV_FWD && !p->algo[CONV_FWD].ready) {
            pick(d, p, CONV_FWD, kind, &r, &p->algo[CONV_FWD]);
            add_engines(d, p, CONV_FWD, &r, &p->algo[CONV_FWD]);
        }
        if (kind == CONV_FWD && !p->algo[CONV_FWD_PRECOMP].ready) {
            if (!pick(d, p, CONV_FWD_PRECOMP, kind, &r, &p->algo[CONV_FWD_PRECOMP]))
                p->algo[CONV_FWD_PRECOMP].algo = -1, p->algo[CONV_FWD_PRECOMP].ready = 1;
            add_engines(d, p, CONV_FWD_PRECOMP, &r, &p->algo[CONV_FWD_PRECOMP]);
        }
        if (kind != CONV_FWD) {
            pick(d, p, which, kind, &r, a);
            add_engines(d, p, which, &r, a);
        }
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

/* Plan, algorithms and workspace (scratch slot 1, sized for the largest algorithm the op
 * uses: asked with the same size at every submission). A slot's first eager use times its
 * candidates first (conv_tune), so that the scratch is sized for the algorithm kept. */
neat_status conv_prepare(nm_device *dev, nm_cmdbuf *cb, const nm_conv_geom *g, neat_math_mode math,
                         neat_dtype dtype, const int *which, int nwhich, const conv_inputs *in,
                         conv_plan **plan, const conv_algo **algos, void **ws, const char *what) {
    cuda_device *d = cuda_dev(dev);
    neat_status st = plan_get(d, g, math, dtype, plan, what);
    size_t need = 0;
    for (int i = 0; !st && i < nwhich; i++) {
        st = algo_get(d, *plan, which[i], in, &algos[i], what);
        if (!st && algos[i]->ncand > 1 && !capturing(d)) /* first eager use: time candidates */
            st = conv_tune(dev, *plan, which[i], &(*plan)->algo[which[i]], in, what);
        if (!st && algos[i]->ws > need) need = algos[i]->ws;
        if (!st && algos[i]->engine && algos[i]->engine_ws > need) need = algos[i]->engine_ws;
    }
    if (st) return st;
    *ws = NULL;
    /* Zeroed when the slot is (re)allocated, once: with the debug pool, initcheck reported
     * 5,148 reads of never-written workspace bytes by cuDNN's nhwcToNchwKernel inside
     * cudnnConvolutionBackwardData (test_conformance@0/6, H200, 18:4x UTC); whether cuDNN
     * reads bytes it never writes or the tool misses stores of the kernel before it, the
     * workspace now holds defined bytes. */
    return need ? cuda_scratch_zeroed(dev, cb, 1, need, ws) : NEAT_OK;
}
