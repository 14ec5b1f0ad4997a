/*
 * api_info.c - the public API of entropy, KL divergence, binary
 * cross-entropy and the evaluation statistics (xent_ce_eval): argument
 * validation, variant choice and dispatch to cuda/info.cu's launchers or
 * the CPU backend (host/cpu_info.c).
 *
 * The same data path and contract as api.c: everything is validated
 * before any launch; compute calls never allocate, synchronize or read
 * device memory; reductions reuse the fixed-order fp64 reduction of
 * cuda/reduce.cu (and the workspace layout of api.c, xent_ws_bytes).
 */
#include <math.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "internal.h"

/* ------------------------------------------------------------------ */
/* Descriptors                                                        */
/* ------------------------------------------------------------------ */

void xent_entropy_desc_init(xent_entropy_desc *desc, int64_t n_rows,
                            int64_t n_classes)
{
    if (!desc)
        return;
    memset(desc, 0, sizeof *desc);
    desc->n_rows = n_rows;
    desc->n_classes = n_classes;
    desc->ld = n_classes;
    desc->logits_dtype = XENT_DTYPE_F32;
    desc->reduction = XENT_REDUCTION_MEAN;
    desc->flags = 0;
    desc->variant = XENT_VARIANT_AUTO;
}

void xent_kl_desc_init(xent_kl_desc *desc, int64_t n_rows, int64_t n_classes)
{
    if (!desc)
        return;
    memset(desc, 0, sizeof *desc);
    desc->n_rows = n_rows;
    desc->n_classes = n_classes;
    desc->ld = n_classes;
    desc->logits_dtype = XENT_DTYPE_F32;
    desc->target_kind = XENT_KL_TARGET_PROBS;
    desc->target_ld = n_classes;
    desc->reduction = XENT_REDUCTION_BATCHMEAN;
    desc->prob_tol = XENT_KL_DEFAULT_PROB_TOL;
    desc->flags = 0;
    desc->variant = XENT_VARIANT_AUTO;
}

void xent_bce_desc_init(xent_bce_desc *desc, int64_t n_rows, int64_t n_classes)
{
    if (!desc)
        return;
    memset(desc, 0, sizeof *desc);
    desc->n_rows = n_rows;
    desc->n_classes = n_classes;
    desc->ld = n_classes;
    desc->logits_dtype = XENT_DTYPE_F32;
    desc->target_ld = n_classes;
    desc->pos_weight = NULL;
    desc->n_pos_weight = 0;
    desc->weight = NULL;
    desc->weight_ld = n_classes;
    desc->reduction = XENT_REDUCTION_MEAN;
    desc->flags = 0;
    desc->variant = XENT_VARIANT_AUTO;
}

/* ------------------------------------------------------------------ */
/* Validation                                                         */
/* ------------------------------------------------------------------ */

/* The fields every info descriptor shares. */
typedef struct info_shape {
    int64_t n_rows, n_classes, ld;
    xent_dtype dtype;
    xent_reduction reduction;
    uint32_t flags;
    xent_variant variant;
} info_shape;

/* An [n, ld] matrix of elem-byte values fits in int64 byte offsets. */
static int matrix_too_big(int64_t n, int64_t ld, size_t elem)
{
    return xent_mul_overflows(n, ld) ||
           xent_mul_overflows(n * ld, (int64_t)elem);
}

static xent_status validate_shape(const info_shape *s)
{
    XENT_RETURN_IF(s->n_rows < 0 || s->n_classes < 1 || s->ld < s->n_classes,
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(matrix_too_big(s->n_rows, s->ld, 4),
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(s->dtype != XENT_DTYPE_F32 && s->dtype != XENT_DTYPE_F16 &&
                       s->dtype != XENT_DTYPE_BF16,
                   XENT_STATUS_UNSUPPORTED);
    XENT_RETURN_IF(s->reduction != XENT_REDUCTION_NONE &&
                       s->reduction != XENT_REDUCTION_MEAN &&
                       s->reduction != XENT_REDUCTION_SUM,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(s->variant < XENT_VARIANT_AUTO ||
                       s->variant >= XENT_VARIANT_COUNT_,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(
        s->flags & ~(uint32_t)(XENT_FLAG_EMPTY_MEAN_NAN | XENT_FLAG_GRAD_F32),
        XENT_STATUS_INVALID_VALUE);
    return XENT_STATUS_SUCCESS;
}

static xent_status entropy_shape(const xent_entropy_desc *d, info_shape *s)
{
    XENT_RETURN_IF(!d, XENT_STATUS_NULL_POINTER);
    info_shape t = {d->n_rows,    d->n_classes, d->ld,     d->logits_dtype,
                    d->reduction, d->flags,     d->variant};
    *s = t;
    return validate_shape(s);
}

static xent_status kl_shape(const xent_kl_desc *d, info_shape *s)
{
    XENT_RETURN_IF(!d, XENT_STATUS_NULL_POINTER);
    info_shape t = {d->n_rows,    d->n_classes, d->ld,     d->logits_dtype,
                    d->reduction, d->flags,     d->variant};
    *s = t;
    XENT_FORWARD_IF_ERROR(validate_shape(s));
    XENT_RETURN_IF(d->target_kind != XENT_KL_TARGET_PROBS &&
                       d->target_kind != XENT_KL_TARGET_LOGITS,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(d->target_ld < d->n_classes ||
                       matrix_too_big(d->n_rows, d->target_ld, 4),
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(!(d->prob_tol >= 0.0f), XENT_STATUS_INVALID_VALUE);
    return XENT_STATUS_SUCCESS;
}

static xent_status bce_shape(const xent_bce_desc *d, info_shape *s)
{
    XENT_RETURN_IF(!d, XENT_STATUS_NULL_POINTER);
    info_shape t = {d->n_rows,    d->n_classes, d->ld,     d->logits_dtype,
                    d->reduction, d->flags,     d->variant};
    *s = t;
    XENT_FORWARD_IF_ERROR(validate_shape(s));
    XENT_RETURN_IF(d->target_ld < d->n_classes ||
                       matrix_too_big(d->n_rows, d->target_ld, 4),
                   XENT_STATUS_INVALID_SIZE);
    if (d->pos_weight)
        XENT_RETURN_IF(d->n_pos_weight != d->n_classes,
                       XENT_STATUS_INVALID_SIZE);
    if (d->weight)
        XENT_RETURN_IF(d->weight_ld < d->n_classes ||
                           matrix_too_big(d->n_rows, d->weight_ld, 4),
                       XENT_STATUS_INVALID_SIZE);
    return XENT_STATUS_SUCCESS;
}

/* The upstream of an info op. elem_row_stride: BCE, where a per-element
 * upstream under NONE needs dloss_stride == 0 or >= n_classes. */
static xent_status validate_upstream(const info_shape *s,
                                     const xent_upstream *u,
                                     int elem_row_stride)
{
    XENT_RETURN_IF(!isfinite(u->scale), XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(u->dloss_stride < 0, XENT_STATUS_INVALID_SIZE);
    if (!u->d_dloss)
        return XENT_STATUS_SUCCESS;
    if (s->reduction != XENT_REDUCTION_NONE) {
        XENT_RETURN_IF(u->dloss_stride != 0, XENT_STATUS_INVALID_VALUE);
        return XENT_STATUS_SUCCESS;
    }
    if (elem_row_stride)
        XENT_RETURN_IF(u->dloss_stride != 0 && u->dloss_stride < s->n_classes,
                       XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(xent_mul_overflows(s->n_rows, u->dloss_stride),
                   XENT_STATUS_INVALID_SIZE);
    return XENT_STATUS_SUCCESS;
}

/* A buffer for the aliasing checks. */
typedef struct span {
    const void *p;
    size_t n;
} span;

/* Any two of the spans overlap. */
static int spans_overlap(const span *s, int count)
{
    for (int a = 0; a < count; a++)
        for (int b = a + 1; b < count; b++)
            if (xent_ranges_overlap(s[a].p, s[a].n, s[b].p, s[b].n))
                return 1;
    return 0;
}

static size_t grad_elem(const info_shape *s)
{
    return (s->flags & XENT_FLAG_GRAD_F32) ? 4u : xent_dtype_size(s->dtype);
}

/* A gradient over its input: allowed when exactly the same buffer with the
 * same element size, else no overlap. */
static xent_status check_in_place(const void *grad, size_t gelem,
                                  const void *in, size_t ielem,
                                  const info_shape *s, int64_t ld)
{
    if (!grad)
        return XENT_STATUS_SUCCESS;
    if (grad == in)
        return gelem == ielem ? XENT_STATUS_SUCCESS : XENT_STATUS_ALIASING;
    XENT_RETURN_IF(
        xent_ranges_overlap(
            grad, xent_matrix_bytes(s->n_rows, s->n_classes, ld, gelem), in,
            xent_matrix_bytes(s->n_rows, s->n_classes, ld, ielem)),
        XENT_STATUS_ALIASING);
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Workspace                                                          */
/* ------------------------------------------------------------------ */

/* api.c's layout (denominator, partials, rows) for n_rows rows. */
static xent_ce_desc ws_desc(const info_shape *s)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, s->n_rows, s->n_classes);
    d.reduction = s->reduction;
    return d;
}

static size_t info_ws_bytes(xent_backend b, const info_shape *s)
{
    xent_ce_desc d = ws_desc(s);
    return xent_ws_bytes(b, &d);
}

static xent_status check_ws(const struct xent_handle *h, const info_shape *s,
                            const void *ws, size_t bytes)
{
    size_t need = info_ws_bytes(h->backend, s);
    XENT_RETURN_IF(bytes < need, XENT_STATUS_WORKSPACE_TOO_SMALL);
    XENT_RETURN_IF(need > 0 && !ws, XENT_STATUS_NULL_POINTER);
    return XENT_STATUS_SUCCESS;
}

xent_status xent_entropy_workspace_size(xent_handle_t h,
                                        const xent_entropy_desc *desc,
                                        size_t *bytes)
{
    XENT_RETURN_IF(!h || !bytes, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(entropy_shape(desc, &s));
    *bytes = info_ws_bytes(h->backend, &s);
    return XENT_STATUS_SUCCESS;
}

xent_status xent_kl_workspace_size(xent_handle_t h, const xent_kl_desc *desc,
                                   size_t *bytes)
{
    XENT_RETURN_IF(!h || !bytes, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(kl_shape(desc, &s));
    *bytes = info_ws_bytes(h->backend, &s);
    return XENT_STATUS_SUCCESS;
}

xent_status xent_bce_workspace_size(xent_handle_t h, const xent_bce_desc *desc,
                                    size_t *bytes)
{
    XENT_RETURN_IF(!h || !bytes, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(bce_shape(desc, &s));
    *bytes = info_ws_bytes(h->backend, &s);
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                           */
/* ------------------------------------------------------------------ */

static xent_variant info_variant(const struct xent_handle *h,
                                 const info_shape *s)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, s->n_rows, s->n_classes);
    d.variant = s->variant;
    return xent_ce_choose_variant(h, &d);
}

static void params_init(xent_info_params *p, xent_info_op op,
                        const info_shape *s, const void *logits,
                        const void *target)
{
    memset(p, 0, sizeof *p);
    p->op = op;
    p->n_rows = s->n_rows;
    p->n_classes = s->n_classes;
    p->ld = s->ld;
    p->logits_dtype = s->dtype;
    p->logits = logits;
    p->target = target;
    p->target_ld = s->n_classes;
    p->weight_ld = s->n_classes;
    p->prob_tol = INFINITY;
    p->grad_f32 = (s->flags & XENT_FLAG_GRAD_F32) != 0;
    p->scale = 1.0f;
    p->denom = 1.0;
}

static void params_upstream(xent_info_params *p, const xent_upstream *u)
{
    p->dloss = u->d_dloss;
    p->dloss_stride = u->dloss_stride;
    p->scale = u->scale;
}

/* Merge a call's status word into the handle's sticky one. */
static void merge_status(struct xent_handle *h, const xent_status_word *w)
{
    h->h_status.flags |= w->flags;
    if (w->first_row < h->h_status.first_row)
        h->h_status.first_row = w->first_row;
}

/* Makes the handle's device current; *prev gets the previous one. */

/*
 * The shared driver of entropy, KL and BCE: p is filled except the
 * reduction's pieces. count is the MEAN divisor (rows, or elements for
 * BCE); d_loss is written after the rows.
 */
static xent_status run_info(struct xent_handle *h, const info_shape *s,
                            xent_info_params *p, double count, float *d_loss,
                            void *ws)
{
    xent_ce_desc wd = ws_desc(s);
    xent_ws_layout l = xent_ws_carve(h->backend, &wd, ws);
    const int mean = s->reduction == XENT_REDUCTION_MEAN;
    const double denom = mean ? count : 1.0;
    const float empty =
        (s->flags & XENT_FLAG_EMPTY_MEAN_NAN) && mean ? NAN : 0.0f;
    p->denom = denom == 0.0 ? 1.0 : denom; /* no rows: nothing scaled */
    if (d_loss && !p->loss_rows)
        p->loss_rows = l.rows;

    if (h->backend == XENT_BACKEND_CPU) {
        xent_status_word w = {0, 0, UINT64_MAX};
        xent_status st = XENT_STATUS_SUCCESS;
        if (s->n_rows > 0)
            st = xent_cpu_info_rows(p, h->n_threads, &w);
        if (st == XENT_STATUS_SUCCESS && d_loss)
            *d_loss =
                xent_cpu_reduce_rows(p->loss_rows, s->n_rows, denom, empty);
        merge_status(h, &w);
        if (st == XENT_STATUS_SUCCESS && w.flags)
            return XENT_STATUS_INVALID_DATA;
        return st;
    }

    int prev;
    cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
    p->status = h->d_status;
    if (e == cudaSuccess && s->n_rows > 0)
        e = (cudaError_t)xent_cuda_info_rows(p, info_variant(h, s), h->stream);
    if (e == cudaSuccess && d_loss)
        e = (cudaError_t)xent_cuda_reduce_rows(p->loss_rows, s->n_rows, NULL,
                                               denom, empty, l.partials, d_loss,
                                               h->stream);
    xent_leave_device(prev);
    return xent_status_from_cuda((int)e);
}

/* ---- entropy -------------------------------------------------------- */

static xent_status entropy_call(xent_handle_t h, const xent_entropy_desc *desc,
                                const void *d_logits,
                                const xent_upstream *upstream, int with_grad,
                                void *d_grad, float *d_loss, float *d_loss_rows,
                                void *ws, size_t ws_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(entropy_shape(desc, &s));
    xent_upstream u = upstream ? *upstream : xent_upstream_default();
    if (with_grad)
        XENT_FORWARD_IF_ERROR(validate_upstream(&s, &u, 0));
    else
        XENT_RETURN_IF(!d_loss && !d_loss_rows, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(d_loss && s.reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(s.n_rows > 0 && !d_logits, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(with_grad && s.n_rows > 0 && !d_grad,
                   XENT_STATUS_NULL_POINTER);
    const size_t rb = (size_t)s.n_rows * sizeof(float);
    const size_t zb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld,
                                        xent_dtype_size(s.dtype));
    const size_t gb =
        xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, grad_elem(&s));
    XENT_FORWARD_IF_ERROR(check_in_place(d_grad, grad_elem(&s), d_logits,
                                         xent_dtype_size(s.dtype), &s, s.ld));
    span out[] = {{d_grad, gb}, {d_loss, sizeof(float)}, {d_loss_rows, rb}};
    span in_out[] = {
        {d_logits, zb}, {d_loss, sizeof(float)}, {d_loss_rows, rb}};
    XENT_RETURN_IF(spans_overlap(out, 3) || spans_overlap(in_out, 3),
                   XENT_STATUS_ALIASING);
    XENT_FORWARD_IF_ERROR(check_ws(h, &s, ws, ws_bytes));

    xent_info_params p;
    params_init(&p, XENT_INFO_ENTROPY, &s, d_logits, NULL);
    p.loss_rows = d_loss_rows;
    if (with_grad) {
        p.grad = d_grad;
        params_upstream(&p, &u);
    }
    return run_info(h, &s, &p, (double)s.n_rows, d_loss, ws);
}

xent_status xent_entropy_forward(xent_handle_t h, const xent_entropy_desc *desc,
                                 const void *d_logits, float *d_loss,
                                 float *d_loss_rows, void *d_workspace,
                                 size_t workspace_bytes)
{
    return entropy_call(h, desc, d_logits, NULL, 0, NULL, d_loss, d_loss_rows,
                        d_workspace, workspace_bytes);
}

xent_status xent_entropy_forward_backward(
    xent_handle_t h, const xent_entropy_desc *desc, const void *d_logits,
    const xent_upstream *upstream, void *d_grad, float *d_loss,
    float *d_loss_rows, void *d_workspace, size_t workspace_bytes)
{
    return entropy_call(h, desc, d_logits, upstream, 1, d_grad, d_loss,
                        d_loss_rows, d_workspace, workspace_bytes);
}

/* ---- KL divergence -------------------------------------------------- */

static xent_status kl_call(xent_handle_t h, const xent_kl_desc *desc,
                           const void *d_logits, const void *d_target,
                           const xent_upstream *upstream, int with_grad,
                           void *d_grad, void *d_grad_target, float *d_loss,
                           float *d_loss_rows, void *ws, size_t ws_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(kl_shape(desc, &s));
    const int logits_target = desc->target_kind == XENT_KL_TARGET_LOGITS;
    xent_upstream u = upstream ? *upstream : xent_upstream_default();
    if (with_grad) {
        XENT_FORWARD_IF_ERROR(validate_upstream(&s, &u, 0));
        XENT_RETURN_IF(d_grad_target && !logits_target,
                       XENT_STATUS_INVALID_VALUE);
        XENT_RETURN_IF(s.n_rows > 0 && !d_grad && !d_grad_target,
                       XENT_STATUS_NULL_POINTER);
    } else {
        XENT_RETURN_IF(!d_loss && !d_loss_rows, XENT_STATUS_NULL_POINTER);
    }
    XENT_RETURN_IF(d_loss && s.reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(s.n_rows > 0 && (!d_logits || !d_target),
                   XENT_STATUS_NULL_POINTER);
    const size_t zel = xent_dtype_size(s.dtype);
    const size_t tel = logits_target ? zel : 4u;
    const size_t gel = grad_elem(&s);
    const size_t rb = (size_t)s.n_rows * sizeof(float);
    const size_t zb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, zel);
    const size_t tb =
        xent_matrix_bytes(s.n_rows, s.n_classes, desc->target_ld, tel);
    const size_t gb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, gel);
    const size_t gtb =
        xent_matrix_bytes(s.n_rows, s.n_classes, desc->target_ld, gel);
    XENT_FORWARD_IF_ERROR(check_in_place(d_grad, gel, d_logits, zel, &s, s.ld));
    XENT_FORWARD_IF_ERROR(
        check_in_place(d_grad_target, gel, d_target, tel, &s, desc->target_ld));
    /* the outputs are disjoint; each gradient may only meet its own input
     * (exactly, checked above) */
    span out[] = {{d_grad, gb},
                  {d_grad_target, gtb},
                  {d_loss, sizeof(float)},
                  {d_loss_rows, rb}};
    int bad = spans_overlap(out, 4) ||
              xent_ranges_overlap(d_grad, gb, d_target, tb) ||
              xent_ranges_overlap(d_grad_target, gtb, d_logits, zb);
    for (int k = 2; k < 4 && !bad; k++) /* the losses vs the inputs */
        bad = xent_ranges_overlap(out[k].p, out[k].n, d_logits, zb) ||
              xent_ranges_overlap(out[k].p, out[k].n, d_target, tb);
    XENT_RETURN_IF(bad, XENT_STATUS_ALIASING);
    XENT_FORWARD_IF_ERROR(check_ws(h, &s, ws, ws_bytes));

    xent_info_params p;
    params_init(&p, logits_target ? XENT_INFO_KL_LOGITS : XENT_INFO_KL_PROBS,
                &s, d_logits, d_target);
    p.target_ld = desc->target_ld;
    p.prob_tol = desc->prob_tol;
    p.loss_rows = d_loss_rows;
    if (with_grad) {
        p.grad = d_grad;
        p.grad_target = d_grad_target;
        params_upstream(&p, &u);
    }
    return run_info(h, &s, &p, (double)s.n_rows, d_loss, ws);
}

xent_status xent_kl_forward(xent_handle_t h, const xent_kl_desc *desc,
                            const void *d_logits, const void *d_target,
                            float *d_loss, float *d_loss_rows,
                            void *d_workspace, size_t workspace_bytes)
{
    return kl_call(h, desc, d_logits, d_target, NULL, 0, NULL, NULL, d_loss,
                   d_loss_rows, d_workspace, workspace_bytes);
}

xent_status xent_kl_forward_backward(xent_handle_t h, const xent_kl_desc *desc,
                                     const void *d_logits, const void *d_target,
                                     const xent_upstream *upstream,
                                     void *d_grad, void *d_grad_target,
                                     float *d_loss, float *d_loss_rows,
                                     void *d_workspace, size_t workspace_bytes)
{
    return kl_call(h, desc, d_logits, d_target, upstream, 1, d_grad,
                   d_grad_target, d_loss, d_loss_rows, d_workspace,
                   workspace_bytes);
}

/* ---- binary cross-entropy ------------------------------------------- */

static xent_status bce_call(xent_handle_t h, const xent_bce_desc *desc,
                            const void *d_logits, const void *d_targets,
                            const xent_upstream *upstream, int with_grad,
                            void *d_grad, float *d_loss, float *d_loss_elems,
                            void *ws, size_t ws_bytes)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    info_shape s;
    XENT_FORWARD_IF_ERROR(bce_shape(desc, &s));
    xent_upstream u = upstream ? *upstream : xent_upstream_default();
    if (with_grad)
        XENT_FORWARD_IF_ERROR(validate_upstream(&s, &u, 1));
    else
        XENT_RETURN_IF(!d_loss && !d_loss_elems, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(d_loss && s.reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(s.n_rows > 0 && (!d_logits || !d_targets),
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(with_grad && s.n_rows > 0 && !d_grad,
                   XENT_STATUS_NULL_POINTER);
    const size_t zel = xent_dtype_size(s.dtype), gel = grad_elem(&s);
    const size_t zb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, zel);
    const size_t gb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, gel);
    const size_t eb = xent_matrix_bytes(s.n_rows, s.n_classes, s.ld, 4);
    const size_t yb =
        xent_matrix_bytes(s.n_rows, s.n_classes, desc->target_ld, 4);
    const size_t wb = desc->weight ? xent_matrix_bytes(s.n_rows, s.n_classes,
                                                       desc->weight_ld, 4)
                                   : 0;
    const size_t pb = (size_t)s.n_classes * sizeof(float);
    XENT_FORWARD_IF_ERROR(check_in_place(d_grad, gel, d_logits, zel, &s, s.ld));
    span out[] = {{d_grad, gb}, {d_loss, sizeof(float)}, {d_loss_elems, eb}};
    span ins[] = {{d_targets, yb}, {desc->weight, wb}, {desc->pos_weight, pb}};
    int bad = spans_overlap(out, 3);
    for (int a = 0; a < 3 && !bad; a++) {
        for (int b = 0; b < 3; b++)
            bad |= xent_ranges_overlap(out[a].p, out[a].n, ins[b].p, ins[b].n);
        if (a > 0) /* the gradient may be the logits themselves */
            bad |= xent_ranges_overlap(out[a].p, out[a].n, d_logits, zb);
    }
    XENT_RETURN_IF(bad, XENT_STATUS_ALIASING);
    XENT_FORWARD_IF_ERROR(check_ws(h, &s, ws, ws_bytes));

    if (h->backend == XENT_BACKEND_CPU) {
        /* host memory: pos_weight is checked before anything is written */
        XENT_FORWARD_IF_ERROR(
            xent_cpu_check_weights(h, desc->pos_weight, s.n_classes));
    }
    xent_info_params p;
    params_init(&p, XENT_INFO_BCE, &s, d_logits, d_targets);
    p.target_ld = desc->target_ld;
    p.pos_weight = desc->pos_weight;
    p.weight = desc->weight;
    p.weight_ld = desc->weight ? desc->weight_ld : s.n_classes;
    p.loss_elems = d_loss_elems;
    if (with_grad) {
        p.grad = d_grad;
        params_upstream(&p, &u);
    }
    return run_info(h, &s, &p, (double)s.n_rows * (double)s.n_classes, d_loss,
                    ws);
}

xent_status xent_bce_forward(xent_handle_t h, const xent_bce_desc *desc,
                             const void *d_logits, const void *d_targets,
                             float *d_loss, float *d_loss_elems,
                             void *d_workspace, size_t workspace_bytes)
{
    return bce_call(h, desc, d_logits, d_targets, NULL, 0, NULL, d_loss,
                    d_loss_elems, d_workspace, workspace_bytes);
}

xent_status
xent_bce_forward_backward(xent_handle_t h, const xent_bce_desc *desc,
                          const void *d_logits, const void *d_targets,
                          const xent_upstream *upstream, void *d_grad,
                          float *d_loss, float *d_loss_elems, void *d_workspace,
                          size_t workspace_bytes)
{
    return bce_call(h, desc, d_logits, d_targets, upstream, 1, d_grad, d_loss,
                    d_loss_elems, d_workspace, workspace_bytes);
}

/* ------------------------------------------------------------------ */
/* Evaluation statistics                                              */
/* ------------------------------------------------------------------ */

/*
 * AUTO for xent_ce_eval looks at n_classes only, so that a row's values
 * (and so the corpus sums) do not depend on how the corpus is split into
 * calls: a warp per row up to 2048 classes (a few dozen columns per lane),
 * a block per row above.
 */
static xent_variant eval_variant(const xent_ce_desc *d)
{
    if (d->variant != XENT_VARIANT_AUTO)
        return d->variant;
    return d->n_classes <= 2048 ? XENT_VARIANT_WARP_ROW
                                : XENT_VARIANT_BLOCK_ROW;
}

/* Resident blocks per SM the eval grid is capped at (times the SM count):
 * enough to fill the machine, few enough that the accumulator's atomics
 * (one set per block) cost nothing. */
#define XENT_EVAL_BLOCKS_PER_SM 8

xent_status xent_ce_eval(xent_handle_t h, const xent_ce_desc *desc,
                         const void *d_logits, const void *d_targets,
                         int64_t top_k, const xent_eval_outputs *outputs,
                         xent_eval_accum *d_accum)
{
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(xent_ce_validate_desc(desc));
    XENT_RETURN_IF(desc->target_type != XENT_TARGET_INDEX_I32 &&
                       desc->target_type != XENT_TARGET_INDEX_I64,
                   XENT_STATUS_UNSUPPORTED);
    XENT_RETURN_IF(desc->n_classes > (int64_t)INT32_MAX - 1,
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(top_k < 1, XENT_STATUS_INVALID_VALUE);
    xent_eval_outputs o;
    if (outputs)
        o = *outputs;
    else
        memset(&o, 0, sizeof o);
    XENT_RETURN_IF(!d_accum && !o.d_loss && !o.d_lse && !o.d_argmax &&
                       !o.d_correct && !o.d_rank && !o.d_entropy && !o.d_z_loss,
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(desc->n_rows > 0 && (!d_logits || !d_targets),
                   XENT_STATUS_NULL_POINTER);
    const int64_t n = desc->n_rows;
    const size_t f4 = (size_t)n * 4u, f8 = (size_t)n * 8u;
    span all[] = {
        {d_logits, xent_matrix_bytes(n, desc->n_classes, desc->ld,
                                     xent_dtype_size(desc->logits_dtype))},
        {d_targets,
         (size_t)n * (desc->target_type == XENT_TARGET_INDEX_I32 ? 4u : 8u)},
        {o.d_loss, f4},
        {o.d_lse, f4},
        {o.d_argmax, f8},
        {o.d_correct, (size_t)n},
        {o.d_rank, f8},
        {o.d_entropy, f4},
        {o.d_z_loss, f4},
        {d_accum, sizeof *d_accum}};
    /* inputs may share memory with each other (both are read only) */
    int bad = spans_overlap(all + 2, 8);
    for (int k = 2; k < 10 && !bad; k++)
        bad = xent_ranges_overlap(all[k].p, all[k].n, all[0].p, all[0].n) ||
              xent_ranges_overlap(all[k].p, all[k].n, all[1].p, all[1].n) ||
              xent_ranges_overlap(all[k].p, all[k].n, desc->weights,
                                  desc->weights ? (size_t)desc->n_classes * 4u
                                                : 0u);
    XENT_RETURN_IF(bad, XENT_STATUS_ALIASING);

    xent_eval_params p;
    memset(&p, 0, sizeof p);
    p.n_rows = n;
    p.n_classes = desc->n_classes;
    p.ld = desc->ld;
    p.logits_dtype = desc->logits_dtype;
    p.logits = d_logits;
    p.target_type = desc->target_type;
    p.targets = d_targets;
    p.ignore_index = desc->ignore_index;
    p.weights = desc->weights;
    p.label_smoothing = desc->label_smoothing;
    p.z_loss = desc->z_loss;
    p.softcap = desc->softcap;
    p.top_k = top_k;
    p.loss = o.d_loss;
    p.lse = o.d_lse;
    p.entropy = o.d_entropy;
    p.zloss = o.d_z_loss;
    p.argmax = o.d_argmax;
    p.rank = o.d_rank;
    p.correct = o.d_correct;
    p.accum = d_accum;

    if (h->backend == XENT_BACKEND_CPU) {
        /* host memory: weights are checked before anything is written, as
         * for cross-entropy */
        XENT_FORWARD_IF_ERROR(
            xent_cpu_check_weights(h, desc->weights, desc->n_classes));
        xent_status_word w = {0, 0, UINT64_MAX};
        xent_status st = XENT_STATUS_SUCCESS;
        if (n > 0)
            st = xent_cpu_eval_rows(&p, h->n_threads, &w);
        merge_status(h, &w);
        if (st == XENT_STATUS_SUCCESS && w.flags)
            return (w.flags & XENT_DATA_TARGET_OUT_OF_RANGE)
                       ? XENT_STATUS_TARGET_OUT_OF_RANGE
                       : XENT_STATUS_INVALID_DATA;
        return st;
    }

    int prev;
    cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
    p.status = h->d_status;
    p.max_blocks =
        (h->sm_count > 0 ? h->sm_count : 132) * XENT_EVAL_BLOCKS_PER_SM;
    if (e == cudaSuccess && n > 0)
        e = (cudaError_t)xent_cuda_eval_rows(&p, eval_variant(desc), h->stream);
    xent_leave_device(prev);
    return xent_status_from_cuda((int)e);
}

xent_status xent_eval_accum_reset(xent_handle_t h, xent_eval_accum *d_accum)
{
    XENT_RETURN_IF(!h || !d_accum, XENT_STATUS_NULL_POINTER);
    if (h->backend == XENT_BACKEND_CPU) {
        memset(d_accum, 0, sizeof *d_accum);
        return XENT_STATUS_SUCCESS;
    }
    int prev;
    cudaError_t e = (cudaError_t)xent_enter_device(h, &prev);
    if (e == cudaSuccess)
        e = (cudaError_t)xent_cuda_eval_accum_reset(d_accum, h->stream);
    xent_leave_device(prev);
    return xent_status_from_cuda((int)e);
}

static xent_u128 accum_get(const uint64_t w[2])
{
    return ((xent_u128)w[1] << 64) | (xent_u128)w[0];
}

static void accum_put(uint64_t w[2], xent_u128 v)
{
    w[0] = (uint64_t)v;
    w[1] = (uint64_t)(v >> 64);
}

xent_status xent_eval_accum_merge(xent_eval_accum *dst,
                                  const xent_eval_accum *src)
{
    XENT_RETURN_IF(!dst || !src, XENT_STATUS_NULL_POINTER);
    accum_put(dst->nll, accum_get(dst->nll) + accum_get(src->nll));
    accum_put(dst->entropy, accum_get(dst->entropy) + accum_get(src->entropy));
    /* the counts wrap like the device's unsigned atomics */
    dst->tokens = (int64_t)((uint64_t)dst->tokens + (uint64_t)src->tokens);
    dst->top1 = (int64_t)((uint64_t)dst->top1 + (uint64_t)src->top1);
    dst->topk = (int64_t)((uint64_t)dst->topk + (uint64_t)src->topk);
    dst->nonfinite =
        (int64_t)((uint64_t)dst->nonfinite + (uint64_t)src->nonfinite);
    return XENT_STATUS_SUCCESS;
}

/* A 128-bit two's-complement fixed-point sum (32 fraction bits) as a
 * double. */
static double fixed_to_double(const uint64_t w[2])
{
    __extension__ typedef __int128 xent_i128;
    const xent_i128 v = (xent_i128)accum_get(w);
    return ldexp((double)v, -32);
}

xent_status xent_eval_summarize(const xent_eval_accum *a,
                                xent_eval_summary *out)
{
    XENT_RETURN_IF(!a || !out, XENT_STATUS_NULL_POINTER);
    memset(out, 0, sizeof *out);
    out->tokens = a->tokens;
    out->nonfinite = a->nonfinite;
    out->nll_sum = fixed_to_double(a->nll);
    out->entropy_sum = fixed_to_double(a->entropy);
    if (a->tokens <= 0) {
        out->mean_nll = NAN;
        out->perplexity = NAN;
        out->accuracy = NAN;
        out->topk_accuracy = NAN;
        out->mean_entropy = NAN;
        return XENT_STATUS_SUCCESS;
    }
    const double n = (double)a->tokens;
    out->accuracy = (double)a->top1 / n;
    out->topk_accuracy = (double)a->topk / n;
    if (a->nonfinite > 0) {
        out->mean_nll = NAN;
        out->perplexity = NAN;
        out->mean_entropy = NAN;
    } else {
        out->mean_nll = out->nll_sum / n;
        out->perplexity = exp(out->mean_nll);
        out->mean_entropy = out->entropy_sum / n;
    }
    return XENT_STATUS_SUCCESS;
}
