/*
 * common.cuh - device helpers shared by the kernels in cuda/.
 *
 *  - element access: one logit loaded as float from float / __half /
 *    __nv_bfloat16; one gradient value stored as float or in the logits'
 *    dtype (round to nearest even) with a streaming store;
 *  - deterministic reductions of the online-softmax state xent_row_acc
 *    (cuda/xent_bridge.h) over a warp and over a block, and of fp64 sums;
 *  - row "groups": the set of threads that cooperates on one row (a warp or
 *    a whole block), so a row routine can be written once and instantiated
 *    for every tier.
 *
 * Determinism. xent_acc_merge(r, o) is not bitwise symmetric in (r, o)
 * (the order of its floating-point additions depends on the argument
 * order). In the warp butterfly below, at step k the two partners lane and
 * lane ^ k both compute merge(state of the lower lane, state of the upper
 * lane), so they get bitwise the same result. The whole reduction is a
 * fixed binary tree over lanes 0..31, and every lane ends with bitwise the
 * same state. Block reductions run the warp butterfly, then warp 0
 * merges the per-warp states in warp order with the same butterfly. Nothing
 * depends on timing, so results are the same run after run.
 *
 * Every __shfl_xor_sync here uses the full mask: callers must execute these
 * helpers with all 32 lanes of the warp, and the block helpers with every
 * thread of the block (they contain __syncthreads).
 */
#ifndef XENT_COMMON_CUH
#define XENT_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "xent_bridge.h"

#define XENT_WARP_SIZE 32
#define XENT_FULL_MASK 0xffffffffu

/* ---- element access ---------------------------------------------------
 * Plain loads (ld.global, no __ldg / .nc): the logits may be overwritten by
 * the gradient in the same kernel (in-place), and the read-only path is not
 * coherent with writes made during the kernel. */

__device__ __forceinline__ float xent_load_f32(const float *p, int64_t i)
{
    return p[i];
}

__device__ __forceinline__ float xent_load_f32(const __half *p, int64_t i)
{
    return __half2float(p[i]);
}

__device__ __forceinline__ float xent_load_f32(const __nv_bfloat16 *p,
                                               int64_t i)
{
    return __bfloat162float(p[i]);
}

/* Streaming stores (st.global.cs): the gradient is written once and not
 * read again by this kernel. */
__device__ __forceinline__ void xent_store_cs(float *p, int64_t i, float v)
{
    __stcs(p + i, v);
}

__device__ __forceinline__ void xent_store_cs(__half *p, int64_t i, float v)
{
    __stcs(p + i, __float2half_rn(v));
}

__device__ __forceinline__ void xent_store_cs(__nv_bfloat16 *p, int64_t i,
                                              float v)
{
    __stcs(p + i, __float2bfloat16_rn(v));
}

/* One gradient value at element i of grad ([n_rows, ld]): float when
 * grad_f32 is set, else the logits' dtype T. grad_f32 is uniform over the
 * launch, so the branch does not diverge. */
template <typename T>
__device__ __forceinline__ void xent_store_grad(void *grad, int64_t i,
                                                float v, int grad_f32)
{
    if (grad_f32)
        xent_store_cs(static_cast<float *>(grad), i, v);
    else
        xent_store_cs(static_cast<T *>(grad), i, v);
}

/* ---- warp reductions --------------------------------------------------- */

__device__ __forceinline__ xent_row_acc xent_shfl_xor_acc(xent_row_acc a,
                                                          int k)
{
    xent_row_acc o;
    o.m = __shfl_xor_sync(XENT_FULL_MASK, a.m, k);
    o.s = __shfl_xor_sync(XENT_FULL_MASK, a.s, k);
    o.a = __shfl_xor_sync(XENT_FULL_MASK, a.a, k);
    o.v = __shfl_xor_sync(XENT_FULL_MASK, a.v, k);
    o.cs = 0.0f; /* callers fold before shuffling (xent_warp_merge) */
    o.ca = 0.0f;
    o.cv = 0.0f;
    return o;
}

/* Merge the 32 lanes' states; every lane returns bitwise the same state
 * (see the header comment for the fixed merge order). All 32 lanes. */
__device__ __forceinline__ xent_row_acc xent_warp_merge(xent_row_acc a)
{
    const int lane = (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    xent_acc_fold(&a); /* the shuffles carry m, s, a and v only */
#pragma unroll
    for (int k = 1; k < XENT_WARP_SIZE; k <<= 1) {
        xent_row_acc o = xent_shfl_xor_acc(a, k);
        /* the upper lane of the pair swaps so both compute
         * merge(lower, upper) */
        if (lane & k) {
            xent_row_acc t = a;
            a = o;
            o = t;
        }
        xent_acc_merge(&a, o);
    }
    return a;
}

/* Sum over the warp in fp64; fp addition is commutative, so both partners
 * of each butterfly step get the same bits and every lane returns the same
 * sum. All 32 lanes. */
__device__ __forceinline__ double xent_warp_sum(double x)
{
#pragma unroll
    for (int k = 1; k < XENT_WARP_SIZE; k <<= 1)
        x += __shfl_xor_sync(XENT_FULL_MASK, x, k);
    return x;
}

/* ---- block reductions ---------------------------------------------------
 * NT threads (a multiple of 32, at most 1024), every one of which must call.
 * Two barriers: the first publishes the per-warp states, the second the
 * result. Back-to-back calls are safe with these two barriers alone: a
 * call's slot sh[w] is rewritten only after its readers (warp 0) passed the
 * previous call's second barrier, and the result slot only after every
 * thread read it (before reaching the next call's first barrier). */

template <int NT>
__device__ __forceinline__ xent_row_acc xent_block_merge(xent_row_acc a)
{
    static_assert(NT % XENT_WARP_SIZE == 0 && NT <= 1024, "block size");
    constexpr int NW = NT / XENT_WARP_SIZE;
    __shared__ xent_row_acc sh[NW + 1];
    const int lane = (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    const int warp = (int)(threadIdx.x / XENT_WARP_SIZE);

    a = xent_warp_merge(a);
    if (lane == 0)
        sh[warp] = a;
    __syncthreads();
    if (warp == 0) {
        xent_row_acc r;
        if (lane < NW) {
            r = sh[lane];
        } else {
            xent_acc_init(&r); /* the identity of xent_acc_merge */
        }
        r = xent_warp_merge(r);
        if (lane == 0)
            sh[NW] = r;
    }
    __syncthreads();
    return sh[NW];
}

/* fp64 sum over the block; the result is returned to every thread. */
template <int NT>
__device__ __forceinline__ double xent_block_sum(double x)
{
    static_assert(NT % XENT_WARP_SIZE == 0 && NT <= 1024, "block size");
    constexpr int NW = NT / XENT_WARP_SIZE;
    __shared__ double sh[NW + 1];
    const int lane = (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    const int warp = (int)(threadIdx.x / XENT_WARP_SIZE);

    x = xent_warp_sum(x);
    if (lane == 0)
        sh[warp] = x;
    __syncthreads();
    if (warp == 0) {
        double r = lane < NW ? sh[lane] : 0.0;
        r = xent_warp_sum(r);
        if (lane == 0)
            sh[NW] = r;
    }
    __syncthreads();
    return sh[NW];
}

/* ---- row groups ---------------------------------------------------------
 * A group is the set of threads that owns one row at a time. It says which
 * rows a thread's group visits (a grid-stride loop over rows, 64-bit), the
 * thread's rank and the group size (columns are strided by the size), how
 * to merge row states over the group and how to order memory within it.
 *
 *   kThreads       threads per block (the launch's block size)
 *   kSize          threads per row
 *   kRowsPerBlock  rows a block works on at once
 *
 * merge() and sync() must be reached by every thread of the group (for
 * the block group: by every thread of the block). */

/* One warp per row, kThreads / 32 rows per block. */
template <int NT>
struct xent_warp_group {
    static constexpr int kThreads = NT;
    static constexpr int kSize = XENT_WARP_SIZE;
    static constexpr int kRowsPerBlock = NT / XENT_WARP_SIZE;

    __device__ __forceinline__ int rank() const
    {
        return (int)(threadIdx.x & (XENT_WARP_SIZE - 1));
    }
    __device__ __forceinline__ int64_t first_row() const
    {
        return (int64_t)blockIdx.x * kRowsPerBlock +
               (int64_t)(threadIdx.x / XENT_WARP_SIZE);
    }
    __device__ __forceinline__ int64_t row_step() const
    {
        return (int64_t)gridDim.x * kRowsPerBlock;
    }
    __device__ __forceinline__ xent_row_acc merge(xent_row_acc a) const
    {
        return xent_warp_merge(a);
    }
    /* orders the lanes' memory accesses (loads before, stores after) */
    __device__ __forceinline__ void sync() const { __syncwarp(); }
};

/* One block of NT threads per row. */
template <int NT>
struct xent_block_group {
    static constexpr int kThreads = NT;
    static constexpr int kSize = NT;
    static constexpr int kRowsPerBlock = 1;

    __device__ __forceinline__ int rank() const { return (int)threadIdx.x; }
    __device__ __forceinline__ int64_t first_row() const
    {
        return (int64_t)blockIdx.x;
    }
    __device__ __forceinline__ int64_t row_step() const
    {
        return (int64_t)gridDim.x;
    }
    __device__ __forceinline__ xent_row_acc merge(xent_row_acc a) const
    {
        return xent_block_merge<NT>(a);
    }
    __device__ __forceinline__ void sync() const { __syncthreads(); }
};

#endif /* XENT_COMMON_CUH */
