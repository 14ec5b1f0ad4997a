/*
 * test_cpu.c - the CPU backend against the float64 reference: the shared
 * conformance table (tests/conformance.c, one parameterized test per case)
 * on a CPU handle in host memory, bitwise determinism, in place vs a
 * separate gradient, and 1 thread vs many giving bitwise the same results.
 * Also checks the test suite's own tools: the backward-from-lse reference
 * against ref.h, the half-precision conversions against the library's, and
 * that the table covers every axis. Needs no GPU.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"
#include "internal.h" /* the library's host half conversions, cross-checked */
#include "ref.h"
#include "testutil.h"
#include "xent.h"

/* ---- host memory as a tu_mem ------------------------------------------ */

static void *cpu_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
static void cpu_release(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}
static void cpu_sync(void) {}

static const tu_mem cpu_mem = {cpu_alloc, cpu_release, cpu_copy, cpu_copy,
                               cpu_sync};

static xent_handle_t make_cpu(int n_threads)
{
    xent_handle_t h = NULL;
    xent_status st = xent_create_cpu(&h, n_threads);
    cr_assert_eq(st, XENT_STATUS_SUCCESS, "xent_create_cpu(%d): %s",
                 n_threads, xent_status_string(st));
    return h;
}

/* ---- the conformance table, one test per case -------------------------- */

static void free_cases(struct criterion_test_params *p) { cr_free(p->params); }

ParameterizedTestParameters(cpu, conformance)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    conf_case *cases = cr_malloc(n * sizeof *cases);
    memcpy(cases, t, n * sizeof *cases);
    return cr_make_param_array(conf_case, cases, n, free_cases);
}

ParameterizedTest(conf_case *c, cpu, conformance)
{
    xent_handle_t h = make_cpu(0);
    conf_run_case(h, &cpu_mem, c);
    xent_destroy(h);
}

/* ---- invariants over subsets of the table ------------------------------ */

Test(cpu, determinism)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    xent_handle_t h = make_cpu(0);
    int runs = 0;
    for (size_t k = 0; k < n; k += 4, runs++)
        conf_determinism(h, &cpu_mem, &t[k]);
    cr_assert_gt(runs, 50);
    xent_destroy(h);
}

Test(cpu, inplace_matches_separate)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    xent_handle_t h = make_cpu(0);
    int runs = 0;
    for (size_t k = 1; k < n; k += 3)
        if (t[k].op != CONF_OP_FWD) {
            conf_inplace_matches_separate(h, &cpu_mem, &t[k]);
            runs++;
        }
    cr_assert_gt(runs, 50);
    xent_destroy(h);
}

/* Rows are split over threads only when there is enough work (the backend
 * gives each thread at least 2^15 elements): every such case, on 1, 3 and
 * 8 threads. */
Test(cpu, thread_counts_agree)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    xent_handle_t h1 = make_cpu(1), h3 = make_cpu(3), h8 = make_cpu(8);
    int runs = 0;
    for (size_t k = 0; k < n; k++) {
        if (t[k].n < 2 || t[k].n * t[k].c < 2 * 32768)
            continue;
        conf_handles_agree(h1, (k & 1) ? h3 : h8, &cpu_mem, &t[k]);
        runs++;
    }
    cr_assert_gt(runs, 30);
    xent_destroy(h1);
    xent_destroy(h3);
    xent_destroy(h8);
}

/* ---- the test suite's own tools ---------------------------------------- */

/* conf_ref_grad_from_lse with the exact lse is ref.h's gradient. */
Test(conf_tools, grad_from_lse_reference_matches_ref)
{
    enum { N = 9, C = 37 };
    tu_rng r;
    tu_rng_seed(&r, 99);
    float zf[N * C], qf[N * C], wf[C];
    double z[N * C], q[N * C], w[C];
    int64_t y[N];
    for (int variant = 0; variant < 8; variant++) {
        const int index = variant < 6;
        tu_fill_logits(&r, N, C, C, zf, NAN);
        zf[2 * C + 3] = -INFINITY;
        tu_f32_to_f64(zf, z, N * C);
        tu_fill_targets_i64(&r, N, C, y);
        y[4] = -100;
        if (y[2] == 3)
            y[2] = 4;
        tu_fill_probs(&r, N, C, C, qf, NAN);
        tu_f32_to_f64(qf, q, N * C);
        tu_fill_uniform_f32(&r, C, 0.25f, 2.0f, wf);
        tu_f32_to_f64(wf, w, C);

        ref_ce_opts o;
        ref_ce_opts_default(&o);
        o.reduction = variant % 3;
        o.weights = variant & 1 ? w : NULL;
        o.label_smoothing = variant >= 2 ? 0.1 : 0.0;
        o.z_loss = variant >= 3 ? 1e-4 : 0.0;
        o.softcap = variant >= 4 ? 30.0 : 0.0;
        double lse[N], g_ref[N * C], g[N * C];
        if (index)
            ref_ce_index(N, C, z, C, y, &o, NULL, lse, g_ref);
        else
            ref_ce_probs(N, C, z, C, q, C, &o, NULL, lse, g_ref);
        conf_ref_grad_from_lse(N, C, z, y, q, index, o.reduction, -100,
                               o.weights, o.label_smoothing, o.z_loss,
                               o.softcap, lse, g);
        tu_close res = tu_compare_f64(g_ref, g, N * C, 1e-15, 1e-12);
        cr_assert(res.ok,
                  "variant %d: %lld bad, worst [%lld] got %.17g ref %.17g",
                  variant, (long long)res.n_bad, (long long)res.worst,
                  res.worst_got, res.worst_ref);
    }
}

/* The suite's half conversions and the library's host ones agree: every
 * f16 and bf16 value, and f32 -> half over bit patterns around every
 * rounding case. Two independent implementations check each other. */
Test(conf_tools, half_conversions_match_library)
{
    for (uint32_t b = 0; b < 65536; b++) {
        float a = conf_f16_to_f32((uint16_t)b), l = xent_f16_to_f32((uint16_t)b);
        cr_assert((isnan(a) && isnan(l)) || memcmp(&a, &l, 4) == 0,
                  "f16 %04x -> %a vs library %a", b, (double)a, (double)l);
        a = conf_bf16_to_f32((uint16_t)b);
        l = xent_bf16_to_f32((uint16_t)b);
        cr_assert((isnan(a) && isnan(l)) || memcmp(&a, &l, 4) == 0,
                  "bf16 %04x -> %a vs library %a", b, (double)a, (double)l);
    }
    tu_rng r;
    tu_rng_seed(&r, 5);
    for (uint64_t k = 0; k < (1u << 22); k++) {
        uint32_t bits;
        if (k < (1u << 21)) {
            /* random bits, and patterns that sit at or next to a halfway
             * point of f16 (13 dropped bits) and bf16 (16 dropped bits) */
            bits = (uint32_t)tu_next(&r);
            switch (k & 7) {
            case 1: bits = (bits & ~0x1fffu) | 0x1000u; break;
            case 2: bits = (bits & ~0x1fffu) | 0x0fffu; break;
            case 3: bits = (bits & ~0xffffu) | 0x8000u; break;
            case 4: bits = (bits & ~0xffffu) | 0x8001u; break;
            default: break;
            }
        } else {
            /* every exponent near the f16 range, including subnormals */
            bits = (uint32_t)((0x30000000u + (k - (1u << 21)) * 0x100u +
                               (uint32_t)(tu_next(&r) & 0xffu)) |
                              ((k & 1u) << 31));
        }
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f))
            continue;
        uint16_t a = conf_f32_to_f16(f), l = xent_f32_to_f16(f);
        cr_assert_eq(a, l, "f32 %a (%08x) -> f16 %04x vs library %04x",
                     (double)f, bits, a, l);
        a = conf_f32_to_bf16(f);
        l = xent_f32_to_bf16(f);
        cr_assert_eq(a, l, "f32 %a (%08x) -> bf16 %04x vs library %04x",
                     (double)f, bits, a, l);
    }
}

/* The table hits every axis: each shape with each variant and op, every
 * dtype x target, reductions, upstreams, gradient placements. */
Test(conf_tools, table_covers_every_axis)
{
    size_t n = 0;
    const conf_case *t = conf_table(&n);
    cr_assert_geq(n, 300, "only %zu cases", n);
    int groups = conf_group_count();
    for (int g = 0; g < groups - 1; g++) {
        int vo[3][3] = {{0}}, dt[3][3] = {{0}}, red[3] = {0};
        for (size_t k = 0; k < n; k++) {
            if (t[k].group != g)
                continue;
            vo[t[k].variant][t[k].op]++;
            dt[t[k].dtype][t[k].target]++;
            red[t[k].reduction]++;
        }
        for (int a = 0; a < 3; a++) {
            cr_assert_gt(red[a], 0, "group %s: reduction %d missing",
                         conf_group_name(g), a);
            for (int b = 0; b < 3; b++) {
                cr_assert_gt(vo[a][b], 0, "group %s: variant %d op %d",
                             conf_group_name(g), a, b);
                cr_assert_gt(dt[a][b], 0, "group %s: dtype %d target %d",
                             conf_group_name(g), a, b);
            }
        }
    }
    int up[4] = {0}, placement[2] = {0}, grad_f32 = 0, inf = 0, big = 0;
    int ws3 = 0, empty = 0, opts = 0;
    for (size_t k = 0; k < n; k++) {
        if (t[k].op != CONF_OP_FWD) {
            up[t[k].upstream]++;
            placement[t[k].in_place]++;
        }
        grad_f32 += (t[k].flags & XENT_FLAG_GRAD_F32) != 0;
        inf += t[k].extreme == CONF_EXTREME_INF;
        big += t[k].extreme == CONF_EXTREME_BIG;
        ws3 += t[k].misaligned_ws;
        empty += t[k].n == 0;
        opts += t[k].weights && t[k].label_smoothing > 0.0f &&
                t[k].z_loss > 0.0f && t[k].softcap > 0.0f;
    }
    for (int a = 0; a < 4; a++)
        cr_assert_gt(up[a], 0, "upstream kind %d missing", a);
    cr_assert_gt(placement[0], 0);
    cr_assert_gt(placement[1], 0);
    cr_assert_gt(grad_f32, 0);
    cr_assert_gt(inf, 0);
    cr_assert_gt(big, 0);
    cr_assert_gt(ws3, 0);
    cr_assert_gt(empty, 0);
    cr_assert_gt(opts, 0, "no case combines every option");
}
