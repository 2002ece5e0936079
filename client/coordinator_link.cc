#include "client/coordinator_link.h"

#include <utility>

#include "client/split_link.h"
#include "transport/status_convert.h"

namespace fedge::client {

GrpcCoordinatorLink::GrpcCoordinatorLink(v1::Coordinator::StubInterface* stub,
                                         transport::RetryPolicy transfer_retry)
    : stub_(stub), transfers_(stub, transfer_retry) {}

// Each unary call is one attempt, with a context that gives up at
// `deadline`.

absl::Status GrpcCoordinatorLink::Register(const v1::RegisterRequest& request,
                                           absl::Time deadline,
                                           v1::RegisterResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return transport::FromGrpcStatus(
      stub_->Register(&context, request, response));
}

absl::Status GrpcCoordinatorLink::GetTask(const v1::GetTaskRequest& request,
                                          absl::Time deadline,
                                          v1::GetTaskResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return transport::FromGrpcStatus(stub_->GetTask(&context, request, response));
}

absl::Status GrpcCoordinatorLink::Heartbeat(const v1::HeartbeatRequest& request,
                                            absl::Time deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  v1::HeartbeatResponse response;
  return transport::FromGrpcStatus(
      stub_->Heartbeat(&context, request, &response));
}

absl::Status GrpcCoordinatorLink::SubmitUpdate(
    const v1::SubmitUpdateRequest& request, absl::Time deadline,
    v1::SubmitUpdateResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return transport::FromGrpcStatus(
      stub_->SubmitUpdate(&context, request, response));
}

absl::Status GrpcCoordinatorLink::Secure(const v1::SecureRequest& request,
                                         absl::Time deadline,
                                         v1::SecureResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  return transport::FromGrpcStatus(stub_->Secure(&context, request, response));
}

absl::Status GrpcCoordinatorLink::DeclineTask(
    const v1::DeclineTaskRequest& request, absl::Time deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  v1::DeclineTaskResponse response;
  return transport::FromGrpcStatus(
      stub_->DeclineTask(&context, request, &response));
}

absl::StatusOr<transport::TransferStats> GrpcCoordinatorLink::Download(
    const std::string& device_id, const std::string& transfer_id,
    int64_t chunk_bytes, transport::ChunkSink* sink) {
  return transfers_.Download(device_id, transfer_id, chunk_bytes, sink);
}

absl::StatusOr<transport::TransferStats> GrpcCoordinatorLink::Upload(
    const std::string& device_id, const transport::TransferInfo& info,
    const transport::PayloadSource& source, int64_t chunk_bytes) {
  return transfers_.Upload(device_id, info, source, chunk_bytes);
}

absl::StatusOr<std::unique_ptr<DeviceSplitLink>> GrpcCoordinatorLink::OpenSplit(
    const std::string& device_id, const v1::Task& task, absl::Time deadline) {
  absl::StatusOr<std::unique_ptr<GrpcSplitLink>> link =
      GrpcSplitLink::Create(stub_, device_id, task, deadline);
  if (!link.ok()) return link.status();
  return std::unique_ptr<DeviceSplitLink>(std::move(*link));
}

}  // namespace fedge::client
