/* registry.c — the one place that names every backend, each only when it was built, and
 * the order in which NEAT_BACKEND_AUTO tries them. */
#include "backend.h"

#include <stddef.h>
#include <stdio.h>
#include <strings.h>

extern const nm_backend_ops nm_cpu_backend;
#ifdef NEATML_HAVE_CUDA
extern const nm_backend_ops nm_cuda_backend;
#endif
#ifdef NEATML_HAVE_METAL
extern const nm_backend_ops nm_metal_backend;
#endif

/* Best first: a GPU when one opens, the CPU (always built) last. NULL-terminated. */
const nm_backend_ops *const nm_backend_auto_order[] = {
#ifdef NEATML_HAVE_CUDA
    &nm_cuda_backend,
#endif
#ifdef NEATML_HAVE_METAL
    &nm_metal_backend,
#endif
    &nm_cpu_backend,
    NULL,
};

/* Names of every neat_backend value, built or not (messages name a missing backend too). */
static const char *const backend_names[] = {
    [NEAT_BACKEND_AUTO] = "auto",
    [NEAT_BACKEND_CPU] = "cpu",
    [NEAT_BACKEND_CUDA] = "cuda",
    [NEAT_BACKEND_METAL] = "metal",
};
#define NBACKENDS (int)(sizeof backend_names / sizeof backend_names[0])

const nm_backend_ops *nm_backend_find(neat_backend kind) {
    for (int i = 0; nm_backend_auto_order[i]; i++)
        if (nm_backend_auto_order[i]->kind == kind) return nm_backend_auto_order[i];
    return NULL;
}

NEAT_API const char *neat_backend_name(neat_backend backend) {
    return (int)backend >= 0 && (int)backend < NBACKENDS ? backend_names[backend] : NULL;
}

NEAT_API neat_status neat_backend_from_name(const char *name, neat_backend *out) {
    if (!name || !out)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_backend_from_name: %s is NULL",
                        name ? "out" : "name");
    for (int i = 0; i < NBACKENDS; i++)
        if (!strcasecmp(name, backend_names[i])) {
            *out = (neat_backend)i;
            return NEAT_OK;
        }
    char known[64] = "";
    for (int i = 0, used = 0; i < NBACKENDS; i++)
        used += snprintf(known + used, sizeof known - (size_t)used, "%s%s", i ? ", " : "",
                         backend_names[i]);
    return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_backend_from_name: \"%s\" is not one of %s",
                    name, known);
}

NEAT_API int neat_backend_is_built(neat_backend backend) {
    /* AUTO has no table of its own: it is built as the CPU always is (neatml.h) */
    return backend == NEAT_BACKEND_AUTO || nm_backend_find(backend) != NULL;
}
