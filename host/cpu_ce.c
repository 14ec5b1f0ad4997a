/*
 * cpu_ce.c - the CPU backend of cross-entropy.
 *
 * The same per-row formulas as the CUDA kernels: the row statistics
 * (m, s, a, v of cuda/xent_bridge.h) are computed here in a vectorizable
 * order and handed to the bridge's xent_fin_* functions, which give the loss,
 * lse and gradient coefficients. One thread does a whole row, in passes
 * over chunks of XENT_CPU_CHUNK columns (see host/cpu_math.h for the
 * kernels):
 *
 *   1. m = max_j z'_j;
 *   2. s = sum_{j != y} e^(z'_j - m) (the target column y stays out of s, so
 *      the target terms are cancellation-free), and, with label smoothing
 *      or probability targets, a = sum_j v_j (z'_j - m), v = sum_j v_j; all
 *      three in double. When the gradient is written as float and there is
 *      no softcap, each e^(z'_j - m) is stored in the gradient row;
 *   3. the gradient g (coef_p p_j - u_j) z''_j, from the stored exponentials
 *      or recomputing them, then the target column.
 * The backward from a saved lse is pass 3 alone with m = lse.
 *
 * For fp32 logits without softcap a chunk is read in place; otherwise
 * (f16, bf16, softcap) it is converted into a small stack buffer, once per
 * pass (the softcap with the vectorizable tanh of cpu_math.h, within 1.33
 * ulp of tanh, where the GPU uses tanhf). A 32768-class fp32 row is 128
 * KiB, so after pass 1 reads it from memory, passes 2 and 3 find it (and
 * the gradient row) in the L2 cache: each fused call reads the logits once
 * and writes the gradient once.
 *
 * The row code is compiled three times, for AVX-512, AVX2+FMA and the
 * baseline instruction set, and one is picked at run time
 * (__builtin_cpu_supports); the environment variable XENT_CPU_ISA
 * (avx512, avx2 or generic) caps the choice, for tests and benchmarks.
 *
 * Rows are split into contiguous ranges over n_threads POSIX threads;
 * every row's result depends only on that row (the chunking and the order of
 * every sum are fixed), so the output is bitwise the same for any thread
 * count. Reductions over rows run in fp64 in row order on the calling
 * thread. Nothing is allocated.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "cpu_math.h"

/* Columns per chunk of a pass: three float buffers of this size live on
 * each thread's stack and stay in the L1 cache. A multiple of
 * XENT_LANES. */
#define XENT_CPU_CHUNK 2048

/* The baseline variant fuses multiply-adds only where the target has a
 * fast fmaf (e.g. AArch64); x86-64 without FMA gets a multiply and an
 * add. */
#ifdef __FP_FAST_FMAF
#define XENT_BASE_FMA 1
#else
#define XENT_BASE_FMA 0
#endif

/* ---- element access (scalar) ----------------------------------------- */

static float load_logit(const xent_ce_params *p, int64_t off)
{
    switch (p->logits_dtype) {
    case XENT_DTYPE_F16:
        return xent_f16_to_f32(((const uint16_t *)p->logits)[off]);
    case XENT_DTYPE_BF16:
        return xent_bf16_to_f32(((const uint16_t *)p->logits)[off]);
    default: return ((const float *)p->logits)[off];
    }
}

static int grad_is_f32(const xent_ce_params *p)
{
    return p->grad_f32 || p->logits_dtype == XENT_DTYPE_F32;
}

/* grad[off + j] = src[j] for j < n, in the gradient's dtype. */
XENT_ALWAYS_INLINE void store_grad(const xent_ce_params *p, int64_t off,
                                   const float *src, int64_t n)
{
    if (grad_is_f32(p)) {
        memcpy((float *)p->grad + off, src, (size_t)n * sizeof(float));
    } else if (p->logits_dtype == XENT_DTYPE_F16) {
        uint16_t *d = (uint16_t *)p->grad + off;
        for (int64_t j = 0; j < n; j++)
            d[j] = xent_f32_to_f16_fast(src[j]);
    } else {
        uint16_t *d = (uint16_t *)p->grad + off;
        for (int64_t j = 0; j < n; j++)
            d[j] = xent_f32_to_bf16(src[j]);
    }
}

static int64_t load_target(const xent_ce_params *p, int64_t i)
{
    if (p->target_type == XENT_TARGET_INDEX_I32)
        return ((const int32_t *)p->targets)[i];
    return ((const int64_t *)p->targets)[i];
}

static float class_weight(const xent_ce_params *p, int64_t j)
{
    return p->weights ? p->weights[j] : 1.0f;
}

static void record(xent_status_word *w, uint32_t flag, int64_t row)
{
    w->flags |= flag;
    if ((uint64_t)row < w->first_row)
        w->first_row = (uint64_t)row;
}

/* ---- one row: setup and the chunk sources ----------------------------- */

typedef enum row_kind { ROW_OK, ROW_IGNORED, ROW_BAD } row_kind;

/* What the per-class weight v_j of the a and v sums (and of u_j in the
 * gradient) is for this row. */
typedef enum v_kind {
    V_NONE, /* no v sums: index targets without smoothing, or a row that
               only needs its lse */
    V_ONE,  /* index targets with smoothing, no class weights */
    V_W,    /* index targets with smoothing: w_j */
    V_Q,    /* probability targets: (1 - alpha) q_j + alpha / C */
    V_QW    /* probability targets: w_j ((1 - alpha) q_j + alpha / C) */
} v_kind;

typedef struct ce_row {
    const xent_ce_params *p;
    int64_t i, base, c;
    row_kind kind;
    int index; /* class-index targets */
    int64_t y; /* the target column when kind == ROW_OK, else -1 */
    float wy;  /* its class weight */
    v_kind vk;
    const float *q; /* probability row */
    float qa, qb;   /* q'_j = qa q_j + qb */
    int z_direct;   /* fp32 logits, no softcap: chunks read in place */
    float *zbuf, *vbuf, *ebuf; /* [XENT_CPU_CHUNK] each */
} ce_row;

static void row_setup(ce_row *r, const xent_ce_params *p, int64_t i,
                      float *bufs, xent_status_word *w)
{
    const int64_t c = p->n_classes;
    r->p = p;
    r->i = i;
    r->base = i * p->ld;
    r->c = c;
    r->kind = ROW_OK;
    r->index = p->target_type != XENT_TARGET_PROBS_F32;
    r->y = -1;
    r->wy = 1.0f;
    r->q = NULL;
    r->qa = 1.0f - p->label_smoothing;
    r->qb = p->label_smoothing * (1.0f / (float)c);
    r->z_direct = p->logits_dtype == XENT_DTYPE_F32 && !(p->softcap > 0.0f);
    r->zbuf = bufs;
    r->vbuf = bufs + XENT_CPU_CHUNK;
    r->ebuf = bufs + 2 * XENT_CPU_CHUNK;
    if (r->index) {
        int64_t y = load_target(p, i);
        if (y == p->ignore_index) {
            r->kind = ROW_IGNORED;
        } else if (y < 0 || y >= c) {
            r->kind = ROW_BAD;
            record(w, XENT_DATA_TARGET_OUT_OF_RANGE, i);
        } else {
            r->wy = class_weight(p, y);
            if (!(r->wy >= 0.0f)) { /* negative or NaN */
                r->kind = ROW_BAD;
                record(w, XENT_DATA_NEGATIVE_WEIGHT, i);
            } else {
                r->y = y;
            }
        }
    } else {
        r->q = (const float *)p->targets + i * p->target_ld;
    }
    if (r->kind != ROW_OK)
        r->vk = V_NONE;
    else if (!r->index)
        r->vk = p->weights ? V_QW : V_Q;
    else if (p->label_smoothing > 0.0f)
        r->vk = p->weights ? V_W : V_ONE;
    else
        r->vk = V_NONE;
}

/* The softcap z' = cap tanh(z / cap) of xent_cap, with the vectorizable
 * tanh. */
XENT_ALWAYS_INLINE float cap_fast(float z, float cap, int fma)
{
    return cap > 0.0f ? cap * xent_tanh_fast(z / cap, fma) : z;
}

/* z'_j for j in [j0, j0 + n): the logits themselves, or converted and
 * capped into zbuf. */
XENT_ALWAYS_INLINE const float *row_z(const ce_row *r, int64_t j0, int64_t n,
                                      int fma)
{
    const xent_ce_params *p = r->p;
    const int64_t off = r->base + j0;
    if (r->z_direct)
        return (const float *)p->logits + off;
    float *z = r->zbuf;
    const float cap = p->softcap;
    if (p->logits_dtype == XENT_DTYPE_F32) {
        memcpy(z, (const float *)p->logits + off, (size_t)n * sizeof(float));
    } else {
        const uint16_t *h = (const uint16_t *)p->logits + off;
        if (p->logits_dtype == XENT_DTYPE_F16)
            for (int64_t j = 0; j < n; j++)
                z[j] = xent_f16_to_f32_fast(h[j]);
        else
            for (int64_t j = 0; j < n; j++)
                z[j] = xent_bf16_to_f32(h[j]);
    }
    if (cap > 0.0f)
        for (int64_t j = 0; j < n; j++)
            z[j] = cap_fast(z[j], cap, fma);
    return z;
}

/* v_j for j in [j0, j0 + n), or NULL (V_NONE). */
static const float *row_v(const ce_row *r, int64_t j0, int64_t n)
{
    const float *w = r->p->weights ? r->p->weights + j0 : NULL;
    const float *q = r->q ? r->q + j0 : NULL;
    float *v = r->vbuf;
    switch (r->vk) {
    case V_NONE: return NULL;
    case V_W: return w;
    case V_ONE:
        for (int64_t j = 0; j < n; j++)
            v[j] = 1.0f;
        break;
    case V_Q:
        for (int64_t j = 0; j < n; j++)
            v[j] = r->qa * q[j] + r->qb;
        break;
    case V_QW:
        for (int64_t j = 0; j < n; j++)
            v[j] = w[j] * (r->qa * q[j] + r->qb);
        break;
    }
    return v;
}

static int64_t chunk_len(const ce_row *r, int64_t j0)
{
    return r->c - j0 < XENT_CPU_CHUNK ? r->c - j0 : XENT_CPU_CHUNK;
}

/* sum_j v_j over the row (0 for V_NONE), without reading the logits. */
static float row_weight_sum(const ce_row *r)
{
    double v = 0.0;
    for (int64_t j0 = 0; r->vk != V_NONE && j0 < r->c; j0 += XENT_CPU_CHUNK) {
        const int64_t n = chunk_len(r, j0);
        v += xent_k_sum(row_v(r, j0, n), n);
    }
    return (float)v;
}

/* Whether a row holds a NaN logit (rare: rows without a finite max). */
static int row_has_nan(const ce_row *r)
{
    for (int64_t j0 = 0; j0 < r->c; j0 += XENT_CPU_CHUNK) {
        const int64_t n = chunk_len(r, j0);
        const float *z = row_z(r, j0, n, XENT_BASE_FMA);
        for (int64_t j = 0; j < n; j++)
            if (isnan(z[j]))
                return 1;
    }
    return 0;
}

/* An ignored row (0) or a bad one (NaN): loss and gradient. */
static void finish_skipped_row(const ce_row *r)
{
    const xent_ce_params *p = r->p;
    const float value = r->kind == ROW_BAD ? NAN : 0.0f;
    if (p->loss_rows)
        p->loss_rows[r->i] = value;
    if (!p->grad)
        return;
    float *buf = r->ebuf;
    for (int64_t j = 0; j < XENT_CPU_CHUNK; j++)
        buf[j] = value;
    for (int64_t j0 = 0; j0 < r->c; j0 += XENT_CPU_CHUNK)
        store_grad(p, r->base + j0, buf, chunk_len(r, j0));
}

/* The loss, lse and gradient coefficients from the row state (or, in the
 * backward from a saved lse, from that lse and acc->v): the bridge's
 * formulas. */
static void row_finalize(const ce_row *r, const xent_row_acc *acc, float zy,
                         xent_row_fin *fin)
{
    const xent_ce_params *p = r->p;
    const float alpha = p->label_smoothing;
    const float inv_c = 1.0f / (float)r->c;
    if (p->mode == XENT_MODE_BWD_LSE)
        *fin = xent_fin_from_lse(p->lse_in[r->i], acc->v, r->index, zy, r->wy,
                                 alpha, inv_c, p->z_loss);
    else if (r->index && r->kind == ROW_OK)
        *fin = xent_fin_index(*acc, zy, r->wy, alpha, inv_c, p->z_loss);
    else if (r->index) /* ignored or bad: lse only; s holds every column */
        *fin = xent_fin_probs(*acc, 0.0f);
    else
        *fin = xent_fin_probs(*acc, p->z_loss);
}

/* ---- one row: the vectorized passes (instantiated per ISA) ------------ */

/* The exp-sum of one chunk, leaving out column y: the exponentials are
 * stored to e (the chunk of an fp32 gradient row, or ebuf), with 0 at y,
 * and then summed. */
XENT_ALWAYS_INLINE double chunk_expsum(const ce_row *r, const float *z,
                                       int64_t j0, int64_t n, float m, float *e,
                                       int fma)
{
    xent_k_exp(z, n, m, e, fma, 1);
    if (r->y >= j0 && r->y < j0 + n)
        e[r->y - j0] = 0.0f;
    return xent_k_sum(e, n);
}

/* Passes 1 and 2: the row state. `estore`, when not NULL, is the fp32
 * gradient row, which receives e^(z'_j - m). */
XENT_ALWAYS_INLINE xent_row_acc row_stats(const ce_row *r, float *estore,
                                          int fma)
{
    float m = -INFINITY;
    for (int64_t j0 = 0; j0 < r->c; j0 += XENT_CPU_CHUNK) {
        const int64_t n = chunk_len(r, j0);
        m = xent_max_ordered(m, xent_k_max(row_z(r, j0, n, fma), n));
    }
    double s = 0.0, a = 0.0, v = 0.0;
    for (int64_t j0 = 0; j0 < r->c; j0 += XENT_CPU_CHUNK) {
        const int64_t n = chunk_len(r, j0);
        const float *z = row_z(r, j0, n, fma);
        /* before the exponentials overwrite an in-place gradient */
        if (r->vk != V_NONE)
            xent_k_wsum(z, row_v(r, j0, n), n, m, &a, &v);
        s += chunk_expsum(r, z, j0, n, m, estore ? estore + j0 : r->ebuf, fma);
    }
    if (m == -INFINITY) /* no logit above -inf: NaN if there is a NaN */
        s = row_has_nan(r) ? (double)NAN : 0.0;
    xent_row_acc acc;
    xent_acc_init(&acc);
    acc.m = m;
    acc.s = (float)s;
    acc.a = (float)a;
    acc.v = (float)v;
    return acc;
}

/* Pass 3: grad_j = g (coef_p p_j - u_j) z''_j, with p_j = e_j * inv_d. */
XENT_ALWAYS_INLINE void row_grad(const ce_row *r, const xent_row_fin *fin,
                                 float g, float zy, int have_e, int fma)
{
    const xent_ce_params *p = r->p;
    const float cap = p->softcap;
    const float c1 = g * fin->coef_p * fin->inv_d;
    const float cu = g * fin->u_scale;
    float *g32 = grad_is_f32(p) ? (float *)p->grad + r->base : NULL;
    for (int64_t j0 = 0; j0 < r->c; j0 += XENT_CPU_CHUNK) {
        const int64_t n = chunk_len(r, j0);
        float *out = g32 ? g32 + j0 : r->ebuf;
        const float *z = NULL;
        if (!have_e || cap > 0.0f)
            z = row_z(r, j0, n, fma);
        if (!have_e)
            xent_k_exp(z, n, fin->m, out, fma, 0);
        const float *v = row_v(r, j0, n);
        if (v)
            for (int64_t j = 0; j < n; j++)
                out[j] = c1 * out[j] - cu * v[j];
        else
            for (int64_t j = 0; j < n; j++)
                out[j] = c1 * out[j];
        if (cap > 0.0f)
            for (int64_t j = 0; j < n; j++)
                out[j] *= xent_cap_deriv(z[j], cap);
        if (!g32)
            store_grad(p, r->base + j0, out, n);
    }
    if (r->index) {
        float gy = g * fin->grad_y * xent_cap_deriv(zy, cap);
        store_grad(p, r->base + r->y, &gy, 1);
    }
}

XENT_ALWAYS_INLINE void ce_row_run(const xent_ce_params *p, int64_t i,
                                   float *bufs, xent_status_word *w, int fma)
{
    ce_row r;
    row_setup(&r, p, i, bufs, w);
    if (r.kind != ROW_OK && !p->lse_rows) {
        finish_skipped_row(&r);
        return;
    }
    const int want_grad =
        r.kind == ROW_OK && p->grad && p->mode != XENT_MODE_FWD;
    const float zy =
        r.y >= 0 ? cap_fast(load_logit(p, r.base + r.y), p->softcap, fma)
                 : 0.0f;
    /* pass 2 keeps the exponentials in an fp32 gradient row, unless
     * pass 3 needs the capped logits again anyway */
    const int keep_e = want_grad && p->mode == XENT_MODE_FWD_BWD &&
                       grad_is_f32(p) && !(p->softcap > 0.0f);

    xent_row_acc acc;
    xent_acc_init(&acc);
    if (p->mode == XENT_MODE_BWD_LSE) {
        acc.v = row_weight_sum(&r); /* only the weights: W or V */
    } else {
        acc = keep_e ? row_stats(&r, (float *)p->grad + r.base, fma)
                     : row_stats(&r, NULL, fma);
    }
    xent_row_fin fin;
    row_finalize(&r, &acc, zy, &fin);
    if (p->lse_rows && p->mode != XENT_MODE_BWD_LSE)
        p->lse_rows[i] = fin.lse;

    if (r.kind != ROW_OK) {
        finish_skipped_row(&r);
        return;
    }
    if (p->loss_rows && p->mode != XENT_MODE_BWD_LSE)
        p->loss_rows[i] = fin.loss;
    if (!want_grad)
        return;
    float g = xent_row_scale(p->scale,
                             p->dloss ? p->dloss[i * p->dloss_stride] : 1.0f,
                             p->host_denom);
    row_grad(&r, &fin, g, zy, keep_e, fma);
}

/* ---- instruction-set variants ---------------------------------------- */

typedef struct cpu_job {
    const xent_ce_params *p;
    int64_t begin, end;
    void (*rows)(struct cpu_job *job, float *bufs);
    xent_status_word w;
} cpu_job;

static void rows_base(cpu_job *job, float *bufs)
{
    for (int64_t i = job->begin; i < job->end; i++)
        ce_row_run(job->p, i, bufs, &job->w, XENT_BASE_FMA);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define XENT_CPU_X86 1
__attribute__((target("avx2,fma"))) static void rows_avx2(cpu_job *job,
                                                          float *bufs)
{
    for (int64_t i = job->begin; i < job->end; i++)
        ce_row_run(job->p, i, bufs, &job->w, 1);
}

__attribute__((
    target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))) static void
rows_avx512(cpu_job *job, float *bufs)
{
    for (int64_t i = job->begin; i < job->end; i++)
        ce_row_run(job->p, i, bufs, &job->w, 1);
}
#endif

typedef void (*rows_fn)(cpu_job *job, float *bufs);

/* The widest variant this CPU runs, capped by XENT_CPU_ISA. */
static rows_fn pick_rows(void)
{
#ifdef XENT_CPU_X86
    const char *cap = getenv("XENT_CPU_ISA");
    int level = 2; /* 2 avx512, 1 avx2, 0 base */
    if (cap && strcmp(cap, "avx2") == 0)
        level = 1;
    else if (cap && strcmp(cap, "generic") == 0)
        level = 0;
    __builtin_cpu_init();
    if (level >= 2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw"))
        return rows_avx512;
    if (level >= 1 && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return rows_avx2;
#endif
    return rows_base;
}

/* ---- threads -------------------------------------------------------- */

static void *run_job(void *arg)
{
    cpu_job *job = arg;
    _Alignas(64) float bufs[3 * XENT_CPU_CHUNK];
    job->rows(job, bufs);
    return NULL;
}

int xent_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
#endif
    return n > 0 ? (int)n : 1;
}

/* Below this many elements per thread, threads cost more than they save. */
#define XENT_CPU_MIN_WORK (1 << 15)

xent_status xent_cpu_ce_rows(const xent_ce_params *p, int n_threads,
                             xent_status_word *status)
{
    int64_t n = p->n_rows;
    int64_t work = n * p->n_classes;
    int64_t t = n_threads < 1 ? 1 : n_threads;
    if (t > XENT_CPU_MAX_THREADS)
        t = XENT_CPU_MAX_THREADS;
    if (t > work / XENT_CPU_MIN_WORK)
        t = work / XENT_CPU_MIN_WORK;
    if (t > n)
        t = n;
    if (t < 1)
        t = 1;

    const rows_fn rows = pick_rows();
    cpu_job jobs[XENT_CPU_MAX_THREADS];
    for (int64_t k = 0; k < t; k++) {
        jobs[k].p = p;
        jobs[k].begin = n * k / t;
        jobs[k].end = n * (k + 1) / t;
        jobs[k].rows = rows;
        jobs[k].w.flags = 0;
        jobs[k].w.first_row = UINT64_MAX;
    }
    xent_cpu_run_jobs(t, run_job, jobs, sizeof jobs[0]);
    for (int64_t k = 0; k < t; k++) {
        status->flags |= jobs[k].w.flags;
        if (jobs[k].w.first_row < status->first_row)
            status->first_row = jobs[k].w.first_row;
    }
    return XENT_STATUS_SUCCESS;
}

void xent_cpu_run_jobs(int64_t n_jobs, void *(*fn)(void *), void *jobs,
                       size_t job_size)
{
    pthread_t tids[XENT_CPU_MAX_THREADS];
    int started[XENT_CPU_MAX_THREADS] = {0};
    char *job = jobs;
    if (n_jobs > XENT_CPU_MAX_THREADS)
        n_jobs = XENT_CPU_MAX_THREADS;
    /* job 0 runs on the calling thread; a job whose thread fails to start
     * runs here too, so the result never depends on resources */
    for (int64_t k = 1; k < n_jobs; k++)
        started[k] =
            pthread_create(&tids[k], NULL, fn, job + k * job_size) == 0;
    if (n_jobs > 0)
        fn(job);
    for (int64_t k = 1; k < n_jobs; k++) {
        if (started[k])
            pthread_join(tids[k], NULL);
        else
            fn(job + k * job_size);
    }
}

double xent_cpu_target_weight_sum(const xent_ce_params *p)
{
    double sum = 0.0;
    for (int64_t i = 0; i < p->n_rows; i++) {
        int64_t y = load_target(p, i);
        if (y == p->ignore_index || y < 0 || y >= p->n_classes)
            continue;
        sum += (double)class_weight(p, y);
    }
    return sum;
}

float xent_cpu_reduce_rows(const float *rows, int64_t n, double denom,
                           float empty_value)
{
    if (denom == 0.0)
        return empty_value;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)rows[i];
    return (float)(sum / denom);
}
