// Tensor checks shared by the CPU (csrc/ops.cpp) and CUDA (csrc/cuda/bindings_cuda.cpp)
// implementations of the `ifm` operators. ifm.fields validates user input with friendlier
// messages first; these guard direct torch.ops.ifm.* calls.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <optional>

namespace ifm {

// `t` is a 2-D float32/float64 tensor of `points`' width, dtype and device, on `device_type`
// (any strides: the implementations make their inputs contiguous). `label` names the backend in
// messages ("cpu", "cuda").
inline void check_op_input(const at::Tensor& t, const char* name, const at::Tensor& points,
                           c10::DeviceType device_type, const char* label) {
  TORCH_CHECK(t.device().type() == device_type, "ifm (", label, "): ", name, " must be a ",
              c10::DeviceTypeName(device_type), " tensor, got a tensor on ", t.device());
  TORCH_CHECK(t.device() == points.device(), "ifm (", label, "): ", name, " is on ", t.device(),
              " but points is on ", points.device(), "; pass all tensors on one device");
  TORCH_CHECK(t.dim() == 2, "ifm (", label, "): ", name, " must be 2-D [n, D+1], got ", t.dim(),
              "-D");
  TORCH_CHECK(t.size(1) == points.size(1), "ifm (", label, "): ", name, " must have ",
              points.size(1), " columns, got ", t.size(1));
  TORCH_CHECK(t.size(1) >= 2, "ifm (", label, "): ", name, " must have D+1 >= 2 columns");
  TORCH_CHECK(t.scalar_type() == points.scalar_type(), "ifm (", label, "): ", name, " has dtype ",
              t.scalar_type(), ", points has ", points.scalar_type());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "ifm (", label,
              "): ", name, " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.size(0) <= std::numeric_limits<int32_t>::max(), "ifm (", label, "): ", name,
              " has too many rows (", t.size(0), ")");
}

// The tensors of ifm::string_field: index-aligned pairs, one width, dtype and device.
inline void check_string_op(const at::Tensor& points, const at::Tensor& quarks,
                            const at::Tensor& antiquarks, c10::DeviceType device_type,
                            const char* label) {
  check_op_input(points, "points", points, device_type, label);
  check_op_input(quarks, "quarks", points, device_type, label);
  check_op_input(antiquarks, "antiquarks", points, device_type, label);
  TORCH_CHECK(quarks.size(0) == antiquarks.size(0), "ifm (", label,
              "): quarks and antiquarks must have the same number of rows");
}

// The tensors of ifm::coulomb_field: one or two plates of `points`' width, dtype and device,
// each with at least one charge (the softmax over no charges is 0 / 0). The kernels tell one
// plate from two by the negative plate's pointer (one plate: nullptr, Bn = 0), so an empty
// negative plate, whose data pointer may be null, must not reach them.
inline void check_coulomb_op(const at::Tensor& points, const at::Tensor& positive,
                             const std::optional<at::Tensor>& negative, c10::DeviceType device_type,
                             const char* label) {
  check_op_input(points, "points", points, device_type, label);
  check_op_input(positive, "positive", points, device_type, label);
  TORCH_CHECK(positive.size(0) >= 1, "ifm (", label, "): positive must have at least one row");
  if (negative.has_value() && negative->defined()) {
    check_op_input(*negative, "negative", points, device_type, label);
    TORCH_CHECK(negative->size(0) >= 1, "ifm (", label,
                "): negative must have at least one row (pass None for one plate)");
  }
}

// The tensors of ifm::coulomb_plate_partial: one plate of `points`' width, dtype and device,
// with at least one charge.
inline void check_plate_partial_op(const at::Tensor& points, const at::Tensor& charges,
                                   c10::DeviceType device_type, const char* label) {
  check_op_input(points, "points", points, device_type, label);
  check_op_input(charges, "charges", points, device_type, label);
  TORCH_CHECK(charges.size(0) >= 1, "ifm (", label, "): charges must have at least one row");
}

}  // namespace ifm
