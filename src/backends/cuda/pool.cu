/*
 * pool.cu — 2-D max pooling on NCHW, forward and backward.
 *
 * x [N,C,H,W] -> y [N,C,P,Q]; output (p, q) covers rows p*sh - ph + r (0 <= r < kh) and
 * columns q*sw - pw + s (0 <= s < kw); padding is -inf. Within a window the elements are
 * scanned row-major and a later one wins only when strictly greater or NaN (the CPU
 * backend's and PyTorch's rule): the first maximum wins and a NaN propagates.
 *
 * Forward: one thread per output. 2x2 stride 2 without padding (the usual pooling) reads
 * its two rows as float2 when W is even.
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
        if (WRITE_Y) y[i] = best;
        else argmax[i] = (int)bi;
    }
}

/* 2x2 stride 2, no padding, W even: each output reads one float2 from each of two rows. */
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
    const nm_conv_geom &g = op->u.pool.g;
    const float *x = op->u.pool.x->data;
    float *y = op->u.pool.y->data;
    int64_t total = g.n * g.c * g.p * g.q;
    if (total == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 &&
        g.w % 2 == 0 && ((uintptr_t)x & 7) == 0) {
        maxpool_fwd_2x2<<<cuda_grid(dev, total), CUDA_THREADS, 0, s>>>(x, y, g.h, g.w, g.p, g.q, total);
        return cuda_launched("neat_maxpool2d", "maxpool_fwd_2x2");
    }
    maxpool_fwd<true><<<cuda_grid(dev, total), CUDA_THREADS, 0, s>>>(x, y, NULL, g, total);
    return cuda_launched("neat_maxpool2d", "maxpool_fwd");
}

neat_status cuda_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_maxpool2d_backward";
    const nm_conv_geom &g = op->u.pool_bwd.g;
    const float *x = op->u.pool_bwd.x->data, *dy = op->u.pool_bwd.dy->data;
    float *dx = op->u.pool_bwd.dx->data;
    int64_t nout = g.n * g.c * g.p * g.q, nin = g.n * g.c * g.h * g.w;
    if (nin == 0) return NEAT_OK;
    if (nout == 0) return cuda_fill_f32(dev, dx, nin, 0.0f, what);
    if (g.h * g.w > INT32_MAX)
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: a %lldx%lld plane is too large for the CUDA backend",
                        what, (long long)g.h, (long long)g.w);
    void *argmax;
    neat_status st = cuda_scratch(cb, 0, (size_t)nout * sizeof(int), &argmax);
    if (st) return st;
    cudaStream_t s = cuda_dev(dev)->stream;
    maxpool_fwd<false><<<cuda_grid(dev, nout), CUDA_THREADS, 0, s>>>(x, NULL, (int *)argmax, g, nout);
    st = cuda_launched(what, "maxpool_fwd");
    if (st) return st;
    maxpool_bwd_gather<<<cuda_grid(dev, nin), CUDA_THREADS, 0, s>>>(dy, (const int *)argmax, dx, g, nin);
    return cuda_launched(what, "maxpool_bwd_gather");
}

} /* extern "C" */
