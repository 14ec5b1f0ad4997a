/*
 * fuzz_npy.c - libFuzzer harness for the .npy header parser (host/npy.c).
 *
 * Each input is taken as a whole file image and parsed twice (without and
 * with XENT_NPY_READ_BF16). A rejection must come with a one-line message
 * that names the file; an acceptance must describe a layout that fits the
 * input exactly. Accepted data are then run through the converters (so an
 * out-of-bounds size would be caught by ASan), the rank/dtype check, and a
 * re-encode / re-parse round trip.
 *
 * Build and run: tests/fuzz/run_fuzz.sh [seconds]
 */
#define _POSIX_C_SOURCE 200809L

#include "npy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz.npy"

/* check - aborts (a libFuzzer crash) when an invariant does not hold. */
static void check(int ok)
{
    if (!ok)
        abort();
}

/* check_message - err [errlen] holds "fuzz.npy: <problem>" on one line
 * (possibly truncated to errlen - 1 characters). */
static void check_message(const char *err, size_t errlen)
{
    size_t n = strnlen(err, errlen);
    check(n < errlen);
    check(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL);
    size_t prefix = sizeof FUZZ_NAME + 1; /* "fuzz.npy: " */
    if (errlen > prefix + 1) {
        check(strncmp(err, FUZZ_NAME ": ", prefix) == 0);
        check(n > prefix);
    }
}

/* exercise_data - converts the accepted data in chunks; every element is
 * read, so a size that overstates the input is an ASan report. */
static void exercise_data(const xent_npy_header *h, const uint8_t *data)
{
    float f[64];
    int64_t q[64];
    size_t count = (size_t)h->count;
    for (size_t i = 0; i < count; i += 64) {
        size_t n = count - i < 64 ? count - i : 64;
        const uint8_t *src = data + h->data_offset + i * h->itemsize;
        xent_npy_to_f32(h->dtype, src, f, n);
        int rc = xent_npy_to_i64(h->dtype, src, q, n);
        check(rc == ((h->dtype == XENT_NPY_DTYPE_I32 ||
                      h->dtype == XENT_NPY_DTYPE_I64)
                         ? 0
                         : -1));
    }
}

/* round_trip - re-encodes the header, appends the data and parses again. */
static void round_trip(const xent_npy_header *h, const uint8_t *data)
{
    if (h->dtype == XENT_NPY_DTYPE_BF16)
        return; /* no .npy type to write */
    size_t hsize = xent_npy_encode_header(h->dtype, h->ndim, h->shape, NULL, 0);
    check(hsize > 0 && hsize % 64 == 0 && hsize <= XENT_NPY_MAX_HEADER_BYTES);
    uint8_t *img = malloc(hsize + h->data_size + 1);
    check(img != NULL);
    check(xent_npy_encode_header(h->dtype, h->ndim, h->shape, img, hsize) ==
          hsize);
    if (h->data_size > 0)
        memcpy(img + hsize, data + h->data_offset, h->data_size);
    xent_npy_header g;
    char err[256];
    int rc = xent_npy_parse(img, hsize + h->data_size, FUZZ_NAME, 0, &g, err,
                            sizeof err);
    check(rc == 0);
    check(g.dtype == h->dtype && g.ndim == h->ndim && g.count == h->count &&
          g.version_major == 1 && g.fortran_order == 0 &&
          g.data_offset == hsize && g.data_size == h->data_size);
    check(memcmp(g.shape, h->shape, sizeof g.shape) == 0);
    free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int pass = 0; pass < 2; pass++) {
        unsigned flags = pass ? XENT_NPY_READ_BF16 : 0;
        char err[256];
        memset(err, 'x', sizeof err);
        /* Vary the error buffer size to exercise truncation. */
        size_t errlen = size % 3 == 0 ? 12 + size % 29 : sizeof err;
        xent_npy_header h;
        int rc = xent_npy_parse(data, size, FUZZ_NAME, flags, &h, err, errlen);
        if (rc != 0) {
            check(rc == -1);
            check_message(err, errlen);
            continue;
        }
        check(h.version_minor == 0 && h.version_major >= 1 &&
              h.version_major <= 3);
        check((unsigned)h.dtype < XENT_NPY_DTYPE_COUNT);
        check(pass == 1 || h.dtype != XENT_NPY_DTYPE_BF16);
        check(h.itemsize == xent_npy_itemsize(h.dtype));
        check(h.ndim >= 0 && h.ndim <= XENT_NPY_MAX_DIMS);
        int64_t count = 1;
        for (int d = 0; d < XENT_NPY_MAX_DIMS; d++) {
            check(h.shape[d] >= 0);
            if (d < h.ndim)
                count *= h.shape[d];
            else
                check(h.shape[d] == 0);
        }
        check(count == h.count && count <= XENT_NPY_MAX_ELEMENTS);
        check(h.data_size == (size_t)count * h.itemsize);
        check(h.data_offset >= 11 && h.data_offset <= size);
        check(h.data_offset + h.data_size == size);
        check(data[h.data_offset - 1] == '\n');

        exercise_data(&h, data);
        round_trip(&h, data);

        /* The rank/dtype check with parameters taken from the input. */
        int lo = size > 0 ? data[0] % 4 : 0;
        int hi = lo + (size > 1 ? data[1] % 3 : 0);
        unsigned mask = size > 2 ? data[2] : 0;
        rc = xent_npy_expect_header(&h, FUZZ_NAME, lo, hi, mask, err,
                                    sizeof err);
        check(rc == 0 || rc == -1);
        if (rc != 0)
            check_message(err, sizeof err);
    }
    return 0;
}
