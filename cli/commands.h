#pragma once
// The qforge subcommands. Each prints human-readable text, then ends its
// stdout with one JSON line that sums up the result. Return values are exit
// codes: 0 success, 1 a failure at run time, 2 bad input.

#include <string>
#include <vector>

#include "cli/recipe.h"

namespace qforge::cli {

struct TrainArgs {
  std::string out_dir;  // empty: out/<recipe name>
  bool resume = false;
  std::string source_dir;  // for the dataset defaults
};

/// FP32 training, then QAT or PTQ, then export and validation of the int8
/// model, as the recipe says. JSON keys: test_accuracy, images_per_s,
/// wall_s, out_dir, and with export int8_accuracy, int8_mismatches,
/// export_path, export_bytes.
int run_train(const Recipe& recipe, const TrainArgs& args);

/// Evaluates an int8 export on a dataset's test split. JSON: accuracy, count.
int run_eval(const std::string& model_path, const std::string& dataset, const std::string& data_dir);

/// One JSON object from key/value pairs already formatted as JSON values.
std::string json_line(const std::vector<std::pair<std::string, std::string>>& kv);
std::string json_string(const std::string& s);

}  // namespace qforge::cli
