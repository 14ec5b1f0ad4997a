/*
 * conformance.h - one body of backend-conformance checks for cross-entropy,
 * shared by the CPU backend (tests/test_cpu.c, host memory) and the CUDA
 * backend (tests/test_gpu.c, device memory), so that both run exactly the
 * same cases against the float64 reference (tests/ref.h).
 *
 * A backend is described by a tu_mem vtable (allocate, free, copy in, copy
 * out, wait). A case (conf_case) fixes the shape, dtype, target type,
 * reduction, options, op, gradient placement, upstream and kernel variant;
 * conf_run_case builds seeded inputs, runs the API on the backend with
 * poisoned, guarded outputs and compares everything it wrote with the
 * reference. The table of cases (conf_table) is shared by both test files.
 *
 * The checks report through Criterion's cr_expect (every failure names the
 * case in one line) and return whether the case passed, so a test may loop
 * over many cases and still report each failing one.
 */
#ifndef XENT_TESTS_CONFORMANCE_H
#define XENT_TESTS_CONFORMANCE_H

#include <stddef.h>
#include <stdint.h>

#include "xent.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Memory of one backend. Sizes in bytes; alloc may return NULL on failure
 * (the case then fails). download/upload are synchronous with respect to
 * the host; sync waits for all queued work of the handle. */
typedef struct tu_mem {
    void *(*alloc)(size_t bytes);
    void (*release)(void *ptr);
    void (*upload)(void *dst, const void *src, size_t bytes);   /* host -> backend */
    void (*download)(void *dst, const void *src, size_t bytes); /* backend -> host */
    void (*sync)(void);
} tu_mem;

typedef enum conf_op {
    CONF_OP_FWD = 0,     /* xent_ce_forward */
    CONF_OP_FWD_BWD = 1, /* xent_ce_forward_backward */
    CONF_OP_BWD_LSE = 2  /* xent_ce_backward from a saved lse */
} conf_op;

typedef enum conf_upstream {
    CONF_UP_DEFAULT = 0,   /* upstream pointer NULL: d(loss)/d(logits) */
    CONF_UP_SCALAR = 1,    /* one device float, stride 0, scale 1 */
    CONF_UP_PER_ROW = 2,   /* [n * up_stride] device floats (NONE only) */
    CONF_UP_BROADCAST = 3  /* one device float, stride 0, host scale */
} conf_upstream;

/* Which forward outputs are requested (0 means all that apply). */
enum {
    CONF_OUT_LOSS = 1u << 0, /* the reduced loss (not under NONE) */
    CONF_OUT_ROWS = 1u << 1, /* per-row losses */
    CONF_OUT_LSE = 1u << 2,  /* per-row lse */
    CONF_OUT_NONE = 1u << 3  /* fwd_bwd: the gradient only */
};

/* Extreme rows (rows i with i % 5 == 2, or the last row when n < 3): */
enum {
    CONF_EXTREME_NONE = 0,
    CONF_EXTREME_BIG = 1, /* +1e4 and -1e4 in columns other than the target */
    CONF_EXTREME_INF = 2  /* ... and -inf in column 0 (or 1 when 0 is the
                             target) and one more column, never the target */
};

typedef struct conf_case {
    int64_t n, c, ld;           /* logits [n, ld]; ld >= c */
    xent_dtype dtype;           /* logits dtype */
    xent_target_type target;    /* i32 / i64 indices or f32 probabilities */
    int64_t target_ld;          /* probabilities: row stride (0: = c) */
    xent_reduction reduction;
    int weights;                /* class weights (one class weight 0) */
    int target_zero_weight;     /* with weights: every target is the class
                                   of weight 0 (a zero MEAN denominator) */
    int64_t ignore_index;       /* XENT_DEFAULT_IGNORE_INDEX or in [0, c) */
    int ignore_rows;            /* index targets: rows i % 4 == 1 get the
                                   ignore index as their target */
    float label_smoothing, z_loss, softcap;
    uint32_t flags;             /* XENT_FLAG_* */
    conf_op op;
    int in_place;               /* gradient over the logits */
    conf_upstream upstream;
    int64_t up_stride;          /* CONF_UP_PER_ROW: >= 1 */
    float up_scale;             /* CONF_UP_BROADCAST: host scale */
    unsigned outputs;           /* CONF_OUT_* mask, 0 = all */
    int extreme;                /* CONF_EXTREME_* */
    xent_variant variant;
    int misaligned_ws;          /* workspace pointer offset by 3 bytes */
    uint64_t seed;
    int group;                  /* theme/group index (test_gpu loops by it) */
} conf_case;

/* One line describing a case (for assertion messages). Returns buf. */
const char *conf_describe(const conf_case *c, char *buf, size_t size);

/* The shared table of cases, built on first use (deterministic). */
const conf_case *conf_table(size_t *count);
/* Number of groups in the table (conf_case.group is in [0, groups)) and a
 * one-word name of a group. */
int conf_group_count(void);
const char *conf_group_name(int group);

/*
 * Runs one case on handle h (whose memory m describes) and compares every
 * output with the float64 reference; also checks guard regions, padding
 * columns, poisoned outputs and unchanged inputs. Returns 1 when it passed.
 * Failures are reported with cr_expect (the test goes on).
 */
int conf_run_case(xent_handle_t h, const tu_mem *m, const conf_case *c);

/* The description of the case being run (for a backend's own error
 * messages, e.g. a failing device synchronization). */
const char *conf_current_case(void);

/* Runs the case twice; every output (and padding) must be bitwise the
 * same. Returns 1 when it passed. */
int conf_determinism(xent_handle_t h, const tu_mem *m, const conf_case *c);

/* The case (an op with a gradient) with the gradient in place and in a
 * separate buffer: gradient, loss, rows and lse must be bitwise the same.
 * Returns 1 when it passed. */
int conf_inplace_matches_separate(xent_handle_t h, const tu_mem *m,
                                  const conf_case *c);

/* The case on two handles (e.g. CPU handles with different thread
 * counts): every output bitwise the same. Returns 1 when it passed. */
int conf_handles_agree(xent_handle_t h1, xent_handle_t h2, const tu_mem *m,
                       const conf_case *c);

/*
 * The backward-from-saved-lse reference (tests conformance.c): for the
 * logits z (dense [n, c], the dtype-rounded values), the case's targets
 * and options, and a given lse per row (the value the API receives), the
 * gradient of the reduced loss (NONE: of the sum of rows) with
 * p_j = exp(z'_j - lse_i), in long double. With the exact lse it equals
 * ref_ce_index / ref_ce_probs's gradient. y is used for index targets, q
 * (dense [n, c]) for probabilities. grad: [n * c].
 */
void conf_ref_grad_from_lse(int64_t n, int64_t c, const double *z,
                            const int64_t *y, const double *q,
                            int is_index, int reduction, int64_t ignore_index,
                            const double *weights, double label_smoothing,
                            double z_loss, double softcap, const double *lse,
                            double *grad);

/*
 * Helpers shared with the test files.
 *
 * conf_check_close: one tensor against its reference with the tolerance
 * rule of conformance.c (|got - ref| <= (1e-5 + out_rtol) |ref| +
 * 1e-5 max|ref|, rel-norm <= 1e-5 + out_rtol), reported with cr_expect as
 * "desc: what: ..."; row_len > 0 names the worst element by (row, column).
 * Returns 1 when close.
 */
int conf_check_close(const char *desc, const char *what, const double *ref,
                     const double *got, int64_t n, double out_rtol,
                     int64_t row_len);
/* The output rounding of a gradient dtype: 2^-11 (f16), 2^-8 (bf16), 0. */
double conf_out_rounding(xent_dtype t);

/* Element k of a buffer of dtype t, read as / written from float (f16 and
 * bf16 round to nearest even; these conversions are the test suite's own,
 * independent of the library's). */
float conf_load(xent_dtype t, const void *buf, int64_t k);
void conf_store(xent_dtype t, void *buf, int64_t k, float value);
float conf_f16_to_f32(uint16_t h);
uint16_t conf_f32_to_f16(float f);
float conf_bf16_to_f32(uint16_t h);
uint16_t conf_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif /* XENT_TESTS_CONFORMANCE_H */
