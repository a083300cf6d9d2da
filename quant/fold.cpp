#include "quant/fold.h"

#include <cmath>

#include "autograd/ops.h"
#include "core/error.h"

namespace qforge::quant {

using autograd::Variable;

FoldedConvBn fold_conv_bn(const Variable& weight, const Variable& bias, nn::BatchNorm& bn) {
  const auto& spec = bn.spec();
  QF_CHECK(spec.track_running_stats) << "fold_conv_bn: the batch norm has no running statistics "
                                        "(track_running_stats=false), so it cannot be folded";
  QF_CHECK_DTYPE(weight.dtype() == DType::f32) << "fold_conv_bn: weight must be f32, got " << weight.value().desc();
  const int64_t C = spec.num_features;
  QF_CHECK_SHAPE(weight.ndim() >= 2 && weight.size(0) == C)
      << "fold_conv_bn: weight " << weight.value().desc() << " does not have " << C
      << " output channels (the batch norm's features)";
  QF_CHECK_SHAPE(!bias.defined() || (bias.ndim() == 1 && bias.size(0) == C))
      << "fold_conv_bn: bias " << bias.value().desc() << " does not match " << C << " channels";

  const Tensor mean = bn.running_mean(), var = bn.running_var();
  const Variable gamma = bn.weight(), beta = bn.bias();
  const float* pm = mean.data<float>();
  const float* pv = var.data<float>();
  const float* pg = gamma.defined() ? gamma.value().data<float>() : nullptr;
  Tensor factor = Tensor::empty({C});
  Tensor shift = Tensor::empty({C});  // -mean * factor
  float* pf = factor.data<float>();
  float* ps = shift.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double f = (pg ? pg[c] : 1.0) / std::sqrt(static_cast<double>(pv[c]) + spec.eps);
    QF_CHECK(std::isfinite(f)) << "fold_conv_bn: channel " << c << " folds to a non-finite factor (gamma "
                               << (pg ? pg[c] : 1.0f) << ", running_var " << pv[c] << ")";
    pf[c] = static_cast<float>(f);
    ps[c] = static_cast<float>(-static_cast<double>(pm[c]) * f);
  }

  Shape wshape(weight.ndim(), 1);
  wshape[0] = C;
  FoldedConvBn out;
  out.factor = factor;
  out.weight = autograd::mul(weight, Variable(factor.reshape(wshape)));
  // bias = beta + b * factor - mean * factor
  Variable b = Variable(shift);
  if (bias.defined()) b = autograd::add(b, autograd::mul(bias, Variable(factor)));
  if (beta.defined()) b = autograd::add(b, beta);
  out.bias = b;
  return out;
}

}  // namespace qforge::quant
