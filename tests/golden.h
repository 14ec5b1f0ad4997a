/*
 * golden.h - loader for the PyTorch golden vectors in tests/golden/ (one .txt per op).
 *
 * The files are written by tests/golden/gen_golden.py (torch, float64, CPU,
 * autograd gradients) and committed, so CI needs no PyTorch. This loader is
 * C11 and depends on libc only.
 *
 * File format (one file per op: ce.txt, entropy.txt, kl.txt, bce.txt)
 * --------------------------------------------------------------------
 * Line oriented, ASCII; tokens are separated by spaces or tabs; "\r\n" is
 * accepted. Blank lines and lines whose first non-blank character is '#' are
 * comments, anywhere. A file is a sequence of cases:
 *
 *     case <name>                 name: one token, unique within the file
 *     <key> <value>               a scalar: a number, or a word (string)
 *     <key> <count> v1 ... vcount an array of doubles, all on one line
 *     ...
 *     end
 *
 * Numbers are read with strtod (in the "C" locale): the generator writes the
 * shortest decimal string that reads back as exactly the same double, and
 * spells the special values inf, -inf and nan. A line with one value is a
 * scalar; a line with two or more values is an array, whose first value must
 * be the count of the values that follow. `key 0` is both the scalar 0 and
 * the empty array (arrays of N values are empty when N = 0). A key may appear
 * once per case. Every input value (logits, targets, weights, options) is
 * exactly representable in float32, so a test can feed the library the same
 * numbers torch saw; options like label_smoothing are the float32 roundings
 * (0.10000000149011612 for 0.1).
 *
 * Keys common to every case
 *   op         ce | entropy | kl | bce (the file's op)
 *   n, c       rows N >= 0 and classes C >= 1 (matrices are N x C row-major)
 *   reduction  ce, entropy, bce: none | mean | sum;  kl: none | batchmean | sum
 *   loss       array of 1: the reduced loss; under `none` the SUM of the
 *              per-row (bce: per-element) losses
 *   grad       N*C: gradient of `loss` w.r.t. the raw logits (under `none`
 *              the gradient of the sum, i.e. an upstream of 1 on every row)
 *
 * op ce (torch.nn.functional.cross_entropy; see include/xent.h)
 *   target           index | probs
 *   ignore_index     integer (-100 default; may lie inside [0, C))
 *   label_smoothing  a in [0, 1]
 *   z_loss           s >= 0 (not a torch option)
 *   softcap          cap >= 0, 0 = off (not a torch option)
 *   composed         1 when z_loss or softcap is set: torch cannot compute
 *                    these natively, so the values are composed from torch
 *                    ops: z' = cap*tanh(z/cap); row = cross_entropy(z', none)
 *                    + s*logsumexp(z')^2 on non-ignored rows; MEAN divides
 *                    the sum of rows by mean_denom. 0 otherwise (torch's own
 *                    reduction was used).
 *   mean_denom       the MEAN denominator, recorded for every reduction:
 *                    sum of w_{y_i} over non-ignored rows (count of
 *                    non-ignored rows without weights) for index targets,
 *                    N for probability targets. 0 when every row is ignored
 *                    (or N = 0): then torch's MEAN loss is nan (the gradient
 *                    is still all zeros); the library's default is 0.
 *   logits           N*C
 *   targets          index: N integers (class or ignore_index, as doubles);
 *                    probs: N*C probabilities (rows of dyadic values, exact
 *                    zeros included; probs_unnormalized rows sum to 0.5)
 *   weights          C class weights; absent when there are none
 *   loss_rows        N per-row losses (0 on ignored rows)
 *   lse              N logsumexp of the (capped) logits, for every row,
 *                    ignored rows included
 *
 * op entropy (torch.distributions.Categorical(logits=z).entropy())
 *   logits N*C; loss_rows N: H_i = -sum_c p log p with p = softmax(z_i);
 *   MEAN divides by N.
 *
 * op kl (torch.nn.functional.kl_div(log_softmax(z), t, reduction, log_target))
 *   target         probs | logits
 *   log_target     0 (target probs) | 1 (target logits)
 *   logits         N*C student logits z
 *   target_probs   N*C teacher probabilities q (exact zeros: 0 log 0 = 0),
 *                  present iff target = probs
 *   target_logits  N*C teacher logits; q = softmax(target_logits) and torch
 *                  got log_softmax(target_logits) with log_target=True;
 *                  present iff target = logits
 *   loss_rows      N: KL(q_i || p_i) = sum_c q (log q - log p)
 *   grad_target    N*C gradient of `loss` w.r.t. target_logits (only with
 *                  target = logits)
 *   batchmean divides the sum of rows by N.
 *
 * op bce (torch.nn.functional.binary_cross_entropy_with_logits)
 *   logits      N*C, some with |z| = 100 and 1e4
 *   targets     N*C in [0, 1], hard (0/1) or soft
 *   pos_weight  C, broadcast over rows; absent when none
 *   weight      N*C elementwise weight; absent when none
 *   loss_elems  N*C per-element losses
 *   MEAN divides by N*C.
 *
 * Accuracy: the values are torch's float64 results, not exact ones. Where
 * torch's formula cancels, compare with an absolute tolerance: bce with
 * y = 0 and z << 0 gives (1-y)z + softplus(-z) = exactly 0 where the true
 * loss is ~e^z (e.g. 1.5e-25 at z = -57); a peaked ce row's loss
 * lse - z_y carries an absolute error ~1e-16 * |z| however small it is.
 *
 * Compile with -DXENT_GOLDEN_DIR="\"/abs/path/tests/golden\"" so tests find
 * the files from any working directory; the default is "tests/golden".
 */
#ifndef XENT_TESTS_GOLDEN_H
#define XENT_TESTS_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#ifndef XENT_GOLDEN_DIR
#define XENT_GOLDEN_DIR "tests/golden"
#endif

/* One `key ...` line. */
typedef struct golden_entry {
    char *key;
    char *token;     /* the value when the line has exactly one, else NULL */
    int is_number;   /* the single value parsed as a number */
    double number;   /* that number */
    double *values;  /* array values (count of them in n_values), or NULL */
    int64_t n_values;
    int is_array;    /* the line was `key <count> v...` */
    int line;
} golden_entry;

typedef struct golden_case {
    char *name;
    int line; /* line of `case` */
    golden_entry *entries;
    int64_t n_entries;
} golden_case;

typedef struct golden_file {
    char *source; /* path, or the name given to golden_parse */
    golden_case *cases;
    int64_t n_cases;
} golden_file;

/* XENT_GOLDEN_DIR. */
const char *golden_dir(void);

/* Writes "<golden_dir()>/<file>" into buf; 0 on success, -1 if too long. */
int golden_path(char *buf, size_t buflen, const char *file);

/* Reads and parses a whole file. NULL on failure, with a message
 * ("path:line: what") in err (err may be NULL). */
golden_file *golden_load(const char *path, char *err, size_t errlen);

/* golden_load of "<golden_dir()>/<op>.txt". */
golden_file *golden_load_op(const char *op, char *err, size_t errlen);

/* Parses text[0, len) (need not be NUL-terminated); `source` names it in
 * messages (NULL: "<string>"). */
golden_file *golden_parse(const char *text, size_t len, const char *source,
                          char *err, size_t errlen);

/* Accepts NULL. */
void golden_free(golden_file *file);

int64_t golden_count(const golden_file *file);
const golden_case *golden_at(const golden_file *file, int64_t i); /* NULL if out of range */
const golden_case *golden_find(const golden_file *file, const char *name);
const char *golden_name(const golden_case *gc);

/* 1 if the case has the key (scalar or array), else 0. */
int golden_has(const golden_case *gc, const char *key);

/* A numeric scalar, or the single element of a 1-element array; dflt when
 * the key is absent or is neither. */
double golden_scalar(const golden_case *gc, const char *key, double dflt);

/* golden_scalar truncated to an integer; dflt unless the value is finite and
 * integral. */
int64_t golden_int(const golden_case *gc, const char *key, int64_t dflt);

/* The single token of a scalar line (e.g. "mean", "index", "-100"); NULL
 * when absent or the line is an array. */
const char *golden_str(const golden_case *gc, const char *key);

/* 1 if golden_str(gc, key) equals s. */
int golden_str_is(const golden_case *gc, const char *key, const char *s);

/* The values of an array (a non-NULL pointer, possibly to nothing, when
 * *count is 0) and their count; NULL with *count = 0 when the key is absent
 * or is not an array. count may be NULL. */
const double *golden_array(const golden_case *gc, const char *key,
                           int64_t *count);

/* Copy an array into a caller buffer of `cap` elements, converting. Return
 * the number of values, or -1 if the key is not an array, cap is too small,
 * or (integer versions) a value is not an integer in range. */
int64_t golden_copy_f64(const golden_case *gc, const char *key, double *dst,
                        int64_t cap);
int64_t golden_copy_f32(const golden_case *gc, const char *key, float *dst,
                        int64_t cap);
int64_t golden_copy_i64(const golden_case *gc, const char *key, int64_t *dst,
                        int64_t cap);
int64_t golden_copy_i32(const golden_case *gc, const char *key, int32_t *dst,
                        int64_t cap);

/* Checks one case against the key set above for its op: required keys
 * present with the right kinds and sizes, options in their domains, no
 * unknown keys. 0 if valid; otherwise -1 with a message in err. */
int golden_validate(const golden_case *gc, char *err, size_t errlen);

#endif /* XENT_TESTS_GOLDEN_H */
