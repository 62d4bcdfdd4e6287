// Parameter structs of the field targets, shared by every C++ backend (csrc/cpu/kernels.h,
// csrc/cuda/kernels.cuh, csrc/field_math.h). Plain aggregates: no torch, no CUDA header.
#pragma once

#include <cstdint>

namespace ifm {

// Geometry of the string field (FIELDS.md §2).
struct StringParams {
  double L;       // plate distance
  double sigma0;  // string width
  double K;       // curvature
  double d;       // end-region length, pi / (2K)
  int64_t D;      // data dimension (tensors are [n, D + 1])
};

// Final normalisation scale * E / (||E|| + eps), applied when `normalize` is true (FIELDS.md §4).
struct NormParams {
  bool normalize = false;
  double scale = 1.0;
  double eps = 1e-5;
};

}  // namespace ifm
