// Shape ops: reshape, flatten, permute, concat, slice.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"

namespace qforge::autograd {
namespace {

// Copies a permuted view of src (any dtype) into a new contiguous tensor:
// out axis i is src axis dims[i].
Tensor permute_tensor(const Tensor& src, const std::vector<int>& dims) {
  const int D = src.ndim();
  Shape os(D);
  std::vector<int64_t> sst(D), ost(D);
  int64_t st = 1;
  for (int i = D - 1; i >= 0; --i) {
    sst[i] = st;
    st *= src.size(i);
  }
  for (int i = 0; i < D; ++i) os[i] = src.size(dims[i]);
  Tensor out = Tensor::empty(os, src.dtype());
  const size_t es = dtype_size(src.dtype());
  const char* ps = static_cast<const char*>(src.raw());
  char* po = static_cast<char*>(out.raw());
  std::vector<int64_t> idx(D, 0);
  std::vector<int64_t> step(D);
  for (int i = 0; i < D; ++i) step[i] = sst[dims[i]];
  int64_t off = 0;
  const int64_t n = out.numel();
  for (int64_t k = 0; k < n; ++k) {
    std::memcpy(po + k * es, ps + off * es, es);
    for (int d = D - 1; d >= 0; --d) {
      ++idx[d];
      off += step[d];
      if (idx[d] < os[d]) break;
      off -= step[d] * os[d];
      idx[d] = 0;
    }
  }
  return out;
}

// Product of sizes before / after `axis`.
void split_at(const Shape& s, int axis, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int i = 0; i < axis; ++i) outer *= s[i];
  for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
}

}  // namespace

Variable reshape(const Variable& x, const Shape& shape) {
  Tensor y = x.value().reshape(shape);
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, "reshape",
                        [in = x.shape()](const Tensor& g, GradSink& out) { out.add(0, g.reshape(in)); });
}

Variable flatten(const Variable& x, int start_axis, int end_axis) {
  const int D = x.ndim();
  if (D == 0) return reshape(x, {1});
  const int s = normalize_axis(start_axis, D, "flatten");
  const int e = normalize_axis(end_axis, D, "flatten");
  QF_CHECK_INDEX(s <= e) << "flatten: start axis " << start_axis << " comes after end axis " << end_axis;
  Shape os;
  for (int i = 0; i < s; ++i) os.push_back(x.size(i));
  int64_t m = 1;
  for (int i = s; i <= e; ++i) m *= x.size(i);
  os.push_back(m);
  for (int i = e + 1; i < D; ++i) os.push_back(x.size(i));
  return reshape(x, os);
}

Variable permute(const Variable& x, const std::vector<int>& dims) {
  const int D = x.ndim();
  QF_CHECK_SHAPE(static_cast<int>(dims.size()) == D)
      << "permute: " << dims.size() << " axes given for a " << D << "-d tensor";
  std::vector<int> d(D);
  std::vector<bool> seen(D, false);
  for (int i = 0; i < D; ++i) {
    d[i] = normalize_axis(dims[i], D, "permute");
    QF_CHECK_INDEX(!seen[d[i]]) << "permute: axis " << dims[i] << " appears twice";
    seen[d[i]] = true;
  }
  Tensor y = permute_tensor(x.value(), d);
  if (!any_requires_grad({&x})) return Variable(y);
  std::vector<int> inv(D);
  for (int i = 0; i < D; ++i) inv[d[i]] = i;
  return Variable::make(y, {&x}, "permute",
                        [inv](const Tensor& g, GradSink& out) { out.add(0, permute_tensor(g, inv)); });
}

Variable concat(const std::vector<Variable>& xs, int axis) {
  QF_CHECK(!xs.empty()) << "concat: no inputs";
  const Shape& s0 = xs[0].shape();
  const int D = static_cast<int>(s0.size());
  QF_CHECK_SHAPE(D >= 1) << "concat: 0-d inputs cannot be concatenated";
  const int ax = normalize_axis(axis, D, "concat");
  const DType dt = xs[0].dtype();
  Shape os = s0;
  os[ax] = 0;
  std::vector<int64_t> sizes;
  for (const Variable& v : xs) {
    QF_CHECK_DTYPE(v.dtype() == dt) << "concat: dtypes differ: " << dtype_name(dt) << " and "
                                    << dtype_name(v.dtype());
    QF_CHECK_SHAPE(v.ndim() == D) << "concat: " << v.value().desc() << " and " << shape_str(s0)
                                  << " differ in rank";
    for (int i = 0; i < D; ++i)
      QF_CHECK_SHAPE(i == ax || v.size(i) == s0[i])
          << "concat along axis " << ax << ": " << v.value().desc() << " does not match " << shape_str(s0);
    sizes.push_back(v.size(ax));
    os[ax] += v.size(ax);
  }
  Tensor y = Tensor::empty(os, dt);
  int64_t outer, inner;
  split_at(os, ax, outer, inner);
  const size_t es = dtype_size(dt);
  char* py = static_cast<char*>(y.raw());
  int64_t at = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const char* px = static_cast<const char*>(xs[k].value().raw());
    const int64_t row = sizes[k] * inner * es;
    for (int64_t o = 0; o < outer; ++o) std::memcpy(py + (o * os[ax] + at) * inner * es, px + o * row, row);
    at += sizes[k];
  }
  bool any = false;
  for (const Variable& v : xs) any = any || any_requires_grad({&v});
  if (!any) return Variable(y);
  std::vector<const Variable*> ins;
  for (const Variable& v : xs) ins.push_back(&v);
  return Variable::make(y, ins, "concat", [sizes, os, ax, outer, inner](const Tensor& g, GradSink& out) {
    const size_t es = dtype_size(g.dtype());
    const char* pg = static_cast<const char*>(g.raw());
    int64_t at = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (out.needs(k)) {
        Shape s = os;
        s[ax] = sizes[k];
        Tensor d = Tensor::empty(s, g.dtype());
        char* pd = static_cast<char*>(d.raw());
        const int64_t row = sizes[k] * inner * es;
        for (int64_t o = 0; o < outer; ++o) std::memcpy(pd + o * row, pg + (o * os[ax] + at) * inner * es, row);
        out.add(k, d);
      }
      at += sizes[k];
    }
  });
}

Variable slice(const Variable& x, int axis, int64_t start, int64_t end, int64_t step) {
  const int D = x.ndim();
  const int ax = normalize_axis(axis, D, "slice");
  QF_CHECK(step >= 1) << "slice: step must be >= 1, got " << step;
  const int64_t n = x.size(ax);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  const int64_t m = (end - start + step - 1) / step;
  Shape os = x.shape();
  os[ax] = m;
  int64_t outer, inner;
  split_at(x.shape(), ax, outer, inner);
  Tensor y = Tensor::empty(os, x.dtype());
  const size_t es = dtype_size(x.dtype());
  const char* px = static_cast<const char*>(x.value().raw());
  char* py = static_cast<char*>(y.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(py + (o * m + j) * inner * es, px + (o * n + start + j * step) * inner * es, inner * es);
  if (!any_requires_grad({&x})) return Variable(y);
  return Variable::make(y, {&x}, "slice",
                        [in = x.shape(), outer, inner, n, m, start, step](const Tensor& g, GradSink& out) {
                          Tensor dx = Tensor::zeros(in, g.dtype());
                          const size_t es = dtype_size(g.dtype());
                          const char* pg = static_cast<const char*>(g.raw());
                          char* pd = static_cast<char*>(dx.raw());
                          for (int64_t o = 0; o < outer; ++o)
                            for (int64_t j = 0; j < m; ++j)
                              std::memcpy(pd + (o * n + start + j * step) * inner * es,
                                          pg + (o * m + j) * inner * es, inner * es);
                          out.add(0, dx);
                        });
}

}  // namespace qforge::autograd
