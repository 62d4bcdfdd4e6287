// The finalisation pass of both fields: finalize_rows (see finalize_rows.cuh for what it computes).
#include <cmath>

#include "common.cuh"
#include "finalize_rows.cuh"

namespace ifm {
namespace cuda {
namespace detail {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    finalize_rows(const T* ep, const T* en, T* out, int64_t width, bool plate_normalize,
                  double plate_gamma, NormParams norm) {
  IFM_SHARED(double, red, [kThreads]);
  const int64_t i = blockIdx.x;
  const T* prow = ep + i * width;
  const T* nrow = en != nullptr ? en + i * width : nullptr;
  T* orow = out + i * width;

  double fp = 1.0, fn = 1.0;
  if (plate_normalize) {
    double sp = 0.0, sn = 0.0;
    for (int64_t k = threadIdx.x; k < width; k += kThreads) {
      sp += (double)prow[k] * (double)prow[k];
      if (nrow != nullptr) sn += (double)nrow[k] * (double)nrow[k];
    }
    sp = block_reduce(sp, red, SumOp());
    sn = block_reduce(sn, red, SumOp());
    const double scale = sqrt((double)width);
    fp = normalize_factor(sp, scale, plate_gamma);
    fn = normalize_factor(sn, scale, plate_gamma);
  }
  // Each thread rewrites the columns it read, so ep may alias out.
  double sv = 0.0;
  for (int64_t k = threadIdx.x; k < width; k += kThreads) {
    const double v =
        nrow != nullptr ? fn * (double)nrow[k] - fp * (double)prow[k] : fp * (double)prow[k];
    const T vt = (T)v;
    orow[k] = vt;
    sv += (double)vt * (double)vt;
  }
  if (norm.normalize) {
    sv = block_reduce(sv, red, SumOp());
    const double f = normalize_factor(sv, norm.scale, norm.eps);
    for (int64_t k = threadIdx.x; k < width; k += kThreads) orow[k] = (T)(f * (double)orow[k]);
  }
}

template <typename T>
cudaError_t launch_finalize_rows(const T* ep, const T* en, T* out, int64_t rows, int64_t width,
                                 bool plate_normalize, double plate_gamma, const NormParams& norm,
                                 cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  auto kernel = finalize_rows<T>;
  IFM_LAUNCH(kernel, dim3((unsigned)rows), dim3(kThreads), stream, ep, en, out, width,
             plate_normalize, plate_gamma, norm);
  return cudaGetLastError();
}

template cudaError_t launch_finalize_rows<float>(const float*, const float*, float*, int64_t,
                                                 int64_t, bool, double, const NormParams&,
                                                 cudaStream_t);
template cudaError_t launch_finalize_rows<double>(const double*, const double*, double*, int64_t,
                                                  int64_t, bool, double, const NormParams&,
                                                  cudaStream_t);

}  // namespace detail
}  // namespace cuda
}  // namespace ifm
