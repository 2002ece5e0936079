#include "coordinator/state_checkpoint.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "coordinator/engine.h"
#include "model/file_io.h"
#include "model/safetensors.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

std::string TempDir(const std::string& name) {
  const std::string dir =
      ::testing::TempDir() + "/fedge_ckpt_" + name + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

Checkpoint Sample() {
  Checkpoint c;
  c.base_digest = "abc123";
  c.mode = "lora";
  c.state.next_round = 4;
  DeviceFacts f;
  f.device_id = "pi-7";
  f.cores = 4;
  f.memory_total_bytes = 4LL << 30;
  f.link = "5g-sa";
  f.benchmark_gflops = 12.5;
  c.state.devices.push_back(f);
  c.state.expected_seconds["pi-7"] = 42.125;
  c.state.time_models["pi-7"] = {3, 1.5, 0.25, 0.125};
  c.state.plays.push_back({"pi-7", {0.1 + 0.2, 8}, -0.1234567890123456789});
  c.state.privacy.clip_norm = 0.1 + 0.7;
  c.state.privacy.rdp = {1.0 / 3, 2.0 / 7, 0.0};
  c.state.global.insert("layers.0.self_attn.q_proj.weight",
                        torch::randn({4, 4}));
  return c;
}

TEST(CheckpointTest, RoundTripsExactly) {
  const std::string dir = TempDir("rt");
  const Checkpoint c = Sample();
  ASSERT_TRUE(SaveCheckpoint(dir, c).ok());
  auto loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->base_digest, "abc123");
  EXPECT_EQ(loaded->state.next_round, 4);
  ASSERT_EQ(loaded->state.devices.size(), 1u);
  EXPECT_EQ(loaded->state.devices[0].link, "5g-sa");
  EXPECT_EQ(loaded->state.devices[0].memory_total_bytes, 4LL << 30);
  EXPECT_EQ(loaded->state.expected_seconds["pi-7"], 42.125);
  const strategies::TimeModelState& times = loaded->state.time_models["pi-7"];
  EXPECT_EQ(times.observations, 3);
  EXPECT_EQ(times.work_s, 1.5);
  EXPECT_EQ(times.byte_s, 0.25);
  EXPECT_EQ(times.other_s, 0.125);
  ASSERT_EQ(loaded->state.plays.size(), 1u);
  // Bit-exact doubles: replayed bandits must match.
  EXPECT_EQ(loaded->state.plays[0].reward, c.state.plays[0].reward);
  EXPECT_EQ(loaded->state.plays[0].arm, c.state.plays[0].arm);
  EXPECT_EQ(loaded->state.privacy.clip_norm, c.state.privacy.clip_norm);
  EXPECT_EQ(loaded->state.privacy.rdp, c.state.privacy.rdp);
  EXPECT_TRUE(
      torch::equal(loaded->state.global["layers.0.self_attn.q_proj.weight"],
                   c.state.global["layers.0.self_attn.q_proj.weight"]));
}

TEST(CheckpointTest, MissingTruncatedAndForeignFilesAreReported) {
  const std::string dir = TempDir("bad");
  EXPECT_EQ(LoadCheckpoint(dir).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(SaveCheckpoint(dir, Sample()).ok());
  const std::string bytes = *model::ReadFile(CheckpointPath(dir));
  ASSERT_TRUE(model::WriteFileAtomically(CheckpointPath(dir),
                                         bytes.substr(0, bytes.size() - 9))
                  .ok());
  EXPECT_EQ(LoadCheckpoint(dir).status().code(), absl::StatusCode::kDataLoss);
  NamedTensors t;
  t.insert("x", torch::ones({2}));
  ASSERT_TRUE(model::WriteSafetensors(CheckpointPath(dir), t).ok());
  auto foreign = LoadCheckpoint(dir);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(foreign.status().message().find("not a fedge"), std::string::npos);
}

TEST(CheckpointTest, NoTemporaryFilesAreLeftBehind) {
  const std::string dir = TempDir("tmp");
  ASSERT_TRUE(model::MakeDirectories(dir).ok());
  // What a coordinator killed halfway through a write leaves.
  std::ofstream(dir + "/coordinator.safetensors.tmp.12345") << "half";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(SaveCheckpoint(dir, Sample()).ok());
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(entry.path().filename(), "coordinator.safetensors");
  }
  EXPECT_EQ(files, 1);
}

// Kill after round 2 (the checkpoint written by the round-closed hook is
// all that survives), resume in a fresh engine from the file, finish: the
// global weights equal an uninterrupted run's bit for bit. Equality is
// exact because everything is replayed in the same order with the same
// seeds: arms from replayed bandits, revived adapter components from
// per-(device, round) seeds, and updates folded in the same order.
TEST(CheckpointTest, KillAndResumeMatchesAnUninterruptedRun) {
  EngineOptions o;
  o.rounds = 4;
  o.schedule = {0.3, 0, 4};
  o.round_deadline = absl::Hours(1);
  o.heartbeat_timeout = absl::Hours(1);
  o.bandit.space.ranks = {2, 4};
  const absl::Time start = absl::FromUnixSeconds(1700000000);

  struct Run {
    std::unique_ptr<Engine> engine;
    std::map<std::string, NamedTensors> published;
  };
  auto make = [&](const std::string& checkpoint_dir) {
    auto run = std::make_unique<Run>();
    torch::manual_seed(0);
    auto global = GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
    EngineHooks hooks;
    Run* r = run.get();
    hooks.publish = [r](const std::string& id, const NamedTensors& t) {
      r->published[id] = t;
    };
    if (!checkpoint_dir.empty()) {
      hooks.on_round_closed = [checkpoint_dir](const RoundRecord&,
                                               const EngineState& state) {
        return SaveCheckpoint(checkpoint_dir, {state, "digest", "lora"});
      };
    }
    run->engine = *Engine::Create(std::move(*global), o, hooks);
    return run;
  };
  auto play = [&](Run& run, int from, int to) {
    for (int r = from; r <= to; ++r) {
      const absl::Time now = start + absl::Seconds(100 * r);
      ASSERT_TRUE(run.engine->Tick(now).ok());
      for (int i = 0; i < 3; ++i) {
        const std::string id = "pi-" + std::to_string(i);
        auto task = run.engine->GetTask(id, now);
        ASSERT_TRUE(task.ok()) << task.status();
        Submission s;
        s.device_id = id;
        s.round = task->round;
        s.nonce = task->nonce;
        s.num_examples = 10 + i;
        s.loss_before = 2;
        s.loss_after = 1.5 + 0.1 * i;
        torch::manual_seed(r * 10 + i);
        for (const auto& item : run.published.at(task->payload_id)) {
          s.update.insert(item.key(), item.value() + 0.01 * torch::randn_like(
                                                                item.value()));
        }
        ASSERT_TRUE(run.engine->Submit(s, now + absl::Seconds(i + 1)).ok());
      }
      ASSERT_TRUE(run.engine->Tick(now + absl::Seconds(3)).ok());
    }
  };
  auto register_all = [&](Run& run) {
    for (int i = 0; i < 3; ++i) {
      DeviceFacts f;
      f.device_id = "pi-" + std::to_string(i);
      ASSERT_TRUE(run.engine->Register(f, start).ok());
    }
  };

  auto straight = make("");
  register_all(*straight);
  play(*straight, 1, 4);

  const std::string dir = TempDir("kill");
  {
    auto doomed = make(dir);
    register_all(*doomed);
    play(*doomed, 1, 2);
  }  // "Killed": only the checkpoint remains.
  auto checkpoint = LoadCheckpoint(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->state.next_round, 3);
  auto resumed = make(dir);
  ASSERT_TRUE(resumed->engine->Restore(checkpoint->state).ok());
  play(*resumed, 3, 4);

  const NamedTensors a = straight->engine->Snapshot().global;
  const NamedTensors b = resumed->engine->Snapshot().global;
  for (const auto& item : a) {
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
}

}  // namespace
}  // namespace fedge::coordinator
