/*
 * half.m — f16 tensors on the Metal backend: which ops run on them (metal_half_check),
 * neat_cast, and how an op runs on half tensors (metal_run_op).
 *
 * f16 is storage, through MPSGraph's MPSDataTypeFloat16: the math is float32. An op that
 * takes f16 tensors runs its float32 function on float32 copies, as the CPU does
 * (cpu/half.c): a cached cast graph (a Float16 placeholder, castTensor to Float32) widens
 * each f16 input into a float32 scratch slot (exact), the float32 op runs unchanged (the
 * same cached graph or MPS kernel as on float32 tensors, so no Apple kernel ever
 * accumulates in half: MPSMatrixMultiplication on Float16 matrices is not documented to
 * sum in float32), and a second cast graph (castTensor Float32 -> Float16: to nearest,
 * ties to even) rounds each output once into its f16 tensor. Outputs the op reads first
 * (matmul with beta != 0, an accumulating backward) are widened too. The copies live in
 * slots METAL_SLOT_HALF + i (i = the tensor's slot in the op): the same memory at every
 * replay. Cost: two extra passes and a float32 copy of each half tensor; graphs with
 * Float16 placeholders and the casts inside (one pass) are the next step.
 *
 * neat_cast, the mixed optimizers and the loss-scale ops take f16 tensors natively: their
 * graphs have Float16 placeholders or results and cast inside (optim.m, loss_scale.m).
 *
 * bf16 is refused (UNSUPPORTED when recorded): the macOS 12 SDK this backend is built
 * against has no bfloat16 MPSDataType (MPSCoreTypes.h lists Float16 and Float32 only), so
 * neither a cast graph nor an MPS kernel can read it. The losses are refused in f16 as on
 * every backend (labels are class indices, exact in f16 only up to 2048).
 */
#import "metal.h"
#include "../../core/dtype.h"
#include "../half_ops.h"

#include <string.h>

static MPSDataType mps_type(neat_dtype dt) {
    return dt == NEAT_F16 ? MPSDataTypeFloat16 : MPSDataTypeFloat32;
}

/* The first half tensor of op (its slots, then its list), only a bf16 one when bf16 != 0;
 * NULL when none. */
static const nm_tensor *first_half(const nm_op *op, int bf16) {
    int n, nl;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    nm_tensor *const *list = nm_op_list(op, &nl);
    for (int i = 0; i < n + nl; i++) {
        const nm_tensor *t = i < n ? ts[i] : list[i - n];
        if (t && t->dtype != NEAT_F32 && (!bf16 || t->dtype == NEAT_BF16)) return t;
    }
    return NULL;
}

neat_status metal_half_check(const nm_op *op) {
    const nm_tensor *h = first_half(op, 0);
    if (!h) return NEAT_OK;
    if (first_half(op, 1)) /* anywhere in the op: cast f16 -> bf16, a list [f16, bf16] */
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: the metal backend does not run this op on bf16 tensors (the macOS 12 "
                        "SDK's MPS has no bfloat16 data type; f16 and f32 run)",
                        op->fn);
    if (!nm_half_native(op->kind) && !nm_half_via_f32(op->kind))
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: the metal backend does not run this op on %s tensors (float32 "
                        "only; neat_cast converts)",
                        op->fn, neat_dtype_name(h->dtype));
    return NEAT_OK;
}

/* dst = src converted from st to dt, n elements, on the current command buffer. */
static neat_status convert(nm_device *dev, nm_cmdbuf *cb, const nm_op *op, neat_dtype st,
                           const void *src, neat_dtype dt, void *dst, int64_t n) {
    if (n == 0) return NEAT_OK;
    if (st == dt) return metal_copy(dev, op, dst, src, (size_t)n * neat_dtype_size(st));
    NSString *key = [NSString stringWithFormat:@"cast:%lld:%d:%d", (long long)n, (int)st, (int)dt];
    NMGraph *g = metal_cached(dev, op, key, "the cast graph", ^id {
      MPSGraph *m = [MPSGraph new];
      MPSShape *s = METAL_SHAPE(n);
      MPSGraphTensor *x = [m placeholderWithShape:s dataType:mps_type(st) name:nil];
      MPSGraphTensor *y = [m castTensor:x toType:mps_type(dt) name:@"cast"];
      return metal_graph(m, @[ x ], @[ s ], @[ y ], @[ s ]);
    });
    if (!g) return NEAT_ERR_BACKEND_ERROR;
    void *in[] = {(void *)src}, *out[] = {dst};
    return metal_run(dev, cb, op, g, in, out);
}

neat_status metal_cast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_cast_args *a = &op->u.cast;
    return convert(dev, cb, op, a->x->dtype, a->x->data, a->y->dtype, a->y->data, a->x->numel);
}

neat_status metal_run_op(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    nm_op_fn run = dev->be->op[op->kind];
    /* the native ops convert themselves; a fill with +0 is a blit of zero bytes in any type */
    if (nm_half_native(op->kind) || !first_half(op, 0) ||
        (op->kind == NM_OP_FILL && nm_is_zero_bits(op->u.fill.value)))
        return run(dev, cb, op);
    nm_op f32 = *op;
    nm_tensor shadow[NM_OP_MAX_TENSORS];
    int n;
    nm_tensor **ts = (nm_tensor **)nm_op_tensors(&f32, &n);
    int last = n - 1, reads;
    while (last >= 0 && !ts[last]) last--;
    int out = nm_half_first_output(op, last, &reads);
    for (int i = 0; i < n; i++) {
        nm_tensor *t = ts[i];
        if (!t || t->dtype == NEAT_F32) continue;
        nm_half_shadow(&shadow[i], t);
        if (t->numel > 0) {
            void *p;
            neat_status st =
                metal_slot(dev, cb, op, METAL_SLOT_HALF + i, (size_t)t->numel * sizeof(float), &p);
            if (!st && (i < out || reads))
                st = convert(dev, cb, op, t->dtype, t->data, NEAT_F32, p, t->numel);
            if (st) return st;
            shadow[i].data = p;
        }
        ts[i] = &shadow[i];
    }
    neat_status st = run(dev, cb, &f32);
    if (st) return st;
    nm_tensor *const *orig = nm_op_tensors(op, &n);
    for (int i = out; !st && i >= 0 && i < n; i++) {
        const nm_tensor *o = orig[i];
        if (o && o->dtype != NEAT_F32)
            st = convert(dev, cb, op, NEAT_F32, ts[i]->data, o->dtype, o->data, o->numel);
    }
    return st;
}
