/*
 * matmul.cu — matmul and batched matmul on cuBLASLt, and the GEMM plumbing the other ops use
 * (cuda_gemm, cuda_gemm_typed, cuda_gemm_try).
 *
 * Row-major to cuBLASLt's column-major: a row-major M x N matrix is a column-major N x M
 * one, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: cuBLASLt's "A" is our b,
 * its "B" our a, its m = N and n = M. A bias epilogue adds a vector of cuBLASLt's m = our
 * N, i.e. one value per column of C: the bias of each output feature of a linear layer.
 *
 * Strict float32 uses CUBLAS_COMPUTE_32F; NEAT_MATH_TF32 CUBLAS_COMPUTE_32F_FAST_TF32.
 * The descriptors and the algorithm (cublasLtMatmulAlgoGetHeuristic, best first) are made
 * once per shape, transposes, epilogue and math mode, and cached in the device (lru.h): a
 * later submission (or a graph capture) only sets the bias pointer and calls cublasLtMatmul
 * with the device's preallocated workspace. Every pointer is the start of a pool block,
 * 256-byte aligned (common.cuh), which is what cuBLASLt assumes when no smaller alignment
 * is given in the preference. With beta = 0 cuBLASLt does not
 * read C (a NaN there does not propagate). K = 0 gives C = beta C (+ bias, activation).
 *
 * The linear layers' ops on these GEMMs are in linear.cu.
 *
 * bf16/f16 (cuda_gemm_typed; cuda_native_half in half.cu): A and B CUDA_R_16BF/16F, C and
 * D of the output's type (half or float32), compute CUBLAS_COMPUTE_32F whatever the math
 * mode (16-bit products are exact), alpha/beta float; a bias epilogue takes a bias of D's
 * type (cuBLASLt's rule), so only a half output uses one. The key holds both types. A half
 * batch whose matrices start at offsets that are not multiples of 256 bytes asks cuBLASLt
 * for algorithms of that smaller alignment (odd sizes: CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*).
 *
 * Tuning (mm_tune): the heuristic's first algorithm is not always cuBLAS's fastest (8192^3
 * f16 on the H200: 676 TFLOP/s where cublasGemmEx, PyTorch's mm, reaches 754; a 10x128x128
 * float32 GEMM: 65 us). So a GEMM (any size since 2026-11-30 16:00 UTC, any type and math
 * mode; LT_TUNE_MIN_MACS) asks for up to LT_CANDIDATES
 * algorithms and, at its first eager use with beta = 0, runs each on the stream between
 * events and keeps the fastest if it beats the heuristic's first by LT_TUNE_GAIN (mm_tune):
 * a host wait, once per cached entry (tens of ms at 8192^3). A half output's candidates
 * reduce split-K partial sums in float32 only (the preference's reduction-scheme mask).
 * The runs write C, which the real run then overwrites (beta = 0 only; with beta != 0 the
 * heuristic's first runs and the entry waits for a later beta = 0 use). Never during a
 * graph capture: the heuristic's first is captured, the entry stays untuned. Every
 * candidate has the entry's compute type, so only the order of the float32 sums (hence the
 * last bits) may change with the choice, which timing noise can make differ between
 * processes. Strict float32 was not tuned before 2026-11-30 (its SIMT GEMM ran at PyTorch's
 * rate at 8192^3); at 1024^3 the heuristic's first may not be the fastest of the FMA-only
 * candidates, so it is tuned like the rest (FMA math only: CUBLAS_COMPUTE_32F never uses
 * the tensor cores). 8 candidates left f16 8192^3 at 0.945x PyTorch's rate: 16 now.
 * A float32 GEMM that gemm_small.cu's kernel fits (b transposed, k % 4 == 0, small) times it
 * after the candidates and runs it instead of the kept algorithm where it wins by the same
 * margin (the 700-op MLP's 64x256x256 layers: one kernel where cuBLASLt ran split-K and a
 * reduction); NEATML_GEMM_OWN=0 leaves it out, =2 runs it untimed wherever it fits.
 * NEATML_GEMM_TUNE=0 (read at a device's first GEMM) turns tuning off. Asking cuBLASLt for
 * one kernel for small GEMMs (no split-K, or its in-place split-K) was measured and dropped:
 * the 700-op MLP went from 3.3 to 8.0 us/op, the LeNet step from 0.458 to 0.559 ms.
 *
 * Bias-gradient epilogues (BGRADA/B, for linear.cu's db): the heuristic is asked with the
 * epilogue (the key holds it); where it has no algorithm, or cuBLASLt refuses the first call,
 * the entry remembers it and cuda_gemm_try answers *ran = 0 (the caller sums db itself), or
 * under NEATML_LINEAR_BGRAD=2 the op's BACKEND_ERROR.
 */
#include "common.cuh"
#include "../lru.h"

#include <stdlib.h>
#include <string.h>

typedef struct mm_key {
    int trans_a, trans_b; /* cuBLASLt's (ours swapped) */
    int64_t batch, m, n, k;
    int epilogue, math;
    int ab, c;     /* neat_dtype of the inputs, of the output */
    int64_t align; /* bytes every batch's matrices are aligned to (half batches) */
} mm_key;

/* Algorithms a GEMM is timed over, and the size from which it is: every size since
 * 2026-11-30 16:00 UTC (it was 2^30 multiply-adds). ncu on the H200 showed the heuristic's
 * first for LeNet's fc2 weight gradient (m 10, n 128, k 128, strict float32) taking 65 us,
 * where the other GEMMs of the step take 5-13 us; timing costs one host wait per shape. */
#define LT_CANDIDATES 16
#define LT_TUNE_MIN_MACS 0.0
#define LT_TUNE_RUNS 3            /* timed runs per candidate, after one warm-up */
#define LT_TUNE_HOLD_NS 200000ull /* the device held while a candidate's runs are launched */
/* What a timed candidate must save to replace the heuristic's first: timed alone, back to
 * back, a small GEMM's candidate can win by a little and still run slower among other
 * kernels in a graph (the 700-op MLP's 64x256x256 GEMMs: 3.3 us/op with the heuristic's
 * first, 3.7 with the timed winner), while the wins that matter are large (LeNet's
 * 10x128x128 weight gradient, 65 us; linear_gelu's strict 1024^3, 12%; f16 8192^3, 6%). */
#define LT_TUNE_GAIN 0.03f   /* of the first's time */
#define LT_TUNE_GAIN_US 1.0f /* per run */

typedef struct mm_entry {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo; /* the one run: the heuristic's first, or the fastest timed */
    cublasLtMatmulAlgo_t cand[LT_CANDIDATES]; /* the heuristic's, best first */
    int ncand;   /* > 1 while the candidates wait to be timed; 0 once they were */
    int refused; /* a bias-gradient epilogue cuBLASLt has no algorithm for: never run */
    int own;     /* gemm_small.cu's kernel runs instead (beta = 0 only): timed faster, or forced */
    int own_pending; /* it fits and waits to be timed with the candidates */
} mm_entry;

/* The device's cache of matmul plans (lru.h): at most NM_LRU_CAPACITY entries, the least
 * recently used destroyed past it. Freeing an entry is safe at any time, also while a CUDA
 * graph captured with it lives: the descriptors and the algorithm are read by cublasLtMatmul
 * when it enqueues (or is captured), and a graph holds the launched kernels with their
 * arguments, not these host objects. The workspace a graph bakes in is the device's lt_ws
 * (not cached per entry, freed only by device_close). */
struct cuda_matmul_cache {
    nm_lru lru;
    int tune;  /* NEATML_GEMM_TUNE is not "0" */
    int force; /* NEATML_GEMM_CANDIDATE=i (tests): every GEMM runs candidate i, or -1 */
    int bgrad; /* NEATML_LINEAR_BGRAD: 0 never fuse db, 1 fuse or fall back, 2 fuse or fail */
    int own;   /* NEATML_GEMM_OWN: 0 never gemm_small.cu, 1 where timed faster, 2 where it fits */
};

static void entry_destroy(mm_entry *e) {
    if (e->la) cublasLtMatrixLayoutDestroy(e->la);
    if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
    if (e->lc) cublasLtMatrixLayoutDestroy(e->lc);
    if (e->desc) cublasLtMatmulDescDestroy(e->desc);
}

static void entry_free(void *e) {
    entry_destroy((mm_entry *)e);
    free(e);
}

extern "C" void cuda_matmul_cache_free(cuda_device *d) {
    struct cuda_matmul_cache *c = d->mm;
    if (!c) return;
    nm_lru_clear(&c->lru);
    free(c);
    d->mm = NULL;
}

static cudaDataType_t lt_type(int dt) {
    return dt == NEAT_BF16 ? CUDA_R_16BF : dt == NEAT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* A column-major rows x cols layout with leading dimension rows, batched. */
static cublasStatus_t make_layout(cublasLtMatrixLayout_t *l, cudaDataType_t type, int64_t rows,
                                  int64_t cols, int64_t batch) {
    cublasStatus_t s = cublasLtMatrixLayoutCreate(l, type, (uint64_t)rows, (uint64_t)cols, rows);
    if (s != CUBLAS_STATUS_SUCCESS || batch == 1) return s;
    int32_t count = (int32_t)batch;
    int64_t stride = rows * cols;
    s = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                         sizeof count);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                             &stride, sizeof stride);
    return s;
}

#define LT_TRY(call)                                                                               \
    do {                                                                                           \
        neat_status st_ = cublas_check((call), what, #call);                                       \
        if (st_) goto fail;                                                                        \
    } while (0)

/* The device's cache, made (and the environment read) at its first GEMM. */
static neat_status mm_cache(cuda_device *d, const char *what) {
    if (d->mm) return NEAT_OK;
    d->mm = (struct cuda_matmul_cache *)calloc(1, sizeof *d->mm);
    if (!d->mm) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
    nm_lru_init(&d->mm->lru, NM_LRU_CAPACITY);
    const char *env = getenv("NEATML_GEMM_TUNE");
    d->mm->tune = !(env && strcmp(env, "0") == 0);
    /* For tests: every GEMM runs the heuristic's candidate i (its last when it has fewer),
     * untimed, so that a test can hold each candidate to the bound the tuning may pick. */
    env = getenv("NEATML_GEMM_CANDIDATE");
    d->mm->force = env && *env >= '0' && *env <= '9' ? atoi(env) : -1;
    env = getenv("NEATML_LINEAR_BGRAD");
    d->mm->bgrad = env && (env[0] == '0' || env[0] == '2') && !env[1] ? env[0] - '0' : 1;
    env = getenv("NEATML_GEMM_OWN");
    d->mm->own = env && (env[0] == '0' || env[0] == '2') && !env[1] ? env[0] - '0' : 1;
    return NEAT_OK;
}

extern "C" neat_status cuda_linear_bgrad_mode(nm_device *dev, int *mode, const char *what) {
    cuda_device *d = cuda_dev(dev);
    neat_status st = mm_cache(d, what);
    *mode = st ? 0 : d->mm->bgrad;
    return st;
}

static int is_bgrad(int epilogue) {
    return epilogue == CUBLASLT_EPILOGUE_BGRADA || epilogue == CUBLASLT_EPILOGUE_BGRADB;
}

/* The cached entry for key, creating descriptors and choosing the algorithm on a miss. A
 * bias-gradient epilogue is asked for with its pointer bgrad set (the heuristic reads the
 * pointer's alignment; every pool block's is 256 bytes, so the answer holds for the entry's
 * later pointers); without an algorithm it gives an entry marked refused (kept, so that the
 * heuristic is asked once). Any other epilogue without one is an error. */
static neat_status mm_lookup(cuda_device *d, const mm_key *key, const void *bgrad, mm_entry **out,
                             const char *what) {
    neat_status st0 = mm_cache(d, what);
    if (st0) return st0;
    struct cuda_matmul_cache *c = d->mm;
    mm_entry *hit = (mm_entry *)nm_lru_get(&c->lru, key, sizeof *key);
    if (hit) {
        *out = hit;
        return NEAT_OK;
    }
    mm_entry e;
    memset(&e, 0, sizeof e);
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t ta = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = key->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)key->epilogue;
    uint64_t ws = CUDA_LT_WORKSPACE;
    cublasLtMatmulHeuristicResult_t result[LT_CANDIDATES];
    int found = 0;
    /* GEMMs large enough to be worth timing */
    int tune = c->tune && (double)key->batch * key->m * key->n * key->k >= LT_TUNE_MIN_MACS;
    memset(result, 0, sizeof result);
    /* 16-bit inputs: CUBLAS_COMPUTE_32F multiplies them exactly and sums in float32 on the
     * tensor cores; there is no TF32 question (the math mode matters for float32 only). */
    LT_TRY(cublasLtMatmulDescCreate(&e.desc,
                                    key->math == NEAT_MATH_TF32 && key->ab == NEAT_F32
                                        ? CUBLAS_COMPUTE_32F_FAST_TF32
                                        : CUBLAS_COMPUTE_32F,
                                    CUDA_R_32F));
    LT_TRY(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_TRY(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (is_bgrad(key->epilogue))
        LT_TRY(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bgrad,
                                              sizeof bgrad));
    /* A is m x k after op: stored k x m when transposed. */
    LT_TRY(make_layout(&e.la, lt_type(key->ab), key->trans_a ? key->k : key->m,
                       key->trans_a ? key->m : key->k, key->batch));
    LT_TRY(make_layout(&e.lb, lt_type(key->ab), key->trans_b ? key->n : key->k,
                       key->trans_b ? key->k : key->n, key->batch));
    LT_TRY(make_layout(&e.lc, lt_type(key->c), key->m, key->n, key->batch));
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                sizeof ws));
    if (key->c != NEAT_F32) {
        /* A half output: split-K partial sums only in float32 (COMPUTE_TYPE), never in the
         * output's type (INPLACE, OUTPUT_TYPE), which would round each partial sum to 16
         * bits: found under compute-sanitizer, whose slowed timings made the tuning pick
         * such a candidate for an f16 31x29x130 GEMM (test_dtype row 43, 106 of 899
         * elements outside the bound of one rounding). */
        uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof mask));
    }
    if (key->align) { /* batches at odd offsets: only algorithms that need no more */
        uint32_t al = (uint32_t)key->align;
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    }
    { /* NOT_SUPPORTED: no algorithm for this configuration (a refusal, not a failure) */
        cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
            d->lt, e.desc, e.la, e.lb, e.lc, e.lc, pref, tune || c->force >= 0 ? LT_CANDIDATES : 1,
            result, &found);
        if (hs == CUBLAS_STATUS_NOT_SUPPORTED)
            found = 0;
        else if (cublas_check(hs, what, "cublasLtMatmulAlgoGetHeuristic"))
            goto fail;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    pref = NULL;
    for (int i = 0; i < found; i++) /* the workspace bound is the preference's; checked anyway */
        if (result[i].state == CUBLAS_STATUS_SUCCESS &&
            result[i].workspaceSize <= CUDA_LT_WORKSPACE)
            e.cand[e.ncand++] = result[i].algo;
    if (e.ncand < 1 && !is_bgrad(key->epilogue)) {
        entry_destroy(&e);
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: cublasLtMatmulAlgoGetHeuristic found no algorithm for m=%lld n=%lld "
                        "k=%lld batch=%lld",
                        what, (long long)key->m, (long long)key->n, (long long)key->k,
                        (long long)key->batch);
    }
    e.refused = e.ncand < 1;
    e.algo = e.cand[0];
    if (c->force >= 0 && !e.refused) e.algo = e.cand[c->force < e.ncand ? c->force : e.ncand - 1];
    if (!tune || e.refused || c->force >= 0) e.ncand = 0;
    /* gemm_small.cu's kernel, in our row-major terms (key holds cuBLASLt's swapped ones) */
    if (cuda_small_gemm_fits(key->batch, key->trans_b, key->trans_a, key->n, key->m, key->k,
                             key->ab == NEAT_F32 && key->c == NEAT_F32,
                             (cublasLtEpilogue_t)key->epilogue)) {
        e.own = c->own == 2;
        e.own_pending = c->own == 1 && tune && c->force < 0;
    }
    { /* a block: the gotos above do not cross kept's initialization */
        mm_entry *kept = (mm_entry *)malloc(sizeof *kept);
        if (kept) *kept = e;
        if (!kept || nm_lru_put(&c->lru, key, sizeof *key, kept, entry_free) != 0) {
            free(kept); /* the descriptors are e's as well: destroyed once, below */
            entry_destroy(&e);
            return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", what);
        }
        *out = kept;
    }
    return NEAT_OK;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    entry_destroy(&e);
    return NEAT_ERR_BACKEND_ERROR; /* message set by cublas_check */
}

/* Holds the stream for ns nanoseconds (one thread reading the global timer). */
__global__ void lt_tune_hold(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}

/* Time e's candidates for D = alpha A B (cuBLASLt's operands; beta = 0, so the runs only
 * write D, which the caller's run overwrites) and keep the fastest in e->algo: per
 * candidate one warm-up run, then LT_TUNE_RUNS between two events; one stream wait for all.
 * Each candidate's runs queue behind LT_TUNE_HOLD_NS of lt_tune_hold, so that the events
 * time the device's work and not the host's launches: cublasLtMatmul's host cost is more
 * than a small GEMM's run, and without the hold a split-K candidate (two kernels) was
 * charged two launches (the 700-op MLP went from 3.3 to 3.7 us/op when every size was
 * tuned that way). A candidate cuBLASLt refuses is skipped. Done once, whatever the
 * outcome. */
static neat_status mm_tune(nm_device *dev, const mm_key *key, mm_entry *e, const float *alpha,
                           const void *A, const void *B, const void *bias, void *D,
                           const char *what) {
    cuda_device *d = cuda_dev(dev);
    const float zero = 0.0f;
    cudaEvent_t ev[2 * LT_CANDIDATES + 2];
    int ok[LT_CANDIDATES] = {0}, nev = 0, n = e->ncand > 0 ? e->ncand : 1, own = e->own_pending;
    e->ncand = 0;
    e->own_pending = 0;
    neat_status st = NEAT_OK;
    for (int i = 0; i < 2 * n + 2 * own && !st; i++) {
        st = cuda_check(cudaEventCreate(&ev[i]), what, "cudaEventCreate");
        if (!st) nev = i + 1;
    }
    for (int i = 0; i < n && !st; i++) {
        ok[i] = 1;
        lt_tune_hold<<<1, 1, 0, d->stream>>>(LT_TUNE_HOLD_NS);
        st = cuda_check(cudaGetLastError(), what, "lt_tune_hold");
        for (int r = 0; r <= LT_TUNE_RUNS && ok[i] && !st; r++) {
            if (r == 1)
                st = cuda_check(cudaEventRecord(ev[2 * i], d->stream), what, "cudaEventRecord");
            ok[i] = cublasLtMatmul(d->lt, e->desc, alpha, A, e->la, B, e->lb, &zero, D, e->lc, D,
                                   e->lc, &e->cand[i], d->lt_ws, CUDA_LT_WORKSPACE,
                                   d->stream) == CUBLAS_STATUS_SUCCESS;
        }
        if (!st)
            st = cuda_check(cudaEventRecord(ev[2 * i + 1], d->stream), what, "cudaEventRecord");
    }
    if (own && !st) { /* gemm_small.cu's kernel, in our terms: a = cuBLASLt's B, b its A */
        lt_tune_hold<<<1, 1, 0, d->stream>>>(LT_TUNE_HOLD_NS);
        st = cuda_check(cudaGetLastError(), what, "lt_tune_hold");
        for (int r = 0; r <= LT_TUNE_RUNS && !st; r++) {
            if (r == 1)
                st = cuda_check(cudaEventRecord(ev[2 * n], d->stream), what, "cudaEventRecord");
            if (!st)
                st = cuda_small_gemm(dev, key->batch, key->n, key->m, key->k, *alpha,
                                     (const float *)B, (const float *)A, (const float *)bias,
                                     (float *)D, (cublasLtEpilogue_t)key->epilogue, what);
        }
        if (!st)
            st = cuda_check(cudaEventRecord(ev[2 * n + 1], d->stream), what, "cudaEventRecord");
    }
    if (!st) st = cuda_check(cudaStreamSynchronize(d->stream), what, "cudaStreamSynchronize");
    /* The heuristic's first (cand[0], what e->algo holds) is kept unless a candidate saves
     * at least LT_TUNE_GAIN of its time and LT_TUNE_GAIN_US per run. */
    float first = -1.0f, best = -1.0f;
    int pick = -1;
    for (int i = 0; i < n && !st; i++) {
        float ms;
        if (!ok[i] || cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]) != cudaSuccess) continue;
        if (i == 0) first = ms;
        if (best < 0.0f || ms < best) best = ms, pick = i;
    }
    float kept = first;
    if (pick > 0 && (first < 0.0f || (best <= (1.0f - LT_TUNE_GAIN) * first &&
                                      first - best >= LT_TUNE_RUNS * LT_TUNE_GAIN_US * 1e-3f)))
        e->algo = e->cand[pick], kept = best;
    /* gemm_small.cu's kernel by the same rule against the algorithm kept */
    float ms;
    if (own && !st && cudaEventElapsedTime(&ms, ev[2 * n], ev[2 * n + 1]) == cudaSuccess)
        e->own = kept < 0.0f || (ms <= (1.0f - LT_TUNE_GAIN) * kept &&
                                 kept - ms >= LT_TUNE_RUNS * LT_TUNE_GAIN_US * 1e-3f);
    for (int i = 0; i < nev; i++) cudaEventDestroy(ev[i]);
    return st;
}

/* A bias-gradient epilogue cuBLASLt will not run: *ran = 0 (the caller sums db), or under
 * NEATML_LINEAR_BGRAD=2 the op's error. */
static neat_status bgrad_refused(cuda_device *d, const mm_key *key, int *ran, const char *what) {
    *ran = 0;
    if (d->mm->bgrad != 2) return NEAT_OK;
    return nm_error(NEAT_ERR_BACKEND_ERROR,
                    "%s: cuBLASLt has no algorithm with the bias-gradient epilogue %d for m=%lld "
                    "n=%lld k=%lld (%s, output %s) (NEATML_LINEAR_BGRAD=2)",
                    what, key->epilogue, (long long)key->m, (long long)key->n, (long long)key->k,
                    neat_dtype_name((neat_dtype)key->ab), neat_dtype_name((neat_dtype)key->c));
}

static int capturing(cuda_device *d) {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(d->stream, &cap) != cudaSuccess ||
           cap != cudaStreamCaptureStatusNone;
}

static neat_activation epilogue_act(cublasLtEpilogue_t e) {
    if (e == CUBLASLT_EPILOGUE_RELU || e == CUBLASLT_EPILOGUE_RELU_BIAS) return NEAT_ACT_RELU;
    if (e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS) return NEAT_ACT_GELU;
    return NEAT_ACT_NONE;
}

/* The largest power of two (<= 256) that divides every batch's offset in bytes of a, b and
 * c: each pointer is a pool block's start (256-byte aligned, common.cuh), and batch i of
 * a matrix starts i * rows * cols elements further. 0 when batch is 1 (the default, 256). */
static int64_t batch_align(int64_t batch, int64_t m, int64_t n, int64_t k, size_t ab, size_t ct) {
    if (batch == 1) return 0;
    int64_t al = 256;
    const int64_t bytes[] = {m * k * (int64_t)ab, k * n * (int64_t)ab, m * n * (int64_t)ct};
    for (int i = 0; i < 3; i++)
        while (al > 1 && bytes[i] % al) al >>= 1;
    return al == 256 ? 0 : al;
}

/* cuda_gemm_typed, and for a bias-gradient epilogue (bias: where it is written) *ran = 0
 * when cuBLASLt has no algorithm for it or refuses it: nothing was enqueued (the caller sums
 * db itself), or the op's error under NEATML_LINEAR_BGRAD=2. */
extern "C" neat_status cuda_gemm_try(nm_device *dev, neat_math_mode math, int trans_a, int trans_b,
                                     int64_t batch, int64_t m, int64_t n, int64_t k, float alpha,
                                     const void *a, const void *b, neat_dtype ab, float beta,
                                     void *c, neat_dtype ct, cublasLtEpilogue_t epilogue,
                                     const void *bias, int *ran, const char *what) {
    /* an empty product: the bias gradient (of zero terms, or of none) is the caller's */
    *ran = !(is_bgrad(epilogue) && (batch == 0 || m == 0 || n == 0 || k == 0));
    if (!*ran || batch == 0 || m == 0 || n == 0) return NEAT_OK;
    cuda_device *d = cuda_dev(dev);
    if (k == 0 && (ab != NEAT_F32 || ct != NEAT_F32)) /* c = act(beta c + bias), one rounding */
        return cuda_half_epilogue(dev, ct, c, NULL, beta, ct, bias, batch * m * n, 1, n,
                                  epilogue_act(epilogue), what);
    if (k == 0) { /* op(a) op(b) is zero: c = beta c, then the epilogue */
        int64_t total = batch * m * n;
        float *c32 = (float *)c;
        neat_status st = beta == 0.0f   ? cuda_fill_f32(dev, c32, total, 0.0f, what)
                         : beta != 1.0f ? cuda_scale_f32(dev, c32, beta, c32, total, what)
                                        : NEAT_OK;
        if (st) return st;
        return cuda_bias_act(dev, c32, (const float *)bias, total, 1, n, epilogue_act(epilogue),
                             what);
    }
    if (batch > INT32_MAX) /* neat_matmul: refused at record time (cuda_matmul_check) */
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: batch %lld is too large for cuBLASLt", what,
                        (long long)batch);
    mm_key key;
    memset(&key, 0, sizeof key); /* memcmp'd: no padding garbage */
    key.trans_a = trans_b;
    key.trans_b = trans_a;
    key.batch = batch;
    key.m = n;
    key.n = m;
    key.k = k;
    key.epilogue = (int)epilogue;
    key.math = (int)math;
    key.ab = (int)ab;
    key.c = (int)ct;
    if (ab != NEAT_F32 || ct != NEAT_F32)
        key.align = batch_align(batch, m, n, k, neat_dtype_size(ab), neat_dtype_size(ct));
    mm_entry *e;
    neat_status st = mm_lookup(d, &key, bias, &e, what);
    if (st) return st;
    if (e->refused) return bgrad_refused(d, &key, ran, what);
    if (bias) {
        st = cublas_check(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                         &bias, sizeof bias),
                          what, "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
        if (st) return st;
    }
    if ((e->ncand > 1 || e->own_pending) && beta == 0.0f && !capturing(d)) {
        /* first eager use: time the candidates */
        st = mm_tune(dev, &key, e, &alpha, b, a, bias, c, what);
        if (st) return st;
    }
    if (e->own && beta == 0.0f)
        return cuda_small_gemm(dev, batch, m, n, k, alpha, (const float *)a, (const float *)b,
                               (const float *)bias, (float *)c, epilogue, what);
    cublasStatus_t s = cublasLtMatmul(d->lt, e->desc, &alpha, b, e->la, a, e->lb, &beta, c, e->lc,
                                      c, e->lc, &e->algo, d->lt_ws, CUDA_LT_WORKSPACE, d->stream);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED && is_bgrad(key.epilogue)) { /* checked before launch */
        e->refused = 1;
        return bgrad_refused(d, &key, ran, what);
    }
    return cublas_check(s, what, "cublasLtMatmul");
}

extern "C" neat_status cuda_gemm_typed(nm_device *dev, neat_math_mode math, int trans_a,
                                       int trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
                                       float alpha, const void *a, const void *b, neat_dtype ab,
                                       float beta, void *c, neat_dtype ct,
                                       cublasLtEpilogue_t epilogue, const void *bias,
                                       const char *what) {
    int ran;
    neat_status st = cuda_gemm_try(dev, math, trans_a, trans_b, batch, m, n, k, alpha, a, b, ab,
                                   beta, c, ct, epilogue, bias, &ran, what);
    if (!st && !ran) /* a bias-gradient epilogue goes through linear backward's gemm call */
        return nm_error(NEAT_ERR_INTERNAL, "%s: cuBLASLt refused epilogue %d", what, (int)epilogue);
    return st;
}

extern "C" neat_status cuda_gemm(nm_device *dev, neat_math_mode math, int trans_a, int trans_b,
                                 int64_t batch, int64_t m, int64_t n, int64_t k, float alpha,
                                 const float *a, const float *b, float beta, float *c,
                                 cublasLtEpilogue_t epilogue, const float *bias, const char *what) {
    return cuda_gemm_typed(dev, math, trans_a, trans_b, batch, m, n, k, alpha, a, b, NEAT_F32, beta,
                           c, NEAT_F32, epilogue, bias, what);
}

extern "C" {

/* Record time: cuda_gemm_try's turns for neat_matmul (no epilogue, a half op runs natively):
 * an empty product returns and k == 0 is c = beta c, both before cuBLASLt, whose batch count
 * is an int32. The other callers pass a batch of 1, or conv_gemm.cu N (an int for cuDNN). */
neat_status cuda_matmul_check(const nm_op *op) {
    const auto &u = op->u.matmul;
    if (u.batch == 0 || u.m == 0 || u.n == 0 || u.k == 0 || u.batch <= INT32_MAX) return NEAT_OK;
    return nm_error(NEAT_ERR_UNSUPPORTED,
                    "%s: batch %lld is too large for cuBLASLt (the cuda backend takes at most "
                    "%d matrices)",
                    op->fn, (long long)u.batch, INT32_MAX);
}

neat_status cuda_matmul(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const auto &u = op->u.matmul;
    return cuda_gemm_typed(dev, op->math, u.trans_a, u.trans_b, u.batch, u.m, u.n, u.k, u.alpha,
                           u.a->data, u.b->data, u.a->dtype, u.beta, u.c->data, u.c->dtype,
                           CUBLASLT_EPILOGUE_DEFAULT, NULL, op->fn);
}

} /* extern "C" */
