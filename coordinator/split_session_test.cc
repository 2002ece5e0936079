#include "coordinator/split_session.h"

#include "gtest/gtest.h"
#include <torch/types.h>

#include "tests/testing/tiny_models.h"

namespace fedge::coordinator {
namespace {

struct Fixture {
  std::unique_ptr<GlobalModel> global;
  pruning::PruningPlan plan;
  NamedTensors sent;
  std::unique_ptr<SplitSession> session;
};

Fixture Make() {
  torch::manual_seed(0);
  Fixture f;
  f.global = *GlobalModel::Create(testing::TinyVit(16), Mode::kLora, {});
  f.plan = *f.global->Plan(0.0);
  f.sent = *f.global->Payload(f.plan, 2, 1);
  model::TrainOptions train;
  train.learning_rate = 0.1;
  f.session = std::make_unique<SplitSession>(f.global.get(), f.plan, 2, 1,
                                             f.sent, train);
  return f;
}

TEST(SplitSessionTest, NoStepsReportedNoneRunLeavesTheUpdateAlone) {
  Fixture f = Make();
  NamedTensors update = f.sent;
  EXPECT_TRUE(f.session->MergeTail(0, update).ok());
  for (const auto& item : f.sent) {
    EXPECT_TRUE(torch::equal(update[item.key()], item.value()));
  }
  EXPECT_EQ(f.session->Settle(3).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SplitSessionTest, TheTrainedTailReplacesTheDevicesTail) {
  Fixture f = Make();
  for (int64_t step = 1; step <= 2; ++step) {
    absl::StatusOr<split::StepReply> reply =
        f.session->Step(testing::TinyVitSplitStep(step));
    ASSERT_TRUE(reply.ok()) << reply.status();
  }
  NamedTensors update = f.sent;
  EXPECT_EQ(f.session->MergeTail(7, update).code(),
            absl::StatusCode::kFailedPrecondition);  // More than it ran.
  ASSERT_TRUE(f.session->MergeTail(2, update).ok());
  int changed = 0;
  for (const auto& item : f.sent) {
    if (!torch::equal(update[item.key()], item.value())) ++changed;
  }
  EXPECT_GT(changed, 0);
  // A device that starts over starts the tail over too: the first step
  // again is accepted.
  EXPECT_TRUE(f.session->Step(testing::TinyVitSplitStep(1)).ok());
}

}  // namespace
}  // namespace fedge::coordinator
