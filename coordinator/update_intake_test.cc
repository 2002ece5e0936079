#include "coordinator/update_intake.h"

#include <cmath>

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::coordinator {
namespace {

std::map<std::string, std::vector<int64_t>> Expected() {
  return {{"a", {2, 3}}, {"b", {4}}};
}

Submission Valid() {
  Submission s;
  s.update.insert("a", torch::zeros({2, 3}));
  s.update.insert("b", torch::ones({4}));
  s.num_examples = 5;
  s.loss_before = 2;
  s.loss_after = 1;
  return s;
}

void ExpectRefused(const Submission& s, const std::string& mentions) {
  const absl::Status status = ValidateUpdate(Expected(), s);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(mentions), std::string::npos) << status;
}

TEST(UpdateIntakeTest, AcceptsWhatTheTaskExpectsAndNamesWhatItDoesNot) {
  EXPECT_TRUE(ValidateUpdate(Expected(), Valid()).ok());
  Submission s = Valid();
  s.update["a"] = torch::zeros({3, 2});
  ExpectRefused(s, "'a' has shape [3,2]");
  s = Valid();
  s.update.insert("c", torch::zeros({1}));
  ExpectRefused(s, "3 tensors");
  s = Valid();
  s.update["b"] = torch::tensor({1.0f, NAN, 0.0f, 0.0f});
  ExpectRefused(s, "'b' has NaN or Inf");
  s = Valid();
  s.update["b"] = torch::ones({4}, torch::kLong);
  ExpectRefused(s, "floats");
  s = Valid();
  s.num_examples = 0;
  ExpectRefused(s, "num_examples");
  s = Valid();
  s.loss_after = INFINITY;
  ExpectRefused(s, "losses");
}

}  // namespace
}  // namespace fedge::coordinator
