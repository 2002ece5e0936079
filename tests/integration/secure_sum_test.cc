// Secure aggregation end to end below the round engine: devices whose
// plans cover different parts of the model flatten their clipped changes
// (strategies::FlatLayout), encode them on the ring (secagg::RingCodec),
// mask them (secagg::Device); the coordinator unmasks only their sum
// (secagg::Coordinator), reads it back and folds it with the coverage sums
// of the plans (strategies::UpdateAggregator::AddSum). The mean must be
// the one the plain path gives for the same clipped changes, to within the
// ring's rounding, whoever dropped.
#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "client/secure_update.h"
#include "coordinator/engine.h"
#include "coordinator/global_model.h"
#include "secagg/protocol.h"
#include "strategies/aggregator.h"
#include "strategies/flat_layout.h"
#include "tests/testing/tiny_models.h"

namespace fedge {
namespace {

using strategies::NamedTensors;

NamedTensors Reference() {
  NamedTensors t;
  t.insert("a", torch::full({6, 8}, 0.25));
  t.insert("b", torch::zeros({16}));
  return t;
}

struct Change {
  NamedTensors values;    // Zeros where the device's plan held nothing.
  NamedTensors coverage;  // "a" only, for a pruned device.
};

// Odd devices are pruned: their plan keeps a random half of a's rows.
Change DeviceChange(int64_t device) {
  torch::manual_seed(static_cast<uint64_t>(device) + 1);
  Change c;
  at::Tensor a = torch::randn({6, 8}) * 0.3;
  if (device % 2 == 1) {
    const at::Tensor rows =
        (torch::randperm(6) < 3).to(torch::kFloat).unsqueeze(1).expand({6, 8});
    a = a * rows;
    c.coverage.insert("a", rows.contiguous());
  }
  c.values.insert("a", a);
  c.values.insert("b", torch::randn({16}) * 0.3);
  return c;
}

// The global changes of two models' states agree (the importance scores
// are left out: secure aggregation does not use devices' reports).
void ExpectSameModel(const NamedTensors& want, const NamedTensors& got) {
  int compared = 0;
  for (const auto& item : want) {
    if (item.key().rfind("scores.", 0) == 0) continue;
    const at::Tensor* mine = got.find(item.key());
    ASSERT_NE(mine, nullptr) << item.key();
    EXPECT_TRUE(torch::allclose(mine->to(torch::kFloat64),
                                item.value().to(torch::kFloat64), 1e-5, 1e-6))
        << item.key();
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

TEST(SecureSumTest, TheUnmaskedSumFoldsToThePlainMeanOfHeterogeneousPlans) {
  const int64_t n = 12;
  const double clip = 1.0;
  const NamedTensors reference = Reference();
  const auto layout = strategies::FlatLayout::Create(reference);
  ASSERT_TRUE(layout.ok());
  const secagg::RingCodec ring(n, clip);
  secagg::Parameters p;
  p.devices = n;
  p.neighbours = static_cast<int>(n - 1);  // SecAgg's full graph.
  p.threshold = 7;
  p.length = layout->length();
  p.round = 3;
  p.graph_seed = 17;
  ASSERT_TRUE(secagg::ValidateParameters(p).ok());
  // Devices 3 and 8 drop after sharing keys (their changes are not in the
  // sum); device 5 drops after masking (its change is, but it does not
  // help unmask).
  const std::set<int64_t> before = {3, 8}, after = {5};

  std::vector<secagg::Device> devices;
  for (int64_t i = 0; i < n; ++i) devices.emplace_back(p, i);
  secagg::Coordinator coordinator(p);
  for (secagg::Device& d : devices) {
    ASSERT_TRUE(coordinator.AddAdvertisement(*d.Advertise()).ok());
  }
  for (int64_t i = 0; i < n; ++i) {
    auto shares = devices[i].ShareKeys(coordinator.AdvertisementsFor(i));
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(coordinator.AddShares(i, *shares).ok());
  }
  auto plain = strategies::UpdateAggregator::Create(reference, {});
  NamedTensors cover;  // What the coordinator knows from the plans.
  cover.insert("a", torch::zeros({6, 8}, torch::kFloat64));
  cover.insert("b", torch::zeros({}, torch::kFloat64));
  for (int64_t i = 0; i < n; ++i) {
    if (before.count(i) > 0) continue;
    const Change c = DeviceChange(i);
    const auto flat = layout->Flatten(c.values, clip);
    ASSERT_TRUE(flat.ok()) << flat.status();
    auto masked =
        devices[i].MaskInput(ring.Encode(*flat), coordinator.SharesFor(i));
    ASSERT_TRUE(masked.ok()) << masked.status();
    ASSERT_TRUE(coordinator.AddMaskedInput(i, *masked).ok());
    // The plain path: the same clipped change, in the clear.
    const auto clipped = layout->Unflatten({flat->begin(), flat->end()});
    NamedTensors values;
    for (const auto& item : *clipped) {
      values.insert(item.key(),
                    (item.value() + reference[item.key()]).to(torch::kFloat32));
    }
    ASSERT_TRUE((*plain)->Add(values, c.coverage, 1.0).ok());
    const at::Tensor* rows = c.coverage.find("a");
    cover["a"].add_(rows != nullptr ? *rows : torch::ones({6, 8}));
    cover["b"].add_(1.0);
  }
  const std::set<int64_t> survivors = coordinator.Survivors();
  ASSERT_EQ(survivors.size(), static_cast<size_t>(n - 2));
  for (int64_t i : survivors) {
    if (after.count(i) > 0) continue;
    auto shares = devices[i].Unmask(survivors);
    ASSERT_TRUE(shares.ok()) << shares.status();
    ASSERT_TRUE(coordinator.AddUnmaskShares(*shares).ok());
  }
  const auto sum = coordinator.Sum();
  ASSERT_TRUE(sum.ok()) << sum.status();
  const auto read = layout->Unflatten(ring.Decode(*sum));
  ASSERT_TRUE(read.ok()) << read.status();
  auto secure = strategies::UpdateAggregator::Create(reference, {});
  ASSERT_TRUE((*secure)
                  ->AddSum(*read, cover, static_cast<int64_t>(survivors.size()))
                  .ok());
  const NamedTensors want = *(*plain)->Finish();
  const NamedTensors got = *(*secure)->Finish();
  // Each of the 10 encodings rounds by at most half a step; a mean over
  // at least one covering device divides that by its count.
  const double bound = 10 * 0.5 / ring.scale;
  for (const char* name : {"a", "b"}) {
    const double error =
        (got[name].to(torch::kFloat64) - want[name].to(torch::kFloat64))
            .abs()
            .max()
            .item<double>();
    EXPECT_LE(error, bound + 1e-7) << name;  // float32 results.
    EXPECT_GT((want[name] - reference[name]).abs().max().item<double>(), 0.01);
  }
}

// What a device computes for itself under secure aggregation
// (client::SecureChange) and what the coordinator folds from the sum
// (GlobalModel::AddSecureSum) commit the same global model as the plain
// path, for a pruned low-rank device beside an unpruned high-rank one, in
// a round after one that made the global change non-zero.
TEST(SecureSumTest, DeviceComputedChangesCommitWhatThePlainPathCommits) {
  using coordinator::GlobalModel;
  using coordinator::Mode;
  const auto make = [] {
    torch::manual_seed(0);
    return *GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  };
  const auto train = [](NamedTensors payload, uint64_t seed) {
    torch::manual_seed(seed);
    for (auto& item : payload) {
      item.value() = item.value() + 0.05 * torch::randn_like(item.value());
    }
    return payload;
  };
  std::unique_ptr<GlobalModel> plain = make(), secure = make();
  const std::string config = plain->base().ConfigJson();
  const double alpha = plain->lora().alpha;
  const auto layout = secure->UpdateLayout();
  ASSERT_TRUE(layout.ok()) << layout.status();
  for (int round = 0; round < 2; ++round) {
    const pruning::PruningPlan full = *plain->Plan(0.0);
    const pruning::PruningPlan half = *plain->Plan(0.5);
    const std::vector<pruning::PruningPlan> plans = {full, half};
    const std::vector<int64_t> ranks = {8, 2};
    auto plain_round = plain->BeginRound({});
    auto secure_round = secure->BeginRound({});
    ASSERT_TRUE(plain_round.ok() && secure_round.ok());
    std::vector<double> sum(static_cast<size_t>(layout->length()), 0.0);
    for (size_t d = 0; d < plans.size(); ++d) {
      const NamedTensors sent = *plain->Payload(plans[d], ranks[d], d + 1);
      const NamedTensors update = train(sent, 10 * round + d);
      ASSERT_TRUE(
          plain->AddUpdate(*plain_round, plans[d], update, sent, 1.0).ok());
      double norm = 0;
      const auto change = client::SecureChange(config, plans[d], alpha, update,
                                               sent, *layout, 0, &norm);
      ASSERT_TRUE(change.ok()) << change.status();
      EXPECT_GT(norm, 0);
      for (size_t k = 0; k < sum.size(); ++k) sum[k] += (*change)[k];
    }
    const auto read = layout->Unflatten(sum);
    ASSERT_TRUE(read.ok()) << read.status();
    ASSERT_TRUE(secure->AddSecureSum(*secure_round, *read, plans).ok());
    ASSERT_TRUE(plain->Commit(*plain_round, 0.5).ok());
    ASSERT_TRUE(secure->Commit(*secure_round, 0.5).ok());
    ExpectSameModel(plain->State(), secure->State());
    EXPECT_GT(plain->State()["layers.0.self_attn.q_proj.weight"]
                  .abs()
                  .sum()
                  .item<double>(),
              0);
  }
}

// A whole engine round under secure aggregation commits the model a plain
// engine commits from the same updates, with one device dropping after
// sharing its keys (its update is in neither) and one after masking (its
// update is in both; it does not help unmask).
TEST(SecureSumTest, AnEngineRoundCommitsWhatThePlainRoundCommits) {
  using namespace coordinator;  // NOLINT: the engine's vocabulary.
  const absl::Time start = absl::FromUnixSeconds(1700000000);
  const int n = 6;
  struct Run {
    std::unique_ptr<Engine> engine;
    std::map<std::string, NamedTensors> published;
    std::vector<RoundRecord> closed;
  };
  const auto make = [&](bool secure, Run& run) {
    torch::manual_seed(0);
    EngineOptions o;
    o.rounds = 1;
    o.min_devices = n;
    o.round_deadline = absl::Seconds(60);
    o.heartbeat_timeout = absl::Seconds(1000);
    o.bandit.space.max_ratio = 0.5;
    o.bandit.space.ranks = {2, 4};
    o.split.mode = "off";
    o.secure.enabled = secure;
    o.secure.clip_norm = 100;  // Above every change: nothing is clipped.
    o.secure.phase_timeout = absl::Seconds(20);
    EngineHooks hooks;
    hooks.publish = [&run](const std::string& id, const NamedTensors& t) {
      run.published[id] = t;
    };
    hooks.on_round_closed = [&run](const RoundRecord& r, const EngineState&) {
      run.closed.push_back(r);
      return absl::OkStatus();
    };
    auto global = GlobalModel::Create(testing::TinyVit(16), o.mode, {});
    ASSERT_TRUE(global.ok());
    auto engine = Engine::Create(std::move(*global), o, hooks);
    ASSERT_TRUE(engine.ok()) << engine.status();
    run.engine = std::move(*engine);
    for (int i = 0; i < n; ++i) {
      DeviceFacts f;
      f.device_id = "pi-" + std::to_string(i);
      ASSERT_TRUE(run.engine->Register(f, start).ok());
    }
    ASSERT_TRUE(run.engine->Tick(start).ok());
  };
  const auto train = [](const NamedTensors& payload, int device) {
    torch::manual_seed(100 + device);
    NamedTensors out;
    for (const auto& item : payload) {
      out.insert(item.key(),
                 item.value() + 0.01 * torch::randn_like(item.value()));
    }
    return out;
  };
  const auto id = [](int i) { return "pi-" + std::to_string(i); };
  const int drops_after_sharing = 5, drops_after_masking = 4;

  Run plain, secure;
  make(false, plain);
  make(true, secure);
  std::vector<Task> tasks, plain_tasks;
  std::vector<secagg::Device> devices;
  for (int i = 0; i < n; ++i) {
    auto want = plain.engine->GetTask(id(i), start);
    auto task = secure.engine->GetTask(id(i), start);
    ASSERT_TRUE(want.ok() && task.ok()) << task.status();
    ASSERT_TRUE(task->secure.has_value());
    EXPECT_EQ(task->arm.rank, want->arm.rank);
    EXPECT_EQ(task->combined_ratio, want->combined_ratio);
    tasks.push_back(*task);
    plain_tasks.push_back(*want);
    devices.emplace_back(task->secure->parameters, task->secure->index);
  }
  const auto step = [&](int i, SecureRequest request) {
    request.device_id = id(i);
    request.round = tasks[i].round;
    request.nonce = tasks[i].nonce;
    auto reply = secure.engine->Secure(request, start);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : SecureReply();
  };
  for (int i = 0; i < n; ++i) {
    SecureRequest r;
    r.advertise = *devices[i].Advertise();
    EXPECT_EQ(step(i, r).phase, SecurePhase::kAdvertise);
  }
  ASSERT_TRUE(secure.engine->Tick(start).ok());
  for (int i = 0; i < n; ++i) {
    const SecureReply keys = step(i, {});
    ASSERT_EQ(keys.phase, SecurePhase::kShareKeys);
    SecureRequest r;
    r.shares = *devices[i].ShareKeys(keys.advertisements);
    step(i, r);
  }
  ASSERT_TRUE(secure.engine->Tick(start).ok());
  const std::string config = testing::TinyVit(16)->ConfigJson();
  for (int i = 0; i < n; ++i) {
    if (i == drops_after_sharing) continue;
    const NamedTensors& sent = plain.published.at(plain_tasks[i].payload_id);
    for (const auto& item : sent) {  // Same seeds, same payloads.
      ASSERT_TRUE(torch::equal(
          item.value(), secure.published.at(tasks[i].payload_id)[item.key()]));
    }
    const NamedTensors update = train(sent, i);
    Submission s;
    s.device_id = id(i);
    s.round = tasks[i].round;
    s.nonce = tasks[i].nonce;
    s.num_examples = 10;
    s.loss_before = 2;
    s.loss_after = 1.5;
    Submission clear = s;
    clear.nonce = plain_tasks[i].nonce;
    clear.update = update;
    ASSERT_TRUE(plain.engine->Submit(clear, start).ok());
    const SecureTask& st = *tasks[i].secure;
    const SecureReply inbox = step(i, {});
    ASSERT_EQ(inbox.phase, SecurePhase::kMaskedInput);
    const auto change = client::SecureChange(
        config, tasks[i].plan, lora::LoraOptions().alpha, update, sent,
        *st.layout, st.clip_norm, &s.change_norm);
    ASSERT_TRUE(change.ok()) << change.status();
    const secagg::RingCodec ring(st.parameters.devices, st.clip_norm);
    auto masked = devices[i].MaskInput(ring.Encode(*change), inbox.shares);
    ASSERT_TRUE(masked.ok()) << masked.status();
    s.masked = *masked;
    ASSERT_TRUE(secure.engine->Submit(s, start).ok());
  }
  // The deadline: device 5 is not waited for any longer.
  const absl::Time deadline = start + absl::Seconds(60);
  ASSERT_TRUE(plain.engine->Tick(deadline).ok());
  ASSERT_EQ(plain.closed.size(), 1u);
  ASSERT_TRUE(secure.engine->Tick(deadline).ok());
  EXPECT_TRUE(secure.closed.empty());  // Unmasking.
  for (int i = 0; i < n; ++i) {
    if (i == drops_after_sharing || i == drops_after_masking) continue;
    const SecureReply survivors = step(i, {});
    ASSERT_EQ(survivors.phase, SecurePhase::kUnmask);
    EXPECT_EQ(survivors.survivors.size(), 5u);
    SecureRequest r;
    r.unmask = *devices[i].Unmask(survivors.survivors);
    step(i, r);
  }
  ASSERT_TRUE(secure.engine->Tick(deadline + absl::Seconds(1)).ok());
  EXPECT_TRUE(secure.closed.empty());  // Device 4 is waited for...
  ASSERT_TRUE(secure.engine->Tick(deadline + absl::Seconds(20)).ok());
  ASSERT_EQ(secure.closed.size(), 1u);  // ... until the phase's deadline.
  const RoundRecord& record = secure.closed[0];
  EXPECT_TRUE(record.committed);
  EXPECT_EQ(record.accepted, 5);
  ASSERT_TRUE(record.secure.has_value());
  EXPECT_EQ(record.secure->masked, 5);
  EXPECT_EQ(record.secure->unmasked, 4);
  EXPECT_GT(record.secure->bytes_up, 0);
  EXPECT_TRUE(plain.closed[0].committed);
  ExpectSameModel(plain.engine->Snapshot().global,
                  secure.engine->Snapshot().global);
}

}  // namespace
}  // namespace fedge
