#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

namespace {

struct Case {
  Shape x;  // N, C, H, W
  int64_t oc, kh, kw;
  Conv2dOptions opt;
  bool bias;
};

std::string name(const Case& c) {
  return shape_str(c.x) + " oc=" + std::to_string(c.oc) + " k=" + std::to_string(c.kh) + "x" +
         std::to_string(c.kw) + " s=" + std::to_string(c.opt.stride[0]) + "," + std::to_string(c.opt.stride[1]) +
         " p=" + std::to_string(c.opt.padding[0]) + "," + std::to_string(c.opt.padding[1]) +
         " d=" + std::to_string(c.opt.dilation[0]) + " g=" + std::to_string(c.opt.groups);
}

Conv2dOptions opts(int64_t s0, int64_t s1, int64_t p0, int64_t p1, int64_t d, int64_t groups) {
  Conv2dOptions o;
  o.stride = {s0, s1};
  o.padding = {p0, p1};
  o.dilation = {d, d};
  o.groups = groups;
  return o;
}

const std::vector<Case> kCases = {
    {{1, 1, 3, 3}, 1, 1, 1, opts(1, 1, 0, 0, 1, 1), false},   // smallest
    {{2, 3, 5, 4}, 2, 3, 3, opts(1, 1, 0, 0, 1, 1), true},    // valid, bias
    {{1, 2, 5, 5}, 3, 3, 3, opts(1, 1, 1, 1, 1, 1), false},   // same padding
    {{2, 2, 7, 6}, 2, 3, 2, opts(2, 1, 1, 0, 1, 1), true},    // stride, asymmetric kernel
    {{1, 2, 7, 7}, 2, 3, 3, opts(1, 1, 2, 2, 2, 1), false},   // dilation
    {{2, 4, 5, 5}, 6, 3, 3, opts(1, 1, 1, 1, 1, 2), true},    // groups
    {{2, 3, 6, 5}, 3, 3, 3, opts(2, 2, 1, 1, 1, 3), true},    // depthwise, stride 2
    {{3, 4, 3, 3}, 5, 1, 1, opts(1, 1, 0, 0, 1, 1), true},    // pointwise 1x1
    {{1, 3, 4, 4}, 2, 1, 1, opts(2, 2, 0, 0, 1, 1), false},   // strided 1x1 (shortcut)
};

// Naive direct convolution in double.
std::vector<double> naive_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OC = w.size(0), KH = w.size(2), KW = w.size(3), G = o.groups, Cg = C / G, OCg = OC / G;
  const int64_t OH = conv_out_size(H, KH, o.stride[0], o.padding[0], o.dilation[0]);
  const int64_t OW = conv_out_size(W, KW, o.stride[1], o.padding[1], o.dilation[1]);
  std::vector<double> y(N * OC * OH * OW, 0.0);
  auto X = x.to_vector(), Wt = w.to_vector();
  std::vector<double> B = b.defined() ? b.to_vector() : std::vector<double>(OC, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = B[oc];
          const int64_t gi = oc / OCg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * o.stride[0] - o.padding[0] + kh * o.dilation[0];
                const int64_t iw = ow * o.stride[1] - o.padding[1] + kw * o.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += X[((n * C + gi * Cg + c) * H + ih) * W + iw] * Wt[((oc * Cg + c) * KH + kh) * KW + kw];
              }
          y[((n * OC + oc) * OH + oh) * OW + ow] = s;
        }
  return y;
}

// Restores the automatic conv layout when a test ends (or fails early).
struct LayoutGuard {
  ~LayoutGuard() {
    autograd::detail::set_conv_layout(ConvLayout::automatic);
    autograd::detail::set_conv_dw(ConvDw::automatic);
    autograd::detail::set_conv_out(ConvOut::automatic);
  }
};

}  // namespace

TEST(ConvGrad, Conv2d) {
  Generator g(21);
  for (const Case& c : kCases) {
    SCOPED_TRACE(name(c));
    std::vector<Tensor> in = {rand64(c.x, g), rand64({c.oc, c.x[1] / c.opt.groups, c.kh, c.kw}, g)};
    if (c.bias) in.push_back(rand64({c.oc}, g));
    const Conv2dOptions o = c.opt;
    expect_jacobian(
        [o](const std::vector<Variable>& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Variable(), o); },
        in);
  }
}

TEST(Conv, ForwardMatchesNaive) {
  LayoutGuard guard;
  Generator g(22);
  std::vector<Case> cases = kCases;
  // Larger shapes that go through the threaded batch split and bigger GEMMs.
  cases.push_back({{8, 16, 12, 12}, 32, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  cases.push_back({{5, 8, 9, 9}, 8, 3, 3, opts(2, 2, 1, 1, 1, 8), false});
  cases.push_back({{3, 8, 5, 5}, 64, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  cases.push_back({{3, 4, 9, 9}, 32, 3, 3, opts(2, 2, 1, 1, 1, 1), true});  // strided, positions only
  cases.push_back({{2, 3, 11, 12}, 32, 3, 3, opts(2, 3, 2, 1, 2, 1), false});
  for (ConvLayout layout : {ConvLayout::automatic, ConvLayout::gaps, ConvLayout::taps})
  for (ConvOut outmode : {ConvOut::automatic, ConvOut::grid, ConvOut::pixels})
  for (const Case& c : cases) {
    SCOPED_TRACE(name(c) + " layout " + std::to_string(static_cast<int>(layout)) + " out " +
                 std::to_string(static_cast<int>(outmode)));
    autograd::detail::set_conv_layout(layout);
    autograd::detail::set_conv_out(outmode);
    Tensor x = Tensor::empty(c.x), w = Tensor::empty({c.oc, c.x[1] / c.opt.groups, c.kh, c.kw});
    uniform_(x, -1, 1, g);
    uniform_(w, -1, 1, g);
    Tensor b;
    if (c.bias) {
      b = Tensor::empty({c.oc});
      uniform_(b, -1, 1, g);
    }
    Tensor y = conv2d(Variable(x), Variable(w), b.defined() ? Variable(b) : Variable(), c.opt).value();
    std::vector<double> ref = naive_conv(x, w, b, c.opt);
    ASSERT_EQ(static_cast<size_t>(y.numel()), ref.size());
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_NEAR(y.data<float>()[i], ref[i], 1e-4) << "at " << i;
  }
}

// The f32 paths (shifted-row GEMMs for stride 1, im2col otherwise) give the
// gradients of the gradient-checked f64 path, on every case and larger ones.
TEST(Conv, Float32BackwardMatchesFloat64) {
  LayoutGuard guard;
  Generator g(23);
  std::vector<Case> cases = kCases;
  cases.push_back({{6, 8, 10, 10}, 16, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  cases.push_back({{3, 4, 9, 7}, 6, 3, 3, opts(1, 1, 2, 1, 2, 2), true});
  cases.push_back({{4, 6, 8, 8}, 6, 3, 3, opts(1, 1, 1, 1, 1, 6), false});
  // Several samples per GEMM with a partial last stack (plane 16x16 -> 4 per stack).
  cases.push_back({{11, 3, 14, 14}, 4, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  // Padding wider than the kernel's reach (outputs larger than the input),
  // asymmetric padding and kernels, and stacks of tiny maps whose zero gaps
  // are shared between rows and samples.
  cases.push_back({{3, 2, 5, 6}, 3, 2, 3, opts(1, 1, 3, 2, 1, 1), true});
  cases.push_back({{2, 3, 5, 5}, 4, 3, 3, opts(1, 1, 4, 4, 1, 1), false});
  cases.push_back({{4, 3, 6, 7}, 4, 1, 3, opts(1, 1, 0, 1, 1, 1), true});
  cases.push_back({{5, 2, 6, 6}, 3, 3, 3, opts(1, 1, 2, 0, 1, 1), true});
  cases.push_back({{37, 6, 3, 4}, 5, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  cases.push_back({{9, 4, 7, 7}, 8, 5, 5, opts(1, 1, 2, 2, 1, 2), true});
  cases.push_back({{4, 3, 6, 6}, 5, 3, 3, opts(1, 1, 0, 0, 1, 1), true});  // valid, small map
  cases.push_back({{3, 1, 9, 8}, 6, 3, 3, opts(1, 1, 0, 0, 1, 1), false});  // one input channel
  {  // stacked small maps, vertical dilation only
    Conv2dOptions o = opts(1, 1, 2, 1, 1, 1);
    o.dilation = {2, 1};
    cases.push_back({{6, 3, 7, 8}, 4, 3, 3, o, true});
  }
  // Whole vectors of output channels per group (the automatic choice of the
  // segment weight gradient), two panels of them with a partial one (80), a
  // partial vector (20) and tile rows left over (Kc = 45).
  cases.push_back({{3, 4, 7, 7}, 32, 3, 3, opts(1, 1, 1, 1, 1, 1), true});
  cases.push_back({{2, 4, 6, 6}, 32, 3, 3, opts(1, 1, 1, 1, 1, 2), false});
  cases.push_back({{2, 5, 6, 5}, 80, 3, 3, opts(1, 1, 1, 0, 1, 1), true});
  cases.push_back({{3, 3, 5, 5}, 20, 3, 3, opts(1, 1, 0, 0, 1, 1), true});
  // Every case in both stride-1 layouts (and the automatic choice), with all
  // three gradients, with the weight gradient only (a first layer: dx is not
  // needed) and with the input gradient only; the weight gradient through
  // both of its products.
  // Strided convs whose output channels fill 32-wide tiles (automatic: the
  // positions-only forward and weight gradient): ResNet's 3x3 and 1x1
  // downsampling, stride 2 on odd and even maps, stride (2, 3) with
  // dilation, and stacks of several samples.
  cases.push_back({{3, 4, 9, 9}, 32, 3, 3, opts(2, 2, 1, 1, 1, 1), true});
  cases.push_back({{2, 6, 8, 8}, 64, 3, 3, opts(2, 2, 1, 1, 1, 1), false});
  cases.push_back({{3, 5, 8, 8}, 32, 1, 1, opts(2, 2, 0, 0, 1, 1), false});
  cases.push_back({{2, 3, 11, 12}, 32, 3, 3, opts(2, 3, 2, 1, 2, 1), true});
  cases.push_back({{20, 2, 4, 5}, 32, 3, 3, opts(2, 2, 1, 1, 1, 1), true});
  // Forward and input gradient over the grid and over the positions only.
  cases.push_back({{3, 64, 6, 6}, 64, 3, 3, opts(1, 1, 1, 1, 1, 1), true});  // automatic: pixels (8x8 -> 7x7 grid)
  cases.push_back({{2, 8, 6, 5}, 130, 3, 3, opts(1, 1, 1, 0, 1, 2), true});  // groups of 4 and 65 channels
  for (ConvLayout layout : {ConvLayout::automatic, ConvLayout::gaps, ConvLayout::taps})
  for (ConvDw dwmode : {ConvDw::automatic, ConvDw::segments, ConvDw::dot})
  for (ConvOut outmode : {ConvOut::automatic, ConvOut::grid, ConvOut::pixels})
  for (int need : {0, 1, 2})  // 0: all, 1: no dx, 2: no dW
  for (const Case& c : cases) {
    if (need == 2 && dwmode != ConvDw::automatic) continue;
    if (dwmode != ConvDw::automatic && outmode != ConvOut::automatic) continue;
    SCOPED_TRACE(name(c) + " layout " + std::to_string(static_cast<int>(layout)) + " dw " +
                 std::to_string(static_cast<int>(dwmode)) + " out " + std::to_string(static_cast<int>(outmode)) +
                 " need " + std::to_string(need));
    autograd::detail::set_conv_layout(layout);
    autograd::detail::set_conv_dw(dwmode);
    autograd::detail::set_conv_out(outmode);
    Tensor x64 = rand64(c.x, g), w64 = rand64({c.oc, c.x[1] / c.opt.groups, c.kh, c.kw}, g), b64 = rand64({c.oc}, g);
    const int64_t oh = conv_out_size(c.x[2], c.kh, c.opt.stride[0], c.opt.padding[0], c.opt.dilation[0]);
    const int64_t ow = conv_out_size(c.x[3], c.kw, c.opt.stride[1], c.opt.padding[1], c.opt.dilation[1]);
    Tensor gy64 = rand64({c.x[0], c.oc, oh, ow}, g);
    auto run = [&](DType dt, std::vector<Tensor>& grads, Tensor& y) {
      Variable x(x64.to(dt), need != 1), w(w64.to(dt), need != 2), b(b64.to(dt), true);
      Variable out = conv2d(x, w, b, c.opt);
      y = out.value().to(DType::f64);
      out.backward(gy64.to(dt));
      grads = {need != 1 ? x.grad().to(DType::f64) : Tensor::zeros({1}, DType::f64),
               need != 2 ? w.grad().to(DType::f64) : Tensor::zeros({1}, DType::f64), b.grad().to(DType::f64)};
    };
    std::vector<Tensor> g32, g64;
    Tensor y32, y64;
    run(DType::f32, g32, y32);
    run(DType::f64, g64, y64);
    for (int64_t i = 0; i < y64.numel(); ++i) ASSERT_NEAR(y32.item(i), y64.item(i), 1e-4) << "output " << i;
    for (int k = 0; k < 3; ++k)
      for (int64_t i = 0; i < g64[k].numel(); ++i)
        ASSERT_NEAR(g32[k].item(i), g64[k].item(i), 1e-4 * (1 + std::abs(g64[k].item(i)))) << "grad " << k << " at " << i;
  }
}

// An empty batch gives an empty output and zero weight and bias gradients.
TEST(Conv, EmptyBatch) {
  LayoutGuard guard;
  for (ConvLayout layout : {ConvLayout::gaps, ConvLayout::taps}) {
    autograd::detail::set_conv_layout(layout);
    for (int64_t stride : {1, 2}) {
      Variable x(Tensor::zeros({0, 3, 6, 6}), true), w(Tensor::ones({4, 3, 3, 3}), true), b(Tensor::ones({4}), true);
      Variable y = conv2d(x, w, b, opts(stride, stride, 1, 1, 1, 1));
      EXPECT_EQ(y.value().numel(), 0);
      y.backward(Tensor::zeros(y.value().shape()));
      EXPECT_EQ(w.grad().to_vector(), std::vector<double>(4 * 3 * 9, 0.0));
      EXPECT_EQ(b.grad().to_vector(), std::vector<double>(4, 0.0));
    }
  }
}

TEST(Conv, BadInputsGiveClearErrors) {
  Variable x(Tensor::zeros({1, 3, 5, 5}));
  EXPECT_THROW(conv2d(x, Variable(Tensor::zeros({4, 2, 3, 3}))), ShapeError);
  EXPECT_THROW(conv2d(Variable(Tensor::zeros({3, 5, 5})), Variable(Tensor::zeros({4, 3, 3, 3}))), ShapeError);
  EXPECT_THROW(conv2d(x, Variable(Tensor::zeros({4, 3, 7, 7}))), ShapeError);
  Conv2dOptions bad;
  bad.stride = {0, 1};
  EXPECT_THROW(conv2d(x, Variable(Tensor::zeros({4, 3, 3, 3})), Variable(), bad), ValueError);
  Conv2dOptions groups;
  groups.groups = 2;
  EXPECT_THROW(conv2d(x, Variable(Tensor::zeros({4, 1, 3, 3})), Variable(), groups), ShapeError);
}
