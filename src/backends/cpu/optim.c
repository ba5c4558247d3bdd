/*
 * optim.c — SGD (momentum, Nesterov, L2 weight decay) and AdamW updates, in place.
 *
 * hyper[0] = learning rate, hyper[1] = step t (1, 2, ...) are read from the tensor when the
 * op runs, so a recorded training step replays with a schedule.
 *
 * SGD, as PyTorch's with dampening 0 (velocity v starts at zero, so the first step's
 * v = g matches PyTorch's buffer initialised to g):
 *   g = grad + wd param;  v = momentum v + g;
 *   param -= lr (g + momentum v)  (Nesterov)  or  lr v;   plain SGD (momentum 0): lr g.
 * AdamW, as PyTorch's (decoupled decay, bias corrections folded into the step):
 *   param *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   param -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 *
 * The mixed form (neat_*_update_mixed) runs the same loops on the float32 master weights,
 * block by block in one pass: a block of grad is widened to float32 and divided by the
 * loss scale into a buffer on the stack, the block of master is updated, then rounded into
 * param. The plain form is the same with grad read in place, so its bits are as before.
 */
/* We never read floating-point exception flags; lets GCC if-convert cpu_sqrtf's select. */
#pragma GCC optimize("no-trapping-math")

#include "cpu.h"
#include "../../core/dtype.h"
#include "loops.h"
#include "vecmath.h"

#include <math.h>
#include <string.h>

CPU_CLONES static void sgd_range(float *param, const float *grad, float *vel, float lr, float wd,
                                 float momentum, int nesterov, int64_t lo, int64_t hi) {
    if (vel == NULL || momentum == 0.0f) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) param[i] -= lr * (grad[i] + wd * param[i]);
    } else if (nesterov) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            float g = grad[i] + wd * param[i];
            float v = momentum * vel[i] + g;
            vel[i] = v;
            param[i] -= lr * (g + momentum * v);
        }
    } else {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            float v = momentum * vel[i] + (grad[i] + wd * param[i]);
            vel[i] = v;
            param[i] -= lr * v;
        }
    }
}

/* cpu_sqrtf (vecmath.h, within 1 ulp) instead of sqrtf, whose errno branch keeps GCC from
 * vectorizing the loop. v >= 0 always. */
CPU_CLONES static void adam_range(float *param, const float *grad, float *m, float *v, float decay,
                                  float b1, float b2, float step, float bc2_sqrt, float eps,
                                  int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float g = grad[i];
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = cpu_sqrtf(vi) / bc2_sqrt + eps;
        param[i] = param[i] * decay - step * mi / denom;
    }
}

/* Elements per block of the mixed form: the widened gradient stays in L1. */
#define OPT_BLOCK 1024

/* dst[0..len) = src[off..off+len) of type dt, widened, / scale. */
static CPU_CLONES void widen_scaled(neat_dtype dt, const void *src, int64_t off, float *dst,
                                    int64_t len, float scale) {
    if (dt == NEAT_F32) {
        const float *s = (const float *)src + off;
#pragma omp simd
        for (int64_t i = 0; i < len; i++) dst[i] = s[i] / scale;
    } else if (dt == NEAT_BF16) {
        const uint16_t *s = (const uint16_t *)src + off;
#pragma omp simd
        for (int64_t i = 0; i < len; i++) dst[i] = nm_bf16_to_f32(s[i]) / scale;
    } else {
        const uint16_t *s = (const uint16_t *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = nm_f16_to_f32(s[i]) / scale;
    }
}

/* dst[off..off+len) of type dt = src[0..len) rounded (to nearest, ties to even). */
static CPU_CLONES void round_into(const float *src, neat_dtype dt, void *dst, int64_t off,
                                  int64_t len) {
    if (dt == NEAT_F32) {
        memcpy((float *)dst + off, src, (size_t)len * sizeof(float));
    } else if (dt == NEAT_BF16) {
        uint16_t *d = (uint16_t *)dst + off;
#pragma omp simd
        for (int64_t i = 0; i < len; i++) d[i] = nm_f32_to_bf16(src[i]);
    } else {
        uint16_t *d = (uint16_t *)dst + off;
        for (int64_t i = 0; i < len; i++) d[i] = nm_f32_to_f16(src[i]);
    }
}

/* The step's inputs as the kernels take them: the loss scale (1 without a scaler) and
 * whether the step is skipped (scaler[1] != 0: non-finite gradients). */
static float loss_scale_of(const nm_tensor *scaler, int *skip) {
    *skip = scaler && scaler->data[1] != 0.0f;
    return scaler ? scaler->data[0] : 1.0f;
}

/* Whether grad can be read in place: float32 and not scaled. */
static int grad_in_place(const nm_tensor *grad, float scale) {
    return grad->dtype == NEAT_F32 && scale == 1.0f;
}

/* grad[b, b + len) as float32 divided by scale: grad's own memory when it can be read in
 * place, else widened into g (OPT_BLOCK floats). */
static const float *grad_block(const nm_tensor *grad, float scale, int64_t b, int64_t len,
                               float *g) {
    if (grad_in_place(grad, scale)) return (const float *)grad->data + b;
    widen_scaled(grad->dtype, grad->data, b, g, len, scale);
    return g;
}

neat_status cpu_sgd_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const nm_sgd_update_args *a = &op->u.sgd_update;
    const neat_sgd_params *p = &a->p;
    float *master = a->master->data;
    float *vel = a->velocity ? a->velocity->data : NULL;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    float lr = a->hyper->data[0];
    char why[128];
    if (!nm_hyper_valid(lr, a->hyper->data[1], 0, why, sizeof why))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s", why);
    int skip;
    float scale = loss_scale_of(a->scaler, &skip);
    if (skip) return NEAT_OK;
    const nm_tensor *grad = a->grad, *param = a->param;
    if (grad_in_place(grad, scale) && !param) {
        CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi,
                  sgd_range(master, grad->data, vel, lr, p->weight_decay, p->momentum, p->nesterov,
                            lo, hi));
        return NEAT_OK;
    }
    CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi, {
        float g[OPT_BLOCK];
        for (int64_t b = lo; b < hi; b += OPT_BLOCK) {
            int64_t len = hi - b < OPT_BLOCK ? hi - b : OPT_BLOCK;
            const float *gb = grad_block(grad, scale, b, len, g);
            sgd_range(master + b, gb, vel ? vel + b : NULL, lr, p->weight_decay, p->momentum,
                      p->nesterov, 0, len);
            if (param) round_into(master + b, param->dtype, param->data, b, len);
        }
    });
    return NEAT_OK;
}

neat_status cpu_adam_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const nm_adam_update_args *a = &op->u.adam_update;
    const neat_adam_params *p = &a->p;
    float *master = a->master->data, *m = a->m->data, *v = a->v->data;
    int64_t n = a->master->numel;
    if (n == 0) return NEAT_OK;
    double lr = a->hyper->data[0], t = a->hyper->data[1];
    char why[128];
    if (!nm_hyper_valid((float)lr, (float)t, 1, why, sizeof why))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s", why);
    int skip;
    float scale = loss_scale_of(a->scaler, &skip);
    if (skip) return NEAT_OK;
    /* bias corrections in double: 1 - 0.999^t loses most float digits for small t */
    double bc1 = 1.0 - pow((double)p->beta1, t);
    double bc2 = 1.0 - pow((double)p->beta2, t);
    float step = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * (double)p->weight_decay);
    const nm_tensor *grad = a->grad, *param = a->param;
    if (grad_in_place(grad, scale) && !param) {
        CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi,
                  adam_range(master, grad->data, m, v, decay, p->beta1, p->beta2, step, bc2_sqrt,
                             p->eps, lo, hi));
        return NEAT_OK;
    }
    CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi, {
        float g[OPT_BLOCK];
        for (int64_t b = lo; b < hi; b += OPT_BLOCK) {
            int64_t len = hi - b < OPT_BLOCK ? hi - b : OPT_BLOCK;
            const float *gb = grad_block(grad, scale, b, len, g);
            adam_range(master + b, gb, m + b, v + b, decay, p->beta1, p->beta2, step, bc2_sqrt,
                       p->eps, 0, len);
            if (param) round_into(master + b, param->dtype, param->data, b, len);
        }
    });
    return NEAT_OK;
}
