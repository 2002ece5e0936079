#include "coordinator/global_model.h"

#include <cmath>
#include <thread>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "lora/aggregate.h"
#include "model/file_io.h"
#include "model/safetensors.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

std::unique_ptr<GlobalModel> MakeGlobal(Mode mode) {
  torch::manual_seed(0);
  auto global = GlobalModel::Create(testing::TinyVit(16), mode, {});
  EXPECT_TRUE(global.ok()) << global.status();
  return std::move(*global);
}

// A trained adapter: the payload with B moved away from zero.
NamedTensors Train(NamedTensors payload, uint64_t seed) {
  torch::manual_seed(seed);
  for (auto& item : payload) {
    item.value() = item.value() + 0.05 * torch::randn_like(item.value());
  }
  return payload;
}

// One committed round of one unpruned device of `rank`: the payload it
// was sent, trained by Train(payload, train_seed).
absl::Status CommitOneDevice(GlobalModel& global, int64_t rank,
                             uint64_t train_seed) {
  const pruning::PruningPlan full = *global.Plan(0.0);
  const NamedTensors sent = *global.Payload(full, rank, 1);
  absl::StatusOr<RoundAggregate> round = global.BeginRound({});
  if (!round.ok()) return round.status();
  absl::StatusOr<double> norm =
      global.AddUpdate(*round, full, Train(sent, train_seed), sent, 1.0);
  if (!norm.ok()) return norm.status();
  return global.Commit(*round, 0.5);
}

TEST(GlobalModelTest, FirstPayloadIsAFreshAdapterOfTheSubModel) {
  auto global = MakeGlobal(Mode::kLora);
  auto plan = global->Plan(0.5);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto payload = global->Payload(*plan, 4, 1);
  ASSERT_TRUE(payload.ok()) << payload.status();
  // TinyVit: 2 blocks, q and v, 4 heads of 8 -> 2 heads kept (16 rows).
  ASSERT_EQ(payload->size(), 8u);
  const at::Tensor a = (*payload)["layers.0.self_attn.q_proj.adapter.lora_A"];
  const at::Tensor b = (*payload)["layers.0.self_attn.q_proj.adapter.lora_B"];
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{16, 4}));
  EXPECT_GT(a.abs().sum().item<double>(), 0);  // Revived: can train.
  EXPECT_EQ(b.abs().sum().item<double>(), 0);  // Product zero.
}

TEST(GlobalModelTest, HeterogeneousUpdatesAverageOverCoverage) {
  auto global = MakeGlobal(Mode::kLora);
  const pruning::PruningPlan full = *global->Plan(0.0);
  const pruning::PruningPlan half = *global->Plan(0.5);
  const NamedTensors u1 = Train(*global->Payload(full, 8, 1), 11);
  const NamedTensors u2 = Train(*global->Payload(half, 2, 2), 12);
  auto round = global->BeginRound({});
  ASSERT_TRUE(round.ok());
  ASSERT_TRUE(
      global->AddUpdate(*round, full, u1, *global->Payload(full, 8, 1), 1.0)
          .ok());
  ASSERT_TRUE(
      global->AddUpdate(*round, half, u2, *global->Payload(half, 2, 2), 3.0)
          .ok());
  ASSERT_TRUE(global->Commit(*round, 0.5).ok());

  // Naive reference for q_proj of block 0: products in full coordinates.
  const std::string path = "layers.0.self_attn.q_proj";
  const at::Tensor p1 = (*lora::AdapterDeltas(u1, 16.0))[path];
  at::Tensor p2 = torch::zeros_like(p1);
  at::Tensor covered = torch::zeros_like(p1);
  const at::Tensor small = (*lora::AdapterDeltas(u2, 16.0))[path];
  int64_t row = 0;
  for (int64_t h : half.blocks[0].heads) {
    for (int64_t d = 0; d < 8; ++d, ++row) {
      p2[h * 8 + d] = small[row];
      covered[h * 8 + d] = 1;
    }
  }
  const at::Tensor expected = (p1 + 3.0 * p2) / (1.0 + 3.0 * covered);
  const at::Tensor got = global->State()[path + ".weight"];
  EXPECT_TRUE(torch::allclose(got.to(torch::kFloat64),
                              expected.to(torch::kFloat64), 1e-5, 1e-6));

  // The full-rank payload now reproduces the global product.
  const NamedTensors next = *global->Payload(full, 32, 3);
  EXPECT_TRUE(torch::allclose(
      (*lora::AdapterDeltas(next, 16.0))[path].to(torch::kFloat64),
      expected.to(torch::kFloat64), 1e-4, 1e-5));
}

// A low-rank device gets a truncation of the global change; what it did
// not get must not be averaged away. A rank-2 device that sends back
// exactly what it got leaves a rank-8 global change as it was.
TEST(GlobalModelTest, UpdatesPreparedConcurrentlyFoldAsOneAfterTheOther) {
  // Two engines' worth of Submits: one folds sequentially with AddUpdate,
  // the other prepares both updates on two threads at once and adds them
  // in the opposite order. The committed states agree.
  auto sequential = MakeGlobal(Mode::kLora);
  auto concurrent = MakeGlobal(Mode::kLora);
  const pruning::PruningPlan full = *sequential->Plan(0.0);
  const pruning::PruningPlan half = *sequential->Plan(0.5);
  const NamedTensors s1 = *sequential->Payload(full, 8, 1);
  const NamedTensors s2 = *sequential->Payload(half, 2, 2);
  const NamedTensors u1 = Train(s1, 11);
  const NamedTensors u2 = Train(s2, 12);

  auto round = sequential->BeginRound({});
  ASSERT_TRUE(round.ok());
  ASSERT_TRUE(sequential->AddUpdate(*round, full, u1, s1, 1.0).ok());
  ASSERT_TRUE(sequential->AddUpdate(*round, half, u2, s2, 3.0).ok());
  ASSERT_TRUE(sequential->Commit(*round, 0.5).ok());

  absl::StatusOr<pruning::Scattered> p1, p2;
  std::thread first([&] { p1 = concurrent->PrepareUpdate(full, u1, s1); });
  std::thread second([&] { p2 = concurrent->PrepareUpdate(half, u2, s2); });
  first.join();
  second.join();
  ASSERT_TRUE(p1.ok()) << p1.status();
  ASSERT_TRUE(p2.ok()) << p2.status();
  auto other = concurrent->BeginRound({});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(concurrent->AddPrepared(*other, *p2, 3.0).ok());
  ASSERT_TRUE(concurrent->AddPrepared(*other, *p1, 1.0).ok());
  ASSERT_TRUE(concurrent->Commit(*other, 0.5).ok());

  const NamedTensors a = sequential->State();
  const NamedTensors b = concurrent->State();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    const at::Tensor* twin = b.find(item.key());
    ASSERT_NE(twin, nullptr) << item.key();
    EXPECT_TRUE(torch::allclose(item.value(), *twin, 1e-5, 1e-6)) << item.key();
  }
  // A payload that does not match what was sent is refused before any
  // aggregate is touched.
  EXPECT_FALSE(concurrent->PrepareUpdate(full, u2, s2).ok());
}

TEST(GlobalModelTest, LowRankDevicesDoNotTruncateTheGlobalChange) {
  auto global = MakeGlobal(Mode::kLora);
  const pruning::PruningPlan full = *global->Plan(0.0);
  ASSERT_TRUE(CommitOneDevice(*global, 8, 21).ok());
  const NamedTensors before = global->State();
  const std::string name = "layers.0.self_attn.q_proj.weight";
  ASSERT_GT(torch::linalg_matrix_rank(before[name]).item<int64_t>(), 2);

  const NamedTensors low = *global->Payload(full, 2, 2);
  auto round = global->BeginRound({});
  ASSERT_TRUE(global->AddUpdate(*round, full, low, low, 1.0).ok());
  ASSERT_TRUE(global->Commit(*round, 0.5).ok());

  EXPECT_TRUE(torch::allclose(global->State()[name], before[name], 1e-5, 1e-6));
  // A `sent` of another sub-model is an error, not a silent zero.
  round = global->BeginRound({});
  const NamedTensors other = *global->Payload(*global->Plan(0.5), 2, 3);
  EXPECT_FALSE(global->AddUpdate(*round, full, low, other, 1.0).ok());
}

TEST(GlobalModelTest, GlobalRankHoldsTheChangeAtThatRank) {
  auto global = MakeGlobal(Mode::kLora);
  ASSERT_TRUE(global->SetGlobalRank(2).ok());
  const pruning::PruningPlan full = *global->Plan(0.0);
  ASSERT_TRUE(CommitOneDevice(*global, 8, 21).ok());
  const std::string name = "layers.0.self_attn.q_proj.weight";
  const at::Tensor held = global->State()[name];
  EXPECT_EQ(torch::linalg_matrix_rank(held).item<int64_t>(), 2);
  // A device of that rank starts from exactly the global change.
  const NamedTensors payload = *global->Payload(full, 2, 2);
  const at::Tensor a = payload.find("layers.0.self_attn.q_proj.adapter.lora_A")
                           ->to(torch::kFloat64);
  const at::Tensor b = payload.find("layers.0.self_attn.q_proj.adapter.lora_B")
                           ->to(torch::kFloat64);
  const double scale = global->lora().alpha / 2;
  EXPECT_TRUE(torch::allclose(scale * b.matmul(a), held.to(torch::kFloat64),
                              1e-4, 1e-5));

  EXPECT_EQ(global->SetGlobalRank(-1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeGlobal(Mode::kDense)->SetGlobalRank(2).code(),
            absl::StatusCode::kFailedPrecondition);
}
TEST(GlobalModelTest, ALowRankDeviceTrainsFromExactlyTheGlobalModel) {
  auto global = MakeGlobal(Mode::kLora);
  ASSERT_TRUE(global->SetGlobalRank(6).ok());
  const pruning::PruningPlan full = *global->Plan(0.0);
  EXPECT_EQ(global->Payload(full, 8, 1)->size(), 8u);  // 8 >= 6: no residual.
  ASSERT_TRUE(CommitOneDevice(*global, 8, 21).ok());

  const NamedTensors payload = *global->Payload(full, 2, 2);
  const std::string path = "layers.1.self_attn.v_proj";
  ASSERT_NE(payload.find(path + ".residual.lora_A"), nullptr);
  EXPECT_EQ(payload.find(path + ".residual.lora_A")->size(0), 4);
  absl::StatusOr<model::Model> device = global->DeviceModel(full, 2, payload);
  ASSERT_TRUE(device.ok()) << device.status();
  // Its weight plus its adapter's product is the global model's weight.
  const lora::SeparatedPayload parts = lora::SeparateResiduals(payload);
  const at::Tensor product = (global->lora().alpha / 2) *
                             parts.adapters[path + ".adapter.lora_B"].matmul(
                                 parts.adapters[path + ".adapter.lora_A"]);
  const at::Tensor merged =
      model::CopyWeights(**global->Materialize(0.0))[path + ".weight"];
  EXPECT_TRUE(
      torch::allclose((*device)->named_parameters()[path + ".weight"] + product,
                      merged, 1e-4, 1e-5));

  // The device's update is its adapter alone; the residual stays out of
  // the change it folds in (an untrained adapter changes nothing).
  const NamedTensors before = global->State();
  auto round = global->BeginRound({});
  ASSERT_TRUE(
      global->AddUpdate(*round, full, parts.adapters, payload, 1.0).ok());
  ASSERT_TRUE(global->Commit(*round, 0.5).ok());
  EXPECT_TRUE(torch::allclose(global->State()[path + ".weight"],
                              before[path + ".weight"], 1e-4, 1e-5));
}

TEST(GlobalModelTest, PayloadsFactorizeEachSliceOnceAndStayExact) {
  auto global = MakeGlobal(Mode::kLora);
  ASSERT_TRUE(CommitOneDevice(*global, 8, 5).ok());
  // Two plans that prune MLP channels differently keep the same heads, so
  // q_proj's slice (and its SVD) is shared; each device still gets its own
  // copy, revived from its own seed, equal to a fresh factorization.
  const pruning::PruningPlan a = *global->Plan(0.1);
  pruning::PruningPlan b = a;
  b.blocks[0].channels.pop_back();
  const NamedTensors pa = *global->Payload(a, 4, 7);
  const NamedTensors pb = *global->Payload(b, 4, 7);
  const std::string q = "layers.0.self_attn.q_proj.adapter.lora_";
  EXPECT_TRUE(torch::equal(pa[q + "A"], pb[q + "A"]));
  EXPECT_NE(pa[q + "A"].data_ptr(), pb[q + "A"].data_ptr());
  lora::GlobalAdapter reference;
  reference.method = lora::RankMethod::kSvd;
  reference.alpha = 16.0;
  reference.deltas.insert(
      "layers.0.self_attn.q_proj",
      (*lora::AdapterDeltas(pa, 16.0))["layers.0.self_attn.q_proj"]);
  const lora::RankedAdapter fresh = *lora::AdapterForRank(reference, 4);
  const at::Tensor product = torch::matmul(pa[q + "B"], pa[q + "A"]);
  const at::Tensor expected =
      torch::matmul(fresh.adapters[q + "B"], fresh.adapters[q + "A"]);
  EXPECT_TRUE(torch::allclose(product, expected, 1e-5, 1e-6));
  // A changed global model is factorized again.
  auto next = global->BeginRound({});
  ASSERT_TRUE(global->AddUpdate(*next, a, Train(pa, 6), pa, 1.0).ok());
  ASSERT_TRUE(global->Commit(*next, 0.5).ok());
  NamedTensors again = *global->Payload(a, 4, 7);
  EXPECT_FALSE(torch::equal(again[q + "B"], pa[q + "B"]));
}

TEST(GlobalModelTest, DenseModeAveragesWeightsAndKeepsUncoveredOnes) {
  auto global = MakeGlobal(Mode::kDense);
  const pruning::PruningPlan half = *global->Plan(0.5);
  NamedTensors payload = *global->Payload(half, 1, 0);
  const at::Tensor before = global->State()["layers.0.mlp.up_proj.weight"];
  for (auto& item : payload) item.value() = item.value() + 1.0;
  auto round = global->BeginRound({});
  ASSERT_TRUE(
      global->AddUpdate(*round, half, payload, NamedTensors(), 2.0).ok());
  ASSERT_TRUE(global->Commit(*round, 0.5).ok());
  const at::Tensor after = global->State()["layers.0.mlp.up_proj.weight"];
  for (int64_t c = 0; c < 16; ++c) {
    const bool kept = std::count(half.blocks[0].channels.begin(),
                                 half.blocks[0].channels.end(), c) > 0;
    EXPECT_TRUE(torch::allclose(after[c], before[c] + (kept ? 1.0 : 0.0))) << c;
  }
}

// The coordinator serves a dense base from disk and drops its weights:
// version 0 is the base's weights themselves, and nothing after reads them.
TEST(GlobalModelTest, DenseModeWorksAfterTheBaseDropsItsWeights) {
  torch::manual_seed(0);
  const model::Model base = testing::TinyVit(16);
  const NamedTensors original = model::CopyWeights(*base);
  auto global = GlobalModel::Create(base, Mode::kDense, {});
  ASSERT_TRUE(global.ok()) << global.status();
  const std::string w = "layers.0.mlp.up_proj.weight";
  EXPECT_EQ((*global)->State()[w].data_ptr(),
            base->named_parameters()[w].data_ptr());
  model::DropWeights(*base);

  const pruning::PruningPlan full = *(*global)->Plan(0.0);
  const pruning::PruningPlan half = *(*global)->Plan(0.5);
  const NamedTensors payload = *(*global)->Payload(full, 1, 0);
  for (const auto& item : original) {
    EXPECT_TRUE(torch::equal(payload[item.key()], item.value())) << item.key();
  }
  auto round = (*global)->BeginRound({});
  NamedTensors moved = *(*global)->Payload(half, 1, 0);
  for (auto& item : moved) item.value() = item.value() + 1.0;
  ASSERT_TRUE(
      (*global)->AddUpdate(*round, half, moved, NamedTensors(), 1.0).ok());
  ASSERT_TRUE((*global)->Commit(*round, 0.5).ok());
  const NamedTensors state = (*global)->State();
  absl::StatusOr<model::Model> merged = (*global)->Materialize(0.0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(torch::equal(model::CopyWeights(**merged)[w], state[w]));
  absl::StatusOr<model::Model> pruned = (*global)->Materialize(0.5);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_LT(model::CountParameters(**pruned), model::CountParameters(**merged));

  // A dense state must hold every weight: the base has none to fall back on.
  NamedTensors partial = state;
  partial.erase(w);
  const absl::StatusOr<model::Model> refused =
      MaterializeState(*base, Mode::kDense, partial, 0.0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GlobalModelTest, DenseDevicesWithOnePlanShareOneSliceUntilACommit) {
  auto global = MakeGlobal(Mode::kDense);
  const pruning::PruningPlan full = *global->Plan(0.0);
  const pruning::PruningPlan half = *global->Plan(0.5);
  const std::string w = "layers.0.mlp.up_proj.weight";
  const NamedTensors a = *global->Payload(full, 1, 1);
  const NamedTensors b = *global->Payload(full, 8, 2);  // Rank, seed: unused.
  const NamedTensors c = *global->Payload(half, 1, 1);
  EXPECT_EQ(a[w].data_ptr(), b[w].data_ptr());
  EXPECT_NE(a[w].data_ptr(), c[w].data_ptr());
  // The whole model is served as it is, without a copy.
  EXPECT_EQ(a[w].data_ptr(), global->State()[w].data_ptr());
  EXPECT_EQ(c[w].size(0), 8);

  auto round = global->BeginRound({});
  NamedTensors moved;
  for (const auto& item : a) moved.insert(item.key(), item.value() + 1.0);
  ASSERT_TRUE(global->AddUpdate(*round, full, moved, NamedTensors(), 1).ok());
  ASSERT_TRUE(global->Commit(*round, 0.0).ok());
  const NamedTensors after = *global->Payload(full, 1, 1);
  EXPECT_TRUE(torch::allclose(after[w], a[w] + 1.0));
}

// Compressed downloads: a coarse grid stands for a codec.
TEST(GlobalModelTest, RoundedDenseStepsKeepWhatTheRoundingLeftOut) {
  auto global = MakeGlobal(Mode::kDense);
  int calls = 0;
  ASSERT_TRUE(global
                  ->SetDenseRounding([&calls](const NamedTensors& change)
                                         -> absl::StatusOr<RoundedChange> {
                    RoundedChange out;
                    for (const auto& item : change) {
                      out.applied.insert(item.key(),
                                         (item.value() / 0.25).round() * 0.25);
                    }
                    out.bytes = std::make_shared<const std::string>(
                        "delta " + std::to_string(++calls));
                    return out;
                  })
                  .ok());
  EXPECT_FALSE(global->LastDelta().has_value());
  const pruning::PruningPlan full = *global->Plan(0.0);
  const std::string w = "layers.0.mlp.up_proj.weight";
  const NamedTensors v0 = *global->Payload(full, 1, 1);
  auto step_by = [&](double amount) {
    const NamedTensors held = *global->Payload(full, 1, 1);
    NamedTensors moved;
    for (const auto& item : held)
      moved.insert(item.key(), item.value() + amount);
    auto round = global->BeginRound({});
    ASSERT_TRUE(global->AddUpdate(*round, full, moved, NamedTensors(), 1).ok());
    ASSERT_TRUE(global->Commit(*round, 0.0).ok());
  };

  step_by(0.1);  // Rounds to nothing: 0.1 is left over.
  const NamedTensors v1 = *global->Payload(full, 1, 1);
  EXPECT_TRUE(torch::equal(v1[w], v0[w]));
  ASSERT_TRUE(global->LastDelta().has_value());
  EXPECT_EQ(global->LastDelta()->from, 0);
  EXPECT_EQ(*global->LastDelta()->bytes, "delta 1");

  step_by(0.1);  // 0.1 + the 0.1 left over rounds to 0.25.
  const NamedTensors v2 = *global->Payload(full, 1, 1);
  EXPECT_TRUE(torch::allclose(v2[w], v0[w] + 0.25));
  EXPECT_EQ(global->LastDelta()->from, 1);
  EXPECT_EQ(*global->LastDelta()->bytes, "delta 2");

  // A restored model has no predecessor any device is sure to hold.
  ASSERT_TRUE(global->Restore(global->State()).ok());
  EXPECT_FALSE(global->LastDelta().has_value());
  EXPECT_EQ(MakeGlobal(Mode::kLora)->SetDenseRounding(nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(GlobalModelTest, ReportedScoresSteerThePlan) {
  auto global = MakeGlobal(Mode::kLora);
  const pruning::PruningPlan full = *global->Plan(0.0);
  NamedTensors scores;
  scores.insert("heads.0", torch::tensor({0.0, 0.0, 0.0, 10.0}));
  scores.insert("channels.0", torch::arange(16.0));
  auto round = global->BeginRound({});
  ASSERT_TRUE(global->AddScores(*round, full, scores).ok());
  const NamedTensors sent = *global->Payload(full, 2, 0);
  ASSERT_TRUE(global->AddUpdate(*round, full, sent, sent, 1).ok());
  ASSERT_TRUE(global->Commit(*round, 0.0).ok());
  const pruning::PruningPlan quarter = *global->Plan(0.75);
  EXPECT_EQ(quarter.blocks[0].heads, (std::vector<int64_t>{3}));
  EXPECT_EQ(quarter.blocks[0].channels, (std::vector<int64_t>{12, 13, 14, 15}));

  NamedTensors bad;
  bad.insert("heads.0", torch::tensor({1.0, std::nan(""), 0.0, 1.0}));
  EXPECT_FALSE(global->AddScores(*round, full, bad).ok());
  NamedTensors wrong;
  wrong.insert("heads.7", torch::ones({4}));
  EXPECT_FALSE(global->AddScores(*round, full, wrong).ok());
}

// A LoRA global model after one committed round of one unpruned rank-4
// device.
std::unique_ptr<GlobalModel> AfterOneRound() {
  auto global = MakeGlobal(Mode::kLora);
  EXPECT_TRUE(CommitOneDevice(*global, 4, 5).ok());
  return global;
}

TEST(GlobalModelTest, MaterializeMergesTheGlobalChange) {
  auto global = AfterOneRound();
  auto merged = global->Materialize(0.0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const std::string name = "layers.1.self_attn.v_proj.weight";
  const at::Tensor expected =
      model::CopyWeights(global->base())[name] + global->State()[name];
  EXPECT_TRUE(torch::allclose(model::CopyWeights(**merged)[name], expected));
  auto pruned = global->Materialize(0.5);
  ASSERT_TRUE(pruned.ok());
  EXPECT_LT(model::CountParameters(**pruned), model::CountParameters(**merged));
}

TEST(GlobalModelTest, PeftAdapterReproducesTheGlobalChange) {
  auto global = AfterOneRound();
  lora::PeftExportOptions peft;
  peft.alpha = 16;
  peft.target_modules = {"q_proj", "v_proj", "gate_proj"};  // No gate_proj.
  const std::string dir = ::testing::TempDir() + "/peft_global";
  const std::string path = "layers.1.self_attn.v_proj";
  const at::Tensor want = global->State()[path + ".weight"];

  // At the rank the change has, the adapter is the change itself.
  peft.rank = 4;
  absl::StatusOr<double> error = WritePeftAdapter(global->State(), peft, dir);
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_LT(*error, 1e-4);
  absl::StatusOr<model::SafetensorsFile> file =
      model::ReadSafetensors(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string peft_path = "base_model.model." + path;
  const at::Tensor* a = file->tensors.find(peft_path + ".lora_A.weight");
  const at::Tensor* b = file->tensors.find(peft_path + ".lora_B.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->size(0), 4);
  EXPECT_TRUE(
      torch::allclose(torch::matmul(*b, *a) * (16.0 / 4), want, 1e-4, 1e-5));
  absl::StatusOr<std::string> config =
      model::ReadFile(dir + "/adapter_config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_NE(config->find("\"q_proj\""), std::string::npos);
  EXPECT_EQ(config->find("gate_proj"), std::string::npos);

  // Below it, the truncation is reported, not hidden.
  peft.rank = 1;
  error = WritePeftAdapter(global->State(), peft, dir);
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_GT(*error, 0.01);

  NamedTensors bad = global->State();
  bad.insert("layers.0.norm1.bias", torch::zeros({16}));
  EXPECT_TRUE(
      absl::IsInvalidArgument(WritePeftAdapter(bad, peft, dir).status()));
}

// With server momentum the second of two equal rounds moves the model
// further than the first; the moments travel with the state, and restore
// into a model with the same optimizer only.
TEST(GlobalModelTest, ServerMomentumStepsAndRestoresWithTheState) {
  strategies::ServerOptimizerOptions momentum;
  momentum.kind = strategies::ServerOptimizerKind::kMomentum;
  momentum.momentum = 0.5;
  auto make = [&](const strategies::ServerOptimizerOptions& server) {
    torch::manual_seed(0);
    return std::move(
        *GlobalModel::Create(testing::TinyVit(16), Mode::kDense, {}, server));
  };
  auto global = make(momentum);
  const pruning::PruningPlan full = *global->Plan(0.0);
  const std::string w = "layers.0.mlp.up_proj.weight";
  std::vector<at::Tensor> values = {global->State()[w]};
  for (int round = 0; round < 2; ++round) {
    NamedTensors payload = *global->Payload(full, 1, 0);
    for (auto& item : payload) item.value() = item.value() + 1.0;
    auto aggregate = global->BeginRound({});
    ASSERT_TRUE(
        global->AddUpdate(*aggregate, full, payload, NamedTensors(), 1.0).ok());
    ASSERT_TRUE(global->Commit(*aggregate, 0.5).ok());
    values.push_back(global->State()[w]);
  }
  // Steps of 1, then 0.5 * 1 + 1.
  EXPECT_TRUE(torch::allclose(values[1], values[0] + 1.0));
  EXPECT_TRUE(torch::allclose(values[2], values[1] + 1.5));
  const NamedTensors state = global->State();
  ASSERT_NE(state.find("server_m." + w), nullptr);

  auto resumed = make(momentum);
  ASSERT_TRUE(resumed->Restore(state).ok());
  const NamedTensors again = resumed->State();
  ASSERT_EQ(again.size(), state.size());
  for (const auto& item : state) {
    EXPECT_TRUE(torch::equal(again[item.key()], item.value())) << item.key();
  }
  // Materialize reads past the moments.
  EXPECT_TRUE(resumed->Materialize(0.0).ok());
  // FedAvg has no moments to take; a momentum model starts a FedAvg state
  // at zero.
  EXPECT_TRUE(absl::IsInvalidArgument(make({})->Restore(state)));
  NamedTensors plain;
  for (const auto& item : state) {
    if (!strategies::IsServerOptimizerState(item.key())) {
      plain.insert(item.key(), item.value());
    }
  }
  EXPECT_TRUE(make(momentum)->Restore(plain).ok());
}

TEST(GlobalModelTest, RestoreChecksTheState) {
  auto global = MakeGlobal(Mode::kLora);
  NamedTensors state = global->State();
  ASSERT_TRUE(global->Restore(state).ok());
  state["layers.0.self_attn.q_proj.weight"] = torch::zeros({3, 3});
  EXPECT_EQ(global->Restore(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseMode("sparse").ok());
}

}  // namespace
}  // namespace fedge::coordinator
