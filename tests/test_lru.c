/*
 * test_lru.c — the bounded plan cache of src/backends/lru.h, which the CPU's oneDNN plans
 * and the CUDA backend's cuBLASLt and cuDNN plans share: hits, the eviction order (least
 * recently used first, a hit refreshes), every value freed exactly once (on eviction or on
 * clear), and a cache of 512 entries under 4096 keys. Runs without a device.
 */
#include "harness.h"

#include "../src/backends/lru.h"

#include <stdlib.h>

static int freed[4096];

static void free_value(void *v) {
    int *p = (int *)v;
    freed[*p]++;
    free(p);
}

static int *value(int k) {
    int *p = malloc(sizeof *p);
    *p = k;
    return p;
}

static int *get(nm_lru *c, int k) { return (int *)nm_lru_get(c, &k, sizeof k); }

static void put(nm_lru *c, int k) {
    int *v = value(k);
    if (!CHECK(nm_lru_put(c, &k, sizeof k, v, free_value) == 0, "put %d", k)) free(v);
}

static void test_order(void) {
    nm_lru c;
    nm_lru_init(&c, 3);
    put(&c, 1), put(&c, 2), put(&c, 3);
    CHECK(c.count == 3, "count %d after 3 puts, want 3", c.count);
    int *one = get(&c, 1); /* 1 becomes the most recent: 2 is now the oldest */
    CHECK(one && *one == 1, "get 1");
    put(&c, 4);
    CHECK(c.count == 3, "count %d after the 4th put, want 3", c.count);
    CHECK(freed[2] == 1 && !get(&c, 2), "2 (least recently used) evicted and freed once");
    CHECK(get(&c, 1) && get(&c, 3) && get(&c, 4), "1, 3, 4 still cached");
    CHECK(freed[1] == 0 && freed[3] == 0 && freed[4] == 0, "nothing else freed");
    put(&c, 5); /* the order is now 4, 3, 1 (oldest last): 1 goes */
    CHECK(freed[1] == 1 && !get(&c, 1), "1 evicted after 3 and 4 were used");
    nm_lru_clear(&c);
    CHECK(c.count == 0 && !c.head && !c.tail, "empty after clear");
    CHECK(freed[3] == 1 && freed[4] == 1 && freed[5] == 1, "clear frees the rest once");
    put(&c, 6); /* usable after clear, same capacity */
    CHECK(c.capacity == 3 && get(&c, 6), "usable after clear");
    nm_lru_clear(&c);
    CHECK(freed[6] == 1, "6 freed once");
}

static void test_many(void) {
    nm_lru c;
    nm_lru_init(&c, NM_LRU_CAPACITY);
    for (int k = 0; k < 4096; k++) freed[k] = 0;
    for (int k = 0; k < 4096; k++) put(&c, k);
    CHECK(c.count == NM_LRU_CAPACITY, "count %d, want %d", c.count, NM_LRU_CAPACITY);
    int ok = 1;
    for (int k = 0; k < 4096; k++) {
        int cached = get(&c, k) != NULL, evicted = k < 4096 - NM_LRU_CAPACITY;
        if (cached == evicted || freed[k] != evicted) ok = 0;
    }
    CHECK(ok, "the %d most recent keys cached, every older one freed once", NM_LRU_CAPACITY);
    nm_lru_clear(&c);
    ok = 1;
    for (int k = 0; k < 4096; k++) ok &= freed[k] == 1;
    CHECK(ok, "every value freed exactly once");
}

int main(void) {
    test_order();
    test_many();
    return nt_finish("lru");
}
