/*
 * test_linear.c - the fused linear + cross-entropy (xent_linear_ce) on a
 * CPU handle against the float64 reference:
 *   logits = H W^T + b in double from the (rounded) inputs, then
 *   ref_ce_index with the options gives the loss, the per-row losses, lse
 *   and G = d loss / d logits; dH = G W, dW = G^T H, dbias = sum_rows G.
 * Every cross-entropy option, NONE/MEAN/SUM, int32/int64 targets, bias or
 * not, scalar and per-row upstream, fp32 and bf16 inputs; finite
 * differences; chunk-size agreement and bitwise reproducibility; budget
 * and argument checks.
 *
 * Tolerances (each tensor, elementwise |got - ref| <= atol + rtol |ref|):
 *  - fp32 math (fp32 inputs, or bf16 inputs with XENT_FLAG_GRAD_F32,
 *    judged on the bf16-rounded inputs): rtol 1e-5, atol 1e-5 * max|ref|
 *    of that tensor (gradient entries near zero come from sums of terms
 *    of the tensor's own scale, so their error is relative to that scale).
 *  - bf16 outputs (one chunk): rtol 2^-8, atol 2^-8 * max|ref| (one
 *    bf16 rounding of an fp32 result is <= 2^-9 relative, plus the fp32
 *    error).
 * The same file runs on a CUDA handle from test_gpu_linear.c (LIN_GPU).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* host bf16 conversions */
#include "ref.h"
#include "testutil.h"
#include "xent.h"

#ifdef LIN_GPU
#include <cuda_runtime.h>
#define LIN_SUITE gpu_linear
static void *mem_alloc(size_t n)
{
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, n ? n : 1), cudaSuccess);
    return p;
}
static void mem_free(void *p) { (void)cudaFree(p); }
static void to_mem(void *dst, const void *src, size_t n)
{
    if (n)
        cr_assert_eq(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice),
                     cudaSuccess);
}
static void from_mem(void *dst, const void *src, size_t n)
{
    if (n)
        cr_assert_eq(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost),
                     cudaSuccess);
}
static void fill_mem(void *dst, int byte, size_t n)
{
    cr_assert_eq(cudaMemset(dst, byte, n), cudaSuccess);
}
static xent_handle_t make_handle(int n_threads)
{
    (void)n_threads;
    xent_handle_t h = NULL;
    cr_assert_eq(xent_create(&h), XENT_STATUS_SUCCESS);
    return h;
}
#else
#define LIN_SUITE linear
static void *mem_alloc(size_t n) { return malloc(n ? n : 1); }
static void mem_free(void *p) { free(p); }
static void to_mem(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
static void from_mem(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
static void fill_mem(void *dst, int byte, size_t n) { memset(dst, byte, n); }
static xent_handle_t make_handle(int n_threads)
{
    xent_handle_t h = NULL;
    cr_assert_eq(xent_create_cpu(&h, n_threads), XENT_STATUS_SUCCESS);
    return h;
}
#endif

/* ---- a problem and its reference ---------------------------------------- */

typedef struct prob {
    int64_t n, d, c;
    xent_dtype dt;
    int has_bias;
    int i32;
    /* host values as double (already rounded for bf16) */
    double *H, *W, *b;
    int64_t *y;
    double *cw; /* class weights or NULL */
    float *cwf;
    double *dloss; /* per-row upstream or NULL */
    /* device/host library inputs */
    void *mH, *mW, *mb, *my, *mcw, *mdl;
} prob;

static size_t dsz(xent_dtype t) { return t == XENT_DTYPE_F32 ? 4u : 2u; }

/* host array of dtype from doubles (exactly representable) */
static void *pack(const double *x, int64_t n, xent_dtype t)
{
    void *p = malloc((size_t)(n > 0 ? n : 1) * dsz(t));
    for (int64_t i = 0; i < n; i++) {
        if (t == XENT_DTYPE_F32)
            ((float *)p)[i] = (float)x[i];
        else
            ((uint16_t *)p)[i] = xent_f32_to_bf16((float)x[i]);
    }
    return p;
}

static void *upload(const void *host, size_t bytes)
{
    void *m = mem_alloc(bytes);
    to_mem(m, host, bytes);
    return m;
}

static double round_to(double v, xent_dtype t)
{
    float f = (float)v;
    return t == XENT_DTYPE_F32 ? f : xent_bf16_to_f32(xent_f32_to_bf16(f));
}

static void prob_make(prob *p, uint64_t seed, int64_t n, int64_t d,
                      int64_t c, xent_dtype dt, int has_bias, int weights,
                      int n_ignored, int per_row_upstream, int i32)
{
    memset(p, 0, sizeof *p);
    tu_rng r;
    tu_rng_seed(&r, seed);
    p->n = n, p->d = d, p->c = c, p->dt = dt, p->has_bias = has_bias;
    p->i32 = i32;
    p->H = malloc(sizeof(double) * (size_t)(n * d + 1));
    p->W = malloc(sizeof(double) * (size_t)(c * d));
    p->b = malloc(sizeof(double) * (size_t)c);
    p->y = malloc(sizeof(int64_t) * (size_t)(n + 1));
    double ws = 3.0 / sqrt((double)d);
    for (int64_t i = 0; i < n * d; i++)
        p->H[i] = round_to(tu_normal(&r), dt);
    for (int64_t i = 0; i < c * d; i++)
        p->W[i] = round_to(ws * tu_normal(&r), dt);
    for (int64_t j = 0; j < c; j++)
        p->b[j] = has_bias ? round_to(0.5 * tu_normal(&r), dt) : 0.0;
    for (int64_t i = 0; i < n; i++)
        p->y[i] = tu_below(&r, c);
    for (int64_t k = 0; k < n_ignored && k < n; k++)
        p->y[(k * 7 + 3) % n] = -100;
    if (weights) {
        p->cw = malloc(sizeof(double) * (size_t)c);
        p->cwf = malloc(sizeof(float) * (size_t)c);
        for (int64_t j = 0; j < c; j++) {
            p->cwf[j] = (float)(0.25 + 1.5 * tu_uniform(&r));
            p->cw[j] = p->cwf[j];
        }
        p->mcw = upload(p->cwf, sizeof(float) * (size_t)c);
    }
    if (per_row_upstream) {
        p->dloss = malloc(sizeof(double) * (size_t)(n + 1));
        float *f = malloc(sizeof(float) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++) {
            f[i] = (float)(tu_uniform(&r) * 2.0 - 0.5);
            p->dloss[i] = f[i];
        }
        p->mdl = upload(f, sizeof(float) * (size_t)(n > 0 ? n : 1));
        free(f);
    }
    void *h = pack(p->H, n * d, dt), *w = pack(p->W, c * d, dt),
         *b = pack(p->b, c, dt);
    p->mH = upload(h, (size_t)(n * d) * dsz(dt));
    p->mW = upload(w, (size_t)(c * d) * dsz(dt));
    p->mb = has_bias ? upload(b, (size_t)c * dsz(dt)) : NULL;
    free(h), free(w), free(b);
    if (i32) {
        int32_t *y32 = malloc(sizeof(int32_t) * (size_t)(n + 1));
        for (int64_t i = 0; i < n; i++)
            y32[i] = (int32_t)p->y[i];
        p->my = upload(y32, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        free(y32);
    } else {
        p->my = upload(p->y, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    }
}

static void prob_free(prob *p)
{
    free(p->H), free(p->W), free(p->b), free(p->y), free(p->cw);
    free(p->cwf), free(p->dloss);
    mem_free(p->mH), mem_free(p->mW);
    if (p->mb)
        mem_free(p->mb);
    mem_free(p->my);
    if (p->mcw)
        mem_free(p->mcw);
    if (p->mdl)
        mem_free(p->mdl);
}

typedef struct refout {
    double loss;
    double *rows, *lse, *dH, *dW, *db;
} refout;

/* the reference; ls / zl / cap / reduction from the desc, scale s */
static void reference(const prob *p, const xent_linear_ce_desc *d, double s,
                      refout *o)
{
    int64_t n = p->n, c = p->c, D = p->d;
    double *z = calloc((size_t)(n * c + 1), sizeof(double));
    double *g = calloc((size_t)(n * c + 1), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++) {
            long double a = p->b[j];
            for (int64_t k = 0; k < D; k++)
                a += (long double)p->H[i * D + k] * p->W[j * D + k];
            z[i * c + j] = (double)a;
        }
    ref_ce_opts ro;
    ref_ce_opts_default(&ro);
    ro.reduction = (int)d->reduction;
    ro.ignore_index = d->ignore_index;
    ro.weights = p->cw;
    ro.label_smoothing = d->label_smoothing;
    ro.z_loss = d->z_loss;
    ro.softcap = d->softcap;
    ro.empty_mean_nan = (d->flags & XENT_FLAG_EMPTY_MEAN_NAN) != 0;
    o->rows = calloc((size_t)(n + 1), sizeof(double));
    o->lse = calloc((size_t)(n + 1), sizeof(double));
    o->loss = ref_ce_index(n, c, z, c, p->y, &ro, o->rows, o->lse, g);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < c; j++)
            g[i * c + j] *= s * (p->dloss ? p->dloss[i] : 1.0);
    o->dH = calloc((size_t)(n * D + 1), sizeof(double));
    o->dW = calloc((size_t)(c * D + 1), sizeof(double));
    o->db = calloc((size_t)(c + 1), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < D; k++) {
            long double a = 0;
            for (int64_t j = 0; j < c; j++)
                a += (long double)g[i * c + j] * p->W[j * D + k];
            o->dH[i * D + k] = (double)a;
        }
    for (int64_t j = 0; j < c; j++) {
        for (int64_t k = 0; k < D; k++) {
            long double a = 0;
            for (int64_t i = 0; i < n; i++)
                a += (long double)g[i * c + j] * p->H[i * D + k];
            o->dW[j * D + k] = (double)a;
        }
        long double a = 0;
        for (int64_t i = 0; i < n; i++)
            a += g[i * c + j];
        o->db[j] = (double)a;
    }
    free(z), free(g);
}

static void refout_free(refout *o)
{
    free(o->rows), free(o->lse), free(o->dH), free(o->dW), free(o->db);
}

/* library outputs, host copies as float */
typedef struct libout {
    float loss;
    float *rows, *lse, *dH, *dW, *db;
    xent_status st;
} libout;

static void libout_free(libout *o)
{
    free(o->rows), free(o->lse), free(o->dH), free(o->dW), free(o->db);
}

static float *fetch(const void *m, int64_t n, xent_dtype t)
{
    float *f = malloc(sizeof(float) * (size_t)(n + 1));
    void *tmp = malloc((size_t)(n + 1) * dsz(t));
    from_mem(tmp, m, (size_t)n * dsz(t));
    for (int64_t i = 0; i < n; i++)
        f[i] = t == XENT_DTYPE_F32 ? ((float *)tmp)[i]
                                   : xent_bf16_to_f32(((uint16_t *)tmp)[i]);
    free(tmp);
    return f;
}

/* run the library: want bits 1 loss, 2 rows, 4 lse, 8 dH, 16 dW, 32 db */
static libout run_lib(xent_handle_t h, const prob *p,
                      const xent_linear_ce_desc *d, float scale, int64_t chunk,
                      int want)
{
    libout o;
    memset(&o, 0, sizeof o);
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(h, NULL, &ctx), XENT_STATUS_SUCCESS);
    size_t wsb = 0;
    cr_assert_eq(xent_linear_ce_workspace_size(h, d, chunk, &wsb),
                 XENT_STATUS_SUCCESS);
    void *ws = mem_alloc(wsb);
    fill_mem(ws, 0xff, wsb); /* NaN garbage: must not matter */
    xent_dtype gt = (d->flags & XENT_FLAG_GRAD_F32) ? XENT_DTYPE_F32 : p->dt;
    int64_t n = p->n, c = p->c, D = p->d;
    float *mloss = (want & 1) ? mem_alloc(4) : NULL;
    float *mrows = (want & 2) ? mem_alloc(4 * (size_t)(n + 1)) : NULL;
    float *mlse = (want & 4) ? mem_alloc(4 * (size_t)(n + 1)) : NULL;
    void *mdH = (want & 8) ? mem_alloc((size_t)(n * D + 1) * dsz(gt)) : NULL;
    void *mdW = (want & 16) ? mem_alloc((size_t)(c * D) * dsz(gt)) : NULL;
    void *mdb = (want & 32) ? mem_alloc((size_t)c * dsz(gt)) : NULL;
    if (mdW) /* garbage: dW is overwritten, not added to */
        fill_mem(mdW, 0x7f, (size_t)(c * D) * dsz(gt));
    xent_linear_ce_outputs out = {mloss, mrows, mlse, mdH, mdW, mdb};
    xent_upstream u = xent_upstream_default();
    u.scale = scale;
    if (p->mdl) {
        u.d_dloss = p->mdl;
        u.dloss_stride = 1;
    }
    xent_linear_ce_desc dd = *d;
    dd.weights = p->mcw;
    dd.n_weights = p->mcw ? c : 0;
    o.st = xent_linear_ce(ctx, &dd, p->mH, p->mW, p->mb, p->my, &u, &out,
                          chunk, ws, wsb);
    if (mloss)
        from_mem(&o.loss, mloss, 4);
    if (mrows)
        o.rows = fetch(mrows, n, XENT_DTYPE_F32);
    if (mlse)
        o.lse = fetch(mlse, n, XENT_DTYPE_F32);
    if (mdH)
        o.dH = fetch(mdH, n * D, gt);
    if (mdW)
        o.dW = fetch(mdW, c * D, gt);
    if (mdb)
        o.db = fetch(mdb, c, gt);
    if (mloss)
        mem_free(mloss);
    if (mrows)
        mem_free(mrows);
    if (mlse)
        mem_free(mlse);
    if (mdH)
        mem_free(mdH);
    if (mdW)
        mem_free(mdW);
    if (mdb)
        mem_free(mdb);
    mem_free(ws);
    cr_assert_eq(xent_linear_ce_destroy(ctx), XENT_STATUS_SUCCESS);
    return o;
}

static double maxabs(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m)
            m = fabs(x[i]);
    return m;
}

static void check_tensor(const double *ref, const float *got, int64_t n,
                         double rtol, const char *what)
{
    double atol = rtol * maxabs(ref, n);
    TU_ASSERT_CLOSE(tu_compare_f32(ref, got, n, atol, rtol), what);
}

static void check_all(const prob *p, const xent_linear_ce_desc *d,
                      const refout *r, const libout *o, double rtol,
                      double grad_rtol)
{
    cr_assert_eq(o->st, XENT_STATUS_SUCCESS, "status %s",
                 xent_status_string(o->st));
    if (d->reduction != XENT_REDUCTION_NONE) {
        double l = r->loss;
        TU_ASSERT_CLOSE(tu_compare_f32(&l, &o->loss, 1, rtol * fabs(l), rtol),
                        "loss");
    }
    check_tensor(r->rows, o->rows, p->n, rtol, "loss_rows");
    check_tensor(r->lse, o->lse, p->n, rtol, "lse");
    check_tensor(r->dH, o->dH, p->n * p->d, grad_rtol, "dH");
    check_tensor(r->dW, o->dW, p->c * p->d, grad_rtol, "dW");
    check_tensor(r->db, o->db, p->c, grad_rtol, "dbias");
}

/* ---- every option -------------------------------------------------------- */

typedef struct optcase {
    xent_reduction red;
    int weights, ignored, bias, i32, per_row;
    float ls, zl, cap, scale;
} optcase;

static const optcase k_cases[] = {
    {XENT_REDUCTION_MEAN, 0, 0, 0, 0, 0, 0.0f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 0, 0, 1, 0, 0, 0.0f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_SUM, 0, 0, 1, 1, 0, 0.0f, 0.0f, 0.0f, 0.5f},
    {XENT_REDUCTION_NONE, 0, 0, 1, 0, 1, 0.0f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 0, 5, 1, 0, 0, 0.0f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 1, 0, 1, 1, 0, 0.0f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 1, 5, 0, 0, 0, 0.0f, 0.0f, 0.0f, 2.0f},
    {XENT_REDUCTION_MEAN, 0, 0, 1, 0, 0, 0.1f, 0.0f, 0.0f, 1.0f},
    {XENT_REDUCTION_SUM, 0, 0, 1, 0, 0, 0.0f, 1e-3f, 0.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 0, 0, 1, 0, 0, 0.0f, 0.0f, 5.0f, 1.0f},
    {XENT_REDUCTION_MEAN, 1, 4, 1, 1, 0, 0.1f, 1e-3f, 5.0f, 0.75f},
    {XENT_REDUCTION_NONE, 1, 4, 1, 0, 1, 0.2f, 1e-3f, 5.0f, 1.0f},
    {XENT_REDUCTION_SUM, 1, 4, 0, 1, 0, 0.05f, 2e-4f, 3.0f, 1.0f},
};

static void run_case(const optcase *k, xent_dtype dt, uint32_t flags,
                     int64_t chunk, double rtol, double grad_rtol,
                     uint64_t seed)
{
    const int64_t N = 37, D = 48, C = 53;
    prob p;
    prob_make(&p, seed, N, D, C, dt, k->bias, k->weights, k->ignored,
              k->per_row, k->i32);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, N, D, C);
    d.dtype = dt;
    d.target_type = k->i32 ? XENT_TARGET_INDEX_I32 : XENT_TARGET_INDEX_I64;
    d.reduction = k->red;
    d.label_smoothing = k->ls;
    d.z_loss = k->zl;
    d.softcap = k->cap;
    d.flags = flags;
    refout r;
    reference(&p, &d, k->scale, &r);
    xent_handle_t h = make_handle(3);
    int want = (k->red == XENT_REDUCTION_NONE ? 0 : 1) | 2 | 4 | 8 | 16 | 32;
    libout o = run_lib(h, &p, &d, k->scale, chunk, want);
    check_all(&p, &d, &r, &o, rtol, grad_rtol);
    libout_free(&o);
    refout_free(&r);
    xent_destroy(h);
    prob_free(&p);
}

Test(LIN_SUITE, every_option_f32)
{
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++)
        run_case(&k_cases[i], XENT_DTYPE_F32, 0, 8, 1e-5, 1e-5, 100 + i);
}

/* bf16 inputs, fp32 outputs: fp32 math on the rounded inputs */
Test(LIN_SUITE, every_option_bf16_inputs_f32_grads)
{
#ifdef LIN_GPU
    /* the GPU rounds G to bf16 before the backward GEMMs (tensor cores),
     * so dH / dW carry one bf16 rounding of G: 2^-8 */
    const double grad_rtol = 1.0 / 256;
#else
    const double grad_rtol = 1e-5;
#endif
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++)
        run_case(&k_cases[i], XENT_DTYPE_BF16, XENT_FLAG_GRAD_F32, 16, 1e-5,
                 grad_rtol, 200 + i);
}

/* bf16 outputs from one chunk: one bf16 rounding */
Test(LIN_SUITE, bf16_outputs)
{
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i += 3)
        run_case(&k_cases[i], XENT_DTYPE_BF16, 0, 64, 1e-5, 1.0 / 256,
                 300 + i);
}

/* ---- finite differences on a tiny problem ------------------------------- */

static double ref_loss_of(const prob *p, const xent_linear_ce_desc *d)
{
    refout r;
    reference(p, d, 1.0, &r);
    double l = r.loss;
    refout_free(&r);
    return l;
}

Test(LIN_SUITE, finite_differences)
{
    prob p;
    prob_make(&p, 7, 3, 4, 5, XENT_DTYPE_F32, 1, 1, 0, 0, 0);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 3, 4, 5);
    d.label_smoothing = 0.1f;
    d.z_loss = 1e-2f;
    d.softcap = 4.0f;
    xent_handle_t h = make_handle(1);
    libout o = run_lib(h, &p, &d, 1.0f, 2, 1 | 8 | 16 | 32);
    cr_assert_eq(o.st, XENT_STATUS_SUCCESS);
    const double eps = 1e-6;
    struct {
        double *x;
        int64_t n;
        const float *g;
        const char *what;
    } vars[] = {{p.H, 12, o.dH, "dH"}, {p.W, 20, o.dW, "dW"},
                {p.b, 5, o.db, "dbias"}};
    for (int v = 0; v < 3; v++) {
        double fd[32];
        for (int64_t i = 0; i < vars[v].n; i++) {
            double x0 = vars[v].x[i];
            vars[v].x[i] = x0 + eps;
            double lp = ref_loss_of(&p, &d);
            vars[v].x[i] = x0 - eps;
            double lm = ref_loss_of(&p, &d);
            vars[v].x[i] = x0;
            fd[i] = (lp - lm) / (2 * eps);
        }
        /* central differences in double: error ~1e-9; the library's fp32
         * math: 1e-5 of the tensor's scale */
        check_tensor(fd, vars[v].g, vars[v].n, 1e-5, vars[v].what);
    }
    libout_free(&o);
    xent_destroy(h);
    prob_free(&p);
}

/* ---- chunking, determinism ------------------------------------------------ */

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

Test(LIN_SUITE, chunk_sizes_agree_and_repeat_bitwise)
{
    const int64_t N = 45, D = 40, C = 61;
    prob p;
    prob_make(&p, 11, N, D, C, XENT_DTYPE_F32, 1, 1, 3, 0, 0);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, N, D, C);
    d.label_smoothing = 0.1f;
    d.z_loss = 1e-4f;
    xent_handle_t h = make_handle(3);
    const int all = 1 | 2 | 4 | 8 | 16 | 32;
    libout whole = run_lib(h, &p, &d, 1.0f, N, all);
    refout r;
    reference(&p, &d, 1.0, &r);
    check_all(&p, &d, &r, &whole, 1e-5, 1e-5);
    const int64_t chunks[] = {1, 4, 7, 16, 44, 45, 1000};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        libout a = run_lib(h, &p, &d, 1.0f, chunks[k], all);
        libout b = run_lib(h, &p, &d, 1.0f, chunks[k], all);
        check_all(&p, &d, &r, &a, 1e-5, 1e-5);
        cr_assert(a.loss == b.loss || (isnan(a.loss) && isnan(b.loss)));
        cr_assert(same_bits(a.rows, b.rows, N) && same_bits(a.lse, b.lse, N) &&
                      same_bits(a.dH, b.dH, N * D) &&
                      same_bits(a.dW, b.dW, C * D) &&
                      same_bits(a.db, b.db, C),
                  "chunk %lld: not bitwise reproducible", (long long)chunks[k]);
#ifndef LIN_GPU
        /* CPU: each output's k-sum runs in a fixed order whatever the chunk,
         * so the per-row results do not depend on it, bitwise. (cuBLAS may
         * pick another kernel for another n, so not asserted on a GPU.) */
        cr_assert(same_bits(a.rows, whole.rows, N) &&
                      same_bits(a.dH, whole.dH, N * D),
                  "chunk %lld: per-row results depend on the chunk",
                  (long long)chunks[k]);
#endif
        libout_free(&a);
        libout_free(&b);
    }
#ifndef LIN_GPU
    /* thread count does not change a bit */
    xent_handle_t h1 = make_handle(1);
    libout a = run_lib(h1, &p, &d, 1.0f, 7, all);
    libout b = run_lib(h, &p, &d, 1.0f, 7, all);
    cr_assert(a.loss == b.loss && same_bits(a.dW, b.dW, C * D) &&
              same_bits(a.dH, b.dH, N * D) && same_bits(a.db, b.db, C));
    libout_free(&a);
    libout_free(&b);
    xent_destroy(h1);
#endif
    libout_free(&whole);
    refout_free(&r);
    xent_destroy(h);
    prob_free(&p);
}

/* ---- workspace budget ----------------------------------------------------- */

Test(LIN_SUITE, workspace_budget)
{
    xent_handle_t h = make_handle(1);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 1000, 64, 5000);
    size_t one = 0, seven = 0, big = 0;
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 1, &one),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 7, &seven),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 1000, &big),
                 XENT_STATUS_SUCCESS);
    /* chunk x C fp32 plus O(N + C), never N x C per chunk step */
    cr_assert(seven - one >= 6 * 5000 * 4 - 256 &&
              seven - one < 7 * 5000 * 4 + 4096);
    cr_assert(one < 2 * 5000 * 4 + 4000 * 4 + 4096);
    int64_t ch = 0;
    cr_assert_eq(xent_linear_ce_chunk_rows(h, &d, seven, &ch),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(ch, 7);
    cr_assert_eq(xent_linear_ce_chunk_rows(h, &d, (size_t)1 << 40, &ch),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(ch, 1000);
    cr_assert_eq(xent_linear_ce_chunk_rows(h, &d, one - 1, &ch),
                 XENT_STATUS_WORKSPACE_TOO_SMALL);
    cr_assert_eq(xent_linear_ce_chunk_rows(h, &d, 0, &ch),
                 XENT_STATUS_WORKSPACE_TOO_SMALL);
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 0, &one),
                 XENT_STATUS_INVALID_SIZE);
    (void)big;

    /* a compute call with one byte too few */
    prob p;
    prob_make(&p, 3, 9, 8, 10, XENT_DTYPE_F32, 0, 0, 0, 0, 0);
    xent_linear_ce_desc_init(&d, 9, 8, 10);
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(h, NULL, &ctx), XENT_STATUS_SUCCESS);
    size_t need = 0;
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 4, &need),
                 XENT_STATUS_SUCCESS);
    void *ws = mem_alloc(need);
    float *loss = mem_alloc(4);
    xent_linear_ce_outputs out = {loss, NULL, NULL, NULL, NULL, NULL};
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, NULL, p.my, NULL, &out,
                                4, ws, need - 1),
                 XENT_STATUS_WORKSPACE_TOO_SMALL);
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, NULL, p.my, NULL, &out,
                                4, ws, need),
                 XENT_STATUS_SUCCESS);
    mem_free(ws);
    mem_free(loss);
    xent_linear_ce_destroy(ctx);
    xent_destroy(h);
    prob_free(&p);
}

/* ---- argument checks and data problems ------------------------------------ */

Test(LIN_SUITE, bad_arguments)
{
    xent_handle_t h = make_handle(1);
    prob p;
    prob_make(&p, 5, 6, 8, 10, XENT_DTYPE_F32, 1, 0, 0, 0, 0);
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(NULL, NULL, &ctx),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_linear_ce_create(h, NULL, NULL),
                 XENT_STATUS_NULL_POINTER);
#ifndef LIN_GPU
    int fake;
    cr_assert_eq(xent_linear_ce_create(h, &fake, &ctx),
                 XENT_STATUS_UNSUPPORTED);
#endif
    cr_assert_eq(xent_linear_ce_create(h, NULL, &ctx), XENT_STATUS_SUCCESS);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 6, 8, 10);
    size_t wsb = 0;
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 6, &wsb),
                 XENT_STATUS_SUCCESS);
    void *ws = mem_alloc(wsb);
    float *loss = mem_alloc(4);
    float *dH = mem_alloc(6 * 8 * 4);
    float *dW = mem_alloc(10 * 8 * 4);
    xent_linear_ce_outputs out = {loss, NULL, NULL, dH, dW, NULL};
#define CALL(dd, o) \
    xent_linear_ce(ctx, (dd), p.mH, p.mW, p.mb, p.my, NULL, (o), 6, ws, wsb)
    cr_assert_eq(CALL(&d, &out), XENT_STATUS_SUCCESS);
    cr_assert_eq(xent_linear_ce(NULL, &d, p.mH, p.mW, p.mb, p.my, NULL, &out,
                                6, ws, wsb),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(CALL(NULL, &out), XENT_STATUS_NULL_POINTER);
    cr_assert_eq(CALL(&d, NULL), XENT_STATUS_NULL_POINTER);
    xent_linear_ce_outputs none = {NULL, NULL, NULL, NULL, NULL, NULL};
    cr_assert_eq(CALL(&d, &none), XENT_STATUS_NULL_POINTER);
    xent_linear_ce_desc b = d;
    b.dtype = XENT_DTYPE_F16;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_UNSUPPORTED);
    b = d;
    b.target_type = XENT_TARGET_PROBS_F32;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_UNSUPPORTED);
    b = d;
    b.hidden = 0;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_SIZE);
    b = d;
    b.n_rows = -1;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_SIZE);
    b = d;
    b.n_classes = 0;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_SIZE);
    b = d;
    b.label_smoothing = 1.5f;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_VALUE);
    b = d;
    b.flags = 1u << 7;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_VALUE);
    b = d;
    b.reduction = XENT_REDUCTION_NONE;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_VALUE); /* d_loss */
    b = d;
    b.weights = p.mcw; /* NULL pointer set */
    b.n_weights = 3;
    b.weights = (const float *)loss;
    cr_assert_eq(CALL(&b, &out), XENT_STATUS_INVALID_SIZE);
    cr_assert_eq(xent_linear_ce(ctx, &d, NULL, p.mW, p.mb, p.my, NULL, &out,
                                6, ws, wsb),
                 XENT_STATUS_NULL_POINTER);
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, p.mb, p.my, NULL, &out,
                                0, ws, wsb),
                 XENT_STATUS_INVALID_SIZE);
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, p.mb, p.my, NULL, &out,
                                6, NULL, wsb),
                 XENT_STATUS_NULL_POINTER);
    /* aliasing: dH over H, dW inside the workspace, loss over dW */
    xent_linear_ce_outputs al = out;
    al.d_dhidden = p.mH;
    cr_assert_eq(CALL(&d, &al), XENT_STATUS_ALIASING);
    al = out;
    al.d_dweight = ws;
    cr_assert_eq(CALL(&d, &al), XENT_STATUS_ALIASING);
    al = out;
    al.d_loss = dW;
    cr_assert_eq(CALL(&d, &al), XENT_STATUS_ALIASING);
    /* upstream checks */
    xent_upstream u = xent_upstream_default();
    u.scale = INFINITY;
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, p.mb, p.my, &u, &out, 6,
                                ws, wsb),
                 XENT_STATUS_INVALID_VALUE);
    u = xent_upstream_default();
    u.d_dloss = loss;
    u.dloss_stride = 1; /* per-row upstream under MEAN */
    xent_linear_ce_outputs o2 = {NULL, NULL, NULL, dH, NULL, NULL};
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, p.mb, p.my, &u, &o2, 6,
                                ws, wsb),
                 XENT_STATUS_INVALID_VALUE);
#undef CALL
    mem_free(ws), mem_free(loss), mem_free(dH), mem_free(dW);
    xent_linear_ce_destroy(ctx);
    xent_destroy(h);
    prob_free(&p);
}

#ifndef LIN_GPU
Test(LIN_SUITE, data_problems_on_cpu)
{
    xent_handle_t h = make_handle(2);
    prob p;
    prob_make(&p, 9, 6, 8, 10, XENT_DTYPE_F32, 0, 0, 0, 0, 0);
    ((int64_t *)p.my)[2] = 10; /* out of range */
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 6, 8, 10);
    d.reduction = XENT_REDUCTION_SUM;
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(h, NULL, &ctx), XENT_STATUS_SUCCESS);
    size_t wsb = 0;
    xent_linear_ce_workspace_size(h, &d, 4, &wsb);
    void *ws = malloc(wsb);
    float rows[6], dH[48];
    xent_linear_ce_outputs out = {NULL, rows, NULL, dH, NULL, NULL};
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, NULL, p.my, NULL, &out,
                                4, ws, wsb),
                 XENT_STATUS_TARGET_OUT_OF_RANGE);
    cr_assert(isnan(rows[2]) && !isnan(rows[1]) && !isnan(rows[5]));
    cr_assert(isnan(dH[2 * 8]) && !isnan(dH[0]) && !isnan(dH[5 * 8]));
    xent_data_report rep;
    cr_assert_eq(xent_read_data_report(h, &rep, 1), XENT_STATUS_SUCCESS);
    cr_assert(rep.flags & XENT_DATA_TARGET_OUT_OF_RANGE);
    cr_assert_eq(rep.first_row, 2);
    ((int64_t *)p.my)[2] = 1;
    float w[10];
    for (int j = 0; j < 10; j++)
        w[j] = 1.0f;
    w[4] = -1.0f;
    d.weights = w;
    d.n_weights = 10;
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, NULL, p.my, NULL, &out,
                                4, ws, wsb),
                 XENT_STATUS_INVALID_DATA);
    free(ws);
    xent_linear_ce_destroy(ctx);
    xent_destroy(h);
    prob_free(&p);
}
#endif

Test(LIN_SUITE, empty_batch)
{
    xent_handle_t h = make_handle(1);
    prob p;
    prob_make(&p, 1, 0, 8, 10, XENT_DTYPE_F32, 1, 0, 0, 0, 0);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 0, 8, 10);
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(h, NULL, &ctx), XENT_STATUS_SUCCESS);
    int64_t ch = 0;
    cr_assert_eq(xent_linear_ce_chunk_rows(h, &d, 1 << 20, &ch),
                 XENT_STATUS_SUCCESS);
    cr_assert_eq(ch, 1);
    size_t wsb = 0;
    xent_linear_ce_workspace_size(h, &d, 1, &wsb);
    void *ws = mem_alloc(wsb);
    float *loss = mem_alloc(4);
    float *dW = mem_alloc(80 * 4), *db = mem_alloc(40);
    fill_mem(dW, 0x7f, 320);
    fill_mem(db, 0x7f, 40);
    xent_linear_ce_outputs out = {loss, NULL, NULL, NULL, dW, db};
    cr_assert_eq(xent_linear_ce(ctx, &d, NULL, p.mW, p.mb, NULL, NULL, &out, 1,
                                ws, wsb),
                 XENT_STATUS_SUCCESS);
    float hl, hw[80], hb[10];
    from_mem(&hl, loss, 4);
    from_mem(hw, dW, 320);
    from_mem(hb, db, 40);
    cr_assert_eq(hl, 0.0f);
    for (int i = 0; i < 80; i++)
        cr_assert_eq(hw[i], 0.0f);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(hb[i], 0.0f);
    d.flags = XENT_FLAG_EMPTY_MEAN_NAN;
    cr_assert_eq(xent_linear_ce(ctx, &d, NULL, p.mW, p.mb, NULL, NULL, &out, 1,
                                ws, wsb),
                 XENT_STATUS_SUCCESS);
    from_mem(&hl, loss, 4);
    cr_assert(isnan(hl));
    mem_free(ws), mem_free(loss), mem_free(dW), mem_free(db);
    xent_linear_ce_destroy(ctx);
    xent_destroy(h);
    prob_free(&p);
}
