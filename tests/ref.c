/*
 * ref.c - the float64 CPU reference (see ref.h for the math and for the
 * conventions on special values).
 *
 * Structure: every row is first copied into long double scratch (after the
 * softcap, with its derivative), then summarized by row_stats():
 *   m    = max_j z'_j, k = its first index
 *   s    = sum_{j != k} exp(z'_j - m)       (so sum_j exp(z'_j - m) = 1 + s)
 *   logd = log1p(s),  lse = m + logd
 * from which, without cancellation,
 *   lse - z'_j = (m - z'_j) + logd           (both terms >= 0; j = k: logd)
 *   p_j        = exp(z'_j - m) / (1 + s)     (j = k: 1 / (1 + s))
 *   1 - p_k    = s / (1 + s)
 * The losses and gradients in ref.h are assembled from these quantities.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>

typedef long double real;

void ref_ce_opts_default(ref_ce_opts *o)
{
    o->reduction = 1;
    o->ignore_index = -100;
    o->weights = NULL;
    o->label_smoothing = 0.0;
    o->z_loss = 0.0;
    o->softcap = 0.0;
    o->empty_mean_nan = 0;
}

/* ------------------------------------------------------------------ */
/* Row helpers                                                          */
/* ------------------------------------------------------------------ */

typedef struct row_state {
    int bad;   /* a NaN, all -inf, or a +inf: the row's results are NaN */
    int64_t k; /* first index of the maximum */
    real m;    /* the maximum */
    real s;    /* sum over j != k of exp(z_j - m) */
    real logd; /* log1p(s) = log sum_j exp(z_j - m) */
    real lse;  /* m + logd (NaN when bad) */
} row_state;

/* Copies a row into long double, applying the softcap (cap > 0) and
 * recording dz'/dz in dc (if not NULL). */
static void load_row(int64_t c, const double *z, double cap, real *zc, real *dc)
{
    for (int64_t j = 0; j < c; j++) {
        real v = (real)z[j];
        if (cap > 0.0) {
            real t = tanhl(v / (real)cap);
            zc[j] = (real)cap * t;
            if (dc)
                dc[j] = 1.0L - t * t;
        } else {
            zc[j] = v;
            if (dc)
                dc[j] = 1.0L;
        }
    }
}

static row_state row_stats(int64_t c, const real *z)
{
    row_state r = {0, 0, -INFINITY, 0.0L, 0.0L, 0.0L};
    int first = 1;
    for (int64_t j = 0; j < c; j++) {
        if (isnan(z[j])) {
            r.bad = 1;
        } else if (first || z[j] > r.m) {
            r.m = z[j];
            r.k = j;
            first = 0;
        }
    }
    /* All -inf (or all NaN) leaves m = -inf; a +inf makes m = +inf. */
    if (c <= 0 || isinf(r.m))
        r.bad = 1;
    if (r.bad) {
        r.s = NAN;
        r.logd = NAN;
        r.lse = NAN;
        return r;
    }
    for (int64_t j = 0; j < c; j++)
        if (j != r.k)
            r.s += expl(z[j] - r.m);
    r.logd = log1pl(r.s);
    r.lse = r.m + r.logd;
    return r;
}

/* lse - z_j, i.e. -log p_j, as a sum of two non-negative terms. */
static real row_nll(const row_state *r, const real *z, int64_t j)
{
    return j == r->k ? r->logd : (r->m - z[j]) + r->logd;
}

static real row_p(const row_state *r, const real *z, int64_t j)
{
    real e = j == r->k ? 1.0L : expl(z[j] - r->m);
    return e / (1.0L + r->s);
}

/* 1 - p_j without cancellation for the maximum (p_j <= 1/2 otherwise). */
static real row_one_minus_p(const row_state *r, const real *z, int64_t j)
{
    if (j == r->k)
        return r->s / (1.0L + r->s);
    return 1.0L - row_p(r, z, j);
}

static void fill_value(double *dst, int64_t n, double v)
{
    if (dst)
        for (int64_t j = 0; j < n; j++)
            dst[j] = v;
}

/* Scratch for one row: capped logits and their derivative. */
typedef struct scratch {
    real *zc, *dc, *tc;
} scratch;

static int scratch_init(scratch *sc, int64_t c)
{
    size_t m = (size_t)(c > 0 ? c : 1);
    sc->zc = calloc(m, sizeof(real));
    sc->dc = calloc(m, sizeof(real));
    sc->tc = calloc(m, sizeof(real));
    if (!sc->zc || !sc->dc || !sc->tc) {
        free(sc->zc);
        free(sc->dc);
        free(sc->tc);
        return 0;
    }
    return 1;
}

static void scratch_free(scratch *sc)
{
    free(sc->zc);
    free(sc->dc);
    free(sc->tc);
}

/* ------------------------------------------------------------------ */
/* Cross-entropy                                                        */
/* ------------------------------------------------------------------ */

double ref_ce_index(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const int64_t *y, const ref_ce_opts *o_in,
                    double *loss_rows, double *lse, double *grad)
{
    ref_ce_opts def;
    if (!o_in) {
        ref_ce_opts_default(&def);
        o_in = &def;
    }
    const ref_ce_opts *o = o_in;
    const real alpha = (real)o->label_smoothing;
    const real sz = (real)o->z_loss;
    const real a_c = c > 0 ? alpha / (real)c : 0.0L; /* alpha / C */
    const double *w = o->weights;

    real wsum = 0.0L; /* W = sum_c w_c, needed only with smoothing */
    if (alpha != 0.0L)
        for (int64_t j = 0; j < c; j++)
            wsum += w ? (real)w[j] : 1.0L;

    /* MEAN denominator: sum of w_{y_i} over non-ignored, in-range rows. */
    real denom = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        int64_t yi = y[i];
        if (yi == o->ignore_index || yi < 0 || yi >= c)
            continue;
        denom += w ? (real)w[yi] : 1.0L;
    }
    real scale = 1.0L;
    if (o->reduction == 1)
        scale = denom != 0.0L ? 1.0L / denom : 0.0L;

    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(loss_rows, n, NAN);
        fill_value(lse, n, NAN);
        fill_value(grad, n * c, NAN);
        return NAN;
    }

    real total = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        const double *zi = z + i * ldz;
        double *gi = grad ? grad + i * c : NULL;
        int64_t yi = y[i];
        load_row(c, zi, o->softcap, sc.zc, sc.dc);
        row_state st = row_stats(c, sc.zc);
        if (lse)
            lse[i] = (double)st.lse;

        if (yi == o->ignore_index) {
            if (loss_rows)
                loss_rows[i] = 0.0;
            fill_value(gi, c, 0.0);
            continue;
        }
        if (yi < 0 || yi >= c || st.bad) {
            if (loss_rows)
                loss_rows[i] = NAN;
            fill_value(gi, c, NAN);
            total += NAN;
            continue;
        }

        const real wy = w ? (real)w[yi] : 1.0L;
        const real hard = (1.0L - alpha) * wy;
        real loss = 0.0L;
        if (hard != 0.0L)
            loss += hard * row_nll(&st, sc.zc, yi);
        if (alpha != 0.0L)
            for (int64_t j = 0; j < c; j++) {
                real coef = a_c * (w ? (real)w[j] : 1.0L);
                if (coef != 0.0L)
                    loss += coef * row_nll(&st, sc.zc, j);
            }
        real zl = 0.0L; /* d(s lse^2)/d lse */
        if (sz != 0.0L) {
            loss += sz * st.lse * st.lse;
            zl = 2.0L * sz * st.lse;
        }
        if (loss_rows)
            loss_rows[i] = (double)loss;
        total += loss;

        if (gi) {
            const real smooth = a_c * wsum; /* (alpha/C) W */
            const real coef_p = hard + smooth + zl;
            for (int64_t j = 0; j < c; j++) {
                real uj = alpha != 0.0L ? a_c * (w ? (real)w[j] : 1.0L) : 0.0L;
                real g;
                if (j == yi) {
                    real py = row_p(&st, sc.zc, j);
                    g = -hard * row_one_minus_p(&st, sc.zc, j) +
                        (smooth + zl) * py - uj;
                } else {
                    g = coef_p * row_p(&st, sc.zc, j) - uj;
                }
                gi[j] = (double)(g * sc.dc[j] * scale);
            }
        }
    }
    scratch_free(&sc);

    if (o->reduction == 1) {
        if (denom == 0.0L)
            return o->empty_mean_nan ? (double)NAN : 0.0;
        return (double)(total / denom);
    }
    return (double)total;
}

double ref_ce_probs(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const double *q, int64_t ldq, const ref_ce_opts *o_in,
                    double *loss_rows, double *lse, double *grad)
{
    ref_ce_opts def;
    if (!o_in) {
        ref_ce_opts_default(&def);
        o_in = &def;
    }
    const ref_ce_opts *o = o_in;
    const real alpha = (real)o->label_smoothing;
    const real sz = (real)o->z_loss;
    const real a_c = c > 0 ? alpha / (real)c : 0.0L;
    const double *w = o->weights;
    real scale = 1.0L;
    if (o->reduction == 1)
        scale = n > 0 ? 1.0L / (real)n : 0.0L;

    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(loss_rows, n, NAN);
        fill_value(lse, n, NAN);
        fill_value(grad, n * c, NAN);
        return NAN;
    }
    real *v = sc.tc; /* v_c = w_c q'_c */

    real total = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        const double *zi = z + i * ldz;
        const double *qi = q + i * ldq;
        double *gi = grad ? grad + i * c : NULL;
        load_row(c, zi, o->softcap, sc.zc, sc.dc);
        row_state st = row_stats(c, sc.zc);
        if (lse)
            lse[i] = (double)st.lse;
        if (st.bad) {
            if (loss_rows)
                loss_rows[i] = NAN;
            fill_value(gi, c, NAN);
            total += NAN;
            continue;
        }
        real vsum = 0.0L, vrest = 0.0L, loss = 0.0L;
        for (int64_t j = 0; j < c; j++) {
            real wj = w ? (real)w[j] : 1.0L;
            v[j] = wj * ((1.0L - alpha) * (real)qi[j] + a_c);
            vsum += v[j];
            if (j != st.k)
                vrest += v[j];
            if (v[j] != 0.0L)
                loss += v[j] * row_nll(&st, sc.zc, j);
        }
        real zl = 0.0L;
        if (sz != 0.0L) {
            loss += sz * st.lse * st.lse;
            zl = 2.0L * sz * st.lse;
        }
        if (loss_rows)
            loss_rows[i] = (double)loss;
        total += loss;

        if (gi)
            for (int64_t j = 0; j < c; j++) {
                real g;
                if (j == st.k) /* p_k V - v_k = -V (1 - p_k) + sum_{c!=k} v_c */
                    g = -vsum * row_one_minus_p(&st, sc.zc, j) + vrest +
                        zl * row_p(&st, sc.zc, j);
                else
                    g = (vsum + zl) * row_p(&st, sc.zc, j) - v[j];
                gi[j] = (double)(g * sc.dc[j] * scale);
            }
    }
    scratch_free(&sc);

    if (o->reduction == 1) {
        if (n == 0)
            return o->empty_mean_nan ? (double)NAN : 0.0;
        return (double)(total / (real)n);
    }
    return (double)total;
}

/* ------------------------------------------------------------------ */
/* Softmax, entropy, KL                                                 */
/* ------------------------------------------------------------------ */

double ref_lse(int64_t c, const double *z)
{
    if (c <= 0)
        return -INFINITY;
    real m = -INFINITY;
    for (int64_t j = 0; j < c; j++) {
        if (isnan(z[j]))
            return NAN;
        if ((real)z[j] > m)
            m = (real)z[j];
    }
    if (isinf(m)) /* all -inf: log 0; any +inf: +inf */
        return (double)m;
    /* Split off the first maximum so the sum is 1 + s. */
    int seen = 0;
    real s = 0.0L;
    for (int64_t j = 0; j < c; j++) {
        if (!seen && (real)z[j] == m) {
            seen = 1;
            continue;
        }
        s += expl((real)z[j] - m);
    }
    return (double)(m + log1pl(s));
}

void ref_softmax(int64_t c, const double *z, double *p)
{
    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(p, c, NAN);
        return;
    }
    load_row(c, z, 0.0, sc.zc, NULL);
    row_state st = row_stats(c, sc.zc);
    for (int64_t j = 0; j < c; j++)
        p[j] = st.bad ? (double)NAN : (double)row_p(&st, sc.zc, j);
    scratch_free(&sc);
}

double ref_entropy_probs(int64_t c, const double *q)
{
    real h = 0.0L;
    for (int64_t j = 0; j < c; j++)
        if (q[j] != 0.0) /* NaN passes and propagates */
            h -= (real)q[j] * logl((real)q[j]);
    return (double)h;
}

double ref_cross_entropy_probs(int64_t c, const double *q, const double *p)
{
    real h = 0.0L;
    for (int64_t j = 0; j < c; j++)
        if (q[j] != 0.0)
            h -= (real)q[j] * logl((real)p[j]);
    return (double)h;
}

double ref_kl_probs(int64_t c, const double *q, const double *p)
{
    real d = 0.0L;
    for (int64_t j = 0; j < c; j++)
        if (q[j] != 0.0)
            d += (real)q[j] * (logl((real)q[j]) - logl((real)p[j]));
    return (double)d;
}

/* Entropy of the softmax of a loaded row; g (optional) gets dH/dz. */
static real softmax_entropy_row(int64_t c, const real *zc, real *g)
{
    row_state st = row_stats(c, zc);
    if (st.bad) {
        if (g)
            for (int64_t j = 0; j < c; j++)
                g[j] = NAN;
        return NAN;
    }
    real h = 0.0L;
    for (int64_t j = 0; j < c; j++) {
        real p = row_p(&st, zc, j);
        if (p != 0.0L) /* p = 0 (z = -inf or underflow): 0 log 0 = 0 */
            h += p * row_nll(&st, zc, j);
    }
    if (g)
        for (int64_t j = 0; j < c; j++) {
            real p = row_p(&st, zc, j);
            /* dH/dz_j = -p_j (log p_j + H) = p_j ((lse - z_j) - H) */
            g[j] = p != 0.0L ? p * (row_nll(&st, zc, j) - h) : 0.0L;
        }
    return h;
}

double ref_softmax_entropy(int64_t c, const double *z, double *grad)
{
    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(grad, c, NAN);
        return NAN;
    }
    load_row(c, z, 0.0, sc.zc, NULL);
    real h = softmax_entropy_row(c, sc.zc, grad ? sc.tc : NULL);
    if (grad)
        for (int64_t j = 0; j < c; j++)
            grad[j] = (double)sc.tc[j];
    scratch_free(&sc);
    return (double)h;
}

static real reduce_scale(int reduction, int64_t count)
{
    if (reduction == 1)
        return count > 0 ? 1.0L / (real)count : 0.0L;
    return 1.0L;
}

double ref_entropy_batch(int64_t n, int64_t c, const double *z, int64_t ldz,
                         int reduction, double *loss_rows, double *grad)
{
    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(loss_rows, n, NAN);
        fill_value(grad, n * c, NAN);
        return NAN;
    }
    const real scale = reduce_scale(reduction, n);
    real total = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        load_row(c, z + i * ldz, 0.0, sc.zc, NULL);
        real h = softmax_entropy_row(c, sc.zc, grad ? sc.tc : NULL);
        if (loss_rows)
            loss_rows[i] = (double)h;
        total += h;
        if (grad)
            for (int64_t j = 0; j < c; j++)
                grad[i * c + j] = (double)(sc.tc[j] * scale);
    }
    scratch_free(&sc);
    return (double)(total * scale);
}

double ref_kl_batch(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const double *q, int64_t ldq, const double *t, int64_t ldt,
                    int reduction, double *loss_rows, double *grad_z,
                    double *grad_t)
{
    if ((q == NULL) == (t == NULL))
        return NAN;
    scratch sc;
    if (!scratch_init(&sc, c)) {
        fill_value(loss_rows, n, NAN);
        fill_value(grad_z, n * c, NAN);
        if (t)
            fill_value(grad_t, n * c, NAN);
        return NAN;
    }
    const real scale = reduce_scale(reduction, n);
    real *zc = sc.zc, *tc = sc.tc;
    real total = 0.0L;
    for (int64_t i = 0; i < n; i++) {
        double *gz = grad_z ? grad_z + i * c : NULL;
        double *gt = (grad_t && t) ? grad_t + i * c : NULL;
        load_row(c, z + i * ldz, 0.0, zc, NULL);
        row_state sz = row_stats(c, zc);
        row_state stt = {0};
        if (t) {
            load_row(c, t + i * ldt, 0.0, tc, NULL);
            stt = row_stats(c, tc);
        }
        if (sz.bad || (t && stt.bad)) {
            if (loss_rows)
                loss_rows[i] = NAN;
            fill_value(gz, c, NAN);
            fill_value(gt, c, NAN);
            total += NAN;
            continue;
        }
        /* KL_i = sum q_c (log q_c - log p_c), log p_c = -(lse - z_c) */
        real kl = 0.0L, qsum = 0.0L;
        for (int64_t j = 0; j < c; j++) {
            real qj, logq;
            if (q) {
                qj = (real)q[i * ldq + j];
                logq = qj != 0.0L ? logl(qj) : 0.0L;
            } else {
                qj = row_p(&stt, tc, j);
                logq = -row_nll(&stt, tc, j);
            }
            qsum += qj;
            if (qj != 0.0L)
                kl += qj * (logq + row_nll(&sz, zc, j));
        }
        if (loss_rows)
            loss_rows[i] = (double)kl;
        total += kl;
        for (int64_t j = 0; j < c; j++) {
            real qj = q ? (real)q[i * ldq + j] : row_p(&stt, tc, j);
            if (gz)
                gz[j] = (double)((row_p(&sz, zc, j) * qsum - qj) * scale);
            if (gt) {
                /* dKL/dt_j = q_j (log q_j - log p_j - KL) */
                real g = 0.0L;
                if (qj != 0.0L)
                    g = qj *
                        ((row_nll(&sz, zc, j) - row_nll(&stt, tc, j)) - kl);
                gt[j] = (double)(g * scale);
            }
        }
    }
    scratch_free(&sc);
    return (double)(total * scale);
}

/* ------------------------------------------------------------------ */
/* Binary cross-entropy with logits                                     */
/* ------------------------------------------------------------------ */

/* softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|); NaN propagates */
static real softplus(real x)
{
    return (x > 0.0L ? x : 0.0L) + log1pl(expl(-fabsl(x)));
}

/* sigmoid(x) without overflow */
static real sigmoid(real x)
{
    if (x >= 0.0L)
        return 1.0L / (1.0L + expl(-x));
    real e = expl(x);
    return e / (1.0L + e);
}

double ref_bce_logits(int64_t n, int64_t c, const double *z, const double *y,
                      const double *pos_weight, const double *weight,
                      int reduction, double *loss_elems, double *grad)
{
    const int64_t count = n * c;
    const real scale = reduce_scale(reduction, count);
    real total = 0.0L;
    for (int64_t e = 0; e < count; e++) {
        real ze = (real)z[e], ye = (real)y[e];
        real pw = pos_weight ? (real)pos_weight[e % c] : 1.0L;
        real we = weight ? (real)weight[e] : 1.0L;
        real a = pw * ye;   /* coefficient of -log sigmoid(z)     */
        real b = 1.0L - ye; /* coefficient of -log (1-sigmoid(z)) */
        real l = 0.0L;
        if (a != 0.0L)
            l += a * softplus(-ze);
        if (b != 0.0L)
            l += b * softplus(ze);
        l *= we;
        if (isnan(ze))
            l = NAN;
        if (loss_elems)
            loss_elems[e] = (double)l;
        total += l;
        if (grad) {
            real g = 0.0L;
            if (b != 0.0L)
                g += b * sigmoid(ze);
            if (a != 0.0L)
                g -= a * sigmoid(-ze);
            if (isnan(ze))
                g = NAN;
            grad[e] = (double)(g * we * scale);
        }
    }
    return (double)(total * scale);
}
