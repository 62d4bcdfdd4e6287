// A minimal CPU emulation of the CUDA execution model, enough to run csrc/cuda/*.cu unchanged
// on a machine without a GPU (tests/test_cuda_backend.py builds it with g++). Force-included
// (`g++ -DIFM_CUDA_EMULATION -include tests/cuda_emu/cuda_emu.h`).
//
// * Blocks run one after another; the threads of a block are fibers on one OS thread, switched
//   only at __syncthreads(). That gives real barrier semantics, so shared-memory races across a
//   barrier show up as wrong results, and is deterministic. A fiber is started with
//   makecontext/setcontext and then switched with _setjmp/_longjmp (no signal-mask system call
//   per switch; build without _FORTIFY_SOURCE, whose longjmp check rejects stack switches).
// * `__shared__` variables become function-local statics: shared by the threads of the running
//   block, which is exactly CUDA's scope since blocks never overlap here.
// * Every barrier must be reached by every thread of the block, or every thread must finish:
//   a round in which some threads finished while others wait at a barrier (divergent
//   __syncthreads, undefined behaviour on a GPU) aborts with a message.
// * "Device" memory is host memory; cudaMallocAsync is malloc. No warp intrinsics, atomics or
//   dynamic shared memory (the kernels use none).
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef void* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  *p = std::malloc(bytes > 0 ? bytes : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}

namespace ifm_emu {

inline dim3 threadIdx_, blockIdx_, blockDim_, gridDim_;
inline jmp_buf scheduler_jb;
inline std::vector<jmp_buf>* fiber_jb = nullptr;
inline int current = 0;
inline std::function<void()>* body = nullptr;
inline std::vector<char>* finished = nullptr;
inline long launches = 0;  // kernels run so far (tests read it through the C API)

inline void fiber_entry() {
  (*body)();
  (*finished)[current] = 1;
  _longjmp(scheduler_jb, 1);  // never returns
}

inline void syncthreads() {
  if (_setjmp((*fiber_jb)[current]) == 0) _longjmp(scheduler_jb, 1);
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, Args&&... args) {
  ++launches;
  const int nthreads = (int)(block.x * block.y * block.z);
  // Fiber stacks, kept across launches (uninitialised; the kernels' frames are small).
  const size_t stack_bytes = 128 * 1024;
  static std::vector<std::unique_ptr<char[]>> stacks;
  while ((int)stacks.size() < nthreads) stacks.emplace_back(new char[stack_bytes]);
  std::vector<ucontext_t> ctx(nthreads);
  std::vector<jmp_buf> jbs(nthreads);
  std::vector<char> done(nthreads), started(nthreads);
  std::function<void()> run = [&]() { kernel(args...); };
  fiber_jb = &jbs;
  finished = &done;
  body = &run;
  blockDim_ = block;
  gridDim_ = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx_ = dim3(bx, by, bz);
        for (int t = 0; t < nthreads; ++t) {
          done[t] = 0;
          started[t] = 0;
          getcontext(&ctx[t]);
          ctx[t].uc_stack.ss_sp = stacks[t].get();
          ctx[t].uc_stack.ss_size = stack_bytes;
          ctx[t].uc_link = nullptr;
          makecontext(&ctx[t], fiber_entry, 0);
        }
        int live = nthreads;
        while (live > 0) {
          int ended = 0;
          for (int t = 0; t < nthreads; ++t) {
            if (done[t]) continue;
            current = t;
            threadIdx_ = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            if (_setjmp(scheduler_jb) == 0) {
              if (!started[t]) {
                started[t] = 1;
                setcontext(&ctx[t]);
              }
              _longjmp(jbs[t], 1);
            }
            if (done[t]) ++ended;
          }
          if (ended != 0 && ended != live) {
            std::fprintf(stderr, "cuda_emu: divergent __syncthreads in block (%u,%u,%u): %d of %d "
                         "threads finished while the others wait at a barrier\n",
                         bx, by, bz, ended, live);
            std::abort();
          }
          live -= ended;
        }
      }
  fiber_jb = nullptr;
  finished = nullptr;
  body = nullptr;
}

}  // namespace ifm_emu

#define threadIdx (::ifm_emu::threadIdx_)
#define blockIdx (::ifm_emu::blockIdx_)
#define blockDim (::ifm_emu::blockDim_)
#define gridDim (::ifm_emu::gridDim_)
#define __syncthreads() ::ifm_emu::syncthreads()
