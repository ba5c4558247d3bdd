/*
 * elementwise.cu — add and mul (same shape or one row broadcast over the rows), scale, fill,
 * activations forward and backward, and the bias + activation pass that follows cuBLASLt
 * (sigmoid, tanh) and cuDNN (every activation).
 *
 * All are one grid-stride kernel, map_kernel: out[i] = op(i, a[i], b[i]) over n elements
 * of the storage type T (float, bf16, f16; one dtype per op, the core checks it), computed
 * in float and rounded once to T. 16 bytes per access, 4 floats or 8 halves (every pointer
 * is the start of a pool block: common.cuh), the tail element by element. out may be a or
 * b (in-place ops), so nothing is declared __restrict__.
 */
#include "common.cuh"

#include <string.h>

template <class T, class Op>
__global__ void map_kernel(Op op, T *out, const T *a, const T *b, int64_t n) {
    enum { N = vec16<T>::N };
    cuda_pdl_enter();
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t nv = n >> (N == 4 ? 2 : 3); /* n / N, N a power of 2 */
    for (int64_t i = tid; i < nv; i += stride) {
        int64_t e = i * N;
        if constexpr (N == 4) { /* float: the float4 code of before, which ptxas fits in fewer
                                 * registers when op gathers (bias, broadcast row) */
            float4 av = a ? reinterpret_cast<const float4 *>(a)[i] : make_float4(0, 0, 0, 0);
            float4 bv = b ? reinterpret_cast<const float4 *>(b)[i] : make_float4(0, 0, 0, 0);
            float4 r;
            r.x = op(e, av.x, bv.x);
            r.y = op(e + 1, av.y, bv.y);
            r.z = op(e + 2, av.z, bv.z);
            r.w = op(e + 3, av.w, bv.w);
            reinterpret_cast<float4 *>(out)[i] = r;
        } else {
            float av[N] = {}, bv[N] = {}, r[N];
            if (a) load_n<T, N>(a + e, av);
            if (b) load_n<T, N>(b + e, bv);
#pragma unroll
            for (int j = 0; j < N; j++) r[j] = op(e + j, av[j], bv[j]);
            store_n<T, N>(out + e, r);
        }
    }
    for (int64_t i = nv * N + tid; i < n; i += stride)
        st(out + i, op(i, a ? ld(a + i) : 0.0f, b ? ld(b + i) : 0.0f));
}

template <class T, class Op>
static neat_status map_launch(nm_device *dev, Op op, T *out, const T *a, const T *b, int64_t n,
                              const char *what) {
    enum { N = vec16<T>::N };
    if (n <= 0) return NEAT_OK;
    cuda_launch(dev, map_kernel<T, Op>, cuda_grid(dev, (n + N - 1) / N), CUDA_THREADS, op, out, a,
                b, n);
    return cuda_launched(what, "map_kernel");
}

/* A tensor's data as T (the core keeps it as float *: half tensors hold 16-bit patterns). */
template <class T> static T *data_as(const nm_tensor *t) { return (T *)(void *)t->data; }

/* (i / inner) % m in 32-bit arithmetic when the indices fit (64-bit division is ~4x slower). */
__device__ __forceinline__ int64_t index_mod(int64_t i, int64_t inner, int64_t m, bool small) {
    if (small) return (int64_t)(((uint32_t)i / (uint32_t)inner) % (uint32_t)m);
    return (i / inner) % m;
}

struct fill_op {
    float value;
    __device__ float operator()(int64_t, float, float) const { return value; }
};
struct scale_op {
    float alpha;
    __device__ float operator()(int64_t, float x, float) const { return alpha * x; }
};
template <bool MUL> struct pair_op {
    __device__ float operator()(int64_t, float a, float b) const { return MUL ? a * b : a + b; }
};
template <bool MUL, class T> struct pair_row_op { /* a [rows, cols] op row [cols] */
    const T *row;
    int64_t cols;
    bool small;
    __device__ float operator()(int64_t i, float a, float) const {
        float b = ld(row + index_mod(i, 1, cols, small));
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
template <bool MUL, class T>
static neat_status pair(nm_device *dev, const nm_add_args &u, const char *fn) {
    int64_t n = u.rows * u.cols;
    T *out = data_as<T>(u.out);
    const T *a = data_as<T>(u.a), *b = data_as<T>(u.b);
    if (u.broadcast)
        return map_launch<T>(dev, pair_row_op<MUL, T>{b, u.cols, fits32(n)}, out, a, NULL, n, fn);
    return map_launch<T>(dev, pair_op<MUL>{}, out, a, b, n, fn);
}

/* Device-to-device copy of n elements of `bytes` each (activation NONE). */
static neat_status copy_elems(nm_device *dev, void *dst, const void *src, int64_t n, size_t bytes,
                              const char *what) {
    if (n <= 0 || dst == src) return NEAT_OK;
    return cuda_check(cudaMemcpyAsync(dst, src, (size_t)n * bytes, cudaMemcpyDeviceToDevice,
                                      cuda_dev(dev)->stream),
                      what, "cudaMemcpyAsync");
}

/* dz = dy * act'(.) over T; a is x for gelu, y otherwise. */
template <class T>
static neat_status act_grad(nm_device *dev, neat_activation act, const T *a, const T *dy, T *dz,
                            int64_t n, const char *what) {
    if (act == NEAT_ACT_NONE) return copy_elems(dev, dz, dy, n, sizeof(T), what);
#define CALL(A) return map_launch<T>(dev, act_bwd_op<A>{}, dz, a, dy, n, what)
    CUDA_ACT_DISPATCH(act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

template <class T>
static neat_status act_forward(nm_device *dev, neat_activation act, const T *x, T *out, int64_t n,
                               const char *what) {
    if (act == NEAT_ACT_NONE) return copy_elems(dev, out, x, n, sizeof(T), what);
#define CALL(A) return map_launch<T>(dev, act_fwd_op<A>{}, out, x, NULL, n, what)
    CUDA_ACT_DISPATCH(act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

extern "C" {

neat_status cuda_fill_f32(nm_device *dev, float *y, int64_t n, float value, const char *what) {
    return map_launch<float>(dev, fill_op{value}, y, NULL, NULL, n, what);
}

struct copy_list {
    const float *x[CUDA_COPY_LIST];
    float *y[CUDA_COPY_LIST];
    int64_t n[CUDA_COPY_LIST];
};

/* Pair blockIdx.y of the list, element by element (the arrays are small: a loss, logits). */
__global__ void copy_list_kernel(copy_list l) {
    int k = blockIdx.y;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < l.n[k];
         i += (int64_t)gridDim.x * blockDim.x)
        l.y[k][i] = l.x[k][i];
}

neat_status cuda_copy_f32_list(nm_device *dev, int count, const float *const *x, float *const *y,
                               const int64_t *n, const char *what) {
    copy_list l;
    int64_t most = 0;
    memset(&l, 0, sizeof l);
    for (int k = 0; k < count; k++) {
        l.x[k] = x[k], l.y[k] = y[k], l.n[k] = n[k];
        most = n[k] > most ? n[k] : most;
    }
    if (count == 0 || most == 0) return NEAT_OK;
    dim3 grid(cuda_grid(dev, most), (unsigned)count);
    copy_list_kernel<<<grid, CUDA_THREADS, 0, cuda_dev(dev)->stream>>>(l);
    return cuda_launched(what, "copy_list_kernel");
}

neat_status cuda_scale_f32(nm_device *dev, const float *x, float alpha, float *y, int64_t n,
                           const char *what) {
    return map_launch<float>(dev, scale_op{alpha}, y, x, NULL, n, what);
}

neat_status cuda_bias_act(nm_device *dev, float *y, const float *b, int64_t n, int64_t inner,
                          int64_t channels, neat_activation act, const char *what) {
    if (!b && act == NEAT_ACT_NONE) return NEAT_OK;
    if (!b) inner = channels = 1;
#define CALL(A)                                                                                    \
    return map_launch<float>(dev, bias_act_op<A>{b, inner, channels, fits32(n)}, y, y, NULL, n,    \
                             what)
    CUDA_ACT_DISPATCH(act, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_act_grad(nm_device *dev, neat_activation act, const float *x, const float *y,
                          const float *dy, float *dz, int64_t n, const char *what) {
    return act_grad<float>(dev, act, act == NEAT_ACT_GELU ? x : y, dy, dz, n, what);
}

neat_status cuda_add(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
#define CALL(T) return pair<false, T>(dev, op->u.add, op->fn)
    CUDA_DTYPE_DISPATCH(op->u.add.out->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_mul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
#define CALL(T) return pair<true, T>(dev, op->u.mul, op->fn)
    CUDA_DTYPE_DISPATCH(op->u.mul.out->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.scale;
#define CALL(T)                                                                                    \
    return map_launch<T>(dev, scale_op{u.alpha}, data_as<T>(u.out), data_as<T>(u.x), NULL,         \
                         u.x->numel, "neat_scale")
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_fill(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_tensor *t = op->u.fill.t;
#define CALL(T)                                                                                    \
    return map_launch<T>(dev, fill_op{op->u.fill.value}, data_as<T>(t), NULL, NULL, t->numel,      \
                         "neat_fill")
    CUDA_DTYPE_DISPATCH(t->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_activation_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.activation_forward;
#define CALL(T)                                                                                    \
    return act_forward<T>(dev, u.act, data_as<T>(u.x), data_as<T>(u.out), u.x->numel,              \
                          "neat_activation_forward")
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_activation_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.activation_backward;
    const nm_tensor *a = u.act == NEAT_ACT_GELU ? u.x : u.y; /* NULL for NONE */
#define CALL(T)                                                                                    \
    return act_grad<T>(dev, u.act, a ? data_as<T>(a) : NULL, data_as<T>(u.dy), data_as<T>(u.out),  \
                       u.dy->numel, "neat_activation_backward")
    CUDA_DTYPE_DISPATCH(u.dy->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

} /* extern "C" */
