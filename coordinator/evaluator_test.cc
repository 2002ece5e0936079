#include "coordinator/evaluator.h"

#include <filesystem>
#include <vector>

#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/checkpoint.h"
#include "model/file_io.h"
#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

// A trained global state: the engine's LoRA state with every delta moved.
NamedTensors TrainedState(const GlobalModel& global) {
  NamedTensors state = global.State();
  torch::manual_seed(5);
  for (auto& item : state) {
    if (item.key().rfind("scores.", 0) == 0) continue;
    item.value() = 0.05 * torch::randn_like(item.value());
  }
  return state;
}

struct Reported {
  RoundRecord round;
  std::optional<model::EvalResult> eval;
};

TEST(EvaluatorTest, EvaluatesAndWritesTheFinalModelOffTheCallersThread) {
  torch::manual_seed(1);
  model::Vit vit = testing::TinyVit(16);
  auto global = GlobalModel::Create(vit, Mode::kLora, {});
  ASSERT_TRUE(global.ok()) << global.status();
  const NamedTensors state = TrainedState(**global);
  model::Dataset test;
  test.inputs = torch::randn({8, 1, 28, 28});
  test.targets = torch::randint(0, 10, {8}, torch::kLong);
  test.num_classes = 10;
  std::vector<Reported> reported;
  const std::string dir = ::testing::TempDir() + "/evaluator_test_model";
  const std::string adapter_dir =
      ::testing::TempDir() + "/evaluator_test_adapter";
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(adapter_dir);
  const std::string tokenizer = ::testing::TempDir() + "/evaluator_test.spm";
  ASSERT_TRUE(model::WriteFileAtomically(tokenizer, "pieces").ok());
  lora::PeftExportOptions peft;
  peft.rank = 4;
  peft.target_modules = {"q_proj", "v_proj"};
  {
    Evaluator evaluator(vit.get(), Mode::kLora, &test,
                        [&](const RoundRecord& r,
                            const std::optional<model::EvalResult>& e, double) {
                          reported.push_back({r, e});
                        });
    RoundRecord retried;
    retried.round = 2;  // Not committed: neither evaluated nor written.
    evaluator.Submit(retried, state, /*evaluate=*/true,
                     {dir, tokenizer, adapter_dir, peft});
    evaluator.Drain();
    EXPECT_FALSE(std::filesystem::exists(dir));
    EXPECT_FALSE(std::filesystem::exists(adapter_dir));
    RoundRecord last;
    last.round = 2;
    last.attempt = 1;
    last.committed = true;
    last.global_ratio = 0.5;  // Pruned: a model, but no adapter.
    evaluator.Submit(last, state, /*evaluate=*/true,
                     {dir, tokenizer, adapter_dir, peft});
    evaluator.Drain();
    EXPECT_FALSE(std::filesystem::exists(adapter_dir));
    last.global_ratio = 0;  // Unpruned: the adapter too.
    evaluator.Submit(last, state, /*evaluate=*/false,
                     {"", "", adapter_dir, peft});
  }  // The destructor finishes queued jobs.
  EXPECT_TRUE(std::filesystem::exists(adapter_dir + "/adapter_config.json"));
  EXPECT_TRUE(
      std::filesystem::exists(adapter_dir + "/adapter_model.safetensors"));
  ASSERT_EQ(reported.size(), 3u);
  EXPECT_EQ(*model::ReadFile(dir + "/tokenizer.model"), "pieces");
  EXPECT_FALSE(reported[0].eval.has_value());
  ASSERT_TRUE(reported[1].eval.has_value());
  // The written model is the evaluated one: merged, pruned to the ratio.
  absl::StatusOr<model::Model> written = model::LoadCheckpoint(dir);
  ASSERT_TRUE(written.ok()) << written.status();
  absl::StatusOr<model::Model> expected =
      MaterializeState(*vit, Mode::kLora, state, 0.5);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ((*written)->block_shapes(), (*expected)->block_shapes());
  EXPECT_NE((*written)->block_shapes(), vit->block_shapes());
  torch::NoGradGuard no_grad;
  (*written)->eval();
  (*expected)->eval();
  EXPECT_TRUE(torch::allclose((*written)->forward(test.inputs),
                              (*expected)->forward(test.inputs), 1e-5, 1e-6));
  absl::StatusOr<model::EvalResult> eval = model::Evaluate(**written, test);
  ASSERT_TRUE(eval.ok());
  EXPECT_NEAR(eval->loss, reported[1].eval->loss, 1e-5);
}

}  // namespace
}  // namespace fedge::coordinator
