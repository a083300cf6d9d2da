#pragma once
// Weight packing shared by the VNNI and AMX GEMMs (plain C++: no ISA flags
// needed). B [N, K] (s8, leading dimension ldb) becomes blocks of 16 output
// channels, [N/16][K4p][16 channels][4 bytes]: the groups of 4 values of K
// of each channel side by side, zero-padded past K and past N, with K4p the
// number of groups rounded up to a multiple of `group_multiple`; then the N/16
// * 16 channel sums of B (for the input zero point). Not installed.
#include <cstdint>
#include <cstring>
#include <vector>

namespace qforge::quant::kernels {

inline void pack_groups_of_4(std::vector<int32_t>& out, const int8_t* b0, int64_t ldb, int64_t N, int64_t K,
                             int64_t group_multiple) {
  const int64_t K4 = (K + 3) / 4, K4p = (K4 + group_multiple - 1) / group_multiple * group_multiple;
  const int64_t NB = (N + 15) / 16;
  out.assign(static_cast<size_t>(NB * K4p * 16 + NB * 16), 0);
  int32_t* bsum = out.data() + NB * K4p * 16;
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* b = b0 + n * ldb;
    int32_t* dst = out.data() + (n / 16) * K4p * 16 + (n % 16);
    int32_t s = 0;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      uint8_t t[4] = {0, 0, 0, 0};
      for (int i = 0; i < 4 && 4 * k4 + i < K; ++i) {
        t[i] = static_cast<uint8_t>(b[4 * k4 + i]);
        s += b[4 * k4 + i];
      }
      std::memcpy(dst + k4 * 16, t, 4);
    }
    bsum[n] = s;
  }
}

}  // namespace qforge::quant::kernels
