/*
 * pool.c — the per-device caching allocator that serves every tensor and temporary.
 *
 * Sizes are rounded to buckets (512 B, then powers of two up to 1 MiB, then eighths of an
 * octave: at most 12.5% slack) and freed blocks wait in their bucket's list for the next
 * request of that bucket. So the backend's allocator (malloc, cudaMalloc) is called only on
 * a miss, and a training loop that creates and destroys the same shapes stops allocating
 * after its first step. neat_device_trim hands the cached blocks back.
 *
 * Limit: the pool never reserves more than pool.limit bytes (default: what the OS or the
 * driver reported free when the device opened, cgroup limits included; a miss first gives
 * the cache back). So two 20 GiB tensors on a 24 GiB machine get OUT_OF_MEMORY for the
 * second instead of the process being killed later.
 *
 * Debug pool (NEATML_DEBUG_POOL=1, read when the device opens): blocks of the exact size
 * asked for, each followed by a canary of NM_CANARY bytes; nothing cached (a freed block
 * is poisoned with 0xff bytes, then handed back to the backend at once), so ASan and
 * compute-sanitizer see every overrun and every use after free of tensor memory, and
 * nm_pool_check (at every wait and synchronize) reports an overwritten canary.
 */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NM_CANARY 64
static const unsigned char CANARY_BYTE = 0xa5;

typedef struct nm_pool_bucket {
    size_t size;
    nm_block *free;
    struct nm_pool_bucket *next; /* ascending size */
} nm_pool_bucket;

static size_t round_size(size_t n) {
    if (n <= 512) return 512;
    if (n <= ((size_t)1 << 20)) {
        size_t p = 1024;
        while (p < n) p <<= 1;
        return p;
    }
    size_t p = (size_t)1 << 20;
    while (p * 2 <= n) p <<= 1; /* p = largest power of two <= n */
    size_t step = p / 8;
    return (n + step - 1) / step * step;
}

int64_t nm_pool_default_limit(nm_device *dev) {
    if (dev->mem_available > 0) return dev->mem_available;
    if (dev->props.total_memory > 0) return dev->props.total_memory;
    return INT64_MAX;
}

void nm_pool_init(nm_device *dev) {
    nm_pool *pool = &dev->pool;
    pthread_mutex_init(&pool->lock, NULL);
    pool->buckets = NULL;
    pool->in_use = pool->reserved = pool->peak = 0;
    pool->limit = nm_pool_default_limit(dev);
    const char *env = getenv("NEATML_DEBUG_POOL");
    pool->debug = env && *env && strcmp(env, "0") != 0;
    pool->live = NULL;
}

static nm_pool_bucket *bucket_for(nm_pool *pool, size_t size, int create) {
    nm_pool_bucket **link = &pool->buckets;
    while (*link && (*link)->size < size) link = &(*link)->next;
    if (*link && (*link)->size == size) return *link;
    if (!create) return NULL;
    nm_pool_bucket *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->size = size;
    b->next = *link;
    *link = b;
    return b;
}

static void account_use(nm_pool *pool, size_t size) {
    pool->in_use += (int64_t)size;
    if (pool->in_use > pool->peak) pool->peak = pool->in_use;
}

/* Caller holds the lock. */
static void release_cached(nm_device *dev) {
    nm_pool *pool = &dev->pool;
    for (nm_pool_bucket *b = pool->buckets; b; b = b->next) {
        while (b->free) {
            nm_block *blk = b->free;
            b->free = blk->next;
            dev->be->mem_free(dev, blk->ptr, blk->size);
            pool->reserved -= (int64_t)blk->size;
            free(blk);
        }
    }
}

/* OUT_OF_MEMORY unless `size` more bytes keep the pool within its limit. Lock held. */
static neat_status within_limit(nm_device *dev, size_t size) {
    nm_pool *pool = &dev->pool;
    if ((int64_t)size <= pool->limit - pool->reserved) return NEAT_OK;
    return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                    "out of device memory: %zu bytes more would take the pool past its limit of "
                    "%lld bytes (%lld in use, %lld cached; neat_device_set_memory_limit)",
                    size, (long long)pool->limit, (long long)pool->in_use,
                    (long long)(pool->reserved - pool->in_use));
}

/* ---- debug pool ---------------------------------------------------------------------------- */

static neat_status fill_bytes(nm_device *dev, void *dst, unsigned char byte, size_t n) {
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "debug pool: out of host memory for %zu bytes", n);
    memset(buf, byte, n);
    neat_status st = dev->be->copy_in(dev, dst, buf, n);
    free(buf);
    return st;
}

static neat_status debug_alloc(nm_device *dev, size_t bytes, nm_block **out) {
    nm_pool *pool = &dev->pool;
    nm_block *blk = calloc(1, sizeof *blk);
    if (!blk)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for a block of %zu bytes",
                        bytes);
    pthread_mutex_lock(&pool->lock);
    void *ptr = NULL;
    neat_status st = within_limit(dev, bytes + NM_CANARY);
    if (st == NEAT_OK) st = dev->be->mem_alloc(dev, bytes + NM_CANARY, &ptr);
    if (st == NEAT_OK) st = fill_bytes(dev, (char *)ptr + bytes, CANARY_BYTE, NM_CANARY);
    if (st != NEAT_OK) {
        if (ptr) dev->be->mem_free(dev, ptr, bytes + NM_CANARY);
        pthread_mutex_unlock(&pool->lock);
        free(blk);
        return st;
    }
    blk->ptr = ptr;
    blk->size = bytes;
    blk->request = bytes;
    blk->live_next = pool->live;
    if (pool->live) pool->live->live_prev = blk;
    pool->live = blk;
    pool->reserved += (int64_t)(bytes + NM_CANARY);
    account_use(pool, bytes);
    pthread_mutex_unlock(&pool->lock);
    *out = blk;
    return NEAT_OK;
}

/* The canary of blk intact? Lock held. */
static int canary_ok(nm_device *dev, const nm_block *blk) {
    unsigned char got[NM_CANARY];
    if (dev->be->copy_out(dev, got, (const char *)blk->ptr + blk->request, NM_CANARY) != NEAT_OK)
        return 1; /* the copy's failure is the device's, reported elsewhere */
    for (int i = 0; i < NM_CANARY; i++)
        if (got[i] != CANARY_BYTE) return 0;
    return 1;
}

static void debug_free(nm_device *dev, nm_block *blk) {
    nm_pool *pool = &dev->pool;
    pthread_mutex_lock(&pool->lock);
    if (!canary_ok(dev, blk) && !pool->overrun) pool->overrun = (int64_t)blk->request;
    if (blk->live_prev)
        blk->live_prev->live_next = blk->live_next;
    else
        pool->live = blk->live_next;
    if (blk->live_next) blk->live_next->live_prev = blk->live_prev;
    fill_bytes(dev, blk->ptr, 0xff, blk->request); /* poison: NaN to whatever reads it now */
    dev->be->mem_free(dev, blk->ptr, blk->request + NM_CANARY);
    pool->in_use -= (int64_t)blk->size;
    pool->reserved -= (int64_t)(blk->size + NM_CANARY);
    pthread_mutex_unlock(&pool->lock);
    free(blk);
}

neat_status nm_pool_check(nm_device *dev, const char *fn) {
    nm_pool *pool = &dev->pool;
    if (!pool->debug) return NEAT_OK;
    pthread_mutex_lock(&pool->lock);
    int64_t bad = pool->overrun;
    for (nm_block *b = pool->live; b && !bad; b = b->live_next)
        if (!canary_ok(dev, b)) bad = (int64_t)b->request;
    pool->overrun = 0;
    pthread_mutex_unlock(&pool->lock);
    if (!bad) return NEAT_OK;
    return nm_error(NEAT_ERR_INTERNAL,
                    "%s: debug pool: memory past the end of a block of %lld bytes "
                    "was written (its canary changed)",
                    fn, (long long)bad);
}

neat_status nm_pool_alloc(nm_device *dev, size_t bytes, nm_block **out) {
    nm_pool *pool = &dev->pool;
    nm_block *blk = NULL;
    if (bytes == 0) {
        blk = calloc(1, sizeof *blk);
        if (!blk)
            return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for a block of 0 bytes");
        *out = blk;
        return NEAT_OK;
    }
    if (bytes > ((size_t)1 << 62))
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "allocation of %zu bytes is too large", bytes);
    if (pool->debug) return debug_alloc(dev, bytes, out);
    size_t size = round_size(bytes);
    pthread_mutex_lock(&pool->lock);
    nm_pool_bucket *b = bucket_for(pool, size, 1);
    if (!b) {
        pthread_mutex_unlock(&pool->lock);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for a block of %zu bytes",
                        bytes);
    }
    if (b->free) {
        blk = b->free;
        b->free = blk->next;
        blk->next = NULL;
        account_use(pool, size);
        pthread_mutex_unlock(&pool->lock);
        *out = blk;
        return NEAT_OK;
    }
    blk = calloc(1, sizeof *blk);
    if (!blk) {
        pthread_mutex_unlock(&pool->lock);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for a block of %zu bytes",
                        bytes);
    }
    void *ptr = NULL;
    neat_status st = within_limit(dev, size);
    if (st == NEAT_OK) st = dev->be->mem_alloc(dev, size, &ptr);
    if (st == NEAT_ERR_OUT_OF_MEMORY && pool->reserved > pool->in_use) {
        /* A miss after the cache filled up: give the cache back and try once more. */
        release_cached(dev);
        st = within_limit(dev, size);
        if (st == NEAT_OK) st = dev->be->mem_alloc(dev, size, &ptr);
    }
    if (st != NEAT_OK) {
        pthread_mutex_unlock(&pool->lock);
        free(blk);
        return st; /* within_limit or the backend wrote the message */
    }
    blk->ptr = ptr;
    blk->size = size;
    blk->request = bytes;
    pool->reserved += (int64_t)size;
    account_use(pool, size);
    pthread_mutex_unlock(&pool->lock);
    *out = blk;
    return NEAT_OK;
}

void nm_pool_free(nm_device *dev, nm_block *blk) {
    if (!blk) return;
    if (blk->size == 0) {
        free(blk);
        return;
    }
    nm_pool *pool = &dev->pool;
    if (pool->debug) {
        debug_free(dev, blk);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->in_use -= (int64_t)blk->size;
    nm_pool_bucket *b = bucket_for(pool, blk->size, 0); /* exists: blk came from it */
    blk->next = b->free;
    b->free = blk;
    pthread_mutex_unlock(&pool->lock);
}

void nm_pool_trim(nm_device *dev) {
    pthread_mutex_lock(&dev->pool.lock);
    release_cached(dev);
    pthread_mutex_unlock(&dev->pool.lock);
}

void nm_pool_destroy(nm_device *dev) {
    nm_pool *pool = &dev->pool;
    nm_pool_trim(dev);
    while (pool->buckets) {
        nm_pool_bucket *b = pool->buckets;
        pool->buckets = b->next;
        free(b);
    }
    pthread_mutex_destroy(&pool->lock);
}

void nm_pool_stats(nm_device *dev, neat_memory_stats *out) {
    pthread_mutex_lock(&dev->pool.lock);
    out->in_use = dev->pool.in_use;
    out->reserved = dev->pool.reserved;
    out->peak = dev->pool.peak;
    out->limit = dev->pool.limit;
    pthread_mutex_unlock(&dev->pool.lock);
}

void nm_pool_reset_peak(nm_device *dev) {
    pthread_mutex_lock(&dev->pool.lock);
    dev->pool.peak = dev->pool.in_use;
    pthread_mutex_unlock(&dev->pool.lock);
}
