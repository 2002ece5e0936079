#include "split/server.h"

#include "glog/logging.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "tests/testing/tiny_models.h"

namespace fedge::split {
namespace {

std::unique_ptr<SplitServer> MakeServer(int64_t cut = 1) {
  torch::manual_seed(1);
  model::Model vit = testing::TinyVit(64);
  absl::StatusOr<std::unique_ptr<SplitServer>> server =
      SplitServer::Create(vit, cut, model::TrainOptions{});
  CHECK(server.ok()) << server.status();
  return *std::move(server);
}

StepRequest Request(int64_t step, int64_t applied) {
  StepRequest r;
  r.step = step;
  r.applied_steps = applied;
  r.total_steps = 10;
  r.activations = torch::randn({4, 17, 32});
  r.targets = torch::tensor({0, 3, 9, 1}, torch::kLong);
  return r;
}

TEST(SplitServerTest, ReturnsTheGradientAtTheCutAndKeepsTheStepPending) {
  std::unique_ptr<SplitServer> server = MakeServer();
  const model::NamedTensors before = server->TailParameters();
  absl::StatusOr<StepReply> reply = server->Step(Request(1, 0));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->gradients.sizes(), (std::vector<int64_t>{4, 17, 32}));
  EXPECT_GT(reply->gradients.abs().sum().item<double>(), 0);
  EXPECT_TRUE(std::isfinite(reply->loss));
  EXPECT_TRUE(server->has_pending());
  EXPECT_EQ(server->applied_steps(), 0);
  // Nothing moves until the device says it applied step 1.
  for (const auto& item : server->TailParameters()) {
    EXPECT_TRUE(item.value().equal(before[item.key()])) << item.key();
  }
  ASSERT_TRUE(server->Settle(1).ok());
  EXPECT_EQ(server->applied_steps(), 1);
  EXPECT_FALSE(server->has_pending());
  bool moved = false;
  for (const auto& item : server->TailParameters()) {
    moved |= !item.value().equal(before[item.key()]);
  }
  EXPECT_TRUE(moved);
}

TEST(SplitServerTest, DropsAStepTheDeviceDidNotApply) {
  std::unique_ptr<SplitServer> server = MakeServer();
  const model::NamedTensors before = server->TailParameters();
  ASSERT_TRUE(server->Step(Request(1, 0)).ok());
  // The device retries step 1: it never applied the first attempt.
  ASSERT_TRUE(server->Step(Request(1, 0)).ok());
  ASSERT_TRUE(server->Settle(0).ok());
  EXPECT_EQ(server->applied_steps(), 0);
  for (const auto& item : server->TailParameters()) {
    EXPECT_TRUE(item.value().equal(before[item.key()])) << item.key();
  }
}

TEST(SplitServerTest, RejectsBadRequestsWithoutChangingState) {
  std::unique_ptr<SplitServer> server = MakeServer();
  ASSERT_TRUE(server->Step(Request(1, 0)).ok());
  ASSERT_TRUE(server->Settle(1).ok());

  StepRequest r = Request(3, 1);  // Skips step 2.
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.activations = torch::randn({4, 17, 31});
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.activations = torch::randn({4, 18, 32});  // More tokens than the ViT has.
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.activations[0][0][0] = NAN;
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.activations = r.activations.to(torch::kFloat16);
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.targets = torch::tensor({0, 3, 10, 1}, torch::kLong);  // 10 classes.
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(2, 1);
  r.targets = torch::tensor({0, 3, 1}, torch::kLong);
  EXPECT_EQ(server->Step(r).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A count the server never saw.
  EXPECT_EQ(server->Settle(5).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server->applied_steps(), 1);
  EXPECT_FALSE(server->has_pending());
  EXPECT_TRUE(server->Step(Request(2, 1)).ok());
}

TEST(SplitServerTest, CreateChecksTheCutAndTheTail) {
  model::Model vit = testing::TinyVit(64);
  EXPECT_EQ(SplitServer::Create(vit, 0, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitServer::Create(vit, 3, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (auto& p : vit->parameters()) p.set_requires_grad(false);
  EXPECT_EQ(SplitServer::Create(vit, 1, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedge::split
