// CUDA Coulomb field (EFM two plates, PFGM one plate), FIELDS.md §3 and §4; semantics of
// docs/DESIGN.md and field_math.h.
//
// Launches, per chunk of query rows and per plate (see common.cuh for steps 1 and 3):
//   distance_tiles        d2_ij partial sums over all D + 1 columns (z included), direct
//                         differences.
//   coulomb_coefficients  grid = rows, one block per query row: e = exp(logit - max logit) of
//                         every charge, sum of e over every charge (fixed tree), coeff =
//                         e / (sum + sum_eps). double: logit = coulomb_logit(d2), row max; float
//                         (the float32 coefficient path): u = sqrt(d2) + 1e-7, row min u*, and
//                         the relative logit -DIM log1p((u - u*) / u*) (field_math.h). A charge
//                         is dropped when its term's size e * d is below skip_ratio of the row's
//                         largest term size (sizes, not weights, as the CPU kernel: a query on a
//                         charge gets its whole field from charges whose weights are far below
//                         the nearest one's). Each charge's logit (or u) and e are evaluated
//                         once and kept in the row's scratch; the sum and the largest size share
//                         one reduction tree; compaction in runs of RUN = 1, 4 or 16
//                         consecutive charges per thread (common.cuh append_run).
//   pair_sums             E = sum coeff (y_j - x_i) over the kept charges, from differences:
//                         plate 0 straight into `out`, plate 1 into a workspace row block.
// then once per chunk (when anything is left to do):
//   finalize_rows         per-plate sqrt(D+1) E / (||E|| + plate_gamma), -E+ + E-, and the
//                         final normalisation; norms' sums in the compute type, fixed tree.
#include <cmath>

#include "common.cuh"
#include "finalize_rows.cuh"

namespace ifm {
namespace cuda {
namespace detail {

template <typename C>
struct CoulombCoefArgs {
  C* partial;  // [nslices, rows, n]; slice 0 receives the sums
  int64_t rows, n, nslices, dim;
  double sum_eps;
  PairLists<C> lists;
  double* lognorm;  // nullable: [rows, 2] (max logit, log-normaliser) per row
};

// The per-charge terms of one row in the compute type: key(d2) is reduced over the row (with
// Reduce, from `init`) to the reference `ref`; weight(key, ref) = e_j = exp(l_j - max_k l_k);
// max_logit(ref) = max_k l_k in double (the partial op's log-normaliser).
template <typename C>
struct CoulombRow;

template <>
struct CoulombRow<double> {  // key = l_j = coulomb_logit(d2_j), ref = max_k l_k
  using Reduce = MaxOp;
  static constexpr double init = -INFINITY;  // logits are finite (d + 1e-7 > 0)
  __device__ static double key(double d2, int64_t dim) { return coulomb_logit(d2, dim); }
  __device__ static double weight(double key, double ref, int64_t) { return exp(key - ref); }
  __device__ static double max_logit(double ref, int64_t) { return ref; }
};

template <>
struct CoulombRow<float> {  // key = u_j = sqrt(d2_j) + 1e-7, ref = u* = min_k u_k: the nearest
  using Reduce = MinOp;
  static constexpr float init = INFINITY;
  __device__ static float key(float d2, int64_t) { return coulomb_distance(d2); }
  __device__ static float weight(float key, float ref, int64_t dim) {
    return expf(coulomb_relative_logit(key, ref, dim));
  }
  __device__ static double max_logit(float ref, int64_t dim) {
    return -(double)dim * log((double)ref);
  }
};

// min blocks 1: with the thread bound alone, ptxas for sm_120 holds this kernel to 64 registers
// and spills; one resident block per SM is all the per-row grid needs. RUN: charges per thread
// and compaction step (append_run, coefficient_run).
template <typename T, typename C, int RUN>
__global__ void __launch_bounds__(kThreads, 1) coulomb_coefficients(CoulombCoefArgs<C> a) {
  using Row = CoulombRow<C>;
  IFM_SHARED(C, red, [kThreads]);
  IFM_SHARED(C, red2, [kThreads]);
  IFM_SHARED(int, scan_buf, [kThreads]);
  const int64_t i = blockIdx.x;
  // Each charge's terms are evaluated once and kept in this row's scratch: its partial slice-0
  // row holds d2, then e; its list row holds the key, then the term size e * d (append_run
  // overwrites it only after it is read).
  C* d2_s = a.partial + i * a.n;
  C* aux_s = a.lists.c1 + i * a.lists.n;
  C ref = Row::init;  // finite for n >= 1
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
    const C v = Row::key(fold_partials(a.partial, a.nslices, a.rows, a.n, i, j), a.dim);
    aux_s[j] = v;
    ref = typename Row::Reduce()(v, ref);
  }
  ref = block_reduce(ref, red, typename Row::Reduce());

  // Softmax denominator over every charge (skipped ones included) and the largest term size
  // (the same thread visits the same charges as above: no barrier needed for the scratch).
  C s = C(0), top = C(0);
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
    const C d2 = d2_s[j];
    const C e = Row::weight(aux_s[j], ref, a.dim);
    s += e;
    const C size = e * fm_sqrt(d2);
    top = size > top ? size : top;
    d2_s[j] = e;
    aux_s[j] = size;
  }
  block_reduce2(&s, &top, red, red2, SumOp(), MaxOp());  // also publishes the scratch
  const C inv = C(1) / (s + (C)a.sum_eps);
  // One thread writes the row's log-normalisers (FP64 logs: the other warps skip them).
  if (threadIdx.x == 0 && a.lognorm != nullptr) {
    const double m = Row::max_logit(ref, a.dim);
    a.lognorm[2 * i] = m;
    a.lognorm[2 * i + 1] = m + log((double)s);
  }

  // The kept charges' coefficients, compacted in charge order, RUN consecutive charges per
  // thread and step.
  const C floor_size = (C)skip_ratio(sizeof(T) == 8) * top;
  int filled = 0;
  for (int64_t j0 = 0; j0 < a.n; j0 += int64_t(RUN) * kThreads) {
    const int64_t jt = j0 + int64_t(threadIdx.x) * RUN;
    C c[RUN];
    unsigned keep = 0;
    int count = 0;
#pragma unroll
    for (int r = 0; r < RUN; ++r) {
      const int64_t j = jt + r;
      c[r] = C(0);
      if (j < a.n) {
        const C e = d2_s[j];
        if (e > C(0) && aux_s[j] >= floor_size) {
          c[r] = e * inv;
          keep |= 1u << r;
          ++count;
        }
      }
    }
    append_run(a.lists, i, jt, keep, count, c, c, scan_buf, &filled);
  }
  if (threadIdx.x == 0) a.lists.count[i] = filled;
}

template <typename T, typename C>
struct CoulombLayout {
  int64_t rc;  // query rows per chunk
  C* partial;
  PairLists<C> lists;
  T* en;  // [rc, D + 1] plate-1 term (two plates only)
};

template <typename T, typename C>
CoulombLayout<T, C> coulomb_layout(Carver& cv, int64_t b, int64_t Bp, int64_t Bn, bool two,
                                   int64_t D, const Tuning& tune) {
  CoulombLayout<T, C> l;
  const int64_t width = D + 1;
  const int64_t nmax = max64(Bp, two ? Bn : 0);
  l.rc = rows_per_chunk(b, nmax, tune);
  int64_t partial = max_partial_rows<T, false, C>(b, l.rc, Bp, width, tune) * Bp;
  if (two) {
    partial = max64(partial, max_partial_rows<T, false, C>(b, l.rc, Bn, width, tune) * Bn);
  }
  l.partial = cv.take<C>(partial);
  l.lists.count = cv.take<int>(l.rc);
  l.lists.idx = cv.take<int>(l.rc * nmax);
  l.lists.c1 = cv.take<C>(l.rc * nmax);
  l.lists.c2 = nullptr;
  l.lists.n = nmax;
  l.en = two ? cv.take<T>(l.rc * width) : nullptr;
  return l;
}

// E of one plate for `rows` queries into target [rows, width] (raw, toward the charges);
// lognorm (nullable, n >= 1): the rows' [rows, 2] (max logit, log-normaliser).
template <typename T, typename C>
cudaError_t plate_field(const T* pts, int64_t rows, const T* charges, int64_t n, int64_t width,
                        double sum_eps, const CoulombLayout<T, C>& l, T* target, const Tuning& tune,
                        cudaStream_t stream, double* lognorm = nullptr) {
  if (n == 0) return cudaMemsetAsync(target, 0, sizeof(T) * size_t(rows * width), stream);
  PairLists<C> lists = l.lists;
  lists.n = n;
  return two_pass<T, false, C>(
      pts, rows, charges, nullptr, n, width, StringParams{}, l.partial, lists, target, tune, stream,
      [&](const DistancePlan& plan) {
        CoulombCoefArgs<C> ca;
        ca.partial = l.partial;
        ca.rows = rows;
        ca.n = n;
        ca.nslices = plan.nslices;
        ca.dim = width;
        ca.sum_eps = sum_eps;
        ca.lists = lists;
        ca.lognorm = lognorm;
        return with_coefficient_run(n, [&](auto run) {
          auto coef_kernel = coulomb_coefficients<T, C, decltype(run)::value>;
          IFM_LAUNCH(coef_kernel, dim3((unsigned)rows), dim3(kThreads), stream, ca);
          return cudaGetLastError();
        });
      });
}

template <typename T, typename C>
size_t coulomb_workspace_bytes(int64_t b, int64_t Bp, int64_t Bn, int64_t D, bool two,
                               const Tuning& tune) {
  Carver cv(nullptr);
  coulomb_layout<T, C>(cv, b, Bp, two ? Bn : 0, two, D, tune);
  return cv.bytes();
}

template <typename T, typename C>
cudaError_t coulomb_field_impl(const T* points, int64_t b, const T* positive, int64_t Bp,
                               const T* negative, int64_t Bn, int64_t D, bool plate_normalize,
                               double plate_gamma, double sum_eps, const NormParams& norm, T* out,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream,
                               const Tuning& tune) {
  const bool two = negative != nullptr;
  const int64_t width = D + 1;
  ScopedWorkspace ws(workspace, workspace_bytes,
                     coulomb_workspace_bytes<T, C>(b, Bp, Bn, D, two, tune), stream);
  IFM_CUDA_TRY(ws.status());
  Carver cv(align256(ws.get()));
  const CoulombLayout<T, C> l = coulomb_layout<T, C>(cv, b, Bp, Bn, two, D, tune);

  for (int64_t i0 = 0; i0 < b; i0 += l.rc) {
    const int64_t rows = min64(l.rc, b - i0);
    const T* pts = points + i0 * width;
    T* o = out + i0 * width;
    IFM_CUDA_TRY((plate_field<T, C>(pts, rows, positive, Bp, width, sum_eps, l, o, tune, stream)));
    if (two) {
      IFM_CUDA_TRY(
          (plate_field<T, C>(pts, rows, negative, Bn, width, sum_eps, l, l.en, tune, stream)));
    }
    if (two || plate_normalize || norm.normalize) {
      IFM_CUDA_TRY((launch_finalize_rows<T, C>(o, l.en, o, rows, width, plate_normalize,
                                               plate_gamma, norm, stream)));
    }
  }
  return cudaSuccess;
}

template <typename T, typename C>
cudaError_t coulomb_plate_partial_impl(const T* points, int64_t b, const T* charges, int64_t B,
                                       int64_t D, T* out, double* lognorm, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream,
                                       const Tuning& tune) {
  const int64_t width = D + 1;
  ScopedWorkspace ws(workspace, workspace_bytes,
                     coulomb_workspace_bytes<T, C>(b, B, 0, D, false, tune), stream);
  IFM_CUDA_TRY(ws.status());
  Carver cv(align256(ws.get()));
  const CoulombLayout<T, C> l = coulomb_layout<T, C>(cv, b, B, 0, false, D, tune);
  for (int64_t i0 = 0; i0 < b; i0 += l.rc) {
    const int64_t rows = min64(l.rc, b - i0);
    IFM_CUDA_TRY((plate_field<T, C>(points + i0 * width, rows, charges, B, width, 0.0, l,
                                    out + i0 * width, tune, stream, lognorm + 2 * i0)));
  }
  return cudaSuccess;
}

}  // namespace detail

template <typename T>
size_t coulomb_field_workspace_bytes(int64_t b, int64_t Bp, int64_t Bn, int64_t D, bool two_plates,
                                     const Tuning& tune) {
  return detail::with_compute_type<T>(tune, [&](auto c) {
    return detail::coulomb_workspace_bytes<T, decltype(c)>(b, Bp, Bn, D, two_plates, tune);
  });
}

template <typename T>
cudaError_t coulomb_field(const T* points, int64_t b, const T* positive, int64_t Bp,
                          const T* negative, int64_t Bn, int64_t D, bool plate_normalize,
                          double plate_gamma, double sum_eps, const NormParams& norm, T* out,
                          void* workspace, size_t workspace_bytes, cudaStream_t stream,
                          const Tuning& tune) {
  const bool two = negative != nullptr;
  if (!two) Bn = 0;  // not read with one plate
  if (b < 0 || Bp < 0 || D < 1 || Bp > 0x7fffffff || (two && (Bn < 0 || Bn > 0x7fffffff))) {
    return cudaErrorInvalidValue;
  }
  if (b == 0) return cudaSuccess;
  return detail::with_compute_type<T>(tune, [&](auto c) {
    return detail::coulomb_field_impl<T, decltype(c)>(
        points, b, positive, Bp, negative, Bn, D, plate_normalize, plate_gamma, sum_eps, norm, out,
        workspace, workspace_bytes, stream, tune);
  });
}

template <typename T>
cudaError_t coulomb_plate_partial(const T* points, int64_t b, const T* charges, int64_t B,
                                  int64_t D, T* out, double* lognorm, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream, const Tuning& tune) {
  if (b < 0 || B < 1 || D < 1 || B > 0x7fffffff) return cudaErrorInvalidValue;
  if (b == 0) return cudaSuccess;
  return detail::with_compute_type<T>(tune, [&](auto c) {
    return detail::coulomb_plate_partial_impl<T, decltype(c)>(
        points, b, charges, B, D, out, lognorm, workspace, workspace_bytes, stream, tune);
  });
}

#define IFM_INSTANTIATE_COULOMB(T)                                                                 \
  template size_t coulomb_field_workspace_bytes<T>(int64_t, int64_t, int64_t, int64_t, bool,       \
                                                   const Tuning&);                                 \
  template cudaError_t coulomb_field<T>(const T*, int64_t, const T*, int64_t, const T*, int64_t,   \
                                        int64_t, bool, double, double, const NormParams&, T*,      \
                                        void*, size_t, cudaStream_t, const Tuning&);               \
  template cudaError_t coulomb_plate_partial<T>(const T*, int64_t, const T*, int64_t, int64_t, T*, \
                                                double*, void*, size_t, cudaStream_t,              \
                                                const Tuning&);
IFM_INSTANTIATE_COULOMB(float)
IFM_INSTANTIATE_COULOMB(double)
#undef IFM_INSTANTIATE_COULOMB

}  // namespace cuda
}  // namespace ifm
