#include "coordinator/pruning_costs.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

// A loss that grows as a model loses parameters, counting its calls.
ValidationLossFn SizeLoss(int* calls) {
  return [calls](model::ModelImpl& m, const StopFn&) -> absl::StatusOr<double> {
    ++*calls;
    double n = 0;
    for (const at::Tensor& p : m.parameters()) n += p.numel();
    return 1e6 / n;
  };
}

TEST(PruningCostMeterTest, MeasuresOncePerPlanAndVersion) {
  torch::manual_seed(0);
  auto global = GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  int calls = 0;
  PruningCostMeter meter(global->get(), SizeLoss(&calls));
  ASSERT_TRUE(meter.enabled());
  std::map<double, double> costs = meter.Measure({0.0, 0.25, 0.5});
  EXPECT_EQ(costs.at(0.0), 0);
  EXPECT_GT(costs.at(0.25), 0);
  EXPECT_GT(costs.at(0.5), costs.at(0.25));
  EXPECT_LE(costs.at(0.5), 1);
  EXPECT_EQ(calls, 3);  // Dense, 0.25, 0.5.
  meter.Measure({0.5});
  EXPECT_EQ(calls, 3);  // Kept.
  // A new version of the global model is measured afresh.
  absl::StatusOr<RoundAggregate> round = (*global)->BeginRound({});
  ASSERT_TRUE(round.ok());
  const pruning::PruningPlan full = *(*global)->Plan(0.0);
  ASSERT_TRUE((*global)
                  ->AddUpdate(*round, full, *(*global)->Payload(full, 2, 1),
                              *(*global)->Payload(full, 2, 1), 1.0)
                  .ok());
  ASSERT_TRUE((*global)->Commit(*round, 0.5).ok());
  meter.Measure({0.5});
  EXPECT_EQ(calls, 5);
}

TEST(PruningCostMeterTest, WithoutALossOrWithAFailingOneEverythingIsFree) {
  auto global = GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  PruningCostMeter none(global->get(), nullptr);
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(none.Measure({0.5}).at(0.5), 0);
  PruningCostMeter failing(
      global->get(),
      [](model::ModelImpl&, const StopFn&) -> absl::StatusOr<double> {
        return absl::InternalError("evaluation broke");
      });
  EXPECT_EQ(failing.Measure({0.5}).at(0.5), 0);
  PruningCostMeter nan(
      global->get(),
      [](model::ModelImpl&, const StopFn&) -> absl::StatusOr<double> {
        return NAN;
      });
  EXPECT_EQ(nan.Measure({0.5}).at(0.5), 0);
}

// A stopped measurement answers nothing for the ratios it did not finish
// and keeps nothing: asked again, they are measured in full.
TEST(PruningCostMeterTest, AStoppedMeasurementKeepsNothingHalfDone) {
  torch::manual_seed(0);
  auto global = GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  ASSERT_TRUE(global.ok());
  int calls = 0;
  const ValidationLossFn size_loss = SizeLoss(&calls);
  PruningCostMeter meter(
      global->get(),
      [&](model::ModelImpl& m, const StopFn& stop) -> absl::StatusOr<double> {
        if (stop && stop()) return absl::CancelledError("told to stop");
        return size_loss(m, stop);
      });
  bool stop_now = false;
  const StopFn stop = [&] { return stop_now; };
  EXPECT_EQ(meter.Measure({0.25}, stop).size(), 1u);
  EXPECT_EQ(calls, 2);  // Dense and 0.25.
  stop_now = true;
  std::map<double, double> costs = meter.Measure({0.0, 0.25, 0.5}, stop);
  EXPECT_EQ(costs.count(0.0), 1u);   // Free.
  EXPECT_EQ(costs.count(0.25), 1u);  // Kept from before: no evaluation.
  EXPECT_EQ(costs.count(0.5), 0u);   // Stopped.
  EXPECT_EQ(calls, 2);
  stop_now = false;
  costs = meter.Measure({0.5}, stop);
  EXPECT_GT(costs.at(0.5), 0);
  EXPECT_EQ(calls, 3);
}

TEST(PruningCostTableTest, HoldsTheOpenRoundsCostsAndTheNextRounds) {
  PruningCostTable table;
  EXPECT_EQ(table.Find(0.0), 0.0);
  EXPECT_EQ(table.Find(0.3), std::nullopt);
  table.Add({{0.3, 0.1}});
  table.AddNext({{0.4, 0.2}});
  EXPECT_EQ(table.Find(0.3), 0.1);
  EXPECT_EQ(table.Missing({0.0, 0.3, 0.4}), std::vector<double>{0.4});
  EXPECT_EQ(table.MissingNext({0.0, 0.3, 0.4}), std::vector<double>{0.3});
  table.Advance();
  EXPECT_EQ(table.Find(0.3), std::nullopt);
  EXPECT_EQ(table.Find(0.4), 0.2);
}

}  // namespace
}  // namespace fedge::coordinator
