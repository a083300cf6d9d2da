#include <gtest/gtest.h>

#include "core/error.h"
#include "core/parallel.h"

using namespace qforge;

namespace {
void needs_positive(int v) { QF_CHECK(v > 0) << "value must be positive, got " << v; }
}  // namespace

TEST(Check, ThrowsTypedErrorWithMessage) {
  try {
    needs_positive(-3);
    FAIL() << "no throw";
  } catch (const ValueError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("value must be positive, got -3", 0), 0u) << m;
    EXPECT_NE(m.find("v > 0"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(needs_positive(1));
  EXPECT_THROW(([] { QF_CHECK_SHAPE(false) << "x"; })(), ShapeError);
  EXPECT_THROW(([] { QF_CHECK_IO(false) << "x"; })(), IOError);
  EXPECT_THROW(([] { QF_THROW(FormatError) << "bad"; })(), FormatError);
  // Every typed error is a qforge::Error and a std::exception.
  EXPECT_THROW(needs_positive(0), Error);
  EXPECT_THROW(needs_positive(0), std::exception);
}

TEST(Check, MessageIsEvaluatedOnlyOnFailure) {
  int calls = 0;
  auto count = [&] { return ++calls; };
  QF_CHECK(true) << count();
  EXPECT_EQ(calls, 0);
}

TEST(Parallel, ForCoversRangeOnce) {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    EXPECT_EQ(num_threads(), threads);
    std::vector<int> hits(1000, 0);
    parallel_for(0, 1000, 7, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int h : hits) ASSERT_EQ(h, 1);
  }
  EXPECT_THROW(set_num_threads(0), ValueError);
  set_num_threads(2);
}

TEST(Parallel, NestedRegionsRunInline) {
  set_num_threads(2);
  std::atomic<int> inner{0};
  parallel_chunks(4, [&](int64_t) {
    EXPECT_TRUE(in_parallel_region());
    parallel_for(0, 10, 1, [&](int64_t b, int64_t e) { inner += static_cast<int>(e - b); });
  });
  EXPECT_EQ(inner.load(), 40);
  EXPECT_FALSE(in_parallel_region());
}
