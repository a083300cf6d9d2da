// Seeded dropout.
#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"

namespace qforge::autograd {

Variable dropout(const Variable& x, double p, bool training, Generator& gen) {
  QF_CHECK(p >= 0 && p < 1) << "dropout: p must be in [0, 1), got " << p;
  if (!training || p == 0) return x;
  const Tensor& xv = x.value();
  detail::common_float_dtype({&xv}, "dropout");
  // The mask holds 0 or 1/(1-p); it is drawn sequentially from `gen`, so a
  // seed gives the same mask whatever the thread count.
  Tensor mask = Tensor::empty(xv.shape(), xv.dtype());
  Tensor y = Tensor::empty(xv.shape(), xv.dtype());
  detail::with_float(xv, "dropout", [&](auto tag) {
    using T = decltype(tag);
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    T* pm = mask.data<T>();
    const T* px = xv.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < xv.numel(); ++i) {
      pm[i] = gen.uniform() < p ? T(0) : keep;
      py[i] = px[i] * pm[i];
    }
  });
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, "dropout", [mask](const Tensor& g, GradSink& out) {
    out.add(0, detail::binary(g, mask, detail::BinOp::kMul));
  });
}

}  // namespace qforge::autograd
