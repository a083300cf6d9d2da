// Matrix products: matmul (2-D and batched 3-D) and linear.
#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/gemm.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

// C[b] = op(A[b]) op(B[b]) for every batch b (batch 1 for 2-D). Sizes are
// those of the product; strides between batches are the matrix sizes.
template <class T>
void batched_gemm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, const T* B,
                  T* C) {
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  if (batch == 1) {
    gemm(ta, tb, M, N, K, T(1), A, lda, B, ldb, T(0), C, N);
    return;
  }
  parallel_for(0, batch, 1, [&](int64_t s, int64_t e) {
    for (int64_t b = s; b < e; ++b)
      gemm(ta, tb, M, N, K, T(1), A + b * M * K, lda, B + b * K * N, ldb, T(0), C + b * M * N, N);
  });
}

}  // namespace

Variable matmul(const Variable& a, const Variable& b) {
  const Tensor& av = a.value();
  const Tensor& bv = b.value();
  const DType dt = detail::common_float_dtype({&av, &bv}, "matmul");
  const int nd = av.ndim();
  QF_CHECK_SHAPE((nd == 2 || nd == 3) && bv.ndim() == nd)
      << "matmul: expected two 2-D or two 3-D tensors, got " << av.desc() << " and " << bv.desc();
  const int64_t batch = nd == 3 ? av.size(0) : 1;
  const int64_t M = av.size(-2), K = av.size(-1), N = bv.size(-1);
  QF_CHECK_SHAPE(bv.size(-2) == K && (nd == 2 || bv.size(0) == batch))
      << "matmul: inner sizes differ: " << av.desc() << " x " << bv.desc();
  Shape os = nd == 3 ? Shape{batch, M, N} : Shape{M, N};
  Tensor y = Tensor::empty(os, dt);
  detail::with_float(y, "matmul", [&](auto tag) {
    using T = decltype(tag);
    batched_gemm<T>(batch, false, false, M, N, K, av.data<T>(), bv.data<T>(), y.data<T>());
  });
  if (!any_requires_grad({&a, &b})) return Variable(y);
  Tensor sa = b.requires_grad() ? av : Tensor();
  Tensor sb = a.requires_grad() ? bv : Tensor();
  return Variable::make(y, {&a, &b}, "matmul", [sa, sb, batch, M, N, K](const Tensor& g, GradSink& out) {
    detail::with_float(g, "matmul backward", [&](auto tag) {
      using T = decltype(tag);
      if (out.needs(0)) {  // dA = g B^T
        Tensor da = Tensor::empty(sb.ndim() == 3 ? Shape{batch, M, K} : Shape{M, K}, g.dtype());
        batched_gemm<T>(batch, false, true, M, K, N, g.data<T>(), sb.data<T>(), da.data<T>());
        out.add(0, da);
      }
      if (out.needs(1)) {  // dB = A^T g
        Tensor db = Tensor::empty(sa.ndim() == 3 ? Shape{batch, K, N} : Shape{K, N}, g.dtype());
        batched_gemm<T>(batch, true, false, K, N, M, sa.data<T>(), g.data<T>(), db.data<T>());
        out.add(1, db);
      }
    });
  });
}

Variable linear(const Variable& x, const Variable& weight, const Variable& bias) {
  const Tensor& xv = x.value();
  const Tensor& wv = weight.value();
  const DType dt = detail::common_float_dtype({&xv, &wv, bias.defined() ? &bias.value() : nullptr}, "linear");
  QF_CHECK_SHAPE(wv.ndim() == 2) << "linear: weight must be [out, in], got " << wv.desc();
  QF_CHECK_SHAPE(xv.ndim() >= 1 && xv.size(-1) == wv.size(1))
      << "linear: input " << xv.desc() << " does not end in in_features " << wv.size(1) << " of weight "
      << wv.desc();
  const int64_t in = wv.size(1), outf = wv.size(0);
  if (bias.defined())
    QF_CHECK_SHAPE(bias.ndim() == 1 && bias.size(0) == outf)
        << "linear: bias must be [" << outf << "], got " << bias.value().desc();
  const int64_t M = xv.numel() / std::max<int64_t>(in, 1);
  Shape os = xv.shape();
  os.back() = outf;
  Tensor y = Tensor::empty(os, dt);
  detail::with_float(y, "linear", [&](auto tag) {
    using T = decltype(tag);
    T* py = y.data<T>();
    if (bias.defined()) {
      const T* pb = bias.value().data<T>();
      for (int64_t i = 0; i < M; ++i) std::copy(pb, pb + outf, py + i * outf);
    }
    gemm(false, true, M, outf, in, T(1), xv.data<T>(), in, wv.data<T>(), in, T(bias.defined() ? 1 : 0), py, outf);
  });
  if (!any_requires_grad({&x, &weight, &bias})) return Variable(y);
  Tensor sx = weight.requires_grad() ? xv : Tensor();
  Tensor sw = x.requires_grad() ? wv : Tensor();
  return Variable::make(y, {&x, &weight, &bias}, "linear",
                        [sx, sw, xs = xv.shape(), M, in, outf](const Tensor& g, GradSink& out) {
                          detail::with_float(g, "linear backward", [&](auto tag) {
                            using T = decltype(tag);
                            const T* pg = g.data<T>();
                            if (out.needs(0)) {  // dx = g W
                              Tensor dx = Tensor::empty(xs, g.dtype());
                              gemm(false, false, M, in, outf, T(1), pg, outf, sw.data<T>(), in, T(0), dx.data<T>(), in);
                              out.add(0, dx);
                            }
                            if (out.needs(1)) {  // dW = g^T x
                              Tensor dw = Tensor::empty({outf, in}, g.dtype());
                              gemm(true, false, outf, in, M, T(1), pg, outf, sx.data<T>(), in, T(0), dw.data<T>(), in);
                              out.add(1, dw);
                            }
                            if (out.needs(2)) {  // db = column sums of g
                              Tensor db = Tensor::zeros({outf}, g.dtype());
                              T* pb = db.data<T>();
                              for (int64_t i = 0; i < M; ++i)
                                for (int64_t j = 0; j < outf; ++j) pb[j] += pg[i * outf + j];
                              out.add(2, db);
                            }
                          });
                        });
}

}  // namespace qforge::autograd
