#pragma once
// fold_conv_bn(): the one place where a batch norm is folded into the conv
// (or linear) before it. The QAT modules use it in training (the weight they
// fake-quantize) and in eval (weight and bias), and convert uses it to build
// the int8 layer, so all three see the same folded numbers.

#include "autograd/variable.h"
#include "nn/layers.h"

namespace qforge::quant {

/// A conv/linear layer with its batch norm folded in, using the running
/// statistics:
///   factor[o] = gamma[o] / sqrt(running_var[o] + eps)
///   weight[o, ...] = w[o, ...] * factor[o]
///   bias[o] = beta[o] + (b[o] - running_mean[o]) * factor[o]
/// gamma = 1 and beta = 0 without affine, b = 0 without a bias.
struct FoldedConvBn {
  /// Variables built with autograd ops, so the folded weight's gradient
  /// reaches w and the bias's reaches b and beta. factor is a constant (it
  /// carries no gradient): in QAT training the batch norm re-normalizes per
  /// channel, which cancels the factor's effect up to eps, and a constant
  /// keeps a gamma of exactly 0 from dividing by zero.
  autograd::Variable weight, bias;
  /// f32 [C], computed in double and rounded once.
  Tensor factor;
};

/// Folds `bn` into (weight [C, ...], bias [C] or undefined). bn must track
/// running statistics and have C features (ValueError / ShapeError
/// otherwise). Results are f32 like the weight.
FoldedConvBn fold_conv_bn(const autograd::Variable& weight, const autograd::Variable& bias, nn::BatchNorm& bn);

}  // namespace qforge::quant
