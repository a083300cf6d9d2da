// Reductions: sum and mean, over everything or over chosen axes.
#include <algorithm>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"

namespace qforge::autograd {
namespace {

// `t` broadcast up to `shape`.
Tensor broadcast_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  return detail::binary(Tensor::zeros(shape, t.dtype()), t, detail::BinOp::kAdd);
}

// Shape with the reduced axes set to 1, and the reduced element count.
Shape keepdim_shape(const Shape& s, const std::vector<int>& axes, int64_t& count) {
  Shape k = s;
  count = 1;
  std::vector<bool> seen(s.size(), false);
  for (int a : axes) {
    const int ax = normalize_axis(a, static_cast<int>(s.size()), "sum/mean");
    QF_CHECK_INDEX(!seen[ax]) << "sum/mean: axis " << a << " given twice";
    seen[ax] = true;
    count *= s[ax];
    k[ax] = 1;
  }
  return k;
}

Shape drop_axes(const Shape& s, const std::vector<int>& axes) {
  Shape out;
  for (int i = 0; i < static_cast<int>(s.size()); ++i) {
    bool reduced = false;
    for (int a : axes) reduced = reduced || normalize_axis(a, static_cast<int>(s.size()), "sum") == i;
    if (!reduced) out.push_back(s[i]);
  }
  return out;
}

Variable reduce(const Variable& x, const std::vector<int>& axes, bool keepdim, bool is_mean) {
  const char* name = is_mean ? "mean" : "sum";
  const Tensor& xv = x.value();
  detail::common_float_dtype({&xv}, name);
  int64_t count = 1;
  const Shape ks = keepdim_shape(xv.shape(), axes, count);
  Tensor y = sum_to_shape(xv, ks);
  if (y.shares_storage(xv)) y = y.clone();  // no axis reduced: do not alias the input
  const double s = is_mean ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0;
  if (is_mean) y = detail::scaled(y, s);
  if (!keepdim) y = y.reshape(drop_axes(xv.shape(), axes));
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, name, [ks, in = xv.shape(), s, is_mean](const Tensor& g, GradSink& out) {
    Tensor gb = broadcast_to(g.reshape(ks), in);
    out.add(0, is_mean ? detail::scaled(gb, s) : (gb.shares_storage(g) ? gb.clone() : gb));
  });
}

}  // namespace

Variable sum(const Variable& x) {
  std::vector<int> all(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) all[i] = i;
  return reduce(x, all, false, false);
}

Variable sum(const Variable& x, const std::vector<int>& axes, bool keepdim) { return reduce(x, axes, keepdim, false); }

Variable mean(const Variable& x) {
  std::vector<int> all(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) all[i] = i;
  return reduce(x, all, false, true);
}

Variable mean(const Variable& x, const std::vector<int>& axes, bool keepdim) { return reduce(x, axes, keepdim, true); }

}  // namespace qforge::autograd
