/*
 * npy.h - reading and writing NumPy .npy files for the xent command-line tool.
 *
 * Private to host/: not part of the public libxent API.
 *
 * Format
 * (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
 *
 *   "\x93NUMPY" major minor  header_len  header  data
 *   6 bytes      1     1     2 (v1.0) or 4 (v2.0, v3.0) bytes, little-endian
 *
 * The header is an ASCII (v3.0: UTF-8) Python dict literal ending in '\n':
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (N, C), }
 * It is parsed by a small strict grammar, never evaluated. Data follows the
 * header immediately, in C order, and must fill the rest of the file exactly.
 *
 * Supported element types: little-endian float16, float32, float64, int32,
 * int64, and bfloat16 on request (.npy has no bfloat16 type: with
 * XENT_NPY_READ_BF16, 2-byte data '<f2', '<u2', '<i2', '|V2' is taken as
 * bfloat16). '=' (native) is accepted as little-endian; the library refuses
 * to build on a big-endian host.
 *
 * Errors: every function that can fail returns 0 on success or -1 with a
 * one-line message in the caller's buffer `err` (`errlen` bytes, always
 * NUL-terminated when errlen > 0; err may be NULL). Messages start with the
 * file name: "T.npy: Fortran-order arrays are not supported".
 *
 * No global state; nothing is printed. Reading maps the file read-only
 * (mmap, MAP_PRIVATE) so arrays larger than RAM can be processed chunk by
 * chunk. Writing goes to a temporary file in the destination's directory that
 * is renamed over the destination only when complete.
 */
#ifndef XENT_NPY_H
#define XENT_NPY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Most dimensions an array may have. */
#define XENT_NPY_MAX_DIMS 8

/* Most elements an array may have (2^48); larger shapes are rejected. */
#define XENT_NPY_MAX_ELEMENTS ((int64_t)1 << 48)

/* Largest header xent_npy_encode_header can produce, prefix included. */
#define XENT_NPY_MAX_HEADER_BYTES 512

/* Element types. The values index XENT_NPY_MASK bits; they are stable. */
typedef enum xent_npy_dtype {
    XENT_NPY_DTYPE_F32 = 0,  /* '<f4' */
    XENT_NPY_DTYPE_F16 = 1,  /* '<f2' */
    XENT_NPY_DTYPE_BF16 = 2, /* 2-byte data read with XENT_NPY_READ_BF16 */
    XENT_NPY_DTYPE_F64 = 3,  /* '<f8' */
    XENT_NPY_DTYPE_I32 = 4,  /* '<i4' */
    XENT_NPY_DTYPE_I64 = 5,  /* '<i8' */
    XENT_NPY_DTYPE_COUNT = 6
} xent_npy_dtype;

/* Dtype sets for xent_npy_expect. */
#define XENT_NPY_MASK(dtype) (1u << (unsigned)(dtype))
#define XENT_NPY_MASK_FLOAT                                                    \
    (XENT_NPY_MASK(XENT_NPY_DTYPE_F16) | XENT_NPY_MASK(XENT_NPY_DTYPE_BF16) |  \
     XENT_NPY_MASK(XENT_NPY_DTYPE_F32) | XENT_NPY_MASK(XENT_NPY_DTYPE_F64))
#define XENT_NPY_MASK_INT                                                      \
    (XENT_NPY_MASK(XENT_NPY_DTYPE_I32) | XENT_NPY_MASK(XENT_NPY_DTYPE_I64))
#define XENT_NPY_MASK_ALL (XENT_NPY_MASK_FLOAT | XENT_NPY_MASK_INT)

/* Flags for xent_npy_parse / xent_npy_open.
 * XENT_NPY_READ_BF16: read 2-byte data ('<f2' included) as bfloat16. */
#define XENT_NPY_READ_BF16 1u

/* What a parsed header says. All sizes are consistent with the file size. */
typedef struct xent_npy_header {
    int version_major; /* 1, 2 or 3 */
    int version_minor; /* 0 */
    xent_npy_dtype dtype;
    size_t itemsize;   /* bytes per element: 2, 4 or 8 */
    int fortran_order; /* 1 only when the layout equals C order */
    int ndim;          /* 0 .. XENT_NPY_MAX_DIMS */
    int64_t shape[XENT_NPY_MAX_DIMS]; /* [ndim]; entries past ndim are 0 */
    int64_t count;                    /* product of shape (1 for ndim 0) */
    size_t data_offset;               /* file offset of the first element */
    size_t data_size;                 /* count * itemsize bytes */
} xent_npy_header;

/* An array opened for reading. Zero-initialise or fill with xent_npy_open. */
typedef struct xent_npy {
    xent_npy_header header;
    const void *data; /* [header.count] elements of header.dtype, read-only,
                         C order; valid until xent_npy_close. Aligned as
                         header.data_offset is (numpy writes 64 or 16):
                         read through xent_npy_to_f32 / xent_npy_to_i64,
                         which need no alignment. Never NULL after a
                         successful open, even for an empty array. */
    size_t nbytes;    /* == header.data_size */
    char *path;       /* copy of the path, for messages; owned */
    void *map;        /* private: the whole file's mapping, or NULL */
    size_t map_len;   /* private */
} xent_npy;

/* A .npy file being written chunk by chunk. Zero-initialise or fill with
 * xent_npy_writer_open; then write, then commit or abort. */
typedef struct xent_npy_writer {
    int active;     /* 1 between a successful open and commit/abort */
    int fd;         /* the temporary file */
    char *path;     /* destination; owned */
    char *tmp_path; /* "<path>.tmp.XXXXXX" in the same directory; owned */
    xent_npy_dtype dtype;
    int ndim;
    int64_t shape[XENT_NPY_MAX_DIMS];
    uint64_t expected; /* data bytes the shape needs */
    uint64_t written;  /* data bytes written so far */
} xent_npy_writer;

/*
 * xent_npy_dtype_name - "float32", "float16", "bfloat16", "float64",
 * "int32", "int64"; "unknown" for other values. Never NULL.
 */
const char *xent_npy_dtype_name(xent_npy_dtype dtype);

/*
 * xent_npy_itemsize - bytes per element of dtype (2, 4 or 8), 0 for an
 * unknown value.
 */
size_t xent_npy_itemsize(xent_npy_dtype dtype);

/*
 * xent_npy_format_shape - writes a shape as Python prints it, "()", "(3,)",
 * "(2, 3)", into buf (buflen bytes, NUL-terminated, truncated if short).
 * shape: [ndim] (may be NULL when ndim is 0). Returns buf.
 */
char *xent_npy_format_shape(int ndim, const int64_t *shape, char *buf,
                            size_t buflen);

/*
 * xent_npy_parse - parses and validates a whole .npy file image.
 *
 * buf:  the file's first len bytes; len must be the file's full size, since
 *       the data size is checked against the shape. Never read past len, and
 *       only the header bytes are read at all (data is not touched).
 * name: the file name that starts every error message (NULL: "<npy>").
 * flags: 0 or XENT_NPY_READ_BF16.
 * out:  filled on success; the data are buf + out->data_offset,
 *       out->data_size bytes.
 *
 * Rejects, with a message naming the problem: bad magic, versions other than
 * 1.0 / 2.0 / 3.0, truncated or malformed header, non-ASCII header (v1, v2),
 * header not ending in '\n', unknown / missing / repeated keys, structured,
 * object, big-endian or unsupported dtypes, Fortran order (accepted only
 * where it is the same layout as C order: at most one dimension > 1),
 * negative or absurd shapes (more than XENT_NPY_MAX_DIMS dims, more than
 * XENT_NPY_MAX_ELEMENTS elements), truncated data and trailing bytes.
 * Returns 0 or -1.
 */
int xent_npy_parse(const void *buf, size_t len, const char *name,
                   unsigned flags, xent_npy_header *out, char *err,
                   size_t errlen);

/*
 * xent_npy_open - maps the regular file at path read-only and parses it
 * (see xent_npy_parse). On success *a owns the mapping and a copy of path;
 * release them with xent_npy_close. On failure *a is zeroed (closing it is
 * harmless). The file must not shrink while mapped (the kernel would send
 * SIGBUS). Returns 0 or -1.
 */
int xent_npy_open(xent_npy *a, const char *path, unsigned flags, char *err,
                  size_t errlen);

/*
 * xent_npy_close - unmaps and frees what xent_npy_open acquired and zeroes
 * *a. Accepts NULL and zeroed structs; calling it twice is harmless.
 */
void xent_npy_close(xent_npy *a);

/*
 * xent_npy_expect_header - checks that a header has ndim_min <= ndim <=
 * ndim_max and a dtype in dtype_mask (XENT_NPY_MASK bits). On mismatch
 * writes e.g. "T.npy: expected a 1-D array of int32 or int64, got float32
 * of shape (3, 4)". name: the file name for the message. Returns 0 or -1.
 */
int xent_npy_expect_header(const xent_npy_header *h, const char *name,
                           int ndim_min, int ndim_max, unsigned dtype_mask,
                           char *err, size_t errlen);

/* xent_npy_expect - xent_npy_expect_header on an opened array. */
int xent_npy_expect(const xent_npy *a, int ndim_min, int ndim_max,
                    unsigned dtype_mask, char *err, size_t errlen);

/*
 * xent_npy_f16_to_f32, xent_npy_bf16_to_f32 - exact conversion of one
 * IEEE binary16 / bfloat16 bit pattern (subnormals, infinities and NaN
 * payloads included) to float.
 */
float xent_npy_f16_to_f32(uint16_t bits);
float xent_npy_bf16_to_f32(uint16_t bits);

/*
 * xent_npy_to_f32 - converts count elements of dtype at src (need not be
 * aligned; e.g. a->data plus start * itemsize) to float at dst [count].
 * float16 and bfloat16 convert exactly, float64 rounds to nearest (overflow
 * gives infinity), int32/int64 convert to the nearest float. src and dst
 * must not overlap. Unknown dtypes leave dst untouched.
 */
void xent_npy_to_f32(xent_npy_dtype dtype, const void *src, float *dst,
                     size_t count);

/*
 * xent_npy_to_i64 - converts count int32 or int64 elements at src (need not
 * be aligned) to int64 at dst [count]. Returns 0, or -1 (dst untouched) when
 * dtype is not an integer type.
 */
int xent_npy_to_i64(xent_npy_dtype dtype, const void *src, int64_t *dst,
                    size_t count);

/*
 * xent_npy_encode_header - writes the magic, version, header length and
 * header dict for an array (NPY 1.0, or 2.0 if the dict needs more than
 * 65535 bytes), padded with spaces and '\n' so that the data start at a
 * multiple of 64. buf may be NULL; cap is its size in bytes.
 * dtype: F16, F32, F64, I32 or I64 (bfloat16 has no .npy type).
 * Returns the header's size in bytes (the data offset, at most
 * XENT_NPY_MAX_HEADER_BYTES), writing buf only if cap is at least that, or
 * 0 if dtype or shape is invalid (ndim outside 0..XENT_NPY_MAX_DIMS, a
 * negative dimension, more than XENT_NPY_MAX_ELEMENTS elements).
 */
size_t xent_npy_encode_header(xent_npy_dtype dtype, int ndim,
                              const int64_t *shape, void *buf, size_t cap);

/*
 * xent_npy_writer_open - starts writing an array of the given dtype (F16,
 * F32, F64, I32 or I64) and shape [ndim] to path: creates
 * "<path>.tmp.XXXXXX" beside it (mode 0666 less the umask) and writes the
 * header. path is not touched until xent_npy_writer_commit. On failure *w
 * is left inactive and nothing is left on disk. Returns 0 or -1.
 */
int xent_npy_writer_open(xent_npy_writer *w, const char *path,
                         xent_npy_dtype dtype, int ndim, const int64_t *shape,
                         char *err, size_t errlen);

/*
 * xent_npy_writer_write - appends nbytes of element data (C order, the
 * writer's dtype, little-endian) from data (may be NULL when nbytes is 0).
 * Writing more than the shape holds, or an I/O error, aborts the writer
 * (temporary file removed) and returns -1; otherwise returns 0.
 */
int xent_npy_writer_write(xent_npy_writer *w, const void *data, size_t nbytes,
                          char *err, size_t errlen);

/*
 * xent_npy_writer_commit - checks that exactly the shape's byte count was
 * written, closes the temporary file and renames it over the destination.
 * Always ends the writer: on failure the temporary file is removed and an
 * existing destination is left as it was. Returns 0 or -1.
 */
int xent_npy_writer_commit(xent_npy_writer *w, char *err, size_t errlen);

/*
 * xent_npy_writer_abort - closes and removes the temporary file, leaving the
 * destination as it was. Harmless on NULL, zeroed, committed or already
 * aborted writers.
 */
void xent_npy_writer_abort(xent_npy_writer *w);

/*
 * xent_npy_write - writes a whole array at once: open, write
 * count(shape) * itemsize bytes from data, commit. data: [prod(shape)]
 * elements of dtype, C order (may be NULL for an empty array).
 * Returns 0 or -1.
 */
int xent_npy_write(const char *path, xent_npy_dtype dtype, int ndim,
                   const int64_t *shape, const void *data, char *err,
                   size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* XENT_NPY_H */
