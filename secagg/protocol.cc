#include "secagg/protocol.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"

namespace fedge::secagg {
namespace {

std::string Context(const Parameters& p, absl::string_view what) {
  return absl::StrCat("fedge-secagg/", p.round, "/", what);
}

// The associated data of a sealed share: who, to whom, which round.
std::string Route(const Parameters& p, int64_t from, int64_t to) {
  return absl::StrCat(Context(p, "share"), "/", from, "/", to);
}

absl::Status CheckKey(absl::string_view what, int64_t device,
                      absl::string_view key) {
  if (key.size() == kKeyBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("device ", device, ": ", what,
                                                 " is ", key.size(), " bytes"));
}

// y += sign * PRG(seed), over Z_2^32.
absl::Status AddMask(std::vector<uint32_t>& y, absl::string_view seed,
                     bool add) {
  return AddKeystream(seed, add, absl::MakeSpan(y));
}

}  // namespace

absl::Status ValidateParameters(const Parameters& p) {
  const auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation: ", what));
  };
  if (p.devices < 2) return bad("needs at least 2 devices");
  const bool full = p.neighbours == p.devices - 1;
  if (!full && (p.neighbours < 2 || p.neighbours % 2 != 0 ||
                p.neighbours >= p.devices)) {
    return bad(absl::StrCat("neighbours (", p.neighbours,
                            ") must be even and below the devices (", p.devices,
                            "), or devices - 1"));
  }
  if (p.neighbours > kMaxShares) {
    return bad(absl::StrCat("at most ", kMaxShares, " neighbours"));
  }
  if (!(2 * p.threshold > p.neighbours && p.threshold <= p.neighbours)) {
    return bad(absl::StrCat("threshold (", p.threshold,
                            ") must be above half the neighbours (",
                            p.neighbours, ") and at most all of them"));
  }
  if (p.length < 1) return bad("vectors need at least one word");
  return absl::OkStatus();
}

int NeighboursFor(int64_t devices, double dropout, double failure) {
  const int most = static_cast<int>(
      std::min<int64_t>(devices - 1, kMaxShares - (kMaxShares % 2)));
  for (int k = 2; k < most; k += 2) {
    // P(fewer than k / 2 + 1 of k neighbours answer), answering with
    // probability 1 - dropout each.
    const int t = k / 2 + 1;
    double tail = 0;
    for (int a = 0; a < t; ++a) {
      tail += std::exp(std::lgamma(k + 1.0) - std::lgamma(a + 1.0) -
                       std::lgamma(k - a + 1.0) + a * std::log1p(-dropout) +
                       (k - a) * std::log(dropout));
    }
    if (static_cast<double>(devices) * tail < failure) return k;
  }
  return most;
}

std::vector<std::vector<int64_t>> NeighbourGraph(int64_t devices,
                                                 int neighbours,
                                                 uint64_t seed) {
  std::vector<std::vector<int64_t>> graph(devices);
  if (neighbours >= devices - 1) {
    for (int64_t i = 0; i < devices; ++i) {
      for (int64_t j = 0; j < devices; ++j) {
        if (j != i) graph[i].push_back(j);
      }
    }
    return graph;
  }
  // A ring (Harary graph) over a permutation drawn from the public seed:
  // each device is joined to the neighbours / 2 before and after it.
  std::vector<int64_t> ring(devices);
  std::iota(ring.begin(), ring.end(), 0);
  std::mt19937_64 rng(seed);
  for (int64_t i = devices - 1; i > 0; --i) {
    std::swap(ring[i], ring[rng() % static_cast<uint64_t>(i + 1)]);
  }
  for (int64_t k = 0; k < devices; ++k) {
    for (int d = 1; d <= neighbours / 2; ++d) {
      const int64_t a = ring[k], b = ring[(k + d) % devices];
      graph[a].push_back(b);
      graph[b].push_back(a);
    }
  }
  for (auto& list : graph) std::sort(list.begin(), list.end());
  return graph;
}

Device::Device(const Parameters& parameters, int64_t id)
    : parameters_(parameters), id_(id) {
  const auto graph = NeighbourGraph(parameters.devices, parameters.neighbours,
                                    parameters.graph_seed);
  if (id >= 0 && id < parameters.devices) {
    neighbours_.insert(graph[id].begin(), graph[id].end());
  }
}

absl::StatusOr<Advertisement> Device::Advertise() {
  if (absl::Status s = ValidateParameters(parameters_); !s.ok()) return s;
  if (neighbours_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", id_, " is not in the round"));
  }
  absl::StatusOr<KeyPair> seal = GenerateKeyPair();
  absl::StatusOr<KeyPair> mask = GenerateKeyPair();
  absl::StatusOr<std::string> seed = RandomBytes(kKeyBytes);
  if (!seal.ok()) return seal.status();
  if (!mask.ok()) return mask.status();
  if (!seed.ok()) return seed.status();
  seal_ = *seal;
  mask_ = *mask;
  self_seed_ = *seed;
  return Advertisement{id_, seal_.public_key, mask_.public_key,
                       Sha256(self_seed_)};
}

absl::StatusOr<std::vector<SealedShares>> Device::ShareKeys(
    const std::vector<Advertisement>& advertised) {
  for (const Advertisement& a : advertised) {
    if (neighbours_.count(a.device) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", id_, ": relayed keys of ", a.device, ", not a neighbour"));
    }
    if (absl::Status s = CheckKey("seal key", a.device, a.seal_public);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckKey("mask key", a.device, a.mask_public);
        !s.ok()) {
      return s;
    }
    peers_[a.device] = a;
  }
  if (static_cast<int>(peers_.size()) < parameters_.threshold) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", id_, ": ", peers_.size(), " neighbours advertised, ",
        parameters_.threshold, " needed"));
  }
  const int count = static_cast<int>(neighbours_.size());
  absl::StatusOr<std::vector<Share>> seed_shares =
      SplitSecret(self_seed_, parameters_.threshold, count);
  absl::StatusOr<std::vector<Share>> key_shares =
      SplitSecret(mask_.private_key, parameters_.threshold, count);
  if (!seed_shares.ok()) return seed_shares.status();
  if (!key_shares.ok()) return key_shares.status();
  std::vector<SealedShares> out;
  int index = 0;  // A neighbour's share is its rank among the neighbours.
  for (int64_t j : neighbours_) {
    const int k = index++;
    auto peer = peers_.find(j);
    if (peer == peers_.end()) continue;
    absl::StatusOr<std::string> key =
        AgreeKey(seal_.private_key, peer->second.seal_public,
                 Context(parameters_, "seal"));
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", id_, ": neighbour ", j,
                       "'s seal key: ", key.status().message()));
    }
    std::string plain(1, static_cast<char>((*seed_shares)[k].x));
    plain += (*seed_shares)[k].y;
    plain += (*key_shares)[k].y;
    absl::StatusOr<std::string> sealed =
        Seal(*key, plain, Route(parameters_, id_, j));
    if (!sealed.ok()) return sealed.status();
    out.push_back({id_, j, *std::move(sealed)});
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> Device::MaskInput(
    const std::vector<uint32_t>& input,
    const std::vector<SealedShares>& received) {
  if (static_cast<int64_t>(input.size()) != parameters_.length) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", id_, ": input of ", input.size(),
                     " words; the round sums ", parameters_.length));
  }
  for (const SealedShares& s : received) {
    auto peer = peers_.find(s.from);
    if (s.to != id_ || peer == peers_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", id_, ": shares from ", s.from, " to ", s.to,
                       " are not for it from a neighbour"));
    }
    absl::StatusOr<std::string> key =
        AgreeKey(seal_.private_key, peer->second.seal_public,
                 Context(parameters_, "seal"));
    if (!key.ok()) return key.status();
    absl::StatusOr<std::string> plain =
        Open(*key, s.sealed, Route(parameters_, s.from, id_));
    if (!plain.ok() || plain->size() != 1 + 2 * kKeyBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", id_, ": the shares from ", s.from, " do not open"));
    }
    const auto x = static_cast<uint8_t>((*plain)[0]);
    held_[s.from] = {Share{x, plain->substr(1, kKeyBytes)},
                     Share{x, plain->substr(1 + kKeyBytes)}};
    sharers_.insert(s.from);
  }
  if (static_cast<int>(sharers_.size()) < parameters_.threshold) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", id_, ": ", sharers_.size(),
                     " neighbours shared, ", parameters_.threshold, " needed"));
  }
  std::vector<uint32_t> y = input;
  if (absl::Status s = AddMask(y, self_seed_, true); !s.ok()) return s;
  for (int64_t j : sharers_) {
    absl::StatusOr<std::string> pair =
        AgreeKey(mask_.private_key, peers_.at(j).mask_public,
                 Context(parameters_, "mask"));
    if (!pair.ok()) return pair.status();
    if (absl::Status s = AddMask(y, *pair, id_ < j); !s.ok()) return s;
  }
  return y;
}

absl::StatusOr<UnmaskShares> Device::Unmask(const std::set<int64_t>& survived) {
  if (unmasked_) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", id_, " already answered the unmasking"));
  }
  int alive = 0;
  for (int64_t j : sharers_) alive += survived.count(j) > 0 ? 1 : 0;
  // Fewer survivors than the threshold among its neighbours: the key shares
  // it would hand over, with the seeds', could unmask a survivor. Refuse.
  if (alive + 1 < parameters_.threshold) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", id_, ": only ", alive, " neighbours survived"));
  }
  unmasked_ = true;
  UnmaskShares out;
  out.from = id_;
  for (int64_t j : sharers_) {
    const auto& [seed, key] = held_.at(j);
    if (survived.count(j) > 0) {
      out.seed_shares[j] = seed;
    } else {
      out.key_shares[j] = key;
    }
  }
  return out;
}

Coordinator::Coordinator(const Parameters& parameters)
    : parameters_(parameters),
      graph_(NeighbourGraph(parameters.devices, parameters.neighbours,
                            parameters.graph_seed)) {}

absl::Status Coordinator::AddAdvertisement(const Advertisement& a) {
  if (a.device < 0 || a.device >= parameters_.devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("advertisement from unknown device ", a.device));
  }
  if (advertised_.count(a.device) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", a.device, " advertised twice (a replay?)"));
  }
  if (absl::Status s = CheckKey("seal key", a.device, a.seal_public); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckKey("mask key", a.device, a.mask_public); !s.ok()) {
    return s;
  }
  if (a.seed_digest.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", a.device, ": seed digest is not SHA-256"));
  }
  advertised_[a.device] = a;
  return absl::OkStatus();
}

std::vector<Advertisement> Coordinator::AdvertisementsFor(
    int64_t device) const {
  std::vector<Advertisement> out;
  if (device < 0 || device >= parameters_.devices) return out;
  for (int64_t j : graph_[device]) {
    if (auto a = advertised_.find(j); a != advertised_.end()) {
      out.push_back(a->second);
    }
  }
  return out;
}

absl::Status Coordinator::AddShares(int64_t from,
                                    const std::vector<SealedShares>& shares) {
  if (advertised_.count(from) == 0 || shared_.count(from) > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shares from device ", from,
        shared_.count(from) > 0 ? ", which already shared" : ", unadvertised"));
  }
  std::set<int64_t> to;
  for (const SealedShares& s : shares) {
    if (s.from != from ||
        !std::binary_search(graph_[from].begin(), graph_[from].end(), s.to) ||
        !to.insert(s.to).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", from, " sent shares to ", s.to,
                       ": not a neighbour, twice, or in another's name"));
    }
  }
  for (const SealedShares& s : shares) inbox_[s.to].push_back(s);
  shared_.insert(from);
  return absl::OkStatus();
}

std::vector<SealedShares> Coordinator::SharesFor(int64_t device) const {
  auto it = inbox_.find(device);
  return it == inbox_.end() ? std::vector<SealedShares>() : it->second;
}

absl::Status Coordinator::AddMaskedInput(int64_t from,
                                         std::vector<uint32_t> masked) {
  if (shared_.count(from) == 0 || masked_.count(from) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("masked input from device ", from,
                     masked_.count(from) > 0 ? ", which already sent one"
                                             : ", which did not share"));
  }
  if (static_cast<int64_t>(masked.size()) != parameters_.length) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", from, ": masked input of ", masked.size(),
                     " words; the round sums ", parameters_.length));
  }
  if (masked_sum_.empty()) masked_sum_.assign(masked.size(), 0);
  for (size_t k = 0; k < masked.size(); ++k) masked_sum_[k] += masked[k];
  masked_.insert(from);
  return absl::OkStatus();
}

std::set<int64_t> Coordinator::Survivors() const { return masked_; }

absl::Status Coordinator::AddUnmaskShares(const UnmaskShares& shares) {
  const int64_t from = shares.from;
  if (masked_.count(from) == 0 || unmasked_.count(from) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unmasking shares from device ", from,
                     ": not a survivor, or a second answer"));
  }
  const auto neighbour = [&](int64_t j) {
    return std::binary_search(graph_[from].begin(), graph_[from].end(), j);
  };
  for (const auto& [j, share] : shares.seed_shares) {
    if (!neighbour(j) || masked_.count(j) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", from, " sent a seed share of ", j,
                       ", not a surviving neighbour"));
    }
  }
  for (const auto& [j, share] : shares.key_shares) {
    if (!neighbour(j) || masked_.count(j) > 0 || shared_.count(j) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", from, " sent a key share of ", j,
                       ", not a neighbour that dropped after sharing"));
    }
  }
  for (const auto& [j, share] : shares.seed_shares) {
    seed_shares_[j].emplace_back(from, share);
  }
  for (const auto& [j, share] : shares.key_shares) {
    key_shares_[j].emplace_back(from, share);
  }
  unmasked_.insert(from);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> Coordinator::Sum() {
  const int t = parameters_.threshold;
  // A secret from the first t shares; if `valid` refuses it, from t shares
  // leaving each share out in turn, naming the one whose absence fixes it.
  const auto rebuild = [&](const std::vector<std::pair<int64_t, Share>>& held,
                           const std::function<bool(const std::string&)>& valid)
      -> std::optional<std::string> {
    for (int out = -1; out < static_cast<int>(held.size()); ++out) {
      std::vector<Share> shares;
      for (int k = 0; k < static_cast<int>(held.size()) &&
                      static_cast<int>(shares.size()) < t;
           ++k) {
        if (k != out) shares.push_back(held[k].second);
      }
      if (static_cast<int>(shares.size()) < t) break;
      absl::StatusOr<std::string> secret = CombineShares(shares, t);
      if (secret.ok() && valid(*secret)) {
        if (out >= 0) faulty_.insert(held[out].first);
        return *secret;
      }
      // Leaving out a share past the first t changes nothing.
      if (out >= t - 1) break;
    }
    return std::nullopt;
  };
  std::vector<uint32_t> sum = masked_sum_;
  sum.resize(parameters_.length, 0);
  for (int64_t id : masked_) {
    auto shares = seed_shares_.find(id);
    if (shares == seed_shares_.end() ||
        static_cast<int>(shares->second.size()) < t) {
      return absl::FailedPreconditionError(absl::StrCat(
          "survivor ", id, "'s self mask has ",
          shares == seed_shares_.end() ? 0 : shares->second.size(), " shares; ",
          t, " needed (too many dropped: retry the round)"));
    }
    const std::string& digest = advertised_.at(id).seed_digest;
    const std::optional<std::string> seed =
        rebuild(shares->second,
                [&](const std::string& s) { return Sha256(s) == digest; });
    if (!seed) {
      return absl::InvalidArgumentError(
          absl::StrCat("survivor ", id,
                       "'s self-mask seed does not rebuild from its "
                       "shares (more than one malformed share)"));
    }
    if (absl::Status s = AddMask(sum, *seed, false); !s.ok()) return s;
  }
  for (int64_t dropped : shared_) {
    if (masked_.count(dropped) > 0) continue;
    auto shares = key_shares_.find(dropped);
    if (shares == key_shares_.end() ||
        static_cast<int>(shares->second.size()) < t) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dropped device ", dropped, "'s masking key has too few shares; ", t,
          " needed (retry the round)"));
    }
    const std::string& mask_public = advertised_.at(dropped).mask_public;
    const std::optional<std::string> key =
        rebuild(shares->second, [&](const std::string& k) {
          absl::StatusOr<std::string> public_key = PublicKeyOf(k);
          return public_key.ok() && *public_key == mask_public;
        });
    if (!key) {
      return absl::InvalidArgumentError(
          absl::StrCat("dropped device ", dropped,
                       "'s masking key does not rebuild from "
                       "its shares (more than one malformed share)"));
    }
    // Survivors that held its shares added +-PRG(s_j,dropped): take it out.
    for (int64_t j : graph_[dropped]) {
      if (masked_.count(j) == 0) continue;
      auto inbox = inbox_.find(j);
      if (inbox == inbox_.end() ||
          std::none_of(
              inbox->second.begin(), inbox->second.end(),
              [&](const SealedShares& s) { return s.from == dropped; })) {
        continue;
      }
      absl::StatusOr<std::string> pair = AgreeKey(
          *key, advertised_.at(j).mask_public, Context(parameters_, "mask"));
      if (!pair.ok()) return pair.status();
      if (absl::Status s = AddMask(sum, *pair, !(j < dropped)); !s.ok()) {
        return s;
      }
    }
  }
  return sum;
}

RingCodec::RingCodec(int64_t devices, double clip, double noise_stddev)
    : clip(clip),
      noise_stddev(noise_stddev),
      scale(std::floor(
          2147483647.0 /
          (static_cast<double>(devices) * clip +
           10 * noise_stddev * std::sqrt(static_cast<double>(devices))))) {}

std::vector<uint32_t> RingCodec::Encode(
    const std::vector<float>& values) const {
  std::vector<uint32_t> out(values.size());
  for (size_t k = 0; k < values.size(); ++k) {
    const double v = std::clamp<double>(values[k], -clip, clip);
    out[k] = static_cast<uint32_t>(
        static_cast<int32_t>(static_cast<int64_t>(std::trunc(v * scale))));
  }
  return out;
}

absl::Status RingCodec::AddNoise(std::vector<uint32_t>& words) const {
  if (noise_stddev == 0) return absl::OkStatus();
  absl::StatusOr<std::string> seed = RandomBytes(kKeyBytes);
  if (!seed.ok()) return seed.status();
  return AddGaussianNoise(*seed, noise_stddev * scale, absl::MakeSpan(words));
}

absl::StatusOr<std::vector<uint32_t>> MaskChange(
    Device& device, const RingCodec& ring, const std::vector<float>& change,
    const std::vector<SealedShares>& received) {
  std::vector<uint32_t> words = ring.Encode(change);
  if (absl::Status s = ring.AddNoise(words); !s.ok()) return s;
  return device.MaskInput(words, received);
}

std::vector<double> RingCodec::Decode(const std::vector<uint32_t>& sum) const {
  std::vector<double> out(sum.size());
  for (size_t k = 0; k < sum.size(); ++k) {
    out[k] = static_cast<int32_t>(sum[k]) / scale;
  }
  return out;
}

}  // namespace fedge::secagg
