#include "quant/runtime/model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/archive.h"
#include "core/error.h"
#include "core/parallel.h"

namespace qforge::quant::runtime {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::quantize:
      return "quantize";
    case OpKind::conv2d:
      return "conv2d";
    case OpKind::linear:
      return "linear";
    case OpKind::max_pool2d:
      return "max_pool2d";
    case OpKind::flatten:
      return "flatten";
    case OpKind::relu:
      return "relu";
    case OpKind::dequantize:
      return "dequantize";
    case OpKind::avg_pool2d:
      return "avg_pool2d";
    case OpKind::global_avg_pool:
      return "global_avg_pool";
    case OpKind::add:
      return "add";
    case OpKind::concat:
      return "concat";
    case OpKind::lstm:
      return "lstm";
  }
  return "?";
}

namespace {

constexpr const char* kFormat = "qforge-int8-model";
// 2: NHWC weight order ([OC, KH, KW, IC/groups]) and (H, W, C) linear columns
// after a flatten; 3: graphs (op inputs), avg pools, add and concat; 4: lstm.
constexpr int64_t kVersion = 4, kOldestVersion = 2;
constexpr OpKind kAllKinds[] = {OpKind::quantize,   OpKind::conv2d,          OpKind::linear, OpKind::max_pool2d,
                                OpKind::flatten,    OpKind::relu,            OpKind::dequantize,
                                OpKind::avg_pool2d, OpKind::global_avg_pool, OpKind::add,    OpKind::concat,
                                OpKind::lstm};

bool same_q(const ActQParams& a, const ActQParams& b) {
  return a.scale == b.scale && a.zero_point == b.zero_point && a.qmin == b.qmin && a.qmax == b.qmax;
}

std::string op_label(size_t i, const Op& op) {
  std::ostringstream s;
  s << "op " << i << " (" << op_kind_name(op.kind) << (op.name.empty() ? "" : " '" + op.name + "'") << ")";
  return s.str();
}


/// Recomputes a layer's requant multipliers and bounds from its scales (the
/// loader's half of make_qlayer()).
void finish_layer(QLayer& L) {
  L.requant.clear();
  for (float s : L.weight_scale) L.requant.push_back(requant_multiplier(L.input.scale, s, L.output.scale));
  L.bounds = activation_bounds(L.activation, L.output.scale, L.output.zero_point, L.output.qmin, L.output.qmax);
}

}  // namespace

std::vector<std::vector<int64_t>> Model::input_shapes() const {
  std::vector<std::vector<int64_t>> shapes;
  validate_into(&shapes);
  return shapes;
}

std::vector<int64_t> Model::validate() const { return validate_into(nullptr); }

std::vector<int32_t> Model::inputs_of(size_t i) const {
  if (!ops[i].inputs.empty() || i == 0) return ops[i].inputs;
  return {static_cast<int32_t>(i - 1)};
}

namespace {

void check_window(const Op& op, const std::string& at, std::vector<int64_t>& shape) {
  QF_CHECK_FORMAT(shape.size() == 3) << at << ": needs a [C, H, W] input";
  std::vector<int64_t> next = shape;
  for (int d = 0; d < 2; ++d) {
    const int64_t s = op.stride[d] ? op.stride[d] : op.kernel[d];
    QF_CHECK_FORMAT(op.kernel[d] >= 1 && op.kernel[d] <= 64 && s >= 1 && op.padding[d] >= 0 &&
                    2 * op.padding[d] <= op.kernel[d])
        << at << ": bad window";
    next[1 + d] = out_size(shape[1 + d], op.kernel[d], s, op.padding[d], 1);
    QF_CHECK_FORMAT(next[1 + d] >= 1) << at << ": the input is smaller than the window";
  }
  shape = next;
}

}  // namespace

std::vector<ActQParams> Model::output_qparams() const {
  std::vector<ActQParams> q;
  validate_into(nullptr, &q);
  return q;
}

std::vector<int64_t> Model::validate_into(std::vector<std::vector<int64_t>>* shapes,
                                          std::vector<ActQParams>* qparams) const {
  QF_CHECK_FORMAT(ops.size() >= 2 && ops.front().kind == OpKind::quantize && ops.back().kind == OpKind::dequantize)
      << "int8 model: the ops must start with quantize and end with dequantize";
  for (int64_t d : input_shape) QF_CHECK_FORMAT(d >= 1 && d <= (1 << 20)) << "int8 model: bad input shape";
  QF_CHECK_FORMAT(input_mean.size() == input_std.size() &&
                  (input_mean.empty() || static_cast<int64_t>(input_mean.size()) == input_shape[0]))
      << "int8 model: input_mean and input_std need " << input_shape[0] << " values each (or none), got "
      << input_mean.size() << " and " << input_std.size();
  for (size_t c = 0; c < input_std.size(); ++c)
    QF_CHECK_FORMAT(std::isfinite(input_mean[c]) && std::isfinite(input_std[c]) && input_std[c] > 0)
        << "int8 model: bad input normalization mean " << input_mean[c] << ", std " << input_std[c];
  std::vector<std::vector<int64_t>> out_shape(ops.size());
  std::vector<ActQParams> out_q(ops.size());
  std::vector<int> uses(ops.size(), 0);
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const std::string at = op_label(i, op);
    try {
      const std::vector<int32_t> in = inputs_of(i);
      for (int32_t j : in) {
        QF_CHECK_FORMAT(j >= 0 && static_cast<size_t>(j) < i)
            << at << ": reads op " << j << ", which does not come before it";
        ++uses[static_cast<size_t>(j)];
      }
      const size_t want_inputs = op.kind == OpKind::quantize ? 0
                                 : op.kind == OpKind::add    ? 2
                                 : op.kind == OpKind::concat ? std::max<size_t>(2, in.size())
                                                             : 1;
      QF_CHECK_FORMAT(in.size() == want_inputs) << at << ": takes " << want_inputs << " input(s), names " << in.size();
      std::vector<int64_t> shape =
          in.empty() ? std::vector<int64_t>(input_shape.begin(), input_shape.end()) : out_shape[in[0]];
      const ActQParams cur = in.empty() ? ActQParams{} : out_q[in[0]];
      if (shapes) shapes->push_back(shape);
      auto check_in_q = [&] {
        QF_CHECK_FORMAT(op.in_q.size() == in.size())
            << at << ": holds " << op.in_q.size() << " input qparams for " << in.size() << " inputs";
        for (size_t k = 0; k < in.size(); ++k) {
          op.in_q[k].check("input");
          QF_CHECK_FORMAT(same_q(op.in_q[k], out_q[in[k]]))
              << at << ": its input " << k << " qparams differ from what op " << in[k] << " produces";
        }
        op.q.check("output");
      };
      ActQParams next_q = cur;
      switch (op.kind) {
        case OpKind::quantize:
          QF_CHECK_FORMAT(i == 0) << at << ": quantize may only come first";
          op.q.check("quantize");
          next_q = op.q;
          break;
        case OpKind::conv2d:
        case OpKind::linear: {
          const QLayer& L = op.layer;
          L.input.check("layer input");
          L.output.check("layer output");
          QF_CHECK_FORMAT(same_q(L.input, cur)) << at << ": its input qparams differ from what the op before produces";
          QF_CHECK_FORMAT(L.in_channels >= 1 && L.out_channels >= 1 && L.groups >= 1 && L.in_channels % L.groups == 0 &&
                          L.out_channels % L.groups == 0)
              << at << ": bad channel counts " << L.in_channels << " -> " << L.out_channels << " in " << L.groups
              << " groups";
          for (int d = 0; d < 2; ++d)
            QF_CHECK_FORMAT(L.kernel[d] >= 1 && L.stride[d] >= 1 && L.padding[d] >= 0 && L.dilation[d] >= 1 &&
                            L.kernel[d] <= 64 && L.padding[d] <= 64)
                << at << ": bad geometry";
          const size_t oc = static_cast<size_t>(L.out_channels);
          QF_CHECK_FORMAT(L.weight.size() == oc * static_cast<size_t>(L.k_per_group()) && L.weight_scale.size() == oc &&
                          L.bias.size() == oc && L.requant.size() == oc)
              << at << ": weight, scale, bias or requant arrays do not match " << oc << " channels";
          QF_CHECK_FORMAT(L.k_per_group() < (int64_t{1} << 31) / (255 * 128)) << at << ": K is too large";
          for (float sc : L.weight_scale) QF_CHECK_FORMAT(std::isfinite(sc) && sc > 0) << at << ": bad weight scale " << sc;
          if (op.kind == OpKind::linear) {
            QF_CHECK_FORMAT(L.groups == 1 && L.kernel[0] == 1 && L.kernel[1] == 1) << at << ": a linear op is 1x1";
            int64_t features = 1;
            for (int64_t d : shape) features *= d;
            QF_CHECK_FORMAT(shape.size() == 1 && features == L.in_channels)
                << at << ": takes " << L.in_channels << " features, gets a tensor of shape with " << features
                << " elements" << (shape.size() == 1 ? "" : " (not flattened)");
            shape = {L.out_channels};
          } else {
            QF_CHECK_FORMAT(shape.size() == 3 && shape[0] == L.in_channels)
                << at << ": takes " << L.in_channels << " channels, gets " << (shape.size() == 3 ? shape[0] : -1);
            const int64_t oh = out_size(shape[1], L.kernel[0], L.stride[0], L.padding[0], L.dilation[0]);
            const int64_t ow = out_size(shape[2], L.kernel[1], L.stride[1], L.padding[1], L.dilation[1]);
            QF_CHECK_FORMAT(oh >= 1 && ow >= 1) << at << ": the input is smaller than the kernel";
            shape = {L.out_channels, oh, ow};
          }
          next_q = L.output;
          break;
        }
        case OpKind::max_pool2d:
          check_window(op, at, shape);
          break;
        case OpKind::avg_pool2d:
          check_in_q();
          check_window(op, at, shape);
          (void)rescale_multiplier(op.in_q[0].scale, op.q.scale, op.kernel[0] * op.kernel[1]);
          next_q = op.q;
          break;
        case OpKind::global_avg_pool:
          check_in_q();
          QF_CHECK_FORMAT(shape.size() == 3) << at << ": needs a [C, H, W] input";
          (void)rescale_multiplier(op.in_q[0].scale, op.q.scale, shape[1] * shape[2]);
          shape = {shape[0], 1, 1};
          next_q = op.q;
          break;
        case OpKind::add:
          check_in_q();
          QF_CHECK_FORMAT(out_shape[in[1]] == shape) << at << ": adds tensors of different shapes";
          QF_CHECK_FORMAT(static_cast<int32_t>(op.activation) >= 0 && static_cast<int32_t>(op.activation) <= 2)
              << at << ": bad activation";
          (void)add_multipliers(op.in_q[0].scale, op.in_q[1].scale, op.q.scale);
          next_q = op.q;
          break;
        case OpKind::concat: {
          check_in_q();
          int64_t channels = 0;
          for (int32_t j : in) {
            const auto& sj = out_shape[j];
            QF_CHECK_FORMAT(sj.size() == shape.size() && std::equal(sj.begin() + 1, sj.end(), shape.begin() + 1))
                << at << ": inputs differ in more than their channels";
            channels += sj[0];
          }
          for (const ActQParams& q : op.in_q)
            if (!same_q(q, op.q)) (void)rescale_multiplier(q.scale, op.q.scale);
          shape[0] = channels;
          next_q = op.q;
          break;
        }
        case OpKind::flatten: {
          int64_t n = 1;
          for (int64_t d : shape) n *= d;
          shape = {n};
          break;
        }
        case OpKind::lstm: {
          QF_CHECK_FORMAT(!op.lstm.empty() && op.lstm.size() <= 64) << at << ": holds " << op.lstm.size() << " layers";
          QF_CHECK_FORMAT(shape.size() == 3 && shape[0] == 1 && shape[2] == op.lstm[0].input_size)
              << at << ": takes a [1, T, " << op.lstm[0].input_size << "] sequence (rows are steps)";
          for (size_t l = 0; l < op.lstm.size(); ++l) {
            const QLstmLayer& L = op.lstm[l];
            const ActQParams& want = l == 0 ? cur : op.lstm[l - 1].hidden;
            QF_CHECK_FORMAT(same_q(L.ih.input, want) && (l == 0 || L.input_size == op.lstm[l - 1].hidden_size))
                << at << ": layer " << l << " does not read the codes " << (l == 0 ? "the op before" : "its previous layer")
                << " produces";
            QF_CHECK_FORMAT(L.cell_tanh && static_cast<int64_t>(L.gate_mult.size()) == 4 * L.hidden_size &&
                            same_q(L.hh.input, L.hidden))
                << at << ": layer " << l << " is not finalized (finalize_qlstm_layer)";
          }
          const int64_t H = op.lstm.back().hidden_size;
          shape = op.last_step_only ? std::vector<int64_t>{H} : std::vector<int64_t>{1, shape[1], H};
          next_q = op.lstm.back().hidden;
          break;
        }
        case OpKind::relu:
          QF_CHECK_FORMAT(same_q(op.q, cur)) << at << ": its qparams differ from what the op before produces";
          break;
        case OpKind::dequantize:
          QF_CHECK_FORMAT(i + 1 == ops.size()) << at << ": dequantize may only come last";
          QF_CHECK_FORMAT(same_q(op.q, cur)) << at << ": its qparams differ from what the op before produces";
          break;
      }
      out_shape[i] = shape;
      out_q[i] = next_q;
    } catch (const FormatError&) {
      throw;
    } catch (const Error& e) {
      QF_THROW(FormatError) << at << ": " << e.what();
    }
  }
  for (size_t i = 0; i + 1 < ops.size(); ++i)
    QF_CHECK_FORMAT(uses[i] > 0) << op_label(i, ops[i]) << ": its output is never read";
  if (qparams) *qparams = out_q;
  return out_shape.back();
}

Tensor Model::normalize_pixels(const Tensor& pixels) const {
  QF_CHECK(!input_mean.empty()) << "int8 model: the file holds no input normalization (input_mean, input_std)";
  QF_CHECK_DTYPE(pixels.dtype() == DType::u8) << "int8 model: pixels must be u8, got " << pixels.desc();
  const int64_t C = input_shape[0], HW = input_shape[1] * input_shape[2];
  QF_CHECK_SHAPE(pixels.ndim() >= 2 && pixels.numel() == pixels.size(0) * C * HW)
      << "int8 model: pixels must be [N, " << C << ", " << input_shape[1] << ", " << input_shape[2] << "], got "
      << pixels.desc();
  Tensor x = Tensor::empty({pixels.size(0), C, input_shape[1], input_shape[2]});
  const uint8_t* p = pixels.data<uint8_t>();
  float* o = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / HW) % C;
    o[i] = (static_cast<float>(p[i]) / 255.0f - input_mean[c]) / input_std[c];
  }
  return x;
}

Tensor Model::run(const Tensor& x, const kernels::KernelTable* k) const { return run(x, k, nullptr); }

Tensor Model::run(const Tensor& x, const kernels::KernelTable* k, const OpCallback& each) const {
  QF_CHECK_DTYPE(x.dtype() == DType::f32) << "int8 model: input must be f32, got " << x.desc();
  const int64_t per = input_shape[0] * input_shape[1] * input_shape[2];
  QF_CHECK_SHAPE(x.ndim() >= 2 && x.numel() == x.size(0) * per)
      << "int8 model: input must be [N, " << input_shape[0] << ", " << input_shape[1] << ", " << input_shape[2]
      << "], got " << x.desc();
  const int64_t N = x.size(0);
  QF_CHECK_SHAPE(N >= 1) << "int8 model: the batch is empty (" << x.desc() << ")";
  // A batch runs as sub-batches of at most kSubBatch images, each through the
  // whole graph on one thread: the activations of a few images stay in
  // cache from one op to the next (a whole batch's would not), and threads
  // need no hand-off between ops. Every op treats images independently, so
  // the codes do not depend on the split. Batches too small to split (and
  // runs with a callback, which sees whole-batch tensors) go op by op, each op
  // parallel inside.
  constexpr int64_t kSubBatch = 8;
  const int64_t threads = num_threads();
  const int64_t sub = std::min<int64_t>(kSubBatch, (N + threads - 1) / threads);
  if (each || sub >= N || in_parallel_region()) return run_graph(x, k, each);
  const int64_t parts = (N + sub - 1) / sub, per_image = x.numel() / N;
  std::vector<Tensor> outs(static_cast<size_t>(parts));
  parallel_chunks(parts, [&](int64_t c) {
    const int64_t n0 = c * sub, n1 = std::min(N, n0 + sub);
    Shape shape = x.shape();
    shape[0] = n1 - n0;
    Tensor part = Tensor::empty(shape, DType::f32);
    std::memcpy(part.raw(), x.data<float>() + n0 * per_image, static_cast<size_t>((n1 - n0) * per_image) * sizeof(float));
    outs[static_cast<size_t>(c)] = run_graph(part, k, nullptr);
  });
  Shape shape = outs[0].shape();
  shape[0] = N;
  Tensor y = Tensor::empty(shape, outs[0].dtype());
  uint8_t* dst = static_cast<uint8_t*>(y.raw());
  for (const Tensor& o : outs) {
    std::memcpy(dst, o.raw(), o.nbytes());
    dst += o.nbytes();
  }
  return y;
}

namespace {

/// A max pool whose windows do not overlap and need no padding: qconv2d can
/// fuse it (its stride is the kernel, written 0 or equal).
bool fusable_max_pool(const Op& op) {
  for (int d = 0; d < 2; ++d)
    if (op.padding[static_cast<size_t>(d)] != 0 ||
        (op.stride[static_cast<size_t>(d)] != 0 &&
         op.stride[static_cast<size_t>(d)] != op.kernel[static_cast<size_t>(d)]))
      return false;
  return true;
}

}  // namespace

Tensor Model::run_graph(const Tensor& x, const kernels::KernelTable* k, const OpCallback& each) const {
  const int64_t N = x.size(0);
  // Each op's output lives until its last reader has run.
  std::vector<int> pending(ops.size(), 0);
  std::vector<std::vector<int32_t>> reads(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    reads[i] = inputs_of(i);
    for (int32_t j : reads[i]) ++pending[static_cast<size_t>(j)];
  }
  std::vector<Tensor> out(ops.size());
  std::vector<std::vector<int64_t>> flatten_nhwc(ops.size());  // a flatten's input map [H, W, C]
  Tensor pooled_ahead;  // a max pool's output, computed by the conv before it
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const Tensor t = reads[i].empty() ? x.reshape({N, input_shape[0], input_shape[1], input_shape[2]})
                                      : out[static_cast<size_t>(reads[i][0])];
    Tensor y;
    switch (op.kind) {
      case OpKind::quantize:
        y = to_nhwc(quantize(t, op.q));
        break;
      case OpKind::conv2d:
        if (!each && i + 1 < ops.size() && pending[i] == 1 && ops[i + 1].kind == OpKind::max_pool2d &&
            reads[i + 1] == std::vector<int32_t>{static_cast<int32_t>(i)} && fusable_max_pool(ops[i + 1])) {
          // A max pool that alone reads this conv fuses into it (qconv2d's
          // pool): only the pooled outputs are requantized. The pool op takes
          // the result. A callback sees every op's own output, so runs with
          // one keep the ops apart.
          pooled_ahead = qconv2d(op.layer, t, k, &ops[i + 1].kernel);
          break;
        }
        y = qconv2d(op.layer, t, k);
        break;
      case OpKind::linear:
        y = qlinear(op.layer, t.reshape({N, t.numel() / N}), k);
        break;
      case OpKind::max_pool2d:
        if (pooled_ahead.defined()) {
          y = std::move(pooled_ahead);
          pooled_ahead = Tensor();
          break;
        }
        y = qmax_pool2d(t, op.kernel, op.stride, op.padding);
        break;
      case OpKind::avg_pool2d:
        y = qavg_pool2d(t, op.in_q[0], op.q, op.kernel, op.stride, op.padding);
        break;
      case OpKind::global_avg_pool:
        y = qglobal_avg_pool(t, op.in_q[0], op.q);
        break;
      case OpKind::add:
        y = qadd(t, op.in_q[0], out[static_cast<size_t>(reads[i][1])], op.in_q[1], op.q, op.activation, k);
        break;
      case OpKind::concat: {
        std::vector<Tensor> xs;
        for (int32_t j : reads[i]) xs.push_back(out[static_cast<size_t>(j)]);
        y = qconcat(xs, op.in_q, op.q);
        break;
      }
      case OpKind::lstm: {
        // [N, T, I, 1] NHWC codes of a one-channel map are [N, T, I].
        const int64_t T = t.size(1);
        const Tensor seq = qlstm(op.lstm, t.reshape({N, T, op.lstm[0].input_size}), k);
        y = op.last_step_only ? last_step(seq) : seq.reshape({N, T, seq.size(2), 1});
        break;
      }
      case OpKind::flatten:
        if (t.ndim() == 4) flatten_nhwc[i] = {t.size(1), t.size(2), t.size(3)};
        y = t.reshape({N, t.numel() / N});
        break;
      case OpKind::relu: {
        y = t.clone();
        uint8_t* p = y.data<uint8_t>();
        const uint8_t zp = static_cast<uint8_t>(op.q.zero_point);
        for (int64_t e = 0; e < y.numel(); ++e) p[e] = std::max(p[e], zp);
        break;
      }
      case OpKind::dequantize: {
        // Outputs follow the float model's NCHW order: a map goes back to
        // NCHW, and so does a flattened map (flatten works on NHWC codes).
        Tensor codes = t;
        const size_t from = static_cast<size_t>(reads[i][0]);
        if (ops[from].kind == OpKind::flatten && !flatten_nhwc[from].empty()) {
          const auto& d = flatten_nhwc[from];
          codes = to_nchw(t.reshape({N, d[0], d[1], d[2]})).reshape({N, d[0] * d[1] * d[2]});
        } else if (t.ndim() == 4) {
          codes = to_nchw(t);
        }
        y = dequantize(codes, op.q);
        break;
      }
    }
    for (int32_t j : reads[i])
      if (--pending[static_cast<size_t>(j)] == 0) out[static_cast<size_t>(j)] = Tensor();
    if (each) each(i, y);
    out[i] = std::move(y);
  }
  return out.back();
}

// ---- export ----------------------------------------------------------------------

namespace {

std::string key(size_t i, const char* field) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "op/%04zu/%s", i, field);
  return buf;
}

// Each op stores its integers in one i32 tensor "params" and its activation
// scales in one f32 tensor "scales" (few HDF5 datasets keep the file small):
//   quantize, relu, dequantize: params [zp, qmin, qmax], scales [scale]
//   max_pool2d: params [k0, k1, s0, s1, p0, p1]
//   conv2d, linear: params [in_channels, out_channels, groups, activation,
//     k0, k1, s0, s1, p0, p1, d0, d1, in_zp, in_qmin, in_qmax, out_zp,
//     out_qmin, out_qmax], scales [in_scale, out_scale]
//   avg_pool2d: params [k0, k1, s0, s1, p0, p1, in q, out q] (q: zp, qmin,
//     qmax), scales [in_scale, out_scale]
//   global_avg_pool: params [in q, out q], scales [in_scale, out_scale]
//   add: params [activation, a q, b q, out q], scales [a, b, out]
//   concat: params [n, q of each of the n inputs, out q], scales [the n
//     inputs', out]
constexpr int64_t kQParams = 3, kPoolParams = 6, kLayerParams = 18;

void put_q(std::vector<int64_t>& ints, std::vector<float>& scales, const ActQParams& q) {
  ints.insert(ints.end(), {q.zero_point, q.qmin, q.qmax});
  scales.push_back(q.scale);
}

ActQParams get_q(const int64_t* ints, float scale) {
  ActQParams q;
  q.scale = scale;
  for (int j = 0; j < 3; ++j)
    QF_CHECK_FORMAT(ints[j] >= INT32_MIN && ints[j] <= INT32_MAX) << "qparam " << ints[j] << " is out of range";
  q.zero_point = static_cast<int32_t>(ints[0]);
  q.qmin = static_cast<int32_t>(ints[1]);
  q.qmax = static_cast<int32_t>(ints[2]);
  return q;
}

template <class T>
std::vector<T> get_vec(const Archive& a, const std::string& k, DType dt, int64_t n) {
  const Tensor& t = a.tensor(k);
  QF_CHECK_FORMAT(t.dtype() == dt && t.ndim() >= 1 && t.numel() == n)
      << k << " must be " << dtype_name(dt) << " with " << n << " elements, got " << t.desc();
  return std::vector<T>(t.data<T>(), t.data<T>() + n);
}

}  // namespace

void save_model(const std::string& path, const Model& m, const std::string& producer) {
  m.validate();
  Archive a;
  a.strings["format"] = kFormat;
  a.strings["producer"] = producer;
  // Files without an lstm op keep version 3, so that older builds read them.
  bool has_lstm = false;
  for (const Op& op : m.ops) has_lstm = has_lstm || op.kind == OpKind::lstm;
  a.ints["format_version"] = has_lstm ? kVersion : 3;
  a.ints["num_ops"] = static_cast<int64_t>(m.ops.size());
  a.tensors["input_shape"] =
      Tensor::from_vector<int32_t>({static_cast<int32_t>(m.input_shape[0]), static_cast<int32_t>(m.input_shape[1]),
                                    static_cast<int32_t>(m.input_shape[2])},
                                   {3});
  if (!m.input_mean.empty()) {
    a.tensors["input_mean"] = Tensor::from_vector<float>(m.input_mean, {static_cast<int64_t>(m.input_mean.size())});
    a.tensors["input_std"] = Tensor::from_vector<float>(m.input_std, {static_cast<int64_t>(m.input_std.size())});
  }
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    a.strings[key(i, "kind")] = op_kind_name(op.kind);
    a.strings[key(i, "name")] = op.name;
    std::vector<int64_t> ints;
    std::vector<float> scales;
    switch (op.kind) {
      case OpKind::quantize:
      case OpKind::relu:
      case OpKind::dequantize:
        put_q(ints, scales, op.q);
        break;
      case OpKind::max_pool2d:
        ints = {op.kernel[0], op.kernel[1], op.stride[0], op.stride[1], op.padding[0], op.padding[1]};
        break;
      case OpKind::avg_pool2d:
        ints = {op.kernel[0], op.kernel[1], op.stride[0], op.stride[1], op.padding[0], op.padding[1]};
        put_q(ints, scales, op.in_q.at(0));
        put_q(ints, scales, op.q);
        break;
      case OpKind::global_avg_pool:
        put_q(ints, scales, op.in_q.at(0));
        put_q(ints, scales, op.q);
        break;
      case OpKind::add:
        ints = {static_cast<int64_t>(op.activation)};
        put_q(ints, scales, op.in_q.at(0));
        put_q(ints, scales, op.in_q.at(1));
        put_q(ints, scales, op.q);
        break;
      case OpKind::concat:
        ints = {static_cast<int64_t>(op.in_q.size())};
        for (const ActQParams& q : op.in_q) put_q(ints, scales, q);
        put_q(ints, scales, op.q);
        break;
      case OpKind::flatten:
        break;
      case OpKind::lstm:
        ints = {op.last_step_only ? 1 : 0, static_cast<int64_t>(op.lstm.size())};
        for (size_t l = 0; l < op.lstm.size(); ++l) {
          const QLstmLayer& L = op.lstm[l];
          const int64_t H4 = 4 * L.hidden_size;
          ints.insert(ints.end(), {L.input_size, L.hidden_size, L.cell_frac_bits});
          put_q(ints, scales, L.ih.input);
          put_q(ints, scales, L.hidden);
          for (const ActQParams& g : L.gate) put_q(ints, scales, g);
          const std::string pre = "lstm" + std::to_string(l) + "_";
          a.tensors[key(i, (pre + "weight_ih").c_str())] = Tensor::from_vector<int8_t>(L.ih.weight, {H4, L.input_size});
          a.tensors[key(i, (pre + "weight_hh").c_str())] = Tensor::from_vector<int8_t>(L.hh.weight, {H4, L.hidden_size});
          a.tensors[key(i, (pre + "weight_ih_scale").c_str())] = Tensor::from_vector<float>(L.ih.weight_scale, {H4});
          a.tensors[key(i, (pre + "weight_hh_scale").c_str())] = Tensor::from_vector<float>(L.hh.weight_scale, {H4});
          a.tensors[key(i, (pre + "bias").c_str())] = Tensor::from_vector<int32_t>(L.ih.bias, {H4});
        }
        break;
      case OpKind::conv2d:
      case OpKind::linear: {
        const QLayer& L = op.layer;
        ints = {L.in_channels, L.out_channels, L.groups, static_cast<int64_t>(L.activation), L.kernel[0], L.kernel[1],
                L.stride[0],   L.stride[1],    L.padding[0], L.padding[1], L.dilation[0], L.dilation[1]};
        put_q(ints, scales, L.input);
        put_q(ints, scales, L.output);
        const int64_t oc = L.out_channels, k = L.k_per_group();
        a.tensors[key(i, "weight")] = Tensor::from_vector<int8_t>(L.weight, {oc, k});
        a.tensors[key(i, "weight_scale")] = Tensor::from_vector<float>(L.weight_scale, {oc});
        a.tensors[key(i, "bias")] = Tensor::from_vector<int32_t>(L.bias, {oc});
        break;
      }
    }
    if (!ints.empty()) {
      std::vector<int32_t> i32;
      for (int64_t v : ints) {
        QF_CHECK(v >= INT32_MIN && v <= INT32_MAX) << "save_model: " << op_label(i, op) << " holds " << v;
        i32.push_back(static_cast<int32_t>(v));
      }
      a.tensors[key(i, "params")] = Tensor::from_vector<int32_t>(i32, {static_cast<int64_t>(i32.size())});
    }
    if (!scales.empty()) a.tensors[key(i, "scales")] = Tensor::from_vector<float>(scales, {static_cast<int64_t>(scales.size())});
    if (!op.inputs.empty())
      a.tensors[key(i, "inputs")] =
          Tensor::from_vector<int32_t>(op.inputs, {static_cast<int64_t>(op.inputs.size())});
  }
  save_archive(path, a);
}

Model load_model(const std::string& path) {
  const Archive a = load_archive(path);
  try {
    QF_CHECK_FORMAT(a.strings.count("format") && a.get_string("format") == kFormat)
        << "not a qforge int8 model (no format '" << kFormat << "')";
    const int64_t version = a.get_int("format_version");
    QF_CHECK_FORMAT(version >= kOldestVersion && version <= kVersion)
        << "format version " << version << " (this build reads versions " << kOldestVersion << " to " << kVersion
        << ")";
    Model m;
    const auto shape = get_vec<int32_t>(a, "input_shape", DType::i32, 3);
    for (int d = 0; d < 3; ++d) m.input_shape[d] = shape[d];
    if (a.tensors.count("input_mean") || a.tensors.count("input_std")) {
      QF_CHECK_FORMAT(shape[0] >= 1 && shape[0] <= 4096) << "input_shape channels " << shape[0];
      m.input_mean = get_vec<float>(a, "input_mean", DType::f32, shape[0]);
      m.input_std = get_vec<float>(a, "input_std", DType::f32, shape[0]);
    }
    const int64_t n = a.get_int("num_ops");
    QF_CHECK_FORMAT(n >= 2 && n <= 100000) << "num_ops = " << n;
    for (int64_t i = 0; i < n; ++i) {
      try {
        Op op;
        const std::string kind = a.get_string(key(i, "kind"));
        bool known = false;
        for (OpKind k : kAllKinds)
          if (kind == op_kind_name(k)) {
            op.kind = k;
            known = true;
          }
        QF_CHECK_FORMAT(known) << key(i, "kind") << " = '" << kind << "' is not an op this build knows";
        op.name = a.get_string(key(i, "name"));
        auto params = [&](int64_t count) {
          const auto v = get_vec<int32_t>(a, key(i, "params"), DType::i32, count);
          return std::vector<int64_t>(v.begin(), v.end());
        };
        auto scales = [&](int64_t count) { return get_vec<float>(a, key(i, "scales"), DType::f32, count); };
        if (a.tensors.count(key(i, "inputs"))) {
          const Tensor& t = a.tensor(key(i, "inputs"));
          QF_CHECK_FORMAT(t.dtype() == DType::i32 && t.ndim() == 1 && t.numel() >= 1 && t.numel() <= 4096)
              << key(i, "inputs") << " must be i32 [1..4096], got " << t.desc();
          op.inputs = get_vec<int32_t>(a, key(i, "inputs"), DType::i32, t.numel());
        }
        auto geo = [&](int64_t v, const char* what) {
          QF_CHECK_FORMAT(v >= 0 && v <= 4096) << key(i, "params") << ": " << what << " = " << v << " is out of range";
          return v;
        };
        switch (op.kind) {
          case OpKind::quantize:
          case OpKind::relu:
          case OpKind::dequantize: {
            const auto p = params(kQParams);
            op.q = get_q(p.data(), scales(1)[0]);
            break;
          }
          case OpKind::max_pool2d: {
            const auto p = params(kPoolParams);
            for (int d = 0; d < 2; ++d) {
              op.kernel[d] = geo(p[d], "kernel");
              op.stride[d] = geo(p[2 + d], "stride");
              op.padding[d] = geo(p[4 + d], "padding");
            }
            break;
          }
          case OpKind::avg_pool2d: {
            const auto p = params(kPoolParams + 2 * kQParams);
            const auto sc = scales(2);
            for (int d = 0; d < 2; ++d) {
              op.kernel[d] = geo(p[d], "kernel");
              op.stride[d] = geo(p[2 + d], "stride");
              op.padding[d] = geo(p[4 + d], "padding");
            }
            op.in_q = {get_q(p.data() + kPoolParams, sc[0])};
            op.q = get_q(p.data() + kPoolParams + kQParams, sc[1]);
            break;
          }
          case OpKind::global_avg_pool: {
            const auto p = params(2 * kQParams);
            const auto sc = scales(2);
            op.in_q = {get_q(p.data(), sc[0])};
            op.q = get_q(p.data() + kQParams, sc[1]);
            break;
          }
          case OpKind::add: {
            const auto p = params(1 + 3 * kQParams);
            const auto sc = scales(3);
            QF_CHECK_FORMAT(p[0] >= 0 && p[0] <= 2) << key(i, "params") << ": " << p[0] << " is not an activation";
            op.activation = static_cast<Activation>(p[0]);
            op.in_q = {get_q(p.data() + 1, sc[0]), get_q(p.data() + 1 + kQParams, sc[1])};
            op.q = get_q(p.data() + 1 + 2 * kQParams, sc[2]);
            break;
          }
          case OpKind::concat: {
            const Tensor& pt = a.tensor(key(i, "params"));
            QF_CHECK_FORMAT(pt.dtype() == DType::i32 && pt.numel() >= 1) << key(i, "params") << " is " << pt.desc();
            const int64_t n = pt.data<int32_t>()[0];
            QF_CHECK_FORMAT(n >= 2 && n <= 4096) << key(i, "params") << ": concat of " << n << " inputs";
            const auto p = params(1 + (n + 1) * kQParams);
            const auto sc = scales(n + 1);
            for (int64_t j = 0; j < n; ++j) op.in_q.push_back(get_q(p.data() + 1 + j * kQParams, sc[j]));
            op.q = get_q(p.data() + 1 + n * kQParams, sc[n]);
            break;
          }
          case OpKind::flatten:
            break;
          case OpKind::lstm: {
            QF_CHECK_FORMAT(version >= 4) << "an lstm op in a version " << version << " file (lstm came in version 4)";
            const Tensor& pt = a.tensor(key(i, "params"));
            QF_CHECK_FORMAT(pt.dtype() == DType::i32 && pt.numel() >= 2) << key(i, "params") << " is " << pt.desc();
            const int64_t layers = pt.data<int32_t>()[1];
            QF_CHECK_FORMAT(layers >= 1 && layers <= 64) << key(i, "params") << ": " << layers << " LSTM layers";
            constexpr int64_t per = 3 + 6 * kQParams;
            const auto p = params(2 + layers * per);
            const auto sc = scales(layers * 6);
            QF_CHECK_FORMAT(p[0] == 0 || p[0] == 1) << key(i, "params") << ": last_step_only = " << p[0];
            op.last_step_only = p[0] == 1;
            for (int64_t l = 0; l < layers; ++l) {
              const int64_t* q = p.data() + 2 + l * per;
              const float* s = sc.data() + l * 6;
              QLstmLayer L;
              for (int j = 0; j < 2; ++j)
                QF_CHECK_FORMAT(q[j] >= 1 && q[j] <= (1 << 16)) << key(i, "params") << ": LSTM size " << q[j];
              L.input_size = q[0];
              L.hidden_size = q[1];
              L.cell_frac_bits = static_cast<int32_t>(q[2]);
              L.ih.input = get_q(q + 3, s[0]);
              L.hidden = get_q(q + 3 + kQParams, s[1]);
              for (int g = 0; g < 4; ++g) L.gate[g] = get_q(q + 3 + (2 + g) * kQParams, s[2 + g]);
              const int64_t H4 = 4 * L.hidden_size;
              const std::string pre = "lstm" + std::to_string(l) + "_";
              L.ih.in_channels = L.input_size;
              L.hh.in_channels = L.hidden_size;
              L.ih.out_channels = L.hh.out_channels = H4;
              for (const auto& [name, cols] : {std::pair<const char*, int64_t>{"weight_ih", L.input_size},
                                               std::pair<const char*, int64_t>{"weight_hh", L.hidden_size}}) {
                const std::string k = key(i, (pre + name).c_str());
                QF_CHECK_FORMAT(a.tensor(k).shape() == (Shape{H4, cols}))
                    << k << " must be [" << H4 << ", " << cols << "], got " << a.tensor(k).desc();
              }
              L.ih.weight = get_vec<int8_t>(a, key(i, (pre + "weight_ih").c_str()), DType::i8, H4 * L.input_size);
              L.hh.weight = get_vec<int8_t>(a, key(i, (pre + "weight_hh").c_str()), DType::i8, H4 * L.hidden_size);
              L.ih.weight_scale = get_vec<float>(a, key(i, (pre + "weight_ih_scale").c_str()), DType::f32, H4);
              L.hh.weight_scale = get_vec<float>(a, key(i, (pre + "weight_hh_scale").c_str()), DType::f32, H4);
              L.ih.bias = get_vec<int32_t>(a, key(i, (pre + "bias").c_str()), DType::i32, H4);
              finalize_qlstm_layer(L);
              op.lstm.push_back(std::move(L));
            }
            break;
          }
          case OpKind::conv2d:
          case OpKind::linear: {
            const auto p = params(kLayerParams);
            const auto sc = scales(2);
            QLayer& L = op.layer;
            for (int j = 0; j < 3; ++j)
              QF_CHECK_FORMAT(p[j] >= 1 && p[j] <= (1 << 20))
                  << key(i, "params") << ": channel count or groups " << p[j] << " is out of range";
            L.in_channels = p[0];
            L.out_channels = p[1];
            L.groups = p[2];
            QF_CHECK_FORMAT(p[3] >= 0 && p[3] <= 2) << key(i, "params") << ": " << p[3] << " is not an activation";
            L.activation = static_cast<Activation>(p[3]);
            for (int d = 0; d < 2; ++d) {
              L.kernel[d] = geo(p[4 + d], "kernel");
              L.stride[d] = geo(p[6 + d], "stride");
              L.padding[d] = geo(p[8 + d], "padding");
              L.dilation[d] = geo(p[10 + d], "dilation");
            }
            L.input = get_q(p.data() + 12, sc[0]);
            L.output = get_q(p.data() + 15, sc[1]);
            QF_CHECK_FORMAT(L.in_channels % L.groups == 0 && L.kernel[0] >= 1 && L.kernel[1] >= 1)
                << key(i, "params") << ": bad geometry";
            const int64_t oc = L.out_channels, k = L.k_per_group();
            L.weight = get_vec<int8_t>(a, key(i, "weight"), DType::i8, oc * k);
            QF_CHECK_FORMAT(a.tensor(key(i, "weight")).shape() == (Shape{oc, k}))
                << key(i, "weight") << " must be [" << oc << ", " << k << "], got " << a.tensor(key(i, "weight")).desc();
            L.weight_scale = get_vec<float>(a, key(i, "weight_scale"), DType::f32, oc);
            L.bias = get_vec<int32_t>(a, key(i, "bias"), DType::i32, oc);
            for (float s : L.weight_scale)
              QF_CHECK_FORMAT(std::isfinite(s) && s > 0) << key(i, "weight_scale") << " holds " << s;
            L.input.check("layer input");
            L.output.check("layer output");
            finish_layer(L);
            break;
          }
        }
        m.ops.push_back(std::move(op));
      } catch (const Error& e) {
        QF_THROW(FormatError) << key(static_cast<size_t>(i), "") << " " << e.what();
      }
    }
    m.validate();
    return m;
  } catch (const Error& e) {
    QF_THROW(FormatError) << path << ": " << e.what();
  }
  __builtin_unreachable();
}

}  // namespace qforge::quant::runtime
