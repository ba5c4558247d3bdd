/* harness.c — counters, random numbers, device list and guarded buffers for the tests. */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int nt_passed, nt_failed, nt_skipped;

int nt_check(int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        nt_passed++;
        return 1;
    }
    nt_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 0;
}

int nt_check_status(neat_status st, neat_status want, const char *what, const char *file,
                    int line) {
    return nt_check(st == want, file, line, "%s: got %s, want %s (%s)", what,
                    neat_status_string(st), neat_status_string(want), neat_last_error());
}

void nt_skip(const char *fmt, ...) {
    nt_skipped++;
    printf("SKIP ");
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

int nt_finish(const char *suite) {
    printf("%s: %d passed, %d failed, %d skipped\n", suite, nt_passed, nt_failed, nt_skipped);
    return nt_failed ? 1 : 0;
}

static int wanted(const char *name) {
    const char *list = getenv("NEATML_TEST_BACKENDS");
    if (!list || !*list) return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

int nt_open_devices(neat_device **devs, const char **names) {
    static const struct {
        neat_backend b;
        const char *name;
    } all[] = {
        {NEAT_BACKEND_CPU, "cpu"}, {NEAT_BACKEND_CUDA, "cuda"}, {NEAT_BACKEND_METAL, "metal"}};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (!wanted(all[i].name)) continue;
        neat_device *d = NULL;
        neat_status st = neat_device_create(all[i].b, 0, &d);
        if (st != NEAT_OK) {
            /* Metal is only ever built on macOS: not worth a line elsewhere. */
            if (all[i].b == NEAT_BACKEND_METAL && st == NEAT_ERR_UNSUPPORTED) continue;
            nt_skip("backend %s: %s", all[i].name, neat_last_error());
            continue;
        }
        devs[n] = d;
        names[n] = all[i].name;
        n++;
    }
    return n;
}

void nt_close_devices(neat_device **devs, int n) {
    for (int i = 0; i < n; i++) neat_device_destroy(devs[i]);
}

static const uint32_t GUARD_BITS = 0x7fc0dead; /* a NaN with a recognisable payload */

float *nt_alloc(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n + 2 * NT_GUARD));
    if (!p) return NULL;
    for (int i = 0; i < NT_GUARD; i++) {
        memcpy(p + i, &GUARD_BITS, 4);
        memcpy(p + NT_GUARD + n + i, &GUARD_BITS, 4);
    }
    return p + NT_GUARD;
}

int nt_guard_ok(const float *p, int64_t n) {
    for (int i = 0; i < NT_GUARD; i++) {
        uint32_t a, b;
        memcpy(&a, p - NT_GUARD + i, 4);
        memcpy(&b, p + n + i, 4);
        if (a != GUARD_BITS || b != GUARD_BITS) return 0;
    }
    return 1;
}

void nt_free(float *p) {
    if (p) free(p - NT_GUARD);
}

void nt_poison(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}

void nt_permute_nhwc(const int64_t *s, const float *src, float *dst, int to_nhwc) {
    int64_t hw = s[2] * s[3];
    for (int64_t n = 0; n < s[0]; n++)
        for (int64_t c = 0; c < s[1]; c++)
            for (int64_t e = 0; e < hw; e++) {
                int64_t a = (n * s[1] + c) * hw + e, b = (n * hw + e) * s[1] + c;
                if (to_nhwc)
                    dst[b] = src[a];
                else
                    dst[a] = src[b];
            }
}

int nt_env_lists(const char *var, const char *name) {
    const char *e = getenv(var);
    if (!e || !*e) return 1;
    size_t len = strlen(name);
    for (const char *p = e; (p = strstr(p, name)) != NULL; p += len)
        if ((p == e || p[-1] == ',') && (p[len] == ',' || p[len] == '\0')) return 1;
    return 0;
}

uint64_t nt_seed_base(const char *suite, uint64_t dflt) {
    const char *env = getenv("NEATML_TEST_SEED");
    uint64_t base = env && *env ? strtoull(env, NULL, 0) : dflt;
    printf("%s: seed base %#llx (NEATML_TEST_SEED overrides)\n", suite, (unsigned long long)base);
    return base;
}
