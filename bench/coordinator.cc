// Coordinator scaling: one round of N simulated devices through the real
// round engine (no gRPC) on the task's model (--task; the built-in task
// without its base: a fresh default ViT) with LoRA. Pass 1 hands every
// device its task and keeps its payload (as the transfer store would until
// the round closes); pass 2 submits each device's update (its payload plus
// noise, made just before submitting), timing the engine's validation,
// scatter-back and streamed aggregation. Prints `metric` lines: peak RSS,
// RSS before the round, and aggregation throughput. Run once per N in a
// fresh process so the peak belongs to that N.

#include <chrono>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include <torch/types.h>

#include "bench/task_bench.h"
#include "coordinator/engine.h"
#include "model/threads.h"
#include "task/task_flags.h"
#include <sys/resource.h>

ABSL_FLAG(int, clients, 100, "Simulated devices in the round.");
ABSL_FLAG(int, threads, 1, "LibTorch threads.");

namespace {

double PeakRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace fc = fedge::coordinator;
  fedge::model::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const int n = absl::GetFlag(FLAGS_clients);
  torch::manual_seed(0);
  fedge::model::Model base = fedge::bench::TaskModel(
      fedge::bench::Check(fedge::task::TaskFromFlags()));
  auto global = fc::GlobalModel::Create(base, fc::Mode::kLora, {});
  fc::EngineOptions options;
  options.rounds = 1;
  options.min_devices = n;
  options.round_deadline = absl::Hours(1);
  options.heartbeat_timeout = absl::Hours(1);
  options.bandit.space.ranks = {8};
  options.bandit.space.max_ratio = 0.5;
  std::map<std::string, std::string> store;  // Serialized payload bytes.
  std::map<std::string, fedge::model::NamedTensors> last;  // Latest only.
  fc::EngineHooks hooks;
  hooks.publish = [&](const std::string& id,
                      const fedge::model::NamedTensors& t) {
    int64_t bytes = 0;
    for (const auto& item : t) bytes += item.value().nbytes();
    store[id].resize(bytes);  // What the store keeps per device.
    last.clear();
    last[id] = t;
  };
  auto engine = *fc::Engine::Create(std::move(*global), options, hooks);
  const absl::Time now = absl::Now();
  for (int i = 0; i < n; ++i) {
    fc::DeviceFacts f;
    f.device_id = "d" + std::to_string(i);
    (void)engine->Register(f, now);
  }
  (void)engine->Tick(now);
  const double before_mb = PeakRssMb();
  std::vector<fc::Task> tasks;
  // Names and shapes only: the payloads themselves stay in `store`.
  std::vector<std::vector<std::pair<std::string, std::vector<int64_t>>>> shapes;
  for (int i = 0; i < n; ++i) {
    tasks.push_back(*engine->GetTask("d" + std::to_string(i), now));
    shapes.emplace_back();
    for (const auto& item : last.begin()->second) {
      shapes.back().emplace_back(item.key(), item.value().sizes().vec());
    }
    // The server's ticker returns freed heap pages to the system once a
    // second (CoordinatorServer::TickLoop); do the same here.
    if (i % 16 == 15) fedge::model::ReleaseFreeHeap();
  }
  const double after_tasks_mb = PeakRssMb();
  double seconds = 0;
  double megabytes = 0;
  for (int i = 0; i < n; ++i) {
    fc::Submission s;
    s.device_id = "d" + std::to_string(i);
    s.round = 1;
    s.nonce = tasks[i].nonce;
    s.num_examples = 100;
    s.loss_before = 2;
    s.loss_after = 1.5;
    for (const auto& [name, shape] : shapes[i]) {
      s.update.insert(name, 0.01 * torch::randn(shape));
      megabytes += s.update[name].nbytes() / 1e6;
    }
    const auto start = std::chrono::steady_clock::now();
    const absl::Status status = engine->Submit(s, now);
    seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (!status.ok()) {
      std::fprintf(stderr, "submit %d: %s\n", i, status.ToString().c_str());
      return 1;
    }
  }
  // The tick after the last update closes the round: finish and commit.
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = engine->Tick(now); !s.ok()) {
    std::fprintf(stderr, "close: %s\n", s.ToString().c_str());
    return 1;
  }
  seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (engine->history().size() != 1 || engine->history()[0].accepted != n) {
    std::fprintf(stderr, "the round did not close with %d updates\n", n);
    return 1;
  }
  std::printf("metric clients %d\n", n);
  std::printf("metric rss_before_round_mb %.1f\n", before_mb);
  std::printf("metric rss_after_tasks_mb %.1f\n", after_tasks_mb);
  std::printf("metric peak_rss_mb %.1f\n", PeakRssMb());
  std::printf("metric update_mb %.3f\n", megabytes);
  std::printf("metric aggregate_mb_per_s %.2f\n", megabytes / seconds);
  std::printf("metric submit_ms %.3f\n", 1e3 * seconds / n);
  return 0;
}
