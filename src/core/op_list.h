/*
 * op_list.h — the one list of recorded ops. Everything that enumerates ops is produced from
 * it: the nm_op_kind enum and the args union of nm_op (internal.h), the tensor list of a
 * recorded op (record.c), every backend's prototypes and op table (backend.h:
 * NM_DECLARE_OPS, NM_OP_TABLE).
 *
 * One entry: X(P, ENUM, name, flags)
 *   ENUM   the kind, NM_OP_<ENUM>
 *   name   the op's args struct nm_<name>_args (ops.h), its member of nm_op.u, and the
 *          suffix of each backend's function <prefix>_<name>
 *   flags  NM_OPF_* below
 *   P      passed through unchanged (a backend prefix for NM_DECLARE_OPS/NM_OP_TABLE)
 *
 * Adding an op: one entry here, its args struct in ops.h, one record function in
 * src/core/ops_*.c, one function per backend, rows in tests/test_conformance.c (values) and
 * tests/test_errors_ops.c (every argument's error cases). Collectives are tested by
 * tests/test_collectives.c (run under mpirun by scripts/run_tests.sh).
 */
#ifndef NEATML_OP_LIST_H
#define NEATML_OP_LIST_H

/* The op reads device data that can make it fail while it runs (a label out of range, an
 * invalid learning rate): a backend must be able to stop the rest of the submission. */
#define NM_OPF_RUNTIME_CHECK 1
/* The op talks to the other ranks of a communicator (nm_op.comm): it can fail at run time
 * (a peer that disagrees, died or timed out), which the backend learns from its
 * communication library (MPI, NCCL), not from the data. */
#define NM_OPF_COLLECTIVE 2
/* Element types (checked by nm_dtype_check when the op is recorded). Without one of these
 * flags every tensor of the op has the same dtype. */
#define NM_OPF_DT_ANY 4     /* each tensor any dtype (neat_cast) */
#define NM_OPF_DT_OUT_F32 8 /* one dtype, except the last tensor (the output) may be f32 */
#define NM_OPF_DT_F32 16    /* float32 only (host copies, collectives) */
/* float32 state tensors next to tensors of any dtype (the optimizers' grad and param in
 * their mixed form, the loss-scale ops' x, y and list): nm_dtype_check's per-op rule
 * (record.c: mixed_dtype_from) says which slots take any dtype. */
#define NM_OPF_DT_MIXED 32

/* Every op: the compute ops, then the collectives. The collectives are a list of their own
 * so that a backend without them (Metal) keeps its table NM_OP_TABLE: they stay NULL there,
 * which makes recording them answer UNSUPPORTED. */
#define NM_OP_LIST(X, P) NM_COMPUTE_OP_LIST(X, P) NM_COLLECTIVE_OP_LIST(X, P)

#define NM_COLLECTIVE_OP_LIST(X, P)                                                                \
    X(P, ALL_REDUCE, all_reduce, NM_OPF_COLLECTIVE | NM_OPF_DT_F32)                                \
    X(P, ALL_REDUCE_BUCKET, all_reduce_bucket, NM_OPF_COLLECTIVE | NM_OPF_DT_F32) /* nm_op.list */ \
    X(P, BROADCAST, broadcast, NM_OPF_COLLECTIVE | NM_OPF_DT_F32)

#define NM_COMPUTE_OP_LIST(X, P)                                                                   \
    X(P, MATMUL, matmul, NM_OPF_DT_OUT_F32) /* neat_matmul, neat_matmul_batched */                 \
    X(P, ADD, add, 0)                                                                              \
    X(P, MUL, mul, 0)                                                                              \
    X(P, SCALE, scale, 0)                                                                          \
    X(P, FILL, fill, 0)                                                                            \
    X(P, LINEAR_FORWARD, linear_forward, NM_OPF_DT_OUT_F32)                                        \
    X(P, CONV2D_FORWARD, conv2d_forward, NM_OPF_DT_OUT_F32)                                        \
    X(P, MAXPOOL2D, maxpool2d, 0)                                                                  \
    X(P, SUM, sum, 0) /* neat_sum_all, neat_sum_axis */                                            \
    X(P, SOFTMAX, softmax, 0)                                                                      \
    X(P, ACTIVATION_FORWARD, activation_forward, 0)                                                \
    X(P, ACTIVATION_BACKWARD, activation_backward, 0)                                              \
    X(P, LINEAR_BACKWARD, linear_backward, 0)                                                      \
    X(P, CONV2D_BACKWARD, conv2d_backward, 0)                                                      \
    X(P, MAXPOOL2D_BACKWARD, maxpool2d_backward, 0)                                                \
    X(P, SOFTMAX_BACKWARD, softmax_backward, 0)                                                    \
    X(P, SOFTMAX_XENT, softmax_xent, NM_OPF_RUNTIME_CHECK)                                         \
    X(P, SOFTMAX_XENT_BACKWARD, softmax_xent_backward, NM_OPF_RUNTIME_CHECK)                       \
    X(P, SGD_UPDATE, sgd_update, NM_OPF_RUNTIME_CHECK | NM_OPF_DT_MIXED)                           \
    X(P, ADAM_UPDATE, adam_update, NM_OPF_RUNTIME_CHECK | NM_OPF_DT_MIXED)                         \
    X(P, LOSS_SCALE, loss_scale, NM_OPF_DT_MIXED)                                                  \
    X(P, LOSS_SCALE_CHECK, loss_scale_check, NM_OPF_DT_MIXED) /* nm_op.list */                     \
    X(P, LOSS_SCALE_UPDATE, loss_scale_update, NM_OPF_DT_MIXED)                                    \
    X(P, COPY_FROM_HOST, copy_from_host, NM_OPF_DT_F32)                                            \
    X(P, COPY_TO_HOST, copy_to_host, NM_OPF_DT_F32)                                                \
    X(P, CAST, cast, NM_OPF_DT_ANY)

#endif
