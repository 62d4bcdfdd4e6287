// Orchestration shared by the CPU string and Coulomb kernels (default target; the SIMD work is
// in distance_tiles.h): the blocked, threaded pass 1 over a [b, B] distance matrix, the
// transposed (small-D) pair layout, the per-row lists of surviving pairs and the row output.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../field_math.h"
#include "distance_tiles.h"
#include "kernels.h"

namespace ifm {
namespace cpu {

// Data dimensions up to this use the transposed layout (SIMD over pairs, everything in double).
constexpr int64_t kSoaMaxDim = 16;

// Pairs of one query row whose coefficient survives the skip test, in increasing j.
struct RowTerms {
  std::vector<int64_t> js;
  std::vector<double> c1, c2;
  std::vector<int64_t> cand;  // scratch: candidates of the coefficient pass
  std::vector<double> logw;   // scratch, per candidate
  int64_t n = 0;
  explicit RowTerms(int64_t B) : js(B), c1(B), c2(B), cand(B), logw(B) {}
  void push(int64_t j, double a1, double a2) {
    js[n] = j;
    c1[n] = a1;
    c2[n] = a2;
    ++n;
  }
};

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
// left untouched. Register tiles of QI x PJ, k split into fixed chunks (summed in double in chunk
// order), work items of (pair tile, block of query tiles) spread over threads: every r2 entry is
// computed by one item in a fixed order, whatever num_threads.
template <typename T>
void pass1_matrix(const simd::DistanceKernels<T>& K, const T* x, int64_t ldx, const T* t,
                  const std::vector<QueryGroup<T>>& groups, const T* e, int64_t lde, int64_t B,
                  int64_t n, double* r2, int num_threads) {
  const int QI = K.QI, PJ = K.PJ;
  struct Tile {
    int g;
    int64_t first;  // index into groups[g].rows
  };
  std::vector<Tile> tiles;
  for (int g = 0; g < (int)groups.size(); ++g)
    for (int64_t f = 0; f < (int64_t)groups[g].rows.size(); f += QI) tiles.push_back({g, f});
  if (tiles.empty() || B == 0) return;
  const int64_t n_pair_tiles = (B + PJ - 1) / PJ;
  const int64_t tiles_per_block = 16;
  const int64_t n_blocks = ((int64_t)tiles.size() + tiles_per_block - 1) / tiles_per_block;
  // k chunk: the PJ pair rows (and their e rows) of a chunk stay in L1 across a block's tiles.
  const int64_t kc = std::max<int64_t>(K.W, (16384 / (2 * PJ * (int64_t)sizeof(T))) / K.W * K.W);
  const int has_e = e != nullptr ? 1 : 0;
  const int64_t n_items = n_pair_tiles * n_blocks;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t pt = item % n_pair_tiles, blk = item / n_pair_tiles;
    const int64_t j0 = pt * PJ;
    const int pj_valid = (int)std::min<int64_t>(PJ, B - j0);
    const T* xs[8];
    const T* ys[8];
    const T* es[8];
    T ts[8];
    double part[64];
    const int64_t tile_end = std::min<int64_t>((blk + 1) * tiles_per_block, tiles.size());
    for (int64_t k0 = 0; k0 < n; k0 += kc) {
      const int64_t len = std::min(kc, n - k0);
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
        K.pass1_tile[has_e](xs, ts, ys, es, len, part);
        for (int q = 0; q < qi_valid; ++q) {
          double* dst = r2 + rows[q] * B + j0;
          for (int p = 0; p < pj_valid; ++p) dst[p] += part[q * PJ + p];
        }
      }
    }
  }
}

// Pair count of the transposed layout (a multiple of the SoA kernels' block of 4 vectors).
template <typename T>
int64_t soa_pad(const simd::DistanceKernels<T>& K, int64_t B) {
  const int64_t blk = 4 * (int64_t)K.WD;
  return std::max<int64_t>(blk, (B + blk - 1) / blk * blk);
}

// dst[k * Bp + j] = src[j * ld + k] in double (k < n, j < B), zero for B <= j < Bp.
template <typename T>
void transpose_to_double(const T* src, int64_t ld, int64_t B, int64_t n, int64_t Bp,
                         double* dst) {
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
