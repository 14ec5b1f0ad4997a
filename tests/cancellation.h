/*
 * cancellation.h - the p_y -> 1 accuracy check, shared by the CPU
 * (test_numerics.c) and GPU (test_gpu.c) test binaries.
 */
#ifndef XENT_TESTS_CANCELLATION_H
#define XENT_TESTS_CANCELLATION_H

#include "conformance.h"
#include "xent.h"

/* Rows with target probability 1 - eps for eps in {1e-3, 1e-6, 1e-9} (and
 * a peaked random background), through the fused call with the given
 * variant: loss and target-class gradient within CANCEL_RTOL relative of
 * the float64 reference. Asserts (Criterion). */
void conf_cancellation(xent_handle_t h, const tu_mem *m, xent_variant variant);

/* A few fp32 ulps: fp32 rounding level, far below what the naive formulas
 * reach (relative error ~1 at eps = 1e-6). */
#define CANCEL_RTOL 1e-6

#endif
