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
 */
/* We never read floating-point exception flags; lets GCC if-convert cpu_sqrtf's select. */
#pragma GCC optimize("no-trapping-math")

#include "cpu.h"
#include "loops.h"
#include "vecmath.h"

#include <math.h>

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

neat_status cpu_sgd_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const neat_sgd_params *p = &op->u.sgd_update.p;
    float *param = op->u.sgd_update.param->data;
    const float *grad = op->u.sgd_update.grad->data;
    float *vel = op->u.sgd_update.velocity ? op->u.sgd_update.velocity->data : NULL;
    int64_t n = op->u.sgd_update.param->numel;
    if (n == 0) return NEAT_OK;
    float lr = op->u.sgd_update.hyper->data[0];
    char why[128];
    if (!nm_hyper_valid(lr, op->u.sgd_update.hyper->data[1], 0, why, sizeof why))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s", why);
    CPU_SPLIT(cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi,
              sgd_range(param, grad, vel, lr, p->weight_decay, p->momentum, p->nesterov, lo, hi));
    return NEAT_OK;
}

neat_status cpu_adam_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const neat_adam_params *p = &op->u.adam_update.p;
    float *param = op->u.adam_update.param->data, *m = op->u.adam_update.m->data,
          *v = op->u.adam_update.v->data;
    const float *grad = op->u.adam_update.grad->data;
    int64_t n = op->u.adam_update.param->numel;
    if (n == 0) return NEAT_OK;
    double lr = op->u.adam_update.hyper->data[0], t = op->u.adam_update.hyper->data[1];
    char why[128];
    if (!nm_hyper_valid((float)lr, (float)t, 1, why, sizeof why))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s", why);
    /* bias corrections in double: 1 - 0.999^t loses most float digits for small t */
    double bc1 = 1.0 - pow((double)p->beta1, t);
    double bc2 = 1.0 - pow((double)p->beta2, t);
    float step = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * (double)p->weight_decay);
    CPU_SPLIT(
        cpu_par(cpu_dev(dev)->nthreads, n), n, lo, hi,
        adam_range(param, grad, m, v, decay, p->beta1, p->beta2, step, bc2_sqrt, p->eps, lo, hi));
    return NEAT_OK;
}
