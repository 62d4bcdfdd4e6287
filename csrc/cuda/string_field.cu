// CUDA string (IFM) field, FIELDS.md §2 and §4; semantics of docs/DESIGN.md and field_math.h.
//
// Launches, per chunk of query rows (see common.cuh for steps 1, 3 and 4):
//   pair_inv_norms       once per call: nu_j = 1 / ||(L, C_j - A_j)||, grid B, one block per pair,
//                        fixed-tree double sum over D.
//   distance_tiles       r2_ij partial sums from rho = (x - base) - t * Delta (nearer plate).
//   string_coefficients  grid = rows, one block per query row: r2 = sum of the slices (double),
//                        string_pair() in double, row max of log w, then w = exp(log w - shift)
//                        (shift = row max in stable mode, 0 otherwise), c1 = w cos(alpha) nu_j,
//                        c2 = w sr, pairs with w < skip_ratio * max dropped, E_z = L * sum c1
//                        (double, fixed tree) written to column 0.
//   pair_sums            E_x = sum c2 rho + c1 Delta over the kept pairs, from differences.
//   finalize_rows        only when normalize: sqrt(D+1) E / (||E|| + eps), norm in double.
// No [b, B, D] buffer exists; the largest scratch is [S, rows, B] partial distances.
#include <cmath>

#include "common.cuh"
#include "finalize_rows.cuh"

namespace ifm {
namespace cuda {
namespace detail {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    pair_inv_norms(const T* quarks, const T* antiquarks, int64_t width, double L, double* nu) {
  IFM_SHARED(double, red, [kThreads]);
  const int64_t j = blockIdx.x;
  const T* a = quarks + j * width;
  const T* c = antiquarks + j * width;
  double s = 0.0;
  for (int64_t k = 1 + threadIdx.x; k < width; k += kThreads) {
    const double d = (double)c[k] - (double)a[k];
    s += d * d;
  }
  s = block_reduce(s, red, SumOp());
  if (threadIdx.x == 0) nu[j] = 1.0 / sqrt(L * L + s);
}

template <typename T>
struct StringCoefArgs {
  const T* points;   // [rows, width]
  double* partial;   // [nslices, rows, n]; slice 0 receives the sums
  const double* nu;  // [n]
  int64_t rows, n, width, nslices;
  StringParams sp;
  bool stable;
  PairLists lists;
  T* out;  // column 0 receives E_z
};

template <typename T>
__global__ void __launch_bounds__(kThreads) string_coefficients(StringCoefArgs<T> a) {
  IFM_SHARED(double, red, [kThreads]);
  IFM_SHARED(int, scan_buf, [kThreads]);
  const int64_t i = blockIdx.x;
  const StringQuery q = string_query((double)a.points[i * a.width], a.sp);

  // Phase 1: the row's largest log-weight (every pair; -inf when none contributes).
  double m = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
    const double r2 = fold_partials(a.partial, a.nslices, a.rows, a.n, i, j);
    const double lw = string_pair(q, r2).logw;
    m = lw > m ? lw : m;
  }
  m = block_reduce(m, red, MaxOp());

  // Phase 2: coefficients of the kept pairs, compacted in pair order.
  const double log_ratio = log(skip_ratio(sizeof(T) == 8));
  const double shift = (a.stable && m > -INFINITY) ? m : 0.0;
  double ez = 0.0;
  int filled = 0;
  for (int64_t j0 = 0; j0 < a.n; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    bool keep = false;
    double c1 = 0.0, c2 = 0.0;
    if (j < a.n) {
      const StringPair pr = string_pair(q, a.partial[i * a.n + j]);
      if (pr.logw > -INFINITY && pr.logw - m >= log_ratio) {
        const double w = exp(pr.logw - shift);
        c1 = w * pr.cos_a * a.nu[j];
        c2 = w * pr.sr;
        ez += c1;
        keep = true;
      }
    }
    append_kept(a.lists, i, j, keep, c1, c2, scan_buf, &filled);
  }
  ez = block_reduce(ez, red, SumOp());
  if (threadIdx.x == 0) {
    a.lists.count[i] = filled;
    a.out[i * a.width] = (T)(a.sp.L * ez);
  }
}

template <typename T>
struct StringLayout {
  int64_t rc;  // query rows per chunk
  double* nu;
  double* partial;
  PairLists lists;
};

template <typename T>
StringLayout<T> string_layout(Carver& cv, int64_t b, int64_t B, int64_t D, const Tuning& tune) {
  StringLayout<T> l;
  l.rc = rows_per_chunk(b, B, tune);
  l.nu = cv.take<double>(B);
  l.partial = cv.take<double>(max_partial_rows<T, true>(b, l.rc, B, D, tune) * B);
  l.lists.count = cv.take<int>(l.rc);
  l.lists.idx = cv.take<int>(l.rc * B);
  l.lists.c1 = cv.take<double>(l.rc * B);
  l.lists.c2 = cv.take<double>(l.rc * B);
  l.lists.n = B;
  return l;
}

}  // namespace detail

template <typename T>
size_t string_field_workspace_bytes(int64_t b, int64_t B, int64_t D, const Tuning& tune) {
  detail::Carver cv(nullptr);
  detail::string_layout<T>(cv, b, B, D, tune);
  return cv.bytes();
}

template <typename T>
cudaError_t string_field(const T* points, const T* quarks, const T* antiquarks, int64_t b,
                         int64_t B, const StringParams& p, bool stable, const NormParams& norm,
                         T* out, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         const Tuning& tune) {
  using namespace detail;
  if (b < 0 || B < 0 || p.D < 1 || B > 0x7fffffff) return cudaErrorInvalidValue;
  if (b == 0) return cudaSuccess;
  const int64_t width = p.D + 1;
  if (B == 0) return cudaMemsetAsync(out, 0, sizeof(T) * size_t(b * width), stream);

  ScopedWorkspace ws(workspace, workspace_bytes, string_field_workspace_bytes<T>(b, B, p.D, tune),
                     stream);
  IFM_CUDA_TRY(ws.status());
  Carver cv(align256(ws.get()));
  const StringLayout<T> l = string_layout<T>(cv, b, B, p.D, tune);

  auto norms_kernel = pair_inv_norms<T>;
  IFM_LAUNCH(norms_kernel, dim3((unsigned)B), dim3(kThreads), stream, quarks, antiquarks, width,
             p.L, l.nu);
  IFM_CUDA_TRY(cudaGetLastError());

  for (int64_t i0 = 0; i0 < b; i0 += l.rc) {
    const int64_t rows = min64(l.rc, b - i0);
    const T* pts = points + i0 * width;
    T* o = out + i0 * width;

    IFM_CUDA_TRY((two_pass<T, true>(pts, rows, quarks, antiquarks, B, width, p, l.partial, l.lists,
                                    o, tune, stream, [&](const DistancePlan& plan) {
                                      StringCoefArgs<T> ca;
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
                                      auto coef_kernel = string_coefficients<T>;
                                      IFM_LAUNCH(coef_kernel, dim3((unsigned)rows), dim3(kThreads),
                                                 stream, ca);
                                      return cudaGetLastError();
                                    })));
    if (norm.normalize) {
      IFM_CUDA_TRY(launch_finalize_rows<T>(o, nullptr, o, rows, width, false, 0.0, norm, stream));
    }
  }
  return cudaSuccess;
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
