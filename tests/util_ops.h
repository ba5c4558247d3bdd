/*
 * util_ops.h — what the forward conformance tests (test_ops_layers.c, test_ops_elementwise.c)
 * share: the context of a pass (device, mode, current op and case), per-case seeds, host/
 * device tensor pairs written from and read back into guarded buffers, and the comparison
 * against the float64 reference.
 *
 * A case's seed depends only on the base seed, the op id, the mode and the case index, so
 * a case draws the same inputs whichever binary runs it and in whatever order. Exported
 * names start with ops_ (OPS_ for tables; ht_ for the tensor pairs): every tests/util_*.c
 * goes into one static test library, where two definitions of a name clash.
 */
#ifndef NEATML_TEST_UTIL_OPS_H
#define NEATML_TEST_UTIL_OPS_H

#include "harness.h"

#define EPS 0x1.0p-24
enum { MODE_STRICT, MODE_INT, MODE_TF32 };

typedef struct ctx {
    neat_device *dev;
    const char *dev_name, *op;
    int mode;
    uint64_t base_seed, seed;
    char desc[200];
    int op_id, cases, failed_cases, case_failed;
} ctx;

/* One assertion; a failure names the device, op, mode, seed and case. */
int ops_expect(ctx *c, int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
#define EXPECT(c, cond, ...) ops_expect((c), !!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* A function, not a macro over EXPECT: the status expression (often the call under test)
 * must be evaluated exactly once. */
int ops_expect_ok(ctx *c, neat_status st, const char *what, const char *file, int line);
#define EXPECT_OK(c, st, what) ops_expect_ok((c), (st), (what), __FILE__, __LINE__)

/* ---- cases and seeds ----------------------------------------------------------------- */

void ops_begin(ctx *c, int op_id, const char *op);
/* Print the op's line: device, mode, op, cases and failed cases. */
void ops_end(ctx *c);
/* Start case `idx` of the current op: derive its seed, name its shape. */
nt_rng ops_case_begin(ctx *c, int idx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ops_case_end(ctx *c);

/* The sizes the random draws pick from: 0, 1, primes and 2^k +- 1 up to 257. */
extern const int64_t OPS_SIZES[14];
/* One of OPS_SIZES[0..max_index]. */
int64_t ops_draw_size(nt_rng *r, int max_index);

/* ---- host/device tensor pairs ------------------------------------------------------- */

enum { F_UNIFORM, F_INT, F_NAN, F_WIDE, F_NEG, F_UNIT, F_GIVEN };

/* A device tensor and the host contents last written to it (a guarded buffer). */
typedef struct ht {
    neat_tensor *t;
    float *v;
    int64_t n;
} ht;

int64_t ops_numel(int ndim, const int64_t *shape);

/* "[2,3,5]", "[]" for a scalar. */
typedef struct dims_str { char s[80]; } dims_str;
dims_str ops_dims(int ndim, const int64_t *shape);

/* The input fill of the current mode: small integers in the int pass. */
int ops_in_fill(const ctx *c);

/* Create a tensor of the shape, fill its host copy as `how` says and write it. */
int ht_make(ctx *c, ht *h, int ndim, const int64_t *shape, int how, nt_rng *r);
/* Rewrite the tensor from its host copy (after the caller changed h->v). */
int ht_upload(ctx *c, ht *h);
void ht_free(ht *h);
/* Read the tensor into a new guarded buffer (prefilled with NaN) and check its guards. */
float *ht_read(ctx *c, const ht *h, const char *name);
/* An op must not touch its inputs: read back, compare bit for bit. */
void ht_unchanged(ctx *c, const ht *h, const char *name);

/* A double array of n elements (at least one, so that n = 0 is not a NULL). */
double *ops_dnew(int64_t n);
double *ops_to_double(const float *v, int64_t n);

/* Record with `st`, then commit and wait. */
int ops_run(ctx *c, neat_cmdbuf *cb, neat_status st);

/* ---- comparison ------------------------------------------------------------------- */

/* got against ref over n elements. tol == NULL: exact, got must equal the float32 rounding
 * of ref; tol given: |got - ref| <= tol[i]; skip_elem: no per-element test. rel >= 0 adds
 * ||got - ref||_F <= rel ||ref||_F. NaN (an element never written) fails every test. */
void ops_compare(ctx *c, const char *name, const float *got, const double *ref,
                 const double *tol, int skip_elem, int64_t n, double rel);

/* Sigmoid, tanh and gelu: not exact in float32, their tolerance adds 1e-5 |y| + 4 2^-24 (1+|z|). */
int ops_act_smooth(neat_activation act);

#endif
