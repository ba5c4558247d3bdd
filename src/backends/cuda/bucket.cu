/*
 * bucket.cu — the pack and unpack of neat_all_reduce_bucket (comm.c): the list's tensors
 * copied into one contiguous scratch buffer, reduced there by one NCCL call, and copied back.
 * Each direction is one kernel per BUCKET_BATCH tensors rather than one cudaMemcpyAsync per
 * tensor: in the replayed training step every memcpy node costs its own launch on the
 * critical path, before and after the all-reduce. blockIdx.y picks the tensor, the blocks
 * along x stride over its elements; a tensor's place in the packed buffer is the sum of the
 * element counts before it (empty tensors take none).
 */
#include "common.cuh"

enum { BUCKET_BATCH = 32 };

/* Passed by value as the kernel's parameter (32 * 24 bytes: within the 4 KiB limit). */
struct bucket_batch {
    float *tensor[BUCKET_BATCH];
    int64_t offset[BUCKET_BATCH]; /* where each starts in the packed buffer */
    int64_t numel[BUCKET_BATCH];
};

template <bool PACK> __global__ void bucket_copy_kernel(bucket_batch b, float *packed) {
    const int t = blockIdx.y;
    const int64_t n = b.numel[t];
    float *x = b.tensor[t], *p = packed + b.offset[t];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (PACK)
            p[i] = x[i];
        else
            x[i] = p[i];
    }
}

static neat_status launch(nm_device *dev, const bucket_batch &b, int count, int64_t largest,
                          float *packed, int pack, const char *what) {
    /* Enough blocks for the largest tensor, at most 2 per multiprocessor and tensor: a copy
     * is bound by memory bandwidth, not by the number of blocks. */
    int64_t blocks = (largest + CUDA_THREADS - 1) / CUDA_THREADS,
            cap = 2 * (int64_t)cuda_dev(dev)->sms;
    dim3 grid((unsigned)(blocks < cap ? blocks : cap), (unsigned)count);
    cudaStream_t s = cuda_dev(dev)->stream;
    if (pack)
        bucket_copy_kernel<true><<<grid, CUDA_THREADS, 0, s>>>(b, packed);
    else
        bucket_copy_kernel<false><<<grid, CUDA_THREADS, 0, s>>>(b, packed);
    return cuda_launched(what, pack ? "bucket_copy_kernel (pack)" : "bucket_copy_kernel (unpack)");
}

neat_status cuda_bucket_copy(nm_device *dev, const nm_op *op, float *packed, int pack) {
    bucket_batch b;
    int count = 0;
    int64_t offset = 0, largest = 0;
    for (int i = 0; i < op->nlist; i++) {
        const nm_tensor *t = op->list[i];
        if (t->numel > 0) {
            b.tensor[count] = t->data;
            b.offset[count] = offset;
            b.numel[count] = t->numel;
            if (t->numel > largest) largest = t->numel;
            count++;
        }
        offset += t->numel;
        if (count == BUCKET_BATCH || (count > 0 && i == op->nlist - 1)) {
            neat_status st = launch(dev, b, count, largest, packed, pack, op->fn);
            if (st) return st;
            count = 0, largest = 0;
        }
    }
    return NEAT_OK;
}
