/*
 * cpu_math.h - vectorizable float kernels of the CPU backend, in portable
 * C that GCC and Clang auto-vectorize (no intrinsics, no -ffast-math): a
 * fast, accurate expf and tanhf, half-precision conversions, and the
 * per-chunk passes of a cross-entropy row (max, exponentials, sums).
 *
 * Every function is `always_inline`; those with an `fma` argument expect a
 * compile-time constant. host/cpu_ce.c instantiates its row code once per
 * instruction set (AVX-512, AVX2+FMA, baseline) inside functions with the
 * matching target attribute, so these loops are compiled, and vectorized,
 * for that target. With fma = 1 a multiply-add is fused (fmaf: one
 * rounding, one instruction); with fma = 0 it is a multiply and an add (the
 * baseline x86-64 has no FMA, and fmaf there is a slow libm call).
 *
 * Branch-free on purpose: a conditional expression is a branch to GCC's
 * if-conversion, which refuses to vectorize a loop whose branches hold
 * floating-point operations that may trap (-ftrapping-math is the
 * default), hence xent_select and the integer-keyed max.
 *
 * Sums run in double with a fixed order: XENT_LANES independent lanes
 * (lane k takes the elements j with j % XENT_LANES == k of the range),
 * combined by a pairwise tree at the end. The order depends only on the
 * range, never on the instruction set, the alignment or the thread count.
 */
#ifndef XENT_CPU_MATH_H
#define XENT_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define XENT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define XENT_ALWAYS_INLINE static inline
#endif

/* Lanes of every reduction: one AVX-512 register of floats, two of
 * doubles (two AVX2 or four SSE registers of floats). */
#define XENT_LANES 16

XENT_ALWAYS_INLINE float xent_madd(float a, float b, float c, int fma)
{
    return fma ? fmaf(a, b, c) : a * b + c;
}

XENT_ALWAYS_INLINE uint32_t xent_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

XENT_ALWAYS_INLINE float xent_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* c ? a : b as bit operations (see the file comment). */
XENT_ALWAYS_INLINE float xent_select(int c, float a, float b)
{
    uint32_t mask = -(uint32_t)c;
    return xent_bits_f32((xent_f32_bits(a) & mask) |
                         (xent_f32_bits(b) & ~mask));
}

/* c ? x : 0.0, the same way. */
XENT_ALWAYS_INLINE double xent_keep_if(int c, double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    u &= -(uint64_t)c;
    memcpy(&x, &u, sizeof x);
    return x;
}

/*
 * exp(x) in float, branch-free, for vector loops.
 *
 *  - x = n ln2 + r, n = rint(x / ln2), |r| <= ln2/2 (Cody-Waite: ln2 split
 *    into a 15-bit head, so n * head is exact, and a tail);
 *  - e^r = 1 + r + r^2 P(r), P of degree 5 (the Cephes expf
 *    coefficients, approximation error below 2^-29 relative);
 *  - 2^n applied without a branch so that results in the subnormal range
 *    come out right, with one rounding: for x <= 0 (`bounded`) as
 *    (e^r 2^(n+26)) 2^-26, otherwise as the product of two normal powers
 *    of two 2^n1 2^n2 (n1 = floor(n/2)).
 * Max error, measured over every float in [-110, 0] (bounded) and in
 * [-110, 90]: 1.01 ulp with FMA, 0.99 ulp without. Special values: x <=
 * -105 (and -inf) gives +0, NaN gives NaN. `bounded` != 0 promises x <= 0
 * or NaN (x = z - m with m the row max); with bounded == 0, x > 89 is
 * clamped to 89, whose e^x overflows to +inf like expf's.
 */
XENT_ALWAYS_INLINE float xent_exp_fast(float x, int fma, int bounded)
{
    x = xent_select(x < -105.0f, -105.0f, x); /* NaN stays NaN */
    if (!bounded)
        x = xent_select(x > 89.0f, 89.0f, x);
    const float shift = 0x1.8p23f; /* adding it rounds to an integer */
    float k = xent_madd(x, 0x1.715476p+0f, shift, fma);
    float n = k - shift;
    float r = xent_madd(-n, 0x1.62e4p-1f, x, fma);
    r = xent_madd(-n, 0x1.7f7d1cp-20f, r, fma);
    float p = xent_madd(1.9875691500e-4f, r, 1.3981999507e-3f, fma);
    p = xent_madd(p, r, 8.3334519073e-3f, fma);
    p = xent_madd(p, r, 4.1665795894e-2f, fma);
    p = xent_madd(p, r, 1.6666665459e-1f, fma);
    p = xent_madd(p, r, 5.0000001201e-1f, fma);
    float poly = xent_madd(p, r * r, r, fma); /* e^r - 1 */
    /* the integer n sits in the low mantissa bits of k: the bits of k
     * are those of shift plus n, and shift's shifted out by << 23 */
    uint32_t kb = xent_f32_bits(k);
    if (bounded) { /* n in [-152, 0]: n + 26 is a normal exponent */
        float s = xent_bits_f32((kb << 23) + ((127u + 26u) << 23));
        return xent_madd(poly, s, s, fma) * 0x1p-26f;
    }
    int32_t ni = (int32_t)(kb - xent_f32_bits(shift));
    int32_t n1 = ni >> 1, n2 = ni - n1; /* both in [-76, 64] */
    float s1 = xent_bits_f32((uint32_t)(n1 + 127) << 23);
    float s2 = xent_bits_f32((uint32_t)(n2 + 127) << 23);
    return xent_madd(poly, s1, s1, fma) * s2;
}

/*
 * tanh(x) in float, branch-free, for vector loops (the softcap): for
 * |x| < 0.625 the odd polynomial x + x^3 P(x^2) of Cephes' tanhf, else
 * 1 - 2 / (e^(2|x|) + 1) with xent_exp_fast, the sign put back. Max
 * error, measured over every float in [0, 40] (beyond, tanh rounds to 1):
 * 1.33 ulp with or without FMA (glibc's tanhf: 2.19). tanh(+-inf) = +-1,
 * NaN gives NaN, tanh(-0) = +0.
 */
XENT_ALWAYS_INLINE float xent_tanh_fast(float x, int fma)
{
    const float a = fabsf(x);
    const float z = x * x;
    float p = xent_madd(-5.70498872745e-3f, z, 2.06390887954e-2f, fma);
    p = xent_madd(p, z, -5.37397155531e-2f, fma);
    p = xent_madd(p, z, 1.33314422036e-1f, fma);
    p = xent_madd(p, z, -3.33332819422e-1f, fma);
    const float small = xent_madd(p * z, x, x, fma);
    const float big = 1.0f - 2.0f / (xent_exp_fast(2.0f * a, fma, 0) + 1.0f);
    return xent_select(a < 0.625f, small, copysignf(big, x));
}

/* IEEE half (bits) to float, exact and branch-free, so that conversion
 * loops vectorize: the value of xent_f16_to_f32 (host/internal.h) for
 * every input. Subnormal halves are made without a subnormal float
 * operand (2^-14 (1 + m/1024) - 2^-14 = m 2^-24), so a flush-to-zero or
 * denormals-are-zero mode does not change them. */
XENT_ALWAYS_INLINE float xent_f16_to_f32_fast(uint16_t h)
{
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13; /* exponent, mantissa */
    const float normal = xent_bits_f32(em + (112u << 23)); /* rebias 15->127 */
    const float sub = xent_bits_f32(em + (113u << 23)) - 0x1p-14f;
    uint32_t b = xent_f32_bits(xent_select(em < (1u << 23), sub, normal));
    b |= em >= (0x1fu << 23) ? 0x7f800000u : 0u; /* inf, NaN */
    return xent_bits_f32(b | (uint32_t)(h & 0x8000u) << 16);
}

/* Float to IEEE half bits, round to nearest even, branch-free (after F.
 * Giesen's float_to_half_fast3_rtne): the value of xent_f32_to_f16
 * (host/internal.h) for every input. */
XENT_ALWAYS_INLINE uint16_t xent_f32_to_f16_fast(float x)
{
    const uint32_t sign = xent_f32_bits(x) & 0x80000000u;
    const uint32_t f = xent_f32_bits(x) ^ sign; /* |x| */
    /* |x| < 2^-14: a half subnormal (or 0); adding 0.5 aligns its 10
     * mantissa bits at the bottom of the float, rounding to even */
    const float magic = xent_bits_f32(126u << 23);
    const uint32_t sub = xent_f32_bits(xent_bits_f32(f) + magic) - (126u << 23);
    /* normal: rebias the exponent, round to even on the 13 dropped bits */
    const uint32_t nrm =
        (f + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((f >> 13) & 1u)) >> 13;
    uint32_t h = f < (113u << 23) ? sub : nrm;
    h = f >= (143u << 23) ? 0x7c00u : h; /* |x| >= 65536: inf */
    h = f > 0x7f800000u ? 0x7e00u : h;   /* NaN */
    return (uint16_t)(h | sign >> 16);
}

/* Pairwise sum of the lanes, in a fixed order. */
XENT_ALWAYS_INLINE double xent_lanes_sum(double *acc)
{
    for (int w = XENT_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0];
}

/* A signed integer with the order of the float x (for non-NaN x): the
 * bits, with the magnitude bits flipped for negative x. Integer max
 * vectorizes without -ffast-math, where a float max with IEEE semantics
 * does not. */
XENT_ALWAYS_INLINE int32_t xent_order_key(float x)
{
    int32_t b = (int32_t)xent_f32_bits(x);
    return b ^ ((b >> 31) & 0x7fffffff);
}

XENT_ALWAYS_INLINE float xent_from_order_key(int32_t k)
{
    return xent_bits_f32((uint32_t)(k ^ ((k >> 31) & 0x7fffffff)));
}

/* max(a, b) in the order of xent_k_max. */
XENT_ALWAYS_INLINE float xent_max_ordered(float a, float b)
{
    int32_t ka = xent_order_key(a), kb = xent_order_key(b);
    return xent_from_order_key(ka > kb ? ka : kb);
}

/* max_j z[j] over [0, n) (exact, so in any order); -inf when n == 0. A NaN
 * with the sign bit clear wins over everything (the row's results are NaN
 * then anyway), one with it set loses to everything. */
XENT_ALWAYS_INLINE float xent_k_max(const float *restrict z, int64_t n)
{
    int32_t mk = xent_order_key(-INFINITY);
    for (int64_t j = 0; j < n; j++) {
        int32_t k = xent_order_key(z[j]);
        mk = k > mk ? k : mk;
    }
    return xent_from_order_key(mk);
}

/* out[j] = e^(z_j - m). `bounded` as for xent_exp_fast: set when m is the
 * max of the z_j, clear for any other m (e.g. a saved lse). out may be z
 * itself (an in-place gradient), so neither is restrict. */
XENT_ALWAYS_INLINE void xent_k_exp(const float *z, int64_t n, float m,
                                   float *out, int fma, int bounded)
{
    for (int64_t j = 0; j < n; j++)
        out[j] = xent_exp_fast(z[j] - m, fma, bounded);
}

/* One element of the weighted sums: v_j (z_j - m) in double, skipped
 * (0) where v_j == 0 so that a zero weight on a -inf logit adds nothing. */
XENT_ALWAYS_INLINE double xent_wsum_elem(const float *restrict z,
                                         const float *restrict v, int64_t j,
                                         double m)
{
    double vj = (double)v[j];
    return xent_keep_if(vj != 0.0, vj * ((double)z[j] - m));
}

/* *a += sum_j v_j (z_j - m) and *vs += sum_j v_j over [0, n), in double. */
XENT_ALWAYS_INLINE void xent_k_wsum(const float *restrict z,
                                    const float *restrict v, int64_t n, float m,
                                    double *a, double *vs)
{
    double acc_a[XENT_LANES] = {0}, acc_v[XENT_LANES] = {0};
    const int64_t nb = n - n % XENT_LANES;
    for (int64_t j = 0; j < nb; j += XENT_LANES)
        for (int k = 0; k < XENT_LANES; k++) {
            acc_a[k] += xent_wsum_elem(z, v, j + k, m);
            acc_v[k] += (double)v[j + k];
        }
    for (int64_t k = 0; k < n - nb; k++) {
        acc_a[k] += xent_wsum_elem(z, v, nb + k, m);
        acc_v[k] += (double)v[nb + k];
    }
    *a += xent_lanes_sum(acc_a);
    *vs += xent_lanes_sum(acc_v);
}

/* sum_j v_j over [0, n) in double. */
XENT_ALWAYS_INLINE double xent_k_sum(const float *restrict v, int64_t n)
{
    double acc[XENT_LANES] = {0};
    const int64_t nb = n - n % XENT_LANES;
    for (int64_t j = 0; j < nb; j += XENT_LANES)
        for (int k = 0; k < XENT_LANES; k++)
            acc[k] += (double)v[j + k];
    for (int64_t k = 0; k < n - nb; k++)
        acc[k] += (double)v[nb + k];
    return xent_lanes_sum(acc);
}

#endif /* XENT_CPU_MATH_H */
