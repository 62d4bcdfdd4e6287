// Kernels with one planted defect each, run under the emulation (cuda_emu.h) by
// tests/test_cuda_backend.py::test_emulator_reports_planted_defects: each must be reported, and
// the correct variants must not. Built like capi.cpp (g++ -DIFM_CUDA_EMULATION -include ...).
#include <cstdint>

#include "../../csrc/cuda/common.cuh"

namespace {

constexpr int kN = 128;

// Neighbour read without a barrier after the write (write/read race when `barrier` is false).
__global__ void neighbour_read(float* out, bool barrier) {
  IFM_SHARED(float, buf, [kN]);
  const int t = threadIdx.x;
  buf[t] = float(t);
  if (barrier) __syncthreads();
  out[t] = buf[(t + 1) % kN];
}

// Every thread writes one element (write/write race when `same` is true).
__global__ void all_write(float* out, bool same) {
  IFM_SHARED(float, buf, [kN]);
  const int t = threadIdx.x;
  buf[same ? 0 : t] = float(t);
  __syncthreads();
  out[t] = buf[t % (same ? 1 : kN)];
}

// Reads an element no thread wrote (uninitialised shared memory when `skip` is true).
__global__ void partial_fill(float* out, bool skip) {
  IFM_SHARED(float, buf, [kN]);
  const int t = threadIdx.x;
  if (!skip || t != 5) buf[t] = 1.0f;
  __syncthreads();
  out[t] = buf[kN - 1 - t];
}

// Reuses a buffer without a barrier between the last read and the next write (read/write race
// when `barrier` is false), the defect of a scan without its trailing barrier.
__global__ void reuse(float* out, bool barrier) {
  IFM_SHARED(float, buf, [kN]);
  const int t = threadIdx.x;
  buf[t] = 1.0f;
  __syncthreads();
  const float total = buf[kN - 1];
  if (barrier) __syncthreads();
  buf[t] = total + 1.0f;
  __syncthreads();
  out[t] = buf[t];
}

// Half the threads take a different barrier (divergent __syncthreads when `diverge` is true).
__global__ void split_barrier(float* out, bool diverge) {
  const int t = threadIdx.x;
  if (diverge && t < kN / 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[t] = 1.0f;
}

// Too much static shared memory for one block (> 48 KB when `big` is true).
__global__ void big_shared(float* out, bool big) {
  IFM_SHARED(double, a, [4096]);
  IFM_SHARED(double, b, [4096]);
  const int t = threadIdx.x;
  a[t] = 1.0;
  if (big) b[t] = 2.0;
  __syncthreads();
  out[t] = float(a[t]);
}

// A global-memory result that depends on the thread order (last writer wins): not a shared
// access, found only by comparing schedules.
__global__ void last_writer(float* out, bool racy) {
  const int t = threadIdx.x;
  if (racy) out[0] = float(t);
  else if (t == 0) out[0] = 7.0f;
}

}  // namespace

extern "C" {

// Runs planted defect `which` (0-6) with the defect on (`defect` != 0) or off; returns the
// launch's cudaGetLastError (the report is read through ifm_emu_report in capi.cpp's library).
// `threads` (0: 128) and `blocks` set the launch shape (launch-limit checks).
int ifm_emu_selftest(int which, int defect, float* out, int threads, int blocks) {
  const bool on = defect != 0;
  const dim3 grid{unsigned(blocks)}, block{unsigned(threads > 0 ? threads : kN)};
  switch (which) {
    case 0: IFM_LAUNCH(neighbour_read, grid, block, nullptr, out, !on); break;
    case 1: IFM_LAUNCH(all_write, grid, block, nullptr, out, on); break;
    case 2: IFM_LAUNCH(partial_fill, grid, block, nullptr, out, on); break;
    case 3: IFM_LAUNCH(reuse, grid, block, nullptr, out, !on); break;
    case 4: IFM_LAUNCH(split_barrier, grid, block, nullptr, out, on); break;
    case 5: IFM_LAUNCH(big_shared, grid, block, nullptr, out, on); break;
    case 6: IFM_LAUNCH(last_writer, grid, block, nullptr, out, on); break;
    default: return -1;
  }
  return (int)cudaGetLastError();
}

const char* ifm_emu_report() { return ifm_emu::report(); }
void ifm_emu_clear_report() { ifm_emu::clear_report(); }
void ifm_emu_set_schedule(int mode, uint64_t seed) { ifm_emu::set_schedule(mode, seed); }

}  // extern "C"
