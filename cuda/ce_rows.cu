/*
 * ce_rows.cu - the softmax cross-entropy row kernels: per-row loss and
 * log-sum-exp, and the fused gradient, for every kernel variant.
 *
 * What it computes (per row i of N; C classes; row stride ld; z' the
 * softcapped logits, z'_j = cap * tanh(z_j / cap) when cap > 0):
 *   FWD       lse_i = log sum_j exp(z'_j) and loss_i (see xent.h)
 *   FWD_BWD   the same, then grad_ij = g_i * d loss_i / d z_ij
 *   BWD_LSE   grad_ij from a saved lse_i (no statistics pass)
 * with g_i = scale * dloss[i * dloss_stride] / denom (denom = *d_denom, the
 * MEAN denominator computed on the device, or host_denom; xent_row_scale,
 * which gives 0 for a zero denominator).
 *
 * The math is cuda/xent_bridge.h's, shared with the CPU backend: each thread
 * folds its columns into an online-softmax state xent_row_acc (max m,
 * s = sum exp(z'_j - m) over the columns other than the target, the weighted
 * sums a = sum v_j (z'_j - m) and v = sum v_j used by label smoothing and
 * probability targets); the row's threads merge their states in a fixed
 * order; xent_fin_index / xent_fin_probs / xent_fin_from_lse turn the merged
 * state into the loss, the lse and the gradient coefficients, and
 *   grad_j = g * (coef_p * p_j - u_j) * cap'(z'_j),  p_j = xent_prob(z'_j)
 * with the target column (class-index targets) taking fin.grad_y instead.
 *
 * Work mapping. A row belongs to a "group" (common.cuh): a warp
 * (XENT_VARIANT_WARP_ROW, 8 rows per 256-thread block) or a whole block
 * (XENT_VARIANT_BLOCK_ROW, 512 threads per row). Thread r of a group owns
 * columns r, r + S, r + 2S, ... (S the group size): consecutive threads read
 * consecutive elements (coalesced). Groups walk the rows in a grid-stride
 * loop with 64-bit row numbers, so any N works with a grid capped at
 * XENT_MAX_BLOCKS. Every pass loads XENT_UNROLL elements per thread before
 * using them, to keep that many loads in flight per thread.
 *
 * Memory traffic per row: FWD reads the row once (C elements; plus C
 * floats of targets for probability targets, and the class weights, which
 * stay in L1/L2). FWD_BWD reads it twice (the second read usually hits
 * L2 for small and medium rows) and writes the gradient once; BWD_LSE reads
 * it once and writes once. Ignored rows without an lse output are not read
 * at all. Columns [C, ld) are never read nor written.
 *
 * Determinism: the launch shape depends only on the variant and N; each
 * thread folds its columns in increasing order, and the merge order over
 * the group is fixed (common.cuh). No floating-point atomics; bad data is
 * recorded in the status word with integer atomics.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "common.cuh"
#include "xent_bridge.h"

/* ---- tuning (the launch shape depends only on these and N) ------------ */

/* WARP_ROW: 8 warps (rows) per block, so a block still covers 8 rows of
 * the small-C problems this tier serves. BLOCK_ROW: 512 threads per row
 * give a row 512 x XENT_UNROLL loads in flight, which matters when there
 * are few rows (large C); 2 such blocks are resident per SM at 64
 * registers. */
#define XENT_WARP_ROW_THREADS 256  /* 8 rows per block */
#define XENT_BLOCK_ROW_THREADS 512 /* one row per block */
#define XENT_UNROLL 8              /* loads in flight per thread and pass */
#define XENT_MAX_BLOCKS (1 << 20)  /* grid cap; larger N grid-strides */
/* Resident threads per SM the kernels are compiled for: 1024 (half of
 * sm_90's 2048) caps them at 64 registers, which holds XENT_UNROLL loads
 * per thread in flight without spilling. */
#define XENT_ROWS_MIN_THREADS_PER_SM 1024

typedef xent_warp_group<XENT_WARP_ROW_THREADS> xent_warp_row_group;
typedef xent_block_group<XENT_BLOCK_ROW_THREADS> xent_block_row_group;

/* ---- device helpers -------------------------------------------------- */

/* Values uniform over the launch that are computed, once per thread (the
 * others are read from the kernel parameters where they are used, which
 * costs no register). */
typedef struct xent_row_consts {
    float inv_c;  /* 1 / C */
    float wsum;   /* BWD_LSE, class-index targets with smoothing: sum_c w_c */
    double denom; /* gradient denominator */
} xent_row_consts;

enum { XENT_ROW_OK = 0, XENT_ROW_IGNORED = 1, XENT_ROW_BAD = 2 };

#define XENT_IS_INDEX(TK) ((TK) != XENT_TARGET_PROBS_F32)

__device__ __forceinline__ float xent_nan(void)
{
    return __int_as_float(0x7fc00000); /* the same quiet NaN as NAN */
}

template <int TK>
__device__ __forceinline__ int64_t xent_load_target(const void *targets,
                                                    int64_t i)
{
    if constexpr (TK == XENT_TARGET_INDEX_I32)
        return (int64_t)static_cast<const int32_t *>(targets)[i];
    else
        return static_cast<const int64_t *>(targets)[i];
}

__device__ __forceinline__ float xent_class_weight(const float *w, int64_t j)
{
    return w ? w[j] : 1.0f;
}

/* The weight v_j a column carries into xent_acc_add. Probability targets:
 * v_j = w_j ((1 - alpha) q_j + alpha / C) (the CPU backend's expression).
 * Class-index targets: w_j when smoothing is on (smooth), else 0. */
template <int TK>
__device__ __forceinline__ float xent_col_v(const float *w, const float *q,
                                            int64_t j, int smooth,
                                            const xent_ce_params &p,
                                            const xent_row_consts &k)
{
    if constexpr (XENT_IS_INDEX(TK))
        return smooth ? xent_class_weight(w, j) : 0.0f;
    else
        return xent_class_weight(w, j) *
               ((1.0f - p.label_smoothing) * q[j] +
                p.label_smoothing * k.inv_c);
}

__device__ __forceinline__ void xent_record(xent_status_word *st,
                                            uint32_t flag, int64_t row)
{
    if (!st)
        return;
    atomicOr(&st->flags, flag);
    atomicMin(reinterpret_cast<unsigned long long *>(&st->first_row),
              (unsigned long long)row);
}

/*
 * Statistics pass of one thread over its columns of row z ([C] of T):
 * folds every owned column j, in increasing order, into an xent_row_acc.
 * y: the column left out of s (the target), -1 for none. Reads only.
 */
template <typename T, int TK, int S>
__device__ __forceinline__ xent_row_acc
xent_stats_pass(const T *z, const float *w, const float *q, int64_t y,
                int smooth, int rank, const xent_ce_params &p,
                const xent_row_consts &k)
{
    const int64_t c_end = p.n_classes;
    xent_row_acc acc;
    xent_acc_init(&acc);
    /* chunks of XENT_UNROLL columns j, j + S, ...: all loads first, then
     * the folds in increasing column order; columns >= C (the ragged end
     * of the row) are neither loaded nor folded */
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_UNROLL * S) {
        float zc[XENT_UNROLL], vj[XENT_UNROLL];
#pragma unroll
        for (int u = 0; u < XENT_UNROLL; u++) {
            const int64_t c = j + (int64_t)u * S;
            zc[u] = 0.0f;
            vj[u] = 0.0f;
            if (c < c_end) {
                zc[u] = xent_cap(xent_load_f32(z, c), p.softcap);
                vj[u] = xent_col_v<TK>(w, q, c, smooth, p, k);
            }
        }
#pragma unroll
        for (int u = 0; u < XENT_UNROLL; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c < c_end)
                xent_acc_add(&acc, zc[u], vj[u], c != y);
        }
    }
    return acc;
}

/* Sum of the probability-target weights v_j over one thread's columns (no
 * logits read), as an xent_row_acc holding only v so that the group merge
 * applies (with m = -inf throughout, xent_acc_merge just adds). */
template <int TK, int S>
__device__ __forceinline__ xent_row_acc
xent_weight_pass(const float *w, const float *q, int rank,
                 const xent_ce_params &p, const xent_row_consts &k)
{
    xent_row_acc acc;
    xent_acc_init(&acc);
#pragma unroll 4
    for (int64_t j = rank; j < p.n_classes; j += S)
        xent_acc_add_weight(&acc, xent_col_v<TK>(w, q, j, 1, p, k));
    return acc;
}

/*
 * Gradient pass of one thread over its columns: reads z_j, writes grad_j
 * at the same element. In place (grad == logits) this is safe because the
 * thread that writes element j is the only one that reads it here, and it
 * reads before it writes; every chunk's loads are issued before its stores.
 * The only element read by other threads is the target logit z'_y, read
 * before the caller's group sync (see xent_ce_row).
 * zrow: the row ([C] of T); grow: the row's first element index in grad.
 */
template <typename T, int TK, int S>
__device__ __forceinline__ void
xent_grad_pass(const T *zrow, void *grad, int64_t grow, const float *w,
               const float *q, int64_t y, const xent_row_fin &fin, float g,
               int rank, const xent_ce_params &p, const xent_row_consts &k)
{
    const int64_t c_end = p.n_classes;
    /* index targets: u_j = u_scale * w_j, and no weight is read when
     * u_scale is 0 (no smoothing) */
    const int use_u = fin.u_scale != 0.0f;
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_UNROLL * S) {
        float zv[XENT_UNROLL], uj[XENT_UNROLL];
        /* all loads of the chunk first: the stores below may alias them */
#pragma unroll
        for (int u = 0; u < XENT_UNROLL; u++) {
            const int64_t c = j + (int64_t)u * S;
            zv[u] = 0.0f;
            uj[u] = 0.0f;
            if (c < c_end) {
                zv[u] = xent_load_f32(zrow, c);
                if constexpr (XENT_IS_INDEX(TK))
                    uj[u] = use_u ? fin.u_scale * xent_class_weight(w, c)
                                  : 0.0f;
                else
                    uj[u] = xent_col_v<TK>(w, q, c, 1, p, k);
            }
        }
#pragma unroll
        for (int u = 0; u < XENT_UNROLL; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c < c_end) {
                const float zc = xent_cap(zv[u], p.softcap);
                const float pj = xent_prob(&fin, zc);
                float gj = fin.coef_p * pj - uj[u];
                if constexpr (XENT_IS_INDEX(TK))
                    gj = c == y ? fin.grad_y : gj;
                xent_store_grad<T>(grad, grow + c,
                                   g * gj * xent_cap_deriv(zc, p.softcap),
                                   p.grad_f32);
            }
        }
    }
}

/* The same value in every owned column of a gradient row (0 for ignored
 * rows, NaN for bad ones). Writes only the thread's own columns, which it
 * alone may have read before (in place). */
template <typename T, int S>
__device__ __forceinline__ void xent_fill_pass(void *grad, int64_t grow,
                                               float value, int rank,
                                               const xent_ce_params &p)
{
    for (int64_t j = rank; j < p.n_classes; j += S)
        xent_store_grad<T>(grad, grow + j, value, p.grad_f32);
}

/*
 * One row, by every thread of group grp. Every branch that contains a group
 * merge or sync depends only on the row and the launch parameters, so it is
 * taken by the whole group (for the block group: the whole block).
 */
template <typename T, int TK, class G>
__device__ __forceinline__ void xent_ce_row(const xent_ce_params &p,
                                            const xent_row_consts &k,
                                            const G &grp, int64_t i)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const int64_t base = i * p.ld; /* 64-bit: N * ld may exceed 2^31 */
    /* logits and grad may alias (in place): no __restrict__ on either */
    const T *zrow = static_cast<const T *>(p.logits) + base;
    const float *w = p.weights;
    const float *q = nullptr;

    /* ---- targets ---- */
    int kind = XENT_ROW_OK;
    int64_t y = -1;
    float wy = 1.0f, zy = 0.0f;
    if constexpr (XENT_IS_INDEX(TK)) {
        y = xent_load_target<TK>(p.targets, i);
        uint32_t flag = 0;
        if (y == p.ignore_index) {
            kind = XENT_ROW_IGNORED;
        } else if (y < 0 || y >= p.n_classes) {
            kind = XENT_ROW_BAD; /* never index with y below */
            flag = XENT_DATA_TARGET_OUT_OF_RANGE;
        } else {
            wy = xent_class_weight(w, y);
            if (!(wy >= 0.0f)) { /* negative or NaN */
                kind = XENT_ROW_BAD;
                flag = XENT_DATA_NEGATIVE_WEIGHT;
            }
        }
        if (flag && rank == 0)
            xent_record(p.status, flag, i);
        /* In place: every thread reads z'_y here, before the owner of
         * column y can overwrite it; grp.sync() before the gradient pass
         * orders these loads before the gradient stores. */
        if (kind == XENT_ROW_OK)
            zy = xent_cap(xent_load_f32(zrow, y), p.softcap);
        else
            y = -1; /* ignored / bad: s covers every column (lse only) */
    } else {
        q = static_cast<const float *>(p.targets) + i * p.target_ld;
    }
    const int ok = kind == XENT_ROW_OK;

    /* ---- statistics ---- */
    xent_row_fin fin = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (p.mode != XENT_MODE_BWD_LSE) {
        if (ok || p.lse_rows) {
            const int smooth = ok && p.label_smoothing > 0.0f;
            xent_row_acc acc =
                xent_stats_pass<T, TK, S>(zrow, w, q, y, smooth, rank, p, k);
            acc = grp.merge(acc); /* all threads: the same state */
            if (!XENT_IS_INDEX(TK))
                fin = xent_fin_probs(acc, p.z_loss);
            else if (ok)
                fin = xent_fin_index(acc, zy, wy, p.label_smoothing, k.inv_c,
                                     p.z_loss);
            else
                fin = xent_fin_probs(acc, 0.0f); /* lse only */
            if (rank == 0 && p.lse_rows)
                p.lse_rows[i] = fin.lse;
        }
        if (rank == 0 && p.loss_rows)
            p.loss_rows[i] = ok ? fin.loss
                                : (kind == XENT_ROW_BAD ? xent_nan() : 0.0f);
    } else if (ok) {
        float v;
        if constexpr (XENT_IS_INDEX(TK)) {
            v = k.wsum;
        } else {
            xent_row_acc acc = xent_weight_pass<TK, S>(w, q, rank, p, k);
            v = grp.merge(acc).v;
        }
        fin = xent_fin_from_lse(p.lse_in[i], v, XENT_IS_INDEX(TK), zy, wy,
                                p.label_smoothing, k.inv_c, p.z_loss);
    }

    /* ---- gradient ---- */
    if (p.mode == XENT_MODE_FWD || !p.grad)
        return;
    if (!ok) {
        /* no logits needed (any lse read above was by this thread's own
         * columns) */
        xent_fill_pass<T, S>(p.grad, base,
                             kind == XENT_ROW_BAD ? xent_nan() : 0.0f, rank,
                             p);
        return;
    }
    const float u = p.dloss ? p.dloss[i * p.dloss_stride] : 1.0f;
    const float g = xent_row_scale(p.scale, u, k.denom);
    /* In place: every thread's load of z'_y (above) before the owner of
     * column y overwrites it. In the forward modes the merge's barriers or
     * shuffles already separate them, and in BWD_LSE only the owner uses
     * z'_y (through fin.grad_y); the barrier keeps the routine safe however
     * fin comes to depend on z'_y. */
    grp.sync();
    xent_grad_pass<T, TK, S>(zrow, p.grad, base, w, q, y, fin, g, rank, p,
                             k);
}

/* ---- kernels --------------------------------------------------------- */

/*
 * Grid: ceil(N / G::kRowsPerBlock) blocks capped at XENT_MAX_BLOCKS, block
 * G::kThreads; each group walks rows first_row, first_row + row_step, ...
 * The loop bounds depend only on blockIdx and N, so for the block group
 * every thread of a block runs the same iterations and reaches the same
 * barriers.
 */
template <typename T, int TK, class G>
static __global__ void
__launch_bounds__(G::kThreads, XENT_ROWS_MIN_THREADS_PER_SM / G::kThreads)
    xent_ce_rows_kernel(const xent_ce_params p)
{
    const G grp;
    xent_row_consts k;
    k.inv_c = 1.0f / (float)p.n_classes;
    k.denom = 1.0;
    if (p.mode != XENT_MODE_FWD && p.grad)
        k.denom = p.d_denom ? *p.d_denom : p.host_denom;
    k.wsum = 0.0f;
    if (XENT_IS_INDEX(TK) && p.mode == XENT_MODE_BWD_LSE &&
        p.label_smoothing > 0.0f) {
        /* W = sum_c w_c, the same for every row: once per group, with the
         * group's fixed merge order (so every group gets the same bits) */
        if (p.weights) {
            xent_row_acc acc;
            xent_acc_init(&acc);
            for (int64_t j = grp.rank(); j < p.n_classes; j += G::kSize)
                xent_acc_add_weight(&acc, p.weights[j]);
            k.wsum = grp.merge(acc).v;
        } else {
            k.wsum = (float)p.n_classes;
        }
    }
    for (int64_t i = grp.first_row(); i < p.n_rows; i += grp.row_step())
        xent_ce_row<T, TK, G>(p, k, grp, i);
}

/* ---- launchers ------------------------------------------------------- */

template <typename T, class G>
static cudaError_t xent_launch_rows_t(const xent_ce_params *p, dim3 grid,
                                      cudaStream_t s)
{
    switch (p->target_type) {
    case XENT_TARGET_INDEX_I32:
        xent_ce_rows_kernel<T, XENT_TARGET_INDEX_I32, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_TARGET_INDEX_I64:
        xent_ce_rows_kernel<T, XENT_TARGET_INDEX_I64, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_TARGET_PROBS_F32:
        xent_ce_rows_kernel<T, XENT_TARGET_PROBS_F32, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <class G>
static cudaError_t xent_launch_rows(const xent_ce_params *p, cudaStream_t s)
{
    int64_t blocks =
        (p->n_rows + G::kRowsPerBlock - 1) / G::kRowsPerBlock;
    if (blocks > XENT_MAX_BLOCKS)
        blocks = XENT_MAX_BLOCKS;
    const dim3 grid((unsigned)blocks);
    switch (p->logits_dtype) {
    case XENT_DTYPE_F32: return xent_launch_rows_t<float, G>(p, grid, s);
    case XENT_DTYPE_F16: return xent_launch_rows_t<__half, G>(p, grid, s);
    case XENT_DTYPE_BF16:
        return xent_launch_rows_t<__nv_bfloat16, G>(p, grid, s);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" int xent_cuda_ce_rows(const xent_ce_params *p, xent_variant variant,
                                 struct CUstream_st *stream)
{
    if (!p)
        return (int)cudaErrorInvalidValue;
    if (p->n_rows <= 0)
        return (int)cudaSuccess; /* launch nothing */
    cudaStream_t s = (cudaStream_t)stream;
    switch (variant) {
    case XENT_VARIANT_WARP_ROW:
        return (int)xent_launch_rows<xent_warp_row_group>(p, s);
    case XENT_VARIANT_BLOCK_ROW:
        return (int)xent_launch_rows<xent_block_row_group>(p, s);
    default: return (int)cudaErrorInvalidValue;
    }
}
