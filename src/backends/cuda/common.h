/*
 * common.h — state of the CUDA backend shared by backend.c (C) and the .cu files (C++).
 *
 * One device = one CUDA stream, one cuBLASLt handle, one cuDNN handle, a preallocated
 * cuBLASLt workspace and the per-shape caches of matmul algorithms (matmul.cu) and cuDNN
 * convolution plans (conv_plan.cu). Ops are enqueued on the stream by submit() in backend.c,
 * which holds the device lock while it does; the caches are touched only under that lock.
 *
 * A command buffer's backend state (cuda_cmdbuf) keeps what must stay fixed for a CUDA
 * graph to replay: one scratch pointer per (op, slot), taken from the core's pool with
 * nm_scratch_alloc on the first submission and reused by every later one, the captured
 * graph, and an error record in device memory that kernels set on bad input (an
 * out-of-range label), copied to a snapshot of each submission and cleared at its end
 * (guard.cu: cuda_take_error_record), where wait() reads it; and whether the ranks agree on
 * its collectives (checked at the first submission, comm.c).
 *
 * Files: backend.c (table, device, memory, submit/wait, graphs), elementwise.cu (add,
 * scale, fill, activations, bias+activation), pool.cu, reduce.cu (sums), softmax.cu
 * (softmax, cross-entropy), optim.cu (SGD, AdamW), matmul.cu (cuBLASLt plans and matmul),
 * linear.cu (linear on them), gemm_small.cu (neatml's own small GEMM),
 * conv.cu and conv_plan.cu (cuDNN: the ops; plans and algorithms), conv_gemm.cu (strict
 * float32's own backward filters), half.cu (neat_cast, bf16/f16: native paths and the
 * float32 fallback), comm.c (collectives: NCCL), bucket.cu (a bucket's pack and unpack),
 * current_device.c (the caller's current device, selected and given back).
 */
#ifndef NEATML_CUDA_COMMON_H
#define NEATML_CUDA_COMMON_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../backend.h"

/* cuBLASLt workspace per device: 32 MiB, what cuBLAS itself reserves on Hopper. */
#define CUDA_LT_WORKSPACE (32u << 20)
/* Scratch buffers one op may hold (cuda_scratch slots): the op's own below
 * CUDA_FALLBACK_SLOT, then one per tensor of the op for the float32 copies of half tensors
 * (half.cu: cuda_run_op). */
#define CUDA_FALLBACK_SLOT 8
#define CUDA_SLOTS (CUDA_FALLBACK_SLOT + 8)
/* Guards (conditional bodies, guard.cu) one captured buffer may nest. */
#define CUDA_MAX_GUARDS 32
/* Completed submissions' events kept for reuse. */
#define CUDA_SPARE_EVENTS 64

struct cuda_matmul_cache;
struct cuda_conv_cache;

#define CUDA_PINNED_BLOCKS 64 /* staging blocks kept for reuse (copy.c) */

typedef struct cuda_device {
    int index;
    int sms;             /* multiprocessors: sizes grids */
    size_t total_memory; /* bytes of the card: larger allocations fail at once */
    cudaStream_t stream; /* where ops enqueue: main_stream, or a guard's body (guard.cu) */
    cudaStream_t main_stream;
    cudaStream_t copy_stream;   /* neat_tensor_write/read (copy_in/copy_out) */
    cudaStream_t upload_stream; /* copies to the device that run ahead of their buffer (copy.c) */
    uint64_t upload_after;      /* upload_stream is already behind this submission's `done` */
    cudaStream_t guard_streams[CUDA_MAX_GUARDS];
    int guard_depth;
    int pdl; /* programmatic dependent launch of neatml's kernels (common.cuh: cuda_launch) */
    int conv_small; /* NEATML_CONV_SMALL when the device opened: conv_small.cu's kernels on
                       (read once, so that recording, cuda_conv2d_check, and the run agree) */
    cublasLtHandle_t lt;
    cudnnHandle_t dnn;
    void *lt_ws;                  /* CUDA_LT_WORKSPACE bytes */
    struct cuda_matmul_cache *mm; /* matmul.cu */
    struct cuda_conv_cache *conv; /* conv_plan.cu */
    pthread_mutex_t lock;         /* submit(), the caches, the submission ring, spare events */
    pthread_mutex_t reap_lock;    /* one thread completes submissions at a time (backend.c) */
    struct cuda_sub *subs;        /* submissions in flight, oldest at subs[first], a ring */
    int first, nsubs, capsubs;
    uint64_t done_seq; /* every submission up to it completed (atomic loads) */
    cudaEvent_t spare[CUDA_SPARE_EVENTS];
    int nspare;
    /* Mapped pinned staging blocks of released command buffers, kept for the next ones
     * (copy.c): cudaFreeHost waits for the whole device, which neat_cmdbuf_destroy must not. */
    struct cuda_pinned {
        void *ptr;
        size_t bytes;
    } pinned[CUDA_PINNED_BLOCKS];
    int npinned;
    pthread_mutex_t pinned_lock;
    int *spare_records[CUDA_SPARE_EVENTS]; /* completed submissions' error-record snapshots */
    int nspare_records;
} cuda_device;

/* A submission in flight: events around its work, and what completing it must read. */
typedef struct cuda_sub {
    uint64_t seq;
    nm_cmdbuf *cb;
    cudaEvent_t start, done;
    int timed, checks, collectives;
    int refused; /* the ranks disagree on the buffer's collectives: nothing of it ran */
    int *record; /* checks: CUDA_ERR_WORDS ints of pinned, mapped host memory, the buffer's
                    error record as this submission left it (cuda_take_error_record) */
} cuda_sub;

/* Error record in device memory, set once by the first kernel that finds bad input (what,
 * where, the value, the op's index); ops that can fail do nothing once it is set, and every
 * other op after one of them is guarded (guard.cu). Each submission of the buffer starts
 * with it clear and ends by moving it to its own snapshot (cuda_sub.record), so that a
 * replay queued behind a failed run is not stopped by that run's failure. */
enum {
    CUDA_ERR_FLAG = 0,
    CUDA_ERR_ROW = 1,
    CUDA_ERR_VALUE = 2,
    CUDA_ERR_OP = 3,
    CUDA_ERR_KIND = 4,
    CUDA_ERR_WORDS = 5
};
enum {
    CUDA_ERR_LABEL = 1, /* ROW: the row, VALUE: its label */
    CUDA_ERR_HYPER = 2  /* ROW: 0 the learning rate, 1 the step; VALUE: it */
};

typedef struct cuda_slot {
    void *ptr;
    size_t bytes;
} cuda_slot;

typedef struct cuda_cmdbuf {
    cudaGraphExec_t exec;      /* captured at the second submission */
    cudaGraph_t graph;         /* exec's source, kept for take_node (buffers with checks) */
    cudaGraphNode_t take_node; /* the graph's take_record (guard.cu) */
    int graph_failed;          /* capture did not work: keep enqueueing op by op */
    uint64_t submits;
    int64_t cur_op;   /* op being enqueued: selects its scratch slots */
    cuda_slot *slots; /* nops * CUDA_SLOTS */
    int64_t nslots;
    int *err;              /* CUDA_ERR_WORDS ints of device memory */
    int err_unclear;       /* err may hold a failure no snapshot took (a submission whose
                              enqueue failed, or none yet): cleared before the next one */
    void **host;           /* copy.c: pinned staging of each host-copy op, or NULL */
    void **host_dev;       /* copy.c: the device's address of each (mapped) staging */
    cudaEvent_t *consumed; /* copy.c: after each copy_from_host's device copy */
    char *ahead;           /* copy.c: the copy_from_host ops that run on upload_stream */
    int64_t last_ahead;   /* the last of them (its `consumed` is what the stream waits on), or -1 */
    int64_t nahead;       /* how many */
    int copies_out;       /* some op copies to host: completion copies it out */
    int64_t copied_until; /* copy.c: ops before this one were enqueued with an earlier copy */
    int checks;           /* some op can set err: wait() reads it */
    int collectives;      /* some op talks to peers: wait() polls its comms (comm.c) */
    int agreed;           /* the ranks agree on the collectives (cuda_comm_agree) */
    neat_status refusal;  /* or they do not: why the submissions are refused, */
    int64_t refusal_op;   /* the op it is about */
    char refusal_msg[NM_MSG_MAX];
} cuda_cmdbuf;

static inline cuda_device *cuda_dev(nm_device *dev) { return (cuda_device *)dev->impl; }
static inline cuda_cmdbuf *cuda_cb(nm_cmdbuf *cb) { return (cuda_cmdbuf *)cb->impl; }

/* Scratch memory of the op being enqueued, slot 0..CUDA_SLOTS-1: the same pointer at every
 * submission of the buffer (a graph replays it), held until cmdbuf_release. */
neat_status cuda_scratch(nm_cmdbuf *cb, int slot, size_t bytes, void **ptr);
/* The same, and a block new to the slot is zeroed on the stream (once: later submissions
 * find the slot's block and keep what the kernels left in it). */
neat_status cuda_scratch_zeroed(nm_device *dev, nm_cmdbuf *cb, int slot, size_t bytes, void **ptr);

/* The calling thread's current device (current_device.c): cuda_enter makes device `index` current
 * and gives the one it found in *prev (OK, or an nm_error naming fn and the call that
 * failed); cuda_leave(prev) makes that one current again. Every table entry that makes CUDA
 * calls on the application's thread is between the two, so the library never leaves the
 * thread on another device than it found it on (one exception: current_device.c). */
neat_status cuda_enter(int index, const char *fn, int *prev);
void cuda_leave(int prev);

/* Status mapping: each returns NEAT_OK or an nm_error naming `what` (the op) and the call. */
neat_status cuda_check(cudaError_t e, const char *what, const char *call);
neat_status cublas_check(cublasStatus_t s, const char *what, const char *call);
neat_status cudnn_check(cudnnStatus_t s, const char *what, const char *call);

/* Launchers shared between files (all enqueue on dev's stream and check the launch). */
/* elementwise.cu */
neat_status cuda_fill_f32(nm_device *dev, float *y, int64_t n, float value, const char *what);
neat_status cuda_scale_f32(nm_device *dev, const float *x, float alpha, float *y, int64_t n,
                           const char *what);
/* y[k] = x[k] for the count <= CUDA_COPY_LIST pairs of arrays of n[k] floats, in one kernel
 * (copy.c: a run of copies to the host; y may be mapped pinned host memory: a kernel node,
 * unlike a memcpy to the host, may sit in a conditional body of a graph). */
#define CUDA_COPY_LIST 8
neat_status cuda_copy_f32_list(nm_device *dev, int count, const float *const *x, float *const *y,
                               const int64_t *n, const char *what);
/* y[i] = act(y[i] + b[(i / inner) % channels]); b may be NULL (then channels is unused). */
neat_status cuda_bias_act(nm_device *dev, float *y, const float *b, int64_t n, int64_t inner,
                          int64_t channels, neat_activation act, const char *what);
/* dz = dy * act'(.) from the saved output y (relu, sigmoid, tanh) or the input x (gelu);
 * NONE copies dy. */
neat_status cuda_act_grad(nm_device *dev, neat_activation act, const float *x, const float *y,
                          const float *dy, float *dz, int64_t n, const char *what);
/* reduce.cu: y[o, i] = scale * sum_l x[o, l, i] (+ y[o, i] when accumulate), x seen as
 * [outer, len, inner]; deterministic. Uses scratch slots first_slot and first_slot + 1. */
neat_status cuda_sum3(nm_device *dev, nm_cmdbuf *cb, int first_slot, const float *x, int64_t outer,
                      int64_t len, int64_t inner, float scale, int accumulate, float *y,
                      const char *what);
/* matmul.cu: row-major c = alpha op(a) op(b) + beta c over `batch` matrices packed back to
 * back, with an optional cuBLASLt epilogue (bias of n floats added to each row of c). */
neat_status cuda_gemm(nm_device *dev, neat_math_mode math, int trans_a, int trans_b, int64_t batch,
                      int64_t m, int64_t n, int64_t k, float alpha, const float *a, const float *b,
                      float beta, float *c, cublasLtEpilogue_t epilogue, const float *bias,
                      const char *what);

/* The same with a and b of type ab and c of type ct (ab f32 needs ct f32); a bias is of
 * type ct (cuBLASLt's rule for 16-bit outputs). Half inputs run CUBLAS_COMPUTE_32F (exact
 * products, float32 sums) whatever the math mode. */
neat_status cuda_gemm_typed(nm_device *dev, neat_math_mode math, int trans_a, int trans_b,
                            int64_t batch, int64_t m, int64_t n, int64_t k, float alpha,
                            const void *a, const void *b, neat_dtype ab, float beta, void *c,
                            neat_dtype ct, cublasLtEpilogue_t epilogue, const void *bias,
                            const char *what);
/* The same, and for a bias-gradient epilogue (BGRADA/B; bias: where db is written) *ran = 0
 * where cuBLASLt has no algorithm for it or refuses it: nothing was enqueued and the caller
 * sums db itself (or, under NEATML_LINEAR_BGRAD=2, the op's BACKEND_ERROR). */
neat_status cuda_gemm_try(nm_device *dev, neat_math_mode math, int trans_a, int trans_b,
                          int64_t batch, int64_t m, int64_t n, int64_t k, float alpha,
                          const void *a, const void *b, neat_dtype ab, float beta, void *c,
                          neat_dtype ct, cublasLtEpilogue_t epilogue, const void *bias, int *ran,
                          const char *what);
/* NEATML_LINEAR_BGRAD as read at the device's first GEMM: 0 never fuse db into the dw GEMM,
 * 1 fuse or fall back, 2 fuse or fail. */
neat_status cuda_linear_bgrad_mode(nm_device *dev, int *mode, const char *what);

/* gemm_small.cu: row-major c [m, n] = act(alpha a [m, k] b^T + bias), b stored [n, k],
 * over `batch` products packed back to back, float32 products and sums, one kernel; for
 * small GEMMs that matmul.cu's tuning finds it faster on (fits: trans_a 0, trans_b 1,
 * float32, k % 4 == 0, small, an epilogue of bias, relu and gelu). */
int cuda_small_gemm_fits(int64_t batch, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         int f32, cublasLtEpilogue_t epilogue);
neat_status cuda_small_gemm(nm_device *dev, int64_t batch, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, const float *b, const float *bias,
                            float *c, cublasLtEpilogue_t epilogue, const char *what);

/* conv_gemm.cu: dw = conv_bwd_filter(x, dz) (+ beta dw) for one group in strict float32
 * through im2col and a batched cuBLASLt GEMM; ws holds cuda_conv_gemm_wgrad_ws(g) bytes. */
size_t cuda_conv_gemm_wgrad_ws(const nm_conv_geom *g);
/* conv_gemm.cu: the same by a direct kernel for 3x3 stride-1 convolutions on small planes;
 * its workspace size, SIZE_MAX where it does not apply. */
size_t cuda_conv_direct_wgrad_ws(const nm_conv_geom *g);
neat_status cuda_conv_direct_wgrad(nm_device *dev, const nm_conv_geom *g, const float *x,
                                   const float *dz, float beta, float *dw, void *ws,
                                   const char *what);
neat_status cuda_conv_gemm_wgrad(nm_device *dev, const nm_conv_geom *g, const float *x,
                                 const float *dz, float beta, float *dw, void *ws,
                                 const char *what);

/* conv_small.cu: 3x3 stride-1 convolutions of one group and 1 to 4 input channels
 * (cuda_conv_small_fits), float32 with any activation (the backward: not gelu) and bf16/f16
 * with relu or none (cuda_conv_small_act): the forward with bias (b may be NULL) and
 * activation in one pass; the backward without dx, act' (from y) taken on the fly, dw and db
 * (db may be NULL) from one pass over dy and y (+ beta dw, beta db); ws holds
 * cuda_conv_small_backward_ws(g) bytes. */
int cuda_conv_small_fits(const nm_conv_geom *g);
int cuda_conv_small_act(neat_dtype dt, neat_activation act, int backward);
neat_status cuda_conv_small_forward(nm_device *dev, const nm_conv_geom *g, neat_dtype dt,
                                    neat_activation act, const void *x, const void *w,
                                    const void *b, void *y, const char *what);
size_t cuda_conv_small_backward_ws(const nm_conv_geom *g);
neat_status cuda_conv_small_backward(nm_device *dev, const nm_conv_geom *g, neat_dtype dt,
                                     neat_activation act, const void *x, const void *y,
                                     const void *dy, float beta, void *dw, void *db, void *ws,
                                     const char *what);

/* half.cu: which ops take half tensors natively; cuda_run_op runs any op (the others on
 * float32 copies of their half tensors); cuda_run_f32_copies runs an op on the float32 copies
 * whatever cuda_native_half says (a native op's own fallback: conv.cu). */
int cuda_native_half(const nm_op *op);
neat_status cuda_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);
neat_status cuda_run_f32_copies(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);
/* y[i] = value rounded to dt, i < n. */
neat_status cuda_fill_typed(nm_device *dev, neat_dtype dt, void *y, int64_t n, float value,
                            const char *what);
/* y[i] = act(z[i] + beta y[i] + b[(i / inner) % channels]) rounded once to yt; z (float32)
 * and b (of type bt) may be NULL; y is not read when beta is 0. */
neat_status cuda_half_epilogue(nm_device *dev, neat_dtype yt, void *y, const float *z, float beta,
                               neat_dtype bt, const void *b, int64_t n, int64_t inner,
                               int64_t channels, neat_activation act, const char *what);
/* dz = y > 0 ? dy : 0 (relu's gradient; exact in every type). */
neat_status cuda_half_relu_grad(nm_device *dev, neat_dtype dt, const void *y, const void *dy,
                                void *dz, int64_t n, const char *what);
/* reduce.cu: db[c] = sum_o sum_i z[o, c, i] (+ db[c] when accumulate), z seen as [outer,
 * channels, inner] of type dt, db of type dt; float32 sums, one rounding; deterministic.
 * Uses scratch slots first_slot to first_slot + 4 (first_slot and + 1 when inner is 1). */
neat_status cuda_half_channel_sum(nm_device *dev, nm_cmdbuf *cb, int first_slot, neat_dtype dt,
                                  const void *z, int64_t outer, int64_t channels, int64_t inner,
                                  int accumulate, void *db, const char *what);

/* copy.c: staging of the recorded host copies (cmdbuf_state allocates, release frees);
 * stage copies src in at commit; finish copies staged results out at completion. */
neat_status cuda_host_copies_init(nm_cmdbuf *cb, cuda_cmdbuf *c);
void cuda_host_copies_free(nm_cmdbuf *cb, cuda_cmdbuf *c);
/* The pinned staging blocks kept by released buffers, freed (the device is idle: close). */
void cuda_pinned_free_all(cuda_device *d);
neat_status cuda_stage_host_copies(nm_cmdbuf *cb, cuda_cmdbuf *c);
void cuda_finish_host_copies(nm_cmdbuf *cb, int64_t until); /* ops [0, until) ran */
/* Issue the copies that run ahead on upload_stream and make the stream wait for them;
 * *issued = 1 once one was issued. d->lock and dev->lock held. */
neat_status cuda_upload_ahead(nm_device *dev, nm_cmdbuf *cb, int *issued);
/* backend.c: the `done` event of submission seq while it is in flight, else NULL (it
 * completed). d->lock held. */
cudaEvent_t cuda_sub_done(cuda_device *d, uint64_t seq);

/* guard.cu: before an op that must not run after a failed one: eager, wait and read the
 * record (*stop = 1: enqueue nothing more); capturing, open a conditional body. */
neat_status cuda_guard(nm_device *dev, nm_cmdbuf *cb, int capturing, int *stop);
/* End every open body's capture and point d->stream back at the main stream. */
neat_status cuda_guards_close(nm_device *dev);
/* After a submission's work on the main stream: copy cb's error record to `record` (pinned,
 * mapped host memory of CUDA_ERR_WORDS ints) and clear it, in one kernel. */
/* During a capture (node not NULL): *node is the graph node it added (c->take_node); before
 * each launch cuda_set_take_record points it at that submission's snapshot (the exec's node
 * parameters: launches in flight keep theirs). */
neat_status cuda_take_error_record(nm_device *dev, nm_cmdbuf *cb, int *record,
                                   cudaGraphNode_t *node);
neat_status cuda_set_take_record(nm_device *dev, nm_cmdbuf *cb, int *record);

/* comm.c: collectives on NCCL (the table's comm entries and ops). cuda_comm_wait: wait
 * for ev while polling the NCCL comms of cb's collectives (async errors, timeouts). */
neat_status cuda_comm_id_create(neat_comm_id *id);
neat_status cuda_comm_create(nm_comm *comm, const neat_comm_id *id);
neat_status cuda_comm_create_all(int n, nm_comm *const *comms);
void cuda_comm_destroy(nm_comm *comm);
cudaError_t cuda_comm_wait(nm_device *dev, cudaEvent_t ev, nm_cmdbuf *cb);
/* Before a buffer's first run: one exchange per comm of its collectives, so that every rank
 * finds the same answer: OK, SHAPE_MISMATCH (the ranks recorded different collectives: the
 * op it is about in *op_index), TIMEOUT or BACKEND_ERROR (the comm is then broken). */
neat_status cuda_comm_agree(nm_device *dev, nm_cmdbuf *cb, int64_t *op_index);

/* bucket.cu: copy the tensors of a neat_all_reduce_bucket op into packed (pack = 1), back
 * to back in list order, or from packed into them (pack = 0), on dev's stream. */
neat_status cuda_bucket_copy(nm_device *dev, const nm_op *op, float *packed, int pack);

/* Backend limits, checked when an op is recorded (cuda_op_check in backend.c): each answers
 * UNSUPPORTED naming the op exactly when the op's run would reach a size that its kernel or
 * vendor library cannot take, and OK otherwise (a zero-size op that returns before it, a path
 * that does not take that size). Each sits beside the code whose conditions it mirrors; that
 * code keeps its own check as a backstop. matmul.cu: a batch past cuBLASLt's int32. */
neat_status cuda_matmul_check(const nm_op *op);
/* conv.cu: a size past cuDNN's int where the op reaches a cuDNN plan (conv_plan.cu:
 * cuda_conv_dims_fit, the check itself, which plan creation makes too). */
neat_status cuda_conv2d_check(nm_device *dev, const nm_op *op);
neat_status cuda_conv_dims_fit(const nm_conv_geom *g, const char *what);
/* pool.cu: an H*W plane past int32 where the backward takes its general path (argmax). */
neat_status cuda_maxpool2d_backward_check(const nm_op *op);
/* reduce.cu: a sum whose first level of row sums would launch 2^31 blocks or more. */
neat_status cuda_sum_check(const nm_op *op);

/* Caches: created lazily, released by device_close. */
void cuda_matmul_cache_free(cuda_device *d);
void cuda_conv_cache_free(cuda_device *d);

/* Op entry points (op_list.h; the table in backend.c): cuda_<name> for every entry. */
NM_DECLARE_OPS_WITH_COLLECTIVES(cuda)

#ifdef __cplusplus
}
#endif

#endif
