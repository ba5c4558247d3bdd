/*
 * dnnl.c — the oneDNN state of a CPU device: engine, stream, and the plan cache that keeps
 * each op's primitives per shape (dnnl_util.h says what a plan is); plus the primitive
 * helpers every oneDNN op uses.
 *
 * The cache is lru.h's: a hash table of byte keys (FNV-1a) with a most-recently-used list;
 * past CPU_PLAN_CAPACITY plans the least recently used one is destroyed. oneDNN keeps its own
 * primitive cache too, but a hit there still costs the primitive-descriptor creation
 * (several us); a hit here costs a hash and a memcmp.
 */
#include "dnnl_util.h"

#include <oneapi/dnnl/dnnl_debug.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

neat_status cpu_dnnl_fail(dnnl_status_t s, const char *fn, const char *call) {
    int len = (int)strcspn(call, "(");
    neat_status st = s == dnnl_out_of_memory ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR;
    return nm_error(st, "%s: oneDNN %.*s failed: %s", fn, len, call, dnnl_status2str(s));
}

neat_status cpu_dnnl_open(nm_device *dev) {
    const char *fn = "neat_device_create";
    neat_status st = NEAT_OK;
    cpu_dnnl *d = calloc(1, sizeof *d);
    if (!d) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: no memory for the oneDNN state", fn);
    nm_lru_init(&d->plans, CPU_PLAN_CAPACITY);
#if DNNL_VERSION_MAJOR >= 3
    /* oneDNN 3 prints its errors to stdout unless told otherwise; the library never prints,
     * and its messages carry the failed call. A user who sets ONEDNN_VERBOSE keeps it. */
    if (!getenv("ONEDNN_VERBOSE") && !getenv("DNNL_VERBOSE")) dnnl_set_verbose(0);
#endif
    DNNL_TRY(dnnl_engine_create(&d->engine, dnnl_cpu, 0));
    DNNL_TRY(dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags));
    cpu_dev(dev)->dnnl = d;
    /* bf16 GEMMs and convolutions (half.c's bf16_path) on oneDNN's own bf16 kernels where
     * the CPU has bf16 instructions (AVX512_BF16, or AMX, whose ISA level includes it);
     * elsewhere on float32 copies: oneDNN's emulation of bf16 on plain AVX-512 took 4x their
     * time on the development VM. NEATML_CPU_BF16=0: never; =2: always (the tests reach the
     * path on any CPU). A bf16 primitive oneDNN refuses turns its path off (half.c). */
    const char *env = getenv("NEATML_CPU_BF16");
#if defined(__x86_64__)
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int bf16_isa = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
#else
    int bf16_isa = 0; /* the ISA values are x86-64's (aarch64's oneDNN answers its own) */
#endif
    cpu_dev(dev)->bf16_gemm = env && strcmp(env, "0") == 0   ? 0
                              : env && strcmp(env, "2") == 0 ? 1
                                                             : bf16_isa;
    cpu_dev(dev)->bf16_conv = cpu_dev(dev)->bf16_gemm;
    return NEAT_OK;
fail:
    if (d->engine) dnnl_engine_destroy(d->engine);
    free(d);
    return st;
}

void cpu_dnnl_close(nm_device *dev) {
    cpu_dnnl *d = cpu_dev(dev)->dnnl;
    if (!d) return;
    nm_lru_clear(&d->plans);
    if (d->stream) dnnl_stream_destroy(d->stream);
    if (d->engine) dnnl_engine_destroy(d->engine);
    free(d);
    cpu_dev(dev)->dnnl = NULL;
}

void cpu_dnnl_job_done(nm_device *dev) {
    cpu_dnnl *d = cpu_dev(dev)->dnnl;
    if (!d) return;
    d->scratchpad = NULL;
    d->scratchpad_bytes = 0;
}

/* ---- plan cache ------------------------------------------------------------------------------ */

neat_status cpu_dnnl_plan(nm_device *dev, const void *key, size_t keylen, cpu_plan_build_fn build,
                          cpu_plan_free_fn free_plan, const void *ctx, void **plan) {
    cpu_dnnl *d = cpu_dnnl_of(dev);
    void *found = nm_lru_get(&d->plans, key, keylen);
    if (found) {
        *plan = found;
        return NEAT_OK;
    }
    void *built = NULL;
    neat_status st = build(d, ctx, &built);
    if (st != NEAT_OK) return st;
    if (nm_lru_put(&d->plans, key, keylen, built, free_plan) != 0) {
        if (free_plan) free_plan(built);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "no memory for a oneDNN plan");
    }
    *plan = built;
    return NEAT_OK;
}

/* ---- attributes and activations ------------------------------------------------------------ */

neat_status cpu_dnnl_attr(const char *fn, dnnl_primitive_attr_t *attr) {
    neat_status st = NEAT_OK;
    *attr = NULL;
    DNNL_TRY(dnnl_primitive_attr_create(attr));
    DNNL_TRY(dnnl_primitive_attr_set_fpmath_mode(*attr, dnnl_fpmath_mode_strict));
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user));
    return NEAT_OK;
fail:
    if (*attr) dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return st;
}

int cpu_dnnl_act_alg(neat_activation act, dnnl_alg_kind_t *alg) {
    switch (act) {
    case NEAT_ACT_RELU: *alg = dnnl_eltwise_relu; return 1;
    case NEAT_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; return 1;
    case NEAT_ACT_TANH: *alg = dnnl_eltwise_tanh; return 1;
    /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the form of neatml.h */
    case NEAT_ACT_GELU: *alg = dnnl_eltwise_gelu_tanh; return 1;
    default: return 0;
    }
}

int cpu_fused_relu_exact(int nthreads, int64_t k, float alpha, neat_dtype dt, const void *a,
                         int64_t na, const void *b, int64_t nb, const void *bias, int64_t nbias) {
    double ma = cpu_max_abs(nthreads, a, dt, na);
    if (isinf(ma)) return 0;
    double mb = cpu_max_abs(nthreads, b, dt, nb);
    double mbias = bias ? cpu_max_abs(nthreads, bias, dt, nbias) : 0.0;
    double bound = fabs((double)alpha) * (double)k * ma * mb + mbias; /* inf when one is */
    /* each partial sum is at most bound grown by the roundings of k additions, (1 + 2^-24)^k
     * <= 1 + k 2^-23 for k below 2^23; float32 overflows at 2^128 */
    return k < ((int64_t)1 << 23) && bound * (1.0 + (double)k * 0x1p-23) < 0x1p126;
}

/* ---- cached primitives ------------------------------------------------------------------- */

neat_status cpu_prim_init(cpu_dnnl *d, const char *fn, const_dnnl_primitive_desc_t pd,
                          const int *arg_ids, int nargs, cpu_prim *p) {
    neat_status st = NEAT_OK;
    memset(p, 0, sizeof *p);
    if (nargs > CPU_PRIM_MAX_ARGS)
        return nm_error(NEAT_ERR_INTERNAL, "%s: %d primitive arguments", fn, nargs);
    DNNL_TRY(dnnl_primitive_create(&p->prim, pd));
    for (int i = 0; i < nargs; i++) {
        cpu_md_c md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg_ids[i]);
        if (!md) {
            st = nm_error(NEAT_ERR_INTERNAL, "%s: oneDNN has no argument %d", fn, arg_ids[i]);
            goto fail;
        }
        p->args[i].arg = arg_ids[i];
        DNNL_TRY(dnnl_memory_create(&p->args[i].memory, md, d->engine, DNNL_MEMORY_NONE));
        p->nargs = i + 1;
    }
    cpu_md_c sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
    if (p->scratch_bytes > 0)
        DNNL_TRY(dnnl_memory_create(&p->scratchpad, sp, d->engine, DNNL_MEMORY_NONE));
    return NEAT_OK;
fail:
    cpu_prim_destroy(p);
    return st;
}

neat_status cpu_prim_add_arg(cpu_dnnl *d, const char *fn, cpu_prim *p, int arg_id, cpu_md_c md) {
    neat_status st = NEAT_OK;
    if (p->nargs >= CPU_PRIM_MAX_ARGS)
        return nm_error(NEAT_ERR_INTERNAL, "%s: %d primitive arguments", fn, p->nargs + 1);
    p->args[p->nargs].arg = arg_id;
    DNNL_TRY(dnnl_memory_create(&p->args[p->nargs].memory, md, d->engine, DNNL_MEMORY_NONE));
    p->nargs++;
    return NEAT_OK;
fail:
    p->args[p->nargs].memory = NULL;
    return st;
}

neat_status cpu_prim_run(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_prim *p,
                         void *const *data) {
    neat_status st = NEAT_OK;
    cpu_dnnl *d = cpu_dnnl_of(dev);
    int n = p->nargs;
    for (int i = 0; i < p->nargs; i++)
        DNNL_TRY(dnnl_memory_set_data_handle(p->args[i].memory, data[i]));
    if (p->scratch_bytes > 0) {
        if (p->scratch_bytes > d->scratchpad_bytes) {
            st = nm_scratch_alloc(cb, p->scratch_bytes, &d->scratchpad);
            if (st != NEAT_OK) return st;
            d->scratchpad_bytes = p->scratch_bytes;
        }
        DNNL_TRY(dnnl_memory_set_data_handle(p->scratchpad, d->scratchpad));
        p->args[n].arg = DNNL_ARG_SCRATCHPAD;
        p->args[n++].memory = p->scratchpad;
    }
    DNNL_TRY(dnnl_primitive_execute(p->prim, d->stream, n, p->args));
    DNNL_TRY(dnnl_stream_wait(d->stream));
    return NEAT_OK;
fail:
    return st;
}

void cpu_prim_destroy(cpu_prim *p) {
    for (int i = 0; i < p->nargs; i++) dnnl_memory_destroy(p->args[i].memory);
    if (p->scratchpad) dnnl_memory_destroy(p->scratchpad);
    if (p->prim) dnnl_primitive_destroy(p->prim);
    memset(p, 0, sizeof *p);
}

neat_status cpu_reorder_init(cpu_dnnl *d, const char *fn, cpu_md_c src_md, cpu_md_c dst_md,
                             int accumulate, cpu_prim *p) {
    neat_status st = NEAT_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    st = cpu_dnnl_attr(fn, &attr);
    if (st != NEAT_OK) return st;
    if (accumulate) {
        DNNL_TRY(dnnl_post_ops_create(&ops));
        DNNL_TRY(dnnl_post_ops_append_sum(ops, 1.0f, 0, dnnl_data_type_undef));
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, ops));
    }
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, src_md, d->engine, dst_md, d->engine, attr));
    const int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    st = cpu_prim_init(d, fn, pd, args, 2, p);
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* ---- staged arguments ------------------------------------------------------------------------ */

neat_status cpu_staged_init(cpu_dnnl *d, const char *fn, cpu_md_c user_md, cpu_md_c prim_md,
                            int output, int accumulate, cpu_staged *a) {
    memset(a, 0, sizeof *a);
    a->staged = !dnnl_memory_desc_equal(user_md, prim_md) || (output && accumulate);
    if (!a->staged) return NEAT_OK;
    a->bytes = dnnl_memory_desc_get_size(prim_md);
    return output ? cpu_reorder_init(d, fn, prim_md, user_md, accumulate, &a->reorder)
                  : cpu_reorder_init(d, fn, user_md, prim_md, 0, &a->reorder);
}

neat_status cpu_staged_in(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_staged *a,
                          const void *user, void **prim_data) {
    if (!a->staged) {
        *prim_data = (void *)user;
        return NEAT_OK;
    }
    neat_status st = nm_scratch_alloc(cb, a->bytes, prim_data);
    if (st != NEAT_OK) return st;
    void *data[2] = {(void *)user, *prim_data};
    return cpu_prim_run(dev, cb, fn, &a->reorder, data);
}

neat_status cpu_staged_out(nm_cmdbuf *cb, cpu_staged *a, void *user, void **prim_data) {
    if (!a->staged) {
        *prim_data = user;
        return NEAT_OK;
    }
    return nm_scratch_alloc(cb, a->bytes, prim_data);
}

neat_status cpu_staged_out_finish(nm_device *dev, nm_cmdbuf *cb, const char *fn, cpu_staged *a,
                                  void *prim_data, void *user) {
    if (!a->staged) return NEAT_OK;
    void *data[2] = {prim_data, user};
    return cpu_prim_run(dev, cb, fn, &a->reorder, data);
}

void cpu_staged_destroy(cpu_staged *a) {
    if (a->staged) cpu_prim_destroy(&a->reorder);
    memset(a, 0, sizeof *a);
}
