/*
 * mem_kernels.cu — what a kernel can reach on the memory-bound bench cases' sizes: an empty
 * graph, plain copy and read kernels, and launch variants of the softmax and sum_all kernels
 * (4096x4096, float32 and bf16), each one CUDA graph timed with the bench's queued clock
 * (a replay right behind an untimed one), median of 30. Percentages are of the 1 GiB
 * cudaMemcpy in a graph, which runs slower than PyTorch's copy kernel: compare.py's copy
 * figure is the one the docs use (docs/BENCHMARKS.md, "H200, 2026-11-30 evening").
 * Its sum_k and sm_k are parameterised copies of reduce.cu's sum_all_kernel and softmax.cu's
 * softmax_rows_regs (block size, loads in flight, elements per load, grid), so that launch
 * variants run side by side in one process; the library's kernels are the ones kept.
 * Not part of the build; on a CUDA machine, from the repository root:
 *   nvcc -O3 -std=c++17 -arch=sm_90 -Iinclude -Isrc -Isrc/backends/cuda \
 *        bench/micro/mem_kernels.cu -o /tmp/mem_kernels && /tmp/mem_kernels
 */
#include "backends/cuda/common.cuh"
#include <cstdio>
#include <vector>
#include <algorithm>
#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_) {                                                                                  \
            printf("CUDA %s line %d\n", cudaGetErrorString(e_), __LINE__);                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

__global__ void empty_k() {}

template <class T> __global__ void copy_k(const T *__restrict__ x, T *__restrict__ y, int64_t n) {
    int64_t nv = n / vec16<T>::N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x)
        reinterpret_cast<uint4 *>(y)[i] = reinterpret_cast<const uint4 *>(x)[i];
}
__global__ void read_k(const float *__restrict__ x, int64_t n, float *out) {
    int64_t nv = n / 4;
    float s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nv;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 v = reinterpret_cast<const float4 *>(x)[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.f) *out = s;
}

// ---- softmax: TPR threads per row, NV groups of G elements per thread, rows held in registers
template <int TPR> __device__ __forceinline__ float gmax(float v, float *shm) {
    v = warp_max(v);
    v = __shfl_sync(0xffffffffu, v, 0);
    if (TPR == 32) return v;
    constexpr int W = TPR / 32;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g0 = (warp / W) * W;
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    float m = shm[g0];
#pragma unroll
    for (int k = 1; k < W; k++) m = fmaxf(m, shm[g0 + k]);
    return m;
}
template <int TPR> __device__ __forceinline__ float gsum(float v, float *shm) {
    v = warp_sum(v);
    v = __shfl_sync(0xffffffffu, v, 0);
    if (TPR == 32) return v;
    constexpr int W = TPR / 32;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g0 = (warp / W) * W;
    __syncthreads();
    if (lane == 0) shm[32 + warp] = v;
    __syncthreads();
    float s = 0;
#pragma unroll
    for (int k = 0; k < W; k++) s += shm[32 + g0 + k];
    return s;
}
template <int TPR, int NV, int G, int BLOCK, class T, bool CS>
__global__ void __launch_bounds__(BLOCK) sm_k(const T *x, T *y, int64_t rows, int64_t cols) {
    __shared__ float shm[64];
    constexpr int RPB = BLOCK / TPR;
    const int t = threadIdx.x % TPR;
    for (int64_t rb = (int64_t)blockIdx.x * RPB; rb < rows; rb += (int64_t)gridDim.x * RPB) {
        int64_t row = rb + threadIdx.x / TPR; // rows % RPB == 0 here
        const T *xr = x + row * cols;
        T *yr = y + row * cols;
        float v[NV][G];
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int64_t c = G * (t + (int64_t)k * TPR);
            if (c < cols)
                load_n<T, G>(xr + c, v[k]);
            else
                for (int j = 0; j < G; j++) v[k][j] = -INFINITY;
        }
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < NV; k++)
            for (int j = 0; j < G; j++) m = fmaxf(m, v[k][j]);
        float M = gmax<TPR>(m, shm), s = 0;
#pragma unroll
        for (int k = 0; k < NV; k++)
            for (int j = 0; j < G; j++) {
                v[k][j] = v[k][j] == -INFINITY ? 0.f : expf(v[k][j] - M);
                s += v[k][j];
            }
        float inv = 1.0f / gsum<TPR>(s, shm);
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int64_t c = G * (t + (int64_t)k * TPR);
            if (c < cols) {
                float o[G];
                for (int j = 0; j < G; j++) o[j] = v[k][j] * inv;
                if (CS && G * sizeof(T) == 16) {
                    enum { WORDS = 4 };
                    unsigned w[4];
                    for (int q = 0; q < 4; q++)
                        w[q] = sizeof(T) == 4
                                   ? bits_rn<T>(o[q])
                                   : (bits_rn<T>(o[2 * q]) | bits_rn<T>(o[2 * q + 1]) << 16);
                    __stcs(reinterpret_cast<uint4 *>(yr + c), make_uint4(w[0], w[1], w[2], w[3]));
                } else
                    store_n<T, G>(yr + c, o);
            }
        }
    }
}

// ---- sum_all variant: as reduce.cu with parameters
template <class T, int LOADS, int THREADS, int MINB, bool NC>
__global__ void __launch_bounds__(THREADS, MINB)
    sum_k(const T *__restrict__ x, int64_t n, int64_t chunk, float *partial, unsigned *ticket,
          float *y) {
    enum { N = vec16<T>::N, TILE = THREADS * LOADS };
    __shared__ float shm[32];
    __shared__ int last;
    const int t = threadIdx.x;
    int64_t nv = n / N, lo = (int64_t)blockIdx.x * chunk, hi = min(nv, lo + chunk);
    float acc[N] = {};
    for (int64_t base = lo; base < hi; base += TILE) {
        words_t<4> v[LOADS];
        if (base + TILE <= hi) {
#pragma unroll
            for (int k = 0; k < LOADS; k++) {
                const void *p = x + (base + k * THREADS + t) * N;
                if (NC) {
                    uint4 q = __ldcs(reinterpret_cast<const uint4 *>(p));
                    v[k].w[0] = q.x;
                    v[k].w[1] = q.y;
                    v[k].w[2] = q.z;
                    v[k].w[3] = q.w;
                } else
                    v[k] = load_words<4>(p);
            }
        } else {
#pragma unroll
            for (int k = 0; k < LOADS; k++) {
                int64_t i = base + k * THREADS + t;
                v[k] = i < hi ? load_words<4>(x + i * N) : words_t<4>{};
            }
        }
#pragma unroll
        for (int k = 0; k < LOADS; k++)
#pragma unroll
            for (int j = 0; j < N; j++) acc[j] += unpack<T>(v[k].w, j);
    }
    float s = 0;
    for (int j = 0; j < N; j++) s += acc[j];
    float sum = block_sum(s, shm);
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
        *y = sum;
        *ticket = 0;
    }
}

static cudaStream_t gs;
template <class F> static float timeit(const char *name, double bytes, F launch) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(gs, cudaStreamCaptureModeGlobal));
    launch();
    CK(cudaStreamEndCapture(gs, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    std::vector<float> ts;
    for (int r = 0; r < 3; r++) CK(cudaGraphLaunch(ge, gs));
    for (int r = 0; r < 30; r++) {
        CK(cudaGraphLaunch(ge, gs));
        cudaEventRecord(a, gs);
        CK(cudaGraphLaunch(ge, gs));
        cudaEventRecord(b, gs);
        CK(cudaEventSynchronize(b));
        float ms;
        cudaEventElapsedTime(&ms, a, b);
        ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    float med = ts[ts.size() / 2];
    printf("%-44s %8.2f us  %7.0f GB/s  (min %.2f)\n", name, med * 1000, bytes / (med * 1e-3) / 1e9,
           ts[0] * 1000);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return med;
}

int main() {
    CK(cudaStreamCreateWithFlags(&gs, cudaStreamNonBlocking));
    int sms;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    const int64_t R = 4096, C = 4096, n = R * C;
    float *xf, *yf, *part, *out;
    unsigned *ticket;
    __nv_bfloat16 *xb, *yb;
    char *big1, *big2;
    CK(cudaMalloc(&xf, n * 4));
    CK(cudaMalloc(&yf, n * 4));
    CK(cudaMalloc(&xb, n * 2));
    CK(cudaMalloc(&yb, n * 2));
    CK(cudaMalloc(&part, 1 << 20));
    CK(cudaMalloc(&out, 64));
    CK(cudaMalloc(&ticket, 64));
    cudaMemset(ticket, 0, 64);
    CK(cudaMalloc(&big1, 1 << 30));
    CK(cudaMalloc(&big2, 1 << 30));
    std::vector<float> h(n);
    for (int64_t i = 0; i < n; i++) h[i] = (float)((i * 2654435761u) % 1000) / 250.f - 2.f;
    cudaMemcpy(xf, h.data(), n * 4, cudaMemcpyHostToDevice);
    std::vector<__nv_bfloat16> hb(n);
    for (int64_t i = 0; i < n; i++) hb[i] = __float2bfloat16(h[i]);
    cudaMemcpy(xb, hb.data(), n * 2, cudaMemcpyHostToDevice);
    cudaMemset(big1, 1, 1 << 30);
    float copy = timeit("memcpy D2D 1 GiB (reference)", 2.0 * (1 << 30), [&] {
        cudaMemcpyAsync(big2, big1, 1 << 30, cudaMemcpyDeviceToDevice, gs);
    });
    double CB = 2.0 * (1 << 30) / (copy * 1e-3) / 1e9;
    printf("copy bandwidth %.0f GB/s; below, %% of it\n", CB);
#define PCT(ms, bytes) printf("   -> %.1f%% of copy\n", (bytes) / ((ms)*1e-3) / 1e9 / CB * 100)
    timeit("empty kernel", 0, [&] { empty_k<<<1, 32, 0, gs>>>(); });
    timeit("empty kernel 132x256", 0, [&] { empty_k<<<sms, 256, 0, gs>>>(); });
    float m;
    m = timeit("copy kernel f32 64+64 MiB", 2.0 * n * 4,
               [&] { copy_k<float><<<sms * 16, 256, 0, gs>>>(xf, yf, n); });
    PCT(m, 2.0 * n * 4);
    m = timeit("copy kernel bf16 32+32 MiB", 2.0 * n * 2,
               [&] { copy_k<__nv_bfloat16><<<sms * 16, 256, 0, gs>>>(xb, yb, n); });
    PCT(m, 2.0 * n * 2);
    m = timeit("read kernel f32 64 MiB", 1.0 * n * 4,
               [&] { read_k<<<sms * 16, 256, 0, gs>>>(xf, n, out); });
    PCT(m, 1.0 * n * 4);
    m = timeit("read kernel bf16-size 32 MiB", 1.0 * n * 2,
               [&] { read_k<<<sms * 16, 256, 0, gs>>>(xf, n / 2, out); });
    PCT(m, 1.0 * n * 2);
    // softmax
    double sbf = 2.0 * n * 4, sbb = 2.0 * n * 2;
#define SM(TPR, NV, G, BL, T, CS, xx, yy, bytes, grid)                                             \
    m = timeit("softmax " #T " TPR" #TPR " NV" #NV " G" #G " B" #BL " cs" #CS " grid" #grid,       \
               bytes, [&] { sm_k<TPR, NV, G, BL, T, CS><<<grid, BL, 0, gs>>>(xx, yy, R, C); });    \
    PCT(m, bytes);
    SM(256, 4, 4, 256, float, false, xf, yf, sbf, R) // = library today
    SM(256, 4, 4, 256, float, true, xf, yf, sbf, R)
    SM(128, 8, 4, 128, float, false, xf, yf, sbf, R)
    SM(128, 8, 4, 256, float, false, xf, yf, sbf, R / 2)
    SM(512, 2, 4, 512, float, false, xf, yf, sbf, R)
    SM(1024, 1, 4, 1024, float, false, xf, yf, sbf, R)
    SM(256, 4, 4, 256, __nv_bfloat16, false, xb, yb, sbb, R) // = library today
    SM(256, 2, 8, 256, __nv_bfloat16, false, xb, yb, sbb, R)
    SM(128, 4, 8, 128, __nv_bfloat16, false, xb, yb, sbb, R)
    SM(128, 4, 8, 256, __nv_bfloat16, false, xb, yb, sbb, R / 2)
    SM(128, 4, 8, 128, __nv_bfloat16, true, xb, yb, sbb, R)
    SM(64, 8, 8, 128, __nv_bfloat16, false, xb, yb, sbb, R / 2)
    SM(64, 8, 8, 256, __nv_bfloat16, false, xb, yb, sbb, R / 4)
    SM(512, 1, 8, 512, __nv_bfloat16, false, xb, yb, sbb, R)
    SM(32, 16, 8, 256, __nv_bfloat16, false, xb, yb, sbb, R / 8)
    // sum
#define SUMV(T, LOADS, TH, MINB, NC, xx, grid_target, bytes)                                       \
    {                                                                                              \
        int64_t nv = n / vec16<T>::N, tile = TH * LOADS, tiles = (nv + tile - 1) / tile,           \
                pb = (tiles + (grid_target)-1) / (grid_target);                                    \
        int64_t chunk = pb * tile, blocks = (nv + chunk - 1) / chunk;                              \
        char nm[96];                                                                               \
        snprintf(nm, sizeof nm, "sum %s L%d T%d minb%d nc%d blocks %lld", #T, LOADS, TH, MINB,     \
                 (int)NC, (long long)blocks);                                                      \
        m = timeit(nm, bytes, [&] {                                                                \
            sum_k<T, LOADS, TH, MINB, NC>                                                          \
                <<<(unsigned)blocks, TH, 0, gs>>>(xx, n, chunk, part, ticket, out);                \
        });                                                                                        \
        PCT(m, bytes);                                                                             \
    }
    SUMV(float, 8, 256, 4, false, xf, 512, n * 4.0) // = library today
    SUMV(float, 8, 256, 4, true, xf, 512, n * 4.0)
    SUMV(float, 8, 256, 4, false, xf, sms * 4, n * 4.0)
    SUMV(float, 8, 256, 4, false, xf, sms * 2, n * 4.0)
    SUMV(float, 4, 256, 8, false, xf, sms * 8, n * 4.0)
    SUMV(float, 16, 256, 2, false, xf, sms * 2, n * 4.0)
    SUMV(float, 8, 512, 2, false, xf, sms * 2, n * 4.0)
    SUMV(float, 4, 1024, 1, false, xf, sms, n * 4.0)
    SUMV(float, 8, 256, 4, false, xf, 1024, n * 4.0)
    SUMV(float, 8, 256, 4, false, xf, 2048, n * 4.0)
    SUMV(__nv_bfloat16, 8, 256, 4, false, xb, 512, n * 2.0) // = library today
    SUMV(__nv_bfloat16, 8, 256, 4, false, xb, sms * 4, n * 2.0)
    SUMV(__nv_bfloat16, 4, 256, 8, false, xb, sms * 8, n * 2.0)
    SUMV(__nv_bfloat16, 8, 256, 4, false, xb, 1024, n * 2.0)
    SUMV(__nv_bfloat16, 4, 256, 8, false, xb, 2048, n * 2.0)
    SUMV(__nv_bfloat16, 8, 256, 4, true, xb, 512, n * 2.0)
    CK(cudaDeviceSynchronize());
    // check softmax correctness of one variant vs the library-like one
    sm_k<128, 4, 8, 128, __nv_bfloat16, false><<<R, 128, 0, gs>>>(xb, yb, R, C);
    CK(cudaDeviceSynchronize());
    std::vector<__nv_bfloat16> o(n);
    cudaMemcpy(o.data(), yb, n * 2, cudaMemcpyDeviceToHost);
    double s0 = 0;
    for (int c = 0; c < C; c++) s0 += __bfloat162float(o[c]);
    printf("row0 sum %.4f\n", s0);
    return 0;
}
