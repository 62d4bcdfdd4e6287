// Operator schemas of the `ifm` library and their CPU implementations.
//
// The schemas are documented in docs/DESIGN.md. The CPU implementations wrap the torch-free
// kernels of csrc/cpu/ (raw pointers); CUDA implementations are registered by
// csrc/cuda/bindings_cuda.cpp when the extension is built with CUDA. Fake (meta) kernels are
// registered from Python (python/ifm/_ops.py).
#include <Python.h>
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "cpu/kernels.h"
#include "op_checks.h"

namespace {

at::Tensor string_field_cpu(const at::Tensor& points_in, const at::Tensor& quarks_in,
                            const at::Tensor& antiquarks_in, double L, double sigma0, double K,
                            double d, bool stable, bool normalize, double norm_scale, double eps) {
  ifm::check_string_op(points_in, quarks_in, antiquarks_in, c10::DeviceType::CPU, "cpu");
  const at::Tensor points = points_in.contiguous();
  const at::Tensor quarks = quarks_in.contiguous();
  const at::Tensor antiquarks = antiquarks_in.contiguous();
  at::Tensor out = at::empty_like(points);
  const int64_t b = points.size(0), B = quarks.size(0);
  if (b == 0) return out;
  ifm::StringParams p{L, sigma0, K, d, points.size(1) - 1};
  const ifm::NormParams np{normalize, norm_scale, eps};
  const int threads = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_string_field_cpu", [&] {
    ifm::cpu::string_field<scalar_t>(points.data_ptr<scalar_t>(), quarks.data_ptr<scalar_t>(),
                                     antiquarks.data_ptr<scalar_t>(), b, B, p, stable, np,
                                     out.data_ptr<scalar_t>(), threads);
  });
  return out;
}

at::Tensor coulomb_field_cpu(const at::Tensor& points_in, const at::Tensor& positive_in,
                             const std::optional<at::Tensor>& negative_in,
                             std::optional<double> plate_gamma, double sum_eps, bool normalize,
                             double norm_scale, double eps) {
  ifm::check_coulomb_op(points_in, positive_in, negative_in, c10::DeviceType::CPU, "cpu");
  const at::Tensor points = points_in.contiguous();
  const at::Tensor positive = positive_in.contiguous();
  at::Tensor negative;  // undefined for one plate: the kernel gets nullptr and Bn = 0
  if (negative_in.has_value() && negative_in->defined()) negative = negative_in->contiguous();
  at::Tensor out = at::empty_like(points);
  const int64_t b = points.size(0);
  if (b == 0) return out;
  const ifm::NormParams np{normalize, norm_scale, eps};
  const int threads = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_coulomb_field_cpu", [&] {
    ifm::cpu::coulomb_field<scalar_t>(
        points.data_ptr<scalar_t>(), b, positive.data_ptr<scalar_t>(), positive.size(0),
        negative.defined() ? negative.data_ptr<scalar_t>() : nullptr,
        negative.defined() ? negative.size(0) : 0, points.size(1) - 1, plate_gamma.has_value(),
        plate_gamma.value_or(0.0), sum_eps, np, out.data_ptr<scalar_t>(), threads);
  });
  return out;
}

// One plate's softmax-weighted mean field and per-row (max logit, log-normaliser) in float64:
// partial fields over disjoint charge sets merge exactly by log-sum-exp (ifm.distributed).
std::tuple<at::Tensor, at::Tensor> coulomb_plate_partial_cpu(const at::Tensor& points_in,
                                                             const at::Tensor& charges_in) {
  ifm::check_plate_partial_op(points_in, charges_in, c10::DeviceType::CPU, "cpu");
  const at::Tensor points = points_in.contiguous();
  const at::Tensor charges = charges_in.contiguous();
  at::Tensor out = at::empty_like(points);
  const int64_t b = points.size(0);
  at::Tensor lognorm = at::empty({b, 2}, points.options().dtype(at::kDouble));
  if (b == 0) return {out, lognorm};
  const int threads = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ifm_coulomb_plate_partial_cpu", [&] {
    ifm::cpu::coulomb_plate_partial<scalar_t>(
        points.data_ptr<scalar_t>(), b, charges.data_ptr<scalar_t>(), charges.size(0),
        points.size(1) - 1, out.data_ptr<scalar_t>(), lognorm.data_ptr<double>(), threads);
  });
  return {out, lognorm};
}

}  // namespace

TORCH_LIBRARY(ifm, m) {
  m.def(
      "string_field(Tensor points, Tensor quarks, Tensor antiquarks, float L, float sigma0, "
      "float K, float d, bool stable, bool normalize, float norm_scale, float eps) -> Tensor");
  m.def(
      "coulomb_field(Tensor points, Tensor positive, Tensor? negative, float? plate_gamma, "
      "float sum_eps, bool normalize, float norm_scale, float eps) -> Tensor");
  m.def("coulomb_plate_partial(Tensor points, Tensor charges) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ifm, CPU, m) {
  m.impl("string_field", &string_field_cpu);
  m.impl("coulomb_field", &coulomb_field_cpu);
  m.impl("coulomb_plate_partial", &coulomb_plate_partial_cpu);
}

// `import ifm._C` loads this library, which registers the ops above (extension-cpp style).
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
