/*
 * internal.h - host-side private declarations: the handle, status helpers,
 * half-precision conversions and the CPU backend entry points.
 */
#ifndef XENT_INTERNAL_H
#define XENT_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "xent.h"
#include "../cuda/xent_bridge.h"

/* Flat error handling: return the status of a failing expression. */
#define XENT_RETURN_IF(cond, status)                                            \
    do {                                                                       \
        if (cond)                                                              \
            return (status);                                                   \
    } while (0)

#define XENT_FORWARD_IF_ERROR(expr)                                             \
    do {                                                                       \
        xent_status xent_st_ = (expr);                                         \
        if (xent_st_ != XENT_STATUS_SUCCESS)                                   \
            return xent_st_;                                                   \
    } while (0)

struct xent_handle {
    xent_backend backend;
    /* CUDA */
    int device;
    struct CUstream_st *stream;
    int sm_count;
    int cc_major, cc_minor;
    xent_status_word *d_status; /* allocated once at create */
    /* CPU */
    int n_threads;
    xent_status_word h_status;
};

/* Workspace carve-up shared by both backends. Everything is aligned to
 * XENT_WS_ALIGN inside a caller buffer of any alignment. */
#define XENT_WS_ALIGN 256u

typedef struct xent_ws_layout {
    double *denom;    /* [1]  the MEAN denominator */
    double *partials; /* [XENT_REDUCE_PARTS] */
    float *rows;      /* [n_rows] per-row losses when the caller gives none */
} xent_ws_layout;

/* Bytes of workspace for desc on backend (0 when none is needed). */
size_t xent_ws_bytes(xent_backend backend, const xent_ce_desc *desc);
/* Carve ws (which holds at least xent_ws_bytes) into the layout. */
xent_ws_layout xent_ws_carve(xent_backend backend, const xent_ce_desc *desc,
                             void *ws);

/* ---- half precision on the host ------------------------------------ */
static inline float xent_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalize */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while ((man & 0x400u) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t xent_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x33000001u) /* below half the smallest subnormal */
        return (uint16_t)sign;
    uint32_t e = ax >> 23;
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    int shift; /* bits to drop from the 24-bit significand */
    uint32_t hexp;
    if (e < 113) { /* subnormal half */
        shift = 126 - (int)e; /* 14 .. 24 */
        hexp = 0;
    } else {
        shift = 13;
        hexp = e - 112;
    }
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u)))
        q++;
    /* q carries the implicit bit for normals; adding exponent handles the
     * carry into the next binade */
    uint32_t h = hexp ? ((hexp << 10) + (q - 0x400u)) : q;
    return (uint16_t)(sign | h);
}

static inline float xent_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t xent_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

/* ---- CPU backend ---------------------------------------------------- */
/* Runs one row-kernel equivalent over p on n_threads threads; records data
 * problems in *status. Returns XENT_STATUS_SUCCESS or a resource error. */
xent_status xent_cpu_ce_rows(const xent_ce_params *p, int n_threads,
                             xent_status_word *status);
/* Sum of w_{y_i} over non-ignored, in-range rows (fp64, row order). */
double xent_cpu_target_weight_sum(const xent_ce_params *p);
/* sum(rows) / denom in fp64, row order; empty_value when denom == 0. */
float xent_cpu_reduce_rows(const float *rows, int64_t n, double denom,
                           float empty_value);
/* Runs fn on each of n_jobs job records (jobs: an array of job_size-byte
 * records; at most XENT_CPU_MAX_THREADS), job 0 on the calling thread and
 * the others on threads of their own; a job whose thread cannot start runs
 * on the calling thread, so results never depend on resources. */
#define XENT_CPU_MAX_THREADS 256
void xent_cpu_run_jobs(int64_t n_jobs, void *(*fn)(void *), void *jobs,
                       size_t job_size);
/* Number of usable cores. */
int xent_cpu_count(void);

/* ---- helpers of api.c shared with api_info.c -------------------------- */
/* Make the handle's CUDA device current for one call (*prev: the device to
 * restore, -1 when unchanged), and restore it. */
int xent_enter_device(const struct xent_handle *h, int *prev); /* cudaError_t */
void xent_leave_device(int prev);
/* The row-kernel parameters of a validated cross-entropy problem (outputs,
 * upstream and denominator left for the caller). */
void xent_ce_fill_params(xent_ce_params *p, const xent_ce_desc *d,
                         xent_ce_mode mode, const void *logits,
                         const void *targets);
/* The reduced value of a MEAN over no row: 0, or NaN under the flag. */
float xent_ce_empty_mean_value(const xent_ce_desc *d);
/* CPU handles: every weight >= 0 (NaN fails), else the status word's
 * NEGATIVE_WEIGHT flag and XENT_STATUS_INVALID_DATA. w may be NULL. */
xent_status xent_cpu_check_weights(struct xent_handle *h, const float *w,
                                   int64_t n);
/* A cudaError_t (as int) as a status. */
xent_status xent_status_from_cuda(int e);
/* The cross-entropy descriptor checks of every xent_ce_* call. */
xent_status xent_ce_validate_desc(const xent_ce_desc *d);
/* d->variant, or AUTO's choice for d's shape on h. */
xent_variant xent_ce_choose_variant(const struct xent_handle *h,
                                    const xent_ce_desc *d);
/* a * b > INT64_MAX for a, b >= 0. */
int xent_mul_overflows(int64_t a, int64_t b);
/* 4 for F32, 2 for F16 / BF16. */
size_t xent_dtype_size(xent_dtype t);
/* Byte ranges [a, a+na) and [b, b+nb) overlap (NULL or empty: no). */
int xent_ranges_overlap(const void *a, size_t na, const void *b, size_t nb);
/* Bytes spanned by an [n, ld] matrix of c used columns. */
size_t xent_matrix_bytes(int64_t n, int64_t c, int64_t ld, size_t elem);

/* ---- CPU backend of host/api_info.c (host/cpu_info.c) --------------- */
/* Entropy / KL / BCE rows (p->op) on n_threads threads; data problems in
 * *status. */
xent_status xent_cpu_info_rows(const xent_info_params *p, int n_threads,
                               xent_status_word *status);
/* xent_ce_eval's pass; adds to *p->accum when set. */
xent_status xent_cpu_eval_rows(const xent_eval_params *p, int n_threads,
                               xent_status_word *status);

#endif /* XENT_INTERNAL_H */
