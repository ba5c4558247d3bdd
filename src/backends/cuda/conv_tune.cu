/*
 * conv_tune.cu — timing a convolution slot's candidates (conv_plan.cu's pick and add_engines
 * list them): Find's first legacy algorithms, conv_gemm.cu's backward filter, and cuDNN's
 * backend-API engines (conv_engine.cu), the engines first probed for exactness where the
 * plan's rule asks for it (probe_engines). See conv_plan.cu's top comment for why timing at
 * all.
 */
#include "conv.cuh"

#define CONV_TUNE_RUNS 5 /* timed runs per candidate after a warm-up; its time: their median */

/* One run of candidate c of slot `which` on in, into out (beta = 0), with workspace ws. */
static cudnnStatus_t run_candidate(nm_device *dev, conv_plan *p, int which, const conv_cand *c,
                                   const conv_inputs *in, void *out, void *ws) {
    cuda_device *d = cuda_dev(dev);
    const float one = 1.0f, zero = 0.0f;
    if (c->algo == CONV_ALGO_ENGINE) /* the graph's x, w, y: the output is one of them */
        return which == CONV_BWD_DATA     ? conv_engine_run(d, c->engine, out, in->w, in->dy, ws)
               : which == CONV_BWD_FILTER ? conv_engine_run(d, c->engine, in->x, out, in->dy, ws)
                                          : conv_engine_run(d, c->engine, in->x, in->w, out, ws);
    if (conv_is_own(c->algo))
        return conv_own_wgrad(dev, c->algo, &p->g, in->x, in->dy, 0.0f, out, ws, "conv_tune") ==
                       NEAT_OK
                   ? CUDNN_STATUS_SUCCESS
                   : CUDNN_STATUS_EXECUTION_FAILED;
    if (which == CONV_BWD_DATA)
        return cudnnConvolutionBackwardData(d->dnn, &one, p->wd, in->w, p->yd, in->dy, p->cd,
                                            (cudnnConvolutionBwdDataAlgo_t)c->algo, ws, c->ws,
                                            &zero, p->xd, out);
    if (which == CONV_BWD_FILTER)
        return cudnnConvolutionBackwardFilter(d->dnn, &one, p->xd, in->x, p->yd, in->dy, p->cd,
                                              (cudnnConvolutionBwdFilterAlgo_t)c->algo, ws, c->ws,
                                              &zero, p->wd, out);
    return cudnnConvolutionForward(d->dnn, &one, p->xd, in->x, p->wd, in->w, p->cd,
                                   (cudnnConvolutionFwdAlgo_t)c->algo, ws, c->ws, &zero, p->yd,
                                   out);
}

static size_t up256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Engines are admitted by cuDNN's numerical notes (conv_engine.cu) and, where the plan's rule
 * makes every result exact on integer data (strict float32: float32 products and sums; half
 * tensors: exact products, float32 sums, one rounding), by a probe too: on small-integer
 * inputs of the op's shapes each engine must give, value for value, what the slot's first
 * legacy candidate (GEMM-like, or conv_gemm.cu's) gives, the one exact result. Seen on the
 * H200 (2026-11-30, 19:25 UTC): the heuristics' first allowed engine for strict float32's
 * backward filter of x 2x32x14x14, 64 filters 3x3, carried no FFT or Winograd note and gave
 * dw = 128.000061 for 128 in test_conformance's integer pass. An engine that differs, or
 * that could not be probed, is marked bad[i] = 1. Synchronous, once per slot. */
static void probe_engines(nm_device *dev, conv_plan *p, int which, conv_algo *a, int n, int *bad) {
    cuda_device *d = cuda_dev(dev);
    const nm_conv_geom &g = p->g;
    size_t es = neat_dtype_size((neat_dtype)p->dtype);
    int64_t nx = g.n * g.c * g.h * g.w, nw = g.k * (g.c / g.groups) * g.kh * g.kw,
            ny = g.n * g.k * g.p * g.q;
    int64_t nout = which == CONV_BWD_DATA ? nx : which == CONV_BWD_FILTER ? nw : ny;
    size_t bx = up256(nx * es), bw = up256(nw * es), by = up256(ny * es), bo = up256(nout * es),
           ws_max = 0;
    int ref = -1, engines = 0;
    for (int i = 0; i < n; i++) {
        if (a->cand[i].algo == CONV_ALGO_ENGINE)
            bad[i] = 1, engines++; /* until it passes */
        else if (ref < 0)
            ref = i;
        if (a->cand[i].ws > ws_max) ws_max = a->cand[i].ws;
    }
    char *m = NULL;
    if (!engines || ref < 0) return;
    if (cudaMalloc((void **)&m, bx + bw + by + 2 * bo + 256 + ws_max) != cudaSuccess) {
        cudaGetLastError();
        return;
    }
    char *x = m, *w = x + bx, *y = w + bw, *want = y + by, *got = want + bo, *ws = got + bo + 256;
    int *flag = (int *)(got + bo);
    cudaStream_t s = d->stream;
    const conv_inputs in = {x, w, y};
    int ok = conv_probe_fill(s, x, nx, p->dtype, 1) == cudaSuccess &&
             conv_probe_fill(s, w, nw, p->dtype, 2) == cudaSuccess &&
             conv_probe_fill(s, y, ny, p->dtype, 3) == cudaSuccess &&
             cudaMemsetAsync(ws, 0, ws_max, s) == cudaSuccess &&
             cudnnSetConvolutionMathType(p->cd, a->cand[ref].math) == CUDNN_STATUS_SUCCESS &&
             run_candidate(dev, p, which, &a->cand[ref], &in, want, ws) == CUDNN_STATUS_SUCCESS;
    for (int i = 0; ok && i < n; i++) {
        if (a->cand[i].algo != CONV_ALGO_ENGINE) continue;
        int differs = 1;
        if (cudaMemsetAsync(flag, 0, sizeof(int), s) == cudaSuccess &&
            run_candidate(dev, p, which, &a->cand[i], &in, got, ws) == CUDNN_STATUS_SUCCESS &&
            conv_probe_diff(s, want, got, nout, p->dtype, flag) == cudaSuccess &&
            cudaMemcpyAsync(&differs, flag, sizeof differs, cudaMemcpyDeviceToHost, s) ==
                cudaSuccess &&
            cudaStreamSynchronize(s) == cudaSuccess)
            bad[i] = differs != 0;
        cudaGetLastError(); /* a refused or failed engine: not the op's error */
    }
    cudaStreamSynchronize(s);
    cudaGetLastError();
    cudaFree(m);
}

static float median_ms(float *t, int n) { /* sorts t */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            float s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[n / 2];
}

/* Keep candidate i of a's (ok[i]: it ran; ms[i]: its time): the fastest legacy one (or
 * conv_gemm.cu's) as a's algorithm, which every run may take, and the fastest engine, if
 * faster still (under NEATML_CONV_ENGINE=2: the first that ran), as a's engine; the other
 * engines' plans are destroyed. None ran: Find's first stays. */
static void keep_fastest(cuda_device *d, conv_algo *a, int n, const int *ok, const float *ms) {
    int legacy = -1, engine = -1;
    for (int i = 0; i < n; i++) {
        if (!ok[i]) continue;
        if (a->cand[i].algo != CONV_ALGO_ENGINE) {
            if (legacy < 0 || ms[i] < ms[legacy]) legacy = i;
        } else if (engine < 0 || (d->conv->engine != 2 && ms[i] < ms[engine])) {
            engine = i;
        }
    }
    if (legacy >= 0) {
        a->algo = a->cand[legacy].algo;
        a->math = a->cand[legacy].math;
        a->ws = a->cand[legacy].ws;
    }
    if (engine >= 0 && legacy >= 0 && d->conv->engine != 2 && ms[engine] >= ms[legacy]) engine = -1;
    for (int i = 0; i < n; i++) {
        if (a->cand[i].algo != CONV_ALGO_ENGINE) continue;
        if (i == engine) {
            a->engine = a->cand[i].engine;
            a->engine_ws = a->cand[i].ws;
            a->engine_ratio = d->conv->engine == 2 || legacy < 0 ? 0.0f : ms[i] / ms[legacy];
        } else {
            cudnnBackendDestroyDescriptor(a->cand[i].engine);
        }
        a->cand[i].engine = NULL;
    }
}

/* Time a's candidates on the op's inputs and keep the fastest in a: per candidate one warm-up
 * run, then CONV_TUNE_RUNS runs, each between two events, all on the stream, one wait for
 * all. A candidate's time is the median of its runs, neither the sum nor the minimum: noise
 * on a GPU (clocks, other work) mostly slows single runs down, and a slowed run moves the sum
 * and a lucky one the minimum, not the median; it is also what the benchmark reports. The
 * runs write an output and a workspace of their own (one cudaMalloc, freed after the wait),
 * never the op's tensors. A candidate cuDNN refuses or fails is skipped, its CUDA error
 * cleared; without the memory, or when no candidate ran, Find's first stays. Done once,
 * whatever the outcome; only a failure of the events or of the stream is the op's error. */
neat_status conv_tune(nm_device *dev, conv_plan *p, int which, conv_algo *a, const conv_inputs *in,
                      const char *what) {
    cuda_device *d = cuda_dev(dev);
    enum { NEV = CONV_TUNE_RUNS + 1, NC = CONV_MAX_CANDS };
    cudaEvent_t ev[NC][NEV];
    int ok[NC] = {0}, nev = 0, n = a->ncand;
    float ms[NC] = {0};
    int bad[NC] = {0};
    if (p->dtype != NEAT_F32 || p->math == NEAT_MATH_STRICT)
        probe_engines(dev, p, which, a, n, bad);
    size_t out = (conv_out_bytes(p, which) + 255) & ~(size_t)255, ws_max = 0;
    for (int i = 0; i < n; i++)
        if (a->cand[i].ws > ws_max) ws_max = a->cand[i].ws;
    char *mem = NULL;
    if (cudaMalloc((void **)&mem, out + ws_max) != cudaSuccess) {
        cudaGetLastError(); /* not the op's error: Find's first stays */
        conv_drop_engines(a);
        return NEAT_OK;
    }
    a->ncand = 0; /* from here the candidates' engines are keep_fastest's to keep or destroy */
    /* zeroed as find_memory's is: initcheck reported cuDNN's nhwcToNchwKernel reading this
     * workspace unwritten (test_conformance@4/6, 6,892 reports, 18:5x UTC) */
    neat_status st =
        cuda_check(cudaMemsetAsync(mem, 0, out + ws_max, d->stream), what, "cudaMemsetAsync");
    for (int i = 0; i < n * NEV && !st; i++) {
        st = cuda_check(cudaEventCreate(&ev[i / NEV][i % NEV]), what, "cudaEventCreate");
        if (!st) nev = i + 1;
    }
    for (int i = 0; i < n && !st; i++) {
        const conv_cand *c = &a->cand[i];
        ok[i] = !bad[i] && cudnnSetConvolutionMathType(p->cd, c->math) == CUDNN_STATUS_SUCCESS;
        for (int r = 0; r <= CONV_TUNE_RUNS && ok[i] && !st; r++) {
            if (r >= 1)
                st = cuda_check(cudaEventRecord(ev[i][r - 1], d->stream), what, "cudaEventRecord");
            if (!st)
                ok[i] = run_candidate(dev, p, which, c, in, mem, mem + out) == CUDNN_STATUS_SUCCESS;
        }
        if (!ok[i])
            cudaGetLastError(); /* what a failed launch left (not sticky): not the op's error */
        else if (!st)
            st = cuda_check(cudaEventRecord(ev[i][CONV_TUNE_RUNS], d->stream), what,
                            "cudaEventRecord");
    }
    /* waited for after a failure above too: mem is freed below */
    neat_status waited =
        cuda_check(cudaStreamSynchronize(d->stream), what, "cudaStreamSynchronize");
    if (!st) st = waited;
    for (int i = 0; i < n; i++) {
        float t[CONV_TUNE_RUNS];
        int r = 0;
        while (!st && ok[i] && r < CONV_TUNE_RUNS &&
               cudaEventElapsedTime(&t[r], ev[i][r], ev[i][r + 1]) == cudaSuccess)
            r++;
        if (r < CONV_TUNE_RUNS) { /* failed, or an interval CUDA could not give */
            cudaGetLastError();
            ok[i] = 0;
            continue;
        }
        ms[i] = median_ms(t, CONV_TUNE_RUNS);
    }
    keep_fastest(d, a, n, ok, ms);
    for (int i = 0; i < nev; i++) cudaEventDestroy(ev[i / NEV][i % NEV]);
    cudaFree(mem);
    return st;
}
