#include "coordinator/service.h"

#include "gtest/gtest.h"

namespace fedge::coordinator {
namespace {

TEST(TaskToProtoTest, CarriesTheRoundsRateAndTheInRoundSchedule) {
  Task task;
  task.round = 3;
  task.max_steps = 40;
  task.learning_rate = 2e-3;
  EngineOptions engine;
  engine.train.in_round_schedule = "constant";
  v1::Task proto = TaskToProto(task, engine, "digest", 1 << 20);
  EXPECT_EQ(proto.round(), 3);
  EXPECT_EQ(proto.train().max_steps(), 40);
  EXPECT_DOUBLE_EQ(proto.train().learning_rate(), 2e-3);
  EXPECT_TRUE(proto.train().constant_lr_in_round());
  engine.train.in_round_schedule = "cosine";
  proto = TaskToProto(task, engine, "digest", 1 << 20);
  EXPECT_FALSE(proto.train().constant_lr_in_round());
}

}  // namespace
}  // namespace fedge::coordinator
