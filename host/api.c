/*
 * api.c - the public API: handles, argument validation, variant choice and
 * dispatch to the CUDA launchers or the CPU backend.
 *
 * Data path: caller -> validation (here, before any launch) -> dispatch ->
 * launcher (cuda/) or CPU backend -> caller-owned buffers. Nothing flows
 * back but a status. Compute calls never allocate, synchronize or read
 * device memory.
 */
#include <math.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "internal.h"

#define XENT_STR2(x) #x
#define XENT_STR(x) XENT_STR2(x)

const char *xent_status_string(xent_status status)
{
    switch (status) {
    case XENT_STATUS_SUCCESS: return "success";
    case XENT_STATUS_NULL_POINTER: return "a required pointer is NULL";
    case XENT_STATUS_INVALID_SIZE:
        return "invalid size (negative, zero classes, stride below the class "
               "count, or overflow)";
    case XENT_STATUS_INVALID_VALUE: return "an option is outside its domain";
    case XENT_STATUS_UNSUPPORTED:
        return "unsupported dtype or combination of options";
    case XENT_STATUS_WORKSPACE_TOO_SMALL: return "workspace too small";
    case XENT_STATUS_ALIASING: return "output buffers overlap inputs illegally";
    case XENT_STATUS_NO_DEVICE: return "no usable CUDA device";
    case XENT_STATUS_CUDA_ERROR: return "a CUDA runtime call failed";
    case XENT_STATUS_OUT_OF_MEMORY: return "out of memory";
    case XENT_STATUS_TARGET_OUT_OF_RANGE: return "a class index is out of range";
    case XENT_STATUS_INVALID_DATA: return "invalid data (e.g. negative weights)";
    case XENT_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *xent_version_string(void)
{
    return XENT_STR(XENT_VERSION_MAJOR) "." XENT_STR(
        XENT_VERSION_MINOR) "." XENT_STR(XENT_VERSION_PATCH);
}

const char *xent_variant_name(xent_variant variant)
{
    switch (variant) {
    case XENT_VARIANT_AUTO: return "auto";
    case XENT_VARIANT_WARP_ROW: return "warp_row";
    case XENT_VARIANT_BLOCK_ROW: return "block_row";
    case XENT_VARIANT_COUNT_: break;
    }
    return "unknown";
}

void xent_ce_desc_init(xent_ce_desc *desc, int64_t n_rows, int64_t n_classes)
{
    if (!desc)
        return;
    memset(desc, 0, sizeof *desc);
    desc->n_rows = n_rows;
    desc->n_classes = n_classes;
    desc->ld = n_classes;
    desc->logits_dtype = XENT_DTYPE_F32;
    desc->target_type = XENT_TARGET_INDEX_I64;
    desc->target_ld = n_classes;
    desc->reduction = XENT_REDUCTION_MEAN;
    desc->ignore_index = XENT_DEFAULT_IGNORE_INDEX;
    desc->weights = NULL;
    desc->n_weights = 0;
    desc->label_smoothing = 0.0f;
    desc->z_loss = 0.0f;
    desc->softcap = 0.0f;
    desc->flags = 0;
    desc->variant = XENT_VARIANT_AUTO;
}

xent_upstream xent_upstream_default(void)
{
    xent_upstream u = {NULL, 0, 1.0f};
    return u;
}

/* ------------------------------------------------------------------ */
/* Handles                                                            */
/* ------------------------------------------------------------------ */

static xent_status map_cuda(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return XENT_STATUS_SUCCESS;
    case cudaErrorMemoryAllocation: return XENT_STATUS_OUT_OF_MEMORY;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice: return XENT_STATUS_NO_DEVICE;
    default: return XENT_STATUS_CUDA_ERROR;
    }
}

/* Make the handle's device current for one call; leave_device restores
 * the caller's device only if enter_device changed it. */
int xent_enter_device(const struct xent_handle *h, int *prev)
{
    *prev = -1;
    int cur = 0;
    cudaError_t e = cudaGetDevice(&cur);
    if (e == cudaSuccess && cur != h->device) {
        e = cudaSetDevice(h->device);
        if (e == cudaSuccess)
            *prev = cur;
    }
    return (int)e;
}

void xent_leave_device(int prev)
{
    if (prev >= 0)
        (void)cudaSetDevice(prev);
}

xent_status xent_create_on_device(xent_handle_t *handle, int device)
{
    XENT_RETURN_IF(!handle, XENT_STATUS_NULL_POINTER);
    *handle = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError(); /* clear the sticky-free error */
        return XENT_STATUS_NO_DEVICE;
    }
    XENT_RETURN_IF(device < 0 || device >= count, XENT_STATUS_NO_DEVICE);

    struct xent_handle *h = calloc(1, sizeof *h);
    XENT_RETURN_IF(!h, XENT_STATUS_OUT_OF_MEMORY);
    h->backend = XENT_BACKEND_CUDA;
    h->device = device;
    h->stream = NULL;

    int prev = 0;
    xent_status st = map_cuda(cudaGetDevice(&prev));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaSetDevice(device));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaDeviceGetAttribute(
            &h->sm_count, cudaDevAttrMultiProcessorCount, device));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaDeviceGetAttribute(
            &h->cc_major, cudaDevAttrComputeCapabilityMajor, device));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaDeviceGetAttribute(
            &h->cc_minor, cudaDevAttrComputeCapabilityMinor, device));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaMalloc((void **)&h->d_status, sizeof *h->d_status));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda((cudaError_t)xent_cuda_status_reset(h->d_status, NULL));
    if (st == XENT_STATUS_SUCCESS)
        st = map_cuda(cudaStreamSynchronize(NULL));
    (void)cudaSetDevice(prev);
    if (st != XENT_STATUS_SUCCESS) {
        if (h->d_status)
            (void)cudaFree(h->d_status);
        (void)cudaGetLastError();
        free(h);
        return st;
    }
    *handle = h;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_create(xent_handle_t *handle)
{
    XENT_RETURN_IF(!handle, XENT_STATUS_NULL_POINTER);
    *handle = NULL;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        (void)cudaGetLastError();
        return XENT_STATUS_NO_DEVICE;
    }
    return xent_create_on_device(handle, device);
}

xent_status xent_create_cpu(xent_handle_t *handle, int n_threads)
{
    XENT_RETURN_IF(!handle, XENT_STATUS_NULL_POINTER);
    *handle = NULL;
    XENT_RETURN_IF(n_threads < 0, XENT_STATUS_INVALID_VALUE);
    struct xent_handle *h = calloc(1, sizeof *h);
    XENT_RETURN_IF(!h, XENT_STATUS_OUT_OF_MEMORY);
    h->backend = XENT_BACKEND_CPU;
    h->device = -1;
    h->n_threads = n_threads > 0 ? n_threads : xent_cpu_count();
    h->h_status.flags = 0;
    h->h_status.first_row = UINT64_MAX;
    *handle = h;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_destroy(xent_handle_t h)
{
    if (!h)
        return XENT_STATUS_SUCCESS;
    xent_status st = XENT_STATUS_SUCCESS;
    if (h->backend == XENT_BACKEND_CUDA && h->d_status) {
        int prev;
        cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
        if (e == cudaSuccess)
            e = cudaFree(h->d_status);
        xent_leave_device(prev);
        st = map_cuda(e);
    }
    free(h);
    return st;
}

xent_status xent_get_backend(xent_handle_t h, xent_backend *backend)
{
    XENT_RETURN_IF(!h || !backend, XENT_STATUS_NULL_POINTER);
    *backend = h->backend;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_set_stream(xent_handle_t h, struct CUstream_st *stream)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(h->backend != XENT_BACKEND_CUDA, XENT_STATUS_UNSUPPORTED);
    h->stream = stream;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_get_stream(xent_handle_t h, struct CUstream_st **stream)
{
    XENT_RETURN_IF(!h || !stream, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(h->backend != XENT_BACKEND_CUDA, XENT_STATUS_UNSUPPORTED);
    *stream = h->stream;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_read_data_report(xent_handle_t h, xent_data_report *report,
                                  int reset)
{
    XENT_RETURN_IF(!h || !report, XENT_STATUS_NULL_POINTER);
    xent_status_word w;
    if (h->backend == XENT_BACKEND_CPU) {
        w = h->h_status;
        if (reset) {
            h->h_status.flags = 0;
            h->h_status.first_row = UINT64_MAX;
        }
    } else {
        int prev;
        cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(&w, h->d_status, sizeof w,
                                cudaMemcpyDeviceToHost, h->stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(h->stream);
        if (e == cudaSuccess && reset)
            e = (cudaError_t)xent_cuda_status_reset(h->d_status, h->stream);
        xent_leave_device(prev);
        if (e != cudaSuccess)
            return map_cuda(e);
    }
    report->flags = w.flags;
    report->first_row =
        w.first_row == UINT64_MAX ? -1 : (int64_t)w.first_row;
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Validation                                                         */
/* ------------------------------------------------------------------ */

static int finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }

static int mul_overflows(int64_t a, int64_t b)
{
    return a > 0 && b > INT64_MAX / a;
}

static size_t dtype_size(xent_dtype t)
{
    return t == XENT_DTYPE_F32 ? 4u : 2u;
}

static xent_status validate_desc(const xent_ce_desc *d)
{
    XENT_RETURN_IF(!d, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(d->n_rows < 0 || d->n_classes < 1 || d->ld < d->n_classes,
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(mul_overflows(d->n_rows, d->ld) ||
                       mul_overflows(d->n_rows * d->ld, 4),
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(d->logits_dtype != XENT_DTYPE_F32 &&
                       d->logits_dtype != XENT_DTYPE_F16 &&
                       d->logits_dtype != XENT_DTYPE_BF16,
                   XENT_STATUS_UNSUPPORTED);
    XENT_RETURN_IF(d->reduction != XENT_REDUCTION_NONE &&
                       d->reduction != XENT_REDUCTION_MEAN &&
                       d->reduction != XENT_REDUCTION_SUM,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(d->variant < XENT_VARIANT_AUTO ||
                       d->variant >= XENT_VARIANT_COUNT_,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(d->flags & ~(uint32_t)(XENT_FLAG_EMPTY_MEAN_NAN |
                                          XENT_FLAG_GRAD_F32),
                   XENT_STATUS_INVALID_VALUE);
    switch (d->target_type) {
    case XENT_TARGET_INDEX_I32:
    case XENT_TARGET_INDEX_I64: break;
    case XENT_TARGET_PROBS_F32:
        XENT_RETURN_IF(d->target_ld < d->n_classes, XENT_STATUS_INVALID_SIZE);
        XENT_RETURN_IF(mul_overflows(d->n_rows, d->target_ld) ||
                           mul_overflows(d->n_rows * d->target_ld, 4),
                       XENT_STATUS_INVALID_SIZE);
        /* PyTorch rejects ignore_index with probability targets. */
        XENT_RETURN_IF(d->ignore_index >= 0, XENT_STATUS_UNSUPPORTED);
        break;
    default: return XENT_STATUS_UNSUPPORTED;
    }
    if (d->weights)
        XENT_RETURN_IF(d->n_weights != d->n_classes, XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(!(d->label_smoothing >= 0.0f && d->label_smoothing <= 1.0f),
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(!finite_nonneg(d->z_loss) || !finite_nonneg(d->softcap),
                   XENT_STATUS_INVALID_VALUE);
    return XENT_STATUS_SUCCESS;
}

static xent_status validate_upstream(const xent_ce_desc *d,
                                     const xent_upstream *u)
{
    XENT_RETURN_IF(!isfinite(u->scale), XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(u->dloss_stride < 0, XENT_STATUS_INVALID_SIZE);
    if (u->d_dloss && d->reduction != XENT_REDUCTION_NONE)
        XENT_RETURN_IF(u->dloss_stride != 0, XENT_STATUS_INVALID_VALUE);
    if (u->d_dloss && d->reduction == XENT_REDUCTION_NONE)
        XENT_RETURN_IF(mul_overflows(d->n_rows, u->dloss_stride),
                       XENT_STATUS_INVALID_SIZE);
    return XENT_STATUS_SUCCESS;
}

/* [a, a+na) and [b, b+nb) overlap */
static int overlaps(const void *a, size_t na, const void *b, size_t nb)
{
    if (!a || !b || na == 0 || nb == 0)
        return 0;
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + nb && pb < pa + na;
}

static size_t matrix_bytes(int64_t n, int64_t c, int64_t ld, size_t elem)
{
    return n == 0 ? 0 : ((size_t)(n - 1) * (size_t)ld + (size_t)c) * elem;
}

/* Every buffer a cross-entropy call touches. */
typedef struct ce_buffers {
    const void *logits, *targets;
    const float *lse_in;          /* inputs (the upstream comes apart) */
    const void *grad;             /* output; may be exactly logits */
    const float *loss, *loss_rows, *lse; /* outputs */
} ce_buffers;

/*
 * Outputs must not overlap one another or any input; the one exception is
 * a gradient written exactly over the logits (in place, same dtype). Any
 * other overlap would make results depend on the order threads run in.
 */
static xent_status check_aliasing(const xent_ce_desc *d,
                                  const xent_upstream *u, const ce_buffers *b)
{
    const size_t rb = (size_t)d->n_rows * sizeof(float);
    const size_t lelem = dtype_size(d->logits_dtype);
    const size_t gelem = (d->flags & XENT_FLAG_GRAD_F32) ? 4u : lelem;
    size_t tbytes;
    if (d->target_type == XENT_TARGET_PROBS_F32)
        tbytes = matrix_bytes(d->n_rows, d->n_classes, d->target_ld, 4);
    else
        tbytes = (size_t)d->n_rows *
                 (d->target_type == XENT_TARGET_INDEX_I32 ? 4u : 8u);
    size_t ubytes = 0;
    if (u && u->d_dloss)
        ubytes = d->n_rows == 0 ? 0
                 : ((size_t)(d->n_rows - 1) * (size_t)u->dloss_stride + 1) *
                       sizeof(float);
    const int in_place = b->grad && b->grad == b->logits;
    XENT_RETURN_IF(in_place && gelem != lelem, XENT_STATUS_ALIASING);

    const struct {
        const void *p;
        size_t n;
    } out[4] = {{b->grad, matrix_bytes(d->n_rows, d->n_classes, d->ld, gelem)},
                {b->loss, b->loss ? sizeof(float) : 0},
                {b->loss_rows, rb},
                {b->lse, rb}},
      in[5] = {{in_place ? NULL : b->logits,
                matrix_bytes(d->n_rows, d->n_classes, d->ld, lelem)},
               {b->targets, tbytes},
               {d->weights, d->weights ? (size_t)d->n_classes * 4u : 0},
               {u ? u->d_dloss : NULL, ubytes},
               {b->lse_in, rb}};
    for (int a = 0; a < 4; a++) {
        for (int c = a + 1; c < 4; c++)
            XENT_RETURN_IF(overlaps(out[a].p, out[a].n, out[c].p, out[c].n),
                           XENT_STATUS_ALIASING);
        for (int c = 0; c < 5; c++)
            XENT_RETURN_IF(overlaps(out[a].p, out[a].n, in[c].p, in[c].n),
                           XENT_STATUS_ALIASING);
    }
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Workspace                                                          */
/* ------------------------------------------------------------------ */

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

size_t xent_ws_bytes(xent_backend backend, const xent_ce_desc *d)
{
    if (d->reduction == XENT_REDUCTION_NONE)
        return 0;
    size_t rows = round_up((size_t)d->n_rows * sizeof(float), XENT_WS_ALIGN);
    if (backend == XENT_BACKEND_CPU)
        return rows == 0 ? 0 : rows + XENT_WS_ALIGN;
    return XENT_WS_ALIGN /* alignment slack */ + XENT_WS_ALIGN /* denom */ +
           round_up(XENT_REDUCE_PARTS * sizeof(double), XENT_WS_ALIGN) + rows;
}

xent_ws_layout xent_ws_carve(xent_backend backend, const xent_ce_desc *d,
                             void *ws)
{
    xent_ws_layout l = {NULL, NULL, NULL};
    if (!ws || d->reduction == XENT_REDUCTION_NONE)
        return l;
    uintptr_t p = round_up((uintptr_t)ws, XENT_WS_ALIGN);
    if (backend == XENT_BACKEND_CUDA) {
        l.denom = (double *)p;
        p += XENT_WS_ALIGN;
        l.partials = (double *)p;
        p += round_up(XENT_REDUCE_PARTS * sizeof(double), XENT_WS_ALIGN);
    }
    l.rows = (float *)p;
    return l;
}

xent_status xent_ce_workspace_size(xent_handle_t h, const xent_ce_desc *desc,
                                   size_t *bytes)
{
    XENT_RETURN_IF(!h || !bytes, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    *bytes = xent_ws_bytes(h->backend, desc);
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                           */
/* ------------------------------------------------------------------ */

/*
 * AUTO variant choice. A warp per row keeps up to 32 rows of small C in
 * flight per SM-resident block set and avoids block-wide barriers; it wins
 * while a row gives each lane only a few dozen elements (C <= 2048) and
 * there are enough rows to fill the machine (N >= 4 warps per SM across
 * every SM). Otherwise a block per row spreads one row over 256+ threads,
 * which is what large C and few rows need.
 */
static xent_variant choose_variant(const struct xent_handle *h,
                                   const xent_ce_desc *d)
{
    if (d->variant != XENT_VARIANT_AUTO)
        return d->variant;
    int64_t sms = h->sm_count > 0 ? h->sm_count : 132;
    if (d->n_classes <= 2048 && d->n_rows >= 4 * sms)
        return XENT_VARIANT_WARP_ROW;
    return XENT_VARIANT_BLOCK_ROW;
}

void xent_ce_fill_params(xent_ce_params *p, const xent_ce_desc *d,
                         xent_ce_mode mode, const void *logits,
                         const void *targets)
{
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->n_rows = d->n_rows;
    p->n_classes = d->n_classes;
    p->ld = d->ld;
    p->logits_dtype = d->logits_dtype;
    p->logits = logits;
    p->target_type = d->target_type;
    p->targets = targets;
    p->target_ld = d->target_ld;
    p->ignore_index = d->ignore_index;
    p->weights = d->weights;
    p->label_smoothing = d->label_smoothing;
    p->z_loss = d->z_loss;
    p->softcap = d->softcap;
    p->grad_f32 = (d->flags & XENT_FLAG_GRAD_F32) != 0;
    p->scale = 1.0f;
    p->host_denom = 1.0;
}

float xent_ce_empty_mean_value(const xent_ce_desc *d)
{
    return (d->flags & XENT_FLAG_EMPTY_MEAN_NAN) ? NAN : 0.0f;
}

xent_status xent_cpu_check_weights(struct xent_handle *h, const float *w,
                                   int64_t n)
{
    for (int64_t j = 0; w && j < n; j++) {
        if (!(w[j] >= 0.0f)) {
            h->h_status.flags |= XENT_DATA_NEGATIVE_WEIGHT;
            return XENT_STATUS_INVALID_DATA;
        }
    }
    return XENT_STATUS_SUCCESS;
}

static int is_index(const xent_ce_desc *d)
{
    return d->target_type != XENT_TARGET_PROBS_F32;
}

static xent_status check_workspace(const struct xent_handle *h,
                                   const xent_ce_desc *d, const void *ws,
                                   size_t ws_bytes)
{
    size_t need = xent_ws_bytes(h->backend, d);
    XENT_RETURN_IF(ws_bytes < need, XENT_STATUS_WORKSPACE_TOO_SMALL);
    XENT_RETURN_IF(need > 0 && !ws, XENT_STATUS_NULL_POINTER);
    return XENT_STATUS_SUCCESS;
}

/*
 * The shared driver of all three ops. p is filled except for the MEAN
 * denominator and the status word; d_loss (reduced) is written after the
 * rows.
 */
static xent_status run_ce(struct xent_handle *h, const xent_ce_desc *d,
                          xent_ce_params *p, float *d_loss, void *ws)
{
    xent_ws_layout l = xent_ws_carve(h->backend, d, ws);
    int mean = d->reduction == XENT_REDUCTION_MEAN;
    /* rows buffer for the reduction, when the caller wants the reduced
     * value but gave no per-row buffer */
    if (d_loss && !p->loss_rows && p->mode != XENT_MODE_BWD_LSE)
        p->loss_rows = l.rows;
    if (mean && !is_index(d))
        p->host_denom = (double)d->n_rows;

    if (h->backend == XENT_BACKEND_CPU) {
        /* host memory: weights can be checked before anything is written */
        XENT_FORWARD_IF_ERROR(
            xent_cpu_check_weights(h, d->weights, d->n_classes));
        double denom = p->host_denom;
        if (mean && is_index(d) && (d_loss || p->grad))
            denom = xent_cpu_target_weight_sum(p);
        p->host_denom = denom;
        /* this call's problems, merged into the handle's sticky word */
        xent_status_word w = {0, 0, UINT64_MAX};
        xent_status st = XENT_STATUS_SUCCESS;
        if (d->n_rows > 0)
            st = xent_cpu_ce_rows(p, h->n_threads, &w);
        if (st == XENT_STATUS_SUCCESS && d_loss)
            *d_loss = xent_cpu_reduce_rows(p->loss_rows, d->n_rows,
                                           mean ? denom : 1.0,
                                           xent_ce_empty_mean_value(d));
        h->h_status.flags |= w.flags;
        if (w.first_row < h->h_status.first_row)
            h->h_status.first_row = w.first_row;
        /* the CPU backend is synchronous, so it can also say so at once */
        if (st == XENT_STATUS_SUCCESS && w.flags)
            return (w.flags & XENT_DATA_TARGET_OUT_OF_RANGE)
                       ? XENT_STATUS_TARGET_OUT_OF_RANGE
                       : XENT_STATUS_INVALID_DATA;
        return st;
    }

    int prev;
    cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
    p->status = h->d_status;
    if (e == cudaSuccess && mean && is_index(d) && (d_loss || p->grad)) {
        e = (cudaError_t)xent_cuda_target_weight_sum(p, l.partials, l.denom,
                                                     h->stream);
        p->d_denom = l.denom;
    }
    if (e == cudaSuccess && d->n_rows > 0)
        e = (cudaError_t)xent_cuda_ce_rows(p, choose_variant(h, d), h->stream);
    if (e == cudaSuccess && d_loss)
        e = (cudaError_t)xent_cuda_reduce_rows(
            p->loss_rows, d->n_rows, mean ? p->d_denom : NULL,
            mean ? p->host_denom : 1.0, xent_ce_empty_mean_value(d), l.partials,
            d_loss, h->stream);
    xent_leave_device(prev);
    return map_cuda(e);
}

xent_status xent_ce_forward(xent_handle_t h, const xent_ce_desc *desc,
                            const void *d_logits, const void *d_targets,
                            float *d_loss, float *d_loss_rows, float *d_lse,
                            void *d_workspace, size_t workspace_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    XENT_RETURN_IF(!d_loss && !d_loss_rows && !d_lse,
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(d_loss && desc->reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(desc->n_rows > 0 && (!d_logits || !d_targets),
                   XENT_STATUS_NULL_POINTER);
    const ce_buffers bufs = {d_logits, d_targets,   NULL, NULL,
                             d_loss,   d_loss_rows, d_lse};
    XENT_FORWARD_IF_ERROR(check_aliasing(desc, NULL, &bufs));
    XENT_FORWARD_IF_ERROR(
        check_workspace(h, desc, d_workspace, workspace_bytes));
    xent_ce_params p;
    xent_ce_fill_params(&p, desc, XENT_MODE_FWD, d_logits, d_targets);
    p.loss_rows = d_loss_rows;
    p.lse_rows = d_lse;
    return run_ce(h, desc, &p, d_loss, d_workspace);
}

xent_status xent_ce_forward_backward(
    xent_handle_t h, const xent_ce_desc *desc, const void *d_logits,
    const void *d_targets, const xent_upstream *upstream, void *d_grad,
    float *d_loss, float *d_loss_rows, float *d_lse, void *d_workspace,
    size_t workspace_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    xent_upstream u = upstream ? *upstream : xent_upstream_default();
    XENT_FORWARD_IF_ERROR(validate_upstream(desc, &u));
    XENT_RETURN_IF(d_loss && desc->reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(desc->n_rows > 0 && (!d_logits || !d_targets),
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(!d_grad && desc->n_rows > 0, XENT_STATUS_NULL_POINTER);
    const ce_buffers bufs = {d_logits, d_targets,   NULL, d_grad,
                             d_loss,   d_loss_rows, d_lse};
    XENT_FORWARD_IF_ERROR(check_aliasing(desc, &u, &bufs));
    XENT_FORWARD_IF_ERROR(
        check_workspace(h, desc, d_workspace, workspace_bytes));
    xent_ce_params p;
    xent_ce_fill_params(&p, desc, XENT_MODE_FWD_BWD, d_logits, d_targets);
    p.loss_rows = d_loss_rows;
    p.lse_rows = d_lse;
    p.grad = d_grad;
    p.dloss = u.d_dloss;
    p.dloss_stride = u.dloss_stride;
    p.scale = u.scale;
    return run_ce(h, desc, &p, d_loss, d_workspace);
}

xent_status xent_ce_backward(xent_handle_t h, const xent_ce_desc *desc,
                             const void *d_logits, const void *d_targets,
                             const float *d_lse, const xent_upstream *upstream,
                             void *d_grad, void *d_workspace,
                             size_t workspace_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    xent_upstream u = upstream ? *upstream : xent_upstream_default();
    XENT_FORWARD_IF_ERROR(validate_upstream(desc, &u));
    XENT_RETURN_IF(desc->n_rows > 0 && (!d_logits || !d_targets || !d_lse),
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(!d_grad && desc->n_rows > 0, XENT_STATUS_NULL_POINTER);
    const ce_buffers bufs = {d_logits, d_targets, d_lse, d_grad,
                             NULL,     NULL,      NULL};
    XENT_FORWARD_IF_ERROR(check_aliasing(desc, &u, &bufs));
    XENT_FORWARD_IF_ERROR(
        check_workspace(h, desc, d_workspace, workspace_bytes));
    xent_ce_params p;
    xent_ce_fill_params(&p, desc, XENT_MODE_BWD_LSE, d_logits, d_targets);
    p.lse_in = d_lse;
    p.grad = d_grad;
    p.dloss = u.d_dloss;
    p.dloss_stride = u.dloss_stride;
    p.scale = u.scale;
    return run_ce(h, desc, &p, NULL, d_workspace);
}

/* ------------------------------------------------------------------ */
/* Helpers shared with host/api_info.c (declared in internal.h)       */
/* ------------------------------------------------------------------ */

xent_status xent_status_from_cuda(int e) { return map_cuda((cudaError_t)e); }

xent_status xent_ce_validate_desc(const xent_ce_desc *d)
{
    return validate_desc(d);
}

xent_variant xent_ce_choose_variant(const struct xent_handle *h,
                                    const xent_ce_desc *d)
{
    return choose_variant(h, d);
}

int xent_mul_overflows(int64_t a, int64_t b) { return mul_overflows(a, b); }

size_t xent_dtype_size(xent_dtype t) { return dtype_size(t); }

int xent_ranges_overlap(const void *a, size_t na, const void *b, size_t nb)
{
    return overlaps(a, na, b, nb);
}

size_t xent_matrix_bytes(int64_t n, int64_t c, int64_t ld, size_t elem)
{
    return matrix_bytes(n, c, ld, elem);
}
