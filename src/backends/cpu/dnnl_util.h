/*
 * dnnl_util.h — what the oneDNN ops of the CPU backend share (dnnl.c, matmul.c, linear.c,
 * conv.c, conv_backward.c): the device's engine and stream, the per-device plan cache, a
 * cached primitive with its argument memories, and the status mapping.
 *
 * A "plan" is whatever an op builds once per shape (primitive descriptors, primitives,
 * memory objects, reorders): building one costs 5-15 us, running a cached one ~1 us, so
 * every op looks its plan up by a byte key of op kind + shapes + options. Plans are used
 * only on the device's worker thread (ops of a device run there, one at a time), so the
 * cache needs no lock, and the memory objects in a plan may have their data handles set
 * for each run.
 *
 * The code is written against oneDNN's v3 C API; dnnl_compat.h maps it onto v2 (2.6).
 */
#ifndef NEATML_CPU_DNNL_UTIL_H
#define NEATML_CPU_DNNL_UTIL_H

#include "cpu.h"
#include "../lru.h"
#include "dnnl_compat.h"

typedef struct cpu_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    nm_lru plans; /* the plan cache, CPU_PLAN_CAPACITY plans */
    /* The primitives' scratchpad for the running job: one block of the command buffer's
     * scratch memory, taken by the first primitive that needs one (a larger block when a
     * later one needs more) and reused by every primitive run of the job. A scratchpad is
     * dead once its primitive has finished (cpu_prim_run waits) and primitives run one at a
     * time on the worker thread, so one block serves all, and being the same memory every
     * time it stays in cache between the small ops of a buffer (a fresh block per op did
     * not). Forgotten by cpu_dnnl_job_done before the job's scratch is released. */
    void *scratchpad;
    size_t scratchpad_bytes;
} cpu_dnnl;

static inline cpu_dnnl *cpu_dnnl_of(nm_device *dev) { return cpu_dev(dev)->dnnl; }

/* oneDNN's element type of a tensor type the oneDNN ops take (float32, or bf16 on the
 * bf16 paths of half.c). */
static inline dnnl_data_type_t cpu_dnnl_type(neat_dtype dt) {
    return dt == NEAT_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* ---- status mapping ----------------------------------------------------------------------- */

/* Map a failed oneDNN call to a neatml status with the message "fn: call failed: status"
 * (out_of_memory -> OUT_OF_MEMORY, anything else -> BACKEND_ERROR). `call` may be the
 * stringized call; only the function name before '(' is kept. */
neat_status cpu_dnnl_fail(dnnl_status_t s, const char *fn, const char *call);

/* Run a oneDNN call inside a function that has `neat_status st` and a `fail:` label and a
 * `const char *fn` naming the public op: on failure, set st and jump to the cleanup. */
#define DNNL_TRY(call)                                                                             \
    do {                                                                                           \
        dnnl_status_t dnnl_s_ = (call);                                                            \
        if (dnnl_s_ != dnnl_success) {                                                             \
            st = cpu_dnnl_fail(dnnl_s_, fn, #call);                                                \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* The same for a status already in hand, or a helper's result (evaluated once), named for
 * the message. */
#define DNNL_TRY_AS(status, name)                                                                  \
    do {                                                                                           \
        dnnl_status_t dnnl_s_ = (status);                                                          \
        if (dnnl_s_ != dnnl_success) {                                                             \
            st = cpu_dnnl_fail(dnnl_s_, fn, name);                                                 \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- plan cache (dnnl.c) ------------------------------------------------------------------ */

typedef void (*cpu_plan_free_fn)(void *plan);
/* Build the plan for `ctx` (an op's description); on failure return an error status and
 * leave *plan NULL. */
typedef neat_status (*cpu_plan_build_fn)(cpu_dnnl *d, const void *ctx, void **plan);

/* The plan cached under key[0..keylen), built by build(d, ctx) and cached on a miss. The
 * least recently used plans are dropped past CPU_PLAN_CAPACITY (lru.h); a plan just returned
 * is the most recent one, so an op that looks up a few plans in a row keeps them all. */
#define CPU_PLAN_CAPACITY NM_LRU_CAPACITY
neat_status cpu_dnnl_plan(nm_device *dev, const void *key, size_t keylen, cpu_plan_build_fn build,
                          cpu_plan_free_fn free_plan, const void *ctx, void **plan);

/* Attributes every primitive of the backend starts from: strict float32 math (whatever
 * ONEDNN_DEFAULT_FPMATH_MODE says) and a user-managed scratchpad (no hidden allocation).
 * The caller destroys it. */
neat_status cpu_dnnl_attr(const char *fn, dnnl_primitive_attr_t *attr);

/* The oneDNN eltwise algorithm of an activation (NONE answers 0 = no post-op). */
int cpu_dnnl_act_alg(neat_activation act, dnnl_alg_kind_t *alg);
/* May oneDNN's relu post-op compute relu(alpha a.b + bias), sums of k products, a, b and bias
 * of type dt? The post-op is max(x, 0), which turns a NaN into 0 where neat_activation_forward,
 * CUDA and PyTorch keep it. A NaN comes only from an input that is NaN or infinite, or from
 * an overflow: 1 when every input is finite and |alpha| k max|a| max|b| + max|bias|, with
 * room for the roundings, stays below 2^126, read in one pass over the inputs. 0: the op
 * runs without the post-op, and relu after it keeps the NaN. */
int cpu_fused_relu_exact(int nthreads, int64_t k, float alpha, neat_dtype dt, const void *a,
                         int64_t na, const void *b, int64_t nb, const void *bias, int64_t nbias);

/* ---- a cached primitive and its arguments --------------------------------------------------- */

#define CPU_PRIM_MAX_ARGS 8

/* A primitive with one memory object per argument (created without a buffer; cpu_prim_run
 * points them at the run's data) and its scratchpad size. */
typedef struct cpu_prim {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[CPU_PRIM_MAX_ARGS + 1]; /* + the scratchpad, at args[nargs] */
    dnnl_memory_t scratchpad;                    /* NULL when scratch_bytes == 0 */
    size_t scratch_bytes;
} cpu_prim;

/* Create the primitive of pd and the memories of the listed arguments (DNNL_ARG_SRC, ...),
 * each with the layout pd wants for it. pd stays the caller's. */
neat_status cpu_prim_init(cpu_dnnl *d, const char *fn, const_dnnl_primitive_desc_t pd,
                          const int *arg_ids, int nargs, cpu_prim *p);
/* Add one more argument after those of cpu_prim_init, with the layout md (an argument the
 * primitive descriptor has no layout for: a runtime scale). */
neat_status cpu_prim_add_arg(cpu_dnnl *d, const char *fn, cpu_prim *p, int arg_id, cpu_md_c md);
/* Execute with data[i] as argument i (in the order given to cpu_prim_init), the job's
 * scratchpad, and wait for completion. */
neat_status cpu_prim_run(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_prim *p,
                         void *const *data);
void cpu_prim_destroy(cpu_prim *p);

/* A reorder primitive src_md -> dst_md (arguments FROM, TO). accumulate != 0 adds into the
 * destination (a sum post-op) instead of overwriting it. */
neat_status cpu_reorder_init(cpu_dnnl *d, const char *fn, cpu_md_c src_md, cpu_md_c dst_md,
                             int accumulate, cpu_prim *p);

/* ---- arguments staged through the layout a primitive chose (dnnl.c) ------------------------ */

/* A tensor argument of a primitive created with format_tag any. The user's tensor is plain
 * (NCHW, OIHW, ...); when the primitive wants another layout (a blocked nChw16c) the data
 * goes through a scratch copy and a cached reorder: user -> primitive for an input,
 * primitive -> user for an output. An output that accumulates (+=) always goes through the
 * scratch copy and a reorder with a sum post-op, which does the addition in the same pass. */
typedef struct cpu_staged {
    int staged;   /* 0: the primitive reads/writes the user's memory directly */
    size_t bytes; /* size of the primitive's layout */
    cpu_prim reorder;
} cpu_staged;

neat_status cpu_staged_init(cpu_dnnl *d, const char *fn, cpu_md_c user_md, cpu_md_c prim_md,
                            int output, int accumulate, cpu_staged *a);
/* Input: *prim_data is the user's data, or a scratch copy reordered from it. */
neat_status cpu_staged_in(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_staged *a,
                          const void *user, void **prim_data);
/* Output: *prim_data is where the primitive writes (the user's memory or scratch);
 * cpu_staged_out_finish then moves (or adds) scratch into the user's tensor. */
neat_status cpu_staged_out(nm_cmdbuf *cb, cpu_staged *a, void *user, void **prim_data);
neat_status cpu_staged_out_finish(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_staged *a,
                                  void *prim_data, void *user);
void cpu_staged_destroy(cpu_staged *a);

/* ---- matmul for the other ops (matmul.c) --------------------------------------------------- */

/* c[i] = act(alpha * op(a[i]) op(b[i]) + bias + beta * c[i]) for i < batch, every matrix
 * dense row-major: op(a) m x k (a stored k x m when trans_a), op(b) k x n (b stored n x k
 * when trans_b), c m x n, bias NULL or n values added to every row (callers pass a bias only
 * with alpha == 1, so how oneDNN scales a bias does not matter). beta == 0 never reads c. k == 0
 * gives act(bias + beta c) (float32 only: the bf16 path is taken with k > 0).
 * ab_dt: the type of a, b and the bias; c_dt: c's. NEAT_F32 (0, what a zeroed initializer
 * gives) everywhere but bf16 GEMMs on oneDNN's bf16 kernels (cpu_device.bf16_gemm: a and b
 * bf16, products exact in float32, float32 sums, c rounded once).
 * The primitive is cached per (batch, m, n, k, transposes, alpha, beta, bias, act, types). */
typedef struct cpu_gemm_desc {
    int64_t batch, m, n, k;
    int trans_a, trans_b;
    float alpha, beta;
    int has_bias;
    neat_activation act;
    neat_dtype ab_dt, c_dt;
} cpu_gemm_desc;

neat_status cpu_gemm(nm_device *dev, nm_cmdbuf *cb, const char *fn, const cpu_gemm_desc *g,
                     const void *a, const void *b, const void *bias, void *c);

/* ---- convolution descriptors (conv.c), shared with conv_backward.c -------------------------- */

/* The memory descriptors of a convolution: the user's plain layouts (x NCHW, w OIHW, GOIHW
 * when groups > 1, b [K], y NCHW), or with any != 0 the same shapes with format_tag any for
 * x, w and y (oneDNN picks the layouts). x, w and b are of type in, y of type out (float32
 * but on the bf16 forward: in bf16, out bf16 or float32). Owned: cpu_conv_mds_destroy. */
typedef struct cpu_conv_mds {
    cpu_md src, wei, bias, dst;
} cpu_conv_mds;
dnnl_status_t cpu_conv_mds_create(const nm_conv_geom *g, int any, neat_dtype in, neat_dtype out,
                                  cpu_conv_mds *m);
void cpu_conv_mds_destroy(cpu_conv_mds *m);
/* Strides, oneDNN dilations (d - 1), and the paddings of both sides; a stride or dilation
 * that cannot matter (one output position, a kernel of 1) is made small. */
void cpu_conv_params(const nm_conv_geom *g, dnnl_dims_t strides, dnnl_dims_t dilates,
                     dnnl_dims_t pad_l, dnnl_dims_t pad_r);
/* The forward primitive descriptor (format any, bias and activation fused, types as
 * cpu_conv_mds_create's); the backward primitives need it as their hint (float32). The
 * caller destroys *pd. A bf16 descriptor oneDNN does not implement answers UNSUPPORTED. */
neat_status cpu_conv_fwd_pd(cpu_dnnl *d, const char *fn, const nm_conv_geom *g, int has_bias,
                            neat_activation act, neat_dtype in, neat_dtype out,
                            dnnl_primitive_desc_t *pd);
/* y = act(conv2d(x, w) + b) with the cached forward plan; x, w, b of type in, y of type out.
 * Float32: any zero size handled. bf16 (in == NEAT_BF16, on cpu_device.bf16_conv: half.c):
 * oneDNN's bf16 kernels, float32 sums, y rounded once; half.c sends only shapes with
 * outputs and a non-empty reduction. */
neat_status cpu_conv_forward_run(nm_device *dev, nm_cmdbuf *cb, const char *fn,
                                 const nm_conv_geom *g, neat_dtype in, neat_dtype out,
                                 const void *x, const void *w, const void *b, neat_activation act,
                                 void *y);

/* ---- small loops shared by linear and conv (linear.c) ---------------------------------------- */

/* db[j] (+)= sum over i < outer, s < inner of dz[(i * n + j) * inner + s]: the bias gradient
 * of a [outer, n, inner] tensor (linear: inner = 1; conv: outer = N, inner = P*Q). Summed in
 * double (with db's old value when accumulating), then rounded once to float32. */
void cpu_bias_grad(int nthreads, const float *dz, int64_t outer, int64_t n, int64_t inner,
                   float *db, int accumulate);

#endif
