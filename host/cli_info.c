/*
 * cli_info.c - the `xent` subcommands around cross-entropy:
 *
 *   xent entropy  entropy of softmax(z) per row (and reduced)
 *   xent kl       KL(q || softmax(z)), q given as teacher logits or as
 *                 probabilities (torch's kl_div on log_softmax(z))
 *   xent bce      binary cross-entropy with logits (pos_weight, weight)
 *   xent eval     one pass over a corpus of logits and class targets: mean
 *                 NLL, perplexity, accuracy, top-k accuracy, mean entropy
 *
 * The conventions of `xent loss` (host/cli_loss.c): inputs are .npy files
 * (logits float32/float16/float64, or bfloat16 with --bf16), the rows
 * stream through in chunks and the results do not depend on the chunk
 * size; --loss-out writes the per-row values (bce: per element) as
 * float32, --grad-out the float32 gradient of the reduced value (for none:
 * of the sum of the rows); bad input is exit status 2 with one line on
 * stderr and nothing written; --json prints one object as the last line
 * of stdout.
 *
 * How chunking stays invariant: every chunk is computed with reduction
 * NONE (per-row values, and the gradient of the sum of the rows with an
 * upstream scale of 1/denominator under mean / batchmean, exactly the
 * factor the library applies under MEAN: the same bits as a one-shot
 * call); the reduced value is the fp64 sum of the per-row values in row
 * order, divided on the host. The GPU kernel variant is resolved once for
 * the whole batch (the library's AUTO rule depends on the rows per call),
 * except for eval, whose AUTO already depends on the class count only and
 * whose corpus sums are exact integers (xent_eval_accum).
 *
 * Data problems are found on the host, chunk by chunk, before the library
 * sees the data (the message names the file, the row and the column):
 * probability rows that are negative or do not sum to 1 within --prob-tol,
 * BCE targets outside [0, 1], a negative pos_weight, class indices out of
 * range. The device status word is read at the end as a guard.
 *
 * Each chunk is staged in host buffers (converted to the library's dtype);
 * on a GPU it is copied to device buffers, computed and copied back on the
 * handle's (default) stream, one chunk at a time.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "bench.h"

int xent_cli_entropy_main(int argc, char **argv);
int xent_cli_kl_main(int argc, char **argv);
int xent_cli_bce_main(int argc, char **argv);
int xent_cli_eval_main(int argc, char **argv);

enum { CMD_ENTROPY, CMD_KL, CMD_BCE, CMD_EVAL };
static const char *const k_cmd_names[] = {"entropy", "kl", "bce", "eval"};

enum { RED_MEAN = 0, RED_SUM = 1, RED_NONE = 2 };
static const char *const k_red[] = {"mean", "sum", "none", NULL};
static const char *const k_red_kl[] = {"batchmean", "sum", "none", NULL};
/* in xent_variant order */
static const char *const k_variants[] = {"auto", "warp_row", "block_row", NULL};

typedef struct info_opts {
    int cmd;
    const char *logits, *targets, *target_logits, *target_probs;
    const char *pos_weight, *weight;
    const char *loss_out, *grad_out;
    int reduction, variant;
    double prob_tol;
    int64_t topk, ignore_index;
    xent_cli_common common;
} info_opts;

typedef struct info_job {
    const info_opts *o;
    xent_npy z, t, w; /* logits; teacher / probs / targets; BCE weight */
    float *pw;        /* BCE pos_weight [C] */
    int64_t n, c;
    xent_dtype dtype;      /* the library's dtype of the logits */
    xent_npy_dtype z_want; /* the staging dtype of z (and teacher) */
    int teacher_logits;    /* KL with teacher logits */
    const char *t_path;
    int want_grad;
    double denom;      /* mean / batchmean divisor */
    float g_scale;     /* the gradient's upstream scale */
    int64_t n_ignored; /* eval */
    xent_variant variant;
    int64_t chunk_rows, chunks, done;
    double sum;          /* fp64 sum of the per-row values */
    xent_eval_accum acc; /* eval: host copy */
    xent_cli_output out_loss, out_grad;
    xent_cli_progress bar;
    int host_threads;
    /* host staging [chunk_rows rows] */
    void *hz, *ht, *hw;
    float *hloss, *hgrad;
    /* device mirrors (GPU) */
    void *dz, *dt, *dw, *dpw;
    float *dloss, *dgrad;
    xent_eval_accum *dacc;
} info_job;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static size_t dt_bytes(xent_npy_dtype d)
{
    return d == XENT_NPY_DTYPE_F64 || d == XENT_NPY_DTYPE_I64   ? 8
           : d == XENT_NPY_DTYPE_F32 || d == XENT_NPY_DTYPE_I32 ? 4
                                                                : 2;
}

/* Elements per row of the per-row output: BCE writes every element. */
static int64_t loss_cols(const info_job *J)
{
    return J->o->cmd == CMD_BCE ? J->c : 1;
}

/* Bytes of one row of the target-side input as staged. */
static size_t t_row_bytes(const info_job *J)
{
    if (J->o->cmd == CMD_EVAL)
        return 8; /* int64 targets */
    if (J->o->cmd == CMD_ENTROPY)
        return 0;
    if (J->teacher_logits)
        return (size_t)J->c * dt_bytes(J->z_want);
    return (size_t)J->c * 4; /* float32 probabilities / targets */
}

static int lib_failed(const info_job *J, xent_status st)
{
    char buf[512];
    if (st == XENT_STATUS_INVALID_DATA || st == XENT_STATUS_TARGET_OUT_OF_RANGE)
        return xent_cli_fail(
            XENT_CLI_EXIT_USAGE, "%s: the library rejects the data (%s)",
            k_cmd_names[J->o->cmd], xent_cli_status_text(st, buf, sizeof buf));
    return xent_cli_fail(xent_cli_status_exit(st), "%s: %s",
                         k_cmd_names[J->o->cmd],
                         xent_cli_status_text(st, buf, sizeof buf));
}

static int cuda_failed(cudaError_t e)
{
    if (e == cudaErrorMemoryAllocation)
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                             "out of GPU memory (try a smaller --chunk-rows)");
    return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "CUDA error: %s",
                         cudaGetErrorString(e));
}

/* pos_weight: 1-D (C,), every value >= 0 and not NaN. */
static int load_pos_weight(const char *path, int64_t c, const char *logits,
                           float **out)
{
    *out = NULL;
    xent_npy a;
    char err[512];
    if (xent_npy_open(&a, path, 0, err, sizeof err) != 0)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s", err);
    if (xent_npy_expect(&a, 1, 1, XENT_NPY_MASK_FLOAT, err, sizeof err)) {
        xent_npy_close(&a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s", err);
    }
    if (a.header.shape[0] != c) {
        long long got = (long long)a.header.shape[0];
        xent_npy_close(&a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: pos_weight of length %lld for the %lld "
                             "classes of %s",
                             path, got, (long long)c, logits);
    }
    float *w = malloc((size_t)c * sizeof *w);
    if (!w) {
        xent_npy_close(&a);
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "out of memory");
    }
    xent_npy_to_f32(a.header.dtype, a.data, w, (size_t)c);
    xent_npy_close(&a);
    for (int64_t j = 0; j < c; j++)
        if (!(w[j] >= 0.0f)) {
            double v = w[j];
            free(w);
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: pos_weight[%lld] = %g (must be >= 0)",
                                 path, (long long)j, v);
        }
    *out = w;
    return 0;
}

/* The data checks of a staged chunk (rows [r0, r0 + rows)). */
static int check_chunk(const info_job *J, int64_t r0, int64_t rows)
{
    const int64_t c = J->c;
    if (J->o->cmd == CMD_KL && !J->teacher_logits) {
        const float *q = J->ht;
        for (int64_t i = 0; i < rows; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < c; j++) {
                const float v = q[i * c + j];
                if (!(v >= 0.0f && v < INFINITY))
                    return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                         "%s: row %lld, column %lld: "
                                         "probability %g (must be finite and "
                                         ">= 0)",
                                         J->t_path, (long long)(r0 + i),
                                         (long long)j, (double)v);
                s += (double)v;
            }
            if (!(fabs(s - 1.0) <= J->o->prob_tol))
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s: row %lld: probabilities sum to "
                                     "%.9g, not 1 within --prob-tol %g",
                                     J->t_path, (long long)(r0 + i), s,
                                     J->o->prob_tol);
        }
    }
    if (J->o->cmd == CMD_BCE) {
        const float *y = J->ht;
        for (int64_t k = 0; k < rows * c; k++)
            if (!(y[k] >= 0.0f && y[k] <= 1.0f))
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s: row %lld, column %lld: target %g "
                                     "outside [0, 1]",
                                     J->t_path, (long long)(r0 + k / c),
                                     (long long)(k % c), (double)y[k]);
    }
    return 0;
}

/* Stages rows [r0, r0 + rows) into the host buffers. */
static void stage_chunk(info_job *J, int64_t r0, int64_t rows)
{
    xent_cli_copy_rows(&J->z, r0, rows, J->c, J->z_want, J->hz,
                       J->host_threads);
    switch (J->o->cmd) {
    case CMD_EVAL:
        xent_npy_to_i64(J->t.header.dtype,
                        (const char *)J->t.data +
                            (size_t)r0 * J->t.header.itemsize,
                        J->ht, (size_t)rows);
        break;
    case CMD_KL:
        xent_cli_copy_rows(&J->t, r0, rows, J->c,
                           J->teacher_logits ? J->z_want : XENT_NPY_DTYPE_F32,
                           J->ht, J->host_threads);
        break;
    case CMD_BCE:
        xent_cli_copy_rows(&J->t, r0, rows, J->c, XENT_NPY_DTYPE_F32, J->ht,
                           J->host_threads);
        if (J->o->weight)
            xent_cli_copy_rows(&J->w, r0, rows, J->c, XENT_NPY_DTYPE_F32, J->hw,
                               J->host_threads);
        break;
    default: break;
    }
}

/*
 * One chunk through the library: z, t, w, pw point at the chunk's inputs
 * and loss / grad at its outputs, in the handle's memory space. Reduction
 * NONE: per-row values, and the gradient of their sum times g_scale.
 */
static xent_status call_chunk(const info_job *J, xent_handle_t h, int64_t rows,
                              const void *z, const void *t, const void *w,
                              const float *pw, float *loss, float *grad,
                              xent_eval_accum *acc)
{
    const uint32_t flags = J->dtype != XENT_DTYPE_F32 ? XENT_FLAG_GRAD_F32 : 0;
    xent_upstream u = xent_upstream_default();
    u.scale = J->g_scale;
    switch (J->o->cmd) {
    case CMD_ENTROPY: {
        xent_entropy_desc d;
        xent_entropy_desc_init(&d, rows, J->c);
        d.logits_dtype = J->dtype;
        d.reduction = XENT_REDUCTION_NONE;
        d.flags = flags;
        d.variant = J->variant;
        return J->want_grad
                   ? xent_entropy_forward_backward(h, &d, z, &u, grad, NULL,
                                                   loss, NULL, 0)
                   : xent_entropy_forward(h, &d, z, NULL, loss, NULL, 0);
    }
    case CMD_KL: {
        xent_kl_desc d;
        xent_kl_desc_init(&d, rows, J->c);
        d.logits_dtype = J->dtype;
        d.target_kind =
            J->teacher_logits ? XENT_KL_TARGET_LOGITS : XENT_KL_TARGET_PROBS;
        d.reduction = XENT_REDUCTION_NONE;
        d.prob_tol = (float)J->o->prob_tol;
        d.flags = flags;
        d.variant = J->variant;
        return J->want_grad
                   ? xent_kl_forward_backward(h, &d, z, t, &u, grad, NULL, NULL,
                                              loss, NULL, 0)
                   : xent_kl_forward(h, &d, z, t, NULL, loss, NULL, 0);
    }
    case CMD_BCE: {
        xent_bce_desc d;
        xent_bce_desc_init(&d, rows, J->c);
        d.logits_dtype = J->dtype;
        d.pos_weight = pw;
        d.n_pos_weight = pw ? J->c : 0;
        d.weight = w;
        d.reduction = XENT_REDUCTION_NONE;
        d.flags = flags;
        d.variant = J->variant;
        return J->want_grad
                   ? xent_bce_forward_backward(h, &d, z, t, &u, grad, NULL,
                                               loss, NULL, 0)
                   : xent_bce_forward(h, &d, z, t, NULL, loss, NULL, 0);
    }
    default: {
        xent_ce_desc d;
        xent_ce_desc_init(&d, rows, J->c);
        d.logits_dtype = J->dtype;
        d.target_type = XENT_TARGET_INDEX_I64;
        d.ignore_index = J->o->ignore_index;
        d.variant = (xent_variant)J->o->variant;
        return xent_ce_eval(h, &d, z, t, J->o->topk, NULL, acc);
    }
    }
}

/* The per-row values of a chunk: summed (fp64, row order) and written. */
static int consume(info_job *J, int64_t rows)
{
    int rc = 0;
    if (J->o->cmd != CMD_EVAL) {
        const size_t nv = (size_t)(rows * loss_cols(J));
        for (size_t k = 0; k < nv; k++)
            J->sum += (double)J->hloss[k];
        rc = xent_cli_output_write(&J->out_loss, J->hloss, nv * 4);
        if (!rc && J->want_grad)
            rc = xent_cli_output_write(&J->out_grad, J->hgrad,
                                       (size_t)(rows * J->c) * 4);
    }
    J->done += rows;
    J->chunks++;
    xent_cli_progress_update(&J->bar, J->done);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Backends                                                                 */
/* ------------------------------------------------------------------------ */

static int alloc_host(info_job *J)
{
    const size_t R = (size_t)J->chunk_rows, C = (size_t)J->c;
    J->hz = malloc(R * C * dt_bytes(J->z_want));
    J->ht = t_row_bytes(J) ? malloc(R * t_row_bytes(J)) : NULL;
    J->hw = J->o->weight ? malloc(R * C * 4) : NULL;
    J->hloss = J->o->cmd != CMD_EVAL
                   ? malloc(R * (size_t)loss_cols(J) * sizeof(float))
                   : NULL;
    J->hgrad = J->want_grad ? malloc(R * C * sizeof(float)) : NULL;
    if (!J->hz || (t_row_bytes(J) && !J->ht) || (J->o->weight && !J->hw) ||
        (J->o->cmd != CMD_EVAL && !J->hloss) || (J->want_grad && !J->hgrad))
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                             "out of memory for chunks of %lld rows (try a "
                             "smaller --chunk-rows)",
                             (long long)J->chunk_rows);
    return 0;
}

static int run_cpu(info_job *J, const xent_cli_device *dev)
{
    int rc = alloc_host(J);
    if (rc)
        return rc;
    memset(&J->acc, 0, sizeof J->acc);
    for (int64_t r0 = 0; r0 < J->n && !rc; r0 += J->chunk_rows) {
        const int64_t rows =
            J->n - r0 < J->chunk_rows ? J->n - r0 : J->chunk_rows;
        stage_chunk(J, r0, rows);
        if ((rc = check_chunk(J, r0, rows)))
            break;
        xent_status st = call_chunk(J, dev->handle, rows, J->hz, J->ht, J->hw,
                                    J->pw, J->hloss, J->hgrad, &J->acc);
        if (st != XENT_STATUS_SUCCESS)
            return lib_failed(J, st);
        rc = consume(J, rows);
    }
    return rc;
}

static void free_device(info_job *J)
{
    void *d[] = {J->dz, J->dt, J->dw, J->dpw, J->dloss, J->dgrad, J->dacc};
    for (size_t k = 0; k < sizeof d / sizeof d[0]; k++)
        if (d[k])
            (void)cudaFree(d[k]);
    J->dz = J->dt = J->dw = J->dpw = NULL;
    J->dloss = J->dgrad = NULL;
    J->dacc = NULL;
}

static cudaError_t alloc_device(info_job *J)
{
    const size_t R = (size_t)J->chunk_rows, C = (size_t)J->c;
    cudaError_t e = cudaMalloc(&J->dz, R * C * dt_bytes(J->z_want));
    if (e == cudaSuccess && t_row_bytes(J))
        e = cudaMalloc(&J->dt, R * t_row_bytes(J));
    if (e == cudaSuccess && J->o->weight)
        e = cudaMalloc(&J->dw, R * C * 4);
    if (e == cudaSuccess && J->pw)
        e = cudaMalloc(&J->dpw, C * 4);
    if (e == cudaSuccess && J->pw)
        e = cudaMemcpy(J->dpw, J->pw, C * 4, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && J->o->cmd != CMD_EVAL)
        e = cudaMalloc((void **)&J->dloss, R * (size_t)loss_cols(J) * 4);
    if (e == cudaSuccess && J->want_grad)
        e = cudaMalloc((void **)&J->dgrad, R * C * 4);
    if (e == cudaSuccess && J->o->cmd == CMD_EVAL)
        e = cudaMalloc((void **)&J->dacc, sizeof(xent_eval_accum));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        free_device(J);
    }
    return e;
}

/* The library's AUTO rule (host/api.c) resolved once for the whole batch,
 * so that every chunk runs the same variant. */
static xent_variant resolve_variant(const info_job *J,
                                    const xent_cli_device *dev)
{
    if (J->o->variant != XENT_VARIANT_AUTO || !dev->is_cuda)
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

static int run_gpu(info_job *J, const xent_cli_device *dev, int forced)
{
    xent_handle_t h = dev->handle;
    cudaError_t e;
    /* device buffers: halve a default chunk until they fit */
    for (;;) {
        e = alloc_device(J);
        if (e == cudaSuccess)
            break;
        if (e != cudaErrorMemoryAllocation || forced || J->chunk_rows == 1)
            return cuda_failed(e);
        J->chunk_rows = (J->chunk_rows + 1) / 2;
    }
    int rc = alloc_host(J);
    if (rc)
        goto out;
    const size_t C = (size_t)J->c;
    xent_status st;
    if (J->o->cmd == CMD_EVAL &&
        (st = xent_eval_accum_reset(h, J->dacc)) != XENT_STATUS_SUCCESS) {
        rc = lib_failed(J, st);
        goto out;
    }
    for (int64_t r0 = 0; r0 < J->n && !rc; r0 += J->chunk_rows) {
        const int64_t rows =
            J->n - r0 < J->chunk_rows ? J->n - r0 : J->chunk_rows;
        const size_t r = (size_t)rows;
        stage_chunk(J, r0, rows);
        if ((rc = check_chunk(J, r0, rows)))
            break;
        /* the default stream: copies and kernels run in order */
        e = cudaMemcpy(J->dz, J->hz, r * C * dt_bytes(J->z_want),
                       cudaMemcpyHostToDevice);
        if (e == cudaSuccess && J->dt)
            e = cudaMemcpy(J->dt, J->ht, r * t_row_bytes(J),
                           cudaMemcpyHostToDevice);
        if (e == cudaSuccess && J->dw)
            e = cudaMemcpy(J->dw, J->hw, r * C * 4, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            rc = cuda_failed(e);
            break;
        }
        st = call_chunk(J, h, rows, J->dz, J->dt, J->dw, J->dpw, J->dloss,
                        J->dgrad, J->dacc);
        if (st != XENT_STATUS_SUCCESS) {
            rc = lib_failed(J, st);
            break;
        }
        if (J->dloss)
            e = cudaMemcpy(J->hloss, J->dloss, r * (size_t)loss_cols(J) * 4,
                           cudaMemcpyDeviceToHost);
        if (e == cudaSuccess && J->dgrad)
            e = cudaMemcpy(J->hgrad, J->dgrad, r * C * 4,
                           cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            rc = cuda_failed(e);
            break;
        }
        rc = consume(J, rows);
    }
    if (!rc && J->dacc) {
        e = cudaMemcpy(&J->acc, J->dacc, sizeof J->acc, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess)
            rc = cuda_failed(e);
    }
    if (!rc) { /* guard: the host checks found the bad data first */
        xent_data_report rep = {0, -1};
        st = xent_read_data_report(h, &rep, 1);
        if (st != XENT_STATUS_SUCCESS)
            rc = lib_failed(J, st);
        else if (rep.flags)
            rc = xent_cli_fail(XENT_CLI_EXIT_USAGE,
                               "%s: the GPU reports invalid data (flags "
                               "%#x, row %lld of a chunk)",
                               k_cmd_names[J->o->cmd], rep.flags,
                               (long long)rep.first_row);
    }
out:
    free_device(J);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

static void print_result(const info_job *J, const xent_cli_device *dev,
                         double seconds)
{
    const info_opts *o = J->o;
    const char *red = (o->cmd == CMD_KL ? k_red_kl : k_red)[o->reduction];
    if (o->cmd == CMD_EVAL) {
        xent_eval_summary s;
        (void)xent_eval_summarize(&J->acc, &s);
        if (o->common.json) {
            xent_json j;
            xent_json_start(&j, stdout);
            xent_json_num(&j, "mean_nll", s.mean_nll);
            xent_json_num(&j, "perplexity", s.perplexity);
            xent_json_num(&j, "accuracy", s.accuracy);
            xent_json_num(&j, "topk_accuracy", s.topk_accuracy);
            xent_json_int(&j, "top_k", o->topk);
            xent_json_num(&j, "mean_entropy", s.mean_entropy);
            xent_json_int(&j, "tokens", s.tokens);
            xent_json_num(&j, "nll_sum", s.nll_sum);
            xent_json_num(&j, "entropy_sum", s.entropy_sum);
            xent_json_int(&j, "nonfinite_rows", s.nonfinite);
            xent_json_int(&j, "rows", J->n);
            xent_json_int(&j, "ignored_rows", J->n_ignored);
            xent_json_int(&j, "classes", J->c);
            xent_json_str(&j, "logits_dtype",
                          xent_npy_dtype_name(J->z.header.dtype));
            xent_json_str(&j, "device", dev->label);
            xent_json_int(&j, "chunk_rows", J->chunk_rows);
            xent_json_int(&j, "chunks", J->chunks);
            xent_json_fix(&j, "seconds", seconds, 6);
            xent_json_finish(&j);
            return;
        }
        printf("mean NLL:        %.9g\n", s.mean_nll);
        printf("perplexity:      %.9g\n", s.perplexity);
        printf("accuracy:        %.9g\n", s.accuracy);
        printf("top-%lld accuracy: %.9g\n", (long long)o->topk,
               s.topk_accuracy);
        printf("mean entropy:    %.9g\n", s.mean_entropy);
        printf("tokens:          %lld (of %lld rows, %lld ignored)\n",
               (long long)s.tokens, (long long)J->n, (long long)J->n_ignored);
        if (s.nonfinite)
            printf("non-finite rows: %lld\n", (long long)s.nonfinite);
        printf("%s, %lld chunk%s, %.3f s\n", dev->label, (long long)J->chunks,
               J->chunks == 1 ? "" : "s", seconds);
        fflush(stdout);
        return;
    }
    const int has = o->reduction != RED_NONE;
    const double value = o->reduction == RED_SUM
                             ? J->sum
                             : (J->denom > 0.0 ? J->sum / J->denom : 0.0);
    if (o->common.json) {
        xent_json j;
        xent_json_start(&j, stdout);
        if (has)
            xent_json_num(&j, "loss", value);
        else
            xent_json_null(&j, "loss");
        xent_json_str(&j, "op", k_cmd_names[o->cmd]);
        xent_json_str(&j, "reduction", red);
        xent_json_num(&j, "loss_sum", J->sum);
        xent_json_int(&j, "rows", J->n);
        xent_json_int(&j, "classes", J->c);
        xent_json_str(&j, "logits_dtype",
                      xent_npy_dtype_name(J->z.header.dtype));
        xent_json_str(&j, "device", dev->label);
        xent_json_int(&j, "chunk_rows", J->chunk_rows);
        xent_json_int(&j, "chunks", J->chunks);
        if (dev->is_cuda)
            xent_json_str(&j, "variant", xent_variant_name(J->variant));
        xent_json_fix(&j, "seconds", seconds, 6);
        xent_json_finish(&j);
        return;
    }
    if (has)
        printf("%s (%s): %.9g\n", k_cmd_names[o->cmd], red, value);
    else
        printf("%s (none): per-%s values; their sum is %.9g\n",
               k_cmd_names[o->cmd], o->cmd == CMD_BCE ? "element" : "row",
               J->sum);
    printf("%lld rows x %lld classes (%s logits), %s, %lld chunk%s, %.3f s\n",
           (long long)J->n, (long long)J->c,
           xent_npy_dtype_name(J->z.header.dtype), dev->label,
           (long long)J->chunks, J->chunks == 1 ? "" : "s", seconds);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* The commands                                                             */
/* ------------------------------------------------------------------------ */

/* Default rows per chunk: CPU 64 MiB of float32 logits; GPU at most 256
 * MiB of logits and, with every buffer, a quarter of the free memory. */
static int64_t default_rows(const info_job *J, const xent_cli_device *dev)
{
    const size_t zr = (size_t)J->c * dt_bytes(J->z_want);
    if (!dev->is_cuda) {
        size_t r = ((size_t)64 << 20) / ((size_t)J->c * 4);
        return r < 1 ? 1 : (int64_t)r;
    }
    const size_t per_row =
        zr + t_row_bytes(J) + (J->o->weight ? (size_t)J->c * 4 : 0) +
        (size_t)loss_cols(J) * 4 + (J->want_grad ? (size_t)J->c * 4 : 0);
    const size_t cap = ((size_t)256 << 20) / zr;
    const size_t fr = dev->free_bytes ? dev->free_bytes : ((size_t)4 << 30);
    const size_t mem = fr / 4 / per_row;
    const size_t r = cap < mem ? cap : mem;
    return r < 1 ? 1 : (int64_t)r;
}

static int run_command(info_opts *o, xent_cli_spec *spec, int argc, char **argv)
{
    int rc = xent_cli_parse(spec, argc, argv);
    if (rc == XENT_CLI_HELP_SHOWN)
        return XENT_CLI_EXIT_OK;
    if (rc)
        return rc;
    const char *name = k_cmd_names[o->cmd];
    xent_cli_common *cm = &o->common;
    if (!o->logits)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: --logits is required (see 'xent %s --help')",
                             name, name);
    if (o->cmd == CMD_KL && !o->target_logits == !o->target_probs)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "kl: give exactly one of --target-logits and "
                             "--target-probs");
    if ((o->cmd == CMD_BCE || o->cmd == CMD_EVAL) && !o->targets)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: --targets is required (see 'xent %s "
                             "--help')",
                             name, name);
    if ((rc = xent_cli_device_check(cm->device)) != 0)
        return rc;
    int64_t chunk_rows = 0;
    if ((rc = xent_cli_chunk_rows(cm->chunk_rows, &chunk_rows)) != 0)
        return rc;
    {
        const char *paths[] = {o->loss_out, o->grad_out};
        const char *flags[] = {"--loss-out", "--grad-out"};
        if ((rc = xent_cli_distinct_outputs(paths, flags, 2)) != 0)
            return rc;
    }

    info_job J;
    memset(&J, 0, sizeof J);
    J.o = o;
    J.want_grad = o->grad_out != NULL;
    J.out_loss.w.fd = J.out_grad.w.fd = -1;
    xent_cli_device dev;
    memset(&dev, 0, sizeof dev);

    /* ---- inputs ---- */
    if ((rc = xent_cli_open_logits(&J.z, o->logits, cm->bf16, &J.n, &J.c)))
        goto done;
    int convert = 0;
    J.dtype = xent_cli_logits_dtype(J.z.header.dtype, &convert);
    J.z_want = convert ? XENT_NPY_DTYPE_F32 : J.z.header.dtype;
    if (o->cmd == CMD_KL && o->target_logits) {
        J.teacher_logits = 1;
        J.t_path = o->target_logits;
        int64_t tn = 0, tc = 0;
        if ((rc = xent_cli_open_logits(&J.t, o->target_logits, cm->bf16, &tn,
                                       &tc)))
            goto done;
        if (tn != J.n || tc != J.c) {
            rc = xent_cli_fail(XENT_CLI_EXIT_USAGE,
                               "%s: teacher logits of shape (%lld, %lld) for "
                               "logits of shape (%lld, %lld) in %s",
                               o->target_logits, (long long)tn, (long long)tc,
                               (long long)J.n, (long long)J.c, o->logits);
            goto done;
        }
        /* the library takes both in one dtype: float32 unless they agree */
        int tconv = 0;
        xent_dtype tdt = xent_cli_logits_dtype(J.t.header.dtype, &tconv);
        if (tdt != J.dtype || tconv != convert) {
            J.dtype = XENT_DTYPE_F32;
            J.z_want = XENT_NPY_DTYPE_F32;
        }
    } else if (o->cmd == CMD_KL) {
        J.t_path = o->target_probs;
        if ((rc = xent_cli_open_probs(&J.t, o->target_probs, J.n, J.c,
                                      o->logits)))
            goto done;
    } else if (o->cmd == CMD_BCE) {
        J.t_path = o->targets;
        if ((rc = xent_cli_open_matrix(&J.t, o->targets, J.n, J.c, "targets",
                                       o->logits)))
            goto done;
        if (o->weight && (rc = xent_cli_open_matrix(&J.w, o->weight, J.n, J.c,
                                                    "weight", o->logits)))
            goto done;
        if (o->pos_weight &&
            (rc = load_pos_weight(o->pos_weight, J.c, o->logits, &J.pw)))
            goto done;
    } else if (o->cmd == CMD_EVAL) {
        J.t_path = o->targets;
        if ((rc = xent_cli_open_targets(&J.t, o->targets, J.n, o->logits)))
            goto done;
        double wsum = 0.0;
        if ((rc = xent_cli_scan_targets(&J.t, J.c, o->ignore_index, NULL, &wsum,
                                        &J.n_ignored)))
            goto done;
        if (J.c > (int64_t)INT32_MAX - 1) {
            rc = xent_cli_fail(XENT_CLI_EXIT_USAGE,
                               "eval: %lld classes (at most 2^31 - 2)",
                               (long long)J.c);
            goto done;
        }
    }
    J.denom = o->cmd == CMD_BCE ? (double)J.n * (double)J.c : (double)J.n;
    J.g_scale = o->reduction == RED_MEAN && J.denom > 0.0
                    ? (float)(1.0 / J.denom)
                    : 1.0f;

    /* ---- outputs: temporary files until the end ---- */
    if (o->loss_out) {
        int64_t shape[2] = {J.n, J.c};
        if ((rc = xent_cli_output_open(&J.out_loss, "--loss-out", o->loss_out,
                                       XENT_NPY_DTYPE_F32,
                                       o->cmd == CMD_BCE ? 2 : 1, shape)))
            goto done;
    }
    if (o->grad_out) {
        int64_t shape[2] = {J.n, J.c};
        if ((rc = xent_cli_output_open(&J.out_grad, "--grad-out", o->grad_out,
                                       XENT_NPY_DTYPE_F32, 2, shape)))
            goto done;
    }

    /* ---- device and chunking ---- */
    double t0 = xent_cli_now();
    if ((rc = xent_cli_device_open(cm->device, cm->threads, &dev)))
        goto done;
    J.host_threads =
        cm->threads > 0 ? (int)cm->threads : xent_bench_cpu_count();
    if (dev.is_cuda && J.host_threads > 8 && cm->threads == 0)
        J.host_threads = 8;
    const int forced = chunk_rows > 0;
    if (!forced)
        chunk_rows = default_rows(&J, &dev);
    J.chunk_rows = J.n == 0 ? 0 : (chunk_rows < J.n ? chunk_rows : J.n);
    J.variant = resolve_variant(&J, &dev);

    xent_cli_progress_start(&J.bar, cm->progress, J.n, "rows");
    if (J.n > 0)
        rc = dev.is_cuda ? run_gpu(&J, &dev, forced) : run_cpu(&J, &dev);
    xent_cli_progress_end(&J.bar);
    if (rc)
        goto done;
    if ((rc = xent_cli_output_commit(&J.out_loss)) ||
        (rc = xent_cli_output_commit(&J.out_grad)))
        goto done;
    print_result(&J, &dev, xent_cli_now() - t0);

done:
    xent_cli_progress_end(&J.bar);
    xent_cli_output_abort(&J.out_loss);
    xent_cli_output_abort(&J.out_grad);
    xent_npy_close(&J.z);
    xent_npy_close(&J.t);
    xent_npy_close(&J.w);
    free(J.pw);
    free(J.hz);
    free(J.ht);
    free(J.hw);
    free(J.hloss);
    free(J.hgrad);
    xent_cli_device_close(&dev);
    return rc;
}

static const char k_epilog_common[] =
    "Inputs: logits float32/float16/float64 (float64 is converted to\n"
    "float32; 2-byte data is float16, or bfloat16 with --bf16). Outputs are\n"
    "float32. The rows stream through in chunks; the results do not depend\n"
    "on the chunk size. --json prints one object as the last line of\n"
    "stdout (\"loss\" is null under none).\n"
    "Exit status: 0 ok, 1 runtime failure, 2 bad usage or input (nothing\n"
    "is written).";

#define INFO_COMMON_OPTS(cm)                                                   \
    {"--variant",                                                              \
     XENT_CLI_OPT_CHOICE,                                                      \
     &o.variant,                                                               \
     NULL,                                                                     \
     "GPU kernel variant (default auto: chosen once\nfor the whole batch)",    \
     k_variants,                                                               \
     0,                                                                        \
     0,                                                                        \
     0},                                                                       \
        XENT_CLI_OPT_DEVICE(cm), XENT_CLI_OPT_THREADS(cm),                     \
        XENT_CLI_OPT_JSON(cm), XENT_CLI_OPT_BF16(cm),                          \
        XENT_CLI_OPT_CHUNK_ROWS(cm), XENT_CLI_OPT_PROGRESS(cm)

int xent_cli_entropy_main(int argc, char **argv)
{
    info_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = CMD_ENTROPY;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--logits", XENT_CLI_OPT_STRING, &o.logits, "Z.npy",
         "logits (N, C): float32, float16, float64", NULL, 0, 0, 0},
        {"--reduction", XENT_CLI_OPT_CHOICE, &o.reduction, NULL,
         "reduction of the row entropies (default mean)", k_red, 0, 0, 0},
        {"--loss-out", XENT_CLI_OPT_STRING, &o.loss_out, "ROWS.npy",
         "write the per-row entropies, float32 (N,)", NULL, 0, 0, 0},
        {"--grad-out", XENT_CLI_OPT_STRING, &o.grad_out, "G.npy",
         "write the gradient w.r.t. the logits,\nfloat32 (N, C)", NULL, 0, 0,
         0},
        INFO_COMMON_OPTS(cm),
    };
    xent_cli_spec spec = {
        "entropy",
        "xent entropy --logits Z.npy [--reduction mean|sum|none]\n"
        "             [--loss-out ROWS.npy] [--grad-out G.npy]\n"
        "             [--device auto|cpu|cuda[:N]] [--threads N] [--json]\n"
        "             [--bf16] [--chunk-rows N] [--progress] [--variant V]",
        "Entropy of softmax(z) per row, H = lse(z) - sum_j p_j z_j\n"
        "(torch.distributions.Categorical(logits=z).entropy()), reduced by\n"
        "mean (over rows), sum or none, and its gradient\n"
        "dH/dz_j = -p_j (z_j - sum_k p_k z_k).",
        k_epilog_common,
        opts,
        (int)(sizeof opts / sizeof opts[0])};
    return run_command(&o, &spec, argc, argv);
}

int xent_cli_kl_main(int argc, char **argv)
{
    info_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = CMD_KL;
    o.prob_tol = XENT_KL_DEFAULT_PROB_TOL;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--logits", XENT_CLI_OPT_STRING, &o.logits, "Z.npy",
         "student logits (N, C): float32, float16,\nfloat64", NULL, 0, 0, 0},
        {"--target-logits", XENT_CLI_OPT_STRING, &o.target_logits, "Y.npy",
         "teacher logits (N, C): q = softmax(Y)", NULL, 0, 0, 0},
        {"--target-probs", XENT_CLI_OPT_STRING, &o.target_probs, "Q.npy",
         "teacher probabilities (N, C), rows summing\nto 1", NULL, 0, 0, 0},
        {"--prob-tol", XENT_CLI_OPT_FLOAT, &o.prob_tol, "T",
         "accepted |sum of a probability row - 1|\n(default 1e-3)", NULL, 0,
         XENT_CLI_NO_MAX, 0},
        {"--reduction", XENT_CLI_OPT_CHOICE, &o.reduction, NULL,
         "reduction of the rows (default batchmean:\nthe sum over N)", k_red_kl,
         0, 0, 0},
        {"--loss-out", XENT_CLI_OPT_STRING, &o.loss_out, "ROWS.npy",
         "write the per-row KL, float32 (N,)", NULL, 0, 0, 0},
        {"--grad-out", XENT_CLI_OPT_STRING, &o.grad_out, "G.npy",
         "write the gradient w.r.t. the student\nlogits, float32 (N, C)", NULL,
         0, 0, 0},
        INFO_COMMON_OPTS(cm),
    };
    xent_cli_spec spec = {
        "kl",
        "xent kl --logits Z.npy (--target-logits Y.npy | --target-probs "
        "Q.npy)\n"
        "        [--reduction batchmean|sum|none] [--prob-tol T]\n"
        "        [--loss-out ROWS.npy] [--grad-out G.npy]\n"
        "        [--device auto|cpu|cuda[:N]] [--threads N] [--json]\n"
        "        [--bf16] [--chunk-rows N] [--progress] [--variant V]",
        "KL divergence KL(q || p) = sum_j q_j (log q_j - log p_j) per row,\n"
        "p = softmax(Z) the student and q the teacher: softmax(Y) for teacher\n"
        "logits (distillation) or the probabilities Q; terms with q_j = 0\n"
        "are 0. As torch.nn.functional.kl_div(log_softmax(Z), target,\n"
        "reduction, log_target). The gradient w.r.t. Z is p sum(q) - q.",
        k_epilog_common,
        opts,
        (int)(sizeof opts / sizeof opts[0])};
    return run_command(&o, &spec, argc, argv);
}

int xent_cli_bce_main(int argc, char **argv)
{
    info_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = CMD_BCE;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--logits", XENT_CLI_OPT_STRING, &o.logits, "Z.npy",
         "logits (N, C): float32, float16, float64", NULL, 0, 0, 0},
        {"--targets", XENT_CLI_OPT_STRING, &o.targets, "T.npy",
         "targets (N, C) in [0, 1]", NULL, 0, 0, 0},
        {"--pos-weight", XENT_CLI_OPT_STRING, &o.pos_weight, "P.npy",
         "weight of the positive term per class\n(C,), >= 0", NULL, 0, 0, 0},
        {"--weight", XENT_CLI_OPT_STRING, &o.weight, "W.npy",
         "elementwise weight (N, C)", NULL, 0, 0, 0},
        {"--reduction", XENT_CLI_OPT_CHOICE, &o.reduction, NULL,
         "reduction of the elements (default mean:\nover N * C)", k_red, 0, 0,
         0},
        {"--loss-out", XENT_CLI_OPT_STRING, &o.loss_out, "L.npy",
         "write the per-element losses, float32\n(N, C)", NULL, 0, 0, 0},
        {"--grad-out", XENT_CLI_OPT_STRING, &o.grad_out, "G.npy",
         "write the gradient w.r.t. the logits,\nfloat32 (N, C)", NULL, 0, 0,
         0},
        INFO_COMMON_OPTS(cm),
    };
    xent_cli_spec spec = {
        "bce",
        "xent bce --logits Z.npy --targets T.npy [--pos-weight P.npy]\n"
        "         [--weight W.npy] [--reduction mean|sum|none]\n"
        "         [--loss-out L.npy] [--grad-out G.npy]\n"
        "         [--device auto|cpu|cuda[:N]] [--threads N] [--json]\n"
        "         [--bf16] [--chunk-rows N] [--progress] [--variant V]",
        "Binary cross-entropy with logits, elementwise:\n"
        "l = w [p y log(1 + e^-z) + (1 - y) log(1 + e^z)], stable for any |z|\n"
        "(torch.nn.functional.binary_cross_entropy_with_logits with\n"
        "pos_weight p and weight w), reduced by mean (over N * C), sum or\n"
        "none.",
        k_epilog_common,
        opts,
        (int)(sizeof opts / sizeof opts[0])};
    return run_command(&o, &spec, argc, argv);
}

int xent_cli_eval_main(int argc, char **argv)
{
    info_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = CMD_EVAL;
    o.topk = 5;
    o.ignore_index = XENT_DEFAULT_IGNORE_INDEX;
    xent_cli_common *cm = &o.common;
    xent_cli_opt opts[] = {
        {"--logits", XENT_CLI_OPT_STRING, &o.logits, "Z.npy",
         "logits (N, C): float32, float16, float64", NULL, 0, 0, 0},
        {"--targets", XENT_CLI_OPT_STRING, &o.targets, "T.npy",
         "class indices (N,): int32 or int64", NULL, 0, 0, 0},
        {"--topk", XENT_CLI_OPT_INT, &o.topk, "K",
         "k of the top-k accuracy (default 5)", NULL, 1, 9.2e18, 0},
        {"--ignore-index", XENT_CLI_OPT_INT, &o.ignore_index, "K",
         "rows whose target is K are not counted\n(default -100)", NULL,
         -9.2e18, 9.2e18, 0},
        INFO_COMMON_OPTS(cm),
    };
    xent_cli_spec spec = {
        "eval",
        "xent eval --logits Z.npy --targets T.npy [--topk K] [--ignore-index "
        "K]\n"
        "          [--device auto|cpu|cuda[:N]] [--threads N] [--json]\n"
        "          [--bf16] [--chunk-rows N] [--progress] [--variant V]",
        "Evaluation statistics of a corpus in one pass over the logits:\n"
        "mean NLL (-log p of the target), perplexity exp(mean NLL), accuracy\n"
        "(argmax == target), top-k accuracy (fewer than k classes strictly\n"
        "above the target) and the mean entropy of softmax(Z), over the rows\n"
        "that are not ignored. The sums are exact fixed-point integers\n"
        "(2^-32 per row), so they do not depend on the chunk size.",
        "Inputs: logits float32/float16/float64 (float64 is converted to\n"
        "float32; 2-byte data is float16, or bfloat16 with --bf16); targets\n"
        "int32/int64. --json prints {\"mean_nll\", \"perplexity\",\n"
        "\"accuracy\", \"topk_accuracy\", \"mean_entropy\", \"tokens\", ...}\n"
        "as the last line of stdout.\n"
        "Exit status: 0 ok, 1 runtime failure, 2 bad usage or input.",
        opts,
        (int)(sizeof opts / sizeof opts[0])};
    return run_command(&o, &spec, argc, argv);
}
