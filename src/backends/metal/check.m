/*
 * check.m — ops that can fail on their data while they run (op_list.h: NM_OPF_RUNTIME_CHECK:
 * the cross-entropy's labels, the optimizers' hyper [lr, step]).
 *
 * Such an op cannot return a status from the GPU, so its graph computes, next to its result,
 * a validity record of 4 floats in its METAL_SLOT_FLAG slot:
 *   [failed (1 when this op or a checked op before it in the command buffer failed),
 *    valid (1 when this op's input passed), a, b]
 * with a, b what the message needs (the loss: the first bad row and its label; the
 * optimizers: lr and step). The op writes its outputs only when `ok` = its input is valid
 * and the prior record (the checked op before it in the same command buffer, or zeros)
 * says nothing failed: select(ok, new, old). So consecutive checked ops (a run of optimizer
 * updates) share one command buffer, and none writes after the first one that failed.
 * submit.m ends the command buffer after the last of such a run, waits for it and reads the
 * records: the first invalid one is the failing op; nothing after it is encoded.
 */
#import "metal.h"

#include <stdio.h>

neat_status metal_check_slots(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, void **prior,
                              void **record) {
    NMMetalDevice *d = metal_dev(dev);
    neat_status st = metal_slot(dev, cb, op, METAL_SLOT_FLAG, 4 * sizeof(float), record);
    if (st) return st;
    *prior = d->chain ? d->chain : d.zeros.contents;
    d->chain = *record;
    return NEAT_OK;
}

MPSGraphTensor *metal_check_record(MPSGraph *m, MPSGraphTensor *prior, MPSGraphTensor *valid,
                                   MPSGraphTensor *a, MPSGraphTensor *b, MPSGraphTensor **ok) {
    MPSGraphTensor *zero = metal_const(m, 0.0), *one = metal_const(m, 1.0);
    MPSGraphTensor *clear = [m equalWithPrimaryTensor:[m sliceTensor:prior
                                                           dimension:0
                                                               start:0
                                                              length:1
                                                                name:nil]
                                      secondaryTensor:zero
                                                 name:nil];
    *ok = [m logicalANDWithPrimaryTensor:clear secondaryTensor:valid name:nil];
    MPSGraphTensor *failed = [m selectWithPredicateTensor:*ok
                                      truePredicateTensor:zero
                                     falsePredicateTensor:one
                                                     name:nil];
    MPSGraphTensor *validf = [m selectWithPredicateTensor:valid
                                      truePredicateTensor:one
                                     falsePredicateTensor:zero
                                                     name:nil];
    return [m concatTensors:@[ failed, validf, a, b ] dimension:0 name:nil];
}

int64_t metal_check_failed(nm_cmdbuf *cb, int64_t first, int64_t end, neat_status *status,
                           char *detail, size_t size) {
    NMMetalCmdbuf *c = metal_cb(cb);
    for (int64_t i = first; i < end; i++) {
        const nm_op *op = &cb->ops[i];
        const float *rec = c->slot_ptr[i * METAL_SLOTS + METAL_SLOT_FLAG];
        if (!(nm_op_flags(op->kind) & NM_OPF_RUNTIME_CHECK) || !rec || rec[1] != 0.0f) continue;
        *status = NEAT_ERR_INVALID_ARGUMENT;
        if (op->kind == NM_OP_SOFTMAX_XENT || op->kind == NM_OP_SOFTMAX_XENT_BACKWARD) {
            snprintf(detail, size, "labels[%lld] = %g is not a class index in 0..%lld",
                     (long long)rec[2], (double)rec[3], (long long)op->u.softmax_xent.cols - 1);
        } else if (nm_hyper_valid(rec[2], rec[3], op->kind == NM_OP_ADAM_UPDATE, detail,
                                  (int)size)) {
            /* The graph's test and nm_hyper_valid disagree (they should not): say what was read. */
            snprintf(detail, size, "hyper = [%g, %g] failed the device's check of lr and step",
                     (double)rec[2], (double)rec[3]);
        }
        return i;
    }
    return -1;
}
