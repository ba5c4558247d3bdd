/*
 * testing.h — hooks for the library's own tests: what no public call can reach. Exported
 * from the shared library (the tests link against its exported symbols only) but declared
 * here, not in neatml.h: no part of the API, no stability promise, no binding. sqlite's
 * sqlite3_test_control exists for the same reason.
 */
#ifndef NEATML_CORE_TESTING_H
#define NEATML_CORE_TESTING_H

#include "neatml.h"

#include <stddef.h>

/* The memory of tensor t as the backend's kernels see it (a host pointer on the CPU, a
 * device pointer on CUDA) and its size in bytes; NULL (and 0) for a handle that is not a
 * live tensor, or an empty one. A test writes through it what a faulty kernel would, e.g.
 * past the end, where the debug pool keeps its canary (NEATML_DEBUG_POOL=1). */
NEAT_API void *nm_testing_tensor_memory(const neat_tensor *t, size_t *bytes);

#endif
