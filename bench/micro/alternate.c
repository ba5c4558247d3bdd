/*
 * alternate.c — does a step cost more on the device when two command buffers alternate
 * than when one is replayed? (issue 10: the Fashion-MNIST example, which alternates two step
 * buffers, ran 0.346 ms of device time a step where the bench's one replayed buffer ran
 * 0.327 ms.) Public API only; CUDA device 0.
 *
 * A step is OPS elementwise ops over tensors of N floats (about the LeNet step's kernel
 * count and bytes), optionally after a fallible op (a cross-entropy over labels: the ops
 * after it then sit in the graph's conditional bodies, as in a training step), optionally
 * with scratch-using ops (sums: each buffer then holds scratch of its own). Each pattern runs
 * REPS steps after WARM, reporting the mean of neat_cmdbuf_device_time per step and the wall
 * time per step:
 *   one-serial   one buffer: commit, wait
 *   one-2deep    one buffer committed twice before each wait (the wait waits for both)
 *   two-serial   two buffers recorded alike: commit A, wait A, commit B, wait B
 *   two-pipe     two buffers: commit B while A runs, then wait A (the example's loop)
 *
 *   gcc -O2 -std=c11 -Iinclude bench/micro/alternate.c -Lbuild -lneatml -o /tmp/alternate
 *   LD_LIBRARY_PATH=build /tmp/alternate [guard 0|1] [sums 0|1]
 */
#define _POSIX_C_SOURCE 200809L
#include <neatml.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define OPS 48
#define N (1 << 20)
#define WARM 50
#define REPS 400

static void ok(neat_status st, const char *what) {
    if (st == NEAT_OK) return;
    fprintf(stderr, "%s: %s (%s)\n", what, neat_status_string(st), neat_last_error());
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct state {
    neat_tensor *x[4], *s, *logits, *labels, *loss;
} state;

static neat_cmdbuf *record(neat_device *dev, state *t, int guard, int sums) {
    neat_cmdbuf *cb;
    ok(neat_cmdbuf_create(dev, &cb), "cmdbuf");
    if (guard) ok(neat_softmax_cross_entropy(cb, t->logits, t->labels, t->loss), "xent");
    for (int i = 0; i < OPS; i++) {
        if (sums && i % 8 == 7)
            ok(neat_sum_all(cb, t->x[i % 3], t->s), "sum");
        else
            ok(neat_add(cb, t->x[i % 3], t->x[(i + 1) % 3], t->x[3]), "add");
    }
    return cb;
}

static void report(const char *name, double dev_s, int nsteps, double wall) {
    printf("%-11s device %.4f ms/step  wall %.4f ms/step\n", name, 1e3 * dev_s / nsteps,
           1e3 * wall / nsteps);
}

int main(int argc, char **argv) {
    int guard = argc > 1 ? atoi(argv[1]) : 1, sums = argc > 2 ? atoi(argv[2]) : 1;
    neat_device *dev;
    ok(neat_device_create(NEAT_BACKEND_CUDA, 0, &dev), "device");
    state t;
    int64_t n[1] = {N}, one[1] = {1}, lg[2] = {128, 10}, lb[1] = {128};
    float *h = calloc(N, sizeof *h);
    for (int i = 0; i < 4; i++) {
        ok(neat_tensor_create(dev, 1, n, &t.x[i]), "x");
        ok(neat_tensor_write(t.x[i], h, N), "x");
    }
    ok(neat_tensor_create_zeros(dev, 1, one, &t.s), "s");
    ok(neat_tensor_create_zeros(dev, 2, lg, &t.logits), "logits");
    ok(neat_tensor_create_zeros(dev, 1, lb, &t.labels), "labels"); /* class 0: valid */
    ok(neat_tensor_create_zeros(dev, 1, one, &t.loss), "loss");
    neat_cmdbuf *a = record(dev, &t, guard, sums), *b = record(dev, &t, guard, sums);
    printf("guard %d sums %d: %d ops of %d floats a step\n", guard, sums, OPS + guard, N);
    for (int round = 0; round < 2; round++) {
        for (int pat = 0; pat < 4; pat++) {
            double dev_s = 0, t0 = 0, s;
            int steps = 0;
            for (int k = -WARM; k < REPS; k++) {
                if (k == 0) dev_s = 0, steps = 0, t0 = now();
                if (pat == 0) {
                    ok(neat_cmdbuf_commit(a), "commit");
                    ok(neat_cmdbuf_wait(a), "wait");
                    ok(neat_cmdbuf_device_time(a, &s), "time");
                    dev_s += s, steps++;
                } else if (pat == 1) {
                    ok(neat_cmdbuf_commit(a), "commit");
                    ok(neat_cmdbuf_commit(a), "commit");
                    ok(neat_cmdbuf_wait(a), "wait");
                    ok(neat_cmdbuf_device_time(a, &s), "time"); /* the latest submission */
                    dev_s += 2 * s, steps += 2;
                } else if (pat == 2) {
                    neat_cmdbuf *c = k & 1 ? b : a;
                    ok(neat_cmdbuf_commit(c), "commit");
                    ok(neat_cmdbuf_wait(c), "wait");
                    ok(neat_cmdbuf_device_time(c, &s), "time");
                    dev_s += s, steps++;
                } else {
                    neat_cmdbuf *cur = k & 1 ? b : a, *next = k & 1 ? a : b;
                    if (k == -WARM) ok(neat_cmdbuf_commit(cur), "commit");
                    ok(neat_cmdbuf_commit(next), "commit");
                    ok(neat_cmdbuf_wait(cur), "wait");
                    ok(neat_cmdbuf_device_time(cur, &s), "time");
                    dev_s += s, steps++;
                }
            }
            double wall = now() - t0;
            if (pat == 3) ok(neat_cmdbuf_wait(REPS & 1 ? b : a), "wait");
            static const char *names[] = {"one-serial", "one-2deep", "two-serial", "two-pipe"};
            report(names[pat], dev_s, steps, wall);
        }
    }
    neat_cmdbuf_destroy(a);
    neat_cmdbuf_destroy(b);
    for (int i = 0; i < 4; i++) neat_tensor_destroy(t.x[i]);
    neat_tensor_destroy(t.s), neat_tensor_destroy(t.logits), neat_tensor_destroy(t.labels);
    neat_tensor_destroy(t.loss);
    free(h);
    neat_device_destroy(dev);
    return 0;
}
