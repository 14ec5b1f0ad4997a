/*
 * cli_loss.c - `xent loss`: softmax cross-entropy of logits in a .npy file
 * against class indices or probabilities, with every option of
 * torch.nn.functional.cross_entropy, streamed in chunks of rows so that the
 * logits may be larger than GPU memory and than RAM.
 *
 * One path for every batch: the rows are processed in chunks (one chunk
 * when everything fits), and the result does not depend on the chunk size:
 *  - the per-row losses are always computed; the reduced loss is their sum
 *    in fp64, in row order, on the host (divided by the MEAN denominator);
 *  - the MEAN denominator is computed on the host first, in row order, from
 *    the targets (sum of w_{y_i} over non-ignored rows; N for probability
 *    targets; 0 when every row is ignored, which gives a loss of 0, the
 *    library's default);
 *  - the gradient of a MEAN loss is computed chunk by chunk with reduction
 *    SUM and an upstream scale of 1/denominator, which is exactly the
 *    factor the library applies under MEAN, so every row sees the global
 *    denominator and the bits equal a one-shot call; SUM and NONE chunks
 *    need no scale.
 *
 * CPU: each chunk is handed to the CPU backend directly from the file
 * mapping when the dtype needs no conversion (f32, f16, bf16), else
 * converted into a buffer first.
 *
 * GPU: two slots, each with pinned host staging and device buffers for the
 * inputs (logits in the library dtype, then targets) and the outputs
 * (gradient, row losses, lse), and three streams: H2D copies, compute (the
 * handle's stream) and D2H copies, ordered by events. While the GPU
 * computes chunk k, the host converts chunk k+1 into the other slot's
 * staging buffer and its copy runs, and the outputs of chunk k-1 travel
 * back and are written to the output files:
 *
 *   host:    fill k | issue k | wait D2H k-1, write k-1 | fill k+1 | ...
 *   H2D:        [wait compute k-2] copy k
 *   compute:              [wait H2D k, D2H k-2] rows k
 *   D2H:                                 [wait compute k] copy k back
 *
 * Out-of-range targets are found by the host scan before anything runs
 * (the message names the file and the row); the device status word is
 * still read at the end as a guard.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cuda_runtime_api.h>

#include "bench.h"

enum { RED_MEAN = 0, RED_SUM = 1, RED_NONE = 2 };
static const char *const k_reductions[] = {"mean", "sum", "none", NULL};
/* in xent_variant order */
static const char *const k_variants[] = {"auto", "warp_row", "block_row", NULL};

typedef struct loss_opts {
    const char *logits, *targets, *probs, *weights;
    const char *loss_out, *grad_out, *lse_out;
    int64_t ignore_index;
    double label_smoothing, z_loss, softcap;
    int reduction;
    int variant;
    xent_cli_common common;
} loss_opts;

typedef struct loss_job {
    const loss_opts *o;
    xent_npy z, t, q;
    float *weights; /* host [C] or NULL */
    int64_t n, c;
    xent_dtype dtype; /* the library's logits dtype */
    int convert;      /* float64 logits, converted to float32 */
    int index;        /* class-index targets (else probabilities) */
    double denom;     /* MEAN denominator */
    int64_t n_ignored;
    int want_grad, want_lse;
    xent_variant variant; /* resolved once for the whole batch */
    int64_t chunk_rows, chunks, done;
    double sum; /* fp64 sum of the row losses, in row order */
    xent_cli_output out_loss, out_grad, out_lse;
    xent_cli_progress bar;
    int host_threads;
} loss_job;

/* ------------------------------------------------------------------------ */
/* Shared by both backends                                                  */
/* ------------------------------------------------------------------------ */

/* The descriptor and upstream for a chunk of `rows` rows. */
static void chunk_desc(const loss_job *J, int64_t rows, const float *weights,
                       xent_ce_desc *d, xent_upstream *u)
{
    const loss_opts *o = J->o;
    xent_ce_desc_init(d, rows, J->c);
    d->logits_dtype = J->dtype;
    d->target_type = J->index ? XENT_TARGET_INDEX_I64 : XENT_TARGET_PROBS_F32;
    d->ignore_index = J->index ? o->ignore_index : XENT_DEFAULT_IGNORE_INDEX;
    d->weights = weights;
    d->n_weights = weights ? J->c : 0;
    d->label_smoothing = (float)o->label_smoothing;
    d->z_loss = (float)o->z_loss;
    d->softcap = (float)o->softcap;
    d->variant = J->variant;
    *u = xent_upstream_default();
    if (!J->want_grad) {
        d->reduction = XENT_REDUCTION_NONE;
        return;
    }
    if (J->dtype != XENT_DTYPE_F32)
        d->flags |= XENT_FLAG_GRAD_F32;
    switch (o->reduction) {
    case RED_NONE: d->reduction = XENT_REDUCTION_NONE; break;
    case RED_SUM: d->reduction = XENT_REDUCTION_SUM; break;
    default:
        if (J->denom > 0.0) {
            /* the library's MEAN factor, (float)(1 / denom), with the
             * global denominator */
            d->reduction = XENT_REDUCTION_SUM;
            u->scale = (float)(1.0 / J->denom);
        } else {
            /* every target weight is 0: each chunk's own denominator is 0
             * as well, so MEAN per chunk is the one-shot result */
            d->reduction = XENT_REDUCTION_MEAN;
        }
    }
}

/* Accumulates and writes the outputs of `rows` rows. */
static int consume(loss_job *J, int64_t rows, const float *loss,
                   const float *lse, const float *grad)
{
    for (int64_t i = 0; i < rows; i++)
        J->sum += (double)loss[i];
    int rc = xent_cli_output_write(&J->out_loss, loss, (size_t)rows * 4);
    if (!rc && lse)
        rc = xent_cli_output_write(&J->out_lse, lse, (size_t)rows * 4);
    if (!rc && grad)
        rc = xent_cli_output_write(&J->out_grad, grad,
                                   (size_t)rows * (size_t)J->c * 4);
    J->done += rows;
    J->chunks++;
    xent_cli_progress_update(&J->bar, J->done);
    return rc;
}

/* A library failure on a chunk starting at row r0. */
static int chunk_failed(loss_job *J, xent_handle_t h, xent_status st,
                        int64_t r0)
{
    if (st == XENT_STATUS_TARGET_OUT_OF_RANGE) {
        xent_data_report rep = {0, -1};
        (void)xent_read_data_report(h, &rep, 1);
        return xent_cli_fail(
            XENT_CLI_EXIT_USAGE,
            "%s: row %lld: class index out of range [0, "
            "%lld)",
            J->t.path ? J->t.path : J->o->targets,
            (long long)(r0 + (rep.first_row >= 0 ? rep.first_row : 0)),
            (long long)J->c);
    }
    if (st == XENT_STATUS_INVALID_DATA)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: invalid class weights (negative or NaN)",
                             J->o->weights ? J->o->weights : "weights");
    char buf[512];
    return xent_cli_fail(xent_cli_status_exit(st), "loss: %s",
                         xent_cli_status_text(st, buf, sizeof buf));
}

static int aligned(const void *p, size_t a)
{
    return (uintptr_t)p % a == 0;
}

/* ------------------------------------------------------------------------ */
/* CPU                                                                      */
/* ------------------------------------------------------------------------ */

static int run_cpu(loss_job *J, const xent_cli_device *dev)
{
    const int64_t R = J->chunk_rows, C = J->c;
    const size_t zsz = J->z.header.itemsize;
    const size_t esz = xent_cli_dtype_size(J->dtype);
    const int z_direct = !J->convert && aligned(J->z.data, zsz);
    const int q_direct = !J->index && J->q.header.dtype == XENT_NPY_DTYPE_F32 &&
                         aligned(J->q.data, 4);
    const xent_npy_dtype z_want =
        J->convert ? XENT_NPY_DTYPE_F32 : J->z.header.dtype;
    xent_handle_t h = dev->handle;
    int rc = 0;

    float *loss = malloc((size_t)R * 4);
    float *lse = J->want_lse ? malloc((size_t)R * 4) : NULL;
    float *grad = J->want_grad ? malloc((size_t)R * (size_t)C * 4) : NULL;
    void *zbuf = z_direct ? NULL : malloc((size_t)R * (size_t)C * esz);
    int64_t *tbuf = J->index ? malloc((size_t)R * 8) : NULL;
    float *qbuf =
        (!J->index && !q_direct) ? malloc((size_t)R * (size_t)C * 4) : NULL;
    void *ws = NULL;
    if (!loss || (J->want_lse && !lse) || (J->want_grad && !grad) ||
        (!z_direct && !zbuf) || (J->index && !tbuf) ||
        (!J->index && !q_direct && !qbuf)) {
        rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                           "out of memory for chunks of %lld rows (try a "
                           "smaller --chunk-rows)",
                           (long long)R);
        goto out;
    }
    xent_ce_desc d;
    xent_upstream u;
    chunk_desc(J, R, J->weights, &d, &u);
    size_t wsb = 0;
    xent_status st = xent_ce_workspace_size(h, &d, &wsb);
    if (st != XENT_STATUS_SUCCESS) {
        rc = chunk_failed(J, h, st, 0);
        goto out;
    }
    if (wsb && !(ws = malloc(wsb))) {
        rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "out of memory");
        goto out;
    }

    for (int64_t r0 = 0; r0 < J->n && rc == 0; r0 += R) {
        const int64_t rows = J->n - r0 < R ? J->n - r0 : R;
        chunk_desc(J, rows, J->weights, &d, &u);
        const void *zp;
        if (z_direct) {
            zp = (const char *)J->z.data + (size_t)r0 * (size_t)C * zsz;
        } else {
            xent_cli_copy_rows(&J->z, r0, rows, C, z_want, zbuf,
                               J->host_threads);
            zp = zbuf;
        }
        const void *tp;
        if (J->index) {
            xent_npy_to_i64(J->t.header.dtype,
                            (const char *)J->t.data +
                                (size_t)r0 * J->t.header.itemsize,
                            tbuf, (size_t)rows);
            tp = tbuf;
        } else if (q_direct) {
            tp = (const char *)J->q.data + (size_t)r0 * (size_t)C * 4;
        } else {
            xent_cli_copy_rows(&J->q, r0, rows, C, XENT_NPY_DTYPE_F32, qbuf,
                               J->host_threads);
            tp = qbuf;
        }
        if (J->want_grad)
            st = xent_ce_forward_backward(h, &d, zp, tp, &u, grad, NULL, loss,
                                          lse, ws, wsb);
        else
            st = xent_ce_forward(h, &d, zp, tp, NULL, loss, lse, NULL, 0);
        if (st != XENT_STATUS_SUCCESS) {
            rc = chunk_failed(J, h, st, r0);
            break;
        }
        rc = consume(J, rows, loss, lse, grad);
    }
out:
    free(loss);
    free(lse);
    free(grad);
    free(zbuf);
    free(tbuf);
    free(qbuf);
    free(ws);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* GPU                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct gpu_layout {
    size_t z_off, t_off, in_bytes;         /* logits | targets */
    size_t g_off, l_off, s_off, out_bytes; /* grad | loss | lse */
    size_t z_row, t_row;                   /* bytes per row */
} gpu_layout;

static size_t round256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

static gpu_layout gpu_layout_for(const loss_job *J, int64_t R)
{
    gpu_layout L;
    size_t r = (size_t)R, c = (size_t)J->c;
    L.z_row = c * xent_cli_dtype_size(J->dtype);
    L.t_row = J->index ? 8 : c * 4;
    L.z_off = 0;
    L.t_off = round256(r * L.z_row);
    L.in_bytes = L.t_off + round256(r * L.t_row);
    L.g_off = 0;
    L.l_off = J->want_grad ? round256(r * c * 4) : 0;
    L.s_off = L.l_off + round256(r * 4);
    L.out_bytes = L.s_off + (J->want_lse ? round256(r * 4) : 0);
    return L;
}

typedef struct gpu_slot {
    char *h_in, *d_in, *h_out, *d_out;
    cudaEvent_t ev_h2d, ev_comp, ev_d2h;
    int64_t r0, rows;
} gpu_slot;

typedef struct gpu_state {
    gpu_slot slot[2];
    cudaStream_t s_h2d, s_comp, s_d2h;
    float *d_w;
    void *d_ws;
    size_t ws_bytes;
    gpu_layout L;
} gpu_state;

static void gpu_free_slots(gpu_state *g)
{
    for (int k = 0; k < 2; k++) {
        gpu_slot *s = &g->slot[k];
        if (s->h_in)
            (void)cudaFreeHost(s->h_in);
        if (s->h_out)
            (void)cudaFreeHost(s->h_out);
        if (s->d_in)
            (void)cudaFree(s->d_in);
        if (s->d_out)
            (void)cudaFree(s->d_out);
        s->h_in = s->h_out = s->d_in = s->d_out = NULL;
    }
}

/* Staging and device buffers for chunks of R rows; cudaErrorMemoryAllocation
 * when they do not fit. */
static cudaError_t gpu_alloc_slots(gpu_state *g, const loss_job *J, int64_t R)
{
    g->L = gpu_layout_for(J, R);
    cudaError_t e = cudaSuccess;
    for (int k = 0; k < 2 && e == cudaSuccess; k++) {
        gpu_slot *s = &g->slot[k];
        e = cudaHostAlloc((void **)&s->h_in, g->L.in_bytes,
                          cudaHostAllocDefault);
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&s->h_out, g->L.out_bytes,
                              cudaHostAllocDefault);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&s->d_in, g->L.in_bytes);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&s->d_out, g->L.out_bytes);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        gpu_free_slots(g);
    }
    return e;
}

/* The host half of a chunk: its inputs into the slot's pinned buffer. */
static void gpu_fill(const loss_job *J, gpu_slot *s, const gpu_layout *L)
{
    const xent_npy_dtype z_want =
        J->convert ? XENT_NPY_DTYPE_F32 : J->z.header.dtype;
    xent_cli_copy_rows(&J->z, s->r0, s->rows, J->c, z_want, s->h_in + L->z_off,
                       J->host_threads);
    if (J->index)
        xent_npy_to_i64(
            J->t.header.dtype,
            (const char *)J->t.data + (size_t)s->r0 * J->t.header.itemsize,
            (int64_t *)(void *)(s->h_in + L->t_off), (size_t)s->rows);
    else
        xent_cli_copy_rows(&J->q, s->r0, s->rows, J->c, XENT_NPY_DTYPE_F32,
                           s->h_in + L->t_off, J->host_threads);
}

/* Queues a chunk: H2D, compute, D2H. Returns a cudaError_t, or sets *st. */
static cudaError_t gpu_issue(const loss_job *J, gpu_state *g, gpu_slot *s,
                             xent_handle_t h, xent_status *st)
{
    const gpu_layout *L = &g->L;
    const size_t rows = (size_t)s->rows;
    *st = XENT_STATUS_SUCCESS;
    /* the slot's device inputs are free once its previous chunk computed */
    cudaError_t e = cudaStreamWaitEvent(g->s_h2d, s->ev_comp, 0);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(s->d_in + L->z_off, s->h_in + L->z_off,
                            rows * L->z_row, cudaMemcpyHostToDevice, g->s_h2d);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(s->d_in + L->t_off, s->h_in + L->t_off,
                            rows * L->t_row, cudaMemcpyHostToDevice, g->s_h2d);
    if (e == cudaSuccess)
        e = cudaEventRecord(s->ev_h2d, g->s_h2d);
    /* compute after the inputs arrived and the previous outputs left */
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(g->s_comp, s->ev_h2d, 0);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(g->s_comp, s->ev_d2h, 0);
    if (e != cudaSuccess)
        return e;

    xent_ce_desc d;
    xent_upstream u;
    chunk_desc(J, s->rows, g->d_w, &d, &u);
    const void *zp = s->d_in + L->z_off, *tp = s->d_in + L->t_off;
    float *loss = (float *)(void *)(s->d_out + L->l_off);
    float *lse = J->want_lse ? (float *)(void *)(s->d_out + L->s_off) : NULL;
    if (J->want_grad)
        *st = xent_ce_forward_backward(h, &d, zp, tp, &u, s->d_out + L->g_off,
                                       NULL, loss, lse, g->d_ws, g->ws_bytes);
    else
        *st = xent_ce_forward(h, &d, zp, tp, NULL, loss, lse, NULL, 0);
    if (*st != XENT_STATUS_SUCCESS)
        return cudaSuccess;

    e = cudaEventRecord(s->ev_comp, g->s_comp);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(g->s_d2h, s->ev_comp, 0);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(s->h_out + L->l_off, s->d_out + L->l_off, rows * 4,
                            cudaMemcpyDeviceToHost, g->s_d2h);
    if (e == cudaSuccess && J->want_lse)
        e = cudaMemcpyAsync(s->h_out + L->s_off, s->d_out + L->s_off, rows * 4,
                            cudaMemcpyDeviceToHost, g->s_d2h);
    if (e == cudaSuccess && J->want_grad)
        e = cudaMemcpyAsync(s->h_out + L->g_off, s->d_out + L->g_off,
                            rows * (size_t)J->c * 4, cudaMemcpyDeviceToHost,
                            g->s_d2h);
    if (e == cudaSuccess)
        e = cudaEventRecord(s->ev_d2h, g->s_d2h);
    return e;
}

/* Waits for a slot's outputs and writes them. */
static int gpu_drain(loss_job *J, gpu_state *g, gpu_slot *s, cudaError_t *err)
{
    *err = cudaEventSynchronize(s->ev_d2h);
    if (*err != cudaSuccess)
        return 0;
    const gpu_layout *L = &g->L;
    return consume(
        J, s->rows, (const float *)(void *)(s->h_out + L->l_off),
        J->want_lse ? (const float *)(void *)(s->h_out + L->s_off) : NULL,
        J->want_grad ? (const float *)(void *)(s->h_out + L->g_off) : NULL);
}

static int cuda_failed(cudaError_t e)
{
    if (e == cudaErrorMemoryAllocation)
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "out of GPU memory");
    return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "CUDA error: %s",
                         cudaGetErrorString(e));
}

/* Default rows per chunk on the GPU: at most 256 MiB of logits, and both
 * slots within half the free device memory. */
static int64_t gpu_default_rows(const loss_job *J, const xent_cli_device *dev)
{
    gpu_layout one = gpu_layout_for(J, 1);
    size_t per_row = one.z_row + one.t_row + (J->want_grad ? J->c * 4 : 0) + 4 +
                     (J->want_lse ? 4 : 0);
    size_t cap = ((size_t)256 << 20) / one.z_row;
    size_t fr = dev->free_bytes ? dev->free_bytes : ((size_t)4 << 30);
    size_t mem = fr / 2 / (2 * per_row);
    size_t r = cap < mem ? cap : mem;
    return r < 1 ? 1 : (int64_t)r;
}

/*
 * The kernel variant for every chunk. The library's AUTO choice depends on
 * the number of rows in the call (a warp per row for C <= 2048 when there
 * are at least 4 rows per SM, else a block per row), and variants differ in
 * the last bits, so AUTO is resolved here once, by the same rule, for the
 * whole batch: the results are then the same whatever the chunk size.
 */
static xent_variant resolve_variant(const loss_job *J,
                                    const xent_cli_device *dev)
{
    if (J->o->variant != XENT_VARIANT_AUTO)
        return (xent_variant)J->o->variant;
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                               dev->ordinal) != cudaSuccess ||
        sms <= 0) {
        (void)cudaGetLastError();
        sms = 132;
    }
    return J->c <= 2048 && J->n >= 4 * (int64_t)sms ? XENT_VARIANT_WARP_ROW
                                                    : XENT_VARIANT_BLOCK_ROW;
}

static int run_gpu(loss_job *J, const xent_cli_device *dev, int forced)
{
    gpu_state g;
    memset(&g, 0, sizeof g);
    xent_handle_t h = dev->handle;
    int rc = 0, n_ev = 0;
    cudaError_t e = cudaSuccess;
    xent_status st = XENT_STATUS_SUCCESS;

#define GPU_TRY(call)                                                          \
    do {                                                                       \
        e = (call);                                                            \
        if (e != cudaSuccess) {                                                \
            rc = cuda_failed(e);                                               \
            goto out;                                                          \
        }                                                                      \
    } while (0)

    GPU_TRY(cudaStreamCreateWithFlags(&g.s_h2d, cudaStreamNonBlocking));
    GPU_TRY(cudaStreamCreateWithFlags(&g.s_comp, cudaStreamNonBlocking));
    GPU_TRY(cudaStreamCreateWithFlags(&g.s_d2h, cudaStreamNonBlocking));
    for (int k = 0; k < 2; k++) {
        GPU_TRY(cudaEventCreateWithFlags(&g.slot[k].ev_h2d,
                                         cudaEventDisableTiming));
        n_ev++;
        GPU_TRY(cudaEventCreateWithFlags(&g.slot[k].ev_comp,
                                         cudaEventDisableTiming));
        n_ev++;
        GPU_TRY(cudaEventCreateWithFlags(&g.slot[k].ev_d2h,
                                         cudaEventDisableTiming));
        n_ev++;
    }
    J->variant = resolve_variant(J, dev);
    st = xent_set_stream(h, (struct CUstream_st *)g.s_comp);
    if (st != XENT_STATUS_SUCCESS) {
        rc = chunk_failed(J, h, st, 0);
        goto out;
    }
    if (J->weights) {
        GPU_TRY(cudaMalloc((void **)&g.d_w, (size_t)J->c * 4));
        /* on the H2D stream: the first chunk's compute waits for that
         * stream's event, so it also waits for the weights (a plain
         * cudaMemcpy would not order against the non-blocking streams) */
        GPU_TRY(cudaMemcpyAsync(g.d_w, J->weights, (size_t)J->c * 4,
                                cudaMemcpyHostToDevice, g.s_h2d));
    }

    /* buffers: halve a default chunk until it fits */
    for (;;) {
        e = gpu_alloc_slots(&g, J, J->chunk_rows);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorMemoryAllocation || forced || J->chunk_rows == 1) {
            rc = e == cudaErrorMemoryAllocation
                     ? xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                                     "out of GPU or pinned host memory for "
                                     "chunks of %lld rows (try a smaller "
                                     "--chunk-rows)",
                                     (long long)J->chunk_rows)
                     : cuda_failed(e);
            goto out;
        }
        J->chunk_rows = (J->chunk_rows + 1) / 2;
    }
    {
        xent_ce_desc d;
        xent_upstream u;
        chunk_desc(J, J->chunk_rows, g.d_w, &d, &u);
        st = xent_ce_workspace_size(h, &d, &g.ws_bytes);
        if (st != XENT_STATUS_SUCCESS) {
            rc = chunk_failed(J, h, st, 0);
            goto out;
        }
        if (g.ws_bytes)
            GPU_TRY(cudaMalloc(&g.d_ws, g.ws_bytes));
    }

    /* the pipeline (see the top of the file) */
    int64_t k = 0;
    gpu_slot *prev = NULL;
    for (int64_t r0 = 0; r0 < J->n; r0 += J->chunk_rows, k++) {
        gpu_slot *s = &g.slot[k & 1];
        /* the slot's staging buffer is free once its last H2D finished
         * (already implied by the drain of the previous iteration) */
        GPU_TRY(cudaEventSynchronize(s->ev_h2d));
        s->r0 = r0;
        s->rows = J->n - r0 < J->chunk_rows ? J->n - r0 : J->chunk_rows;
        gpu_fill(J, s, &g.L);
        e = gpu_issue(J, &g, s, h, &st);
        if (st != XENT_STATUS_SUCCESS) {
            rc = chunk_failed(J, h, st, r0);
            goto out;
        }
        if (e != cudaSuccess) {
            rc = cuda_failed(e);
            goto out;
        }
        if (prev) {
            rc = gpu_drain(J, &g, prev, &e);
            if (e != cudaSuccess)
                rc = cuda_failed(e);
            if (rc)
                goto out;
        }
        prev = s;
    }
    if (prev) {
        rc = gpu_drain(J, &g, prev, &e);
        if (e != cudaSuccess)
            rc = cuda_failed(e);
        if (rc)
            goto out;
    }

    /* guard: the host scan already rejected bad targets and weights */
    xent_data_report rep = {0, -1};
    st = xent_read_data_report(h, &rep, 1);
    if (st != XENT_STATUS_SUCCESS) {
        rc = chunk_failed(J, h, st, 0);
        goto out;
    }
    if (rep.flags & XENT_DATA_TARGET_OUT_OF_RANGE)
        rc = xent_cli_fail(XENT_CLI_EXIT_USAGE,
                           "%s: the GPU reports a class index out of range "
                           "[0, %lld) (row %lld of a chunk)",
                           J->o->targets, (long long)J->c,
                           (long long)rep.first_row);
    else if (rep.flags & XENT_DATA_NEGATIVE_WEIGHT)
        rc = xent_cli_fail(XENT_CLI_EXIT_USAGE,
                           "%s: the GPU reports a negative class weight",
                           J->o->weights);
#undef GPU_TRY
out:
    if (g.s_h2d)
        (void)cudaStreamSynchronize(g.s_h2d);
    if (g.s_comp)
        (void)cudaStreamSynchronize(g.s_comp);
    if (g.s_d2h)
        (void)cudaStreamSynchronize(g.s_d2h);
    (void)xent_set_stream(h, NULL);
    gpu_free_slots(&g);
    if (g.d_w)
        (void)cudaFree(g.d_w);
    if (g.d_ws)
        (void)cudaFree(g.d_ws);
    for (int i = 0; i < 2; i++) {
        if (n_ev > 3 * i + 0)
            (void)cudaEventDestroy(g.slot[i].ev_h2d);
        if (n_ev > 3 * i + 1)
            (void)cudaEventDestroy(g.slot[i].ev_comp);
        if (n_ev > 3 * i + 2)
            (void)cudaEventDestroy(g.slot[i].ev_d2h);
    }
    if (g.s_h2d)
        (void)cudaStreamDestroy(g.s_h2d);
    if (g.s_comp)
        (void)cudaStreamDestroy(g.s_comp);
    if (g.s_d2h)
        (void)cudaStreamDestroy(g.s_d2h);
    (void)cudaGetLastError();
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

static const char k_usage[] =
    "xent loss --logits Z.npy (--targets T.npy | --target-probs Q.npy)\n"
    "          [--weights W.npy] [--ignore-index K] [--label-smoothing A]\n"
    "          [--z-loss S] [--softcap X] [--reduction mean|sum|none]\n"
    "          [--loss-out ROWS.npy] [--grad-out G.npy] [--lse-out LSE.npy]\n"
    "          [--device auto|cpu|cuda[:N]] [--threads N] [--json]\n"
    "          [--bf16] [--chunk-rows N] [--progress] [--variant V]";

static const char k_about[] =
    "Softmax cross-entropy of logits Z (N, C) against class indices T (N,)\n"
    "or probabilities Q (N, C), with torch.nn.functional.cross_entropy's\n"
    "semantics (weights, ignore_index, label_smoothing, reduction), plus\n"
    "z-loss (S * lse^2 per row) and logit softcapping (X * tanh(z / X)).\n"
    "The rows stream through in chunks, so Z may be larger than GPU memory\n"
    "and than RAM; the results do not depend on the chunk size.";

static const char k_epilog[] =
    "Inputs: logits float32/float16/float64 (float64 is converted to\n"
    "float32; 2-byte data is float16, or bfloat16 with --bf16); targets\n"
    "int32/int64; probabilities and weights float16/32/64 (as float32).\n"
    "Outputs are float32: --loss-out the per-row losses (N,) whatever the\n"
    "reduction (0 on ignored rows), --lse-out the per-row log-sum-exp (N,),\n"
    "--grad-out the gradient (N, C) of the reduced loss (for none: of the\n"
    "sum of the rows). A MEAN over rows that are all ignored is 0 (PyTorch\n"
    "gives NaN). NaN logits are not an error: they propagate.\n"
    "--json prints {\"loss\", \"rows\", \"classes\", \"device\", "
    "\"seconds\", ...}.\n"
    "Exit status: 0 ok, 1 runtime failure, 2 bad usage or input (nothing\n"
    "is written).";

static int print_result(const loss_job *J, const xent_cli_device *dev,
                        double seconds)
{
    const loss_opts *o = J->o;
    double loss;
    int has_loss = 1;
    switch (o->reduction) {
    case RED_SUM: loss = J->sum; break;
    case RED_NONE:
        loss = NAN;
        has_loss = 0;
        break;
    default: loss = J->denom > 0.0 ? J->sum / J->denom : 0.0;
    }
    if (o->common.json) {
        xent_json j;
        xent_json_start(&j, stdout);
        if (has_loss)
            xent_json_num(&j, "loss", loss);
        else
            xent_json_null(&j, "loss");
        if (has_loss && !isfinite(loss))
            xent_json_str(&j, "loss_nonfinite",
                          isnan(loss) ? "nan" : (loss > 0 ? "inf" : "-inf"));
        xent_json_str(&j, "reduction", k_reductions[o->reduction]);
        xent_json_num(&j, "loss_sum", J->sum);
        if (o->reduction == RED_MEAN)
            xent_json_num(&j, "denominator", J->denom);
        xent_json_int(&j, "rows", J->n);
        xent_json_int(&j, "classes", J->c);
        xent_json_int(&j, "ignored_rows", J->n_ignored);
        xent_json_str(&j, "targets", J->index ? "index" : "probs");
        xent_json_str(&j, "logits_dtype",
                      xent_npy_dtype_name(J->z.header.dtype));
        xent_json_str(&j, "device", dev->label);
        xent_json_str(&j, dev->is_cuda ? "gpu_name" : "cpu_name", dev->name);
        if (!dev->is_cuda)
            xent_json_int(&j, "threads", dev->threads);
        xent_json_int(&j, "chunk_rows", J->chunk_rows);
        xent_json_int(&j, "chunks", J->chunks);
        if (dev->is_cuda)
            xent_json_str(&j, "variant", xent_variant_name(J->variant));
        xent_json_fix(&j, "seconds", seconds, 6);
        xent_json_finish(&j);
        return 0;
    }
    if (has_loss)
        printf("loss (%s): %.9g\n", k_reductions[o->reduction], loss);
    else
        printf("loss (none): per-row losses; their sum is %.9g\n", J->sum);
    printf("%lld rows x %lld classes (%s logits, %s targets", (long long)J->n,
           (long long)J->c, xent_npy_dtype_name(J->z.header.dtype),
           J->index ? "class-index" : "probability");
    if (J->n_ignored)
        printf(", %lld ignored", (long long)J->n_ignored);
    if (o->reduction == RED_MEAN)
        printf(", denominator %.9g", J->denom);
    printf(")\n");
    if (dev->is_cuda)
        printf("%s (%s), ", dev->label, dev->name);
    else
        printf("cpu (%d thread%s), ", dev->threads,
               dev->threads == 1 ? "" : "s");
    printf("%lld chunk%s of up to %lld rows, %.3f s\n", (long long)J->chunks,
           J->chunks == 1 ? "" : "s", (long long)J->chunk_rows, seconds);
    fflush(stdout);
    return 0;
}

static void advise_sequential(const xent_npy *a)
{
    if (a->map && a->map_len)
        (void)posix_madvise(a->map, a->map_len, POSIX_MADV_SEQUENTIAL);
}

int xent_cli_loss_main(int argc, char **argv)
{
    loss_opts o;
    memset(&o, 0, sizeof o);
    o.ignore_index = XENT_DEFAULT_IGNORE_INDEX;
    o.reduction = RED_MEAN;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--logits", XENT_CLI_OPT_STRING, &o.logits, "Z.npy",
         "logits (N, C): float32, float16, float64", NULL, 0, 0, 0},
        {"--targets", XENT_CLI_OPT_STRING, &o.targets, "T.npy",
         "class indices (N,): int32 or int64", NULL, 0, 0, 0},
        {"--target-probs", XENT_CLI_OPT_STRING, &o.probs, "Q.npy",
         "target probabilities (N, C) instead of\nindices", NULL, 0, 0, 0},
        {"--weights", XENT_CLI_OPT_STRING, &o.weights, "W.npy",
         "class weights (C,), >= 0", NULL, 0, 0, 0},
        {"--ignore-index", XENT_CLI_OPT_INT, &o.ignore_index, "K",
         "rows whose target is K are ignored\n(default -100)", NULL, -9.2e18,
         9.2e18, 0},
        {"--label-smoothing", XENT_CLI_OPT_FLOAT, &o.label_smoothing, "A",
         "label smoothing in [0, 1] (default 0)", NULL, 0, 1, 0},
        {"--z-loss", XENT_CLI_OPT_FLOAT, &o.z_loss, "S",
         "adds S * lse^2 to every row (default 0)", NULL, 0, XENT_CLI_NO_MAX,
         0},
        {"--softcap", XENT_CLI_OPT_FLOAT, &o.softcap, "X",
         "logits become X * tanh(z / X) first\n(default 0: off)", NULL, 0,
         XENT_CLI_NO_MAX, 0},
        {"--reduction", XENT_CLI_OPT_CHOICE, &o.reduction, NULL,
         "reduction of the row losses (default mean)", k_reductions, 0, 0, 0},
        {"--loss-out", XENT_CLI_OPT_STRING, &o.loss_out, "ROWS.npy",
         "write the per-row losses, float32 (N,)", NULL, 0, 0, 0},
        {"--grad-out", XENT_CLI_OPT_STRING, &o.grad_out, "G.npy",
         "write the gradient w.r.t. the logits,\nfloat32 (N, C)", NULL, 0, 0,
         0},
        {"--lse-out", XENT_CLI_OPT_STRING, &o.lse_out, "LSE.npy",
         "write the per-row log-sum-exp, float32 (N,)", NULL, 0, 0, 0},
        {"--variant", XENT_CLI_OPT_CHOICE, &o.variant, NULL,
         "GPU kernel variant (default auto: chosen once\nfor the whole batch)",
         k_variants, 0, 0, 0},
        XENT_CLI_OPT_DEVICE(cm),
        XENT_CLI_OPT_THREADS(cm),
        XENT_CLI_OPT_JSON(cm),
        XENT_CLI_OPT_BF16(cm),
        XENT_CLI_OPT_CHUNK_ROWS(cm),
        XENT_CLI_OPT_PROGRESS(cm),
    };
    xent_cli_spec spec = {"loss",  k_usage,
                          k_about, k_epilog,
                          opts,    (int)(sizeof opts / sizeof opts[0])};
    int rc = xent_cli_parse(&spec, argc, argv);
    if (rc == XENT_CLI_HELP_SHOWN)
        return XENT_CLI_EXIT_OK;
    if (rc)
        return rc;

    /* ---- options that do not need the files ---- */
    if (!o.logits)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "loss: --logits is required (see 'xent loss "
                             "--help')");
    if (!o.targets == !o.probs)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "loss: give exactly one of --targets and "
                             "--target-probs");
    if (o.probs && xent_cli_find_opt(&spec, "--ignore-index")->seen &&
        o.ignore_index >= 0)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "loss: --ignore-index %lld cannot be used with "
                             "--target-probs (PyTorch rejects it too)",
                             (long long)o.ignore_index);
    if ((rc = xent_cli_device_check(cm->device)) != 0)
        return rc;
    int64_t chunk_rows = 0;
    if ((rc = xent_cli_chunk_rows(cm->chunk_rows, &chunk_rows)) != 0)
        return rc;
    {
        const char *paths[] = {o.loss_out, o.grad_out, o.lse_out};
        const char *flags[] = {"--loss-out", "--grad-out", "--lse-out"};
        if ((rc = xent_cli_distinct_outputs(paths, flags, 3)) != 0)
            return rc;
    }

    /* ---- inputs ---- */
    loss_job J;
    memset(&J, 0, sizeof J);
    J.o = &o;
    J.index = o.targets != NULL;
    J.want_grad = o.grad_out != NULL;
    J.want_lse = o.lse_out != NULL;
    J.out_loss.w.fd = J.out_grad.w.fd = J.out_lse.w.fd = -1;
    xent_cli_device dev;
    memset(&dev, 0, sizeof dev);

    if ((rc = xent_cli_open_logits(&J.z, o.logits, cm->bf16, &J.n, &J.c)))
        goto done;
    J.dtype = xent_cli_logits_dtype(J.z.header.dtype, &J.convert);
    if (J.index)
        rc = xent_cli_open_targets(&J.t, o.targets, J.n, o.logits);
    else
        rc = xent_cli_open_probs(&J.q, o.probs, J.n, J.c, o.logits);
    if (rc)
        goto done;
    if (o.weights &&
        (rc = xent_cli_load_weights(o.weights, J.c, o.logits, &J.weights)))
        goto done;
    if (J.index) {
        rc = xent_cli_scan_targets(&J.t, J.c, o.ignore_index, J.weights,
                                   &J.denom, &J.n_ignored);
        if (rc)
            goto done;
    } else {
        J.denom = (double)J.n;
    }

    /* ---- outputs: temporary files until the end ---- */
    int64_t shape_rows[1] = {J.n}, shape_grad[2] = {J.n, J.c};
    if (o.loss_out &&
        (rc = xent_cli_output_open(&J.out_loss, "--loss-out", o.loss_out,
                                   XENT_NPY_DTYPE_F32, 1, shape_rows)))
        goto done;
    if (o.lse_out &&
        (rc = xent_cli_output_open(&J.out_lse, "--lse-out", o.lse_out,
                                   XENT_NPY_DTYPE_F32, 1, shape_rows)))
        goto done;
    if (o.grad_out &&
        (rc = xent_cli_output_open(&J.out_grad, "--grad-out", o.grad_out,
                                   XENT_NPY_DTYPE_F32, 2, shape_grad)))
        goto done;

    /* ---- device and chunking (a usage problem is reported before the
     * device is, so it stays the only line on stderr) ---- */
    double t0 = xent_cli_now();
    if ((rc = xent_cli_device_open(cm->device, cm->threads, &dev)))
        goto done;
    J.host_threads =
        cm->threads > 0 ? (int)cm->threads : xent_bench_cpu_count();
    if (dev.is_cuda && J.host_threads > 8 && cm->threads == 0)
        J.host_threads = 8;
    int forced = chunk_rows > 0;
    if (!forced) {
        if (dev.is_cuda) {
            chunk_rows = gpu_default_rows(&J, &dev);
        } else {
            chunk_rows = (int64_t)(((size_t)64 << 20) / ((size_t)J.c * 4));
            if (chunk_rows < 1)
                chunk_rows = 1;
        }
    }
    J.chunk_rows = J.n == 0 ? 0 : (chunk_rows < J.n ? chunk_rows : J.n);

    /* ---- run ---- */
    advise_sequential(&J.z);
    xent_cli_progress_start(&J.bar, cm->progress, J.n, "rows");
    if (J.n > 0)
        rc = dev.is_cuda ? run_gpu(&J, &dev, forced) : run_cpu(&J, &dev);
    xent_cli_progress_end(&J.bar);
    if (rc)
        goto done;
    if ((rc = xent_cli_output_commit(&J.out_loss)) ||
        (rc = xent_cli_output_commit(&J.out_lse)) ||
        (rc = xent_cli_output_commit(&J.out_grad)))
        goto done;
    rc = print_result(&J, &dev, xent_cli_now() - t0);

done:
    xent_cli_progress_end(&J.bar);
    xent_cli_output_abort(&J.out_loss);
    xent_cli_output_abort(&J.out_lse);
    xent_cli_output_abort(&J.out_grad);
    xent_npy_close(&J.z);
    xent_npy_close(&J.t);
    xent_npy_close(&J.q);
    free(J.weights);
    xent_cli_device_close(&dev);
    return rc;
}
