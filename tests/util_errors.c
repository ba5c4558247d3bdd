/* util_errors.c — devices, tensors and the one-call checker of the error-contract tests. */
#include "util_errors.h"

#include <stdlib.h>
#include <string.h>

neat_device *err_dev, *err_dev2;
neat_tensor *err_sentinel;
int err_ncases;

int err_open(void) {
    if (neat_device_create(NEAT_BACKEND_CPU, 0, &err_dev) != NEAT_OK ||
        neat_device_create(NEAT_BACKEND_CPU, 0, &err_dev2) != NEAT_OK) {
        CHECK(0, "cannot open two CPU devices: %s", neat_last_error());
        return 0;
    }
    err_sentinel = err_make(err_dev, 1, (int64_t[]){4});
    return 1;
}

void err_close(void) {
    neat_tensor_destroy(err_sentinel);
    neat_device_destroy(err_dev2);
    neat_device_destroy(err_dev);
}

neat_tensor *err_make(neat_device *d, int ndim, const int64_t *shape) {
    neat_tensor *t = NULL;
    neat_status st = neat_tensor_create(d, ndim, shape, &t);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_create (setup)");
    return t;
}

neat_tensor *err_make_filled(int ndim, const int64_t *shape, float value) {
    neat_tensor *t = err_make(err_dev, ndim, shape);
    int64_t n = 0;
    neat_tensor_numel(t, &n);
    float *h = malloc(sizeof(float) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) h[i] = value;
    neat_status st = neat_tensor_write(t, h, n);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_write (setup)");
    free(h);
    return t;
}

neat_tensor *err_ts(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    return err_make_filled(ndim, shape, 1.0f);
}

static float pattern_value(int k, int64_t j) {
    return 1000.0f + 16.0f * k + 0.25f * (float)(j % 64);
}

neat_cmdbuf *err_case_begin(neat_tensor *const *outs, int nouts) {
    for (int k = 0; k < nouts; k++) {
        int64_t n = 0;
        neat_tensor_numel(outs[k], &n);
        float *h = malloc(sizeof(float) * (size_t)(n + 1));
        for (int64_t j = 0; j < n; j++) h[j] = pattern_value(k, j);
        neat_status st = neat_tensor_write(outs[k], h, n);
        if (st != NEAT_OK) CHECK_OK(st, "pattern write (setup)");
        free(h);
    }
    static const float zeros[4];
    neat_tensor_write(err_sentinel, zeros, 4);
    neat_cmdbuf *cb = NULL;
    neat_status st = neat_cmdbuf_create(err_dev, &cb);
    if (st != NEAT_OK) CHECK_OK(st, "neat_cmdbuf_create (setup)");
    st = neat_fill(cb, err_sentinel, 42.0f);
    if (st != NEAT_OK) CHECK_OK(st, "neat_fill of the sentinel (setup)");
    return cb;
}

void err_case_end(neat_cmdbuf *cb, neat_status st, neat_status want, const char *sub,
                  const char *what, neat_tensor *const *outs, int nouts, int64_t want_ops) {
    err_ncases++;
    CHECK_STATUS(st, want, what);
    if (want != NEAT_OK)
        CHECK(strstr(neat_last_error(), sub) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              neat_last_error(), sub);
    int64_t nops = -1;
    neat_cmdbuf_op_count(cb, &nops);
    CHECK(nops == want_ops, "%s: buffer holds %lld ops, want %lld", what, (long long)nops,
          (long long)want_ops);
    CHECK_OK(neat_cmdbuf_commit(cb), what);
    CHECK_OK(neat_cmdbuf_wait(cb), what);
    if (want != NEAT_OK) {
        for (int k = 0; k < nouts; k++) {
            int64_t n = 0;
            neat_tensor_numel(outs[k], &n);
            float *got = malloc(sizeof(float) * (size_t)(n + 1)),
                  *exp = malloc(sizeof(float) * (size_t)(n + 1));
            for (int64_t j = 0; j < n; j++) exp[j] = pattern_value(k, j);
            neat_status rs = neat_tensor_read(outs[k], got, n);
            CHECK(rs == NEAT_OK && memcmp(got, exp, sizeof(float) * (size_t)n) == 0,
                  "%s: output %d was touched by a rejected call", what, k);
            free(got);
            free(exp);
        }
    }
    float s[4] = {0};
    neat_tensor_read(err_sentinel, s, 4);
    CHECK(s[0] == 42 && s[1] == 42 && s[2] == 42 && s[3] == 42,
          "%s: the valid op of the buffer did not run", what);
    neat_cmdbuf_destroy(cb);
}
