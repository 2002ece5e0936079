#include "transport/transfer.h"

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/safetensors.h"

namespace fedge::transport {
namespace {

model::NamedTensors SomeTensors() {
  torch::manual_seed(0);
  model::NamedTensors t;
  t.insert("a", torch::randn({3, 5}));
  t.insert("empty", torch::zeros({0}));
  t.insert("b", torch::randint(0, 100, {7}, torch::kLong));
  t.insert("c", torch::randn({64, 33}).to(torch::kBFloat16));
  t.insert("transposed", torch::randn({4, 6}).t());
  return t;
}

// Streams `source` into a TensorSink-backed assembler in chunks of `chunk`.
absl::StatusOr<model::NamedTensors> Transfer(const PayloadSource& source,
                                             const TransferInfo& info,
                                             int64_t chunk) {
  auto sink = std::make_unique<TensorSink>();
  TensorSink* tensors = sink.get();
  absl::StatusOr<std::unique_ptr<ChunkAssembler>> assembler =
      ChunkAssembler::Create(info, std::move(sink));
  if (!assembler.ok()) return assembler.status();
  std::string buffer;
  for (int64_t offset = 0; offset < source.size(); offset += chunk) {
    buffer.resize(std::min(chunk, source.size() - offset));
    if (absl::Status s = source.Read(offset, absl::MakeSpan(buffer)); !s.ok())
      return s;
    if (absl::Status s = (*assembler)->Append(offset, buffer); !s.ok())
      return s;
  }
  if (absl::Status s = (*assembler)->Finish(); !s.ok()) return s;
  return tensors->Take();
}

TEST(TransferTest, SafetensorsSourceServesExactlyTheSerializedBytes) {
  const model::NamedTensors tensors = SomeTensors();
  auto source = SafetensorsSource::Create(tensors);
  ASSERT_TRUE(source.ok()) << source.status();
  absl::StatusOr<std::string> expected = model::SerializeSafetensors(tensors);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ((*source)->size(), static_cast<int64_t>(expected->size()));
  // Every range, including ones that straddle tensors and the header.
  for (int64_t offset : {0, 3, 100, 150, 170, 300}) {
    for (int64_t length : {1, 7, 64, 500}) {
      if (offset + length > (*source)->size()) continue;
      std::string got(length, '\0');
      ASSERT_TRUE((*source)->Read(offset, absl::MakeSpan(got)).ok());
      EXPECT_EQ(got, expected->substr(offset, length))
          << offset << "+" << length;
    }
  }
  std::string past(10, '\0');
  EXPECT_EQ((*source)->Read((*source)->size() - 5, absl::MakeSpan(past)).code(),
            absl::StatusCode::kOutOfRange);
}

TEST(TransferTest, ViewsAreTheSourcesOwnBytes) {
  const model::NamedTensors tensors = SomeTensors();
  auto source = *SafetensorsSource::Create(tensors);
  const std::string expected = *model::SerializeSafetensors(tensors);
  for (int64_t offset : {0, 3, 100, 150, 170, 300}) {
    for (int64_t length : {0, 1, 7, 64, 500}) {
      if (offset + length > source->size()) continue;
      std::vector<absl::string_view> pieces;
      ASSERT_TRUE(source->View(offset, length, &pieces));
      EXPECT_EQ(absl::StrJoin(pieces, ""), expected.substr(offset, length))
          << offset << "+" << length;
    }
  }
  // Not copies: a tensor's whole range is its own storage.
  const at::Tensor& a = tensors["a"];
  const size_t a_start = expected.find(
      std::string(static_cast<const char*>(a.data_ptr()), a.nbytes()));
  ASSERT_NE(a_start, std::string::npos);
  std::vector<absl::string_view> pieces;
  ASSERT_TRUE(source->View(a_start, a.nbytes(), &pieces));
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].data(), static_cast<const char*>(a.data_ptr()));

  std::vector<absl::string_view> none;
  EXPECT_FALSE(source->View(source->size() - 5, 10, &none));
  EXPECT_FALSE(source->View(-1, 1, &none));
  EXPECT_TRUE(none.empty());

  StringSource bytes("hello world");
  ASSERT_TRUE(bytes.View(6, 5, &none));
  EXPECT_EQ(none, std::vector<absl::string_view>{"world"});
  EXPECT_FALSE(bytes.View(7, 5, &none));
}

TEST(TransferTest, TensorsCrossInAnyChunkSize) {
  const model::NamedTensors tensors = SomeTensors();
  auto source = *SafetensorsSource::Create(tensors);
  absl::StatusOr<TransferInfo> info =
      DescribePayload(*source, "model-1", 0, PayloadFormat::kSafetensors, 100);
  ASSERT_TRUE(info.ok());
  for (int64_t chunk : {1, 7, 64, 1000, 1 << 20}) {
    absl::StatusOr<model::NamedTensors> got = Transfer(*source, *info, chunk);
    ASSERT_TRUE(got.ok()) << chunk << ": " << got.status();
    ASSERT_EQ(got->size(), tensors.size());
    for (const auto& item : tensors) {
      EXPECT_TRUE(torch::equal((*got)[item.key()], item.value().contiguous()))
          << item.key() << " chunk " << chunk;
    }
  }
}

TEST(TransferTest, InterruptedTransferResumesFromTheCommittedOffset) {
  const std::string payload(10000, 'x');
  StringSource source(payload);
  const TransferInfo info =
      *DescribePayload(source, "u-1", 0, PayloadFormat::kEncodedUpdate);
  auto assembler =
      *ChunkAssembler::Create(info, std::make_unique<StringSink>());
  // First stream dies after 3 chunks of 1000 and half of a fourth.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        assembler->Append(i * 1000, payload.substr(i * 1000, 1000)).ok());
  }
  // The resumed stream starts where the receiver says.
  const int64_t resume = assembler->committed();
  EXPECT_EQ(resume, 3000);
  EXPECT_EQ(assembler->Append(0, payload.substr(0, 1000)).code(),
            absl::StatusCode::kInvalidArgument);  // A restart is refused.
  for (int64_t offset = resume; offset < 10000; offset += 1500) {
    ASSERT_TRUE(
        assembler
            ->Append(offset, payload.substr(offset, std::min<int64_t>(
                                                        1500, 10000 - offset)))
            .ok());
  }
  ASSERT_TRUE(assembler->Finish().ok());
  EXPECT_EQ(static_cast<StringSink*>(assembler->sink())->bytes(), payload);
}

TEST(TransferTest, RejectsBadTransfers) {
  StringSource source(std::string(100, 'y'));
  TransferInfo info =
      *DescribePayload(source, "t", 0, PayloadFormat::kSafetensors);

  TransferInfo no_id = info;
  no_id.transfer_id.clear();
  EXPECT_FALSE(
      ChunkAssembler::Create(no_id, std::make_unique<StringSink>()).ok());
  TransferInfo short_digest = info;
  short_digest.sha256 = "abc";
  EXPECT_FALSE(
      ChunkAssembler::Create(short_digest, std::make_unique<StringSink>())
          .ok());
  TransferInfo huge = info;
  huge.total_bytes = 1LL << 50;
  EXPECT_EQ(ChunkAssembler::Create(huge, std::make_unique<StringSink>())
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);

  auto a = *ChunkAssembler::Create(info, std::make_unique<StringSink>());
  EXPECT_EQ(a->Append(5, "zz").code(),
            absl::StatusCode::kInvalidArgument);  // Gap.
  EXPECT_EQ(a->Append(0, std::string(101, 'y')).code(),
            absl::StatusCode::kInvalidArgument);  // Past the end.
  ASSERT_TRUE(a->Append(0, std::string(50, 'y')).ok());
  EXPECT_EQ(a->Finish().code(),
            absl::StatusCode::kFailedPrecondition);             // Incomplete.
  ASSERT_TRUE(a->Append(50, std::string(49, 'y') + "Z").ok());  // Corrupted.
  EXPECT_EQ(a->Finish().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(a->Finish().code(), absl::StatusCode::kDataLoss);  // Stays failed.

  AssemblerLimits small;
  small.max_chunk_bytes = 10;
  auto b = *ChunkAssembler::Create(info, std::make_unique<StringSink>(), small);
  EXPECT_EQ(b->Append(0, std::string(11, 'y')).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TransferTest, TensorSinkRejectsAMalformedHeader) {
  std::string bytes = *model::SerializeSafetensors(SomeTensors());
  bytes[12] = '!';  // Break the JSON.
  StringSource source(bytes);
  const TransferInfo info =
      *DescribePayload(source, "bad", 0, PayloadFormat::kEncodedUpdate);
  absl::StatusOr<model::NamedTensors> got = Transfer(source, info, 64);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument)
      << got.status();
}

}  // namespace
}  // namespace fedge::transport
