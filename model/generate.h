// Text generation from a language model: greedy or sampled decoding, one
// token at a time, for fedge-generate (before/after fine-tuning) and tests.
//
// There is no key/value cache: every step runs the model on the whole
// sequence so far. For fedge's small decoders and answers of tens of
// tokens that costs milliseconds per token; a cache would add state to
// every attention module for no measurable gain here.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

#include "model/model.h"

namespace fedge::model {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  // 0: greedy (the top-1 token every step). Otherwise softmax(logits / T)
  // sampling, restricted to the `top_k` likeliest tokens when top_k > 0.
  double temperature = 0;
  int64_t top_k = 0;
  uint64_t seed = 1;  // Sampling only.
  // Generation stops after emitting this id (it is included); -1: none.
  int64_t stop_id = -1;
};

// The ids generated after `prompt` (not including it): at most
// max_new_tokens, fewer if `stop_id` is emitted or the model's context is
// full. Runs in eval mode without gradients (the mode is restored).
// InvalidArgument for a model that is not a language model, an empty
// prompt, a prompt the model rejects (ids outside the vocabulary, longer
// than the context) or bad options.
absl::StatusOr<std::vector<int64_t>> Generate(
    ModelImpl& model, const std::vector<int64_t>& prompt,
    const GenerateOptions& options);

}  // namespace fedge::model
