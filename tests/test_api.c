/*
 * test_api.c - the public API's contract without a GPU: status strings,
 * handles, argument validation (every bad input gets its specific status
 * and writes nothing), the empty batch, data problems recorded in the
 * status word, aliasing and workspace rules. Runs on the CPU backend; the
 * validation is the same code for CUDA handles.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "xent.h"

#define N 6
#define C 5

static xent_handle_t h;
static float logits[N * C];
static int64_t targets[N];
static float grad[N * C];
static float rows[N];
static float lse[N];
static float loss;
static unsigned char ws[4096];

static void setup(void)
{
    cr_assert_eq(xent_create_cpu(&h, 1), XENT_STATUS_SUCCESS);
    tu_rng r;
    tu_rng_seed(&r, 7);
    tu_fill_logits(&r, N, C, C, logits, NAN);
    for (int i = 0; i < N; i++)
        targets[i] = i % C;
    for (int i = 0; i < N * C; i++)
        grad[i] = 12345.0f;
    for (int i = 0; i < N; i++)
        rows[i] = lse[i] = 12345.0f;
    loss = 12345.0f;
}

static void teardown(void) { xent_destroy(h); }

static void assert_untouched(void)
{
    for (int i = 0; i < N * C; i++)
        cr_assert_eq(grad[i], 12345.0f, "grad[%d] written on failure", i);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rows[i], 12345.0f, "rows[%d] written on failure", i);
        cr_assert_eq(lse[i], 12345.0f, "lse[%d] written on failure", i);
    }
    cr_assert_eq(loss, 12345.0f, "loss written on failure");
}

static xent_status fwd(const xent_ce_desc *d)
{
    return xent_ce_forward(h, d, logits, targets, &loss, rows, lse, ws,
                           sizeof ws);
}

static xent_status fwd_bwd(const xent_ce_desc *d)
{
    return xent_ce_forward_backward(h, d, logits, targets, NULL, grad, &loss,
                                    rows, lse, ws, sizeof ws);
}

TestSuite(api, .init = setup, .fini = teardown);

Test(api, status_strings_never_null)
{
    for (int s = -3; s < 40; s++) {
        const char *str = xent_status_string((xent_status)s);
        cr_assert_not_null(str);
        cr_assert_gt(strlen(str), 0);
    }
    cr_assert_str_eq(xent_status_string(XENT_STATUS_SUCCESS), "success");
    cr_assert_str_eq(xent_status_string((xent_status)999), "unknown status");
    for (int v = -1; v < 5; v++)
        cr_assert_not_null(xent_variant_name((xent_variant)v));
    cr_assert_str_eq(xent_variant_name(XENT_VARIANT_WARP_ROW), "warp_row");
    cr_assert_str_eq(xent_version_string(), "0.1.0");
}

Test(api, stable_status_values)
{
    /* values are part of the ABI */
    cr_assert_eq(XENT_STATUS_SUCCESS, 0);
    cr_assert_eq(XENT_STATUS_NULL_POINTER, 1);
    cr_assert_eq(XENT_STATUS_INVALID_SIZE, 2);
    cr_assert_eq(XENT_STATUS_INVALID_VALUE, 3);
    cr_assert_eq(XENT_STATUS_UNSUPPORTED, 4);
    cr_assert_eq(XENT_STATUS_WORKSPACE_TOO_SMALL, 5);
    cr_assert_eq(XENT_STATUS_ALIASING, 6);
    cr_assert_eq(XENT_STATUS_NO_DEVICE, 7);
    cr_assert_eq(XENT_STATUS_CUDA_ERROR, 8);
    cr_assert_eq(XENT_STATUS_OUT_OF_MEMORY, 9);
    cr_assert_eq(XENT_STATUS_TARGET_OUT_OF_RANGE, 10);
    cr_assert_eq(XENT_STATUS_INVALID_DATA, 11);
    cr_assert_eq(XENT_STATUS_INTERNAL, 12);
}

Test(api, handles)
{
    cr_assert_eq(xent_destroy(NULL), XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_create(NULL), XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_create_cpu(NULL, 0), XENT_STATUS_NULL_POINTER);
    xent_handle_t g = (xent_handle_t)0x1;
    cr_assert_eq(xent_create_cpu(&g, -1), XENT_STATUS_INVALID_VALUE);
    cr_assert_null(g, "a failed create leaves NULL");

    /* a CUDA handle: NO_DEVICE on a machine without a GPU, else success */
    g = (xent_handle_t)0x1;
    xent_status st = xent_create(&g);
    cr_assert(st == XENT_STATUS_SUCCESS || st == XENT_STATUS_NO_DEVICE,
              "xent_create: %s", xent_status_string(st));
    if (st != XENT_STATUS_SUCCESS)
        cr_assert_null(g);
    cr_assert_eq(xent_destroy(g), XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_create_on_device(&g, 1 << 20), XENT_STATUS_NO_DEVICE);
    cr_assert_null(g);

    xent_backend b;
    cr_assert_eq(xent_get_backend(h, &b), XENT_STATUS_SUCCESS);
    cr_assert_eq(b, XENT_BACKEND_CPU);
    cr_assert_eq(xent_get_backend(h, NULL), XENT_STATUS_NULL_POINTER);
    struct CUstream_st *s = NULL;
    cr_assert_eq(xent_set_stream(h, NULL), XENT_STATUS_UNSUPPORTED);
    cr_assert_eq(xent_get_stream(h, &s), XENT_STATUS_UNSUPPORTED);
    cr_assert_eq(xent_set_stream(NULL, NULL), XENT_STATUS_NULL_POINTER);
}

Test(api, desc_init_defaults)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, 3, 4);
    cr_assert_eq(d.n_rows, 3);
    cr_assert_eq(d.n_classes, 4);
    cr_assert_eq(d.ld, 4);
    cr_assert_eq(d.target_ld, 4);
    cr_assert_eq(d.logits_dtype, XENT_DTYPE_F32);
    cr_assert_eq(d.target_type, XENT_TARGET_INDEX_I64);
    cr_assert_eq(d.reduction, XENT_REDUCTION_MEAN);
    cr_assert_eq(d.ignore_index, -100);
    cr_assert_null(d.weights);
    cr_assert_eq(d.variant, XENT_VARIANT_AUTO);
    xent_ce_desc_init(NULL, 1, 1); /* no crash */
}

typedef struct bad_case {
    const char *name;
    void (*mutate)(xent_ce_desc *);
    xent_status want;
} bad_case;

static const float bad_weights[C] = {1, 1, 1, 1, 1};

static void m_neg_rows(xent_ce_desc *d) { d->n_rows = -1; }
static void m_zero_classes(xent_ce_desc *d) { d->n_classes = 0; }
static void m_ld_small(xent_ce_desc *d) { d->ld = C - 1; }
static void m_overflow(xent_ce_desc *d)
{
    d->n_rows = INT64_MAX / 4;
    d->ld = 1 << 20;
}
static void m_dtype(xent_ce_desc *d) { d->logits_dtype = (xent_dtype)7; }
static void m_target(xent_ce_desc *d) { d->target_type = (xent_target_type)9; }
static void m_reduction(xent_ce_desc *d) { d->reduction = (xent_reduction)3; }
static void m_variant(xent_ce_desc *d) { d->variant = (xent_variant)42; }
static void m_flags(xent_ce_desc *d) { d->flags = 1u << 20; }
static void m_probs_ld(xent_ce_desc *d)
{
    d->target_type = XENT_TARGET_PROBS_F32;
    d->ignore_index = -100;
    d->target_ld = C - 1;
}
static void m_probs_ignore(xent_ce_desc *d)
{
    d->target_type = XENT_TARGET_PROBS_F32;
    d->ignore_index = 0;
}
static void m_weights_len(xent_ce_desc *d)
{
    d->weights = bad_weights;
    d->n_weights = C - 1;
}
static void m_smooth_neg(xent_ce_desc *d) { d->label_smoothing = -0.1f; }
static void m_smooth_big(xent_ce_desc *d) { d->label_smoothing = 1.01f; }
static void m_smooth_nan(xent_ce_desc *d) { d->label_smoothing = NAN; }
static void m_zloss_neg(xent_ce_desc *d) { d->z_loss = -1e-4f; }
static void m_zloss_inf(xent_ce_desc *d) { d->z_loss = INFINITY; }
static void m_cap_neg(xent_ce_desc *d) { d->softcap = -30.0f; }
static void m_cap_nan(xent_ce_desc *d) { d->softcap = NAN; }

static const bad_case bad_cases[] = {
    {"negative rows", m_neg_rows, XENT_STATUS_INVALID_SIZE},
    {"zero classes", m_zero_classes, XENT_STATUS_INVALID_SIZE},
    {"ld < C", m_ld_small, XENT_STATUS_INVALID_SIZE},
    {"N*ld overflows", m_overflow, XENT_STATUS_INVALID_SIZE},
    {"unknown dtype", m_dtype, XENT_STATUS_UNSUPPORTED},
    {"unknown target type", m_target, XENT_STATUS_UNSUPPORTED},
    {"unknown reduction", m_reduction, XENT_STATUS_INVALID_VALUE},
    {"unknown variant", m_variant, XENT_STATUS_INVALID_VALUE},
    {"unknown flag", m_flags, XENT_STATUS_INVALID_VALUE},
    {"probs target_ld < C", m_probs_ld, XENT_STATUS_INVALID_SIZE},
    {"probs with ignore_index", m_probs_ignore, XENT_STATUS_UNSUPPORTED},
    {"weights length", m_weights_len, XENT_STATUS_INVALID_SIZE},
    {"smoothing < 0", m_smooth_neg, XENT_STATUS_INVALID_VALUE},
    {"smoothing > 1", m_smooth_big, XENT_STATUS_INVALID_VALUE},
    {"smoothing NaN", m_smooth_nan, XENT_STATUS_INVALID_VALUE},
    {"z_loss < 0", m_zloss_neg, XENT_STATUS_INVALID_VALUE},
    {"z_loss inf", m_zloss_inf, XENT_STATUS_INVALID_VALUE},
    {"softcap < 0", m_cap_neg, XENT_STATUS_INVALID_VALUE},
    {"softcap NaN", m_cap_nan, XENT_STATUS_INVALID_VALUE},
};

Test(api, bad_descriptors_get_specific_status)
{
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        xent_ce_desc d;
        xent_ce_desc_init(&d, N, C);
        bad_cases[k].mutate(&d);
        size_t bytes = 0;
        cr_assert_eq(xent_ce_workspace_size(h, &d, &bytes), bad_cases[k].want,
                     "%s: workspace_size", bad_cases[k].name);
        cr_assert_eq(fwd(&d), bad_cases[k].want, "%s: forward",
                     bad_cases[k].name);
        cr_assert_eq(fwd_bwd(&d), bad_cases[k].want, "%s: forward_backward",
                     bad_cases[k].name);
        cr_assert_eq(xent_ce_backward(h, &d, logits, targets, lse, NULL, grad,
                                      ws, sizeof ws),
                     bad_cases[k].want, "%s: backward", bad_cases[k].name);
        assert_untouched();
    }
}

Test(api, null_pointers)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    cr_assert_eq(fwd(NULL), XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_ce_forward(NULL, &d, logits, targets, &loss, NULL, NULL,
                                 ws, sizeof ws),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_ce_forward(h, &d, NULL, targets, &loss, NULL, NULL, ws,
                                 sizeof ws),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_ce_forward(h, &d, logits, NULL, &loss, NULL, NULL, ws,
                                 sizeof ws),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, NULL, NULL, ws,
                                 sizeof ws),
                 XENT_STATUS_NULL_POINTER, "no output at all");
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, NULL, NULL,
                                          &loss, NULL, NULL, ws, sizeof ws),
                 XENT_STATUS_NULL_POINTER, "no gradient buffer");
    cr_assert_eq(xent_ce_backward(h, &d, logits, targets, NULL, NULL, grad, ws,
                                  sizeof ws),
                 XENT_STATUS_NULL_POINTER, "no lse");
    size_t bytes;
    cr_assert_eq(xent_ce_workspace_size(h, &d, NULL), XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_ce_workspace_size(NULL, &d, &bytes),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_read_data_report(h, NULL, 0), XENT_STATUS_NULL_POINTER);
    assert_untouched();
}

Test(api, reduced_loss_under_none_is_invalid)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    d.reduction = XENT_REDUCTION_NONE;
    cr_assert_eq(fwd(&d), XENT_STATUS_INVALID_VALUE);
    cr_assert_eq(fwd_bwd(&d), XENT_STATUS_INVALID_VALUE);
    assert_untouched();
}

Test(api, workspace)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    size_t bytes = 0;
    cr_assert_eq(xent_ce_workspace_size(h, &d, &bytes), XENT_STATUS_SUCCESS);
    cr_assert_gt(bytes, 0);
    cr_assert_leq(bytes, sizeof ws);
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, &loss, NULL, NULL, ws,
                                 bytes - 1),
                 XENT_STATUS_WORKSPACE_TOO_SMALL);
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, &loss, NULL, NULL,
                                 NULL, bytes),
                 XENT_STATUS_NULL_POINTER);
    assert_untouched();
    /* any alignment of the caller's buffer works */
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, &loss, NULL, NULL,
                                 ws + 3, bytes),
                 XENT_STATUS_SUCCESS);
    cr_assert(isfinite(loss));
    /* reduction none needs none */
    d.reduction = XENT_REDUCTION_NONE;
    cr_assert_eq(xent_ce_workspace_size(h, &d, &bytes), XENT_STATUS_SUCCESS);
    cr_assert_eq(bytes, 0);
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, rows, NULL,
                                 NULL, 0),
                 XENT_STATUS_SUCCESS);
}

Test(api, upstream_rules)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    float dl[N] = {1, 1, 1, 1, 1, 1};
    xent_upstream u = {dl, 1, 1.0f};
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, &u, grad,
                                          &loss, NULL, NULL, ws, sizeof ws),
                 XENT_STATUS_INVALID_VALUE, "per-row upstream under MEAN");
    u.dloss_stride = -1;
    d.reduction = XENT_REDUCTION_NONE;
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, &u, grad,
                                          NULL, NULL, NULL, ws, sizeof ws),
                 XENT_STATUS_INVALID_SIZE, "negative stride");
    u.dloss_stride = 1;
    u.scale = NAN;
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, &u, grad,
                                          NULL, NULL, NULL, ws, sizeof ws),
                 XENT_STATUS_INVALID_VALUE, "NaN scale");
    assert_untouched();
}

Test(api, aliasing)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    /* partial overlap of gradient and logits */
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, NULL,
                                          logits + 1, &loss, NULL, NULL, ws,
                                          sizeof ws),
                 XENT_STATUS_ALIASING);
    /* gradient over the per-row losses */
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, NULL, grad,
                                          NULL, grad + 3, NULL, ws, sizeof ws),
                 XENT_STATUS_ALIASING);
    /* two outputs in one buffer */
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, rows, rows, ws,
                                 sizeof ws),
                 XENT_STATUS_ALIASING);
    /* a forward output over an input */
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, logits + 2,
                                 NULL, ws, sizeof ws),
                 XENT_STATUS_ALIASING);
    /* the gradient over the upstream values */
    d.reduction = XENT_REDUCTION_NONE;
    xent_upstream u = {grad + 7, 1, 1.0f};
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, &u, grad,
                                          NULL, NULL, NULL, NULL, 0),
                 XENT_STATUS_ALIASING);
    /* the gradient over probability targets */
    d.target_type = XENT_TARGET_PROBS_F32;
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, grad + C, NULL, grad,
                                          NULL, NULL, NULL, NULL, 0),
                 XENT_STATUS_ALIASING);
    d.target_type = XENT_TARGET_INDEX_I64;
    d.reduction = XENT_REDUCTION_MEAN;
    /* in place with a different gradient dtype */
    d.logits_dtype = XENT_DTYPE_BF16;
    d.flags = XENT_FLAG_GRAD_F32;
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, NULL, logits,
                                          &loss, NULL, NULL, ws, sizeof ws),
                 XENT_STATUS_ALIASING);
}

Test(api, empty_batch)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, 0, C);
    /* data pointers may be NULL when there is no row */
    cr_assert_eq(xent_ce_forward(h, &d, NULL, NULL, &loss, NULL, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f, "empty mean is 0 by default");
    d.flags = XENT_FLAG_EMPTY_MEAN_NAN;
    cr_assert_eq(xent_ce_forward_backward(h, &d, NULL, NULL, NULL, NULL, &loss,
                                          NULL, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert(isnan(loss), "empty mean is NaN on request");
    d.reduction = XENT_REDUCTION_SUM;
    cr_assert_eq(xent_ce_forward(h, &d, NULL, NULL, &loss, NULL, NULL, NULL, 0),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f);
    for (int i = 0; i < N * C; i++)
        cr_assert_eq(grad[i], 12345.0f);
}

Test(api, all_rows_ignored)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    for (int i = 0; i < N; i++)
        targets[i] = -100;
    cr_assert_eq(fwd_bwd(&d), XENT_STATUS_SUCCESS);
    cr_assert_eq(loss, 0.0f);
    for (int i = 0; i < N * C; i++)
        cr_assert_eq(grad[i], 0.0f);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rows[i], 0.0f);
        cr_assert(isfinite(lse[i]), "lse is still computed for ignored rows");
    }
    d.flags = XENT_FLAG_EMPTY_MEAN_NAN;
    cr_assert_eq(fwd_bwd(&d), XENT_STATUS_SUCCESS);
    cr_assert(isnan(loss));
    for (int i = 0; i < N * C; i++)
        cr_assert_eq(grad[i], 0.0f, "gradient stays zero under the NaN flag");
}

Test(api, out_of_range_target_is_recorded_not_fatal)
{
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    d.reduction = XENT_REDUCTION_NONE;
    targets[2] = C;  /* one past the end */
    targets[4] = -7; /* negative, not the ignore index */
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_assert_eq(rep.flags, 0);
    cr_assert_eq(rep.first_row, -1);
    cr_assert_eq(xent_ce_forward_backward(h, &d, logits, targets, NULL, grad,
                                          NULL, rows, NULL, NULL, 0),
                 XENT_STATUS_TARGET_OUT_OF_RANGE);
    for (int i = 0; i < N; i++) {
        int bad = i == 2 || i == 4;
        cr_assert_eq(isnan(rows[i]) != 0, bad, "row %d", i);
        for (int j = 0; j < C; j++)
            cr_assert_eq(isnan(grad[i * C + j]) != 0, bad, "grad %d,%d", i, j);
    }
    cr_assert_eq(xent_read_data_report(h, &rep, 0), XENT_STATUS_SUCCESS);
    cr_assert_eq(rep.flags, XENT_DATA_TARGET_OUT_OF_RANGE);
    cr_assert_eq(rep.first_row, 2);
    /* sticky until reset */
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_assert_eq(rep.first_row, 2);
    cr_assert_eq(xent_read_data_report(h, &rep, 0), XENT_STATUS_SUCCESS);
    cr_assert_eq(rep.flags, 0);
    cr_assert_eq(rep.first_row, -1);
}

Test(api, negative_weight_is_recorded)
{
    float w[C] = {1, 2, -1, 1, 1};
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    d.weights = w;
    d.n_weights = C;
    d.reduction = XENT_REDUCTION_NONE;
    /* on the CPU the weights are checked before anything is written */
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, rows, NULL,
                                 NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    assert_untouched();
    w[2] = NAN;
    cr_assert_eq(xent_ce_forward(h, &d, logits, targets, NULL, rows, NULL,
                                 NULL, 0),
                 XENT_STATUS_INVALID_DATA);
    assert_untouched();
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_assert_eq(rep.flags, XENT_DATA_NEGATIVE_WEIGHT);
}
