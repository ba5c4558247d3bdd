/*
 * half_ops.h — what the CPU and CUDA backends share about ops on bf16/f16 tensors: which ops
 * run on them through float32 copies (or natively), and which of an op's tensors it writes.
 * Header-only, valid C and C++ (cuda/half.cu includes it).
 */
#ifndef NEATML_BACKENDS_HALF_OPS_H
#define NEATML_BACKENDS_HALF_OPS_H

#include "../core/internal.h"

#include <string.h>

/* The ops that take half tensors natively on every backend that runs half tensors,
 * converting element by element (neat_cast, the optimizers' mixed form, the loss-scale
 * ops): they never go through float32 copies. */
static inline int nm_half_native(nm_op_kind kind) {
    switch (kind) {
    case NM_OP_CAST:
    case NM_OP_SGD_UPDATE:
    case NM_OP_ADAM_UPDATE:
    case NM_OP_LOSS_SCALE:
    case NM_OP_LOSS_SCALE_CHECK:
    case NM_OP_LOSS_SCALE_UPDATE: return 1;
    default: return 0;
    }
}

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

/* *s: a float32 stand-in for half tensor t, of t's shape, for an op run on float32 copies
 * (the caller points s->data at the copy). Only t's immutable fields are read: its
 * reference count, mark and list links belong to the device lock, under which the
 * application thread may change them meanwhile. */
static inline void nm_half_shadow(nm_tensor *s, const nm_tensor *t) {
    memset(s, 0, sizeof *s);
    s->dev = t->dev;
    s->storage = t->storage;
    s->data = t->data;
    s->dtype = NEAT_F32;
    s->ndim = t->ndim;
    s->numel = t->numel;
    memcpy(s->shape, t->shape, sizeof s->shape);
}

#endif
