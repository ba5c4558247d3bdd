/*
 * conv_parts.c — the device time of each part of a convolution's training step, alone in a
 * command buffer: forward, backward data (dx), backward filter (dw), dw with db, all three;
 * in strict float32, TF32 and bf16. For choosing CUDA convolution algorithms (conv_plan.cu): which
 * part of LeNet's step is slow under a given rule. Public API only; CUDA device 0; the
 * median of REPS replays (neat_cmdbuf_device_time).
 *
 *   gcc -O2 -std=c11 -Iinclude bench/micro/conv_parts.c -Lbuild -lneatml -lm -o /tmp/conv_parts
 *   LD_LIBRARY_PATH=build /tmp/conv_parts [nhwc]
 * nhwc: the tensors in NEAT_LAYOUT_NHWC (x [N,H,W,C], w [K,3,3,C], y [N,H,W,K]); each line
 * then ends with the 2x2 maxpool of y forward and backward (LeNet's pools).
 */
#include <neatml.h>

#include <stdio.h>
#include <stdlib.h>

#define REPS 30

static int ok(neat_status st, const char *what) {
    if (st == NEAT_OK) return 1;
    printf("  %s: %s (%s)\n", what, neat_status_string(st), neat_last_error());
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int nhwc; /* argv[1] "nhwc": image tensors [N,H,W,C], filters [K,3,3,C] */

static neat_tensor *tensor(neat_device *dev, neat_dtype dt, int64_t a, int64_t b, int64_t c,
                           int64_t d) {
    int64_t s[4] = {a, b, c, d};
    if (nhwc && b) s[1] = c, s[2] = d, s[3] = b;
    int ndim = b ? 4 : 1;
    neat_tensor *t = NULL;
    if (!ok(neat_tensor_create_typed(dev, dt, ndim, s, 1, &t), "create")) exit(1);
    return t;
}

/* Median device time in ms of a buffer run REPS times (after the first two runs). */
static double timed(neat_cmdbuf *cb) {
    double t[REPS], s;
    for (int i = -2; i < REPS; i++) {
        if (!ok(neat_cmdbuf_commit(cb), "commit") || !ok(neat_cmdbuf_wait(cb), "wait") ||
            !ok(neat_cmdbuf_device_time(cb, &s), "device_time"))
            return -1;
        if (i >= 0) t[i] = 1e3 * s;
    }
    qsort(t, REPS, sizeof *t, cmp);
    return t[REPS / 2];
}

int main(int argc, char **argv) {
    nhwc = argc > 1 && argv[1][0] == 'n' && argv[1][1] == 'h';
    neat_device *dev;
    if (!ok(neat_device_create(NEAT_BACKEND_CUDA, 0, &dev), "device")) return 1;
    struct {
        const char *name;
        int64_t n, c, h, k;
    } shapes[] = {{"lenet conv1 b128", 128, 1, 28, 32},
                  {"lenet conv2 b128", 128, 32, 14, 64},
                  {"lenet conv2 b1024", 1024, 32, 14, 64},
                  {"256f", 32, 64, 56, 256}};
    neat_conv2d_desc desc = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_pool2d_desc pool = neat_pool2d_desc_make(2, 2, 2, 0);
    desc.layout = pool.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
    for (int si = 0; si < 4; si++)
        for (int mode = 0; mode < 3; mode++) {
            neat_dtype dt = mode == 2 ? NEAT_BF16 : NEAT_F32;
            neat_device_set_math_mode(dev, mode == 1 ? NEAT_MATH_TF32 : NEAT_MATH_STRICT);
            int64_t n = shapes[si].n, c = shapes[si].c, h = shapes[si].h, k = shapes[si].k;
            neat_tensor *x = tensor(dev, dt, n, c, h, h), *w = tensor(dev, dt, k, c, 3, 3);
            neat_tensor *b = tensor(dev, dt, k, 0, 0, 0), *y = tensor(dev, dt, n, k, h, h);
            neat_tensor *dy = tensor(dev, dt, n, k, h, h), *dx = tensor(dev, dt, n, c, h, h);
            neat_tensor *dw = tensor(dev, dt, k, c, 3, 3), *db = tensor(dev, dt, k, 0, 0, 0);
            printf("%-18s %-6s", shapes[si].name,
                   mode == 0   ? "strict"
                   : mode == 1 ? "tf32"
                               : "bf16");
            neat_tensor *py = tensor(dev, dt, n, k, h / 2, h / 2);
            for (int part = 0; part < 7; part++) {
                neat_cmdbuf *cb;
                neat_cmdbuf_create(dev, &cb);
                neat_status st =
                    part == 0   ? neat_conv2d_forward(cb, &desc, NEAT_ACT_RELU, x, w, b, y)
                    : part == 5 ? neat_maxpool2d(cb, &pool, y, py)
                    : part == 6
                        ? neat_maxpool2d_backward(cb, &pool, y, py, dy)
                        : neat_conv2d_backward(cb, &desc, NEAT_ACT_RELU, x, w, b, y, dy,
                                               part == 1 || part == 4 ? dx : NULL,
                                               part >= 2 ? dw : NULL, part >= 3 ? db : NULL, 0);
                double ms = ok(st, "record") ? timed(cb) : -1;
                static const char *parts[] = {"fwd", "dx", "dw", "dw+db", "all", "pool", "pool'"};
                printf("  %s %.4f", parts[part], ms);
                neat_cmdbuf_destroy(cb);
            }
            printf("  ms\n");
            fflush(stdout);
            neat_tensor *all[] = {x, w, b, y, dy, dx, dw, db, py};
            for (int i = 0; i < 9; i++) neat_tensor_destroy(all[i]);
        }
    neat_device_destroy(dev);
    return 0;
}
