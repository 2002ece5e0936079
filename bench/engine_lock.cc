// The coordinator's round engine under load, with the production hooks: how
// long GetTask keeps a polling device waiting while rounds close and
// pruning costs are measured, and how long each operation holds the
// engine's lock (EngineHooks::lock_held).
//
// No gRPC: --devices registered devices are polled by --pollers threads,
// each device every --poll_ms, through Engine::GetTask, as the service would
// call it. A device in the round submits its update (its payload plus
// noise) --busy_ms after its task, standing in for the device's download,
// training and upload, which happen elsewhere and cost the coordinator
// nothing. A ticker thread calls Tick every --tick_ms, as the server's does.
// The hooks are the server's: publish serialises the payload to
// safetensors and hashes it (transport::DescribePayload), the pruning
// costs are measured by evaluating the pruned global model on the task's
// public data (coordinator::ValidationLoss), and every closed round writes
// the checkpoint (SaveCheckpoint, with its fsyncs). Every status is checked.
//
// A GetTask's latency counts from when its device's poll was due, so a
// device queued behind a blocked call is charged its wait. A GetTask
// counts as "during close" when it overlaps a Tick that closed a
// round or measured pruning costs. Prints `metric` lines: GetTask latency
// percentiles (all, during close), lock hold percentiles per operation and
// over all, and the rounds' count and wall time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "bench/task_bench.h"
#include "coordinator/engine.h"
#include "coordinator/state_checkpoint.h"
#include "coordinator/validation.h"
#include "model/threads.h"
#include "strategies/time_model.h"
#include "task/task_flags.h"
#include "transport/transfer.h"

ABSL_FLAG(int, devices, 500, "Registered devices, all polling.");
ABSL_FLAG(int, clients_per_round, 20, "Devices invited to each round.");
ABSL_FLAG(int, rounds, 6, "Rounds to run.");
ABSL_FLAG(int, pollers, 4, "Threads polling on the devices' behalf.");
ABSL_FLAG(int, poll_ms, 500, "Each device asks for its task this often.");
ABSL_FLAG(int, busy_ms, 1000,
          "From a device's task to its update (its download, training and "
          "upload, elsewhere).");
ABSL_FLAG(int, tick_ms, 20, "The ticker's period.");
ABSL_FLAG(int, validation_examples, 500,
          "Public examples the pruning costs are measured on.");
ABSL_FLAG(std::string, work_dir, "",
          "Where the checkpoint is written (default: a fresh temporary "
          "directory, removed at the end).");

namespace {

namespace fc = fedge::coordinator;
using fedge::bench::Check;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Prints `metric NAME VALUE`: the q-quantile (nearest rank) of `ms`, or NA
// when there is no sample (never 0).
void PrintQuantile(const std::string& name, const std::vector<double>& ms,
                   double q) {
  if (ms.empty()) {
    std::printf("metric %s NA\n", name.c_str());
    return;
  }
  std::printf("metric %s %.3f\n", name.c_str(),
              fedge::strategies::Quantile(ms, q));
}

struct Call {
  Clock::time_point start, end;
};

struct Recorder {
  std::mutex mu;
  std::map<std::string, std::vector<double>> held_ms;  // By operation.
  std::vector<Call> get_tasks;
  std::vector<double> submit_ms;
  std::vector<Call> heavy_ticks;  // Closed a round or measured costs.
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  fedge::model::ConfigureRuntime(1);
  const int n = absl::GetFlag(FLAGS_devices);
  const int pollers = std::max(1, absl::GetFlag(FLAGS_pollers));
  torch::manual_seed(0);
  const fedge::task::TaskSpec spec = Check(fedge::task::TaskFromFlags());
  fedge::model::Model base = fedge::bench::TaskModel(spec);
  auto data = Check(fedge::task::TaskData::Create(spec));
  const fedge::model::Dataset validation = fedge::model::Head(
      Check(data->Public()), absl::GetFlag(FLAGS_validation_examples));

  std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  const bool temporary = work_dir.empty();
  if (temporary) {
    work_dir = (std::filesystem::temp_directory_path() /
                absl::StrCat("fedge-engine-lock-", getpid()))
                   .string();
  }

  fc::EngineOptions options;
  options.rounds = absl::GetFlag(FLAGS_rounds);
  options.min_devices = n;
  options.selection.kind = fedge::strategies::SelectionKind::kRandomK;
  options.selection.clients_per_round = absl::GetFlag(FLAGS_clients_per_round);
  options.round_deadline = absl::Hours(1);
  options.heartbeat_timeout = absl::Hours(1);
  options.bandit.space.ranks = {4, 8, 16};
  options.bandit.space.max_ratio = 0.4;
  options.schedule.target = 0.3;  // The global ratio moves every round.
  options.schedule.end_round = options.rounds;

  Recorder rec;
  std::atomic<int64_t> validations{0};
  std::mutex payloads_mu;
  std::map<std::string, fedge::model::NamedTensors> payloads;  // By id.
  fc::EngineHooks hooks;
  hooks.publish = [&](const std::string& id,
                      const fedge::model::NamedTensors& tensors) {
    // As the server: serialise once, hash for the transfer's checksum.
    auto source = Check(fedge::transport::SafetensorsSource::Create(tensors));
    Check(fedge::transport::DescribePayload(
        *source, id, source->size(),
        fedge::transport::PayloadFormat::kSafetensors));
    std::lock_guard<std::mutex> lock(payloads_mu);
    payloads[id] = tensors;
  };
  const auto validation_loss = fc::ValidationLoss(&validation);
  hooks.validation_loss = [&](fedge::model::ModelImpl& m,
                              const fc::StopFn& stop) {
    ++validations;
    return validation_loss(m, stop);
  };
  hooks.on_round_closed = [&](const fc::RoundRecord&,
                              const fc::EngineState& state) {
    return fc::SaveCheckpoint(work_dir, {state, "bench", "lora"});
  };
  hooks.lock_held = [&](absl::string_view op, absl::Duration held) {
    std::lock_guard<std::mutex> lock(rec.mu);
    rec.held_ms[std::string(op)].push_back(absl::ToDoubleMilliseconds(held));
  };
  auto global = Check(fc::GlobalModel::Create(base, fc::Mode::kLora, {}));
  auto engine =
      Check(fc::Engine::Create(std::move(global), options, std::move(hooks)));
  for (int i = 0; i < n; ++i) {
    fc::DeviceFacts f;
    f.device_id = absl::StrCat("d", i);
    Check(engine->Register(f, absl::Now()).status());
  }

  const auto begin = Clock::now();
  std::atomic<bool> done{false};
  std::thread ticker([&] {
    while (!engine->finished()) {
      const int64_t closed = engine->rounds_closed();
      const int64_t measured = validations.load();
      Call tick{Clock::now(), {}};
      Check(engine->Tick(absl::Now()));
      tick.end = Clock::now();
      if (engine->rounds_closed() != closed || validations.load() != measured) {
        std::lock_guard<std::mutex> lock(rec.mu);
        rec.heavy_ticks.push_back(tick);
      }
      std::this_thread::sleep_for(
          std::chrono::milliseconds(absl::GetFlag(FLAGS_tick_ms)));
    }
    done = true;
  });

  std::vector<std::thread> threads;
  for (int t = 0; t < pollers; ++t) {
    threads.emplace_back([&, t] {
      const auto poll = std::chrono::milliseconds(absl::GetFlag(FLAGS_poll_ms));
      const auto busy = std::chrono::milliseconds(absl::GetFlag(FLAGS_busy_ms));
      struct Mine {
        std::string id;
        Clock::time_point next_poll;
        std::optional<fc::Task> task;  // Got, not yet submitted.
        Clock::time_point submit_at;
        int64_t submitted_round = 0;
      };
      std::vector<Mine> mine;
      std::mt19937 rng(t);
      for (int i = t; i < n; i += pollers) {
        mine.push_back({absl::StrCat("d", i),
                        Clock::now() + std::chrono::milliseconds(rng() % 500),
                        std::nullopt,
                        {},
                        0});
      }
      while (!done) {
        Clock::time_point soonest = Clock::now() + poll;
        for (Mine& d : mine) {
          if (d.task && Clock::now() >= d.submit_at) {
            fc::Submission s;
            s.device_id = d.id;
            s.round = d.task->round;
            s.nonce = d.task->nonce;
            s.num_examples = 100;
            s.loss_before = 2;
            s.loss_after = 1.5;
            {
              std::lock_guard<std::mutex> lock(payloads_mu);
              for (const auto& item : payloads.at(d.task->payload_id)) {
                s.update.insert(
                    item.key(),
                    item.value() + 0.01 * torch::randn_like(item.value()));
              }
            }
            const auto start = Clock::now();
            const absl::Status status = engine->Submit(s, absl::Now());
            const double ms = Ms(Clock::now() - start);
            // A round that closed at its deadline or target meanwhile
            // refuses it; anything else is a bench or engine bug.
            if (!status.ok() && !absl::IsFailedPrecondition(status)) {
              Check(status);
            }
            std::lock_guard<std::mutex> lock(rec.mu);
            rec.submit_ms.push_back(ms);
            d.submitted_round = d.task->round;
            d.task.reset();
          }
          if (!d.task && Clock::now() >= d.next_poll) {
            // From when the device asked (its poll was due), not from when
            // this thread got to it: a poll held up behind a blocked one
            // waited too (no coordinated omission).
            Call call{d.next_poll, {}};
            absl::StatusOr<fc::Task> task = engine->GetTask(d.id, absl::Now());
            call.end = Clock::now();
            d.next_poll = call.end + poll;
            if (task.ok() && task->round != d.submitted_round) {
              d.task = *task;
              d.submit_at = call.end + busy;
            } else if (!task.ok() && !absl::IsUnavailable(task.status()) &&
                       !absl::IsOutOfRange(task.status())) {
              Check(task.status());
            }
            std::lock_guard<std::mutex> lock(rec.mu);
            rec.get_tasks.push_back(call);
          }
          soonest = std::min(soonest, d.task ? d.submit_at : d.next_poll);
        }
        std::this_thread::sleep_until(soonest);
      }
    });
  }
  ticker.join();
  for (std::thread& t : threads) t.join();
  const double wall_s = Ms(Clock::now() - begin) / 1e3;
  Check(engine->failure());
  if (temporary) std::filesystem::remove_all(work_dir);

  std::vector<double> all, during;
  for (const Call& c : rec.get_tasks) {
    const double ms = Ms(c.end - c.start);
    all.push_back(ms);
    for (const Call& tick : rec.heavy_ticks) {
      if (c.start < tick.end && tick.start < c.end) {
        during.push_back(ms);
        break;
      }
    }
  }
  std::vector<double> held;
  for (const auto& [op, v] : rec.held_ms) {
    held.insert(held.end(), v.begin(), v.end());
  }
  std::printf("metric devices %d\n", n);
  std::printf("metric rounds_closed %lld\n",
              static_cast<long long>(engine->rounds_closed()));
  std::printf("metric wall_s %.1f\n", wall_s);
  std::printf("metric pruning_cost_evaluations %lld\n",
              static_cast<long long>(validations.load()));
  std::printf("metric gettask_calls %zu\n", all.size());
  PrintQuantile("gettask_p50_ms", all, 0.5);
  PrintQuantile("gettask_p99_ms", all, 0.99);
  std::printf("metric gettask_calls_during_close %zu\n", during.size());
  PrintQuantile("gettask_p99_ms_during_close", during, 0.99);
  PrintQuantile("gettask_max_ms", all, 1);
  PrintQuantile("submit_p99_ms", rec.submit_ms, 0.99);
  PrintQuantile("lock_hold_p99_ms", held, 0.99);
  PrintQuantile("lock_hold_max_ms", held, 1);
  for (const auto& [op, v] : rec.held_ms) {
    PrintQuantile("lock_hold_" + op + "_p99_ms", v, 0.99);
    PrintQuantile("lock_hold_" + op + "_max_ms", v, 1);
    std::printf("metric lock_holds_%s %zu\n", op.c_str(), v.size());
  }
  return 0;
}
