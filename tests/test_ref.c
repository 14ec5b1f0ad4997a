/*
 * test_ref.c - Criterion tests of the float64 reference (ref.c) and of the
 * shared test helpers (testutil.c).
 *
 * Suites:
 *   golden     the seed document's worked examples (natural log)
 *   fd         every analytic gradient against central finite differences
 *   invariant  shift invariance, zero-sum gradients, non-negativity, Gibbs'
 *              inequality, KL(q||q) = 0, H(uniform) = log C, H <= log C
 *   torch      PyTorch semantics derived by hand (weighted mean, ignore,
 *              smoothing, C = 1, special values, BCE, KL batchmean)
 *   cancel     why the library avoids lse - z_y and p_y - 1 in fp32
 *   testutil   the shared helpers themselves
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/theories.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* x rounded to 4 decimals, the precision the seed's values are quoted at */
static double round4(double x)
{
    return round(x * 1e4) / 1e4;
}

#define ASSERT_ROUND4(x, expect, what)                                         \
    cr_assert(fabs(round4(x) - (expect)) < 1e-9,                               \
              "%s = %.9f, rounds to %.4f, expected %.4f", (what), (x),         \
              round4(x), (expect))

#define ASSERT_NEAR(got, ref, tol, what)                                       \
    do {                                                                       \
        double g_ = (got), r_ = (ref);                                         \
        cr_assert(fabs(g_ - r_) <= (tol) * (1.0 + fabs(r_)),                   \
                  "%s: got %.17g ref %.17g (tol %.1g)", (what), g_, r_,        \
                  (double)(tol));                                              \
    } while (0)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p, "out of memory");
    return p;
}

/* Mild random logits (normal, sd `sd`) into a strided [n, ld] buffer with
 * NaN padding. */
static void fill_mild(tu_rng *r, int64_t n, int64_t c, int64_t ld, double sd,
                      double *z)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ld; j++)
            z[i * ld + j] = j < c ? sd * tu_normal(r) : NAN;
}

/* Peaked logits from tu_fill_logits, as double, strided with NaN padding. */
static void fill_peaked(tu_rng *r, int64_t n, int64_t c, int64_t ld, double *z)
{
    float *f = xmalloc((size_t)(n * ld) * sizeof(float));
    tu_fill_logits(r, n, c, ld, f, NAN);
    tu_f32_to_f64(f, z, n * ld);
    free(f);
}

static double max_abs(const double *x, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/* ------------------------------------------------------------------ */
/* Finite differences                                                  */
/* ------------------------------------------------------------------ */

typedef double (*fd_fn)(void *ctx, double *x);

/* Central differences of f over the first c entries of n rows of x (row
 * stride ld), written densely to g [n*c]. */
static void fd_grad(fd_fn f, void *ctx, double *x, int64_t n, int64_t c,
                    int64_t ld, double *g)
{
    const double h = 1e-5;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            double *xp = x + i * ld + j;
            double x0 = *xp;
            *xp = x0 + h;
            double up = *xp - x0;
            double fp = f(ctx, x);
            *xp = x0 - h;
            double dn = x0 - *xp;
            double fm = f(ctx, x);
            *xp = x0;
            g[i * c + j] = (fp - fm) / (up + dn);
        }
}

/* One check per gradient tensor: elementwise (atol relative to the
 * largest entry) and ||analytic - fd|| / ||fd|| < 1e-6. */
static void check_fd(const double *analytic, const double *fd, int64_t n,
                     const char *what)
{
    double gmax = max_abs(fd, n);
    tu_close r = tu_compare_f64(fd, analytic, n, 1e-7 * gmax + 1e-10, 1e-5);
    TU_ASSERT_CLOSE(r, what);
    cr_assert(r.rel_norm < 1e-6, "%s: rel-norm %.3g vs finite differences",
              what, r.rel_norm);
    cr_assert(gmax > 0.0, "%s: gradient is identically zero", what);
}

/* ---- CE with index targets ---------------------------------------- */

/* Parameters are copied into Criterion's worker process, where pointers
 * into this binary's data need not be valid: the name is stored inline. */
struct ce_cfg {
    char name[40];
    int reduction;
    int weights; /* random class weights (one class weighted 0) */
    int ignore;  /* rows 1 and 4 get ignore_index */
    int64_t ignore_index;
    double alpha, zloss, cap;
    int peaked; /* tu_fill_logits data instead of mild logits */
};

typedef struct ce_ctx {
    int64_t n, c, ld;
    const int64_t *y;
    const double *q;
    int64_t ldq;
    ref_ce_opts o;
} ce_ctx;

static double ce_index_f(void *p, double *z)
{
    ce_ctx *k = p;
    return ref_ce_index(k->n, k->c, z, k->ld, k->y, &k->o, NULL, NULL, NULL);
}

static double ce_probs_f(void *p, double *z)
{
    ce_ctx *k = p;
    return ref_ce_probs(k->n, k->c, z, k->ld, k->q, k->ldq, &k->o, NULL, NULL,
                        NULL);
}

static void cfg_to_opts(const struct ce_cfg *cfg, const double *w,
                        ref_ce_opts *o)
{
    ref_ce_opts_default(o);
    o->reduction = cfg->reduction;
    o->weights = cfg->weights ? w : NULL;
    o->ignore_index = cfg->ignore ? cfg->ignore_index : -100;
    o->label_smoothing = cfg->alpha;
    o->z_loss = cfg->zloss;
    o->softcap = cfg->cap;
}

ParameterizedTestParameters(fd, ce_index)
{
    static struct ce_cfg cfgs[] = {
        {"plain mean", 1, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"plain sum", 2, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"plain none", 0, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"weights", 1, 1, 0, -100, 0.0, 0.0, 0.0, 0},
        {"ignore", 1, 0, 1, -100, 0.0, 0.0, 0.0, 0},
        {"smoothing", 1, 0, 0, -100, 0.1, 0.0, 0.0, 0},
        {"z-loss", 1, 0, 0, -100, 0.0, 1e-2, 0.0, 0},
        {"softcap", 1, 0, 0, -100, 0.0, 0.0, 3.0, 0},
        {"all mean", 1, 1, 1, -100, 0.1, 1e-2, 3.0, 0},
        {"all sum", 2, 1, 1, -100, 0.1, 1e-2, 3.0, 0},
        {"all none", 0, 1, 1, -100, 0.1, 1e-2, 3.0, 0},
        {"all, ignore_index 2", 1, 1, 1, 2, 0.3, 1e-3, 4.0, 0},
        {"all, alpha 1", 1, 1, 1, -100, 1.0, 1e-2, 3.0, 0},
        {"all, peaked logits", 1, 1, 1, -100, 0.1, 1e-4, 30.0, 1},
        {"peaked, no cap", 2, 1, 0, -100, 0.05, 0.0, 0.0, 1},
    };
    return cr_make_param_array(struct ce_cfg, cfgs,
                               sizeof cfgs / sizeof cfgs[0]);
}

ParameterizedTest(struct ce_cfg *cfg, fd, ce_index)
{
    enum { N = 6, C = 5, LD = 7 };
    tu_rng r;
    tu_rng_seed(&r, 1234);
    double z[N * LD], w[C], g[N * C], gfd[N * C];
    int64_t y[N];
    if (cfg->peaked)
        fill_peaked(&r, N, C, LD, z);
    else
        fill_mild(&r, N, C, LD, 1.5, z);
    tu_fill_targets_i64(&r, N, C, y);
    for (int j = 0; j < C; j++)
        w[j] = 0.2 + 1.8 * tu_uniform(&r);
    w[3] = 0.0;
    if (cfg->ignore) {
        y[1] = cfg->ignore_index;
        y[4] = cfg->ignore_index;
    }
    ce_ctx k = {N, C, LD, y, NULL, 0, {0}};
    cfg_to_opts(cfg, w, &k.o);
    double loss = ref_ce_index(N, C, z, LD, y, &k.o, NULL, NULL, g);
    cr_assert(isfinite(loss), "%s: loss %g", cfg->name, loss);
    fd_grad(ce_index_f, &k, z, N, C, LD, gfd);
    check_fd(g, gfd, N * C, cfg->name);
    if (cfg->ignore)
        for (int j = 0; j < C; j++)
            cr_assert(g[1 * C + j] == 0.0 && g[4 * C + j] == 0.0,
                      "%s: ignored rows must have zero gradient", cfg->name);
}

ParameterizedTestParameters(fd, ce_probs)
{
    static struct ce_cfg cfgs[] = {
        {"probs plain mean", 1, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"probs plain sum", 2, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"probs plain none", 0, 0, 0, -100, 0.0, 0.0, 0.0, 0},
        {"probs all mean", 1, 1, 0, -100, 0.2, 1e-2, 3.0, 0},
        {"probs all sum", 2, 1, 0, -100, 0.2, 1e-2, 3.0, 0},
        {"probs all none", 0, 1, 0, -100, 0.2, 1e-2, 3.0, 0},
        {"probs peaked", 1, 1, 0, -100, 0.05, 1e-4, 0.0, 1},
    };
    return cr_make_param_array(struct ce_cfg, cfgs,
                               sizeof cfgs / sizeof cfgs[0]);
}

ParameterizedTest(struct ce_cfg *cfg, fd, ce_probs)
{
    enum { N = 5, C = 6, LD = 6, LDQ = 8 };
    tu_rng r;
    tu_rng_seed(&r, 99);
    double z[N * LD], w[C], q[N * LDQ], g[N * C], gfd[N * C];
    float qf[N * LDQ];
    if (cfg->peaked)
        fill_peaked(&r, N, C, LD, z);
    else
        fill_mild(&r, N, C, LD, 1.5, z);
    tu_fill_probs(&r, N, C, LDQ, qf, NAN);
    tu_f32_to_f64(qf, q, N * LDQ);
    for (int j = 0; j < C; j++)
        w[j] = 0.2 + 1.8 * tu_uniform(&r);
    ce_ctx k = {N, C, LD, NULL, q, LDQ, {0}};
    cfg_to_opts(cfg, w, &k.o);
    double loss = ref_ce_probs(N, C, z, LD, q, LDQ, &k.o, NULL, NULL, g);
    cr_assert(isfinite(loss), "%s: loss %g", cfg->name, loss);
    fd_grad(ce_probs_f, &k, z, N, C, LD, gfd);
    check_fd(g, gfd, N * C, cfg->name);
}

/* ---- entropy, KL, BCE --------------------------------------------- */

typedef struct ent_ctx {
    int64_t n, c, ld;
    int reduction;
} ent_ctx;

static double entropy_f(void *p, double *z)
{
    ent_ctx *k = p;
    return ref_entropy_batch(k->n, k->c, z, k->ld, k->reduction, NULL, NULL);
}

Test(fd, entropy)
{
    enum { N = 4, C = 7, LD = 9 };
    for (int red = 0; red < 3; red++)
        for (int peaked = 0; peaked < 2; peaked++) {
            tu_rng r;
            tu_rng_seed(&r, 7 + (uint64_t)red);
            double z[N * LD], g[N * C], gfd[N * C];
            if (peaked)
                fill_peaked(&r, N, C, LD, z);
            else
                fill_mild(&r, N, C, LD, 1.5, z);
            ent_ctx k = {N, C, LD, red};
            double h = ref_entropy_batch(N, C, z, LD, red, NULL, g);
            cr_assert(isfinite(h));
            fd_grad(entropy_f, &k, z, N, C, LD, gfd);
            char what[64];
            snprintf(what, sizeof what, "entropy grad, reduction %d%s", red,
                     peaked ? ", peaked" : "");
            check_fd(g, gfd, N * C, what);
        }
    /* single-row API agrees with the batch one */
    double z[5] = {0.3, -1.2, 2.0, 0.0, 0.7}, g1[5], gb[5];
    double h1 = ref_softmax_entropy(5, z, g1);
    double hb = ref_entropy_batch(1, 5, z, 5, 2, NULL, gb);
    ASSERT_NEAR(h1, hb, 1e-15, "entropy single vs batch");
    TU_ASSERT_CLOSE(tu_compare_f64(gb, g1, 5, 1e-16, 1e-14),
                    "entropy grad single vs batch");
}

typedef struct kl_ctx {
    int64_t n, c;
    double *z, *q, *t;
    int64_t ld;
    int reduction;
} kl_ctx;

static double kl_fz_probs(void *p, double *z)
{
    kl_ctx *k = p;
    return ref_kl_batch(k->n, k->c, z, k->ld, k->q, k->ld, NULL, 0,
                        k->reduction, NULL, NULL, NULL);
}

static double kl_fz_logits(void *p, double *z)
{
    kl_ctx *k = p;
    return ref_kl_batch(k->n, k->c, z, k->ld, NULL, 0, k->t, k->ld,
                        k->reduction, NULL, NULL, NULL);
}

static double kl_ft_logits(void *p, double *t)
{
    kl_ctx *k = p;
    return ref_kl_batch(k->n, k->c, k->z, k->ld, NULL, 0, t, k->ld,
                        k->reduction, NULL, NULL, NULL);
}

Test(fd, kl)
{
    enum { N = 4, C = 6, LD = 8 };
    for (int red = 0; red < 3; red++) {
        tu_rng r;
        tu_rng_seed(&r, 31 + (uint64_t)red);
        double z[N * LD], t[N * LD], q[N * LD];
        float qf[N * LD];
        double gz[N * C], gt[N * C], fz[N * C], ft[N * C];
        fill_mild(&r, N, C, LD, 1.5, z);
        fill_mild(&r, N, C, LD, 2.0, t);
        tu_fill_probs(&r, N, C, LD, qf, NAN);
        tu_f32_to_f64(qf, q, N * LD);
        kl_ctx k = {N, C, z, q, t, LD, red};
        char what[64];

        /* teacher probabilities (log_target = False), with exact zeros */
        double kl =
            ref_kl_batch(N, C, z, LD, q, LD, NULL, 0, red, NULL, gz, NULL);
        cr_assert(isfinite(kl));
        fd_grad(kl_fz_probs, &k, z, N, C, LD, fz);
        snprintf(what, sizeof what, "KL probs grad_z, reduction %d", red);
        check_fd(gz, fz, N * C, what);

        /* teacher logits (log_target = True): both gradients */
        kl = ref_kl_batch(N, C, z, LD, NULL, 0, t, LD, red, NULL, gz, gt);
        cr_assert(isfinite(kl));
        fd_grad(kl_fz_logits, &k, z, N, C, LD, fz);
        snprintf(what, sizeof what, "KL logits grad_z, reduction %d", red);
        check_fd(gz, fz, N * C, what);
        fd_grad(kl_ft_logits, &k, t, N, C, LD, ft);
        snprintf(what, sizeof what, "KL logits grad_t, reduction %d", red);
        check_fd(gt, ft, N * C, what);

        /* a teacher that does not sum to 1 (torch allows it): the student
         * gradient is p_j sum_c q_c - q_j */
        for (int e = 0; e < N * LD; e++)
            q[e] *= 0.6;
        kl = ref_kl_batch(N, C, z, LD, q, LD, NULL, 0, red, NULL, gz, NULL);
        cr_assert(isfinite(kl));
        fd_grad(kl_fz_probs, &k, z, N, C, LD, fz);
        snprintf(what, sizeof what, "KL q sums to 0.6, reduction %d", red);
        check_fd(gz, fz, N * C, what);
    }
}

typedef struct bce_ctx {
    int64_t n, c;
    const double *y, *pw, *w;
    int reduction;
} bce_ctx;

static double bce_f(void *p, double *z)
{
    bce_ctx *k = p;
    return ref_bce_logits(k->n, k->c, z, k->y, k->pw, k->w, k->reduction, NULL,
                          NULL);
}

Test(fd, bce)
{
    enum { N = 3, C = 5 };
    for (int red = 0; red < 3; red++)
        for (int opts = 0; opts < 4; opts++) {
            tu_rng r;
            tu_rng_seed(&r, 555 + (uint64_t)(red * 4 + opts));
            double z[N * C], y[N * C], pw[C], w[N * C], g[N * C], gfd[N * C];
            for (int e = 0; e < N * C; e++) {
                z[e] = 3.0 * tu_normal(&r);
                y[e] = tu_uniform(&r);
                w[e] = 0.1 + tu_uniform(&r);
            }
            y[0] = 1.0;
            y[1] = 0.0;
            z[2] = 30.0; /* saturated elements keep a correct gradient */
            z[3] = -25.0;
            for (int j = 0; j < C; j++)
                pw[j] = 0.5 + 3.0 * tu_uniform(&r);
            bce_ctx k = {
                N, C, y, (opts & 1) ? pw : NULL, (opts & 2) ? w : NULL, red};
            double l = ref_bce_logits(N, C, z, y, k.pw, k.w, red, NULL, g);
            cr_assert(isfinite(l));
            fd_grad(bce_f, &k, z, N, C, C, gfd);
            char what[80];
            snprintf(what, sizeof what,
                     "BCE grad, reduction %d, pos_weight %d, weight %d", red,
                     opts & 1, (opts >> 1) & 1);
            check_fd(g, gfd, N * C, what);
        }
}

/* ------------------------------------------------------------------ */
/* Golden values from the seed document                                */
/* ------------------------------------------------------------------ */

Test(golden, seed_values)
{
    /* -log 0.7 and -log 0.2: one-hot q against p */
    double q1[3] = {0, 0, 1}, p1[3] = {0.1, 0.2, 0.7}, p2[3] = {0.5, 0.3, 0.2};
    ASSERT_ROUND4(ref_cross_entropy_probs(3, q1, p1), 0.3567, "-log 0.7");
    ASSERT_ROUND4(ref_cross_entropy_probs(3, q1, p2), 1.6094, "-log 0.2");
    /* H(0.2, 0.8), H(0.5, 0.5) = log 2, H(uniform 100) = log 100 */
    double b[2] = {0.2, 0.8}, h[2] = {0.5, 0.5}, u[100];
    for (int j = 0; j < 100; j++)
        u[j] = 0.01;
    ASSERT_ROUND4(ref_entropy_probs(2, b), 0.5004, "H(0.2, 0.8)");
    ASSERT_ROUND4(ref_entropy_probs(2, h), 0.6931, "log 2");
    ASSERT_ROUND4(ref_entropy_probs(100, u), 4.6052, "log 100");
    /* H(q) and H_p(q) for q = [.8,.1,.1], p = [.2,.2,.6] */
    double q[3] = {0.8, 0.1, 0.1}, p[3] = {0.2, 0.2, 0.6};
    ASSERT_ROUND4(ref_entropy_probs(3, q), 0.6390, "H(.8,.1,.1)");
    /* -(0.9 log 0.2 + 0.1 log 0.6) = 1.49957668: 1.4996 at 4 decimals, 1.50
     * as the seed prints it (1.4990, quoted in some summaries, is a
     * rounding slip). */
    double hpq = ref_cross_entropy_probs(3, q, p);
    ASSERT_ROUND4(hpq, 1.4996, "H_p(q)");
    cr_assert(fabs(round(hpq * 100) / 100 - 1.50) < 1e-9);
    /* KL = H_p(q) - H(q) */
    ASSERT_NEAR(ref_kl_probs(3, q, p), hpq - ref_entropy_probs(3, q), 1e-15,
                "KL = H_p - H");
    ASSERT_ROUND4(ref_kl_probs(3, q, p), 0.8605, "KL(q||p)");
    /* the 99 % bag: -(0.99 log 0.99 + 99 (0.01/99) log(0.01/99)) = 0.1 */
    double bag[100];
    bag[0] = 0.99;
    for (int j = 1; j < 100; j++)
        bag[j] = 0.01 / 99;
    double hbag = ref_entropy_probs(100, bag);
    cr_assert(fabs(round(hbag * 10) / 10 - 0.1) < 1e-12, "bag %g", hbag);
    ASSERT_ROUND4(hbag, 0.1020, "99% bag");
    /* section 5: p = [0.2, 0.3, 0.5], q = [0, 0, 1] -> -log 0.5 */
    double p5[3] = {0.2, 0.3, 0.5};
    ASSERT_ROUND4(ref_cross_entropy_probs(3, q1, p5), 0.6931, "-log 0.5");
}

Test(golden, seed_values_via_logits)
{
    /* logits log p: softmax(log p) = p */
    double z[2 * 3] = {log(0.1), log(0.2), log(0.7),
                       log(0.5), log(0.3), log(0.2)};
    int64_t y[2] = {2, 2};
    double rows[2], lse[2], g[6];
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    double mean = ref_ce_index(2, 3, z, 3, y, &o, rows, lse, g);
    ASSERT_ROUND4(rows[0], 0.3567, "ce_index -log 0.7");
    ASSERT_ROUND4(rows[1], 1.6094, "ce_index -log 0.2");
    ASSERT_NEAR(mean, 0.5 * (-log(0.7) - log(0.2)), 1e-15, "mean of two");
    ASSERT_NEAR(lse[0], 0.0, 1e-15, "lse of log p");
    /* seed: gradient of the mean = (P - L) / n */
    double pl[6] = {0.1, 0.2, 0.7 - 1, 0.5, 0.3, 0.2 - 1};
    for (int j = 0; j < 6; j++)
        pl[j] /= 2;
    TU_ASSERT_CLOSE(tu_compare_f64(pl, g, 6, 1e-15, 1e-13), "(P - L) / n");

    /* probability targets: q = [.8,.1,.1] against logits log[.2,.2,.6] */
    double zq[3] = {log(0.2), log(0.2), log(0.6)}, q[3] = {0.8, 0.1, 0.1};
    double gq[3];
    double hpq = ref_ce_probs(1, 3, zq, 3, q, 3, &o, NULL, NULL, gq);
    ASSERT_ROUND4(hpq, 1.4996, "ce_probs H_p(q)");
    double pq[3] = {0.2 - 0.8, 0.2 - 0.1, 0.6 - 0.1}; /* P s - L, s = 1 */
    TU_ASSERT_CLOSE(tu_compare_f64(pq, gq, 3, 1e-15, 1e-13), "P - q");
    /* soft labels summing to s: gradient P s - L */
    double q2[3] = {0.4, 0.05, 0.05}; /* s = 0.5 */
    ref_ce_probs(1, 3, zq, 3, q2, 3, &o, NULL, NULL, gq);
    double ps[3] = {0.1 - 0.4, 0.1 - 0.05, 0.3 - 0.05};
    TU_ASSERT_CLOSE(tu_compare_f64(ps, gq, 3, 1e-15, 1e-13), "P s - q");

    /* entropy of softmax and KL through the batch APIs */
    double zh[3] = {log(0.8), log(0.1), log(0.1)};
    ASSERT_ROUND4(ref_softmax_entropy(3, zh, NULL), 0.6390, "H(softmax)");
    double zu[100];
    for (int j = 0; j < 100; j++)
        zu[j] = -3.25;
    ASSERT_ROUND4(ref_softmax_entropy(100, zu, NULL), 4.6052, "log 100");
    double kl = ref_kl_batch(1, 3, zq, 3, q, 3, NULL, 0, 1, NULL, NULL, NULL);
    ASSERT_ROUND4(kl, 0.8605, "KL batch");
    double klt = ref_kl_batch(1, 3, zq, 3, NULL, 0, zh, 3, 2, NULL, NULL, NULL);
    ASSERT_NEAR(klt, kl, 1e-14, "KL with teacher logits log q");
    /* binary CE, the seed's 20:80 bag as a Bernoulli: z = logit(0.8) */
    double zb = log(0.8 / 0.2), y1 = 1.0, y0 = 0.0;
    ASSERT_ROUND4(ref_bce_logits(1, 1, &zb, &y0, NULL, NULL, 2, NULL, NULL),
                  1.6094, "BCE y=0, p=0.8");
    ASSERT_ROUND4(ref_bce_logits(1, 1, &zb, &y1, NULL, NULL, 2, NULL, NULL),
                  0.2231, "BCE y=1, p=0.8");
}

/* ------------------------------------------------------------------ */
/* Invariants                                                          */
/* ------------------------------------------------------------------ */

TheoryDataPoints(invariant, uniform_entropy_is_log_c) = {
    DataPoints(int64_t, 1, 2, 3, 10, 100, 1000, 50257),
};

Theory((int64_t c), invariant, uniform_entropy_is_log_c)
{
    double *q = xmalloc((size_t)c * sizeof(double));
    double *g = xmalloc((size_t)c * sizeof(double));
    for (int64_t j = 0; j < c; j++)
        q[j] = 1.0 / (double)c;
    ASSERT_NEAR(ref_entropy_probs(c, q), log((double)c), 1e-12, "H(1/C)");
    for (int64_t j = 0; j < c; j++)
        q[j] = 7.5; /* constant logits: softmax is uniform */
    ASSERT_NEAR(ref_softmax_entropy(c, q, g), log((double)c), 1e-14,
                "H(softmax(const))");
    cr_assert(max_abs(g, c) < 1e-15, "uniform is a stationary point");
    /* and CE of uniform logits against any class is log C */
    int64_t y = c / 2;
    ASSERT_NEAR(ref_ce_index(1, c, q, c, &y, NULL, NULL, NULL, NULL),
                log((double)c), 1e-14, "CE(uniform logits)");
    free(q);
    free(g);
}

TheoryDataPoints(invariant, shift) = {
    DataPoints(uint64_t, 1, 2, 3),
    DataPoints(double, -1000.0, -3.5, 0.125, 60.0, 1e4),
};

/* loss and gradient do not change when a constant is added to a row of
 * logits (no softcap, no z-loss: both depend on the absolute level) */
Theory((uint64_t seed, double shift), invariant, shift)
{
    enum { N = 5, C = 9, LD = 11 };
    tu_rng r;
    tu_rng_seed(&r, seed);
    double z[N * LD], zs[N * LD], w[C], q[N * C];
    int64_t y[N];
    fill_peaked(&r, N, C, LD, z);
    tu_fill_targets_i64(&r, N, C, y);
    y[2] = -100;
    for (int j = 0; j < C; j++)
        w[j] = 0.5 + tu_uniform(&r);
    for (int i = 0; i < N * C; i++)
        q[i] = tu_uniform(&r);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < LD; j++) /* a different shift per row */
            zs[i * LD + j] = z[i * LD + j] + shift * (1.0 + 0.25 * i);
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.weights = w;
    o.label_smoothing = 0.15;
    double l0[N], l1[N], g0[N * C], g1[N * C];
    /* The shifted logits are rounded to double: allow for that. */
    double tol = 1e-15 * (1.0 + fabs(shift)) * 64;
    ref_ce_index(N, C, z, LD, y, &o, l0, NULL, g0);
    ref_ce_index(N, C, zs, LD, y, &o, l1, NULL, g1);
    TU_ASSERT_CLOSE(tu_compare_f64(l0, l1, N, tol, 1e-13), "index loss");
    TU_ASSERT_CLOSE(tu_compare_f64(g0, g1, N * C, tol, 1e-12), "index grad");
    ref_ce_probs(N, C, z, LD, q, C, &o, l0, NULL, g0);
    ref_ce_probs(N, C, zs, LD, q, C, &o, l1, NULL, g1);
    TU_ASSERT_CLOSE(tu_compare_f64(l0, l1, N, tol, 1e-13), "probs loss");
    TU_ASSERT_CLOSE(tu_compare_f64(g0, g1, N * C, tol, 1e-12), "probs grad");
    ref_entropy_batch(N, C, z, LD, 0, l0, g0);
    ref_entropy_batch(N, C, zs, LD, 0, l1, g1);
    TU_ASSERT_CLOSE(tu_compare_f64(l0, l1, N, tol, 1e-13), "entropy");
    TU_ASSERT_CLOSE(tu_compare_f64(g0, g1, N * C, tol, 1e-12), "entropy grad");
    /* lse moves with the shift */
    double lse0[N], lse1[N];
    ref_ce_index(N, C, z, LD, y, &o, NULL, lse0, NULL);
    ref_ce_index(N, C, zs, LD, y, &o, NULL, lse1, NULL);
    for (int i = 0; i < N; i++)
        lse0[i] += shift * (1.0 + 0.25 * i);
    TU_ASSERT_CLOSE(tu_compare_f64(lse0, lse1, N, tol, 1e-14), "lse shift");
}

/* For one-hot targets (index targets; weights and smoothing allowed, no
 * z-loss, no softcap) every gradient row sums to zero. */
Test(invariant, grad_rows_sum_to_zero)
{
    enum { N = 16, C = 33 };
    for (uint64_t seed = 0; seed < 8; seed++) {
        tu_rng r;
        tu_rng_seed(&r, 100 + seed);
        double z[N * C], w[C], g[N * C];
        int64_t y[N];
        fill_peaked(&r, N, C, C, z);
        tu_fill_targets_i64(&r, N, C, y);
        for (int j = 0; j < C; j++)
            w[j] = tu_uniform(&r) * 3.0;
        ref_ce_opts o;
        ref_ce_opts_default(&o);
        o.reduction = (int)(seed % 3);
        o.weights = (seed & 1) ? w : NULL;
        o.label_smoothing = (seed & 2) ? 0.2 : 0.0;
        ref_ce_index(N, C, z, C, y, &o, NULL, NULL, g);
        double worst = 0.0;
        for (int i = 0; i < N; i++) {
            double s = 0.0;
            for (int j = 0; j < C; j++)
                s += g[i * C + j];
            double scale = max_abs(g + i * C, C);
            if (fabs(s) > worst * 1.0 && scale > 0)
                worst = fabs(s) / scale;
        }
        cr_assert(worst < 1e-13, "seed %llu: a row sums to %g (relative)",
                  (unsigned long long)seed, worst);
    }
    /* z-loss breaks it: the check above is not vacuous */
    double z[3] = {1.0, 2.0, 3.0}, g[3];
    int64_t y = 0;
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.z_loss = 0.1;
    ref_ce_index(1, 3, z, 3, &y, &o, NULL, NULL, g);
    cr_assert(fabs(g[0] + g[1] + g[2]) > 0.1);
}

Test(invariant, losses_non_negative)
{
    enum { N = 32, C = 17 };
    for (uint64_t seed = 0; seed < 10; seed++) {
        tu_rng r;
        tu_rng_seed(&r, 200 + seed);
        double z[N * C], w[C], q[N * C], l[N * C], yb[N * C], pw[C];
        float qf[N * C];
        int64_t y[N];
        fill_peaked(&r, N, C, C, z);
        tu_fill_targets_i64(&r, N, C, y);
        tu_fill_probs(&r, N, C, C, qf, NAN);
        tu_f32_to_f64(qf, q, N * C);
        for (int j = 0; j < C; j++) {
            w[j] = tu_uniform(&r) * 2.0;
            pw[j] = tu_uniform(&r) * 4.0;
        }
        for (int e = 0; e < N * C; e++)
            yb[e] = tu_uniform(&r);
        ref_ce_opts o;
        ref_ce_opts_default(&o);
        o.reduction = 0;
        o.weights = (seed & 1) ? w : NULL;
        o.label_smoothing = (seed & 2) ? 0.1 : 0.0;
        o.z_loss = (seed & 4) ? 1e-3 : 0.0;
        o.softcap = (seed & 8) ? 15.0 : 0.0;
        ref_ce_index(N, C, z, C, y, &o, l, NULL, NULL);
        for (int i = 0; i < N; i++)
            cr_assert(l[i] >= 0.0, "index row %d: %g", i, l[i]);
        ref_ce_probs(N, C, z, C, q, C, &o, l, NULL, NULL);
        for (int i = 0; i < N; i++)
            cr_assert(l[i] >= 0.0, "probs row %d: %g", i, l[i]);
        ref_entropy_batch(N, C, z, C, 0, l, NULL);
        for (int i = 0; i < N; i++)
            cr_assert(l[i] >= 0.0 && l[i] <= log((double)C) + 1e-15,
                      "0 <= H <= log C, row %d: %g", i, l[i]);
        ref_kl_batch(N, C, z, C, q, C, NULL, 0, 0, l, NULL, NULL);
        for (int i = 0; i < N; i++)
            cr_assert(l[i] >= 0.0, "KL row %d: %g", i, l[i]);
        ref_bce_logits(N, C, z, yb, pw, NULL, 0, l, NULL);
        for (int e = 0; e < N * C; e++)
            cr_assert(l[e] >= 0.0, "BCE elem %d: %g", e, l[e]);
    }
}

/* Gibbs: H_p(q) >= H(q), KL(q||p) = H_p(q) - H(q) >= 0, KL(q||q) = 0,
 * H(q) <= log C */
Test(invariant, gibbs_and_kl)
{
    enum { C = 12 };
    tu_rng r;
    tu_rng_seed(&r, 4242);
    for (int draw = 0; draw < 200; draw++) {
        double q[C], p[C], z[C];
        float qf[C];
        tu_fill_probs(&r, 1, C, C, qf, NAN);
        tu_f32_to_f64(qf, q, C);
        for (int j = 0; j < C; j++)
            z[j] = 3.0 * tu_normal(&r);
        ref_softmax(C, z, p);
        double h = ref_entropy_probs(C, q);
        double ce = ref_cross_entropy_probs(C, q, p);
        double kl = ref_kl_probs(C, q, p);
        cr_assert(ce >= h, "draw %d: H_p(q) %g < H(q) %g", draw, ce, h);
        cr_assert(kl >= 0.0, "draw %d: KL %g", draw, kl);
        ASSERT_NEAR(kl, ce - h, 1e-13, "KL = H_p - H");
        cr_assert(h <= log((double)C) + 1e-15, "H %g > log C", h);
        cr_assert(fabs(ref_kl_probs(C, q, q)) < 1e-15, "KL(q||q)");
        /* the batch API with teacher logits equal to the student's */
        double klzz =
            ref_kl_batch(1, C, z, C, NULL, 0, z, C, 2, NULL, NULL, NULL);
        cr_assert(fabs(klzz) < 1e-15, "KL(softmax z || softmax z) = %g", klzz);
        double klb =
            ref_kl_batch(1, C, z, C, q, C, NULL, 0, 2, NULL, NULL, NULL);
        ASSERT_NEAR(klb, kl, 1e-13, "KL batch vs probs");
        /* softmax sums to 1 */
        double s = 0.0;
        for (int j = 0; j < C; j++)
            s += p[j];
        ASSERT_NEAR(s, 1.0, 1e-15, "sum softmax");
    }
}

/* ------------------------------------------------------------------ */
/* PyTorch semantics, derived by hand                                   */
/* ------------------------------------------------------------------ */

/* A fixed 4x3 problem used below. */
static const double Z43[12] = {0.5, -1.0, 2.0,  1.5,   0.25, -0.5,
                               3.0, 3.0,  -2.0, -0.75, 0.0,  1.25};

static double nll_hand(const double *row, int64_t c, int64_t j)
{
    return ref_lse(c, row) - row[j];
}

Test(torch, weighted_mean_denominator)
{
    const double w[3] = {0.5, 2.0, 3.0};
    const int64_t y[4] = {0, 2, -100, 1};
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.weights = w;
    double rows[4], g[12];
    double mean = ref_ce_index(4, 3, Z43, 3, y, &o, rows, NULL, g);
    double num = 0.5 * nll_hand(Z43, 3, 0) + 3.0 * nll_hand(Z43 + 3, 3, 2) +
                 2.0 * nll_hand(Z43 + 9, 3, 1);
    double den = 0.5 + 3.0 + 2.0;
    ASSERT_NEAR(mean, num / den, 1e-14, "weighted mean");
    ASSERT_NEAR(rows[1], 3.0 * nll_hand(Z43 + 3, 3, 2), 1e-14, "row 1");
    cr_assert(rows[2] == 0.0, "ignored row loss");
    o.reduction = 2;
    ASSERT_NEAR(ref_ce_index(4, 3, Z43, 3, y, &o, NULL, NULL, NULL), num, 1e-14,
                "weighted sum");

    /* smoothing: both terms divided by the same sum of target weights */
    o.reduction = 1;
    o.label_smoothing = 0.2;
    mean = ref_ce_index(4, 3, Z43, 3, y, &o, NULL, NULL, NULL);
    double tot = 0.0;
    for (int i = 0; i < 4; i++) {
        if (y[i] == -100)
            continue;
        const double *zi = Z43 + 3 * i;
        double smooth = 0.0;
        for (int j = 0; j < 3; j++)
            smooth += w[j] * nll_hand(zi, 3, j);
        tot += 0.8 * w[y[i]] * nll_hand(zi, 3, y[i]) + 0.2 / 3.0 * smooth;
    }
    ASSERT_NEAR(mean, tot / den, 1e-14, "smoothed weighted mean");

    /* z-loss is divided by the same denominator */
    o.label_smoothing = 0.0;
    o.z_loss = 0.01;
    mean = ref_ce_index(4, 3, Z43, 3, y, &o, NULL, NULL, NULL);
    double zl = 0.0;
    for (int i = 0; i < 4; i++)
        if (y[i] != -100)
            zl += 0.01 * pow(ref_lse(3, Z43 + 3 * i), 2);
    ASSERT_NEAR(mean, (num + zl) / den, 1e-14, "z-loss mean");
}

Test(torch, all_ignored_and_empty)
{
    const int64_t y[4] = {-100, -100, -100, -100};
    double rows[4], lse[4], g[12];
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    for (int i = 0; i < 12; i++)
        g[i] = 42.0;
    double mean = ref_ce_index(4, 3, Z43, 3, y, &o, rows, lse, g);
    cr_assert(mean == 0.0, "all ignored mean: %g", mean);
    cr_assert(max_abs(g, 12) == 0.0, "all ignored: zero gradient");
    cr_assert(max_abs(rows, 4) == 0.0, "all ignored: zero rows");
    ASSERT_NEAR(lse[3], ref_lse(3, Z43 + 9), 1e-15, "lse of ignored row");
    o.empty_mean_nan = 1;
    mean = ref_ce_index(4, 3, Z43, 3, y, &o, NULL, NULL, g);
    cr_assert(isnan(mean), "all ignored mean with flag: %g", mean);
    cr_assert(max_abs(g, 12) == 0.0, "flag: gradient still zero");
    o.reduction = 2;
    cr_assert(ref_ce_index(4, 3, Z43, 3, y, &o, NULL, NULL, NULL) == 0.0);
    /* zero-weight targets give a zero denominator too */
    const double w0[3] = {0.0, 0.0, 1.0};
    const int64_t y01[2] = {0, 1};
    o.reduction = 1;
    o.weights = w0;
    o.empty_mean_nan = 0;
    o.label_smoothing = 0.1; /* rows with a nonzero loss, zero denominator */
    for (int i = 0; i < 6; i++)
        g[i] = 42.0;
    cr_assert(ref_ce_index(2, 3, Z43, 3, y01, &o, rows, NULL, g) == 0.0);
    cr_assert(rows[0] > 0.0, "the rows themselves are not zero");
    cr_assert(max_abs(g, 6) == 0.0, "zero denominator: zero gradient");
    o.label_smoothing = 0.0;
    o.empty_mean_nan = 1;
    cr_assert(isnan(ref_ce_index(2, 3, Z43, 3, y01, &o, NULL, NULL, g)));
    cr_assert(max_abs(g, 6) == 0.0, "zero denominator: zero gradient");
    /* empty batch */
    ref_ce_opts_default(&o);
    cr_assert(ref_ce_index(0, 3, Z43, 3, y, &o, NULL, NULL, NULL) == 0.0);
    cr_assert(ref_ce_probs(0, 3, Z43, 3, Z43, 3, &o, NULL, NULL, NULL) == 0.0);
    o.empty_mean_nan = 1;
    cr_assert(isnan(ref_ce_index(0, 3, Z43, 3, y, &o, NULL, NULL, NULL)));
    cr_assert(isnan(ref_ce_probs(0, 3, Z43, 3, Z43, 3, &o, NULL, NULL, NULL)));
    o.reduction = 2;
    cr_assert(ref_ce_index(0, 3, Z43, 3, y, &o, NULL, NULL, NULL) == 0.0);
}

Test(torch, smoothing_one_is_uniform_target)
{
    const int64_t y[4] = {0, 2, 1, 1};
    double u[12], ri[4], rp[4], gi[12], gp[12];
    for (int i = 0; i < 12; i++)
        u[i] = 1.0 / 3.0;
    ref_ce_opts oi, op;
    ref_ce_opts_default(&oi);
    ref_ce_opts_default(&op);
    oi.label_smoothing = 1.0;
    double li = ref_ce_index(4, 3, Z43, 3, y, &oi, ri, NULL, gi);
    double lp = ref_ce_probs(4, 3, Z43, 3, u, 3, &op, rp, NULL, gp);
    ASSERT_NEAR(li, lp, 1e-14, "alpha=1 vs uniform q");
    TU_ASSERT_CLOSE(tu_compare_f64(rp, ri, 4, 1e-15, 1e-14), "rows");
    TU_ASSERT_CLOSE(tu_compare_f64(gp, gi, 12, 1e-15, 1e-13), "grads");
    for (int i = 0; i < 4; i++) {
        double s = 0.0;
        for (int j = 0; j < 3; j++)
            s += nll_hand(Z43 + 3 * i, 3, j) / 3.0;
        ASSERT_NEAR(ri[i], s, 1e-14, "mean nll over classes");
    }
    /* with probability targets, alpha = 1 also ignores q */
    double q[12] = {1, 0, 0, 0, 1, 0, 0.5, 0.5, 0, 0.2, 0.3, 0.5};
    op.label_smoothing = 1.0;
    double lq = ref_ce_probs(4, 3, Z43, 3, q, 3, &op, NULL, NULL, NULL);
    ASSERT_NEAR(lq, lp, 1e-14, "probs alpha=1");
}

Test(torch, one_class)
{
    double z[3] = {2.5, -7.0, 0.0}, g[3], rows[3], lse[3], q[3] = {1, 1, 1};
    int64_t y[3] = {0, 0, 0};
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.softcap = 5.0;
    o.label_smoothing = 0.3;
    double l = ref_ce_index(3, 1, z, 1, y, &o, rows, lse, g);
    cr_assert(l == 0.0 && max_abs(rows, 3) == 0.0 && max_abs(g, 3) == 0.0,
              "C=1: loss %g", l);
    ASSERT_NEAR(lse[1], 5.0 * tanh(-7.0 / 5.0), 1e-15, "C=1 lse is z'");
    l = ref_ce_probs(3, 1, z, 1, q, 1, &o, rows, NULL, g);
    cr_assert(l == 0.0 && max_abs(g, 3) == 0.0, "C=1 probs: loss %g", l);
    /* z-loss on C=1: s z'^2 and gradient 2 s z' */
    ref_ce_opts_default(&o);
    o.z_loss = 0.5;
    o.reduction = 2;
    l = ref_ce_index(3, 1, z, 1, y, &o, rows, NULL, g);
    ASSERT_NEAR(rows[0], 0.5 * 2.5 * 2.5, 1e-15, "C=1 z-loss");
    ASSERT_NEAR(g[1], 2 * 0.5 * -7.0, 1e-15, "C=1 z-loss grad");
}

Test(torch, index_equals_one_hot_probs)
{
    const double w[3] = {0.5, 2.0, 3.0};
    const int64_t y[4] = {0, 2, 1, 1};
    double q[12] = {0};
    for (int i = 0; i < 4; i++)
        q[3 * i + y[i]] = 1.0;
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.weights = w;
    o.label_smoothing = 0.1;
    o.z_loss = 1e-3;
    o.softcap = 4.0;
    double ri[4], rp[4], gi[12], gp[12];
    for (int red = 0; red < 3; red++) {
        o.reduction = red;
        double li = ref_ce_index(4, 3, Z43, 3, y, &o, ri, NULL, gi);
        double lp = ref_ce_probs(4, 3, Z43, 3, q, 3, &o, rp, NULL, gp);
        TU_ASSERT_CLOSE(tu_compare_f64(ri, rp, 4, 1e-15, 1e-14), "rows");
        if (red != 1) {
            ASSERT_NEAR(li, lp, 1e-14, "sum/none");
            TU_ASSERT_CLOSE(tu_compare_f64(gi, gp, 12, 1e-15, 1e-13), "grad");
        } else {
            /* mean: index divides by sum w_y = 0.5+3+2+2, probs by n */
            ASSERT_NEAR(li * 7.5, lp * 4.0, 1e-14, "mean denominators");
            for (int k = 0; k < 12; k++)
                gp[k] *= 4.0 / 7.5;
            TU_ASSERT_CLOSE(tu_compare_f64(gi, gp, 12, 1e-15, 1e-13),
                            "mean grad");
        }
    }
}

Test(torch, reductions_consistent)
{
    tu_rng r;
    tu_rng_seed(&r, 77);
    enum { N = 6, C = 10 };
    double z[N * C], w[C], rows[N], g0[N * C], g1[N * C], g2[N * C];
    int64_t y[N];
    fill_peaked(&r, N, C, C, z);
    tu_fill_targets_i64(&r, N, C, y);
    y[3] = -100;
    for (int j = 0; j < C; j++)
        w[j] = 0.3 + tu_uniform(&r);
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.weights = w;
    o.label_smoothing = 0.05;
    o.z_loss = 1e-4;
    o.reduction = 0;
    double none = ref_ce_index(N, C, z, C, y, &o, rows, NULL, g0);
    o.reduction = 2;
    double sum = ref_ce_index(N, C, z, C, y, &o, NULL, NULL, g2);
    o.reduction = 1;
    double mean = ref_ce_index(N, C, z, C, y, &o, NULL, NULL, g1);
    double s = 0.0, den = 0.0;
    for (int i = 0; i < N; i++) {
        s += rows[i];
        if (y[i] != -100)
            den += w[y[i]];
    }
    ASSERT_NEAR(none, s, 1e-14, "none returns the sum");
    ASSERT_NEAR(sum, s, 1e-14, "sum");
    ASSERT_NEAR(mean, s / den, 1e-14, "mean");
    TU_ASSERT_CLOSE(tu_compare_f64(g0, g2, N * C, 0, 0), "grad none = sum");
    for (int k = 0; k < N * C; k++)
        g2[k] /= den;
    TU_ASSERT_CLOSE(tu_compare_f64(g2, g1, N * C, 1e-17, 1e-14), "grad mean");
}

Test(torch, out_of_range_target)
{
    const int64_t y[4] = {0, 7, -1, 2};
    double rows[4], lse[4], g[12];
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    double mean = ref_ce_index(4, 3, Z43, 3, y, &o, rows, lse, g);
    cr_assert(isnan(mean));
    cr_assert(isnan(rows[1]) && isnan(rows[2]) && isfinite(rows[0]) &&
              isfinite(rows[3]));
    for (int j = 0; j < 3; j++)
        cr_assert(isnan(g[3 + j]) && isnan(g[6 + j]));
    cr_assert(isfinite(lse[1]) && isfinite(lse[2]), "lse still computed");
    /* good rows: as if the bad ones were absent from the denominator */
    double zz[6], gg[6];
    memcpy(zz, Z43, 3 * sizeof(double));
    memcpy(zz + 3, Z43 + 9, 3 * sizeof(double));
    const int64_t yy[2] = {0, 2};
    ref_ce_index(2, 3, zz, 3, yy, &o, NULL, NULL, gg);
    TU_ASSERT_CLOSE(tu_compare_f64(gg, g, 3, 0, 1e-15), "row 0 grad");
    TU_ASSERT_CLOSE(tu_compare_f64(gg + 3, g + 9, 3, 0, 1e-15), "row 3 grad");
}

Test(torch, special_values)
{
    const double inf = INFINITY;
    /* rows: -inf target logit | all -inf | a NaN | +inf | a -inf non-target */
    double z[5 * 3] = {-inf, 1.0, 2.0, -inf, -inf, -inf, 0.0, NAN,
                       1.0,  0.0, inf, 1.0,  0.5,  -inf, 1.5};
    const int64_t y[5] = {0, 1, 2, 0, 2};
    double rows[5], lse[5], g[15];
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    ref_ce_index(5, 3, z, 3, y, &o, rows, lse, g);
    cr_assert(rows[0] == inf, "-inf target logit: %g", rows[0]);
    cr_assert(isfinite(g[0]) && isfinite(g[1]) && isfinite(g[2]));
    ASSERT_NEAR(g[0], -1.0, 1e-15, "p_y - 1 with p_y = 0");
    for (int i = 1; i <= 3; i++) {
        cr_assert(isnan(rows[i]) && isnan(lse[i]), "bad row %d", i);
        for (int j = 0; j < 3; j++)
            cr_assert(isnan(g[3 * i + j]), "bad row %d grad", i);
    }
    ASSERT_NEAR(rows[4], log1p(exp(-1.0)), 1e-15, "-inf non-target");
    cr_assert(g[4 * 3 + 1] == 0.0, "zero prob, zero grad");
    /* a bad row that is ignored: loss 0, grad 0 */
    const int64_t yi[5] = {0, -100, -100, -100, 2};
    ref_ce_index(5, 3, z, 3, yi, &o, rows, lse, g);
    cr_assert(rows[2] == 0.0 && g[7] == 0.0 && isnan(lse[2]));
    /* softcap tames infinities: +-inf -> +-cap, derivative 0 */
    o.softcap = 2.0;
    const int64_t y3[1] = {0};
    double zc[3] = {inf, -inf, 0.0}, gc[3], rc;
    ref_ce_index(1, 3, zc, 3, y3, &o, &rc, NULL, gc);
    double capped[3] = {2.0, -2.0, 0.0};
    ASSERT_NEAR(rc, ref_lse(3, capped) - 2.0, 1e-15, "capped inf");
    cr_assert(gc[0] == 0.0 && gc[1] == 0.0 && isfinite(gc[2]));
    /* ref_lse keeps the mathematical values */
    cr_assert(ref_lse(3, z + 3) == -inf && ref_lse(3, z + 9) == inf &&
              isnan(ref_lse(3, z + 6)));
    /* probability targets: 0 * log 0 = 0 for a masked class */
    double zm[3] = {1.0, -inf, 0.5}, qm[3] = {0.25, 0.0, 0.75}, rm;
    ref_ce_opts_default(&o);
    ref_ce_probs(1, 3, zm, 3, qm, 3, &o, &rm, NULL, NULL);
    double zt[2] = {1.0, 0.5};
    ASSERT_NEAR(rm, 0.25 * nll_hand(zt, 2, 0) + 0.75 * nll_hand(zt, 2, 1),
                1e-15, "masked class");
    /* NaN only poisons its own row under NONE, and the reduced loss */
    double zn[6] = {1, 2, 3, NAN, 0, 0}, rn[2];
    const int64_t yn[2] = {1, 1};
    o.reduction = 1;
    cr_assert(isnan(ref_ce_index(2, 3, zn, 3, yn, &o, rn, NULL, NULL)));
    cr_assert(isfinite(rn[0]) && isnan(rn[1]));
}

Test(torch, softcap_and_zloss_by_hand)
{
    const int64_t y[4] = {2, 0, 1, 2};
    const double cap = 1.5, s = 0.02;
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    o.softcap = cap;
    o.z_loss = s;
    double rows[4], lse[4];
    ref_ce_index(4, 3, Z43, 3, y, &o, rows, lse, NULL);
    for (int i = 0; i < 4; i++) {
        double zc[3];
        for (int j = 0; j < 3; j++)
            zc[j] = cap * tanh(Z43[3 * i + j] / cap);
        double l = ref_lse(3, zc);
        ASSERT_NEAR(lse[i], l, 1e-15, "capped lse");
        ASSERT_NEAR(rows[i], l - zc[y[i]] + s * l * l, 1e-14, "row");
    }
}

Test(torch, probs_weights_smoothing_by_hand)
{
    const double w[3] = {0.5, 2.0, 3.0};
    double q[12] = {0.2, 0.3, 0.5, 1, 0, 0, 0, 0.5, 0.5, 0.1, 0.1, 0.8};
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.weights = w;
    o.label_smoothing = 0.3;
    double mean = ref_ce_probs(4, 3, Z43, 3, q, 3, &o, NULL, NULL, NULL);
    double tot = 0.0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            tot +=
                w[j] * (0.7 * q[3 * i + j] + 0.1) * nll_hand(Z43 + 3 * i, 3, j);
    ASSERT_NEAR(mean, tot / 4.0, 1e-14, "probs mean divides by n");
}

Test(torch, bce_values)
{
    double z[6] = {0.0, 0.0, 1000.0, -1000.0, -800.0, 2.0};
    double y[6] = {1.0, 1.0, 1.0, 1.0, 0.3, 0.0};
    double pw[1] = {3.0};
    double l[6], g[6];
    ref_bce_logits(6, 1, z, y, NULL, NULL, 0, l, g);
    ASSERT_NEAR(l[0], log(2.0), 1e-15, "z=0");
    ASSERT_NEAR(g[0], -0.5, 1e-15, "z=0 grad");
    cr_assert(l[2] >= 0.0 && l[2] < 1e-300, "z=+1000, y=1: %g", l[2]);
    ASSERT_NEAR(l[3], 1000.0, 1e-15, "z=-1000, y=1");
    ASSERT_NEAR(g[3], -1.0, 1e-15, "z=-1000 grad");
    ASSERT_NEAR(l[4], 0.3 * 800.0, 1e-15, "z=-800, y=0.3");
    ASSERT_NEAR(l[5], log1p(exp(2.0)), 1e-15, "z=2, y=0");
    ASSERT_NEAR(g[5], 1.0 / (1.0 + exp(-2.0)), 1e-15, "sigmoid");
    ref_bce_logits(6, 1, z, y, pw, NULL, 0, l, g);
    ASSERT_NEAR(l[0], 3.0 * log(2.0), 1e-15, "pos_weight 3 at z=0");
    ASSERT_NEAR(g[0], -1.5, 1e-15, "pos_weight grad");
    ASSERT_NEAR(l[4], 3.0 * 0.3 * 800.0, 1e-15, "pos_weight z=-800");
    double w[6] = {2, 1, 1, 1, 1, 0.5};
    double mean = ref_bce_logits(2, 3, z, y, NULL, w, 1, NULL, NULL);
    double sum = ref_bce_logits(2, 3, z, y, NULL, w, 2, l, NULL);
    ASSERT_NEAR(mean, sum / 6.0, 1e-15, "mean over all elements");
    ASSERT_NEAR(l[0], 2.0 * log(2.0), 1e-15, "element weight");
    /* pos_weight is per column */
    double pw3[3] = {1.0, 10.0, 1.0}, z3[3] = {0, 0, 0}, y3[3] = {1, 1, 1};
    ref_bce_logits(1, 3, z3, y3, pw3, NULL, 0, l, NULL);
    ASSERT_NEAR(l[1], 10.0 * log(2.0), 1e-15, "column 1 pos_weight");
    ASSERT_NEAR(l[2], log(2.0), 1e-15, "column 2 pos_weight");
    cr_assert(ref_bce_logits(0, 3, z3, y3, NULL, NULL, 1, NULL, NULL) == 0.0);
    /* the tails keep full relative accuracy: log(1 + e^-40) ~ 4.2e-18 */
    double zt[2] = {-40.0, 40.0}, yt[2] = {0.0, 1.0};
    ref_bce_logits(1, 2, zt, yt, NULL, NULL, 0, l, g);
    ASSERT_NEAR(l[0] / log1p(exp(-40.0)), 1.0, 1e-14, "y=0, z=-40");
    ASSERT_NEAR(l[1] / log1p(exp(-40.0)), 1.0, 1e-14, "y=1, z=40");
    ASSERT_NEAR(g[0] / exp(-40.0), 1.0, 1e-13, "sigmoid(-40)");
    ASSERT_NEAR(g[1] / -exp(-40.0), 1.0, 1e-13, "-sigmoid(-40)");
}

Test(torch, kl_reductions_and_teacher_forms)
{
    tu_rng r;
    tu_rng_seed(&r, 8);
    enum { N = 5, C = 7 };
    double z[N * C], t[N * C], q[N * C], rows[N], rq[N];
    fill_mild(&r, N, C, C, 2.0, z);
    fill_mild(&r, N, C, C, 2.0, t);
    for (int i = 0; i < N; i++)
        ref_softmax(C, t + i * C, q + i * C);
    double sum = ref_kl_batch(N, C, z, C, NULL, 0, t, C, 2, rows, NULL, NULL);
    double bm = ref_kl_batch(N, C, z, C, NULL, 0, t, C, 1, NULL, NULL, NULL);
    double none = ref_kl_batch(N, C, z, C, q, C, NULL, 0, 0, rq, NULL, NULL);
    ASSERT_NEAR(bm, sum / N, 1e-15, "batchmean = sum / n");
    ASSERT_NEAR(none, sum, 1e-13, "probs vs logits teacher");
    TU_ASSERT_CLOSE(tu_compare_f64(rows, rq, N, 1e-15, 1e-13), "rows");
    for (int i = 0; i < N; i++) {
        double p[C];
        ref_softmax(C, z + i * C, p);
        ASSERT_NEAR(rows[i], ref_kl_probs(C, q + i * C, p), 1e-13, "row");
    }
    cr_assert(isnan(ref_kl_batch(N, C, z, C, q, C, t, C, 2, NULL, NULL, NULL)),
              "both teachers given");
    cr_assert(
        isnan(ref_kl_batch(N, C, z, C, NULL, 0, NULL, 0, 2, NULL, NULL, NULL)),
        "no teacher given");
}

/* ------------------------------------------------------------------ */
/* Cancellation: why the library does not compute lse - z_y, p_y - 1    */
/* ------------------------------------------------------------------ */

/* A float32 row of C logits whose target (the maximum) has probability
 * about 1 - delta. */
static void cancel_row(tu_rng *r, int c, int64_t y, double delta, float *z)
{
    double s = 0.0;
    for (int j = 0; j < c; j++) {
        z[j] = (float)tu_normal(r);
        if (j != y)
            s += exp((double)z[j]);
    }
    z[y] = (float)log(s * (1.0 - delta) / delta);
}

Test(cancel, naive_fp32_vs_cancellation_free)
{
    enum { C = 256, ROWS = 8 };
    const double deltas[3] = {1e-3, 1e-6, 1e-9};
    tu_rng r;
    tu_rng_seed(&r, 2024);
    for (int d = 0; d < 3; d++) {
        double naive_loss = 0.0, naive_grad = 0.0; /* worst rel. errors */
        double free_loss = 0.0, free_grad = 0.0;
        for (int row = 0; row < ROWS; row++) {
            float z[C];
            double zd[C], g[C], loss;
            int64_t y = 17 + row;
            cancel_row(&r, C, y, deltas[d], z);
            tu_f32_to_f64(z, zd, C);
            ref_ce_opts o;
            ref_ce_opts_default(&o);
            o.reduction = 2;
            loss = ref_ce_index(1, C, zd, C, &y, &o, NULL, NULL, g);
            double one_minus_py = -g[y];
            cr_assert(fabs(one_minus_py / deltas[d] - 1.0) < 1e-3,
                      "row built with p_y = 1 - %g", deltas[d]);
            ASSERT_NEAR(loss, log1p(one_minus_py / (1 - one_minus_py)), 1e-12,
                        "nll = -log p_y");

            /* naive float32: lse - z_y and p_y - 1 */
            float m = z[0];
            for (int j = 1; j < C; j++)
                m = z[j] > m ? z[j] : m;
            float sum = 0.0f;
            for (int j = 0; j < C; j++)
                sum += expf(z[j] - m);
            float lse = m + logf(sum);
            float nll_naive = lse - z[y];
            float py = expf(z[y] - m) / sum;
            float gy_naive = py - 1.0f;
            double e1 = fabs((double)nll_naive - loss) / loss;
            double e2 = fabs((double)gy_naive - g[y]) / fabs(g[y]);
            naive_loss = e1 > naive_loss ? e1 : naive_loss;
            naive_grad = e2 > naive_grad ? e2 : naive_grad;

            /* cancellation-free float32: S and T kept apart */
            float s = 0.0f, t = expf(z[y] - m);
            for (int j = 0; j < C; j++)
                if (j != y)
                    s += expf(z[j] - m);
            float nll_free = log1pf(s / t);
            float gy_free = -(s / (s + t));
            e1 = fabs((double)nll_free - loss) / loss;
            e2 = fabs((double)gy_free - g[y]) / fabs(g[y]);
            free_loss = e1 > free_loss ? e1 : free_loss;
            free_grad = e2 > free_grad ? e2 : free_grad;
        }
        cr_log_info("p_y = 1 - %g: naive fp32 rel. error loss %.3g grad %.3g;"
                    " cancellation-free %.3g %.3g",
                    deltas[d], naive_loss, naive_grad, free_loss, free_grad);
        if (d > 0) {
            cr_assert(naive_loss > 1e-2, "naive loss error only %g",
                      naive_loss);
            cr_assert(naive_grad > 1e-2, "naive grad error only %g",
                      naive_grad);
        } else {
            /* already beyond the library's fp32 tolerance of 1e-5 */
            cr_assert(naive_loss > 1e-5, "naive loss error only %g",
                      naive_loss);
        }
        cr_assert(free_loss < 2e-6, "cancellation-free loss error %g",
                  free_loss);
        cr_assert(free_grad < 2e-6, "cancellation-free grad error %g",
                  free_grad);
    }
}

/* The reference itself must not cancel: compare with long double
 * log1p(S/T) on rows up to p_y = 1 - 1e-15, with the target logit large. */
Test(cancel, reference_is_cancellation_free)
{
    enum { C = 64 };
    tu_rng r;
    tu_rng_seed(&r, 5);
    const double deltas[4] = {1e-6, 1e-9, 1e-12, 1e-15};
    for (int d = 0; d < 4; d++) {
        double z[C], g[C], loss;
        int64_t y = 5;
        long double s = 0.0L;
        for (int j = 0; j < C; j++)
            z[j] = 100.0 + tu_normal(&r);
        for (int j = 0; j < C; j++)
            if (j != y)
                s += expl((long double)z[j] - 100.0L);
        z[y] = 100.0 + (double)logl(s * (1.0L - deltas[d]) / deltas[d]);
        long double t = expl((long double)z[y] - 100.0L);
        long double expect = log1pl(s / t);
        long double omp = s / (s + t);
        loss = ref_ce_index(1, C, z, C, &y, NULL, NULL, NULL, g);
        double e1 = fabs((double)(((long double)loss - expect) / expect));
        double e2 = fabs((double)(((long double)-g[y] - omp) / omp));
        cr_assert(e1 < 1e-14 && e2 < 1e-14,
                  "p_y = 1 - %g: loss rel err %g, grad rel err %g", deltas[d],
                  e1, e2);
        /* the same through probability targets (one-hot) */
        double q[C] = {0}, gq[C];
        q[y] = 1.0;
        loss = ref_ce_probs(1, C, z, C, q, C, NULL, NULL, NULL, gq);
        e1 = fabs((double)(((long double)loss - expect) / expect));
        e2 = fabs((double)(((long double)-gq[y] - omp) / omp));
        cr_assert(e1 < 1e-14 && e2 < 1e-14,
                  "probs p_y = 1 - %g: loss rel err %g, grad rel err %g",
                  deltas[d], e1, e2);
    }
}

/* ------------------------------------------------------------------ */
/* The shared helpers                                                  */
/* ------------------------------------------------------------------ */

Test(testutil, rng_deterministic_and_sane)
{
    tu_rng a, b;
    tu_rng_seed(&a, 1);
    tu_rng_seed(&b, 1);
    for (int i = 0; i < 100; i++)
        cr_assert(tu_next(&a) == tu_next(&b));
    tu_rng_seed(&b, 2);
    cr_assert(tu_next(&a) != tu_next(&b));
    double s = 0.0, s2 = 0.0, umin = 1.0, umax = 0.0;
    enum { K = 20000 };
    for (int i = 0; i < K; i++) {
        double u = tu_uniform(&a);
        umin = u < umin ? u : umin;
        umax = u > umax ? u : umax;
        double x = tu_normal(&a);
        s += x;
        s2 += x * x;
    }
    cr_assert(umin >= 0.0 && umax < 1.0 && umin < 0.01 && umax > 0.99);
    cr_assert(fabs(s / K) < 0.05 && fabs(s2 / K - 1.0) < 0.05,
              "normal mean %g var %g", s / K, s2 / K);
    for (int i = 0; i < 1000; i++) {
        int64_t v = tu_below(&a, 7);
        cr_assert(v >= 0 && v < 7);
    }
}

Test(testutil, fillers)
{
    enum { N = 50, C = 100, LD = 104 };
    tu_rng r;
    tu_rng_seed(&r, 3);
    float *z = xmalloc(N * LD * sizeof(float));
    float *q = xmalloc(N * LD * sizeof(float));
    tu_fill_logits(&r, N, C, LD, z, NAN);
    int peaked = 0;
    for (int i = 0; i < N; i++) {
        for (int j = C; j < LD; j++)
            cr_assert(isnan(z[i * LD + j]), "padding");
        double zd[C], p[C];
        for (int j = 0; j < C; j++) {
            cr_assert(isfinite(z[i * LD + j]));
            zd[j] = z[i * LD + j];
        }
        ref_softmax(C, zd, p);
        peaked += max_abs(p, C) > 0.5;
    }
    cr_assert(peaked > N * 3 / 4, "softmax peaked in only %d of %d rows",
              peaked, N);
    tu_fill_probs(&r, N, C, LD, q, -1.0f);
    int zeros = 0;
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int j = 0; j < C; j++) {
            cr_assert(q[i * LD + j] >= 0.0f);
            zeros += q[i * LD + j] == 0.0f;
            s += q[i * LD + j];
        }
        ASSERT_NEAR(s, 1.0, 1e-6, "row sum");
        for (int j = C; j < LD; j++)
            cr_assert(q[i * LD + j] == -1.0f, "padding");
    }
    cr_assert(zeros > N * C / 10 && zeros < N * C / 2, "zeros %d", zeros);
    int64_t y[N];
    int32_t y32[N];
    tu_fill_targets_i64(&r, N, C, y);
    tu_fill_targets_i32(&r, N, C, y32);
    for (int i = 0; i < N; i++)
        cr_assert(y[i] >= 0 && y[i] < C && y32[i] >= 0 && y32[i] < C);
    double d[N * C];
    tu_rows_f32_to_f64(N, C, LD, z, d);
    cr_assert(d[C + 5] == (double)z[LD + 5]);
    /* one class: fill must not loop or write out of bounds */
    float z1[3] = {0, 0, 0};
    tu_fill_logits(&r, 3, 1, 1, z1, NAN);
    cr_assert(isfinite(z1[0]) && isfinite(z1[2]));
    free(z);
    free(q);
}

Test(testutil, compare)
{
    double ref[6] = {1.0, -2.0, NAN, INFINITY, 0.0, 100.0};
    double got[6] = {1.0, -2.0, NAN, INFINITY, 0.0, 100.0};
    tu_close c = tu_compare_f64(ref, got, 6, 0.0, 0.0);
    cr_assert(c.ok && c.n_bad == 0 && c.rel_norm == 0.0);
    got[5] = 100.001;
    c = tu_compare_f64(ref, got, 6, 0.0, 1e-6);
    cr_assert(!c.ok && c.n_bad == 1 && c.worst == 5);
    cr_assert(fabs(c.worst_err - 0.001) < 1e-9 && c.worst_ref == 100.0);
    c = tu_compare_f64(ref, got, 6, 0.0, 1e-4);
    cr_assert(c.ok && c.worst == 5, "within rtol; worst still reported");
    got[5] = 100.0;
    got[2] = 0.0; /* NaN expected */
    c = tu_compare_f64(ref, got, 6, 1.0, 1.0);
    cr_assert(!c.ok && c.worst == 2);
    got[2] = NAN;
    got[4] = NAN; /* NaN where a number is expected */
    c = tu_compare_f64(ref, got, 6, 1.0, 1.0);
    cr_assert(!c.ok && c.n_bad == 1 && c.worst == 4);
    got[4] = 0.0;
    got[3] = -INFINITY;
    c = tu_compare_f64(ref, got, 6, 1.0, 1.0);
    cr_assert(!c.ok && c.worst == 3);
    got[3] = 1e300; /* a finite number never matches an infinity */
    c = tu_compare_f64(ref, got, 6, 1e301, 1.0);
    cr_assert(!c.ok && c.worst == 3);
    float gf[6] = {1.0f, -2.0f, NAN, INFINITY, 1e-3f, 100.0f};
    c = tu_compare_f32(ref, gf, 6, 2e-3, 0.0);
    cr_assert(c.ok && c.worst == 4);
    c = tu_compare_f32(ref, gf, 6, 1e-4, 0.0);
    cr_assert(!c.ok);
    /* strided variant */
    float rows[2 * 4] = {1.0f, -2.0f, NAN, 9.0f, 0.0f, 100.0f, 7.0f, 9.0f};
    double dense[6] = {1.0, -2.0, NAN, 0.0, 100.0, 7.0};
    c = tu_compare_rows_f32(dense, rows, 2, 3, 4, 0.0, 0.0);
    cr_assert(c.ok);
    rows[5] = 101.0f;
    c = tu_compare_rows_f32(dense, rows, 2, 3, 4, 0.0, 1e-3);
    cr_assert(!c.ok && c.worst == 4 && c.worst_got == 101.0);
    c = tu_compare_f64(ref, got, 0, 0.0, 0.0);
    cr_assert(c.ok && c.worst == -1);
}
