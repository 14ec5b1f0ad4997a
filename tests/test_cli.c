/*
 * test_cli.c - the `xent` command-line tool end to end, on the CPU.
 *
 * Each test writes its inputs as .npy files (host/npy.h) into a private
 * temporary directory, runs the real binary (XENT_CLI_PATH, posix_spawn,
 * stdout and stderr captured in files of a second directory), and reads
 * the outputs back:
 *
 *  - cli/golden: every case of tests/golden/ce.txt (PyTorch, float64)
 *    through the CLI: per-row losses, lse, gradient and the --json loss at
 *    the fp32 tolerance |d| <= 1e-5 (|ref| + max|ref|); the inputs vary
 *    between float32/float64 logits, int64/int32 targets, float32/float64
 *    probabilities and weights, and some cases stream in chunks of 3 rows;
 *  - malformed inputs and bad options: exit status 2, exactly one line on
 *    stderr naming the problem, nothing on stdout, no output file created
 *    (and an existing one left as it was);
 *  - streaming: chunks of 7, 1, N and more rows (flag and environment)
 *    give bitwise the same outputs and JSON loss as one chunk, which are
 *    bitwise the library's one-shot results;
 *  - float16 / bfloat16 logits (--bf16), NaN propagation, auto device
 *    selection, `xent bench --json`, --version and --help;
 *  - on a machine with a GPU (skipped otherwise; XENT_REQUIRE_GPU=1 makes
 *    that a failure): the streamed GPU path against the CPU, and bitwise
 *    independence of the chunk size; `xent bench` validation on the GPU.
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"
#include "golden.h"
#include "internal.h" /* host-side f16/bf16 rounding */
#include "npy.h"
#include "testutil.h"
#include "xent.h"

/* ------------------------------------------------------------------------ */
/* Fixture: a data directory and an I/O directory per test (cli_util.c)     */
/* ------------------------------------------------------------------------ */

static void setup(void) { cli_fixture_setup("xent_cli"); }

static void teardown(void) { cli_fixture_teardown(); }

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------------------ */
/* A minimal JSON reader (enough for the tool's one-line objects)           */
/* ------------------------------------------------------------------------ */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype t;
    double num;
    int b;
    char *str;      /* J_STR */
    char raw[64];   /* J_NUM: the token as written */
    struct jval *v; /* J_ARR, J_OBJ: members */
    char **keys;    /* J_OBJ */
    int n;
} jval;

static const char *jws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *jparse(const char *p, jval *out, int depth);

static const char *jstring(const char *p, char **out)
{
    if (*p != '"')
        return NULL;
    p++;
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    while (*p && *p != '"') {
        char ch = *p++;
        if ((unsigned char)ch < 0x20) {
            free(s);
            return NULL;
        }
        if (ch == '\\') {
            char e = *p++;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u':
                for (int k = 0; k < 4; k++)
                    if (!isxdigit((unsigned char)p[k])) {
                        free(s);
                        return NULL;
                    }
                ch = '?';
                p += 4;
                break;
            default: free(s); return NULL;
            }
        }
        if (n + 2 > cap)
            s = realloc(s, cap *= 2);
        s[n++] = ch;
    }
    if (*p != '"') {
        free(s);
        return NULL;
    }
    s[n] = '\0';
    *out = s;
    return p + 1;
}

static const char *jparse(const char *p, jval *out, int depth)
{
    memset(out, 0, sizeof *out);
    if (depth > 32)
        return NULL;
    p = jws(p);
    if (*p == '{' || *p == '[') {
        int obj = *p == '{';
        out->t = obj ? J_OBJ : J_ARR;
        p = jws(p + 1);
        if (*p == (obj ? '}' : ']'))
            return p + 1;
        for (;;) {
            out->v = realloc(out->v, (size_t)(out->n + 1) * sizeof *out->v);
            if (obj) {
                out->keys =
                    realloc(out->keys, (size_t)(out->n + 1) * sizeof(char *));
                p = jstring(jws(p), &out->keys[out->n]);
                if (!p)
                    return NULL;
                p = jws(p);
                if (*p++ != ':')
                    return NULL;
            }
            p = jparse(p, &out->v[out->n], depth + 1);
            if (!p)
                return NULL;
            out->n++;
            p = jws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == (obj ? '}' : ']'))
                return p + 1;
            return NULL;
        }
    }
    if (*p == '"') {
        out->t = J_STR;
        return jstring(p, &out->str);
    }
    if (!strncmp(p, "null", 4)) {
        out->t = J_NULL;
        return p + 4;
    }
    if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
        out->t = J_BOOL;
        out->b = p[0] == 't';
        return p + (out->b ? 4 : 5);
    }
    /* number: -?digits[.digits][e[+-]digits] */
    const char *q = p;
    if (*q == '-')
        q++;
    if (!isdigit((unsigned char)*q))
        return NULL;
    while (isdigit((unsigned char)*q))
        q++;
    if (*q == '.') {
        q++;
        if (!isdigit((unsigned char)*q))
            return NULL;
        while (isdigit((unsigned char)*q))
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!isdigit((unsigned char)*q))
            return NULL;
        while (isdigit((unsigned char)*q))
            q++;
    }
    out->t = J_NUM;
    size_t len = (size_t)(q - p);
    if (len >= sizeof out->raw)
        len = sizeof out->raw - 1;
    memcpy(out->raw, p, len);
    out->raw[len] = '\0';
    out->num = strtod(out->raw, NULL);
    return q;
}

/* Parses the last non-empty line of text as one JSON object. */
static jval last_json(const char *text)
{
    const char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == '\r'))
        end--;
    const char *start = end;
    while (start > text && start[-1] != '\n')
        start--;
    char *line = strndup(start, (size_t)(end - start));
    jval v;
    const char *rest = jparse(line, &v, 0);
    cr_assert_not_null(rest, "not JSON: %s", line);
    cr_assert_eq(*jws(rest), '\0', "trailing text after JSON: %s", line);
    cr_assert_eq(v.t, J_OBJ, "not a JSON object: %s", line);
    free(line);
    return v;
}

static const jval *jget(const jval *o, const char *key)
{
    for (int i = 0; o->t == J_OBJ && i < o->n; i++)
        if (!strcmp(o->keys[i], key))
            return &o->v[i];
    return NULL;
}

static double jnum(const jval *o, const char *key)
{
    const jval *v = jget(o, key);
    cr_assert(v && v->t == J_NUM, "JSON key \"%s\" is not a number", key);
    return v->num;
}

static const char *jstr(const jval *o, const char *key)
{
    const jval *v = jget(o, key);
    cr_assert(v && v->t == J_STR, "JSON key \"%s\" is not a string", key);
    return v->str;
}

/* ------------------------------------------------------------------------ */
/* .npy helpers                                                             */
/* ------------------------------------------------------------------------ */

static void save(const char *name, xent_npy_dtype dt, int ndim,
                 const int64_t *shape, const void *data)
{
    char err[512];
    cr_assert_eq(
        xent_npy_write(P(name), dt, ndim, shape, data, err, sizeof err), 0,
        "%s", err);
}

static void save2(const char *name, xent_npy_dtype dt, int64_t n, int64_t c,
                  const void *data)
{
    int64_t shape[2] = {n, c};
    save(name, dt, 2, shape, data);
}

static void save1(const char *name, xent_npy_dtype dt, int64_t n,
                  const void *data)
{
    int64_t shape[1] = {n};
    save(name, dt, 1, shape, data);
}

/* Reads a float32 output of the given shape (count returned). */
static float *load_f32(const char *name, int ndim, const int64_t *shape)
{
    xent_npy a;
    char err[512];
    cr_assert_eq(xent_npy_open(&a, P(name), 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(a.header.dtype, XENT_NPY_DTYPE_F32, "%s: not float32", name);
    cr_assert_eq(a.header.ndim, ndim, "%s: %d dimensions", name, a.header.ndim);
    for (int d = 0; d < ndim; d++)
        cr_assert_eq(a.header.shape[d], shape[d], "%s: dimension %d is %lld",
                     name, d, (long long)a.header.shape[d]);
    size_t n = (size_t)a.header.count;
    float *v = malloc((n ? n : 1) * sizeof *v);
    xent_npy_to_f32(XENT_NPY_DTYPE_F32, a.data, v, n);
    xent_npy_close(&a);
    return v;
}

/* Every entry of g_dir is one of allowed[] (NULL-terminated). */
static void assert_only(const char *const *allowed)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= !strcmp(e->d_name, allowed[i]);
        cr_assert(ok, "unexpected file left behind: %s", e->d_name);
    }
    closedir(d);
}

/* None of the outputs l.npy, g.npy, s.npy exists, and no temporary file
 * ("<name>.tmp.XXXXXX") is left in g_dir. */
static void assert_no_outputs(void)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        cr_assert(strcmp(e->d_name, "l.npy") && strcmp(e->d_name, "g.npy") &&
                      strcmp(e->d_name, "s.npy"),
                  "output written despite the error: %s", e->d_name);
        cr_assert_null(strstr(e->d_name, ".tmp."),
                       "temporary file left behind: %s", e->d_name);
    }
    closedir(d);
}

/* |got - ref| <= 1e-5 (|ref| + max|ref|) over n values. */
static void assert_close(const char *what, const char *cname, const double *ref,
                         const float *got, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(ref[i]))
            m = fmax(m, fabs(ref[i]));
    tu_close r = tu_compare_f32(ref, got, n, 1e-5 * m, 1e-5);
    cr_assert(r.ok, "%s: %s: %lld bad, worst [%lld] got %.9g ref %.9g err %.3g",
              cname, what, (long long)r.n_bad, (long long)r.worst, r.worst_got,
              r.worst_ref, r.worst_err);
}

static double *as_f64(const float *x, int64_t n)
{
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* ------------------------------------------------------------------------ */
/* Parity with PyTorch: every golden case through the CLI                   */
/* ------------------------------------------------------------------------ */

Test(cli, golden_file_loads)
{
    char err[256];
    golden_file *f = golden_load_op("ce", err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_geq(golden_count(f), 50);
    golden_free(f);
}

ParameterizedTestParameters(cli, golden)
{
    static int idx[512];
    golden_file *f = golden_load_op("ce", NULL, 0);
    int n = f ? (int)golden_count(f) : 0;
    if (n > 512)
        n = 512;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    golden_free(f);
    return cr_make_param_array(int, idx, (size_t)n);
}

ParameterizedTest(int *pi, cli, golden)
{
    char err[256], num[6][64];
    golden_file *f = golden_load_op("ce", err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    const int k = *pi;
    const golden_case *gc = golden_at(f, k);
    cr_assert_not_null(gc);
    const char *cname = golden_name(gc);
    const int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
    cr_assert(n >= 0 && c >= 1, "%s: bad shape", cname);
    const int index = golden_str_is(gc, "target", "index");
    const char *red = golden_str(gc, "reduction");
    const size_t nc = (size_t)(n * c > 0 ? n * c : 1);

    /* inputs, in varying dtypes (the golden values are float32-exact) */
    double *z64 = malloc(nc * sizeof *z64);
    float *z32 = malloc(nc * sizeof *z32);
    cr_assert_eq(golden_copy_f64(gc, "logits", z64, n * c), n * c);
    cr_assert_eq(golden_copy_f32(gc, "logits", z32, n * c), n * c);
    if (k % 3 == 1)
        save2("z.npy", XENT_NPY_DTYPE_F64, n, c, z64);
    else
        save2("z.npy", XENT_NPY_DTYPE_F32, n, c, z32);
    if (index) {
        int64_t *t64 = malloc((size_t)(n ? n : 1) * 8);
        int32_t *t32 = malloc((size_t)(n ? n : 1) * 4);
        cr_assert_eq(golden_copy_i64(gc, "targets", t64, n), n);
        cr_assert_eq(golden_copy_i32(gc, "targets", t32, n), n);
        if (k % 2 == 0)
            save1("t.npy", XENT_NPY_DTYPE_I64, n, t64);
        else
            save1("t.npy", XENT_NPY_DTYPE_I32, n, t32);
    } else {
        double *q64 = malloc(nc * sizeof *q64);
        float *q32 = malloc(nc * sizeof *q32);
        cr_assert_eq(golden_copy_f64(gc, "targets", q64, n * c), n * c);
        cr_assert_eq(golden_copy_f32(gc, "targets", q32, n * c), n * c);
        if (k % 2 == 0)
            save2("t.npy", XENT_NPY_DTYPE_F32, n, c, q32);
        else
            save2("t.npy", XENT_NPY_DTYPE_F64, n, c, q64);
    }
    int weighted = golden_has(gc, "weights");
    if (weighted) {
        double *w64 = malloc((size_t)c * sizeof *w64);
        float *w32 = malloc((size_t)c * sizeof *w32);
        cr_assert_eq(golden_copy_f64(gc, "weights", w64, c), c);
        cr_assert_eq(golden_copy_f32(gc, "weights", w32, c), c);
        if (k % 2 == 0)
            save1("w.npy", XENT_NPY_DTYPE_F32, c, w32);
        else
            save1("w.npy", XENT_NPY_DTYPE_F64, c, w64);
    }

    const char *args[64];
    int a = 0;
    args[a++] = "loss";
    args[a++] = "--device";
    args[a++] = "cpu";
    args[a++] = "--logits";
    args[a++] = P("z.npy");
    args[a++] = index ? "--targets" : "--target-probs";
    args[a++] = P("t.npy");
    if (weighted) {
        args[a++] = "--weights";
        args[a++] = P("w.npy");
    }
    args[a++] = "--reduction";
    args[a++] = red;
    if (index) {
        snprintf(num[0], 64, "%lld",
                 (long long)golden_int(gc, "ignore_index", -100));
        args[a++] = "--ignore-index";
        args[a++] = num[0];
    }
    const char *keys[] = {"label_smoothing", "z_loss", "softcap"};
    const char *flags[] = {"--label-smoothing", "--z-loss", "--softcap"};
    for (int i = 0; i < 3; i++) {
        double v = golden_scalar(gc, keys[i], 0.0);
        if (v != 0.0) {
            snprintf(num[1 + i], 64, "%.17g", v);
            args[a++] = flags[i];
            args[a++] = num[1 + i];
        }
    }
    if (k % 4 == 3) {
        args[a++] = "--chunk-rows";
        args[a++] = "3";
    }
    args[a++] = "--loss-out";
    args[a++] = P("rows.npy");
    args[a++] = "--lse-out";
    args[a++] = P("lse.npy");
    args[a++] = "--grad-out";
    args[a++] = P("grad.npy");
    args[a++] = "--json";
    args[a] = NULL;
    cli_run r = run_env(NULL, args);
    cr_assert_eq(r.rc, 0, "%s: exit %d: %s", cname, r.rc, r.err);
    cr_assert_str_empty(r.err, "%s: stderr: %s", cname, r.err);

    int64_t sn[1] = {n}, snc[2] = {n, c};
    float *rows = load_f32("rows.npy", 1, sn);
    float *lse = load_f32("lse.npy", 1, sn);
    float *grad = load_f32("grad.npy", 2, snc);
    assert_close("loss_rows", cname, golden_array(gc, "loss_rows", NULL), rows,
                 n);
    assert_close("lse", cname, golden_array(gc, "lse", NULL), lse, n);
    assert_close("grad", cname, golden_array(gc, "grad", NULL), grad, n * c);

    jval j = last_json(r.out);
    cr_assert_eq(jnum(&j, "rows"), (double)n);
    cr_assert_eq(jnum(&j, "classes"), (double)c);
    cr_assert_str_eq(jstr(&j, "device"), "cpu");
    cr_assert_str_eq(jstr(&j, "reduction"), red);
    cr_assert_geq(jnum(&j, "seconds"), 0.0);
    double ref = golden_scalar(gc, "loss", NAN);
    double rmax = 0.0;
    const double *lr = golden_array(gc, "loss_rows", NULL);
    for (int64_t i = 0; i < n; i++)
        rmax = fmax(rmax, fabs(lr[i]));
    if (!strcmp(red, "none")) {
        const jval *l = jget(&j, "loss");
        cr_assert(l && l->t == J_NULL, "%s: loss should be null", cname);
        double got = jnum(&j, "loss_sum");
        cr_assert(fabs(got - ref) <= 1e-5 * (fabs(ref) + rmax),
                  "%s: loss_sum %.9g ref %.9g", cname, got, ref);
    } else if (!strcmp(red, "mean") &&
               golden_scalar(gc, "mean_denom", 1.0) == 0.0) {
        /* torch: NaN; the library and the CLI: 0 and a zero gradient */
        cr_assert_eq(jnum(&j, "loss"), 0.0, "%s: all-ignored mean", cname);
        for (int64_t i = 0; i < n * c; i++)
            cr_assert_eq(grad[i], 0.0f, "%s: gradient [%lld]", cname,
                         (long long)i);
    } else {
        double got = jnum(&j, "loss");
        cr_assert(fabs(got - ref) <= 1e-5 * (fabs(ref) + fabs(ref)) + 1e-30,
                  "%s: loss %.9g ref %.9g", cname, got, ref);
    }
    golden_free(f);
}

/* ------------------------------------------------------------------------ */
/* Malformed inputs and bad options                                         */
/* ------------------------------------------------------------------------ */

enum { BN = 8, BC = 10 };

/* z.npy (8, 10) f32, t.npy (8,) i64, w.npy (10,) f32, q.npy (8, 10). */
static void write_base(void)
{
    tu_rng rng;
    tu_rng_seed(&rng, 7);
    float z[BN * BC], w[BC], q[BN * BC];
    int64_t t[BN];
    tu_fill_logits(&rng, BN, BC, BC, z, 0.0f);
    tu_fill_targets_i64(&rng, BN, BC, t);
    tu_fill_uniform_f32(&rng, BC, 0.5f, 2.0f, w);
    tu_fill_probs(&rng, BN, BC, BC, q, 0.0f);
    save2("z.npy", XENT_NPY_DTYPE_F32, BN, BC, z);
    save1("t.npy", XENT_NPY_DTYPE_I64, BN, t);
    save1("w.npy", XENT_NPY_DTYPE_F32, BC, w);
    save2("q.npy", XENT_NPY_DTYPE_F32, BN, BC, q);
}

static const char *const k_base_files[] = {"z.npy", "t.npy", "w.npy", "q.npy",
                                           NULL};

/* The run failed with status 2, one line on stderr containing each of
 * need[] (NULL-terminated), nothing on stdout. */
static void assert_usage_error(cli_run r, const char *const *need)
{
    cr_assert_eq(r.rc, 2, "exit %d (want 2); stderr: %s", r.rc, r.err);
    cr_assert_eq(count_lines(r.err), 1, "want one line on stderr, got: %s",
                 r.err);
    cr_assert(!strncmp(r.err, "xent: ", 6), "stderr: %s", r.err);
    cr_assert_str_empty(r.out, "stdout: %s", r.out);
    for (int i = 0; need && need[i]; i++)
        cr_assert_not_null(strstr(r.err, need[i]), "'%s' not in: %s", need[i],
                           r.err);
}

/* Runs `xent loss <args> --device cpu` with all three outputs requested
 * (l.npy, g.npy, s.npy) and checks the usage error and that no output
 * (nor a temporary file) exists. */
static void expect_bad(const char *const *args, const char *const *need)
{
    const char *argv[64];
    int a = 0;
    argv[a++] = "loss";
    for (int i = 0; args[i]; i++)
        argv[a++] = args[i];
    const char *tail[] = {"--device",  "cpu",        "--loss-out",
                          P("l.npy"),  "--grad-out", P("g.npy"),
                          "--lse-out", P("s.npy"),   "--json"};
    for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++)
        argv[a++] = tail[i];
    argv[a] = NULL;
    assert_usage_error(run_env(NULL, argv), need);
    assert_no_outputs();
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NEED(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(cli, bad_flag_and_values)
{
    write_base();
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"), "--bogus"),
               NEED("unknown option", "--bogus"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--reduction", "avg"),
               NEED("--reduction", "avg"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--label-smoothing", "2"),
               NEED("--label-smoothing", "'2'"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--label-smoothing", "nan"),
               NEED("--label-smoothing"));
    expect_bad(
        ARGS("--logits", P("z.npy"), "--targets", P("t.npy"), "--z-loss", "-1"),
        NEED("--z-loss"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--softcap", "inf"),
               NEED("--softcap"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--ignore-index", "x1"),
               NEED("--ignore-index"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--chunk-rows", "0"),
               NEED("--chunk-rows"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--threads", "-3"),
               NEED("--threads"));
    expect_bad(
        ARGS("--logits", P("z.npy"), "--targets", P("t.npy"), "--json=1"),
        NEED("--json", "no value"));
    expect_bad(ARGS("--targets", P("t.npy")), NEED("--logits"));
    expect_bad(ARGS("--logits", P("z.npy")), NEED("--targets"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--target-probs", P("q.npy")),
               NEED("exactly one"));
    expect_bad(ARGS("--logits", P("z.npy"), "--target-probs", P("q.npy"),
                    "--ignore-index", "3"),
               NEED("--ignore-index"));
    expect_bad(ARGS("positional", "--logits", P("z.npy")), NEED("positional"));
    expect_bad(ARGS("--targets", P("t.npy"), "--logits"),
               NEED("--logits", "needs a value"));
}

Test(cli, bad_device)
{
    write_base();
    /* expect_bad appends --device cpu, which would win: run by hand */
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("t.npy"), "--device", "gpu", "--loss-out",
                           P("l.npy")),
                       NEED("--device", "gpu"));
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("t.npy"), "--device", "cuda:x"),
                       NEED("--device"));
    assert_only(k_base_files);
}

Test(cli, chunk_rows_environment)
{
    write_base();
    assert_usage_error(CLI_ENV("XENT_CHUNK_ROWS=abc", "loss", "--logits",
                               P("z.npy"), "--targets", P("t.npy"), "--device",
                               "cpu", "--loss-out", P("l.npy")),
                       NEED("XENT_CHUNK_ROWS"));
    assert_only(k_base_files);
}

Test(cli, missing_file)
{
    write_base();
    expect_bad(ARGS("--logits", P("nope.npy"), "--targets", P("t.npy")),
               NEED("nope.npy"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("nope.npy")),
               NEED("nope.npy"));
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--weights", P("nope.npy")),
               NEED("nope.npy"));
}

/* A .npy image by hand: header dict text and raw data bytes. */
static void write_raw(const char *name, const char *dict, const void *data,
                      size_t nbytes)
{
    char header[256];
    size_t dl = strlen(dict);
    size_t total = 10 + dl + 1;
    size_t pad = (64 - total % 64) % 64;
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = (uint16_t)(dl + pad + 1);
    header[8] = (char)(hl & 0xff);
    header[9] = (char)(hl >> 8);
    memcpy(header + 10, dict, dl);
    memset(header + 10 + dl, ' ', pad);
    header[10 + dl + pad] = '\n';
    FILE *f = fopen(P(name), "wb");
    cr_assert_not_null(f);
    fwrite(header, 1, 10 + dl + pad + 1, f);
    if (nbytes)
        fwrite(data, 1, nbytes, f);
    fclose(f);
}

Test(cli, malformed_files)
{
    write_base();
    float zeros[BN * BC];
    memset(zeros, 0, sizeof zeros);
    write_raw("fortran.npy",
              "{'descr': '<f4', 'fortran_order': True, 'shape': (8, 10), }",
              zeros, sizeof zeros);
    expect_bad(ARGS("--logits", P("fortran.npy"), "--targets", P("t.npy")),
               NEED("fortran.npy", "Fortran"));
    write_raw("trunc.npy",
              "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 10), }",
              zeros, sizeof zeros - 12);
    expect_bad(ARGS("--logits", P("trunc.npy"), "--targets", P("t.npy")),
               NEED("trunc.npy", "truncated"));
    write_raw("garbage.npy", "{'descr': '<f4', 'fortran_order': False, }",
              zeros, 8);
    expect_bad(ARGS("--logits", P("garbage.npy"), "--targets", P("t.npy")),
               NEED("garbage.npy"));
    FILE *f = fopen(P("text.npy"), "w");
    fputs("not an npy file\n", f);
    fclose(f);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("text.npy")),
               NEED("text.npy"));
    /* wrong dtypes and ranks */
    float tf[BN] = {0};
    save1("tf.npy", XENT_NPY_DTYPE_F32, BN, tf);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("tf.npy")),
               NEED("tf.npy", "int32 or int64", "float32"));
    int32_t zi[BN * BC] = {0};
    save2("zi.npy", XENT_NPY_DTYPE_I32, BN, BC, zi);
    expect_bad(ARGS("--logits", P("zi.npy"), "--targets", P("t.npy")),
               NEED("zi.npy", "int32"));
    save1("z1.npy", XENT_NPY_DTYPE_F32, BC, zeros);
    expect_bad(ARGS("--logits", P("z1.npy"), "--targets", P("t.npy")),
               NEED("z1.npy", "2-D"));
    int64_t ti[BN] = {0};
    save1("wi.npy", XENT_NPY_DTYPE_I64, BN, ti);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--weights", P("wi.npy")),
               NEED("wi.npy"));
    uint16_t u2[BN * BC] = {0};
    write_raw("u2.npy",
              "{'descr': '<u2', 'fortran_order': False, 'shape': (8, 10), }",
              u2, sizeof u2);
    expect_bad(ARGS("--logits", P("u2.npy"), "--targets", P("t.npy")),
               NEED("u2.npy", "--bf16"));
}

Test(cli, mismatched_shapes)
{
    write_base();
    int64_t t7[7] = {0, 1, 2, 3, 4, 5, 6};
    save1("t7.npy", XENT_NPY_DTYPE_I64, 7, t7);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t7.npy")),
               NEED("t7.npy", "7 targets", "8 rows"));
    float q[BN * 9] = {0};
    save2("q9.npy", XENT_NPY_DTYPE_F32, BN, 9, q);
    expect_bad(ARGS("--logits", P("z.npy"), "--target-probs", P("q9.npy")),
               NEED("q9.npy", "(8, 9)", "(8, 10)"));
    float w9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    save1("w9.npy", XENT_NPY_DTYPE_F32, 9, w9);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--weights", P("w9.npy")),
               NEED("w9.npy", "9 class weights", "10 classes"));
}

Test(cli, out_of_range_target)
{
    write_base();
    int64_t t[BN] = {1, 2, 3, 4, 5, 10, 6, 7};
    save1("tbad.npy", XENT_NPY_DTYPE_I64, BN, t);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("tbad.npy")),
               NEED("tbad.npy", "row 5", "10"));
    int32_t t32[BN] = {1, 2, -100, 4, -3, 1, 6, 7};
    save1("tneg.npy", XENT_NPY_DTYPE_I32, BN, t32);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("tneg.npy")),
               NEED("tneg.npy", "row 4", "-3"));
    /* with a different ignore index, -100 is an ordinary bad class */
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("tneg.npy"),
                    "--ignore-index", "-3"),
               NEED("tneg.npy", "row 2", "-100"));
}

Test(cli, bad_weights)
{
    write_base();
    float w[BC] = {1, 1, 1, -0.5f, 1, 1, 1, 1, 1, 1};
    save1("wneg.npy", XENT_NPY_DTYPE_F32, BC, w);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--weights", P("wneg.npy")),
               NEED("wneg.npy", "negative", "class 3"));
    w[3] = NAN;
    save1("wnan.npy", XENT_NPY_DTYPE_F32, BC, w);
    expect_bad(ARGS("--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--weights", P("wnan.npy")),
               NEED("wnan.npy", "NaN"));
}

Test(cli, bad_outputs)
{
    write_base();
    /* the same file twice */
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("t.npy"), "--device", "cpu", "--loss-out",
                           P("x.npy"), "--lse-out", P("x.npy")),
                       NEED("--loss-out", "--lse-out"));
    /* a directory that does not exist */
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("t.npy"), "--device", "cpu", "--loss-out",
                           P("l.npy"), "--grad-out", P("nodir/g.npy")),
                       NEED("--grad-out", "nodir"));
    /* default device: the problem is found before the device is chosen,
     * so the auto device's note does not add a line */
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("t.npy"), "--lse-out", P("nodir/s.npy")),
                       NEED("--lse-out", "nodir"));
    assert_only(k_base_files);
}

Test(cli, existing_output_untouched_on_error)
{
    write_base();
    FILE *f = fopen(P("l.npy"), "w");
    fputs("old contents", f);
    fclose(f);
    int64_t t[BN] = {1, 2, 3, 4, 5, 6, 7, 99};
    save1("tbad.npy", XENT_NPY_DTYPE_I64, BN, t);
    assert_usage_error(CLI("loss", "--logits", P("z.npy"), "--targets",
                           P("tbad.npy"), "--device", "cpu", "--loss-out",
                           P("l.npy")),
                       NEED("row 7"));
    char *s = slurp(P("l.npy"), NULL);
    cr_assert_str_eq(s, "old contents");
    assert_only((const char *const[]){"z.npy", "t.npy", "w.npy", "q.npy",
                                      "tbad.npy", "l.npy", NULL});
}

/* ------------------------------------------------------------------------ */
/* Streaming: the chunk size changes nothing                                */
/* ------------------------------------------------------------------------ */

enum { SN = 50, SC = 37 };

typedef struct stream_data {
    float z[SN * SC], w[SC];
    int64_t t[SN];
} stream_data;

static void stream_inputs(stream_data *d)
{
    tu_rng rng;
    tu_rng_seed(&rng, 2024);
    tu_fill_logits(&rng, SN, SC, SC, d->z, 0.0f);
    tu_fill_targets_i64(&rng, SN, SC, d->t);
    tu_fill_uniform_f32(&rng, SC, 0.25f, 2.0f, d->w);
    const int ignored[] = {0, 7, 13, 14, 31, 49};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        d->t[ignored[i]] = -100;
    save2("z.npy", XENT_NPY_DTYPE_F32, SN, SC, d->z);
    double z64[SN * SC];
    for (int i = 0; i < SN * SC; i++)
        z64[i] = d->z[i];
    save2("z64.npy", XENT_NPY_DTYPE_F64, SN, SC, z64);
    save1("t.npy", XENT_NPY_DTYPE_I64, SN, d->t);
    save1("w.npy", XENT_NPY_DTYPE_F32, SC, d->w);
}

typedef struct stream_out {
    char *rows, *grad, *lse;
    size_t nrows, ngrad, nlse;
    char loss[64];
    int chunks;
} stream_out;

/* One run with outputs under prefix; chunk NULL: not given. */
static stream_out stream_run(const char *device, const char *logits,
                             const char *red, const char *chunk,
                             const char *env, const char *prefix)
{
    char rn[64], gn[64], sn[64];
    snprintf(rn, sizeof rn, "%s_rows.npy", prefix);
    snprintf(gn, sizeof gn, "%s_grad.npy", prefix);
    snprintf(sn, sizeof sn, "%s_lse.npy", prefix);
    const char *args[40];
    int a = 0;
    const char *base[] = {"loss",     "--logits",
                          P(logits),  "--targets",
                          P("t.npy"), "--weights",
                          P("w.npy"), "--reduction",
                          red,        "--label-smoothing",
                          "0.1",      "--z-loss",
                          "0.001",    "--device",
                          device,     "--loss-out",
                          P(rn),      "--grad-out",
                          P(gn),      "--lse-out",
                          P(sn),      "--json"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        args[a++] = base[i];
    if (chunk) {
        args[a++] = "--chunk-rows";
        args[a++] = chunk;
    }
    args[a] = NULL;
    cli_run r = run_env(env, args);
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    stream_out o;
    memset(&o, 0, sizeof o);
    o.rows = slurp(P(rn), &o.nrows);
    o.grad = slurp(P(gn), &o.ngrad);
    o.lse = slurp(P(sn), &o.nlse);
    cr_assert(o.rows && o.grad && o.lse, "outputs missing");
    jval j = last_json(r.out);
    const jval *l = jget(&j, "loss");
    cr_assert_not_null(l);
    snprintf(o.loss, sizeof o.loss, "%s", l->t == J_NUM ? l->raw : "null");
    o.chunks = (int)jnum(&j, "chunks");
    return o;
}

static void assert_same(const stream_out *a, const stream_out *b,
                        const char *what)
{
    cr_assert(a->nrows == b->nrows && !memcmp(a->rows, b->rows, a->nrows),
              "%s: --loss-out differs", what);
    cr_assert(a->ngrad == b->ngrad && !memcmp(a->grad, b->grad, a->ngrad),
              "%s: --grad-out differs", what);
    cr_assert(a->nlse == b->nlse && !memcmp(a->lse, b->lse, a->nlse),
              "%s: --lse-out differs", what);
    cr_assert_str_eq(a->loss, b->loss, "%s: JSON loss differs", what);
}

/* The library's one-shot results for the same problem. */
static void library_oneshot(const stream_data *d, xent_reduction red,
                            float *rows, float *grad, float *lse, float *loss)
{
    xent_handle_t h;
    cr_assert_eq(xent_create_cpu(&h, 0), XENT_STATUS_SUCCESS);
    xent_ce_desc desc;
    xent_ce_desc_init(&desc, SN, SC);
    desc.weights = d->w;
    desc.n_weights = SC;
    desc.label_smoothing = 0.1f;
    desc.z_loss = 0.001f;
    desc.reduction = red;
    size_t wsb = 0;
    cr_assert_eq(xent_ce_workspace_size(h, &desc, &wsb), XENT_STATUS_SUCCESS);
    void *ws = wsb ? malloc(wsb) : NULL;
    cr_assert_eq(
        xent_ce_forward_backward(h, &desc, d->z, d->t, NULL, grad,
                                 red == XENT_REDUCTION_NONE ? NULL : loss, rows,
                                 lse, ws, wsb),
        XENT_STATUS_SUCCESS);
    free(ws);
    xent_destroy(h);
}

/* The data part of a float32 .npy image (the header ends at a multiple of
 * 64 bytes for the shapes used here). */
static const float *npy_data(const char *img, size_t len, size_t count)
{
    size_t off = len - count * 4;
    cr_assert_eq(off % 64, 0);
    return (const float *)(const void *)(img + off);
}

Test(cli, streaming_is_bitwise_chunk_invariant)
{
    stream_data d;
    stream_inputs(&d);
    const char *reds[] = {"mean", "sum", "none"};
    const xent_reduction lred[] = {XENT_REDUCTION_MEAN, XENT_REDUCTION_SUM,
                                   XENT_REDUCTION_NONE};
    for (int ri = 0; ri < 3; ri++) {
        const char *red = reds[ri];
        stream_out one = stream_run("cpu", "z.npy", red, NULL, NULL, "a");
        cr_assert_eq(one.chunks, 1);
        stream_out c7 = stream_run("cpu", "z.npy", red, "7", NULL, "b");
        cr_assert_eq(c7.chunks, 8);
        assert_same(&one, &c7, "--chunk-rows 7");
        stream_out c1 = stream_run("cpu", "z.npy", red, "1", NULL, "c");
        cr_assert_eq(c1.chunks, SN);
        assert_same(&one, &c1, "--chunk-rows 1");
        stream_out cn = stream_run("cpu", "z.npy", red, "50", NULL, "d");
        assert_same(&one, &cn, "--chunk-rows N");
        stream_out big = stream_run("cpu", "z.npy", red, "1000", NULL, "e");
        assert_same(&one, &big, "--chunk-rows 1000");
        stream_out env =
            stream_run("cpu", "z.npy", red, NULL, "XENT_CHUNK_ROWS=7", "f");
        cr_assert_eq(env.chunks, 8);
        assert_same(&one, &env, "XENT_CHUNK_ROWS=7");
        /* float64 logits go through the conversion buffer */
        stream_out f64 = stream_run("cpu", "z64.npy", red, "7", NULL, "g");
        assert_same(&one, &f64, "float64 logits, --chunk-rows 7");

        /* and all of it is bitwise the library's one-shot call */
        float rows[SN], grad[SN * SC], lse[SN], loss = NAN;
        library_oneshot(&d, lred[ri], rows, grad, lse, &loss);
        cr_assert(!memcmp(npy_data(one.rows, one.nrows, SN), rows, sizeof rows),
                  "%s: row losses differ from the library", red);
        cr_assert(
            !memcmp(npy_data(one.grad, one.ngrad, SN * SC), grad, sizeof grad),
            "%s: gradient differs from the library", red);
        cr_assert(!memcmp(npy_data(one.lse, one.nlse, SN), lse, sizeof lse),
                  "%s: lse differs from the library", red);
        if (lred[ri] != XENT_REDUCTION_NONE) {
            float cli = (float)strtod(one.loss, NULL);
            cr_assert(!memcmp(&cli, &loss, 4),
                      "%s: JSON loss %s vs library %.9g", red, one.loss, loss);
        } else {
            cr_assert_str_eq(one.loss, "null");
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Half-precision logits, NaN, device selection                             */
/* ------------------------------------------------------------------------ */

static void half_case(int bf16)
{
    enum { N = 20, C = 33 };
    tu_rng rng;
    tu_rng_seed(&rng, bf16 ? 5 : 6);
    float z[N * C];
    uint16_t h[N * C];
    int64_t t[N];
    tu_fill_logits(&rng, N, C, C, z, 0.0f);
    tu_fill_targets_i64(&rng, N, C, t);
    t[3] = -100;
    for (int i = 0; i < N * C; i++)
        h[i] = bf16 ? xent_f32_to_bf16(z[i]) : xent_f32_to_f16(z[i]);
    /* bfloat16 bits in a '<f2' file, read back with --bf16 */
    save2("h.npy", XENT_NPY_DTYPE_F16, N, C, h);
    save1("t.npy", XENT_NPY_DTYPE_I64, N, t);
    cli_run r =
        CLI("loss", "--logits", P("h.npy"), "--targets", P("t.npy"), "--device",
            "cpu", "--loss-out", P("r.npy"), "--grad-out", P("g.npy"), "--json",
            "--chunk-rows", "6", bf16 ? "--bf16" : "--json");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    jval j = last_json(r.out);
    cr_assert_str_eq(jstr(&j, "logits_dtype"), bf16 ? "bfloat16" : "float16");
    int64_t sn[1] = {N}, snc[2] = {N, C};
    float *rows = load_f32("r.npy", 1, sn);
    float *grad = load_f32("g.npy", 2, snc);

    xent_handle_t hd;
    cr_assert_eq(xent_create_cpu(&hd, 1), XENT_STATUS_SUCCESS);
    xent_ce_desc d;
    xent_ce_desc_init(&d, N, C);
    d.logits_dtype = bf16 ? XENT_DTYPE_BF16 : XENT_DTYPE_F16;
    d.flags = XENT_FLAG_GRAD_F32;
    size_t wsb = 0;
    cr_assert_eq(xent_ce_workspace_size(hd, &d, &wsb), XENT_STATUS_SUCCESS);
    void *ws = malloc(wsb ? wsb : 1);
    float lrows[N], lgrad[N * C], loss;
    cr_assert_eq(xent_ce_forward_backward(hd, &d, h, t, NULL, lgrad, &loss,
                                          lrows, NULL, ws, wsb),
                 XENT_STATUS_SUCCESS);
    free(ws);
    xent_destroy(hd);
    cr_assert(!memcmp(rows, lrows, sizeof lrows), "row losses differ");
    cr_assert(!memcmp(grad, lgrad, sizeof lgrad), "gradient differs");
    float cli = (float)jnum(&j, "loss");
    cr_assert(!memcmp(&cli, &loss, 4), "loss %.9g vs %.9g", cli, loss);
}

Test(cli, float16_logits)
{
    half_case(0);
}
Test(cli, bfloat16_logits)
{
    half_case(1);
}

Test(cli, nan_logits_propagate)
{
    write_base();
    float z[BN * BC];
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    tu_fill_logits(&rng, BN, BC, BC, z, 0.0f);
    z[2 * BC + 4] = NAN;
    save2("zn.npy", XENT_NPY_DTYPE_F32, BN, BC, z);
    cli_run r = CLI("loss", "--logits", P("zn.npy"), "--targets", P("t.npy"),
                    "--device", "cpu", "--loss-out", P("r.npy"), "--json");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    jval j = last_json(r.out);
    const jval *l = jget(&j, "loss");
    cr_assert(l && l->t == J_NULL);
    cr_assert_str_eq(jstr(&j, "loss_nonfinite"), "nan");
    int64_t sn[1] = {BN};
    float *rows = load_f32("r.npy", 1, sn);
    for (int i = 0; i < BN; i++)
        cr_assert(i == 2 ? isnan(rows[i]) : isfinite(rows[i]), "row %d: %g", i,
                  rows[i]);
}

Test(cli, human_summary)
{
    write_base();
    cli_run r = CLI("loss", "--logits", P("z.npy"), "--targets", P("t.npy"),
                    "--device", "cpu", "--reduction", "sum");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_not_null(strstr(r.out, "loss (sum): "), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "8 rows x 10 classes"), "%s", r.out);
    cr_assert_str_empty(r.err);
}

Test(cli, auto_device)
{
    write_base();
    cli_run cpu = CLI("loss", "--logits", P("z.npy"), "--targets", P("t.npy"),
                      "--device", "cpu", "--json");
    cli_run any =
        CLI("loss", "--logits", P("z.npy"), "--targets", P("t.npy"), "--json");
    cr_assert_eq(cpu.rc, 0, "%s", cpu.err);
    cr_assert_eq(any.rc, 0, "%s", any.err);
    jval jc = last_json(cpu.out), ja = last_json(any.out);
    const char *dev = jstr(&ja, "device");
    if (strstr(any.err, "no usable CUDA device")) {
        cr_assert_not_null(strstr(any.err, "using the CPU"), "%s", any.err);
        cr_assert_eq(count_lines(any.err), 1, "%s", any.err);
        cr_assert_str_eq(dev, "cpu");
        cr_assert_str_eq(jget(&ja, "loss")->raw, jget(&jc, "loss")->raw);
    } else {
        cr_assert(!strncmp(dev, "cuda:", 5), "device %s", dev);
        cr_assert_not_null(jget(&ja, "gpu_name"));
        double a = jnum(&ja, "loss"), b = jnum(&jc, "loss");
        cr_assert(fabs(a - b) <= 2e-5 * fabs(b), "%g vs %g", a, b);
    }
}

/* ------------------------------------------------------------------------ */
/* bench, --version, --help                                                 */
/* ------------------------------------------------------------------------ */

static void check_bench_json(const jval *j, const char *device, int64_t n,
                             int64_t c, int min_results)
{
    cr_assert_str_eq(jstr(j, "device"), device);
    double copy = jnum(j, "copy_gbps");
    cr_assert_gt(copy, 0.0);
    const jval *res = jget(j, "results");
    cr_assert(res && res->t == J_ARR && res->n >= min_results, "results: %d",
              res ? res->n : -1);
    for (int i = 0; i < res->n; i++) {
        const jval *r = &res->v[i];
        const char *op = jstr(r, "op");
        cr_assert(!strcmp(op, "fwd") || !strcmp(op, "fwd_bwd"), "%s", op);
        jstr(r, "variant");
        jstr(r, "dtype");
        cr_assert_eq(jnum(r, "n_rows"), (double)n);
        cr_assert_eq(jnum(r, "n_classes"), (double)c);
        cr_assert_geq(jnum(r, "ld"), (double)c);
        double us = jnum(r, "us"), gbps = jnum(r, "gbps");
        cr_assert_gt(us, 0.0);
        cr_assert_gt(gbps, 0.0);
        cr_assert_eq(jnum(r, "copy_gbps"), copy);
        double frac = jnum(r, "frac_of_copy");
        cr_assert(fabs(frac - gbps / copy) <= 1e-12 * frac,
                  "frac_of_copy %g vs %g", frac, gbps / copy);
        cr_assert_geq(jnum(r, "max_abs_err"), 0.0);
    }
}

Test(cli, bench_cpu_json)
{
    cli_run r = CLI("bench", "--device", "cpu", "--rows", "64", "--classes",
                    "1000", "--json");
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    jval j = last_json(r.out);
    check_bench_json(&j, "cpu", 64, 1000, 1);
    const jval *res = jget(&j, "results");
    cr_assert_str_eq(jstr(&res->v[0], "op"), "fwd_bwd");
    cr_assert_str_eq(jstr(&res->v[0], "variant"), "cpu");
    cr_assert_str_eq(jstr(&res->v[0], "dtype"), "f32");
    /* the table goes to stderr with --json: stdout is the JSON alone */
    cr_assert_eq(count_lines(r.out), 1, "%s", r.out);
}

Test(cli, bench_cpu_both_ops_bf16_padded)
{
    cli_run r = CLI("bench", "--device", "cpu", "--rows", "33", "--classes",
                    "257", "--ld", "264", "--dtype", "bf16", "--op", "both",
                    "--reps", "3", "--threads", "1", "--json");
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    jval j = last_json(r.out);
    check_bench_json(&j, "cpu", 33, 257, 2);
    const jval *res = jget(&j, "results");
    cr_assert_eq(res->n, 2);
    cr_assert_str_eq(jstr(&res->v[0], "op"), "fwd");
    cr_assert_str_eq(jstr(&res->v[1], "op"), "fwd_bwd");
    cr_assert_eq(jnum(&res->v[0], "ld"), 264.0);
    cr_assert_eq(jnum(&res->v[0], "reps"), 3.0);
}

Test(cli, bench_table)
{
    cli_run r = CLI("bench", "--device", "cpu", "--rows", "16", "--classes",
                    "100", "--reps", "2");
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    cr_assert_not_null(strstr(r.out, "fwd_bwd"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "GB/s"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "cpu"), "%s", r.out);
}

Test(cli, bench_usage_errors)
{
    assert_usage_error(CLI("bench", "--suite", "--rows", "5"), NEED("--suite"));
    assert_usage_error(
        CLI("bench", "--device", "cpu", "--classes", "100", "--ld", "50"),
        NEED("--ld"));
    assert_usage_error(CLI("bench", "--dtype", "f64"), NEED("--dtype", "f64"));
    assert_usage_error(CLI("bench", "--variant", "tiled"), NEED("--variant"));
}

Test(cli, version_and_help)
{
    cli_run r = CLI("--version");
    cr_assert_eq(r.rc, 0);
    char want[64];
    snprintf(want, sizeof want, "xent %s", xent_version_string());
    cr_assert(!strncmp(r.out, want, strlen(want)), "%s", r.out);
    r = CLI("--help");
    cr_assert_eq(r.rc, 0);
    cr_assert_not_null(strstr(r.out, "loss"));
    cr_assert_not_null(strstr(r.out, "bench"));
    r = CLI("loss", "--help");
    cr_assert_eq(r.rc, 0);
    const char *flags[] = {"--logits",   "--targets",      "--target-probs",
                           "--weights",  "--ignore-index", "--label-smoothing",
                           "--z-loss",   "--softcap",      "--reduction",
                           "--loss-out", "--grad-out",     "--lse-out",
                           "--device",   "--threads",      "--json",
                           "--bf16",     "--chunk-rows",   "--progress"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_assert_not_null(strstr(r.out, flags[i]), "%s missing", flags[i]);
    r = CLI("bench", "--help");
    cr_assert_eq(r.rc, 0);
    cr_assert_not_null(strstr(r.out, "--suite"));
    r = CLI("help", "loss");
    cr_assert_eq(r.rc, 0);
    cr_assert_not_null(strstr(r.out, "--logits"));
    r = run_env(NULL, (const char *[]){NULL});
    cr_assert_eq(r.rc, 2);
    r = CLI("frobnicate");
    assert_usage_error(r, NEED("frobnicate"));
}

Test(cli, progress_is_cleared)
{
    write_base();
    cli_run r =
        CLI("loss", "--logits", P("z.npy"), "--targets", P("t.npy"), "--device",
            "cpu", "--progress", "--chunk-rows", "2", "--json");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    /* the bar ends with a carriage return that clears the line */
    size_t n = strlen(r.err);
    cr_assert(n == 0 || r.err[n - 1] == '\r', "stderr: %s", r.err);
    last_json(r.out);
}

/* ------------------------------------------------------------------------ */
/* GPU (skipped without a device unless XENT_REQUIRE_GPU=1)                 */
/* ------------------------------------------------------------------------ */

static int have_gpu(void)
{
    xent_handle_t h = NULL;
    xent_status st = xent_create(&h);
    xent_destroy(h);
    if (st == XENT_STATUS_SUCCESS)
        return 1;
    const char *req = getenv("XENT_REQUIRE_GPU");
    cr_assert(!(req && !strcmp(req, "1")),
              "XENT_REQUIRE_GPU=1 but no usable GPU: %s",
              xent_status_string(st));
    return 0;
}

Test(cli, gpu_streaming_matches_cpu)
{
    if (!have_gpu()) {
        cli_fixture_teardown(); /* a skipped test's .fini does not run */
        cr_skip_test("no GPU");
    }
    stream_data d;
    stream_inputs(&d);
    const char *reds[] = {"mean", "sum", "none"};
    for (int ri = 0; ri < 3; ri++) {
        stream_out cpu = stream_run("cpu", "z.npy", reds[ri], NULL, NULL, "a");
        stream_out one = stream_run("cuda", "z.npy", reds[ri], NULL, NULL, "b");
        stream_out c7 = stream_run("cuda", "z.npy", reds[ri], "7", NULL, "c");
        stream_out c1 = stream_run("cuda", "z.npy", reds[ri], "1", NULL, "d");
        stream_out f64 =
            stream_run("cuda", "z64.npy", reds[ri], "7", NULL, "e");
        assert_same(&one, &c7, "cuda --chunk-rows 7");
        assert_same(&one, &c1, "cuda --chunk-rows 1");
        assert_same(&one, &f64, "cuda float64 logits");
        const float *gr = npy_data(one.rows, one.nrows, SN);
        const float *cr = npy_data(cpu.rows, cpu.nrows, SN);
        double *ref = as_f64(cr, SN);
        assert_close("gpu loss rows", reds[ri], ref, gr, SN);
        double *gref = as_f64(npy_data(cpu.grad, cpu.ngrad, SN * SC), SN * SC);
        assert_close("gpu grad", reds[ri], gref,
                     npy_data(one.grad, one.ngrad, SN * SC), SN * SC);
        double *lref = as_f64(npy_data(cpu.lse, cpu.nlse, SN), SN);
        assert_close("gpu lse", reds[ri], lref, npy_data(one.lse, one.nlse, SN),
                     SN);
    }
}

Test(cli, gpu_bench_validates)
{
    if (!have_gpu()) {
        cli_fixture_teardown(); /* a skipped test's .fini does not run */
        cr_skip_test("no GPU");
    }
    cli_run r =
        CLI("bench", "--device", "cuda", "--rows", "300", "--classes", "50257",
            "--ld", "50304", "--op", "both", "--reps", "5", "--json");
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    jval j = last_json(r.out);
    check_bench_json(&j, jstr(&j, "device"), 300, 50257, 6);
    cr_assert(!strncmp(jstr(&j, "device"), "cuda:", 5));
    r = CLI("bench", "--device", "cuda", "--rows", "1000", "--classes", "1000",
            "--dtype", "bf16", "--reps", "5", "--json");
    cr_assert_eq(r.rc, 0, "exit %d: %s", r.rc, r.err);
    j = last_json(r.out);
    check_bench_json(&j, jstr(&j, "device"), 1000, 1000, 3);
}
