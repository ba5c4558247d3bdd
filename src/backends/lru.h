/*
 * lru.h — the bounded plan cache every backend keeps per device: byte keys to owned values
 * (oneDNN primitives on the CPU, cuBLASLt descriptors and cuDNN plans on CUDA).
 *
 * A hash table (FNV-1a over the key, NM_LRU_BUCKETS chains) finds an entry; a recency list
 * (most recently used first) orders them. A hit moves the entry to the front. Past the
 * capacity the least recently used entry is destroyed with the free function it was put
 * with. The capacity rule is the same everywhere: NM_LRU_CAPACITY entries per cache (a
 * build may define a smaller one, e.g. -DNM_LRU_CAPACITY=2, to exercise eviction).
 *
 * Lifetime of a value: nm_lru_get and nm_lru_put make it the most recent entry, and one put
 * evicts at most one entry, the least recent one; so with a capacity >= 2 a value stays
 * valid across the next lookup of the same cache. Callers use a value before they look up
 * anything else, which is enough at any capacity >= 1.
 *
 * Header-only, valid C and C++ (the CUDA backend's .cu files include it). No locking: each
 * backend touches its caches from one thread at a time (CPU: the device's worker thread;
 * CUDA: under the device lock).
 */
#ifndef NEATML_BACKENDS_LRU_H
#define NEATML_BACKENDS_LRU_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef NM_LRU_CAPACITY
#define NM_LRU_CAPACITY 512
#endif
#define NM_LRU_BUCKETS 256

typedef void (*nm_lru_free_fn)(void *value);

typedef struct nm_lru_entry {
    uint64_t hash;
    struct nm_lru_entry *chain;       /* next entry of the same bucket */
    struct nm_lru_entry *prev, *next; /* recency list */
    void *value;
    nm_lru_free_fn free_value;
    size_t keylen;
    unsigned char *key; /* keylen bytes, allocated right after the entry */
} nm_lru_entry;

typedef struct nm_lru {
    nm_lru_entry *buckets[NM_LRU_BUCKETS];
    nm_lru_entry *head, *tail; /* most recently used first */
    int count, capacity;
} nm_lru;

static inline void nm_lru_init(nm_lru *c, int capacity) {
    memset(c, 0, sizeof *c);
    c->capacity = capacity > 0 ? capacity : 1;
}

static inline uint64_t nm_lru_hash(const void *key, size_t keylen) {
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < keylen; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static inline void nm_lru_unlink(nm_lru *c, nm_lru_entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static inline void nm_lru_push_front(nm_lru *c, nm_lru_entry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static inline void nm_lru_destroy_entry(nm_lru_entry *e) {
    if (e->value && e->free_value) e->free_value(e->value);
    free(e);
}

/* Remove the least recently used entry and destroy its value. */
static inline void nm_lru_evict_oldest(nm_lru *c) {
    nm_lru_entry *e = c->tail;
    if (!e) return;
    nm_lru_unlink(c, e);
    nm_lru_entry **link = &c->buckets[e->hash % NM_LRU_BUCKETS];
    while (*link != e) link = &(*link)->chain;
    *link = e->chain;
    c->count--;
    nm_lru_destroy_entry(e);
}

/* The value cached under key[0..keylen), made the most recent; NULL on a miss. */
static inline void *nm_lru_get(nm_lru *c, const void *key, size_t keylen) {
    uint64_t h = nm_lru_hash(key, keylen);
    for (nm_lru_entry *e = c->buckets[h % NM_LRU_BUCKETS]; e; e = e->chain)
        if (e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0) {
            if (c->head != e) {
                nm_lru_unlink(c, e);
                nm_lru_push_front(c, e);
            }
            return e->value;
        }
    return NULL;
}

/* Cache value under a key that is not in the cache (after a nm_lru_get miss), as the most
 * recent entry; past the capacity the least recent entry is destroyed. The cache owns value
 * from then on and frees it with free_value. Returns 0, or -1 when out of host memory (value
 * is then still the caller's). */
static inline int nm_lru_put(nm_lru *c, const void *key, size_t keylen, void *value,
                             nm_lru_free_fn free_value) {
    nm_lru_entry *e = (nm_lru_entry *)calloc(1, sizeof *e + keylen);
    if (!e) return -1;
    e->hash = nm_lru_hash(key, keylen);
    e->value = value;
    e->free_value = free_value;
    e->keylen = keylen;
    e->key = (unsigned char *)(e + 1);
    memcpy(e->key, key, keylen);
    nm_lru_entry **bucket = &c->buckets[e->hash % NM_LRU_BUCKETS];
    e->chain = *bucket;
    *bucket = e;
    nm_lru_push_front(c, e);
    if (++c->count > c->capacity) nm_lru_evict_oldest(c);
    return 0;
}

/* Destroy every entry; the cache is empty (and usable) afterwards. */
static inline void nm_lru_clear(nm_lru *c) {
    for (nm_lru_entry *e = c->head, *next; e; e = next) {
        next = e->next;
        nm_lru_destroy_entry(e);
    }
    nm_lru_init(c, c->capacity);
}

#endif
