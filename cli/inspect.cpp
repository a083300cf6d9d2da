// qforge inspect: per-layer qparams and weight ranges of an int8 model or a
// checkpoint, and for a QAT checkpoint the per-layer SQNR of the int8 model
// against the float model on a batch of training images, with optional SVG
// charts (SQNR bars, activation histograms with the int8 range marked).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "core/archive.h"
#include "core/error.h"
#include "data/cifar10.h"
#include "data/mnist.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/prepare.h"
#include "trainers/trainer.h"

namespace qforge::cli {

namespace fs = std::filesystem;
namespace rt = quant::runtime;

namespace {

std::string fmt(double v, const char* f = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// Weight statistics of a quantized layer: scale range, used code range and
/// the share of codes at the clamp limits.
void print_layer_weights(const rt::QLayer& L) {
  const auto [smin, smax] = std::minmax_element(L.weight_scale.begin(), L.weight_scale.end());
  int lo = 127, hi = -128;
  int64_t at_limit = 0;
  for (int8_t w : L.weight) {
    lo = std::min<int>(lo, w);
    hi = std::max<int>(hi, w);
    at_limit += (w == -128 || w == 127 || w == -127);
  }
  std::printf("      weights [%lld, %lld] x k%lldx%lld%s: scale %s..%s, codes %d..%d, %.2f%% at the limits\n",
              static_cast<long long>(L.out_channels), static_cast<long long>(L.in_channels / L.groups),
              static_cast<long long>(L.kernel[0]), static_cast<long long>(L.kernel[1]),
              L.groups > 1 ? (" groups " + std::to_string(L.groups)).c_str() : "", fmt(*smin).c_str(),
              fmt(*smax).c_str(), lo, hi, 100.0 * at_limit / std::max<size_t>(L.weight.size(), 1));
}

std::string range_of(const rt::ActQParams& q) {
  return "scale " + fmt(q.scale) + " zp " + std::to_string(q.zero_point) + " -> [" +
         fmt((q.qmin - q.zero_point) * static_cast<double>(q.scale)) + ", " +
         fmt((q.qmax - q.zero_point) * static_cast<double>(q.scale)) + "]";
}

void print_model(const rt::Model& m) {
  const auto q = m.output_qparams();
  std::printf("int8 graph: %zu ops, input %lldx%lldx%lld%s\n", m.ops.size(), static_cast<long long>(m.input_shape[0]),
              static_cast<long long>(m.input_shape[1]), static_cast<long long>(m.input_shape[2]),
              m.input_mean.empty() ? "" : ", with input normalization");
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const rt::Op& op = m.ops[i];
    std::printf("  %2zu %-16s %-10s out %s\n", i, rt::op_kind_name(op.kind), op.name.c_str(), range_of(q[i]).c_str());
    if (op.kind == rt::OpKind::conv2d || op.kind == rt::OpKind::linear) print_layer_weights(op.layer);
  }
}

/// Float outputs of each child (by path) of a Sequential chain.
void walk_float(nn::Module& m, const std::string& prefix, autograd::Variable& x,
                std::map<std::string, Tensor>& out) {
  for (const auto& [name, child] : m.named_children()) {
    const std::string path = prefix.empty() ? name : prefix + "." + name;
    if (child->type_name() == "Sequential") {
      walk_float(*child, path, x, out);
      continue;
    }
    x = (*child)(x);
    out[path] = x.value();
  }
}

struct LayerReport {
  std::string name;
  double sqnr_db = 0;
  std::vector<float> values;  // float activations (a sample)
  double lo = 0, hi = 0;      // the int8 output range in real units
};

void write_svg_bars(const std::string& path, const std::vector<LayerReport>& layers) {
  const int w = 120 + 70 * static_cast<int>(layers.size()), h = 320;
  double top = 10;
  for (const auto& l : layers) top = std::max(top, std::min(l.sqnr_db, 80.0));
  std::ofstream f(path);
  f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h << "' font-family='sans-serif' "
    << "font-size='12'>\n<text x='10' y='20' font-size='14'>SQNR of int8 against float, per layer (dB)</text>\n";
  const double base = h - 60, scale = (base - 40) / top;
  f << "<line x1='60' y1='" << base << "' x2='" << w - 20 << "' y2='" << base << "' stroke='black'/>\n";
  for (size_t i = 0; i < layers.size(); ++i) {
    const double v = std::min(layers[i].sqnr_db, 80.0), x = 70 + 70.0 * i, bh = std::max(0.0, v) * scale;
    f << "<rect x='" << x << "' y='" << base - bh << "' width='50' height='" << bh << "' fill='#4a7ab7'/>\n";
    f << "<text x='" << x + 25 << "' y='" << base - bh - 4 << "' text-anchor='middle'>" << fmt(layers[i].sqnr_db, "%.1f")
      << "</text>\n";
    f << "<text x='" << x + 25 << "' y='" << base + 16 << "' text-anchor='middle'>" << layers[i].name << "</text>\n";
  }
  f << "</svg>\n";
}

void write_svg_hist(const std::string& path, const LayerReport& l) {
  constexpr int kBins = 64, w = 640, h = 300;
  float vmin = std::min<double>(l.lo, *std::min_element(l.values.begin(), l.values.end()));
  float vmax = std::max<double>(l.hi, *std::max_element(l.values.begin(), l.values.end()));
  if (vmax <= vmin) vmax = vmin + 1;
  std::vector<int64_t> bins(kBins, 0);
  for (float v : l.values) bins[std::min(kBins - 1, static_cast<int>((v - vmin) / (vmax - vmin) * kBins))]++;
  const int64_t peak = *std::max_element(bins.begin(), bins.end());
  std::ofstream f(path);
  f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h << "' font-family='sans-serif' "
    << "font-size='12'>\n<text x='10' y='20' font-size='14'>" << l.name << ": float activations (" << l.values.size()
    << " values, log counts); red: the int8 range</text>\n";
  const double x0 = 40, x1 = w - 20, base = h - 40, top = 40;
  auto xpos = [&](double v) { return x0 + (v - vmin) / (vmax - vmin) * (x1 - x0); };
  for (int b = 0; b < kBins; ++b) {
    if (!bins[b]) continue;
    const double bh = std::log1p(static_cast<double>(bins[b])) / std::log1p(static_cast<double>(peak)) * (base - top);
    f << "<rect x='" << x0 + (x1 - x0) * b / kBins << "' y='" << base - bh << "' width='" << (x1 - x0) / kBins - 1
      << "' height='" << bh << "' fill='#888'/>\n";
  }
  for (double v : {l.lo, l.hi})
    f << "<line x1='" << xpos(v) << "' y1='" << top << "' x2='" << xpos(v) << "' y2='" << base
      << "' stroke='red' stroke-width='2'/>\n";
  f << "<text x='" << x0 << "' y='" << base + 16 << "'>" << fmt(vmin) << "</text><text x='" << x1
    << "' y='" << base + 16 << "' text-anchor='end'>" << fmt(vmax) << "</text>\n</svg>\n";
}

}  // namespace

int run_inspect(const std::string& path, const std::string& recipe_path, const std::string& plot_dir, int64_t images,
                const std::string& source_dir) {
  std::vector<std::pair<std::string, std::string>> kv = {{"command", "\"inspect\""}};
  if (is_int8_model(path)) {
    const rt::Model m = rt::load_model(path);
    print_model(m);
    std::printf("(per-layer SQNR needs the float model: inspect the QAT checkpoint of the run)\n");
    kv.push_back({"kind", "\"int8\""});
    kv.push_back({"ops", std::to_string(m.ops.size())});
    std::printf("%s\n", json_line(kv).c_str());
    return 0;
  }
  const Recipe r = recipe_of_checkpoint(path, recipe_path, source_dir);
  nn::ModulePtr model;
  bool quantized = false;
  rebuild_from_checkpoint(path, r, model, quantized);
  if (!quantized) {
    std::printf("FP32 checkpoint of %s: parameters\n", r.model.c_str());
    for (const auto& [name, p] : model->named_parameters()) {
      const Tensor& t = p.value();
      const float* d = t.data<float>();
      const auto [lo, hi] = std::minmax_element(d, d + t.numel());
      std::printf("  %-24s %-16s [%s, %s]\n", name.c_str(), t.desc().c_str(), fmt(*lo).c_str(), fmt(*hi).c_str());
    }
    std::printf("(no quantization in this checkpoint: no qparams or SQNR)\n");
    kv.push_back({"kind", "\"fp32\""});
    std::printf("%s\n", json_line(kv).c_str());
    return 0;
  }
  const rt::Model m = quant::convert(*model, dataset_input_shape(r.dataset));
  print_model(m);
  // A batch of training images, normalized as in training, no augmentation.
  data::LoaderOptions lo;
  lo.batch_size = images;
  lo.shuffle = false;
  lo.mean = r.mean;
  lo.std = r.std;
  data::DataLoader loader(r.dataset == "mnist" ? data::load_mnist(r.data_dir, data::Split::train)
                                               : data::load_cifar10(r.data_dir, data::Split::train),
                          lo);
  data::Batch b;
  loader.start_epoch(0);
  QF_CHECK(loader.next(b)) << "inspect: no training images in " << r.data_dir;
  // Float reference: the same model with fake quant and the int8 path off.
  std::map<std::string, Tensor> ref;
  {
    autograd::NoGradGuard ng;
    quant::set_int8_eval(*model, false);
    quant::enable_fake_quant(*model, false);
    autograd::Variable x(b.x);
    walk_float(*model, "", x, ref);
  }
  const auto qp = m.output_qparams();
  std::vector<LayerReport> layers;
  m.run(b.x, nullptr, [&](size_t i, const Tensor& codes) {
    const rt::Op& op = m.ops[i];
    if (op.kind != rt::OpKind::conv2d && op.kind != rt::OpKind::linear && op.kind != rt::OpKind::add &&
        op.kind != rt::OpKind::lstm)
      return;
    const auto it = ref.find(op.name);
    if (it == ref.end()) return;
    const Tensor deq = rt::dequantize(codes.ndim() == 4 ? rt::to_nchw(codes) : codes, qp[i]);
    const Tensor& f = it->second;
    if (f.numel() != deq.numel()) return;
    double sig = 0, err = 0;
    LayerReport l;
    l.name = op.name;
    for (int64_t k = 0; k < f.numel(); ++k) {
      const double a = f.data<float>()[k], d = a - deq.data<float>()[k];
      sig += a * a;
      err += d * d;
      if (k % std::max<int64_t>(1, f.numel() / 20000) == 0) l.values.push_back(static_cast<float>(a));
    }
    l.sqnr_db = err > 0 ? 10 * std::log10(sig / err) : 999;
    l.lo = (qp[i].qmin - qp[i].zero_point) * static_cast<double>(qp[i].scale);
    l.hi = (qp[i].qmax - qp[i].zero_point) * static_cast<double>(qp[i].scale);
    layers.push_back(std::move(l));
  });
  std::printf("SQNR of the int8 model against the float model (fake quant off) on %lld training images:\n",
              static_cast<long long>(b.y.numel()));
  std::string list = "[";
  const LayerReport* worst = nullptr;
  for (const auto& l : layers) {
    std::printf("  %-12s %7.2f dB   output range [%s, %s]\n", l.name.c_str(), l.sqnr_db, fmt(l.lo).c_str(),
                fmt(l.hi).c_str());
    if (list.size() > 1) list += ',';
    list += json_line({{"name", json_string(l.name)}, {"sqnr_db", fmt(l.sqnr_db, "%.2f")}});
    if (!worst || l.sqnr_db < worst->sqnr_db) worst = &l;
  }
  list += ']';
  if (!plot_dir.empty() && !layers.empty()) {
    fs::create_directories(plot_dir);
    write_svg_bars(plot_dir + "/sqnr.svg", layers);
    for (const auto& l : layers) write_svg_hist(plot_dir + "/hist_" + l.name + ".svg", l);
    std::printf("charts: %s/sqnr.svg and %zu histograms\n", plot_dir.c_str(), layers.size());
    kv.push_back({"plot_dir", json_string(plot_dir)});
  }
  kv.push_back({"kind", "\"qat\""});
  kv.push_back({"ops", std::to_string(m.ops.size())});
  kv.push_back({"layers", list});
  if (worst) {
    kv.push_back({"min_sqnr_db", fmt(worst->sqnr_db, "%.2f")});
    kv.push_back({"worst_layer", json_string(worst->name)});
  }
  std::printf("%s\n", json_line(kv).c_str());
  return 0;
}

}  // namespace qforge::cli
