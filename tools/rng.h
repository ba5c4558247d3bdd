/*
 * rng.h — the deterministic random numbers of the tests and the benchmark: splitmix64
 * (Steele, Lea, Flood 2014), one 64-bit state, seeded per case so that a failure printed with
 * its seed can be run again. Header-only; not for anything that needs unpredictability.
 */
#ifndef NEATML_TOOLS_RNG_H
#define NEATML_TOOLS_RNG_H

#include <stdint.h>

typedef struct rng64 {
    uint64_t s;
} rng64;

static inline uint64_t rng64_next(rng64 *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi), 53 random bits. */
static inline double rng64_uniform(rng64 *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rng64_next(r) >> 11) * 0x1.0p-53);
}

/* Integer in [lo, hi] (modulo bias below 2^-40 for the ranges used here). */
static inline int64_t rng64_randint(rng64 *r, int64_t lo, int64_t hi) {
    return lo + (int64_t)(rng64_next(r) % (uint64_t)(hi - lo + 1));
}

#endif
