/*
 * xent.h - softmax cross-entropy and the information-theory quantities
 * around it, on CUDA GPUs and on the CPU.
 *
 * The one public header of libxent. C11, no CUDA headers needed: a CUDA
 * stream is passed as `struct CUstream_st *`, which is what cudaStream_t is.
 *
 * Conventions
 *  - Every function returns an xent_status; XENT_STATUS_SUCCESS is 0.
 *  - Matrices are row-major. A row of `n_classes` values starts every `ld`
 *    elements (ld >= n_classes, e.g. a vocabulary of 50257 padded to 50304).
 *    Columns [n_classes, ld) are never read and never written.
 *  - Buffers belong to the caller. On a CUDA handle every data pointer is a
 *    device pointer (named d_* below); on a CPU handle every data pointer is
 *    a host pointer. Compute calls never allocate, never synchronize and never
 *    read device memory back to the host, so they can be captured in a CUDA
 *    graph. Work is queued on the handle's stream.
 *  - Sizes are int64_t; all offsets are 64-bit (n_rows * ld > 2^31 works).
 *  - Results are deterministic: the same inputs give bitwise the same
 *    outputs run after run (reductions run in a fixed order, no floating-point
 *    atomics).
 *  - The library never prints, exits or aborts.
 *
 * Semantics follow torch.nn.functional.cross_entropy (see README.md for the
 * option table). Per non-ignored row i with class-index target y:
 *
 *   z'    = softcap > 0 ? softcap * tanh(z / softcap) : z
 *   lse   = log sum_c exp(z'_c)
 *   ce_i  = (1 - a) * w_y * (lse - z'_y) + (a / C) * sum_c w_c * (lse - z'_c)
 *   loss_i = ce_i + z_loss * lse^2
 *
 * with a = label_smoothing and w = class weights (all 1 when absent).
 * Ignored rows (target == ignore_index) have loss 0 and gradient 0.
 * reduction MEAN divides sum_i loss_i by sum_i w_{y_i} over non-ignored rows
 * (PyTorch's weighted mean); SUM adds; NONE keeps the rows.
 * With probability targets q (row stride target_ld):
 *   q'_c = (1 - a) q_c + a / C,  ce_i = sum_c w_c q'_c (lse - z'_c),
 * and MEAN divides by n_rows, as PyTorch does.
 */
#ifndef XENT_H
#define XENT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define XENT_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define XENT_API __attribute__((visibility("default")))
#else
#define XENT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define XENT_VERSION_MAJOR 0
#define XENT_VERSION_MINOR 1
#define XENT_VERSION_PATCH 0

/* Status codes. The values are stable: new codes are only ever appended. */
typedef enum xent_status {
    XENT_STATUS_SUCCESS = 0,
    XENT_STATUS_NULL_POINTER = 1,       /* a required pointer is NULL */
    XENT_STATUS_INVALID_SIZE = 2,       /* negative size, ld < n_classes, ... */
    XENT_STATUS_INVALID_VALUE = 3,      /* an option outside its domain */
    XENT_STATUS_UNSUPPORTED = 4,        /* dtype or option combination */
    XENT_STATUS_WORKSPACE_TOO_SMALL = 5,
    XENT_STATUS_ALIASING = 6,           /* outputs overlap inputs illegally */
    XENT_STATUS_NO_DEVICE = 7,          /* no usable CUDA device */
    XENT_STATUS_CUDA_ERROR = 8,         /* a CUDA runtime call failed */
    XENT_STATUS_OUT_OF_MEMORY = 9,      /* handle setup could not allocate */
    XENT_STATUS_TARGET_OUT_OF_RANGE = 10, /* a class index outside [0, C) */
    XENT_STATUS_INVALID_DATA = 11,      /* e.g. negative class weights */
    XENT_STATUS_INTERNAL = 12
} xent_status;

/* Never returns NULL: unknown values give "unknown status". */
XENT_API const char *xent_status_string(xent_status status);

/* "major.minor.patch" of the library actually linked. */
XENT_API const char *xent_version_string(void);

typedef enum xent_dtype {
    XENT_DTYPE_F32 = 0,
    XENT_DTYPE_F16 = 1,
    XENT_DTYPE_BF16 = 2
} xent_dtype;

typedef enum xent_target_type {
    XENT_TARGET_INDEX_I32 = 0, /* int32 class indices [n_rows] */
    XENT_TARGET_INDEX_I64 = 1, /* int64 class indices [n_rows] */
    XENT_TARGET_PROBS_F32 = 2  /* float32 probabilities [n_rows, target_ld] */
} xent_target_type;

typedef enum xent_reduction {
    XENT_REDUCTION_NONE = 0,
    XENT_REDUCTION_MEAN = 1,
    XENT_REDUCTION_SUM = 2
} xent_reduction;

/* Kernel variants. AUTO lets the dispatcher choose; the others force one
 * (for tests and benchmarks). Every variant computes the same function;
 * they may differ in the last bits (their sums run in different orders).
 * Each variant is deterministic, but AUTO's choice for cross-entropy
 * depends on n_rows as well as on C and the device, so a row's bits can
 * depend on the batch it comes in: force a variant where that matters
 * (the CLI does, for chunk-invariant streaming). */
typedef enum xent_variant {
    XENT_VARIANT_AUTO = 0,
    XENT_VARIANT_WARP_ROW = 1,  /* one warp per row, several rows per block */
    XENT_VARIANT_BLOCK_ROW = 2, /* one block per row, online softmax */
    XENT_VARIANT_COUNT_ = 3
} xent_variant;

/* Never returns NULL. */
XENT_API const char *xent_variant_name(xent_variant variant);

typedef enum xent_backend {
    XENT_BACKEND_CUDA = 0,
    XENT_BACKEND_CPU = 1
} xent_backend;

/* Flags for xent_ce_desc.flags. */
enum {
    /* All rows ignored under MEAN: give PyTorch's NaN instead of 0. The
     * gradient is zero either way. */
    XENT_FLAG_EMPTY_MEAN_NAN = 1u << 0,
    /* Write the gradient as float32 whatever the logits' dtype. */
    XENT_FLAG_GRAD_F32 = 1u << 1
};

#define XENT_DEFAULT_IGNORE_INDEX (-100)

/* One cross-entropy problem. Fill it with xent_ce_desc_init, then change
 * the fields you need. */
typedef struct xent_ce_desc {
    int64_t n_rows;    /* N >= 0 (0 is valid and does nothing) */
    int64_t n_classes; /* C >= 1 */
    int64_t ld;        /* logits row stride in elements, >= C */
    xent_dtype logits_dtype;
    xent_target_type target_type;
    int64_t target_ld;  /* probability targets: row stride, >= C */
    xent_reduction reduction;
    int64_t ignore_index; /* index targets: rows with this target are
                             ignored. Probability targets: must be < 0
                             (PyTorch rejects it too). */
    const float *weights; /* class weights [n_weights] or NULL (all 1);
                             must be >= 0 */
    int64_t n_weights;    /* must equal n_classes when weights is set */
    float label_smoothing; /* in [0, 1] */
    float z_loss;          /* coefficient s >= 0 of s * lse^2 */
    float softcap;         /* 0 = off; > 0 caps logits to cap*tanh(z/cap) */
    uint32_t flags;        /* XENT_FLAG_* */
    xent_variant variant;  /* XENT_VARIANT_AUTO unless forcing one */
} xent_ce_desc;

/* Fills *desc with defaults: ld = n_classes, fp32 logits, int64 targets,
 * mean reduction, ignore_index -100, no weights, no smoothing, no z-loss,
 * no softcap, no flags, AUTO variant. */
XENT_API void xent_ce_desc_init(xent_ce_desc *desc, int64_t n_rows,
                                int64_t n_classes);

/* ---------------------------------------------------------------------
 * Handle
 * ------------------------------------------------------------------- */
typedef struct xent_handle *xent_handle_t;
struct CUstream_st; /* cudaStream_t is `struct CUstream_st *` */

/* A handle on the current CUDA device, on the default stream. It caches the
 * device properties the dispatcher uses and allocates its small device
 * status word once, here. XENT_STATUS_NO_DEVICE when there is no GPU. */
XENT_API xent_status xent_create(xent_handle_t *handle);

/* A handle on CUDA device `device`. */
XENT_API xent_status xent_create_on_device(xent_handle_t *handle, int device);

/* A CPU handle: data pointers are host pointers; n_threads = 0 uses every
 * core. Calls are synchronous. */
XENT_API xent_status xent_create_cpu(xent_handle_t *handle, int n_threads);

/* Accepts NULL. */
XENT_API xent_status xent_destroy(xent_handle_t handle);

XENT_API xent_status xent_get_backend(xent_handle_t handle,
                                      xent_backend *backend);

/* CUDA handles only (XENT_STATUS_UNSUPPORTED on a CPU handle). NULL is the
 * legacy default stream. */
XENT_API xent_status xent_set_stream(xent_handle_t handle,
                                     struct CUstream_st *stream);
XENT_API xent_status xent_get_stream(xent_handle_t handle,
                                     struct CUstream_st **stream);

/* ---------------------------------------------------------------------
 * Device status word
 *
 * Problems that only the data reveal never write out of bounds and never
 * trap. On a CUDA handle:
 *  - a class index outside [0, C) that is not ignore_index, or a row whose
 *    target class has a negative or NaN weight: that row's loss and
 *    gradient become NaN (so reduced values are NaN too) and the kernel
 *    records the problem in the handle's status word. Only the target
 *    class's weight is checked there: the weights of other classes (used
 *    by label smoothing and probability targets) must be non-negative,
 *    which a CPU handle checks and a CUDA handle cannot without reading
 *    device memory back.
 * Reading the word is the caller's choice and synchronizes the handle's
 * stream; it is sticky until reset.
 * On a CPU handle the call is synchronous, so it also returns the problem:
 *  - out-of-range targets: rows as above, XENT_STATUS_TARGET_OUT_OF_RANGE;
 *  - any negative or NaN class weight: XENT_STATUS_INVALID_DATA before
 *    anything is written.
 * ------------------------------------------------------------------- */
enum {
    XENT_DATA_TARGET_OUT_OF_RANGE = 1u << 0,
    XENT_DATA_NEGATIVE_WEIGHT = 1u << 1,
    /* KL divergence, probability targets: a row of q with a negative or NaN
     * entry, or whose sum is off 1 by more than xent_kl_desc.prob_tol. That
     * row's loss and gradients are NaN. */
    XENT_DATA_INVALID_PROBS = 1u << 2,
    /* Binary cross-entropy: a target outside [0, 1] (or NaN). That
     * element's loss and gradient are NaN. (A negative or NaN pos_weight is
     * XENT_DATA_NEGATIVE_WEIGHT; its column's elements are NaN.) */
    XENT_DATA_TARGET_OUTSIDE_01 = 1u << 3
};

typedef struct xent_data_report {
    uint32_t flags;    /* XENT_DATA_* bits seen since the last reset */
    int64_t first_row; /* lowest row with a bad target, -1 if none */
} xent_data_report;

/* Synchronizes the handle's stream, reads the word and, when reset != 0,
 * clears it (on the stream). */
XENT_API xent_status xent_read_data_report(xent_handle_t handle,
                                           xent_data_report *report,
                                           int reset);

/* ---------------------------------------------------------------------
 * Cross-entropy
 * ------------------------------------------------------------------- */

/* Bytes of scratch memory any cross-entropy call below needs for this
 * problem (the same for every op; 0 under reduction NONE). Pass a buffer at
 * least this large in the handle's memory space (device memory on a CUDA
 * handle), of any alignment. Its contents need no initialization and are
 * not preserved between calls. */
XENT_API xent_status xent_ce_workspace_size(xent_handle_t handle,
                                            const xent_ce_desc *desc,
                                            size_t *bytes);

/*
 * Forward pass.
 *   d_logits   [n_rows, ld] of logits_dtype
 *   d_targets  int32/int64 [n_rows], or float [n_rows, target_ld]
 *   d_loss     [1] float: the reduced loss (MEAN/SUM), or NULL. Must be
 *              NULL under NONE.
 *   d_loss_rows [n_rows] float: per-row loss before reduction, or NULL
 *   d_lse      [n_rows] float: per-row log-sum-exp of the (capped) logits,
 *              or NULL
 * At least one output must be non-NULL.
 */
XENT_API xent_status xent_ce_forward(xent_handle_t handle,
                                     const xent_ce_desc *desc,
                                     const void *d_logits,
                                     const void *d_targets, float *d_loss,
                                     float *d_loss_rows, float *d_lse,
                                     void *d_workspace, size_t workspace_bytes);

/*
 * The upstream gradient. The gradient written is
 *   scale * u_i * d(loss)/d(logits)
 * where u_i = d_dloss ? d_dloss[i * dloss_stride] : 1 and loss is the
 * reduced loss (MEAN/SUM: dloss_stride must be 0, d_dloss[0] being
 * dL/dloss) or, under NONE, row i's loss. A per-row upstream uses
 * dloss_stride >= 1; stride 0 broadcasts one value.
 */
typedef struct xent_upstream {
    const float *d_dloss; /* NULL: 1 */
    int64_t dloss_stride;
    float scale;
} xent_upstream;

/* {NULL, 0, 1.0f}: the gradient of the loss itself. */
XENT_API xent_upstream xent_upstream_default(void);

/*
 * Fused forward and backward: everything xent_ce_forward writes, plus
 *   d_grad  [n_rows, ld] of logits_dtype (float with XENT_FLAG_GRAD_F32).
 * d_grad may be exactly d_logits: the gradient then overwrites the logits
 * in place (same dtype required). Any other overlap is XENT_STATUS_ALIASING.
 * Rows that are ignored get a zero gradient. d_loss, d_loss_rows and d_lse
 * may all be NULL.
 */
XENT_API xent_status xent_ce_forward_backward(
    xent_handle_t handle, const xent_ce_desc *desc, const void *d_logits,
    const void *d_targets, const xent_upstream *upstream, void *d_grad,
    float *d_loss, float *d_loss_rows, float *d_lse, void *d_workspace,
    size_t workspace_bytes);

/*
 * Backward from a saved log-sum-exp (as written by xent_ce_forward's d_lse),
 * for frameworks that split the passes. Writes d_grad as above, reading the
 * logits once. d_grad may be exactly d_logits.
 */
XENT_API xent_status xent_ce_backward(xent_handle_t handle,
                                      const xent_ce_desc *desc,
                                      const void *d_logits,
                                      const void *d_targets,
                                      const float *d_lse,
                                      const xent_upstream *upstream,
                                      void *d_grad, void *d_workspace,
                                      size_t workspace_bytes);

/* =====================================================================
 * Entropy, KL divergence, binary cross-entropy, evaluation statistics
 *
 * The same conventions as cross-entropy above: caller-owned buffers in the
 * handle's memory space, row stride ld >= n_classes (columns [n_classes,
 * ld) never read or written), 64-bit offsets, no allocation, host
 * synchronization or device-to-host read inside a compute call (every call
 * can be captured in a CUDA graph), deterministic results, the kernel
 * variant chosen by desc->variant (AUTO: the dispatcher picks), a
 * workspace-size query for the scratch a reduction needs, and the
 * upstream-gradient convention of xent_upstream. Flags: XENT_FLAG_GRAD_F32
 * (gradients written as float) and XENT_FLAG_EMPTY_MEAN_NAN (a MEAN over
 * zero rows gives NaN instead of 0) apply to every op here.
 * Data problems (XENT_DATA_INVALID_PROBS, XENT_DATA_TARGET_OUTSIDE_01,
 * XENT_DATA_NEGATIVE_WEIGHT) are recorded in the status word on a CUDA
 * handle (the affected rows / elements become NaN); a CPU handle records
 * them too and returns XENT_STATUS_INVALID_DATA (outputs are written, the
 * affected values NaN), except a negative pos_weight, which a CPU handle
 * rejects before writing anything.
 * ===================================================================== */

/* ---------------------------------------------------------------------
 * Entropy of softmax(z), per row:
 *   H_i = lse(z_i) - sum_j p_ij z_ij = -sum_j p_ij log p_ij,  p_i = softmax(z_i)
 *   dH_i/dz_ij = -p_ij (z_ij - sum_k p_ik z_ik)
 * Both are evaluated relative to the row maximum m = z_k (no large terms
 * cancel): with s = sum_{j != k} e^(z_j - m) (the maximum's own term, 1,
 * is kept apart, so a peaked row's tiny entropy keeps its precision) and
 * t = sum_j e^(z_j - m) (z_j - m) <= 0,
 * H = log1p(s) - t / (1 + s) (two terms >= 0) and
 * dH/dz_j = p_j (t / (1 + s) - (z_j - m)).
 * Reduction NONE keeps the rows, MEAN divides their sum by n_rows (as
 * torch.distributions.Categorical(logits=z).entropy().mean()), SUM adds.
 * ------------------------------------------------------------------- */
typedef struct xent_entropy_desc {
    int64_t n_rows;    /* N >= 0 */
    int64_t n_classes; /* C >= 1 */
    int64_t ld;        /* logits (and gradient) row stride, >= C */
    xent_dtype logits_dtype;
    xent_reduction reduction;
    uint32_t flags;        /* XENT_FLAG_GRAD_F32, XENT_FLAG_EMPTY_MEAN_NAN */
    xent_variant variant;
} xent_entropy_desc;

/* ld = n_classes, fp32, MEAN, no flags, AUTO. */
XENT_API void xent_entropy_desc_init(xent_entropy_desc *desc, int64_t n_rows,
                                     int64_t n_classes);

/* Bytes of scratch the entropy calls need (0 under NONE); as
 * xent_ce_workspace_size. */
XENT_API xent_status xent_entropy_workspace_size(
    xent_handle_t handle, const xent_entropy_desc *desc, size_t *bytes);

/*
 *   d_logits    [n_rows, ld] of logits_dtype
 *   d_loss      [1] float: the reduced entropy, or NULL (must be NULL
 *               under NONE)
 *   d_loss_rows [n_rows] float: H_i, or NULL
 * At least one output must be non-NULL. Returns XENT_STATUS_SUCCESS or the
 * first problem found in the arguments (nothing is written then).
 */
XENT_API xent_status xent_entropy_forward(xent_handle_t handle,
                                          const xent_entropy_desc *desc,
                                          const void *d_logits, float *d_loss,
                                          float *d_loss_rows, void *d_workspace,
                                          size_t workspace_bytes);

/* The forward outputs (each may be NULL) and the gradient
 *   d_grad [n_rows, ld] of logits_dtype (float with XENT_FLAG_GRAD_F32):
 *          scale * u_i * dL/dz, L the reduced entropy (NONE: row i's H_i),
 *          u_i from the upstream exactly as for xent_ce_forward_backward.
 * d_grad may be exactly d_logits (in place, same dtype); any other overlap
 * with an input or output is XENT_STATUS_ALIASING. */
XENT_API xent_status xent_entropy_forward_backward(
    xent_handle_t handle, const xent_entropy_desc *desc, const void *d_logits,
    const xent_upstream *upstream, void *d_grad, float *d_loss,
    float *d_loss_rows, void *d_workspace, size_t workspace_bytes);

/* ---------------------------------------------------------------------
 * KL divergence KL(q || p), p = softmax(z) the student, per row:
 *   KL_i = sum_j q_ij (log q_ij - log p_ij),  terms with q_ij = 0 are 0
 * exactly torch.nn.functional.kl_div(log_softmax(z), target, reduction,
 * log_target): the teacher q is either
 *   XENT_KL_TARGET_PROBS   probabilities, float [n_rows, target_ld]
 *                          (log_target=False). Each row must be a
 *                          distribution: every q_ij >= 0 and
 *                          |sum_j q_ij - 1| <= prob_tol; other rows are
 *                          XENT_DATA_INVALID_PROBS.
 *   XENT_KL_TARGET_LOGITS  teacher logits t [n_rows, target_ld] of
 *                          logits_dtype, q = softmax(t) (distillation;
 *                          torch's log_target=True with
 *                          target = log_softmax(t)).
 * Gradients (of row i's KL):
 *   dKL_i/dz_ij = p_ij sum_k q_ik - q_ij
 *   dKL_i/dt_ij = q_ij (log q_ij - log p_ij - KL_i)   (teacher logits)
 * Reduction: NONE, XENT_REDUCTION_BATCHMEAN (= MEAN: the sum of the rows
 * divided by n_rows, torch's 'batchmean'; torch's elementwise 'mean' is
 * not offered) and SUM.
 * With teacher logits equal to the student's, KL and both gradients are
 * exactly 0.
 * ------------------------------------------------------------------- */
#define XENT_REDUCTION_BATCHMEAN XENT_REDUCTION_MEAN

typedef enum xent_kl_target {
    XENT_KL_TARGET_PROBS = 0,
    XENT_KL_TARGET_LOGITS = 1
} xent_kl_target;

/* The default xent_kl_desc.prob_tol. */
#define XENT_KL_DEFAULT_PROB_TOL 1e-3f

typedef struct xent_kl_desc {
    int64_t n_rows;    /* N >= 0 */
    int64_t n_classes; /* C >= 1 */
    int64_t ld;        /* student logits (and d_grad) row stride, >= C */
    xent_dtype logits_dtype; /* student logits, and teacher logits */
    xent_kl_target target_kind;
    int64_t target_ld; /* teacher row stride (and d_grad_target's), >= C */
    xent_reduction reduction; /* NONE, BATCHMEAN, SUM */
    float prob_tol;     /* probability rows: accepted |sum q - 1|, >= 0;
                           INFINITY checks only q >= 0 (unnormalized rows
                           are then fine: the gradient uses sum q) */
    uint32_t flags;     /* XENT_FLAG_GRAD_F32, XENT_FLAG_EMPTY_MEAN_NAN */
    xent_variant variant;
} xent_kl_desc;

/* ld = target_ld = n_classes, fp32, probability targets, BATCHMEAN,
 * prob_tol = XENT_KL_DEFAULT_PROB_TOL, no flags, AUTO. */
XENT_API void xent_kl_desc_init(xent_kl_desc *desc, int64_t n_rows,
                                int64_t n_classes);

XENT_API xent_status xent_kl_workspace_size(xent_handle_t handle,
                                            const xent_kl_desc *desc,
                                            size_t *bytes);

/*
 *   d_logits    [n_rows, ld] of logits_dtype: the student
 *   d_target    float [n_rows, target_ld] (PROBS) or [n_rows, target_ld]
 *               of logits_dtype (LOGITS)
 *   d_loss      [1] float: the reduced KL, or NULL (NULL under NONE)
 *   d_loss_rows [n_rows] float: KL_i, or NULL
 * At least one output must be non-NULL.
 */
XENT_API xent_status xent_kl_forward(xent_handle_t handle,
                                     const xent_kl_desc *desc,
                                     const void *d_logits,
                                     const void *d_target, float *d_loss,
                                     float *d_loss_rows, void *d_workspace,
                                     size_t workspace_bytes);

/* The forward outputs (each may be NULL) and the gradients of the reduced
 * KL (NONE: of row i's KL), times scale * u_i (see xent_upstream):
 *   d_grad        [n_rows, ld]: d/dz, or NULL
 *   d_grad_target [n_rows, target_ld]: d/dt, teacher logits only, or NULL
 * (logits_dtype, or float with XENT_FLAG_GRAD_F32). At least one gradient
 * must be non-NULL. d_grad may be exactly d_logits and d_grad_target
 * exactly d_target (in place, same dtype); any other overlap is
 * XENT_STATUS_ALIASING. */
XENT_API xent_status xent_kl_forward_backward(
    xent_handle_t handle, const xent_kl_desc *desc, const void *d_logits,
    const void *d_target, const xent_upstream *upstream, void *d_grad,
    void *d_grad_target, float *d_loss, float *d_loss_rows, void *d_workspace,
    size_t workspace_bytes);

/* ---------------------------------------------------------------------
 * Binary cross-entropy with logits, elementwise over [n_rows, n_classes]
 * (torch.nn.functional.binary_cross_entropy_with_logits): with target
 * y in [0, 1], pos_weight pw_j (1 when absent), weight w_ij (1 when
 * absent) and softplus sp(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|),
 *   l_ij      = w_ij [pw_j y_ij sp(-z_ij) + (1 - y_ij) sp(z_ij)]
 *   dl/dz_ij  = w_ij [(1 - y_ij) sigmoid(z_ij) - pw_j y_ij sigmoid(-z_ij)]
 * Both terms are non-negative and evaluated without cancellation for any
 * |z| (a term whose coefficient is 0 contributes 0). Reduction NONE keeps
 * the elements, MEAN divides their sum by n_rows * n_classes, SUM adds.
 * Data checks: y outside [0, 1] or NaN is XENT_DATA_TARGET_OUTSIDE_01; a
 * negative or NaN pos_weight is XENT_DATA_NEGATIVE_WEIGHT. The weight w
 * may be any value (as in torch).
 * ------------------------------------------------------------------- */
typedef struct xent_bce_desc {
    int64_t n_rows;    /* N >= 0 */
    int64_t n_classes; /* C >= 1 (the elements per row) */
    int64_t ld;        /* logits, d_grad and d_loss_elems row stride, >= C */
    xent_dtype logits_dtype;
    int64_t target_ld;        /* float targets [n_rows, target_ld], >= C */
    const float *pos_weight;  /* [n_pos_weight] or NULL; >= 0 */
    int64_t n_pos_weight;     /* must equal n_classes when set */
    const float *weight;      /* elementwise [n_rows, weight_ld] or NULL */
    int64_t weight_ld;        /* >= C when weight is set */
    xent_reduction reduction; /* NONE (per element), MEAN, SUM */
    uint32_t flags;           /* XENT_FLAG_GRAD_F32, EMPTY_MEAN_NAN */
    xent_variant variant;     /* a warp or a block per row, like CE */
} xent_bce_desc;

/* ld = target_ld = weight_ld = n_classes, fp32, no pos_weight, no weight,
 * MEAN, no flags, AUTO. */
XENT_API void xent_bce_desc_init(xent_bce_desc *desc, int64_t n_rows,
                                 int64_t n_classes);

XENT_API xent_status xent_bce_workspace_size(xent_handle_t handle,
                                             const xent_bce_desc *desc,
                                             size_t *bytes);

/*
 *   d_logits     [n_rows, ld] of logits_dtype
 *   d_targets    float [n_rows, target_ld], values in [0, 1]
 *   d_loss       [1] float: the reduced loss, or NULL (NULL under NONE)
 *   d_loss_elems [n_rows, ld] float: l_ij (columns [C, ld) untouched), or
 *                NULL
 * At least one output must be non-NULL.
 */
XENT_API xent_status xent_bce_forward(xent_handle_t handle,
                                      const xent_bce_desc *desc,
                                      const void *d_logits,
                                      const void *d_targets, float *d_loss,
                                      float *d_loss_elems, void *d_workspace,
                                      size_t workspace_bytes);

/* The forward outputs (each may be NULL) and
 *   d_grad [n_rows, ld] of logits_dtype (float with XENT_FLAG_GRAD_F32):
 *          scale * u_ij * dL/dz_ij.
 * The upstream: under MEAN/SUM one value (dloss_stride 0) as for
 * cross-entropy; under NONE, where L is element (i, j)'s loss,
 * u_ij = d_dloss[i * dloss_stride + j] with dloss_stride >= n_classes (an
 * [n_rows, dloss_stride] matrix), or d_dloss[0] for every element with
 * dloss_stride = 0. d_grad may be exactly d_logits. */
XENT_API xent_status xent_bce_forward_backward(
    xent_handle_t handle, const xent_bce_desc *desc, const void *d_logits,
    const void *d_targets, const xent_upstream *upstream, void *d_grad,
    float *d_loss, float *d_loss_elems, void *d_workspace,
    size_t workspace_bytes);

/* ---------------------------------------------------------------------
 * Evaluation statistics: read the logits once, emit many.
 *
 * xent_ce_eval makes one pass over the logits with class-index targets and
 * writes any subset of the per-row statistics below, and adds corpus-level
 * sums to a caller-owned accumulator. With z' the (softcapped) logits,
 * p = softmax(z'), y the target and lse = log sum_j e^(z'_j):
 *   loss      the cross-entropy row loss exactly as xent_ce_forward's
 *             d_loss_rows (class weights, label smoothing, z-loss)
 *   lse       log-sum-exp of z' (every row, ignored ones included)
 *   argmax    the first index of max_j z'_j (NaN logits are skipped; 0 when
 *             no logit exceeds -inf)
 *   correct   argmax == y
 *   rank      #{j : z'_j > z'_y}: the number of classes strictly above the
 *             target, so rank < k <=> the target is in the top k (ties
 *             count in the target's favour)
 *   entropy   H(p) = -sum_j p_j log p_j
 *   z_loss    the z-loss term z_loss * lse^2 of the loss
 * Ignored rows (y == ignore_index): loss 0, correct 0, rank -1, z_loss 0;
 * lse, argmax and entropy are still given. Rows with a bad target (outside
 * [0, C), or a negative class weight): loss and z_loss NaN, correct 0,
 * rank -1, recorded in the status word as for cross-entropy.
 * ------------------------------------------------------------------- */

/*
 * Corpus accumulator. The sums are exact and batch invariant: each counted
 * row's fp32 value v (its plain NLL = lse - z'_y, which ignores class
 * weights, label smoothing and z-loss; and its entropy) is converted to
 * the integer round(v * 2^32) (fixed point with 32 fraction bits, ties to
 * even; a resolution of 2^-32 per row, so a sum of n rows is within
 * n * 2^-33 of the exact sum of the rows' fp32 values) and added to a
 * 128-bit two's-complement integer; counts are int64. Integer addition is
 * associative, so the result is bitwise the same however the corpus is
 * split into calls and in whatever order rows and calls are added. (The
 * per-row fp32 values themselves depend only on the row and the kernel
 * variant; AUTO picks the variant by n_classes alone for this op.)
 * Rows counted: not ignored and with a valid target. A counted row whose
 * NLL or entropy is not finite or has magnitude >= 2^62 is not added to
 * that sum but counted in nonfinite. Zero it with xent_eval_accum_reset
 * (or memset); it lives in the handle's memory space.
 */
typedef struct xent_eval_accum {
    uint64_t nll[2];     /* sum of NLL * 2^32: [0] low, [1] high word */
    uint64_t entropy[2]; /* sum of entropy * 2^32, the same layout */
    int64_t tokens;      /* rows counted */
    int64_t top1;        /* counted rows with argmax == target */
    int64_t topk;        /* counted rows with rank < top_k */
    int64_t nonfinite;   /* counted rows whose NLL or entropy was skipped */
} xent_eval_accum;

/* The per-row outputs of xent_ce_eval; every pointer may be NULL. */
typedef struct xent_eval_outputs {
    float *d_loss;       /* [n_rows] */
    float *d_lse;        /* [n_rows] */
    int64_t *d_argmax;   /* [n_rows] */
    uint8_t *d_correct;  /* [n_rows] 1 or 0 */
    int64_t *d_rank;     /* [n_rows] */
    float *d_entropy;    /* [n_rows] */
    float *d_z_loss;     /* [n_rows] */
} xent_eval_outputs;

/*
 * One pass over the logits.
 *   desc       class-index targets (int32 or int64); ignore_index, weights,
 *              label_smoothing, z_loss, softcap and variant as for
 *              cross-entropy; reduction and flags are not used.
 *              Probability targets are XENT_STATUS_UNSUPPORTED.
 *   d_logits   [n_rows, ld] of logits_dtype
 *   d_targets  [n_rows] int32 / int64
 *   top_k      >= 1: the k of accum->topk
 *   outputs    per-row outputs, or NULL for none
 *   d_accum    [1] accumulator the call adds to (on the stream), or NULL
 * At least one output or the accumulator must be given. No workspace.
 * n_classes must be below 2^31 - 1 (XENT_STATUS_INVALID_SIZE otherwise;
 * rows and offsets are 64-bit as everywhere).
 * On a CPU handle a bad target returns XENT_STATUS_TARGET_OUT_OF_RANGE
 * after writing every row (and adding the good ones to the accumulator);
 * a negative or NaN class weight returns XENT_STATUS_INVALID_DATA before
 * anything is written, as for cross-entropy.
 */
XENT_API xent_status xent_ce_eval(xent_handle_t handle,
                                  const xent_ce_desc *desc,
                                  const void *d_logits, const void *d_targets,
                                  int64_t top_k,
                                  const xent_eval_outputs *outputs,
                                  xent_eval_accum *d_accum);

/* Zeroes *d_accum on the handle's stream (capturable). */
XENT_API xent_status xent_eval_accum_reset(xent_handle_t handle,
                                           xent_eval_accum *d_accum);

/* *dst += *src, exactly (host memory; e.g. accumulators of several
 * devices). */
XENT_API xent_status xent_eval_accum_merge(xent_eval_accum *dst,
                                           const xent_eval_accum *src);

/* What an accumulator (copied to host memory) says. */
typedef struct xent_eval_summary {
    int64_t tokens;       /* rows counted */
    double nll_sum;       /* the fixed-point sums as doubles */
    double entropy_sum;
    double mean_nll;      /* nll_sum / tokens */
    double perplexity;    /* exp(mean_nll) */
    double accuracy;      /* top1 / tokens */
    double topk_accuracy; /* topk / tokens */
    double mean_entropy;  /* entropy_sum / tokens */
    int64_t nonfinite;    /* as in the accumulator */
} xent_eval_summary;

/* Host function. The means are NaN when tokens == 0, and mean_nll,
 * perplexity and mean_entropy are NaN when nonfinite > 0. */
XENT_API xent_status xent_eval_summarize(const xent_eval_accum *accum,
                                         xent_eval_summary *summary);

/* =====================================================================
 * Fused linear + cross-entropy (an LM head without the N x C logits)
 *
 *   logits = H W^T + b,   H [n_rows, hidden], W [n_classes, hidden],
 *                         b [n_classes] (optional)
 *   loss   = cross-entropy of logits with class-index targets, every
 *            cross-entropy option (ignore_index, class weights, label
 *            smoothing, z-loss, softcap, NONE/MEAN/SUM, the upstream
 *            gradient of xent_upstream) exactly as xent_ce_forward_backward
 *   G      = scale * u_i * dloss/dlogits           [n_rows, n_classes]
 *   dH = G W,   dW = G^T H,   dbias = sum_i G_i.
 *
 * Memory. The rows are processed in chunks of chunk_rows rows. For each
 * chunk the logits are computed into the caller's workspace (fp32), the
 * fused single-read loss + gradient row kernel overwrites them with G in
 * place, then dH_chunk = G W is written and dW += G^T H_chunk,
 * dbias += column sums of G are accumulated. The workspace therefore peaks
 * at about chunk_rows * n_classes * 4 bytes (* 6 for bf16 inputs on a CUDA
 * handle, which also keeps a bf16 copy of G for the tensor-core GEMMs)
 * plus O(n_rows + n_classes), never n_rows * n_classes.
 * xent_linear_ce_chunk_rows picks the largest chunk that fits a budget;
 * a budget too small for one row is XENT_STATUS_WORKSPACE_TOO_SMALL.
 * The MEAN denominator (sum of w_y over the non-ignored rows) is computed
 * over the whole batch first, so chunking never changes the loss's scale.
 *
 * Dtypes. H, W and b share desc->dtype: XENT_DTYPE_F32 or XENT_DTYPE_BF16
 * (F16 is XENT_STATUS_UNSUPPORTED). Every GEMM accumulates in fp32 (no
 * TF32: cuBLAS runs in its default math mode with CUBLAS_COMPUTE_32F).
 * The logits and G are fp32 in the workspace. On a CUDA handle with bf16
 * inputs G is rounded to bf16 before the backward GEMMs (bf16 tensor-core
 * GEMMs, as PyTorch's bf16 autograd does); the CPU path uses the fp32 G.
 * dH, dW and dbias have desc->dtype, or float with XENT_FLAG_GRAD_F32.
 * dW accumulates over chunks: with bf16 outputs each chunk's fp32 sum is
 * added to the bf16 value and rounded (cuBLAS beta = 1), one rounding per
 * chunk; XENT_FLAG_GRAD_F32 accumulates dW in fp32 across chunks
 * (recommended for bf16 training with many chunks). dbias is always
 * accumulated in fp32 in the workspace and rounded once at the end.
 *
 * Determinism. With the same chunk_rows, inputs and device, results are
 * bitwise the same run after run. On a CPU handle they are also
 * independent of the thread count (the GEMM splits only over output tiles
 * and every sum runs in a fixed k order), and the per-row outputs (loss,
 * lse, dH) do not depend on chunk_rows either.
 * On a CUDA handle this assumes cuBLAS's documented reproducibility: the
 * same cuBLAS version, GPU architecture and SM count, the default math
 * mode, atomics mode CUBLAS_ATOMICS_NOT_ALLOWED (the default) and a fixed
 * cuBLAS workspace (the context sets its own on every call; a caller-given
 * cuBLAS handle keeps the workspace its owner set). cublasGemmEx with
 * CUBLAS_GEMM_DEFAULT is used; no split-K reduction with atomics is
 * requested. Different chunk sizes change the summation order of dW and
 * dbias (results then agree to rounding, not bitwise).
 *
 * Backends. On a CUDA handle the GEMMs run in cuBLAS on the handle's
 * stream; the cuBLAS handle and its workspace are created (or a caller's
 * cuBLAS handle adopted) by xent_linear_ce_create, never inside a compute
 * call, which allocates nothing, never synchronizes and can be captured in
 * a CUDA graph. On a CPU handle a cache-blocked, multithreaded fp32 GEMM
 * in C (host/cpu_gemm.c, no external BLAS) is used; the call is
 * synchronous and reports data problems like xent_ce_forward_backward.
 * ===================================================================== */

typedef struct xent_linear_ce_desc {
    int64_t n_rows;    /* N >= 0 */
    int64_t hidden;    /* D >= 1 */
    int64_t n_classes; /* C >= 1 */
    xent_dtype dtype;  /* of H, W, bias: F32 or BF16 */
    xent_target_type target_type; /* INDEX_I32 or INDEX_I64 */
    xent_reduction reduction;
    int64_t ignore_index;
    const float *weights;  /* class weights [n_weights] or NULL; >= 0 */
    int64_t n_weights;     /* == n_classes when weights is set */
    float label_smoothing; /* in [0, 1] */
    float z_loss;          /* >= 0 */
    float softcap;         /* 0 = off */
    uint32_t flags;        /* XENT_FLAG_EMPTY_MEAN_NAN, XENT_FLAG_GRAD_F32 */
    xent_variant variant;  /* row kernel variant (CUDA), AUTO by default */
} xent_linear_ce_desc;

/* N rows, D hidden, C classes; fp32, int64 targets, MEAN, ignore_index
 * -100, no weights, smoothing, z-loss or softcap, no flags, AUTO. */
XENT_API void xent_linear_ce_desc_init(xent_linear_ce_desc *desc,
                                       int64_t n_rows, int64_t hidden,
                                       int64_t n_classes);

/* A linear-CE context: the xent handle it runs on plus (CUDA) the cuBLAS
 * handle and the cuBLAS workspace. */
typedef struct xent_linear_ce_ctx *xent_linear_ce_t;

/* Setup (allocates; not a compute call). On a CUDA handle: when
 * cublas_handle is NULL a cuBLAS handle and a fixed 32 MiB cuBLAS
 * workspace are created on the handle's device and owned by the context;
 * otherwise cublas_handle (a cublasHandle_t) is used and stays the
 * caller's (it must outlive the context and must not be used concurrently
 * with it; each call sets its stream to the xent handle's stream). On a
 * CPU handle cublas_handle must be NULL. The context follows later
 * xent_set_stream calls on the handle. */
XENT_API xent_status xent_linear_ce_create(xent_handle_t handle,
                                           void *cublas_handle,
                                           xent_linear_ce_t *ctx);
/* Accepts NULL. Frees what create allocated (not a caller's cuBLAS
 * handle). */
XENT_API xent_status xent_linear_ce_destroy(xent_linear_ce_t ctx);

/* Workspace bytes for chunk_rows (>= 1) rows per chunk. The buffer lives in
 * the handle's memory space, any alignment, no initialization needed. */
XENT_API xent_status xent_linear_ce_workspace_size(
    xent_handle_t handle, const xent_linear_ce_desc *desc, int64_t chunk_rows,
    size_t *bytes);

/* The largest chunk_rows in [1, max(n_rows, 1)] whose workspace fits
 * budget_bytes. XENT_STATUS_WORKSPACE_TOO_SMALL when one row does not
 * fit. */
XENT_API xent_status xent_linear_ce_chunk_rows(
    xent_handle_t handle, const xent_linear_ce_desc *desc, size_t budget_bytes,
    int64_t *chunk_rows);

/* Outputs; each may be NULL, at least one must be given. */
typedef struct xent_linear_ce_outputs {
    float *d_loss;      /* [1] reduced loss (MEAN/SUM); NULL under NONE */
    float *d_loss_rows; /* [n_rows] per-row loss */
    float *d_lse;       /* [n_rows] log-sum-exp of the (capped) logits */
    void *d_dhidden;    /* [n_rows, hidden] dH */
    void *d_dweight;    /* [n_classes, hidden] dW (overwritten, not added) */
    void *d_dbias;      /* [n_classes] dbias = sum_i G_i (written even when
                           d_bias is NULL: the gradient at a zero bias) */
} xent_linear_ce_outputs;

/*
 * Forward, and backward when any gradient output is set.
 *   d_hidden   [n_rows, hidden] of dtype, row-major, dense
 *   d_weight   [n_classes, hidden] of dtype, row-major, dense
 *   d_bias     [n_classes] of dtype, or NULL (no bias)
 *   d_targets  [n_rows] int32 / int64 class indices
 *   upstream   as for xent_ce_forward_backward (NULL: dL/dloss = 1)
 *   chunk_rows >= 1 rows per chunk; workspace_bytes must be at least
 *              xent_linear_ce_workspace_size(.., chunk_rows, ..)
 * Outputs must not overlap each other, the inputs or the workspace
 * (XENT_STATUS_ALIASING). n_rows = 0 writes zero dW / dbias and the empty
 * reduction. Bad targets / negative weights behave as for
 * xent_ce_forward_backward (CUDA: NaN rows and the status word; CPU: the
 * returned status).
 */
XENT_API xent_status xent_linear_ce(
    xent_linear_ce_t ctx, const xent_linear_ce_desc *desc,
    const void *d_hidden, const void *d_weight, const void *d_bias,
    const void *d_targets, const xent_upstream *upstream,
    const xent_linear_ce_outputs *outputs, int64_t chunk_rows,
    void *d_workspace, size_t workspace_bytes);

#ifdef __cplusplus
}
#endif
#endif /* XENT_H */
