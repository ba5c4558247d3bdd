/*
 * pool.c — the per-device caching allocator that serves every tensor and temporary.
 *
 * Sizes are rounded to buckets (512 B, then powers of two up to 1 MiB, then eighths of an
 * octave: at most 12.5% slack) and freed blocks wait in their bucket's list for the next
 * request of that bucket. So the backend's allocator (malloc, cudaMalloc) is called only on
 * a miss, and a training loop that creates and destroys the same shapes stops allocating
 * after its first step. neat_device_trim hands the cached blocks back.
 */
#include "backends/backend.h"

#include <stdlib.h>

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

void nm_pool_init(nm_pool *pool) {
    pthread_mutex_init(&pool->lock, NULL);
    pool->buckets = NULL;
    pool->in_use = pool->reserved = pool->peak = 0;
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

neat_status nm_pool_alloc(nm_device *dev, size_t bytes, nm_block **out) {
    nm_pool *pool = &dev->pool;
    nm_block *blk = NULL;
    if (bytes == 0) {
        blk = calloc(1, sizeof *blk);
        if (!blk) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for a block");
        *out = blk;
        return NEAT_OK;
    }
    if (bytes > ((size_t)1 << 62))
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "allocation of %zu bytes is too large", bytes);
    size_t size = round_size(bytes);
    pthread_mutex_lock(&pool->lock);
    nm_pool_bucket *b = bucket_for(pool, size, 1);
    if (!b) {
        pthread_mutex_unlock(&pool->lock);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "out of host memory for the pool");
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
    void *ptr = NULL;
    neat_status st = blk ? dev->be->mem_alloc(dev, size, &ptr) : NEAT_ERR_OUT_OF_MEMORY;
    if (st == NEAT_ERR_OUT_OF_MEMORY && blk) {
        /* A miss after the cache filled up: give the cache back and try once more. */
        release_cached(dev);
        st = dev->be->mem_alloc(dev, size, &ptr);
    }
    if (st != NEAT_OK) {
        pthread_mutex_unlock(&pool->lock);
        free(blk);
        return nm_error(st == NEAT_OK ? NEAT_ERR_OUT_OF_MEMORY : st,
                        "out of device memory: %zu bytes requested, %lld in use",
                        bytes, (long long)pool->in_use);
    }
    blk->ptr = ptr;
    blk->size = size;
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
    pthread_mutex_unlock(&dev->pool.lock);
}

void nm_pool_reset_peak(nm_device *dev) {
    pthread_mutex_lock(&dev->pool.lock);
    dev->pool.peak = dev->pool.in_use;
    pthread_mutex_unlock(&dev->pool.lock);
}
