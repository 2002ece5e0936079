#include "coordinator/byte_budget.h"

#include <algorithm>
#include <utility>

namespace fedge::coordinator {

ByteBudget::Lease& ByteBudget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) owner_->Release(bytes_);
    owner_ = std::exchange(other.owner_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

ByteBudget::Lease::~Lease() {
  if (owner_ != nullptr) owner_->Release(bytes_);
}

ByteBudget::Lease ByteBudget::Acquire(int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 0);
  absl::MutexLock lock(&mu_);
  if (budget_ > 0) {
    auto fits = [this, bytes]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return in_use_ == 0 || in_use_ + bytes <= budget_;
    };
    mu_.Await(absl::Condition(&fits));
  }
  in_use_ += bytes;
  return Lease(this, bytes);
}

int64_t ByteBudget::in_use() const {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

void ByteBudget::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  in_use_ -= bytes;
}

}  // namespace fedge::coordinator
