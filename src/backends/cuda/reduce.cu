/*
 * reduce.cu — deterministic sums: sum_all, sum_axis, and the column and channel sums that
 * bias gradients and the cross-entropy need.
 *
 * Every sum is y[o, i] = scale * sum_l x[o, l, i] (+ y[o, i]) with x seen as
 * [outer, len, inner], x and y of one storage type T (float, bf16, f16), accumulated in
 * float and y rounded once. No float atomics: the summation tree depends only on the shape
 * and the type, so the same input gives the same bits on every run.
 *  - outer == inner == 1, len > 1024 (the sum of a whole tensor): one pass, sum_all_kernel.
 *    Block b sums a contiguous chunk of at most SUM_MAX_TILES tiles; a tile is SUM_LOADS
 *    16-byte loads per thread, all issued before the first add (16 KiB of float32 per block
 *    in flight), added in a fixed order into one float accumulator per element of the load
 *    (4 or 8), so each accumulator takes at most 32 terms in sequence. The chunk is sized
 *    from the length alone so that about SUM_GRID blocks cover the tensor: one wave of
 *    blocks that stream until the end, no second wave (the old kernel's 2048 blocks of one
 *    tile ran in 2-3 waves with a block reduction between each tile and the next). The
 *    block that finishes last (a ticket taken after a fence) adds the blocks' sums in index
 *    order, then the < 8 elements past the last whole load.
 *  - inner == 1 (contiguous rows): a row of at most 1024 is summed by one warp; a longer row
 *    is cut in chunks of ROW_CHUNK = 8192, each summed by a block of 256 threads (32 values
 *    per thread, as 8 loads of 4 when aligned, then a shuffle tree), and the chunks' sums
 *    form a shorter row (float32) for the next level.
 *  - inner > 1 (columns): one thread per (o, chunk, i) sums COL_CHUNK = 64 consecutive l
 *    sequentially (consecutive threads read consecutive i: coalesced); chunk sums again
 *    form [outer, chunks, inner] for the next level.
 * Error: at most 32 (rows) or 64 (columns) terms are added in sequence at each level, the
 * rest is a tree, so the error stays near (log2 n + 1) 2^-24 sum|x|, the bound of neatml.h.
 * Partial sums of level k live in scratch slot first_slot + k % 2 (float32 whatever T).
 * Channel sums of half tensors (bias gradients of conv and linear) go half -> float32 sums
 * of each plane -> the column sums rounded once to the half type (channel_sum).
 */
#include "common.cuh"

#include <type_traits>

#define ROW_CHUNK 8192
#define ROW_WARP_MAX 1024
#define COL_CHUNK 64

#define SUM_THREADS 256
#define SUM_LOADS 8                        /* 16-byte loads in flight per thread */
#define SUM_TILE (SUM_THREADS * SUM_LOADS) /* 16-byte vectors per block per tile */
#define SUM_MAX_TILES 4                    /* per block: <= 32 terms per accumulator */
#define SUM_GRID 512                       /* blocks aimed at: 4 per SM of an H200 */
#define SUM_MAX_BLOCKS (SUM_THREADS * 32)  /* the last block adds <= 32 sums per thread */

/* y[k] = scale * acc (+ y[k]), rounded once to T. */
template <class T>
__device__ __forceinline__ void store_sum(T *y, int64_t k, float acc, float scale, int accumulate) {
    st(y + k, accumulate ? ld(y + k) + scale * acc : scale * acc);
}

/* ---- the sum of a whole tensor, one pass ------------------------------------------------ */

/* acc[0] + ... + acc[N-1] as a fixed tree (N = 4 or 8). */
template <int N> __device__ __forceinline__ float tree_sum(const float (&a)[N]) {
    float t = (a[0] + a[1]) + (a[2] + a[3]);
    if constexpr (N == 8) t += (a[4] + a[5]) + (a[6] + a[7]);
    return t;
}

/* Block b sums vectors [b * chunk, min(nv, (b + 1) * chunk)) of x (nv = n / N whole 16-byte
 * vectors), tile by tile; chunk is a multiple of SUM_TILE. */
template <class T>
__global__ void __launch_bounds__(SUM_THREADS, 4)
    sum_all_kernel(const T *__restrict__ x, int64_t n, int64_t chunk, float *partial,
                   unsigned *ticket, T *y, float scale, int accumulate) {
    cuda_pdl_enter();
    enum { N = vec16<T>::N };
    __shared__ float shm[32];
    __shared__ int last;
    const int t = threadIdx.x;
    int64_t nv = n / N, lo = (int64_t)blockIdx.x * chunk, hi = min(nv, lo + chunk);
    float acc[N] = {};
    for (int64_t base = lo; base < hi; base += SUM_TILE) {
        /* raw words until the adds: 32 registers in flight for any T */
        words_t<4> v[SUM_LOADS];
        if (base + SUM_TILE <= hi) {
#pragma unroll
            for (int k = 0; k < SUM_LOADS; k++)
                v[k] = load_words<4>(x + (base + k * SUM_THREADS + t) * N);
        } else { /* the last tile of the tensor; zero bits are +0 in every type */
#pragma unroll
            for (int k = 0; k < SUM_LOADS; k++) {
                int64_t i = base + k * SUM_THREADS + t;
                v[k] = i < hi ? load_words<4>(x + i * N) : words_t<4>{};
            }
        }
#pragma unroll
        for (int k = 0; k < SUM_LOADS; k++)
#pragma unroll
            for (int j = 0; j < N; j++) acc[j] += unpack<T>(v[k].w, j);
    }
    float sum = block_sum(tree_sum<N>(acc), shm);
    if (t == 0) {
        partial[blockIdx.x] = sum;
        __threadfence();
        last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    sum = 0.0f;
    for (unsigned i = t; i < gridDim.x; i += blockDim.x) sum += __ldcg(partial + i);
    sum = block_sum(sum, shm);
    if (t == 0) {
        for (int64_t i = nv * N; i < n; i++) sum += ld(x + i); /* < N elements */
        store_sum(y, 0, sum, scale, accumulate);
        *ticket = 0; /* for the next run */
    }
}

/* Launch geometry of sum_all_kernel from the length alone: *blocks of *chunk vectors. */
template <class T> static void sum_all_geometry(int64_t n, int64_t *chunk, int64_t *blocks) {
    int64_t nv = n / vec16<T>::N;
    int64_t tiles = (nv + SUM_TILE - 1) / SUM_TILE;
    int64_t per_block = (tiles + SUM_GRID - 1) / SUM_GRID;
    if (per_block > SUM_MAX_TILES) per_block = SUM_MAX_TILES;
    if (per_block < 1) per_block = 1;
    *chunk = per_block * SUM_TILE;
    *blocks = nv > 0 ? (nv + *chunk - 1) / *chunk : 1;
}

/* ---- rows and columns, level by level --------------------------------------------------- */

/* This thread's share of x[lo, hi) (a chunk of at most ROW_CHUNK), before the block sum.
 * VEC: (hi - lo) % 4 == 0 and x + lo aligned to 4 elements. */
template <bool VEC, class T>
__device__ __forceinline__ float chunk_sum(const T *__restrict__ xr, int64_t lo, int64_t hi) {
    if (!VEC) {
        float acc = 0.0f;
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += ld(xr + i);
        return acc;
    }
    float s[4] = {};
    if (hi - lo == ROW_CHUNK && blockDim.x == CUDA_THREADS) {
        /* a whole chunk: the thread's 8 loads issued together, then added in the order of
         * the loop below */
        enum { K = ROW_CHUNK / (4 * CUDA_THREADS) };
        float v[K][4];
#pragma unroll
        for (int k = 0; k < K; k++)
            load_n<T, 4>(xr + lo + 4 * (threadIdx.x + k * CUDA_THREADS), v[k]);
#pragma unroll
        for (int k = 0; k < K; k++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[j] += v[k][j];
    } else {
        for (int64_t i = lo + 4 * threadIdx.x; i < hi; i += 4 * blockDim.x) {
            float v[4];
            load_n<T, 4>(xr + i, v);
#pragma unroll
            for (int j = 0; j < 4; j++) s[j] += v[j];
        }
    }
    return tree_sum<4>(s);
}

/* One chunk of one row per block. final: y[row] = scale * s (+ y[row]); otherwise
 * partial[row * chunks + chunk] = s. */
template <bool VEC, class Tin, class T>
__global__ void row_sum_block(const Tin *__restrict__ x, int64_t len, int64_t chunks, T *y,
                              float *partial, float scale, int final_sum, int accumulate) {
    cuda_pdl_enter();
    __shared__ float shm[32];
    int64_t blk = blockIdx.x, row = blk / chunks, chunk = blk % chunks;
    int64_t lo = chunk * ROW_CHUNK, hi = min(len, lo + ROW_CHUNK);
    float acc = block_sum(chunk_sum<VEC>(x + row * len, lo, hi), shm);
    if (threadIdx.x == 0) {
        if (final_sum)
            store_sum(y, row, acc, scale, accumulate);
        else
            partial[blk] = acc;
    }
}

/* One row (len <= ROW_WARP_MAX) per warp, final. */
template <bool VEC, class Tin, class T>
__global__ void row_sum_warp(const Tin *__restrict__ x, int64_t rows, int64_t len, T *y,
                             float scale, int accumulate) {
    cuda_pdl_enter();
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t row = warp; row < rows; row += nwarps) {
        const Tin *xr = x + row * len;
        float acc;
        if (VEC) {
            float s[4] = {};
            for (int64_t i = 4 * lane; i < len; i += 128) {
                float v[4];
                load_n<Tin, 4>(xr + i, v);
#pragma unroll
                for (int j = 0; j < 4; j++) s[j] += v[j];
            }
            acc = tree_sum<4>(s);
        } else {
            acc = 0.0f;
            for (int64_t i = lane; i < len; i += 32) acc += ld(xr + i);
        }
        acc = warp_sum(acc);
        if (lane == 0) store_sum(y, row, acc, scale, accumulate);
    }
}

/* Columns: thread per (o, chunk, i). */
template <class Tin, class T>
__global__ void col_sum(const Tin *__restrict__ x, int64_t outer, int64_t len, int64_t inner,
                        int64_t chunks, T *y, float *partial, float scale, int final_sum,
                        int accumulate) {
    cuda_pdl_enter();
    int64_t total = outer * chunks * inner;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += stride) {
        int64_t i = t % inner, rest = t / inner;
        int64_t chunk = rest % chunks, o = rest / chunks;
        int64_t lo = chunk * COL_CHUNK, hi = min(len, lo + COL_CHUNK);
        const Tin *p = x + (o * len + lo) * inner + i;
        float acc = 0.0f;
#pragma unroll 8
        for (int64_t l = lo; l < hi; l++, p += inner) acc += ld(p);
        if (final_sum)
            store_sum(y, o * inner + i, acc, scale, accumulate);
        else
            partial[t] = acc; /* t == (o * chunks + chunk) * inner + i */
    }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* One level: x [outer, len, inner] of Tin into y (chunks == 1) or into partial
 * [outer, chunks, inner]. */
template <class Tin, class T>
static neat_status sum_level(nm_device *dev, const Tin *x, int64_t outer, int64_t len,
                             int64_t inner, int64_t chunks, T *y, float *partial, float scale,
                             int accumulate, const char *what) {
    int final_sum = chunks == 1;
    if (inner > 1) {
        cuda_launch(dev, col_sum<Tin, T>, cuda_grid(dev, outer * chunks * inner), CUDA_THREADS, x,
                    outer, len, inner, chunks, y, partial, scale, final_sum, accumulate);
        return cuda_launched(what, "col_sum");
    }
    int64_t blocks = outer * chunks;
    /* A grid's x dimension. neat_sum: refused at record time (cuda_sum_check). Reaching it
     * takes >= 2^31 rows of > ROW_WARP_MAX elements, >= 2^41 elements: no GPU holds such a
     * tensor, so this is a backstop for every caller. */
    if (blocks > INT32_MAX)
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: %lld rows of %lld are too many to sum", what,
                        (long long)outer, (long long)len);
    if (len % 4 == 0)
        cuda_launch(dev, row_sum_block<true, Tin, T>, (unsigned)blocks, CUDA_THREADS, x, len,
                    chunks, y, partial, scale, final_sum, accumulate);
    else
        cuda_launch(dev, row_sum_block<false, Tin, T>, (unsigned)blocks, CUDA_THREADS, x, len,
                    chunks, y, partial, scale, final_sum, accumulate);
    return cuda_launched(what, "row_sum_block");
}

/* x of Tin, y of T: the same type but for the channel sums below (half in, float32 out and
 * back), which never take the sum_all path. */
template <class Tin, class T>
static neat_status sum3(nm_device *dev, nm_cmdbuf *cb, int first_slot, const Tin *x, int64_t outer,
                        int64_t len, int64_t inner, float scale, int accumulate, T *y,
                        const char *what) {
    if (outer <= 0 || inner <= 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (len <= 0) {
        if (accumulate) return NEAT_OK;
        /* every bit zero is +0 in each type */
        return cuda_check(cudaMemsetAsync(y, 0, (size_t)(outer * inner) * sizeof(T), s), what,
                          "cudaMemsetAsync");
    }
    if constexpr (std::is_same<Tin, T>::value) {
        int64_t chunk, blocks;
        sum_all_geometry<T>(len, &chunk, &blocks);
        if (outer == 1 && inner == 1 && len > ROW_WARP_MAX && blocks <= SUM_MAX_BLOCKS) {
            void *partial, *ticket;
            neat_status st = cuda_scratch(cb, first_slot, (size_t)blocks * sizeof(float), &partial);
            if (!st) st = cuda_scratch_zeroed(dev, cb, first_slot + 1, sizeof(unsigned), &ticket);
            if (st) return st;
            cuda_launch(dev, sum_all_kernel<T>, (unsigned)blocks, SUM_THREADS, x, len, chunk,
                        (float *)partial, (unsigned *)ticket, y, scale, accumulate);
            return cuda_launched(what, "sum_all_kernel");
        }
    }
    if (inner == 1 && len <= ROW_WARP_MAX) {
        unsigned grid = cuda_grid(dev, outer * 32);
        if (len % 4 == 0)
            cuda_launch(dev, row_sum_warp<true, Tin, T>, grid, CUDA_THREADS, x, outer, len, y,
                        scale, accumulate);
        else
            cuda_launch(dev, row_sum_warp<false, Tin, T>, grid, CUDA_THREADS, x, outer, len, y,
                        scale, accumulate);
        return cuda_launched(what, "row_sum_warp");
    }
    const float *cur = NULL; /* level >= 1 reads the float32 sums of the level before */
    for (int level = 0;; level++) {
        if (level > 0 && inner == 1 && len <= ROW_WARP_MAX) {
            unsigned grid = cuda_grid(dev, outer * 32);
            if (len % 4 == 0)
                cuda_launch(dev, row_sum_warp<true, float, T>, grid, CUDA_THREADS, cur, outer, len,
                            y, scale, accumulate);
            else
                cuda_launch(dev, row_sum_warp<false, float, T>, grid, CUDA_THREADS, cur, outer, len,
                            y, scale, accumulate);
            return cuda_launched(what, "row_sum_warp");
        }
        int64_t chunks = ceil_div(len, inner == 1 ? ROW_CHUNK : COL_CHUNK);
        float *partial = NULL;
        if (chunks > 1) {
            void *buf;
            neat_status st = cuda_scratch(cb, first_slot + (level & 1),
                                          (size_t)(outer * chunks * inner) * sizeof(float), &buf);
            if (st) return st;
            partial = (float *)buf;
        }
        neat_status st = level == 0 ? sum_level<Tin, T>(dev, x, outer, len, inner, chunks, y,
                                                        partial, scale, accumulate, what)
                                    : sum_level<float, T>(dev, cur, outer, len, inner, chunks, y,
                                                          partial, scale, accumulate, what);
        if (st || chunks == 1) return st;
        cur = partial;
        len = chunks;
    }
}

extern "C" neat_status cuda_sum3(nm_device *dev, nm_cmdbuf *cb, int first_slot, const float *x,
                                 int64_t outer, int64_t len, int64_t inner, float scale,
                                 int accumulate, float *y, const char *what) {
    return sum3<float, float>(dev, cb, first_slot, x, outer, len, inner, scale, accumulate, y,
                              what);
}

/* db[c] = sum over o of (sum over i of z[o, c, i]): the planes' sums in float32 (slot
 * first_slot + 2, reduced through first_slot + 3 and + 4), then their columns (through
 * first_slot and + 1) rounded once to T; inner == 1 is the column sum alone. */
template <class T>
static neat_status channel_sum(nm_device *dev, nm_cmdbuf *cb, int first_slot, const T *z,
                               int64_t outer, int64_t channels, int64_t inner, int accumulate,
                               T *db, const char *what) {
    if (inner == 1)
        return sum3<T, T>(dev, cb, first_slot, z, 1, outer, channels, 1.0f, accumulate, db, what);
    void *sums;
    neat_status st =
        cuda_scratch(cb, first_slot + 2, (size_t)(outer * channels) * sizeof(float), &sums);
    if (!st)
        st = sum3<T, float>(dev, cb, first_slot + 3, z, outer * channels, inner, 1, 1.0f, 0,
                            (float *)sums, what);
    if (!st)
        st = sum3<float, T>(dev, cb, first_slot, (const float *)sums, 1, outer, channels, 1.0f,
                            accumulate, db, what);
    return st;
}

extern "C" neat_status cuda_half_channel_sum(nm_device *dev, nm_cmdbuf *cb, int first_slot,
                                             neat_dtype dt, const void *z, int64_t outer,
                                             int64_t channels, int64_t inner, int accumulate,
                                             void *db, const char *what) {
    if (channels == 0) return NEAT_OK;
#define CALL(T)                                                                                    \
    return channel_sum<T>(dev, cb, first_slot, (const T *)z, outer, channels, inner, accumulate,   \
                          (T *)db, what)
    CUDA_DTYPE_DISPATCH(dt, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

/* The blocks of the first level of row sums that sum3<T, T> launches for x [outer, len,
 * inner] (row_sum_block: inner 1, rows longer than ROW_WARP_MAX, not sum_all_kernel's one
 * pass), by sum3's own turns; 0 where it launches none. Later levels launch fewer. */
template <class T> static int64_t first_row_blocks(int64_t outer, int64_t len, int64_t inner) {
    if (outer <= 0 || inner <= 0 || len <= 0) return 0; /* empty: a memset or nothing */
    if (inner > 1 || len <= ROW_WARP_MAX) return 0;     /* col_sum, row_sum_warp */
    int64_t chunk, blocks;
    sum_all_geometry<T>(len, &chunk, &blocks);
    if (outer == 1 && blocks <= SUM_MAX_BLOCKS) return 0; /* sum_all_kernel */
    return outer * ceil_div(len, ROW_CHUNK);
}

/* Record time: neat_sum_all and neat_sum_axis whose first level would pass a grid's int32. */
extern "C" neat_status cuda_sum_check(const nm_op *op) {
    const auto &u = op->u.sum;
    bool all = u.axis < 0;
    int64_t outer = all ? 1 : u.outer, len = all ? u.x->numel : u.len, inner = all ? 1 : u.inner;
    int64_t blocks = 0;
#define CALL(T) blocks = first_row_blocks<T>(outer, len, inner)
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    if (blocks <= INT32_MAX) return NEAT_OK;
    return nm_error(NEAT_ERR_UNSUPPORTED, "%s: %lld rows of %lld are too many to sum", op->fn,
                    (long long)outer, (long long)len);
}

extern "C" neat_status cuda_sum(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.sum;
    bool all = u.axis < 0;
    int64_t outer = all ? 1 : u.outer, len = all ? u.x->numel : u.len, inner = all ? 1 : u.inner;
    const char *what = all ? "neat_sum_all" : "neat_sum_axis";
#define CALL(T)                                                                                    \
    return sum3<T, T>(dev, cb, 0, (const T *)(const void *)u.x->data, outer, len, inner, 1.0f, 0,  \
                      (T *)(void *)u.y->data, what)
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}
