// Per-pair math of the field targets (FIELDS.md §2-§4), shared by every C++ backend.
//
// This header is the single C++ definition of the string field's tube width, slope and pair
// weight, and of the Coulomb log-weight. It includes no torch header and compiles as plain C++
// (CPU kernels, unit tests) and as CUDA (__host__ __device__ under nvcc). All of it works in
// double: it is the cheap O(b * B) coefficient pass, done in float64 whatever the data precision
// (FIELDS.md §7, "Logit precision").
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

// Everything about one query that depends on its z only.
struct StringQuery {
  bool inside;     // 0 <= z <= L; a query outside gets no contribution from any pair
  double s;        // tube width s(z); 0 on a plate
  double inv_2s2;  // 1 / (2 s^2), or 0 when s == 0
  double kappa;    // slope: tan(alpha) = r * kappa; -inf at z == L
  double pow_s;    // (s / sigma0)^D (may underflow to 0)
  // Offsets are evaluated from the nearer plate so that float32 keeps its digits near both
  // plates: rho = (x - base) - t * Delta, base = A (quark) with t = z / L when z <= L / 2,
  // base = C (antiquark) with t = -(L - z) / L otherwise.
  bool from_antiquark;
  double t;
};

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

// Coefficients of one (query, pair) term. The pair field is
//   E_ij = w * [cos_a * n_j + sr * (0, rho_ij)],  w = exp(logw)
// with sr = sin(alpha) / (r + 1e-11). logw is -inf when the pair contributes nothing.
struct StringPair {
  double logw;
  double cos_a;
  double sr;
};

IFM_HD StringPair string_pair(const StringQuery& q, double r2) {
  StringPair out;
  if (!q.inside || (q.s == 0.0 && r2 > 0.0)) {
    // outside the plates, or on a plate away from the pair's end point: exp(-r^2 / 0) = 0
    out.logw = -INFINITY;
    out.cos_a = 1.0;
    out.sr = 0.0;
    return out;
  }
  double cos_a = 1.0, sin_a = 0.0;
  const double r = sqrt(r2);
  if (r2 > 0.0 && q.kappa != 0.0) {
    const double tan_a = r * q.kappa;
    if (fabs(tan_a) == INFINITY) {
      cos_a = 0.0;
      sin_a = tan_a > 0.0 ? 1.0 : -1.0;
    } else {
      cos_a = 1.0 / sqrt(1.0 + tan_a * tan_a);
      sin_a = tan_a * cos_a;
    }
  }
  out.cos_a = cos_a;
  out.sr = sin_a / (r + kStringREps);
  const double expo = -r2 * q.inv_2s2;  // 0 when s == 0 and r == 0 (the limit)
  const double den = (cos_a + kStringCosEps) * q.pow_s + kStringDenEps;
  out.logw = expo - log(den);
  return out;
}

// Coulomb log-weight of a charge at squared distance d2 from a query in R^DIM:
// log((1 / (d + 1e-7))^DIM). Stabilised and unstabilised weights of the authors' code are both
// softmax_j of this (FIELDS.md §3).
IFM_HD double coulomb_logit(double d2, int64_t dim) {
  return -(double)dim * log(sqrt(d2) + kCoulombDEps);
}

// Row scale of the normalisation scale * E / (||E|| + eps) (FIELDS.md §4). A zero row stays
// zero (factor 0), also for eps = 0, where the formula would give 0 / 0.
IFM_HD double normalize_factor(double norm2, double scale, double eps) {
  return norm2 == 0.0 ? 0.0 : scale / (sqrt(norm2) + eps);
}

}  // namespace ifm
