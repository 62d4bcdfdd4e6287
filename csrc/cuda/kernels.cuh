// Torch-free CUDA launchers of the field targets (raw device pointers, sizes, a stream).
//
// Mirrors csrc/cpu/kernels.h: same layout (row-major, contiguous, z-first: points [b, D + 1],
// quarks/antiquarks or plate charges [B, D + 1]; column 0 of a string pair is its plate's z and is
// not read), same parameters (ifm::StringParams, ifm::NormParams), same semantics
// (docs/DESIGN.md, csrc/field_math.h). Every pointer is device memory on the current device.
// Each launcher enqueues its kernels on `stream` and returns the first error it meets
// (cudaGetLastError after the launches; kernels run asynchronously, so an execution error shows
// up at the caller's next synchronisation). Results are bitwise identical from call to call:
// every reduction has a fixed order and no output is accumulated with atomics.
//
// Workspace: the kernels need scratch memory (O(S * b * B) partial distances, O(b * B)
// coefficients; bounded by processing the queries in chunks, see Tuning). Either pass a device
// buffer of at least *_workspace_bytes(...) bytes (the torch binding does, through the caching
// allocator), or pass workspace == nullptr: the launcher then allocates it with cudaMallocAsync
// on `stream` and frees it with cudaFreeAsync on the same stream (stream-ordered, no sync). The
// size depends on the Tuning (coef_f32 halves the partial sums and lists): pass the same one to
// *_workspace_bytes and to the launcher.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(IFM_CUDA_EMULATION)
#include <cuda_runtime.h>
#endif

#include "../field_math.h"
#include "../field_params.h"

namespace ifm {
namespace cuda {

// Launch tuning. The defaults are what the kernels are designed for; the fields exist so that
// tests can force the rarely taken paths (query chunking, split-D) at small sizes. Results do not
// depend on the GPU model: every choice below depends on the shapes and these numbers only (the
// torch binding sets coef_f32 from the device, so results are the same on every GPU of one FP64
// class).
struct Tuning {
  // Queries are processed in chunks of at most max(1, max_pairs_per_chunk / B) rows, which
  // bounds the workspace (and keeps 1-D grids far below their limits) for any b.
  int64_t max_pairs_per_chunk = int64_t(1) << 22;
  // The distance pass splits D into slices (partial sums reduced later in a fixed order) to
  // spread its work evenly over 108-132 SMs (see plan_distance in common.cuh), with at most
  // this many blocks.
  int64_t target_blocks = 2376;
  // Float32 coefficient path (float32 data only; float64 data ignores it): pass-1 partial sums,
  // the [rows, B] coefficients, the kept-pair lists, pair_inv_norms, pair_sums and the
  // finalisation's per-element work in float, with no FP64 instruction in a per-pair or
  // per-element loop; per-query and per-row terms stay double (docs/DESIGN.md, "CUDA kernels").
  // For GPUs whose FP64 runs at 1/32-1/64 of FP32 (sm_75, sm_86, sm_89, sm_120): the binding sets
  // it when cudaDevAttrSingleToDoublePrecisionPerfRatio > 4. false: the double path (float64
  // data, and A100 / H100-class GPUs), unchanged.
  bool coef_f32 = false;
};

// String (IFM) field of FIELDS.md §2, then §4 (see csrc/cpu/kernels.h for the arguments).
template <typename T>
size_t string_field_workspace_bytes(int64_t b, int64_t B, int64_t D, const Tuning& tune = Tuning());

template <typename T>
cudaError_t string_field(const T* points, const T* quarks, const T* antiquarks, int64_t b,
                         int64_t B, const StringParams& p, bool stable, const NormParams& norm,
                         T* out, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         const Tuning& tune = Tuning());

// Coulomb field of FIELDS.md §3, then §4 (see csrc/cpu/kernels.h for the arguments). One plate
// when negative == nullptr; Bn is then 0 (as the CPU kernels; it is not read). The workspace
// size takes the plate count explicitly (a two-plate size is also large enough for one plate).
template <typename T>
size_t coulomb_field_workspace_bytes(int64_t b, int64_t Bp, int64_t Bn, int64_t D, bool two_plates,
                                     const Tuning& tune = Tuning());

template <typename T>
cudaError_t coulomb_field(const T* points, int64_t b, const T* positive, int64_t Bp,
                          const T* negative, int64_t Bn, int64_t D, bool plate_normalize,
                          double plate_gamma, double sum_eps, const NormParams& norm, T* out,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream,
                          const Tuning& tune = Tuning());

// One plate's softmax-weighted mean (no plate or final normalisation, sum_eps 0) into out and
// per row lognorm[2i] = max_j l_ij, lognorm[2i + 1] = log sum_j e^(l_ij) (as the CPU kernel's
// coulomb_plate_partial; B >= 1; in double; on the float32 coefficient path max_j l_ij =
// -DIM log(u*) from the float nearest distance u* and the sum is the float softmax sum).
// Workspace: coulomb_field_workspace_bytes(b, B, 0, D, false, tune).
template <typename T>
cudaError_t coulomb_plate_partial(const T* points, int64_t b, const T* charges, int64_t B,
                                  int64_t D, T* out, double* lognorm, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream,
                                  const Tuning& tune = Tuning());

}  // namespace cuda
}  // namespace ifm
