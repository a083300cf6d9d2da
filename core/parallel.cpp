#include "core/parallel.h"

#include <cblas.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace qforge {
namespace {

struct ThreadState {
  std::mutex mu;
  int n = 0;
  std::unique_ptr<tbb::task_arena> arena;
};

ThreadState& state() {
  static ThreadState* s = new ThreadState();
  return *s;
}

thread_local int tl_region_depth = 0;

int default_threads() {
  if (const char* e = std::getenv("QFORGE_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(e, &end, 10);
    QF_CHECK(end != e && *end == '\0' && v >= 1 && v <= 4096)
        << "QFORGE_NUM_THREADS must be a positive integer, got '" << e << "'";
    return static_cast<int>(v);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

void configure_locked(ThreadState& s, int n) {
  s.n = n;
  s.arena = std::make_unique<tbb::task_arena>(n);
  // One OpenBLAS thread: parallelism comes from the TBB arena only.
  openblas_set_num_threads(1);
}

tbb::task_arena& arena() {
  ThreadState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.arena) configure_locked(s, default_threads());
  return *s.arena;
}

struct RegionGuard {
  RegionGuard() { ++tl_region_depth; }
  ~RegionGuard() { --tl_region_depth; }
};

}  // namespace

void set_num_threads(int n) {
  QF_CHECK(n >= 1 && n <= 4096) << "set_num_threads: need 1..4096 threads, got " << n;
  ThreadState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  configure_locked(s, n);
}

int num_threads() {
  arena();
  return state().n;
}

bool in_parallel_region() { return tl_region_depth > 0; }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int nt = num_threads();
  if (nt == 1 || end - begin <= grain || in_parallel_region()) {
    fn(begin, end);
    return;
  }
  // Static split into at most nt * 4 pieces of at least `grain` items.
  const int64_t n = end - begin;
  const int64_t pieces = std::min<int64_t>((n + grain - 1) / grain, int64_t{nt} * 4);
  arena().execute([&] {
    tbb::parallel_for(int64_t{0}, pieces, [&](int64_t p) {
      RegionGuard g;
      const int64_t b = begin + n * p / pieces;
      const int64_t e = begin + n * (p + 1) / pieces;
      if (b < e) fn(b, e);
    });
  });
}

void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn) {
  if (n_chunks <= 0) return;
  if (n_chunks == 1 || num_threads() == 1 || in_parallel_region()) {
    for (int64_t c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  arena().execute([&] {
    tbb::parallel_for(int64_t{0}, n_chunks, [&](int64_t c) {
      RegionGuard g;
      fn(c);
    });
  });
}

}  // namespace qforge
