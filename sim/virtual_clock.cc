#include "sim/virtual_clock.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include <torch/types.h>

#include "client/local_round.h"
#include "client/secure_update.h"
#include "coordinator/evaluator.h"
#include "coordinator/global_model.h"
#include "coordinator/records.h"
#include "coordinator/service.h"
#include "coordinator/validation.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/safetensors.h"
#include "model/trainer.h"
#include "sim/compute_costs.h"
#include "sim/secure_exchange.h"
#include "task/task_data.h"
#include "transport/link_profile.h"
#include "transport/split_proto.h"
#include "transport/task_proto.h"
#include "transport/transfer.h"
#include "transport/update_codec.h"

namespace fedge::sim {
namespace {

namespace fc = coordinator;

struct Device {
  fc::DeviceFacts facts;
  DeviceProfile profile;
  transport::LinkProfile link;
  model::Dataset data;  // Its shard of the task's private data.
  transport::ErrorFeedback feedback;
};

// One invited device's round.
struct Job {
  Device* device = nullptr;
  int64_t device_index = 0;  // Its place in VirtualConfig::devices.
  fc::Task task;
  v1::Task proto;
  absl::Status error;
  bool declined = false;
  fc::Submission submission;  // Timings charged, not measured.
  double seconds = 0;         // Charged: from its task to its update.
  // Secure aggregation: its part in the exchange, and when the round's
  // tasks went out (its inbox's arrival counts from there).
  SecureParty* party = nullptr;
  absl::Time opened;
  bool accepted = false;  // The engine took its update.
};

// The compute-cost table's key, followed by the mode (lora, dense): CPU
// seconds of build + train + encode per training FLOP (client::LocalResult::
// train_flops) on this machine.
constexpr char kSecondsPerFlop[] = "seconds_per_training_flop";
// How often the job that calibrates it is timed (the least is kept).
constexpr int kCalibrationTimings = 3;

}  // namespace

absl::Status RunVirtualFederation(const VirtualConfig& config,
                                  const fc::EngineOptions& options) {
  const size_t n = config.devices.size();
  if (n == 0 || config.links.size() != n) {
    return absl::InvalidArgumentError("one device profile and link per device");
  }
  if (config.workers < 1 || config.eval_every < 1) {
    return absl::InvalidArgumentError("workers and eval_every must be >= 1");
  }
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (config.malicious < 0 || config.malicious > static_cast<int64_t>(n) ||
      (config.attack != "scale" && config.attack != "signflip" &&
       config.attack != "nan") ||
      !(config.attack_scale > 0)) {
    return absl::InvalidArgumentError(
        "malicious must be in [0, devices], attack scale, signflip or nan, "
        "attack_scale > 0");
  }
  if (options.secure.enabled && config.malicious > 0) {
    return absl::InvalidArgumentError(
        "hostile devices (--malicious) are not simulated under secure "
        "aggregation: the coordinator cannot see their updates to reject "
        "them (docs/privacy.md)");
  }

  // The base, as the coordinator loads it and as devices read it.
  absl::StatusOr<model::Model> base = fc::LoadBase(config.task.base_dir);
  if (!base.ok()) return base.status();
  absl::StatusOr<std::unique_ptr<model::SafetensorsReader>> reader =
      model::SafetensorsReader::Open(config.task.base_dir + "/" +
                                     model::kWeightsFile);
  if (!reader.ok()) return reader.status();
  const std::string config_json = (*base)->ConfigJson();

  // Data: every device's shard, the coordinator's held-out data, and its
  // validation examples from the public split, which no device holds.
  task::TaskSpec spec = config.task;
  spec.evaluation.examples = config.eval_examples;
  absl::StatusOr<std::unique_ptr<task::TaskData>> task_data =
      task::TaskData::Create(spec);
  if (!task_data.ok()) return task_data.status();
  if (absl::Status s = task::CheckModelFitsTask(**task_data, **base); !s.ok()) {
    return s;
  }
  absl::StatusOr<model::Dataset> eval = (*task_data)->Eval();
  if (!eval.ok()) return eval.status();
  const model::Dataset test = *std::move(eval);
  absl::StatusOr<std::vector<model::Dataset>> shards =
      (*task_data)->Shards(static_cast<int>(n));
  if (!shards.ok()) return shards.status();
  absl::StatusOr<model::Dataset> pub = (*task_data)->Public();
  if (!pub.ok()) return pub.status();
  const model::Dataset validation =
      model::Head(*pub, config.validation_examples);

  absl::StatusOr<std::unique_ptr<ComputeCostTable>> costs =
      ComputeCostTable::Open(config.compute_costs);
  if (!costs.ok()) return costs.status();

  std::vector<Device> devices(n);
  for (size_t i = 0; i < n; ++i) {
    Device& d = devices[i];
    d.profile = config.devices[i];
    absl::StatusOr<transport::LinkProfile> link =
        transport::ParseLinkProfile(config.links[i]);
    if (!link.ok()) return link.status();
    d.link = *link;
    d.data = std::move((*shards)[i]);
    d.facts.device_id = absl::StrCat("device-", i);
    d.facts.cores = 4;
    d.facts.memory_total_bytes = d.profile.memory_mb << 20;
    d.facts.memory_budget_bytes = d.facts.memory_total_bytes;
    d.facts.arch = "virtual";
    d.facts.cpu_model = d.profile.board;
    d.facts.link = d.link.name;
  }

  // The engine, publishing payloads into memory.
  absl::StatusOr<std::unique_ptr<fc::GlobalModel>> global =
      fc::CreateGlobalModel(*base, options);
  if (!global.ok()) return global.status();
  absl::StatusOr<std::unique_ptr<fc::RoundLog>> log =
      fc::RoundLog::Open(config.run_dir, 1, nullptr);
  if (!log.ok()) return log.status();
  std::map<std::string, model::NamedTensors> payloads;  // Main thread only.
  absl::Time now = absl::UnixEpoch();
  absl::Mutex closed_mu;
  std::map<std::pair<int64_t, int64_t>, absl::Time> closed_at;
  int64_t committed = 0;
  double aggregate_s = 0;  // Of the last closed round.
  fc::Evaluator evaluator(
      base->get(), options.mode, &test,
      [&](const fc::RoundRecord& r, const std::optional<model::EvalResult>& e,
          double seconds) {
        absl::Time at;
        {
          absl::MutexLock lock(&closed_mu);
          at = closed_at[{r.round, r.attempt}];
        }
        if (e && config.progress != nullptr) {
          const double t = absl::ToDoubleSeconds(at - absl::UnixEpoch());
          if (e->bits_per_byte > 0) {
            std::fprintf(
                config.progress,
                "round %d: held-out %.4f bits per byte%s at %.1f virtual s\n",
                static_cast<int>(r.round), e->bits_per_byte,
                e->exact_match >= 0 ? absl::StrFormat(", exact match %.1f%%",
                                                      100 * e->exact_match)
                                          .c_str()
                                    : "",
                t);
          } else {
            std::fprintf(config.progress,
                         "round %d: global accuracy %.2f%% at %.1f virtual s\n",
                         static_cast<int>(r.round), 100 * e->accuracy, t);
          }
          std::fflush(config.progress);
        }
        if (absl::Status s = (*log)->RecordEvaluation(r, e, seconds, at);
            !s.ok()) {
          std::fprintf(stderr, "fedge-vclock: %s\n", s.ToString().c_str());
        }
      });
  fc::EngineHooks hooks;
  // The engine's own work (measuring pruning costs, aggregating) runs on
  // this thread, one LibTorch thread: its CPU time is what it cost, with
  // no wait for a core the workers or the evaluator hold.
  hooks.clock = [] {
    return absl::UnixEpoch() + absl::Seconds(ThreadCpuSeconds());
  };
  hooks.validation_loss = fc::ValidationLoss(&validation);
  hooks.publish = [&payloads](const std::string& id,
                              const model::NamedTensors& tensors) {
    payloads[id] = tensors;
  };
  hooks.on_round_closed = [&](const fc::RoundRecord& r,
                              const fc::EngineState& state) -> absl::Status {
    {
      absl::MutexLock lock(&closed_mu);
      closed_at[{r.round, r.attempt}] = now;
    }
    aggregate_s = r.aggregate_s;
    if (absl::Status s = (*log)->RecordRound(r); !s.ok()) return s;
    bool evaluate = false;
    if (r.committed) {
      ++committed;
      evaluate = test.size() > 0 && (committed % config.eval_every == 0 ||
                                     r.round == options.rounds);
    }
    // The result, as the coordinator writes it.
    evaluator.Submit(r, state.global, evaluate,
                     fc::FinalExport(r, config.task, options, config.run_dir));
    if (config.progress != nullptr) {
      const std::string privacy =
          r.dp_clip_norm > 0 ? absl::StrFormat(", epsilon %.2f (clip %.3g)",
                                               r.dp_epsilon, r.dp_clip_norm)
                             : "";
      std::fprintf(config.progress,
                   "round %d/%d%s: %d/%d updates (%d late, %d declined)%s, "
                   "%.1f virtual s\n",
                   static_cast<int>(r.round), static_cast<int>(options.rounds),
                   r.committed ? "" : " (too few updates, retrying)",
                   static_cast<int>(r.accepted), static_cast<int>(r.invited),
                   static_cast<int>(r.stragglers), static_cast<int>(r.declined),
                   privacy.c_str(), r.round_s);
      std::fflush(config.progress);
    }
    return absl::OkStatus();
  };
  absl::StatusOr<std::unique_ptr<fc::Engine>> created =
      fc::Engine::Create(*std::move(global), options, std::move(hooks));
  if (!created.ok()) return created.status();
  fc::Engine& engine = **created;
  for (Device& d : devices) {
    if (absl::StatusOr<std::string> s = engine.Register(d.facts, now);
        !s.ok()) {
      return s.status();
    }
  }

  // What every device of a round does, on `config.workers` threads.
  const auto work = [&](Job& job) {
    Device& d = *job.device;
    const model::NamedTensors& payload = payloads.at(job.task.payload_id);
    absl::StatusOr<std::unique_ptr<transport::SafetensorsSource>> served =
        transport::SafetensorsSource::Create(payload);
    if (!served.ok()) {
      job.error = served.status();
      return;
    }
    const double rtt = absl::ToDoubleSeconds(d.link.rtt);
    const double download_s =
        rtt + (*served)->size() / d.link.downlink_bytes_per_s();
    const model::Dataset* data = &d.data;
    client::LocalHooks local_hooks;
    local_hooks.admit = [&](int64_t bytes) {
      return bytes + config.runtime_bytes <= d.facts.memory_budget_bytes;
    };
    // Split tasks talk to the engine's half in-process, through the wire
    // format, so their bytes and round trips can be charged to the link.
    std::unique_ptr<transport::WireSplitLink> split_link;
    double server_cpu_s = 0;  // The engine's half, run on this thread.
    if (job.task.cut > 0) {
      absl::StatusOr<transport::CodecOptions> codec =
          transport::ActivationCodecOptions(job.proto.split());
      if (!codec.ok()) {
        job.error = codec.status();
        return;
      }
      const std::string id = d.facts.device_id;
      const fc::Task& task = job.task;
      // Runs `call` (the engine's half) and charges its CPU time to the
      // server, not the device.
      const auto on_server = [&server_cpu_s](auto call) {
        const double start = ThreadCpuSeconds();
        auto result = call();
        server_cpu_s += ThreadCpuSeconds() - start;
        return result;
      };
      split_link = std::make_unique<transport::WireSplitLink>(
          [&engine, id, &task, now, on_server](const split::StepRequest& r) {
            return on_server([&] {
              return engine.SplitStep(id, task.round, task.nonce, r, now);
            });
          },
          [&engine, id, &task, now, on_server](int64_t applied) {
            return on_server([&] {
              return engine.SplitFinish(id, task.round, task.nonce, applied,
                                        now);
            });
          },
          *codec);
      local_hooks.split_link = split_link.get();
    }
    const auto train_locally = [&] {
      return client::TrainLocally(job.proto, config_json, **reader, payload,
                                  *data, local_hooks);
    };
    const double cpu_start = ThreadCpuSeconds();
    absl::StatusOr<client::LocalResult> local = train_locally();
    if (!local.ok()) {
      job.error = local.status();
      return;
    }
    const double speed = d.profile.relative_speed;
    if (local->declined) {
      job.declined = true;
      job.seconds = download_s + (ThreadCpuSeconds() - cpu_start) / speed;
      return;
    }
    // Build and train on the device; the engine's split half is charged at
    // server speed below.
    double train_cpu_s = ThreadCpuSeconds() - cpu_start - server_cpu_s;
    fc::Submission& s = job.submission;
    const double encode_start = ThreadCpuSeconds();
    // Plain: the update as the task's codec sends it. Secure aggregation:
    // the device computes its change itself, encodes it on the ring and
    // masks it, charged apart from training (secure_s), since the
    // compute-cost table's rate is training and the plain codec's encoding.
    std::optional<transport::EncodedPayload> encoded;
    transport::CodecOptions codec;
    double secure_s = 0;
    const bool hostile = job.device_index < config.malicious;
    if (job.party != nullptr) {
      SecureParty& party = *job.party;
      const fc::SecureTask& secure = *job.task.secure;
      absl::StatusOr<std::vector<float>> change = client::SecureChange(
          config_json, job.task.plan, job.proto.lora().alpha(), local->update,
          payload, *secure.layout, secure.clip_norm, &s.change_norm);
      if (!change.ok()) {
        job.error = change.status();
        return;
      }
      party.work_s += (ThreadCpuSeconds() - encode_start) / speed;
      absl::StatusOr<std::vector<uint32_t>> masked = MaskChange(party, *change);
      if (!masked.ok()) {
        job.error = masked.status();
        return;
      }
      s.masked = *std::move(masked);
      secure_s = (ThreadCpuSeconds() - encode_start) / speed;
    } else {
      if (hostile && config.attack != "nan") {
        const double sign = config.attack == "signflip" ? -1.0 : 1.0;
        for (auto& item : local->update) {
          const at::Tensor& sent = payload[item.key()];
          item.value() =
              sent + sign * config.attack_scale * (item.value() - sent);
        }
      }
      codec = transport::UploadCodecOptions(job.proto);
      absl::StatusOr<model::NamedTensors> update =
          transport::UpdateToSend(local->update, payload, codec.codec);
      if (!update.ok()) {
        job.error = update.status();
        return;
      }
      absl::StatusOr<transport::EncodedPayload> encoding =
          transport::EncodeUpdate(*update, codec, &d.feedback);
      if (!encoding.ok()) {
        job.error = encoding.status();
        return;
      }
      encoded = *std::move(encoding);
    }
    const double encode_cpu_s =
        job.party != nullptr ? 0 : ThreadCpuSeconds() - encode_start;
    double device_cpu_s = train_cpu_s + encode_cpu_s;
    if (job.task.cut == 0 && local->train_flops > 0) {
      const std::string key =
          absl::StrCat(kSecondsPerFlop, job.proto.dense() ? " dense" : " lora");
      std::optional<double> rate = (*costs)->Find(key);
      if (!rate.has_value()) {
        // The first job calibrates the rate: its training timed
        // kCalibrationTimings times, the least kept (the timing least
        // disturbed by this machine's other threads), plus its encoding.
        for (int i = 1; i < kCalibrationTimings; ++i) {
          const double start = ThreadCpuSeconds();
          absl::StatusOr<client::LocalResult> again = train_locally();
          if (!again.ok()) {
            job.error = again.status();
            return;
          }
          train_cpu_s = std::min(train_cpu_s, ThreadCpuSeconds() - start);
        }
        rate = (*costs)->Charge(
            key, (train_cpu_s + encode_cpu_s) / local->train_flops);
      }
      device_cpu_s = *rate * local->train_flops;
    }
    if (encoded.has_value()) {
      absl::StatusOr<model::NamedTensors> decoded =
          transport::DecodeUpdate(encoded->bytes, {}, &codec);
      if (!decoded.ok()) {
        job.error = decoded.status();
        return;
      }
      s.update = *std::move(decoded);
      s.carries_change = transport::CarriesChange(codec.codec);
      if (hostile && config.attack == "nan" && !s.update.is_empty()) {
        s.update[0].value().view(-1)[0] = NAN;
      }
      s.importance = local->importance;
    }
    s.device_id = d.facts.device_id;
    s.round = job.task.round;
    s.nonce = job.task.nonce;
    s.num_examples = local->examples;
    s.loss_before = local->loss_before;
    s.loss_after = local->loss_after;
    fc::Timings& t = s.timings;
    t.download_s = download_s;
    t.train_s = device_cpu_s / speed;
    s.split_steps = local->split_steps;
    if (split_link != nullptr) {
      // The coordinator's half runs at server speed, not the device's; each
      // exchange costs a round trip and its bytes at the link's rates.
      t.split_bytes_up = split_link->bytes_up();
      t.split_bytes_down = split_link->bytes_down();
      t.split_s = server_cpu_s + split_link->exchanges() * rtt +
                  t.split_bytes_up / d.link.uplink_bytes_per_s() +
                  t.split_bytes_down / d.link.downlink_bytes_per_s();
      t.train_s += t.split_s;
    }
    // A masked vector goes as 4-byte ring words, uncompressed (masks
    // make it incompressible).
    t.bytes_up = encoded.has_value()
                     ? static_cast<int64_t>(encoded->bytes.size())
                     : 4 * static_cast<int64_t>(s.masked.size());
    t.raw_bytes_up = encoded.has_value() ? encoded->raw_bytes : t.bytes_up;
    t.upload_s = rtt + t.bytes_up / d.link.uplink_bytes_per_s();
    t.bytes_down = t.raw_bytes_down = (*served)->size();
    t.peak_rss_bytes = config.runtime_bytes + local->estimated_bytes;
    if (job.party != nullptr) {
      // Masking waits for the shares addressed to it as well as its
      // training; its change and masking count as its compute.
      t.train_s += secure_s;
      t.secagg_mask_s = secure_s;
      const double inbox_s =
          absl::ToDoubleSeconds(job.party->inbox_at - job.opened);
      job.seconds = std::max(t.download_s + t.train_s - secure_s, inbox_s) +
                    secure_s + t.upload_s;
    } else {
      job.seconds = t.download_s + t.train_s + t.upload_s;
    }
  };

  int64_t idle_ticks = 0;
  int64_t rejected_hostile = 0;
  bool swapped = false;
  while (!engine.finished()) {
    if (absl::Status s = engine.Tick(now); !s.ok()) return s;
    if (engine.finished()) break;
    if (!swapped && config.swap.round > 0 &&
        engine.round() >= config.swap.round) {
      swapped = true;
      for (const auto& [a, b] : config.swap.pairs) {
        std::swap(devices[a].profile.relative_speed,
                  devices[b].profile.relative_speed);
      }
      if (config.progress != nullptr) {
        std::fprintf(config.progress,
                     "round %lld: %zu device pairs swapped "
                     "their speeds\n",
                     static_cast<long long>(engine.round()),
                     config.swap.pairs.size());
      }
    }
    // Every device asks for its task; the invited get one.
    std::vector<Job> jobs;
    for (size_t i = 0; i < devices.size(); ++i) {
      Device& d = devices[i];
      absl::StatusOr<fc::Task> task = engine.GetTask(d.facts.device_id, now);
      if (!task.ok()) continue;
      Job job;
      job.device = &d;
      job.device_index = static_cast<int64_t>(i);
      job.task = *task;
      job.proto = fc::TaskToProto(*task, options, "virtual", 1 << 20);
      jobs.push_back(std::move(job));
    }
    if (jobs.empty()) {
      // No round open (a retry about to open): let time pass.
      if (++idle_ticks > 1000) {
        return absl::InternalError("the engine opened no round");
      }
      now += absl::Seconds(1);
      continue;
    }
    idle_ticks = 0;
    // With every task out, the engine measures the next round's pruning
    // costs while the devices train: it holds the engine, so no update is
    // heard before it is done.
    absl::Time opened = now;
    for (const Job& job : jobs) opened = std::max(opened, job.task.issued);
    const double measure_start = ThreadCpuSeconds();
    if (absl::Status s = engine.Tick(opened); !s.ok()) return s;
    const absl::Time measured =
        opened + absl::Seconds(ThreadCpuSeconds() - measure_start);
    // Secure aggregation: the key exchange runs from the tasks' issue,
    // beside the downloads and training.
    std::vector<SecureParty> parties;
    if (jobs.front().task.secure.has_value()) {
      parties.reserve(jobs.size());
      for (Job& job : jobs) {
        SecureParty party;
        party.device_id = job.device->facts.device_id;
        party.task = job.task;
        party.link = job.device->link;
        party.speed = job.device->profile.relative_speed;
        parties.push_back(std::move(party));
      }
      for (size_t i = 0; i < jobs.size(); ++i) {
        jobs[i].party = &parties[i];
        jobs[i].opened = opened;
      }
      if (absl::Status s = ExchangeKeys(engine, parties, opened, measured);
          !s.ok()) {
        return s;
      }
    }
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    const int workers =
        std::min<int>(config.workers, static_cast<int>(jobs.size()));
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&] {
        for (size_t i = next++; i < jobs.size(); i = next++) work(jobs[i]);
      });
    }
    for (std::thread& t : threads) t.join();
    for (const Job& job : jobs) {
      if (!job.error.ok()) {
        return absl::Status(
            job.error.code(),
            absl::StrCat(job.device->facts.device_id, " in round ",
                         job.task.round, ": ", job.error.message()));
      }
    }

    // The engine hears from each device when its charged time is up,
    // counted from when its task was issued (the round opens once the
    // coordinator has measured any pruning cost it lacked, real server time
    // like aggregation), and not before it measured ahead.
    now = opened;
    std::sort(jobs.begin(), jobs.end(),
              [](const Job& a, const Job& b) { return a.seconds < b.seconds; });
    const int64_t closed = engine.rounds_closed();
    // Under secure aggregation the round stays open after collecting,
    // while it unmasks.
    const auto collecting = [&] {
      return engine.rounds_closed() == closed && !engine.finished() &&
             engine.secure_phase().value_or(fc::SecurePhase::kMaskedInput) ==
                 fc::SecurePhase::kMaskedInput;
    };
    const auto still_open = [&] {
      return engine.rounds_closed() == closed && !engine.finished();
    };
    for (size_t i = 0; i < jobs.size(); ++i) {
      Job& job = jobs[i];
      const absl::Time at = opened + absl::Seconds(job.seconds);
      if (at > job.task.deadline) break;  // This one and the rest are late.
      now = std::max(at, measured);
      for (size_t j = i + 1; j < jobs.size(); ++j) {  // Still working.
        (void)engine.Heartbeat(jobs[j].device->facts.device_id, now);
      }
      const absl::Status status =
          job.declined
              ? engine.Decline(job.device->facts.device_id, job.task.round,
                               job.task.nonce, "memory", now)
              : engine.Submit(job.submission, now);
      job.accepted = !job.declined && status.ok();
      // FailedPrecondition: the round has its target count already.
      // InvalidArgument from a hostile device: rejected, as it should be.
      if (absl::IsInvalidArgument(status) &&
          job.device_index < config.malicious) {
        ++rejected_hostile;
        if (config.progress != nullptr) {
          std::fprintf(config.progress,
                       "fedge-vclock: round %lld: hostile update of %s "
                       "rejected: %s\n",
                       static_cast<long long>(job.task.round),
                       job.device->facts.device_id.c_str(),
                       std::string(status.message()).c_str());
        }
      } else if (!status.ok() && !absl::IsFailedPrecondition(status)) {
        return status;
      }
      if (absl::Status s = engine.Tick(now); !s.ok()) return s;
      if (!collecting()) break;
    }
    if (collecting()) {
      // Stragglers remain: the deadline closes the round.
      now = std::max(now, jobs.front().task.deadline);
      for (const Job& job : jobs) {
        (void)engine.Heartbeat(job.device->facts.device_id, now);
      }
      if (absl::Status s = engine.Tick(now); !s.ok()) return s;
    }
    if (!parties.empty() && still_open()) {
      std::vector<SecureParty*> survivors;
      for (Job& job : jobs) {
        if (job.accepted) survivors.push_back(job.party);
      }
      absl::StatusOr<absl::Time> unmasked = Unmask(engine, survivors, now);
      if (!unmasked.ok()) return unmasked.status();
      now = *unmasked;
    }
    // This round's payloads are done with (the engine keeps what it needs).
    for (const Job& job : jobs) payloads.erase(job.task.payload_id);
    // The next round's tasks go out once aggregation is done.
    if (engine.rounds_closed() > closed) now += absl::Seconds(aggregate_s);
  }
  evaluator.Drain();
  if (config.malicious > 0 && config.progress != nullptr) {
    std::fprintf(config.progress,
                 "fedge-vclock: %lld hostile device(s), attack %s: %lld "
                 "update(s) rejected by the coordinator\n",
                 static_cast<long long>(config.malicious),
                 config.attack.c_str(),
                 static_cast<long long>(rejected_hostile));
  }
  return engine.failure();
}

}  // namespace fedge::sim
