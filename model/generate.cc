#include "model/generate.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace fedge::model {

absl::StatusOr<std::vector<int64_t>> Generate(
    ModelImpl& model, const std::vector<int64_t>& prompt,
    const GenerateOptions& options) {
  if (model.task() != Task::kLanguageModel) {
    return absl::InvalidArgumentError("generation needs a language model");
  }
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_new_tokens < 0 || options.top_k < 0 ||
      !(options.temperature >= 0)) {
    return absl::InvalidArgumentError(
        "max_new_tokens, top_k and temperature must be non-negative");
  }
  std::vector<int64_t> ids = prompt;
  const at::Tensor input = torch::tensor(ids, torch::kLong).unsqueeze(0);
  if (absl::Status s = model.ValidateInput(input); !s.ok()) return s;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.train(false);
  at::Generator generator =
      at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<int64_t> out;
  while (static_cast<int64_t>(out.size()) < options.max_new_tokens &&
         static_cast<int64_t>(ids.size()) < model.max_tokens()) {
    const at::Tensor logits =
        model.forward(torch::tensor(ids, torch::kLong).unsqueeze(0))[0][-1];
    int64_t next;
    if (options.temperature == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      at::Tensor scaled = logits / options.temperature;
      if (options.top_k > 0 && options.top_k < scaled.size(0)) {
        const at::Tensor kth = std::get<0>(scaled.topk(options.top_k))[-1];
        scaled = scaled.masked_fill(scaled < kth,
                                    -std::numeric_limits<float>::infinity());
      }
      next = torch::multinomial(torch::softmax(scaled, -1), 1,
                                /*replacement=*/false, generator)
                 .item<int64_t>();
    }
    out.push_back(next);
    ids.push_back(next);
    if (next == options.stop_id) break;
  }
  model.train(was_training);
  return out;
}

}  // namespace fedge::model
