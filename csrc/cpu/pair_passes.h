// The SIMD kernels of the O(b * B * D) passes shared by the string and Coulomb fields: pass 1
// (squared distances), pass 2 (coefficient-weighted sums) and the vectorised helpers of the
// coefficient step between them; one copy per instruction set, picked at run time.
//
// Both fields need, for a query row x_i (with a per-query scalar t_i) and a pair/charge row
// y_j (with an optional direction row e_j), the offset
//     rho_ij = (x_i - y_j) - t_i * e_j          (string: y = A or C, e = Delta; Coulomb: no e)
// from direct differences, and two passes over it:
//   pass 1:  r2_ij = sum_k rho_ijk^2
//   pass 2:  acc_ik = sum_j c2_ij * rho_ijk + c1_ij * e_jk
// Two layouts:
// * row-major (large D): pass 1 in register tiles of QI queries x PJ pairs with SIMD over k,
//   accumulated in the data precision per lane, each tile's sums returned in double; pass 2 over
//   a query's list of surviving pairs (or a tile's merged list) with SIMD over k, accumulated in
//   the data precision over blocks of 64 pairs, each block's sum added to the double output row.
// * transposed "SoA" (small D, e.g. the 2-D toys): pair data as double [D][Bp] columns and SIMD
//   over pairs, so that nothing is wasted on a vector wider than D; both passes in double, pass 2
//   dense over pairs.
// Every output element is produced by one call in a fixed order: results do not depend on how
// callers split the calls over threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "../field_math.h"
#include "simd.h"

namespace ifm {
namespace cpu {
namespace simd {

template <typename T>
struct PassKernels {
  Isa isa;
  int QI;  // queries per pass-1 tile
  int PJ;  // pairs per pass-1 tile
  int W;   // lanes of T (k-chunk lengths are multiples of it)
  int WD;  // lanes of double (transposed layouts pad the pair count to a multiple of 4 * WD)
  // [has_e] out[q * PJ + p] = sum_{k < n} ((x_q - y_p) - t_q * e_p)_k^2 for QI query rows xs
  // and PJ pair rows ys / es (es unused without e).
  void (*pass1_tile[2])(const T* const* xs, const T* ts, const T* const* ys, const T* const* es,
                        int64_t n, double* out);
  // [has_e] acc[k] += sum_{m < cnt} c2[m] * rho(x, y_{js[m]})_k + c1[m] * e_{js[m], k}, k < n,
  // with y_j = y + j * ldy, e_j = e + j * lde; c1 unused without e. Accumulated in T over blocks
  // of 64 pairs, each block's sum added to the double row in order.
  void (*pass2_rows[2])(const T* x, double t, const T* y, int64_t ldy, const T* e, int64_t lde,
                        const int64_t* js, const double* c1, const double* c2, int64_t cnt,
                        int64_t n, double* acc);
  int Q2;  // queries per pass-2 tile
  // [has_e] Query-tiled pass 2 over a merged pair list js[0..m) (increasing): for q < Q2,
  // accs[q][k] += sum_idx c2[q * m + idx] * rho(x_q, y_{js[idx]})_k + c1[q * m + idx] * e_{.., k};
  // accumulated in T over blocks of 64 pairs, each block's sum added to the double rows in order.
  void (*pass2_tile[2])(const T* const* xs, const T* ts, const T* y, int64_t ldy, const T* e,
                        int64_t lde, const int64_t* js, int64_t m, const T* c1, const T* c2,
                        int64_t n, double* const* accs);
  // [has_e] Transposed pass 1: r2[j] for j < Bp (a multiple of 4 * WD) from x[n] and the
  // columns yT[k * Bp + j], eT[k * Bp + j].
  void (*pass1_soa[2])(const double* x, double t, const double* yT, const double* eT, int64_t n,
                       int64_t Bp, double* r2);
  // [has_e] Transposed pass 2: acc[k] (k < n) as pass2_rows with dense c1[j], c2[j] (j < Bp);
  // *sum_c1 = sum_j c1[j].
  void (*pass2_soa[2])(const double* x, double t, const double* yT, const double* eT,
                       const double* c1, const double* c2, int64_t n, int64_t Bp, double* acc,
                       double* sum_c1);
  // Coefficient-pass helpers, vectorised (glibc's libmvec, see below):
  // out[c] = coulomb_logit(d2[c], dim) (field_math.h); out[c] = exp(a[c] - shift).
  void (*coulomb_logits)(const double* d2, int64_t n, int64_t dim, double* out);
  void (*exp_shift)(const double* a, int64_t n, double shift, double* out);
};

}  // namespace simd
}  // namespace cpu
}  // namespace ifm

// The coefficient helpers evaluate field_math.h's per-pair formulas in `omp simd` loops; these
// declarations let GCC call glibc's vector exp / log (libmvec, pulled in by libm's linker
// script; max error 4 ulp) for them, in the width of each instruction set below.
#if defined(__GLIBC__) && defined(__x86_64__) && defined(_OPENMP)
extern "C" {
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log(double);
}
#endif

// One copy of the kernels per instruction set, each compiled for its own target.
namespace ifm::cpu::simd::scalar {
constexpr int kTileQ = 4, kTileP = 2, kTile2 = 4;
constexpr Isa kIsa = Isa::scalar;
#include "pair_passes_impl.h"
}  // namespace ifm::cpu::simd::scalar

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace ifm::cpu::simd::avx2 {
constexpr int kTileQ = 3, kTileP = 2, kTile2 = 4;
constexpr Isa kIsa = Isa::avx2;
#include "pair_passes_impl.h"
}  // namespace ifm::cpu::simd::avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace ifm::cpu::simd::avx512 {
constexpr int kTileQ = 4, kTileP = 4, kTile2 = 8;
constexpr Isa kIsa = Isa::avx512;
#include "pair_passes_impl.h"
}  // namespace ifm::cpu::simd::avx512
#pragma GCC pop_options

namespace ifm {
namespace cpu {
namespace simd {

// The kernels of the best instruction set available (see active_isa()).
template <typename T>
PassKernels<T> pass_kernels() {
  switch (active_isa()) {
    case Isa::avx512:
      return avx512::make_kernels<T>();
    case Isa::avx2:
      return avx2::make_kernels<T>();
    default:
      return scalar::make_kernels<T>();
  }
}

}  // namespace simd
}  // namespace cpu
}  // namespace ifm
