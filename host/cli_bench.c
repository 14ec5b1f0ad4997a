/*
 * cli_bench.c - `xent bench`: validate every kernel variant against the CPU
 * backend on sampled rows, then time it, and report the achieved bandwidth
 * against the device's own copy bandwidth measured in the same run.
 *
 * For each shape (N, C, ld) and dtype: the logits are generated once (a
 * pattern of peaked random rows made on the host, copied in and replicated
 * on the device, NaN in the padding columns [C, ld)), with int64 targets
 * uniform in [0, C). For each op (fwd: forward with the MEAN loss; fwd_bwd:
 * fused forward+backward, MEAN loss and gradient in the logits' dtype) and
 * variant:
 *
 *  1. validate: one run over the whole batch writing the per-row losses;
 *     ~16 sampled rows (the first and the last included) of the losses and
 *     the gradient are compared with the CPU backend (xent_create_cpu) on
 *     the same rows, |d| <= 1e-5 (|ref| + max|ref|) (plus half an ulp of
 *     the gradient's dtype for bf16/f16 gradients), and the reduced loss
 *     with the fp64 mean of the downloaded row losses; a failure is
 *     reported, the configuration is not timed, and the exit status is 1;
 *  2. time (bench/bench.h): a warm-up, then CUDA events around each run,
 *     the median over >= 20 runs (suite: >= 10 and ~0.3 s per
 *     configuration), rotating over enough copies of the inputs (and
 *     gradient buffers) that the working set is >= 4x the L2 cache.
 *
 * GB/s uses the minimum-bytes model: fwd reads N*C logits and N targets;
 * fwd_bwd also writes the N*C gradient once. copy_gbps is a large
 * device-to-device cudaMemcpyAsync (read + write bytes); frac_of_copy is
 * their ratio. On the CPU the same flow runs on a CPU handle (variant
 * "cpu"), timed with the monotonic clock, against a threaded memcpy.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "bench.h"

enum { OP_FWD = 0, OP_FWD_BWD = 1, OP_BOTH = 2 };
static const char *const k_ops[] = {"fwd", "fwd_bwd", "both", NULL};
enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };
static const char *const k_dtypes[] = {"f32", "bf16", "f16", NULL};
enum { V_AUTO = 0, V_WARP = 1, V_BLOCK = 2, V_ALL = 3 };
static const char *const k_variants[] = {"auto", "warp_row", "block_row", "all",
                                         NULL};

#define SAMPLE_ROWS 16

typedef struct bench_opts {
    int64_t rows, classes, ld, reps;
    int dtype, variant, op, suite;
    xent_cli_common common;
} bench_opts;

typedef struct bench_shape {
    int64_t n, c, ld;
} bench_shape;

typedef struct bench_result {
    const char *op, *variant, *dtype;
    int64_t n, c, ld;
    int valid, reps, copies;
    double us, gbps, max_err, bytes;
} bench_result;

typedef struct bench_list {
    bench_result *r;
    int n, cap;
} bench_list;

/* Everything one (shape, dtype) needs; pointers are device pointers on a
 * CUDA handle, host pointers on a CPU handle. */
typedef struct bench_ctx {
    const xent_cli_device *dev;
    xent_handle_t h;
    cudaStream_t stream;
    int64_t n, c, ld;
    xent_dtype dtype;
    size_t esz;
    int copies;
    size_t z_stride, g_stride; /* bytes between copies */
    char *z, *g;               /* [copies][n, ld] logits / gradient */
    int64_t *targets;          /* [n] */
    float *loss;               /* [1] */
    float *rows;               /* [n] per-row losses (validation) */
    void *ws;
    size_t ws_bytes;
    xent_ce_desc desc;
    int fwd_bwd;
} bench_ctx;

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static int list_add(bench_list *l, const bench_result *r)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        bench_result *p = realloc(l->r, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        l->r = p;
        l->cap = cap;
    }
    l->r[l->n++] = *r;
    return 0;
}

static void print_header(FILE *f)
{
    fprintf(f, "%-8s %-5s %-10s %8s %8s %8s %11s %9s %7s %9s\n", "op", "dtype",
            "variant", "N", "C", "ld", "us", "GB/s", "% copy", "max|err|");
    fflush(f);
}

static void print_row(FILE *f, const bench_result *r, double copy_gbps)
{
    if (!r->valid) {
        fprintf(f,
                "%-8s %-5s %-10s %8lld %8lld %8lld %11s %9s %7s %9.2e  "
                "INVALID\n",
                r->op, r->dtype, r->variant, (long long)r->n, (long long)r->c,
                (long long)r->ld, "-", "-", "-", r->max_err);
    } else {
        fprintf(f,
                "%-8s %-5s %-10s %8lld %8lld %8lld %11.2f %9.1f %7.1f "
                "%9.2e\n",
                r->op, r->dtype, r->variant, (long long)r->n, (long long)r->c,
                (long long)r->ld, r->us, r->gbps,
                copy_gbps > 0 ? 100.0 * r->gbps / copy_gbps : 0.0, r->max_err);
    }
    fflush(f);
}

static void print_json(const xent_cli_device *dev, double copy_gbps,
                       const bench_list *l, double seconds, int all_valid)
{
    xent_json j;
    xent_json_start(&j, stdout);
    xent_json_str(&j, "device", dev->label);
    xent_json_str(&j, dev->is_cuda ? "gpu_name" : "cpu_name", dev->name);
    if (!dev->is_cuda)
        xent_json_int(&j, "threads", dev->threads);
    xent_json_int(&j, dev->is_cuda ? "l2_bytes" : "llc_bytes",
                  (int64_t)dev->l2_bytes);
    xent_json_num(&j, "copy_gbps", copy_gbps);
    xent_json_bool(&j, "valid", all_valid);
    xent_json_array(&j, "results");
    for (int i = 0; i < l->n; i++) {
        const bench_result *r = &l->r[i];
        xent_json_object(&j, NULL);
        xent_json_str(&j, "op", r->op);
        xent_json_str(&j, "variant", r->variant);
        xent_json_str(&j, "dtype", r->dtype);
        xent_json_int(&j, "n_rows", r->n);
        xent_json_int(&j, "n_classes", r->c);
        xent_json_int(&j, "ld", r->ld);
        xent_json_bool(&j, "valid", r->valid);
        if (r->valid) {
            xent_json_num(&j, "us", r->us);
            xent_json_num(&j, "gbps", r->gbps);
            xent_json_num(&j, "copy_gbps", copy_gbps);
            xent_json_num(&j, "frac_of_copy",
                          copy_gbps > 0 ? r->gbps / copy_gbps : NAN);
        } else {
            xent_json_null(&j, "us");
            xent_json_null(&j, "gbps");
            xent_json_num(&j, "copy_gbps", copy_gbps);
            xent_json_null(&j, "frac_of_copy");
        }
        xent_json_num(&j, "max_abs_err", r->max_err);
        xent_json_int(&j, "reps", r->reps);
        xent_json_int(&j, "copies", r->copies);
        xent_json_num(&j, "bytes", r->bytes);
        xent_json_close(&j);
    }
    xent_json_close(&j);
    xent_json_fix(&j, "seconds", seconds, 3);
    xent_json_finish(&j);
}

/* ------------------------------------------------------------------------ */
/* Buffers and data                                                         */
/* ------------------------------------------------------------------------ */

static size_t round256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

static int cuda_fail(cudaError_t e, const char *what)
{
    if (e == cudaErrorMemoryAllocation)
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                             "bench: out of GPU memory "
                             "(%s)",
                             what);
    return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "bench: CUDA error in %s: %s",
                         what, cudaGetErrorString(e));
}

static void ctx_free(bench_ctx *b)
{
    if (b->dev->is_cuda) {
        if (b->stream)
            (void)cudaStreamSynchronize(b->stream);
        (void)cudaFree(b->z);
        (void)cudaFree(b->g);
        (void)cudaFree(b->targets);
        (void)cudaFree(b->loss);
        (void)cudaFree(b->rows);
        (void)cudaFree(b->ws);
        (void)cudaGetLastError();
    } else {
        free(b->z);
        free(b->g);
        free(b->targets);
        free(b->loss);
        free(b->rows);
        free(b->ws);
    }
    b->z = b->g = NULL;
    b->targets = NULL;
    b->loss = b->rows = NULL;
    b->ws = NULL;
}

static void convert_rows(const float *src, void *dst, size_t count,
                         xent_dtype dt)
{
    if (dt == XENT_DTYPE_F32) {
        memcpy(dst, src, count * 4);
        return;
    }
    uint16_t *d = dst;
    for (size_t i = 0; i < count; i++)
        d[i] = dt == XENT_DTYPE_BF16 ? xent_bench_f32_to_bf16(src[i])
                                     : xent_bench_f32_to_f16(src[i]);
}

static float load_elem(const void *p, size_t i, xent_dtype dt)
{
    if (dt == XENT_DTYPE_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return dt == XENT_DTYPE_BF16 ? xent_bench_bf16_to_f32(h)
                                 : xent_bench_f16_to_f32(h);
}

/* Allocates and fills a context for shape s and dtype; with_grad: also
 * gradient buffers. Returns 0, a positive exit code (message printed), or
 * -1 when the shape does not fit (no message). */
static int ctx_setup(bench_ctx *b, const xent_cli_device *dev,
                     cudaStream_t stream, bench_shape s, xent_dtype dt,
                     int with_grad)
{
    memset(b, 0, sizeof *b);
    b->dev = dev;
    b->h = dev->handle;
    b->stream = stream;
    b->n = s.n;
    b->c = s.c;
    b->ld = s.ld;
    b->dtype = dt;
    b->esz = xent_cli_dtype_size(dt);
    size_t mat = (size_t)s.n * (size_t)s.ld * b->esz;
    b->z_stride = round256(mat);
    b->g_stride = with_grad ? b->z_stride : 0;

    xent_ce_desc_init(&b->desc, s.n, s.c);
    b->desc.ld = s.ld;
    b->desc.logits_dtype = dt;
    b->desc.target_type = XENT_TARGET_INDEX_I64;
    b->desc.reduction = XENT_REDUCTION_MEAN;
    xent_status st = xent_ce_workspace_size(b->h, &b->desc, &b->ws_bytes);
    if (st != XENT_STATUS_SUCCESS) {
        char buf[256];
        return xent_cli_fail(xent_cli_status_exit(st), "bench: %s",
                             xent_cli_status_text(st, buf, sizeof buf));
    }

    size_t fixed = round256((size_t)s.n * 8) + round256((size_t)s.n * 4) + 256 +
                   round256(b->ws_bytes) + ((size_t)64 << 20);
    size_t budget;
    if (dev->is_cuda) {
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess)
            fr = dev->free_bytes;
        budget = (size_t)((double)fr * 0.85);
    } else {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        budget = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 3
                                      : ((size_t)4 << 30);
    }
    size_t copy = b->z_stride + b->g_stride;
    if (fixed + copy > budget)
        return -1;
    b->copies = xent_bench_rotation(copy, dev->l2_bytes, budget - fixed);

    /* pattern rows: peaked random logits, NaN padding, in the dtype */
    size_t row_bytes = (size_t)s.ld * b->esz;
    int64_t pat = (int64_t)(((size_t)32 << 20) / ((size_t)s.ld * 4));
    pat = pat < 1 ? 1 : (pat > s.n ? s.n : pat);
    float *pf = malloc((size_t)pat * (size_t)s.ld * 4);
    void *ph = malloc((size_t)pat * row_bytes);
    int64_t *ht = malloc((size_t)s.n * 8);
    if (!pf || !ph || !ht) {
        free(pf);
        free(ph);
        free(ht);
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "bench: out of memory");
    }
    xent_bench_rng rng;
    xent_bench_rng_seed(&rng, 0x5eed0000u + (uint64_t)s.c * 31u + (uint64_t)dt);
    xent_bench_fill_logits(&rng, pat, s.c, s.ld, pf, NAN);
    convert_rows(pf, ph, (size_t)pat * (size_t)s.ld, dt);
    for (int64_t i = 0; i < s.n; i++)
        ht[i] = (int64_t)(xent_bench_rng_next(&rng) % (uint64_t)s.c);
    free(pf);

    int rc = 0;
    if (dev->is_cuda) {
        cudaError_t e = cudaMalloc((void **)&b->z, b->z_stride * b->copies);
        if (e == cudaSuccess && with_grad)
            e = cudaMalloc((void **)&b->g, b->g_stride * b->copies);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&b->targets, (size_t)s.n * 8);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&b->loss, 4);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&b->rows, (size_t)s.n * 4);
        if (e == cudaSuccess && b->ws_bytes)
            e = cudaMalloc(&b->ws, b->ws_bytes);
        /* everything on the (non-blocking) stream, in order; the host
         * buffers live until the synchronization below */
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->z, ph, (size_t)pat * row_bytes,
                                cudaMemcpyHostToDevice, stream);
        /* replicate the pattern over the batch, then the batch over the
         * copies, on the device */
        for (int64_t m = pat; e == cudaSuccess && m < s.n;) {
            int64_t cnt = s.n - m < m ? s.n - m : m;
            e = cudaMemcpyAsync(b->z + (size_t)m * row_bytes, b->z,
                                (size_t)cnt * row_bytes,
                                cudaMemcpyDeviceToDevice, stream);
            m += cnt;
        }
        for (int k = 1; e == cudaSuccess && k < b->copies; k++)
            e = cudaMemcpyAsync(b->z + (size_t)k * b->z_stride, b->z, mat,
                                cudaMemcpyDeviceToDevice, stream);
        if (e == cudaSuccess && with_grad)
            e = cudaMemsetAsync(b->g, 0, b->g_stride * b->copies, stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(b->targets, ht, (size_t)s.n * 8,
                                cudaMemcpyHostToDevice, stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(stream);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            ctx_free(b);
            rc = e == cudaErrorMemoryAllocation ? -1
                                                : cuda_fail(e, "data setup");
        }
    } else {
        b->z = malloc(b->z_stride * b->copies);
        b->g = with_grad ? malloc(b->g_stride * b->copies) : NULL;
        b->targets = malloc((size_t)s.n * 8);
        b->loss = malloc(4);
        b->rows = malloc((size_t)s.n * 4);
        b->ws = b->ws_bytes ? malloc(b->ws_bytes) : NULL;
        if (!b->z || (with_grad && !b->g) || !b->targets || !b->loss ||
            !b->rows || (b->ws_bytes && !b->ws)) {
            ctx_free(b);
            rc = -1;
        } else {
            for (int64_t m = 0; m < s.n; m += pat) {
                int64_t cnt = s.n - m < pat ? s.n - m : pat;
                memcpy(b->z + (size_t)m * row_bytes, ph,
                       (size_t)cnt * row_bytes);
            }
            for (int k = 1; k < b->copies; k++)
                memcpy(b->z + (size_t)k * b->z_stride, b->z, mat);
            if (with_grad)
                memset(b->g, 0, b->g_stride * b->copies);
            memcpy(b->targets, ht, (size_t)s.n * 8);
        }
    }
    free(ph);
    free(ht);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Runs                                                                     */
/* ------------------------------------------------------------------------ */

static int bench_run(void *vctx, int64_t iter)
{
    bench_ctx *b = vctx;
    size_t k = (size_t)(iter % b->copies);
    const void *z = b->z + k * b->z_stride;
    xent_status st;
    if (b->fwd_bwd)
        st = xent_ce_forward_backward(b->h, &b->desc, z, b->targets, NULL,
                                      b->g + k * b->g_stride, b->loss, NULL,
                                      NULL, b->ws, b->ws_bytes);
    else
        st = xent_ce_forward(b->h, &b->desc, z, b->targets, b->loss, NULL, NULL,
                             b->ws, b->ws_bytes);
    return (int)st;
}

/* Copies n bytes from the context's memory (device or host) to host. */
static cudaError_t fetch(const bench_ctx *b, void *dst, const void *src,
                         size_t n)
{
    if (!b->dev->is_cuda) {
        memcpy(dst, src, n);
        return cudaSuccess;
    }
    return cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost);
}

/*
 * Step 1 of the methodology: one full run on copy 0, then the sampled rows
 * against the CPU backend. *valid and *max_err report the comparison; the
 * return value is 0 or an exit code for a failure to run at all.
 */
static int bench_validate(bench_ctx *b, int *valid, double *max_err, char *why,
                          size_t whylen)
{
    *valid = 0;
    *max_err = NAN;
    why[0] = '\0';
    const int64_t n = b->n, c = b->c, ld = b->ld;
    xent_status st;
    if (b->fwd_bwd)
        st = xent_ce_forward_backward(b->h, &b->desc, b->z, b->targets, NULL,
                                      b->g, b->loss, b->rows, NULL, b->ws,
                                      b->ws_bytes);
    else
        st = xent_ce_forward(b->h, &b->desc, b->z, b->targets, b->loss, b->rows,
                             NULL, b->ws, b->ws_bytes);
    if (st != XENT_STATUS_SUCCESS) {
        char buf[256];
        return xent_cli_fail(xent_cli_status_exit(st), "bench: %s",
                             xent_cli_status_text(st, buf, sizeof buf));
    }
    if (b->dev->is_cuda) {
        cudaError_t e = cudaStreamSynchronize(b->stream);
        if (e != cudaSuccess)
            return cuda_fail(e, "the validation run");
    }

    int S = n < SAMPLE_ROWS ? (int)n : SAMPLE_ROWS;
    int64_t idx[SAMPLE_ROWS];
    for (int s = 0; s < S; s++)
        idx[s] = S > 1 ? (int64_t)((double)s * (double)(n - 1) / (S - 1)) : 0;
    size_t row_bytes = (size_t)ld * b->esz;
    float *rows = malloc((size_t)n * 4);
    void *zs = malloc((size_t)S * row_bytes);
    void *gs = b->fwd_bwd ? malloc((size_t)S * row_bytes) : NULL;
    int64_t *ts = malloc((size_t)S * 8);
    float *lref = malloc((size_t)S * 4);
    float *gref = b->fwd_bwd ? malloc((size_t)S * (size_t)ld * 4) : NULL;
    int rc = 0;
    xent_handle_t ref = NULL;
    if (!rows || !zs || !ts || !lref || (b->fwd_bwd && (!gs || !gref))) {
        rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "bench: out of memory");
        goto out;
    }
    float loss = 0.0f;
    cudaError_t e = fetch(b, &loss, b->loss, 4);
    if (e == cudaSuccess)
        e = fetch(b, rows, b->rows, (size_t)n * 4);
    for (int s = 0; s < S && e == cudaSuccess; s++) {
        e = fetch(b, (char *)zs + (size_t)s * row_bytes,
                  b->z + (size_t)idx[s] * row_bytes, row_bytes);
        if (e == cudaSuccess && b->fwd_bwd)
            e = fetch(b, (char *)gs + (size_t)s * row_bytes,
                      b->g + (size_t)idx[s] * row_bytes, row_bytes);
        if (e == cudaSuccess)
            e = fetch(b, &ts[s], b->targets + idx[s], 8);
    }
    if (e != cudaSuccess) {
        rc = cuda_fail(e, "downloading the validation rows");
        goto out;
    }

    /* the reference: the CPU backend on the sampled rows; the gradient of
     * the batch MEAN is each row's gradient times 1/N (every target is a
     * valid class, no weights) */
    st = xent_create_cpu(&ref, b->dev->is_cuda ? 0 : 1);
    xent_ce_desc d;
    xent_ce_desc_init(&d, S, c);
    d.ld = ld;
    d.logits_dtype = b->dtype;
    d.target_type = XENT_TARGET_INDEX_I64;
    d.reduction = XENT_REDUCTION_NONE;
    d.flags = XENT_FLAG_GRAD_F32;
    xent_upstream u = xent_upstream_default();
    u.scale = (float)(1.0 / (double)n);
    if (st == XENT_STATUS_SUCCESS)
        st = b->fwd_bwd
                 ? xent_ce_forward_backward(ref, &d, zs, ts, &u, gref, NULL,
                                            lref, NULL, NULL, 0)
                 : xent_ce_forward(ref, &d, zs, ts, NULL, lref, NULL, NULL, 0);
    if (st != XENT_STATUS_SUCCESS) {
        char buf[256];
        rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "bench: CPU reference: %s",
                           xent_cli_status_text(st, buf, sizeof buf));
        goto out;
    }

    /* compare: |d| <= 1e-5 (|ref| + max|ref|) (+ the gradient dtype's
     * rounding: half an ulp, and half the smallest f16 subnormal) */
    double worst = 0.0, mref = 0.0;
    int ok = 1;
    for (int s = 0; s < S; s++)
        mref = fmax(mref, fabs((double)lref[s]));
    for (int s = 0; s < S && ok; s++) {
        double got = rows[idx[s]], want = lref[s], err = fabs(got - want);
        if (!(err <= 1e-5 * (fabs(want) + mref))) {
            ok = 0;
            snprintf(why, whylen, "row %lld loss: got %.9g, CPU reference %.9g",
                     (long long)idx[s], got, want);
        }
        if (isfinite(err))
            worst = fmax(worst, err);
    }
    if (b->fwd_bwd) {
        double rel = b->dtype == XENT_DTYPE_BF16  ? 0x1p-8
                     : b->dtype == XENT_DTYPE_F16 ? 0x1p-11
                                                  : 0.0;
        double abs_ = b->dtype == XENT_DTYPE_F16 ? 0x1p-25 : 0.0;
        double gmax = 0.0;
        for (int s = 0; s < S; s++)
            for (int64_t j = 0; j < c; j++)
                gmax = fmax(gmax, fabs((double)gref[(size_t)s * ld + j]));
        for (int s = 0; s < S && ok; s++) {
            for (int64_t j = 0; j < c; j++) {
                double want = gref[(size_t)s * ld + j];
                double got = load_elem(gs, (size_t)s * ld + j, b->dtype);
                double err = fabs(got - want);
                double tol =
                    1e-5 * (fabs(want) + gmax) + rel * fabs(want) + abs_;
                if (isfinite(err))
                    worst = fmax(worst, err);
                if (!(err <= tol)) {
                    ok = 0;
                    snprintf(why, whylen,
                             "row %lld column %lld gradient: got %.9g, CPU "
                             "reference %.9g",
                             (long long)idx[s], (long long)j, got, want);
                    break;
                }
            }
        }
    }
    if (ok) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += rows[i];
        double mean = sum / (double)n;
        if (!(fabs((double)loss - mean) <= 1e-6 * fabs(mean) + 1e-30)) {
            ok = 0;
            snprintf(why, whylen,
                     "reduced loss %.9g, fp64 mean of the rows %.9g", loss,
                     mean);
        }
    }
    *valid = ok;
    *max_err = worst;
out:
    xent_destroy(ref);
    free(rows);
    free(zs);
    free(gs);
    free(ts);
    free(lref);
    free(gref);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

static const char k_usage[] =
    "xent bench [--rows N] [--classes C] [--ld LD] [--dtype f32|bf16|f16]\n"
    "           [--op fwd|fwd_bwd|both] [--reps N] [--suite]\n"
    "           [--variant auto|warp_row|block_row|all]\n"
    "           [--device auto|cpu|cuda[:N]] [--threads N] [--json]";

static const char k_about[] =
    "Validates each kernel variant against the CPU backend on sampled rows,\n"
    "then times it (CUDA events, median of >= 20 runs, inputs rotated so\n"
    "they never sit in L2) and reports GB/s under the minimum-bytes model\n"
    "(fwd: logits read once; fwd_bwd: read once + gradient written once)\n"
    "next to the device-to-device copy bandwidth measured in the same run.\n"
    "Default on a GPU: fused forward+backward, N=4096, C=131072, f32, every\n"
    "variant. On the CPU (no GPU, or --device cpu): the CPU backend with\n"
    "--threads threads, N=1024, C=32768, timed with the monotonic clock.";

static const char k_epilog[] =
    "--suite: C in {128, 1024, 4096, 32768, 50257 (ld 50304), 131072,\n"
    "262144} with N chosen for ~2 GiB of fp32 logits (64 MiB on the CPU),\n"
    "plus N in {1, 8, 64} at C=262144; f32 and bf16 (same N); fwd and\n"
    "fwd_bwd; every variant. --dtype, --op and --variant narrow it.\n"
    "A failed validation is reported and makes the exit status 1.\n"
    "--json prints {\"device\", \"copy_gbps\", \"results\": [{\"op\", "
    "\"variant\",\n\"dtype\", \"n_rows\", \"n_classes\", \"ld\", \"us\", "
    "\"gbps\", \"copy_gbps\",\n\"frac_of_copy\", \"max_abs_err\"}, ...]}.";

static int build_shapes(const bench_opts *o, int is_cuda, bench_shape *out,
                        int cap)
{
    int n = 0;
    if (!o->suite) {
        int64_t c = o->classes > 0 ? o->classes : (is_cuda ? 131072 : 32768);
        int64_t rows = o->rows > 0 ? o->rows : (is_cuda ? 4096 : 1024);
        out[n].n = rows;
        out[n].c = c;
        out[n].ld = o->ld > 0 ? o->ld : c;
        return 1;
    }
    static const int64_t cs[][2] = {
        {128, 128},     {1024, 1024},     {4096, 4096},    {32768, 32768},
        {50257, 50304}, {131072, 131072}, {262144, 262144}};
    size_t target = is_cuda ? ((size_t)2 << 30) : ((size_t)64 << 20);
    for (size_t i = 0; i < sizeof cs / sizeof cs[0] && n < cap; i++) {
        out[n].c = cs[i][0];
        out[n].ld = cs[i][1];
        out[n].n = (int64_t)(target / ((size_t)cs[i][1] * 4));
        n++;
    }
    static const int64_t few[] = {1, 8, 64};
    for (size_t i = 0; i < 3 && n < cap; i++) {
        out[n].c = out[n].ld = 262144;
        out[n].n = few[i];
        n++;
    }
    return n;
}

int xent_cli_bench_main(int argc, char **argv)
{
    bench_opts o;
    memset(&o, 0, sizeof o);
    o.variant = V_ALL;
    o.op = OP_FWD_BWD;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--rows", XENT_CLI_OPT_INT, &o.rows, "N",
         "rows (default 4096 on a GPU, 1024 on the\nCPU)", NULL, 1, 9.2e18, 0},
        {"--classes", XENT_CLI_OPT_INT, &o.classes, "C",
         "classes (default 131072 on a GPU, 32768 on\nthe CPU)", NULL, 1,
         9.2e18, 0},
        {"--ld", XENT_CLI_OPT_INT, &o.ld, "LD",
         "row stride in elements, >= C (default C)", NULL, 1, 9.2e18, 0},
        {"--dtype", XENT_CLI_OPT_CHOICE, &o.dtype, NULL,
         "logits dtype (default f32; the suite: f32\nand bf16)", k_dtypes, 0, 0,
         0},
        {"--op", XENT_CLI_OPT_CHOICE, &o.op, NULL,
         "forward, fused forward+backward, or both\n(default fwd_bwd; the "
         "suite: both)",
         k_ops, 0, 0, 0},
        {"--variant", XENT_CLI_OPT_CHOICE, &o.variant, NULL,
         "kernel variant(s) to run (default all;\nignored on the CPU)",
         k_variants, 0, 0, 0},
        {"--reps", XENT_CLI_OPT_INT, &o.reps, "N",
         "exactly N timed runs (default: >= 20 and\n~1 s; the suite: >= 10 and "
         "~0.3 s)",
         NULL, 1, 1000000, 0},
        {"--suite", XENT_CLI_OPT_FLAG, &o.suite, NULL,
         "run the benchmark suite (below)", NULL, 0, 0, 0},
        XENT_CLI_OPT_DEVICE(cm),
        XENT_CLI_OPT_THREADS(cm),
        XENT_CLI_OPT_JSON(cm),
    };
    xent_cli_spec spec = {"bench", k_usage,
                          k_about, k_epilog,
                          opts,    (int)(sizeof opts / sizeof opts[0])};
    int rc = xent_cli_parse(&spec, argc, argv);
    if (rc == XENT_CLI_HELP_SHOWN)
        return XENT_CLI_EXIT_OK;
    if (rc)
        return rc;
    int dtype_seen = xent_cli_find_opt(&spec, "--dtype")->seen;
    int op_seen = xent_cli_find_opt(&spec, "--op")->seen;
    if (o.suite && (o.rows || o.classes || o.ld))
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "bench: --suite chooses the shapes; it cannot be "
                             "combined with --rows, --classes or --ld");
    if (o.ld && o.ld < (o.classes ? o.classes : 1))
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "bench: --ld %lld is below --classes %lld",
                             (long long)o.ld, (long long)o.classes);
    if ((rc = xent_cli_device_check(cm->device)))
        return rc;

    double t_start = xent_cli_now();
    xent_cli_device dev;
    if ((rc = xent_cli_device_open(cm->device, cm->threads, &dev)))
        return rc;
    if (o.ld && !o.classes && o.ld < (dev.is_cuda ? 131072 : 32768)) {
        xent_cli_device_close(&dev);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "bench: --ld %lld is below the default class "
                             "count (give --classes)",
                             (long long)o.ld);
    }
    FILE *table = cm->json ? stderr : stdout;
    cudaStream_t stream = NULL;
    bench_list list = {NULL, 0, 0};
    int n_invalid = 0;
    double copy_gbps = 0.0;
    char buf[64];

    /* ---- copy bandwidth, in the same run ---- */
    if (dev.is_cuda) {
        cudaError_t e =
            cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            rc = cuda_fail(e, "stream creation");
            goto done;
        }
        (void)xent_set_stream(dev.handle, (struct CUstream_st *)stream);
        size_t bytes = (size_t)1 << 30;
        while (bytes > dev.free_bytes / 8 && bytes > ((size_t)64 << 20))
            bytes /= 2;
        int crc = xent_bench_copy_gbps_gpu((struct CUstream_st *)stream, bytes,
                                           10, &copy_gbps);
        if (crc) {
            rc = cuda_fail((cudaError_t)(-crc), "the copy benchmark");
            goto done;
        }
        fprintf(table,
                "xent bench: %s (%s), L2 %s, device-to-device copy %.0f GB/s "
                "(read + write)\n",
                dev.label, dev.name,
                xent_cli_bytes_text((double)dev.l2_bytes, buf, sizeof buf),
                copy_gbps);
    } else {
        if (xent_bench_copy_gbps_cpu((size_t)256 << 20, dev.threads, 5,
                                     &copy_gbps) != 0) {
            rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "bench: out of memory");
            goto done;
        }
        fprintf(table,
                "xent bench: cpu (%s), %d thread%s, last-level cache %s, "
                "memcpy %.1f GB/s (read + write)\n",
                dev.name, dev.threads, dev.threads == 1 ? "" : "s",
                xent_cli_bytes_text((double)dev.l2_bytes, buf, sizeof buf),
                copy_gbps);
    }
    print_header(table);

    /* ---- what to run ---- */
    bench_shape shapes[16];
    int n_shapes = build_shapes(&o, dev.is_cuda, shapes, 16);
    int dts[3], n_dts = 0;
    if (o.suite && !dtype_seen) {
        dts[n_dts++] = DT_F32;
        dts[n_dts++] = DT_BF16;
    } else {
        dts[n_dts++] = o.dtype;
    }
    int ops[2], n_ops = 0;
    int op = o.suite && !op_seen ? OP_BOTH : o.op;
    if (op == OP_FWD || op == OP_BOTH)
        ops[n_ops++] = OP_FWD;
    if (op == OP_FWD_BWD || op == OP_BOTH)
        ops[n_ops++] = OP_FWD_BWD;
    int vars[3], n_vars = 0;
    if (!dev.is_cuda)
        vars[n_vars++] = V_AUTO; /* the CPU has one code path */
    else if (o.variant == V_ALL) {
        vars[n_vars++] = V_WARP;
        vars[n_vars++] = V_BLOCK;
        vars[n_vars++] = V_AUTO;
    } else {
        vars[n_vars++] = o.variant;
    }
    xent_bench_opts topt = xent_bench_opts_default();
    if (dev.is_cuda) {
        topt.warmup = 3;
        topt.min_reps = o.suite ? 10 : 20;
        topt.max_reps = o.suite ? 200 : 1000;
        topt.budget_s = o.suite ? 0.3 : 1.0;
    } else {
        topt.warmup = 1;
        topt.min_reps = o.suite ? 3 : 5;
        topt.max_reps = 200;
        topt.budget_s = o.suite ? 0.3 : 1.0;
    }
    if (o.reps > 0)
        topt.fixed_reps = (int)o.reps;

    static const xent_dtype lib_dt[] = {XENT_DTYPE_F32, XENT_DTYPE_BF16,
                                        XENT_DTYPE_F16};
    int with_grad = op != OP_FWD;
    for (int si = 0; si < n_shapes && rc == 0; si++) {
        for (int di = 0; di < n_dts && rc == 0; di++) {
            bench_ctx b;
            int src = ctx_setup(&b, &dev, stream, shapes[si], lib_dt[dts[di]],
                                with_grad);
            if (src < 0) {
                xent_cli_note("bench: %lld x %lld (ld %lld) %s does not fit "
                              "in memory; skipped",
                              (long long)shapes[si].n, (long long)shapes[si].c,
                              (long long)shapes[si].ld, k_dtypes[dts[di]]);
                if (!o.suite) {
                    rc = XENT_CLI_EXIT_RUNTIME;
                    break;
                }
                continue;
            }
            if (src > 0) {
                rc = src;
                break;
            }
            for (int oi = 0; oi < n_ops && rc == 0; oi++) {
                for (int vi = 0; vi < n_vars && rc == 0; vi++) {
                    b.fwd_bwd = ops[oi] == OP_FWD_BWD;
                    b.desc.variant = (xent_variant)vars[vi];
                    bench_result r;
                    memset(&r, 0, sizeof r);
                    r.op = k_ops[ops[oi]];
                    r.variant = dev.is_cuda ? k_variants[vars[vi]] : "cpu";
                    r.dtype = k_dtypes[dts[di]];
                    r.n = b.n;
                    r.c = b.c;
                    r.ld = b.ld;
                    r.copies = b.copies;
                    r.bytes = (double)b.n * (double)b.c * (double)b.esz *
                                  (b.fwd_bwd ? 2.0 : 1.0) +
                              8.0 * (double)b.n;
                    char why[256];
                    rc = bench_validate(&b, &r.valid, &r.max_err, why,
                                        sizeof why);
                    if (rc)
                        break;
                    if (!r.valid) {
                        n_invalid++;
                        xent_cli_note("bench: validation failed: %s %s %s "
                                      "%lld x %lld (ld %lld): %s",
                                      r.op, r.variant, r.dtype, (long long)r.n,
                                      (long long)r.c, (long long)r.ld, why);
                    } else {
                        xent_bench_stats stt;
                        int trc = dev.is_cuda
                                      ? xent_bench_time_gpu(
                                            (struct CUstream_st *)stream,
                                            bench_run, &b, &topt, &stt)
                                      : xent_bench_time_cpu(bench_run, &b,
                                                            &topt, &stt);
                        if (trc > 0) {
                            char sb[256];
                            rc = xent_cli_fail(
                                xent_cli_status_exit((xent_status)trc),
                                "bench: %s",
                                xent_cli_status_text((xent_status)trc, sb,
                                                     sizeof sb));
                            break;
                        }
                        if (trc < 0) {
                            rc = cuda_fail((cudaError_t)(-trc), "timing");
                            break;
                        }
                        r.reps = stt.reps;
                        r.us = stt.median_us;
                        r.gbps = r.bytes / (r.us * 1e-6) / 1e9;
                    }
                    print_row(table, &r, copy_gbps);
                    if (list_add(&list, &r) != 0) {
                        rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                                           "bench: out of memory");
                        break;
                    }
                }
            }
            ctx_free(&b);
        }
    }
    if (rc == 0) {
        if (cm->json)
            print_json(&dev, copy_gbps, &list, xent_cli_now() - t_start,
                       n_invalid == 0);
        if (n_invalid)
            rc = xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                               "bench: %d of %d configurations failed "
                               "validation",
                               n_invalid, list.n);
    }
done:
    if (stream) {
        (void)xent_set_stream(dev.handle, NULL);
        (void)cudaStreamDestroy(stream);
    }
    free(list.r);
    xent_cli_device_close(&dev);
    return rc;
}
