/*
 * test_golden.c - parity with PyTorch through the committed golden vectors
 * (tests/golden/, made by gen_golden.py with torch in float64):
 *  - the float64 reference matches torch to ~1e-10 relative;
 *  - the CPU backend (fp32 math, fp64 reductions) matches torch within the
 *    fp32 tolerance, on every case, through every op that applies
 *    (forward, fused forward+backward, backward from the saved lse).
 * Golden inputs are exactly representable in float32, so the library sees
 * the very numbers torch saw.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "ref.h"
#include "testutil.h"
#include "xent.h"

/* torch's float64 values vs the float64 reference */
#define REF_RTOL 1e-10
/* fp32 math vs float64: |d| <= FP32_TOL * (|ref| + max|ref| of the tensor) */
#define FP32_TOL 1e-5

typedef struct ce_golden {
    const golden_case *gc;
    char name[64];
    int64_t n, c;
    int reduction;
    int probs;
    int64_t ignore_index;
    double alpha, z_loss, softcap;
    double denom;
    const double *logits, *targets, *weights;
    const double *loss_rows, *lse, *grad;
    double loss;
} ce_golden;

static int parse_reduction(const golden_case *gc)
{
    if (golden_str_is(gc, "reduction", "none"))
        return 0;
    if (golden_str_is(gc, "reduction", "mean"))
        return 1;
    return 2;
}

static ce_golden ce_case(const golden_case *gc)
{
    ce_golden g;
    memset(&g, 0, sizeof g);
    g.gc = gc;
    snprintf(g.name, sizeof g.name, "%s", golden_name(gc));
    g.n = golden_int(gc, "n", -1);
    g.c = golden_int(gc, "c", -1);
    g.reduction = parse_reduction(gc);
    g.probs = golden_str_is(gc, "target", "probs");
    g.ignore_index = golden_int(gc, "ignore_index", -100);
    g.alpha = golden_scalar(gc, "label_smoothing", 0.0);
    g.z_loss = golden_scalar(gc, "z_loss", 0.0);
    g.softcap = golden_scalar(gc, "softcap", 0.0);
    g.denom = golden_scalar(gc, "mean_denom", NAN);
    g.logits = golden_array(gc, "logits", NULL);
    g.targets = golden_array(gc, "targets", NULL);
    g.weights = golden_array(gc, "weights", NULL);
    g.loss_rows = golden_array(gc, "loss_rows", NULL);
    g.lse = golden_array(gc, "lse", NULL);
    g.grad = golden_array(gc, "grad", NULL);
    g.loss = golden_scalar(gc, "loss", NAN);
    return g;
}

static double max_abs(const double *x, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]) && fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/* The value the library gives for torch's `expected` reduced loss: torch's
 * NaN for an empty MEAN is the library's 0 unless the flag asks for NaN. */
static double library_loss(const ce_golden *g, int nan_flag)
{
    if (g->reduction == 1 && g->denom == 0.0 && !nan_flag)
        return 0.0;
    return g->loss;
}

static golden_file *load(const char *op)
{
    char err[256] = "";
    golden_file *f = golden_load_op(op, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_gt(golden_count(f), 0);
    return f;
}

Test(golden, reference_matches_torch_ce)
{
    golden_file *f = load("ce");
    for (int64_t k = 0; k < golden_count(f); k++) {
        ce_golden g = ce_case(golden_at(f, k));
        int64_t n = g.n, c = g.c;
        ref_ce_opts o;
        ref_ce_opts_default(&o);
        o.reduction = g.reduction;
        o.ignore_index = g.ignore_index;
        o.weights = g.weights;
        o.label_smoothing = g.alpha;
        o.z_loss = g.z_loss;
        o.softcap = g.softcap;
        o.empty_mean_nan = 1; /* torch's convention */
        double *rows = calloc((size_t)n + 1, sizeof *rows);
        double *lse = calloc((size_t)n + 1, sizeof *lse);
        double *grad = calloc((size_t)(n * c) + 1, sizeof *grad);
        double loss;
        if (g.probs) {
            loss = ref_ce_probs(n, c, g.logits, c, g.targets, c, &o, rows, lse,
                                grad);
        } else {
            int64_t *y = malloc(((size_t)n + 1) * sizeof *y);
            for (int64_t i = 0; i < n; i++)
                y[i] = (int64_t)g.targets[i];
            loss = ref_ce_index(n, c, g.logits, c, y, &o, rows, lse, grad);
            free(y);
        }
        double atol = 1e-13 * (1.0 + max_abs(g.logits, n * c));
        char what[128];
        snprintf(what, sizeof what, "%s loss", g.name);
        TU_ASSERT_CLOSE(tu_compare_f64(&g.loss, &loss, 1, atol, REF_RTOL),
                        what);
        snprintf(what, sizeof what, "%s loss_rows", g.name);
        TU_ASSERT_CLOSE(tu_compare_f64(g.loss_rows, rows, n, atol, REF_RTOL),
                        what);
        snprintf(what, sizeof what, "%s lse", g.name);
        TU_ASSERT_CLOSE(tu_compare_f64(g.lse, lse, n, atol, REF_RTOL), what);
        snprintf(what, sizeof what, "%s grad", g.name);
        TU_ASSERT_CLOSE(tu_compare_f64(g.grad, grad, n * c, 1e-13, REF_RTOL),
                        what);
        free(rows);
        free(lse);
        free(grad);
    }
    golden_free(f);
}

/* One golden case through the CPU backend: forward, fused and backward. */
static void run_cpu_case(xent_handle_t h, const ce_golden *g, int nan_flag,
                         int use_i32)
{
    int64_t n = g->n, c = g->c;
    size_t nc = (size_t)(n * c) + 1;
    float *z = malloc(nc * sizeof *z);
    float *q = malloc(nc * sizeof *q);
    float *w = malloc(((size_t)c + 1) * sizeof *w);
    int64_t *y64 = malloc(((size_t)n + 1) * sizeof *y64);
    int32_t *y32 = malloc(((size_t)n + 1) * sizeof *y32);
    float *rows = malloc(((size_t)n + 1) * sizeof *rows);
    float *lse = malloc(((size_t)n + 1) * sizeof *lse);
    float *grad = malloc(nc * sizeof *grad);
    float *grad2 = malloc(nc * sizeof *grad2);
    tu_f64_to_f32(g->logits, z, n * c);
    if (g->probs) {
        tu_f64_to_f32(g->targets, q, n * c);
    } else {
        for (int64_t i = 0; i < n; i++) {
            y64[i] = (int64_t)g->targets[i];
            y32[i] = (int32_t)g->targets[i];
        }
    }
    xent_ce_desc d;
    xent_ce_desc_init(&d, n, c);
    d.reduction = (xent_reduction)g->reduction;
    d.target_type = g->probs ? XENT_TARGET_PROBS_F32
                    : use_i32 ? XENT_TARGET_INDEX_I32
                              : XENT_TARGET_INDEX_I64;
    d.ignore_index = g->probs ? -100 : g->ignore_index;
    if (g->weights) {
        tu_f64_to_f32(g->weights, w, c);
        d.weights = w;
        d.n_weights = c;
    }
    d.label_smoothing = (float)g->alpha;
    d.z_loss = (float)g->z_loss;
    d.softcap = (float)g->softcap;
    d.flags = nan_flag ? XENT_FLAG_EMPTY_MEAN_NAN : 0;
    const void *targets = g->probs ? (const void *)q
                          : use_i32 ? (const void *)y32
                                    : (const void *)y64;
    size_t wsb = 0;
    cr_assert_eq(xent_ce_workspace_size(h, &d, &wsb), XENT_STATUS_SUCCESS);
    void *ws = malloc(wsb + 1);
    float loss = -1.0f, loss2 = -1.0f;
    float *lossp = g->reduction ? &loss : NULL;
    float *lossp2 = g->reduction ? &loss2 : NULL;

    cr_assert_eq(xent_ce_forward(h, &d, z, targets, lossp, rows, lse, ws, wsb),
                 XENT_STATUS_SUCCESS, "%s: forward", g->name);
    cr_assert_eq(xent_ce_forward_backward(h, &d, z, targets, NULL, grad,
                                          lossp2, NULL, NULL, ws, wsb),
                 XENT_STATUS_SUCCESS, "%s: forward_backward", g->name);
    char what[128];
    double lmax = max_abs(g->loss_rows, n);
    double want = library_loss(g, nan_flag);
    if (g->reduction) {
        snprintf(what, sizeof what, "%s (i32=%d nanflag=%d) loss", g->name,
                 use_i32, nan_flag);
        TU_ASSERT_CLOSE(tu_compare_f32(&want, &loss, 1, FP32_TOL * lmax,
                                       FP32_TOL),
                        what);
        cr_assert_eq(memcmp(&loss, &loss2, sizeof loss), 0,
                     "%s: fused loss differs from forward loss", g->name);
    }
    snprintf(what, sizeof what, "%s loss_rows", g->name);
    TU_ASSERT_CLOSE(tu_compare_f32(g->loss_rows, rows, n, FP32_TOL * lmax,
                                   FP32_TOL),
                    what);
    snprintf(what, sizeof what, "%s lse", g->name);
    TU_ASSERT_CLOSE(tu_compare_f32(g->lse, lse, n,
                                   FP32_TOL * max_abs(g->lse, n), FP32_TOL),
                    what);
    double gmax = max_abs(g->grad, n * c);
    snprintf(what, sizeof what, "%s grad", g->name);
    TU_ASSERT_CLOSE(tu_compare_f32(g->grad, grad, n * c, FP32_TOL * gmax,
                                   FP32_TOL),
                    what);

    /* backward from the saved lse; its accuracy is that of the fp32 lse,
     * which the golden rows (|z| <= 1e4) keep within the same tolerance
     * relative to the largest gradient element scaled by max|lse| */
    cr_assert_eq(xent_ce_backward(h, &d, z, targets, lse, NULL, grad2, ws, wsb),
                 XENT_STATUS_SUCCESS, "%s: backward", g->name);
    double lse_scale = 1.0 + max_abs(g->lse, n);
    snprintf(what, sizeof what, "%s grad from lse", g->name);
    TU_ASSERT_CLOSE(tu_compare_f32(g->grad, grad2, n * c,
                                   FP32_TOL * gmax * lse_scale, FP32_TOL),
                    what);
    free(ws);
    free(z);
    free(q);
    free(w);
    free(y64);
    free(y32);
    free(rows);
    free(lse);
    free(grad);
    free(grad2);
}

Test(golden, cpu_backend_matches_torch_ce)
{
    golden_file *f = load("ce");
    xent_handle_t h;
    cr_assert_eq(xent_create_cpu(&h, 2), XENT_STATUS_SUCCESS);
    for (int64_t k = 0; k < golden_count(f); k++) {
        ce_golden g = ce_case(golden_at(f, k));
        run_cpu_case(h, &g, 1, 0);
        run_cpu_case(h, &g, 0, g.probs ? 0 : 1);
    }
    xent_destroy(h);
    golden_free(f);
}

Test(golden, covers_every_option)
{
    golden_file *f = load("ce");
    int seen_ignore_inside = 0, seen_weights = 0, seen_smooth = 0,
        seen_probs_smooth = 0, seen_all_ignored = 0, seen_c1 = 0, seen_n1 = 0,
        seen_combined = 0;
    for (int64_t k = 0; k < golden_count(f); k++) {
        ce_golden g = ce_case(golden_at(f, k));
        seen_ignore_inside |= !g.probs && g.ignore_index >= 0;
        seen_weights |= g.weights != NULL;
        seen_smooth |= !g.probs && g.alpha > 0;
        seen_probs_smooth |= g.probs && g.alpha > 0;
        seen_all_ignored |= g.n > 0 && g.denom == 0.0;
        seen_c1 |= g.c == 1;
        seen_n1 |= g.n == 1;
        seen_combined |= g.weights && g.alpha > 0 && g.ignore_index >= 0 &&
                         g.z_loss > 0 && g.softcap > 0;
    }
    cr_assert(seen_ignore_inside && seen_weights && seen_smooth &&
              seen_probs_smooth && seen_all_ignored && seen_c1 && seen_n1);
    cr_assert(seen_combined, "a case combines every option");
    golden_free(f);
}
