/*
 * testutil.h - helpers shared by the Criterion test files.
 *
 *  - tu_rng: a small deterministic generator (splitmix64 sequence), the
 *    same numbers on every platform and run; uniform [0,1) and normal
 *    (Box-Muller) draws.
 *  - Fillers for realistic test data: peaked logits (not uniform, so the
 *    softmax is far from flat), class-index targets, probability targets
 *    with exact zeros; padding columns [c, ld) get a caller-chosen value
 *    (pass NAN so an out-of-bounds read shows up as a NaN result).
 *  - float <-> double conversions, dense and strided.
 *  - tu_compare_*: an allclose that also reports the worst element and the
 *    relative norm, so a test makes one assertion per tensor
 *    (TU_ASSERT_CLOSE), never one per element.
 *
 * testutil.c does not use Criterion. TU_ASSERT_CLOSE expands to cr_assert,
 * so a test file includes <criterion/criterion.h> (before or after this
 * header) to use it.
 */
#ifndef XENT_TESTS_TESTUTIL_H
#define XENT_TESTS_TESTUTIL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Deterministic random numbers                                        */
/* ------------------------------------------------------------------ */
typedef struct {
    uint64_t s;
} tu_rng;

void tu_rng_seed(tu_rng *r, uint64_t seed);
uint64_t tu_next(tu_rng *r);                /* 64 random bits */
double tu_uniform(tu_rng *r);               /* [0, 1), 53-bit resolution */
double tu_normal(tu_rng *r);                /* standard normal */
int64_t tu_below(tu_rng *r, int64_t bound); /* [0, bound), bound >= 1 */

/* ------------------------------------------------------------------ */
/* Test data                                                           */
/* ------------------------------------------------------------------ */

/* Logits z [n, ld]: each of the c columns ~ normal(0, sd 2); then 1 to 3
 * entries per row (distinct columns when c allows) are multiplied by 20,
 * the first of them made positive, so each row's softmax is peaked.
 * Columns [c, ld) are set to pad_value. */
void tu_fill_logits(tu_rng *r, int64_t n, int64_t c, int64_t ld, float *z,
                    float pad_value);

/* y[i] uniform in [0, c). */
void tu_fill_targets_i64(tu_rng *r, int64_t n, int64_t c, int64_t *y);
void tu_fill_targets_i32(tu_rng *r, int64_t n, int64_t c, int32_t *y);

/* Probability targets q [n, ld]: each entry is 0 with probability 1/4
 * (never the whole row), otherwise exp(normal); rows are normalized in
 * double and rounded to float, so they sum to 1 up to float rounding.
 * Columns [c, ld) are set to pad. */
void tu_fill_probs(tu_rng *r, int64_t n, int64_t c, int64_t ld, float *q,
                   float pad);

/* n values uniform in [lo, hi) (e.g. class weights, BCE targets). */
void tu_fill_uniform_f32(tu_rng *r, int64_t n, float lo, float hi, float *dst);

/* ------------------------------------------------------------------ */
/* Conversions                                                         */
/* ------------------------------------------------------------------ */
void tu_f32_to_f64(const float *src, double *dst, int64_t n);
void tu_f64_to_f32(const double *src, float *dst, int64_t n);
/* src [n, ld] -> dst dense [n, c] (the padding is dropped). */
void tu_rows_f32_to_f64(int64_t n, int64_t c, int64_t ld, const float *src,
                        double *dst);

/* ------------------------------------------------------------------ */
/* Close comparison                                                    */
/* ------------------------------------------------------------------ */

/*
 * Element i is ok iff |got - ref| <= atol + rtol * |ref|, where a NaN only
 * matches a NaN and an infinity only matches the same infinity.
 *   ok        all n elements ok (n = 0: ok)
 *   n_bad     how many are not
 *   worst     index of the element with the largest |got-ref| /
 *             (atol + rtol |ref|) (a mismatched NaN/inf counts as the
 *             worst possible), -1 when n = 0
 *   worst_err |got - ref| there (inf or NaN for special-value mismatches)
 *   rel_norm  ||got - ref||_2 / ||ref||_2 over the elements where both are
 *             finite (||got - ref||_2 when ||ref||_2 = 0)
 */
typedef struct tu_close {
    int ok;
    int64_t n_bad;
    int64_t worst;
    double worst_err, worst_ref, worst_got;
    double rel_norm;
} tu_close;

tu_close tu_compare_f32(const double *ref, const float *got, int64_t n,
                        double atol, double rtol);
tu_close tu_compare_f64(const double *ref, const double *got, int64_t n,
                        double atol, double rtol);
/* Like tu_compare_f32 for got [n, ld] against a dense ref [n, c]. */
tu_close tu_compare_rows_f32(const double *ref, const float *got, int64_t n,
                             int64_t c, int64_t ld, double atol, double rtol);

/* One Criterion assertion for a whole tensor; `what` names it. */
#define TU_ASSERT_CLOSE(res, what)                                             \
    do {                                                                       \
        tu_close tu_res_ = (res);                                              \
        cr_assert(tu_res_.ok,                                                  \
                  "%s: %lld bad, worst [%lld] got %.9g ref %.9g err %.3g, "    \
                  "rel-norm %.3g",                                             \
                  (what), (long long)tu_res_.n_bad, (long long)tu_res_.worst,  \
                  tu_res_.worst_got, tu_res_.worst_ref, tu_res_.worst_err,     \
                  tu_res_.rel_norm);                                           \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif /* XENT_TESTS_TESTUTIL_H */
