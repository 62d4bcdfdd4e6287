// CUDA string (IFM) field, FIELDS.md §2 and §4; semantics of docs/DESIGN.md and field_math.h.
//
// Launches, per chunk of query rows (see common.cuh for steps 1, 3 and 4; C = the compute type,
// double, or float on the float32 coefficient path):
//   pair_inv_norms       once per call: nu_j = 1 / ||(L, C_j - A_j)||, grid B, one block per pair,
//                        fixed-tree sum over D in C.
//   distance_tiles       r2_ij partial sums from rho = (x - base) - t * Delta (nearer plate).
//   string_coefficients  grid = rows, one block per query row: string_query in double (by one
//                        thread, shared with the block, rounded to C), r2 = sum of the slices
//                        (C, slice order), string_pair() in C once per pair (log w, cos(alpha)
//                        and sr kept in the row's scratch), row max of log w, then
//                        w = exp(log w - shift) (shift = row max in stable mode, 0 otherwise),
//                        c1 = w cos(alpha) nu_j, c2 = w sr, pairs with w < skip_ratio * max
//                        dropped (compaction in runs of RUN = 1, 4 or 16 consecutive pairs per
//                        thread, common.cuh append_run), E_z = L * sum c1 (C, fixed tree)
//                        written to column 0.
//   pair_sums            E_x = sum c2 rho + c1 Delta over the kept pairs, from differences.
//   finalize_rows        only when normalize: sqrt(D+1) E / (||E|| + eps).
// No [b, B, D] buffer exists; the largest scratch is [S, rows, B] partial distances.
#include <cmath>

#include "common.cuh"
#include "finalize_rows.cuh"

namespace ifm {
namespace cuda {
namespace detail {

template <typename T, typename C>
__global__ void __launch_bounds__(kThreads)
    pair_inv_norms(const T* quarks, const T* antiquarks, int64_t width, double L, C* nu) {
  IFM_SHARED(C, red, [kThreads]);
  const int64_t j = blockIdx.x;
  const T* a = quarks + j * width;
  const T* c = antiquarks + j * width;
  C s = C(0);
  for (int64_t k = 1 + threadIdx.x; k < width; k += kThreads) {
    const C d = (C)c[k] - (C)a[k];
    s += d * d;
  }
  s = block_reduce(s, red, SumOp());
  if (threadIdx.x == 0) nu[j] = C(1) / fm_sqrt((C)L * (C)L + s);
}

template <typename T, typename C>
struct StringCoefArgs {
  const T* points;  // [rows, width]
  C* partial;       // [nslices, rows, n]; slice 0 receives the sums
  const C* nu;      // [n]
  int64_t rows, n, width, nslices;
  StringParams sp;
  bool stable;
  PairLists<C> lists;
  T* out;  // column 0 receives E_z
};

// RUN: pairs per thread and compaction step (append_run, coefficient_run). min blocks 1: with
// the thread bound alone, ptxas for sm_75 spills the RUN = 16 double instantiation; the per-row
// grid needs one resident block per SM.
template <typename T, typename C, int RUN>
__global__ void __launch_bounds__(kThreads, 1) string_coefficients(StringCoefArgs<T, C> a) {
  IFM_SHARED(C, red, [kThreads]);
  IFM_SHARED(int, scan_buf, [kThreads]);
  IFM_SHARED(StringQueryT<C>, qs, [1]);
  const int64_t i = blockIdx.x;
  // The per-query terms in double, once per row: one thread computes them and the block reads
  // them from shared memory. This FP64 chain (a sine and a tangent of the tube) is the longest
  // straight-line work of the kernel; on GPUs with slow FP64 (1/64 of FP32) eight warps each
  // repeating it cost more than the row's pairs.
  if (threadIdx.x == 0) qs[0] = query_as<C>(string_query((double)a.points[i * a.width], a.sp));
  __syncthreads();
  const StringQueryT<C> q = qs[0];
  const C inf = C(INFINITY);
  // Phase 1 stores each pair's terms for phase 2 in this row's scratch: log w in its partial
  // slice-0 row (r2 is not needed again), cos(alpha) and sr in its list rows (append_run
  // overwrites them only after they are read).
  C* logw_s = a.partial + i * a.n;
  C* cos_s = a.lists.c1 + i * a.lists.n;
  C* sr_s = a.lists.c2 + i * a.lists.n;

  // Phase 1: string_pair of every pair (coalesced) and the row's largest log-weight (-inf
  // when none contributes).
  C m = -inf;
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
    const C r2 = fold_partials(a.partial, a.nslices, a.rows, a.n, i, j);
    const StringPairT<C> pr = string_pair(q, r2);
    logw_s[j] = pr.logw;
    cos_s[j] = pr.cos_a;
    sr_s[j] = pr.sr;
    m = pr.logw > m ? pr.logw : m;
  }
  m = block_reduce(m, red, MaxOp());  // its barriers also publish the scratch to the block

  // Phase 2: coefficients of the kept pairs, compacted in pair order, RUN consecutive pairs per
  // thread and step.
  const C log_ratio = (C)log_skip_ratio(sizeof(T) == 8);
  const C shift = (a.stable && m > -inf) ? m : C(0);
  C ez = C(0);
  int filled = 0;
  for (int64_t j0 = 0; j0 < a.n; j0 += int64_t(RUN) * kThreads) {
    const int64_t jt = j0 + int64_t(threadIdx.x) * RUN;
    C c1[RUN], c2[RUN];
    unsigned keep = 0;
    int count = 0;
#pragma unroll
    for (int r = 0; r < RUN; ++r) {
      const int64_t j = jt + r;
      c1[r] = C(0);
      c2[r] = C(0);
      if (j < a.n) {
        const C lw = logw_s[j];
        if (lw > -inf && lw - m >= log_ratio) {
          const C w = fm_exp(lw - shift);
          c1[r] = w * cos_s[j] * a.nu[j];
          c2[r] = w * sr_s[j];
          keep |= 1u << r;
          ++count;
        }
        if (RUN == 1) ez += c1[r];
        if (RUN > 1) logw_s[j] = c1[r];  // 0 when dropped; summed below
      }
    }
    append_run(a.lists, i, jt, keep, count, c1, c2, scan_buf, &filled);
  }
  if (RUN > 1) {
    // E_z's terms added as with RUN = 1 (thread t: pairs t, t + kThreads, ...), so that the sum
    // does not depend on RUN.
    __syncthreads();
    for (int64_t j = threadIdx.x; j < a.n; j += kThreads) ez += logw_s[j];
  }
  ez = block_reduce(ez, red, SumOp());
  if (threadIdx.x == 0) {
    a.lists.count[i] = filled;
    a.out[i * a.width] = (T)(a.sp.L * (double)ez);
  }
}

template <typename C>
struct StringLayout {
  int64_t rc;  // query rows per chunk
  C* nu;
  C* partial;
  PairLists<C> lists;
};

template <typename T, typename C>
StringLayout<C> string_layout(Carver& cv, int64_t b, int64_t B, int64_t D, const Tuning& tune) {
  StringLayout<C> l;
  l.rc = rows_per_chunk(b, B, tune);
  l.nu = cv.take<C>(B);
  l.partial = cv.take<C>(max_partial_rows<T, true, C>(b, l.rc, B, D, tune) * B);
  l.lists.count = cv.take<int>(l.rc);
  l.lists.idx = cv.take<int>(l.rc * B);
  l.lists.c1 = cv.take<C>(l.rc * B);
  l.lists.c2 = cv.take<C>(l.rc * B);
  l.lists.n = B;
  return l;
}

template <typename T, typename C>
size_t string_workspace_bytes(int64_t b, int64_t B, int64_t D, const Tuning& tune) {
  Carver cv(nullptr);
  string_layout<T, C>(cv, b, B, D, tune);
  return cv.bytes();
}

template <typename T, typename C>
cudaError_t string_field_impl(const T* points, const T* quarks, const T* antiquarks, int64_t b,
                              int64_t B, const StringParams& p, bool stable, const NormParams& norm,
                              T* out, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                              const Tuning& tune) {
  const int64_t width = p.D + 1;
  ScopedWorkspace ws(workspace, workspace_bytes, string_workspace_bytes<T, C>(b, B, p.D, tune),
                     stream);
  IFM_CUDA_TRY(ws.status());
  Carver cv(align256(ws.get()));
  const StringLayout<C> l = string_layout<T, C>(cv, b, B, p.D, tune);

  auto norms_kernel = pair_inv_norms<T, C>;
  IFM_LAUNCH(norms_kernel, dim3((unsigned)B), dim3(kThreads), stream, quarks, antiquarks, width,
             p.L, l.nu);
  IFM_CUDA_TRY(cudaGetLastError());

  for (int64_t i0 = 0; i0 < b; i0 += l.rc) {
    const int64_t rows = min64(l.rc, b - i0);
    const T* pts = points + i0 * width;
    T* o = out + i0 * width;

    IFM_CUDA_TRY((two_pass<T, true, C>(pts, rows, quarks, antiquarks, B, width, p, l.partial,
                                       l.lists, o, tune, stream, [&](const DistancePlan& plan) {
                                         StringCoefArgs<T, C> ca;
                                         ca.points = pts;
                                         ca.partial = l.partial;
                                         ca.nu = l.nu;
                                         ca.rows = rows;
                                         ca.n = B;
                                         ca.width = width;
                                         ca.nslices = plan.nslices;
                                         ca.sp = p;
                                         ca.stable = stable;
                                         ca.lists = l.lists;
                                         ca.out = o;
                                         return with_coefficient_run(B, [&](auto run) {
                                           auto coef_kernel =
                                               string_coefficients<T, C, decltype(run)::value>;
                                           IFM_LAUNCH(coef_kernel, dim3((unsigned)rows),
                                                      dim3(kThreads), stream, ca);
                                           return cudaGetLastError();
                                         });
                                       })));
    if (norm.normalize) {
      IFM_CUDA_TRY(
          (launch_finalize_rows<T, C>(o, nullptr, o, rows, width, false, 0.0, norm, stream)));
    }
  }
  return cudaSuccess;
}

}  // namespace detail

template <typename T>
size_t string_field_workspace_bytes(int64_t b, int64_t B, int64_t D, const Tuning& tune) {
  return detail::with_compute_type<T>(
      tune, [&](auto c) { return detail::string_workspace_bytes<T, decltype(c)>(b, B, D, tune); });
}

template <typename T>
cudaError_t string_field(const T* points, const T* quarks, const T* antiquarks, int64_t b,
                         int64_t B, const StringParams& p, bool stable, const NormParams& norm,
                         T* out, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         const Tuning& tune) {
  if (b < 0 || B < 0 || p.D < 1 || B > 0x7fffffff) return cudaErrorInvalidValue;
  if (b == 0) return cudaSuccess;
  if (B == 0) return cudaMemsetAsync(out, 0, sizeof(T) * size_t(b * (p.D + 1)), stream);
  return detail::with_compute_type<T>(tune, [&](auto c) {
    return detail::string_field_impl<T, decltype(c)>(points, quarks, antiquarks, b, B, p, stable,
                                                     norm, out, workspace, workspace_bytes, stream,
                                                     tune);
  });
}

#define IFM_INSTANTIATE_STRING(T)                                                               \
  template size_t string_field_workspace_bytes<T>(int64_t, int64_t, int64_t, const Tuning&);    \
  template cudaError_t string_field<T>(const T*, const T*, const T*, int64_t, int64_t,          \
                                       const StringParams&, bool, const NormParams&, T*, void*, \
                                       size_t, cudaStream_t, const Tuning&);
IFM_INSTANTIATE_STRING(float)
IFM_INSTANTIATE_STRING(double)
#undef IFM_INSTANTIATE_STRING

}  // namespace cuda
}  // namespace ifm
