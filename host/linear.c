/*
 * linear.c - fused linear + cross-entropy (include/xent.h, "Fused linear +
 * cross-entropy"): validation, the workspace layout, the chunk loop, and
 * dispatch to cuBLAS + the CUDA row kernel (xent_cuda_ce_rows) or to the
 * CPU GEMM (host/cpu_gemm.c) + the CPU row kernel (xent_cpu_ce_rows).
 *
 * Per chunk of m rows [r0, r0 + m):
 *   1. Z = bias (broadcast) or 0; Z += H_c W^T            fp32 [m, C]
 *   2. the cross-entropy row kernel on Z with the global MEAN denominator
 *      (computed over all N rows before the loop), gradient in place:
 *      Z <- G, the per-row losses go to the rows buffer at r0
 *   3. dH_c = G W;  dW (+)= G^T H_c;  dbias_acc (+)= sum_rows G
 * then the reduced loss from the rows buffer (fixed order, fp64).
 *
 * Row-major <-> cuBLAS column-major: a row-major [r, c] matrix with
 * stride ld is a column-major [c, r] matrix with the same ld, so
 *   Z^T  (C x m)  = op_T(W: D x C, ld D) * op_N(H_c: D x m, ld D)
 *   dH^T (D x m)  = op_N(W: D x C, ld D) * op_N(G: C x m, ld C)
 *   dW^T (D x C) += op_N(H_c: D x m, ld D) * op_T(G: C x m, ld C)
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* host/cpu_gemm.c */
xent_status xent_cpu_gemm(int n_threads, int64_t m, int64_t n, int64_t k,
                          const void *a, xent_dtype ta, int64_t lda,
                          int trans_a, const void *b, xent_dtype tb,
                          int64_t ldb, int trans_b, void *c, xent_dtype tc,
                          int64_t ldc, int accumulate);

#define LIN_CUBLAS_WS_BYTES ((size_t)32 << 20)

struct xent_linear_ce_ctx {
    struct xent_handle *h;
    cublasHandle_t cublas;
    int owns_cublas;
    void *d_cublas_ws; /* owned cuBLAS workspace, LIN_CUBLAS_WS_BYTES */
};

void xent_linear_ce_desc_init(xent_linear_ce_desc *d, int64_t n_rows,
                              int64_t hidden, int64_t n_classes)
{
    if (!d)
        return;
    memset(d, 0, sizeof *d);
    d->n_rows = n_rows;
    d->hidden = hidden;
    d->n_classes = n_classes;
    d->dtype = XENT_DTYPE_F32;
    d->target_type = XENT_TARGET_INDEX_I64;
    d->reduction = XENT_REDUCTION_MEAN;
    d->ignore_index = XENT_DEFAULT_IGNORE_INDEX;
    d->weights = NULL;
    d->n_weights = 0;
    d->flags = 0;
    d->variant = XENT_VARIANT_AUTO;
}

/* ------------------------------------------------------------------ */
/* Context                                                            */
/* ------------------------------------------------------------------ */

static xent_status map_cublas(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return XENT_STATUS_SUCCESS;
    case CUBLAS_STATUS_ALLOC_FAILED: return XENT_STATUS_OUT_OF_MEMORY;
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return XENT_STATUS_NO_DEVICE;
    case CUBLAS_STATUS_NOT_SUPPORTED: return XENT_STATUS_UNSUPPORTED;
    default: return XENT_STATUS_CUDA_ERROR;
    }
}

xent_status xent_linear_ce_create(xent_handle_t h, void *cublas_handle,
                                  xent_linear_ce_t *out)
{
    XENT_RETURN_IF(!out, XENT_STATUS_NULL_POINTER);
    *out = NULL;
    XENT_RETURN_IF(!h, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(h->backend == XENT_BACKEND_CPU && cublas_handle,
                   XENT_STATUS_UNSUPPORTED);
    struct xent_linear_ce_ctx *c = calloc(1, sizeof *c);
    XENT_RETURN_IF(!c, XENT_STATUS_OUT_OF_MEMORY);
    c->h = h;
    if (h->backend == XENT_BACKEND_CUDA) {
        if (cublas_handle) {
            c->cublas = (cublasHandle_t)cublas_handle;
        } else {
            int prev = 0;
            xent_status st = xent_status_from_cuda((int)cudaGetDevice(&prev));
            if (st == XENT_STATUS_SUCCESS)
                st = xent_status_from_cuda((int)cudaSetDevice(h->device));
            if (st == XENT_STATUS_SUCCESS)
                st = map_cublas(cublasCreate(&c->cublas));
            if (st == XENT_STATUS_SUCCESS)
                c->owns_cublas = 1;
            if (st == XENT_STATUS_SUCCESS)
                st = xent_status_from_cuda(
                    (int)cudaMalloc(&c->d_cublas_ws, LIN_CUBLAS_WS_BYTES));
            if (st == XENT_STATUS_SUCCESS)
                st = map_cublas(
                    cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
            if (st == XENT_STATUS_SUCCESS)
                st = map_cublas(cublasSetAtomicsMode(
                    c->cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
            (void)cudaSetDevice(prev);
            if (st != XENT_STATUS_SUCCESS) {
                (void)cudaGetLastError();
                (void)xent_linear_ce_destroy(c);
                return st;
            }
        }
    }
    *out = c;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_linear_ce_destroy(xent_linear_ce_t c)
{
    if (!c)
        return XENT_STATUS_SUCCESS;
    xent_status st = XENT_STATUS_SUCCESS;
    if (c->h && c->h->backend == XENT_BACKEND_CUDA &&
        (c->owns_cublas || c->d_cublas_ws)) {
        int prev = 0;
        if (cudaGetDevice(&prev) == cudaSuccess &&
            cudaSetDevice(c->h->device) == cudaSuccess) {
            if (c->owns_cublas && c->cublas)
                st = map_cublas(cublasDestroy(c->cublas));
            if (c->d_cublas_ws) {
                xent_status s2 =
                    xent_status_from_cuda((int)cudaFree(c->d_cublas_ws));
                if (st == XENT_STATUS_SUCCESS)
                    st = s2;
            }
            (void)cudaSetDevice(prev);
        } else {
            st = XENT_STATUS_CUDA_ERROR;
        }
    }
    free(c);
    return st;
}

/* ------------------------------------------------------------------ */
/* Validation and workspace                                           */
/* ------------------------------------------------------------------ */

/* The cross-entropy problem of one chunk (or of the whole batch). */
static xent_ce_desc ce_desc_of(const xent_linear_ce_desc *d, int64_t rows)
{
    xent_ce_desc c;
    xent_ce_desc_init(&c, rows, d->n_classes);
    c.logits_dtype = XENT_DTYPE_F32;
    c.target_type = d->target_type;
    c.reduction = d->reduction;
    c.ignore_index = d->ignore_index;
    c.weights = d->weights;
    c.n_weights = d->n_weights;
    c.label_smoothing = d->label_smoothing;
    c.z_loss = d->z_loss;
    c.softcap = d->softcap;
    c.flags = d->flags & XENT_FLAG_EMPTY_MEAN_NAN;
    c.variant = d->variant;
    return c;
}

static xent_status validate_desc(const xent_linear_ce_desc *d)
{
    XENT_RETURN_IF(!d, XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(d->n_rows < 0 || d->hidden < 1 || d->n_classes < 1,
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(xent_mul_overflows(d->n_rows, d->hidden) ||
                       xent_mul_overflows(d->n_rows * d->hidden, 4) ||
                       xent_mul_overflows(d->n_classes, d->hidden) ||
                       xent_mul_overflows(d->n_classes * d->hidden, 4),
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(d->dtype != XENT_DTYPE_F32 && d->dtype != XENT_DTYPE_BF16,
                   XENT_STATUS_UNSUPPORTED);
    XENT_RETURN_IF(d->target_type != XENT_TARGET_INDEX_I32 &&
                       d->target_type != XENT_TARGET_INDEX_I64,
                   XENT_STATUS_UNSUPPORTED);
    XENT_RETURN_IF(d->flags & ~(uint32_t)(XENT_FLAG_EMPTY_MEAN_NAN |
                                          XENT_FLAG_GRAD_F32),
                   XENT_STATUS_INVALID_VALUE);
    /* cuBLAS takes int dimensions (m, n, k, ld): C, D and a chunk must fit */
    XENT_RETURN_IF(d->n_classes > INT32_MAX || d->hidden > INT32_MAX,
                   XENT_STATUS_INVALID_SIZE);
    xent_ce_desc c = ce_desc_of(d, d->n_rows);
    return xent_ce_validate_desc(&c);
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

typedef struct lin_ws {
    double *denom;    /* CUDA: [1] MEAN denominator */
    double *partials; /* CUDA: [XENT_REDUCE_PARTS] */
    float *rows;      /* [n_rows] per-row losses (MEAN/SUM) */
    float *logits;    /* [chunk, C] fp32: Z, then G */
    uint16_t *g_bf16; /* CUDA, bf16 inputs: [chunk, C] G rounded */
    float *bias_acc;  /* [C] dbias accumulator */
    size_t bytes;
} lin_ws;

/* Layout for chunk rows per chunk; base NULL only sizes it. Returns 0 on
 * size overflow. */
static int ws_layout(xent_backend be, const xent_linear_ce_desc *d,
                     int64_t chunk, void *base, lin_ws *l)
{
    memset(l, 0, sizeof *l);
    const size_t A = XENT_WS_ALIGN;
    if (xent_mul_overflows(chunk, d->n_classes) ||
        xent_mul_overflows(chunk * d->n_classes, 8))
        return 0;
    size_t cells = (size_t)chunk * (size_t)d->n_classes;
    size_t off = 0;
    uintptr_t p0 = base ? round_up((uintptr_t)base, A) : 0;
#define LIN_TAKE(field, type, nbytes)                                          \
    do {                                                                       \
        l->field = base ? (type *)(p0 + off) : NULL;                           \
        off += round_up((nbytes), A);                                          \
    } while (0)
    if (be == XENT_BACKEND_CUDA) {
        LIN_TAKE(denom, double, sizeof(double));
        LIN_TAKE(partials, double, XENT_REDUCE_PARTS * sizeof(double));
    }
    if (d->reduction != XENT_REDUCTION_NONE)
        LIN_TAKE(rows, float, (size_t)d->n_rows * sizeof(float));
    LIN_TAKE(logits, float, cells * sizeof(float));
    if (be == XENT_BACKEND_CUDA && d->dtype == XENT_DTYPE_BF16)
        LIN_TAKE(g_bf16, uint16_t, cells * sizeof(uint16_t));
    LIN_TAKE(bias_acc, float, (size_t)d->n_classes * sizeof(float));
#undef LIN_TAKE
    l->bytes = off + A; /* alignment slack */
    return 1;
}

xent_status xent_linear_ce_workspace_size(xent_handle_t h,
                                          const xent_linear_ce_desc *desc,
                                          int64_t chunk_rows, size_t *bytes)
{
    XENT_RETURN_IF(!h || !bytes, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    XENT_RETURN_IF(chunk_rows < 1 || chunk_rows > INT32_MAX,
                   XENT_STATUS_INVALID_SIZE);
    lin_ws l;
    XENT_RETURN_IF(!ws_layout(h->backend, desc, chunk_rows, NULL, &l),
                   XENT_STATUS_INVALID_SIZE);
    *bytes = l.bytes;
    return XENT_STATUS_SUCCESS;
}

xent_status xent_linear_ce_chunk_rows(xent_handle_t h,
                                      const xent_linear_ce_desc *desc,
                                      size_t budget, int64_t *chunk_rows)
{
    XENT_RETURN_IF(!h || !chunk_rows, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    lin_ws l;
    if (!ws_layout(h->backend, desc, 1, NULL, &l) || l.bytes > budget)
        return XENT_STATUS_WORKSPACE_TOO_SMALL;
    int64_t hi = desc->n_rows > 1 ? desc->n_rows : 1;
    if (hi > INT32_MAX)
        hi = INT32_MAX;
    int64_t lo = 1; /* fits */
    while (lo < hi) { /* the size is monotone in the chunk */
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (ws_layout(h->backend, desc, mid, NULL, &l) && l.bytes <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    *chunk_rows = lo;
    return XENT_STATUS_SUCCESS;
}

typedef struct range {
    const void *p;
    size_t n;
    int out;
} range;

static xent_status check_aliasing(const range *r, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if ((r[i].out || r[j].out) &&
                xent_ranges_overlap(r[i].p, r[i].n, r[j].p, r[j].n))
                return XENT_STATUS_ALIASING;
    return XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Compute                                                            */
/* ------------------------------------------------------------------ */

typedef struct lin_call {
    const xent_linear_ce_desc *d;
    const void *H, *W, *bias, *targets;
    xent_upstream u;
    xent_linear_ce_outputs o;
    int64_t chunk;
    lin_ws ws;
    xent_dtype gdt;   /* dtype of dH / dW / dbias */
    int grads;        /* any gradient wanted */
    float *rows;      /* per-row losses (caller's or the workspace's) */
} lin_call;

static void chunk_params(const lin_call *c, xent_ce_params *p, int64_t r0,
                         int64_t m)
{
    const xent_linear_ce_desc *d = c->d;
    const xent_ce_desc cd = ce_desc_of(d, m);
    xent_ce_fill_params(p, &cd, c->grads ? XENT_MODE_FWD_BWD : XENT_MODE_FWD,
                        c->ws.logits,
                        (const char *)c->targets +
                            r0 * (d->target_type == XENT_TARGET_INDEX_I32
                                      ? 4
                                      : 8));
    p->loss_rows = c->rows ? c->rows + r0 : NULL;
    p->lse_rows = c->o.d_lse ? c->o.d_lse + r0 : NULL;
    p->grad = c->grads ? c->ws.logits : NULL; /* in place, fp32 */
    p->dloss = c->u.d_dloss ? c->u.d_dloss + r0 * c->u.dloss_stride : NULL;
    p->dloss_stride = c->u.dloss_stride;
    p->scale = c->u.scale;
}

static float empty_value(const xent_linear_ce_desc *d)
{
    const xent_ce_desc cd = ce_desc_of(d, d->n_rows);
    return xent_ce_empty_mean_value(&cd);
}

static xent_status run_cpu(struct xent_handle *h, lin_call *c)
{
    const xent_linear_ce_desc *d = c->d;
    const int64_t N = d->n_rows, C = d->n_classes, D = d->hidden;
    const size_t isz = xent_dtype_size(d->dtype);
    const size_t gsz = xent_dtype_size(c->gdt);
    const int mean = d->reduction == XENT_REDUCTION_MEAN;
    XENT_FORWARD_IF_ERROR(xent_cpu_check_weights(h, d->weights, C));
    /* the global MEAN denominator, before any chunk */
    double denom = 1.0;
    if (mean) {
        xent_ce_params all;
        chunk_params(c, &all, 0, N);
        denom = N > 0 ? xent_cpu_target_weight_sum(&all) : 0.0;
    }
    xent_status_word w = {0, 0, UINT64_MAX};
    xent_status st = XENT_STATUS_SUCCESS;
    for (int64_t r0 = 0; r0 < N && st == XENT_STATUS_SUCCESS; r0 += c->chunk) {
        const int64_t m = N - r0 < c->chunk ? N - r0 : c->chunk;
        float *z = c->ws.logits;
        if (c->bias) {
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < C; j++)
                    z[i * C + j] =
                        d->dtype == XENT_DTYPE_BF16
                            ? xent_bf16_to_f32(((const uint16_t *)c->bias)[j])
                            : ((const float *)c->bias)[j];
        }
        const char *Hc = (const char *)c->H + (size_t)r0 * (size_t)D * isz;
        /* Z[m, C] (+)= H_c[m, D] * W^T[D, C] */
        st = xent_cpu_gemm(h->n_threads, m, C, D, Hc, d->dtype, D, 0, c->W,
                           d->dtype, D, 1, z, XENT_DTYPE_F32, C,
                           c->bias != NULL);
        if (st != XENT_STATUS_SUCCESS)
            break;
        xent_ce_params p;
        chunk_params(c, &p, r0, m);
        p.host_denom = mean ? denom : 1.0;
        st = xent_cpu_ce_rows(&p, h->n_threads, &w);
        if (st != XENT_STATUS_SUCCESS || !c->grads)
            continue;
        if (c->o.d_dhidden) /* dH_c[m, D] = G[m, C] * W[C, D] */
            st = xent_cpu_gemm(h->n_threads, m, D, C, z, XENT_DTYPE_F32, C, 0,
                               c->W, d->dtype, D, 0,
                               (char *)c->o.d_dhidden +
                                   (size_t)r0 * (size_t)D * gsz,
                               c->gdt, D, 0);
        if (st == XENT_STATUS_SUCCESS && c->o.d_dweight)
            /* dW[C, D] (+)= G^T[C, m] * H_c[m, D] */
            st = xent_cpu_gemm(h->n_threads, C, D, m, z, XENT_DTYPE_F32, C, 1,
                               Hc, d->dtype, D, 0, c->o.d_dweight, c->gdt, D,
                               r0 > 0);
        if (st == XENT_STATUS_SUCCESS && c->o.d_dbias) {
            float *acc = c->ws.bias_acc;
            for (int64_t j = 0; j < C; j++) {
                float s = r0 > 0 ? acc[j] : 0.0f;
                for (int64_t i = 0; i < m; i++)
                    s += z[i * C + j];
                acc[j] = s;
            }
        }
    }
    if (st == XENT_STATUS_SUCCESS) {
        if (N == 0 && c->o.d_dweight)
            memset(c->o.d_dweight, 0, (size_t)C * (size_t)D * gsz);
        if (N == 0 && c->o.d_dbias)
            memset(c->ws.bias_acc, 0, (size_t)C * sizeof(float));
        for (int64_t j = 0; c->o.d_dbias && j < C; j++) {
            if (c->gdt == XENT_DTYPE_F32)
                ((float *)c->o.d_dbias)[j] = c->ws.bias_acc[j];
            else
                ((uint16_t *)c->o.d_dbias)[j] =
                    xent_f32_to_bf16(c->ws.bias_acc[j]);
        }
        if (c->o.d_loss)
            *c->o.d_loss = xent_cpu_reduce_rows(c->rows, N, mean ? denom : 1.0,
                                                empty_value(d));
    }
    h->h_status.flags |= w.flags;
    if (w.first_row < h->h_status.first_row)
        h->h_status.first_row = w.first_row;
    if (st == XENT_STATUS_SUCCESS && w.flags)
        return (w.flags & XENT_DATA_TARGET_OUT_OF_RANGE)
                   ? XENT_STATUS_TARGET_OUT_OF_RANGE
                   : XENT_STATUS_INVALID_DATA;
    return st;
}

static cudaDataType_t cuda_type(xent_dtype t)
{
    return t == XENT_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* Column-major C[m, n] = alpha op(A) op(B) + beta C, fp32 accumulation. */
static cublasStatus_t gemm(cublasHandle_t cb, cublasOperation_t ta,
                           cublasOperation_t tb, int64_t m, int64_t n,
                           int64_t k, const void *A, xent_dtype at,
                           int64_t lda, const void *B, xent_dtype bt,
                           int64_t ldb, float beta, void *Cm, xent_dtype ct,
                           int64_t ldc)
{
    const float alpha = 1.0f;
    return cublasGemmEx(cb, ta, tb, (int)m, (int)n, (int)k, &alpha, A,
                        cuda_type(at), (int)lda, B, cuda_type(bt), (int)ldb,
                        &beta, Cm, cuda_type(ct), (int)ldc, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
}

static xent_status run_cuda(struct xent_linear_ce_ctx *ctx, lin_call *c)
{
    struct xent_handle *h = ctx->h;
    const xent_linear_ce_desc *d = c->d;
    const int64_t N = d->n_rows, C = d->n_classes, D = d->hidden;
    const size_t isz = xent_dtype_size(d->dtype);
    const size_t gsz = xent_dtype_size(c->gdt);
    const int mean = d->reduction == XENT_REDUCTION_MEAN;
    cudaStream_t s = h->stream;
    cublasHandle_t cb = ctx->cublas;

    int prev = 0;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess && prev != h->device)
        e = cudaSetDevice(h->device);
    if (e != cudaSuccess)
        return xent_status_from_cuda((int)e);
    cublasStatus_t bs = cublasSetStream(cb, s);
    /* cublasSetStream resets the workspace: set ours again (no allocation) */
    if (bs == CUBLAS_STATUS_SUCCESS && ctx->d_cublas_ws)
        bs = cublasSetWorkspace(cb, ctx->d_cublas_ws, LIN_CUBLAS_WS_BYTES);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasSetPointerMode(cb, CUBLAS_POINTER_MODE_HOST);

    const double *d_denom = NULL;
    if (bs == CUBLAS_STATUS_SUCCESS && mean && N > 0) {
        xent_ce_params all;
        chunk_params(c, &all, 0, N);
        all.status = h->d_status;
        e = (cudaError_t)xent_cuda_target_weight_sum(&all, c->ws.partials,
                                                     c->ws.denom, s);
        d_denom = c->ws.denom;
    }
    xent_ce_desc cd = ce_desc_of(d, 0);
    for (int64_t r0 = 0; r0 < N && e == cudaSuccess &&
                         bs == CUBLAS_STATUS_SUCCESS;
         r0 += c->chunk) {
        const int64_t m = N - r0 < c->chunk ? N - r0 : c->chunk;
        float *z = c->ws.logits;
        const char *Hc = (const char *)c->H + (size_t)r0 * (size_t)D * isz;
        if (c->bias)
            e = (cudaError_t)xent_cuda_linear_bias_fill(z, m, C, c->bias,
                                                        d->dtype, s);
        if (e != cudaSuccess)
            break;
        /* Z^T (C x m) = W^T' * H_c : op_T(W [D x C]) op_N(H_c [D x m]) */
        bs = gemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, C, m, D, c->W, d->dtype, D,
                  Hc, d->dtype, D, c->bias ? 1.0f : 0.0f, z, XENT_DTYPE_F32,
                  C);
        if (bs != CUBLAS_STATUS_SUCCESS)
            break;
        xent_ce_params p;
        chunk_params(c, &p, r0, m);
        p.status = h->d_status;
        p.d_denom = d_denom;
        cd.n_rows = m;
        e = (cudaError_t)xent_cuda_ce_rows(&p, xent_ce_choose_variant(h, &cd),
                                           s);
        if (e != cudaSuccess || !c->grads)
            continue;
        const void *G = z;
        xent_dtype gt = XENT_DTYPE_F32;
        if (d->dtype == XENT_DTYPE_BF16 &&
            (c->o.d_dhidden || c->o.d_dweight)) {
            e = (cudaError_t)xent_cuda_linear_f32_to_bf16(z, c->ws.g_bf16,
                                                          m * C, s);
            G = c->ws.g_bf16;
            gt = XENT_DTYPE_BF16;
        }
        if (e == cudaSuccess && c->o.d_dhidden)
            /* dH_c^T (D x m) = op_N(W [D x C]) op_N(G [C x m]) */
            bs = gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, D, m, C, c->W, d->dtype,
                      D, G, gt, C, 0.0f,
                      (char *)c->o.d_dhidden + (size_t)r0 * (size_t)D * gsz,
                      c->gdt, D);
        if (e == cudaSuccess && bs == CUBLAS_STATUS_SUCCESS && c->o.d_dweight)
            /* dW^T (D x C) (+)= op_N(H_c [D x m]) op_T(G [C x m]) */
            bs = gemm(cb, CUBLAS_OP_N, CUBLAS_OP_T, D, C, m, Hc, d->dtype, D,
                      G, gt, C, r0 > 0 ? 1.0f : 0.0f, c->o.d_dweight, c->gdt,
                      D);
        if (e == cudaSuccess && bs == CUBLAS_STATUS_SUCCESS && c->o.d_dbias)
            e = (cudaError_t)xent_cuda_linear_colsum(z, m, C, c->ws.bias_acc,
                                                     r0 > 0, s);
    }
    if (e == cudaSuccess && bs == CUBLAS_STATUS_SUCCESS) {
        if (N == 0 && c->o.d_dweight)
            e = cudaMemsetAsync(c->o.d_dweight, 0,
                                (size_t)C * (size_t)D * gsz, s);
        if (e == cudaSuccess && N == 0 && c->o.d_dbias)
            e = cudaMemsetAsync(c->ws.bias_acc, 0, (size_t)C * sizeof(float),
                                s);
        if (e == cudaSuccess && c->o.d_dbias) {
            if (c->gdt == XENT_DTYPE_F32)
                e = cudaMemcpyAsync(c->o.d_dbias, c->ws.bias_acc,
                                    (size_t)C * sizeof(float),
                                    cudaMemcpyDeviceToDevice, s);
            else
                e = (cudaError_t)xent_cuda_linear_f32_to_bf16(
                    c->ws.bias_acc, (uint16_t *)c->o.d_dbias, C, s);
        }
        if (e == cudaSuccess && c->o.d_loss)
            e = (cudaError_t)xent_cuda_reduce_rows(
                c->rows, N, mean ? d_denom : NULL,
                (mean && N == 0) ? 0.0 : 1.0, empty_value(d),
                c->ws.partials, c->o.d_loss, s);
    }
    if (prev != h->device)
        (void)cudaSetDevice(prev);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return map_cublas(bs);
    return xent_status_from_cuda((int)e);
}

xent_status xent_linear_ce(xent_linear_ce_t ctx,
                           const xent_linear_ce_desc *desc,
                           const void *d_hidden, const void *d_weight,
                           const void *d_bias, const void *d_targets,
                           const xent_upstream *upstream,
                           const xent_linear_ce_outputs *outputs,
                           int64_t chunk_rows, void *d_workspace,
                           size_t workspace_bytes)
{
    XENT_RETURN_IF(!ctx || !ctx->h || !outputs, XENT_STATUS_NULL_POINTER);
    XENT_FORWARD_IF_ERROR(validate_desc(desc));
    struct xent_handle *h = ctx->h;
    const xent_linear_ce_desc *d = desc;
    const int64_t N = d->n_rows, C = d->n_classes, D = d->hidden;
    lin_call c;
    memset(&c, 0, sizeof c);
    c.d = d;
    c.H = d_hidden;
    c.W = d_weight;
    c.bias = d_bias;
    c.targets = d_targets;
    c.o = *outputs;
    c.u = upstream ? *upstream : xent_upstream_default();
    c.gdt = (d->flags & XENT_FLAG_GRAD_F32) ? XENT_DTYPE_F32 : d->dtype;
    c.grads = c.o.d_dhidden || c.o.d_dweight || c.o.d_dbias;

    /* upstream, as for xent_ce_forward_backward */
    XENT_RETURN_IF(!isfinite(c.u.scale), XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(c.u.dloss_stride < 0, XENT_STATUS_INVALID_SIZE);
    if (c.u.d_dloss && d->reduction != XENT_REDUCTION_NONE)
        XENT_RETURN_IF(c.u.dloss_stride != 0, XENT_STATUS_INVALID_VALUE);
    if (c.u.d_dloss && d->reduction == XENT_REDUCTION_NONE)
        XENT_RETURN_IF(xent_mul_overflows(N, c.u.dloss_stride),
                       XENT_STATUS_INVALID_SIZE);

    XENT_RETURN_IF(!c.o.d_loss && !c.o.d_loss_rows && !c.o.d_lse && !c.grads,
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(c.o.d_loss && d->reduction == XENT_REDUCTION_NONE,
                   XENT_STATUS_INVALID_VALUE);
    XENT_RETURN_IF(N > 0 && (!d_hidden || !d_weight || !d_targets),
                   XENT_STATUS_NULL_POINTER);
    XENT_RETURN_IF(chunk_rows < 1 || chunk_rows > INT32_MAX,
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(!ws_layout(h->backend, d, chunk_rows, NULL, &c.ws),
                   XENT_STATUS_INVALID_SIZE);
    XENT_RETURN_IF(workspace_bytes < c.ws.bytes,
                   XENT_STATUS_WORKSPACE_TOO_SMALL);
    XENT_RETURN_IF(!d_workspace, XENT_STATUS_NULL_POINTER);

    const size_t isz = xent_dtype_size(d->dtype);
    const size_t gsz = xent_dtype_size(c.gdt);
    const size_t tsz = d->target_type == XENT_TARGET_INDEX_I32 ? 4u : 8u;
    const size_t nr = (size_t)N;
    range r[] = {
        {d_hidden, nr * (size_t)D * isz, 0},
        {d_weight, (size_t)C * (size_t)D * isz, 0},
        {d_bias, (size_t)C * isz, 0},
        {d_targets, nr * tsz, 0},
        {d->weights, d->weights ? (size_t)C * 4u : 0u, 0},
        {c.u.d_dloss,
         c.u.d_dloss ? (N > 0 ? (nr - 1) * (size_t)c.u.dloss_stride + 1 : 1) *
                           4u
                     : 0u,
         0},
        {c.o.d_loss, 4u, 1},
        {c.o.d_loss_rows, nr * 4u, 1},
        {c.o.d_lse, nr * 4u, 1},
        {c.o.d_dhidden, nr * (size_t)D * gsz, 1},
        {c.o.d_dweight, (size_t)C * (size_t)D * gsz, 1},
        {c.o.d_dbias, (size_t)C * gsz, 1},
        {d_workspace, workspace_bytes, 1},
    };
    XENT_FORWARD_IF_ERROR(
        check_aliasing(r, (int)(sizeof r / sizeof r[0])));

    c.chunk = chunk_rows;
    (void)ws_layout(h->backend, d, chunk_rows, d_workspace, &c.ws);
    c.rows = c.o.d_loss_rows ? c.o.d_loss_rows : c.ws.rows;
    if (h->backend == XENT_BACKEND_CPU)
        return run_cpu(h, &c);
    return run_cuda(ctx, &c);
}
