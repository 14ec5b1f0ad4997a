/*
 * test_cli_info.c - `xent entropy`, `xent kl`, `xent bce` and `xent eval`
 * end to end on the CPU (the real binary, XENT_CLI_PATH, spawned with
 * stdout and stderr captured, inputs written as .npy files into a private
 * temporary directory):
 *
 *  - the seed's worked examples on probability inputs (logits log p):
 *    -log 0.7, -log 0.2, H(0.2, 0.8), log 2, log 100, H(.8, .1, .1) and
 *    H_p(q) = 1.4996 (the seed's 1.4990 is a rounding slip), through every
 *    subcommand that can express them;
 *  - bad input: exit status 2, exactly one line on stderr, nothing on
 *    stdout and no output file;
 *  - chunking: --chunk-rows 1 and 7 give bitwise the outputs of one chunk,
 *    which are the library's one-shot results;
 *  - the per-row and gradient outputs against the float64 reference.
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_util.h"
#include "npy.h"
#include "ref.h"
#include "testutil.h"
#include "xent.h"

/* ---- fixture: a data directory and an I/O directory per test (cli_util.c) */

static void setup(void) { cli_fixture_setup("xent_cli_info"); }

static void teardown(void) { cli_fixture_teardown(); }

TestSuite(cli_info, .init = setup, .fini = teardown, .timeout = 120);

/* Whether path exists. */
static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A successful run: exit 0, nothing on stderr. */
static void expect_ok(const cli_run *r, const char *what)
{
    cr_assert_eq(r->rc, 0, "%s: exit %d, stderr: %s", what, r->rc, r->err);
    cr_assert_str_empty(r->err, "%s: stderr: %s", what, r->err);
}

/* A number in the last line of stdout (the --json object): "key":value.
 * NaN when absent or null. */
static double json_num(const char *out, const char *key)
{
    const char *last = out, *p = out;
    while ((p = strchr(p, '\n')) && p[1]) {
        last = p + 1;
        p++;
    }
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(last, pat);
    if (!at)
        return NAN;
    at += strlen(pat);
    if (!strncmp(at, "null", 4))
        return NAN;
    return strtod(at, NULL);
}

/* ---- .npy files ------------------------------------------------------------
 */

static void write_f32(const char *path, int ndim, int64_t d0, int64_t d1,
                      const float *data)
{
    int64_t shape[2] = {d0, d1};
    char err[256];
    cr_assert_eq(xent_npy_write(path, XENT_NPY_DTYPE_F32, ndim, shape, data,
                                err, sizeof err),
                 0, "%s", err);
}

static void write_i64(const char *path, int64_t n, const int64_t *data)
{
    int64_t shape[1] = {n};
    char err[256];
    cr_assert_eq(xent_npy_write(path, XENT_NPY_DTYPE_I64, 1, shape, data, err,
                                sizeof err),
                 0, "%s", err);
}

/* A float32 .npy file's values (malloc'd); *count elements. */
static float *read_f32(const char *path, int64_t *count)
{
    xent_npy a;
    char err[256];
    cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(a.header.dtype, XENT_NPY_DTYPE_F32, "%s: not float32", path);
    int64_t n = 1;
    for (int k = 0; k < a.header.ndim; k++)
        n *= a.header.shape[k];
    float *v = malloc((size_t)(n > 0 ? n : 1) * 4);
    memcpy(v, a.data, (size_t)n * 4);
    xent_npy_close(&a);
    *count = n;
    return v;
}

/* Logits log p of probability rows p [n, c]. */
static void log_rows(const double *p, int64_t nc, float *z)
{
    for (int64_t k = 0; k < nc; k++)
        z[k] = (float)log(p[k]);
}

/* The seed rounds to 4 decimals. */
#define SEED_TOL 5.01e-5

/* ---- the seed's worked examples ---------------------------------------------
 */

Test(cli_info, seed_entropy)
{
    /* rows: (0.2, 0.8, 1, 1, ...) padded to 100 classes would change the
     * entropy, so each distribution is its own file */
    const double b2[2] = {0.2, 0.8}, u2[2] = {0.5, 0.5};
    const double q3[3] = {0.8, 0.1, 0.1};
    double u100[100];
    for (int j = 0; j < 100; j++)
        u100[j] = 0.01;
    struct {
        const double *p;
        int c;
        double want;
        const char *name;
    } cases[] = {{b2, 2, 0.5004, "H(0.2, 0.8)"},
                 {u2, 2, 0.6931, "log 2"},
                 {u100, 100, 4.6052, "log 100"},
                 {q3, 3, 0.6390, "H(.8, .1, .1)"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        float z[100];
        log_rows(cases[k].p, cases[k].c, z);
        write_f32(P("z.npy"), 2, 1, cases[k].c, z);
        cli_run r =
            CLI("entropy", "--logits", P("z.npy"), "--device", "cpu", "--json");
        expect_ok(&r, cases[k].name);
        double h = json_num(r.out, "loss");
        cr_expect(fabs(h - cases[k].want) <= SEED_TOL, "%s: %.6f",
                  cases[k].name, h);
        run_free(&r);
    }
}

Test(cli_info, seed_kl_and_cross_entropy)
{
    /* -log 0.7 and -log 0.2: KL(one-hot || p) with p = (0.7, 0.2, 0.1) */
    const double p[6] = {0.7, 0.2, 0.1, 0.7, 0.2, 0.1};
    const float q[6] = {1, 0, 0, 0, 1, 0};
    float z[6];
    log_rows(p, 6, z);
    write_f32(P("z.npy"), 2, 2, 3, z);
    write_f32(P("q.npy"), 2, 2, 3, q);
    cli_run r = CLI("kl", "--logits", P("z.npy"), "--target-probs", P("q.npy"),
                    "--reduction", "none", "--loss-out", P("rows.npy"),
                    "--device", "cpu");
    expect_ok(&r, "kl one-hot");
    int64_t n = 0;
    float *rows = read_f32(P("rows.npy"), &n);
    cr_assert_eq(n, 2);
    cr_expect(fabs(rows[0] - 0.3567) <= SEED_TOL, "-log 0.7: %.6f",
              (double)rows[0]);
    cr_expect(fabs(rows[1] - 1.6094) <= SEED_TOL, "-log 0.2: %.6f",
              (double)rows[1]);
    free(rows);
    run_free(&r);

    /* H_p(q) = KL(q || p) + H(q), p = (.2, .2, .6), q = (.8, .1, .1) */
    const double pp[3] = {0.2, 0.2, 0.6}, qq[3] = {0.8, 0.1, 0.1};
    float zp[3], zq[3], qf[3] = {0.8f, 0.1f, 0.1f};
    log_rows(pp, 3, zp);
    log_rows(qq, 3, zq);
    write_f32(P("zp.npy"), 2, 1, 3, zp);
    write_f32(P("zq.npy"), 2, 1, 3, zq);
    write_f32(P("qq.npy"), 2, 1, 3, qf);
    cli_run a = CLI("kl", "--logits", P("zp.npy"), "--target-probs",
                    P("qq.npy"), "--json", "--device", "cpu");
    cli_run b =
        CLI("entropy", "--logits", P("zq.npy"), "--json", "--device", "cpu");
    /* the teacher as logits gives the same KL */
    cli_run c = CLI("kl", "--logits", P("zp.npy"), "--target-logits",
                    P("zq.npy"), "--json", "--device", "cpu");
    expect_ok(&a, "kl");
    expect_ok(&b, "entropy");
    expect_ok(&c, "kl teacher logits");
    const double kl = json_num(a.out, "loss"), hq = json_num(b.out, "loss");
    cr_expect(fabs(kl + hq - 1.4996) <= SEED_TOL, "H_p(q) = %.6f", kl + hq);
    cr_expect(fabs(json_num(c.out, "loss") - kl) <= 1e-6,
              "teacher logits %.9g vs probabilities %.9g",
              json_num(c.out, "loss"), kl);
    run_free(&a);
    run_free(&b);
    run_free(&c);
}

Test(cli_info, seed_eval_and_bce)
{
    /* eval: p = (0.7, 0.2, 0.1); target 0 then 1: NLL -log 0.7, -log 0.2 */
    const double p[6] = {0.7, 0.2, 0.1, 0.7, 0.2, 0.1};
    float z[6];
    log_rows(p, 6, z);
    write_f32(P("z.npy"), 2, 2, 3, z);
    const int64_t y0[1] = {0}, y01[2] = {0, 1};
    write_f32(P("z1.npy"), 2, 1, 3, z);
    write_i64(P("y0.npy"), 1, y0);
    write_i64(P("y01.npy"), 2, y01);
    cli_run r = CLI("eval", "--logits", P("z1.npy"), "--targets", P("y0.npy"),
                    "--json", "--device", "cpu");
    expect_ok(&r, "eval");
    cr_expect(fabs(json_num(r.out, "mean_nll") - 0.3567) <= SEED_TOL,
              "-log 0.7: %s", r.out);
    cr_expect(fabs(json_num(r.out, "perplexity") - 1.0 / 0.7) <= 1e-5);
    cr_expect_eq(json_num(r.out, "accuracy"), 1.0);
    cr_expect_eq(json_num(r.out, "tokens"), 1.0);
    /* H(0.7, 0.2, 0.1) */
    cr_expect(fabs(json_num(r.out, "mean_entropy") - 0.8018) <= SEED_TOL);
    run_free(&r);
    r = CLI("eval", "--logits", P("z.npy"), "--targets", P("y01.npy"), "--json",
            "--device", "cpu", "--topk", "1");
    expect_ok(&r, "eval two rows");
    cr_expect(fabs(json_num(r.out, "mean_nll") - (0.3567 + 1.6094) / 2) <=
                  SEED_TOL,
              "%s", r.out);
    cr_expect_eq(json_num(r.out, "accuracy"), 0.5);
    cr_expect_eq(json_num(r.out, "topk_accuracy"), 0.5);
    run_free(&r);
    /* the human-readable report names the statistics */
    r = CLI("eval", "--logits", P("z.npy"), "--targets", P("y01.npy"),
            "--device", "cpu");
    expect_ok(&r, "eval text");
    cr_expect(strstr(r.out, "perplexity") && strstr(r.out, "top-5") &&
                  strstr(r.out, "mean entropy") && strstr(r.out, "tokens"),
              "%s", r.out);
    run_free(&r);

    /* bce: sigmoid(log(0.7 / 0.3)) = 0.7, target 1: -log 0.7; and
     * sigmoid(log(0.2 / 0.8)) = 0.2: -log 0.2 */
    const float zb[2] = {(float)log(0.7 / 0.3), (float)log(0.2 / 0.8)};
    const float tb[2] = {1.0f, 1.0f};
    write_f32(P("zb.npy"), 2, 1, 2, zb);
    write_f32(P("tb.npy"), 2, 1, 2, tb);
    r = CLI("bce", "--logits", P("zb.npy"), "--targets", P("tb.npy"),
            "--reduction", "none", "--loss-out", P("l.npy"), "--device", "cpu");
    expect_ok(&r, "bce");
    int64_t n = 0;
    float *l = read_f32(P("l.npy"), &n);
    cr_assert_eq(n, 2);
    cr_expect(fabs(l[0] - 0.3567) <= SEED_TOL, "-log 0.7: %.6f", (double)l[0]);
    cr_expect(fabs(l[1] - 1.6094) <= SEED_TOL, "-log 0.2: %.6f", (double)l[1]);
    free(l);
    run_free(&r);
}

/* ---- outputs against the reference, and chunking
 * ----------------------------- */

#define N 23
#define C 17

typedef struct files {
    float z[N * C], t[N * C], q[N * C], y[N * C], w[N * C], pw[C];
    double zd[N * C], td[N * C], qd[N * C], yd[N * C], wd[N * C], pwd[C];
} files;

static void make_files(files *f)
{
    tu_rng r;
    tu_rng_seed(&r, 2024);
    tu_fill_logits(&r, N, C, C, f->z, NAN);
    tu_fill_logits(&r, N, C, C, f->t, NAN);
    tu_fill_probs(&r, N, C, C, f->q, NAN);
    tu_fill_uniform_f32(&r, N * C, 0.0f, 1.0f, f->y);
    tu_fill_uniform_f32(&r, N * C, 0.0f, 2.0f, f->w);
    tu_fill_uniform_f32(&r, C, 0.25f, 4.0f, f->pw);
    tu_f32_to_f64(f->z, f->zd, N * C);
    tu_f32_to_f64(f->t, f->td, N * C);
    tu_f32_to_f64(f->q, f->qd, N * C);
    tu_f32_to_f64(f->y, f->yd, N * C);
    tu_f32_to_f64(f->w, f->wd, N * C);
    tu_f32_to_f64(f->pw, f->pwd, C);
    write_f32(P("z.npy"), 2, N, C, f->z);
    write_f32(P("t.npy"), 2, N, C, f->t);
    write_f32(P("q.npy"), 2, N, C, f->q);
    write_f32(P("y.npy"), 2, N, C, f->y);
    write_f32(P("w.npy"), 2, N, C, f->w);
    write_f32(P("pw.npy"), 1, C, 0, f->pw);
}

static double max_abs(const double *x, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]) && fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

/* |d| <= 1e-5 (|ref| + max|ref|) */
static void check(const char *what, const double *ref, const float *got,
                  int64_t n)
{
    TU_ASSERT_CLOSE(tu_compare_f32(ref, got, n, 1e-5 * max_abs(ref, n), 1e-5),
                    what);
}

/* One subcommand with --loss-out and --grad-out, in one chunk and in
 * chunks of 1 and 7 rows: bitwise the same files and JSON loss; returns
 * the one-chunk outputs. */
static void run_chunked(const char *const *args, int nargs, float **rows,
                        int64_t *nrows, float **grad, double *loss)
{
    const char *chunks[] = {NULL, "1", "7"};
    float *r0 = NULL, *g0 = NULL;
    int64_t n0 = 0, m0 = 0;
    double l0 = NAN;
    for (int k = 0; k < 3; k++) {
        const char *argv[40];
        int a = 0;
        for (int i = 0; i < nargs; i++)
            argv[a++] = args[i];
        argv[a++] = "--loss-out";
        argv[a++] = P("rows.npy");
        argv[a++] = "--grad-out";
        argv[a++] = P("grad.npy");
        argv[a++] = "--json";
        argv[a++] = "--device";
        argv[a++] = "cpu";
        if (chunks[k]) {
            argv[a++] = "--chunk-rows";
            argv[a++] = chunks[k];
        }
        argv[a] = NULL;
        cli_run r = run_env(NULL, argv);
        expect_ok(&r, args[0]);
        int64_t n = 0, m = 0;
        float *rr = read_f32(P("rows.npy"), &n);
        float *gg = read_f32(P("grad.npy"), &m);
        double l = json_num(r.out, "loss");
        if (k == 0) {
            r0 = rr;
            g0 = gg;
            n0 = n;
            m0 = m;
            l0 = l;
        } else {
            cr_expect(n == n0 && m == m0 &&
                          memcmp(rr, r0, (size_t)n * 4) == 0 &&
                          memcmp(gg, g0, (size_t)m * 4) == 0 &&
                          memcmp(&l, &l0, sizeof l) == 0,
                      "%s: chunks of %s rows differ from one chunk", args[0],
                      chunks[k]);
            free(rr);
            free(gg);
        }
        run_free(&r);
    }
    *rows = r0;
    *grad = g0;
    *nrows = n0;
    *loss = l0;
}

Test(cli_info, outputs_match_reference_and_chunking)
{
    files *f = malloc(sizeof *f);
    make_files(f);
    double rows[N * C], grad[N * C], gt[N * C], loss;
    float *got_rows, *got_grad;
    int64_t nr;
    double got_loss;

    const char *ent[] = {"entropy", "--logits", P("z.npy")};
    run_chunked(ent, 3, &got_rows, &nr, &got_grad, &got_loss);
    loss = ref_entropy_batch(N, C, f->zd, C, 1, rows, grad);
    cr_assert_eq(nr, N);
    check("entropy rows", rows, got_rows, N);
    check("entropy grad", grad, got_grad, N * C);
    float gl = (float)got_loss;
    check("entropy loss", &loss, &gl, 1);
    free(got_rows);
    free(got_grad);

    const char *klt[] = {
        "kl",       "--logits",    P("z.npy"), "--target-logits",
        P("t.npy"), "--reduction", "sum"};
    run_chunked(klt, 7, &got_rows, &nr, &got_grad, &got_loss);
    loss = ref_kl_batch(N, C, f->zd, C, NULL, 0, f->td, C, 2, rows, grad, gt);
    check("kl rows", rows, got_rows, N);
    check("kl grad", grad, got_grad, N * C);
    gl = (float)got_loss;
    check("kl loss", &loss, &gl, 1);
    free(got_rows);
    free(got_grad);

    const char *klp[] = {"kl", "--logits", P("z.npy"), "--target-probs",
                         P("q.npy")};
    run_chunked(klp, 5, &got_rows, &nr, &got_grad, &got_loss);
    loss = ref_kl_batch(N, C, f->zd, C, f->qd, C, NULL, 0, 1, rows, grad, NULL);
    check("kl probs rows", rows, got_rows, N);
    check("kl probs grad", grad, got_grad, N * C);
    gl = (float)got_loss;
    check("kl probs loss", &loss, &gl, 1);
    free(got_rows);
    free(got_grad);

    const char *bce[] = {"bce",       "--logits",     P("z.npy"),
                         "--targets", P("y.npy"),     "--weight",
                         P("w.npy"),  "--pos-weight", P("pw.npy")};
    run_chunked(bce, 9, &got_rows, &nr, &got_grad, &got_loss);
    loss = ref_bce_logits(N, C, f->zd, f->yd, f->pwd, f->wd, 1, rows, grad);
    cr_assert_eq(nr, N * C);
    check("bce elements", rows, got_rows, N * C);
    check("bce grad", grad, got_grad, N * C);
    gl = (float)got_loss;
    check("bce loss", &loss, &gl, 1);
    free(got_rows);
    free(got_grad);
    free(f);
}

Test(cli_info, eval_is_chunk_invariant)
{
    tu_rng r;
    tu_rng_seed(&r, 99);
    enum { EN = 101, EC = 40 };
    float z[EN * EC];
    int64_t y[EN];
    tu_fill_logits(&r, EN, EC, EC, z, NAN);
    tu_fill_targets_i64(&r, EN, EC, y);
    for (int i = 0; i < EN; i += 9)
        y[i] = -100;
    write_f32(P("z.npy"), 2, EN, EC, z);
    write_i64(P("y.npy"), EN, y);
    cli_run a = CLI("eval", "--logits", P("z.npy"), "--targets", P("y.npy"),
                    "--json", "--device", "cpu");
    cli_run b = CLI("eval", "--logits", P("z.npy"), "--targets", P("y.npy"),
                    "--json", "--device", "cpu", "--chunk-rows", "3");
    expect_ok(&a, "eval");
    expect_ok(&b, "eval chunked");
    const char *keys[] = {"mean_nll",      "perplexity",   "accuracy",
                          "topk_accuracy", "mean_entropy", "tokens",
                          "nll_sum",       "entropy_sum"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        double x = json_num(a.out, keys[k]), x2 = json_num(b.out, keys[k]);
        cr_expect(memcmp(&x, &x2, sizeof x) == 0, "%s: %.17g vs %.17g", keys[k],
                  x, x2);
    }
    /* against the reference */
    double zd[EN * EC], nll[EN];
    tu_f32_to_f64(z, zd, EN * EC);
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    ref_ce_index(EN, EC, zd, EC, y, &o, nll, NULL, NULL);
    double s = 0.0;
    int tokens = 0;
    for (int i = 0; i < EN; i++)
        if (y[i] != -100) {
            s += nll[i];
            tokens++;
        }
    cr_expect_eq(json_num(a.out, "tokens"), (double)tokens);
    cr_expect(fabs(json_num(a.out, "mean_nll") - s / tokens) <=
                  1e-5 * s / tokens,
              "mean NLL %.9g vs %.9g", json_num(a.out, "mean_nll"), s / tokens);
    run_free(&a);
    run_free(&b);
}

/* ---- bad input: exit 2, one line, nothing written
 * ------------------------------ */

/* Runs args and expects exit 2 with exactly one line on stderr containing
 * `needle` (when given), nothing on stdout and no output file. */
static void expect_bad(const char *needle, const char *const *args)
{
    const char *argv[40];
    int a = 0;
    for (int i = 0; args[i]; i++)
        argv[a++] = args[i];
    if (strcmp(args[0], "eval") != 0) { /* eval has no --loss-out */
        argv[a++] = "--loss-out";
        argv[a++] = P("never.npy");
    }
    argv[a++] = "--device";
    argv[a++] = "cpu";
    argv[a] = NULL;
    cli_run r = run_env(NULL, argv);
    cr_expect_eq(r.rc, 2, "%s: exit %d (stderr: %s)", args[0], r.rc, r.err);
    cr_expect_eq(count_lines(r.err), 1, "%s: stderr is not one line: %s",
                 args[0], r.err);
    cr_expect(!needle || strstr(r.err, needle), "%s: stderr '%s' lacks '%s'",
              args[0], r.err, needle);
    cr_expect_str_empty(r.out, "%s: stdout: %s", args[0], r.out);
    cr_expect(!exists(P("never.npy")), "%s: an output was written", args[0]);
    run_free(&r);
}

#define BAD(needle, ...) expect_bad(needle, (const char *[]){__VA_ARGS__, NULL})

Test(cli_info, bad_input_exits_2)
{
    files *f = malloc(sizeof *f);
    make_files(f);
    /* probabilities that do not sum to 1, a negative one */
    float q[N * C];
    memcpy(q, f->q, sizeof q);
    for (int j = 0; j < C; j++)
        q[5 * C + j] *= 1.01f;
    write_f32(P("qsum.npy"), 2, N, C, q);
    memcpy(q, f->q, sizeof q);
    q[7 * C + 3] = -0.01f;
    q[7 * C + 4] += 0.01f;
    write_f32(P("qneg.npy"), 2, N, C, q);
    BAD("row 5", "kl", "--logits", P("z.npy"), "--target-probs", P("qsum.npy"));
    BAD("row 7", "kl", "--logits", P("z.npy"), "--target-probs", P("qneg.npy"));
    /* a looser tolerance accepts the first */
    {
        cli_run r = CLI("kl", "--logits", P("z.npy"), "--target-probs",
                        P("qsum.npy"), "--prob-tol", "0.05", "--device", "cpu");
        expect_ok(&r, "kl --prob-tol");
        run_free(&r);
    }
    BAD(NULL, "kl", "--logits", P("z.npy"));
    BAD(NULL, "kl", "--logits", P("z.npy"), "--target-probs", P("q.npy"),
        "--target-logits", P("t.npy"));
    BAD(NULL, "kl", "--logits", P("z.npy"), "--target-probs", P("q.npy"),
        "--reduction", "mean");
    BAD(NULL, "kl", "--logits", P("z.npy"), "--target-probs", P("q.npy"),
        "--prob-tol", "-1");
    /* shapes */
    float small[4 * C];
    memcpy(small, f->q, sizeof small);
    write_f32(P("small.npy"), 2, 4, C, small);
    BAD("shape", "kl", "--logits", P("z.npy"), "--target-probs",
        P("small.npy"));
    BAD(NULL, "kl", "--logits", P("z.npy"), "--target-logits", P("small.npy"));
    BAD("shape", "bce", "--logits", P("z.npy"), "--targets", P("small.npy"));
    BAD(NULL, "entropy", "--logits", P("pw.npy")); /* 1-D logits */
    BAD(NULL, "entropy", "--logits", P("missing.npy"));
    BAD(NULL, "entropy");
    BAD(NULL, "entropy", "--logits", P("z.npy"), "--reduction", "batchmean");
    /* BCE data */
    float y[N * C];
    memcpy(y, f->y, sizeof y);
    y[3 * C + 2] = 1.5f;
    write_f32(P("ybad.npy"), 2, N, C, y);
    BAD("row 3", "bce", "--logits", P("z.npy"), "--targets", P("ybad.npy"));
    float pw[C];
    memcpy(pw, f->pw, sizeof pw);
    pw[4] = -1.0f;
    write_f32(P("pwneg.npy"), 1, C, 0, pw);
    write_f32(P("pwshort.npy"), 1, C - 1, 0, pw);
    BAD("pos_weight", "bce", "--logits", P("z.npy"), "--targets", P("y.npy"),
        "--pos-weight", P("pwneg.npy"));
    BAD("pos_weight", "bce", "--logits", P("z.npy"), "--targets", P("y.npy"),
        "--pos-weight", P("pwshort.npy"));
    BAD(NULL, "bce", "--logits", P("z.npy"), "--targets", P("y.npy"),
        "--weight", P("small.npy"));
    /* eval */
    int64_t t[N];
    for (int i = 0; i < N; i++)
        t[i] = i % C;
    t[9] = C;
    write_i64(P("tbad.npy"), N, t);
    t[9] = 0;
    write_i64(P("tok.npy"), N, t);
    BAD("row 9", "eval", "--logits", P("z.npy"), "--targets", P("tbad.npy"));
    BAD(NULL, "eval", "--logits", P("z.npy"), "--targets", P("tok.npy"),
        "--topk", "0");
    BAD(NULL, "eval", "--logits", P("z.npy"));
    BAD(NULL, "eval", "--logits", P("z.npy"), "--targets", P("y.npy"));
    free(f);
}

Test(cli_info, help_lists_the_commands)
{
    cli_run r = CLI("--help");
    cr_expect_eq(r.rc, 0);
    cr_expect(strstr(r.out, "entropy") && strstr(r.out, "kl") &&
                  strstr(r.out, "bce") && strstr(r.out, "eval"),
              "%s", r.out);
    run_free(&r);
    const char *cmds[] = {"entropy", "kl", "bce", "eval"};
    for (int k = 0; k < 4; k++) {
        r = CLI(cmds[k], "--help");
        cr_expect_eq(r.rc, 0, "%s --help", cmds[k]);
        cr_expect(strstr(r.out, "usage: xent") != NULL, "%s", r.out);
        run_free(&r);
    }
}
