/*
 * neatml.h — the one public header of neatml, a C library of neural-network primitives
 * that runs each operation on the hardware vendor's own optimized primitives
 * (oneDNN + own loops on CPUs, cuBLASLt/cuDNN + own kernels on NVIDIA GPUs).
 *
 * Conventions (docs/API.md has the long form: execution, lifetimes, threads, errors, memory,
 * the semantics and accuracy of every op; CHANGES.md lists what changed between versions):
 * - Every fallible call returns a neat_status: NEAT_OK (0) or a negative error code.
 *   neat_last_error() then holds a per-thread message naming the call, the argument and the
 *   shapes. The library never aborts, exits or prints.
 * - Arguments are validated before any side effect: a call that fails touched no output.
 * - Handles are opaque. Destroy functions accept NULL. A destroyed handle passed again is
 *   answered NEAT_ERR_INVALID_HANDLE (handles carry a generation counter), never undefined
 *   behaviour inside the library.
 * - Tensors are float32, row-major, 0 to 4 dimensions of int64_t sizes; images are NCHW.
 *   Zero-size tensors are valid; ops on them succeed and compute nothing.
 * - Operations are recorded into a command buffer and run when it is committed. Recording
 *   validates everything; commit and wait report only what can happen at run time
 *   (a tensor destroyed since recording, an out-of-range label, a device failure).
 * - Unless an op says otherwise, an output must not share memory with an input; the
 *   elementwise ops (add, mul, scale, activation_forward, softmax) may run in place.
 *
 * Threads. Every call may be made from any thread, and calls on different devices run
 * concurrently. On one device, threads may record, commit, wait, copy and destroy at once,
 * also on one command buffer (its calls are serialised); no call waits for the device
 * except neat_cmdbuf_wait, neat_cmdbuf_reset, neat_device_synchronize, neat_tensor_write/
 * read (which wait only for the submissions that use that tensor), neat_tensor_create_zeros,
 * neat_comm_create and neat_comm_destroy (the peers), neat_device_destroy, and on CUDA
 * neat_device_trim (cudaFree waits for the device) and the first neat_cmdbuf_commit of a
 * buffer with collectives (the peers: see the collectives section). A committed submission
 * holds every tensor it uses: destroying one while it runs is safe (the memory returns to
 * the pool when the work completes). Two rules remain the caller's: neat_device_destroy
 * must not overlap any other call on the device or its objects, and an object must not be
 * destroyed while another thread is inside a call that takes it (after destroy returns, a
 * use is INVALID_HANDLE as always). On CUDA every call leaves the calling thread's current
 * device (cudaGetDevice) as it found it, unless that device had no CUDA context yet (see
 * docs/API.md, "Threads"); the library runs no thread of its own on CUDA.
 *
 * Failures at run time. An op that fails while its buffer runs (an out-of-range label,
 * an invalid learning rate, memory for its scratch) stops the rest of that submission: the
 * ops before it have run, it and the ops after it left their outputs untouched. wait (or
 * synchronize) reports the first such failure as "<function> (op <i> of <n> in the command
 * buffer): <why>", i counting from 0 in recording order, the same on every backend. One
 * exception: collectives (neat_all_reduce...) still run after a failure, so that the other
 * ranks are not left waiting for this one; their results then mean nothing. The buffer
 * stays committed: once the cause is fixed (a label rewritten), committing it again
 * replays every op.
 */
#ifndef NEATML_H
#define NEATML_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(NEATML_BUILDING)
#define NEAT_API __declspec(dllexport)
#elif defined(__GNUC__)
#define NEAT_API __attribute__((visibility("default")))
#else
#define NEAT_API
#endif

/* ---- version ------------------------------------------------------------------------- */

#define NEAT_VERSION_MAJOR 0
#define NEAT_VERSION_MINOR 2
#define NEAT_VERSION_PATCH 0
#define NEAT_VERSION_NUMBER                                                                        \
    (NEAT_VERSION_MAJOR * 10000 + NEAT_VERSION_MINOR * 100 + NEAT_VERSION_PATCH)

/* The version of the library actually linked, as NEAT_VERSION_NUMBER computes it: a binding
 * compares the two to catch a header/library mismatch. */
NEAT_API int neat_version_number(void);

/* ---- status and errors ------------------------------------------------------------- */

typedef enum neat_status {
    NEAT_OK = 0,
    NEAT_ERR_INVALID_ARGUMENT = -1, /* a NULL, a negative size, a bad option value */
    NEAT_ERR_SHAPE_MISMATCH = -2,   /* shapes that do not fit together */
    NEAT_ERR_DTYPE_MISMATCH = -3,   /* element types an op does not take together */
    NEAT_ERR_DEVICE_MISMATCH = -4,  /* tensors or command buffer of different devices */
    NEAT_ERR_UNSUPPORTED = -5,      /* the backend lacks the op, or was not built */
    NEAT_ERR_OUT_OF_MEMORY = -6,
    NEAT_ERR_INVALID_HANDLE = -7, /* a destroyed or foreign handle */
    NEAT_ERR_BACKEND_ERROR = -8,  /* the vendor library or the driver failed */
    NEAT_ERR_INTERNAL = -9,
    NEAT_ERR_TIMEOUT = -10 /* a collective's peers did not answer in time (comm) */
} neat_status;

/* The name of a status, e.g. "NEAT_ERR_SHAPE_MISMATCH"; "unknown status" for other values. */
NEAT_API const char *neat_status_string(neat_status status);

/* The message of the last failed call on this thread, e.g.
 * "neat_matmul: a is 2x5, b is 3x7: inner dimensions 5 and 3 differ"; "" if none.
 * Valid until the next failing call on this thread. */
NEAT_API const char *neat_last_error(void);

/* ---- device -------------------------------------------------------------------------- */

typedef struct neat_device neat_device;
typedef struct neat_tensor neat_tensor;
typedef struct neat_cmdbuf neat_cmdbuf;

typedef enum neat_backend {
    NEAT_BACKEND_AUTO = 0, /* the best available: CUDA, then Metal, then CPU */
    NEAT_BACKEND_CPU = 1,
    NEAT_BACKEND_CUDA = 2,
    NEAT_BACKEND_METAL = 3
} neat_backend;

typedef enum neat_math_mode {
    NEAT_MATH_STRICT = 0, /* float32 products and sums (the default; no FFT or Winograd) */
    NEAT_MATH_TF32 = 1    /* allow TensorFloat-32 products where the hardware has them */
} neat_math_mode;

typedef struct neat_device_props {
    neat_backend backend; /* never AUTO */
    int index;            /* which device of that backend */
    char name[128];       /* "NVIDIA H100 80GB HBM3", "Intel(R) Xeon(R) ..." */
    int64_t total_memory; /* bytes the device has (host RAM for the CPU) */
    int num_threads;      /* CPU: OpenMP threads of its ops; GPU: multiprocessors */
    neat_math_mode math_mode;
    char selection[256]; /* opened by AUTO: why each backend tried before this one did
                               not open, e.g. "cuda: neat_device_create: no CUDA device:
                               none found"; "" otherwise */
} neat_device_props;

typedef struct neat_memory_stats {
    int64_t in_use;   /* bytes held by live tensors and running command buffers */
    int64_t reserved; /* bytes taken from the system: in use plus cached for reuse */
    int64_t peak;     /* highest in_use since creation or neat_device_reset_peak */
    int64_t limit;    /* reserved never exceeds it (neat_device_set_memory_limit) */
} neat_memory_stats;

/* The backend's name: "auto", "cpu", "cuda", "metal"; NULL for a value that is not a
 * neat_backend (so `for (b = 1; neat_backend_name(b); b++)` visits every backend). */
NEAT_API const char *neat_backend_name(neat_backend backend);

/* The backend of a name as neat_backend_name gives it (any case). Returns INVALID_ARGUMENT
 * (NULL, or an unknown name: the message lists the known ones). */
NEAT_API neat_status neat_backend_from_name(const char *name, neat_backend *out);

/* 1 when the backend was built into this library (it may still find no device), else 0.
 * AUTO counts as built. */
NEAT_API int neat_backend_is_built(neat_backend backend);

/* Open device `index` of `backend`. AUTO takes the first backend that opens, in the order
 * CUDA, Metal, CPU (the CPU has only device 0; neat_device_props.selection says why the ones
 * before it did not open), or the one the environment variable NEATML_BACKEND names
 * ("cpu", "cuda", "metal", "auto"). On the CPU, the environment variable
 * NEATML_NUM_THREADS sets the thread count.
 * Returns INVALID_ARGUMENT (bad enum, NULL out, negative index, bad NEATML_BACKEND),
 * UNSUPPORTED (backend not built, or no such device), BACKEND_ERROR, OUT_OF_MEMORY. */
NEAT_API neat_status neat_device_create(neat_backend backend, int index, neat_device **out);

/* Wait for the device's work, then release it. Tensors and command buffers of the device
 * must be destroyed first; those left are released with it (their handles become invalid). */
NEAT_API void neat_device_destroy(neat_device *dev);

/* Describe the device. Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_device_info(const neat_device *dev, neat_device_props *out);

/* Strict float32 (default) or TF32 for later recorded matmul/linear/conv work.
 * Command buffers recorded before the change keep the mode they were recorded with.
 * Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_device_set_math_mode(neat_device *dev, neat_math_mode mode);

/* Block until every committed command buffer of the device has completed. Returns the
 * first failure of an op (see "Failures at run time" above) that no neat_cmdbuf_wait has
 * reported yet, and clears it; or BACKEND_ERROR for a failure of the device itself. */
NEAT_API neat_status neat_device_synchronize(neat_device *dev);

/* Memory of the device's caching pool. Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_device_memory_stats(const neat_device *dev, neat_memory_stats *out);

/* Set peak to the current in_use. Returns INVALID_HANDLE. */
NEAT_API neat_status neat_device_reset_peak(neat_device *dev);

/* Give the pool's cached (unused) memory back to the system. Returns INVALID_HANDLE. */
NEAT_API neat_status neat_device_trim(neat_device *dev);

/* Cap the memory the device's pool may take from the system (tensors, scratch and cache
 * together); 0 restores the default: what the OS (cgroup limits included) or the driver
 * reported free when the device was opened. An allocation past the limit first gives the
 * cache back, then fails with OUT_OF_MEMORY: at creation for tensors; for the scratch an
 * op takes the first time its buffer runs, naming the op, at neat_cmdbuf_wait on the CPU
 * and at neat_cmdbuf_commit on CUDA (which sets up a buffer when it is first committed).
 * A limit below what is in use already only stops further growth. Returns INVALID_ARGUMENT
 * (negative), INVALID_HANDLE. */
NEAT_API neat_status neat_device_set_memory_limit(neat_device *dev, int64_t bytes);

/* ---- tensors ------------------------------------------------------------------------- */

#define NEAT_MAX_DIMS 4

/* Element types. A tensor holds float32 (the default), bfloat16 or IEEE float16. The half
 * types are storage formats: every op computes in float32 (products and reductions
 * accumulate in float32) and rounds its result once to the output's type (to nearest,
 * ties to even). Which ops take which types (checked when an op is recorded):
 *   - neat_cast: any type to any type;
 *   - neat_matmul(_batched), neat_linear_forward, neat_conv2d_forward: inputs (and b) of one
 *     type; the output of that type or float32;
 *   - the optimizers: float32 (neat_sgd_update, neat_adam_update); their mixed forms
 *     (neat_sgd_update_mixed, neat_adam_update_mixed) keep float32 master weights and state
 *     and take grad and param of any type; the loss-scale ops: a float32 scaler, the
 *     other tensors of any type (neat_loss_scale: x and y of one type);
 *   - the recorded host copies (neat_copy_from_host/to_host) and the collectives: float32
 *     only;
 *   - every other op: all its tensors of one type.
 * Anything else is DTYPE_MISMATCH, with a message naming each tensor's type. A backend may
 * run fewer (UNSUPPORTED with a message when recorded): the CPU and CUDA run float32
 * everywhere, and in bf16 and f16 every op but the losses (class indices as half labels
 * would be exact only up to 256 or 2048) and the float32-only ones above. The mixed
 * optimizers and the loss-scale ops convert element by element in their one pass on both.
 * The CPU runs the other ops on float32 copies of the half tensors, each output rounded
 * once (a backward op that accumulates adds in float32 and rounds the sum once), except on
 * a CPU with bf16 instructions (AVX512_BF16 or AMX; NEATML_CPU_BF16, docs/API.md): there
 * bf16 matmul(_batched), linear forward and conv forward, and linear and conv backward
 * without activation or with relu, run on oneDNN's bf16 kernels (exact products, float32
 * sums, possibly in another order than the float32 op's; one rounding). CUDA runs in half
 * directly: neat_cast, the elementwise ops, activations, maxpool, softmax and sums (half
 * storage, float32 math), matmul(_batched) and linear forward (cuBLASLt on the tensor
 * cores: 16-bit products are exact and sums float32, in any math mode), linear and conv
 * backward without activation or with relu, conv forward into
 * a half output without activation or with relu (cuDNN; a bias added by its fused call
 * before the rounding); the layer ops with another activation or a float32 output on
 * float32 copies as the CPU (and a biased conv where cuDNN refuses the fused call). Half
 * results on CUDA are rounded once too, but its float32 sums may run in another order than
 * the float32 op's. Metal runs float32 and f16, and no op on bf16 tensors (MPS has no
 * bfloat16 type in the macOS 12 SDK it builds against; a fill with +0 is all it runs there,
 * what neat_tensor_create_typed's zero needs): in f16 the CPU's ops, on float32 copies as
 * the CPU (MPSGraph casts; each output rounded once), and natively neat_cast, the mixed
 * optimizers and the loss-scale ops. */
typedef enum neat_dtype { NEAT_F32 = 0, NEAT_BF16 = 1, NEAT_F16 = 2 } neat_dtype;

/* Bytes per element of dtype (4, 2, 2); 0 for a value outside neat_dtype. */
NEAT_API size_t neat_dtype_size(neat_dtype dtype);

/* "f32", "bf16", "f16"; "unknown dtype" for other values. */
NEAT_API const char *neat_dtype_name(neat_dtype dtype);

/* A float32 tensor of `ndim` (0..4) dimensions, contents undefined: memory of the pool is
 * reused, so a new tensor can hold an old one's values (neat_tensor_create_zeros gives
 * zeros). shape may be NULL when ndim is 0 (a scalar). Returns INVALID_ARGUMENT (NULL, ndim
 * out of range, negative size, byte count overflow), INVALID_HANDLE, OUT_OF_MEMORY. */
NEAT_API neat_status neat_tensor_create(neat_device *dev, int ndim, const int64_t *shape,
                                        neat_tensor **out);

/* The same, with every element 0. Use it (or neat_fill) for state an op reads before it
 * writes: optimizer moments, accumulated gradients. Returns as neat_tensor_create. */
NEAT_API neat_status neat_tensor_create_zeros(neat_device *dev, int ndim, const int64_t *shape,
                                              neat_tensor **out);

/* A tensor of element type dtype; zero != 0 sets every element to 0 (as
 * neat_tensor_create_zeros), zero == 0 leaves it undefined (as neat_tensor_create).
 * Returns as neat_tensor_create, and INVALID_ARGUMENT for a dtype outside neat_dtype or
 * zero other than 0 and 1. */
NEAT_API neat_status neat_tensor_create_typed(neat_device *dev, neat_dtype dtype, int ndim,
                                              const int64_t *shape, int zero, neat_tensor **out);

/* The element type of t. Views keep their tensor's type. Returns INVALID_ARGUMENT,
 * INVALID_HANDLE. */
NEAT_API neat_status neat_tensor_dtype(const neat_tensor *t, neat_dtype *dtype);

/* A rows x cols tensor: neat_tensor_create with ndim 2. */
NEAT_API neat_status neat_matrix_create(neat_device *dev, int64_t rows, int64_t cols,
                                        neat_tensor **out);

/* A new handle on the same memory with another shape of the same element count (e.g. the
 * [N,64,7,7] output of a conv seen as [N,3136] by a linear layer). The memory lives until
 * the last handle on it is destroyed. Returns INVALID_ARGUMENT, SHAPE_MISMATCH,
 * INVALID_HANDLE, OUT_OF_MEMORY. */
NEAT_API neat_status neat_tensor_view(neat_tensor *t, int ndim, const int64_t *shape,
                                      neat_tensor **out);

/* Release a tensor handle (and its memory when no view remains). Never waits: a committed
 * buffer that still uses the tensor keeps its memory until that work completes, so memory
 * is never reused under running work. NULL and invalid handles are ignored. */
NEAT_API void neat_tensor_destroy(neat_tensor *t);

/* Number of dimensions and sizes (shape must hold 4). Returns INVALID_ARGUMENT,
 * INVALID_HANDLE. */
NEAT_API neat_status neat_tensor_shape(const neat_tensor *t, int *ndim, int64_t shape[4]);

/* Element count. Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_tensor_numel(const neat_tensor *t, int64_t *numel);

/* Copy `count` floats from host memory into the tensor (converted to its type: to nearest,
 * ties to even; NaN stays NaN, infinities stay infinite, and a finite value beyond the
 * type's range becomes an infinity: |x| >= 65520 for f16), once the committed submissions that
 * use the tensor have completed (it waits for those, not for the rest of the device's
 * work). count must equal the element count (src may be NULL when it is 0). A buffer
 * committed by another thread while the copy runs must not use the tensor.
 * Returns INVALID_ARGUMENT, SHAPE_MISMATCH, INVALID_HANDLE, BACKEND_ERROR. */
NEAT_API neat_status neat_tensor_write(neat_tensor *t, const float *src, int64_t count);

/* Copy the tensor into host memory, once the committed submissions that use it have
 * completed. Same rules and statuses as neat_tensor_write. */
NEAT_API neat_status neat_tensor_read(const neat_tensor *t, float *dst, int64_t count);

/* Copy the tensor's bytes unconverted (bf16 and f16 as their uint16_t bit patterns, in the
 * host's byte order): bytes must equal numel * neat_dtype_size(dtype). Otherwise as
 * neat_tensor_write and neat_tensor_read; SHAPE_MISMATCH when bytes differs. */
NEAT_API neat_status neat_tensor_write_raw(neat_tensor *t, const void *src, size_t bytes);
NEAT_API neat_status neat_tensor_read_raw(const neat_tensor *t, void *dst, size_t bytes);

/* ---- command buffers ----------------------------------------------------------------- */

/* An empty command buffer of the device. Returns INVALID_ARGUMENT, INVALID_HANDLE,
 * OUT_OF_MEMORY. */
NEAT_API neat_status neat_cmdbuf_create(neat_device *dev, neat_cmdbuf **out);

/* Release the buffer. Never waits: work it has submitted runs to completion and its
 * memory is released then; a failure of that work is no longer reported. NULL is
 * ignored. */
NEAT_API void neat_cmdbuf_destroy(neat_cmdbuf *cb);

/* Submit the recorded ops and return at once; they run in order after everything committed
 * earlier on the device. Committing again replays the same ops on the tensors' current
 * contents (on CUDA the second commit captures a CUDA graph and later commits launch it).
 * A buffer still running may be committed again: the replay queues behind it. Once
 * committed, a buffer takes no more ops until neat_cmdbuf_reset. On CUDA the first commit
 * of a buffer with collectives waits for the peers and the device's earlier work (the ranks
 * compare what they recorded once per buffer: see the collectives section).
 * Returns INVALID_HANDLE (the buffer, or a tensor recorded in it, was destroyed),
 * BACKEND_ERROR, OUT_OF_MEMORY. */
NEAT_API neat_status neat_cmdbuf_commit(neat_cmdbuf *cb);

/* Block until every submission of the buffer has completed and report the first failure
 * among them (status and message, see "Failures at run time"), then forget it: a second
 * wait returns OK. Returns OK at once for a buffer never committed. Under
 * NEATML_DEBUG_POOL=1 it also returns INTERNAL when memory past a tensor's end was
 * written. */
NEAT_API neat_status neat_cmdbuf_wait(neat_cmdbuf *cb);

/* Wait for the buffer, then drop its ops so that it records anew. Returns INVALID_HANDLE
 * and any failure wait would report. */
NEAT_API neat_status neat_cmdbuf_reset(neat_cmdbuf *cb);

/* Number of ops recorded. Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_cmdbuf_op_count(const neat_cmdbuf *cb, int64_t *count);

/* Time, in seconds, that the device spent on the buffer's latest completed submission, from
 * the start of its first op to the end of its last: on CUDA measured with device events
 * recorded around the submission on the stream (a queue wait before it is not counted); on
 * the CPU the worker thread's clock around the ops. Read it after neat_cmdbuf_wait; a
 * benchmark's timer. Before that wait it may already hold a completed submission's time,
 * set when the backend saw it end (the CPU's worker, Metal's completion handler, on CUDA
 * any call of the device that finds it done), or an earlier one's. Returns INVALID_ARGUMENT
 * (seconds NULL, or no submission has completed since the buffer was created or reset),
 * INVALID_HANDLE. */
NEAT_API neat_status neat_cmdbuf_device_time(const neat_cmdbuf *cb, double *seconds);

/* ---- host copies inside a command buffer ---------------------------------------------
 * A training loop feeds its batch and reads its loss with these, recorded into the step's
 * buffer, so that no call waits for the device but the step's own neat_cmdbuf_wait. The
 * host memory must stay valid for as long as the buffer may be committed. */

/* Record a copy of `count` floats (t's element count) from host memory into t. src is read
 * during neat_cmdbuf_commit, every commit again: once commit returns, the caller may refill
 * src (the next batch) while the device runs. Returns the common statuses of the ops below;
 * SHAPE_MISMATCH when count is not t's element count; INVALID_ARGUMENT for a NULL src
 * (allowed when count is 0). */
NEAT_API neat_status neat_copy_from_host(neat_cmdbuf *cb, const float *src, int64_t count,
                                         neat_tensor *t);

/* Record a copy of t (`count` floats, its element count) into host memory dst, written when
 * the op runs: dst holds the tensor's value at that point of the buffer once
 * neat_cmdbuf_wait returns, until a later submission of the buffer writes it again. With a
 * later submission in flight dst may be being written (on CUDA from the staging copy that
 * submission's op fills): read dst before committing the buffer again, or after waiting for
 * the later one. Not written when an earlier op of the submission failed. Same statuses as
 * neat_copy_from_host. */
NEAT_API neat_status neat_copy_to_host(neat_cmdbuf *cb, const neat_tensor *t, float *dst,
                                       int64_t count);

/* ---- operations: common rules --------------------------------------------------------
 * Arguments come in one order: cb, then the descriptor and the activation (options that
 * decide what the op computes), then input tensors, then output tensors, then scalars and
 * flags. A tensor argument may be NULL only where its op says "NULL:"; every other NULL is
 * INVALID_ARGUMENT. A tensor an op does not read (the "ignored" ones below) is still
 * checked when given, but not kept: destroying it later does not fail the commit.
 * Every op below records into `cb` and returns:
 *   INVALID_HANDLE    cb or a tensor is destroyed or not a handle of that kind;
 *   INVALID_ARGUMENT  a required pointer is NULL, an option is out of range, cb is already
 *                     committed (reset it first), or an output aliases an input;
 *   SHAPE_MISMATCH    shapes do not fit (the message gives them);
 *   DTYPE_MISMATCH    element types the op does not take together (see neat_dtype);
 *   DEVICE_MISMATCH   a tensor belongs to another device than cb;
 *   UNSUPPORTED       the device's backend lacks the op, or does not run it in these types;
 *   OUT_OF_MEMORY     recording needed memory and none was left.
 * Nothing is computed and no output is touched until the buffer is committed. */

typedef enum neat_activation {
    NEAT_ACT_NONE = 0,
    NEAT_ACT_RELU = 1,
    NEAT_ACT_SIGMOID = 2,
    NEAT_ACT_TANH = 3,
    NEAT_ACT_GELU = 4 /* tanh form: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))), as cuBLASLt's */
} neat_activation;

/* c = alpha * op(a) * op(b) + beta * c, with op(x) = x or its transpose (trans_* != 0).
 * op(a) is MxK, op(b) KxN, c MxN, all 2-D. When beta is 0, c's previous contents are not
 * read (a NaN there does not propagate). */
NEAT_API neat_status neat_matmul(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                                 neat_tensor *c, float alpha, float beta, int trans_a, int trans_b);

/* The same over a batch: a [B,..], b [B,..], c [B,M,N], all 3-D with the same B;
 * batch i computes c[i] = alpha * op(a[i]) * op(b[i]) + beta * c[i]. */
NEAT_API neat_status neat_matmul_batched(neat_cmdbuf *cb, const neat_tensor *a,
                                         const neat_tensor *b, neat_tensor *c, float alpha,
                                         float beta, int trans_a, int trans_b);

/* out = a + b. b has a's shape, or is a row of a's last dimension (shape [n] or [1,n])
 * added to every row. out has a's shape and may be a or b. */
NEAT_API neat_status neat_add(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                              neat_tensor *out);

/* out = a * b elementwise, with neat_add's shapes and broadcasting; out may be a or b. */
NEAT_API neat_status neat_mul(neat_cmdbuf *cb, const neat_tensor *a, const neat_tensor *b,
                              neat_tensor *out);

/* out = alpha * x, same shapes; out may be x. */
NEAT_API neat_status neat_scale(neat_cmdbuf *cb, const neat_tensor *x, float alpha,
                                neat_tensor *out);

/* y = x converted to y's element type (float32 math: to nearest, ties to even; NaN stays
 * NaN; f16 overflows to infinity). Any type to any type, same shapes; y may be x. */
NEAT_API neat_status neat_cast(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y);

/* Every element of t set to value. */
NEAT_API neat_status neat_fill(neat_cmdbuf *cb, neat_tensor *t, float value);

/* y = act(x * w^T + b): x [N,in], w [out,in], b [out], y [N,out]. NULL: b (no bias).
 * A NaN pre-activation stays NaN under every activation, fused relu included, on the CPU
 * and Metal, as in neat_activation_forward and PyTorch. On CUDA a fused relu (here and in
 * neat_conv2d_forward) may give 0 for it: cuBLASLt's and cuDNN's relu epilogues do in bf16,
 * and in float32 on some convolution engines. */
NEAT_API neat_status neat_linear_forward(neat_cmdbuf *cb, neat_activation act, const neat_tensor *x,
                                         const neat_tensor *w, const neat_tensor *b,
                                         neat_tensor *y);

/* Memory order of the images of conv2d and maxpool2d (a field of their descriptors). NCHW,
 * the default (0): x [N,C,H,W], filters [K,C/groups,kh,kw]. NHWC ("channels last"): x
 * [N,H,W,C], filters [K,kh,kw,C/groups], outputs [N,P,Q,K]; the same arithmetic, the
 * elements in another order (on CUDA, half convolutions run fastest on tensor cores in NHWC;
 * docs/API.md). A bias stays [K]. Every backend takes both. */
typedef enum neat_layout { NEAT_LAYOUT_NCHW = 0, NEAT_LAYOUT_NHWC = 1 } neat_layout;

typedef struct neat_conv2d_desc {
    int64_t kernel_h, kernel_w;     /* must equal the filter's two spatial sizes */
    int64_t stride_h, stride_w;     /* >= 1 */
    int64_t pad_h, pad_w;           /* >= 0 and smaller than the dilated kernel extent */
    int64_t dilation_h, dilation_w; /* >= 1 */
    int64_t groups;                 /* >= 1, divides C and K */
    neat_layout layout;             /* NEAT_LAYOUT_NCHW (0) or NEAT_LAYOUT_NHWC */
} neat_conv2d_desc;

/* A descriptor with the given kernel, the same stride and padding on both axes, dilation 1
 * and one group. Every field can be set with neat_conv2d_desc_full, or by name in C99:
 *   neat_conv2d_desc d = {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2,
 *                         .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1,
 *                         .groups = 32};
 * (a field left out is 0, which no field accepts but the paddings and the layout: set them
 * all). desc_make and desc_full give NCHW; set .layout after for NHWC. */
NEAT_API neat_conv2d_desc neat_conv2d_desc_make(int64_t kernel_h, int64_t kernel_w, int64_t stride,
                                                int64_t pad);

/* A descriptor with every field given, in the struct's order (layout NCHW). */
NEAT_API neat_conv2d_desc neat_conv2d_desc_full(int64_t kernel_h, int64_t kernel_w,
                                                int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                                int64_t pad_w, int64_t dilation_h,
                                                int64_t dilation_w, int64_t groups);

/* y = act(conv2d(x, w) + b): x [N,C,H,W], w [K,C/groups,kh,kw], b [K], y [N,K,P,Q] with
 * P = (H + 2 pad_h - dilation_h (kh-1) - 1) / stride_h + 1 (floor), Q alike (NHWC layout:
 * x [N,H,W,C], w [K,kh,kw,C/groups], y [N,P,Q,K]).
 * (A cross-correlation, as in every framework.) NULL: b (no bias). Zero sizes: N, K or C
 * (with groups dividing 0) may be 0, and H = 0 or W = 0 gives P = 0 or Q = 0; otherwise the
 * padded input must hold the dilated kernel. */
NEAT_API neat_status neat_conv2d_forward(neat_cmdbuf *cb, const neat_conv2d_desc *desc,
                                         neat_activation act, const neat_tensor *x,
                                         const neat_tensor *w, const neat_tensor *b,
                                         neat_tensor *y);

typedef struct neat_pool2d_desc {
    int64_t kernel_h, kernel_w; /* >= 1 */
    int64_t stride_h, stride_w; /* >= 1 */
    int64_t pad_h, pad_w;       /* >= 0 and at most half the kernel (padding is -inf) */
    neat_layout layout;         /* NEAT_LAYOUT_NCHW (0) or NEAT_LAYOUT_NHWC */
} neat_pool2d_desc;

/* A pooling descriptor: the same stride and padding on both axes, layout NCHW. */
NEAT_API neat_pool2d_desc neat_pool2d_desc_make(int64_t kernel_h, int64_t kernel_w, int64_t stride,
                                                int64_t pad);

/* A pooling descriptor with every field given, in the struct's order (layout NCHW). */
NEAT_API neat_pool2d_desc neat_pool2d_desc_full(int64_t kernel_h, int64_t kernel_w,
                                                int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                                int64_t pad_w);

/* y = max over each window: x [N,C,H,W], y [N,C,P,Q], P = (H + 2 pad_h - kh) / stride_h + 1
 * (floor), Q alike (NHWC layout: x [N,H,W,C], y [N,P,Q,C]). H = 0 or W = 0 gives P = 0 or
 * Q = 0; otherwise the padded input must hold the kernel. A NaN in a window gives NaN. */
NEAT_API neat_status neat_maxpool2d(neat_cmdbuf *cb, const neat_pool2d_desc *desc,
                                    const neat_tensor *x, neat_tensor *y);

/* y[0] = sum of every element of x; y has one element (any shape). Accumulated pairwise in
 * blocks: error <= (log2 n + 1) 2^-24 sum|x|. Deterministic: same input, same bits. */
NEAT_API neat_status neat_sum_all(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y);

/* Sum along dimension `axis` (0 <= axis < ndim): y has x's shape with that dimension
 * removed, or set to 1 (both lay out alike); a 1-D x gives y of shape [1]. Deterministic. */
NEAT_API neat_status neat_sum_axis(neat_cmdbuf *cb, const neat_tensor *x, int axis, neat_tensor *y);

/* y = softmax along the last dimension of x (max-subtracted: no overflow); y may be x. */
NEAT_API neat_status neat_softmax(neat_cmdbuf *cb, const neat_tensor *x, neat_tensor *y);

/* ---- training ------------------------------------------------------------------------ */

/* y = act(x) elementwise, same shapes; y may be x. */
NEAT_API neat_status neat_activation_forward(neat_cmdbuf *cb, neat_activation act,
                                             const neat_tensor *x, neat_tensor *y);

/* dx = dy * act'(x), all of one shape. relu, sigmoid and tanh read the saved output y;
 * gelu reads the input x; NONE copies dy. NULL: x for relu, sigmoid, tanh and none (ignored
 * if given); y for gelu and none (ignored if given). */
NEAT_API neat_status neat_activation_backward(neat_cmdbuf *cb, neat_activation act,
                                              const neat_tensor *x, const neat_tensor *y,
                                              const neat_tensor *dy, neat_tensor *dx);

/* Gradients of y = act(x w^T + b) from dy [N,out], with the shapes of neat_linear_forward:
 * dx [N,in], dw [out,in], db [out]. accumulate = 0 overwrites them, != 0 adds to their
 * contents. y is the forward's saved output, read for relu, sigmoid and tanh; for gelu the
 * pre-activation is recomputed from x, w and b.
 * NULL: b (no bias; read only for gelu, ignored otherwise); y for gelu and none (ignored
 * if given); each of dx, dw, db (not computed). */
NEAT_API neat_status neat_linear_backward(neat_cmdbuf *cb, neat_activation act,
                                          const neat_tensor *x, const neat_tensor *w,
                                          const neat_tensor *b, const neat_tensor *y,
                                          const neat_tensor *dy, neat_tensor *dx, neat_tensor *dw,
                                          neat_tensor *db, int accumulate);

/* Gradients of y = act(conv2d(x, w) + b) from dy [N,K,P,Q] (NHWC: [N,P,Q,K]), shapes as
 * neat_conv2d_forward, same rules as neat_linear_backward for act, y, b, NULL and
 * accumulate. */
NEAT_API neat_status neat_conv2d_backward(neat_cmdbuf *cb, const neat_conv2d_desc *desc,
                                          neat_activation act, const neat_tensor *x,
                                          const neat_tensor *w, const neat_tensor *b,
                                          const neat_tensor *y, const neat_tensor *dy,
                                          neat_tensor *dx, neat_tensor *dw, neat_tensor *db,
                                          int accumulate);

/* dx = gradient of maxpool2d: each dy element goes to the first maximum of its window in x
 * (windows that overlap add up). x, dx [N,C,H,W]; dy [N,C,P,Q] (NHWC: [N,H,W,C] and
 * [N,P,Q,C]). dx is overwritten. */
NEAT_API neat_status neat_maxpool2d_backward(neat_cmdbuf *cb, const neat_pool2d_desc *desc,
                                             const neat_tensor *x, const neat_tensor *dy,
                                             neat_tensor *dx);

/* dx = y * (dy - sum(dy * y)) along the last dimension; y is softmax's output. */
NEAT_API neat_status neat_softmax_backward(neat_cmdbuf *cb, const neat_tensor *y,
                                           const neat_tensor *dy, neat_tensor *dx);

/* loss[0] = mean over rows of -log softmax(logits)[label]: logits [N,C]; labels [N] holds
 * class indices as floats (exact integers 0..C-1); loss has one element. A label out of
 * range is reported by neat_cmdbuf_wait as INVALID_ARGUMENT. For N = 0 the loss is 0. */
NEAT_API neat_status neat_softmax_cross_entropy(neat_cmdbuf *cb, const neat_tensor *logits,
                                                const neat_tensor *labels, neat_tensor *loss);

/* dlogits = (softmax(logits) - onehot(labels)) / N: the gradient of the mean loss above. */
NEAT_API neat_status neat_softmax_cross_entropy_backward(neat_cmdbuf *cb, const neat_tensor *logits,
                                                         const neat_tensor *labels,
                                                         neat_tensor *dlogits);

/* Optimizers. Values a schedule changes between replays live in a device tensor `hyper` of
 * two elements, read when the op runs: hyper[0] = learning rate, hyper[1] = step t (1, 2, ...;
 * Adam's bias correction). Write it with neat_tensor_write between commits. */

typedef struct neat_sgd_params {
    float momentum;     /* 0 for plain SGD */
    float weight_decay; /* L2: g += weight_decay * param */
    int nesterov;       /* != 0: param -= lr (g + momentum v) */
} neat_sgd_params;

/* v = momentum v + g;  param -= lr v  (or Nesterov), g = grad + weight_decay param.
 * param, grad, velocity of one shape. As PyTorch's SGD with dampening 0, whose velocity
 * starts at zero: the caller creates velocity with neat_tensor_create_zeros (or fills it
 * with 0) before the first step; the library never clears it.
 * NULL: velocity when momentum is 0 (ignored if given). */
NEAT_API neat_status neat_sgd_update(neat_cmdbuf *cb, const neat_sgd_params *p,
                                     const neat_tensor *hyper, neat_tensor *param,
                                     const neat_tensor *grad, neat_tensor *velocity);

typedef struct neat_adam_params {
    float beta1, beta2, eps; /* 0.9, 0.999, 1e-8 are the usual values */
    float weight_decay;      /* decoupled (AdamW): param -= lr weight_decay param */
} neat_adam_params;

/* AdamW: param *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * param -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). The moments m and v must hold
 * zeros before step 1 (neat_tensor_create_zeros): the library never clears them. */
NEAT_API neat_status neat_adam_update(neat_cmdbuf *cb, const neat_adam_params *p,
                                      const neat_tensor *hyper, neat_tensor *param,
                                      const neat_tensor *grad, neat_tensor *m, neat_tensor *v);

/* ---- mixed precision ---------------------------------------------------------------------
 * The usual recipe: float32 master weights, a half copy of them (bf16 or f16) that the
 * forward and backward passes read, half activations and gradients; f16 also needs loss
 * scaling (its gradients underflow otherwise). docs/API.md ("Mixed precision") walks
 * through a training step. */

/* The optimizers above on float32 master weights `master` from a gradient of any dtype, in
 * one pass: g = grad (widened to float32) / scale; the float32 step of neat_sgd_update /
 * neat_adam_update on master (velocity, m, v: float32); then, when param is not NULL,
 * param = master rounded to param's dtype (bf16, f16 or float32: the weights the next
 * forward pass reads). scaler: NULL (scale 1, never skips) or a loss scaler (below):
 * scale = scaler[0], and the whole step is skipped (nothing is written) when scaler[1] != 0
 * (non-finite gradients found by neat_loss_scale_check), read when the op runs.
 * master, grad, velocity / m, v and param of one shape; master, the state, hyper and scaler
 * float32 (DTYPE_MISMATCH names the offending tensor and its dtype); scaler exactly 3
 * elements. Outputs (master, the state, param) alias no other tensor of the call. With
 * scaler and param NULL and a float32 grad this is exactly neat_sgd_update /
 * neat_adam_update (the same op: the same bits). Run-time failures as theirs (hyper).
 * NULL: velocity when momentum is 0, scaler, param.
 * Returns INVALID_ARGUMENT, INVALID_HANDLE, DEVICE_MISMATCH, SHAPE_MISMATCH,
 * DTYPE_MISMATCH, UNSUPPORTED (Metal: a bf16 grad or param). */
NEAT_API neat_status neat_sgd_update_mixed(neat_cmdbuf *cb, const neat_sgd_params *p,
                                           const neat_tensor *hyper, const neat_tensor *scaler,
                                           neat_tensor *master, const neat_tensor *grad,
                                           neat_tensor *velocity, neat_tensor *param);
NEAT_API neat_status neat_adam_update_mixed(neat_cmdbuf *cb, const neat_adam_params *p,
                                            const neat_tensor *hyper, const neat_tensor *scaler,
                                            neat_tensor *master, const neat_tensor *grad,
                                            neat_tensor *m, neat_tensor *v, neat_tensor *param);

/* Dynamic loss scaling: the loss gradient multiplied by a large scale keeps f16 gradients
 * above its underflow; the scale backs off when they overflow. A scaler is a float32
 * tensor of 3 elements on the device, read and written only by recorded ops (so a
 * replayed step never waits for the host): [0] the scale, [1] found_inf (0 or 1),
 * [2] good steps since the last change. The caller creates it and writes e.g.
 * {65536, 0, 0} once. One step: neat_loss_scale on the loss gradient, the backward pass,
 * neat_loss_scale_check over every gradient, the mixed optimizers with the scaler,
 * neat_loss_scale_update. None of these ops fails when it runs. */
typedef struct neat_loss_scale_params {
    float growth_factor;  /* 2.0: scale *= growth after growth_interval good steps; >= 1 */
    float backoff_factor; /* 0.5: scale *= backoff after a step with non-finite gradients;
                           * in (0, 1] */
    int growth_interval;  /* 2000; >= 1 */
} neat_loss_scale_params;

/* y = x * scaler[0] (the scale read when the op runs, the product rounded once to y's
 * dtype): the loss gradient, scaled. x and y of one shape and one dtype (any), y may be x.
 * Returns INVALID_ARGUMENT, INVALID_HANDLE, DEVICE_MISMATCH, SHAPE_MISMATCH (x, y, a
 * scaler not of 3 elements), DTYPE_MISMATCH (scaler not float32, x and y differ),
 * UNSUPPORTED (Metal: bf16). y may not share memory with scaler. */
NEAT_API neat_status neat_loss_scale(neat_cmdbuf *cb, const neat_tensor *scaler,
                                     const neat_tensor *x, neat_tensor *y);

/* The most tensors one neat_loss_scale_check takes. */
#define NEAT_LOSS_SCALE_CHECK_MAX 4096

/* scaler[1] = 1 if any element of tensors[0..n) is NaN or infinite, else 0 (n = 0: 0):
 * one recorded op over a list of tensors of any dtypes (each a live tensor of cb's device;
 * they may share memory). 0 <= n <= NEAT_LOSS_SCALE_CHECK_MAX. NULL: tensors when n is 0.
 * Returns INVALID_ARGUMENT, INVALID_HANDLE, DEVICE_MISMATCH, SHAPE_MISMATCH (scaler),
 * DTYPE_MISMATCH (scaler), OUT_OF_MEMORY, UNSUPPORTED (Metal: a bf16 tensor). scaler is not one
 * of the tensors. */
NEAT_API neat_status neat_loss_scale_check(neat_cmdbuf *cb, const neat_tensor *const *tensors,
                                           int n, neat_tensor *scaler);

/* After the optimizers: if scaler[1] != 0, scale *= backoff and good = 0; else good += 1
 * and, when good reaches growth_interval, scale *= growth and good = 0. found_inf is left
 * as is (the next check overwrites it). A scale that would overflow float32 stays as it is.
 * Returns INVALID_ARGUMENT (p NULL or out of range), INVALID_HANDLE, DEVICE_MISMATCH,
 * SHAPE_MISMATCH, DTYPE_MISMATCH. */
NEAT_API neat_status neat_loss_scale_update(neat_cmdbuf *cb, const neat_loss_scale_params *p,
                                            neat_tensor *scaler);

/* ---- collectives: data-parallel training across devices and processes ------------------
 * A communicator (neat_comm) joins one device of each of `nranks` ranks. Ranks are
 * processes (one device each: neat_comm_create, the id passed from rank 0 to the others by
 * a file or the launcher) or devices of one process (neat_comm_create_all). Collectives are
 * recorded ops, so they run in order with the rest of a buffer and replay with it (on CUDA
 * inside the captured graph). Every rank must record the same collectives in the same order
 * with the same element counts, and commit its buffers in the same order (a commit that is
 * a buffer's first since its creation or reset on one rank is one on every rank); a rank
 * whose peer
 * disagrees, dies or does not answer within the comm's timeout gets a status from
 * neat_cmdbuf_wait (SHAPE_MISMATCH, BACKEND_ERROR, TIMEOUT) with a message, never a hang
 * without end; after TIMEOUT or a peer's death the comm is broken: destroy it (later
 * collectives on it fail at once). After SHAPE_MISMATCH the comm stays usable. The check:
 * on CUDA, at a buffer's first commit, the ranks compare its collectives on each comm (their
 * number, kinds, element counts, reduce ops, roots, a bucket's tensor counts) in one small
 * exchange, so replays cost nothing; a buffer they disagree on runs none of its ops, at that
 * commit and every later one. On the CPU (MPI), each collective's element count (and a
 * bucket's tensor counts) at its first run; the ops before it in the buffer have run.
 * CUDA: NCCL (NVLink/PCIe/shared memory in a machine, sockets or InfiniBand across
 * machines). CPU: MPI when the library was built with it (Open MPI; launch with mpirun),
 * otherwise only single-rank comms. With several devices in one process, commit each
 * device's buffers from a thread of its own: a collective's submission may wait for peers. */

typedef struct neat_comm neat_comm;

/* What every rank passes to neat_comm_create: made once by rank 0, copied to the others
 * (neat_comm_id_to_string / _from_string for a file or an environment variable). */
typedef struct neat_comm_id {
    unsigned char bytes[128];
} neat_comm_id;

typedef enum neat_reduce_op {
    NEAT_REDUCE_SUM = 0,
    NEAT_REDUCE_AVG = 1 /* the sum divided by nranks */
} neat_reduce_op;

/* A new id for a communicator of `backend` (CUDA: ncclGetUniqueId, which also names rank
 * 0's address; CPU: random bytes). Call it on rank 0 only. Returns INVALID_ARGUMENT,
 * UNSUPPORTED (the backend has no collectives here, with the reason), BACKEND_ERROR. */
NEAT_API neat_status neat_comm_id_create(neat_backend backend, neat_comm_id *id);

/* The id as 256 lowercase hex digits and a NUL: size must be at least 257. Returns
 * INVALID_ARGUMENT. */
NEAT_API neat_status neat_comm_id_to_string(const neat_comm_id *id, char *buf, size_t size);

/* Parse what neat_comm_id_to_string wrote (surrounding whitespace allowed). Returns
 * INVALID_ARGUMENT for anything else. */
NEAT_API neat_status neat_comm_id_from_string(const char *str, neat_comm_id *id);

/* Join the communicator `id` as rank `rank` of `nranks` (0 <= rank < nranks), on dev. Every
 * rank calls it with the same id and nranks; it returns once all have joined, or TIMEOUT
 * after the default timeout (300 s). On the CPU with MPI, nranks must be the size of
 * MPI_COMM_WORLD (MPI is initialised with MPI_THREAD_MULTIPLE if the caller has not).
 * Returns INVALID_ARGUMENT (NULL, nranks < 1, rank out of range, ranks that disagree on the
 * id or nranks or share a rank), INVALID_HANDLE, UNSUPPORTED, TIMEOUT, BACKEND_ERROR. */
NEAT_API neat_status neat_comm_create(neat_device *dev, const neat_comm_id *id, int nranks,
                                      int rank, neat_comm **out);

/* One communicator per device of this process, rank i on devs[i] (ncclCommInitAll): out
 * receives ndev comms. The devices are distinct devices of one backend; on the CPU only
 * ndev = 1. Same statuses as neat_comm_create, DEVICE_MISMATCH for mixed backends. */
NEAT_API neat_status neat_comm_create_all(int ndev, neat_device *const *devs, neat_comm **out);

/* Release the comm. Buffers that recorded a collective on it must not be committed again
 * (INVALID_HANDLE at commit) until neat_cmdbuf_reset; their backend state (on CUDA a
 * captured graph) is released with the comm. It waits for the device's submissions in flight (a broken peer
 * ends them after the comm's timeout); their failures stay with their buffers for wait.
 * neat_device_destroy releases the comms of its device (their handles become invalid).
 * NULL is ignored. */
NEAT_API void neat_comm_destroy(neat_comm *comm);

/* How long a collective (and neat_cmdbuf_wait on it) may wait for the peers before TIMEOUT:
 * seconds > 0, or 0 to wait forever. Default 300. Returns INVALID_ARGUMENT, INVALID_HANDLE. */
NEAT_API neat_status neat_comm_set_timeout(neat_comm *comm, double seconds);

/* This rank and the number of ranks (either pointer may be NULL). Returns INVALID_HANDLE. */
NEAT_API neat_status neat_comm_info(const neat_comm *comm, int *rank, int *nranks);

/* y = reduce over ranks of x (SUM, or AVG = SUM / nranks); x and y of one element count on
 * every rank (shapes may differ if counts agree); y may be x (in place), otherwise they
 * must not overlap. Run time: SHAPE_MISMATCH when the ranks' counts differ, TIMEOUT,
 * BACKEND_ERROR. Record time: the common statuses, DEVICE_MISMATCH (comm of another device
 * than cb), INVALID_ARGUMENT (op not SUM/AVG). */
NEAT_API neat_status neat_all_reduce(neat_cmdbuf *cb, neat_comm *comm, neat_reduce_op op,
                                     const neat_tensor *x, neat_tensor *y);

/* In-place all-reduce of n tensors (n >= 0, any shapes, zero-size allowed, no two sharing
 * memory) as ONE transfer: packed into a contiguous scratch buffer, reduced, unpacked (AVG's
 * division fused into the unpack, or NCCL's own); a bucket with one non-empty tensor is
 * reduced where it is, without the copies. The gradients of a training step in one call.
 * Same statuses as neat_all_reduce. */
NEAT_API neat_status neat_all_reduce_bucket(neat_cmdbuf *cb, neat_comm *comm, neat_reduce_op op,
                                            int n, neat_tensor *const *tensors);

/* y = root's x on every rank (0 <= root < nranks). x is read on root only (other ranks may
 * pass NULL, or x = y); y of x's element count. Same run-time statuses as neat_all_reduce;
 * INVALID_ARGUMENT for root out of range. */
NEAT_API neat_status neat_broadcast(neat_cmdbuf *cb, neat_comm *comm, int root,
                                    const neat_tensor *x, neat_tensor *y);

#ifdef __cplusplus
}
#endif
#endif /* NEATML_H */
