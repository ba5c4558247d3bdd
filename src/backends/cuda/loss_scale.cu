/*
 * loss_scale.cu — dynamic loss scaling: the scaled loss gradient, the check for non-finite
 * gradients over a list of tensors, and the scale's update.
 *
 * The scaler is a float32 device tensor [scale, found_inf, good steps], read and written
 * only by these kernels (and the mixed optimizers, optim.cu), never by the host: a step
 * recorded once replays as a CUDA graph with the scale changing on the device. None of
 * these ops fails at run time.
 */
#include "common.cuh"

/* y = x * scaler[0], in x's storage type (float math, one rounding); y may be x. */
template <typename T>
__global__ void loss_scale_kernel(const float *__restrict__ scaler, const T *x, T *y, int64_t n) {
    float s = scaler[0];
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride)
        st(y + i, ld(x + i) * s);
}

/* found = 1 when an element of x is NaN or infinite: a plain store of the same value from
 * every thread that finds one, after loss_scale_check zeroed it. */
template <typename T>
__global__ void nonfinite_kernel(const T *__restrict__ x, int64_t n, float *found) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    bool bad = false;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride)
        bad |= !isfinite(ld(x + i));
    if (bad) *found = 1.0f;
}

/* One thread: backoff after a step with non-finite gradients, growth after growth_interval
 * good ones (a grown scale that overflows float32 is not taken). */
__global__ void loss_scale_update_kernel(neat_loss_scale_params p, float *s) {
    if (s[1] != 0.0f) {
        s[0] *= p.backoff_factor;
        s[2] = 0.0f;
        return;
    }
    s[2] += 1.0f;
    if (s[2] >= (float)p.growth_interval) {
        float grown = s[0] * p.growth_factor;
        if (isfinite(grown)) s[0] = grown;
        s[2] = 0.0f;
    }
}

extern "C" {

neat_status cuda_loss_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const auto &u = op->u.loss_scale;
    int64_t n = u.x->numel;
    if (n == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
#define LOSS_SCALE_LAUNCH(T)                                                                       \
    loss_scale_kernel<T><<<cuda_grid(dev, n), CUDA_THREADS, 0, s>>>(                               \
        u.scaler->data, reinterpret_cast<const T *>(u.x->data), reinterpret_cast<T *>(u.y->data),  \
        n)
    CUDA_DTYPE_DISPATCH(u.x->dtype, LOSS_SCALE_LAUNCH)
#undef LOSS_SCALE_LAUNCH
    return cuda_launched(op->fn, "loss_scale_kernel");
}

neat_status cuda_loss_scale_check(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    float *found = op->u.loss_scale_check.scaler->data + 1;
    cudaStream_t s = cuda_dev(dev)->stream;
    neat_status st =
        cuda_check(cudaMemsetAsync(found, 0, sizeof(float), s), op->fn, "cudaMemsetAsync");
    int nl;
    nm_tensor *const *list = nm_op_list(op, &nl);
    for (int i = 0; i < nl && st == NEAT_OK; i++) {
        const nm_tensor *t = list[i];
        if (t->numel == 0) continue;
#define NONFINITE_LAUNCH(T)                                                                        \
    nonfinite_kernel<T><<<cuda_grid(dev, t->numel), CUDA_THREADS, 0, s>>>(                         \
        reinterpret_cast<const T *>(t->data), t->numel, found)
        CUDA_DTYPE_DISPATCH(t->dtype, NONFINITE_LAUNCH)
#undef NONFINITE_LAUNCH
        st = cuda_launched(op->fn, "nonfinite_kernel");
    }
    return st;
}

neat_status cuda_loss_scale_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const auto &u = op->u.loss_scale_update;
    loss_scale_update_kernel<<<1, 1, 0, cuda_dev(dev)->stream>>>(u.p, u.scaler->data);
    return cuda_launched(op->fn, "loss_scale_update_kernel");
}

} /* extern "C" */
