/*
 * bench.h - the timing harness behind `xent bench` (and any tool that times
 * xent): wall-clock and CUDA-event timing with a warm-up and the median of
 * many runs, copy-bandwidth measurement (the physical limit a memory-bound
 * kernel is judged against), L2/L3-defeating input rotation, cache sizes and
 * a few host helpers (threaded memcpy, fp16/bf16 rounding, test data).
 *
 * Private to the xent tools: not part of the public libxent API. C11; the
 * CUDA calls go through the CUDA runtime's C API.
 *
 * Methodology (the numbers in bench/RESULTS.md come from here)
 *  - Every timed function is run `warmup` times untimed first.
 *  - GPU: each run is bracketed by its own pair of CUDA events; runs are
 *    queued back to back in batches of up to XENT_BENCH_BATCH without host
 *    synchronization in between, so a run's time is the GPU's time from its
 *    start event to its end event and excludes the host's launch overhead
 *    whenever the queue stays ahead of the GPU (it does for anything longer
 *    than a few microseconds). The result is the median over the runs.
 *  - CPU: CLOCK_MONOTONIC around each (synchronous) run; the median.
 *  - Stopping: at least min_reps runs, then stop when budget_s seconds of
 *    timed runs have accumulated or max_reps is reached; fixed_reps > 0 runs
 *    exactly that many.
 *  - Inputs rotate: run k uses copy k % n_copies of the inputs, with
 *    enough copies (xent_bench_rotation) that the working set is at least
 *    4x the last-level cache, so no run finds its inputs in cache.
 *  - Copy bandwidth counts read + write bytes: 2 * bytes / time of a large
 *    device-to-device cudaMemcpyAsync (GPU) or a threaded memcpy (CPU).
 *
 * Return values: functions returning int give 0 on success, a positive
 * value returned by the timed function (an xent_status) when it failed, or
 * the negated cudaError_t of a failing CUDA call.
 */
#ifndef XENT_BENCH_H
#define XENT_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st; /* cudaStream_t */

/* Most runs queued between two host synchronizations (GPU timing). */
#define XENT_BENCH_BATCH 32

/* Seconds on CLOCK_MONOTONIC. */
double xent_bench_now(void);

/* Median of v[0, n) (sorts v in place); 0 when n == 0. */
double xent_bench_median(double *v, int n);

/* One timed run: perform iteration `iter` (0, 1, 2, ... over warm-up and
 * timed runs; use input copy iter % n_copies). Return 0 or an error code
 * (> 0) that stops the measurement. */
typedef int (*xent_bench_fn)(void *ctx, int64_t iter);

typedef struct xent_bench_opts {
    int warmup;      /* untimed runs first */
    int min_reps;    /* at least this many timed runs */
    int max_reps;    /* at most this many */
    double budget_s; /* stop after this many seconds of timed runs once
                        min_reps are done */
    int fixed_reps;  /* > 0: exactly this many timed runs */
} xent_bench_opts;

/* {warmup 3, min_reps 20, max_reps 1000, budget_s 1.0, fixed_reps 0}. */
xent_bench_opts xent_bench_opts_default(void);

typedef struct xent_bench_stats {
    int reps;
    double median_us, min_us, max_us, mean_us;
} xent_bench_stats;

/* Times fn on the host clock (fn must be synchronous). */
int xent_bench_time_cpu(xent_bench_fn fn, void *ctx,
                        const xent_bench_opts *opts, xent_bench_stats *out);

/* Times fn with CUDA events on `stream` (fn must enqueue its work on that
 * stream). The current device must be the stream's. */
int xent_bench_time_gpu(struct CUstream_st *stream, xent_bench_fn fn, void *ctx,
                        const xent_bench_opts *opts, xent_bench_stats *out);

/* Device-to-device copy bandwidth in GB/s (read + write counted) of
 * cudaMemcpyAsync over `bytes` bytes on stream: 2 warm-up copies, the median
 * of `reps`. Allocates two device buffers of `bytes` and frees them. */
int xent_bench_copy_gbps_gpu(struct CUstream_st *stream, size_t bytes, int reps,
                             double *gbps);

/* Host memcpy bandwidth in GB/s (read + write counted) over `bytes` bytes
 * with `threads` threads (0: every core): 1 warm-up copy, the median of
 * `reps`. Returns 0, or 1 when the buffers cannot be allocated. */
int xent_bench_copy_gbps_cpu(size_t bytes, int threads, int reps, double *gbps);

/* memcpy split over `threads` threads (1 or less: the calling thread only);
 * pieces below 4 MiB are not worth a thread and run on the caller. */
void xent_bench_parallel_memcpy(void *dst, const void *src, size_t bytes,
                                int threads);

/* L2 size of CUDA device `device` in bytes (0 on error). */
size_t xent_bench_l2_bytes(int device);

/* Last-level cache of the host in bytes (sysfs / sysconf; 32 MiB when
 * unknown). */
size_t xent_bench_llc_bytes(void);

/* Usable cores. */
int xent_bench_cpu_count(void);

/* Copies of the inputs to rotate over: 1 when one copy (copy_bytes) is at
 * least 4 * cache_bytes, else enough copies for 4 * cache_bytes, but no
 * more than fit in budget_bytes (at least 1). */
int xent_bench_rotation(size_t copy_bytes, size_t cache_bytes,
                        size_t budget_bytes);

/* Host model name ("Intel(R) Xeon(R) ..." from /proc/cpuinfo) into buf;
 * "cpu" when unknown. Returns buf. */
char *xent_bench_cpu_name(char *buf, size_t len);

/* ---- data ------------------------------------------------------------ */

/* A small deterministic generator (splitmix64). */
typedef struct xent_bench_rng {
    uint64_t s;
} xent_bench_rng;

void xent_bench_rng_seed(xent_bench_rng *r, uint64_t seed);
uint64_t xent_bench_rng_next(xent_bench_rng *r);
double xent_bench_rng_uniform(xent_bench_rng *r); /* [0, 1) */
double xent_bench_rng_normal(xent_bench_rng *r);

/* Peaked logits for rows [n, ld]: every column ~ normal(0, 2), then 1 to 3
 * columns per row (the first made positive) scaled by 20, so the softmax is
 * far from uniform; columns [c, ld) are set to pad (NaN shows stray
 * reads). */
void xent_bench_fill_logits(xent_bench_rng *r, int64_t n, int64_t c, int64_t ld,
                            float *z, float pad);

/* Round-to-nearest-even float -> bfloat16 / IEEE half bits (NaN stays NaN,
 * overflow gives infinity, subnormals handled). */
uint16_t xent_bench_f32_to_bf16(float f);
uint16_t xent_bench_f32_to_f16(float f);
float xent_bench_bf16_to_f32(uint16_t h);
float xent_bench_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* XENT_BENCH_H */
