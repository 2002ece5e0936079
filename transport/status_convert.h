// absl::Status <-> grpc::Status. Both use the canonical codes, so the code
// maps one to one.
#pragma once

#include "absl/status/status.h"
#include <grpcpp/support/status.h>

namespace fedge::transport {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace fedge::transport
