// Secure aggregation's exchange on the virtual clock (sim/virtual_clock.h):
// each device's part driven through the real engine (coordinator::Engine::
// Secure) as the client daemon would drive it, every step charged as
//
//   a message  = the link's RTT + its bytes (coordinator::MessageBytes)
//                / the link's uplink or downlink rate
//   its work   = this machine's CPU seconds for it (sim::ThreadCpuSeconds)
//                / the device's relative speed
//
// The key exchange (advertise, then share keys) runs from the round's
// opening, beside the devices' downloads and training; a device masks its
// change once it has trained and its inbox has arrived. The engine is
// ticked as each phase's last message arrives, so its phases close as they
// would in a real run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "coordinator/engine.h"
#include "secagg/protocol.h"
#include "transport/link_profile.h"

namespace fedge::sim {

// One invited device's part.
struct SecureParty {
  std::string device_id;
  coordinator::Task task;  // With its `secure` part.
  transport::LinkProfile link;
  double speed = 1;  // Relative to this machine's core.
  std::unique_ptr<secagg::Device> protocol;
  std::vector<secagg::SealedShares> inbox;
  absl::Time inbox_at;  // When its inbox has arrived.
  // Charged device seconds of the exchange's work, and its messages'
  // bytes; the masked vector is the update's upload.
  double work_s = 0;
  int64_t bytes_up = 0, bytes_down = 0;
};

// The key exchange of a round whose tasks went out at `start`: every party
// advertises, gets its neighbours' keys and shares, then gets its inbox.
// No message is heard before `not_before` (the engine is busy measuring).
// The engine's errors (a vclock device is honest: any refusal is a bug).
absl::Status ExchangeKeys(coordinator::Engine& engine,
                          std::vector<SecureParty>& parties, absl::Time start,
                          absl::Time not_before);

// The party's trained `change` (client::SecureChange) encoded on the ring
// and masked, its CPU added to work_s. InvalidArgument for a change of the
// wrong length.
absl::StatusOr<std::vector<uint32_t>> MaskChange(
    SecureParty& party, const std::vector<float>& change);

// The unmasking step, from `start` (the engine stopped collecting): each
// of `survivors` gets the survivors and posts its shares, and the engine
// is ticked as the last arrives. Returns that time.
absl::StatusOr<absl::Time> Unmask(coordinator::Engine& engine,
                                  const std::vector<SecureParty*>& survivors,
                                  absl::Time start);

}  // namespace fedge::sim
