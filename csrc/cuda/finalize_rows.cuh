// The finalisation pass of both fields (docs/DESIGN.md): per-plate and final normalisation of
// finished rows.
//
// For each row i of `rows`:
//   v = en ? fn * en_i - fp * ep_i : fp * ep_i,  fp / fn = plate_normalize ?
//       sqrt(width) / (||e_i|| + plate_gamma) : 1,
// then out_i = norm.normalize ? norm.scale * v / (||v|| + norm.eps) : v. ep may alias out.
// One block per row; the per-element work and the norms' sums (fixed tree) in the compute type C
// (double, or float on the float32 coefficient path: instantiated for <float, float> only), the
// rows' factors in double. Defined in finalize_rows.cu.
#pragma once

#include <cstdint>

#include "kernels.cuh"

namespace ifm {
namespace cuda {
namespace detail {

template <typename T, typename C>
cudaError_t launch_finalize_rows(const T* ep, const T* en, T* out, int64_t rows, int64_t width,
                                 bool plate_normalize, double plate_gamma, const NormParams& norm,
                                 cudaStream_t stream);

}  // namespace detail
}  // namespace cuda
}  // namespace ifm
