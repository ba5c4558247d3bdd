/*
 * conv.cuh — what conv.cu (the convolution ops) and conv_plan.cu (plans and the choice of
 * algorithms) share: a plan per geometry, math mode and type, its algorithm slots, and the
 * call that readies them for an op.
 */
#pragma once

#include "common.cuh"
#include "../lru.h"

/* Find's candidates a slot is timed over again (conv_tune). */
#define CONV_CANDIDATES 4
/* The algorithm number of conv_gemm.cu's backward filter (strict float32, one group): timed
 * beside Find's candidates, never one of cuDNN's numbers. */
#define CONV_ALGO_GEMM 1000
/* The algorithm number of conv_gemm.cu's direct backward filter (3x3, stride 1, small
 * planes; strict float32, one group), timed beside the others likewise. */
#define CONV_ALGO_DIRECT 1002
/* The algorithm number of an engine of cuDNN's backend API (conv_engine.cu), and how many of
 * the heuristics' allowed engines are timed beside the legacy candidates. */
#define CONV_ALGO_ENGINE 1001
#define CONV_ENGINES 16
/* Candidates a slot may hold: Find's, conv_gemm.cu's two, the engines. */
#define CONV_MAX_CANDS (CONV_CANDIDATES + 2 + CONV_ENGINES)

/* Algorithm slots of a plan: CONV_FWD_PRECOMP is the forward restricted to
 * IMPLICIT_PRECOMP_GEMM (the fused call of half tensors), chosen from the same ranking. */
enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER, CONV_FWD_PRECOMP, CONV_NALGO };

typedef struct conv_cand {
    int algo;
    cudnnMathType_t math;
    size_t ws;
    cudnnBackendDescriptor_t engine; /* CONV_ALGO_ENGINE: its execution plan */
} conv_cand;

/* A slot's choice: a legacy algorithm (or conv_gemm.cu's), which every run may take, and, when
 * an engine was timed faster, that engine for the runs it can take (beta 0, aligned
 * tensors: conv_engine.cu). */
typedef struct conv_algo {
    int ready, algo; /* algo -1: none usable (CONV_FWD_PRECOMP only; the others fail) */
    cudnnMathType_t math;
    size_t ws;
    cudnnBackendDescriptor_t engine; /* NULL: none */
    size_t engine_ws;
    float engine_ratio; /* the engine's timed median over the legacy choice's (0: forced) */
    /* Find's that suit the slot, best first; conv_gemm.cu's two; then the engines */
    conv_cand cand[CONV_MAX_CANDS];
    int ncand; /* > 1 while the candidates wait to be timed; 0 once they were */
} conv_algo;

/* fused[] states: untried, accepted by cuDNN, refused (then the unfused path runs). */
enum { FUSE_UNTRIED, FUSE_OK, FUSE_REFUSED };

typedef struct conv_plan {
    nm_conv_geom g;
    int math;
    int dtype;                          /* neat_dtype of every tensor */
    cudnnTensorDescriptor_t xd, yd, bd; /* bd: the bias, [1, K, 1, 1] */
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnActivationDescriptor_t ad[2]; /* IDENTITY, RELU */
    int fused[2];                      /* FUSE_*, for no activation and for relu */
    conv_algo algo[CONV_NALGO];
} conv_plan;

struct cuda_conv_cache {
    nm_lru lru;
    int fuse;   /* NEATML_CONV_FUSE: 0 never, 1 fuse or fall back, 2 fuse or fail, 3 2 + forced */
    int tune;   /* NEATML_CONV_TUNE is not "0" */
    int gemm;   /* NEATML_CONV_GEMM: 0 never conv_gemm.cu's backward filters, 2 always its im2col
                 * GEMM, 3 always its direct kernel where it fits (else the GEMM), else timed */
    int engine; /* NEATML_CONV_ENGINE: 0 never an engine, 2 the first allowed one, else timed */
    int small;  /* NEATML_CONV_SMALL is not "0": conv_small.cu's kernels where they fit */
};

/* The op's tensors its algorithms are timed on (conv_tune), read only: x and w for the
 * forward, w and dy for backward data, x and dy for backward filter (dy standing for the dz of
 * the op's own run: the same shape and type). */
typedef struct conv_inputs {
    const void *x, *w, *dy;
} conv_inputs;

/* Workspace an algorithm may ask for. */
#define CONV_WS_MAX ((size_t)1 << 30)

/* Whether algo is one of conv_gemm.cu's backward filters; conv_own_wgrad runs it: dw =
 * conv_bwd_filter(x, dz) (+ beta dw) in strict float32. */
static inline int conv_is_own(int algo) {
    return algo == CONV_ALGO_GEMM || algo == CONV_ALGO_DIRECT;
}

static inline neat_status conv_own_wgrad(nm_device *dev, int algo, const nm_conv_geom *g,
                                         const void *x, const void *dz, float beta, void *dw,
                                         void *ws, const char *what) {
    return (algo == CONV_ALGO_GEMM ? cuda_conv_gemm_wgrad : cuda_conv_direct_wgrad)(
        dev, g, (const float *)x, (const float *)dz, beta, (float *)dw, ws, what);
}

/* Bytes of what slot `which` writes: y, dx or dw. */
static inline size_t conv_out_bytes(const conv_plan *p, int which) {
    const nm_conv_geom &g = p->g;
    int64_t n = which == CONV_BWD_DATA     ? g.n * g.c * g.h * g.w
                : which == CONV_BWD_FILTER ? g.k * (g.c / g.groups) * g.kh * g.kw
                                           : g.n * g.k * g.p * g.q;
    return (size_t)n * neat_dtype_size((neat_dtype)p->dtype);
}

/* The device's plan cache, made at its first convolution (reads NEATML_CONV_*). */
neat_status conv_cache_get(cuda_device *d, const char *what);

/* Plan, algorithms (slots which[0..nwhich), timed on in at their first eager use) and
 * workspace (scratch slot 1, sized for the largest algorithm the op uses) for one op. */
neat_status conv_prepare(nm_device *dev, nm_cmdbuf *cb, const nm_conv_geom *g, neat_math_mode math,
                         neat_dtype dtype, const int *which, int nwhich, const conv_inputs *in,
                         conv_plan **plan, const conv_algo **algos, void **ws, const char *what);

/* conv_tune.cu: time slot which's candidates (a->ncand > 1) on the op's inputs and keep the
 * fastest in a (never during a capture). */
neat_status conv_tune(nm_device *dev, conv_plan *p, int which, conv_algo *a, const conv_inputs *in,
                      const char *what);

/* conv_engine.cu: destroy the engines a slot holds (its choice, candidates not yet timed);
 * up to max allowed engine candidates of direction kind (host calls only; 0
 * when none), whether pointers suit an engine, one run of an engine's plan. */
void conv_drop_engines(conv_algo *a);
int conv_engines(cuda_device *d, const conv_plan *p, int kind, size_t ws_max, conv_cand *out,
                 int max);
int conv_engine_aligned(const void *a, const void *b, const void *c);
cudnnStatus_t conv_engine_run(cuda_device *d, cudnnBackendDescriptor_t plan, const void *x,
                              const void *w, const void *y, void *ws);
/* The exactness probe's kernels: small integers into n elements of dtype; *flag = 1 where a
 * and b differ. */
cudaError_t conv_probe_fill(cudaStream_t s, void *p, int64_t n, int dtype, uint32_t salt);
cudaError_t conv_probe_diff(cudaStream_t s, const void *a, const void *b, int64_t n, int dtype,
                            int *flag);
