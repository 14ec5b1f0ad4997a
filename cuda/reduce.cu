/*
 * reduce.cu - the fixed-order fp64 reductions around the row kernels, and
 * the reset of the device status word.
 *
 * What it computes:
 *   xent_cuda_target_weight_sum  *d_out = sum_i w_{y_i} over the rows whose
 *       class-index target is neither ignore_index nor outside [0, C)
 *       (w = 1 without class weights): PyTorch's weighted-mean denominator.
 *       (Probability targets count 1 per row; the host divides those by N
 *       itself and does not call this.)
 *   xent_cuda_reduce_rows        *d_out = (float)(sum_i rows[i] / denom),
 *       denom = *d_denom or host_denom; a zero denominator gives
 *       empty_value.
 *   xent_cuda_status_reset       flags = 0, first_row = UINT64_MAX.
 *
 * Work mapping (both sums): stage 1 cuts the n rows into contiguous ranges
 * of `per` rows, per = max(ceil(n / XENT_REDUCE_PARTS), XENT_REDUCE_THREADS),
 * one block per range (at most XENT_REDUCE_PARTS blocks); thread t adds the
 * rows lo + t, lo + t + XENT_REDUCE_THREADS, ... in fp64, then the block
 * adds its threads' sums with a fixed butterfly / warp-order tree
 * (common.cuh) into d_partials[b]. Stage 2, one block of XENT_REDUCE_PARTS
 * threads, adds the partials (thread t holds partial t) with the same tree
 * and writes the result. The split depends only on n, so the result is
 * bitwise the same run after run; there are no atomics.
 *
 * Memory traffic: stage 1 reads the n targets (plus one cached class
 * weight each) or the n float rows once; stage 2 reads at most
 * XENT_REDUCE_PARTS doubles. The two stages are ordered by the stream, so
 * d_partials needs no synchronization; no host reads, no allocation: the
 * launches can be captured in a CUDA graph.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "common.cuh"
#include "xent_bridge.h"

/* ---- launch shape ----------------------------------------------------- */

#define XENT_REDUCE_THREADS 256 /* stage 1 block size */
/* stage 2: one thread per partial */
#define XENT_FINISH_THREADS XENT_REDUCE_PARTS

static_assert(XENT_FINISH_THREADS % 32 == 0 && XENT_FINISH_THREADS <= 1024,
              "stage 2 holds every partial in one block");

/* ---- device helpers --------------------------------------------------- */

/* Row i's contribution to the MEAN denominator. TK: xent_target_type. */
template <int TK>
struct xent_target_weight_src {
    const void *targets; /* [n] int32 / int64 */
    const float *weights; /* [C] or NULL */
    int64_t n_classes;
    int64_t ignore_index;

    __device__ __forceinline__ double operator()(int64_t i) const
    {
        if constexpr (TK == XENT_TARGET_PROBS_F32) {
            return 1.0;
        } else {
            int64_t y;
            if constexpr (TK == XENT_TARGET_INDEX_I32)
                y = (int64_t)static_cast<const int32_t *>(targets)[i];
            else
                y = static_cast<const int64_t *>(targets)[i];
            if (y == ignore_index || y < 0 || y >= n_classes)
                return 0.0; /* never index with an out-of-range y */
            return weights ? (double)weights[y] : 1.0;
        }
    }
};

/* Row i's value for xent_cuda_reduce_rows. */
struct xent_rows_src {
    const float *rows; /* [n] */

    __device__ __forceinline__ double operator()(int64_t i) const
    {
        return (double)rows[i];
    }
};

/* Stage 2: the sum of the n_parts (<= XENT_FINISH_THREADS) partials, in
 * the fixed tree order; every thread gets the result. Every thread of the
 * block must call. */
__device__ __forceinline__ double xent_sum_partials(const double *partials,
                                                    int n_parts)
{
    const int t = (int)threadIdx.x;
    return xent_block_sum<XENT_FINISH_THREADS>(t < n_parts ? partials[t]
                                                           : 0.0);
}

/* ---- kernels ---------------------------------------------------------- */

/* Stage 1: block b sums rows [b * per, min(n, (b + 1) * per)). */
template <class Src>
static __global__ void __launch_bounds__(XENT_REDUCE_THREADS)
    xent_partial_sum_kernel(Src src, int64_t n, int64_t per,
                            double *partials)
{
    const int64_t lo = (int64_t)blockIdx.x * per;
    const int64_t hi = n - lo < per ? n : lo + per;
    double acc = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += XENT_REDUCE_THREADS)
        acc += src(i);
    acc = xent_block_sum<XENT_REDUCE_THREADS>(acc); /* all threads */
    if (threadIdx.x == 0)
        partials[blockIdx.x] = acc;
}

/* Stage 2 of xent_cuda_target_weight_sum: *out = the sum. */
static __global__ void __launch_bounds__(XENT_FINISH_THREADS)
    xent_weight_finish_kernel(const double *partials, int n_parts,
                              double *out)
{
    const double sum = xent_sum_partials(partials, n_parts);
    if (threadIdx.x == 0)
        *out = sum;
}

/* Stage 2 of xent_cuda_reduce_rows: *out = (float)(sum / denom), or
 * empty_value when denom is 0. d_denom was written earlier on the stream. */
static __global__ void __launch_bounds__(XENT_FINISH_THREADS)
    xent_rows_finish_kernel(const double *partials, int n_parts,
                            const double *d_denom, double host_denom,
                            float empty_value, float *out)
{
    const double sum = xent_sum_partials(partials, n_parts);
    if (threadIdx.x == 0) {
        const double denom = d_denom ? *d_denom : host_denom;
        *out = denom == 0.0 ? empty_value : (float)(sum / denom);
    }
}

static __global__ void xent_status_reset_kernel(xent_status_word *st)
{
    st->flags = 0u;
    st->pad_ = 0u;
    st->first_row = UINT64_MAX;
}

/* ---- launchers -------------------------------------------------------- */

/* Rows per stage-1 block for n rows; depends only on n. */
static int64_t xent_reduce_per(int64_t n)
{
    int64_t per = (n + XENT_REDUCE_PARTS - 1) / XENT_REDUCE_PARTS;
    return per < XENT_REDUCE_THREADS ? XENT_REDUCE_THREADS : per;
}

/* Stage 1 over n > 0 rows; returns the number of partials written. */
template <class Src>
static int xent_launch_partials(Src src, int64_t n, double *d_partials,
                                cudaStream_t s)
{
    const int64_t per = xent_reduce_per(n);
    const int64_t parts = (n + per - 1) / per; /* <= XENT_REDUCE_PARTS */
    xent_partial_sum_kernel<Src>
        <<<(unsigned)parts, XENT_REDUCE_THREADS, 0, s>>>(src, n, per,
                                                         d_partials);
    return (int)parts;
}

template <int TK>
static int xent_launch_weight_partials(const xent_ce_params *p,
                                       double *d_partials, cudaStream_t s)
{
    xent_target_weight_src<TK> src;
    src.targets = p->targets;
    src.weights = p->weights;
    src.n_classes = p->n_classes;
    src.ignore_index = p->ignore_index;
    return xent_launch_partials(src, p->n_rows, d_partials, s);
}

extern "C" int xent_cuda_target_weight_sum(const xent_ce_params *p,
                                           double *d_partials, double *d_out,
                                           struct CUstream_st *stream)
{
    if (!p)
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    int parts = 0;
    if (p->n_rows > 0) {
        switch (p->target_type) {
        case XENT_TARGET_INDEX_I32:
            parts = xent_launch_weight_partials<XENT_TARGET_INDEX_I32>(
                p, d_partials, s);
            break;
        case XENT_TARGET_INDEX_I64:
            parts = xent_launch_weight_partials<XENT_TARGET_INDEX_I64>(
                p, d_partials, s);
            break;
        case XENT_TARGET_PROBS_F32:
            parts = xent_launch_weight_partials<XENT_TARGET_PROBS_F32>(
                p, d_partials, s);
            break;
        default: return (int)cudaErrorInvalidValue;
        }
    }
    /* n_rows == 0: no partials, the sum is 0 */
    xent_weight_finish_kernel<<<1, XENT_FINISH_THREADS, 0, s>>>(d_partials,
                                                                parts, d_out);
    return (int)cudaGetLastError();
}

extern "C" int xent_cuda_reduce_rows(const float *d_rows, int64_t n,
                                     const double *d_denom, double host_denom,
                                     float empty_value, double *d_partials,
                                     float *d_out, struct CUstream_st *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    int parts = 0;
    if (n > 0) {
        xent_rows_src src;
        src.rows = d_rows;
        parts = xent_launch_partials(src, n, d_partials, s);
    }
    xent_rows_finish_kernel<<<1, XENT_FINISH_THREADS, 0, s>>>(
        d_partials, parts, d_denom, host_denom, empty_value, d_out);
    return (int)cudaGetLastError();
}

extern "C" int xent_cuda_status_reset(xent_status_word *d_status,
                                      struct CUstream_st *stream)
{
    if (!d_status)
        return (int)cudaErrorInvalidValue;
    xent_status_reset_kernel<<<1, 1, 0, (cudaStream_t)stream>>>(d_status);
    return (int)cudaGetLastError();
}
