/* testing.c — the hooks of testing.h. */
#include "testing.h"

#include "internal.h"

NEAT_API void *nm_testing_tensor_memory(const neat_tensor *h, size_t *bytes) {
    nm_tensor *t = nm_handle_get(h, NM_H_TENSOR);
    void *data = t && t->numel > 0 ? t->data : NULL;
    if (bytes) *bytes = data ? (size_t)t->numel * neat_dtype_size(t->dtype) : 0;
    return data;
}
