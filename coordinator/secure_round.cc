#include "coordinator/secure_round.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedge::coordinator {
namespace {

constexpr int64_t kIdBytes = 8;

std::map<std::string, int64_t> Numbered(const std::vector<std::string>& ids) {
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < ids.size(); ++i) {
    index.emplace(ids[i], static_cast<int64_t>(i));
  }
  return index;
}

}  // namespace

int64_t MessageBytes(const secagg::Advertisement& a) {
  return kIdBytes +
         static_cast<int64_t>(a.seal_public.size() + a.mask_public.size() +
                              a.seed_digest.size());
}

int64_t MessageBytes(const std::vector<secagg::SealedShares>& shares) {
  int64_t bytes = 0;
  for (const auto& s : shares) {
    bytes += 2 * kIdBytes + static_cast<int64_t>(s.sealed.size());
  }
  return bytes;
}

int64_t MessageBytes(const secagg::UnmaskShares& u) {
  int64_t bytes = kIdBytes;
  for (const auto* shares : {&u.seed_shares, &u.key_shares}) {
    for (const auto& [j, share] : *shares) {
      bytes += kIdBytes + 1 + static_cast<int64_t>(share.y.size());
    }
  }
  return bytes;
}

int64_t MessageBytes(const std::set<int64_t>& survivors) {
  return kIdBytes * static_cast<int64_t>(survivors.size());
}

absl::Status ValidateSecureOptions(const SecureOptions& o) {
  if (!o.enabled) return absl::OkStatus();
  if (!(o.clip_norm > 0) || !std::isfinite(o.clip_norm)) {
    return absl::InvalidArgumentError(
        "--secure_clip_norm must be positive: a device clips its change to "
        "it before masking");
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    return absl::InvalidArgumentError("--secure_dropout must be in [0, 1)");
  }
  if (!(o.failure > 0 && o.failure < 1)) {
    return absl::InvalidArgumentError("secure aggregation: failure in (0, 1)");
  }
  if (o.phase_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--secure_phase_timeout_s must be positive");
  }
  return absl::OkStatus();
}

const char* SecurePhaseName(SecurePhase phase) {
  switch (phase) {
    case SecurePhase::kAdvertise:
      return "advertise";
    case SecurePhase::kShareKeys:
      return "share_keys";
    case SecurePhase::kMaskedInput:
      return "masked_input";
    case SecurePhase::kUnmask:
      return "unmask";
    case SecurePhase::kDone:
      return "done";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<SecureRound>> SecureRound::Create(
    std::vector<std::string> devices, int64_t length, uint64_t round,
    uint64_t graph_seed, const SecureOptions& options, absl::Time now,
    double noise_multiplier) {
  if (absl::Status s = ValidateSecureOptions(options); !s.ok()) return s;
  if (!(noise_multiplier >= 0) || !std::isfinite(noise_multiplier)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "secure aggregation: noise multiplier ", noise_multiplier));
  }
  const int64_t n = static_cast<int64_t>(devices.size());
  if (Numbered(devices).size() != devices.size()) {
    return absl::InvalidArgumentError(
        "secure aggregation: a device is listed twice");
  }
  secagg::Parameters p;
  p.devices = n;
  if (n >= 2) {
    p.neighbours = secagg::NeighboursFor(n, options.dropout, options.failure);
  }
  p.threshold = p.neighbours / 2 + 1;
  p.length = length;
  p.round = round;
  p.graph_seed = graph_seed;
  if (absl::Status s = secagg::ValidateParameters(p); !s.ok()) return s;
  double noise_stddev = 0;
  int64_t min_survivors = 0;
  if (noise_multiplier > 0) {
    min_survivors = std::max<int64_t>(
        2, static_cast<int64_t>(
               std::ceil((1 - options.dropout) * static_cast<double>(n))));
    noise_stddev = noise_multiplier * options.clip_norm /
                   std::sqrt(static_cast<double>(min_survivors));
  }
  return std::unique_ptr<SecureRound>(new SecureRound(
      std::move(devices), p, options, now, noise_stddev, min_survivors));
}

SecureRound::SecureRound(std::vector<std::string> devices,
                         const secagg::Parameters& parameters,
                         const SecureOptions& options, absl::Time now,
                         double noise_stddev, int64_t min_survivors)
    : devices_(std::move(devices)),
      index_(Numbered(devices_)),
      parameters_(parameters),
      options_(options),
      noise_stddev_(noise_stddev),
      min_survivors_(min_survivors),
      protocol_(parameters),
      phase_opened_(now) {
  record_.devices = parameters.devices;
  record_.neighbours = parameters.neighbours;
  record_.threshold = parameters.threshold;
  record_.length = parameters.length;
}

absl::Status SecureRound::Starved() const {
  return absl::FailedPreconditionError(absl::StrCat(
      "secure aggregation: ", masked_.size(),
      " masked vector(s) arrived, fewer than the ", min_survivors_,
      " the devices' differential-privacy noise is calibrated for; the round "
      "is not unmasked and is retried"));
}

absl::StatusOr<int64_t> SecureRound::Index(const std::string& device) const {
  auto it = index_.find(device);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "device ", device, " is not in this round's secure aggregation"));
  }
  return it->second;
}

SecurePhase SecureRound::phase() const {
  absl::MutexLock lock(&mu_);
  return phase_;
}

absl::StatusOr<int64_t> SecureRound::Acting(const std::string& device,
                                            SecurePhase phase) const {
  absl::StatusOr<int64_t> i = Index(device);
  if (!i.ok()) return i.status();
  if (excluded_.count(*i) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device,
                     " was excluded from this round's secure "
                     "aggregation: ",
                     record_.excluded.at(device)));
  }
  if (phase_ != phase) {
    return absl::FailedPreconditionError(
        absl::StrCat("secure aggregation is in phase ", SecurePhaseName(phase_),
                     ", not ", SecurePhaseName(phase)));
  }
  return i;
}

absl::Status SecureRound::Exclude(int64_t index, absl::Status status) {
  excluded_.insert(index);
  record_.excluded[devices_[index]] = std::string(status.message());
  return status;
}

absl::Status SecureRound::Advertise(const std::string& device,
                                    const secagg::Advertisement& a) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Acting(device, SecurePhase::kAdvertise);
  if (!i.ok()) return i.status();
  if (a.device != *i) {
    return Exclude(*i, absl::InvalidArgumentError(absl::StrCat(
                           "device ", device, " advertised as number ",
                           a.device, "; it is ", *i)));
  }
  const std::string fingerprint =
      absl::StrCat(a.seal_public, a.mask_public, a.seed_digest);
  if (advertised_.count(*i) > 0 && retries_[*i] == fingerprint) {
    return absl::OkStatus();  // A retry of the message that was taken.
  }
  if (absl::Status s = protocol_.AddAdvertisement(a); !s.ok()) {
    return Exclude(*i, s);
  }
  retries_[*i] = fingerprint;
  advertised_.insert(*i);
  record_.bytes_up += MessageBytes(a);
  return absl::OkStatus();
}

absl::Status SecureRound::ShareKeys(
    const std::string& device,
    const std::vector<secagg::SealedShares>& shares) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Acting(device, SecurePhase::kShareKeys);
  if (!i.ok()) return i.status();
  if (advertised_.count(*i) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device, " did not advertise keys in time this round"));
  }
  std::string fingerprint;
  for (const auto& share : shares) {
    absl::StrAppend(&fingerprint, share.to, ":", share.sealed);
  }
  if (shared_.count(*i) > 0 && retries_[*i] == fingerprint) {
    return absl::OkStatus();
  }
  if (absl::Status s = protocol_.AddShares(*i, shares); !s.ok()) {
    return Exclude(*i, s);
  }
  retries_[*i] = fingerprint;
  shared_.insert(*i);
  record_.bytes_up += MessageBytes(shares);
  return absl::OkStatus();
}

absl::Status SecureRound::MaskedInput(const std::string& device,
                                      std::vector<uint32_t> masked) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Acting(device, SecurePhase::kMaskedInput);
  if (!i.ok()) return i.status();
  if (shared_.count(*i) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device, " did not share its keys in time this round"));
  }
  if (absl::Status s = protocol_.AddMaskedInput(*i, std::move(masked));
      !s.ok()) {
    return Exclude(*i, s);
  }
  masked_.insert(*i);
  return absl::OkStatus();
}

absl::Status SecureRound::Unmask(const std::string& device,
                                 const secagg::UnmaskShares& shares) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Acting(device, SecurePhase::kUnmask);
  if (!i.ok()) return i.status();
  if (shares.from != *i) {
    return Exclude(*i, absl::InvalidArgumentError(absl::StrCat(
                           "device ", device, " sent unmasking shares as ",
                           shares.from, "; it is ", *i)));
  }
  if (absl::Status s = protocol_.AddUnmaskShares(shares); !s.ok()) {
    return Exclude(*i, s);
  }
  unmasked_.insert(*i);
  record_.bytes_up += MessageBytes(shares);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<secagg::Advertisement>> SecureRound::Advertisements(
    const std::string& device) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Index(device);
  if (!i.ok()) return i.status();
  if (phase_ == SecurePhase::kAdvertise) {
    return absl::UnavailableError("the neighbours are still advertising");
  }
  std::vector<secagg::Advertisement> out = protocol_.AdvertisementsFor(*i);
  for (const auto& a : out) record_.bytes_down += MessageBytes(a);
  return out;
}

absl::StatusOr<std::vector<secagg::SealedShares>> SecureRound::Shares(
    const std::string& device) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Index(device);
  if (!i.ok()) return i.status();
  if (phase_ == SecurePhase::kAdvertise || phase_ == SecurePhase::kShareKeys) {
    return absl::UnavailableError("the neighbours are still sharing keys");
  }
  std::vector<secagg::SealedShares> out = protocol_.SharesFor(*i);
  record_.bytes_down += MessageBytes(out);
  return out;
}

absl::StatusOr<std::set<int64_t>> SecureRound::Survivors(
    const std::string& device) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<int64_t> i = Index(device);
  if (!i.ok()) return i.status();
  if (phase_ != SecurePhase::kUnmask && phase_ != SecurePhase::kDone) {
    return absl::UnavailableError("the round is still collecting updates");
  }
  if (starved_) return Starved();
  record_.bytes_down += MessageBytes(masked_);
  return masked_;
}

bool SecureRound::Answered(const std::string& device, SecurePhase phase) const {
  absl::StatusOr<int64_t> i = Index(device);
  if (!i.ok()) return false;
  absl::MutexLock lock(&mu_);
  switch (phase) {
    case SecurePhase::kAdvertise:
      return advertised_.count(*i) > 0;
    case SecurePhase::kShareKeys:
      return shared_.count(*i) > 0;
    case SecurePhase::kMaskedInput:
      return masked_.count(*i) > 0;
    case SecurePhase::kUnmask:
      return unmasked_.count(*i) > 0;
    case SecurePhase::kDone:
      return true;
  }
  return false;
}

int64_t SecureRound::Waiting() const {
  // Who the phase waits for, and who has answered it.
  std::set<int64_t> all;
  for (int64_t i = 0; i < parameters_.devices; ++i) all.insert(i);
  const std::set<int64_t>* from = nullptr;
  const std::set<int64_t>* answered = nullptr;
  switch (phase_) {
    case SecurePhase::kAdvertise:
      from = &all, answered = &advertised_;
      break;
    case SecurePhase::kShareKeys:
      from = &advertised_, answered = &shared_;
      break;
    case SecurePhase::kUnmask:
      from = &masked_, answered = &unmasked_;
      break;
    default:
      return 0;
  }
  int64_t n = 0;
  for (int64_t i : *from) {
    if (answered->count(i) == 0 && excluded_.count(i) == 0) ++n;
  }
  return n;
}

bool SecureRound::Advance(absl::Time now, bool collected) {
  absl::MutexLock lock(&mu_);
  const bool timed_out = now >= phase_opened_ + options_.phase_timeout;
  const double open_s = absl::ToDoubleSeconds(now - phase_opened_);
  switch (phase_) {
    case SecurePhase::kAdvertise:
      if (Waiting() > 0 && !timed_out) return false;
      record_.advertise_s = open_s;
      phase_ = SecurePhase::kShareKeys;
      break;
    case SecurePhase::kShareKeys:
      if (Waiting() > 0 && !timed_out) return false;
      record_.share_keys_s = open_s;
      phase_ = SecurePhase::kMaskedInput;
      break;
    case SecurePhase::kMaskedInput:
      if (!collected) return false;
      record_.masked = static_cast<int64_t>(masked_.size());
      starved_ = record_.masked < min_survivors_;
      // Too few for the noise: nothing is unmasked.
      phase_ = starved_ ? SecurePhase::kDone : SecurePhase::kUnmask;
      break;
    case SecurePhase::kUnmask:
      if (Waiting() > 0 && !timed_out) return false;
      record_.unmask_s = open_s;
      record_.unmasked = static_cast<int64_t>(unmasked_.size());
      phase_ = SecurePhase::kDone;
      break;
    case SecurePhase::kDone:
      return false;
  }
  phase_opened_ = now;
  return true;
}

std::set<std::string> SecureRound::Lost() const {
  absl::MutexLock lock(&mu_);
  std::set<std::string> lost;
  const bool past_advertise = phase_ != SecurePhase::kAdvertise;
  const bool past_sharing = past_advertise && phase_ != SecurePhase::kShareKeys;
  for (int64_t i = 0; i < parameters_.devices; ++i) {
    const bool missed = (past_advertise && advertised_.count(i) == 0) ||
                        (past_sharing && shared_.count(i) == 0);
    if (missed || (excluded_.count(i) > 0 && masked_.count(i) == 0)) {
      lost.insert(devices_[i]);
    }
  }
  return lost;
}

absl::StatusOr<std::vector<uint32_t>> SecureRound::Sum() {
  absl::MutexLock lock(&mu_);
  if (phase_ != SecurePhase::kDone) {
    return absl::FailedPreconditionError(absl::StrCat(
        "secure aggregation: the sum is read after unmasking, not in phase ",
        SecurePhaseName(phase_)));
  }
  if (summed_) {
    return absl::FailedPreconditionError("secure aggregation: summed twice");
  }
  if (starved_) return Starved();
  summed_ = true;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<uint32_t>> sum = protocol_.Sum();
  record_.sum_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  for (int64_t i : protocol_.faulty()) {
    Exclude(i, absl::InvalidArgumentError(
                   "sent unmasking shares that do not rebuild the secret"))
        .IgnoreError();
  }
  return sum;
}

SecureRecord SecureRound::record() const {
  absl::MutexLock lock(&mu_);
  return record_;
}

}  // namespace fedge::coordinator
