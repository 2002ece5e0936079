// Export of a LoRA adapter in Hugging Face PEFT's on-disk layout, so that
// what fedge trained loads in the Python ecosystem
// (peft.PeftModel.from_pretrained(base, dir)):
//   dir/adapter_model.safetensors  "base_model.model.<path>.lora_A.weight"
//                                  [r, in] and ".lora_B.weight" [out, r]
//   dir/adapter_config.json        peft_type LORA, r, lora_alpha, targets...
#pragma once

#include <string>

#include "absl/status/status.h"

#include "lora/lora.h"

namespace fedge::lora {

struct PeftExportOptions {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules;
  // PEFT task type: "CAUSAL_LM" for the decoder; empty writes null.
  std::string task_type;
  std::string base_model_name_or_path;
};

// The PEFT tensor names for fedge adapter tensors (ExtractAdapters' names).
// InvalidArgument if a name is not a LoRA tensor or a rank disagrees with
// options.rank.
absl::StatusOr<NamedTensors> ToPeftTensors(const NamedTensors& adapters,
                                           int64_t rank);

// Writes both files into `dir` (created if missing), each atomically.
absl::Status ExportPeft(const std::string& dir, const NamedTensors& adapters,
                        const PeftExportOptions& options);

}  // namespace fedge::lora
