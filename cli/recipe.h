#pragma once
// Recipes: one YAML file describes a whole run (model, data, training,
// quantization, export). parse_recipe() checks the file against the schema
// in recipe.cpp and fills a Recipe with every default resolved; every problem
// is a RecipeError that names the file, line and column:
//   - unknown keys, with a "did you mean" among the keys allowed there;
//   - wrong types (a list where a number belongs, "abc" for an integer);
//   - out-of-range values (bits 1 to 8, lr > 0, ...) and unknown choices;
//   - missing files (data directory, pretrained and teacher checkpoints).
// `--set key.path=value` overrides are applied to the YAML tree before the
// checks, so they get the same checks (their errors name the --set).
//
// Depends on yaml-cpp and the trainers' types only through plain values.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace qforge::cli {

/// A bad recipe or override: exit code 2.
class RecipeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorQuantRecipe {
  int bits = 8;
  std::string observer;  // empty: the qconfig default
};

struct QuantOverride {
  std::string match;  // glob over module paths ("fc", "conv*")
  bool keep_float = false;
  std::optional<int> weight_bits, activation_bits;
};

struct Recipe {
  std::string path;  // the recipe file ("" when built in code)
  // model
  std::string model = "mnist_cnn";
  std::map<std::string, std::string> model_args;
  // data
  std::string dataset = "mnist";
  std::string data_dir;  // resolved: the recipe's, else the dataset's default
  int64_t batch_size = 64;
  int64_t test_batch_size = 256;
  int64_t shift = 0;  // random crop padding (pixels)
  bool hflip = false;
  std::vector<float> mean, std;
  // training (FP32)
  int64_t epochs = 1;
  std::string optimizer = "adam";  // adam | adamw | sgd
  double lr = 0.003;
  double momentum = 0.9;
  bool nesterov = false;  // sgd only
  double label_smoothing = 0;  // of the loss (training, and the test loss the trainer reports)
  double weight_decay = 0;
  bool decay_vectors = true;  // weight decay on parameters of dimension <= 1 too (biases, norm scales and shifts)
  std::string schedule = "cosine";  // cosine | onecycle | constant
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
  int64_t max_steps_per_epoch = 0;
  double clip_grad_norm = 0;  // 0: off; else the global gradient norm is clipped to it
  // quant
  bool quant = false;
  std::string quant_mode = "qat";  // qat | ptq
  int64_t qat_epochs = 1;
  double qat_lr = 0;               // 0: the FP32 cosine continues through QAT
  std::string method = "ste";      // ste | lsq
  std::string lsq_init = "observer";  // lsq only: observer (the observed range) | data (2 mean|x| / sqrt(Qp))
  TensorQuantRecipe weight{8, ""}, activation{8, ""};
  std::vector<QuantOverride> overrides;
  bool auto_fuse = true;
  double fake_quant_from = 0;      // fraction of the QAT steps before fake quant starts (observers record)
  double freeze_bn = 0.5;          // fraction of the QAT steps (1: never)
  double freeze_observers = 0.7;
  int64_t calibration_images = 1000;
  // export
  bool do_export = false;
  std::string export_path = "model_int8.h5";  // relative to the output directory
  bool validate_export = true;
  // start from
  std::string pretrained;
  // distillation (alpha in (0, 1]): every training step's loss is (1 - alpha) * the
  // cross-entropy (label-smoothed as above) + alpha * T^2 KL(teacher || model)
  // at temperature T (autograd::distillation_kl); the teacher is an FP32
  // checkpoint of the recipe's model, run in eval mode. The test loss stays
  // the cross-entropy.
  std::string distill_teacher;  // "" : no distillation
  double distill_alpha = 0.5;
  double distill_temperature = 4;
};

/// Reads, overrides and checks a recipe. `sets` are "key.path=value" texts.
/// Relative paths in the recipe (data.dir, pretrained) resolve against
/// `base_dir` (the working directory by default); the dataset's default
/// directory comes from `source_dir`. check_files = false skips the checks
/// that the data directory and the pretrained file exist (for reading back a
/// finished run's recipe, whose data may have moved).
Recipe parse_recipe(const std::string& path, const std::vector<std::string>& sets = {},
                    const std::string& source_dir = "", bool check_files = true);
/// The same from YAML text (tests); `name` stands for the file in messages.
Recipe parse_recipe_text(const std::string& text, const std::string& name, const std::vector<std::string>& sets = {},
                         const std::string& source_dir = "", bool check_files = true);

/// The recipe as YAML, every value resolved (written next to a run's
/// outputs, so that the run can be reproduced and its checkpoints read back).
std::string to_yaml(const Recipe& r);

/// What each dataset ("mnist", "cifar10") is normalized with by default
/// (torchvision's per-channel mean and std), and its image shape {C, H, W}.
std::vector<float> dataset_mean(const std::string& dataset);
std::vector<float> dataset_std(const std::string& dataset);
std::array<int64_t, 3> dataset_input_shape(const std::string& dataset);

/// Edit distance (for "did you mean").
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace qforge::cli
