// One round of secure aggregation (SecAgg+, Bell et al. 2020, for an
// honest-but-curious coordinator): the coordinator learns the sum of the
// surviving devices' vectors over Z_2^32, never one device's.
//
// Devices are numbered 0..n-1 and each has `neighbours` neighbours in a
// public graph (NeighbourGraph: a ring after a secret-free random
// permutation, so a device's cost grows with its degree, O(log n), not
// with n). The rounds, each device's messages relayed by the coordinator:
// 1. Advertise: two X25519 public keys, one to seal shares with, one to
//    agree pairwise masks with.
// 2. ShareKeys: a self-mask seed b_i is drawn; b_i and the masking private
//    key are each split into one Shamir share per neighbour (any
//    `threshold` rebuild them), sealed for that neighbour.
// 3. MaskInput: y_i = x_i + PRG(b_i) + sum over neighbours j that shared
//    of +-PRG(s_ij) (+ if i < j), s_ij agreed from the masking keys.
// 4. Unmask: each survivor opens its shares and hands the coordinator, per
//    neighbour, the share of b_j if j sent its masked input, or the share
//    of j's masking key if j dropped after sharing: never both for one j.
// The coordinator then rebuilds each survivor's b_i and each dropped
// device's masking key, removes their masks, and is left with the sum.
//
// Not thread-safe; one object per device and round, one for the
// coordinator. A message that names the wrong sender or receiver, a
// sealed share that does not open, or a vector of the wrong length is
// refused with InvalidArgument naming the device, never summed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "secagg/crypto.h"

namespace fedge::secagg {

struct Parameters {
  int64_t devices = 0;      // n.
  int neighbours = 0;       // Even, < n; n - 1 for the full graph.
  int threshold = 0;        // Shares that rebuild a secret; > neighbours / 2.
  int64_t length = 0;       // Words per vector.
  uint64_t round = 0;       // Binds every key and share to this round.
  uint64_t graph_seed = 0;  // Public: the coordinator announces it.
};

// InvalidArgument naming the field: n >= 2, neighbours even in [2, n - 1]
// (or n - 1), threshold in (neighbours / 2, neighbours], length >= 1.
absl::Status ValidateParameters(const Parameters& p);

// The neighbours each of `devices` devices needs so that, with the
// threshold at neighbours / 2 + 1, a round in which each device drops
// after masking with probability `dropout` still unmasks with probability
// at least 1 - `failure` (every survivor keeps a threshold of answering
// neighbours; binomial tails, union bound). Even, at most devices - 1 (the
// full graph, SecAgg without the plus).
int NeighboursFor(int64_t devices, double dropout, double failure);

// Each device's neighbours, symmetric, from the public seed.
std::vector<std::vector<int64_t>> NeighbourGraph(int64_t devices,
                                                 int neighbours, uint64_t seed);

struct Advertisement {
  int64_t device = 0;
  std::string seal_public;  // kKeyBytes.
  std::string mask_public;  // kKeyBytes.
  // SHA-256 of the self-mask seed: lets the coordinator tell a rebuilt
  // seed from one corrupted by a bad share (the seed is 256 random bits,
  // so its digest reveals nothing).
  std::string seed_digest;
};

struct SealedShares {
  int64_t from = 0, to = 0;
  std::string sealed;  // Seal(agreed, share x | b share | key share).
};

struct UnmaskShares {
  int64_t from = 0;
  // Per neighbour: the share of its self-mask seed (it survived) or of its
  // masking key (it dropped).
  std::map<int64_t, Share> seed_shares;
  std::map<int64_t, Share> key_shares;
};

class Device {
 public:
  Device(const Parameters& parameters, int64_t id);

  absl::StatusOr<Advertisement> Advertise();
  // `advertised`: the neighbours' advertisements the coordinator relayed
  // (at least threshold of them). One sealed message per neighbour.
  absl::StatusOr<std::vector<SealedShares>> ShareKeys(
      const std::vector<Advertisement>& advertised);
  // `received`: the sealed shares addressed to this device (from the
  // neighbours that shared). Masks `input` (Parameters::length words).
  absl::StatusOr<std::vector<uint32_t>> MaskInput(
      const std::vector<uint32_t>& input,
      const std::vector<SealedShares>& received);
  // `survived`: the neighbours whose masked input the coordinator has.
  absl::StatusOr<UnmaskShares> Unmask(const std::set<int64_t>& survived);

 private:
  const Parameters parameters_;
  const int64_t id_;
  std::set<int64_t> neighbours_;
  KeyPair seal_, mask_;
  std::string self_seed_;
  std::map<int64_t, Advertisement> peers_;  // Neighbours that advertised.
  std::set<int64_t> sharers_;               // Neighbours that shared.
  // Opened shares from each sharer: of its seed and of its masking key.
  std::map<int64_t, std::pair<Share, Share>> held_;
  bool unmasked_ = false;
};

class Coordinator {
 public:
  explicit Coordinator(const Parameters& parameters);

  absl::Status AddAdvertisement(const Advertisement& a);
  // What `device` gets relayed: its neighbours' advertisements.
  std::vector<Advertisement> AdvertisementsFor(int64_t device) const;
  absl::Status AddShares(int64_t from, const std::vector<SealedShares>& s);
  std::vector<SealedShares> SharesFor(int64_t device) const;
  absl::Status AddMaskedInput(int64_t from, std::vector<uint32_t> masked);
  // The devices whose masked input arrived: survivors.
  std::set<int64_t> Survivors() const;
  absl::Status AddUnmaskShares(const UnmaskShares& shares);
  // The sum over the survivors, once every needed secret has threshold
  // shares. FailedPrecondition naming the first device whose secret
  // lacks shares (too many dropped: the round must be retried). A secret
  // whose shares do not rebuild it (checked against the seed's digest or
  // the key's public key) is rebuilt without one share at a time: a single
  // malformed share among more than threshold is left out and its sender
  // named in faulty(); InvalidArgument naming the secret's device when no
  // such rebuild passes. Never a wrong sum.
  absl::StatusOr<std::vector<uint32_t>> Sum();
  // The devices whose unmasking shares Sum found malformed.
  const std::set<int64_t>& faulty() const { return faulty_; }

 private:
  const Parameters parameters_;
  const std::vector<std::vector<int64_t>> graph_;
  std::map<int64_t, Advertisement> advertised_;
  std::map<int64_t, std::vector<SealedShares>> inbox_;  // By receiver.
  std::set<int64_t> shared_;
  // Masked inputs are folded into their sum as they arrive: the
  // coordinator holds one vector, not one per device.
  std::set<int64_t> masked_;
  std::vector<uint32_t> masked_sum_;
  // Per device whose secret they rebuild: (sender, share).
  std::map<int64_t, std::vector<std::pair<int64_t, Share>>> seed_shares_,
      key_shares_;
  std::set<int64_t> faulty_;
  std::set<int64_t> unmasked_;
};

// Fixed point in Z_2^32 for `devices` vectors of values clipped to
// [-clip, clip], each with Gaussian noise of standard deviation
// `noise_stddev` (in values; 0 without distributed differential privacy):
// the scale leaves devices * clip plus ten standard deviations of the
// summed noise inside int32, so a sum cannot wrap (short of a 10-sigma
// tail). Encode truncates towards zero, so no value grows and an encoded
// vector's L2 norm stays within its clip, the sensitivity the noise is
// calibrated to; each value loses less than one step. Decode reads a sum of
// encodings back.
struct RingCodec {
  RingCodec(int64_t devices, double clip, double noise_stddev = 0);
  std::vector<uint32_t> Encode(const std::vector<float>& values) const;
  std::vector<double> Decode(const std::vector<uint32_t>& sum) const;
  // Adds the device's noise (noise_stddev * scale steps per word, seeded
  // from OpenSSL's CSPRNG: nobody else can take it out). A no-op at 0.
  absl::Status AddNoise(std::vector<uint32_t>& words) const;
  double clip;
  double noise_stddev;
  double scale;  // Steps per unit.
};

// A device's input for its round: `change` encoded on `ring`, the
// device's noise added, masked with `received` (Device::MaskInput, and its
// errors).
absl::StatusOr<std::vector<uint32_t>> MaskChange(
    Device& device, const RingCodec& ring, const std::vector<float>& change,
    const std::vector<SealedShares>& received);

}  // namespace fedge::secagg
