/*
 * pool.c — 2-D max pooling on NCHW and NHWC, forward and backward, as OpenMP loops.
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
 *
 * bf16/f16 tensors: the 2x2 case runs here (pool2_half_rows), the others on float32 copies.
 *
 * NHWC (g->nhwc): the forward per output position over its C channels (contiguous), the
 * backward per (image, block of channels), positions in order; half tensors on float32
 * copies. */
#include "cpu.h"
#include "loops.h"

#include <math.h>
#include <string.h>

/* Output columns handled per pass of the backward (argmax state on the stack). */
#define POOL_CHUNK 256

/* First valid output column for window column s, and one past the last:
 * 0 <= j*sw + s - pw < w. */
static inline void pool_cols(const nm_conv_geom *g, int64_t s, int64_t *lo, int64_t *hi) {
    int64_t off = g->pw - s;                         /* j*sw >= off */
    int64_t l = off > 0 ? (off - 1) / g->sw + 1 : 0; /* a ceiling that cannot overflow */
    int64_t last = g->w - 1 + off;                   /* j*sw <= last */
    int64_t h = last < 0 ? 0 : last / g->sw + 1;
    *lo = l;
    *hi = h < g->q ? h : g->q;
}

/* Window columns that hold an input column for some output column: s in [*slo, *shi). The
 * others see only padding: a kernel (and its padding) may be far wider than the input, and
 * the loops over s must not walk it. */
static inline void pool_scols(const nm_conv_geom *g, int64_t *slo, int64_t *shi) {
    int64_t reach = g->q > 1 ? (g->q - 1) * g->sw : 0; /* <= the padded width */
    *slo = g->pw > reach ? g->pw - reach : 0;
    *shi = g->pw + g->w < g->kw ? g->pw + g->w : g->kw;
}

/* Window rows valid for output row i: r in [*rlo, *rhi). */
static inline void pool_rows(const nm_conv_geom *g, int64_t i, int64_t *rlo, int64_t *rhi) {
    int64_t hs = i * g->sh - g->ph;
    *rlo = hs < 0 ? -hs : 0;
    *rhi = g->h - hs < g->kh ? g->h - hs : g->kh;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* One output row of the general case. xp: the input plane, yrow: q outputs. */
CPU_CLONES static void maxpool_row(const nm_conv_geom *g, const float *xp, float *yrow, int64_t i) {
    int64_t q = g->q, sw = g->sw;
    for (int64_t j = 0; j < q; j++) yrow[j] = -INFINITY;
    int64_t rlo, rhi, slo, shi;
    pool_rows(g, i, &rlo, &rhi);
    pool_scols(g, &slo, &shi);
    for (int64_t r = rlo; r < rhi; r++) {
        const float *xrow = xp + (i * g->sh - g->ph + r) * g->w;
        for (int64_t s = slo; s < shi; s++) {
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
CPU_CLONES static void maxpool_row_2x2(const float *x0, const float *x1, float *yrow, int64_t q) {
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

static inline int pool_is_2x2(const nm_conv_geom *g) {
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

/* Output row `task` of all planes * P rows (general case). */
static void maxpool_task(const nm_conv_geom *g, const float *x, float *y, int64_t task) {
    int64_t plane = task / g->p, i = task % g->p;
    maxpool_row(g, x + plane * g->h * g->w, y + task * g->q, i);
}

/*
 * 2x2 over row pairs [t0, t1) of the whole tensor: row pair t is plane t / P, output row
 * t % P, and its output row y + t*Q, so the outputs of consecutive row pairs are contiguous.
 * Output rows are short in a LeNet (Q = 14, 7): a 16-lane loop over one of them would never
 * leave its scalar remainder. So the first 2Q columns of the top and bottom rows of up to
 * POOL2_CHUNK outputs are copied into two contiguous buffers, and the 2x2 loop runs once over
 * the whole chunk. Wide rows need no copy.
 */
#define POOL2_CHUNK 512

/* Offset of the top input row of row pair t (in x, and in dx of the backward). */
static inline int64_t pool2_row(const nm_conv_geom *g, int64_t t) {
    return (t / g->p) * g->h * g->w + 2 * (t % g->p) * g->w;
}

/* Rows this wide run in place; shorter ones go through the chunk buffers. */
#define POOL2_WIDE 64

/* The first 2Q columns of the top and bottom rows of row pairs [c0, c1), one after the
 * other, into top and bot. */
static void pool2_gather(const nm_conv_geom *g, const float *x, int64_t c0, int64_t c1, float *top,
                         float *bot) {
    size_t bytes = (size_t)(2 * g->q) * sizeof(float);
    for (int64_t t = c0; t < c1; t++) {
        const float *r = x + pool2_row(g, t);
        /* the row pair 8 KiB ahead, a line at a time: 10% faster on the development VM
         * (maxpool2x2_32x256x56), whose hardware prefetch alone left it at ~81% of copy */
        for (int k = 0; k < 2 * g->w; k += 16) __builtin_prefetch(r + 2048 + k);
        memcpy(top + (t - c0) * 2 * g->q, r, bytes);
        memcpy(bot + (t - c0) * 2 * g->q, r + g->w, bytes);
    }
}

/* The inverse for dx: top and bot back into the rows of row pairs [c0, c1). */
static void pool2_scatter(const nm_conv_geom *g, float *dx, int64_t c0, int64_t c1,
                          const float *top, const float *bot) {
    size_t bytes = (size_t)(2 * g->q) * sizeof(float);
    for (int64_t t = c0; t < c1; t++) {
        float *r = dx + pool2_row(g, t);
        memcpy(r, top + (t - c0) * 2 * g->q, bytes);
        memcpy(r + g->w, bot + (t - c0) * 2 * g->q, bytes);
    }
}

static void maxpool2_rows(const nm_conv_geom *g, const float *x, float *y, int64_t t0, int64_t t1) {
    int64_t q = g->q, w = g->w;
    if (q >= POOL2_WIDE) {
        for (int64_t t = t0; t < t1; t++) {
            const float *x0 = x + pool2_row(g, t);
            maxpool_row_2x2(x0, x0 + w, y + t * q, q);
        }
        return;
    }
    float top[2 * POOL2_CHUNK], bot[2 * POOL2_CHUNK];
    int64_t rows = POOL2_CHUNK / q;
    for (int64_t c0 = t0; c0 < t1; c0 += rows) {
        int64_t c1 = c0 + rows < t1 ? c0 + rows : t1;
        pool2_gather(g, x, c0, c1, top, bot);
        maxpool_row_2x2(top, bot, y + c0 * q, (c1 - c0) * q);
    }
}

/* NHWC: output position t of N*P*Q, its C channels at once. Each window element (scan
 * order) is a contiguous row of C values: y[c] = pick(y[c], x[c]), vectorized over c. */
CPU_CLONES static void maxpool_nhwc_pos(const nm_conv_geom *g, const float *x, float *y,
                                        int64_t t) {
    int64_t n = t / (g->p * g->q), i = t / g->q % g->p, j = t % g->q, c = g->c;
    float *restrict yc = y + t * c;
    for (int64_t k = 0; k < c; k++) yc[k] = -INFINITY;
    int64_t rlo, rhi, col0 = j * g->sw - g->pw;
    int64_t slo = col0 < 0 ? -col0 : 0, shi = g->w - col0 < g->kw ? g->w - col0 : g->kw;
    pool_rows(g, i, &rlo, &rhi);
    for (int64_t r = rlo; r < rhi; r++) {
        const float *xrow = x + (n * g->h + i * g->sh - g->ph + r) * g->w * c;
        for (int64_t s = slo; s < shi; s++) {
            const float *restrict xc = xrow + (col0 + s) * c;
            for (int64_t k = 0; k < c; k++) {
                float v = xc[k], m = yc[k];
                yc[k] = (v > m || v != v) ? v : m;
            }
        }
    }
}

/* 2x2 on half tensors, below the backward's 2x2 loop it calls. */
static void pool2_half_rows(const nm_conv_geom *g, neat_dtype dt, const uint16_t *x, uint16_t *y,
                            const uint16_t *dy, uint16_t *dx, int64_t t0, int64_t t1);

neat_status cpu_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv_geom *g = &op->u.maxpool2d.g;
    const float *x = op->u.maxpool2d.x->data;
    float *y = op->u.maxpool2d.y->data;
    int64_t tasks = g->n * g->c * g->p;
    if (tasks == 0 || g->q == 0) return NEAT_OK;
    int par = cpu_par(cpu_dev(dev)->nthreads, op->u.maxpool2d.x->numel);
    if (g->nhwc) { /* float32 (half.c takes half NHWC tensors through float32 copies) */
        CPU_FOR(par, t, g->n * g->p * g->q, maxpool_nhwc_pos(g, x, y, t));
        return NEAT_OK;
    }
    if (op->u.maxpool2d.y->dtype != NEAT_F32) {
        neat_dtype dt = op->u.maxpool2d.y->dtype;
        CPU_SPLIT(par, tasks, lo, hi,
                  pool2_half_rows(g, dt, cpu_half_data(op->u.maxpool2d.x),
                                  cpu_half_data(op->u.maxpool2d.y), NULL, NULL, lo, hi));
        return NEAT_OK;
    }
    if (pool_is_2x2(g))
        CPU_SPLIT(par, tasks, lo, hi, maxpool2_rows(g, x, y, lo, hi));
    else
        CPU_FOR(par, t, tasks, maxpool_task(g, x, y, t));
    return NEAT_OK;
}

/* ---- backward ------------------------------------------------------------------------------- */

/* dx plane += scatter of dy row i to the first maxima of its windows (general case).
 * Columns are done POOL_CHUNK at a time: the running max per output column and where in
 * the window it was found (row r, column s: int32 like the float beside them, so that GCC
 * vectorizes the scan), in the forward's scan order. */
CPU_CLONES static void maxpool_bwd_row(const nm_conv_geom *g, const float *xp, const float *dyrow,
                                       float *dxp, int64_t i) {
    float best[POOL_CHUNK];
    int32_t where_r[POOL_CHUNK], where_s[POOL_CHUNK];
    int64_t rlo, rhi, slo, shi, sw = g->sw, row0 = i * g->sh - g->ph;
    pool_rows(g, i, &rlo, &rhi);
    pool_scols(g, &slo, &shi);
    for (int64_t j0 = 0; j0 < g->q; j0 += POOL_CHUNK) {
        int64_t j1 = j0 + POOL_CHUNK < g->q ? j0 + POOL_CHUNK : g->q;
        for (int64_t j = 0; j < j1 - j0; j++) {
            best[j] = -INFINITY;
            where_r[j] = -1;
            where_s[j] = 0;
        }
        for (int64_t r = rlo; r < rhi; r++) {
            const float *xrow = xp + (row0 + r) * g->w;
            for (int64_t s = slo; s < shi; s++) {
                int64_t lo, hi;
                pool_cols(g, s, &lo, &hi);
                lo = lo > j0 ? lo : j0;
                hi = hi < j1 ? hi : j1;
                const float *xs = xrow + s - g->pw;
                /* from rlo and slo: r and s themselves may pass 2^31 (a huge padding) */
                int32_t r32 = (int32_t)(r - rlo), s32 = (int32_t)(s - slo);
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
            dxp[(row0 + rlo + where_r[j - j0]) * g->w + j * sw - g->pw + slo + where_s[j - j0]] +=
                dyrow[j];
    }
}

/* 2x2 stride 2, no padding: every input element of rows 2i, 2i+1 (up to column 2Q) belongs
 * to exactly one window, so the block is written whole (dy at the argmax, 0 elsewhere).
 * The winner is picked with bit masks on dy rather than selects: selects of stores get
 * turned into branches by GCC, which then does not vectorize the loop. */
static inline float pool_keep(float g, uint32_t keep) {
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= 0u - keep; /* keep is 0 or 1 */
    memcpy(&g, &bits, sizeof g);
    return g;
}

CPU_CLONES static void maxpool_bwd_row_2x2(const float *x0, const float *x1, const float *dyrow,
                                           float *dx0, float *dx1, int64_t q) {
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

/* 2x2 backward over row pairs [t0, t1), in chunks like maxpool2_rows: the gradient of a chunk
 * is made in two contiguous buffers, then copied to its rows of dx (which it covers whole
 * up to column 2Q; an odd width's last column is in no window and gets 0). */
static void maxpool2_bwd_rows(const nm_conv_geom *g, const float *x, const float *dy, float *dx,
                              int64_t t0, int64_t t1) {
    int64_t q = g->q, w = g->w;
    if (q >= POOL2_WIDE) {
        for (int64_t t = t0; t < t1; t++) {
            int64_t r = pool2_row(g, t);
            maxpool_bwd_row_2x2(x + r, x + r + w, dy + t * q, dx + r, dx + r + w, q);
        }
    } else {
        float top[2 * POOL2_CHUNK], bot[2 * POOL2_CHUNK];
        float dtop[2 * POOL2_CHUNK], dbot[2 * POOL2_CHUNK];
        int64_t rows = POOL2_CHUNK / q;
        for (int64_t c0 = t0; c0 < t1; c0 += rows) {
            int64_t c1 = c0 + rows < t1 ? c0 + rows : t1;
            pool2_gather(g, x, c0, c1, top, bot);
            maxpool_bwd_row_2x2(top, bot, dy + c0 * q, dtop, dbot, (c1 - c0) * q);
            pool2_scatter(g, dx, c0, c1, dtop, dbot);
        }
    }
    if (w > 2 * q)
        for (int64_t t = t0; t < t1; t++) {
            float *r = dx + pool2_row(g, t);
            r[2 * q] = r[w + 2 * q] = 0.0f;
        }
}

/* ---- 2x2 on half tensors (bf16, f16; half.c sends only the 2x2 case, one type) -------------
 * The first 2Q columns of each row pair are widened (exact) into the chunk buffers, as
 * pool2_gather copies them (a long row in pieces of POOL2_CHUNK outputs), the float32 2x2
 * loops run on them, and their results are rounded into y or dx: the maximum is one of the
 * inputs and the gradient dy or +0, so rounding them gives the copies path's bits (NaN
 * inputs included: both paths widen and round them the same way). */

/* Row pairs [t0, t1): forward (dy, dx NULL) or backward (y NULL). Each piece is row pairs
 * [c0, c1) from output column j0, m outputs each (m == q when whole rows fit a chunk). */
static void pool2_half_rows(const nm_conv_geom *g, neat_dtype dt, const uint16_t *x, uint16_t *y,
                            const uint16_t *dy, uint16_t *dx, int64_t t0, int64_t t1) {
    _Alignas(64) float top[2 * POOL2_CHUNK], bot[2 * POOL2_CHUNK], out[POOL2_CHUNK];
    _Alignas(64) float dtop[2 * POOL2_CHUNK], dbot[2 * POOL2_CHUNK];
    int64_t q = g->q, w = g->w;
    int64_t m = q < POOL2_CHUNK ? q : POOL2_CHUNK, rows = q < POOL2_CHUNK ? POOL2_CHUNK / q : 1;
    for (int64_t c0 = t0; c0 < t1; c0 += rows) {
        int64_t c1 = c0 + rows < t1 ? c0 + rows : t1;
        for (int64_t j0 = 0; j0 < q; j0 += m) {
            int64_t mj = q - j0 < m ? q - j0 : m, k = 0;
            for (int64_t t = c0; t < c1; t++, k++) {
                const uint16_t *r = x + pool2_row(g, t) + 2 * j0;
                cpu_half_widen(dt, r, top + k * 2 * mj, 2 * mj);
                cpu_half_widen(dt, r + w, bot + k * 2 * mj, 2 * mj);
                if (dy) cpu_half_widen(dt, dy + t * q + j0, out + k * mj, mj);
            }
            if (!dy) {
                maxpool_row_2x2(top, bot, out, k * mj);
                for (int64_t t = c0; t < c1; t++)
                    cpu_half_narrow(dt, out + (t - c0) * mj, y + t * q + j0, mj);
                continue;
            }
            maxpool_bwd_row_2x2(top, bot, out, dtop, dbot, k * mj);
            for (int64_t t = c0; t < c1; t++) {
                uint16_t *r = dx + pool2_row(g, t) + 2 * j0;
                cpu_half_narrow(dt, dtop + (t - c0) * 2 * mj, r, 2 * mj);
                cpu_half_narrow(dt, dbot + (t - c0) * 2 * mj, r + w, 2 * mj);
            }
        }
    }
    if (dx && w > 2 * q)
        for (int64_t t = t0; t < t1; t++) {
            uint16_t *r = dx + pool2_row(g, t);
            r[2 * q] = r[w + 2 * q] = 0; /* +0 in both half types */
        }
}

/* NHWC: dx of image n, channels [c0, c1), from its dy: zeroed, then each output position in
 * order adds dy to the first maximum of its window (the forward's rule), per channel. The
 * channels of one image are independent, so a task owns (image, block of channels) and the
 * order of its additions is fixed. */
CPU_CLONES static void maxpool_bwd_nhwc(const nm_conv_geom *g, const float *x, const float *dy,
                                        float *dx, int64_t n, int64_t c0, int64_t c1) {
    int64_t c = g->c, hw = g->h * g->w;
    float best[POOL_CHUNK];
    int64_t where[POOL_CHUNK]; /* h * W + w: a plane may pass 2^31 elements */
    for (int64_t e = 0; e < hw; e++)
        memset(dx + (n * hw + e) * c + c0, 0, (size_t)(c1 - c0) * sizeof(float));
    for (int64_t i = 0; i < g->p; i++)
        for (int64_t j = 0; j < g->q; j++) {
            int64_t rlo, rhi, col0 = j * g->sw - g->pw, row0 = i * g->sh - g->ph;
            int64_t slo = col0 < 0 ? -col0 : 0, shi = g->w - col0 < g->kw ? g->w - col0 : g->kw;
            pool_rows(g, i, &rlo, &rhi);
            for (int64_t k = 0; k < c1 - c0; k++) best[k] = -INFINITY, where[k] = -1;
            for (int64_t r = rlo; r < rhi; r++)
                for (int64_t s = slo; s < shi; s++) {
                    int64_t e = (row0 + r) * g->w + col0 + s;
                    const float *xc = x + (n * hw + e) * c + c0;
                    for (int64_t k = 0; k < c1 - c0; k++) {
                        float v = xc[k], m = best[k];
                        int take = (v > m) | (v != v) | (where[k] < 0);
                        best[k] = take ? v : m;
                        where[k] = take ? e : where[k];
                    }
                }
            const float *dyc = dy + ((n * g->p + i) * g->q + j) * c + c0;
            for (int64_t k = 0; k < c1 - c0; k++) dx[(n * hw + where[k]) * c + c0 + k] += dyc[k];
        }
}

/* dx rows of plane that no output row writes whole: all rows in the general case, the
 * trailing row of an odd height in the 2x2 case. */
static void maxpool_bwd_zero(const nm_conv_geom *g, float *dxp) {
    if (pool_is_2x2(g))
        memset(dxp + 2 * g->p * g->w, 0, (size_t)((g->h - 2 * g->p) * g->w) * sizeof(float));
    else
        memset(dxp, 0, (size_t)(g->h * g->w) * sizeof(float));
}

neat_status cpu_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv_geom *g = &op->u.maxpool2d_backward.g;
    const float *x = op->u.maxpool2d_backward.x->data, *dy = op->u.maxpool2d_backward.dy->data;
    float *dx = op->u.maxpool2d_backward.dx->data;
    int64_t planes = g->n * g->c, hw = g->h * g->w, pq = g->p * g->q;
    if (planes == 0 || hw == 0) return NEAT_OK;
    int par = cpu_par(cpu_dev(dev)->nthreads, op->u.maxpool2d_backward.x->numel);

    if (g->nhwc) { /* float32 (half.c: half NHWC tensors through float32 copies) */
        int64_t blocks = (g->c + POOL_CHUNK - 1) / POOL_CHUNK;
        CPU_FOR(par, t, g->n * blocks, {
            int64_t c0 = t % blocks * POOL_CHUNK;
            maxpool_bwd_nhwc(g, x, dy, dx, t / blocks, c0,
                             c0 + POOL_CHUNK < g->c ? c0 + POOL_CHUNK : g->c);
        });
        return NEAT_OK;
    }
    if (op->u.maxpool2d_backward.dx->dtype != NEAT_F32) {
        const nm_maxpool2d_backward_args *a = &op->u.maxpool2d_backward;
        neat_dtype dt = a->dx->dtype;
        CPU_SPLIT(par, planes * g->p, lo, hi,
                  pool2_half_rows(g, dt, cpu_half_data(a->x), NULL, cpu_half_data(a->dy),
                                  cpu_half_data(a->dx), lo, hi));
        if (g->h > 2 * g->p) /* an odd height's last row: +0 */
            CPU_FOR(par, pl, planes,
                    memset(cpu_half_data(a->dx) + pl * hw + 2 * g->p * g->w, 0,
                           (size_t)((g->h - 2 * g->p) * g->w) * sizeof(uint16_t)));
        return NEAT_OK;
    }
    if (pool_is_2x2(g)) {
        /* windows are disjoint: row pairs in any order, then an odd height's last rows */
        CPU_SPLIT(par, planes * g->p, lo, hi, maxpool2_bwd_rows(g, x, dy, dx, lo, hi));
        if (g->h > 2 * g->p) CPU_FOR(par, pl, planes, maxpool_bwd_zero(g, dx + pl * hw));
        return NEAT_OK;
    }
    if (par > 1 && planes < 2 * par && g->kh <= g->sh) {
        /* few large planes, rows of windows disjoint: split over (plane, output row) */
#pragma omp parallel num_threads(par)
        {
#pragma omp for schedule(static)
            for (int64_t pl = 0; pl < planes; pl++) maxpool_bwd_zero(g, dx + pl * hw);
#pragma omp for schedule(static)
            for (int64_t t = 0; t < planes * g->p; t++) {
                int64_t pl = t / g->p;
                maxpool_bwd_row(g, x + pl * hw, dy + pl * pq + (t % g->p) * g->q, dx + pl * hw,
                                t % g->p);
            }
        }
        return NEAT_OK;
    }
    CPU_FOR(par, pl, planes, {
        maxpool_bwd_zero(g, dx + pl * hw);
        for (int64_t i = 0; i < g->p; i++)
            maxpool_bwd_row(g, x + pl * hw, dy + pl * pq + i * g->q, dx + pl * hw, i);
    });
    return NEAT_OK;
}
