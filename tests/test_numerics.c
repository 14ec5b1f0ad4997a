/*
 * test_numerics.c - cancellation-free target terms through the library.
 *
 * Rows whose target probability is 1 - eps (eps = 1e-3, 1e-6, 1e-9): the
 * loss is ~eps and the target-class gradient p_y - 1 is ~-eps. Computed as
 * lse - z_y and p_y - 1 in fp32 both lose every digit (tests/test_ref.c
 * shows the naive formulas failing); the library must keep full relative
 * accuracy: within a few fp32 ulps of the float64 reference.
 * The same check runs on GPU variants in test_gpu (conf_cancellation).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cancellation.h"
#include "xent.h"

static void *host_alloc(size_t n) { return malloc(n ? n : 1); }
static void host_upload(void *d, const void *s, size_t n) { memcpy(d, s, n); }
static void host_sync(void) {}
static const tu_mem host_mem = {host_alloc, free, host_upload, host_upload,
                                host_sync};

Test(numerics, target_terms_keep_relative_accuracy_cpu)
{
    xent_handle_t h;
    cr_assert_eq(xent_create_cpu(&h, 1), XENT_STATUS_SUCCESS);
    conf_cancellation(h, &host_mem, XENT_VARIANT_AUTO);
    xent_destroy(h);
}
