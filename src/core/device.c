/* device.c — opening, describing and closing devices. */
#include "backends/backend.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

void nm_tensor_release_all(nm_device *dev);         /* tensor.c */
void nm_cmdbuf_release_all(nm_device *dev);         /* cmdbuf.c */
neat_status nm_cmdbuf_take_failure(nm_device *dev); /* cmdbuf.c */
void nm_comm_release_all(nm_device *dev);           /* comm.c */

static neat_status open_backend(const nm_backend_ops *be, int index, nm_device **out) {
    if (be->abi_version != NM_BACKEND_ABI)
        return nm_error(NEAT_ERR_INTERNAL, "neat_device_create: %s backend ABI %d, core %d",
                        be->name, be->abi_version, NM_BACKEND_ABI);
    nm_device *dev = calloc(1, sizeof *dev);
    if (!dev) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_device_create: out of host memory");
    dev->be = be;
    dev->math = NEAT_MATH_STRICT;
    dev->props.backend = be->kind;
    dev->props.index = index;
    pthread_mutex_init(&dev->lock, NULL);
    neat_status st = be->device_open(dev, index);
    if (st == NEAT_OK) nm_pool_init(dev);
    if (st != NEAT_OK) {
        pthread_mutex_destroy(&dev->lock);
        free(dev);
        return st; /* the backend wrote the message */
    }
    dev->handle = nm_handle_new(NM_H_DEVICE, dev);
    if (!dev->handle) {
        be->device_close(dev);
        free(dev);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_device_create: handle table full");
    }
    *out = dev;
    return NEAT_OK;
}

static neat_status open_kind(neat_backend kind, int index, nm_device **out) {
    const nm_backend_ops *be = nm_backend_find(kind);
    if (!be)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "neat_device_create: the %s backend was not built into this library",
                        neat_backend_name(kind));
    return open_backend(be, index, out);
}

/* AUTO: the first backend of the registry's order that opens device `index` (the CPU has
 * only device 0, and always opens it). Why each one before it did not open is kept in
 * props.selection, so that a fallback is never silent. */
static neat_status open_auto(int index, nm_device **out) {
    char why[sizeof((neat_device_props *)0)->selection] = "";
    size_t used = 0;
    neat_status st = NEAT_ERR_UNSUPPORTED;
    for (int i = 0; nm_backend_auto_order[i]; i++) {
        const nm_backend_ops *be = nm_backend_auto_order[i];
        st = open_backend(be, be->kind == NEAT_BACKEND_CPU ? 0 : index, out);
        if (st == NEAT_OK) break;
        if (used < sizeof why)
            used += (size_t)snprintf(why + used, sizeof why - used, "%s%s: %s", used ? "; " : "",
                                     be->name, neat_last_error());
    }
    if (st == NEAT_OK) snprintf((*out)->props.selection, sizeof(*out)->props.selection, "%s", why);
    return st;
}

NEAT_API neat_status neat_device_create(neat_backend backend, int index, neat_device **out) {
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_device_create: out is NULL");
    if (!neat_backend_name(backend))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "neat_device_create: backend %d is not a neat_backend", (int)backend);
    if (index < 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_device_create: index %d is negative",
                        index);
    nm_device *dev = NULL;
    neat_status st;
    if (backend == NEAT_BACKEND_AUTO) {
        const char *env = getenv("NEATML_BACKEND");
        if (env && *env) {
            neat_backend named;
            if (neat_backend_from_name(env, &named) != NEAT_OK)
                return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                                "neat_device_create: NEATML_BACKEND=\"%s\": %s", env,
                                neat_last_error());
            backend = named;
        }
    }
    st = backend == NEAT_BACKEND_AUTO ? open_auto(index, &dev) : open_kind(backend, index, &dev);
    if (st != NEAT_OK) return st;
    *out = dev->handle;
    return NEAT_OK;
}

NEAT_API void neat_device_destroy(neat_device *h) {
    nm_device *dev = nm_handle_get(h, NM_H_DEVICE);
    if (!dev) return;
    nm_cmdbuf_release_all(dev); /* waits for every submission first */
    nm_comm_release_all(dev);
    nm_tensor_release_all(dev);
    nm_pool_destroy(dev);
    dev->be->device_close(dev);
    nm_handle_free(h);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

/* The device of a handle, or INVALID_HANDLE naming fn. */
static neat_status get_device(const char *fn, const neat_device *h, nm_device **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: dev is NULL", fn);
    *out = nm_handle_get(h, NM_H_DEVICE);
    if (!*out)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: dev is not a live device (destroyed?)", fn);
    return NEAT_OK;
}

NEAT_API neat_status neat_device_info(const neat_device *h, neat_device_props *out) {
    nm_device *dev;
    neat_status st = get_device("neat_device_info", h, &dev);
    if (st) return st;
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_device_info: out is NULL");
    *out = dev->props;
    out->math_mode = dev->math;
    return NEAT_OK;
}

NEAT_API neat_status neat_device_set_math_mode(neat_device *h, neat_math_mode mode) {
    nm_device *dev;
    neat_status st = get_device("neat_device_set_math_mode", h, &dev);
    if (st) return st;
    if (mode != NEAT_MATH_STRICT && mode != NEAT_MATH_TF32)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "neat_device_set_math_mode: mode %d is not a neat_math_mode", (int)mode);
    pthread_mutex_lock(&dev->lock);
    dev->math = mode;
    pthread_mutex_unlock(&dev->lock);
    return NEAT_OK;
}

NEAT_API neat_status neat_device_synchronize(neat_device *h) {
    nm_device *dev;
    neat_status st = get_device("neat_device_synchronize", h, &dev);
    if (st) return st;
    pthread_mutex_lock(&dev->lock);
    uint64_t seq = dev->next_seq;
    pthread_mutex_unlock(&dev->lock);
    st = dev->be->wait_seq(dev, seq);
    nm_reap(dev);
    neat_status failed = nm_cmdbuf_take_failure(dev);
    if (st == NEAT_OK) st = failed;
    if (st == NEAT_OK) st = nm_pool_check(dev, "neat_device_synchronize");
    return st;
}

NEAT_API neat_status neat_device_memory_stats(const neat_device *h, neat_memory_stats *out) {
    nm_device *dev;
    neat_status st = get_device("neat_device_memory_stats", h, &dev);
    if (st) return st;
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_device_memory_stats: out is NULL");
    nm_reap(dev); /* memory of work that has completed is back in the pool (never waits) */
    nm_pool_stats(dev, out);
    return NEAT_OK;
}

NEAT_API neat_status neat_device_reset_peak(neat_device *h) {
    nm_device *dev;
    neat_status st = get_device("neat_device_reset_peak", h, &dev);
    if (st) return st;
    nm_pool_reset_peak(dev);
    return NEAT_OK;
}

NEAT_API neat_status neat_device_trim(neat_device *h) {
    nm_device *dev;
    neat_status st = get_device("neat_device_trim", h, &dev);
    if (st) return st;
    /* Cached blocks are free: nothing in flight holds them (nm_reap returns memory only
     * after the work that used it completed). */
    nm_reap(dev);
    nm_pool_trim(dev);
    return NEAT_OK;
}

NEAT_API neat_status neat_device_set_memory_limit(neat_device *h, int64_t bytes) {
    static const char fn[] = "neat_device_set_memory_limit";
    nm_device *dev;
    neat_status st = get_device(fn, h, &dev);
    if (st) return st;
    if (bytes < 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: bytes is %lld, negative", fn,
                        (long long)bytes);
    pthread_mutex_lock(&dev->pool.lock);
    dev->pool.limit = bytes ? bytes : nm_pool_default_limit(dev);
    pthread_mutex_unlock(&dev->pool.lock);
    return NEAT_OK;
}
