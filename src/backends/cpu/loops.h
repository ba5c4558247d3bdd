/*
 * loops.h — how the hand-written CPU loops (elementwise.c, pool.c, reduce.c, softmax.c,
 * optim.c) share work between OpenMP threads. Private to those files.
 *
 * A fork/join costs microseconds, and even a parallel region that an `if` clause turns
 * serial costs a few hundred nanoseconds, so below CPU_PAR_MIN elements the loops run on
 * the calling thread without entering OpenMP at all.
 */
#ifndef NEATML_CPU_LOOPS_H
#define NEATML_CPU_LOOPS_H

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else /* built without OpenMP (macOS without libomp): every region runs on one thread */
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif

#define CPU_PAR_MIN 32768

/* Threads for `work` elements: nthreads when large enough, else 1. */
static inline int cpu_par(int nthreads, int64_t work) {
    return nthreads > 1 && work >= CPU_PAR_MIN ? nthreads : 1;
}

/* Run the statement given last with int64_t lo, hi bound to one contiguous range of [0, n) per
 * thread (ranges
 * start at multiples of 16 floats, so threads share no cache line), or to [0, n) on the
 * calling thread when par is 1. */
#define CPU_SPLIT(par, n, lo, hi, ...)                                                             \
    do {                                                                                           \
        int64_t n_ = (n);                                                                          \
        int par_ = (par);                                                                          \
        if (par_ <= 1) {                                                                           \
            int64_t lo = 0, hi = n_;                                                               \
            __VA_ARGS__;                                                                           \
        } else {                                                                                   \
            _Pragma("omp parallel num_threads(par_)") {                                            \
                int64_t nt_ = omp_get_num_threads(), t_ = omp_get_thread_num();                    \
                int64_t per_ = ((n_ + nt_ - 1) / nt_ + 15) & ~(int64_t)15;                         \
                int64_t lo = t_ * per_, hi = lo + per_ < n_ ? lo + per_ : n_;                      \
                if (lo < hi) __VA_ARGS__;                                                          \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* for (int64_t i = 0; i < n; i++) <the statement given last>, statically split over par threads
 * when par > 1. */
#define CPU_FOR(par, i, n, ...)                                                                    \
    do {                                                                                           \
        int64_t n_ = (n);                                                                          \
        int par_ = (par);                                                                          \
        if (par_ <= 1) {                                                                           \
            for (int64_t i = 0; i < n_; i++) __VA_ARGS__;                                          \
        } else {                                                                                   \
            _Pragma("omp parallel for schedule(static) num_threads(par_)") for (int64_t i = 0;     \
                                                                                i < n_; i++)       \
                __VA_ARGS__;                                                                       \
        }                                                                                          \
    } while (0)

#endif
