// A whole federation over real gRPC: the coordinator server and three
// participants in threads, talking through in-process channels.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "client/participant.h"
#include "coordinator/records.h"
#include "coordinator/server.h"
#include "metrics/csv.h"
#include "metrics/http_server.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "tests/testing/tiny_models.h"
#include "transport/channel_options.h"
#include "transport/sha256.h"
#include "transport/shaping_proxy.h"
#include "transport/task_proto.h"

namespace fedge {
namespace {

std::string TempDir(const std::string& name) {
  const std::string dir =
      ::testing::TempDir() + "/fedge_fed_" + name + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<std::map<std::string, std::string>> ReadCsv(
    const std::string& path) {
  auto rows = metrics::ReadCsvFile(path);
  EXPECT_TRUE(rows.ok()) << rows.status();
  return rows.ok() ? *rows : std::vector<std::map<std::string, std::string>>{};
}

struct Federation {
  std::string dir;
  std::unique_ptr<coordinator::CoordinatorServer> server;
  // Per device, per round: what the participant measured.
  std::map<std::string, std::map<int64_t, client::RoundReport>> reports;
  double base_accuracy = 0;
};

// Runs `rounds` rounds with three devices of 400 Fashion-MNIST images each;
// the coordinator ticks every `tick`.
Federation RunFederation(coordinator::Mode mode, int rounds, double max_ratio,
                         const std::string& split = "off",
                         absl::Duration tick = absl::Milliseconds(20),
                         const std::string& download_codec = "float32",
                         bool secure = false,
                         const std::function<void(coordinator::EngineOptions&)>&
                             configure = nullptr) {
  Federation f;
  f.dir = TempDir(std::string(mode == coordinator::Mode::kDense ? "dense"
                              : secure                          ? "secure"
                              : split == "off"                  ? "lora"
                                                                : "split") +
                  (configure ? "_configured" : ""));
  torch::manual_seed(0);
  model::Vit base = testing::TinyVit(32);
  EXPECT_TRUE(model::SaveCheckpoint(*base, f.dir + "/base").ok());

  auto train =
      model::LoadFashionMnist(model::kFashionMnistDir, model::Split::kTrain);
  EXPECT_TRUE(train.ok()) << train.status();
  auto test =
      model::LoadFashionMnist(model::kFashionMnistDir, model::Split::kTest);
  f.base_accuracy = model::Evaluate(*base, model::Head(*test, 1000))->accuracy;

  coordinator::ServerConfig config;
  config.task.base_dir = f.dir + "/base";
  config.eval_examples = 1000;
  config.run_dir = f.dir + "/run";
  config.listen = "127.0.0.1:0";
  config.quiet = true;
  config.metrics_listen = "127.0.0.1:0";
  config.tick = tick;
  config.linger = absl::Milliseconds(300);
  config.service.retry_after_ms = 50;
  coordinator::EngineOptions& e = config.engine;
  e.mode = mode;
  e.rounds = rounds;
  e.min_devices = 3;
  e.round_deadline = absl::Seconds(120);
  e.bandit.space.max_ratio = max_ratio;
  e.bandit.space.min_ratio = 0;
  e.bandit.space.ratio_steps = max_ratio > 0 ? 3 : 1;
  e.bandit.space.ranks = {2, 4};
  e.train.batch_size = 32;
  e.train.learning_rate = mode == coordinator::Mode::kDense ? 2e-3 : 5e-3;
  e.split.mode = split;
  e.download_codec = download_codec;
  e.secure.enabled = secure;
  if (configure) configure(e);
  auto server = coordinator::CoordinatorServer::Start(config);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return f;
  f.server = std::move(*server);

  std::vector<std::thread> threads;
  std::mutex mu;
  for (int d = 0; d < 3; ++d) {
    threads.emplace_back([&, d] {
      std::vector<int64_t> shard(400);
      for (int64_t i = 0; i < 400; ++i) shard[i] = d * 400 + i;
      client::ParticipantOptions options;
      options.task = task::IdentityOf(task::FashionMnistTask(), nullptr);
      options.device_id = "dev-" + std::to_string(d);
      options.link = d == 0 ? "ethernet" : "wifi";
      options.cache_dir = f.dir + "/cache-" + std::to_string(d);
      options.progress = client::ParticipantOptions::Progress::kNone;
      options.run_benchmark = false;
      auto channel = f.server->InProcessChannel();
      auto stub = v1::Coordinator::NewStub(channel);
      client::GrpcCoordinatorLink link(stub.get());
      client::Participant participant(options, &link,
                                      *model::Subset(*train, shard));
      participant.on_round = [&](const client::RoundReport& r) {
        std::lock_guard<std::mutex> lock(mu);
        f.reports[options.device_id][r.round] = r;
      };
      const absl::Status s = participant.Run();
      EXPECT_TRUE(s.ok()) << options.device_id << ": " << s;
    });
  }
  EXPECT_TRUE(f.server->Wait().ok());
  for (auto& t : threads) t.join();
  return f;
}

TEST(FederationTest, LoraRoundsOverGrpcWriteConsistentRecords) {
  model::ConfigureRuntime(1);
  // Ticks 2 s apart: the round closes at once only if the last update
  // wakes the ticker (its upload is answered before the close).
  Federation f =
      RunFederation(coordinator::Mode::kLora, 3, 0.5, "off", absl::Seconds(2));
  ASSERT_NE(f.server, nullptr);
  const auto clients = ReadCsv(f.dir + "/run/clients.csv");
  ASSERT_EQ(clients.size(), 9u);
  std::map<std::string, double> last_wait;  // By round.
  for (const auto& row : clients) {
    const double wait = std::stod(row.at("wait_s"));
    auto [it, added] = last_wait.emplace(row.at("round"), wait);
    if (!added) it->second = std::min(it->second, wait);
  }
  for (const auto& [round, wait] : last_wait) {
    EXPECT_LT(wait, 0.2) << "round " << round
                         << " closed long after its last update";
  }
  for (const auto& row : clients) {
    EXPECT_EQ(row.at("status"), "accepted");
    const double download = std::stod(row.at("download_s"));
    const double train = std::stod(row.at("train_s"));
    const double upload = std::stod(row.at("upload_s"));
    const double elapsed = std::stod(row.at("elapsed_s"));
    // The device's phases fit in what the coordinator saw between task and
    // update; the rest is RPC and scheduling overhead.
    EXPECT_LE(download + train + upload, elapsed + 0.01) << row.at("device");
    EXPECT_GE(download + train + upload, 0.5 * elapsed - 0.05)
        << row.at("device");
    // Bytes: the coordinator's own count equals what the device sent.
    const client::RoundReport& r =
        f.reports.at(row.at("device")).at(std::stoll(row.at("round")));
    EXPECT_EQ(std::stoll(row.at("bytes_up")), r.bytes_up);
    EXPECT_EQ(std::stoll(row.at("bytes_down")), r.bytes_down);
    EXPECT_GT(r.raw_bytes_up, r.bytes_up);  // int8 + zstd compress.
    EXPECT_NEAR(std::stod(row.at("prune_ratio")), r.prune_ratio, 1e-5);
  }
  std::map<std::string, double> slowest;  // By round: the longest elapsed_s.
  for (const auto& row : clients) {
    double& s = slowest[row.at("round")];
    s = std::max(s, std::stod(row.at("elapsed_s")));
  }
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 3u);
  for (const auto& row : rounds) {
    EXPECT_EQ(row.at("committed"), "1");
    EXPECT_FALSE(row.at("accuracy").empty());
    // The slowest device bounds the round: the round opened before its
    // task was issued and closed after its update (same server clock; the
    // CSV rounds to the millisecond).
    ASSERT_GT(slowest.count(row.at("round")), 0u);
    EXPECT_GE(std::stod(row.at("round_s")) + 1e-3, slowest[row.at("round")])
        << "round " << row.at("round");
  }
  // The checkpoint of the last round is there, and /metrics answers.
  EXPECT_TRUE(std::filesystem::exists(
      f.dir + "/run/checkpoint/coordinator.safetensors"));
  auto scraped =
      metrics::HttpGet("127.0.0.1", f.server->metrics_port(), "/metrics");
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  EXPECT_NE(scraped->find("fedge_rounds_total{outcome=\"committed\"} 3"),
            std::string::npos)
      << *scraped;
  // A real Prometheus parser accepts the exposition (Debian's prometheus
  // package, installed by scripts/setup).
  const std::string path = f.dir + "/metrics.txt";
  std::ofstream(path) << *scraped;
  ASSERT_EQ(std::system("command -v promtool >/dev/null"), 0)
      << "promtool missing: run scripts/setup (Debian package prometheus)";
  const std::string log = f.dir + "/promtool.log";
  const int rc = std::system(
      ("promtool check metrics < " + path + " > " + log + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  EXPECT_EQ(rc, 0) << out.str();
}

// Secure aggregation over gRPC: each device runs the key exchange through
// the Secure RPC, uploads only its masked change, and posts its unmasking
// shares; the coordinator commits every round from the unmasked sum.
TEST(FederationTest, SecureAggregationRoundsCommitOverGrpc) {
  model::ConfigureRuntime(1);
  Federation f = RunFederation(coordinator::Mode::kLora, 2, 0.5, "off",
                               absl::Milliseconds(20), "float32", true);
  ASSERT_NE(f.server, nullptr);
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& row : rounds) {
    EXPECT_EQ(row.at("committed"), "1");
    EXPECT_EQ(row.at("secagg_excluded"), "0");
    EXPECT_GT(std::stoll(row.at("secagg_bytes_up")), 0);
    EXPECT_GT(std::stoll(row.at("secagg_bytes_down")), 0);
    EXPECT_GT(std::stod(row.at("secagg_mask_s")), 0);
  }
  // The unmasked mean trained the model (a sum left masked would be noise
  // of the ring's whole range, and wreck it).
  EXPECT_GT(std::stod(rounds.back().at("accuracy")), f.base_accuracy + 0.03)
      << "base " << f.base_accuracy;
  const auto clients = ReadCsv(f.dir + "/run/clients.csv");
  ASSERT_EQ(clients.size(), 6u);
  int64_t length = 0;  // Words of the masked vector: the same for all.
  for (const auto& row : clients) {
    EXPECT_EQ(row.at("status"), "accepted");
    const client::RoundReport& r =
        f.reports.at(row.at("device")).at(std::stoll(row.at("round")));
    EXPECT_EQ(std::stoll(row.at("bytes_up")), r.bytes_up);
    ASSERT_EQ(r.bytes_up % 4, 0);
    if (length == 0) length = r.bytes_up / 4;
    EXPECT_EQ(r.bytes_up / 4, length) << row.at("device");
    EXPECT_GT(r.secure_bytes_up, 0);
    EXPECT_GT(r.secure_bytes_down, 0);
    // Masking is part of the device's compute, and what it reported.
    const double mask_s = std::stod(row.at("secagg_mask_s"));
    EXPECT_GT(mask_s, 0) << row.at("device");
    EXPECT_NEAR(mask_s, r.encode_s, 1e-6) << row.at("device");
    EXPECT_LE(mask_s, std::stod(row.at("train_s"))) << row.at("device");
  }
  // The full model's adapted products (q and v of 2 blocks of 32 x 32).
  EXPECT_EQ(length, 4 * 32 * 32);
}

// Distributed DP under secure aggregation: the devices add the noise on
// the ring, the rounds commit, and the accountant reports epsilon.
TEST(FederationTest, DistributedPrivacyNoisesOnTheDevicesOverGrpc) {
  model::ConfigureRuntime(1);
  Federation f = RunFederation(
      coordinator::Mode::kLora, 2, 0.0, "off", absl::Milliseconds(20),
      "float32", true, [](coordinator::EngineOptions& e) {
        e.privacy.noise_multiplier = 0.5;
        e.bandit.kind = strategies::BanditKind::kFixed;
        e.selection.kind = strategies::SelectionKind::kAll;
      });
  ASSERT_NE(f.server, nullptr);
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 2u);
  double epsilon = 0;
  for (const auto& row : rounds) {
    EXPECT_EQ(row.at("committed"), "1");
    EXPECT_EQ(std::stod(row.at("dp_clip_norm")), 1.0);
    EXPECT_GT(std::stod(row.at("dp_epsilon")), epsilon);
    epsilon = std::stod(row.at("dp_epsilon"));
    EXPECT_TRUE(std::isfinite(std::stod(row.at("test_loss"))));
  }
}

// Every device split after block 1: the coordinator trains the tail over
// the Split stream, and the records count its bytes.
TEST(FederationTest, SplitRoundsTrainBothHalvesOverGrpc) {
  model::ConfigureRuntime(1);
  Federation f = RunFederation(coordinator::Mode::kLora, 2, 0.0, "1");
  ASSERT_NE(f.server, nullptr);
  const auto clients = ReadCsv(f.dir + "/run/clients.csv");
  ASSERT_EQ(clients.size(), 6u);
  for (const auto& row : clients) {
    EXPECT_EQ(row.at("status"), "accepted");
    EXPECT_EQ(row.at("cut"), "1");
    const client::RoundReport& r =
        f.reports.at(row.at("device")).at(std::stoll(row.at("round")));
    // 400 images in batches of 32: 13 steps, each applied on both sides.
    EXPECT_EQ(r.split_steps, 13);
    EXPECT_EQ(std::stoll(row.at("split_bytes_up")), r.split_bytes_up);
    EXPECT_EQ(std::stoll(row.at("split_bytes_down")), r.split_bytes_down);
    // The exchanges are part of training time.
    EXPECT_GT(std::stod(row.at("split_s")), 0);
    EXPECT_LE(std::stod(row.at("split_s")), std::stod(row.at("train_s")));
    // float16 activations of [32, 17, 32] per full step, up and down.
    EXPECT_GT(r.split_bytes_up, 12 * 32 * 17 * 32 * 2);
    EXPECT_GT(r.split_bytes_down, 12 * 32 * 17 * 32 * 2);
    // Both halves trained: the merged update moved the global state, and
    // the losses the coordinator's half computed came back to the device.
    EXPECT_GT(std::stod(row.at("update_norm")), 0);
    EXPECT_GT(std::stod(row.at("loss_after")), 0);
  }
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& row : rounds) EXPECT_EQ(row.at("committed"), "1");
}

TEST(FederationTest, DenseFedAvgRaisesAccuracy) {
  model::ConfigureRuntime(1);
  Federation f = RunFederation(coordinator::Mode::kDense, 3, 0.0);
  ASSERT_NE(f.server, nullptr);
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 3u);
  const double final_accuracy = std::stod(rounds.back().at("accuracy"));
  EXPECT_GT(final_accuracy, f.base_accuracy + 0.3)
      << "base " << f.base_accuracy << " final " << final_accuracy;
}

// Compressed downloads: from round 2 each device holds the last round's
// weights and rebuilds this round's from their int8 change, digest-checked.
TEST(FederationTest, DenseDevicesRebuildEachRoundFromACompressedChange) {
  model::ConfigureRuntime(1);
  Federation f = RunFederation(coordinator::Mode::kDense, 3, 0.0, "off",
                               absl::Milliseconds(20), "int8_row");
  ASSERT_NE(f.server, nullptr);
  ASSERT_EQ(f.reports.size(), 3u);
  for (const auto& [device, rounds] : f.reports) {
    ASSERT_EQ(rounds.size(), 3u) << device;
    const client::RoundReport& first = rounds.at(1);
    EXPECT_FALSE(first.delta_download) << device;
    EXPECT_EQ(first.bytes_down, first.raw_bytes_down) << device;
    for (int64_t r = 2; r <= 3; ++r) {
      const client::RoundReport& later = rounds.at(r);
      EXPECT_TRUE(later.delta_download) << device << " round " << r;
      EXPECT_EQ(later.raw_bytes_down, first.raw_bytes_down) << device;
      // int8 values and a scale per row, zstd: under a third of float32.
      EXPECT_LT(later.bytes_down * 3, later.raw_bytes_down) << device;
    }
  }
  const auto rounds = ReadCsv(f.dir + "/run/rounds.csv");
  ASSERT_EQ(rounds.size(), 3u);
  const double final_accuracy = std::stod(rounds.back().at("accuracy"));
  EXPECT_GT(final_accuracy, f.base_accuracy + 0.3)
      << "base " << f.base_accuracy << " final " << final_accuracy;
}

// Mutual TLS binds the certificate to the device id: a client holding
// device-0's certificate cannot act as device-1.
TEST(FederationTest, MutualTlsIdentityMustMatchTheDeviceId) {
  const std::string dir = TempDir("mtls");
  const char* src = std::getenv("FEDGE_TEST_SRCDIR");
  ASSERT_EQ(std::system((std::string(src ? src : ".") +
                         "/deploy/certs/make_dev_certs.sh " + dir +
                         "/certs device-0 >/dev/null")
                            .c_str()),
            0);
  torch::manual_seed(0);
  ASSERT_TRUE(model::SaveCheckpoint(*testing::TinyVit(16), dir + "/base").ok());
  coordinator::ServerConfig config;
  config.task.base_dir = dir + "/base";
  config.evaluate = false;
  config.run_dir = dir + "/run";
  config.listen = "127.0.0.1:0";
  config.quiet = true;
  config.tls = {dir + "/certs/ca.pem", dir + "/certs/server.pem",
                dir + "/certs/server.key", true};
  auto server = coordinator::CoordinatorServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto register_as = [&](const std::string& cert, const std::string& id) {
    transport::TlsFiles files{
        dir + "/certs/ca.pem",
        cert.empty() ? "" : dir + "/certs/" + cert + ".pem",
        cert.empty() ? "" : dir + "/certs/" + cert + ".key", false};
    auto channel = transport::CreateClientChannel(
        "localhost:" + std::to_string((*server)->port()), {}, files);
    EXPECT_TRUE(channel.ok());
    auto stub = v1::Coordinator::NewStub(*channel);
    v1::RegisterRequest request;
    request.mutable_device()->set_device_id(id);
    transport::IdentityToProto(
        task::IdentityOf(task::FashionMnistTask(), nullptr),
        request.mutable_task());
    v1::RegisterResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    return stub->Register(&context, request, &response).error_code();
  };
  EXPECT_EQ(register_as("client-device-0", "device-0"), grpc::StatusCode::OK);
  EXPECT_EQ(register_as("client-device-0", "device-1"),
            grpc::StatusCode::PERMISSION_DENIED);
  // Without a client certificate the handshake itself fails.
  EXPECT_EQ(register_as("", "device-0"), grpc::StatusCode::UNAVAILABLE);
}

// A LoRA coordinator on loopback TCP for the client tests: `devices`
// devices per round, one update enough to commit.
std::unique_ptr<coordinator::CoordinatorServer> StartCoordinator(
    const std::string& dir, int rounds, int devices,
    const std::string& split = "auto") {
  if (!std::filesystem::exists(dir + "/base/config.json")) {
    torch::manual_seed(0);
    EXPECT_TRUE(
        model::SaveCheckpoint(*testing::TinyVit(32), dir + "/base").ok());
  }
  coordinator::ServerConfig config;
  config.task.base_dir = dir + "/base";
  config.evaluate = false;
  config.run_dir = dir + "/run";
  config.listen = "127.0.0.1:0";
  config.quiet = true;
  config.tick = absl::Milliseconds(20);
  config.linger = absl::Milliseconds(300);
  config.service.retry_after_ms = 50;
  config.engine.rounds = rounds;
  config.engine.min_devices = devices;
  config.engine.round_deadline = absl::Seconds(120);
  config.engine.bandit.space.ranks = {4};
  config.engine.bandit.space.max_ratio = 0.5;
  config.engine.bandit.space.ratio_steps = 2;
  config.engine.train.batch_size = 32;
  config.engine.train.max_steps = 4;
  config.engine.split.mode = split;
  auto server = coordinator::CoordinatorServer::Start(config);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

model::Dataset Shard(int64_t first, int64_t count) {
  static const model::Dataset* train = new model::Dataset(
      *model::LoadFashionMnist(model::kFashionMnistDir, model::Split::kTrain));
  std::vector<int64_t> index(count);
  for (int64_t i = 0; i < count; ++i) index[i] = first + i;
  return *model::Subset(*train, index);
}

// A device whose task differs from the coordinator's (or that names none)
// is refused at registration, naming what differs; the coordinator's own
// identity comes back to a device that matches.
TEST(FederationTest, RegistrationRefusesAnotherTask) {
  const std::string dir = TempDir("identity");
  auto server = StartCoordinator(dir, 1, 1);
  ASSERT_NE(server, nullptr);
  auto stub = v1::Coordinator::NewStub(server->InProcessChannel());
  auto register_with = [&](const task::TaskIdentity* identity,
                           v1::RegisterResponse* response) {
    v1::RegisterRequest request;
    request.mutable_device()->set_device_id("dev-x");
    if (identity != nullptr) {
      transport::IdentityToProto(*identity, request.mutable_task());
    }
    grpc::ClientContext context;
    return stub->Register(&context, request, response);
  };
  task::TaskIdentity same = task::IdentityOf(task::FashionMnistTask(), nullptr);
  v1::RegisterResponse response;
  ASSERT_TRUE(register_with(&same, &response).ok());
  EXPECT_EQ(response.task().name(), "fashion-mnist");
  EXPECT_EQ(response.task().objective(), "image_classification");

  task::TaskIdentity other = same;
  other.name = "fortunes-lm";
  other.objective = "causal_lm";
  grpc::Status status = register_with(&other, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(),
              ::testing::HasSubstr("name 'fortunes-lm'"));
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("objective"));
  status = register_with(nullptr, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("no task identity"));
}

client::ParticipantOptions ClientOptions(const std::string& dir,
                                         const std::string& id) {
  client::ParticipantOptions options;
  options.task = task::IdentityOf(task::FashionMnistTask(), nullptr);
  options.device_id = id;
  options.cache_dir = dir + "/cache-" + id;
  options.progress = client::ParticipantOptions::Progress::kNone;
  options.run_benchmark = false;
  options.initial_backoff = absl::Milliseconds(50);
  return options;
}

// Device "pi-0" (256 images) runs against `server` through a shaping
// proxy with `link`; the first time round r enters phase cut_in[r], the
// proxy cuts every connection `delay` later.
struct CutRun {
  absl::Status status;
  std::map<int64_t, client::RoundReport> reports;
  std::map<int64_t, int> entered;  // Entries into the cut phase, by round.
};
CutRun RunWithCuts(coordinator::CoordinatorServer& server,
                   const std::string& dir,
                   const transport::ShapingOptions& link,
                   const std::map<int64_t, std::string>& cut_in,
                   std::chrono::milliseconds delay) {
  CutRun run;
  auto proxy = transport::ShapingProxy::Start("127.0.0.1", server.port(), link);
  EXPECT_TRUE(proxy.ok()) << proxy.status();
  if (!proxy.ok()) return run;
  auto channel = transport::CreateClientChannel((*proxy)->address(), {}, {});
  EXPECT_TRUE(channel.ok());
  if (!channel.ok()) return run;
  auto stub = v1::Coordinator::NewStub(*channel);
  transport::RetryPolicy transfer_retry;
  transfer_retry.initial_backoff = absl::Milliseconds(50);
  client::GrpcCoordinatorLink coordinator(stub.get(), transfer_retry);
  client::Participant participant(ClientOptions(dir, "pi-0"), &coordinator,
                                  Shard(0, 256));
  std::vector<std::thread> cutters;
  participant.on_phase = [&](int64_t round, const char* phase) {
    auto it = cut_in.find(round);
    if (it == cut_in.end() || it->second != phase || run.entered[round]++ > 0) {
      return;
    }
    cutters.emplace_back([&proxy, delay] {
      std::this_thread::sleep_for(delay);
      (*proxy)->CutAll();
    });
  };
  participant.on_round = [&](const client::RoundReport& r) {
    EXPECT_EQ(run.reports.count(r.round), 0u)
        << "round " << r.round << " twice";
    run.reports[r.round] = r;
  };
  run.status = participant.Run();
  for (auto& t : cutters) t.join();
  return run;
}

// The link drops while the round's payload downloads (round 1), while the
// device trains (round 2) and while the update uploads (round 3); every
// round still ends with exactly one accepted update.
TEST(ClientResilienceTest, LinkCutsInEveryPhaseLoseAndDuplicateNothing) {
  model::ConfigureRuntime(1);
  const std::string dir = TempDir("cuts");
  auto server = StartCoordinator(dir, 3, 1);
  ASSERT_NE(server, nullptr);
  transport::ShapingOptions link;
  link.downlink_bytes_per_s = 200e3;
  link.uplink_bytes_per_s = 20e3;  // The update takes a few hundred ms.
  link.one_way_delay = absl::Milliseconds(10);
  CutRun run = RunWithCuts(*server, dir, link,
                           {{1, "download"}, {2, "train"}, {3, "upload"}},
                           std::chrono::milliseconds(30));
  ASSERT_TRUE(run.status.ok()) << run.status;
  ASSERT_TRUE(server->Wait().ok());
  std::map<int64_t, client::RoundReport>& reports = run.reports;

  EXPECT_EQ(run.entered.size(), 3u);
  ASSERT_EQ(reports.size(), 3u);
  // The cuts landed inside the transfers: they were resumed, not redone.
  EXPECT_GE(reports[1].transfer_resumes + reports[3].transfer_resumes, 1);
  const auto rows = ReadCsv(dir + "/run/clients.csv");
  ASSERT_EQ(rows.size(), 3u);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].at("round"), std::to_string(i + 1));
    EXPECT_EQ(rows[i].at("status"), "accepted");
    EXPECT_EQ(std::stoll(rows[i].at("bytes_up")), reports[i + 1].bytes_up);
  }
  for (const auto& row : ReadCsv(dir + "/run/rounds.csv")) {
    EXPECT_EQ(row.at("accepted"), "1");
  }
}

// The link drops while a split device trains (rounds 1 and 2): its Split
// stream breaks mid-round, the device fetches the task again and starts
// over, and so does the coordinator's half; each round ends with one
// accepted update whose steps both halves applied.
TEST(ClientResilienceTest, SplitStreamCutMidRoundRestartsBothHalves) {
  model::ConfigureRuntime(1);
  const std::string dir = TempDir("split_cuts");
  auto server = StartCoordinator(dir, 2, 1, "1");
  ASSERT_NE(server, nullptr);
  transport::ShapingOptions link;
  link.downlink_bytes_per_s = 1e6;
  link.uplink_bytes_per_s = 500e3;  // A step's activations: ~70 ms.
  link.one_way_delay = absl::Milliseconds(10);
  CutRun run = RunWithCuts(*server, dir, link, {{1, "train"}, {2, "train"}},
                           std::chrono::milliseconds(100));
  ASSERT_TRUE(run.status.ok()) << run.status;
  ASSERT_TRUE(server->Wait().ok());
  const std::map<int64_t, client::RoundReport>& reports = run.reports;
  std::map<int64_t, int>& trains = run.entered;

  ASSERT_EQ(reports.size(), 2u);
  for (const auto& [round, r] : reports) {
    // The cut landed in training: the round was trained twice.
    EXPECT_EQ(trains[round], 2) << "round " << round;
    EXPECT_EQ(r.split_steps, 4);
  }
  const auto rows = ReadCsv(dir + "/run/clients.csv");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    EXPECT_EQ(row.at("status"), "accepted");
    EXPECT_EQ(row.at("cut"), "1");
  }
}

// A device whose budget cannot hold the task declines it; the coordinator
// records that, does not wait for it, and commits with the other device.
TEST(ClientResilienceTest, TasksOverTheMemoryBudgetAreDeclined) {
  model::ConfigureRuntime(1);
  const std::string dir = TempDir("budget");
  auto server = StartCoordinator(dir, 2, 2);
  ASSERT_NE(server, nullptr);
  std::vector<std::thread> threads;
  std::vector<int64_t> declined;
  for (int d = 0; d < 2; ++d) {
    threads.emplace_back([&, d] {
      client::ParticipantOptions options =
          ClientOptions(dir, "pi-" + std::to_string(d));
      // 1 MiB: far below this process's resident size.
      if (d == 1) options.memory_budget_bytes = 1 << 20;
      auto stub = v1::Coordinator::NewStub(server->InProcessChannel());
      client::GrpcCoordinatorLink link(stub.get());
      client::Participant participant(options, &link, Shard(d * 256, 256));
      if (d == 1) {
        participant.on_round = [](const client::RoundReport& r) {
          ADD_FAILURE() << "over-budget device trained round " << r.round;
        };
        participant.on_decline = [&](int64_t round) {
          declined.push_back(round);
        };
      }
      const absl::Status s = participant.Run();
      EXPECT_TRUE(s.ok()) << s;
    });
  }
  ASSERT_TRUE(server->Wait().ok());
  for (auto& t : threads) t.join();
  EXPECT_EQ(declined, (std::vector<int64_t>{1, 2}));
  int accepted = 0;
  for (const auto& row : ReadCsv(dir + "/run/clients.csv")) {
    EXPECT_EQ(row.at("status"),
              row.at("device") == "pi-1" ? "declined" : "accepted");
    accepted += row.at("status") == "accepted";
  }
  EXPECT_EQ(accepted, 2);
  for (const auto& row : ReadCsv(dir + "/run/rounds.csv")) {
    EXPECT_EQ(row.at("declined"), "1");
    EXPECT_EQ(row.at("committed"), "1");
  }
}

// A cached base model that no longer matches its digest is fetched again.
TEST(ClientResilienceTest, CorruptCachedBaseModelIsDetectedAndRefetched) {
  model::ConfigureRuntime(1);
  const std::string dir = TempDir("cache");
  std::string cached;
  for (int run = 0; run < 2; ++run) {
    std::filesystem::remove_all(dir + "/run");
    auto server = StartCoordinator(dir, 1, 1);
    ASSERT_NE(server, nullptr);
    if (run == 1) {  // Flip bytes in the middle of the cached file.
      std::fstream file(cached,
                        std::ios::in | std::ios::out | std::ios::binary);
      file.seekp(
          static_cast<std::streamoff>(std::filesystem::file_size(cached) / 2));
      file.write("corrupt!", 8);
    }
    auto stub = v1::Coordinator::NewStub(server->InProcessChannel());
    client::GrpcCoordinatorLink link(stub.get());
    client::Participant participant(ClientOptions(dir, "pi-0"), &link,
                                    Shard(0, 128));
    int rounds = 0;
    participant.on_round = [&](const client::RoundReport&) { ++rounds; };
    ASSERT_TRUE(participant.Run().ok());
    ASSERT_TRUE(server->Wait().ok());
    EXPECT_EQ(rounds, 1);
    for (const auto& entry :
         std::filesystem::directory_iterator(dir + "/cache-pi-0")) {
      cached = entry.path().string();
    }
    // The file is named by its digest, and matches it again.
    absl::StatusOr<std::string> digest = transport::Sha256OfFile(cached);
    ASSERT_TRUE(digest.ok());
    EXPECT_NE(cached.find(transport::ToHex(*digest)), std::string::npos)
        << cached;
  }
}

}  // namespace
}  // namespace fedge
