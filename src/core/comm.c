/*
 * comm.c — communicators: ids, creation, destruction, timeout. The collective ops that use
 * them are recorded by ops_comm.c; the transport (MPI, NCCL) is the backend's.
 *
 * A comm holds its device (nm_comm.dev) and the backend's communicator. It is a handle like
 * the others (NM_H_COMM): a buffer that recorded a collective re-checks it at every commit,
 * and destroy first waits for the device's submissions, so no collective in flight loses
 * its communicator.
 */
#include "backends/backend.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TIMEOUT_S 300.0

static const nm_backend_ops *backend_of(const char *fn, neat_backend kind, neat_status *st) {
    const nm_backend_ops *be = nm_backend_find(kind);
    if (!be)
        *st = nm_error(NEAT_ERR_UNSUPPORTED, "%s: backend %s was not built", fn,
                       neat_backend_name(kind));
    return be;
}

NEAT_API neat_status neat_comm_id_create(neat_backend backend, neat_comm_id *id) {
    static const char fn[] = "neat_comm_id_create";
    if (!id) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: id is NULL", fn);
    if (!neat_backend_name(backend))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: backend %d is not a neat_backend", fn,
                        (int)backend);
    neat_status st = NEAT_OK;
    if (backend == NEAT_BACKEND_AUTO) backend = nm_backend_auto_order[0]->kind;
    const nm_backend_ops *be = backend_of(fn, backend, &st);
    if (!be) return st;
    if (!be->comm_id_create)
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: the %s backend has no collectives", fn,
                        be->name);
    memset(id, 0, sizeof *id);
    return be->comm_id_create(id);
}

NEAT_API neat_status neat_comm_id_to_string(const neat_comm_id *id, char *buf, size_t size) {
    static const char fn[] = "neat_comm_id_to_string";
    if (!id || !buf)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, id ? "buf" : "id");
    if (size < 2 * sizeof id->bytes + 1)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: size is %zu: needs %zu bytes", fn, size,
                        2 * sizeof id->bytes + 1);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof id->bytes; i++) {
        buf[2 * i] = hex[id->bytes[i] >> 4];
        buf[2 * i + 1] = hex[id->bytes[i] & 15];
    }
    buf[2 * sizeof id->bytes] = 0;
    return NEAT_OK;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

NEAT_API neat_status neat_comm_id_from_string(const char *str, neat_comm_id *id) {
    static const char fn[] = "neat_comm_id_from_string";
    if (!str || !id)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, str ? "id" : "str");
    while (isspace((unsigned char)*str)) str++;
    neat_comm_id out;
    for (size_t i = 0; i < sizeof out.bytes; i++) {
        int hi = hex_value(str[2 * i]), lo = hi < 0 ? -1 : hex_value(str[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                            "%s: not an id: expected %zu hex digits, found a non-digit at %zu", fn,
                            2 * sizeof out.bytes, 2 * i + (hi >= 0));
        out.bytes[i] = (unsigned char)(hi << 4 | lo);
    }
    const char *rest = str + 2 * sizeof out.bytes;
    while (isspace((unsigned char)*rest)) rest++;
    if (*rest)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: not an id: text after the %zu hex digits",
                        fn, 2 * sizeof out.bytes);
    *id = out;
    return NEAT_OK;
}

/* A comm object for dev with rank/nranks set, and its handle. */
static neat_status comm_new(const char *fn, nm_device *dev, int rank, int nranks, nm_comm **out) {
    nm_comm *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    c->dev = dev;
    c->rank = rank;
    c->nranks = nranks;
    c->timeout = DEFAULT_TIMEOUT_S;
    *out = c;
    return NEAT_OK;
}

/* Give c its handle (also into *out); on failure c is released. */
static neat_status comm_publish(const char *fn, nm_comm *c, neat_comm **out) {
    c->handle = nm_handle_new(NM_H_COMM, c);
    *out = c->handle;
    if (!c->handle) {
        if (c->dev->be->comm_destroy) c->dev->be->comm_destroy(c);
        free(c);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: handle table full", fn);
    }
    nm_device *dev = c->dev;
    pthread_mutex_lock(&dev->lock);
    c->next = dev->comms;
    if (dev->comms) dev->comms->prev = c;
    dev->comms = c;
    pthread_mutex_unlock(&dev->lock);
    return NEAT_OK;
}

/* Unlink, release the transport, free. The device's submissions have completed. */
static void comm_release(nm_comm *c) {
    nm_device *dev = c->dev;
    pthread_mutex_lock(&dev->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        dev->comms = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&dev->lock);
    if (dev->be->comm_destroy) dev->be->comm_destroy(c);
    free(c);
}

/* Device destroy: every comm of the device (nothing is in flight any more). */
void nm_comm_release_all(nm_device *dev) {
    while (dev->comms) {
        nm_comm *c = dev->comms;
        nm_handle_free(c->handle);
        comm_release(c);
    }
}

NEAT_API neat_status neat_comm_create(neat_device *dh, const neat_comm_id *id, int nranks, int rank,
                                      neat_comm **out) {
    static const char fn[] = "neat_comm_create";
    if (!dh || !id || !out)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                        !dh   ? "dev"
                        : !id ? "id"
                              : "out");
    nm_device *dev = nm_handle_get(dh, NM_H_DEVICE);
    if (!dev)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: dev is not a live device (destroyed?)", fn);
    if (nranks < 1)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: nranks is %d: must be >= 1", fn, nranks);
    if (rank < 0 || rank >= nranks)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: rank is %d: must be in 0..%d", fn, rank,
                        nranks - 1);
    if (!dev->be->comm_create)
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: the %s backend has no collectives", fn,
                        dev->be->name);
    nm_comm *c = NULL;
    neat_status st = comm_new(fn, dev, rank, nranks, &c);
    if (st) return st;
    st = dev->be->comm_create(c, id);
    if (st) {
        free(c);
        return st;
    }
    return comm_publish(fn, c, out);
}

NEAT_API neat_status neat_comm_create_all(int ndev, neat_device *const *devs, neat_comm **out) {
    static const char fn[] = "neat_comm_create_all";
    if (!devs || !out)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, devs ? "out" : "devs");
    if (ndev < 1)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: ndev is %d: must be >= 1", fn, ndev);
    nm_comm **comms = calloc((size_t)ndev, sizeof *comms);
    if (!comms) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    neat_status st = NEAT_OK;
    for (int i = 0; i < ndev && !st; i++) {
        nm_device *dev = nm_handle_get(devs[i], NM_H_DEVICE);
        if (!dev)
            st = nm_error(NEAT_ERR_INVALID_HANDLE, "%s: devs[%d] is not a live device", fn, i);
        else if (i > 0 && dev->be != comms[0]->dev->be)
            st = nm_error(NEAT_ERR_DEVICE_MISMATCH, "%s: devs[%d] is a %s device, devs[0] a %s one",
                          fn, i, dev->be->name, comms[0]->dev->be->name);
        for (int j = 0; j < i && !st; j++)
            if (comms[j]->dev == dev)
                st = nm_error(NEAT_ERR_INVALID_ARGUMENT,
                              "%s: devs[%d] and devs[%d] are the same device", fn, j, i);
        if (!st && !dev->be->comm_create_all)
            st = nm_error(NEAT_ERR_UNSUPPORTED, "%s: the %s backend has no collectives", fn,
                          dev->be->name);
        if (!st) st = comm_new(fn, dev, i, ndev, &comms[i]);
    }
    int made = 0; /* backend state exists for every comm */
    if (!st) st = comms[0]->dev->be->comm_create_all(ndev, comms), made = !st;
    int published = 0;
    while (!st && published < ndev) {
        st = comm_publish(fn, comms[published], &out[published]); /* failure: released */
        if (!st) published++;
    }
    for (int i = 0; st && i < ndev; i++) {
        if (i < published)
            neat_comm_destroy(comms[i]->handle);
        else if (i > published || !made) {
            if (made && comms[i]->dev->be->comm_destroy) comms[i]->dev->be->comm_destroy(comms[i]);
            free(comms[i]);
        }
    }
    free(comms);
    return st;
}

/* cb recorded a collective on the comm of handle h (compared as a pointer: h may be freed). */
static bool cmdbuf_uses(const nm_cmdbuf *cb, const neat_comm *h) {
    for (int64_t i = 0; i < cb->nops; i++)
        if ((nm_op_flags(cb->ops[i].kind) & NM_OPF_COLLECTIVE) && cb->ops[i].comm == h) return true;
    return false;
}

NEAT_API void neat_comm_destroy(neat_comm *h) {
    nm_comm *c = nm_handle_get(h, NM_H_COMM);
    if (!c) return;
    nm_handle_free(h); /* buffers that recorded it now fail at commit */
    /* Submissions in flight may still use it: they complete first (a broken peer makes
     * them fail after the comm's timeout, so this ends). Their failures stay with their
     * buffers for wait: this is not a synchronize. */
    nm_device *dev = c->dev;
    pthread_mutex_lock(&dev->lock);
    uint64_t seq = dev->next_seq;
    pthread_mutex_unlock(&dev->lock);
    dev->be->wait_seq(dev, seq);
    nm_reap(dev);
    /* The buffers that recorded a collective on c can never run again (their commit answers
     * INVALID_HANDLE until a reset): their backend state goes now, before the comm's. On CUDA
     * that is the captured graph, which holds NCCL kernels of c; NCCL keeps resources for
     * such graphs while they live, and a comm freed before its buffers (the OCaml example on
     * 2 H200s, its buffers left to the GC) left a process that did not exit: the likely
     * cause, not confirmed on a GPU. The buffers are idle: wait_seq waited for them. */
    pthread_mutex_lock(&dev->lock);
    for (nm_cmdbuf *cb = dev->cmdbufs; cb; cb = cb->next)
        if (dev->be->cmdbuf_release && cmdbuf_uses(cb, h)) dev->be->cmdbuf_release(dev, cb);
    pthread_mutex_unlock(&dev->lock);
    comm_release(c);
}

static neat_status get_comm(const char *fn, const neat_comm *h, nm_comm **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: comm is NULL", fn);
    *out = nm_handle_get(h, NM_H_COMM);
    if (!*out)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: comm is not a live comm (destroyed?)", fn);
    return NEAT_OK;
}

NEAT_API neat_status neat_comm_set_timeout(neat_comm *h, double seconds) {
    static const char fn[] = "neat_comm_set_timeout";
    nm_comm *c;
    neat_status st = get_comm(fn, h, &c);
    if (st) return st;
    if (!(seconds >= 0 && seconds < 1e12))
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: seconds is %g: must be >= 0 (0 = no limit)",
                        fn, seconds);
    __atomic_store(&c->timeout, &seconds, __ATOMIC_RELAXED);
    return NEAT_OK;
}

NEAT_API neat_status neat_comm_info(const neat_comm *h, int *rank, int *nranks) {
    nm_comm *c;
    neat_status st = get_comm("neat_comm_info", h, &c);
    if (st) return st;
    if (rank) *rank = c->rank;
    if (nranks) *nranks = c->nranks;
    return NEAT_OK;
}

neat_status nm_comm_arg(const char *fn, const nm_cmdbuf *cb, const neat_comm *h, nm_comm **out) {
    neat_status st = get_comm(fn, h, out);
    if (st) return st;
    if ((*out)->dev != cb->dev)
        return nm_error(NEAT_ERR_DEVICE_MISMATCH, "%s: comm belongs to another device than cb", fn);
    return NEAT_OK;
}
