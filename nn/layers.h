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
  /// f32 weight and (when `bias`) bias, initialized from `gen` as described at
  /// the top of this file. ValueError unless both sizes are >= 1.
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

/// Settings of a Conv2d; each pair is {height, width}. Conv2d's constructor
/// throws ValueError for values outside the stated ranges.
struct Conv2dSpec {
  /// Input and output channels, >= 1, both divisible by groups.
  int64_t in_channels = 1, out_channels = 1;
  /// Kernel size, >= 1.
  std::array<int64_t, 2> kernel{3, 3};
  /// Window step, >= 1.
  std::array<int64_t, 2> stride{1, 1};
  /// Zeros added on each side of the input, >= 0.
  std::array<int64_t, 2> padding{0, 0};
  /// Spacing of the kernel taps, >= 1.
  std::array<int64_t, 2> dilation{1, 1};
  /// Channel groups, >= 1 (groups == in_channels is depthwise).
  int64_t groups = 1;
  /// Whether the layer has a bias parameter [out_channels].
  bool bias = true;
};

/// 2-D convolution over NCHW input. weight [out, in/groups, kh, kw].
class Conv2d : public Module {
 public:
  /// f32 weight and (with spec.bias) bias, initialized from `gen` as described at
  /// the top of this file. ValueError for an invalid spec.
  explicit Conv2d(const Conv2dSpec& spec, Generator& gen = default_generator());
  /// Square kernel, stride and padding.
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, bool bias = true,
         int64_t groups = 1, Generator& gen = default_generator());
  Variable forward(const Variable& x) override;
  std::string extra_repr() const override;
  const Conv2dSpec& spec() const { return spec_; }
  /// The conv2d() options of spec() (stride, padding, dilation, groups), by value.
  autograd::Conv2dOptions options() const;
  Variable& weight() { return param("weight"); }
  /// A handle to the bias parameter; undefined when spec().bias is false.
  Variable bias() const { return has_param("bias") ? param("bias") : Variable(); }

 private:
  Conv2dSpec spec_;
};

/// Settings of a BatchNorm; its constructor throws ValueError for values
/// outside the stated ranges.
struct BatchNormSpec {
  /// Channels C, >= 1.
  int64_t num_features = 0;
  /// Added to the variance before the square root, > 0.
  double eps = 1e-5;
  /// Running-statistics update weight in [0, 1], as PyTorch defines it.
  double momentum = 0.1;
  /// Learnable per-channel weight (initially 1) and bias (initially 0).
  bool affine = true;
  /// Keep buffers running_mean (initially 0) and running_var (initially 1).
  bool track_running_stats = true;
};

/// Batch normalization over axis 1. BatchNorm1d takes [N, C], BatchNorm2d
/// [N, C, H, W]. Buffers running_mean and running_var exist when
/// track_running_stats; eval mode then normalizes with them (and with batch
/// statistics otherwise, as PyTorch does).
class BatchNorm : public Module {
 public:
  /// For subclasses: `type_name` as for Module; forward() then accepts only rank
  /// `input_ndim` input with C = spec.num_features (else ShapeError). ValueError
  /// for an invalid spec.
  BatchNorm(const char* type_name, int input_ndim, const BatchNormSpec& spec);
  Variable forward(const Variable& x) override;
  /// forward() followed by ReLU, fused into one op (Sequential uses it for a
  /// BatchNorm directly followed by a ReLU); with fake_quant set, also
  /// followed by per-tensor fake quant of the output in the same op (see
  /// autograd::BatchNormOptions::output_fake_quant).
  Variable forward_relu(const Variable& x, autograd::FakeQuantHook fake_quant = {});
  /// forward() followed by per-tensor fake quant of the output, fused into
  /// one op (autograd::BatchNormOptions::output_fake_quant without relu).
  Variable forward_fake_quant(const Variable& x, autograd::FakeQuantHook fake_quant);
  std::string extra_repr() const override;
  const BatchNormSpec& spec() const { return spec_; }
  /// A handle to the weight parameter [C]; undefined unless spec().affine.
  Variable weight() const { return spec_.affine ? param("weight") : Variable(); }
  /// A handle to the bias parameter [C]; undefined unless spec().affine.
  Variable bias() const { return spec_.affine ? param("bias") : Variable(); }
  /// The running_mean buffer [C], sharing its storage (writes reach the layer);
  /// undefined unless spec().track_running_stats.
  Tensor running_mean() { return spec_.track_running_stats ? buffer("running_mean") : Tensor(); }
  /// The running_var buffer [C], sharing its storage; undefined unless spec().track_running_stats.
  Tensor running_var() { return spec_.track_running_stats ? buffer("running_var") : Tensor(); }
  /// While frozen, training mode still normalizes with (and no longer
  /// updates) the running statistics; QAT's BN freezing uses it.
  void set_frozen(bool frozen) { frozen_ = frozen; }
  bool frozen() const { return frozen_; }

 private:
  Variable run(const Variable& x, bool relu, autograd::FakeQuantHook fake_quant = {});
  BatchNormSpec spec_;
  int input_ndim_;
  bool frozen_ = false;
};

/// BatchNorm over [N, C]; the arguments are those of BatchNormSpec.
class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true)
      : BatchNorm("BatchNorm1d", 2, {num_features, eps, momentum, affine, track_running_stats}) {}
};

/// BatchNorm over [N, C, H, W]; the arguments are those of BatchNormSpec.
class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true)
      : BatchNorm("BatchNorm2d", 4, {num_features, eps, momentum, affine, track_running_stats}) {}
};

/// autograd::relu as a module without parameters.
class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Variable forward(const Variable& x) override { return autograd::relu(x); }
};

/// autograd::relu6 as a module without parameters.
class ReLU6 : public Module {
 public:
  ReLU6() : Module("ReLU6") {}
  Variable forward(const Variable& x) override { return autograd::relu6(x); }
};

/// Returns its input itself (the same Variable handle, no copy).
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

/// autograd::max_pool2d with a square window over [N, C, H, W].
class MaxPool2d : public Module {
 public:
  /// stride 0 means "equal to kernel". ValueError unless kernel >= 1, stride >= 0
  /// and 0 <= padding <= kernel / 2.
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0);
  Variable forward(const Variable& x) override { return autograd::max_pool2d(x, opt_); }
  std::string extra_repr() const override;
  /// The options forward() passes to max_pool2d.
  const autograd::Pool2dOptions& options() const { return opt_; }

 private:
  autograd::Pool2dOptions opt_;
};

/// autograd::avg_pool2d with a square window over [N, C, H, W].
class AvgPool2d : public Module {
 public:
  /// Arguments and checks as MaxPool2d's; count_include_pad counts padded
  /// positions in each window's divisor.
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool count_include_pad = true);
  Variable forward(const Variable& x) override { return autograd::avg_pool2d(x, opt_); }
  std::string extra_repr() const override;
  /// The options forward() passes to avg_pool2d.
  const autograd::Pool2dOptions& options() const { return opt_; }

 private:
  autograd::Pool2dOptions opt_;
};

/// autograd::adaptive_avg_pool2d: [N, C, H, W] -> [N, C, out_h, out_w].
class AdaptiveAvgPool2d : public Module {
 public:
  /// ValueError unless out_h and out_w are >= 1.
  AdaptiveAvgPool2d(int64_t out_h, int64_t out_w);
  /// A square out x out output.
  explicit AdaptiveAvgPool2d(int64_t out) : AdaptiveAvgPool2d(out, out) {}
  Variable forward(const Variable& x) override;
  std::array<int64_t, 2> output_size() const { return {out_h_, out_w_}; }
  std::string extra_repr() const override;

 private:
  int64_t out_h_, out_w_;
};

/// autograd::flatten(x, start_axis, end_axis): merges those axes (inclusive); the
/// default keeps axis 0 (the batch). Axes are checked in forward() (IndexError).
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
  /// ValueError unless 0 <= p < 1.
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
  /// The module's computation on its two inputs.
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
  /// Conv weights come from `gen`. ValueError unless in, out and stride are >= 1.
  BasicBlock(int64_t in, int64_t out, int64_t stride, Generator& gen = default_generator());
  Variable forward(const Variable& x) override;
};

/// Runs its children in order. Children are named "0", "1", ... unless given
/// names.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  /// Children named "0", "1", ... in order; ValueError for a null module.
  explicit Sequential(std::initializer_list<ModulePtr> modules);
  /// Appends a child named by its position.
  Sequential& push_back(ModulePtr m);
  /// Appends a named child.
  Sequential& push_back(const std::string& name, ModulePtr m);
  /// Runs the children in order. A BatchNorm directly followed by a ReLU runs
  /// as one fused op (same values and gradients, fewer passes over memory).
  Variable forward(const Variable& x) override;
  size_t size() const { return named_children().size(); }
  /// Child i in order, whatever its name; IndexError when i >= size(). The
  /// reference dangles once that child is replaced and no one else holds it.
  Module& operator[](size_t i) const;
};

}  // namespace qforge::nn
