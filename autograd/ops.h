#pragma once
// Differentiable operations on Variables. Each family lives in one file under
// autograd/ops/ with every op's backward written next to its forward. All ops
// accept f32 and f64 (f64 serves the gradient checks); inputs of one op must
// share a dtype.

#include <array>
#include <optional>
#include <vector>

#include "autograd/variable.h"
#include "core/rng.h"

namespace qforge::autograd {

// ---- elementwise.cpp: arithmetic with NumPy broadcasting -------------------
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable div(const Variable& a, const Variable& b);
/// a * s and a + s for a plain number s.
Variable scale(const Variable& a, double s);
Variable add_scalar(const Variable& a, double s);
Variable neg(const Variable& a);
Variable operator+(const Variable& a, const Variable& b);
Variable operator-(const Variable& a, const Variable& b);
Variable operator*(const Variable& a, const Variable& b);
Variable operator/(const Variable& a, const Variable& b);
/// The broadcast shape of a and b; throws ShapeError when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);
/// Sums `t` down to `shape` over broadcast axes (the inverse of broadcasting).
Tensor sum_to_shape(const Tensor& t, const Shape& shape);

// ---- activation.cpp ---------------------------------------------------------
Variable relu(const Variable& x);
Variable relu6(const Variable& x);
Variable leaky_relu(const Variable& x, double negative_slope = 0.01);
Variable sigmoid(const Variable& x);
Variable tanh(const Variable& x);
/// Clamps to [lo, hi]; the gradient is 1 strictly inside, 0 outside.
Variable clamp(const Variable& x, double lo, double hi);

// ---- linalg.cpp -------------------------------------------------------------
/// [M,K] x [K,N] -> [M,N], or batched [B,M,K] x [B,K,N] -> [B,M,N].
Variable matmul(const Variable& a, const Variable& b);
/// y = x W^T + b. x: [..., in], weight: [out, in], bias: [out] or undefined.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias = Variable());

// ---- conv.cpp ---------------------------------------------------------------
struct Conv2dOptions {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};
/// NCHW convolution. x: [N,C,H,W], weight: [OC, C/groups, KH, KW], bias: [OC]
/// or undefined. Depthwise is groups == C.
Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias = Variable(),
                const Conv2dOptions& opt = {});
/// Output spatial size of a convolution or pooling window.
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);

// ---- pool.cpp ---------------------------------------------------------------
struct Pool2dOptions {
  std::array<int64_t, 2> kernel{2, 2};
  std::array<int64_t, 2> stride{0, 0};  // 0 means "same as kernel"
  std::array<int64_t, 2> padding{0, 0};
  bool count_include_pad = true;  // avg_pool2d only
};
Variable max_pool2d(const Variable& x, const Pool2dOptions& opt);
Variable avg_pool2d(const Variable& x, const Pool2dOptions& opt);
/// PyTorch's adaptive average pooling to [N, C, out_h, out_w].
Variable adaptive_avg_pool2d(const Variable& x, int64_t out_h, int64_t out_w);
/// Mean over H and W: [N,C,H,W] -> [N,C,1,1].
Variable global_avg_pool2d(const Variable& x);

// ---- shape.cpp --------------------------------------------------------------
Variable reshape(const Variable& x, const Shape& shape);
/// Merges axes start..end (inclusive; negative counts from the end).
Variable flatten(const Variable& x, int start_axis = 1, int end_axis = -1);
Variable permute(const Variable& x, const std::vector<int>& dims);
Variable concat(const std::vector<Variable>& xs, int axis);
/// Elements start, start+step, ... < end along `axis` (start/end clamp to the size).
Variable slice(const Variable& x, int axis, int64_t start, int64_t end, int64_t step = 1);

// ---- reduce.cpp -------------------------------------------------------------
/// Sum of all elements (0-d result).
Variable sum(const Variable& x);
/// Sum over the given axes.
Variable sum(const Variable& x, const std::vector<int>& axes, bool keepdim = false);
Variable mean(const Variable& x);
Variable mean(const Variable& x, const std::vector<int>& axes, bool keepdim = false);

// ---- loss.cpp ---------------------------------------------------------------
Variable softmax(const Variable& x, int axis = -1);
Variable log_softmax(const Variable& x, int axis = -1);
/// Mean cross-entropy of logits [N, C] against class indices (i32 [N], each in
/// [0, C)).
Variable cross_entropy(const Variable& logits, const Tensor& targets);

// ---- norm.cpp ---------------------------------------------------------------
struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
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

}  // namespace qforge::autograd
