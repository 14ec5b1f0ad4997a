/*
 * cli.h - private declarations of the `xent` command-line tool.
 *
 * The tool is a table of subcommands (cli.c: xent_cli_commands) plus the
 * pieces every subcommand shares, so that a new one (host/cli_<name>.c)
 * only declares its options and does its work:
 *
 *   - a declarative option parser (xent_cli_opt / xent_cli_spec) that also
 *     prints the command's --help from the same table;
 *   - error reporting: exactly one line on stderr, "xent: <what>", and the
 *     exit codes below;
 *   - device selection (--device auto|cpu|cuda[:N], --threads N);
 *   - reading the usual inputs with their checks (logits, class-index
 *     targets, probability targets, class weights) through host/npy.h;
 *   - outputs through the .npy writer's temporary file + rename, aborted on
 *     every error path (and on SIGINT/SIGTERM/SIGHUP), so an output file is
 *     either complete or not there;
 *   - a one-line JSON emitter for --json, a progress bar for --progress,
 *     and the chunk size for streaming (--chunk-rows / XENT_CHUNK_ROWS).
 *
 * Adding a subcommand: write `int xent_cli_<name>_main(int argc, char
 * **argv)` (argv[0] is the subcommand's name) in host/cli_<name>.c, declare
 * it below and add a line to xent_cli_commands in cli.c (cmake/cli.cmake
 * compiles every host/cli_*.c into the tool).
 */
#ifndef XENT_CLI_H
#define XENT_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "npy.h"
#include "xent.h"

#if defined(__GNUC__)
#define XENT_CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define XENT_CLI_PRINTF(fmt, args)
#endif

/* ---- exit codes -------------------------------------------------------- */
enum {
    XENT_CLI_EXIT_OK = 0,
    XENT_CLI_EXIT_RUNTIME = 1, /* CUDA error, out of memory, I/O failure,
                                  failed validation (bench) */
    XENT_CLI_EXIT_USAGE = 2    /* bad flag or value, missing/malformed file,
                                  mismatched shapes, bad data */
};
/* xent_cli_parse's result when --help was printed (exit 0). */
#define XENT_CLI_HELP_SHOWN (-1)

/* ---- subcommands ------------------------------------------------------- */
typedef struct xent_cli_command {
    const char *name;
    const char *summary; /* one line for `xent --help` */
    int (*main)(int argc, char **argv);
} xent_cli_command;

int xent_cli_loss_main(int argc, char **argv);
int xent_cli_bench_main(int argc, char **argv);

/* ---- errors and messages ------------------------------------------------
 * xent_cli_fail prints "xent: <message>" as one line on stderr (newlines
 * and control characters in the message become spaces; an active progress
 * bar is cleared first) and returns `code`, so `return xent_cli_fail(...)`
 * ends a command. xent_cli_note prints the same way without failing. */
XENT_CLI_PRINTF(2, 3) int xent_cli_fail(int code, const char *fmt, ...);
XENT_CLI_PRINTF(1, 2) void xent_cli_note(const char *fmt, ...);

/* The message for a failed xent_* call, e.g. "out of memory"; for
 * XENT_STATUS_CUDA_ERROR it adds the CUDA runtime's last error. */
const char *xent_cli_status_text(xent_status st, char *buf, size_t len);
/* XENT_CLI_EXIT_USAGE for statuses that describe the input (invalid size or
 * value, unsupported combination, bad data), else XENT_CLI_EXIT_RUNTIME. */
int xent_cli_status_exit(xent_status st);

/* ---- option parsing ----------------------------------------------------- */
typedef enum xent_cli_opt_kind {
    XENT_CLI_OPT_FLAG,   /* int *: set to 1; takes no value */
    XENT_CLI_OPT_STRING, /* const char **: the value (non-empty) */
    XENT_CLI_OPT_INT,    /* int64_t *: a decimal integer in [min, max] */
    XENT_CLI_OPT_FLOAT,  /* double *: a finite number in [min, max] */
    XENT_CLI_OPT_CHOICE  /* int *: index of the value in choices[] */
} xent_cli_opt_kind;

typedef struct xent_cli_opt {
    const char *name; /* "--rows" */
    xent_cli_opt_kind kind;
    void *dest;
    const char *metavar; /* "N"; NULL for flags */
    const char *help;    /* may contain '\n' (continued lines are indented) */
    const char *const *choices; /* CHOICE: NULL-terminated */
    double min, max;            /* INT, FLOAT: inclusive bounds */
    int seen;                   /* set by the parser */
} xent_cli_opt;

/* Bounds that accept everything. */
#define XENT_CLI_NO_MIN (-1e300)
#define XENT_CLI_NO_MAX (1e300)

typedef struct xent_cli_spec {
    const char *command; /* "loss" */
    const char *usage;   /* synopsis, one or more lines, no "usage: " */
    const char *about;   /* a paragraph under the synopsis */
    const char *epilog;  /* printed after the options (may be NULL) */
    xent_cli_opt *opts;
    int n_opts;
} xent_cli_spec;

/*
 * Parses argv[1, argc) ("--name value" or "--name=value"; the last of
 * repeated options wins) into the options' destinations. "--help"/"-h"
 * print the help on stdout and return XENT_CLI_HELP_SHOWN. A problem
 * prints one line and returns XENT_CLI_EXIT_USAGE; otherwise 0.
 * Positional arguments are not accepted.
 */
int xent_cli_parse(xent_cli_spec *spec, int argc, char **argv);
void xent_cli_print_help(const xent_cli_spec *spec, FILE *f);
/* The option named `name` in spec (NULL if none). */
xent_cli_opt *xent_cli_find_opt(xent_cli_spec *spec, const char *name);

/* Options most commands share. */
typedef struct xent_cli_common {
    const char *device; /* NULL: auto */
    int64_t threads;    /* 0: every core */
    int json;
    int progress;
    int64_t chunk_rows; /* 0: not given */
    int bf16;
} xent_cli_common;

/* clang-format off */
#define XENT_CLI_OPT_DEVICE(c)                                                 \
    {"--device", XENT_CLI_OPT_STRING, &(c)->device, "auto|cpu|cuda[:N]",        \
     "where to compute (default auto: the GPU if one\nworks, else the CPU)",   \
     NULL, 0, 0, 0}
#define XENT_CLI_OPT_THREADS(c)                                                \
    {"--threads", XENT_CLI_OPT_INT, &(c)->threads, "N",                         \
     "CPU threads (default 0: every core)", NULL, 0, 4096, 0}
#define XENT_CLI_OPT_JSON(c)                                                   \
    {"--json", XENT_CLI_OPT_FLAG, &(c)->json, NULL,                             \
     "print one JSON object as the last line of\nstdout", NULL, 0, 0, 0}
#define XENT_CLI_OPT_PROGRESS(c)                                               \
    {"--progress", XENT_CLI_OPT_FLAG, &(c)->progress, NULL,                     \
     "show a progress bar on stderr even when it is\nnot a terminal", NULL, 0,  \
     0, 0}
#define XENT_CLI_OPT_CHUNK_ROWS(c)                                             \
    {"--chunk-rows", XENT_CLI_OPT_INT, &(c)->chunk_rows, "N",                   \
     "rows per streamed chunk (default: from memory,\n"  \
     "<= 256 MiB of logits; env XENT_CHUNK_ROWS)",                                                    \
     NULL, 1, 9.2e18, 0}
#define XENT_CLI_OPT_BF16(c)                                                   \
    {"--bf16", XENT_CLI_OPT_FLAG, &(c)->bf16, NULL,                             \
     "read 2-byte logits as bfloat16 (.npy has no\nbfloat16 type)", NULL, 0, 0, \
     0}

/* clang-format on */

/*
 * The streaming chunk size: opt_value when > 0, else $XENT_CHUNK_ROWS when
 * set (must be a positive integer: otherwise one line and
 * XENT_CLI_EXIT_USAGE), else 0 (the caller chooses). Returns 0 or the exit
 * code.
 */
int xent_cli_chunk_rows(int64_t opt_value, int64_t *rows);

/* ---- device selection --------------------------------------------------- */
typedef struct xent_cli_device {
    xent_handle_t handle;
    int is_cuda;
    int ordinal;        /* CUDA device, -1 on the CPU */
    int threads;        /* CPU handle: threads in use */
    char label[32];     /* "cpu" or "cuda:N" */
    char name[256];     /* the GPU's name, or the CPU's model */
    size_t free_bytes;  /* CUDA: free device memory at open */
    size_t total_bytes; /* CUDA: device memory */
    size_t l2_bytes;    /* CUDA: L2 size; CPU: last-level cache */
} xent_cli_device;

/* Checks the syntax of --device (NULL = auto): 0, or one line and
 * XENT_CLI_EXIT_USAGE. */
int xent_cli_device_check(const char *spec);
/*
 * Opens the device: auto tries xent_create and falls back to the CPU with
 * "xent: no usable CUDA device (<why>); using the CPU" on stderr; "cuda" /
 * "cuda:N" must work (else one line, XENT_CLI_EXIT_RUNTIME); "cpu" uses
 * `threads` threads (0: every core). On CUDA the device is made current.
 * Returns 0 or an exit code (message printed).
 */
int xent_cli_device_open(const char *spec, int64_t threads,
                         xent_cli_device *dev);
/* Destroys the handle. Accepts a zeroed struct. */
void xent_cli_device_close(xent_cli_device *dev);

/* ---- inputs ------------------------------------------------------------- */
/* Each opens `path` into *a (closed again on failure) and checks it; a
 * problem prints one line naming the file and returns XENT_CLI_EXIT_USAGE.
 * `flag` names the option in messages ("--logits"). */

/* Logits: 2-D (N, C) float16/float32/float64 (bfloat16 with bf16 != 0),
 * C >= 1. */
int xent_cli_open_logits(xent_npy *a, const char *path, int bf16,
                         int64_t *n_rows, int64_t *n_classes);
/* Class-index targets: 1-D int32/int64 of length n_rows (`logits` names
 * the logits file in the mismatch message). */
int xent_cli_open_targets(xent_npy *a, const char *path, int64_t n_rows,
                          const char *logits);
/* Probability targets: 2-D (n_rows, n_classes), float16/32/64. */
int xent_cli_open_probs(xent_npy *a, const char *path, int64_t n_rows,
                        int64_t n_classes, const char *logits);
/* Any float16/32/64 matrix of the logits' shape (n_rows, n_classes), e.g.
 * teacher logits; `what` names it in the mismatch message. */
int xent_cli_open_matrix(xent_npy *a, const char *path, int64_t n_rows,
                         int64_t n_classes, const char *what,
                         const char *logits);
/* Class weights: 1-D (n_classes,) float16/32/64, every value >= 0 and not
 * NaN; converted to a malloc'd float array in *weights. */
int xent_cli_load_weights(const char *path, int64_t n_classes,
                          const char *logits, float **weights);

/*
 * One pass over class-index targets in row order: the first target that is
 * neither ignore_index nor in [0, n_classes) is an error naming the file
 * and the row (XENT_CLI_EXIT_USAGE). Otherwise *denom = sum of w_{y_i}
 * (1 without weights) over the non-ignored rows in fp64, in row order (the
 * MEAN denominator), and *n_ignored counts the ignored rows.
 */
int xent_cli_scan_targets(const xent_npy *t, int64_t n_classes,
                          int64_t ignore_index, const float *weights,
                          double *denom, int64_t *n_ignored);

/* The library dtype for logits of npy dtype d: F32/F16/BF16 pass through,
 * F64 converts to F32 (*convert = 1). */
xent_dtype xent_cli_logits_dtype(xent_npy_dtype d, int *convert);
size_t xent_cli_dtype_size(xent_dtype d);
const char *xent_cli_dtype_name(xent_dtype d); /* "f32", "f16", "bf16" */

/*
 * Copies rows [row0, row0 + rows) of a 2-D array (n_cols columns) into dst
 * as `want` (F32: converting f16/bf16/f64; anything else: the bytes as
 * they are, which must then be the file's dtype), using `threads` threads
 * for large copies.
 */
void xent_cli_copy_rows(const xent_npy *a, int64_t row0, int64_t rows,
                        int64_t n_cols, xent_npy_dtype want, void *dst,
                        int threads);

/* ---- outputs ------------------------------------------------------------ */
typedef struct xent_cli_output {
    xent_npy_writer w;
    const char *flag; /* "--loss-out", for messages */
} xent_cli_output;

/*
 * Starts writing path (temporary file beside it; nothing under the final
 * name until commit). Registers the temporary file for removal on
 * SIGINT/SIGTERM/SIGHUP. Failure: one line, XENT_CLI_EXIT_USAGE (a bad
 * output path is a usage problem).
 */
int xent_cli_output_open(xent_cli_output *o, const char *flag, const char *path,
                         xent_npy_dtype dtype, int ndim, const int64_t *shape);
/* Appends data; no-op on an output that was never opened. Failure: one
 * line, XENT_CLI_EXIT_RUNTIME (the output is aborted). */
int xent_cli_output_write(xent_cli_output *o, const void *data, size_t bytes);
/* Renames into place; no-op when never opened. Failure as above. */
int xent_cli_output_commit(xent_cli_output *o);
/* Removes the temporary file; harmless when not open. */
void xent_cli_output_abort(xent_cli_output *o);
/* 1 when open. */
int xent_cli_output_active(const xent_cli_output *o);

/* Fails (one line, XENT_CLI_EXIT_USAGE) when two of paths[0, n) (NULLs
 * skipped) name the same file; flags[i] names paths[i]. */
int xent_cli_distinct_outputs(const char *const *paths,
                              const char *const *flags, int n);

/* ---- JSON --------------------------------------------------------------- */
/* A one-line JSON writer: objects and arrays nest; keys are ignored inside
 * arrays; non-finite numbers are written as null. */
#define XENT_JSON_MAX_DEPTH 16
typedef struct xent_json {
    FILE *f;
    int depth;
    int count[XENT_JSON_MAX_DEPTH]; /* members written at each level */
    int is_array[XENT_JSON_MAX_DEPTH];
} xent_json;

void xent_json_start(xent_json *j, FILE *f); /* writes '{' */
void xent_json_finish(xent_json *j);         /* closes all, '\n', flush */
void xent_json_object(xent_json *j, const char *key);
void xent_json_array(xent_json *j, const char *key);
void xent_json_close(xent_json *j);
void xent_json_str(xent_json *j, const char *key, const char *s);
void xent_json_num(xent_json *j, const char *key, double v); /* %.17g */
void xent_json_f32(xent_json *j, const char *key, double v); /* %.9g */
void xent_json_fix(xent_json *j, const char *key, double v, int decimals);
void xent_json_int(xent_json *j, const char *key, int64_t v);
void xent_json_bool(xent_json *j, const char *key, int v);
void xent_json_null(xent_json *j, const char *key);

/* ---- progress ------------------------------------------------------------ */
typedef struct xent_cli_progress {
    int on;
    int64_t total;
    double t0, last;
    int width; /* characters drawn on the current line */
    const char *unit;
} xent_cli_progress;

/* Shown when stderr is a terminal or force != 0. */
void xent_cli_progress_start(xent_cli_progress *p, int force, int64_t total,
                             const char *unit);
void xent_cli_progress_update(xent_cli_progress *p, int64_t done);
/* Clears the line. Harmless when off or already ended. */
void xent_cli_progress_end(xent_cli_progress *p);

/* ---- misc -----------------------------------------------------------------
 */
double xent_cli_now(void); /* seconds, monotonic */
/* "1.5 GiB" style. */
const char *xent_cli_bytes_text(double bytes, char *buf, size_t len);

#endif /* XENT_CLI_H */
