// Per-pair math of the field targets (FIELDS.md §2-§4), shared by every C++ backend.
//
// This header is the single C++ definition of the string field's tube width, slope and pair
// weight, and of the Coulomb log-weight. It includes no torch header and compiles as plain C++
// (CPU kernels, unit tests) and as CUDA (__host__ __device__ under nvcc). The per-query terms
// (string_query) are always double. The per-pair functions are templates on the compute type C:
// double everywhere (the cheap O(b * B) coefficient pass, done in float64 whatever the data
// precision, FIELDS.md §7, "Logit precision"), except on the CUDA backend's float32 coefficient
// path (float32 data on GPUs with slow FP64, docs/DESIGN.md "CUDA kernels"), which instantiates
// them with float.
#pragma once

#include <cmath>
#include <cstdint>

#include "field_params.h"

#if defined(__CUDACC__)
#define IFM_HD __host__ __device__ __forceinline__
#else
#define IFM_HD inline
#endif

namespace ifm {

// Library math of the compute type: the float overloads call the single-precision functions
// (sqrtf, ...), never a silent promotion to double; the double ones are the calls of the double
// code they replace.
IFM_HD float fm_sqrt(float x) {
  return sqrtf(x);
}
IFM_HD double fm_sqrt(double x) {
  return sqrt(x);
}
IFM_HD float fm_log(float x) {
  return logf(x);
}
IFM_HD double fm_log(double x) {
  return log(x);
}
IFM_HD float fm_exp(float x) {
  return expf(x);
}
IFM_HD double fm_exp(double x) {
  return exp(x);
}
IFM_HD float fm_fabs(float x) {
  return fabsf(x);
}
IFM_HD double fm_fabs(double x) {
  return fabs(x);
}

// The type itself, in a context where template arguments are not deduced from it.
template <typename C>
struct Same {
  using type = C;
};

// Constants of the authors' code; the Python reference (python/ifm/reference.py) uses the same.
constexpr double kStringTanEps = 1e-5;  // kappa = K / (tan(K z) + 1e-5) on the left end
constexpr double kStringREps = 1e-11;   // sin(alpha) / (r + 1e-11)
constexpr double kStringCosEps = 1e-8;  // (cos(alpha) + 1e-8) * (s / sigma0)^D
constexpr double kStringDenEps = 1e-2;  // ... + 1e-2
constexpr double kCoulombDEps = 1e-7;   // (d + 1e-7) in the Coulomb weights

// A term below this fraction of its row's largest term cannot change the result at the data
// precision (24 or 53 mantissa bits, summed over up to ~1e5 pairs): it is skipped in the
// weighted-sum pass (string: by pair weight; Coulomb: by contribution coeff * distance, see
// docs/DESIGN.md). See PERFORMANCE.md, "Arithmetic floor".
IFM_HD double skip_ratio(bool is_double) {
  return is_double ? 0x1p-80 : 0x1p-44;
}

// log(skip_ratio(is_double)) without a call to log (device code would evaluate it per thread in
// FP64): the ratio is 2^-n, and n * ln 2 rounds to the same double as log(2^-n) for n = 80 and
// 44 (checked in csrc/tests/test_field_math.cpp).
IFM_HD double log_skip_ratio(bool is_double) {
  return (is_double ? -80.0 : -44.0) * 0.693147180559945309417;
}

// Everything about one query that depends on its z only (computed in double by string_query;
// StringQueryT<float> is that result rounded, see query_as).
template <typename C>
struct StringQueryT {
  bool inside;  // 0 <= z <= L; a query outside gets no contribution from any pair
  C s;          // tube width s(z); 0 on a plate
  C inv_2s2;    // 1 / (2 s^2), or 0 when s == 0 (rounds to inf in float where s is tiny)
  C kappa;      // slope: tan(alpha) = r * kappa; -inf at z == L
  C pow_s;      // (s / sigma0)^D (may underflow to 0)
  // Offsets are evaluated from the nearer plate so that float32 keeps its digits near both
  // plates: rho = (x - base) - t * Delta, base = A (quark) with t = z / L when z <= L / 2,
  // base = C (antiquark) with t = -(L - z) / L otherwise.
  bool from_antiquark;
  C t;
};
using StringQuery = StringQueryT<double>;

IFM_HD StringQuery string_query(double z, const StringParams& p) {
  StringQuery q;
  q.inside = (z >= 0.0) && (z <= p.L);
  q.from_antiquark = z > 0.5 * p.L;
  q.t = q.from_antiquark ? -(p.L - z) / p.L : z / p.L;
  const bool left = z < p.d;
  const bool right = !left && (z > p.L - p.d);
  if (!q.inside) {
    q.s = 0.0;
    q.kappa = 0.0;
  } else if (left) {
    q.s = p.sigma0 * sin(p.K * z);
    q.kappa = p.K / (tan(p.K * z) + kStringTanEps);
  } else if (right) {
    // sigma0 * cos(K (z - L + d)) == sigma0 * sin(K (L - z)) since d = pi / (2K); the sine form
    // is exactly 0 at z = L, and -K / tan(K (L - z)) is the well-conditioned form of the
    // authors' K * tan(pi - K (z - L + d)).
    q.s = p.sigma0 * sin(p.K * (p.L - z));
    const double tr = tan(p.K * (p.L - z));
    q.kappa = tr > 0.0 ? -p.K / tr : -INFINITY;
  } else {
    q.s = p.sigma0;
    q.kappa = 0.0;
  }
  q.inv_2s2 = q.s > 0.0 ? 0.5 / (q.s * q.s) : 0.0;
  q.pow_s = pow(q.s / p.sigma0, (double)p.D);
  return q;
}

// The double query terms rounded to the compute type (once per query row).
template <typename C>
IFM_HD StringQueryT<C> query_as(const StringQuery& q) {
  StringQueryT<C> o;
  o.inside = q.inside;
  o.s = (C)q.s;
  o.inv_2s2 = (C)q.inv_2s2;
  o.kappa = (C)q.kappa;
  o.pow_s = (C)q.pow_s;
  o.from_antiquark = q.from_antiquark;
  o.t = (C)q.t;
  return o;
}

// Coefficients of one (query, pair) term. The pair field is
//   E_ij = w * [cos_a * n_j + sr * (0, rho_ij)],  w = exp(logw)
// with sr = sin(alpha) / (r + 1e-11). logw is -inf when the pair contributes nothing.
template <typename C>
struct StringPairT {
  C logw;
  C cos_a;
  C sr;
};
using StringPair = StringPairT<double>;

template <typename C>
IFM_HD StringPairT<C> string_pair(const StringQueryT<C>& q, typename Same<C>::type r2) {
  const C one = C(1), zero = C(0), inf = C(INFINITY);
  StringPairT<C> out;
  if (!q.inside || (q.s == zero && r2 > zero)) {
    // outside the plates, or on a plate away from the pair's end point: exp(-r^2 / 0) = 0
    out.logw = -inf;
    out.cos_a = one;
    out.sr = zero;
    return out;
  }
  C cos_a = one, sin_a = zero;
  const C r = fm_sqrt(r2);
  if (r2 > zero && q.kappa != zero) {
    const C tan_a = r * q.kappa;
    if (fm_fabs(tan_a) == inf) {
      cos_a = zero;
      sin_a = tan_a > zero ? one : -one;
    } else {
      cos_a = one / fm_sqrt(one + tan_a * tan_a);
      sin_a = tan_a * cos_a;
    }
  }
  out.cos_a = cos_a;
  out.sr = sin_a / (r + C(kStringREps));
  // 0 at r == 0 (the limit when s == 0), also where inv_2s2 is inf (float, s tiny > 0): the
  // guard keeps 0 * inf = NaN out
  const C expo = r2 > zero ? -r2 * q.inv_2s2 : zero;
  const C den = (cos_a + C(kStringCosEps)) * q.pow_s + C(kStringDenEps);
  out.logw = expo - fm_log(den);
  return out;
}

// Coulomb log-weight of a charge at squared distance d2 from a query in R^DIM:
// log((1 / (d + 1e-7))^DIM). Stabilised and unstabilised weights of the authors' code are both
// softmax_j of this (FIELDS.md §3).
IFM_HD double coulomb_logit(double d2, int64_t dim) {
  return -(double)dim * log(sqrt(d2) + kCoulombDEps);
}

// The float form (the CUDA float32 coefficient path): u = sqrt(d2) + 1e-7 in float, and the
// logit relative to the row's nearest charge (u_min = min_k u_k > 0),
//   lambda = -DIM * log1p((u - u_min) / u_min) = -DIM * log(u) + DIM * log(u_min) <= 0,
// whose error is ~DIM * eps * (u - u_min) / u_min (< 30 eps for every term above 2^-44 of the
// largest), where a float -DIM * log(u) would lose ~DIM * eps * |log u| (~1e-3 at DIM = 3073).
IFM_HD float coulomb_distance(float d2) {
  return sqrtf(d2) + (float)kCoulombDEps;
}
IFM_HD float coulomb_relative_logit(float u, float u_min, int64_t dim) {
  return -(float)dim * log1pf((u - u_min) / u_min);
}

// Row scale of the normalisation scale * E / (||E|| + eps) (FIELDS.md §4). A zero row stays
// zero (factor 0), also for eps = 0, where the formula would give 0 / 0.
IFM_HD double normalize_factor(double norm2, double scale, double eps) {
  return norm2 == 0.0 ? 0.0 : scale / (sqrt(norm2) + eps);
}

}  // namespace ifm
