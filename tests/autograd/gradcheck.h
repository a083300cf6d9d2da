#pragma once
// Central-difference Jacobian check in double precision.

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace qforge::testing {

using autograd::Variable;
using Fn = std::function<Variable(const std::vector<Variable>&)>;

/// Random f64 tensor with values in [lo, hi).
inline Tensor rand64(const Shape& s, Generator& g, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(s, DType::f64);
  uniform_(t, lo, hi, g);
  return t;
}

/// Moves values within `margin` of each kink away from it.
inline Tensor away_from(Tensor t, std::vector<double> kinks, double margin = 0.05) {
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i)
    for (double k : kinks)
      if (std::abs(p[i] - k) < margin) p[i] = k + (p[i] >= k ? margin : -margin);
  return t;
}

/// Compares the full Jacobian of fn at `inputs` computed by backward (one
/// one-hot seed per output element) with central differences. Inputs whose
/// index is in `no_grad` are held constant.
inline void expect_jacobian(const Fn& fn, const std::vector<Tensor>& inputs, double eps = 1e-6,
                            double tol = 1e-6, std::vector<size_t> no_grad = {}) {
  auto differentiable = [&](size_t i) {
    return std::find(no_grad.begin(), no_grad.end(), i) == no_grad.end();
  };
  auto make_vars = [&](const std::vector<Tensor>& ts) {
    std::vector<Variable> vs;
    for (size_t i = 0; i < ts.size(); ++i) vs.emplace_back(ts[i], differentiable(i));
    return vs;
  };
  std::vector<Variable> vars = make_vars(inputs);
  Variable out = fn(vars);
  ASSERT_EQ(out.dtype(), DType::f64);
  const int64_t m = out.numel();
  ASSERT_GT(m, 0);
  // analytic[i][j * n_i + k] = d out_j / d input_i[k]
  std::vector<std::vector<double>> analytic(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) analytic[i].assign(m * inputs[i].numel(), 0.0);
  for (int64_t j = 0; j < m; ++j) {
    for (auto& v : vars) v.zero_grad();
    Tensor seed = Tensor::zeros(out.shape(), DType::f64);
    seed.data<double>()[j] = 1.0;
    out.backward(seed, /*retain_graph=*/true);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!differentiable(i) || !vars[i].has_grad()) continue;
      const double* g = vars[i].grad().data<double>();
      for (int64_t k = 0; k < inputs[i].numel(); ++k) analytic[i][j * inputs[i].numel() + k] = g[k];
    }
  }
  autograd::NoGradGuard ng;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!differentiable(i)) continue;
    const int64_t n = inputs[i].numel();
    for (int64_t k = 0; k < n; ++k) {
      std::vector<Tensor> plus, minus;
      for (const Tensor& t : inputs) {
        plus.push_back(t.clone());
        minus.push_back(t.clone());
      }
      plus[i].data<double>()[k] += eps;
      minus[i].data<double>()[k] -= eps;
      Tensor fp = fn(make_vars(plus)).value();
      Tensor fm = fn(make_vars(minus)).value();
      for (int64_t j = 0; j < m; ++j) {
        const double num = (fp.data<double>()[j] - fm.data<double>()[j]) / (2 * eps);
        const double ana = analytic[i][j * n + k];
        ASSERT_NEAR(ana, num, tol + tol * std::abs(num))
            << "input " << i << " element " << k << ", output element " << j;
      }
    }
  }
}

}  // namespace qforge::testing
