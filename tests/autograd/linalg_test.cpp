#include <gtest/gtest.h>

#include "tests/autograd/gradcheck.h"

using namespace qforge;
using namespace qforge::autograd;
using qforge::testing::expect_jacobian;
using qforge::testing::rand64;

TEST(LinalgGrad, Matmul2D) {
  Generator g(11);
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 4, 5}, {1, 7, 2}, {6, 1, 3}}) {
    SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n));
    expect_jacobian([](const std::vector<Variable>& v) { return matmul(v[0], v[1]); },
                    {rand64({m, k}, g), rand64({k, n}, g)});
  }
}

TEST(LinalgGrad, MatmulBatched) {
  Generator g(12);
  expect_jacobian([](const std::vector<Variable>& v) { return matmul(v[0], v[1]); },
                  {rand64({3, 2, 4}, g), rand64({3, 4, 3}, g)});
}

TEST(LinalgGrad, Linear) {
  Generator g(13);
  expect_jacobian([](const std::vector<Variable>& v) { return linear(v[0], v[1], v[2]); },
                  {rand64({4, 5}, g), rand64({3, 5}, g), rand64({3}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return linear(v[0], v[1]); },
                  {rand64({1, 1}, g), rand64({2, 1}, g)});
  expect_jacobian([](const std::vector<Variable>& v) { return linear(v[0], v[1], v[2]); },
                  {rand64({2, 3, 4}, g), rand64({5, 4}, g), rand64({5}, g)});
}

TEST(Linalg, MatmulValuesAndErrors) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
  EXPECT_EQ(matmul(Variable(a), Variable(b)).value().to_vector(), (std::vector<double>{4, 5, 10, 11}));
  EXPECT_THROW(matmul(Variable(a), Variable(a)), ShapeError);
  EXPECT_THROW(linear(Variable(a), Variable(Tensor::zeros({4, 2}))), ShapeError);
}

// A large product goes through the threaded path and must equal a naive one.
TEST(Linalg, LargeMatmulMatchesNaive) {
  Generator g(5);
  const int64_t M = 70, K = 300, N = 530;
  Tensor a = Tensor::empty({M, K}), b = Tensor::empty({K, N});
  uniform_(a, -1, 1, g);
  uniform_(b, -1, 1, g);
  Tensor c = matmul(Variable(a), Variable(b)).value();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  for (int64_t i = 0; i < M; i += 7)
    for (int64_t j = 0; j < N; j += 13) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(pa[i * K + k]) * pb[k * N + j];
      ASSERT_NEAR(c.data<float>()[i * N + j], s, 1e-3);
    }
}
