/*
 * test_info.c - entropy, KL divergence, binary cross-entropy and the
 * evaluation statistics (xent_ce_eval) on a CPU handle:
 *  - parity with PyTorch through the golden vectors (entropy.txt, kl.txt,
 *    bce.txt), every case, forward and gradients (teacher ones included);
 *  - the seed's worked examples through the API;
 *  - Gibbs' inequality and friends as Theories over random distributions
 *    (H_p(q) >= H(q), KL >= 0, KL(q || q) = 0, H(uniform) = log C,
 *    H <= log C);
 *  - every op x dtype x reduction x option against the float64 reference
 *    (tests/ref.h), with NaN padding, poisoned outputs, upstream
 *    gradients, in place, and a finite-difference check through the API;
 *  - xent_ce_eval's per-row statistics against the reference, and the
 *    corpus accumulator: exact, batch invariant (1000 rows in batches of
 *    1, 7, 333 and 1000, in any order: bitwise the same), thread-count
 *    invariant, and within 2^-32 N of the float64 sum;
 *  - every bad input gets its status (and bad data its status-word flag).
 *
 * The first part of this file (helpers and the case runners info_run,
 * eval_run, eval_batch_invariance, which take a tu_mem) is shared with
 * tests/test_gpu_info.c, which includes this file with
 * XENT_INFO_SHARED_ONLY defined to run the very same checks on device
 * memory; the CPU tests follow it.
 */
#include <criterion/criterion.h>
#include <criterion/theories.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h" /* tu_mem (the type only) */
#include "golden.h"
#include "internal.h" /* host half conversions, xent_fixed32 */
#include "ref.h"
#include "testutil.h"
#include "xent.h"

/* fp32 math vs float64: |d| <= FP32_TOL (|ref| + max|ref| of the tensor) */
#define FP32_TOL 1e-5

/* ====================================================================
 * Shared with tests/test_gpu_info.c: helpers and case runners
 * ================================================================== */

static double max_abs(const double *x, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]) && fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/*
 * One tensor against its reference:
 *   |d| <= 1e-5 max(max|ref|, terms) + out_atol + (1e-5 + out_rtol) |ref|
 * terms: the largest term an element is computed from (0: none), as in
 * tests/conformance.c: where the terms cancel (a KL teacher gradient
 * q (log q - log p - KL) near 0, a BCE gradient with soft targets) no fp32
 * computation beats eps times the terms. out_rtol / out_atol: the
 * rounding of a half-precision output (relative, and absolute below f16's
 * normal range). Reported with cr_expect; returns 1 when close.
 */
static int check_close_terms(const char *desc, const char *what,
                             const double *ref, const double *got, int64_t n,
                             double out_rtol, double out_atol, double terms)
{
    double scale = max_abs(ref, n);
    if (terms > scale)
        scale = terms;
    tu_close r = tu_compare_f64(ref, got, n, FP32_TOL * scale + out_atol,
                                FP32_TOL + out_rtol);
    cr_expect(r.ok,
              "%s: %s: %lld of %lld bad, worst [%lld] got %.9g ref %.9g err "
              "%.3g (scale %.3g), rel-norm %.3g",
              desc, what, (long long)r.n_bad, (long long)n, (long long)r.worst,
              r.worst_got, r.worst_ref, r.worst_err, scale, r.rel_norm);
    return r.ok;
}

static int check_close(const char *desc, const char *what, const double *ref,
                       const double *got, int64_t n, double out_rtol)
{
    return check_close_terms(desc, what, ref, got, n, out_rtol, 0.0, 0.0);
}

static size_t dt_size(xent_dtype t)
{
    return t == XENT_DTYPE_F32 ? 4u : 2u;
}

static const char *dt_name(xent_dtype t)
{
    return t == XENT_DTYPE_F32 ? "f32" : t == XENT_DTYPE_F16 ? "f16" : "bf16";
}

static double out_rounding(xent_dtype t, int grad_f32)
{
    if (grad_f32 || t == XENT_DTYPE_F32)
        return 0.0;
    return t == XENT_DTYPE_F16 ? 0x1p-11 : 0x1p-8;
}

/* Half the spacing of f16's subnormals: the absolute rounding of an f16
 * output below 2^-14 (bf16 has fp32's exponent range). */
static double out_abs_rounding(xent_dtype t, int grad_f32)
{
    return !grad_f32 && t == XENT_DTYPE_F16 ? 0x1p-25 : 0.0;
}

static void dt_store(xent_dtype t, void *buf, int64_t k, float v)
{
    if (t == XENT_DTYPE_F32)
        ((float *)buf)[k] = v;
    else if (t == XENT_DTYPE_F16)
        ((uint16_t *)buf)[k] = xent_f32_to_f16(v);
    else
        ((uint16_t *)buf)[k] = xent_f32_to_bf16(v);
}

static float dt_load(xent_dtype t, const void *buf, int64_t k)
{
    if (t == XENT_DTYPE_F32)
        return ((const float *)buf)[k];
    if (t == XENT_DTYPE_F16)
        return xent_f16_to_f32(((const uint16_t *)buf)[k]);
    return xent_bf16_to_f32(((const uint16_t *)buf)[k]);
}

static void *xmalloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    cr_assert_not_null(p);
    return p;
}

/* A backend buffer with its contents uploaded (or poisoned with 0xa5
 * bytes when src is NULL). */
static void *mem_new(const tu_mem *m, const void *src, size_t bytes)
{
    void *d = m->alloc(bytes ? bytes : 1);
    cr_assert_not_null(d, "backend allocation of %zu bytes", bytes);
    if (src) {
        m->upload(d, src, bytes);
    } else {
        unsigned char *poison = xmalloc(bytes);
        memset(poison, 0xa5, bytes);
        m->upload(d, poison, bytes);
        free(poison);
    }
    return d;
}

static void *mem_get(const tu_mem *m, const void *d, size_t bytes)
{
    void *h = xmalloc(bytes);
    m->sync();
    m->download(h, d, bytes);
    return h;
}

/* ---- entropy / KL / BCE against the reference ---------------------------- */

enum { OP_ENT = 0, OP_KLP = 1, OP_KLT = 2, OP_BCE = 3 };
static const char *op_name[] = {"entropy", "kl_probs", "kl_logits", "bce"};

typedef struct info_case {
    int op;
    int64_t n, c;
    int64_t pad; /* ld = c + pad; targets/weights/upstream rows get
                    c + pad + 3 */
    xent_dtype dtype;
    xent_reduction red;
    int grad;       /* forward_backward */
    int grad_t;     /* KL, teacher logits: the teacher's gradient too */
    int in_place;   /* gradients over their inputs */
    int pos_weight; /* BCE */
    int weight;     /* BCE */
    int upstream;   /* 0 none; 1 a tensor (NONE: per row / element, else
                       one value); 2 one value, stride 0, host scale */
    int grad_f32;
    xent_variant variant;
    uint64_t seed;
} info_case;

static const char *info_describe(const info_case *c, char *buf, size_t n)
{
    snprintf(buf, n,
             "[%s %lldx%lld pad=%lld %s red=%d grad=%d gt=%d inplace=%d "
             "pw=%d w=%d up=%d g32=%d var=%s seed=%llu]",
             op_name[c->op], (long long)c->n, (long long)c->c,
             (long long)c->pad, dt_name(c->dtype), (int)c->red, c->grad,
             c->grad_t, c->in_place, c->pos_weight, c->weight, c->upstream,
             c->grad_f32, xent_variant_name(c->variant),
             (unsigned long long)c->seed);
    return buf;
}

/* Everything a case wrote, downloaded (for bitwise comparisons). */
typedef struct info_out {
    xent_status st;
    float loss;
    float *rows; /* [n] (BCE: [n, ld] elements) */
    unsigned char *grad, *grad_t;
    size_t rows_bytes, grad_bytes, grad_t_bytes;
} info_out;

static void info_out_free(info_out *o)
{
    free(o->rows);
    free(o->grad);
    free(o->grad_t);
    memset(o, 0, sizeof *o);
}

static int info_out_equal(const info_out *a, const info_out *b)
{
    return a->st == b->st && memcmp(&a->loss, &b->loss, sizeof a->loss) == 0 &&
           a->rows_bytes == b->rows_bytes &&
           memcmp(a->rows, b->rows, a->rows_bytes) == 0 &&
           a->grad_bytes == b->grad_bytes &&
           (a->grad_bytes == 0 ||
            memcmp(a->grad, b->grad, a->grad_bytes) == 0) &&
           a->grad_t_bytes == b->grad_t_bytes &&
           (a->grad_t_bytes == 0 ||
            memcmp(a->grad_t, b->grad_t, a->grad_t_bytes) == 0);
}

/* The inputs of a case, generated from its seed. */
typedef struct info_inputs {
    int64_t n, c, ld, tld;
    unsigned char *z; /* [n, ld] dtype, NaN padding */
    unsigned char *t; /* KLT: [n, tld] dtype; KLP / BCE: float [n, tld] */
    float *pw;        /* BCE [c] */
    float *w;         /* BCE [n, tld] */
    float *u;         /* upstream values */
    int64_t u_stride;
    size_t z_bytes, t_bytes, u_count;
    double *zd, *td, *pwd, *wd; /* dense [n, c] doubles of the inputs */
} info_inputs;

static void info_inputs_make(const info_case *k, info_inputs *in)
{
    memset(in, 0, sizeof *in);
    const int64_t n = k->n, c = k->c, ld = c + k->pad, tld = c + k->pad + 3;
    in->n = n;
    in->c = c;
    in->ld = ld;
    in->tld = tld;
    tu_rng r;
    tu_rng_seed(&r, k->seed);
    const size_t es = dt_size(k->dtype);
    float *zf = xmalloc((size_t)(n * ld + 1) * sizeof(float));
    tu_fill_logits(&r, n, c, ld, zf, NAN);
    if (k->op == OP_BCE) /* some extreme logits: |z| = 100 and 1e4 */
        for (int64_t i = 0; i < n; i++)
            if (i % 3 == 1)
                for (int64_t j = i % 2; j < c; j += 3)
                    zf[i * ld + j] =
                        (j % 2 ? -1.0f : 1.0f) * ((i + j) % 2 ? 100.0f : 1e4f);
    in->z_bytes = (size_t)(n * ld) * es;
    in->z = xmalloc(in->z_bytes);
    in->zd = xmalloc((size_t)(n * c + 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ld; j++) {
            dt_store(k->dtype, in->z, i * ld + j, zf[i * ld + j]);
            if (j < c)
                in->zd[i * c + j] = dt_load(k->dtype, in->z, i * ld + j);
        }
    in->td = xmalloc((size_t)(n * c + 1) * sizeof(double));
    if (k->op == OP_KLT) {
        float *tf = xmalloc((size_t)(n * tld + 1) * sizeof(float));
        tu_fill_logits(&r, n, c, tld, tf, NAN);
        in->t_bytes = (size_t)(n * tld) * es;
        in->t = xmalloc(in->t_bytes);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < tld; j++) {
                dt_store(k->dtype, in->t, i * tld + j, tf[i * tld + j]);
                if (j < c)
                    in->td[i * c + j] = dt_load(k->dtype, in->t, i * tld + j);
            }
        free(tf);
    } else if (k->op != OP_ENT) {
        float *q = xmalloc((size_t)(n * tld + 1) * sizeof(float));
        if (k->op == OP_KLP) {
            tu_fill_probs(&r, n, c, tld, q, NAN);
        } else { /* BCE: hard rows and soft rows */
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < tld; j++)
                    q[i * tld + j] = j >= c  ? NAN
                                     : i % 2 ? (float)tu_below(&r, 2)
                                             : (float)tu_uniform(&r);
        }
        in->t_bytes = (size_t)(n * tld) * sizeof(float);
        in->t = (unsigned char *)q;
        tu_rows_f32_to_f64(n, c, tld, q, in->td);
    }
    if (k->op == OP_BCE && k->pos_weight) {
        in->pw = xmalloc((size_t)(c + 1) * sizeof(float));
        tu_fill_uniform_f32(&r, c, 0.25f, 4.0f, in->pw);
        in->pwd = xmalloc((size_t)(c + 1) * sizeof(double));
        tu_f32_to_f64(in->pw, in->pwd, c);
    }
    if (k->op == OP_BCE && k->weight) {
        in->w = xmalloc((size_t)(n * tld + 1) * sizeof(float));
        tu_fill_uniform_f32(&r, n * tld, 0.0f, 2.0f, in->w);
        in->wd = xmalloc((size_t)(n * c + 1) * sizeof(double));
        tu_rows_f32_to_f64(n, c, tld, in->w, in->wd);
    }
    /* upstream: NONE with a tensor gets per-row (stride 2) or, for BCE,
     * per-element ([n, tld]) values; otherwise one value */
    if (k->upstream) {
        int per = k->upstream == 1 && k->red == XENT_REDUCTION_NONE;
        in->u_stride = per ? (k->op == OP_BCE ? tld : 2) : 0;
        in->u_count = per ? (size_t)(n * in->u_stride + 1) : 1;
        in->u = xmalloc(in->u_count * sizeof(float));
        for (size_t q = 0; q < in->u_count; q++)
            in->u[q] = per ? (float)(0.25 + tu_uniform(&r)) : 0.75f;
    }
    free(zf);
}

static void info_inputs_free(info_inputs *in)
{
    free(in->z);
    free(in->t);
    free(in->pw);
    free(in->w);
    free(in->u);
    free(in->zd);
    free(in->td);
    free(in->pwd);
    free(in->wd);
}

/* Runs the case on h; every output is downloaded into *o. */
static void info_exec(xent_handle_t h, const tu_mem *m, const info_case *k,
                      const info_inputs *in, info_out *o)
{
    memset(o, 0, sizeof *o);
    const int64_t n = in->n, c = in->c, ld = in->ld, tld = in->tld;
    const int has_t = k->op != OP_ENT;
    const size_t gel = k->grad_f32 ? 4u : dt_size(k->dtype);
    void *dz = mem_new(m, in->z, in->z_bytes);
    void *dt = has_t ? mem_new(m, in->t, in->t_bytes) : NULL;
    void *dpw = in->pw ? mem_new(m, in->pw, (size_t)c * 4) : NULL;
    void *dw = in->w ? mem_new(m, in->w, (size_t)(n * tld) * 4) : NULL;
    void *du = in->u ? mem_new(m, in->u, in->u_count * 4) : NULL;
    o->rows_bytes = (size_t)(k->op == OP_BCE ? n * ld : n) * 4;
    void *drows = mem_new(m, NULL, o->rows_bytes);
    void *dloss = mem_new(m, NULL, 4);
    const int want_loss = k->red != XENT_REDUCTION_NONE;
    void *dgrad = NULL, *dgt = NULL;
    if (k->grad) {
        o->grad_bytes = (size_t)(n * ld) * gel;
        dgrad = k->in_place ? dz : mem_new(m, NULL, o->grad_bytes);
        if (k->grad_t) {
            o->grad_t_bytes = (size_t)(n * tld) * gel;
            dgt = k->in_place ? dt : mem_new(m, NULL, o->grad_t_bytes);
        }
    }
    xent_upstream up = xent_upstream_default();
    if (k->upstream) {
        up.d_dloss = du;
        up.dloss_stride = in->u_stride;
        up.scale = k->upstream == 2 ? 1.5f : 1.0f;
    }
    const uint32_t flags = k->grad_f32 ? XENT_FLAG_GRAD_F32 : 0u;
    size_t wsb = 0;
    void *dws = NULL;
    if (k->op == OP_ENT) {
        xent_entropy_desc d;
        xent_entropy_desc_init(&d, n, c);
        d.ld = ld;
        d.logits_dtype = k->dtype;
        d.reduction = k->red;
        d.flags = flags;
        d.variant = k->variant;
        cr_assert_eq(xent_entropy_workspace_size(h, &d, &wsb),
                     XENT_STATUS_SUCCESS);
        dws = wsb ? mem_new(m, NULL, wsb) : NULL;
        o->st = k->grad
                    ? xent_entropy_forward_backward(
                          h, &d, dz, k->upstream ? &up : NULL, dgrad,
                          want_loss ? dloss : NULL, drows, dws, wsb)
                    : xent_entropy_forward(h, &d, dz, want_loss ? dloss : NULL,
                                           drows, dws, wsb);
    } else if (k->op == OP_BCE) {
        xent_bce_desc d;
        xent_bce_desc_init(&d, n, c);
        d.ld = ld;
        d.logits_dtype = k->dtype;
        d.target_ld = tld;
        d.pos_weight = dpw;
        d.n_pos_weight = dpw ? c : 0;
        d.weight = dw;
        d.weight_ld = tld;
        d.reduction = k->red;
        d.flags = flags;
        d.variant = k->variant;
        cr_assert_eq(xent_bce_workspace_size(h, &d, &wsb), XENT_STATUS_SUCCESS);
        dws = wsb ? mem_new(m, NULL, wsb) : NULL;
        o->st = k->grad
                    ? xent_bce_forward_backward(
                          h, &d, dz, dt, k->upstream ? &up : NULL, dgrad,
                          want_loss ? dloss : NULL, drows, dws, wsb)
                    : xent_bce_forward(h, &d, dz, dt, want_loss ? dloss : NULL,
                                       drows, dws, wsb);
    } else {
        xent_kl_desc d;
        xent_kl_desc_init(&d, n, c);
        d.ld = ld;
        d.logits_dtype = k->dtype;
        d.target_kind =
            k->op == OP_KLT ? XENT_KL_TARGET_LOGITS : XENT_KL_TARGET_PROBS;
        d.target_ld = tld;
        d.reduction = k->red;
        d.flags = flags;
        d.variant = k->variant;
        cr_assert_eq(xent_kl_workspace_size(h, &d, &wsb), XENT_STATUS_SUCCESS);
        dws = wsb ? mem_new(m, NULL, wsb) : NULL;
        o->st = k->grad
                    ? xent_kl_forward_backward(
                          h, &d, dz, dt, k->upstream ? &up : NULL, dgrad, dgt,
                          want_loss ? dloss : NULL, drows, dws, wsb)
                    : xent_kl_forward(h, &d, dz, dt, want_loss ? dloss : NULL,
                                      drows, dws, wsb);
    }
    m->sync();
    o->rows = mem_get(m, drows, o->rows_bytes);
    m->download(&o->loss, dloss, 4);
    if (dgrad)
        o->grad = mem_get(m, dgrad, o->grad_bytes);
    if (dgt)
        o->grad_t = mem_get(m, dgt, o->grad_t_bytes);
    void *bufs[] = {dz,
                    dt,
                    dpw,
                    dw,
                    du,
                    drows,
                    dloss,
                    dws,
                    k->in_place ? NULL : dgrad,
                    k->in_place ? NULL : dgt};
    for (size_t q = 0; q < sizeof bufs / sizeof bufs[0]; q++)
        if (bufs[q])
            m->release(bufs[q]);
}

/* Runs a case and checks every output against the reference. Returns 1
 * when it passed. */
static int info_run(xent_handle_t h, const tu_mem *m, const info_case *k)
{
    char desc[256];
    info_describe(k, desc, sizeof desc);
    info_inputs in;
    info_inputs_make(k, &in);
    info_out o;
    info_exec(h, m, k, &in, &o);
    cr_expect_eq(o.st, XENT_STATUS_SUCCESS, "%s: %s", desc,
                 xent_status_string(o.st));
    if (o.st != XENT_STATUS_SUCCESS) {
        info_out_free(&o);
        info_inputs_free(&in);
        return 0;
    }
    const int64_t n = in.n, c = in.c, ld = in.ld, tld = in.tld;
    const int red = (int)k->red;
    const size_t nc = (size_t)(n * c + 1);
    double *rows = xmalloc(nc * sizeof(double));
    double *gz = xmalloc(nc * sizeof(double));
    double *gt = xmalloc(nc * sizeof(double));
    double loss;
    if (k->op == OP_ENT)
        loss = ref_entropy_batch(n, c, in.zd, c, red, rows, gz);
    else if (k->op == OP_KLP)
        loss = ref_kl_batch(n, c, in.zd, c, in.td, c, NULL, 0, red, rows, gz,
                            NULL);
    else if (k->op == OP_KLT)
        loss =
            ref_kl_batch(n, c, in.zd, c, NULL, 0, in.td, c, red, rows, gz, gt);
    else
        loss = ref_bce_logits(n, c, in.zd, in.td, in.pwd, in.wd, red, rows, gz);
    int ok = 1;
    double *got = xmalloc(nc * sizeof(double));
    const int64_t nrows = k->op == OP_BCE ? n * c : n;
    /* per-row (element) losses */
    if (k->op == OP_BCE)
        tu_rows_f32_to_f64(n, c, ld, o.rows, got);
    else
        tu_f32_to_f64(o.rows, got, n);
    ok &= check_close(desc, "loss rows", rows, got, nrows, 0.0);
    if (k->op == OP_BCE) /* padding columns of the element output */
        for (int64_t i = 0; i < n && ok; i++)
            for (int64_t j = c; j < ld; j++) {
                uint32_t b;
                memcpy(&b, &o.rows[i * ld + j], 4);
                if (b != 0xa5a5a5a5u) {
                    cr_expect(0,
                              "%s: loss element padding (%lld,%lld) "
                              "written",
                              desc, (long long)i, (long long)j);
                    ok = 0;
                    break;
                }
            }
    if (red != XENT_REDUCTION_NONE) {
        double g1 = (double)o.loss;
        ok &= check_close(desc, "reduced loss", &loss, &g1, 1, 0.0);
    }
    /* gradients: the reference times the upstream, and the largest term
     * each gradient is computed from (see check_close_terms) */
    if (k->grad) {
        const double sc = k->upstream == 2 ? 1.5 : 1.0;
        const double den = red != XENT_REDUCTION_MEAN ? 1.0
                           : k->op == OP_BCE          ? (double)(n * c)
                                                      : (double)n;
        double terms_z = 0.0, terms_t = 0.0;
        double *pr = xmalloc((size_t)(c + 1) * sizeof(double));
        double *qr = xmalloc((size_t)(c + 1) * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            if (k->op != OP_BCE)
                ref_softmax(c, in.zd + i * c, pr);
            if (k->op == OP_KLT)
                ref_softmax(c, in.td + i * c, qr);
            double qs = 0.0;
            for (int64_t j = 0; j < c && k->op == OP_KLP; j++)
                qs += in.td[i * c + j];
            for (int64_t j = 0; j < c; j++) {
                double u = 1.0;
                if (k->upstream) {
                    if (in.u_stride == 0)
                        u = (double)in.u[0];
                    else if (k->op == OP_BCE)
                        u = (double)in.u[i * in.u_stride + j];
                    else
                        u = (double)in.u[i * in.u_stride];
                }
                const double f = sc * u;
                const double fa = fabs(f) / den;
                gz[i * c + j] *= f;
                gt[i * c + j] *= f;
                double tz = 0.0, tt = 0.0;
                const double pj = pr[j];
                if (k->op == OP_ENT) {
                    tz = pj > 0.0 ? pj * (fabs(log(pj)) + rows[i]) : 0.0;
                } else if (k->op == OP_KLP) {
                    tz = fmax(pj * qs, in.td[i * c + j]);
                } else if (k->op == OP_KLT) {
                    const double qj = qr[j];
                    tz = fmax(pj, qj);
                    tt = qj > 0.0 ? qj * (fabs(log(qj)) + fabs(log(pj)) +
                                          fabs(rows[i]))
                                  : 0.0;
                } else {
                    const double zj = in.zd[i * c + j], yj = in.td[i * c + j];
                    const double pw = in.pwd ? in.pwd[j] : 1.0;
                    const double wj = in.wd ? fabs(in.wd[i * c + j]) : 1.0;
                    tz = wj * ((1.0 - yj) / (1.0 + exp(-zj)) +
                               pw * yj / (1.0 + exp(zj)));
                }
                if (fa * tz > terms_z)
                    terms_z = fa * tz;
                if (fa * tt > terms_t)
                    terms_t = fa * tt;
            }
        }
        free(pr);
        free(qr);
        const double orr = out_rounding(k->dtype, k->grad_f32);
        const double oab = out_abs_rounding(k->dtype, k->grad_f32);
        const xent_dtype gdt = k->grad_f32 ? XENT_DTYPE_F32 : k->dtype;
        const size_t gel = dt_size(gdt);
        const unsigned char *pad_ref = k->in_place ? in.z : NULL;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < c; j++)
                got[i * c + j] = dt_load(gdt, o.grad, i * ld + j);
        ok &= check_close_terms(desc, "gradient", gz, got, n * c, orr, oab,
                                terms_z);
        /* padding: untouched (poison, or the input's NaN in place) */
        for (int64_t i = 0; i < n; i++) {
            const size_t off = (size_t)(i * ld + c) * gel;
            const size_t len = (size_t)(ld - c) * gel;
            for (size_t b = 0; b < len; b++) {
                unsigned char want = pad_ref ? pad_ref[off + b] : 0xa5;
                if (o.grad[off + b] != want) {
                    cr_expect(0, "%s: gradient padding of row %lld written",
                              desc, (long long)i);
                    ok = 0;
                    i = n;
                    break;
                }
            }
        }
        if (k->grad_t) {
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < c; j++)
                    got[i * c + j] = dt_load(gdt, o.grad_t, i * tld + j);
            ok &= check_close_terms(desc, "teacher gradient", gt, got, n * c,
                                    orr, oab, terms_t);
            /* the teacher's padding */
            const unsigned char *tpad = k->in_place ? in.t : NULL;
            for (int64_t i = 0; i < n; i++) {
                const size_t off = (size_t)(i * tld + c) * gel;
                const size_t len = (size_t)(tld - c) * gel;
                for (size_t b = 0; b < len; b++) {
                    unsigned char want = tpad ? tpad[off + b] : 0xa5;
                    if (o.grad_t[off + b] != want) {
                        cr_expect(0,
                                  "%s: teacher gradient padding of row "
                                  "%lld written",
                                  desc, (long long)i);
                        ok = 0;
                        i = n;
                        break;
                    }
                }
            }
        }
    }
    free(rows);
    free(gz);
    free(gt);
    free(got);
    info_out_free(&o);
    info_inputs_free(&in);
    return ok;
}

/* The case run twice on h, then on h2: bitwise the same outputs. */
static int info_bitwise(xent_handle_t h, xent_handle_t h2, const tu_mem *m,
                        const info_case *k)
{
    char desc[256];
    info_describe(k, desc, sizeof desc);
    info_inputs in;
    info_inputs_make(k, &in);
    info_out a, b, c2;
    info_exec(h, m, k, &in, &a);
    info_exec(h, m, k, &in, &b);
    info_exec(h2, m, k, &in, &c2);
    int ok = info_out_equal(&a, &b);
    cr_expect(ok, "%s: two runs differ", desc);
    int ok2 = info_out_equal(&a, &c2);
    cr_expect(ok2, "%s: the second handle differs", desc);
    info_out_free(&a);
    info_out_free(&b);
    info_out_free(&c2);
    info_inputs_free(&in);
    return ok && ok2;
}

/* A table of cases over ops x dtypes x reductions x options x variants
 * (shapes with C = 1, small odd C, C around a warp, C = 1000 and 3000
 * with padding). */
static info_case *info_table(size_t *count, int gpu)
{
    static const int64_t shapes[][3] = {
        {5, 1, 0}, {7, 3, 2}, {9, 33, 1}, {4, 1000, 24}, {3, 3000, 8}};
    const size_t ns = sizeof shapes / sizeof shapes[0];
    info_case *t = xmalloc(4 * ns * 3 * 3 * 4 * sizeof *t);
    size_t n = 0;
    uint64_t seed = 1000;
    for (int op = 0; op < 4; op++)
        for (size_t s = 0; s < ns; s++)
            for (int dt = 0; dt < 3; dt++)
                for (int red = 0; red < 3; red++)
                    for (int v = 0; v < (gpu ? 3 : 1); v++) {
                        info_case k;
                        memset(&k, 0, sizeof k);
                        k.op = op;
                        k.n = shapes[s][0];
                        k.c = shapes[s][1];
                        k.pad = shapes[s][2];
                        k.dtype = (xent_dtype)dt;
                        k.red = (xent_reduction)red;
                        k.variant = (xent_variant)v;
                        k.seed = seed++;
                        /* options cycle with the seed */
                        k.grad = (k.seed % 4) != 0;
                        k.grad_t = op == OP_KLT && (k.seed % 3) != 0;
                        k.in_place = k.grad && (k.seed % 5) == 1;
                        k.pos_weight = op == OP_BCE && (k.seed % 2);
                        k.weight = op == OP_BCE && (k.seed % 3) == 2;
                        k.upstream = k.grad ? (int)(k.seed % 3) : 0;
                        k.grad_f32 =
                            k.grad && dt != 0 && !k.in_place && (k.seed % 2);
                        t[n++] = k;
                    }
    *count = n;
    return t;
}

/* ---- xent_ce_eval against the reference ---------------------------------- */

typedef struct eval_case {
    int64_t n, c, pad;
    xent_dtype dtype;
    int i32;
    int weights; /* class weights in [0.5, 1.5) */
    float smoothing, z_loss, softcap;
    int ignore_rows; /* rows i % 4 == 1 ignored */
    int64_t top_k;
    xent_variant variant;
    uint64_t seed;
} eval_case;

static const char *eval_describe(const eval_case *c, char *buf, size_t n)
{
    snprintf(buf, n,
             "[eval %lldx%lld pad=%lld %s i32=%d w=%d a=%g zl=%g cap=%g "
             "ign=%d k=%lld var=%s seed=%llu]",
             (long long)c->n, (long long)c->c, (long long)c->pad,
             dt_name(c->dtype), c->i32, c->weights, (double)c->smoothing,
             (double)c->z_loss, (double)c->softcap, c->ignore_rows,
             (long long)c->top_k, xent_variant_name(c->variant),
             (unsigned long long)c->seed);
    return buf;
}

typedef struct eval_data {
    int64_t n, c, ld;
    unsigned char *z; /* [n, ld] dtype */
    float *zc;        /* [n, c] the capped fp32 logits (xent_cap) */
    double *zd;       /* [n, c] doubles of the stored logits */
    int64_t *y;
    int32_t *y32;
    float *w;
    double *wd;
    size_t z_bytes;
} eval_data;

static void eval_data_make(const eval_case *k, eval_data *e)
{
    memset(e, 0, sizeof *e);
    const int64_t n = k->n, c = k->c, ld = c + k->pad;
    e->n = n;
    e->c = c;
    e->ld = ld;
    tu_rng r;
    tu_rng_seed(&r, k->seed);
    float *zf = xmalloc((size_t)(n * ld + 1) * sizeof(float));
    tu_fill_logits(&r, n, c, ld, zf, NAN);
    /* a few ties with the maximum, so first-index argmax and ranks of
     * tied targets are exercised */
    for (int64_t i = 0; i < n; i += 3) {
        float mx = -INFINITY;
        int64_t at = 0;
        for (int64_t j = 0; j < c; j++)
            if (zf[i * ld + j] > mx) {
                mx = zf[i * ld + j];
                at = j;
            }
        if (c > 1)
            zf[i * ld + (at + c - 1) % c] = mx;
    }
    e->z_bytes = (size_t)(n * ld) * dt_size(k->dtype);
    e->z = xmalloc(e->z_bytes);
    e->zd = xmalloc((size_t)(n * c + 1) * sizeof(double));
    e->zc = xmalloc((size_t)(n * c + 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ld; j++) {
            dt_store(k->dtype, e->z, i * ld + j, zf[i * ld + j]);
            if (j < c) {
                float v = dt_load(k->dtype, e->z, i * ld + j);
                e->zd[i * c + j] = v;
                e->zc[i * c + j] = xent_cap(v, k->softcap);
            }
        }
    e->y = xmalloc((size_t)(n + 1) * sizeof(int64_t));
    e->y32 = xmalloc((size_t)(n + 1) * sizeof(int32_t));
    tu_fill_targets_i64(&r, n, c, e->y);
    for (int64_t i = 0; i < n; i++) {
        if (i % 3 == 0 && c > 1) { /* a target tied with the max */
            int64_t at = 0;
            for (int64_t j = 0; j < c; j++)
                if (e->zc[i * c + j] > e->zc[i * c + at])
                    at = j;
            e->y[i] = (at + c - 1) % c;
        }
        if (k->ignore_rows && i % 4 == 1)
            e->y[i] = XENT_DEFAULT_IGNORE_INDEX;
        e->y32[i] = (int32_t)e->y[i];
    }
    if (k->weights) {
        e->w = xmalloc((size_t)(c + 1) * sizeof(float));
        tu_fill_uniform_f32(&r, c, 0.5f, 1.5f, e->w);
        e->wd = xmalloc((size_t)(c + 1) * sizeof(double));
        tu_f32_to_f64(e->w, e->wd, c);
    }
    free(zf);
}

static void eval_data_free(eval_data *e)
{
    free(e->z);
    free(e->zc);
    free(e->zd);
    free(e->y);
    free(e->y32);
    free(e->w);
    free(e->wd);
}

typedef struct eval_out {
    xent_status st;
    float *loss, *lse, *ent, *zl;
    int64_t *argmax, *rank;
    uint8_t *correct;
    xent_eval_accum acc;
} eval_out;

static void eval_out_free(eval_out *o)
{
    free(o->loss);
    free(o->lse);
    free(o->ent);
    free(o->zl);
    free(o->argmax);
    free(o->rank);
    free(o->correct);
}

static xent_ce_desc eval_desc(const eval_case *k, int64_t n, const void *dw)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, n, k->c);
    d.ld = k->c + k->pad;
    d.logits_dtype = k->dtype;
    d.target_type = k->i32 ? XENT_TARGET_INDEX_I32 : XENT_TARGET_INDEX_I64;
    d.weights = dw;
    d.n_weights = dw ? k->c : 0;
    d.label_smoothing = k->smoothing;
    d.z_loss = k->z_loss;
    d.softcap = k->softcap;
    d.variant = k->variant;
    return d;
}

/* Rows [row0, row0 + n) of the data in one call, adding to the backend
 * accumulator d_acc (reset by the caller); per-row outputs only when o. */
static xent_status eval_exec_rows(xent_handle_t h, const tu_mem *m,
                                  const eval_case *k, const eval_data *e,
                                  int64_t row0, int64_t n, void *d_acc,
                                  eval_out *o)
{
    const size_t es = dt_size(k->dtype);
    const int64_t ld = e->ld;
    void *dz =
        mem_new(m, e->z + (size_t)(row0 * ld) * es, (size_t)(n * ld) * es);
    void *dy = k->i32 ? mem_new(m, e->y32 + row0, (size_t)n * 4)
                      : mem_new(m, e->y + row0, (size_t)n * 8);
    void *dw = e->w ? mem_new(m, e->w, (size_t)e->c * 4) : NULL;
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    if (o) {
        out.d_loss = mem_new(m, NULL, (size_t)n * 4);
        out.d_lse = mem_new(m, NULL, (size_t)n * 4);
        out.d_entropy = mem_new(m, NULL, (size_t)n * 4);
        out.d_z_loss = mem_new(m, NULL, (size_t)n * 4);
        out.d_argmax = mem_new(m, NULL, (size_t)n * 8);
        out.d_rank = mem_new(m, NULL, (size_t)n * 8);
        out.d_correct = mem_new(m, NULL, (size_t)n);
    }
    xent_ce_desc d = eval_desc(k, n, dw);
    xent_status st =
        xent_ce_eval(h, &d, dz, dy, k->top_k, o ? &out : NULL, d_acc);
    m->sync();
    if (o) {
        o->st = st;
        o->loss = mem_get(m, out.d_loss, (size_t)n * 4);
        o->lse = mem_get(m, out.d_lse, (size_t)n * 4);
        o->ent = mem_get(m, out.d_entropy, (size_t)n * 4);
        o->zl = mem_get(m, out.d_z_loss, (size_t)n * 4);
        o->argmax = mem_get(m, out.d_argmax, (size_t)n * 8);
        o->rank = mem_get(m, out.d_rank, (size_t)n * 8);
        o->correct = mem_get(m, out.d_correct, (size_t)n);
        void *outs[] = {out.d_loss,   out.d_lse,  out.d_entropy, out.d_z_loss,
                        out.d_argmax, out.d_rank, out.d_correct};
        for (size_t q = 0; q < 7; q++)
            m->release(outs[q]);
    }
    m->release(dz);
    m->release(dy);
    if (dw)
        m->release(dw);
    return st;
}

/* The whole data in one call with every output and an accumulator. */
static void eval_exec(xent_handle_t h, const tu_mem *m, const eval_case *k,
                      const eval_data *e, eval_out *o)
{
    memset(o, 0, sizeof *o);
    void *dacc = mem_new(m, NULL, sizeof(xent_eval_accum));
    cr_assert_eq(xent_eval_accum_reset(h, dacc), XENT_STATUS_SUCCESS);
    eval_exec_rows(h, m, k, e, 0, e->n, dacc, o);
    m->download(&o->acc, dacc, sizeof o->acc);
    m->release(dacc);
}

/* The fixed-point value of one row, on the host (the library's own
 * conversion, integer only). */
static xent_u128 fixed_of(float v, int *ok)
{
    xent_u128 x;
    *ok = xent_fixed32(v, &x);
    return x;
}

static xent_u128 acc_u128(const uint64_t w[2])
{
    return ((xent_u128)w[1] << 64) | w[0];
}

/* Runs an eval case and checks every output and the accumulator. */
static int eval_run(xent_handle_t h, const tu_mem *m, const eval_case *k,
                    int exact_ranks)
{
    char desc[256];
    eval_describe(k, desc, sizeof desc);
    eval_data e;
    eval_data_make(k, &e);
    eval_out o;
    eval_exec(h, m, k, &e, &o);
    cr_expect_eq(o.st, XENT_STATUS_SUCCESS, "%s: %s", desc,
                 xent_status_string(o.st));
    const int64_t n = e.n, c = e.c;
    double *lr = xmalloc((size_t)(n + 1) * sizeof(double));
    double *ll = xmalloc((size_t)(n + 1) * sizeof(double));
    double *nll = xmalloc((size_t)(n + 1) * sizeof(double));
    double *en = xmalloc((size_t)(n + 1) * sizeof(double));
    double *zl = xmalloc((size_t)(n + 1) * sizeof(double));
    double *got = xmalloc((size_t)(n + 1) * sizeof(double));
    double *zcap = xmalloc((size_t)(c + 1) * sizeof(double));
    ref_ce_opts opt;
    ref_ce_opts_default(&opt);
    opt.reduction = 0;
    opt.weights = e.wd;
    opt.label_smoothing = k->smoothing;
    opt.z_loss = k->z_loss;
    opt.softcap = k->softcap;
    ref_ce_index(n, c, e.zd, c, e.y, &opt, lr, ll, NULL);
    ref_ce_opts plain;
    ref_ce_opts_default(&plain);
    plain.reduction = 0;
    plain.softcap = k->softcap;
    ref_ce_index(n, c, e.zd, c, e.y, &plain, nll, NULL, NULL);
    int ok = 1;
    int64_t tokens = 0, top1 = 0, topk = 0;
    double nll_sum = 0.0;
    xent_u128 ent_fixed = 0, nll_fixed = 0;
    int nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < c; j++)
            zcap[j] = k->softcap > 0.0f
                          ? (double)k->softcap *
                                tanh(e.zd[i * c + j] / (double)k->softcap)
                          : e.zd[i * c + j];
        en[i] = ref_softmax_entropy(c, zcap, NULL);
        const int ign = e.y[i] == XENT_DEFAULT_IGNORE_INDEX;
        zl[i] = ign ? 0.0 : (double)k->z_loss * ll[i] * ll[i];
        /* argmax and rank from the capped fp32 logits the library sees */
        const float *zc = e.zc + i * c;
        int64_t am = 0;
        for (int64_t j = 1; j < c; j++)
            if (zc[j] > zc[am])
                am = j;
        int64_t rank = -1;
        if (!ign) {
            rank = 0;
            for (int64_t j = 0; j < c; j++)
                rank += zc[j] > zc[e.y[i]];
        }
        if (exact_ranks) {
            if (o.argmax[i] != am || o.rank[i] != rank) {
                cr_expect(0,
                          "%s: row %lld: argmax %lld (want %lld), rank "
                          "%lld (want %lld)",
                          desc, (long long)i, (long long)o.argmax[i],
                          (long long)am, (long long)o.rank[i], (long long)rank);
                ok = 0;
            }
        } else {
            /* softcap on a GPU: tanhf may differ by an ulp from the
             * host's, so near-ties may order either way */
            const double eps = 1e-6 * (1.0 + (double)k->softcap);
            const float *zr = zc;
            int64_t ga = o.argmax[i];
            int good = ga >= 0 && ga < c && zr[ga] >= zr[am] - eps;
            if (!ign) {
                int64_t lo = 0, hi = 0;
                for (int64_t j = 0; j < c; j++) {
                    lo += zr[j] > zr[e.y[i]] + eps;
                    hi += zr[j] > zr[e.y[i]] - eps && j != e.y[i];
                }
                good &= o.rank[i] >= lo && o.rank[i] <= hi;
            } else {
                good &= o.rank[i] == -1;
            }
            if (!good) {
                cr_expect(0,
                          "%s: row %lld: argmax %lld / rank %lld out of "
                          "the near-tie bounds",
                          desc, (long long)i, (long long)o.argmax[i],
                          (long long)o.rank[i]);
                ok = 0;
            }
        }
        const int corr = !ign && o.argmax[i] == e.y[i];
        if (o.correct[i] != corr) {
            cr_expect(0, "%s: row %lld: correct %d, argmax %lld, target %lld",
                      desc, (long long)i, o.correct[i], (long long)o.argmax[i],
                      (long long)e.y[i]);
            ok = 0;
        }
        if (!ign) {
            tokens++;
            top1 += corr;
            topk += o.rank[i] < k->top_k;
            nll_sum += nll[i];
            int f1, f2;
            ent_fixed += fixed_of(o.ent[i], &f1);
            nll_fixed += fixed_of(o.loss[i], &f2);
            nonfinite += !f1;
        }
    }
    tu_f32_to_f64(o.loss, got, n);
    ok &= check_close(desc, "loss", lr, got, n, 0.0);
    tu_f32_to_f64(o.lse, got, n);
    ok &= check_close(desc, "lse", ll, got, n, 0.0);
    tu_f32_to_f64(o.ent, got, n);
    ok &= check_close(desc, "entropy", en, got, n, 0.0);
    tu_f32_to_f64(o.zl, got, n);
    ok &= check_close(desc, "z-loss term", zl, got, n, 0.0);
    /* the accumulator */
    cr_expect_eq(o.acc.tokens, tokens, "%s: tokens", desc);
    cr_expect_eq(o.acc.top1, top1, "%s: top1", desc);
    cr_expect_eq(o.acc.topk, topk, "%s: topk", desc);
    cr_expect_eq(o.acc.nonfinite, nonfinite, "%s: nonfinite", desc);
    ok &= o.acc.tokens == tokens && o.acc.top1 == top1 && o.acc.topk == topk &&
          o.acc.nonfinite == nonfinite;
    /* entropy sum: exactly the sum of the rows' fixed-point values */
    int ent_exact = acc_u128(o.acc.entropy) == ent_fixed;
    cr_expect(ent_exact, "%s: entropy sum is not the exact sum of the rows",
              desc);
    ok &= ent_exact;
    /* without options the row loss is the plain NLL: exact too */
    if (!e.w && k->smoothing == 0.0f && k->z_loss == 0.0f) {
        int nll_exact = acc_u128(o.acc.nll) == nll_fixed;
        cr_expect(nll_exact, "%s: NLL sum is not the exact sum of the rows",
                  desc);
        ok &= nll_exact;
    }
    /* and the NLL sum against the float64 reference */
    xent_eval_summary sum;
    cr_assert_eq(xent_eval_summarize(&o.acc, &sum), XENT_STATUS_SUCCESS);
    double tol = FP32_TOL * (fabs(nll_sum) + (double)tokens) +
                 ldexp((double)tokens, -32);
    if (!(fabs(sum.nll_sum - nll_sum) <= tol)) {
        cr_expect(0, "%s: NLL sum %.12g vs reference %.12g", desc, sum.nll_sum,
                  nll_sum);
        ok = 0;
    }
    free(lr);
    free(ll);
    free(nll);
    free(en);
    free(zl);
    free(got);
    free(zcap);
    eval_out_free(&o);
    eval_data_free(&e);
    return ok;
}

static eval_case *eval_table(size_t *count, int gpu)
{
    static const int64_t shapes[][3] = {
        {6, 1, 0}, {11, 5, 3}, {40, 37, 0}, {9, 300, 4}, {5, 2500, 12}};
    const size_t ns = sizeof shapes / sizeof shapes[0];
    eval_case *t = xmalloc(ns * 3 * 4 * 3 * sizeof *t);
    size_t n = 0;
    uint64_t seed = 5000;
    for (size_t s = 0; s < ns; s++)
        for (int dt = 0; dt < 3; dt++)
            for (int opt = 0; opt < 4; opt++)
                for (int v = 0; v < (gpu ? 3 : 1); v++) {
                    eval_case k;
                    memset(&k, 0, sizeof k);
                    k.n = shapes[s][0];
                    k.c = shapes[s][1];
                    k.pad = shapes[s][2];
                    k.dtype = (xent_dtype)dt;
                    k.variant = (xent_variant)v;
                    k.seed = seed++;
                    k.i32 = (int)(k.seed % 2);
                    k.top_k = 1 + (int64_t)(k.seed % 5);
                    k.ignore_rows = opt != 0;
                    if (opt == 2) { /* every option */
                        k.weights = 1;
                        k.smoothing = 0.1f;
                        k.z_loss = 1e-3f;
                    }
                    if (opt == 3)
                        k.softcap = 15.0f;
                    t[n++] = k;
                }
    *count = n;
    return t;
}

/* The corpus in batches of `batch` rows (the last partial), in forward or
 * reverse batch order, into one accumulator (downloaded into *acc). */
static void eval_batches(xent_handle_t h, const tu_mem *m, const eval_case *k,
                         const eval_data *e, int64_t batch, int reverse,
                         xent_eval_accum *acc)
{
    void *dacc = mem_new(m, NULL, sizeof *acc);
    cr_assert_eq(xent_eval_accum_reset(h, dacc), XENT_STATUS_SUCCESS);
    const int64_t nb = (e->n + batch - 1) / batch;
    for (int64_t q = 0; q < nb; q++) {
        const int64_t b = reverse ? nb - 1 - q : q;
        const int64_t r0 = b * batch;
        const int64_t len = e->n - r0 < batch ? e->n - r0 : batch;
        xent_status st = eval_exec_rows(h, m, k, e, r0, len, dacc, NULL);
        cr_assert_eq(st, XENT_STATUS_SUCCESS, "batch %lld: %s",
                     (long long)batch, xent_status_string(st));
    }
    m->sync();
    m->download(acc, dacc, sizeof *acc);
    m->release(dacc);
}

/* 1000 rows in batches of 1, 7, 333 and 1000 (forward and reverse
 * order): bitwise the same accumulator, within 2^-32 N of the float64 sum
 * of the rows' own fp32 values, and within fp32 tolerance of the
 * reference. Returns 1 when it passed. */
static int eval_batch_invariance(xent_handle_t h, const tu_mem *m,
                                 xent_dtype dt, xent_variant variant)
{
    eval_case k;
    memset(&k, 0, sizeof k);
    k.n = 1000;
    k.c = 97;
    k.pad = 3;
    k.dtype = dt;
    k.ignore_rows = 1;
    k.top_k = 5;
    k.variant = variant;
    k.seed = 77 + (uint64_t)dt;
    char desc[256];
    eval_describe(&k, desc, sizeof desc);
    eval_data e;
    eval_data_make(&k, &e);
    xent_eval_accum ref_acc, acc;
    eval_batches(h, m, &k, &e, 1000, 0, &ref_acc);
    static const int64_t sizes[] = {1, 7, 333, 1000};
    int ok = 1;
    for (size_t s = 0; s < 4; s++)
        for (int rev = 0; rev < 2; rev++) {
            if (sizes[s] == 1 && rev) /* the same calls, reversed: slow */
                continue;
            eval_batches(h, m, &k, &e, sizes[s], rev, &acc);
            int same = memcmp(&acc, &ref_acc, sizeof acc) == 0;
            cr_expect(same,
                      "%s: batches of %lld (%s) give another "
                      "accumulator",
                      desc, (long long)sizes[s], rev ? "reverse" : "forward");
            ok &= same;
        }
    /* the rows' own values, summed exactly in long double */
    eval_out o;
    eval_exec(h, m, &k, &e, &o);
    int same = memcmp(&o.acc, &ref_acc, sizeof o.acc) == 0;
    cr_expect(same, "%s: the per-row call's accumulator differs", desc);
    ok &= same;
    long double rows_sum = 0.0L, ent_sum = 0.0L;
    for (int64_t i = 0; i < e.n; i++)
        if (e.y[i] != XENT_DEFAULT_IGNORE_INDEX) {
            rows_sum += (long double)o.loss[i];
            ent_sum += (long double)o.ent[i];
        }
    xent_eval_summary s;
    cr_assert_eq(xent_eval_summarize(&ref_acc, &s), XENT_STATUS_SUCCESS);
    const double bound = ldexp((double)s.tokens, -32);
    if (!(fabsl((long double)s.nll_sum - rows_sum) <= bound &&
          fabsl((long double)s.entropy_sum - ent_sum) <= bound)) {
        cr_expect(0,
                  "%s: fixed-point sums %.17g / %.17g vs the rows' "
                  "%.17Lg / %.17Lg (bound %.3g)",
                  desc, s.nll_sum, s.entropy_sum, rows_sum, ent_sum, bound);
        ok = 0;
    }
    /* against the float64 reference */
    double *nll = xmalloc((size_t)e.n * sizeof(double));
    ref_ce_opts plain;
    ref_ce_opts_default(&plain);
    plain.reduction = 0;
    ref_ce_index(e.n, e.c, e.zd, e.c, e.y, &plain, nll, NULL, NULL);
    double ref_sum = 0.0;
    int64_t tokens = 0;
    for (int64_t i = 0; i < e.n; i++)
        if (e.y[i] != XENT_DEFAULT_IGNORE_INDEX) {
            ref_sum += nll[i];
            tokens++;
        }
    cr_expect_eq(s.tokens, tokens, "%s: tokens", desc);
    if (!(fabs(s.nll_sum - ref_sum) <= FP32_TOL * ref_sum + bound)) {
        cr_expect(0, "%s: NLL sum %.12g vs float64 reference %.12g", desc,
                  s.nll_sum, ref_sum);
        ok = 0;
    }
    if (!(fabs(s.mean_nll - ref_sum / (double)tokens) <=
              FP32_TOL * ref_sum / (double)tokens &&
          fabs(s.perplexity - exp(ref_sum / (double)tokens)) <=
              1e-4 * exp(ref_sum / (double)tokens))) {
        cr_expect(0, "%s: summary mean %.9g perplexity %.9g", desc, s.mean_nll,
                  s.perplexity);
        ok = 0;
    }
    free(nll);
    eval_out_free(&o);
    eval_data_free(&e);
    return ok;
}

/* ---- golden files ------------------------------------------------------ */

static golden_file *load_golden(const char *op)
{
    char err[256] = "";
    golden_file *f = golden_load_op(op, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_gt(golden_count(f), 0);
    return f;
}

static xent_reduction golden_reduction(const golden_case *gc)
{
    if (golden_str_is(gc, "reduction", "none"))
        return XENT_REDUCTION_NONE;
    if (golden_str_is(gc, "reduction", "sum"))
        return XENT_REDUCTION_SUM;
    return XENT_REDUCTION_MEAN; /* mean, batchmean */
}

/* torch's float64 values carry their own rounding, ~1e-16 of the O(1)..
 * O(50) terms they are computed from (p, q <= 1, |log p| <= ~50): that
 * noise is all there is where the exact value is 0 (e.g. the gradient of
 * KL(q || q), which the library gives as exactly 0). */
#define TORCH_F64_NOISE 1e-14

/* torch's tensor vs ours (float), fp32 tolerance
 * |d| <= 1e-5 (|ref| + max|ref|) (+ torch's own float64 noise). */
static void golden_check(const char *name, const char *what, const double *want,
                         const float *got, int64_t n)
{
    char w[160];
    snprintf(w, sizeof w, "%s %s", name, what);
    TU_ASSERT_CLOSE(
        tu_compare_f32(want, got, n,
                       FP32_TOL * max_abs(want, n) + TORCH_F64_NOISE, FP32_TOL),
        w);
}

/* A random distribution over c classes with every entry > 0 (so log q is
 * finite), fp32-exact; also its logits log q. */
static void random_dist(tu_rng *r, int64_t c, float *q, float *logq)
{
    double sum = 0.0;
    double *v = xmalloc((size_t)c * sizeof(double));
    for (int64_t j = 0; j < c; j++) {
        v[j] = exp(2.0 * tu_normal(r));
        sum += v[j];
    }
    for (int64_t j = 0; j < c; j++) {
        q[j] = (float)(v[j] / sum);
        logq[j] = logf(q[j]);
    }
    free(v);
}

/* ---- golden parity with PyTorch, on a backend -----------------------------
 */

/* Each golden case of one op through the API (forward, fused, gradients),
 * inputs uploaded to the backend, with the given variant. */
static void golden_entropy_run(xent_handle_t h, const tu_mem *m,
                               xent_variant variant)
{
    golden_file *f = load_golden("entropy");
    for (int64_t k = 0; k < golden_count(f); k++) {
        const golden_case *gc = golden_at(f, k);
        const char *name = golden_name(gc);
        const int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
        const xent_reduction red = golden_reduction(gc);
        const size_t nc = (size_t)(n * c);
        float *z = xmalloc(nc * 4);
        cr_assert_eq(golden_copy_f32(gc, "logits", z, n * c), n * c);
        xent_entropy_desc d;
        xent_entropy_desc_init(&d, n, c);
        d.reduction = red;
        d.variant = variant;
        size_t wsb = 0;
        cr_assert_eq(xent_entropy_workspace_size(h, &d, &wsb),
                     XENT_STATUS_SUCCESS);
        void *dz = mem_new(m, z, nc * 4),
             *drows = mem_new(m, NULL, (size_t)n * 4);
        void *dg = mem_new(m, NULL, nc * 4), *dl = mem_new(m, NULL, 8);
        void *dws = mem_new(m, NULL, wsb);
        float *dl2 = (float *)dl + 1;
        cr_assert_eq(
            xent_entropy_forward(h, &d, dz, red ? dl : NULL, drows, dws, wsb),
            XENT_STATUS_SUCCESS, "%s", name);
        cr_assert_eq(xent_entropy_forward_backward(
                         h, &d, dz, NULL, dg, red ? dl2 : NULL, NULL, dws, wsb),
                     XENT_STATUS_SUCCESS, "%s", name);
        float *rows = mem_get(m, drows, (size_t)n * 4);
        float *grad = mem_get(m, dg, nc * 4);
        float *loss = mem_get(m, dl, 8);
        golden_check(name, "loss_rows", golden_array(gc, "loss_rows", NULL),
                     rows, n);
        golden_check(name, "grad", golden_array(gc, "grad", NULL), grad, n * c);
        if (red) {
            double want = golden_scalar(gc, "loss", NAN);
            golden_check(name, "loss", &want, loss, 1);
            cr_assert_eq(memcmp(&loss[0], &loss[1], 4), 0, "%s: fused loss",
                         name);
        }
        void *bufs[] = {dz, drows, dg, dl, dws};
        for (size_t q = 0; q < 5; q++)
            m->release(bufs[q]);
        free(z);
        free(rows);
        free(grad);
        free(loss);
    }
    golden_free(f);
}

static void golden_kl_run(xent_handle_t h, const tu_mem *m,
                          xent_variant variant)
{
    golden_file *f = load_golden("kl");
    for (int64_t k = 0; k < golden_count(f); k++) {
        const golden_case *gc = golden_at(f, k);
        const char *name = golden_name(gc);
        const int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
        const xent_reduction red = golden_reduction(gc);
        const int lt = golden_str_is(gc, "target", "logits");
        const size_t nc = (size_t)(n * c);
        float *z = xmalloc(nc * 4), *t = xmalloc(nc * 4);
        cr_assert_eq(golden_copy_f32(gc, "logits", z, n * c), n * c);
        cr_assert_eq(golden_copy_f32(gc, lt ? "target_logits" : "target_probs",
                                     t, n * c),
                     n * c);
        xent_kl_desc d;
        xent_kl_desc_init(&d, n, c);
        d.reduction = red;
        d.target_kind = lt ? XENT_KL_TARGET_LOGITS : XENT_KL_TARGET_PROBS;
        d.variant = variant;
        size_t wsb = 0;
        cr_assert_eq(xent_kl_workspace_size(h, &d, &wsb), XENT_STATUS_SUCCESS);
        void *dz = mem_new(m, z, nc * 4), *dt = mem_new(m, t, nc * 4);
        void *drows = mem_new(m, NULL, (size_t)n * 4);
        void *dg = mem_new(m, NULL, nc * 4), *dgt = mem_new(m, NULL, nc * 4);
        void *dl = mem_new(m, NULL, 8), *dws = mem_new(m, NULL, wsb);
        float *dl2 = (float *)dl + 1;
        cr_assert_eq(
            xent_kl_forward(h, &d, dz, dt, red ? dl : NULL, drows, dws, wsb),
            XENT_STATUS_SUCCESS, "%s", name);
        cr_assert_eq(xent_kl_forward_backward(h, &d, dz, dt, NULL, dg,
                                              lt ? dgt : NULL, red ? dl2 : NULL,
                                              NULL, dws, wsb),
                     XENT_STATUS_SUCCESS, "%s", name);
        float *rows = mem_get(m, drows, (size_t)n * 4);
        float *grad = mem_get(m, dg, nc * 4), *gradt = mem_get(m, dgt, nc * 4);
        float *loss = mem_get(m, dl, 8);
        golden_check(name, "loss_rows", golden_array(gc, "loss_rows", NULL),
                     rows, n);
        golden_check(name, "grad", golden_array(gc, "grad", NULL), grad, n * c);
        if (lt)
            golden_check(name, "grad_target",
                         golden_array(gc, "grad_target", NULL), gradt, n * c);
        if (red) {
            double want = golden_scalar(gc, "loss", NAN);
            golden_check(name, "loss", &want, loss, 1);
            cr_assert_eq(memcmp(&loss[0], &loss[1], 4), 0, "%s: fused loss",
                         name);
        }
        void *bufs[] = {dz, dt, drows, dg, dgt, dl, dws};
        for (size_t q = 0; q < 7; q++)
            m->release(bufs[q]);
        free(z);
        free(t);
        free(rows);
        free(grad);
        free(gradt);
        free(loss);
    }
    golden_free(f);
}

static void golden_bce_run(xent_handle_t h, const tu_mem *m,
                           xent_variant variant)
{
    golden_file *f = load_golden("bce");
    for (int64_t k = 0; k < golden_count(f); k++) {
        const golden_case *gc = golden_at(f, k);
        const char *name = golden_name(gc);
        const int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
        const xent_reduction red = golden_reduction(gc);
        const size_t nc = (size_t)(n * c);
        float *z = xmalloc(nc * 4), *y = xmalloc(nc * 4);
        float *pw = xmalloc((size_t)c * 4), *w = xmalloc(nc * 4);
        cr_assert_eq(golden_copy_f32(gc, "logits", z, n * c), n * c);
        cr_assert_eq(golden_copy_f32(gc, "targets", y, n * c), n * c);
        xent_bce_desc d;
        xent_bce_desc_init(&d, n, c);
        d.reduction = red;
        d.variant = variant;
        void *dpw = NULL, *dw = NULL;
        if (golden_has(gc, "pos_weight")) {
            cr_assert_eq(golden_copy_f32(gc, "pos_weight", pw, c), c);
            dpw = mem_new(m, pw, (size_t)c * 4);
            d.pos_weight = dpw;
            d.n_pos_weight = c;
        }
        if (golden_has(gc, "weight")) {
            cr_assert_eq(golden_copy_f32(gc, "weight", w, n * c), n * c);
            dw = mem_new(m, w, nc * 4);
            d.weight = dw;
        }
        size_t wsb = 0;
        cr_assert_eq(xent_bce_workspace_size(h, &d, &wsb), XENT_STATUS_SUCCESS);
        void *dz = mem_new(m, z, nc * 4), *dy = mem_new(m, y, nc * 4);
        void *del = mem_new(m, NULL, nc * 4), *dg = mem_new(m, NULL, nc * 4);
        void *dl = mem_new(m, NULL, 8), *dws = mem_new(m, NULL, wsb);
        float *dl2 = (float *)dl + 1;
        cr_assert_eq(
            xent_bce_forward(h, &d, dz, dy, red ? dl : NULL, del, dws, wsb),
            XENT_STATUS_SUCCESS, "%s", name);
        cr_assert_eq(xent_bce_forward_backward(h, &d, dz, dy, NULL, dg,
                                               red ? dl2 : NULL, NULL, dws,
                                               wsb),
                     XENT_STATUS_SUCCESS, "%s", name);
        float *el = mem_get(m, del, nc * 4), *grad = mem_get(m, dg, nc * 4);
        float *loss = mem_get(m, dl, 8);
        /* torch cancels where the true loss is tiny (see golden.h): the
         * tolerance's max|ref| term absorbs it */
        golden_check(name, "loss_elems", golden_array(gc, "loss_elems", NULL),
                     el, n * c);
        golden_check(name, "grad", golden_array(gc, "grad", NULL), grad, n * c);
        if (red) {
            double want = golden_scalar(gc, "loss", NAN);
            golden_check(name, "loss", &want, loss, 1);
            cr_assert_eq(memcmp(&loss[0], &loss[1], 4), 0, "%s: fused loss",
                         name);
        }
        void *bufs[] = {dz, dy, del, dg, dl, dws, dpw, dw};
        for (size_t q = 0; q < 8; q++)
            if (bufs[q])
                m->release(bufs[q]);
        free(z);
        free(y);
        free(pw);
        free(w);
        free(el);
        free(grad);
        free(loss);
    }
    golden_free(f);
}

/* ---- the seed's worked examples, on a backend ------------------------------
 */

/* H(softmax(log p)) = H(p) through the API. */
static double api_entropy(xent_handle_t h, const tu_mem *m, const double *p,
                          int64_t c)
{
    float *z = xmalloc((size_t)c * 4);
    for (int64_t j = 0; j < c; j++)
        z[j] = (float)log(p[j]);
    xent_entropy_desc d;
    xent_entropy_desc_init(&d, 1, c);
    d.reduction = XENT_REDUCTION_NONE;
    void *dz = mem_new(m, z, (size_t)c * 4), *dr = mem_new(m, NULL, 4);
    cr_assert_eq(xent_entropy_forward(h, &d, dz, NULL, dr, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float r = NAN;
    m->sync();
    m->download(&r, dr, 4);
    m->release(dz);
    m->release(dr);
    free(z);
    return r;
}

/* KL(q || p) with p given as logits log p, q as probabilities. */
static double api_kl(xent_handle_t h, const tu_mem *m, const double *q,
                     const double *p, int64_t c)
{
    float *z = xmalloc((size_t)c * 4), *qf = xmalloc((size_t)c * 4);
    for (int64_t j = 0; j < c; j++) {
        z[j] = (float)log(p[j]);
        qf[j] = (float)q[j];
    }
    xent_kl_desc d;
    xent_kl_desc_init(&d, 1, c);
    d.reduction = XENT_REDUCTION_NONE;
    void *dz = mem_new(m, z, (size_t)c * 4),
         *dq = mem_new(m, qf, (size_t)c * 4);
    void *dr = mem_new(m, NULL, 4);
    cr_assert_eq(xent_kl_forward(h, &d, dz, dq, NULL, dr, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float r = NAN;
    m->sync();
    m->download(&r, dr, 4);
    m->release(dz);
    m->release(dq);
    m->release(dr);
    free(z);
    free(qf);
    return r;
}

/* The seed rounds to 4 decimals. */
#define SEED_TOL 5.01e-5

static void seed_examples(xent_handle_t h, const tu_mem *m)
{
    /* -log 0.7 and -log 0.2: KL(one-hot || p) = -log p_y (H(one-hot) = 0),
     * and the eval pass's NLL */
    const double p3[3] = {0.7, 0.2, 0.1};
    const double y0[3] = {1, 0, 0}, y1[3] = {0, 1, 0};
    cr_expect(fabs(api_kl(h, m, y0, p3, 3) - 0.3567) <= SEED_TOL, "-log 0.7");
    cr_expect(fabs(api_kl(h, m, y1, p3, 3) - 1.6094) <= SEED_TOL, "-log 0.2");
    float z3[6];
    for (int j = 0; j < 3; j++)
        z3[j] = z3[3 + j] = (float)log(p3[j]);
    int64_t yy[2] = {0, 1};
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, 2, 3);
    void *dz = mem_new(m, z3, sizeof z3), *dy = mem_new(m, yy, sizeof yy);
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    out.d_loss = mem_new(m, NULL, 8);
    out.d_argmax = mem_new(m, NULL, 16);
    void *dacc = mem_new(m, NULL, sizeof(xent_eval_accum));
    cr_assert_eq(xent_eval_accum_reset(h, dacc), XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_ce_eval(h, &cd, dz, dy, 1, &out, dacc),
                 XENT_STATUS_SUCCESS);
    float *nll = mem_get(m, out.d_loss, 8);
    int64_t *am = mem_get(m, out.d_argmax, 16);
    xent_eval_accum acc;
    m->download(&acc, dacc, sizeof acc);
    cr_expect(fabs(nll[0] - 0.3567) <= SEED_TOL, "eval -log 0.7: %g",
              (double)nll[0]);
    cr_expect(fabs(nll[1] - 1.6094) <= SEED_TOL, "eval -log 0.2: %g",
              (double)nll[1]);
    cr_expect(am[0] == 0 && am[1] == 0);
    xent_eval_summary s;
    cr_assert_eq(xent_eval_summarize(&acc, &s), XENT_STATUS_SUCCESS);
    cr_expect_eq(s.tokens, 2);
    cr_expect(fabs(s.mean_nll -
                   (0.35667494393873245 + 1.6094379124341003) / 2) <= 1e-6,
              "mean NLL %.9g", s.mean_nll);
    cr_expect(s.accuracy == 0.5, "accuracy %g", s.accuracy);
    void *bufs[] = {dz, dy, out.d_loss, out.d_argmax, dacc};
    for (size_t q = 0; q < 5; q++)
        m->release(bufs[q]);
    free(nll);
    free(am);
    /* entropies */
    const double b2[2] = {0.2, 0.8}, u2[2] = {0.5, 0.5};
    cr_expect(fabs(api_entropy(h, m, b2, 2) - 0.5004) <= SEED_TOL,
              "H(0.2, 0.8)");
    cr_expect(fabs(api_entropy(h, m, u2, 2) - 0.6931) <= SEED_TOL, "log 2");
    double u100[100];
    for (int j = 0; j < 100; j++)
        u100[j] = 0.01;
    cr_expect(fabs(api_entropy(h, m, u100, 100) - 4.6052) <= SEED_TOL,
              "log 100");
    const double q[3] = {0.8, 0.1, 0.1}, p[3] = {0.2, 0.2, 0.6};
    const double hq = api_entropy(h, m, q, 3);
    cr_expect(fabs(hq - 0.6390) <= SEED_TOL, "H(.8,.1,.1) = %.6f", hq);
    /* cross-entropy H_p(q) = KL(q || p) + H(q); the seed's 1.4990 is a
     * rounding slip for 1.4996 */
    const double hpq = api_kl(h, m, q, p, 3) + hq;
    cr_expect(fabs(hpq - 1.4996) <= SEED_TOL, "H_p(q) = %.6f", hpq);
}

/* ---- Gibbs' inequality and friends, on a backend ---------------------------
 */

/* H_p(q) >= H(q) and KL(q || p) = H_p(q) - H(q) >= 0 for random q, p
 * (H(q): entropy of the logits log q; H_p(q): cross-entropy with
 * probability targets; KL: the KL op). */
static void gibbs_check(xent_handle_t h, const tu_mem *m, uint64_t seed,
                        int64_t c, xent_variant variant)
{
    tu_rng r;
    tu_rng_seed(&r, seed * 7919 + (uint64_t)c);
    float *q = xmalloc((size_t)c * 4), *lq = xmalloc((size_t)c * 4);
    float *pq = xmalloc((size_t)c * 4), *zp = xmalloc((size_t)c * 4);
    random_dist(&r, c, q, lq);
    random_dist(&r, c, pq, zp);
    void *dq = mem_new(m, q, (size_t)c * 4),
         *dlq = mem_new(m, lq, (size_t)c * 4);
    void *dzp = mem_new(m, zp, (size_t)c * 4), *dout = mem_new(m, NULL, 12);
    float *o = dout;
    xent_entropy_desc ed;
    xent_entropy_desc_init(&ed, 1, c);
    ed.reduction = XENT_REDUCTION_NONE;
    ed.variant = variant;
    cr_assert_eq(xent_entropy_forward(h, &ed, dlq, NULL, o, NULL, 0),
                 XENT_STATUS_SUCCESS);
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, 1, c);
    cd.target_type = XENT_TARGET_PROBS_F32;
    cd.reduction = XENT_REDUCTION_NONE;
    cd.variant = variant;
    cr_assert_eq(xent_ce_forward(h, &cd, dzp, dq, NULL, o + 1, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, 1, c);
    kd.reduction = XENT_REDUCTION_NONE;
    kd.variant = variant;
    cr_assert_eq(xent_kl_forward(h, &kd, dzp, dq, NULL, o + 2, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float *v = mem_get(m, dout, 12);
    const double hq = v[0], hpq = v[1], kl = v[2];
    /* fp32 rounding of each quantity: 1e-5 of the larger of them */
    const double tol = FP32_TOL * (1.0 + fabs(hpq));
    cr_expect(hpq >= hq - tol, "C=%lld seed=%llu: H_p(q) %.9g < H(q) %.9g",
              (long long)c, (unsigned long long)seed, hpq, hq);
    cr_expect(kl >= -tol, "C=%lld seed=%llu: KL %.9g < 0", (long long)c,
              (unsigned long long)seed, kl);
    cr_expect(fabs(kl - (hpq - hq)) <= 2 * tol,
              "C=%lld seed=%llu: KL %.9g vs H_p(q) - H(q) = %.9g", (long long)c,
              (unsigned long long)seed, kl, hpq - hq);
    void *bufs[] = {dq, dlq, dzp, dout};
    for (size_t k = 0; k < 4; k++)
        m->release(bufs[k]);
    free(v);
    free(q);
    free(lq);
    free(pq);
    free(zp);
}

/* KL(q || q) = 0: exactly with teacher logits equal to the student's (and
 * both gradients exactly 0), and to fp32 accuracy with q as probabilities
 * and the student's logits log q. */
static void kl_self_check(xent_handle_t h, const tu_mem *m, uint64_t seed,
                          int64_t c, xent_variant variant)
{
    tu_rng r;
    tu_rng_seed(&r, seed * 31 + (uint64_t)c);
    const int64_t n = 3;
    const size_t nc = (size_t)(n * c);
    float *z = xmalloc(nc * 4);
    tu_fill_logits(&r, n, c, c, z, NAN);
    void *dz = mem_new(m, z, nc * 4), *dg = mem_new(m, NULL, nc * 4);
    void *dgt = mem_new(m, NULL, nc * 4), *drows = mem_new(m, NULL, 12);
    xent_kl_desc d;
    xent_kl_desc_init(&d, n, c);
    d.reduction = XENT_REDUCTION_NONE;
    d.target_kind = XENT_KL_TARGET_LOGITS;
    d.variant = variant;
    cr_assert_eq(xent_kl_forward_backward(h, &d, dz, dz, NULL, dg, dgt, NULL,
                                          drows, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float *rows = mem_get(m, drows, 12), *g = mem_get(m, dg, nc * 4);
    float *gt = mem_get(m, dgt, nc * 4);
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(rows[i], 0.0f, "C=%lld: KL(q||q) row %lld = %g",
                     (long long)c, (long long)i, (double)rows[i]);
    int64_t nz = 0;
    for (size_t k = 0; k < nc; k++)
        nz += g[k] != 0.0f || gt[k] != 0.0f;
    cr_expect_eq(nz, 0, "C=%lld: %lld nonzero gradient elements", (long long)c,
                 (long long)nz);
    /* probabilities */
    float *q = xmalloc((size_t)c * 4), *lq = xmalloc((size_t)c * 4);
    random_dist(&r, c, q, lq);
    void *dq = mem_new(m, q, (size_t)c * 4),
         *dlq = mem_new(m, lq, (size_t)c * 4);
    xent_kl_desc pd;
    xent_kl_desc_init(&pd, 1, c);
    pd.reduction = XENT_REDUCTION_NONE;
    pd.variant = variant;
    cr_assert_eq(xent_kl_forward(h, &pd, dlq, dq, NULL, drows, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float kl = NAN;
    m->sync();
    m->download(&kl, drows, 4);
    /* the terms are ~ q (log q - (z - m)) ~ log C each: fp32 accuracy */
    const double tol = FP32_TOL * (1.0 + log((double)c));
    cr_expect(fabs((double)kl) <= tol, "C=%lld: KL(q||q) = %.9g (tol %.3g)",
              (long long)c, (double)kl, tol);
    void *bufs[] = {dz, dg, dgt, drows, dq, dlq};
    for (size_t k = 0; k < 6; k++)
        m->release(bufs[k]);
    free(rows);
    free(g);
    free(gt);
    free(z);
    free(q);
    free(lq);
}

/* H(uniform over C) = log C for any constant logit; H(softmax(z)) in
 * [0, log C] for random z; both within fp32 accuracy. */
static void entropy_bounds_check(xent_handle_t h, const tu_mem *m,
                                 uint64_t seed, int64_t c, float konst,
                                 xent_variant variant)
{
    const int64_t n = 2;
    float *z = xmalloc((size_t)(n * c) * 4);
    for (int64_t j = 0; j < c; j++)
        z[j] = konst;
    tu_rng r;
    tu_rng_seed(&r, seed);
    tu_fill_logits(&r, 1, c, c, z + c, NAN);
    void *dz = mem_new(m, z, (size_t)(n * c) * 4), *dr = mem_new(m, NULL, 8);
    xent_entropy_desc d;
    xent_entropy_desc_init(&d, n, c);
    d.reduction = XENT_REDUCTION_NONE;
    d.variant = variant;
    cr_assert_eq(xent_entropy_forward(h, &d, dz, NULL, dr, NULL, 0),
                 XENT_STATUS_SUCCESS);
    float *rows = mem_get(m, dr, 8);
    const double logc = log((double)c);
    cr_expect(fabs((double)rows[0] - logc) <= FP32_TOL * (1.0 + logc),
              "H(uniform over %lld, z = %g) = %.9g, log C = %.9g", (long long)c,
              (double)konst, (double)rows[0], logc);
    cr_expect(rows[1] <= logc + FP32_TOL * (1.0 + logc) && rows[1] >= 0.0f,
              "C=%lld: H = %.9g outside [0, log C]", (long long)c,
              (double)rows[1]);
    m->release(dz);
    m->release(dr);
    free(rows);
    free(z);
}

#ifndef XENT_INFO_SHARED_ONLY

/* ====================================================================
 * CPU tests
 * ================================================================== */

/* ---- host memory as a tu_mem ------------------------------------------ */

static void *cpu_alloc(size_t bytes)
{
    return malloc(bytes ? bytes : 1);
}
static void cpu_release(void *p)
{
    free(p);
}
static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}
static void cpu_sync(void) {}

static const tu_mem cpu_mem = {cpu_alloc, cpu_release, cpu_copy, cpu_copy,
                               cpu_sync};

static xent_handle_t make_cpu(int n_threads)
{
    xent_handle_t h = NULL;
    xent_status st = xent_create_cpu(&h, n_threads);
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "xent_create_cpu: %s",
                 xent_status_string(st));
    return h;
}

/* ---- golden parity with PyTorch ------------------------------------------ */

Test(info_golden, entropy_matches_torch)
{
    xent_handle_t h = make_cpu(2);
    golden_entropy_run(h, &cpu_mem, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

Test(info_golden, kl_matches_torch)
{
    xent_handle_t h = make_cpu(2);
    golden_kl_run(h, &cpu_mem, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

Test(info_golden, bce_matches_torch)
{
    xent_handle_t h = make_cpu(2);
    golden_bce_run(h, &cpu_mem, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

/* ---- the seed's worked examples -------------------------------------------
 */

Test(info_seed, worked_examples)
{
    xent_handle_t h = make_cpu(1);
    seed_examples(h, &cpu_mem);
    /* H_p(q) also through cross-entropy with probability targets */
    const double q[3] = {0.8, 0.1, 0.1}, p[3] = {0.2, 0.2, 0.6};
    float zp[3], qf[3], ce = NAN;
    for (int j = 0; j < 3; j++) {
        zp[j] = (float)log(p[j]);
        qf[j] = (float)q[j];
    }
    xent_ce_desc pd;
    xent_ce_desc_init(&pd, 1, 3);
    pd.target_type = XENT_TARGET_PROBS_F32;
    pd.reduction = XENT_REDUCTION_NONE;
    cr_assert_eq(xent_ce_forward(h, &pd, zp, qf, NULL, &ce, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_expect(fabs(ce - 1.4996) <= SEED_TOL, "H_p(q) via CE = %.6f",
              (double)ce);
    xent_destroy(h);
}

/* ---- Gibbs' inequality and friends (Theories) ------------------------------
 */

TheoryDataPoints(info_theory, gibbs) = {
    DataPoints(uint64_t, 1, 2, 3, 4, 5, 6, 7, 8),
    DataPoints(int64_t, 1, 2, 3, 10, 257, 4000),
};

Theory((uint64_t seed, int64_t c), info_theory, gibbs)
{
    xent_handle_t h = make_cpu(1);
    gibbs_check(h, &cpu_mem, seed, c, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

TheoryDataPoints(info_theory, kl_self_is_zero) = {
    DataPoints(uint64_t, 11, 12, 13, 14),
    DataPoints(int64_t, 1, 2, 7, 100, 3001),
};

Theory((uint64_t seed, int64_t c), info_theory, kl_self_is_zero)
{
    xent_handle_t h = make_cpu(1);
    kl_self_check(h, &cpu_mem, seed, c, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

TheoryDataPoints(info_theory, entropy_bounds) = {
    DataPoints(uint64_t, 21, 22, 23),
    DataPoints(int64_t, 1, 2, 5, 64, 1000, 50257),
    DataPoints(float, 0.0f, -3.5f, 1000.0f),
};

Theory((uint64_t seed, int64_t c, float konst), info_theory, entropy_bounds)
{
    xent_handle_t h = make_cpu(1);
    entropy_bounds_check(h, &cpu_mem, seed, c, konst, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

/* ---- the GPU's group merges, emulated ---------------------------------------
 * The CPU backend folds a row in one thread and never merges states; the
 * kernels split a row over a group (32 lanes, or a 512-thread block) and
 * merge with a butterfly in which both partners compute merge(lower,
 * upper), then (block) warp 0 merges the per-warp states with identity
 * states in lanes 16..31. This emulates exactly that with the bridge's
 * functions: lane r folds columns r, r + S, ... in chunks of NCH, then the
 * merges run in the kernel's order. Every lane must end with bitwise the
 * same state, and the result must match the reference. */

#define EMU_MAX_S 512
/* fp32 has no relative accuracy below its normal range: an entropy of
 * 1e-49 is 0 in fp32 */
#define FP32_FLOOR 0x1p-126

typedef enum emu_kind { EMU_ENT, EMU_KLP, EMU_KLT, EMU_EVAL } emu_kind;

typedef union emu_acc {
    xent_ent_acc ent;
    xent_klp_acc klp;
    xent_klt_acc klt;
    xent_eval_acc ev;
} emu_acc;

static void emu_merge(emu_kind k, emu_acc *a, const emu_acc *b)
{
    switch (k) {
    case EMU_ENT: xent_ent_merge(&a->ent, b->ent); break;
    case EMU_KLP: xent_klp_merge(&a->klp, b->klp); break;
    case EMU_KLT: xent_klt_merge(&a->klt, b->klt); break;
    case EMU_EVAL: xent_eval_merge(&a->ev, b->ev); break;
    }
}

static void emu_fold(emu_kind k, emu_acc *a)
{
    switch (k) {
    case EMU_ENT: xent_ent_fold(&a->ent); break;
    case EMU_KLP: xent_klp_fold(&a->klp); break;
    case EMU_KLT: xent_klt_fold(&a->klt); break;
    case EMU_EVAL: xent_eval_fold(&a->ev); break;
    }
}

/* A shuffle carries the partner's state (its values, and the eval
 * state's y: cuda/info.cu's xent_wire words); the compensations are zero
 * once folded. */
static emu_acc emu_shfl(emu_kind k, const emu_acc *mine, const emu_acc *other)
{
    (void)k;
    (void)mine;
    return *other;
}

/* One warp's butterfly over lanes[0, 32). */
static void emu_warp(emu_kind k, emu_acc *lanes)
{
    emu_acc next[32];
    for (int l = 0; l < 32; l++)
        emu_fold(k, &lanes[l]);
    for (int s = 1; s < 32; s <<= 1) {
        for (int l = 0; l < 32; l++) {
            emu_acc o = emu_shfl(k, &lanes[l], &lanes[l ^ s]);
            emu_acc a = lanes[l];
            if (l & s) {
                emu_acc t = a;
                a = o;
                o = t;
            }
            emu_merge(k, &a, &o);
            next[l] = a;
        }
        memcpy(lanes, next, sizeof next);
    }
}

/* The group merge of S (32 or 512) lane states; every lane of every warp
 * must agree. Returns the merged state. */
static emu_acc emu_group(emu_kind k, emu_acc *lanes, int S, int *agree,
                         const emu_acc *identity)
{
    *agree = 1;
    for (int w = 0; w < S / 32; w++) {
        emu_warp(k, lanes + 32 * w);
        for (int l = 1; l < 32; l++)
            *agree &= memcmp(&lanes[32 * w], &lanes[32 * w + l],
                             sizeof lanes[0]) == 0;
    }
    if (S == 32)
        return lanes[0];
    emu_acc w0[32];
    for (int l = 0; l < 32; l++)
        w0[l] = l < S / 32 ? lanes[32 * l] : *identity;
    emu_warp(k, w0);
    for (int l = 1; l < 32; l++)
        *agree &= memcmp(&w0[0], &w0[l], sizeof w0[0]) == 0;
    return w0[0];
}

/* One row through the emulated kernel; checks against the reference.
 * Rows: random peaked logits with forced ties at the maximum. */
static int emu_row(emu_kind k, int S, int64_t c, uint64_t seed)
{
    const int nch = k == EMU_KLP || k == EMU_KLT ? 4 : XENT_INFO_CHUNK;
    tu_rng r;
    tu_rng_seed(&r, seed);
    float *z = xmalloc((size_t)c * 4), *t = xmalloc((size_t)c * 4);
    float *q = xmalloc((size_t)c * 4);
    tu_fill_logits(&r, 1, c, c, z, NAN);
    tu_fill_logits(&r, 1, c, c, t, NAN);
    tu_fill_probs(&r, 1, c, c, q, NAN);
    if (seed % 2 && c > 2) { /* ties with the max in other lanes */
        int64_t am = 0;
        for (int64_t j = 1; j < c; j++)
            if (z[j] > z[am])
                am = j;
        z[(am + 1) % c] = z[am];
        z[(am + 33) % c] = z[am];
        t[(am + 1) % c] = t[am] = z[am];
    }
    const int64_t y = tu_below(&r, c);
    if (seed % 3 == 0)
        z[y] = -INFINITY; /* also a -inf column (the target's, for eval) */
    /* eval: label smoothing (0.1, unit class weights) on every other seed,
     * so the a and v sums go through the merges too */
    const int smooth = k == EMU_EVAL && seed % 2 == 0;
    const float alpha = smooth ? 0.1f : 0.0f;
    emu_acc *lanes = xmalloc(EMU_MAX_S * sizeof *lanes);
    emu_acc identity;
    for (int l = 0; l < S; l++) {
        switch (k) {
        case EMU_ENT: xent_ent_init(&lanes[l].ent); break;
        case EMU_KLP: xent_klp_init(&lanes[l].klp); break;
        case EMU_KLT: xent_klt_init(&lanes[l].klt); break;
        case EMU_EVAL: xent_eval_init(&lanes[l].ev, (int32_t)y); break;
        }
        for (int64_t j = l; j < c; j += (int64_t)nch * S) {
            float zc[8], tc[8], qc[8], vc[8] = {0};
            for (int u = 0; u < nch; u++) {
                const int64_t col = j + (int64_t)u * S;
                zc[u] = col < c ? z[col] : -INFINITY;
                tc[u] = col < c ? t[col] : -INFINITY;
                qc[u] = col < c ? q[col] : 0.0f;
                vc[u] = col < c && smooth ? 1.0f : 0.0f;
            }
            switch (k) {
            case EMU_ENT: xent_ent_add_chunk(&lanes[l].ent, zc, nch); break;
            case EMU_KLP: xent_klp_add_chunk(&lanes[l].klp, zc, qc, nch); break;
            case EMU_KLT: xent_klt_add_chunk(&lanes[l].klt, zc, tc, nch); break;
            case EMU_EVAL:
                xent_eval_add_chunk(&lanes[l].ev, zc, vc, nch, j, S,
                                    xent_eval_target_lane(y, j, S, nch), z[y],
                                    smooth);
                break;
            }
        }
    }
    switch (k) {
    case EMU_ENT: xent_ent_init(&identity.ent); break;
    case EMU_KLP: xent_klp_init(&identity.klp); break;
    case EMU_KLT: xent_klt_init(&identity.klt); break;
    case EMU_EVAL: xent_eval_init(&identity.ev, INT32_MIN); break;
    }
    int agree = 0;
    emu_acc a = emu_group(k, lanes, S, &agree, &identity);
    char desc[128];
    snprintf(desc, sizeof desc, "[emulated %s S=%d C=%lld seed=%llu]",
             k == EMU_ENT   ? "entropy"
             : k == EMU_KLP ? "kl_probs"
             : k == EMU_KLT ? "kl_logits"
                            : "eval",
             S, (long long)c, (unsigned long long)seed);
    cr_expect(agree, "%s: the lanes disagree", desc);
    double *zd = xmalloc((size_t)c * 8), *td = xmalloc((size_t)c * 8);
    double *qd = xmalloc((size_t)c * 8);
    tu_f32_to_f64(z, zd, c);
    tu_f32_to_f64(t, td, c);
    tu_f32_to_f64(q, qd, c);
    int ok = agree;
    double want, got;
    if (k == EMU_ENT) {
        want = ref_softmax_entropy(c, zd, NULL);
        got = xent_ent_finish(a.ent).h;
        ok &= check_close_terms(desc, "entropy", &want, &got, 1, 0.0,
                                FP32_FLOOR, 0.0);
    } else if (k == EMU_KLP || k == EMU_KLT) {
        /* KL = sum q (log q - log p) cancels O(|log q| + |log p|) terms */
        double *pr = xmalloc((size_t)c * 8), *qr = xmalloc((size_t)c * 8);
        ref_softmax(c, zd, pr);
        if (k == EMU_KLT)
            ref_softmax(c, td, qr);
        else
            memcpy(qr, qd, (size_t)c * 8);
        double terms = 0.0;
        for (int64_t j = 0; j < c; j++)
            if (qr[j] > 0.0)
                terms += qr[j] * (fabs(log(qr[j])) + fabs(log(pr[j])));
        if (k == EMU_KLP) {
            ref_kl_batch(1, c, zd, c, qd, c, NULL, 0, 0, &want, NULL, NULL);
            got = xent_klp_finish(a.klp, 1e-3f).kl;
        } else {
            ref_kl_batch(1, c, zd, c, NULL, 0, td, c, 0, &want, NULL, NULL);
            got = xent_klt_finish(a.klt).kl;
        }
        ok &= check_close_terms(desc, "KL", &want, &got, 1, 0.0, 0.0, terms);
        free(pr);
        free(qr);
    } else {
        ref_ce_opts o;
        ref_ce_opts_default(&o);
        o.reduction = 0;
        o.label_smoothing = alpha;
        double lse;
        ref_ce_index(1, c, zd, c, &y, &o, &want, &lse, NULL);
        xent_eval_row er = xent_eval_finish(a.ev, 1, y, z[y], 1.0f, alpha,
                                            1.0f / (float)c, 0.0f);
        got = er.loss;
        ok &= check_close(desc, "loss", &want, &got, 1, 0.0);
        got = er.lse;
        ok &= check_close(desc, "lse", &lse, &got, 1, 0.0);
        want = ref_softmax_entropy(c, zd, NULL);
        got = er.entropy;
        ok &= check_close_terms(desc, "entropy", &want, &got, 1, 0.0,
                                FP32_FLOOR, 0.0);
        int64_t am = 0, rank = 0;
        int all_neg_inf = 1;
        for (int64_t j = 0; j < c; j++) {
            if (z[j] > z[am])
                am = j;
            rank += z[j] > z[y];
            all_neg_inf &= z[j] == -INFINITY;
        }
        /* no meaningful rank: a row of -inf only, or a NaN target logit */
        if (all_neg_inf || isnan(z[y]))
            rank = -1;
        if (er.argmax != am || er.rank != rank) {
            cr_expect(0, "%s: argmax %lld (%lld), rank %lld (%lld)", desc,
                      (long long)er.argmax, (long long)am, (long long)er.rank,
                      (long long)rank);
            ok = 0;
        }
    }
    free(z);
    free(t);
    free(q);
    free(zd);
    free(td);
    free(qd);
    free(lanes);
    return ok;
}

/* ---- every op against the reference ----------------------------------------
 */

Test(info_cpu, ops_match_reference)
{
    size_t n = 0;
    info_case *t = info_table(&n, 0);
    xent_handle_t h = make_cpu(0);
    int failed = 0;
    for (size_t k = 0; k < n; k++)
        failed += !info_run(h, &cpu_mem, &t[k]);
    cr_expect_eq(failed, 0, "%d of %zu cases failed", failed, n);
    xent_destroy(h);
    free(t);
}

/* Bitwise: run to run, and 1 thread vs 3 threads (rows split differently). */
Test(info_cpu, deterministic_and_thread_count_invariant)
{
    size_t n = 0;
    info_case *t = info_table(&n, 0);
    xent_handle_t h1 = make_cpu(1), h3 = make_cpu(3);
    int failed = 0, ran = 0;
    for (size_t k = 0; k < n; k += 3) {
        info_case c = t[k];
        c.n *= 16; /* enough rows for several threads */
        c.in_place = 0;
        failed += !info_bitwise(h1, h3, &cpu_mem, &c);
        ran++;
    }
    cr_expect_eq(failed, 0, "%d of %d cases differ", failed, ran);
    xent_destroy(h1);
    xent_destroy(h3);
    free(t);
}

/* In place and a separate gradient buffer give the same bits. */
Test(info_cpu, in_place_matches_separate)
{
    xent_handle_t h = make_cpu(1);
    for (int op = 0; op < 4; op++)
        for (int dt = 0; dt < 3; dt++) {
            info_case k;
            memset(&k, 0, sizeof k);
            k.op = op;
            k.n = 6;
            k.c = 45;
            k.pad = 3;
            k.dtype = (xent_dtype)dt;
            k.red = XENT_REDUCTION_SUM;
            k.grad = 1;
            k.grad_t = op == OP_KLT;
            k.seed = 900 + (uint64_t)(op * 3 + dt);
            info_inputs in;
            info_inputs_make(&k, &in);
            info_out a, b;
            info_exec(h, &cpu_mem, &k, &in, &a);
            k.in_place = 1;
            info_exec(h, &cpu_mem, &k, &in, &b);
            char desc[256];
            info_describe(&k, desc, sizeof desc);
            /* the padding differs by design (poison vs the input's NaN):
             * compare the used columns */
            const size_t gel = dt_size(k.dtype);
            int same = a.st == b.st && memcmp(&a.loss, &b.loss, 4) == 0 &&
                       memcmp(a.rows, b.rows, a.rows_bytes) == 0;
            for (int64_t i = 0; i < in.n; i++) {
                same &= memcmp(a.grad + (size_t)(i * in.ld) * gel,
                               b.grad + (size_t)(i * in.ld) * gel,
                               (size_t)in.c * gel) == 0;
                if (k.grad_t)
                    same &= memcmp(a.grad_t + (size_t)(i * in.tld) * gel,
                                   b.grad_t + (size_t)(i * in.tld) * gel,
                                   (size_t)in.c * gel) == 0;
            }
            cr_expect(same, "%s: in place differs", desc);
            info_out_free(&a);
            info_out_free(&b);
            info_inputs_free(&in);
        }
    xent_destroy(h);
}

/* Central differences of the fp32 API (SUM of rows) against the API's
 * gradient: h = 1e-2 on logits of size ~1, so the truncation error
 * (~h^2 |f'''|) and the fp32 rounding of the loss (~1e-7 |L| / h) are
 * both below 2e-3 (1 + |g|). */
Test(info_cpu, finite_differences_through_the_api)
{
    xent_handle_t h = make_cpu(1);
    const int64_t n = 2, c = 5;
    const float step = 1e-2f;
    for (int op = 0; op < 4; op++) {
        tu_rng r;
        tu_rng_seed(&r, 4242 + (uint64_t)op);
        float z[10], t[10], g[10], gt[10];
        for (int k = 0; k < 10; k++) {
            z[k] = (float)tu_normal(&r);
            t[k] = op == OP_KLP || op == OP_BCE ? 0.0f : (float)tu_normal(&r);
        }
        if (op == OP_KLP)
            for (int i = 0; i < 2; i++) {
                float lq[5];
                random_dist(&r, c, t + i * c, lq);
            }
        if (op == OP_BCE)
            for (int k = 0; k < 10; k++)
                t[k] = (float)tu_uniform(&r);
        /* loss(z, t) as double, through the API (SUM) */
        xent_entropy_desc ed;
        xent_entropy_desc_init(&ed, n, c);
        ed.reduction = XENT_REDUCTION_SUM;
        xent_kl_desc kd;
        xent_kl_desc_init(&kd, n, c);
        kd.reduction = XENT_REDUCTION_SUM;
        kd.target_kind =
            op == OP_KLT ? XENT_KL_TARGET_LOGITS : XENT_KL_TARGET_PROBS;
        kd.prob_tol = INFINITY; /* perturbed rows stay valid */
        xent_bce_desc bd;
        xent_bce_desc_init(&bd, n, c);
        bd.reduction = XENT_REDUCTION_SUM;
        unsigned char ws[4096];
        xent_status st;
        if (op == OP_ENT)
            st = xent_entropy_forward_backward(h, &ed, z, NULL, g, NULL, NULL,
                                               ws, sizeof ws);
        else if (op == OP_BCE)
            st = xent_bce_forward_backward(h, &bd, z, t, NULL, g, NULL, NULL,
                                           ws, sizeof ws);
        else
            st = xent_kl_forward_backward(h, &kd, z, t, NULL, g,
                                          op == OP_KLT ? gt : NULL, NULL, NULL,
                                          ws, sizeof ws);
        cr_assert_eq(st, XENT_STATUS_SUCCESS, "%s", op_name[op]);
        for (int which = 0; which < (op == OP_KLT ? 2 : 1); which++)
            for (int k = 0; k < 10; k++) {
                float *x = which ? t : z;
                const float keep = x[k];
                double f[2];
                for (int s = 0; s < 2; s++) {
                    x[k] = keep + (s ? step : -step);
                    float L = NAN;
                    if (op == OP_ENT)
                        st = xent_entropy_forward(h, &ed, z, &L, NULL, ws,
                                                  sizeof ws);
                    else if (op == OP_BCE)
                        st = xent_bce_forward(h, &bd, z, t, &L, NULL, ws,
                                              sizeof ws);
                    else
                        st = xent_kl_forward(h, &kd, z, t, &L, NULL, ws,
                                             sizeof ws);
                    cr_assert_eq(st, XENT_STATUS_SUCCESS);
                    f[s] = (double)L;
                }
                x[k] = keep;
                const double fd = (f[1] - f[0]) / (2.0 * (double)step);
                const double an = (double)(which ? gt[k] : g[k]);
                cr_expect(fabs(fd - an) <= 2e-3 * (1.0 + fabs(an)),
                          "%s: d/d%s[%d]: central difference %.6g, API %.6g",
                          op_name[op], which ? "t" : "z", k, fd, an);
            }
    }
    xent_destroy(h);
}

/* The kernels' group merges (emulated on the host, see emu_row): every
 * state, a warp (32) and a block (512) per row, C below, at and above the
 * group size, ties at the maximum across lanes, -inf columns. */
Test(info_cpu, gpu_group_merges_emulated)
{
    static const int64_t cs[] = {1, 2, 5, 31, 32, 33, 100, 511, 513, 4097};
    static const int sizes[] = {32, 512};
    int failed = 0, cases = 0;
    for (int k = 0; k < 4; k++)
        for (int s = 0; s < 2; s++)
            for (size_t q = 0; q < sizeof cs / sizeof cs[0]; q++)
                for (uint64_t seed = 1; seed <= 6; seed++) {
                    cases++;
                    failed +=
                        !emu_row((emu_kind)k, sizes[s], cs[q], seed * 101 + q);
                }
    cr_expect_eq(failed, 0, "%d of %d emulated rows failed", failed, cases);
}

/* ---- xent_ce_eval ----------------------------------------------------------
 */

Test(info_cpu, eval_matches_reference)
{
    size_t n = 0;
    eval_case *t = eval_table(&n, 0);
    xent_handle_t h = make_cpu(0);
    int failed = 0;
    for (size_t k = 0; k < n; k++)
        failed += !eval_run(h, &cpu_mem, &t[k], 1);
    cr_expect_eq(failed, 0, "%d of %zu cases failed", failed, n);
    xent_destroy(h);
    free(t);
}

Test(info_cpu, eval_accumulator_is_batch_invariant)
{
    xent_handle_t h = make_cpu(0);
    for (int dt = 0; dt < 3; dt++)
        cr_expect(eval_batch_invariance(h, &cpu_mem, (xent_dtype)dt,
                                        XENT_VARIANT_AUTO));
    xent_destroy(h);
}

Test(info_cpu, eval_accumulator_is_thread_count_invariant)
{
    xent_handle_t h1 = make_cpu(1), h4 = make_cpu(4);
    eval_case k;
    memset(&k, 0, sizeof k);
    k.n = 600;
    k.c = 211;
    k.dtype = XENT_DTYPE_BF16;
    k.ignore_rows = 1;
    k.weights = 1;
    k.smoothing = 0.05f;
    k.z_loss = 1e-4f;
    k.top_k = 3;
    k.seed = 31337;
    eval_data e;
    eval_data_make(&k, &e);
    eval_out a, b;
    eval_exec(h1, &cpu_mem, &k, &e, &a);
    eval_exec(h4, &cpu_mem, &k, &e, &b);
    cr_expect_eq(memcmp(&a.acc, &b.acc, sizeof a.acc), 0);
    cr_expect_eq(memcmp(a.loss, b.loss, (size_t)k.n * 4), 0);
    cr_expect_eq(memcmp(a.ent, b.ent, (size_t)k.n * 4), 0);
    cr_expect_eq(memcmp(a.rank, b.rank, (size_t)k.n * 8), 0);
    eval_out_free(&a);
    eval_out_free(&b);
    eval_data_free(&e);
    xent_destroy(h1);
    xent_destroy(h4);
}

/* The fixed-point conversion: exact values, ties to even, the 2^62 limit,
 * negative values in two's complement, and the summary's arithmetic. */
Test(info_cpu, fixed_point_accumulator)
{
    xent_u128 x;
    cr_assert(xent_fixed32(1.0f, &x) && x == ((xent_u128)1 << 32));
    cr_assert(xent_fixed32(0.5f, &x) && x == ((xent_u128)1 << 31));
    cr_assert(xent_fixed32(0x1p-33f, &x) && x == 0);   /* tie -> even */
    cr_assert(xent_fixed32(0x1.8p-32f, &x) && x == 2); /* tie -> even */
    cr_assert(xent_fixed32(0x1.4p-32f, &x) && x == 1);
    cr_assert(xent_fixed32(0x1p-40f, &x) && x == 0);
    cr_assert(xent_fixed32(0x1p-149f, &x) && x == 0); /* subnormal */
    cr_assert(xent_fixed32(0x1.fffffep61f, &x) &&
              x == ((xent_u128)0xffffffu << (61 - 23 + 32)));
    cr_assert(!xent_fixed32(0x1p62f, &x) && x == 0);
    cr_assert(!xent_fixed32(INFINITY, &x));
    cr_assert(!xent_fixed32(NAN, &x));
    cr_assert(xent_fixed32(-2.0f, &x) &&
              x == (xent_u128)0 - ((xent_u128)2 << 32));
    /* merge and summary */
    xent_eval_accum a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.nll[0] = 0xffffffff00000000ull; /* 2^32 - 1 ... as 128-bit */
    a.tokens = 2;
    b.nll[0] = 0x0000000200000000ull; /* 2.0 */
    b.tokens = 1;
    b.top1 = 1;
    b.topk = 1;
    cr_assert_eq(xent_eval_accum_merge(&a, &b), XENT_STATUS_SUCCESS);
    cr_assert(a.nll[0] == 0x0000000100000000ull && a.nll[1] == 1ull,
              "carry into the high word");
    xent_eval_summary s;
    cr_assert_eq(xent_eval_summarize(&a, &s), XENT_STATUS_SUCCESS);
    cr_assert_eq(s.nll_sum, 4294967297.0);
    cr_assert_eq(s.tokens, 3);
    cr_assert_eq(s.accuracy, 1.0 / 3.0);
    memset(&a, 0, sizeof a);
    cr_assert_eq(xent_eval_summarize(&a, &s), XENT_STATUS_SUCCESS);
    cr_assert(isnan(s.mean_nll) && isnan(s.accuracy) && s.tokens == 0);
    cr_assert_eq(xent_eval_summarize(NULL, &s), XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_eval_accum_merge(&a, NULL), XENT_STATUS_NULL_POINTER);
}

/* Rows with a non-finite NLL are counted, not summed; the summary says
 * NaN. */
Test(info_cpu, eval_nonfinite_rows)
{
    xent_handle_t h = make_cpu(1);
    float z[6] = {0.0f, 1.0f, -INFINITY, 2.0f, NAN, 0.0f};
    int64_t y[2] = {2, 0};
    xent_ce_desc d;
    xent_ce_desc_init(&d, 2, 3);
    float loss[2];
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    out.d_loss = loss;
    xent_eval_accum acc;
    memset(&acc, 0, sizeof acc);
    cr_assert_eq(xent_ce_eval(h, &d, z, y, 5, &out, &acc), XENT_STATUS_SUCCESS);
    cr_assert(isinf(loss[0]) && loss[0] > 0, "p_y = 0: NLL +inf (%g)",
              (double)loss[0]);
    cr_assert(isnan(loss[1]));
    cr_assert_eq(acc.tokens, 2);
    cr_assert_eq(acc.nonfinite, 2);
    xent_eval_summary s;
    xent_eval_summarize(&acc, &s);
    cr_assert(isnan(s.mean_nll) && isnan(s.perplexity));
    xent_destroy(h);
}

/* ---- empty batch, upstream of the reduced value ---------------------------
 */

Test(info_cpu, empty_batch)
{
    xent_handle_t h = make_cpu(1);
    float loss = 123.0f;
    xent_entropy_desc ed;
    xent_entropy_desc_init(&ed, 0, 4);
    cr_assert_eq(xent_entropy_forward(h, &ed, NULL, &loss, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f);
    ed.flags = XENT_FLAG_EMPTY_MEAN_NAN;
    cr_assert_eq(xent_entropy_forward(h, &ed, NULL, &loss, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert(isnan(loss));
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, 0, 4);
    loss = 1.0f;
    cr_assert_eq(xent_kl_forward(h, &kd, NULL, NULL, &loss, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f);
    xent_bce_desc bd;
    xent_bce_desc_init(&bd, 0, 4);
    bd.reduction = XENT_REDUCTION_SUM;
    loss = 1.0f;
    cr_assert_eq(xent_bce_forward(h, &bd, NULL, NULL, &loss, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f);
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, 0, 4);
    xent_eval_accum acc;
    memset(&acc, 0, sizeof acc);
    cr_assert_eq(xent_ce_eval(h, &cd, NULL, NULL, 5, NULL, &acc),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(acc.tokens, 0);
    xent_destroy(h);
}

/* ---- bad inputs -------------------------------------------------------------
 */

#define BN 4
#define BC 6

typedef struct bad_fixture {
    float z[BN * BC], t[BN * BC], q[BN * BC], y[BN * BC], w[BN * BC];
    float pw[BC], grad[BN * BC], gt[BN * BC], rows[BN * BC], loss;
    unsigned char ws[4096];
} bad_fixture;

static void bad_init(bad_fixture *f)
{
    tu_rng r;
    tu_rng_seed(&r, 99);
    tu_fill_logits(&r, BN, BC, BC, f->z, NAN);
    tu_fill_logits(&r, BN, BC, BC, f->t, NAN);
    tu_fill_probs(&r, BN, BC, BC, f->q, NAN);
    tu_fill_uniform_f32(&r, BN * BC, 0.0f, 1.0f, f->y);
    tu_fill_uniform_f32(&r, BN * BC, 0.5f, 1.5f, f->w);
    tu_fill_uniform_f32(&r, BC, 0.5f, 2.0f, f->pw);
    for (int k = 0; k < BN * BC; k++)
        f->grad[k] = f->gt[k] = f->rows[k] = 777.0f;
    f->loss = 777.0f;
}

static int untouched(const bad_fixture *f)
{
    for (int k = 0; k < BN * BC; k++)
        if (f->grad[k] != 777.0f || f->gt[k] != 777.0f || f->rows[k] != 777.0f)
            return 0;
    return f->loss == 777.0f;
}

Test(info_bad, shapes_and_strides)
{
    xent_handle_t h = make_cpu(1);
    bad_fixture f;
    bad_init(&f);
    xent_entropy_desc ed;
    xent_kl_desc kd;
    xent_bce_desc bd;
    const size_t W = sizeof f.ws;
#define ENT_FWD() xent_entropy_forward(h, &ed, f.z, &f.loss, f.rows, f.ws, W)
#define KL_FWD()  xent_kl_forward(h, &kd, f.z, f.q, &f.loss, f.rows, f.ws, W)
#define BCE_FWD() xent_bce_forward(h, &bd, f.z, f.y, &f.loss, f.rows, f.ws, W)
    xent_entropy_desc_init(&ed, BN, BC);
    ed.ld = BC - 1;
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_SIZE, "entropy ld < C");
    xent_entropy_desc_init(&ed, -1, BC);
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_SIZE, "entropy N < 0");
    xent_entropy_desc_init(&ed, BN, 0);
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_SIZE, "entropy C = 0");
    xent_entropy_desc_init(&ed, INT64_MAX / 2, BC);
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_SIZE, "entropy overflow");
    xent_entropy_desc_init(&ed, BN, BC);
    ed.logits_dtype = (xent_dtype)7;
    cr_expect_eq(ENT_FWD(), XENT_STATUS_UNSUPPORTED, "entropy dtype");
    xent_entropy_desc_init(&ed, BN, BC);
    ed.reduction = (xent_reduction)9;
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_VALUE, "entropy reduction");
    xent_entropy_desc_init(&ed, BN, BC);
    ed.variant = XENT_VARIANT_COUNT_;
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_VALUE, "entropy variant");
    xent_entropy_desc_init(&ed, BN, BC);
    ed.flags = 1u << 7;
    cr_expect_eq(ENT_FWD(), XENT_STATUS_INVALID_VALUE, "entropy flags");

    xent_kl_desc_init(&kd, BN, BC);
    kd.target_ld = BC - 1;
    cr_expect_eq(KL_FWD(), XENT_STATUS_INVALID_SIZE, "kl target_ld < C");
    xent_kl_desc_init(&kd, BN, BC);
    kd.ld = 2;
    cr_expect_eq(KL_FWD(), XENT_STATUS_INVALID_SIZE, "kl ld < C");
    xent_kl_desc_init(&kd, BN, BC);
    kd.prob_tol = -1.0f;
    cr_expect_eq(KL_FWD(), XENT_STATUS_INVALID_VALUE, "kl prob_tol < 0");
    kd.prob_tol = NAN;
    cr_expect_eq(KL_FWD(), XENT_STATUS_INVALID_VALUE, "kl prob_tol NaN");
    xent_kl_desc_init(&kd, BN, BC);
    kd.target_kind = (xent_kl_target)5;
    cr_expect_eq(KL_FWD(), XENT_STATUS_INVALID_VALUE, "kl target kind");

    xent_bce_desc_init(&bd, BN, BC);
    bd.target_ld = BC - 1;
    cr_expect_eq(BCE_FWD(), XENT_STATUS_INVALID_SIZE, "bce target_ld < C");
    xent_bce_desc_init(&bd, BN, BC);
    bd.weight = f.w;
    bd.weight_ld = BC - 2;
    cr_expect_eq(BCE_FWD(), XENT_STATUS_INVALID_SIZE, "bce weight_ld < C");
    xent_bce_desc_init(&bd, BN, BC);
    bd.pos_weight = f.pw;
    bd.n_pos_weight = BC - 1;
    cr_expect_eq(BCE_FWD(), XENT_STATUS_INVALID_SIZE, "pos_weight length");
    bd.n_pos_weight = BC + 1;
    cr_expect_eq(BCE_FWD(), XENT_STATUS_INVALID_SIZE, "pos_weight length");
    bd.n_pos_weight = 0;
    cr_expect_eq(BCE_FWD(), XENT_STATUS_INVALID_SIZE, "pos_weight length");
    cr_expect(untouched(&f), "a rejected call wrote its outputs");
    xent_destroy(h);
}

Test(info_bad, pointers_options_workspace_aliasing)
{
    xent_handle_t h = make_cpu(1);
    bad_fixture f;
    bad_init(&f);
    const size_t W = sizeof f.ws;
    xent_entropy_desc ed;
    xent_entropy_desc_init(&ed, BN, BC);
    cr_expect_eq(xent_entropy_forward(NULL, &ed, f.z, &f.loss, NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER);
    cr_expect_eq(xent_entropy_forward(h, NULL, f.z, &f.loss, NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER);
    cr_expect_eq(xent_entropy_forward(h, &ed, NULL, &f.loss, NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER);
    cr_expect_eq(xent_entropy_forward(h, &ed, f.z, NULL, NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER, "no output");
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, NULL, NULL, &f.loss,
                                               NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER, "no gradient");
    size_t need = 0;
    cr_assert_eq(xent_entropy_workspace_size(h, &ed, &need),
                 XENT_STATUS_SUCCESS);
    cr_assert_gt(need, 0);
    cr_expect_eq(
        xent_entropy_forward(h, &ed, f.z, &f.loss, NULL, f.ws, need - 1),
        XENT_STATUS_WORKSPACE_TOO_SMALL);
    cr_expect_eq(xent_entropy_forward(h, &ed, f.z, &f.loss, NULL, NULL, need),
                 XENT_STATUS_NULL_POINTER);
    ed.reduction = XENT_REDUCTION_NONE;
    cr_expect_eq(xent_entropy_forward(h, &ed, f.z, &f.loss, f.rows, f.ws, W),
                 XENT_STATUS_INVALID_VALUE, "reduced loss under NONE");
    cr_assert_eq(xent_entropy_workspace_size(h, &ed, &need),
                 XENT_STATUS_SUCCESS);
    cr_expect_eq(need, 0u, "NONE needs no workspace");
    /* upstream rules */
    float u[BN * 2 * BC] = {1.0f};
    xent_upstream up = {u, 0, NAN};
    xent_entropy_desc_init(&ed, BN, BC);
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, &up, f.grad, NULL,
                                               NULL, f.ws, W),
                 XENT_STATUS_INVALID_VALUE, "NaN scale");
    up.scale = 1.0f;
    up.dloss_stride = 1;
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, &up, f.grad, NULL,
                                               NULL, f.ws, W),
                 XENT_STATUS_INVALID_VALUE, "per-row upstream under MEAN");
    up.dloss_stride = -1;
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, &up, f.grad, NULL,
                                               NULL, f.ws, W),
                 XENT_STATUS_INVALID_SIZE, "negative stride");
    xent_bce_desc bd;
    xent_bce_desc_init(&bd, BN, BC);
    bd.reduction = XENT_REDUCTION_NONE;
    up.dloss_stride = BC - 1; /* a row stride below C */
    cr_expect_eq(xent_bce_forward_backward(h, &bd, f.z, f.y, &up, f.grad, NULL,
                                           NULL, NULL, 0),
                 XENT_STATUS_INVALID_SIZE, "BCE upstream row stride < C");
    /* aliasing */
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, NULL, f.z + 1, NULL,
                                               NULL, f.ws, W),
                 XENT_STATUS_ALIASING, "gradient overlapping the logits");
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, NULL, f.grad, NULL,
                                               f.grad + 2, f.ws, W),
                 XENT_STATUS_ALIASING, "rows inside the gradient");
    ed.logits_dtype = XENT_DTYPE_BF16;
    ed.flags = XENT_FLAG_GRAD_F32;
    cr_expect_eq(xent_entropy_forward_backward(h, &ed, f.z, NULL, f.z, NULL,
                                               NULL, f.ws, W),
                 XENT_STATUS_ALIASING, "in place with another dtype");
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, BN, BC);
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.q, NULL, f.grad, f.gt,
                                          NULL, NULL, f.ws, W),
                 XENT_STATUS_INVALID_VALUE,
                 "teacher gradient with probability targets");
    kd.target_kind = XENT_KL_TARGET_LOGITS;
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.t, NULL, f.t, NULL,
                                          NULL, NULL, f.ws, W),
                 XENT_STATUS_ALIASING, "student gradient over the teacher");
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.t, NULL, f.grad,
                                          f.grad, NULL, NULL, f.ws, W),
                 XENT_STATUS_ALIASING, "both gradients in one buffer");
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.t, NULL, NULL, NULL,
                                          NULL, NULL, f.ws, W),
                 XENT_STATUS_NULL_POINTER, "no gradient");
    bd.reduction = XENT_REDUCTION_SUM;
    cr_expect_eq(xent_bce_forward(h, &bd, f.z, f.y, &f.loss, f.y, f.ws, W),
                 XENT_STATUS_ALIASING, "elements over the targets");
    /* eval */
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, BN, BC);
    int64_t y[BN] = {0, 1, 2, 3};
    xent_eval_accum acc;
    memset(&acc, 0, sizeof acc);
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 0, NULL, &acc),
                 XENT_STATUS_INVALID_VALUE, "top_k 0");
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 5, NULL, NULL),
                 XENT_STATUS_NULL_POINTER, "no output at all");
    cr_expect_eq(xent_ce_eval(h, &cd, NULL, y, 5, NULL, &acc),
                 XENT_STATUS_NULL_POINTER);
    cd.target_type = XENT_TARGET_PROBS_F32;
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, f.q, 5, NULL, &acc),
                 XENT_STATUS_UNSUPPORTED, "probability targets");
    xent_ce_desc_init(&cd, BN, BC);
    cd.ld = 1;
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 5, NULL, &acc),
                 XENT_STATUS_INVALID_SIZE);
    xent_ce_desc_init(&cd, BN, BC);
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    out.d_loss = f.z;
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 5, &out, NULL),
                 XENT_STATUS_ALIASING, "output over the logits");
    cr_expect_eq(acc.tokens, 0, "a rejected call added to the accumulator");
    cr_expect(untouched(&f), "a rejected call wrote its outputs");
    cr_expect_eq(xent_eval_accum_reset(h, NULL), XENT_STATUS_NULL_POINTER);
    xent_destroy(h);
}

/* KL: a negative q, or a row that does not sum to 1 beyond prob_tol: that
 * row is NaN, the status word says so, the call says INVALID_DATA; with
 * prob_tol = INFINITY an unnormalized row is fine (gradient p sum q - q). */
Test(info_bad, kl_invalid_probabilities)
{
    xent_handle_t h = make_cpu(1);
    bad_fixture f;
    bad_init(&f);
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, BN, BC);
    kd.reduction = XENT_REDUCTION_NONE;
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    f.q[2 * BC + 1] = -0.01f;
    f.q[2 * BC + 2] += 0.01f; /* the sum stays 1 */
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.q, NULL, f.grad, NULL,
                                          NULL, f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect(rep.flags & XENT_DATA_INVALID_PROBS, "flags %#x", rep.flags);
    cr_expect_eq(rep.first_row, 2);
    cr_expect(isnan(f.rows[2]) && isfinite(f.rows[1]) && isfinite(f.rows[3]));
    cr_expect(isnan(f.grad[2 * BC]) && isfinite(f.grad[3 * BC]));
    /* a sum off 1 */
    bad_init(&f);
    for (int j = 0; j < BC; j++)
        f.q[1 * BC + j] *= 1.01f;
    cr_expect_eq(xent_kl_forward(h, &kd, f.z, f.q, NULL, f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect(rep.flags & XENT_DATA_INVALID_PROBS);
    cr_expect_eq(rep.first_row, 1);
    cr_expect(isnan(f.rows[1]) && isfinite(f.rows[0]));
    /* within the tolerance: fine */
    bad_init(&f);
    f.q[0] += 5e-4f;
    cr_expect_eq(xent_kl_forward(h, &kd, f.z, f.q, NULL, f.rows, NULL, 0),
                 XENT_STATUS_SUCCESS);
    /* unnormalized rows with the sum check off */
    bad_init(&f);
    for (int k = 0; k < BN * BC; k++)
        f.q[k] *= 0.5f;
    kd.prob_tol = INFINITY;
    cr_expect_eq(xent_kl_forward_backward(h, &kd, f.z, f.q, NULL, f.grad, NULL,
                                          NULL, f.rows, NULL, 0),
                 XENT_STATUS_SUCCESS);
    double zd[BN * BC], qd[BN * BC], rr[BN], gr[BN * BC], got[BN * BC];
    tu_f32_to_f64(f.z, zd, BN * BC);
    tu_f32_to_f64(f.q, qd, BN * BC);
    ref_kl_batch(BN, BC, zd, BC, qd, BC, NULL, 0, 0, rr, gr, NULL);
    tu_f32_to_f64(f.rows, got, BN);
    cr_expect(check_close("unnormalized", "rows", rr, got, BN, 0.0));
    tu_f32_to_f64(f.grad, got, BN * BC);
    cr_expect(check_close("unnormalized", "grad", gr, got, BN * BC, 0.0));
    /* a negative entry is still invalid then */
    f.q[3] = -0.1f;
    cr_expect_eq(xent_kl_forward(h, &kd, f.z, f.q, NULL, f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect_eq(rep.first_row, 0);
    xent_destroy(h);
}

/* BCE: a target outside [0, 1] (that element NaN, INVALID_DATA, flag);
 * a negative pos_weight (INVALID_DATA before anything is written). */
Test(info_bad, bce_targets_and_pos_weight)
{
    xent_handle_t h = make_cpu(1);
    bad_fixture f;
    bad_init(&f);
    xent_bce_desc bd;
    xent_bce_desc_init(&bd, BN, BC);
    bd.reduction = XENT_REDUCTION_NONE;
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    f.y[3 * BC + 4] = 1.5f;
    f.y[2 * BC + 1] = -0.25f;
    cr_expect_eq(xent_bce_forward_backward(h, &bd, f.z, f.y, NULL, f.grad, NULL,
                                           f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect(rep.flags & XENT_DATA_TARGET_OUTSIDE_01, "flags %#x", rep.flags);
    cr_expect_eq(rep.first_row, 2);
    cr_expect(isnan(f.rows[3 * BC + 4]) && isnan(f.grad[3 * BC + 4]));
    cr_expect(isnan(f.rows[2 * BC + 1]) && isfinite(f.rows[2 * BC + 2]));
    f.y[3 * BC + 4] = NAN;
    f.y[2 * BC + 1] = 0.25f;
    cr_expect_eq(xent_bce_forward(h, &bd, f.z, f.y, NULL, f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA, "NaN target");
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect_eq(rep.first_row, 3);
    /* negative pos_weight */
    bad_init(&f);
    f.pw[3] = -1.0f;
    bd.pos_weight = f.pw;
    bd.n_pos_weight = BC;
    cr_expect_eq(xent_bce_forward_backward(h, &bd, f.z, f.y, NULL, f.grad, NULL,
                                           f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect(rep.flags & XENT_DATA_NEGATIVE_WEIGHT);
    cr_expect(untouched(&f), "negative pos_weight: nothing written");
    f.pw[3] = NAN;
    cr_expect_eq(xent_bce_forward(h, &bd, f.z, f.y, NULL, f.rows, NULL, 0),
                 XENT_STATUS_INVALID_DATA, "NaN pos_weight");
    xent_destroy(h);
}

/* Eval: an out-of-range target is TARGET_OUT_OF_RANGE after every row is
 * written (that row NaN, not counted); a negative weight INVALID_DATA. */
Test(info_bad, eval_bad_targets)
{
    xent_handle_t h = make_cpu(1);
    bad_fixture f;
    bad_init(&f);
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, BN, BC);
    int64_t y[BN] = {0, BC, 2, -3};
    float loss[BN], zl[BN];
    int64_t rank[BN];
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    out.d_loss = loss;
    out.d_z_loss = zl;
    out.d_rank = rank;
    xent_eval_accum acc;
    memset(&acc, 0, sizeof acc);
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 5, &out, &acc),
                 XENT_STATUS_TARGET_OUT_OF_RANGE);
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_expect(rep.flags & XENT_DATA_TARGET_OUT_OF_RANGE);
    cr_expect_eq(rep.first_row, 1);
    cr_expect(isnan(loss[1]) && isnan(loss[3]) && isfinite(loss[0]) &&
              isfinite(loss[2]));
    cr_expect(rank[1] == -1 && rank[3] == -1 && rank[0] >= 0);
    cr_expect_eq(acc.tokens, 2, "bad rows are not counted");
    float w[BC] = {1, 1, 1, 1, 1, 1};
    w[2] = -1.0f;
    cd.weights = w;
    cd.n_weights = BC;
    y[1] = 1;
    y[3] = 3;
    cr_expect_eq(xent_ce_eval(h, &cd, f.z, y, 5, &out, &acc),
                 XENT_STATUS_INVALID_DATA, "negative class weight");
    xent_destroy(h);
}

#endif /* XENT_INFO_SHARED_ONLY */
