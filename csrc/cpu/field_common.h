// Orchestration shared by the CPU string and Coulomb kernels (default target; the SIMD work is
// in pair_passes.h): the blocked, threaded pass 1 over a [b, B] distance matrix, the
// transposed (small-D) pair layout, the per-row lists of surviving pairs and the row output.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../field_math.h"
#include "pair_passes.h"
#include "kernels.h"

namespace ifm {
namespace cpu {

// Data dimensions up to this use the transposed layout (SIMD over pairs, everything in double).
constexpr int64_t kSoaMaxDim = 16;

// Coefficients of one query row: candidates cand[c] (increasing j) with c1[c], c2[c]; 0 for a
// candidate that failed the skip test. v0..v2 are scratch of the coefficient pass.
struct RowTerms {
  std::vector<int64_t> cand;
  std::vector<double> c1, c2, v0, v1, v2;
  int64_t n = 0;
  explicit RowTerms(int64_t B) : cand(B), c1(B), c2(B), v0(B), v1(B), v2(B) {}
  // Candidates: every j with v[j] <= thr, their values in v0.
  void gather(const double* v, int64_t B, double thr) {
    n = 0;
    for (int64_t j = 0; j < B; ++j)
      if (v[j] <= thr) {
        cand[n] = j;
        v0[n] = v[j];
        ++n;
      }
  }
  // Drops the zero terms (row-major pass 2 walks the rest).
  void compact() {
    int64_t m = 0;
    for (int64_t c = 0; c < n; ++c)
      if (c1[c] != 0.0 || c2[c] != 0.0) {
        cand[m] = cand[c];
        c1[m] = c1[c];
        c2[m] = c2[c];
        ++m;
      }
    n = m;
  }
  // Dense coefficients over all pairs (transposed pass 2); d1 and d2 hold Bp >= B entries.
  void scatter(double* d1, double* d2, int64_t Bp) const {
    std::fill(d1, d1 + Bp, 0.0);
    std::fill(d2, d2 + Bp, 0.0);
    for (int64_t c = 0; c < n; ++c) {
      d1[cand[c]] = c1[c];
      d2[cand[c]] = c2[c];
    }
  }
};

// The rows of one pass-2 query tile, and their pairs merged into one increasing list js[0..m)
// with [Q, m] coefficient matrices in T (zero where a row does not use a pair).
template <typename T>
struct TileTerms {
  int Q;
  int64_t B;
  std::vector<RowTerms> rows;
  std::vector<int64_t> slot, js;
  std::vector<T> c1, c2;
  int64_t m = 0;
  TileTerms(int Q_, int64_t B_)
      : Q(Q_), B(B_), rows(Q_, RowTerms(B_)), slot(B_, -1), js(B_), c1(Q_ * B_), c2(Q_ * B_) {}
  // Merges rows[0..valid) (compacted); false when the merged tile would do more than three times
  // the arithmetic of per-row lists (then pass 2 walks each row's own list; the tile reads each
  // pair row once for Q queries, which is worth some extra arithmetic).
  bool merge(int valid) {
    int64_t total = 0;
    for (int q = 0; q < valid; ++q) {
      total += rows[q].n;
      for (int64_t c = 0; c < rows[q].n; ++c) slot[rows[q].cand[c]] = -2;
    }
    m = 0;
    for (int64_t j = 0; j < B; ++j)
      if (slot[j] == -2) {
        slot[j] = m;
        js[m++] = j;
      }
    const bool use = (int64_t)Q * m <= 3 * total;
    if (use) {
      std::fill(c1.begin(), c1.begin() + Q * m, T(0));
      std::fill(c2.begin(), c2.begin() + Q * m, T(0));
      for (int q = 0; q < valid; ++q)
        for (int64_t c = 0; c < rows[q].n; ++c) {
          const int64_t s = slot[rows[q].cand[c]];
          c1[q * m + s] = (T)rows[q].c1[c];
          c2[q * m + s] = (T)rows[q].c2[c];
        }
    }
    for (int64_t idx = 0; idx < m; ++idx) slot[js[idx]] = -1;
    return use;
  }
};

// Pass 2 of one query tile: acc[q][k] (k < n, zeroed by the caller) for the rows
// rows[0..valid) whose terms are in tt.rows, offsets rho = (x_i - y_j) - t_i * e_j. A tile whose
// merged pair list is dense enough runs the query-tiled kernel, otherwise each row walks its own
// list; the choice depends on the data only. acc[q] for q >= valid is scratch.
template <typename T>
void pass2_for_tile(const simd::PassKernels<T>& kern, const T* x, int64_t ldx, const T* t,
                    const int64_t* rows, int valid, const T* y, int64_t ldy, const T* e,
                    int64_t lde, int64_t n, TileTerms<T>& tt, double* const* acc) {
  const int has_e = e != nullptr ? 1 : 0;
  if (tt.merge(valid)) {
    if (tt.m == 0) return;
    const T* xs[16];
    T ts[16];
    for (int q = 0; q < kern.Q2; ++q) {
      const int64_t i = rows[std::min(q, valid - 1)];
      xs[q] = x + i * ldx;
      ts[q] = has_e ? t[i] : T(0);
    }
    kern.pass2_tile[has_e](xs, ts, y, ldy, e, lde, tt.js.data(), tt.m, tt.c1.data(), tt.c2.data(),
                           n, acc);
    return;
  }
  for (int q = 0; q < valid; ++q) {
    const RowTerms& r = tt.rows[q];
    if (r.n > 0)
      kern.pass2_rows[has_e](x + rows[q] * ldx, has_e ? (double)t[rows[q]] : 0.0, y, ldy, e, lde,
                             r.cand.data(), r.c1.data(), r.c2.data(), r.n, n, acc[q]);
  }
}

inline double max_of(const double* v, int64_t n) {
  double m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < n; ++c) m = v[c] > m ? v[c] : m;
  return m;
}

inline int64_t argmin_row(const double* v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j)
    if (v[j] < v[best]) best = j;
  return best;
}

// Rows of x that share the pair matrix y (the string field offsets a query from the nearer
// plate: its group decides whether y holds the quarks or the antiquarks).
template <typename T>
struct QueryGroup {
  std::vector<int64_t> rows;
  const T* y;
  int64_t ldy;
};

// Pass 1 for every (query of the groups, pair j < B): r2[i * B + j] = sum_{k < n} rho_ijk^2 with
// rho = (x_i - y_j) - t_i * e_j (no e term when e == nullptr). Rows of queries in no group are
// left untouched (r2 must be zero on entry).
//
// Blocking: register tiles of QI queries x PJ pairs; k split into fixed chunks whose partial sums
// are added in double in chunk order; a work item is (block of query tiles, group of pair tiles)
// and walks k chunk by chunk, so that the block's x chunk stays in L2 while the group's pair
// tiles stream through L1. Every r2 entry gets the same chunk sums in the same order whatever
// the items and num_threads.
template <typename T>
void pass1_matrix(const simd::PassKernels<T>& kern, const T* x, int64_t ldx, const T* t,
                  const std::vector<QueryGroup<T>>& groups, const T* e, int64_t lde, int64_t B,
                  int64_t n, double* r2, int num_threads) {
  const int QI = kern.QI, PJ = kern.PJ;
  struct Tile {
    int g;
    int64_t first;  // index into groups[g].rows
  };
  std::vector<Tile> tiles;
  for (int g = 0; g < (int)groups.size(); ++g)
    for (int64_t f = 0; f < (int64_t)groups[g].rows.size(); f += QI) tiles.push_back({g, f});
  if (tiles.empty() || B == 0) return;
  // k chunk of 2 KB per row: a block of 64 query rows is 128 KB, a pair tile 8-16 KB.
  const int64_t kc = std::max<int64_t>(kern.W, (2048 / (int64_t)sizeof(T)) / kern.W * kern.W);
  const int64_t tiles_per_block = std::max<int64_t>(1, 64 / QI);
  const int64_t n_blocks = ((int64_t)tiles.size() + tiles_per_block - 1) / tiles_per_block;
  const int64_t n_pair_tiles = (B + PJ - 1) / PJ;
  // pair tiles per item: up to 8, fewer when that leaves under 8 items per thread
  const int64_t want_items = 8 * (int64_t)num_threads;
  const int64_t per_group = std::max<int64_t>(
      1, std::min<int64_t>(8, n_pair_tiles * n_blocks / std::max<int64_t>(1, want_items)));
  const int64_t n_groups = (n_pair_tiles + per_group - 1) / per_group;
  const int has_e = e != nullptr ? 1 : 0;
  const int64_t n_items = n_groups * n_blocks;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t pg = item % n_groups, blk = item / n_groups;
    const int64_t pt_end = std::min(n_pair_tiles, (pg + 1) * per_group);
    const int64_t tile_end = std::min<int64_t>((blk + 1) * tiles_per_block, tiles.size());
    const T* xs[8];
    const T* ys[8];
    const T* es[8];
    T ts[8];
    double part[64];
    for (int64_t k0 = 0; k0 < n; k0 += kc) {
      const int64_t len = std::min(kc, n - k0);
      for (int64_t pt = pg * per_group; pt < pt_end; ++pt) {
        const int64_t j0 = pt * PJ;
        const int pj_valid = (int)std::min<int64_t>(PJ, B - j0);
        for (int64_t ti = blk * tiles_per_block; ti < tile_end; ++ti) {
          const QueryGroup<T>& grp = groups[tiles[ti].g];
          const int64_t* rows = grp.rows.data() + tiles[ti].first;
          const int qi_valid =
              (int)std::min<int64_t>(QI, (int64_t)grp.rows.size() - tiles[ti].first);
          for (int p = 0; p < PJ; ++p) {  // padded pairs repeat the last valid one
            const int64_t j = j0 + std::min(p, pj_valid - 1);
            ys[p] = grp.y + j * grp.ldy + k0;
            es[p] = has_e ? e + j * lde + k0 : nullptr;
          }
          for (int q = 0; q < QI; ++q) {  // padded queries repeat the last valid one
            const int64_t i = rows[std::min(q, qi_valid - 1)];
            xs[q] = x + i * ldx + k0;
            ts[q] = has_e ? t[i] : T(0);
          }
          kern.pass1_tile[has_e](xs, ts, ys, es, len, part);
          for (int q = 0; q < qi_valid; ++q) {
            double* dst = r2 + rows[q] * B + j0;
            for (int p = 0; p < pj_valid; ++p) dst[p] += part[q * PJ + p];
          }
        }
      }
    }
  }
}

// Threads worth starting for `work` pair-coordinates (about 0.1 ms of work per thread at least):
// tiny calls (a sampler step, the unit tests) stay on the calling thread.
inline int threads_for(int num_threads, int64_t work) {
  const int64_t cap = std::max<int64_t>(1, work / (int64_t(1) << 18));
  return (int)std::max<int64_t>(1, std::min<int64_t>(num_threads, cap));
}

// Pair count of the transposed layout (a multiple of the SoA kernels' block of 4 vectors).
template <typename T>
int64_t soa_pad(const simd::PassKernels<T>& kern, int64_t B) {
  const int64_t blk = 4 * (int64_t)kern.WD;
  return std::max<int64_t>(blk, (B + blk - 1) / blk * blk);
}

// dst[k * Bp + j] = src[j * ld + k] in double (k < n, j < B), zero for B <= j < Bp.
template <typename T>
void transpose_to_double(const T* src, int64_t ld, int64_t B, int64_t n, int64_t Bp, double* dst) {
  std::fill(dst, dst + n * Bp, 0.0);
  for (int64_t j = 0; j < B; ++j)
    for (int64_t k = 0; k < n; ++k) dst[k * Bp + j] = (double)src[j * ld + k];
}

inline double row_norm2(const double* v, int64_t n) {
  double s = 0.0;
  for (int64_t k = 0; k < n; ++k) s += v[k] * v[k];
  return s;
}

// out = E, or scale * E / (||E|| + eps) when normalising (FIELDS.md §4).
template <typename T>
void write_row(const double* E, int64_t dim, const NormParams& norm, T* out) {
  const double f = norm.normalize ? normalize_factor(row_norm2(E, dim), norm.scale, norm.eps) : 1.0;
  for (int64_t k = 0; k < dim; ++k) out[k] = (T)(E[k] * f);
}

}  // namespace cpu
}  // namespace ifm
