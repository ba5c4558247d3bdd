/*
 * harness.h — the shared checker of every C test binary.
 *
 * A test counts each assertion as passed or failed and each case that could not run as
 * skipped (with its reason). nt_finish prints the closing line "<suite>: N passed, M failed,
 * K skipped" and returns the process exit status (non-zero when anything failed).
 */
#ifndef NEATML_TEST_HARNESS_H
#define NEATML_TEST_HARNESS_H

#include "neatml.h"
#include "rng.h"

#include <stdint.h>
#include <stdio.h>

extern int nt_passed, nt_failed, nt_skipped;

/* Count one assertion; on failure print file:line and the formatted explanation. */
int nt_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) nt_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* Assert a status, printing neat_last_error() when it differs. The call inside runs once. */
int nt_check_status(neat_status st, neat_status want, const char *what, const char *file, int line);
#define CHECK_STATUS(st, want, what) nt_check_status((st), (want), (what), __FILE__, __LINE__)
#define CHECK_OK(st, what) CHECK_STATUS(st, NEAT_OK, what)

void nt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int nt_finish(const char *suite);

/* A suite's base seed: NEATML_TEST_SEED when set, else dflt; printed once, so that a failure
 * can be run again. Each case derives its own seed from it. */
uint64_t nt_seed_base(const char *suite, uint64_t dflt);

/* 1 when the environment variable var is unset or empty, or lists name among its
 * comma-separated entries (NEATML_TEST_KINDS, NEATML_TEST_ONLY: a partial run). */
int nt_env_lists(const char *var, const char *name);

/* Deterministic random numbers (splitmix64, tools/rng.h, shared with bench/), seeded per case
 * and printed on failure. */
typedef rng64 nt_rng;
static inline uint64_t nt_next(nt_rng *r) { return rng64_next(r); }
static inline double nt_uniform(nt_rng *r, double lo, double hi) {
    return rng64_uniform(r, lo, hi);
}
static inline int64_t nt_randint(nt_rng *r, int64_t lo, int64_t hi) {
    return rng64_randint(r, lo, hi);
}

/* Backends to test: every one that is built; one that cannot open a device here is
 * reported as skipped with the library's reason. NEATML_TEST_BACKENDS ("cpu,cuda")
 * narrows the list. Returns the count of devices opened into devs/names. */
#define NT_MAX_BACKENDS 3
int nt_open_devices(neat_device **devs, const char **names);
void nt_close_devices(neat_device **devs, int n);

/* Host buffers with guard bands: nt_alloc gives n floats preceded and followed by
 * NT_GUARD floats of a fixed pattern; nt_guard_ok checks the pattern is intact. */
#define NT_GUARD 16
float *nt_alloc(int64_t n);
int nt_guard_ok(const float *p, int64_t n);
void nt_free(float *p);
void nt_poison(float *p, int64_t n); /* fill with NaN */

/* Between an NCHW array of shape s = {n, c, h, w} and its NHWC order (the tests of
 * NEAT_LAYOUT_NHWC): to_nhwc 1: dst[n,h,w,c] = src[n,c,h,w]; 0: the inverse. */
void nt_permute_nhwc(const int64_t *s, const float *src, float *dst, int to_nhwc);

#endif
