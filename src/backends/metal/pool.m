/*
 * pool.m — 2-D max pooling on NCHW, forward and backward, on MPSGraph.
 *
 * Layout: x [N,C,H,W] -> y [N,C,P,Q]; window (i, j) covers padded rows i*sh + r and columns
 * j*sw + s (0 <= r < kh, 0 <= s < kw) of x padded by ph, pw.
 *
 * neatml.h's rules, which Apple's pooling does not promise, are built in:
 *   - padding is -inf: x is padded with -inf by padTensor and pooled without padding (MPSGraph
 *     does not document the value of its own pooling padding);
 *   - a NaN in a window gives NaN: a second pooling of isNaN(x) selects NaN where it is set
 *     (MPSGraph's max is not documented to propagate NaN);
 *   - backward sends each dy to its window's first maximum, scanning the window row-major, a
 *     later element winning only when strictly greater or NaN (the CPU's rule, PyTorch's);
 *     maxPooling2DGradient does not say which of tied maxima gets the gradient, so the
 *     scan is written out: one strided slice of padded x per window position (r, s), a
 *     running best and its position, then for each (r, s) the dy of the windows it won,
 *     spread with zeros to stride spacing (concat with zeros, reshape), moved to offset
 *     (r, s) by padding and added up in a fixed order (deterministic), and the padding cut off.
 * Forward: padTensor + maxPooling2D (+ the NaN pooling). Backward: kh*kw slices, selects and
 * pads in one graph.
 */
#import "metal.h"

static MPSGraphPooling2DOpDescriptor *pool_desc(const nm_conv_geom *g) {
    return
        [MPSGraphPooling2DOpDescriptor descriptorWithKernelWidth:(NSUInteger)g->kw
                                                    kernelHeight:(NSUInteger)g->kh
                                                       strideInX:(NSUInteger)g->sw
                                                       strideInY:(NSUInteger)g->sh
                                                    paddingStyle:MPSGraphPaddingStyleExplicit
                                                      dataLayout:MPSGraphTensorNamedDataLayoutNCHW];
}

static MPSGraphTensor *pad_hw(MPSGraph *m, MPSGraphTensor *t, const nm_conv_geom *g, double value) {
    if (g->ph == 0 && g->pw == 0) return t;
    return [m padTensor:t
        withPaddingMode:MPSGraphPaddingModeConstant
            leftPadding:METAL_SHAPE(0, 0, g->ph, g->pw)
           rightPadding:METAL_SHAPE(0, 0, g->ph, g->pw)
          constantValue:value
                   name:nil];
}

static NSString *pool_key(const char *what, const nm_conv_geom *g) {
    return [NSString
        stringWithFormat:@"%s:%lld,%lld,%lld,%lld:%lld,%lld:%lld,%lld,%lld,%lld,%lld,%lld", what,
                         (long long)g->n, (long long)g->c, (long long)g->h, (long long)g->w,
                         (long long)g->p, (long long)g->q, (long long)g->kh, (long long)g->kw,
                         (long long)g->sh, (long long)g->sw, (long long)g->ph, (long long)g->pw];
}

neat_status metal_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_maxpool2d_args *a = &op->u.maxpool2d;
    nm_conv_geom g = a->g;
    if (g.n * g.c * g.p * g.q == 0) return NEAT_OK;
    NMGraph *gr = metal_cached(dev, op, pool_key("maxpool", &a->g), "the maxpool2d graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sx = METAL_SHAPE(g.n, g.c, g.h, g.w), *sy = METAL_SHAPE(g.n, g.c, g.p, g.q);
      MPSGraphPooling2DOpDescriptor *d = pool_desc(&g);
      if (!d) return nil;
      MPSGraphTensor *x = metal_input(m, sx);
      MPSGraphTensor *xp = pad_hw(m, x, &g, -INFINITY);
      MPSGraphTensor *y = [m maxPooling2DWithSourceTensor:xp descriptor:d name:nil];
      MPSGraphTensor *nan = [m castTensor:[m isNaNWithTensor:xp name:nil]
                                   toType:MPSDataTypeFloat32
                                     name:@"nan"];
      MPSGraphTensor *has_nan = [m greaterThanWithPrimaryTensor:[m maxPooling2DWithSourceTensor:nan
                                                                                     descriptor:d
                                                                                           name:nil]
                                                secondaryTensor:metal_const(m, 0.0)
                                                           name:nil];
      y = [m selectWithPredicateTensor:has_nan
                   truePredicateTensor:metal_const(m, NAN)
                  falsePredicateTensor:y
                                  name:nil];
      return metal_graph(m, @[ x ], @[ sx ], @[ y ], @[ sy ]);
    });
    if (!gr) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data}, *out[] = {a->y->data};
    return metal_run(dev, cb, op, gr, in, out);
}

/* t [NC,P,Q] spread to [NC,P*sh,Q*sw] with t at (i*sh, j*sw) and zeros elsewhere. */
static MPSGraphTensor *spread(MPSGraph *m, MPSGraphTensor *t, int64_t nc, const nm_conv_geom *g) {
    int64_t p = g->p, q = g->q, sh = g->sh, sw = g->sw;
    t = [m reshapeTensor:t withShape:METAL_SHAPE(nc, p, 1, q, 1) name:nil];
    if (sh > 1)
        t = [m concatTensors:@[
            t, [m constantWithScalar:0.0
                               shape:METAL_SHAPE(nc, p, sh - 1, q, 1)
                            dataType:MPSDataTypeFloat32]
        ]
                   dimension:2
                        name:nil];
    if (sw > 1)
        t = [m concatTensors:@[
            t, [m constantWithScalar:0.0
                               shape:METAL_SHAPE(nc, p, sh, q, sw - 1)
                            dataType:MPSDataTypeFloat32]
        ]
                   dimension:4
                        name:nil];
    return [m reshapeTensor:t withShape:METAL_SHAPE(nc, p * sh, q * sw) name:nil];
}

/* u [NC,P*sh,Q*sw] placed at offset (r, s) of the padded grid [NC,Hp,Wp]. */
static MPSGraphTensor *place(MPSGraph *m, MPSGraphTensor *u, int64_t nc, int64_t r, int64_t s,
                             int64_t hp, int64_t wp, const nm_conv_geom *g) {
    int64_t rows = g->p * g->sh, cols = g->q * g->sw;
    if (r + rows > hp || s + cols > wp) { /* the zeros after the last window may overhang */
        rows = r + rows > hp ? hp - r : rows;
        cols = s + cols > wp ? wp - s : cols;
        u = [m sliceTensor:u
                    starts:@[ @0, @0, @0 ]
                      ends:@[ @(nc), @(rows), @(cols) ]
                   strides:@[ @1, @1, @1 ]
                      name:nil];
    }
    return [m padTensor:u
        withPaddingMode:MPSGraphPaddingModeConstant
            leftPadding:METAL_SHAPE(0, r, s)
           rightPadding:METAL_SHAPE(0, hp - r - rows, wp - s - cols)
          constantValue:0.0
                   name:nil];
}

neat_status metal_maxpool2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_maxpool2d_backward_args *a = &op->u.maxpool2d_backward;
    nm_conv_geom g = a->g;
    int64_t nx = g.n * g.c * g.h * g.w;
    if (nx == 0) return NEAT_OK;
    if (g.p * g.q == 0) return metal_zero(dev, op, a->dx->data, (size_t)nx * sizeof(float));
    NMGraph *gr =
        metal_cached(dev, op, pool_key("maxpool_bwd", &a->g), "the maxpool2d backward graph", ^id {
          MPSGraph *m = [MPSGraph new];
          int64_t nc = g.n * g.c, hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
          MPSShape *sx = METAL_SHAPE(g.n, g.c, g.h, g.w), *sy = METAL_SHAPE(g.n, g.c, g.p, g.q);
          MPSGraphTensor *x = metal_input(m, sx), *dy = metal_input(m, sy);
          MPSGraphTensor *xp = pad_hw(m, x, &g, -INFINITY);
          MPSGraphTensor *real =
              pad_hw(m, [m constantWithScalar:1.0 shape:sx dataType:MPSDataTypeFloat32], &g, 0.0);
          MPSGraphTensor *best = nil, *best_real = nil, *arg = nil;
          for (int64_t r = 0; r < g.kh; r++)
              for (int64_t s = 0; s < g.kw; s++) {
                  NSArray *starts = @[ @0, @0, @(r), @(s) ];
                  NSArray *ends =
                      @[ @(g.n), @(g.c), @(r + (g.p - 1) * g.sh + 1), @(s + (g.q - 1) * g.sw + 1) ];
                  NSArray *strides = @[ @1, @1, @(g.sh), @(g.sw) ];
                  MPSGraphTensor *v = [m sliceTensor:xp
                                              starts:starts
                                                ends:ends
                                             strides:strides
                                                name:nil];
                  MPSGraphTensor *vr = [m greaterThanWithPrimaryTensor:[m sliceTensor:real
                                                                               starts:starts
                                                                                 ends:ends
                                                                              strides:strides
                                                                                 name:nil]
                                                       secondaryTensor:metal_const(m, 0.0)
                                                                  name:nil];
                  MPSGraphTensor *pos = metal_const(m, (double)(r * g.kw + s));
                  if (!best) {
                      best = v, best_real = vr;
                      arg = [m constantWithScalar:0.0 shape:sy dataType:MPSDataTypeFloat32];
                      continue;
                  }
                  /* take = real && (!best_real || v > best || isnan(v)) */
                  MPSGraphTensor *wins =
                      [m logicalORWithPrimaryTensor:[m greaterThanWithPrimaryTensor:v
                                                                    secondaryTensor:best
                                                                               name:nil]
                                    secondaryTensor:[m isNaNWithTensor:v name:nil]
                                               name:nil];
                  wins = [m logicalORWithPrimaryTensor:wins
                                       secondaryTensor:[m notWithTensor:best_real name:nil]
                                                  name:nil];
                  MPSGraphTensor *take = [m logicalANDWithPrimaryTensor:vr
                                                        secondaryTensor:wins
                                                                   name:nil];
                  best = [m selectWithPredicateTensor:take
                                  truePredicateTensor:v
                                 falsePredicateTensor:best
                                                 name:nil];
                  arg = [m selectWithPredicateTensor:take
                                 truePredicateTensor:pos
                                falsePredicateTensor:arg
                                                name:nil];
                  best_real = [m logicalORWithPrimaryTensor:best_real secondaryTensor:vr name:nil];
              }
          MPSGraphTensor *dy3 = [m reshapeTensor:dy withShape:METAL_SHAPE(nc, g.p, g.q) name:nil];
          MPSGraphTensor *arg3 = [m reshapeTensor:arg withShape:METAL_SHAPE(nc, g.p, g.q) name:nil];
          MPSGraphTensor *dxp = nil;
          for (int64_t r = 0; r < g.kh; r++)
              for (int64_t s = 0; s < g.kw; s++) {
                  MPSGraphTensor *won =
                      [m equalWithPrimaryTensor:arg3
                                secondaryTensor:metal_const(m, (double)(r * g.kw + s))
                                           name:nil];
                  MPSGraphTensor *t = [m selectWithPredicateTensor:won
                                               truePredicateTensor:dy3
                                              falsePredicateTensor:metal_const(m, 0.0)
                                                              name:nil];
                  t = place(m, spread(m, t, nc, &g), nc, r, s, hp, wp, &g);
                  dxp = dxp ? [m additionWithPrimaryTensor:dxp secondaryTensor:t name:nil] : t;
              }
          MPSGraphTensor *dx = [m sliceTensor:dxp
                                       starts:@[ @0, @(g.ph), @(g.pw) ]
                                         ends:@[ @(nc), @(g.ph + g.h), @(g.pw + g.w) ]
                                      strides:@[ @1, @1, @1 ]
                                         name:nil];
          dx = [m reshapeTensor:dx withShape:sx name:nil];
          return metal_graph(m, @[ x, dy ], @[ sx, sy ], @[ dx ], @[ sx ]);
        });
    if (!gr) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data, a->dy->data}, *out[] = {a->dx->data};
    return metal_run(dev, cb, op, gr, in, out);
}
