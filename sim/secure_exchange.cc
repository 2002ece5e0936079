#include "sim/secure_exchange.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

#include "coordinator/secure_round.h"
#include "sim/compute_costs.h"

namespace fedge::sim {
namespace {

namespace fc = coordinator;

// A message of `bytes` up or down the party's link: one round trip.
absl::Duration Up(const SecureParty& p, int64_t bytes) {
  return p.link.rtt + absl::Seconds(static_cast<double>(bytes) /
                                    p.link.uplink_bytes_per_s());
}
absl::Duration Down(const SecureParty& p, int64_t bytes) {
  return p.link.rtt + absl::Seconds(static_cast<double>(bytes) /
                                    p.link.downlink_bytes_per_s());
}

// Runs `work` on this thread and charges its CPU to the party.
template <typename Work>
auto Charged(SecureParty& p, absl::Duration& took, Work work) {
  const double start = ThreadCpuSeconds();
  auto result = work();
  const double seconds = (ThreadCpuSeconds() - start) / p.speed;
  p.work_s += seconds;
  took = absl::Seconds(seconds);
  return result;
}

absl::StatusOr<fc::SecureReply> Step(fc::Engine& engine, const SecureParty& p,
                                     fc::SecureRequest request,
                                     absl::Time now) {
  request.device_id = p.device_id;
  request.round = p.task.round;
  request.nonce = p.task.nonce;
  absl::StatusOr<fc::SecureReply> reply = engine.Secure(request, now);
  if (!reply.ok()) {
    return absl::Status(reply.status().code(),
                        absl::StrCat("secure aggregation, ", p.device_id, ": ",
                                     reply.status().message()));
  }
  return reply;
}

// Posts each party's message at its time, in the order they arrive, then
// ticks the engine at the last: the phase closes there.
absl::StatusOr<absl::Time> Post(
    fc::Engine& engine, std::vector<std::pair<absl::Time, size_t>> arrivals,
    std::vector<fc::SecureRequest>& requests,
    const std::vector<SecureParty*>& parties) {
  std::sort(arrivals.begin(), arrivals.end());
  absl::Time last = arrivals.empty() ? absl::UnixEpoch() : arrivals[0].first;
  for (const auto& [at, i] : arrivals) {
    absl::StatusOr<fc::SecureReply> r =
        Step(engine, *parties[i], std::move(requests[i]), at);
    if (!r.ok()) return r.status();
    last = std::max(last, at);
  }
  if (absl::Status s = engine.Tick(last); !s.ok()) return s;
  return last;
}

}  // namespace

absl::Status ExchangeKeys(fc::Engine& engine, std::vector<SecureParty>& parties,
                          absl::Time start, absl::Time not_before) {
  std::vector<SecureParty*> all;
  for (SecureParty& p : parties) all.push_back(&p);
  std::vector<fc::SecureRequest> requests(parties.size());
  std::vector<std::pair<absl::Time, size_t>> arrivals;
  for (size_t i = 0; i < parties.size(); ++i) {
    SecureParty& p = parties[i];
    const fc::SecureTask& task = *p.task.secure;
    absl::Duration took;
    absl::StatusOr<secagg::Advertisement> ad = Charged(p, took, [&] {
      p.protocol =
          std::make_unique<secagg::Device>(task.parameters, task.index);
      return p.protocol->Advertise();
    });
    if (!ad.ok()) return ad.status();
    p.bytes_up += fc::MessageBytes(*ad);
    arrivals.emplace_back(
        std::max(start + took + Up(p, fc::MessageBytes(*ad)), not_before), i);
    requests[i].advertise = *std::move(ad);
  }
  absl::StatusOr<absl::Time> advertised =
      Post(engine, std::move(arrivals), requests, all);
  if (!advertised.ok()) return advertised.status();

  requests.assign(parties.size(), {});
  arrivals.clear();
  for (size_t i = 0; i < parties.size(); ++i) {
    SecureParty& p = parties[i];
    absl::StatusOr<fc::SecureReply> keys = Step(engine, p, {}, *advertised);
    if (!keys.ok()) return keys.status();
    int64_t down = 0;
    for (const auto& a : keys->advertisements) down += fc::MessageBytes(a);
    p.bytes_down += down;
    absl::Duration took;
    absl::StatusOr<std::vector<secagg::SealedShares>> shares = Charged(
        p, took, [&] { return p.protocol->ShareKeys(keys->advertisements); });
    if (!shares.ok()) return shares.status();
    p.bytes_up += fc::MessageBytes(*shares);
    arrivals.emplace_back(
        *advertised + Down(p, down) + took + Up(p, fc::MessageBytes(*shares)),
        i);
    requests[i].shares = *std::move(shares);
  }
  absl::StatusOr<absl::Time> shared =
      Post(engine, std::move(arrivals), requests, all);
  if (!shared.ok()) return shared.status();

  for (SecureParty& p : parties) {
    absl::StatusOr<fc::SecureReply> inbox = Step(engine, p, {}, *shared);
    if (!inbox.ok()) return inbox.status();
    if (inbox->phase != fc::SecurePhase::kMaskedInput) {
      return absl::InternalError(absl::StrCat(
          "secure aggregation: every device shared its keys, yet the round "
          "is in phase ",
          fc::SecurePhaseName(inbox->phase)));
    }
    const int64_t down = fc::MessageBytes(inbox->shares);
    p.bytes_down += down;
    p.inbox = std::move(inbox->shares);
    p.inbox_at = *shared + Down(p, down);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> MaskChange(
    SecureParty& party, const std::vector<float>& change) {
  const fc::SecureTask& task = *party.task.secure;
  absl::Duration took;
  return Charged(party, took, [&] {
    return secagg::MaskChange(
        *party.protocol,
        secagg::RingCodec(task.parameters.devices, task.clip_norm,
                          task.noise_stddev),
        change, party.inbox);
  });
}

absl::StatusOr<absl::Time> Unmask(fc::Engine& engine,
                                  const std::vector<SecureParty*>& survivors,
                                  absl::Time start) {
  if (survivors.empty()) {
    return absl::InternalError(
        "secure aggregation: unmasking without survivors");
  }
  std::vector<fc::SecureRequest> requests(survivors.size());
  std::vector<std::pair<absl::Time, size_t>> arrivals;
  for (size_t i = 0; i < survivors.size(); ++i) {
    SecureParty& p = *survivors[i];
    absl::StatusOr<fc::SecureReply> reply = Step(engine, p, {}, start);
    if (!reply.ok()) return reply.status();
    if (reply->phase != fc::SecurePhase::kUnmask) {
      return absl::InternalError(
          absl::StrCat("secure aggregation: unmasking, yet the round is in "
                       "phase ",
                       fc::SecurePhaseName(reply->phase)));
    }
    const int64_t down = fc::MessageBytes(reply->survivors);
    p.bytes_down += down;
    absl::Duration took;
    absl::StatusOr<secagg::UnmaskShares> shares =
        Charged(p, took, [&] { return p.protocol->Unmask(reply->survivors); });
    if (!shares.ok()) return shares.status();
    p.bytes_up += fc::MessageBytes(*shares);
    arrivals.emplace_back(
        start + Down(p, down) + took + Up(p, fc::MessageBytes(*shares)), i);
    requests[i].unmask = *std::move(shares);
  }
  return Post(engine, std::move(arrivals), requests, survivors);
}

}  // namespace fedge::sim
