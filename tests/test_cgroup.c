/*
 * test_cgroup.c — the CPU device's default memory budget under cgroup limits
 * (src/backends/cpu/cgroup.h): nm_cgroup_room over fake /sys/fs/cgroup trees, one row per
 * case (a nested cgroup's own limit, a parent's that binds it, v1 and v2, "max", missing
 * folders, malformed lines); then the budget a CPU device opens with, which must be > 0 and
 * no more than the memory available and the room under this process's real cgroups.
 */
#include "harness.h"

#include "../src/backends/cpu/cgroup.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define V1_NO_LIMIT "9223372036854771712" /* what v1 writes for "no limit" */

typedef struct cgroup_case {
    const char *name;
    const char *self;        /* the text of /proc/self/cgroup */
    const char *files[8][2]; /* path under the fake root, content; ends at a NULL path */
    int64_t want;            /* -1: no limit */
} cgroup_case;

static const cgroup_case cases[] = {
    {"v2: the process's own cgroup",
     "0::/a/b\n",
     {{"a/b/memory.max", "1000\n"}, {"a/b/memory.current", "100\n"}, {"a/memory.max", "max\n"}},
     900},
    {"v2: a parent's limit binds",
     "0::/a/b\n",
     {{"a/b/memory.max", "1000\n"},
      {"a/b/memory.current", "100\n"},
      {"a/memory.max", "500\n"},
      {"a/memory.current", "200\n"}},
     300},
    {"v2: max at every level",
     "0::/a/b\n",
     {{"a/b/memory.max", "max\n"}, {"a/memory.max", "max\n"}, {"a/b/memory.current", "7\n"}},
     -1},
    {"v2: at the root", "0::/\n", {{"memory.max", "2048\n"}, {"memory.current", "48\n"}}, 2000},
    {"v2: the cgroup's folder absent, the root's limit",
     "0::/gone/x\n",
     {{"memory.max", "4096"}},
     4096},
    {"v2: usage past the limit",
     "0::/a\n",
     {{"a/memory.max", "100"}, {"a/memory.current", "300"}},
     0},
    {"v2: no trailing newline", "0::/a", {{"a/memory.max", "10\n"}}, 10},
    {"v1: a nested cgroup",
     "5:cpu:/\n4:memory:/p/q\n0::/\n",
     {{"memory/p/q/memory.limit_in_bytes", "8192\n"},
      {"memory/p/q/memory.usage_in_bytes", "1024\n"},
      {"memory/memory.limit_in_bytes", V1_NO_LIMIT "\n"},
      {"memory/memory.usage_in_bytes", "123456\n"}},
     7168},
    {"v1: memory among other controllers",
     "6:cpuacct,memory,pids:/p\n",
     {{"memory/p/memory.limit_in_bytes", "600\n"}, {"memory/memory.limit_in_bytes", "700\n"}},
     600},
    {"v1: only memory is the memory controller",
     "4:memoryx:/p\n",
     {{"memory/p/memory.limit_in_bytes", "100\n"}},
     -1},
    {"v1: no limit anywhere",
     "4:memory:/p\n",
     {{"memory/p/memory.limit_in_bytes", V1_NO_LIMIT "\n"},
      {"memory/memory.limit_in_bytes", V1_NO_LIMIT "\n"}},
     -1},
    {"hybrid: the least of v1 and v2",
     "4:memory:/p\n0::/p\n",
     {{"memory/p/memory.limit_in_bytes", "5000\n"}, {"p/memory.max", "3000\n"}},
     3000},
    {"no cgroup lines", "", {{"memory.max", "10\n"}}, -1},
    {"malformed lines", "nonsense\n:\n0::relative\n7:memory\n", {{"memory.max", "10\n"}}, -1},
};

/* Remove the fake tree: the files, then each one's folders deepest first (a folder that
 * still holds another's is left for that one). */
static void remove_tree(const char *root, const cgroup_case *c) {
    char path[4096];
    for (int i = 0; i < 8 && c->files[i][0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, c->files[i][0]);
        remove(path);
    }
    for (int i = 0; i < 8 && c->files[i][0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, c->files[i][0]);
        for (char *s = strrchr(path, '/'); s && s > path + strlen(root); s = strrchr(path, '/')) {
            *s = 0;
            rmdir(path);
        }
    }
    rmdir(root);
}

/* Write root/rel, making its folders. */
static int write_file(const char *root, const char *rel, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *s = strchr(path + strlen(root) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static void test_room(const cgroup_case *c) {
    char root[] = "/tmp/neatml_cgroup_XXXXXX";
    if (!CHECK(mkdtemp(root) != NULL, "%s: mkdtemp", c->name)) return;
    int ok = 1;
    for (int i = 0; i < 8 && c->files[i][0]; i++)
        ok &= write_file(root, c->files[i][0], c->files[i][1]);
    if (CHECK(ok, "%s: could not write the fake tree under %s", c->name, root)) {
        int64_t got = nm_cgroup_room(c->self, root);
        CHECK(got == c->want, "%s: room %lld, want %lld", c->name, (long long)got,
              (long long)c->want);
    }
    remove_tree(root, c);
}

/* MemAvailable in bytes, -1 when unknown. */
static int64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : (int64_t)kb * 1024;
}

/* The room under this process's real cgroups, -1 when none has a limit or no /proc. */
static int64_t real_room(void) {
    char self[4096] = {0};
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    size_t n = fread(self, 1, sizeof self - 1, f);
    fclose(f);
    self[n] = 0;
    return nm_cgroup_room(self, "/sys/fs/cgroup");
}

/* The default limit a CPU device opens with: > 0, within the machine, and no more than what
 * the OS and the cgroups let this process have (readings before and after the open, plus a
 * slack for what other processes free meanwhile). */
static void test_device_default(void) {
    if (!nt_env_lists("NEATML_TEST_BACKENDS", "cpu")) {
        nt_skip("default budget: NEATML_TEST_BACKENDS leaves the CPU out");
        return;
    }
    const int64_t slack = (int64_t)256 << 20;
    int64_t avail0 = mem_available(), room0 = real_room();
    neat_device *dev = NULL;
    if (!CHECK_OK(neat_device_create(NEAT_BACKEND_CPU, 0, &dev), "neat_device_create(CPU)")) return;
    int64_t avail1 = mem_available(), room1 = real_room();
    neat_memory_stats s;
    neat_device_props props;
    CHECK_OK(neat_device_memory_stats(dev, &s), "neat_device_memory_stats");
    CHECK_OK(neat_device_info(dev, &props), "neat_device_info");
    CHECK(s.limit > 0, "default limit %lld", (long long)s.limit);
    CHECK(s.limit <= props.total_memory, "default limit %lld past the machine's %lld bytes",
          (long long)s.limit, (long long)props.total_memory);
    if (avail0 > 0 && avail1 > 0) {
        int64_t avail = avail0 > avail1 ? avail0 : avail1;
        CHECK(s.limit <= avail + slack, "default limit %lld past MemAvailable %lld",
              (long long)s.limit, (long long)avail);
    }
    if (room0 >= 0 && room1 >= 0) {
        int64_t room = room0 > room1 ? room0 : room1;
        CHECK(s.limit <= room + slack, "default limit %lld past the cgroups' room %lld",
              (long long)s.limit, (long long)room);
    }
    printf("cpu: default memory limit %lld bytes (MemAvailable %lld, cgroup room %lld)\n",
           (long long)s.limit, (long long)avail1, (long long)room1);
    neat_device_destroy(dev);
}

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_room(&cases[i]);
    test_device_default();
    return nt_finish("cgroup");
}
