/*
 * fma_peak.c — the CPU's FMA peak, measured: the yardstick of the compute-bound cases
 * (issue 13: matmul and conv at >= 90% of the FMA peak measured in the same run).
 *
 * Every thread of the CPU backend's pool (props.num_threads: NEATML_NUM_THREADS, or every
 * processor, as the backend's OpenMP threads) runs the same loop at once: 12 independent
 * vector accumulators, a = a·m + c each, so that the FMA units never wait for a result
 * (12 in flight cover a 4-cycle latency on two units, and Haswell's 5). The rate is the
 * flops of all threads over the wall time from the first start to the last finish: 32 flops
 * per 512-bit FMA (16 lanes, multiply and add), 16 per 256-bit one, like the cases' times
 * in wall time. ctx->reps runs of about 40 ms each after one untimed run: the rate is the
 * median run's (as for a case), best_rate the fastest run's, the peak (compare.py's
 * yardstick: work of other processes on a shared machine can only slow a run down).
 *
 * The clock under that load (no `perf stat -e cycles` without a hardware PMU, which a KVM
 * guest may lack): the peak loop's 12 FMAs plus a chain of 3 dependent integer multiplies
 * per iteration (3 cycles each; port 1 on Intel cores, which 512-bit FMAs leave free). On a
 * core with two FMA units the FMAs need 6 cycles, so the chain sets the pace, 9 cycles an
 * iteration, while 1.33 wide FMAs a cycle keep the core at its vector clock: iterations x 9
 * per second of thread CPU time (preemption left out) is that clock, and the peak loop's
 * FMAs per cycle follow (2.0 on such a core; a core with one FMA unit makes the mixed loop
 * FMA-bound, and then reads 1.33). A chain of adds alone (one cycle each) gives the clock
 * without vector load. On the development VM (Ice Lake-SP) the mixed loop read 2.63-2.66
 * GHz, the adds alone 3.3-3.4 GHz; a chain of 8 adds in place of the multiplies read
 * 2.48-2.64 GHz, less steady (adds compete with the FMAs for ports 0 and 5).
 *
 * The loops are compiled for their ISA with target attributes, so the rest of the bench
 * keeps its flags; at run time AVX-512F is used where the CPU and OS have it, else AVX2+FMA,
 * else the case is not available (so too on non-x86 machines and on a non-CPU backend).
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FMA_PEAK_X86 1
#endif

enum { PEAK_ACC = 12, MIXED_CYCLES = 9, SCALAR_CHAIN = 64 };
#define RUN_S 0.04 /* seconds per timed run */

typedef enum loop_kind { LOOP_PEAK, LOOP_MIXED, LOOP_SCALAR } loop_kind;

#ifdef FMA_PEAK_X86
static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* m close to 1 and c small: the accumulators settle near c/(1-m), never denormal or inf. */
#define FMA_M 0.99999994f
#define FMA_C 1e-7f

/* Three dependent multiplies: 9 cycles (imul r64's latency is 3). */
#define IMUL3 "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
/* One cycle per add (its latency), the chain's register the only input of each. */
#define ADD8                                                                                       \
    "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"                                     \
    "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"

/* n iterations of 12 independent 512-bit FMAs, with (mixed) or without a chain of 3
 * dependent multiplies beside them; returns a value that depends on every
 * accumulator, so none is optimised away. */
__attribute__((target("avx512f"))) static float fma_loop_avx512(long n, int mixed) {
    const __m512 m = _mm512_set1_ps(FMA_M), c = _mm512_set1_ps(FMA_C);
    __m512 a0 = _mm512_set1_ps(0.0f), a1 = _mm512_set1_ps(0.1f), a2 = _mm512_set1_ps(0.2f),
           a3 = _mm512_set1_ps(0.3f), a4 = _mm512_set1_ps(0.4f), a5 = _mm512_set1_ps(0.5f),
           a6 = _mm512_set1_ps(0.6f), a7 = _mm512_set1_ps(0.7f), a8 = _mm512_set1_ps(0.8f),
           a9 = _mm512_set1_ps(0.9f), a10 = _mm512_set1_ps(1.0f), a11 = _mm512_set1_ps(1.1f);
    unsigned long x = 1, one = 1;
    for (long i = 0; i < n; i++) {
        a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c);
        a2 = _mm512_fmadd_ps(a2, m, c), a3 = _mm512_fmadd_ps(a3, m, c);
        a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c);
        a8 = _mm512_fmadd_ps(a8, m, c), a9 = _mm512_fmadd_ps(a9, m, c);
        a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
        if (mixed) __asm__ volatile(IMUL3 : "+r"(x) : "r"(one));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s) + (float)x;
}

/* The same with 256-bit FMAs (AVX2 + FMA3). */
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long n, int mixed) {
    const __m256 m = _mm256_set1_ps(FMA_M), c = _mm256_set1_ps(FMA_C);
    __m256 a0 = _mm256_set1_ps(0.0f), a1 = _mm256_set1_ps(0.1f), a2 = _mm256_set1_ps(0.2f),
           a3 = _mm256_set1_ps(0.3f), a4 = _mm256_set1_ps(0.4f), a5 = _mm256_set1_ps(0.5f),
           a6 = _mm256_set1_ps(0.6f), a7 = _mm256_set1_ps(0.7f), a8 = _mm256_set1_ps(0.8f),
           a9 = _mm256_set1_ps(0.9f), a10 = _mm256_set1_ps(1.0f), a11 = _mm256_set1_ps(1.1f);
    unsigned long x = 1, one = 1;
    for (long i = 0; i < n; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c), a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c), a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c), a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c), a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c), a9 = _mm256_fmadd_ps(a9, m, c);
        a10 = _mm256_fmadd_ps(a10, m, c), a11 = _mm256_fmadd_ps(a11, m, c);
        if (mixed) __asm__ volatile(IMUL3 : "+r"(x) : "r"(one));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7] + (float)x;
}

/* n iterations of SCALAR_CHAIN dependent integer adds: that many cycles each (the loop's
 * counter runs beside the chain on other ports). */
static float scalar_add_chain(long n) {
    unsigned long x = 0;
    for (long i = 0; i < n; i++)
        __asm__ volatile(ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 ADD8 : "+r"(x));
    return (float)x;
}
#undef ADD8
#undef IMUL3

/* Where the threads of one run wait until all of them exist (go), or learn that the run
 * is off (a thread could not be created). */
typedef struct start_gate {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int go, abandon;
} start_gate;

typedef struct peak_thread {
    pthread_t tid;
    start_gate *gate;
    int avx512;
    loop_kind kind;
    long iters;
    double t0, t1; /* wall clock (CLOCK_MONOTONIC) around the loop */
    double cpu_s;  /* the thread's CPU time in the loop: not the time it was preempted */
    float sink;
} peak_thread;

static void run_loop(peak_thread *t) {
    if (t->kind == LOOP_SCALAR)
        t->sink = scalar_add_chain(t->iters);
    else if (t->avx512)
        t->sink = fma_loop_avx512(t->iters, t->kind == LOOP_MIXED);
    else
        t->sink = fma_loop_avx2(t->iters, t->kind == LOOP_MIXED);
}

static void *peak_thread_main(void *arg) {
    peak_thread *t = arg;
    start_gate *g = t->gate;
    pthread_mutex_lock(&g->lock);
    while (!g->go) pthread_cond_wait(&g->cv, &g->lock);
    int abandon = g->abandon;
    pthread_mutex_unlock(&g->lock);
    if (abandon) return NULL;
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    t->t0 = clock_s(CLOCK_MONOTONIC);
    run_loop(t);
    t->t1 = clock_s(CLOCK_MONOTONIC);
    t->cpu_s = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    return NULL;
}

/* One run of `kind` on nthreads threads released together; returns the wall seconds from
 * the first start to the last end (< 0 when a thread could not be created). The mean of
 * the threads' CPU seconds goes to *cpu_s. */
static double run_threads(peak_thread *th, int nthreads, int avx512, loop_kind kind, long iters,
                          double *cpu_s) {
    start_gate g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        th[i] = (peak_thread){.gate = &g, .avx512 = avx512, .kind = kind, .iters = iters};
        if (pthread_create(&th[i].tid, NULL, peak_thread_main, &th[i]) != 0) break;
        started++;
    }
    pthread_mutex_lock(&g.lock);
    g.go = 1;
    g.abandon = started < nthreads;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.lock);
    double first = 1e300, last = 0, sum = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i].tid, NULL);
        if (th[i].t0 < first) first = th[i].t0;
        if (th[i].t1 > last) last = th[i].t1;
        sum += th[i].cpu_s;
    }
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.lock);
    if (started < nthreads) return -1;
    *cpu_s = sum / nthreads;
    return last - first;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_sorted(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Iterations of `kind` for a run of about RUN_S on the whole pool (0: no threads). */
static long calibrate(peak_thread *th, int nthreads, int avx512, loop_kind kind) {
    long iters = 1 << 12;
    double cpu;
    for (;;) { /* at least 5 ms, then scaled */
        double s = run_threads(th, nthreads, avx512, kind, iters, &cpu);
        if (s < 0) return 0;
        if (s > 5e-3) return (long)((double)iters * RUN_S / s) + 1;
        iters *= 4;
    }
}

/* What the timed rounds found (medians over rounds, and the fastest peak run). */
typedef struct peak_found {
    double wall_s, best_wall_s, cpu_s; /* the peak loop: wall and mean thread CPU seconds */
    double ghz, ghz_scalar, fma_per_cycle;
} peak_found;

/* reps rounds, each the scalar chain (after a 10 ms pause: a core keeps its vector clock a
 * while after its last wide FMA), the peak loop and the mixed loop, back to back so
 * that the clocks and the peak of a round are measured under the same conditions. */
static int measure(peak_thread *th, int nthreads, int avx512, int reps, const long iters[3],
                   peak_found *out) {
    double *v = malloc(5 * (size_t)reps * sizeof *v);
    if (!v) return 0;
    double *wall = v, *cpu = v + reps, *ghz = v + 2 * reps, *ghz_sc = v + 3 * reps,
           *fpc = v + 4 * reps;
    int ok = 1;
    for (int r = 0; ok && r < reps; r++) {
        double mixed_cpu, sc_cpu;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
        ok = run_threads(th, nthreads, avx512, LOOP_SCALAR, iters[LOOP_SCALAR], &sc_cpu) >= 0;
        wall[r] = ok ? run_threads(th, nthreads, avx512, LOOP_PEAK, iters[LOOP_PEAK], &cpu[r]) : -1;
        ok = ok && wall[r] >= 0 &&
             run_threads(th, nthreads, avx512, LOOP_MIXED, iters[LOOP_MIXED], &mixed_cpu) >= 0;
        if (!ok) break;
        ghz[r] = (double)iters[LOOP_MIXED] * MIXED_CYCLES / mixed_cpu * 1e-9; /* chain-bound */
        ghz_sc[r] = (double)iters[LOOP_SCALAR] * SCALAR_CHAIN / sc_cpu * 1e-9;
        fpc[r] = (double)iters[LOOP_PEAK] * PEAK_ACC / cpu[r] * 1e-9 / ghz[r];
        if (r == 0 || wall[r] < out->best_wall_s) out->best_wall_s = wall[r];
    }
    if (ok) {
        out->wall_s = median_sorted(wall, reps);
        out->cpu_s = median_sorted(cpu, reps);
        out->ghz = median_sorted(ghz, reps);
        out->ghz_scalar = median_sorted(ghz_sc, reps);
        out->fma_per_cycle = median_sorted(fpc, reps);
    }
    free(v);
    return ok;
}

#endif /* FMA_PEAK_X86 */

void bench_fma_peak(bench_ctx *ctx, bench_result *res) {
    memset(res, 0, sizeof *res);
    res->outcome = BENCH_UNAVAILABLE;
    if (ctx->props.backend != NEAT_BACKEND_CPU) {
        snprintf(res->reason, sizeof res->reason,
                 "the FMA peak is measured for the cpu backend (its threads run the loop)");
        return;
    }
#ifndef FMA_PEAK_X86
    snprintf(res->reason, sizeof res->reason,
             "no FMA peak loop for this architecture (x86-64 AVX-512F or AVX2+FMA only)");
#else
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f");
    if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        snprintf(res->reason, sizeof res->reason,
                 "this CPU has neither AVX-512F nor AVX2+FMA: no vector FMA loop to run");
        return;
    }
    const int nthreads = ctx->props.num_threads > 0 ? ctx->props.num_threads : 1;
    const int reps = ctx->reps > 0 ? ctx->reps : 1, lanes = avx512 ? 16 : 8;
    const char *isa = avx512 ? "avx512f" : "avx2";
    peak_thread *th = calloc((size_t)nthreads, sizeof *th);
    long iters[3] = {0, 0, 0};
    peak_found f;
    int ok = th != NULL;
    for (int k = LOOP_PEAK; ok && k <= LOOP_SCALAR; k++) {
        iters[k] = calibrate(th, nthreads, avx512, (loop_kind)k);
        ok = iters[k] > 0;
    }
    double unused;
    ok = ok && run_threads(th, nthreads, avx512, LOOP_PEAK, iters[LOOP_PEAK], &unused) >= 0 &&
         measure(th, nthreads, avx512, reps, iters, &f);
    free(th);
    if (!ok) {
        res->outcome = BENCH_ERROR;
        snprintf(res->reason, sizeof res->reason, "cannot start %d threads", nthreads);
        return;
    }
    double fmas = (double)iters[LOOP_PEAK] * PEAK_ACC; /* vector FMAs per thread and run */
    double flops = fmas * nthreads * lanes * 2.0;
    res->outcome = BENCH_OK;
    res->median_ms = res->wall_ms = f.wall_s * 1e3;
    bench_set_rate(res, flops, "GFLOP/s");
    snprintf(res->shape, sizeof res->shape, "%s, %d acc x %d thread%s; best %.1f; %.2f GHz", isa,
             PEAK_ACC, nthreads, nthreads == 1 ? "" : "s", flops / f.best_wall_s * 1e-9, f.ghz);
    snprintf(res->extra_json, sizeof res->extra_json,
             ", \"isa\": \"%s\", \"lanes\": %d, \"accumulators\": %d, \"best_rate\": %.6g"
             ", \"cpu_time_rate\": %.6g, \"ghz\": %.4g, \"ghz_scalar\": %.4g"
             ", \"fma_per_cycle\": %.4g",
             isa, lanes, PEAK_ACC, flops / f.best_wall_s * 1e-9, flops / f.cpu_s * 1e-9, f.ghz,
             f.ghz_scalar, f.fma_per_cycle);
#endif
}
