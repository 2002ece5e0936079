#include "client/split_link.h"

#include <utility>

#include "absl/strings/str_cat.h"

#include "transport/split_proto.h"
#include "transport/status_convert.h"

namespace fedge::client {

absl::StatusOr<std::unique_ptr<GrpcSplitLink>> GrpcSplitLink::Create(
    v1::Coordinator::StubInterface* stub, const std::string& device_id,
    const v1::Task& task, absl::Time deadline) {
  if (task.split().cut_layer() <= 0) {
    return absl::InvalidArgumentError("the task has no split");
  }
  absl::StatusOr<transport::CodecOptions> codec =
      transport::ActivationCodecOptions(task.split());
  if (!codec.ok()) return codec.status();
  return std::unique_ptr<GrpcSplitLink>(
      new GrpcSplitLink(stub, device_id, task, deadline, *codec));
}

GrpcSplitLink::GrpcSplitLink(v1::Coordinator::StubInterface* stub,
                             std::string device_id, const v1::Task& task,
                             absl::Time deadline, transport::CodecOptions codec)
    : stub_(stub),
      device_id_(std::move(device_id)),
      round_(task.round()),
      nonce_(task.nonce()),
      deadline_(deadline),
      codec_(codec) {}

GrpcSplitLink::~GrpcSplitLink() {
  if (stream_ != nullptr) {
    context_->TryCancel();
    (void)stream_->Finish();
  }
}

absl::Status GrpcSplitLink::Close() {
  if (stream_ == nullptr) return absl::OkStatus();
  const grpc::Status status = stream_->Finish();
  stream_.reset();
  return transport::FromGrpcStatus(status);
}

absl::Status GrpcSplitLink::Send(v1::SplitMessage& message,
                                 v1::SplitMessage* reply) {
  if (stream_ == nullptr) {
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(absl::ToChronoTime(deadline_));
    stream_ = stub_->Split(context_.get());
  }
  message.set_device_id(device_id_);
  message.set_round(round_);
  message.set_nonce(nonce_);
  bytes_up_ += static_cast<int64_t>(message.ByteSizeLong());
  if (!stream_->Write(message) || !stream_->Read(reply)) {
    absl::Status status = Close();
    if (status.ok()) status = absl::UnavailableError("split stream closed");
    return status;
  }
  bytes_down_ += static_cast<int64_t>(reply->ByteSizeLong());
  return absl::OkStatus();
}

absl::StatusOr<split::StepReply> GrpcSplitLink::Step(
    const split::StepRequest& request) {
  transport::SplitTimer timer(&seconds_);
  v1::SplitMessage message;
  if (absl::Status s = transport::StepRequestToProto(request, codec_, &message);
      !s.ok()) {
    return s;
  }
  v1::SplitMessage reply;
  if (absl::Status s = Send(message, &reply); !s.ok()) return s;
  if (reply.step() != request.step) {
    return absl::InternalError(absl::StrCat(
        "split reply for step ", reply.step(), ", expected ", request.step));
  }
  return transport::StepReplyFromProto(reply);
}

absl::Status GrpcSplitLink::Finish(int64_t applied_steps) {
  transport::SplitTimer timer(&seconds_);
  if (stream_ == nullptr && applied_steps == 0) return absl::OkStatus();
  v1::SplitMessage message;
  message.set_applied_steps(applied_steps);
  message.set_finish(true);
  v1::SplitMessage ack;
  if (absl::Status s = Send(message, &ack); !s.ok()) return s;
  stream_->WritesDone();
  return Close();
}

}  // namespace fedge::client
