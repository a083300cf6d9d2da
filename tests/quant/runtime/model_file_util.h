#pragma once
// Shared by the runtime tests: corrupt a saved model file and expect the
// loader's FormatError to name the problem.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/archive.h"
#include "quant/runtime/model.h"

namespace qforge::quant::runtime::testing {

/// Saves `m` to `path`, applies `edit` to its archive, writes it back, and
/// expects load_model to throw a FormatError whose message contains `needle`.
inline void expect_load_error(const std::string& path, const Model& m, const std::function<void(Archive&)>& edit,
                              const std::string& needle) {
  save_model(path, m);
  Archive a = load_archive(path);
  edit(a);
  save_archive(path, a);
  try {
    load_model(path);
    ADD_FAILURE() << "no error for: " << needle;
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace qforge::quant::runtime::testing
