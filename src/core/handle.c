/*
 * handle.c — the handle table: the one piece of process-wide state.
 *
 * A public handle is the value (generation << 32 | slot + 1) cast to a pointer. Destroying
 * an object bumps its slot's generation, so an old handle no longer matches and is answered
 * NEAT_ERR_INVALID_HANDLE instead of being dereferenced; a freed slot is reused with the new
 * generation. Slots live in chunks that are never freed, so a lookup is an index and a
 * compare under one mutex.
 */
#include "internal.h"

#include <stdlib.h>

_Static_assert(sizeof(void *) == 8, "neatml handles need 64-bit pointers");

#define CHUNK_SLOTS 4096
#define MAX_CHUNKS 4096 /* 16M live handles */

typedef struct slot {
    void *obj;
    uint32_t gen;
    uint8_t kind; /* 0 when free */
    uint32_t next_free;
} slot;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static slot *chunks[MAX_CHUNKS];
static uint32_t nslots; /* slots ever handed out */
static uint32_t free_head = UINT32_MAX;

static slot *slot_at(uint32_t i) { return &chunks[i / CHUNK_SLOTS][i % CHUNK_SLOTS]; }

void *nm_handle_new(nm_handle_kind kind, void *obj) {
    pthread_mutex_lock(&table_lock);
    uint32_t i;
    if (free_head != UINT32_MAX) {
        i = free_head;
        free_head = slot_at(i)->next_free;
    } else {
        if (nslots == (uint32_t)CHUNK_SLOTS * MAX_CHUNKS) goto full;
        if (nslots % CHUNK_SLOTS == 0) {
            slot *c = calloc(CHUNK_SLOTS, sizeof(slot));
            if (!c) goto full;
            chunks[nslots / CHUNK_SLOTS] = c;
        }
        i = nslots++;
    }
    slot *s = slot_at(i);
    s->obj = obj;
    s->kind = (uint8_t)kind;
    s->gen++;
    uint64_t h = ((uint64_t)s->gen << 32) | (uint64_t)(i + 1);
    pthread_mutex_unlock(&table_lock);
    return (void *)(uintptr_t)h;
full:
    pthread_mutex_unlock(&table_lock);
    return NULL;
}

/* The slot of a handle value that matches a live object of `kind`, or NULL. */
static slot *lookup(const void *handle, nm_handle_kind kind) {
    uint64_t h = (uint64_t)(uintptr_t)handle;
    uint32_t i = (uint32_t)(h & 0xffffffffu);
    uint32_t gen = (uint32_t)(h >> 32);
    if (i == 0 || i > nslots) return NULL;
    slot *s = slot_at(i - 1);
    if (s->kind != kind || s->gen != gen) return NULL;
    return s;
}

void *nm_handle_get(const void *handle, nm_handle_kind kind) {
    if (!handle) return NULL;
    pthread_mutex_lock(&table_lock);
    slot *s = lookup(handle, kind);
    void *obj = s ? s->obj : NULL;
    pthread_mutex_unlock(&table_lock);
    return obj;
}

void nm_handle_free(const void *handle) {
    if (!handle) return;
    pthread_mutex_lock(&table_lock);
    uint64_t h = (uint64_t)(uintptr_t)handle;
    uint32_t i = (uint32_t)(h & 0xffffffffu);
    if (i != 0 && i <= nslots) {
        slot *s = slot_at(i - 1);
        if (s->kind != 0 && s->gen == (uint32_t)(h >> 32)) {
            s->kind = 0;
            s->obj = NULL;
            s->gen++; /* the old handle stops matching at once */
            s->next_free = free_head;
            free_head = i - 1;
        }
    }
    pthread_mutex_unlock(&table_lock);
}
