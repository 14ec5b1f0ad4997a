/*
 * cancellation.c - see cancellation.h. Each row has a target logit L and
 * other logits drawn in [-1, 1]; L is solved so that p_y = 1 - eps, then
 * rounded to float32, and the reference is computed from the rounded
 * inputs, so the check measures only the library's arithmetic.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "cancellation.h"
#include "ref.h"
#include "testutil.h"

#define ROWS_PER_EPS 4

void conf_cancellation(xent_handle_t h, const tu_mem *m, xent_variant variant)
{
    static const double eps[] = {1e-3, 1e-6, 1e-9};
    const int64_t c = 1000;
    const int64_t n = 3 * ROWS_PER_EPS;
    float *z = malloc((size_t)(n * c) * sizeof *z);
    double *zd = malloc((size_t)(n * c) * sizeof *zd);
    int64_t y[3 * ROWS_PER_EPS];
    tu_rng r;
    tu_rng_seed(&r, 99);
    for (int64_t i = 0; i < n; i++) {
        double e = eps[i / ROWS_PER_EPS];
        y[i] = tu_below(&r, c);
        double rest = 0.0;
        for (int64_t j = 0; j < c; j++) {
            z[i * c + j] = (float)(2.0 * tu_uniform(&r) - 1.0);
            if (j != y[i])
                rest += exp((double)z[i * c + j]);
        }
        /* p_y = e^L / (e^L + rest) = 1 - eps */
        z[i * c + y[i]] = (float)log(rest * (1.0 - e) / e);
    }
    tu_f32_to_f64(z, zd, n * c);
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    double *ref_rows = malloc((size_t)n * sizeof *ref_rows);
    double *ref_grad = malloc((size_t)(n * c) * sizeof *ref_grad);
    ref_ce_index(n, c, zd, c, y, &o, ref_rows, NULL, ref_grad);

    size_t zb = (size_t)(n * c) * sizeof(float);
    float *d_z = m->alloc(zb);
    float *d_g = m->alloc(zb);
    float *d_rows = m->alloc((size_t)n * sizeof(float));
    int64_t *d_y = m->alloc(sizeof y);
    cr_assert(d_z && d_g && d_rows && d_y);
    m->upload(d_z, z, zb);
    m->upload(d_y, y, sizeof y);
    xent_ce_desc d;
    xent_ce_desc_init(&d, n, c);
    d.reduction = XENT_REDUCTION_NONE;
    d.variant = variant;
    cr_assert_eq(xent_ce_forward_backward(h, &d, d_z, d_y, NULL, d_g, NULL,
                                          d_rows, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    m->sync();
    float *rows = malloc((size_t)n * sizeof *rows);
    float *g = malloc(zb);
    m->download(rows, d_rows, (size_t)n * sizeof(float));
    m->download(g, d_g, zb);
    for (int64_t i = 0; i < n; i++) {
        double want_loss = ref_rows[i];
        double want_gy = ref_grad[i * c + y[i]];
        double err_loss = fabs(rows[i] - want_loss) / fabs(want_loss);
        double err_gy = fabs(g[i * c + y[i]] - want_gy) / fabs(want_gy);
        cr_assert(err_loss <= CANCEL_RTOL,
                  "variant %s, 1 - p_y = %g: loss %.9g, reference %.9g, "
                  "relative error %.3g",
                  xent_variant_name(variant), eps[i / ROWS_PER_EPS],
                  (double)rows[i], want_loss, err_loss);
        cr_assert(err_gy <= CANCEL_RTOL,
                  "variant %s, 1 - p_y = %g: target gradient %.9g, reference "
                  "%.9g, relative error %.3g",
                  xent_variant_name(variant), eps[i / ROWS_PER_EPS],
                  (double)g[i * c + y[i]], want_gy, err_gy);
    }
    m->release(d_z);
    m->release(d_g);
    m->release(d_rows);
    m->release(d_y);
    free(z);
    free(zd);
    free(ref_rows);
    free(ref_grad);
    free(rows);
    free(g);
}
