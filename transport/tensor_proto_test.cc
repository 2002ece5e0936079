#include "transport/tensor_proto.h"

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::transport {
namespace {

TEST(TensorProtoTest, RoundTripsEveryDtype) {
  model::NamedTensors in;
  in.insert("f32", torch::randn({3, 4}));
  in.insert("f16", torch::randn({5}).to(torch::kFloat16));
  in.insert("bf16", torch::randn({2, 2}).to(torch::kBFloat16));
  in.insert("i8", torch::randint(-100, 100, {7}).to(torch::kInt8));
  in.insert("i64", torch::arange(6).view({2, 3}));
  in.insert("t", torch::randn({4, 3}).t());  // Non-contiguous.
  in.insert("empty", torch::zeros({0, 3}));
  v1::NamedTensors proto;
  ASSERT_TRUE(ToProto(in, &proto).ok());
  auto out = FromProto(proto);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in.size());
  for (const auto& item : in) {
    EXPECT_TRUE(torch::equal((*out)[item.key()], item.value())) << item.key();
  }
}

TEST(TensorProtoTest, RejectsMalformedMessages) {
  model::NamedTensors in;
  in.insert("w", torch::randn({2, 3}));
  v1::NamedTensors good;
  ASSERT_TRUE(ToProto(in, &good).ok());
  auto expect = [](const v1::NamedTensors& p, absl::StatusCode code,
                   const std::string& fragment) {
    auto r = FromProto(p, {10, 1000});
    ASSERT_FALSE(r.ok()) << fragment;
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_NE(r.status().message().find(fragment), std::string::npos)
        << r.status();
  };
  v1::NamedTensors p = good;
  p.mutable_tensors(0)->mutable_tensor()->mutable_data()->pop_back();
  expect(p, absl::StatusCode::kInvalidArgument, "bytes");
  p = good;
  p.mutable_tensors(0)->mutable_tensor()->set_dtype(v1::DTYPE_UNSPECIFIED);
  expect(p, absl::StatusCode::kInvalidArgument, "dtype");
  p = good;
  p.mutable_tensors(0)->mutable_tensor()->set_shape(0, -2);
  expect(p, absl::StatusCode::kInvalidArgument, "shape");
  p = good;
  p.mutable_tensors(0)->mutable_tensor()->set_shape(0, 1LL << 62);
  expect(p, absl::StatusCode::kInvalidArgument, "oversized");
  p = good;
  p.mutable_tensors(0)->mutable_tensor()->set_shape(0, 500);
  expect(p, absl::StatusCode::kResourceExhausted, "limit");
  p = good;
  *p.add_tensors() = good.tensors(0);
  expect(p, absl::StatusCode::kInvalidArgument, "repeated");
  model::NamedTensors bad;
  bad.insert("b", torch::ones({2}, torch::kBool));
  EXPECT_FALSE(ToProto(bad, &p).ok());
}

}  // namespace
}  // namespace fedge::transport
