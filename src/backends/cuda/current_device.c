/*
 * current_device.c — the calling thread's current CUDA device, selected and given back.
 *
 * A CUDA runtime call acts on the calling thread's current device. The backend has no thread
 * of its own: every table entry runs on the application's thread, so each one that makes
 * CUDA calls (device open and close, memory, copies, submit, completion, wait, release, the
 * comms) selects its device with cuda_enter and gives the thread's previous device back with
 * cuda_leave: an application that keeps its own work on device 0 finds device 0 current
 * after any neatml call, whatever device that call used. When the thread is already on the
 * device both cost one cudaGetDevice (a thread-local read); calls nest (an allocation inside
 * a commit).
 *
 * One exception, as PyTorch's device guard makes it: a previous device whose primary context
 * is not active is not made current again, because cudaSetDevice would create that context
 * (CUDA 12 initialises the device it selects). A thread that never chose a device reads
 * device 0, so without the exception every rank of a job running on GPU k would put a
 * context (hundreds of MiB) on GPU 0. Such a thread stays on neatml's device.
 */
#include "common.h"

#include <cuda.h> /* CUresult, CUdevice: types only (driver_entry) */
#include <pthread.h>

/* A driver function, found through the runtime (linking libcuda would keep the library
 * from loading on a machine without the driver, where the CPU backend must still work). */
static void *driver_entry(const char *symbol, unsigned version) {
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    cudaError_t e =
        cudaGetDriverEntryPointByVersion(symbol, &fn, version, cudaEnableDefault, &found);
#else
    (void)version;
    cudaError_t e = cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault, &found);
#endif
    if (e != cudaSuccess) cudaGetLastError();
    return e == cudaSuccess && found == cudaDriverEntryPointSuccess ? fn : NULL;
}

/* The two driver functions, looked up once (a lookup costs more than the calls). */
static CUresult (*device_get)(CUdevice *, int);
static CUresult (*ctx_state)(CUdevice, unsigned *, int *);
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

static void find_driver(void) {
    device_get = (CUresult(*)(CUdevice *, int))driver_entry("cuDeviceGet", 2000);
    ctx_state =
        (CUresult(*)(CUdevice, unsigned *, int *))driver_entry("cuDevicePrimaryCtxGetState", 7000);
}

/* Whether the primary context of device `index` is active; 1 when the driver cannot say
 * (then the device is restored, the rule's plain form). */
static int primary_context_active(int index) {
    pthread_once(&driver_once, find_driver);
    CUdevice cu;
    unsigned flags;
    int active;
    if (!device_get || !ctx_state || device_get(&cu, index) != CUDA_SUCCESS ||
        ctx_state(cu, &flags, &active) != CUDA_SUCCESS)
        return 1;
    return active;
}

neat_status cuda_enter(int index, const char *fn, int *prev) {
    int cur = -1;
    *prev = -1;
    neat_status st = cuda_check(cudaGetDevice(&cur), fn, "cudaGetDevice");
    if (st) return st;
    *prev = cur;
    if (cur == index) return NEAT_OK;
    return cuda_check(cudaSetDevice(index), fn, "cudaSetDevice");
}

/* Not a status: the call's own work is done by then (a commit submitted, memory allocated)
 * and a failure here would make the caller believe otherwise. Restoring fails only when the
 * caller's device itself is broken, which its own next call reports; the error is cleared so
 * that the application's cudaGetLastError does not see it. */
void cuda_leave(int prev) {
    int cur;
    if (prev < 0) return;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        cudaGetLastError();
        return;
    }
    if (cur == prev || !primary_context_active(prev)) return;
    if (cudaSetDevice(prev) != cudaSuccess) cudaGetLastError();
}
