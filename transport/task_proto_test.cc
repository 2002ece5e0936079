#include "transport/task_proto.h"

#include "gtest/gtest.h"

namespace fedge::transport {
namespace {

TEST(TaskProtoTest, RoundTrips) {
  pruning::PruningPlan plan;
  plan.blocks.push_back({{0, 2}, {0, 1}, {3, 4, 9}});
  plan.blocks.push_back({{1}, {1}, {}});
  v1::PruningPlan proto;
  PlanToProto(plan, &proto);
  const pruning::PruningPlan back = PlanFromProto(proto);
  ASSERT_EQ(back.blocks.size(), 2u);
  EXPECT_TRUE(back.blocks[0] == plan.blocks[0]);
  EXPECT_TRUE(back.blocks[1] == plan.blocks[1]);
  for (const char* link : {"ethernet", "wifi", "lte", "5g-sa"}) {
    EXPECT_EQ(LinkName(ParseLinkType(link)), link);
  }
  EXPECT_EQ(ParseLinkType("carrier-pigeon"), v1::LINK_TYPE_UNSPECIFIED);
}

}  // namespace
}  // namespace fedge::transport
