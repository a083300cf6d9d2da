#include "quant/dynamic.h"

#include <sstream>

#include "autograd/ops.h"
#include "core/error.h"

namespace qforge::quant {

using autograd::Variable;

DynamicLSTM::DynamicLSTM(const nn::LSTM& lstm) : nn::Module("DynamicLSTM"), spec_(lstm.spec()) {
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const auto p = lstm.layer_params(l);
    layers_.push_back(runtime::make_dynamic_lstm_layer(p[0].value(), p[1].value(),
                                                       p[2].defined() ? p[2].value() : Tensor(),
                                                       p[3].defined() ? p[3].value() : Tensor()));
  }
}

Variable DynamicLSTM::forward(const Variable& x) {
  autograd::NoGradGuard ng;
  const Variable seq = nn::lstm_batch_first(spec_, x);
  const Tensor y = runtime::dynamic_lstm(layers_, seq.value());
  if (spec_.last_step_only) return Variable(runtime::last_step(y));
  return spec_.batch_first ? Variable(y) : autograd::permute(Variable(y), {1, 0, 2});
}

DynamicLinear::DynamicLinear(const nn::Linear& linear) : nn::Module("DynamicLinear") {
  const Variable b = linear.bias();
  layer_ = runtime::make_dynamic_linear(linear.param("weight").value(), b.defined() ? b.value() : Tensor());
}

Variable DynamicLinear::forward(const Variable& x) {
  autograd::NoGradGuard ng;
  const int64_t in = layer_.w.in_channels;
  QF_CHECK_SHAPE(x.ndim() >= 1 && x.size(-1) == in)
      << "DynamicLinear(" << in << ", " << layer_.w.out_channels << "): input " << x.value().desc() << " must end in "
      << in;
  Shape out = x.shape();
  out.back() = layer_.w.out_channels;
  const Tensor y = runtime::dynamic_linear(layer_, x.value().reshape({x.numel() / in, in}));
  return Variable(y.reshape(out));
}

std::string DynamicLinear::extra_repr() const {
  std::ostringstream s;
  s << layer_.w.in_channels << ", " << layer_.w.out_channels;
  return s.str();
}

int64_t quantize_dynamic(nn::Module& root, bool linear) {
  std::vector<std::pair<std::string, nn::ModulePtr>> swaps;
  for (const auto& [name, m] : root.named_modules()) {
    if (name.empty()) continue;
    if (m->type_name() == "LSTM") swaps.emplace_back(name, std::make_shared<DynamicLSTM>(static_cast<nn::LSTM&>(*m)));
    if (linear && m->type_name() == "Linear")
      swaps.emplace_back(name, std::make_shared<DynamicLinear>(static_cast<nn::Linear&>(*m)));
  }
  for (auto& [name, m] : swaps) root.replace_module(name, m);
  return static_cast<int64_t>(swaps.size());
}

}  // namespace qforge::quant
