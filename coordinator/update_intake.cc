#include "coordinator/update_intake.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <torch/types.h>

namespace fedge::coordinator {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

absl::Status ValidateUpdate(
    const std::map<std::string, std::vector<int64_t>>& expected,
    const Submission& submission) {
  if (submission.update.size() != expected.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("update has ", submission.update.size(),
                     " tensors; the task expects ", expected.size()));
  }
  for (const auto& item : submission.update) {
    auto want = expected.find(item.key());
    if (want == expected.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor '", item.key(), "' is not in the task"));
    }
    const at::Tensor& t = item.value();
    if (t.sizes().vec() != want->second || !t.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update tensor '", item.key(), "' has shape ",
          ShapeText(t.sizes().vec()), "; the task expects floats of shape ",
          ShapeText(want->second)));
    }
    if (!torch::isfinite(t).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor '", item.key(), "' has NaN or Inf"));
    }
  }
  if (submission.num_examples < 1) {
    return absl::InvalidArgumentError("num_examples must be >= 1");
  }
  if (!std::isfinite(submission.loss_before) ||
      !std::isfinite(submission.loss_after)) {
    return absl::InvalidArgumentError("reported losses must be finite");
  }
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
