#include "transport/split_proto.h"

#include <string>

#include "absl/strings/str_cat.h"

#include "transport/tensor_proto.h"

namespace fedge::transport {
namespace {

absl::Status EncodeOne(const at::Tensor& tensor, const CodecOptions& codec,
                       std::string* out) {
  model::NamedTensors one;
  one.insert("x", tensor);
  absl::StatusOr<EncodedPayload> encoded = EncodeUpdate(one, codec);
  if (!encoded.ok()) return encoded.status();
  *out = std::move(encoded->bytes);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> DecodeOne(const std::string& bytes,
                                     absl::string_view field,
                                     const DecodeLimits& limits) {
  absl::StatusOr<model::NamedTensors> decoded = DecodeUpdate(bytes, limits);
  if (!decoded.ok()) {
    return absl::Status(decoded.status().code(),
                        absl::StrCat("split message ", field, ": ",
                                     decoded.status().message()));
  }
  if (decoded->size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("split message ", field,
                                                   " carries ", decoded->size(),
                                                   " tensors, expected 1"));
  }
  return (*decoded)[0].value();
}

}  // namespace

absl::StatusOr<CodecOptions> ActivationCodecOptions(const v1::SplitSpec& spec) {
  CodecOptions options;
  options.zstd = false;
  options.codec = spec.activation_codec() == v1::CODEC_UNSPECIFIED
                      ? Codec::kFloat16
                      : CodecFromProto(spec.activation_codec());
  if (options.codec == Codec::kTopK) {
    return absl::InvalidArgumentError(
        "split activations cannot use the top-k codec; use float32, "
        "float16, bfloat16 or int8_row");
  }
  return options;
}

absl::Status StepRequestToProto(const split::StepRequest& request,
                                const CodecOptions& codec,
                                v1::SplitMessage* out) {
  out->set_step(request.step);
  out->set_applied_steps(request.applied_steps);
  out->set_total_steps(request.total_steps);
  if (absl::Status s =
          EncodeOne(request.activations, codec, out->mutable_activations());
      !s.ok()) {
    return s;
  }
  return TensorToProto("targets", request.targets, out->mutable_targets());
}

absl::StatusOr<split::StepRequest> StepRequestFromProto(
    const v1::SplitMessage& message, const DecodeLimits& limits) {
  split::StepRequest request;
  request.step = message.step();
  request.applied_steps = message.applied_steps();
  request.total_steps = message.total_steps();
  absl::StatusOr<at::Tensor> activations =
      DecodeOne(message.activations(), "activations", limits);
  if (!activations.ok()) return activations.status();
  request.activations = *std::move(activations);
  TensorLimits tensor_limits;
  tensor_limits.max_elements = limits.max_tensor_elements;
  absl::StatusOr<at::Tensor> targets =
      TensorFromProto("targets", message.targets(), tensor_limits);
  if (!targets.ok()) return targets.status();
  request.targets = *std::move(targets);
  return request;
}

absl::Status StepReplyToProto(const split::StepReply& reply,
                              const CodecOptions& codec,
                              v1::SplitMessage* out) {
  out->set_loss(reply.loss);
  return EncodeOne(reply.gradients, codec, out->mutable_gradients());
}

absl::StatusOr<split::StepReply> StepReplyFromProto(
    const v1::SplitMessage& message, const DecodeLimits& limits) {
  split::StepReply reply;
  reply.loss = message.loss();
  absl::StatusOr<at::Tensor> gradients =
      DecodeOne(message.gradients(), "gradients", limits);
  if (!gradients.ok()) return gradients.status();
  reply.gradients = *std::move(gradients);
  return reply;
}

absl::StatusOr<split::StepReply> WireSplitLink::Step(
    const split::StepRequest& request) {
  SplitTimer timer(&seconds_);
  v1::SplitMessage up;
  if (absl::Status s = StepRequestToProto(request, codec_, &up); !s.ok()) {
    return s;
  }
  v1::SplitMessage received;
  const std::string up_bytes = up.SerializeAsString();
  bytes_up_ += static_cast<int64_t>(up_bytes.size());
  if (!received.ParseFromString(up_bytes)) {
    return absl::InternalError("split request did not parse back");
  }
  absl::StatusOr<split::StepRequest> decoded = StepRequestFromProto(received);
  if (!decoded.ok()) return decoded.status();
  ++exchanges_;
  absl::StatusOr<split::StepReply> reply = step_(*decoded);
  if (!reply.ok()) return reply.status();
  v1::SplitMessage down;
  if (absl::Status s = StepReplyToProto(*reply, codec_, &down); !s.ok()) {
    return s;
  }
  const std::string down_bytes = down.SerializeAsString();
  bytes_down_ += static_cast<int64_t>(down_bytes.size());
  if (!received.ParseFromString(down_bytes)) {
    return absl::InternalError("split reply did not parse back");
  }
  return StepReplyFromProto(received);
}

absl::Status WireSplitLink::Finish(int64_t applied_steps) {
  SplitTimer timer(&seconds_);
  v1::SplitMessage finish;
  finish.set_applied_steps(applied_steps);
  finish.set_finish(true);
  bytes_up_ += static_cast<int64_t>(finish.ByteSizeLong());
  bytes_down_ += static_cast<int64_t>(finish.ByteSizeLong());  // The ack.
  ++exchanges_;
  return settle_(applied_steps);
}

}  // namespace fedge::transport
