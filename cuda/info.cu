/*
 * info.cu - row kernels for the information-theory ops around
 * cross-entropy: entropy of softmax(z), KL(q || softmax(z)) with q given
 * as probabilities or as teacher logits, binary cross-entropy with logits,
 * and the one-pass evaluation statistics of xent_ce_eval.
 *
 * What it computes (per row i of N; C columns; row stride ld):
 *   ENTROPY     H_i = log s - t/s,  dH/dz_j = p_j (t/s - (z_j - m))
 *   KL_PROBS    KL_i = sum_{q>0} q_j (log q_j - (z_j - m)) + (sum q) log s,
 *               dKL/dz_j = p_j sum q - q_j
 *   KL_LOGITS   KL_i = d/st + log sz - log st (see xent_bridge.h),
 *               dKL/dz_j = p_j - q_j,
 *               dKL/dt_j = q_j (((t_j - mt) - (z_j - mz)) + c0)
 *   BCE         l_ij, dl/dz_ij elementwise (xent_bce_elem), and the row's
 *               sum of l_ij (fp64, fixed order) for the reduction
 *   EVAL        CE loss, lse, argmax, correct, rank, entropy and z-loss term
 *               per row, and the exact fixed-point corpus sums
 * All the row math is cuda/xent_bridge.h's (shared with the CPU backend,
 * host/cpu_info.c); gradients are g_i * d(row)/dz with
 * g_i = scale * u_i / denom (xent_row_scale).
 *
 * Work mapping: as cuda/ce_rows.cu. A row belongs to a group (common.cuh):
 * a warp (XENT_VARIANT_WARP_ROW, 8 rows per 256-thread block) or a block
 * (XENT_VARIANT_BLOCK_ROW, 512 threads). Thread r of a group owns columns
 * r, r + S, r + 2S, ... (S the group size; coalesced), and folds them in
 * chunks of XENT_INFO_CHUNK = 8 columns (XENT_KL_CHUNK = 4 for KL, which
 * reads two rows): all loads of a chunk are issued first (8 loads in
 * flight per thread), then the chunk is folded into the thread's row
 * state (xent_*_add_chunk). The group then merges
 * the states in a fixed order (a butterfly where both partners compute
 * merge(lower lane, upper lane), then the warps in order), so every
 * thread of the group holds bitwise the same row state.
 *
 * Memory traffic per row: ENTROPY / KL forward read the logits (and the
 * teacher row) once; with gradients a second read (usually from L2 for
 * small and medium rows) and one write per gradient. BCE reads logits,
 * targets (and weights) once and writes the outputs once. EVAL reads the
 * target logit first (one broadcast load per group), then the row once:
 * 1R, with the rank counted in the same pass. Columns [C, ld) are never
 * read nor written.
 *
 * In place (grad == logits, grad_target == target): a thread reads and
 * writes only its own columns, and reads every element of a chunk before
 * writing any of them, so no sync is needed between the passes.
 *
 * Corpus sums (EVAL with an accumulator): the group's rank-0 thread adds
 * each counted row's round(v * 2^32) (xent_fixed32, exact integers) and
 * counts into its own slot in shared memory (no other thread touches the
 * slot); at the end the block adds its slots and thread 0 adds the block's
 * totals to the accumulator with 64-bit integer atomics (the 128-bit sums
 * as a low-word add whose carry goes into the high word). Integer
 * addition is associative, so the result does not depend on timing; the
 * grid is capped at p.max_blocks so there are few atomics.
 *
 * Determinism: the launch shape depends only on the variant and N (and
 * max_blocks, which only changes integer sums); no floating-point atomics.
 * Data problems are recorded in the status word with integer atomics.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "common.cuh"
#include "xent_bridge.h"

/* ---- tuning ----------------------------------------------------------- */

#define XENT_INFO_WARP_THREADS  256 /* 8 rows per block */
#define XENT_INFO_BLOCK_THREADS 512 /* one row per block */
#define XENT_INFO_MAX_BLOCKS    (1 << 20)
/* KL reads two rows: chunks of 4 columns keep 8 loads in flight per thread
 * (as the single-row ops' chunks of XENT_INFO_CHUNK = 8) within the
 * register budget */
#define XENT_KL_CHUNK 4
/* as ce_rows.cu: at most 64 registers per thread */
#define XENT_INFO_MIN_THREADS_PER_SM 1024

typedef xent_warp_group<XENT_INFO_WARP_THREADS> xent_info_warp_group;
typedef xent_block_group<XENT_INFO_BLOCK_THREADS> xent_info_block_group;

/* ---- group merges of the row states ------------------------------------
 * xent_wire<A>: the number of leading 32-bit words of A that a shuffle
 * carries (the values; the Kahan compensations, stored after them, are
 * zero once folded), the identity state, the fold and the merge. */

template <class A> struct xent_wire;

template <> struct xent_wire<xent_ent_acc> {
    static constexpr int kWords = 3; /* m, s, t */
    static __device__ __forceinline__ void init(xent_ent_acc *a)
    {
        xent_ent_init(a);
    }
    static __device__ __forceinline__ void fold(xent_ent_acc *a)
    {
        xent_ent_fold(a);
    }
    static __device__ __forceinline__ void merge(xent_ent_acc *a,
                                                 const xent_ent_acc &b)
    {
        xent_ent_merge(a, b);
    }
};

template <> struct xent_wire<xent_klp_acc> {
    static constexpr int kWords = 5; /* m, s, e, v, bad */
    static __device__ __forceinline__ void init(xent_klp_acc *a)
    {
        xent_klp_init(a);
    }
    static __device__ __forceinline__ void fold(xent_klp_acc *a)
    {
        xent_klp_fold(a);
    }
    static __device__ __forceinline__ void merge(xent_klp_acc *a,
                                                 const xent_klp_acc &b)
    {
        xent_klp_merge(a, b);
    }
};

template <> struct xent_wire<xent_klt_acc> {
    static constexpr int kWords = 5; /* mz, sz, mt, st, d */
    static __device__ __forceinline__ void init(xent_klt_acc *a)
    {
        xent_klt_init(a);
    }
    static __device__ __forceinline__ void fold(xent_klt_acc *a)
    {
        xent_klt_fold(a);
    }
    static __device__ __forceinline__ void merge(xent_klt_acc *a,
                                                 const xent_klt_acc &b)
    {
        xent_klt_merge(a, b);
    }
};

template <> struct xent_wire<xent_eval_acc> {
    /* idx, cnt, m, s, a, v, t and y: y too, since a lane whose own state
     * is an identity (block stage) must merge with its partner's y */
    static constexpr int kWords = 8;
    static __device__ __forceinline__ void init(xent_eval_acc *a)
    {
        xent_eval_init(a, INT32_MIN); /* an identity: see xent_eval_merge */
    }
    static __device__ __forceinline__ void fold(xent_eval_acc *a)
    {
        xent_eval_fold(a);
    }
    static __device__ __forceinline__ void merge(xent_eval_acc *a,
                                                 const xent_eval_acc &b)
    {
        xent_eval_merge(a, b);
    }
};

/* The state of lane (lane ^ k); a must be folded (its compensations, and
 * so the returned ones, are zero). All 32 lanes. */
template <class A>
__device__ __forceinline__ A xent_shfl_xor_state(const A &a, int k)
{
    constexpr int W = xent_wire<A>::kWords;
    static_assert(W * 4 <= (int)sizeof(A), "wire words");
    uint32_t w[W];
    memcpy(w, &a, sizeof w);
#pragma unroll
    for (int q = 0; q < W; q++)
        w[q] = __shfl_xor_sync(XENT_FULL_MASK, w[q], k);
    A o = a;
    memcpy(&o, w, sizeof w);
    return o;
}

/* Every lane returns bitwise the same merged state (the fixed tree of
 * common.cuh's xent_warp_merge). All 32 lanes. */
template <class A> __device__ __forceinline__ A xent_warp_merge_state(A a)
{
    const int lane = (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    xent_wire<A>::fold(&a);
#pragma unroll
    for (int k = 1; k < XENT_WARP_SIZE; k <<= 1) {
        A o = xent_shfl_xor_state(a, k);
        if (lane & k) { /* both partners compute merge(lower, upper) */
            A t = a;
            a = o;
            o = t;
        }
        xent_wire<A>::merge(&a, o);
    }
    return a;
}

/* NT threads, all of which call (two barriers; back-to-back calls are safe
 * for the reasons given in common.cuh's xent_block_merge). */
template <int NT, class A>
__device__ __forceinline__ A xent_block_merge_state(A a)
{
    constexpr int NW = NT / XENT_WARP_SIZE;
    __shared__ A sh[NW + 1];
    const int lane = (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    const int warp = (int)(threadIdx.x / XENT_WARP_SIZE);
    a = xent_warp_merge_state(a);
    if (lane == 0)
        sh[warp] = a;
    __syncthreads();
    if (warp == 0) {
        A r;
        if (lane < NW)
            r = sh[lane];
        else
            xent_wire<A>::init(&r);
        r = xent_warp_merge_state(r);
        if (lane == 0)
            sh[NW] = r;
    }
    __syncthreads();
    return sh[NW];
}

/* The row state merged over group G (every thread of the group calls). */
template <class G, class A> __device__ __forceinline__ A xent_group_merge(A a)
{
    if constexpr (G::kSize == XENT_WARP_SIZE)
        return xent_warp_merge_state(a);
    else
        return xent_block_merge_state<G::kThreads>(a);
}

/* fp64 sum over group G in a fixed order, to every thread of the group. */
template <class G> __device__ __forceinline__ double xent_group_sum(double x)
{
    if constexpr (G::kSize == XENT_WARP_SIZE)
        return xent_warp_sum(x);
    else
        return xent_block_sum<G::kThreads>(x);
}

/* ---- device helpers --------------------------------------------------- */

__device__ __forceinline__ float xent_info_nan(void)
{
    return __int_as_float(0x7fc00000);
}

__device__ __forceinline__ void xent_info_record(xent_status_word *st,
                                                 uint32_t flag, int64_t row)
{
    if (!st)
        return;
    atomicOr(&st->flags, flag);
    atomicMin(reinterpret_cast<unsigned long long *>(&st->first_row),
              (unsigned long long)row);
}

/* The gradient scale of row i (entropy, KL; BCE with a scalar upstream). */
__device__ __forceinline__ float xent_info_row_g(const xent_info_params &p,
                                                 int64_t i)
{
    const float u = p.dloss ? p.dloss[i * p.dloss_stride] : 1.0f;
    return xent_row_scale(p.scale, u, p.denom);
}

/* chunk loads: NCH columns c0, c0 + S, ...; -inf past C */
template <typename T, int S, int NCH = XENT_INFO_CHUNK>
__device__ __forceinline__ void xent_load_chunk(const T *row, int64_t c0,
                                                int64_t c_end, float *out)
{
#pragma unroll
    for (int u = 0; u < NCH; u++) {
        const int64_t c = c0 + (int64_t)u * S;
        out[u] = c < c_end ? xent_load_f32(row, c) : -INFINITY;
    }
}

template <int S, int NCH = XENT_INFO_CHUNK>
__device__ __forceinline__ void xent_load_chunk_q(const float *row, int64_t c0,
                                                  int64_t c_end, float *out)
{
#pragma unroll
    for (int u = 0; u < NCH; u++) {
        const int64_t c = c0 + (int64_t)u * S;
        out[u] = c < c_end ? row[c] : 0.0f;
    }
}

/* ---- entropy ----------------------------------------------------------- */

template <typename T, class G>
__device__ __forceinline__ void xent_entropy_row(const xent_info_params &p,
                                                 const G &grp, int64_t i)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const int64_t base = i * p.ld;
    const T *zrow = static_cast<const T *>(p.logits) + base;
    const int64_t c_end = p.n_classes;

    xent_ent_acc acc;
    xent_ent_init(&acc);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_INFO_CHUNK * S) {
        float z[XENT_INFO_CHUNK];
        xent_load_chunk<T, S>(zrow, j, c_end, z);
        xent_ent_add_chunk(&acc, z, XENT_INFO_CHUNK);
    }
    acc = xent_group_merge<G>(acc);
    const xent_ent_fin fin = xent_ent_finish(acc);
    if (rank == 0 && p.loss_rows)
        p.loss_rows[i] = fin.h;
    if (!p.grad)
        return;
    const float g = xent_info_row_g(p, i);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_INFO_CHUNK * S) {
        float z[XENT_INFO_CHUNK];
        xent_load_chunk<T, S>(zrow, j, c_end, z); /* all loads first */
#pragma unroll
        for (int u = 0; u < XENT_INFO_CHUNK; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c < c_end)
                xent_store_grad<T>(p.grad, base + c,
                                   xent_ent_grad(&fin, z[u], g), p.grad_f32);
        }
    }
}

/* ---- KL, probability targets -------------------------------------------- */

template <typename T, class G>
__device__ __forceinline__ void xent_klp_row(const xent_info_params &p,
                                             const G &grp, int64_t i)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const int64_t base = i * p.ld;
    const T *zrow = static_cast<const T *>(p.logits) + base;
    const float *qrow = static_cast<const float *>(p.target) + i * p.target_ld;
    const int64_t c_end = p.n_classes;

    xent_klp_acc acc;
    xent_klp_init(&acc);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_KL_CHUNK * S) {
        float z[XENT_KL_CHUNK], q[XENT_KL_CHUNK];
        xent_load_chunk<T, S, XENT_KL_CHUNK>(zrow, j, c_end, z);
        xent_load_chunk_q<S, XENT_KL_CHUNK>(qrow, j, c_end, q);
        xent_klp_add_chunk(&acc, z, q, XENT_KL_CHUNK);
    }
    acc = xent_group_merge<G>(acc);
    const xent_kl_fin fin = xent_klp_finish(acc, p.prob_tol);
    if (fin.bad && rank == 0)
        xent_info_record(p.status, XENT_DATA_INVALID_PROBS, i);
    if (rank == 0 && p.loss_rows)
        p.loss_rows[i] = fin.bad ? xent_info_nan() : fin.kl;
    if (!p.grad)
        return;
    const float g = fin.bad ? xent_info_nan() : xent_info_row_g(p, i);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_KL_CHUNK * S) {
        float z[XENT_KL_CHUNK], q[XENT_KL_CHUNK];
        xent_load_chunk<T, S, XENT_KL_CHUNK>(zrow, j, c_end, z);
        xent_load_chunk_q<S, XENT_KL_CHUNK>(qrow, j, c_end, q);
#pragma unroll
        for (int u = 0; u < XENT_KL_CHUNK; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c < c_end)
                xent_store_grad<T>(
                    p.grad, base + c,
                    g * (fin.qsum * xent_kl_p(&fin, z[u]) - q[u]), p.grad_f32);
        }
    }
}

/* ---- KL, teacher logits ------------------------------------------------- */

template <typename T, class G>
__device__ __forceinline__ void xent_klt_row(const xent_info_params &p,
                                             const G &grp, int64_t i)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const int64_t zbase = i * p.ld, tbase = i * p.target_ld;
    /* in place: grad may be logits and grad_target target (no restrict) */
    const T *zrow = static_cast<const T *>(p.logits) + zbase;
    const T *trow = static_cast<const T *>(p.target) + tbase;
    const int64_t c_end = p.n_classes;

    xent_klt_acc acc;
    xent_klt_init(&acc);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_KL_CHUNK * S) {
        float z[XENT_KL_CHUNK], t[XENT_KL_CHUNK];
        xent_load_chunk<T, S, XENT_KL_CHUNK>(zrow, j, c_end, z);
        xent_load_chunk<T, S, XENT_KL_CHUNK>(trow, j, c_end, t);
        xent_klt_add_chunk(&acc, z, t, XENT_KL_CHUNK);
    }
    acc = xent_group_merge<G>(acc);
    const xent_kl_fin fin = xent_klt_finish(acc);
    if (rank == 0 && p.loss_rows)
        p.loss_rows[i] = fin.kl;
    if (!p.grad && !p.grad_target)
        return;
    const float g = xent_info_row_g(p, i);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_KL_CHUNK * S) {
        float z[XENT_KL_CHUNK], t[XENT_KL_CHUNK];
        xent_load_chunk<T, S, XENT_KL_CHUNK>(zrow, j, c_end, z);
        xent_load_chunk<T, S, XENT_KL_CHUNK>(trow, j, c_end, t);
#pragma unroll
        for (int u = 0; u < XENT_KL_CHUNK; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c < c_end) {
                const float q = xent_kl_q(&fin, t[u]);
                if (p.grad)
                    xent_store_grad<T>(p.grad, zbase + c,
                                       g * (xent_kl_p(&fin, z[u]) - q),
                                       p.grad_f32);
                if (p.grad_target)
                    xent_store_grad<T>(p.grad_target, tbase + c,
                                       xent_kl_grad_t(&fin, z[u], t[u], q, g),
                                       p.grad_f32);
            }
        }
    }
}

/* ---- binary cross-entropy ------------------------------------------------ */

template <typename T, class G>
__device__ __forceinline__ void xent_bce_row(const xent_info_params &p,
                                             const G &grp, int64_t i)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const int64_t base = i * p.ld;
    const T *zrow = static_cast<const T *>(p.logits) + base;
    const float *yrow = static_cast<const float *>(p.target) + i * p.target_ld;
    const float *wrow = p.weight ? p.weight + i * p.weight_ld : nullptr;
    const int64_t c_end = p.n_classes;
    /* per-element upstream only under NONE with a row stride */
    const int elem_up = p.dloss && p.dloss_stride != 0;
    const float g_row = elem_up ? 0.0f : xent_info_row_g(p, i);
    const float *urow = elem_up ? p.dloss + i * p.dloss_stride : nullptr;

    double sum = 0.0;
    uint32_t flags = 0u;
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_INFO_CHUNK * S) {
        float z[XENT_INFO_CHUNK], y[XENT_INFO_CHUNK];
        xent_load_chunk<T, S>(zrow, j, c_end, z);
        xent_load_chunk_q<S>(yrow, j, c_end, y);
#pragma unroll
        for (int u = 0; u < XENT_INFO_CHUNK; u++) {
            const int64_t c = j + (int64_t)u * S;
            if (c >= c_end)
                continue;
            const float pw = p.pos_weight ? p.pos_weight[c] : 1.0f;
            const float w = wrow ? wrow[c] : 1.0f;
            float d;
            float l = xent_bce_elem(z[u], y[u], pw, w, &d);
            uint32_t f = 0u;
            if (!(y[u] >= 0.0f && y[u] <= 1.0f))
                f |= XENT_DATA_TARGET_OUTSIDE_01;
            if (!(pw >= 0.0f))
                f |= XENT_DATA_NEGATIVE_WEIGHT;
            if (f) {
                l = xent_info_nan();
                d = xent_info_nan();
                flags |= f;
            }
            sum += (double)l;
            if (p.loss_elems)
                p.loss_elems[base + c] = l;
            if (p.grad) {
                const float g = elem_up ? p.scale * urow[c] : g_row;
                xent_store_grad<T>(p.grad, base + c, g * d, p.grad_f32);
            }
        }
    }
    if (flags)
        xent_info_record(p.status, flags, i);
    if (p.loss_rows) { /* uniform over the group (a kernel parameter) */
        sum = xent_group_sum<G>(sum);
        if (rank == 0)
            p.loss_rows[i] = (float)sum;
    }
}

/* ---- the info kernel ----------------------------------------------------- */

/*
 * Grid: ceil(N / G::kRowsPerBlock) blocks capped at XENT_INFO_MAX_BLOCKS;
 * each group walks rows first_row, first_row + row_step, ... The loop
 * bounds depend only on blockIdx and N, so every thread of a block group
 * reaches the same barriers; every branch around a group merge or sum
 * depends only on the row and the kernel parameters.
 */
template <typename T, int OP, class G>
static __global__ void
__launch_bounds__(G::kThreads, XENT_INFO_MIN_THREADS_PER_SM / G::kThreads)
    xent_info_rows_kernel(const xent_info_params p)
{
    const G grp;
    for (int64_t i = grp.first_row(); i < p.n_rows; i += grp.row_step()) {
        if constexpr (OP == XENT_INFO_ENTROPY)
            xent_entropy_row<T, G>(p, grp, i);
        else if constexpr (OP == XENT_INFO_KL_PROBS)
            xent_klp_row<T, G>(p, grp, i);
        else if constexpr (OP == XENT_INFO_KL_LOGITS)
            xent_klt_row<T, G>(p, grp, i);
        else
            xent_bce_row<T, G>(p, grp, i);
    }
}

/* ---- evaluation statistics ----------------------------------------------- */

/* Per-group slot of the block's corpus sums (shared memory). */
struct xent_eval_slot {
    xent_u128 nll, ent;
    unsigned long long tokens, top1, topk, nonfinite;
};

template <int TK>
__device__ __forceinline__ int64_t xent_eval_target(const void *targets,
                                                    int64_t i)
{
    if constexpr (TK == XENT_TARGET_INDEX_I32)
        return (int64_t) static_cast<const int32_t *>(targets)[i];
    else
        return static_cast<const int64_t *>(targets)[i];
}

/* 128-bit add into the accumulator: the low word's carry goes into the
 * high word. Integer atomics, so the final value is exact whatever the
 * order of the blocks. */
__device__ __forceinline__ void xent_atomic_add_u128(uint64_t *w, xent_u128 v)
{
    unsigned long long *a = reinterpret_cast<unsigned long long *>(w);
    const unsigned long long lo = (unsigned long long)v;
    const unsigned long long hi = (unsigned long long)(v >> 64);
    const unsigned long long old = atomicAdd(a, lo);
    const unsigned long long carry = old + lo < old ? 1ull : 0ull;
    if (hi + carry != 0ull)
        atomicAdd(a + 1, hi + carry);
}

/* One thread's columns of an eval row, folded chunk by chunk (all loads of
 * a chunk first). SMOOTH: also the smoothing weights w_j (1 without class
 * weights). */
template <typename T, int S, int SMOOTH>
__device__ __forceinline__ xent_eval_acc xent_eval_pass(
    const T *zrow, int rank, int64_t y, float zy, const xent_eval_params &p)
{
    const int64_t c_end = p.n_classes;
    xent_eval_acc acc;
    xent_eval_init(&acc, (int32_t)y);
    for (int64_t j = rank; j < c_end; j += (int64_t)XENT_INFO_CHUNK * S) {
        float z[XENT_INFO_CHUNK], v[XENT_INFO_CHUNK];
#pragma unroll
        for (int u = 0; u < XENT_INFO_CHUNK; u++) {
            const int64_t c = j + (int64_t)u * S;
            z[u] = -INFINITY;
            v[u] = 0.0f;
            if (c < c_end) {
                z[u] = xent_cap(xent_load_f32(zrow, c), p.softcap);
                if (SMOOTH)
                    v[u] = p.weights ? p.weights[c] : 1.0f;
            }
        }
        const int yu = xent_eval_target_lane(y, j, S, XENT_INFO_CHUNK);
        xent_eval_add_chunk(&acc, z, v, XENT_INFO_CHUNK, j, S, yu, zy, SMOOTH);
    }
    return acc;
}

template <typename T, int TK, class G>
__device__ __forceinline__ void xent_eval_row_run(const xent_eval_params &p,
                                                  const G &grp, int64_t i,
                                                  xent_eval_slot *slot)
{
    constexpr int S = G::kSize;
    const int rank = grp.rank();
    const T *zrow = static_cast<const T *>(p.logits) + i * p.ld;
    const int64_t c_end = p.n_classes;

    /* ---- target, and its logit before the pass ---- */
    int64_t y = xent_eval_target<TK>(p.targets, i);
    int kind = 0; /* 0 ok, 1 ignored, 2 bad */
    float wy = 1.0f, zy = INFINITY;
    uint32_t flag = 0u;
    if (y == p.ignore_index) {
        kind = 1;
    } else if (y < 0 || y >= c_end) {
        kind = 2;
        flag = XENT_DATA_TARGET_OUT_OF_RANGE;
    } else {
        wy = p.weights ? p.weights[y] : 1.0f;
        if (!(wy >= 0.0f)) { /* negative or NaN */
            kind = 2;
            flag = XENT_DATA_NEGATIVE_WEIGHT;
        }
    }
    if (flag && rank == 0)
        xent_info_record(p.status, flag, i);
    const int ok = kind == 0;
    if (ok)
        zy = xent_cap(xent_load_f32(zrow, y), p.softcap);
    else
        y = -1;
    const int smooth = ok && p.label_smoothing > 0.0f;

    /* ---- the one pass ---- */
    xent_eval_acc acc = smooth ? xent_eval_pass<T, S, 1>(zrow, rank, y, zy, p)
                               : xent_eval_pass<T, S, 0>(zrow, rank, y, zy, p);
    acc = xent_group_merge<G>(acc);
    const xent_eval_row r = xent_eval_finish(
        acc, ok, y, zy, wy, p.label_smoothing, 1.0f / (float)c_end, p.z_loss);
    if (rank != 0)
        return;
    const int bad = kind == 2;
    if (p.loss)
        p.loss[i] = bad ? xent_info_nan() : r.loss;
    if (p.lse)
        p.lse[i] = r.lse;
    if (p.entropy)
        p.entropy[i] = r.entropy;
    if (p.zloss)
        p.zloss[i] = bad ? xent_info_nan() : r.zloss;
    if (p.argmax)
        p.argmax[i] = r.argmax;
    if (p.rank)
        p.rank[i] = r.rank;
    if (p.correct)
        p.correct[i] = (uint8_t)r.correct;
    if (slot && ok) {
        xent_u128 a, b;
        const int fa = xent_fixed32(r.nll, &a);
        const int fb = xent_fixed32(r.entropy, &b);
        slot->nll += a;
        slot->ent += b;
        slot->tokens += 1ull;
        slot->top1 += (unsigned long long)r.correct;
        slot->topk += r.rank >= 0 && r.rank < p.top_k ? 1ull : 0ull;
        slot->nonfinite += (fa && fb) ? 0ull : 1ull;
    }
}

template <typename T, int TK, class G>
static __global__ void
__launch_bounds__(G::kThreads, XENT_INFO_MIN_THREADS_PER_SM / G::kThreads)
    xent_eval_rows_kernel(const xent_eval_params p)
{
    const G grp;
    constexpr int R = G::kRowsPerBlock;
    __shared__ xent_eval_slot slots[R];
    const int g = (int)(threadIdx.x / G::kSize); /* the group's slot */
    xent_eval_slot *slot = p.accum ? &slots[g] : nullptr;
    if (slot && grp.rank() == 0) {
        slot->nll = 0;
        slot->ent = 0;
        slot->tokens = 0ull;
        slot->top1 = 0ull;
        slot->topk = 0ull;
        slot->nonfinite = 0ull;
    }
    for (int64_t i = grp.first_row(); i < p.n_rows; i += grp.row_step())
        xent_eval_row_run<T, TK, G>(p, grp, i, slot);
    if (!p.accum)
        return;      /* uniform: a kernel parameter */
    __syncthreads(); /* every slot written */
    if (threadIdx.x == 0) {
        xent_eval_slot tot = slots[0];
#pragma unroll
        for (int k = 1; k < R; k++) {
            tot.nll += slots[k].nll;
            tot.ent += slots[k].ent;
            tot.tokens += slots[k].tokens;
            tot.top1 += slots[k].top1;
            tot.topk += slots[k].topk;
            tot.nonfinite += slots[k].nonfinite;
        }
        xent_eval_accum *acc = p.accum;
        xent_atomic_add_u128(acc->nll, tot.nll);
        xent_atomic_add_u128(acc->entropy, tot.ent);
        if (tot.tokens)
            atomicAdd(reinterpret_cast<unsigned long long *>(&acc->tokens),
                      tot.tokens);
        if (tot.top1)
            atomicAdd(reinterpret_cast<unsigned long long *>(&acc->top1),
                      tot.top1);
        if (tot.topk)
            atomicAdd(reinterpret_cast<unsigned long long *>(&acc->topk),
                      tot.topk);
        if (tot.nonfinite)
            atomicAdd(reinterpret_cast<unsigned long long *>(&acc->nonfinite),
                      tot.nonfinite);
    }
}

/* ---- launchers ------------------------------------------------------- */

template <class G> static dim3 xent_info_grid(int64_t n_rows, int64_t cap)
{
    int64_t blocks = (n_rows + G::kRowsPerBlock - 1) / G::kRowsPerBlock;
    if (blocks > cap)
        blocks = cap;
    if (blocks < 1)
        blocks = 1;
    return dim3((unsigned)blocks);
}

template <typename T, class G>
static cudaError_t xent_launch_info_t(const xent_info_params *p, cudaStream_t s)
{
    const dim3 grid = xent_info_grid<G>(p->n_rows, XENT_INFO_MAX_BLOCKS);
    switch (p->op) {
    case XENT_INFO_ENTROPY:
        xent_info_rows_kernel<T, XENT_INFO_ENTROPY, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_INFO_KL_PROBS:
        xent_info_rows_kernel<T, XENT_INFO_KL_PROBS, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_INFO_KL_LOGITS:
        xent_info_rows_kernel<T, XENT_INFO_KL_LOGITS, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_INFO_BCE:
        xent_info_rows_kernel<T, XENT_INFO_BCE, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <class G>
static cudaError_t xent_launch_info(const xent_info_params *p, cudaStream_t s)
{
    switch (p->logits_dtype) {
    case XENT_DTYPE_F32: return xent_launch_info_t<float, G>(p, s);
    case XENT_DTYPE_F16: return xent_launch_info_t<__half, G>(p, s);
    case XENT_DTYPE_BF16: return xent_launch_info_t<__nv_bfloat16, G>(p, s);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" int xent_cuda_info_rows(const xent_info_params *p,
                                   xent_variant variant,
                                   struct CUstream_st *stream)
{
    if (!p)
        return (int)cudaErrorInvalidValue;
    if (p->n_rows <= 0)
        return (int)cudaSuccess;
    cudaStream_t s = (cudaStream_t)stream;
    switch (variant) {
    case XENT_VARIANT_WARP_ROW:
        return (int)xent_launch_info<xent_info_warp_group>(p, s);
    case XENT_VARIANT_BLOCK_ROW:
        return (int)xent_launch_info<xent_info_block_group>(p, s);
    default: return (int)cudaErrorInvalidValue;
    }
}

template <typename T, class G>
static cudaError_t xent_launch_eval_t(const xent_eval_params *p, cudaStream_t s)
{
    int64_t cap = XENT_INFO_MAX_BLOCKS;
    if (p->accum && p->max_blocks > 0)
        cap = p->max_blocks;
    const dim3 grid = xent_info_grid<G>(p->n_rows, cap);
    switch (p->target_type) {
    case XENT_TARGET_INDEX_I32:
        xent_eval_rows_kernel<T, XENT_TARGET_INDEX_I32, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    case XENT_TARGET_INDEX_I64:
        xent_eval_rows_kernel<T, XENT_TARGET_INDEX_I64, G>
            <<<grid, G::kThreads, 0, s>>>(*p);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <class G>
static cudaError_t xent_launch_eval(const xent_eval_params *p, cudaStream_t s)
{
    switch (p->logits_dtype) {
    case XENT_DTYPE_F32: return xent_launch_eval_t<float, G>(p, s);
    case XENT_DTYPE_F16: return xent_launch_eval_t<__half, G>(p, s);
    case XENT_DTYPE_BF16: return xent_launch_eval_t<__nv_bfloat16, G>(p, s);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" int xent_cuda_eval_rows(const xent_eval_params *p,
                                   xent_variant variant,
                                   struct CUstream_st *stream)
{
    if (!p)
        return (int)cudaErrorInvalidValue;
    if (p->n_rows <= 0)
        return (int)cudaSuccess;
    cudaStream_t s = (cudaStream_t)stream;
    switch (variant) {
    case XENT_VARIANT_WARP_ROW:
        return (int)xent_launch_eval<xent_info_warp_group>(p, s);
    case XENT_VARIANT_BLOCK_ROW:
        return (int)xent_launch_eval<xent_info_block_group>(p, s);
    default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int xent_cuda_eval_accum_reset(xent_eval_accum *d_accum,
                                          struct CUstream_st *stream)
{
    if (!d_accum)
        return (int)cudaErrorInvalidValue;
    return (int)cudaMemsetAsync(d_accum, 0, sizeof *d_accum,
                                (cudaStream_t)stream);
}
