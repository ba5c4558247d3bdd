/*
 * pool.cu — 2-D max pooling on NCHW, forward and backward.
 *
 * x [N,C,H,W] -> y [N,C,P,Q]; output (p, q) covers rows p*sh - ph + r (0 <= r < kh) and
 * columns q*sw - pw + s (0 <= s < kw); padding is -inf. Within a window the elements are
 * scanned row-major and a later one wins only when strictly greater or NaN (the CPU
 * backend's and PyTorch's rule): the first maximum wins and a NaN propagates.
 *
 * Forward: one thread per output. 2x2 stride 2 without padding (the usual pooling) has its
 * own kernels: two outputs per thread from one float4 of each row when W % 4 == 0, with
 * 32-bit index arithmetic when the tensor allows it (64-bit division is a long instruction
 * sequence, and it was most of the kernel's time); else one output from two float2.
 * Backward, deterministic without atomics: pass 1 stores each window's argmax (offset in
 * the H*W plane, int32) in scratch; pass 2 gives each input element the sum of dy over the
 * windows that contain it and chose it, windows in row-major order (the CPU's order).
 */
#include "common.cuh"

template <bool WRITE_Y>
__global__ void maxpool_fwd(const float *__restrict__ x, float *__restrict__ y,
                            int *__restrict__ argmax, nm_conv_geom g, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t q = i % g.q, p = (i / g.q) % g.p, plane = i / (g.p * g.q);
        const float *xp = x + plane * g.h * g.w;
        int64_t h0 = p * g.sh - g.ph, w0 = q * g.sw - g.pw;
        int64_t hs = max(h0, (int64_t)0), he = min(h0 + g.kh, g.h);
        int64_t ws = max(w0, (int64_t)0), we = min(w0 + g.kw, g.w);
        float best = -INFINITY;
        int64_t bi = hs * g.w + ws;
        for (int64_t h = hs; h < he; h++)
            for (int64_t w = ws; w < we; w++) {
                float v = xp[h * g.w + w];
                if (v > best || v != v) {
                    best = v;
                    bi = h * g.w + w;
                }
            }
        if (WRITE_Y)
            y[i] = best;
        else
            argmax[i] = (int)bi;
    }
}

/* 2x2 stride 2, no padding, W even: each output reads one float2 from each of two rows. */
/* 2x2 stride 2, no padding, W % 4 == 0, x and y 16- and 8-byte aligned: thread i makes
 * outputs 2i and 2i+1, i.e. columns 2j, 2j+1 of output row rp (rp = plane * P + r). */
__device__ __forceinline__ float pool_pick(float m, float v) { return (v > m || v != v) ? v : m; }

template <typename I>
__global__ void maxpool_fwd_2x2_v4(const float *__restrict__ x, float *__restrict__ y, I h, I w,
                                   I p, I q2, I total) {
    I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        I j = i % q2, rp = i / q2, plane = rp / p, r = rp - plane * p;
        const float *x0 = x + (plane * h + 2 * r) * w + 4 * j;
        float4 a = __ldg(reinterpret_cast<const float4 *>(x0));
        float4 b = __ldg(reinterpret_cast<const float4 *>(x0 + w));
        float2 o;
        o.x = pool_pick(pool_pick(pool_pick(a.x, a.y), b.x), b.y);
        o.y = pool_pick(pool_pick(pool_pick(a.z, a.w), b.z), b.w);
        reinterpret_cast<float2 *>(y)[i] = o;
    }
}

__global__ void maxpool_fwd_2x2(const float *__restrict__ x, float *__restrict__ y, int64_t h,
                                int64_t w, int64_t p, int64_t q, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t j = i % q, r = (i / q) % p, plane = i / (p * q);
        const float *x0 = x + plane * h * w + 2 * r * w + 2 * j;
        float2 a = *reinterpret_cast<const float2 *>(x0);
        float2 b = *reinterpret_cast<const float2 *>(x0 + w);
        float m = a.x;
        if (a.y > m || a.y != a.y) m = a.y;
        if (b.x > m || b.x != b.x) m = b.x;
        if (b.y > m || b.y != b.y) m = b.y;
        y[i] = m;
    }
}

__global__ void maxpool_bwd_gather(const float *__restrict__ dy, const int *__restrict__ argmax,
                                   float *__restrict__ dx, nm_conv_geom g, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t w = i % g.w, h = (i / g.w) % g.h, plane = i / (g.h * g.w);
        /* windows p with p*sh - ph <= h < p*sh - ph + kh, alike for q */
        int64_t p0 = h + g.ph < g.kh ? 0 : (h + g.ph - g.kh) / g.sh + 1;
        int64_t p1 = min((h + g.ph) / g.sh + 1, g.p);
        int64_t q0 = w + g.pw < g.kw ? 0 : (w + g.pw - g.kw) / g.sw + 1;
        int64_t q1 = min((w + g.pw) / g.sw + 1, g.q);
        int target = (int)(h * g.w + w);
        const float *dyp = dy + plane * g.p * g.q;
        const int *ap = argmax + plane * g.p * g.q;
        float acc = 0.0f;
        for (int64_t p = p0; p < p1; p++)
            for (int64_t q = q0; q < q1; q++)
                if (ap[p * g.q + q] == target) acc += dyp[p * g.q + q];
        dx[i] = acc;
    }
}

extern "C" {

neat_status cuda_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv_geom &g = op->u.maxpool2d.g;
    const float *x = op->u.maxpool2d.x->data;
    float *y = op->u.maxpool2d.y->data;
    int64_t total = g.n * g.c * g.p * g.q;
    if (total == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    bool is2x2 = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
    if (is2x2 && g.w % 4 == 0) { /* x and y start at pool blocks: common.cuh */
        int64_t pairs = total / 2, nin = g.n * g.c * g.h * g.w;
        unsigned grid = cuda_grid(dev, pairs);
        if (nin < INT32_MAX - 4 * (int64_t)g.w)
            maxpool_fwd_2x2_v4<int><<<grid, CUDA_THREADS, 0, s>>>(
                x, y, (int)g.h, (int)g.w, (int)g.p, (int)(g.q / 2), (int)pairs);
        else
            maxpool_fwd_2x2_v4<int64_t>
                <<<grid, CUDA_THREADS, 0, s>>>(x, y, g.h, g.w, g.p, g.q / 2, pairs);
        return cuda_launched("neat_maxpool2d", "maxpool_fwd_2x2_v4");
    }
    if (is2x2 && g.w % 2 == 0) {
        maxpool_fwd_2x2<<<cuda_grid(dev, total), CUDA_THREADS, 0, s>>>(x, y, g.h, g.w, g.p, g.q,
                                                                       total);
        return cuda_launched("neat_maxpool2d", "maxpool_fwd_2x2");
    }
    maxpool_fwd<true><<<cuda_grid(dev, total), CUDA_THREADS, 0, s>>>(x, y, NULL, g, total);
    return cuda_launched("neat_maxpool2d", "maxpool_fwd");
}

neat_status cuda_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_maxpool2d_backward";
    const nm_conv_geom &g = op->u.maxpool2d_backward.g;
    const float *x = op->u.maxpool2d_backward.x->data, *dy = op->u.maxpool2d_backward.dy->data;
    float *dx = op->u.maxpool2d_backward.dx->data;
    int64_t nout = g.n * g.c * g.p * g.q, nin = g.n * g.c * g.h * g.w;
    if (nin == 0) return NEAT_OK;
    if (nout == 0) return cuda_fill_f32(dev, dx, nin, 0.0f, what);
    if (g.h * g.w > INT32_MAX)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: a %lldx%lld plane is too large for the CUDA backend", what,
                        (long long)g.h, (long long)g.w);
    void *argmax;
    neat_status st = cuda_scratch(cb, 0, (size_t)nout * sizeof(int), &argmax);
    if (st) return st;
    cudaStream_t s = cuda_dev(dev)->stream;
    maxpool_fwd<false>
        <<<cuda_grid(dev, nout), CUDA_THREADS, 0, s>>>(x, NULL, (int *)argmax, g, nout);
    st = cuda_launched(what, "maxpool_fwd");
    if (st) return st;
    maxpool_bwd_gather<<<cuda_grid(dev, nin), CUDA_THREADS, 0, s>>>(dy, (const int *)argmax, dx, g,
                                                                    nin);
    return cuda_launched(what, "maxpool_bwd_gather");
}

} /* extern "C" */
