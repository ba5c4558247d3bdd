/*
 * quickstart.c — the smallest complete neatml program: open the default device, record a
 * small MLP and a small CNN forward into one command buffer, run it, print a checksum.
 *
 *   MLP: x [8,32] -> linear(32->64)+relu -> linear(64->10) -> softmax
 *   CNN: img [2,3,16,16] -> conv 3x3 (3->8, pad 1)+relu -> maxpool 2x2 -> sum over all
 */
#include <neatml.h>

#include <stdio.h>
#include <stdlib.h>

#define TRY(call)                                                                                  \
    do {                                                                                           \
        neat_status st_ = (call);                                                                  \
        if (st_ != NEAT_OK) {                                                                      \
            fprintf(stderr, "%s failed: %s: %s\n", #call, neat_status_string(st_),                 \
                    neat_last_error());                                                            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A tensor of the given shape filled with a deterministic pattern in [-0.5, 0.5). */
static neat_tensor *filled(neat_device *dev, int ndim, const int64_t *shape, unsigned seed) {
    neat_tensor *t;
    TRY(neat_tensor_create(dev, ndim, shape, &t));
    int64_t n;
    TRY(neat_tensor_numel(t, &n));
    float *host = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        host[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    TRY(neat_tensor_write(t, host, n));
    free(host);
    return t;
}

static double checksum(const neat_tensor *t, int64_t *n) {
    TRY(neat_tensor_numel(t, n));
    float *host = malloc(sizeof(float) * (size_t)*n);
    TRY(neat_tensor_read(t, host, *n));
    double s = 0;
    for (int64_t i = 0; i < *n; i++) s += host[i] * (double)((i % 7) + 1);
    free(host);
    return s;
}

int main(void) {
    neat_device *dev;
    TRY(neat_device_create(NEAT_BACKEND_AUTO, 0, &dev));
    neat_device_props props;
    TRY(neat_device_info(dev, &props));
    static const char *backends[] = {"auto", "cpu", "cuda", "metal"};
    printf("backend: %s (%s)\n", backends[props.backend], props.name);

    /* MLP */
    neat_tensor *x = filled(dev, 2, (int64_t[]){8, 32}, 1);
    neat_tensor *w1 = filled(dev, 2, (int64_t[]){64, 32}, 2),
                *b1 = filled(dev, 1, (int64_t[]){64}, 3);
    neat_tensor *w2 = filled(dev, 2, (int64_t[]){10, 64}, 4),
                *b2 = filled(dev, 1, (int64_t[]){10}, 5);
    neat_tensor *h, *logits, *probs;
    TRY(neat_matrix_create(dev, 8, 64, &h));
    TRY(neat_matrix_create(dev, 8, 10, &logits));
    TRY(neat_matrix_create(dev, 8, 10, &probs));

    /* CNN */
    neat_tensor *img = filled(dev, 4, (int64_t[]){2, 3, 16, 16}, 6);
    neat_tensor *k = filled(dev, 4, (int64_t[]){8, 3, 3, 3}, 7),
                *kb = filled(dev, 1, (int64_t[]){8}, 8);
    neat_tensor *feat, *pooled, *total;
    TRY(neat_tensor_create(dev, 4, (int64_t[]){2, 8, 16, 16}, &feat));
    TRY(neat_tensor_create(dev, 4, (int64_t[]){2, 8, 8, 8}, &pooled));
    TRY(neat_tensor_create(dev, 1, (int64_t[]){1}, &total));

    neat_cmdbuf *cb;
    TRY(neat_cmdbuf_create(dev, &cb));
    TRY(neat_linear_forward(cb, NEAT_ACT_RELU, x, w1, b1, h));
    TRY(neat_linear_forward(cb, NEAT_ACT_NONE, h, w2, b2, logits));
    TRY(neat_softmax(cb, logits, probs));
    neat_conv2d_desc conv = neat_conv2d_desc_make(3, 3, 1, 1);
    TRY(neat_conv2d_forward(cb, &conv, NEAT_ACT_RELU, img, k, kb, feat));
    neat_pool2d_desc pool = {.kernel_h = 2, .kernel_w = 2, .stride_h = 2, .stride_w = 2};
    TRY(neat_maxpool2d(cb, &pool, feat, pooled));
    TRY(neat_sum_all(cb, pooled, total));
    TRY(neat_cmdbuf_commit(cb));
    TRY(neat_cmdbuf_wait(cb));

    int64_t n;
    double s = checksum(probs, &n);
    printf("mlp: x 8x32 -> probs 8x10 (%lld values), checksum %.6f\n", (long long)n, s);
    s = checksum(pooled, &n);
    printf("cnn: img 2x3x16x16 -> pooled 2x8x8x8 (%lld values), checksum %.6f\n", (long long)n, s);
    float sum;
    TRY(neat_tensor_read(total, &sum, 1));
    printf("cnn: sum of pooled = %.6f\n", sum);

    neat_memory_stats mem;
    TRY(neat_device_memory_stats(dev, &mem));
    printf("memory: %lld bytes in use, peak %lld\n", (long long)mem.in_use, (long long)mem.peak);

    neat_cmdbuf_destroy(cb);
    neat_tensor *all[] = {x, w1, b1, w2, b2, h, logits, probs, img, k, kb, feat, pooled, total};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) neat_tensor_destroy(all[i]);
    neat_device_destroy(dev);
    return 0;
}
