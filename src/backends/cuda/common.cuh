/*
 * common.cuh — device-side helpers of the CUDA kernels: grid sizing, the launch check,
 * 16-byte access, warp and block reductions, and the activation math (the same formulas as
 * the CPU backend's elementwise.c, so the two agree to rounding), and the alignment every
 * kernel may assume.
 */
#ifndef NEATML_CUDA_COMMON_CUH
#define NEATML_CUDA_COMMON_CUH

#include "common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#define CUDA_THREADS 256

/* Blocks for `work` items of a grid-stride kernel: enough to fill the chip (16 blocks of 256
 * per multiprocessor is 2 full waves on Hopper), never more than the work needs. */
static inline unsigned cuda_grid(nm_device *dev, int64_t work, int threads = CUDA_THREADS) {
    int64_t blocks = (work + threads - 1) / threads;
    int64_t cap = (int64_t)cuda_dev(dev)->sms * 16;
    if (blocks > cap) blocks = cap;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

/* ---- programmatic dependent launch (Hopper and later) ---------------------------------
 * A kernel launched by cuda_launch may be scheduled while the kernel before it on the stream
 * still runs, if that one allows it: the launch latency of a small kernel (1-2 us, most of
 * its time in a replayed graph of small ops) then overlaps its predecessor's last blocks.
 * Such a kernel calls cuda_pdl_enter() first: it waits until every earlier kernel of the
 * stream has completed and its writes are visible (griddepcontrol.wait; nothing before it
 * touches memory), then allows its own successor to be scheduled (launch_dependents). So
 * each kernel still starts its work after its predecessor has ended, as without the
 * attribute. Only neatml's kernels take part: a cuBLASLt, cuDNN or NCCL kernel, a copy or
 * an event between two of them is an ordinary dependency. Captured into graphs and into a
 * guard's conditional body alike (guard.cu; test_conformance with NEATML_CUDA_GRAPHS=1 on
 * the H200). Off on a GPU before sm_90 and with NEATML_CUDA_PDL=0 (read when a device
 * opens). The kernels that take part: the elementwise map_kernel, the small GEMM, the 2x2
 * maxpools, the plain SGD and Adam updates, the sums of reduce.cu, conv_gemm.cu's and
 * conv_small.cu's. */
__device__ __forceinline__ void cuda_pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* kernel<<<grid, block, 0, d->stream>>>(args...), with the programmatic attribute where
 * allowed (above); the kernel must begin with cuda_pdl_enter(). */
template <class... Params, class... Args>
static inline void cuda_launch(nm_device *dev, void (*kernel)(Params...), unsigned grid,
                               unsigned block, Args... args) {
    cuda_device *d = cuda_dev(dev);
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(block);
    cfg.stream = d->stream;
    cfg.attrs = &attr;
    cfg.numAttrs = d->pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, args...); /* its error: cudaGetLastError, cuda_launched */
}

/* After every launch: the launch error (bad configuration, no kernel image for the GPU). */
static inline neat_status cuda_launched(const char *what, const char *kernel) {
    return cuda_check(cudaGetLastError(), what, kernel);
}

/* Alignment the kernels rely on, never checked at run time: every pointer a kernel or
 * cuBLASLt/cuDNN receives is the start of a block of the core's pool (a tensor's data, a view
 * of it, which shares its storage and pointer, src/core/tensor.c; or command-buffer scratch),
 * and each block is one cudaMalloc (cuda_mem_alloc in backend.c), which CUDA aligns to at
 * least 256 bytes. So a whole tensor can be read as float4, and a row of it too when its
 * length is a multiple of 4. A backend change that hands kernels an offset pointer (a view
 * at an offset, sub-allocated blocks) must bring the alignment checks back. */

/* ---- element types ---------------------------------------------------------------------
 * Half tensors are storage: kernels load an element as float, compute in float, and store
 * it rounded once (to nearest even: __float2bfloat16_rn, __float2half_rn, which match the
 * host conversions of src/core/dtype.h). Kernels are templates over the storage type T
 * (float, __nv_bfloat16, __half); CUDA_DTYPE_DISPATCH picks T from a neat_dtype. */
__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st(__half *p, float v) { *p = __float2half_rn(v); }

/* ---- packed access ---------------------------------------------------------------------
 * N elements of T that lie at a multiple of N * sizeof(T) bytes, loaded or stored as one
 * access of 4, 8, 16 or 32 bytes (two 16-byte accesses), then seen as floats: 4 floats or 8
 * halves per 16 bytes. The words are unpacked by hand (bf16 is the high half of a float, so
 * widening is a shift), which leaves float32 code the plain vector load it had. */
template <int WORDS> struct words_t { unsigned w[WORDS]; };
template <int WORDS> __device__ __forceinline__ words_t<WORDS> load_words(const void *p) {
    words_t<WORDS> r;
    if constexpr (WORDS == 1) {
        r.w[0] = *reinterpret_cast<const unsigned *>(p);
    } else if constexpr (WORDS == 2) {
        uint2 v = *reinterpret_cast<const uint2 *>(p);
        r.w[0] = v.x, r.w[1] = v.y;
    } else {
#pragma unroll
        for (int k = 0; k < WORDS / 4; k++) {
            uint4 v = reinterpret_cast<const uint4 *>(p)[k];
            r.w[4 * k] = v.x, r.w[4 * k + 1] = v.y, r.w[4 * k + 2] = v.z, r.w[4 * k + 3] = v.w;
        }
    }
    return r;
}
template <int WORDS> __device__ __forceinline__ void store_words(void *p, const words_t<WORDS> &r) {
    if constexpr (WORDS == 1) {
        *reinterpret_cast<unsigned *>(p) = r.w[0];
    } else if constexpr (WORDS == 2) {
        *reinterpret_cast<uint2 *>(p) = make_uint2(r.w[0], r.w[1]);
    } else {
#pragma unroll
        for (int k = 0; k < WORDS / 4; k++)
            reinterpret_cast<uint4 *>(p)[k] =
                make_uint4(r.w[4 * k], r.w[4 * k + 1], r.w[4 * k + 2], r.w[4 * k + 3]);
    }
}

/* Element i of packed words, as float; a float's bits rounded once to T. */
template <class T> __device__ __forceinline__ float unpack(const unsigned *w, int i);
template <> __device__ __forceinline__ float unpack<float>(const unsigned *w, int i) {
    return __uint_as_float(w[i]);
}
template <> __device__ __forceinline__ float unpack<__nv_bfloat16>(const unsigned *w, int i) {
    unsigned v = w[i >> 1];
    return __uint_as_float(i & 1 ? v & 0xffff0000u : v << 16);
}
template <> __device__ __forceinline__ float unpack<__half>(const unsigned *w, int i) {
    unsigned v = w[i >> 1];
    return __half2float(__ushort_as_half((unsigned short)(i & 1 ? v >> 16 : v & 0xffffu)));
}
template <class T> __device__ __forceinline__ unsigned bits_rn(float v);
template <> __device__ __forceinline__ unsigned bits_rn<float>(float v) {
    return __float_as_uint(v);
}
template <> __device__ __forceinline__ unsigned bits_rn<__nv_bfloat16>(float v) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
template <> __device__ __forceinline__ unsigned bits_rn<__half>(float v) {
    return __half_as_ushort(__float2half_rn(v));
}

/* v[0..N) = p[0..N) as float; p aligned to N * sizeof(T). */
template <class T, int N> __device__ __forceinline__ void load_n(const T *p, float (&v)[N]) {
    enum { WORDS = N * (int)sizeof(T) / 4 };
    words_t<WORDS> r = load_words<WORDS>(p);
#pragma unroll
    for (int i = 0; i < N; i++) v[i] = unpack<T>(r.w, i);
}
/* p[0..N) = v[0..N), each rounded once to T; p aligned to N * sizeof(T). */
template <class T, int N> __device__ __forceinline__ void store_n(T *p, const float (&v)[N]) {
    enum { WORDS = N * (int)sizeof(T) / 4 };
    words_t<WORDS> r;
#pragma unroll
    for (int k = 0; k < WORDS; k++) {
        if constexpr (sizeof(T) == 4)
            r.w[k] = bits_rn<T>(v[k]);
        else
            r.w[k] = bits_rn<T>(v[2 * k]) | bits_rn<T>(v[2 * k + 1]) << 16;
    }
    store_words<WORDS>(p, r);
}

/* Elements of T in one 16-byte access: 4 floats, 8 halves. */
template <class T> struct vec16 {
    enum { N = 16 / (int)sizeof(T) };
};

/* CALL(T) with T the storage type of dtype (a neat_dtype already checked by the core). */
#define CUDA_DTYPE_DISPATCH(dtype, CALL)                                                           \
    switch (dtype) {                                                                               \
    case NEAT_BF16: CALL(__nv_bfloat16); break;                                                    \
    case NEAT_F16: CALL(__half); break;                                                            \
    default: CALL(float); break;                                                                   \
    }

/* ---- the error record (common.h) --------------------------------------------------------
 * Set once, by the first kernel that finds bad input; the kernels of ops that can fail read
 * it first and do nothing once it is set. */
__device__ __forceinline__ bool cuda_failed(const int *err) {
    return *(volatile const int *)(err + CUDA_ERR_FLAG) != 0;
}
__device__ __forceinline__ void cuda_fail(int *err, int kind, int64_t row, float value, int op) {
    if (atomicCAS(err + CUDA_ERR_FLAG, 0, 1) != 0) return;
    err[CUDA_ERR_ROW] = (int)(row < INT32_MAX ? row : INT32_MAX);
    err[CUDA_ERR_VALUE] = __float_as_int(value);
    err[CUDA_ERR_OP] = op;
    err[CUDA_ERR_KIND] = kind;
}

/* ---- reductions ------------------------------------------------------------------------
 * Fixed trees (shfl_down, then warp 0 over the warps' results): the same bits every run. */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v; /* valid in lane 0 */
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x (a multiple of 32, at most 1024) threads; the result is
 * returned to every thread. shm holds 32 floats. */
__device__ __forceinline__ float block_sum(float v, float *shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* shm may still be read from a previous call */
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? shm[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) shm[0] = v;
    }
    __syncthreads();
    return shm[0];
}

/* ---- activations ------------------------------------------------------------------------ */

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* y = act(x). relu keeps NaN; gelu 0.5x(1+tanh u) = x sigmoid(2u) without cancellation. */
template <int ACT> __device__ __forceinline__ float act_fwd(float x) {
    if (ACT == NEAT_ACT_RELU) return x < 0.0f ? 0.0f : x;
    if (ACT == NEAT_ACT_SIGMOID) return sigmoidf_(x);
    if (ACT == NEAT_ACT_TANH) return tanhf(x);
    if (ACT == NEAT_ACT_GELU) return x * sigmoidf_(2.0f * GELU_K0 * (x + GELU_K1 * x * x * x));
    return x;
}

/* dy * act'(.): relu, sigmoid, tanh from the output y; gelu from the input x:
 * d/dx x s(2u) = s + x s (1 - s) 2u', u' = sqrt(2/pi)(1 + 3 * 0.044715 x^2). */
template <int ACT> __device__ __forceinline__ float act_bwd(float x, float y, float dy) {
    if (ACT == NEAT_ACT_RELU) return y > 0.0f ? dy : 0.0f;
    if (ACT == NEAT_ACT_SIGMOID) return dy * y * (1.0f - y);
    if (ACT == NEAT_ACT_TANH) return dy * (1.0f - y * y);
    if (ACT == NEAT_ACT_GELU) {
        /* beyond |x| = 16 the derivative is 1 or 0 in float32: the clamp keeps x^2 and x^3
         * finite (inf * 0 = NaN otherwise for finite |x| > 1.8e19); x - x is NaN at +-inf */
        float v = fminf(fmaxf(x, -16.0f), 16.0f), inf_nan = x - x;
        float s = sigmoidf_(2.0f * GELU_K0 * (v + GELU_K1 * v * v * v));
        float du = 2.0f * GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
        return dy * (s + v * s * (1.0f - s) * du + inf_nan);
    }
    return dy;
}

/* Call f.template operator()<ACT>() for a run-time activation. */
#define CUDA_ACT_DISPATCH(act, CALL)                                                               \
    switch (act) {                                                                                 \
    case NEAT_ACT_RELU: CALL(NEAT_ACT_RELU); break;                                                \
    case NEAT_ACT_SIGMOID: CALL(NEAT_ACT_SIGMOID); break;                                          \
    case NEAT_ACT_TANH: CALL(NEAT_ACT_TANH); break;                                                \
    case NEAT_ACT_GELU: CALL(NEAT_ACT_GELU); break;                                                \
    default: CALL(NEAT_ACT_NONE); break;                                                           \
    }

#endif
