// The device's end of a split round over gRPC: a DeviceSplitLink that
// streams each step to the coordinator's Split RPC (fedge.v1.SplitMessage,
// activations and gradients in the task's codec) and reads its gradient.
//
// The stream opens at the first step and carries the task's device, round
// and nonce; its deadline is the task's. A broken stream fails the step
// (the device applied only what it got gradients for; the coordinator
// settles its half with the count the update report carries). Not
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "client/coordinator_link.h"
#include "fedge/v1/coordinator_service.grpc.pb.h"
#include "fedge/v1/task.pb.h"
#include "split/protocol.h"
#include "transport/update_codec.h"

namespace fedge::client {

class GrpcSplitLink final : public DeviceSplitLink {
 public:
  // `stub` must outlive the link. InvalidArgument for a task without a
  // split or with an activation codec the transport refuses.
  static absl::StatusOr<std::unique_ptr<GrpcSplitLink>> Create(
      v1::Coordinator::StubInterface* stub, const std::string& device_id,
      const v1::Task& task, absl::Time deadline);
  ~GrpcSplitLink() override;

  absl::StatusOr<split::StepReply> Step(
      const split::StepRequest& request) override;
  absl::Status Finish(int64_t applied_steps) override;

  int64_t bytes_up() const override { return bytes_up_; }
  int64_t bytes_down() const override { return bytes_down_; }
  double seconds() const override { return seconds_; }

 private:
  GrpcSplitLink(v1::Coordinator::StubInterface* stub, std::string device_id,
                const v1::Task& task, absl::Time deadline,
                transport::CodecOptions codec);
  absl::Status Send(v1::SplitMessage& message, v1::SplitMessage* reply);
  // Closes the stream and returns its status (the reason it broke).
  absl::Status Close();

  v1::Coordinator::StubInterface* const stub_;
  const std::string device_id_;
  const int64_t round_;
  const std::string nonce_;
  const absl::Time deadline_;
  const transport::CodecOptions codec_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<
      grpc::ClientReaderWriterInterface<v1::SplitMessage, v1::SplitMessage>>
      stream_;
  int64_t bytes_up_ = 0, bytes_down_ = 0;
  double seconds_ = 0;
};

}  // namespace fedge::client
