#pragma once
// The qforge subcommands. Each prints human-readable text, then ends its
// stdout with one JSON line that sums up the result. Return values are exit
// codes: 0 success, 1 a failure at run time, 2 bad input.

#include <string>
#include <vector>

#include "cli/recipe.h"
#include "nn/module.h"
#include "quant/qconfig.h"

namespace qforge::cli {

struct TrainArgs {
  std::string out_dir;  // empty: out/<recipe name>
  bool resume = false;
  std::string source_dir;  // for the dataset defaults
};

/// The recipe's quantization as a QConfigMap: the global qconfig (STE, or LSQ
/// with the recipe's lsq_init) at quant.weight/activation bits, then each
/// override by module-name glob (`float: true` keeps the module in float).
quant::QConfigMap recipe_qconfig_map(const Recipe& recipe);

/// FP32 training, then QAT or PTQ, then export and validation of the int8
/// model, as the recipe says. JSON keys: test_accuracy, images_per_s,
/// wall_s, out_dir, and with export int8_accuracy, int8_mismatches,
/// export_path, export_bytes.
int run_train(const Recipe& recipe, const TrainArgs& args);

/// Evaluates an int8 export, or a qforge train checkpoint (FP32 or QAT,
/// rebuilt from the run's recipe), on a dataset's test split. An empty
/// dataset or data_dir takes the recipe's (checkpoints) or mnist's defaults.
/// JSON: accuracy, count, kind (int8 | fp32 | qat).
/// With `dynamic`, an FP32 checkpoint is evaluated after quant::quantize_dynamic
/// (LSTM and Linear layers in dynamic int8; kind "dynamic"); RecipeError for
/// an int8 file or a QAT checkpoint.
int run_eval(const std::string& model_path, const std::string& dataset, const std::string& data_dir,
             const std::string& recipe_path, const std::string& source_dir, bool dynamic = false);

/// Converts a QAT checkpoint of qforge train to the int8 file, rebuilding
/// the prepared model from the run's recipe (`recipe_path`, or the
/// recipe.yaml that qforge train left in a parent directory of the
/// checkpoint). JSON: path, bytes.
int run_export(const std::string& checkpoint, const std::string& out_path, const std::string& recipe_path,
               const std::string& source_dir);

/// True when `path` is an int8 model file (not a checkpoint).
bool is_int8_model(const std::string& path);

/// The recipe of the run that wrote `checkpoint`: `recipe_path`, or the
/// recipe.yaml that qforge train leaves in its output directory (a parent
/// of the checkpoint's directory). RecipeError when there is none.
Recipe recipe_of_checkpoint(const std::string& checkpoint, const std::string& recipe_path,
                            const std::string& source_dir);

/// The recipe's model, prepared for QAT when the checkpoint holds fake-quant
/// state (`quantized`), with the checkpoint's weights and qparams, in eval
/// mode.
void rebuild_from_checkpoint(const std::string& checkpoint, const Recipe& r, nn::ModulePtr& model, bool& quantized);

/// Per-layer qparams and weight ranges of an int8 model or a checkpoint; for
/// a QAT checkpoint also the per-layer SQNR of its int8 model against the
/// float model on `images` training images, and with plot_dir SVG charts
/// (sqnr.svg, hist_<layer>.svg). JSON: kind, ops, layers [{name, sqnr_db}],
/// min_sqnr_db, worst_layer.
int run_inspect(const std::string& path, const std::string& recipe_path, const std::string& plot_dir, int64_t images,
                const std::string& source_dir);

/// Latency and throughput of an int8 model on random input: calls of `batch`
/// images for at least `min_sec` seconds. JSON: batch, threads,
/// latency_ms_p50 (one call), images_per_s, kernels.
int run_bench(const std::string& model_path, int64_t batch, int threads, double min_sec);

/// Predictions of an int8 model for raw 8-bit images: an IDX file ([N, H, W]
/// for one channel, or [N, C, H, W]) or, with raw, bytes [N, C, H, W]. The
/// model's recorded normalization turns pixels into its input. With a label
/// file (IDX, [N]) also the accuracy. Prints the first `show` predictions.
/// JSON: count, predictions, accuracy (with labels).
int run_predict(const std::string& model_path, const std::string& input, const std::string& labels_path, bool raw,
                int64_t show);

/// One JSON object from key/value pairs already formatted as JSON values.
std::string json_line(const std::vector<std::pair<std::string, std::string>>& kv);
std::string json_string(const std::string& s);

}  // namespace qforge::cli
