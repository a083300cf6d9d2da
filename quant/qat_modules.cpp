#include "quant/qat_modules.h"

#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "core/error.h"
#include "quant/fold.h"

namespace qforge::quant {

using autograd::Variable;

namespace {

Variable activate(const Variable& y, FusedActivation act) {
  switch (act) {
    case FusedActivation::relu:
      return autograd::relu(y);
    case FusedActivation::relu6:
      return autograd::relu6(y);
    case FusedActivation::none:
      break;
  }
  return y;
}

const char* act_name(FusedActivation act) {
  return act == FusedActivation::relu ? "relu" : act == FusedActivation::relu6 ? "relu6" : "none";
}

/// 1 / factor per channel, shaped for broadcasting over the layer's output
/// (0 where the factor is 0: that channel's folded weight is 0, and the
/// batch norm's output there is beta whatever the conv produced).
Tensor inverse_factor(const Tensor& factor, const Shape& shape) {
  Tensor inv = Tensor::empty(factor.shape());
  const float* pf = factor.data<float>();
  float* pi = inv.data<float>();
  for (int64_t c = 0; c < factor.numel(); ++c) {
    const float inv = 1.f / pf[c];
    pi[c] = std::isfinite(inv) ? inv : 0.f;  // 0 or subnormal factors
  }
  return inv.reshape(shape);
}

/// Weights are per output channel (axis 0) or per tensor; activations per
/// tensor or per channel along axis 1 (NCHW channels, or a linear output's
/// features).
void check_axes(const QConfig& q, const char* who) {
  QF_CHECK(!q.weight.spec.per_channel || q.weight.spec.axis == 0)
      << who << ": per-channel weights are quantized along axis 0 (output channels), the config says axis "
      << q.weight.spec.axis;
  QF_CHECK(!q.activation.spec.per_channel || q.activation.spec.axis == 1)
      << who << ": per-channel activations are quantized along axis 1 (channels), the config says axis "
      << q.activation.spec.axis;
}

void check_bn(const std::shared_ptr<nn::BatchNorm>& bn, int64_t channels, const char* who) {
  if (!bn) return;
  QF_CHECK(bn->spec().num_features == channels) << who << ": the batch norm has " << bn->spec().num_features
                                                << " features but the layer has " << channels << " output channels";
  QF_CHECK(bn->spec().track_running_stats)
      << who << ": the batch norm must track running statistics to be folded (track_running_stats=false)";
}

/// The folded (or plain) weight and bias of a layer, without gradient.
std::pair<Tensor, Tensor> folded_pair(nn::Module& m, nn::BatchNorm* bn) {
  autograd::NoGradGuard ng;
  const Variable w = m.param("weight");
  const Variable b = m.has_param("bias") ? m.param("bias") : Variable();
  if (!bn) return {w.value().clone(), b.defined() ? b.value().clone() : Tensor()};
  FoldedConvBn f = fold_conv_bn(w, b, *bn);
  return {f.weight.value(), f.bias.value()};
}

}  // namespace

std::string act_blocker(const FakeQuantize& fq, const char* which) {
  const QuantSpec& s = fq.config().spec;
  if (s.per_channel) return std::string(which) + " activations are per channel (the runtime takes per tensor)";
  if (fq.qmin() < 0 || fq.qmax() > 255)
    return std::string(which) + " activations are " + s.describe() + " (the runtime takes unsigned codes)";
  return "";
}

runtime::WeightQParams weight_qparams(FakeQuantize& fq, int64_t channels) {
  const QParams p = fq.qparams();
  runtime::WeightQParams w;
  w.qmin = p.qmin;
  w.qmax = p.qmax;
  for (int64_t c = 0; c < channels; ++c) {
    const size_t i = p.per_channel() ? static_cast<size_t>(c) : 0;
    QF_CHECK(p.zero_point[i] == 0) << "int8 layer: weight zero point " << p.zero_point[i] << " of channel " << c
                                   << " is not 0 (the runtime takes symmetric weights)";
    w.scale.push_back(p.scale[i]);
  }
  return w;
}


// ---- shared by conv and linear ---------------------------------------------------

QATLayer::QATLayer(const char* type_name, int64_t out_channels, std::shared_ptr<nn::BatchNorm> bn, FusedActivation act,
                   const QConfig& qconfig)
    : nn::Module(type_name), act_(act), qconfig_(qconfig) {
  qconfig_.validate(type_name);
  check_axes(qconfig_, type_name);
  check_bn(bn, out_channels, type_name);
  if (bn) register_module("bn", std::move(bn));
  register_module("weight_fake_quant", std::make_shared<FakeQuantize>(qconfig_.weight, out_channels));
  register_module("output_fake_quant", std::make_shared<FakeQuantize>(qconfig_.activation, out_channels));
}

nn::BatchNorm* QATLayer::bn() const {
  for (const auto& [n, m] : named_children())
    if (n == "bn") return static_cast<nn::BatchNorm*>(m.get());
  return nullptr;
}

FakeQuantize& QATLayer::weight_fake_quant() const { return static_cast<FakeQuantize&>(child("weight_fake_quant")); }
FakeQuantize& QATLayer::output_fake_quant() const { return static_cast<FakeQuantize&>(child("output_fake_quant")); }

void QATLayer::freeze_bn_stats(bool frozen) {
  if (auto* b = bn()) b->set_frozen(frozen);
}

std::pair<Tensor, Tensor> QATLayer::folded_weight_and_bias() { return folded_pair(*this, bn()); }

runtime::ActQParams runtime_act_qparams(FakeQuantize& fq, const std::string& where) {
  QF_CHECK(fq.has_qparams()) << where << ": the quantizer has no qparams (train or calibrate first)";
  const QParams p = fq.qparams();
  QF_CHECK(!p.per_channel() && p.qmin >= 0 && p.qmax <= 255)
      << where << ": " << fq.config().spec.describe() << " activations; the runtime takes unsigned per-tensor ones";
  runtime::ActQParams a;
  a.scale = p.scale[0];
  a.zero_point = p.zero_point[0];
  a.qmin = p.qmin;
  a.qmax = p.qmax;
  return a;
}

// ---- int8 eval ---------------------------------------------------------------

std::string QATLayer::int8_blocker() {
  const auto in = input_quantizer();
  if (!in)
    return "no input quantizer is linked (the layer is not in a Sequential chain of quantized layers that starts "
           "at a QuantStub)";
  for (FakeQuantize* fq : {in.get(), &weight_fake_quant(), &output_fake_quant()}) {
    if (!fq->fake_quant_enabled()) return "fake quant is off";
    if (fq->calibrating()) return "a quantizer is calibrating";
    if (!fq->has_qparams()) return "a quantizer has no qparams yet";
  }
  if (auto why = act_blocker(*in, "input"); !why.empty()) return why;
  if (auto why = act_blocker(output_fake_quant(), "output"); !why.empty()) return why;
  const QuantSpec& ws = weight_fake_quant().config().spec;
  if (!ws.is_signed || ws.scheme != QScheme::symmetric)
    return "weights are " + ws.describe() + " (the runtime takes signed symmetric weights)";
  return "";
}

// ---- conv ------------------------------------------------------------------

QATConvBase::QATConvBase(const char* type_name, const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm> bn,
                         FusedActivation act, const QConfig& qconfig)
    : QATLayer(type_name, conv.spec().out_channels, std::move(bn), act, qconfig), spec_(conv.spec()) {
  register_parameter("weight", conv.param("weight"));
  if (conv.has_param("bias")) register_parameter("bias", conv.param("bias"));
}

runtime::QLayer QATConvBase::to_qlayer() {
  const std::string why = int8_blocker();
  QF_CHECK(why.empty()) << type_name() << ": no int8 layer: " << why;
  auto [w, b] = folded_weight_and_bias();
  return runtime::make_qlayer(w, b, weight_qparams(weight_fake_quant(), spec_.out_channels),
                              runtime_act_qparams(*input_quantizer(), "input of " + type_name()),
                              runtime_act_qparams(output_fake_quant(), "output of " + type_name()), activation(),
                              spec_.stride, spec_.padding, spec_.dilation, spec_.groups);
}

Variable QATConvBase::forward(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() == 4 && x.size(1) == spec_.in_channels)
      << type_name() << "(" << extra_repr() << "): input must be [N, " << spec_.in_channels << ", H, W], got "
      << x.value().desc();
  if (use_int8_eval()) {
    const runtime::QLayer L = to_qlayer();
    const Tensor codes = runtime::qconv2d(L, runtime::to_nhwc(runtime::quantize(x.value(), L.input)));
    return Variable(runtime::dequantize(runtime::to_nchw(codes), L.output));
  }
  autograd::Conv2dOptions opt;
  opt.stride = spec_.stride;
  opt.padding = spec_.padding;
  opt.dilation = spec_.dilation;
  opt.groups = spec_.groups;
  const Variable& w = param("weight");
  const Variable b = has_param("bias") ? param("bias") : Variable();
  nn::BatchNorm* norm = bn();
  Variable y;
  if (!norm) {
    y = autograd::conv2d(x, weight_fake_quant()(w), b, opt);
  } else {
    FoldedConvBn f = fold_conv_bn(w, b, *norm);
    const Variable wq = weight_fake_quant()(f.weight);
    if (is_training()) {
      // conv(x, wq) / factor per output channel (torch.ao divides the output);
      // the same product, scaling the small weight tensor instead of the
      // activations, saves two passes over the conv output.
      const int64_t C = spec_.out_channels;
      const Variable wq_unfolded = autograd::mul(wq, Variable(inverse_factor(f.factor, {C, 1, 1, 1})));
      y = autograd::conv2d(x, wq_unfolded, b, opt);
      FakeQuantize& fq = output_fake_quant();
      if (activation() == FusedActivation::relu) {  // batch norm, ReLU (and fake quant when it can) in one op
        if (fq.fusable()) return norm->forward_relu(y, fq.fused_hook());
        return fq(norm->forward_relu(y));
      }
      // Batch norm and fake quant in one op (a two-sided STE band).
      if (activation() == FusedActivation::none && fq.fusable()) return norm->forward_fake_quant(y, fq.fused_hook());
      y = (*norm)(y);
    } else {
      y = autograd::conv2d(x, wq, f.bias, opt);
    }
  }
  return output_fake_quant()(activate(y, activation()));
}

std::string QATConvBase::extra_repr() const {
  std::ostringstream s;
  s << spec_.in_channels << ", " << spec_.out_channels << ", kernel=" << spec_.kernel[0] << "x" << spec_.kernel[1];
  if (spec_.stride[0] != 1 || spec_.stride[1] != 1) s << ", stride=" << spec_.stride[0] << "x" << spec_.stride[1];
  if (spec_.padding[0] || spec_.padding[1]) s << ", padding=" << spec_.padding[0] << "x" << spec_.padding[1];
  if (spec_.groups != 1) s << ", groups=" << spec_.groups;
  if (activation() != FusedActivation::none) s << ", act=" << act_name(activation());
  return s.str();
}

// ---- linear ----------------------------------------------------------------

QATLinearBase::QATLinearBase(const char* type_name, const nn::Linear& linear, std::shared_ptr<nn::BatchNorm> bn,
                             FusedActivation act, const QConfig& qconfig)
    : QATLayer(type_name, linear.out_features(), std::move(bn), act, qconfig),
      in_(linear.in_features()),
      out_(linear.out_features()) {
  register_parameter("weight", linear.param("weight"));
  if (linear.has_param("bias")) register_parameter("bias", linear.param("bias"));
}

runtime::QLayer QATLinearBase::to_qlayer() {
  const std::string why = int8_blocker();
  QF_CHECK(why.empty()) << type_name() << ": no int8 layer: " << why;
  auto [w, b] = folded_weight_and_bias();
  return runtime::make_qlayer(w, b, weight_qparams(weight_fake_quant(), out_),
                              runtime_act_qparams(*input_quantizer(), "input of " + type_name()),
                              runtime_act_qparams(output_fake_quant(), "output of " + type_name()), activation());
}

Variable QATLinearBase::forward(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() >= 1 && x.size(-1) == in_)
      << type_name() << "(" << in_ << ", " << out_ << "): input " << x.value().desc() << " must end in " << in_;
  if (use_int8_eval()) {
    const runtime::QLayer L = to_qlayer();
    Shape out_shape = x.shape();
    out_shape.back() = out_;
    const Tensor x2 = x.value().reshape({x.numel() / in_, in_});
    const Tensor codes = runtime::qlinear(L, runtime::quantize(x2, L.input));
    return Variable(runtime::dequantize(codes, L.output).reshape(out_shape));
  }
  const Variable& w = param("weight");
  const Variable b = has_param("bias") ? param("bias") : Variable();
  nn::BatchNorm* norm = bn();
  Variable y;
  if (!norm) {
    y = autograd::linear(x, weight_fake_quant()(w), b);
  } else {
    QF_CHECK_SHAPE(x.ndim() == 2) << type_name() << ": input must be [N, " << in_ << "] (BatchNorm1d follows), got "
                                  << x.value().desc();
    FoldedConvBn f = fold_conv_bn(w, b, *norm);
    const Variable wq = weight_fake_quant()(f.weight);
    if (is_training()) {
      // As for convolutions: the weights' rows scaled instead of the output.
      y = autograd::linear(x, autograd::mul(wq, Variable(inverse_factor(f.factor, {out_, 1}))), b);
      y = (*norm)(y);
    } else {
      y = autograd::linear(x, wq, f.bias);
    }
  }
  return output_fake_quant()(activate(y, activation()));
}

std::string QATLinearBase::extra_repr() const {
  std::ostringstream s;
  s << in_ << ", " << out_;
  if (activation() != FusedActivation::none) s << ", act=" << act_name(activation());
  return s.str();
}

// ---- quant stub ------------------------------------------------------------

QATQuantStub::QATQuantStub(const QConfig& q) : nn::Module("QATQuantStub") {
  q.validate("QATQuantStub");
  QF_CHECK(!q.activation.spec.per_channel) << "QATQuantStub: the input is quantized per tensor; the activation "
                                              "config asks for per-channel ("
                                           << q.activation.spec.describe() << ")";
  register_module("output_fake_quant", std::make_shared<FakeQuantize>(q.activation, 1));
}

Variable QATQuantStub::forward(const Variable& x) { return output_fake_quant()(x); }

FakeQuantize& QATQuantStub::output_fake_quant() const { return static_cast<FakeQuantize&>(child("output_fake_quant")); }

// ---- add -------------------------------------------------------------------------

namespace {

/// Why an activation quantizer cannot feed the integer path ("" when it can).
std::string input_blocker(const std::shared_ptr<FakeQuantize>& q, const char* which) {
  if (!q) return std::string("the ") + which + " quantizer is not linked (not in a quantized chain)";
  if (!q->fake_quant_enabled()) return "fake quant is off";
  if (q->calibrating()) return "a quantizer is calibrating";
  if (!q->has_qparams()) return "a quantizer has no qparams yet";
  return act_blocker(*q, which);
}

}  // namespace

QATAdd::QATAdd(bool relu, const QConfig& q) : nn::BinaryModule("QATAdd"), relu_(relu) {
  q.validate("QATAdd");
  QF_CHECK(!q.activation.spec.per_channel) << "QATAdd: its output is quantized per tensor; the activation config "
                                              "asks for per-channel ("
                                           << q.activation.spec.describe() << ")";
  register_module("output_fake_quant", std::make_shared<FakeQuantize>(q.activation, 1));
}

FakeQuantize& QATAdd::output_fake_quant() const { return static_cast<FakeQuantize&>(child("output_fake_quant")); }

void QATAdd::set_input_quantizers(const std::shared_ptr<FakeQuantize>& a, const std::shared_ptr<FakeQuantize>& b) {
  in_[0] = a;
  in_[1] = b;
}

std::string QATAdd::int8_blocker() const {
  for (int i = 0; i < 2; ++i)
    if (auto why = input_blocker(input_quantizer(i), i == 0 ? "first input" : "second input"); !why.empty())
      return why;
  return input_blocker(std::dynamic_pointer_cast<FakeQuantize>(get_module("output_fake_quant")), "output");
}

Variable QATAdd::forward2(const Variable& a, const Variable& b) {
  QF_CHECK_SHAPE(a.value().shape() == b.value().shape())
      << "QATAdd: shapes differ: " << a.value().desc() << " and " << b.value().desc();
  if (!is_training() && int8_eval_ && int8_blocker().empty()) {
    const runtime::ActQParams qa = runtime_act_qparams(*input_quantizer(0), "first input of QATAdd"),
                              qb = runtime_act_qparams(*input_quantizer(1), "second input of QATAdd"),
                              qo = runtime_act_qparams(output_fake_quant(), "output of QATAdd");
    // Elementwise, so the NCHW layout needs no transpose.
    const Tensor codes = runtime::qadd(runtime::quantize(a.value(), qa), qa, runtime::quantize(b.value(), qb), qb, qo,
                                       relu_ ? Activation::relu : Activation::none);
    return Variable(runtime::dequantize(codes, qo));
  }
  FakeQuantize& fq = output_fake_quant();
  if (relu_ && fq.fusable()) return autograd::add_relu(a, b, fq.fused_hook());  // add, ReLU and fake quant in one op
  return fq(relu_ ? autograd::add_relu(a, b) : autograd::add(a, b));
}

// ---- average pooling -------------------------------------------------------------

QATAvgPool::QATAvgPool(std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding)
    : nn::Module("QATAvgPool"), kernel_(kernel), stride_(stride), padding_(padding) {
  for (int d = 0; d < 2; ++d) {
    if (kernel_[d] != 0 && stride_[d] == 0) stride_[d] = kernel_[d];
    QF_CHECK(kernel_[d] >= 0 && padding_[d] >= 0 && (kernel_[0] == 0) == (kernel_[d] == 0))
        << "QATAvgPool: bad window";
  }
}

std::string QATAvgPool::int8_blocker() const { return input_blocker(input_quantizer(), "input"); }

std::string QATAvgPool::extra_repr() const {
  if (global()) return "global";
  std::ostringstream s;
  s << "kernel=" << kernel_[0] << "x" << kernel_[1] << ", stride=" << stride_[0] << "x" << stride_[1];
  return s.str();
}

Variable QATAvgPool::forward(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() == 4) << "QATAvgPool: input must be [N, C, H, W], got " << x.value().desc();
  const auto in = input_quantizer();
  if (!is_training() && int8_eval_ && int8_blocker().empty()) {
    const runtime::ActQParams q = runtime_act_qparams(*in, "input of QATAvgPool");
    const Tensor codes = runtime::to_nhwc(runtime::quantize(x.value(), q));
    const Tensor out = global() ? runtime::qglobal_avg_pool(codes, q, q)
                                : runtime::qavg_pool2d(codes, q, q, kernel_, stride_, padding_);
    return Variable(runtime::dequantize(runtime::to_nchw(out), q));
  }
  Variable y;
  if (global()) {
    y = autograd::global_avg_pool2d(x);
  } else {
    autograd::Pool2dOptions o;
    o.kernel = kernel_;
    o.stride = stride_;
    o.padding = padding_;
    y = autograd::avg_pool2d(x, o);
  }
  // Back onto the input's grid, as the integer pool does (no quantizer: the
  // float value passes through).
  if (in && in->fake_quant_enabled() && in->has_qparams() && act_blocker(*in, "input").empty()) {
    const QParams p = in->qparams();
    y = autograd::fake_quantize(y, Tensor::from_vector<float>(p.scale, {1}),
                                Tensor::from_vector<int32_t>(p.zero_point, {1}), p.qmin, p.qmax);
  }
  return y;
}

}  // namespace qforge::quant
