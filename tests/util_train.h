/*
 * util_train.h — what the optimizer replays of test_optim.c use: the tensors
 * of one case (tcase) and its host arrays (arena), random fills exact in float32, uploads
 * and guarded downloads, and the per-element plus relative Frobenius comparison against a
 * float64 reference.
 *
 * Setup steps (create, write, commit) count only when they fail, so what passes is the
 * checks themselves. Exported names start with tr_: every tests/util_*.c goes into one
 * static test library, where two definitions of a name clash.
 */
#ifndef NEATML_TEST_UTIL_TRAIN_H
#define NEATML_TEST_UTIL_TRAIN_H

#include "harness.h"

#define EPS32 0x1.0p-24
#define MAX_T 16

/* Tensors of one case, destroyed together. */
typedef struct tcase {
    neat_device *dev;
    const char *ctx;
    neat_tensor *t[MAX_T];
    int nt;
    int failed;
} tcase;

/* Host arrays of one case, freed together. */
typedef struct arena {
    double *p[40];
    int n;
} arena;

/* n doubles, zeroed (one more, so that n = 0 is not a NULL). */
double *tr_dnew(int64_t n);
/* n doubles from the arena; NULL once it holds 40. */
double *tr_anew(arena *a, int64_t n);
void tr_afree(arena *a);

/* Random values that are exactly representable in float32, so host and device agree. */
void tr_rand_fill(nt_rng *r, double *v, int64_t n, double lo, double hi);

/* Record a setup failure (only failures count: setup is not an assertion). */
int tr_setup_ok(neat_status st, const char *what, const char *ctx);

/* Write v (or NaN everywhere when v is NULL) into t; a failure marks the case failed. */
int tr_upload(tcase *c, neat_tensor *t, const double *v, int64_t n);
/* A tensor of the case holding v, or NaN everywhere when v is NULL (a poisoned output). */
neat_tensor *tr_mk(tcase *c, int ndim, const int64_t *shape, const double *v);
/* Read n values into out through a guarded buffer; counts one assertion (the guards). */
int tr_download(tcase *c, const neat_tensor *t, double *out, int64_t n);
void tr_case_free(tcase *c);

/* Commit and wait. Only a failure counts: the comparisons that follow are the assertions
 * (the optimizer tests commit 1000 times per case). */
int tr_run(tcase *c, neat_cmdbuf *cb);

/* One assertion per array: every element within tol[i] (NaN fails) and the relative
 * Frobenius error within frob. */
int tr_compare(const tcase *c, const char *what, const double *got, const double *ref,
               const double *tol, int64_t n, double frob);

const char *tr_act_name(neat_activation a);

#endif
