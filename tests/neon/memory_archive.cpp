// save_archive/load_archive for the AArch64 runtime test, which is built
// without HDF5: archives live in a map in memory, keyed by path, so that the
// model's export and its validating loader still run end to end.
#include <map>
#include <mutex>

#include "core/archive.h"
#include "core/error.h"

namespace qforge {

namespace {
std::map<std::string, Archive>& store() {
  static std::map<std::string, Archive> s;
  return s;
}
std::mutex& store_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

void save_archive(const std::string& path, const Archive& a) {
  std::lock_guard<std::mutex> lock(store_mutex());
  Archive copy = a;
  for (auto& [k, t] : copy.tensors) t = t.clone();  // as a file would, keep no shared storage
  store()[path] = std::move(copy);
}

Archive load_archive(const std::string& path) {
  std::lock_guard<std::mutex> lock(store_mutex());
  const auto it = store().find(path);
  QF_CHECK_IO(it != store().end()) << "load_archive '" << path << "': no such (in-memory) archive";
  Archive a = it->second;
  a.source = path;
  return a;
}

}  // namespace qforge
