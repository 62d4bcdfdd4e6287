// CUDA implementations of the `ifm` operators (schemas: csrc/ops.cpp, docs/DESIGN.md).
//
// Thin torch wrappers around the torch-free launchers of csrc/cuda/kernels.cuh: check the
// tensors, make their device current, choose the coefficient path of the device (device_tuning),
// take the workspace from torch's caching allocator and launch on the current stream. Compiled
// only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <tuple>

#include "../op_checks.h"
#include "kernels.cuh"

namespace {

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// Launch tuning of a device: the float32 coefficient path (Tuning::coef_f32, used for float32
// data only) where FP64 is slow, i.e. cudaDevAttrSingleToDoublePrecisionPerfRatio > 4 (consumer
// and inference parts: 32-64; A100 / H100 / H200: 2). One attribute query per device, cached
// (no stream synchronisation, no allocation); a failed query keeps the double path.
ifm::cuda::Tuning device_tuning(int device) {
  constexpr int kCached = 64;
  static std::atomic<int> cache[kCached];  // per device: 0 unknown, 1 double path, 2 float path
  const bool cached = device >= 0 && device < kCached;
  int path = cached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (path == 0) {
    int ratio = 0;
    if (cudaDeviceGetAttribute(&ratio, cudaDevAttrSingleToDoublePrecisionPerfRatio, device) !=
        cudaSuccess) {
      (void)cudaGetLastError();  // not sticky; keep it out of the launchers' error checks
      ratio = 0;
    }
    path = ratio > 4 ? 2 : 1;
    if (cached) cache[device].store(path, std::memory_order_relaxed);
  }
  ifm::cuda::Tuning t;
  t.coef_f32 = path == 2;
  return t;
}

at::Tensor string_field_cuda(const at::Tensor& points_in, const at::Tensor& quarks_in,
                             const at::Tensor& antiquarks_in, double L, double sigma0, double K,
                             double d, bool stable, bool normalize, double norm_scale, double eps) {
  ifm::check_string_op(points_in, quarks_in, antiquarks_in, c10::DeviceType::CUDA, "cuda");
  const at::Tensor points = points_in.contiguous();  // the launchers read row-major rows
  const at::Tensor quarks = quarks_in.contiguous();
  const at::Tensor antiquarks = antiquarks_in.contiguous();
  const c10::cuda::CUDAGuard guard(points.device());
  at::Tensor out = at::empty_like(points, at::MemoryFormat::Contiguous);
  const int64_t b = points.size(0), B = quarks.size(0);
  if (b == 0) return out;
  const ifm::StringParams p{L, sigma0, K, d, points.size(1) - 1};
  const ifm::NormParams np{normalize, norm_scale, eps};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(points.device().index()).stream();
  const ifm::cuda::Tuning tune = device_tuning(points.device().index());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_string_field_cuda", [&] {
    const size_t bytes = ifm::cuda::string_field_workspace_bytes<scalar_t>(b, B, p.D, tune);
    at::Tensor ws = workspace(bytes, points);
    C10_CUDA_CHECK(ifm::cuda::string_field<scalar_t>(
        points.data_ptr<scalar_t>(), quarks.data_ptr<scalar_t>(), antiquarks.data_ptr<scalar_t>(),
        b, B, p, stable, np, out.data_ptr<scalar_t>(), ws.data_ptr(), bytes, stream, tune));
  });
  return out;
}

at::Tensor coulomb_field_cuda(const at::Tensor& points_in, const at::Tensor& positive_in,
                              const std::optional<at::Tensor>& negative_in,
                              std::optional<double> plate_gamma, double sum_eps, bool normalize,
                              double norm_scale, double eps) {
  ifm::check_coulomb_op(points_in, positive_in, negative_in, c10::DeviceType::CUDA, "cuda");
  const bool two = negative_in.has_value() && negative_in->defined();
  const at::Tensor points = points_in.contiguous();  // the launchers read row-major rows
  const at::Tensor positive = positive_in.contiguous();
  const std::optional<at::Tensor> negative =
      two ? std::optional<at::Tensor>(negative_in->contiguous()) : std::nullopt;
  const c10::cuda::CUDAGuard guard(points.device());
  at::Tensor out = at::empty_like(points, at::MemoryFormat::Contiguous);
  const int64_t b = points.size(0), D = points.size(1) - 1;
  if (b == 0) return out;
  const int64_t Bp = positive.size(0), Bn = two ? negative->size(0) : 0;
  const ifm::NormParams np{normalize, norm_scale, eps};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(points.device().index()).stream();
  const ifm::cuda::Tuning tune = device_tuning(points.device().index());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_coulomb_field_cuda", [&] {
    const size_t bytes =
        ifm::cuda::coulomb_field_workspace_bytes<scalar_t>(b, Bp, Bn, D, two, tune);
    at::Tensor ws = workspace(bytes, points);
    C10_CUDA_CHECK(ifm::cuda::coulomb_field<scalar_t>(
        points.data_ptr<scalar_t>(), b, positive.data_ptr<scalar_t>(), Bp,
        two ? negative->data_ptr<scalar_t>() : nullptr, Bn, D, plate_gamma.has_value(),
        plate_gamma.value_or(0.0), sum_eps, np, out.data_ptr<scalar_t>(), ws.data_ptr(), bytes,
        stream, tune));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> coulomb_plate_partial_cuda(const at::Tensor& points_in,
                                                              const at::Tensor& charges_in) {
  ifm::check_plate_partial_op(points_in, charges_in, c10::DeviceType::CUDA, "cuda");
  const at::Tensor points = points_in.contiguous();  // the launchers read row-major rows
  const at::Tensor charges = charges_in.contiguous();
  const c10::cuda::CUDAGuard guard(points.device());
  at::Tensor out = at::empty_like(points, at::MemoryFormat::Contiguous);
  const int64_t b = points.size(0), B = charges.size(0), D = points.size(1) - 1;
  at::Tensor lognorm = at::empty({b, 2}, points.options().dtype(at::kDouble));
  if (b == 0) return {out, lognorm};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(points.device().index()).stream();
  const ifm::cuda::Tuning tune = device_tuning(points.device().index());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_coulomb_plate_partial_cuda", [&] {
    const size_t bytes =
        ifm::cuda::coulomb_field_workspace_bytes<scalar_t>(b, B, 0, D, false, tune);
    at::Tensor ws = workspace(bytes, points);
    C10_CUDA_CHECK(ifm::cuda::coulomb_plate_partial<scalar_t>(
        points.data_ptr<scalar_t>(), b, charges.data_ptr<scalar_t>(), B, D,
        out.data_ptr<scalar_t>(), lognorm.data_ptr<double>(), ws.data_ptr(), bytes, stream, tune));
  });
  return {out, lognorm};
}

}  // namespace

TORCH_LIBRARY_IMPL(ifm, CUDA, m) {
  m.impl("string_field", &string_field_cuda);
  m.impl("coulomb_field", &coulomb_field_cuda);
  m.impl("coulomb_plate_partial", &coulomb_plate_partial_cuda);
}
