#include "quant/qat_lstm.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "core/error.h"
#include "quant/qat_modules.h"

namespace qforge::quant {

using autograd::Variable;

namespace {

const char* const kGates[4] = {"i", "f", "g", "o"};

std::string suffix(int64_t l) { return "_l" + std::to_string(l); }

}  // namespace

QATLSTM::QATLSTM(const nn::LSTM& lstm, const QConfig& q) : nn::Module("QATLSTM"), spec_(lstm.spec()), qconfig_(q) {
  qconfig_.validate("QATLSTM");
  QF_CHECK(!qconfig_.weight.spec.per_channel || qconfig_.weight.spec.axis == 0)
      << "QATLSTM: per-channel weights must use axis 0 (the gate rows), got axis " << qconfig_.weight.spec.axis;
  QF_CHECK(!qconfig_.activation.spec.per_channel) << "QATLSTM: activations must be per tensor";
  const int64_t H4 = 4 * spec_.hidden_size;
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const std::string s = suffix(l);
    for (const char* p : {"weight_ih", "weight_hh", "bias_ih", "bias_hh"})
      if (lstm.has_param(p + s)) register_parameter(p + s, lstm.param(p + s));
  }
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const std::string s = suffix(l);
    register_module("weight_ih_fake_quant" + s, std::make_shared<FakeQuantize>(qconfig_.weight, H4));
    register_module("weight_hh_fake_quant" + s, std::make_shared<FakeQuantize>(qconfig_.weight, H4));
    for (const char* g : kGates)
      register_module("gate_fake_quant" + s + "_" + g, std::make_shared<FakeQuantize>(qconfig_.activation));
    register_module("hidden_fake_quant" + s, std::make_shared<FakeQuantize>(qconfig_.activation));
    register_buffer("cell_absmax" + s, Tensor::zeros({}));
  }
}

FakeQuantize& QATLSTM::quantizer(int64_t l, const std::string& role) const {
  QF_CHECK_INDEX(l >= 0 && l < spec_.num_layers) << "QATLSTM: layer " << l << " of " << spec_.num_layers;
  const std::string s = suffix(l);
  if (role == "weight_ih" || role == "weight_hh") return static_cast<FakeQuantize&>(child(role + "_fake_quant" + s));
  if (role == "hidden") return static_cast<FakeQuantize&>(child("hidden_fake_quant" + s));
  for (const char* g : kGates)
    if (role == std::string("gate_") + g) return static_cast<FakeQuantize&>(child("gate_fake_quant" + s + "_" + g));
  QF_CHECK_INDEX(false) << "QATLSTM: no quantizer role '" << role
                        << "' (weight_ih, weight_hh, gate_i, gate_f, gate_g, gate_o, hidden)";
  throw;  // unreachable
}

FakeQuantize& QATLSTM::output_fake_quant() const { return quantizer(spec_.num_layers - 1, "hidden"); }

std::string QATLSTM::extra_repr() const { return nn::lstm_repr(spec_); }

Variable QATLSTM::float_forward(const Variable& x) {
  using namespace autograd;
  Variable seq = nn::lstm_batch_first(spec_, x);
  const int64_t N = seq.size(0), T = seq.size(1), H = spec_.hidden_size;
  Variable h_last;
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const std::string s = suffix(l);
    const Variable wi = quantizer(l, "weight_ih")(param("weight_ih" + s));
    const Variable wh = quantizer(l, "weight_hh")(param("weight_hh" + s));
    const Variable bi = spec_.bias ? param("bias_ih" + s) : Variable();
    const Variable bh = spec_.bias ? param("bias_hh" + s) : Variable();
    FakeQuantize& hq = quantizer(l, "hidden");
    FakeQuantize* gq[4] = {&quantizer(l, "gate_i"), &quantizer(l, "gate_f"), &quantizer(l, "gate_g"),
                           &quantizer(l, "gate_o")};
    // The cell range is recorded through all of training (also after the
    // observers freeze, since the weights keep moving) and calibration.
    const bool record = is_training() || hq.calibrating();
    float absmax = buffer("cell_absmax" + s).data<float>()[0];
    const Variable gx = linear(seq, wi, bi);  // [N, T, 4H]: the input projection of every step
    Variable h, c;
    std::vector<Variable> outs;
    for (int64_t t = 0; t < T; ++t) {
      Variable g = reshape(slice(gx, 1, t, t + 1), {N, 4 * H});
      if (h.defined()) g = g + linear(h, wh, bh);
      else if (bh.defined()) g = g + bh;  // h_0 = 0
      const Variable i = sigmoid((*gq[0])(slice(g, 1, 0, H)));
      const Variable f = sigmoid((*gq[1])(slice(g, 1, H, 2 * H)));
      const Variable gg = tanh((*gq[2])(slice(g, 1, 2 * H, 3 * H)));
      const Variable o = sigmoid((*gq[3])(slice(g, 1, 3 * H, 4 * H)));
      c = c.defined() ? f * c + i * gg : i * gg;
      if (record) {
        const Tensor& cv = c.value();
        if (cv.dtype() == DType::f32) {
          const float* p = cv.data<float>();
          for (int64_t k = 0; k < cv.numel(); ++k) absmax = std::max(absmax, std::fabs(p[k]));
        } else {
          for (double v : cv.to_vector()) absmax = std::max(absmax, static_cast<float>(std::fabs(v)));
        }
      }
      h = hq(o * tanh(c));
      outs.push_back(reshape(h, {N, 1, H}));
    }
    if (record) buffer("cell_absmax" + s).data<float>()[0] = absmax;
    seq = T == 1 ? outs[0] : concat(outs, 1);
    h_last = h;
  }
  if (spec_.last_step_only) return h_last;
  return spec_.batch_first ? seq : permute(seq, {1, 0, 2});
}

std::string QATLSTM::int8_blocker() {
  const auto in = input_quantizer();
  if (!in)
    return "no input quantizer is linked (the LSTM is not in a Sequential chain of quantized layers that starts at "
           "a QuantStub)";
  std::vector<FakeQuantize*> all = {in.get()};
  for (int64_t l = 0; l < spec_.num_layers; ++l)
    for (const char* r : {"weight_ih", "weight_hh", "gate_i", "gate_f", "gate_g", "gate_o", "hidden"})
      all.push_back(&quantizer(l, r));
  for (FakeQuantize* fq : all) {
    if (!fq->fake_quant_enabled()) return "fake quant is off";
    if (fq->calibrating()) return "a quantizer is calibrating";
    if (!fq->has_qparams()) return "a quantizer has no qparams yet";
  }
  for (int64_t l = 0; l < spec_.num_layers; ++l)
    if (!(buffer("cell_absmax" + suffix(l)).data<float>()[0] > 0))
      return "the cell state's range has not been observed yet (train or calibrate first)";
  if (auto why = act_blocker(*in, "input"); !why.empty()) return why;
  if (auto why = act_blocker(output_fake_quant(), "hidden"); !why.empty()) return why;
  const QuantSpec& ws = qconfig_.weight.spec;
  if (!ws.is_signed || ws.scheme != QScheme::symmetric)
    return "weights are " + ws.describe() + " (the runtime takes signed symmetric weights)";
  return "";
}

std::vector<runtime::QLstmLayer> QATLSTM::to_qlayers() {
  const std::string why = int8_blocker();
  QF_CHECK(why.empty()) << "QATLSTM: no int8 layers: " << why;
  autograd::NoGradGuard ng;
  const int64_t H4 = 4 * spec_.hidden_size;
  std::vector<runtime::QLstmLayer> out;
  runtime::ActQParams in = runtime_act_qparams(*input_quantizer(), "input of QATLSTM");
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const std::string s = suffix(l);
    std::array<runtime::ActQParams, 4> gates;
    for (int k = 0; k < 4; ++k)
      gates[k] = runtime_act_qparams(quantizer(l, std::string("gate_") + kGates[k]), "gate of QATLSTM");
    const runtime::ActQParams hidden = runtime_act_qparams(quantizer(l, "hidden"), "hidden state of QATLSTM");
    out.push_back(runtime::make_qlstm_layer(
        param("weight_ih" + s).value(), param("weight_hh" + s).value(),
        spec_.bias ? param("bias_ih" + s).value() : Tensor(), spec_.bias ? param("bias_hh" + s).value() : Tensor(),
        weight_qparams(quantizer(l, "weight_ih"), H4), weight_qparams(quantizer(l, "weight_hh"), H4), in, hidden,
        gates, runtime::lstm_cell_frac_bits(buffer("cell_absmax" + s).data<float>()[0])));
    in = hidden;
  }
  return out;
}

Variable QATLSTM::forward(const Variable& x) {
  if (is_training() || !int8_eval_ || !int8_blocker().empty()) return float_forward(x);
  autograd::NoGradGuard ng;
  const Variable seq = nn::lstm_batch_first(spec_, x);
  const runtime::ActQParams in = runtime_act_qparams(*input_quantizer(), "input of QATLSTM");
  const Tensor codes = runtime::quantize(seq.value(), in);
  const std::vector<runtime::QLstmLayer> layers = to_qlayers();
  Tensor y = runtime::qlstm(layers, codes);
  if (spec_.last_step_only) y = runtime::last_step(y);
  Variable out(runtime::dequantize(y, layers.back().hidden));
  if (!spec_.last_step_only && !spec_.batch_first) out = autograd::permute(out, {1, 0, 2});
  return out;
}

}  // namespace qforge::quant
