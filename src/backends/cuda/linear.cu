/*
 * linear.cu — linear forward and backward on matmul.cu's GEMMs.
 *
 * linear forward: y = act(x w^T + b): epilogues BIAS / RELU_BIAS (RELU without a bias),
 * GELU_BIAS under TF32 only (see epilogue_has_act); sigmoid, tanh and strict GELU run as
 * elementwise.cu's pass after a BIAS epilogue.
 * linear backward: dz = dy act'(y) (gelu: act'(z) with z = x w^T + b recomputed into
 * scratch), dx = dz w, dw = dz^T x (beta = accumulate), db = column sums of dz. db comes out
 * of the dw GEMM's BGRADB epilogue (issue 13) where that is exact, else from reduce.cu's
 * deterministic sum: see "Bias gradient" below.
 *
 * Bias gradient (issue 13; docs/HACKING.md "Decisions"). dw [out, in] = dz^T x is cuBLASLt's
 * D = A B with A = x^T, B = dz (CUBLAS_OP_T) and k = n, so db, the sums of dz over its n rows,
 * is the BGRADB epilogue (one value per column of D, in D's type, through BIAS_POINTER). It
 * stores db, never adds to it. db comes from it when dw is asked for too, n, in, out > 0, and
 * for float32 in strict mode (an accumulated db: the epilogue writes scratch, one pass adds it;
 * not TF32, where the epilogue might sum TF32-rounded dz) or bf16/f16 without accumulate (the
 * half bias gradient added to the old db would round twice). The heuristic is asked with the
 * epilogue (matmul.cu's key holds it); where it has no algorithm, or cuBLASLt refuses the first call,
 * cuda_gemm_try answers so and the sum kernel runs. NEATML_LINEAR_BGRAD (read at a device's first
 * GEMM): "0" never fuses, "2" makes a refusal the op's BACKEND_ERROR, anything else fuses and
 * falls back. The epilogue's summation order is not documented: test_conformance holds it to
 * the bound of sums on columns built against long sequential sums, test_determinism to the
 * same bits run after run. DRELU_BGRAD does not fit neat_linear_backward: it applies relu' to
 * a GEMM's output, i.e. to the dx GEMM of the layer above, not to this layer's input dz.
 */
#include "common.cuh"

extern "C" {

/* Does the epilogue of linear_epilogue apply act itself? Sigmoid and tanh never; GELU only
 * under TF32: cuBLASLt's GELU epilogue is off by up to ~3e-5 relative (a fast tanh, seen on
 * an H200 with CUDA 13.0), outside the strict float32 tolerance, so strict mode runs
 * elementwise.cu's GELU after a BIAS epilogue. */
static int epilogue_has_act(neat_activation act, neat_math_mode math) {
    return act == NEAT_ACT_RELU || (act == NEAT_ACT_GELU && math == NEAT_MATH_TF32);
}

static cublasLtEpilogue_t linear_epilogue(neat_activation act, neat_math_mode math, int has_bias) {
    if (epilogue_has_act(act, math) && act == NEAT_ACT_RELU)
        return has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    if (epilogue_has_act(act, math) && act == NEAT_ACT_GELU)
        return has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    return has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

/* y [n, out] = epilogue(x [n, in] w^T [in, out] + b) */
static neat_status linear_gemm(nm_device *dev, neat_math_mode math, int64_t n, int64_t in,
                               int64_t out, const float *x, const float *w, const float *b,
                               cublasLtEpilogue_t epi, float *y, const char *what) {
    return cuda_gemm(dev, math, 0, 1, 1, n, out, in, 1.0f, x, w, 0.0f, y, epi, b, what);
}

/* Half tensors (cuda_native_half): y = act(x w^T + b) rounded once. A half y with no
 * activation or relu takes the cuBLASLt epilogue (bias of y's type, added in float32
 * before the one rounding); every other case (sigmoid, tanh, gelu, or a float32 y) runs the
 * GEMM into float32 (y itself, or scratch slot 0) and half.cu's epilogue kernel adds the
 * bias (of the inputs' type) and applies act while it rounds. */
static neat_status linear_forward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_linear_forward";
    const auto &u = op->u.linear_forward;
    neat_dtype xt = u.x->dtype, yt = u.y->dtype;
    const void *b = u.b ? u.b->data : NULL;
    if (yt != NEAT_F32 && (u.act == NEAT_ACT_NONE || u.act == NEAT_ACT_RELU)) {
        cublasLtEpilogue_t epi = u.act == NEAT_ACT_RELU
                                     ? (b ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU)
                                     : (b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
        return cuda_gemm_typed(dev, op->math, 0, 1, 1, u.n, u.out, u.in, 1.0f, u.x->data, u.w->data,
                               xt, 0.0f, u.y->data, yt, epi, b, what);
    }
    int64_t ny = u.n * u.out;
    float *z = (float *)u.y->data;
    if (yt != NEAT_F32 && ny > 0) {
        void *buf;
        neat_status st = cuda_scratch(cb, 0, (size_t)ny * sizeof(float), &buf);
        if (st) return st;
        z = (float *)buf;
    }
    neat_status st =
        cuda_gemm_typed(dev, op->math, 0, 1, 1, u.n, u.out, u.in, 1.0f, u.x->data, u.w->data, xt,
                        0.0f, z, NEAT_F32, CUBLASLT_EPILOGUE_DEFAULT, NULL, what);
    if (st || (yt == NEAT_F32 && !b && u.act == NEAT_ACT_NONE)) return st;
    return cuda_half_epilogue(dev, yt, u.y->data, z, 0.0f, xt, b, ny, 1, u.out, u.act, what);
}

/* Scratch slots of linear backward: dz (act != none), cuda_sum3's two, and the bias gradient
 * the epilogue writes before it is added to an accumulated db. */
enum { LIN_SLOT_DZ = 0, LIN_SLOT_SUM = 1, LIN_SLOT_BGRAD = 3 };

/* Does db come out of the dw GEMM's BGRADB epilogue ("Bias gradient" at the top)? Both asked
 * for, no empty dimension, NEATML_LINEAR_BGRAD not 0; float32 in strict mode, half without
 * accumulate. Whether cuBLASLt has an algorithm for it is learned by the GEMM. */
static neat_status bgrad_wanted(nm_device *dev, const nm_op *op, int *fuse) {
    const auto &u = op->u.linear_backward;
    *fuse = 0;
    if (!u.dw || !u.db || u.n == 0 || u.in == 0 || u.out == 0) return NEAT_OK;
    int mode;
    neat_status st = cuda_linear_bgrad_mode(dev, &mode, "neat_linear_backward");
    if (st) return st;
    if (u.dy->dtype == NEAT_F32)
        *fuse = mode != 0 && op->math == NEAT_MATH_STRICT;
    else
        *fuse = mode != 0 && !u.accumulate;
    return NEAT_OK;
}

/* dw [out, in] = dz^T [out, n] x [n, in] (beta), of type dt; with fuse, db = the column sums
 * of dz by the BGRADB epilogue into bgrad (db itself, or scratch that the caller adds), and
 * *fused = 1 when it ran (0: cuBLASLt has no algorithm for it, dw was computed without it). */
static neat_status dw_gemm(nm_device *dev, const nm_op *op, const void *dz, float beta, int fuse,
                           void *bgrad, int *fused, const char *what) {
    const auto &u = op->u.linear_backward;
    neat_dtype dt = u.dy->dtype;
    *fused = 0;
    if (fuse) {
        neat_status st =
            cuda_gemm_try(dev, op->math, 1, 0, 1, u.out, u.in, u.n, 1.0f, dz, u.x->data, dt, beta,
                          u.dw->data, dt, CUBLASLT_EPILOGUE_BGRADB, bgrad, fused, what);
        if (st || *fused) return st;
    }
    return cuda_gemm_typed(dev, op->math, 1, 0, 1, u.out, u.in, u.n, 1.0f, dz, u.x->data, dt, beta,
                           u.dw->data, dt, CUBLASLT_EPILOGUE_DEFAULT, NULL, what);
}

/* Half tensors with no activation or relu (cuda_native_half): dz = dy or relu's mask of it
 * (exact in half, scratch slot 0), dx and dw by half GEMMs whose C is the gradient itself
 * (beta = accumulate: cuBLASLt adds the old value in float32 and rounds once), db by the dw
 * GEMM's BGRADB epilogue without accumulate (a bias gradient of the half type, rounded once),
 * else by half.cu's channel sums. */
static neat_status linear_backward_half(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_linear_backward";
    const auto &u = op->u.linear_backward;
    neat_dtype dt = u.dy->dtype;
    float beta = u.accumulate ? 1.0f : 0.0f;
    int64_t nz = u.n * u.out;
    const void *dz = u.dy->data;
    neat_status st = NEAT_OK;
    if (u.act == NEAT_ACT_RELU && nz > 0) {
        void *z;
        st = cuda_scratch(cb, LIN_SLOT_DZ, (size_t)nz * neat_dtype_size(dt), &z);
        if (!st) st = cuda_half_relu_grad(dev, dt, u.y->data, u.dy->data, z, nz, what);
        if (st) return st;
        dz = z;
    }
    if (u.dx)
        st = cuda_gemm_typed(dev, op->math, 0, 0, 1, u.n, u.in, u.out, 1.0f, dz, u.w->data, dt,
                             beta, u.dx->data, dt, CUBLASLT_EPILOGUE_DEFAULT, NULL, what);
    int fuse = 0, fused = 0;
    if (!st) st = bgrad_wanted(dev, op, &fuse); /* never with accumulate here */
    if (!st && u.dw) st = dw_gemm(dev, op, dz, beta, fuse, fuse ? u.db->data : NULL, &fused, what);
    if (!st && u.db && !fused)
        st = cuda_half_channel_sum(dev, cb, LIN_SLOT_SUM, dt, dz, u.n, u.out, 1, u.accumulate,
                                   u.db->data, what);
    return st;
}

neat_status cuda_linear_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_linear_forward";
    const auto &u = op->u.linear_forward;
    if (u.x->dtype != NEAT_F32) return linear_forward_half(dev, cb, op);
    const float *b = u.b ? u.b->data : NULL;
    neat_status st = linear_gemm(dev, op->math, u.n, u.in, u.out, u.x->data, u.w->data, b,
                                 linear_epilogue(u.act, op->math, b != NULL), u.y->data, what);
    if (st || u.act == NEAT_ACT_NONE || epilogue_has_act(u.act, op->math)) return st;
    return cuda_bias_act(dev, u.y->data, NULL, u.n * u.out, 1, u.out, u.act, what);
}

neat_status cuda_linear_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    static const char what[] = "neat_linear_backward";
    const auto &u = op->u.linear_backward;
    if (u.dy->dtype != NEAT_F32) return linear_backward_half(dev, cb, op);
    float beta = u.accumulate ? 1.0f : 0.0f;
    int64_t nz = u.n * u.out;
    const float *dz = u.dy->data;
    if (u.act != NEAT_ACT_NONE && nz > 0) {
        void *buf;
        neat_status st = cuda_scratch(cb, LIN_SLOT_DZ, (size_t)nz * sizeof(float), &buf);
        if (st) return st;
        float *z = (float *)buf;
        if (u.act == NEAT_ACT_GELU) { /* z = x w^T + b, then dz = dy gelu'(z) in place */
            st = linear_gemm(dev, op->math, u.n, u.in, u.out, u.x->data, u.w->data,
                             u.b ? u.b->data : NULL,
                             u.b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, z, what);
            if (!st) st = cuda_act_grad(dev, u.act, z, NULL, u.dy->data, z, nz, what);
        } else {
            st = cuda_act_grad(dev, u.act, NULL, u.y->data, u.dy->data, z, nz, what);
        }
        if (st) return st;
        dz = z;
    }
    neat_status st = NEAT_OK;
    if (u.dx) /* dx [n, in] = dz [n, out] w [out, in] */
        st = cuda_gemm(dev, op->math, 0, 0, 1, u.n, u.in, u.out, 1.0f, dz, u.w->data, beta,
                       u.dx->data, CUBLASLT_EPILOGUE_DEFAULT, NULL, what);
    /* dw [out, in] = dz^T [out, n] x [n, in], and db [out] = sum over the n rows of dz: by the
     * GEMM's epilogue (into scratch when db accumulates, added below), else by cuda_sum3 */
    int fuse = 0, fused = 0;
    void *bgrad = NULL;
    if (!st) st = bgrad_wanted(dev, op, &fuse);
    if (!st && fuse) bgrad = u.db->data;
    if (!st && fuse && u.accumulate)
        st = cuda_scratch(cb, LIN_SLOT_BGRAD, (size_t)u.out * sizeof(float), &bgrad);
    if (!st && u.dw) st = dw_gemm(dev, op, dz, beta, fuse, bgrad, &fused, what);
    if (!st && fused && u.accumulate) /* db += the epilogue's sums, one rounding */
        st = cuda_bias_act(dev, u.db->data, (const float *)bgrad, u.out, 1, u.out, NEAT_ACT_NONE,
                           what);
    if (!st && u.db && !fused)
        st = cuda_sum3(dev, cb, LIN_SLOT_SUM, dz, 1, u.n, u.out, 1.0f, u.accumulate, u.db->data,
                       what);
    return st;
}

} /* extern "C" */
