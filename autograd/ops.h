#pragma once
// Differentiable operations on Variables. Each family lives in one file under
// autograd/ops/ with every op's backward written next to its forward. All ops
// accept f32 and f64 (f64 serves the gradient checks); inputs of one op must
// share a dtype.

#include <array>
#include <functional>
#include <optional>
#include <vector>

#include "autograd/variable.h"
#include "core/rng.h"

namespace qforge::autograd {

// ---- elementwise.cpp: arithmetic with NumPy broadcasting -------------------
/// a + b with NumPy broadcasting, as a new tensor of the broadcast shape. Inputs
/// must be f32 or f64 of one dtype (DTypeError) and broadcast (ShapeError);
/// each gradient is summed back to its input's shape.
Variable add(const Variable& a, const Variable& b);
/// a - b, broadcasting and checked as add().
Variable sub(const Variable& a, const Variable& b);
/// a * b elementwise, broadcasting and checked as add(). Backward keeps handles
/// to the inputs' values: do not modify them in place before backward().
Variable mul(const Variable& a, const Variable& b);
/// a / b elementwise (IEEE: division by 0 gives inf or NaN), broadcasting and
/// checked as add(). Backward keeps handles to b's value and the output.
Variable div(const Variable& a, const Variable& b);
/// a * s for a plain number s: same shape and dtype (f32 or f64, else DTypeError).
Variable scale(const Variable& a, double s);
/// a + s for a plain number s: same shape and dtype (f32 or f64, else DTypeError).
Variable add_scalar(const Variable& a, double s);
/// -a, i.e. scale(a, -1).
Variable neg(const Variable& a);
/// add(a, b).
Variable operator+(const Variable& a, const Variable& b);
/// sub(a, b).
Variable operator-(const Variable& a, const Variable& b);
/// mul(a, b).
Variable operator*(const Variable& a, const Variable& b);
/// div(a, b).
Variable operator/(const Variable& a, const Variable& b);
/// The broadcast shape of a and b; throws ShapeError when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);
/// Sums `t` down to `shape` over broadcast axes (the inverse of broadcasting).
Tensor sum_to_shape(const Tensor& t, const Shape& shape);

// ---- activation.cpp ---------------------------------------------------------
/// Per-tensor quantization parameters of an op that fake-quantizes its own
/// output (see BatchNormOptions::output_fake_quant).
struct FakeQuantParams {
  float scale = 1;  ///< > 0 and finite
  int32_t zero_point = 0;  ///< within [qmin, qmax]
  int64_t qmin = 0, qmax = 255;
};
/// Called once with the [min, max] of the values about to be fake-quantized
/// (the quantizer's observer records that range; min > max, +inf and -inf,
/// when there are none); returns the qparams to use.
using FakeQuantHook = std::function<FakeQuantParams(double min, double max)>;
/// max(x, 0) elementwise as a new tensor of x's shape (f32 or f64, else
/// DTypeError); the gradient passes where the output is > 0.
Variable relu(const Variable& x);
/// relu(a + b) in one pass each way (ResNet's residual add): a and b of one
/// shape and float dtype (else ShapeError / DTypeError, no broadcasting); both
/// gradients are the output's where the output is > 0, else 0. With
/// fake_quant set (see BatchNormOptions::output_fake_quant), the output is
/// also fake-quantized per tensor inside the op, with the STE's clipping mask.
Variable add_relu(const Variable& a, const Variable& b, const FakeQuantHook& fake_quant = {});
/// min(max(x, 0), 6); the gradient passes strictly inside (0, 6), else 0.
Variable relu6(const Variable& x);
/// x where x > 0, else negative_slope * x; the gradient is 1 or negative_slope likewise.
Variable leaky_relu(const Variable& x, double negative_slope = 0.01);
/// 1 / (1 + exp(-x)), evaluated without overflow for large |x|; same shape.
Variable sigmoid(const Variable& x);
/// tanh(x) elementwise; same shape. Backward uses the output: 1 - y^2.
Variable tanh(const Variable& x);
/// Clamps to [lo, hi]; the gradient is 1 strictly inside, 0 outside.
Variable clamp(const Variable& x, double lo, double hi);

// ---- linalg.cpp -------------------------------------------------------------
/// [M,K] x [K,N] -> [M,N], or batched [B,M,K] x [B,K,N] -> [B,M,N].
Variable matmul(const Variable& a, const Variable& b);
/// y = x W^T + b. x: [..., in], weight: [out, in], bias: [out] or undefined.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias = Variable());

// ---- conv.cpp ---------------------------------------------------------------
/// Settings of conv2d(); each pair is {height, width}. Invalid values throw ValueError.
struct Conv2dOptions {
  /// Window step, >= 1.
  std::array<int64_t, 2> stride{1, 1};
  /// Zeros added on each side of the input, >= 0.
  std::array<int64_t, 2> padding{0, 0};
  /// Spacing of the kernel taps, >= 1.
  std::array<int64_t, 2> dilation{1, 1};
  /// Channel groups, >= 1; must divide C and OC (ShapeError otherwise).
  int64_t groups = 1;
};
/// NCHW convolution. x: [N,C,H,W], weight: [OC, C/groups, KH, KW], bias: [OC]
/// or undefined. Depthwise is groups == C.
Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias = Variable(),
                const Conv2dOptions& opt = {});
/// Output spatial size of a convolution or pooling window.
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);

/// Buffer layout of the stride-1 f32 convolution (see autograd/ops/conv.cpp):
/// `automatic` picks per shape; the others force one, for tests and benchmarks.
enum class ConvLayout { automatic, gaps, taps };
namespace detail {
/// Sets the layout for all later conv2d calls (not thread-safe; tests only).
void set_conv_layout(ConvLayout layout);
/// The current setting.
extern ConvLayout g_layout_setting;
}  // namespace detail
/// Weight-gradient product of the stride-1 f32 convolution: `automatic` picks
/// per shape; `segments` (pixel-major gradient, output channels in the lanes)
/// and `dot` (row dot products) force one, for tests and benchmarks.
enum class ConvDw { automatic, segments, dot };
namespace detail {
/// Sets the weight-gradient product for all later conv2d calls (tests only).
void set_conv_dw(ConvDw dw);
/// The current setting.
extern ConvDw g_dw_setting;
}  // namespace detail
/// Forward and input-gradient products of the f32 convolution (gaps layout):
/// `automatic` picks per shape; `grid` (over the padded grid, gap columns
/// included; for strided convs, im2col) and `pixels` (over the positions
/// only, channels in the lanes; for strided convs, also the weight gradient
/// over the strided positions) force one, for tests and benchmarks.
enum class ConvOut { automatic, grid, pixels };
namespace detail {
/// Sets the forward and input-gradient product for all later conv2d calls (tests only).
void set_conv_out(ConvOut out);
/// The current setting.
extern ConvOut g_out_setting;
}  // namespace detail

// ---- pool.cpp ---------------------------------------------------------------
/// Settings of max_pool2d() and avg_pool2d(); each pair is {height, width}.
/// Invalid values throw ValueError.
struct Pool2dOptions {
  /// Window size, >= 1.
  std::array<int64_t, 2> kernel{2, 2};
  /// Window step, >= 1, or 0 for the kernel size.
  std::array<int64_t, 2> stride{0, 0};  // 0 means "same as kernel"
  /// Implicit padding on each side, from 0 to kernel / 2. Max pooling never picks
  /// a padded position.
  std::array<int64_t, 2> padding{0, 0};
  /// avg_pool2d only: whether padded positions count in a window's divisor
  /// (PyTorch's rule).
  bool count_include_pad = true;  // avg_pool2d only
};
/// Maximum of each window: [N,C,H,W] -> [N,C,OH,OW], OH = conv_out_size(H,
/// kernel, stride, pad, 1). NaN propagates; the gradient goes to the first
/// maximum of each window. ShapeError unless 4-D with OH, OW >= 1.
Variable max_pool2d(const Variable& x, const Pool2dOptions& opt);
/// Mean of each window, with the shapes and checks of max_pool2d().
Variable avg_pool2d(const Variable& x, const Pool2dOptions& opt);
/// PyTorch's adaptive average pooling to [N, C, out_h, out_w].
Variable adaptive_avg_pool2d(const Variable& x, int64_t out_h, int64_t out_w);
/// Mean over H and W: [N,C,H,W] -> [N,C,1,1].
Variable global_avg_pool2d(const Variable& x);

// ---- shape.cpp --------------------------------------------------------------
/// x with a new shape (one size may be -1): a view sharing x's storage, any
/// dtype. ShapeError when the element count does not match.
Variable reshape(const Variable& x, const Shape& shape);
/// Merges axes start..end (inclusive; negative counts from the end).
Variable flatten(const Variable& x, int start_axis = 1, int end_axis = -1);
/// Output axis i is input axis dims[i] (negative counts from the end), as a new
/// contiguous copy of any dtype. ShapeError unless dims has ndim entries;
/// IndexError for an out-of-range or repeated axis.
Variable permute(const Variable& x, const std::vector<int>& dims);
/// xs joined along `axis` (negative counts from the end) into a new tensor of any
/// dtype; ranks, dtypes and other sizes must match (ShapeError, DTypeError).
/// ValueError when xs is empty; ShapeError for 0-d inputs; IndexError for axis.
Variable concat(const std::vector<Variable>& xs, int axis);
/// Elements start, start+step, ... < end along `axis` (start/end clamp to the size).
Variable slice(const Variable& x, int axis, int64_t start, int64_t end, int64_t step = 1);

// ---- reduce.cpp -------------------------------------------------------------
/// Sum of all elements (0-d result).
Variable sum(const Variable& x);
/// Sum over the given axes.
Variable sum(const Variable& x, const std::vector<int>& axes, bool keepdim = false);
/// Mean of all elements (0-d result; 0 for an empty tensor). f32 or f64, else
/// DTypeError.
Variable mean(const Variable& x);
/// Mean over the given axes (negative counts from the end; keepdim keeps them as
/// size 1). IndexError for an out-of-range or repeated axis.
Variable mean(const Variable& x, const std::vector<int>& axes, bool keepdim = false);

// ---- loss.cpp ---------------------------------------------------------------
/// exp(x) / sum(exp(x)) along `axis` (max-shifted for stability), same shape.
/// f32 or f64, else DTypeError; IndexError for a bad axis.
Variable softmax(const Variable& x, int axis = -1);
/// x - logsumexp(x) along `axis`, more accurate than log(softmax(x)); checked as softmax().
Variable log_softmax(const Variable& x, int axis = -1);
/// Mean cross-entropy of logits [N, C] against class indices (i32 [N], each in
/// [0, C)). With label_smoothing = e in [0, 1), the target of each row is
/// (1 - e) on its class plus e/C on every class (PyTorch's definition).
Variable cross_entropy(const Variable& logits, const Tensor& targets, double label_smoothing = 0);
/// Knowledge distillation: T^2 times the batch mean of KL(q || p), where
/// p = softmax(logits / T) and q = softmax(teacher_logits / T) row by row
/// (Hinton et al.; the T^2 keeps the gradient's scale, T (p - q) / N, comparable
/// across temperatures). teacher_logits is a constant of the logits' shape
/// (any float dtype); ShapeError otherwise, ValueError for a temperature that
/// is not finite and >= 1e-6 or a teacher logit that is not finite.
Variable distillation_kl(const Variable& logits, const Tensor& teacher_logits, double temperature = 1);

// ---- norm.cpp ---------------------------------------------------------------

/// Settings of batch_norm().
struct BatchNormOptions {
  /// Normalize with batch statistics and update the running buffers; false
  /// normalizes with the running buffers (batch statistics when there are none).
  bool training = true;
  /// Weight of the batch in running = (1 - momentum) * running + momentum *
  /// batch; in [0, 1], else ValueError.
  double momentum = 0.1;
  /// Added to the variance before the square root; > 0, else ValueError.
  double eps = 1e-5;
  /// Apply ReLU to the output in the same pass (batch norm then relu, without
  /// the extra passes over memory), with the matching gradient.
  bool relu = false;
  /// Fake-quantize the output (after the ReLU, with relu) per tensor as
  /// fake_quantize() does (same values, same straight-through gradient),
  /// inside this op. The hook gets the output's range from the normalizing
  /// pass, so no pass is spent finding it (a NaN lo when an output is inf or
  /// NaN), and the backward applies the STE's clipping mask (with the
  /// ReLU's, or both sides of the band without relu). Null: no fake quant.
  FakeQuantHook output_fake_quant;
};
/// Batch normalization over axis 1 of [N,C] or [N,C,H,W]. weight/bias ([C])
/// may be undefined (no affine). In training, batch statistics normalize and
/// the running buffers (when defined) are updated in place with the unbiased
/// variance; in eval, the running buffers normalize.
Variable batch_norm(const Variable& x, Tensor running_mean, Tensor running_var, const Variable& weight,
                    const Variable& bias, const BatchNormOptions& opt);

// ---- dropout.cpp ------------------------------------------------------------
/// Zeroes each element with probability p and scales the rest by 1/(1-p)
/// when training; the identity otherwise.
Variable dropout(const Variable& x, double p, bool training, Generator& gen = default_generator());

// ---- rnn.cpp ----------------------------------------------------------------
/// What lstm_layer() returns: every step's hidden state and the final states.
struct LstmOutput {
  /// [N, T, H].
  Variable output;
  /// The last step's hidden and cell states, [N, H] each.
  Variable h_n, c_n;
};
/// One LSTM layer over a batch-first sequence, recorded as one op (forward
/// and backward through time): x [N, T, I] (T >= 1); h0, c0 [N, H] or
/// undefined for zeros; w_ih [4H, I], w_hh [4H, H]; b_ih, b_hh [4H] or
/// undefined. Gates in PyTorch's order i, f, g, o:
///   g_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
///   c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g),  h_t = sigmoid(o) * tanh(c_t)
/// All inputs f32, or all f64 (DTypeError); ShapeError names a wrong shape.
/// Gradients reach every defined input, from any of the three outputs.
LstmOutput lstm_layer(const Variable& x, const Variable& h0, const Variable& c0, const Variable& w_ih,
                      const Variable& w_hh, const Variable& b_ih, const Variable& b_hh);

// ---- fake_quant.cpp ---------------------------------------------------------
/// Quantize-dequantize, y = (clamp(round(x / s) + z, qmin, qmax) - z) * s,
/// rounding half to even of x * (1/s). scale: f32 [C] (> 0), zero_point: i32
/// [C] within [qmin, qmax]; axis = -1 for per tensor (C = 1), else the channel
/// axis of x (C = x.size(axis)). Backward is the straight-through estimator
/// with the clipping mask: the gradient passes where round(x/s) + z lies in
/// [qmin, qmax] and is 0 elsewhere.
Variable fake_quantize(const Variable& x, const Tensor& scale, const Tensor& zero_point, int64_t qmin, int64_t qmax,
                       int axis = -1);
/// LSQ (Esser et al. 2020) with LSQ+'s optional learnable offset: the same
/// forward with a learnable step `scale` ([C], same dtype as x) and offset
/// `zero_point` ([C] real-valued, rounded and clamped in the forward; may be
/// undefined for 0). Steps below float eps are used as eps. Gradients: x as
/// the STE; scale (q - z) - x/s inside the range, qmin - z below, qmax - z
/// above; zero_point 0 inside and -s outside; both multiplied by grad_scale
/// (LSQ's 1/sqrt(N * Qp), or 1).
Variable lsq_fake_quantize(const Variable& x, const Variable& scale, const Variable& zero_point, int64_t qmin,
                           int64_t qmax, int axis = -1, double grad_scale = 1.0);
namespace detail {
/// fake_quantize()'s forward values, per tensor, for an op that quantizes its
/// own output. ValueError for invalid p.
Tensor fake_quantize_values(const Tensor& x, const FakeQuantParams& p);
/// The largest x >= 0 (as double) of dtype dt (f32 or f64) whose fake_quantize
/// gradient passes at the top of the range: round(x * (1/scale)) + zero_point
/// <= qmax, in dt's arithmetic. For x >= 0, the STE mask is x <= this value.
double ste_upper_bound(DType dt, const FakeQuantParams& p);
/// The smallest x <= 0 (as double) of dtype dt whose fake_quantize gradient
/// passes at the bottom of the range: round(x * (1/scale)) + zero_point >=
/// qmin. The STE mask is ste_lower_bound <= x <= ste_upper_bound.
double ste_lower_bound(DType dt, const FakeQuantParams& p);
}  // namespace detail

}  // namespace qforge::autograd
