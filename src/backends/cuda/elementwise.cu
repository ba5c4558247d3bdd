/*
 * elementwise.cu — add and mul (same shape or one row broadcast over the rows), scale, fill,
 * activations forward and backward, and the bias + activation pass that follows cuBLASLt
 * (sigmoid, tanh) and cuDNN (every activation).
 *
 * All are one grid-stride kernel, map_kernel: out[i] = op(i, a[i], b[i]) over n floats,
 * 16 bytes per access (every pointer is the start of a pool block: common.cuh), the <4
 * tail element by element. out may be a or b (in-place ops), so nothing is declared
 * __restrict__.
 */
#include "common.cuh"

template <class Op>
__global__ void map_kernel(Op op, float *out, const float *a, const float *b, int64_t n) {
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = n >> 2;
    for (int64_t i = tid; i < n4; i += stride) {
        float4 av = a ? reinterpret_cast<const float4 *>(a)[i] : make_float4(0, 0, 0, 0);
        float4 bv = b ? reinterpret_cast<const float4 *>(b)[i] : make_float4(0, 0, 0, 0);
        int64_t e = i * 4;
        float4 r;
        r.x = op(e, av.x, bv.x);
        r.y = op(e + 1, av.y, bv.y);
        r.z = op(e + 2, av.z, bv.z);
        r.w = op(e + 3, av.w, bv.w);
        reinterpret_cast<float4 *>(out)[i] = r;
    }
    for (int64_t i = n4 * 4 + tid; i < n; i += stride)
        out[i] = op(i, a ? a[i] : 0.0f, b ? b[i] : 0.0f);
}

template <class Op>
static neat_status map_launch(nm_device *dev, Op op, float *out, const float *a, const float *b,
                              int64_t n, const char *what) {
    if (n <= 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    map_kernel<Op><<<cuda_grid(dev, (n + 3) / 4), CUDA_THREADS, 0, s>>>(op, out, a, b, n);
    return cuda_launched(what, "map_kernel");
}

/* (i / inner) % m in 32-bit arithmetic when the indices fit (64-bit division is ~4x slower). */
__device__ __forceinline__ int64_t index_mod(int64_t i, int64_t inner, int64_t m, bool small) {
    if (small) return (int64_t)(((uint32_t)i / (uint32_t)inner) % (uint32_t)m);
    return (i / inner) % m;
}

struct fill_op {
    float value;
    __device__ float operator()(int64_t, float, float) const { return value; }
};
struct copy_op {
    __device__ float operator()(int64_t, float x, float) const { return x; }
};
struct scale_op {
    float alpha;
    __device__ float operator()(int64_t, float x, float) const { return alpha * x; }
};
template <bool MUL> struct pair_op {
    __device__ float operator()(int64_t, float a, float b) const { return MUL ? a * b : a + b; }
};
template <bool MUL> struct pair_row_op { /* a [rows, cols] op row [cols] */
    const float *row;
    int64_t cols;
    bool small;
    __device__ float operator()(int64_t i, float a, float) const {
        float b = row[index_mod(i, 1, cols, small)];
        return MUL ? a * b : a + b;
    }
};
template <int ACT> struct act_fwd_op {
    __device__ float operator()(int64_t, float x, float) const { return act_fwd<ACT>(x); }
};
/* a is x for gelu, y otherwise; b is dy. */
template <int ACT> struct act_bwd_op {
    __device__ float operator()(int64_t, float a, float dy) const {
        return ACT == NEAT_ACT_GELU ? act_bwd<ACT>(a, 0.0f, dy) : act_bwd<ACT>(0.0f, a, dy);
    }
};
/* y = act(y + bias[(i / inner) % channels]) */
template <int ACT> struct bias_act_op {
    const float *bias;
    int64_t inner, channels;
    bool small;
    __device__ float operator()(int64_t i, float y, float) const {
        if (bias) y += bias[index_mod(i, inner, channels, small)];
        return act_fwd<ACT>(y);
    }
};

static bool fits32(int64_t n) { return n < ((int64_t)1 << 32); }

/* add and mul: out = a op b, b of a's shape or one row broadcast over the rows. */
template <bool MUL> static neat_status pair(nm_device *dev, const nm_add_args &u, const char *fn) {
    int64_t n = u.rows * u.cols;
    if (u.broadcast)
        return map_launch(dev, pair_row_op<MUL>{u.b->data, u.cols, fits32(n)}, u.out->data,
                          u.a->data, NULL, n, fn);
    return map_launch(dev, pair_op<MUL>{}, u.out->data, u.a->data, u.b->data, n, fn);
}

extern "C" {

neat_status cuda_fill_f32(nm_device *dev, float *y, int64_t n, float value, const char *what) {
    return map_launch(dev, fill_op{value}, y, NULL, NULL, n, what);
}

neat_status cuda_copy_f32(nm_device *dev, const float *x, float *y, int64_t n, const char *what) {
    return map_launch(dev, copy_op{}, y, x, NULL, n, what);
}

neat_status cuda_scale_f32(nm_device *dev, const float *x, float alpha, float *y, int64_t n,
                           const char *what) {
    return map_launch(dev, scale_op{alpha}, y, x, NULL, n, what);
}

neat_status cuda_bias_act(nm_device *dev, float *y, const float *b, int64_t n, int64_t inner,
                          int64_t channels, neat_activation act, const char *what) {
    if (!b && act == NEAT_ACT_NONE) return NEAT_OK;
    if (!b) inner = channels = 1;
#define CALL(A)                                                                                    \
    return map_launch(dev, bias_act_op<A>{b, inner, channels, fits32(n)}, y, y, NULL, n, what)
    CUDA_ACT_DISPATCH(act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_act_grad(nm_device *dev, neat_activation act, const float *x, const float *y,
                          const float *dy, float *dz, int64_t n, const char *what) {
    if (n <= 0) return NEAT_OK;
    if (act == NEAT_ACT_NONE) {
        if (dz == dy) return NEAT_OK;
        return cuda_check(cudaMemcpyAsync(dz, dy, (size_t)n * sizeof(float),
                                          cudaMemcpyDeviceToDevice, cuda_dev(dev)->stream),
                          what, "cudaMemcpyAsync");
    }
    const float *a = act == NEAT_ACT_GELU ? x : y;
#define CALL(A) return map_launch(dev, act_bwd_op<A>{}, dz, a, dy, n, what)
    CUDA_ACT_DISPATCH(act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_add(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair<false>(dev, op->u.add, op->fn);
}

neat_status cuda_mul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return pair<true>(dev, op->u.mul, op->fn);
}

neat_status cuda_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.scale;
    return cuda_scale_f32(dev, u.x->data, u.alpha, u.out->data, u.x->numel, "neat_scale");
}

neat_status cuda_fill(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.fill.t;
    if (t->dtype == NEAT_F32)
        return cuda_fill_f32(dev, t->data, t->numel, op->u.fill.value, "neat_fill");
    if (t->numel == 0) return NEAT_OK;
    /* a half tensor gets +0 only (cuda_op_check): every bit zero */
    size_t bytes = (size_t)t->numel * neat_dtype_size(t->dtype);
    return cuda_check(cudaMemsetAsync(t->data, 0, bytes, cuda_dev(dev)->stream), "neat_fill",
                      "cudaMemsetAsync");
}

neat_status cuda_activation_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.activation_forward;
    int64_t n = u.x->numel;
    if (u.act == NEAT_ACT_NONE) {
        if (n == 0 || u.out->data == u.x->data) return NEAT_OK;
        return cuda_check(cudaMemcpyAsync(u.out->data, u.x->data, (size_t)n * sizeof(float),
                                          cudaMemcpyDeviceToDevice, cuda_dev(dev)->stream),
                          "neat_activation_forward", "cudaMemcpyAsync");
    }
#define CALL(A)                                                                                    \
    return map_launch(dev, act_fwd_op<A>{}, u.out->data, u.x->data, NULL, n,                       \
                      "neat_activation_forward")
    CUDA_ACT_DISPATCH(u.act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_activation_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.activation_backward;
    return cuda_act_grad(dev, u.act, u.x ? u.x->data : NULL, u.y ? u.y->data : NULL, u.dy->data,
                         u.out->data, u.dy->numel, "neat_activation_backward");
}

} /* extern "C" */
