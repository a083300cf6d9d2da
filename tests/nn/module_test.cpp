#include <gtest/gtest.h>

#include "nn/layers.h"
#include "nn/zoo.h"

namespace qforge::nn {
namespace {

using autograd::Variable;

Tensor random_input(const Shape& s, uint64_t seed) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  normal_(t, 0, 1, g);
  return t;
}

TEST(Module, MnistCnnMatchesTheReferenceParameterCount) {
  Generator g(0);
  auto m = mnist_cnn(g);
  // ../shared/bench/README.md: 119,914 parameters.
  EXPECT_EQ(m->num_parameters(), 119914);
  std::vector<std::string> names;
  for (auto& [n, v] : m->named_parameters()) names.push_back(n);
  const std::vector<std::string> want = {"conv1.weight", "bn1.weight", "bn1.bias",     "conv2.weight",
                                         "bn2.weight",   "bn2.bias",   "conv3.weight", "bn3.weight",
                                         "bn3.bias",     "fc.weight",  "fc.bias"};
  EXPECT_EQ(names, want);
  auto bufs = m->named_buffers();
  ASSERT_EQ(bufs.size(), 6u);
  EXPECT_EQ(bufs[0].first, "bn1.running_mean");
  Variable y = m->forward(Variable(random_input({2, 1, 28, 28}, 1)));
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
}

TEST(Module, SameSeedSameModelDifferentSeedDifferent) {
  Generator a(7), b(7), c(8);
  auto ma = mnist_cnn(a), mb = mnist_cnn(b), mc = mnist_cnn(c);
  EXPECT_EQ(ma->state_dict()["fc.weight"].to_vector(), mb->state_dict()["fc.weight"].to_vector());
  EXPECT_NE(ma->state_dict()["fc.weight"].to_vector(), mc->state_dict()["fc.weight"].to_vector());
}

TEST(Module, StateDictRoundTripGivesIdenticalOutputs) {
  Generator a(1), b(2);
  auto src = mnist_cnn(a), dst = mnist_cnn(b);
  Tensor x = random_input({3, 1, 28, 28}, 3);
  src->train();
  src->forward(Variable(x));  // moves the running statistics off their init
  src->eval();
  dst->eval();
  StateDict sd;
  for (auto& [k, t] : src->state_dict()) sd[k] = t.clone();
  auto dst_w = dst->parameters()[0];
  dst->load_state_dict(sd);
  EXPECT_EQ(src->forward(Variable(x)).value().to_vector(), dst->forward(Variable(x)).value().to_vector());
  // Values were copied into the existing storage: handles stay valid.
  EXPECT_TRUE(dst_w.value().shares_storage(dst->parameters()[0].value()));
  EXPECT_EQ(dst_w.value().to_vector(), sd["conv1.weight"].to_vector());
  EXPECT_EQ(dst->state_dict()["bn1.running_mean"].to_vector(), src->state_dict()["bn1.running_mean"].to_vector());
  // The loaded values were copied: changing the source dict leaves dst alone.
  const auto before = dst->state_dict()["bn1.running_mean"].to_vector();
  sd["bn1.running_mean"].fill_(42.0);
  EXPECT_EQ(dst->state_dict()["bn1.running_mean"].to_vector(), before);
}

TEST(Module, LoadStateDictReportsMissingUnexpectedAndMismatches) {
  auto m = mlp(4, {3}, 2);
  StateDict sd;
  for (auto& [k, t] : m->state_dict()) sd[k] = t.clone();
  StateDict missing = sd;
  missing.erase("fc1.bias");
  missing["extra.weight"] = Tensor::zeros({1});
  try {
    m->load_state_dict(missing);
    FAIL() << "expected an error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("missing keys fc1.bias"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unexpected keys extra.weight"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(m->load_state_dict(missing, /*strict=*/false));

  StateDict wrong = sd;
  wrong["fc2.weight"] = Tensor::zeros({2, 4});
  wrong["fc1.weight"] = Tensor::full({3, 4}, 5.0);
  const auto before = m->state_dict()["fc1.weight"].to_vector();
  EXPECT_THROW(m->load_state_dict(wrong), ShapeError);
  // Nothing was written by the failed load.
  EXPECT_EQ(m->state_dict()["fc1.weight"].to_vector(), before);
  StateDict wrong_dtype = sd;
  wrong_dtype["fc1.bias"] = Tensor::zeros({3}, DType::f64);
  EXPECT_THROW(m->load_state_dict(wrong_dtype), DTypeError);
}

TEST(Module, ReplaceModuleByDottedPath) {
  auto outer = std::make_shared<Sequential>();
  auto inner = std::make_shared<Sequential>();
  inner->push_back("act", std::make_shared<ReLU>());
  outer->push_back("block", inner);
  Tensor x = Tensor::from_vector<float>({-1, 2}, {1, 2});
  EXPECT_EQ(outer->forward(Variable(x)).value().to_vector(), (std::vector<double>{0, 2}));
  outer->eval();
  auto old = outer->replace_module("block.act", std::make_shared<Identity>());
  EXPECT_EQ(old->type_name(), "ReLU");
  EXPECT_EQ(outer->get_module("block.act")->type_name(), "Identity");
  // The replacement takes the parent's mode.
  EXPECT_FALSE(outer->get_module("block.act")->is_training());
  EXPECT_EQ(outer->forward(Variable(x)).value().to_vector(), (std::vector<double>{-1, 2}));
  try {
    outer->get_module("block.nope");
    FAIL();
  } catch (const IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("'block' (Sequential) has no child 'nope'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(outer->replace_module("missing", std::make_shared<Identity>()), IndexError);
  EXPECT_THROW(outer->replace_module("block.act", nullptr), ValueError);
}

TEST(Module, TrainEvalApplyNamedModulesAndDuplicateNames) {
  auto m = mnist_cnn();
  EXPECT_TRUE(m->is_training());
  m->eval();
  int count = 0;
  m->apply([&](Module& mod) {
    EXPECT_FALSE(mod.is_training());
    ++count;
  });
  EXPECT_EQ(count, 15);
  auto mods = m->named_modules();
  ASSERT_EQ(mods.size(), 15u);
  EXPECT_EQ(mods[0].first, "");
  EXPECT_EQ(mods[1].first, "quant");
  EXPECT_EQ(mods[2].first, "conv1");
  EXPECT_EQ(mods[13].first, "fc");
  EXPECT_EQ(mods[14].first, "dequant");
  m->train();
  EXPECT_TRUE(m->get_module("bn2")->is_training());
  Sequential s;
  s.push_back("a", std::make_shared<ReLU>());
  EXPECT_THROW(s.push_back("a", std::make_shared<ReLU>()), ValueError);
  EXPECT_THROW(s.push_back("a.b", std::make_shared<ReLU>()), ValueError);
  EXPECT_NE(m->repr().find("(conv1): Conv2d(1, 32, kernel=3, bias=false)"), std::string::npos) << m->repr();
}

TEST(Module, ZeroGradClearsEveryParameter) {
  auto m = mlp(4, {3}, 2);
  Variable y = m->forward(Variable(random_input({2, 4}, 1)));
  autograd::sum(y).backward();
  for (auto& p : m->parameters()) EXPECT_TRUE(p.has_grad());
  m->zero_grad();
  for (auto& p : m->parameters()) EXPECT_FALSE(p.has_grad());
}

TEST(Zoo, MakeModelByNameAndArgumentChecks) {
  auto names = model_names();
  for (const char* n : {"mnist_cnn", "lenet5", "mlp"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  auto m = make_model("mlp", {{"in_features", "10"}, {"hidden", "8,6"}, {"classes", "3"}});
  EXPECT_EQ(m->forward(Variable(random_input({2, 10}, 0))).shape(), (Shape{2, 3}));
  EXPECT_EQ(m->num_parameters(), 10 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3);
  auto lenet = make_model("lenet5");
  EXPECT_EQ(lenet->forward(Variable(random_input({2, 1, 28, 28}, 0))).shape(), (Shape{2, 10}));
  EXPECT_EQ(lenet->num_parameters(), 61706);
  try {
    make_model("resnet9000");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'resnet9000'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("mnist_cnn"), std::string::npos);
  }
  EXPECT_THROW(make_model("mnist_cnn", {{"width", "2"}}), ValueError);
  EXPECT_THROW(make_model("mlp", {{"hidden", "8,x"}}), ValueError);
  EXPECT_THROW(make_model("mlp", {{"hidden", "0"}}), ValueError);
  // resnet20's zero_init_residual: each block's last batch norm starts at
  // scale 0 (the others at 1); 0 and 1 are the only values.
  for (const char* z : {"0", "1"}) {
    auto r = make_model("resnet20", {{"zero_init_residual", z}});
    for (const auto& [name, p] : r->named_parameters()) {
      if (name.find("bn") == std::string::npos || name.find("weight") == std::string::npos) continue;
      const bool zeroed = name.find("main.bn2") != std::string::npos && std::string(z) == "1";
      EXPECT_EQ(p.value().item(0), zeroed ? 0.0 : 1.0) << name << " zero_init_residual=" << z;
    }
  }
  EXPECT_THROW(make_model("resnet20", {{"zero_init_residual", "2"}}), ValueError);
  register_model("tiny", [](const ModelArgs&, Generator& g) -> ModulePtr { return mlp(2, {}, 2, g); });
  EXPECT_EQ(make_model("tiny")->num_parameters(), 6);
}

}  // namespace
}  // namespace qforge::nn
