/*
 * dnnl_compat.h — the CPU backend builds against oneDNN 2 (Debian 12's 2.6, the default) or
 * oneDNN 3 (the PyPI wheels), chosen by DNNL_VERSION_MAJOR.
 *
 * The backend's code is written against the v3 C API. v3 made a memory descriptor an opaque
 * handle that is created and destroyed, and creates a primitive descriptor in one call from
 * the engine, the memory descriptors and the attributes (v2 filled an op descriptor first,
 * then called dnnl_primitive_desc_create). For v2 this header implements the few v3 calls
 * the backend uses on top of the v2 ones, under the v3 names, so that a failure message
 * names the same call with either version. Dropping v2 is deleting the v2 half below.
 *
 *   cpu_md     an owned memory descriptor (v3 handle; v2: a heap copy of the struct),
 *              destroyed with dnnl_memory_desc_destroy
 *   cpu_md_c   a borrowed one (what a primitive descriptor's queries answer)
 *
 * Post-ops: v3 dropped the eltwise scale and took a zero point and data type in the sum;
 * the backend uses neither, so the v2 forms pass 1.0 and ignore them. The one behaviour that
 * does not map is the fixed output scale of v2 (matmul.c's alpha): v3 takes scales only at
 * run time, as an argument, and matmul.c has both forms.
 */
#ifndef NEATML_CPU_DNNL_COMPAT_H
#define NEATML_CPU_DNNL_COMPAT_H

#include <oneapi/dnnl/dnnl.h>

#if DNNL_VERSION_MAJOR >= 3

typedef dnnl_memory_desc_t cpu_md;
typedef const_dnnl_memory_desc_t cpu_md_c;

#else /* oneDNN 2.x */

#include <stdlib.h>

typedef dnnl_memory_desc_t *cpu_md;
typedef const dnnl_memory_desc_t *cpu_md_c;

static inline dnnl_status_t cpu_dnnl2_md_create_with_tag(cpu_md *md, int ndims,
                                                         const dnnl_dims_t dims,
                                                         dnnl_data_type_t dt,
                                                         dnnl_format_tag_t tag) {
    *md = malloc(sizeof **md);
    if (!*md) return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(*md, ndims, dims, dt, tag);
    if (s != dnnl_success) {
        free(*md);
        *md = NULL;
    }
    return s;
}

static inline dnnl_status_t cpu_dnnl2_md_create_with_strides(cpu_md *md, int ndims,
                                                             const dnnl_dims_t dims,
                                                             dnnl_data_type_t dt,
                                                             const dnnl_dims_t strides) {
    *md = malloc(sizeof **md);
    if (!*md) return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_memory_desc_init_by_strides(*md, ndims, dims, dt, strides);
    if (s != dnnl_success) {
        free(*md);
        *md = NULL;
    }
    return s;
}

static inline dnnl_status_t cpu_dnnl2_md_destroy(cpu_md md) {
    free(md);
    return dnnl_success;
}

static inline dnnl_status_t cpu_dnnl2_matmul_pd_create(dnnl_primitive_desc_t *pd,
                                                       dnnl_engine_t engine, cpu_md_c src,
                                                       cpu_md_c weights, cpu_md_c bias,
                                                       cpu_md_c dst,
                                                       const_dnnl_primitive_attr_t attr) {
    dnnl_matmul_desc_t desc;
    dnnl_status_t s = dnnl_matmul_desc_init(&desc, src, weights, bias, dst);
    return s != dnnl_success ? s : dnnl_primitive_desc_create(pd, &desc, attr, engine, NULL);
}

static inline dnnl_status_t
cpu_dnnl2_conv_fwd_pd_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, dnnl_prop_kind_t prop,
                             dnnl_alg_kind_t alg, cpu_md_c src, cpu_md_c weights, cpu_md_c bias,
                             cpu_md_c dst, const dnnl_dims_t strides, const dnnl_dims_t dilates,
                             const dnnl_dims_t pad_l, const dnnl_dims_t pad_r,
                             const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t desc;
    dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(
        &desc, prop, alg, src, weights, bias, dst, strides, dilates, pad_l, pad_r);
    return s != dnnl_success ? s : dnnl_primitive_desc_create(pd, &desc, attr, engine, NULL);
}

static inline dnnl_status_t cpu_dnnl2_conv_bwd_data_pd_create(
    dnnl_primitive_desc_t *pd, dnnl_engine_t engine, dnnl_alg_kind_t alg, cpu_md_c diff_src,
    cpu_md_c weights, cpu_md_c diff_dst, const dnnl_dims_t strides, const dnnl_dims_t dilates,
    const dnnl_dims_t pad_l, const dnnl_dims_t pad_r, const_dnnl_primitive_desc_t hint,
    const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t desc;
    dnnl_status_t s = dnnl_dilated_convolution_backward_data_desc_init(
        &desc, alg, diff_src, weights, diff_dst, strides, dilates, pad_l, pad_r);
    return s != dnnl_success ? s : dnnl_primitive_desc_create(pd, &desc, attr, engine, hint);
}

static inline dnnl_status_t cpu_dnnl2_conv_bwd_weights_pd_create(
    dnnl_primitive_desc_t *pd, dnnl_engine_t engine, dnnl_alg_kind_t alg, cpu_md_c src,
    cpu_md_c diff_weights, cpu_md_c diff_bias, cpu_md_c diff_dst, const dnnl_dims_t strides,
    const dnnl_dims_t dilates, const dnnl_dims_t pad_l, const dnnl_dims_t pad_r,
    const_dnnl_primitive_desc_t hint, const_dnnl_primitive_attr_t attr) {
    dnnl_convolution_desc_t desc;
    dnnl_status_t s = dnnl_dilated_convolution_backward_weights_desc_init(
        &desc, alg, src, diff_weights, diff_bias, diff_dst, strides, dilates, pad_l, pad_r);
    return s != dnnl_success ? s : dnnl_primitive_desc_create(pd, &desc, attr, engine, hint);
}

/* The v3 names (DNNL_TRY's messages stringize the call as written). A parenthesized name
 * inside a macro calls the v2 function of the same name. */
#define dnnl_memory_desc_create_with_tag cpu_dnnl2_md_create_with_tag
#define dnnl_memory_desc_create_with_strides cpu_dnnl2_md_create_with_strides
#define dnnl_memory_desc_destroy cpu_dnnl2_md_destroy
#define dnnl_matmul_primitive_desc_create cpu_dnnl2_matmul_pd_create
#define dnnl_convolution_forward_primitive_desc_create cpu_dnnl2_conv_fwd_pd_create
#define dnnl_convolution_backward_data_primitive_desc_create cpu_dnnl2_conv_bwd_data_pd_create
#define dnnl_convolution_backward_weights_primitive_desc_create cpu_dnnl2_conv_bwd_weights_pd_create
#define dnnl_post_ops_append_eltwise(ops, alg, alpha, beta)                                        \
    (dnnl_post_ops_append_eltwise)(ops, 1.0f, alg, alpha, beta)
#define dnnl_post_ops_append_sum(ops, scale, zero_point, dt) (dnnl_post_ops_append_sum)(ops, scale)

#endif /* DNNL_VERSION_MAJOR */

#endif
