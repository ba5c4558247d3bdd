/*
 * loss_scale.c — dynamic loss scaling on the CPU: the scaled loss gradient, the check for
 * non-finite gradients over a list of tensors, and the scale's update. The scaler is a
 * float32 tensor [scale, found_inf, good steps]; each op reads it when it runs.
 */
#include "cpu.h"
#include "../../core/dtype.h"
#include "loops.h"

#include <math.h>

/* y = x * scale in x's dtype (float32 math, one rounding). */
neat_status cpu_loss_scale(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const nm_loss_scale_args *a = &op->u.loss_scale;
    int64_t n = a->x->numel;
    if (n == 0) return NEAT_OK;
    float s = a->scaler->data[0];
    int par = cpu_par(cpu_dev(dev)->nthreads, n);
    neat_dtype dt = a->x->dtype;
    if (dt == NEAT_F32) {
        const float *x = a->x->data;
        float *y = a->y->data;
        CPU_FOR(par, i, n, y[i] = x[i] * s);
    } else {
        const void *x = a->x->data;
        void *y = a->y->data;
        CPU_FOR(par, i, n, nm_store(dt, y, i, nm_load(dt, x, i) * s));
    }
    return NEAT_OK;
}

neat_status cpu_loss_scale_check(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    int nl;
    nm_tensor *const *list = nm_op_list(op, &nl);
    int found = 0; /* a NaN or infinity: cpu_max_abs answers +inf */
    for (int i = 0; i < nl && !found; i++)
        if (list[i]->numel > 0)
            found = isinf(
                cpu_max_abs(cpu_dev(dev)->nthreads, list[i]->data, list[i]->dtype, list[i]->numel));
    op->u.loss_scale_check.scaler->data[1] = found ? 1.0f : 0.0f;
    return NEAT_OK;
}

/* Backoff after a step with non-finite gradients, growth after growth_interval good ones;
 * a grown scale that overflows float32 is not taken. */
neat_status cpu_loss_scale_update(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)dev, (void)cb;
    const neat_loss_scale_params *p = &op->u.loss_scale_update.p;
    float *s = op->u.loss_scale_update.scaler->data;
    if (s[1] != 0.0f) {
        s[0] *= p->backoff_factor;
        s[2] = 0.0f;
        return NEAT_OK;
    }
    s[2] += 1.0f;
    if (s[2] >= (float)p->growth_interval) {
        float grown = s[0] * p->growth_factor;
        if (isfinite(grown)) s[0] = grown;
        s[2] = 0.0f;
    }
    return NEAT_OK;
}
