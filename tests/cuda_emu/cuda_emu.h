// A CPU emulation of the CUDA execution model that runs csrc/cuda/*.cu unchanged on a machine
// without a GPU and checks what a GPU would not report (tests/test_cuda_backend.py builds it with
// g++). Force-included (`g++ -DIFM_CUDA_EMULATION -include tests/cuda_emu/cuda_emu.h`).
//
// * Blocks run one after another; the threads of a block are fibers on one OS thread, switched
//   only at __syncthreads(). A fiber is started with makecontext/setcontext and then switched
//   with _setjmp/_longjmp (no signal-mask system call per switch; build without _FORTIFY_SOURCE,
//   whose longjmp check rejects stack switches). Under AddressSanitizer the switches are
//   announced to it (__sanitizer_start/finish_switch_fiber).
// * Schedules: between two barriers the threads of a block run one after another in an order
//   chosen per round: forward (0, 1, ...), reverse, or a seeded random permutation. The default
//   ("mixed") gives each block of each launch one of the three in turn, so every kernel of a call
//   runs under all of them; ifm_emu::set_schedule forces one. A kernel whose result depends on
//   the order of threads between barriers gives different results under different schedules.
// * Shared memory: kernels declare it with IFM_SHARED(type, name, dims) (csrc/cuda/common.cuh),
//   which here is a tracked array (ifm_emu::Shared). At the start of every block it is poisoned
//   (NaN for floating types, 0xA5 bytes otherwise) and marked uninitialised. Every element access
//   is recorded for the current barrier epoch (the code between two barriers): a write by one
//   thread and a read or write of the same element by another in one epoch is a race, a read of an
//   element no thread of the block has written is a read of uninitialised memory, and an index
//   outside the array is out of bounds. Each is a violation.
// * Barriers: every thread must reach the same __syncthreads (same source line) in a round, or
//   every thread must finish; otherwise (divergent barrier, undefined on a GPU) it is a violation
//   and the block is abandoned.
// * Launches are checked against the device limits of sm_80 / sm_90 (threads per block, block and
//   grid dimensions, 48 KB of static shared memory per block); an invalid one does not run and
//   the next cudaGetLastError() returns cudaErrorInvalidConfiguration, as on a GPU.
// * A violation is recorded (ifm_emu::report(), the first few messages) and the next
//   cudaGetLastError() returns cudaErrorLaunchFailure, so the launcher under test fails.
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
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define IFM_EMU_ASAN 1
#else
#define IFM_EMU_ASAN 0
#endif

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
  cudaErrorLaunchFailure = 719,
};

namespace ifm_emu {

// Device limits of compute capability 8.0 / 9.0 (CUDA programming guide, "Technical
// Specifications per Compute Capability").
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {0x7fffffffu, 65535u, 65535u};
constexpr size_t kMaxStaticSharedBytes = 48 * 1024;

enum Schedule { kForward = 0, kReverse = 1, kRandom = 2, kMixed = 3 };

inline dim3 threadIdx_, blockIdx_, blockDim_, gridDim_;
inline long launches = 0;  // kernels run so far (tests read it through the C API)
inline int schedule_mode = kMixed;
inline uint64_t schedule_seed = 1;
inline cudaError_t last_error = cudaSuccess;
inline long violations = 0;
inline std::string report_text;

inline void set_schedule(int mode, uint64_t seed) {
  schedule_mode = mode;
  schedule_seed = seed;
}

// Records a violation: the first messages are kept, every one fails the launch.
inline void violation(const std::string& what) {
  if (violations < 8) report_text += "cuda_emu: " + what + "\n";
  ++violations;
  last_error = cudaErrorLaunchFailure;
}

inline const char* report() { return report_text.c_str(); }
inline void clear_report() {
  report_text.clear();
  violations = 0;
  last_error = cudaSuccess;
}

// ------------------------------------------------------------------ fibers and the scheduler
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  char* stack = nullptr;
  bool started = false, done = false;
  const char* file = nullptr;  // source position of the barrier it waits at
  int line = 0;
  void* fake_stack = nullptr;  // AddressSanitizer's bookkeeping across switches
};

inline jmp_buf scheduler_jb;
inline std::vector<Fiber>* fibers = nullptr;
inline int current = -1;  // running thread of the block, -1 in host code
inline std::function<void()>* body = nullptr;
inline uint64_t epoch = 1;  // barrier epoch: advanced at every barrier and every block start
inline size_t stack_bytes = IFM_EMU_ASAN ? 512 * 1024 : 128 * 1024;
inline const void* sched_stack_bottom = nullptr;
inline size_t sched_stack_size = 0;
inline void* sched_fake_stack = nullptr;

// AddressSanitizer must be told about every stack switch (no-ops in a plain build).
inline void to_fiber_begin(Fiber& f) {
#if IFM_EMU_ASAN
  __sanitizer_start_switch_fiber(&sched_fake_stack, f.stack, stack_bytes);
#else
  (void)f;
#endif
}
inline void in_fiber(Fiber& f) {
#if IFM_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &sched_stack_bottom, &sched_stack_size);
#else
  (void)f;
#endif
}
inline void to_scheduler_begin(Fiber& f, bool dying) {
#if IFM_EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f.fake_stack, sched_stack_bottom,
                                 sched_stack_size);
#else
  (void)f;
  (void)dying;
#endif
}
inline void in_scheduler() {
#if IFM_EMU_ASAN
  __sanitizer_finish_switch_fiber(sched_fake_stack, nullptr, nullptr);
#endif
}

inline void fiber_entry() {
  Fiber& f = (*fibers)[current];
  in_fiber(f);
  (*body)();
  f.done = true;
  to_scheduler_begin(f, true);
  _longjmp(scheduler_jb, 1);  // never returns
}

// __syncthreads: park this fiber at the barrier (its source position) and return to the
// scheduler.
__attribute__((noinline)) inline void syncthreads(const char* file, int line) {
  Fiber& f = (*fibers)[current];
  f.file = file;
  f.line = line;
  if (_setjmp(f.jb) == 0) {
    to_scheduler_begin(f, false);
    _longjmp(scheduler_jb, 1);
  }
  in_fiber((*fibers)[current]);
}

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Order in which the threads run in one round: forward, reverse or a seeded permutation.
inline void round_order(int mode, uint64_t seed, std::vector<int>& order) {
  const int n = (int)order.size();
  for (int t = 0; t < n; ++t) order[t] = mode == kReverse ? n - 1 - t : t;
  if (mode == kRandom) {
    for (int t = n - 1; t > 0; --t) {
      const int u = (int)(splitmix64(seed) % uint64_t(t + 1));
      const int tmp = order[t];
      order[t] = order[u];
      order[u] = tmp;
    }
  }
}

// ------------------------------------------------------------------ tracked shared memory
struct SharedBase;
inline std::vector<SharedBase*>& shared_registry() {
  static std::vector<SharedBase*> all;
  return all;
}

struct SharedBase {
  const char* name;
  size_t bytes;
  long used_in_launch = -1;
  explicit SharedBase(const char* n, size_t b) : name(n), bytes(b) {
    shared_registry().push_back(this);
  }
  virtual void poison() = 0;
  virtual ~SharedBase() = default;
};

// Per element and barrier epoch: the writing thread (-1: none), the reading thread (-1: none;
// -2: several), and whether any thread of the block has written it.
struct Shadow {
  uint64_t epoch = 0;
  int32_t writer = -1;
  int32_t reader = -1;
  bool init = false;
};

template <typename E>
struct Tracker {
  E* data;
  Shadow* shadow;
  size_t count;
  SharedBase* owner;

  // An index outside an extent would read or corrupt other memory: report and stop.
  [[noreturn]] void out_of_bounds(int64_t i, size_t extent) const {
    std::fprintf(stderr, "cuda_emu: index %lld outside [0, %zu) of __shared__ %s (block %u, "
                 "thread %d)\n", (long long)i, extent, owner->name, blockIdx_.x, current);
    std::abort();
  }
  void check(size_t idx, const char*) const {
    if (idx >= count) out_of_bounds(int64_t(idx), count);
    owner->used_in_launch = launches;
  }
  void race(const char* kind, size_t idx, int other) const {
    const std::string first = other >= 0 ? "thread " + std::to_string(other) : "several threads";
    violation(std::string(kind) + " race on __shared__ " + owner->name + " element " +
              std::to_string(idx) + ": " + first + ", then thread " + std::to_string(current) +
              ", in one barrier epoch (block " + std::to_string(blockIdx_.x) + ")");
  }
  E read(size_t idx) const {
    check(idx, "read");
    Shadow& s = shadow[idx];
    if (current >= 0) {
      if (!s.init) {
        violation(std::string("read of uninitialised __shared__ ") + owner->name + " element " +
                  std::to_string(idx) + " by thread " + std::to_string(current) + " (block " +
                  std::to_string(blockIdx_.x) + ")");
      }
      if (s.epoch != epoch) {
        s.epoch = epoch;
        s.writer = -1;
        s.reader = current;
      } else {
        if (s.writer >= 0 && s.writer != current) race("write/read", idx, s.writer);
        if (s.reader == -1) s.reader = current;
        else if (s.reader != current) s.reader = -2;
      }
    }
    return data[idx];
  }
  void write(size_t idx, E v) const {
    check(idx, "write");
    Shadow& s = shadow[idx];
    if (current >= 0) {
      if (s.epoch != epoch) {
        s.epoch = epoch;
        s.reader = -1;
      } else {
        if (s.writer >= 0 && s.writer != current) race("write/write", idx, s.writer);
        if (s.reader == -2 || (s.reader >= 0 && s.reader != current)) {
          race("read/write", idx, s.reader == -2 ? -1 : s.reader);
        }
      }
      s.writer = current;
    }
    s.init = true;
    data[idx] = v;
  }
};

// One element: reads and writes go through the tracker.
template <typename E>
struct Ref {
  const Tracker<E>* t;
  size_t idx;
  operator E() const { return t->read(idx); }
  const Ref& operator=(E v) const {
    t->write(idx, v);
    return *this;
  }
  const Ref& operator=(const Ref& o) const { return *this = E(o); }
  const Ref& operator+=(E v) const { return *this = E(t->read(idx) + v); }
  const Ref& operator-=(E v) const { return *this = E(t->read(idx) - v); }
  const Ref& operator*=(E v) const { return *this = E(t->read(idx) * v); }
};

// A (sub-)array of a tracked array: indexing yields a smaller view or an element.
template <typename A>
struct View {
  using Sub = std::remove_extent_t<A>;
  using E = std::remove_all_extents_t<A>;
  const Tracker<E>* t;
  size_t base;
  auto operator[](int64_t i) const {
    constexpr size_t stride = sizeof(Sub) / sizeof(E);
    const size_t at = base + size_t(i) * stride;
    if (i < 0 || i >= int64_t(std::extent_v<A>)) t->out_of_bounds(i, std::extent_v<A>);
    if constexpr (std::is_array_v<Sub>) {
      return View<Sub>{t, at};
    } else {
      return Ref<E>{t, at};
    }
  }
};

template <typename A>
struct Shared : SharedBase {
  using E = std::remove_all_extents_t<A>;
  static constexpr size_t kCount = sizeof(A) / sizeof(E);
  std::unique_ptr<E[]> data{new E[kCount]};
  std::unique_ptr<Shadow[]> shadow{new Shadow[kCount]};
  Tracker<E> tracker{data.get(), shadow.get(), kCount, this};

  explicit Shared(const char* n) : SharedBase(n, sizeof(A)) { poison(); }
  void poison() override {
    if constexpr (std::is_floating_point_v<E>) {
      for (size_t i = 0; i < kCount; ++i) data[i] = std::numeric_limits<E>::quiet_NaN();
    } else {
      std::memset(static_cast<void*>(data.get()), 0xA5, sizeof(A));
    }
    for (size_t i = 0; i < kCount; ++i) shadow[i] = Shadow();
  }
  auto operator[](int64_t i) const { return View<A>{&tracker, 0}[i]; }
};

// ------------------------------------------------------------------ launches
inline bool check_launch(dim3 grid, dim3 block) {
  const unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
  const char* axis = "xyz";
  std::string bad;
  for (int d = 0; d < 3; ++d) {
    if (g[d] < 1 || g[d] > kMaxGridDim[d]) {
      bad += std::string(" gridDim.") + axis[d] + " = " + std::to_string(g[d]) + " outside [1, " +
             std::to_string(kMaxGridDim[d]) + "];";
    }
    if (b[d] < 1 || b[d] > kMaxBlockDim[d]) {
      bad += std::string(" blockDim.") + axis[d] + " = " + std::to_string(b[d]) +
             " outside [1, " + std::to_string(kMaxBlockDim[d]) + "];";
    }
  }
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads > kMaxThreadsPerBlock) {
    bad += " " + std::to_string(threads) + " threads per block > " +
           std::to_string(kMaxThreadsPerBlock) + ";";
  }
  if (bad.empty()) return true;
  if (violations < 8) report_text += "cuda_emu: invalid launch configuration:" + bad + "\n";
  last_error = cudaErrorInvalidConfiguration;
  return false;
}

inline void start_block() {
  ++epoch;
  for (SharedBase* s : shared_registry()) {
    if (s->used_in_launch == launches) s->poison();
  }
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, Args&&... args) {
  if (!check_launch(grid, block)) return;
  ++launches;
  const int nthreads = (int)(block.x * block.y * block.z);
  // Fiber stacks, kept across launches (uninitialised; the kernels' frames are small).
  static std::vector<std::unique_ptr<char[]>> stacks;
  while ((int)stacks.size() < nthreads) stacks.emplace_back(new char[stack_bytes]);
  std::vector<Fiber> fs(nthreads);
  std::vector<int> order(nthreads);
  std::function<void()> run = [&]() { kernel(args...); };
  fibers = &fs;
  body = &run;
  blockDim_ = block;
  gridDim_ = grid;
  // Shared arrays are poisoned when first constructed and at each block start after that.
  for (SharedBase* s : shared_registry()) s->poison();
  uint64_t block_no = 0;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx, ++block_no) {
        blockIdx_ = dim3(bx, by, bz);
        if (block_no > 0) start_block();
        else ++epoch;
        const int mode = schedule_mode != kMixed ? schedule_mode
                                                 : int((block_no + uint64_t(launches)) % 3);
        uint64_t seed = schedule_seed ^ (uint64_t(launches) << 32) ^ block_no;
        for (int t = 0; t < nthreads; ++t) {
          Fiber& f = fs[t];
          f.stack = stacks[t].get();
          f.started = f.done = false;
          f.fake_stack = nullptr;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = stack_bytes;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        int live = nthreads;
        while (live > 0) {
          round_order(mode, splitmix64(seed), order);
          int ended = 0;
          const Fiber* first = nullptr;
          bool split = false;
          for (int t : order) {
            Fiber& f = fs[t];
            if (f.done) continue;
            current = t;
            threadIdx_ = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            if (_setjmp(scheduler_jb) == 0) {
              to_fiber_begin(f);
              if (!f.started) {
                f.started = true;
                setcontext(&f.ctx);
              }
              _longjmp(f.jb, 1);
            }
            in_scheduler();
            if (f.done) {
              ++ended;
            } else if (first == nullptr) {
              first = &f;
            } else if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
              split = true;
            }
          }
          current = -1;
          ++epoch;
          if ((ended != 0 && ended != live) || split) {
            violation("divergent __syncthreads in block (" + std::to_string(bx) + "," +
                      std::to_string(by) + "," + std::to_string(bz) + "): " +
                      (split ? std::string("threads wait at different barriers (") +
                                   first->file + ":" + std::to_string(first->line) + " and others)"
                             : std::to_string(ended) + " of " + std::to_string(live) +
                                   " threads finished while the others wait at a barrier") +
                      "; block abandoned");
            break;
          }
          live -= ended;
        }
      }
  size_t shared_bytes = 0;
  for (SharedBase* s : shared_registry()) {
    if (s->used_in_launch == launches) shared_bytes += s->bytes;
  }
  if (shared_bytes > kMaxStaticSharedBytes) {
    violation("kernel uses " + std::to_string(shared_bytes) + " bytes of static shared memory "
              "per block (> " + std::to_string(kMaxStaticSharedBytes) + ")");
  }
  fibers = nullptr;
  body = nullptr;
  current = -1;
}

}  // namespace ifm_emu

// Returns and clears the error of the last launches, as the runtime's cudaGetLastError.
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ifm_emu::last_error;
  ifm_emu::last_error = cudaSuccess;
  return e;
}
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

#define threadIdx (::ifm_emu::threadIdx_)
#define blockIdx (::ifm_emu::blockIdx_)
#define blockDim (::ifm_emu::blockDim_)
#define gridDim (::ifm_emu::gridDim_)
#define __syncthreads() ::ifm_emu::syncthreads(__FILE__, __LINE__)
// Tracked shared memory (see the header comment); csrc/cuda/common.cuh picks this up.
#define IFM_EMU_SHARED(type, name, dims) static ::ifm_emu::Shared<type dims> name(#name)
