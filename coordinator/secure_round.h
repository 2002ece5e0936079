// One round's secure aggregation on the coordinator (docs/privacy.md): the
// SecAgg+ exchange (secagg::Coordinator) among the round's participants,
// in phases that each close when every device it waits for has answered
// or its deadline passes:
//
//   kAdvertise    each device posts its two public keys; closes when all
//                 have, or at the setup deadline (opened + phase_timeout).
//   kShareKeys    each advertised device gets its neighbours' keys and
//                 posts its sealed shares; closes the same way.
//   kMaskedInput  each device that shared gets its inbox, trains, and
//                 submits its masked vector (the engine's Submit); closes
//                 when the engine stops collecting (Advance's `collected`:
//                 target reached, round deadline, nobody left).
//   kUnmask       each survivor gets the survivors and posts its
//                 unmasking shares; closes when all have, or phase_timeout
//                 after it opened.
//   kDone         Sum() unmasks once; the engine folds the sum.
//
// A retried message (the same bytes again: the reply was lost) is taken
// once and answered OK again. A device that misses kAdvertise or kShareKeys
// cannot mask and is Lost() (the engine drops it). A message the protocol
// refuses (a replayed key, shares in another's name, a masked vector of the
// wrong length, ...) excludes its sender from the rest of the round with the
// reason kept in record().excluded; the round goes on without it, and Sum never
// yields a wrong sum (secagg::Coordinator::Sum).
//
// Thread-safe: one internal lock guards everything, so the engine calls in
// without its own lock held (a masked vector is a few MB to add).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "secagg/protocol.h"

namespace fedge::coordinator {

struct SecureOptions {
  bool enabled = false;
  // Each device's change is clipped to this L2 norm before it is encoded
  // (the coordinator cannot clip a masked vector); it also sets the ring's
  // scale (secagg::RingCodec). > 0.
  double clip_norm = 1.0;
  // The share of a round's devices assumed to drop after masking, and the
  // chance allowed that unmasking fails anyway: they size the neighbour
  // graph (secagg::NeighboursFor). The threshold is neighbours / 2 + 1.
  double dropout = 0.3;
  double failure = 1e-6;
  // How long kAdvertise, kShareKeys and kUnmask each wait at most.
  absl::Duration phase_timeout = absl::Seconds(60);
};

// InvalidArgument naming the field.
absl::Status ValidateSecureOptions(const SecureOptions& options);

enum class SecurePhase { kAdvertise, kShareKeys, kMaskedInput, kUnmask, kDone };
const char* SecurePhaseName(SecurePhase phase);

// What a round's secure aggregation cost, for its record. Bytes are the
// key, share and unmasking messages' payloads both ways (ids, keys, sealed
// shares), not the masked vectors, which go up as the devices' updates.
struct SecureRecord {
  int64_t devices = 0, neighbours = 0, threshold = 0, length = 0;
  double advertise_s = 0, share_keys_s = 0, unmask_s = 0;
  double sum_s = 0;  // CPU of Sum: rebuilding secrets, removing masks.
  int64_t bytes_up = 0, bytes_down = 0;
  int64_t masked = 0;    // Survivors: devices whose masked vector arrived.
  int64_t unmasked = 0;  // Survivors that posted their unmasking shares.
  // Device id: why it was excluded.
  std::map<std::string, std::string> excluded;
};

// The bytes each exchange message carries (ids, keys, sealed shares), as
// records count them; what fedge-vclock charges to a device's link.
int64_t MessageBytes(const secagg::Advertisement& advertisement);
int64_t MessageBytes(const std::vector<secagg::SealedShares>& shares);
int64_t MessageBytes(const secagg::UnmaskShares& shares);
int64_t MessageBytes(const std::set<int64_t>& survivors);

class SecureRound {
 public:
  // `devices`: the round's participants; a device's number is its place.
  // `length`: words a masked vector has. `round` binds the keys and shares
  // to this attempt; `graph_seed` draws the public neighbour graph.
  // `noise_multiplier` z > 0: distributed differential privacy, each device
  // adds Gaussian noise of z * clip / sqrt(t) to its encoding, t =
  // min_survivors(), so that any t or more survivors' sum carries noise of
  // at least z * clip, what the accountant assumes. InvalidArgument for
  // bad options, fewer than 2 devices or a negative multiplier.
  static absl::StatusOr<std::unique_ptr<SecureRound>> Create(
      std::vector<std::string> devices, int64_t length, uint64_t round,
      uint64_t graph_seed, const SecureOptions& options, absl::Time now,
      double noise_multiplier = 0);

  const secagg::Parameters& parameters() const { return parameters_; }
  // Under distributed DP: each device's noise (in values) and the fewest
  // masked vectors the round unmasks, max(2, ceil((1 - dropout) * n)).
  // With fewer the noise would fall short: the round never opens
  // kUnmask, Survivors and Sum answer FailedPrecondition, and the engine
  // retries it. 0 and 0 without.
  double noise_stddev() const { return noise_stddev_; }
  int64_t min_survivors() const { return min_survivors_; }
  // The device's number; NotFound if it is not in the round.
  absl::StatusOr<int64_t> Index(const std::string& device) const;
  SecurePhase phase() const;

  // Each: FailedPrecondition outside its phase, or for an excluded device;
  // NotFound for a device not in the round; InvalidArgument when the
  // protocol refuses the message (the device is excluded).
  absl::Status Advertise(const std::string& device,
                         const secagg::Advertisement& advertisement);
  absl::Status ShareKeys(const std::string& device,
                         const std::vector<secagg::SealedShares>& shares);
  absl::Status MaskedInput(const std::string& device,
                           std::vector<uint32_t> masked);
  absl::Status Unmask(const std::string& device,
                      const secagg::UnmaskShares& shares);

  // What the device needs for its next step, once the phase before it has
  // closed; Unavailable (retry) until then. Neighbours' advertisements
  // (from kShareKeys on), the sealed shares addressed to it (from
  // kMaskedInput on), the survivors (from kUnmask on).
  absl::StatusOr<std::vector<secagg::Advertisement>> Advertisements(
      const std::string& device);
  absl::StatusOr<std::vector<secagg::SealedShares>> Shares(
      const std::string& device);
  absl::StatusOr<std::set<int64_t>> Survivors(const std::string& device);

  // Whether the device has posted `phase`'s message (for kMaskedInput:
  // its masked vector), so it needs nothing more for it.
  bool Answered(const std::string& device, SecurePhase phase) const;

  // Closes the current phase if everyone it waits for has answered or its
  // deadline has passed; kMaskedInput closes only once `collected` (the
  // engine stopped taking updates). True if the phase changed.
  bool Advance(absl::Time now, bool collected);
  // Devices that can no longer mask: they missed kAdvertise or kShareKeys,
  // or were excluded before masking.
  std::set<std::string> Lost() const;
  // The sum over the survivors, once kDone (FailedPrecondition before).
  // secagg::Coordinator::Sum's errors: FailedPrecondition when too few
  // shares arrived (the round must be retried, not committed).
  // Unmasking shares it found malformed exclude their senders.
  absl::StatusOr<std::vector<uint32_t>> Sum();
  SecureRecord record() const;

 private:
  SecureRound(std::vector<std::string> devices,
              const secagg::Parameters& parameters,
              const SecureOptions& options, absl::Time now, double noise_stddev,
              int64_t min_survivors);
  // The device's number if it may act in `phase`; see the errors above.
  absl::StatusOr<int64_t> Acting(const std::string& device,
                                 SecurePhase phase) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Excludes `index` for `status` (returned).
  absl::Status Exclude(int64_t index, absl::Status status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailedPrecondition: too few masked vectors for the noise.
  absl::Status Starved() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The devices the current phase still waits for.
  int64_t Waiting() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<std::string> devices_;
  const std::map<std::string, int64_t> index_;
  const secagg::Parameters parameters_;
  const SecureOptions options_;
  const double noise_stddev_;
  const int64_t min_survivors_;
  mutable absl::Mutex mu_;
  secagg::Coordinator protocol_ ABSL_GUARDED_BY(mu_);
  SecurePhase phase_ ABSL_GUARDED_BY(mu_) = SecurePhase::kAdvertise;
  absl::Time phase_opened_ ABSL_GUARDED_BY(mu_);
  // Per phase, the devices that answered it.
  std::set<int64_t> advertised_ ABSL_GUARDED_BY(mu_),
      shared_ ABSL_GUARDED_BY(mu_), masked_ ABSL_GUARDED_BY(mu_),
      unmasked_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> excluded_ ABSL_GUARDED_BY(mu_);
  // The last key or share message taken from each device, so that a retry
  // of it (the reply was lost) is answered as the first was, while a
  // different second message excludes the device.
  std::map<int64_t, std::string> retries_ ABSL_GUARDED_BY(mu_);
  bool summed_ ABSL_GUARDED_BY(mu_) = false;
  // kMaskedInput closed with fewer than min_survivors_ masked vectors.
  bool starved_ ABSL_GUARDED_BY(mu_) = false;
  SecureRecord record_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::coordinator
