#include "transport/tensor_proto.h"

#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::transport {
namespace {

bool ToDtype(at::ScalarType type, v1::Dtype* dtype) {
  switch (type) {
    case torch::kFloat32:
      *dtype = v1::DTYPE_FLOAT32;
      return true;
    case torch::kFloat16:
      *dtype = v1::DTYPE_FLOAT16;
      return true;
    case torch::kBFloat16:
      *dtype = v1::DTYPE_BFLOAT16;
      return true;
    case torch::kInt8:
      *dtype = v1::DTYPE_INT8;
      return true;
    case torch::kUInt8:
      *dtype = v1::DTYPE_UINT8;
      return true;
    case torch::kInt32:
      *dtype = v1::DTYPE_INT32;
      return true;
    case torch::kInt64:
      *dtype = v1::DTYPE_INT64;
      return true;
    default:
      return false;
  }
}

bool FromDtype(int dtype, at::ScalarType* type) {
  switch (dtype) {
    case v1::DTYPE_FLOAT32:
      *type = torch::kFloat32;
      return true;
    case v1::DTYPE_FLOAT16:
      *type = torch::kFloat16;
      return true;
    case v1::DTYPE_BFLOAT16:
      *type = torch::kBFloat16;
      return true;
    case v1::DTYPE_INT8:
      *type = torch::kInt8;
      return true;
    case v1::DTYPE_UINT8:
      *type = torch::kUInt8;
      return true;
    case v1::DTYPE_INT32:
      *type = torch::kInt32;
      return true;
    case v1::DTYPE_INT64:
      *type = torch::kInt64;
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status TensorToProto(absl::string_view name, const at::Tensor& tensor,
                           v1::Tensor* out) {
  v1::Dtype dtype;
  if (!ToDtype(tensor.scalar_type(), &dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has unsupported dtype ",
                     c10::toString(tensor.scalar_type())));
  }
  const at::Tensor t = tensor.detach().cpu().contiguous();
  out->Clear();
  out->set_dtype(dtype);
  for (int64_t d : t.sizes()) out->add_shape(d);
  out->set_data(static_cast<const char*>(t.data_ptr()), t.nbytes());
  return absl::OkStatus();
}

absl::Status ToProto(const model::NamedTensors& tensors,
                     v1::NamedTensors* out) {
  out->Clear();
  for (const auto& item : tensors) {
    v1::NamedTensor* named = out->add_tensors();
    named->set_name(item.key());
    if (absl::Status s =
            TensorToProto(item.key(), item.value(), named->mutable_tensor());
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TensorFromProto(absl::string_view name,
                                           const v1::Tensor& t,
                                           const TensorLimits& limits) {
  at::ScalarType type;
  if (!FromDtype(t.dtype(), &type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has unknown dtype ", t.dtype()));
  }
  int64_t elements = 1;
  std::vector<int64_t> shape;
  for (int64_t d : t.shape()) {
    if (d < 0 ||
        (d > 0 && elements > std::numeric_limits<int64_t>::max() / 16 / d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' has a negative or oversized shape"));
    }
    elements *= d;
    shape.push_back(d);
  }
  if (elements > limits.max_elements) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tensor '", name, "' has ", elements,
                     " elements; the limit is ", limits.max_elements));
  }
  const int64_t bytes = elements * static_cast<int64_t>(c10::elementSize(type));
  if (static_cast<int64_t>(t.data().size()) != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' carries ", t.data().size(),
                     " bytes; its shape and dtype need ", bytes));
  }
  at::Tensor tensor = torch::empty(shape, torch::TensorOptions(type));
  if (bytes > 0) std::memcpy(tensor.data_ptr(), t.data().data(), bytes);
  return tensor;
}

absl::StatusOr<model::NamedTensors> FromProto(const v1::NamedTensors& proto,
                                              const TensorLimits& limits) {
  if (proto.tensors_size() > limits.max_tensors) {
    return absl::ResourceExhaustedError(absl::StrCat(
        proto.tensors_size(), " tensors; the limit is ", limits.max_tensors));
  }
  model::NamedTensors out;
  std::set<std::string> names;
  for (const v1::NamedTensor& named : proto.tensors()) {
    const std::string& name = named.name();
    if (name.empty() || !names.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", name, "' is empty or repeated"));
    }
    absl::StatusOr<at::Tensor> tensor =
        TensorFromProto(name, named.tensor(), limits);
    if (!tensor.ok()) return tensor.status();
    out.insert(name, *std::move(tensor));
  }
  return out;
}

}  // namespace fedge::transport
