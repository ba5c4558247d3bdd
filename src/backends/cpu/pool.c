/*
 * pool.c — 2-D max pooling on NCHW, forward and backward, as OpenMP loops.
 *
 * x [N,C,H,W] -> y [N,C,P,Q]; output (i, j) covers input rows i*sh - ph + r (0 <= r < kh)
 * and columns j*sw - pw + s (0 <= s < kw). Padding is -inf (it never wins; the core allows
 * at most half a kernel of padding, so every window holds a real element). Within a window
 * the elements are scanned row-major and a later one wins only when strictly greater or NaN
 * (PyTorch's rule): the first maximum wins, and a NaN propagates.
 *
 * Forward: for one output row, for each (r, s) of the window in scan order, one pass over
 * the output columns y[j] = pick(y[j], x[row r][j*sw + s - pw]): a strided load and a select,
 * which GCC vectorizes. 2x2 stride 2 without padding (the usual pooling) has its own loop.
 * Parallel over (plane, output row): every output row is independent.
 *
 * Backward: dx = 0, then each dy element is added to the position of its window's first
 * maximum (recomputed from x with the forward's rule). Windows that overlap add up, so the
 * scatter of one plane runs in a fixed order on one thread (deterministic); parallel over
 * planes, or over output rows when windows cannot overlap across rows (kh <= sh).
 */
#include "cpu.h"
#include "loops.h"

#include <math.h>
#include <string.h>

/* Output columns handled per pass of the backward (argmax state on the stack). */
#define POOL_CHUNK 256

/* First valid output column for window column s, and one past the last:
 * 0 <= j*sw + s - pw < w. */
static inline void pool_cols(const nm_conv_geom *g, int64_t s, int64_t *lo, int64_t *hi)
{
    int64_t off = g->pw - s; /* j*sw >= off */
    int64_t l = off > 0 ? (off + g->sw - 1) / g->sw : 0;
    int64_t last = g->w - 1 + off; /* j*sw <= last */
    int64_t h = last < 0 ? 0 : last / g->sw + 1;
    *lo = l;
    *hi = h < g->q ? h : g->q;
}

/* Window rows valid for output row i: r in [*rlo, *rhi). */
static inline void pool_rows(const nm_conv_geom *g, int64_t i, int64_t *rlo, int64_t *rhi)
{
    int64_t hs = i * g->sh - g->ph;
    *rlo = hs < 0 ? -hs : 0;
    *rhi = g->h - hs < g->kh ? g->h - hs : g->kh;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* One output row of the general case. xp: the input plane, yrow: q outputs. */
CPU_CLONES static void maxpool_row(const nm_conv_geom *g, const float *xp, float *yrow,
                                   int64_t i)
{
    int64_t q = g->q, sw = g->sw;
    for (int64_t j = 0; j < q; j++)
        yrow[j] = -INFINITY;
    int64_t rlo, rhi;
    pool_rows(g, i, &rlo, &rhi);
    for (int64_t r = rlo; r < rhi; r++) {
        const float *xrow = xp + (i * g->sh - g->ph + r) * g->w;
        for (int64_t s = 0; s < g->kw; s++) {
            int64_t lo, hi;
            pool_cols(g, s, &lo, &hi);
            const float *xs = xrow + s - g->pw;
            for (int64_t j = lo; j < hi; j++) {
                float v = xs[j * sw], m = yrow[j];
                yrow[j] = (v > m || v != v) ? v : m;
            }
        }
    }
}

/* 2x2 stride 2, no padding: y[j] = first max of x0[2j], x0[2j+1], x1[2j], x1[2j+1]. */
CPU_CLONES static void maxpool_row_2x2(const float *x0, const float *x1, float *yrow,
                                       int64_t q)
{
    for (int64_t j = 0; j < q; j++) {
        float m = x0[2 * j], v;
        v = x0[2 * j + 1];
        m = (v > m || v != v) ? v : m;
        v = x1[2 * j];
        m = (v > m || v != v) ? v : m;
        v = x1[2 * j + 1];
        m = (v > m || v != v) ? v : m;
        yrow[j] = m;
    }
}

static inline int pool_is_2x2(const nm_conv_geom *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

/* Output row `task` of all planes * P rows. */
static void maxpool_task(const nm_conv_geom *g, const float *x, float *y, int64_t task)
{
    int64_t plane = task / g->p, i = task % g->p;
    const float *xp = x + plane * g->h * g->w;
    float *yrow = y + task * g->q;
    if (pool_is_2x2(g))
        maxpool_row_2x2(xp + 2 * i * g->w, xp + (2 * i + 1) * g->w, yrow, g->q);
    else
        maxpool_row(g, xp, yrow, i);
}

neat_status cpu_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op)
{
    const nm_conv_geom *g = &op->u.pool.g;
    const float *x = op->u.pool.x->data;
    float *y = op->u.pool.y->data;
    int64_t tasks = g->n * g->c * g->p;
    if (tasks == 0 || g->q == 0)
        return NEAT_OK;
    int par = cpu_par(cpu_dev(dev)->nthreads, op->u.pool.x->numel);
    CPU_FOR(par, t, tasks, maxpool_task(g, x, y, t));
    return NEAT_OK;
}

/* ---- backward ------------------------------------------------------------------------------- */

/* dx plane += scatter of dy row i to the first maxima of its windows (general case).
 * Columns are done POOL_CHUNK at a time: the running max per output column and where in
 * the window it was found (row r, column s: int32 like the float beside them, so that GCC
 * vectorizes the scan), in the forward's scan order. */
CPU_CLONES static void maxpool_bwd_row(const nm_conv_geom *g, const float *xp,
                                       const float *dyrow, float *dxp, int64_t i)
{
    float best[POOL_CHUNK];
    int32_t where_r[POOL_CHUNK], where_s[POOL_CHUNK];
    int64_t rlo, rhi, sw = g->sw, row0 = i * g->sh - g->ph;
    pool_rows(g, i, &rlo, &rhi);
    for (int64_t j0 = 0; j0 < g->q; j0 += POOL_CHUNK) {
        int64_t j1 = j0 + POOL_CHUNK < g->q ? j0 + POOL_CHUNK : g->q;
        for (int64_t j = 0; j < j1 - j0; j++) {
            best[j] = -INFINITY;
            where_r[j] = -1;
            where_s[j] = 0;
        }
        for (int64_t r = rlo; r < rhi; r++) {
            const float *xrow = xp + (row0 + r) * g->w;
            for (int64_t s = 0; s < g->kw; s++) {
                int64_t lo, hi;
                pool_cols(g, s, &lo, &hi);
                lo = lo > j0 ? lo : j0;
                hi = hi < j1 ? hi : j1;
                const float *xs = xrow + s - g->pw;
                int32_t r32 = (int32_t)r, s32 = (int32_t)s;
                for (int64_t j = lo; j < hi; j++) {
                    float v = xs[j * sw], m = best[j - j0];
                    int32_t wr = where_r[j - j0], ws = where_s[j - j0];
                    int take = (v > m) | (v != v) | (wr < 0);
                    best[j - j0] = take ? v : m;
                    where_r[j - j0] = take ? r32 : wr;
                    where_s[j - j0] = take ? s32 : ws;
                }
            }
        }
        /* in column order: overlapping windows add in a fixed order */
        for (int64_t j = j0; j < j1; j++)
            dxp[(row0 + where_r[j - j0]) * g->w + j * sw - g->pw + where_s[j - j0]] += dyrow[j];
    }
}

/* 2x2 stride 2, no padding: every input element of rows 2i, 2i+1 (up to column 2Q) belongs
 * to exactly one window, so the block is written whole (dy at the argmax, 0 elsewhere).
 * The winner is picked with bit masks on dy rather than selects: selects of stores get
 * turned into branches by GCC, which then does not vectorize the loop. */
static inline float pool_keep(float g, uint32_t keep)
{
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= 0u - keep; /* keep is 0 or 1 */
    memcpy(&g, &bits, sizeof g);
    return g;
}

CPU_CLONES static void maxpool_bwd_row_2x2(const float *x0, const float *x1, const float *dyrow,
                                           float *dx0, float *dx1, int64_t q)
{
    for (int64_t j = 0; j < q; j++) {
        float a = x0[2 * j], b = x0[2 * j + 1], c = x1[2 * j], d = x1[2 * j + 1];
        float gr = dyrow[j];
        /* tb: b replaces a; tc: c replaces the max of a, b; td: d replaces them all */
        uint32_t tb = (b > a) | (b != b);
        float m = tb ? b : a;
        uint32_t tc = (c > m) | (c != c);
        m = tc ? c : m;
        uint32_t td = (d > m) | (d != d);
        dx1[2 * j + 1] = pool_keep(gr, td);
        dx1[2 * j] = pool_keep(gr, tc & (td ^ 1u));
        dx0[2 * j + 1] = pool_keep(gr, tb & (tc ^ 1u) & (td ^ 1u));
        dx0[2 * j] = pool_keep(gr, (tb | tc | td) ^ 1u);
    }
}

/* Output row i of one plane: dx rows it covers must already be zero (general case). */
static void maxpool_bwd_task_row(const nm_conv_geom *g, const float *xp, const float *dyp,
                                 float *dxp, int64_t i)
{
    if (pool_is_2x2(g)) {
        int64_t w = g->w, q = g->q;
        float *dx0 = dxp + 2 * i * w, *dx1 = dx0 + w;
        maxpool_bwd_row_2x2(xp + 2 * i * w, xp + (2 * i + 1) * w, dyp + i * q, dx0, dx1, q);
        for (int64_t c = 2 * q; c < w; c++) /* odd width: last column in no window */
            dx0[c] = dx1[c] = 0.0f;
    } else {
        maxpool_bwd_row(g, xp, dyp + i * g->q, dxp, i);
    }
}

/* dx rows of plane that no output row writes whole: all rows in the general case, the
 * trailing row of an odd height in the 2x2 case. */
static void maxpool_bwd_zero(const nm_conv_geom *g, float *dxp)
{
    if (pool_is_2x2(g))
        memset(dxp + 2 * g->p * g->w, 0, (size_t)((g->h - 2 * g->p) * g->w) * sizeof(float));
    else
        memset(dxp, 0, (size_t)(g->h * g->w) * sizeof(float));
}

neat_status cpu_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op)
{
    const nm_conv_geom *g = &op->u.pool_bwd.g;
    const float *x = op->u.pool_bwd.x->data, *dy = op->u.pool_bwd.dy->data;
    float *dx = op->u.pool_bwd.dx->data;
    int64_t planes = g->n * g->c, hw = g->h * g->w, pq = g->p * g->q;
    if (planes == 0 || hw == 0)
        return NEAT_OK;
    int par = cpu_par(cpu_dev(dev)->nthreads, op->u.pool_bwd.x->numel);

    if (par > 1 && planes < 2 * par && g->kh <= g->sh) {
        /* few large planes, rows of windows disjoint: split over (plane, output row) */
#pragma omp parallel num_threads(par)
        {
#pragma omp for schedule(static)
            for (int64_t pl = 0; pl < planes; pl++)
                maxpool_bwd_zero(g, dx + pl * hw);
#pragma omp for schedule(static)
            for (int64_t t = 0; t < planes * g->p; t++) {
                int64_t pl = t / g->p;
                maxpool_bwd_task_row(g, x + pl * hw, dy + pl * pq, dx + pl * hw, t % g->p);
            }
        }
        return NEAT_OK;
    }
    CPU_FOR(par, pl, planes, {
        maxpool_bwd_zero(g, dx + pl * hw);
        for (int64_t i = 0; i < g->p; i++)
            maxpool_bwd_task_row(g, x + pl * hw, dy + pl * pq, dx + pl * hw, i);
    });
    return NEAT_OK;
}
