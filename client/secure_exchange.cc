#include "client/secure_exchange.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedge::client {
namespace {

const char* PhaseName(v1::SecurePhase phase) {
  switch (phase) {
    case v1::SECURE_PHASE_ADVERTISE:
      return "advertise";
    case v1::SECURE_PHASE_SHARE_KEYS:
      return "share keys";
    case v1::SECURE_PHASE_MASKED_INPUT:
      return "masked input";
    case v1::SECURE_PHASE_UNMASK:
      return "unmask";
    case v1::SECURE_PHASE_DONE:
      return "done";
    default:
      return "unknown";
  }
}

// The phase a step needs, or FailedPrecondition: the round moved past it
// without this device.
absl::Status InPhase(const v1::SecureResponse& reply, v1::SecurePhase phase) {
  if (reply.phase() == phase) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("secure aggregation: the round is in phase ",
                   PhaseName(reply.phase()), ", this device needed ",
                   PhaseName(phase), " (it was too slow, or dropped)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SecureExchange>> SecureExchange::Create(
    const std::string& device_id, const v1::Task& task, Call call, Wait wait) {
  absl::StatusOr<transport::SecureSpec> spec =
      transport::SecureSpecFromProto(task.secure());
  if (!spec.ok()) return spec.status();
  return std::unique_ptr<SecureExchange>(new SecureExchange(
      device_id, task, *std::move(spec), std::move(call), std::move(wait)));
}

SecureExchange::SecureExchange(std::string device_id, const v1::Task& task,
                               transport::SecureSpec spec, Call call, Wait wait)
    : device_id_(std::move(device_id)),
      round_(task.round()),
      nonce_(task.nonce()),
      deadline_(task.deadline_unix_ms() > 0
                    ? absl::FromUnixMillis(task.deadline_unix_ms())
                    : absl::InfiniteFuture()),
      spec_(std::move(spec)),
      call_(std::move(call)),
      wait_(std::move(wait)),
      device_(spec_.parameters, spec_.index) {}

absl::StatusOr<v1::SecureResponse> SecureExchange::Send(
    v1::SecureRequest request) {
  request.set_device_id(device_id_);
  request.set_round(round_);
  request.set_nonce(nonce_);
  v1::SecureResponse reply;
  if (absl::Status s = call_(request, &reply); !s.ok()) return s;
  bytes_up_ += static_cast<int64_t>(request.ByteSizeLong());
  bytes_down_ += static_cast<int64_t>(reply.ByteSizeLong());
  return reply;
}

absl::StatusOr<v1::SecureResponse> SecureExchange::AwaitPhase(
    v1::SecurePhase phase) {
  const absl::Time start = absl::Now();
  absl::Duration pause = absl::Milliseconds(20);
  while (true) {
    absl::StatusOr<v1::SecureResponse> reply = Send({});
    if (!reply.ok() || reply->phase() >= phase) {
      wait_s_ += absl::ToDoubleSeconds(absl::Now() - start);
      return reply;
    }
    if (absl::Now() + pause > deadline_) {
      return absl::DeadlineExceededError(absl::StrCat(
          "secure aggregation: round ", round_,
          " reached its deadline in "
          "phase ",
          PhaseName(reply->phase()), " waiting for ", PhaseName(phase)));
    }
    if (!wait_(pause)) return absl::CancelledError("stopped");
    pause = std::min(pause * 3 / 2, absl::Milliseconds(500));
  }
}

absl::Status SecureExchange::ExchangeKeys() {
  absl::StatusOr<secagg::Advertisement> ad = device_.Advertise();
  if (!ad.ok()) return ad.status();
  v1::SecureRequest advertise;
  transport::AdvertisementToProto(*ad, advertise.mutable_advertise());
  if (absl::StatusOr<v1::SecureResponse> r = Send(std::move(advertise));
      !r.ok()) {
    return r.status();
  }
  absl::StatusOr<v1::SecureResponse> keys =
      AwaitPhase(v1::SECURE_PHASE_SHARE_KEYS);
  if (!keys.ok()) return keys.status();
  if (absl::Status s = InPhase(*keys, v1::SECURE_PHASE_SHARE_KEYS); !s.ok()) {
    return s;
  }
  std::vector<secagg::Advertisement> neighbours;
  for (const v1::SecAggAdvertisement& a : keys->advertisements()) {
    absl::StatusOr<secagg::Advertisement> n =
        transport::AdvertisementFromProto(a);
    if (!n.ok()) return n.status();
    neighbours.push_back(*std::move(n));
  }
  absl::StatusOr<std::vector<secagg::SealedShares>> sealed =
      device_.ShareKeys(neighbours);
  if (!sealed.ok()) return sealed.status();
  v1::SecureRequest share;
  transport::SharesToProto(*sealed, share.mutable_shares()->mutable_shares());
  if (absl::StatusOr<v1::SecureResponse> r = Send(std::move(share)); !r.ok()) {
    return r.status();
  }
  absl::StatusOr<v1::SecureResponse> inbox =
      AwaitPhase(v1::SECURE_PHASE_MASKED_INPUT);
  if (!inbox.ok()) return inbox.status();
  if (absl::Status s = InPhase(*inbox, v1::SECURE_PHASE_MASKED_INPUT);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<secagg::SealedShares>> received =
      transport::SharesFromProto(inbox->shares());
  if (!received.ok()) return received.status();
  inbox_ = *std::move(received);
  keyed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> SecureExchange::Mask(
    const std::vector<float>& change) {
  if (!keyed_) {
    return absl::FailedPreconditionError(
        "secure aggregation: masking before the key exchange");
  }
  return secagg::MaskChange(
      device_,
      secagg::RingCodec(spec_.parameters.devices, spec_.clip_norm,
                        spec_.noise_stddev),
      change, inbox_);
}

absl::Status SecureExchange::Unmask() {
  absl::StatusOr<v1::SecureResponse> reply =
      AwaitPhase(v1::SECURE_PHASE_UNMASK);
  if (!reply.ok()) return reply.status();
  // Past unmasking: the round did without this device's shares.
  if (reply->phase() != v1::SECURE_PHASE_UNMASK) return absl::OkStatus();
  const std::set<int64_t> survivors(reply->survivors().begin(),
                                    reply->survivors().end());
  // Fewer would unmask a sum with less noise than the device's share was
  // calibrated for: its shares stay home.
  if (static_cast<int64_t>(survivors.size()) < spec_.min_survivors) {
    return absl::FailedPreconditionError(absl::StrCat(
        "secure aggregation: the coordinator names ", survivors.size(),
        " survivors, fewer than the ", spec_.min_survivors,
        " this device's differential-privacy noise needs; no unmasking "
        "shares sent"));
  }
  absl::StatusOr<secagg::UnmaskShares> shares = device_.Unmask(survivors);
  if (!shares.ok()) return shares.status();
  v1::SecureRequest unmask;
  transport::UnmaskToProto(*shares, unmask.mutable_unmask());
  return Send(std::move(unmask)).status();
}

}  // namespace fedge::client
