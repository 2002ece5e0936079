// Checks a device's update before it is folded into the round's aggregate:
// the names and shapes its task expects, finite floats, a positive example
// count and finite losses. Scans every tensor, so the engine runs it
// outside its lock.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

#include "coordinator/engine_types.h"

namespace fedge::coordinator {

// InvalidArgument naming the first tensor or field that does not fit
// `expected` (name -> shape) or is not finite.
absl::Status ValidateUpdate(
    const std::map<std::string, std::vector<int64_t>>& expected,
    const Submission& submission);

}  // namespace fedge::coordinator
