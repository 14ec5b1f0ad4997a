/*
 * bench.c - the timing harness (see bench.h for the methodology).
 *
 * Host timing uses CLOCK_MONOTONIC; GPU timing uses one pair of CUDA events
 * per run, queued in batches, so the host's launch overhead is not counted
 * while the GPU has work queued. Nothing here prints.
 */
#define _GNU_SOURCE /* sysconf(_SC_LEVEL3_CACHE_SIZE), sched_getaffinity */

#include "bench.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

/* ------------------------------------------------------------------ */
/* Clocks and statistics                                               */
/* ------------------------------------------------------------------ */

double xent_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double xent_bench_median(double *v, int n)
{
    if (n <= 0)
        return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

xent_bench_opts xent_bench_opts_default(void)
{
    xent_bench_opts o = {3, 20, 1000, 1.0, 0};
    return o;
}

static void fill_stats(double *us, int n, xent_bench_stats *out)
{
    double sum = 0.0, lo = INFINITY, hi = 0.0;
    for (int i = 0; i < n; i++) {
        sum += us[i];
        lo = us[i] < lo ? us[i] : lo;
        hi = us[i] > hi ? us[i] : hi;
    }
    out->reps = n;
    out->mean_us = n ? sum / n : 0.0;
    out->min_us = n ? lo : 0.0;
    out->max_us = hi;
    out->median_us = xent_bench_median(us, n);
}

/* Runs to do in total (fixed or max), at least 1. */
static int target_reps(const xent_bench_opts *o)
{
    int t = o->fixed_reps > 0 ? o->fixed_reps : o->max_reps;
    return t < 1 ? 1 : t;
}

static int keep_going(const xent_bench_opts *o, int reps, double timed_s)
{
    if (reps >= target_reps(o))
        return 0;
    if (o->fixed_reps > 0)
        return 1;
    return reps < o->min_reps || timed_s < o->budget_s;
}

int xent_bench_time_cpu(xent_bench_fn fn, void *ctx,
                        const xent_bench_opts *opts, xent_bench_stats *out)
{
    xent_bench_opts o = opts ? *opts : xent_bench_opts_default();
    int64_t iter = 0;
    for (int i = 0; i < o.warmup; i++) {
        int rc = fn(ctx, iter++);
        if (rc)
            return rc;
    }
    int cap = target_reps(&o);
    double *us = malloc((size_t)cap * sizeof *us);
    if (!us)
        return 1;
    int reps = 0;
    double timed = 0.0;
    while (keep_going(&o, reps, timed)) {
        double t0 = xent_bench_now();
        int rc = fn(ctx, iter++);
        double dt = xent_bench_now() - t0;
        if (rc) {
            free(us);
            return rc;
        }
        us[reps++] = dt * 1e6;
        timed += dt;
    }
    fill_stats(us, reps, out);
    free(us);
    return 0;
}

int xent_bench_time_gpu(struct CUstream_st *stream, xent_bench_fn fn, void *ctx,
                        const xent_bench_opts *opts, xent_bench_stats *out)
{
    xent_bench_opts o = opts ? *opts : xent_bench_opts_default();
    cudaStream_t s = (cudaStream_t)stream;
    cudaEvent_t ev[2 * XENT_BENCH_BATCH];
    double *us = NULL;
    int n_ev = 0, rc = 0, reps = 0;
    double timed = 0.0;
    cudaError_t e = cudaSuccess;
    for (; n_ev < 2 * XENT_BENCH_BATCH && e == cudaSuccess; n_ev++)
        e = cudaEventCreate(&ev[n_ev]);
    if (e != cudaSuccess) {
        n_ev--;
        rc = -(int)e;
        goto done;
    }
    int64_t iter = 0;
    for (int i = 0; i < o.warmup && rc == 0; i++)
        rc = fn(ctx, iter++);
    if (rc)
        goto done;
    e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        rc = -(int)e;
        goto done;
    }

    const int cap = target_reps(&o);
    us = malloc((size_t)cap * sizeof *us);
    if (!us) {
        rc = 1;
        goto done;
    }
    while (rc == 0 && keep_going(&o, reps, timed)) {
        /* batch size: what is left of the minimum, then what the budget
         * is expected to take at the median so far */
        int b = XENT_BENCH_BATCH;
        if (o.fixed_reps <= 0 && reps < o.min_reps)
            b = o.min_reps - reps;
        else if (o.fixed_reps <= 0 && reps > 0) {
            double per = timed / reps;
            double want = per > 0.0 ? (o.budget_s - timed) / per : b;
            b = want < 1.0 ? 1 : (want < b ? (int)want + 1 : b);
        }
        if (b > XENT_BENCH_BATCH)
            b = XENT_BENCH_BATCH;
        if (b > cap - reps)
            b = cap - reps;
        for (int i = 0; i < b && rc == 0; i++) {
            e = cudaEventRecord(ev[2 * i], s);
            if (e == cudaSuccess) {
                rc = fn(ctx, iter++);
                if (rc == 0)
                    e = cudaEventRecord(ev[2 * i + 1], s);
            }
            if (e != cudaSuccess)
                rc = -(int)e;
        }
        if (rc == 0)
            e = cudaEventSynchronize(ev[2 * b - 1]);
        for (int i = 0; rc == 0 && e == cudaSuccess && i < b; i++) {
            float ms = 0.0f;
            e = cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]);
            us[reps++] = 1e3 * (double)ms;
            timed += 1e-3 * (double)ms;
        }
        if (rc == 0 && e != cudaSuccess)
            rc = -(int)e;
    }
    if (rc == 0)
        fill_stats(us, reps, out);
done:
    free(us);
    (void)cudaStreamSynchronize(s);
    for (int i = 0; i < n_ev; i++)
        (void)cudaEventDestroy(ev[i]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Copy bandwidth                                                       */
/* ------------------------------------------------------------------ */

typedef struct gpu_copy_ctx {
    void *dst;
    const void *src;
    size_t bytes;
    cudaStream_t s;
} gpu_copy_ctx;

static int gpu_copy_once(void *ctx, int64_t iter)
{
    (void)iter;
    gpu_copy_ctx *c = ctx;
    cudaError_t e = cudaMemcpyAsync(c->dst, c->src, c->bytes,
                                    cudaMemcpyDeviceToDevice, c->s);
    return e == cudaSuccess ? 0 : (int)e;
}

int xent_bench_copy_gbps_gpu(struct CUstream_st *stream, size_t bytes, int reps,
                             double *gbps)
{
    void *a = NULL, *b = NULL;
    cudaError_t e = cudaMalloc(&a, bytes);
    if (e == cudaSuccess)
        e = cudaMalloc(&b, bytes);
    /* not a timed run: contents just must not be left uninitialized */
    if (e == cudaSuccess)
        e = cudaMemsetAsync(a, 0x3c, bytes, (cudaStream_t)stream);
    int rc = e == cudaSuccess ? 0 : -(int)e;
    if (rc == 0) {
        gpu_copy_ctx c = {b, a, bytes, (cudaStream_t)stream};
        xent_bench_opts o = {2, reps, reps, 0.0, reps};
        xent_bench_stats st;
        rc = xent_bench_time_gpu(stream, gpu_copy_once, &c, &o, &st);
        if (rc > 0)
            rc = -rc; /* a cudaError_t from the copy */
        if (rc == 0)
            *gbps = st.median_us > 0.0
                        ? 2.0 * (double)bytes / (st.median_us * 1e-6) / 1e9
                        : 0.0;
    }
    (void)cudaFree(a);
    (void)cudaFree(b);
    (void)cudaGetLastError();
    return rc;
}

typedef struct memcpy_part {
    char *dst;
    const char *src;
    size_t bytes;
} memcpy_part;

static void *memcpy_thread(void *arg)
{
    memcpy_part *p = arg;
    memcpy(p->dst, p->src, p->bytes);
    return NULL;
}

#define XENT_BENCH_MAX_THREADS 64
#define XENT_BENCH_MIN_PIECE   ((size_t)4 << 20)

void xent_bench_parallel_memcpy(void *dst, const void *src, size_t bytes,
                                int threads)
{
    size_t t = threads < 1 ? 1 : (size_t)threads;
    if (t > XENT_BENCH_MAX_THREADS)
        t = XENT_BENCH_MAX_THREADS;
    if (t > bytes / XENT_BENCH_MIN_PIECE)
        t = bytes / XENT_BENCH_MIN_PIECE;
    if (t <= 1) {
        if (bytes)
            memcpy(dst, src, bytes);
        return;
    }
    memcpy_part parts[XENT_BENCH_MAX_THREADS];
    pthread_t tid[XENT_BENCH_MAX_THREADS];
    int started[XENT_BENCH_MAX_THREADS] = {0};
    size_t piece = (bytes / t + 63) & ~(size_t)63;
    for (size_t k = 0; k < t; k++) {
        size_t lo = k * piece < bytes ? k * piece : bytes;
        size_t hi = (k + 1) * piece < bytes ? (k + 1) * piece : bytes;
        if (k == t - 1)
            hi = bytes;
        parts[k].dst = (char *)dst + lo;
        parts[k].src = (const char *)src + lo;
        parts[k].bytes = hi - lo;
    }
    for (size_t k = 1; k < t; k++)
        started[k] =
            pthread_create(&tid[k], NULL, memcpy_thread, &parts[k]) == 0;
    memcpy_thread(&parts[0]);
    for (size_t k = 1; k < t; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            memcpy_thread(&parts[k]);
    }
}

typedef struct cpu_copy_ctx {
    void *dst;
    const void *src;
    size_t bytes;
    int threads;
} cpu_copy_ctx;

static int cpu_copy_once(void *ctx, int64_t iter)
{
    (void)iter;
    cpu_copy_ctx *c = ctx;
    xent_bench_parallel_memcpy(c->dst, c->src, c->bytes, c->threads);
    return 0;
}

int xent_bench_copy_gbps_cpu(size_t bytes, int threads, int reps, double *gbps)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        free(a);
        free(b);
        return 1;
    }
    memset(a, 0x3c, bytes); /* touch every page before timing */
    memset(b, 0, bytes);
    cpu_copy_ctx c = {b, a, bytes,
                      threads > 0 ? threads : xent_bench_cpu_count()};
    xent_bench_opts o = {1, reps, reps, 0.0, reps};
    xent_bench_stats st;
    int rc = xent_bench_time_cpu(cpu_copy_once, &c, &o, &st);
    if (rc == 0)
        *gbps = st.median_us > 0.0
                    ? 2.0 * (double)bytes / (st.median_us * 1e-6) / 1e9
                    : 0.0;
    free(a);
    free(b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Machine facts                                                        */
/* ------------------------------------------------------------------ */

size_t xent_bench_l2_bytes(int device)
{
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, device) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v > 0 ? (size_t)v : 0;
}

/* "32768K", "36M", "1024" -> bytes; 0 if unparsable. */
static size_t parse_cache_size(const char *s)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return 0;
    while (*end == ' ')
        end++;
    if (*end == 'K' || *end == 'k')
        v <<= 10;
    else if (*end == 'M' || *end == 'm')
        v <<= 20;
    else if (*end == 'G' || *end == 'g')
        v <<= 30;
    return (size_t)v;
}

size_t xent_bench_llc_bytes(void)
{
    size_t best = 0;
    int best_level = 0;
    for (int idx = 0; idx < 8; idx++) {
        char path[128], buf[64];
        int level = 0;
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu0/cache/index%d/level", idx);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(buf, sizeof buf, f))
            level = atoi(buf);
        fclose(f);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        f = fopen(path, "r");
        if (!f)
            continue;
        size_t size = 0;
        if (fgets(buf, sizeof buf, f))
            size = parse_cache_size(buf);
        fclose(f);
        if (level > best_level && size > 0) {
            best_level = level;
            best = size;
        }
    }
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (best == 0) {
        long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (v > 0)
            best = (size_t)v;
    }
#endif
    return best ? best : (size_t)32 << 20;
}

int xent_bench_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
#endif
    return n > 0 ? (int)n : 1;
}

int xent_bench_rotation(size_t copy_bytes, size_t cache_bytes,
                        size_t budget_bytes)
{
    if (copy_bytes == 0 || copy_bytes >= 4 * cache_bytes)
        return 1;
    size_t k = (4 * cache_bytes + copy_bytes - 1) / copy_bytes;
    size_t fit = budget_bytes / copy_bytes;
    if (k > fit)
        k = fit;
    if (k > 65536)
        k = 65536;
    return k < 1 ? 1 : (int)k;
}

char *xent_bench_cpu_name(char *buf, size_t len)
{
    if (len == 0)
        return buf;
    snprintf(buf, len, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return buf;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *p = strchr(line, ':');
        if (!p)
            break;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strlen(p);
        while (n > 0 && isspace((unsigned char)p[n - 1]))
            p[--n] = '\0';
        if (n > 0)
            snprintf(buf, len, "%s", p);
        break;
    }
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------ */
/* Data                                                                 */
/* ------------------------------------------------------------------ */

void xent_bench_rng_seed(xent_bench_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t xent_bench_rng_next(xent_bench_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double xent_bench_rng_uniform(xent_bench_rng *r)
{
    return (double)(xent_bench_rng_next(r) >> 11) * 0x1.0p-53;
}

double xent_bench_rng_normal(xent_bench_rng *r)
{
    double u1 = xent_bench_rng_uniform(r), u2 = xent_bench_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void xent_bench_fill_logits(xent_bench_rng *r, int64_t n, int64_t c, int64_t ld,
                            float *z, float pad)
{
    for (int64_t i = 0; i < n; i++) {
        float *row = z + i * ld;
        for (int64_t j = 0; j < c; j++)
            row[j] = (float)(2.0 * xent_bench_rng_normal(r));
        for (int64_t j = c; j < ld; j++)
            row[j] = pad;
        int peaks = 1 + (int)(xent_bench_rng_next(r) % 3);
        for (int k = 0; k < peaks; k++) {
            int64_t j = (int64_t)(xent_bench_rng_next(r) % (uint64_t)c);
            float v = row[j] * 20.0f;
            row[j] = k == 0 ? fabsf(v) + 20.0f : v;
        }
    }
}

uint16_t xent_bench_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

uint16_t xent_bench_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (ax >= 0x47800000u) /* >= 65536 (and infinity) */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half (or 0) */
        float a;
        memcpy(&a, &ax, sizeof a);
        /* a * 2^24 is exact; rintf rounds half to even */
        uint32_t q = (uint32_t)rintf(a * 16777216.0f);
        return (uint16_t)(sign | q); /* q == 1024 is the smallest normal */
    }
    uint32_t mant = ax & 0x7fffffu;
    uint32_t e = (ax >> 23) - 127u + 15u; /* 1 .. 30 */
    uint32_t h = (e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is right, up to infinity */
    return (uint16_t)(sign | h);
}

float xent_bench_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float xent_bench_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    uint32_t bits = exp == 0x1fu ? (sign | 0x7f800000u | (man << 13))
                                 : (sign | ((exp + 112u) << 23) | (man << 13));
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
