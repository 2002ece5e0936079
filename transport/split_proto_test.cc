#include "transport/split_proto.h"

#include "glog/logging.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "split/client.h"
#include "tests/testing/tiny_models.h"

namespace fedge::transport {
namespace {

split::StepRequest Request() {
  split::StepRequest r;
  r.step = 3;
  r.applied_steps = 2;
  r.total_steps = 9;
  r.activations = torch::randn({4, 17, 32});
  r.targets = torch::tensor({1, 2, 3, 4}, torch::kLong);
  return r;
}

CodecOptions Options(Codec codec) {
  CodecOptions o;
  o.codec = codec;
  o.zstd = false;
  return o;
}

TEST(SplitProtoTest, Float32IsExactAndSmallerCodecsAreClose) {
  const split::StepRequest request = Request();
  int64_t f32_bytes = 0;
  for (Codec codec :
       {Codec::kFloat32, Codec::kFloat16, Codec::kBFloat16, Codec::kInt8Row}) {
    v1::SplitMessage message;
    ASSERT_TRUE(StepRequestToProto(request, Options(codec), &message).ok());
    absl::StatusOr<split::StepRequest> back = StepRequestFromProto(message);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->step, 3);
    EXPECT_EQ(back->applied_steps, 2);
    EXPECT_EQ(back->total_steps, 9);
    EXPECT_TRUE(back->targets.equal(request.targets));
    const double err =
        (back->activations - request.activations).abs().max().item<double>();
    if (codec == Codec::kFloat32) {
      EXPECT_TRUE(back->activations.equal(request.activations));
      f32_bytes = message.ByteSizeLong();
    } else {
      EXPECT_LT(err, 0.05) << CodecName(codec);
      EXPECT_LT(message.ByteSizeLong(), 0.6 * f32_bytes) << CodecName(codec);
    }
  }
}

TEST(SplitProtoTest, MalformedMessagesAreInvalidArgument) {
  v1::SplitMessage message;
  ASSERT_TRUE(
      StepRequestToProto(Request(), Options(Codec::kFloat16), &message).ok());
  v1::SplitMessage bad = message;
  bad.set_activations("not a payload");
  EXPECT_EQ(StepRequestFromProto(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = message;
  bad.mutable_activations()->resize(message.activations().size() / 2);
  EXPECT_EQ(StepRequestFromProto(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = message;
  bad.mutable_targets()->mutable_data()->resize(3);
  EXPECT_EQ(StepRequestFromProto(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = message;
  bad.clear_activations();
  EXPECT_FALSE(StepRequestFromProto(bad).ok());
  // Two tensors where one is expected.
  model::NamedTensors two;
  two.insert("a", torch::ones({2}));
  two.insert("b", torch::ones({2}));
  bad = message;
  *bad.mutable_activations() =
      EncodeUpdate(two, Options(Codec::kFloat32))->bytes;
  EXPECT_EQ(StepRequestFromProto(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StepReplyFromProto(v1::SplitMessage()).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::SplitSpec spec;
  spec.set_activation_codec(v1::CODEC_TOPK);
  EXPECT_EQ(ActivationCodecOptions(spec).status().code(),
            absl::StatusCode::kInvalidArgument);
  spec.set_activation_codec(v1::CODEC_UNSPECIFIED);
  EXPECT_EQ(ActivationCodecOptions(spec)->codec, Codec::kFloat16);
}

model::Vit Clone(const model::Vit& source) {
  model::Vit copy = testing::TinyVit(64);
  CHECK(model::LoadWeights(*copy, model::CopyWeights(*source)).ok());
  return copy;
}

// Through the wire format with float32, split training is the whole
// model's training; with int8 it is close.
TEST(WireSplitLinkTest, Float32SplitTrainingEqualsUnsplitTraining) {
  torch::manual_seed(3);
  const model::Vit whole = testing::TinyVit(64);
  const model::Vit device = Clone(whole);
  const model::Vit server_side = Clone(whole);
  model::Dataset data;
  data.inputs = torch::randn({32, 1, 28, 28});
  data.targets = torch::randint(0, 10, {32}, torch::kLong);
  model::TrainOptions options;
  options.batch_size = 8;
  options.max_grad_norm = 0;
  ASSERT_TRUE(model::Train(*whole, data, options).ok());

  auto server = split::SplitServer::Create(server_side, 1, options);
  ASSERT_TRUE(server.ok());
  WireSplitLink link(server->get(), Options(Codec::kFloat32));
  absl::StatusOr<split::SplitResult> result =
      split::TrainSplit(*device, data, options, {1, 0, 1.0}, link);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->split_steps, 4);
  EXPECT_EQ((*server)->applied_steps(), 4);
  EXPECT_GT(link.bytes_up(), 4 * 8 * 17 * 32 * 4);
  EXPECT_GT(link.bytes_down(), 4 * 8 * 17 * 32 * 4);
  const model::NamedTensors expected = model::CopyWeights(*whole);
  for (const auto& item : model::CopyWeights(*device)) {
    if (!whole->InHead(item.key(), 1)) continue;
    EXPECT_TRUE(torch::allclose(item.value(), expected[item.key()], 1e-5, 1e-6))
        << item.key();
  }
  for (const auto& item : (*server)->TailParameters()) {
    EXPECT_TRUE(torch::allclose(item.value(), expected[item.key()], 1e-5, 1e-6))
        << item.key();
  }
}

}  // namespace
}  // namespace fedge::transport
