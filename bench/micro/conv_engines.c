/*
 * conv_engines.c — cuDNN's convolution engines through its backend (graph) API against the
 * legacy algorithms neatml's conv_plan.cu picks from, on the benchmark's and LeNet's layers:
 * every engine configuration the heuristics offer (modes INSTANT, B and FALLBACK), built,
 * run on the same memory and timed (median of REPS after a warm-up, CUDA events), with its
 * numerical notes; then every legacy algorithm of the same math, timed the same way. Per
 * case the fastest of each side under each rule: "strict" (no tensor cores, no FFT or
 * Winograd), "tf32" (float data, anything), "half" (no FFT or Winograd, no down-conversion).
 * Inputs are small integers (-2..2); in the strict cases each engine's output is compared
 * with legacy algorithm 0's (IMPLICIT_GEMM / ALGO_0 in FMA math), the exact result ("exact
 * on integers" or "INEXACT"). For deciding whether conv_plan.cu should run engines of the
 * backend API. Not part of the
 * build; on a CUDA machine:
 *   gcc -O2 -std=c11 -I/usr/local/cuda/include bench/micro/conv_engines.c \
 *       -L/usr/local/cuda/lib64 -lcudnn -lcudart -lm -o /tmp/conv_engines && /tmp/conv_engines
 */
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPS 15
#define MAXCFG 64

enum { FWD, DGRAD, WGRAD };
static const char *kind_name[] = {"fwd", "dgrad", "wgrad"};

typedef struct {
    const char *name;
    int kind;
    int64_t n, c, h, w, k, r, pad;
    cudnnDataType_t dt; /* data type; compute type is always float */
    int nhwc, tc;       /* channels-last tensors; tensor cores (TF32 for float) allowed */
} conv_case;

static cudnnHandle_t H;
static void *X, *W, *Y, *WS;
static size_t WS_BYTES = (size_t)1 << 30;
/* Strict cases: the legacy IMPLICIT_GEMM / ALGO_0 result on small-integer inputs (exact), and
 * the output's element count; each engine's output is compared with it. */
static float *REF, *GOT;
static size_t REF_N;

/* The output buffer of a case's direction, and its element count. */
static void *out_of(int kind) { return kind == FWD ? Y : kind == DGRAD ? X : W; }
static size_t out_n(const conv_case *cc);

/* Elements of the case's output that differ from REF (-1: could not read). */
static long inexact(const conv_case *cc) {
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(GOT, out_of(cc->kind), REF_N * sizeof(float), cudaMemcpyDeviceToHost))
        return -1;
    long n = 0;
    for (size_t i = 0; i < REF_N; i++) n += GOT[i] != REF[i];
    return n;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                          \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudnnGetErrorString(s_)); \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ms of REPS runs of run(arg) after two warm-ups; negative on failure. */
static double timed(int (*run)(void *), void *arg) {
    double t[REPS];
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 2; i++)
        if (run(arg)) return -1;
    for (int i = 0; i < REPS; i++) {
        cudaEventRecord(a, 0);
        if (run(arg)) return -1;
        cudaEventRecord(b, 0);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        t[i] = ms;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    if (cudaGetLastError() != cudaSuccess) return -1;
    qsort(t, REPS, sizeof t[0], cmpd);
    return t[REPS / 2];
}

static int tensor(cudnnBackendDescriptor_t *d, int64_t uid, cudnnDataType_t dt, int nhwc, int64_t n,
                  int64_t c, int64_t h, int64_t w) {
    int64_t dims[4] = {n, c, h, w}, str[4];
    if (nhwc) {
        str[0] = c * h * w, str[1] = 1, str[2] = w * c, str[3] = c;
    } else {
        str[0] = c * h * w, str[1] = h * w, str[2] = w, str[3] = 1;
    }
    int64_t align = 16;
    CK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, d));
    CK(cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    CK(cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    CK(cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str));
    CK(cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    CK(cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    CK(cudnnBackendFinalize(*d));
    return 0;
}

typedef struct {
    cudnnBackendDescriptor_t plan, pack;
} exec_arg;

static int run_plan(void *p) {
    exec_arg *e = p;
    return cudnnBackendExecute(H, e->plan, e->pack) == CUDNN_STATUS_SUCCESS ? 0 : -1;
}

/* Notes of one engine config: flags. */
enum { N_TC = 1, N_FFT = 2, N_WINO = 4, N_NONDET = 8, N_DOWN = 16, N_RRED = 32, N_RTC = 64 };

static int notes_of(cudnnBackendDescriptor_t cfg, int64_t *id) {
    cudnnBackendDescriptor_t eng;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng)) return 0;
    int64_t cnt = 0;
    int f = 0;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &cnt, &eng) == CUDNN_STATUS_SUCCESS) {
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &cnt,
                                 id);
        cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        int64_t k = 0;
        if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                     CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &k,
                                     nn) == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < k; i++) switch (nn[i]) {
                case CUDNN_NUMERICAL_NOTE_TENSOR_CORE: f |= N_TC; break;
                case CUDNN_NUMERICAL_NOTE_FFT: f |= N_FFT; break;
                case CUDNN_NUMERICAL_NOTE_WINOGRAD:
                case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4:
                case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6:
                case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13: f |= N_WINO; break;
                case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC: f |= N_NONDET; break;
                case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS: f |= N_DOWN; break;
                case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: f |= N_RRED; break;
                default: break;
                }
    }
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t k = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &k, bn) == CUDNN_STATUS_SUCCESS)
        for (int i = 0; i < k; i++)
            if (bn[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) f |= N_RTC;
    cudnnBackendDestroyDescriptor(eng);
    return f;
}

static int allowed(const conv_case *cc, int f) {
    if (f & (N_DOWN | N_RRED)) return 0;
    if (cc->dt == CUDNN_DATA_FLOAT && !cc->tc) return !(f & (N_TC | N_FFT | N_WINO));
    if (cc->dt != CUDNN_DATA_FLOAT) return !(f & (N_FFT | N_WINO));
    return 1;
}

/* Every heuristic config of the backend API: timed; the best allowed one's time (ms). */
static double engines(const conv_case *cc, int verbose) {
    int64_t p = cc->pad, oh = cc->h + 2 * p - cc->r + 1, ow = cc->w + 2 * p - cc->r + 1;
    cudnnBackendDescriptor_t xd, wd, yd, cd, op, graph;
    if (tensor(&xd, 'x', cc->dt, cc->nhwc, cc->n, cc->c, cc->h, cc->w) ||
        tensor(&wd, 'w', cc->dt, cc->nhwc, cc->k, cc->c, cc->r, cc->r) ||
        tensor(&yd, 'y', cc->dt, cc->nhwc, cc->n, cc->k, oh, ow))
        return -1;
    int64_t two = 2, ones[2] = {1, 1}, pads[2] = {p, p};
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    CK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &cd));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
                                &comp));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE,
                                1, &mode));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1,
                                &two));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, ones));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2,
                                ones));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2,
                                pads));
    CK(cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2,
                                pads));
    CK(cudnnBackendFinalize(cd));
    float alpha = 1, beta = 0;
    static const cudnnBackendDescriptorType_t opt[] = {
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
    CK(cudnnBackendCreateDescriptor(opt[cc->kind], &op));
    if (cc->kind == FWD) {
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                    CUDNN_TYPE_FLOAT, 1, &alpha));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                    CUDNN_TYPE_FLOAT, 1, &beta));
    } else if (cc->kind == DGRAD) {
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                    CUDNN_TYPE_FLOAT, 1, &alpha));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
                                    CUDNN_TYPE_FLOAT, 1, &beta));
    } else {
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                                    CUDNN_TYPE_FLOAT, 1, &alpha));
        CK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
                                    CUDNN_TYPE_FLOAT, 1, &beta));
    }
    CK(cudnnBackendFinalize(op));
    CK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
    CK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                1, &op));
    CK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &H));
    CK(cudnnBackendFinalize(graph));

    int64_t uids[3] = {'x', 'w', 'y'};
    void *ptrs[3] = {X, W, Y};
    double best = -1;
    static const cudnnBackendHeurMode_t modes[] = {CUDNN_HEUR_MODE_INSTANT, CUDNN_HEUR_MODE_B,
                                                   CUDNN_HEUR_MODE_FALLBACK};
    static const char *mode_name[] = {"instant", "B", "fallback"};
    for (int m = 0; m < 3; m++) {
        cudnnBackendDescriptor_t heur;
        CK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
        CK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
        CK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
                                    &modes[m]));
        if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {
            printf("    %s: heuristics refused\n", mode_name[m]);
            cudnnBackendDestroyDescriptor(heur);
            continue;
        }
        cudnnBackendDescriptor_t cfg[MAXCFG];
        for (int i = 0; i < MAXCFG; i++)
            CK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg[i]));
        int64_t n = 0;
        CK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, MAXCFG, &n, cfg));
        for (int i = 0; i < n; i++) {
            int64_t id = -1;
            int f = notes_of(cfg[i], &id);
            cudnnBackendDescriptor_t plan, pack;
            if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan))
                continue;
            cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                     &H);
            cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]);
            if (cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS) {
                if (verbose)
                    printf("    %-8s cfg %2d engine %3lld: plan refused\n", mode_name[m], i,
                           (long long)id);
                cudnnBackendDestroyDescriptor(plan);
                continue;
            }
            int64_t ws = 0, cnt;
            cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, &cnt, &ws);
            double t = -1;
            if ((size_t)ws <= WS_BYTES &&
                !cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack)) {
                cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                         3, uids);
                cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                         CUDNN_TYPE_VOID_PTR, 3, ptrs);
                cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                         CUDNN_TYPE_VOID_PTR, 1, &WS);
                if (cudnnBackendFinalize(pack) == CUDNN_STATUS_SUCCESS) {
                    exec_arg e = {plan, pack};
                    t = timed(run_plan, &e);
                }
                cudnnBackendDestroyDescriptor(pack);
            }
            int ok = allowed(cc, f);
            long bad = REF_N && t > 0 ? inexact(cc) : 0;
            if (verbose || (ok && t > 0 && (best < 0 || t < best * 1.3)))
                printf("    %-8s cfg %2d engine %3lld%s%s%s%s%s ws %8.2f MB: %8.4f ms%s%s",
                       mode_name[m], i, (long long)id, f & N_TC ? " tc" : "",
                       f & N_FFT ? " fft" : "", f & N_WINO ? " winograd" : "",
                       f & N_NONDET ? " nondet" : "",
                       f & (N_DOWN | N_RRED) ? " reduced"
                       : f & N_RTC           ? " runtime-compiled"
                                             : "",
                       ws / 1e6, t, ok ? "" : " (not allowed)",
                       REF_N ? (bad ? "; INEXACT on integers: " : "; exact on integers\n") : "\n");
            if (verbose || (ok && t > 0 && (best < 0 || t < best * 1.3)))
                if (REF_N && bad) printf("%ld of %zu elements\n", bad, REF_N);
            if (ok && t > 0 && (best < 0 || t < best)) best = t;
            cudnnBackendDestroyDescriptor(plan);
        }
        for (int i = 0; i < MAXCFG; i++) cudnnBackendDestroyDescriptor(cfg[i]);
        cudnnBackendDestroyDescriptor(heur);
    }
    cudnnBackendDestroyDescriptor(graph);
    cudnnBackendDestroyDescriptor(op);
    cudnnBackendDestroyDescriptor(cd);
    cudnnBackendDestroyDescriptor(xd);
    cudnnBackendDestroyDescriptor(wd);
    cudnnBackendDestroyDescriptor(yd);
    return best;
}

/* The legacy API, as conv_plan.cu uses it: every algorithm of the case's kind in the math
 * type neatml would set, timed the same way; the best allowed one's time. */
typedef struct {
    const conv_case *cc;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t c;
    int algo;
    size_t ws;
} legacy_arg;

static int run_legacy(void *p) {
    legacy_arg *a = p;
    float one = 1, zero = 0;
    cudnnStatus_t s;
    if (a->cc->kind == FWD)
        s = cudnnConvolutionForward(H, &one, a->x, X, a->w, W, a->c, a->algo, WS, a->ws, &zero,
                                    a->y, Y);
    else if (a->cc->kind == DGRAD)
        s = cudnnConvolutionBackwardData(H, &one, a->w, W, a->y, Y, a->c, a->algo, WS, a->ws, &zero,
                                         a->x, X);
    else
        s = cudnnConvolutionBackwardFilter(H, &one, a->x, X, a->y, Y, a->c, a->algo, WS, a->ws,
                                           &zero, a->w, W);
    return s == CUDNN_STATUS_SUCCESS ? 0 : -1;
}

/* Integers -2..2 into X, W, Y (as float; read as bf16 the same bits are small integers and
 * zeros), and for strict cases REF = the legacy algorithm 0 result. */
static size_t out_n(const conv_case *cc) {
    int64_t p = cc->pad, oh = cc->h + 2 * p - cc->r + 1, ow = cc->w + 2 * p - cc->r + 1;
    return cc->kind == FWD     ? (size_t)(cc->n * cc->k * oh * ow)
           : cc->kind == DGRAD ? (size_t)(cc->n * cc->c * cc->h * cc->w)
                               : (size_t)(cc->k * cc->c * cc->r * cc->r);
}

static double legacy_run(const conv_case *cc, int only_algo0);

static void prepare(const conv_case *cc, const float *pattern, size_t big) {
    cudaMemcpy(X, pattern, big, cudaMemcpyHostToDevice);
    cudaMemcpy(W, pattern, big, cudaMemcpyHostToDevice);
    cudaMemcpy(Y, pattern, big, cudaMemcpyHostToDevice);
    REF_N = 0;
    if (cc->dt != CUDNN_DATA_FLOAT || cc->tc) return;
    size_t n = out_n(cc);
    if (legacy_run(cc, 1) < 0 || cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(REF, out_of(cc->kind), n * sizeof(float), cudaMemcpyDeviceToHost))
        return;
    REF_N = n;
}

static double legacy(const conv_case *cc) { return legacy_run(cc, 0); }

static double legacy_run(const conv_case *cc, int only_algo0) {
    legacy_arg a = {cc};
    int64_t p = cc->pad, oh = cc->h + 2 * p - cc->r + 1, ow = cc->w + 2 * p - cc->r + 1;
    cudnnTensorFormat_t fmt = cc->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    cudnnCreateTensorDescriptor(&a.x);
    cudnnCreateTensorDescriptor(&a.y);
    cudnnCreateFilterDescriptor(&a.w);
    cudnnCreateConvolutionDescriptor(&a.c);
    cudnnSetTensor4dDescriptor(a.x, fmt, cc->dt, cc->n, cc->c, cc->h, cc->w);
    cudnnSetTensor4dDescriptor(a.y, fmt, cc->dt, cc->n, cc->k, oh, ow);
    cudnnSetFilter4dDescriptor(a.w, cc->dt, fmt, cc->k, cc->c, cc->r, cc->r);
    cudnnSetConvolution2dDescriptor(a.c, p, p, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                    CUDNN_DATA_FLOAT);
    cudnnMathType_t math = cc->dt != CUDNN_DATA_FLOAT ? CUDNN_TENSOR_OP_MATH
                           : cc->tc                   ? CUDNN_DEFAULT_MATH
                                                      : CUDNN_FMA_MATH;
    cudnnSetConvolutionMathType(a.c, math);
    int nalgo = cc->kind == FWD ? 8 : cc->kind == DGRAD ? 6 : 7;
    double best = -1;
    for (int al = 0; al < (only_algo0 ? 1 : nalgo); al++) {
        /* FFT and Winograd: fwd 4,5,6,7; dgrad 2,3,4,5; wgrad 2(FFT),4,5,6 */
        int transform = cc->kind == FWD     ? al >= 4
                        : cc->kind == DGRAD ? al >= 2
                                            : al == 2 || al >= 4;
        if ((cc->dt != CUDNN_DATA_FLOAT || !cc->tc) && transform) continue;
        size_t ws = 0;
        cudnnStatus_t s =
            cc->kind == FWD
                ? cudnnGetConvolutionForwardWorkspaceSize(H, a.x, a.w, a.c, a.y, al, &ws)
            : cc->kind == DGRAD
                ? cudnnGetConvolutionBackwardDataWorkspaceSize(H, a.w, a.y, a.c, a.x, al, &ws)
                : cudnnGetConvolutionBackwardFilterWorkspaceSize(H, a.x, a.y, a.c, a.w, al, &ws);
        if (s != CUDNN_STATUS_SUCCESS || ws > WS_BYTES) continue;
        a.algo = al;
        a.ws = ws;
        if (only_algo0) {
            best = run_legacy(&a) ? -1 : 0;
            break;
        }
        double t = timed(run_legacy, &a);
        cudaGetLastError();
        if (t > 0) printf("    legacy algo %d ws %8.2f MB: %8.4f ms\n", al, ws / 1e6, t);
        if (t > 0 && (best < 0 || t < best)) best = t;
    }
    cudnnDestroyTensorDescriptor(a.x);
    cudnnDestroyTensorDescriptor(a.y);
    cudnnDestroyFilterDescriptor(a.w);
    cudnnDestroyConvolutionDescriptor(a.c);
    return best;
}

int main(int argc, char **argv) {
    int verbose = argc > 1 && !strcmp(argv[1], "-v");
    static const conv_case cases[] = {
        {"conv2d_256f tf32", FWD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_FLOAT, 0, 1},
        {"conv2d_256f strict", FWD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"conv2d_256f strict", DGRAD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"conv2d_256f strict", WGRAD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"conv2d_256f bf16 nchw", FWD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_BFLOAT16, 0, 1},
        {"conv2d_256f bf16 nhwc", FWD, 32, 64, 56, 56, 256, 3, 1, CUDNN_DATA_BFLOAT16, 1, 1},
        {"lenet conv1 b128 strict", DGRAD, 128, 1, 28, 28, 32, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv1 b128 strict", WGRAD, 128, 1, 28, 28, 32, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b128 strict", FWD, 128, 32, 14, 14, 64, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b128 strict", DGRAD, 128, 32, 14, 14, 64, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b128 strict", WGRAD, 128, 32, 14, 14, 64, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b1024 strict", DGRAD, 1024, 32, 14, 14, 64, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b1024 strict", WGRAD, 1024, 32, 14, 14, 64, 3, 1, CUDNN_DATA_FLOAT, 0, 0},
        {"lenet conv2 b128 bf16", WGRAD, 128, 32, 14, 14, 64, 3, 1, CUDNN_DATA_BFLOAT16, 0, 1},
        {"lenet conv2 b128 bf16", DGRAD, 128, 32, 14, 14, 64, 3, 1, CUDNN_DATA_BFLOAT16, 0, 1},
    };
    printf("cuDNN %zu (headers %d.%d.%d)\n", cudnnGetVersion(), CUDNN_MAJOR, CUDNN_MINOR,
           CUDNN_PATCHLEVEL);
    if (cudnnCreate(&H) != CUDNN_STATUS_SUCCESS) return 1;
    size_t big = (size_t)256 << 20;
    if (cudaMalloc(&X, big) || cudaMalloc(&W, big) || cudaMalloc(&Y, big) ||
        cudaMalloc(&WS, WS_BYTES))
        return 1;
    float *pattern = malloc(big);
    REF = malloc(big);
    GOT = malloc(big);
    if (!pattern || !REF || !GOT) return 1;
    for (size_t i = 0; i < big / sizeof(float); i++)
        pattern[i] = (float)((int)((i * 2654435761u >> 7) % 5u) - 2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *cc = &cases[i];
        printf("%s %s:\n", cc->name, kind_name[cc->kind]);
        prepare(cc, pattern, big);
        double e = engines(cc, verbose);
        double l = legacy(cc);
        printf("  => best engine %.4f ms, best legacy %.4f ms, ratio %.2f\n", e, l,
               e > 0 && l > 0 ? e / l : 0);
        fflush(stdout);
    }
    return 0;
}
