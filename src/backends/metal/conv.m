/*
 * conv.m — y = act(conv2d(x, w) + b) and its gradients on MPSGraph's convolution ops.
 *
 * Layout: x [N,C,H,W] (NCHW), w [K,C/groups,kh,kw] (OIHW), b [K], y and dy [N,K,P,Q].
 * One MPSGraphConvolution2DOpDescriptor per geometry: strides, dilations, groups and the
 * explicit symmetric padding of neatml's descriptor (output size floor((H + 2p - d(k-1) - 1)
 * / s) + 1, the same rule as MPSGraph's explicit padding). Forward: convolution2D, + b
 * broadcast as [1,K,1,1], then the activation (graph.m), one graph that MPSGraph fuses.
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
                     dataLayout:MPSGraphTensorNamedDataLayoutNCHW
                  weightsLayout:MPSGraphTensorNamedDataLayoutOIHW];
}

static NSString *geom_key(const char *what, const nm_conv_geom *g) {
    return [NSString
        stringWithFormat:
            @"%s:%lld,%lld,%lld,%lld:%lld,%lld,%lld:%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld",
            what, (long long)g->n, (long long)g->c, (long long)g->h, (long long)g->w,
            (long long)g->k, (long long)g->p, (long long)g->q, (long long)g->kh, (long long)g->kw,
            (long long)g->sh, (long long)g->sw, (long long)g->ph, (long long)g->pw,
            (long long)g->dh, (long long)g->dw, (long long)g->groups];
}

/* z = conv(x, w) (+ b) */
static MPSGraphTensor *conv_z(MPSGraph *gr, const nm_conv_geom *g, MPSGraphTensor *x,
                              MPSGraphTensor *w, MPSGraphTensor *b) {
    MPSGraphConvolution2DOpDescriptor *d = conv_desc(g);
    if (!d) return nil;
    MPSGraphTensor *z = [gr convolution2DWithSourceTensor:x weightsTensor:w descriptor:d name:nil];
    if (b)
        z = [gr additionWithPrimaryTensor:z
                          secondaryTensor:[gr reshapeTensor:b
                                                  withShape:METAL_SHAPE(1, g->k, 1, 1)
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
      MPSShape *sx = METAL_SHAPE(g.n, g.c, g.h, g.w),
               *sw = METAL_SHAPE(g.k, g.c / g.groups, g.kh, g.kw), *sb = METAL_SHAPE(g.k),
               *sy = METAL_SHAPE(g.n, g.k, g.p, g.q);
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
    MPSShape *sx = METAL_SHAPE(g.n, g.c, g.h, g.w),
             *sw = METAL_SHAPE(g.k, g.c / g.groups, g.kh, g.kw), *sb = METAL_SHAPE(g.k);
    return metal_layer_backward(
        dev, cb, op, &l, geom_key("conv_bwd", &g), "the conv2d backward graph", sx, sw, sb,
        METAL_SHAPE(g.n, g.k, g.p, g.q),
        ^(MPSGraph *m, MPSGraphTensor *x, MPSGraphTensor *w, MPSGraphTensor *b) {
          return conv_z(m, &g, x, w, b);
        },
        ^MPSGraphTensor *(MPSGraph *m, int i, MPSGraphTensor *dz, MPSGraphTensor *x,
                          MPSGraphTensor *w) {
          MPSGraphConvolution2DOpDescriptor *d = conv_desc(&g);
          if (!d) return nil;
          if (i == 0)
              return [m convolution2DDataGradientWithIncomingGradientTensor:dz
                                                              weightsTensor:w
                                                                outputShape:sx
                                               forwardConvolutionDescriptor:d
                                                                       name:nil];
          if (i == 1)
              return [m convolution2DWeightsGradientWithIncomingGradientTensor:dz
                                                                  sourceTensor:x
                                                                   outputShape:sw
                                                  forwardConvolutionDescriptor:d
                                                                          name:nil];
          return [m reshapeTensor:[m reductionSumWithTensor:dz axes:@[ @0, @2, @3 ] name:nil]
                        withShape:sb
                             name:nil];
        });
}
