/*
 * softmax.cu — softmax over the last dimension, its backward, and the fused softmax
 * cross-entropy (mean loss and its gradient).
 *
 * Layout: x [rows, cols] row-major. A row belongs to one warp (cols <= 1024) or to one
 * block of 256 threads (longer rows); each thread walks its elements with float4 loads when
 * cols % 4 == 0 and the pointers are 16-byte aligned.
 *  softmax:     one pass keeps a running (max m, sum s of e^(x-m)) per thread, rescaling s
 *               when m grows; the row's M = max m, S = sum s e^(m-M); a second pass writes
 *               y = e^(x-M) / S. Two reads, one write. y may be x (every read of a row
 *               happens before the reduction that precedes the writes).
 *  backward:    dx = y (dy - sum(dy y)).
 *  cross-entropy: loss_r = log S + M - x[label_r] per row into scratch, then the
 *               deterministic sum of reduce.cu scaled by 1/N; the gradient is
 *               (e^(x-M)/S - onehot) / N. A label that is not an integer in 0..C-1 makes the
 *               row NaN and sets the command buffer's error record (first one wins), which
 *               neat_cmdbuf_wait reports as INVALID_ARGUMENT.
 */
#include "common.cuh"

#define ROW_WARP_COLS 1024

__device__ __forceinline__ float block_max(float v, float *shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? shm[lane] : -INFINITY;
        v = warp_max(v);
        if (lane == 0) shm[0] = v;
    }
    __syncthreads();
    return shm[0];
}

/* Reductions over the TPR threads of a row, result in every one of them. */
template <int TPR> __device__ __forceinline__ float group_sum(float v, float *shm) {
    if (TPR == 32) return __shfl_sync(0xffffffffu, warp_sum(v), 0);
    return block_sum(v, shm);
}
template <int TPR> __device__ __forceinline__ float group_max(float v, float *shm) {
    if (TPR == 32) return __shfl_sync(0xffffffffu, warp_max(v), 0);
    return block_max(v, shm);
}

/* f(c, a[c]) for this thread's elements of a row. */
template <int TPR, bool VEC, class F>
__device__ __forceinline__ void row_read(const float *a, int64_t cols, int t, F f) {
    if (VEC) {
        for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
            float4 v = *reinterpret_cast<const float4 *>(a + c);
            f(c, v.x);
            f(c + 1, v.y);
            f(c + 2, v.z);
            f(c + 3, v.w);
        }
    } else {
        for (int64_t c = t; c < cols; c += TPR) f(c, a[c]);
    }
}

/* out[c] = f(c, a[c], b[c]) (b may be NULL) for this thread's elements of a row. */
template <int TPR, bool VEC, class F>
__device__ __forceinline__ void row_write(const float *a, const float *b, float *out,
                                          int64_t cols, int t, F f) {
    if (VEC) {
        for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
            float4 av = *reinterpret_cast<const float4 *>(a + c);
            float4 bv = b ? *reinterpret_cast<const float4 *>(b + c) : make_float4(0, 0, 0, 0);
            float4 r;
            r.x = f(c, av.x, bv.x);
            r.y = f(c + 1, av.y, bv.y);
            r.z = f(c + 2, av.z, bv.z);
            r.w = f(c + 3, av.w, bv.w);
            *reinterpret_cast<float4 *>(out + c) = r;
        }
    } else {
        for (int64_t c = t; c < cols; c += TPR) out[c] = f(c, a[c], b ? b[c] : 0.0f);
    }
}

/* Row max M and sum S of e^(x - M). A NaN propagates; -inf entries add nothing. */
template <int TPR, bool VEC>
__device__ __forceinline__ void row_stats(const float *x, int64_t cols, int t, float *shm,
                                          float *M, float *S) {
    float m = -INFINITY, s = 0.0f;
    row_read<TPR, VEC>(x, cols, t, [&](int64_t, float v) {
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += v == -INFINITY ? 0.0f : expf(v - m);
        }
    });
    float rm = group_max<TPR>(m, shm);
    s = m == -INFINITY ? s : s * expf(m - rm);
    *M = rm;
    *S = group_sum<TPR>(s, shm);
}

/* Rows handled by this thread's group: row0, row0 + step, ... (uniform within a group). */
#define ROW_LOOP(rows)                                                                       \
    const int rpb = CUDA_THREADS / TPR, t = threadIdx.x % TPR;                               \
    for (int64_t row = (int64_t)blockIdx.x * rpb + threadIdx.x / TPR; row < (rows);         \
         row += (int64_t)gridDim.x * rpb)

/* A row of at most 4 * NV * 256 (block per row, float4-aligned): each thread loads its at most
 * NV float4 of the row at once and keeps them in registers, so the row is read from
 * memory once, all its loads in flight together; M is known before any exp, so each element
 * has one exp, kept for the write. y may be x: every read of the row comes before the
 * block_max barrier, every write after it. As row_stats: -inf adds nothing, a NaN or +inf
 * makes the row NaN, and so does a row of -inf only (0 * 1/0). */
template <int NV>
__device__ __forceinline__ void softmax_row_regs(const float *xr, float *yr,
                                                 int64_t cols, int t, float *shm) {
    float4 v[NV];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t c = 4 * (t + (int64_t)k * CUDA_THREADS);
        v[k] = c < cols ? *reinterpret_cast<const float4 *>(xr + c)
                        : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    }
#pragma unroll
    for (int k = 0; k < NV; k++) {
        m = v[k].x > m ? v[k].x : m;
        m = v[k].y > m ? v[k].y : m;
        m = v[k].z > m ? v[k].z : m;
        m = v[k].w > m ? v[k].w : m;
    }
    float M = block_max(m, shm), s = 0.0f;
#define SOFTMAX_E(e) e = e == -INFINITY ? 0.0f : expf(e - M), s += e
#pragma unroll
    for (int k = 0; k < NV; k++) {
        SOFTMAX_E(v[k].x);
        SOFTMAX_E(v[k].y);
        SOFTMAX_E(v[k].z);
        SOFTMAX_E(v[k].w);
    }
#undef SOFTMAX_E
    float inv = 1.0f / block_sum(s, shm);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t c = 4 * (t + (int64_t)k * CUDA_THREADS);
        if (c < cols)
            *reinterpret_cast<float4 *>(yr + c) =
                make_float4(v[k].x * inv, v[k].y * inv, v[k].z * inv, v[k].w * inv);
    }
}

/* Its own kernel, NV chosen from the row length: registers per thread decide how many blocks,
 * i.e. rows in flight, an SM holds. sm_90, ptxas: NV = 4 uses 36 registers (7 blocks of 256
 * per SM), NV = 8 60; inside softmax_rows as one branch it took 68 (3 blocks per SM). */
template <int NV>
__global__ void __launch_bounds__(CUDA_THREADS) softmax_rows_regs(const float *x, float *y,
                                                                  int64_t rows, int64_t cols) {
    __shared__ float shm[32];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x)
        softmax_row_regs<NV>(x + row * cols, y + row * cols, cols, threadIdx.x, shm);
}

template <int TPR, bool VEC>
__global__ void softmax_rows(const float *x, float *y, int64_t rows, int64_t cols) {
    __shared__ float shm[32];
    ROW_LOOP(rows) {
        const float *xr = x + row * cols;
        float M, S;
        row_stats<TPR, VEC>(xr, cols, t, shm, &M, &S);
        float inv = 1.0f / S;
        row_write<TPR, VEC>(xr, (const float *)NULL, y + row * cols, cols, t,
                            [&](int64_t, float v, float) { return expf(v - M) * inv; });
    }
}

template <int TPR, bool VEC>
__global__ void softmax_backward_rows(const float *y, const float *dy, float *dx, int64_t rows,
                                      int64_t cols) {
    __shared__ float shm[32];
    ROW_LOOP(rows) {
        const float *yr = y + row * cols, *dyr = dy + row * cols;
        float dot = 0.0f;
        row_read<TPR, VEC>(yr, cols, t, [&](int64_t c, float v) { dot += v * dyr[c]; });
        dot = group_sum<TPR>(dot, shm);
        row_write<TPR, VEC>(yr, dyr, dx + row * cols, cols, t,
                            [&](int64_t, float yv, float g) { return yv * (g - dot); });
    }
}

/* Forward when dlogits is NULL (row_loss[row] = -log softmax[label]), else the gradient. */
template <int TPR, bool VEC>
__global__ void xent_rows(const float *logits, const float *labels, float *row_loss,
                          float *dlogits, int64_t rows, int64_t cols, float inv_n, int *err,
                          int op_index) {
    __shared__ float shm[32];
    ROW_LOOP(rows) {
        const float *xr = logits + row * cols;
        float label = labels[row];
        bool ok = label >= 0.0f && label < (float)cols && label == floorf(label);
        int64_t k = ok ? (int64_t)label : -1;
        if (!ok && t == 0 && atomicCAS(err + CUDA_ERR_FLAG, 0, 1) == 0) {
            err[CUDA_ERR_ROW] = (int)min(row, (int64_t)INT32_MAX);
            err[CUDA_ERR_VALUE] = __float_as_int(label);
            err[CUDA_ERR_OP] = op_index;
        }
        float M, S;
        row_stats<TPR, VEC>(xr, cols, t, shm, &M, &S);
        if (!dlogits) {
            if (t == 0) row_loss[row] = ok ? logf(S) + M - xr[k] : NAN;
        } else {
            float inv = 1.0f / S;
            row_write<TPR, VEC>(xr, (const float *)NULL, dlogits + row * cols, cols, t,
                                [&](int64_t c, float v, float) {
                                    if (!ok) return (float)NAN;
                                    return (expf(v - M) * inv - (c == k ? 1.0f : 0.0f)) * inv_n;
                                });
        }
    }
}

/* Launch KERNEL<TPR, VEC> for the row length and the alignment of the pointers. */
#define ROWS_LAUNCH(KERNEL, rows, cols, aligned, ...)                                       \
    do {                                                                                     \
        cudaStream_t s_ = cuda_dev(dev)->stream;                                             \
        bool vec_ = (cols) % 4 == 0 && (aligned);                                            \
        if ((cols) <= ROW_WARP_COLS) {                                                       \
            unsigned g_ = cuda_grid(dev, (rows) * 32);                                       \
            if (vec_) KERNEL<32, true><<<g_, CUDA_THREADS, 0, s_>>>(__VA_ARGS__);            \
            else KERNEL<32, false><<<g_, CUDA_THREADS, 0, s_>>>(__VA_ARGS__);                \
        } else {                                                                             \
            unsigned g_ = cuda_grid(dev, (rows) * CUDA_THREADS);                             \
            if (vec_) KERNEL<CUDA_THREADS, true><<<g_, CUDA_THREADS, 0, s_>>>(__VA_ARGS__);  \
            else KERNEL<CUDA_THREADS, false><<<g_, CUDA_THREADS, 0, s_>>>(__VA_ARGS__);      \
        }                                                                                    \
    } while (0)

extern "C" {

neat_status cuda_softmax(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.softmax;
    if (u.rows == 0 || u.cols == 0) return NEAT_OK;
    const float *x = u.x->data;
    float *y = u.y->data;
    bool vec = u.cols % 4 == 0;
    if (vec && u.cols > ROW_WARP_COLS && u.cols <= 4 * 8 * CUDA_THREADS) {
        cudaStream_t s = cuda_dev(dev)->stream;
        unsigned grid = cuda_grid(dev, u.rows, 1);
        if (u.cols <= 4 * 4 * CUDA_THREADS)
            softmax_rows_regs<4><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
        else
            softmax_rows_regs<8><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
        return cuda_launched("neat_softmax", "softmax_rows_regs");
    }
    ROWS_LAUNCH(softmax_rows, u.rows, u.cols, true, x, y, u.rows, u.cols);
    return cuda_launched("neat_softmax", "softmax_rows");
}

neat_status cuda_softmax_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.softmax_backward;
    if (u.rows == 0 || u.cols == 0) return NEAT_OK;
    const float *y = u.y->data, *dy = u.dy->data;
    float *dx = u.dx->data;
    ROWS_LAUNCH(softmax_backward_rows, u.rows, u.cols,
                true, y, dy, dx, u.rows, u.cols);
    return cuda_launched("neat_softmax_backward", "softmax_backward_rows");
}

static neat_status xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, float *row_loss,
                        float *dlogits, const char *what) {
    const auto &u = op->kind == NM_OP_SOFTMAX_XENT ? op->u.softmax_xent : op->u.softmax_xent_backward;
    cuda_cmdbuf *c = cuda_cb(cb);
    const float *x = u.logits->data, *labels = u.labels->data;
    float inv_n = 1.0f / (float)u.rows;
    int op_index = (int)c->cur_op;
    ROWS_LAUNCH(xent_rows, u.rows, u.cols,
                true, x, labels, row_loss, dlogits,
                u.rows, u.cols, inv_n, c->err, op_index);
    return cuda_launched(what, "xent_rows");
}

neat_status cuda_softmax_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_softmax_cross_entropy";
    const auto &u = op->u.softmax_xent;
    if (u.rows == 0) return cuda_fill_f32(dev, u.out->data, 1, 0.0f, what);
    if (u.cols == 0) /* no class can be a valid label: every row is an error */
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: logits have 0 classes", what);
    void *rl;
    neat_status st = cuda_scratch(cb, 0, (size_t)u.rows * sizeof(float), &rl);
    if (st) return st;
    st = xent(dev, cb, op, (float *)rl, NULL, what);
    if (st) return st;
    return cuda_sum3(dev, cb, 1, (const float *)rl, 1, u.rows, 1, 1.0f / (float)u.rows, 0,
                     u.out->data, what);
}

neat_status cuda_softmax_xent_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_softmax_cross_entropy_backward";
    const auto &u = op->u.softmax_xent_backward;
    if (u.rows == 0) return NEAT_OK;
    if (u.cols == 0) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: logits have 0 classes", what);
    return xent(dev, cb, op, NULL, u.out->data, what);
}

} /* extern "C" */
