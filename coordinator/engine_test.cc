#include "coordinator/engine.h"

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/trainer.h"
#include "pruning/plan.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

struct Harness {
  std::unique_ptr<Engine> engine;
  std::map<std::string, NamedTensors> published;
  std::vector<RoundRecord> closed;
  std::function<void(const RoundRecord&)> on_close;  // Also called, if set.
};

Harness MakeEngine(EngineOptions options,
                   decltype(EngineHooks::validation_loss) validation = {}) {
  torch::manual_seed(0);
  Harness h;
  auto global = GlobalModel::Create(testing::TinyVit(16), options.mode, {});
  EXPECT_TRUE(global.ok());
  EngineHooks hooks;
  hooks.validation_loss = std::move(validation);
  hooks.publish = [&h](const std::string& id, const NamedTensors& t) {
    h.published[id] = t;
  };
  hooks.on_round_closed = [&h](const RoundRecord& r, const EngineState&) {
    h.closed.push_back(r);
    if (h.on_close) h.on_close(r);
    return absl::OkStatus();
  };
  auto engine = Engine::Create(std::move(*global), options, hooks);
  EXPECT_TRUE(engine.ok()) << engine.status();
  h.engine = std::move(*engine);
  return h;
}

EngineOptions Options() {
  EngineOptions o;
  o.rounds = 3;
  o.round_deadline = absl::Seconds(60);
  o.heartbeat_timeout = absl::Seconds(30);
  o.bandit.space.max_ratio = 0.5;
  o.bandit.space.ranks = {2, 4};
  return o;
}

void RegisterAll(Harness& h, int n) {
  for (int i = 0; i < n; ++i) {
    DeviceFacts f;
    f.device_id = "pi-" + std::to_string(i);
    f.link = i % 2 ? "wifi" : "5g-sa";
    ASSERT_TRUE(h.engine->Register(f, kStart).ok());
  }
}

// The device "trains": its payload plus a deterministic perturbation.
Submission Train(const Harness& h, const std::string& id, const Task& task,
                 double loss_after = 1.5) {
  Submission s;
  s.device_id = id;
  s.round = task.round;
  s.nonce = task.nonce;
  s.num_examples = 100;
  s.loss_before = 2.0;
  s.loss_after = loss_after;
  s.timings.train_s = 3;
  torch::manual_seed(task.round * 100 + std::stoi(id.substr(3)));
  for (const auto& item : h.published.at(task.payload_id)) {
    s.update.insert(item.key(),
                    item.value() + 0.01 * torch::randn_like(item.value()));
  }
  return s;
}

// A validation loss that grows as a model loses parameters (1e6 / their
// count), so every pruned plan costs something; counts its calls in
// `calls` when given.
decltype(EngineHooks::validation_loss) SizeLoss(int* calls = nullptr) {
  return [calls](model::ModelImpl& m, const StopFn&) -> absl::StatusOr<double> {
    if (calls != nullptr) ++*calls;
    double n = 0;
    for (const at::Tensor& p : m.parameters()) n += p.numel();
    return 1e6 / n;
  };
}

TEST(EngineTest, FullRoundsCloseWhenEveryoneSubmitted) {
  Harness h = MakeEngine(Options());
  EXPECT_EQ(h.engine->GetTask("pi-0", kStart).status().code(),
            absl::StatusCode::kNotFound);
  RegisterAll(h, 3);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  for (int r = 1; r <= 3; ++r) {
    const absl::Time now = kStart + absl::Seconds(10 * r);
    for (int i = 0; i < 3; ++i) {
      const std::string id = "pi-" + std::to_string(i);
      auto task = h.engine->GetTask(id, now);
      ASSERT_TRUE(task.ok()) << task.status();
      EXPECT_EQ(task->round, r);
      // GetTask is idempotent within a round.
      EXPECT_EQ(h.engine->GetTask(id, now)->nonce, task->nonce);
      ASSERT_TRUE(
          h.engine->Submit(Train(h, id, *task), now + absl::Seconds(i)).ok());
    }
    // The last update is answered before the round closes: the next Tick
    // closes it.
    EXPECT_EQ(h.closed.size(), static_cast<size_t>(r - 1));
    ASSERT_TRUE(h.engine->Tick(now + absl::Seconds(2)).ok());
    EXPECT_EQ(h.closed.size(), static_cast<size_t>(r));
  }
  ASSERT_EQ(h.closed.size(), 3u);
  EXPECT_TRUE(h.engine->finished());
  EXPECT_EQ(h.engine->GetTask("pi-0", kStart).status().code(),
            absl::StatusCode::kOutOfRange);
  for (const RoundRecord& r : h.closed) {
    EXPECT_TRUE(r.committed);
    EXPECT_EQ(r.accepted, 3);
    ASSERT_EQ(r.clients.size(), 3u);
    // pi-0 submitted 2 s before the close.
    EXPECT_DOUBLE_EQ(r.clients[0].wait_s, 2.0);
    EXPECT_EQ(r.clients[0].status, "accepted");
    EXPECT_NEAR(r.clients[0].terms.loss_improvement, 0.25, 1e-12);
  }
}

// The next round opens before the closed round's hook (its checkpoint and
// fsync) runs, so devices download while the checkpoint is written.
TEST(EngineTest, TheNextRoundIsOpenWhileTheClosedRoundsHookRuns) {
  EngineOptions o = Options();
  o.rounds = 2;
  Harness h = MakeEngine(o);
  RegisterAll(h, 2);
  std::vector<std::string> during_hook;  // pi-0's GetTask in each hook.
  h.on_close = [&](const RoundRecord&) {
    absl::StatusOr<Task> task = h.engine->GetTask("pi-0", kStart);
    during_hook.push_back(task.ok() ? absl::StrCat("round ", task->round)
                                    : task.status().ToString());
  };
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  for (int r = 1; r <= 2; ++r) {
    for (int i = 0; i < 2; ++i) {
      const std::string id = "pi-" + std::to_string(i);
      absl::StatusOr<Task> task = h.engine->GetTask(id, kStart);
      ASSERT_TRUE(task.ok()) << task.status();
      ASSERT_TRUE(h.engine->Submit(Train(h, id, *task), kStart).ok());
    }
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
  }
  ASSERT_EQ(during_hook.size(), 2u);
  EXPECT_EQ(during_hook[0], "round 2");
  // After the last round there is nothing to open.
  EXPECT_NE(during_hook[1].find("OUT_OF_RANGE"), std::string::npos)
      << during_hook[1];
}

// Reruns with the same --seed train the same way: the training seed comes
// from the seed, the device and the round, never from the random nonce.
// Under secure aggregation a Poisson draw of fewer than two devices opens
// no round, and the federation goes on drawing rather than failing.
TEST(EngineTest, SecureRoundsWaitForTwoSampledDevices) {
  EngineOptions o = Options();
  o.min_devices = 2;
  o.split.mode = "off";
  o.secure.enabled = true;
  o.selection.kind = strategies::SelectionKind::kPoisson;
  o.selection.sampling_rate = 1e-9;
  Harness h = MakeEngine(o);
  RegisterAll(h, 3);
  for (int tick = 0; tick < 5; ++tick) {
    ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(tick)).ok());
  }
  EXPECT_TRUE(h.engine->failure().ok()) << h.engine->failure();
  EXPECT_FALSE(h.engine->GetTask("pi-0", kStart + absl::Seconds(5)).ok());
  EXPECT_TRUE(h.closed.empty());
}

TEST(EngineTest, TasksCarryTheRoundsLearningRate) {
  EngineOptions options = Options();
  options.train.learning_rate = 0.01;
  options.train.round_schedule = "cosine";
  Harness h = MakeEngine(options);
  RegisterAll(h, 2);
  for (int64_t round = 1; round <= options.rounds; ++round) {
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    for (const std::string id : {"pi-0", "pi-1"}) {
      absl::StatusOr<Task> task = h.engine->GetTask(id, kStart);
      ASSERT_TRUE(task.ok()) << task.status();
      EXPECT_DOUBLE_EQ(task->learning_rate,
                       options.train.RoundLearningRate(round, options.rounds));
      ASSERT_TRUE(h.engine->Submit(Train(h, id, *task), kStart).ok());
    }
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
  }
  ASSERT_EQ(h.closed.size(), 3u);
}

TEST(EngineTest, TrainingSeedsRepeatAcrossRunsAndDifferPerDeviceAndRound) {
  std::vector<std::map<std::string, uint64_t>> runs;
  for (int run = 0; run < 2; ++run) {
    Harness h = MakeEngine(Options());
    RegisterAll(h, 2);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    std::map<std::string, uint64_t> seeds;
    std::set<std::string> nonces;
    for (int r = 1; r <= 2; ++r) {
      for (const std::string id : {"pi-0", "pi-1"}) {
        auto task = h.engine->GetTask(id, kStart);
        ASSERT_TRUE(task.ok()) << task.status();
        seeds[absl::StrCat(id, "@", r)] = task->train_seed;
        nonces.insert(task->nonce);
        ASSERT_TRUE(h.engine->Submit(Train(h, id, *task), kStart).ok());
      }
      ASSERT_TRUE(h.engine->Tick(kStart).ok());
    }
    EXPECT_EQ(nonces.size(), 4u);
    std::set<uint64_t> distinct;
    for (const auto& [key, seed] : seeds) distinct.insert(seed);
    EXPECT_EQ(distinct.size(), 4u) << "seeds repeat across devices or rounds";
    runs.push_back(seeds);
  }
  EXPECT_EQ(runs[0], runs[1]);
  EngineOptions other = Options();
  other.seed = 2;
  Harness h = MakeEngine(other);
  RegisterAll(h, 2);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  EXPECT_NE(h.engine->GetTask("pi-0", kStart)->train_seed, runs[0]["pi-0@1"]);
}

TEST(EngineTest, OnlyDevicesThatAskedForWorkAreInvited) {
  EngineOptions options = Options();
  options.invite_only_polled = true;
  options.min_devices = 2;
  Harness h = MakeEngine(options);
  RegisterAll(h, 5);  // pi-2..pi-4 register and never ask for work.
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  // No round yet: nobody asked. Asking before a round is "retry later".
  EXPECT_EQ(h.engine->GetTask("pi-0", kStart).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  EXPECT_EQ(h.engine->GetTask("pi-0", kStart).status().code(),
            absl::StatusCode::kUnavailable);  // 1 < min_devices.
  EXPECT_EQ(h.engine->GetTask("pi-1", kStart).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  const absl::Time now = kStart + absl::Seconds(1);
  for (const std::string id : {"pi-0", "pi-1"}) {
    auto task = h.engine->GetTask(id, now);
    ASSERT_TRUE(task.ok()) << task.status();
    ASSERT_TRUE(h.engine->Submit(Train(h, id, *task), now).ok());
  }
  // The round closed with the two that asked, without waiting for the
  // silent three.
  ASSERT_TRUE(h.engine->Tick(now).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].invited, 2);
  EXPECT_EQ(h.closed[0].accepted, 2);
}

TEST(EngineTest, FullRegistryForgetsSilentDevicesThatNeverAskedForWork) {
  EngineOptions options = Options();
  options.max_devices = 2;
  Harness h = MakeEngine(options);
  RegisterAll(h, 2);
  ASSERT_TRUE(h.engine->GetTask("pi-0", kStart).status().code() !=
              absl::StatusCode::kNotFound);  // pi-0 asked for work.
  DeviceFacts f;
  f.device_id = "pi-9";
  // Full, and pi-1 is not silent for long enough yet.
  EXPECT_EQ(h.engine->Register(f, kStart + absl::Seconds(10)).status().code(),
            absl::StatusCode::kResourceExhausted);
  // pi-1 never asked and has been silent past the timeout: it makes room;
  // pi-0, equally silent, asked for work and stays.
  const absl::Time later = kStart + absl::Seconds(31);
  ASSERT_TRUE(h.engine->Register(f, later).ok());
  EXPECT_EQ(h.engine->GetTask("pi-1", later).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_NE(h.engine->GetTask("pi-0", later).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(h.engine->registered(), 2);
}

// The pruning cost: each pruned task's plan is evaluated against the
// unpruned model (here a stand-in loss that grows as parameters are
// removed), recorded in the task and the client record, and subtracted
// from the reward; unpruned tasks cost nothing and are not evaluated.
TEST(EngineTest, PrunedTasksAreChargedWhatTheirPruningCostsTheGlobalModel) {
  EngineOptions options = Options();
  options.bandit.kind = strategies::BanditKind::kFixed;
  int evaluations = 0;
  const auto loss = SizeLoss(&evaluations);
  for (double ratio : {0.0, 0.5}) {
    evaluations = 0;
    options.bandit.fixed_arm = strategies::Arm{ratio, 4};
    Harness h = MakeEngine(options, loss);
    RegisterAll(h, 2);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    std::map<std::string, Task> tasks;
    for (const std::string id : {"pi-0", "pi-1"}) {
      tasks[id] = *h.engine->GetTask(id, kStart);
    }
    if (ratio == 0) {
      EXPECT_EQ(tasks["pi-0"].pruning_cost, 0.0);
      EXPECT_EQ(evaluations, 0);
    } else {
      EXPECT_GT(tasks["pi-0"].pruning_cost, 0.05);
      EXPECT_LE(tasks["pi-0"].pruning_cost, 1.0);
      // The unpruned loss once, then the one ratio both tasks share.
      EXPECT_EQ(evaluations, 2);
    }
    for (const std::string id : {"pi-0", "pi-1"}) {
      ASSERT_TRUE(h.engine->Submit(Train(h, id, tasks[id]), kStart).ok());
    }
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    ASSERT_EQ(h.closed.size(), 1u);
    const ClientRecord& c = h.closed[0].clients[0];
    EXPECT_DOUBLE_EQ(c.terms.pruning_cost, tasks["pi-0"].pruning_cost);
    strategies::RewardTerms without = c.terms;
    without.pruning_cost = 0;
    EXPECT_NEAR(c.reward,
                strategies::Reward(without, options.reward) -
                    options.reward.pruning_cost * c.terms.pruning_cost,
                1e-12);
  }
}

// The pruning cost is the same for every device and measured before the
// bandit chooses, so FedSpine is told it (strategies::KnownReward) instead
// of learning it by playing costly ratios, and its plays hold the reward
// less the part it was told. Here every ratio that removes anything costs
// the global model; without the measurement, FedSpine prunes. The first
// round measures when it opens; every later round's costs are measured
// during the round before, once its tasks are out, so no round waits.
TEST(EngineTest, BanditsAreToldThePruningCostBeforeTheyChoose) {
  EngineOptions options = Options();
  options.bandit.kind = strategies::BanditKind::kFedSpine;
  options.reward.time = 0;  // The time term has its own test.
  int evaluations = 0;
  const auto loss = SizeLoss(&evaluations);
  for (const bool measured : {true, false}) {
    Harness h = MakeEngine(options, measured ? loss : nullptr);
    RegisterAll(h, 2);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    int pruned = 0;
    for (int round = 1; round <= 3; ++round) {
      if (measured && round == 1) {
        EXPECT_GT(evaluations, 0) << "the first round measures as it opens";
      } else {
        EXPECT_EQ(evaluations, 0)
            << "round " << round << " opened measuring what it should have "
            << "measured ahead";
      }
      const int measured_at_open = evaluations;
      std::map<std::string, Task> tasks;
      for (const std::string id : {"pi-0", "pi-1"}) {
        absl::StatusOr<Task> task = h.engine->GetTask(id, kStart);
        ASSERT_TRUE(task.ok()) << task.status();
        tasks[id] = *task;
        pruned += task->combined_ratio > 0.1;
        if (measured) {
          EXPECT_LE(task->pruning_cost, strategies::kKnownTie)
              << id << " round " << round << " ratio " << task->combined_ratio;
        }
      }
      EXPECT_EQ(evaluations, measured_at_open) << "a task waited";
      // Every task is out: the next round's costs, on this round's model
      // (round 1's were measured as it opened).
      evaluations = 0;
      ASSERT_TRUE(h.engine->Tick(kStart).ok());
      if (measured && round > 1) {
        EXPECT_GT(evaluations, 0) << "round " << round;
      }
      evaluations = 0;
      for (const std::string id : {"pi-0", "pi-1"}) {
        ASSERT_TRUE(h.engine->Submit(Train(h, id, tasks[id]), kStart).ok());
      }
      ASSERT_TRUE(h.engine->Tick(kStart).ok());
    }
    ASSERT_EQ(h.closed.size(), 3u);
    if (!measured) {
      EXPECT_GT(pruned, 0) << "FedSpine never pruned: the test shows nothing";
      continue;
    }
    const std::vector<BanditPlay> plays = h.engine->Snapshot().plays;
    ASSERT_EQ(plays.size(), 6u);
    size_t i = 0;
    for (const RoundRecord& r : h.closed) {
      for (const ClientRecord& c : r.clients) {
        EXPECT_NEAR(
            plays[i++].reward,
            c.reward + options.reward.pruning_cost * c.terms.pruning_cost,
            1e-12);
      }
    }
  }
}

// Each device's time model predicts its time under every arm after its
// first task, and the bandit is told the time term at the round's pace
// before it chooses: the slow device prunes to keep up, the fast one, off
// the critical path, need not. What the bandit learns is the reward less
// what it was told.
// Runs `options.rounds` rounds of devices pi-0, pi-1, ... whose training
// takes `seconds_per_work` per unit of strategies::RelativeWork (per
// options.train.max_steps steps, when set); returns each round's tasks.
std::vector<std::map<std::string, Task>> RunTimedRounds(
    Harness& h, const EngineOptions& options,
    const std::map<std::string, double>& seconds_per_work) {
  std::vector<std::map<std::string, Task>> rounds;
  RegisterAll(h, static_cast<int>(seconds_per_work.size()));
  EXPECT_TRUE(h.engine->Tick(kStart).ok());
  const strategies::WorkShares shares =
      TrainingWork(*testing::TinyVit(16), options);
  absl::Time now = kStart;
  for (int round = 1; round <= options.rounds; ++round) {
    std::map<std::string, Task>& tasks = rounds.emplace_back();
    for (const auto& [id, s] : seconds_per_work) {
      absl::StatusOr<Task> task = h.engine->GetTask(id, now);
      EXPECT_TRUE(task.ok()) << task.status();
      if (!task.ok()) return rounds;
      tasks[id] = *task;
    }
    for (const auto& [id, s] : seconds_per_work) {
      Submission sub = Train(h, id, tasks[id]);
      sub.timings.train_s =
          s * strategies::RelativeWork(tasks[id].combined_ratio, tasks[id].rank,
                                       shares);
      if (options.train.max_steps > 0) {
        sub.timings.train_s *= static_cast<double>(tasks[id].max_steps) /
                               static_cast<double>(options.train.max_steps);
      }
      EXPECT_TRUE(
          h.engine->Submit(sub, now + absl::Seconds(sub.timings.train_s)).ok());
    }
    now += absl::Seconds(60);
    EXPECT_TRUE(h.engine->Tick(now).ok());
  }
  return rounds;
}

// The last update arrives while a tick measures the next round's pruning
// costs: the measurement is told to stop, so the round closes at the next
// tick instead of after every ratio has been evaluated.
TEST(EngineTest, MeasuringAheadStopsAsSoonAsTheRoundCanClose) {
  EngineOptions options = Options();
  options.bandit.kind = strategies::BanditKind::kFedSpine;
  const auto size_loss = SizeLoss();
  Harness* harness = nullptr;
  std::map<std::string, Task> tasks;
  bool submit_while_measuring = false;
  int measured_ahead = 0, stopped = 0;
  Harness h = MakeEngine(
      options,
      [&](model::ModelImpl& m, const StopFn& stop) -> absl::StatusOr<double> {
        if (!stop) return size_loss(m, stop);  // As a round opens.
        ++measured_ahead;
        if (submit_while_measuring) {
          submit_while_measuring = false;
          for (const auto& [id, task] : tasks) {
            EXPECT_TRUE(
                harness->engine->Submit(Train(*harness, id, task), kStart)
                    .ok());
          }
        }
        if (stop()) {
          ++stopped;
          return absl::CancelledError("told to stop");
        }
        return size_loss(m, stop);
      });
  harness = &h;
  RegisterAll(h, 2);
  for (int round = 1; round <= 2; ++round) {
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    tasks.clear();
    for (const std::string id : {"pi-0", "pi-1"}) {
      absl::StatusOr<Task> task = h.engine->GetTask(id, kStart);
      ASSERT_TRUE(task.ok()) << task.status();
      tasks[id] = *task;
    }
    // Round 2 measures on a new model: its updates arrive meanwhile.
    submit_while_measuring = round == 2;
    measured_ahead = 0;
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    if (round == 1) {
      for (const auto& [id, task] : tasks) {
        ASSERT_TRUE(h.engine->Submit(Train(h, id, task), kStart).ok());
      }
      ASSERT_TRUE(h.engine->Tick(kStart).ok());
      ASSERT_EQ(h.closed.size(), 1u);
    }
  }
  EXPECT_EQ(measured_ahead, 1) << "the measurement went on";
  EXPECT_EQ(stopped, 1);
  ASSERT_EQ(h.closed.size(), 1u);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  EXPECT_EQ(h.closed.size(), 2u);
}

TEST(EngineTest, BanditsAreToldTheirTimeAtTheRoundsPace) {
  EngineOptions options = Options();
  options.rounds = 8;
  options.bandit.kind = strategies::BanditKind::kFedSpine;
  options.bandit.space.max_ratio = 0.6;
  Harness h = MakeEngine(options);
  const std::vector<std::map<std::string, Task>> rounds =
      RunTimedRounds(h, options, {{"pi-0", 40}, {"pi-1", 5}});
  ASSERT_EQ(h.closed.size(), static_cast<size_t>(options.rounds));
  std::map<std::string, double> late_ratio;
  for (int round = 1; round <= options.rounds; ++round) {
    for (const auto& [id, task] : rounds[round - 1]) {
      if (round == 1) {
        EXPECT_EQ(task.known_reward, 0) << "nothing known yet";
      }
      if (round > options.rounds / 2) {
        late_ratio[id] += task.combined_ratio / (options.rounds / 2);
      }
    }
  }
  EXPECT_GT(late_ratio["pi-0"], 0.3) << "the slow device did not prune";
  EXPECT_LT(late_ratio["pi-1"], 0.1) << "the fast device pruned for nothing";
  EXPECT_EQ(h.closed.back().clients[1].terms.time_over_pace, 0)
      << "the fast device is off the critical path";
  // Round 1 knew nothing: its plays hold the whole reward but its time
  // term, which the time models hold from then on.
  const std::vector<BanditPlay> plays = h.engine->Snapshot().plays;
  ASSERT_EQ(plays.size(), 2u * options.rounds);
  const ClientRecord& first = h.closed[0].clients[0];
  EXPECT_GT(first.terms.time_over_pace, 0) << "pi-0 overran round 1";
  EXPECT_DOUBLE_EQ(
      plays[0].reward,
      first.reward + options.reward.time * first.terms.time_over_pace);
  // Later rounds were told their time: they learn the reward less that.
  double learned = 0, paid_less_known = 0;
  for (size_t i = plays.size() - 2; i < plays.size(); ++i) {
    learned += plays[i].reward;
  }
  for (const ClientRecord& c : h.closed.back().clients) {
    paid_less_known += c.reward - rounds.back().at(c.device_id).known_reward;
  }
  EXPECT_NEAR(learned, paid_less_known, 1e-12);
  // The time models are checkpointed with the engine.
  EXPECT_EQ(h.engine->Snapshot().time_models.at("pi-0").observations,
            options.rounds);
}

// --fill_pace: once the time models know them, a device that would wait
// for the slow one trains more steps instead, up to the cap, and its time
// model still counts per usual task.
TEST(EngineTest, FastDevicesFillTheRoundsPaceWithSteps) {
  EngineOptions options = Options();
  options.rounds = 3;
  options.bandit.kind = strategies::BanditKind::kFixed;
  options.bandit.fixed_arm = {0.0, 4};
  options.train.max_steps = 10;
  options.train.fill_pace = 4;
  Harness h = MakeEngine(options);
  const std::vector<std::map<std::string, Task>> rounds =
      RunTimedRounds(h, options, {{"pi-0", 40}, {"pi-1", 5}, {"pi-2", 20}});
  ASSERT_EQ(rounds.size(), 3u);
  for (const auto& [id, task] : rounds[0]) {
    EXPECT_EQ(task.max_steps, 10) << id << ": nothing known yet";
  }
  for (size_t r = 1; r < rounds.size(); ++r) {
    EXPECT_EQ(rounds[r].at("pi-0").max_steps, 10) << "the slowest is the pace";
    EXPECT_EQ(rounds[r].at("pi-1").max_steps, 40) << "8x fits; capped at 4x";
    EXPECT_EQ(rounds[r].at("pi-2").max_steps, 20) << "2x fits";
  }
  EXPECT_EQ(h.closed.back().clients[1].max_steps, 40);
  // pi-1's 40-step tasks took four times as long: still 5 s a unit.
  EXPECT_NEAR(h.engine->Snapshot().time_models.at("pi-1").work_s, 5.0, 1e-9);

  options.train.fill_pace = 1;
  Harness off = MakeEngine(options);
  for (const auto& round : RunTimedRounds(
           off, options, {{"pi-0", 40}, {"pi-1", 5}, {"pi-2", 20}})) {
    for (const auto& [id, task] : round) EXPECT_EQ(task.max_steps, 10) << id;
  }
}

// The static capability rule: once its time model knows it, a device gets
// the least pruning, then the highest rank, that keeps it within the 75th
// percentile device's time at the least pruned arm and highest rank (here
// a fast device's), or its fastest arm when nothing does.
TEST(EngineTest, TheStaticRuleGivesEachDeviceWhatFitsTheBudget) {
  EngineOptions options = Options();
  options.rounds = 3;
  options.bandit.kind = strategies::BanditKind::kStatic;
  options.bandit.space.ranks = {2, 4, 8};
  Harness h = MakeEngine(options);
  const std::vector<std::map<std::string, Task>> rounds = RunTimedRounds(
      h, options, {{"pi-0", 40}, {"pi-1", 5}, {"pi-2", 5}, {"pi-3", 5}});
  ASSERT_EQ(rounds.size(), 3u);
  // Round 1 knows no times: everyone plays the least pruned, highest rank.
  for (const auto& [id, task] : rounds[0]) {
    EXPECT_EQ(task.arm, (strategies::Arm{0.0, 8})) << id;
  }
  for (size_t r = 1; r < rounds.size(); ++r) {
    EXPECT_EQ(rounds[r].at("pi-1").arm, (strategies::Arm{0.0, 8}));
    // The slow device fits no arm: its fastest, the most pruned at the
    // lowest rank.
    EXPECT_EQ(rounds[r].at("pi-0").arm, (strategies::Arm{0.5, 2}));
  }
}

// A device's pruning cost is its share of the round's aggregate: with
// twice the devices, each pruned sub-model moves the global model half as
// far, and is charged half.
TEST(EngineTest, ThePruningCostIsTheDevicesShareOfTheRound) {
  EngineOptions options = Options();
  options.bandit.kind = strategies::BanditKind::kFixed;
  options.bandit.fixed_arm = strategies::Arm{0.5, 4};
  const auto loss = SizeLoss();
  std::map<int, double> cost;
  for (int devices : {2, 4}) {
    Harness h = MakeEngine(options, loss);
    RegisterAll(h, devices);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    absl::StatusOr<Task> task = h.engine->GetTask("pi-0", kStart);
    ASSERT_TRUE(task.ok()) << task.status();
    cost[devices] = task->pruning_cost;
  }
  EXPECT_GT(cost[2], 0);
  EXPECT_NEAR(cost[4], cost[2] / 2, 1e-12);
}

// A failing or nonsensical validation measurement costs nothing and never
// withholds a task.
TEST(EngineTest, AFailedPruningCostMeasurementStillGivesTheTask) {
  EngineOptions options = Options();
  options.bandit.kind = strategies::BanditKind::kFixed;
  options.bandit.fixed_arm = strategies::Arm{0.5, 4};
  for (absl::StatusOr<double> answer :
       {absl::StatusOr<double>(absl::InternalError("eval died")),
        absl::StatusOr<double>(NAN)}) {
    Harness h = MakeEngine(
        options, [answer](model::ModelImpl&, const StopFn&) { return answer; });
    RegisterAll(h, 1);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    absl::StatusOr<Task> task = h.engine->GetTask("pi-0", kStart);
    ASSERT_TRUE(task.ok()) << task.status();
    EXPECT_EQ(task->pruning_cost, 0.0);
  }
}

TEST(EngineTest, DeadlineDropsStragglersAndPenalisesTheirArm) {
  Harness h = MakeEngine(Options());
  RegisterAll(h, 3);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  std::map<std::string, Task> tasks;
  for (int i = 0; i < 3; ++i) {
    const std::string id = "pi-" + std::to_string(i);
    tasks[id] = *h.engine->GetTask(id, kStart);
  }
  ASSERT_TRUE(
      h.engine
          ->Submit(Train(h, "pi-0", tasks["pi-0"]), kStart + absl::Seconds(5))
          .ok());
  ASSERT_TRUE(
      h.engine
          ->Submit(Train(h, "pi-1", tasks["pi-1"]), kStart + absl::Seconds(6))
          .ok());
  // pi-2 keeps its heartbeat but misses the deadline.
  ASSERT_TRUE(h.engine->Heartbeat("pi-2", kStart + absl::Seconds(40)).ok());
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(59)).ok());
  EXPECT_TRUE(h.closed.empty());
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(60)).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].accepted, 2);
  EXPECT_EQ(h.closed[0].stragglers, 1);
  EXPECT_EQ(h.closed[0].clients[2].status, "straggler");
  EXPECT_EQ(h.closed[0].clients[2].terms.time_over_pace, 4.0);
  EXPECT_EQ(h.engine->Snapshot().plays.size(), 3u);  // Penalty played.
  // Its late update is refused: the round is closed.
  EXPECT_EQ(
      h.engine
          ->Submit(Train(h, "pi-2", tasks["pi-2"]), kStart + absl::Seconds(61))
          .code(),
      absl::StatusCode::kFailedPrecondition);
}

TEST(EngineTest, OvercommitClosesAtTheTargetCount) {
  EngineOptions o = Options();
  o.selection.kind = strategies::SelectionKind::kDeadlineAware;
  o.selection.clients_per_round = 2;
  o.selection.overcommit = 1.5;
  Harness h = MakeEngine(o);
  RegisterAll(h, 5);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  std::vector<std::string> invited;
  for (int i = 0; i < 5; ++i) {
    const std::string id = "pi-" + std::to_string(i);
    if (h.engine->GetTask(id, kStart).ok()) invited.push_back(id);
  }
  ASSERT_EQ(invited.size(), 3u);
  std::vector<Task> tasks;
  for (const std::string& id : invited) {
    tasks.push_back(*h.engine->GetTask(id, kStart));
  }
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(h.engine->Submit(Train(h, invited[k], tasks[k]), kStart).ok());
  }
  // The round has its two updates: a third, before the tick that closes
  // it, is refused and the device counts as a straggler.
  EXPECT_EQ(h.engine->Submit(Train(h, invited[2], tasks[2]), kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(h.closed.empty());
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].accepted, 2);
  EXPECT_EQ(h.closed[0].stragglers, 1);
  EXPECT_EQ(h.engine->round(), 2);
}

TEST(EngineTest, DisconnectedDevicesAreNotWaitedFor) {
  Harness h = MakeEngine(Options());
  RegisterAll(h, 3);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  for (int i = 0; i < 2; ++i) {
    const std::string id = "pi-" + std::to_string(i);
    ASSERT_TRUE(
        h.engine->Submit(Train(h, id, *h.engine->GetTask(id, kStart)), kStart)
            .ok());
  }
  ASSERT_TRUE(h.engine->GetTask("pi-2", kStart).ok());
  h.engine->Disconnect("pi-2", kStart + absl::Seconds(1));
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(1)).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].dropped, 1);
  EXPECT_EQ(h.engine->Snapshot().plays.size(), 2u);  // No penalty for it.

  // A silent device is dropped after the heartbeat timeout.
  for (int i = 0; i < 2; ++i) {
    const std::string id = "pi-" + std::to_string(i);
    ASSERT_TRUE(h.engine
                    ->Submit(Train(h, id, *h.engine->GetTask(id, kStart)),
                             kStart + absl::Seconds(2))
                    .ok());
  }
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(32)).ok());
  ASSERT_EQ(h.closed.size(), 2u);
  EXPECT_EQ(h.closed[1].dropped, 1);
}

TEST(EngineTest, DeclinedTasksAreNotWaitedForAndGetTheMinimumReward) {
  Harness h = MakeEngine(Options());
  RegisterAll(h, 3);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  absl::StatusOr<Task> task = h.engine->GetTask("pi-2", kStart);
  ASSERT_TRUE(task.ok());
  // Wrong nonce or round: refused, nothing changes.
  EXPECT_EQ(h.engine->Decline("pi-2", 1, "other", "memory", kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(h.engine->Decline("pi-2", 2, task->nonce, "memory", kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      h.engine->Decline("nobody", 1, task->nonce, "memory", kStart).code(),
      absl::StatusCode::kNotFound);
  ASSERT_TRUE(h.engine->Decline("pi-2", 1, task->nonce, "memory", kStart).ok());
  // A declined device gets no task again this round.
  EXPECT_EQ(h.engine->GetTask("pi-2", kStart).status().code(),
            absl::StatusCode::kUnavailable);
  for (int i = 0; i < 2; ++i) {
    const std::string id = "pi-" + std::to_string(i);
    ASSERT_TRUE(
        h.engine->Submit(Train(h, id, *h.engine->GetTask(id, kStart)), kStart)
            .ok());
  }
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(1)).ok());
  ASSERT_EQ(h.closed.size(), 1u);  // Closed without waiting for pi-2.
  EXPECT_EQ(h.closed[0].accepted, 2);
  EXPECT_EQ(h.closed[0].declined, 1);
  const std::vector<BanditPlay> plays = h.engine->Snapshot().plays;
  ASSERT_EQ(plays.size(), 3u);
  bool penalised = false;
  for (const BanditPlay& play : plays) {
    if (play.device_id != "pi-2") continue;
    penalised = true;
    EXPECT_EQ(play.arm, task->arm);
    EXPECT_EQ(play.reward, Options().bandit.reward_min);
  }
  EXPECT_TRUE(penalised);
}

TEST(EngineTest, TooFewUpdatesRetryTheRound) {
  EngineOptions o = Options();
  o.min_updates = 2;
  o.max_attempts = 2;
  Harness h = MakeEngine(o);
  RegisterAll(h, 2);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  const NamedTensors before = h.engine->Snapshot().global;
  ASSERT_TRUE(
      h.engine
          ->Submit(Train(h, "pi-0", *h.engine->GetTask("pi-0", kStart)), kStart)
          .ok());
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(60)).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_FALSE(h.closed[0].committed);
  EXPECT_EQ(h.engine->round(), 1);  // Same round, next attempt.
  for (const auto& item : before) {
    EXPECT_TRUE(
        torch::equal(item.value(), h.engine->Snapshot().global[item.key()]));
  }
  auto task = h.engine->GetTask("pi-0", kStart + absl::Seconds(61));
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->round, 1);
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(130)).ok());
  EXPECT_TRUE(h.engine->finished());
  EXPECT_EQ(h.engine->failure().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(EngineTest, RejectsBadUpdatesAndIdentities) {
  EngineOptions o = Options();
  o.allow_list = {"pi-0", "pi-1"};
  Harness h = MakeEngine(o);
  DeviceFacts f;
  f.device_id = "intruder";
  EXPECT_EQ(h.engine->Register(f, kStart).status().code(),
            absl::StatusCode::kPermissionDenied);
  f.device_id = "pi/../0";
  EXPECT_EQ(h.engine->Register(f, kStart).status().code(),
            absl::StatusCode::kInvalidArgument);
  RegisterAll(h, 2);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  const Task task = *h.engine->GetTask("pi-0", kStart);
  Submission good = Train(h, "pi-0", task);

  Submission s = good;
  s.nonce = "replayed";
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  s = good;
  s.device_id = "pi-1";  // Another device's task.
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  s = good;
  s.update[s.update.keys()[0]] = torch::zeros({2, 2});
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kInvalidArgument);
  s = good;
  s.update[s.update.keys()[0]] = s.update[s.update.keys()[0]].clone();
  s.update[s.update.keys()[0]][0][0] = NAN;
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kInvalidArgument);
  s = good;
  s.loss_after = INFINITY;
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kInvalidArgument);
  s = good;
  s.timings.train_s = NAN;  // Would poison the bandit's time model.
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kInvalidArgument);
  s = good;
  s.round = 7;
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(h.engine->Submit(good, kStart).ok());
  EXPECT_EQ(h.engine->Submit(good, kStart).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(h.closed.empty());  // pi-1 still due.
}

TEST(EngineTest, ReportsAreCheckedBeforeTheirUpdateAndSessionsAreTheLatest) {
  Harness h = MakeEngine(Options());
  DeviceFacts f;
  f.device_id = "pi-0";
  const std::string first = *h.engine->Register(f, kStart);
  const std::string second = *h.engine->Register(f, kStart);
  EXPECT_NE(first, second);
  EXPECT_TRUE(h.engine->CheckSession("pi-0", second).ok());
  EXPECT_EQ(h.engine->CheckSession("pi-0", first).code(),
            absl::StatusCode::kNotFound);  // Registered again since.
  EXPECT_EQ(h.engine->CheckSession("pi-9", second).code(),
            absl::StatusCode::kNotFound);
  // A restored device holds no session: it must register again.
  Harness restored = MakeEngine(Options());
  ASSERT_TRUE(restored.engine->Restore(h.engine->Snapshot()).ok());
  EXPECT_EQ(restored.engine->CheckSession("pi-0", second).code(),
            absl::StatusCode::kNotFound);

  f.device_id = "pi-1";
  ASSERT_TRUE(h.engine->Register(f, kStart).ok());
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  const Task task = *h.engine->GetTask("pi-0", kStart);
  EXPECT_TRUE(h.engine->CheckSubmission("pi-0", task.round, task.nonce).ok());
  EXPECT_EQ(h.engine->CheckSubmission("pi-9", task.round, task.nonce).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(h.engine->CheckSubmission("pi-0", task.round, "stale").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      h.engine->CheckSubmission("pi-0", task.round + 1, task.nonce).code(),
      absl::StatusCode::kFailedPrecondition);
  // Checking changes nothing: the update is still accepted, once.
  ASSERT_TRUE(h.engine->Submit(Train(h, "pi-0", task), kStart).ok());
  EXPECT_EQ(h.engine->CheckSubmission("pi-0", task.round, task.nonce).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(EngineTest, AChangeFromThePayloadFoldsAsTheValuesItStandsFor) {
  // The same round twice: once with trained values, once with their
  // change from the payload (the top-k codec's update).
  std::vector<NamedTensors> globals;
  for (bool change : {false, true}) {
    Harness h = MakeEngine(Options());
    RegisterAll(h, 2);
    ASSERT_TRUE(h.engine->Tick(kStart).ok());
    for (const std::string id : {"pi-0", "pi-1"}) {
      const Task task = *h.engine->GetTask(id, kStart);
      Submission s = Train(h, id, task);
      if (change) {
        for (auto& item : s.update) {
          item.value() =
              item.value() - h.published.at(task.payload_id)[item.key()];
        }
        s.carries_change = true;
      }
      ASSERT_TRUE(h.engine->Submit(s, kStart).ok());
    }
    ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(1)).ok());
    ASSERT_EQ(h.closed.size(), 1u);
    globals.push_back(h.engine->Snapshot().global);
  }
  ASSERT_EQ(globals[0].size(), globals[1].size());
  for (const auto& item : globals[0]) {
    EXPECT_TRUE(
        torch::allclose(item.value(), globals[1][item.key()], 1e-5, 1e-6))
        << item.key();
  }
}

// Runs rounds [from, to] with devices pi-0..2 submitting in order.
void RunRounds(Harness& h, int from, int to) {
  for (int r = from; r <= to; ++r) {
    const absl::Time now = kStart + absl::Seconds(100 * r);
    ASSERT_TRUE(h.engine->Tick(now).ok());
    for (int i = 0; i < 3; ++i) {
      const std::string id = "pi-" + std::to_string(i);
      auto task = h.engine->GetTask(id, now);
      ASSERT_TRUE(task.ok()) << task.status();
      ASSERT_EQ(task->round, r);
      ASSERT_TRUE(h.engine
                      ->Submit(Train(h, id, *task, 1.0 + 0.1 * i),
                               now + absl::Seconds(i + 1))
                      .ok());
    }
    ASSERT_TRUE(h.engine->Tick(now + absl::Seconds(3)).ok());
  }
}

TEST(EngineTest, RestoredEngineContinuesBitIdentically) {
  EngineOptions o = Options();
  o.rounds = 4;
  o.schedule = {0.3, 0, 4};
  // No attempt may time out here: devices only speak at their turn.
  o.round_deadline = absl::Hours(1);
  o.heartbeat_timeout = absl::Hours(1);
  Harness straight = MakeEngine(o);
  RegisterAll(straight, 3);
  RunRounds(straight, 1, 4);

  Harness first = MakeEngine(o);
  RegisterAll(first, 3);
  RunRounds(first, 1, 2);
  const Engine::State state = first.engine->Snapshot();
  Harness resumed = MakeEngine(o);
  ASSERT_TRUE(resumed.engine->Restore(state).ok());
  EXPECT_EQ(resumed.engine->round(), 3);
  RunRounds(resumed, 3, 4);
  const NamedTensors a = straight.engine->Snapshot().global;
  const NamedTensors b = resumed.engine->Snapshot().global;
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(straight.closed[2 + r].clients[c].arm,
                resumed.closed[r].clients[c].arm)
          << r << " " << c << " "
          << strategies::ArmToString(straight.closed[2 + r].clients[c].arm)
          << " " << strategies::ArmToString(resumed.closed[r].clients[c].arm);
    }
  }
}

}  // namespace
}  // namespace fedge::coordinator

namespace fedge::coordinator {
namespace {

TEST(EngineTest, SplitRoundsMergeTheCoordinatorsHalfIntoTheUpdate) {
  EngineOptions o = Options();
  o.rounds = 1;
  o.split.mode = "1";
  Harness h = MakeEngine(o);
  RegisterAll(h, 1);
  ASSERT_TRUE(h.engine->Tick(kStart).ok());
  auto task = h.engine->GetTask("pi-0", kStart);
  ASSERT_TRUE(task.ok());
  ASSERT_EQ(task->cut, 1);
  EXPECT_EQ(h.engine
                ->SplitStep("pi-0", task->round, "not-the-nonce",
                            testing::TinyVitSplitStep(1), kStart)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  for (int64_t step = 1; step <= 2; ++step) {
    auto reply = h.engine->SplitStep("pi-0", task->round, task->nonce,
                                     testing::TinyVitSplitStep(step), kStart);
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->gradients.sizes(), (std::vector<int64_t>{4, 17, 32}));
  }
  // The device trained nothing of its own here: its update is what it was
  // sent, so any change comes from the coordinator's half.
  Submission s;
  s.device_id = "pi-0";
  s.round = task->round;
  s.nonce = task->nonce;
  s.num_examples = 8;
  s.loss_before = 2;
  s.loss_after = 1.9;
  s.update = h.published.at(task->payload_id);
  s.split_steps = 5;  // More than it ran: refused.
  EXPECT_EQ(h.engine->Submit(s, kStart).code(),
            absl::StatusCode::kFailedPrecondition);
  s.split_steps = 2;
  ASSERT_TRUE(h.engine->Submit(s, kStart + absl::Seconds(1)).ok());
  ASSERT_TRUE(h.engine->Tick(kStart + absl::Seconds(1)).ok());
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].clients[0].cut, 1);
  EXPECT_GT(h.closed[0].clients[0].update_norm, 0);
}

// A round can close while a device's task is being built outside the
// engine's lock (here: its deadline passes during the publish). The device
// is told to retry, and what was published for the dead task is withdrawn.
TEST(EngineTest, ATaskWhoseRoundClosedWhileItWasBuiltIsWithdrawn) {
  EngineOptions o = Options();
  auto global = GlobalModel::Create(testing::TinyVit(16), o.mode, {});
  ASSERT_TRUE(global.ok());
  Engine* engine = nullptr;
  std::vector<std::string> published, withdrawn;
  EngineHooks hooks;
  hooks.publish = [&](const std::string& id, const NamedTensors&) {
    if (published.empty()) {
      EXPECT_TRUE(engine->Tick(kStart + absl::Seconds(61)).ok());
    }
    published.push_back(id);
  };
  hooks.withdraw = [&](const std::string& id) { withdrawn.push_back(id); };
  auto made = Engine::Create(std::move(*global), o, hooks);
  ASSERT_TRUE(made.ok());
  engine = made->get();
  DeviceFacts f;
  f.device_id = "pi-0";
  ASSERT_TRUE(engine->Register(f, kStart).ok());
  ASSERT_TRUE(engine->Tick(kStart).ok());
  const absl::StatusOr<Task> lost = engine->GetTask("pi-0", kStart);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(lost.status().message().find("closed while"), std::string::npos)
      << lost.status();
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(withdrawn, published);
  // The round is retried, and the device gets a task of the new attempt.
  const absl::StatusOr<Task> retried =
      engine->GetTask("pi-0", kStart + absl::Seconds(61));
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->round, 1);
  EXPECT_NE(retried->payload_id, published[0]);
  EXPECT_EQ(engine->history().size(), 1u);
}

// The engine driven from many threads at once, as the gRPC callback threads
// and the ticker do: devices re-registering, polling for tasks, running
// split steps, heartbeating and submitting while the ticker opens, measures
// and closes rounds. Every round must commit with every device's update,
// and every status must be one the contract allows. Run under ASan and TSan
// builds, this is where a data race or a lock-order bug shows.
TEST(EngineConcurrencyTest, ManyThreadsDriveEveryRoundToItsEnd) {
  constexpr int kDevices = 8;
  EngineOptions o = Options();
  o.rounds = 4;
  o.min_devices = kDevices;
  o.round_deadline = absl::Hours(1);
  o.heartbeat_timeout = absl::Hours(1);
  o.split.mode = "auto";  // Devices with a tiny memory budget are split.
  torch::manual_seed(0);
  auto global = GlobalModel::Create(testing::TinyVit(16), o.mode, {});
  ASSERT_TRUE(global.ok());
  std::mutex mu;  // Guards `published`: publish runs concurrently.
  std::map<std::string, NamedTensors> published;
  std::atomic<int> closed{0};
  EngineHooks hooks;
  hooks.validation_loss = SizeLoss();
  hooks.publish = [&](const std::string& id, const NamedTensors& t) {
    std::lock_guard<std::mutex> lock(mu);
    published[id] = t;
  };
  hooks.on_round_closed = [&](const RoundRecord& r, const EngineState& st) {
    EXPECT_TRUE(r.committed);
    EXPECT_EQ(st.next_round, r.round + 1);
    ++closed;
    return absl::OkStatus();
  };
  auto engine = Engine::Create(std::move(*global), o, hooks);
  ASSERT_TRUE(engine.ok());
  Engine& e = **engine;
  auto facts = [](int i) {
    DeviceFacts f;
    f.device_id = "pi-" + std::to_string(i);
    f.memory_budget_bytes = i % 2 ? 1 : 0;  // Odd devices are split.
    return f;
  };
  for (int i = 0; i < kDevices; ++i) {
    ASSERT_TRUE(e.Register(facts(i), absl::Now()).ok());
  }
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!e.finished()) {
      const absl::Status s = e.Tick(absl::Now());
      EXPECT_TRUE(s.ok()) << s;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    stop = true;
  });
  std::vector<std::thread> devices;
  for (int i = 0; i < kDevices; ++i) {
    devices.emplace_back([&, i] {
      const std::string id = "pi-" + std::to_string(i);
      int64_t submitted = 0;
      for (int n = 0; !stop; ++n) {
        if (n % 50 == 49) {  // Re-registration keeps the device's history.
          EXPECT_TRUE(e.Register(facts(i), absl::Now()).ok());
        }
        EXPECT_TRUE(e.Heartbeat(id, absl::Now()).ok());
        absl::StatusOr<Task> task = e.GetTask(id, absl::Now());
        if (!task.ok()) {
          EXPECT_TRUE(absl::IsUnavailable(task.status()) ||
                      absl::IsOutOfRange(task.status()))
              << task.status();
          std::this_thread::yield();
          continue;
        }
        if (task->round == submitted) continue;
        EXPECT_EQ(task->cut > 0, i % 2 == 1);
        Submission s;
        s.device_id = id;
        s.round = task->round;
        s.nonce = task->nonce;
        s.num_examples = 10;
        s.loss_before = 2;
        s.loss_after = 1.5;
        for (int64_t step = 1; step <= 2 && task->cut > 0; ++step) {
          absl::StatusOr<split::StepReply> reply =
              e.SplitStep(id, task->round, task->nonce,
                          testing::TinyVitSplitStep(step, 2), absl::Now());
          EXPECT_TRUE(reply.ok()) << reply.status();
          s.split_steps = step;
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          for (const auto& item : published.at(task->payload_id)) {
            s.update.insert(item.key(), item.value() + 0.01);
          }
        }
        const absl::Status status = e.Submit(s, absl::Now());
        EXPECT_TRUE(status.ok()) << status;
        submitted = task->round;
      }
    });
  }
  ticker.join();
  for (std::thread& t : devices) t.join();
  EXPECT_TRUE(e.failure().ok()) << e.failure();
  const std::vector<RoundRecord> history = e.history();
  ASSERT_EQ(history.size(), 4u);
  for (const RoundRecord& r : history) {
    EXPECT_TRUE(r.committed);
    EXPECT_EQ(r.accepted, kDevices) << "round " << r.round;
  }
  EXPECT_EQ(closed.load(), 4);
}

}  // namespace
}  // namespace fedge::coordinator

namespace fedge::coordinator {
namespace {

EngineOptions PrivateOptions() {
  EngineOptions o = Options();
  o.mode = Mode::kDense;
  o.bandit.kind = strategies::BanditKind::kFixed;
  o.bandit.fixed_arm = strategies::Arm{0.0, 2};
  o.aggregator.clip_norm = 0.05;
  o.privacy.noise_multiplier = 1.0;
  o.privacy_seed = 11;
  return o;
}

// Runs `rounds` rounds: every device asks, the invited ones submit.
// Returns how many were invited each round.
std::vector<int> RunPrivately(Harness& h, int devices, int rounds) {
  std::vector<int> invited;
  absl::Time now = kStart;
  EXPECT_TRUE(h.engine->Tick(now).ok());
  for (int r = 0; r < rounds; ++r) {
    now += absl::Seconds(10);
    int count = 0;
    for (int i = 0; i < devices; ++i) {
      const std::string id = "pi-" + std::to_string(i);
      absl::StatusOr<Task> task = h.engine->GetTask(id, now);
      if (!task.ok()) continue;
      ++count;
      EXPECT_TRUE(h.engine->Submit(Train(h, id, *task), now).ok());
    }
    invited.push_back(count);
    EXPECT_TRUE(h.engine->Tick(now + absl::Seconds(1)).ok());
  }
  return invited;
}

TEST(EnginePrivacyTest, RefusesWhatItsGuaranteeDoesNotCover) {
  const auto refused = [](const EngineOptions& o, const std::string& needle) {
    const absl::Status s = o.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s;
  };
  EXPECT_TRUE(PrivateOptions().Validate().ok());
  EngineOptions o = PrivateOptions();
  o.aggregator.clip_norm = 0;
  refused(o, "--clip_norm");
  o = PrivateOptions();
  o.aggregator.kind = strategies::AggregatorKind::kMedian;
  refused(o, "--aggregator=mean");
  o = PrivateOptions();
  o.bandit.kind = strategies::BanditKind::kFedSpine;
  refused(o, "--bandit=fixed");
  o = PrivateOptions();
  o.selection.kind = strategies::SelectionKind::kRandomK;
  refused(o, "--selection=poisson");
  o = PrivateOptions();
  o.privacy.sampling_rate = 0.5;  // Selection "all" invites everyone.
  refused(o, "--selection=poisson");
  // A budget just over one round's epsilon: 3 rounds are refused.
  o = PrivateOptions();
  o.privacy.epsilon_budget =
      1.01 * strategies::SpentAfter(o.privacy, 1).epsilon;
  refused(o, "which allows 1 rounds");
  o.rounds = 1;
  EXPECT_TRUE(o.Validate().ok());
}

// The round's mean is the clipped mean plus noise of z * clip / devices
// per coordinate; the records carry the accountant's epsilon and the clip.
TEST(EnginePrivacyTest, RoundsAreNoisedAccountedAndRecorded) {
  constexpr int kDevices = 8;
  EngineOptions plain_options = PrivateOptions();
  plain_options.privacy.noise_multiplier = 0;  // The same clip, no noise.
  Harness plain = MakeEngine(plain_options);
  RegisterAll(plain, kDevices);
  RunPrivately(plain, kDevices, 1);
  Harness noised = MakeEngine(PrivateOptions());
  RegisterAll(noised, kDevices);
  EXPECT_EQ(RunPrivately(noised, kDevices, 2), std::vector<int>(2, kDevices));
  ASSERT_EQ(noised.closed.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(noised.closed[r].committed);
    EXPECT_EQ(noised.closed[r].dp_clip_norm, 0.05);
    EXPECT_NEAR(noised.closed[r].dp_epsilon,
                strategies::SpentAfter(PrivateOptions().privacy, r + 1).epsilon,
                1e-9);
  }
  EXPECT_EQ(plain.closed[0].dp_epsilon, 0);
  // Round 1's global models differ by the noise alone: re-run round 1.
  Harness once = MakeEngine(PrivateOptions());
  RegisterAll(once, kDevices);
  RunPrivately(once, kDevices, 1);
  std::vector<at::Tensor> differences;
  const NamedTensors a = once.engine->Snapshot().global;
  const NamedTensors b = plain.engine->Snapshot().global;
  for (const auto& item : a) {
    differences.push_back((item.value() - b[item.key()]).reshape({-1}));
  }
  const at::Tensor difference = torch::cat(differences);
  ASSERT_GT(difference.numel(), 10000);
  EXPECT_NEAR(difference.std().item<double>(), 1.0 * 0.05 / kDevices,
              0.05 * 0.05 / kDevices);
}

TEST(EnginePrivacyTest, PoissonSamplingIsWhatIsAccounted) {
  constexpr int kDevices = 24;
  EngineOptions o = PrivateOptions();
  o.rounds = 6;
  o.selection.kind = strategies::SelectionKind::kPoisson;
  o.selection.sampling_rate = 0.25;
  o.privacy.sampling_rate = 0.25;
  Harness h = MakeEngine(o);
  RegisterAll(h, kDevices);
  const std::vector<int> invited = RunPrivately(h, kDevices, 6);
  int total = 0;
  for (int n : invited) {
    EXPECT_LT(n, kDevices);
    total += n;
  }
  // 144 draws at 0.25: 36 expected, stddev 5.2.
  EXPECT_NEAR(total, 36, 20);
  std::set<int> sizes(invited.begin(), invited.end());
  EXPECT_GT(sizes.size(), 1u);
  ASSERT_FALSE(h.closed.empty());
  const RoundRecord& last = h.closed.back();
  int committed = 0;
  for (const RoundRecord& r : h.closed) committed += r.committed ? 1 : 0;
  EXPECT_NEAR(last.dp_epsilon,
              strategies::SpentAfter(o.privacy, committed).epsilon, 1e-9);
}

TEST(EnginePrivacyTest, ACheckpointCarriesTheAccountantAndRunsDoNotMix) {
  Harness h = MakeEngine(PrivateOptions());
  RegisterAll(h, 4);
  RunPrivately(h, 4, 1);
  const Engine::State state = h.engine->Snapshot();
  ASSERT_FALSE(state.privacy.rdp.empty());
  Harness resumed = MakeEngine(PrivateOptions());
  ASSERT_TRUE(resumed.engine->Restore(state).ok());
  RunPrivately(resumed, 4, 1);
  ASSERT_EQ(resumed.closed.size(), 1u);
  EXPECT_NEAR(resumed.closed[0].dp_epsilon,
              strategies::SpentAfter(PrivateOptions().privacy, 2).epsilon,
              1e-9);
  EngineOptions plain_options = PrivateOptions();
  plain_options.privacy.noise_multiplier = 0;
  Harness plain = MakeEngine(plain_options);
  EXPECT_EQ(plain.engine->Restore(state).code(),
            absl::StatusCode::kInvalidArgument);
  Harness plain_run = MakeEngine(plain_options);
  RegisterAll(plain_run, 4);
  RunPrivately(plain_run, 4, 1);
  Harness private_resume = MakeEngine(PrivateOptions());
  EXPECT_EQ(private_resume.engine->Restore(plain_run.engine->Snapshot()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::coordinator

namespace fedge::coordinator {
namespace {

// A resumed run whose checkpoint spent more than its flags would have
// (it ran with less noise) stops at the budget, saying why.
TEST(EnginePrivacyTest, ARunStopsWhenTheBudgetIsSpent) {
  EngineOptions noisy = PrivateOptions();
  noisy.privacy.noise_multiplier = 0.5;
  Harness first = MakeEngine(noisy);
  RegisterAll(first, 4);
  RunPrivately(first, 4, 2);
  EngineOptions budgeted = PrivateOptions();  // z = 1, 3 rounds.
  budgeted.privacy.epsilon_budget =
      strategies::SpentAfter(budgeted.privacy, 3).epsilon;
  Harness resumed = MakeEngine(budgeted);
  ASSERT_TRUE(resumed.engine->Restore(first.engine->Snapshot()).ok());
  RegisterAll(resumed, 4);
  ASSERT_TRUE(resumed.engine->Tick(kStart).ok());
  EXPECT_TRUE(resumed.engine->finished());
  EXPECT_EQ(resumed.engine->failure().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(resumed.engine->failure().message().find("budget is spent"),
            std::string::npos)
      << resumed.engine->failure();
  EXPECT_TRUE(resumed.closed.empty());
}

}  // namespace
}  // namespace fedge::coordinator
