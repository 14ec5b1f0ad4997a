/*
 * ref.h - the float64 CPU reference of xent (the only one in the project).
 *
 * Every test compares the library against these functions. They are written
 * for accuracy and clarity, not speed: inputs are double, the arithmetic is
 * long double (80-bit on x86-64), results are rounded to double once at the
 * end. Nothing here validates arguments; sizes are trusted.
 *
 * ---------------------------------------------------------------------
 * Cross-entropy (torch.nn.functional.cross_entropy semantics, plus the
 * z-loss and softcap extensions; see include/xent.h). For one row z of C
 * logits with class weights w (all 1 when NULL), smoothing a, z-loss s,
 * softcap cap:
 *
 *   z'_c   = cap > 0 ? cap * tanh(z_c / cap) : z_c
 *   lse    = log sum_c exp(z'_c)
 *   p_c    = exp(z'_c - lse)
 *   index target y (row not ignored):
 *     ce   = (1 - a) w_y (lse - z'_y) + (a / C) sum_c w_c (lse - z'_c)
 *   probability target q:
 *     q'_c = (1 - a) q_c + a / C,   ce = sum_c w_c q'_c (lse - z'_c)
 *   loss_i = ce + s * lse^2
 *
 * Reductions: NONE keeps loss_i; SUM adds them; MEAN divides the sum by
 * sum_i w_{y_i} over the non-ignored rows (index targets; PyTorch's weighted
 * mean, applied to the smoothing and z-loss terms as well) or by n
 * (probability targets). A zero denominator gives 0, or NaN when
 * empty_mean_nan is set; the gradient is then 0.
 *
 * Gradient w.r.t. the capped logits, per row:
 *   index:  g_j = p_j [(1 - a) w_y + (a/C) W + 2 s lse] - (1 - a) w_y [j = y]
 *                 - (a/C) w_j,                         W = sum_c w_c
 *   probs:  g_j = p_j [V + 2 s lse] - v_j,  v_c = w_c q'_c, V = sum_c v_c
 * then times dz'/dz = 1 - tanh^2(z/cap) (softcap), times 1/denominator
 * (MEAN). Under NONE the gradient written is that of the sum of the rows.
 *
 * Accuracy: lse - z'_c is evaluated as (m - z'_c) + log1p(S), where m is
 * the row maximum (first argmax k) and S = sum_{j != k} exp(z'_j - m): two
 * non-negative terms, no cancellation even when p_y -> 1. Likewise
 * 1 - p_k = S / (1 + S). So the reference stays accurate to ~1e-16
 * relative on rows whose target probability is 1 - 1e-9.
 *
 * Special values (the choices made where PyTorch is silent or unhelpful):
 *  - A "bad" row: any NaN logit, all logits -inf, or a +inf logit (without
 *    softcap; with it, +-inf caps to +-cap). Its loss, lse and gradient are
 *    NaN (unless the row is ignored: loss 0, gradient 0, lse NaN).
 *  - A -inf logit in an otherwise good row is fine: p = 0 there, and a -inf
 *    target logit gives loss +inf with a finite gradient.
 *  - A term whose coefficient is exactly 0 (w_c q'_c = 0, (1-a) w_y = 0,
 *    (a/C) w_c = 0) contributes 0 even when its log factor is infinite:
 *    0 * log 0 = 0, as for entropy. (PyTorch would give 0 * inf = NaN.)
 *  - Index target outside [0, C) that is not ignore_index: that row's loss
 *    and gradient are NaN (lse is still computed); the row adds nothing to
 *    the MEAN denominator, so the reduced loss is NaN but the other rows'
 *    gradients stay finite.
 *  - Empty batch: reduced losses are 0 (MEAN of CE: NaN with
 *    empty_mean_nan). This also holds for the entropy/KL/BCE means, where
 *    PyTorch would give 0/0 = NaN.
 * ---------------------------------------------------------------------
 */
#ifndef XENT_TESTS_REF_H
#define XENT_TESTS_REF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ref_ce_opts {
    int reduction;          /* 0 none, 1 mean, 2 sum (= xent_reduction) */
    int64_t ignore_index;   /* index targets: rows with y == ignore_index
                               are ignored; default -100 */
    const double *weights;  /* [C] class weights or NULL (all 1) */
    double label_smoothing; /* alpha in [0,1], PyTorch convention */
    double z_loss;          /* s: adds s*lse^2 per non-ignored row */
    double softcap;         /* 0 off; else z -> cap*tanh(z/cap) first */
    int empty_mean_nan;     /* mean with zero denominator: 1 NaN, 0 -> 0 */
} ref_ce_opts;

/* mean, ignore -100, no weights, no smoothing/z-loss/softcap, empty -> 0 */
void ref_ce_opts_default(ref_ce_opts *o);

/*
 * Cross-entropy with class-index targets.
 *   z          [n, ldz] row-major logits (columns [c, ldz) never read)
 *   y          [n] class indices
 *   o          options (NULL: defaults)
 *   loss_rows  [n] or NULL: per-row loss before reduction (0 if ignored)
 *   lse        [n] or NULL: log-sum-exp of the capped logits, every row
 *   grad       [n*c] dense (row stride c) or NULL: d(reduced loss)/dz for
 *              the uncapped z; under NONE, d(sum of rows)/dz
 * Returns the reduced loss (MEAN/SUM); under NONE the sum of the rows.
 */
double ref_ce_index(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const int64_t *y, const ref_ce_opts *o, double *loss_rows,
                    double *lse, double *grad);

/* Cross-entropy with probability targets q [n, ldq] (rows need not sum to
 * 1). ignore_index is unused; MEAN divides by n. Outputs as above. */
double ref_ce_probs(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const double *q, int64_t ldq, const ref_ce_opts *o,
                    double *loss_rows, double *lse, double *grad);

/* log sum_j exp z_j, stable. The mathematical value for special rows:
 * all -inf -> -inf, any +inf -> +inf, any NaN -> NaN; c = 0 -> -inf. */
double ref_lse(int64_t c, const double *z);

/* p = softmax(z), [c]. A bad row (see above) gives NaN everywhere. */
void ref_softmax(int64_t c, const double *z, double *p);

/* H(q) = -sum q log q, with 0 log 0 = 0. */
double ref_entropy_probs(int64_t c, const double *q);

/* H_p(q) = -sum q log p (terms with q = 0 are 0). */
double ref_cross_entropy_probs(int64_t c, const double *q, const double *p);

/* KL(q || p) = sum q (log q - log p), 0 log 0 = 0 (terms with q = 0). */
double ref_kl_probs(int64_t c, const double *q, const double *p);

/* H(softmax(z)) = sum_j p_j (lse - z_j); grad [c] or NULL:
 * dH/dz_j = -p_j (log p_j + H). */
double ref_softmax_entropy(int64_t c, const double *z, double *grad);

/* Entropy of softmax over n rows of z [n, ldz]; reduction 0 none, 1 mean
 * (over n), 2 sum. loss_rows [n], grad [n*c] dense (of the reduced loss;
 * NONE: of the sum), both optional. Returns reduced (NONE: sum). */
double ref_entropy_batch(int64_t n, int64_t c, const double *z, int64_t ldz,
                         int reduction, double *loss_rows, double *grad);

/*
 * KL(q || p) per row, p = softmax(z) (the student), as
 * torch.nn.functional.kl_div(log_softmax(z), target, log_target=...):
 * the teacher is either probabilities q [n, ldq] (log_target=False) or
 * logits t [n, ldt] with q = softmax(t) (log_target=True, target =
 * log_softmax(t)); exactly one of q, t is non-NULL (else NaN is returned).
 *   KL_i = sum_c q_c (log q_c - log p_c), terms with q_c = 0 are 0
 *   dKL_i/dz_j = p_j sum_c q_c - q_j
 *   dKL_i/dt_j = q_j (log q_j - log p_j - KL_i)       (teacher logits)
 * reduction 0 none, 1 batchmean (sum / n), 2 sum. loss_rows [n], grad_z
 * [n*c], grad_t [n*c] (written only when t is given) are optional; the
 * gradients are of the reduced loss (NONE: of the sum).
 */
double ref_kl_batch(int64_t n, int64_t c, const double *z, int64_t ldz,
                    const double *q, int64_t ldq, const double *t, int64_t ldt,
                    int reduction, double *loss_rows, double *grad_z,
                    double *grad_t);

/*
 * torch.nn.functional.binary_cross_entropy_with_logits over n*c elements
 * (dense, row stride c). Per element, with sp(x) = log(1 + e^x):
 *   loss = w [pw_c y sp(-z) + (1 - y) sp(z)]
 *   dloss/dz = w [(1 - y) sigmoid(z) - pw_c y sigmoid(-z)]
 * y in [0,1]; pos_weight [c] or NULL (pw = 1); weight [n*c] or NULL
 * (w = 1). Each term is non-negative and evaluated stably for any |z|.
 * reduction 0 none, 1 mean over all n*c elements, 2 sum. loss_elems,
 * grad [n*c] optional (grad of reduced; NONE: of the sum).
 */
double ref_bce_logits(int64_t n, int64_t c, const double *z, const double *y,
                      const double *pos_weight, const double *weight,
                      int reduction, double *loss_elems, double *grad);

#ifdef __cplusplus
}
#endif
#endif /* XENT_TESTS_REF_H */
