#include "coordinator/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <glog/logging.h>
#include <torch/types.h>

#include "model/kill_point.h"
#include "model/trainer.h"
#include "pruning/plan.h"
#include "transport/update_codec.h"

namespace fedge::coordinator {
namespace {

// FNV-1a: a seed mix that is the same on every platform.
uint64_t Mix(uint64_t h, absl::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t Seed(uint64_t seed, absl::string_view device, int64_t salt) {
  uint64_t h = 14695981039346656037ULL;
  h = Mix(
      h, absl::string_view(reinterpret_cast<const char*>(&seed), sizeof(seed)));
  h = Mix(h, device);
  return Mix(
      h, absl::string_view(reinterpret_cast<const char*>(&salt), sizeof(salt)));
}

std::string RandomHex(size_t bytes) {
  std::random_device device;
  std::string raw;
  for (size_t i = 0; i < bytes; ++i) {
    raw.push_back(static_cast<char>(device() & 0xff));
  }
  return absl::BytesToHexString(raw);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// -1 for "auto", 0 for "off", k for a fixed cut k >= 1.
absl::StatusOr<int64_t> ParseSplitMode(const std::string& mode) {
  if (mode == "auto") return -1;
  if (mode == "off") return 0;
  int64_t cut = 0;
  if (!absl::SimpleAtoi(mode, &cut) || cut < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split mode '", mode, "' is not off, auto or a block number >= 1"));
  }
  return cut;
}

}  // namespace

absl::Status ValidateDeviceFacts(const DeviceFacts& facts) {
  const std::string& id = facts.device_id;
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError("device_id must be 1-128 characters");
  }
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("device_id '", absl::CHexEscape(id),
                       "' may only hold letters, digits, '.', '_' and '-'"));
    }
  }
  if (facts.cores < 0 || facts.memory_total_bytes < 0 ||
      facts.memory_available_bytes < 0 || facts.memory_budget_bytes < 0 ||
      !(facts.benchmark_gflops >= 0) ||
      !std::isfinite(facts.benchmark_gflops)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", id, ": negative or non-finite hardware facts"));
  }
  if (facts.memory_total_bytes > 0 &&
      facts.memory_budget_bytes > facts.memory_total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device ", id, ": memory budget above the device's total memory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ChooseCut(const SplitPolicy& policy,
                                  const model::ModelImpl& base,
                                  const pruning::PruningPlan& plan,
                                  int64_t budget_bytes, int64_t batch_size) {
  const auto blocks = static_cast<int64_t>(base.block_shapes().size());
  absl::StatusOr<int64_t> mode = ParseSplitMode(policy.mode);
  if (!mode.ok()) return mode.status();
  if (*mode > blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "split at block ", *mode, ": the model has ", blocks, " blocks"));
  }
  if (*mode >= 0) return *mode;
  if (budget_bytes <= 0) return 0;
  absl::StatusOr<model::Model> sub =
      base.WithBlockShapes(pruning::PlannedShapes(plan));
  if (!sub.ok()) return sub.status();
  const std::vector<int64_t> shape = (*sub)->ExampleInputShape(batch_size);
  // The trainer's estimate; the adapters' gradients and moments are
  // negligible beside the activations.
  auto peak = [](int64_t activations) {
    return model::TrainingPeakBytes(/*trainable_bytes=*/0, activations);
  };
  if (peak((*sub)->TrainingActivationBytes(shape)) <= budget_bytes) return 0;
  for (int64_t cut = blocks - 1; cut > 1; --cut) {
    if (peak((*sub)->HeadTrainingActivationBytes(shape, cut)) <= budget_bytes) {
      return cut;
    }
  }
  return 1;
}

absl::Status EngineOptions::Validate() const {
  if (rounds < 1) return absl::InvalidArgumentError("rounds must be >= 1");
  if (min_devices < 1 || min_updates < 1 || max_attempts < 1) {
    return absl::InvalidArgumentError(
        "min_devices, min_updates and max_attempts must be >= 1");
  }
  if (round_deadline <= absl::ZeroDuration() ||
      heartbeat_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "round deadline and heartbeat timeout must be positive");
  }
  if (selection.clients_per_round < 0 || selection.overcommit < 1) {
    return absl::InvalidArgumentError(
        "clients_per_round must be >= 0 and overcommit >= 1");
  }
  if (selection.clients_per_round > 0 &&
      min_updates > selection.clients_per_round) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_updates (", min_updates, ") cannot exceed clients_per_round (",
        selection.clients_per_round, ")"));
  }
  if (absl::Status s = schedule.Validate(); !s.ok()) return s;
  if (absl::Status s = lora.Validate(); !s.ok()) return s;
  if (!(importance_ema >= 0 && importance_ema <= 1)) {
    return absl::InvalidArgumentError("importance_ema must be in [0, 1]");
  }
  if (train.epochs < 1 || train.batch_size < 1 || train.max_steps < 0 ||
      !(train.learning_rate > 0) || !(train.fedprox_mu >= 0)) {
    return absl::InvalidArgumentError(
        "training needs epochs >= 1, batch_size >= 1, max_steps >= 0, "
        "learning_rate > 0, fedprox_mu >= 0");
  }
  if (absl::StatusOr<transport::Codec> codec =
          transport::ParseCodec(upload_codec);
      !codec.ok()) {
    return codec.status();
  }
  if (absl::StatusOr<int64_t> cut = ParseSplitMode(split.mode); !cut.ok()) {
    return cut.status();
  }
  if (absl::StatusOr<transport::Codec> codec =
          transport::ParseCodec(split.activation_codec);
      !codec.ok() || *codec == transport::Codec::kTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("split activation codec '", split.activation_codec,
                     "' is not float32, float16, bfloat16 or int8_row"));
  }
  if (split.local_loss_steps < 0 ||
      !(split.keep_fraction > 0 && split.keep_fraction <= 1) ||
      (split.keep_fraction < 1 && split.local_loss_steps == 0)) {
    return absl::InvalidArgumentError(
        "split needs local_loss_steps >= 0 and keep_fraction in (0, 1], "
        "and dataset pruning (keep_fraction < 1) needs local-loss steps");
  }
  if (max_examples < 1 || max_devices < 1) {
    return absl::InvalidArgumentError(
        "max_examples and max_devices must be >= 1");
  }
  for (const std::string& id : allow_list) {
    DeviceFacts facts;
    facts.device_id = id;
    if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("allow-list: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::unique_ptr<GlobalModel> global, EngineOptions options,
    EngineHooks hooks) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (absl::StatusOr<std::unique_ptr<strategies::Bandit>> probe =
          strategies::CreateBandit(options.bandit);
      !probe.ok()) {
    return probe.status();
  }
  if (!hooks.clock) hooks.clock = [] { return absl::Now(); };
  return std::unique_ptr<Engine>(
      new Engine(std::move(global), std::move(options), std::move(hooks)));
}

Engine::Engine(std::unique_ptr<GlobalModel> global, EngineOptions options,
               EngineHooks hooks)
    : global_(std::move(global)),
      options_(std::move(options)),
      hooks_(std::move(hooks)),
      prunable_share_(pruning::PrunableShare(global_->base())) {}

std::mt19937_64 Engine::Rng(const std::string& device_id, int64_t salt) const {
  return std::mt19937_64(Seed(options_.seed, device_id, salt));
}

absl::StatusOr<std::string> Engine::Register(const DeviceFacts& facts,
                                             absl::Time now) {
  if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) return s;
  if (!options_.allow_list.empty() &&
      options_.allow_list.count(facts.device_id) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("device ", facts.device_id, " is not on the allow-list"));
  }
  TimedLock lock(&mu_, &hooks_.lock_held, "register");
  auto it = devices_.find(facts.device_id);
  if (it == devices_.end()) {
    if (static_cast<int64_t>(devices_.size()) >= options_.max_devices &&
        !EvictOneSilent(now)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("registry full (", options_.max_devices, " devices)"));
    }
    Device device;
    device.bandit = *strategies::CreateBandit(options_.bandit);
    device.times = strategies::DeviceTimeModel(prunable_share_);
    it = devices_.emplace(facts.device_id, std::move(device)).first;
  }
  it->second.facts = facts;
  it->second.last_seen = now;
  it->second.polled = false;
  return RandomHex(16);
}

bool Engine::EvictOneSilent(absl::Time now) {
  auto victim = devices_.end();
  for (auto it = devices_.begin(); it != devices_.end(); ++it) {
    if (it->second.polled ||
        now - it->second.last_seen <= options_.heartbeat_timeout ||
        (round_ && round_->participants.count(it->first) > 0)) {
      continue;
    }
    if (victim == devices_.end() ||
        it->second.last_seen < victim->second.last_seen) {
      victim = it;
    }
  }
  if (victim == devices_.end()) return false;
  LOG(INFO) << "registry full: forgetting device " << victim->first
            << ", which never asked for work";
  devices_.erase(victim);
  return true;
}

absl::Status Engine::OpenRound(absl::Time now) {
  if (next_round_ > options_.rounds || !failure_.ok()) return absl::OkStatus();
  std::vector<strategies::Candidate> candidates;
  for (const auto& [id, device] : devices_) {
    if (options_.invite_only_polled && !device.polled) continue;
    candidates.push_back({id, device.expected_seconds});
  }
  if (candidates.empty() ||
      static_cast<int64_t>(candidates.size()) < options_.min_devices) {
    return absl::OkStatus();
  }
  std::mt19937_64 rng = Rng("", next_round_ * 1000 + attempt_);
  const strategies::Selection selection = strategies::SelectClients(
      candidates, options_.selection,
      absl::ToDoubleSeconds(options_.round_deadline), rng);
  absl::StatusOr<RoundAggregate> aggregate =
      global_->BeginRound(options_.aggregator);
  if (!aggregate.ok()) return aggregate.status();
  Round round;
  round.number = next_round_;
  round.attempt = attempt_;
  round.opened = now;
  round.deadline = now + options_.round_deadline;
  round.global_ratio = options_.schedule.Ratio(next_round_);
  round.target = std::max<int64_t>(selection.target_updates, 1);
  round.aggregate = std::move(*aggregate);
  for (const std::string& id : selection.invited) {
    round.participants[id];
  }
  round_ = std::move(round);
  // Every pruning cost the bandits may ask about, normally measured during
  // the round before (MeasureAhead). What is missing (the first round, a
  // newly opened ratio) is measured now, so no device's task waits for (and
  // is charged) a measurement. The round opens when that is done: a device
  // that asked meanwhile (its request waited for the lock) gets its task
  // from then on.
  if (MeasuresPruningCost()) {
    const absl::Time start = hooks_.clock();
    // Up to the pace's cap of the most-played invited device.
    int64_t most = 0;
    for (const auto& [id, p] : round_->participants) {
      most = std::max(most, devices_.at(id).plays);
    }
    for (double ratio : CandidateCombinedRatios(round_->global_ratio, most)) {
      PruningCost(ratio);
    }
    const absl::Duration measuring = hooks_.clock() - start;
    round_->opened += measuring;
    round_->deadline += measuring;
  }
  round_->pace_s = Pace();
  if (options_.bandit.kind == strategies::BanditKind::kStatic) {
    round_->capability_budget_s = CapabilityBudget();
  }
  return absl::OkStatus();
}

absl::StatusOr<Task> Engine::MakeTask(const std::string& device_id,
                                      Device& device, Participant& participant,
                                      absl::Time now) {
  const Round& round = *round_;
  const int64_t salt = round.number * 1000 + round.attempt;
  std::mt19937_64 rng = Rng(device_id, salt);
  Task task;
  task.round = round.number;
  task.nonce = RandomHex(16);
  task.train_seed =
      Seed(options_.seed, absl::StrCat(device_id, "/train"), salt);
  const strategies::KnownReward known = KnownReward(device);
  task.arm = device.bandit->Choose(rng, known);
  if (std::optional<strategies::Arm> arm = CapabilityArm(device)) {
    task.arm = *arm;
  }
  if (known) {
    const double told = known(task.arm);
    if (std::isfinite(told)) task.known_reward = told;
  }
  task.rank = options_.mode == Mode::kLora ? task.arm.rank : 0;
  task.global_ratio = round.global_ratio;
  task.combined_ratio =
      strategies::CombinedRatio(round.global_ratio, task.arm.prune_ratio);
  absl::StatusOr<pruning::PruningPlan> plan =
      global_->Plan(task.combined_ratio);
  if (!plan.ok()) return plan.status();
  task.plan = std::move(*plan);
  task.pruning_cost = ChargedPruningCost(task.combined_ratio);
  if (options_.mode == Mode::kLora) {
    absl::StatusOr<int64_t> cut =
        ChooseCut(options_.split, global_->base(), task.plan,
                  device.facts.memory_budget_bytes, options_.train.batch_size);
    if (!cut.ok()) return cut.status();
    task.cut = *cut;
  }
  absl::StatusOr<NamedTensors> payload =
      global_->Payload(task.plan, std::max<int64_t>(task.rank, 1),
                       Seed(options_.seed, device_id, salt));
  if (!payload.ok()) return payload.status();
  participant.expected.clear();
  for (const auto& item : *payload) {
    participant.expected[item.key()] = item.value().sizes().vec();
  }
  participant.sent = options_.mode == Mode::kLora ? *payload : NamedTensors();
  participant.split.reset();
  task.payload_id = absl::StrCat("round-", round.number, ".", round.attempt,
                                 "/", device_id, "/", task.nonce.substr(0, 8));
  task.issued = std::max(now, round.opened);
  task.deadline = round.deadline;
  if (hooks_.publish) hooks_.publish(task.payload_id, *payload);
  participant.task = task;
  return task;
}

absl::StatusOr<Task> Engine::GetTask(const std::string& device_id,
                                     absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "get_task");
  if (!failure_.ok()) return failure_;
  if (next_round_ > options_.rounds) {
    return absl::OutOfRangeError(absl::StrCat("the federation finished after ",
                                              options_.rounds, " rounds"));
  }
  absl::StatusOr<Device*> device = Touch(device_id, now);
  if (!device.ok()) return device.status();
  (*device)->polled = true;
  if (!round_ || round_->participants.count(device_id) == 0) {
    return absl::UnavailableError(absl::StrCat(
        "device ", device_id, " is not in round ", next_round_, "; retry"));
  }
  Participant& participant = round_->participants[device_id];
  if (participant.stage == Stage::kAccepted) {
    return absl::UnavailableError(
        absl::StrCat("device ", device_id, " already submitted round ",
                     round_->number, "; wait for the next"));
  }
  if (participant.stage == Stage::kDeclined) {
    return absl::UnavailableError(
        absl::StrCat("device ", device_id, " declined round ", round_->number,
                     "; wait for the next"));
  }
  // A dropped device that comes back while the round is open resumes it.
  participant.stage = Stage::kInvited;
  if (participant.task) return *participant.task;
  return MakeTask(device_id, **device, participant, now);
}

absl::Status Engine::ValidateUpdate(const Participant& participant,
                                    const Submission& submission) const {
  const auto& expected = participant.expected;
  if (submission.update.size() != expected.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("update has ", submission.update.size(),
                     " tensors; the task expects ", expected.size()));
  }
  for (const auto& item : submission.update) {
    auto want = expected.find(item.key());
    if (want == expected.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor '", item.key(), "' is not in the task"));
    }
    const at::Tensor& t = item.value();
    if (t.sizes().vec() != want->second || !t.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update tensor '", item.key(), "' has shape ",
          ShapeText(t.sizes().vec()), "; the task expects floats of shape ",
          ShapeText(want->second)));
    }
    if (!torch::isfinite(t).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor '", item.key(), "' has NaN or Inf"));
    }
  }
  if (submission.num_examples < 1) {
    return absl::InvalidArgumentError("num_examples must be >= 1");
  }
  if (!std::isfinite(submission.loss_before) ||
      !std::isfinite(submission.loss_after)) {
    return absl::InvalidArgumentError("reported losses must be finite");
  }
  return absl::OkStatus();
}

absl::Status Engine::Submit(const Submission& submission, absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "submit");
  const std::string& id = submission.device_id;
  absl::StatusOr<Device*> device = Touch(id, now);
  if (!device.ok()) return device.status();
  if (!round_ || submission.round != round_->number) {
    return absl::FailedPreconditionError(absl::StrCat(
        "round ", submission.round,
        " is not open (current: ", round_ ? round_->number : next_round_, ")"));
  }
  auto it = round_->participants.find(id);
  if (it == round_->participants.end() || !it->second.task) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", id, " has no task in round ", round_->number));
  }
  Participant& participant = it->second;
  if (submission.nonce != participant.task->nonce) {
    return absl::FailedPreconditionError(absl::StrCat(
        "update of device ", id, " does not carry its task's nonce"));
  }
  if (participant.stage == Stage::kAccepted) {
    return absl::AlreadyExistsError(absl::StrCat(
        "device ", id, " already submitted round ", round_->number));
  }
  if (round_->accepted >= round_->target) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round_->number, " has the ", round_->target,
                     " updates it waits for and is closing"));
  }
  Submission merged;
  const Submission* checked = &submission;
  if (participant.task->cut > 0) {
    // The update's tail is the coordinator's: settle its half at the
    // device's step count and put the trained tail in.
    merged = submission;
    checked = &merged;
    if (participant.split != nullptr) {
      absl::MutexLock session(&participant.split->mu);
      split::SplitServer& server = *participant.split->server;
      if (absl::Status s = server.Settle(submission.split_steps); !s.ok()) {
        return s;
      }
      for (const auto& item : server.TailParameters()) {
        if (merged.update.contains(item.key())) {
          merged.update[item.key()] = item.value();
        }
      }
    } else if (submission.split_steps != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", id, " reports ", submission.split_steps,
                       " split steps but ran none with the coordinator"));
    }
  }
  if (absl::Status s = ValidateUpdate(participant, *checked); !s.ok()) {
    return s;
  }
  if (!submission.importance.is_empty()) {
    if (absl::Status s = global_->AddScores(
            round_->aggregate, participant.task->plan, submission.importance);
        !s.ok()) {
      return s;
    }
  }
  const double weight = static_cast<double>(
      std::min(submission.num_examples, options_.max_examples));
  absl::StatusOr<double> norm =
      global_->AddUpdate(round_->aggregate, participant.task->plan,
                         checked->update, participant.sent, weight);
  if (!norm.ok()) return norm.status();
  participant.stage = Stage::kAccepted;
  participant.submitted = now;
  participant.update_norm = *norm;
  participant.report = submission;
  participant.report.update = NamedTensors();
  participant.report.importance = NamedTensors();
  const double elapsed = absl::ToDoubleSeconds(now - participant.task->issued);
  double& expected = (*device)->expected_seconds;
  expected = expected < 0 ? elapsed : 0.7 * expected + 0.3 * elapsed;
  ++round_->accepted;
  return absl::OkStatus();
}

absl::StatusOr<Engine::Participant*> Engine::OpenTask(
    const std::string& device_id, int64_t round, const std::string& nonce,
    absl::Time now) {
  absl::StatusOr<Device*> device = Touch(device_id, now);
  if (!device.ok()) return device.status();
  if (!round_ || round != round_->number) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round, " is not open"));
  }
  auto it = round_->participants.find(device_id);
  if (it == round_->participants.end() || !it->second.task ||
      it->second.task->nonce != nonce) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device_id, " has no task with that nonce in round ", round));
  }
  if (it->second.stage == Stage::kAccepted) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device_id, " already submitted round ", round));
  }
  return &it->second;
}

absl::StatusOr<Engine::Participant*> Engine::SplitParticipant(
    const std::string& device_id, int64_t round, const std::string& nonce,
    absl::Time now) {
  absl::StatusOr<Participant*> open = OpenTask(device_id, round, nonce, now);
  if (!open.ok()) return open.status();
  Participant& p = **open;
  if (p.task->cut == 0) {
    return absl::FailedPreconditionError(absl::StrCat("the task of device ",
                                                      device_id, " in round ",
                                                      round, " has no split"));
  }
  return &p;
}

absl::StatusOr<split::StepReply> Engine::SplitStep(
    const std::string& device_id, int64_t round, const std::string& nonce,
    const split::StepRequest& request, absl::Time now) {
  std::shared_ptr<SplitSession> session;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "split_step");
    absl::StatusOr<Participant*> p =
        SplitParticipant(device_id, round, nonce, now);
    if (!p.ok()) return p.status();
    // A device that starts over (its link broke, it fetched the task
    // again) starts from its payload: so does the coordinator's half.
    if (request.step == 1 && request.applied_steps == 0) (*p)->split.reset();
    if ((*p)->split == nullptr) {
      // The coordinator's half starts from the payload the device got.
      absl::StatusOr<model::Model> sub =
          global_->DeviceModel((*p)->task->plan, (*p)->task->rank, (*p)->sent);
      if (!sub.ok()) return sub.status();
      model::TrainOptions train;
      train.batch_size = options_.train.batch_size;
      train.learning_rate = options_.train.learning_rate;
      train.weight_decay = options_.train.weight_decay;
      train.max_grad_norm = options_.train.max_grad_norm;
      absl::StatusOr<std::unique_ptr<split::SplitServer>> server =
          split::SplitServer::Create(*std::move(sub), (*p)->task->cut, train);
      if (!server.ok()) return server.status();
      auto made = std::make_shared<SplitSession>();
      absl::MutexLock made_lock(&made->mu);
      made->server = *std::move(server);
      (*p)->split = std::move(made);
    }
    session = (*p)->split;
  }
  // Outside the engine's lock: the tail's forward and backward.
  absl::MutexLock lock(&session->mu);
  return session->server->Step(request);
}

absl::Status Engine::SplitFinish(const std::string& device_id, int64_t round,
                                 const std::string& nonce,
                                 int64_t applied_steps, absl::Time now) {
  std::shared_ptr<SplitSession> session;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "split_finish");
    absl::StatusOr<Participant*> p =
        SplitParticipant(device_id, round, nonce, now);
    if (!p.ok()) return p.status();
    session = (*p)->split;
  }
  if (session == nullptr) {
    return applied_steps == 0
               ? absl::OkStatus()
               : absl::FailedPreconditionError(
                     absl::StrCat("device ", device_id, " reports ",
                                  applied_steps, " split steps but ran none"));
  }
  absl::MutexLock lock(&session->mu);
  return session->server->Settle(applied_steps);
}

absl::StatusOr<bool> Engine::Heartbeat(const std::string& device_id,
                                       absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "heartbeat");
  absl::StatusOr<Device*> device = Touch(device_id, now);
  if (!device.ok()) return device.status();
  if (!round_) return false;
  auto it = round_->participants.find(device_id);
  return it != round_->participants.end() &&
         it->second.stage == Stage::kInvited;
}

void Engine::Disconnect(const std::string& device_id, absl::Time) {
  TimedLock lock(&mu_, &hooks_.lock_held, "disconnect");
  if (!round_) return;
  auto it = round_->participants.find(device_id);
  if (it != round_->participants.end() && it->second.stage == Stage::kInvited) {
    it->second.stage = Stage::kDropped;
  }
}

absl::Status Engine::Decline(const std::string& device_id, int64_t round,
                             const std::string& nonce,
                             const std::string& reason, absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "decline");
  absl::StatusOr<Participant*> p = OpenTask(device_id, round, nonce, now);
  if (!p.ok()) return p.status();
  LOG(INFO) << "device " << device_id << " declined round " << round << ": "
            << reason;
  (*p)->stage = Stage::kDeclined;
  return absl::OkStatus();
}

absl::StatusOr<Engine::Device*> Engine::Touch(const std::string& device_id,
                                              absl::Time now) {
  auto device = devices_.find(device_id);
  if (device == devices_.end()) {
    return absl::NotFoundError(
        absl::StrCat("device ", device_id, " is not registered"));
  }
  device->second.last_seen = now;
  return &device->second;
}

bool Engine::AllDone() const {
  for (const auto& [id, p] : round_->participants) {
    if (p.stage == Stage::kInvited) return false;
  }
  return true;
}

bool Engine::AllTasksOut() const {
  for (const auto& [id, p] : round_->participants) {
    if (p.stage == Stage::kInvited && !p.task.has_value()) return false;
  }
  return true;
}

absl::Status Engine::Tick(absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "tick");
  if (next_round_ > options_.rounds || !failure_.ok()) return absl::OkStatus();
  if (!round_) return OpenRound(now);
  for (auto& [id, p] : round_->participants) {
    // Silence counts from the round's opening at the earliest: devices
    // idle between rounds are not yet late.
    const absl::Time heard =
        std::max(devices_.at(id).last_seen, round_->opened);
    if (p.stage == Stage::kInvited &&
        now - heard > options_.heartbeat_timeout) {
      LOG(INFO) << "device " << id << " silent for "
                << absl::FormatDuration(now - heard) << "; dropped from round "
                << round_->number;
      p.stage = Stage::kDropped;
    }
  }
  if (now >= round_->deadline || round_->accepted >= round_->target ||
      AllDone()) {
    return CloseRound(now);
  }
  if (!round_->measured_ahead && AllTasksOut()) MeasureAhead();
  return absl::OkStatus();
}

bool Engine::MeasuresPruningCost() const {
  return hooks_.validation_loss && options_.reward.pruning_cost > 0;
}

double Engine::PruningCost(double ratio) {
  if (ratio <= 0 || !MeasuresPruningCost()) return 0;
  if (auto it = pruning_costs_.find(ratio); it != pruning_costs_.end()) {
    return it->second;
  }
  return pruning_costs_[ratio] = MeasurePruningCost(ratio);
}

double Engine::MeasurePruningCost(double ratio) {
  if (ratio <= 0 || !MeasuresPruningCost()) return 0;
  // A reward term, not a correctness matter: a failed measurement costs
  // nothing.
  const auto loss = [this](double r) {
    mu_.AssertHeld();
    // Ratios that remove the same units share a measurement.
    absl::StatusOr<pruning::PruningPlan> plan = global_->Plan(r);
    std::string key;
    if (plan.ok()) {
      for (const pruning::BlockPlan& b : plan->blocks) {
        absl::StrAppend(&key, absl::StrJoin(b.heads, ","), ";",
                        absl::StrJoin(b.kv_heads, ","), ";",
                        absl::StrJoin(b.channels, ","), "|");
      }
    }
    if (auto it = validation_losses_.find(key);
        plan.ok() && it != validation_losses_.end()) {
      return it->second;
    }
    absl::StatusOr<double> l = [&]() -> absl::StatusOr<double> {
      if (!plan.ok()) return plan.status();
      absl::StatusOr<model::Model> model = global_->Materialize(r);
      if (!model.ok()) return model.status();
      absl::StatusOr<double> l = hooks_.validation_loss(**model);
      if (l.ok() && !(std::isfinite(*l) && *l >= 0)) {
        return absl::InternalError(
            absl::StrCat("validation loss is not a finite loss: ", *l));
      }
      return l;
    }();
    if (!l.ok()) {
      LOG(WARNING) << "pruning cost of ratio " << r
                   << " not measured this round: " << l.status();
    }
    return validation_losses_[key] = l.value_or(NAN);
  };
  const double dense = loss(0);
  const double pruned = loss(ratio);
  if (!(std::isfinite(dense) && std::isfinite(pruned) && dense > 0)) return 0;
  return std::clamp(pruned / dense - 1, 0.0, 1.0);
}

std::vector<double> Engine::CandidateCombinedRatios(double global_ratio,
                                                    int64_t plays) const {
  std::vector<double> combined;
  for (double ratio : strategies::CandidateRatios(
           options_.bandit, strategies::RatioCap(options_.bandit, plays))) {
    combined.push_back(strategies::CombinedRatio(global_ratio, ratio));
  }
  return combined;
}

void Engine::MeasureAhead() {
  round_->measured_ahead = true;
  if (!MeasuresPruningCost()) return;
  // The next round, if this one commits; a retry keeps this round's ratio
  // and finds what it needs in pruning_costs_. Every device may have
  // played once more by then.
  int64_t most = 0;
  for (const auto& [id, device] : devices_) {
    most = std::max(most, device.plays);
  }
  for (double ratio : CandidateCombinedRatios(
           options_.schedule.Ratio(round_->number + 1), most + 1)) {
    next_pruning_costs_[ratio] = MeasurePruningCost(ratio);
  }
}

strategies::KnownReward Engine::KnownReward(const Device& device) {
  const double global_ratio = round_->global_ratio;
  const double pace = round_->pace_s;
  const bool timed = pace > 0 && device.times.state().observations > 0 &&
                     options_.reward.time > 0;
  if (!MeasuresPruningCost() && !timed) return {};
  return [this, &device, global_ratio, pace,
          timed](const strategies::Arm& arm) {
    mu_.AssertHeld();
    const double combined =
        strategies::CombinedRatio(global_ratio, arm.prune_ratio);
    double known = -options_.reward.pruning_cost * ChargedPruningCost(combined);
    if (timed) {
      known -= options_.reward.time *
               strategies::TimeOverPace(
                   *device.times.Predict(combined, arm.rank), pace);
    }
    return known;
  };
}

double Engine::ChargedPruningCost(double ratio) {
  return PruningCost(ratio) /
         static_cast<double>(std::max<int64_t>(round_->target, 1));
}

std::optional<strategies::Arm> Engine::CapabilityArm(
    const Device& device) const {
  if (options_.bandit.kind != strategies::BanditKind::kStatic ||
      !(round_->capability_budget_s > 0) ||
      device.times.state().observations == 0) {
    return std::nullopt;
  }
  // The grid's arms under the device's prune-and-tune cap.
  const double cap = strategies::RatioCap(options_.bandit, device.plays);
  std::vector<strategies::Arm> arms;
  for (const strategies::Arm& arm :
       strategies::GridArms(options_.bandit.space)) {
    if (arm.prune_ratio <= cap + 1e-9) arms.push_back(arm);
  }
  const double global_ratio = round_->global_ratio;
  return strategies::CapabilityArm(
      arms,
      [&](const strategies::Arm& arm) {
        return *device.times.Predict(
            strategies::CombinedRatio(global_ratio, arm.prune_ratio), arm.rank);
      },
      round_->capability_budget_s);
}

double Engine::CapabilityBudget() const {
  const strategies::ArmSpace& space = options_.bandit.space;
  const double densest_ratio =
      strategies::CombinedRatio(round_->global_ratio, space.min_ratio);
  std::vector<double> densest;
  for (const auto& [id, participant] : round_->participants) {
    if (std::optional<double> t =
            devices_.at(id).times.Predict(densest_ratio, space.ranks.back())) {
      densest.push_back(*t);
    }
  }
  return strategies::Quantile(densest, 0.75);
}

double Engine::Pace() const {
  const std::vector<int64_t> ranks =
      options_.bandit.kind == strategies::BanditKind::kFixed
          ? std::vector<int64_t>{options_.bandit.fixed_arm.rank}
          : options_.bandit.space.ranks;
  std::vector<double> fastest;
  for (const auto& [id, participant] : round_->participants) {
    const Device& device = devices_.at(id);
    double best = std::numeric_limits<double>::infinity();
    for (double ratio :
         CandidateCombinedRatios(round_->global_ratio, device.plays)) {
      for (int64_t rank : ranks) {
        if (std::optional<double> t = device.times.Predict(ratio, rank)) {
          best = std::min(best, *t);
        }
      }
    }
    if (std::isfinite(best)) fastest.push_back(best);
  }
  return strategies::RoundPace(fastest);
}

void Engine::Play(const std::string& device_id, const strategies::Arm& arm,
                  double reward) {
  devices_.at(device_id).bandit->Update(arm, reward);
  plays_.push_back({device_id, arm, reward});
  ++devices_.at(device_id).plays;
}

absl::Status Engine::CloseRound(absl::Time now) {
  Round& round = *round_;
  RoundRecord record;
  record.round = round.number;
  record.attempt = round.attempt;
  record.global_ratio = round.global_ratio;
  record.invited = static_cast<int64_t>(round.participants.size());
  record.round_s = absl::ToDoubleSeconds(now - round.opened);
  std::vector<double> elapsed, norms;
  for (const auto& [id, p] : round.participants) {
    if (p.stage != Stage::kAccepted) continue;
    elapsed.push_back(absl::ToDoubleSeconds(p.submitted - p.task->issued));
    norms.push_back(p.update_norm);
  }
  const double median_elapsed = strategies::Median(elapsed);
  const double median_norm = strategies::Median(norms);
  record.committed =
      round.accepted >= options_.min_updates && round.accepted > 0;
  if (record.committed) {
    model::KillPoint("aggregate");  // Crash tests (model/kill_point.h).
    const absl::Time start = hooks_.clock();
    // The last chance to measure on this round's model (a round that closed
    // before Tick saw all its tasks out); charged as aggregation.
    if (!round.measured_ahead) MeasureAhead();
    if (absl::Status s =
            global_->Commit(round.aggregate, options_.importance_ema);
        !s.ok()) {
      return s;
    }
    validation_losses_.clear();
    pruning_costs_ = std::move(next_pruning_costs_);
    next_pruning_costs_.clear();
    record.aggregate_s = absl::ToDoubleSeconds(hooks_.clock() - start);
  }
  double loss_sum = 0;
  for (const auto& [id, p] : round.participants) {
    ClientRecord c;
    c.round = round.number;
    c.device_id = id;
    c.link = devices_.at(id).facts.link;
    if (p.task) {
      c.arm = p.task->arm;
      c.combined_ratio = p.task->combined_ratio;
      c.cut = p.task->cut;
    }
    const bool straggler = p.stage == Stage::kInvited && p.task.has_value();
    if (p.stage == Stage::kAccepted) {
      c.status = "accepted";
      c.timings = p.report.timings;
      c.wait_s = absl::ToDoubleSeconds(now - p.submitted);
      c.elapsed_s = absl::ToDoubleSeconds(p.submitted - p.task->issued);
      c.loss_before = p.report.loss_before;
      c.loss_after = p.report.loss_after;
      c.update_norm = p.update_norm;
      loss_sum += c.loss_after;
      const Timings& t = c.timings;
      devices_.at(id).times.Observe(
          {c.combined_ratio, std::max<int64_t>(c.arm.rank, 1), t.train_s,
           t.download_s + t.upload_s,
           std::max(0.0, c.elapsed_s - t.train_s - t.download_s - t.upload_s)});
      ++record.accepted;
    } else if (straggler) {
      c.status = "straggler";
      c.elapsed_s = absl::ToDoubleSeconds(now - p.task->issued);
      ++record.stragglers;
    } else if (p.stage == Stage::kDeclined) {
      c.status = "declined";
      c.reward = options_.bandit.reward_min;
      Play(id, c.arm, c.reward);
      ++record.declined;
    } else {
      c.status = "dropped";
      ++record.dropped;
    }
    if (c.status == "accepted" || c.status == "straggler") {
      strategies::RewardInputs in;
      in.loss_before = c.loss_before;
      in.loss_after = c.loss_after;
      in.prune_ratio = c.arm.prune_ratio;
      in.target_ratio = strategies::RatioToTarget(round.global_ratio,
                                                  options_.schedule.target);
      in.update_norm = c.update_norm;
      in.median_update_norm = median_norm;
      in.seconds = c.elapsed_s;
      in.pace_seconds = round.pace_s;
      in.median_seconds = median_elapsed;
      in.straggler = straggler;
      in.pruning_cost = p.task->pruning_cost;
      c.terms = strategies::MakeRewardTerms(in);
      c.reward = strategies::Reward(c.terms, options_.reward);
      // The bandit was told part of the reward before it chose
      // (KnownReward): it learns the rest.
      Play(id, c.arm, c.reward - p.task->known_reward);
    }
    record.clients.push_back(std::move(c));
  }
  record.mean_loss_after =
      record.accepted > 0 ? loss_sum / static_cast<double>(record.accepted) : 0;
  round_.reset();
  if (record.committed) {
    ++next_round_;
    attempt_ = 0;
  } else {
    ++attempt_;
    LOG(WARNING) << "round " << record.round << " attempt " << record.attempt
                 << " closed with " << record.accepted << " of "
                 << options_.min_updates << " required updates; retrying";
    if (attempt_ >= options_.max_attempts) {
      failure_ = absl::DeadlineExceededError(absl::StrCat(
          "round ", record.round, " got fewer than ", options_.min_updates,
          " updates in ", options_.max_attempts, " attempts"));
    }
  }
  history_.push_back(record);
  absl::Status hook_status =
      hooks_.on_round_closed ? hooks_.on_round_closed(record, SnapshotLocked())
                             : absl::OkStatus();
  if (absl::Status s = OpenRound(now); !s.ok()) return s;
  return hook_status;
}

int64_t Engine::round() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return round_ ? round_->number : next_round_;
}

bool Engine::finished() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return next_round_ > options_.rounds || !failure_.ok();
}

absl::Status Engine::failure() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return failure_;
}

int64_t Engine::registered() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return static_cast<int64_t>(devices_.size());
}

std::vector<RoundRecord> Engine::history() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return history_;
}

int64_t Engine::rounds_closed() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  return static_cast<int64_t>(history_.size());
}

Engine::State Engine::Snapshot() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "snapshot");
  return SnapshotLocked();
}

Engine::State Engine::SnapshotLocked() const {
  State state;
  state.next_round = next_round_;
  for (const auto& [id, device] : devices_) {
    state.devices.push_back(device.facts);
    state.expected_seconds[id] = device.expected_seconds;
    state.time_models[id] = device.times.state();
  }
  state.plays = plays_;
  state.global = global_->State();
  return state;
}

absl::Status Engine::Restore(const State& state) {
  TimedLock lock(&mu_, &hooks_.lock_held, "restore");
  if (round_ || !devices_.empty() || next_round_ != 1) {
    return absl::FailedPreconditionError(
        "restore needs a fresh engine (before any registration or tick)");
  }
  if (state.next_round < 1) {
    return absl::InvalidArgumentError("checkpoint: next_round must be >= 1");
  }
  if (absl::Status s = global_->Restore(state.global); !s.ok()) return s;
  for (const DeviceFacts& facts : state.devices) {
    if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) return s;
    Device device;
    device.facts = facts;
    device.bandit = *strategies::CreateBandit(options_.bandit);
    device.times = strategies::DeviceTimeModel(prunable_share_);
    if (auto times = state.time_models.find(facts.device_id);
        times != state.time_models.end()) {
      device.times.Restore(times->second);
    }
    auto seconds = state.expected_seconds.find(facts.device_id);
    if (seconds != state.expected_seconds.end()) {
      device.expected_seconds = seconds->second;
    }
    devices_[facts.device_id] = std::move(device);
  }
  for (const BanditPlay& play : state.plays) {
    auto device = devices_.find(play.device_id);
    if (device == devices_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint: bandit play of unknown device ", play.device_id));
    }
    device->second.bandit->Update(play.arm, play.reward);
    ++device->second.plays;
  }
  plays_ = state.plays;
  next_round_ = state.next_round;
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
