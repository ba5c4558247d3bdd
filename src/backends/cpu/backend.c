/*
 * backend.c — the CPU backend's table, device, memory and execution queue.
 *
 * Each device owns one worker thread. neat_cmdbuf_commit appends a job to the device's
 * queue and returns; the worker runs the jobs' ops in order, each op opening its own OpenMP
 * parallel regions (oneDNN uses the same OpenMP runtime). A failing op stops its job (the
 * ops after it do not run); the failure goes to the command buffer for neat_cmdbuf_wait.
 * Jobs complete in order: `done_seq` is the seq of the last one finished.
 */
#include "cgroup.h"
#include "cpu.h"
#include "loops.h" /* omp.h, or its serial stand-ins without OpenMP */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct cpu_job {
    nm_cmdbuf *cb;
    uint64_t seq;
    float **staging; /* host copies staged at commit (copy.c) */
    struct cpu_job *next;
} cpu_job;

/* Run the ops of cb in order up to the first failure, which goes to cb with its index.
 * After it only collectives still run, so that the other ranks are not left waiting. */
static neat_status run_ops(nm_device *dev, nm_cmdbuf *cb) {
    neat_status first = NEAT_OK;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (first != NEAT_OK && !(nm_op_flags(op->kind) & NM_OPF_COLLECTIVE)) continue;
        neat_status st = cpu_run_op(dev, cb, op);
        if (st != NEAT_OK && first == NEAT_OK) {
            nm_cmdbuf_fail(cb, i, st, neat_last_error());
            first = st;
        }
    }
    return first;
}

static void *worker_main(void *arg) {
    nm_device *dev = arg;
    cpu_device *c = cpu_dev(dev);
#ifdef _OPENMP
    omp_set_num_threads(c->nthreads);
#endif
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->head && !c->stop) pthread_cond_wait(&c->work_cv, &c->lock);
        if (!c->head) break; /* stopping, queue empty */
        cpu_job *job = c->head;
        c->head = job->next;
        if (!c->head) c->tail = NULL;
        c->running = 1;
        pthread_mutex_unlock(&c->lock);

        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        c->staging = job->staging;
        neat_status st = run_ops(dev, job->cb);
        cpu_free_staging(job->cb, job->staging);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        cpu_dnnl_job_done(dev);
        nm_scratch_release(job->cb);
        if (st == NEAT_OK) {
            int64_t ns = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
            __atomic_store_n(&job->cb->device_ns, ns > 0 ? ns : 1, __ATOMIC_RELEASE);
        }

        pthread_mutex_lock(&c->lock);
        c->done_seq = job->seq;
        c->running = 0;
        free(job);
        pthread_cond_broadcast(&c->done_cv);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static int thread_count(void) {
    const char *env = getenv("NEATML_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == 0 && n >= 1 && n <= 1024) return (int)n;
    }
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 && n <= 1024 ? (int)n : 1;
#endif
}

static void cpu_name(char *out, size_t size) {
    snprintf(out, size, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(out, size, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

/* Memory free for the pool now: MemAvailable, and no more than the room left under the
 * process's memory cgroups (cgroup.h), so that an allocation past a container's limit gets
 * OUT_OF_MEMORY instead of the kill. */
static int64_t available_memory(void) {
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = (int64_t)kb * 1024;
        fclose(f);
    }
    char self[4096];
    size_t n = 0;
    if ((f = fopen("/proc/self/cgroup", "r"))) {
        n = fread(self, 1, sizeof self - 1, f);
        fclose(f);
        /* A text longer than the buffer: only whole lines, never a cut path. */
        if (n == sizeof self - 1)
            while (n > 0 && self[n - 1] != '\n') n--;
    }
    self[n] = 0;
    int64_t room = nm_cgroup_room(self, "/sys/fs/cgroup");
    if (room >= 0 && (avail < 0 || room < avail)) avail = room;
    return avail > 0 ? avail : 0;
}

static neat_status cpu_device_open(nm_device *dev, int index) {
    if (index != 0)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "neat_device_create: the CPU backend has one device (index 0), not %d",
                        index);
    cpu_device *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_device_create: out of host memory");
    c->nthreads = thread_count();
    const char *direct = getenv("NEATML_CPU_CONV_DIRECT");
    c->conv_direct = !(direct && strcmp(direct, "0") == 0);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->work_cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    dev->impl = c;
    neat_status st = cpu_dnnl_open(dev);
    if (st == NEAT_OK && pthread_create(&c->worker, NULL, worker_main, dev) != 0) {
        cpu_dnnl_close(dev);
        st = nm_error(NEAT_ERR_BACKEND_ERROR,
                      "neat_device_create: cannot start the CPU worker thread");
    }
    if (st != NEAT_OK) {
        pthread_cond_destroy(&c->work_cv);
        pthread_cond_destroy(&c->done_cv);
        pthread_mutex_destroy(&c->lock);
        free(c);
        dev->impl = NULL;
        return st;
    }
    cpu_name(dev->props.name, sizeof dev->props.name);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    dev->props.total_memory = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
    dev->props.num_threads = c->nthreads;
    dev->mem_available = available_memory();
    return NEAT_OK;
}

static void cpu_device_close(nm_device *dev) {
    cpu_device *c = cpu_dev(dev);
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_broadcast(&c->work_cv);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->worker, NULL);
    cpu_dnnl_close(dev);
    pthread_cond_destroy(&c->work_cv);
    pthread_cond_destroy(&c->done_cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* The message names the bytes; the caller prefixes the public call (tensor.c) or the op
 * (run_ops), so that the message is never the one an earlier failure left. */
static neat_status cpu_mem_alloc(nm_device *dev, size_t bytes, void **ptr) {
    /* More than the machine's RAM cannot be used, even where Linux would overcommit it. */
    if (dev->props.total_memory > 0 && bytes > (size_t)dev->props.total_memory)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                        "out of host memory: %zu bytes asked for, the machine has %lld", bytes,
                        (long long)dev->props.total_memory);
    /* 64-byte alignment: a cache line, and what AVX-512 loads and oneDNN like. */
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY,
                        "out of host memory: aligned_alloc of %zu bytes failed", bytes);
    *ptr = p;
    return NEAT_OK;
}

static void cpu_mem_free(nm_device *dev, void *ptr, size_t bytes) { free(ptr); }

static neat_status cpu_copy(nm_device *dev, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
    return NEAT_OK;
}

static neat_status cpu_submit(nm_device *dev, nm_cmdbuf *cb, uint64_t seq) {
    cpu_device *c = cpu_dev(dev);
    cpu_job *job = malloc(sizeof *job);
    if (!job) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_cmdbuf_commit: out of host memory");
    job->cb = cb;
    job->seq = seq;
    job->next = NULL;
    neat_status st = cpu_stage_host_copies(cb, &job->staging);
    if (st) {
        free(job);
        return st;
    }
    pthread_mutex_lock(&c->lock);
    if (c->tail)
        c->tail->next = job;
    else
        c->head = job;
    c->tail = job;
    pthread_cond_signal(&c->work_cv);
    pthread_mutex_unlock(&c->lock);
    return NEAT_OK;
}

static uint64_t cpu_completed(nm_device *dev) {
    cpu_device *c = cpu_dev(dev);
    pthread_mutex_lock(&c->lock);
    uint64_t done = c->done_seq;
    pthread_mutex_unlock(&c->lock);
    return done;
}

static neat_status cpu_wait_seq(nm_device *dev, uint64_t seq) {
    cpu_device *c = cpu_dev(dev);
    pthread_mutex_lock(&c->lock);
    while (c->done_seq < seq) pthread_cond_wait(&c->done_cv, &c->lock);
    pthread_mutex_unlock(&c->lock);
    return NEAT_OK;
}

const nm_backend_ops nm_cpu_backend = {
    .abi_version = NM_BACKEND_ABI,
    .kind = NEAT_BACKEND_CPU,
    .name = "cpu",
    .device_open = cpu_device_open,
    .device_close = cpu_device_close,
    .mem_alloc = cpu_mem_alloc,
    .mem_free = cpu_mem_free,
    .copy_in = cpu_copy,
    .copy_out = cpu_copy,
    .submit = cpu_submit,
    .completed = cpu_completed,
    .wait_seq = cpu_wait_seq,
    .cmdbuf_release = cpu_comm_cmdbuf_release,
    .op_check = cpu_op_check,
    .comm_id_create = cpu_comm_id_create,
    .comm_create = cpu_comm_create,
    .comm_create_all = cpu_comm_create_all,
    .comm_destroy = cpu_comm_destroy,
    .op = NM_OP_TABLE_WITH_COLLECTIVES(cpu),
};
