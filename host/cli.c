/*
 * cli.c - the `xent` command-line tool: main, the subcommand table, and the
 * pieces every subcommand shares (see cli.h): option parsing and help,
 * one-line errors and exit codes, device selection, input checks, outputs
 * through temporary files, the JSON emitter, the progress bar.
 *
 * Exit codes: 0 success; 2 a usage or input problem (bad flag or value,
 * missing or malformed file, mismatched shapes, out-of-range target,
 * negative weight); 1 a runtime failure (CUDA error, out of memory, I/O
 * error while writing). Every failure prints exactly one line on stderr and
 * leaves no output file behind.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "bench.h"

#ifndef XENT_CLI_VERSION
#define XENT_CLI_VERSION "0.1.0"
#endif

/* ------------------------------------------------------------------------ */
/* Subcommands                                                              */
/* ------------------------------------------------------------------------ */

/* host/cli_info.c */
int xent_cli_entropy_main(int argc, char **argv);
int xent_cli_kl_main(int argc, char **argv);
int xent_cli_bce_main(int argc, char **argv);
int xent_cli_eval_main(int argc, char **argv);

/* New subcommands: one line here (and their main in host/cli_<name>.c). */
static const xent_cli_command xent_cli_commands[] = {
    {"loss",
     "softmax cross-entropy of .npy files: loss, row losses, lse, gradient",
     xent_cli_loss_main},
    {"bench", "validate, then time the kernels (or the CPU backend)",
     xent_cli_bench_main},
    {"entropy", "entropy of softmax(z) per row: value, rows, gradient",
     xent_cli_entropy_main},
    {"kl", "KL(q || softmax(z)), q as teacher logits or probabilities",
     xent_cli_kl_main},
    {"bce", "binary cross-entropy with logits (pos_weight, weight)",
     xent_cli_bce_main},
    {"eval", "corpus NLL, perplexity, accuracy, top-k, entropy (one pass)",
     xent_cli_eval_main},
};
static const int xent_cli_n_commands =
    (int)(sizeof xent_cli_commands / sizeof xent_cli_commands[0]);

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: xent <command> [options]\n"
               "       xent <command> --help\n"
               "       xent --help | --version\n\n"
               "Softmax cross-entropy on NVIDIA GPUs and on the CPU, with\n"
               "torch.nn.functional.cross_entropy's semantics.\n\n"
               "commands:\n");
    for (int i = 0; i < xent_cli_n_commands; i++)
        fprintf(f, "  %-8s %s\n", xent_cli_commands[i].name,
                xent_cli_commands[i].summary);
    fprintf(f, "\nexit status: 0 success; 1 runtime failure (CUDA error, out "
               "of memory,\nI/O error, failed validation); 2 bad usage or "
               "input (one line on stderr\nnames the problem; no output file "
               "is written).\n");
}

static void print_version(void)
{
    int rt = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess)
        rt = 0;
    printf("xent %s (libxent %s, CUDA runtime %d.%d)\n", XENT_CLI_VERSION,
           xent_version_string(), rt / 1000, (rt % 1000) / 10);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_main_help(stderr);
        return XENT_CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        print_main_help(stdout);
        return XENT_CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") ||
        !strcmp(cmd, "version")) {
        print_version();
        return XENT_CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "help")) {
        if (argc < 3) {
            print_main_help(stdout);
            return XENT_CLI_EXIT_OK;
        }
        for (int i = 0; i < xent_cli_n_commands; i++) {
            if (!strcmp(argv[2], xent_cli_commands[i].name)) {
                char *sub[] = {argv[2], "--help", NULL};
                return xent_cli_commands[i].main(2, sub);
            }
        }
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "unknown command '%s' (see 'xent --help')",
                             argv[2]);
    }
    for (int i = 0; i < xent_cli_n_commands; i++)
        if (!strcmp(cmd, xent_cli_commands[i].name))
            return xent_cli_commands[i].main(argc - 1, argv + 1);
    if (cmd[0] == '-')
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "unknown option '%s' (see 'xent --help')", cmd);
    return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                         "unknown command '%s' (see 'xent --help')", cmd);
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */
/* ------------------------------------------------------------------------ */

static xent_cli_progress *g_progress; /* the bar on screen, if any */

static void vmessage(const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    if (g_progress)
        xent_cli_progress_end(g_progress);
    fprintf(stderr, "xent: %s\n", buf);
    fflush(stderr);
}

int xent_cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    return code;
}

void xent_cli_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
}

const char *xent_cli_status_text(xent_status st, char *buf, size_t len)
{
    if (st == XENT_STATUS_CUDA_ERROR) {
        cudaError_t e = cudaGetLastError();
        snprintf(buf, len, "%s (%s)", xent_status_string(st),
                 e == cudaSuccess ? "no further detail"
                                  : cudaGetErrorString(e));
    } else {
        snprintf(buf, len, "%s", xent_status_string(st));
    }
    return buf;
}

int xent_cli_status_exit(xent_status st)
{
    switch (st) {
    case XENT_STATUS_INVALID_SIZE:
    case XENT_STATUS_INVALID_VALUE:
    case XENT_STATUS_UNSUPPORTED:
    case XENT_STATUS_TARGET_OUT_OF_RANGE:
    case XENT_STATUS_INVALID_DATA: return XENT_CLI_EXIT_USAGE;
    default: return XENT_CLI_EXIT_RUNTIME;
    }
}

/* ------------------------------------------------------------------------ */
/* Option parsing                                                           */
/* ------------------------------------------------------------------------ */

xent_cli_opt *xent_cli_find_opt(xent_cli_spec *spec, const char *name)
{
    for (int i = 0; i < spec->n_opts; i++)
        if (!strcmp(spec->opts[i].name, name))
            return &spec->opts[i];
    return NULL;
}

/* "mean|sum|none" */
static void choices_text(const char *const *choices, const char *sep, char *buf,
                         size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; choices && choices[i]; i++) {
        int w =
            snprintf(buf + pos, len - pos, "%s%s", i ? sep : "", choices[i]);
        if (w < 0 || (size_t)w >= len - pos)
            break;
        pos += (size_t)w;
    }
}

static void range_text(const xent_cli_opt *o, char *buf, size_t len)
{
    int lo = o->min > XENT_CLI_NO_MIN, hi = o->max < 9e18;
    const char *what = o->kind == XENT_CLI_OPT_INT ? "an integer" : "a number";
    if (o->kind == XENT_CLI_OPT_FLOAT && hi && !(o->max >= 1e299))
        snprintf(buf, len, "a number in [%g, %g]", o->min, o->max);
    else if (lo && hi && o->max < 1e299)
        snprintf(buf, len, "%s from %.0f to %.0f", what, o->min, o->max);
    else if (lo)
        snprintf(buf, len, "%s >= %g", what, o->min);
    else
        snprintf(buf, len, "%s", what);
}

static int set_value(const xent_cli_spec *spec, xent_cli_opt *o, const char *v)
{
    char range[128];
    switch (o->kind) {
    case XENT_CLI_OPT_FLAG: *(int *)o->dest = 1; return 0;
    case XENT_CLI_OPT_STRING:
        if (v[0] == '\0')
            return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s: empty value for %s",
                                 spec->command, o->name);
        *(const char **)o->dest = v;
        return 0;
    case XENT_CLI_OPT_INT: {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || *end != '\0' || errno == ERANGE || (double)x < o->min ||
            (double)x > o->max) {
            range_text(o, range, sizeof range);
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: invalid value '%s' for %s (%s)",
                                 spec->command, v, o->name, range);
        }
        *(int64_t *)o->dest = (int64_t)x;
        return 0;
    }
    case XENT_CLI_OPT_FLOAT: {
        char *end = NULL;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end != '\0' || !isfinite(x) || x < o->min ||
            x > o->max) {
            range_text(o, range, sizeof range);
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: invalid value '%s' for %s (%s)",
                                 spec->command, v, o->name, range);
        }
        *(double *)o->dest = x;
        return 0;
    }
    case XENT_CLI_OPT_CHOICE:
        for (int i = 0; o->choices && o->choices[i]; i++) {
            if (!strcmp(v, o->choices[i])) {
                *(int *)o->dest = i;
                return 0;
            }
        }
        choices_text(o->choices, ", ", range, sizeof range);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: invalid value '%s' for %s (one of: %s)",
                             spec->command, v, o->name, range);
    }
    return XENT_CLI_EXIT_USAGE;
}

int xent_cli_parse(xent_cli_spec *spec, int argc, char **argv)
{
    for (int i = 0; i < spec->n_opts; i++)
        spec->opts[i].seen = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            xent_cli_print_help(spec, stdout);
            return XENT_CLI_HELP_SHOWN;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: unexpected argument '%s' (see 'xent %s "
                                 "--help')",
                                 spec->command, arg, spec->command);
        char name[128];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof name)
            nlen = sizeof name - 1;
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        xent_cli_opt *o = xent_cli_find_opt(spec, name);
        if (!o)
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: unknown option '%s' (see 'xent %s "
                                 "--help')",
                                 spec->command, name, spec->command);
        const char *value = NULL;
        if (o->kind == XENT_CLI_OPT_FLAG) {
            if (eq)
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s: option %s takes no value",
                                     spec->command, o->name);
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))
                return xent_cli_fail(
                    XENT_CLI_EXIT_USAGE, "%s: option %s needs a value (%s)",
                    spec->command, o->name, o->metavar ? o->metavar : "VALUE");
            value = argv[++i];
        }
        int rc = set_value(spec, o, value);
        if (rc)
            return rc;
        o->seen = 1;
    }
    return 0;
}

/* Prints text, indenting every line after the first by `indent`. */
static void print_indented(FILE *f, const char *text, int indent)
{
    for (const char *p = text; *p; p++) {
        fputc(*p, f);
        if (*p == '\n' && p[1])
            fprintf(f, "%*s", indent, "");
    }
}

void xent_cli_print_help(const xent_cli_spec *spec, FILE *f)
{
    fprintf(f, "usage: ");
    print_indented(f, spec->usage, 7);
    fprintf(f, "\n\n");
    if (spec->about) {
        fputs(spec->about, f);
        fputs("\n\n", f);
    }
    fprintf(f, "options:\n");
    const int col = 30;
    for (int i = 0; i < spec->n_opts; i++) {
        const xent_cli_opt *o = &spec->opts[i];
        char head[160], meta[120];
        if (o->metavar)
            snprintf(meta, sizeof meta, " %s", o->metavar);
        else if (o->kind == XENT_CLI_OPT_CHOICE) {
            meta[0] = ' ';
            choices_text(o->choices, "|", meta + 1, sizeof meta - 1);
        } else
            meta[0] = '\0';
        snprintf(head, sizeof head, "  %s%s", o->name, meta);
        if ((int)strlen(head) + 1 > col)
            fprintf(f, "%s\n%*s", head, col, "");
        else
            fprintf(f, "%-*s", col, head);
        print_indented(f, o->help ? o->help : "", col);
        fputc('\n', f);
    }
    fprintf(f, "%-*s%s\n", col, "  -h, --help", "show this help");
    if (spec->epilog) {
        fputc('\n', f);
        fputs(spec->epilog, f);
        fputc('\n', f);
    }
}

int xent_cli_chunk_rows(int64_t opt_value, int64_t *rows)
{
    *rows = 0;
    if (opt_value > 0) {
        *rows = opt_value;
        return 0;
    }
    const char *env = getenv("XENT_CHUNK_ROWS");
    if (!env || env[0] == '\0')
        return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(env, &end, 10);
    if (end == env || *end != '\0' || errno == ERANGE || x < 1)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "invalid XENT_CHUNK_ROWS='%s' (a positive "
                             "integer)",
                             env);
    *rows = (int64_t)x;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Device selection                                                         */
/* ------------------------------------------------------------------------ */

/* spec -> kind (0 auto, 1 cpu, 2 cuda) and ordinal (-1: current). */
static int parse_device(const char *spec, int *kind, int *ordinal)
{
    *ordinal = -1;
    if (!spec || !strcmp(spec, "auto")) {
        *kind = 0;
        return 0;
    }
    if (!strcmp(spec, "cpu")) {
        *kind = 1;
        return 0;
    }
    if (!strcmp(spec, "cuda")) {
        *kind = 2;
        return 0;
    }
    if (!strncmp(spec, "cuda:", 5) && spec[5] >= '0' && spec[5] <= '9') {
        char *end = NULL;
        errno = 0;
        long v = strtol(spec + 5, &end, 10);
        if (*end == '\0' && errno == 0 && v >= 0 && v <= 1 << 20) {
            *kind = 2;
            *ordinal = (int)v;
            return 0;
        }
    }
    return -1;
}

int xent_cli_device_check(const char *spec)
{
    int kind, ordinal;
    if (parse_device(spec, &kind, &ordinal) != 0)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "invalid value '%s' for --device (auto, cpu, "
                             "cuda or cuda:N)",
                             spec);
    return 0;
}

/* Why CUDA is unusable, for messages. */
static void cuda_why(int ordinal, xent_status st, char *buf, size_t len)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        snprintf(buf, len, "%s", cudaGetErrorString(e));
    else if (count == 0)
        snprintf(buf, len, "no CUDA devices");
    else if (ordinal >= count)
        snprintf(buf, len, "device %d does not exist; %d device%s", ordinal,
                 count, count == 1 ? "" : "s");
    else
        snprintf(buf, len, "%s", xent_status_string(st));
    (void)cudaGetLastError();
}

static int open_cuda(int ordinal, xent_cli_device *dev, xent_status *st_out)
{
    xent_handle_t h = NULL;
    xent_status st =
        ordinal < 0 ? xent_create(&h) : xent_create_on_device(&h, ordinal);
    *st_out = st;
    if (st != XENT_STATUS_SUCCESS)
        return -1;
    int dv = ordinal;
    if (dv < 0 && cudaGetDevice(&dv) != cudaSuccess)
        dv = 0;
    if (cudaSetDevice(dv) != cudaSuccess) {
        xent_destroy(h);
        *st_out = XENT_STATUS_CUDA_ERROR;
        return -1;
    }
    dev->handle = h;
    dev->is_cuda = 1;
    dev->ordinal = dv;
    dev->threads = 0;
    snprintf(dev->label, sizeof dev->label, "cuda:%d", dv);
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dv) == cudaSuccess)
        snprintf(dev->name, sizeof dev->name, "%s", prop.name);
    else
        snprintf(dev->name, sizeof dev->name, "CUDA device %d", dv);
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        dev->free_bytes = fr;
        dev->total_bytes = tot;
    }
    dev->l2_bytes = xent_bench_l2_bytes(dv);
    (void)cudaGetLastError();
    return 0;
}

static int open_cpu(int64_t threads, xent_cli_device *dev)
{
    xent_handle_t h = NULL;
    xent_status st = xent_create_cpu(&h, (int)threads);
    if (st != XENT_STATUS_SUCCESS) {
        char b[256];
        return xent_cli_fail(xent_cli_status_exit(st),
                             "cannot create a CPU handle: %s",
                             xent_cli_status_text(st, b, sizeof b));
    }
    dev->handle = h;
    dev->is_cuda = 0;
    dev->ordinal = -1;
    dev->threads = threads > 0 ? (int)threads : xent_bench_cpu_count();
    snprintf(dev->label, sizeof dev->label, "cpu");
    xent_bench_cpu_name(dev->name, sizeof dev->name);
    dev->l2_bytes = xent_bench_llc_bytes();
    return 0;
}

int xent_cli_device_open(const char *spec, int64_t threads,
                         xent_cli_device *dev)
{
    memset(dev, 0, sizeof *dev);
    dev->ordinal = -1;
    int kind, ordinal;
    if (parse_device(spec, &kind, &ordinal) != 0)
        return xent_cli_device_check(spec);
    if (kind == 1)
        return open_cpu(threads, dev);
    xent_status st;
    if (open_cuda(ordinal, dev, &st) == 0)
        return 0;
    char why[256];
    cuda_why(ordinal, st, why, sizeof why);
    if (kind == 2)
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME,
                             "--device %s: no usable CUDA device (%s)", spec,
                             why);
    xent_cli_note("no usable CUDA device (%s); using the CPU", why);
    return open_cpu(threads, dev);
}

void xent_cli_device_close(xent_cli_device *dev)
{
    if (!dev)
        return;
    xent_destroy(dev->handle);
    dev->handle = NULL;
}

/* ------------------------------------------------------------------------ */
/* Inputs                                                                   */
/* ------------------------------------------------------------------------ */

#define XENT_CLI_MASK_FLOAT_NPY                                                \
    (XENT_NPY_MASK(XENT_NPY_DTYPE_F16) | XENT_NPY_MASK(XENT_NPY_DTYPE_F32) |   \
     XENT_NPY_MASK(XENT_NPY_DTYPE_F64))

static int open_checked(xent_npy *a, const char *path, unsigned flags, int ndim,
                        unsigned mask)
{
    char err[512];
    if (xent_npy_open(a, path, flags, err, sizeof err) != 0) {
        /* 2-byte data that is not float16: point at the flag */
        int hint = !(flags & XENT_NPY_READ_BF16) &&
                   (mask & XENT_NPY_MASK(XENT_NPY_DTYPE_F16)) &&
                   strstr(err, "bfloat16");
        return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s%s", err,
                             hint ? "; for logits: --bf16" : "");
    }
    if (xent_npy_expect(a, ndim, ndim, mask, err, sizeof err) != 0) {
        xent_npy_close(a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s", err);
    }
    return 0;
}

int xent_cli_open_logits(xent_npy *a, const char *path, int bf16,
                         int64_t *n_rows, int64_t *n_classes)
{
    unsigned mask = XENT_CLI_MASK_FLOAT_NPY;
    if (bf16)
        mask |= XENT_NPY_MASK(XENT_NPY_DTYPE_BF16);
    int rc = open_checked(a, path, bf16 ? XENT_NPY_READ_BF16 : 0u, 2, mask);
    if (rc)
        return rc;
    if (a->header.shape[1] < 1) {
        char s[96];
        xent_npy_format_shape(2, a->header.shape, s, sizeof s);
        xent_npy_close(a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: logits need at least one class, got shape "
                             "%s",
                             path, s);
    }
    *n_rows = a->header.shape[0];
    *n_classes = a->header.shape[1];
    return 0;
}

int xent_cli_open_targets(xent_npy *a, const char *path, int64_t n_rows,
                          const char *logits)
{
    int rc = open_checked(a, path, 0, 1,
                          XENT_NPY_MASK(XENT_NPY_DTYPE_I32) |
                              XENT_NPY_MASK(XENT_NPY_DTYPE_I64));
    if (rc)
        return rc;
    if (a->header.shape[0] != n_rows) {
        long long got = (long long)a->header.shape[0];
        xent_npy_close(a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: %lld targets for the %lld rows of %s", path,
                             got, (long long)n_rows, logits);
    }
    return 0;
}

int xent_cli_open_matrix(xent_npy *a, const char *path, int64_t n_rows,
                         int64_t n_classes, const char *what,
                         const char *logits)
{
    int rc = open_checked(a, path, 0, 2, XENT_CLI_MASK_FLOAT_NPY);
    if (rc)
        return rc;
    if (a->header.shape[0] != n_rows || a->header.shape[1] != n_classes) {
        char s[96], z[96];
        int64_t zs[2] = {n_rows, n_classes};
        xent_npy_format_shape(2, a->header.shape, s, sizeof s);
        xent_npy_format_shape(2, zs, z, sizeof z);
        xent_npy_close(a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: %s of shape %s for logits of shape %s in %s",
                             path, what, s, z, logits);
    }
    return 0;
}

int xent_cli_open_probs(xent_npy *a, const char *path, int64_t n_rows,
                        int64_t n_classes, const char *logits)
{
    return xent_cli_open_matrix(a, path, n_rows, n_classes,
                                "target probabilities", logits);
}

int xent_cli_load_weights(const char *path, int64_t n_classes,
                          const char *logits, float **weights)
{
    *weights = NULL;
    xent_npy a;
    int rc = open_checked(&a, path, 0, 1, XENT_CLI_MASK_FLOAT_NPY);
    if (rc)
        return rc;
    if (a.header.shape[0] != n_classes) {
        long long got = (long long)a.header.shape[0];
        xent_npy_close(&a);
        return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                             "%s: %lld class weights for the %lld classes of "
                             "%s",
                             path, got, (long long)n_classes, logits);
    }
    float *w = malloc((size_t)(n_classes > 0 ? n_classes : 1) * sizeof *w);
    if (!w) {
        xent_npy_close(&a);
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "out of memory");
    }
    xent_npy_to_f32(a.header.dtype, a.data, w, (size_t)n_classes);
    xent_npy_close(&a);
    for (int64_t j = 0; j < n_classes; j++) {
        if (isnan(w[j]) || w[j] < 0.0f) {
            double v = w[j];
            free(w);
            if (isnan(v))
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s: class weight %lld is NaN (weights "
                                     "must be >= 0)",
                                     path, (long long)j);
            return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                 "%s: negative class weight %g for class "
                                 "%lld (weights must be >= 0)",
                                 path, v, (long long)j);
        }
    }
    *weights = w;
    return 0;
}

int xent_cli_scan_targets(const xent_npy *t, int64_t n_classes,
                          int64_t ignore_index, const float *weights,
                          double *denom, int64_t *n_ignored)
{
    enum { BLOCK = 1 << 14 };
    int64_t buf[BLOCK];
    int64_t n = t->header.count;
    size_t isz = t->header.itemsize;
    double sum = 0.0;
    int64_t ign = 0;
    for (int64_t r0 = 0; r0 < n; r0 += BLOCK) {
        int64_t m = n - r0 < BLOCK ? n - r0 : BLOCK;
        xent_npy_to_i64(t->header.dtype, (const char *)t->data + r0 * isz, buf,
                        (size_t)m);
        for (int64_t k = 0; k < m; k++) {
            int64_t y = buf[k];
            if (y == ignore_index) {
                ign++;
                continue;
            }
            if (y < 0 || y >= n_classes)
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s: row %lld: class index %lld is out "
                                     "of range [0, %lld) (ignore index %lld)",
                                     t->path, (long long)(r0 + k), (long long)y,
                                     (long long)n_classes,
                                     (long long)ignore_index);
            sum += weights ? (double)weights[y] : 1.0;
        }
    }
    *denom = sum;
    *n_ignored = ign;
    return 0;
}

xent_dtype xent_cli_logits_dtype(xent_npy_dtype d, int *convert)
{
    *convert = 0;
    switch (d) {
    case XENT_NPY_DTYPE_F16: return XENT_DTYPE_F16;
    case XENT_NPY_DTYPE_BF16: return XENT_DTYPE_BF16;
    case XENT_NPY_DTYPE_F32: return XENT_DTYPE_F32;
    default: *convert = 1; return XENT_DTYPE_F32;
    }
}

size_t xent_cli_dtype_size(xent_dtype d)
{
    return d == XENT_DTYPE_F32 ? 4u : 2u;
}

const char *xent_cli_dtype_name(xent_dtype d)
{
    switch (d) {
    case XENT_DTYPE_F32: return "f32";
    case XENT_DTYPE_F16: return "f16";
    case XENT_DTYPE_BF16: return "bf16";
    }
    return "unknown";
}

typedef struct convert_part {
    xent_npy_dtype dtype;
    const char *src;
    float *dst;
    size_t count;
} convert_part;

static void *convert_thread(void *arg)
{
    convert_part *p = arg;
    xent_npy_to_f32(p->dtype, p->src, p->dst, p->count);
    return NULL;
}

/* xent_npy_to_f32 over `threads` threads (pieces of >= 1M elements). */
static void parallel_to_f32(xent_npy_dtype dtype, const void *src, float *dst,
                            size_t count, int threads)
{
    enum { MAXT = 64 };
    size_t isz = xent_npy_itemsize(dtype);
    size_t t = threads < 1 ? 1 : (size_t)threads;
    if (t > MAXT)
        t = MAXT;
    if (t > count / ((size_t)1 << 20))
        t = count / ((size_t)1 << 20);
    if (t <= 1) {
        xent_npy_to_f32(dtype, src, dst, count);
        return;
    }
    convert_part parts[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT] = {0};
    for (size_t k = 0; k < t; k++) {
        size_t lo = count * k / t, hi = count * (k + 1) / t;
        parts[k].dtype = dtype;
        parts[k].src = (const char *)src + lo * isz;
        parts[k].dst = dst + lo;
        parts[k].count = hi - lo;
    }
    for (size_t k = 1; k < t; k++)
        started[k] =
            pthread_create(&tid[k], NULL, convert_thread, &parts[k]) == 0;
    convert_thread(&parts[0]);
    for (size_t k = 1; k < t; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            convert_thread(&parts[k]);
    }
}

void xent_cli_copy_rows(const xent_npy *a, int64_t row0, int64_t rows,
                        int64_t n_cols, xent_npy_dtype want, void *dst,
                        int threads)
{
    size_t isz = a->header.itemsize;
    size_t count = (size_t)rows * (size_t)n_cols;
    const char *src = (const char *)a->data + (size_t)row0 * n_cols * isz;
    if (want == XENT_NPY_DTYPE_F32 && a->header.dtype != XENT_NPY_DTYPE_F32)
        parallel_to_f32(a->header.dtype, src, dst, count, threads);
    else
        xent_bench_parallel_memcpy(dst, src, count * isz, threads);
}

/* ------------------------------------------------------------------------ */
/* Outputs                                                                  */
/* ------------------------------------------------------------------------ */

/* Writers whose temporary files a fatal signal must remove. */
#define XENT_CLI_MAX_LIVE 16
static xent_npy_writer *volatile g_live[XENT_CLI_MAX_LIVE];
static int g_handlers;

static void on_fatal_signal(int sig)
{
    for (int i = 0; i < XENT_CLI_MAX_LIVE; i++) {
        xent_npy_writer *w = g_live[i];
        if (w && w->active && w->tmp_path)
            unlink(w->tmp_path);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void block_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void install_handlers(void)
{
    if (g_handlers)
        return;
    g_handlers = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        struct sigaction old;
        /* leave an ignored signal ignored (nohup) */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

static void live_remove(xent_npy_writer *w)
{
    for (int i = 0; i < XENT_CLI_MAX_LIVE; i++)
        if (g_live[i] == w)
            g_live[i] = NULL;
}

int xent_cli_output_open(xent_cli_output *o, const char *flag, const char *path,
                         xent_npy_dtype dtype, int ndim, const int64_t *shape)
{
    memset(o, 0, sizeof *o);
    o->w.fd = -1;
    o->flag = flag;
    install_handlers();
    sigset_t old;
    block_signals(&old);
    char err[512];
    int rc =
        xent_npy_writer_open(&o->w, path, dtype, ndim, shape, err, sizeof err);
    if (rc == 0) {
        for (int i = 0; i < XENT_CLI_MAX_LIVE; i++) {
            if (!g_live[i]) {
                g_live[i] = &o->w;
                break;
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return xent_cli_fail(XENT_CLI_EXIT_USAGE, "%s: %s", flag, err);
    return 0;
}

int xent_cli_output_active(const xent_cli_output *o)
{
    return o && o->w.active;
}

int xent_cli_output_write(xent_cli_output *o, const void *data, size_t bytes)
{
    if (!xent_cli_output_active(o))
        return 0;
    char err[512];
    if (xent_npy_writer_write(&o->w, data, bytes, err, sizeof err) != 0) {
        live_remove(&o->w);
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "%s: %s", o->flag, err);
    }
    return 0;
}

int xent_cli_output_commit(xent_cli_output *o)
{
    if (!xent_cli_output_active(o))
        return 0;
    sigset_t old;
    block_signals(&old);
    live_remove(&o->w);
    char err[512];
    int rc = xent_npy_writer_commit(&o->w, err, sizeof err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return xent_cli_fail(XENT_CLI_EXIT_RUNTIME, "%s: %s", o->flag, err);
    return 0;
}

void xent_cli_output_abort(xent_cli_output *o)
{
    if (!o)
        return;
    sigset_t old;
    block_signals(&old);
    live_remove(&o->w);
    xent_npy_writer_abort(&o->w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int xent_cli_distinct_outputs(const char *const *paths,
                              const char *const *flags, int n)
{
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            if (paths[i] && paths[k] && !strcmp(paths[i], paths[k]))
                return xent_cli_fail(XENT_CLI_EXIT_USAGE,
                                     "%s and %s name the same file %s",
                                     flags[i], flags[k], paths[i]);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */
/* ------------------------------------------------------------------------ */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;
         p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_member(xent_json *j, const char *key)
{
    if (j->count[j->depth]++ > 0)
        fputc(',', j->f);
    if (!j->is_array[j->depth]) {
        json_string(j->f, key);
        fputc(':', j->f);
    }
}

void xent_json_start(xent_json *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
    fputc('{', f);
}

static void json_push(xent_json *j, int array)
{
    if (j->depth + 1 >= XENT_JSON_MAX_DEPTH)
        return;
    j->depth++;
    j->count[j->depth] = 0;
    j->is_array[j->depth] = array;
}

void xent_json_object(xent_json *j, const char *key)
{
    json_member(j, key);
    fputc('{', j->f);
    json_push(j, 0);
}

void xent_json_array(xent_json *j, const char *key)
{
    json_member(j, key);
    fputc('[', j->f);
    json_push(j, 1);
}

void xent_json_close(xent_json *j)
{
    if (j->depth == 0)
        return;
    fputc(j->is_array[j->depth] ? ']' : '}', j->f);
    j->depth--;
}

void xent_json_finish(xent_json *j)
{
    while (j->depth > 0)
        xent_json_close(j);
    fputs("}\n", j->f);
    fflush(j->f);
}

void xent_json_str(xent_json *j, const char *key, const char *s)
{
    json_member(j, key);
    json_string(j->f, s);
}

void xent_json_num(xent_json *j, const char *key, double v)
{
    json_member(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.17g", v);
    else
        fputs("null", j->f);
}

void xent_json_f32(xent_json *j, const char *key, double v)
{
    json_member(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void xent_json_fix(xent_json *j, const char *key, double v, int decimals)
{
    json_member(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.*f", decimals, v);
    else
        fputs("null", j->f);
}

void xent_json_int(xent_json *j, const char *key, int64_t v)
{
    json_member(j, key);
    fprintf(j->f, "%lld", (long long)v);
}

void xent_json_bool(xent_json *j, const char *key, int v)
{
    json_member(j, key);
    fputs(v ? "true" : "false", j->f);
}

void xent_json_null(xent_json *j, const char *key)
{
    json_member(j, key);
    fputs("null", j->f);
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                 */
/* ------------------------------------------------------------------------ */

double xent_cli_now(void)
{
    return xent_bench_now();
}

void xent_cli_progress_start(xent_cli_progress *p, int force, int64_t total,
                             const char *unit)
{
    memset(p, 0, sizeof *p);
    p->on = force || isatty(STDERR_FILENO);
    p->total = total;
    p->t0 = p->last = xent_cli_now();
    p->unit = unit ? unit : "rows";
    if (p->on)
        g_progress = p;
}

void xent_cli_progress_update(xent_cli_progress *p, int64_t done)
{
    if (!p->on)
        return;
    double now = xent_cli_now();
    if (now - p->last < 0.1 && done < p->total)
        return;
    p->last = now;
    double el = now - p->t0;
    double rate = el > 0 ? (double)done / el : 0.0;
    double pct = p->total > 0 ? 100.0 * (double)done / (double)p->total : 100.0;
    char eta[32] = "";
    if (rate > 0 && done < p->total)
        snprintf(eta, sizeof eta, ", %.0f s left",
                 (double)(p->total - done) / rate);
    char line[256];
    int w = snprintf(
        line, sizeof line, "xent: %lld / %lld %s (%.1f%%), %.0f %s/s%s",
        (long long)done, (long long)p->total, p->unit, pct, rate, p->unit, eta);
    if (w < 0)
        return;
    if (w >= (int)sizeof line)
        w = (int)sizeof line - 1;
    int pad = p->width > w ? p->width - w : 0;
    fprintf(stderr, "\r%s%*s", line, pad, "");
    fflush(stderr);
    p->width = w;
}

void xent_cli_progress_end(xent_cli_progress *p)
{
    if (!p || !p->on)
        return;
    if (p->width > 0) {
        fprintf(stderr, "\r%*s\r", p->width, "");
        fflush(stderr);
    }
    p->on = 0;
    p->width = 0;
    if (g_progress == p)
        g_progress = NULL;
}

const char *xent_cli_bytes_text(double bytes, char *buf, size_t len)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}
