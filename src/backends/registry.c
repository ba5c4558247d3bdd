/* registry.c — the one place that names every backend, each only when it was built. */
#include "backend.h"

extern const nm_backend_ops nm_cpu_backend;
#ifdef NEATML_HAVE_CUDA
extern const nm_backend_ops nm_cuda_backend;
#endif
#ifdef NEATML_HAVE_METAL
extern const nm_backend_ops nm_metal_backend;
#endif

const nm_backend_ops *nm_backend_find(neat_backend kind) {
    switch (kind) {
    case NEAT_BACKEND_CPU: return &nm_cpu_backend;
#ifdef NEATML_HAVE_CUDA
    case NEAT_BACKEND_CUDA: return &nm_cuda_backend;
#endif
#ifdef NEATML_HAVE_METAL
    case NEAT_BACKEND_METAL: return &nm_metal_backend;
#endif
    default: return NULL;
    }
}
