#include "coordinator/engine.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include <glog/logging.h>
#include <torch/types.h>

#include "coordinator/rewards.h"
#include "coordinator/task_builder.h"
#include "coordinator/update_intake.h"
#include "model/kill_point.h"
#include "pruning/plan.h"

namespace fedge::coordinator {

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
  std::shared_ptr<const strategies::FlatLayout> secure_layout;
  if (options.secure.enabled) {
    absl::StatusOr<strategies::FlatLayout> layout = global->UpdateLayout();
    if (!layout.ok()) return layout.status();
    secure_layout =
        std::make_shared<const strategies::FlatLayout>(*std::move(layout));
  }
  return std::unique_ptr<Engine>(new Engine(
      std::move(global), std::move(options), std::move(hooks), secure_layout));
}

Engine::Engine(std::unique_ptr<GlobalModel> global, EngineOptions options,
               EngineHooks hooks,
               std::shared_ptr<const strategies::FlatLayout> secure_layout)
    : global_(std::move(global)),
      options_(std::move(options)),
      hooks_(std::move(hooks)),
      meter_(global_.get(), options_.reward.pruning_cost > 0
                                ? hooks_.validation_loss
                                : ValidationLossFn()),
      secure_layout_(std::move(secure_layout)),
      registry_(&options_, TrainingWork(global_->base(), options_)) {
  if (options_.privacy.enabled()) {
    // Under secure aggregation the devices clip and noise (distributed
    // DP); the coordinator only divides by the expected devices.
    privacy_.emplace(options_.privacy,
                     options_.secure.enabled ? options_.secure.clip_norm
                                             : options_.aggregator.clip_norm,
                     options_.privacy_seed, options_.secure.enabled);
  }
}

absl::StatusOr<std::string> Engine::Register(const DeviceFacts& facts,
                                             absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "register");
  absl::Status s =
      registry_.Register(facts, now, [this](const std::string& id) {
        mu_.AssertHeld();
        return round_ && round_->participants.count(id) > 0;
      });
  if (!s.ok()) return s;
  std::string session = RandomHex(16);
  registry_.at(facts.device_id).session = session;
  return session;
}

absl::Status Engine::CheckSession(const std::string& device_id,
                                  const std::string& session) const {
  TimedLock lock(&mu_, &hooks_.lock_held, "check_session");
  auto it = registry_.devices().find(device_id);
  if (it == registry_.devices().end()) {
    return absl::NotFoundError(
        absl::StrCat("device ", device_id, " is not registered"));
  }
  if (it->second.session.empty() || it->second.session != session) {
    return absl::NotFoundError(absl::StrCat(
        "session '", session, "' is not device ", device_id,
        "'s current one (the coordinator restarted, or the device registered "
        "again, perhaps from another process with its id); register again"));
  }
  return absl::OkStatus();
}

absl::Status Engine::CheckSubmission(const std::string& device_id,
                                     int64_t round,
                                     const std::string& nonce) const {
  TimedLock lock(&mu_, &hooks_.lock_held, "check_submission");
  return SubmittableLocked(device_id, round, nonce);
}

absl::Status Engine::SubmittableLocked(const std::string& id, int64_t round,
                                       const std::string& nonce) const {
  if (registry_.devices().count(id) == 0) {
    return absl::NotFoundError(
        absl::StrCat("device ", id, " is not registered"));
  }
  if (!round_ || round != round_->number) {
    return absl::FailedPreconditionError(absl::StrCat(
        "round ", round,
        " is not open (current: ", round_ ? round_->number : next_round_, ")"));
  }
  auto it = round_->participants.find(id);
  if (it == round_->participants.end() || !it->second.task) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", id, " has no task in round ", round_->number));
  }
  const Participant& participant = it->second;
  if (nonce != participant.task->nonce) {
    return absl::FailedPreconditionError(absl::StrCat(
        "update of device ", id, " does not carry its task's nonce"));
  }
  if (participant.stage == Stage::kAccepted || participant.folding) {
    return absl::AlreadyExistsError(absl::StrCat(
        "device ", id, " already submitted round ", round_->number));
  }
  if (round_->accepted + round_->folding >= round_->target) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", round_->number, " has the ", round_->target,
                     " updates it waits for and is closing"));
  }
  return absl::OkStatus();
}

std::vector<const Device*> Engine::ParticipantDevices() const {
  std::vector<const Device*> devices;
  for (const auto& [id, p] : round_->participants) {
    devices.push_back(&registry_.at(id));
  }
  return devices;
}

std::vector<strategies::Candidate> Engine::Candidates() const {
  std::vector<strategies::Candidate> candidates;
  for (const auto& [id, device] : registry_.devices()) {
    if (options_.invite_only_polled && !device.polled) continue;
    candidates.push_back({id, device.expected_seconds});
  }
  if (static_cast<int64_t>(candidates.size()) < options_.min_devices) {
    candidates.clear();
  }
  return candidates;
}

absl::Status Engine::OpenRound(absl::Time now) {
  // The pruning costs its bandits may ask about are normally measured
  // during the round before (MeasureAhead). What is missing (the first
  // round, a newly opened ratio) is measured now, before the round opens,
  // so no device's task waits for (and is charged) a measurement.
  std::vector<double> missing;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "open");
    // Checked before the work below, which ticks would otherwise repeat
    // every 100 ms while devices register.
    if (round_ || next_round_ > options_.rounds || !failure_.ok() ||
        Candidates().empty()) {
      return absl::OkStatus();
    }
    if (meter_.enabled()) {
      missing = costs_.Missing(CandidateCombinedRatios(
          options_, options_.schedule.Ratio(next_round_),
          registry_.MostPlays()));
    }
  }
  absl::Duration measuring;
  if (!missing.empty()) {
    const absl::Time start = hooks_.clock();
    std::map<double, double> measured = meter_.Measure(missing);
    measuring = hooks_.clock() - start;
    TimedLock lock(&mu_, &hooks_.lock_held, "open");
    costs_.Add(measured);
  }
  strategies::AggregatorOptions aggregator = options_.aggregator;
  std::optional<PrivateRound> privacy;
  if (options_.privacy.enabled()) {
    TimedLock lock(&mu_, &hooks_.lock_held, "open");
    if (absl::Status s = OpenPrivately(aggregator, privacy); !s.ok()) {
      failure_ = s;
      return absl::OkStatus();
    }
  }
  // The aggregate is set up outside the lock too. Only ticks change the
  // global model, and they are serialised.
  absl::StatusOr<RoundAggregate> aggregate = global_->BeginRound(aggregator);
  if (!aggregate.ok()) return aggregate.status();

  TimedLock lock(&mu_, &hooks_.lock_held, "open");
  // Registrations may have changed meanwhile (a device forgotten).
  const std::vector<strategies::Candidate> candidates = Candidates();
  if (candidates.empty()) return absl::OkStatus();
  const int64_t salt = Round::SaltOf(next_round_, attempt_);
  // Under differential privacy who is sampled is secret, like the noise.
  std::mt19937_64 rng(privacy_ ? privacy_->SamplingSeed(salt)
                               : DeviceSeed(options_.seed, "", salt));
  const strategies::Selection selection = strategies::SelectClients(
      candidates, options_.selection,
      absl::ToDoubleSeconds(options_.round_deadline), rng);
  if (secure_layout_ != nullptr && selection.invited.size() < 2) {
    // Poisson sampling drew fewer devices than a secure sum needs: no
    // round opens, and the next tick draws again (nothing is released).
    return absl::OkStatus();
  }
  Round round;
  round.number = next_round_;
  round.attempt = attempt_;
  round.serial = ++serial_;
  // A device that asked while the costs were measured gets its task from
  // then on.
  round.opened = now + measuring;
  round.deadline = round.opened + options_.round_deadline;
  round.global_ratio = options_.schedule.Ratio(next_round_);
  round.target = std::max<int64_t>(selection.target_updates, 1);
  round.fold = std::make_shared<Fold>();
  round.privacy = privacy;
  {
    absl::MutexLock fold(&round.fold->mu);
    round.fold->aggregate = *std::move(aggregate);
  }
  for (const std::string& id : selection.invited) {
    round.participants[id];
  }
  if (secure_layout_ != nullptr) {
    if (absl::Status s = OpenSecurely(round); !s.ok()) {
      failure_ = s;
      return absl::OkStatus();
    }
  }
  round_ = std::move(round);
  const std::vector<const Device*> devices = ParticipantDevices();
  round_->pace_s = RoundPace(options_, devices, round_->global_ratio);
  if (options_.bandit.kind == strategies::BanditKind::kStatic) {
    round_->capability_budget_s =
        CapabilityBudget(options_, devices, round_->global_ratio);
  }
  return absl::OkStatus();
}

absl::Status Engine::OpenSecurely(Round& round) {
  std::vector<std::string> ids;
  for (const auto& [id, p] : round.participants) ids.push_back(id);
  const int64_t salt = round.salt();
  absl::StatusOr<std::unique_ptr<SecureRound>> secure = SecureRound::Create(
      ids, secure_layout_->length(), static_cast<uint64_t>(salt),
      DeviceSeed(options_.seed, "secagg", salt), options_.secure, round.opened,
      round.privacy ? options_.privacy.noise_multiplier : 0);
  if (!secure.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "round ", round.number, " cannot run secure aggregation over ",
        ids.size(), " invited device(s): ", secure.status().message(),
        " (invite more: --clients_per_round)"));
  }
  round.secure = std::move(*secure);
  return absl::OkStatus();
}

absl::Status Engine::FoldSecureSum(Round& round) {
  if (round.secure_folded) return absl::OkStatus();
  absl::StatusOr<std::vector<uint32_t>> sum = round.secure->Sum();
  if (!sum.ok()) return sum.status();
  const secagg::RingCodec ring(round.secure->parameters().devices,
                               options_.secure.clip_norm,
                               round.secure->noise_stddev());
  absl::StatusOr<NamedTensors> read =
      secure_layout_->Unflatten(ring.Decode(*sum));
  if (!read.ok()) return read.status();
  // The survivors are the accepted: Submit accepts a device only once its
  // masked vector is in the sum.
  std::vector<pruning::PruningPlan> plans;
  for (const auto& [id, p] : round.participants) {
    if (p.stage == Stage::kAccepted) plans.push_back(p.task->plan);
  }
  absl::MutexLock fold(&round.fold->mu);
  if (absl::Status s =
          global_->AddSecureSum(round.fold->aggregate, *read, plans);
      !s.ok()) {
    return s;
  }
  round.secure_folded = true;
  return absl::OkStatus();
}

absl::Status Engine::OpenPrivately(strategies::AggregatorOptions& aggregator,
                                   std::optional<PrivateRound>& round) {
  const strategies::PrivacyOptions& privacy = options_.privacy;
  if (privacy.epsilon_budget > 0 &&
      privacy_->EpsilonAfter(1) > privacy.epsilon_budget) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the privacy budget is spent: round ", next_round_,
        " would take epsilon to ", privacy_->EpsilonAfter(1), " (delta ",
        privacy.delta, "), over --dp_epsilon_budget=", privacy.epsilon_budget));
  }
  // The devices registered as the round opens; at least one, so that the
  // denominator is positive while registrations change.
  const int64_t candidates =
      std::max<int64_t>(1, static_cast<int64_t>(Candidates().size()));
  absl::StatusOr<PrivateRound> opened = privacy_->Open(
      candidates, Round::SaltOf(next_round_, attempt_), aggregator);
  if (!opened.ok()) {
    return absl::FailedPreconditionError(opened.status().message());
  }
  round = *opened;
  return absl::OkStatus();
}

Task Engine::DraftTask(const std::string& device_id, Device& device,
                       absl::Time now) {
  const Round& round = *round_;
  const int64_t salt = round.salt();
  std::mt19937_64 rng(DeviceSeed(options_.seed, device_id, salt));
  Task task;
  task.round = round.number;
  task.nonce = RandomHex(16);
  task.train_seed =
      DeviceSeed(options_.seed, absl::StrCat(device_id, "/train"), salt);
  task.learning_rate =
      options_.train.RoundLearningRate(round.number, options_.rounds);
  const std::function<double(double)> charged = [this](double ratio) {
    mu_.AssertHeld();
    return ChargedPruningCost(ratio);
  };
  const strategies::KnownReward known =
      KnownReward(options_, device, round.global_ratio, round.pace_s,
                  meter_.enabled(), charged);
  task.arm = device.bandit->Choose(
      rng, known, OnPace(options_, device, round.global_ratio, round.pace_s));
  if (std::optional<strategies::Arm> arm = CapabilityArm(
          options_, device, round.global_ratio, round.capability_budget_s)) {
    task.arm = *arm;
  }
  if (known) {
    const double told = known(task.arm);
    if (std::isfinite(told)) task.known_reward = told;
  }
  task.time_known = TimeKnown(options_, device, round.pace_s);
  task.rank = options_.mode == Mode::kLora ? task.arm.rank : 0;
  task.global_ratio = round.global_ratio;
  task.combined_ratio =
      strategies::CombinedRatio(round.global_ratio, task.arm.prune_ratio);
  task.pruning_cost = ChargedPruningCost(task.combined_ratio);
  task.max_steps = options_.train.max_steps;
  if (options_.train.fill_pace > 1) {
    const int64_t rank = std::max<int64_t>(task.arm.rank, 1);
    const double multiple = strategies::FillPace(
        device.times.Predict(task.combined_ratio, rank).value_or(0),
        device.times.PredictTrain(task.combined_ratio, rank).value_or(0),
        round.pace_s, options_.train.fill_pace);
    task.max_steps = static_cast<int64_t>(
        std::floor(multiple * static_cast<double>(task.max_steps)));
  }
  task.payload_id = absl::StrCat("round-", round.number, ".", round.attempt,
                                 "/", device_id, "/", task.nonce.substr(0, 8));
  task.issued = std::max(now, round.opened);
  task.deadline = round.deadline;
  if (round.secure) {
    SecureTask secure;
    secure.parameters = round.secure->parameters();
    secure.index = round.secure->Index(device_id).value_or(-1);
    secure.clip_norm = options_.secure.clip_norm;
    secure.noise_stddev = round.secure->noise_stddev();
    secure.min_survivors = round.secure->min_survivors();
    secure.layout = secure_layout_;
    task.secure = std::move(secure);
  }
  return task;
}

absl::StatusOr<Task> Engine::GetTask(const std::string& device_id,
                                     absl::Time now) {
  Task task;
  int64_t serial = 0;
  int64_t budget_bytes = 0;
  uint64_t payload_seed = 0;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "get_task");
    if (!failure_.ok()) return failure_;
    if (next_round_ > options_.rounds) {
      return absl::OutOfRangeError(absl::StrCat(
          "the federation finished after ", options_.rounds, " rounds"));
    }
    absl::StatusOr<Device*> device = registry_.Touch(device_id, now);
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
    if (participant.preparing) {
      return absl::UnavailableError(absl::StrCat(
          "the task of device ", device_id, " is being prepared; retry"));
    }
    task = DraftTask(device_id, **device, now);
    participant.preparing = true;
    serial = round_->serial;
    budget_bytes = (*device)->facts.memory_budget_bytes;
    payload_seed = DeviceSeed(options_.seed, device_id, round_->salt());
  }
  task.model_version = global_->version();
  if (task.combined_ratio == 0) {
    std::optional<DenseDelta> delta = global_->LastDelta();
    if (delta.has_value() && delta->from + 1 == task.model_version) {
      task.delta = std::move(delta->bytes);
    }
  }
  // The heavy part: plan, cut, payload (SVDs, each computed once for all
  // devices that need it: GlobalModel::Factorize), serialising, hashing.
  absl::StatusOr<BuiltTask> built =
      BuildTask(*global_, options_, task, budget_bytes, payload_seed);
  if (built.ok() && hooks_.publish) {
    hooks_.publish(task.payload_id, built->payload);
  }

  TimedLock lock(&mu_, &hooks_.lock_held, "get_task");
  if (!round_ || round_->serial != serial) {
    lock.Release();
    // Published for a round that closed meanwhile, maybe after the server
    // withdrew that round's payloads.
    if (built.ok() && hooks_.withdraw) hooks_.withdraw(task.payload_id);
    return absl::UnavailableError(
        absl::StrCat("round ", task.round, " closed while the task of device ",
                     device_id, " was prepared; retry"));
  }
  Participant& participant = round_->participants.at(device_id);
  participant.preparing = false;
  if (!built.ok()) return built.status();
  task.plan = std::move(built->plan);
  task.cut = built->cut;
  // A split task's steps also run on the coordinator: not filled.
  if (task.cut > 0) task.max_steps = options_.train.max_steps;
  participant.expected = std::move(built->expected);
  participant.sent =
      options_.mode == Mode::kLora ? std::move(built->payload) : NamedTensors();
  participant.split.reset();
  if (task.cut > 0) {
    model::TrainOptions train;
    train.batch_size = options_.train.batch_size;
    train.learning_rate = task.learning_rate;
    train.schedule = options_.train.in_round_schedule == "constant"
                         ? model::LrSchedule::kConstant
                         : model::LrSchedule::kCosine;
    train.weight_decay = options_.train.weight_decay;
    train.max_grad_norm = options_.train.max_grad_norm;
    participant.split = std::make_shared<SplitSession>(
        global_.get(), task.plan, task.rank, task.cut, participant.sent, train);
  }
  participant.task = task;
  return task;
}

absl::Status Engine::Submit(const Submission& submission, absl::Time now) {
  const std::string& id = submission.device_id;
  pruning::PruningPlan plan;
  int64_t cut = 0;
  NamedTensors sent;
  std::map<std::string, std::vector<int64_t>> expected;
  std::shared_ptr<SplitSession> split;
  std::shared_ptr<Fold> fold;
  std::shared_ptr<SecureRound> secure;
  if (absl::Status s = ValidateTimings(submission.timings); !s.ok()) return s;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "submit");
    if (absl::Status s =
            SubmittableLocked(id, submission.round, submission.nonce);
        !s.ok()) {
      return s;
    }
    registry_.at(id).last_seen = now;
    Participant& participant = round_->participants.at(id);
    participant.folding = true;
    ++round_->folding;
    plan = participant.task->plan;
    cut = participant.task->cut;
    sent = participant.sent;
    expected = participant.expected;
    split = participant.split;
    fold = round_->fold;
    secure = round_->secure;
  }

  // Outside the engine's lock: the split tail, the checks, the fold.
  absl::StatusOr<double> norm = [&]() -> absl::StatusOr<double> {
    if (secure != nullptr) {
      if (submission.masked.empty() || !submission.update.is_empty()) {
        return absl::InvalidArgumentError(
            "under secure aggregation an update is a masked vector only");
      }
      if (!std::isfinite(submission.change_norm) ||
          submission.change_norm < 0) {
        return absl::InvalidArgumentError(
            "the change norm must be finite and non-negative");
      }
      if (absl::Status s = secure->MaskedInput(id, submission.masked);
          !s.ok()) {
        return s;
      }
      return submission.change_norm;
    }
    if (!submission.masked.empty()) {
      return absl::InvalidArgumentError(
          "a masked vector came, but this round has no secure aggregation");
    }
    Submission merged;
    const Submission* checked = &submission;
    if (cut > 0 || submission.carries_change) {
      merged = submission;
      checked = &merged;
    }
    if (submission.carries_change) {
      // The trained values are what was sent plus the change (a tensor
      // the payload lacks is left for ValidateUpdate to name).
      for (auto& item : merged.update) {
        const at::Tensor* start = sent.find(item.key());
        if (start != nullptr && start->sizes() == item.value().sizes()) {
          item.value() = *start + item.value();
        }
      }
    }
    if (cut > 0) {
      // The update's tail is the coordinator's: settle its half at the
      // device's step count and put the trained tail in.
      if (absl::Status s =
              split->MergeTail(submission.split_steps, merged.update);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = ValidateUpdate(expected, *checked); !s.ok()) return s;
    // Under differential privacy every device weighs the same: a weight
    // from the device's data would change its sensitivity.
    const double weight =
        options_.privacy.enabled()
            ? 1.0
            : static_cast<double>(
                  std::min(submission.num_examples, options_.max_examples));
    // The heavy part in parallel with other Submits; only adding it to the
    // round's sums is serialised.
    absl::StatusOr<pruning::Scattered> prepared =
        global_->PrepareUpdate(plan, checked->update, sent);
    if (!prepared.ok()) return prepared.status();
    absl::MutexLock fold_lock(&fold->mu);
    // Importance reports come unclipped and unnoised from each device's
    // data: differential privacy leaves them out.
    if (!submission.importance.is_empty() && !options_.privacy.enabled()) {
      if (absl::Status s =
              global_->AddScores(fold->aggregate, plan, submission.importance);
          !s.ok()) {
        return s;
      }
    }
    return global_->AddPrepared(fold->aggregate, *prepared, weight);
  }();

  TimedLock lock(&mu_, &hooks_.lock_held, "submit");
  // The round is still open: Tick does not close a round while an update
  // is being folded.
  Participant& participant = round_->participants.at(id);
  participant.folding = false;
  --round_->folding;
  if (!norm.ok()) return norm.status();
  participant.stage = Stage::kAccepted;
  participant.submitted = now;
  participant.update_norm = *norm;
  participant.report = submission;
  participant.report.update = NamedTensors();
  participant.report.importance = NamedTensors();
  participant.report.masked = {};
  const double elapsed = absl::ToDoubleSeconds(now - participant.task->issued);
  double& expected_s = registry_.at(id).expected_seconds;
  expected_s = expected_s < 0 ? elapsed : 0.7 * expected_s + 0.3 * elapsed;
  ++round_->accepted;
  return absl::OkStatus();
}

absl::StatusOr<Engine::Participant*> Engine::OpenTask(
    const std::string& device_id, int64_t round, const std::string& nonce,
    absl::Time now) {
  absl::StatusOr<Device*> device = registry_.Touch(device_id, now);
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
  if (it->second.stage == Stage::kAccepted || it->second.folding) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device_id, " already submitted round ", round));
  }
  return &it->second;
}

absl::StatusOr<std::shared_ptr<SplitSession>> Engine::SplitOf(
    const std::string& device_id, int64_t round, const std::string& nonce,
    absl::Time now) {
  absl::StatusOr<Participant*> open = OpenTask(device_id, round, nonce, now);
  if (!open.ok()) return open.status();
  if ((*open)->split == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("the task of device ",
                                                      device_id, " in round ",
                                                      round, " has no split"));
  }
  return (*open)->split;
}

absl::StatusOr<split::StepReply> Engine::SplitStep(
    const std::string& device_id, int64_t round, const std::string& nonce,
    const split::StepRequest& request, absl::Time now) {
  absl::StatusOr<std::shared_ptr<SplitSession>> session;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "split_step");
    session = SplitOf(device_id, round, nonce, now);
  }
  if (!session.ok()) return session.status();
  // Outside the engine's lock: the tail's forward and backward.
  return (*session)->Step(request);
}

absl::Status Engine::SplitFinish(const std::string& device_id, int64_t round,
                                 const std::string& nonce,
                                 int64_t applied_steps, absl::Time now) {
  absl::StatusOr<std::shared_ptr<SplitSession>> session;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "split_finish");
    session = SplitOf(device_id, round, nonce, now);
  }
  if (!session.ok()) return session.status();
  return (*session)->Settle(applied_steps);
}

absl::StatusOr<SecureReply> Engine::Secure(const SecureRequest& request,
                                           absl::Time now) {
  const std::string& id = request.device_id;
  std::shared_ptr<SecureRound> secure;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "secure");
    if (!round_ || !round_->secure) {
      return absl::FailedPreconditionError(
          "no round with secure aggregation is open");
    }
    auto it = round_->participants.find(id);
    if (request.round != round_->number || it == round_->participants.end() ||
        !it->second.task || it->second.task->nonce != request.nonce) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", id, " holds no task of round ", request.round,
                       " with that nonce; round ", round_->number, " is open"));
    }
    registry_.at(id).last_seen = now;
    secure = round_->secure;
  }
  const int messages = request.advertise.has_value() +
                       request.shares.has_value() + request.unmask.has_value();
  if (messages > 1) {
    return absl::InvalidArgumentError("secure aggregation: one message a step");
  }
  absl::Status posted;
  if (request.advertise) posted = secure->Advertise(id, *request.advertise);
  if (request.shares) posted = secure->ShareKeys(id, *request.shares);
  if (request.unmask) posted = secure->Unmask(id, *request.unmask);
  if (!posted.ok()) return posted;
  // The phase only moves forward, so what it needs is there. A device
  // that has acted in the phase gets nothing again.
  SecureReply reply;
  reply.phase = secure->phase();
  if (secure->Answered(id, reply.phase)) return reply;
  switch (reply.phase) {
    case SecurePhase::kAdvertise:
      break;
    case SecurePhase::kShareKeys: {
      auto ads = secure->Advertisements(id);
      if (!ads.ok()) return ads.status();
      reply.advertisements = *std::move(ads);
      break;
    }
    case SecurePhase::kMaskedInput: {
      auto shares = secure->Shares(id);
      if (!shares.ok()) return shares.status();
      reply.shares = *std::move(shares);
      break;
    }
    case SecurePhase::kUnmask:
    case SecurePhase::kDone: {
      auto survivors = secure->Survivors(id);
      if (!survivors.ok()) return survivors.status();
      reply.survivors = *std::move(survivors);
      break;
    }
  }
  return reply;
}

absl::StatusOr<bool> Engine::Heartbeat(const std::string& device_id,
                                       absl::Time now) {
  TimedLock lock(&mu_, &hooks_.lock_held, "heartbeat");
  absl::StatusOr<Device*> device = registry_.Touch(device_id, now);
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
  if (it != round_->participants.end() && it->second.stage == Stage::kInvited &&
      !it->second.folding) {
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

bool Engine::AllDone() const {
  for (const auto& [id, p] : round_->participants) {
    if (p.stage == Stage::kInvited) return false;
  }
  return true;
}

bool Engine::RoundDone(absl::Time now) const {
  return now >= round_->deadline || round_->accepted >= round_->target ||
         AllDone();
}

bool Engine::AllTasksOut() const {
  for (const auto& [id, p] : round_->participants) {
    if (p.stage == Stage::kInvited && !p.task.has_value()) return false;
  }
  return true;
}

absl::Status Engine::Tick(absl::Time now) {
  absl::MutexLock serial(&tick_mu_);
  enum class Step { kNone, kOpen, kClose, kMeasureAhead } step = Step::kNone;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "tick");
    if (next_round_ > options_.rounds || !failure_.ok()) {
      return absl::OkStatus();
    }
    if (!round_) {
      step = Step::kOpen;
    } else {
      for (auto& [id, p] : round_->participants) {
        // Silence counts from the round's opening at the earliest: devices
        // idle between rounds are not yet late.
        const absl::Time heard =
            std::max(registry_.at(id).last_seen, round_->opened);
        if (p.stage == Stage::kInvited && !p.folding &&
            now - heard > options_.heartbeat_timeout) {
          LOG(INFO) << "device " << id << " silent for "
                    << absl::FormatDuration(now - heard)
                    << "; dropped from round " << round_->number;
          p.stage = Stage::kDropped;
        }
      }
      // Updates being folded are waited for (milliseconds).
      const bool done = RoundDone(now);
      const bool collected = done && round_->folding == 0;
      bool closing = collected;
      if (round_->secure) {
        SecureRound& secure = *round_->secure;
        while (secure.Advance(now, collected)) {
        }
        for (const std::string& id : secure.Lost()) {
          Participant& p = round_->participants.at(id);
          if (p.stage != Stage::kInvited) continue;
          LOG(INFO) << "device " << id << " missed secure aggregation's "
                    << "key exchange; dropped from round " << round_->number;
          p.stage = Stage::kDropped;
        }
        // Enough masked vectors: their masks come off before the close,
        // which still waits for any update being folded.
        if (round_->accepted >= options_.min_updates) {
          closing = collected && secure.phase() == SecurePhase::kDone;
        }
      }
      if (closing) {
        step = Step::kClose;
      } else if (!done && !round_->measured_ahead && AllTasksOut()) {
        step = Step::kMeasureAhead;
      }
    }
  }
  switch (step) {
    case Step::kOpen:
      return OpenRound(now);
    case Step::kClose:
      return CloseRound(now);
    case Step::kMeasureAhead:
      MeasureAhead(now);
      return absl::OkStatus();
    case Step::kNone:
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

std::vector<double> Engine::AheadRatios(int64_t round) const {
  // The next round, if this one commits; a retry keeps this round's ratio
  // and finds what it needs in the table. Every device may have played
  // once more by then.
  return costs_.MissingNext(CandidateCombinedRatios(
      options_, options_.schedule.Ratio(round + 1), registry_.MostPlays() + 1));
}

void Engine::MeasureAhead(absl::Time now) {
  for (;;) {
    std::vector<double> ratios;
    int64_t serial = 0;
    {
      TimedLock lock(&mu_, &hooks_.lock_held, "tick");
      if (!round_ || round_->measured_ahead || RoundDone(now)) return;
      if (meter_.enabled()) ratios = AheadRatios(round_->number);
      if (ratios.empty()) {
        round_->measured_ahead = true;
        return;
      }
      ratios.resize(1);
      serial = round_->serial;
    }
    // The round's model cannot change meanwhile: only ticks commit. The
    // round may become closable (its last update arrives, its deadline
    // passes, `now` advancing by what the engine's clock saw pass): the
    // measurement stops then, within a batch, and this tick with it, so
    // the close is not held up.
    bool stopped = false;
    const absl::Time started = hooks_.clock();
    std::map<double, double> costs = meter_.Measure(ratios, [&] {
      TimedLock lock(&mu_, &hooks_.lock_held, "tick");
      stopped = !round_ || round_->serial != serial ||
                RoundDone(now + (hooks_.clock() - started));
      return stopped;
    });
    TimedLock lock(&mu_, &hooks_.lock_held, "tick");
    if (!round_ || round_->serial != serial) return;
    costs_.AddNext(costs);
    if (stopped) return;
  }
}

double Engine::ChargedPruningCost(double ratio) const {
  // Every ratio a round's bandits may ask about is measured before the
  // round opens (OpenRound); an unmeasured one costs nothing.
  return costs_.Find(ratio).value_or(0) /
         static_cast<double>(std::max<int64_t>(round_->target, 1));
}

RoundRecord Engine::RecordRound(const Round& round, absl::Time now,
                                bool committed) {
  RoundRecord record;
  record.round = round.number;
  record.attempt = round.attempt;
  record.committed = committed;
  record.global_ratio = round.global_ratio;
  record.invited = static_cast<int64_t>(round.participants.size());
  record.round_s = absl::ToDoubleSeconds(now - round.opened);
  if (round.secure) record.secure = round.secure->record();
  std::vector<double> elapsed;
  std::map<int64_t, std::vector<double>> norms;  // By task rank.
  for (const auto& [id, p] : round.participants) {
    if (p.stage != Stage::kAccepted) continue;
    elapsed.push_back(absl::ToDoubleSeconds(p.submitted - p.task->issued));
    norms[p.task->rank].push_back(p.update_norm);
  }
  RoundPay pay;
  pay.global_ratio = round.global_ratio;
  pay.pace_s = round.pace_s;
  pay.median_elapsed_s = strategies::Median(elapsed);
  for (auto& [rank, of_rank] : norms) {
    pay.median_update_norm[rank] = strategies::Median(std::move(of_rank));
  }
  double loss_sum = 0;
  for (const auto& [id, p] : round.participants) {
    Device& device = registry_.at(id);
    ClientRecord c;
    c.round = round.number;
    c.device_id = id;
    c.link = device.facts.link;
    if (p.task) {
      c.arm = p.task->arm;
      c.rank = p.task->rank;
      c.combined_ratio = p.task->combined_ratio;
      c.cut = p.task->cut;
      c.max_steps = p.task->max_steps;
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
      device.times.Observe(
          {c.combined_ratio, std::max<int64_t>(c.arm.rank, 1), t.train_s,
           t.download_s + t.upload_s,
           std::max(0.0, c.elapsed_s - t.train_s - t.download_s - t.upload_s),
           options_.train.max_steps > 0
               ? static_cast<double>(c.max_steps) /
                     static_cast<double>(options_.train.max_steps)
               : 1.0});
      ++record.accepted;
    } else if (straggler) {
      c.status = "straggler";
      c.elapsed_s = absl::ToDoubleSeconds(now - p.task->issued);
      ++record.stragglers;
    } else if (p.stage == Stage::kDeclined) {
      c.status = "declined";
      c.reward = options_.bandit.reward_min;
      registry_.Play(id, c.arm, c.reward);
      ++record.declined;
    } else {
      c.status = "dropped";
      ++record.dropped;
    }
    if (c.status == "accepted" || c.status == "straggler") {
      PayClient(options_, pay, straggler, p.task->pruning_cost, c);
      // The bandit was told part of the reward before it chose
      // (KnownReward): it learns the rest.
      registry_.Play(
          id, c.arm,
          LearnedReward(options_, c, p.task->known_reward, p.task->time_known));
    }
    record.clients.push_back(std::move(c));
  }
  record.mean_loss_after =
      record.accepted > 0 ? loss_sum / static_cast<double>(record.accepted) : 0;
  return record;
}

absl::Status Engine::CloseRound(absl::Time now) {
  // Take the round out: from here GetTask and Submit see no open round,
  // and the aggregate is this tick's alone (no fold is in flight).
  Round round;
  bool committed = false;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "close");
    round = *std::move(round_);
    round_.reset();
    committed = round.accepted >= options_.min_updates && round.accepted > 0;
  }
  double aggregate_s = 0;
  const absl::Time start = hooks_.clock();
  if (committed && round.secure) {
    if (absl::Status s = FoldSecureSum(round); !s.ok()) {
      LOG(WARNING) << "round " << round.number << " attempt " << round.attempt
                   << ": secure aggregation could not unmask the sum ("
                   << s.message() << "); retrying the round";
      committed = false;
    }
  }
  if (committed) {
    model::KillPoint("aggregate");  // Crash tests (model/kill_point.h).
    absl::Status s;
    {
      absl::MutexLock fold(&round.fold->mu);
      s = global_->Commit(round.fold->aggregate, options_.importance_ema);
    }
    if (!s.ok()) {
      // Nothing changed: the round is open again and the next Tick retries.
      TimedLock lock(&mu_, &hooks_.lock_held, "close");
      round_ = std::move(round);
      return s;
    }
    aggregate_s = absl::ToDoubleSeconds(hooks_.clock() - start);
  }
  RoundRecord record;
  State state;
  {
    TimedLock lock(&mu_, &hooks_.lock_held, "close");
    // What the round did not measure ahead (it closed first) is measured
    // before the next round opens, on the new model.
    if (committed) costs_.Advance();
    record = RecordRound(round, now, committed);
    record.aggregate_s = aggregate_s;
    if (committed && round.privacy) {
      std::vector<double> norms;
      for (const auto& [id, p] : round.participants) {
        if (p.stage == Stage::kAccepted) norms.push_back(p.update_norm);
      }
      const PrivacyRecord spent = privacy_->Commit(*round.privacy, norms);
      record.dp_epsilon = spent.epsilon;
      record.dp_clip_norm = spent.clip_norm;
    }
    if (committed) {
      ++next_round_;
      attempt_ = 0;
    } else {
      ++attempt_;
      LOG(WARNING) << "round " << record.round << " attempt " << record.attempt
                   << " closed with " << record.accepted << " of "
                   << options_.min_updates << " required updates; retrying";
      if (attempt_ >= options_.max_attempts) {
        // Not DEADLINE_EXCEEDED, which clients retry: the federation is
        // over, and every GetTask says why.
        failure_ = absl::FailedPreconditionError(
            absl::StrCat("the federation failed: round ", record.round,
                         " got fewer than ", options_.min_updates,
                         " updates in ", options_.max_attempts, " attempts"));
      }
    }
    history_.push_back(record);
    if (hooks_.on_round_closed) state = SnapshotLocked();
  }
  // The next round opens first, so that its devices download while this
  // one's checkpoint (fsync), CSV and evaluation are written, outside the
  // lock. Nothing is weakened: the next round cannot commit before a later
  // tick, and ticks are serialised, so hooks run in the rounds' order and a
  // crash before this checkpoint resumes from the one before, as it would
  // during the write.
  const absl::Status open_status = OpenRound(now);
  absl::Status hook_status = hooks_.on_round_closed
                                 ? hooks_.on_round_closed(record, state)
                                 : absl::OkStatus();
  if (!open_status.ok()) return open_status;
  return hook_status;
}

std::optional<SecurePhase> Engine::secure_phase() const {
  TimedLock lock(&mu_, &hooks_.lock_held, "read");
  if (!round_ || !round_->secure) return std::nullopt;
  return round_->secure->phase();
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
  return registry_.size();
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
  registry_.Save(state);
  if (privacy_) state.privacy = privacy_->State();
  // Tensor handles of the current version, never changed in place.
  state.global = global_->State();
  return state;
}

absl::Status Engine::Restore(const State& state) {
  absl::MutexLock serial(&tick_mu_);
  TimedLock lock(&mu_, &hooks_.lock_held, "restore");
  if (round_ || registry_.size() > 0 || next_round_ != 1) {
    return absl::FailedPreconditionError(
        "restore needs a fresh engine (before any registration or tick)");
  }
  if (state.next_round < 1) {
    return absl::InvalidArgumentError("checkpoint: next_round must be >= 1");
  }
  if (absl::Status s = global_->Restore(state.global); !s.ok()) return s;
  // A run's accountant covers all its rounds or none.
  if (privacy_ && state.privacy.rdp.empty() && state.next_round > 1) {
    return absl::InvalidArgumentError(
        "checkpoint: its rounds ran without differential privacy, which "
        "cannot be accounted for now; start a new run");
  }
  if (!privacy_ && !state.privacy.rdp.empty()) {
    return absl::InvalidArgumentError(
        "checkpoint: its rounds ran with differential privacy; resume with "
        "the same --dp_ flags");
  }
  if (privacy_ && !state.privacy.rdp.empty()) {
    if (absl::Status s = privacy_->Restore(state.privacy); !s.ok()) return s;
  }
  if (absl::Status s = registry_.Restore(state); !s.ok()) return s;
  next_round_ = state.next_round;
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
