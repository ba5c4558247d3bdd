/*
 * linear.c — the fully connected layer on oneDNN's matmul (through cpu_gemm).
 *
 * Forward:  y = act(x w^T + b)      x [N,in], w [out,in], b [out] or NULL, y [N,out].
 *   One matmul with w read transposed through strides, the bias as the matmul's bias and
 *   the activation as an eltwise post-op, so y is written once.
 * Backward: dz = dy * act'(.)        [N,out] (dz is dy itself when act is NONE)
 *           dx (+)= dz w             [N,out] x [out,in]
 *           dw (+)= dz^T x           [out,N] x [N,in]  (dz read transposed)
 *           db (+)= column sums of dz
 *   relu, sigmoid and tanh take act' from the saved output y; GELU needs the
 *   pre-activation, recomputed as z = x w^T + b into scratch (neatml.h's contract).
 *   accumulate adds through the matmul's sum post-op (beta = 1): no extra pass.
 * bf16 (every tensor bf16, act NONE or RELU, n, in, out > 0: half.c's bf16_path on
 * cpu_device.bf16_gemm): dz = dy or dy where y > 0 (exact in bf16), the two products on
 * oneDNN's bf16 matmul (exact products, float32 sums, the sum post-op adding the old bf16
 * value before the one rounding), db summed from float32 copies of dz as the float32 op.
 */
#include "dnnl_util.h"

#include <string.h>

neat_status cpu_linear_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    cpu_gemm_desc g = {
        .batch = 1,
        .m = op->u.linear_forward.n,
        .n = op->u.linear_forward.out,
        .k = op->u.linear_forward.in,
        .trans_a = 0,
        .trans_b = 1, /* w is stored [out,in] = n x k */
        .alpha = 1.0f,
        .beta = 0.0f,
        .has_bias = op->u.linear_forward.b != NULL,
        .act = op->u.linear_forward.act,
        .ab_dt = op->u.linear_forward.x->dtype, /* bf16 only on cpu_device.bf16_gemm */
        .c_dt = op->u.linear_forward.y->dtype,
    };
    const void *bias = op->u.linear_forward.b ? op->u.linear_forward.b->data : NULL;
    return cpu_gemm(dev, cb, "neat_linear_forward", &g, op->u.linear_forward.x->data,
                    op->u.linear_forward.w->data, bias, op->u.linear_forward.y->data);
}

void cpu_bias_grad(int nthreads, const float *dz, int64_t outer, int64_t n, int64_t inner,
                   float *db, int accumulate) {
    if (inner == 1) {
        /* Column sums of a row-major [outer, n]: each thread owns blocks of 64 columns and
         * walks the rows, so the inner loop is contiguous and vectorizes. */
        enum { COLS = 64 };
        int64_t nblocks = (n + COLS - 1) / COLS;
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t j0 = blk * COLS, cols = n - j0 < COLS ? n - j0 : COLS;
            double sum[COLS];
            for (int64_t j = 0; j < cols; j++) sum[j] = 0.0;
            for (int64_t i = 0; i < outer; i++) {
                const float *row = dz + i * n + j0;
                for (int64_t j = 0; j < cols; j++) sum[j] += row[j];
            }
            for (int64_t j = 0; j < cols; j++)
                db[j0 + j] = accumulate ? (float)(db[j0 + j] + sum[j]) : (float)sum[j];
        }
        return;
    }
    /* [outer, n, inner] (conv: N, K, P*Q): channel j sums `outer` contiguous planes. */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t j = 0; j < n; j++) {
        double sum = 0.0;
        for (int64_t i = 0; i < outer; i++) {
            const float *plane = dz + (i * n + j) * inner;
            for (int64_t s = 0; s < inner; s++) sum += plane[s];
        }
        db[j] = accumulate ? (float)(db[j] + sum) : (float)sum;
    }
}

neat_status cpu_linear_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const char *fn = "neat_linear_backward";
    int nthreads = cpu_dev(dev)->nthreads;
    int64_t n = op->u.linear_backward.n, in = op->u.linear_backward.in,
            out = op->u.linear_backward.out;
    neat_activation act = op->u.linear_backward.act;
    int accumulate = op->u.linear_backward.accumulate;
    const nm_tensor *x = op->u.linear_backward.x, *w = op->u.linear_backward.w,
                    *b = op->u.linear_backward.b;
    nm_tensor *dx = op->u.linear_backward.dx, *dw = op->u.linear_backward.dw,
              *db = op->u.linear_backward.db;
    neat_dtype dt = x->dtype; /* bf16: half.c's bf16_path */
    neat_status st;

    /* dz = dy * act'(.) */
    const void *dz = op->u.linear_backward.dy->data;
    if (act != NEAT_ACT_NONE && n * out > 0) {
        size_t bytes = (size_t)(n * out) * neat_dtype_size(dt);
        void *grad = NULL;
        st = nm_scratch_alloc(cb, bytes, &grad);
        if (st != NEAT_OK) return st;
        if (dt == NEAT_BF16) {
            cpu_relu_grad_bf16(nthreads, cpu_half_data(op->u.linear_backward.dy),
                               cpu_half_data(op->u.linear_backward.y), grad, n * out);
        } else if (act == NEAT_ACT_GELU) {
            void *z = NULL;
            st = nm_scratch_alloc(cb, bytes, &z);
            if (st != NEAT_OK) return st;
            cpu_gemm_desc fwd = {.batch = 1,
                                 .m = n,
                                 .n = out,
                                 .k = in,
                                 .trans_b = 1,
                                 .alpha = 1.0f,
                                 .beta = 0.0f,
                                 .has_bias = b != NULL,
                                 .act = NEAT_ACT_NONE};
            st = cpu_gemm(dev, cb, fn, &fwd, x->data, w->data, b ? b->data : NULL, z);
            if (st != NEAT_OK) return st;
            cpu_act_grad(nthreads, act, z, NULL, dz, grad, n * out);
        } else {
            cpu_act_grad(nthreads, act, NULL, op->u.linear_backward.y->data, dz, grad, n * out);
        }
        dz = grad;
    }

    float beta = accumulate ? 1.0f : 0.0f;
    if (dx) { /* [N,out] x [out,in] */
        cpu_gemm_desc g = {.batch = 1,
                           .m = n,
                           .n = in,
                           .k = out,
                           .alpha = 1.0f,
                           .beta = beta,
                           .act = NEAT_ACT_NONE,
                           .ab_dt = dt,
                           .c_dt = dt};
        st = cpu_gemm(dev, cb, fn, &g, dz, w->data, NULL, dx->data);
        if (st != NEAT_OK) return st;
    }
    if (dw) { /* dz^T x: dz stored [N,out] = k x m */
        cpu_gemm_desc g = {.batch = 1,
                           .m = out,
                           .n = in,
                           .k = n,
                           .trans_a = 1,
                           .alpha = 1.0f,
                           .beta = beta,
                           .act = NEAT_ACT_NONE,
                           .ab_dt = dt,
                           .c_dt = dt};
        st = cpu_gemm(dev, cb, fn, &g, dz, x->data, NULL, dw->data);
        /* UNSUPPORTED sends a bf16 op back to half.c's float32 copies, which run it whole
         * again: not once dx has been added to */
        if (st == NEAT_ERR_UNSUPPORTED && dx && accumulate)
            return nm_error(NEAT_ERR_BACKEND_ERROR,
                            "%s: oneDNN took the bf16 product of dx but not that of dw", fn);
        if (st != NEAT_OK) return st;
    }
    if (db && dt == NEAT_F32) cpu_bias_grad(nthreads, dz, n, out, 1, db->data, accumulate);
    if (db && dt != NEAT_F32) { /* widened dz and db, the float32 sums, db rounded once */
        float *dzf = NULL, *dbf = NULL;
        if ((st = nm_scratch_alloc(cb, (size_t)(n * out) * sizeof(float), (void **)&dzf)) !=
                NEAT_OK ||
            (st = nm_scratch_alloc(cb, (size_t)out * sizeof(float), (void **)&dbf)) != NEAT_OK)
            return st;
        cpu_half_widen(dt, dz, dzf, n * out);
        if (accumulate) cpu_half_widen(dt, cpu_half_data(db), dbf, out);
        cpu_bias_grad(nthreads, dzf, n, out, 1, dbf, accumulate);
        cpu_half_narrow(dt, dbf, cpu_half_data(db), out);
    }
    return NEAT_OK;
}
