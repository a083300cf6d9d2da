// An end-to-end sample of the int8 runtime that builds and runs the same way
// on x86 and on AArch64: a graph model (conv, depthwise conv, pointwise conv,
// a residual add with a strided 1x1 shortcut, concat, max pool, global
// average pool, linear) made from integer patterns, so that both machines
// build bit-identical layers, run on 16 inputs. It runs the graph with the
// scalar reference kernels and with the best kernels of the machine (NEON on
// AArch64, AVX-512 VNNI or AVX2 on x86), checks that they agree, round-trips
// the model through save_model/load_model, and prints a hash of the output
// bytes. scripts/test-neon.sh compares the hash from qemu-aarch64 with the
// hash of the x86 build: equal hashes mean the NEON build computes what x86
// computes, through the whole runtime.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>
#include <cstdio>
#include <cstring>

#include "quant/runtime/model.h"

using namespace qforge;
namespace rt = qforge::quant::runtime;

namespace {

/// A float from integer arithmetic only (exact in IEEE float on every machine).
float pattern(int64_t i, int64_t mul, int64_t mod, float scale) {
  return static_cast<float>((i * mul) % mod - mod / 2) * scale;
}

Tensor weights(const Shape& s, int64_t mul) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = pattern(i, mul, 255, 1.0f / 256);
  return t;
}

rt::WeightQParams wq(int64_t oc) {
  rt::WeightQParams w;
  for (int64_t o = 0; o < oc; ++o) w.scale.push_back(0.002f + 0.0005f * static_cast<float>(o % 5));
  return w;
}

rt::Op layer(const char* name, const rt::QLayer& L, std::vector<int32_t> inputs = {},
             rt::OpKind kind = rt::OpKind::conv2d) {
  rt::Op op;
  op.kind = kind;
  op.name = name;
  op.layer = L;
  op.inputs = std::move(inputs);
  return op;
}

rt::Model build() {
  const rt::ActQParams in{0.03f, 128, 0, 255}, a{0.02f, 0, 0, 255}, b{0.025f, 0, 0, 255}, c{0.03f, 90, 0, 255},
      s{0.04f, 0, 0, 255}, sc{0.035f, 100, 0, 255}, cat{0.04f, 0, 0, 255}, out{0.05f, 128, 0, 255};
  using Act = quant::Activation;
  rt::Model m;
  m.input_shape = {3, 12, 12};
  rt::Op q;
  q.kind = rt::OpKind::quantize;
  q.q = in;
  m.ops.push_back(q);  // 0
  m.ops.push_back(layer("conv", rt::make_qlayer(weights({8, 3, 3, 3}, 37), weights({8}, 11), wq(8), in, a, Act::relu,
                                                {1, 1}, {1, 1})));  // 1
  m.ops.push_back(layer("dw", rt::make_qlayer(weights({8, 1, 3, 3}, 53), weights({8}, 13), wq(8), a, b, Act::relu6,
                                              {2, 2}, {1, 1}, {1, 1}, 8)));  // 2
  m.ops.push_back(layer("pw", rt::make_qlayer(weights({8, 8, 1, 1}, 61), weights({8}, 17), wq(8), b, c, Act::none)));  // 3
  m.ops.push_back(layer("shortcut", rt::make_qlayer(weights({8, 8, 1, 1}, 71), Tensor(), wq(8), a, sc, Act::none,
                                                    {2, 2}),
                        {1}));  // 4
  rt::Op add;
  add.kind = rt::OpKind::add;
  add.name = "add";
  add.inputs = {3, 4};
  add.in_q = {c, sc};
  add.q = s;
  add.activation = Act::relu;
  m.ops.push_back(add);  // 5
  rt::Op concat;
  concat.kind = rt::OpKind::concat;
  concat.inputs = {5, 4};
  concat.in_q = {s, sc};
  concat.q = cat;
  m.ops.push_back(concat);  // 6: 16 channels, 6x6
  rt::Op pool;
  pool.kind = rt::OpKind::max_pool2d;
  m.ops.push_back(pool);  // 7: 3x3
  rt::Op gp;
  gp.kind = rt::OpKind::global_avg_pool;
  gp.in_q = {cat};
  gp.q = cat;
  m.ops.push_back(gp);  // 8
  rt::Op flat;
  flat.kind = rt::OpKind::flatten;
  m.ops.push_back(flat);  // 9
  m.ops.push_back(layer("fc", rt::make_qlayer(weights({10, 16}, 83), weights({10}, 19), wq(10), cat, out, Act::none),
                        {}, rt::OpKind::linear));
  rt::Op d;
  d.kind = rt::OpKind::dequantize;
  d.q = out;
  m.ops.push_back(d);
  return m;
}

/// A second graph: 8 steps of 12 features through a 2-layer integer LSTM
/// (the full sequence), flatten, linear.
rt::Model build_lstm() {
  const rt::ActQParams in{0.03f, 128, 0, 255}, h1{0.008f, 127, 0, 255}, h2{0.0075f, 130, 0, 255},
      out{0.004f, 128, 0, 255};
  const std::array<rt::ActQParams, 4> gates = {rt::ActQParams{0.04f, 120, 0, 255}, rt::ActQParams{0.045f, 110, 0, 255},
                                               rt::ActQParams{0.035f, 128, 0, 255}, rt::ActQParams{0.05f, 125, 0, 255}};
  auto lw = [](int64_t rows, int64_t cols, int64_t mul) {
    Tensor t = weights({rows, cols}, mul);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] *= 0.5f;
    return t;
  };
  rt::Model m;
  m.input_shape = {1, 8, 12};
  rt::Op q;
  q.kind = rt::OpKind::quantize;
  q.q = in;
  m.ops.push_back(q);
  rt::Op l;
  l.kind = rt::OpKind::lstm;
  l.name = "lstm";
  l.lstm.push_back(rt::make_qlstm_layer(lw(40, 12, 29), lw(40, 10, 31), weights({40}, 7), weights({40}, 9), wq(40), wq(40),
                                        in, h1, gates, 12));
  l.lstm.push_back(rt::make_qlstm_layer(lw(40, 10, 41), lw(40, 10, 43), weights({40}, 23), Tensor(), wq(40), wq(40),
                                        h1, h2, gates, 11));
  m.ops.push_back(l);
  rt::Op flat;
  flat.kind = rt::OpKind::flatten;
  m.ops.push_back(flat);
  m.ops.push_back(layer("fc", rt::make_qlayer(weights({10, 80}, 47), weights({10}, 5), wq(10), h2, out,
                                              quant::Activation::none),
                        {}, rt::OpKind::linear));
  rt::Op d;
  d.kind = rt::OpKind::dequantize;
  d.q = out;
  m.ops.push_back(d);
  return m;
}

uint64_t fnv1a(const Tensor& t, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

int main() {
  try {
    const rt::Model m = build();
    rt::save_model("runtime_sample.h5", m, "runtime_sample");
    const rt::Model back = rt::load_model("runtime_sample.h5");
    Tensor x = Tensor::empty({16, 3, 12, 12});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = pattern(i, 73, 511, 1.0f / 64);
    const quant::kernels::KernelTable ref = quant::kernels::kernels_for(quant::kernels::Isa::ref);
    const Tensor y_ref = back.run(x, &ref);
    const Tensor y = back.run(x);  // the dispatched (best) kernels
    const bool same = y.nbytes() == y_ref.nbytes() && std::memcmp(y.raw(), y_ref.raw(), y.nbytes()) == 0;
    std::printf("runtime_sample: %zu ops, output %s, kernels %s %s the reference\n", back.ops.size(),
                y.desc().c_str(), quant::kernels::isa_name(quant::kernels::kernels().isa),
                same ? "equal" : "DIFFER FROM");
    // A meaningful sample: the logits spread over many codes (the graph is not
    // clamped flat anywhere).
    std::vector<float> v(y_ref.data<float>(), y_ref.data<float>() + y_ref.numel());
    std::sort(v.begin(), v.end());
    const size_t distinct = static_cast<size_t>(std::unique(v.begin(), v.end()) - v.begin());
    std::printf("logits in [%g, %g], %zu distinct values of %lld\n", v.front(), v[distinct - 1], distinct,
                static_cast<long long>(y_ref.numel()));

    // The LSTM graph: reference kernels against the best, after a round trip.
    rt::save_model("runtime_sample_lstm.h5", build_lstm(), "runtime_sample");
    const rt::Model lstm = rt::load_model("runtime_sample_lstm.h5");
    Tensor xs = Tensor::empty({16, 1, 8, 12});
    for (int64_t i = 0; i < xs.numel(); ++i) xs.data<float>()[i] = pattern(i, 59, 255, 1.0f / 40);
    const Tensor z_ref = lstm.run(xs, &ref), z = lstm.run(xs);
    const bool same_lstm = z.nbytes() == z_ref.nbytes() && std::memcmp(z.raw(), z_ref.raw(), z.nbytes()) == 0;
    std::vector<float> w(z_ref.data<float>(), z_ref.data<float>() + z_ref.numel());
    std::sort(w.begin(), w.end());
    const size_t distinct_lstm = static_cast<size_t>(std::unique(w.begin(), w.end()) - w.begin());
    std::printf("lstm sample: output %s, kernels %s the reference, %zu distinct values\n", z.desc().c_str(),
                same_lstm ? "equal" : "DIFFER FROM", distinct_lstm);
    std::printf("output hash %016llx\n", static_cast<unsigned long long>(fnv1a(z_ref, fnv1a(y_ref))));
    if (distinct < 20 || distinct_lstm < 20) return 1;
    return same && same_lstm ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "runtime_sample: %s\n", e.what());
    return 1;
  }
}
