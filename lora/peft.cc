#include "lora/peft.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "model/file_io.h"
#include "model/safetensors.h"

namespace fedge::lora {

absl::StatusOr<NamedTensors> ToPeftTensors(const NamedTensors& adapters,
                                           int64_t rank) {
  NamedTensors out;
  for (const auto& item : adapters) {
    const std::string& name = item.key();
    const at::Tensor& t = item.value();
    std::string peft;
    int64_t tensor_rank = -1;
    const std::string suffix_a = absl::StrCat(".", kLoraA);
    const std::string suffix_b = absl::StrCat(".", kLoraB);
    if (absl::EndsWith(name, suffix_a) && t.dim() == 2) {
      peft = absl::StrCat(name.substr(0, name.size() - suffix_a.size()),
                          ".lora_A.weight");
      tensor_rank = t.size(0);
    } else if (absl::EndsWith(name, suffix_b) && t.dim() == 2) {
      peft = absl::StrCat(name.substr(0, name.size() - suffix_b.size()),
                          ".lora_B.weight");
      tensor_rank = t.size(1);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("peft export: \"", name, "\" is not a LoRA matrix"));
    }
    if (tensor_rank != rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("peft export: \"", name, "\" has rank ", tensor_rank,
                       ", expected ", rank));
    }
    out.insert(absl::StrCat("base_model.model.", peft),
               t.detach().to(torch::kFloat32).contiguous());
  }
  return out;
}

absl::Status ExportPeft(const std::string& dir, const NamedTensors& adapters,
                        const PeftExportOptions& options) {
  absl::StatusOr<NamedTensors> tensors = ToPeftTensors(adapters, options.rank);
  if (!tensors.ok()) return tensors.status();
  if (absl::Status s = model::MakeDirectories(dir); !s.ok()) return s;
  if (absl::Status s = model::WriteSafetensors(
          dir + "/adapter_model.safetensors", *tensors, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"r", options.rank},
      {"lora_alpha", options.alpha},
      {"lora_dropout", options.dropout},
      {"target_modules", options.target_modules},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"base_model_name_or_path", options.base_model_name_or_path},
      {"task_type", options.task_type.empty()
                        ? nlohmann::json(nullptr)
                        : nlohmann::json(options.task_type)}};
  return model::WriteFileAtomically(dir + "/adapter_config.json",
                                    config.dump(2) + "\n");
}

}  // namespace fedge::lora
