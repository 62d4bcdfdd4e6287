// C entry points of the CPU-emulated CUDA launchers (see cuda_emu.h), loaded by
// tests/test_cuda_backend.py through ctypes. Compiled with
//   g++ -std=c++17 -O2 -shared -fPIC -DIFM_CUDA_EMULATION -include tests/cuda_emu/cuda_emu.h
//       -x c++ tests/cuda_emu/capi.cpp
// The kernel sources are included verbatim: what runs here is the code nvcc compiles.
#include "../../csrc/cuda/string_field.cu"
#include "../../csrc/cuda/coulomb_field.cu"
#include "../../csrc/cuda/finalize_rows.cu"

namespace {

// coef_f32: the float32 coefficient path (Tuning::coef_f32, what the torch binding chooses on
// GPUs with slow FP64); float64 data ignores it.
ifm::cuda::Tuning tuning(int64_t max_pairs_per_chunk, int64_t target_blocks, int coef_f32) {
  ifm::cuda::Tuning t;
  if (max_pairs_per_chunk > 0) t.max_pairs_per_chunk = max_pairs_per_chunk;
  if (target_blocks > 0) t.target_blocks = target_blocks;
  t.coef_f32 = coef_f32 != 0;
  return t;
}

ifm::NormParams norm_params(int normalize, double scale, double eps) {
  ifm::NormParams n;
  n.normalize = normalize != 0;
  n.scale = scale;
  n.eps = eps;
  return n;
}

// A caller-provided workspace, deliberately 8 bytes past an aligned address.
struct GivenWorkspace {
  std::vector<char> buf;
  void* ptr = nullptr;
  size_t bytes = 0;
  GivenWorkspace(bool use, size_t need) {
    if (!use) return;
    buf.resize(need + 8);
    ptr = buf.data() + 8;
    bytes = need;
  }
};

template <typename T>
int run_string(const void* points, const void* quarks, const void* antiquarks, int64_t b, int64_t B,
               int64_t D, double L, double sigma0, double K, double d, int stable, int normalize,
               double scale, double eps, void* out, const ifm::cuda::Tuning& tune,
               int use_workspace) {
  ifm::StringParams p{L, sigma0, K, d, D};
  GivenWorkspace ws(use_workspace != 0, ifm::cuda::string_field_workspace_bytes<T>(b, B, D, tune));
  return (int)ifm::cuda::string_field<T>(
      static_cast<const T*>(points), static_cast<const T*>(quarks),
      static_cast<const T*>(antiquarks), b, B, p, stable != 0, norm_params(normalize, scale, eps),
      static_cast<T*>(out), ws.ptr, ws.bytes, nullptr, tune);
}

template <typename T>
int run_coulomb(const void* points, int64_t b, const void* positive, int64_t Bp,
                const void* negative, int64_t Bn, int64_t D, int plate_normalize,
                double plate_gamma, double sum_eps, int normalize, double scale, double eps,
                void* out, const ifm::cuda::Tuning& tune, int use_workspace) {
  GivenWorkspace ws(use_workspace != 0, ifm::cuda::coulomb_field_workspace_bytes<T>(
                                            b, Bp, Bn, D, negative != nullptr, tune));
  return (int)ifm::cuda::coulomb_field<T>(
      static_cast<const T*>(points), b, static_cast<const T*>(positive), Bp,
      static_cast<const T*>(negative), Bn, D, plate_normalize != 0, plate_gamma, sum_eps,
      norm_params(normalize, scale, eps), static_cast<T*>(out), ws.ptr, ws.bytes, nullptr, tune);
}

template <typename T>
int run_plate_partial(const void* points, int64_t b, const void* charges, int64_t B, int64_t D,
                      void* out, double* lognorm, const ifm::cuda::Tuning& tune) {
  return (int)ifm::cuda::coulomb_plate_partial<T>(
      static_cast<const T*>(points), b, static_cast<const T*>(charges), B, D, static_cast<T*>(out),
      lognorm, nullptr, 0, nullptr, tune);
}

}  // namespace

extern "C" {

int ifm_emu_string_field(int is_double, const void* points, const void* quarks,
                         const void* antiquarks, int64_t b, int64_t B, int64_t D, double L,
                         double sigma0, double K, double d, int stable, int normalize, double scale,
                         double eps, void* out, int64_t max_pairs_per_chunk, int64_t target_blocks,
                         int use_workspace, int coef_f32) {
  const ifm::cuda::Tuning t = tuning(max_pairs_per_chunk, target_blocks, coef_f32);
  return is_double ? run_string<double>(points, quarks, antiquarks, b, B, D, L, sigma0, K, d,
                                        stable, normalize, scale, eps, out, t, use_workspace)
                   : run_string<float>(points, quarks, antiquarks, b, B, D, L, sigma0, K, d, stable,
                                       normalize, scale, eps, out, t, use_workspace);
}

int ifm_emu_coulomb_field(int is_double, const void* points, int64_t b, const void* positive,
                          int64_t Bp, const void* negative, int64_t Bn, int64_t D,
                          int plate_normalize, double plate_gamma, double sum_eps, int normalize,
                          double scale, double eps, void* out, int64_t max_pairs_per_chunk,
                          int64_t target_blocks, int use_workspace, int coef_f32) {
  const ifm::cuda::Tuning t = tuning(max_pairs_per_chunk, target_blocks, coef_f32);
  return is_double ? run_coulomb<double>(points, b, positive, Bp, negative, Bn, D, plate_normalize,
                                         plate_gamma, sum_eps, normalize, scale, eps, out, t,
                                         use_workspace)
                   : run_coulomb<float>(points, b, positive, Bp, negative, Bn, D, plate_normalize,
                                        plate_gamma, sum_eps, normalize, scale, eps, out, t,
                                        use_workspace);
}

int ifm_emu_coulomb_plate_partial(int is_double, const void* points, int64_t b, const void* charges,
                                  int64_t B, int64_t D, void* out, double* lognorm,
                                  int64_t max_pairs_per_chunk, int coef_f32) {
  const ifm::cuda::Tuning t = tuning(max_pairs_per_chunk, 0, coef_f32);
  return is_double ? run_plate_partial<double>(points, b, charges, B, D, out, lognorm, t)
                   : run_plate_partial<float>(points, b, charges, B, D, out, lognorm, t);
}

long ifm_emu_launches() {
  return ifm_emu::launches;
}

// Schedule of the threads between barriers: 0 forward, 1 reverse, 2 seeded random, 3 mixed
// (each block one of the three in turn; the default).
void ifm_emu_set_schedule(int mode, uint64_t seed) {
  ifm_emu::set_schedule(mode, seed);
}

// Violations recorded since the last ifm_emu_clear_report() (races, uninitialised shared
// reads, divergent barriers, invalid launches), one message a line; empty when none.
const char* ifm_emu_report() {
  return ifm_emu::report();
}
long ifm_emu_violations() {
  return ifm_emu::violations;
}
void ifm_emu_clear_report() {
  ifm_emu::clear_report();
}

}  // extern "C"
