#include <gtest/gtest.h>

#include "core/tensor.h"

using namespace qforge;

TEST(Tensor, CreateAndAccess) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.desc(), "f32[2, 3, 4]");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (DType d : {DType::f32, DType::f64, DType::i8, DType::u8, DType::i32}) {
    Tensor x = Tensor::full({5}, 3, d);
    EXPECT_EQ(x.dtype(), d);
    EXPECT_EQ(x.item(4), 3.0);
    EXPECT_EQ(x.nbytes(), 5 * dtype_size(d));
  }
  Tensor s = Tensor::scalar(2.5);
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.numel(), 1);
}

TEST(Tensor, ReshapeIsAViewCloneIsACopy) {
  Tensor t = Tensor::arange(12);
  Tensor v = t.reshape({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 4}));
  EXPECT_TRUE(v.shares_storage(t));
  v.data<float>()[5] = 42;
  EXPECT_EQ(t.item(5), 42);
  Tensor c = t.clone();
  c.data<float>()[5] = 0;
  EXPECT_EQ(t.item(5), 42);
  EXPECT_FALSE(c.shares_storage(t));
}

TEST(Tensor, ErrorsNameShapesAndDtypes) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.reshape({4, 2});
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("f32[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.reshape({-1, -1}), ShapeError);
  EXPECT_THROW(t.data<double>(), DTypeError);
  EXPECT_THROW(t.size(2), IndexError);
  EXPECT_THROW(Tensor::empty({-1}), ShapeError);
  EXPECT_THROW(Tensor().clone(), ValueError);
}

TEST(Tensor, ConvertAndEigenViews) {
  Tensor t = Tensor::from_vector<float>({1.5f, -2.5f, 3.0f, 4.0f}, {2, 2});
  Tensor i = t.to(DType::i32);
  EXPECT_EQ(i.item(1), -2);
  auto m = t.mat<float>();
  EXPECT_EQ(m(1, 0), 3.0f);
  EXPECT_FLOAT_EQ(t.vec<float>().sum(), 6.0f);
  EXPECT_THROW(Tensor::zeros({2, 2, 2}).mat<float>(), ShapeError);
}

TEST(Tensor, AllocatorCacheReusesLargeBlocks) {
  allocator_release_cache();
  const void* p;
  {
    Tensor a = Tensor::empty({1 << 20});
    p = a.raw();
  }
  EXPECT_GE(allocator_cached_bytes(), size_t{4} << 20);
  Tensor b = Tensor::empty({1 << 20});
  EXPECT_EQ(b.raw(), p);
}
