// Internal pieces shared by csrc/cuda/string_field.cu and csrc/cuda/coulomb_field.cu.
//
// Both fields are computed in the same four steps (docs/DESIGN.md, "Numerics every kernel
// follows"); this header holds the two O(b * B * D) passes, which differ only in what they read:
//
//   1. distance_tiles  r2 / d2 for every (query, pair or charge) from direct differences in the
//                      data precision (sums of 16-32 columns, folded into an accumulator of the
//                      compute type C), as partial sums over S slices of the columns.
//   2. (per field)     one block per query row: the S partials summed in a fixed order (C),
//                      the coefficients in C through field_math.h (each once per pair), the
//                      row maximum, and a stable compaction of the pairs whose weight is >=
//                      skip_ratio of that max (append_run).
//   3. pair_sums       the weighted sum over each row's kept pairs, in list (= pair index)
//                      order, from differences, in C (in double the float inputs are exact, so
//                      near-plate offsets keep every digit; in float the nearer-plate form keeps
//                      them, as in step 1), rounded once to the data precision:
//                      pair_sums_tiled (4 query rows x 256 columns per block, each kept pair row
//                      read once per row tile) when D >= 128, else pair_sums (one block per query
//                      row and column chunk, lanes x columns).
//   4. finalize_rows   per-plate / final normalisation (finalize_rows.cuh / .cu, used by both
//                      fields).
//
// The compute type C of steps 1-4 is double (float64 data, and float32 data on GPUs with fast
// FP64: the reference path), or float: the float32 coefficient path of float32 data on GPUs with
// slow FP64 (Tuning::coef_f32; docs/DESIGN.md, "CUDA kernels"), whose per-pair and per-element
// loops contain no FP64 instruction. Per-row and per-launch terms (string_query, norms'
// factors, the Coulomb log-normalisers) stay double on both.
//
// Nothing here includes a torch header. Every kernel uses kThreads threads per block, only
// shared-memory block reductions (no warp intrinsics, no atomics) and block-uniform control flow
// around __syncthreads, so the same source also runs under the CPU emulation used by the tests
// (tests/cuda_emu/cuda_emu.h, compiled with -DIFM_CUDA_EMULATION).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels.cuh"

#if defined(IFM_CUDA_EMULATION)
#define IFM_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), ::ifm_emu::launch(kernel, grid, block, __VA_ARGS__))
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

constexpr int kThreads = 256;        // threads per block, every kernel (a multiple of 32, <= 1024)
constexpr int kTile = 64;            // distance pass: queries x pairs per block tile (64 x 64)
constexpr int kSub = 4;              // distance pass: per-thread register tile (4 x 4)
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
__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

// Bitwise select of one of two values by an all-ones / all-zeros mask (one LOP3 per 32 bits on
// a GPU): mask ? c : a without a branch.
template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using type = uint32_t;
};
template <>
struct Bits<double> {
  using type = uint64_t;
};

// a * b + c rounded once (FFMA / DFMA; the emulation calls the C library's fused operation).
template <typename T>
__host__ __device__ __forceinline__ T fmadd(T a, T b, T c) {
#if defined(IFM_CUDA_EMULATION)
  return std::fma(a, b, c);
#else
  return fma(a, b, c);
#endif
}

template <typename T>
__host__ __device__ __forceinline__ T bit_select(typename Bits<T>::type mask, T c, T a) {
  typename Bits<T>::type ub, cb;
  memcpy(&ub, &a, sizeof(T));
  memcpy(&cb, &c, sizeof(T));
  ub = (ub & ~mask) | (cb & mask);
  T out;
  memcpy(&out, &ub, sizeof(T));
  return out;
}

// A running sum (of the distance pass's non-negative chunk and slice partials) in the compute
// type: double adds plainly (the reference path); float is compensated (Kahan), so that a sum of
// n partials keeps its error near 2 eps instead of growing ~n eps / 2: at DIM = 3072 the
// logits amplify d2's relative error by DIM / 2, and a plain float sum of 96 chunk sums loses
// ~1e-3 in the logits' differences (more than the float32 reference's own error).
template <typename C>
struct RunningSum;
template <>
struct RunningSum<double> {
  double s;
  __host__ __device__ __forceinline__ RunningSum() : s(0.0) {}
  __host__ __device__ __forceinline__ explicit RunningSum(double v) : s(v) {}
  __host__ __device__ __forceinline__ void add(double v) { s += v; }
  __host__ __device__ __forceinline__ double value() const { return s; }
};
template <>
struct RunningSum<float> {
  float s, c;  // the sum and the (negated) low part it has lost
  __host__ __device__ __forceinline__ RunningSum() : s(0.0f), c(0.0f) {}
  __host__ __device__ __forceinline__ explicit RunningSum(float v) : s(v), c(0.0f) {}
  __host__ __device__ __forceinline__ void add(float v) {
    const float y = v - c;
    const float t = s + y;
    c = (t - s) - y;
    s = t;
  }
  __host__ __device__ __forceinline__ float value() const { return s - c; }
};

// ------------------------------------------------------------------------------------------
// Block-wide reductions in shared memory with a fixed tree (deterministic): `red` holds
// kThreads values of v's type. Every thread of the block must call them (they synchronise).
// ------------------------------------------------------------------------------------------
struct SumOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a + b;
  }
};
struct MaxOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a > b ? a : b;
  }
};
struct MinOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a < b ? a : b;
  }
};

template <typename Op, typename Buf, typename V>
__device__ __forceinline__ V block_reduce(V v, Buf& red, Op op) {
  const int tid = threadIdx.x;
  red[tid] = v;
  __syncthreads();
  // not unrolled: the unrolled tree keeps one hoisted `tid < s` predicate per level live across
  // the callers' loops (ptxas spilled one in the float coefficient kernel)
#pragma unroll 1
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] = op(V(red[tid]), V(red[tid + s]));
    __syncthreads();
  }
  const V r = red[0];
  __syncthreads();
  return r;
}

// Two reductions over one tree (one set of barriers): returns (op_a over a, op_b over b).
template <typename OpA, typename OpB, typename Buf, typename V>
__device__ __forceinline__ void block_reduce2(V* a, V* b, Buf& red_a, Buf& red_b, OpA op_a,
                                              OpB op_b) {
  const int tid = threadIdx.x;
  red_a[tid] = *a;
  red_b[tid] = *b;
  __syncthreads();
#pragma unroll 1
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) {
      red_a[tid] = op_a(V(red_a[tid]), V(red_a[tid + s]));
      red_b[tid] = op_b(V(red_b[tid]), V(red_b[tid + s]));
    }
    __syncthreads();
  }
  *a = red_a[0];
  *b = red_b[0];
  __syncthreads();
}

// Exclusive prefix sum of one count per thread (Hillis-Steele in shared memory, `buf` holds
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
// their indices idx[i * n + p] (ascending) and coefficients c1/c2 (compute type C) at the same
// positions. String: c1 = w cos(alpha) nu_j, c2 = w sr. Coulomb: c1 = softmax coefficient (c2
// unused).
template <typename C>
struct PairLists {
  int* count;
  int* idx;
  C* c1;
  C* c2;
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
// Each thread sums one staged chunk (KC columns) in the data precision and folds it into an
// accumulator of the compute type C: in double, float32 rounding grows with KC, not with D (the
// logits amplify the relative error of d2 by DIM / 2); in float (the float32 coefficient path)
// the two-level sum grows with KC + D / KC. partial[(s * rows + i) * n + j] receives slice s's
// sum in C; step 2 adds the slices in order s.
// ------------------------------------------------------------------------------------------
// Arguments of steps 1 and 3 (one struct: both passes read the same rows and columns).
template <typename T, typename C>
struct PassArgs {
  const T* points;  // [rows, width] (this chunk of queries)
  const T* y0;      // quarks / charges [n, width]
  const T* y1;      // antiquarks [n, width] (string) or nullptr
  int64_t rows, n, width;
  int64_t col0, ncols;  // columns col0 .. col0 + ncols - 1 are read (and written by step 3)
  StringParams sp;      // string only
  // step 1
  int64_t cols_per_slice, nslices;
  C* partial;  // [nslices, rows, n]
  // step 3
  int lanes_log2;
  PairLists<C> lists;
  T* out;  // [rows, width]
};

struct DistancePlan {
  int64_t nslices;
  int64_t cols_per_slice;
  int64_t blocks;
};

// Split of the columns into slices. The work is tiles x chunks staged chunks; a plan with
// `cps` chunks per slice runs tiles x ceil(chunks / cps) blocks, and the busiest SM of a part
// with `sms` SMs does ceil(blocks / sms) x cps chunks. The plan takes the cps whose worse ratio
// to the even share (tiles x chunks / sms) over the 132-SM (H100) and 108-SM (A100) parts is
// smallest (ties: the larger cps, fewer partial sums), among the plans with at most
// tune.target_blocks blocks and at most max(input bytes / 4, 16 MiB) of partial sums (written
// once and read once by step 2, which folds them into slice 0; 16 MiB stays in the L2 of
// both). The plan depends on the shapes, the tuning and the compute type C (the partial sums'
// size) only, never on the device, so results are the same on every GPU that takes the same
// coefficient path.
template <typename T, bool STRING, typename C>
inline DistancePlan plan_distance(int64_t rows, int64_t n, int64_t ncols, const Tuning& tune) {
  constexpr int KC = ChunkCols<T>::value;
  const int64_t tiles = ceil_div(rows, kTile) * ceil_div(n, kTile);
  const int64_t chunks = ceil_div(ncols, KC);
  const double input_bytes = double(rows + (STRING ? 2 : 1) * n) * double(ncols) * sizeof(T);
  const double slice_bytes = double(rows) * double(n) * sizeof(C);
  const double max_partial =
      0.25 * input_bytes > double(1 << 24) ? 0.25 * input_bytes : double(1 << 24);
  const int64_t sms[2] = {132, 108};
  int64_t best_cps = chunks;
  double best = 0.0;
  for (int64_t cps = chunks; cps >= 1; --cps) {
    const int64_t slices = ceil_div(chunks, cps);
    if (cps < chunks && ceil_div(chunks, cps + 1) == slices) continue;  // same slice count
    const int64_t blocks = tiles * slices;
    if (slices > 1 &&
        (blocks > max64(tune.target_blocks, 1) || double(slices) * slice_bytes > max_partial)) {
      break;  // more slices only add blocks and partial sums
    }
    double worst = 0.0;
    for (int64_t m : sms) {
      const double even = double(tiles * chunks) / double(m);
      const double r = double(ceil_div(blocks, m) * cps) / even;
      worst = r > worst ? r : worst;
    }
    if (cps == chunks || worst < best * 0.999) {
      best = worst;
      best_cps = cps;
    }
  }
  DistancePlan plan;
  plan.cols_per_slice = best_cps * KC;
  plan.nslices = ceil_div(ncols, plan.cols_per_slice);
  plan.blocks = tiles * plan.nslices;
  return plan;
}

// Float tiles are held to <= 128 registers (two blocks, 16 warps per SM); the double tile (the
// oracle precision) needs ~130-160 and runs one block per SM rather than spill.
template <typename T, bool STRING, typename C>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 2 : 1)
    distance_tiles(PassArgs<T, C> a) {
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
  // Per-query offset parameters of this thread's 4 queries, kept in registers; the nearer plate
  // is a bit mask (all ones: antiquark) so that choosing A or C is one bitwise select, not a
  // branch (the 16 x 16 threads of a warp hold queries of both plates).
  T tq[kSub];
  typename Bits<T>::type fmask[kSub];
#pragma unroll
  for (int m = 0; m < kSub; ++m) {
    tq[m] = STRING ? ts[ty + kSide * m] : T(0);
    fmask[m] = (STRING && fas[ty + kSide * m] != 0) ? ~typename Bits<T>::type(0)
                                                    : typename Bits<T>::type(0);
  }

  RunningSum<C> acc[kSub][kSub];

  // Staging: element e = tid + kThreads * s of the [64 rows x KC columns] tile is (row e / KC,
  // column e % KC); kThreads is a multiple of KC, so each thread keeps one column and steps
  // kThreads / KC rows: its row pointers advance by a constant, 32-bit row counters.
  constexpr int kRowStep = kThreads / KC;
  static_assert(kThreads % KC == 0 && kTile % kRowStep == 0, "staging must tile evenly");
  const int skk = tid % KC;
  const int srow = tid / KC;
  const int q_rows = (int)min64(kTile, a.rows - q0);
  const int p_rows = (int)min64(kTile, a.n - j0);
  const T* xp = a.points + (q0 + srow) * a.width + a.col0 + skk;
  const T* ap = a.y0 + (j0 + srow) * a.width + a.col0 + skk;
  const T* cp = STRING ? a.y1 + (j0 + srow) * a.width + a.col0 + skk : nullptr;
  const int64_t step = int64_t(kRowStep) * a.width;

  for (int64_t c = c_begin; c < c_end; c += KC) {
    const int valid = (int)min64(KC, c_end - c);  // staged columns that exist
    const bool col_ok = skk < valid;
#pragma unroll
    for (int r = 0; r < kTile / kRowStep; ++r) {
      const int row = srow + r * kRowStep;
      xs[skk][row] = (col_ok && row < q_rows) ? xp[c + r * step] : T(0);
      ys0[skk][row] = (col_ok && row < p_rows) ? ap[c + r * step] : T(0);
      if (STRING) ys1[skk][row] = (col_ok && row < p_rows) ? cp[c + r * step] : T(0);
    }
    __syncthreads();
    T part[kSub][kSub];
#pragma unroll
    for (int mq = 0; mq < kSub; ++mq)
#pragma unroll
      for (int mp = 0; mp < kSub; ++mp) part[mq][mp] = T(0);
    // Only the staged columns that exist (rounded up to the unroll of 4; the padding columns
    // are zero in both tiles): D = 2 runs 4 columns per chunk, not KC.
    const int kc = (valid + 3) & ~3;
    for (int k4 = 0; k4 < kc; k4 += 4) {
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int kk = k4 + u;
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
              const T base = bit_select(fmask[mq], cv[mp], av[mp]);
              r = fmadd(-tq[mq], dv[mp], xv[mq] - base);
            } else {
              r = xv[mq] - av[mp];
            }
            part[mq][mp] = fmadd(r, r, part[mq][mp]);
          }
        }
      }
    }
#pragma unroll
    for (int mq = 0; mq < kSub; ++mq)
#pragma unroll
      for (int mp = 0; mp < kSub; ++mp) acc[mq][mp].add((C)part[mq][mp]);
    __syncthreads();
  }

#pragma unroll
  for (int mq = 0; mq < kSub; ++mq) {
    const int64_t i = q0 + ty + kSide * mq;
#pragma unroll
    for (int mp = 0; mp < kSub; ++mp) {
      const int64_t j = j0 + tx + kSide * mp;
      if (i < a.rows && j < a.n) a.partial[(slice * a.rows + i) * a.n + j] = acc[mq][mp].value();
    }
  }
}

// Sum of the S partial distances of (row i, pair j), in slice order, stored back into slice 0
// (so the later phases of step 2 read one value; only the thread of pair j touches it).
template <typename C>
__device__ __forceinline__ C fold_partials(C* partial, int64_t nslices, int64_t rows, int64_t n,
                                           int64_t i, int64_t j) {
  if (nslices <= 1) return partial[i * n + j];
  RunningSum<C> r2(partial[i * n + j]);
  for (int64_t s = 1; s < nslices; ++s) r2.add(partial[(s * rows + i) * n + j]);
  partial[i * n + j] = r2.value();
  return r2.value();
}

// The coefficient kernels' ordered compaction, one step of RUN x kThreads consecutive pairs
// starting at j0: thread t holds pairs jt = j0 + t * RUN, ..., jt + RUN - 1, their coefficients
// in c1[r] / c2[r] and their keep flags in bit r of `keep` (`count` set bits). One block scan
// of the per-thread counts places every run: the list stays in pair order with one scan per
// RUN x kThreads pairs instead of one per kThreads. The coefficients are in registers before
// the scan's first barrier, so a kernel may use the row's list slots as scratch for the pairs
// of this step and later ones (every position written here is below jt + RUN). c2 is written
// only when lists.c2 is set. Every thread must call it.
template <int RUN, typename C, typename Buf>
__device__ __forceinline__ void append_run(const PairLists<C>& lists, int64_t i, int64_t jt,
                                           unsigned keep, int count, const C (&c1)[RUN],
                                           const C (&c2)[RUN], Buf& scan_buf, int* filled) {
  int total = 0;
  int pos = *filled + block_exclusive_scan(count, scan_buf, &total);
  const int64_t row = i * lists.n;
#pragma unroll
  for (int r = 0; r < RUN; ++r) {
    if ((keep >> r) & 1u) {
      lists.idx[row + pos] = (int)(jt + r);
      lists.c1[row + pos] = c1[r];
      if (lists.c2 != nullptr) lists.c2[row + pos] = c2[r];
      ++pos;
    }
  }
  *filled += total;
}

// RUN of the coefficient kernels for rows of n pairs (each kernel is instantiated for 1, 4 and
// 16): one compaction step covers the row up to 16 x kThreads pairs (the toys' 4096), and a
// short row does not run the guarded code of a longer run.
inline int coefficient_run(int64_t n) {
  return n <= kThreads ? 1 : (n <= 4 * kThreads ? 4 : 16);
}

// f(std::integral_constant<int, RUN>()) with RUN = coefficient_run(n): the launcher picks the
// coefficient kernel's instantiation.
template <typename F>
inline cudaError_t with_coefficient_run(int64_t n, F&& f) {
  switch (coefficient_run(n)) {
    case 1:
      return f(std::integral_constant<int, 1>());
    case 4:
      return f(std::integral_constant<int, 4>());
    default:
      return f(std::integral_constant<int, 16>());
  }
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

template <typename T, bool STRING, typename C, typename I>
__global__ void __launch_bounds__(kThreads) pair_sums(PassArgs<T, C> a) {
  IFM_SHARED(C, red, [kThreads]);
  IFM_SHARED(C, tq_s, [1]);
  IFM_SHARED(int, fq_s, [1]);
  const int lanes = 1 << a.lanes_log2;
  const int kw = kThreads >> a.lanes_log2;
  // 32-bit division (the grid's x dimension is below 2^31): a 64-bit one is a subroutine call
  const unsigned nchunks = (unsigned)ceil_div(a.ncols, kw);
  const int64_t i = blockIdx.x / nchunks;
  const int tid = threadIdx.x;
  // One thread evaluates the row's tube terms (FP64: a sine, a tangent and a power) for the
  // block: on GPUs with slow FP64, 256 threads repeating them cost more than a short row's sums.
  if (STRING) {
    if (tid == 0) {
      const StringQuery q = string_query((double)a.points[i * a.width], a.sp);
      tq_s[0] = (C)q.t;
      fq_s[0] = q.from_antiquark ? 1 : 0;
    }
    __syncthreads();
  }
  const C t = STRING ? tq_s[0] : C(0);
  const bool from_c = STRING && fq_s[0] != 0;
  const int64_t chunk = blockIdx.x % nchunks;
  const int lane = tid / kw;
  const int cw = tid % kw;
  const int64_t k = chunk * kw + cw;
  const bool valid = k < a.ncols;
  const int64_t gcol = a.col0 + k;
  const T* prow = a.points + i * a.width;
  const C x = valid ? (C)prow[gcol] : C(0);

  // Two accumulators (pairs p and p + lanes of each step of 2 * lanes), added once in a fixed
  // order: half the dependent chain per lane. The list is walked with pointers and pair rows
  // are addressed with index type I (32-bit when every offset fits; see launch_pair_sums).
  C acc0 = C(0), acc1 = C(0);
  if (valid) {
    const int cnt = a.lists.count[i];
    const int64_t off = i * a.lists.n + lane;
    const int* ip = a.lists.idx + off;
    const C* c1p = a.lists.c1 + off;
    const C* c2p = STRING ? a.lists.c2 + off : nullptr;
    const I w = (I)a.width;
    const T* y0c = a.y0 + gcol;
    const T* y1c = STRING ? a.y1 + gcol : nullptr;
    auto term = [&](int j, C c1, C c2) -> C {
      const I at = (I)j * w;
      const C yv = (C)y0c[at];
      if (STRING) {
        const C cv = (C)y1c[at];
        const C delta = cv - yv;
        const C rho = (x - (from_c ? cv : yv)) - t * delta;
        return fmadd(c2, rho, c1 * delta);
      }
      return c1 * (yv - x);
    };
    int p = lane;
    for (; p + lanes < cnt; p += 2 * lanes) {
      acc0 += term(ip[0], c1p[0], STRING ? c2p[0] : C(0));
      acc1 += term(ip[lanes], c1p[lanes], STRING ? c2p[lanes] : C(0));
      ip += 2 * lanes;
      c1p += 2 * lanes;
      if (STRING) c2p += 2 * lanes;
    }
    if (p < cnt) acc0 += term(ip[0], c1p[0], STRING ? c2p[0] : C(0));
  }
  const C acc = acc0 + acc1;
  red[tid] = acc;
  __syncthreads();
  for (int s = lanes / 2; s > 0; s >>= 1) {
    if (lane < s) red[tid] += red[tid + s * kw];
    __syncthreads();
  }
  if (lane == 0 && valid) a.out[i * a.width + gcol] = (T)red[cw];
}

// ------------------------------------------------------------------------------------------
// Step 3, query-tiled (D >= kTiledMinCols): block -> (kSumRows consecutive query rows, kThreads
// consecutive columns, one per thread). The rows' kept pairs are visited in windows of
// kSumWin pair indices: each window's coefficients are scattered from the rows' lists into a
// dense [rows x window] shared tile (zero where a row dropped the pair), the pairs any row keeps
// are compacted in index order (block scan), and every thread loads each such pair's value in
// its column once and adds it to all kSumRows rows: a pair row is read once per row tile, not
// once per query. Per row the terms are added in pair index order, as in pair_sums.
// ------------------------------------------------------------------------------------------
constexpr int kSumRows = 4;
constexpr int kSumWin = 128;
constexpr int kTiledMinCols = 128;
constexpr int kRowThreads = kThreads / kSumRows;  // scatter: threads per row
static_assert(kRowThreads * kSumRows == kThreads && kSumWin % kRowThreads == 0 &&
                  kSumWin <= kThreads,
              "scatter layout");

template <typename T, bool STRING, typename C, typename I>
__global__ void __launch_bounds__(kThreads) pair_sums_tiled(PassArgs<T, C> a) {
  IFM_SHARED(C, cw1, [kSumRows][kSumWin]);
  IFM_SHARED(C, cw2, [STRING ? kSumRows : 1][kSumWin]);
  IFM_SHARED(int, live, [kSumWin]);
  IFM_SHARED(int, scan_buf, [kThreads]);
  IFM_SHARED(int, incl, [kThreads]);
  IFM_SHARED(int, cursor, [kSumRows]);
  IFM_SHARED(C, tq_s, [kSumRows]);
  IFM_SHARED(int, fq_s, [kSumRows]);

  const int64_t nchunks = ceil_div(a.ncols, kThreads);
  const int64_t r0 = (blockIdx.x / nchunks) * kSumRows;
  const int64_t k = (blockIdx.x % nchunks) * kThreads + threadIdx.x;
  const int tid = threadIdx.x;
  const int nrows = (int)min64(kSumRows, a.rows - r0);
  const bool valid = k < a.ncols;
  const int64_t gcol = a.col0 + (valid ? k : 0);

  if (tid < kSumRows) {
    cursor[tid] = 0;
    C t = C(0);
    int f = 0;
    if (STRING && tid < nrows) {
      const StringQuery q = string_query((double)a.points[(r0 + tid) * a.width], a.sp);
      t = (C)q.t;
      f = q.from_antiquark ? 1 : 0;
    }
    tq_s[tid] = t;
    fq_s[tid] = f;
  }
  __syncthreads();
  C x[kSumRows], tq[kSumRows], acc[kSumRows];
  bool fq[kSumRows];
#pragma unroll
  for (int q = 0; q < kSumRows; ++q) {
    x[q] = (valid && q < nrows) ? (C)a.points[(r0 + q) * a.width + gcol] : C(0);
    tq[q] = tq_s[q];
    fq[q] = fq_s[q] != 0;
    acc[q] = C(0);
  }

  // This thread's part of the scatter: row sq, list positions cursor + sl + kRowThreads m.
  const int sq = tid / kRowThreads;
  const int sl = tid % kRowThreads;
  const int cnt = sq < nrows ? a.lists.count[r0 + sq] : 0;
  const int64_t off = (r0 + sq) * a.lists.n;
  const I w = (I)a.width;
  const T* y0c = a.y0 + gcol;
  const T* y1c = STRING ? a.y1 + gcol : nullptr;

  for (int64_t w0 = 0; w0 < a.n; w0 += kSumWin) {
    for (int e = tid; e < kSumRows * kSumWin; e += kThreads) {
      cw1[e / kSumWin][e % kSumWin] = C(0);
      if (STRING) cw2[e / kSumWin][e % kSumWin] = C(0);
    }
    __syncthreads();
    // Scatter the rows' list entries with index in [w0, w0 + kSumWin) (a prefix of what is
    // left of each sorted list: at most kSumWin entries).
    const int cur = cursor[sq];
    int mine = 0;
#pragma unroll
    for (int m = 0; m < kSumWin / kRowThreads; ++m) {
      const int p = cur + sl + kRowThreads * m;
      if (p < cnt) {
        const int j = a.lists.idx[off + p];
        if (j < w0 + kSumWin) {
          cw1[sq][j - w0] = a.lists.c1[off + p];
          if (STRING) cw2[sq][j - w0] = a.lists.c2[off + p];
          ++mine;
        }
      }
    }
    int total = 0;
    const int before = block_exclusive_scan(mine, scan_buf, &total);
    incl[tid] = before + mine;
    __syncthreads();
    if (tid < kSumRows) {
      const int row_end = incl[tid * kRowThreads + kRowThreads - 1];
      const int row_begin = tid > 0 ? incl[tid * kRowThreads - 1] : 0;
      cursor[tid] += row_end - row_begin;
    }
    // Compact the window's pairs that some row keeps (non-zero coefficient), in index order.
    bool keep = false;
    if (tid < kSumWin && w0 + tid < a.n) {
#pragma unroll
      for (int q = 0; q < kSumRows; ++q) {
        keep = keep || cw1[q][tid] != C(0) || (STRING && cw2[q][tid] != C(0));
      }
    }
    int nlive = 0;
    const int pos = block_exclusive_scan(keep ? 1 : 0, scan_buf, &nlive);
    if (keep) live[pos] = tid;
    __syncthreads();
    if (valid) {
      for (int l = 0; l < nlive; ++l) {
        const int jl = live[l];
        const I at = (I)(w0 + jl) * w;
        const C yv = (C)y0c[at];
        if (STRING) {
          const C cv = (C)y1c[at];
          const C delta = cv - yv;
#pragma unroll
          for (int q = 0; q < kSumRows; ++q) {
            const C rho = (x[q] - (fq[q] ? cv : yv)) - tq[q] * delta;
            const C c1 = cw1[q][jl], c2 = cw2[q][jl];
            acc[q] += fmadd(c2, rho, c1 * delta);
          }
        } else {
#pragma unroll
          for (int q = 0; q < kSumRows; ++q) acc[q] += cw1[q][jl] * (yv - x[q]);
        }
      }
    }
    __syncthreads();
  }
  if (valid) {
#pragma unroll
    for (int q = 0; q < kSumRows; ++q) {
      if (q < nrows) a.out[(r0 + q) * a.width + gcol] = (T)acc[q];
    }
  }
}

template <typename T, bool STRING, typename C>
cudaError_t launch_pair_sums(const PassArgs<T, C>& args, cudaStream_t stream) {
  // 32-bit pair-row offsets when the largest, (n - 1) * width, fits (8 GB of float pairs).
  const bool narrow = args.n * args.width <= int64_t(0xffffffff);
  if (args.ncols >= kTiledMinCols) {
    const int64_t blocks = ceil_div(args.rows, kSumRows) * ceil_div(args.ncols, kThreads);
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    if (narrow) {
      auto kernel = pair_sums_tiled<T, STRING, C, uint32_t>;
      IFM_LAUNCH(kernel, dim3((unsigned)blocks), dim3(kThreads), stream, args);
    } else {
      auto kernel = pair_sums_tiled<T, STRING, C, int64_t>;
      IFM_LAUNCH(kernel, dim3((unsigned)blocks), dim3(kThreads), stream, args);
    }
    return cudaGetLastError();
  }
  const int64_t kw = kThreads >> args.lanes_log2;
  const int64_t blocks = args.rows * ceil_div(args.ncols, kw);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (narrow) {
    auto kernel = pair_sums<T, STRING, C, uint32_t>;
    IFM_LAUNCH(kernel, dim3((unsigned)blocks), dim3(kThreads), stream, args);
  } else {
    auto kernel = pair_sums<T, STRING, C, int64_t>;
    IFM_LAUNCH(kernel, dim3((unsigned)blocks), dim3(kThreads), stream, args);
  }
  return cudaGetLastError();
}

template <typename T, bool STRING, typename C>
cudaError_t launch_distance(const PassArgs<T, C>& args, const DistancePlan& plan,
                            cudaStream_t stream) {
  if (plan.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  auto kernel = distance_tiles<T, STRING, C>;
  IFM_LAUNCH(kernel, dim3((unsigned)plan.blocks), dim3(kThreads), stream, args);
  return cudaGetLastError();
}

// Steps 1-3 for one chunk of query rows against one set of pairs (string: y0 = quarks,
// y1 = antiquarks, columns 1..D) or charges (Coulomb: y1 = nullptr, columns 0..D):
// distance_tiles, then `launch_coefficients(plan)` (the field's step 2, which fills `lists` from
// `partial`), then pair_sums into out[:, col0:].
template <typename T, bool STRING, typename C, typename CoefficientLaunch>
cudaError_t two_pass(const T* points, int64_t rows, const T* y0, const T* y1, int64_t n,
                     int64_t width, const StringParams& sp, C* partial, const PairLists<C>& lists,
                     T* out, const Tuning& tune, cudaStream_t stream,
                     CoefficientLaunch&& launch_coefficients) {
  PassArgs<T, C> a;
  a.points = points;
  a.y0 = y0;
  a.y1 = y1;
  a.rows = rows;
  a.n = n;
  a.width = width;
  a.col0 = STRING ? 1 : 0;
  a.ncols = width - a.col0;
  a.sp = sp;
  const DistancePlan plan = plan_distance<T, STRING, C>(rows, n, a.ncols, tune);
  a.cols_per_slice = plan.cols_per_slice;
  a.nslices = plan.nslices;
  a.partial = partial;
  a.lanes_log2 = lanes_log2_for(a.ncols);
  a.lists = lists;
  a.out = out;
  IFM_CUDA_TRY((launch_distance<T, STRING, C>(a, plan, stream)));
  IFM_CUDA_TRY(launch_coefficients(plan));
  return launch_pair_sums<T, STRING, C>(a, stream);
}

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
template <typename T, bool STRING, typename C>
inline int64_t max_partial_rows(int64_t b, int64_t rc, int64_t n, int64_t ncols,
                                const Tuning& tune) {
  int64_t best = plan_distance<T, STRING, C>(rc, n, ncols, tune).nslices * rc;
  const int64_t tail = b % rc;
  if (tail > 0) {
    best = max64(best, plan_distance<T, STRING, C>(tail, n, ncols, tune).nslices * tail);
  }
  return best;
}

// f(C()) with the compute type C of a launch on data of type T: float on the float32
// coefficient path (float32 data and tune.coef_f32), else double. The float instantiations
// exist for float data only.
template <typename T, typename F>
inline auto with_compute_type(const Tuning& tune, F&& f) {
  if constexpr (sizeof(T) == 4) {
    if (tune.coef_f32) return f(float());
  }
  return f(double());
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
