/*
 * testutil.c - shared test helpers (see testutil.h). No Criterion here.
 */
#include "testutil.h"

#include <math.h>
#include <stddef.h>

/* ------------------------------------------------------------------ */
/* RNG: the splitmix64 sequence (a Weyl sequence through a mixer).      */
/* ------------------------------------------------------------------ */
void tu_rng_seed(tu_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t tu_next(tu_rng *r)
{
    uint64_t x = (r->s += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double tu_uniform(tu_rng *r)
{
    return (double)(tu_next(r) >> 11) * 0x1.0p-53;
}

double tu_normal(tu_rng *r)
{
    /* Box-Muller; 1 - u is in (0, 1], so the log is finite. */
    double u1 = 1.0 - tu_uniform(r);
    double u2 = tu_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int64_t tu_below(tu_rng *r, int64_t bound)
{
    if (bound <= 1)
        return 0;
    return (int64_t)(tu_next(r) % (uint64_t)bound);
}

/* ------------------------------------------------------------------ */
/* Fillers                                                             */
/* ------------------------------------------------------------------ */
void tu_fill_logits(tu_rng *r, int64_t n, int64_t c, int64_t ld, float *z,
                    float pad_value)
{
    for (int64_t i = 0; i < n; i++) {
        float *zi = z + i * ld;
        for (int64_t j = 0; j < c; j++)
            zi[j] = (float)(2.0 * tu_normal(r));
        for (int64_t j = c; j < ld; j++)
            zi[j] = pad_value;
        if (c <= 0)
            continue;
        int64_t k = 1 + tu_below(r, 3);
        if (k > c)
            k = c;
        int64_t prev[3] = {-1, -1, -1};
        for (int64_t s = 0; s < k; s++) {
            int64_t col;
            int tries = 0;
            do { /* distinct columns; give up after a few tries */
                col = tu_below(r, c);
            } while ((col == prev[0] || col == prev[1]) && ++tries < 8);
            prev[s] = col;
            float v = zi[col] * 20.0f;
            zi[col] = s == 0 ? fabsf(v) : v;
        }
    }
}

void tu_fill_targets_i64(tu_rng *r, int64_t n, int64_t c, int64_t *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = tu_below(r, c);
}

void tu_fill_targets_i32(tu_rng *r, int64_t n, int64_t c, int32_t *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)tu_below(r, c);
}

void tu_fill_probs(tu_rng *r, int64_t n, int64_t c, int64_t ld, float *q,
                   float pad)
{
    for (int64_t i = 0; i < n; i++) {
        float *qi = q + i * ld;
        double sum = 0.0;
        /* Raw values first (kept in q as float, summed in double). */
        for (int64_t j = 0; j < c; j++) {
            double v = tu_uniform(r) < 0.25 ? 0.0 : exp(tu_normal(r));
            qi[j] = (float)v;
            sum += (double)qi[j];
        }
        if (c > 0 && sum == 0.0) { /* never an all-zero row */
            int64_t j = tu_below(r, c);
            qi[j] = 1.0f;
            sum = 1.0;
        }
        for (int64_t j = 0; j < c; j++)
            qi[j] = (float)((double)qi[j] / sum);
        for (int64_t j = c; j < ld; j++)
            qi[j] = pad;
    }
}

void tu_fill_uniform_f32(tu_rng *r, int64_t n, float lo, float hi, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        double u = tu_uniform(r);
        dst[i] = (float)((double)lo + ((double)hi - (double)lo) * u);
    }
}

/* ------------------------------------------------------------------ */
/* Conversions                                                         */
/* ------------------------------------------------------------------ */
void tu_f32_to_f64(const float *src, double *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (double)src[i];
}

void tu_f64_to_f32(const double *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

void tu_rows_f32_to_f64(int64_t n, int64_t c, int64_t ld, const float *src,
                        double *dst)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++)
            dst[i * c + j] = (double)src[i * ld + j];
}

/* ------------------------------------------------------------------ */
/* Close comparison                                                    */
/* ------------------------------------------------------------------ */

typedef struct compare_acc {
    tu_close res;
    double worst_ratio;
    double diff2, ref2;
} compare_acc;

static void compare_begin(compare_acc *a)
{
    a->res.ok = 1;
    a->res.n_bad = 0;
    a->res.worst = -1;
    a->res.worst_err = 0.0;
    a->res.worst_ref = 0.0;
    a->res.worst_got = 0.0;
    a->res.rel_norm = 0.0;
    a->worst_ratio = -1.0;
    a->diff2 = 0.0;
    a->ref2 = 0.0;
}

static void compare_one(compare_acc *a, int64_t i, double ref, double got,
                        double atol, double rtol)
{
    double err, ratio;
    int ok;
    if (isnan(ref) || isnan(got)) {
        ok = isnan(ref) && isnan(got);
        err = ok ? 0.0 : (double)NAN;
        ratio = ok ? 0.0 : (double)INFINITY;
    } else if (isinf(ref) || isinf(got)) {
        ok = ref == got;
        err = ok ? 0.0 : (double)INFINITY;
        ratio = ok ? 0.0 : (double)INFINITY;
    } else {
        err = fabs(got - ref);
        double tol = atol + rtol * fabs(ref);
        ok = err <= tol;
        ratio = tol > 0.0 ? err / tol : (err > 0.0 ? (double)INFINITY : 0.0);
        a->diff2 += err * err;
        a->ref2 += ref * ref;
    }
    if (!ok) {
        a->res.ok = 0;
        a->res.n_bad++;
    }
    if (ratio > a->worst_ratio) {
        a->worst_ratio = ratio;
        a->res.worst = i;
        a->res.worst_err = err;
        a->res.worst_ref = ref;
        a->res.worst_got = got;
    }
}

static tu_close compare_end(compare_acc *a)
{
    a->res.rel_norm =
        a->ref2 > 0.0 ? sqrt(a->diff2) / sqrt(a->ref2) : sqrt(a->diff2);
    return a->res;
}

tu_close tu_compare_f32(const double *ref, const float *got, int64_t n,
                        double atol, double rtol)
{
    compare_acc a;
    compare_begin(&a);
    for (int64_t i = 0; i < n; i++)
        compare_one(&a, i, ref[i], (double)got[i], atol, rtol);
    return compare_end(&a);
}

tu_close tu_compare_f64(const double *ref, const double *got, int64_t n,
                        double atol, double rtol)
{
    compare_acc a;
    compare_begin(&a);
    for (int64_t i = 0; i < n; i++)
        compare_one(&a, i, ref[i], got[i], atol, rtol);
    return compare_end(&a);
}

tu_close tu_compare_rows_f32(const double *ref, const float *got, int64_t n,
                             int64_t c, int64_t ld, double atol, double rtol)
{
    compare_acc a;
    compare_begin(&a);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++)
            compare_one(&a, i * c + j, ref[i * c + j], (double)got[i * ld + j],
                        atol, rtol);
    return compare_end(&a);
}
