// Conversions between secure aggregation's messages (secagg/protocol.h)
// and their protos (fedge/v1: SecureSpec in task.proto, the Secure RPC's
// messages in coordinator_service.proto), written once for the
// coordinator and the client. Every FromProto checks what the protocol
// cannot check itself (sizes, ranges) and answers InvalidArgument naming
// the field; what the protocol refuses (a key in another's name, a share
// that does not open) it refuses itself.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "fedge/v1/coordinator_service.pb.h"
#include "fedge/v1/task.pb.h"
#include "secagg/protocol.h"

namespace fedge::transport {

// A device's part in its round's exchange (v1::SecureSpec).
struct SecureSpec {
  secagg::Parameters parameters;
  int64_t index = 0;
  double clip_norm = 0;
  double noise_stddev = 0;    // Distributed DP; 0 without.
  int64_t min_survivors = 0;  // Distributed DP; 0 without.
  // Names and full shapes, in order (strategies::FlatLayout::Shapes).
  std::vector<std::pair<std::string, std::vector<int64_t>>> layout;
};

void SecureSpecToProto(const SecureSpec& spec, v1::SecureSpec* proto);
// InvalidArgument for parameters secagg::ValidateParameters refuses, an
// index outside [0, devices), a clip norm that is not finite and > 0, a
// negative or non-finite noise, noise without min_survivors in [2,
// devices] (or min_survivors without noise), or a layout whose sizes do
// not add up to the length.
absl::StatusOr<SecureSpec> SecureSpecFromProto(const v1::SecureSpec& proto);

void AdvertisementToProto(const secagg::Advertisement& a,
                          v1::SecAggAdvertisement* proto);
// InvalidArgument unless both keys and the digest are 32 bytes.
absl::StatusOr<secagg::Advertisement> AdvertisementFromProto(
    const v1::SecAggAdvertisement& proto);

void SharesToProto(
    const std::vector<secagg::SealedShares>& shares,
    google::protobuf::RepeatedPtrField<v1::SecAggSealedShares>* proto);
// InvalidArgument for an empty sealed message.
absl::StatusOr<std::vector<secagg::SealedShares>> SharesFromProto(
    const google::protobuf::RepeatedPtrField<v1::SecAggSealedShares>& proto);

void UnmaskToProto(const secagg::UnmaskShares& u, v1::SecAggUnmask* proto);
// InvalidArgument for a share whose point is outside 1..255 or that is
// empty.
absl::StatusOr<secagg::UnmaskShares> UnmaskFromProto(
    const v1::SecAggUnmask& proto);

// The masked vector's bytes (v1::PAYLOAD_FORMAT_MASKED_WORDS): the words
// little-endian, nothing else.
std::string WordsToBytes(const std::vector<uint32_t>& words);
// InvalidArgument unless `bytes` holds exactly `length` words.
absl::StatusOr<std::vector<uint32_t>> WordsFromBytes(absl::string_view bytes,
                                                     int64_t length);

}  // namespace fedge::transport
