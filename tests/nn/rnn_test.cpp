// nn::LSTM: PyTorch's parameter names, shapes and gate order (values
// computed by torch.nn.LSTM 1.13 in float64 on weights set by a formula),
// layouts, last_step_only and the checks.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "nn/rnn.h"

using namespace qforge;
using namespace qforge::nn;

namespace {

/// Fills t with 0.5 * sin(a * (i + 1)), as the fixture's generator did.
void fill(Tensor t, double a) {
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(0.5 * std::sin(a * (i + 1)));
}

}  // namespace

TEST(LSTM, MatchesTorchOnAFixture) {
  LSTMSpec s;
  s.input_size = 3;
  s.hidden_size = 2;
  s.num_layers = 2;
  s.batch_first = true;
  LSTM m(s);
  const auto params = m.named_parameters();
  const std::vector<std::string> names = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                          "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"};
  const std::vector<Shape> shapes = {{8, 3}, {8, 2}, {8}, {8}, {8, 2}, {8, 2}, {8}, {8}};
  ASSERT_EQ(params.size(), names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    EXPECT_EQ(params[k].first, names[k]);
    EXPECT_EQ(params[k].second.shape(), shapes[k]);
    fill(params[k].second.value(), 0.37 + 0.11 * static_cast<double>(k));
  }
  Tensor x = Tensor::empty({2, 4, 3}), h0 = Tensor::empty({2, 2, 2}), c0 = Tensor::empty({2, 2, 2});
  fill(x, 0.53);
  fill(h0, 0.71);
  fill(c0, 0.29);
  const LSTM::Result r = m.forward_full(autograd::Variable(x), autograd::Variable(h0), autograd::Variable(c0));
  const std::vector<double> out = {-0.134638343, 0.240326158, -0.401306581, 0.143315194, -0.503549027, 0.151217018,
                                   -0.557407888, 0.166570694, -0.165776938, 0.221505184, -0.410004539, 0.147996199,
                                   -0.506284226, 0.154220325, -0.558499056, 0.168208582};
  const std::vector<double> hn = {0.030715895, -0.163444163, 0.042056308, -0.167092744,
                                  -0.557407888, 0.166570694,  -0.558499056, 0.168208582};
  const std::vector<double> cn = {0.129079337, -0.837846576, 0.171857258, -0.824362199,
                                  -0.946531988, 0.285610964,  -0.950559298, 0.288948086};
  auto near = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k], 2e-6) << k;
  };
  near(r.output.value().to_vector(), out);
  near(r.h_n.value().to_vector(), hn);
  near(r.c_n.value().to_vector(), cn);

  // Sequence-first layout: the same numbers, transposed.
  LSTMSpec sf = s;
  sf.batch_first = false;
  LSTM mf(sf);
  mf.load_state_dict(m.state_dict());
  const Variable xt = autograd::permute(autograd::Variable(x), {1, 0, 2});
  const LSTM::Result rf = mf.forward_full(xt, autograd::Variable(h0), autograd::Variable(c0));
  EXPECT_EQ(rf.output.shape(), Shape({4, 2, 2}));
  near(autograd::permute(rf.output, {1, 0, 2}).value().to_vector(), out);

  // last_step_only returns the last layer's h_n; [N, 1, T, I] reads as [N, T, I].
  LSTMSpec sl = s;
  sl.last_step_only = true;
  LSTM ml(sl);
  ml.load_state_dict(m.state_dict());
  const Variable y = ml.forward(autograd::Variable(x.reshape({2, 1, 4, 3})));
  EXPECT_EQ(y.shape(), Shape({2, 2}));
  const LSTM::Result r0 = m.forward_full(autograd::Variable(x));
  const auto last = y.value().to_vector(), hz = r0.h_n.value().to_vector();
  for (int k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(last[k], hz[4 + k]);
}

TEST(LSTM, TrainsAndChecks) {
  LSTMSpec s;
  s.input_size = 2;
  s.hidden_size = 4;
  s.batch_first = true;
  LSTM m(s);
  for (const auto& [n, p] : m.named_parameters()) {
    const auto v = p.value().to_vector();
    for (double e : v) ASSERT_LE(std::fabs(e), 0.5 + 1e-7) << n;  // U(-1/sqrt(4), 1/sqrt(4))
  }
  Variable y = autograd::sum(m.forward(autograd::Variable(Tensor::ones({3, 5, 2}))));
  y.backward();
  for (const auto& [n, p] : m.named_parameters()) EXPECT_TRUE(p.has_grad()) << n;
  EXPECT_THROW(m.forward(autograd::Variable(Tensor::ones({3, 5, 3}))), ShapeError);
  EXPECT_THROW(m.forward(autograd::Variable(Tensor::ones({3, 2, 5, 2}))), ShapeError);
  EXPECT_THROW(m.forward_full(autograd::Variable(Tensor::ones({3, 5, 2})), autograd::Variable(Tensor::zeros({1, 2, 4}))),
               ShapeError);
  EXPECT_THROW(LSTM(LSTMSpec{0, 4}), ValueError);
  EXPECT_EQ(m.extra_repr(), "2, 4, batch_first");
}
