// ifm::check_values: the checks of ifm.fields that read tensor values, in one compiled pass
// over CPU tensors (python/ifm/_checks.py, check_values, calls it and raises the error).
//
//   check_values(Tensor[] tensors, float bound, float[] plate_z) -> int
//
// Returns 0 when every check passes, 1 + i when the values of tensors[i] fail, n + 1 + i (n
// tensors) when the plate column of tensors[i] fails; values are checked before plates. The
// checks, each computed as the Python checks compute them:
// * every value of every tensor is finite and |value| < bound;
// * plate_z[i] = +inf: tensors[i] is no plate. Finite: column 0 of tensors[i] equals
//   z = plate_z[i] up to 1e-5 max(1, |z|), by max |col - z| with the difference rounded to the
//   tensor's dtype, as `col - z` in torch. NaN: z is row 0's value, which must be finite, > 0.
// A failure only says that a check failed; Python then runs its own checks for the message
// (argument, index, expectation), so both paths give the same errors.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task: tiny tensors stay on the calling thread

// True when every value of the 2-D tensor `t` is finite with |value| < bound.
template <typename scalar_t>
bool values_ok(const at::Tensor& t, double bound) {
  const scalar_t* base = t.const_data_ptr<scalar_t>();
  const int64_t rows = t.size(0), cols = t.size(1);
  const int64_t rs = t.stride(0), cs = t.stride(1);
  std::atomic<bool> ok{true};
  const int64_t grain_rows = std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain_rows, [&](int64_t r0, int64_t r1) {
    bool good = true;
    for (int64_t r = r0; r < r1 && good; ++r) {
      const scalar_t* row = base + r * rs;
      if (cs == 1) {
        for (int64_t c = 0; c < cols; ++c)  // no early exit: the loop vectorises
          good &= std::abs(static_cast<double>(row[c])) < bound;
      } else {
        for (int64_t c = 0; c < cols; ++c)
          good &= std::abs(static_cast<double>(row[c * cs])) < bound;
      }
    }
    if (!good) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}

// True when column 0 of `t` is the plate position z (NaN: z from row 0, finite and > 0).
template <typename scalar_t>
bool plate_ok(const at::Tensor& t, double z) {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* base = t.const_data_ptr<scalar_t>();
  const int64_t rows = t.size(0), rs = t.stride(0);
  if (std::isnan(z)) {
    z = static_cast<double>(base[0]);
    if (!(std::isfinite(z) && z > 0)) return false;
  }
  const double tol = 1e-5 * std::max(1.0, std::abs(z));
  // torch's `col - z` rounds the Python scalar z to the tensor's dtype first
  const opmath_t zc = static_cast<opmath_t>(static_cast<scalar_t>(z));
  bool good = true;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t diff = static_cast<scalar_t>(static_cast<opmath_t>(base[r * rs]) - zc);
    good &= std::abs(static_cast<double>(diff)) <= tol;  // false for NaN
  }
  return good;
}

// A strided view without the lazy negation bit, so that the raw data hold the values.
at::Tensor plain(const at::Tensor& t) {
  return t.is_neg() ? t.resolve_neg() : t;
}

int64_t check_values_cpu(at::TensorList tensors, double bound, at::ArrayRef<double> plate_z) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  TORCH_CHECK(static_cast<int64_t>(plate_z.size()) == n, "ifm::check_values: ", n, " tensors but ",
              plate_z.size(), " plate positions");
  std::vector<at::Tensor> plain_tensors;
  plain_tensors.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(tensors[i].dim() == 2 && tensors[i].layout() == at::kStrided,
                "ifm::check_values: tensors must be dense 2-D");
    plain_tensors.push_back(plain(tensors[i]));
    const at::Tensor& t = plain_tensors.back();
    bool ok = true;
    if (t.numel() > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "ifm_check_values",
                                      [&] { ok = values_ok<scalar_t>(t, bound); });
    }
    if (!ok) return 1 + i;
  }
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor& t = plain_tensors[i];
    if (plate_z[i] == std::numeric_limits<double>::infinity() || t.numel() == 0) continue;
    bool ok = true;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "ifm_check_plate",
                                    [&] { ok = plate_ok<scalar_t>(t, plate_z[i]); });
    if (!ok) return n + 1 + i;
  }
  return 0;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ifm, m) {
  m.def("check_values(Tensor[] tensors, float bound, float[] plate_z) -> int");
}

TORCH_LIBRARY_IMPL(ifm, CPU, m) {
  m.impl("check_values", &check_values_cpu);
}
