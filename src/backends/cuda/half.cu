/*
 * half.cu — bf16 and f16 tensors on the CUDA backend: neat_cast, fill, which ops run
 * natively on half tensors (cuda_native_half), the float32 fallback for every other op
 * (cuda_run_op), and the small half kernels of the native matmul/linear/conv paths.
 *
 * Half types are storage: the math is float32 and each result is rounded once (to nearest
 * even: st() of common.cuh). An op without a native half path runs its float32 function on
 * float32 copies in command-buffer scratch: a cast kernel widens each half input (exact),
 * the float32 op runs, and each half output is rounded once from its float32 copy. Outputs
 * the op reads first (matmul with beta != 0, an accumulating backward) are widened too. The
 * copies live in scratch slots CUDA_FALLBACK_SLOT + i (i = the tensor's slot in the op),
 * above the op's own slots, so the same memory is used at every submission and a CUDA
 * graph replays them.
 */
#include "common.cuh"
#include "../half_ops.h"

#include <string.h>

/* ---- element conversion -------------------------------------------------------------- */

template <typename TI, typename TO> __global__ void cast_kernel(const TI *x, TO *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        st(y + i, ld(x + i));
}

/* y[i] = x[i] converted (float32 between the two types), i < n; y may be x only when the
 * types are the same (then nothing to do). */
static neat_status cast_launch(nm_device *dev, neat_dtype xt, const void *x, neat_dtype yt, void *y,
                               int64_t n, const char *what) {
    if (n == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (xt == yt) {
        if (x == y) return NEAT_OK;
        return cuda_check(
            cudaMemcpyAsync(y, x, (size_t)n * neat_dtype_size(xt), cudaMemcpyDeviceToDevice, s),
            what, "cudaMemcpyAsync");
    }
    unsigned grid = cuda_grid(dev, n);
#define TO_(TI, TO) cast_kernel<TI, TO><<<grid, CUDA_THREADS, 0, s>>>((const TI *)x, (TO *)y, n)
    switch (xt) {
    case NEAT_BF16:
#define CALL_TO_(TO) TO_(__nv_bfloat16, TO)
        CUDA_DTYPE_DISPATCH(yt, CALL_TO_)
#undef CALL_TO_
        break;
    case NEAT_F16:
#define CALL_TO_(TO) TO_(__half, TO)
        CUDA_DTYPE_DISPATCH(yt, CALL_TO_)
#undef CALL_TO_
        break;
    default:
#define CALL_TO_(TO) TO_(float, TO)
        CUDA_DTYPE_DISPATCH(yt, CALL_TO_)
#undef CALL_TO_
        break;
    }
#undef TO_
    return cuda_launched(what, "cast_kernel");
}

template <typename T> __global__ void fill_kernel(T *y, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        st(y + i, value);
}

extern "C" neat_status cuda_fill_typed(nm_device *dev, neat_dtype dt, void *y, int64_t n,
                                       float value, const char *what) {
    if (n == 0) return NEAT_OK;
    if (dt == NEAT_F32) return cuda_fill_f32(dev, (float *)y, n, value, what);
    cudaStream_t s = cuda_dev(dev)->stream;
    unsigned grid = cuda_grid(dev, n);
#define CALL(T) fill_kernel<T><<<grid, CUDA_THREADS, 0, s>>>((T *)y, n, value)
    CUDA_DTYPE_DISPATCH(dt, CALL)
#undef CALL
    return cuda_launched(what, "fill_kernel");
}

/* ---- kernels of the native half paths (matmul.cu, conv.cu) ----------------------------- */

/* y[i] = act(z[i] + beta y[i] + b[(i / inner) % channels]), rounded once to TO; z (float32)
 * and b (TB) may be NULL; y is not read when beta is 0 (a NaN there does not propagate). */
template <typename TO, typename TB, int ACT>
__global__ void epilogue_kernel(TO *y, const float *z, float beta, const TB *b, int64_t n,
                                int64_t inner, int64_t channels) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = z ? z[i] : 0.0f;
        if (beta != 0.0f) v += beta * ld(y + i);
        if (b) v += ld(b + (i / inner) % channels);
        st(y + i, act_fwd<ACT>(v));
    }
}

extern "C" neat_status cuda_half_epilogue(nm_device *dev, neat_dtype yt, void *y, const float *z,
                                          float beta, neat_dtype bt, const void *b, int64_t n,
                                          int64_t inner, int64_t channels, neat_activation act,
                                          const char *what) {
    if (n == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    unsigned grid = cuda_grid(dev, n);
    /* three nested dispatches: the output type, the bias type, the activation */
#define LAUNCH(TO, TB, A)                                                                          \
    epilogue_kernel<TO, TB, A>                                                                     \
        <<<grid, CUDA_THREADS, 0, s>>>((TO *)y, z, beta, (const TB *)b, n, inner, channels)
#define ACTS(TO, TB)                                                                               \
    switch (act) {                                                                                 \
    case NEAT_ACT_RELU: LAUNCH(TO, TB, NEAT_ACT_RELU); break;                                      \
    case NEAT_ACT_SIGMOID: LAUNCH(TO, TB, NEAT_ACT_SIGMOID); break;                                \
    case NEAT_ACT_TANH: LAUNCH(TO, TB, NEAT_ACT_TANH); break;                                      \
    case NEAT_ACT_GELU: LAUNCH(TO, TB, NEAT_ACT_GELU); break;                                      \
    default: LAUNCH(TO, TB, NEAT_ACT_NONE); break;                                                 \
    }
#define BIAS(TO)                                                                                   \
    switch (bt) {                                                                                  \
    case NEAT_BF16: ACTS(TO, __nv_bfloat16) break;                                                 \
    case NEAT_F16: ACTS(TO, __half) break;                                                         \
    default: ACTS(TO, float) break;                                                                \
    }
    switch (yt) {
    case NEAT_BF16: BIAS(__nv_bfloat16) break;
    case NEAT_F16: BIAS(__half) break;
    default: BIAS(float) break;
    }
#undef BIAS
#undef ACTS
#undef LAUNCH
    return cuda_launched(what, "epilogue_kernel");
}

/* dz = dy where y > 0, else 0: relu's gradient, exact in any type. */
template <typename T> __global__ void relu_grad_kernel(const T *y, const T *dy, T *dz, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dz[i] = ld(y + i) > 0.0f ? dy[i] : T(0.0f);
}

extern "C" neat_status cuda_half_relu_grad(nm_device *dev, neat_dtype dt, const void *y,
                                           const void *dy, void *dz, int64_t n, const char *what) {
    if (n == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    unsigned grid = cuda_grid(dev, n);
#define CALL(T)                                                                                    \
    relu_grad_kernel<T><<<grid, CUDA_THREADS, 0, s>>>((const T *)y, (const T *)dy, (T *)dz, n)
    CUDA_DTYPE_DISPATCH(dt, CALL)
#undef CALL
    return cuda_launched(what, "relu_grad_kernel");
}

/* ---- ops ------------------------------------------------------------------------------- */

extern "C" {

neat_status cuda_cast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const auto &u = op->u.cast;
    return cast_launch(dev, u.x->dtype, u.x->data, u.y->dtype, u.y->data, u.x->numel, op->fn);
}

/* The ops that take half tensors natively (their table function runs on them): the others go
 * through cuda_run_op's float32 copies. The memory-bound ops have half kernels of their own
 * (elementwise.cu, pool.cu, softmax.cu, reduce.cu: half storage, float32 math). Native
 * matmul/linear/conv paths exist only where the result is rounded once: a backward op with sigmoid,
 * tanh or gelu would round its dz = dy act'(.) to half before the GEMM (a second rounding), and
 * cuDNN cannot write a float32 output from half inputs, so those run on float32 copies. A conv
 * forward with a bias adds it in cuDNN's fused call, before the rounding (conv.cu), and takes
 * the float32 copies itself where that call is off or refused. */
int cuda_native_half(const nm_op *op) {
    if (nm_half_native(op->kind)) return 1; /* cast, the mixed optimizers, loss scaling */
    switch (op->kind) {
    case NM_OP_MATMUL:
    /* the memory-bound ops: elementwise.cu, pool.cu, softmax.cu, reduce.cu */
    case NM_OP_ADD:
    case NM_OP_MUL:
    case NM_OP_SCALE:
    case NM_OP_FILL:
    case NM_OP_ACTIVATION_FORWARD:
    case NM_OP_ACTIVATION_BACKWARD:
    case NM_OP_MAXPOOL2D:
    case NM_OP_MAXPOOL2D_BACKWARD:
    case NM_OP_SOFTMAX:
    case NM_OP_SOFTMAX_BACKWARD:
    case NM_OP_SUM:
    case NM_OP_LINEAR_FORWARD: return 1;
    case NM_OP_LINEAR_BACKWARD: {
        neat_activation a = op->u.linear_backward.act;
        return a == NEAT_ACT_NONE || a == NEAT_ACT_RELU;
    }
    case NM_OP_CONV2D_BACKWARD: {
        /* Not when accumulating: one of cuDNN's half backward-data algorithms rounds its
         * result to 16 bits before it adds beta times the old dx (two roundings: on the H200
         * 6 ulps off where the sum cancels); float32 copies add before the one rounding. */
        neat_activation a = op->u.conv2d_backward.act;
        return !op->u.conv2d_backward.accumulate && (a == NEAT_ACT_NONE || a == NEAT_ACT_RELU);
    }
    case NM_OP_CONV2D_FORWARD: { /* with a bias: cuDNN's fused call, one rounding (conv.cu) */
        const auto &u = op->u.conv2d_forward;
        return u.y->dtype != NEAT_F32 && (u.act == NEAT_ACT_NONE || u.act == NEAT_ACT_RELU);
    }
    default: return 0;
    }
}

static int has_half(const nm_op *op) {
    int n;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    for (int i = 0; i < n; i++)
        if (ts[i] && ts[i]->dtype != NEAT_F32) return 1;
    return 0;
}

neat_status cuda_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    if (!has_half(op) || cuda_native_half(op)) return dev->be->op[op->kind](dev, cb, op);
    return cuda_run_f32_copies(dev, cb, op);
}

neat_status cuda_run_f32_copies(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    nm_op_fn run = dev->be->op[op->kind];
    nm_op f32 = *op;
    nm_tensor shadow[NM_OP_MAX_TENSORS];
    int n;
    nm_tensor **ts = (nm_tensor **)nm_op_tensors(&f32, &n);
    int last = n - 1, reads;
    while (last >= 0 && !ts[last]) last--;
    int out = nm_half_first_output(op, last, &reads);
    for (int i = 0; i < n; i++) {
        nm_tensor *t = ts[i];
        if (!t || t->dtype == NEAT_F32) continue;
        nm_half_shadow(&shadow[i], t);
        if (t->numel > 0) {
            void *p;
            neat_status st =
                cuda_scratch(cb, CUDA_FALLBACK_SLOT + i, (size_t)t->numel * sizeof(float), &p);
            if (!st && (i < out || reads))
                st = cast_launch(dev, t->dtype, t->data, NEAT_F32, p, t->numel, op->fn);
            if (st) return st;
            shadow[i].data = (float *)p;
        }
        ts[i] = &shadow[i];
    }
    neat_status st = run(dev, cb, &f32);
    if (st) return st;
    nm_tensor *const *orig = nm_op_tensors(op, &n);
    for (int i = out; !st && i >= 0 && i < n; i++) {
        const nm_tensor *o = orig[i];
        if (o && o->dtype != NEAT_F32)
            st = cast_launch(dev, NEAT_F32, ts[i]->data, o->dtype, o->data, o->numel, op->fn);
    }
    return st;
}

} /* extern "C" */
