/*
 * xent_bridge.h - the one private header between host/ (C) and cuda/.
 *
 * It holds:
 *  - the plain-C parameter block a launcher receives,
 *  - the per-row math (online softmax state, its merge, and the final
 *    loss / gradient coefficients) as inline functions that compile both as
 *    C (the CPU backend) and as CUDA device code, so both backends compute
 *    the same formulas,
 *  - the extern "C" launcher declarations.
 * No CUDA C++ types appear here; streams are `struct CUstream_st *`.
 */
#ifndef XENT_BRIDGE_H
#define XENT_BRIDGE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "xent.h"

#if defined(__CUDACC__)
#define XENT_HD __host__ __device__ __forceinline__
#else
#define XENT_HD static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* What a row kernel does. */
typedef enum xent_ce_mode {
    XENT_MODE_FWD = 0,     /* statistics, loss, lse */
    XENT_MODE_FWD_BWD = 1, /* statistics, loss, lse, then the gradient */
    XENT_MODE_BWD_LSE = 2  /* gradient from a saved lse, one read of logits */
} xent_ce_mode;

/* The device (or, on a CPU handle, host) status word. first_row holds
 * UINT64_MAX when no row was bad. */
typedef struct xent_status_word {
    uint32_t flags;
    uint32_t pad_;
    uint64_t first_row;
} xent_status_word;

/* Everything a cross-entropy row kernel needs; validated by host/. */
typedef struct xent_ce_params {
    xent_ce_mode mode;
    int64_t n_rows, n_classes, ld;
    xent_dtype logits_dtype;
    const void *logits; /* [n_rows, ld] */
    xent_target_type target_type;
    const void *targets; /* [n_rows] indices or [n_rows, target_ld] */
    int64_t target_ld;
    int64_t ignore_index;
    const float *weights; /* [n_classes] or NULL */
    float label_smoothing, z_loss, softcap;

    float *loss_rows;      /* [n_rows] or NULL */
    float *lse_rows;       /* [n_rows] or NULL (output) */
    const float *lse_in;   /* [n_rows], BWD_LSE only */
    void *grad;            /* [n_rows, ld] or NULL; may equal logits */
    int grad_f32;          /* grad dtype: float if set, else logits dtype */
    const float *dloss;    /* upstream, or NULL */
    int64_t dloss_stride;
    float scale;           /* host scale of the upstream */
    const double *d_denom; /* MEAN over index targets: divide by *d_denom */
    double host_denom;     /* otherwise: divide by this (1 = no division) */

    xent_status_word *status; /* the handle's status word */
} xent_ce_params;

/* ------------------------------------------------------------------
 * Per-row math, shared by the CPU backend and the CUDA kernels.
 *
 * One thread folds the elements it owns into an xent_row_acc; accumulators
 * are merged (in a fixed order) into the row's state. With z' the (capped)
 * logits and v_j a non-negative per-class weight:
 *   m = max_j z'_j
 *   s = sum_{j in S} exp(z'_j - m)  (S excludes the target column for
 *                                    class-index targets)
 *   a = sum_j v_j (z'_j - m)        (<= 0; kept relative to the running
 *                                    max so no large terms cancel)
 *   v = sum_j v_j
 * ---------------------------------------------------------------- */
typedef struct xent_row_acc {
    float m, s, a, v;
    /* Kahan compensations of s, a and v: the true sums are s - cs, a - ca
     * and v - cv. A thread may fold thousands of columns one by one (the
     * CPU backend folds whole rows); without compensation the small terms
     * of a peaked row are lost against the large running sum. */
    float cs, ca, cv;
} xent_row_acc;

XENT_HD void xent_acc_init(xent_row_acc *r)
{
    r->m = -INFINITY;
    r->s = 0.0f;
    r->a = 0.0f;
    r->v = 0.0f;
    r->cs = 0.0f;
    r->ca = 0.0f;
    r->cv = 0.0f;
}

/* *sum += x with Kahan compensation *comp. Infinite or NaN sums carry no
 * compensation (inf - inf would turn it into NaN). */
XENT_HD void xent_kahan_add(float *sum, float *comp, float x)
{
    float y = x - *comp;
    float t = *sum + y;
    *comp = isfinite(t) ? (t - *sum) - y : 0.0f;
    *sum = t;
}

/* Applies the compensations (then cs = ca = cv = 0). */
XENT_HD void xent_acc_fold(xent_row_acc *r)
{
    r->s -= r->cs;
    r->a -= r->ca;
    r->v -= r->cv;
    r->cs = 0.0f;
    r->ca = 0.0f;
    r->cv = 0.0f;
}

/* Fold one element: z the capped logit, vj its weight, in_s whether it
 * belongs to the exponential sum. */
XENT_HD void xent_acc_add(xent_row_acc *r, float z, float vj, int in_s)
{
    if (z > r->m) {
        float d = r->m - z; /* < 0, -inf on the first finite element */
        float f = expf(d);
        r->s *= f;
        r->cs *= f;
        if (r->v != 0.0f)
            xent_kahan_add(&r->a, &r->ca, r->v * d);
        r->m = z;
    }
    if (in_s && z != -INFINITY)
        xent_kahan_add(&r->s, &r->cs, expf(z - r->m));
    if (vj != 0.0f) {
        /* z = -inf while m is still -inf would give -inf - -inf = NaN; the
         * term is -inf either way */
        xent_kahan_add(&r->a, &r->ca,
                       z == -INFINITY ? -INFINITY : vj * (z - r->m));
        xent_kahan_add(&r->v, &r->cv, vj);
    }
}

/* Fold one element that only carries a weight (no logit term): used for
 * the sum of weights without a pass over the logits. */
XENT_HD void xent_acc_add_weight(xent_row_acc *r, float vj)
{
    xent_kahan_add(&r->v, &r->cv, vj);
}

/* r = r (+) o, the merge of two partial states (the result carries no
 * compensation). */
XENT_HD void xent_acc_merge(xent_row_acc *r, xent_row_acc o)
{
    xent_acc_fold(r);
    xent_acc_fold(&o);
    float m = fmaxf(r->m, o.m);
    if (m == -INFINITY) { /* both empty of finite values */
        r->s += o.s;
        r->a += o.a;
        r->v += o.v;
        return;
    }
    float dr = r->m - m, dq = o.m - m; /* <= 0 */
    float s = r->s * expf(dr) + o.s * expf(dq);
    float a = r->a + o.a;
    if (r->v != 0.0f)
        a += r->v * dr;
    if (o.v != 0.0f)
        a += o.v * dq;
    r->m = m;
    r->s = s;
    r->a = a;
    r->v += o.v;
}

/* Softcap: z' = cap * tanh(z / cap); cap <= 0 means off. */
XENT_HD float xent_cap(float z, float cap)
{
    return cap > 0.0f ? cap * tanhf(z / cap) : z;
}

/* d z' / d z expressed through z': 1 - (z'/cap)^2. */
XENT_HD float xent_cap_deriv(float zc, float cap)
{
    if (cap <= 0.0f)
        return 1.0f;
    float t = zc / cap;
    return 1.0f - t * t;
}

/* The per-row result from which the loss and every gradient element
 * follow. */
typedef struct xent_row_fin {
    float lse;
    float loss;     /* the row's loss (unscaled, unweighted by upstream) */
    float m, inv_d; /* p_j = exp(z'_j - m) * inv_d */
    float coef_p;   /* grad_j = g * (coef_p * p_j - u_j) [* cap'] */
    float u_scale;  /* u_j = u_scale * w_j (index) or v_j (probs) */
    float grad_y;   /* index targets: the whole target-column term / g */
} xent_row_fin;

/*
 * Class-index target y, not ignored. acc excludes column y from s; acc.a,
 * acc.v hold sum_c w_c (z'_c - m) and W = sum_c w_c when smoothing is on
 * (alpha > 0), else zero. zy is the capped target logit, wy its weight.
 *
 * nll = lse - z'_y is computed without cancellation: when p_y > 1/2
 * (s < T), nll = log1p(s/T); otherwise (m - z'_y) + log(s + T), a sum of
 * two non-negative terms. 1 - p_y = s / (s + T) likewise.
 */
XENT_HD xent_row_fin xent_fin_index(xent_row_acc acc, float zy, float wy,
                                    float alpha, float inv_c, float z_loss)
{
    xent_row_fin f;
    xent_acc_fold(&acc);
    float t = expf(zy - acc.m);
    float d = acc.s + t;
    float logd = logf(d);
    float nll = acc.s < t ? log1pf(acc.s / t) : (acc.m - zy) + logd;
    f.lse = acc.m + logd;
    f.m = acc.m;
    f.inv_d = 1.0f / d;
    float hard = (1.0f - alpha) * wy;
    float loss = alpha < 1.0f ? hard * nll : 0.0f;
    float smooth = 0.0f; /* (alpha/C) * W */
    if (alpha > 0.0f) {
        smooth = alpha * inv_c * acc.v;
        loss += alpha * inv_c * (acc.v * logd - acc.a);
    }
    float zl = 0.0f;
    if (z_loss != 0.0f) {
        loss += z_loss * f.lse * f.lse;
        zl = 2.0f * z_loss * f.lse;
    }
    f.loss = loss;
    f.coef_p = hard + smooth + zl;
    f.u_scale = alpha * inv_c;
    /* target column: hard * (p_y - 1) + (smooth + zl) * p_y - u_y */
    float py = t * f.inv_d;
    float one_minus_py = acc.s * f.inv_d;
    f.grad_y = -hard * one_minus_py + (smooth + zl) * py - f.u_scale * wy;
    return f;
}

/*
 * Probability targets: acc.s sums every column, acc.a = sum v_j (z'_j - m)
 * and acc.v = V = sum v_j with v_j = w_j ((1 - alpha) q_j + alpha / C).
 * loss = sum_j v_j (lse - z'_j) = V log d - a; grad_j = (V + 2 s lse) p_j
 * - v_j.
 */
XENT_HD xent_row_fin xent_fin_probs(xent_row_acc acc, float z_loss)
{
    xent_row_fin f;
    xent_acc_fold(&acc);
    float logd = logf(acc.s);
    f.lse = acc.m + logd;
    f.m = acc.m;
    f.inv_d = 1.0f / acc.s;
    float loss = acc.v * logd - acc.a;
    float zl = 0.0f;
    if (z_loss != 0.0f) {
        loss += z_loss * f.lse * f.lse;
        zl = 2.0f * z_loss * f.lse;
    }
    f.loss = loss;
    f.coef_p = acc.v + zl;
    f.u_scale = 1.0f;
    f.grad_y = 0.0f;
    return f;
}

/*
 * Backward from a saved lse: p_j = exp(z'_j - lse). acc.v holds W (index
 * targets with smoothing) or V (probability targets). For the index target
 * column p_y - 1 = expm1(z'_y - lse), whose accuracy is that of the saved
 * fp32 lse.
 */
XENT_HD xent_row_fin xent_fin_from_lse(float lse, float v, int is_index,
                                       float zy, float wy, float alpha,
                                       float inv_c, float z_loss)
{
    xent_row_fin f;
    f.lse = lse;
    f.loss = 0.0f;
    f.m = lse;
    f.inv_d = 1.0f;
    float zl = z_loss != 0.0f ? 2.0f * z_loss * lse : 0.0f;
    if (is_index) {
        float hard = (1.0f - alpha) * wy;
        float smooth = alpha > 0.0f ? alpha * inv_c * v : 0.0f;
        f.coef_p = hard + smooth + zl;
        f.u_scale = alpha * inv_c;
        float pym1 = expm1f(zy - lse);
        f.grad_y = hard * pym1 + (smooth + zl) * (pym1 + 1.0f) - f.u_scale * wy;
    } else {
        f.coef_p = v + zl;
        f.u_scale = 1.0f;
        f.grad_y = 0.0f;
    }
    return f;
}

/* The gradient scale of one row: the host scale times the row's upstream
 * value u, divided by the reduction's denominator. A zero denominator (MEAN
 * over rows whose target weights are all 0) gives 0: such rows contribute
 * nothing, like ignored ones, instead of 0 * inf = NaN. */
XENT_HD float xent_row_scale(float scale, float u, double denom)
{
    return denom == 0.0 ? 0.0f : (float)((double)(scale * u) / denom);
}

/* p_j from the final state. */
XENT_HD float xent_prob(const xent_row_fin *f, float zc)
{
    return expf(zc - f->m) * f->inv_d;
}

/* ------------------------------------------------------------------
 * Launchers (cuda/). Each computes the launch shape, launches on the
 * stream and returns cudaGetLastError() as an int (a cudaError_t).
 * ---------------------------------------------------------------- */
struct CUstream_st;

/* Row kernel for p->mode with the given (non-AUTO) variant. */
int xent_cuda_ce_rows(const xent_ce_params *p, xent_variant variant,
                      struct CUstream_st *stream);

/* Partials for the fixed-order reductions below. */
#define XENT_REDUCE_PARTS 512

/* *d_out = sum over non-ignored rows of w_{y_i} (1 when weights == NULL),
 * in fp64, fixed order. d_partials: XENT_REDUCE_PARTS doubles. */
int xent_cuda_target_weight_sum(const xent_ce_params *p, double *d_partials,
                                double *d_out, struct CUstream_st *stream);

/* *d_out = (float)(sum_i rows[i] / denom) in fp64, fixed order, where
 * denom is *d_denom when d_denom != NULL else host_denom. A zero
 * denominator gives empty_value. n may be 0. */
int xent_cuda_reduce_rows(const float *d_rows, int64_t n,
                          const double *d_denom, double host_denom,
                          float empty_value, double *d_partials,
                          float *d_out, struct CUstream_st *stream);

/* Set the status word to its cleared state. */
int xent_cuda_status_reset(xent_status_word *d_status,
                           struct CUstream_st *stream);

/* ==================================================================
 * Entropy, KL divergence, binary cross-entropy, evaluation statistics
 * (host/api_info.c, host/cpu_info.c, cuda/info.cu)
 *
 * The per-row states below fold a row in chunks of up to XENT_INFO_CHUNK
 * values: the chunk's maximum first (one rescale of the state per chunk
 * at most), then plain sums of the chunk's terms, each added to the
 * state with Kahan compensation. Lanes of a chunk that hold no column are
 * passed as z = -inf with zero weight/probability, which adds nothing.
 * Every quantity is kept relative to the running maximum, so no large
 * terms cancel. States merge in a fixed order (the caller's).
 * ================================================================ */
#include <string.h>

#define XENT_INFO_CHUNK 8

/* ---- parameters ---- */
typedef enum xent_info_op {
    XENT_INFO_ENTROPY = 0,
    XENT_INFO_KL_PROBS = 1,  /* q float [n_rows, target_ld] */
    XENT_INFO_KL_LOGITS = 2, /* teacher logits [n_rows, target_ld] */
    XENT_INFO_BCE = 3
} xent_info_op;

/* Everything an entropy / KL / BCE row kernel needs; validated by host/. */
typedef struct xent_info_params {
    xent_info_op op;
    int64_t n_rows, n_classes, ld;
    xent_dtype logits_dtype;  /* also the teacher logits' dtype */
    const void *logits;       /* [n_rows, ld] */
    const void *target;       /* KL / BCE: [n_rows, target_ld] */
    int64_t target_ld;
    const float *pos_weight;  /* BCE: [n_classes] or NULL */
    const float *weight;      /* BCE: [n_rows, weight_ld] or NULL */
    int64_t weight_ld;
    float prob_tol;           /* KL probs: accepted |sum q - 1| */

    float *loss_rows;   /* [n_rows] or NULL; BCE: each row's element sum */
    float *loss_elems;  /* BCE: [n_rows, ld] or NULL */
    void *grad;         /* [n_rows, ld] or NULL; may equal logits */
    void *grad_target;  /* KL logits: [n_rows, target_ld] or NULL; may
                           equal target */
    int grad_f32;       /* gradients as float, else the logits' dtype */
    const float *dloss; /* upstream or NULL */
    int64_t dloss_stride; /* BCE under NONE: a row stride (0 = scalar) */
    float scale;
    double denom;       /* the reduction's divisor of the gradient */

    xent_status_word *status;
} xent_info_params;

/* xent_ce_eval's parameters. */
typedef struct xent_eval_params {
    int64_t n_rows, n_classes, ld;
    xent_dtype logits_dtype;
    const void *logits;  /* [n_rows, ld] */
    xent_target_type target_type; /* INDEX_I32 / INDEX_I64 */
    const void *targets; /* [n_rows] */
    int64_t ignore_index;
    const float *weights; /* [n_classes] or NULL */
    float label_smoothing, z_loss, softcap;
    int64_t top_k;
    /* outputs, each [n_rows] or NULL */
    float *loss, *lse, *entropy, *zloss;
    int64_t *argmax, *rank;
    uint8_t *correct;
    xent_eval_accum *accum; /* or NULL */
    int max_blocks;         /* CUDA: grid cap (the accumulator's atomics
                               are one set per block) */
    xent_status_word *status;
} xent_eval_params;

/* ---- entropy of softmax(z) -----------------------------------------
 * m = running max (first index k), s = sum_{j != k} e^(z_j - m) (the max's
 * own term, exactly 1, is kept out of s, so log sum = log1p(s) keeps its
 * precision on peaked rows), t = sum_j e^(z_j - m) (z_j - m) <= 0;
 * H = log1p(s) - t / (1 + s), dH/dz_j = p_j (t / (1 + s) - (z_j - m)). */
typedef struct xent_ent_acc {
    float m, s, t;
    float cs, ct; /* Kahan compensations (true sums: s - cs, t - ct) */
} xent_ent_acc;

XENT_HD void xent_ent_init(xent_ent_acc *a)
{
    a->m = -INFINITY;
    a->s = 0.0f;
    a->t = 0.0f;
    a->cs = 0.0f;
    a->ct = 0.0f;
}

XENT_HD void xent_ent_fold(xent_ent_acc *a)
{
    a->s -= a->cs;
    a->t -= a->ct;
    a->cs = 0.0f;
    a->ct = 0.0f;
}

/* Re-express the state relative to mn > a->m; the old maximum's term
 * (1 before, e^d now) joins s: with S = s + 1, d = m - mn, f = e^d,
 * t' = f (t + d S), s' = f S. (m = -inf: nothing was added yet.) */
XENT_HD void xent_ent_shift(xent_ent_acc *a, float mn)
{
    xent_ent_fold(a);
    if (a->m != -INFINITY) {
        const float d = a->m - mn;
        const float f = expf(d);
        const float sf = a->s + 1.0f;
        a->t = f * (a->t + d * sf);
        a->s = f * sf;
    }
    a->m = mn;
}

/* One chunk z[0, n) (n <= XENT_INFO_CHUNK). */
XENT_HD void xent_ent_add_chunk(xent_ent_acc *a, const float *z, int n)
{
    float cm = a->m;
    int bu = -1; /* the chunk's first new maximum */
    for (int u = 0; u < n; u++)
        if (z[u] > cm) { /* NaN never becomes the max */
            cm = z[u];
            bu = u;
        }
    if (bu >= 0)
        xent_ent_shift(a, cm);
    float se = 0.0f, st = 0.0f;
    for (int u = 0; u < n; u++) {
        const float d = z[u] - a->m;
        /* -inf adds nothing (and -inf - -inf would be NaN); the new
         * maximum's term is the implicit 1 */
        const int skip = z[u] == -INFINITY || u == bu;
        const float e = skip ? 0.0f : expf(d);
        se += e;
        st += skip ? 0.0f : e * d;
    }
    xent_kahan_add(&a->s, &a->cs, se);
    xent_kahan_add(&a->t, &a->ct, st);
}

/* a = a (+) b. */
XENT_HD void xent_ent_merge(xent_ent_acc *a, xent_ent_acc b)
{
    const float m = fmaxf(a->m, b.m);
    const int tie = a->m == b.m && m != -INFINITY;
    if (m > a->m)
        xent_ent_shift(a, m);
    else
        xent_ent_fold(a);
    if (m > b.m)
        xent_ent_shift(&b, m);
    else
        xent_ent_fold(&b);
    a->s += b.s;
    if (tie) /* two maxima: one stays implicit, the other's 1 joins s */
        a->s += 1.0f;
    a->t += b.t;
}

/* The row's entropy and its gradient coefficients. */
typedef struct xent_ent_fin {
    float h;     /* H */
    float m;     /* p_j = e^(z_j - m) * inv_s */
    float inv_s;
    float mu;    /* t / (1 + s) = sum_j p_j (z_j - m) */
} xent_ent_fin;

XENT_HD xent_ent_fin xent_ent_finish(xent_ent_acc a)
{
    xent_ent_fin f;
    xent_ent_fold(&a);
    f.m = a.m;
    f.inv_s = 1.0f / (1.0f + a.s);
    f.mu = a.t * f.inv_s;
    f.h = log1pf(a.s) - f.mu; /* two terms >= 0 */
    if (!(a.m > -INFINITY && a.m < INFINITY)) { /* all -inf, or a +inf */
        f.h = NAN;
        f.inv_s = NAN;
        f.mu = NAN;
    }
    return f;
}

/* dH/dz_j (times the row scale g). */
XENT_HD float xent_ent_grad(const xent_ent_fin *f, float z, float g)
{
    const float d = z - f->m;
    const float p = expf(d) * f->inv_s;
    return p == 0.0f ? 0.0f : g * (p * (f->mu - d)); /* z = -inf: 0 */
}

/* ---- KL(q || softmax(z)), q given as probabilities ------------------
 * m, s as for entropy (s without the max's 1);
 * e = sum_{q_j > 0} q_j (log q_j - (z_j - m)), v = sum q_j;
 * KL = e + v log1p(s). bad: a q_j that is negative or not finite. */
typedef struct xent_klp_acc {
    float m, s, e, v;
    uint32_t bad;
    float cs, ce, cv;
} xent_klp_acc;

XENT_HD void xent_klp_init(xent_klp_acc *a)
{
    a->m = -INFINITY;
    a->s = 0.0f;
    a->e = 0.0f;
    a->v = 0.0f;
    a->bad = 0u;
    a->cs = 0.0f;
    a->ce = 0.0f;
    a->cv = 0.0f;
}

XENT_HD void xent_klp_fold(xent_klp_acc *a)
{
    a->s -= a->cs;
    a->e -= a->ce;
    a->v -= a->cv;
    a->cs = 0.0f;
    a->ce = 0.0f;
    a->cv = 0.0f;
}

/* z_j - mn = (z_j - m) - (mn - m): e' = e + (mn - m) v; s' = e^(m-mn)
 * (s + 1) (the old maximum's term joins s). */
XENT_HD void xent_klp_shift(xent_klp_acc *a, float mn)
{
    xent_klp_fold(a);
    if (a->v != 0.0f)
        a->e += (mn - a->m) * a->v;
    if (a->m != -INFINITY)
        a->s = (a->s + 1.0f) * expf(a->m - mn);
    a->m = mn;
}

XENT_HD void xent_klp_add_chunk(xent_klp_acc *a, const float *z,
                                const float *q, int n)
{
    float cm = a->m;
    int bu = -1;
    for (int u = 0; u < n; u++)
        if (z[u] > cm) {
            cm = z[u];
            bu = u;
        }
    if (bu >= 0)
        xent_klp_shift(a, cm);
    float se = 0.0f, sq = 0.0f, sv = 0.0f;
    uint32_t bad = 0u;
    for (int u = 0; u < n; u++) {
        const int zinf = z[u] == -INFINITY;
        const float d = z[u] - a->m;
        se += zinf || u == bu ? 0.0f : expf(d);
        const float qu = q[u];
        bad |= !(qu >= 0.0f && qu < INFINITY);
        /* q = 0 adds 0 (0 log 0 = 0); p = 0 < q gives +inf */
        const float term = zinf ? INFINITY : qu * (logf(qu) - d);
        sq += qu > 0.0f ? term : (qu == 0.0f ? 0.0f : qu);
        sv += qu;
    }
    a->bad |= bad;
    xent_kahan_add(&a->s, &a->cs, se);
    xent_kahan_add(&a->e, &a->ce, sq);
    xent_kahan_add(&a->v, &a->cv, sv);
}

XENT_HD void xent_klp_merge(xent_klp_acc *a, xent_klp_acc b)
{
    const float m = fmaxf(a->m, b.m);
    const int tie = a->m == b.m && m != -INFINITY;
    if (m > a->m)
        xent_klp_shift(a, m);
    else
        xent_klp_fold(a);
    if (m > b.m)
        xent_klp_shift(&b, m);
    else
        xent_klp_fold(&b);
    a->s += b.s;
    if (tie)
        a->s += 1.0f;
    a->e += b.e;
    a->v += b.v;
    a->bad |= b.bad;
}

/* ---- KL(softmax(t) || softmax(z)), teacher logits t ------------------
 * mz, sz and mt, st: max and exp-sum of z and of t, each sum without its
 * maximum's own term (1); d = sum_j e^(t_j - mt) ((t_j - mt) - (z_j - mz))
 * over every column. KL = d / (1 + st) + log1p(sz) - log1p(st). For
 * t == z every step is the same for both and KL is exactly 0. */
typedef struct xent_klt_acc {
    float mz, sz, mt, st, d;
    float csz, cst, cd;
} xent_klt_acc;

XENT_HD void xent_klt_init(xent_klt_acc *a)
{
    a->mz = -INFINITY;
    a->sz = 0.0f;
    a->mt = -INFINITY;
    a->st = 0.0f;
    a->d = 0.0f;
    a->csz = 0.0f;
    a->cst = 0.0f;
    a->cd = 0.0f;
}

XENT_HD void xent_klt_fold(xent_klt_acc *a)
{
    a->sz -= a->csz;
    a->st -= a->cst;
    a->d -= a->cd;
    a->csz = 0.0f;
    a->cst = 0.0f;
    a->cd = 0.0f;
}

/* New maxima mzn >= mz, mtn >= mt (at least one larger). With the full
 * sum St = st + 1 (0 when mt = -inf), dt = mt - mtn, dz = mz - mzn (0 when
 * unchanged), f = e^(.):
 *   d' = ft (d + (dt - dz) St),  st' = ft St (when mt grows),
 *   sz' = fz (sz + 1) (when mz grows).
 * Equal shifts of t and z cancel exactly. */
XENT_HD void xent_klt_shift(xent_klt_acc *a, float mzn, float mtn)
{
    xent_klt_fold(a);
    const int zg = mzn > a->mz, tg = mtn > a->mt;
    const float dz = zg ? a->mz - mzn : 0.0f;
    const float dt = tg ? a->mt - mtn : 0.0f;
    if (a->mt != -INFINITY) {
        const float stf = a->st + 1.0f;
        const float ft = expf(dt);
        a->d = ft * (a->d + (dt - dz) * stf);
        if (tg)
            a->st = ft * stf;
    }
    if (zg && a->mz != -INFINITY)
        a->sz = (a->sz + 1.0f) * expf(dz);
    a->mz = mzn;
    a->mt = mtn;
}

XENT_HD void xent_klt_add_chunk(xent_klt_acc *a, const float *z,
                                const float *t, int n)
{
    float cz = a->mz, ct = a->mt;
    int bz = -1, bt = -1;
    for (int u = 0; u < n; u++) {
        if (z[u] > cz) {
            cz = z[u];
            bz = u;
        }
        if (t[u] > ct) {
            ct = t[u];
            bt = u;
        }
    }
    if (bz >= 0 || bt >= 0)
        xent_klt_shift(a, cz, ct);
    float sz = 0.0f, st = 0.0f, sd = 0.0f;
    for (int u = 0; u < n; u++) {
        const int zinf = z[u] == -INFINITY, tinf = t[u] == -INFINITY;
        const float dzu = z[u] - a->mz, dtu = t[u] - a->mt;
        const float ez = zinf ? 0.0f : expf(dzu);
        const float et = tinf ? 0.0f : expf(dtu);
        sz += u == bz ? 0.0f : ez;
        st += u == bt ? 0.0f : et;
        /* q > 0 where p = 0 (z = -inf): +inf */
        sd += et == 0.0f ? 0.0f : (zinf ? INFINITY : et * (dtu - dzu));
    }
    xent_kahan_add(&a->sz, &a->csz, sz);
    xent_kahan_add(&a->st, &a->cst, st);
    xent_kahan_add(&a->d, &a->cd, sd);
}

XENT_HD void xent_klt_merge(xent_klt_acc *a, xent_klt_acc b)
{
    const float mz = fmaxf(a->mz, b.mz), mt = fmaxf(a->mt, b.mt);
    const int tz = a->mz == b.mz && mz != -INFINITY;
    const int tt = a->mt == b.mt && mt != -INFINITY;
    if (mz > a->mz || mt > a->mt)
        xent_klt_shift(a, mz, mt);
    else
        xent_klt_fold(a);
    if (mz > b.mz || mt > b.mt)
        xent_klt_shift(&b, mz, mt);
    else
        xent_klt_fold(&b);
    a->sz += b.sz;
    a->st += b.st;
    if (tz)
        a->sz += 1.0f;
    if (tt)
        a->st += 1.0f;
    a->d += b.d;
}

/* The KL row and its gradient coefficients, for both target kinds:
 *   p_j = e^(z_j - mz) inv_sz;  dKL/dz_j = qsum p_j - q_j
 *   teacher logits: q_j = e^(t_j - mt) inv_st,
 *   dKL/dt_j = q_j (((t_j - mt) - (z_j - mz)) + c0),
 *   c0 = (log1p(sz) - log1p(st)) - KL. */
typedef struct xent_kl_fin {
    float kl;
    float mz, inv_sz, mt, inv_st;
    float qsum, c0;
    int bad;
} xent_kl_fin;

XENT_HD int xent_finite(float x) { return x > -INFINITY && x < INFINITY; }

XENT_HD xent_kl_fin xent_klp_finish(xent_klp_acc a, float prob_tol)
{
    xent_kl_fin f;
    xent_klp_fold(&a);
    f.mz = a.m;
    f.inv_sz = 1.0f / (1.0f + a.s);
    f.mt = 0.0f;
    f.inv_st = 0.0f;
    f.qsum = a.v;
    f.c0 = 0.0f;
    f.bad = a.bad != 0u || !(fabsf(a.v - 1.0f) <= prob_tol);
    f.kl = a.e + a.v * log1pf(a.s);
    if (!xent_finite(a.m)) { /* all -inf, or a +inf logit */
        f.kl = NAN;
        f.inv_sz = NAN;
    }
    return f;
}

XENT_HD xent_kl_fin xent_klt_finish(xent_klt_acc a)
{
    xent_kl_fin f;
    xent_klt_fold(&a);
    f.mz = a.mz;
    f.inv_sz = 1.0f / (1.0f + a.sz);
    f.mt = a.mt;
    f.inv_st = 1.0f / (1.0f + a.st);
    f.qsum = 1.0f;
    const float lr = log1pf(a.sz) - log1pf(a.st);
    f.kl = a.d * f.inv_st + lr;
    f.c0 = lr - f.kl;
    f.bad = 0;
    if (!xent_finite(a.mz) || !xent_finite(a.mt)) {
        f.kl = NAN;
        f.inv_sz = NAN;
        f.inv_st = NAN;
        f.c0 = NAN;
    }
    return f;
}

XENT_HD float xent_kl_p(const xent_kl_fin *f, float z)
{
    return expf(z - f->mz) * f->inv_sz;
}

/* Teacher logits: q_j. */
XENT_HD float xent_kl_q(const xent_kl_fin *f, float t)
{
    return expf(t - f->mt) * f->inv_st;
}

/* dKL/dt_j (times g), teacher logits; q = xent_kl_q(f, t). */
XENT_HD float xent_kl_grad_t(const xent_kl_fin *f, float z, float t, float q,
                             float g)
{
    return q == 0.0f ? 0.0f
                     : g * (q * (((t - f->mt) - (z - f->mz)) + f->c0));
}

/* ---- binary cross-entropy with logits, one element ------------------ */

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
XENT_HD float xent_softplus(float x)
{
    return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

/* loss and dloss/dz of one element (y in [0, 1], pw >= 0, w any);
 * *grad gets the unscaled derivative. NaN z gives NaN. */
XENT_HD float xent_bce_elem(float z, float y, float pw, float w, float *grad)
{
    const float a = pw * y;     /* coefficient of -log sigmoid(z) */
    const float b = 1.0f - y;   /* coefficient of -log sigmoid(-z) */
    const float e = expf(-fabsf(z));
    const float lp = log1pf(e);
    const float r = 1.0f / (1.0f + e);
    /* sigmoid(z), sigmoid(-z) without cancellation */
    const float sig_pos = z >= 0.0f ? r : e * r;
    const float sig_neg = z >= 0.0f ? e * r : r;
    float l = 0.0f, g = 0.0f;
    if (a != 0.0f) {
        l += a * (fmaxf(-z, 0.0f) + lp);
        g -= a * sig_neg;
    }
    if (b != 0.0f) {
        l += b * (fmaxf(z, 0.0f) + lp);
        g += b * sig_pos;
    }
    if (z != z) {
        l = z;
        g = z;
    }
    *grad = w * g;
    return w * l;
}

/* ---- evaluation statistics: one pass, class-index target ------------
 * m = running max (first index idx), s = sum e^(z_j - m) over the columns
 * other than the target y and the max idx (both terms are added back
 * exactly at the end: the max's is 1), a = sum w_j (z_j - m) and
 * v = sum w_j for label smoothing, t = sum_{j != y} e^(z_j - m) (z_j - m)
 * for the entropy, cnt = #{j : z_j > z_y}. */
typedef struct xent_eval_acc {
    int32_t idx; /* first index of the max; INT32_MAX when none
                    (xent_ce_eval requires n_classes < 2^31) */
    int32_t cnt; /* #{j : z_j > z_y} */
    float m, s, a, v, t;
    int32_t y;   /* the target column, -1 for none (INT32_MIN: an
                    identity state, see xent_eval_merge) */
    float cs, ca, cv, ct;
} xent_eval_acc;

XENT_HD void xent_eval_init(xent_eval_acc *a, int32_t y)
{
    a->idx = INT32_MAX;
    a->cnt = 0;
    a->m = -INFINITY;
    a->s = 0.0f;
    a->a = 0.0f;
    a->v = 0.0f;
    a->t = 0.0f;
    a->y = y;
    a->cs = 0.0f;
    a->ca = 0.0f;
    a->cv = 0.0f;
    a->ct = 0.0f;
}

XENT_HD void xent_eval_fold(xent_eval_acc *a)
{
    a->s -= a->cs;
    a->a -= a->ca;
    a->v -= a->cv;
    a->t -= a->ct;
    a->cs = 0.0f;
    a->ca = 0.0f;
    a->cv = 0.0f;
    a->ct = 0.0f;
}

/* To mn > a->m (the caller sets the new idx). The old maximum's term (1,
 * unless it is the target's, which s never holds) joins s; with S the sum
 * over j != y: t' = f (t + d S), s' = f (s + that term), a' = a + v d. */
XENT_HD void xent_eval_shift(xent_eval_acc *a, float mn, int32_t y)
{
    xent_eval_fold(a);
    const float d = a->m - mn;
    if (a->m != -INFINITY) {
        const float f = expf(d);
        const float sf = a->s + (a->idx != y ? 1.0f : 0.0f);
        a->t = f * (a->t + d * sf);
        a->s = f * sf;
    }
    if (a->v != 0.0f)
        a->a += a->v * d;
    a->m = mn;
}

/*
 * One chunk: z[u] the capped logit of column c0 + u * stride (u < n,
 * increasing columns), vj[u] its smoothing weight (read only when smooth),
 * yu the chunk lane holding the target column (-1 for none; see
 * xent_eval_target_lane), zy the target logit (+inf when none: nothing
 * counts).
 */
XENT_HD void xent_eval_add_chunk(xent_eval_acc *a, const float *z,
                                 const float *vj, int n, int64_t c0,
                                 int64_t stride, int yu, float zy, int smooth)
{
    float best = a->m;
    int bu = -1;
    int cnt = 0;
    for (int u = 0; u < n; u++) {
        if (z[u] > best) { /* strict: the first index of a tie */
            best = z[u];
            bu = u;
        }
        cnt += z[u] > zy;
    }
    a->cnt += cnt;
    if (bu >= 0) {
        xent_eval_shift(a, best, a->y);
        a->idx = (int32_t)(c0 + (int64_t)bu * stride);
    }
    float se = 0.0f, st = 0.0f, sa = 0.0f, sv = 0.0f;
    for (int u = 0; u < n; u++) {
        const float d = z[u] - a->m;
        const int skip_t = z[u] == -INFINITY || u == yu;
        const float e = skip_t ? 0.0f : expf(d);
        se += u == bu ? 0.0f : e; /* the new max: the implicit 1 */
        st += skip_t ? 0.0f : e * d;
        if (smooth) {
            const float w = vj[u];
            sa += w == 0.0f ? 0.0f
                            : (z[u] == -INFINITY ? -INFINITY : w * d);
            sv += w;
        }
    }
    xent_kahan_add(&a->s, &a->cs, se);
    xent_kahan_add(&a->t, &a->ct, st);
    if (smooth) {
        xent_kahan_add(&a->a, &a->ca, sa);
        xent_kahan_add(&a->v, &a->cv, sv);
    }
}

/* The lane of a chunk (columns c0 + u * stride, u < n) that holds column
 * y, or -1. */
XENT_HD int xent_eval_target_lane(int64_t y, int64_t c0, int64_t stride,
                                  int n)
{
    const int64_t off = y - c0;
    if (y < 0 || off < 0 || off % stride != 0 || off / stride >= n)
        return -1;
    return (int)(off / stride);
}

/* a = a (+) b. An identity state (xent_eval_init(.., INT32_MIN)) may be
 * either argument; the target is the other's. */
XENT_HD void xent_eval_merge(xent_eval_acc *a, xent_eval_acc b)
{
    const int32_t y = a->y > b.y ? a->y : b.y;
    const float m = fmaxf(a->m, b.m);
    int32_t idx, loser;
    if (a->m > b.m) {
        idx = a->idx;
        loser = -1;
    } else if (b.m > a->m) {
        idx = b.idx;
        loser = -1;
    } else {
        idx = a->idx < b.idx ? a->idx : b.idx;
        loser = a->idx < b.idx ? b.idx : a->idx;
    }
    if (m > a->m)
        xent_eval_shift(a, m, y);
    else
        xent_eval_fold(a);
    if (m > b.m)
        xent_eval_shift(&b, m, y);
    else
        xent_eval_fold(&b);
    a->s += b.s;
    /* equal maxima: the one that is no longer the first joins s */
    if (loser >= 0 && m != -INFINITY && loser != y)
        a->s += 1.0f;
    a->a += b.a;
    a->v += b.v;
    a->t += b.t;
    a->cnt += b.cnt;
    a->idx = idx;
    a->y = y;
}

/* The per-row statistics of one row. */
typedef struct xent_eval_row {
    float loss, lse, nll, entropy, zloss;
    int64_t argmax, rank;
    int correct;
} xent_eval_row;

/*
 * From the merged state. ok: the target y is valid (zy its capped logit,
 * wy its weight); otherwise (ignored or bad rows) only lse, entropy and
 * argmax are meaningful. With T = e^(zy - m) and the full exp-sum
 * 1 + s + [idx != y] T:
 *   logd = log1p(s + [idx != y] T),  lse = m + logd,
 *   nll  = (m - zy) + logd            (two terms >= 0)
 *   loss = (1 - a) w_y nll + (a/C) (W logd - a_sum) + z_loss lse^2
 *   H    = logd - (t + T (zy - m)) / (1 + s + [idx != y] T)
 * (the loss is xent_fin_index's, with this cancellation-free logd).
 */
XENT_HD xent_eval_row xent_eval_finish(xent_eval_acc acc, int ok, int64_t y,
                                       float zy, float wy, float alpha,
                                       float inv_c, float z_loss)
{
    xent_eval_row r;
    xent_eval_fold(&acc);
    r.argmax = acc.idx == INT32_MAX ? 0 : (int64_t)acc.idx;
    float sm1 = acc.s, t = acc.t; /* the full sum - 1, and t */
    if (ok) {
        const float dy = zy - acc.m;
        const float ty = zy == -INFINITY ? 0.0f : expf(dy);
        if (acc.idx != y) {
            sm1 += ty;
            t += ty == 0.0f ? 0.0f : ty * dy;
        }
        const float logd = log1pf(sm1);
        r.lse = acc.m + logd;
        r.nll = -dy + logd;
        const float hard = (1.0f - alpha) * wy;
        float loss = alpha < 1.0f ? hard * r.nll : 0.0f;
        if (alpha > 0.0f)
            loss += alpha * inv_c * (acc.v * logd - acc.a);
        r.zloss = z_loss * r.lse * r.lse;
        if (z_loss != 0.0f)
            loss += r.zloss;
        r.loss = loss;
        /* a row of -inf only, or with a NaN target logit, has no
         * meaningful rank: it counts as a miss (acc holds the columns other
         * than the target, so acc.m = -inf alone is C = 1 or a finite
         * target among -inf others) */
        const int ranked =
            zy == zy && !(zy == -INFINITY && !(acc.m > -INFINITY));
        r.rank = ranked ? acc.cnt : -1;
        r.correct = ranked && r.argmax == y;
    } else {
        r.lse = acc.m + log1pf(sm1);
        r.loss = 0.0f;
        r.nll = 0.0f;
        r.zloss = 0.0f;
        r.rank = -1;
        r.correct = 0;
    }
    r.entropy = log1pf(sm1) - t / (1.0f + sm1);
    if (!xent_finite(acc.m)) { /* all -inf, or a +inf logit */
        r.entropy = NAN;
        r.lse = NAN;
        if (ok) {
            r.loss = NAN;
            r.nll = NAN;
            r.zloss = NAN;
        }
    }
    return r;
}

/* ---- exact fixed point for the corpus sums ------------------------- */
__extension__ typedef unsigned __int128 xent_u128;

/* round(v * 2^32) (ties to even) as a 128-bit two's-complement integer in
 * *out; 0 (and *out = 0) when v is not finite or |v| >= 2^62. Integer
 * operations only: bitwise the same on the host and the device. */
XENT_HD int xent_fixed32(float v, xent_u128 *out)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    const uint32_t ex = (b >> 23) & 0xffu;
    const uint64_t man = b & 0x7fffffu;
    *out = 0;
    if (ex == 0xffu || ex >= 127u + 62u)
        return 0;
    /* |v| = M 2^(e - 150), so |v| 2^32 = M 2^sh */
    const uint64_t mm = ex ? (man | 0x800000u) : man;
    const int sh = (int)(ex ? ex : 1u) - 150 + 32;
    xent_u128 mag;
    if (sh >= 0) {
        mag = (xent_u128)mm << sh; /* < 2^94 */
    } else if (-sh > 25) {
        mag = 0; /* below a quarter */
    } else {
        const int k = -sh;
        uint64_t q = mm >> k;
        const uint64_t rem = mm & ((1ull << k) - 1ull);
        const uint64_t half = 1ull << (k - 1);
        if (rem > half || (rem == half && (q & 1ull)))
            q++;
        mag = q;
    }
    *out = (b >> 31) ? (xent_u128)0 - mag : mag;
    return 1;
}

/* ---- launchers (cuda/info.cu) ---- */

/* Entropy, KL or BCE rows (p->op), forward or with gradients (p->grad /
 * p->grad_target non-NULL), with the given (non-AUTO) variant. */
int xent_cuda_info_rows(const xent_info_params *p, xent_variant variant,
                        struct CUstream_st *stream);

/* xent_ce_eval's pass; adds to p->accum when it is not NULL. */
int xent_cuda_eval_rows(const xent_eval_params *p, xent_variant variant,
                        struct CUstream_st *stream);

/* Zero an accumulator on the stream. */
int xent_cuda_eval_accum_reset(xent_eval_accum *d_accum,
                               struct CUstream_st *stream);

/* ---- fused linear + cross-entropy helpers (cuda/linear.cu) ----------
 * Elementwise helpers of host/linear.c around the cuBLAS GEMMs. */

/* dst[r * n_classes + c] = bias[c] (bias of dtype F32 or BF16) for r in
 * [0, n_rows): the GEMM then adds H W^T with beta = 1. */
int xent_cuda_linear_bias_fill(float *d_dst, int64_t n_rows, int64_t n_classes,
                               const void *d_bias, xent_dtype bias_dtype,
                               struct CUstream_st *stream);

/* acc[c] = (accumulate ? acc[c] : 0) + sum_r g[r * n_classes + c], the rows
 * added in order r = 0, 1, ... in fp32 (one thread per column:
 * deterministic, no atomics). */
int xent_cuda_linear_colsum(const float *d_g, int64_t n_rows,
                            int64_t n_classes, float *d_acc, int accumulate,
                            struct CUstream_st *stream);

/* dst[i] = bf16(src[i]) (round to nearest even), i in [0, n). */
int xent_cuda_linear_f32_to_bf16(const float *d_src, uint16_t *d_dst,
                                 int64_t n, struct CUstream_st *stream);

#ifdef __cplusplus
}
#endif
#endif /* XENT_BRIDGE_H */
