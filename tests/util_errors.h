/*
 * util_errors.h — what the error-contract tests (test_errors_ops.c, test_errors_aliasing.c,
 * test_errors_api.c) share: two CPU devices, a sentinel tensor, filled tensors, and the
 * checker of one op call.
 *
 * The checker: err_case_begin writes a pattern into each output of the call under test,
 * zeroes the sentinel and opens a buffer that already holds one valid op (a fill of the
 * sentinel with 42); the call is recorded into that buffer; err_case_end checks the exact
 * status and a substring of neat_last_error(), the buffer's op count, commits and waits,
 * and then checks that a rejected call left every output's pattern bit for bit and that
 * the valid op ran. Exported names start with err_: every tests/util_*.c goes into one
 * static test library, where two definitions of a name clash.
 */
#ifndef NEATML_TEST_UTIL_ERRORS_H
#define NEATML_TEST_UTIL_ERRORS_H

#include "harness.h"

extern neat_device *err_dev, *err_dev2; /* two CPU devices: tensors of dev2 are foreign to dev */
extern neat_tensor *err_sentinel;       /* [4], set to 42 by the valid op of every buffer */
extern int err_ncases;                  /* op calls checked through err_case_end */

/* Open both devices and the sentinel. On failure: one failed assertion, returns 0. */
int err_open(void);
void err_close(void);

/* A tensor of d; a failure to create it is a failed assertion (setup). */
neat_tensor *err_make(neat_device *d, int ndim, const int64_t *shape);
/* A tensor of err_dev with every element set to value. */
neat_tensor *err_make_filled(int ndim, const int64_t *shape, float value);
/* A tensor of err_dev of shape {d0, d1, d2, d3}[0..ndim), filled with 1. */
neat_tensor *err_ts(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

/* Write each output's pattern, zero the sentinel, and open a buffer holding the valid op. */
neat_cmdbuf *err_case_begin(neat_tensor *const *outs, int nouts);
/* Check the call's status and message, that cb holds `want_ops` ops, that the buffer runs,
 * that a rejected call left every output's pattern bit for bit, and that the valid op ran.
 * Destroys cb. */
void err_case_end(neat_cmdbuf *cb, neat_status st, neat_status want, const char *sub,
                  const char *what, neat_tensor *const *outs, int nouts, int64_t want_ops);

#endif
