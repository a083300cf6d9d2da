#include "nn/rnn.h"

#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "core/error.h"

namespace qforge::nn {

LSTM::LSTM(const LSTMSpec& spec, Generator& gen) : Module("LSTM"), spec_(spec) {
  QF_CHECK(spec.input_size >= 1 && spec.hidden_size >= 1 && spec.num_layers >= 1)
      << "LSTM: input_size, hidden_size and num_layers must be >= 1, got " << spec.input_size << ", "
      << spec.hidden_size << ", " << spec.num_layers;
  const int64_t H = spec.hidden_size;
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    const std::string s = "_l" + std::to_string(l);
    const int64_t in = l == 0 ? spec.input_size : H;
    Tensor wi = Tensor::empty({4 * H, in}), wh = Tensor::empty({4 * H, H});
    uniform_(wi, -bound, bound, gen);
    uniform_(wh, -bound, bound, gen);
    register_parameter("weight_ih" + s, wi);
    register_parameter("weight_hh" + s, wh);
    if (spec.bias) {
      Tensor bi = Tensor::empty({4 * H}), bh = Tensor::empty({4 * H});
      uniform_(bi, -bound, bound, gen);
      uniform_(bh, -bound, bound, gen);
      register_parameter("bias_ih" + s, bi);
      register_parameter("bias_hh" + s, bh);
    }
  }
}

std::array<Variable, 4> LSTM::layer_params(int64_t l) const {
  QF_CHECK_INDEX(l >= 0 && l < spec_.num_layers) << "LSTM: layer " << l << " of " << spec_.num_layers;
  const std::string s = "_l" + std::to_string(l);
  return {param("weight_ih" + s), param("weight_hh" + s), spec_.bias ? param("bias_ih" + s) : Variable(),
          spec_.bias ? param("bias_hh" + s) : Variable()};
}

Variable lstm_batch_first(const LSTMSpec& spec_, const Variable& x) {
  const bool image = spec_.batch_first && x.ndim() == 4 && x.size(1) == 1;
  QF_CHECK_SHAPE((x.ndim() == 3 || image) && x.size(-1) == spec_.input_size)
      << "LSTM(" << spec_.input_size << ", " << spec_.hidden_size << "): input must be "
      << (spec_.batch_first ? "[N, T, " : "[T, N, ") << spec_.input_size << "]"
      << (spec_.batch_first ? " or [N, 1, T, " + std::to_string(spec_.input_size) + "]" : "") << ", got "
      << x.value().desc();
  if (image) return autograd::reshape(x, {x.size(0), x.size(2), x.size(3)});
  return spec_.batch_first ? x : autograd::permute(x, {1, 0, 2});
}

LSTM::Result LSTM::forward_full(const Variable& x, const Variable& h0, const Variable& c0) {
  Variable seq = lstm_batch_first(spec_, x);
  const int64_t N = seq.size(0), H = spec_.hidden_size, L = spec_.num_layers;
  for (const Variable* s : {&h0, &c0})
    QF_CHECK_SHAPE(!s->defined() || s->shape() == Shape({L, N, H}))
        << "LSTM: initial states must be [" << L << ", " << N << ", " << H << "], got " << s->value().desc();
  std::vector<Variable> hs, cs;
  for (int64_t l = 0; l < L; ++l) {
    const auto p = layer_params(l);
    const Variable hl = h0.defined() ? autograd::reshape(autograd::slice(h0, 0, l, l + 1), {N, H}) : Variable();
    const Variable cl = c0.defined() ? autograd::reshape(autograd::slice(c0, 0, l, l + 1), {N, H}) : Variable();
    autograd::LstmOutput o = autograd::lstm_layer(seq, hl, cl, p[0], p[1], p[2], p[3]);
    seq = o.output;
    hs.push_back(autograd::reshape(o.h_n, {1, N, H}));
    cs.push_back(autograd::reshape(o.c_n, {1, N, H}));
  }
  Result r;
  r.output = spec_.batch_first ? seq : autograd::permute(seq, {1, 0, 2});
  r.h_n = L == 1 ? hs[0] : autograd::concat(hs, 0);
  r.c_n = L == 1 ? cs[0] : autograd::concat(cs, 0);
  return r;
}

Variable LSTM::forward(const Variable& x) {
  Result r = forward_full(x);
  if (!spec_.last_step_only) return r.output;
  const int64_t L = spec_.num_layers;
  return autograd::reshape(autograd::slice(r.h_n, 0, L - 1, L), {r.h_n.size(1), spec_.hidden_size});
}

std::string LSTM::extra_repr() const { return lstm_repr(spec_); }

std::string lstm_repr(const LSTMSpec& spec_) {
  std::ostringstream s;
  s << spec_.input_size << ", " << spec_.hidden_size;
  if (spec_.num_layers != 1) s << ", num_layers=" << spec_.num_layers;
  if (!spec_.bias) s << ", bias=false";
  if (spec_.batch_first) s << ", batch_first";
  if (spec_.last_step_only) s << ", last_step_only";
  return s.str();
}

}  // namespace qforge::nn
