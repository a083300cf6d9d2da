// core/parallel.h for the AArch64 runtime test, which is built without TBB or
// OpenBLAS: everything runs on the calling thread (the split does not change
// any result; the runtime's ops are independent per range).
#include "core/parallel.h"

namespace qforge {

void set_num_threads(int) {}
int num_threads() { return 1; }
void parallel_for(int64_t begin, int64_t end, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
  if (begin < end) fn(begin, end);
}
void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn) {
  for (int64_t i = 0; i < n_chunks; ++i) fn(i);
}
bool in_parallel_region() { return false; }

}  // namespace qforge
