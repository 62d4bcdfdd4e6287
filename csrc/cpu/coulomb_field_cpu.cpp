// Fused CPU Coulomb field (EFM two plates, PFGM one plate), FIELDS.md §3-§4.
//
// Per plate: pass 1 d2_ij = ||x~_i - y_j||^2 over all D + 1 columns from direct differences
// (SIMD tiles in the data precision); logits field_math.h coulomb_logit in double, log-domain
// softmax with the row max, terms below skip_ratio of the row's largest dropped; pass 2
// E_i = sum_j coeff_ij (y_j - x~_i) from direct differences, accumulated in the data precision
// over blocks of 64 charges, each block's sum added to the double row (pair_passes.h; every pass
// in double in the transposed small-D layout). Then the optional per-plate normalisation,
// -E+ + E- (two plates) and the final normalisation.
#include <cmath>
#include <vector>

#include "field_common.h"
#include "kernels.h"

namespace ifm {
namespace cpu {
namespace {

// Surviving (j, c2 = -coeff_j) of one query row of a plate, in increasing j (pass 2 adds
// c2 * (x - y_j) = coeff_j * (y_j - x)). A term is skipped when its size coeff_j * d_j is below
// skip_ratio of the row's largest term (sizes, not weights: a query on a charge gets its field
// from charges whose weights are far below the nearest one's).
//
// Logits decrease with d2, so charges beyond the distance where the weight drops below
// skip_ratio / e of the nearest charge's are not evaluated; that is exact when those far terms,
// bounded by (skip_ratio / e) * d_thr, are below skip_ratio times the largest evaluated term.
// Otherwise (a query on or next to a charge, or a low dimension) every charge is evaluated.
//
// lognorm (nullable, 2 doubles): the row's largest logit m and log-normaliser m + log(sum of
// the evaluated weights e^(l - m)); -inf for both when the row has no finite logit.
template <typename T>
void coulomb_row_terms(const simd::PassKernels<T>& kern, const double* d2, int64_t B, int64_t dim,
                       double sum_eps, bool is_double, RowTerms& out, double* lognorm) {
  out.n = 0;
  if (lognorm != nullptr) lognorm[0] = lognorm[1] = -INFINITY;
  if (B == 0) return;
  const double ratio = skip_ratio(is_double);
  const double nearest = coulomb_logit(d2[argmin_row(d2, B)], dim);
  // logit_j < nearest + log(ratio) - 1  <=>  d_j + 1e-7 > exp((1 - log(ratio) - nearest) / dim)
  const double d_thr = std::exp((1.0 - std::log(ratio) - nearest) / (double)dim) - kCoulombDEps;
  double thr = (d_thr > 0.0 && dim >= 2) ? d_thr * d_thr : INFINITY;
  const double* d2c = out.v0.data();
  double* e = out.v1.data();
  for (int pass = 0; pass < 2; ++pass) {
    out.gather(d2, B, thr);
    const int64_t nc = out.n;
    kern.coulomb_logits(d2c, nc, dim, e);
    const double m = max_of(e, nc);
    if (!std::isfinite(m)) {
      out.n = 0;
      return;
    }
    kern.exp_shift(e, nc, m, e);  // weights relative to the largest
    // sizes compared squared: term_c^2 = e_c^2 * d2_c
    double sum = 0.0, top2 = 0.0;
#pragma omp simd reduction(+ : sum) reduction(max : top2)
    for (int64_t c = 0; c < nc; ++c) {
      sum += e[c];
      const double t2 = e[c] * e[c] * d2c[c];
      top2 = t2 > top2 ? t2 : top2;
    }
    if (thr != INFINITY && !(d_thr * d_thr <= 4.0 * top2)) {  // prescreen bound not tight enough
      thr = INFINITY;
      continue;
    }
    if (lognorm != nullptr) {
      lognorm[0] = m;
      lognorm[1] = m + std::log(sum);
    }
    const double den = sum + sum_eps;
    const double floor2 = ratio * ratio * top2;
    double* c1 = out.c1.data();
    double* c2 = out.c2.data();
#pragma omp simd
    for (int64_t c = 0; c < nc; ++c) {
      c1[c] = 0.0;
      const bool keep = (e[c] > 0.0) & (e[c] * e[c] * d2c[c] >= floor2);
      c2[c] = keep ? -(e[c] / den) : 0.0;
    }
    return;
  }
}

// Combines the plate terms of one row into E (FIELDS.md §3): per-plate normalisation, then
// E+ (one plate) or -E+ + E- (two plates).
void combine_plates(double* Ep, double* En, int64_t dim, bool two, bool plate_normalize,
                    double plate_gamma, double* E) {
  const double scale = std::sqrt((double)dim);
  const double fp =
      plate_normalize ? normalize_factor(row_norm2(Ep, dim), scale, plate_gamma) : 1.0;
  if (!two) {
    for (int64_t k = 0; k < dim; ++k) E[k] = Ep[k] * fp;
    return;
  }
  const double fn =
      plate_normalize ? normalize_factor(row_norm2(En, dim), scale, plate_gamma) : 1.0;
  for (int64_t k = 0; k < dim; ++k) E[k] = En[k] * fn - Ep[k] * fp;
}

template <typename T>
void coulomb_field_impl(const T* points, int64_t b, const T* positive, int64_t Bp,
                        const T* negative, int64_t Bn, int64_t D, bool plate_normalize,
                        double plate_gamma, double sum_eps, const NormParams& norm, T* out,
                        double* lognorm, int num_threads) {
  const int64_t DIM = D + 1;
  const bool is_double = sizeof(T) == sizeof(double);
  const bool two = negative != nullptr;
  num_threads = threads_for(num_threads, b * (Bp + (two ? Bn : 0)) * DIM);
  const simd::PassKernels<T> kern = simd::pass_kernels<T>();
  const int n_plates = two ? 2 : 1;
  const T* charges[2] = {positive, negative};
  const int64_t counts[2] = {Bp, two ? Bn : 0};
  const int64_t Bmax = std::max(counts[0], counts[1]);

  if (DIM <= kSoaMaxDim) {
    // Transposed layout: SIMD over charges, every pass in double.
    std::vector<double> yT[2];
    int64_t pad[2] = {0, 0};
    for (int s = 0; s < n_plates; ++s) {
      pad[s] = soa_pad(kern, counts[s]);
      yT[s].resize((size_t)(DIM * pad[s]));
      transpose_to_double(charges[s], DIM, counts[s], DIM, pad[s], yT[s].data());
    }
    const int64_t padmax = std::max(pad[0], pad[1]);
#pragma omp parallel num_threads(num_threads)
    {
      RowTerms terms(Bmax);
      std::vector<double> x(DIM), d2(padmax), c1(padmax), c2(padmax), E(DIM);
      std::vector<double> Eplate[2] = {std::vector<double>(DIM), std::vector<double>(DIM)};
#pragma omp for schedule(dynamic, 8)
      for (int64_t i = 0; i < b; ++i) {
        for (int64_t k = 0; k < DIM; ++k) x[k] = (double)points[i * DIM + k];
        for (int s = 0; s < n_plates; ++s) {
          std::fill(Eplate[s].begin(), Eplate[s].end(), 0.0);
          if (counts[s] == 0) continue;
          kern.pass1_soa[0](x.data(), 0.0, yT[s].data(), nullptr, DIM, pad[s], d2.data());
          coulomb_row_terms(kern, d2.data(), counts[s], DIM, sum_eps, is_double, terms,
                            (lognorm != nullptr && s == 0) ? lognorm + 2 * i : nullptr);
          terms.scatter(c1.data(), c2.data(), pad[s]);
          double unused = 0.0;
          kern.pass2_soa[0](x.data(), 0.0, yT[s].data(), nullptr, nullptr, c2.data(), DIM, pad[s],
                            Eplate[s].data(), &unused);
        }
        combine_plates(Eplate[0].data(), Eplate[1].data(), DIM, two, plate_normalize, plate_gamma,
                       E.data());
        write_row(E.data(), DIM, norm, out + i * DIM);
      }
    }
    return;
  }

  // Row-major layout: pass 1 per plate over the whole [b, B] matrix, then pass 2 by query tiles.
  std::vector<double> d2[2];
  std::vector<QueryGroup<T>> groups[2];
  for (int s = 0; s < n_plates; ++s) {
    d2[s].assign((size_t)(b * counts[s]), 0.0);
    groups[s] = {{{}, charges[s], DIM}};
    groups[s][0].rows.resize(b);
    for (int64_t i = 0; i < b; ++i) groups[s][0].rows[i] = i;
    pass1_matrix<T>(kern, points, DIM, nullptr, groups[s], nullptr, 0, counts[s], DIM, d2[s].data(),
                    num_threads);
  }
  const int Q2 = kern.Q2;
  const int64_t n_tiles = (b + Q2 - 1) / Q2;
#pragma omp parallel num_threads(num_threads)
  {
    TileTerms<T> tt(Q2, Bmax);
    std::vector<double> Eplate[2] = {std::vector<double>((size_t)(Q2 * DIM)),
                                     std::vector<double>((size_t)(Q2 * DIM))};
    std::vector<double> E(DIM);
    std::vector<double*> acc(Q2);
#pragma omp for schedule(dynamic, 1)
    for (int64_t ti = 0; ti < n_tiles; ++ti) {
      const int64_t* rows = groups[0][0].rows.data() + ti * Q2;
      const int valid = (int)std::min<int64_t>(Q2, b - ti * Q2);
      for (int s = 0; s < n_plates; ++s) {
        std::fill(Eplate[s].begin(), Eplate[s].end(), 0.0);
        for (int q = 0; q < Q2; ++q) acc[q] = Eplate[s].data() + q * DIM;
        tt.B = counts[s];
        for (int q = 0; q < valid; ++q) {
          coulomb_row_terms(kern, d2[s].data() + rows[q] * counts[s], counts[s], DIM, sum_eps,
                            is_double, tt.rows[q],
                            (lognorm != nullptr && s == 0) ? lognorm + 2 * rows[q] : nullptr);
          tt.rows[q].compact();
        }
        pass2_for_tile<T>(kern, points, DIM, nullptr, rows, valid, charges[s], DIM, nullptr, 0, DIM,
                          tt, acc.data());
      }
      for (int q = 0; q < valid; ++q) {
        combine_plates(Eplate[0].data() + q * DIM, Eplate[1].data() + q * DIM, DIM, two,
                       plate_normalize, plate_gamma, E.data());
        write_row(E.data(), DIM, norm, out + rows[q] * DIM);
      }
    }
  }
}

}  // namespace

template <typename T>
void coulomb_field(const T* points, int64_t b, const T* positive, int64_t Bp, const T* negative,
                   int64_t Bn, int64_t D, bool plate_normalize, double plate_gamma, double sum_eps,
                   const NormParams& norm, T* out, int num_threads) {
  coulomb_field_impl<T>(points, b, positive, Bp, negative, Bn, D, plate_normalize, plate_gamma,
                        sum_eps, norm, out, nullptr, num_threads);
}

template <typename T>
void coulomb_plate_partial(const T* points, int64_t b, const T* charges, int64_t B, int64_t D,
                           T* out, double* lognorm, int num_threads) {
  const NormParams raw{false, 1.0, 0.0};
  coulomb_field_impl<T>(points, b, charges, B, nullptr, 0, D, false, 0.0, 0.0, raw, out, lognorm,
                        num_threads);
}

template void coulomb_field<float>(const float*, int64_t, const float*, int64_t, const float*,
                                   int64_t, int64_t, bool, double, double, const NormParams&,
                                   float*, int);
template void coulomb_field<double>(const double*, int64_t, const double*, int64_t, const double*,
                                    int64_t, int64_t, bool, double, double, const NormParams&,
                                    double*, int);
template void coulomb_plate_partial<float>(const float*, int64_t, const float*, int64_t, int64_t,
                                           float*, double*, int);
template void coulomb_plate_partial<double>(const double*, int64_t, const double*, int64_t, int64_t,
                                            double*, double*, int);

}  // namespace cpu
}  // namespace ifm
