// Transport benchmarks (issue 4), printed as a table and `metric` lines:
//   throughput  a 100 MB payload over loopback gRPC (TransferService +
//               TransferClient, real TCP) vs raw TCP loopback, same process
//   codecs      bytes and encode/decode time of each update codec on a real
//               LoRA update (default ViT, rank 8, trained on Fashion-MNIST)
//   links       a 10 MB update uploaded through the shaping proxy for each
//               link profile vs the ideal bytes / bandwidth + RTT: the
//               first upload on a new connection (cold: HTTP/2's windows
//               and gRPC's start-up ride on it), then a second on the same
//               connection, as a device uploads each round (the
//               emulator's own error)
//   memory      a 300 MB tensor set downloaded into tensors: the receiver's
//               peak RSS beyond the tensors themselves, vs chunk x window
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include <grpcpp/grpcpp.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "bench/check.h"
#include "bench/task_bench.h"
#include "lora/lora.h"
#include "model/dataset.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "task/task_data.h"
#include "task/task_flags.h"
#include "transport/channel_options.h"
#include "transport/link_profile.h"
#include "transport/shaping_proxy.h"
#include "transport/transfer_service.h"
#include "transport/update_codec.h"
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

ABSL_FLAG(std::string, only, "",
          "Run one part: throughput, codecs, links, memory.");
ABSL_FLAG(int64_t, throughput_mb, 100, "Payload for the throughput part.");
ABSL_FLAG(int64_t, link_mb, 10, "Update size for the links part.");
ABSL_FLAG(int64_t, memory_mb, 300, "Tensor set for the memory part.");
ABSL_FLAG(int64_t, chunk_kb, 0,
          "Chunk size of the throughput and links parts (0: fedge's "
          "default, transport::kDefaultChunkBytes).");
ABSL_FLAG(int64_t, window_kb, -1,
          "HTTP/2 stream window for the throughput and memory parts (-1: "
          "fedge's default, 0: gRPC's adaptive BDP-probed window).");

namespace ft = fedge::transport;
namespace fm = fedge::model;

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

using fedge::bench::Check;

double RssMib() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f && std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  if (f) std::fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024.0) / 1024.0;
}

// Copies the payload into a preallocated buffer, like the TCP baseline.
class BufferSink final : public ft::ChunkSink {
 public:
  void Begin(const ft::TransferInfo& info) override {
    buffer.resize(info.total_bytes);
  }
  absl::Status Write(int64_t offset, absl::string_view data) override {
    std::memcpy(buffer.data() + offset, data.data(), data.size());
    return absl::OkStatus();
  }
  std::string buffer;
};

int64_t ChunkBytes() {
  const int64_t kb = absl::GetFlag(FLAGS_chunk_kb);
  return kb > 0 ? kb * 1024 : ft::kDefaultChunkBytes;
}

ft::ChannelOptions BenchChannel() {
  ft::ChannelOptions options;
  if (absl::GetFlag(FLAGS_window_kb) >= 0) {
    options.stream_window_bytes = absl::GetFlag(FLAGS_window_kb) * 1024;
  }
  return options;
}

struct Server {
  ft::TransferStore store;
  ft::TransferService service{&store};
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  explicit Server(const ft::ChannelOptions& options = {}) {
    grpc::ServerBuilder builder;
    ft::ConfigureServer(options, builder);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~Server() { server->Shutdown(); }
};

// Raw TCP loopback moving the same payload: sent from it, received into a
// buffer of its size (what a transfer must do at the least).
double RawTcpMbPerS(const std::string& payload) {
  const auto bytes = static_cast<int64_t>(payload.size());
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(listener, 1);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &length);
  std::thread sender([&] {
    const int c = ::accept(listener, nullptr, nullptr);
    for (int64_t sent = 0; sent < bytes;) {
      const ssize_t n =
          ::send(c, payload.data() + sent,
                 std::min<int64_t>(1 << 20, bytes - sent), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += n;
    }
    ::close(c);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const auto start = Clock::now();
  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  std::string buffer(bytes, '\0');
  int64_t received = 0;
  ssize_t n;
  while (received < bytes &&
         (n = ::read(fd, buffer.data() + received,
                     std::min<int64_t>(1 << 20, bytes - received))) > 0) {
    received += n;
  }
  const double seconds = Since(start);
  sender.join();
  ::close(fd);
  ::close(listener);
  return received / 1e6 / seconds;
}

void Throughput() {
  const int64_t bytes = absl::GetFlag(FLAGS_throughput_mb) * 1000000;
  Server server(BenchChannel());
  std::string payload(bytes, '\0');
  for (int64_t i = 0; i < bytes; i += 4096)
    payload[i] = static_cast<char>(i >> 12);
  auto source = std::make_shared<ft::StringSource>(payload);
  server.store.Offer(Check(ft::DescribePayload(
                         *source, "model", 0, ft::PayloadFormat::kSafetensors)),
                     source);
  auto channel = Check(ft::CreateClientChannel(
      absl::StrCat("127.0.0.1:", server.port), BenchChannel(), ft::TlsFiles()));
  auto stub = fedge::v1::Coordinator::NewStub(channel);
  ft::TransferClient client(stub.get());
  double best_grpc = 0, best_tcp = 0;
  for (int round = 0; round < 3; ++round) {
    BufferSink sink;
    const auto start = Clock::now();
    Check(client.Download("bench", "model", ChunkBytes(), &sink));
    best_grpc = std::max(best_grpc, bytes / 1e6 / Since(start));
    best_tcp = std::max(best_tcp, RawTcpMbPerS(payload));
  }
  std::printf(
      "throughput: %lld MB, gRPC chunked %.0f MB/s, raw TCP %.0f MB/s (best of "
      "3)\n",
      static_cast<long long>(bytes / 1000000), best_grpc, best_tcp);
  std::printf("metric grpc_mb_per_s %.1f\nmetric tcp_mb_per_s %.1f\n",
              best_grpc, best_tcp);
  std::printf("metric grpc_over_tcp_throughput %.4f\n", best_grpc / best_tcp);
}

// A LoRA update trained for real: the task's model (--task; the built-in
// task without its base: a fresh default ViT), rank 8 on `targets`, 40
// steps of 64 of the task's private training data (the adapters are the
// update).
fm::NamedTensors RealLoraUpdate(const std::vector<std::string>& targets) {
  const fedge::task::TaskSpec spec = Check(fedge::task::TaskFromFlags());
  torch::manual_seed(0);
  fm::Model model = fedge::bench::TaskModel(spec);
  fedge::lora::LoraOptions lora;
  lora.target_modules = targets;
  Check(fedge::lora::Inject(*model, lora));
  std::unique_ptr<fedge::task::TaskData> data =
      Check(fedge::task::TaskData::Create(spec));
  fm::TrainOptions options;
  options.batch_size = 64;
  options.max_steps = 40;
  Check(fm::Train(*model, Check(data->Shard(0, 1)), options));
  return fedge::lora::ExtractAdapters(*model);
}

// `all_projections`: the prune-and-tune configuration (adapters on every
// projection, papers.md 1.3), which is what the figures use; otherwise the
// default q/v targets.
void Codecs(bool all_projections) {
  const fm::NamedTensors update = RealLoraUpdate(
      all_projections
          ? std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj",
                                     "up_proj", "down_proj"}
          : fedge::lora::LoraOptions().target_modules);
  int64_t raw = 0;
  for (const auto& item : update) raw += item.value().nbytes();
  std::printf(
      "codecs: real LoRA update (rank 8, %s), %zu tensors, %lld float32 "
      "bytes\n",
      all_projections ? "all projections" : "q and v", update.size(),
      static_cast<long long>(raw));
  std::printf("  %-16s %5s %10s %8s %10s %10s %12s\n", "codec", "zstd", "bytes",
              "x f32", "encode ms", "decode ms", "max |error|");
  struct Row {
    ft::Codec codec;
    double fraction;
    const char* label;
  };
  for (Row row : {Row{ft::Codec::kFloat32, 0, "float32"},
                  Row{ft::Codec::kFloat16, 0, "float16"},
                  Row{ft::Codec::kBFloat16, 0, "bfloat16"},
                  Row{ft::Codec::kInt8Row, 0, "int8_row"},
                  Row{ft::Codec::kTopK, 0.1, "topk 10%"},
                  Row{ft::Codec::kTopK, 0.01, "topk 1%"}}) {
    for (bool zstd : {false, true}) {
      ft::CodecOptions options;
      options.codec = row.codec;
      options.zstd = zstd;
      if (row.fraction > 0) options.topk_fraction = row.fraction;
      constexpr int kRepeats = 20;
      ft::EncodedPayload encoded;
      auto start = Clock::now();
      for (int i = 0; i < kRepeats; ++i)
        encoded = Check(ft::EncodeUpdate(update, options));
      const double encode_ms = Since(start) * 1000 / kRepeats;
      fm::NamedTensors decoded;
      start = Clock::now();
      for (int i = 0; i < kRepeats; ++i)
        decoded = Check(ft::DecodeUpdate(encoded.bytes));
      const double decode_ms = Since(start) * 1000 / kRepeats;
      double error = 0;
      for (const auto& item : update) {
        error = std::max(
            error,
            (decoded[item.key()] - item.value()).abs().max().item<double>());
      }
      const double ratio = static_cast<double>(raw) / encoded.bytes.size();
      std::printf("  %-16s %5s %10zu %8.2f %10.3f %10.3f %12.2e\n", row.label,
                  zstd ? "yes" : "no", encoded.bytes.size(), ratio, encode_ms,
                  decode_ms, error);
      const char* suffix = all_projections ? "" : "_qv";
      if (row.codec == ft::Codec::kInt8Row && zstd) {
        std::printf("metric int8_compression%s %.4f\n", suffix, ratio);
      }
      if (row.codec == ft::Codec::kTopK && row.fraction == 0.01 && zstd) {
        std::printf("metric top1pct_zstd_compression%s %.4f\n", suffix, ratio);
      }
    }
  }
}

void Links() {
  const int64_t bytes = absl::GetFlag(FLAGS_link_mb) * 1000000;
  Server server(BenchChannel());
  std::string payload(bytes, '\0');
  for (int64_t i = 0; i < bytes; ++i)
    payload[i] = static_cast<char>((i * 2654435761u) >> 13);
  ft::StringSource source(payload);
  double worst = 0, worst_cold = 0;
  std::printf("links: %lld MB update uploaded through the shaping proxy\n",
              static_cast<long long>(bytes / 1000000));
  std::printf("  %-10s %10s %10s %10s %8s\n", "profile", "up Mbit/s", "ideal s",
              "measured s", "error");
  for (const ft::LinkProfile& link : ft::BuiltinLinkProfiles()) {
    auto proxy = Check(ft::ShapingProxy::Start(
        "127.0.0.1", server.port, ft::ShapingOptions::FromProfile(link)));
    auto channel = Check(ft::CreateClientChannel(
        proxy->address(), BenchChannel(), ft::TlsFiles()));
    auto stub = fedge::v1::Coordinator::NewStub(channel);
    ft::TransferClient client(stub.get());
    // Connect first (TCP and HTTP/2 handshakes are not part of a transfer).
    channel->WaitForConnected(std::chrono::system_clock::now() +
                              std::chrono::seconds(5));
    const double ideal =
        absl::ToDoubleSeconds(ft::IdealTransferTime(link, bytes, true));
    double error[2];  // Cold, then warm.
    for (int warm = 0; warm < 2; ++warm) {
      const ft::TransferInfo info = Check(ft::DescribePayload(
          source, absl::StrCat("update-", link.name, "-", warm), 0,
          ft::PayloadFormat::kEncodedUpdate));
      const auto start = Clock::now();
      Check(client.Upload("bench", info, source, ChunkBytes()));
      const double measured = Since(start);
      Check(server.store.CompletedUpload(info.transfer_id).status());
      server.store.DropUpload(info.transfer_id);
      error[warm] = std::abs(measured - ideal) / ideal;
      std::printf("  %-10s %10.0f %10.3f %10.3f %7.1f%% %s\n",
                  link.name.c_str(), link.uplink_mbps, ideal, measured,
                  100 * error[warm], warm ? "" : "(cold)");
    }
    worst = std::max(worst, error[1]);
    worst_cold = std::max(worst_cold, error[0]);
    std::printf("metric link_%s_error %.4f\n", link.name.c_str(), error[1]);
    std::printf("metric link_%s_cold_error %.4f\n", link.name.c_str(),
                error[0]);
  }
  std::printf("metric link_emulation_max_error %.4f\n", worst);
  std::printf("metric link_cold_upload_max_error %.4f\n", worst_cold);
}

// Peak RSS (MiB) of this process so far.
double PeakRssMib() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

fm::NamedTensors BigTensors() {
  const int64_t bytes = absl::GetFlag(FLAGS_memory_mb) * 1000000;
  fm::NamedTensors tensors;
  const int64_t per = bytes / 4 / 10;
  torch::manual_seed(3);
  for (int i = 0; i < 10; ++i)
    tensors.insert(absl::StrCat("w", i), torch::rand({per}));
  return tensors;
}

// Child process: serves BigTensors(), prints its port, waits for stdin to
// close, then prints how far its peak RSS rose above its RSS once the
// tensors existed (what serving cost).
int MemoryServer() {
  const fm::NamedTensors tensors = BigTensors();
  auto source = std::shared_ptr<ft::SafetensorsSource>(
      Check(ft::SafetensorsSource::Create(tensors)));
  Server server(BenchChannel());
  server.store.Offer(Check(ft::DescribePayload(
                         *source, "big", 0, ft::PayloadFormat::kSafetensors)),
                     source);
  auto warm = std::make_shared<ft::StringSource>(std::string(8 << 20, 'w'));
  server.store.Offer(Check(ft::DescribePayload(
                         *warm, "warm", 0, ft::PayloadFormat::kSafetensors)),
                     warm);
  std::printf("port %d\n", server.port);
  std::fflush(stdout);
  // The client warms the connection up (threads, buffers, first
  // allocations are a fixed cost, not the transfer's), then sends a byte.
  char c;
  if (::read(STDIN_FILENO, &c, 1) != 1) return 1;
  const double base = std::max(RssMib(), PeakRssMib());
  while (::read(STDIN_FILENO, &c, 1) > 0) {
  }
  std::printf("metric server_overhead_mib %.2f\n", PeakRssMib() - base);
  std::fflush(stdout);
  return 0;
}

void Memory(const char* self) {
  // The sender runs in its own process so each side's peak is its own.
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) std::exit(1);
  const std::string mb =
      absl::StrCat("--memory_mb=", absl::GetFlag(FLAGS_memory_mb));
  const std::string window =
      absl::StrCat("--window_kb=", absl::GetFlag(FLAGS_window_kb));
  const pid_t pid = fork();
  if (pid == 0) {  // Only async-signal-safe calls until exec.
    dup2(to_child[0], STDIN_FILENO);
    dup2(from_child[1], STDOUT_FILENO);
    close(to_child[1]);
    close(from_child[0]);
    execl(self, self, "--only=memory_server", mb.c_str(), window.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  FILE* child_out = fdopen(from_child[0], "r");
  int port = 0;
  if (std::fscanf(child_out, "port %d", &port) != 1) {
    std::fprintf(stderr, "bench transport: memory server did not start\n");
    std::exit(1);
  }
  auto channel = Check(ft::CreateClientChannel(absl::StrCat("127.0.0.1:", port),
                                               BenchChannel(), ft::TlsFiles()));
  auto stub = fedge::v1::Coordinator::NewStub(channel);
  ft::TransferClient client(stub.get());
  ft::StringSink warm_sink;
  Check(client.Download("bench", "warm", ft::kDefaultChunkBytes, &warm_sink));
  if (::write(to_child[1], "w", 1) != 1) std::exit(1);
  const double base = std::max(RssMib(), PeakRssMib());
  fm::NamedTensors got =
      Check(client.DownloadTensors("bench", "big", ft::kDefaultChunkBytes));
  int64_t tensor_bytes = 0;
  for (const auto& item : got) tensor_bytes += item.value().nbytes();
  const double client_overhead = PeakRssMib() - base - tensor_bytes / 1048576.0;
  close(to_child[1]);
  double server_overhead = -1;
  if (std::fscanf(child_out, " metric server_overhead_mib %lf",
                  &server_overhead) != 1) {
    server_overhead = -1;
  }
  fclose(child_out);
  waitpid(pid, nullptr, 0);
  const fm::NamedTensors expected = BigTensors();
  bool same = got.size() == expected.size();
  for (const auto& item : expected) {
    same = same && got.contains(item.key()) &&
           torch::equal(got[item.key()], item.value());
  }
  // fedge's 1 MiB HTTP/2 stream window lets one chunk be in flight, so one
  // chunk plus the serialised copy of it is what a side needs to hold:
  // budget 2 x chunk x 1.
  const double budget = 2.0 * ft::kDefaultChunkBytes / 1048576.0;
  std::printf(
      "memory: %.0f MiB of tensors; peak RSS growth beyond them: receiver %.1f "
      "MiB, "
      "sender %.1f MiB (budget 2 x chunk x window = %.0f MiB); intact %s\n",
      tensor_bytes / 1048576.0, client_overhead, server_overhead, budget,
      same ? "yes" : "NO");
  std::printf("metric receiver_overhead_mib %.2f\n", client_overhead);
  std::printf("metric sender_overhead_mib %.2f\n", server_overhead);
  std::printf("metric transfer_memory_budget_mib %.2f\n", budget);
  std::printf("metric transfer_memory_intact %d\n", same ? 1 : 0);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  fm::ConfigureRuntime(0);
  const std::string only = absl::GetFlag(FLAGS_only);
  // Memory first: it compares peak RSS, which the other parts would raise.
  if (only.empty() || only == "memory") Memory(argv[0]);
  if (only.empty() || only == "throughput") Throughput();
  if (only.empty() || only == "codecs") {
    Codecs(/*all_projections=*/true);
    Codecs(/*all_projections=*/false);
  }
  if (only.empty() || only == "links") Links();
  if (only == "memory_server") return MemoryServer();
  return 0;
}
