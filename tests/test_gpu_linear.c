/*
 * test_gpu_linear.c - the fused linear + cross-entropy on a CUDA handle:
 * every test of test_linear.c (compiled here with LIN_GPU: device buffers,
 * xent_create, cuBLAS behind the API), with the GPU tolerances stated
 * there, plus a larger shape that takes the tensor-core GEMM paths and
 * several chunks. Linked with tests/gpu_main.c: without a device it prints
 * "test_gpu_linear: no CUDA device, skipping N tests" and exits 77, unless
 * XENT_REQUIRE_GPU=1.
 */
#define LIN_GPU 1
#include "test_linear.c"

#include <cublas_v2.h>


/* A shape with C > one warp-row tier, D not a multiple of 8, several
 * chunks, bf16 inputs and fp32 gradients. */
Test(gpu_linear, larger_shape_bf16)
{
    const int64_t N = 300, D = 136, C = 3001;
    prob p;
    prob_make(&p, 77, N, D, C, XENT_DTYPE_BF16, 1, 1, 11, 0, 1);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, N, D, C);
    d.dtype = XENT_DTYPE_BF16;
    d.target_type = XENT_TARGET_INDEX_I32;
    d.label_smoothing = 0.1f;
    d.z_loss = 1e-4f;
    d.flags = XENT_FLAG_GRAD_F32;
    refout r;
    reference(&p, &d, 1.0, &r);
    xent_handle_t h = make_handle(0);
    libout a = run_lib(h, &p, &d, 1.0f, 128, 1 | 2 | 4 | 8 | 16 | 32);
    libout b = run_lib(h, &p, &d, 1.0f, 128, 1 | 2 | 4 | 8 | 16 | 32);
    /* G rounded to bf16 before the backward GEMMs: 2^-8 on dH / dW */
    check_all(&p, &d, &r, &a, 1e-5, 1.0 / 256);
    cr_assert(a.loss == b.loss && same_bits(a.dW, b.dW, C * D) &&
                  same_bits(a.dH, b.dH, N * D) && same_bits(a.db, b.db, C),
              "not bitwise reproducible");
    libout_free(&a), libout_free(&b);
    refout_free(&r);
    xent_destroy(h);
    prob_free(&p);
}

Test(gpu_linear, non_default_stream)
{
    /* the context follows the handle's stream (set before create) */
    xent_handle_t h = make_handle(0);
    cudaStream_t s;
    cr_assert_eq(cudaStreamCreate(&s), cudaSuccess);
    cr_assert_eq(xent_set_stream(h, s), XENT_STATUS_SUCCESS);
    prob p;
    prob_make(&p, 78, 20, 16, 30, XENT_DTYPE_F32, 1, 0, 0, 0, 0);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 20, 16, 30);
    refout r;
    reference(&p, &d, 1.0, &r);
    libout o = run_lib(h, &p, &d, 1.0f, 6, 1 | 2 | 4 | 8 | 16 | 32);
    check_all(&p, &d, &r, &o, 1e-5, 1e-5);
    libout_free(&o);
    refout_free(&r);
    prob_free(&p);
    xent_destroy(h);
    cudaStreamDestroy(s);
}

/* A caller-given cuBLAS handle is used (and stays the caller's). */
Test(gpu_linear, caller_cublas_handle)
{
    xent_handle_t h = make_handle(0);
    cublasHandle_t cb = NULL;
    cr_assert_eq(cublasCreate(&cb), CUBLAS_STATUS_SUCCESS);
    xent_linear_ce_t ctx = NULL;
    cr_assert_eq(xent_linear_ce_create(h, cb, &ctx), XENT_STATUS_SUCCESS);
    prob p;
    prob_make(&p, 79, 12, 16, 30, XENT_DTYPE_F32, 1, 0, 0, 0, 0);
    xent_linear_ce_desc d;
    xent_linear_ce_desc_init(&d, 12, 16, 30);
    refout r;
    reference(&p, &d, 1.0, &r);
    size_t wsb = 0;
    cr_assert_eq(xent_linear_ce_workspace_size(h, &d, 5, &wsb),
                 XENT_STATUS_SUCCESS);
    void *ws = mem_alloc(wsb);
    float *loss = mem_alloc(4), *dH = mem_alloc(12 * 16 * 4);
    xent_linear_ce_outputs out = {loss, NULL, NULL, dH, NULL, NULL};
    cr_assert_eq(xent_linear_ce(ctx, &d, p.mH, p.mW, p.mb, p.my, NULL, &out,
                                5, ws, wsb),
                 XENT_STATUS_SUCCESS);
    float hl;
    from_mem(&hl, loss, 4);
    float *hdH = fetch(dH, 12 * 16, XENT_DTYPE_F32);
    double l = r.loss;
    TU_ASSERT_CLOSE(tu_compare_f32(&l, &hl, 1, 1e-5 * fabs(l), 1e-5), "loss");
    check_tensor(r.dH, hdH, 12 * 16, 1e-5, "dH");
    cr_assert_eq(xent_linear_ce_destroy(ctx), XENT_STATUS_SUCCESS);
    /* still the caller's: usable, and destroyed here */
    cr_assert_eq(cublasDestroy(cb), CUBLAS_STATUS_SUCCESS);
    free(hdH);
    mem_free(ws), mem_free(loss), mem_free(dH);
    refout_free(&r);
    prob_free(&p);
    xent_destroy(h);
}
