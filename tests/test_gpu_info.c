/*
 * test_gpu_info.c - entropy, KL divergence, binary cross-entropy and the
 * evaluation statistics on a CUDA handle: the same checks as
 * tests/test_info.c (its shared case runners, included below, on device
 * memory) for every op, dtype, reduction and kernel variant, plus what
 * only a GPU has:
 *  - rows of 50257 classes with a padded stride of 50304, and C > 65536;
 *  - bitwise determinism run to run, and the corpus accumulator's batch
 *    invariance on every variant (integer atomics across blocks);
 *  - the device status word: invalid probabilities, BCE targets outside
 *    [0, 1], a negative pos_weight and bad eval targets are recorded, the
 *    affected rows are NaN, nothing traps and the context stays usable;
 *  - CUDA graph capture of every op (and of the accumulator reset) on a
 *    non-blocking stream, replayed bitwise;
 *  - N * C > 2^31 (64-bit offsets) for the eval pass, entropy and KL.
 *
 * Without a CUDA device the binary prints one line and exits 77 (ctest's
 * SKIP_RETURN_CODE), unless XENT_REQUIRE_GPU=1, which makes that a failure
 * (tests/gpu_main.c, the same main as tests/test_gpu.c).
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <cuda_runtime_api.h>

/* the shared helpers and case runners of the CPU suite */
#define XENT_INFO_SHARED_ONLY
#include "test_info.c"

#define CUDA_OK(expr)                                                          \
    do {                                                                       \
        cudaError_t e_ = (expr);                                               \
        cr_assert_eq(e_, cudaSuccess, "%s: %s", #expr,                         \
                     cudaGetErrorString(e_));                                  \
    } while (0)

#define XENT_OK(expr)                                                          \
    do {                                                                       \
        xent_status s_ = (expr);                                               \
        cr_assert_eq(s_, XENT_STATUS_SUCCESS, "%s: %s", #expr,                 \
                     xent_status_string(s_));                                  \
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

static void gpu_release(void *p)
{
    (void)cudaFree(p);
}

static void gpu_upload(void *dst, const void *src, size_t bytes)
{
    CUDA_OK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void gpu_download(void *dst, const void *src, size_t bytes)
{
    CUDA_OK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void gpu_sync(void)
{
    CUDA_OK(cudaDeviceSynchronize());
}

static const tu_mem gpu_mem = {gpu_alloc, gpu_release, gpu_upload, gpu_download,
                               gpu_sync};

static xent_handle_t make_gpu(void)
{
    xent_handle_t h = NULL;
    XENT_OK(xent_create(&h));
    return h;
}

static const xent_variant forced[] = {XENT_VARIANT_WARP_ROW,
                                      XENT_VARIANT_BLOCK_ROW};

/* XENT_TEST_QUICK=1 (compute-sanitizer runs): fewer cases, no
 * multi-gigabyte test. */
static int quick_mode(void)
{
    const char *q = getenv("XENT_TEST_QUICK");
    return q && strcmp(q, "1") == 0;
}

/* ---- every op, dtype, reduction and variant vs the reference ----------- */

static void free_params(struct criterion_test_params *p)
{
    cr_free(p->params);
}

ParameterizedTestParameters(gpu_info, ops_match_reference)
{
    int *ops = cr_malloc(4 * sizeof *ops);
    for (int k = 0; k < 4; k++)
        ops[k] = k;
    return cr_make_param_array(int, ops, 4, free_params);
}

/* One op per test (each worker pays for a CUDA context); every failing
 * case is reported with its description. Every fourth case is also run
 * twice for bitwise determinism. */
ParameterizedTest(int *op, gpu_info, ops_match_reference)
{
    size_t n = 0;
    info_case *t = info_table(&n, 1);
    xent_handle_t h = make_gpu();
    int cases = 0, failed = 0;
    for (size_t k = 0; k < n; k++) {
        if (t[k].op != *op || (quick_mode() && k % 4 != 0))
            continue;
        cases++;
        int ok = info_run(h, &gpu_mem, &t[k]);
        if (k % 4 == 0 && !t[k].in_place)
            ok &= info_bitwise(h, h, &gpu_mem, &t[k]);
        failed += !ok;
    }
    cr_expect_eq(failed, 0, "%s: %d of %d cases failed", op_name[*op], failed,
                 cases);
    cr_assert_gt(cases, 0);
    xent_destroy(h);
    free(t);
}

/* Vocabulary-sized rows: 50257 classes with the stride padded to 50304
 * (llm.c's GPT-2), and 70001 > 65536 classes; both variants, f32 and
 * bf16, with gradients. */
Test(gpu_info, vocabulary_rows, .timeout = 300)
{
    static const int64_t shapes[][3] = {{6, 50257, 47}, {3, 70001, 5}};
    xent_handle_t h = make_gpu();
    int failed = 0, cases = 0;
    uint64_t seed = 70000;
    for (int s = 0; s < 2; s++)
        for (int op = 0; op < 4; op++)
            for (int v = 0; v < 2; v++)
                for (int dt = 0; dt < 3; dt += 2) {
                    info_case k;
                    memset(&k, 0, sizeof k);
                    k.op = op;
                    k.n = shapes[s][0];
                    k.c = shapes[s][1];
                    k.pad = shapes[s][2];
                    k.dtype = (xent_dtype)dt;
                    k.red = (xent_reduction)(seed % 3);
                    k.grad = 1;
                    k.grad_t = op == OP_KLT;
                    k.in_place = (seed % 2) == 0;
                    k.pos_weight = op == OP_BCE;
                    k.weight = op == OP_BCE && (seed % 3) == 0;
                    k.upstream = (int)(seed % 3);
                    k.variant = forced[v];
                    k.seed = seed++;
                    cases++;
                    failed += !info_run(h, &gpu_mem, &k);
                }
    for (int s = 0; s < 2; s++)
        for (int v = 0; v < 2; v++) {
            eval_case e;
            memset(&e, 0, sizeof e);
            e.n = shapes[s][0] + 3;
            e.c = shapes[s][1];
            e.pad = shapes[s][2];
            e.dtype = XENT_DTYPE_BF16;
            e.ignore_rows = 1;
            e.weights = 1;
            e.smoothing = 0.1f;
            e.z_loss = 1e-4f;
            e.top_k = 5;
            e.variant = forced[v];
            e.seed = seed++;
            cases++;
            failed += !eval_run(h, &gpu_mem, &e, 1);
        }
    cr_expect_eq(failed, 0, "%d of %d cases failed", failed, cases);
    xent_destroy(h);
}

/* ---- golden vectors, seed examples, invariants (every variant) ---------- */

Test(gpu_info, golden_matches_torch)
{
    xent_handle_t h = make_gpu();
    for (int v = 0; v < 2; v++) {
        golden_entropy_run(h, &gpu_mem, forced[v]);
        golden_kl_run(h, &gpu_mem, forced[v]);
        golden_bce_run(h, &gpu_mem, forced[v]);
    }
    xent_destroy(h);
}

Test(gpu_info, seed_examples)
{
    xent_handle_t h = make_gpu();
    seed_examples(h, &gpu_mem);
    xent_destroy(h);
}

Test(gpu_info, gibbs_and_friends)
{
    static const int64_t cs[] = {1, 2, 3, 10, 257, 4000, 50257};
    xent_handle_t h = make_gpu();
    for (int v = 0; v < 2; v++)
        for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++)
            for (uint64_t seed = 1; seed <= 3; seed++) {
                gibbs_check(h, &gpu_mem, seed, cs[k], forced[v]);
                kl_self_check(h, &gpu_mem, seed + 10, cs[k], forced[v]);
                entropy_bounds_check(h, &gpu_mem, seed + 20, cs[k],
                                     seed == 1 ? 0.0f : 1000.0f, forced[v]);
            }
    xent_destroy(h);
}

/* ---- xent_ce_eval ----------------------------------------------------------
 */

Test(gpu_info, eval_matches_reference)
{
    size_t n = 0;
    eval_case *t = eval_table(&n, 1);
    xent_handle_t h = make_gpu();
    int failed = 0, cases = 0;
    for (size_t k = 0; k < n; k++) {
        if (quick_mode() && k % 4 != 0)
            continue;
        cases++;
        /* with softcap, the device's tanhf may order near-ties otherwise
         * than the host's */
        failed += !eval_run(h, &gpu_mem, &t[k], t[k].softcap == 0.0f);
    }
    cr_expect_eq(failed, 0, "%d of %d cases failed", failed, cases);
    xent_destroy(h);
    free(t);
}

/* Two runs of the same eval call: every output and the accumulator
 * bitwise the same. */
Test(gpu_info, eval_is_deterministic)
{
    xent_handle_t h = make_gpu();
    for (int v = 0; v < 3; v++) {
        eval_case k;
        memset(&k, 0, sizeof k);
        k.n = 3000;
        k.c = 1500;
        k.dtype = XENT_DTYPE_BF16;
        k.ignore_rows = 1;
        k.weights = 1;
        k.smoothing = 0.1f;
        k.z_loss = 1e-4f;
        k.softcap = 30.0f;
        k.top_k = 5;
        k.variant = (xent_variant)v;
        k.seed = 4040 + (uint64_t)v;
        eval_data e;
        eval_data_make(&k, &e);
        eval_out a, b;
        eval_exec(h, &gpu_mem, &k, &e, &a);
        eval_exec(h, &gpu_mem, &k, &e, &b);
        const size_t n4 = (size_t)k.n * 4, n8 = (size_t)k.n * 8;
        cr_expect(memcmp(&a.acc, &b.acc, sizeof a.acc) == 0 &&
                      memcmp(a.loss, b.loss, n4) == 0 &&
                      memcmp(a.lse, b.lse, n4) == 0 &&
                      memcmp(a.ent, b.ent, n4) == 0 &&
                      memcmp(a.zl, b.zl, n4) == 0 &&
                      memcmp(a.argmax, b.argmax, n8) == 0 &&
                      memcmp(a.rank, b.rank, n8) == 0 &&
                      memcmp(a.correct, b.correct, (size_t)k.n) == 0,
                  "variant %s: two runs differ", xent_variant_name(k.variant));
        eval_out_free(&a);
        eval_out_free(&b);
        eval_data_free(&e);
    }
    xent_destroy(h);
}

Test(gpu_info, eval_accumulator_is_batch_invariant, .timeout = 300)
{
    xent_handle_t h = make_gpu();
    for (int v = 0; v < 3; v++)
        for (int dt = 0; dt < 3; dt++) {
            if (quick_mode() && dt != 2)
                continue;
            cr_expect(eval_batch_invariance(h, &gpu_mem, (xent_dtype)dt,
                                            (xent_variant)v),
                      "variant %s dtype %s", xent_variant_name((xent_variant)v),
                      dt_name((xent_dtype)dt));
        }
    xent_destroy(h);
}

/* ---- the device status word ------------------------------------------------
 */

Test(gpu_info, data_problems_are_recorded_not_fatal)
{
    xent_handle_t h = make_gpu();
    enum { N = 5, C = 37 };
    tu_rng r;
    tu_rng_seed(&r, 515);
    float z[N * C], q[N * C], y[N * C], pw[C];
    tu_fill_logits(&r, N, C, C, z, NAN);
    tu_fill_probs(&r, N, C, C, q, NAN);
    tu_fill_uniform_f32(&r, N * C, 0.0f, 1.0f, y);
    tu_fill_uniform_f32(&r, C, 0.5f, 2.0f, pw);
    float *dz = mem_new(&gpu_mem, z, sizeof z);
    float *dq = mem_new(&gpu_mem, NULL, sizeof q);
    float *dy = mem_new(&gpu_mem, NULL, sizeof y);
    float *dpw = mem_new(&gpu_mem, NULL, sizeof pw);
    float *drows = mem_new(&gpu_mem, NULL, sizeof y);
    float *dg = mem_new(&gpu_mem, NULL, sizeof z);
    xent_data_report rep;
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_assert_eq(rep.flags, 0u);

    /* KL: a negative q in row 3, a row sum off 1 in row 1 */
    q[3 * C + 2] = -0.01f;
    q[3 * C + 3] += 0.01f;
    for (int j = 0; j < C; j++)
        q[1 * C + j] *= 1.01f;
    CUDA_OK(cudaMemcpy(dq, q, sizeof q, cudaMemcpyHostToDevice));
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, N, C);
    kd.reduction = XENT_REDUCTION_NONE;
    XENT_OK(xent_kl_forward_backward(h, &kd, dz, dq, NULL, dg, NULL, NULL,
                                     drows, NULL, 0));
    CUDA_OK(cudaDeviceSynchronize()); /* no trap */
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_expect(rep.flags & XENT_DATA_INVALID_PROBS, "flags %#x", rep.flags);
    cr_expect_eq(rep.first_row, 1);
    float rows[N * C], g[N * C];
    CUDA_OK(cudaMemcpy(rows, drows, N * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(g, dg, sizeof g, cudaMemcpyDeviceToHost));
    cr_expect(isnan(rows[1]) && isnan(rows[3]) && isfinite(rows[0]) &&
              isfinite(rows[2]) && isfinite(rows[4]));
    cr_expect(isnan(g[1 * C]) && isnan(g[3 * C + 5]) && isfinite(g[0]) &&
              isfinite(g[4 * C]));

    /* BCE: targets outside [0, 1] at (2, 4) and (4, 0) */
    y[2 * C + 4] = 1.5f;
    y[4 * C] = NAN;
    CUDA_OK(cudaMemcpy(dy, y, sizeof y, cudaMemcpyHostToDevice));
    xent_bce_desc bd;
    xent_bce_desc_init(&bd, N, C);
    bd.reduction = XENT_REDUCTION_NONE;
    XENT_OK(xent_bce_forward_backward(h, &bd, dz, dy, NULL, dg, NULL, drows,
                                      NULL, 0));
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_expect(rep.flags & XENT_DATA_TARGET_OUTSIDE_01, "flags %#x", rep.flags);
    cr_expect_eq(rep.first_row, 2);
    CUDA_OK(cudaMemcpy(rows, drows, sizeof rows, cudaMemcpyDeviceToHost));
    cr_expect(isnan(rows[2 * C + 4]) && isnan(rows[4 * C]) &&
              isfinite(rows[2 * C + 3]) && isfinite(rows[0]));

    /* BCE: a negative pos_weight in column 7: that column is NaN */
    y[2 * C + 4] = 0.5f;
    y[4 * C] = 0.5f;
    CUDA_OK(cudaMemcpy(dy, y, sizeof y, cudaMemcpyHostToDevice));
    pw[7] = -1.0f;
    CUDA_OK(cudaMemcpy(dpw, pw, sizeof pw, cudaMemcpyHostToDevice));
    bd.pos_weight = dpw;
    bd.n_pos_weight = C;
    XENT_OK(xent_bce_forward(h, &bd, dz, dy, NULL, drows, NULL, 0));
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_expect(rep.flags & XENT_DATA_NEGATIVE_WEIGHT, "flags %#x", rep.flags);
    cr_expect_eq(rep.first_row, 0);
    CUDA_OK(cudaMemcpy(rows, drows, sizeof rows, cudaMemcpyDeviceToHost));
    cr_expect(isnan(rows[7]) && isnan(rows[3 * C + 7]) && isfinite(rows[6]));

    /* eval: targets out of range in rows 2 and 4 */
    int64_t yt[N] = {0, 1, C, 3, -5};
    int64_t *dyt = mem_new(&gpu_mem, yt, sizeof yt);
    xent_eval_outputs out;
    memset(&out, 0, sizeof out);
    out.d_loss = drows;
    out.d_rank = mem_new(&gpu_mem, NULL, N * 8);
    xent_eval_accum *dacc = mem_new(&gpu_mem, NULL, sizeof(xent_eval_accum));
    XENT_OK(xent_eval_accum_reset(h, dacc));
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, N, C);
    XENT_OK(xent_ce_eval(h, &cd, dz, dyt, 5, &out, dacc));
    XENT_OK(xent_read_data_report(h, &rep, 1));
    cr_expect(rep.flags & XENT_DATA_TARGET_OUT_OF_RANGE, "flags %#x",
              rep.flags);
    cr_expect_eq(rep.first_row, 2);
    int64_t rk[N];
    xent_eval_accum acc;
    CUDA_OK(cudaMemcpy(rows, drows, N * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(rk, out.d_rank, sizeof rk, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&acc, dacc, sizeof acc, cudaMemcpyDeviceToHost));
    cr_expect(isnan(rows[2]) && isnan(rows[4]) && isfinite(rows[0]));
    cr_expect(rk[2] == -1 && rk[4] == -1 && rk[0] >= 0);
    cr_expect_eq(acc.tokens, 3, "bad rows are not counted");

    /* the context is fine: a clean call succeeds and leaves the word clean */
    xent_entropy_desc ed;
    xent_entropy_desc_init(&ed, N, C);
    ed.reduction = XENT_REDUCTION_NONE;
    XENT_OK(xent_entropy_forward(h, &ed, dz, NULL, drows, NULL, 0));
    CUDA_OK(cudaDeviceSynchronize());
    XENT_OK(xent_read_data_report(h, &rep, 0));
    cr_expect_eq(rep.flags, 0u);
    void *bufs[] = {dz, dq, dy, dpw, drows, dg, dyt, out.d_rank, dacc};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        gpu_release(bufs[k]);
    xent_destroy(h);
}

/* ---- CUDA graph capture -----------------------------------------------------
 */

/* Every op captured on a non-blocking stream (global capture mode: a sync,
 * allocation or device-to-host copy inside a call would break it), then
 * replayed twice: bitwise the direct calls' results, the accumulator
 * included (its reset is captured too). */
Test(gpu_info, graph_capture_replays_bitwise)
{
    xent_handle_t h = make_gpu();
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    XENT_OK(xent_set_stream(h, s));
    enum { N = 96, C = 1001, LD = 1008 };
    tu_rng r;
    tu_rng_seed(&r, 616);
    float *z = xmalloc((size_t)N * LD * 4), *t = xmalloc((size_t)N * LD * 4);
    float *y = xmalloc((size_t)N * LD * 4);
    int64_t yt[N];
    tu_fill_logits(&r, N, C, LD, z, NAN);
    tu_fill_logits(&r, N, C, LD, t, NAN);
    tu_fill_uniform_f32(&r, (int64_t)N * LD, 0.0f, 1.0f, y);
    tu_fill_targets_i64(&r, N, C, yt);
    const size_t mb = (size_t)N * LD * 4;
    void *dz = mem_new(&gpu_mem, z, mb), *dt = mem_new(&gpu_mem, t, mb);
    void *dy = mem_new(&gpu_mem, y, mb),
         *dyt = mem_new(&gpu_mem, yt, sizeof yt);
    /* outputs: one blob, so "all outputs" is one download: 5 gradient /
     * element matrices, 4 reduced losses, the eval entropy [N], the
     * accumulator, the eval ranks [N] (every offset a multiple of 16) */
    const size_t off_loss = 5 * mb, off_ent = off_loss + 16;
    const size_t off_acc = off_ent + (size_t)N * 4;
    const size_t off_rank = off_acc + sizeof(xent_eval_accum);
    const size_t ob = off_rank + (size_t)N * 8;
    unsigned char *dout = mem_new(&gpu_mem, NULL, ob);
    float *g_ent = (float *)dout, *g_kl = (float *)(dout + mb);
    float *gt_kl = (float *)(dout + 2 * mb), *g_bce = (float *)(dout + 3 * mb);
    float *el_bce = (float *)(dout + 4 * mb);
    float *losses = (float *)(dout + off_loss);
    xent_eval_accum *dacc = (xent_eval_accum *)(dout + off_acc);
    int64_t *drank = (int64_t *)(dout + off_rank);
    xent_entropy_desc ed;
    xent_entropy_desc_init(&ed, N, C);
    ed.ld = LD;
    xent_kl_desc kd;
    xent_kl_desc_init(&kd, N, C);
    kd.ld = LD;
    kd.target_ld = LD;
    kd.target_kind = XENT_KL_TARGET_LOGITS;
    xent_bce_desc bd;
    xent_bce_desc_init(&bd, N, C);
    bd.ld = LD;
    bd.target_ld = LD;
    xent_ce_desc cd;
    xent_ce_desc_init(&cd, N, C);
    cd.ld = LD;
    size_t w1, w2, w3;
    XENT_OK(xent_entropy_workspace_size(h, &ed, &w1));
    XENT_OK(xent_kl_workspace_size(h, &kd, &w2));
    XENT_OK(xent_bce_workspace_size(h, &bd, &w3));
    size_t wsb = w1 > w2 ? w1 : w2;
    wsb = wsb > w3 ? wsb : w3;
    void *dws = mem_new(&gpu_mem, NULL, wsb);
    xent_eval_outputs eo;
    memset(&eo, 0, sizeof eo);
    eo.d_rank = drank;
    eo.d_entropy = (float *)(dout + off_ent);
#define ALL_CALLS()                                                            \
    (xent_entropy_forward_backward(h, &ed, dz, NULL, g_ent, losses, NULL, dws, \
                                   wsb) |                                      \
     xent_kl_forward_backward(h, &kd, dz, dt, NULL, g_kl, gt_kl, losses + 1,   \
                              NULL, dws, wsb) |                                \
     xent_bce_forward_backward(h, &bd, dz, dy, NULL, g_bce, losses + 2,        \
                               el_bce, dws, wsb) |                             \
     xent_eval_accum_reset(h, dacc) |                                          \
     xent_ce_eval(h, &cd, dz, dyt, 5, &eo, dacc))
    xent_status st = ALL_CALLS();
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "direct calls");
    CUDA_OK(cudaStreamSynchronize(s));
    unsigned char *direct = mem_get(&gpu_mem, dout, ob);
    CUDA_OK(cudaMemset(dout, 0xff, ob));
    CUDA_OK(cudaDeviceSynchronize());
    cudaGraph_t graph;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    st = ALL_CALLS();
    cudaError_t end = cudaStreamEndCapture(s, &graph);
#undef ALL_CALLS
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "calls under capture");
    cr_assert_eq(end, cudaSuccess, "a call broke the capture: %s",
                 cudaGetErrorString(end));
    cudaGraphExec_t exec;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; replay++) {
        CUDA_OK(cudaMemset(dout, 0xff, ob));
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaStreamSynchronize(s));
        unsigned char *got = mem_get(&gpu_mem, dout, ob);
        size_t at = 0;
        while (at < ob && got[at] == direct[at])
            at++;
        cr_expect_eq(at, ob,
                     "replay %d differs from the direct calls at "
                     "byte %zu",
                     replay, at);
        free(got);
    }
    xent_eval_accum acc;
    memcpy(&acc, direct + off_acc, sizeof acc);
    cr_expect_eq(acc.tokens, N);
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    void *bufs[] = {dz, dt, dy, dyt, dout, dws};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        gpu_release(bufs[k]);
    free(direct);
    free(z);
    free(t);
    free(y);
    XENT_OK(xent_set_stream(h, NULL));
    CUDA_OK(cudaStreamDestroy(s));
    xent_destroy(h);
}

/* ---- N * C > 2^31
 * ------------------------------------------------------------ */

/*
 * N = 32769 rows of C = 65537 bf16 classes (N * C = 2^31 + 65537; byte
 * offsets pass 2^32), row stride C. Every element is 0x3f3f (bf16 0.746):
 * each row's entropy is log C, its lse 0.746 + log C, its NLL log C, its
 * argmax 0 and the rank of any target 0. Rows around element 2^31 and the
 * last rows get realistic logits and are checked against the reference.
 * The eval pass (both variants, with the accumulator), entropy and KL with
 * the teacher = the student (exactly 0 on every row).
 */
#define HUGE_N 32769
#define HUGE_C 65537

Test(gpu_info, n_times_c_above_2_31, .timeout = 600)
{
    if (quick_mode())
        cr_skip_test("XENT_TEST_QUICK=1: multi-gigabyte test skipped");
    const int64_t n = HUGE_N, c = HUGE_C;
    const size_t zbytes = (size_t)n * (size_t)c * 2;
    size_t free_b = 0, total_b = 0;
    CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    if (free_b < zbytes + ((size_t)512 << 20))
        cr_skip_test("needs %zu MiB of device memory, %zu MiB free",
                     (zbytes >> 20) + 512, free_b >> 20);
    xent_handle_t h = make_gpu();
    unsigned char *dz = NULL;
    CUDA_OK(cudaMalloc((void **)&dz, zbytes));
    CUDA_OK(cudaMemset(dz, 0x3f, zbytes));
    const float konst = xent_bf16_to_f32(0x3f3f);
    /* realistic rows */
    const int64_t rows_at[] = {0, (1ll << 31) / c - 1, (1ll << 31) / c,
                               (1ll << 31) / c + 1, n - 1};
    const int nr = (int)(sizeof rows_at / sizeof rows_at[0]);
    tu_rng r;
    tu_rng_seed(&r, 0x2b2b);
    float *rowf = xmalloc((size_t)c * 4);
    uint16_t *rowb = xmalloc((size_t)c * 2);
    double *zs = xmalloc((size_t)nr * (size_t)c * sizeof(double));
    for (int k = 0; k < nr; k++) {
        tu_fill_logits(&r, 1, c, c, rowf, NAN);
        for (int64_t j = 0; j < c; j++) {
            rowb[j] = xent_f32_to_bf16(rowf[j]);
            zs[(size_t)k * c + j] = xent_bf16_to_f32(rowb[j]);
        }
        CUDA_OK(cudaMemcpy(dz + (size_t)rows_at[k] * c * 2, rowb, (size_t)c * 2,
                           cudaMemcpyHostToDevice));
    }
    int64_t *y = xmalloc((size_t)n * 8);
    tu_fill_targets_i64(&r, n, c, y);
    int64_t *dy = mem_new(&gpu_mem, y, (size_t)n * 8);
    float *dl = mem_new(&gpu_mem, NULL, (size_t)n * 4);
    float *de = mem_new(&gpu_mem, NULL, (size_t)n * 4);
    int64_t *dam = mem_new(&gpu_mem, NULL, (size_t)n * 8);
    int64_t *drk = mem_new(&gpu_mem, NULL, (size_t)n * 8);
    xent_eval_accum *dacc = mem_new(&gpu_mem, NULL, sizeof(xent_eval_accum));
    float *l = xmalloc((size_t)n * 4), *e = xmalloc((size_t)n * 4);
    int64_t *am = xmalloc((size_t)n * 8), *rk = xmalloc((size_t)n * 8);
    const double logc = log((double)c);
    for (int v = 0; v < 2; v++) {
        xent_ce_desc cd;
        xent_ce_desc_init(&cd, n, c);
        cd.logits_dtype = XENT_DTYPE_BF16;
        cd.variant = forced[v];
        xent_eval_outputs out;
        memset(&out, 0, sizeof out);
        out.d_loss = dl;
        out.d_entropy = de;
        out.d_argmax = dam;
        out.d_rank = drk;
        XENT_OK(xent_eval_accum_reset(h, dacc));
        XENT_OK(xent_ce_eval(h, &cd, dz, dy, 5, &out, dacc));
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaMemcpy(l, dl, (size_t)n * 4, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(e, de, (size_t)n * 4, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(am, dam, (size_t)n * 8, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(rk, drk, (size_t)n * 8, cudaMemcpyDeviceToHost));
        xent_eval_accum acc;
        CUDA_OK(cudaMemcpy(&acc, dacc, sizeof acc, cudaMemcpyDeviceToHost));
        cr_expect_eq(acc.tokens, n, "%s: tokens", xent_variant_name(forced[v]));
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            int special = 0;
            for (int k = 0; k < nr; k++)
                special |= rows_at[k] == i;
            if (special)
                continue;
            bad += !(fabs((double)l[i] - logc) <= FP32_TOL * logc &&
                     fabs((double)e[i] - logc) <= FP32_TOL * logc &&
                     am[i] == 0 && rk[i] == 0);
        }
        cr_expect_eq(bad, 0, "%s: %lld constant rows wrong",
                     xent_variant_name(forced[v]), (long long)bad);
        for (int k = 0; k < nr; k++) {
            const int64_t i = rows_at[k];
            const double *zk = zs + (size_t)k * c;
            double ref_nll;
            ref_ce_opts o;
            ref_ce_opts_default(&o);
            o.reduction = 0;
            ref_ce_index(1, c, zk, c, &y[i], &o, &ref_nll, NULL, NULL);
            const double ref_h = ref_softmax_entropy(c, zk, NULL);
            int64_t ram = 0, rr = 0;
            for (int64_t j = 0; j < c; j++) {
                if (zk[j] > zk[ram])
                    ram = j;
                rr += zk[j] > zk[y[i]];
            }
            cr_expect(fabs((double)l[i] - ref_nll) <=
                              FP32_TOL * (fabs(ref_nll) + 1.0) &&
                          fabs((double)e[i] - ref_h) <=
                              FP32_TOL * (ref_h + 1.0) &&
                          am[i] == ram && rk[i] == rr,
                      "%s row %lld: nll %.9g (%.9g) H %.9g (%.9g) argmax "
                      "%lld (%lld) rank %lld (%lld)",
                      xent_variant_name(forced[v]), (long long)i, (double)l[i],
                      ref_nll, (double)e[i], ref_h, (long long)am[i],
                      (long long)ram, (long long)rk[i], (long long)rr);
        }
        /* entropy and KL(z || z) over the whole buffer */
        xent_entropy_desc ed;
        xent_entropy_desc_init(&ed, n, c);
        ed.logits_dtype = XENT_DTYPE_BF16;
        ed.reduction = XENT_REDUCTION_NONE;
        ed.variant = forced[v];
        XENT_OK(xent_entropy_forward(h, &ed, dz, NULL, de, NULL, 0));
        xent_kl_desc kd;
        xent_kl_desc_init(&kd, n, c);
        kd.logits_dtype = XENT_DTYPE_BF16;
        kd.target_kind = XENT_KL_TARGET_LOGITS;
        kd.reduction = XENT_REDUCTION_NONE;
        kd.variant = forced[v];
        XENT_OK(xent_kl_forward(h, &kd, dz, dz, NULL, dl, NULL, 0));
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaMemcpy(l, dl, (size_t)n * 4, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(e, de, (size_t)n * 4, cudaMemcpyDeviceToHost));
        int64_t bad_h = 0, bad_kl = 0;
        for (int64_t i = 0; i < n; i++) {
            int k = -1;
            for (int q = 0; q < nr; q++)
                if (rows_at[q] == i)
                    k = q;
            const double want =
                k < 0 ? logc : ref_softmax_entropy(c, zs + (size_t)k * c, NULL);
            bad_h += !(fabs((double)e[i] - want) <= FP32_TOL * (want + 1.0));
            bad_kl += l[i] != 0.0f;
        }
        cr_expect_eq(bad_h, 0, "%s: %lld entropy rows wrong",
                     xent_variant_name(forced[v]), (long long)bad_h);
        cr_expect_eq(bad_kl, 0, "%s: %lld KL(z||z) rows not exactly 0",
                     xent_variant_name(forced[v]), (long long)bad_kl);
    }
    (void)konst;
    void *bufs[] = {dz, dy, dl, de, dam, drk, dacc};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        gpu_release(bufs[k]);
    free(rowf);
    free(rowb);
    free(zs);
    free(y);
    free(l);
    free(e);
    free(am);
    free(rk);
    xent_destroy(h);
}
