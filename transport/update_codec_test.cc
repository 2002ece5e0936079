#include "transport/update_codec.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "fedge/v1/transfer.pb.h"
#include "transport/transfer.h"

namespace fedge::transport {
namespace {

NamedTensors LoraLikeUpdate() {
  torch::manual_seed(0);
  NamedTensors u;
  u.insert("layers.0.self_attn.q_proj.adapter.lora_A",
           torch::randn({8, 128}) * 0.02);
  u.insert("layers.0.self_attn.q_proj.adapter.lora_B",
           torch::randn({128, 8}) * 0.01);
  u.insert("scalar", torch::tensor(3.0f).reshape({}));
  u.insert("empty", torch::zeros({0, 4}));
  return u;
}

// Bytes in memory that record what the decoder says it is done with.
class RecordingBytes final : public PayloadBytes {
 public:
  explicit RecordingBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  absl::string_view view() const override { return bytes_; }
  void DoneWith(absl::string_view part) const override {
    done_.push_back(part);
  }
  const std::vector<absl::string_view>& done() const { return done_; }

 private:
  std::string bytes_;
  mutable std::vector<absl::string_view> done_;
};

TEST(UpdateCodecTest, LosslessCodecsRoundTripAndShrink) {
  const NamedTensors update = LoraLikeUpdate();
  for (bool zstd : {false, true}) {
    CodecOptions options;
    options.codec = Codec::kFloat32;
    options.zstd = zstd;
    absl::StatusOr<EncodedPayload> encoded = EncodeUpdate(update, options);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    // From bytes, and from PayloadBytes told what the decoder is done with.
    const RecordingBytes bytes(encoded->bytes);
    for (absl::StatusOr<NamedTensors> decoded :
         {DecodeUpdate(encoded->bytes), DecodeUpdate(bytes)}) {
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      for (const auto& item : update) {
        EXPECT_TRUE(torch::equal((*decoded)[item.key()], item.value()))
            << item.key();
      }
    }
    EXPECT_EQ(encoded->raw_bytes, (8 * 128 * 2 + 1) * 4);
    // Uncompressed: each tensor's bytes, in order, within the payload and
    // not overlapping. Compressed: the compressed bytes, once.
    const absl::string_view all = bytes.view();
    ASSERT_EQ(bytes.done().size(), zstd ? 1u : update.size()) << zstd;
    const char* after = all.data();
    size_t total = 0;
    for (absl::string_view part : bytes.done()) {
      EXPECT_GE(part.data(), after);
      EXPECT_LE(part.data() + part.size(), all.data() + all.size());
      after = part.data() + part.size();
      total += part.size();
    }
    // The parts cover the values, which are most of the payload.
    EXPECT_GT(total, all.size() / 2) << zstd;
  }
}

TEST(UpdateCodecTest, HalfPrecisionErrorIsWithinItsUlp) {
  const NamedTensors update = LoraLikeUpdate();
  for (auto [codec, rel] :
       {std::pair{Codec::kFloat16, 1e-3}, {Codec::kBFloat16, 8e-3}}) {
    CodecOptions options;
    options.codec = codec;
    absl::StatusOr<NamedTensors> decoded =
        DecodeUpdate(EncodeUpdate(update, options)->bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const at::Tensor& x = update["layers.0.self_attn.q_proj.adapter.lora_A"];
    const at::Tensor& y =
        (*decoded)["layers.0.self_attn.q_proj.adapter.lora_A"];
    EXPECT_TRUE(torch::allclose(y, x, rel, 1e-6)) << CodecName(codec);
  }
}

TEST(UpdateCodecTest, Int8ErrorPerRowIsAtMostHalfAStep) {
  const NamedTensors update = LoraLikeUpdate();
  CodecOptions options;
  options.codec = Codec::kInt8Row;
  options.zstd = false;
  absl::StatusOr<EncodedPayload> encoded = EncodeUpdate(update, options);
  ASSERT_TRUE(encoded.ok());
  absl::StatusOr<NamedTensors> decoded = DecodeUpdate(encoded->bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  for (const char* name : {"layers.0.self_attn.q_proj.adapter.lora_A",
                           "layers.0.self_attn.q_proj.adapter.lora_B"}) {
    const at::Tensor x = update[name];
    // A [8, 128] is scaled per row, B [128, 8] per column (its longer axis).
    const bool columns = x.size(0) > x.size(1);
    // The step is the stored float16 scale, at most 0.1% above max / 127.
    const at::Tensor step = x.abs().amax(columns ? 0 : 1, true) / 127.0 * 1.001;
    const at::Tensor error = ((*decoded)[name] - x).abs();
    EXPECT_TRUE((error <= step / 2 + 1e-7).all().item<bool>()) << name;
  }
  // One float scale per 128 int8 values, plus names and framing, which
  // weigh more on this 8 KiB update than on a real one (bench/run).
  EXPECT_GT(static_cast<double>(encoded->raw_bytes) / encoded->bytes.size(),
            3.5);
}

TEST(UpdateCodecTest, TopKKeepsTheLargestAndFeedsBackTheResidual) {
  NamedTensors update;
  update.insert("w", torch::tensor({0.1f, -5.0f, 0.2f, 3.0f, -0.3f, 0.05f, 4.0f,
                                    0.0f, 0.01f, -0.02f}));
  CodecOptions options;
  options.codec = Codec::kTopK;
  options.topk_fraction = 0.3;  // k = 3.
  ErrorFeedback feedback;

  absl::StatusOr<NamedTensors> first =
      DecodeUpdate(EncodeUpdate(update, options, &feedback)->bytes);

  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(torch::equal(
      (*first)["w"],
      torch::tensor({0.f, -5.f, 0.f, 3.f, 0.f, 0.f, 4.f, 0.f, 0.f, 0.f})));
  // What was not sent stays on the client ...
  EXPECT_TRUE(
      torch::allclose(feedback.residual["w"], update["w"] - (*first)["w"]));
  // ... and is added next time: a zero update now sends the residual's top 3.
  NamedTensors zero;
  zero.insert("w", torch::zeros({10}));
  absl::StatusOr<NamedTensors> second =
      DecodeUpdate(EncodeUpdate(zero, options, &feedback)->bytes);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(torch::allclose(
      (*second)["w"],
      torch::tensor({0.f, 0.f, 0.2f, 0.f, -0.3f, 0.f, 0.f, 0.f, 0.f, 0.f}) +
          torch::tensor({0.1f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f})));
  // Sum of everything sent + residual = sum of all updates.
  EXPECT_TRUE(torch::allclose(
      (*first)["w"] + (*second)["w"] + feedback.residual["w"], update["w"]));
}

// Matrices (adapters) keep their residual across rounds while the
// sub-model stays the same, and drop it when it changes.
TEST(UpdateCodecTest, TopKResidualOfMatricesCarriesOverUntilShapesChange) {
  CodecOptions options;
  options.codec = Codec::kTopK;
  options.topk_fraction = 0.25;
  ErrorFeedback feedback;
  NamedTensors update;
  update.insert("a", torch::arange(1, 9, torch::kFloat32).reshape({2, 4}));
  update.insert("b", torch::ones({4, 1}));
  ASSERT_TRUE(EncodeUpdate(update, options, &feedback).ok());
  const at::Tensor left = feedback.residual["a"].clone();
  EXPECT_GT(left.abs().sum().item<float>(), 0);

  NamedTensors zero;
  zero.insert("a", torch::zeros({2, 4}));
  zero.insert("b", torch::zeros({4, 1}));
  absl::StatusOr<NamedTensors> second =
      DecodeUpdate(EncodeUpdate(zero, options, &feedback)->bytes);
  ASSERT_TRUE(second.ok());
  // What was left unsent goes out now.
  EXPECT_GT((*second)["a"].abs().sum().item<float>(), 0);

  NamedTensors smaller;
  smaller.insert("a", torch::zeros({1, 4}));  // A pruned sub-model.
  smaller.insert("b", torch::zeros({4, 1}));
  absl::StatusOr<NamedTensors> third =
      DecodeUpdate(EncodeUpdate(smaller, options, &feedback)->bytes);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ((*third)["a"].abs().sum().item<float>(), 0);
  EXPECT_EQ((*third)["b"].abs().sum().item<float>(), 0);
}

TEST(UpdateCodecTest, Int8HandlesHugeAndZeroRows) {
  NamedTensors update;
  update.insert("huge",
                torch::tensor({{1e9f, -3e8f, 5.0f}, {0.0f, 0.0f, 0.0f}}));
  CodecOptions options;
  options.codec = Codec::kInt8Row;
  absl::StatusOr<NamedTensors> decoded =
      DecodeUpdate(EncodeUpdate(update, options)->bytes);
  ASSERT_TRUE(decoded.ok())
      << decoded.status();  // Float32 scales for this one.
  EXPECT_NEAR((*decoded)["huge"][0][0].item<float>(), 1e9f, 1e9 / 254);
  EXPECT_EQ((*decoded)["huge"][1].abs().sum().item<float>(), 0.0f);
}

TEST(UpdateCodecTest, EncodeRejectsNanAndBadOptions) {
  NamedTensors nan;
  nan.insert("w", torch::tensor({1.0f, std::nanf("")}));
  EXPECT_EQ(EncodeUpdate(nan, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  NamedTensors ints;
  ints.insert("w", torch::ones({2}, torch::kLong));
  EXPECT_FALSE(EncodeUpdate(ints, {}).ok());
  CodecOptions bad;
  bad.topk_fraction = 0;
  EXPECT_FALSE(EncodeUpdate(LoraLikeUpdate(), bad).ok());
  EXPECT_FALSE(ParseCodec("int4").ok());
  EXPECT_EQ(*ParseCodec("topk"), Codec::kTopK);
}

// A well-formed EncodedUpdate with one tensor that the test then breaks.
std::string Wrap(const v1::EncodedUpdate& update,
                 bool zstd_declared_size = false, int64_t declared = -1) {
  v1::CompressedPayload payload;
  payload.set_compression(v1::COMPRESSION_NONE);
  payload.set_data(update.SerializeAsString());
  payload.set_uncompressed_bytes(
      declared >= 0 ? declared : static_cast<int64_t>(payload.data().size()));
  if (zstd_declared_size) payload.set_compression(v1::COMPRESSION_ZSTD);
  return payload.SerializeAsString();
}

TEST(UpdateCodecTest, DecodeRejectsEveryMalformedInput) {
  v1::EncodedUpdate base;
  v1::EncodedTensor* t = base.add_tensors();
  t->set_name("w");
  t->set_codec(v1::CODEC_FLOAT32);
  t->add_shape(2);
  const float two[2] = {1.0f, 2.0f};
  t->set_values(std::string(reinterpret_cast<const char*>(two), 8));
  ASSERT_TRUE(DecodeUpdate(Wrap(base)).ok());

  struct Case {
    const char* name;
    std::string bytes;
    absl::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back(
      {"garbage", "\xff\xff\xff garbage", absl::StatusCode::kInvalidArgument});
  cases.push_back({"truncated", Wrap(base).substr(0, 10),
                   absl::StatusCode::kInvalidArgument});
  {
    v1::EncodedUpdate u = base;
    u.mutable_tensors(0)->set_values("abc");
    cases.push_back(
        {"size mismatch", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    u.mutable_tensors(0)->set_codec(static_cast<v1::Codec>(42));
    cases.push_back(
        {"unknown codec", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    const float bad[2] = {1.0f, std::numeric_limits<float>::infinity()};
    u.mutable_tensors(0)->set_values(
        std::string(reinterpret_cast<const char*>(bad), 8));
    cases.push_back({"infinity", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    u.mutable_tensors(0)->set_shape(0, -2);
    cases.push_back(
        {"negative dim", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    u.mutable_tensors(0)->set_shape(0, 1LL << 40);
    cases.push_back(
        {"huge declared shape", Wrap(u), absl::StatusCode::kResourceExhausted});
  }
  cases.push_back({"oversized declared payload", Wrap(base, false, 1LL << 40),
                   absl::StatusCode::kResourceExhausted});
  cases.push_back({"not a zstd frame", Wrap(base, true),
                   absl::StatusCode::kInvalidArgument});
  {
    v1::EncodedUpdate u = base;
    *u.add_tensors() = base.tensors(0);
    cases.push_back(
        {"duplicate name", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    v1::EncodedTensor* k = u.mutable_tensors(0);
    k->set_codec(v1::CODEC_TOPK);
    k->set_values_dtype(v1::DTYPE_FLOAT32);
    const uint32_t idx[2] = {1, 0};  // Not ascending.
    k->set_indices(std::string(reinterpret_cast<const char*>(idx), 8));
    cases.push_back({"unsorted top-k indices", Wrap(u),
                     absl::StatusCode::kInvalidArgument});
    const uint32_t far[2] = {0, 7};  // Out of range.
    k->set_indices(std::string(reinterpret_cast<const char*>(far), 8));
    cases.push_back({"top-k index out of range", Wrap(u),
                     absl::StatusCode::kInvalidArgument});
  }
  {
    v1::EncodedUpdate u = base;
    v1::EncodedTensor* q = u.mutable_tensors(0);
    q->set_codec(v1::CODEC_INT8_ROW);
    q->set_values(std::string("\x01\x02", 2));
    const float scale = -1.0f;
    q->set_scales(std::string(reinterpret_cast<const char*>(&scale), 4));
    q->set_scales_dtype(v1::DTYPE_FLOAT32);
    cases.push_back(
        {"negative int8 scale", Wrap(u), absl::StatusCode::kInvalidArgument});
    q->set_scales("");
    cases.push_back(
        {"missing int8 scales", Wrap(u), absl::StatusCode::kInvalidArgument});
  }
  for (const Case& c : cases) {
    absl::StatusOr<NamedTensors> decoded = DecodeUpdate(c.bytes);
    ASSERT_FALSE(decoded.ok()) << c.name;
    EXPECT_EQ(decoded.status().code(), c.code)
        << c.name << ": " << decoded.status();
  }
}

// EncodeUpdate writes the large fields itself; what it writes must still be
// the messages protobuf reads, field for field.
TEST(UpdateCodecTest, EncodedPayloadsAreOrdinaryProtobuf) {
  const NamedTensors update = LoraLikeUpdate();
  for (Codec codec :
       {Codec::kFloat32, Codec::kFloat16, Codec::kInt8Row, Codec::kTopK}) {
    for (bool zstd : {false, true}) {
      CodecOptions options;
      options.codec = codec;
      options.zstd = zstd;
      absl::StatusOr<EncodedPayload> encoded = EncodeUpdate(update, options);
      ASSERT_TRUE(encoded.ok()) << encoded.status();
      v1::CompressedPayload payload;
      ASSERT_TRUE(payload.ParseFromString(encoded->bytes));
      ASSERT_EQ(payload.compression(),
                zstd ? v1::COMPRESSION_ZSTD : v1::COMPRESSION_NONE);
      if (zstd) continue;  // The frame's contents were checked unzipped.
      ASSERT_EQ(payload.uncompressed_bytes(),
                static_cast<int64_t>(payload.data().size()));
      v1::EncodedUpdate parsed;
      ASSERT_TRUE(parsed.ParseFromString(payload.data()));
      ASSERT_EQ(parsed.tensors_size(), static_cast<int>(update.size()));
      // Re-serialized by protobuf (its own field order), it decodes to the
      // same tensors as the hand-written bytes.
      absl::StatusOr<NamedTensors> mine = DecodeUpdate(encoded->bytes);
      absl::StatusOr<NamedTensors> theirs =
          DecodeUpdate(payload.SerializeAsString());
      ASSERT_TRUE(mine.ok()) << mine.status();
      ASSERT_TRUE(theirs.ok()) << theirs.status();
      for (const v1::EncodedTensor& t : parsed.tensors()) {
        const at::Tensor& original = update[t.name()];
        EXPECT_EQ(t.codec(), CodecToProto(codec)) << t.name();
        EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                  original.sizes().vec())
            << t.name();
        if (codec == Codec::kFloat32) {
          EXPECT_EQ(t.values(),
                    std::string(static_cast<const char*>(original.data_ptr()),
                                original.nbytes()))
              << t.name();
        }
        EXPECT_TRUE(torch::equal((*mine)[t.name()], (*theirs)[t.name()]))
            << t.name();
      }
    }
  }
}

// The decoder reads the payload in place: no prefix of a valid payload may
// yield tensors, crash or read past its end (ASan checks the last). A
// prefix that ends before the data is a well-formed empty update.
TEST(UpdateCodecTest, NoTruncationDecodesToTensors) {
  NamedTensors update;
  update.insert("w", torch::randn({3, 5}));
  update.insert("b", torch::randn({5}));
  for (Codec codec : {Codec::kFloat32, Codec::kInt8Row, Codec::kTopK}) {
    CodecOptions options;
    options.codec = codec;
    options.zstd = false;
    options.topk_fraction = 0.5;
    absl::StatusOr<EncodedPayload> encoded = EncodeUpdate(update, options);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    ASSERT_TRUE(DecodeUpdate(encoded->bytes).ok());
    int refused = 0;
    for (size_t n = 1; n < encoded->bytes.size(); ++n) {
      absl::StatusOr<NamedTensors> decoded =
          DecodeUpdate(encoded->bytes.substr(0, n));
      EXPECT_TRUE(!decoded.ok() || decoded->is_empty())
          << CodecName(codec) << ", " << n << " bytes";
      refused += decoded.ok() ? 0 : 1;
    }
    EXPECT_GT(refused, static_cast<int>(encoded->bytes.size()) - 8);
  }
}

TEST(UpdateCodecTest, TheTasksCodecAndCompressionBind) {
  const NamedTensors update = LoraLikeUpdate();
  CodecOptions task;  // int8_row + zstd.
  CodecOptions sent = task;
  sent.codec = Codec::kFloat32;
  const std::string float32 = EncodeUpdate(update, sent)->bytes;
  const absl::Status codec = DecodeUpdate(float32, {}, &task).status();
  EXPECT_EQ(codec.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(codec.message().find("encoded as CODEC_FLOAT32, but the task "
                                 "asks for CODEC_INT8_ROW"),
            std::string::npos)
      << codec;
  EXPECT_TRUE(DecodeUpdate(float32).ok());  // Without a task: any codec.

  sent = task;
  sent.zstd = false;
  const absl::Status compression =
      DecodeUpdate(EncodeUpdate(update, sent)->bytes, {}, &task).status();
  EXPECT_EQ(compression.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(compression.message().find("COMPRESSION_NONE"), std::string::npos);
  EXPECT_TRUE(DecodeUpdate(EncodeUpdate(update, task)->bytes, {}, &task).ok());
}

TEST(UpdateCodecTest, Int8OutsideItsRangeIsRefused) {
  v1::EncodedUpdate encoded;
  v1::EncodedTensor* e = encoded.add_tensors();
  e->set_name("w");
  e->set_codec(v1::CODEC_INT8_ROW);
  e->add_shape(2);
  e->set_values(std::string("\x80\x01", 2));  // -128, 1
  const float scale = 0.5f;
  e->set_scales(std::string(reinterpret_cast<const char*>(&scale), 4));
  v1::CompressedPayload payload;
  payload.set_compression(v1::COMPRESSION_NONE);
  payload.set_data(encoded.SerializeAsString());
  payload.set_uncompressed_bytes(static_cast<int64_t>(payload.data().size()));
  const absl::Status s = DecodeUpdate(payload.SerializeAsString()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("[-127, 127]"), std::string::npos) << s;
}

TEST(UpdateCodecTest, OnlyTopKCarriesAChange) {
  EXPECT_TRUE(CarriesChange(Codec::kTopK));
  for (Codec c :
       {Codec::kFloat32, Codec::kFloat16, Codec::kBFloat16, Codec::kInt8Row}) {
    EXPECT_FALSE(CarriesChange(c)) << CodecName(c);
  }
  NamedTensors sent;
  sent.insert("a", torch::ones({2, 3}));
  NamedTensors trained;
  trained.insert("a", torch::full({2, 3}, 1.5));
  absl::StatusOr<NamedTensors> change =
      UpdateToSend(trained, sent, Codec::kTopK);
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_TRUE(torch::equal((*change)["a"], torch::full({2, 3}, 0.5)));
  absl::StatusOr<NamedTensors> values =
      UpdateToSend(trained, sent, Codec::kInt8Row);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_TRUE(torch::equal((*values)["a"], trained["a"]));
  trained.insert("b", torch::ones({1}));
  EXPECT_EQ(UpdateToSend(trained, sent, Codec::kTopK).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UpdateCodecTest, CodecsRoundTripThroughTheWireEnum) {
  for (Codec c : {Codec::kFloat32, Codec::kFloat16, Codec::kBFloat16,
                  Codec::kInt8Row, Codec::kTopK}) {
    EXPECT_EQ(CodecFromProto(CodecToProto(c)), c);
  }
  EXPECT_EQ(CodecFromProto(v1::CODEC_UNSPECIFIED), Codec::kInt8Row);
}

}  // namespace
}  // namespace fedge::transport
