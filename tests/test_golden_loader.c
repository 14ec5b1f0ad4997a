/*
 * test_golden_loader.c - the golden-vector loader parses every committed
 * file, the files are internally consistent, and malformed text is
 * rejected with a line number.
 *
 * Build standalone:
 *   gcc -std=c11 -Wall -Wextra -Werror -Itests \
 *       -DXENT_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/golden.c \
 *       tests/test_golden_loader.c -o /tmp/golden_tests -lcriterion -lm
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "golden.h"

static const char *const OPS[] = {"ce", "entropy", "kl", "bce"};
static const int64_t MIN_CASES[] = {40, 10, 10, 10};

static golden_file *load_op(const char *op)
{
    char err[512];
    golden_file *f = golden_load_op(op, err, sizeof err);
    cr_assert_not_null(f, "loading %s from %s: %s", op, golden_dir(), err);
    return f;
}

static int near(double a, double b, double rtol)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return fabs(a - b) <= rtol * (1.0 + fmax(fabs(a), fabs(b)));
}

static double sum_array(const golden_case *gc, const char *key)
{
    int64_t n;
    const double *v = golden_array(gc, key, &n);
    double s = 0.0;
    cr_assert_not_null(v, "case %s: no %s", golden_name(gc), key);
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

Test(golden_files, load_and_validate_every_case)
{
    for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
        golden_file *f = load_op(OPS[k]);
        int64_t n = golden_count(f);
        cr_expect_geq(n, MIN_CASES[k], "%s.txt: only %lld cases", OPS[k], (long long)n);
        cr_expect_leq(n, 200, "%s.txt: %lld cases", OPS[k], (long long)n);
        for (int64_t i = 0; i < n; i++) {
            const golden_case *gc = golden_at(f, i);
            char err[512];
            cr_assert_not_null(gc);
            cr_expect_eq(golden_validate(gc, err, sizeof err), 0, "%s.txt: %s",
                         OPS[k], err);
            cr_expect(golden_str_is(gc, "op", OPS[k]), "%s.txt: case %s has op %s",
                      OPS[k], golden_name(gc), golden_str(gc, "op"));
            cr_expect_eq(golden_find(f, golden_name(gc)), gc);
        }
        cr_expect_null(golden_at(f, n));
        cr_expect_null(golden_at(f, -1));
        cr_expect_null(golden_find(f, "no_such_case"));
        golden_free(f);
    }
}

/* The reduced loss agrees with the recorded rows and the documented
 * denominators, in every file. */
Test(golden_files, reductions_match_rows)
{
    for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
        golden_file *f = load_op(OPS[k]);
        for (int64_t i = 0; i < golden_count(f); i++) {
            const golden_case *gc = golden_at(f, i);
            const char *red = golden_str(gc, "reduction");
            const char *rows_key = strcmp(OPS[k], "bce") == 0 ? "loss_elems" : "loss_rows";
            double n = golden_scalar(gc, "n", -1), c = golden_scalar(gc, "c", -1);
            double loss = golden_scalar(gc, "loss", -12345.0);
            double rows = sum_array(gc, rows_key);
            double expect = rows;
            if (strcmp(red, "mean") == 0 || strcmp(red, "batchmean") == 0) {
                double denom = strcmp(OPS[k], "ce") == 0 ? golden_scalar(gc, "mean_denom", -1)
                               : strcmp(OPS[k], "bce") == 0 ? n * c
                                                            : n;
                expect = denom > 0 ? rows / denom : NAN;
            }
            cr_expect(near(loss, expect, 1e-12), "%s.txt case %s: loss %.17g, rows give %.17g",
                      OPS[k], golden_name(gc), loss, expect);
        }
        golden_free(f);
    }
}

/* Cross-entropy: ignored rows have zero loss and gradient; a MEAN case and
 * its SUM twin share inputs, and grad_sum = mean_denom * grad_mean. */
Test(golden_files, ce_ignored_rows_and_twins)
{
    golden_file *f = load_op("ce");
    int twins = 0;
    for (int64_t i = 0; i < golden_count(f); i++) {
        const golden_case *gc = golden_at(f, i);
        int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
        if (golden_str_is(gc, "target", "index")) {
            const double *t = golden_array(gc, "targets", NULL);
            const double *rows = golden_array(gc, "loss_rows", NULL);
            const double *g = golden_array(gc, "grad", NULL);
            double ii = golden_scalar(gc, "ignore_index", 0);
            for (int64_t r = 0; r < n; r++) {
                if (t[r] != ii)
                    continue;
                cr_expect_eq(rows[r], 0.0, "case %s row %lld", golden_name(gc), (long long)r);
                for (int64_t j = 0; j < c; j++)
                    cr_expect_eq(g[r * c + j], 0.0, "case %s grad row %lld",
                                 golden_name(gc), (long long)r);
            }
        }
        const char *name = golden_name(gc);
        size_t len = strlen(name);
        if (len < 5 || strcmp(name + len - 5, "_mean") != 0)
            continue;
        char twin[256];
        snprintf(twin, sizeof twin, "%.*s_sum", (int)(len - 5), name);
        const golden_case *gs = golden_find(f, twin);
        double denom = golden_scalar(gc, "mean_denom", 0);
        if (gs == NULL || !(denom > 0))
            continue;
        int64_t nl, nl2, ng, ng2;
        const double *l1 = golden_array(gc, "logits", &nl);
        const double *l2 = golden_array(gs, "logits", &nl2);
        const double *g1 = golden_array(gc, "grad", &ng);
        const double *g2 = golden_array(gs, "grad", &ng2);
        cr_assert_eq(nl, nl2, "%s vs %s", name, twin);
        cr_assert_eq(ng, ng2, "%s vs %s", name, twin);
        cr_expect(memcmp(l1, l2, (size_t)nl * sizeof *l1) == 0, "%s vs %s logits", name, twin);
        for (int64_t j = 0; j < ng; j++)
            cr_expect(near(g2[j], g1[j] * denom, 1e-12), "%s vs %s grad[%lld]", name,
                      twin, (long long)j);
        twins++;
    }
    cr_expect_geq(twins, 10, "only %d mean/sum twins", twins);
    golden_free(f);
}

/* The cross-entropy file covers what the brief asks for. */
Test(golden_files, ce_coverage)
{
    golden_file *f = load_op("ce");
    int none = 0, mean = 0, sum = 0, probs = 0, weights = 0, ignore_inside = 0;
    int ignored_default = 0, ls01 = 0, ls03 = 0, ls10 = 0, composed = 0, zl = 0;
    int cap = 0, c1 = 0, n1 = 0, n0 = 0, all_ignored = 0, huge = 0, peaked = 0;
    int probs_ls_w = 0, ls_w_ign = 0, c2 = 0, c3 = 0, c7 = 0, c33 = 0;
    for (int64_t i = 0; i < golden_count(f); i++) {
        const golden_case *gc = golden_at(f, i);
        int64_t n = golden_int(gc, "n", -1), c = golden_int(gc, "c", -1);
        int64_t ii = golden_int(gc, "ignore_index", 0);
        double ls = golden_scalar(gc, "label_smoothing", -1);
        int is_probs = golden_str_is(gc, "target", "probs");
        int has_w = golden_has(gc, "weights");
        none += golden_str_is(gc, "reduction", "none");
        mean += golden_str_is(gc, "reduction", "mean");
        sum += golden_str_is(gc, "reduction", "sum");
        probs += is_probs;
        weights += has_w;
        ls01 += ls == (double)0.1f;
        ls03 += ls == (double)0.3f;
        ls10 += ls == 1.0;
        composed += golden_int(gc, "composed", 0) == 1;
        zl += golden_scalar(gc, "z_loss", 0) > 0;
        cap += golden_scalar(gc, "softcap", 0) > 0;
        c1 += c == 1;
        c2 += c == 2;
        c3 += c == 3;
        c7 += c == 7;
        c33 += c == 33;
        n1 += n == 1;
        n0 += n == 0;
        probs_ls_w += is_probs && ls > 0 && has_w;
        all_ignored += n > 0 && golden_scalar(gc, "mean_denom", 1) == 0;
        int64_t nt;
        const double *t = golden_array(gc, "targets", &nt);
        int any_ignored = 0;
        for (int64_t r = 0; !is_probs && r < nt; r++)
            any_ignored |= t[r] == (double)ii;
        ignore_inside += any_ignored && ii >= 0 && ii < c;
        ignored_default += any_ignored && ii == -100;
        ls_w_ign += any_ignored && ls > 0 && has_w;
        int64_t nz;
        const double *z = golden_array(gc, "logits", &nz);
        int h = 0, p = 0;
        for (int64_t j = 0; j < nz; j++) {
            h |= fabs(z[j]) >= 9000.0;
            p |= z[j] >= 15.0 && fabs(z[j]) < 100.0;
        }
        huge += h;
        peaked += p;
    }
    cr_expect_geq(golden_count(f), 40);
    cr_expect_geq(none, 5);
    cr_expect_geq(mean, 5);
    cr_expect_geq(sum, 5);
    cr_expect_geq(probs, 5);
    cr_expect_geq(weights, 10);
    cr_expect_geq(ignore_inside, 3);
    cr_expect_geq(ignored_default, 3);
    cr_expect_geq(ls01, 3);
    cr_expect_geq(ls03, 3);
    cr_expect_geq(ls10, 2);
    cr_expect_geq(ls_w_ign, 3);
    cr_expect_geq(probs_ls_w, 1);
    cr_expect_geq(composed, 3);
    cr_expect_geq(zl, 2);
    cr_expect_geq(cap, 2);
    cr_expect_geq(c1, 2);
    cr_expect_geq(c2, 1);
    cr_expect_geq(c3, 1);
    cr_expect_geq(c7, 3);
    cr_expect_geq(c33, 2);
    cr_expect_geq(n1, 1);
    cr_expect_geq(n0, 1);
    cr_expect_geq(all_ignored, 2);
    cr_expect_geq(huge, 2);
    cr_expect_geq(peaked, 2);
    golden_free(f);
}

/* ------------------------------------------------------------------ */
/* The parser on snippets                                               */
/* ------------------------------------------------------------------ */

static const char GOOD[] =
    "# a comment\n"
    "\n"
    "case first\r\n"
    "  op ce\n"
    "n 2\n"
    "c\t1\n"
    "  # indented comment inside a case\n"
    "x -1.5e-3\n"
    "big 1e308\n"
    "specials 5 inf -inf nan -0.0 0.1\n"
    "one 1 42\n"
    "empty 0\n"
    "word none\n"
    "end\n"
    "case second\n"
    "n 3\n"
    "end"; /* no final newline */

Test(golden_loader, parses_valid_snippet)
{
    char err[256];
    golden_file *f = golden_parse(GOOD, strlen(GOOD), "snippet", err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_expect_str_eq(err, "");
    cr_assert_eq(golden_count(f), 2);
    const golden_case *a = golden_find(f, "first");
    const golden_case *b = golden_find(f, "second");
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_expect_eq(a->line, 3);
    cr_expect_str_eq(golden_name(a), "first");
    cr_expect_str_eq(golden_str(a, "op"), "ce");
    cr_expect(golden_str_is(a, "word", "none"));
    cr_expect(!golden_str_is(a, "word", "mean"));
    cr_expect_eq(golden_int(a, "n", -1), 2);
    cr_expect_eq(golden_int(a, "c", -1), 1);
    cr_expect_eq(golden_int(a, "x", -7), -7, "non-integral");
    cr_expect_eq(golden_int(a, "op", -7), -7, "a word");
    cr_expect_eq(golden_scalar(a, "x", 0), -1.5e-3);
    cr_expect_eq(golden_scalar(a, "big", 0), 1e308);
    cr_expect_eq(golden_scalar(a, "one", 0), 42.0, "array of one reads as scalar");
    cr_expect_eq(golden_int(a, "one", 0), 42);
    cr_expect_eq(golden_scalar(a, "specials", 7.0), 7.0, "array of 5 is no scalar");
    cr_expect_eq(golden_scalar(a, "word", 7.0), 7.0, "a word is no number");
    cr_expect_eq(golden_scalar(a, "missing", 3.5), 3.5);
    cr_expect(golden_has(a, "empty"));
    cr_expect(!golden_has(a, "missing"));
    cr_expect(!golden_has(b, "op"));

    int64_t n = -1;
    const double *v = golden_array(a, "specials", &n);
    cr_assert_not_null(v);
    cr_assert_eq(n, 5);
    cr_expect(isinf(v[0]) && v[0] > 0);
    cr_expect(isinf(v[1]) && v[1] < 0);
    cr_expect(isnan(v[2]));
    cr_expect(v[3] == 0.0 && signbit(v[3]));
    cr_expect_eq(v[4], 0.1);
    cr_expect_null(golden_str(a, "specials"));

    v = golden_array(a, "empty", &n);
    cr_expect_not_null(v, "`key 0` is the empty array");
    cr_expect_eq(n, 0);
    cr_expect_eq(golden_scalar(a, "empty", 9), 0.0, "... and the scalar 0");
    v = golden_array(a, "n", &n);
    cr_expect_null(v, "a scalar 2 is no array");
    cr_expect_eq(n, 0);
    cr_expect_null(golden_array(a, "missing", NULL));

    double d[5];
    float fl[5];
    int64_t i64[5];
    int32_t i32[5];
    cr_expect_eq(golden_copy_f64(a, "specials", d, 5), 5);
    cr_expect_eq(golden_copy_f64(a, "specials", d, 4), -1, "cap too small");
    cr_expect_eq(golden_copy_f32(a, "specials", fl, 5), 5);
    cr_expect_eq(fl[4], 0.1f);
    cr_expect_eq(golden_copy_i64(a, "specials", i64, 5), -1, "inf is no integer");
    cr_expect_eq(golden_copy_i64(a, "one", i64, 5), 1);
    cr_expect_eq(i64[0], 42);
    cr_expect_eq(golden_copy_i32(a, "one", i32, 1), 1);
    cr_expect_eq(i32[0], 42);
    cr_expect_eq(golden_copy_i32(a, "empty", i32, 0), 0);
    cr_expect_eq(golden_copy_f32(a, "missing", fl, 5), -1);
    golden_free(f);
}

Test(golden_loader, empty_text_has_no_cases)
{
    char err[64];
    golden_file *f = golden_parse("# only a comment\n\n", 18, NULL, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_expect_eq(golden_count(f), 0);
    golden_free(f);
    f = golden_parse(NULL, 0, NULL, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    golden_free(f);
    golden_free(NULL);
}

static const struct {
    const char *text;
    const char *why; /* a substring of the message */
} BAD[] = {
    {"n 1\n", ":1: 'n' outside a case"},
    {"case a\nn 1\n", "has no 'end'"},
    {"case a\ncase b\nend\n", ":2: 'case' inside case 'a'"},
    {"end\n", ":1: 'end' outside a case"},
    {"case\nend\n", ":1: 'case' needs exactly one name"},
    {"case a b\nend\n", ":1: 'case' needs exactly one name"},
    {"case a\nend now\n", ":2: 'end' takes no value"},
    {"case a\nn\nend\n", ":2: key 'n' has no value"},
    {"case a\nn 1\nn 2\nend\n", ":3: duplicate key 'n'"},
    {"case a\nend\ncase a\nend\n", ":3: duplicate case name 'a'"},
    {"case a\nv 3 1 2\nend\n", ":2: array 'v': count says 3 values, the line has 2"},
    {"case a\nv 1 1 2\nend\n", ":2: array 'v': count says 1 values, the line has 2"},
    {"case a\nv -1 1\nend\n", ":2: array 'v': count '-1'"},
    {"case a\nv 2.0 1 2\nend\n", ":2: array 'v': count '2.0'"},
    {"case a\nv x 1 2\nend\n", ":2: array 'v': count 'x'"},
    {"case a\nv 2 1 abc\nend\n", ":2: array 'v': value 1 'abc' is not a number"},
    {"case a\nv 2 1 1.5q\nend\n", ":2: array 'v': value 1 '1.5q'"},
    {"case a\nv 2 1,2\nend\n", ":2: array 'v': count says 2 values, the line has 1"},
    {"\n\n# c\ncase a\nv 2 1 2 3\nend\n", ":5:"},
};

Test(golden_loader, rejects_malformed_snippets)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char err[256] = "untouched";
        golden_file *f = golden_parse(BAD[i].text, strlen(BAD[i].text), "bad", err,
                                      sizeof err);
        cr_expect_null(f, "snippet %zu was accepted: %s", i, BAD[i].text);
        golden_free(f);
        cr_expect(strncmp(err, "bad:", 4) == 0, "snippet %zu: message '%s'", i, err);
        cr_expect_not_null(strstr(err, BAD[i].why), "snippet %zu: '%s' lacks '%s'", i,
                           err, BAD[i].why);
    }
    /* a NUL byte inside a line */
    static const char nul[] = "case a\nn 1\0x\nend\n";
    char err[256];
    golden_file *f = golden_parse(nul, sizeof nul - 1, "bad", err, sizeof err);
    cr_expect_null(f);
    cr_expect_not_null(strstr(err, ":2: NUL byte"), "%s", err);
    /* a tiny error buffer is truncated, never overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    f = golden_parse("n 1\n", 4, "bad", small, 6);
    cr_expect_null(f);
    cr_expect_eq(strlen(small), 5);
    cr_expect_eq(small[7], 'x');
    /* no error buffer at all */
    cr_expect_null(golden_parse("end\n", 4, "bad", NULL, 0));
}

Test(golden_loader, missing_file)
{
    char err[512];
    golden_file *f = golden_load("/nonexistent/dir/ce.txt", err, sizeof err);
    cr_expect_null(f);
    cr_expect_not_null(strstr(err, "/nonexistent/dir/ce.txt"), "%s", err);
    cr_expect_null(golden_load(NULL, err, sizeof err));
    cr_expect_null(golden_load_op("no_such_op", err, sizeof err));
}

Test(golden_loader, golden_dir_and_path)
{
    char buf[4096];
    cr_expect_str_eq(golden_dir(), XENT_GOLDEN_DIR);
    cr_assert_eq(golden_path(buf, sizeof buf, "ce.txt"), 0);
    cr_expect_str_eq(buf + strlen(buf) - 7, "/ce.txt");
    cr_expect_eq(golden_path(buf, 4, "ce.txt"), -1);
}

static int validate_text(const char *text, char *err, size_t errlen)
{
    char perr[256];
    golden_file *f = golden_parse(text, strlen(text), "v", perr, sizeof perr);
    cr_assert_not_null(f, "%s", perr);
    cr_assert_eq(golden_count(f), 1);
    int rc = golden_validate(golden_at(f, 0), err, errlen);
    golden_free(f);
    return rc;
}

#define CE_HEAD                                                                  \
    "case t\nop ce\nn 2\nc 2\nreduction mean\ntarget index\nignore_index -100\n" \
    "label_smoothing 0\nz_loss 0\nsoftcap 0\ncomposed 0\nmean_denom 2\n"        \
    "logits 4 1 2 3 4\nloss 1 0.5\nloss_rows 2 0.25 0.75\nlse 2 2.3 4.3\n"      \
    "grad 4 0.1 -0.1 0.2 -0.2\n"

Test(golden_loader, validate_checks_the_schema)
{
    char err[256];
    cr_expect_eq(validate_text(CE_HEAD "targets 2 0 1\nend\n", err, sizeof err), 0, "%s",
                 err);
    cr_expect_eq(validate_text(CE_HEAD "targets 2 0 -100\nweights 2 1 0.5\nend\n", err,
                               sizeof err),
                 0, "%s", err);
    static const struct {
        const char *tail;
        const char *why;
    } bad[] = {
        {"end\n", "array 'targets' missing"},
        {"targets 3 0 1 1\nend\n", "array 'targets' has 3 values, expected 2"},
        {"targets 2 0 2\nend\n", "targets[1] = 2 is not a class"},
        {"targets 2 0 0.5\nend\n", "targets[1] = 0.5"},
        {"targets 2 0 1\nweights 3 1 1 1\nend\n", "array 'weights' has 3 values"},
        {"targets 2 0 1\nweights 2 1 -1\nend\n", "'weights'[1] = -1 outside"},
        {"targets 2 0 1\nextra 1\nend\n", "unknown key 'extra'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", CE_HEAD, bad[i].tail);
        cr_expect_eq(validate_text(text, err, sizeof err), -1, "bad %zu accepted", i);
        cr_expect_not_null(strstr(err, bad[i].why), "bad %zu: '%s' lacks '%s'", i, err,
                           bad[i].why);
        cr_expect_not_null(strstr(err, "case 't' (line 1)"), "%s", err);
    }
    cr_expect_eq(validate_text("case t\nop xx\nend\n", err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "'op' is 'xx'"), "%s", err);
    cr_expect_eq(validate_text("case t\nop ce\nn 2\nc 0\nend\n", err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "'c' missing"), "%s", err);
    cr_expect_eq(validate_text("case t\nop kl\nn 1\nc 1\nreduction mean\nend\n", err,
                               sizeof err),
                 -1, "kl has batchmean, not mean");
    cr_expect_eq(golden_validate(NULL, err, sizeof err), -1);
}
