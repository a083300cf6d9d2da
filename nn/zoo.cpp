#include "nn/zoo.h"

#include <mutex>
#include <sstream>

namespace qforge::nn {

int64_t ModelArgs::get_int(const std::string& key, int64_t fallback) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return fallback;
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  QF_CHECK(used == it->second.size() && used > 0)
      << "model argument '" << key << "' must be an integer, got '" << it->second << "'";
  return v;
}

double ModelArgs::get_double(const std::string& key, double fallback) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return fallback;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  QF_CHECK(used == it->second.size() && used > 0)
      << "model argument '" << key << "' must be a number, got '" << it->second << "'";
  return v;
}

std::vector<int64_t> ModelArgs::get_ints(const std::string& key, const std::vector<int64_t>& fallback) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return fallback;
  std::vector<int64_t> out;
  std::stringstream ss(it->second);
  std::string item;
  while (std::getline(ss, item, ',')) {
    ModelArgs one{{key, item}};
    out.push_back(one.get_int(key, 0));
  }
  return out;
}

void ModelArgs::check_known(const std::string& model, const std::vector<std::string>& known) const {
  for (const auto& [k, v] : kv_) {
    bool ok = false;
    for (const auto& n : known) ok = ok || n == k;
    if (ok) continue;
    std::ostringstream msg;
    msg << "model '" << model << "' has no argument '" << k << "'";
    if (known.empty()) {
      msg << " (it takes none)";
    } else {
      msg << " (it takes:";
      for (const auto& n : known) msg << " " << n;
      msg << ")";
    }
    QF_THROW(ValueError) << msg.str();
  }
}

namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> r = [] {
    std::map<std::string, ModelFactory> m;
    m["mnist_cnn"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("mnist_cnn", {});
      return mnist_cnn(g);
    };
    m["resnet20"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("resnet20", {"classes", "zero_init_residual"});
      const int64_t classes = a.get_int("classes", 10), zero = a.get_int("zero_init_residual", 0);
      QF_CHECK(classes >= 1) << "resnet20: classes must be >= 1";
      QF_CHECK(zero == 0 || zero == 1) << "resnet20: zero_init_residual must be 0 or 1, got " << zero;
      return resnet20(classes, g, zero == 1);
    };
    m["mobilenet_cifar"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("mobilenet_cifar", {"classes"});
      const int64_t classes = a.get_int("classes", 10);
      QF_CHECK(classes >= 1) << "mobilenet_cifar: classes must be >= 1";
      return mobilenet_cifar(classes, g);
    };
    m["mnist_lstm"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("mnist_lstm", {"hidden", "layers", "classes"});
      const int64_t hidden = a.get_int("hidden", 128), layers = a.get_int("layers", 1), classes = a.get_int("classes", 10);
      QF_CHECK(hidden >= 1 && layers >= 1 && classes >= 1)
          << "mnist_lstm: hidden, layers and classes must be >= 1, got " << hidden << ", " << layers << ", " << classes;
      return mnist_lstm(hidden, layers, classes, g);
    };
    m["lenet5"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("lenet5", {});
      return lenet5(g);
    };
    m["mlp"] = [](const ModelArgs& a, Generator& g) -> ModulePtr {
      a.check_known("mlp", {"in_features", "hidden", "classes"});
      const int64_t in = a.get_int("in_features", 784), classes = a.get_int("classes", 10);
      const auto hidden = a.get_ints("hidden", {256, 128});
      QF_CHECK(in >= 1 && classes >= 1) << "mlp: in_features and classes must be >= 1";
      for (int64_t h : hidden) QF_CHECK(h >= 1) << "mlp: hidden widths must be >= 1, got " << h;
      return mlp(in, hidden, classes, g);
    };
    return m;
  }();
  return r;
}

}  // namespace

void register_model(const std::string& name, ModelFactory factory) {
  QF_CHECK(!name.empty() && factory) << "register_model: need a name and a factory";
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

std::vector<std::string> model_names() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& [n, f] : registry()) out.push_back(n);
  return out;
}

ModulePtr make_model(const std::string& name, const ModelArgs& args, Generator& gen) {
  ModelFactory f;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end()) f = it->second;
  }
  if (!f) {
    std::ostringstream known;
    for (const auto& n : model_names()) known << " " << n;
    QF_THROW(ValueError) << "unknown model '" << name << "' (known:" << known.str() << ")";
  }
  return f(args, gen);
}

std::shared_ptr<Sequential> mnist_cnn(Generator& gen) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  m->push_back("conv1", std::make_shared<Conv2d>(1, 32, 3, 1, 0, false, 1, gen));
  m->push_back("bn1", std::make_shared<BatchNorm2d>(32));
  m->push_back("relu1", std::make_shared<ReLU>());
  m->push_back("conv2", std::make_shared<Conv2d>(32, 64, 3, 1, 0, false, 1, gen));
  m->push_back("bn2", std::make_shared<BatchNorm2d>(64));
  m->push_back("relu2", std::make_shared<ReLU>());
  m->push_back("pool", std::make_shared<MaxPool2d>(2));
  m->push_back("conv3", std::make_shared<Conv2d>(64, 64, 3, 1, 0, false, 1, gen));
  m->push_back("bn3", std::make_shared<BatchNorm2d>(64));
  m->push_back("relu3", std::make_shared<ReLU>());
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc", std::make_shared<Linear>(64 * 10 * 10, 10, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

std::shared_ptr<Sequential> mnist_lstm(int64_t hidden, int64_t layers, int64_t classes, Generator& gen) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  LSTMSpec s;
  s.input_size = 28;
  s.hidden_size = hidden;
  s.num_layers = layers;
  s.batch_first = true;
  s.last_step_only = true;
  m->push_back("lstm", std::make_shared<LSTM>(s, gen));
  m->push_back("fc", std::make_shared<Linear>(hidden, classes, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

std::shared_ptr<Sequential> resnet20(int64_t classes, Generator& gen, bool zero_init_residual) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  m->push_back("conv", std::make_shared<Conv2d>(3, 16, 3, 1, 1, false, 1, gen));
  m->push_back("bn", std::make_shared<BatchNorm2d>(16));
  m->push_back("relu", std::make_shared<ReLU>());
  int64_t in = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t width = 16 << stage;
    for (int b = 0; b < 3; ++b) {
      const int64_t stride = stage > 0 && b == 0 ? 2 : 1;
      auto block = std::make_shared<BasicBlock>(in, width, stride, gen);
      if (zero_init_residual) block->get_module("main")->get_module("bn2")->param("weight").value().fill_(0.0);
      m->push_back("layer" + std::to_string(stage + 1) + "_" + std::to_string(b), block);
      in = width;
    }
  }
  m->push_back("pool", std::make_shared<AdaptiveAvgPool2d>(1));
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc", std::make_shared<Linear>(64, classes, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

std::shared_ptr<Sequential> mobilenet_cifar(int64_t classes, Generator& gen) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  m->push_back("conv", std::make_shared<Conv2d>(3, 32, 3, 1, 1, false, 1, gen));
  m->push_back("bn", std::make_shared<BatchNorm2d>(32));
  m->push_back("relu", std::make_shared<ReLU6>());
  int64_t in = 32;
  const std::pair<int64_t, int64_t> blocks[] = {{64, 1}, {128, 2}, {128, 1}, {256, 2}, {256, 1}};
  int i = 0;
  for (const auto& [out, stride] : blocks) {
    auto b = std::make_shared<Sequential>();
    b->push_back("dw", std::make_shared<Conv2d>(in, in, 3, stride, 1, false, in, gen));
    b->push_back("dw_bn", std::make_shared<BatchNorm2d>(in));
    b->push_back("dw_relu", std::make_shared<ReLU6>());
    b->push_back("pw", std::make_shared<Conv2d>(in, out, 1, 1, 0, false, 1, gen));
    b->push_back("pw_bn", std::make_shared<BatchNorm2d>(out));
    b->push_back("pw_relu", std::make_shared<ReLU6>());
    m->push_back("block" + std::to_string(++i), b);
    in = out;
  }
  m->push_back("pool", std::make_shared<AdaptiveAvgPool2d>(1));
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc", std::make_shared<Linear>(in, classes, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

std::shared_ptr<Sequential> lenet5(Generator& gen) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  m->push_back("conv1", std::make_shared<Conv2d>(1, 6, 5, 1, 2, true, 1, gen));
  m->push_back("relu1", std::make_shared<ReLU>());
  m->push_back("pool1", std::make_shared<MaxPool2d>(2));
  m->push_back("conv2", std::make_shared<Conv2d>(6, 16, 5, 1, 0, true, 1, gen));
  m->push_back("relu2", std::make_shared<ReLU>());
  m->push_back("pool2", std::make_shared<MaxPool2d>(2));
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc1", std::make_shared<Linear>(16 * 5 * 5, 120, true, gen));
  m->push_back("relu3", std::make_shared<ReLU>());
  m->push_back("fc2", std::make_shared<Linear>(120, 84, true, gen));
  m->push_back("relu4", std::make_shared<ReLU>());
  m->push_back("fc3", std::make_shared<Linear>(84, 10, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

std::shared_ptr<Sequential> mlp(int64_t in_features, const std::vector<int64_t>& hidden, int64_t classes,
                                Generator& gen) {
  auto m = std::make_shared<Sequential>();
  m->push_back("quant", std::make_shared<QuantStub>());
  m->push_back("flatten", std::make_shared<Flatten>());
  int64_t prev = in_features;
  for (size_t i = 0; i < hidden.size(); ++i) {
    m->push_back("fc" + std::to_string(i + 1), std::make_shared<Linear>(prev, hidden[i], true, gen));
    m->push_back("relu" + std::to_string(i + 1), std::make_shared<ReLU>());
    prev = hidden[i];
  }
  m->push_back("fc" + std::to_string(hidden.size() + 1), std::make_shared<Linear>(prev, classes, true, gen));
  m->push_back("dequant", std::make_shared<DeQuantStub>());
  return m;
}

}  // namespace qforge::nn
