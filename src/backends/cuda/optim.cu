/*
 * optim.cu — SGD (momentum, Nesterov, L2 weight decay) and AdamW updates, in place.
 *
 * The learning rate and the step come from the device tensor hyper = [lr, t], read by the
 * kernel when it runs, so a command buffer replayed as a CUDA graph follows a schedule
 * written between commits. One thread updates 4 consecutive parameters with 16-byte
 * accesses (every pointer is the start of a pool block: common.cuh), the <4 tail one by one.
 *
 * SGD:   g = grad + wd p;  v = mu v + g;  p -= lr (nesterov ? g + mu v : v)   (mu = 0: p -= lr g)
 * AdamW: p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *        p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * The mixed form (neat_*_update_mixed) updates the float32 master weights p from a grad of
 * storage type G: g = ld(grad) / scaler[0], then param (type P, when given) = p rounded.
 * The skip (scaler[1] != 0: non-finite gradients) is read by every thread on the device,
 * so it holds inside a captured graph and on replay. One element per thread and step of a
 * grid-stride loop (2-byte types have no float4 counterpart worth the tail code here). The
 * plain form keeps the float4 kernels: its bits are as before.
 */
#include "common.cuh"

struct sgd_step {
    float lr, mu, wd;
    int nesterov;
    __device__ void operator()(float &p, float g, float *v) const {
        g += wd * p;
        if (v) {
            float vn = mu * *v + g;
            *v = vn;
            g = nesterov ? g + mu * vn : vn;
        }
        p -= lr * g;
    }
};

struct adam_step {
    float lr, b1, b2, eps, wd, c1, c2; /* c1 = 1 - b1^t, c2 = 1 - b2^t */
    __device__ void operator()(float &p, float g, float &m, float &v) const {
        p *= 1.0f - lr * wd;
        m = b1 * m + (1.0f - b1) * g;
        v = b2 * v + (1.0f - b2) * g * g;
        p -= lr * (m / c1) / (sqrtf(v / c2) + eps);
    }
};

/* hyper = [lr, step] as nm_hyper_valid (ops.h) wants it: lr finite and >= 0, and for Adam
 * step finite and >= 1. Every thread reads the same two floats and so decides alike: on bad
 * values (or after an earlier op failed) no thread writes, and one records why. */
__device__ __forceinline__ bool hyper_ok(const float *hyper, bool uses_step, int *err, int op) {
    if (cuda_failed(err)) return false;
    float lr = hyper[0], t = hyper[1];
    bool lr_ok = lr >= 0.0f && lr <= 3.4e38f, t_ok = !uses_step || (t >= 1.0f && t <= 3.4e38f);
    if (lr_ok && t_ok) return true;
    if (blockIdx.x == 0 && threadIdx.x == 0)
        cuda_fail(err, CUDA_ERR_HYPER, lr_ok ? 1 : 0, lr_ok ? t : lr, op);
    return false;
}

__global__ void sgd_kernel(neat_sgd_params prm, const float *__restrict__ hyper,
                           float *__restrict__ param, const float *__restrict__ grad,
                           float *__restrict__ vel, int64_t n, int *err, int op) {
    cuda_pdl_enter();
    if (!hyper_ok(hyper, false, err, op)) return;
    sgd_step f{hyper[0], prm.momentum, prm.weight_decay, prm.nesterov};
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = n >> 2;
    for (int64_t i = tid; i < n4; i += stride) {
        float4 p = reinterpret_cast<float4 *>(param)[i];
        float4 g = reinterpret_cast<const float4 *>(grad)[i];
        if (vel) {
            float4 v = reinterpret_cast<float4 *>(vel)[i];
            f(p.x, g.x, &v.x);
            f(p.y, g.y, &v.y);
            f(p.z, g.z, &v.z);
            f(p.w, g.w, &v.w);
            reinterpret_cast<float4 *>(vel)[i] = v;
        } else {
            f(p.x, g.x, NULL);
            f(p.y, g.y, NULL);
            f(p.z, g.z, NULL);
            f(p.w, g.w, NULL);
        }
        reinterpret_cast<float4 *>(param)[i] = p;
    }
    for (int64_t i = n4 * 4 + tid; i < n; i += stride) f(param[i], grad[i], vel ? vel + i : NULL);
}

__global__ void adam_kernel(neat_adam_params prm, const float *__restrict__ hyper,
                            float *__restrict__ param, const float *__restrict__ grad,
                            float *__restrict__ m, float *__restrict__ v, int64_t n, int *err,
                            int op) {
    cuda_pdl_enter();
    if (!hyper_ok(hyper, true, err, op)) return;
    float t = hyper[1];
    adam_step f{hyper[0],
                prm.beta1,
                prm.beta2,
                prm.eps,
                prm.weight_decay,
                1.0f - powf(prm.beta1, t),
                1.0f - powf(prm.beta2, t)};
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = n >> 2;
    for (int64_t i = tid; i < n4; i += stride) {
        float4 p = reinterpret_cast<float4 *>(param)[i];
        float4 g = reinterpret_cast<const float4 *>(grad)[i];
        float4 mm = reinterpret_cast<float4 *>(m)[i];
        float4 vv = reinterpret_cast<float4 *>(v)[i];
        f(p.x, g.x, mm.x, vv.x);
        f(p.y, g.y, mm.y, vv.y);
        f(p.z, g.z, mm.z, vv.z);
        f(p.w, g.w, mm.w, vv.w);
        reinterpret_cast<float4 *>(param)[i] = p;
        reinterpret_cast<float4 *>(m)[i] = mm;
        reinterpret_cast<float4 *>(v)[i] = vv;
    }
    for (int64_t i = n4 * 4 + tid; i < n; i += stride) f(param[i], grad[i], m[i], v[i]);
}

/* The loss scale of a mixed step, and whether it is skipped (all threads read alike). */
__device__ __forceinline__ bool step_skipped(const float *scaler, float *scale) {
    *scale = scaler ? scaler[0] : 1.0f;
    return scaler && scaler[1] != 0.0f;
}

template <typename G, typename P>
__global__ void sgd_mixed_kernel(neat_sgd_params prm, const float *__restrict__ hyper,
                                 const float *__restrict__ scaler, float *__restrict__ master,
                                 const G *__restrict__ grad, float *__restrict__ vel,
                                 P *__restrict__ param, int64_t n, int *err, int op) {
    if (!hyper_ok(hyper, false, err, op)) return;
    float scale;
    if (step_skipped(scaler, &scale)) return;
    sgd_step f{hyper[0], prm.momentum, prm.weight_decay, prm.nesterov};
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float p = master[i];
        f(p, ld(grad + i) / scale, vel ? vel + i : NULL);
        master[i] = p;
        if (param) st(param + i, p);
    }
}

template <typename G, typename P>
__global__ void adam_mixed_kernel(neat_adam_params prm, const float *__restrict__ hyper,
                                  const float *__restrict__ scaler, float *__restrict__ master,
                                  const G *__restrict__ grad, float *__restrict__ m,
                                  float *__restrict__ v, P *__restrict__ param, int64_t n, int *err,
                                  int op) {
    if (!hyper_ok(hyper, true, err, op)) return;
    float scale;
    if (step_skipped(scaler, &scale)) return;
    float t = hyper[1];
    adam_step f{hyper[0],
                prm.beta1,
                prm.beta2,
                prm.eps,
                prm.weight_decay,
                1.0f - powf(prm.beta1, t),
                1.0f - powf(prm.beta2, t)};
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float p = master[i], mi = m[i], vi = v[i];
        f(p, ld(grad + i) / scale, mi, vi);
        master[i] = p;
        m[i] = mi;
        v[i] = vi;
        if (param) st(param + i, p);
    }
}

/* The launchers of the mixed kernels for a grad of type G, over param's type. */
template <typename G>
static void launch_sgd_mixed(dim3 grid, cudaStream_t s, const nm_sgd_update_args &u, float *vel,
                             int *err, int op) {
    const G *grad = reinterpret_cast<const G *>(u.grad->data);
    int64_t n = u.master->numel;
    neat_dtype pdt = u.param ? u.param->dtype : NEAT_F32;
    void *param = u.param ? (void *)u.param->data : NULL;
#define SGD_LAUNCH(P)                                                                              \
    sgd_mixed_kernel<G, P><<<grid, CUDA_THREADS, 0, s>>>(                                          \
        u.p, u.hyper->data, u.scaler ? u.scaler->data : NULL, u.master->data, grad, vel,           \
        reinterpret_cast<P *>(param), n, err, op)
    CUDA_DTYPE_DISPATCH(pdt, SGD_LAUNCH)
#undef SGD_LAUNCH
}

template <typename G>
static void launch_adam_mixed(dim3 grid, cudaStream_t s, const nm_adam_update_args &u, int *err,
                              int op) {
    const G *grad = reinterpret_cast<const G *>(u.grad->data);
    int64_t n = u.master->numel;
    neat_dtype pdt = u.param ? u.param->dtype : NEAT_F32;
    void *param = u.param ? (void *)u.param->data : NULL;
#define ADAM_LAUNCH(P)                                                                             \
    adam_mixed_kernel<G, P><<<grid, CUDA_THREADS, 0, s>>>(                                         \
        u.p, u.hyper->data, u.scaler ? u.scaler->data : NULL, u.master->data, grad, u.m->data,     \
        u.v->data, reinterpret_cast<P *>(param), n, err, op)
    CUDA_DTYPE_DISPATCH(pdt, ADAM_LAUNCH)
#undef ADAM_LAUNCH
}

extern "C" {

/* The plain form: float32 grad read as is, no scaler, no rounded copy. */
static bool plain_step(const nm_tensor *scaler, const nm_tensor *grad, const nm_tensor *param) {
    return !scaler && !param && grad->dtype == NEAT_F32;
}

neat_status cuda_sgd_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.sgd_update;
    int64_t n = u.master->numel;
    if (n == 0) return NEAT_OK;
    float *vel = u.p.momentum != 0.0f && u.velocity ? u.velocity->data : NULL;
    cudaStream_t s = cuda_dev(dev)->stream;
    cuda_cmdbuf *c = cuda_cb(cb);
    if (plain_step(u.scaler, u.grad, u.param)) {
        cuda_launch(dev, sgd_kernel, cuda_grid(dev, (n + 3) / 4), CUDA_THREADS, u.p, u.hyper->data,
                    u.master->data, u.grad->data, vel, n, c->err, (int)c->cur_op);
        return cuda_launched(op->fn, "sgd_kernel");
    }
    dim3 grid(cuda_grid(dev, n));
#define SGD_GRAD(G) launch_sgd_mixed<G>(grid, s, u, vel, c->err, (int)c->cur_op)
    CUDA_DTYPE_DISPATCH(u.grad->dtype, SGD_GRAD)
#undef SGD_GRAD
    return cuda_launched(op->fn, "sgd_mixed_kernel");
}

neat_status cuda_adam_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.adam_update;
    int64_t n = u.master->numel;
    if (n == 0) return NEAT_OK;
    cudaStream_t s = cuda_dev(dev)->stream;
    cuda_cmdbuf *c = cuda_cb(cb);
    if (plain_step(u.scaler, u.grad, u.param)) {
        cuda_launch(dev, adam_kernel, cuda_grid(dev, (n + 3) / 4), CUDA_THREADS, u.p, u.hyper->data,
                    u.master->data, u.grad->data, u.m->data, u.v->data, n, c->err, (int)c->cur_op);
        return cuda_launched(op->fn, "adam_kernel");
    }
    dim3 grid(cuda_grid(dev, n));
#define ADAM_GRAD(G) launch_adam_mixed<G>(grid, s, u, c->err, (int)c->cur_op)
    CUDA_DTYPE_DISPATCH(u.grad->dtype, ADAM_GRAD)
#undef ADAM_GRAD
    return cuda_launched(op->fn, "adam_mixed_kernel");
}

} /* extern "C" */
