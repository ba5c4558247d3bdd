/*
 * fashion_mnist.c — train a LeNet on Fashion-MNIST with neatml, end to end.
 *
 *   conv(1->32, 3x3, pad 1)+relu - maxpool 2x2 - conv(32->64, 3x3, pad 1)+relu - maxpool 2x2
 *   - fc(3136->128)+relu - fc(128->10) - softmax cross-entropy, SGD with momentum 0.9.
 *
 * The whole training step (forward, loss, backward, eight parameter updates) is recorded
 * once into one command buffer and replayed for every batch. The step's buffer also holds
 * its host copies (neat_copy_from_host of the batch's images and labels and of `hyper`
 * {learning rate, step}, read at each commit; neat_copy_to_host of the loss and logits,
 * written by wait), so a step waits for the device once, at its own wait, and the host
 * gathers the next batch while the device runs this one. The schedule is a linear warm-up
 * then a cosine decay. A second recorded buffer runs the forward pass over the test set.
 *
 * Mixed precision (--precision bf16|fp16; fp32 is the default and unchanged): the weights
 * live as float32 masters, of which the forward and backward passes read a half copy;
 * activations and gradients are half. The loss: the logits cast to float32, the float32
 * softmax cross-entropy and its backward, the loss gradient cast back to half. The
 * updates are neat_sgd_update_mixed (float32 master, velocity and math; the half copy
 * rewritten). fp16 adds dynamic loss scaling (its gradients would underflow): the loss
 * gradient is multiplied by the scale (neat_loss_scale), every gradient is checked for
 * overflow (neat_loss_scale_check), the updates divide by the scale and are skipped after
 * an overflow, and neat_loss_scale_update backs the scale off or grows it. All of it is in
 * the recorded step: no host round trip per step. Half precision trains on one rank (the
 * collectives take float32 tensors).
 *
 * --layout nhwc keeps images, activations and filters channels-last (NEAT_LAYOUT_NHWC in the
 * conv and pool descriptors; fc1 then reads the pooled [N,7,7,64] in h, w, c order): the
 * layout cuDNN's half convolutions run fastest in; the same network otherwise.
 *
 * Data-parallel (docs/DISTRIBUTED.md): N ranks each take a shard of every global batch of
 * N x --batch images (rank r the rows [r*batch, (r+1)*batch) of the same shuffled order: the
 * order comes from the seed). Rank 0's parameters are broadcast at the start; in the step,
 * after the backward ops, one neat_all_reduce_bucket averages the eight gradients and the
 * loss (one transfer), so the loss printed is the mean over all ranks.
 * Each rank evaluates its share of the test set; the correct counts are summed across
 * ranks once an epoch. Ranks are processes (--rank R --world-size N --init-file PATH, or
 * RANK / WORLD_SIZE / LOCAL_RANK and NEATML_INIT_FILE, or mpirun's OMPI_COMM_WORLD_*; rank 0
 * writes the comm id to the file, the others read it) or threads of one process driving
 * --devices N local GPUs (neat_comm_create_all). Only rank 0 prints.
 *
 * Data: Debian's dataset-fashion-mnist, gzipped IDX files read through zlib
 * (/usr/share/datasets/fashion-mnist, or --data DIR). Output: a progress bar on stderr,
 * the test accuracy after each epoch, an SVG plot of the curves, and one last line
 *   final test_accuracy=0.9012 epochs=5 backend=cpu images_per_s=1234.5
 *         steady_images_per_s=1300.2 ranks=1
 * (with --precision bf16 or fp16, " precision=bf16", and for fp16 " loss_scale=65536": the
 * final scale; with --layout nhwc, " layout=nhwc")
 * (images/s count the images of all ranks). An example, so unlike the library it prints,
 * and exits with 1 on any failure.
 */
#include "neatml.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define IMG 28
#define PIXELS (IMG * IMG)
#define CLASSES 10
#define EVAL_BATCH 500
#define MAX_DEVICES 16

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fashion_mnist: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Every neat_* status is checked: a failure names the call and the library's message. */
static void ok(neat_status st, const char *what) {
    if (st != NEAT_OK) die("%s: %s: %s", what, neat_status_string(st), neat_last_error());
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- options ------------------------------------------------------------------------------ */

typedef struct options {
    int epochs, batch;
    double lr;
    neat_backend backend;
    uint64_t seed;
    const char *plot, *data;
    long limit; /* train on the first `limit` images; 0 = all */
    /* Data-parallel: rank and world size (-1: from the environment), the id file, or the
     * number of local devices that one process drives (0: one device, or one per process). */
    int rank, world, devices;
    const char *init_file;
    neat_dtype precision; /* of the weights' copies, activations and gradients */
    int nhwc;             /* --layout nhwc */
} options;

static void usage(void) {
    fprintf(stderr,
            "usage: fashion_mnist [--epochs N] [--batch N] [--lr X] [--backend cpu|cuda|auto]\n"
            "                     [--seed N] [--plot FILE] [--data DIR] [--limit N]\n"
            "                     [--rank R --world-size N --init-file PATH | --devices N]\n"
            "                     [--precision fp32|bf16|fp16] [--layout nchw|nhwc]\n");
    exit(1);
}

static long parse_long(const char *flag, const char *v, long lo) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo) die("%s wants an integer >= %ld, got '%s'", flag, lo, v);
    return x;
}

static options parse_options(int argc, char **argv) {
    options o = {5,
                 128,
                 0.05,
                 NEAT_BACKEND_AUTO,
                 42,
                 "fashion_mnist.svg",
                 "/usr/share/datasets/fashion-mnist",
                 0,
                 -1,
                 -1,
                 0,
                 NULL,
                 NEAT_F32,
                 0};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) usage();
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(f, "--epochs")) o.epochs = (int)parse_long(f, v, 1);
        else if (!strcmp(f, "--batch")) o.batch = (int)parse_long(f, v, 1);
        else if (!strcmp(f, "--seed")) o.seed = (uint64_t)parse_long(f, v, 0);
        else if (!strcmp(f, "--limit")) o.limit = parse_long(f, v, 1);
        else if (!strcmp(f, "--plot")) o.plot = v;
        else if (!strcmp(f, "--data")) o.data = v;
        else if (!strcmp(f, "--rank")) o.rank = (int)parse_long(f, v, 0);
        else if (!strcmp(f, "--world-size")) o.world = (int)parse_long(f, v, 1);
        else if (!strcmp(f, "--devices")) o.devices = (int)parse_long(f, v, 1);
        else if (!strcmp(f, "--init-file")) o.init_file = v;
        else if (!strcmp(f, "--lr")) {
            char *end;
            o.lr = strtod(v, &end);
            if (*end || !(o.lr > 0)) die("--lr wants a positive number, got '%s'", v);
        } else if (!strcmp(f, "--backend")) {
            if (!strcmp(v, "cpu")) o.backend = NEAT_BACKEND_CPU;
            else if (!strcmp(v, "cuda")) o.backend = NEAT_BACKEND_CUDA;
            else if (!strcmp(v, "auto")) o.backend = NEAT_BACKEND_AUTO;
            else die("--backend wants cpu, cuda or auto, got '%s'", v);
        } else if (!strcmp(f, "--layout")) {
            if (!strcmp(v, "nchw"))
                o.nhwc = 0;
            else if (!strcmp(v, "nhwc"))
                o.nhwc = 1;
            else
                die("--layout wants nchw or nhwc, got '%s'", v);
        } else if (!strcmp(f, "--precision")) {
            if (!strcmp(v, "fp32"))
                o.precision = NEAT_F32;
            else if (!strcmp(v, "bf16"))
                o.precision = NEAT_BF16;
            else if (!strcmp(v, "fp16"))
                o.precision = NEAT_F16;
            else
                die("--precision wants fp32, bf16 or fp16, got '%s'", v);
        } else
            usage();
    }
    if (o.devices > MAX_DEVICES) die("--devices wants at most %d", MAX_DEVICES);
    if (o.devices && (o.rank > 0 || o.world > 1))
        die("--devices N drives N devices from one process: not with --rank/--world-size");
    if (o.precision != NEAT_F32 && (o.devices > 1 || o.world > 1))
        die("--precision bf16/fp16 trains on one rank (the collectives take float32 tensors)");
    return o;
}

/* ---- data: gzipped IDX files --------------------------------------------------------------- */

/* Read exactly n bytes or die naming the file (a truncated download must not crash). */
static void gz_read_all(gzFile f, const char *path, void *dst, size_t n) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        int got = gzread(f, (char *)dst + done, chunk);
        if (got <= 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            die("%s: truncated or corrupt: %zu of %zu bytes read (%s)", path, done, n,
                zerr ? msg : "end of file");
        }
        done += (size_t)got;
    }
}

/* An IDX file: magic 0x0000080N (N dimensions of unsigned bytes), N big-endian sizes, the
 * bytes. Returns the items as bytes; *count is the first size, *item_size the product of
 * the others, which must equal want_item_size. */
static uint8_t *load_idx(const char *dir, const char *name, int want_dims, long want_item_size,
                         long *count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gzFile f = gzopen(path, "rb");
    if (!f) die("%s: cannot open (install dataset-fashion-mnist, or pass --data DIR)", path);
    uint8_t head[4 + 4 * 3];
    gz_read_all(f, path, head, 4 + 4 * (size_t)want_dims);
    if (head[0] || head[1] || head[2] != 0x08 || head[3] != want_dims)
        die("%s: not an IDX file of %d dimensions of bytes (magic %02x%02x%02x%02x)", path,
            want_dims, head[0], head[1], head[2], head[3]);
    long dims[3], item = 1;
    for (int d = 0; d < want_dims; d++) {
        const uint8_t *p = head + 4 + 4 * d;
        dims[d] = (long)p[0] << 24 | (long)p[1] << 16 | (long)p[2] << 8 | (long)p[3];
        if (d) item *= dims[d];
    }
    if (item != want_item_size || dims[0] <= 0 || dims[0] > 10000000)
        die("%s: unexpected sizes (%ld items of %ld bytes, want items of %ld)", path, dims[0],
            item, want_item_size);
    uint8_t *data = malloc((size_t)(dims[0] * item));
    if (!data) die("%s: out of memory", path);
    gz_read_all(f, path, data, (size_t)(dims[0] * item));
    gzclose(f);
    *count = dims[0];
    return data;
}

typedef struct dataset {
    float *images; /* [count, 784], normalized */
    float *labels; /* [count], class indices as floats */
    long count;
} dataset;

/* Images scaled to [0,1] then standardized with Fashion-MNIST's mean and std. */
static dataset load_set(const char *dir, const char *images, const char *labels) {
    long ni, nl;
    uint8_t *img = load_idx(dir, images, 3, PIXELS, &ni);
    uint8_t *lab = load_idx(dir, labels, 1, 1, &nl);
    if (ni != nl) die("%s/%s has %ld images but %s has %ld labels", dir, images, ni, labels, nl);
    dataset s = {malloc(sizeof(float) * (size_t)(ni * PIXELS)), malloc(sizeof(float) * (size_t)ni),
                 ni};
    if (!s.images || !s.labels) die("out of memory loading %s", images);
    for (long i = 0; i < ni * PIXELS; i++) s.images[i] = (img[i] / 255.0f - 0.2860f) / 0.3530f;
    for (long i = 0; i < ni; i++) {
        if (lab[i] >= CLASSES) die("%s/%s: label %d of item %ld is not a class", dir, labels, lab[i], i);
        s.labels[i] = lab[i];
    }
    free(img);
    free(lab);
    return s;
}

/* ---- random numbers: splitmix64, Box-Muller -------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) * 0x1.0p-53; }

static double rng_normal(uint64_t *s) {
    return sqrt(-2.0 * log(rng_uniform(s))) * cos(2.0 * M_PI * rng_uniform(s));
}

static void shuffle(long *idx, long n, uint64_t *s) {
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(rng_next(s) % (uint64_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* ---- the network ------------------------------------------------------------------------------ */

static neat_tensor *tensor_typed(neat_device *dev, neat_dtype dt, int ndim, int64_t d0, int64_t d1,
                                 int64_t d2, int64_t d3, const char *name) {
    int64_t shape[4] = {d0, d1, d2, d3};
    neat_tensor *t = NULL;
    char what[96];
    snprintf(what, sizeof what, "neat_tensor_create(%s)", name);
    ok(neat_tensor_create_typed(dev, dt, ndim, shape, 0, &t), what);
    return t;
}

static neat_tensor *tensor(neat_device *dev, int ndim, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3, const char *name) {
    return tensor_typed(dev, NEAT_F32, ndim, d0, d1, d2, d3, name);
}

/* An image tensor of n x c channels of h x w: [n,c,h,w], or [n,h,w,c] when nhwc. */
static neat_tensor *image(neat_device *dev, neat_dtype dt, int nhwc, int64_t n, int64_t c,
                          int64_t h, int64_t w, const char *name) {
    return nhwc ? tensor_typed(dev, dt, 4, n, h, w, c, name)
                : tensor_typed(dev, dt, 4, n, c, h, w, name);
}

static void upload(neat_tensor *t, const float *v, int64_t n, const char *name) {
    char what[96];
    snprintf(what, sizeof what, "neat_tensor_write(%s)", name);
    ok(neat_tensor_write(t, v, n), what);
}

/* Parameters of conv1, conv2, fc1, fc2 with their gradients and momentum buffers. In
 * mixed precision w, b (what the passes read) and dw, db are half, and mw, mb hold the
 * float32 master weights; in fp32 mw, mb are w, b. */
enum { CONV1, CONV2, FC1, FC2, LAYERS };

typedef struct lenet {
    neat_dtype dt;
    neat_tensor *w[LAYERS], *b[LAYERS], *dw[LAYERS], *db[LAYERS], *vw[LAYERS], *vb[LAYERS];
    neat_tensor *mw[LAYERS], *mb[LAYERS];
    neat_conv2d_desc conv;  /* 3x3, stride 1, pad 1 */
    neat_pool2d_desc pool;  /* 2x2, stride 2 */
} lenet;

/* He initialization: normal with std sqrt(gain / fan_in), gain 2 for the layers a relu
 * follows and 1 for the logits layer (nothing follows it, so no half of the variance is
 * cut); zero biases and velocities (neat_tensor_create_zeros: the library never clears a
 * velocity itself). */
static void lenet_create(neat_device *dev, lenet *net, neat_dtype dt, int nhwc, uint64_t *rng) {
    static const int64_t shapes[2][LAYERS][4] = {
        {{32, 1, 3, 3}, {64, 32, 3, 3}, {128, 3136, 1, 1}, {CLASSES, 128, 1, 1}},
        {{32, 3, 3, 1}, {64, 3, 3, 32}, {128, 3136, 1, 1}, {CLASSES, 128, 1, 1}}}; /* NHWC */
    net->conv = neat_conv2d_desc_make(3, 3, 1, 1);
    net->pool = neat_pool2d_desc_make(2, 2, 2, 0);
    net->conv.layout = net->pool.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
    net->dt = dt;
    for (int l = 0; l < LAYERS; l++) {
        int nd = l <= CONV2 ? 4 : 2;
        const int64_t *s = shapes[nhwc][l];
        int64_t n = s[0] * s[1] * s[2] * s[3], fan_in = s[1] * s[2] * s[3];
        int64_t bs[1] = {s[0]};
        net->w[l] = net->mw[l] = tensor(dev, nd, s[0], s[1], s[2], s[3], "weight");
        net->dw[l] = tensor_typed(dev, dt, nd, s[0], s[1], s[2], s[3], "weight gradient");
        net->db[l] = tensor_typed(dev, dt, 1, s[0], 0, 0, 0, "bias gradient");
        ok(neat_tensor_create_zeros(dev, nd, s, &net->vw[l]), "neat_tensor_create_zeros(velocity)");
        ok(neat_tensor_create_zeros(dev, 1, bs, &net->b[l]), "neat_tensor_create_zeros(bias)");
        ok(neat_tensor_create_zeros(dev, 1, bs, &net->vb[l]), "neat_tensor_create_zeros(velocity)");
        net->mb[l] = net->b[l];
        if (dt != NEAT_F32) { /* the half copies the passes read */
            net->w[l] = tensor_typed(dev, dt, nd, s[0], s[1], s[2], s[3], "weight (half copy)");
            ok(neat_tensor_create_typed(dev, dt, 1, bs, 1, &net->b[l]),
               "neat_tensor_create_typed(bias, half copy)");
        }
        float *v = malloc(sizeof(float) * (size_t)n);
        if (!v) die("out of memory initializing the weights");
        double std = sqrt((l == FC2 ? 1.0 : 2.0) / (double)fan_in);
        for (int64_t i = 0; i < n; i++) v[i] = (float)(std * rng_normal(rng));
        upload(net->mw[l], v, n, "weight");
        if (dt != NEAT_F32) upload(net->w[l], v, n, "weight (half copy)"); /* rounded */
        free(v);
    }
}

static void lenet_destroy(lenet *net) {
    for (int l = 0; l < LAYERS; l++) {
        if (net->mw[l] != net->w[l]) neat_tensor_destroy(net->mw[l]);
        if (net->mb[l] != net->b[l]) neat_tensor_destroy(net->mb[l]);
        neat_tensor_destroy(net->w[l]), neat_tensor_destroy(net->b[l]);
        neat_tensor_destroy(net->dw[l]), neat_tensor_destroy(net->db[l]);
        neat_tensor_destroy(net->vw[l]), neat_tensor_destroy(net->vb[l]);
    }
}

/* Activations of one batch size (of the net's dtype); the gradients only for training.
 * x32, logits32, dlogits32: the float32 sides of the casts in mixed precision (the host
 * copies and the loss are float32); in fp32 they are x, logits, dlogits. */
typedef struct batch_state {
    int64_t n;
    neat_tensor *x32, *logits32, *dlogits32;
    neat_tensor *x, *labels;                 /* [n,1,28,28], [n] */
    neat_tensor *a1, *p1, *a2, *p2, *p2flat; /* [n,32,28,28] [n,32,14,14] [n,64,14,14]
                                                [n,64,7,7] and the view [n,3136] */
    neat_tensor *a3, *logits, *loss;         /* [n,128] [n,10] [1] */
    neat_tensor *dlogits, *da3, *dp2, *dp2flat, *da2, *dp1, *da1;
    /* Host side of the recorded copies: the batch (read at commit), the results (by wait). */
} batch_state;

static void batch_create(neat_device *dev, batch_state *s, int64_t n, int training, neat_dtype dt,
                         int nhwc) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->x = image(dev, dt, nhwc, n, 1, IMG, IMG, "images"); /* one channel: the same bytes */
    s->labels = tensor(dev, 1, n, 0, 0, 0, "labels");
    s->a1 = image(dev, dt, nhwc, n, 32, 28, 28, "conv1 output");
    s->p1 = image(dev, dt, nhwc, n, 32, 14, 14, "pool1 output");
    s->a2 = image(dev, dt, nhwc, n, 64, 14, 14, "conv2 output");
    s->p2 = image(dev, dt, nhwc, n, 64, 7, 7, "pool2 output");
    int64_t flat[2] = {n, 64 * 7 * 7};
    ok(neat_tensor_view(s->p2, 2, flat, &s->p2flat), "neat_tensor_view(pool2 as [n,3136])");
    s->a3 = tensor_typed(dev, dt, 2, n, 128, 0, 0, "fc1 output");
    s->logits = tensor_typed(dev, dt, 2, n, CLASSES, 0, 0, "logits");
    s->loss = tensor(dev, 1, 1, 0, 0, 0, "loss");
    s->x32 = dt == NEAT_F32 ? s->x : image(dev, NEAT_F32, nhwc, n, 1, IMG, IMG, "images (float32)");
    s->logits32 = dt == NEAT_F32 ? s->logits : tensor(dev, 2, n, CLASSES, 0, 0, "logits (float32)");
    if (!training) return;
    s->dlogits = tensor_typed(dev, dt, 2, n, CLASSES, 0, 0, "logits gradient");
    s->dlogits32 =
        dt == NEAT_F32 ? s->dlogits : tensor(dev, 2, n, CLASSES, 0, 0, "logits gradient (float32)");
    s->da3 = tensor_typed(dev, dt, 2, n, 128, 0, 0, "fc1 gradient");
    s->dp2 = image(dev, dt, nhwc, n, 64, 7, 7, "pool2 gradient");
    ok(neat_tensor_view(s->dp2, 2, flat, &s->dp2flat), "neat_tensor_view(pool2 gradient)");
    s->da2 = image(dev, dt, nhwc, n, 64, 14, 14, "conv2 gradient");
    s->dp1 = image(dev, dt, nhwc, n, 32, 14, 14, "pool1 gradient");
    s->da1 = image(dev, dt, nhwc, n, 32, 28, 28, "conv1 gradient");
}

static void batch_destroy(batch_state *s) {
    if (s->x32 != s->x) neat_tensor_destroy(s->x32);
    if (s->logits32 != s->logits) neat_tensor_destroy(s->logits32);
    if (s->dlogits32 != s->dlogits) neat_tensor_destroy(s->dlogits32);
    neat_tensor *all[] = {s->x, s->labels, s->a1, s->p1, s->a2, s->p2flat, s->p2, s->a3,
                          s->logits, s->loss, s->dlogits, s->da3, s->dp2flat, s->dp2, s->da2,
                          s->dp1, s->da1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) neat_tensor_destroy(all[i]);
}

/* The host side of a training step's recorded copies: the batch and hyper {lr, step},
 * read at commit; the loss and logits, written by wait. The loop keeps two steps, each a
 * buffer with its own host_io, so that step k+1 is committed (its batch read) before step
 * k's results are waited for: the device always has the next step queued. */
typedef struct host_io {
    float *x, *labels, *logits, loss, hyper[2];
} host_io;

static void host_io_create(host_io *io, long n) {
    io->x = malloc(sizeof(float) * (size_t)(n * PIXELS));
    io->labels = malloc(sizeof(float) * (size_t)n);
    io->logits = malloc(sizeof(float) * (size_t)(n * CLASSES));
    if (!io->x || !io->labels || !io->logits) die("out of memory for a batch");
}

static void host_io_destroy(host_io *io) { free(io->x), free(io->labels), free(io->logits); }

/* The device side of a step's inputs, one set per step buffer: step k+1's copies then need
 * not wait for step k to finish reading its own, and on CUDA they travel while step k
 * computes (docs/API.md, recorded host copies). */
typedef struct step_inputs {
    neat_tensor *x, *labels, *hyper;
} step_inputs;

/* Forward: the batch's images from host_x, conv+relu, pool, conv+relu, pool, fc+relu, fc
 * (logits). In mixed precision the images come in as float32 and are cast to half, and the
 * logits are cast to float32 (logits32) for the loss and the host. */
static void record_forward(neat_cmdbuf *cb, const lenet *net, batch_state *s,
                           const float *host_x) {
    ok(neat_copy_from_host(cb, host_x, s->n * PIXELS, s->x32), "record images copy");
    if (s->x32 != s->x) ok(neat_cast(cb, s->x32, s->x), "record images cast");
    ok(neat_conv2d_forward(cb, &net->conv, NEAT_ACT_RELU, s->x, net->w[CONV1], net->b[CONV1],
                           s->a1), "record conv1");
    ok(neat_maxpool2d(cb, &net->pool, s->a1, s->p1), "record pool1");
    ok(neat_conv2d_forward(cb, &net->conv, NEAT_ACT_RELU, s->p1, net->w[CONV2], net->b[CONV2],
                           s->a2), "record conv2");
    ok(neat_maxpool2d(cb, &net->pool, s->a2, s->p2), "record pool2");
    ok(neat_linear_forward(cb, NEAT_ACT_RELU, s->p2flat, net->w[FC1], net->b[FC1], s->a3),
       "record fc1");
    ok(neat_linear_forward(cb, NEAT_ACT_NONE, s->a3, net->w[FC2], net->b[FC2], s->logits),
       "record fc2");
    if (s->logits32 != s->logits) ok(neat_cast(cb, s->logits, s->logits32), "record logits cast");
}

/* The whole step: the batch and hyper from the host, forward, loss, backward (gradients
 * overwritten: accumulate 0), updates, then the loss and logits to the host. conv1's input
 * gradient is not needed: dx = NULL skips it. With a comm (data-parallel), the eight
 * gradients are averaged over the ranks in one bucket before the updates, so every rank
 * applies the same update, and the loss is averaged too (what the host reads). Mixed
 * precision (see the top): the loss in float32, the loss scaling with `scaler` (fp16; NULL
 * otherwise), the mixed updates. */
static void record_train_step(neat_cmdbuf *cb, const lenet *net, batch_state *s, neat_tensor *hyper,
                              neat_tensor *scaler, host_io *io, neat_comm *comm) {
    ok(neat_copy_from_host(cb, io->labels, s->n, s->labels), "record labels copy");
    ok(neat_copy_from_host(cb, io->hyper, 2, hyper), "record hyper copy");
    record_forward(cb, net, s, io->x);
    ok(neat_softmax_cross_entropy(cb, s->logits32, s->labels, s->loss), "record loss");
    ok(neat_softmax_cross_entropy_backward(cb, s->logits32, s->labels, s->dlogits32),
       "record loss backward");
    if (scaler) ok(neat_loss_scale(cb, scaler, s->dlogits32, s->dlogits32), "record loss scale");
    if (s->dlogits32 != s->dlogits)
        ok(neat_cast(cb, s->dlogits32, s->dlogits), "record loss gradient cast");
    ok(neat_linear_backward(cb, NEAT_ACT_NONE, s->a3, net->w[FC2], net->b[FC2], s->logits, s->dlogits, s->da3, net->dw[FC2], net->db[FC2], 0),
       "record fc2 backward");
    ok(neat_linear_backward(cb, NEAT_ACT_RELU, s->p2flat, net->w[FC1], net->b[FC1], s->a3, s->da3, s->dp2flat, net->dw[FC1], net->db[FC1], 0),
       "record fc1 backward");
    ok(neat_maxpool2d_backward(cb, &net->pool, s->a2, s->dp2, s->da2), "record pool2 backward");
    ok(neat_conv2d_backward(cb, &net->conv, NEAT_ACT_RELU, s->p1, net->w[CONV2], net->b[CONV2], s->a2, s->da2, s->dp1, net->dw[CONV2], net->db[CONV2], 0),
       "record conv2 backward");
    ok(neat_maxpool2d_backward(cb, &net->pool, s->a1, s->dp1, s->da1), "record pool1 backward");
    ok(neat_conv2d_backward(cb, &net->conv, NEAT_ACT_RELU, s->x, net->w[CONV1], net->b[CONV1], s->a1, s->da1, NULL, net->dw[CONV1], net->db[CONV1], 0),
       "record conv1 backward");
    if (comm) { /* the loss rides in the gradients' bucket: one transfer a step, not two */
        neat_tensor *bucket[2 * LAYERS + 1];
        for (int l = 0; l < LAYERS; l++) bucket[2 * l] = net->dw[l], bucket[2 * l + 1] = net->db[l];
        bucket[2 * LAYERS] = s->loss;
        ok(neat_all_reduce_bucket(cb, comm, NEAT_REDUCE_AVG, 2 * LAYERS + 1, bucket),
           "record gradient and loss all-reduce");
    }
    neat_tensor *grads[2 * LAYERS];
    for (int l = 0; l < LAYERS; l++) grads[2 * l] = net->dw[l], grads[2 * l + 1] = net->db[l];
    if (scaler)
        ok(neat_loss_scale_check(cb, (const neat_tensor *const *)grads, 2 * LAYERS, scaler),
           "record loss scale check");
    neat_sgd_params sgd = {0.9f, 0.0f, 0};
    for (int l = 0; l < LAYERS; l++) {
        if (net->dt == NEAT_F32) {
            ok(neat_sgd_update(cb, &sgd, hyper, net->w[l], net->dw[l], net->vw[l]),
               "record sgd (w)");
            ok(neat_sgd_update(cb, &sgd, hyper, net->b[l], net->db[l], net->vb[l]),
               "record sgd (b)");
            continue;
        }
        ok(neat_sgd_update_mixed(cb, &sgd, hyper, scaler, net->mw[l], net->dw[l], net->vw[l],
                                 net->w[l]),
           "record mixed sgd (w)");
        ok(neat_sgd_update_mixed(cb, &sgd, hyper, scaler, net->mb[l], net->db[l], net->vb[l],
                                 net->b[l]),
           "record mixed sgd (b)");
    }
    if (scaler) {
        neat_loss_scale_params lsp = {2.0f, 0.5f, 2000};
        ok(neat_loss_scale_update(cb, &lsp, scaler), "record loss scale update");
    }
    ok(neat_copy_to_host(cb, s->loss, &io->loss, 1), "record loss copy");
    ok(neat_copy_to_host(cb, s->logits32, io->logits, s->n * CLASSES), "record logits copy");
}

/* ---- batches, evaluation, progress ------------------------------------------------------- */

/* Copy the images and labels of idx[0..n) into host batch buffers; rows past `valid` are
 * zero images of class 0 (padding of the last evaluation batch, ignored when counting). */
static void gather(const dataset *d, const long *idx, long valid, long n, float *x, float *y) {
    for (long i = 0; i < n; i++) {
        if (i < valid) {
            memcpy(x + i * PIXELS, d->images + idx[i] * PIXELS, sizeof(float) * PIXELS);
            y[i] = d->labels[idx[i]];
        } else {
            memset(x + i * PIXELS, 0, sizeof(float) * PIXELS);
            y[i] = 0;
        }
    }
}

/* Rows of logits [n,10] whose largest entry is at the label. */
static long count_correct(const float *logits, const float *labels, long n) {
    long correct = 0;
    for (long i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (logits[i * CLASSES + c] > logits[i * CLASSES + best]) best = c;
        correct += best == (int)labels[i];
    }
    return correct;
}

/* Correctly classified test images among [first, last), with the recorded forward buffer
 * `cb` (images copied in from io->x, logits out to io->logits) over batches of s->n. */
static long evaluate(neat_cmdbuf *cb, batch_state *s, host_io *io, const dataset *test,
                     long first, long last) {
    long correct = 0, *idx = malloc(sizeof(long) * (size_t)s->n);
    if (!idx) die("out of memory");
    for (long start = first; start < last; start += s->n) {
        long valid = last - start < s->n ? last - start : s->n;
        for (long i = 0; i < valid; i++) idx[i] = start + i;
        gather(test, idx, valid, s->n, io->x, io->labels);
        ok(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit(evaluation)");
        ok(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait(evaluation)");
        correct += count_correct(io->logits, io->labels, valid);
    }
    free(idx);
    return correct;
}

/* Warm-up over the first `warmup` steps, then cosine decay to zero at the last step. */
static float learning_rate(double lr0, long t, long warmup, long total) {
    if (t <= warmup) return (float)(lr0 * (double)t / (double)warmup);
    double progress = (double)(t - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    return (float)(lr0 * 0.5 * (1.0 + cos(M_PI * progress)));
}

static void progress(int epoch, int epochs, long step, long steps, double img_s, double loss) {
    char bar[31];
    int fill = (int)(30 * step / steps);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\repoch %d/%d [%s] %3ld%% %8.1f img/s  loss %.4f ", epoch, epochs, bar,
            100 * step / steps, img_s, loss);
    fflush(stderr);
}

/* ---- the SVG plot ------------------------------------------------------------------------ */

typedef struct curves {
    double *loss_x, *loss_y; /* training loss, averaged over chunks of steps; x in epochs */
    long nloss;
    double *train_acc, *test_acc; /* per epoch */
    int epochs;
} curves;

/* One panel: axes from (x0..x1, y0..y1) data into the box at (left, top, w, h). */
typedef struct panel { double left, top, w, h, x0, x1, y0, y1; } panel;

static double px(const panel *p, double x) { return p->left + (x - p->x0) / (p->x1 - p->x0) * p->w; }
static double py(const panel *p, double y) { return p->top + p->h - (y - p->y0) / (p->y1 - p->y0) * p->h; }

static void svg_axes(FILE *f, const panel *p, const char *title, const char *ylabel, int yticks,
                     const char *yfmt) {
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#444'/>\n",
            p->left, p->top, p->w, p->h);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='15'>%s</text>\n",
            p->left + p->w / 2, p->top - 10, title);
    for (int i = 0; i <= yticks; i++) {
        double v = p->y0 + (p->y1 - p->y0) * i / yticks;
        fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#ddd'/>\n", p->left,
                p->left + p->w, py(p, v), py(p, v));
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='end' font-size='11'>", p->left - 5, py(p, v) + 4);
        fprintf(f, yfmt, v);
        fprintf(f, "</text>\n");
    }
    int xt = (int)ceil(p->x1 - p->x0);
    for (int i = 0; i <= xt; i++) {
        double v = p->x0 + i;
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='11'>%g</text>\n",
                px(p, v), p->top + p->h + 15, v);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='12'>epoch</text>\n",
            p->left + p->w / 2, p->top + p->h + 32);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='12' transform='rotate(-90 %.1f %.1f)'>%s</text>\n",
            p->left - 45, p->top + p->h / 2, p->left - 45, p->top + p->h / 2, ylabel);
}

static void svg_line(FILE *f, const panel *p, const double *x, const double *y, long n,
                     const char *color, int dots) {
    fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.8' points='", color);
    for (long i = 0; i < n; i++) fprintf(f, "%.1f,%.1f ", px(p, x[i]), py(p, y[i]));
    fprintf(f, "'/>\n");
    for (long i = 0; dots && i < n; i++)
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s'/>\n", px(p, x[i]), py(p, y[i]), color);
}

static int write_svg(const char *path, const curves *c, const char *subtitle) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    double lmax = 0;
    for (long i = 0; i < c->nloss; i++) lmax = fmax(lmax, c->loss_y[i]);
    double amin = 1;
    for (int e = 0; e < c->epochs; e++) amin = fmin(amin, fmin(c->train_acc[e], c->test_acc[e]));
    amin = floor(amin * 20 - 1) / 20; /* a 5% step below the lowest accuracy */
    if (amin < 0) amin = 0;
    panel loss = {70, 50, 380, 280, 0, c->epochs, 0, lmax > 0 ? ceil(lmax * 2) / 2 : 1}; /* 0.5 steps */
    panel acc = {540, 50, 380, 280, 1, c->epochs > 1 ? c->epochs : 2, amin, 1};
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='960' height='400' "
               "font-family='sans-serif'>\n<rect width='960' height='400' fill='white'/>\n");
    fprintf(f, "<text x='480' y='20' text-anchor='middle' font-size='13' fill='#555'>%s</text>\n", subtitle);
    svg_axes(f, &loss, "training loss", "cross-entropy", 5, "%.2f");
    svg_line(f, &loss, c->loss_x, c->loss_y, c->nloss, "#1f77b4", 0);
    svg_axes(f, &acc, "accuracy", "accuracy", 5, "%.2f");
    double *ex = malloc(sizeof(double) * (size_t)c->epochs);
    for (int e = 0; ex && e < c->epochs; e++) ex[e] = e + 1;
    if (ex) {
        svg_line(f, &acc, ex, c->train_acc, c->epochs, "#ff7f0e", 1);
        svg_line(f, &acc, ex, c->test_acc, c->epochs, "#2ca02c", 1);
    }
    free(ex);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' fill='#ff7f0e'>train</text>\n", acc.left + 10, acc.top + acc.h - 30);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12' fill='#2ca02c'>test</text>\n", acc.left + 10, acc.top + acc.h - 12);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}

/* ---- ranks: who trains what -------------------------------------------------------------- */

/* One rank's training: its device and comm (NULL when training alone), the shared data
 * sets (read only, so threads share them), and what rank 0 reports. */
typedef struct rank_run {
    const options *o;
    const dataset *train, *test;
    long ntrain;
    neat_device *dev;
    neat_comm *comm;
    int rank, world;
    double test_acc;
} rank_run;

/* Sum `n` counts over the ranks: a buffer of a copy in, an all-reduce, a copy out, run
 * once an epoch (floats hold counts exactly up to 2^24). Alone, the counts are the sums. */
static void sum_over_ranks(const rank_run *r, double *counts, int n) {
    if (!r->comm) return;
    float h[4];
    neat_tensor *t = tensor(r->dev, 1, n, 0, 0, 0, "counts");
    neat_cmdbuf *cb = NULL;
    for (int i = 0; i < n; i++) h[i] = (float)counts[i];
    ok(neat_cmdbuf_create(r->dev, &cb), "neat_cmdbuf_create(counts)");
    ok(neat_copy_from_host(cb, h, n, t), "record counts copy");
    ok(neat_all_reduce(cb, r->comm, NEAT_REDUCE_SUM, t, t), "record counts all-reduce");
    ok(neat_copy_to_host(cb, t, h, n), "record counts copy back");
    ok(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit(counts)");
    ok(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait(counts)");
    for (int i = 0; i < n; i++) counts[i] = h[i];
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(t);
}

/* Every rank starts from rank 0's parameters: one buffer of a broadcast per tensor. */
static void broadcast_parameters(const rank_run *r, lenet *net) {
    neat_cmdbuf *cb = NULL;
    ok(neat_cmdbuf_create(r->dev, &cb), "neat_cmdbuf_create(broadcast)");
    for (int l = 0; l < LAYERS; l++) {
        ok(neat_broadcast(cb, r->comm, 0, net->w[l], net->w[l]), "record weight broadcast");
        ok(neat_broadcast(cb, r->comm, 0, net->b[l], net->b[l]), "record bias broadcast");
    }
    ok(neat_cmdbuf_commit(cb), "neat_cmdbuf_commit(broadcast)");
    ok(neat_cmdbuf_wait(cb), "neat_cmdbuf_wait(broadcast)");
    neat_cmdbuf_destroy(cb);
}

/* ---- training --------------------------------------------------------------------------- */

/* The training loop of one rank (a thread's entry with --devices). */
static void *train_rank(void *arg) {
    rank_run *r = arg;
    const options *o = r->o;
    const dataset *train = r->train, *test = r->test;
    neat_device *dev = r->dev;
    const int lead = r->rank == 0, W = r->world;
    const long ntrain = r->ntrain, B = o->batch, steps = ntrain / (B * W);
    neat_device_props props;
    ok(neat_device_info(dev, &props), "neat_device_info");
    const char *backend = neat_backend_name(props.backend);
    if (lead) {
        printf("device: %s (%s), %ld training images in %ld batches of %ld, %ld test images",
               props.name, backend, ntrain, steps, B * W, test->count);
        if (W > 1) printf(", %d ranks of %ld images a batch", W, B);
        printf("\n");
        fflush(stdout);
    }

    uint64_t rng = o->seed;
    lenet net;
    lenet_create(dev, &net, o->precision, o->nhwc, &rng);
    if (r->comm) broadcast_parameters(r, &net);
    batch_state tr, ev;
    batch_create(dev, &tr, B, 1, o->precision, o->nhwc);
    batch_create(dev, &ev, EVAL_BATCH, 0, o->precision, o->nhwc);
    /* the float32 images (x32: the copy's destination), labels and hyper of each buffer */
    step_inputs in[2] = {{tr.x32, tr.labels, tensor(dev, 1, 2, 0, 0, 0, "hyper")},
                         {image(dev, NEAT_F32, o->nhwc, B, 1, IMG, IMG, "images"),
                          tensor(dev, 1, B, 0, 0, 0, "labels"),
                          tensor(dev, 1, 2, 0, 0, 0, "hyper")}};
    neat_tensor *scaler = NULL;
    if (o->precision == NEAT_F16) { /* [scale, found_inf, good steps], then only the device's */
        scaler = tensor(dev, 1, 3, 0, 0, 0, "loss scaler");
        upload(scaler, (const float[]){65536.0f, 0.0f, 0.0f}, 3, "loss scaler");
    }
    host_io io[2], eval_io;
    host_io_create(&io[0], B), host_io_create(&io[1], B), host_io_create(&eval_io, EVAL_BATCH);

    /* Recorded once, replayed for every batch. */
    neat_cmdbuf *step_cb[2] = {NULL, NULL}, *eval_cb = NULL;
    ok(neat_cmdbuf_create(dev, &step_cb[0]), "neat_cmdbuf_create(training step)");
    ok(neat_cmdbuf_create(dev, &step_cb[1]), "neat_cmdbuf_create(training step)");
    ok(neat_cmdbuf_create(dev, &eval_cb), "neat_cmdbuf_create(evaluation)");
    for (int b = 0; b < 2; b++) {
        batch_state sb = tr; /* the activations shared, the inputs the buffer's own */
        if (tr.x == tr.x32) sb.x = in[b].x; /* float32: the copy lands in the conv's input */
        sb.x32 = in[b].x, sb.labels = in[b].labels;
        record_train_step(step_cb[b], &net, &sb, in[b].hyper, scaler, &io[b], r->comm);
    }
    record_forward(eval_cb, &net, &ev, eval_io.x);
    ok(neat_copy_to_host(eval_cb, ev.logits32, eval_io.logits, ev.n * CLASSES),
       "record logits copy");

    long *order = malloc(sizeof(long) * (size_t)ntrain);
    long total = steps * o->epochs, warmup = total / 20 < 300 ? total / 20 : 300;
    long chunk = total / 200 > 1 ? total / 200 : 1;
    curves cv = {malloc(sizeof(double) * (size_t)(total / chunk + 1)),
                 malloc(sizeof(double) * (size_t)(total / chunk + 1)), 0,
                 malloc(sizeof(double) * (size_t)o->epochs), malloc(sizeof(double) * (size_t)o->epochs),
                 o->epochs};
    if (!order || !cv.loss_x || !cv.loss_y ||
        !cv.train_acc || !cv.test_acc)
        die("out of memory");
    for (long i = 0; i < ntrain; i++) order[i] = i;
    /* This rank's share of the test set (the counts are summed over the ranks). */
    long test_first = test->count * r->rank / W, test_last = test->count * (r->rank + 1) / W;

    int tty = lead && isatty(fileno(stderr));
    /* Steady state: the steps after each step buffer's first two submissions (the first
     * searches cuDNN's algorithms, the second captures the CUDA graph), as the benchmark's
     * replayed step is timed after its warm-up. */
    double train_time = 0, test_acc = 0, chunk_loss = 0, steady_time = 0;
    long steady_steps = 0;
    long t = 0, chunk_n = 0;
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        shuffle(order, ntrain, &rng);
        double t0 = now_s(), loss_sum = 0, device_s = 0, steady_t0 = t >= 4 ? t0 : -1;
        long correct = 0;
        /* Step k runs from buffer k % 2: batch k+1 is gathered and its buffer committed
         * (queued behind step k) before step k is waited for. Global batch k is
         * order[k*B*W ..), this rank's rows of it start at r*B. */
        for (long k = -1; k < steps; k++) {
            long next = k + 1;
            if (next < steps) {
                host_io *n = &io[next & 1];
                gather(train, order + (next * W + r->rank) * B, B, B, n->x, n->labels);
                n->hyper[0] = learning_rate(o->lr, t + next + 1, warmup, total);
                n->hyper[1] = (float)(t + next + 1);
                ok(neat_cmdbuf_commit(step_cb[next & 1]), "neat_cmdbuf_commit(training step)");
            }
            if (k < 0) continue;
            host_io *cur = &io[k & 1];
            ok(neat_cmdbuf_wait(step_cb[k & 1]), "neat_cmdbuf_wait(training step)");
            double step_s;
            if (neat_cmdbuf_device_time(step_cb[k & 1], &step_s) == NEAT_OK) device_s += step_s;
            if (t + k == 3) steady_t0 = now_s();
            else if (t + k > 3) steady_steps++;
            float loss = cur->loss;
            if (!isfinite(loss))
                die("the loss diverged at step %ld (lr %g): try a smaller --lr", t + k + 1,
                    cur->hyper[0]);
            correct += count_correct(cur->logits, cur->labels, B);
            loss_sum += loss;
            chunk_loss += loss;
            if (++chunk_n == chunk) {
                cv.loss_x[cv.nloss] = (double)(t + k + 1) / (double)steps;
                cv.loss_y[cv.nloss++] = chunk_loss / (double)chunk_n;
                chunk_loss = 0, chunk_n = 0;
            }
            if (tty && (k % 10 == 9 || k + 1 == steps))
                progress(epoch, o->epochs, k + 1, steps, (double)((k + 1) * B * W) / (now_s() - t0),
                         loss_sum / (double)(k + 1));
        }
        double dt = now_s() - t0;
        train_time += dt;
        if (steady_t0 >= 0) steady_time += now_s() - steady_t0;
        if (tty) fputc('\n', stderr);
        double te0 = now_s();
        t += steps;
        double counts[2] = {(double)correct,
                            (double)evaluate(eval_cb, &ev, &eval_io, test, test_first, test_last)};
        sum_over_ranks(r, counts, 2);
        test_acc = counts[1] / (double)test->count;
        cv.train_acc[epoch - 1] = counts[0] / (double)(steps * B * W);
        cv.test_acc[epoch - 1] = test_acc;
        if (lead) {
            printf("epoch %d/%d: loss %.4f  train accuracy %.4f  test accuracy %.4f  "
                   "(%.1f s, %.1f images/s, device %.3f of %.3f ms a step; evaluation %.1f s)\n",
                   epoch, o->epochs, loss_sum / (double)steps, cv.train_acc[epoch - 1], test_acc,
                   dt, (double)(steps * B * W) / dt, 1e3 * device_s / (double)steps,
                   1e3 * dt / (double)steps, now_s() - te0);
            fflush(stdout);
        }
    }

    if (lead) {
        char subtitle[256];
        snprintf(subtitle, sizeof subtitle, "neatml LeNet on Fashion-MNIST: %s, batch %ld%s, lr %g, final test accuracy %.4f",
                 props.name, B * W, W > 1 ? " (all ranks)" : "", o->lr, test_acc);
        if (!write_svg(o->plot, &cv, subtitle)) die("%s: cannot write the plot", o->plot);
        fprintf(stderr, "plot written to %s\n", o->plot);
        printf("final test_accuracy=%.4f epochs=%d backend=%s images_per_s=%.1f "
               "steady_images_per_s=%.1f ranks=%d",
               test_acc, o->epochs, backend, (double)(steps * B * W * o->epochs) / train_time,
               steady_time > 0 ? (double)(steady_steps * B * W) / steady_time : 0.0, W);
        if (o->precision != NEAT_F32)
            printf(" precision=%s", o->precision == NEAT_BF16 ? "bf16" : "fp16");
        if (o->nhwc) printf(" layout=nhwc");
        if (scaler) {
            float s[3];
            ok(neat_tensor_read(scaler, s, 3), "neat_tensor_read(loss scaler)");
            printf(" loss_scale=%g", (double)s[0]);
        }
        printf("\n");
        fflush(stdout);
    }
    r->test_acc = test_acc;

    neat_cmdbuf_destroy(step_cb[0]);
    neat_cmdbuf_destroy(step_cb[1]);
    neat_cmdbuf_destroy(eval_cb);
    neat_tensor_destroy(in[0].hyper); /* in[0]'s images and labels are tr's */
    neat_tensor_destroy(in[1].x), neat_tensor_destroy(in[1].labels);
    neat_tensor_destroy(in[1].hyper);
    neat_tensor_destroy(scaler);
    batch_destroy(&tr);
    batch_destroy(&ev);
    lenet_destroy(&net);
    host_io_destroy(&io[0]), host_io_destroy(&io[1]), host_io_destroy(&eval_io);
    free(order);
    free(cv.loss_x), free(cv.loss_y), free(cv.train_acc), free(cv.test_acc);
    return NULL;
}

/* ---- main: one device, one device of several processes, or several devices ------------- */

static int env_int(const char *name, const char *fallback, int dflt) {
    const char *v = getenv(name);
    if (!v && fallback) v = getenv(fallback);
    return v && *v ? atoi(v) : dflt;
}

/* Rank 0 makes the id and writes it to `path` (to path.tmp, then renamed, so that readers
 * never see half of it); the others poll for the file, up to 300 s. */
static void share_id(neat_backend backend, int rank, const char *path, neat_comm_id *id) {
    char text[300];
    if (rank == 0) {
        ok(neat_comm_id_create(backend, id), "neat_comm_id_create");
        ok(neat_comm_id_to_string(id, text, sizeof text), "neat_comm_id_to_string");
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
            die("%s: cannot write the comm id", path);
        return;
    }
    for (int i = 0; i < 30000; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int got = fgets(text, sizeof text, f) != NULL;
            fclose(f);
            if (got && neat_comm_id_from_string(text, id) == NEAT_OK) return;
        }
        usleep(10000);
    }
    die("rank %d: no comm id in %s after 300 s (is rank 0 running?)", rank, path);
}

int main(int argc, char **argv) {
    options o = parse_options(argc, argv);
    int ndev = o.devices ? o.devices : 1;
    neat_device *devs[MAX_DEVICES] = {NULL};
    neat_comm *comms[MAX_DEVICES] = {NULL};
    rank_run runs[MAX_DEVICES];
    int rank = 0, world = ndev;
    if (o.devices) {
        /* One process drives N local devices: rank i on device i, one thread each. */
        for (int i = 0; i < ndev; i++) ok(neat_device_create(o.backend, i, &devs[i]), "neat_device_create");
        ok(neat_comm_create_all(ndev, devs, comms), "neat_comm_create_all");
    } else {
        /* One process per device: the rank from the flags, the launcher (torchrun's names)
         * or mpirun; the GPU from LOCAL_RANK (the rank on this machine). */
        rank = o.rank >= 0 ? o.rank : env_int("RANK", "OMPI_COMM_WORLD_RANK", 0);
        world = o.world >= 1 ? o.world : env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", 1);
        if (world < 1 || rank < 0 || rank >= world) die("rank %d of a world of %d", rank, world);
        int local = env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", rank);
        ok(neat_device_create(o.backend, o.backend == NEAT_BACKEND_CPU ? 0 : local, &devs[0]),
           "neat_device_create");
        neat_device_props props;
        ok(neat_device_info(devs[0], &props), "neat_device_info");
        if (world > 1) {
            const char *path = o.init_file ? o.init_file : getenv("NEATML_INIT_FILE");
            if (!path) die("rank %d of %d: no --init-file (or NEATML_INIT_FILE) to share the comm id", rank, world);
            neat_comm_id id;
            share_id(props.backend, rank, path, &id);
            ok(neat_comm_create(devs[0], &id, world, rank, &comms[0]), "neat_comm_create");
            if (rank == 0) remove(path); /* every rank has joined: the next run starts afresh */
        }
    }

    dataset train = load_set(o.data, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz");
    dataset test = load_set(o.data, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
    long ntrain = o.limit && o.limit < train.count ? o.limit : train.count;
    if (ntrain / ((long)o.batch * world) == 0)
        die("%ld training images do not fill one batch of %d x %d", ntrain, world, o.batch);
    for (int i = 0; i < ndev; i++)
        runs[i] = (rank_run){&o, &train, &test, ntrain, devs[i], comms[i], o.devices ? i : rank,
                             world, 0};
    if (o.devices) {
        /* A collective's submission may wait for its peers: each device's own thread. */
        pthread_t threads[MAX_DEVICES];
        for (int i = 0; i < ndev; i++)
            if (pthread_create(&threads[i], NULL, train_rank, &runs[i])) die("pthread_create failed");
        for (int i = 0; i < ndev; i++) pthread_join(threads[i], NULL);
    } else {
        train_rank(&runs[0]);
    }

    for (int i = 0; i < ndev; i++) neat_comm_destroy(comms[i]), neat_device_destroy(devs[i]);
    free(train.images), free(train.labels), free(test.images), free(test.labels);
    return 0;
}
