// Recurrent ops: one LSTM layer over a whole sequence as a single recorded
// op, forward and backward through time side by side.
//
// Forward: one GEMM for the input projection of every step (x W_ih^T + b_ih +
// b_hh over [N*T, I]), then per step one GEMM adding h_{t-1} W_hh^T into that
// step's gate rows, and the cell elementwise. The op's value packs
// [N, T + 2, H]: the T outputs, then h_n and c_n, so that gradients from all
// three (lstm_layer() slices them apart) reach one backward.
// Backward through time: per step (last to first) the cell's gradient into
// the gate pre-activations dG_t and one GEMM for dh_{t-1} = dG_t W_hh; then
// one GEMM each for dW_ih = dG^T x, dW_hh = dG^T h_prev and dx = dG W_ih.
#include <cmath>
#include <cstring>

#include "autograd/ops.h"
#include "autograd/ops/tensor_math.h"
#include "core/gemm.h"
#include "core/parallel.h"

namespace qforge::autograd {
namespace {

template <class T>
T sigm(T v) {
  return v >= 0 ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v));
}

/// Elementwise over the batch rows of one step, in parallel when large.
void over_rows(int64_t N, int64_t H, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for(0, N, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H)), fn);
}

}  // namespace

LstmOutput lstm_layer(const Variable& x, const Variable& h0, const Variable& c0, const Variable& w_ih,
                      const Variable& w_hh, const Variable& b_ih, const Variable& b_hh) {
  const Tensor& xv = x.value();
  const Tensor& wi = w_ih.value();
  const Tensor& wh = w_hh.value();
  std::vector<const Tensor*> all = {&xv, &wi, &wh};
  for (const Variable* v : {&h0, &c0, &b_ih, &b_hh})
    if (v->defined()) all.push_back(&v->value());
  DType dt = xv.dtype();
  for (const Tensor* t : all)
    QF_CHECK_DTYPE(t->dtype() == dt && (dt == DType::f32 || dt == DType::f64))
        << "lstm: inputs must all be f32 or all f64, got " << t->desc() << " with input " << xv.desc();
  QF_CHECK_SHAPE(xv.ndim() == 3) << "lstm: input must be [N, T, I], got " << xv.desc();
  const int64_t N = xv.size(0), T = xv.size(1), I = xv.size(2);
  QF_CHECK_SHAPE(wi.ndim() == 2 && wi.size(0) % 4 == 0 && wi.size(0) > 0 && wi.size(1) == I)
      << "lstm: weight_ih must be [4H, " << I << "], got " << wi.desc();
  const int64_t H = wi.size(0) / 4, H4 = 4 * H;
  QF_CHECK_SHAPE(wh.shape() == Shape({H4, H})) << "lstm: weight_hh must be [" << H4 << ", " << H << "], got "
                                               << wh.desc();
  for (const Variable* b : {&b_ih, &b_hh})
    QF_CHECK_SHAPE(!b->defined() || b->shape() == Shape({H4}))
        << "lstm: biases must be [" << H4 << "], got " << b->value().desc();
  for (const Variable* s : {&h0, &c0})
    QF_CHECK_SHAPE(!s->defined() || s->shape() == Shape({N, H}))
        << "lstm: initial states must be [" << N << ", " << H << "], got " << s->value().desc();
  QF_CHECK_SHAPE(T >= 1) << "lstm: the sequence is empty (" << xv.desc() << ")";

  // Saved for backward: activated gates [N, T, 4H] and cell states [N, T, H].
  Tensor gates = Tensor::empty({N, T, H4}, dt);
  Tensor cells = Tensor::empty({N, T, H}, dt);
  Tensor packed = Tensor::empty({N, T + 2, H}, dt);
  const Tensor h0v = h0.defined() ? h0.value() : Tensor(), c0v = c0.defined() ? c0.value() : Tensor();
  detail::with_float(xv, "lstm", [&](auto tag) {
    using S = decltype(tag);
    S* G = gates.data<S>();
    S* C = cells.data<S>();
    S* P = packed.data<S>();
    // Input projection of every step, with both biases.
    gemm(false, true, N * T, H4, I, S(1), xv.data<S>(), I, wi.data<S>(), I, S(0), G, H4);
    if (b_ih.defined() || b_hh.defined()) {
      std::vector<S> b(H4, S(0));
      for (const Variable* bv : {&b_ih, &b_hh})
        if (bv->defined())
          for (int64_t r = 0; r < H4; ++r) b[r] += bv->value().data<S>()[r];
      for (int64_t row = 0; row < N * T; ++row)
        for (int64_t r = 0; r < H4; ++r) G[row * H4 + r] += b[r];
    }
    for (int64_t t = 0; t < T; ++t) {
      // Recurrent projection into this step's gate rows (stride T * 4H).
      if (t > 0) gemm(false, true, N, H4, H, S(1), P + (t - 1) * H, (T + 2) * H, wh.data<S>(), H, S(1), G + t * H4, T * H4);
      else if (h0v.defined()) gemm(false, true, N, H4, H, S(1), h0v.data<S>(), H, wh.data<S>(), H, S(1), G, T * H4);
      over_rows(N, H, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          S* g = G + (n * T + t) * H4;
          const S* cprev = t > 0 ? C + (n * T + t - 1) * H : (c0v.defined() ? c0v.data<S>() + n * H : nullptr);
          S* c = C + (n * T + t) * H;
          S* h = P + (n * (T + 2) + t) * H;
          for (int64_t j = 0; j < H; ++j) {
            const S i = sigm(g[j]), f = sigm(g[H + j]), gg = std::tanh(g[2 * H + j]), o = sigm(g[3 * H + j]);
            g[j] = i;
            g[H + j] = f;
            g[2 * H + j] = gg;
            g[3 * H + j] = o;
            c[j] = f * (cprev ? cprev[j] : S(0)) + i * gg;
            h[j] = o * std::tanh(c[j]);
          }
        }
      });
    }
    for (int64_t n = 0; n < N; ++n) {
      std::memcpy(P + (n * (T + 2) + T) * H, P + (n * (T + 2) + T - 1) * H, H * sizeof(S));
      std::memcpy(P + (n * (T + 2) + T + 1) * H, C + (n * T + T - 1) * H, H * sizeof(S));
    }
  });

  Variable pv;
  if (!any_requires_grad({&x, &h0, &c0, &w_ih, &w_hh, &b_ih, &b_hh})) {
    pv = Variable(packed);
  } else {
    pv = Variable::make(
        packed, {&x, &h0, &c0, &w_ih, &w_hh, &b_ih, &b_hh}, "lstm",
        [xv, h0v, c0v, wi, wh, gates, cells, packed, N, T, I, H, H4](const Tensor& gp, GradSink& out) {
          detail::with_float(gp, "lstm backward", [&](auto tag) {
            using S = decltype(tag);
            const S* A = gates.data<S>();
            const S* C = cells.data<S>();
            const S* P = packed.data<S>();
            const S* GP = gp.data<S>();
            Tensor dG = Tensor::empty({N, T, H4}, gp.dtype());
            S* DG = dG.data<S>();
            // dh and dc flowing back from step t + 1 (start: the h_n and c_n rows).
            std::vector<S> dh(N * H), dc(N * H);
            for (int64_t n = 0; n < N; ++n)
              for (int64_t j = 0; j < H; ++j) {
                dh[n * H + j] = GP[(n * (T + 2) + T) * H + j];
                dc[n * H + j] = GP[(n * (T + 2) + T + 1) * H + j];
              }
            for (int64_t t = T - 1; t >= 0; --t) {
              over_rows(N, H, [&](int64_t n0, int64_t n1) {
                for (int64_t n = n0; n < n1; ++n) {
                  const S* a = A + (n * T + t) * H4;
                  const S* c = C + (n * T + t) * H;
                  const S* cprev = t > 0 ? C + (n * T + t - 1) * H : (c0v.defined() ? c0v.data<S>() + n * H : nullptr);
                  const S* go = GP + (n * (T + 2) + t) * H;
                  S* d = DG + (n * T + t) * H4;
                  for (int64_t j = 0; j < H; ++j) {
                    const S i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
                    const S tc = std::tanh(c[j]);
                    const S dhj = go[j] + dh[n * H + j];
                    const S dcj = dc[n * H + j] + dhj * o * (S(1) - tc * tc);
                    d[j] = dcj * g * i * (S(1) - i);
                    d[H + j] = dcj * (cprev ? cprev[j] : S(0)) * f * (S(1) - f);
                    d[2 * H + j] = dcj * i * (S(1) - g * g);
                    d[3 * H + j] = dhj * tc * o * (S(1) - o);
                    dc[n * H + j] = dcj * f;
                  }
                }
              });
              // dh_{t-1} = dG_t W_hh.
              gemm(false, false, N, H, H4, S(1), DG + t * H4, T * H4, wh.data<S>(), H, S(0), dh.data(), H);
            }
            if (out.needs(0)) {  // dx = dG W_ih
              Tensor dx = Tensor::empty({N, T, I}, gp.dtype());
              gemm(false, false, N * T, I, H4, S(1), DG, H4, wi.data<S>(), I, S(0), dx.data<S>(), I);
              out.add(0, dx);
            }
            if (out.needs(1)) out.add(1, Tensor::from_vector(dh, {N, H}));
            if (out.needs(2)) out.add(2, Tensor::from_vector(dc, {N, H}));
            if (out.needs(3)) {  // dW_ih = dG^T x
              Tensor dw = Tensor::empty({H4, I}, gp.dtype());
              gemm(true, false, H4, I, N * T, S(1), DG, H4, xv.data<S>(), I, S(0), dw.data<S>(), I);
              out.add(3, dw);
            }
            if (out.needs(4)) {  // dW_hh = dG^T h_prev, h_prev[n, t] = h_{t-1} (h0 or 0 at t = 0)
              Tensor hp = Tensor::zeros({N, T, H}, gp.dtype());
              S* HP = hp.data<S>();
              for (int64_t n = 0; n < N; ++n) {
                if (h0v.defined()) std::memcpy(HP + n * T * H, h0v.data<S>() + n * H, H * sizeof(S));
                std::memcpy(HP + (n * T + 1) * H, P + n * (T + 2) * H, (T - 1) * H * sizeof(S));
              }
              Tensor dw = Tensor::empty({H4, H}, gp.dtype());
              gemm(true, false, H4, H, N * T, S(1), DG, H4, HP, H, S(0), dw.data<S>(), H);
              out.add(4, dw);
            }
            if (out.needs(5) || out.needs(6)) {  // both biases: the column sums of dG
              Tensor db = Tensor::zeros({H4}, gp.dtype());
              S* pb = db.data<S>();
              for (int64_t row = 0; row < N * T; ++row)
                for (int64_t r = 0; r < H4; ++r) pb[r] += DG[row * H4 + r];
              if (out.needs(5)) out.add(5, db);
              if (out.needs(6)) out.add(6, db.clone());
            }
          });
        });
  }
  LstmOutput r;
  r.output = slice(pv, 1, 0, T);
  r.h_n = reshape(slice(pv, 1, T, T + 1), {N, H});
  r.c_n = reshape(slice(pv, 1, T + 1, T + 2), {N, H});
  return r;
}

}  // namespace qforge::autograd
