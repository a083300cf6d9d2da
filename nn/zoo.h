#pragma once
// The model zoo: models by name, so that recipes and examples can ask for
// "mnist_cnn" and get exactly the network the PyTorch reference builds
// (../shared/bench/README.md). Register new models with register_model().

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/layers.h"
#include "nn/rnn.h"

namespace qforge::nn {

/// Model arguments from a recipe or the command line: name -> value text.
/// Each factory reads what it knows and rejects any other key.
class ModelArgs {
 public:
  ModelArgs() = default;
  /// From key/value text pairs, e.g. {{"classes", "100"}}.
  ModelArgs(std::initializer_list<std::pair<const std::string, std::string>> kv) : kv_(kv) {}
  /// Sets the value text of `key`, replacing any earlier value.
  void set(const std::string& key, const std::string& value) { kv_[key] = value; }
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  /// The value of `key` parsed as an int64 (std::stoll; the whole text must
  /// parse), or `fallback` when the key is absent; ValueError naming the key otherwise.
  int64_t get_int(const std::string& key, int64_t fallback) const;
  /// The value of `key` parsed as a double (std::stod; the whole text must
  /// parse), or `fallback` when the key is absent; ValueError naming the key otherwise.
  double get_double(const std::string& key, double fallback) const;
  /// A comma-separated list of integers ("256,128").
  std::vector<int64_t> get_ints(const std::string& key, const std::vector<int64_t>& fallback) const;
  /// Throws ValueError when a key outside `known` is present, naming it.
  void check_known(const std::string& model, const std::vector<std::string>& known) const;
  const std::map<std::string, std::string>& items() const { return kv_; }

 private:
  std::map<std::string, std::string> kv_;
};

/// Every zoo model is a Sequential that starts with a QuantStub named "quant"
/// and ends with a DeQuantStub named "dequant", so that prepare_qat and
/// convert find the quantized region.
///
/// A zoo entry: builds a model from its arguments (rejecting unknown keys
/// with ModelArgs::check_known) and draws every initial weight from `gen`.
using ModelFactory = std::function<ModulePtr(const ModelArgs&, Generator&)>;

/// Adds a model to the zoo (replacing one of the same name).
void register_model(const std::string& name, ModelFactory factory);
/// Builds a zoo model; throws ValueError listing the known names when the
/// name is unknown.
ModulePtr make_model(const std::string& name, const ModelArgs& args = {}, Generator& gen = default_generator());
/// Names in the zoo, sorted.
std::vector<std::string> model_names();

/// conv 1->32 3x3 + BN + ReLU, conv 32->64 + BN + ReLU, maxpool 2, conv
/// 64->64 + BN + ReLU, flatten (6400), linear 6400->10. Convs have no bias.
/// Input [N, 1, 28, 28]. Children: quant conv1 bn1 relu1 conv2 bn2 relu2 pool
/// conv3 bn3 relu3 flatten fc dequant, the reference's names (quant and
/// dequant are the QuantStub/DeQuantStub boundaries, identities in float).
std::shared_ptr<Sequential> mnist_cnn(Generator& gen = default_generator());
/// The MNIST-rows classifier: each [1, 28, 28] image is a sequence of 28
/// rows of 28 pixels. quant, an LSTM(28, hidden, layers; batch first, last
/// step only) "lstm", fc hidden->classes, dequant.
std::shared_ptr<Sequential> mnist_lstm(int64_t hidden = 128, int64_t layers = 1, int64_t classes = 10,
                                       Generator& gen = default_generator());
/// CIFAR ResNet-20 as ../shared/bench/README.md defines it (input [N, 3, 32,
/// 32]): quant, a 3->16 3x3 stem conv + BN + ReLU, 3 stages of 3 BasicBlocks
/// (16, 32, 64 wide; the first block of stages 2 and 3 has stride 2 and a
/// 1x1 projection shortcut), global average pooling, flatten, fc 64->classes,
/// dequant. 272,474 parameters with 10 classes. zero_init_residual: the last
/// batch norm of each block's main path starts with scale 0, so that every
/// block starts as its shortcut (torchvision's option of that name); the
/// architecture is unchanged.
std::shared_ptr<Sequential> resnet20(int64_t classes = 10, Generator& gen = default_generator(),
                                     bool zero_init_residual = false);
/// A small depthwise-separable CIFAR net (input [N, 3, 32, 32]): a 3->32
/// stem conv + BN + ReLU6, then 5 blocks of depthwise 3x3 (+BN+ReLU6) and
/// pointwise 1x1 (+BN+ReLU6) to 64, 128 (stride 2), 128, 256 (stride 2), 256
/// channels, global average pooling, fc 256->classes.
std::shared_ptr<Sequential> mobilenet_cifar(int64_t classes = 10, Generator& gen = default_generator());
/// LeNet-5 for 28x28 input: conv 1->6 5x5 pad 2 + ReLU, maxpool 2, conv 6->16
/// 5x5 + ReLU, maxpool 2, fc 400->120 + ReLU, fc 120->84 + ReLU, fc 84->10.
std::shared_ptr<Sequential> lenet5(Generator& gen = default_generator());
/// Flatten, then Linear + ReLU for each hidden width, then Linear to classes
/// (between the QuantStub and DeQuantStub every zoo model has).
std::shared_ptr<Sequential> mlp(int64_t in_features, const std::vector<int64_t>& hidden, int64_t classes,
                                Generator& gen = default_generator());

}  // namespace qforge::nn
