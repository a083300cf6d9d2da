#pragma once
// Small helpers shared by qforge's end-to-end benchmarks: timing, the
// environment header, and running the PyTorch reference in the same process
// tree to print ratios.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "core/parallel.h"

namespace qforge::bench {

struct Timing {
  double median = 0, best = 0;
};

/// Median and best seconds of fn over at least min_runs calls and min_sec
/// seconds, after `warmup` calls.
inline Timing time_calls(const std::function<void()>& fn, int min_runs = 10, double min_sec = 1.0, int warmup = 3) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ts;
  const auto end = clock::now() + std::chrono::duration<double>(min_sec);
  while (static_cast<int>(ts.size()) < min_runs || clock::now() < end) {
    const auto t0 = clock::now();
    fn();
    ts.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return {ts[ts.size() / 2], ts.front()};
}

/// Median seconds of fn (see time_calls).
inline double median_seconds(const std::function<void()>& fn, int min_runs = 10, double min_sec = 1.0,
                             int warmup = 3) {
  return time_calls(fn, min_runs, min_sec, warmup).median;
}

/// One line that says what was in force: threads, GEMM backend and the
/// OpenBLAS core type override.
inline std::string env_line() {
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  char buf[256];
  std::snprintf(buf, sizeof buf, "# qforge threads %d | f32 gemm: %s | OPENBLAS_CORETYPE=%s (%s)", num_threads(),
                gemm_backend(), ct ? ct : "(unset)", ct ? "in force" : "not in force");
  return buf;
}

/// Runs `cmd`, echoes its lines, and returns the JSON text of each
/// "RESULT {...}" line.
inline std::vector<std::string> run_reference(const std::string& cmd) {
  std::vector<std::string> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char line[8192];
  while (std::fgets(line, sizeof line, p)) {
    std::string s(line);
    if (s.rfind("RESULT ", 0) == 0) out.push_back(s.substr(7));
    else std::fputs(line, stdout);
  }
  const int rc = pclose(p);
  if (rc != 0) std::printf("# reference command failed (status %d): %s\n", rc, cmd.c_str());
  return out;
}

/// The string or number value of `key` in a flat JSON object (enough for the
/// reference kit's RESULT lines).
inline std::string json_field(const std::string& js, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  size_t i = js.find(k);
  if (i == std::string::npos) return "";
  i += k.size();
  if (js[i] == '"') {
    const size_t j = js.find('"', i + 1);
    return js.substr(i + 1, j - i - 1);
  }
  size_t j = i;
  while (j < js.size() && js[j] != ',' && js[j] != '}') ++j;
  return js.substr(i, j - i);
}

/// Path of the reference kit: $QFORGE_REF_KIT, else ../shared/bench next to
/// the source tree.
inline std::string reference_kit() {
  if (const char* e = std::getenv("QFORGE_REF_KIT")) return e;
  return std::string(QFORGE_SOURCE_DIR) + "/../shared/bench";
}

/// A benchmark's main: runs run(argc, argv), and turns an exception past the
/// option parsing (a missing data directory, a bad file) into its message
/// on stderr and exit status 1 instead of std::terminate.
inline int guarded_main(const char* name, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace qforge::bench
