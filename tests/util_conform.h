/*
 * util_conform.h — the runner of the conformance table (tests/test_conformance.c).
 *
 * A row names an op kind (one of cf_ops[]) and its shape; the runner runs every row on
 * every device that opens, in each pass (strict float32, integer inputs, TF32), and every
 * case twice from one recording: the first commit and a replay of the same command buffer
 * after fresh inputs are written (on CUDA the replay runs a captured graph). Both
 * submissions are compared with the float64 reference (reference.c, reference_train.c).
 *
 * An op kind is four functions over a case (cf_case):
 *   build      declare the tensors (cf_tensor_add) and name the shape (cf_describe);
 *   prepare    (may be NULL) after the runner drew every input, derive those that must
 *              agree with others (a saved forward output, labels, the optimizer's hyper);
 *   record     record the op into the command buffer;
 *   reference  fill ref and tol of each output from the inputs that were written.
 * The runner does the rest, the same way for every op: outputs written as NaN before each
 * submission, outputs read back through guarded host buffers, inputs read back and compared
 * bit for bit, the comparison per output (exact, per element within tol, relative
 * Frobenius), the seed, the counts and the failure messages.
 *
 * Kinds flagged CF_K_LAYOUT (conv and pool) run every case twice more: as NHWC tensors (the
 * runner permutes; see cf_case.nhwc), against the same NCHW reference.
 *
 * Counting: a comparison is one output of one case in one submission; a setup check is
 * every other assertion (status of create, write, record, commit, wait, read; guard
 * bands; inputs unchanged). Exported names start with cf_ / CF_: every tests/util_*.c
 * goes into one static test library.
 */
#ifndef NEATML_TEST_UTIL_CONFORM_H
#define NEATML_TEST_UTIL_CONFORM_H

#include "harness.h"

#define CF_EPS 0x1.0p-24
#define CF_MAX_TENSORS 10
#define CF_NP 18

/* Passes: the math mode of the device and the inputs. CF_INT: strict mode, small integer
 * inputs, and outputs that must be bit-exact (only kinds with CF_K_INT run it). */
enum { CF_STRICT, CF_INT, CF_TF32, CF_NPASSES };

/* Kind flags. */
#define CF_K_INT 1    /* runs in the integer pass */
#define CF_K_LAYOUT 2 /* conv and pool: every case also runs in NHWC (cf_case.nhwc) */

/* Roles of a tensor: read only (checked unchanged), written (poisoned, compared), or both
 * (written with fresh values, then compared: in-place ops, accumulated gradients,
 * optimizer state). */
enum { CF_IN, CF_OUT, CF_INOUT };

/* How the runner fills an input before each submission. CF_DATA is uniform [-1,1), or
 * integers in [-4,4] in the integer pass; CF_GIVEN is left for the kind's prepare. */
enum { CF_DATA, CF_WIDE, CF_NEG, CF_UNIT, CF_GIVEN };

/* One row of the table: an op kind, up to CF_NP integer parameters and 6 real ones, whose
 * meaning each kind documents (see the row makers in test_conformance.c). */
typedef struct cf_row {
    int kind;
    int64_t p[CF_NP];
    double f[6];
} cf_row;

typedef struct cf_tensor {
    const char *name;
    int role, fill, ndim;
    /* NEAT_F32 unless the kind sets it after cf_tensor_add: a half tensor's host values
     * are read back after each write, so host holds exactly what the device holds. */
    neat_dtype dtype;
    int64_t shape[4], n;
    neat_tensor *t;
    float *host; /* the values written before the submission (guarded) */
    float *got;  /* outputs: read back after it (guarded) */
    /* outputs, set by the kind's reference: ref; tol NULL for exact (got == (float)ref),
     * else |got - ref| <= tol[i]; elem 0 skips the per-element test (NaN still fails);
     * frob >= 0 adds ||got - ref||_F <= frob ||ref||_F. */
    double *ref, *tol, frob;
    int elem;
} cf_tensor;

typedef struct cf_case {
    neat_device *dev;
    const char *dev_name;
    const cf_row *row;
    int pass, idx, sub; /* sub: 0 the first commit, 1 the replay */
    /* The NHWC run of a CF_K_LAYOUT kind: the kind declares, fills and checks its 4-D
     * tensors as NCHW (shape, host, got, ref) and records with NEAT_LAYOUT_NHWC; the runner
     * creates the device tensors as [d0,d2,d3,d1] and permutes every write and read. */
    int nhwc;
    float *tmp; /* ntmp floats (guarded): the permuted copy of one tensor */
    int64_t ntmp;
    uint64_t seed;
    nt_rng rng;
    char desc[240];
    cf_tensor t[CF_MAX_TENSORS];
    int nt, failed;
    double *arena[64]; /* double arrays of one submission */
    int narena;
} cf_case;

typedef struct cf_kind {
    const char *name;
    int flags;
    void (*build)(cf_case *c);
    void (*prepare)(cf_case *c);
    neat_status (*record)(cf_case *c, neat_cmdbuf *cb);
    void (*reference)(cf_case *c);
} cf_kind;

/* The kinds, indexed by cf_row.kind, in the order the runner takes them. */
enum {
    CF_MATMUL,
    CF_MATMUL_BATCHED,
    CF_LINEAR_FORWARD,
    CF_CONV2D_FORWARD,
    CF_MAXPOOL2D,
    CF_SUM_ALL,
    CF_SUM_AXIS,
    CF_SOFTMAX,
    CF_ACTIVATION_FORWARD,
    CF_ADD,
    CF_MUL,
    CF_SCALE,
    CF_FILL,
    CF_LINEAR_BACKWARD,
    CF_CONV2D_BACKWARD,
    CF_MAXPOOL2D_BACKWARD,
    CF_ACTIVATION_BACKWARD,
    CF_SOFTMAX_BACKWARD,
    CF_SOFTMAX_XENT,
    CF_SOFTMAX_XENT_BACKWARD,
    CF_SGD_UPDATE,
    CF_ADAM_UPDATE,
    CF_LOSS_SCALE,
    CF_LOSS_SCALE_CHECK,
    CF_LOSS_SCALE_UPDATE,
    CF_NKINDS
};
extern const cf_kind *const cf_kinds[CF_NKINDS];

/* ---- for the kinds --------------------------------------------------------------------- */

/* Declare the next tensor of the case (at most CF_MAX_TENSORS); returns its index. */
int cf_tensor_add(cf_case *c, const char *name, int role, int fill, int ndim, const int64_t *shape);
void cf_describe(cf_case *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The device tensor of slot i, NULL when the slot is absent (i < 0). */
neat_tensor *cf_t(const cf_case *c, int i);
/* A zeroed double array freed after the submission (n = 0 gives a valid pointer). */
double *cf_dnew(cf_case *c, int64_t n);
/* The values written to slot i, as doubles. */
double *cf_in(cf_case *c, int i);
/* Output slot i: allocate ref (zeroed) and, unless exact, tol; frob -1, elem 1. */
double *cf_out(cf_case *c, int i, int exact);
/* Write the doubles into the host copy of slot i (rounded to float). */
void cf_set(cf_case *c, int i, const double *v);
void cf_fill_uniform(cf_case *c, int i, double lo, double hi);
/* x rounded to dtype as neatml rounds (to nearest, ties to even; f16: subnormals, and inf
 * from 65520 up). */
double cf_round(neat_dtype dtype, double x);

/* The tolerance of a matmul-like output y = act(z), z a k-term dot product with error
 * scale abs[i] (reference.h): integer pass exact; TF32 relative Frobenius tf32_frob only;
 * strict |got-ref| <= slope(act) (2k+4) 2^-24 abs + (smooth act: 1e-5 |y| + 4 2^-24
 * (1+|z|)) and relative Frobenius 1e-5. */
void cf_gemm_tol(cf_case *c, int i, const double *z, const double *abs, int64_t k,
                 neat_activation act);
int cf_act_smooth(neat_activation act);

/* ---- the runner ------------------------------------------------------------------------ */

/* Run rows[0..n) on every device in every pass, grouped by kind in cf_kinds order; print a
 * line per device, pass and kind and the summary line. Returns nt_finish's status. */
int cf_run_table(const cf_row *rows, int n, uint64_t base_seed);

#endif
