// Archive's lookups, apart from the HDF5 reading and writing in archive.cpp
// (so that a build without HDF5, such as the AArch64 runtime test, can use
// archives held in memory).
#include <sstream>

#include "core/archive.h"
#include "core/error.h"

namespace qforge {

namespace {

template <class V>
const V& lookup(const std::map<std::string, V>& m, const std::string& name, const char* kind,
                const std::string& source) {
  const auto it = m.find(name);
  if (it == m.end()) {
    constexpr size_t kListed = 8;
    std::ostringstream os;
    size_t i = 0;
    for (const auto& entry : m) {
      if (i == kListed) break;
      os << (i++ ? ", " : "") << "'" << entry.first << "'";
    }
    if (m.size() > kListed) os << ", ... (" << m.size() << " in all)";
    QF_THROW(FormatError) << "archive " << (source.empty() ? std::string("(in memory)") : "'" + source + "'")
                          << " has no " << kind << " '" << name << "'; its " << kind
                          << "s: " << (m.empty() ? std::string("none") : os.str());
  }
  return it->second;
}

}  // namespace

const Tensor& Archive::tensor(const std::string& name) const { return lookup(tensors, name, "tensor", source); }
int64_t Archive::get_int(const std::string& name) const { return lookup(ints, name, "int", source); }
double Archive::get_float(const std::string& name) const { return lookup(floats, name, "float", source); }
const std::string& Archive::get_string(const std::string& name) const {
  return lookup(strings, name, "string", source);
}

}  // namespace qforge
