/*
 * cgroup.h — the memory a Linux process may still take under its cgroups' limits, for the
 * CPU device's default pool budget (backend.c).
 *
 * /proc/self/cgroup names the process's cgroup in each hierarchy, one line
 * "id:controllers:/path": v2 is the line "0::/path", v1's memory hierarchy the line whose
 * controllers include "memory". The limit of a nested cgroup lives in its own folder, not at
 * the hierarchy's root, and every ancestor's limit binds it too; so the room is the least
 * (limit - usage) over the cgroup and its ancestors: v2 memory.max and memory.current under
 * <root>/path, v1 memory.limit_in_bytes and memory.usage_in_bytes under <root>/memory/path.
 * "max", a missing file, and v1's "no limit" (about 2^63) are no limit. A folder the path
 * names but that is absent here (a container that sees its own cgroup as the root) is
 * skipped, and the walk still reaches the root.
 *
 * Header-only: tests/test_cgroup.c runs nm_cgroup_room over a fake tree.
 */
#ifndef NEATML_CPU_CGROUP_H
#define NEATML_CPU_CGROUP_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NM_CGROUP_UNLIMITED ((int64_t)1 << 60)

/* The number at the start of the file dir/name, or -1 (absent, "max", not a number). */
static inline int64_t nm_cgroup_number(const char *dir, const char *name) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1 || v < 0) v = -1;
    fclose(f);
    return v;
}

/* The least room of `room` (-1: none yet) and that under each limit from root/path[0, len)
 * up to root. */
static inline int64_t nm_cgroup_walk(const char *root, const char *path, size_t len,
                                     const char *limit_name, const char *usage_name, int64_t room) {
    char dir[4096];
    for (;;) {
        while (len > 0 && path[len - 1] == '/') len--;
        if (snprintf(dir, sizeof dir, "%s%.*s", root, (int)len, path) < (int)sizeof dir) {
            int64_t limit = nm_cgroup_number(dir, limit_name);
            if (limit >= 0 && limit < NM_CGROUP_UNLIMITED) {
                int64_t used = nm_cgroup_number(dir, usage_name);
                int64_t r = used < 0 ? limit : limit > used ? limit - used : 0;
                if (room < 0 || r < room) room = r;
            }
        }
        if (len == 0) return room;
        while (len > 0 && path[len - 1] != '/') len--; /* up to the parent */
    }
}

/* 1 when the comma-separated list [s, end) has the entry `name`. */
static inline int nm_cgroup_has(const char *s, const char *end, const char *name) {
    size_t n = strlen(name);
    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        if ((size_t)(stop - s) == n && memcmp(s, name, n) == 0) return 1;
        s = stop + 1;
    }
    return 0;
}

/* Bytes the process may still take under its memory cgroups, or -1 when none has a limit.
 * `self`: the text of /proc/self/cgroup; `root`: where the hierarchies are mounted
 * (/sys/fs/cgroup). */
static inline int64_t nm_cgroup_room(const char *self, const char *root) {
    char v1root[4096];
    if (snprintf(v1root, sizeof v1root, "%s/memory", root) >= (int)sizeof v1root) return -1;
    int64_t room = -1;
    while (*self) {
        const char *end = strchr(self, '\n');
        if (!end) end = self + strlen(self);
        const char *c1 = memchr(self, ':', (size_t)(end - self));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        if (c2 && c2[1] == '/') {
            const char *path = c2 + 1;
            size_t len = (size_t)(end - path);
            if (c1 - self == 1 && self[0] == '0' && c2 == c1 + 1)
                room = nm_cgroup_walk(root, path, len, "memory.max", "memory.current", room);
            else if (nm_cgroup_has(c1 + 1, c2, "memory"))
                room = nm_cgroup_walk(v1root, path, len, "memory.limit_in_bytes",
                                      "memory.usage_in_bytes", room);
        }
        self = *end ? end + 1 : end;
    }
    return room;
}

#endif
