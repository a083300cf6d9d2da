#pragma once
// The one place where qforge's thread count is set.
//
// qforge runs its parallel loops on a TBB arena of num_threads() workers and
// keeps OpenBLAS at one thread, so that OpenBLAS's own spinning pool never
// competes with the TBB workers (on 2 cores that halves throughput). The count
// comes from set_num_threads(), else QFORGE_NUM_THREADS, else the core count.

#include <cstdint>
#include <functional>

namespace qforge {

/// Sets the worker count (>= 1) for every later parallel loop.
void set_num_threads(int n);
/// The current worker count.
int num_threads();

/// Runs fn(begin, end) over disjoint sub-ranges of [begin, end) that together
/// cover it, in parallel: min(ceil(n / grain), 4 x threads) near-equal pieces,
/// so a piece holds about `grain` items or more. Runs inline (one call) when
/// n <= grain, with one thread, or when nested in another parallel_for. Use
/// only for independent work: the split may vary between calls.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

/// Runs fn(chunk) for chunk in [0, n_chunks) in parallel. With a fixed
/// n_chunks, per-chunk partial results combined in chunk order are
/// deterministic whatever the thread count.
void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn);

/// True while the calling thread runs inside a qforge parallel region.
bool in_parallel_region();

}  // namespace qforge
