/*
 * npy.c - NumPy .npy reader and writer for the xent CLI (see npy.h).
 *
 * Reading: the file is mapped read-only; xent_npy_parse checks the prefix,
 * then every header byte (ASCII, no control characters), then parses the
 * dict with a small recursive-descent grammar:
 *
 *   dict  := '{' ws [entry (ws ',' ws entry)* [ws ',']] ws '}' ws
 *   entry := string ws ':' ws value
 *   value := string | True | False | tuple
 *   tuple := '(' ws [int (ws ',' ws int)* [ws ',']] ws ')'
 *
 * Strings are '...' or "..." without escapes; ints are decimal, optionally
 * with Python 2's L suffix. Every read is bounds-checked against the header
 * length, which is itself checked against the file length; data bytes are
 * never read by the parser.
 *
 * Writing: a temporary file "<path>.tmp.XXXXXX" is created with O_EXCL in the
 * destination's directory and renamed over the destination on commit, so a
 * failed or interrupted run never leaves a partial output under the final
 * name.
 */
#define _POSIX_C_SOURCE 200809L

#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host"
#endif

#if defined(__GNUC__)
#define NPY_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define NPY_PRINTF(fmt, args)
#endif

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * npy_fail - writes "<name>: <message>" into err (errlen bytes) and returns
 * -1. Control characters in name are shown as '?', so the message stays on
 * one line.
 */
NPY_PRINTF(4, 5)
static int npy_fail(char *err, size_t errlen, const char *name, const char *fmt,
                    ...)
{
    if (err == NULL || errlen == 0)
        return -1;
    if (name == NULL)
        name = "<npy>";
    size_t pos = 0;
    for (; *name != '\0' && pos + 1 < errlen; name++) {
        unsigned char c = (unsigned char)*name;
        err[pos++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    err[pos] = '\0';
    if (pos + 3 > errlen)
        return -1;
    err[pos++] = ':';
    err[pos++] = ' ';
    err[pos] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + pos, errlen - pos, fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * npy_quote - copies at most 24 bytes of header text s [n] into out (which
 * holds 32) for quoting in a message; bytes outside printable ASCII become
 * '?', and "..." marks a cut.
 */
static void npy_quote(char out[32], const unsigned char *s, size_t n)
{
    size_t k = 0;
    for (; k < n && k < 24; k++)
        out[k] = (s[k] >= 0x20 && s[k] < 0x7f) ? (char)s[k] : '?';
    if (k < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Dtypes and shapes                                                         */
/* ------------------------------------------------------------------------ */

const char *xent_npy_dtype_name(xent_npy_dtype dtype)
{
    switch (dtype) {
    case XENT_NPY_DTYPE_F32: return "float32";
    case XENT_NPY_DTYPE_F16: return "float16";
    case XENT_NPY_DTYPE_BF16: return "bfloat16";
    case XENT_NPY_DTYPE_F64: return "float64";
    case XENT_NPY_DTYPE_I32: return "int32";
    case XENT_NPY_DTYPE_I64: return "int64";
    default: return "unknown";
    }
}

size_t xent_npy_itemsize(xent_npy_dtype dtype)
{
    switch (dtype) {
    case XENT_NPY_DTYPE_F16:
    case XENT_NPY_DTYPE_BF16: return 2;
    case XENT_NPY_DTYPE_F32:
    case XENT_NPY_DTYPE_I32: return 4;
    case XENT_NPY_DTYPE_F64:
    case XENT_NPY_DTYPE_I64: return 8;
    default: return 0;
    }
}

/* npy_descr - the descr string written for dtype, or NULL if unwritable. */
static const char *npy_descr(xent_npy_dtype dtype)
{
    switch (dtype) {
    case XENT_NPY_DTYPE_F32: return "<f4";
    case XENT_NPY_DTYPE_F16: return "<f2";
    case XENT_NPY_DTYPE_F64: return "<f8";
    case XENT_NPY_DTYPE_I32: return "<i4";
    case XENT_NPY_DTYPE_I64: return "<i8";
    default: return NULL;
    }
}

char *xent_npy_format_shape(int ndim, const int64_t *shape, char *buf,
                            size_t buflen)
{
    if (buf == NULL || buflen == 0)
        return buf;
    size_t pos = 0;
    buf[0] = '\0';
#define NPY_APPEND(...)                                                        \
    do {                                                                       \
        if (pos < buflen) {                                                    \
            int k_ = snprintf(buf + pos, buflen - pos, __VA_ARGS__);           \
            pos = (k_ < 0) ? buflen : pos + (size_t)k_;                        \
        }                                                                      \
    } while (0)
    NPY_APPEND("(");
    for (int d = 0; d < ndim && shape != NULL; d++)
        NPY_APPEND("%s%lld", d > 0 ? ", " : "", (long long)shape[d]);
    NPY_APPEND(ndim == 1 ? ",)" : ")");
#undef NPY_APPEND
    return buf;
}

/* What is wrong with a shape, for npy_check_shape. */
typedef enum npy_shape_problem {
    NPY_SHAPE_OK = 0,
    NPY_SHAPE_BAD_NDIM,
    NPY_SHAPE_NEGATIVE,
    NPY_SHAPE_TOO_LARGE
} npy_shape_problem;

/*
 * npy_check_shape - validates shape [ndim] and computes its element count
 * into *count. The product of the non-zero dimensions must not exceed
 * XENT_NPY_MAX_ELEMENTS (so a zero dimension cannot hide absurd others).
 */
static npy_shape_problem npy_check_shape(int ndim, const int64_t *shape,
                                         int64_t *count)
{
    if (ndim < 0 || ndim > XENT_NPY_MAX_DIMS || (ndim > 0 && shape == NULL))
        return NPY_SHAPE_BAD_NDIM;
    int64_t nonzero = 1;
    int any_zero = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return NPY_SHAPE_NEGATIVE;
        if (shape[d] == 0) {
            any_zero = 1;
            continue;
        }
        if (shape[d] > XENT_NPY_MAX_ELEMENTS / nonzero)
            return NPY_SHAPE_TOO_LARGE;
        nonzero *= shape[d];
    }
    *count = any_zero ? 0 : nonzero;
    return NPY_SHAPE_OK;
}

/* ------------------------------------------------------------------------ */
/* Header parsing                                                            */
/* ------------------------------------------------------------------------ */

/* Parser state: the header text s [n], the read position, and where errors
 * go. base is the file offset of s[0], for messages. */
typedef struct npy_parser {
    const unsigned char *s;
    size_t n;
    size_t i;
    size_t base;
    const char *name;
    char *err;
    size_t errlen;
} npy_parser;

static void npy_skip_ws(npy_parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' ||
                           p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* npy_peek - the next byte, or -1 at the end of the header. */
static int npy_peek(const npy_parser *p)
{
    return p->i < p->n ? p->s[p->i] : -1;
}

/* npy_syntax - "malformed header: <what> at byte K" with K a file offset. */
static int npy_syntax(npy_parser *p, const char *what)
{
    return npy_fail(p->err, p->errlen, p->name,
                    "malformed header: %s at byte %zu", what, p->base + p->i);
}

/* npy_parse_string - a quoted string without escapes; *out points into the
 * header, *outlen bytes, quotes excluded. */
static int npy_parse_string(npy_parser *p, const unsigned char **out,
                            size_t *outlen)
{
    int q = npy_peek(p);
    if (q != '\'' && q != '"')
        return npy_syntax(p, "expected a quoted string");
    size_t start = ++p->i;
    while (p->i < p->n && p->s[p->i] != q) {
        if (p->s[p->i] == '\\')
            return npy_syntax(p, "escape sequences are not supported");
        if (p->s[p->i] == '\n' || p->s[p->i] == '\r')
            break;
        p->i++;
    }
    if (p->i >= p->n || p->s[p->i] != q)
        return npy_syntax(p, "unterminated string");
    *out = p->s + start;
    *outlen = p->i - start;
    p->i++;
    return 0;
}

static int npy_is_ident(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* npy_parse_bool - the Python literal True or False. */
static int npy_parse_bool(npy_parser *p, int *out)
{
    size_t start = p->i;
    while (p->i < p->n && npy_is_ident(p->s[p->i]))
        p->i++;
    size_t len = p->i - start;
    if (len == 4 && memcmp(p->s + start, "True", 4) == 0) {
        *out = 1;
        return 0;
    }
    if (len == 5 && memcmp(p->s + start, "False", 5) == 0) {
        *out = 0;
        return 0;
    }
    p->i = start;
    return npy_syntax(p, "'fortran_order' must be True or False");
}

/* npy_parse_shape - a tuple of non-negative decimal ints into shape[],
 * *ndim entries. Dimensions above XENT_NPY_MAX_ELEMENTS are rejected here,
 * their product later. */
static int npy_parse_shape(npy_parser *p, int64_t shape[XENT_NPY_MAX_DIMS],
                           int *ndim)
{
    int c = npy_peek(p);
    if (c == '[')
        return npy_syntax(p, "'shape' must be a tuple, not a list");
    if (c != '(')
        return npy_syntax(p, "'shape' must be a tuple");
    p->i++;
    int nd = 0;
    int trailing_comma = 0;
    for (;;) {
        npy_skip_ws(p);
        c = npy_peek(p);
        if (c == ')')
            break;
        if (nd > 0 && !trailing_comma)
            return npy_syntax(p, "expected ',' or ')' in 'shape'");
        if (c == '-')
            return npy_fail(p->err, p->errlen, p->name,
                            "negative dimension in shape");
        if (c < '0' || c > '9')
            return npy_syntax(p, "expected a dimension in 'shape'");
        if (nd == XENT_NPY_MAX_DIMS)
            return npy_fail(p->err, p->errlen, p->name,
                            "shape has more than %d dimensions",
                            XENT_NPY_MAX_DIMS);
        int64_t v = 0;
        int too_large = 0;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
            if (!too_large) {
                v = v * 10 + (p->s[p->i] - '0');
                if (v > XENT_NPY_MAX_ELEMENTS)
                    too_large = 1;
            }
            p->i++;
        }
        if (too_large)
            return npy_fail(p->err, p->errlen, p->name,
                            "dimension %d of the shape exceeds 2^48", nd);
        if (p->i < p->n && (p->s[p->i] == 'L' || p->s[p->i] == 'l'))
            p->i++; /* Python 2 long literal, as old numpy wrote */
        if (p->i < p->n && npy_is_ident(p->s[p->i]))
            return npy_syntax(p, "bad integer in 'shape'");
        shape[nd++] = v;
        npy_skip_ws(p);
        trailing_comma = 0;
        if (npy_peek(p) == ',') {
            p->i++;
            trailing_comma = 1;
        }
    }
    if (nd == 1 && !trailing_comma)
        return npy_syntax(p, "'shape' (N) is not a tuple, (N,) is");
    if (nd == 0 && trailing_comma)
        return npy_syntax(p, "empty tuple with a comma in 'shape'");
    p->i++; /* ')' */
    *ndim = nd;
    return 0;
}

/*
 * npy_decode_descr - maps a descr string s [n] to a dtype, with the
 * messages for the known-unsupported cases.
 */
static int npy_decode_descr(npy_parser *p, const unsigned char *s, size_t n,
                            unsigned flags, xent_npy_dtype *out)
{
    char q[32];
    npy_quote(q, s, n);
    size_t k = 0;
    int order = '=';
    if (n > 0 && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '='))
        order = s[k++];
    int kind = k < n ? s[k++] : 0;
    unsigned size = 0;
    size_t digits = 0;
    while (k < n && s[k] >= '0' && s[k] <= '9' && digits < 4) {
        size = size * 10 + (unsigned)(s[k++] - '0');
        digits++;
    }
    int plain = (k == n && digits > 0); /* nothing after the size */

    if (kind == 'O')
        return npy_fail(p->err, p->errlen, p->name,
                        "object arrays ('%s') are not supported", q);
    if (plain && order == '>' && size > 1)
        return npy_fail(p->err, p->errlen, p->name,
                        "big-endian data ('%s') is not supported; "
                        "convert with arr.astype(arr.dtype.newbyteorder('<'))",
                        q);
    int two_byte = plain && size == 2 &&
                   (kind == 'f' || kind == 'u' || kind == 'i' || kind == 'V');
    if (two_byte && (flags & XENT_NPY_READ_BF16)) {
        *out = XENT_NPY_DTYPE_BF16;
        return 0;
    }
    if (plain && kind == 'f' && size == 2) {
        *out = XENT_NPY_DTYPE_F16;
        return 0;
    }
    if (plain && kind == 'f' && size == 4) {
        *out = XENT_NPY_DTYPE_F32;
        return 0;
    }
    if (plain && kind == 'f' && size == 8) {
        *out = XENT_NPY_DTYPE_F64;
        return 0;
    }
    if (plain && kind == 'i' && size == 4) {
        *out = XENT_NPY_DTYPE_I32;
        return 0;
    }
    if (plain && kind == 'i' && size == 8) {
        *out = XENT_NPY_DTYPE_I64;
        return 0;
    }
    if (two_byte)
        return npy_fail(p->err, p->errlen, p->name,
                        "unsupported dtype '%s' (2-byte data can be read as "
                        "bfloat16 on request)",
                        q);
    return npy_fail(p->err, p->errlen, p->name,
                    "unsupported dtype '%s' (supported: float16, float32, "
                    "float64, int32, int64, bfloat16)",
                    q);
}

/* Keys of the header dict, as bits for duplicate detection. */
enum { NPY_KEY_DESCR = 1, NPY_KEY_FORTRAN = 2, NPY_KEY_SHAPE = 4 };

/* npy_parse_dict - the header dict into descr / fortran / shape. */
static int npy_parse_dict(npy_parser *p, const unsigned char **descr,
                          size_t *descr_len, int *fortran,
                          int64_t shape[XENT_NPY_MAX_DIMS], int *ndim)
{
    unsigned seen = 0;
    npy_skip_ws(p);
    if (npy_peek(p) != '{')
        return npy_syntax(p, "expected '{'");
    p->i++;
    for (;;) {
        npy_skip_ws(p);
        if (npy_peek(p) == '}')
            break;
        const unsigned char *key;
        size_t key_len;
        if (npy_parse_string(p, &key, &key_len) != 0)
            return -1;
        unsigned bit;
        if (key_len == 5 && memcmp(key, "descr", 5) == 0) {
            bit = NPY_KEY_DESCR;
        } else if (key_len == 13 && memcmp(key, "fortran_order", 13) == 0) {
            bit = NPY_KEY_FORTRAN;
        } else if (key_len == 5 && memcmp(key, "shape", 5) == 0) {
            bit = NPY_KEY_SHAPE;
        } else {
            char q[32];
            npy_quote(q, key, key_len);
            return npy_fail(p->err, p->errlen, p->name,
                            "unexpected key '%s' in the header", q);
        }
        if (seen & bit) {
            char q[32];
            npy_quote(q, key, key_len);
            return npy_fail(p->err, p->errlen, p->name,
                            "key '%s' appears twice in the header", q);
        }
        seen |= bit;
        npy_skip_ws(p);
        if (npy_peek(p) != ':')
            return npy_syntax(p, "expected ':' after a key");
        p->i++;
        npy_skip_ws(p);
        int rc;
        if (bit == NPY_KEY_DESCR) {
            int c = npy_peek(p);
            if (c == '[' || c == '(' || c == '{')
                return npy_fail(p->err, p->errlen, p->name,
                                "structured dtypes are not supported");
            rc = npy_parse_string(p, descr, descr_len);
        } else if (bit == NPY_KEY_FORTRAN) {
            rc = npy_parse_bool(p, fortran);
        } else {
            rc = npy_parse_shape(p, shape, ndim);
        }
        if (rc != 0)
            return -1;
        npy_skip_ws(p);
        if (npy_peek(p) == ',') {
            p->i++;
            continue;
        }
        if (npy_peek(p) != '}')
            return npy_syntax(p, "expected ',' or '}' after a value");
        break;
    }
    p->i++; /* '}' */
    npy_skip_ws(p);
    if (p->i != p->n)
        return npy_syntax(p, "unexpected text after the dict");
    if (!(seen & NPY_KEY_DESCR))
        return npy_fail(p->err, p->errlen, p->name,
                        "the header lacks the 'descr' key");
    if (!(seen & NPY_KEY_FORTRAN))
        return npy_fail(p->err, p->errlen, p->name,
                        "the header lacks the 'fortran_order' key");
    if (!(seen & NPY_KEY_SHAPE))
        return npy_fail(p->err, p->errlen, p->name,
                        "the header lacks the 'shape' key");
    return 0;
}

int xent_npy_parse(const void *buf, size_t len, const char *name,
                   unsigned flags, xent_npy_header *out, char *err,
                   size_t errlen)
{
    const unsigned char *b = (const unsigned char *)buf;
    if (out == NULL)
        return npy_fail(err, errlen, name, "no header struct given");
    memset(out, 0, sizeof *out);
    if (b == NULL && len > 0)
        return npy_fail(err, errlen, name, "no buffer given");
    if (len == 0)
        return npy_fail(err, errlen, name, "empty file, not an NPY file");
    size_t m = len < sizeof npy_magic ? len : sizeof npy_magic;
    if (memcmp(b, npy_magic, m) != 0)
        return npy_fail(err, errlen, name,
                        "not an NPY file (bad magic string)");
    if (len < 8)
        return npy_fail(err, errlen, name,
                        "truncated header: the file has only %zu bytes", len);
    unsigned major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return npy_fail(err, errlen, name,
                        "unsupported NPY format version %u.%u (supported: "
                        "1.0, 2.0, 3.0)",
                        major, minor);
    size_t prefix = major == 1 ? 10 : 12;
    if (len < prefix)
        return npy_fail(err, errlen, name,
                        "truncated header: the file has only %zu bytes", len);
    size_t hlen = major == 1
                      ? (size_t)b[8] | (size_t)b[9] << 8
                      : (size_t)((uint32_t)b[8] | (uint32_t)b[9] << 8 |
                                 (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24);
    if (hlen > len - prefix)
        return npy_fail(err, errlen, name,
                        "truncated header: it declares %zu bytes, the file "
                        "has %zu after the %zu-byte prefix",
                        hlen, len - prefix, prefix);
    const unsigned char *h = b + prefix;
    for (size_t i = 0; i < hlen; i++) {
        unsigned c = h[i];
        if (c >= 0x80 && major < 3)
            return npy_fail(err, errlen, name,
                            "header is not ASCII (byte 0x%02x at offset %zu)",
                            c, prefix + i);
        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f)
            return npy_fail(err, errlen, name,
                            "header contains control character 0x%02x at "
                            "offset %zu",
                            c, prefix + i);
    }
    if (hlen == 0 || h[hlen - 1] != '\n')
        return npy_fail(err, errlen, name,
                        "header does not end with a newline");

    npy_parser p = {h, hlen, 0, prefix, name, err, errlen};
    const unsigned char *descr = NULL;
    size_t descr_len = 0;
    int fortran = 0;
    int ndim = 0;
    int64_t shape[XENT_NPY_MAX_DIMS] = {0};
    if (npy_parse_dict(&p, &descr, &descr_len, &fortran, shape, &ndim) != 0)
        return -1;
    xent_npy_dtype dtype = XENT_NPY_DTYPE_F32;
    if (npy_decode_descr(&p, descr, descr_len, flags, &dtype) != 0)
        return -1;
    int64_t count = 0;
    if (npy_check_shape(ndim, shape, &count) != NPY_SHAPE_OK)
        return npy_fail(err, errlen, name, "shape has more than 2^48 elements");
    char shape_str[256];
    xent_npy_format_shape(ndim, shape, shape_str, sizeof shape_str);
    if (fortran) {
        int big = 0;
        for (int d = 0; d < ndim; d++)
            big += shape[d] > 1;
        if (big > 1)
            return npy_fail(err, errlen, name,
                            "Fortran-order arrays are not supported (shape "
                            "%s); save with np.ascontiguousarray",
                            shape_str);
    }
    size_t itemsize = xent_npy_itemsize(dtype);
    uint64_t need = (uint64_t)count * itemsize; /* <= 2^51: no overflow */
    size_t offset = prefix + hlen;
    size_t have = len - offset;
    if (need > (uint64_t)SIZE_MAX)
        return npy_fail(err, errlen, name,
                        "array of shape %s is too large for this platform",
                        shape_str);
    if (have < need)
        return npy_fail(err, errlen, name,
                        "truncated data: shape %s of %s needs %llu bytes, "
                        "the file has %zu",
                        shape_str, xent_npy_dtype_name(dtype),
                        (unsigned long long)need, have);
    if (have > need)
        return npy_fail(err, errlen, name,
                        "trailing data after the array: shape %s of %s "
                        "needs %llu bytes, the file has %zu",
                        shape_str, xent_npy_dtype_name(dtype),
                        (unsigned long long)need, have);

    out->version_major = (int)major;
    out->version_minor = (int)minor;
    out->dtype = dtype;
    out->itemsize = itemsize;
    out->fortran_order = fortran;
    out->ndim = ndim;
    memcpy(out->shape, shape, sizeof shape);
    out->count = count;
    out->data_offset = offset;
    out->data_size = (size_t)need;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

int xent_npy_open(xent_npy *a, const char *path, unsigned flags, char *err,
                  size_t errlen)
{
    if (a == NULL)
        return npy_fail(err, errlen, path, "no array struct given");
    memset(a, 0, sizeof *a);
    if (path == NULL)
        return npy_fail(err, errlen, NULL, "no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return npy_fail(err, errlen, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return npy_fail(err, errlen, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return npy_fail(err, errlen, path, "not a regular file");
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > (uintmax_t)SIZE_MAX) {
        close(fd);
        return npy_fail(err, errlen, path,
                        "file too large to map on this platform");
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return npy_fail(err, errlen, path, "cannot map: %s", strerror(e));
        }
    }
    close(fd); /* the mapping stays valid */

    xent_npy_header h;
    if (xent_npy_parse(map, len, path, flags, &h, err, errlen) != 0) {
        if (map != NULL)
            munmap(map, len);
        return -1;
    }
    size_t plen = strlen(path);
    char *copy = malloc(plen + 1);
    if (copy == NULL) {
        munmap(map, len);
        return npy_fail(err, errlen, path, "out of memory");
    }
    memcpy(copy, path, plen + 1);
    (void)posix_madvise(map, len, POSIX_MADV_SEQUENTIAL); /* a hint only */

    a->header = h;
    a->data = (const unsigned char *)map + h.data_offset;
    a->nbytes = h.data_size;
    a->path = copy;
    a->map = map;
    a->map_len = len;
    return 0;
}

void xent_npy_close(xent_npy *a)
{
    if (a == NULL)
        return;
    if (a->map != NULL)
        munmap(a->map, a->map_len);
    free(a->path);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------------------ */
/* Rank and dtype checks                                                     */
/* ------------------------------------------------------------------------ */

int xent_npy_expect_header(const xent_npy_header *h, const char *name,
                           int ndim_min, int ndim_max, unsigned dtype_mask,
                           char *err, size_t errlen)
{
    if (h == NULL)
        return npy_fail(err, errlen, name, "no header given");
    unsigned mask = dtype_mask & XENT_NPY_MASK_ALL;
    if (mask == 0)
        mask = XENT_NPY_MASK_ALL;
    int dtype_ok = (unsigned)h->dtype < XENT_NPY_DTYPE_COUNT &&
                   (mask & XENT_NPY_MASK(h->dtype)) != 0;
    if (dtype_ok && h->ndim >= ndim_min && h->ndim <= ndim_max)
        return 0;

    char rank[64];
    if (ndim_min == ndim_max)
        snprintf(rank, sizeof rank, "a %d-D array", ndim_min);
    else if (ndim_max == ndim_min + 1)
        snprintf(rank, sizeof rank, "a %d-D or %d-D array", ndim_min, ndim_max);
    else
        snprintf(rank, sizeof rank, "an array of %d to %d dimensions", ndim_min,
                 ndim_max);

    /* Dtypes in reading order, joined as "a, b or c". */
    static const xent_npy_dtype order[XENT_NPY_DTYPE_COUNT] = {
        XENT_NPY_DTYPE_F16, XENT_NPY_DTYPE_BF16, XENT_NPY_DTYPE_F32,
        XENT_NPY_DTYPE_F64, XENT_NPY_DTYPE_I32,  XENT_NPY_DTYPE_I64};
    char types[128] = "";
    if (mask != XENT_NPY_MASK_ALL) {
        int total = 0, done = 0;
        for (int k = 0; k < XENT_NPY_DTYPE_COUNT; k++)
            total += (mask & XENT_NPY_MASK(order[k])) != 0;
        size_t pos = 0;
        for (int k = 0; k < XENT_NPY_DTYPE_COUNT; k++) {
            if (!(mask & XENT_NPY_MASK(order[k])))
                continue;
            const char *sep = done == 0           ? " of "
                              : done == total - 1 ? " or "
                                                  : ", ";
            int w = snprintf(types + pos, sizeof types - pos, "%s%s", sep,
                             xent_npy_dtype_name(order[k]));
            if (w > 0 && (size_t)w < sizeof types - pos)
                pos += (size_t)w;
            done++;
        }
    }
    char shape_str[256];
    xent_npy_format_shape(h->ndim, h->shape, shape_str, sizeof shape_str);
    return npy_fail(err, errlen, name, "expected %s%s, got %s of shape %s",
                    rank, types, xent_npy_dtype_name(h->dtype), shape_str);
}

int xent_npy_expect(const xent_npy *a, int ndim_min, int ndim_max,
                    unsigned dtype_mask, char *err, size_t errlen)
{
    if (a == NULL)
        return npy_fail(err, errlen, NULL, "no array given");
    return xent_npy_expect_header(&a->header, a->path, ndim_min, ndim_max,
                                  dtype_mask, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Conversions                                                               */
/* ------------------------------------------------------------------------ */

static float npy_bits_to_f32(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float xent_npy_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) { /* inf, NaN (payload kept) */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) { /* normal: rebias 15 -> 127 */
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) { /* signed zero */
        bits = sign;
    } else { /* subnormal mant * 2^-24: normalise */
        uint32_t e = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
    }
    return npy_bits_to_f32(bits);
}

float xent_npy_bf16_to_f32(uint16_t h)
{
    return npy_bits_to_f32((uint32_t)h << 16);
}

void xent_npy_to_f32(xent_npy_dtype dtype, const void *src, float *dst,
                     size_t count)
{
    const unsigned char *s = (const unsigned char *)src;
    switch (dtype) {
    case XENT_NPY_DTYPE_F32:
        if (count > 0)
            memcpy(dst, s, count * sizeof(float));
        break;
    case XENT_NPY_DTYPE_F16:
        for (size_t i = 0; i < count; i++) {
            uint16_t v;
            memcpy(&v, s + 2 * i, 2);
            dst[i] = xent_npy_f16_to_f32(v);
        }
        break;
    case XENT_NPY_DTYPE_BF16:
        for (size_t i = 0; i < count; i++) {
            uint16_t v;
            memcpy(&v, s + 2 * i, 2);
            dst[i] = xent_npy_bf16_to_f32(v);
        }
        break;
    case XENT_NPY_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case XENT_NPY_DTYPE_I32:
        for (size_t i = 0; i < count; i++) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    case XENT_NPY_DTYPE_I64:
        for (size_t i = 0; i < count; i++) {
            int64_t v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    default: break;
    }
}

int xent_npy_to_i64(xent_npy_dtype dtype, const void *src, int64_t *dst,
                    size_t count)
{
    const unsigned char *s = (const unsigned char *)src;
    if (dtype == XENT_NPY_DTYPE_I64) {
        if (count > 0)
            memcpy(dst, s, count * sizeof(int64_t));
        return 0;
    }
    if (dtype == XENT_NPY_DTYPE_I32) {
        for (size_t i = 0; i < count; i++) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = v;
        }
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

size_t xent_npy_encode_header(xent_npy_dtype dtype, int ndim,
                              const int64_t *shape, void *buf, size_t cap)
{
    const char *descr = npy_descr(dtype);
    int64_t count;
    if (descr == NULL || npy_check_shape(ndim, shape, &count) != NPY_SHAPE_OK)
        return 0;
    char shape_str[256];
    xent_npy_format_shape(ndim, shape, shape_str, sizeof shape_str);
    char dict[XENT_NPY_MAX_HEADER_BYTES];
    int k = snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     descr, shape_str);
    if (k < 0 || (size_t)k >= sizeof dict)
        return 0;
    size_t dict_len = (size_t)k;
    size_t prefix = 10;
    size_t total = (prefix + dict_len + 1 + 63) / 64 * 64;
    if (total - prefix > 65535) { /* never with <= 8 dims; kept for form */
        prefix = 12;
        total = (prefix + dict_len + 1 + 63) / 64 * 64;
    }
    if (total > XENT_NPY_MAX_HEADER_BYTES)
        return 0;
    if (buf == NULL || cap < total)
        return total;
    unsigned char *o = (unsigned char *)buf;
    size_t hlen = total - prefix;
    memcpy(o, npy_magic, 6);
    o[6] = prefix == 10 ? 1 : 2;
    o[7] = 0;
    o[8] = (unsigned char)(hlen & 0xff);
    o[9] = (unsigned char)((hlen >> 8) & 0xff);
    if (prefix == 12) {
        o[10] = (unsigned char)((hlen >> 16) & 0xff);
        o[11] = (unsigned char)((hlen >> 24) & 0xff);
    }
    memcpy(o + prefix, dict, dict_len);
    memset(o + prefix + dict_len, ' ', total - prefix - dict_len - 1);
    o[total - 1] = '\n';
    return total;
}

/* npy_write_all - write(2) until n bytes are out, retrying on EINTR. */
static int npy_write_all(int fd, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    while (n > 0) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t r = write(fd, p, chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* npy_mix - splitmix64 finaliser, for temporary file names. */
static uint64_t npy_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* npy_writer_release - closes the temporary file, removes it if unlink_tmp,
 * frees the paths and marks the writer inactive. */
static void npy_writer_release(xent_npy_writer *w, int unlink_tmp)
{
    if (w->fd >= 0)
        close(w->fd);
    if (unlink_tmp && w->tmp_path != NULL)
        unlink(w->tmp_path);
    free(w->path);
    free(w->tmp_path);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

int xent_npy_writer_open(xent_npy_writer *w, const char *path,
                         xent_npy_dtype dtype, int ndim, const int64_t *shape,
                         char *err, size_t errlen)
{
    if (w == NULL)
        return npy_fail(err, errlen, path, "no writer struct given");
    memset(w, 0, sizeof *w);
    w->fd = -1;
    if (path == NULL || path[0] == '\0')
        return npy_fail(err, errlen, NULL, "no output path given");
    if (dtype == XENT_NPY_DTYPE_BF16)
        return npy_fail(err, errlen, path,
                        "bfloat16 has no .npy type; write float32 instead");
    if (npy_descr(dtype) == NULL)
        return npy_fail(err, errlen, path, "cannot write dtype %d", (int)dtype);
    int64_t count = 0;
    switch (npy_check_shape(ndim, shape, &count)) {
    case NPY_SHAPE_OK: break;
    case NPY_SHAPE_BAD_NDIM:
        return npy_fail(err, errlen, path,
                        "cannot write an array of %d dimensions (0 to %d, "
                        "with a shape)",
                        ndim, XENT_NPY_MAX_DIMS);
    case NPY_SHAPE_NEGATIVE:
        return npy_fail(err, errlen, path, "negative dimension in shape");
    default:
        return npy_fail(err, errlen, path, "shape has more than 2^48 elements");
    }
    unsigned char header[XENT_NPY_MAX_HEADER_BYTES];
    size_t hsize =
        xent_npy_encode_header(dtype, ndim, shape, header, sizeof header);
    if (hsize == 0 || hsize > sizeof header)
        return npy_fail(err, errlen, path, "cannot encode the header");

    size_t plen = strlen(path);
    w->path = malloc(plen + 1);
    w->tmp_path = malloc(plen + sizeof ".tmp.XXXXXX");
    if (w->path == NULL || w->tmp_path == NULL) {
        npy_writer_release(w, 0);
        return npy_fail(err, errlen, path, "out of memory");
    }
    memcpy(w->path, path, plen + 1);

    /* O_EXCL on fresh names: safe like mkstemp, but honours the umask. */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w ^
                    (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    int fd = -1;
    int e = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        uint64_t v = npy_mix(seed + (uint64_t)attempt);
        char suffix[7];
        for (int k = 0; k < 6; k++, v /= 36)
            suffix[k] = alphabet[v % 36];
        suffix[6] = '\0';
        snprintf(w->tmp_path, plen + sizeof ".tmp.XXXXXX", "%s.tmp.%s", path,
                 suffix);
        fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        e = errno;
        if (fd < 0 && e != EEXIST)
            break;
    }
    if (fd < 0) {
        npy_fail(err, errlen, path, "cannot create temporary file %s: %s",
                 w->tmp_path, strerror(e));
        free(w->tmp_path);
        w->tmp_path = NULL; /* not ours: do not unlink */
        npy_writer_release(w, 0);
        return -1;
    }
    w->fd = fd;
    w->active = 1;
    w->dtype = dtype;
    w->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        w->shape[d] = shape[d];
    w->expected = (uint64_t)count * xent_npy_itemsize(dtype);
    w->written = 0;
    if (npy_write_all(fd, header, hsize) != 0) {
        e = errno;
        npy_writer_release(w, 1);
        return npy_fail(err, errlen, path, "cannot write: %s", strerror(e));
    }
    return 0;
}

int xent_npy_writer_write(xent_npy_writer *w, const void *data, size_t nbytes,
                          char *err, size_t errlen)
{
    if (w == NULL || !w->active)
        return npy_fail(err, errlen, w != NULL ? w->path : NULL,
                        "writer is not open");
    if (nbytes == 0)
        return 0;
    if (data == NULL) {
        int rc = npy_fail(err, errlen, w->path, "no data given");
        xent_npy_writer_abort(w);
        return rc;
    }
    if ((uint64_t)nbytes > w->expected - w->written) {
        char shape_str[256];
        xent_npy_format_shape(w->ndim, w->shape, shape_str, sizeof shape_str);
        int rc = npy_fail(err, errlen, w->path,
                          "more data than shape %s of %s holds (%llu bytes)",
                          shape_str, xent_npy_dtype_name(w->dtype),
                          (unsigned long long)w->expected);
        xent_npy_writer_abort(w);
        return rc;
    }
    if (npy_write_all(w->fd, data, nbytes) != 0) {
        int rc =
            npy_fail(err, errlen, w->path, "cannot write: %s", strerror(errno));
        xent_npy_writer_abort(w);
        return rc;
    }
    w->written += nbytes;
    return 0;
}

int xent_npy_writer_commit(xent_npy_writer *w, char *err, size_t errlen)
{
    if (w == NULL || !w->active)
        return npy_fail(err, errlen, w != NULL ? w->path : NULL,
                        "writer is not open");
    if (w->written != w->expected) {
        char shape_str[256];
        xent_npy_format_shape(w->ndim, w->shape, shape_str, sizeof shape_str);
        int rc = npy_fail(err, errlen, w->path,
                          "incomplete output: wrote %llu of the %llu bytes "
                          "that shape %s of %s needs",
                          (unsigned long long)w->written,
                          (unsigned long long)w->expected, shape_str,
                          xent_npy_dtype_name(w->dtype));
        xent_npy_writer_abort(w);
        return rc;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        int rc =
            npy_fail(err, errlen, w->path, "cannot write: %s", strerror(errno));
        xent_npy_writer_abort(w);
        return rc;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        int rc = npy_fail(err, errlen, w->path, "cannot rename %s: %s",
                          w->tmp_path, strerror(errno));
        xent_npy_writer_abort(w);
        return rc;
    }
    npy_writer_release(w, 0);
    return 0;
}

void xent_npy_writer_abort(xent_npy_writer *w)
{
    if (w == NULL || !w->active)
        return;
    npy_writer_release(w, 1);
}

int xent_npy_write(const char *path, xent_npy_dtype dtype, int ndim,
                   const int64_t *shape, const void *data, char *err,
                   size_t errlen)
{
    xent_npy_writer w;
    if (xent_npy_writer_open(&w, path, dtype, ndim, shape, err, errlen) != 0)
        return -1;
    if (w.expected > (uint64_t)SIZE_MAX) {
        xent_npy_writer_abort(&w);
        return npy_fail(err, errlen, path, "array too large for this platform");
    }
    if (xent_npy_writer_write(&w, data, (size_t)w.expected, err, errlen) != 0)
        return -1;
    return xent_npy_writer_commit(&w, err, errlen);
}
