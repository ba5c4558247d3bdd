/*
 * half_ops.h — what the CPU and CUDA backends share about ops on bf16/f16 tensors: which ops
 * run on them through float32 copies (or natively), and which of an op's tensors it writes.
 * Header-only, valid C and C++ (cuda/half.cu includes it).
 */
#ifndef NEATML_BACKENDS_HALF_OPS_H
#define NEATML_BACKENDS_HALF_OPS_H

#include "../core/internal.h"

/* The ops a backend may run on half tensors by widening them to float32: all but the losses
 * (their labels are class indices, which half types hold exactly only up to 256 or 2048)
 * and the ops with rules of their own (neat_cast, the mixed optimizers, the loss-scale
 * ops: they convert element by element) or float32 only (host copies, collectives). */
static inline int nm_half_via_f32(nm_op_kind kind) {
    switch (kind) {
    case NM_OP_ADD:
    case NM_OP_MUL:
    case NM_OP_SCALE:
    case NM_OP_FILL:
    case NM_OP_SUM:
    case NM_OP_SOFTMAX:
    case NM_OP_SOFTMAX_BACKWARD:
    case NM_OP_ACTIVATION_FORWARD:
    case NM_OP_ACTIVATION_BACKWARD:
    case NM_OP_MAXPOOL2D:
    case NM_OP_MAXPOOL2D_BACKWARD:
    case NM_OP_MATMUL:
    case NM_OP_LINEAR_FORWARD:
    case NM_OP_LINEAR_BACKWARD:
    case NM_OP_CONV2D_FORWARD:
    case NM_OP_CONV2D_BACKWARD: return 1;
    default: return 0;
    }
}

/* For an op of nm_half_via_f32: the tensors it writes are its slots from the returned index
 * on (a layer's backward: dx, dw, db; every other op: its last tensor, `last`); *reads: it
 * reads them first (matmul with beta != 0, an accumulating backward). */
static inline int nm_half_first_output(const nm_op *op, int last, int *reads) {
    *reads = 0;
    switch (op->kind) {
    case NM_OP_MATMUL: *reads = op->u.matmul.beta != 0.0f; return last;
    case NM_OP_LINEAR_BACKWARD: {
        const nm_linear_backward_args *a = &op->u.linear_backward;
        *reads = a->accumulate != 0;
        return (int)(&a->dx - a->tensors);
    }
    case NM_OP_CONV2D_BACKWARD: {
        const nm_conv2d_backward_args *a = &op->u.conv2d_backward;
        *reads = a->accumulate != 0;
        return (int)(&a->dx - a->tensors);
    }
    default: return last;
    }
}

#endif
