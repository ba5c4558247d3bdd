/*
 * cpu.h — the CPU backend: oneDNN for matmul, linear and convolution (primitives cached per
 * shape), hand-written OpenMP loops for everything else. Ops run on one worker thread per
 * device (backend.c), which opens OpenMP parallel regions of cpu_device.nthreads threads.
 *
 * Files: backend.c (table, device, memory, worker queue), dnnl.c and dnnl_util.h (engine,
 * stream, primitive cache, staging), matmul.c, linear.c, conv.c, conv_backward.c (oneDNN
 * ops), conv_direct.c (3x3 convolutions of one input channel per group), elementwise.c
 * (add, scale, fill, activations), relu_grad_blocked.c (relu's backward into oneDNN's blocked
 * layout), pool.c, reduce.c (sums), softmax.c
 * (softmax, cross-entropy), optim.c (SGD, Adam), comm.c (collectives: MPI), half.c (bf16, f16:
 * cast, conversions, which ops run natively and the others through float32 copies); loops.h
 * (how loops share threads), vecmath.h (exp and friends that vectorize) and half_simd.h (f16
 * conversions in AVX-512 registers).
 */
#ifndef NEATML_CPU_H
#define NEATML_CPU_H

#include "../backend.h"

struct cpu_job;
struct cpu_dnnl;

typedef struct cpu_device {
    int nthreads;
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t work_cv, done_cv;
    struct cpu_job *head, *tail; /* submissions not yet run */
    int running;                 /* a job is executing */
    uint64_t done_seq;           /* seq of the last job finished (jobs run in order) */
    float **staging;             /* the running job's staged host copies (copy.c) */
    int stop;
    struct cpu_dnnl *dnnl; /* owned by dnnl.c */
    int conv_direct; /* NEATML_CPU_CONV_DIRECT is not "0": conv_direct.c's multi-channel loop */
    int bf16_gemm;   /* bf16 matmul, linear forward and backward on oneDNN's bf16 kernels */
    int bf16_conv;   /* bf16 conv2d forward and backward likewise (dnnl.c sets both; half.c) */
} cpu_device;

static inline cpu_device *cpu_dev(nm_device *dev) { return (cpu_device *)dev->impl; }

/* copy.c: stage every neat_copy_from_host of cb (at commit): staging[i] for op i, or
 * *staging NULL when there is none. */
neat_status cpu_stage_host_copies(nm_cmdbuf *cb, float ***staging);
void cpu_free_staging(nm_cmdbuf *cb, float **staging);

/* comm.c: collectives (MPI, or one rank) */
neat_status cpu_comm_id_create(neat_comm_id *id);
neat_status cpu_comm_create(nm_comm *comm, const neat_comm_id *id);
neat_status cpu_comm_create_all(int n, nm_comm *const *comms);
void cpu_comm_destroy(nm_comm *comm);
/* Frees cb->impl (which collectives were checked, comm.c). */
void cpu_comm_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb);

/* half.c: bf16 and f16. cpu_op_check refuses (UNSUPPORTED) the ops that do not run on half
 * tensors; cpu_run_op runs an op, those on half tensors through float32 copies. */
neat_status cpu_op_check(nm_device *dev, const nm_op *op);
/* conv.c: UNSUPPORTED for a convolution whose sizes oneDNN cannot take (cpu_op_check). */
neat_status cpu_conv_check(const nm_op *op);
neat_status cpu_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);
/* dst[0, n) = src converted from or to half type dt (NEAT_BF16, NEAT_F16) on the calling
 * thread, bit for bit as dtype.h's nm_*_to_* (vector instructions where the CPU has them). */
void cpu_half_widen(neat_dtype dt, const uint16_t *src, float *dst, int64_t n);
void cpu_half_narrow(neat_dtype dt, const float *src, uint16_t *dst, int64_t n);
/* A bf16/f16 tensor's elements (nm_tensor.data is declared float *). */
static inline uint16_t *cpu_half_data(const nm_tensor *t) { return (uint16_t *)(void *)t->data; }
/* Elements per chunk of the native half loops: each thread widens a chunk of every input
 * into float32 buffers on its stack, runs the float32 kernel on them, rounds the chunk out. */
#define CPU_HALF_CHUNK 512
/* Softmax (forward, backward) on half tensors runs natively for rows of up to this many
 * columns (a widened row, or two for the backward, on the thread's stack); longer rows take
 * the float32 copies. */
#define CPU_SOFTMAX_HALF_COLS 8192

/* dnnl.c */
neat_status cpu_dnnl_open(nm_device *dev);
void cpu_dnnl_close(nm_device *dev);
/* The job's scratch memory is about to be released: forget the primitives' scratchpad. */
void cpu_dnnl_job_done(nm_device *dev);

/* The ops (op_list.h): cpu_<name> for every entry. oneDNN: matmul.c (matmul, plain and
 * batched), linear.c, conv.c, conv_backward.c. Loops: elementwise.c (add, scale, fill,
 * activations), pool.c, reduce.c (sum, whole or along an axis), softmax.c (softmax,
 * cross-entropy), optim.c (SGD, Adam), copy.c (recorded host copies). */
NM_DECLARE_OPS_WITH_COLLECTIVES(cpu)

/* Activation math shared by the loops and the oneDNN ops (elementwise.c).
 * cpu_act_apply: y = act(x) over n elements (in place allowed).
 * cpu_act_grad: dz = dy * act'(.) from the saved output y (relu, sigmoid, tanh) or the
 * input x (gelu); NONE copies dy. */
void cpu_act_apply(int nthreads, neat_activation act, const float *x, float *y, int64_t n);
void cpu_act_grad(int nthreads, neat_activation act, const float *x, const float *y,
                  const float *dy, float *dz, int64_t n);
/* The largest |x| of n elements of type dt (float32, bf16, f16), +inf when one is NaN or
 * infinite (cpu_fused_relu_exact; the loss scale check). */
double cpu_max_abs(int nthreads, const void *x, neat_dtype dt, int64_t n);
/* relu in place on half values, as cpu_act_apply's: a negative value becomes +0, while -0
 * and NaN stay. */
void cpu_relu_half(int nthreads, neat_dtype dt, uint16_t *y, int64_t n);
/* relu's on bf16 tensors: dz = dy where y > 0, else +0 (exact; the bf16 oneDNN backward of
 * linear.c and conv_backward.c). */
void cpu_relu_grad_bf16(int nthreads, const uint16_t *dy, const uint16_t *y, uint16_t *dz,
                        int64_t n);
/* conv_direct.c: 3x3 stride-1 convolutions with one input channel per group, forward with
 * act NONE or RELU, as an OpenMP loop (cpu_conv_direct_ok says when); scratch holds
 * cpu_conv_direct_scratch(g, nthreads) bytes. */
int cpu_conv_direct_ok(const nm_conv_geom *g, neat_activation act);
size_t cpu_conv_direct_scratch(const nm_conv_geom *g, int nthreads);
void cpu_conv_direct_forward(int nthreads, const nm_conv_geom *g, const float *x, const float *w,
                             const float *b, neat_activation act, float *y, float *scratch);
/* conv_direct.c: 3x3 stride-1 convolutions of one group and several input channels on small
 * planes (K % 8 == 0, act NONE or RELU, AVX-512: cpu_conv_direct_multi_ok), NCHW in and
 * out; scratch holds cpu_conv_direct_multi_scratch(g, nthreads) bytes. */
int cpu_conv_direct_multi_ok(const nm_conv_geom *g, neat_activation act);
size_t cpu_conv_direct_multi_scratch(const nm_conv_geom *g, int nthreads);
void cpu_conv_direct_multi_forward(int nthreads, const nm_conv_geom *g, const float *x,
                                   const float *w, const float *b, neat_activation act, float *y,
                                   float *scratch);
/* conv_direct.c: the backward data (dx, += when acc) of the convolutions of g that the same
 * loop takes turned around (cpu_conv_direct_dx_ok: 3x3, stride and dilation 1, one group,
 * padding <= 2, C % 8 == 0, AVX-512), dz NCHW or nChw16c (blocked); scratch holds
 * cpu_conv_direct_dx_scratch(g, nthreads) bytes. */
int cpu_conv_direct_dx_ok(const nm_conv_geom *g);
size_t cpu_conv_direct_dx_scratch(const nm_conv_geom *g, int nthreads);
void cpu_conv_direct_dx(int nthreads, const nm_conv_geom *g, const float *dz, int blocked,
                        const float *w, int acc, float *dx, float *scratch);
/* relu_grad_blocked.c: dz = y > 0 ? dy : 0 for dy, y NCHW [n,k,s] (s = P*Q), written in
 * oneDNN's nChw16c layout: dzb [n, ceil(k/16), s, 16], the padded channels 0. */
void cpu_relu_grad_nchw16c(int nthreads, const float *dy, const float *y, int64_t n, int64_t k,
                           int64_t s, float *dzb);

/* Hot loops are compiled for several x86-64 levels and picked at load time (ifunc, so
 * Linux/glibc only: Mach-O has no ifunc); other systems and architectures get the portable
 * version. Never -march=native in an installed build. */
/* Not under the sanitizers: ld.so runs the ifunc resolvers before their runtimes are set up
 * (gcc defines __SANITIZE_*; clang answers __has_feature). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CPU_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) &&                              \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) && !defined(CPU_NO_CLONES)
#define CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_CLONES
#endif

#endif
