#pragma once
// The int8 runtime's ops on quantized tensors (uint8 activation codes, NHWC
// between ops: a pixel's channels are contiguous, so im2col copies runs of
// channels and the GEMM writes NHWC output directly),
// built from float weights once and run through the dispatched kernels
// (quant/kernels). The QAT modules' eval path calls these same ops, which is
// what makes the QAT model in eval mode and the exported int8 model give
// identical outputs.
//
// Activations are unsigned (codes in [qmin, qmax] within [0, 255]) and per
// tensor; weights are signed, symmetric (zero point 0), per output channel,
// at most 8 bits. Every rule of the arithmetic is in quant/runtime/qmath.h.

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/kernels/kernels.h"
#include "quant/runtime/qmath.h"

namespace qforge::quant::runtime {

/// Per-tensor activation qparams: code = clamp(round(x / scale) + zero_point,
/// qmin, qmax), with 0 <= qmin <= zero_point <= qmax <= 255.
struct ActQParams {
  /// The real value of one code step, finite and > 0.
  float scale = 1.f;
  /// The code of real 0.
  int32_t zero_point = 0;
  /// The code range (fewer than 8 bits narrow it).
  int32_t qmin = 0, qmax = 255;
  /// Throws ValueError naming `what` unless the fields fit the contract.
  void check(const char* what) const;
};

/// Per-output-channel symmetric weight qparams.
struct WeightQParams {
  /// One scale per output channel [OC], finite and > 0.
  std::vector<float> scale;  // [OC], > 0
  /// The weight code range: signed within int8 (make_qlayer: -128 <= qmin < 0 <
  /// qmax <= 127, ValueError otherwise).
  int32_t qmin = -128, qmax = 127;
};

/// A quantized conv2d or linear layer (linear is a 1x1 conv on [N, in, 1, 1]).
struct QLayer {
  /// Input channels (linear: in features) and output channels; set from the
  /// weight shape by make_qlayer, or read by the loader.
  int64_t in_channels = 0, out_channels = 0;
  /// Window geometry (KH, KW), (H, W) order; linear keeps the 1x1 defaults.
  /// Padding pads with the input zero point (real 0).
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
  /// Grouped conv: in_channels and out_channels are both multiples of groups.
  int64_t groups = 1;
  /// The qparams of the u8 codes the layer reads and the codes it writes.
  ActQParams input, output;
  /// The fused activation, applied as the clamp `bounds`.
  Activation activation = Activation::none;
  /// int8 weight codes [OC, KH, KW, IC/groups] (NHWC order of the input
  /// window), a row of k_per_group() per output channel.
  std::vector<int8_t> weight;
  /// Per-output-channel weight scales [OC], finite and > 0.
  std::vector<float> weight_scale;          // [OC]
  /// int32 bias [OC] at scale input.scale * weight_scale[oc] (quantize_bias);
  /// 0 where the float layer had none.
  std::vector<int32_t> bias;                // [OC], at scale input.scale * weight_scale
  /// Requant multipliers [OC] of input.scale * weight_scale / output.scale.
  /// Derived: make_qlayer computes them, the loader recomputes them (files
  /// do not store them).
  std::vector<QuantMultiplier> requant;     // [OC]
  /// Output clamp bounds of `activation` within output's [qmin, qmax]
  /// (activation_bounds). Derived by make_qlayer / the loader, like requant.
  ClampBounds bounds{0, 255};

  /// The GEMM depth K of one group, (in_channels / groups) * KH * KW: the length
  /// of one output channel's weight row.
  int64_t k_per_group() const { return in_channels / groups * kernel[0] * kernel[1]; }

  /// The weights of `group` packed for table t's GEMM (null when that GEMM
  /// takes them unpacked): packed on first use, then kept. Thread-safe.
  /// Copies of a layer share the packs; call invalidate_packs() after
  /// changing `weight`.
  ///
  /// `run` > 0: the same for row_padded_weights(run) (K = KH * run).
  const int32_t* packed_weights(const kernels::KernelTable& t, int64_t group, int64_t run = 0) const;
  /// The weight codes with each kernel row (KW * in_channels / groups bytes)
  /// widened to `run` bytes by zeros: [OC, KH * run], for GEMMs that read
  /// whole runs of 4 bytes from the input (qconv2d's segmented rows). Built
  /// on first use, then kept, like the packs. ValueError when run is shorter
  /// than a kernel row.
  const int8_t* row_padded_weights(int64_t run) const;
  /// Gives this layer a fresh, empty pack cache (copies keep the old one); call
  /// after changing `weight`. Not safe while this layer runs on another thread.
  void invalidate_packs();

 private:
  struct PackCache {
    std::mutex mutex;
    // per (pack function, run of padded rows or 0), per group
    std::map<std::pair<kernels::QGemmPackFn, int64_t>, std::vector<std::vector<int32_t>>> packs;
    std::map<int64_t, std::vector<int8_t>> padded;  // per run
  };
  const int8_t* row_padded_locked(int64_t run) const;
  std::shared_ptr<PackCache> packs_ = std::make_shared<PackCache>();
};

/// Quantizes a float layer: weight f32 [OC, IC/groups, KH, KW] or [OC, IC]
/// (already BN-folded, in the float model's layout; the codes are reordered
/// to [OC, KH, KW, IC/groups]), bias f32 [OC] or undefined. Weight codes use the same rule as
/// fake quant (round half to even of w * (1/scale), clamped); the bias goes to
/// int32 at scale s_in * s_w; one requant multiplier per channel. Throws
/// ValueError/ShapeError (DTypeError for a non-f32 weight) on any
/// inconsistency.
QLayer make_qlayer(const Tensor& weight, const Tensor& bias, const WeightQParams& wq, const ActQParams& in,
                   const ActQParams& out, Activation act, std::array<int64_t, 2> stride = {1, 1},
                   std::array<int64_t, 2> padding = {0, 0}, std::array<int64_t, 2> dilation = {1, 1},
                   int64_t groups = 1);

/// The weight half of make_qlayer(): codes, scales, the int32 bias and the
/// geometry of `groups`, with the input qparams, but no output qparams,
/// requant multipliers or bounds (requant stays empty). For ops that
/// combine int32 accumulators themselves (the LSTM). Same checks.
QLayer quantize_layer_weights(const Tensor& weight, const Tensor& bias, const WeightQParams& wq, const ActQParams& in,
                              int64_t groups = 1);
/// Output size of a conv or pooling window along one axis (0 when the input,
/// padded, is smaller than the window).
int64_t out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation);

/// float -> codes (u8, same shape) with the quantize rule.
Tensor quantize(const Tensor& x, const ActQParams& q);
/// codes -> float: (code - zero_point) * scale.
Tensor dequantize(const Tensor& codes, const ActQParams& q);
/// u8 codes NCHW [N, C, H, W] -> a new NHWC [N, H, W, C] tensor; ShapeError
/// unless x is 4-D u8.
Tensor to_nhwc(const Tensor& nchw);
/// u8 codes NHWC [N, H, W, C] -> a new NCHW [N, C, H, W] tensor; ShapeError
/// unless x is 4-D u8.
Tensor to_nchw(const Tensor& nhwc);
/// Reorders a linear layer's input columns from a flattened [C, H, W] (the
/// float model's order) to a flattened [H, W, C] (the runtime's), so that it
/// can follow a flatten of NHWC codes.
void reorder_linear_input_to_hwc(QLayer& layer, int64_t C, int64_t H, int64_t W);
/// Conv over u8 codes NHWC [N, H, W, IC] -> [N, OH, OW, OC] (padding is real
/// 0, the input zero point). Batches run in parallel. `k` picks the kernels
/// (null: the dispatched ones, kernels::kernels()).
///
/// `pool` (optional, kernel {kh, kw}): a max pool over non-overlapping
/// windows (stride = kernel, no padding) fused into the conv: the result is
/// [N, OH / kh, OW / kw, OC] and equals qmax_pool2d(qconv2d(...), {kh, kw},
/// {kh, kw}, {0, 0}) bit for bit. The GEMM takes the output pixels window by
/// window and keeps the largest accumulator of each (QGemmParams::pool), so
/// only the pooled outputs are requantized. ShapeError when the conv's
/// output is smaller than one window.
Tensor qconv2d(const QLayer& layer, const Tensor& x, const kernels::KernelTable* k = nullptr,
               const std::array<int64_t, 2>* pool = nullptr);
/// Linear over u8 codes [N, in] -> [N, out].
Tensor qlinear(const QLayer& layer, const Tensor& x, const kernels::KernelTable* k = nullptr);
/// Max pooling over u8 codes NHWC (codes are monotonic in the real value, so
/// this equals pooling the dequantized values). stride 0 means the kernel size.
Tensor qmax_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                   std::array<int64_t, 2> padding);

/// Average pooling over u8 codes NHWC, padding counted in the divisor (as
/// PyTorch's default count_include_pad=True; padded pixels sit at the zero
/// point): out = requantize(sum of (code - zp_in), rescale_multiplier(s_in,
/// s_out, kh * kw), zp_out, qmin, qmax). stride 0 means the kernel size.
Tensor qavg_pool2d(const Tensor& x, const ActQParams& in, const ActQParams& out, std::array<int64_t, 2> kernel,
                   std::array<int64_t, 2> stride, std::array<int64_t, 2> padding);
/// Global average pooling: NHWC [N, H, W, C] -> [N, 1, 1, C], the same rule
/// with the divisor H * W.
Tensor qglobal_avg_pool(const Tensor& x, const ActQParams& in, const ActQParams& out);
/// Residual add of two code tensors of one shape, with their own qparams,
/// into `out` (the rule in qmath.h, requantize_add), with a fused ReLU/ReLU6
/// as clamp bounds. k: the kernels to use (null: kernels()).
Tensor qadd(const Tensor& a, const ActQParams& qa, const Tensor& b, const ActQParams& qb, const ActQParams& out,
            Activation act = Activation::none, const kernels::KernelTable* k = nullptr);
/// Concatenation along channels (the last NHWC axis; for [N, F] tensors, the
/// features). Each input is rescaled to `out` (requantize with
/// rescale_multiplier) unless its qparams equal out's, when it is copied.
Tensor qconcat(const std::vector<Tensor>& xs, const std::vector<ActQParams>& qs, const ActQParams& out);

}  // namespace qforge::quant::runtime
