/*
 * pool.cu — 2-D max pooling on NCHW and NHWC, forward and backward, on float, bf16 and f16 (T: the
 * comparisons on the exact float values of the elements, so a half output is the float32
 * result rounded once, i.e. unchanged).
 *
 * x [N,C,H,W] -> y [N,C,P,Q]; output (p, q) covers rows p*sh - ph + r (0 <= r < kh) and
 * columns q*sw - pw + s (0 <= s < kw); padding is -inf. Within a window the elements are
 * scanned row-major and a later one wins only when strictly greater or NaN (the CPU
 * backend's and PyTorch's rule): the first maximum wins and a NaN propagates.
 *
 * Forward: one thread per output. 2x2 stride 2 without padding (the usual pooling) has its
 * own kernel: V/2 outputs per thread from V consecutive elements of each of the two rows,
 * V = 8 when W % 8 == 0 (two 16-byte loads per row of float, one of a half type), else 4,
 * with 32-bit index arithmetic when the tensor allows it (64-bit division is a long
 * instruction sequence, and it was most of the kernel's time); else one output from two
 * pairs when W is even. Backward, deterministic without atomics: pass 1 stores each
 * window's argmax (offset in the H*W plane, int32) in scratch; pass 2 gives each input
 * element the sum of dy over the windows that contain it and chose it, windows in row-major
 * order (the CPU's order). 2x2 stride 2 without padding on even H and W (every input in
 * exactly one window) is one pass instead: a thread finds the argmax of V/2 windows as the
 * forward does and writes their V x 2 inputs, dy at the argmax and 0 elsewhere, the same
 * values as the two passes. Measured with ncu on the H200 (LeNet's pools at batch 128,
 * float): the two passes took 16.5 + 59.1 us (32x28x28 planes) and 9.7 + 31.5 us (64x14x14).
 *
 * NHWC (g.nhwc): the general kernels with channel-fastest indexing (consecutive threads take
 * consecutive channels of one position: coalesced); argmax still holds h * W + w. 2x2
 * stride 2 without padding has its own kernel (maxpool_2x2_nhwc: 32-bit indices, the forward
 * and, on even H and W, the backward in one pass, as in NCHW). */
#include "common.cuh"

__device__ __forceinline__ float pool_pick(float m, float v) { return (v > m || v != v) ? v : m; }

/* Output (or dy) element i: its row p, column q and where its (image, channel) plane starts
 * in x (*xoff) and in y (*yoff); consecutive elements of a plane are `es` apart (NCHW: 1,
 * NHWC: C). In NHWC consecutive i are consecutive channels, so the loads coalesce. */
template <bool NHWC>
__device__ __forceinline__ void pool_out_index(const nm_conv_geom &g, int64_t i, int64_t *p,
                                               int64_t *q, int64_t *xoff, int64_t *yoff) {
    if (NHWC) {
        int64_t c = i % g.c, r = i / g.c, n = r / (g.p * g.q);
        *q = r % g.q, *p = r / g.q % g.p;
        *xoff = n * g.h * g.w * g.c + c, *yoff = n * g.p * g.q * g.c + c;
    } else {
        int64_t plane = i / (g.p * g.q);
        *q = i % g.q, *p = i / g.q % g.p;
        *xoff = plane * g.h * g.w, *yoff = plane * g.p * g.q;
    }
}

template <bool WRITE_Y, bool NHWC, class T>
__global__ void maxpool_fwd(const T *__restrict__ x, T *__restrict__ y, int *__restrict__ argmax,
                            nm_conv_geom g, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x, es = NHWC ? g.c : 1;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t p, q, xoff, yoff;
        pool_out_index<NHWC>(g, i, &p, &q, &xoff, &yoff);
        const T *xp = x + xoff;
        int64_t h0 = p * g.sh - g.ph, w0 = q * g.sw - g.pw;
        int64_t hs = max(h0, (int64_t)0), he = min(h0 + g.kh, g.h);
        int64_t ws = max(w0, (int64_t)0), we = min(w0 + g.kw, g.w);
        float best = -INFINITY;
        int64_t bi = hs * g.w + ws;
        for (int64_t h = hs; h < he; h++)
            for (int64_t w = ws; w < we; w++) {
                float v = ld(xp + (h * g.w + w) * es);
                if (v > best || v != v) {
                    best = v;
                    bi = h * g.w + w;
                }
            }
        if (WRITE_Y)
            st(y + i, best);
        else
            argmax[i] = (int)bi;
    }
}

/* 2x2 stride 2, no padding, W % V == 0: thread i makes outputs (V/2) i .. (V/2) i + V/2 - 1,
 * i.e. V/2 consecutive columns of output row rp (rp = plane * P + r), from V elements of
 * input rows 2r and 2r + 1. qv = Q / (V/2) groups per output row. */
template <class T, class I, int V>
__global__ void maxpool_fwd_2x2(const T *__restrict__ x, T *__restrict__ y, I h, I w, I p, I qv,
                                I total) {
    cuda_pdl_enter();
    I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        I j = i % qv, rp = i / qv, plane = rp / p, r = rp - plane * p;
        const T *x0 = x + (plane * h + 2 * r) * w + V * j;
        float a[V], b[V], o[V / 2];
        load_n<T, V>(x0, a);
        load_n<T, V>(x0 + w, b);
#pragma unroll
        for (int k = 0; k < V / 2; k++)
            o[k] = pool_pick(pool_pick(pool_pick(a[2 * k], a[2 * k + 1]), b[2 * k]), b[2 * k + 1]);
        if constexpr (V == 2)
            st(y + i, o[0]); /* one 2-byte output of a half type is no word */
        else
            store_n<T, V / 2>(y + (int64_t)i * (V / 2), o);
    }
}

/* 64-bit indices only when the input does not fit 32 bits. */
template <class T, int V>
static neat_status maxpool_2x2_launch(nm_device *dev, const T *x, T *y, const nm_conv_geom &g) {
    int64_t groups = g.n * g.c * g.p * g.q / (V / 2), nin = g.n * g.c * g.h * g.w;
    unsigned grid = cuda_grid(dev, groups);
    if (nin < INT32_MAX - 4 * (int64_t)g.w)
        cuda_launch(dev, maxpool_fwd_2x2<T, int, V>, grid, CUDA_THREADS, x, y, (int)g.h, (int)g.w,
                    (int)g.p, (int)(g.q / (V / 2)), (int)groups);
    else
        cuda_launch(dev, maxpool_fwd_2x2<T, int64_t, V>, grid, CUDA_THREADS, x, y, g.h, g.w, g.p,
                    g.q / (V / 2), groups);
    return cuda_launched("neat_maxpool2d", "maxpool_fwd_2x2");
}

/* 2x2 stride 2, no padding, H and W even, W % V == 0: thread i takes windows (V/2) i ..
 * (V/2) i + V/2 - 1 of output row rp, i.e. V columns of input rows 2r and 2r + 1 (the
 * forward's geometry). The argmax scan is the forward's: row-major, a later element wins
 * only when strictly greater or NaN, so the first maximum (or the last NaN) gets dy. */
template <class T, class I, int V>
__global__ void maxpool_bwd_2x2(const T *__restrict__ x, const T *__restrict__ dy,
                                T *__restrict__ dx, I h, I w, I p, I qv, I total) {
    cuda_pdl_enter();
    I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        I j = i % qv, rp = i / qv, plane = rp / p, r = rp - plane * p;
        int64_t off = ((int64_t)plane * h + 2 * r) * w + V * j;
        float a[V], b[V], g[V / 2], da[V], db[V];
        load_n<T, V>(x + off, a);
        load_n<T, V>(x + off + w, b);
        if constexpr (V == 2)
            g[0] = ld(dy + i);
        else
            load_n<T, V / 2>(dy + (int64_t)i * (V / 2), g);
#pragma unroll
        for (int k = 0; k < V / 2; k++) {
            const float c[4] = {a[2 * k], a[2 * k + 1], b[2 * k], b[2 * k + 1]};
            float m = c[0];
            int at = 0;
#pragma unroll
            for (int e = 1; e < 4; e++)
                if (c[e] > m || c[e] != c[e]) m = c[e], at = e;
            da[2 * k] = at == 0 ? g[k] : 0.0f;
            da[2 * k + 1] = at == 1 ? g[k] : 0.0f;
            db[2 * k] = at == 2 ? g[k] : 0.0f;
            db[2 * k + 1] = at == 3 ? g[k] : 0.0f;
        }
        store_n<T, V>(dx + off, da);
        store_n<T, V>(dx + off + w, db);
    }
}

template <class T, int V>
static neat_status maxpool_bwd_2x2_launch(nm_device *dev, const T *x, const T *dy, T *dx,
                                          const nm_conv_geom &g) {
    int64_t groups = g.n * g.c * g.p * g.q / (V / 2), nin = g.n * g.c * g.h * g.w;
    unsigned grid = cuda_grid(dev, groups);
    if (nin < INT32_MAX - 4 * (int64_t)g.w)
        cuda_launch(dev, maxpool_bwd_2x2<T, int, V>, grid, CUDA_THREADS, x, dy, dx, (int)g.h,
                    (int)g.w, (int)g.p, (int)(g.q / (V / 2)), (int)groups);
    else
        cuda_launch(dev, maxpool_bwd_2x2<T, int64_t, V>, grid, CUDA_THREADS, x, dy, dx, g.h, g.w,
                    g.p, g.q / (V / 2), groups);
    return cuda_launched("neat_maxpool2d_backward", "maxpool_bwd_2x2");
}

/* NHWC, 2x2 stride 2, no padding: thread i takes the window of output element i ([N,P,Q,C],
 * channel fastest: a warp's loads and stores are 32 adjacent channels), scanned as the other
 * kernels do. BWD 0: y[i] = its maximum (any H, W: the windows start at even rows and
 * columns). BWD 1 (H and W even, every input in one window): the four dx elements, dy[i] at
 * the first maximum and 0 elsewhere. I: 32-bit index arithmetic when the input allows. */
template <int BWD, class T, class I>
__global__ void maxpool_2x2_nhwc(const T *__restrict__ x, const T *__restrict__ dy,
                                 T *__restrict__ out, I c, I w, I q, I p, I h, I total) {
    cuda_pdl_enter();
    I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        I ch = i % c, r = i / c, oq = r % q, np = r / q, n = np / p, op = np - n * p;
        I o0 = ((n * h + 2 * op) * w + 2 * oq) * c + ch, o1 = o0 + w * c; /* rows 2p, 2p + 1 */
        const float v[4] = {ld(x + o0), ld(x + o0 + c), ld(x + o1), ld(x + o1 + c)};
        float m = v[0];
        int at = 0;
#pragma unroll
        for (int e = 1; e < 4; e++)
            if (v[e] > m || v[e] != v[e]) m = v[e], at = e;
        if (!BWD) {
            st(out + i, m);
            continue;
        }
        float g = ld(dy + i);
        st(out + o0, at == 0 ? g : 0.0f);
        st(out + o0 + c, at == 1 ? g : 0.0f);
        st(out + o1, at == 2 ? g : 0.0f);
        st(out + o1 + c, at == 3 ? g : 0.0f);
    }
}

template <int BWD, class T>
static neat_status maxpool_2x2_nhwc_launch(nm_device *dev, const T *x, const T *dy, T *out,
                                           const nm_conv_geom &g, const char *what) {
    int64_t total = g.n * g.p * g.q * g.c, nin = g.n * g.h * g.w * g.c;
    unsigned grid = cuda_grid(dev, total);
    if (nin < INT32_MAX - 4 * g.w * g.c)
        cuda_launch(dev, maxpool_2x2_nhwc<BWD, T, int>, grid, CUDA_THREADS, x, dy, out, (int)g.c,
                    (int)g.w, (int)g.q, (int)g.p, (int)g.h, (int)total);
    else
        cuda_launch(dev, maxpool_2x2_nhwc<BWD, T, int64_t>, grid, CUDA_THREADS, x, dy, out, g.c,
                    g.w, g.q, g.p, g.h, total);
    return cuda_launched(what, "maxpool_2x2_nhwc");
}

template <bool NHWC, class T>
__global__ void maxpool_bwd_gather(const T *__restrict__ dy, const int *__restrict__ argmax,
                                   T *__restrict__ dx, nm_conv_geom g, int64_t total) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x, es = NHWC ? g.c : 1;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t w, h, yoff; /* dx element i is (h, w) of the plane whose dy starts at yoff */
        if (NHWC) {
            int64_t c = i % g.c, r = i / g.c;
            w = r % g.w, h = r / g.w % g.h, yoff = r / (g.w * g.h) * g.p * g.q * g.c + c;
        } else {
            w = i % g.w, h = (i / g.w) % g.h, yoff = i / (g.h * g.w) * g.p * g.q;
        }
        /* windows p with p*sh - ph <= h < p*sh - ph + kh, alike for q */
        int64_t p0 = h + g.ph < g.kh ? 0 : (h + g.ph - g.kh) / g.sh + 1;
        int64_t p1 = min((h + g.ph) / g.sh + 1, g.p);
        int64_t q0 = w + g.pw < g.kw ? 0 : (w + g.pw - g.kw) / g.sw + 1;
        int64_t q1 = min((w + g.pw) / g.sw + 1, g.q);
        int target = (int)(h * g.w + w);
        const T *dyp = dy + yoff;
        const int *ap = argmax + yoff;
        float acc = 0.0f;
        for (int64_t p = p0; p < p1; p++)
            for (int64_t q = q0; q < q1; q++)
                if (ap[(p * g.q + q) * es] == target) acc += ld(dyp + (p * g.q + q) * es);
        st(dx + i, acc);
    }
}

/* 2x2 windows, stride 2, no padding: the case of the kernels of their own (either layout). */
static bool pool_2x2(const nm_conv_geom &g) {
    return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

/* The backward's one-pass kernels: 2x2 windows, stride 2, no padding, even H and W (every
 * input in exactly one window). The other cases take the general two passes, whose argmax
 * is an int offset in the H*W plane. */
static bool pool_bwd_one_pass(const nm_conv_geom &g) {
    return pool_2x2(g) && g.h % 2 == 0 && g.w % 2 == 0;
}

template <class T>
static neat_status maxpool2d(nm_device *dev, const nm_conv_geom &g, const T *x, T *y) {
    int64_t total = g.n * g.c * g.p * g.q;
    if (total == 0) return NEAT_OK;
    bool is2x2 = !g.nhwc && pool_2x2(g);
    if (g.nhwc && pool_2x2(g))
        return maxpool_2x2_nhwc_launch<0, T>(dev, x, (const T *)NULL, y, g, "neat_maxpool2d");
    if (g.nhwc) {
        maxpool_fwd<true, true, T>
            <<<cuda_grid(dev, total), CUDA_THREADS, 0, cuda_dev(dev)->stream>>>(x, y, NULL, g,
                                                                                total);
        return cuda_launched("neat_maxpool2d", "maxpool_fwd");
    }
    /* x and y start at pool blocks (common.cuh), and W % V == 0 keeps every row aligned */
    if (is2x2 && g.w % 8 == 0) return maxpool_2x2_launch<T, 8>(dev, x, y, g);
    if (is2x2 && g.w % 4 == 0) return maxpool_2x2_launch<T, 4>(dev, x, y, g);
    if (is2x2 && g.w % 2 == 0) return maxpool_2x2_launch<T, 2>(dev, x, y, g);
    maxpool_fwd<true, false, T>
        <<<cuda_grid(dev, total), CUDA_THREADS, 0, cuda_dev(dev)->stream>>>(x, y, NULL, g, total);
    return cuda_launched("neat_maxpool2d", "maxpool_fwd");
}

template <class T>
static neat_status maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_conv_geom &g,
                                      const T *x, const T *dy, T *dx) {
    static const char what[] = "neat_maxpool2d_backward";
    int64_t nout = g.n * g.c * g.p * g.q, nin = g.n * g.c * g.h * g.w;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (nin == 0) return NEAT_OK;
    if (nout == 0) /* every bit zero is +0 in each type */
        return cuda_check(cudaMemsetAsync(dx, 0, (size_t)nin * sizeof(T), s), what,
                          "cudaMemsetAsync");
    bool even_2x2 = pool_bwd_one_pass(g), is2x2 = !g.nhwc && even_2x2;
    /* x, dy and dx start at pool blocks (common.cuh); W % V == 0 keeps the rows of x and dx
     * aligned to V elements and those of dy (Q = W / 2) to V / 2 */
    if (g.nhwc && even_2x2) return maxpool_2x2_nhwc_launch<1, T>(dev, x, dy, dx, g, what);
    if (is2x2 && g.w % 8 == 0) return maxpool_bwd_2x2_launch<T, 8>(dev, x, dy, dx, g);
    if (is2x2 && g.w % 4 == 0) return maxpool_bwd_2x2_launch<T, 4>(dev, x, dy, dx, g);
    if (is2x2) return maxpool_bwd_2x2_launch<T, 2>(dev, x, dy, dx, g);
    /* Refused at record time (cuda_maxpool2d_backward_check); kept as the backstop. */
    if (g.h * g.w > INT32_MAX)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: a %lldx%lld plane is too large for the CUDA backend", what,
                        (long long)g.h, (long long)g.w);
    void *argmax;
    neat_status st = cuda_scratch(cb, 0, (size_t)nout * sizeof(int), &argmax);
    if (st) return st;
    if (g.nhwc)
        maxpool_fwd<false, true, T>
            <<<cuda_grid(dev, nout), CUDA_THREADS, 0, s>>>(x, NULL, (int *)argmax, g, nout);
    else
        maxpool_fwd<false, false, T>
            <<<cuda_grid(dev, nout), CUDA_THREADS, 0, s>>>(x, NULL, (int *)argmax, g, nout);
    st = cuda_launched(what, "maxpool_fwd");
    if (st) return st;
    if (g.nhwc)
        maxpool_bwd_gather<true, T>
            <<<cuda_grid(dev, nin), CUDA_THREADS, 0, s>>>(dy, (const int *)argmax, dx, g, nin);
    else
        maxpool_bwd_gather<false, T>
            <<<cuda_grid(dev, nin), CUDA_THREADS, 0, s>>>(dy, (const int *)argmax, dx, g, nin);
    return cuda_launched(what, "maxpool_bwd_gather");
}

extern "C" {

/* Record time: maxpool2d_backward's turns before the general path (nothing for an empty dx,
 * a memset for an empty dy, the one-pass kernels), then its limit. The element counts are
 * the tensors' (the core's, never overflowing); H*W cannot overflow once dx has elements. */
neat_status cuda_maxpool2d_backward_check(const nm_op *op) {
    const auto &u = op->u.maxpool2d_backward;
    const nm_conv_geom &g = u.g;
    if (u.dx->numel == 0 || u.dy->numel == 0 || pool_bwd_one_pass(g) || g.h * g.w <= INT32_MAX)
        return NEAT_OK;
    return nm_error(NEAT_ERR_UNSUPPORTED,
                    "%s: a %lldx%lld plane is too large for the CUDA backend (at most 2^31-1 "
                    "elements, but for 2x2 windows of stride 2 without padding on even H and W)",
                    op->fn, (long long)g.h, (long long)g.w);
}

neat_status cuda_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.maxpool2d;
#define CALL(T)                                                                                    \
    return maxpool2d<T>(dev, u.g, (const T *)(const void *)u.x->data, (T *)(void *)u.y->data)
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

neat_status cuda_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.maxpool2d_backward;
#define CALL(T)                                                                                    \
    return maxpool2d_backward<T>(dev, cb, u.g, (const T *)(const void *)u.x->data,                 \
                                 (const T *)(const void *)u.dy->data, (T *)(void *)u.dx->data)
    CUDA_DTYPE_DISPATCH(u.x->dtype, CALL)
#undef CALL
    return NEAT_ERR_INTERNAL; /* not reached */
}

} /* extern "C" */
