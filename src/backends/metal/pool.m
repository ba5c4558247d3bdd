/*
 * pool.m — 2-D max pooling, forward and backward, on MPSGraph.
 *
 * Layout: x [N,C,H,W] -> y [N,C,P,Q], or NHWC (g.nhwc) x [N,H,W,C] -> y [N,P,Q,C]; window
 * (i, j) covers padded rows i*sh + r and columns j*sw + s (0 <= r < kh, 0 <= s < kw) of x
 * padded by ph, pw. NHWC runs the same graphs with the pooling descriptor's dataLayout NHWC
 * and the slices and pads on axes 1 and 2; the backward's spreading works on [A,rows,cols*B]
 * views (NCHW: A = N*C, B = 1; NHWC: A = N, B = C, a column being C adjacent floats).
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
    return [MPSGraphPooling2DOpDescriptor
        descriptorWithKernelWidth:(NSUInteger)g->kw
                     kernelHeight:(NSUInteger)g->kh
                        strideInX:(NSUInteger)g->sw
                        strideInY:(NSUInteger)g->sh
                     paddingStyle:MPSGraphPaddingStyleExplicit
                       dataLayout:g->nhwc ? MPSGraphTensorNamedDataLayoutNHWC
                                          : MPSGraphTensorNamedDataLayoutNCHW];
}

static MPSGraphTensor *pad_hw(MPSGraph *m, MPSGraphTensor *t, const nm_conv_geom *g, double value) {
    if (g->ph == 0 && g->pw == 0) return t;
    MPSShape *pad = metal_layout_shape(g->nhwc, 0, 0, g->ph, g->pw);
    return [m padTensor:t
        withPaddingMode:MPSGraphPaddingModeConstant
            leftPadding:pad
           rightPadding:pad
          constantValue:value
                   name:nil];
}

static NSString *pool_key(const char *what, const nm_conv_geom *g) {
    return [NSString
        stringWithFormat:@"%s%s:%lld,%lld,%lld,%lld:%lld,%lld:%lld,%lld,%lld,%lld,%lld,%lld", what,
                         g->nhwc ? "_nhwc" : "", (long long)g->n, (long long)g->c, (long long)g->h,
                         (long long)g->w, (long long)g->p, (long long)g->q, (long long)g->kh,
                         (long long)g->kw, (long long)g->sh, (long long)g->sw, (long long)g->ph,
                         (long long)g->pw];
}

neat_status metal_maxpool2d(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_maxpool2d_args *a = &op->u.maxpool2d;
    nm_conv_geom g = a->g;
    if (g.n * g.c * g.p * g.q == 0) return NEAT_OK;
    NMGraph *gr = metal_cached(dev, op, pool_key("maxpool", &a->g), "the maxpool2d graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sx = metal_layout_shape(g.nhwc, g.n, g.c, g.h, g.w),
               *sy = metal_layout_shape(g.nhwc, g.n, g.c, g.p, g.q);
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

/* t [A,P,Q*B] spread to [A,P*sh,Q*sw*B] with t's column j at column j*sw, row i at row i*sh,
 * zeros elsewhere. */
static MPSGraphTensor *spread(MPSGraph *m, MPSGraphTensor *t, int64_t a, int64_t b,
                              const nm_conv_geom *g) {
    int64_t p = g->p, q = g->q, sh = g->sh, sw = g->sw;
    t = [m reshapeTensor:t withShape:METAL_SHAPE(a, p, 1, q, b) name:nil];
    if (sh > 1)
        t = [m concatTensors:@[
            t, [m constantWithScalar:0.0
                               shape:METAL_SHAPE(a, p, sh - 1, q, b)
                            dataType:MPSDataTypeFloat32]
        ]
                   dimension:2
                        name:nil];
    if (sw > 1)
        t = [m concatTensors:@[
            t, [m constantWithScalar:0.0
                               shape:METAL_SHAPE(a, p, sh, q, (sw - 1) * b)
                            dataType:MPSDataTypeFloat32]
        ]
                   dimension:4
                        name:nil];
    return [m reshapeTensor:t withShape:METAL_SHAPE(a, p * sh, q * sw * b) name:nil];
}

/* u [A,P*sh,Q*sw*B] placed at offset (r, s) of the padded grid [A,Hp,Wp*B]. */
static MPSGraphTensor *place(MPSGraph *m, MPSGraphTensor *u, int64_t a, int64_t b, int64_t r,
                             int64_t s, int64_t hp, int64_t wp, const nm_conv_geom *g) {
    int64_t rows = g->p * g->sh, cols = g->q * g->sw;
    if (r + rows > hp || s + cols > wp) { /* the zeros after the last window may overhang */
        rows = r + rows > hp ? hp - r : rows;
        cols = s + cols > wp ? wp - s : cols;
        u = [m sliceTensor:u
                    starts:@[ @0, @0, @0 ]
                      ends:@[ @(a), @(rows), @(cols * b) ]
                   strides:@[ @1, @1, @1 ]
                      name:nil];
    }
    return [m padTensor:u
        withPaddingMode:MPSGraphPaddingModeConstant
            leftPadding:METAL_SHAPE(0, r, s * b)
           rightPadding:METAL_SHAPE(0, hp - r - rows, (wp - s - cols) * b)
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
          int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
          /* the [A,rows,cols*B] views of the header */
          int64_t a = g.nhwc ? g.n : g.n * g.c, b = g.nhwc ? g.c : 1;
          MPSShape *sx = metal_layout_shape(g.nhwc, g.n, g.c, g.h, g.w),
                   *sy = metal_layout_shape(g.nhwc, g.n, g.c, g.p, g.q);
          MPSGraphTensor *x = metal_input(m, sx), *dy = metal_input(m, sy);
          MPSGraphTensor *xp = pad_hw(m, x, &g, -INFINITY);
          MPSGraphTensor *real =
              pad_hw(m, [m constantWithScalar:1.0 shape:sx dataType:MPSDataTypeFloat32], &g, 0.0);
          MPSGraphTensor *best = nil, *best_real = nil, *arg = nil;
          for (int64_t r = 0; r < g.kh; r++)
              for (int64_t s = 0; s < g.kw; s++) {
                  NSNumber *er = @(r + (g.p - 1) * g.sh + 1), *es = @(s + (g.q - 1) * g.sw + 1);
                  NSArray *starts = g.nhwc ? @[ @0, @(r), @(s), @0 ] : @[ @0, @0, @(r), @(s) ];
                  NSArray *ends =
                      g.nhwc ? @[ @(g.n), er, es, @(g.c) ] : @[ @(g.n), @(g.c), er, es ];
                  NSArray *strides =
                      g.nhwc ? @[ @1, @(g.sh), @(g.sw), @1 ] : @[ @1, @1, @(g.sh), @(g.sw) ];
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
          MPSShape *s3 = METAL_SHAPE(a, g.p, g.q * b);
          MPSGraphTensor *dy3 = [m reshapeTensor:dy withShape:s3 name:nil];
          MPSGraphTensor *arg3 = [m reshapeTensor:arg withShape:s3 name:nil];
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
                  t = place(m, spread(m, t, a, b, &g), a, b, r, s, hp, wp, &g);
                  dxp = dxp ? [m additionWithPrimaryTensor:dxp secondaryTensor:t name:nil] : t;
              }
          MPSGraphTensor *dx = [m sliceTensor:dxp
                                       starts:@[ @0, @(g.ph), @(g.pw * b) ]
                                         ends:@[ @(a), @(g.ph + g.h), @((g.pw + g.w) * b) ]
                                      strides:@[ @1, @1, @1 ]
                                         name:nil];
          dx = [m reshapeTensor:dx withShape:sx name:nil];
          return metal_graph(m, @[ x, dy ], @[ sx, sy ], @[ dx ], @[ sx ]);
        });
    if (!gr) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data, a->dy->data}, *out[] = {a->dx->data};
    return metal_run(dev, cb, op, gr, in, out);
}
