#include "transport/tensor_offers.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <ATen/core/Tensor.h>

namespace fedge::transport {
namespace {

std::string Identity(const model::NamedTensors& tensors) {
  std::string key;
  for (const auto& item : tensors) {
    const at::Tensor& t = item.value();
    if (!t.defined()) {
      absl::StrAppend(&key, item.key(), "@undefined;");
      continue;
    }
    absl::StrAppend(
        &key, item.key(), "@", reinterpret_cast<uintptr_t>(t.data_ptr()), ":",
        absl::StrJoin(t.sizes(), "x"), ":", absl::StrJoin(t.strides(), "x"),
        ":", static_cast<int>(t.scalar_type()), ";");
  }
  return key;
}

}  // namespace

absl::StatusOr<TensorOffers::Offer> TensorOffers::Make(
    const std::string& transfer_id, const model::NamedTensors& tensors) {
  const std::string key = share_ ? Identity(tensors) : std::string();
  if (share_) {
    absl::MutexLock lock(&mu_);
    for (auto it = made_.begin(); it != made_.end();) {
      it = it->second.source.expired() ? made_.erase(it) : std::next(it);
    }
    if (auto it = made_.find(key); it != made_.end()) {
      Offer offer{it->second.info, it->second.source.lock()};
      if (offer.source != nullptr) {
        offer.info.transfer_id = transfer_id;
        return offer;
      }
    }
  }
  // Two first calls for the same tensors may both hash them; both results
  // are right, and the later one is kept.
  absl::StatusOr<std::unique_ptr<SafetensorsSource>> source =
      SafetensorsSource::Create(tensors);
  if (!source.ok()) return source.status();
  std::shared_ptr<const PayloadSource> shared = std::move(*source);
  absl::StatusOr<TransferInfo> info = DescribePayload(
      *shared, transfer_id, shared->size(), PayloadFormat::kSafetensors);
  if (!info.ok()) return info.status();
  absl::MutexLock lock(&mu_);
  if (share_) made_[key] = Made{shared, *info};
  ++described_;
  return Offer{*std::move(info), std::move(shared)};
}

int64_t TensorOffers::described() const {
  absl::MutexLock lock(&mu_);
  return described_;
}

}  // namespace fedge::transport
