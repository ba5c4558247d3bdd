/*
 * conv_engine.cu — cuDNN's convolution engines through its backend (graph) API, as timed
 * candidates beside the legacy algorithms (conv_plan.cu's conv_tune).
 *
 * The legacy API names 6 to 8 algorithms per direction; behind the backend API cuDNN offers
 * dozens of engine configurations (kernels with their tile and split choices), which is what
 * PyTorch times under cudnn.benchmark. bench/micro/conv_engines.c on the H200 (2026-11-30,
 * 19:21 UTC, cuDNN 9.14) found the best allowed engine at 0.30-0.98 of the best legacy
 * algorithm's time on every layer it tried: conv2d_256f's strict backward filter 0.45 against
 * 1.50 ms, its TF32 forward 0.16 against 0.28, LeNet's bf16 conv2 backward data 0.029 against
 * 0.094.
 *
 * An engine runs only what a legacy algorithm of the same plan would be allowed to. First by
 * cuDNN's numerical notes (engine_allowed): strict float32 no tensor cores and no FFT or
 * Winograd; half no FFT or Winograd; none rounds float32 inputs to 16 bits or reduces in
 * reduced precision; never a nondeterministic one (the legacy side prefers deterministic
 * algorithms too, and among engines the heuristics always offered deterministic ones); never
 * one that compiles kernels at run time (seconds at a first use). The notes are not enough:
 * one engine without an FFT or Winograd note broke strict float32's exactness on integers
 * (conv_plan.cu's probe_engines says which), so for strict float32 and half tensors each
 * engine must also reproduce the exact result on small-integer inputs before it is timed
 * (the probe kernels below). An engine's alpha and beta are part of its operation graph:
 * these are built with beta = 0, so an accumulating backward (beta = 1) runs the slot's
 * legacy algorithm, as do tensors not 16-byte aligned.
 */
#include "conv.cuh"

#include <string.h>

/* The engine configurations the heuristics are asked for; how many of the first admitted
 * ones are taken whatever their engine (conv_engines). */
#define ENGINE_HEUR_MAX 64
#define ENGINE_FIRST 8

#define BE_TRY(call)                                                                               \
    do {                                                                                           \
        if ((call) != CUDNN_STATUS_SUCCESS) goto fail;                                             \
    } while (0)

static cudnnDataType_t dnn_type(int dtype) {
    return dtype == NEAT_BF16  ? CUDNN_DATA_BFLOAT16
           : dtype == NEAT_F16 ? CUDNN_DATA_HALF
                               : CUDNN_DATA_FLOAT;
}

/* A finalized tensor descriptor of dims [a, b, c, e] (N, C, H, W) with unique id uid, laid
 * out NCHW, or NHWC when nhwc. */
static cudnnStatus_t tensor_desc(cudnnBackendDescriptor_t *t, int64_t uid, cudnnDataType_t dt,
                                 int64_t nhwc, int64_t a, int64_t b, int64_t c, int64_t e) {
    int64_t dims[4] = {a, b, c, e}, str[4] = {b * c * e, c * e, e, 1}, align = 16;
    if (nhwc) str[1] = 1, str[2] = e * b, str[3] = b;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t);
    if (s) return s;
    if ((s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
                                      &dt)) ||
        (s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4,
                                      dims)) ||
        (s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str)) ||
        (s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1,
                                      &uid)) ||
        (s = cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1,
                                      &align)) ||
        (s = cudnnBackendFinalize(*t))) {
        cudnnBackendDestroyDescriptor(*t);
        *t = NULL;
    }
    return s;
}

/* Whether an engine with these notes keeps the plan's numerical rules (see the top). */
static int engine_allowed(const conv_plan *p, const cudnnBackendDescriptor_t eng) {
    cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t k = 0, kb = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &k, nn) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &kb, bn) != CUDNN_STATUS_SUCCESS)
        return 0; /* notes unknown: not trusted */
    int strict = p->math == NEAT_MATH_STRICT && p->dtype == NEAT_F32;
    for (int64_t i = 0; i < kb; i++)
        if (bn[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) return 0;
    for (int64_t i = 0; i < k; i++) switch (nn[i]) {
        case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
            if (strict) return 0;
            break;
        case CUDNN_NUMERICAL_NOTE_FFT:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6:
        case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13:
            if (strict || p->dtype != NEAT_F32) return 0;
            break;
        case CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC:
        case CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS:
        case CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION: return 0;
        default: break;
        }
    return 1;
}

/* The operation graph of the plan's convolution in direction kind (beta = 0). */
static cudnnStatus_t op_graph(cuda_device *d, const conv_plan *p, int kind,
                              cudnnBackendDescriptor_t desc[6]) {
    const nm_conv_geom &g = p->g;
    cudnnBackendDescriptor_t &x = desc[0], &w = desc[1], &y = desc[2], &cd = desc[3], &op = desc[4],
                             &graph = desc[5];
    cudnnDataType_t dt = dnn_type(p->dtype), comp = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t two = 2, dil[2] = {g.dh, g.dw}, str[2] = {g.sh, g.sw}, pad[2] = {g.ph, g.pw};
    float alpha = 1.0f, beta = 0.0f;
    static const cudnnBackendDescriptorType_t types[] = {
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
    /* attribute names per kind: x, w, y, conv, alpha, beta */
    static const cudnnBackendAttributeName_t names[3][6] = {
        {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA}};
    const cudnnBackendAttributeName_t *nm = names[kind];
    cudnnStatus_t s;
    if ((s = tensor_desc(&x, 'x', dt, g.nhwc, g.n, g.c, g.h, g.w)) ||
        (s = tensor_desc(&w, 'w', dt, g.nhwc, g.k, g.c / g.groups, g.kh, g.kw)) ||
        (s = tensor_desc(&y, 'y', dt, g.nhwc, g.n, g.k, g.p, g.q)))
        return s;
    if ((s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &cd)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
                                      &comp)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                      CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1,
                                      &two)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2,
                                      dil)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64,
                                      2, str)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2,
                                      pad)) ||
        (s = cudnnBackendSetAttribute(cd, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2,
                                      pad)) ||
        (s = cudnnBackendFinalize(cd)))
        return s;
    if ((s = cudnnBackendCreateDescriptor(types[kind], &op)) ||
        (s = cudnnBackendSetAttribute(op, nm[0], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x)) ||
        (s = cudnnBackendSetAttribute(op, nm[1], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w)) ||
        (s = cudnnBackendSetAttribute(op, nm[2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y)) ||
        (s = cudnnBackendSetAttribute(op, nm[3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd)) ||
        (s = cudnnBackendSetAttribute(op, nm[4], CUDNN_TYPE_FLOAT, 1, &alpha)) ||
        (s = cudnnBackendSetAttribute(op, nm[5], CUDNN_TYPE_FLOAT, 1, &beta)) ||
        (s = cudnnBackendFinalize(op)))
        return s;
    if ((s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph)) ||
        (s = cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS,
                                      CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op)) ||
        (s = cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                      &d->dnn)) ||
        (s = cudnnBackendFinalize(graph)))
        return s;
    return CUDNN_STATUS_SUCCESS;
}

/* Up to max engine candidates for kind (CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER) into out,
 * from the heuristics' list (mode INSTANT), each an execution plan built and finalized, its
 * workspace at most ws_max. Returns how many; 0 when cuDNN offers none or fails (the legacy
 * algorithms then stand alone: never the op's error). Host calls only. */
int conv_engines(cuda_device *d, const conv_plan *p, int kind, size_t ws_max, conv_cand *out,
                 int max) {
    cudnnBackendDescriptor_t desc[6] = {NULL, NULL, NULL, NULL, NULL, NULL}, heur = NULL;
    cudnnBackendDescriptor_t cfg[ENGINE_HEUR_MAX];
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_INSTANT;
    int ncfg = 0, n = 0, take[ENGINE_HEUR_MAX] = {0}, admitted = 0, taken = 0;
    int64_t got = 0, ids[ENGINE_HEUR_MAX];
    BE_TRY(op_graph(d, p, kind, desc));
    BE_TRY(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    BE_TRY(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc[5]));
    BE_TRY(
        cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    BE_TRY(cudnnBackendFinalize(heur));
    for (; ncfg < ENGINE_HEUR_MAX; ncfg++)
        BE_TRY(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg[ncfg]));
    BE_TRY(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, ENGINE_HEUR_MAX, &got, cfg));
    /* Which configurations: the first ENGINE_FIRST the rules admit, in the heuristics' order
     * (for TF32 the fastest were its 3rd, 8th and 15th, all of one engine with other knobs),
     * then the first admitted configuration of each engine not yet taken (strict float32's
     * fastest exact ones, for LeNet's forward and backward data, were the heuristics' 10th
     * and 28th: bench/micro/conv_engines.c), up to max in all. */
    for (int64_t i = 0; i < got && i < ENGINE_HEUR_MAX; i++) {
        int64_t cnt = 0;
        cudnnBackendDescriptor_t eng = NULL;
        ids[i] = -1;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng)) continue;
        if (cudnnBackendGetAttribute(cfg[i], CUDNN_ATTR_ENGINECFG_ENGINE,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cnt,
                                     &eng) == CUDNN_STATUS_SUCCESS &&
            engine_allowed(p, eng) &&
            cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &cnt,
                                     &ids[i]) == CUDNN_STATUS_SUCCESS)
            take[i] = admitted++ < ENGINE_FIRST && taken < max ? (taken++, 1) : 0;
        else
            ids[i] = -1;
        cudnnBackendDestroyDescriptor(eng);
    }
    for (int64_t i = 0; i < got && i < ENGINE_HEUR_MAX && taken < max; i++) {
        if (ids[i] < 0 || take[i]) continue;
        int seen = 0;
        for (int64_t j = 0; j < i && !seen; j++) seen = take[j] && ids[j] == ids[i];
        if (!seen) take[i] = 1, taken++;
    }
    for (int64_t i = 0; i < got && i < ENGINE_HEUR_MAX && n < max; i++) {
        if (!take[i]) continue;
        int64_t cnt = 0, ws = 0;
        cudnnBackendDescriptor_t plan = NULL;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) continue;
        if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                     &d->dnn) ||
            cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]) ||
            cudnnBackendFinalize(plan) ||
            cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, &cnt, &ws) ||
            ws < 0 || (size_t)ws > ws_max) {
            cudnnBackendDestroyDescriptor(plan);
            continue;
        }
        conv_cand *c = &out[n++];
        memset(c, 0, sizeof *c);
        c->algo = CONV_ALGO_ENGINE;
        c->math = CUDNN_DEFAULT_MATH; /* not used: the engine's own */
        c->ws = (size_t)ws;
        c->engine = plan;
    }
fail:
    for (int i = 0; i < ncfg; i++) cudnnBackendDestroyDescriptor(cfg[i]);
    if (heur) cudnnBackendDestroyDescriptor(heur);
    for (int i = 5; i >= 0; i--)
        if (desc[i]) cudnnBackendDestroyDescriptor(desc[i]);
    return n;
}

/* The engines a slot holds: its choice and candidates not yet timed. */
void conv_drop_engines(conv_algo *a) {
    if (a->engine) cudnnBackendDestroyDescriptor(a->engine);
    a->engine = NULL;
    for (int i = 0; i < a->ncand; i++)
        if (a->cand[i].engine) cudnnBackendDestroyDescriptor(a->cand[i].engine);
    a->ncand = 0;
}
/* Whether engine runs may take these pointers (the graphs promise 16-byte alignment). */
int conv_engine_aligned(const void *a, const void *b, const void *c) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15) == 0;
}

/* One run of an engine's plan on the stream: x, w, y as the graph names them (dx for
 * backward data, dw for backward filter), workspace ws. */
cudnnStatus_t conv_engine_run(cuda_device *d, cudnnBackendDescriptor_t plan, const void *x,
                              const void *w, const void *y, void *ws) {
    int64_t uids[3] = {'x', 'w', 'y'};
    void *ptrs[3] = {(void *)x, (void *)w, (void *)y};
    cudnnBackendDescriptor_t pack = NULL;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (s) return s;
    if (!(s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                       3, uids)) &&
        !(s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                       CUDNN_TYPE_VOID_PTR, 3, ptrs)) &&
        !(s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR,
                                       1, &ws)) &&
        !(s = cudnnBackendFinalize(pack)))
        s = cudnnBackendExecute(d->dnn, plan, pack);
    cudnnBackendDestroyDescriptor(pack);
    return s;
}

/* ---- the exactness probe (conv_plan.cu's probe_engines) ------------------------------------ */

/* Small integers (-2..2) into n elements of dtype at p: exact in every dtype, and every sum a
 * convolution forms of their products is exact in float32 (below 2^24), so any algorithm that
 * multiplies and adds, in any order, gives the one exact result. */
__global__ void probe_fill_kernel(void *p, int64_t n, int dtype, uint32_t salt) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ salt;
        h ^= h >> 15;
        h *= 0x2c1b3c6du;
        h ^= h >> 12;
        float v = (float)((int)(h % 5u) - 2);
        if (dtype == NEAT_BF16)
            ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
        else if (dtype == NEAT_F16)
            ((__half *)p)[i] = __float2half(v);
        else
            ((float *)p)[i] = v;
    }
}

__global__ void probe_diff_kernel(const void *a, const void *b, int64_t n, int dtype, int *flag) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float x, y;
        if (dtype == NEAT_BF16)
            x = __bfloat162float(((const __nv_bfloat16 *)a)[i]),
            y = __bfloat162float(((const __nv_bfloat16 *)b)[i]);
        else if (dtype == NEAT_F16)
            x = __half2float(((const __half *)a)[i]), y = __half2float(((const __half *)b)[i]);
        else
            x = ((const float *)a)[i], y = ((const float *)b)[i];
        if (x != y) *flag = 1; /* NaN too: no exact result is NaN */
    }
}

static unsigned probe_blocks(int64_t n) {
    return (unsigned)((n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024);
}

cudaError_t conv_probe_fill(cudaStream_t s, void *p, int64_t n, int dtype, uint32_t salt) {
    if (n > 0) probe_fill_kernel<<<probe_blocks(n), 256, 0, s>>>(p, n, dtype, salt);
    return cudaGetLastError();
}

cudaError_t conv_probe_diff(cudaStream_t s, const void *a, const void *b, int64_t n, int dtype,
                            int *flag) {
    if (n > 0) probe_diff_kernel<<<probe_blocks(n), 256, 0, s>>>(a, b, n, dtype, flag);
    return cudaGetLastError();
}
