/* tensor.c — tensors of 0 to 4 dimensions (float32, bf16, f16), their views and host
 * copies (converting from and to float32 arrays, or raw bytes). */
#include "backends/backend.h"
#include "dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t nm_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) n = 0;
    }
    if (n == 0) return 0; /* empty whatever the other sizes: nothing is allocated */
    for (int i = 0; i < ndim; i++) {
        if (n > INT64_MAX / 4 / shape[i]) return -1; /* the byte count must fit too */
        n *= shape[i];
    }
    return n;
}

/* Check ndim and shape of fn's argument; the element count in *numel. */
static neat_status check_shape(const char *fn, int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > NEAT_MAX_DIMS)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: ndim %d is outside 0..%d", fn, ndim,
                        NEAT_MAX_DIMS);
    if (ndim > 0 && !shape) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: shape[%d] is %lld, negative", fn, i,
                            (long long)shape[i]);
    *numel = nm_shape_numel(ndim, shape);
    if (*numel < 0 || (uint64_t)*numel * 4 > (uint64_t)SIZE_MAX)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: the byte count of the shape overflows", fn);
    return NEAT_OK;
}

/* A new tensor object on `storage` (whose reference the caller hands over), linked into
 * the device's list with one reference: its handle's. */
static neat_status make_tensor(const char *fn, nm_device *dev, nm_storage *storage,
                               neat_dtype dtype, int ndim, const int64_t *shape, int64_t numel,
                               neat_tensor **out) {
    nm_tensor *t = calloc(1, sizeof *t);
    if (!t) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    t->dev = dev;
    t->storage = storage;
    t->data = numel ? (float *)storage->block->ptr : NULL;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = numel;
    t->refs = 1;
    t->handle = nm_handle_new(NM_H_TENSOR, t);
    if (!t->handle) {
        free(t);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: handle table full", fn);
    }
    pthread_mutex_lock(&dev->lock);
    t->next = dev->tensors;
    if (dev->tensors) dev->tensors->prev = t;
    dev->tensors = t;
    pthread_mutex_unlock(&dev->lock);
    *out = t->handle;
    return NEAT_OK;
}

/* neat_tensor_create under the name of the public call `fn`. */
static neat_status create(const char *fn, neat_device *dh, neat_dtype dtype, int ndim,
                          const int64_t *shape, neat_tensor **out) {
    if (!dh) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: dev is NULL", fn);
    nm_device *dev = nm_handle_get(dh, NM_H_DEVICE);
    if (!dev)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: dev is not a live device (destroyed?)", fn);
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    int64_t numel;
    neat_status st = check_shape(fn, ndim, shape, &numel);
    if (st) return st;
    nm_storage *s = calloc(1, sizeof *s);
    if (!s) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    st = nm_pool_alloc(dev, (size_t)numel * neat_dtype_size(dtype), &s->block);
    if (st) {
        free(s);
        return nm_error(st, "%s: %s", fn, neat_last_error());
    }
    s->refs = 1;
    st = make_tensor(fn, dev, s, dtype, ndim, shape, numel, out);
    if (st) {
        nm_pool_free(dev, s->block);
        free(s);
    }
    return st;
}

NEAT_API neat_status neat_tensor_create(neat_device *dev, int ndim, const int64_t *shape,
                                        neat_tensor **out) {
    return create("neat_tensor_create", dev, NEAT_F32, ndim, shape, out);
}

NEAT_API size_t neat_dtype_size(neat_dtype dtype) {
    switch (dtype) {
    case NEAT_F32: return 4;
    case NEAT_BF16:
    case NEAT_F16: return 2;
    }
    return 0;
}

NEAT_API const char *neat_dtype_name(neat_dtype dtype) {
    switch (dtype) {
    case NEAT_F32: return "f32";
    case NEAT_BF16: return "bf16";
    case NEAT_F16: return "f16";
    }
    return "unknown dtype";
}

/* create, then zeros through a fill recorded on the device's own queue: ordered after work
 * already committed there, like every other write of device memory. */
static neat_status create_zeros(const char *fn, neat_device *dev, neat_dtype dtype, int ndim,
                                const int64_t *shape, neat_tensor **out) {
    neat_tensor *t;
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    neat_status st = create(fn, dev, dtype, ndim, shape, &t);
    if (st) return st;
    neat_cmdbuf *cb = NULL;
    st = neat_cmdbuf_create(dev, &cb);
    if (!st) st = neat_fill(cb, t, 0.0f);
    if (!st) st = neat_cmdbuf_commit(cb);
    if (!st) st = neat_cmdbuf_wait(cb);
    neat_cmdbuf_destroy(cb);
    if (st) {
        neat_tensor_destroy(t);
        return nm_error(st, "%s: %s", fn, neat_last_error());
    }
    *out = t;
    return NEAT_OK;
}

NEAT_API neat_status neat_tensor_create_zeros(neat_device *dev, int ndim, const int64_t *shape,
                                              neat_tensor **out) {
    return create_zeros("neat_tensor_create_zeros", dev, NEAT_F32, ndim, shape, out);
}

NEAT_API neat_status neat_tensor_create_typed(neat_device *dev, neat_dtype dtype, int ndim,
                                              const int64_t *shape, int zero, neat_tensor **out) {
    static const char fn[] = "neat_tensor_create_typed";
    if (neat_dtype_size(dtype) == 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: dtype %d is not a neat_dtype", fn,
                        (int)dtype);
    if (zero != 0 && zero != 1)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: zero is %d, not 0 or 1", fn, zero);
    return zero ? create_zeros(fn, dev, dtype, ndim, shape, out)
                : create(fn, dev, dtype, ndim, shape, out);
}

NEAT_API neat_status neat_matrix_create(neat_device *dev, int64_t rows, int64_t cols,
                                        neat_tensor **out) {
    int64_t shape[2] = {rows, cols};
    return create("neat_matrix_create", dev, NEAT_F32, 2, shape, out);
}

NEAT_API neat_status neat_tensor_view(neat_tensor *h, int ndim, const int64_t *shape,
                                      neat_tensor **out) {
    static const char fn[] = "neat_tensor_view";
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: t is NULL", fn);
    nm_tensor *t = nm_handle_get(h, NM_H_TENSOR);
    if (!t) return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: t is not a live tensor (destroyed?)", fn);
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    int64_t numel;
    neat_status st = check_shape(fn, ndim, shape, &numel);
    if (st) return st;
    if (numel != t->numel) {
        char buf[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH,
                        "%s: t is %s (%lld elements), the new shape has %lld", fn,
                        nm_shape_str(t, buf), (long long)t->numel, (long long)numel);
    }
    pthread_mutex_lock(&t->dev->lock);
    t->storage->refs++;
    pthread_mutex_unlock(&t->dev->lock);
    st = make_tensor(fn, t->dev, t->storage, t->dtype, ndim, shape, numel, out);
    if (st) {
        pthread_mutex_lock(&t->dev->lock);
        t->storage->refs--;
        pthread_mutex_unlock(&t->dev->lock);
    }
    return st;
}

/* Drop one reference (the handle's or a submission's); the last one frees the object and,
 * with the last view on it, the memory. dev->lock held. */
void nm_tensor_unref(nm_tensor *t) {
    if (--t->refs > 0) return;
    nm_device *dev = t->dev;
    if (t->prev)
        t->prev->next = t->next;
    else
        dev->tensors = t->next;
    if (t->next) t->next->prev = t->prev;
    if (--t->storage->refs == 0) {
        nm_pool_free(dev, t->storage->block);
        free(t->storage);
    }
    free(t);
}

/* Device destroy: every handle freed, every object released (nothing is in flight). */
void nm_tensor_release_all(nm_device *dev) {
    pthread_mutex_lock(&dev->lock);
    while (dev->tensors) {
        nm_tensor *t = dev->tensors;
        if (t->handle) nm_handle_free(t->handle);
        t->handle = NULL;
        t->refs = 1;
        nm_tensor_unref(t);
    }
    pthread_mutex_unlock(&dev->lock);
}

/* Never waits: memory a committed buffer still uses stays held by its submission. */
NEAT_API void neat_tensor_destroy(neat_tensor *h) {
    nm_tensor *t = nm_handle_get(h, NM_H_TENSOR);
    if (!t) return;
    nm_device *dev = t->dev;
    nm_reap(dev);
    pthread_mutex_lock(&dev->lock);
    if (t->handle == h) { /* a racing destroy of the same handle drops it once */
        nm_handle_free(h);
        t->handle = NULL;
        nm_tensor_unref(t);
    }
    pthread_mutex_unlock(&dev->lock);
}

static neat_status get_tensor(const char *fn, const neat_tensor *h, nm_tensor **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: t is NULL", fn);
    *out = nm_handle_get(h, NM_H_TENSOR);
    if (!*out)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: t is not a live tensor (destroyed?)", fn);
    return NEAT_OK;
}

NEAT_API neat_status neat_tensor_shape(const neat_tensor *h, int *ndim, int64_t shape[4]) {
    nm_tensor *t;
    neat_status st = get_tensor("neat_tensor_shape", h, &t);
    if (st) return st;
    if (!ndim || !shape)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_tensor_shape: %s is NULL",
                        ndim ? "shape" : "ndim");
    *ndim = t->ndim;
    for (int i = 0; i < NEAT_MAX_DIMS; i++) shape[i] = i < t->ndim ? t->shape[i] : 0;
    return NEAT_OK;
}

NEAT_API neat_status neat_tensor_numel(const neat_tensor *h, int64_t *numel) {
    nm_tensor *t;
    neat_status st = get_tensor("neat_tensor_numel", h, &t);
    if (st) return st;
    if (!numel) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_tensor_numel: numel is NULL");
    *numel = t->numel;
    return NEAT_OK;
}

/* Shared checks of write and read. */
static neat_status check_copy(const char *fn, const char *buf_name, const neat_tensor *h,
                              const void *buf, int64_t count, nm_tensor **out) {
    neat_status st = get_tensor(fn, h, out);
    if (st) return st;
    if (count < 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: count %lld is negative", fn,
                        (long long)count);
    if (count != (*out)->numel) {
        char s[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: t is %s (%lld elements), count is %lld", fn,
                        nm_shape_str(*out, s), (long long)(*out)->numel, (long long)count);
    }
    if (!buf && count > 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, buf_name);
    return NEAT_OK;
}

/* Wait for the submissions that use t's memory (not for the rest of the device's work). */
static neat_status wait_for_users(nm_tensor *t) {
    nm_device *dev = t->dev;
    pthread_mutex_lock(&dev->lock);
    uint64_t seq = t->storage->last_use;
    pthread_mutex_unlock(&dev->lock);
    neat_status st = seq ? dev->be->wait_seq(dev, seq) : NEAT_OK;
    nm_reap(dev);
    return st;
}

NEAT_API neat_status neat_tensor_dtype(const neat_tensor *h, neat_dtype *dtype) {
    nm_tensor *t;
    neat_status st = get_tensor("neat_tensor_dtype", h, &t);
    if (st) return st;
    if (!dtype) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_tensor_dtype: dtype is NULL");
    *dtype = t->dtype;
    return NEAT_OK;
}

/* A host buffer of t's element type, for a converting copy; NULL when out of memory. */
static void *half_buffer(const char *fn, const nm_tensor *t, neat_status *st) {
    size_t bytes = (size_t)t->numel * neat_dtype_size(t->dtype);
    void *buf = malloc(bytes);
    if (!buf)
        *st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory for %zu bytes", fn, bytes);
    return buf;
}

NEAT_API neat_status neat_tensor_write(neat_tensor *h, const float *src, int64_t count) {
    static const char fn[] = "neat_tensor_write";
    nm_tensor *t;
    neat_status st = check_copy(fn, "src", h, src, count, &t);
    if (st || count == 0) return st;
    st = wait_for_users(t);
    if (st) return st;
    if (t->dtype == NEAT_F32)
        return t->dev->be->copy_in(t->dev, t->data, src, (size_t)count * sizeof(float));
    void *buf = half_buffer(fn, t, &st);
    if (!buf) return st;
    for (int64_t i = 0; i < count; i++) nm_store(t->dtype, buf, i, src[i]);
    st = t->dev->be->copy_in(t->dev, t->data, buf, (size_t)count * neat_dtype_size(t->dtype));
    free(buf);
    return st;
}

NEAT_API neat_status neat_tensor_read(const neat_tensor *h, float *dst, int64_t count) {
    static const char fn[] = "neat_tensor_read";
    nm_tensor *t;
    neat_status st = check_copy(fn, "dst", h, dst, count, &t);
    if (st || count == 0) return st;
    st = wait_for_users(t);
    if (st) return st;
    if (t->dtype == NEAT_F32)
        return t->dev->be->copy_out(t->dev, dst, t->data, (size_t)count * sizeof(float));
    void *buf = half_buffer(fn, t, &st);
    if (!buf) return st;
    st = t->dev->be->copy_out(t->dev, buf, t->data, (size_t)count * neat_dtype_size(t->dtype));
    for (int64_t i = 0; st == NEAT_OK && i < count; i++) dst[i] = nm_load(t->dtype, buf, i);
    free(buf);
    return st;
}

/* Shared checks of the raw copies: bytes must be the tensor's byte count. */
static neat_status check_raw(const char *fn, const char *buf_name, const neat_tensor *h,
                             const void *buf, size_t bytes, nm_tensor **out) {
    neat_status st = get_tensor(fn, h, out);
    if (st) return st;
    size_t want = (size_t)(*out)->numel * neat_dtype_size((*out)->dtype);
    if (bytes != want) {
        char s[NM_SHAPE_STR];
        return nm_error(NEAT_ERR_SHAPE_MISMATCH, "%s: t is %s %s (%zu bytes), bytes is %zu", fn,
                        neat_dtype_name((*out)->dtype), nm_shape_str(*out, s), want, bytes);
    }
    if (!buf && bytes > 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, buf_name);
    return NEAT_OK;
}

NEAT_API neat_status neat_tensor_write_raw(neat_tensor *h, const void *src, size_t bytes) {
    nm_tensor *t;
    neat_status st = check_raw("neat_tensor_write_raw", "src", h, src, bytes, &t);
    if (st || bytes == 0) return st;
    st = wait_for_users(t);
    if (st) return st;
    return t->dev->be->copy_in(t->dev, t->data, src, bytes);
}

NEAT_API neat_status neat_tensor_read_raw(const neat_tensor *h, void *dst, size_t bytes) {
    nm_tensor *t;
    neat_status st = check_raw("neat_tensor_read_raw", "dst", h, dst, bytes, &t);
    if (st || bytes == 0) return st;
    st = wait_for_users(t);
    if (st) return st;
    return t->dev->be->copy_out(t->dev, dst, t->data, bytes);
}
