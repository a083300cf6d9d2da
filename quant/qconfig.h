#pragma once
// QConfig: how one module's weights and output activations are quantized, and
// QConfigMap: which modules get which QConfig (a global default, overrides by
// module type and by name glob, and `none` to keep a module in float).
//
// Defaults (default_qconfig()):
//  - weights: int8 signed symmetric, per output channel (axis 0), zero point
//    0, observed by a per-channel moving average of the min/max;
//  - activations: uint8 affine per tensor (zero point in [0, 255]), observed
//    by a moving average of the batch min/max. Unsigned because most
//    quantized activations follow a ReLU (no code is wasted on negatives) and
//    because u8 x s8 is the operand pair of the VNNI dot product
//    (vpdpbusd) that the int8 runtime uses; the affine zero point still
//    covers inputs with negative values (the QuantStub's normalized images).

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "quant/qparams.h"

namespace qforge::quant {

/// How a FakeQuantize gets its qparams and trains through the rounding.
enum class FakeQuantMethod {
  /// Observer-driven scale and zero point, straight-through gradient.
  ste,
  /// Learned step size (LSQ, Esser et al. 2020), optionally with LSQ+'s
  /// learned offset.
  lsq,
};

/// How LSQ's step size starts when learning begins.
enum class LsqInit {
  /// From the observer's current qparams (its range).
  observer,
  /// The paper's 2 * mean|x| / sqrt(Qp), measured on the first batch that
  /// reaches the quantizer once learning starts.
  data,
};

/// Quantization of one tensor stream (a weight or an activation).
struct TensorQConfig {
  /// The codes: bit width, signedness, scheme and granularity (QuantSpec).
  QuantSpec spec;
  /// Observer kind, as make_observer() takes it: "minmax", "moving_average",
  /// "per_channel_minmax", "moving_average_per_channel", "histogram",
  /// "percentile".
  std::string observer = "moving_average";
  /// Averaging constant of the moving-average observers, in (0, 1].
  double averaging_constant = 0.01;
  /// Percentile of the percentile observer, in (50, 100].
  double percentile = 99.99;
  /// STE (the default) or LSQ, which adds a learnable step size (and with
  /// lsq_learn_offset an offset) to the FakeQuantize.
  FakeQuantMethod method = FakeQuantMethod::ste;
  /// LSQ only: learn the offset too (LSQ+). Needs an affine spec.
  bool lsq_learn_offset = false;
  /// LSQ only: scale the step-size gradient by 1/sqrt(N * Qp).
  bool lsq_grad_scale = true;
  /// LSQ only: where the step size starts when learning begins.
  LsqInit lsq_init = LsqInit::observer;

  /// Throws ValueError with a clear message when the fields do not fit
  /// together (a per-channel observer on a per-tensor spec, ...). `what`
  /// names the stream in the message ("weight of conv1").
  void validate(const std::string& what) const;
  /// "int8 symmetric per-channel(axis 0), moving_average_per_channel, ste".
  std::string describe() const;
};

/// Weight and activation configs of one module.
struct QConfig {
  /// The module's output activations (after a fused activation), or for a
  /// QuantStub the model's input. The int8 runtime takes unsigned per-tensor.
  TensorQConfig activation;
  /// The module's weight (QAT layers take per-channel only along axis 0). The
  /// int8 runtime takes signed symmetric weights.
  TensorQConfig weight;
  /// Validates both streams (TensorQConfig::validate); ValueError naming
  /// "activation of <what>" or "weight of <what>".
  void validate(const std::string& what) const;
};

/// Default activation config: uint8 affine per tensor, moving average.
TensorQConfig default_activation_qconfig();
/// Default weight config: int8 symmetric per channel (axis 0), per-channel
/// moving average.
TensorQConfig default_weight_qconfig();
/// Both defaults (QAT and PTQ).
QConfig default_qconfig();
/// LSQ at the given bit widths: weights signed symmetric per channel,
/// activations unsigned affine per tensor, both with the gradient scaling and
/// observer initialization. Without a learned offset the zero point is fixed
/// when learning starts (from the observer: 0 after a ReLU, as in the LSQ
/// paper).
QConfig lsq_qconfig(int weight_bits, int activation_bits);

/// Which QConfig each module gets. Lookup for a module named `name` of type
/// `type` (resolve()): the last name glob that matches wins, then the type
/// override, then the global default. A std::nullopt entry means "keep in
/// float". Globs use '*' (any run of characters, dots included) and '?'.
struct QConfigMap {
  /// The config of modules no override matches (std::nullopt: keep them in
  /// float). Assigned directly, it is validated only when prepare builds a
  /// module from it; set_global() validates at once.
  std::optional<QConfig> global = default_qconfig();
  /// (exact type name, config) overrides, e.g. "Conv2d"; the last entry for a
  /// type wins. Filled by set_type().
  std::vector<std::pair<std::string, std::optional<QConfig>>> by_type;
  /// (name glob, config) overrides, checked before by_type; the last matching
  /// glob wins. Filled by set_name().
  std::vector<std::pair<std::string, std::optional<QConfig>>> by_name;

  /// Sets `global`. Validates q immediately (ValueError, the map unchanged);
  /// returns *this for chaining.
  QConfigMap& set_global(std::optional<QConfig> q);
  /// Appends a by_type override. Validates immediately: ValueError for an empty
  /// type name or an invalid q (the map unchanged). Returns *this.
  QConfigMap& set_type(const std::string& type_name, std::optional<QConfig> q);
  /// Appends a by_name override for a dotted module-path glob. Validates
  /// immediately: ValueError for an empty glob or an invalid q. Returns *this.
  QConfigMap& set_name(const std::string& glob, std::optional<QConfig> q);
  /// The config of module `name` of type `type_name` by the lookup rule above
  /// (a copy); std::nullopt: keep the module in float.
  std::optional<QConfig> resolve(const std::string& name, const std::string& type_name) const;
};

/// True when `text` matches `glob` ('*' any run, '?' any one character).
bool glob_match(const std::string& glob, const std::string& text);

}  // namespace qforge::quant
