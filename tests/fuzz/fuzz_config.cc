// Fuzz target: a model's config.json (from a checkpoint directory or the
// coordinator's RegisterResponse), parsed as the ViT's and as LLaMA's.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/checkpoint.h"
#include "model/llama.h"
#include "model/vit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  (void)fedge::model::VitConfigFromJson(json);
  (void)fedge::model::LlamaConfigFromJson(json);
  (void)fedge::model::BlockShapesFromConfig(json);
  return 0;
}
