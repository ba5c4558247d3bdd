/*
 * softmax.cu — softmax over the last dimension, its backward, and the fused softmax
 * cross-entropy (mean loss and its gradient).
 *
 * Layout: x [rows, cols] row-major, every pointer the start of a pool block (common.cuh),
 * so a row is aligned to 4 elements whenever cols % 4 == 0. Softmax and its backward run on
 * float, bf16 and f16 (T: float math, each output rounded once); the cross-entropy on float
 * only. Each kernel below has its launcher right after it. A row belongs to one warp
 * (cols <= ROW_WARP_COLS = 1024, 8 rows per block of 256) or to one block of 256 threads
 * (longer rows). Thread t of a row's group of TPR threads walks groups of 4 elements number
 * t, t + TPR, ... (one 16-byte load of float, 8 bytes of a half type) when cols % 4 == 0
 * (VEC), else elements t, t + TPR, ...; the reductions are the fixed trees of common.cuh
 * (deterministic). A half type walks a row as float does (its results are the float32
 * kernel's on the same values, rounded once), except in softmax_rows_regs when cols % 8 ==
 * 0: there it loads 8 elements per 16 bytes, another summation tree, within the same bound.
 *
 *  softmax:     M = max x, S = sum e^(x-M), y = e^(x-M) / S. Fused: max and sum in one pass
 *               (a running (m, s) per thread, s rescaled when m grows), then a second pass
 *               writes y: two reads and one write per element.
 *               Rows of 1025..8192 columns with cols % 4 == 0 take softmax_rows_regs
 *               instead: each thread loads its <= 8 groups of 4 (or, for a half type with
 *               cols % 8 == 0, its 4 groups of 8) into registers, so the row is read once;
 *               M is known before any exp, one exp per element.
 *               y may be x: each thread reads its elements of a row before the reduction
 *               that precedes its writes, and writes only its own elements.
 *  backward:    dx = y (dy - sum(dy y)): one pass for the dot product, one for dx.
 *  cross-entropy: loss_r = (M - x[label_r]) + log S per row into scratch, then the
 *               deterministic sum of reduce.cu scaled by 1/N; the gradient is
 *               (e^(x-M)/S - onehot) / N, fused into the row pass. A label that is not an
 *               integer in 0..C-1 makes the row NaN and sets the command buffer's error
 *               record (first one wins), which neat_cmdbuf_wait reports as INVALID_ARGUMENT.
 *
 * In every path -inf entries add nothing, and a NaN or +inf makes the row NaN, as does a
 * row of -inf only (0 * 1/0).
 */
#include "common.cuh"

#define ROW_WARP_COLS 1024
#define ROW_REGS_COLS (4 * 8 * CUDA_THREADS) /* 8192: the longest row held in registers */

/* ---- reductions over a row's group of TPR threads (32: a warp, 256: the block) ---------- */

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

/* The result in every thread of the group. */
template <int TPR> __device__ __forceinline__ float group_sum(float v, float *shm) {
    if (TPR == 32) return __shfl_sync(0xffffffffu, warp_sum(v), 0);
    return block_sum(v, shm);
}
template <int TPR> __device__ __forceinline__ float group_max(float v, float *shm) {
    if (TPR == 32) return __shfl_sync(0xffffffffu, warp_max(v), 0);
    return block_max(v, shm);
}

/* One element into a running max m and sum s of e^(x - m). */
__device__ __forceinline__ void online_max_sum(float v, float &m, float &s) {
    if (v > m) {
        s = s * expf(m - v) + 1.0f;
        m = v;
    } else {
        s += v == -INFINITY ? 0.0f : expf(v - m);
    }
}

/* Row max M and sum S of e^(x - M), in every thread of the group (one read of the row). */
template <int TPR, bool VEC, class T>
__device__ __forceinline__ void row_stats(const T *xr, int64_t cols, int t, float *shm, float *M,
                                          float *S) {
    float m = -INFINITY, s = 0.0f;
    if (VEC) {
        for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
            float v[4];
            load_n<T, 4>(xr + c, v);
#pragma unroll
            for (int j = 0; j < 4; j++) online_max_sum(v[j], m, s);
        }
    } else {
        for (int64_t c = t; c < cols; c += TPR) online_max_sum(ld(xr + c), m, s);
    }
    float rm = group_max<TPR>(m, shm);
    s = m == -INFINITY ? s : s * expf(m - rm);
    *M = rm;
    *S = group_sum<TPR>(s, shm);
}

/* The launch of the row kernels: CUDA_THREADS per block, a warp per row up to ROW_WARP_COLS
 * columns, else a block per row; grid-stride over the rows. */
static unsigned rows_grid(nm_device *dev, int64_t rows, int64_t cols) {
    return cuda_grid(dev, rows * (cols <= ROW_WARP_COLS ? 32 : CUDA_THREADS));
}

/* ---- softmax, a row held in registers (1024 < cols <= 8192, cols % 4 == 0) --------------
 * THREADS per block, one row at a time, NV groups of G elements per thread (G = 4: float's
 * 16-byte loads; G = 8: a half type's 16-byte loads when cols % 8 == 0); registers per
 * thread decide how many blocks, i.e. rows in flight, an SM holds. All loads of a row are
 * issued together; M is known before any exp, one exp per element. Chosen on the H200 at
 * 4096x4096 (.gpu micro benchmark of 2026-11-30 16:00 UTC, queued graph clock):
 *   float: 256 threads, NV = 4 (36 registers, 7 blocks per SM): 36.6 us, the time of a
 *          plain copy kernel of the same 128 MiB (36.7 us); 128 or 512 threads the same,
 *          1024 slower (58 us).
 *   bf16:  128 threads, NV = 4, G = 8, a block per row: 22.0 us; the float walk (256
 *          threads, G = 4) 24.4 us, 256 threads with G = 8 23.8, 64 threads per row 30,
 *          32 threads per row 45. A copy kernel of the same 64 MiB: 20.7 us.
 * Loading the block's next row during the current row's reductions (a prefetch, 2aa3b8a)
 * was slower for both types and dropped. y may be x: each thread reads its elements of the
 * row before the reductions that precede its writes, and writes only its own elements. */

/* e = e^(e - M) (0 for -inf), added to s. */
__device__ __forceinline__ void exp_shifted(float &e, float M, float &s) {
    e = e == -INFINITY ? 0.0f : expf(e - M);
    s += e;
}

template <int THREADS, int NV, int G, class T>
__global__ void __launch_bounds__(THREADS)
    softmax_rows_regs(const T *x, T *y, int64_t rows, int64_t cols) {
    __shared__ float shm[32];
    const int t = threadIdx.x;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *xr = x + row * cols;
        T *yr = y + row * cols;
        float v[NV][G];
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int64_t c = G * (t + (int64_t)k * THREADS);
            if (c < cols) {
                load_n<T, G>(xr + c, v[k]);
            } else {
#pragma unroll
                for (int j = 0; j < G; j++) v[k][j] = -INFINITY;
            }
        }
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < NV; k++)
#pragma unroll
            for (int j = 0; j < G; j++) m = v[k][j] > m ? v[k][j] : m;
        float M = block_max(m, shm), s = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++)
#pragma unroll
            for (int j = 0; j < G; j++) exp_shifted(v[k][j], M, s);
        float inv = 1.0f / block_sum(s, shm);
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int64_t c = G * (t + (int64_t)k * THREADS);
            if (c < cols) {
                float o[G];
#pragma unroll
                for (int j = 0; j < G; j++) o[j] = v[k][j] * inv;
                store_n<T, G>(yr + c, o);
            }
        }
    }
}

template <class T>
static void softmax_rows_regs_launch(nm_device *dev, const T *x, T *y, int64_t rows, int64_t cols) {
    cudaStream_t s = cuda_dev(dev)->stream;
    if (sizeof(T) == 2 && cols % 8 == 0) { /* a block per row (at most 2^20 blocks) */
        unsigned grid = (unsigned)(rows < (1 << 20) ? rows : (1 << 20));
        if (cols <= 8 * 4 * 128)
            softmax_rows_regs<128, 4, 8, T><<<grid, 128, 0, s>>>(x, y, rows, cols);
        else
            softmax_rows_regs<256, 4, 8, T><<<grid, 256, 0, s>>>(x, y, rows, cols);
    } else if (cols <= 4 * 4 * CUDA_THREADS) {
        softmax_rows_regs<CUDA_THREADS, 4, 4, T>
            <<<cuda_grid(dev, rows, 1), CUDA_THREADS, 0, s>>>(x, y, rows, cols);
    } else {
        softmax_rows_regs<CUDA_THREADS, 8, 4, T>
            <<<cuda_grid(dev, rows, 1), CUDA_THREADS, 0, s>>>(x, y, rows, cols);
    }
}

/* ---- softmax, any row: stats pass, then the write pass ---------------------------------- */

template <int TPR, bool VEC, class T>
__global__ void softmax_rows(const T *x, T *y, int64_t rows, int64_t cols) {
    __shared__ float shm[32];
    const int rows_per_block = CUDA_THREADS / TPR, t = threadIdx.x % TPR;
    for (int64_t row = (int64_t)blockIdx.x * rows_per_block + threadIdx.x / TPR; row < rows;
         row += (int64_t)gridDim.x * rows_per_block) {
        const T *xr = x + row * cols;
        T *yr = y + row * cols;
        float M, S;
        row_stats<TPR, VEC>(xr, cols, t, shm, &M, &S);
        float inv = 1.0f / S;
        if (VEC) {
            for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
                float v[4];
                load_n<T, 4>(xr + c, v);
#pragma unroll
                for (int j = 0; j < 4; j++) v[j] = expf(v[j] - M) * inv;
                store_n<T, 4>(yr + c, v);
            }
        } else {
            for (int64_t c = t; c < cols; c += TPR) st(yr + c, expf(ld(xr + c) - M) * inv);
        }
    }
}

template <class T> static neat_status softmax(nm_device *dev, const nm_softmax_args &u) {
    const T *x = (const T *)(const void *)u.x->data;
    T *y = (T *)(void *)u.y->data;
    bool vec = u.cols % 4 == 0;
    if (vec && u.cols > ROW_WARP_COLS && u.cols <= ROW_REGS_COLS) {
        softmax_rows_regs_launch(dev, x, y, u.rows, u.cols);
        return cuda_launched("neat_softmax", "softmax_rows_regs");
    }
    cudaStream_t s = cuda_dev(dev)->stream;
    unsigned grid = rows_grid(dev, u.rows, u.cols);
    if (u.cols <= ROW_WARP_COLS && vec)
        softmax_rows<32, true, T><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
    else if (u.cols <= ROW_WARP_COLS)
        softmax_rows<32, false, T><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
    else if (vec)
        softmax_rows<CUDA_THREADS, true, T><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
    else
        softmax_rows<CUDA_THREADS, false, T><<<grid, CUDA_THREADS, 0, s>>>(x, y, u.rows, u.cols);
    return cuda_launched("neat_softmax", "softmax_rows");
}

extern "C" neat_status cuda_softmax(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.softmax;
    if (u.rows == 0 || u.cols == 0) return NEAT_OK;
#define CALL(T) return softmax<T>(dev, u)
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

/* ---- softmax backward: dx = y (dy - sum(dy y)) ------------------------------------------ */

/* At most 40 registers (6 blocks of 256 per SM, what the earlier lambda-based kernel got from
 * ptxas); without the bound the warp-per-row float4 variant takes 48. */
template <int TPR, bool VEC, class T>
__global__ void __launch_bounds__(CUDA_THREADS, 6)
    softmax_backward_rows(const T *y, const T *dy, T *dx, int64_t rows, int64_t cols) {
    __shared__ float shm[32];
    const int rows_per_block = CUDA_THREADS / TPR, t = threadIdx.x % TPR;
    for (int64_t row = (int64_t)blockIdx.x * rows_per_block + threadIdx.x / TPR; row < rows;
         row += (int64_t)gridDim.x * rows_per_block) {
        const T *yr = y + row * cols, *dyr = dy + row * cols;
        T *dxr = dx + row * cols;
        float dot = 0.0f;
        if (VEC) {
            for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
                /* dy element by element here: as a float4 it took 52-54 registers, not 40 */
                float yv[4];
                load_n<T, 4>(yr + c, yv);
#pragma unroll
                for (int j = 0; j < 4; j++) dot += yv[j] * ld(dyr + c + j);
            }
        } else {
            for (int64_t c = t; c < cols; c += TPR) dot += ld(yr + c) * ld(dyr + c);
        }
        dot = group_sum<TPR>(dot, shm);
        if (VEC) {
            for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
                float yv[4], g[4];
                load_n<T, 4>(yr + c, yv);
                load_n<T, 4>(dyr + c, g);
#pragma unroll
                for (int j = 0; j < 4; j++) g[j] = yv[j] * (g[j] - dot);
                store_n<T, 4>(dxr + c, g);
            }
        } else {
            for (int64_t c = t; c < cols; c += TPR) st(dxr + c, ld(yr + c) * (ld(dyr + c) - dot));
        }
    }
}

template <class T>
static neat_status softmax_backward(nm_device *dev, const nm_softmax_backward_args &u) {
    const T *y = (const T *)(const void *)u.y->data, *dy = (const T *)(const void *)u.dy->data;
    T *dx = (T *)(void *)u.dx->data;
    cudaStream_t s = cuda_dev(dev)->stream;
    unsigned grid = rows_grid(dev, u.rows, u.cols);
    bool vec = u.cols % 4 == 0;
    if (u.cols <= ROW_WARP_COLS && vec)
        softmax_backward_rows<32, true, T><<<grid, CUDA_THREADS, 0, s>>>(y, dy, dx, u.rows, u.cols);
    else if (u.cols <= ROW_WARP_COLS)
        softmax_backward_rows<32, false, T>
            <<<grid, CUDA_THREADS, 0, s>>>(y, dy, dx, u.rows, u.cols);
    else if (vec)
        softmax_backward_rows<CUDA_THREADS, true, T>
            <<<grid, CUDA_THREADS, 0, s>>>(y, dy, dx, u.rows, u.cols);
    else
        softmax_backward_rows<CUDA_THREADS, false, T>
            <<<grid, CUDA_THREADS, 0, s>>>(y, dy, dx, u.rows, u.cols);
    return cuda_launched("neat_softmax_backward", "softmax_backward_rows");
}

extern "C" neat_status cuda_softmax_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.softmax_backward;
    if (u.rows == 0 || u.cols == 0) return NEAT_OK;
#define CALL(T) return softmax_backward<T>(dev, u)
    CUDA_DTYPE_DISPATCH(u.y->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

/* ---- cross-entropy: the loss per row (dlogits NULL) or the gradient --------------------- */

/* d loss / d x[c] = (e^(x-M)/S - [c == k]) / N; NaN for a row with a bad label. */
__device__ __forceinline__ float xent_grad(float v, int64_t c, int64_t k, bool ok, float M,
                                           float inv, float inv_n) {
    if (!ok) return (float)NAN;
    return (expf(v - M) * inv - (c == k ? 1.0f : 0.0f)) * inv_n;
}

/* Every label an exact integer in 0..cols-1, else the error record names the first bad row
 * found; run before xent_rows so that a bad label leaves every output untouched. */
__global__ void xent_check_labels(const float *labels, int64_t rows, int64_t cols, int *err,
                                  int op_index) {
    if (cuda_failed(err)) return;
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
         r += (int64_t)gridDim.x * blockDim.x) {
        float label = labels[r];
        if (!(label >= 0.0f && (double)label < (double)cols && label == floorf(label)))
            cuda_fail(err, CUDA_ERR_LABEL, r, label, op_index);
    }
}

/* The mean loss, written only when no op has failed (the record is read after the sum). */
__global__ void xent_store_loss(float *loss, const float *sum, const int *err) {
    if (!cuda_failed(err)) *loss = *sum;
}

template <int TPR, bool VEC>
__global__ void xent_rows(const float *logits, const float *labels, float *row_loss, float *dlogits,
                          int64_t rows, int64_t cols, float inv_n, int *err, int op_index) {
    __shared__ float shm[32];
    if (cuda_failed(err)) return; /* a bad label (checked just before) or an earlier failure */
    const int rows_per_block = CUDA_THREADS / TPR, t = threadIdx.x % TPR;
    for (int64_t row = (int64_t)blockIdx.x * rows_per_block + threadIdx.x / TPR; row < rows;
         row += (int64_t)gridDim.x * rows_per_block) {
        const float *xr = logits + row * cols;
        float label = labels[row];
        bool ok = label >= 0.0f && (double)label < (double)cols && label == floorf(label);
        int64_t k = ok ? (int64_t)label : -1;
        float M, S;
        row_stats<TPR, VEC>(xr, cols, t, shm, &M, &S);
        if (!dlogits) {
            if (t == 0) row_loss[row] = ok ? (M - xr[k]) + logf(S) : NAN;
            continue;
        }
        float inv = 1.0f / S, *dr = dlogits + row * cols;
        if (VEC) {
            for (int64_t c = 4 * t; c < cols; c += 4 * TPR) {
                float4 v = *reinterpret_cast<const float4 *>(xr + c);
                *reinterpret_cast<float4 *>(dr + c) =
                    make_float4(xent_grad(v.x, c, k, ok, M, inv, inv_n),
                                xent_grad(v.y, c + 1, k, ok, M, inv, inv_n),
                                xent_grad(v.z, c + 2, k, ok, M, inv, inv_n),
                                xent_grad(v.w, c + 3, k, ok, M, inv, inv_n));
            }
        } else {
            for (int64_t c = t; c < cols; c += TPR)
                dr[c] = xent_grad(xr[c], c, k, ok, M, inv, inv_n);
        }
    }
}

static neat_status xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, float *row_loss,
                        float *dlogits, const char *what) {
    const auto &u =
        op->kind == NM_OP_SOFTMAX_XENT ? op->u.softmax_xent : op->u.softmax_xent_backward;
    cuda_cmdbuf *c = cuda_cb(cb);
    const float *x = u.logits->data, *labels = u.labels->data;
    float inv_n = 1.0f / (float)u.rows;
    int op_index = (int)c->cur_op;
    cudaStream_t s = cuda_dev(dev)->stream;
    xent_check_labels<<<cuda_grid(dev, u.rows), CUDA_THREADS, 0, s>>>(labels, u.rows, u.cols,
                                                                      c->err, op_index);
    neat_status st = cuda_launched(what, "xent_check_labels");
    if (st) return st;
    unsigned grid = rows_grid(dev, u.rows, u.cols);
    bool vec = u.cols % 4 == 0;
    if (u.cols <= ROW_WARP_COLS && vec)
        xent_rows<32, true><<<grid, CUDA_THREADS, 0, s>>>(x, labels, row_loss, dlogits, u.rows,
                                                          u.cols, inv_n, c->err, op_index);
    else if (u.cols <= ROW_WARP_COLS)
        xent_rows<32, false><<<grid, CUDA_THREADS, 0, s>>>(x, labels, row_loss, dlogits, u.rows,
                                                           u.cols, inv_n, c->err, op_index);
    else if (vec)
        xent_rows<CUDA_THREADS, true><<<grid, CUDA_THREADS, 0, s>>>(
            x, labels, row_loss, dlogits, u.rows, u.cols, inv_n, c->err, op_index);
    else
        xent_rows<CUDA_THREADS, false><<<grid, CUDA_THREADS, 0, s>>>(
            x, labels, row_loss, dlogits, u.rows, u.cols, inv_n, c->err, op_index);
    return cuda_launched(what, "xent_rows");
}

extern "C" neat_status cuda_softmax_xent(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_softmax_cross_entropy";
    const auto &u = op->u.softmax_xent;
    if (u.rows == 0) return cuda_fill_f32(dev, u.out->data, 1, 0.0f, what);
    if (u.cols == 0) /* no class can be a valid label: every row is an error */
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: logits have 0 classes", what);
    void *rl, *mean;
    /* Zeroed once: after a failure xent_rows writes nothing, and the sum still reads it. */
    neat_status st = cuda_scratch_zeroed(dev, cb, 0, (size_t)u.rows * sizeof(float), &rl);
    if (!st) st = cuda_scratch(cb, 3, sizeof(float), &mean);
    if (!st) st = xent(dev, cb, op, (float *)rl, NULL, what);
    if (!st)
        st = cuda_sum3(dev, cb, 1, (const float *)rl, 1, u.rows, 1, 1.0f / (float)u.rows, 0,
                       (float *)mean, what);
    if (st) return st;
    xent_store_loss<<<1, 1, 0, cuda_dev(dev)->stream>>>(u.out->data, (const float *)mean,
                                                        cuda_cb(cb)->err);
    return cuda_launched(what, "xent_store_loss");
}

extern "C" neat_status cuda_softmax_xent_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_softmax_cross_entropy_backward";
    const auto &u = op->u.softmax_xent_backward;
    if (u.rows == 0) return NEAT_OK;
    if (u.cols == 0) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: logits have 0 classes", what);
    return xent(dev, cb, op, NULL, u.out->data, what);
}
