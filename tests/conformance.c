/*
 * conformance.c - backend conformance of cross-entropy against the float64
 * reference (see conformance.h).
 *
 * One case, step by step (conf_run_case):
 *  1. Seeded host inputs: peaked logits (tu_fill_logits) with NaN in the
 *     padding columns [c, ld); "extreme" rows (i % 5 == 2) that hold +1e4,
 *     -1e4 and -inf entries, never in the target column and never a whole
 *     row of -inf; class-index or probability targets (probability padding
 *     NaN too); class weights in [0.25, 2) with one class weighted 0; the
 *     upstream values. The logits are rounded to the case's dtype (this
 *     file's own round-to-nearest-even conversions, independent of the
 *     library's) and the reference sees the rounded values.
 *  2. The float64 reference from those rounded inputs: ref_ce_index /
 *     ref_ce_probs for the loss, rows, lse and the gradient of the reduced
 *     loss (NONE: of the sum of rows), then each gradient row times the
 *     row's upstream u_i * scale (the gradient of sum_i u_i loss_i). For the
 *     backward from a saved lse the API's input is the fp32 lse, so the
 *     reference gradient is computed from that same fp32 value
 *     (conf_ref_grad_from_lse, p_j = exp(z'_j - lse_i)).
 *  3. Every buffer lives in the backend's memory with GUARD bytes of a
 *     sentinel pattern before and after it; every output (and the
 *     workspace) is poisoned with 0xff bytes (a NaN in f32, f16 and bf16)
 *     before the call, so an element the call forgets to write fails. After
 *     the call everything is downloaded and checked: guards intact; inputs
 *     bitwise unchanged; a separate gradient's padding columns still poison,
 *     an in-place gradient's padding columns still the logits' NaN bits; the
 *     outputs against the reference.
 *  4. Tolerances (never loosened to make a test pass):
 *     - fp32 math: element i is ok iff
 *           |got_i - ref_i| <= 1e-5 |ref_i| + 1e-5 S
 *       with S the tensor's scale, and ||got - ref||_2 <= 1e-5 N. For the
 *       loss, rows and lse, S = max_k |ref_k| (finite k) and N = ||ref||_2.
 *       Per-row tensors (loss rows, lse) are judged as two tensors, the
 *       ordinary rows and the extreme rows, so that a 1e4 loss of an
 *       extreme row does not widen the tolerance of the ordinary ones.
 *       For a gradient, S and N are at least the size of the terms each
 *       row is computed from (grad_terms: |u_i| / denominator times the
 *       coefficients of p_j, the target and the weights). Usually that is
 *       max |ref| itself; it only matters when the terms cancel (C = 1,
 *       where p_y = 1 leaves only the z-loss / smoothing remainder), where
 *       no fp32 computation can beat eps times the terms.
 *     - f16/bf16 logits are judged on fp32 math of the rounded inputs: the
 *       same tolerance for the loss, rows and lse, and a gradient written in
 *       f16 (bf16) adds its output rounding, 2^-11 (2^-8) relative to each
 *       element (and to the rel-norm bound).
 *     - the reduced loss: |got - ref| <= 2e-5 |ref| (the rule above for a
 *       one-element tensor).
 *     - NaN only matches NaN, an infinity only the same infinity.
 */
#include "conformance.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "testutil.h"

#define GUARD 256      /* sentinel bytes before and after every buffer */
#define POISON 0xffu   /* byte of an unwritten output: NaN in every dtype */
#define EXTREME_BIG 1e4f

/* ------------------------------------------------------------------ */
/* Half precision, written independently of host/internal.h            */
/* ------------------------------------------------------------------ */

static float f16_to_f32(uint16_t h)
{
    int sign = (h >> 15) & 1;
    int e = (h >> 10) & 0x1f;
    int man = h & 0x3ff;
    float v;
    if (e == 0x1f)
        v = man ? NAN : INFINITY;
    else if (e == 0)
        v = ldexpf((float)man, -24);
    else
        v = ldexpf((float)(man + 1024), e - 25);
    return sign ? -v : v;
}

/* Round to nearest even: scale to an integer multiple of the target's
 * quantum at the value's binade, round with rint (the default rounding mode
 * is to nearest even), and encode the exactly representable result. */
static uint16_t f32_to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0u;
    if (isnan(f))
        return (uint16_t)(sign | 0x7e00u);
    double a = fabs((double)f);
    if (a >= 65520.0) /* rounds to 2^16 or above, or infinite */
        return (uint16_t)(sign | 0x7c00u);
    int ex;
    (void)frexp(a, &ex); /* a = fr 2^ex, fr in [0.5, 1) */
    double quantum = a < 0x1p-14 ? 0x1p-24 : ldexp(1.0, ex - 1 - 10);
    double v = rint(a / quantum) * quantum;
    if (v == 0.0)
        return sign;
    if (v < 0x1p-14)
        return (uint16_t)(sign | (uint16_t)(v / 0x1p-24));
    (void)frexp(v, &ex);
    int e = ex - 1 + 15;
    double man = v / ldexp(1.0, ex - 1) - 1.0; /* [0, 1) */
    return (uint16_t)(sign | (uint16_t)(e << 10) | (uint16_t)(man * 1024.0));
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t bits;
    if (isnan(f)) {
        memcpy(&bits, &f, sizeof bits);
        return (uint16_t)((bits >> 16) | 0x7fc0u);
    }
    double a = fabs((double)f);
    if (isinf(f) || a == 0.0) {
        memcpy(&bits, &f, sizeof bits);
        return (uint16_t)(bits >> 16);
    }
    int ex;
    (void)frexp(a, &ex);
    double quantum = a < 0x1p-126 ? 0x1p-133 : ldexp(1.0, ex - 1 - 7);
    double v = rint(a / quantum) * quantum;
    float r = v > 0x1.fep127 ? INFINITY : (float)v; /* exact when finite */
    if (signbit(f))
        r = -r;
    memcpy(&bits, &r, sizeof bits);
    return (uint16_t)(bits >> 16);
}

float conf_f16_to_f32(uint16_t h) { return f16_to_f32(h); }
uint16_t conf_f32_to_f16(float f) { return f32_to_f16(f); }
float conf_bf16_to_f32(uint16_t h) { return bf16_to_f32(h); }
uint16_t conf_f32_to_bf16(float f) { return f32_to_bf16(f); }

static size_t dtype_bytes(xent_dtype t) { return t == XENT_DTYPE_F32 ? 4 : 2; }

/* Element k of a buffer of dtype t, as float. */
static float load_elem(xent_dtype t, const uint8_t *p, int64_t k)
{
    if (t == XENT_DTYPE_F32) {
        float f;
        memcpy(&f, p + 4 * k, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * k, 2);
    return t == XENT_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

static void store_elem(xent_dtype t, uint8_t *p, int64_t k, float f)
{
    if (t == XENT_DTYPE_F32) {
        memcpy(p + 4 * k, &f, 4);
        return;
    }
    uint16_t h = t == XENT_DTYPE_F16 ? f32_to_f16(f) : f32_to_bf16(f);
    memcpy(p + 2 * k, &h, 2);
}

float conf_load(xent_dtype t, const void *buf, int64_t k)
{
    return load_elem(t, buf, k);
}

void conf_store(xent_dtype t, void *buf, int64_t k, float value)
{
    store_elem(t, buf, k, value);
}

/* ------------------------------------------------------------------ */
/* Case description                                                     */
/* ------------------------------------------------------------------ */

static const char *dtype_name(xent_dtype t)
{
    return t == XENT_DTYPE_F32 ? "f32" : t == XENT_DTYPE_F16 ? "f16" : "bf16";
}

static const char *target_name(xent_target_type t)
{
    return t == XENT_TARGET_INDEX_I32   ? "i32"
           : t == XENT_TARGET_INDEX_I64 ? "i64"
                                        : "probs";
}

static const char *reduction_name(xent_reduction r)
{
    return r == XENT_REDUCTION_NONE ? "none"
           : r == XENT_REDUCTION_MEAN ? "mean"
                                      : "sum";
}

static const char *op_name(conf_op op)
{
    return op == CONF_OP_FWD ? "fwd" : op == CONF_OP_FWD_BWD ? "fwd_bwd"
                                                             : "bwd_lse";
}

const char *conf_describe(const conf_case *c, char *buf, size_t size)
{
    char opts[160] = "";
    size_t k = 0;
#define OPT_APPEND(...)                                                       \
    do {                                                                      \
        if (k < sizeof opts)                                                  \
            k += (size_t)snprintf(opts + k, sizeof opts - k, __VA_ARGS__);    \
    } while (0)
    if (c->weights)
        OPT_APPEND(" weights");
    if (c->target_zero_weight)
        OPT_APPEND(" all-targets-weight0");
    if (c->target != XENT_TARGET_PROBS_F32)
        OPT_APPEND(" ignore=%lld%s", (long long)c->ignore_index,
                   c->ignore_rows ? "(rows%4==1)" : "");
    else if (c->target_ld && c->target_ld != c->c)
        OPT_APPEND(" target_ld=%lld", (long long)c->target_ld);
    if (c->label_smoothing != 0.0f)
        OPT_APPEND(" ls=%g", (double)c->label_smoothing);
    if (c->z_loss != 0.0f)
        OPT_APPEND(" zloss=%g", (double)c->z_loss);
    if (c->softcap != 0.0f)
        OPT_APPEND(" cap=%g", (double)c->softcap);
    if (c->flags & XENT_FLAG_EMPTY_MEAN_NAN)
        OPT_APPEND(" empty-nan");
    if (c->flags & XENT_FLAG_GRAD_F32)
        OPT_APPEND(" grad-f32");
    if (c->op != CONF_OP_FWD) {
        OPT_APPEND(" %s", c->in_place ? "in-place" : "separate");
        switch (c->upstream) {
        case CONF_UP_DEFAULT: OPT_APPEND(" up=default"); break;
        case CONF_UP_SCALAR: OPT_APPEND(" up=scalar"); break;
        case CONF_UP_PER_ROW:
            OPT_APPEND(" up=per-row/%lld", (long long)c->up_stride);
            break;
        case CONF_UP_BROADCAST:
            OPT_APPEND(" up=broadcast*%g", (double)c->up_scale);
            break;
        }
    }
    if (c->outputs)
        OPT_APPEND(" out=%s%s%s%s", (c->outputs & CONF_OUT_LOSS) ? "L" : "",
                   (c->outputs & CONF_OUT_ROWS) ? "R" : "",
                   (c->outputs & CONF_OUT_LSE) ? "S" : "",
                   (c->outputs & CONF_OUT_NONE) ? "-" : "");
    if (c->extreme)
        OPT_APPEND(" extreme=%s", c->extreme == CONF_EXTREME_INF ? "inf" : "1e4");
    if (c->misaligned_ws)
        OPT_APPEND(" ws+3");
#undef OPT_APPEND
    snprintf(buf, size, "[%lldx%lld ld%lld %s %s %s %s%s var=%s seed=%llu]",
             (long long)c->n, (long long)c->c, (long long)c->ld,
             dtype_name(c->dtype), target_name(c->target),
             reduction_name(c->reduction), op_name(c->op), opts,
             xent_variant_name(c->variant), (unsigned long long)c->seed);
    return buf;
}

/* ------------------------------------------------------------------ */
/* Backward-from-lse reference                                          */
/* ------------------------------------------------------------------ */

void conf_ref_grad_from_lse(int64_t n, int64_t c, const double *z,
                            const int64_t *y, const double *q, int is_index,
                            int reduction, int64_t ignore_index,
                            const double *w, double label_smoothing,
                            double z_loss, double cap, const double *lse,
                            double *grad)
{
    typedef long double real;
    const real a = (real)label_smoothing;
    const real a_c = a / (real)c;
    real wsum = 0.0L;
    for (int64_t j = 0; j < c; j++)
        wsum += w ? (real)w[j] : 1.0L;
    real denom = 0.0L;
    if (is_index) {
        for (int64_t i = 0; i < n; i++)
            if (y[i] != ignore_index && y[i] >= 0 && y[i] < c)
                denom += w ? (real)w[y[i]] : 1.0L;
    } else {
        denom = (real)n;
    }
    real scale = 1.0L;
    if (reduction == XENT_REDUCTION_MEAN)
        scale = denom != 0.0L ? 1.0L / denom : 0.0L;

    for (int64_t i = 0; i < n; i++) {
        const double *zi = z + i * c;
        double *gi = grad + i * c;
        if (is_index && y[i] == ignore_index) {
            for (int64_t j = 0; j < c; j++)
                gi[j] = 0.0;
            continue;
        }
        if (is_index && (y[i] < 0 || y[i] >= c)) {
            for (int64_t j = 0; j < c; j++)
                gi[j] = NAN;
            continue;
        }
        const real L = (real)lse[i];
        const real zl = z_loss != 0.0 ? 2.0L * (real)z_loss * L : 0.0L;
        real vsum = 0.0L;
        if (!is_index)
            for (int64_t j = 0; j < c; j++)
                vsum += (w ? (real)w[j] : 1.0L) *
                        ((1.0L - a) * (real)q[i * c + j] + a_c);
        for (int64_t j = 0; j < c; j++) {
            real zc = (real)zi[j], dc = 1.0L;
            if (cap > 0.0) {
                real t = tanhl(zc / (real)cap);
                zc = (real)cap * t;
                dc = 1.0L - t * t;
            }
            const real p = expl(zc - L);
            const real wj = w ? (real)w[j] : 1.0L;
            real g;
            if (is_index) {
                const real wy = w ? (real)w[y[i]] : 1.0L;
                const real hard = (1.0L - a) * wy;
                const real smooth = a_c * wsum;
                const real uj = a != 0.0L ? a_c * wj : 0.0L;
                if (j == y[i])
                    g = hard * expm1l(zc - L) + (smooth + zl) * p - uj;
                else
                    g = (hard + smooth + zl) * p - uj;
            } else {
                const real vj = wj * ((1.0L - a) * (real)q[i * c + j] + a_c);
                g = (vsum + zl) * p - vj;
            }
            gi[j] = (double)(g * dc * scale);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Host inputs and the reference                                        */
/* ------------------------------------------------------------------ */

typedef struct conf_data {
    int is_index;
    int64_t tld;          /* probability targets' row stride */
    uint8_t *logits;      /* [n * ld] of dtype (padding NaN) */
    double *z;            /* [n * c] the rounded logits */
    int64_t *y;           /* [n] */
    int32_t *y32;         /* [n] */
    float *q;             /* [n * tld] */
    double *qd;           /* [n * c] */
    float *w;             /* [c] */
    double *wd;           /* [c] */
    float *dloss;         /* [n_dloss] */
    int64_t n_dloss;
    float *lse_in;        /* [n] (BWD_LSE) */
    double *row_mult;     /* [n] u_i * scale */
    unsigned char *extreme; /* [n] */
    /* the reference */
    double grad_terms_max;  /* largest |term| a gradient element is made of */
    double grad_terms_norm; /* sqrt(sum over rows of that row's largest^2) */
    double ref_loss;
    double *ref_rows, *ref_lse, *ref_grad; /* [n], [n], [n * c] */
} conf_data;

static void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    cr_assert_not_null(p, "out of host memory");
    return p;
}

static int is_extreme_row(int64_t i, int64_t n)
{
    return i % 5 == 2 || (n < 3 && i == n - 1);
}

/* A column of row i not yet used and not `avoid`, or -1. */
static int64_t pick_col(tu_rng *r, int64_t c, int64_t avoid,
                        const int64_t *used, int n_used)
{
    for (int tries = 0; tries < 64; tries++) {
        int64_t col = tu_below(r, c);
        int ok = col != avoid;
        for (int k = 0; k < n_used && ok; k++)
            ok = col != used[k];
        if (ok)
            return col;
    }
    return -1;
}

static void data_free(conf_data *d)
{
    free(d->logits);
    free(d->z);
    free(d->y);
    free(d->y32);
    free(d->q);
    free(d->qd);
    free(d->w);
    free(d->wd);
    free(d->dloss);
    free(d->lse_in);
    free(d->row_mult);
    free(d->extreme);
    free(d->ref_rows);
    free(d->ref_lse);
    free(d->ref_grad);
    memset(d, 0, sizeof *d);
}

/*
 * The magnitude of the terms each gradient row is computed from: row i's
 * gradient is g_i (coef_p p_j - u_j - hard [j = y]) (index targets) or
 * g_i ((V + zl) p_j - v_j) (probabilities), g_i = u_i scale / denominator,
 * so no element's fp32 error can be expected below ~eps g_i (|coef_p| +
 * max u_j + hard). Usually the largest gradient element is of that size;
 * when the terms cancel (C = 1, p_y -> 1 everywhere) the gradient is much
 * smaller than its terms and its fp32 error is set by the terms.
 */
static void grad_terms(const conf_case *c, conf_data *d)
{
    const int64_t n = c->n, nc = c->c;
    const double a = (double)c->label_smoothing, a_c = a / (double)nc;
    const double zs = (double)c->z_loss;
    double wsum = 0.0, wmax = 0.0, denom = 0.0;
    for (int64_t j = 0; j < nc; j++) {
        double wj = d->wd ? d->wd[j] : 1.0;
        wsum += wj;
        wmax = wj > wmax ? wj : wmax;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!d->is_index)
            denom += 1.0;
        else if (d->y[i] != c->ignore_index && d->y[i] >= 0 && d->y[i] < nc)
            denom += d->wd ? d->wd[d->y[i]] : 1.0;
    }
    double red = 1.0;
    if (c->reduction == XENT_REDUCTION_MEAN)
        red = denom != 0.0 ? 1.0 / denom : 0.0;
    double mx = 0.0, sq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double t;
        const double zl = fabs(2.0 * zs * d->ref_lse[i]);
        if (d->is_index) {
            if (d->y[i] == c->ignore_index || d->y[i] < 0 || d->y[i] >= nc)
                continue;
            const double wy = d->wd ? d->wd[d->y[i]] : 1.0;
            t = (1.0 - a) * wy + a_c * wsum + zl + a_c * wmax;
        } else {
            double vsum = 0.0, vmax = 0.0;
            for (int64_t j = 0; j < nc; j++) {
                double vj = (d->wd ? d->wd[j] : 1.0) *
                            ((1.0 - a) * d->qd[i * nc + j] + a_c);
                vsum += vj;
                vmax = vj > vmax ? vj : vmax;
            }
            t = vsum + zl + vmax;
        }
        t *= fabs(d->row_mult[i]) * red;
        if (isfinite(t)) {
            mx = t > mx ? t : mx;
            sq += t * t;
        }
    }
    d->grad_terms_max = mx;
    d->grad_terms_norm = sqrt(sq);
}

static void data_build(const conf_case *c, conf_data *d)
{
    memset(d, 0, sizeof *d);
    const int64_t n = c->n, nc = c->c, ld = c->ld;
    tu_rng r;
    tu_rng_seed(&r, c->seed);
    d->is_index = c->target != XENT_TARGET_PROBS_F32;
    d->tld = c->target_ld ? c->target_ld : nc;

    /* logits, in float first */
    float *zf = xcalloc((size_t)(n * ld), sizeof(float));
    tu_fill_logits(&r, n, nc, ld, zf, NAN);

    /* targets */
    d->y = xcalloc((size_t)n, sizeof(int64_t));
    d->y32 = xcalloc((size_t)n, sizeof(int32_t));
    if (d->is_index) {
        tu_fill_targets_i64(&r, n, nc, d->y);
        if (c->target_zero_weight)
            for (int64_t i = 0; i < n; i++)
                d->y[i] = nc / 2;
        if (c->ignore_rows)
            for (int64_t i = 0; i < n; i++)
                if (i % 4 == 1)
                    d->y[i] = c->ignore_index;
        if (c->weights && !c->target_zero_weight && nc > 2) {
            /* keep the MEAN denominator non-zero by chance alone */
            int all_zero = 1;
            for (int64_t i = 0; i < n && all_zero; i++)
                all_zero = d->y[i] == c->ignore_index || d->y[i] == nc / 2;
            for (int64_t i = 0; i < n && all_zero; i++)
                if (d->y[i] != c->ignore_index) {
                    d->y[i] = (nc / 2 + 1) % nc;
                    all_zero = 0;
                }
        }
        for (int64_t i = 0; i < n; i++)
            d->y32[i] = (int32_t)d->y[i];
    } else {
        d->q = xcalloc((size_t)(n * d->tld), sizeof(float));
        tu_fill_probs(&r, n, nc, d->tld, d->q, NAN);
    }

    /* extreme rows: +1e4, -1e4 and -inf entries, never in the target
     * column (index targets) and never a whole row of -inf */
    d->extreme = xcalloc((size_t)n, 1);
    for (int64_t i = 0; c->extreme && i < n; i++) {
        if (!is_extreme_row(i, n))
            continue;
        d->extreme[i] = 1;
        float *zi = zf + i * ld;
        int64_t avoid = -1;
        if (d->is_index && d->y[i] >= 0 && d->y[i] < nc)
            avoid = d->y[i];
        int64_t used[4];
        int n_used = 0;
        const int inf = c->extreme == CONF_EXTREME_INF && nc >= 2;
        if (inf) { /* column 0 (or 1): the first element some thread sees */
            int64_t col = avoid != 0 ? 0 : 1;
            zi[col] = -INFINITY;
            used[n_used++] = col;
        }
        int64_t col = pick_col(&r, nc, avoid, used, n_used);
        if (col >= 0) {
            zi[col] = EXTREME_BIG;
            used[n_used++] = col;
        }
        col = pick_col(&r, nc, avoid, used, n_used);
        if (col >= 0) {
            zi[col] = -EXTREME_BIG;
            used[n_used++] = col;
        }
        if (inf && n_used == 3) { /* a finite column is left */
            col = pick_col(&r, nc, avoid, used, n_used);
            if (col >= 0) {
                zi[col] = -INFINITY;
                used[n_used++] = col;
            }
        }
        /* probability targets put no mass on -inf logits (only smoothing
         * does, which makes the loss +inf) */
        for (int k = 0; k < n_used && !d->is_index; k++)
            if (isinf(zi[used[k]]))
                d->q[i * d->tld + used[k]] = 0.0f;
    }

    /* round to the dtype; the reference sees the rounded values */
    const size_t esz = dtype_bytes(c->dtype);
    d->logits = xcalloc((size_t)(n * ld), esz);
    d->z = xcalloc((size_t)(n * nc), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ld; j++) {
            store_elem(c->dtype, d->logits, i * ld + j, zf[i * ld + j]);
            if (j < nc)
                d->z[i * nc + j] =
                    (double)load_elem(c->dtype, d->logits, i * ld + j);
        }
    free(zf);
    if (!d->is_index) {
        d->qd = xcalloc((size_t)(n * nc), sizeof(double));
        tu_rows_f32_to_f64(n, nc, d->tld, d->q, d->qd);
    }

    /* class weights: [0.25, 2), one class (C/2) weighted 0 when C > 2 */
    if (c->weights) {
        d->w = xcalloc((size_t)nc, sizeof(float));
        d->wd = xcalloc((size_t)nc, sizeof(double));
        tu_fill_uniform_f32(&r, nc, 0.25f, 2.0f, d->w);
        if (nc > 2)
            d->w[nc / 2] = 0.0f;
        tu_f32_to_f64(d->w, d->wd, nc);
    }

    /* upstream */
    d->row_mult = xcalloc((size_t)n, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d->row_mult[i] = 1.0;
    if (c->op != CONF_OP_FWD && c->upstream != CONF_UP_DEFAULT) {
        if (c->upstream == CONF_UP_PER_ROW) {
            d->n_dloss = n > 0 ? (n - 1) * c->up_stride + 1 : 1;
            d->dloss = xcalloc((size_t)d->n_dloss, sizeof(float));
            for (int64_t k = 0; k < d->n_dloss; k++) /* unused slots: NaN */
                d->dloss[k] = NAN;
            for (int64_t i = 0; i < n; i++) {
                float u = (float)(3.0 * tu_uniform(&r) - 1.5);
                d->dloss[i * c->up_stride] = u;
                d->row_mult[i] = (double)u;
            }
        } else {
            d->n_dloss = 1;
            d->dloss = xcalloc(1, sizeof(float));
            const int bc = c->upstream == CONF_UP_BROADCAST;
            d->dloss[0] = bc ? -0.75f : (float)(0.5 + tu_uniform(&r));
            double s = bc ? (double)c->up_scale : 1.0;
            for (int64_t i = 0; i < n; i++)
                d->row_mult[i] = s * (double)d->dloss[0];
        }
    }

    /* the reference */
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = (int)c->reduction;
    o.ignore_index = c->ignore_index;
    o.weights = d->wd;
    o.label_smoothing = (double)c->label_smoothing;
    o.z_loss = (double)c->z_loss;
    o.softcap = (double)c->softcap;
    o.empty_mean_nan = (c->flags & XENT_FLAG_EMPTY_MEAN_NAN) != 0;
    d->ref_rows = xcalloc((size_t)n, sizeof(double));
    d->ref_lse = xcalloc((size_t)n, sizeof(double));
    d->ref_grad = xcalloc((size_t)(n * nc), sizeof(double));
    if (d->is_index)
        d->ref_loss = ref_ce_index(n, nc, d->z, nc, d->y, &o, d->ref_rows,
                                   d->ref_lse, d->ref_grad);
    else
        d->ref_loss = ref_ce_probs(n, nc, d->z, nc, d->qd, nc, &o,
                                   d->ref_rows, d->ref_lse, d->ref_grad);
    if (c->op == CONF_OP_BWD_LSE) {
        /* the API gets the fp32 lse; judge it on that input */
        d->lse_in = xcalloc((size_t)n, sizeof(float));
        double *lse_used = xcalloc((size_t)n, sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            d->lse_in[i] = (float)d->ref_lse[i];
            lse_used[i] = (double)d->lse_in[i];
        }
        conf_ref_grad_from_lse(n, nc, d->z, d->y, d->qd, d->is_index,
                               (int)c->reduction, c->ignore_index, d->wd,
                               o.label_smoothing, o.z_loss, o.softcap,
                               lse_used, d->ref_grad);
        free(lse_used);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < nc; j++)
            d->ref_grad[i * nc + j] *= d->row_mult[i];
    grad_terms(c, d);
}

/* ------------------------------------------------------------------ */
/* Guarded backend buffers                                              */
/* ------------------------------------------------------------------ */

typedef struct gbuf {
    int used;
    size_t lead;     /* bytes before the body (GUARD, + 3 if misaligned) */
    size_t body;     /* bytes of the body */
    size_t total;    /* lead + body + GUARD */
    uint8_t *before; /* host image uploaded */
    uint8_t *after;  /* host image downloaded after the call */
    uint8_t *dev;    /* backend allocation */
} gbuf;

static uint8_t sentinel(size_t k) { return (uint8_t)(0xa5u ^ (k * 7u)); }

/* A buffer whose body is `src` (or poison when src is NULL). */
static int gbuf_make(gbuf *b, const tu_mem *m, const void *src, size_t body,
                     size_t extra_lead)
{
    memset(b, 0, sizeof *b);
    b->used = 1;
    b->lead = GUARD + extra_lead;
    b->body = body;
    b->total = b->lead + body + GUARD;
    b->before = xcalloc(b->total, 1);
    b->after = xcalloc(b->total, 1);
    for (size_t k = 0; k < b->total; k++)
        b->before[k] = sentinel(k);
    if (src)
        memcpy(b->before + b->lead, src, body);
    else
        memset(b->before + b->lead, (int)POISON, body);
    b->dev = m->alloc(b->total);
    if (!b->dev)
        return 0;
    m->upload(b->dev, b->before, b->total);
    return 1;
}

static void *gbuf_ptr(const gbuf *b) { return b->used ? b->dev + b->lead : NULL; }

static void gbuf_free(gbuf *b, const tu_mem *m)
{
    if (b->dev)
        m->release(b->dev);
    free(b->before);
    free(b->after);
    memset(b, 0, sizeof *b);
}

static int guards_intact(const gbuf *b)
{
    for (size_t k = 0; k < b->lead; k++)
        if (b->after[k] != sentinel(k))
            return 0;
    for (size_t k = b->lead + b->body; k < b->total; k++)
        if (b->after[k] != sentinel(k))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* One execution on the backend                                         */
/* ------------------------------------------------------------------ */

enum { B_LOGITS, B_TARGETS, B_WEIGHTS, B_DLOSS, B_LSE_IN, B_LOSS, B_ROWS,
       B_LSE, B_GRAD, B_WS, B_COUNT };
static const char *const buf_names[B_COUNT] = {
    "logits", "targets", "weights", "dloss", "lse_in",
    "loss",   "loss_rows", "lse", "grad", "workspace"};

static char current_case[512] = "(no case)";

const char *conf_current_case(void) { return current_case; }

typedef struct conf_exec {
    gbuf b[B_COUNT];
    xent_status status;
    int want_loss, want_rows, want_lse, want_grad;
    size_t gelem; /* gradient element bytes */
    xent_dtype gdtype;
} conf_exec;

static void exec_free(conf_exec *e, const tu_mem *m)
{
    for (int k = 0; k < B_COUNT; k++)
        gbuf_free(&e->b[k], m);
}

/* Runs case c on h with inputs d. Returns 0 when the setup failed (the
 * failure is already reported). */
static int exec_case(xent_handle_t h, const tu_mem *m, const conf_case *c,
                     const conf_data *d, conf_exec *e, const char *desc)
{
    memset(e, 0, sizeof *e);
    snprintf(current_case, sizeof current_case, "%s", desc);
    const int64_t n = c->n, nc = c->c, ld = c->ld;
    const size_t esz = dtype_bytes(c->dtype);
    const int red_none = c->reduction == XENT_REDUCTION_NONE;
    const unsigned o = c->outputs;
    e->want_grad = c->op != CONF_OP_FWD;
    if (c->op != CONF_OP_BWD_LSE) {
        e->want_loss = !red_none && (o == 0 || (o & CONF_OUT_LOSS));
        e->want_rows = o == 0 || (o & CONF_OUT_ROWS);
        e->want_lse = o == 0 || (o & CONF_OUT_LSE);
        if (c->op == CONF_OP_FWD && !e->want_loss && !e->want_rows &&
            !e->want_lse)
            e->want_rows = 1; /* forward needs at least one output */
    }
    const int grad_f32 = (c->flags & XENT_FLAG_GRAD_F32) != 0;
    e->gdtype = grad_f32 ? XENT_DTYPE_F32 : c->dtype;
    e->gelem = dtype_bytes(e->gdtype);

    xent_ce_desc desc_;
    xent_ce_desc *dd = &desc_;
    xent_ce_desc_init(dd, n, nc);
    dd->ld = ld;
    dd->logits_dtype = c->dtype;
    dd->target_type = c->target;
    dd->target_ld = d->tld;
    dd->reduction = c->reduction;
    dd->ignore_index = c->ignore_index;
    dd->label_smoothing = c->label_smoothing;
    dd->z_loss = c->z_loss;
    dd->softcap = c->softcap;
    dd->flags = c->flags;
    dd->variant = c->variant;
    size_t ws_bytes = 0;
    xent_status st = xent_ce_workspace_size(h, dd, &ws_bytes);
    cr_expect_eq(st, XENT_STATUS_SUCCESS, "%s: workspace_size: %s", desc,
                 xent_status_string(st));
    if (st != XENT_STATUS_SUCCESS)
        return 0;

    int ok = 1;
    ok &= gbuf_make(&e->b[B_LOGITS], m, d->logits, (size_t)(n * ld) * esz, 0);
    if (d->is_index) {
        if (c->target == XENT_TARGET_INDEX_I32)
            ok &= gbuf_make(&e->b[B_TARGETS], m, d->y32,
                            (size_t)n * sizeof(int32_t), 0);
        else
            ok &= gbuf_make(&e->b[B_TARGETS], m, d->y,
                            (size_t)n * sizeof(int64_t), 0);
    } else {
        ok &= gbuf_make(&e->b[B_TARGETS], m, d->q,
                        (size_t)(n * d->tld) * sizeof(float), 0);
    }
    if (c->weights)
        ok &= gbuf_make(&e->b[B_WEIGHTS], m, d->w, (size_t)nc * sizeof(float),
                        0);
    if (d->dloss)
        ok &= gbuf_make(&e->b[B_DLOSS], m, d->dloss,
                        (size_t)d->n_dloss * sizeof(float), 0);
    if (c->op == CONF_OP_BWD_LSE)
        ok &= gbuf_make(&e->b[B_LSE_IN], m, d->lse_in,
                        (size_t)n * sizeof(float), 0);
    if (e->want_loss)
        ok &= gbuf_make(&e->b[B_LOSS], m, NULL, sizeof(float), 0);
    if (e->want_rows)
        ok &= gbuf_make(&e->b[B_ROWS], m, NULL, (size_t)n * sizeof(float), 0);
    if (e->want_lse)
        ok &= gbuf_make(&e->b[B_LSE], m, NULL, (size_t)n * sizeof(float), 0);
    if (e->want_grad && !c->in_place)
        ok &= gbuf_make(&e->b[B_GRAD], m, NULL, (size_t)(n * ld) * e->gelem,
                        0);
    ok &= gbuf_make(&e->b[B_WS], m, NULL, ws_bytes,
                    c->misaligned_ws ? 3u : 0u);
    cr_expect(ok, "%s: backend allocation failed", desc);
    if (!ok)
        return 0;

    dd->weights = gbuf_ptr(&e->b[B_WEIGHTS]);
    dd->n_weights = c->weights ? nc : 0;
    xent_upstream up = xent_upstream_default();
    const xent_upstream *upp = NULL;
    if (c->upstream != CONF_UP_DEFAULT) {
        up.d_dloss = gbuf_ptr(&e->b[B_DLOSS]);
        up.dloss_stride = c->upstream == CONF_UP_PER_ROW ? c->up_stride : 0;
        up.scale = c->upstream == CONF_UP_BROADCAST ? c->up_scale : 1.0f;
        upp = &up;
    }
    void *logits = gbuf_ptr(&e->b[B_LOGITS]);
    void *grad = c->in_place ? logits : gbuf_ptr(&e->b[B_GRAD]);
    void *ws = gbuf_ptr(&e->b[B_WS]);
    const void *targets = gbuf_ptr(&e->b[B_TARGETS]);
    float *loss = gbuf_ptr(&e->b[B_LOSS]);
    float *rows = gbuf_ptr(&e->b[B_ROWS]);
    float *lse = gbuf_ptr(&e->b[B_LSE]);

    switch (c->op) {
    case CONF_OP_FWD:
        e->status = xent_ce_forward(h, dd, logits, targets, loss, rows, lse,
                                    ws, ws_bytes);
        break;
    case CONF_OP_FWD_BWD:
        e->status = xent_ce_forward_backward(h, dd, logits, targets, upp,
                                             grad, loss, rows, lse, ws,
                                             ws_bytes);
        break;
    case CONF_OP_BWD_LSE:
        e->status = xent_ce_backward(h, dd, logits, targets,
                                     gbuf_ptr(&e->b[B_LSE_IN]), upp, grad,
                                     ws, ws_bytes);
        break;
    }
    m->sync();
    for (int k = 0; k < B_COUNT; k++)
        if (e->b[k].used)
            m->download(e->b[k].after, e->b[k].dev, e->b[k].total);
    cr_expect_eq(e->status, XENT_STATUS_SUCCESS, "%s: %s returned %s", desc,
                 op_name(c->op), xent_status_string(e->status));
    return e->status == XENT_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Comparison                                                           */
/* ------------------------------------------------------------------ */

static double max_finite_abs(const double *x, int64_t n)
{
    double mx = 0.0;
    for (int64_t k = 0; k < n; k++)
        if (isfinite(x[k]) && fabs(x[k]) > mx)
            mx = fabs(x[k]);
    return mx;
}

#define CONF_RTOL 1e-5
#define CONF_ATOL_SCALE 1e-5
#define CONF_REL_NORM 1e-5

/* One tensor against its reference with the rule in the file comment;
 * `out_rtol` is the output rounding (0 for fp32 outputs). terms_max and
 * terms_norm (0 for none) raise the scale of the absolute tolerance and of
 * the rel-norm's denominator to the magnitude of the terms the tensor is
 * computed from (see grad_terms). row_len > 0 names the worst element as
 * (row, column). */
static int check_close(const char *desc, const char *what, const double *ref,
                       const double *got, int64_t n, double out_rtol,
                       int64_t row_len, const int64_t *index_map,
                       double terms_max, double terms_norm)
{
    double scale = max_finite_abs(ref, n);
    if (terms_max > scale)
        scale = terms_max;
    const double atol = CONF_ATOL_SCALE * scale;
    const double rtol = CONF_RTOL + out_rtol;
    tu_close r = tu_compare_f64(ref, got, n, atol, rtol);
    double diff2 = 0.0, ref2 = 0.0;
    for (int64_t k = 0; k < n; k++)
        if (isfinite(ref[k]) && isfinite(got[k])) {
            diff2 += (got[k] - ref[k]) * (got[k] - ref[k]);
            ref2 += ref[k] * ref[k];
        }
    double norm = sqrt(ref2) > terms_norm ? sqrt(ref2) : terms_norm;
    const double rel_norm = norm > 0.0 ? sqrt(diff2) / norm : sqrt(diff2);
    const double rn_max = CONF_REL_NORM + out_rtol;
    const int ok = r.ok && !(rel_norm > rn_max);
    int64_t at = r.worst >= 0 && index_map ? index_map[r.worst] : r.worst;
    cr_expect(ok,
              "%s: %s: %lld of %lld bad, worst at [%lld] (row %lld col %lld) "
              "got %.9g ref %.9g err %.3g (atol %.3g rtol %.3g), rel-norm "
              "%.3g (max %.3g)",
              desc, what, (long long)r.n_bad, (long long)n, (long long)at,
              (long long)(row_len > 0 && at >= 0 ? at / row_len : at),
              (long long)(row_len > 0 && at >= 0 ? at % row_len : 0),
              r.worst_got, r.worst_ref, r.worst_err, atol, rtol, rel_norm,
              rn_max);
    return ok;
}

int conf_check_close(const char *desc, const char *what, const double *ref,
                     const double *got, int64_t n, double out_rtol,
                     int64_t row_len)
{
    return check_close(desc, what, ref, got, n, out_rtol, row_len, NULL, 0.0,
                       0.0);
}

static void floats_from(const uint8_t *p, int64_t n, double *dst)
{
    for (int64_t k = 0; k < n; k++) {
        float f;
        memcpy(&f, p + 4 * k, 4);
        dst[k] = (double)f;
    }
}

/* Per-row tensor: ordinary rows and extreme rows judged separately. */
static int check_rows(const char *desc, const char *what, const double *ref,
                      const uint8_t *got_bytes, int64_t n,
                      const unsigned char *extreme)
{
    double *got = xcalloc((size_t)n, sizeof(double));
    double *rs = xcalloc((size_t)n, sizeof(double));
    double *gs = xcalloc((size_t)n, sizeof(double));
    int64_t *map = xcalloc((size_t)n, sizeof(int64_t));
    floats_from(got_bytes, n, got);
    int ok = 1;
    for (int pass = 0; pass < 2; pass++) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if ((extreme[i] != 0) == pass) {
                rs[k] = ref[i];
                gs[k] = got[i];
                map[k++] = i;
            }
        char name[64];
        snprintf(name, sizeof name, "%s (%s rows)", what,
                 pass ? "extreme" : "ordinary");
        if (k > 0)
            ok &= check_close(desc, name, rs, gs, k, 0.0, 0, map, 0.0, 0.0);
    }
    free(got);
    free(rs);
    free(gs);
    free(map);
    return ok;
}

static double out_rounding(xent_dtype t)
{
    return t == XENT_DTYPE_F16 ? 0x1p-11 : t == XENT_DTYPE_BF16 ? 0x1p-8 : 0.0;
}

double conf_out_rounding(xent_dtype t) { return out_rounding(t); }

/* Every check of one execution against the reference. */
static int check_exec(const conf_case *c, const conf_data *d,
                      const conf_exec *e, const char *desc)
{
    const int64_t n = c->n, nc = c->c, ld = c->ld;
    int ok = 1;

    /* guards of every buffer */
    for (int k = 0; k < B_COUNT; k++) {
        if (!e->b[k].used)
            continue;
        int g = guards_intact(&e->b[k]);
        cr_expect(g, "%s: guard region of %s overwritten", desc, buf_names[k]);
        ok &= g;
    }
    /* inputs unchanged (the logits unless the gradient is in place) */
    const int inputs[] = {B_TARGETS, B_WEIGHTS, B_DLOSS, B_LSE_IN, B_LOGITS};
    for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
        const gbuf *b = &e->b[inputs[k]];
        if (!b->used || (inputs[k] == B_LOGITS && c->in_place && e->want_grad))
            continue;
        int same = memcmp(b->before + b->lead, b->after + b->lead, b->body) == 0;
        cr_expect(same, "%s: input %s was modified", desc, buf_names[inputs[k]]);
        ok &= same;
    }

    /* padding columns [c, ld) of the gradient: never written */
    if (e->want_grad && ld > nc) {
        const gbuf *b = c->in_place ? &e->b[B_LOGITS] : &e->b[B_GRAD];
        const size_t es = e->gelem;
        int64_t bad_row = -1;
        for (int64_t i = 0; i < n && bad_row < 0; i++) {
            const size_t off = b->lead + (size_t)(i * ld + nc) * es;
            const size_t len = (size_t)(ld - nc) * es;
            if (memcmp(b->before + off, b->after + off, len) != 0)
                bad_row = i;
        }
        cr_expect(bad_row < 0,
                  "%s: padding columns [%lld, %lld) of the %s gradient "
                  "written (row %lld)",
                  desc, (long long)nc, (long long)ld,
                  c->in_place ? "in-place" : "separate", (long long)bad_row);
        ok &= bad_row < 0;
    }

    /* outputs */
    if (e->want_loss) {
        double got;
        floats_from(e->b[B_LOSS].after + e->b[B_LOSS].lead, 1, &got);
        ok &= check_close(desc, "reduced loss", &d->ref_loss, &got, 1, 0.0, 0,
                          NULL, 0.0, 0.0);
    }
    if (e->want_rows)
        ok &= check_rows(desc, "loss rows", d->ref_rows,
                         e->b[B_ROWS].after + e->b[B_ROWS].lead, n,
                         d->extreme);
    if (e->want_lse)
        ok &= check_rows(desc, "lse", d->ref_lse,
                         e->b[B_LSE].after + e->b[B_LSE].lead, n, d->extreme);
    if (e->want_grad) {
        const gbuf *b = c->in_place ? &e->b[B_LOGITS] : &e->b[B_GRAD];
        double *got = xcalloc((size_t)(n * nc), sizeof(double));
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < nc; j++)
                got[i * nc + j] = (double)load_elem(
                    e->gdtype, b->after + b->lead, i * ld + j);
        ok &= check_close(desc, "gradient", d->ref_grad, got, n * nc,
                          out_rounding(e->gdtype), nc, NULL,
                          d->grad_terms_max, d->grad_terms_norm);
        free(got);
    }
    return ok;
}

int conf_run_case(xent_handle_t h, const tu_mem *m, const conf_case *c)
{
    char desc[512];
    conf_describe(c, desc, sizeof desc);
    conf_data d;
    data_build(c, &d);
    conf_exec e;
    int ok = exec_case(h, m, c, &d, &e, desc);
    if (ok)
        ok = check_exec(c, &d, &e, desc);
    exec_free(&e, m);
    data_free(&d);
    return ok;
}

/* Bitwise comparison of the outputs of two executions of the same case
 * (the workspace excepted). */
static int same_outputs(const conf_exec *a, const conf_exec *b,
                        const char *desc, const char *what)
{
    int ok = 1;
    const int outs[] = {B_LOGITS, B_LOSS, B_ROWS, B_LSE, B_GRAD};
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        const gbuf *x = &a->b[outs[k]], *y = &b->b[outs[k]];
        if (!x->used && !y->used)
            continue;
        int same = x->used && y->used && x->total == y->total &&
                   memcmp(x->after, y->after, x->total) == 0;
        size_t at = 0;
        if (!same && x->used && y->used && x->total == y->total)
            while (at < x->total && x->after[at] == y->after[at])
                at++;
        cr_expect(same, "%s: %s: %s differs (first differing byte %zu of "
                        "the body)",
                  desc, what, buf_names[outs[k]], at - x->lead);
        ok &= same;
    }
    return ok;
}

int conf_determinism(xent_handle_t h, const tu_mem *m, const conf_case *c)
{
    char desc[512];
    conf_describe(c, desc, sizeof desc);
    conf_data d;
    data_build(c, &d);
    conf_exec e1, e2;
    int ok = exec_case(h, m, c, &d, &e1, desc);
    ok &= exec_case(h, m, c, &d, &e2, desc);
    if (ok)
        ok = same_outputs(&e1, &e2, desc, "determinism");
    exec_free(&e1, m);
    exec_free(&e2, m);
    data_free(&d);
    return ok;
}

int conf_handles_agree(xent_handle_t h1, xent_handle_t h2, const tu_mem *m,
                       const conf_case *c)
{
    char desc[512];
    conf_describe(c, desc, sizeof desc);
    conf_data d;
    data_build(c, &d);
    conf_exec e1, e2;
    int ok = exec_case(h1, m, c, &d, &e1, desc);
    ok &= exec_case(h2, m, c, &d, &e2, desc);
    if (ok)
        ok = same_outputs(&e1, &e2, desc, "two handles");
    exec_free(&e1, m);
    exec_free(&e2, m);
    data_free(&d);
    return ok;
}

int conf_inplace_matches_separate(xent_handle_t h, const tu_mem *m,
                                  const conf_case *c_in)
{
    conf_case c = *c_in;
    if (c.op == CONF_OP_FWD)
        c.op = CONF_OP_FWD_BWD;
    if (c.dtype != XENT_DTYPE_F32)
        c.flags &= ~(uint32_t)XENT_FLAG_GRAD_F32; /* in place: same dtype */
    char desc[512];
    conf_describe(&c, desc, sizeof desc);
    conf_data d;
    data_build(&c, &d);
    conf_case cs = c, ci = c;
    cs.in_place = 0;
    ci.in_place = 1;
    conf_exec es, ei;
    int ok = exec_case(h, m, &cs, &d, &es, desc);
    ok &= exec_case(h, m, &ci, &d, &ei, desc);
    if (ok) {
        /* gradient: columns < c of the separate buffer vs the logits */
        const gbuf *gs = &es.b[B_GRAD], *gi = &ei.b[B_LOGITS];
        const size_t es_ = es.gelem;
        int64_t bad_row = -1;
        for (int64_t i = 0; i < c.n && bad_row < 0; i++) {
            size_t off = (size_t)(i * c.ld) * es_;
            if (memcmp(gs->after + gs->lead + off, gi->after + gi->lead + off,
                       (size_t)c.c * es_) != 0)
                bad_row = i;
        }
        cr_expect(bad_row < 0,
                  "%s: in-place gradient differs from the separate one "
                  "(row %lld)",
                  desc, (long long)bad_row);
        ok &= bad_row < 0;
        const int outs[] = {B_LOSS, B_ROWS, B_LSE};
        for (size_t k = 0; k < 3; k++) {
            const gbuf *x = &es.b[outs[k]], *y = &ei.b[outs[k]];
            if (!x->used)
                continue;
            int same = memcmp(x->after, y->after, x->total) == 0;
            cr_expect(same, "%s: %s differs between in-place and separate",
                      desc, buf_names[outs[k]]);
            ok &= same;
        }
    }
    exec_free(&es, m);
    exec_free(&ei, m);
    data_free(&d);
    return ok;
}

/* ------------------------------------------------------------------ */
/* The table                                                            */
/* ------------------------------------------------------------------ */

typedef struct conf_shape {
    int64_t n, c, ld;
} conf_shape;

/* Every tier and tail: C = 1, C < 32, a warp's width, odd C above it, a
 * ragged multi-chunk row, a block-row chunk (512 x 8 = 4096) plus a tail,
 * GPT-2's 50257 (padded to 50304 as llm.c does, and unpadded), C > 65536.
 * Big C with small N keeps the CPU run short. */
static const conf_shape shapes[] = {
    {1, 1, 1},        {8, 1, 4},        {3, 5, 5},         {37, 5, 8},
    {64, 31, 31},     {9, 31, 36},      {48, 32, 32},      {33, 33, 33},
    {12, 33, 40},     {5, 1001, 1001},  {23, 1001, 1008},  {3, 4099, 4100},
    {4, 50257, 50304}, {2, 50257, 50257}, {3, 65537, 65537}, {1, 65537, 65600},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))
#define GROUP_SPECIAL N_SHAPES

enum { OPT_NONE, OPT_WEIGHTS, OPT_IGNORE, OPT_IGNORE_IN, OPT_SMOOTH,
       OPT_ZLOSS, OPT_SOFTCAP, OPT_ALL, OPT_COUNT };

#define CONF_MAX_CASES 1024
static conf_case table[CONF_MAX_CASES];
static size_t table_n;

/* A small generator for the table's free axes (independent of tu_rng, so
 * the table does not change when the data fillers do). */
static uint64_t gen_state;
static uint32_t gen_next(void)
{
    gen_state = gen_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(gen_state >> 33);
}
static int gen_below(int bound) { return (int)(gen_next() % (uint32_t)bound); }

static void apply_option(conf_case *c, int opt)
{
    const int index = c->target != XENT_TARGET_PROBS_F32;
    if (!index && opt == OPT_IGNORE)
        opt = -1; /* probabilities: no ignored rows; weights + smoothing */
    if (!index && opt == OPT_IGNORE_IN)
        opt = -2; /* probabilities: z-loss + softcap */
    switch (opt) {
    case OPT_NONE: break;
    case OPT_WEIGHTS: c->weights = 1; break;
    case OPT_IGNORE: c->ignore_rows = 1; break;
    case OPT_IGNORE_IN:
        c->ignore_index = c->c / 2;
        c->ignore_rows = 1;
        break;
    case OPT_SMOOTH: c->label_smoothing = 0.1f; break;
    case OPT_ZLOSS: c->z_loss = 1e-4f; break;
    case OPT_SOFTCAP: c->softcap = 30.0f; break;
    case OPT_ALL:
        c->weights = 1;
        c->ignore_rows = index;
        c->label_smoothing = 0.1f;
        c->z_loss = 1e-4f;
        c->softcap = 30.0f;
        break;
    case -1:
        c->weights = 1;
        c->label_smoothing = 0.1f;
        break;
    case -2:
        c->z_loss = 1e-4f;
        c->softcap = 30.0f;
        break;
    }
}

/* Fills the axes not fixed by the sweep with valid, varied values. */
static void finish_case(conf_case *c)
{
    const int has_grad = c->op != CONF_OP_FWD;
    const int half = c->dtype != XENT_DTYPE_F32;
    if (c->target == XENT_TARGET_PROBS_F32) {
        c->ignore_index = XENT_DEFAULT_IGNORE_INDEX;
        c->ignore_rows = 0;
        int k = gen_below(3);
        c->target_ld = k == 0 ? c->c : k == 1 ? c->ld : c->c + 3;
    }
    if (has_grad) {
        if (half && gen_below(4) == 0)
            c->flags |= XENT_FLAG_GRAD_F32;
        c->in_place = !(half && (c->flags & XENT_FLAG_GRAD_F32)) &&
                      gen_below(2) == 0;
        if (c->reduction == XENT_REDUCTION_NONE) {
            c->upstream = (conf_upstream)gen_below(4);
        } else {
            static const conf_upstream ups[] = {
                CONF_UP_DEFAULT, CONF_UP_SCALAR, CONF_UP_BROADCAST};
            c->upstream = ups[gen_below(3)];
        }
        c->up_stride = c->upstream == CONF_UP_PER_ROW ? 1 + 2 * gen_below(2)
                                                      : 0;
        c->up_scale = c->upstream == CONF_UP_BROADCAST ? 2.5f : 1.0f;
    } else {
        c->up_scale = 1.0f;
    }
    /* outputs: mostly all; sometimes one (the reduced loss alone runs the
     * workspace's row buffer) */
    if (c->op != CONF_OP_BWD_LSE && gen_below(10) < 3) {
        static const unsigned outs[] = {CONF_OUT_LOSS, CONF_OUT_ROWS,
                                        CONF_OUT_LSE, CONF_OUT_NONE};
        unsigned o = outs[gen_below(c->op == CONF_OP_FWD_BWD ? 4 : 3)];
        if (o == CONF_OUT_LOSS && c->reduction == XENT_REDUCTION_NONE)
            o = CONF_OUT_LSE;
        c->outputs = o;
    }
    /* -inf with label smoothing makes the loss +inf: kept for the special
     * cases, ordinary cases use the finite extremes there */
    int ex = gen_below(4);
    c->extreme = ex == 0 ? CONF_EXTREME_NONE
                 : c->label_smoothing > 0.0f ? CONF_EXTREME_BIG
                                             : CONF_EXTREME_INF;
    if (c->reduction == XENT_REDUCTION_MEAN && gen_below(8) == 0)
        c->flags |= XENT_FLAG_EMPTY_MEAN_NAN;
    c->misaligned_ws = gen_below(2);
}

static conf_case *new_case(int group)
{
    if (table_n >= CONF_MAX_CASES) /* never: the table is far smaller */
        table_n = CONF_MAX_CASES - 1;
    conf_case *c = &table[table_n];
    memset(c, 0, sizeof *c);
    c->group = group;
    c->ignore_index = XENT_DEFAULT_IGNORE_INDEX;
    c->up_scale = 1.0f;
    c->seed = 0x5eed0000ull + table_n * 7919ull;
    table_n++;
    return c;
}

static conf_case *shape_case(int s, xent_target_type t, xent_reduction r,
                             xent_dtype dt, conf_op op, xent_variant v)
{
    conf_case *c = new_case(s);
    c->n = shapes[s].n;
    c->c = shapes[s].c;
    c->ld = shapes[s].ld;
    c->target = t;
    c->reduction = r;
    c->dtype = dt;
    c->op = op;
    c->variant = v;
    return c;
}

static const xent_target_type targets_[] = {
    XENT_TARGET_INDEX_I32, XENT_TARGET_INDEX_I64, XENT_TARGET_PROBS_F32};
static const xent_reduction reductions_[] = {
    XENT_REDUCTION_NONE, XENT_REDUCTION_MEAN, XENT_REDUCTION_SUM};
static const xent_dtype dtypes_[] = {XENT_DTYPE_F32, XENT_DTYPE_F16,
                                     XENT_DTYPE_BF16};
static const conf_op ops_[] = {CONF_OP_FWD, CONF_OP_FWD_BWD,
                               CONF_OP_BWD_LSE};
static const xent_variant variants_[] = {
    XENT_VARIANT_AUTO, XENT_VARIANT_WARP_ROW, XENT_VARIANT_BLOCK_ROW};

#define PICK(arr) (arr[gen_below((int)(sizeof arr / sizeof arr[0]))])

static conf_case *special(int64_t n, int64_t nc, int64_t ld, xent_dtype dt,
                          xent_target_type t, xent_reduction r, conf_op op,
                          xent_variant v)
{
    conf_case *c = new_case(GROUP_SPECIAL);
    c->n = n;
    c->c = nc;
    c->ld = ld;
    c->dtype = dt;
    c->target = t;
    c->reduction = r;
    c->op = op;
    c->variant = v;
    return c;
}

static void build_table(void)
{
    table_n = 0;
    gen_state = 0x7ab1e5eedull;
    for (int s = 0; s < N_SHAPES; s++) {
        /* options: each once, the other axes varied */
        for (int opt = 0; opt < OPT_COUNT; opt++) {
            conf_case *c =
                shape_case(s, PICK(targets_), PICK(reductions_),
                           PICK(dtypes_), PICK(ops_), PICK(variants_));
            apply_option(c, opt);
            finish_case(c);
        }
        /* variant x op: every kernel for every op */
        for (int v = 0; v < 3; v++)
            for (int op = 0; op < 3; op++) {
                conf_case *c =
                    shape_case(s, PICK(targets_), PICK(reductions_),
                               PICK(dtypes_), ops_[op], variants_[v]);
                static const int opts[] = {OPT_ALL, OPT_SMOOTH, OPT_IGNORE_IN,
                                           OPT_WEIGHTS, OPT_NONE, OPT_ZLOSS};
                apply_option(c, PICK(opts));
                finish_case(c);
            }
        /* dtype x target, and each reduction three times */
        for (int dt = 0; dt < 3; dt++)
            for (int t = 0; t < 3; t++) {
                conf_case *c = shape_case(s, targets_[t],
                                          reductions_[(dt + t) % 3],
                                          dtypes_[dt], PICK(ops_),
                                          PICK(variants_));
                apply_option(c, gen_below(OPT_COUNT));
                finish_case(c);
            }
    }

    /* ---- special cases ---- */
    conf_case *c;
    /* empty batch */
    c = special(0, 7, 7, XENT_DTYPE_F32, XENT_TARGET_INDEX_I64,
                XENT_REDUCTION_MEAN, CONF_OP_FWD_BWD, XENT_VARIANT_AUTO);
    c = special(0, 7, 9, XENT_DTYPE_BF16, XENT_TARGET_INDEX_I32,
                XENT_REDUCTION_MEAN, CONF_OP_FWD, XENT_VARIANT_WARP_ROW);
    c->flags = XENT_FLAG_EMPTY_MEAN_NAN;
    c = special(0, 7, 7, XENT_DTYPE_F16, XENT_TARGET_PROBS_F32,
                XENT_REDUCTION_SUM, CONF_OP_FWD_BWD, XENT_VARIANT_BLOCK_ROW);
    /* all rows ignored (C = 1, ignore_index 0): mean 0 or NaN, gradient 0 */
    for (int k = 0; k < 2; k++) {
        c = special(6, 1, 2, XENT_DTYPE_F32, XENT_TARGET_INDEX_I64,
                    XENT_REDUCTION_MEAN, CONF_OP_FWD_BWD,
                    k ? XENT_VARIANT_BLOCK_ROW : XENT_VARIANT_WARP_ROW);
        c->ignore_index = 0;
        c->flags = k ? XENT_FLAG_EMPTY_MEAN_NAN : 0;
    }
    /* every target has weight 0: a zero MEAN denominator, gradient 0 */
    for (int k = 0; k < 3; k++) {
        c = special(5, 7, 7, XENT_DTYPE_F32, XENT_TARGET_INDEX_I64,
                    XENT_REDUCTION_MEAN, ops_[k], variants_[k]);
        c->weights = 1;
        c->target_zero_weight = 1;
    }
    /* label smoothing with -inf logits (column 0 among them): loss +inf,
     * gradient finite */
    for (int k = 0; k < 6; k++) {
        const int64_t ncs[] = {33, 1001, 50257};
        c = special(7, ncs[k % 3], ncs[k % 3], XENT_DTYPE_F32,
                    k < 3 ? XENT_TARGET_INDEX_I64 : XENT_TARGET_PROBS_F32,
                    XENT_REDUCTION_NONE, CONF_OP_FWD_BWD, variants_[k % 3]);
        c->label_smoothing = 0.1f;
        c->extreme = CONF_EXTREME_INF;
    }
    /* full smoothing (alpha = 1: no hard-target term) */
    for (int k = 0; k < 3; k++) {
        c = special(11, 33, 36, dtypes_[k], targets_[k], XENT_REDUCTION_MEAN,
                    ops_[k], variants_[k]);
        c->label_smoothing = 1.0f;
        c->weights = k != 1;
        c->extreme = CONF_EXTREME_BIG;
    }
    /* per-row upstream with a stride, large C, every variant */
    for (int k = 0; k < 3; k++) {
        c = special(3, 50257, 50304, dtypes_[k], XENT_TARGET_INDEX_I64,
                    XENT_REDUCTION_NONE, k == 2 ? CONF_OP_BWD_LSE
                                                : CONF_OP_FWD_BWD,
                    variants_[k]);
        c->upstream = CONF_UP_PER_ROW;
        c->up_stride = 3;
        c->extreme = CONF_EXTREME_INF;
        c->in_place = k == 1;
    }
    /* fp32 gradient from half logits; half gradients in place */
    for (int k = 0; k < 4; k++) {
        c = special(17, 1001, 1003, k & 1 ? XENT_DTYPE_BF16 : XENT_DTYPE_F16,
                    targets_[k % 3], XENT_REDUCTION_SUM,
                    k < 2 ? CONF_OP_FWD_BWD : CONF_OP_BWD_LSE,
                    variants_[1 + (k & 1)]);
        if (k < 2)
            c->flags = XENT_FLAG_GRAD_F32;
        else
            c->in_place = 1;
        c->z_loss = 1e-4f;
        c->extreme = CONF_EXTREME_INF;
    }
    /* more rows than one block holds: several blocks, grid-stride */
    c = special(300, 5, 5, XENT_DTYPE_F32, XENT_TARGET_INDEX_I32,
                XENT_REDUCTION_MEAN, CONF_OP_FWD_BWD, XENT_VARIANT_WARP_ROW);
    c->extreme = CONF_EXTREME_INF;
    c->weights = 1;
    c = special(600, 33, 40, XENT_DTYPE_BF16, XENT_TARGET_INDEX_I64,
                XENT_REDUCTION_SUM, CONF_OP_FWD_BWD, XENT_VARIANT_AUTO);
    c->extreme = CONF_EXTREME_INF;
    c = special(257, 2, 2, XENT_DTYPE_F16, XENT_TARGET_PROBS_F32,
                XENT_REDUCTION_NONE, CONF_OP_FWD_BWD, XENT_VARIANT_BLOCK_ROW);
    c->upstream = CONF_UP_PER_ROW;
    c->up_stride = 1;
    c->extreme = CONF_EXTREME_INF;
    c->in_place = 1;
    /* C = 2 with every option */
    c = special(40, 2, 2, XENT_DTYPE_BF16, XENT_TARGET_INDEX_I32,
                XENT_REDUCTION_MEAN, CONF_OP_FWD_BWD, XENT_VARIANT_WARP_ROW);
    apply_option(c, OPT_ALL);
    c->extreme = CONF_EXTREME_BIG;

    for (size_t k = 0; k < table_n; k++)
        if (table[k].up_scale == 0.0f)
            table[k].up_scale = 1.0f;
}

const conf_case *conf_table(size_t *count)
{
    if (table_n == 0)
        build_table();
    if (count)
        *count = table_n;
    return table;
}

int conf_group_count(void) { return N_SHAPES + 1; }

const char *conf_group_name(int group)
{
    static char names[N_SHAPES + 1][48];
    if (group < 0 || group > N_SHAPES)
        return "unknown";
    if (group == GROUP_SPECIAL)
        return "special";
    snprintf(names[group], sizeof names[group], "%lldx%lld_ld%lld",
             (long long)shapes[group].n, (long long)shapes[group].c,
             (long long)shapes[group].ld);
    return names[group];
}
