#pragma once
// QAT modules: what prepare_qat() swaps float layers (and fused groups) for.
//
// Every QAT compute module fake-quantizes its weight (child
// "weight_fake_quant") and its output after the fused activation (child
// "output_fake_quant"). It shares the float layer's parameters (the same
// Variables, so optimizers built before the swap keep working) and, for the
// Bn variants, holds the float BatchNorm itself as child "bn".
//
// Batch norm folding is simulated as in Jacob et al. 2018 / torch.ao:
//  - training: the weight is folded with the running std (fold_conv_bn) and
//    fake-quantized, the convolution runs without bias, its output is
//    divided by the fold factor again, the conv bias is added, and the batch
//    norm normalizes with batch statistics and updates its running
//    statistics. With frozen BN statistics (freeze_bn_stats) it normalizes
//    with the running statistics instead, which equals the folded layer.
//  - eval: the int8 layer itself (to_qlayer()): the input codes, the folded
//    and quantized weights, the int32 bias and the requantization of
//    quant/runtime/qmath.h, run by the runtime's ops, then dequantized. This
//    is exactly what the exported model computes. It needs the quantizer that
//    feeds the layer (prepare_qat links it along Sequential chains), unsigned
//    per-tensor activations and symmetric signed weights of at most 8 bits;
//    otherwise (or with set_int8_eval(false)) eval runs the float simulation
//    conv(x, fq(w_fold)) + b_fold.

#include <array>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "quant/fake_quantize.h"
#include "quant/qconfig.h"
#include "quant/runtime/ops.h"

namespace qforge::quant {

/// The activation fused into a QAT module (applied before the output
/// fake-quant; the int8 runtime turns it into clamp bounds): qmath's
/// Activation.
using FusedActivation = Activation;

/// What conv and linear QAT modules share: the fused batch norm and
/// activation, the weight and output quantizers, the link to the quantizer
/// that feeds them, and the int8 eval switch.
class QATLayer : public nn::Module {
 public:
  FusedActivation activation() const { return act_; }
  const QConfig& qconfig() const { return qconfig_; }
  /// The float batch norm, or null for the variants without one.
  nn::BatchNorm* bn() const;
  /// The weight quantizer: a reference to child "weight_fake_quant" (per output
  /// channel when the config is), valid until that child is replaced
  /// (replace_module) or the layer is destroyed.
  FakeQuantize& weight_fake_quant() const;
  /// The output quantizer (after the fused activation): a reference to child
  /// "output_fake_quant", valid until that child is replaced or the layer is
  /// destroyed. The next layer in the chain links to it as its input quantizer.
  FakeQuantize& output_fake_quant() const;
  /// Stops (or resumes) updates of the batch norm's running statistics.
  void freeze_bn_stats(bool frozen = true);
  /// The weight as the int8 layer will see it (folded with the running
  /// statistics when there is a batch norm) and the matching float bias
  /// (undefined when there is none). No gradient.
  std::pair<Tensor, Tensor> folded_weight_and_bias();

  /// The quantizer whose codes this layer consumes (null: unknown).
  void set_input_quantizer(const std::shared_ptr<FakeQuantize>& q) { input_q_ = q; }
  /// The linked input quantizer. Held weakly (the layer does not own it): null
  /// when none is linked or its module no longer exists.
  std::shared_ptr<FakeQuantize> input_quantizer() const { return input_q_.lock(); }
  /// Eval through the int8 arithmetic when possible (the default).
  void set_int8_eval(bool on) { int8_eval_ = on; }
  /// "" when eval mode runs the int8 layer, else the reason it cannot.
  std::string int8_blocker();
  /// The int8 layer with the current weights and qparams (ValueError with
  /// int8_blocker()'s reason when there is none).
  virtual runtime::QLayer to_qlayer() = 0;

 protected:
  /// Validates the qconfig and the batch norm against out_channels, and
  /// registers the children bn (when given), weight_fake_quant and
  /// output_fake_quant.
  QATLayer(const char* type_name, int64_t out_channels, std::shared_ptr<nn::BatchNorm> bn, FusedActivation act,
           const QConfig& qconfig);
  bool use_int8_eval() { return !is_training() && int8_eval_ && int8_blocker().empty(); }

 private:
  FusedActivation act_;
  QConfig qconfig_;
  std::weak_ptr<FakeQuantize> input_q_;
  bool int8_eval_ = true;
};

/// A per-tensor, unsigned activation quantizer's qparams in the runtime's
/// form; ValueError naming `where` for any other quantizer or one without
/// qparams.
runtime::ActQParams runtime_act_qparams(FakeQuantize& fq, const std::string& where);
/// Why an activation quantizer's config cannot feed the int8 runtime (per
/// channel, or signed codes), naming `which`; "" when it can.
std::string act_blocker(const FakeQuantize& fq, const char* which);
/// A weight quantizer's qparams in the runtime's form, one scale per output
/// channel (a per-tensor scale repeated); ValueError for a zero point other
/// than 0, or when there are no qparams yet.
runtime::WeightQParams weight_qparams(FakeQuantize& fq, int64_t channels);

/// Conv2d (+ BatchNorm2d) (+ ReLU/ReLU6) under QAT. Input [N, C, H, W].
class QATConvBase : public QATLayer {
 public:
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override;

  const nn::Conv2dSpec& spec() const { return spec_; }
  runtime::QLayer to_qlayer() override;

 protected:
  QATConvBase(const char* type_name, const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm> bn, FusedActivation act,
              const QConfig& qconfig);

 private:
  nn::Conv2dSpec spec_;
};

/// Conv2d under QAT, without batch norm or activation. Shares the conv's
/// weight and bias Variables (registered as "weight" and "bias"). ValueError for
/// an invalid qconfig or per-channel axes other than 0 (weight) / 1 (output).
class QATConv2d : public QATConvBase {
 public:
  QATConv2d(const nn::Conv2d& conv, const QConfig& q)
      : QATConvBase("QATConv2d", conv, nullptr, FusedActivation::none, q) {}
};
/// Conv2d + ReLU (act relu) or ReLU6 (act relu6, type "QATConvReLU62d") under
/// QAT; shares the conv's parameters as QATConv2d does.
class QATConvReLU2d : public QATConvBase {
 public:
  QATConvReLU2d(const nn::Conv2d& conv, const QConfig& q, FusedActivation act = FusedActivation::relu)
      : QATConvBase(act == FusedActivation::relu6 ? "QATConvReLU62d" : "QATConvReLU2d", conv, nullptr, act, q) {}
};
/// Conv2d + BatchNorm2d under QAT: shares the conv's parameters and takes the
/// batch norm itself (shared, not copied) as child "bn". ValueError when bn's
/// num_features is not out_channels or it does not track running statistics.
class QATConvBn2d : public QATConvBase {
 public:
  QATConvBn2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm> bn, const QConfig& q)
      : QATConvBase("QATConvBn2d", conv, std::move(bn), FusedActivation::none, q) {}
};
/// Conv2d + BatchNorm2d + ReLU/ReLU6 (act) under QAT: the conv's parameters
/// and child "bn" as in QATConvBn2d.
class QATConvBnReLU2d : public QATConvBase {
 public:
  QATConvBnReLU2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm> bn, const QConfig& q,
                  FusedActivation act = FusedActivation::relu)
      : QATConvBase(act == FusedActivation::relu6 ? "QATConvBnReLU62d" : "QATConvBnReLU2d", conv, std::move(bn), act,
                    q) {}
};

/// Linear (+ BatchNorm1d) (+ ReLU/ReLU6) under QAT. Input [..., in].
class QATLinearBase : public QATLayer {
 public:
  autograd::Variable forward(const autograd::Variable& x) override;
  std::string extra_repr() const override;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  runtime::QLayer to_qlayer() override;

 protected:
  QATLinearBase(const char* type_name, const nn::Linear& linear, std::shared_ptr<nn::BatchNorm> bn, FusedActivation act,
                const QConfig& qconfig);

 private:
  int64_t in_, out_;
};

/// Linear under QAT, without batch norm or activation. Shares the linear's
/// weight and bias Variables (registered as "weight" and "bias"); ValueError for
/// a qconfig QATConv2d rejects. Input [..., in_features].
class QATLinear : public QATLinearBase {
 public:
  QATLinear(const nn::Linear& l, const QConfig& q) : QATLinearBase("QATLinear", l, nullptr, FusedActivation::none, q) {}
};
/// Linear + ReLU (act relu) or ReLU6 (act relu6, type "QATLinearReLU6") under
/// QAT; shares the linear's parameters.
class QATLinearReLU : public QATLinearBase {
 public:
  QATLinearReLU(const nn::Linear& l, const QConfig& q, FusedActivation act = FusedActivation::relu)
      : QATLinearBase(act == FusedActivation::relu6 ? "QATLinearReLU6" : "QATLinearReLU", l, nullptr, act, q) {}
};
/// Linear + BatchNorm1d (+ ReLU/ReLU6 unless act is none) under QAT: shares the
/// linear's parameters and takes bn as child "bn" (ValueError as in QATConvBn2d).
/// The float path needs a 2-D input [N, in] (ShapeError otherwise).
class QATLinearBn1d : public QATLinearBase {
 public:
  QATLinearBn1d(const nn::Linear& l, std::shared_ptr<nn::BatchNorm> bn, const QConfig& q,
                FusedActivation act = FusedActivation::none)
      : QATLinearBase(act == FusedActivation::none   ? "QATLinearBn1d"
                      : act == FusedActivation::relu ? "QATLinearBnReLU1d"
                                                     : "QATLinearBnReLU61d",
                      l, std::move(bn), act, q) {}
};

/// A residual add (+ ReLU) under QAT: relu(a + b) then the output
/// quantizer ("output_fake_quant"). In eval mode with both inputs' quantizers
/// linked, it runs the runtime's integer add (quant/runtime/qmath.h
/// requantize_add) on their codes, as the exported model does.
class QATAdd : public nn::BinaryModule {
 public:
  /// relu: fuse a ReLU after the sum. ValueError when q is invalid or its
  /// activation config is per channel (the output is quantized per tensor).
  QATAdd(bool relu, const QConfig& q);
  autograd::Variable forward2(const autograd::Variable& a, const autograd::Variable& b) override;
  bool relu() const { return relu_; }
  /// A reference to child "output_fake_quant", valid until that child is
  /// replaced or the module is destroyed.
  FakeQuantize& output_fake_quant() const;
  /// The quantizers whose codes the two inputs carry (null: unknown).
  void set_input_quantizers(const std::shared_ptr<FakeQuantize>& a, const std::shared_ptr<FakeQuantize>& b);
  /// Input i's quantizer (i must be 0 or 1, unchecked). Held weakly: null when
  /// unlinked or its module no longer exists.
  std::shared_ptr<FakeQuantize> input_quantizer(int i) const { return in_[i].lock(); }
  /// Eval through the integer add when possible (the default), else float.
  void set_int8_eval(bool on) { int8_eval_ = on; }
  /// "" when eval mode runs the integer add, else the reason it cannot.
  std::string int8_blocker() const;
  std::string extra_repr() const override { return relu_ ? "relu" : ""; }

 private:
  bool relu_;
  std::weak_ptr<FakeQuantize> in_[2];
  bool int8_eval_ = true;
};

/// Average pooling (global, or a k x k window) under QAT. Its output keeps
/// the input's qparams (as in torch.ao): training averages in float and
/// fake-quantizes the result with the input quantizer's current qparams (no
/// observer of its own); eval mode runs the runtime's integer average pool on
/// the input codes, as the exported model does.
class QATAvgPool : public nn::Module {
 public:
  /// kernel {0, 0}: global average pooling. A stride of 0 means the kernel
  /// size. ValueError for a negative kernel or padding, or a kernel 0 along one
  /// axis only.
  QATAvgPool(std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding);
  autograd::Variable forward(const autograd::Variable& x) override;
  bool global() const { return kernel_[0] == 0; }
  std::array<int64_t, 2> kernel() const { return kernel_; }
  std::array<int64_t, 2> stride() const { return stride_; }
  std::array<int64_t, 2> padding() const { return padding_; }
  /// The quantizer whose codes the input carries; its qparams are also the
  /// output's. Held weakly (null: unknown; the float path then leaves the output unquantized).
  void set_input_quantizer(const std::shared_ptr<FakeQuantize>& q) { in_ = q; }
  std::shared_ptr<FakeQuantize> input_quantizer() const { return in_.lock(); }
  /// Eval through the integer pool when possible (the default), else float.
  void set_int8_eval(bool on) { int8_eval_ = on; }
  /// "" when eval mode runs the integer pool, else the reason it cannot.
  std::string int8_blocker() const;
  std::string extra_repr() const override;

 private:
  std::array<int64_t, 2> kernel_, stride_, padding_;
  std::weak_ptr<FakeQuantize> in_;
  bool int8_eval_ = true;
};

/// The input boundary: fake-quantizes the model's input with the activation
/// config (child "output_fake_quant"); the int8 runtime's quantize op.
class QATQuantStub : public nn::Module {
 public:
  /// ValueError when q is invalid or its activation config is per channel.
  explicit QATQuantStub(const QConfig& q);
  autograd::Variable forward(const autograd::Variable& x) override;
  /// The input quantizer: a reference to child "output_fake_quant", valid until
  /// that child is replaced or the stub is destroyed.
  FakeQuantize& output_fake_quant() const;
};

}  // namespace qforge::quant
