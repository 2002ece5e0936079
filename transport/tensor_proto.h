// The one conversion between fedge.v1.Tensor / NamedTensors on the wire and
// at::Tensor. Decoding validates every field before LibTorch sees it, so a
// malformed message is an InvalidArgument, never a crash.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <ATen/core/Tensor.h>

#include "fedge/v1/tensor.pb.h"
#include "model/model.h"

namespace fedge::transport {

struct TensorLimits {
  int max_tensors = 100000;
  int64_t max_elements = 1LL << 31;  // Per tensor.
};

// One tensor; `name` only labels errors. Same rules as below.
absl::Status TensorToProto(absl::string_view name, const at::Tensor& tensor,
                           v1::Tensor* out);
absl::StatusOr<at::Tensor> TensorFromProto(absl::string_view name,
                                           const v1::Tensor& proto,
                                           const TensorLimits& limits = {});

// Encodes CPU tensors of a supported dtype (float32/16, bfloat16, int8,
// uint8, int32, int64) as contiguous little-endian bytes.
// InvalidArgument naming the tensor for any other dtype.
absl::Status ToProto(const model::NamedTensors& tensors, v1::NamedTensors* out);

// Decodes and validates: known dtype, non-negative shape within limits,
// data size equal to the shape's, unique non-empty names.
// InvalidArgument naming the tensor otherwise; ResourceExhausted above the
// limits.
absl::StatusOr<model::NamedTensors> FromProto(const v1::NamedTensors& proto,
                                              const TensorLimits& limits = {});

}  // namespace fedge::transport
