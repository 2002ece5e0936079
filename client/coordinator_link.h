// What a participant asks of its coordinator, one method per conversation:
// the unary RPCs (one attempt each, with a deadline), the resumable
// transfers and the split stream. Participant's loop (retries, back-off,
// giving up, rejoining, the base-model cache) is written against this
// interface, so its unit tests drive it with a fake coordinator;
// GrpcCoordinatorLink is the production adapter over the generated stub.
//
// The messages are fedge.v1's: the link carries them, it does not
// interpret them. gRPC statuses come back as absl::Status with the same
// code (transport::FromGrpcStatus).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "fedge/v1/coordinator_service.grpc.pb.h"
#include "split/protocol.h"
#include "transport/transfer.h"
#include "transport/transfer_service.h"

namespace fedge::client {

// The device's end of a split round, with what it moved.
class DeviceSplitLink : public split::SplitLink {
 public:
  virtual int64_t bytes_up() const = 0;  // Serialized messages.
  virtual int64_t bytes_down() const = 0;
  // Wall seconds in the exchanges: encoding, the wire both ways, the
  // coordinator's half, decoding.
  virtual double seconds() const = 0;
};

// Implementations say their own thread-safety. Participant uses one link
// from one thread, except that under secure aggregation Secure runs on a
// second thread beside the other calls.
class CoordinatorLink {
 public:
  virtual ~CoordinatorLink() = default;

  // One attempt each; the call gives up at `deadline` (DEADLINE_EXCEEDED).
  virtual absl::Status Register(const v1::RegisterRequest& request,
                                absl::Time deadline,
                                v1::RegisterResponse* response) = 0;
  virtual absl::Status GetTask(const v1::GetTaskRequest& request,
                               absl::Time deadline,
                               v1::GetTaskResponse* response) = 0;
  virtual absl::Status Heartbeat(const v1::HeartbeatRequest& request,
                                 absl::Time deadline) = 0;
  virtual absl::Status SubmitUpdate(const v1::SubmitUpdateRequest& request,
                                    absl::Time deadline,
                                    v1::SubmitUpdateResponse* response) = 0;
  virtual absl::Status DeclineTask(const v1::DeclineTaskRequest& request,
                                   absl::Time deadline) = 0;
  virtual absl::Status Secure(const v1::SecureRequest& request,
                              absl::Time deadline,
                              v1::SecureResponse* response) = 0;

  // Transfers resume by themselves after a broken stream (their retry
  // policy is the link's); the errors they return are final.
  virtual absl::StatusOr<transport::TransferStats> Download(
      const std::string& device_id, const std::string& transfer_id,
      int64_t chunk_bytes, transport::ChunkSink* sink) = 0;
  virtual absl::StatusOr<transport::TransferStats> Upload(
      const std::string& device_id, const transport::TransferInfo& info,
      const transport::PayloadSource& source, int64_t chunk_bytes) = 0;

  // The split stream of `task` (which has a split), open until `deadline`.
  virtual absl::StatusOr<std::unique_ptr<DeviceSplitLink>> OpenSplit(
      const std::string& device_id, const v1::Task& task,
      absl::Time deadline) = 0;
};

// Over a fedge.v1.Coordinator stub. Thread-compatible; the unary calls
// (all but Download and Upload, which share a transfer client) may run
// concurrently with anything, as gRPC stubs are thread-safe.
class GrpcCoordinatorLink final : public CoordinatorLink {
 public:
  // `stub` must outlive the link; `transfer_retry` paces resumed streams.
  explicit GrpcCoordinatorLink(v1::Coordinator::StubInterface* stub,
                               transport::RetryPolicy transfer_retry = {});

  absl::Status Register(const v1::RegisterRequest& request, absl::Time deadline,
                        v1::RegisterResponse* response) override;
  absl::Status GetTask(const v1::GetTaskRequest& request, absl::Time deadline,
                       v1::GetTaskResponse* response) override;
  absl::Status Heartbeat(const v1::HeartbeatRequest& request,
                         absl::Time deadline) override;
  absl::Status SubmitUpdate(const v1::SubmitUpdateRequest& request,
                            absl::Time deadline,
                            v1::SubmitUpdateResponse* response) override;
  absl::Status DeclineTask(const v1::DeclineTaskRequest& request,
                           absl::Time deadline) override;
  absl::Status Secure(const v1::SecureRequest& request, absl::Time deadline,
                      v1::SecureResponse* response) override;
  absl::StatusOr<transport::TransferStats> Download(
      const std::string& device_id, const std::string& transfer_id,
      int64_t chunk_bytes, transport::ChunkSink* sink) override;
  absl::StatusOr<transport::TransferStats> Upload(
      const std::string& device_id, const transport::TransferInfo& info,
      const transport::PayloadSource& source, int64_t chunk_bytes) override;
  absl::StatusOr<std::unique_ptr<DeviceSplitLink>> OpenSplit(
      const std::string& device_id, const v1::Task& task,
      absl::Time deadline) override;

 private:
  v1::Coordinator::StubInterface* const stub_;  // Not owned.
  transport::TransferClient transfers_;
};

}  // namespace fedge::client
