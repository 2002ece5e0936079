// A device's part in its round's secure aggregation over the Secure RPC
// (docs/privacy.md; the protocol in secagg/protocol.h). The participant
// runs it around its training:
//
//   ExchangeKeys  advertise its keys; once the advertise phase closes, get
//                 the neighbours' keys and post the sealed shares; once
//                 that phase closes, get the shares addressed to it.
//   Mask          its change (client::SecureChange) on the ring, masked:
//                 the words it uploads (PAYLOAD_FORMAT_MASKED_WORDS).
//   Unmask        after its update was accepted: once the coordinator has
//                 the survivors' vectors, post the unmasking shares.
//
// Phases close on the coordinator (everyone answered, or its deadline), so
// each step polls until the phase moves, from 20 ms up to 500 ms apart.
// The participant runs ExchangeKeys on a thread of its own, beside its
// download and training, as fedge-vclock charges it.
//
// Not thread-safe (one thread at a time); one object per device and
// round.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "fedge/v1/coordinator_service.pb.h"
#include "secagg/protocol.h"
#include "transport/secure_proto.h"

namespace fedge::client {

class SecureExchange {
 public:
  // Sends one request and fills the response, retrying transient failures
  // (the participant's Retry around CoordinatorLink::Secure).
  using Call = std::function<absl::Status(const v1::SecureRequest&,
                                          v1::SecureResponse*)>;
  // Waits up to the duration between polls (the participant heartbeats
  // there); false: the participant was stopped (Cancelled).
  using Wait = std::function<bool(absl::Duration)>;

  // InvalidArgument for a task whose SecureSpec does not validate
  // (transport::SecureSpecFromProto), naming the field.
  static absl::StatusOr<std::unique_ptr<SecureExchange>> Create(
      const std::string& device_id, const v1::Task& task, Call call, Wait wait);

  const transport::SecureSpec& spec() const { return spec_; }

  // Advertise, share keys, receive the inbox. FailedPrecondition when the
  // coordinator dropped the device from the exchange, DeadlineExceeded
  // when the round's deadline passes first, Cancelled when stopped.
  absl::Status ExchangeKeys();
  // The masked words of `change` (spec().parameters.length floats, clipped
  // to spec().clip_norm), with the device's noise under distributed DP
  // (spec().noise_stddev). FailedPrecondition before ExchangeKeys.
  absl::StatusOr<std::vector<uint32_t>> Mask(const std::vector<float>& change);
  // Posts the unmasking shares once the round unmasks; OK without posting
  // when the round is past it. Errors as ExchangeKeys; FailedPrecondition,
  // without posting, for fewer survivors than spec().min_survivors.
  absl::Status Unmask();

  // The exchange's messages, serialized, both ways (the masked vector is
  // the update's upload), and the seconds spent waiting for phases.
  int64_t bytes_up() const { return bytes_up_; }
  int64_t bytes_down() const { return bytes_down_; }
  double wait_s() const { return wait_s_; }

 private:
  SecureExchange(std::string device_id, const v1::Task& task,
                 transport::SecureSpec spec, Call call, Wait wait);
  // Sends `request` (with the device's ids) and counts its bytes.
  absl::StatusOr<v1::SecureResponse> Send(v1::SecureRequest request);
  // Polls until the phase is at least `phase`; answers that reply.
  absl::StatusOr<v1::SecureResponse> AwaitPhase(v1::SecurePhase phase);

  const std::string device_id_;
  const int64_t round_;
  const std::string nonce_;
  const absl::Time deadline_;
  const transport::SecureSpec spec_;
  const Call call_;
  const Wait wait_;
  secagg::Device device_;
  std::vector<secagg::SealedShares> inbox_;
  bool keyed_ = false;
  int64_t bytes_up_ = 0, bytes_down_ = 0;
  double wait_s_ = 0;
};

}  // namespace fedge::client
