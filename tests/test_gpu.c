/*
 * test_gpu.c - the CUDA backend against the float64 reference: the shared
 * conformance table (tests/conformance.c) in device memory, every case and
 * kernel variant, plus what only a GPU has: CUDA graph capture of a compute
 * call, the handle's stream, the device status word (an out-of-range target
 * never traps and the context stays usable), and N * C > 2^31 with 64-bit
 * offsets checked on sampled rows.
 *
 * Without a CUDA device the binary prints one line and exits 77 (ctest's
 * SKIP_RETURN_CODE), unless XENT_REQUIRE_GPU=1, which makes that a failure:
 * its main is tests/gpu_main.c, which checks for a device in a child
 * process, so this process never initializes CUDA before Criterion starts
 * its test workers.
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cancellation.h"
#include "conformance.h"
#include "ref.h"
#include "testutil.h"
#include "xent.h"

#define CUDA_OK(expr)                                                        \
    do {                                                                     \
        cudaError_t e_ = (expr);                                             \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #expr,                       \
                     cudaGetErrorString(e_));                                \
    } while (0)

#define XENT_OK(expr)                                                        \
    do {                                                                     \
        xent_status s_ = (expr);                                             \
        cr_assert_eq(s_, XENT_STATUS_SUCCESS, "%s: %s", #expr,               \
                     xent_status_string(s_));                                \
    } while (0)

/* ---- device memory as a tu_mem ---------------------------------------- */

static void *gpu_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void gpu_release(void *p) { (void)cudaFree(p); }

/* A kernel fault shows at the next synchronizing call; the context is
 * then unusable, so these abort the test, naming the case. */
#define CUDA_CASE_OK(expr)                                                   \
    do {                                                                     \
        cudaError_t e_ = (expr);                                             \
        cr_assert_eq(e_, cudaSuccess, "%s: %s: %s", conf_current_case(),     \
                     #expr, cudaGetErrorString(e_));                         \
    } while (0)

static void gpu_upload(void *dst, const void *src, size_t bytes)
{
    CUDA_CASE_OK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void gpu_download(void *dst, const void *src, size_t bytes)
{
    CUDA_CASE_OK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void gpu_sync(void) { CUDA_CASE_OK(cudaDeviceSynchronize()); }

static const tu_mem gpu_mem = {gpu_alloc, gpu_release, gpu_upload,
                               gpu_download, gpu_sync};

static xent_handle_t make_gpu(void)
{
    xent_handle_t h = NULL;
    XENT_OK(xent_create(&h));
    return h;
}

/* ---- the conformance table, one test per group (shape) ----------------- */
/* Each worker process pays for a CUDA context, so the cases of a group run
 * in one test; every failing case is still reported (cr_expect) with its
 * one-line description. */

/* XENT_TEST_QUICK=1 (the compute-sanitizer runs): a quarter of the table
 * and no multi-gigabyte test, so the instrumented run stays short. */
static int quick_mode(void)
{
    const char *q = getenv("XENT_TEST_QUICK");
    return q && strcmp(q, "1") == 0;
}

static void free_groups(struct criterion_test_params *p) { cr_free(p->params); }

ParameterizedTestParameters(gpu, conformance)
{
    int n = conf_group_count();
    int *groups = cr_malloc((size_t)n * sizeof *groups);
    for (int g = 0; g < n; g++)
        groups[g] = g;
    return cr_make_param_array(int, groups, (size_t)n, free_groups);
}

ParameterizedTest(int *group, gpu, conformance)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    xent_handle_t h = make_gpu();
    int cases = 0, failed = 0;
    for (size_t k = 0; k < n; k++) {
        if (t[k].group != *group)
            continue;
        if (quick_mode() && k % 4 != 0)
            continue;
        cases++;
        int ok = conf_run_case(h, &gpu_mem, &t[k]);
        /* the same subsets as test_cpu.c */
        if (k % 4 == 0)
            ok &= conf_determinism(h, &gpu_mem, &t[k]);
        if (k % 3 == 1 && t[k].op != CONF_OP_FWD)
            ok &= conf_inplace_matches_separate(h, &gpu_mem, &t[k]);
        failed += !ok;
    }
    cr_expect_eq(failed, 0, "group %s: %d of %d cases failed",
                 conf_group_name(*group), failed, cases);
    cr_assert_gt(cases, 0);
    xent_destroy(h);
}

/* ---- p_y -> 1 without cancellation, on every variant ------------------ */

Test(gpu, cancellation_free_target_terms)
{
    xent_handle_t h = make_gpu();
    conf_cancellation(h, &gpu_mem, XENT_VARIANT_WARP_ROW);
    conf_cancellation(h, &gpu_mem, XENT_VARIANT_BLOCK_ROW);
    conf_cancellation(h, &gpu_mem, XENT_VARIANT_AUTO);
    xent_destroy(h);
}

/* ---- small fixtures for the device-only tests ------------------------- */

typedef struct small_problem {
    int64_t n, c, ld;
    float *z;   /* host [n * ld] */
    int64_t *y; /* host [n] */
    float *w;   /* host [c] */
    void *d_z, *d_y, *d_w, *d_grad, *d_loss, *d_rows, *d_lse, *d_ws;
    size_t ws_bytes;
    xent_ce_desc desc;
} small_problem;

static void small_init(small_problem *p, xent_handle_t h, int64_t n,
                       int64_t c, int64_t ld, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->c = c;
    p->ld = ld;
    tu_rng r;
    tu_rng_seed(&r, seed);
    p->z = calloc((size_t)(n * ld), sizeof(float));
    p->y = calloc((size_t)n, sizeof(int64_t));
    p->w = calloc((size_t)c, sizeof(float));
    cr_assert(p->z && p->y && p->w);
    tu_fill_logits(&r, n, c, ld, p->z, NAN);
    tu_fill_targets_i64(&r, n, c, p->y);
    tu_fill_uniform_f32(&r, c, 0.5f, 1.5f, p->w);
    for (int64_t i = 1; i < n; i += 5)
        p->y[i] = -100;
    xent_ce_desc_init(&p->desc, n, c);
    p->desc.ld = ld;
    p->desc.reduction = XENT_REDUCTION_MEAN;
    p->desc.label_smoothing = 0.1f;
    p->desc.z_loss = 1e-4f;
    p->desc.n_weights = c;
    XENT_OK(xent_ce_workspace_size(h, &p->desc, &p->ws_bytes));
    const size_t zb = (size_t)(n * ld) * sizeof(float);
    CUDA_OK(cudaMalloc(&p->d_z, zb));
    CUDA_OK(cudaMalloc(&p->d_y, (size_t)n * sizeof(int64_t)));
    CUDA_OK(cudaMalloc(&p->d_w, (size_t)c * sizeof(float)));
    CUDA_OK(cudaMalloc(&p->d_grad, zb));
    CUDA_OK(cudaMalloc(&p->d_loss, sizeof(float)));
    CUDA_OK(cudaMalloc(&p->d_rows, (size_t)n * sizeof(float)));
    CUDA_OK(cudaMalloc(&p->d_lse, (size_t)n * sizeof(float)));
    CUDA_OK(cudaMalloc(&p->d_ws, p->ws_bytes ? p->ws_bytes : 1));
    CUDA_OK(cudaMemcpy(p->d_z, p->z, zb, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p->d_y, p->y, (size_t)n * sizeof(int64_t),
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p->d_w, p->w, (size_t)c * sizeof(float),
                       cudaMemcpyHostToDevice));
    p->desc.weights = p->d_w;
}

/* Poison every output (0xff bytes: NaN). */
static void small_poison(small_problem *p)
{
    const size_t zb = (size_t)(p->n * p->ld) * sizeof(float);
    CUDA_OK(cudaMemset(p->d_grad, 0xff, zb));
    CUDA_OK(cudaMemset(p->d_loss, 0xff, sizeof(float)));
    CUDA_OK(cudaMemset(p->d_rows, 0xff, (size_t)p->n * sizeof(float)));
    CUDA_OK(cudaMemset(p->d_lse, 0xff, (size_t)p->n * sizeof(float)));
    CUDA_OK(cudaDeviceSynchronize());
}

static xent_status small_fwd_bwd(xent_handle_t h, small_problem *p)
{
    return xent_ce_forward_backward(h, &p->desc, p->d_z, p->d_y, NULL,
                                    p->d_grad, p->d_loss, p->d_rows, p->d_lse,
                                    p->d_ws, p->ws_bytes);
}

/* All outputs, downloaded into one host blob. */
static unsigned char *small_outputs(const small_problem *p, size_t *bytes)
{
    const size_t zb = (size_t)(p->n * p->ld) * sizeof(float);
    const size_t rb = (size_t)p->n * sizeof(float);
    *bytes = zb + sizeof(float) + 2 * rb;
    unsigned char *o = malloc(*bytes);
    cr_assert_not_null(o);
    CUDA_OK(cudaMemcpy(o, p->d_grad, zb, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(o + zb, p->d_loss, sizeof(float),
                       cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(o + zb + sizeof(float), p->d_rows, rb,
                       cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(o + zb + sizeof(float) + rb, p->d_lse, rb,
                       cudaMemcpyDeviceToHost));
    return o;
}

static void small_free(small_problem *p)
{
    void *d[] = {p->d_z,    p->d_y,    p->d_w,   p->d_grad,
                 p->d_loss, p->d_rows, p->d_lse, p->d_ws};
    for (size_t k = 0; k < sizeof d / sizeof d[0]; k++)
        (void)cudaFree(d[k]);
    free(p->z);
    free(p->y);
    free(p->w);
}

/* ---- the handle's stream ------------------------------------------------ */

Test(gpu, stream_round_trip)
{
    xent_handle_t h = make_gpu();
    struct CUstream_st *s = (struct CUstream_st *)0x1;
    XENT_OK(xent_get_stream(h, &s));
    cr_assert_null(s, "a new handle is on the default stream");
    cudaStream_t mine;
    CUDA_OK(cudaStreamCreateWithFlags(&mine, cudaStreamNonBlocking));
    XENT_OK(xent_set_stream(h, mine));
    XENT_OK(xent_get_stream(h, &s));
    cr_assert_eq(s, mine);
    XENT_OK(xent_set_stream(h, NULL));
    XENT_OK(xent_get_stream(h, &s));
    cr_assert_null(s);
    xent_backend b;
    XENT_OK(xent_get_backend(h, &b));
    cr_assert_eq(b, XENT_BACKEND_CUDA);

    /* work queued on a non-blocking stream lands there: a call followed by
     * a synchronization of that stream alone gives the finished result */
    small_problem p;
    small_init(&p, h, 40, 257, 260, 11);
    small_poison(&p);
    XENT_OK(xent_set_stream(h, mine));
    XENT_OK(small_fwd_bwd(h, &p));
    CUDA_OK(cudaStreamSynchronize(mine));
    float loss;
    CUDA_OK(cudaMemcpy(&loss, p.d_loss, sizeof loss, cudaMemcpyDeviceToHost));
    cr_assert(isfinite(loss) && loss > 0.0f, "loss %g", (double)loss);
    small_free(&p);
    CUDA_OK(cudaStreamDestroy(mine));
    xent_destroy(h);
}

/* ---- CUDA graph capture ------------------------------------------------- */

/* A compute call inside cudaStreamBeginCapture (global mode) must not
 * synchronize, allocate or copy to the host (any of which invalidates the
 * capture); the replayed graph gives bitwise the direct call's results. */
Test(gpu, graph_capture_replays_bitwise)
{
    xent_handle_t h = make_gpu();
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    XENT_OK(xent_set_stream(h, s));
    small_problem p;
    small_init(&p, h, 96, 1001, 1008, 21);

    /* direct */
    small_poison(&p);
    XENT_OK(small_fwd_bwd(h, &p));
    CUDA_OK(cudaStreamSynchronize(s));
    size_t bytes;
    unsigned char *direct = small_outputs(&p, &bytes);

    /* captured */
    small_poison(&p);
    cudaGraph_t graph;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    xent_status st = small_fwd_bwd(h, &p);
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "call under capture: %s",
                 xent_status_string(st));
    cr_assert_eq(end, cudaSuccess,
                 "the call broke the capture (a sync, alloc or D2H copy "
                 "inside?): %s",
                 cudaGetErrorString(end));
    size_t nodes = 0;
    CUDA_OK(cudaGraphGetNodes(graph, NULL, &nodes));
    cr_assert_gt(nodes, 0, "nothing was captured");
    /* capture only records: the outputs are still poison */
    unsigned char *before = small_outputs(&p, &bytes);
    float loss_before;
    memcpy(&loss_before, before + (bytes - sizeof(float) -
                                   2 * (size_t)p.n * sizeof(float)),
           sizeof loss_before);
    cr_assert(isnan(loss_before), "capture ran the work eagerly");
    free(before);

    cudaGraphExec_t exec;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; replay++) {
        small_poison(&p);
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaStreamSynchronize(s));
        unsigned char *got = small_outputs(&p, &bytes);
        size_t at = 0;
        while (at < bytes && got[at] == direct[at])
            at++;
        cr_expect_eq(at, bytes,
                     "replay %d differs from the direct call at byte %zu",
                     replay, at);
        free(got);
    }

    /* the other two ops capture as well */
    float *d_lse2 = NULL;
    CUDA_OK(cudaMalloc((void **)&d_lse2, (size_t)p.n * sizeof(float)));
    cudaGraph_t graph2;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    xent_status st1 = xent_ce_forward(h, &p.desc, p.d_z, p.d_y, p.d_loss,
                                      NULL, d_lse2, p.d_ws, p.ws_bytes);
    xent_status st2 = xent_ce_backward(h, &p.desc, p.d_z, p.d_y, d_lse2, NULL,
                                       p.d_grad, p.d_ws, p.ws_bytes);
    end = cudaStreamEndCapture(s, &graph2);
    cr_assert_eq(st1, XENT_STATUS_SUCCESS, "%s", xent_status_string(st1));
    cr_assert_eq(st2, XENT_STATUS_SUCCESS, "%s", xent_status_string(st2));
    cr_assert_eq(end, cudaSuccess, "forward/backward broke the capture: %s",
                 cudaGetErrorString(end));
    cudaGraphExec_t exec2;
    CUDA_OK(cudaGraphInstantiate(&exec2, graph2, 0));
    small_poison(&p);
    CUDA_OK(cudaGraphLaunch(exec2, s));
    CUDA_OK(cudaStreamSynchronize(s));
    float loss;
    CUDA_OK(cudaMemcpy(&loss, p.d_loss, sizeof loss, cudaMemcpyDeviceToHost));
    float direct_loss;
    memcpy(&direct_loss,
           direct + (size_t)(p.n * p.ld) * sizeof(float), sizeof direct_loss);
    cr_expect_eq(memcmp(&loss, &direct_loss, sizeof loss), 0,
                 "captured forward loss %.9g vs fused %.9g", (double)loss,
                 (double)direct_loss);

    CUDA_OK(cudaGraphExecDestroy(exec2));
    CUDA_OK(cudaGraphDestroy(graph2));
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    (void)cudaFree(d_lse2);
    free(direct);
    small_free(&p);
    XENT_OK(xent_set_stream(h, NULL));
    CUDA_OK(cudaStreamDestroy(s));
    xent_destroy(h);
}

/* ---- the device status word --------------------------------------------- */

Test(gpu, data_report_after_bad_targets)
{
    xent_handle_t h = make_gpu();
    enum { N = 12, C = 33 };
    small_problem p;
    small_init(&p, h, N, C, C, 31);
    p.desc.reduction = XENT_REDUCTION_NONE;
    p.desc.label_smoothing = 0.0f;
    p.desc.z_loss = 0.0f;
    p.desc.weights = NULL;
    p.desc.n_weights = 0;

    xent_data_report rep;
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_assert_eq(rep.flags, 0u);
    cr_assert_eq(rep.first_row, -1);

    /* rows 3 and 7 out of range (one past the end, and negative) */
    int64_t y[N];
    memcpy(y, p.y, sizeof y);
    y[3] = C;
    y[7] = -7;
    if (y[0] == -100)
        y[0] = 0;
    CUDA_OK(cudaMemcpy(p.d_y, y, sizeof y, cudaMemcpyHostToDevice));
    small_poison(&p);
    /* asynchronous on a CUDA handle: the call itself succeeds */
    XENT_OK(xent_ce_forward_backward(h, &p.desc, p.d_z, p.d_y, NULL, p.d_grad,
                                     NULL, p.d_rows, p.d_lse, NULL, 0));
    CUDA_OK(cudaDeviceSynchronize()); /* no trap: the context is fine */
    XENT_OK(xent_read_data_report(h, &rep, 0));
    cr_assert(rep.flags & XENT_DATA_TARGET_OUT_OF_RANGE, "flags %#x",
              rep.flags);
    cr_assert_eq(rep.first_row, 3);

    /* those rows are NaN, the others match the reference */
    float rows[N], grad[N * C];
    CUDA_OK(cudaMemcpy(rows, p.d_rows, sizeof rows, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(grad, p.d_grad, sizeof grad, cudaMemcpyDeviceToHost));
    double z[N * C], ref_rows[N], ref_grad[N * C], got_rows[N], got_grad[N * C];
    tu_f32_to_f64(p.z, z, N * C);
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    ref_ce_index(N, C, z, C, y, &o, ref_rows, NULL, ref_grad);
    cr_assert(isnan(ref_rows[3]) && isnan(ref_rows[7]));
    tu_f32_to_f64(rows, got_rows, N);
    tu_f32_to_f64(grad, got_grad, N * C);
    conf_check_close("bad targets", "loss rows", ref_rows, got_rows, N, 0.0,
                     0);
    conf_check_close("bad targets", "gradient", ref_grad, got_grad, N * C,
                     0.0, C);

    /* sticky until reset; reset clears it */
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_assert_eq(rep.first_row, 3);
    XENT_OK(xent_read_data_report(h, &rep, 0));
    cr_assert_eq(rep.flags, 0u);
    cr_assert_eq(rep.first_row, -1);

    /* a negative class weight on a target row is recorded the same way */
    float w[C];
    for (int j = 0; j < C; j++)
        w[j] = 1.0f;
    int64_t y2[N];
    memcpy(y2, p.y, sizeof y2);
    y2[5] = 2;
    w[2] = -1.0f;
    CUDA_OK(cudaMemcpy(p.d_w, w, sizeof w, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p.d_y, y2, sizeof y2, cudaMemcpyHostToDevice));
    p.desc.weights = p.d_w;
    p.desc.n_weights = C;
    XENT_OK(xent_ce_forward(h, &p.desc, p.d_z, p.d_y, NULL, p.d_rows, NULL,
                            NULL, 0));
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_assert(rep.flags & XENT_DATA_NEGATIVE_WEIGHT, "flags %#x", rep.flags);
    cr_assert_leq(rep.first_row, 5);
    CUDA_OK(cudaMemcpy(rows, p.d_rows, sizeof rows, cudaMemcpyDeviceToHost));
    cr_assert(isnan(rows[5]), "row with a negative target weight: %g",
              (double)rows[5]);

    /* the context stays usable: a correct call succeeds and is right */
    w[2] = 1.0f;
    CUDA_OK(cudaMemcpy(p.d_w, w, sizeof w, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p.d_y, p.y, sizeof y, cudaMemcpyHostToDevice));
    p.desc.weights = NULL;
    p.desc.n_weights = 0;
    p.desc.reduction = XENT_REDUCTION_MEAN;
    small_poison(&p);
    XENT_OK(xent_ce_forward_backward(h, &p.desc, p.d_z, p.d_y, NULL, p.d_grad,
                                     p.d_loss, NULL, NULL, p.d_ws,
                                     p.ws_bytes));
    CUDA_OK(cudaDeviceSynchronize());
    float loss;
    CUDA_OK(cudaMemcpy(&loss, p.d_loss, sizeof loss, cudaMemcpyDeviceToHost));
    o.reduction = 1;
    double ref_loss = ref_ce_index(N, C, z, C, p.y, &o, NULL, NULL, NULL);
    double got_loss = (double)loss;
    conf_check_close("after bad targets", "reduced loss", &ref_loss,
                     &got_loss, 1, 0.0, 0);
    XENT_OK(xent_read_data_report(h, &rep, 0));
    cr_assert_eq(rep.flags, 0u, "a clean call leaves the word clean");
    small_free(&p);
    xent_destroy(h);
}

/* ---- N * C > 2^31 --------------------------------------------------------- */

/*
 * N = 32769 rows of C = 65537 classes (N * C = 2^31 + 65537 elements; the
 * fp32 buffer is 8.6 GB, so byte offsets pass 2^32 too), row stride C
 * (odd: no row is aligned). The whole buffer is set to one value with
 * cudaMemset; 32 sampled rows (the first, the last, the rows around element
 * 2^30 and 2^31, and random ones) get realistic peaked logits, half of
 * them, and keep the constant row otherwise. Fused forward + backward in
 * place, reduction NONE; then for every sampled row the gradient, loss and
 * lse against the reference, and every row's loss and lse (the constant
 * rows all have the same reference) so an unprocessed row shows.
 */
#define HUGE_N 32769
#define HUGE_C 65537
#define HUGE_SAMPLES 32

static void huge_run(xent_handle_t h, xent_dtype dt, xent_variant variant)
{
    const int64_t n = HUGE_N, c = HUGE_C, ld = HUGE_C;
    const size_t esz = dt == XENT_DTYPE_F32 ? 4 : 2;
    const size_t zbytes = (size_t)n * (size_t)ld * esz;
    char desc[128];
    snprintf(desc, sizeof desc, "[%lldx%lld %s in-place none var=%s]",
             (long long)n, (long long)c, dt == XENT_DTYPE_F32 ? "f32" : "bf16",
             xent_variant_name(variant));

    size_t free_b = 0, total_b = 0;
    CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    const size_t need = zbytes + (size_t)n * 16 + ((size_t)256 << 20);
    if (free_b < need) {
        cr_log_warn("%s: skipped, %zu MiB free, %zu MiB needed", desc,
                    free_b >> 20, need >> 20);
        return;
    }

    unsigned char *d_z = NULL;
    int64_t *d_y = NULL;
    float *d_rows = NULL, *d_lse = NULL;
    CUDA_OK(cudaMalloc((void **)&d_z, zbytes));
    CUDA_OK(cudaMalloc((void **)&d_y, (size_t)n * sizeof(int64_t)));
    CUDA_OK(cudaMalloc((void **)&d_rows, (size_t)n * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&d_lse, (size_t)n * sizeof(float)));
    CUDA_OK(cudaMemset(d_z, 0x3f, zbytes)); /* 0.747 in f32 and in bf16 */
    CUDA_OK(cudaMemset(d_rows, 0xff, (size_t)n * sizeof(float)));
    CUDA_OK(cudaMemset(d_lse, 0xff, (size_t)n * sizeof(float)));

    tu_rng r;
    tu_rng_seed(&r, 0x1a2b3c + (uint64_t)dt * 10 + (uint64_t)variant);
    int64_t *y = malloc((size_t)n * sizeof(int64_t));
    cr_assert_not_null(y);
    tu_fill_targets_i64(&r, n, c, y);
    CUDA_OK(cudaMemcpy(d_y, y, (size_t)n * sizeof(int64_t),
                       cudaMemcpyHostToDevice));

    /* the sampled rows: the first and last rows, the rows holding element
     * 2^30 (byte 2^32 in fp32) and 2^31, the middle, then random rows;
     * all distinct */
    const int64_t wanted[] = {0,
                              1,
                              n - 1,
                              n - 2,
                              (1ll << 30) / c,
                              (1ll << 30) / c + 1,
                              (1ll << 31) / c,
                              (1ll << 31) / c - 1,
                              n / 2 + 7};
    int64_t rows_at[HUGE_SAMPLES];
    int n_rows_at = 0;
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++) {
        int dup = 0;
        for (int q = 0; q < n_rows_at; q++)
            dup |= rows_at[q] == wanted[k];
        if (!dup)
            rows_at[n_rows_at++] = wanted[k];
    }
    while (n_rows_at < HUGE_SAMPLES) {
        int64_t i = tu_below(&r, n);
        int dup = 0;
        for (int q = 0; q < n_rows_at; q++)
            dup |= rows_at[q] == i;
        if (!dup)
            rows_at[n_rows_at++] = i;
    }
    unsigned char *row_bytes = malloc((size_t)c * esz);
    float *row_f = malloc((size_t)c * sizeof(float));
    double *zs = malloc((size_t)HUGE_SAMPLES * (size_t)c * sizeof(double));
    cr_assert(row_bytes && row_f && zs);
    /* the constant row, as stored */
    unsigned char pattern[4] = {0x3f, 0x3f, 0x3f, 0x3f};
    const float konst = conf_load(dt, pattern, 0);
    for (int k = 0; k < HUGE_SAMPLES; k++) {
        double *zk = zs + (size_t)k * (size_t)c;
        if (k % 2 == 0) { /* realistic row */
            tu_fill_logits(&r, 1, c, c, row_f, NAN);
            for (int64_t j = 0; j < c; j++) {
                conf_store(dt, row_bytes, j, row_f[j]);
                zk[j] = (double)conf_load(dt, row_bytes, j);
            }
            CUDA_OK(cudaMemcpy(d_z + (size_t)rows_at[k] * (size_t)ld * esz,
                               row_bytes, (size_t)c * esz,
                               cudaMemcpyHostToDevice));
        } else {
            for (int64_t j = 0; j < c; j++)
                zk[j] = (double)konst;
        }
    }

    xent_ce_desc d;
    xent_ce_desc_init(&d, n, c);
    d.ld = ld;
    d.logits_dtype = dt;
    d.reduction = XENT_REDUCTION_NONE;
    d.variant = variant;
    xent_status st = xent_ce_forward_backward(h, &d, d_z, d_y, NULL, d_z,
                                              NULL, d_rows, d_lse, NULL, 0);
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "%s: %s", desc,
                 xent_status_string(st));
    CUDA_OK(cudaDeviceSynchronize());

    /* every row's loss and lse: sampled rows from their own reference,
     * constant rows from the constant row's */
    float *rows = malloc((size_t)n * sizeof(float));
    float *lse = malloc((size_t)n * sizeof(float));
    double *ref_rows = malloc((size_t)n * sizeof(double));
    double *ref_lse = malloc((size_t)n * sizeof(double));
    double *got = malloc((size_t)n * sizeof(double));
    double *gref = malloc((size_t)c * sizeof(double));
    double *ggot = malloc((size_t)c * sizeof(double));
    cr_assert(rows && lse && ref_rows && ref_lse && got && gref && ggot);
    CUDA_OK(cudaMemcpy(rows, d_rows, (size_t)n * sizeof(float),
                       cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(lse, d_lse, (size_t)n * sizeof(float),
                       cudaMemcpyDeviceToHost));
    ref_ce_opts o;
    ref_ce_opts_default(&o);
    o.reduction = 0;
    /* the constant row: loss = lse - z_y = log C, lse = konst + log C */
    for (int64_t i = 0; i < n; i++) {
        ref_rows[i] = log((double)c);
        ref_lse[i] = (double)konst + log((double)c);
    }
    for (int k = 0; k < HUGE_SAMPLES; k++) {
        const int64_t i = rows_at[k];
        const double *zk = zs + (size_t)k * (size_t)c;
        ref_ce_index(1, c, zk, c, &y[i], &o, &ref_rows[i], &ref_lse[i], gref);

        /* the gradient of this row */
        CUDA_OK(cudaMemcpy(row_bytes, d_z + (size_t)i * (size_t)ld * esz,
                           (size_t)c * esz, cudaMemcpyDeviceToHost));
        for (int64_t j = 0; j < c; j++)
            ggot[j] = (double)conf_load(dt, row_bytes, j);
        char what[96];
        snprintf(what, sizeof what, "gradient of row %lld (%s)",
                 (long long)i, k % 2 == 0 ? "realistic" : "constant");
        conf_check_close(desc, what, gref, ggot, c, conf_out_rounding(dt), c);
    }
    tu_f32_to_f64(rows, got, n);
    conf_check_close(desc, "loss rows (all)", ref_rows, got, n, 0.0, 0);
    tu_f32_to_f64(lse, got, n);
    conf_check_close(desc, "lse (all)", ref_lse, got, n, 0.0, 0);

    free(rows);
    free(lse);
    free(ref_rows);
    free(ref_lse);
    free(got);
    free(gref);
    free(ggot);
    free(row_bytes);
    free(row_f);
    free(zs);
    free(y);
    CUDA_OK(cudaFree(d_z));
    CUDA_OK(cudaFree(d_y));
    CUDA_OK(cudaFree(d_rows));
    CUDA_OK(cudaFree(d_lse));
}

Test(gpu, n_times_c_above_2_31, .timeout = 600)
{
    if (quick_mode())
        cr_skip_test("XENT_TEST_QUICK=1: multi-gigabyte test skipped");
    size_t free_b = 0, total_b = 0;
    CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    const size_t need = (size_t)HUGE_N * HUGE_C * 2 + ((size_t)512 << 20);
    if (free_b < need)
        cr_skip_test("N*C > 2^31 needs %zu MiB of free device memory, "
                     "%zu MiB free",
                     need >> 20, free_b >> 20);
    xent_handle_t h = make_gpu();
    huge_run(h, XENT_DTYPE_BF16, XENT_VARIANT_BLOCK_ROW);
    huge_run(h, XENT_DTYPE_BF16, XENT_VARIANT_WARP_ROW);
    huge_run(h, XENT_DTYPE_F32, XENT_VARIANT_AUTO);
    xent_destroy(h);
}
