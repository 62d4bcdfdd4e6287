// The finalisation pass of both fields: finalize_rows (see finalize_rows.cuh for what it computes).
#include <cmath>

#include "common.cuh"
#include "finalize_rows.cuh"

namespace ifm {
namespace cuda {
namespace detail {

// C: the compute type of the per-element work (double; float on the float32 coefficient
// path). The rows' norm factors are computed in double from the C sums, once per row.
template <typename T, typename C>
__global__ void __launch_bounds__(kThreads)
    finalize_rows(const T* ep, const T* en, T* out, int64_t width, bool plate_normalize,
                  double plate_gamma, NormParams norm) {
  IFM_SHARED(C, red, [kThreads]);
  const int64_t i = blockIdx.x;
  const T* prow = ep + i * width;
  const T* nrow = en != nullptr ? en + i * width : nullptr;
  T* orow = out + i * width;

  C fp = C(1), fn = C(1);
  if (plate_normalize) {
    C sp = C(0), sn = C(0);
    for (int64_t k = threadIdx.x; k < width; k += kThreads) {
      sp += (C)prow[k] * (C)prow[k];
      if (nrow != nullptr) sn += (C)nrow[k] * (C)nrow[k];
    }
    sp = block_reduce(sp, red, SumOp());
    sn = block_reduce(sn, red, SumOp());
    const double scale = sqrt((double)width);
    fp = (C)normalize_factor((double)sp, scale, plate_gamma);
    fn = (C)normalize_factor((double)sn, scale, plate_gamma);
  }
  // Each thread rewrites the columns it read, so ep may alias out.
  C sv = C(0);
  for (int64_t k = threadIdx.x; k < width; k += kThreads) {
    const C v = nrow != nullptr ? fn * (C)nrow[k] - fp * (C)prow[k] : fp * (C)prow[k];
    const T vt = (T)v;
    orow[k] = vt;
    sv += (C)vt * (C)vt;
  }
  if (norm.normalize) {
    sv = block_reduce(sv, red, SumOp());
    const C f = (C)normalize_factor((double)sv, norm.scale, norm.eps);
    for (int64_t k = threadIdx.x; k < width; k += kThreads) orow[k] = (T)(f * (C)orow[k]);
  }
}

template <typename T, typename C>
cudaError_t launch_finalize_rows(const T* ep, const T* en, T* out, int64_t rows, int64_t width,
                                 bool plate_normalize, double plate_gamma, const NormParams& norm,
                                 cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  auto kernel = finalize_rows<T, C>;
  IFM_LAUNCH(kernel, dim3((unsigned)rows), dim3(kThreads), stream, ep, en, out, width,
             plate_normalize, plate_gamma, norm);
  return cudaGetLastError();
}

#define IFM_INSTANTIATE_FINALIZE(T, C)                                                            \
  template cudaError_t launch_finalize_rows<T, C>(const T*, const T*, T*, int64_t, int64_t, bool, \
                                                  double, const NormParams&, cudaStream_t);
IFM_INSTANTIATE_FINALIZE(float, double)
IFM_INSTANTIATE_FINALIZE(double, double)
IFM_INSTANTIATE_FINALIZE(float, float)  // the float32 coefficient path
#undef IFM_INSTANTIATE_FINALIZE

}  // namespace detail
}  // namespace cuda
}  // namespace ifm
