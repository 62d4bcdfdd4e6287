// Torch-free CPU kernels of the field targets (raw pointers, sizes, thread count).
//
// Layout: every matrix is row-major and contiguous, z-first: points [b, D + 1], charges or
// quarks/antiquarks [B, D + 1] (column 0 is the plate's z and is not read by the string field).
// out is [b, D + 1] in the same dtype. Work is split over num_threads OpenMP threads; results are
// bitwise identical for any num_threads (every reduction has a fixed order).
#pragma once

#include <cstdint>

#include "../field_params.h"  // StringParams, NormParams

namespace ifm {

namespace cpu {

// String (IFM) field of FIELDS.md §2, then §4. stable: weights in the log domain relative to
// the row's largest one (the raw result is E_i / max_j w_ij).
template <typename T>
void string_field(const T* points, const T* quarks, const T* antiquarks, int64_t b, int64_t B,
                  const StringParams& p, bool stable, const NormParams& norm, T* out,
                  int num_threads);

// Coulomb field of FIELDS.md §3, then §4. One plate when negative == nullptr (then Bn = 0 and
// the result is E+, pointing toward the charges); two plates otherwise (result -E+ + E-). Every
// plate has at least one charge (Bp >= 1; Bn >= 1 with two plates). When plate_normalize,
// each plate term is first replaced by sqrt(D + 1) * E / (||E|| + plate_gamma). sum_eps is added
// to each softmax denominator (relative to a largest weight of 1).
template <typename T>
void coulomb_field(const T* points, int64_t b, const T* positive, int64_t Bp, const T* negative,
                   int64_t Bn, int64_t D, bool plate_normalize, double plate_gamma, double sum_eps,
                   const NormParams& norm, T* out, int num_threads);

// One plate's softmax-weighted mean E+ (no plate or final normalisation, sum_eps 0) and, per
// row, lognorm[2i] = max_j l_ij and lognorm[2i + 1] = log sum_j e^(l_ij) over the evaluated
// charges (-inf for both on a row without a finite logit): what merging the partial fields of
// several charge sets needs (ifm.distributed). B >= 1.
template <typename T>
void coulomb_plate_partial(const T* points, int64_t b, const T* charges, int64_t B, int64_t D,
                           T* out, double* lognorm, int num_threads);

}  // namespace cpu
}  // namespace ifm
