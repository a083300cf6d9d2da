// The int8 model: run, export, and a loader that refuses every bad file with
// a FormatError naming the problem.
#include <gtest/gtest.h>

#include "tests/quant/runtime/model_file_util.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <unistd.h>

#include "core/archive.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "quant/runtime/model.h"

namespace qforge::quant::runtime {
namespace {

namespace fs = std::filesystem;

Tensor randn(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  normal_(t, 0, scale, g);
  return t;
}

/// quantize -> conv 2->4 3x3 pad 1 + ReLU -> max pool 2 -> flatten -> linear 64->3 -> dequantize.
Model small_model() {
  Model m;
  m.input_shape = {2, 8, 8};
  const ActQParams in{0.02f, 128, 0, 255}, mid{0.05f, 0, 0, 255}, out{0.1f, 120, 0, 255};
  Op q;
  q.kind = OpKind::quantize;
  q.name = "quant";
  q.q = in;
  m.ops.push_back(q);
  Op c;
  c.kind = OpKind::conv2d;
  c.name = "conv";
  WeightQParams wq;
  wq.scale = {0.01f, 0.02f, 0.015f, 0.03f};
  c.layer = make_qlayer(randn({4, 2, 3, 3}, 1, 0.5), randn({4}, 2, 0.1), wq, in, mid, Activation::relu, {1, 1}, {1, 1});
  m.ops.push_back(c);
  Op p;
  p.kind = OpKind::max_pool2d;
  p.name = "pool";
  m.ops.push_back(p);
  Op f;
  f.kind = OpKind::flatten;
  m.ops.push_back(f);
  Op l;
  l.kind = OpKind::linear;
  l.name = "fc";
  WeightQParams lq;
  lq.scale = {0.005f, 0.004f, 0.006f};
  l.layer = make_qlayer(randn({3, 64}, 3, 0.3), Tensor(), lq, mid, out, Activation::none);
  m.ops.push_back(l);
  Op d;
  d.kind = OpKind::dequantize;
  d.q = out;
  m.ops.push_back(d);
  return m;
}

class ModelFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qforge_model_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  /// Saves the small model, edits its archive, and expects load_model to
  /// throw a FormatError mentioning `needle`.
  void expect_bad(const std::function<void(Archive&)>& edit, const std::string& needle) {
    testing::expect_load_error(path("m.h5"), small_model(), edit, needle);
  }
  fs::path dir_;
};

TEST_F(ModelFile, RunsAndRoundTripsBitExactly) {
  const Model m = small_model();
  EXPECT_EQ(m.validate(), (std::vector<int64_t>{3}));
  const Tensor x = randn({5, 2, 8, 8}, 4);
  const Tensor y = m.run(x);
  EXPECT_EQ(y.shape(), (Shape{5, 3}));
  save_model(path("m.h5"), m);
  const Model back = load_model(path("m.h5"));
  const Tensor y2 = back.run(x);
  EXPECT_EQ(std::memcmp(y.raw(), y2.raw(), y.nbytes()), 0);
  EXPECT_EQ(back.ops[1].layer.requant.size(), 4u);
  EXPECT_EQ(back.ops[1].layer.requant[2].multiplier, m.ops[1].layer.requant[2].multiplier);
  EXPECT_THROW(m.run(randn({5, 2, 8, 9}, 5)), ShapeError);
}

TEST_F(ModelFile, SubBatchesGiveTheWholeBatchResult) {
  // run() splits a batch into sub-batches (one thread each); with a
  // callback it runs the whole batch op by op. Both must agree bit for bit,
  // on 1 and 2 threads and for batch sizes around the split.
  const Model m = small_model();
  const int before = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : {1, 2, 9, 17, 37}) {
      const Tensor x = randn({n, 2, 8, 8}, static_cast<uint64_t>(100 + n));
      const Tensor split = m.run(x);
      const Tensor whole = m.run(x, nullptr, [](size_t, const Tensor&) {});
      ASSERT_EQ(split.shape(), whole.shape());
      EXPECT_EQ(std::memcmp(split.raw(), whole.raw(), whole.nbytes()), 0) << n << " images, " << threads << " threads";
    }
  }
  set_num_threads(before);
}

/// qconv2d against a direct NCHW integer convolution, over groups, strides,
/// padding and dilation, on every kernel level the CPU runs.
TEST(QConv, MatchesADirectIntegerConvolution) {
  struct Case {
    int64_t n, ic, oc, h, w, k, stride, pad, dil, groups;
  };
  const Case cases[] = {{2, 3, 5, 7, 6, 3, 1, 1, 1, 1}, {1, 4, 4, 9, 9, 3, 2, 0, 1, 4}, {3, 6, 4, 8, 7, 3, 1, 2, 2, 2},
                        {1, 16, 8, 5, 5, 1, 1, 0, 1, 1}, {2, 2, 3, 6, 6, 2, 2, 1, 1, 1},
                        // one input channel (a kernel row is 3 bytes) and 24 (72 bytes: a long copy)
                        {2, 1, 8, 6, 6, 3, 1, 0, 1, 1}, {1, 24, 8, 5, 5, 3, 1, 1, 1, 1},
                        // one channel per group on the byte-tap im2col: padding, stride and
                        // dilation; and groups of one input channel with two outputs each
                        {2, 1, 6, 7, 6, 3, 2, 1, 2, 1}, {2, 3, 6, 6, 7, 3, 1, 1, 1, 3},
                        {10, 1, 4, 28, 28, 3, 1, 1, 1, 1},  // chunks that start inside an image
                        // depthwise (the depthwise kernels): 16 + 1 channels, strides, dilation, 5x5
                        {3, 17, 17, 9, 8, 3, 1, 1, 1, 17}, {2, 33, 33, 10, 10, 3, 2, 1, 1, 33},
                        {1, 32, 32, 11, 9, 3, 1, 2, 2, 32}, {2, 8, 8, 7, 7, 5, 1, 2, 1, 8},
                        // segmented rows (the GEMM reads a padded copy): ResNet's strided conv and 1x1
                        // shortcut, kernel rows of 12 bytes, and 1024 rows in several chunks that
                        // cross image boundaries
                        {3, 16, 32, 9, 9, 3, 2, 1, 1, 1}, {2, 16, 8, 8, 8, 1, 2, 0, 1, 1},
                        {2, 4, 8, 12, 12, 3, 1, 1, 1, 1}, {4, 16, 16, 16, 16, 3, 1, 1, 1, 1},
                        // output rows of 16 and 32 pixels: on AMX, kernel rows widened to whole
                        // 64-byte chunks and loaded in place (an RGB stem, 16 channels, a strided
                        // 32-channel conv, 40 outputs, 64 channels with no widening)
                        {2, 3, 16, 32, 32, 3, 1, 1, 1, 1}, {1, 16, 40, 16, 16, 3, 1, 1, 1, 1},
                        {2, 32, 32, 32, 32, 3, 2, 1, 1, 1}, {1, 64, 16, 16, 16, 3, 1, 1, 1, 1}};
  std::mt19937 rng(9);
  int pooled_checks = 0;
  for (const Case& c : cases) {
    const int64_t icg = c.ic / c.groups, ocg = c.oc / c.groups;
    const ActQParams in{0.03f, 17, 0, 255}, out{0.07f, 9, 0, 255};
    WeightQParams wq;
    for (int64_t o = 0; o < c.oc; ++o) wq.scale.push_back(0.01f + 0.002f * o);
    const Tensor wf = randn({c.oc, icg, c.k, c.k}, rng(), 0.3), bf = randn({c.oc}, rng(), 0.2);
    const QLayer L = make_qlayer(wf, bf, wq, in, out, Activation::relu, {c.stride, c.stride}, {c.pad, c.pad},
                                 {c.dil, c.dil}, c.groups);
    Tensor x = Tensor::empty({c.n, c.ic, c.h, c.w}, DType::u8);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<uint8_t>()[i] = static_cast<uint8_t>(rng() % 256);
    const int64_t OH = out_size(c.h, c.k, c.stride, c.pad, c.dil), OW = out_size(c.w, c.k, c.stride, c.pad, c.dil);
    // Direct: weights in the float layout, quantized the same way.
    Tensor want = Tensor::empty({c.n, c.oc, OH, OW}, DType::u8);
    for (int64_t n = 0; n < c.n; ++n)
      for (int64_t o = 0; o < c.oc; ++o) {
        const int64_t g = o / ocg;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            int64_t acc = L.bias[o];
            for (int64_t ci = 0; ci < icg; ++ci)
              for (int64_t i = 0; i < c.k; ++i)
                for (int64_t j = 0; j < c.k; ++j) {
                  const int64_t ih = oh * c.stride - c.pad + i * c.dil, iw = ow * c.stride - c.pad + j * c.dil;
                  const int32_t a = (ih >= 0 && ih < c.h && iw >= 0 && iw < c.w)
                                        ? x.data<uint8_t>()[((n * c.ic + g * icg + ci) * c.h + ih) * c.w + iw]
                                        : in.zero_point;
                  const float wv = wf.data<float>()[((o * icg + ci) * c.k + i) * c.k + j];
                  const int32_t wc = quantize_value(wv, 1.0f / wq.scale[o], 0, -128, 127);
                  acc += (a - in.zero_point) * wc;
                }
            want.data<uint8_t>()[((n * c.oc + o) * OH + oh) * OW + ow] = static_cast<uint8_t>(
                requantize(kernels::saturate_i32(acc), L.requant[o], out.zero_point, L.bounds.lo, L.bounds.hi));
          }
      }
    for (auto isa : kernels::kAllIsas) {
      if (!kernels::cpu_has(isa)) continue;
      kernels::KernelTable t = kernels::kernels_for(isa);
      for (int gemm_only = 0; gemm_only < 2; ++gemm_only) {
        if (gemm_only) t.qdwconv = nullptr;  // depthwise through per-group GEMMs instead
        const Tensor got = to_nchw(qconv2d(L, to_nhwc(x), &t));
        ASSERT_EQ(got.shape(), want.shape());
        EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0)
            << kernels::isa_name(isa) << (gemm_only ? " (GEMM path)" : "") << " groups " << c.groups << " stride "
            << c.stride << " pad " << c.pad;
      }
      // A fused max pool (windows of 4, 9 and 6 pixels; 4 is the GEMM
      // kernels' native case) equals the pool of the unfused output.
      for (const std::array<int64_t, 2> pk : {std::array<int64_t, 2>{2, 2}, {3, 3}, {2, 3}}) {
        if (OH < pk[0] || OW < pk[1]) continue;
        const Tensor fused = qconv2d(L, to_nhwc(x), &t, &pk);
        const Tensor sep = qmax_pool2d(qconv2d(L, to_nhwc(x), &t), pk, pk, {0, 0});
        ASSERT_EQ(fused.shape(), sep.shape());
        EXPECT_EQ(std::memcmp(fused.raw(), sep.raw(), sep.nbytes()), 0)
            << kernels::isa_name(isa) << " pool " << pk[0] << "x" << pk[1] << " groups " << c.groups << " stride "
            << c.stride << " pad " << c.pad << " ic " << c.ic;
        ++pooled_checks;
      }
    }
  }
  EXPECT_GE(pooled_checks, 40);
}

int g_calls = 0;
void counting_ref(const kernels::QGemmParams& p) {
  ++g_calls;
  kernels::qu8s8_gemm_requant__ref(p);
}

TEST_F(ModelFile, InputNormalizationRoundTripsAndIsChecked) {
  Model m = small_model();
  m.input_mean = {0.5f, 0.25f};
  m.input_std = {0.2f, 0.4f};
  save_model(path("n.h5"), m);
  const Model back = load_model(path("n.h5"));
  EXPECT_EQ(back.input_mean, m.input_mean);
  EXPECT_EQ(back.input_std, m.input_std);
  Tensor pixels = Tensor::empty({1, 2, 8, 8}, DType::u8);
  for (int64_t i = 0; i < pixels.numel(); ++i) pixels.data<uint8_t>()[i] = static_cast<uint8_t>(i * 3);
  const Tensor x = back.normalize_pixels(pixels);
  EXPECT_FLOAT_EQ(x.data<float>()[5], (15 / 255.0f - 0.5f) / 0.2f);
  EXPECT_FLOAT_EQ(x.data<float>()[64 + 1], (195 / 255.0f - 0.25f) / 0.4f);
  EXPECT_THROW(small_model().normalize_pixels(pixels), ValueError);  // none recorded
  m.input_std = {0.2f, 0.0f};
  EXPECT_THROW(m.validate(), FormatError);
  m.input_std = {0.2f};
  EXPECT_THROW(m.validate(), FormatError);
  expect_bad([](Archive& a) { a.tensors["input_mean"] = Tensor::from_vector<float>({0.1f}, {1}); }, "input_mean");
}

TEST_F(ModelFile, RunUsesTheKernelTableItIsGivenAndEveryLevelAgrees) {
  const Model m = small_model();
  const Tensor x = randn({3, 2, 8, 8}, 6);
  kernels::KernelTable counting;
  counting.qgemm = &counting_ref;
  g_calls = 0;
  const Tensor y = m.run(x, &counting);
  EXPECT_GE(g_calls, 2);  // the conv and the linear layer
  for (auto isa : kernels::kAllIsas) {
    if (!kernels::cpu_has(isa)) continue;
    const kernels::KernelTable t = kernels::kernels_for(isa);
    const Tensor yi = m.run(x, &t);
    EXPECT_EQ(std::memcmp(y.raw(), yi.raw(), y.nbytes()), 0) << kernels::isa_name(isa);
  }
}

TEST_F(ModelFile, BadFilesGetClearErrors) {
  {
    std::ofstream(path("junk.h5")) << "not hdf5";
    EXPECT_THROW(load_model(path("junk.h5")), FormatError);
  }
  EXPECT_THROW(load_model(path("missing.h5")), IOError);
  expect_bad([](Archive& a) { a.strings["format"] = "something-else"; }, "not a qforge int8 model");
  expect_bad([](Archive& a) { a.ints["format_version"] = 99; }, "format version 99");
  expect_bad([](Archive& a) { a.strings["op/0002/kind"] = "softmax"; }, "not an op this build knows");
  expect_bad([](Archive& a) { a.tensors.erase("op/0001/params"); }, "op/0001/params");
  expect_bad([](Archive& a) { a.tensors["op/0001/params"] = Tensor::zeros({5}, DType::i32); }, "op/0001/params");
  expect_bad([](Archive& a) { a.tensors["op/0001/weight"] = Tensor::zeros({4, 18}); }, "op/0001/weight");
  expect_bad([](Archive& a) { a.tensors["op/0001/weight"] = Tensor::zeros({4, 17}, DType::i8); }, "op/0001/weight");
  expect_bad([](Archive& a) { a.tensors["op/0001/weight_scale"] = Tensor::full({4}, -1.0); }, "weight_scale");
  expect_bad([](Archive& a) { a.tensors["op/0001/params"].data<int32_t>()[12] = 300; }, "op/0001/ layer input");
  expect_bad([](Archive& a) { a.tensors["op/0004/scales"].data<float>()[0] = 0.5f; }, "input qparams differ");
  expect_bad([](Archive& a) { a.tensors["op/0004/params"].data<int32_t>()[0] = 65; }, "op/0004/weight");
  expect_bad([](Archive& a) { a.tensors["op/0002/params"].data<int32_t>()[0] = 20; }, "smaller than the window");
  expect_bad([](Archive& a) { a.tensors["op/0000/scales"] = Tensor::full({1}, 0.1, DType::f64); }, "op/0000/scales");
  expect_bad([](Archive& a) { a.tensors["op/0001/params"].data<int32_t>()[3] = 7; }, "not an activation");
  expect_bad([](Archive& a) { a.ints["num_ops"] = 9; }, "op/0006");
  expect_bad([](Archive& a) { a.tensors["input_shape"].data<int32_t>()[0] = 3; }, "takes 2 channels");
  expect_bad([](Archive& a) { a.tensors["op/0000/scales"].data<float>()[0] = 0.125f; }, "differ");
}

}  // namespace
}  // namespace qforge::quant::runtime
