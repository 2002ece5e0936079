// Split steps on the wire: conversions between split::StepRequest /
// StepReply and fedge.v1.SplitMessage, with activations and gradients
// encoded by an update codec (float32, float16, bfloat16 or int8_row; no
// zstd, activations do not compress), and a SplitLink that passes every
// step through the wire format in-process, counting the serialized bytes
// (the tests and bench/ use it; the client's gRPC link sends the same
// messages).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

#include "absl/status/statusor.h"

#include "fedge/v1/coordinator_service.pb.h"
#include "fedge/v1/task.pb.h"
#include "split/protocol.h"
#include "split/server.h"
#include "transport/update_codec.h"

namespace fedge::transport {

// The task's activation codec. CODEC_UNSPECIFIED means float16; top-k
// (meant for updates, not per-step tensors) is refused with InvalidArgument.
absl::StatusOr<CodecOptions> ActivationCodecOptions(const v1::SplitSpec& spec);

// Fills the step fields of `out` (step, applied and total steps,
// activations, targets); identity fields are the caller's.
// InvalidArgument for tensors the codec cannot encode (non-finite).
absl::Status StepRequestToProto(const split::StepRequest& request,
                                const CodecOptions& codec,
                                v1::SplitMessage* out);
// InvalidArgument (naming the field) for a payload that does not decode to
// exactly one tensor, or targets that are not a valid tensor;
// ResourceExhausted above `limits`. Shapes are the SplitServer's to check.
absl::StatusOr<split::StepRequest> StepRequestFromProto(
    const v1::SplitMessage& message, const DecodeLimits& limits = {});

absl::Status StepReplyToProto(const split::StepReply& reply,
                              const CodecOptions& codec, v1::SplitMessage* out);
absl::StatusOr<split::StepReply> StepReplyFromProto(
    const v1::SplitMessage& message, const DecodeLimits& limits = {});

// Adds the wall time of its scope to `*seconds` (the split links' time in
// their exchanges).
class SplitTimer {
 public:
  explicit SplitTimer(double* seconds)
      : seconds_(seconds), start_(std::chrono::steady_clock::now()) {}
  ~SplitTimer() {
    *seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count();
  }
  SplitTimer(const SplitTimer&) = delete;
  SplitTimer& operator=(const SplitTimer&) = delete;

 private:
  double* seconds_;
  std::chrono::steady_clock::time_point start_;
};

// Passes each step to a server half as the gRPC link would: encoded,
// serialized, parsed and decoded both ways, counting the serialized bytes.
// The server half is a SplitServer (tests, bench/) or any pair of functions
// (the virtual-clock simulator calls the engine). Not thread-safe.
class WireSplitLink : public split::SplitLink {
 public:
  using StepFn = std::function<absl::StatusOr<split::StepReply>(
      const split::StepRequest&)>;
  using SettleFn = std::function<absl::Status(int64_t applied_steps)>;

  WireSplitLink(StepFn step, SettleFn settle, const CodecOptions& codec)
      : step_(std::move(step)), settle_(std::move(settle)), codec_(codec) {}
  // `server` is borrowed and must outlive the link.
  WireSplitLink(split::SplitServer* server, const CodecOptions& codec)
      : WireSplitLink(
            [server](const split::StepRequest& r) { return server->Step(r); },
            [server](int64_t applied) { return server->Settle(applied); },
            codec) {}

  absl::StatusOr<split::StepReply> Step(
      const split::StepRequest& request) override;
  absl::Status Finish(int64_t applied_steps) override;

  int64_t bytes_up() const { return bytes_up_; }      // Serialized messages.
  int64_t bytes_down() const { return bytes_down_; }  // Serialized messages.
  int64_t exchanges() const { return exchanges_; }    // Round trips.
  // Wall seconds spent in Step and Finish: encoding, the server half,
  // decoding (what the device waits for beyond its own compute).
  double seconds() const { return seconds_; }

 private:
  StepFn step_;
  SettleFn settle_;
  CodecOptions codec_;
  int64_t bytes_up_ = 0, bytes_down_ = 0, exchanges_ = 0;
  double seconds_ = 0;
};

}  // namespace fedge::transport
