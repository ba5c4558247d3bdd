/*
 * reduce.cu — deterministic sums: sum_all, sum_axis, and the column and channel sums that
 * bias gradients and the cross-entropy need.
 *
 * Every sum is y[o, i] = scale * sum_l x[o, l, i] (+ y[o, i]) with x seen as
 * [outer, len, inner]. No float atomics: the summation tree depends only on the shape, so
 * the same input gives the same bits on every run.
 *  - inner == 1 (contiguous rows): a row of at most 1024 is summed by one warp; a longer row
 *    is cut in chunks of ROW_CHUNK = 8192, each summed by a block of 256 threads (32 values
 *    per thread, as 8 float4 loads when aligned, then a shuffle tree), and the chunks' sums
 *    form a shorter row for the next level. A single row of up to 8192 chunks (the sum of a
 *    whole tensor) does both levels in one launch: sum_onepass.
 *  - inner > 1 (columns): one thread per (o, chunk, i) sums COL_CHUNK = 64 consecutive l
 *    sequentially (consecutive threads read consecutive i: coalesced); chunk sums again
 *    form [outer, chunks, inner] for the next level.
 * Error: at most 32 (rows) or 64 (columns) terms are added in sequence at each level, the
 * rest is a tree, so the error stays near (log2 n + 1) 2^-24 sum|x|, the bound of neatml.h.
 * Partial sums of level k live in scratch slot first_slot + k % 2.
 */
#include "common.cuh"

#define ROW_CHUNK 8192
#define ROW_WARP_MAX 1024
#define COL_CHUNK 64

/* This thread's share of x[lo, hi) (a chunk of at most ROW_CHUNK), before the block sum.
 * VEC: (hi - lo) % 4 == 0 and x + lo 16-byte aligned. */
template <bool VEC>
__device__ __forceinline__ float chunk_sum(const float *__restrict__ xr, int64_t lo, int64_t hi) {
    if (!VEC) {
        float acc = 0.0f;
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += xr[i];
        return acc;
    }
    float4 s = make_float4(0, 0, 0, 0);
    if (hi - lo == ROW_CHUNK && blockDim.x == CUDA_THREADS) {
        /* a whole chunk: the thread's 8 loads issued together, then added in the order of
         * the loop below */
        enum { K = ROW_CHUNK / (4 * CUDA_THREADS) };
        float4 v[K];
#pragma unroll
        for (int k = 0; k < K; k++)
            v[k] = __ldg(
                reinterpret_cast<const float4 *>(xr + lo + 4 * (threadIdx.x + k * CUDA_THREADS)));
#pragma unroll
        for (int k = 0; k < K; k++) {
            s.x += v[k].x;
            s.y += v[k].y;
            s.z += v[k].z;
            s.w += v[k].w;
        }
    } else {
        for (int64_t i = lo + 4 * threadIdx.x; i < hi; i += 4 * blockDim.x) {
            float4 v = *reinterpret_cast<const float4 *>(xr + i);
            s.x += v.x;
            s.y += v.y;
            s.z += v.z;
            s.w += v.w;
        }
    }
    return (s.x + s.y) + (s.z + s.w);
}

/* One chunk of one row per block. final: out[row] = scale * s (+ out[row]); otherwise
 * out[row * chunks + chunk] = s. */
template <bool VEC>
__global__ void row_sum_block(const float *__restrict__ x, int64_t len, int64_t chunks, float *out,
                              float scale, int final_sum, int accumulate) {
    __shared__ float shm[32];
    int64_t blk = blockIdx.x, row = blk / chunks, chunk = blk % chunks;
    int64_t lo = chunk * ROW_CHUNK, hi = min(len, lo + ROW_CHUNK);
    float acc = block_sum(chunk_sum<VEC>(x + row * len, lo, hi), shm);
    if (threadIdx.x == 0) {
        if (final_sum)
            out[row] = accumulate ? out[row] + scale * acc : scale * acc;
        else
            out[blk] = acc;
    }
}

/* One long row in one launch: block b sums chunk b into partial[b]; the block that finishes
 * last (a ticket taken after a fence) adds the partials in index order, writes y and puts the
 * ticket back to 0 for the next run. Which block is last varies; the order of the additions
 * does not, so the result is deterministic. chunks <= ROW_CHUNK. */
template <bool VEC>
__global__ void sum_onepass(const float *__restrict__ x, int64_t len, float *partial,
                            unsigned *ticket, float *y, float scale, int accumulate) {
    __shared__ float shm[32];
    __shared__ int last;
    int64_t lo = (int64_t)blockIdx.x * ROW_CHUNK, hi = min(len, lo + ROW_CHUNK);
    float acc = block_sum(chunk_sum<VEC>(x, lo, hi), shm);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc;
        __threadfence();
        last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    acc = 0.0f;
    for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x) acc += __ldcg(partial + i);
    acc = block_sum(acc, shm);
    if (threadIdx.x == 0) {
        y[0] = accumulate ? y[0] + scale * acc : scale * acc;
        *ticket = 0;
    }
}

/* One row (len <= ROW_WARP_MAX) per warp, final. */
template <bool VEC>
__global__ void row_sum_warp(const float *__restrict__ x, int64_t rows, int64_t len, float *y,
                             float scale, int accumulate) {
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t row = warp; row < rows; row += nwarps) {
        const float *xr = x + row * len;
        float acc;
        if (VEC) {
            float4 s = make_float4(0, 0, 0, 0);
            for (int64_t i = 4 * lane; i < len; i += 128) {
                float4 v = *reinterpret_cast<const float4 *>(xr + i);
                s.x += v.x;
                s.y += v.y;
                s.z += v.z;
                s.w += v.w;
            }
            acc = (s.x + s.y) + (s.z + s.w);
        } else {
            acc = 0.0f;
            for (int64_t i = lane; i < len; i += 32) acc += xr[i];
        }
        acc = warp_sum(acc);
        if (lane == 0) y[row] = accumulate ? y[row] + scale * acc : scale * acc;
    }
}

/* Columns: thread per (o, chunk, i). */
__global__ void col_sum(const float *__restrict__ x, int64_t outer, int64_t len, int64_t inner,
                        int64_t chunks, float *out, float scale, int final_sum, int accumulate) {
    int64_t total = outer * chunks * inner;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += stride) {
        int64_t i = t % inner, rest = t / inner;
        int64_t chunk = rest % chunks, o = rest / chunks;
        int64_t lo = chunk * COL_CHUNK, hi = min(len, lo + COL_CHUNK);
        const float *p = x + (o * len + lo) * inner + i;
        float acc = 0.0f;
#pragma unroll 8
        for (int64_t l = lo; l < hi; l++, p += inner) acc += *p;
        if (final_sum) {
            int64_t k = o * inner + i;
            out[k] = accumulate ? out[k] + scale * acc : scale * acc;
        } else {
            out[t] = acc; /* t == (o * chunks + chunk) * inner + i */
        }
    }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

extern "C" neat_status cuda_sum3(nm_device *dev, nm_cmdbuf *cb, int first_slot, const float *x,
                                 int64_t outer, int64_t len, int64_t inner, float scale,
                                 int accumulate, float *y, const char *what) {
    if (outer <= 0 || inner <= 0) return NEAT_OK;
    if (len <= 0) return accumulate ? NEAT_OK : cuda_fill_f32(dev, y, outer * inner, 0.0f, what);
    cudaStream_t s = cuda_dev(dev)->stream;
    if (outer == 1 && inner == 1 && len > ROW_WARP_MAX && ceil_div(len, ROW_CHUNK) <= ROW_CHUNK) {
        unsigned chunks = (unsigned)ceil_div(len, ROW_CHUNK);
        void *partial, *ticket;
        neat_status st = cuda_scratch(cb, first_slot, (size_t)chunks * sizeof(float), &partial);
        if (!st) st = cuda_scratch_zeroed(dev, cb, first_slot + 1, sizeof(unsigned), &ticket);
        if (st) return st;
        if (len % 4 == 0)
            sum_onepass<true><<<chunks, CUDA_THREADS, 0, s>>>(
                x, len, (float *)partial, (unsigned *)ticket, y, scale, accumulate);
        else
            sum_onepass<false><<<chunks, CUDA_THREADS, 0, s>>>(
                x, len, (float *)partial, (unsigned *)ticket, y, scale, accumulate);
        return cuda_launched(what, "sum_onepass");
    }
    const float *cur = x;
    for (int level = 0;; level++) {
        if (inner == 1 && len <= ROW_WARP_MAX) {
            unsigned grid = cuda_grid(dev, outer * 32);
            if (len % 4 == 0)
                row_sum_warp<true>
                    <<<grid, CUDA_THREADS, 0, s>>>(cur, outer, len, y, scale, accumulate);
            else
                row_sum_warp<false>
                    <<<grid, CUDA_THREADS, 0, s>>>(cur, outer, len, y, scale, accumulate);
            return cuda_launched(what, "row_sum_warp");
        }
        int64_t chunks = ceil_div(len, inner == 1 ? ROW_CHUNK : COL_CHUNK);
        int final_sum = chunks == 1;
        float *out = y;
        if (!final_sum) {
            void *buf;
            neat_status st = cuda_scratch(cb, first_slot + (level & 1),
                                          (size_t)(outer * chunks * inner) * sizeof(float), &buf);
            if (st) return st;
            out = (float *)buf;
        }
        if (inner == 1) {
            int64_t blocks = outer * chunks;
            if (blocks > INT32_MAX)
                return nm_error(NEAT_ERR_UNSUPPORTED, "%s: %lld rows of %lld are too many to sum",
                                what, (long long)outer, (long long)len);
            if (len % 4 == 0)
                row_sum_block<true><<<(unsigned)blocks, CUDA_THREADS, 0, s>>>(
                    cur, len, chunks, out, scale, final_sum, accumulate);
            else
                row_sum_block<false><<<(unsigned)blocks, CUDA_THREADS, 0, s>>>(
                    cur, len, chunks, out, scale, final_sum, accumulate);
            neat_status st = cuda_launched(what, "row_sum_block");
            if (st) return st;
        } else {
            col_sum<<<cuda_grid(dev, outer * chunks * inner), CUDA_THREADS, 0, s>>>(
                cur, outer, len, inner, chunks, out, scale, final_sum, accumulate);
            neat_status st = cuda_launched(what, "col_sum");
            if (st) return st;
        }
        if (final_sum) return NEAT_OK;
        cur = out;
        len = chunks;
    }
}

extern "C" neat_status cuda_sum(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.sum;
    if (op->u.sum.axis < 0)
        return cuda_sum3(dev, cb, 0, u.x->data, 1, u.x->numel, 1, 1.0f, 0, u.y->data,
                         "neat_sum_all");
    return cuda_sum3(dev, cb, 0, u.x->data, u.outer, u.len, u.inner, 1.0f, 0, u.y->data,
                     "neat_sum_axis");
}
