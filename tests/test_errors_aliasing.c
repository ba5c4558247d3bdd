/*
 * test_errors_aliasing.c — the error contract case by case, on the CPU device: outputs that
 * share memory with an input (directly or through a view) are rejected, the elementwise
 * ops may run in place, and shapes at the edges (zero sizes, broadcast forms, a NaN c under
 * beta 0) are accepted or rejected with their exact messages.
 *
 * Every call goes through the checker of util_errors.h: the exact status, a substring of
 * neat_last_error(), the output untouched by a rejected call, and the buffer's one valid op
 * run. The calls derived from each op's description are in test_errors_ops.c.
 */
#include "harness.h"
#include "util_errors.h"

#include <math.h>
#include <string.h>

/* ---- aliasing, acceptance and exact messages, case by case --------------------------- */

/* Every tensor a case makes is kept here and destroyed at its end (destroy_kept), so that
 * the pool's in_use must come back to where it started. */
static neat_tensor *kept[128];
static int nkept;

static neat_tensor *keep(neat_tensor *t) {
    if (nkept < (int)(sizeof kept / sizeof kept[0]))
        kept[nkept++] = t;
    else
        CHECK(0, "more than %d tensors in one case: enlarge kept[]", nkept);
    return t;
}

static neat_tensor *ts(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    return keep(err_ts(ndim, d0, d1, d2, d3));
}

static neat_tensor *filled(int ndim, const int64_t *shape, float value) {
    return keep(err_make_filled(ndim, shape, value));
}

static neat_tensor *view(neat_tensor *t, int ndim, int64_t d0, int64_t d1) {
    const int64_t shape[2] = {d0, d1};
    neat_tensor *v = NULL;
    neat_status st = neat_tensor_view(t, ndim, shape, &v);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_view (setup)");
    return keep(v);
}

static int64_t in_use(void) {
    neat_memory_stats s = {-1, -1, -1, -1};
    CHECK_OK(neat_device_memory_stats(err_dev, &s), "neat_device_memory_stats");
    return s.in_use;
}

/* Destroy the case's tensors (views and their bases in creation order: a base goes before
 * its view) and check that the device holds no more memory than before the case. */
static void destroy_kept(const char *name, int64_t start) {
    for (int i = 0; i < nkept; i++) neat_tensor_destroy(kept[i]);
    nkept = 0;
    const int64_t end = in_use();
    CHECK(end == start, "%s: %lld bytes in use after destroying every tensor, %lld before", name,
          (long long)end, (long long)start);
}

/* `call` records into `cb`; `out` is the output whose pattern a rejected call must keep. */
#define REJECT(out, want, sub, call)                                                               \
    do {                                                                                           \
        neat_tensor *o_[1] = {out};                                                                \
        neat_cmdbuf *cb = err_case_begin(o_, 1);                                                   \
        err_case_end(cb, (call), want, sub, #call, o_, 1, (want) == NEAT_OK ? 2 : 1);              \
    } while (0)
#define ALIAS(out, sub, call) REJECT(out, NEAT_ERR_INVALID_ARGUMENT, sub, call)
#define ACCEPT(out, call) REJECT(out, NEAT_OK, "", call)

static void test_aliasing(void) {
    const int64_t start = in_use();
    neat_tensor *a = ts(2, 3, 3, 0, 0), *b = ts(2, 3, 3, 0, 0), *c = ts(2, 3, 3, 0, 0);
    neat_tensor *d = ts(2, 3, 3, 0, 0), *av = view(a, 2, 3, 3);
    neat_tensor *a3 = ts(3, 2, 3, 3, 0), *b3 = ts(3, 2, 3, 3, 0);
    neat_tensor *v3 = ts(1, 3, 0, 0, 0);
    neat_tensor *v3b = ts(1, 3, 0, 0, 0), *row = ts(2, 1, 3, 0, 0);
    neat_tensor *bview = view(v3, 2, 1, 3);
    ALIAS(a, "neat_matmul: c shares memory with a", neat_matmul(cb, a, b, a, 1, 0, 0, 0));
    ALIAS(b, "neat_matmul: c shares memory with b", neat_matmul(cb, a, b, b, 1, 0, 0, 0));
    ALIAS(av, "neat_matmul: c shares memory with a", neat_matmul(cb, a, b, av, 1, 0, 0, 0));
    ALIAS(a3, "neat_matmul_batched: c shares memory with a",
          neat_matmul_batched(cb, a3, b3, a3, 1, 0, 0, 0));
    ALIAS(a, "neat_linear_forward: y shares memory with x",
          neat_linear_forward(cb, NEAT_ACT_RELU, a, b, NULL, a));
    ALIAS(b, "neat_linear_forward: y shares memory with w",
          neat_linear_forward(cb, NEAT_ACT_NONE, a, b, v3b, b));
    ALIAS(bview, "neat_linear_forward: y shares memory with b",
          neat_linear_forward(cb, NEAT_ACT_NONE, row, a, v3, bview));
    /* linear_backward: x, w, y, dy, dx, dw all 3x3 */
    ALIAS(a, "neat_linear_backward: dx shares memory with x",
          neat_linear_backward(cb, NEAT_ACT_RELU, a, b, NULL, c, d, a, NULL, NULL, 0));
    ALIAS(d, "neat_linear_backward: dx shares memory with dy",
          neat_linear_backward(cb, NEAT_ACT_RELU, a, b, NULL, c, d, d, NULL, NULL, 0));
    ALIAS(b, "neat_linear_backward: dw shares memory with w",
          neat_linear_backward(cb, NEAT_ACT_NONE, a, b, NULL, c, d, NULL, b, NULL, 0));
    ALIAS(c, "neat_linear_backward: dw shares memory with y",
          neat_linear_backward(cb, NEAT_ACT_TANH, a, b, NULL, c, d, NULL, c, NULL, 0));
    neat_tensor *g = ts(2, 3, 3, 0, 0);
    ALIAS(g, "neat_linear_backward: dw shares memory with dx",
          neat_linear_backward(cb, NEAT_ACT_NONE, a, b, NULL, c, d, g, g, NULL, 0));
    ALIAS(v3, "neat_linear_backward: db shares memory with b",
          neat_linear_backward(cb, NEAT_ACT_GELU, a, b, v3, c, d, NULL, NULL, v3, 1));
    ALIAS(d, "neat_activation_backward: dx shares memory with dy",
          neat_activation_backward(cb, NEAT_ACT_RELU, NULL, c, d, d));
    ALIAS(c, "neat_activation_backward: dx shares memory with y",
          neat_activation_backward(cb, NEAT_ACT_SIGMOID, NULL, c, d, c));
    ALIAS(a, "neat_activation_backward: dx shares memory with x",
          neat_activation_backward(cb, NEAT_ACT_GELU, a, NULL, d, a));
    ALIAS(c, "neat_softmax_backward: dx shares memory with y", neat_softmax_backward(cb, c, d, c));
    ALIAS(d, "neat_softmax_backward: dx shares memory with dy", neat_softmax_backward(cb, c, d, d));

    /* convolution and pooling keeping the size: 3x3 pad 1 / 1x1 windows */
    neat_tensor *x = ts(4, 1, 2, 4, 4), *w = ts(4, 2, 2, 3, 3), *y = ts(4, 1, 2, 4, 4);
    neat_tensor *dy = ts(4, 1, 2, 4, 4), *kb = ts(1, 2, 0, 0, 0);
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_pool2d_desc pd = neat_pool2d_desc_make(1, 1, 1, 0);
    ALIAS(x, "neat_conv2d_forward: y shares memory with x",
          neat_conv2d_forward(cb, &cd, NEAT_ACT_NONE, x, w, NULL, x));
    ALIAS(x, "neat_conv2d_backward: dx shares memory with x",
          neat_conv2d_backward(cb, &cd, NEAT_ACT_RELU, x, w, NULL, y, dy, x, NULL, NULL, 0));
    ALIAS(dy, "neat_conv2d_backward: dx shares memory with dy",
          neat_conv2d_backward(cb, &cd, NEAT_ACT_RELU, x, w, NULL, y, dy, dy, NULL, NULL, 0));
    ALIAS(w, "neat_conv2d_backward: dw shares memory with w",
          neat_conv2d_backward(cb, &cd, NEAT_ACT_NONE, x, w, NULL, NULL, dy, NULL, w, NULL, 0));
    ALIAS(kb, "neat_conv2d_backward: db shares memory with b",
          neat_conv2d_backward(cb, &cd, NEAT_ACT_NONE, x, w, kb, NULL, dy, NULL, NULL, kb, 0));
    ALIAS(x, "neat_maxpool2d: y shares memory with x", neat_maxpool2d(cb, &pd, x, x));
    ALIAS(x, "neat_maxpool2d_backward: dx shares memory with x",
          neat_maxpool2d_backward(cb, &pd, x, dy, x));
    ALIAS(dy, "neat_maxpool2d_backward: dx shares memory with dy",
          neat_maxpool2d_backward(cb, &pd, x, dy, dy));

    /* reductions and losses on one-element tensors */
    neat_tensor *one = ts(1, 1, 0, 0, 0), *lg = ts(2, 1, 1, 0, 0), *lgv = view(lg, 1, 1, 0);
    neat_tensor *lab = filled(1, (int64_t[]){1}, 0.0f);
    ALIAS(one, "neat_sum_all: y shares memory with x", neat_sum_all(cb, one, one));
    neat_tensor *row_flat = view(row, 1, 3, 0); /* [1,3] summed over axis 0 is [3] */
    ALIAS(row_flat, "neat_sum_axis: y shares memory with x", neat_sum_axis(cb, row, 0, row_flat));
    ALIAS(lab, "neat_softmax_cross_entropy: loss shares memory with labels",
          neat_softmax_cross_entropy(cb, lg, lab, lab));
    ALIAS(lgv, "neat_softmax_cross_entropy: loss shares memory with logits",
          neat_softmax_cross_entropy(cb, lg, lab, lgv));
    ALIAS(lg, "neat_softmax_cross_entropy_backward: dlogits shares memory with logits",
          neat_softmax_cross_entropy_backward(cb, lg, lab, lg));

    /* optimizers */
    neat_tensor *hyper = ts(1, 2, 0, 0, 0);
    neat_tensor *p2 = view(hyper, 1, 2, 0), *q2 = ts(1, 2, 0, 0, 0);
    neat_sgd_params sp = {0.9f, 0, 0};
    neat_adam_params ap = {0.9f, 0.999f, 1e-8f, 0};
    ALIAS(a, "neat_sgd_update: param shares memory with grad",
          neat_sgd_update(cb, &sp, hyper, a, a, b));
    neat_tensor *vel2 = ts(1, 2, 0, 0, 0);
    ALIAS(p2, "neat_sgd_update: param shares memory with hyper",
          neat_sgd_update(cb, &sp, hyper, p2, q2, vel2));
    ALIAS(a, "neat_sgd_update: velocity shares memory with param",
          neat_sgd_update(cb, &sp, hyper, a, b, a));
    ALIAS(b, "neat_sgd_update: velocity shares memory with grad",
          neat_sgd_update(cb, &sp, hyper, a, b, b));
    ALIAS(a, "neat_adam_update: param shares memory with m",
          neat_adam_update(cb, &ap, hyper, a, b, a, c));
    ALIAS(c, "neat_adam_update: m shares memory with v",
          neat_adam_update(cb, &ap, hyper, a, b, c, c));
    ALIAS(b, "neat_adam_update: v shares memory with grad",
          neat_adam_update(cb, &ap, hyper, a, b, c, b));

    /* mixed precision: master, the state and param alias nothing; the scaler is read by
     * every op, so no output may share it; the check's list may share memory (read only) */
    neat_tensor *sc = ts(1, 3, 0, 0, 0), *sc2 = ts(1, 3, 0, 0, 0), *e = ts(2, 3, 3, 0, 0);
    ALIAS(a, "neat_sgd_update_mixed: master shares memory with param",
          neat_sgd_update_mixed(cb, &sp, hyper, sc, a, b, c, a));
    ALIAS(c, "neat_sgd_update_mixed: velocity shares memory with param",
          neat_sgd_update_mixed(cb, &sp, hyper, sc, a, b, c, c));
    ALIAS(b, "neat_sgd_update_mixed: param shares memory with grad",
          neat_sgd_update_mixed(cb, &sp, hyper, sc, a, b, c, b));
    ALIAS(av, "neat_sgd_update_mixed: master shares memory with param",
          neat_sgd_update_mixed(cb, &sp, hyper, sc, a, b, c, av));
    ALIAS(sc2, "neat_sgd_update_mixed: master shares memory with scaler",
          neat_sgd_update_mixed(cb, &sp, hyper, sc2, view(sc2, 1, 3, 0), v3, v3b, NULL));
    ALIAS(p2, "neat_sgd_update_mixed: master shares memory with hyper",
          neat_sgd_update_mixed(cb, &sp, hyper, NULL, p2, q2, vel2, NULL));
    ALIAS(a, "neat_adam_update_mixed: master shares memory with param",
          neat_adam_update_mixed(cb, &ap, hyper, sc, a, b, c, d, a));
    ALIAS(d, "neat_adam_update_mixed: v shares memory with param",
          neat_adam_update_mixed(cb, &ap, hyper, sc, a, b, c, d, d));
    ALIAS(e, "neat_adam_update_mixed: param shares memory with grad",
          neat_adam_update_mixed(cb, &ap, hyper, sc, a, e, c, d, e));
    ALIAS(c, "neat_adam_update_mixed: m shares memory with grad",
          neat_adam_update_mixed(cb, &ap, hyper, sc, a, c, c, d, e));
    ACCEPT(e, neat_sgd_update_mixed(cb, &sp, hyper, sc, a, b, c, e));
    ALIAS(sc, "neat_loss_scale: y shares memory with scaler", neat_loss_scale(cb, sc, v3, sc));
    ACCEPT(a, neat_loss_scale(cb, sc, a, a));
    ALIAS(sc, "neat_loss_scale_check: scaler shares memory with tensors[1]",
          neat_loss_scale_check(cb, (const neat_tensor *[]){a, sc}, 2, sc));
    ACCEPT(sc, neat_loss_scale_check(cb, (const neat_tensor *[]){a, av, a}, 3, sc));

    /* the elementwise ops may run in place */
    ACCEPT(a, neat_add(cb, a, b, a));
    ACCEPT(b, neat_add(cb, a, b, b));
    ACCEPT(a, neat_scale(cb, a, 0.5f, a));
    ACCEPT(a, neat_activation_forward(cb, NEAT_ACT_SIGMOID, a, a));
    ACCEPT(a, neat_softmax(cb, a, a));
    destroy_kept("test_aliasing", start);
}

/* Shapes at the edges: zero sizes, broadcast forms, exact messages. */
static void test_shapes(void) {
    const int64_t start = in_use();
    neat_tensor *a = ts(2, 2, 3, 0, 0), *b = ts(2, 3, 2, 0, 0), *c = ts(2, 2, 2, 0, 0);
    const char *exact = "neat_matmul: a is 2x5, b is 3x7: inner dimensions 5 and 3 differ";
    neat_tensor *a25 = ts(2, 2, 5, 0, 0);
    neat_tensor *b37 = ts(2, 3, 7, 0, 0), *c27 = ts(2, 2, 7, 0, 0);
    REJECT(c27, NEAT_ERR_SHAPE_MISMATCH, exact, neat_matmul(cb, a25, b37, c27, 1, 0, 0, 0));
    CHECK(strcmp(neat_last_error(), exact) == 0, "message \"%s\", want \"%s\"", neat_last_error(),
          exact);
    REJECT(c27, NEAT_ERR_SHAPE_MISMATCH,
           "a is 2x5 (transposed), b is 3x7: inner dimensions 2 and 3",
           neat_matmul(cb, a25, b37, c27, 1, 0, 1, 0));

    /* beta = 0: c is required but its NaN contents are not read */
    const float nan4[4] = {NAN, NAN, NAN, NAN};
    neat_tensor_write(c, nan4, 4);
    neat_cmdbuf *mb = NULL;
    neat_cmdbuf_create(err_dev, &mb);
    CHECK_OK(neat_matmul(mb, a, b, c, 1, 0, 0, 0), "matmul beta 0 over NaN c");
    CHECK_OK(neat_cmdbuf_commit(mb), "commit");
    CHECK_OK(neat_cmdbuf_wait(mb), "wait");
    float got[4] = {0};
    neat_tensor_read(c, got, 4);
    CHECK(got[0] == 3 && got[1] == 3 && got[2] == 3 && got[3] == 3,
          "matmul beta 0: c = %g %g %g %g, want 3 (ones 2x3 times ones 3x2)", got[0], got[1],
          got[2], got[3]);
    neat_cmdbuf_destroy(mb);

    /* zero sizes are valid */
    neat_tensor *z03 = ts(2, 0, 3, 0, 0);
    neat_tensor *z02 = ts(2, 0, 2, 0, 0), *a20 = ts(2, 2, 0, 0, 0);
    neat_tensor *b02 = ts(2, 0, 2, 0, 0);
    neat_tensor *z = ts(1, 0, 0, 0, 0), *s1 = ts(1, 1, 0, 0, 0);
    ACCEPT(z02, neat_matmul(cb, z03, b, z02, 1, 0, 0, 0));
    ACCEPT(c, neat_matmul(cb, a20, b02, c, 1, 0, 0, 0));
    ACCEPT(z03, neat_add(cb, z03, ts(1, 3, 0, 0, 0), z03));
    ACCEPT(s1, neat_sum_all(cb, z, s1));
    ACCEPT(z03, neat_softmax(cb, z03, z03));
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_tensor *x0 = ts(4, 0, 2, 4, 4);
    neat_tensor *w = ts(4, 3, 2, 3, 3), *y0 = ts(4, 0, 3, 4, 4);
    ACCEPT(y0, neat_conv2d_forward(cb, &cd, NEAT_ACT_RELU, x0, w, NULL, y0));
    neat_pool2d_desc pd = neat_pool2d_desc_make(2, 2, 2, 0);
    neat_tensor *xc0 = ts(4, 2, 0, 4, 4), *yc0 = ts(4, 2, 0, 2, 2);
    ACCEPT(yc0, neat_maxpool2d(cb, &pd, xc0, yc0));
    neat_tensor *lab0 = ts(1, 0, 0, 0, 0), *l04 = ts(2, 0, 4, 0, 0);
    ACCEPT(s1, neat_softmax_cross_entropy(cb, l04, lab0, s1));
    neat_tensor *l20 = ts(2, 2, 0, 0, 0), *lab2 = ts(1, 2, 0, 0, 0);
    REJECT(s1, NEAT_ERR_SHAPE_MISMATCH,
           "neat_softmax_cross_entropy: logits is 2x0: no classes for 2 rows",
           neat_softmax_cross_entropy(cb, l20, lab2, s1));
    neat_tensor *h2 = ts(2, 2, 1, 0, 0);
    neat_tensor *zp = ts(1, 0, 0, 0, 0), *zg = ts(1, 0, 0, 0, 0);
    neat_sgd_params sp = {0, 0, 0};
    ACCEPT(zp, neat_sgd_update(cb, &sp, h2, zp, zg, NULL));

    /* the accepted shape variants */
    neat_tensor *v4 = ts(1, 4, 0, 0, 0);
    neat_tensor *r14 = ts(2, 1, 4, 0, 0), *o4 = ts(1, 4, 0, 0, 0);
    ACCEPT(o4, neat_add(cb, v4, r14, o4));
    neat_tensor *s0 = ts(0, 0, 0, 0, 0), *t0 = ts(0, 0, 0, 0, 0);
    ACCEPT(t0, neat_add(cb, s0, s0, t0));
    ACCEPT(t0, neat_sum_axis(cb, v4, 0, t0));
    ACCEPT(s1, neat_sum_axis(cb, v4, 0, s1));
    REJECT(t0, NEAT_ERR_INVALID_ARGUMENT, "neat_sum_axis: axis 0 is outside [0, 0) for x []",
           neat_sum_axis(cb, s0, 0, t0));
    neat_tensor *s111 = ts(3, 1, 1, 1, 0);
    ACCEPT(s111, neat_sum_all(cb, a, s111));
    destroy_kept("test_shapes", start);
}

int main(void) {
    if (!err_open()) return nt_finish("errors_aliasing");
    test_aliasing();
    test_shapes();
    err_close();
    printf("errors_aliasing: %d op calls checked\n", err_ncases);
    return nt_finish("errors_aliasing");
}
