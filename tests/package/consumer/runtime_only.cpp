// Uses qforge::runtime alone: builds a small int8 model in code, exports it,
// reloads it and runs it. Writes the model to argv[1] for deploy to use.
#include <cstdio>

#include <qforge/core/rng.h>
#include <qforge/quant/runtime/model.h>

using namespace qforge;
namespace rt = qforge::quant::runtime;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  Generator g(1);
  Tensor w1 = Tensor::empty({4, 1, 3, 3}), w2 = Tensor::empty({10, 4 * 26 * 26});
  normal_(w1, 0, 0.5, g);
  normal_(w2, 0, 0.05, g);
  const rt::ActQParams in{0.02f, 128, 0, 255}, mid{0.05f, 0, 0, 255}, out{0.1f, 128, 0, 255};
  rt::WeightQParams q1, q2;
  q1.scale.assign(4, 0.01f);
  q2.scale.assign(10, 0.002f);
  rt::Model m;
  m.input_shape = {1, 28, 28};
  m.input_mean = {0.5f};
  m.input_std = {0.25f};
  rt::Op q, c, f, l, d;
  q.kind = rt::OpKind::quantize;
  q.q = in;
  c.kind = rt::OpKind::conv2d;
  c.layer = rt::make_qlayer(w1, Tensor(), q1, in, mid, quant::Activation::relu);
  f.kind = rt::OpKind::flatten;
  l.kind = rt::OpKind::linear;
  l.layer = rt::make_qlayer(w2, Tensor(), q2, mid, out, quant::Activation::none);
  rt::reorder_linear_input_to_hwc(l.layer, 4, 26, 26);
  d.kind = rt::OpKind::dequantize;
  d.q = out;
  m.ops = {q, c, f, l, d};
  rt::save_model(argv[1], m, "qforge package test");
  const rt::Model back = rt::load_model(argv[1]);
  Tensor x = Tensor::empty({2, 1, 28, 28});
  normal_(x, 0, 1, g);
  const Tensor y = back.run(x);
  std::printf("runtime_only: %s -> %s, ok\n", x.desc().c_str(), y.desc().c_str());
  return y.size(1) == 10 ? 0 : 1;
}
