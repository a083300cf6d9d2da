#include "quant/convert.h"

#include "core/error.h"
#include "nn/layers.h"
#include "quant/qat_lstm.h"
#include "quant/qat_modules.h"

namespace qforge::quant {

namespace {

struct Walker {
  runtime::Model model;
  bool have_q = false;
  runtime::ActQParams cur;
  int32_t last = -1;  // the op producing the current value (-1: the model input)

  /// Appends op, reading `last` (named explicitly unless it is the op just before).
  void emit(runtime::Op op) {
    if (last >= 0 && last != static_cast<int32_t>(model.ops.size()) - 1) op.inputs = {last};
    model.ops.push_back(std::move(op));
    last = static_cast<int32_t>(model.ops.size()) - 1;
  }

  void block(nn::Module& b, const std::string& path) {
    QF_CHECK(have_q) << "convert: '" << path << "' (BasicBlock) lies outside the quantized region";
    const int32_t in = last;
    const runtime::ActQParams in_q = cur;
    walk(*b.get_module("main"), path + ".main");
    const int32_t main_out = last;
    const runtime::ActQParams main_q = cur;
    const auto sc = b.get_module("shortcut");
    last = in;
    cur = in_q;
    if (sc->type_name() == "Sequential") {
      walk(*sc, path + ".shortcut");
    } else {
      QF_CHECK(sc->type_name() == "Identity")
          << "convert: '" << path << ".shortcut' (" << sc->type_name() << ") has no int8 form";
    }
    auto* add = dynamic_cast<QATAdd*>(b.get_module("add").get());
    QF_CHECK(add) << "convert: '" << path << ".add' (" << b.get_module("add")->type_name()
                  << ") is not quantized (prepare it with prepare_qat/prepare)";
    const std::string why = add->int8_blocker();
    QF_CHECK(why.empty()) << "convert: '" << path << ".add' has no int8 form: " << why;
    runtime::Op op;
    op.kind = runtime::OpKind::add;
    op.name = path + ".add";
    op.in_q = {main_q, cur};
    op.q = runtime_act_qparams(add->output_fake_quant(), "convert: '" + op.name + "'");
    op.activation = add->relu() ? Activation::relu : Activation::none;
    op.inputs = {main_out, last};
    model.ops.push_back(op);
    last = static_cast<int32_t>(model.ops.size()) - 1;
    cur = op.q;
  }

  void walk(nn::Module& seq, const std::string& prefix) {
    for (const auto& [name, child] : seq.named_children()) {
      const std::string path = prefix.empty() ? name : prefix + "." + name;
      const std::string& type = child->type_name();
      runtime::Op op;
      op.name = path;
      if (type == "Sequential") {
        walk(*child, path);
        continue;
      }
      if (type == "BasicBlock") {
        block(*child, path);
        continue;
      }
      if (type == "Identity" || type == "Dropout") continue;
      if (type == "QATQuantStub") {
        QF_CHECK(!have_q) << "convert: a second QuantStub at '" << path << "' (the chain is already quantized)";
        op.kind = runtime::OpKind::quantize;
        op.q = runtime_act_qparams(static_cast<QATQuantStub&>(*child).output_fake_quant(), "convert: '" + path + "'");
        cur = op.q;
        have_q = true;
      } else if (type == "DeQuantStub") {
        QF_CHECK(have_q) << "convert: DeQuantStub '" << path << "' before any QuantStub";
        op.kind = runtime::OpKind::dequantize;
        op.q = cur;
        have_q = false;
      } else {
        QF_CHECK(have_q) << "convert: '" << path << "' (" << type
                         << ") lies outside the quantized region (no QuantStub before it); the runtime has no float "
                            "layers";
        if (auto* layer = dynamic_cast<QATLayer*>(child.get())) {
          const std::string why = layer->int8_blocker();
          QF_CHECK(why.empty()) << "convert: '" << path << "' (" << type << ") has no int8 form: " << why;
          op.kind = dynamic_cast<QATConvBase*>(layer) ? runtime::OpKind::conv2d : runtime::OpKind::linear;
          op.layer = layer->to_qlayer();
          cur = op.layer.output;
        } else if (auto* rnn = dynamic_cast<QATLSTM*>(child.get())) {
          const std::string why = rnn->int8_blocker();
          QF_CHECK(why.empty()) << "convert: '" << path << "' (" << type << ") has no int8 form: " << why;
          QF_CHECK(rnn->spec().batch_first)
              << "convert: '" << path << "' (" << type
              << ") must be batch_first: the runtime's sequences are the rows of a [N, 1, T, I] input or of the "
                 "previous LSTM's [N, T, H] output";
          op.kind = runtime::OpKind::lstm;
          op.lstm = rnn->to_qlayers();
          op.last_step_only = rnn->spec().last_step_only;
          cur = op.lstm.back().hidden;
        } else if (auto* pool = dynamic_cast<QATAvgPool*>(child.get())) {
          const std::string why = pool->int8_blocker();
          QF_CHECK(why.empty()) << "convert: '" << path << "' (" << type << ") has no int8 form: " << why;
          op.kind = pool->global() ? runtime::OpKind::global_avg_pool : runtime::OpKind::avg_pool2d;
          op.kernel = pool->kernel();
          op.stride = pool->stride();
          op.padding = pool->padding();
          op.in_q = {cur};
          op.q = cur;  // the output keeps the input's qparams
        } else if (type == "MaxPool2d") {
          const auto& o = static_cast<nn::MaxPool2d&>(*child).options();
          op.kind = runtime::OpKind::max_pool2d;
          op.kernel = o.kernel;
          op.stride = o.stride;
          op.padding = o.padding;
        } else if (type == "Flatten") {
          const auto& f = static_cast<nn::Flatten&>(*child);
          QF_CHECK(f.start_axis() == 1 && f.end_axis() == -1)
              << "convert: Flatten '" << path << "' must flatten axes 1 to the end";
          op.kind = runtime::OpKind::flatten;
        } else if (type == "ReLU") {
          op.kind = runtime::OpKind::relu;
          op.q = cur;
        } else {
          QF_THROW(ValueError) << "convert: '" << path << "' (" << type
                               << ") has no int8 op (quantized layers must be prepared with prepare_qat/prepare; "
                                  "float layers cannot sit inside the quantized region)";
        }
      }
      emit(std::move(op));
    }
  }
};

}  // namespace

runtime::Model convert(nn::Module& model, std::array<int64_t, 3> input_shape) {
  QF_CHECK(model.type_name() == "Sequential") << "convert: needs a Sequential model, got " << model.type_name();
  Walker w;
  w.model.input_shape = input_shape;
  w.walk(model, "");
  QF_CHECK(!w.model.ops.empty() && w.model.ops.front().kind == runtime::OpKind::quantize)
      << "convert: the model must start with a QuantStub";
  QF_CHECK(w.model.ops.back().kind == runtime::OpKind::dequantize) << "convert: the model must end with a DeQuantStub";
  try {
    // The runtime flattens NHWC codes: a linear layer after a flatten of a
    // [C, H, W] map takes its inputs in (H, W, C) order.
    const auto shapes = w.model.input_shapes();
    for (size_t i = 1; i < w.model.ops.size(); ++i) {
      if (w.model.ops[i].kind != runtime::OpKind::linear) continue;
      const size_t from = static_cast<size_t>(w.model.inputs_of(i)[0]);
      if (w.model.ops[from].kind == runtime::OpKind::flatten && shapes[from].size() == 3 &&
          (shapes[from][1] > 1 || shapes[from][2] > 1))
        runtime::reorder_linear_input_to_hwc(w.model.ops[i].layer, shapes[from][0], shapes[from][1],
                                             shapes[from][2]);
    }
    w.model.validate();
  } catch (const Error& e) {
    QF_THROW(ValueError) << "convert: " << e.what();
  }
  return w.model;
}

}  // namespace qforge::quant
