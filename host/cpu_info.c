/*
 * cpu_info.c - the CPU backend of entropy, KL divergence, binary
 * cross-entropy and the evaluation statistics (xent_ce_eval).
 *
 * The per-row math is cuda/xent_bridge.h's, shared with the CUDA kernels
 * (cuda/info.cu): one thread folds a whole row in chunks of
 * XENT_INFO_CHUNK consecutive columns into the row state
 * (xent_*_add_chunk), finishes it (xent_*_finish) and, for gradients,
 * reads the row a second time. f16 / bf16 logits are converted chunk by
 * chunk.
 *
 * Rows are split into contiguous ranges over n_threads POSIX threads (the
 * pattern of host/cpu_ce.c). Every row's result depends only on that row,
 * so the outputs are bitwise the same for any thread count; the corpus
 * sums of xent_ce_eval are exact integers (each thread keeps its own and
 * they are added at the end), so they are too. Nothing is allocated.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- element access ----------------------------------------------------- */

/* out[k] = element off + k of an [.., ld] matrix of dtype t, as float. */
static void load_chunk(const void *base, xent_dtype t, int64_t off, int n,
                       float *out)
{
    if (t == XENT_DTYPE_F32) {
        memcpy(out, (const float *)base + off, (size_t)n * sizeof(float));
    } else if (t == XENT_DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)base + off;
        for (int k = 0; k < n; k++)
            out[k] = xent_f16_to_f32(h[k]);
    } else {
        const uint16_t *h = (const uint16_t *)base + off;
        for (int k = 0; k < n; k++)
            out[k] = xent_bf16_to_f32(h[k]);
    }
}

/* One gradient value: float when grad_f32 (or fp32 logits), else the
 * logits' half type (round to nearest even). */
static void store_one(void *grad, xent_dtype t, int grad_f32, int64_t off,
                      float v)
{
    if (grad_f32 || t == XENT_DTYPE_F32)
        ((float *)grad)[off] = v;
    else if (t == XENT_DTYPE_F16)
        ((uint16_t *)grad)[off] = xent_f32_to_f16(v);
    else
        ((uint16_t *)grad)[off] = xent_f32_to_bf16(v);
}

static void record(xent_status_word *w, uint32_t flag, int64_t row)
{
    w->flags |= flag;
    if ((uint64_t)row < w->first_row)
        w->first_row = (uint64_t)row;
}

static int chunk_n(int64_t c, int64_t j0)
{
    return c - j0 < XENT_INFO_CHUNK ? (int)(c - j0) : XENT_INFO_CHUNK;
}

/* The gradient scale of row i (scalar upstream). */
static float row_g(const xent_info_params *p, int64_t i)
{
    const float u = p->dloss ? p->dloss[i * p->dloss_stride] : 1.0f;
    return xent_row_scale(p->scale, u, p->denom);
}

/* ---- one row of each op ------------------------------------------------- */

static void entropy_row(const xent_info_params *p, int64_t i)
{
    const int64_t c = p->n_classes, base = i * p->ld;
    float z[XENT_INFO_CHUNK];
    xent_ent_acc acc;
    xent_ent_init(&acc);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        xent_ent_add_chunk(&acc, z, n);
    }
    const xent_ent_fin fin = xent_ent_finish(acc);
    if (p->loss_rows)
        p->loss_rows[i] = fin.h;
    if (!p->grad)
        return;
    const float g = row_g(p, i);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        for (int k = 0; k < n; k++)
            store_one(p->grad, p->logits_dtype, p->grad_f32, base + j0 + k,
                      xent_ent_grad(&fin, z[k], g));
    }
}

static void klp_row(const xent_info_params *p, int64_t i, xent_status_word *w)
{
    const int64_t c = p->n_classes, base = i * p->ld;
    const float *q = (const float *)p->target + i * p->target_ld;
    float z[XENT_INFO_CHUNK];
    xent_klp_acc acc;
    xent_klp_init(&acc);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        xent_klp_add_chunk(&acc, z, q + j0, n);
    }
    const xent_kl_fin fin = xent_klp_finish(acc, p->prob_tol);
    if (fin.bad)
        record(w, XENT_DATA_INVALID_PROBS, i);
    if (p->loss_rows)
        p->loss_rows[i] = fin.bad ? NAN : fin.kl;
    if (!p->grad)
        return;
    const float g = fin.bad ? NAN : row_g(p, i);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        for (int k = 0; k < n; k++)
            store_one(p->grad, p->logits_dtype, p->grad_f32, base + j0 + k,
                      g * (fin.qsum * xent_kl_p(&fin, z[k]) - q[j0 + k]));
    }
}

static void klt_row(const xent_info_params *p, int64_t i)
{
    const int64_t c = p->n_classes, zb = i * p->ld, tb = i * p->target_ld;
    float z[XENT_INFO_CHUNK], t[XENT_INFO_CHUNK];
    xent_klt_acc acc;
    xent_klt_init(&acc);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, zb + j0, n, z);
        load_chunk(p->target, p->logits_dtype, tb + j0, n, t);
        xent_klt_add_chunk(&acc, z, t, n);
    }
    const xent_kl_fin fin = xent_klt_finish(acc);
    if (p->loss_rows)
        p->loss_rows[i] = fin.kl;
    if (!p->grad && !p->grad_target)
        return;
    const float g = row_g(p, i);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        /* the whole chunk is read before any of it is written (in place) */
        load_chunk(p->logits, p->logits_dtype, zb + j0, n, z);
        load_chunk(p->target, p->logits_dtype, tb + j0, n, t);
        for (int k = 0; k < n; k++) {
            const float q = xent_kl_q(&fin, t[k]);
            if (p->grad)
                store_one(p->grad, p->logits_dtype, p->grad_f32, zb + j0 + k,
                          g * (xent_kl_p(&fin, z[k]) - q));
            if (p->grad_target)
                store_one(p->grad_target, p->logits_dtype, p->grad_f32,
                          tb + j0 + k, xent_kl_grad_t(&fin, z[k], t[k], q, g));
        }
    }
}

static void bce_row(const xent_info_params *p, int64_t i, xent_status_word *w)
{
    const int64_t c = p->n_classes, base = i * p->ld;
    const float *y = (const float *)p->target + i * p->target_ld;
    const float *wr = p->weight ? p->weight + i * p->weight_ld : NULL;
    const int elem_up = p->dloss && p->dloss_stride != 0;
    const float g_row = elem_up ? 0.0f : row_g(p, i);
    const float *ur = elem_up ? p->dloss + i * p->dloss_stride : NULL;
    float z[XENT_INFO_CHUNK];
    double sum = 0.0;
    uint32_t flags = 0u;
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        for (int k = 0; k < n; k++) {
            const int64_t j = j0 + k;
            const float pw = p->pos_weight ? p->pos_weight[j] : 1.0f;
            const float wj = wr ? wr[j] : 1.0f;
            float d;
            float l = xent_bce_elem(z[k], y[j], pw, wj, &d);
            uint32_t f = 0u;
            if (!(y[j] >= 0.0f && y[j] <= 1.0f))
                f |= XENT_DATA_TARGET_OUTSIDE_01;
            if (!(pw >= 0.0f))
                f |= XENT_DATA_NEGATIVE_WEIGHT;
            if (f) {
                l = NAN;
                d = NAN;
                flags |= f;
            }
            sum += (double)l;
            if (p->loss_elems)
                p->loss_elems[base + j] = l;
            if (p->grad) {
                const float g = elem_up ? p->scale * ur[j] : g_row;
                store_one(p->grad, p->logits_dtype, p->grad_f32, base + j,
                          g * d);
            }
        }
    }
    if (flags)
        record(w, flags, i);
    if (p->loss_rows)
        p->loss_rows[i] = (float)sum;
}

/* ---- evaluation statistics, one row ------------------------------------- */

static int64_t eval_target(const xent_eval_params *p, int64_t i)
{
    if (p->target_type == XENT_TARGET_INDEX_I32)
        return ((const int32_t *)p->targets)[i];
    return ((const int64_t *)p->targets)[i];
}

static void eval_row(const xent_eval_params *p, int64_t i, xent_status_word *w,
                     xent_eval_accum *acc_sum)
{
    const int64_t c = p->n_classes, base = i * p->ld;
    int64_t y = eval_target(p, i);
    int kind = 0; /* 0 ok, 1 ignored, 2 bad */
    float wy = 1.0f, zy = INFINITY;
    if (y == p->ignore_index) {
        kind = 1;
    } else if (y < 0 || y >= c) {
        kind = 2;
        record(w, XENT_DATA_TARGET_OUT_OF_RANGE, i);
    } else {
        wy = p->weights ? p->weights[y] : 1.0f;
        if (!(wy >= 0.0f)) { /* negative or NaN */
            kind = 2;
            record(w, XENT_DATA_NEGATIVE_WEIGHT, i);
        }
    }
    const int ok = kind == 0;
    if (ok) {
        load_chunk(p->logits, p->logits_dtype, base + y, 1, &zy);
        zy = xent_cap(zy, p->softcap);
    } else {
        y = -1;
    }
    const int smooth = ok && p->label_smoothing > 0.0f;

    float z[XENT_INFO_CHUNK], v[XENT_INFO_CHUNK];
    xent_eval_acc acc;
    xent_eval_init(&acc, (int32_t)y);
    for (int64_t j0 = 0; j0 < c; j0 += XENT_INFO_CHUNK) {
        const int n = chunk_n(c, j0);
        load_chunk(p->logits, p->logits_dtype, base + j0, n, z);
        for (int k = 0; k < n; k++) {
            z[k] = xent_cap(z[k], p->softcap);
            v[k] = smooth ? (p->weights ? p->weights[j0 + k] : 1.0f) : 0.0f;
        }
        const int yu = xent_eval_target_lane(y, j0, 1, n);
        xent_eval_add_chunk(&acc, z, v, n, j0, 1, yu, zy, smooth);
    }
    const xent_eval_row r = xent_eval_finish(
        acc, ok, y, zy, wy, p->label_smoothing, 1.0f / (float)c, p->z_loss);
    const int bad = kind == 2;
    if (p->loss)
        p->loss[i] = bad ? NAN : r.loss;
    if (p->lse)
        p->lse[i] = r.lse;
    if (p->entropy)
        p->entropy[i] = r.entropy;
    if (p->zloss)
        p->zloss[i] = bad ? NAN : r.zloss;
    if (p->argmax)
        p->argmax[i] = r.argmax;
    if (p->rank)
        p->rank[i] = r.rank;
    if (p->correct)
        p->correct[i] = (uint8_t)r.correct;
    if (acc_sum && ok) {
        xent_eval_accum one;
        memset(&one, 0, sizeof one);
        xent_u128 a, b;
        const int fa = xent_fixed32(r.nll, &a);
        const int fb = xent_fixed32(r.entropy, &b);
        one.nll[0] = (uint64_t)a;
        one.nll[1] = (uint64_t)(a >> 64);
        one.entropy[0] = (uint64_t)b;
        one.entropy[1] = (uint64_t)(b >> 64);
        one.tokens = 1;
        one.top1 = r.correct;
        one.topk = r.rank >= 0 && r.rank < p->top_k;
        one.nonfinite = !(fa && fb);
        xent_eval_accum_merge(acc_sum, &one);
    }
}

/* ---- threads ------------------------------------------------------------ */

typedef struct info_job {
    const xent_info_params *ip; /* one of ip, ep */
    const xent_eval_params *ep;
    int64_t begin, end;
    xent_status_word w;
    xent_eval_accum acc; /* eval: this job's corpus sums */
} info_job;

static void *run_job(void *arg)
{
    info_job *job = arg;
    if (job->ep) {
        xent_eval_accum *a = job->ep->accum ? &job->acc : NULL;
        for (int64_t i = job->begin; i < job->end; i++)
            eval_row(job->ep, i, &job->w, a);
        return NULL;
    }
    const xent_info_params *p = job->ip;
    for (int64_t i = job->begin; i < job->end; i++) {
        switch (p->op) {
        case XENT_INFO_ENTROPY: entropy_row(p, i); break;
        case XENT_INFO_KL_PROBS: klp_row(p, i, &job->w); break;
        case XENT_INFO_KL_LOGITS: klt_row(p, i); break;
        case XENT_INFO_BCE: bce_row(p, i, &job->w); break;
        }
    }
    return NULL;
}

#define XENT_INFO_MAX_THREADS XENT_CPU_MAX_THREADS
/* Below this many elements per thread, threads cost more than they save. */
#define XENT_INFO_MIN_WORK (1 << 15)

/* Runs rows [0, n) on up to n_threads threads; merges the jobs' status
 * words into *status and (eval) their sums into *accum. */
static xent_status run_jobs(const xent_info_params *ip,
                            const xent_eval_params *ep, int64_t n, int64_t c,
                            int n_threads, xent_status_word *status,
                            xent_eval_accum *accum)
{
    int64_t t = n_threads < 1 ? 1 : n_threads;
    if (t > XENT_INFO_MAX_THREADS)
        t = XENT_INFO_MAX_THREADS;
    if (t > n * c / XENT_INFO_MIN_WORK)
        t = n * c / XENT_INFO_MIN_WORK;
    if (t > n)
        t = n;
    if (t < 1)
        t = 1;
    info_job jobs[XENT_INFO_MAX_THREADS];
    for (int64_t k = 0; k < t; k++) {
        memset(&jobs[k], 0, sizeof jobs[k]);
        jobs[k].ip = ip;
        jobs[k].ep = ep;
        jobs[k].begin = n * k / t;
        jobs[k].end = n * (k + 1) / t;
        jobs[k].w.flags = 0;
        jobs[k].w.first_row = UINT64_MAX;
    }
    xent_cpu_run_jobs(t, run_job, jobs, sizeof jobs[0]);
    for (int64_t k = 0; k < t; k++) {
        status->flags |= jobs[k].w.flags;
        if (jobs[k].w.first_row < status->first_row)
            status->first_row = jobs[k].w.first_row;
        if (accum)
            xent_eval_accum_merge(accum, &jobs[k].acc);
    }
    return XENT_STATUS_SUCCESS;
}

xent_status xent_cpu_info_rows(const xent_info_params *p, int n_threads,
                               xent_status_word *status)
{
    return run_jobs(p, NULL, p->n_rows, p->n_classes, n_threads, status, NULL);
}

xent_status xent_cpu_eval_rows(const xent_eval_params *p, int n_threads,
                               xent_status_word *status)
{
    return run_jobs(NULL, p, p->n_rows, p->n_classes, n_threads, status,
                    p->accum);
}
