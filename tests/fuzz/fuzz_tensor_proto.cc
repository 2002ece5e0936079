// Fuzz target: protobuf messages that carry tensors, decoded as the
// coordinator and client do: NamedTensors (importance reports), a split
// step both ways, and a task's pruning plan. The first byte picks which.
#include <cstddef>
#include <cstdint>

#include "fedge/v1/coordinator_service.pb.h"
#include "fedge/v1/task.pb.h"
#include "transport/split_proto.h"
#include "transport/task_proto.h"
#include "transport/tensor_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto* bytes = data + 1;
  const int length = static_cast<int>(size - 1);
  fedge::transport::TensorLimits tensor_limits;
  tensor_limits.max_elements = 4 << 20;
  fedge::transport::DecodeLimits limits;
  limits.max_payload_bytes = 16 << 20;
  limits.max_tensor_elements = 4 << 20;
  switch (data[0] % 3) {
    case 0: {
      fedge::v1::NamedTensors proto;
      if (proto.ParseFromArray(bytes, length)) {
        (void)fedge::transport::FromProto(proto, tensor_limits);
      }
      break;
    }
    case 1: {
      fedge::v1::SplitMessage message;
      if (message.ParseFromArray(bytes, length)) {
        (void)fedge::transport::StepRequestFromProto(message, limits);
        (void)fedge::transport::StepReplyFromProto(message, limits);
      }
      break;
    }
    default: {
      fedge::v1::Task task;
      if (task.ParseFromArray(bytes, length)) {
        (void)fedge::transport::PlanFromProto(task.plan());
        (void)fedge::transport::ActivationCodecOptions(task.split());
      }
      break;
    }
  }
  return 0;
}
