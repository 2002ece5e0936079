#include "transport/shaping_proxy.h"

#include <unistd.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include <grpcpp/grpcpp.h>

#include "transport/channel_options.h"
#include "transport/transfer_service.h"
#include <netinet/in.h>
#include <sys/socket.h>

namespace fedge::transport {
namespace {

// A TCP echo server on 127.0.0.1 for one connection at a time.
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 4);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buffer[65536];
      ssize_t n;
      while ((n = ::read(c, buffer, sizeof(buffer))) > 0) {
        if (::send(c, buffer, n, MSG_NOSIGNAL) != n) break;
      }
      ::close(c);
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  int fd_;
  int port_;
  std::thread thread_;
};

int ConnectTo(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Sends `payload` and reads the echo back; returns the seconds taken.
double RoundTrip(int fd, const std::string& payload, std::string* echo) {
  const auto start = std::chrono::steady_clock::now();
  std::thread writer([&] {
    size_t sent = 0;
    while (sent < payload.size()) {
      const ssize_t n = ::send(fd, payload.data() + sent, payload.size() - sent,
                               MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += n;
    }
  });
  char buffer[65536];
  while (echo->size() < payload.size()) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    echo->append(buffer, n);
  }
  writer.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

TEST(ShapingProxyTest, ForwardsBytesIntactBothWays) {
  EchoServer echo;
  auto proxy = ShapingProxy::Start("127.0.0.1", echo.port(), ShapingOptions());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::string payload(1 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<char>(i * 31 + 7);
  const int fd = ConnectTo((*proxy)->port());
  std::string back;

  RoundTrip(fd, payload, &back);

  ::close(fd);
  EXPECT_EQ(back, payload);
  // The proxy counts a piece after send() returns, which can be after the
  // echo has already reached us: wait for the counters to settle, then check
  // they settled on exactly the payload (never more).
  const int64_t size = static_cast<int64_t>(payload.size());
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (((*proxy)->bytes_up() < size || (*proxy)->bytes_down() < size) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ((*proxy)->bytes_up(), size);
  EXPECT_EQ((*proxy)->bytes_down(), size);
}

TEST(ShapingProxyTest, NeverFasterThanTheBucketAndTheDelay) {
  // Lower bounds only: a loaded machine can make the transfer slower, never
  // faster, so these cannot fail from noise.
  EchoServer echo;
  ShapingOptions options;
  options.uplink_bytes_per_s = 2e6;
  options.downlink_bytes_per_s = 4e6;
  options.one_way_delay = absl::Milliseconds(40);
  auto proxy = *ShapingProxy::Start("127.0.0.1", echo.port(), options);
  const std::string payload(1000000, 'z');
  const int fd = ConnectTo(proxy->port());
  std::string back;

  const double seconds = RoundTrip(fd, payload, &back);

  ::close(fd);
  ASSERT_EQ(back.size(), payload.size());
  // Up at 2 MB/s dominates: (1 MB - one burst) / 2 MB/s, plus two delays.
  EXPECT_GE(seconds, (1e6 - options.burst_bytes) / 2e6 + 0.08 - 0.005);
}

TEST(MeasureLinkTest, SizesThePayloadsAndNeverReportsAFasterLink) {
  LinkProfile link{"test", 16, 32, absl::Milliseconds(20)};

  absl::StatusOr<LinkCheck> check = MeasureLink(link, 0.25);

  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->link, "test");
  EXPECT_EQ(check->bytes_up, 500000);  // 0.25 s at 2 MB/s.
  EXPECT_EQ(check->bytes_down, 1000000);
  EXPECT_EQ(check->uplink_mbps, 16);
  EXPECT_EQ(check->downlink_mbps, 32);
  // Upper bounds only (load can slow the emulator, never speed it up): one
  // bucket of burst is all it can run ahead.
  EXPECT_GT(check->achieved_uplink_mbps, 0);
  EXPECT_LE(check->achieved_uplink_mbps, 16 * 1.05);
  EXPECT_GT(check->achieved_downlink_mbps, 0);
  EXPECT_LE(check->achieved_downlink_mbps, 32 * 1.05);
  EXPECT_GE(check->max_error, 0);
}

TEST(MeasureLinkTest, AProfileWithoutARateIsRefused) {
  EXPECT_EQ(MeasureLink(LinkProfile{"none", 0, 10, absl::ZeroDuration()})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ShapingProxyTest, GrpcDownloadThroughACutLinkResumes) {
  TransferStore store;
  std::string bytes(3 << 20, 'q');
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<char>(i % 251);
  auto source = std::make_shared<StringSource>(bytes);
  store.Offer(
      *DescribePayload(*source, "model", 0, PayloadFormat::kSafetensors),
      source);
  TransferService service(&store);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ShapingOptions slow;
  slow.downlink_bytes_per_s = 8e6;
  slow.uplink_bytes_per_s = 8e6;
  auto proxy = *ShapingProxy::Start("127.0.0.1", port, slow);
  ChannelOptions channel_options;
  channel_options.min_reconnect_backoff = absl::Milliseconds(50);
  channel_options.max_reconnect_backoff = absl::Milliseconds(200);
  auto channel =
      *CreateClientChannel(proxy->address(), channel_options, TlsFiles());
  auto stub = v1::Coordinator::NewStub(channel);
  RetryPolicy retry;
  retry.initial_backoff = absl::Milliseconds(50);
  TransferClient client(stub.get(), retry);
  // Cut the link once, a third of the way through (~0.13 s at 8 MB/s).
  std::thread cutter([&] {
    while (proxy->bytes_down() < static_cast<int64_t>(bytes.size() / 3)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    proxy->CutAll();
  });

  StringSink sink;
  absl::StatusOr<TransferStats> stats =
      client.Download("d", "model", 64 * 1024, &sink);

  cutter.join();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(sink.bytes(), bytes);
  EXPECT_GE(stats->resumes, 1);
  EXPECT_EQ(stats->bytes,
            static_cast<int64_t>(bytes.size()));  // Nothing twice.
  server->Shutdown();
}

TEST(LinkProfileTest, BuiltinsAndOverrides) {
  absl::StatusOr<LinkProfile> g = ParseLinkProfile("5g-sa");
  ASSERT_TRUE(g.ok());
  EXPECT_DOUBLE_EQ(g->uplink_mbps, 28);
  EXPECT_EQ(g->rtt, absl::Milliseconds(15));
  absl::StatusOr<LinkProfile> custom = ParseLinkProfile("wifi:300/200/6");
  ASSERT_TRUE(custom.ok()) << custom.status();
  EXPECT_DOUBLE_EQ(custom->downlink_bytes_per_s(), 25e6);
  EXPECT_FALSE(ParseLinkProfile("carrier-pigeon").ok());
  EXPECT_FALSE(ParseLinkProfile("wifi:1/2").ok());
  EXPECT_FALSE(ParseLinkProfile("wifi:0/2/3").ok());
  // 10 MB up a 10 Mbit/s LTE link: 8 s plus one RTT.
  EXPECT_EQ(IdealTransferTime(*ParseLinkProfile("lte"), 10000000, true),
            absl::Seconds(8) + absl::Milliseconds(40));
}

}  // namespace
}  // namespace fedge::transport
