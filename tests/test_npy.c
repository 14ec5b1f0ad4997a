/*
 * test_npy.c - Criterion tests for the .npy reader/writer (host/npy.c).
 *
 * Images are built by hand (prefix, header text, data) so that every version,
 * header spelling and malformation is exercised without numpy. Files live in
 * a per-test mkdtemp directory that the suite's fini removes.
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npy.h"

/* ------------------------------------------------------------------------ */
/* Fixture: a temporary directory per test                                   */
/* ------------------------------------------------------------------------ */

static char g_dir[512];

static void dir_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/xent_npy_test.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(g_dir), "mkdtemp failed");
}

static void dir_teardown(void)
{
    DIR *d = opendir(g_dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(g_dir);
}

TestSuite(npy, .init = dir_setup, .fini = dir_teardown);

/* path_in - g_dir/name in a static buffer (one at a time per slot). */
static const char *path_in(const char *name, int slot)
{
    static char buf[4][1024];
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_dir, name);
    return buf[slot];
}

/* dir_entries - number of entries in g_dir besides . and .. */
static int dir_entries(void)
{
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* read_bytes - the whole file into buf [cap]; returns its size. */
static size_t read_bytes(const char *path, void *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Building images                                                           */
/* ------------------------------------------------------------------------ */

enum { IMG_CAP = 1 << 17 };

/*
 * build_raw - magic, version major.minor, header length field, the header
 * text exactly as given (hlen bytes), then n data bytes. Returns the size.
 */
static size_t build_raw(unsigned char *out, int major, int minor,
                        const char *header, size_t hlen, const void *data,
                        size_t n)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    size_t prefix = major == 1 ? 10 : 12;
    cr_assert_leq(prefix + hlen + n, (size_t)IMG_CAP);
    memcpy(out, magic, 6);
    out[6] = (unsigned char)major;
    out[7] = (unsigned char)minor;
    out[8] = (unsigned char)(hlen & 0xff);
    out[9] = (unsigned char)(hlen >> 8 & 0xff);
    if (prefix == 12) {
        out[10] = (unsigned char)(hlen >> 16 & 0xff);
        out[11] = (unsigned char)(hlen >> 24 & 0xff);
    }
    memcpy(out + prefix, header, hlen);
    if (n > 0)
        memcpy(out + prefix + hlen, data, n);
    return prefix + hlen + n;
}

/*
 * build - as build_raw, with dict padded by spaces and a final '\n' so the
 * data start at a multiple of align (1: no padding).
 */
static size_t build(unsigned char *out, int major, const char *dict,
                    size_t align, const void *data, size_t n)
{
    char header[IMG_CAP];
    size_t prefix = major == 1 ? 10 : 12;
    size_t len = strlen(dict);
    size_t total = (prefix + len + 1 + align - 1) / align * align;
    size_t hlen = total - prefix;
    cr_assert_lt(hlen, sizeof header);
    memcpy(header, dict, len);
    memset(header + len, ' ', hlen - len - 1);
    header[hlen - 1] = '\n';
    return build_raw(out, major, 0, header, hlen, data, n);
}

/* A zeroed data block big enough for every test shape. */
static const unsigned char g_zeros[4096];

/* parse_ok - parses img [len] as "Z.npy", asserting success. */
static xent_npy_header parse_ok(const unsigned char *img, size_t len,
                                unsigned flags)
{
    xent_npy_header h;
    char err[512] = "";
    int rc = xent_npy_parse(img, len, "Z.npy", flags, &h, err, sizeof err);
    cr_assert_eq(rc, 0, "unexpected rejection: %s", err);
    return h;
}

/* expect_reject - parse must fail with a one-line message naming Z.npy and
 * containing `what`. */
static void expect_reject(const unsigned char *img, size_t len, unsigned flags,
                          const char *what)
{
    xent_npy_header h;
    char err[512] = "";
    int rc = xent_npy_parse(img, len, "Z.npy", flags, &h, err, sizeof err);
    cr_assert_eq(rc, -1, "accepted, expected an error with \"%s\"", what);
    cr_assert(strncmp(err, "Z.npy: ", 7) == 0, "message lacks the name: %s",
              err);
    cr_assert_not_null(strstr(err, what), "message \"%s\" lacks \"%s\"", err,
                       what);
    cr_assert_null(strchr(err, '\n'), "message is not one line: %s", err);
}

/* reject_dict - a padded v1 image of dict with nbytes of data must fail. */
static void reject_dict(const char *dict, size_t nbytes, const char *what)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(img, 1, dict, 64, g_zeros, nbytes);
    expect_reject(img, len, 0, what);
}

/* ------------------------------------------------------------------------ */
/* Parsing: versions, dtypes, header spellings, shapes                       */
/* ------------------------------------------------------------------------ */

struct dtype_case {
    const char *descr;
    xent_npy_dtype dtype;
    size_t itemsize;
};

static const struct dtype_case g_dtypes[] = {
    {"<f4", XENT_NPY_DTYPE_F32, 4}, {"<f2", XENT_NPY_DTYPE_F16, 2},
    {"<f8", XENT_NPY_DTYPE_F64, 8}, {"<i4", XENT_NPY_DTYPE_I32, 4},
    {"<i8", XENT_NPY_DTYPE_I64, 8},
};

static void check_all_dtypes(int major)
{
    static unsigned char img[IMG_CAP];
    unsigned char data[48];
    for (size_t k = 0; k < sizeof data; k++)
        data[k] = (unsigned char)(k * 7 + 1);
    for (size_t t = 0; t < sizeof g_dtypes / sizeof g_dtypes[0]; t++) {
        char dict[128];
        snprintf(dict, sizeof dict,
                 "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3), }",
                 g_dtypes[t].descr);
        size_t n = 6 * g_dtypes[t].itemsize;
        size_t len = build(img, major, dict, 64, data, n);
        xent_npy_header h = parse_ok(img, len, 0);
        cr_assert_eq(h.version_major, major);
        cr_assert_eq(h.version_minor, 0);
        cr_assert_eq(h.dtype, g_dtypes[t].dtype, "%s", g_dtypes[t].descr);
        cr_assert_eq(h.itemsize, g_dtypes[t].itemsize);
        cr_assert_eq(h.ndim, 2);
        cr_assert_eq(h.shape[0], 2);
        cr_assert_eq(h.shape[1], 3);
        cr_assert_eq(h.count, 6);
        cr_assert_eq(h.data_offset, 128u);
        cr_assert_eq(h.data_size, n);
        cr_assert_eq(memcmp(img + h.data_offset, data, n), 0);

        /* The same image through a file: mapped data equal the input. */
        const char *path = path_in("v.npy", 0);
        write_bytes(path, img, len);
        xent_npy a;
        char err[1100];
        cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
        cr_assert_eq(a.header.version_major, major);
        cr_assert_eq(a.header.dtype, g_dtypes[t].dtype);
        cr_assert_eq(a.nbytes, n);
        cr_assert_eq(memcmp(a.data, data, n), 0);
        xent_npy_close(&a);
    }
}

Test(npy, parse_version_1_0_every_dtype)
{
    check_all_dtypes(1);
}

Test(npy, parse_version_2_0_every_dtype)
{
    check_all_dtypes(2);
}

Test(npy, parse_version_3_0_every_dtype)
{
    check_all_dtypes(3);
}

Test(npy, parse_version_2_0_long_header)
{
    /* A 2.0 header longer than 1.0's 65535-byte limit. */
    static unsigned char img[IMG_CAP];
    const char *dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
    size_t len = build(img, 2, dict, 70000, g_zeros, 12);
    xent_npy_header h = parse_ok(img, len, 0);
    cr_assert_eq(h.data_offset, 70000u);
    cr_assert_eq(h.count, 3);
}

Test(npy, parse_header_spellings)
{
    static const char *const dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'shape': (2, 3), 'descr': '<f4', 'fortran_order': False}",
        "{'fortran_order':False,'shape':(2,3),'descr':'<f4'}",
        "{ 'descr' : '<f4' , 'fortran_order' :False, 'shape' : ( 2 , 3 , ) , }",
        "{\t'descr':\t'<f4',\t'fortran_order': False, 'shape': (2, 3)}",
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
        "  {'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), }  ",
        "{'descr': '|f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': 'f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4',\r\n 'fortran_order': False, 'shape': (2, 3), }",
    };
    static unsigned char img[IMG_CAP];
    static const size_t aligns[] = {64, 16, 1};
    for (size_t a = 0; a < 3; a++) {
        for (size_t k = 0; k < sizeof dicts / sizeof dicts[0]; k++) {
            size_t len = build(img, 1, dicts[k], aligns[a], g_zeros, 24);
            xent_npy_header h;
            char err[512] = "";
            int rc = xent_npy_parse(img, len, "Z.npy", 0, &h, err, sizeof err);
            cr_assert_eq(rc, 0, "dict %zu (align %zu) rejected: %s", k,
                         aligns[a], err);
            cr_assert_eq(h.dtype, XENT_NPY_DTYPE_F32);
            cr_assert_eq(h.ndim, 2);
            cr_assert_eq(h.shape[0], 2);
            cr_assert_eq(h.shape[1], 3);
            cr_assert_eq(h.data_offset % aligns[a], 0u);
        }
    }
}

struct shape_case {
    const char *text;
    int ndim;
    int64_t dims[XENT_NPY_MAX_DIMS];
    int64_t count;
};

Test(npy, parse_shapes)
{
    static const struct shape_case cases[] = {
        {"()", 0, {0}, 1},
        {"(5,)", 1, {5}, 5},
        {"(2, 3)", 2, {2, 3}, 6},
        {"(2, 3, 4)", 3, {2, 3, 4}, 24},
        {"(1, 1, 1, 1, 1, 1, 1, 7)", 8, {1, 1, 1, 1, 1, 1, 1, 7}, 7},
        {"(0,)", 1, {0}, 0},
        {"(0, 7)", 2, {0, 7}, 0},
        {"(7, 0)", 2, {7, 0}, 0},
        {"(0, 281474976710656)", 2, {0, (int64_t)1 << 48}, 0},
    };
    static unsigned char img[IMG_CAP];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char dict[160];
        snprintf(dict, sizeof dict,
                 "{'descr': '<i4', 'fortran_order': False, 'shape': %s, }",
                 cases[k].text);
        size_t n = (size_t)cases[k].count * 4;
        size_t len = build(img, 1, dict, 64, g_zeros, n);
        xent_npy_header h = parse_ok(img, len, 0);
        cr_assert_eq(h.ndim, cases[k].ndim, "%s", cases[k].text);
        cr_assert_eq(h.count, cases[k].count, "%s", cases[k].text);
        cr_assert_eq(h.data_size, n);
        for (int d = 0; d < h.ndim; d++)
            cr_assert_eq(h.shape[d], cases[k].dims[d], "%s", cases[k].text);
        for (int d = h.ndim; d < XENT_NPY_MAX_DIMS; d++)
            cr_assert_eq(h.shape[d], 0);
        char back[128];
        xent_npy_format_shape(h.ndim, h.shape, back, sizeof back);
        cr_assert_str_eq(back, cases[k].text);
    }
}

Test(npy, parse_fortran_order_with_c_layout_is_accepted)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (5,), }", 64,
        g_zeros, 20);
    xent_npy_header h = parse_ok(img, len, 0);
    cr_assert_eq(h.fortran_order, 1);
    len = build(img, 1,
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 5), }",
                64, g_zeros, 20);
    parse_ok(img, len, 0);
}

Test(npy, parse_v3_allows_utf8_but_v1_does_not)
{
    /* "é" inside the descr string: v3 reaches the dtype check, v1 stops at
     * the byte check. */
    static unsigned char img[IMG_CAP];
    const char *dict =
        "{'descr': '<f\xc3\xa9', 'fortran_order': False, 'shape': (1,), }";
    size_t len = build(img, 3, dict, 64, g_zeros, 4);
    expect_reject(img, len, 0, "unsupported dtype '<f?\?'");
    len = build(img, 1, dict, 64, g_zeros, 4);
    expect_reject(img, len, 0, "header is not ASCII (byte 0xc3 at offset 23)");
}

/* ------------------------------------------------------------------------ */
/* bfloat16 flag                                                             */
/* ------------------------------------------------------------------------ */

Test(npy, bf16_flag_reads_two_byte_data_as_bf16)
{
    static const char *const descrs[] = {"<f2", "<u2", "<i2",
                                         "|V2", "<V2", "=u2"};
    static unsigned char img[IMG_CAP];
    for (size_t k = 0; k < sizeof descrs / sizeof descrs[0]; k++) {
        char dict[128];
        snprintf(dict, sizeof dict,
                 "{'descr': '%s', 'fortran_order': False, 'shape': (4,), }",
                 descrs[k]);
        size_t len = build(img, 1, dict, 64, g_zeros, 8);
        xent_npy_header h = parse_ok(img, len, XENT_NPY_READ_BF16);
        cr_assert_eq(h.dtype, XENT_NPY_DTYPE_BF16, "%s", descrs[k]);
        cr_assert_eq(h.itemsize, 2u);
        cr_assert_eq(h.data_size, 8u);
    }
}

Test(npy, bf16_flag_unset)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", 64,
        g_zeros, 8);
    cr_assert_eq(parse_ok(img, len, 0).dtype, XENT_NPY_DTYPE_F16);
    static const char *const others[] = {"<u2", "<i2", "|V2"};
    for (size_t k = 0; k < 3; k++) {
        char dict[128];
        snprintf(dict, sizeof dict,
                 "{'descr': '%s', 'fortran_order': False, 'shape': (4,), }",
                 others[k]);
        len = build(img, 1, dict, 64, g_zeros, 8);
        expect_reject(img, len, 0, "bfloat16 on request");
    }
    /* The flag does not change other dtypes. */
    len = build(img, 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 64,
                g_zeros, 8);
    cr_assert_eq(parse_ok(img, len, XENT_NPY_READ_BF16).dtype,
                 XENT_NPY_DTYPE_F32);
}

Test(npy, bf16_file_converts)
{
    /* 1.0, -2.0, 0.5 as bfloat16, read through the file path. */
    static unsigned char img[IMG_CAP];
    const uint16_t bits[3] = {0x3f80, 0xc000, 0x3f00};
    size_t len = build(
        img, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }", 64,
        bits, sizeof bits);
    const char *path = path_in("bf.npy", 0);
    write_bytes(path, img, len);
    xent_npy a;
    char err[512];
    cr_assert_eq(xent_npy_open(&a, path, XENT_NPY_READ_BF16, err, sizeof err),
                 0, "%s", err);
    float f[3];
    xent_npy_to_f32(a.header.dtype, a.data, f, 3);
    cr_assert(f[0] == 1.0f && f[1] == -2.0f && f[2] == 0.5f);
    xent_npy_close(&a);
}

/* ------------------------------------------------------------------------ */
/* Rejections                                                                */
/* ------------------------------------------------------------------------ */

Test(npy, reject_bad_magic)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 64,
        g_zeros, 4);
    img[1] = 'n';
    expect_reject(img, len, 0, "not an NPY file (bad magic");
    expect_reject((const unsigned char *)"PK\3\4", 4, 0, "not an NPY file");
    expect_reject((const unsigned char *)"\x93NUM", 4, 0, "truncated header");
    expect_reject((const unsigned char *)"", 0, 0, "empty file");
}

Test(npy, reject_unsupported_version)
{
    static unsigned char img[IMG_CAP];
    const char *dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
    size_t len = build_raw(img, 4, 0, dict, strlen(dict), g_zeros, 4);
    expect_reject(img, len, 0, "unsupported NPY format version 4.0");
    len = build_raw(img, 1, 1, dict, strlen(dict), g_zeros, 4);
    expect_reject(img, len, 0, "unsupported NPY format version 1.1");
    len = build_raw(img, 0, 0, dict, strlen(dict), g_zeros, 4);
    expect_reject(img, len, 0, "unsupported NPY format version 0.0");
}

Test(npy, reject_fortran_order)
{
    reject_dict("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                24, "Fortran-order arrays are not supported");
}

Test(npy, reject_big_endian)
{
    reject_dict("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
                "big-endian data ('>f4') is not supported");
    reject_dict("{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", 16,
                "big-endian");
}

Test(npy, reject_object_arrays)
{
    reject_dict("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16,
                "object arrays ('|O') are not supported");
}

Test(npy, reject_unsupported_dtypes)
{
    static const char *const descrs[] = {
        "<c8", "<u4", "|u1", "|b1",  "<i2", "<M8[ns]", "<U10",
        "",    "<f",  "f4x", "<f16", "|S3", "<f00004"};
    for (size_t k = 0; k < sizeof descrs / sizeof descrs[0]; k++) {
        char dict[128];
        snprintf(dict, sizeof dict,
                 "{'descr': '%s', 'fortran_order': False, 'shape': (1,), }",
                 descrs[k]);
        reject_dict(dict, 4, "unsupported dtype");
    }
}

Test(npy, reject_structured_dtype)
{
    reject_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': "
                "(1,), }",
                4, "structured dtypes are not supported");
}

Test(npy, reject_truncated_header)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 64,
        g_zeros, 0);
    expect_reject(img, 40, 0, "truncated header: it declares 118 bytes");
    expect_reject(img, 9, 0, "truncated header");
    expect_reject(img, 7, 0, "truncated header");
    len = build(img, 2,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 64,
                g_zeros, 0);
    expect_reject(img, 11, 0, "truncated header");
    /* A 4-byte length far beyond the file. */
    img[11] = 0x7f;
    expect_reject(img, len, 0, "truncated header");
}

Test(npy, reject_header_without_newline)
{
    static unsigned char img[IMG_CAP];
    const char *h =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }     ";
    size_t len = build_raw(img, 1, 0, h, strlen(h), g_zeros, 4);
    expect_reject(img, len, 0, "header does not end with a newline");
    len = build_raw(img, 1, 0, "", 0, NULL, 0);
    expect_reject(img, len, 0, "header does not end with a newline");
}

Test(npy, reject_non_ascii_and_control_bytes)
{
    static unsigned char img[IMG_CAP];
    const char *dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
    size_t len = build(img, 1, dict, 64, g_zeros, 4);
    img[10 + 60] = 0xff; /* in the padding */
    expect_reject(img, len, 0, "header is not ASCII (byte 0xff at offset 70)");
    len = build(img, 2, dict, 64, g_zeros, 4);
    img[12 + 60] = 0x80;
    expect_reject(img, len, 0, "header is not ASCII");
    len = build(img, 1, dict, 64, g_zeros, 4);
    img[10 + 59] = '\0';
    expect_reject(img, len, 0, "header contains control character 0x00");
    len = build(img, 3, dict, 64, g_zeros, 4);
    img[12 + 5] = 0x1b;
    expect_reject(img, len, 0, "control character 0x1b at offset 17");
}

Test(npy, reject_truncated_data)
{
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                20,
                "truncated data: shape (2, 3) of float32 needs 24 bytes, "
                "the file has 20");
    reject_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", 0,
                "truncated data");
}

Test(npy, reject_trailing_data)
{
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                25,
                "trailing data after the array: shape (2, 3) of "
                "float32 needs 24 bytes, the file has 25");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }", 4,
                "trailing data");
}

Test(npy, reject_negative_dimension)
{
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0,
                "negative dimension in shape");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }",
                0, "negative dimension in shape");
}

Test(npy, reject_absurd_shapes)
{
    /* One dimension beyond int64 and beyond 2^48. */
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(99999999999999999999999999,), }",
                0, "exceeds 2^48");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(281474976710657,), }",
                0, "dimension 0 of the shape exceeds 2^48");
    /* Products overflowing 2^48, int64 and size_t. */
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(16777217, 16777216), }",
                0, "more than 2^48 elements");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(65536, 65536, 65536, 65536, 65536), }",
                0, "more than 2^48 elements");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(281474976710656, 281474976710656), }",
                0, "more than 2^48 elements");
    /* Exactly 2^48 is a valid shape, but then the data are missing. */
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(16777216, 16777216), }",
                0, "truncated data");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                "(1, 1, 1, 1, 1, 1, 1, 1, 1), }",
                4, "shape has more than 8 dimensions");
}

Test(npy, reject_keys)
{
    reject_dict("{'descr': '<f4', 'shape': (1,), }", 4,
                "the header lacks the 'fortran_order' key");
    reject_dict("{'fortran_order': False, 'shape': (1,), }", 4,
                "lacks the 'descr' key");
    reject_dict("{'descr': '<f4', 'fortran_order': False, }", 4,
                "lacks the 'shape' key");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), "
                "'shape': (1,), }",
                4, "key 'shape' appears twice");
    reject_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), "
                "'extra': 1, }",
                4, "unexpected key 'extra' in the header");
    reject_dict("{}", 0, "lacks the 'descr' key");
}

Test(npy, reject_malformed_headers)
{
    static const char *const dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [1], }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': 1, }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1 2), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1x,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1_0,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (+1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }}",
        "{'descr': '<f4', 'fortran_order': False 'shape': (1,), }",
        "{'descr' '<f4', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4, 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': 'False', 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
        "{descr: '<f4', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', , 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } # c",
        "dict(descr='<f4', fortran_order=False, shape=(1,))",
        "('descr', '<f4')",
        "",
    };
    for (size_t k = 0; k < sizeof dicts / sizeof dicts[0]; k++)
        reject_dict(dicts[k], 4, "malformed header: ");
}

Test(npy, messages_are_one_line_and_sanitised)
{
    /* A name with a newline and an unknown key with a tab stay on one line. */
    static unsigned char img[IMG_CAP];
    size_t len = build(img, 1,
                       "{'descr': '<f4', 'fortran_order': False, "
                       "'shape': (1,), 'a\tb': 1}",
                       64, g_zeros, 4);
    xent_npy_header h;
    char err[512];
    cr_assert_eq(
        xent_npy_parse(img, len, "bad\nname.npy", 0, &h, err, sizeof err), -1);
    cr_assert_str_eq(err, "bad?name.npy: unexpected key 'a?b' in the header");
    /* A tiny buffer is truncated but still terminated. */
    char small[8];
    cr_assert_eq(xent_npy_parse(img, 3, "Z.npy", 0, &h, small, sizeof small),
                 -1);
    cr_assert_eq(strlen(small), 7u);
    cr_assert_eq(xent_npy_parse(img, 3, "Z.npy", 0, &h, NULL, 0), -1);
}

/* ------------------------------------------------------------------------ */
/* Opening files                                                             */
/* ------------------------------------------------------------------------ */

Test(npy, open_maps_the_data)
{
    static unsigned char img[IMG_CAP];
    float data[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 42.0f};
    size_t len = build(
        img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        64, data, sizeof data);
    const char *path = path_in("X.npy", 0);
    write_bytes(path, img, len);
    xent_npy a;
    char err[512];
    cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(a.nbytes, sizeof data);
    cr_assert_eq(a.header.data_offset, 128u);
    cr_assert_eq(memcmp(a.data, data, sizeof data), 0);
    cr_assert_str_eq(a.path, path);
    float back[6];
    xent_npy_to_f32(a.header.dtype, a.data, back, 6);
    cr_assert_eq(memcmp(back, data, sizeof data), 0);
    xent_npy_close(&a);
    cr_assert_null(a.data);
    xent_npy_close(&a); /* twice is harmless */
    xent_npy_close(NULL);
}

Test(npy, open_empty_array_has_data_pointer)
{
    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (0, 9), }",
        64, NULL, 0);
    const char *path = path_in("E.npy", 0);
    write_bytes(path, img, len);
    xent_npy a;
    char err[512];
    cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
    cr_assert_not_null(a.data);
    cr_assert_eq(a.nbytes, 0u);
    cr_assert_eq(a.header.count, 0);
    cr_assert_eq(a.header.shape[1], 9);
    xent_npy_close(&a);
}

Test(npy, open_errors_name_the_file)
{
    xent_npy a;
    char err[512];
    const char *missing = path_in("missing.npy", 0);
    cr_assert_eq(xent_npy_open(&a, missing, 0, err, sizeof err), -1);
    cr_assert(strncmp(err, missing, strlen(missing)) == 0, "%s", err);
    cr_assert_not_null(strstr(err, ": cannot open: "), "%s", err);
    cr_assert_null(a.data);
    xent_npy_close(&a);

    cr_assert_eq(xent_npy_open(&a, g_dir, 0, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);

    const char *empty = path_in("empty.npy", 1);
    write_bytes(empty, "", 0);
    cr_assert_eq(xent_npy_open(&a, empty, 0, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "empty.npy: empty file"), "%s", err);

    static unsigned char img[IMG_CAP];
    size_t len = build(
        img, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
        64, g_zeros, 24);
    const char *fort = path_in("Z.npy", 2);
    write_bytes(fort, img, len);
    cr_assert_eq(xent_npy_open(&a, fort, 0, err, sizeof err), -1);
    char want[1100];
    snprintf(want, sizeof want, "%s: Fortran-order arrays are not supported",
             fort);
    cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
}

/* ------------------------------------------------------------------------ */
/* Rank and dtype expectations                                               */
/* ------------------------------------------------------------------------ */

static xent_npy_header make_header(xent_npy_dtype dtype, int ndim, int64_t d0,
                                   int64_t d1)
{
    xent_npy_header h;
    memset(&h, 0, sizeof h);
    h.dtype = dtype;
    h.ndim = ndim;
    h.shape[0] = d0;
    h.shape[1] = d1;
    return h;
}

Test(npy, expect_messages)
{
    char err[512];
    xent_npy_header h = make_header(XENT_NPY_DTYPE_F32, 2, 3, 4);
    cr_assert_eq(xent_npy_expect_header(&h, "T.npy", 1, 1, XENT_NPY_MASK_INT,
                                        err, sizeof err),
                 -1);
    cr_assert_str_eq(err, "T.npy: expected a 1-D array of int32 or int64, got "
                          "float32 of shape (3, 4)");
    h = make_header(XENT_NPY_DTYPE_I64, 1, 5, 0);
    cr_assert_eq(xent_npy_expect_header(&h, "L.npy", 2, 2, XENT_NPY_MASK_FLOAT,
                                        err, sizeof err),
                 -1);
    cr_assert_str_eq(err, "L.npy: expected a 2-D array of float16, bfloat16, "
                          "float32 or float64, got int64 of shape (5,)");
    h = make_header(XENT_NPY_DTYPE_F16, 0, 0, 0);
    cr_assert_eq(xent_npy_expect_header(&h, "W.npy", 1, 2,
                                        XENT_NPY_MASK(XENT_NPY_DTYPE_F32), err,
                                        sizeof err),
                 -1);
    cr_assert_str_eq(err, "W.npy: expected a 1-D or 2-D array of float32, got "
                          "float16 of shape ()");
    h = make_header(XENT_NPY_DTYPE_F64, 2, 2, 2);
    cr_assert_eq(xent_npy_expect_header(&h, "A.npy", 0, 1, XENT_NPY_MASK_ALL,
                                        err, sizeof err),
                 -1);
    cr_assert_str_eq(err, "A.npy: expected a 0-D or 1-D array, got float64 of "
                          "shape (2, 2)");
    cr_assert_eq(xent_npy_expect_header(&h, "A.npy", 0, 3, XENT_NPY_MASK_INT,
                                        err, sizeof err),
                 -1);
    cr_assert_str_eq(err, "A.npy: expected an array of 0 to 3 dimensions of "
                          "int32 or int64, got float64 of shape (2, 2)");
}

Test(npy, expect_accepts)
{
    char err[512] = "";
    xent_npy_header h = make_header(XENT_NPY_DTYPE_BF16, 2, 3, 4);
    cr_assert_eq(xent_npy_expect_header(&h, "X.npy", 2, 2, XENT_NPY_MASK_FLOAT,
                                        err, sizeof err),
                 0);
    cr_assert_eq(xent_npy_expect_header(&h, "X.npy", 1, 2,
                                        XENT_NPY_MASK(XENT_NPY_DTYPE_BF16), err,
                                        sizeof err),
                 0);
    h = make_header(XENT_NPY_DTYPE_I32, 1, 3, 0);
    cr_assert_eq(xent_npy_expect_header(&h, "T.npy", 1, 1, XENT_NPY_MASK_INT,
                                        err, sizeof err),
                 0);
}

Test(npy, expect_on_opened_file_names_it)
{
    int64_t shape[2] = {3, 4};
    float data[12] = {0};
    const char *path = path_in("T.npy", 0);
    char err[1100];
    cr_assert_eq(xent_npy_write(path, XENT_NPY_DTYPE_F32, 2, shape, data, err,
                                sizeof err),
                 0, "%s", err);
    xent_npy a;
    cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(xent_npy_expect(&a, 1, 1, XENT_NPY_MASK_INT, err, sizeof err),
                 -1);
    char want[1100];
    snprintf(want, sizeof want,
             "%s: expected a 1-D array of int32 or int64, "
             "got float32 of shape (3, 4)",
             path);
    cr_assert_str_eq(err, want);
    cr_assert_eq(
        xent_npy_expect(&a, 2, 2, XENT_NPY_MASK_FLOAT, err, sizeof err), 0);
    xent_npy_close(&a);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

Test(npy, encode_header_matches_numpy)
{
    /* np.save(f, np.zeros((2, 3), np.float32)) writes exactly this. */
    unsigned char buf[XENT_NPY_MAX_HEADER_BYTES];
    int64_t shape[2] = {2, 3};
    size_t n =
        xent_npy_encode_header(XENT_NPY_DTYPE_F32, 2, shape, buf, sizeof buf);
    cr_assert_eq(n, 128u);
    char want[129];
    memcpy(want, "\x93NUMPY\x01\x00v\x00", 10);
    const char *dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    memcpy(want + 10, dict, strlen(dict));
    memset(want + 10 + strlen(dict), ' ', 128 - 10 - strlen(dict) - 1);
    want[127] = '\n';
    cr_assert_eq(memcmp(buf, want, 128), 0);
    /* Size query, too-small buffer, invalid input. */
    cr_assert_eq(xent_npy_encode_header(XENT_NPY_DTYPE_F32, 2, shape, NULL, 0),
                 128u);
    cr_assert_eq(
        xent_npy_encode_header(XENT_NPY_DTYPE_BF16, 2, shape, buf, sizeof buf),
        0u);
    int64_t neg[1] = {-1};
    cr_assert_eq(
        xent_npy_encode_header(XENT_NPY_DTYPE_F32, 1, neg, buf, sizeof buf),
        0u);
    int64_t big[8] = {1 << 7, 1 << 6, 1 << 6, 1 << 6,
                      1 << 6, 1 << 6, 1 << 6, 1 << 6};
    cr_assert_eq(
        xent_npy_encode_header(XENT_NPY_DTYPE_F32, 8, big, buf, sizeof buf),
        0u);
    int64_t scalar_shape[1] = {0};
    cr_assert_eq(xent_npy_encode_header(XENT_NPY_DTYPE_I64, 0, scalar_shape,
                                        buf, sizeof buf),
                 128u);
    cr_assert_not_null(strstr((char *)buf + 10, "'shape': (), }"));
}

struct write_case {
    int ndim;
    int64_t shape[3];
};

Test(npy, write_read_round_trip_every_dtype_and_shape)
{
    static const xent_npy_dtype dtypes[] = {
        XENT_NPY_DTYPE_F32, XENT_NPY_DTYPE_F64, XENT_NPY_DTYPE_I32,
        XENT_NPY_DTYPE_I64, XENT_NPY_DTYPE_F16};
    static const struct write_case shapes[] = {
        {0, {0}}, {1, {5}},    {2, {2, 3}}, {3, {2, 3, 4}},
        {1, {0}}, {2, {0, 4}}, {2, {4, 0}},
    };
    unsigned char data[8 * 24];
    for (size_t k = 0; k < sizeof data; k++)
        data[k] = (unsigned char)(k * 13 + 5);
    char err[1100];
    for (size_t t = 0; t < sizeof dtypes / sizeof dtypes[0]; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const char *path = path_in("rt.npy", 0);
            cr_assert_eq(xent_npy_write(path, dtypes[t], shapes[s].ndim,
                                        shapes[s].shape, data, err, sizeof err),
                         0, "%s", err);
            xent_npy a;
            cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s",
                         err);
            cr_assert_eq(a.header.version_major, 1);
            cr_assert_eq(a.header.dtype, dtypes[t]);
            cr_assert_eq(a.header.ndim, shapes[s].ndim);
            int64_t count = 1;
            for (int d = 0; d < shapes[s].ndim; d++) {
                cr_assert_eq(a.header.shape[d], shapes[s].shape[d]);
                count *= shapes[s].shape[d];
            }
            cr_assert_eq(a.header.count, count);
            cr_assert_eq(a.header.data_offset % 64, 0u);
            cr_assert_eq(a.nbytes,
                         (size_t)count * xent_npy_itemsize(dtypes[t]));
            cr_assert_eq(memcmp(a.data, data, a.nbytes), 0);
            xent_npy_close(&a);
            cr_assert_eq(dir_entries(), 1, "stray files after a write");
        }
    }
}

Test(npy, writer_streams_chunks)
{
    const char *path = path_in("S.npy", 0);
    int64_t shape[2] = {10, 7};
    int32_t data[70];
    for (int k = 0; k < 70; k++)
        data[k] = k * k - 1000;
    xent_npy_writer w;
    char err[1100];
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_I32, 2, shape,
                                      err, sizeof err),
                 0, "%s", err);
    for (int row = 0; row < 10; row += 3) {
        int rows = row + 3 <= 10 ? 3 : 10 - row;
        cr_assert_eq(xent_npy_writer_write(&w, data + row * 7,
                                           (size_t)rows * 7 * 4, err,
                                           sizeof err),
                     0, "%s", err);
    }
    cr_assert_eq(xent_npy_writer_write(&w, NULL, 0, err, sizeof err), 0);
    cr_assert_eq(xent_npy_writer_commit(&w, err, sizeof err), 0, "%s", err);
    cr_assert_eq(w.active, 0);
    xent_npy a;
    cr_assert_eq(xent_npy_open(&a, path, 0, err, sizeof err), 0, "%s", err);
    int64_t back[70];
    cr_assert_eq(xent_npy_to_i64(a.header.dtype, a.data, back, 70), 0);
    for (int k = 0; k < 70; k++)
        cr_assert_eq(back[k], data[k]);
    xent_npy_close(&a);
    /* Calls after commit fail cleanly; abort is a no-op. */
    cr_assert_eq(xent_npy_writer_write(&w, data, 4, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "writer is not open"));
    cr_assert_eq(xent_npy_writer_commit(&w, err, sizeof err), -1);
    xent_npy_writer_abort(&w);
    xent_npy_writer_abort(NULL);
    cr_assert_eq(dir_entries(), 1);
}

Test(npy, writer_abort_leaves_no_file)
{
    const char *path = path_in("A.npy", 0);
    int64_t shape[1] = {4};
    float data[4] = {1, 2, 3, 4};
    xent_npy_writer w;
    char err[1100];
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F32, 1, shape,
                                      err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(xent_npy_writer_write(&w, data, 8, err, sizeof err), 0);
    cr_assert_eq(dir_entries(), 1, "the temporary file should exist");
    cr_assert_not_null(strstr(w.tmp_path, "A.npy.tmp."));
    xent_npy_writer_abort(&w);
    cr_assert_eq(dir_entries(), 0, "abort left a file");
    cr_assert_eq(access(path, F_OK), -1);
    xent_npy_writer_abort(&w); /* twice is harmless */
    xent_npy_writer zero;
    memset(&zero, 0, sizeof zero);
    xent_npy_writer_abort(&zero);
}

Test(npy, writer_replaces_destination_only_on_commit)
{
    const char *path = path_in("D.npy", 0);
    write_bytes(path, "old contents", 12);
    int64_t shape[1] = {3};
    double data[3] = {1.0, 2.0, 3.0};
    xent_npy_writer w;
    char err[1100];
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F64, 1, shape,
                                      err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(xent_npy_writer_write(&w, data, sizeof data, err, sizeof err),
                 0);
    char buf[256];
    cr_assert_eq(read_bytes(path, buf, sizeof buf), 12u);
    cr_assert_eq(memcmp(buf, "old contents", 12), 0, "replaced before commit");
    cr_assert_eq(dir_entries(), 2);
    cr_assert_eq(xent_npy_writer_commit(&w, err, sizeof err), 0, "%s", err);
    cr_assert_eq(dir_entries(), 1);
    cr_assert_eq(read_bytes(path, buf, sizeof buf), 128u + sizeof data);
    cr_assert_eq(memcmp(buf + 128, data, sizeof data), 0);

    /* An aborted second writer leaves the committed file alone. */
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F64, 1, shape,
                                      err, sizeof err),
                 0, "%s", err);
    xent_npy_writer_abort(&w);
    cr_assert_eq(read_bytes(path, buf, sizeof buf), 128u + sizeof data);
    cr_assert_eq(dir_entries(), 1);
}

Test(npy, writer_commit_checks_byte_count)
{
    const char *path = path_in("C.npy", 0);
    write_bytes(path, "keep", 4);
    int64_t shape[2] = {2, 2};
    int64_t data[5] = {1, 2, 3, 4, 5};
    xent_npy_writer w;
    char err[1100];
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_I64, 2, shape,
                                      err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(xent_npy_writer_write(&w, data, 24, err, sizeof err), 0);
    cr_assert_eq(xent_npy_writer_commit(&w, err, sizeof err), -1);
    cr_assert(strncmp(err, path, strlen(path)) == 0, "%s", err);
    cr_assert_not_null(strstr(err, "incomplete output: wrote 24 of the 32 "
                                   "bytes that shape (2, 2) of int64 needs"),
                       "%s", err);
    cr_assert_eq(dir_entries(), 1);
    char buf[16];
    cr_assert_eq(read_bytes(path, buf, sizeof buf), 4u);

    /* Too much data aborts at once. */
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_I64, 2, shape,
                                      err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(xent_npy_writer_write(&w, data, 24, err, sizeof err), 0);
    cr_assert_eq(xent_npy_writer_write(&w, data, 16, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "more data than shape (2, 2) of int64 "
                                   "holds (32 bytes)"),
                       "%s", err);
    cr_assert_eq(w.active, 0);
    cr_assert_eq(dir_entries(), 1);
    cr_assert_eq(read_bytes(path, buf, sizeof buf), 4u);
}

Test(npy, writer_rejects_bad_arguments)
{
    char err[1100];
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    const char *path = path_in("B.npy", 0);
    xent_npy_writer w;
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_BF16, 1, shape,
                                      err, sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "bfloat16 has no .npy type"), "%s", err);
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F32, 9, shape,
                                      err, sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "cannot write an array of 9 dimensions"),
                       "%s", err);
    int64_t neg[2] = {3, -1};
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F32, 2, neg, err,
                                      sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "negative dimension"), "%s", err);
    int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    cr_assert_eq(xent_npy_writer_open(&w, path, XENT_NPY_DTYPE_F32, 2, huge,
                                      err, sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "more than 2^48 elements"), "%s", err);
    cr_assert_eq(xent_npy_write(path, XENT_NPY_DTYPE_F32, 1, shape, NULL, err,
                                sizeof err),
                 -1);
    cr_assert_not_null(strstr(err, "no data given"), "%s", err);
    cr_assert_eq(w.active, 0);
    cr_assert_eq(dir_entries(), 0);

    const char *nodir = path_in("no/such/dir/out.npy", 1);
    cr_assert_eq(xent_npy_write(nodir, XENT_NPY_DTYPE_F32, 1, shape, shape, err,
                                sizeof err),
                 -1);
    cr_assert(strncmp(err, nodir, strlen(nodir)) == 0, "%s", err);
    cr_assert_not_null(strstr(err, "cannot create temporary file"), "%s", err);
}

Test(npy, writer_file_mode_follows_umask)
{
    umask(022);
    const char *path = path_in("M.npy", 0);
    int64_t shape[1] = {1};
    int32_t v = 7;
    char err[1100];
    cr_assert_eq(
        xent_npy_write(path, XENT_NPY_DTYPE_I32, 1, shape, &v, err, sizeof err),
        0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644u, "mode %o", st.st_mode & 0777);
}

/* ------------------------------------------------------------------------ */
/* Conversions and small helpers                                             */
/* ------------------------------------------------------------------------ */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ref_f16 - binary16 decoded by arithmetic, independent of the bit path. */
static float ref_f16(uint16_t h)
{
    int sign = h >> 15;
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp((double)mant, -24);
    else if (exp == 31)
        v = mant == 0 ? INFINITY : NAN;
    else
        v = ldexp((double)(mant + 1024), exp - 25);
    return (float)(sign ? -v : v);
}

Test(npy, f16_special_values)
{
    struct {
        uint16_t h;
        float f;
    } cases[] = {
        {0x0000, 0.0f},
        {0x3c00, 1.0f},
        {0xc000, -2.0f},
        {0x7bff, 65504.0f},
        {0x0001, 5.9604644775390625e-8f}, /* smallest subnormal 2^-24 */
        {0x03ff, 6.0975551605224609e-5f}, /* largest subnormal */
        {0x0400, 6.103515625e-5f},        /* smallest normal 2^-14 */
        {0x8001, -5.9604644775390625e-8f},
        {0x3555, 0.333251953125f},
        {0x7c00, INFINITY},
        {0xfc00, -INFINITY},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        cr_assert_eq(f32_bits(xent_npy_f16_to_f32(cases[k].h)),
                     f32_bits(cases[k].f), "0x%04x", cases[k].h);
    cr_assert_eq(f32_bits(xent_npy_f16_to_f32(0x8000)), 0x80000000u);
    cr_assert(isnan(xent_npy_f16_to_f32(0x7e00)));
    cr_assert(isnan(xent_npy_f16_to_f32(0xfc01)));
    /* NaN payload and sign are kept. */
    cr_assert_eq(f32_bits(xent_npy_f16_to_f32(0xfe01)), 0xffc02000u);
}

Test(npy, f16_exhaustive)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float got = xent_npy_f16_to_f32((uint16_t)h);
        float want = ref_f16((uint16_t)h);
        if (isnan(want)) {
            cr_assert(isnan(got), "0x%04x", h);
            cr_assert_eq(signbit(got) != 0, (h >> 15) != 0);
        } else {
            cr_assert_eq(f32_bits(got), f32_bits(want), "0x%04x", h);
        }
    }
}

Test(npy, bf16_values)
{
    cr_assert_eq(xent_npy_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(xent_npy_bf16_to_f32(0xc2f7), -123.5f);
    cr_assert_eq(xent_npy_bf16_to_f32(0x0001), 9.183549615799121e-41f);
    cr_assert_eq(xent_npy_bf16_to_f32(0x7f7f), 3.3895313892515355e38f);
    cr_assert(isinf(xent_npy_bf16_to_f32(0xff80)));
    cr_assert(isnan(xent_npy_bf16_to_f32(0x7fc0)));
    for (uint32_t h = 0; h < 65536; h++)
        cr_assert_eq(f32_bits(xent_npy_bf16_to_f32((uint16_t)h)), h << 16);
}

Test(npy, to_f32_every_dtype_unaligned)
{
    /* Sources start at an odd address to prove no alignment is needed. */
    unsigned char raw[64 + 1];
    unsigned char *src = raw + 1;
    float dst[4];

    double d[4] = {0.1, 1e300, -1e-50, 1.0 + 3.0 * 0x1p-24};
    memcpy(src, d, sizeof d);
    xent_npy_to_f32(XENT_NPY_DTYPE_F64, src, dst, 4);
    cr_assert_eq(dst[0], 0.1f);
    cr_assert(isinf(dst[1]) && dst[1] > 0);
    cr_assert_eq(f32_bits(dst[2]), 0x80000000u);
    cr_assert_eq(dst[3], 1.0f + 0x1p-22f); /* tie rounds to even */
    d[0] = NAN;
    d[1] = 1.0 + 0x1p-24; /* tie: rounds down to 1 */
    memcpy(src, d, 16);
    xent_npy_to_f32(XENT_NPY_DTYPE_F64, src, dst, 2);
    cr_assert(isnan(dst[0]));
    cr_assert_eq(dst[1], 1.0f);

    uint16_t h[3] = {0x3c00, 0x0001, 0xfc00};
    memcpy(src, h, sizeof h);
    xent_npy_to_f32(XENT_NPY_DTYPE_F16, src, dst, 3);
    cr_assert(dst[0] == 1.0f && dst[1] == 0x1p-24f && isinf(dst[2]));
    xent_npy_to_f32(XENT_NPY_DTYPE_BF16, src, dst, 1);
    cr_assert_eq(dst[0], 0x1p-7f); /* 0x3c00 as bfloat16 */

    float f[2] = {-0.0f, 3.5f};
    memcpy(src, f, sizeof f);
    xent_npy_to_f32(XENT_NPY_DTYPE_F32, src, dst, 2);
    cr_assert_eq(f32_bits(dst[0]), 0x80000000u);
    cr_assert_eq(dst[1], 3.5f);

    int32_t i32[2] = {-7, 16777217};
    memcpy(src, i32, sizeof i32);
    xent_npy_to_f32(XENT_NPY_DTYPE_I32, src, dst, 2);
    cr_assert(dst[0] == -7.0f && dst[1] == 16777216.0f);
    int64_t i64[1] = {-((int64_t)1 << 40)};
    memcpy(src, i64, sizeof i64);
    xent_npy_to_f32(XENT_NPY_DTYPE_I64, src, dst, 1);
    cr_assert_eq(dst[0], -0x1p40f);

    dst[0] = 5.0f;
    xent_npy_to_f32(XENT_NPY_DTYPE_F32, src, dst, 0);
    xent_npy_to_f32(XENT_NPY_DTYPE_COUNT, src, dst, 1);
    cr_assert_eq(dst[0], 5.0f);
}

Test(npy, to_i64)
{
    unsigned char raw[33];
    unsigned char *src = raw + 1;
    int64_t dst[3] = {9, 9, 9};
    int32_t i32[3] = {-1, INT32_MIN, INT32_MAX};
    memcpy(src, i32, sizeof i32);
    cr_assert_eq(xent_npy_to_i64(XENT_NPY_DTYPE_I32, src, dst, 3), 0);
    cr_assert(dst[0] == -1 && dst[1] == INT32_MIN && dst[2] == INT32_MAX);
    int64_t i64[2] = {INT64_MIN, -100};
    memcpy(src, i64, sizeof i64);
    cr_assert_eq(xent_npy_to_i64(XENT_NPY_DTYPE_I64, src, dst, 2), 0);
    cr_assert(dst[0] == INT64_MIN && dst[1] == -100);
    dst[0] = 42;
    cr_assert_eq(xent_npy_to_i64(XENT_NPY_DTYPE_F32, src, dst, 1), -1);
    cr_assert_eq(xent_npy_to_i64(XENT_NPY_DTYPE_BF16, src, dst, 1), -1);
    cr_assert_eq(dst[0], 42);
}

Test(npy, dtype_names_and_sizes)
{
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_F32), "float32");
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_F16), "float16");
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_BF16), "bfloat16");
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_F64), "float64");
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_I32), "int32");
    cr_assert_str_eq(xent_npy_dtype_name(XENT_NPY_DTYPE_I64), "int64");
    cr_assert_str_eq(xent_npy_dtype_name((xent_npy_dtype)99), "unknown");
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_F32), 4u);
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_F16), 2u);
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_BF16), 2u);
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_F64), 8u);
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_I32), 4u);
    cr_assert_eq(xent_npy_itemsize(XENT_NPY_DTYPE_I64), 8u);
    cr_assert_eq(xent_npy_itemsize((xent_npy_dtype)99), 0u);
}

Test(npy, format_shape)
{
    char buf[64];
    int64_t s[3] = {2, 30, 400};
    cr_assert_str_eq(xent_npy_format_shape(0, NULL, buf, sizeof buf), "()");
    cr_assert_str_eq(xent_npy_format_shape(1, s, buf, sizeof buf), "(2,)");
    cr_assert_str_eq(xent_npy_format_shape(3, s, buf, sizeof buf),
                     "(2, 30, 400)");
    char tiny[5];
    cr_assert_str_eq(xent_npy_format_shape(3, s, tiny, sizeof tiny), "(2, ");
}
