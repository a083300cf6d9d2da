#include "nn/layers.h"

#include <cmath>
#include <sstream>
#include <typeinfo>

namespace qforge::nn {

namespace {

/// PyTorch's default init for a weight and its bias.
void init_weight_bias(Tensor& w, Tensor* b, Generator& gen) {
  kaiming_uniform_(w, std::sqrt(5.0), gen);
  if (b) {
    const int64_t fi = fan_in(w);
    const double bound = fi > 0 ? 1.0 / std::sqrt(static_cast<double>(fi)) : 0.0;
    uniform_(*b, -bound, bound, gen);
  }
}

std::string pair_str(const std::array<int64_t, 2>& a) {
  return a[0] == a[1] ? std::to_string(a[0]) : std::to_string(a[0]) + "x" + std::to_string(a[1]);
}

}  // namespace

// ---- Linear --------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen)
    : Module("Linear"), in_(in_features), out_(out_features) {
  QF_CHECK(in_features >= 1 && out_features >= 1)
      << "Linear: in_features and out_features must be >= 1, got " << in_features << " and " << out_features;
  Tensor w = Tensor::empty({out_features, in_features});
  Tensor b = bias ? Tensor::empty({out_features}) : Tensor();
  init_weight_bias(w, bias ? &b : nullptr, gen);
  register_parameter("weight", w);
  if (bias) register_parameter("bias", b);
}

Variable Linear::forward(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() >= 1 && x.size(-1) == in_)
      << "Linear(" << in_ << ", " << out_ << "): input " << x.value().desc() << " must end in " << in_;
  return autograd::linear(x, param("weight"), bias());
}

std::string Linear::extra_repr() const {
  return std::to_string(in_) + ", " + std::to_string(out_) + (has_param("bias") ? "" : ", bias=false");
}

// ---- Conv2d --------------------------------------------------------------------

Conv2d::Conv2d(const Conv2dSpec& spec, Generator& gen) : Module("Conv2d"), spec_(spec) {
  const auto& s = spec_;
  QF_CHECK(s.in_channels >= 1 && s.out_channels >= 1 && s.groups >= 1)
      << "Conv2d: channels and groups must be >= 1, got in " << s.in_channels << ", out " << s.out_channels
      << ", groups " << s.groups;
  QF_CHECK(s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0)
      << "Conv2d: in_channels " << s.in_channels << " and out_channels " << s.out_channels
      << " must both be divisible by groups " << s.groups;
  for (int i = 0; i < 2; ++i) {
    QF_CHECK(s.kernel[i] >= 1 && s.stride[i] >= 1 && s.dilation[i] >= 1 && s.padding[i] >= 0)
        << "Conv2d: kernel, stride and dilation must be >= 1 and padding >= 0, got kernel " << pair_str(s.kernel)
        << ", stride " << pair_str(s.stride) << ", dilation " << pair_str(s.dilation) << ", padding "
        << pair_str(s.padding);
  }
  Tensor w = Tensor::empty({s.out_channels, s.in_channels / s.groups, s.kernel[0], s.kernel[1]});
  Tensor b = s.bias ? Tensor::empty({s.out_channels}) : Tensor();
  init_weight_bias(w, s.bias ? &b : nullptr, gen);
  register_parameter("weight", w);
  if (s.bias) register_parameter("bias", b);
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias, int64_t groups,
               Generator& gen)
    : Conv2d(Conv2dSpec{in, out, {kernel, kernel}, {stride, stride}, {padding, padding}, {1, 1}, groups, bias},
             gen) {}

autograd::Conv2dOptions Conv2d::options() const {
  autograd::Conv2dOptions o;
  o.stride = spec_.stride;
  o.padding = spec_.padding;
  o.dilation = spec_.dilation;
  o.groups = spec_.groups;
  return o;
}

Variable Conv2d::forward(const Variable& x) {
  QF_CHECK_SHAPE(x.ndim() == 4 && x.size(1) == spec_.in_channels)
      << "Conv2d(" << extra_repr() << "): input must be [N, " << spec_.in_channels << ", H, W], got "
      << x.value().desc();
  return autograd::conv2d(x, param("weight"), bias(), options());
}

std::string Conv2d::extra_repr() const {
  std::ostringstream os;
  os << spec_.in_channels << ", " << spec_.out_channels << ", kernel=" << pair_str(spec_.kernel);
  if (spec_.stride != std::array<int64_t, 2>{1, 1}) os << ", stride=" << pair_str(spec_.stride);
  if (spec_.padding != std::array<int64_t, 2>{0, 0}) os << ", padding=" << pair_str(spec_.padding);
  if (spec_.dilation != std::array<int64_t, 2>{1, 1}) os << ", dilation=" << pair_str(spec_.dilation);
  if (spec_.groups != 1) os << ", groups=" << spec_.groups;
  if (!spec_.bias) os << ", bias=false";
  return os.str();
}

// ---- BatchNorm -------------------------------------------------------------------

BatchNorm::BatchNorm(const char* type_name, int input_ndim, const BatchNormSpec& spec)
    : Module(type_name), spec_(spec), input_ndim_(input_ndim) {
  QF_CHECK(spec.num_features >= 1) << type_name << ": num_features must be >= 1, got " << spec.num_features;
  QF_CHECK(spec.eps > 0) << type_name << ": eps must be > 0, got " << spec.eps;
  QF_CHECK(spec.momentum >= 0 && spec.momentum <= 1)
      << type_name << ": momentum must be in [0, 1], got " << spec.momentum;
  const int64_t C = spec.num_features;
  if (spec.affine) {
    register_parameter("weight", Tensor::ones({C}));
    register_parameter("bias", Tensor::zeros({C}));
  }
  if (spec.track_running_stats) {
    register_buffer("running_mean", Tensor::zeros({C}));
    register_buffer("running_var", Tensor::ones({C}));
  }
}

Variable BatchNorm::forward(const Variable& x) { return run(x, false); }
Variable BatchNorm::forward_relu(const Variable& x, autograd::FakeQuantHook fake_quant) {
  return run(x, true, std::move(fake_quant));
}

Variable BatchNorm::forward_fake_quant(const Variable& x, autograd::FakeQuantHook fake_quant) {
  QF_CHECK(static_cast<bool>(fake_quant)) << type_name() << "::forward_fake_quant: no fake quant hook";
  return run(x, false, std::move(fake_quant));
}

Variable BatchNorm::run(const Variable& x, bool relu, autograd::FakeQuantHook fake_quant) {
  QF_CHECK_SHAPE(x.ndim() == input_ndim_ && x.size(1) == spec_.num_features)
      << type_name() << "(" << spec_.num_features << "): input must be "
      << (input_ndim_ == 2 ? "[N, C]" : "[N, C, H, W]") << " with C = " << spec_.num_features << ", got "
      << x.value().desc();
  autograd::BatchNormOptions o;
  o.training = is_training() && !frozen_;
  o.momentum = spec_.momentum;
  o.eps = spec_.eps;
  o.relu = relu;
  o.output_fake_quant = std::move(fake_quant);
  return autograd::batch_norm(x, running_mean(), running_var(), weight(), bias(), o);
}

std::string BatchNorm::extra_repr() const {
  std::ostringstream os;
  os << spec_.num_features;
  if (spec_.eps != 1e-5) os << ", eps=" << spec_.eps;
  if (spec_.momentum != 0.1) os << ", momentum=" << spec_.momentum;
  if (!spec_.affine) os << ", affine=false";
  if (!spec_.track_running_stats) os << ", track_running_stats=false";
  return os.str();
}

// ---- pools -------------------------------------------------------------------------

namespace {

autograd::Pool2dOptions pool_options(const char* what, int64_t kernel, int64_t stride, int64_t padding) {
  QF_CHECK(kernel >= 1 && stride >= 0 && padding >= 0 && padding * 2 <= kernel)
      << what << ": need kernel >= 1, stride >= 0 (0 = kernel) and 0 <= padding <= kernel/2, got kernel "
      << kernel << ", stride " << stride << ", padding " << padding;
  autograd::Pool2dOptions o;
  o.kernel = {kernel, kernel};
  o.stride = {stride, stride};
  o.padding = {padding, padding};
  return o;
}

std::string pool_repr(const autograd::Pool2dOptions& o) {
  std::ostringstream os;
  os << "kernel=" << pair_str(o.kernel);
  if (o.stride[0] != 0) os << ", stride=" << pair_str(o.stride);
  if (o.padding != std::array<int64_t, 2>{0, 0}) os << ", padding=" << pair_str(o.padding);
  return os.str();
}

}  // namespace

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : Module("MaxPool2d"), opt_(pool_options("MaxPool2d", kernel, stride, padding)) {}

std::string MaxPool2d::extra_repr() const { return pool_repr(opt_); }

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding, bool count_include_pad)
    : Module("AvgPool2d"), opt_(pool_options("AvgPool2d", kernel, stride, padding)) {
  opt_.count_include_pad = count_include_pad;
}

std::string AvgPool2d::extra_repr() const { return pool_repr(opt_); }

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t out_h, int64_t out_w)
    : Module("AdaptiveAvgPool2d"), out_h_(out_h), out_w_(out_w) {
  QF_CHECK(out_h >= 1 && out_w >= 1) << "AdaptiveAvgPool2d: output size must be >= 1, got " << out_h << "x"
                                     << out_w;
}

Variable AdaptiveAvgPool2d::forward(const Variable& x) {
  if (out_h_ == 1 && out_w_ == 1) return autograd::global_avg_pool2d(x);
  return autograd::adaptive_avg_pool2d(x, out_h_, out_w_);
}

std::string AdaptiveAvgPool2d::extra_repr() const { return pair_str({out_h_, out_w_}); }

// ---- Dropout -----------------------------------------------------------------------

Dropout::Dropout(double p) : Module("Dropout"), p_(p) {
  QF_CHECK(p >= 0 && p < 1) << "Dropout: p must be in [0, 1), got " << p;
}

Variable Dropout::forward(const Variable& x) { return autograd::dropout(x, p_, is_training()); }

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p_;
  return os.str();
}

// ---- Sequential --------------------------------------------------------------------

Sequential::Sequential(std::initializer_list<ModulePtr> modules) : Module("Sequential") {
  for (const auto& m : modules) push_back(m);
}

Sequential& Sequential::push_back(ModulePtr m) { return push_back(std::to_string(size()), std::move(m)); }

Sequential& Sequential::push_back(const std::string& name, ModulePtr m) {
  add_child(name, std::move(m));
  return *this;
}

Variable Sequential::forward(const Variable& x) {
  Variable h = x;
  const auto& children = named_children();
  for (size_t i = 0; i < children.size(); ++i) {
    Module* c = children[i].second.get();
    // Exact types only: a subclass may override forward().
    const std::type_info& t = typeid(*c);
    if (i + 1 < children.size() && (t == typeid(BatchNorm2d) || t == typeid(BatchNorm1d)) &&
        typeid(*children[i + 1].second) == typeid(ReLU)) {
      h = static_cast<BatchNorm*>(c)->forward_relu(h);
      ++i;
      continue;
    }
    h = c->forward(h);
  }
  return h;
}

Variable BinaryModule::forward(const Variable&) {
  QF_THROW(ValueError) << type_name() << " takes two inputs: its parent block calls forward2(a, b)";
  __builtin_unreachable();
}

Variable Add::forward2(const Variable& a, const Variable& b) {
  QF_CHECK_SHAPE(a.value().shape() == b.value().shape())
      << "Add: shapes differ: " << a.value().desc() << " and " << b.value().desc();
  return relu_ ? autograd::add_relu(a, b) : autograd::add(a, b);
}

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t stride, Generator& gen) : Module("BasicBlock") {
  QF_CHECK(in >= 1 && out >= 1 && stride >= 1) << "BasicBlock: bad widths " << in << " -> " << out << " or stride "
                                                << stride;
  auto main = std::make_shared<Sequential>();
  main->push_back("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, false, 1, gen));
  main->push_back("bn1", std::make_shared<BatchNorm2d>(out));
  main->push_back("relu1", std::make_shared<ReLU>());
  main->push_back("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, false, 1, gen));
  main->push_back("bn2", std::make_shared<BatchNorm2d>(out));
  register_module("main", main);
  if (stride != 1 || in != out) {
    auto sc = std::make_shared<Sequential>();
    sc->push_back("conv", std::make_shared<Conv2d>(in, out, 1, stride, 0, false, 1, gen));
    sc->push_back("bn", std::make_shared<BatchNorm2d>(out));
    register_module("shortcut", sc);
  } else {
    register_module("shortcut", std::make_shared<Identity>());
  }
  register_module("add", std::make_shared<Add>(true));
}

Variable BasicBlock::forward(const Variable& x) {
  auto* add = dynamic_cast<BinaryModule*>(get_module("add").get());
  QF_CHECK(add) << "BasicBlock: child 'add' must take two inputs, got " << get_module("add")->type_name();
  return add->forward2(get_module("main")->forward(x), get_module("shortcut")->forward(x));
}

Module& Sequential::operator[](size_t i) const {
  QF_CHECK_INDEX(i < size()) << "Sequential: index " << i << " out of range for " << size() << " children";
  return *named_children()[i].second;
}

}  // namespace qforge::nn
