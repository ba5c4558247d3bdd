/*
 * test_optim.c — the float64 training references checked on their own, then the optimizers
 * of every device replayed over 1000 steps.
 *
 *  1. The references themselves: reference_train.c's backward functions against central
 *     differences of reference.c's forward functions (double, small random shapes), and
 *     the optimizer references against closed forms. They need no device and are the
 *     ground truth of the training rows of test_conformance.c: they are checked once, here.
 *  2. SGD (plain, momentum, Nesterov, weight decay) and AdamW replayed from one recorded
 *     update for 1000 steps with a learning-rate schedule written into `hyper`, checked at
 *     steps 1, 2 and 1000 against float64 with a running bound of float32 rounding. (One
 *     step from random state on every shape is a row kind of test_conformance.c.)
 * Seeds: NEATML_TEST_SEED overrides the base; each case prints its seed when it fails.
 */
#include "harness.h"
#include "reference.h"
#include "reference_train.h"
#include "util_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The base: each family adds its own offset (7000 the optimizers). */
static uint64_t g_seed = 0x5eed7a1full;

/* ======== 1. the references against finite differences ================================== */

/* The loss L = sum(f(params) * r): its gradient is the backward with dy = r. fd_grad
 * perturbs each element of v by +-h and compares (L+ - L-) / 2h with grad. */
typedef double (*loss_fn)(void *state);

static int fd_check(const char *what, const char *grad_name, loss_fn loss, void *state, double *v,
                    const double *grad, int64_t n) {
    const double h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h;
        double lp = loss(state);
        v[i] = keep - h;
        double lm = loss(state);
        v[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (!(fabs(fd - grad[i]) <= 1e-6 * (1 + fabs(grad[i]))))
            return CHECK(0, "finite differences %s %s[%lld]: numeric %.10g, reference %.10g", what,
                         grad_name, (long long)i, fd, grad[i]);
    }
    return CHECK(1, "finite differences %s %s", what, grad_name);
}

typedef struct lin_state {
    double *x, *w, *b, *r, *y;
    int64_t n, in, out;
    neat_activation act;
} lin_state;

static double lin_loss(void *p) {
    lin_state *s = p;
    ref_linear_forward(s->x, s->w, s->b, s->act, s->y, NULL, NULL, s->n, s->in, s->out);
    double l = 0;
    for (int64_t i = 0; i < s->n * s->out; i++) l += s->y[i] * s->r[i];
    return l;
}

typedef struct conv_state {
    ref_conv_shape shape;
    neat_conv2d_desc d;
    double *x, *w, *b, *r, *y;
    int64_t ny;
    neat_activation act;
} conv_state;

static double conv_loss(void *p) {
    conv_state *s = p;
    ref_conv2d_forward(&s->shape, s->x, s->w, s->b, s->act, s->y, NULL, NULL);
    double l = 0;
    for (int64_t i = 0; i < s->ny; i++) l += s->y[i] * s->r[i];
    return l;
}

typedef struct row_state { /* softmax, cross-entropy, pooling, activation */
    double *x, *r, *y, *labels;
    int64_t rows, cols;
    ref_conv_shape pool;
    neat_activation act;
} row_state;

static double softmax_loss(void *p) {
    row_state *s = p;
    ref_softmax(s->x, s->y, s->rows, s->cols);
    double l = 0;
    for (int64_t i = 0; i < s->rows * s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static double xent_loss(void *p) {
    row_state *s = p;
    return ref_softmax_xent(s->rows, s->cols, s->x, s->labels);
}

static double pool_loss(void *p) {
    row_state *s = p;
    ref_maxpool2d(&s->pool, s->x, s->y);
    double l = 0;
    for (int64_t i = 0; i < s->rows * s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static double act_loss(void *p) {
    row_state *s = p;
    ref_activation(s->act, s->x, s->y, s->cols);
    double l = 0;
    for (int64_t i = 0; i < s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static void check_references(void) {
    nt_rng rng = {g_seed ^ 0xfd};
    double *buf[12];
    for (int i = 0; i < 12; i++) buf[i] = tr_dnew(4096);
    double *x = buf[0], *w = buf[1], *b = buf[2], *r = buf[3], *y = buf[4], *dx = buf[5],
           *dw = buf[6], *db = buf[7], *prev = buf[8], *lab = buf[9];
    char what[96];

    for (int a = 0; a <= NEAT_ACT_GELU; a++) { /* linear: n 3, in 4, out 5 */
        lin_state s = {x, w, b, r, y, 3, 4, 5, (neat_activation)a};
        tr_rand_fill(&rng, x, 12, -1, 1), tr_rand_fill(&rng, w, 20, -1, 1);
        tr_rand_fill(&rng, b, 5, -1, 1), tr_rand_fill(&rng, r, 15, -1, 1);
        ref_linear_forward(x, w, b, s.act, y, NULL, NULL, 3, 4, 5);
        ref_linear_backward(x, w, b, y, r, s.act, 3, 4, 5, dx, dw, db, 0);
        snprintf(what, sizeof what, "linear %s", tr_act_name(s.act));
        fd_check(what, "dx", lin_loss, &s, x, dx, 12);
        fd_check(what, "dw", lin_loss, &s, w, dw, 20);
        fd_check(what, "db", lin_loss, &s, b, db, 5);
        /* accumulate adds the same gradient to what is there (y again: fd_check's last
         * forward ran on a perturbed x) */
        ref_linear_forward(x, w, b, s.act, y, NULL, NULL, 3, 4, 5);
        for (int i = 0; i < 20; i++) prev[i] = dw[i] + 1.5;
        ref_linear_backward(x, w, b, y, r, s.act, 3, 4, 5, NULL, prev, NULL, 1);
        int ok = 1;
        for (int i = 0; i < 20; i++) ok &= fabs(prev[i] - (2 * dw[i] + 1.5)) < 1e-12;
        CHECK(ok, "reference linear %s: accumulate adds", tr_act_name(s.act));
    }

    /* conv: stride 2 / pad 1 / dilation 2 / groups 2 over every activation */
    static const struct {
        int64_t n, c, h, w, k, kh, kw, s, p, dil, g;
    } cv[] = {{2, 2, 5, 6, 3, 3, 3, 1, 1, 1, 1},
              {1, 4, 7, 7, 4, 3, 2, 2, 1, 1, 2},
              {2, 3, 8, 7, 2, 3, 3, 1, 2, 2, 1},
              {1, 4, 9, 8, 6, 3, 3, 2, 2, 2, 2},
              {1, 3, 6, 5, 3, 2, 2, 1, 0, 1, 3}};
    for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
        conv_state s = {{cv[i].n, cv[i].c, cv[i].h, cv[i].w, cv[i].k, cv[i].kh, cv[i].kw, cv[i].s,
                         cv[i].s, cv[i].p, cv[i].p, cv[i].dil, cv[i].dil, cv[i].g},
                        {cv[i].kh, cv[i].kw, cv[i].s, cv[i].s, cv[i].p, cv[i].p, cv[i].dil,
                         cv[i].dil, cv[i].g, NEAT_LAYOUT_NCHW},
                        x,
                        w,
                        b,
                        r,
                        y,
                        0,
                        (neat_activation)(i % 5)};
        int64_t P = ref_train_conv_out_size(cv[i].h, cv[i].kh, cv[i].s, cv[i].p, cv[i].dil);
        int64_t Q = ref_train_conv_out_size(cv[i].w, cv[i].kw, cv[i].s, cv[i].p, cv[i].dil);
        int64_t nx = cv[i].n * cv[i].c * cv[i].h * cv[i].w;
        int64_t nw = cv[i].k * (cv[i].c / cv[i].g) * cv[i].kh * cv[i].kw;
        s.ny = cv[i].n * cv[i].k * P * Q;
        tr_rand_fill(&rng, x, nx, -1, 1), tr_rand_fill(&rng, w, nw, -1, 1);
        tr_rand_fill(&rng, b, cv[i].k, -1, 1), tr_rand_fill(&rng, r, s.ny, -1, 1);
        ref_conv2d_forward(&s.shape, x, w, b, s.act, y, NULL, NULL);
        ref_conv2d_backward(&s.d, cv[i].n, cv[i].c, cv[i].h, cv[i].w, cv[i].k, x, w, b, y, r, s.act,
                            dx, dw, db, 0);
        snprintf(what, sizeof what, "conv case %zu (%s)", i, tr_act_name(s.act));
        fd_check(what, "dx", conv_loss, &s, x, dx, nx);
        fd_check(what, "dw", conv_loss, &s, w, dw, nw);
        fd_check(what, "db", conv_loss, &s, b, db, cv[i].k);
    }

    /* maxpool: 3x3 stride 2 pad 1 (overlapping windows) and 2x2 stride 2 */
    for (int i = 0; i < 2; i++) {
        row_state s = {x,
                       r,
                       y,
                       NULL,
                       0,
                       0,
                       {2, 3, 7, 6, 3, 3 - i, 3 - i, 2, 2, 1 - i, 1 - i, 1, 1, 1},
                       NEAT_ACT_NONE};
        neat_pool2d_desc d = {s.pool.kh, s.pool.kw, 2, 2, s.pool.ph, s.pool.pw, NEAT_LAYOUT_NCHW};
        s.rows = 6; /* n c */
        s.cols = ref_train_pool_out_size(7, d.kernel_h, 2, d.pad_h) *
                 ref_train_pool_out_size(6, d.kernel_w, 2, d.pad_w);
        tr_rand_fill(&rng, x, 6 * 42, -1, 1), tr_rand_fill(&rng, r, s.rows * s.cols, -1, 1);
        ref_maxpool2d_backward(&d, 2, 3, 7, 6, x, r, dx);
        snprintf(what, sizeof what, "maxpool %lldx%lld", (long long)d.kernel_h,
                 (long long)d.kernel_w);
        fd_check(what, "dx", pool_loss, &s, x, dx, 6 * 42);
    }

    for (int a = 0; a <= NEAT_ACT_GELU; a++) { /* activations */
        row_state s = {x, r, y, NULL, 1, 40, {0}, (neat_activation)a};
        tr_rand_fill(&rng, x, 40, -3, 3), tr_rand_fill(&rng, r, 40, -1, 1);
        ref_activation(s.act, x, y, 40);
        ref_activation_backward(s.act, x, y, r, dx, 40);
        snprintf(what, sizeof what, "activation %s", tr_act_name(s.act));
        fd_check(what, "dx", act_loss, &s, x, dx, 40);
    }

    row_state sm = {x, r, y, lab, 3, 7, {0}, NEAT_ACT_NONE};
    tr_rand_fill(&rng, x, 21, -3, 3), tr_rand_fill(&rng, r, 21, -1, 1);
    ref_softmax(x, y, 3, 7);
    ref_softmax_backward(3, 7, y, r, dx);
    fd_check("softmax", "dx", softmax_loss, &sm, x, dx, 21);
    for (int i = 0; i < 3; i++) lab[i] = (double)nt_randint(&rng, 0, 6);
    ref_softmax_xent_backward(3, 7, x, lab, dx);
    fd_check("softmax cross-entropy", "dlogits", xent_loss, &sm, x, dx, 21);

    /* Optimizers against closed forms for a constant gradient g = 0.5 from param 1:
     * plain SGD: p_t = 1 - t lr g; momentum m: v_t = g (1 - m^t) / (1 - m);
     * Adam: m_t / (1-b1^t) = g and v_t / (1-b2^t) = g^2, so each step is lr g/(|g|+eps). */
    double p1 = 1, p2 = 1, v2 = 0, p3 = 1, m3 = 0, v3 = 0, g = 0.5, lr = 0.1;
    neat_sgd_params plain = {0, 0, 0}, mom = {0.5f, 0, 0};
    neat_adam_params adam = {0.9f, 0.999f, 1e-8f, 0};
    for (int t = 1; t <= 5; t++) {
        ref_sgd_update(&plain, lr, &p1, &g, NULL, 1);
        ref_sgd_update(&mom, lr, &p2, &g, &v2, 1);
        ref_adam_update(&adam, lr, t, &p3, &g, &m3, &v3, 1);
    }
    CHECK(fabs(p1 - (1 - 5 * lr * g)) < 1e-12, "reference sgd: %g", p1);
    CHECK(fabs(v2 - g * (1 - pow(0.5, 5)) / 0.5) < 1e-12, "reference sgd momentum: %g", v2);
    CHECK(fabs(p3 - (1 - 5 * lr * g / (g + 1e-8))) < 1e-9, "reference adam: %.12g", p3);

    for (int i = 0; i < 12; i++) free(buf[i]);
}

/* ======== 2. optimizers ================================================================== */

/* Replays one recorded update for 1000 steps, writing a new gradient and hyper = {lr_t, t}
 * before each commit, and compares at steps 1, 2 and 1000 with the float64 formula. The
 * tolerance is 4x a bound of float32 rounding carried along with the reference: each
 * state's error e grows by the propagated error of its inputs plus a few roundings of the
 * magnitudes involved (e_p' = e_p + lr e_u + 2 eps (|p| + lr |u|), and so on). */
typedef struct optim_case {
    const char *name;
    int adam;
    neat_sgd_params sgd;
    neat_adam_params ad;
    float lr0;
} optim_case;

/* The learning-rate schedule: cosine between lr0 and lr0/2 (float, as hyper holds it). */
static float schedule(float lr0, int t) { return lr0 * (float)(0.75 + 0.25 * cos(t / 50.0)); }

static void optim_run(neat_device *dev, const char *dname, const optim_case *oc, int64_t n,
                      uint64_t seed) {
    char ctx[200];
    snprintf(ctx, sizeof ctx, "%s %s n=%lld seed=%#llx", dname, oc->name, (long long)n,
             (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    double *p = tr_anew(&a, n), *g = tr_anew(&a, n), *s1 = tr_anew(&a, n), *s2 = tr_anew(&a, n);
    double *ep = tr_anew(&a, n), *e1 = tr_anew(&a, n), *e2 = tr_anew(&a, n), *got = tr_anew(&a, n);
    double *tol = tr_anew(&a, n);
    tr_rand_fill(&rng, p, n, -1, 1);
    int uses_s1 = oc->adam || oc->sgd.momentum != 0.0f;
    int64_t sh[1] = {n}, shh[1] = {2};
    neat_tensor *P = tr_mk(&c, 1, sh, p), *G = tr_mk(&c, 1, sh, NULL), *H = tr_mk(&c, 1, shh, NULL);
    neat_tensor *S1 = uses_s1 ? tr_mk(&c, 1, sh, s1) : NULL; /* zeros: velocity or m */
    neat_tensor *S2 = oc->adam ? tr_mk(&c, 1, sh, s2) : NULL;
    neat_cmdbuf *cb = NULL;
    if (c.failed || !tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx))
        goto done;
    neat_status st = oc->adam ? neat_adam_update(cb, &oc->ad, H, P, G, S1, S2)
                              : neat_sgd_update(cb, &oc->sgd, H, P, G, S1);
    if (!CHECK_OK(st, ctx)) goto done;
    const double eps = EPS32;
    for (int t = 1; t <= 1000; t++) {
        double lr = schedule(oc->lr0, t), hyper[2] = {lr, t};
        tr_rand_fill(&rng, g, n, -1, 1);
        tr_upload(&c, G, g, n);
        tr_upload(&c, H, hyper, 2);
        if (c.failed || !tr_run(&c, cb)) goto done;
        for (int64_t i = 0; i < n; i++) { /* the error bounds, from the state before the step */
            if (oc->adam) {
                double b1 = oc->ad.beta1, b2 = oc->ad.beta2, ea = oc->ad.eps;
                double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
                double m = b1 * s1[i] + (1 - b1) * g[i], v = b2 * s2[i] + (1 - b2) * g[i] * g[i];
                e1[i] = b1 * e1[i] + 3 * eps * (b1 * fabs(s1[i]) + (1 - b1) * fabs(g[i]));
                e2[i] = b2 * e2[i] + 4 * eps * (b2 * s2[i] + (1 - b2) * g[i] * g[i]);
                /* bias corrections in float: b^t to a few ulp, then 1 - b^t */
                double rbc1 = (4 * eps * pow(b1, t) + eps * bc1) / bc1;
                double rbc2 = (4 * eps * pow(b2, t) + eps * bc2) / bc2;
                double mh = m / bc1, vh = v / bc2, sv = sqrt(vh), den = sv + ea;
                double emh = e1[i] / bc1 + fabs(mh) * (rbc1 + eps);
                double evh = e2[i] / bc2 + vh * (rbc2 + eps);
                double es = vh > 4 * evh ? evh / sv : sqrt(evh);
                double eden = es + eps * (sv + den), u = mh / den;
                double eu = emh / den + fabs(u) * eden / den + 2 * eps * fabs(u);
                double keep = 1 - lr * oc->ad.weight_decay;
                ep[i] = ep[i] * keep + lr * eu + 3 * eps * (fabs(p[i]) + lr * fabs(u)) +
                        eps * fabs(p[i]) * lr * oc->ad.weight_decay;
            } else {
                double mom = oc->sgd.momentum, wd = oc->sgd.weight_decay;
                double gg = g[i] + wd * p[i];
                double eg = wd * ep[i] + 2 * eps * (fabs(g[i]) + wd * fabs(p[i]));
                double u = gg, eu = eg;
                if (mom != 0) {
                    double v = mom * s1[i] + gg;
                    e1[i] = mom * e1[i] + eg + 2 * eps * (mom * fabs(s1[i]) + fabs(gg));
                    u = oc->sgd.nesterov ? gg + mom * v : v;
                    eu = oc->sgd.nesterov ? eg + mom * e1[i] + 2 * eps * (fabs(gg) + mom * fabs(v))
                                          : e1[i];
                }
                ep[i] = ep[i] + lr * eu + 2 * eps * (fabs(p[i]) + lr * fabs(u));
            }
        }
        if (oc->adam)
            ref_adam_update(&oc->ad, lr, t, p, g, s1, s2, n);
        else
            ref_sgd_update(&oc->sgd, lr, p, g, uses_s1 ? s1 : NULL, n);
        if (t != 1 && t != 2 && t != 1000) continue;
        char what[48];
        const double *states[3] = {p, s1, s2}, *errs[3] = {ep, e1, e2};
        neat_tensor *ts[3] = {P, S1, S2};
        static const char *names[2][3] = {{"param", "velocity", ""}, {"param", "m", "v"}};
        for (int k = 0; k < 3; k++) {
            if (!ts[k]) continue;
            for (int64_t i = 0; i < n; i++) tol[i] = 4 * errs[k][i] + 1e-37;
            snprintf(what, sizeof what, "%s at step %d", names[oc->adam][k], t);
            if (tr_download(&c, ts[k], got, n)) tr_compare(&c, what, got, states[k], tol, n, 4e-5);
        }
    }
done:
    neat_cmdbuf_destroy(cb);
    tr_case_free(&c);
    tr_afree(&a);
}

static void test_optimizers(neat_device *dev, const char *dname) {
    static const optim_case cases[] = {
        {"sgd", 0, {0, 0, 0}, {0, 0, 0, 0}, 0.1f},
        {"sgd momentum 0.9", 0, {0.9f, 0, 0}, {0, 0, 0, 0}, 0.05f},
        {"sgd nesterov 0.9", 0, {0.9f, 0, 1}, {0, 0, 0, 0}, 0.05f},
        {"sgd momentum 0.9 weight_decay 0.01", 0, {0.9f, 0.01f, 0}, {0, 0, 0, 0}, 0.05f},
        {"sgd weight_decay 0.1", 0, {0, 0.1f, 0}, {0, 0, 0, 0}, 0.1f},
        {"adamw", 1, {0, 0, 0}, {0.9f, 0.999f, 1e-8f, 0.01f}, 1e-3f},
        {"adam eps 1e-3", 1, {0, 0, 0}, {0.8f, 0.99f, 1e-3f, 0}, 1e-2f},
    };
    static const int64_t sizes[] = {1, 1031};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int si = 0; si < 2; si++)
            optim_run(dev, dname, &cases[i], sizes[si], g_seed + 7000 + 2 * i + (uint64_t)si);
}

/* A finite gradient whose square overflows float32 (|g| > 1.8e19 / sqrt(1 - beta2)): v
 * becomes +inf, as in PyTorch's float32 Adam, and the step m / (sqrt(inf) + eps) is 0, so
 * param keeps its value. The CPU's own sqrt gave NaN for +inf (and the param with it). */
static void test_adam_overflow(neat_device *dev, const char *dname) {
    enum { N = 4 };
    const float grad[N] = {1e21f, -1e25f, 3e38f, 1.0f};
    const float zeros[N] = {0}, hyper[2] = {1e-3f, 1.0f}, one[N] = {1, 1, 1, 1};
    neat_adam_params a = {0.9f, 0.999f, 1e-8f, 0.0f};
    const int64_t shape[1] = {N}, two[1] = {2};
    neat_tensor *p = NULL, *g = NULL, *m = NULL, *v = NULL, *h = NULL;
    neat_cmdbuf *cb = NULL;
    float got[N], vgot[N];
    if (!CHECK_OK(neat_tensor_create(dev, 1, shape, &p), "create") ||
        !CHECK_OK(neat_tensor_create(dev, 1, shape, &g), "create") ||
        !CHECK_OK(neat_tensor_create(dev, 1, shape, &m), "create") ||
        !CHECK_OK(neat_tensor_create(dev, 1, shape, &v), "create") ||
        !CHECK_OK(neat_tensor_create(dev, 1, two, &h), "create") ||
        !CHECK_OK(neat_cmdbuf_create(dev, &cb), "cmdbuf"))
        goto done;
    CHECK_OK(neat_tensor_write(p, one, N), "write");
    CHECK_OK(neat_tensor_write(g, grad, N), "write");
    CHECK_OK(neat_tensor_write(m, zeros, N), "write");
    CHECK_OK(neat_tensor_write(v, zeros, N), "write");
    CHECK_OK(neat_tensor_write(h, hyper, 2), "write");
    if (!CHECK_OK(neat_adam_update(cb, &a, h, p, g, m, v), "adam") ||
        !CHECK_OK(neat_cmdbuf_commit(cb), "commit") || !CHECK_OK(neat_cmdbuf_wait(cb), "wait"))
        goto done;
    CHECK_OK(neat_tensor_read(p, got, N), "read");
    CHECK_OK(neat_tensor_read(v, vgot, N), "read");
    for (int i = 0; i < 3; i++)
        CHECK(got[i] == 1.0f && isinf(vgot[i]),
              "%s: adam step 1 with grad %g: param %g (want 1: v = %g overflowed, step 0)", dname,
              (double)grad[i], (double)got[i], (double)vgot[i]);
    /* the ordinary element beside them: the usual first step, param - lr sign(g) */
    CHECK(fabsf(got[3] - 0.999f) < 1e-6f, "%s: adam step 1, grad 1: param %g, want 0.999", dname,
          (double)got[3]);
done:
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(p), neat_tensor_destroy(g), neat_tensor_destroy(m);
    neat_tensor_destroy(v), neat_tensor_destroy(h);
}

int main(void) {
    g_seed = nt_seed_base("optim", g_seed);
    check_references();

    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++) {
        test_optimizers(devs[d], names[d]);
        test_adam_overflow(devs[d], names[d]);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("optim");
}
