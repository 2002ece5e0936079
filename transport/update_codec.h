// Update codecs: how a client's update (named tensors, typically LoRA
// factors) is encoded for the uplink, and how the coordinator decodes it.
//
//   float32 / float16 / bfloat16   cast; f16/bf16 halve the bytes
//   int8_row                       int8 in [-127, 127] with one scale per
//                                  row (a row is the last dimension; a
//                                  matrix with more rows than columns is
//                                  sent transposed, scale_columns); the
//                                  error per element is at most scale / 2
//   topk                           per tensor, the k = ceil(fraction * n)
//                                  largest magnitudes and their indices;
//                                  with error feedback the client keeps
//                                  what was not sent and adds it next time
// followed by an optional lossless zstd stage. The payload is a serialized
// fedge.v1.CompressedPayload around a fedge.v1.EncodedUpdate. Their large
// byte fields are written from the tensors and read in place: without
// zstd, a model-sized update is copied once by each side, not once per
// nesting level.
//
// What an update holds: the trained tensors themselves, except under topk,
// which sends their change from the payload the device was sent (a dropped
// entry of a change is no change; a dropped value would zero a weight).
// CarriesChange says which; UpdateToSend makes what a device uploads.
//
// Decoding validates everything before any tensor is built: sizes against
// shapes, index ranges and order, declared sizes against limits, and
// NaN/Inf in values and scales.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "fedge/v1/transfer.pb.h"
#include "model/model.h"

namespace fedge::transport {

class PayloadBytes;  // transport/transfer.h

using model::NamedTensors;

enum class Codec { kFloat32, kFloat16, kBFloat16, kInt8Row, kTopK };

// "float32", "float16", "bfloat16", "int8_row", "topk".
absl::StatusOr<Codec> ParseCodec(absl::string_view name);
const char* CodecName(Codec codec);

// The wire enum and back. CODEC_UNSPECIFIED (and unknown values) map to
// int8_row, the default.
v1::Codec CodecToProto(Codec codec);
Codec CodecFromProto(v1::Codec codec);

struct CodecOptions {
  Codec codec = Codec::kInt8Row;
  bool zstd = true;
  int zstd_level = 3;
  double topk_fraction = 0.01;  // kTopK: share of each tensor's entries sent.
  absl::Status Validate() const;
};

// The client's error-feedback memory for kTopK: what earlier rounds left
// unsent, by tensor name. Not thread-safe.
struct ErrorFeedback {
  NamedTensors residual;
};

struct EncodedPayload {
  std::string bytes;      // What goes on the wire.
  int64_t raw_bytes = 0;  // float32 size of the update before encoding.
};

// Encodes `update` (float tensors on the CPU, finite). With kTopK and a
// non-null `feedback`, the residual is added before selection and updated
// after; a residual for other tensors (names or sizes: the device's
// sub-model changed) is discarded first. InvalidArgument for bad options,
// non-float or non-finite tensors.
absl::StatusOr<EncodedPayload> EncodeUpdate(const NamedTensors& update,
                                            const CodecOptions& options,
                                            ErrorFeedback* feedback = nullptr);

// Whether an update in `codec` holds the change from what the device was
// sent (topk) rather than the trained values (every other codec).
bool CarriesChange(Codec codec);

// What a device encodes after training `sent` into `trained` for an
// update in `codec`: `trained` itself, or under CarriesChange its change
// trained - sent, tensor by tensor. InvalidArgument (for a change) naming a
// tensor `sent` lacks or has in another shape.
absl::StatusOr<NamedTensors> UpdateToSend(const NamedTensors& trained,
                                          const NamedTensors& sent,
                                          Codec codec);

struct DecodeLimits {
  int64_t max_payload_bytes = 1LL << 30;    // Decompressed size limit.
  int64_t max_tensor_elements = 1LL << 31;  // Per tensor.
  int max_tensors = 100000;
};

// Decodes a payload into float32 tensors. InvalidArgument for anything
// malformed (names the tensor and the problem), and, with a non-null
// `required`, for a compression or a tensor codec other than it says (a
// task's upload codec binds); ResourceExhausted if a declared size exceeds
// `limits`.
absl::StatusOr<NamedTensors> DecodeUpdate(
    absl::string_view payload, const DecodeLimits& limits = {},
    const CodecOptions* required = nullptr);
// The same, of `payload.view()`, telling `payload` what it is done with as
// it goes (PayloadBytes::DoneWith): each tensor's bytes once decoded, or
// the compressed bytes once decompressed. A staged upload mapped from its
// file then gives its pages back tensor by tensor rather than holding the
// whole update beside its decoded tensors.
absl::StatusOr<NamedTensors> DecodeUpdate(
    const PayloadBytes& payload, const DecodeLimits& limits = {},
    const CodecOptions* required = nullptr);

}  // namespace fedge::transport
