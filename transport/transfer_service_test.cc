#include "transport/transfer_service.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <grpcpp/grpcpp.h>
#include <torch/types.h>

#include "transport/channel_options.h"
#include "transport/status_convert.h"

namespace fedge::transport {
namespace {

model::NamedTensors SomeTensors() {
  torch::manual_seed(0);
  model::NamedTensors t;
  t.insert("w", torch::randn({64, 100}));
  t.insert("b", torch::randn({77}).to(torch::kFloat16));
  return t;
}

using ::testing::HasSubstr;

// Sends `chunks` as one Upload stream; its final status (and response).
absl::Status SendUpload(v1::Coordinator::Stub& stub,
                        const std::vector<v1::Chunk>& chunks,
                        v1::UploadResponse* out = nullptr) {
  grpc::ClientContext context;
  v1::UploadResponse response;
  auto writer = stub.Upload(&context, out != nullptr ? out : &response);
  for (const v1::Chunk& c : chunks) {
    if (!writer->Write(c)) break;
  }
  writer->WritesDone();
  return FromGrpcStatus(writer->Finish());
}

// Fails one Read at or after `fail_at` bytes with UNAVAILABLE, as a broken
// connection would, then serves normally.
class FlakySource final : public PayloadSource {
 public:
  FlakySource(const PayloadSource* inner, int64_t fail_at)
      : inner_(inner), fail_at_(fail_at) {}
  int64_t size() const override { return inner_->size(); }
  absl::Status Read(int64_t offset, absl::Span<char> out) const override {
    if (!failed_ && offset + static_cast<int64_t>(out.size()) > fail_at_) {
      failed_ = true;
      return absl::UnavailableError("connection reset (injected)");
    }
    first_offsets_.push_back(offset);
    return inner_->Read(offset, out);
  }
  mutable bool failed_ = false;
  mutable std::vector<int64_t> first_offsets_;

 private:
  const PayloadSource* inner_;
  const int64_t fail_at_;
};

// The bytes of a ByteBuffer, joined.
std::string Joined(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

TEST(EncodeChunkTest, IsTheMessagesOwnSerializationFromMemoryOrARead) {
  std::shared_ptr<const SafetensorsSource> tensors =
      *SafetensorsSource::Create(SomeTensors());
  // Only Read: the copying path.
  auto read_only =
      std::make_shared<FlakySource>(tensors.get(), tensors->size());
  const TransferInfo info = *DescribePayload(*tensors, "round-1.0/d/model", 3,
                                             PayloadFormat::kSafetensors);
  const int64_t size = tensors->size();
  for (const std::shared_ptr<const PayloadSource>& source :
       std::vector<std::shared_ptr<const PayloadSource>>{tensors, read_only}) {
    // The header's bytes, tensors' boundaries, the end, an empty chunk.
    for (auto [offset, length] :
         std::vector<std::pair<int64_t, int64_t>>{{0, size},
                                                  {0, 10},
                                                  {5, 200},
                                                  {100, 25700},
                                                  {size - 3, 3},
                                                  {size, 0},
                                                  {0, 0}}) {
      for (const TransferInfo* header : {&info, (const TransferInfo*)nullptr}) {
        v1::Chunk expected;
        if (header != nullptr) ToProto(*header, expected.mutable_header());
        expected.set_offset(offset);
        std::string data(length, '\0');
        ASSERT_TRUE(tensors->Read(offset, absl::MakeSpan(data)).ok());
        expected.set_data(data);

        absl::StatusOr<grpc::ByteBuffer> got =
            EncodeChunk(header, offset, length, source);

        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(Joined(*got), expected.SerializeAsString())
            << offset << "+" << length;
      }
    }
  }
  EXPECT_EQ(EncodeChunk(nullptr, size - 2, 3, tensors).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(EncodeChunk(nullptr, -1, 1, tensors).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST(EncodeChunkTest, SlicesOfTheSourceKeepItAliveUntilGrpcLetsGo) {
  std::shared_ptr<const PayloadSource> source =
      *SafetensorsSource::Create(SomeTensors());
  const std::weak_ptr<const PayloadSource> watch = source;
  std::string expected(source->size(), '\0');
  ASSERT_TRUE(source->Read(0, absl::MakeSpan(expected)).ok());

  auto chunk = std::make_unique<grpc::ByteBuffer>(
      *EncodeChunk(nullptr, 0, source->size(), source));
  source.reset();
  ASSERT_FALSE(watch.expired());
  v1::Chunk parsed;
  ASSERT_TRUE(parsed.ParseFromString(Joined(*chunk)));
  EXPECT_EQ(parsed.data(), expected);
  chunk.reset();
  EXPECT_TRUE(watch.expired());
}

// Every test runs twice: uploads staged in memory, and in files.
class TransferServiceTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    ConfigureServer(ChannelOptions(), builder);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    channel_ =
        server_->InProcessChannel(ClientChannelArguments(ChannelOptions()));
    stub_ = v1::Coordinator::NewStub(channel_);
  }
  void TearDown() override { server_->Shutdown(); }

  RetryPolicy FastRetry() {
    RetryPolicy retry;
    retry.initial_backoff = absl::Milliseconds(1);
    return retry;
  }

  static UploadStaging Staging(bool on_disk) {
    UploadStaging staging;
    if (on_disk) {
      staging.dir = ::testing::TempDir();
      staging.min_bytes = 1;
    }
    return staging;
  }

  TransferStore store_{AssemblerLimits(), /*expected_uploads_only=*/false,
                       Staging(GetParam())};
  TransferService service_{&store_};
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST(TransferServiceBaseTest, EveryRpcIsACallbackOne) {
  TransferStore store;
  TransferService service(&store);
  EXPECT_FALSE(service.has_synchronous_methods());
  EXPECT_TRUE(service.has_callback_methods());
}

TEST_P(TransferServiceTest, DownloadsTensorsInChunks) {
  const model::NamedTensors tensors = SomeTensors();
  std::shared_ptr<SafetensorsSource> source =
      *SafetensorsSource::Create(tensors);
  store_.Offer(
      *DescribePayload(*source, "model", 0, PayloadFormat::kSafetensors),
      source);
  TransferClient client(stub_.get(), FastRetry());

  TransferStats stats;
  absl::StatusOr<model::NamedTensors> got =
      client.DownloadTensors("d", "model", 4096, &stats);

  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(torch::equal((*got)["w"], tensors["w"]));
  EXPECT_TRUE(torch::equal((*got)["b"], tensors["b"]));
  EXPECT_EQ(stats.bytes, source->size());
  EXPECT_EQ(stats.resumes, 0);
}

TEST_P(TransferServiceTest, BrokenDownloadResumesFromTheCommittedOffset) {
  const model::NamedTensors tensors = SomeTensors();
  std::shared_ptr<SafetensorsSource> inner =
      *SafetensorsSource::Create(tensors);
  auto flaky = std::make_shared<FlakySource>(inner.get(), inner->size() / 2);
  store_.Offer(
      *DescribePayload(*inner, "model", 0, PayloadFormat::kSafetensors), flaky);
  TransferClient client(stub_.get(), FastRetry());

  TransferStats stats;
  absl::StatusOr<model::NamedTensors> got =
      client.DownloadTensors("d", "model", 1000, &stats);

  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(torch::equal((*got)["w"], tensors["w"]));
  EXPECT_EQ(stats.resumes, 1);
  // Nothing was sent twice: the second stream began where the first ended.
  EXPECT_EQ(stats.bytes, inner->size());
  std::vector<int64_t> offsets = flaky->first_offsets_;
  EXPECT_TRUE(std::is_sorted(offsets.begin(), offsets.end()));
  EXPECT_EQ(std::adjacent_find(offsets.begin(), offsets.end()), offsets.end());
}

TEST_P(TransferServiceTest, UnknownDownloadIsNotFound) {
  TransferClient client(stub_.get(), FastRetry());
  EXPECT_EQ(client.DownloadTensors("d", "nope", 1000).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(TransferServiceTest, UploadResumesAfterAPartialStream) {
  std::string payload(50000, '\0');
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<char>(i * 7);
  StringSource source(payload);
  const TransferInfo info =
      *DescribePayload(source, "update-1", 123, PayloadFormat::kEncodedUpdate);
  // A first stream that dies after 20000 bytes.
  {
    grpc::ClientContext context;
    v1::UploadResponse response;
    auto writer = stub_->Upload(&context, &response);
    for (int64_t offset = 0; offset < 20000; offset += 10000) {
      v1::Chunk chunk;
      if (offset == 0) ToProto(info, chunk.mutable_header());
      chunk.set_offset(offset);
      chunk.set_data(payload.substr(offset, 10000));
      ASSERT_TRUE(writer->Write(chunk));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(response.committed_bytes(), 20000);
  }
  TransferClient client(stub_.get(), FastRetry());

  absl::StatusOr<TransferStats> stats = client.Upload("d", info, source, 8192);

  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->bytes, 30000);  // Only the missing part crossed.
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> received =
      store_.CompletedUpload("update-1");
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ((*received)->view(), payload);
  // Kept until dropped: a refused submission must not destroy it.
  EXPECT_TRUE(store_.CompletedUpload("update-1").ok());
  store_.DropUpload("update-1");
  EXPECT_EQ(store_.CompletedUpload("update-1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(TransferServiceTest, IncompleteUploadSaysHowFarItGot) {
  StringSource source(std::string(1000, 'a'));
  const TransferInfo info =
      *DescribePayload(source, "half", 0, PayloadFormat::kEncodedUpdate);
  v1::Chunk first;
  ToProto(info, first.mutable_header());
  first.set_data(std::string(400, 'a'));
  v1::UploadResponse response;
  // A stream closed early is not an error: it commits what it carried.
  ASSERT_TRUE(SendUpload(*stub_, {first}, &response).ok());
  EXPECT_EQ(response.committed_bytes(), 400);

  const absl::Status incomplete = store_.CompletedUpload("half").status();
  EXPECT_EQ(incomplete.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(incomplete.message(), HasSubstr("400 of 1000 bytes"));
}

TEST_P(TransferServiceTest, ADifferentHeaderStartsTheUploadOver) {
  StringSource a(std::string(1000, 'a'));
  StringSource b(std::string(500, 'b'));
  const TransferInfo info_a =
      *DescribePayload(a, "up", 0, PayloadFormat::kEncodedUpdate);
  const TransferInfo info_b =
      *DescribePayload(b, "up", 0, PayloadFormat::kEncodedUpdate);
  TransferClient client(stub_.get(), FastRetry());
  ASSERT_TRUE(client.Upload("d", info_a, a, 300).ok());
  // The device re-encoded its update (after a refusal or a restart).
  ASSERT_TRUE(client.Upload("d", info_b, b, 300).ok());

  EXPECT_EQ((*store_.CompletedUpload("up"))->view(), std::string(500, 'b'));
  // Uploading a complete payload again sends nothing and succeeds.
  absl::StatusOr<TransferStats> again = client.Upload("d", info_b, b, 300);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->bytes, 0);
}

TEST_P(TransferServiceTest, AnUploadIsNeverSafetensors) {
  StringSource source(std::string(10, 'a'));
  const TransferInfo info =
      *DescribePayload(source, "st", 0, PayloadFormat::kSafetensors);
  v1::Chunk chunk;
  ToProto(info, chunk.mutable_header());
  chunk.set_data(std::string(10, 'a'));
  const absl::Status status = SendUpload(*stub_, {chunk});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("PAYLOAD_FORMAT_ENCODED_UPDATE"));
}

TEST_P(TransferServiceTest, UploadRejectsBadStreams) {
  StringSource source(std::string(1000, 'a'));
  TransferInfo info =
      *DescribePayload(source, "u", 0, PayloadFormat::kEncodedUpdate);
  auto send = [&](const std::vector<v1::Chunk>& chunks) {
    return SendUpload(*stub_, chunks);
  };
  v1::Chunk headerless;
  headerless.set_data("abc");
  EXPECT_EQ(send({headerless}).code(), absl::StatusCode::kInvalidArgument);

  v1::Chunk oversized;
  TransferInfo huge = info;
  huge.transfer_id = "huge";
  huge.total_bytes = 1LL << 50;
  ToProto(huge, oversized.mutable_header());
  EXPECT_EQ(send({oversized}).code(), absl::StatusCode::kResourceExhausted);

  v1::Chunk gap;
  ToProto(info, gap.mutable_header());
  gap.set_offset(500);
  gap.set_data("x");
  EXPECT_EQ(send({gap}).code(), absl::StatusCode::kInvalidArgument);

  // Complete but corrupted: Upload itself says so, and drops it.
  v1::Chunk corrupt;
  TransferInfo other = info;
  other.transfer_id = "corrupt";
  ToProto(other, corrupt.mutable_header());
  corrupt.set_data(std::string(999, 'a') + "b");
  EXPECT_EQ(send({corrupt}).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_.CompletedUpload("corrupt").status().code(),
            absl::StatusCode::kNotFound);
}

// A coordinator-like store: only announced uploads, each of a bounded size
// from one owner; stalled streams cancelled after 300 ms.
INSTANTIATE_TEST_SUITE_P(Staging, TransferServiceTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Disk" : "Memory";
                         });

TEST(TransferStoreTest, AStagingDirectoryThatCannotTakeFilesIsUnavailable) {
  TransferStore store(AssemblerLimits(), /*expected_uploads_only=*/false,
                      UploadStaging{"/nonexistent/fedge-staging", 1000});
  StringSource large(std::string(1000, 'a'));
  StringSource small(std::string(999, 'b'));

  const absl::Status refused = store.BeginUpload(
      *DescribePayload(large, "large", 0, PayloadFormat::kEncodedUpdate));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.message(), HasSubstr("/nonexistent/fedge-staging"));
  // Below the threshold an upload stays in memory.
  EXPECT_TRUE(store
                  .BeginUpload(*DescribePayload(small, "small", 0,
                                                PayloadFormat::kEncodedUpdate))
                  .ok());
}

class GuardedTransferTest : public ::testing::Test {
 protected:
  // Allows an upload only when the test's `caller` is its owner.
  class Service final : public TransferService {
   public:
    using TransferService::TransferService;
    absl::Status AuthorizeUpload(grpc::CallbackServerContext*,
                                 const std::string& owner) const override {
      if (owner == caller) return absl::OkStatus();
      return absl::PermissionDeniedError(caller + " is not " + owner);
    }
    std::string caller = "dev-a";
  };

  void SetUp() override {
    grpc::ServerBuilder builder;
    ConfigureServer(ChannelOptions(), builder);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = v1::Coordinator::NewStub(
        server_->InProcessChannel(ClientChannelArguments(ChannelOptions())));
  }
  void TearDown() override { server_->Shutdown(); }

  absl::Status Send(const std::vector<v1::Chunk>& chunks) {
    return SendUpload(*stub_, chunks);
  }
  static v1::Chunk First(const TransferInfo& info, std::string data) {
    v1::Chunk chunk;
    ToProto(info, chunk.mutable_header());
    chunk.set_data(std::move(data));
    return chunk;
  }

  TransferStore store_{AssemblerLimits(), /*expected_uploads_only=*/true};
  Service service_{&store_, kDefaultChunkBytes, absl::Milliseconds(300)};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(GuardedTransferTest, OnlyAnnouncedUploadsOfTheirSizeFromTheirOwner) {
  StringSource source(std::string(1000, 'a'));
  const TransferInfo info = *DescribePayload(source, "round-1/dev-a/up", 0,
                                             PayloadFormat::kEncodedUpdate);

  EXPECT_EQ(Send({First(info, std::string(1000, 'a'))}).code(),
            absl::StatusCode::kNotFound);  // Not announced.
  store_.ExpectUpload(info.transfer_id, 999, "dev-a");
  EXPECT_EQ(Send({First(info, std::string(1000, 'a'))}).code(),
            absl::StatusCode::kResourceExhausted);  // Declares too much.
  store_.Withdraw("round-1/");
  store_.ExpectUpload(info.transfer_id, 1000, "dev-a");
  service_.caller = "dev-b";
  EXPECT_EQ(Send({First(info, std::string(1000, 'a'))}).code(),
            absl::StatusCode::kPermissionDenied);  // Someone else's.
  service_.caller = "dev-a";
  ASSERT_TRUE(Send({First(info, std::string(1000, 'a'))}).ok());
  EXPECT_EQ((*store_.CompletedUpload(info.transfer_id))->view(),
            std::string(1000, 'a'));

  store_.Withdraw("round-1/");  // The round closed: nothing more expected.
  EXPECT_EQ(Send({First(info, std::string(1000, 'a'))}).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(GuardedTransferTest, StalledUploadIsCancelledAndCanResume) {
  StringSource source(std::string(1000, 'a'));
  const TransferInfo info = *DescribePayload(source, "round-1/dev-a/up", 0,
                                             PayloadFormat::kEncodedUpdate);
  store_.ExpectUpload(info.transfer_id, 1000, "dev-a");
  // A slow-loris peer: a first chunk, then silence with the stream open.
  grpc::ClientContext context;
  v1::UploadResponse response;
  auto writer = stub_->Upload(&context, &response);
  ASSERT_TRUE(writer->Write(First(info, std::string(10, 'a'))));
  const absl::Time start = absl::Now();
  const absl::Status status = FromGrpcStatus(writer->Finish());

  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_EQ(service_.watchdog().cancelled(), 1);
  // The server's side of the call ends (OnDone) shortly after the client's.
  for (int i = 0; i < 200 && service_.watchdog().watched() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(service_.watchdog().watched(), 0);
  // The honest resumption carries on from what was committed.
  TransferClient client(stub_.get());
  absl::StatusOr<TransferStats> stats = client.Upload("d", info, source, 100);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->bytes, 990);
}

TEST_F(GuardedTransferTest, SlowButSteadyUploadIsNotCancelled) {
  StringSource source(std::string(1000, 'a'));
  const TransferInfo info = *DescribePayload(source, "round-1/dev-a/up", 0,
                                             PayloadFormat::kEncodedUpdate);
  store_.ExpectUpload(info.transfer_id, 1000, "dev-a");
  grpc::ClientContext context;
  v1::UploadResponse response;
  auto writer = stub_->Upload(&context, &response);
  // Ten chunks 100 ms apart: 1 s in all, never 300 ms without progress.
  for (int i = 0; i < 10; ++i) {
    v1::Chunk chunk;
    if (i == 0) ToProto(info, chunk.mutable_header());
    chunk.set_offset(i * 100);
    chunk.set_data(std::string(100, 'a'));
    ASSERT_TRUE(writer->Write(chunk));
    absl::SleepFor(absl::Milliseconds(100));
  }
  writer->WritesDone();
  ASSERT_TRUE(FromGrpcStatus(writer->Finish()).ok());
  EXPECT_EQ(service_.watchdog().cancelled(), 0);
  EXPECT_EQ((*store_.CompletedUpload(info.transfer_id))->view(),
            std::string(1000, 'a'));
}

// TLS over a real socket, with certificates from deploy/certs.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* src = std::getenv("FEDGE_TEST_SRCDIR");
    // One directory per process: ctest runs each test of this suite in its
    // own process, in parallel, and regenerated certificates must not
    // replace another process's while it uses them.
    dir_ = absl::StrCat(::testing::TempDir(), "/tls_certs_", ::getpid());
    const std::string script =
        absl::StrCat(src ? src : ".", "/deploy/certs/make_dev_certs.sh");
    ASSERT_EQ(
        std::system(
            absl::StrCat(script, " ", dir_, " device-0 >/dev/null").c_str()),
        0);
    ASSERT_EQ(std::system(
                  absl::StrCat(script, " ", dir_, "/rogue device-0 >/dev/null")
                      .c_str()),
              0);
  }

  static void TearDownTestSuite() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Starts a server and returns whether a download through a client with
  // `client_files` succeeds.
  absl::Status TryDownload(const TlsFiles& server_files,
                           const TlsFiles& client_files) {
    TransferStore store;
    std::shared_ptr<StringSource> source =
        std::make_shared<StringSource>("hello tls");
    store.Offer(*DescribePayload(*source, "p", 0, PayloadFormat::kSafetensors),
                source);
    TransferService service(&store);
    grpc::ServerBuilder builder;
    int port = 0;
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
        server_credentials = ServerCredentials(server_files);
    if (!server_credentials.ok()) return server_credentials.status();
    builder.AddListeningPort("127.0.0.1:0", *server_credentials, &port);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        CreateClientChannel(absl::StrCat("127.0.0.1:", port), ChannelOptions(),
                            client_files);
    if (!channel.ok()) return channel.status();
    auto stub = v1::Coordinator::NewStub(*channel);
    RetryPolicy once;
    once.max_attempts = 1;
    once.stream_deadline = absl::Seconds(5);
    TransferClient client(stub.get(), once);
    StringSink sink;
    absl::Status result =
        client.Download("device-0", "p", 1024, &sink).status();
    server->Shutdown();
    if (result.ok() && sink.bytes() != "hello tls")
      return absl::DataLossError("bytes differ");
    return result;
  }

  static std::string dir_;
};
std::string TlsTest::dir_;

TEST_F(TlsTest, TlsAcceptsTheRightServerAndRejectsAWrongCa) {
  const TlsFiles server{"", dir_ + "/server.pem", dir_ + "/server.key", false};
  EXPECT_TRUE(TryDownload(server, {dir_ + "/ca.pem", "", "", false}).ok());
  EXPECT_FALSE(
      TryDownload(server, {dir_ + "/rogue/ca.pem", "", "", false}).ok());
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheRightCa) {
  const TlsFiles server{dir_ + "/ca.pem", dir_ + "/server.pem",
                        dir_ + "/server.key", true};
  const std::string ca = dir_ + "/ca.pem";
  EXPECT_TRUE(TryDownload(server, {ca, dir_ + "/client-device-0.pem",
                                   dir_ + "/client-device-0.key", false})
                  .ok());
  EXPECT_FALSE(TryDownload(server, {ca, "", "", false}).ok());
  EXPECT_FALSE(TryDownload(server, {ca, dir_ + "/rogue/client-device-0.pem",
                                    dir_ + "/rogue/client-device-0.key", false})
                   .ok());
}

TEST_F(TlsTest, BadCredentialFilesGiveClearErrors) {
  EXPECT_EQ(
      ClientCredentials({"/nonexistent/ca.pem", "", "", false}).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(ClientCredentials(
                {dir_ + "/ca.pem", dir_ + "/client-device-0.pem", "", false})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ServerCredentials({"", dir_ + "/ca.srl", dir_ + "/server.key", false})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);  // Not a PEM file.
}

}  // namespace
}  // namespace fedge::transport
