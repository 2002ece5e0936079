// Offers of named tensors as safetensors payloads, described once per set
// of tensors. A coordinator in dense mode sends the same weights to a whole
// round (GlobalModel::Payload shares one slice between devices with the
// same plan): each device gets its own transfer id, but all of them read
// the one SafetensorsSource over those tensors, and its SHA-256 is computed
// once, not once per device.
//
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "model/model.h"
#include "transport/transfer.h"

namespace fedge::transport {

class TensorOffers {
 public:
  // `share` false: every Make describes its tensors and nothing is kept
  // (LoRA payloads differ per device; remembering them would cost memory
  // per device for nothing).
  explicit TensorOffers(bool share = true) : share_(share) {}

  struct Offer {
    TransferInfo info;  // Its transfer_id is the one asked for.
    std::shared_ptr<const PayloadSource> source;
  };

  // `tensors` as a safetensors payload under `transfer_id`. Tensors that
  // are the same storage, names and shapes as an earlier call's, whose
  // source is still alive (offered somewhere), reuse that source and its
  // digest. The errors of SafetensorsSource::Create.
  absl::StatusOr<Offer> Make(const std::string& transfer_id,
                             const model::NamedTensors& tensors)
      ABSL_LOCKS_EXCLUDED(mu_);

  // How many Make calls hashed their payload (the rest reused one).
  int64_t described() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Made {
    std::weak_ptr<const PayloadSource> source;
    TransferInfo info;
  };
  const bool share_;
  mutable absl::Mutex mu_;
  // By the tensors' identity (name, data pointer, shape, strides, dtype).
  // A live source holds its tensors, so their addresses cannot be reused
  // while an entry can match; expired entries are dropped on each Make.
  std::map<std::string, Made> made_ ABSL_GUARDED_BY(mu_);
  int64_t described_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::transport
