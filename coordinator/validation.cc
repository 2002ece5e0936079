#include "coordinator/validation.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include <torch/torch.h>

#include "model/trainer.h"

namespace fedge::coordinator {

ValidationLossFn ValidationLoss(const model::Dataset* data,
                                int64_t batch_size) {
  if (data->size() == 0) return nullptr;
  batch_size = std::max<int64_t>(batch_size, 1);
  return [data, batch_size](model::ModelImpl& m,
                            const StopFn& stop) -> absl::StatusOr<double> {
    // Batch by batch, so that `stop` is heard within one: model::Evaluate
    // on each slice, weighted by the targets it scores (language models
    // mask some), gives the same mean as one call over all of `data`.
    double sum = 0;
    int64_t scored = 0;
    for (int64_t begin = 0; begin < data->size(); begin += batch_size) {
      if (stop && stop()) {
        return absl::CancelledError(absl::StrCat("validation stopped after ",
                                                 begin, " of ", data->size(),
                                                 " examples"));
      }
      const int64_t end = std::min(begin + batch_size, data->size());
      model::Dataset slice = *data;
      slice.inputs = data->inputs.slice(0, begin, end);
      slice.targets = data->targets.slice(0, begin, end);
      if (data->target_bytes.defined()) {
        slice.target_bytes = data->target_bytes.slice(0, begin, end);
      }
      const int64_t n =
          slice.targets.ne(model::kIgnoreTarget).sum().item<int64_t>();
      if (n == 0) continue;
      absl::StatusOr<model::EvalResult> r =
          model::Evaluate(m, slice, batch_size);
      if (!r.ok()) return r.status();
      sum += r->loss * static_cast<double>(n);
      scored += n;
    }
    if (scored == 0) {
      return absl::InvalidArgumentError(
          "validation data score no target (every one is masked)");
    }
    return sum / static_cast<double>(scored);
  };
}

}  // namespace fedge::coordinator
