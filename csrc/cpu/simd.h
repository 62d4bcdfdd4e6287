// Explicit SIMD for the CPU kernels: runtime ISA choice and one small traits type per
// (instruction set, element type).
//
// The build never uses -march=native. Each instruction set's traits are compiled inside a
// `#pragma GCC target` region, and so are the kernels written against them
// (pair_passes_impl.h, included once per region by pair_passes.h); active_isa() picks the
// best one the CPU supports at run time (__builtin_cpu_supports). IFM_CPU_ISA=scalar|avx2|avx512
// in the environment caps the choice (tests run every path).
//
// Traits interface (V): T (element), R (register), W (lanes), zero(), set1(T), load(p),
// load_tail(p, n) (first n < W lanes, the rest 0, never reading past p + n), store(p, r),
// add/sub/mul, fmadd(a, b, c) = a * b + c, fnmadd(a, b, c) = c - a * b, hsum(r) (fixed order).
#pragma once

// GCC 12 reports its own _mm512_undefined_* placeholders (inside the intrinsics headers) as
// uninitialised; silence that for the header's locations only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace ifm {
namespace cpu {
namespace simd {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "scalar";
}

// Best instruction set of this CPU, capped by IFM_CPU_ISA when set.
inline Isa active_isa() {
  __builtin_cpu_init();
  Isa best = Isa::scalar;
  if (__builtin_cpu_supports("avx512f")) {
    best = Isa::avx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = Isa::avx2;
  }
  if (const char* env = std::getenv("IFM_CPU_ISA")) {
    Isa want = best;
    if (std::strcmp(env, "scalar") == 0) want = Isa::scalar;
    if (std::strcmp(env, "avx2") == 0) want = Isa::avx2;
    if (want < best) best = want;
  }
  return best;
}

// ------------------------------------------------------------------------------------------
// Portable fallback: one lane.
namespace scalar {

template <typename Tp>
struct V {
  using T = Tp;
  using R = Tp;
  static constexpr int W = 1;
  static R zero() { return T(0); }
  static R set1(T a) { return a; }
  static R load(const T* p) { return *p; }
  static R load_tail(const T* p, int64_t n) { return n > 0 ? *p : T(0); }
  static void store(T* p, R a) { *p = a; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R fmadd(R a, R b, R c) { return a * b + c; }
  static R fnmadd(R a, R b, R c) { return c - a * b; }
  static T hsum(R a) { return a; }
};

}  // namespace scalar

// Types and operations whose intrinsics differ only by prefix (_mm256 / _mm512) and suffix
// (ps / pd).
#define IFM_SIMD_COMMON_OPS(TYPE, REG, WIDTH, PFX, SFX) \
  using T = TYPE;                                       \
  using R = REG;                                        \
  static constexpr int W = WIDTH;                       \
  static R zero() {                                     \
    return PFX##_setzero_##SFX();                       \
  }                                                     \
  static R set1(T a) {                                  \
    return PFX##_set1_##SFX(a);                         \
  }                                                     \
  static R load(const T* p) {                           \
    return PFX##_loadu_##SFX(p);                        \
  }                                                     \
  static void store(T* p, R a) {                        \
    PFX##_storeu_##SFX(p, a);                           \
  }                                                     \
  static R add(R a, R b) {                              \
    return PFX##_add_##SFX(a, b);                       \
  }                                                     \
  static R sub(R a, R b) {                              \
    return PFX##_sub_##SFX(a, b);                       \
  }                                                     \
  static R mul(R a, R b) {                              \
    return PFX##_mul_##SFX(a, b);                       \
  }                                                     \
  static R fmadd(R a, R b, R c) {                       \
    return PFX##_fmadd_##SFX(a, b, c);                  \
  }                                                     \
  static R fnmadd(R a, R b, R c) {                      \
    return PFX##_fnmadd_##SFX(a, b, c);                 \
  }

// ------------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

inline __m256i tail_mask32(int64_t n) {  // first n of 8 int32 lanes set
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i tail_mask64(int64_t n) {  // first n of 4 int64 lanes set
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

template <typename Tp>
struct V;

template <>
struct V<float> {
  IFM_SIMD_COMMON_OPS(float, __m256, 8, _mm256, ps)
  static R load_tail(const T* p, int64_t n) { return _mm256_maskload_ps(p, tail_mask32(n)); }
  static T hsum(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

template <>
struct V<double> {
  IFM_SIMD_COMMON_OPS(double, __m256d, 4, _mm256, pd)
  static R load_tail(const T* p, int64_t n) { return _mm256_maskload_pd(p, tail_mask64(n)); }
  static T hsum(R a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

}  // namespace avx2
#pragma GCC pop_options

// ------------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {

inline __mmask16 tail16(int64_t n) {
  return (__mmask16)((1u << n) - 1u);
}
inline __mmask8 tail8(int64_t n) {
  return (__mmask8)((1u << n) - 1u);
}

template <typename Tp>
struct V;

template <>
struct V<float> {
  IFM_SIMD_COMMON_OPS(float, __m512, 16, _mm512, ps)
  static R load_tail(const T* p, int64_t n) { return _mm512_maskz_loadu_ps(tail16(n), p); }
  static T hsum(R a) { return _mm512_reduce_add_ps(a); }
};

template <>
struct V<double> {
  IFM_SIMD_COMMON_OPS(double, __m512d, 8, _mm512, pd)
  static R load_tail(const T* p, int64_t n) { return _mm512_maskz_loadu_pd(tail8(n), p); }
  static T hsum(R a) { return _mm512_reduce_add_pd(a); }
};

}  // namespace avx512
#pragma GCC pop_options

#undef IFM_SIMD_COMMON_OPS

}  // namespace simd
}  // namespace cpu
}  // namespace ifm
