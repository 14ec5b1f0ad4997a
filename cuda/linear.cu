/*
 * linear.cu - elementwise helpers of the fused linear + cross-entropy
 * (host/linear.c): bias broadcast, deterministic column sums for dbias,
 * fp32 -> bf16 rounding of the logits' gradient. Thin launchers as
 * everywhere in cuda/: compute the shape, launch on the stream, return
 * cudaGetLastError().
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "xent_bridge.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 8;

__global__ void bias_fill_kernel(float *__restrict__ dst, int64_t total,
                                 int64_t n_classes,
                                 const void *__restrict__ bias, int bf16)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += stride) {
        const int64_t c = i % n_classes;
        dst[i] = bf16 ? __bfloat162float(
                            static_cast<const __nv_bfloat16 *>(bias)[c])
                      : static_cast<const float *>(bias)[c];
    }
}

/* One thread per column; consecutive threads read consecutive columns of
 * a row (coalesced). The row order of the sum is fixed. */
__global__ void colsum_kernel(const float *__restrict__ g, int64_t n_rows,
                              int64_t n_classes, float *__restrict__ acc,
                              int accumulate)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
         c < n_classes; c += stride) {
        float s = accumulate ? acc[c] : 0.0f;
        for (int64_t r = 0; r < n_rows; r++)
            s += g[r * n_classes + c];
        acc[c] = s;
    }
}

__global__ void f32_to_bf16_kernel(const float *__restrict__ src,
                                   __nv_bfloat16 *__restrict__ dst, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride)
        dst[i] = __float2bfloat16_rn(src[i]);
}

unsigned blocks_for(int64_t n)
{
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b < 1)
        b = 1;
    if (b > kMaxBlocks)
        b = kMaxBlocks;
    return (unsigned)b;
}

} // namespace

extern "C" int xent_cuda_linear_bias_fill(float *d_dst, int64_t n_rows,
                                          int64_t n_classes,
                                          const void *d_bias,
                                          xent_dtype bias_dtype,
                                          cudaStream_t stream)
{
    const int64_t total = n_rows * n_classes;
    if (total <= 0)
        return (int)cudaSuccess;
    bias_fill_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        d_dst, total, n_classes, d_bias, bias_dtype == XENT_DTYPE_BF16);
    return (int)cudaGetLastError();
}

extern "C" int xent_cuda_linear_colsum(const float *d_g, int64_t n_rows,
                                       int64_t n_classes, float *d_acc,
                                       int accumulate, cudaStream_t stream)
{
    if (n_classes <= 0)
        return (int)cudaSuccess;
    colsum_kernel<<<blocks_for(n_classes), kThreads, 0, stream>>>(
        d_g, n_rows, n_classes, d_acc, accumulate);
    return (int)cudaGetLastError();
}

extern "C" int xent_cuda_linear_f32_to_bf16(const float *d_src,
                                            uint16_t *d_dst, int64_t n,
                                            cudaStream_t stream)
{
    if (n <= 0)
        return (int)cudaSuccess;
    f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        d_src, reinterpret_cast<__nv_bfloat16 *>(d_dst), n);
    return (int)cudaGetLastError();
}
