#pragma once
// The standard layers. Weights are initialized as PyTorch does (Kaiming
// uniform with a = sqrt(5), bias uniform in +-1/sqrt(fan_in)), drawing from
// the generator passed in (the default generator otherwise), so that a seed
// fixes a model.

#include <array>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "core/rng.h"
#include "nn/module.h"

namespace qforge::nn {

/// y = x W^T + b. weight [out, in], bias [out].
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator());
  Variable forward(const Variable& x) override;
  std::string extra_repr() const override;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  Variable& weight() { return param("weight"); }
  /// Undefined when the layer has no bias.
  Variable bias() const { return has_param("bias") ? param("bias") : Variable(); }

 private:
  int64_t in_, out_;
};

struct Conv2dSpec {
  int64_t in_channels = 1, out_channels = 1;
  std::array<int64_t, 2> kernel{3, 3};
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
  bool bias = true;
};

/// 2-D convolution over NCHW input. weight [out, in/groups, kh, kw].
class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dSpec& spec, Generator& gen = default_generator());
  /// Square kernel, stride and padding.
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, bool bias = true,
         int64_t groups = 1, Generator& gen = default_generator());
  Variable forward(const Variable& x) override;
  std::string extra_repr() const override;
  const Conv2dSpec& spec() const { return spec_; }
  autograd::Conv2dOptions options() const;
  Variable& weight() { return param("weight"); }
  Variable bias() const { return has_param("bias") ? param("bias") : Variable(); }

 private:
  Conv2dSpec spec_;
};

struct BatchNormSpec {
  int64_t num_features = 0;
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

/// Batch normalization over axis 1. BatchNorm1d takes [N, C], BatchNorm2d
/// [N, C, H, W]. Buffers running_mean and running_var exist when
/// track_running_stats; eval mode then normalizes with them (and with batch
/// statistics otherwise, as PyTorch does).
class BatchNorm : public Module {
 public:
  BatchNorm(const char* type_name, int input_ndim, const BatchNormSpec& spec);
  Variable forward(const Variable& x) override;
  std::string extra_repr() const override;
  const BatchNormSpec& spec() const { return spec_; }
  Variable weight() const { return spec_.affine ? param("weight") : Variable(); }
  Variable bias() const { return spec_.affine ? param("bias") : Variable(); }
  Tensor running_mean() { return spec_.track_running_stats ? buffer("running_mean") : Tensor(); }
  Tensor running_var() { return spec_.track_running_stats ? buffer("running_var") : Tensor(); }
  /// While frozen, training mode still normalizes with (and no longer
  /// updates) the running statistics; QAT's BN freezing uses it.
  void set_frozen(bool frozen) { frozen_ = frozen; }
  bool frozen() const { return frozen_; }

 private:
  BatchNormSpec spec_;
  int input_ndim_;
  bool frozen_ = false;
};

class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true)
      : BatchNorm("BatchNorm1d", 2, {num_features, eps, momentum, affine, track_running_stats}) {}
};

class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true)
      : BatchNorm("BatchNorm2d", 4, {num_features, eps, momentum, affine, track_running_stats}) {}
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Variable forward(const Variable& x) override { return autograd::relu(x); }
};

class ReLU6 : public Module {
 public:
  ReLU6() : Module("ReLU6") {}
  Variable forward(const Variable& x) override { return autograd::relu6(x); }
};

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Variable forward(const Variable& x) override { return x; }
};

/// Marks where a model's input enters the quantized region. The identity in
/// float; quant::prepare_qat() swaps it for an input fake-quant (the int8
/// runtime's quantize op).
class QuantStub : public Module {
 public:
  QuantStub() : Module("QuantStub") {}
  Variable forward(const Variable& x) override { return x; }
};

/// Marks where the quantized region ends (the runtime's dequantize op). The
/// identity in float and in QAT.
class DeQuantStub : public Module {
 public:
  DeQuantStub() : Module("DeQuantStub") {}
  Variable forward(const Variable& x) override { return x; }
};

class MaxPool2d : public Module {
 public:
  /// stride 0 means "equal to kernel".
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0);
  Variable forward(const Variable& x) override { return autograd::max_pool2d(x, opt_); }
  std::string extra_repr() const override;
  const autograd::Pool2dOptions& options() const { return opt_; }

 private:
  autograd::Pool2dOptions opt_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool count_include_pad = true);
  Variable forward(const Variable& x) override { return autograd::avg_pool2d(x, opt_); }
  std::string extra_repr() const override;
  const autograd::Pool2dOptions& options() const { return opt_; }

 private:
  autograd::Pool2dOptions opt_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  AdaptiveAvgPool2d(int64_t out_h, int64_t out_w);
  explicit AdaptiveAvgPool2d(int64_t out) : AdaptiveAvgPool2d(out, out) {}
  Variable forward(const Variable& x) override;
  std::array<int64_t, 2> output_size() const { return {out_h_, out_w_}; }
  std::string extra_repr() const override;

 private:
  int64_t out_h_, out_w_;
};

class Flatten : public Module {
 public:
  explicit Flatten(int start_axis = 1, int end_axis = -1) : Module("Flatten"), start_(start_axis), end_(end_axis) {}
  Variable forward(const Variable& x) override { return autograd::flatten(x, start_, end_); }
  int start_axis() const { return start_; }
  int end_axis() const { return end_; }

 private:
  int start_, end_;
};

/// Dropout with probability p in training mode, the identity in eval. Draws
/// from the default generator, whose state checkpoints save.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Variable forward(const Variable& x) override;
  std::string extra_repr() const override;

 private:
  double p_;
};

/// A module of two inputs (a residual add). forward(x) is an error: its
/// parent (a block) calls forward2.
class BinaryModule : public Module {
 public:
  using Module::Module;
  virtual Variable forward2(const Variable& a, const Variable& b) = 0;
  Variable forward(const Variable& x) override;
};

/// a + b of equal shapes, optionally followed by ReLU (ResNet's add-ReLU).
class Add : public BinaryModule {
 public:
  explicit Add(bool relu = false) : BinaryModule("Add"), relu_(relu) {}
  Variable forward2(const Variable& a, const Variable& b) override;
  bool relu() const { return relu_; }
  std::string extra_repr() const override { return relu_ ? "relu" : ""; }

 private:
  bool relu_;
};

/// ResNet's basic block: out = add(main(x), shortcut(x)) with children
///   main:     Sequential conv1 3x3 (stride s, pad 1), bn1, relu1, conv2 3x3
///             (pad 1), bn2 (no conv biases);
///   shortcut: Identity, or (when the stride or the width changes) a
///             Sequential conv 1x1 (stride s) + bn ("option B" projection);
///   add:      Add with ReLU (prepare_qat swaps in a quantized add).
/// Input [N, in, H, W], output [N, out, H/s, W/s].
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, Generator& gen = default_generator());
  Variable forward(const Variable& x) override;
};

/// Runs its children in order. Children are named "0", "1", ... unless given
/// names.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(std::initializer_list<ModulePtr> modules);
  /// Appends a child named by its position.
  Sequential& push_back(ModulePtr m);
  /// Appends a named child.
  Sequential& push_back(const std::string& name, ModulePtr m);
  Variable forward(const Variable& x) override;
  size_t size() const { return named_children().size(); }
  Module& operator[](size_t i) const;
};

}  // namespace qforge::nn
