// Internal pieces shared by csrc/cuda/string_field.cu and csrc/cuda/coulomb_field.cu.
//
// Both fields are computed in the same four steps (docs/DESIGN.md, "Numerics every kernel
// follows"); this header holds the two O(b * B * D) passes, which differ only in what they read:
//
//   1. distance_tiles  r2 / d2 for every (query, pair or charge) from direct differences in the
//                      data precision (sums of 16-32 columns, folded into a double accumulator),
//                      as partial sums over S slices of the columns.
//   2. (per field)     one block per query row: the S partials summed in a fixed order (double),
//                      the coefficients in double through field_math.h, the row maximum, and a
//                      stable compaction of the pairs whose weight is >= skip_ratio of that max.
//   3. pair_sums       one block per (query row, column chunk): the weighted sum over the
//                      row's kept pairs, in list (= pair index) order, from differences, in
//                      double (the inputs are exact in double, so near-plate offsets keep
//                      every digit), rounded once to the data precision.
//   4. finalize_rows   per-plate / final normalisation (a host launcher defined once, in
//                      coulomb_field.cu, and used by both fields).
//
// Nothing here includes a torch header. Every kernel uses kThreads threads per block, only
// shared-memory block reductions (no warp intrinsics, no atomics) and block-uniform control flow
// around __syncthreads, so the same source also runs under the CPU emulation used by the tests
// (tests/cuda_emu/cuda_emu.h, compiled with -DIFM_CUDA_EMULATION).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.cuh"

#if defined(IFM_CUDA_EMULATION)
#define IFM_LAUNCH(kernel, grid, block, stream, ...) \
  ::ifm_emu::launch(kernel, grid, block, __VA_ARGS__)
#else
// `kernel` is a pointer to a __global__ function (template instantiations contain commas).
#define IFM_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

// Shared memory: `IFM_SHARED(float, xs, [32][65]);` declares `__shared__ float xs[32][65];`.
// Under the emulation it is a tracked array (race, uninitialised-read and bounds checks).
#if defined(IFM_CUDA_EMULATION)
#define IFM_SHARED(type, name, dims) IFM_EMU_SHARED(type, name, dims)
#else
#define IFM_SHARED(type, name, dims) __shared__ type name dims
#endif

// Returns the error of a CUDA call or launch from the enclosing function.
#define IFM_CUDA_TRY(expr)                        \
  do {                                            \
    const cudaError_t ifm_err_ = (expr);          \
    if (ifm_err_ != cudaSuccess) return ifm_err_; \
  } while (0)

namespace ifm {
namespace cuda {
namespace detail {

constexpr int kThreads = 256;  // threads per block, every kernel (a multiple of 32, <= 1024)
constexpr int kTile = 64;      // distance pass: queries x pairs per block tile (64 x 64)
constexpr int kSub = 4;        // distance pass: per-thread register tile (4 x 4)
constexpr int kSide = kTile / kSub;  // 16 x 16 threads
static_assert(kSide * kSide == kThreads, "distance tile must use every thread once");

// Columns staged in shared memory per step of the distance pass: 3 tiles of [KC][kTile + 1]
// elements = 24,960 bytes for float (KC = 32) and for double (KC = 16).
template <typename T>
struct ChunkCols {
  static constexpr int value = sizeof(T) == 4 ? 32 : 16;
};

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------------------
// Block-wide reductions in shared memory with a fixed tree (deterministic): `red` holds
// kThreads doubles. Every thread of the block must call them (they synchronise).
// ------------------------------------------------------------------------------------------
struct SumOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return a > b ? a : b; }
};

template <typename Op, typename Buf>
__device__ __forceinline__ double block_reduce(double v, Buf& red, Op op) {
  const int tid = threadIdx.x;
  red[tid] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] = op(red[tid], red[tid + s]);
    __syncthreads();
  }
  const double r = red[0];
  __syncthreads();
  return r;
}

// Exclusive prefix sum of one 0/1 flag per thread (Hillis-Steele in shared memory, `buf` holds
// kThreads ints); *total receives the block's sum. Used for the ordered compaction of kept pairs.
template <typename Buf>
__device__ __forceinline__ int block_exclusive_scan(int flag, Buf& buf, int* total) {
  const int tid = threadIdx.x;
  buf[tid] = flag;
  __syncthreads();
  for (int off = 1; off < kThreads; off <<= 1) {
    const int add = tid >= off ? buf[tid - off] : 0;
    __syncthreads();
    buf[tid] += add;
    __syncthreads();
  }
  const int inclusive = buf[tid];
  *total = buf[kThreads - 1];
  __syncthreads();
  return inclusive - flag;
}

// Per-row lists of kept pairs, written by the coefficient kernels: row i keeps count[i] pairs,
// their indices idx[i * n + p] (ascending) and double coefficients c1/c2 at the same positions.
// String: c1 = w cos(alpha) nu_j, c2 = w sr. Coulomb: c1 = softmax coefficient (c2 unused).
struct PairLists {
  int* count;
  int* idx;
  double* c1;
  double* c2;
  int64_t n;  // row stride: pairs (or charges) of the plate
};

// ------------------------------------------------------------------------------------------
// Step 1: partial squared distances.
//
// Work mapping: a 1-D grid of tilesN * tilesQ * nslices blocks; block -> (64 queries, 64 pairs,
// one slice of the columns). The block stages [KC columns x 64 rows] of the queries and of the
// pair rows in shared memory (transposed, padded to 65 to avoid bank conflicts on the transposed
// store) and each of the 16 x 16 threads accumulates a 4 x 4 register tile of squared distances
// for queries ty + 16 m and pairs tx + 16 m' (strided so that shared-memory reads are
// conflict-free/broadcast and the partial stores are coalesced over tx).
//
// String (STRING = true): y0 = quarks A, y1 = antiquarks C, columns 1..D, and
//   rho = (x - base) - t * (C - A) with base/t from the nearer plate (field_math.h string_query);
// Coulomb: y0 = the plate's charges, all D + 1 columns, plain differences x - y.
// Each thread sums one staged chunk (KC columns) in the data precision and folds it into a
// double accumulator, so float32 rounding grows with KC, not with D (the logits amplify the
// relative error of d2 by DIM / 2). partial[(s * rows + i) * n + j] receives slice s's sum in
// double; step 2 adds the slices in order s.
// ------------------------------------------------------------------------------------------
// Arguments of steps 1 and 3 (one struct: both passes read the same rows and columns).
template <typename T>
struct PassArgs {
  const T* points;   // [rows, width] (this chunk of queries)
  const T* y0;       // quarks / charges [n, width]
  const T* y1;       // antiquarks [n, width] (string) or nullptr
  int64_t rows, n, width;
  int64_t col0, ncols;  // columns col0 .. col0 + ncols - 1 are read (and written by step 3)
  StringParams sp;   // string only
  // step 1
  int64_t cols_per_slice, nslices;
  double* partial;   // [nslices, rows, n]
  // step 3
  int lanes_log2;
  PairLists lists;
  T* out;            // [rows, width]
};

struct DistancePlan {
  int64_t nslices;
  int64_t cols_per_slice;
  int64_t blocks;
};

template <typename T>
inline DistancePlan plan_distance(int64_t rows, int64_t n, int64_t ncols, const Tuning& tune) {
  constexpr int KC = ChunkCols<T>::value;
  const int64_t tiles = ceil_div(rows, kTile) * ceil_div(n, kTile);
  const int64_t chunks = ceil_div(ncols, KC);
  // Split D only while every slice keeps >= 4 staged chunks (>= 64-128 columns of work).
  int64_t s = ceil_div(max64(tune.target_blocks, 1), tiles);
  s = max64(1, min64(s, chunks / 4));
  DistancePlan plan;
  plan.cols_per_slice = ceil_div(chunks, s) * KC;
  plan.nslices = ceil_div(ncols, plan.cols_per_slice);
  plan.blocks = tiles * plan.nslices;
  return plan;
}

// Float tiles are held to <= 128 registers (two blocks, 16 warps per SM); the double tile (the
// oracle precision) needs ~130-160 and runs one block per SM rather than spill.
template <typename T, bool STRING>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 2 : 1) distance_tiles(PassArgs<T> a) {
  constexpr int KC = ChunkCols<T>::value;
  IFM_SHARED(T, xs, [KC][kTile + 1]);
  IFM_SHARED(T, ys0, [KC][kTile + 1]);
  IFM_SHARED(T, ys1, [STRING ? KC : 1][kTile + 1]);
  IFM_SHARED(T, ts, [kTile]);
  IFM_SHARED(int, fas, [kTile]);

  const int64_t tiles_n = ceil_div(a.n, kTile);
  const int64_t tiles_q = ceil_div(a.rows, kTile);
  int64_t blk = blockIdx.x;
  const int64_t j0 = (blk % tiles_n) * kTile;
  blk /= tiles_n;
  const int64_t q0 = (blk % tiles_q) * kTile;
  const int64_t slice = blk / tiles_q;
  const int64_t c_begin = slice * a.cols_per_slice;
  const int64_t c_end = min64(a.ncols, c_begin + a.cols_per_slice);

  const int tid = threadIdx.x;
  const int tx = tid % kSide;
  const int ty = tid / kSide;
  if (STRING && tid < kTile) {
    const int64_t i = q0 + tid;
    const StringQuery q = string_query(i < a.rows ? (double)a.points[i * a.width] : 0.0, a.sp);
    ts[tid] = (T)q.t;
    fas[tid] = q.from_antiquark ? 1 : 0;
  }
  __syncthreads();
  // Per-query offset parameters of this thread's 4 queries, kept in registers.
  T tq[kSub];
  bool fq[kSub];
#pragma unroll
  for (int m = 0; m < kSub; ++m) {
    tq[m] = STRING ? ts[ty + kSide * m] : T(0);
    fq[m] = STRING ? fas[ty + kSide * m] != 0 : false;
  }

  double acc[kSub][kSub];
#pragma unroll
  for (int mq = 0; mq < kSub; ++mq)
#pragma unroll
    for (int mp = 0; mp < kSub; ++mp) acc[mq][mp] = 0.0;

  for (int64_t c = c_begin; c < c_end; c += KC) {
    // Stage the tiles: consecutive threads read consecutive columns of one row (coalesced).
    for (int e = tid; e < kTile * KC; e += kThreads) {
      const int row = e / KC;
      const int kk = e % KC;
      const bool col_ok = c + kk < c_end;
      const int64_t gcol = a.col0 + c + kk;
      const int64_t qi = q0 + row;
      const int64_t pj = j0 + row;
      xs[kk][row] = (col_ok && qi < a.rows) ? a.points[qi * a.width + gcol] : T(0);
      ys0[kk][row] = (col_ok && pj < a.n) ? a.y0[pj * a.width + gcol] : T(0);
      if (STRING) ys1[kk][row] = (col_ok && pj < a.n) ? a.y1[pj * a.width + gcol] : T(0);
    }
    __syncthreads();
    T part[kSub][kSub];
#pragma unroll
    for (int mq = 0; mq < kSub; ++mq)
#pragma unroll
      for (int mp = 0; mp < kSub; ++mp) part[mq][mp] = T(0);
#pragma unroll 4
    for (int kk = 0; kk < KC; ++kk) {
      T xv[kSub], av[kSub], cv[kSub], dv[kSub];
#pragma unroll
      for (int m = 0; m < kSub; ++m) {
        xv[m] = xs[kk][ty + kSide * m];
        av[m] = ys0[kk][tx + kSide * m];
        if (STRING) {
          cv[m] = ys1[kk][tx + kSide * m];
          dv[m] = cv[m] - av[m];
        }
      }
#pragma unroll
      for (int mq = 0; mq < kSub; ++mq) {
#pragma unroll
        for (int mp = 0; mp < kSub; ++mp) {
          T r;
          if (STRING) {
            const T base = fq[mq] ? cv[mp] : av[mp];
            r = (xv[mq] - base) - tq[mq] * dv[mp];
          } else {
            r = xv[mq] - av[mp];
          }
          part[mq][mp] += r * r;
        }
      }
    }
#pragma unroll
    for (int mq = 0; mq < kSub; ++mq)
#pragma unroll
      for (int mp = 0; mp < kSub; ++mp) acc[mq][mp] += (double)part[mq][mp];
    __syncthreads();
  }

#pragma unroll
  for (int mq = 0; mq < kSub; ++mq) {
    const int64_t i = q0 + ty + kSide * mq;
#pragma unroll
    for (int mp = 0; mp < kSub; ++mp) {
      const int64_t j = j0 + tx + kSide * mp;
      if (i < a.rows && j < a.n) a.partial[(slice * a.rows + i) * a.n + j] = acc[mq][mp];
    }
  }
}

// Sum of the S partial distances of (row i, pair j), in slice order.
__device__ __forceinline__ double summed_partials(const double* partial, int64_t nslices,
                                                  int64_t rows, int64_t n, int64_t i, int64_t j) {
  double r2 = 0.0;
  for (int64_t s = 0; s < nslices; ++s) r2 += partial[(s * rows + i) * n + j];
  return r2;
}

// Ordered compaction of one block-wide chunk of pairs into row i's list (see PairLists).
// `keep` is the calling thread's flag for pair j; *filled is the row's list length so far
// (identical in every thread). Every thread of the block must call it.
template <typename Buf>
__device__ __forceinline__ void append_kept(const PairLists& lists, int64_t i, int64_t j,
                                            bool keep, double c1, double c2, Buf& scan_buf,
                                            int* filled) {
  int total = 0;
  const int pos = *filled + block_exclusive_scan(keep ? 1 : 0, scan_buf, &total);
  if (keep) {
    const int64_t at = i * lists.n + pos;
    lists.idx[at] = (int)j;
    lists.c1[at] = c1;
    if (lists.c2 != nullptr) lists.c2[at] = c2;
  }
  *filled += total;
}

// ------------------------------------------------------------------------------------------
// Step 3: weighted sums over each row's kept pairs.
//
// Work mapping: a 1-D grid of rows * ceil(ncols / KW) blocks; block -> (query row, KW
// consecutive columns). The kThreads threads form `lanes` x KW (KW = min(256, next power of two
// >= ncols), lanes = 256 / KW): lane l takes the row's kept pairs l, l + lanes, ... in list order
// and the lanes' partial sums are added with a fixed tree, so small D (toy, D = 2) still uses
// the whole block and large D reads each pair row coalesced. The row's list (indices and
// coefficients) is read through L1 as a broadcast.
//
// String: out[i, 1 + k] = sum_p c2_p rho_pk + c1_p Delta_pk; Coulomb: out[i, k] =
// sum_p c1_p (y_pk - x_ik).
// ------------------------------------------------------------------------------------------

inline int lanes_log2_for(int64_t ncols) {
  int kw_log2 = 0;
  while ((int64_t(1) << kw_log2) < ncols && (1 << kw_log2) < kThreads) ++kw_log2;
  int threads_log2 = 0;
  while ((1 << threads_log2) < kThreads) ++threads_log2;
  return threads_log2 - kw_log2;
}

template <typename T, bool STRING>
__global__ void __launch_bounds__(kThreads) pair_sums(PassArgs<T> a) {
  IFM_SHARED(double, red, [kThreads]);
  const int lanes = 1 << a.lanes_log2;
  const int kw = kThreads >> a.lanes_log2;
  const int64_t nchunks = ceil_div(a.ncols, kw);
  const int64_t i = blockIdx.x / nchunks;
  const int64_t chunk = blockIdx.x % nchunks;
  const int tid = threadIdx.x;
  const int lane = tid / kw;
  const int cw = tid % kw;
  const int64_t k = chunk * kw + cw;
  const bool valid = k < a.ncols;
  const int64_t gcol = a.col0 + k;
  const T* prow = a.points + i * a.width;
  const double x = valid ? (double)prow[gcol] : 0.0;

  double t = 0.0;
  bool from_c = false;
  if (STRING) {
    const StringQuery q = string_query((double)prow[0], a.sp);
    t = q.t;
    from_c = q.from_antiquark;
  }

  double acc = 0.0;
  if (valid) {
    const int cnt = a.lists.count[i];
    const int64_t off = i * a.lists.n;
    for (int p = lane; p < cnt; p += lanes) {
      const int64_t j = a.lists.idx[off + p];
      const double yv = (double)a.y0[j * a.width + gcol];
      if (STRING) {
        const double cv = (double)a.y1[j * a.width + gcol];
        const double delta = cv - yv;
        const double rho = (x - (from_c ? cv : yv)) - t * delta;
        acc += a.lists.c2[off + p] * rho + a.lists.c1[off + p] * delta;
      } else {
        acc += a.lists.c1[off + p] * (yv - x);
      }
    }
  }
  red[tid] = acc;
  __syncthreads();
  for (int s = lanes / 2; s > 0; s >>= 1) {
    if (lane < s) red[tid] += red[tid + s * kw];
    __syncthreads();
  }
  if (lane == 0 && valid) a.out[i * a.width + gcol] = (T)red[cw];
}

template <typename T, bool STRING>
cudaError_t launch_pair_sums(const PassArgs<T>& args, cudaStream_t stream) {
  const int64_t kw = kThreads >> args.lanes_log2;
  const int64_t blocks = args.rows * ceil_div(args.ncols, kw);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  auto kernel = pair_sums<T, STRING>;
  IFM_LAUNCH(kernel, dim3((unsigned)blocks), dim3(kThreads), stream, args);
  return cudaGetLastError();
}

template <typename T, bool STRING>
cudaError_t launch_distance(const PassArgs<T>& args, const DistancePlan& plan,
                            cudaStream_t stream) {
  if (plan.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  auto kernel = distance_tiles<T, STRING>;
  IFM_LAUNCH(kernel, dim3((unsigned)plan.blocks), dim3(kThreads), stream, args);
  return cudaGetLastError();
}

// Steps 1-3 for one chunk of query rows against one set of pairs (string: y0 = quarks,
// y1 = antiquarks, columns 1..D) or charges (Coulomb: y1 = nullptr, columns 0..D):
// distance_tiles, then `launch_coefficients(plan)` (the field's step 2, which fills `lists` from
// `partial`), then pair_sums into out[:, col0:].
template <typename T, bool STRING, typename CoefficientLaunch>
cudaError_t two_pass(const T* points, int64_t rows, const T* y0, const T* y1, int64_t n,
                     int64_t width, const StringParams& sp, double* partial,
                     const PairLists& lists, T* out, const Tuning& tune, cudaStream_t stream,
                     CoefficientLaunch&& launch_coefficients) {
  PassArgs<T> a;
  a.points = points;
  a.y0 = y0;
  a.y1 = y1;
  a.rows = rows;
  a.n = n;
  a.width = width;
  a.col0 = STRING ? 1 : 0;
  a.ncols = width - a.col0;
  a.sp = sp;
  const DistancePlan plan = plan_distance<T>(rows, n, a.ncols, tune);
  a.cols_per_slice = plan.cols_per_slice;
  a.nslices = plan.nslices;
  a.partial = partial;
  a.lanes_log2 = lanes_log2_for(a.ncols);
  a.lists = lists;
  a.out = out;
  IFM_CUDA_TRY((launch_distance<T, STRING>(a, plan, stream)));
  IFM_CUDA_TRY(launch_coefficients(plan));
  return launch_pair_sums<T, STRING>(a, stream);
}

// ------------------------------------------------------------------------------------------
// Step 4 (host launcher, defined in coulomb_field.cu): for each row i of `rows`,
//   v = en ? fn * en_i - fp * ep_i : fp * ep_i,  fp/fn = plate_normalize ?
//       sqrt(width) / (||e_i|| + plate_gamma) : 1,
// then out_i = norm.normalize ? norm.scale * v / (||v|| + norm.eps) : v. ep may alias out.
// One block per row; norms in double with a fixed tree.
// ------------------------------------------------------------------------------------------
template <typename T>
cudaError_t launch_finalize_rows(const T* ep, const T* en, T* out, int64_t rows, int64_t width,
                                 bool plate_normalize, double plate_gamma,
                                 const NormParams& norm, cudaStream_t stream);

// ------------------------------------------------------------------------------------------
// Workspace: carve aligned sub-buffers out of one allocation. With a null base it only counts
// bytes, so one layout function serves both *_workspace_bytes and the launcher.
// ------------------------------------------------------------------------------------------
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename U>
  U* take(int64_t count) {
    off_ = (off_ + 255) & ~size_t(255);
    U* p = base_ ? reinterpret_cast<U*>(base_ + off_) : nullptr;
    off_ += size_t(count > 0 ? count : 0) * sizeof(U);
    return p;
  }
  size_t bytes() const { return off_ + 255; }  // slack for aligning an unaligned base

 private:
  char* base_;
  size_t off_ = 0;
};

inline char* align256(void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<char*>((u + 255) & ~uintptr_t(255));
}

// Rows of queries processed per chunk (bounds the O(rows * n) workspace).
inline int64_t rows_per_chunk(int64_t b, int64_t n, const Tuning& tune) {
  return max64(1, min64(b, max64(tune.max_pairs_per_chunk, 1) / max64(n, 1)));
}

// Largest S * rows over the chunk sizes used (chunks of rc rows and the last, shorter one).
template <typename T>
inline int64_t max_partial_rows(int64_t b, int64_t rc, int64_t n, int64_t ncols,
                                const Tuning& tune) {
  int64_t best = plan_distance<T>(rc, n, ncols, tune).nslices * rc;
  const int64_t tail = b % rc;
  if (tail > 0) best = max64(best, plan_distance<T>(tail, n, ncols, tune).nslices * tail);
  return best;
}

// The caller's workspace, or a stream-ordered allocation released at scope exit.
class ScopedWorkspace {
 public:
  ScopedWorkspace(void* given, size_t given_bytes, size_t need, cudaStream_t stream)
      : stream_(stream) {
    if (given != nullptr) {
      ptr_ = given;
      status_ = given_bytes >= need ? cudaSuccess : cudaErrorInvalidValue;
    } else {
      status_ = cudaMallocAsync(&ptr_, need, stream);
      owned_ = status_ == cudaSuccess;
    }
  }
  ~ScopedWorkspace() {
    if (owned_) cudaFreeAsync(ptr_, stream_);
  }
  ScopedWorkspace(const ScopedWorkspace&) = delete;
  ScopedWorkspace& operator=(const ScopedWorkspace&) = delete;
  cudaError_t status() const { return status_; }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  cudaError_t status_ = cudaSuccess;
  bool owned_ = false;
};


}  // namespace detail
}  // namespace cuda
}  // namespace ifm
