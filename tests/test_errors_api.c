/*
 * test_errors_api.c — the error contract of everything that is not an op, on the CPU
 * device: status strings and the version, devices (bad arguments, NEATML_BACKEND, a
 * destroyed device), tensors (bad shapes, sizes that overflow or do not fit, reads and
 * writes of the wrong count, stale handles), command buffers (misuse, a tensor destroyed
 * after recording, an asynchronous failure reported by wait, stale handles). Each
 * assertion checks the exact status and a substring of neat_last_error(); destroying NULL
 * or a stale handle is ignored.
 */
#include "harness.h"
#include "util_errors.h"

#include <stdlib.h>
#include <string.h>

#ifdef __SANITIZE_ADDRESS__
/* test_tensors asks for 32 TiB and expects OUT_OF_MEMORY: let ASan's allocator say no
 * instead of aborting the process. */
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

/* ---- status, devices, tensors, command buffers ---------------------------------------- */

#define CHECK_FAILS(call, want, sub)                                                               \
    do {                                                                                           \
        neat_status st_ = (call);                                                                  \
        CHECK_STATUS(st_, want, #call);                                                            \
        CHECK(strstr(neat_last_error(), sub) != NULL, "%s: message \"%s\" lacks \"%s\"", #call,    \
              neat_last_error(), sub);                                                             \
    } while (0)

static void test_status_and_version(void) {
    static const struct {
        neat_status s;
        const char *name;
    } names[] = {{NEAT_OK, "NEAT_OK"},
                 {NEAT_ERR_INVALID_ARGUMENT, "NEAT_ERR_INVALID_ARGUMENT"},
                 {NEAT_ERR_SHAPE_MISMATCH, "NEAT_ERR_SHAPE_MISMATCH"},
                 {NEAT_ERR_DTYPE_MISMATCH, "NEAT_ERR_DTYPE_MISMATCH"},
                 {NEAT_ERR_DEVICE_MISMATCH, "NEAT_ERR_DEVICE_MISMATCH"},
                 {NEAT_ERR_UNSUPPORTED, "NEAT_ERR_UNSUPPORTED"},
                 {NEAT_ERR_OUT_OF_MEMORY, "NEAT_ERR_OUT_OF_MEMORY"},
                 {NEAT_ERR_INVALID_HANDLE, "NEAT_ERR_INVALID_HANDLE"},
                 {NEAT_ERR_BACKEND_ERROR, "NEAT_ERR_BACKEND_ERROR"},
                 {NEAT_ERR_INTERNAL, "NEAT_ERR_INTERNAL"},
                 {NEAT_ERR_TIMEOUT, "NEAT_ERR_TIMEOUT"},
                 {(neat_status)1, "unknown status"},
                 {(neat_status)-11, "unknown status"},
                 {(neat_status)-1000, "unknown status"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *got = neat_status_string(names[i].s);
        CHECK(got && strcmp(got, names[i].name) == 0, "neat_status_string(%d) = %s, want %s",
              (int)names[i].s, got ? got : "(null)", names[i].name);
    }
    CHECK(neat_version_number() == NEAT_VERSION_NUMBER, "neat_version_number() = %d, header %d",
          neat_version_number(), NEAT_VERSION_NUMBER);
}

static void test_devices(void) {
    neat_device *d = NULL;
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, 0, NULL), NEAT_ERR_INVALID_ARGUMENT,
                "neat_device_create: out is NULL");
    CHECK_FAILS(neat_device_create((neat_backend)7, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "backend 7 is not a neat_backend");
    CHECK_FAILS(neat_device_create((neat_backend)-1, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "backend -1 is not a neat_backend");
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, -1, &d), NEAT_ERR_INVALID_ARGUMENT,
                "index -1 is negative");
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, 1, &d), NEAT_ERR_UNSUPPORTED, "index 0");
#ifndef __APPLE__
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_METAL, 0, &d), NEAT_ERR_UNSUPPORTED, "metal");
#endif
    CHECK(d == NULL, "a failed neat_device_create wrote its out-parameter");

    /* NEATML_BACKEND steers AUTO: a bad name is refused, "cpu" gives the CPU. */
    const char *saved = getenv("NEATML_BACKEND");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("NEATML_BACKEND", "bogus", 1);
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_AUTO, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "NEATML_BACKEND=\"bogus\"");
    setenv("NEATML_BACKEND", "cpu", 1);
    CHECK_OK(neat_device_create(NEAT_BACKEND_AUTO, 0, &d), "AUTO with NEATML_BACKEND=cpu");
    neat_device_props props;
    CHECK_OK(neat_device_info(d, &props), "neat_device_info");
    CHECK(props.backend == NEAT_BACKEND_CPU, "NEATML_BACKEND=cpu opened backend %d",
          (int)props.backend);
    /* AUTO never falls back silently: a CPU opened where CUDA is built says why CUDA did not
     * open (no GPU here), and a device opened first try has nothing to say. */
    unsetenv("NEATML_BACKEND");
    neat_device *a = NULL;
    CHECK_OK(neat_device_create(NEAT_BACKEND_AUTO, 0, &a), "AUTO");
    neat_device_props ap;
    if (a && neat_device_info(a, &ap) == NEAT_OK) {
        if (ap.backend == NEAT_BACKEND_CPU && neat_backend_is_built(NEAT_BACKEND_CUDA))
            CHECK(strstr(ap.selection, "cuda: neat_device_create: ") != NULL,
                  "AUTO fell back to the CPU; selection \"%s\" does not say why cuda did not open",
                  ap.selection);
        if (ap.backend == NEAT_BACKEND_CUDA)
            CHECK(ap.selection[0] == 0, "AUTO opened cuda first; selection \"%s\"", ap.selection);
    }
    neat_device_destroy(a);
    if (keep)
        setenv("NEATML_BACKEND", keep, 1);
    else
        unsetenv("NEATML_BACKEND");
    free(keep);

    CHECK_FAILS(neat_device_info(d, NULL), NEAT_ERR_INVALID_ARGUMENT,
                "neat_device_info: out is NULL");
    CHECK_FAILS(neat_device_info(NULL, &props), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_device_set_math_mode(d, (neat_math_mode)5), NEAT_ERR_INVALID_ARGUMENT,
                "mode 5 is not a neat_math_mode");
    CHECK_FAILS(neat_device_memory_stats(d, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    neat_device_destroy(d);
    /* a destroyed device: every use is INVALID_HANDLE, destroying it again is ignored */
    neat_memory_stats ms;
    neat_tensor *t = NULL;
    neat_cmdbuf *cb = NULL;
    CHECK_FAILS(neat_device_info(d, &props), NEAT_ERR_INVALID_HANDLE, "dev is not a live device");
    CHECK_FAILS(neat_device_memory_stats(d, &ms), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_device_synchronize(d), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_device_trim(d), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_matrix_create(d, 2, 2, &t), NEAT_ERR_INVALID_HANDLE,
                "dev is not a live device");
    CHECK_FAILS(neat_cmdbuf_create(d, &cb), NEAT_ERR_INVALID_HANDLE, "dev is not a live device");
    CHECK_FAILS(neat_device_info((neat_device *)err_sentinel, &props), NEAT_ERR_INVALID_HANDLE,
                "dev is not a live device");

    /* destroy functions ignore NULL and stale handles and leave the last error alone */
    neat_device_destroy(d);
    neat_device_destroy(NULL);
    neat_tensor_destroy(NULL);
    neat_cmdbuf_destroy(NULL);
    CHECK(strstr(neat_last_error(), "dev is not a live device") != NULL,
          "a destroy of NULL/stale handles changed the last error to \"%s\"", neat_last_error());
}

static void test_tensors(void) {
    neat_tensor *t = NULL;
    const int64_t neg[2] = {2, -3}, big[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    const int64_t bytes_over[1] = {(int64_t)1 << 62}, huge[1] = {(int64_t)1 << 43};
    const int64_t five[5] = {1, 1, 1, 1, 1}, two[2] = {2, 3};
    CHECK_FAILS(neat_tensor_create(NULL, 2, two, &t), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_tensor_create(err_dev, 2, two, NULL), NEAT_ERR_INVALID_ARGUMENT,
                "out is NULL");
    CHECK_FAILS(neat_tensor_create(err_dev, 2, NULL, &t), NEAT_ERR_INVALID_ARGUMENT,
                "shape is NULL");
    CHECK_FAILS(neat_tensor_create(err_dev, 5, five, &t), NEAT_ERR_INVALID_ARGUMENT,
                "ndim 5 is outside 0..4");
    CHECK_FAILS(neat_tensor_create(err_dev, -1, two, &t), NEAT_ERR_INVALID_ARGUMENT, "ndim -1");
    CHECK_FAILS(neat_tensor_create(err_dev, 2, neg, &t), NEAT_ERR_INVALID_ARGUMENT,
                "shape[1] is -3, negative");
    CHECK_FAILS(neat_matrix_create(err_dev, -1, 4, &t), NEAT_ERR_INVALID_ARGUMENT,
                "shape[0] is -1");
    CHECK_FAILS(neat_tensor_create(err_dev, 2, big, &t), NEAT_ERR_INVALID_ARGUMENT, "overflows");
    CHECK_FAILS(neat_tensor_create(err_dev, 1, bytes_over, &t), NEAT_ERR_INVALID_ARGUMENT,
                "overflows");
    CHECK_FAILS(neat_tensor_create(err_dev, 1, huge, &t), NEAT_ERR_OUT_OF_MEMORY, "");
    CHECK(t == NULL, "a failed neat_tensor_create wrote its out-parameter");
    CHECK_OK(neat_tensor_create(err_dev, 0, NULL, &t), "a scalar with shape NULL");
    neat_tensor_destroy(t);

    neat_tensor *m = err_ts(2, 2, 3, 0, 0), *v = NULL;
    float buf[6] = {0};
    int nd;
    int64_t shape[4], n;
    const int64_t wrong[2] = {4, 2}, good[1] = {6};
    CHECK_FAILS(neat_tensor_write(m, buf, 5), NEAT_ERR_SHAPE_MISMATCH,
                "t is 2x3 (6 elements), count is 5");
    CHECK_FAILS(neat_tensor_read(m, buf, 7), NEAT_ERR_SHAPE_MISMATCH, "count is 7");
    CHECK_FAILS(neat_tensor_write(m, buf, -1), NEAT_ERR_INVALID_ARGUMENT, "count -1 is negative");
    CHECK_FAILS(neat_tensor_write(m, NULL, 6), NEAT_ERR_INVALID_ARGUMENT, "is NULL");
    CHECK_FAILS(neat_tensor_read(m, NULL, 6), NEAT_ERR_INVALID_ARGUMENT, "is NULL");
    CHECK_FAILS(neat_tensor_write(NULL, buf, 6), NEAT_ERR_INVALID_ARGUMENT, "t is NULL");
    CHECK_FAILS(neat_tensor_view(m, 2, wrong, &v), NEAT_ERR_SHAPE_MISMATCH,
                "t is 2x3 (6 elements), the new shape has 8");
    CHECK_FAILS(neat_tensor_view(m, 1, good, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(neat_tensor_shape(m, NULL, shape), NEAT_ERR_INVALID_ARGUMENT, "ndim is NULL");
    CHECK_FAILS(neat_tensor_shape(m, &nd, NULL), NEAT_ERR_INVALID_ARGUMENT, "shape is NULL");
    CHECK_FAILS(neat_tensor_numel(m, NULL), NEAT_ERR_INVALID_ARGUMENT, "numel is NULL");
    neat_tensor *z = err_ts(2, 0, 5, 0, 0);
    CHECK_OK(neat_tensor_write(z, NULL, 0), "writing 0 floats from NULL into a 0x5 tensor");
    CHECK_OK(neat_tensor_read(z, NULL, 0), "reading 0 floats into NULL from a 0x5 tensor");
    neat_tensor_destroy(m);
    CHECK_FAILS(neat_tensor_write(m, buf, 6), NEAT_ERR_INVALID_HANDLE, "t is not a live tensor");
    CHECK_FAILS(neat_tensor_read(m, buf, 6), NEAT_ERR_INVALID_HANDLE, "t is not a live tensor");
    CHECK_FAILS(neat_tensor_shape(m, &nd, shape), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_numel(m, &n), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_view(m, 1, good, &v), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_numel((neat_tensor *)err_dev, &n), NEAT_ERR_INVALID_HANDLE,
                "not a live tensor");
    neat_tensor_destroy(m); /* again: ignored */
    neat_tensor_destroy(z);
}

static void test_cmdbufs(void) {
    neat_cmdbuf *cb = NULL;
    int64_t n;
    CHECK_FAILS(neat_cmdbuf_create(NULL, &cb), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_cmdbuf_create(err_dev, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(neat_cmdbuf_commit(NULL), NEAT_ERR_INVALID_ARGUMENT,
                "neat_cmdbuf_commit: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_wait(NULL), NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_wait: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_reset(NULL), NEAT_ERR_INVALID_ARGUMENT,
                "neat_cmdbuf_reset: cb is NULL");
    CHECK_OK(neat_cmdbuf_create(err_dev, &cb), "neat_cmdbuf_create");
    CHECK_FAILS(neat_cmdbuf_op_count(cb, NULL), NEAT_ERR_INVALID_ARGUMENT, "count is NULL");
    CHECK_OK(neat_cmdbuf_wait(cb), "wait on a buffer never committed");
    double secs = -1;
    CHECK_FAILS(neat_cmdbuf_device_time(NULL, &secs), NEAT_ERR_INVALID_ARGUMENT,
                "neat_cmdbuf_device_time: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, NULL), NEAT_ERR_INVALID_ARGUMENT, "seconds is NULL");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, &secs), NEAT_ERR_INVALID_ARGUMENT, "has completed yet");
    CHECK(secs == -1, "a refused device_time wrote seconds = %g", secs);

    /* A tensor destroyed after recording: commit refuses, nothing runs. */
    neat_tensor *t = err_ts(1, 4, 0, 0, 0), *keep = err_ts(1, 4, 0, 0, 0);
    CHECK_OK(neat_fill(cb, keep, 7.0f), "fill keep");
    CHECK_OK(neat_fill(cb, t, 5.0f), "fill t");
    neat_tensor_destroy(t);
    CHECK_FAILS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "destroyed after recording");
    CHECK_OK(neat_cmdbuf_wait(cb), "wait after a refused commit");
    float got[4];
    neat_tensor_read(keep, got, 4);
    CHECK(got[0] == 1 && got[3] == 1, "a refused commit ran ops (keep = %g)", got[0]);
    CHECK_OK(neat_cmdbuf_reset(cb), "reset");
    CHECK_OK(neat_cmdbuf_op_count(cb, &n), "op_count");
    CHECK(n == 0, "reset left %lld ops", (long long)n);

    /* Asynchronous failure: a label out of range is reported by wait, not by commit. */
    neat_tensor *logits = err_ts(2, 2, 3, 0, 0);
    neat_tensor *labels = err_ts(1, 2, 0, 0, 0), *loss = err_ts(1, 1, 0, 0, 0);
    const float bad_labels[2][2] = {{0, 3}, {-1, 1}};
    for (int i = 0; i < 2; i++) {
        neat_tensor_write(labels, bad_labels[i], 2);
        neat_cmdbuf_reset(cb);
        CHECK_OK(neat_softmax_cross_entropy(cb, logits, labels, loss), "record cross-entropy");
        CHECK_OK(neat_cmdbuf_commit(cb), "commit cross-entropy");
        neat_status st = neat_cmdbuf_wait(cb);
        CHECK_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "wait reports an out-of-range label");
        CHECK(strlen(neat_last_error()) > 0, "the async failure has no message");
    }

    neat_cmdbuf_destroy(cb);
    CHECK_FAILS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_reset(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_op_count(cb, &n), NEAT_ERR_INVALID_HANDLE, "not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, &secs), NEAT_ERR_INVALID_HANDLE,
                "not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_commit((neat_cmdbuf *)keep), NEAT_ERR_INVALID_HANDLE,
                "not a live command buffer");
    neat_cmdbuf_destroy(cb); /* again: ignored */
    neat_tensor_destroy(keep);
    neat_tensor_destroy(logits);
    neat_tensor_destroy(labels);
    neat_tensor_destroy(loss);
}

int main(void) {
    CHECK(strcmp(neat_last_error(), "") == 0, "neat_last_error() before any failure is \"%s\"",
          neat_last_error());
    test_status_and_version();
    if (!err_open()) return nt_finish("errors_api");
    test_devices();
    test_tensors();
    test_cmdbufs();
    err_close();
    return nt_finish("errors_api");
}
