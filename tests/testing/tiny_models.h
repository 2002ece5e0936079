// Small models for unit tests: fast to build and run, shaped like the real
// ones (several heads, several blocks) so pruning and LoRA have work to do.
#pragma once

#include <cstdint>

#include "model/vit.h"

namespace fedge::testing {

// A two-block ViT of width 32 with 4 heads of 8 and `mlp_hidden` channels.
model::Vit TinyVit(int64_t mlp_hidden);

}  // namespace fedge::testing
