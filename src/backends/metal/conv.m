/*
 * conv.m — y = act(conv2d(x, w) + b) and its gradients on MPSGraph's convolution ops.
 *
 * Layouts: NCHW: x [N,C,H,W], w [K,C/groups,kh,kw] (OIHW), y and dy [N,K,P,Q]; NHWC (g.nhwc):
 * x [N,H,W,C], w [K,kh,kw,C/groups] (OHWI), y and dy [N,P,Q,K]; b [K] in both.
 * One MPSGraphConvolution2DOpDescriptor per geometry: strides, dilations, groups and the
 * explicit symmetric padding of neatml's descriptor (output size floor((H + 2p - d(k-1) - 1)
 * / s) + 1, the same rule as MPSGraph's explicit padding), dataLayout NCHW or NHWC. Weights
 * are always given to MPSGraph as OIHW (macOS 12 offers OIHW and HWIO, not OHWI; PyTorch's MPS
 * backend pairs NHWC data with OIHW weights too): an OHWI w is transposed in the graph, and dw,
 * computed OIHW, is transposed back. Forward: convolution2D, + b broadcast on the channel axis
 * ([1,K,1,1] or [1,1,1,K]), then the activation (graph.m), one graph that MPSGraph fuses.
 * Backward: dz = dy act'(.) (z recomputed by the forward convolution for gelu), then
 * dx = convolution2DDataGradient(dz, w), dw = convolution2DWeightsGradient(dz, x),
 * db = sum of dz over N, P, Q; accumulate adds the old gradient inside the graph.
 * C = 0 with a non-empty output (an empty convolution) is refused by op_check.
 */
#import "metal.h"

static MPSGraphConvolution2DOpDescriptor *conv_desc(const nm_conv_geom *g) {
    return [MPSGraphConvolution2DOpDescriptor
        descriptorWithStrideInX:(NSUInteger)g->sw
                      strideInY:(NSUInteger)g->sh
                dilationRateInX:(NSUInteger)g->dw
                dilationRateInY:(NSUInteger)g->dh
                         groups:(NSUInteger)g->groups
                    paddingLeft:(NSUInteger)g->pw
                   paddingRight:(NSUInteger)g->pw
                     paddingTop:(NSUInteger)g->ph
                  paddingBottom:(NSUInteger)g->ph
                   paddingStyle:MPSGraphPaddingStyleExplicit
                     dataLayout:g->nhwc ? MPSGraphTensorNamedDataLayoutNHWC
                                        : MPSGraphTensorNamedDataLayoutNCHW
                  weightsLayout:MPSGraphTensorNamedDataLayoutOIHW];
}

/* The weights as MPSGraph takes them (OIHW): w itself in NCHW; in NHWC w [K,kh,kw,Cg]
 * transposed (1 3) to [K,Cg,kw,kh], then (2 3) to [K,Cg,kh,kw]. */
static MPSGraphTensor *oihw(MPSGraph *m, const nm_conv_geom *g, MPSGraphTensor *w) {
    if (!g->nhwc) return w;
    w = [m transposeTensor:w dimension:1 withDimension:3 name:nil];
    return [m transposeTensor:w dimension:2 withDimension:3 name:nil];
}

/* An OIHW weight gradient in w's layout: in NHWC the inverse of oihw, (2 3) then (1 3). */
static MPSGraphTensor *from_oihw(MPSGraph *m, const nm_conv_geom *g, MPSGraphTensor *dw) {
    if (!g->nhwc) return dw;
    dw = [m transposeTensor:dw dimension:2 withDimension:3 name:nil];
    return [m transposeTensor:dw dimension:1 withDimension:3 name:nil];
}

/* The shapes of x, w and y in the op's layout. */
static MPSShape *shape_x(const nm_conv_geom *g) {
    return metal_layout_shape(g->nhwc, g->n, g->c, g->h, g->w);
}
static MPSShape *shape_w(const nm_conv_geom *g) {
    return g->nhwc ? METAL_SHAPE(g->k, g->kh, g->kw, g->c / g->groups)
                   : METAL_SHAPE(g->k, g->c / g->groups, g->kh, g->kw);
}
static MPSShape *shape_y(const nm_conv_geom *g) {
    return metal_layout_shape(g->nhwc, g->n, g->k, g->p, g->q);
}

static NSString *geom_key(const char *what, const nm_conv_geom *g) {
    return [NSString
        stringWithFormat:
            @"%s%s:%lld,%lld,%lld,%lld:%lld,%lld,%lld:%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld",
            what, g->nhwc ? "_nhwc" : "", (long long)g->n, (long long)g->c, (long long)g->h,
            (long long)g->w, (long long)g->k, (long long)g->p, (long long)g->q, (long long)g->kh,
            (long long)g->kw, (long long)g->sh, (long long)g->sw, (long long)g->ph,
            (long long)g->pw, (long long)g->dh, (long long)g->dw, (long long)g->groups];
}

/* z = conv(x, w) (+ b) */
static MPSGraphTensor *conv_z(MPSGraph *gr, const nm_conv_geom *g, MPSGraphTensor *x,
                              MPSGraphTensor *w, MPSGraphTensor *b) {
    MPSGraphConvolution2DOpDescriptor *d = conv_desc(g);
    if (!d) return nil;
    MPSGraphTensor *z = [gr convolution2DWithSourceTensor:x
                                            weightsTensor:oihw(gr, g, w)
                                               descriptor:d
                                                     name:nil];
    if (b)
        z = [gr
            additionWithPrimaryTensor:z
                      secondaryTensor:[gr reshapeTensor:b
                                              withShape:metal_layout_shape(g->nhwc, 1, g->k, 1, 1)
                                                   name:nil]
                                 name:nil];
    return z;
}

neat_status metal_conv2d_forward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv2d_forward_args *a = &op->u.conv2d_forward;
    const nm_conv_geom *gp = &a->g;
    nm_conv_geom g = *gp;
    if (g.n * g.k * g.p * g.q == 0) return NEAT_OK;
    int bias = a->b != NULL;
    neat_activation act = a->act;
    NSString *key =
        [NSString stringWithFormat:@"%@:%d:%s", geom_key("conv", gp), bias, metal_act_name(act)];
    NMGraph *gr = metal_cached(dev, op, key, "the conv2d forward graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *sx = shape_x(&g), *sw = shape_w(&g), *sb = METAL_SHAPE(g.k), *sy = shape_y(&g);
      MPSGraphTensor *x = metal_input(m, sx), *w = metal_input(m, sw),
                     *b = bias ? metal_input(m, sb) : nil;
      MPSGraphTensor *z = conv_z(m, &g, x, w, b);
      if (!z) return nil;
      return metal_graph(m, bias ? @[ x, w, b ] : @[ x, w ], bias ? @[ sx, sw, sb ] : @[ sx, sw ],
                         @[ metal_act(m, act, z) ], @[ sy ]);
    });
    if (!gr) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {a->x->data, a->w->data, bias ? a->b->data : NULL}, *out[] = {a->y->data};
    return metal_run(dev, cb, op, gr, in, out);
}

neat_status metal_conv2d_backward(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_conv2d_backward_args *a = &op->u.conv2d_backward;
    nm_conv_geom g = a->g;
    int acc = a->accumulate != 0;
    neat_activation act = a->act;
    int64_t nx = g.n * g.c * g.h * g.w, nw = g.k * (g.groups ? g.c / g.groups : 0) * g.kh * g.kw;
    if (g.n * g.k * g.p * g.q == 0) { /* dy is empty: every gradient is a sum over nothing */
        if (acc) return NEAT_OK;
        neat_status st = NEAT_OK;
        if (a->dx && nx) st = metal_zero(dev, op, a->dx->data, (size_t)nx * sizeof(float));
        if (!st && a->dw && nw) st = metal_zero(dev, op, a->dw->data, (size_t)nw * sizeof(float));
        if (!st && a->db && g.k) st = metal_zero(dev, op, a->db->data, (size_t)g.k * sizeof(float));
        return st;
    }
    metal_layer l = {.x = a->x,
                     .w = a->w,
                     .y = a->y,
                     .dy = a->dy,
                     .b = a->b,
                     .dx = nx > 0 ? a->dx : NULL,
                     .dw = nw > 0 ? a->dw : NULL,
                     .db = a->db,
                     .act = act,
                     .acc = acc};
    if (!l.dx && !l.dw && !l.db) return NEAT_OK;
    MPSShape *sx = shape_x(&g), *sw = shape_w(&g), *sb = METAL_SHAPE(g.k);
    MPSShape *sw_oihw = METAL_SHAPE(g.k, g.c / g.groups, g.kh, g.kw);
    NSArray *pq = g.nhwc ? @[ @0, @1, @2 ] : @[ @0, @2, @3 ]; /* db: all axes but K's */
    return metal_layer_backward(
        dev, cb, op, &l, geom_key("conv_bwd", &g), "the conv2d backward graph", sx, sw, sb,
        shape_y(&g),
        ^(MPSGraph *m, MPSGraphTensor *x, MPSGraphTensor *w, MPSGraphTensor *b) {
          return conv_z(m, &g, x, w, b);
        },
        ^MPSGraphTensor *(MPSGraph *m, int i, MPSGraphTensor *dz, MPSGraphTensor *x,
                          MPSGraphTensor *w) {
          MPSGraphConvolution2DOpDescriptor *d = conv_desc(&g);
          if (!d) return nil;
          if (i == 0)
              return [m convolution2DDataGradientWithIncomingGradientTensor:dz
                                                              weightsTensor:oihw(m, &g, w)
                                                                outputShape:sx
                                               forwardConvolutionDescriptor:d
                                                                       name:nil];
          if (i == 1)
              return from_oihw(m, &g,
                               [m convolution2DWeightsGradientWithIncomingGradientTensor:dz
                                                                            sourceTensor:x
                                                                             outputShape:sw_oihw
                                                            forwardConvolutionDescriptor:d
                                                                                    name:nil]);
          return [m reshapeTensor:[m reductionSumWithTensor:dz axes:pq name:nil]
                        withShape:sb
                             name:nil];
        });
}
