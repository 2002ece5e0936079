// Small models for unit tests: fast to build and run, shaped like the real
// ones (several heads, several blocks) so pruning and LoRA have work to do.
#pragma once

#include <cstdint>

#include "model/vit.h"
#include "split/protocol.h"

namespace fedge::testing {

// A two-block ViT of width 32 with 4 heads of 8 and `mlp_hidden` channels.
model::Vit TinyVit(int64_t mlp_hidden);

// Step `step` of a 2-step split round on a TinyVit: `batch` random hidden
// states at the cut ([batch, 17, 32]) with labels 0, 1, ...
split::StepRequest TinyVitSplitStep(int64_t step, int64_t batch = 4);

}  // namespace fedge::testing
