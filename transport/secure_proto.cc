#include "transport/secure_proto.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"

namespace fedge::transport {
namespace {

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", what));
}

// A flat vector above this many words is refused before anything is
// allocated for it (a vector of 2^31 words is 8 GiB).
constexpr int64_t kMaxWords = int64_t{1} << 31;

using ShareMap = google::protobuf::Map<int64_t, v1::SecAggShare>;

// One map of an unmasking message (seed or key shares, by the device whose
// secret they rebuild), each way.
void SharesToMap(const std::map<int64_t, secagg::Share>& shares,
                 ShareMap* proto) {
  for (const auto& [device, share] : shares) {
    v1::SecAggShare& out = (*proto)[device];
    out.set_x(share.x);
    out.set_y(share.y);
  }
}
absl::Status SharesFromMap(const ShareMap& proto, int64_t from,
                           std::map<int64_t, secagg::Share>* shares) {
  for (const auto& [about, share] : proto) {
    if (share.x() < 1 || share.x() > secagg::kMaxShares || share.y().empty()) {
      return Bad(absl::StrCat("device ", from, "'s share of device ", about,
                              "'s secret has point ", share.x(), " and ",
                              share.y().size(), " bytes (1..255, non-empty)"));
    }
    (*shares)[about] =
        secagg::Share{static_cast<uint8_t>(share.x()), share.y()};
  }
  return absl::OkStatus();
}

}  // namespace

void SecureSpecToProto(const SecureSpec& spec, v1::SecureSpec* proto) {
  const secagg::Parameters& p = spec.parameters;
  proto->set_devices(p.devices);
  proto->set_neighbours(p.neighbours);
  proto->set_threshold(p.threshold);
  proto->set_length(p.length);
  proto->set_round(p.round);
  proto->set_graph_seed(p.graph_seed);
  proto->set_index(spec.index);
  proto->set_clip_norm(spec.clip_norm);
  proto->set_noise_stddev(spec.noise_stddev);
  proto->set_min_survivors(spec.min_survivors);
  for (const auto& [name, shape] : spec.layout) {
    v1::LayoutTensor* t = proto->add_layout();
    t->set_name(name);
    for (int64_t d : shape) t->add_shape(d);
  }
}

absl::StatusOr<SecureSpec> SecureSpecFromProto(const v1::SecureSpec& proto) {
  SecureSpec spec;
  secagg::Parameters& p = spec.parameters;
  p.devices = proto.devices();
  p.neighbours = proto.neighbours();
  p.threshold = proto.threshold();
  p.length = proto.length();
  p.round = proto.round();
  p.graph_seed = proto.graph_seed();
  if (absl::Status s = secagg::ValidateParameters(p); !s.ok()) return s;
  if (p.length > kMaxWords) {
    return Bad(absl::StrCat("a vector of ", p.length, " words is over the ",
                            kMaxWords, " fedge accepts"));
  }
  spec.index = proto.index();
  if (spec.index < 0 || spec.index >= p.devices) {
    return Bad(absl::StrCat("device index ", spec.index, " is outside 0..",
                            p.devices - 1));
  }
  spec.clip_norm = proto.clip_norm();
  if (!std::isfinite(spec.clip_norm) || spec.clip_norm <= 0) {
    return Bad(absl::StrCat("clip norm ", spec.clip_norm,
                            " must be finite and positive"));
  }
  spec.noise_stddev = proto.noise_stddev();
  spec.min_survivors = proto.min_survivors();
  if (!std::isfinite(spec.noise_stddev) || spec.noise_stddev < 0) {
    return Bad(absl::StrCat("noise standard deviation ", spec.noise_stddev,
                            " must be finite and >= 0"));
  }
  const bool noised = spec.noise_stddev > 0;
  if (noised != (spec.min_survivors != 0) ||
      (noised && (spec.min_survivors < 2 || spec.min_survivors > p.devices))) {
    return Bad(absl::StrCat("min_survivors ", spec.min_survivors,
                            " with noise ", spec.noise_stddev,
                            ": noise needs a minimum in 2..", p.devices,
                            ", and a minimum needs noise"));
  }
  int64_t words = 0;
  for (const v1::LayoutTensor& t : proto.layout()) {
    int64_t size = 1;
    for (int64_t d : t.shape()) {
      if (d < 0 || (d > 0 && size > kMaxWords / d)) {
        return Bad(absl::StrCat("layout tensor '", t.name(),
                                "' has a negative or oversized dimension"));
      }
      size *= d;
    }
    words += size;
    if (words > p.length) break;
    spec.layout.emplace_back(
        t.name(), std::vector<int64_t>(t.shape().begin(), t.shape().end()));
  }
  if (words != p.length) {
    return Bad(absl::StrCat("the layout's tensors hold ",
                            words > p.length ? "more than " : "", words,
                            " words, the vector ", p.length));
  }
  return spec;
}

void AdvertisementToProto(const secagg::Advertisement& a,
                          v1::SecAggAdvertisement* proto) {
  proto->set_device(a.device);
  proto->set_seal_public(a.seal_public);
  proto->set_mask_public(a.mask_public);
  proto->set_seed_digest(a.seed_digest);
}

absl::StatusOr<secagg::Advertisement> AdvertisementFromProto(
    const v1::SecAggAdvertisement& proto) {
  if (proto.seal_public().size() != secagg::kKeyBytes ||
      proto.mask_public().size() != secagg::kKeyBytes ||
      proto.seed_digest().size() != secagg::kKeyBytes) {
    return Bad(absl::StrCat(
        "device ", proto.device(), " advertised keys of ",
        proto.seal_public().size(), " and ", proto.mask_public().size(),
        " bytes and a digest of ", proto.seed_digest().size(), " (",
        secagg::kKeyBytes, " each)"));
  }
  return secagg::Advertisement{proto.device(), proto.seal_public(),
                               proto.mask_public(), proto.seed_digest()};
}

void SharesToProto(
    const std::vector<secagg::SealedShares>& shares,
    google::protobuf::RepeatedPtrField<v1::SecAggSealedShares>* proto) {
  for (const secagg::SealedShares& s : shares) {
    v1::SecAggSealedShares* out = proto->Add();
    out->set_from(s.from);
    out->set_to(s.to);
    out->set_sealed(s.sealed);
  }
}

absl::StatusOr<std::vector<secagg::SealedShares>> SharesFromProto(
    const google::protobuf::RepeatedPtrField<v1::SecAggSealedShares>& proto) {
  std::vector<secagg::SealedShares> shares;
  shares.reserve(proto.size());
  for (const v1::SecAggSealedShares& s : proto) {
    if (s.sealed().empty()) {
      return Bad(absl::StrCat("device ", s.from(), "'s shares for device ",
                              s.to(), " are empty"));
    }
    shares.push_back({s.from(), s.to(), s.sealed()});
  }
  return shares;
}

void UnmaskToProto(const secagg::UnmaskShares& u, v1::SecAggUnmask* proto) {
  proto->set_from(u.from);
  SharesToMap(u.seed_shares, proto->mutable_seed_shares());
  SharesToMap(u.key_shares, proto->mutable_key_shares());
}

absl::StatusOr<secagg::UnmaskShares> UnmaskFromProto(
    const v1::SecAggUnmask& proto) {
  secagg::UnmaskShares u;
  u.from = proto.from();
  if (absl::Status s =
          SharesFromMap(proto.seed_shares(), u.from, &u.seed_shares);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SharesFromMap(proto.key_shares(), u.from, &u.key_shares);
      !s.ok()) {
    return s;
  }
  return u;
}

std::string WordsToBytes(const std::vector<uint32_t>& words) {
  std::string bytes(4 * words.size(), '\0');
  for (size_t i = 0; i < words.size(); ++i) {
    const uint32_t w = words[i];
    for (int b = 0; b < 4; ++b) {
      bytes[4 * i + b] = static_cast<char>((w >> (8 * b)) & 0xff);
    }
  }
  return bytes;
}

absl::StatusOr<std::vector<uint32_t>> WordsFromBytes(absl::string_view bytes,
                                                     int64_t length) {
  if (length < 0 || static_cast<int64_t>(bytes.size()) != 4 * length) {
    return Bad(absl::StrCat("a masked vector of ", bytes.size(),
                            " bytes; the round's is ", length, " words of 4"));
  }
  std::vector<uint32_t> words(length);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (int64_t i = 0; i < length; ++i, p += 4) {
    words[i] = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
               static_cast<uint32_t>(p[2]) << 16 |
               static_cast<uint32_t>(p[3]) << 24;
  }
  return words;
}

}  // namespace fedge::transport
