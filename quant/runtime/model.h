#pragma once
// The int8 model: a graph of runtime ops from a float input to float outputs
// (the dequantized output codes), its HDF5 export and its validating loader.
// Ops are stored in an order where every op comes after the ops it reads
// (a topological order), so a chain needs no explicit inputs and residual
// blocks (add) and branches (concat) name theirs. Depends on core alone.
//
// File format (an Archive, core/archive.h), version 4 (version 4 adds the
// lstm op; versions 3 and 2, the latter with chains only, still load; version 1, never released, had NCHW weight
// order):
//   strings  format = "qforge-int8-model", producer
//   ints     format_version = 4 (3 when no op is an lstm), num_ops
//   tensor   input_shape (i32 [3]: C, H, W); optional input_mean and
//            input_std (f32 [C])
//   per op i, under "op/NNNN/": strings kind and name; tensors params (i32:
//   qparams and geometry, laid out in model.cpp), scales (f32: activation
//   scales) and, when the op names its inputs, inputs (i32); for conv2d and
//   linear also weight (i8 [OC, K]), weight_scale (f32 [OC]) and bias (i32
//   [OC]); for lstm, per layer l, lstm{l}_weight_ih (i8 [4H, I]),
//   lstm{l}_weight_hh (i8 [4H, H]), lstm{l}_weight_ih_scale and
//   lstm{l}_weight_hh_scale (f32 [4H]) and lstm{l}_bias (i32 [4H]).
// Between ops, codes are NHWC: flatten takes (H, W, C) order, so a linear
// layer after a flatten stores its weight columns in that order (convert
// reorders them from the float model's (C, H, W)). Input and output are in
// the float model's NCHW.
// Requantization multipliers and clamp bounds are not stored: the loader
// recomputes them from the stored scales with quant/runtime/qmath.h, exactly
// as the QAT eval path does, so a file cannot carry inconsistent ones.

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/runtime/lstm.h"
#include "quant/runtime/ops.h"

namespace qforge::quant::runtime {

/// What an op does (file spelling: op_kind_name()). quantize: f32 NCHW input ->
/// u8 NHWC codes; conv2d, linear, pools, flatten, relu, add, concat, lstm: codes ->
/// codes (lstm reads a [1, T, I] map, rows as steps, and gives [1, T, H], or
/// [H] features with last_step_only); dequantize: codes -> f32 in the float model's NCHW order.
enum class OpKind {
  quantize,
  conv2d,
  linear,
  max_pool2d,
  flatten,
  relu,
  dequantize,
  avg_pool2d,
  global_avg_pool,
  add,
  concat,
  lstm
};
/// The kind's name as stored in files ("conv2d", ...), a static string; "?"
/// for a value outside the enum.
const char* op_kind_name(OpKind k);

/// One node of the graph: its kind and the fields that kind uses (the others
/// keep their defaults and are neither saved nor checked).
struct Op {
  /// What the op does; selects which of the fields below apply.
  OpKind kind = OpKind::quantize;
  /// The source module's path (messages and inspection).
  std::string name;
  /// conv2d and linear.
  QLayer layer;
  /// quantize: the codes it produces; relu and dequantize: the codes they
  /// take; avg_pool2d, global_avg_pool, add and concat: the codes they
  /// produce.
  ActQParams q;
  /// max_pool2d and avg_pool2d (stride 0 = kernel).
  std::array<int64_t, 2> kernel{2, 2}, stride{0, 0}, padding{0, 0};
  /// The indices of the earlier ops whose outputs this op reads. Empty: the
  /// op just before it (quantize reads the model's input and names none).
  /// add takes exactly 2, concat 2 or more.
  std::vector<int32_t> inputs;
  /// avg_pool2d, global_avg_pool, add and concat: the qparams of each input,
  /// in the order of `inputs`; validate() checks them against the producers.
  std::vector<ActQParams> in_q;
  /// add: the fused activation (clamp bounds).
  Activation activation = Activation::none;
  /// lstm: the stacked static layers (layer 0 reads the op's input codes).
  std::vector<QLstmLayer> lstm;
  /// lstm: output only the last step's hidden codes ([H] features).
  bool last_step_only = false;
};

/// The int8 model: ops in topological order plus the input description. A
/// plain value (copies share their layers' weight-pack caches). Built by
/// convert() or load_model(), both validated; run() does not validate.
class Model {
 public:
  /// The graph, first op quantize, last dequantize (validate() checks).
  std::vector<Op> ops;
  /// The input the model takes, without the batch: {C, H, W}.
  std::array<int64_t, 3> input_shape{1, 1, 1};
  /// Optional: how raw 8-bit pixels become the float input the model was
  /// trained on, x = (p / 255 - mean[c]) / std[c] (both empty, or C values
  /// each). run() takes the float input; tools (qforge run) use this to feed
  /// raw images.
  std::vector<float> input_mean, input_std;
  /// Raw u8 pixels [N, C, H, W] -> the float input, with input_mean and
  /// input_std (ValueError when the model has none).
  Tensor normalize_pixels(const Tensor& pixels) const;

  /// Checks the graph: it starts with quantize and ends with dequantize;
  /// every op reads earlier ops only, and every op but the last is read;
  /// every op takes the qparams its producers give; shapes infer from
  /// input_shape through every op (channels, spatial sizes, linear widths,
  /// equal shapes for add, equal maps for concat); every layer's arrays are
  /// consistent. Throws FormatError naming the op. Returns the output shape
  /// without the batch.
  std::vector<int64_t> validate() const;
  /// The logical shape ({C, H, W} or {features}, without the batch) that
  /// each op receives (its first input); validates first.
  std::vector<std::vector<int64_t>> input_shapes() const;
  /// The ops that op i reads (resolving an empty `inputs`).
  std::vector<int32_t> inputs_of(size_t i) const;
  /// The qparams of each op's output codes (dequantize: of its input);
  /// validates first.
  std::vector<ActQParams> output_qparams() const;
  /// Runs a batch: f32 [N, C, H, W] (or [N, C*H*W] for a linear first layer)
  /// -> f32 outputs. `k` picks the kernels (null: the dispatched ones).
  Tensor run(const Tensor& x, const kernels::KernelTable* k = nullptr) const;
  /// Called as `each(i, output)` after op i with its output (u8 codes, NHWC
  /// [N, H, W, C] or [N, F]; the float result for the last op). The tensor
  /// is valid for the call; keep a copy (it shares storage) to hold on to it.
  using OpCallback = std::function<void(size_t, const Tensor&)>;
  /// The same as run(x, k), calling `each` (when non-empty) after every op,
  /// for inspection.
  Tensor run(const Tensor& x, const kernels::KernelTable* k, const OpCallback& each) const;

 private:
  /// run() on one batch, op by op (no sub-batches); x is checked.
  Tensor run_graph(const Tensor& x, const kernels::KernelTable* k, const OpCallback& each) const;
  std::vector<int64_t> validate_into(std::vector<std::vector<int64_t>>* shapes,
                                     std::vector<ActQParams>* qparams = nullptr) const;
};

/// Writes the model (atomically; see save_archive).
void save_model(const std::string& path, const Model& m, const std::string& producer = "qforge");
/// Reads and validates a model. Every problem (not a model file, another
/// version, a missing or mistyped entry, an out-of-range value, an
/// inconsistent chain) throws FormatError naming the file and the entry.
Model load_model(const std::string& path);

}  // namespace qforge::quant::runtime
