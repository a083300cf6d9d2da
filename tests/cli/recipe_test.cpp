// Recipes: defaults, --set overrides, and one clear message with the line
// and column for every kind of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/recipe.h"
#include "nn/zoo.h"
#include "quant/fake_quantize.h"
#include "quant/prepare.h"

namespace qforge::cli {
namespace {

const std::string kSource = QFORGE_SOURCE_DIR;

/// The RecipeError message for `text`, or "" when it parses.
std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    parse_recipe_text(text, "r.yaml", sets, kSource);
  } catch (const RecipeError& e) {
    return e.what();
  }
  return "";
}

TEST(Recipe, DefaultsResolveAndShippedRecipesParse) {
  const Recipe r = parse_recipe_text("model: {name: mnist_cnn}\n", "r.yaml", {}, kSource);
  EXPECT_EQ(r.dataset, "mnist");
  EXPECT_EQ(r.batch_size, 64);
  EXPECT_FALSE(r.quant);
  EXPECT_FALSE(r.do_export);
  EXPECT_EQ(r.mean, std::vector<float>{0.1307f});
  EXPECT_TRUE(std::filesystem::is_directory(r.data_dir)) << r.data_dir;
  for (const char* name : {"mnist_fp32", "mnist_qat_int8", "mnist_lsq_w4a4", "mnist_ptq_int8"}) {
    const Recipe s = parse_recipe(kSource + "/recipes/" + name + ".yaml", {}, kSource);
    EXPECT_EQ(s.model, "mnist_cnn") << name;
  }
  // The CIFAR-10 recipes (their data and the LSQ recipe's pretrained file
  // may be absent here: schema checks only).
  for (const char* name : {"cifar10_resnet20_fp32", "cifar10_resnet20_qat_int8", "cifar10_resnet20_lsq_w4a4",
                           "cifar10_mobilenet_qat_int8"}) {
    const Recipe s = parse_recipe(kSource + "/recipes/" + name + ".yaml", {}, kSource, false);
    EXPECT_EQ(s.dataset, "cifar10") << name;
    EXPECT_EQ(s.mean.size(), 3u) << name;
  }
  const Recipe r20 = parse_recipe(kSource + "/recipes/cifar10_resnet20_qat_int8.yaml", {}, kSource, false);
  EXPECT_TRUE(r20.nesterov);
  EXPECT_DOUBLE_EQ(r20.label_smoothing, 0.1);
  EXPECT_EQ(r20.epochs + r20.qat_epochs, 30);
  for (const char* name : {"mnist_lstm_fp32", "mnist_lstm_qat_int8"}) {
    const Recipe s = parse_recipe(kSource + "/recipes/" + name + ".yaml", {}, kSource);
    EXPECT_EQ(s.model, "mnist_lstm") << name;
    EXPECT_EQ(s.clip_grad_norm, 5.0) << name;
  }
  const Recipe demo = parse_recipe(kSource + "/recipes/mnist_qat_int8.yaml", {}, kSource);
  EXPECT_TRUE(demo.quant && demo.do_export && demo.validate_export);
  EXPECT_EQ(demo.quant_mode, "qat");
  EXPECT_EQ(demo.epochs, 2);
  EXPECT_EQ(demo.qat_epochs, 1);
  const Recipe lsq = parse_recipe(kSource + "/recipes/mnist_lsq_w4a4.yaml", {}, kSource);
  EXPECT_EQ(lsq.method, "lsq");
  EXPECT_EQ(lsq.weight.bits, 4);
  EXPECT_EQ(lsq.activation.bits, 4);
}

TEST(Recipe, SetOverridesKeepTypesAndCreateSections) {
  const Recipe r = parse_recipe_text("training: {epochs: 2}\n", "r.yaml",
                                     {"training.epochs=5", "quant.enabled=true", "quant.weight.bits=4",
                                      "training.optimizer.lr=0.01", "data.normalize.mean=[0.5]"},
                                     kSource);
  EXPECT_EQ(r.epochs, 5);
  EXPECT_TRUE(r.quant);
  EXPECT_EQ(r.weight.bits, 4);
  EXPECT_DOUBLE_EQ(r.lr, 0.01);
  EXPECT_EQ(r.mean, std::vector<float>{0.5f});
  EXPECT_NE(error_of("", {"training.epochs"}).find("expected key.path=value"), std::string::npos);
  EXPECT_NE(error_of("training: 3\n", {"training.epochs=2"}).find("is not a mapping"), std::string::npos);
  EXPECT_EQ(error_of("", {"training.epochs=abc"}), "--set training.epochs: expected an integer, got 'abc'");
}

TEST(Recipe, EveryBadInputGetsOneMessageWithLineAndColumn) {
  // unknown key, with a suggestion
  EXPECT_EQ(error_of("model:\n  name: mnist_cnn\ntraning:\n  epochs: 2\n"),
            "r.yaml:3:1: traning: unknown key 'traning'; did you mean 'training'? (known here: model, data, "
            "training, quant, export, pretrained, distill)");
  EXPECT_NE(error_of("training:\n  optimiser: {name: sgd}\n").find("r.yaml:2:3: training.optimiser: unknown key "
                                                                    "'optimiser'; did you mean 'optimizer'?"),
            std::string::npos);
  // wrong types
  EXPECT_EQ(error_of("training:\n  epochs: [1]\n"), "r.yaml:2:11: training.epochs: expected an integer");
  EXPECT_EQ(error_of("training:\n  epochs: 1.5\n"), "r.yaml:2:11: training.epochs: expected an integer, got '1.5'");
  EXPECT_EQ(error_of("quant:\n  enabled: maybe\n"), "r.yaml:2:12: quant.enabled: expected true or false, got 'maybe'");
  EXPECT_EQ(error_of("data: 3\n"), "r.yaml:1:7: data: expected a mapping of keys");
  // ranges and choices
  EXPECT_EQ(error_of("quant:\n  weight: {bits: 9}\n"), "r.yaml:2:18: quant.weight.bits: must be in [2, 8], got 9");
  EXPECT_EQ(error_of("quant:\n  activation: {bits: 1}\n"),
            "r.yaml:2:22: quant.activation.bits: must be in [2, 8], got 1");
  EXPECT_EQ(error_of("training:\n  optimizer: {lr: 0}\n"),
            "r.yaml:2:19: training.optimizer.lr: must be in (0, 100], got 0");
  EXPECT_EQ(error_of("training:\n  optimizer: {name: adma}\n"),
            "r.yaml:2:21: training.optimizer.name: 'adma' is not one of: adam, adamw, sgd; did you mean 'adam'?");
  EXPECT_EQ(error_of("model: {name: mnist_cn}\n"),
            "r.yaml:1:15: model.name: 'mnist_cn' is not a zoo model (lenet5, mlp, mnist_cnn, mnist_lstm, mobilenet_cifar, resnet20); did you mean "
            "'mnist_cnn'?");
  EXPECT_NE(error_of("quant:\n  activation: {observer: per_channel_minmax}\n").find("per tensor"), std::string::npos);
  EXPECT_NE(error_of("data:\n  normalize: {mean: [0.1, 0.2], std: [1, 1]}\n").find("need 1 value(s) each"),
            std::string::npos);
  EXPECT_NE(error_of("export: {path: x.h5}\n").find("needs quantization"), std::string::npos);
  EXPECT_EQ(error_of("training:\n  optimizer: {name: adam, nesterov: true}\n"),
            "r.yaml:2:37: training.optimizer.nesterov: nesterov needs optimizer 'sgd' with momentum > 0");
  EXPECT_EQ(error_of("training:\n  label_smoothing: 1\n"),
            "r.yaml:2:20: training.label_smoothing: must be in [0, 0.999], got 1");
  EXPECT_NE(error_of("quant:\n  overrides:\n    - {float: true}\n").find("r.yaml:3:7: quant.overrides[0]: needs a "
                                                                          "'match' glob"),
            std::string::npos);
  // missing files
  EXPECT_EQ(error_of("data:\n  dir: /no/such/dir\n"), "r.yaml:2:8: data.dir: no such directory '/no/such/dir'");
  EXPECT_EQ(error_of("pretrained: /no/such.h5\n"), "r.yaml:1:13: pretrained: no such file '/no/such.h5'");
  EXPECT_EQ(error_of("distill:\n  teacher: /no/such.h5\n"),
            "r.yaml:2:12: distill.teacher: no such file '/no/such.h5'");
  EXPECT_EQ(error_of("distill: {alpha: 0.5}\n"), "r.yaml:1:10: distill: distillation needs a 'teacher' checkpoint");
  EXPECT_EQ(error_of("distill: {alpha: 1.5}\n"), "r.yaml:1:18: distill.alpha: must be in (0, 1], got 1.5");
  EXPECT_EQ(error_of("training: {epochs: 0}\ndistill: {teacher: " + kSource + "/recipes/mnist_fp32.yaml}\n"),
            "r.yaml:2:10: distill: no training step runs to distill into (training.epochs is 0 and no QAT stage)");
  EXPECT_EQ(error_of("distill: {temperature: 0}\n"), "r.yaml:1:24: distill.temperature: must be in (0, 100], got 0");
  // syntax
  EXPECT_NE(error_of("a: [\n").find("r.yaml:2:1: YAML syntax error"), std::string::npos);
  EXPECT_THROW(parse_recipe("/no/such/recipe.yaml"), RecipeError);
}

TEST(Recipe, ResolvedYamlParsesBackToTheSameRecipe) {
  const Recipe a = parse_recipe(kSource + "/recipes/mnist_lsq_w4a4.yaml",
                                {"quant.overrides=[{match: fc, weight_bits: 8}]", "training.optimizer.name=sgd",
                                 "training.optimizer.nesterov=true", "training.label_smoothing=0.05",
                                 "training.optimizer.decay_vectors=false", "quant.lsq_init=data",
                                 "distill.teacher=" + kSource + "/recipes/mnist_fp32.yaml", "distill.temperature=2"},
                                kSource);
  EXPECT_DOUBLE_EQ(a.distill_alpha, 0.5);
  EXPECT_DOUBLE_EQ(a.distill_temperature, 2);
  EXPECT_FALSE(a.decay_vectors);
  EXPECT_EQ(a.lsq_init, "data");
  const Recipe b = parse_recipe_text(to_yaml(a), "resolved.yaml", {}, kSource);
  EXPECT_FALSE(b.decay_vectors);
  EXPECT_EQ(b.lsq_init, "data");
  EXPECT_EQ(to_yaml(a), to_yaml(b));
  ASSERT_EQ(b.overrides.size(), 1u);
  EXPECT_EQ(b.overrides[0].match, "fc");
  EXPECT_EQ(b.overrides[0].weight_bits, 8);
  EXPECT_TRUE(b.nesterov);
  EXPECT_DOUBLE_EQ(b.label_smoothing, 0.05);
  EXPECT_EQ(b.distill_teacher, a.distill_teacher);
  EXPECT_DOUBLE_EQ(b.distill_temperature, 2);
}

TEST(Recipe, QuantSectionBecomesTheQConfigMap) {
  // LSQ at 4 bits with the data init; overrides keep their own bits and the
  // recipe's method and init.
  const Recipe r = parse_recipe(kSource + "/recipes/mnist_lsq_w4a4.yaml",
                                {"quant.lsq_init=data", "quant.overrides=[{match: fc, activation_bits: 8}, "
                                                        "{match: 'conv*', float: true}]"},
                                kSource);
  EXPECT_EQ(r.lsq_init, "data");
  const quant::QConfigMap map = recipe_qconfig_map(r);
  const std::optional<quant::QConfig> g = map.resolve("other", "Conv2d");
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->weight.method, quant::FakeQuantMethod::lsq);
  EXPECT_EQ(g->weight.lsq_init, quant::LsqInit::data);
  EXPECT_EQ(g->activation.lsq_init, quant::LsqInit::data);
  EXPECT_EQ(g->weight.spec.bits, 4);
  EXPECT_EQ(g->activation.spec.bits, 4);
  const std::optional<quant::QConfig> fc = map.resolve("fc", "Linear");
  ASSERT_TRUE(fc.has_value());
  EXPECT_EQ(fc->weight.spec.bits, 4);
  EXPECT_EQ(fc->activation.spec.bits, 8);
  EXPECT_EQ(fc->activation.lsq_init, quant::LsqInit::data);
  EXPECT_FALSE(map.resolve("conv1", "Conv2d").has_value());
  // The default init is the observer's range; STE recipes carry no LSQ.
  const Recipe d = parse_recipe(kSource + "/recipes/mnist_lsq_w4a4.yaml", {}, kSource);
  EXPECT_EQ(recipe_qconfig_map(d).resolve("x", "Conv2d")->activation.lsq_init, quant::LsqInit::observer);
  const Recipe s = parse_recipe(kSource + "/recipes/mnist_qat_int8.yaml", {}, kSource);
  EXPECT_EQ(recipe_qconfig_map(s).resolve("x", "Conv2d")->weight.method, quant::FakeQuantMethod::ste);
  EXPECT_NE(error_of("quant: {lsq_init: max}\n").find("lsq_init"), std::string::npos);
}

// The LSQ ResNet-20 recipe's globs must keep matching the zoo model's module
// names: 8 bits for the image, the stem, the classifier and its input (the
// last add, which the pool keeps), and the residual adds' inputs (conv2 and
// projection outputs); 4 bits everywhere else.
TEST(Recipe, LsqResNetRecipeGivesEachQuantizerItsBits) {
  const Recipe r = parse_recipe(kSource + "/recipes/cifar10_resnet20_lsq_w4a4.yaml", {}, kSource, false);
  Generator g(1);
  nn::ModulePtr m = nn::make_model("resnet20", {}, g);
  quant::PrepareOptions po;
  po.qconfig = recipe_qconfig_map(r);
  quant::prepare_qat(*m, po);
  auto ends_with = [](const std::string& s, const std::string& t) {
    return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  int quantizers = 0, eight = 0;
  for (const auto& [name, mod] : m->named_modules()) {
    const auto* fq = dynamic_cast<const quant::FakeQuantize*>(mod);
    if (!fq) continue;
    ++quantizers;
    const bool output = ends_with(name, ".output_fake_quant");
    const bool want8 = name.rfind("quant.", 0) == 0 || name.rfind("conv.", 0) == 0 || name.rfind("fc.", 0) == 0 ||
                       name == "layer3_2.add.output_fake_quant" ||
                       (output && (ends_with(name, ".main.conv2.output_fake_quant") ||
                                   ends_with(name, ".shortcut.conv.output_fake_quant")));
    EXPECT_EQ(fq->config().spec.bits, want8 ? 8 : 4) << name;
    EXPECT_EQ(fq->config().method, quant::FakeQuantMethod::lsq) << name;
    eight += want8;
  }
  // quant, conv (2), fc (2), layer3_2.add, 9 conv2 outputs, 2 shortcut outputs.
  EXPECT_EQ(eight, 1 + 2 + 2 + 1 + 9 + 2);
  // 19 convs and fc with weight and output quantizers, 9 adds, the stub.
  EXPECT_EQ(quantizers, 2 * 22 + 9 + 1);
}

TEST(Recipe, EditDistance) {
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("traning", "training"), 1u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace qforge::cli
