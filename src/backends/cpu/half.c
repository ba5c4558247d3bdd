/*
 * half.c — bf16 and f16 tensors on the CPU: which ops run in them (cpu_op_check), neat_cast,
 * and how an op runs on half tensors (cpu_run_op).
 *
 * Half types are storage: the math is float32. An op that takes half tensors runs its
 * float32 function on float32 copies: every half input is widened into scratch memory
 * (exact), the float32 op runs, and the output is rounded once back into its half tensor
 * (to nearest, ties to even). That is the accuracy the header promises (float32 math and
 * accumulation, one rounding of the result) for every op at once, at the cost of a pass
 * over the data and 2x the tensor in scratch. Conversions inside each loop would save that
 * pass; this first increment keeps one path per op correct first.
 */
#include "cpu.h"
#include "../../core/dtype.h"
#include "../half_ops.h"
#include "loops.h"

#include <string.h>

/* dst[i] = src[i] converted, i < n (float32 between the two types). */
static CPU_CLONES void convert(int nthreads, neat_dtype sdt, const void *src, neat_dtype ddt,
                               void *dst, int64_t n) {
    if (sdt == ddt) {
        if (src != dst) memmove(dst, src, (size_t)n * neat_dtype_size(sdt));
        return;
    }
    int par = cpu_par(nthreads, n);
    if (sdt == NEAT_F32 && ddt == NEAT_BF16) {
        const float *s = src;
        uint16_t *d = dst;
        CPU_FOR(par, i, n, d[i] = nm_f32_to_bf16(s[i]));
    } else if (sdt == NEAT_BF16 && ddt == NEAT_F32) {
        const uint16_t *s = src;
        float *d = dst;
        CPU_FOR(par, i, n, d[i] = nm_bf16_to_f32(s[i]));
    } else {
        CPU_FOR(par, i, n, nm_store(ddt, dst, i, nm_load(sdt, src, i)));
    }
}

neat_status cpu_cast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    (void)cb;
    const nm_cast_args *a = &op->u.cast;
    if (a->x->numel == 0) return NEAT_OK;
    convert(cpu_dev(dev)->nthreads, a->x->dtype, a->x->data, a->y->dtype, a->y->data, a->x->numel);
    return NEAT_OK;
}

/* The first half tensor of op, NULL when every tensor is float32. */
static const nm_tensor *first_half(const nm_op *op) {
    int n;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    for (int i = 0; i < n; i++)
        if (ts[i] && ts[i]->dtype != NEAT_F32) return ts[i];
    return NULL;
}

neat_status cpu_op_check(nm_device *dev, const nm_op *op) {
    (void)dev;
    const nm_tensor *h = first_half(op);
    if (h && !nm_half_via_f32(op->kind) && !nm_half_native(op->kind))
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: the cpu backend does not run this op on %s tensors yet (float32 "
                        "only; neat_cast converts)",
                        op->fn, neat_dtype_name(h->dtype));
    return NEAT_OK;
}

neat_status cpu_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    nm_op_fn run = dev->be->op[op->kind];
    if (nm_half_native(op->kind) || !first_half(op)) return run(dev, cb, op);
    nm_op f32 = *op;
    nm_tensor shadow[NM_OP_MAX_TENSORS];
    int n, nthreads = cpu_dev(dev)->nthreads;
    nm_tensor **ts = (nm_tensor **)nm_op_tensors(&f32, &n);
    int last = n - 1, reads;
    while (last >= 0 && !ts[last]) last--;
    int out = nm_half_first_output(op, last, &reads);
    for (int i = 0; i < n; i++) {
        if (!ts[i] || ts[i]->dtype == NEAT_F32) continue;
        nm_half_shadow(&shadow[i], ts[i]);
        if (ts[i]->numel > 0) {
            void *p;
            neat_status st = nm_scratch_alloc(cb, (size_t)ts[i]->numel * sizeof(float), &p);
            if (st != NEAT_OK) return st;
            shadow[i].data = p;
            if (i < out || reads)
                convert(nthreads, ts[i]->dtype, ts[i]->data, NEAT_F32, p, ts[i]->numel);
        }
        ts[i] = &shadow[i];
    }
    neat_status st = run(dev, cb, &f32);
    if (st != NEAT_OK) return st;
    nm_tensor *const *orig = nm_op_tensors(op, &n);
    for (int i = out; i >= 0 && i < n; i++) {
        const nm_tensor *o = orig[i];
        if (o && o->dtype != NEAT_F32 && o->numel > 0)
            convert(nthreads, NEAT_F32, ts[i]->data, o->dtype, o->data, o->numel);
    }
    return NEAT_OK;
}
