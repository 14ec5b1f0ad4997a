/*
 * cpu_gemm.c - the CPU backend's GEMM for the fused linear + cross-entropy
 * (host/linear.c): a plain cache-blocked, multithreaded fp32 GEMM in C.
 *
 *   C[m, n] (+)= op(A)[m, k] * op(B)[k, n]        row-major
 *
 * A and B are float or bf16 (converted to float while packing); C is float
 * or bf16. Every product is accumulated in fp32 into a tile kept in a
 * stack buffer; with accumulate set the tile is added to C's existing
 * value in fp32 and the sum rounded once (what cuBLAS does with beta = 1).
 *
 * Blocking: output tiles of GEMM_MB x GEMM_NB; for each tile the k range
 * is walked in blocks of GEMM_KB, packing the A block (GEMM_MB x GEMM_KB)
 * and the B block (GEMM_KB x GEMM_NB) as dense float panels that stay in
 * L1/L2 (zero-padded to whole register blocks), and a GEMM_MR x GEMM_NR
 * register block accumulates over the k block (fixed sizes, so the
 * compiler keeps it in vector registers).
 *
 * Determinism: threads split the set of output tiles only; each output
 * element's sum runs over k = 0, 1, ... in the same order whatever the
 * thread count, so results are bitwise independent of it.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define GEMM_MB 32
#define GEMM_NB 128
#define GEMM_KB 128
#define GEMM_MAX_THREADS XENT_CPU_MAX_THREADS

/* Declared identically in host/linear.c (the only caller). */
xent_status xent_cpu_gemm(int n_threads, int64_t m, int64_t n, int64_t k,
                          const void *a, xent_dtype ta, int64_t lda,
                          int trans_a, const void *b, xent_dtype tb,
                          int64_t ldb, int trans_b, void *c, xent_dtype tc,
                          int64_t ldc, int accumulate);

typedef struct gemm_job {
    int64_t m, n, k;
    const void *a, *b;
    xent_dtype ta, tb, tc;
    int64_t lda, ldb, ldc;
    int trans_a, trans_b, accumulate;
    void *c;
    int64_t tile_lo, tile_hi, tiles_n;
} gemm_job;

static inline float load_elem(const void *p, xent_dtype t, int64_t i)
{
    if (t == XENT_DTYPE_BF16)
        return xent_bf16_to_f32(((const uint16_t *)p)[i]);
    if (t == XENT_DTYPE_F16)
        return xent_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* Packs op(X)[r0 .. r0+nr, s0 .. s0+ns] into dst[nr][ld_dst] as float,
 * zero-filling up to pr rows and ps columns; reads X along its storage
 * rows (contiguous) whichever op is asked for. */
static void pack(float *dst, int64_t ld_dst, const void *x, xent_dtype t,
                 int64_t ld, int trans, int64_t r0, int64_t s0, int64_t nr,
                 int64_t ns, int64_t pr, int64_t ps)
{
    for (int64_t r = 0; r < pr; r++)
        for (int64_t c = (r < nr ? ns : 0); c < ps; c++)
            dst[r * ld_dst + c] = 0.0f;
    if (!trans) {
        for (int64_t r = 0; r < nr; r++)
            for (int64_t c = 0; c < ns; c++)
                dst[r * ld_dst + c] = load_elem(x, t, (r0 + r) * ld + s0 + c);
    } else {
        for (int64_t c = 0; c < ns; c++)
            for (int64_t r = 0; r < nr; r++)
                dst[r * ld_dst + c] = load_elem(x, t, (s0 + c) * ld + r0 + r);
    }
}

/* The register block: GEMM_MR x GEMM_NR accumulators (8 SSE registers),
 * acc[MR][NR] += ap[MR][0..kb) * bp[0..kb)[NR], k in order. */
#define GEMM_MR 4
#define GEMM_NR 8

static void micro(float *restrict acc, int64_t ld_acc,
                  const float *restrict ap, int64_t ld_a,
                  const float *restrict bp, int64_t ld_b, int64_t kb)
{
    float c[GEMM_MR][GEMM_NR];
    for (int r = 0; r < GEMM_MR; r++)
        for (int q = 0; q < GEMM_NR; q++)
            c[r][q] = acc[r * ld_acc + q];
    for (int64_t kk = 0; kk < kb; kk++) {
        const float *b = bp + kk * ld_b;
        for (int r = 0; r < GEMM_MR; r++) {
            const float a = ap[r * ld_a + kk];
            for (int q = 0; q < GEMM_NR; q++)
                c[r][q] += a * b[q];
        }
    }
    for (int r = 0; r < GEMM_MR; r++)
        for (int q = 0; q < GEMM_NR; q++)
            acc[r * ld_acc + q] = c[r][q];
}

static void run_tile(const gemm_job *j, int64_t i0, int64_t j0)
{
    float acc[GEMM_MB][GEMM_NB];
    float ap[GEMM_MB][GEMM_KB];
    float bp[GEMM_KB][GEMM_NB];
    int64_t mb = j->m - i0 < GEMM_MB ? j->m - i0 : GEMM_MB;
    int64_t nb = j->n - j0 < GEMM_NB ? j->n - j0 : GEMM_NB;
    /* the register blocks cover the tile rounded up; the padding is 0 */
    int64_t mbp = (mb + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    int64_t nbp = (nb + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    for (int64_t i = 0; i < mbp; i++)
        for (int64_t jj = 0; jj < nbp; jj++)
            acc[i][jj] = 0.0f;
    for (int64_t k0 = 0; k0 < j->k; k0 += GEMM_KB) {
        int64_t kb = j->k - k0 < GEMM_KB ? j->k - k0 : GEMM_KB;
        pack(&ap[0][0], GEMM_KB, j->a, j->ta, j->lda, j->trans_a, i0, k0, mb,
             kb, mbp, kb);
        pack(&bp[0][0], GEMM_NB, j->b, j->tb, j->ldb, j->trans_b, k0, j0, kb,
             nb, kb, nbp);
        for (int64_t i = 0; i < mbp; i += GEMM_MR)
            for (int64_t jj = 0; jj < nbp; jj += GEMM_NR)
                micro(&acc[i][jj], GEMM_NB, &ap[i][0], GEMM_KB, &bp[0][jj],
                      GEMM_NB, kb);
    }
    for (int64_t i = 0; i < mb; i++) {
        int64_t row = (i0 + i) * j->ldc + j0;
        for (int64_t jj = 0; jj < nb; jj++) {
            float v = acc[i][jj];
            if (j->tc == XENT_DTYPE_F32) {
                float *cp = (float *)j->c + row + jj;
                *cp = j->accumulate ? *cp + v : v;
            } else {
                uint16_t *cp = (uint16_t *)j->c + row + jj;
                if (j->accumulate)
                    v += xent_bf16_to_f32(*cp);
                *cp = xent_f32_to_bf16(v);
            }
        }
    }
}

static void *gemm_worker(void *arg)
{
    const gemm_job *j = arg;
    for (int64_t t = j->tile_lo; t < j->tile_hi; t++)
        run_tile(j, (t / j->tiles_n) * GEMM_MB, (t % j->tiles_n) * GEMM_NB);
    return NULL;
}

xent_status xent_cpu_gemm(int n_threads, int64_t m, int64_t n, int64_t k,
                          const void *a, xent_dtype ta, int64_t lda,
                          int trans_a, const void *b, xent_dtype tb,
                          int64_t ldb, int trans_b, void *c, xent_dtype tc,
                          int64_t ldc, int accumulate)
{
    if (m <= 0 || n <= 0)
        return XENT_STATUS_SUCCESS;
    XENT_RETURN_IF(tc != XENT_DTYPE_F32 && tc != XENT_DTYPE_BF16,
                   XENT_STATUS_UNSUPPORTED);
    gemm_job base = {m, n, k, a, b, ta, tb, tc, lda, ldb, ldc,
                     trans_a, trans_b, accumulate, c, 0, 0, 0};
    base.tiles_n = (n + GEMM_NB - 1) / GEMM_NB;
    int64_t tiles = ((m + GEMM_MB - 1) / GEMM_MB) * base.tiles_n;
    /* threads only pay off with enough work: ~2 MFLOP per thread */
    int64_t work = m * n * (k > 0 ? k : 1);
    int64_t t = n_threads < 1 ? 1 : n_threads;
    if (t > GEMM_MAX_THREADS)
        t = GEMM_MAX_THREADS;
    if (t > tiles)
        t = tiles;
    if (t > 1 && work / t < (int64_t)1 << 20)
        t = work >> 20 > 1 ? work >> 20 : 1;
    gemm_job jobs[GEMM_MAX_THREADS];
    for (int64_t q = 0; q < t; q++) {
        jobs[q] = base;
        jobs[q].tile_lo = tiles * q / t;
        jobs[q].tile_hi = tiles * (q + 1) / t;
    }
    xent_cpu_run_jobs(t, gemm_worker, jobs, sizeof jobs[0]);
    return XENT_STATUS_SUCCESS;
}
