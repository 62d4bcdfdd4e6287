// Fused CPU string (IFM) field, FIELDS.md §2 two-pass form (DESIGN.md "Numerics").
//
//   pass 1   r2_ij = sum_k rho_ijk^2, rho = (x_i - base_j) - t_i * Delta_j from the nearer plate
//            (field_math.h string_query), SIMD register tiles in the data precision;
//   coeffs   per row in double with string_query / string_pair: logw, row max, w, skip test;
//   pass 2   E_z = L * sum_j c1 (double), E_x = sum_j c2 * rho_ij + c1 * Delta_j over surviving
//            pairs, accumulated in the data precision over blocks of 64 pairs, each block's sum
//            added to the double row (pair_passes.h), then the optional normalisation.
// Large D uses row-major tiles; small D (the toys) the transposed layout (field_common.h), where
// every pass is in double.
#include <cmath>
#include <memory>
#include <vector>

#include "field_common.h"
#include "kernels.h"

namespace ifm {
namespace cpu {
namespace {

// Coefficients of the pairs of one query row that survive the skip test (w below
// skip_ratio * row max weight contributes nothing at the data precision), appended to `out`
// as (j, c1 = w cos_a nu_j, c2 = w sr) in increasing j.
//
// A pair whose weight is certainly below the threshold is dropped before string_pair is
// evaluated: since den >= 1e-2, logw_j <= -r2_j / (2 s^2) - log(1e-2), and the row max is at
// least the log-weight of the pair with the smallest r2; pairs whose bound is below that
// maximum's skip level by a factor e are skipped by the exact test anyway.
template <typename T>
void string_row_terms(const simd::PassKernels<T>& kern, const StringQuery& q, const double* r2,
                      int64_t B, const double* nu, bool stable, bool is_double, RowTerms& out) {
  out.n = 0;
  if (!q.inside || B == 0) return;
  const double log_ratio = log_skip_ratio(is_double);
  const StringPair nearest = string_pair(q, r2[argmin_row(r2, B)]);
  double thr = INFINITY;
  if (q.inv_2s2 > 0.0 && std::isfinite(nearest.logw))
    thr = (-nearest.logw - log_ratio + 1.0 - std::log(kStringDenEps)) / q.inv_2s2;
  out.gather(r2, B, thr);
  const int64_t nc = out.n;
  const double* r2c = out.v0.data();
  double* w = out.v1.data();  // log-weights, then weights
  double* cos_a = out.c1.data();
  double* sr = out.c2.data();
  // On the straight part (kappa == 0) cos_a = 1, sr = 0 and string_pair's log-weight is
  // expo - log(den) with a den that does not depend on r: reuse it (bitwise identical, checked
  // by csrc/tests/test_cpu_kernels.cpp).
  const bool straight = q.kappa == 0.0 && q.s > 0.0;
  if (straight) {
    const double logw0 = string_pair(q, 0.0).logw, inv = q.inv_2s2;
#pragma omp simd
    for (int64_t c = 0; c < nc; ++c) {
      w[c] = (-r2c[c] * inv) + logw0;
      cos_a[c] = 1.0;
      sr[c] = 0.0;
    }
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      const StringPair P = string_pair(q, r2c[c]);
      w[c] = P.logw;
      cos_a[c] = P.cos_a;
      sr[c] = P.sr;
    }
  }
  const double m = max_of(w, nc);
  if (m == -INFINITY) {
    out.n = 0;
    return;
  }
  kern.exp_shift(w, nc, stable ? m : 0.0, w);
  const double floor_w = skip_ratio(is_double) * (stable ? 1.0 : std::exp(m));
  const int64_t* cand = out.cand.data();
#pragma omp simd
  for (int64_t c = 0; c < nc; ++c) {
    const bool keep = (w[c] > 0.0) & (w[c] >= floor_w);
    cos_a[c] = keep ? w[c] * cos_a[c] * nu[cand[c]] : 0.0;  // becomes c1
    sr[c] = keep ? w[c] * sr[c] : 0.0;                      // becomes c2
  }
}

template <typename T>
void string_field_impl(const T* points, const T* quarks, const T* antiquarks, int64_t b, int64_t B,
                       const StringParams& p, bool stable, const NormParams& norm, T* out,
                       int num_threads) {
  const int64_t D = p.D, DIM = D + 1;
  const bool is_double = sizeof(T) == sizeof(double);
  num_threads = threads_for(num_threads, b * B * DIM);
  const simd::PassKernels<T> kern = simd::pass_kernels<T>();

  std::vector<StringQuery> qs(b);
  for (int64_t i = 0; i < b; ++i) qs[i] = string_query((double)points[i * DIM], p);

  // Delta_j = C_j - A_j in the data precision (as the authors' code) and
  // nu_j = 1 / ||(L, Delta_j)|| in double.
  std::vector<T> delta((size_t)(B * D));
  std::vector<double> nu(B);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t j = 0; j < B; ++j) {
    const T* a = quarks + j * DIM + 1;
    const T* c = antiquarks + j * DIM + 1;
    T* dj = delta.data() + j * D;
    double s = p.L * p.L;
    for (int64_t k = 0; k < D; ++k) {
      dj[k] = c[k] - a[k];
      s += (double)dj[k] * (double)dj[k];
    }
    nu[j] = 1.0 / std::sqrt(s);
  }

  if (D <= kSoaMaxDim) {
    // Transposed layout: SIMD over pairs, every pass in double.
    const int64_t Bp = soa_pad(kern, B);
    std::vector<double> aT((size_t)(D * Bp)), cT((size_t)(D * Bp)), dT((size_t)(D * Bp));
    transpose_to_double(quarks + 1, DIM, B, D, Bp, aT.data());
    transpose_to_double(antiquarks + 1, DIM, B, D, Bp, cT.data());
    transpose_to_double(delta.data(), D, B, D, Bp, dT.data());
#pragma omp parallel num_threads(num_threads)
    {
      RowTerms terms(B);
      std::vector<double> x(D + 1), r2(Bp), c1(Bp), c2(Bp), E(DIM);
#pragma omp for schedule(dynamic, 8)
      for (int64_t i = 0; i < b; ++i) {
        const StringQuery& q = qs[i];
        std::fill(E.begin(), E.end(), 0.0);
        if (q.inside && B > 0) {
          for (int64_t k = 0; k < D; ++k) x[k] = (double)points[i * DIM + 1 + k];
          const double* base = q.from_antiquark ? cT.data() : aT.data();
          kern.pass1_soa[1](x.data(), q.t, base, dT.data(), D, Bp, r2.data());
          string_row_terms(kern, q, r2.data(), B, nu.data(), stable, is_double, terms);
          terms.scatter(c1.data(), c2.data(), Bp);
          double sum_c1 = 0.0;
          kern.pass2_soa[1](x.data(), q.t, base, dT.data(), c1.data(), c2.data(), D, Bp,
                            E.data() + 1, &sum_c1);
          E[0] = p.L * sum_c1;
        }
        write_row(E.data(), DIM, norm, out + i * DIM);
      }
    }
    return;
  }

  // Row-major layout: pass 1 over the whole [b, B] matrix, then pass 2 by query tiles.
  std::vector<T> tq(b);
  std::vector<QueryGroup<T>> groups = {{{}, quarks + 1, DIM}, {{}, antiquarks + 1, DIM}};
  for (int64_t i = 0; i < b; ++i) {
    tq[i] = (T)qs[i].t;
    if (qs[i].inside) {
      groups[qs[i].from_antiquark ? 1 : 0].rows.push_back(i);
    } else {
      for (int64_t k = 0; k < DIM; ++k) out[i * DIM + k] = T(0);  // no pair contributes
    }
  }
  std::vector<double> r2((size_t)(b * B), 0.0);
  pass1_matrix<T>(kern, points + 1, DIM, tq.data(), groups, delta.data(), D, B, D, r2.data(),
                  num_threads);
  // Pass 2. Items are query tiles: each computes its rows' coefficients and merged pair list;
  // a sparse tile (no merge) runs its per-row pass 2 and writes its rows at once. Dense (merged)
  // tiles are kept for a second loop whose items are column chunks of 1 KB per row, each
  // walking every dense tile, so that the chunk's pair rows stay in L2 and no thread waits on a
  // few large tiles. Every output element is computed by one call in the order of a whole-row
  // call (the kernels treat columns independently): results do not depend on the split or the
  // thread count.
  const int Q2 = kern.Q2;
  std::vector<std::pair<int, int64_t>> tiles;  // (group, first row index in the group)
  for (int g = 0; g < 2; ++g)
    for (int64_t f = 0; f < (int64_t)groups[g].rows.size(); f += Q2) tiles.push_back({g, f});
  const int64_t n_tiles = (int64_t)tiles.size();
  if (n_tiles == 0) return;
  std::vector<std::unique_ptr<TileTerms<T>>> dense(n_tiles);  // set for the merged tiles
  std::vector<int64_t> dense_list;
  std::unique_ptr<double[]> E;  // [b, DIM] rows of the dense tiles (zeroed per chunk)
  auto tile_rows = [&](int64_t ti, int& valid) {
    const QueryGroup<T>& grp = groups[tiles[ti].first];
    valid = (int)std::min<int64_t>(Q2, (int64_t)grp.rows.size() - tiles[ti].second);
    return grp.rows.data() + tiles[ti].second;
  };
  // E_z and the output of query row i (tile row q of tt) from its sums Eq[1..DIM).
  auto finish_row = [&](int64_t i, const RowTerms& r, double* Eq) {
    double sum_c1 = 0.0;
    for (int64_t c = 0; c < r.n; ++c) sum_c1 += r.c1[c];
    Eq[0] = p.L * sum_c1;
    write_row(Eq, DIM, norm, out + i * DIM);
  };
  const int64_t vec = 4 * (int64_t)kern.W;
  const int64_t chunk =
      std::min(D, std::max<int64_t>(vec, (1024 / (int64_t)sizeof(T)) / vec * vec));
  const int64_t n_chunks = (D + chunk - 1) / chunk;
#pragma omp parallel num_threads(num_threads)
  {
    std::unique_ptr<TileTerms<T>> cur;
    std::vector<double> Et((size_t)(Q2 * DIM));
    std::vector<double*> acc(Q2);
    for (int q = 0; q < Q2; ++q) acc[q] = Et.data() + q * DIM + 1;
#pragma omp for schedule(dynamic, 1)
    for (int64_t ti = 0; ti < n_tiles; ++ti) {
      int valid;
      const int64_t* rows = tile_rows(ti, valid);
      if (!cur) cur.reset(new TileTerms<T>(Q2, B));
      TileTerms<T>& tt = *cur;
      for (int q = 0; q < valid; ++q) {
        string_row_terms(kern, qs[rows[q]], r2.data() + rows[q] * B, B, nu.data(), stable,
                         is_double, tt.rows[q]);
        tt.rows[q].compact();
      }
      if (tt.merge(valid)) {
        dense[ti] = std::move(cur);
        continue;
      }
      const QueryGroup<T>& grp = groups[tiles[ti].first];
      for (int q = 0; q < valid; ++q) {
        const RowTerms& r = tt.rows[q];
        std::fill(Et.begin() + q * DIM, Et.begin() + (q + 1) * DIM, 0.0);
        if (r.n > 0)
          kern.pass2_rows[1](points + 1 + rows[q] * DIM, (double)tq[rows[q]], grp.y, DIM,
                             delta.data(), D, r.cand.data(), r.c1.data(), r.c2.data(), r.n, D,
                             acc[q]);
      }
      for (int q = 0; q < valid; ++q) finish_row(rows[q], tt.rows[q], Et.data() + q * DIM);
    }
    // implicit barrier
#pragma omp single
    {
      for (int64_t ti = 0; ti < n_tiles; ++ti)
        if (dense[ti]) dense_list.push_back(ti);
      if (!dense_list.empty()) E.reset(new double[(size_t)(b * DIM)]);
    }
    if (!dense_list.empty()) {
      std::vector<double> scratch((size_t)chunk, 0.0);  // accumulators of padded tile rows
      double* cacc[16];
      const T* xs[16];
      T ts[16];
#pragma omp for schedule(dynamic, 1)
      for (int64_t ci = 0; ci < n_chunks; ++ci) {
        const int64_t c0 = ci * chunk, len = std::min(chunk, D - c0);
        for (const int64_t ti : dense_list) {
          int valid;
          const int64_t* rows = tile_rows(ti, valid);
          const TileTerms<T>& tt = *dense[ti];
          for (int q = 0; q < Q2; ++q) {
            if (q < valid) {
              cacc[q] = E.get() + rows[q] * DIM + 1 + c0;
              std::fill(cacc[q], cacc[q] + len, 0.0);
            } else {
              cacc[q] = scratch.data();
            }
          }
          if (tt.m == 0) continue;
          for (int q = 0; q < Q2; ++q) {
            const int64_t i = rows[std::min(q, valid - 1)];
            xs[q] = points + 1 + i * DIM + c0;
            ts[q] = tq[i];
          }
          kern.pass2_tile[1](xs, ts, groups[tiles[ti].first].y + c0, DIM, delta.data() + c0, D,
                             tt.js.data(), tt.m, tt.c1.data(), tt.c2.data(), len, cacc);
        }
      }
#pragma omp for schedule(dynamic, 1)
      for (size_t di = 0; di < dense_list.size(); ++di) {
        const int64_t ti = dense_list[di];
        int valid;
        const int64_t* rows = tile_rows(ti, valid);
        for (int q = 0; q < valid; ++q)
          finish_row(rows[q], dense[ti]->rows[q], E.get() + rows[q] * DIM);
      }
    }
  }
}

}  // namespace

template <typename T>
void string_field(const T* points, const T* quarks, const T* antiquarks, int64_t b, int64_t B,
                  const StringParams& p, bool stable, const NormParams& norm, T* out,
                  int num_threads) {
  string_field_impl<T>(points, quarks, antiquarks, b, B, p, stable, norm, out, num_threads);
}

template void string_field<float>(const float*, const float*, const float*, int64_t, int64_t,
                                  const StringParams&, bool, const NormParams&, float*, int);
template void string_field<double>(const double*, const double*, const double*, int64_t, int64_t,
                                   const StringParams&, bool, const NormParams&, double*, int);

}  // namespace cpu
}  // namespace ifm
