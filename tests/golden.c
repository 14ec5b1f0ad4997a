/*
 * golden.c - loader for the PyTorch golden vectors (format: see golden.h).
 * C11, libc only.
 */
#include "golden.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* The whole token [s, s+n) is a number strtod reads; 0 on success. */
static int parse_number(const char *s, size_t n, double *out)
{
    char buf[128];
    char *end = NULL;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    double v = strtod(buf, &end);
    if (end != buf + n)
        return -1;
    *out = v;
    return 0;
}

/* A count: decimal digits only, at most 15 of them; 0 on success. */
static int parse_count(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    if (n == 0 || n > 15)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int tok_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

static void free_case(golden_case *gc)
{
    for (int64_t i = 0; i < gc->n_entries; i++) {
        free(gc->entries[i].key);
        free(gc->entries[i].token);
        free(gc->entries[i].values);
    }
    free(gc->entries);
    free(gc->name);
}

void golden_free(golden_file *file)
{
    if (file == NULL)
        return;
    for (int64_t i = 0; i < file->n_cases; i++)
        free_case(&file->cases[i]);
    free(file->cases);
    free(file->source);
    free(file);
}

/* ------------------------------------------------------------------ */
/* Parser                                                               */
/* ------------------------------------------------------------------ */

typedef struct token {
    const char *s;
    size_t n;
} token;

typedef struct parser {
    golden_file *file;
    const char *source;
    int line;
    char *err;
    size_t errlen;
    size_t cases_cap;
    size_t entries_cap; /* of the open case */
    int open;           /* a case is open (the last one) */
} parser;

static int perr(parser *p, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(p->err, p->errlen, "%s:%d: %s", p->source, p->line, msg);
    return -1;
}

static int begin_case(parser *p, const token *tok, size_t ntok)
{
    golden_file *f = p->file;
    if (p->open)
        return perr(p, "'case' inside case '%s' (missing 'end')",
                    f->cases[f->n_cases - 1].name);
    if (ntok != 2)
        return perr(p, "'case' needs exactly one name");
    for (int64_t i = 0; i < f->n_cases; i++)
        if (tok_is(tok[1].s, tok[1].n, f->cases[i].name))
            return perr(p, "duplicate case name '%.*s' (first on line %d)",
                        (int)tok[1].n, tok[1].s, f->cases[i].line);
    if ((size_t)f->n_cases == p->cases_cap) {
        size_t cap = p->cases_cap ? 2 * p->cases_cap : 16;
        golden_case *c = realloc(f->cases, cap * sizeof *c);
        if (c == NULL)
            return perr(p, "out of memory");
        f->cases = c;
        p->cases_cap = cap;
    }
    golden_case *gc = &f->cases[f->n_cases];
    memset(gc, 0, sizeof *gc);
    gc->name = dup_n(tok[1].s, tok[1].n);
    if (gc->name == NULL)
        return perr(p, "out of memory");
    gc->line = p->line;
    f->n_cases++;
    p->entries_cap = 0;
    p->open = 1;
    return 0;
}

static int add_entry(parser *p, const token *tok, size_t ntok)
{
    golden_case *gc = &p->file->cases[p->file->n_cases - 1];
    if (ntok < 2)
        return perr(p, "key '%.*s' has no value", (int)tok[0].n, tok[0].s);
    for (int64_t i = 0; i < gc->n_entries; i++)
        if (tok_is(tok[0].s, tok[0].n, gc->entries[i].key))
            return perr(p, "duplicate key '%s' in case '%s' (first on line %d)",
                        gc->entries[i].key, gc->name, gc->entries[i].line);
    if ((size_t)gc->n_entries == p->entries_cap) {
        size_t cap = p->entries_cap ? 2 * p->entries_cap : 16;
        golden_entry *e = realloc(gc->entries, cap * sizeof *e);
        if (e == NULL)
            return perr(p, "out of memory");
        gc->entries = e;
        p->entries_cap = cap;
    }
    golden_entry e;
    memset(&e, 0, sizeof e);
    e.line = p->line;
    if (ntok == 2) {
        e.token = dup_n(tok[1].s, tok[1].n);
        if (e.token == NULL)
            return perr(p, "out of memory");
        e.is_number = parse_number(tok[1].s, tok[1].n, &e.number) == 0;
    } else {
        int64_t count = 0;
        if (parse_count(tok[1].s, tok[1].n, &count) != 0)
            return perr(p, "array '%.*s': count '%.*s' is not a non-negative "
                        "integer", (int)tok[0].n, tok[0].s, (int)tok[1].n,
                        tok[1].s);
        if (count != (int64_t)(ntok - 2))
            return perr(p, "array '%.*s': count says %lld values, the line "
                        "has %lld", (int)tok[0].n, tok[0].s, (long long)count,
                        (long long)(ntok - 2));
        e.is_array = 1;
        e.n_values = count;
        e.values = malloc((size_t)count * sizeof *e.values);
        if (e.values == NULL)
            return perr(p, "out of memory");
        for (size_t i = 2; i < ntok; i++) {
            if (parse_number(tok[i].s, tok[i].n, &e.values[i - 2]) != 0) {
                free(e.values);
                return perr(p, "array '%.*s': value %lld '%.*s' is not a "
                            "number", (int)tok[0].n, tok[0].s,
                            (long long)(i - 2), (int)tok[i].n, tok[i].s);
            }
        }
    }
    e.key = dup_n(tok[0].s, tok[0].n);
    if (e.key == NULL) {
        free(e.token);
        free(e.values);
        return perr(p, "out of memory");
    }
    gc->entries[gc->n_entries++] = e;
    return 0;
}

golden_file *golden_parse(const char *text, size_t len, const char *source,
                          char *err, size_t errlen)
{
    parser p;
    token *tok = NULL;
    size_t tok_cap = 0;
    size_t pos = 0;

    memset(&p, 0, sizeof p);
    p.source = source != NULL ? source : "<string>";
    p.err = err;
    p.errlen = errlen;
    set_err(err, errlen, "%s", "");
    if (text == NULL && len != 0) {
        set_err(err, errlen, "%s: no text", p.source);
        return NULL;
    }
    p.file = calloc(1, sizeof *p.file);
    if (p.file == NULL || (p.file->source = dup_n(p.source, strlen(p.source))) == NULL) {
        set_err(err, errlen, "%s: out of memory", p.source);
        free(p.file);
        return NULL;
    }

    while (pos < len) {
        size_t start = pos;
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        pos = end < len ? end + 1 : end;
        p.line++;
        if (memchr(text + start, '\0', end - start) != NULL) {
            perr(&p, "NUL byte in line");
            goto fail;
        }
        /* tokenize */
        size_t ntok = 0;
        size_t i = start;
        for (;;) {
            while (i < end && is_blank(text[i]))
                i++;
            if (i >= end)
                break;
            size_t s = i;
            while (i < end && !is_blank(text[i]))
                i++;
            if (ntok == tok_cap) {
                size_t cap = tok_cap ? 2 * tok_cap : 64;
                token *t = realloc(tok, cap * sizeof *t);
                if (t == NULL) {
                    perr(&p, "out of memory");
                    goto fail;
                }
                tok = t;
                tok_cap = cap;
            }
            tok[ntok].s = text + s;
            tok[ntok].n = i - s;
            ntok++;
        }
        if (ntok == 0 || tok[0].s[0] == '#')
            continue;
        if (tok_is(tok[0].s, tok[0].n, "case")) {
            if (begin_case(&p, tok, ntok) != 0)
                goto fail;
        } else if (tok_is(tok[0].s, tok[0].n, "end")) {
            if (!p.open) {
                perr(&p, "'end' outside a case");
                goto fail;
            }
            if (ntok != 1) {
                perr(&p, "'end' takes no value");
                goto fail;
            }
            p.open = 0;
        } else {
            if (!p.open) {
                perr(&p, "'%.*s' outside a case", (int)tok[0].n, tok[0].s);
                goto fail;
            }
            if (add_entry(&p, tok, ntok) != 0)
                goto fail;
        }
    }
    if (p.open) {
        const golden_case *gc = &p.file->cases[p.file->n_cases - 1];
        set_err(err, errlen, "%s:%d: case '%s' (line %d) has no 'end'", p.source,
                p.line, gc->name, gc->line);
        goto fail;
    }
    free(tok);
    return p.file;

fail:
    free(tok);
    golden_free(p.file);
    return NULL;
}

golden_file *golden_load(const char *path, char *err, size_t errlen)
{
    if (path == NULL) {
        set_err(err, errlen, "golden_load: NULL path");
        return NULL;
    }
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        set_err(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16;
    size_t len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fclose(fp);
            set_err(err, errlen, "%s: out of memory", path);
            return NULL;
        }
        len += fread(buf + len, 1, cap - len, fp);
        if (len < cap)
            break;
        char *nb = realloc(buf, cap * 2);
        if (nb == NULL)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        set_err(err, errlen, "%s: read error", path);
        return NULL;
    }
    golden_file *f = golden_parse(buf, len, path, err, errlen);
    free(buf);
    return f;
}

const char *golden_dir(void)
{
    return XENT_GOLDEN_DIR;
}

int golden_path(char *buf, size_t buflen, const char *file)
{
    if (buf == NULL || file == NULL)
        return -1;
    int n = snprintf(buf, buflen, "%s/%s", golden_dir(), file);
    return (n < 0 || (size_t)n >= buflen) ? -1 : 0;
}

golden_file *golden_load_op(const char *op, char *err, size_t errlen)
{
    char path[4096];
    char name[256];
    if (op == NULL || snprintf(name, sizeof name, "%s.txt", op) >= (int)sizeof name ||
        golden_path(path, sizeof path, name) != 0) {
        set_err(err, errlen, "golden_load_op: bad op or path too long");
        return NULL;
    }
    return golden_load(path, err, errlen);
}

/* ------------------------------------------------------------------ */
/* Accessors                                                            */
/* ------------------------------------------------------------------ */

int64_t golden_count(const golden_file *file)
{
    return file != NULL ? file->n_cases : 0;
}

const golden_case *golden_at(const golden_file *file, int64_t i)
{
    if (file == NULL || i < 0 || i >= file->n_cases)
        return NULL;
    return &file->cases[i];
}

const golden_case *golden_find(const golden_file *file, const char *name)
{
    if (file == NULL || name == NULL)
        return NULL;
    for (int64_t i = 0; i < file->n_cases; i++)
        if (strcmp(file->cases[i].name, name) == 0)
            return &file->cases[i];
    return NULL;
}

const char *golden_name(const golden_case *gc)
{
    return gc != NULL ? gc->name : NULL;
}

static const golden_entry *find_entry(const golden_case *gc, const char *key)
{
    if (gc == NULL || key == NULL)
        return NULL;
    for (int64_t i = 0; i < gc->n_entries; i++)
        if (strcmp(gc->entries[i].key, key) == 0)
            return &gc->entries[i];
    return NULL;
}

int golden_has(const golden_case *gc, const char *key)
{
    return find_entry(gc, key) != NULL;
}

double golden_scalar(const golden_case *gc, const char *key, double dflt)
{
    const golden_entry *e = find_entry(gc, key);
    if (e == NULL)
        return dflt;
    if (e->is_number)
        return e->number;
    if (e->is_array && e->n_values == 1)
        return e->values[0];
    return dflt;
}

static int as_int64(double v, int64_t *out)
{
    /* NaN fails both comparisons; the bounds are exact doubles. */
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0))
        return -1;
    int64_t i = (int64_t)v;
    if ((double)i != v)
        return -1;
    *out = i;
    return 0;
}

int64_t golden_int(const golden_case *gc, const char *key, int64_t dflt)
{
    const golden_entry *e = find_entry(gc, key);
    int64_t v;
    if (e == NULL || !(e->is_number || (e->is_array && e->n_values == 1)))
        return dflt;
    return as_int64(golden_scalar(gc, key, 0.0), &v) == 0 ? v : dflt;
}

const char *golden_str(const golden_case *gc, const char *key)
{
    const golden_entry *e = find_entry(gc, key);
    return e != NULL ? e->token : NULL;
}

int golden_str_is(const golden_case *gc, const char *key, const char *s)
{
    const char *t = golden_str(gc, key);
    return t != NULL && s != NULL && strcmp(t, s) == 0;
}

const double *golden_array(const golden_case *gc, const char *key,
                           int64_t *count)
{
    static const double empty[1] = {0.0};
    const golden_entry *e = find_entry(gc, key);
    if (count != NULL)
        *count = 0;
    if (e == NULL)
        return NULL;
    if (e->is_array) {
        if (count != NULL)
            *count = e->n_values;
        return e->values;
    }
    if (e->token != NULL && strcmp(e->token, "0") == 0)
        return empty; /* `key 0`: the empty array */
    return NULL;
}

int64_t golden_copy_f64(const golden_case *gc, const char *key, double *dst,
                        int64_t cap)
{
    int64_t n;
    const double *v = golden_array(gc, key, &n);
    if (v == NULL || n > cap || (n > 0 && dst == NULL))
        return -1;
    for (int64_t i = 0; i < n; i++)
        dst[i] = v[i];
    return n;
}

int64_t golden_copy_f32(const golden_case *gc, const char *key, float *dst,
                        int64_t cap)
{
    int64_t n;
    const double *v = golden_array(gc, key, &n);
    if (v == NULL || n > cap || (n > 0 && dst == NULL))
        return -1;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)v[i];
    return n;
}

int64_t golden_copy_i64(const golden_case *gc, const char *key, int64_t *dst,
                        int64_t cap)
{
    int64_t n;
    const double *v = golden_array(gc, key, &n);
    if (v == NULL || n > cap || (n > 0 && dst == NULL))
        return -1;
    for (int64_t i = 0; i < n; i++)
        if (as_int64(v[i], &dst[i]) != 0)
            return -1;
    return n;
}

int64_t golden_copy_i32(const golden_case *gc, const char *key, int32_t *dst,
                        int64_t cap)
{
    int64_t n;
    const double *v = golden_array(gc, key, &n);
    if (v == NULL || n > cap || (n > 0 && dst == NULL))
        return -1;
    for (int64_t i = 0; i < n; i++) {
        int64_t x;
        if (as_int64(v[i], &x) != 0 || x < INT32_MIN || x > INT32_MAX)
            return -1;
        dst[i] = (int32_t)x;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Schema                                                               */
/* ------------------------------------------------------------------ */

typedef struct vctx {
    const golden_case *gc;
    char *err;
    size_t errlen;
} vctx;

static int vfail(const vctx *v, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(v->err, v->errlen, "case '%s' (line %d): %s", v->gc->name,
            v->gc->line, msg);
    return -1;
}

static int one_of(const char *s, const char *const *words)
{
    if (s == NULL)
        return 0;
    for (; *words != NULL; words++)
        if (strcmp(s, *words) == 0)
            return 1;
    return 0;
}

static int need_word(const vctx *v, const char *key, const char *const *words)
{
    const char *s = golden_str(v->gc, key);
    if (!one_of(s, words))
        return vfail(v, "'%s' is '%s', not one of the allowed words", key,
                     s != NULL ? s : "(missing)");
    return 0;
}

static int need_number(const vctx *v, const char *key, double lo, double hi,
                       double *out)
{
    const golden_entry *e = find_entry(v->gc, key);
    if (e == NULL || !e->is_number)
        return vfail(v, "'%s' missing or not a number", key);
    if (!(e->number >= lo && e->number <= hi))
        return vfail(v, "'%s' = %g outside [%g, %g]", key, e->number, lo, hi);
    if (out != NULL)
        *out = e->number;
    return 0;
}

static int need_int(const vctx *v, const char *key, int64_t lo, int64_t hi,
                    int64_t *out)
{
    int64_t x = golden_int(v->gc, key, INT64_MIN);
    if (x == INT64_MIN || x < lo || x > hi)
        return vfail(v, "'%s' missing, not an integer, or outside [%lld, %lld]",
                     key, (long long)lo, (long long)hi);
    if (out != NULL)
        *out = x;
    return 0;
}

/* An array of exactly `count` values; finite ones in [lo, hi] when
 * check_range. */
static int need_array(const vctx *v, const char *key, int64_t count,
                      int check_range, double lo, double hi)
{
    int64_t n;
    const double *a = golden_array(v->gc, key, &n);
    if (a == NULL)
        return vfail(v, "array '%s' missing", key);
    if (n != count)
        return vfail(v, "array '%s' has %lld values, expected %lld", key,
                     (long long)n, (long long)count);
    if (check_range)
        for (int64_t i = 0; i < n; i++)
            if (!(a[i] >= lo && a[i] <= hi))
                return vfail(v, "array '%s'[%lld] = %g outside [%g, %g]", key,
                             (long long)i, a[i], lo, hi);
    return 0;
}

static int only_keys(const vctx *v, const char *const *keys)
{
    for (int64_t i = 0; i < v->gc->n_entries; i++)
        if (!one_of(v->gc->entries[i].key, keys))
            return vfail(v, "unknown key '%s' (line %d)", v->gc->entries[i].key,
                         v->gc->entries[i].line);
    return 0;
}

#define BIG 1e300

static int validate_ce(const vctx *v, int64_t n, int64_t c)
{
    static const char *const keys[] = {
        "op", "n", "c", "reduction", "target", "ignore_index",
        "label_smoothing", "z_loss", "softcap", "composed", "mean_denom",
        "logits", "targets", "weights", "loss", "loss_rows", "lse", "grad",
        NULL};
    static const char *const reds[] = {"none", "mean", "sum", NULL};
    static const char *const tgts[] = {"index", "probs", NULL};
    double zl, cap;
    int64_t ii, composed;
    if (only_keys(v, keys) || need_word(v, "reduction", reds) ||
        need_word(v, "target", tgts) ||
        need_int(v, "ignore_index", INT64_MIN + 1, INT64_MAX, &ii) ||
        need_number(v, "label_smoothing", 0.0, 1.0, NULL) ||
        need_number(v, "z_loss", 0.0, BIG, &zl) ||
        need_number(v, "softcap", 0.0, BIG, &cap) ||
        need_int(v, "composed", 0, 1, &composed) ||
        need_number(v, "mean_denom", 0.0, BIG, NULL))
        return -1;
    if (composed != (zl > 0.0 || cap > 0.0))
        return vfail(v, "'composed' must be 1 exactly when z_loss or softcap is set");
    int probs = golden_str_is(v->gc, "target", "probs");
    if (probs) {
        if (ii >= 0)
            return vfail(v, "probability targets need ignore_index < 0");
        if (need_array(v, "targets", n * c, 1, 0.0, 1.0))
            return -1;
    } else {
        int64_t cnt;
        const double *t = golden_array(v->gc, "targets", &cnt);
        if (need_array(v, "targets", n, 0, 0, 0))
            return -1;
        for (int64_t i = 0; i < cnt; i++) {
            int64_t y;
            if (as_int64(t[i], &y) != 0 || ((y < 0 || y >= c) && y != ii))
                return vfail(v, "targets[%lld] = %g is not a class in [0, %lld) "
                             "or ignore_index", (long long)i, t[i], (long long)c);
        }
    }
    if (golden_has(v->gc, "weights") && need_array(v, "weights", c, 1, 0.0, BIG))
        return -1;
    if (need_array(v, "logits", n * c, 1, -BIG, BIG) ||
        need_array(v, "loss", 1, 0, 0, 0) ||
        need_array(v, "loss_rows", n, 1, -BIG, BIG) ||
        need_array(v, "lse", n, 1, -BIG, BIG) ||
        need_array(v, "grad", n * c, 1, -BIG, BIG))
        return -1;
    return 0;
}

static int validate_entropy(const vctx *v, int64_t n, int64_t c)
{
    static const char *const keys[] = {"op", "n", "c", "reduction", "logits",
                                       "loss", "loss_rows", "grad", NULL};
    static const char *const reds[] = {"none", "mean", "sum", NULL};
    if (only_keys(v, keys) || need_word(v, "reduction", reds) ||
        need_array(v, "logits", n * c, 1, -BIG, BIG) ||
        need_array(v, "loss", 1, 1, -BIG, BIG) ||
        need_array(v, "loss_rows", n, 1, -1e-12, BIG) ||
        need_array(v, "grad", n * c, 1, -BIG, BIG))
        return -1;
    return 0;
}

static int validate_kl(const vctx *v, int64_t n, int64_t c)
{
    static const char *const keys[] = {
        "op", "n", "c", "reduction", "target", "log_target", "logits",
        "target_probs", "target_logits", "loss", "loss_rows", "grad",
        "grad_target", NULL};
    static const char *const reds[] = {"none", "batchmean", "sum", NULL};
    static const char *const tgts[] = {"probs", "logits", NULL};
    int64_t log_target;
    if (only_keys(v, keys) || need_word(v, "reduction", reds) ||
        need_word(v, "target", tgts) || need_int(v, "log_target", 0, 1, &log_target))
        return -1;
    int lg = golden_str_is(v->gc, "target", "logits");
    if (lg != (int)log_target)
        return vfail(v, "log_target must be 1 exactly for target = logits");
    if (lg) {
        if (golden_has(v->gc, "target_probs"))
            return vfail(v, "target_probs given with target = logits");
        if (need_array(v, "target_logits", n * c, 1, -BIG, BIG) ||
            need_array(v, "grad_target", n * c, 1, -BIG, BIG))
            return -1;
    } else {
        if (golden_has(v->gc, "target_logits") || golden_has(v->gc, "grad_target"))
            return vfail(v, "target_logits/grad_target given with target = probs");
        if (need_array(v, "target_probs", n * c, 1, 0.0, 1.0))
            return -1;
    }
    if (need_array(v, "logits", n * c, 1, -BIG, BIG) ||
        need_array(v, "loss", 1, 1, -BIG, BIG) ||
        need_array(v, "loss_rows", n, 1, -1e-12, BIG) ||
        need_array(v, "grad", n * c, 1, -BIG, BIG))
        return -1;
    return 0;
}

static int validate_bce(const vctx *v, int64_t n, int64_t c)
{
    static const char *const keys[] = {"op", "n", "c", "reduction", "logits",
                                       "targets", "pos_weight", "weight", "loss",
                                       "loss_elems", "grad", NULL};
    static const char *const reds[] = {"none", "mean", "sum", NULL};
    if (only_keys(v, keys) || need_word(v, "reduction", reds) ||
        need_array(v, "logits", n * c, 1, -BIG, BIG) ||
        need_array(v, "targets", n * c, 1, 0.0, 1.0))
        return -1;
    if (golden_has(v->gc, "pos_weight") && need_array(v, "pos_weight", c, 1, 0.0, BIG))
        return -1;
    if (golden_has(v->gc, "weight") && need_array(v, "weight", n * c, 1, 0.0, BIG))
        return -1;
    if (need_array(v, "loss", 1, 1, -BIG, BIG) ||
        need_array(v, "loss_elems", n * c, 1, 0.0, BIG) ||
        need_array(v, "grad", n * c, 1, -BIG, BIG))
        return -1;
    return 0;
}

int golden_validate(const golden_case *gc, char *err, size_t errlen)
{
    static const char *const ops[] = {"ce", "entropy", "kl", "bce", NULL};
    vctx v = {gc, err, errlen};
    int64_t n, c;
    if (gc == NULL) {
        set_err(err, errlen, "golden_validate: NULL case");
        return -1;
    }
    set_err(err, errlen, "%s", "");
    if (need_word(&v, "op", ops) || need_int(&v, "n", 0, 1 << 24, &n) ||
        need_int(&v, "c", 1, 1 << 24, &c))
        return -1;
    if (n * c > (int64_t)1 << 26)
        return vfail(&v, "n*c = %lld is implausibly large", (long long)(n * c));
    const char *op = golden_str(gc, "op");
    if (strcmp(op, "ce") == 0)
        return validate_ce(&v, n, c);
    if (strcmp(op, "entropy") == 0)
        return validate_entropy(&v, n, c);
    if (strcmp(op, "kl") == 0)
        return validate_kl(&v, n, c);
    return validate_bce(&v, n, c);
}
