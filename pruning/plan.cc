#include "pruning/plan.h"

#include <algorithm>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "lora/lora.h"
#include "model/checkpoint.h"

namespace fedge::pruning {
namespace {

enum class Unit { kHeads, kKvHeads, kChannels };

struct LinearRule {
  const char* linear;  // Below the block prefix.
  Unit unit;
  bool output_side;  // Units are rows (outputs) rather than columns.
};

constexpr LinearRule kLinears[] = {
    {"self_attn.q_proj", Unit::kHeads, true},
    {"self_attn.k_proj", Unit::kKvHeads, true},
    {"self_attn.v_proj", Unit::kKvHeads, true},
    {"self_attn.o_proj", Unit::kHeads, false},
    {"mlp.gate_proj", Unit::kChannels, true},
    {"mlp.up_proj", Unit::kChannels, true},
    {"mlp.down_proj", Unit::kChannels, false},
};

// How one tensor is sliced: along `dim`, keeping `index`; `full_size` is the
// dimension's size in the full model.
struct Slice {
  int64_t dim;
  at::Tensor index;
  int64_t full_size;
};

const std::vector<int64_t>& Units(const BlockPlan& block, Unit unit) {
  switch (unit) {
    case Unit::kHeads:
      return block.heads;
    case Unit::kKvHeads:
      return block.kv_heads;
    case Unit::kChannels:
      break;
  }
  return block.channels;
}

int64_t UnitCount(const model::BlockShape& shape, Unit unit) {
  switch (unit) {
    case Unit::kHeads:
      return shape.num_heads;
    case Unit::kKvHeads:
      return shape.num_kv_heads;
    case Unit::kChannels:
      break;
  }
  return shape.mlp_hidden;
}

// The slice `plan` applies to the tensor called `name`, if any.
std::optional<Slice> SliceFor(const model::ModelImpl& model,
                              const PruningPlan& plan,
                              const std::vector<model::BlockShape>& shapes,
                              absl::string_view name) {
  for (size_t b = 0; b < plan.blocks.size(); ++b) {
    const std::string prefix = model.block_prefix(b);
    if (!absl::StartsWith(name, prefix)) continue;
    const absl::string_view suffix = name.substr(prefix.size());
    for (const LinearRule& rule : kLinears) {
      const std::string linear(rule.linear);
      bool match = suffix == linear + ".weight";
      if (rule.output_side) {
        match = match || suffix == linear + ".bias" ||
                suffix == absl::StrCat(linear, ".", lora::kLoraB);
      } else {
        match = match || suffix == absl::StrCat(linear, ".", lora::kLoraA);
      }
      if (!match) continue;
      const int64_t width = rule.unit == Unit::kChannels ? 1 : model.head_dim();
      std::vector<int64_t> rows;
      for (int64_t u : Units(plan.blocks[b], rule.unit)) {
        for (int64_t i = 0; i < width; ++i) rows.push_back(u * width + i);
      }
      return Slice{rule.output_side ? 0 : 1, torch::tensor(rows, torch::kLong),
                   UnitCount(shapes[b], rule.unit) * width};
    }
    return std::nullopt;
  }
  return std::nullopt;
}

absl::Status CheckUnits(const std::vector<int64_t>& units, int64_t count,
                        size_t block, absl::string_view field) {
  for (size_t i = 0; i < units.size(); ++i) {
    if (units[i] < 0 || units[i] >= count ||
        (i > 0 && units[i] <= units[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("pruning plan: block ", block, " ", field,
                       " must be sorted unique indices in [0, ", count, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

PruningPlan FullPlan(const model::ModelImpl& model) {
  PruningPlan plan;
  for (const model::BlockShape& s : model.block_shapes()) {
    BlockPlan block;
    for (int64_t i = 0; i < s.num_heads; ++i) block.heads.push_back(i);
    for (int64_t i = 0; i < s.num_kv_heads; ++i) block.kv_heads.push_back(i);
    for (int64_t i = 0; i < s.mlp_hidden; ++i) block.channels.push_back(i);
    plan.blocks.push_back(std::move(block));
  }
  return plan;
}

absl::Status ValidatePlan(const model::ModelImpl& model,
                          const PruningPlan& plan) {
  return ValidatePlan(model.block_shapes(), plan);
}

absl::Status ValidatePlan(const std::vector<model::BlockShape>& shapes,
                          const PruningPlan& plan) {
  if (plan.blocks.size() != shapes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pruning plan has ", plan.blocks.size(),
                     " blocks, the model has ", shapes.size()));
  }
  for (size_t b = 0; b < shapes.size(); ++b) {
    const BlockPlan& block = plan.blocks[b];
    const model::BlockShape& shape = shapes[b];
    if (absl::Status s = CheckUnits(block.heads, shape.num_heads, b, "heads");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            CheckUnits(block.kv_heads, shape.num_kv_heads, b, "kv_heads");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            CheckUnits(block.channels, shape.mlp_hidden, b, "channels");
        !s.ok()) {
      return s;
    }
    // Every kept query head's KV head must be kept, with the same number of
    // query heads per kept KV head, so the pruned block is a valid GQA block.
    const int64_t group =
        shape.num_kv_heads > 0 ? shape.num_heads / shape.num_kv_heads : 1;
    std::vector<int64_t> per_kv(shape.num_kv_heads, 0);
    for (int64_t h : block.heads) ++per_kv[h / group];
    const int64_t kept_kv = static_cast<int64_t>(block.kv_heads.size());
    const int64_t kept_q = static_cast<int64_t>(block.heads.size());
    bool consistent = (kept_kv == 0) == (kept_q == 0);
    for (int64_t kv = 0; kv < shape.num_kv_heads && consistent; ++kv) {
      const bool kept =
          std::binary_search(block.kv_heads.begin(), block.kv_heads.end(), kv);
      consistent = kept ? per_kv[kv] * kept_kv == kept_q : per_kv[kv] == 0;
    }
    if (!consistent) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pruning plan: block ", b,
          " keeps query heads whose KV heads it removes, or an unequal "
          "number of query heads per kept KV head"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PruningPlan> DropBlocks(const PruningPlan& plan,
                                       const std::vector<int64_t>& blocks) {
  PruningPlan out = plan;
  for (int64_t b : blocks) {
    if (b < 0 || b >= static_cast<int64_t>(out.blocks.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot drop block ", b, " of ", out.blocks.size()));
    }
    out.blocks[b] = BlockPlan();
  }
  return out;
}

std::vector<model::BlockShape> PlannedShapes(const PruningPlan& plan) {
  std::vector<model::BlockShape> shapes;
  for (const BlockPlan& b : plan.blocks) {
    shapes.push_back({static_cast<int64_t>(b.heads.size()),
                      static_cast<int64_t>(b.kv_heads.size()),
                      static_cast<int64_t>(b.channels.size())});
  }
  return shapes;
}

absl::StatusOr<NamedTensors> SliceTensors(const model::ModelImpl& model,
                                          const PruningPlan& plan,
                                          const NamedTensors& tensors) {
  if (absl::Status s = ValidatePlan(model, plan); !s.ok()) return s;
  const std::vector<model::BlockShape> shapes = model.block_shapes();
  NamedTensors out;
  for (const auto& item : tensors) {
    std::optional<Slice> slice = SliceFor(model, plan, shapes, item.key());
    if (!slice) {
      out.insert(item.key(), item.value().detach().clone());
      continue;
    }
    const at::Tensor& t = item.value();
    if (t.dim() <= slice->dim || t.size(slice->dim) != slice->full_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pruning: \"", item.key(), "\" has shape ", c10::str(t.sizes()),
          ", expected size ", slice->full_size, " in dimension ", slice->dim));
    }
    out.insert(item.key(), t.detach().index_select(slice->dim, slice->index));
  }
  return out;
}

namespace {

// What a device works from without the full model: the full model's block
// shapes from its config.json text, `plan` validated against them, and the
// sub-model the plan leaves, built from the config with fresh weights
// (its block prefixes and head width are the full model's).
struct PlannedFromConfig {
  std::vector<model::BlockShape> shapes;
  model::Model sub;
};
absl::StatusOr<PlannedFromConfig> PlanFromConfig(const std::string& config_json,
                                                 const PruningPlan& plan) {
  absl::StatusOr<std::vector<model::BlockShape>> shapes =
      model::BlockShapesFromConfig(config_json);
  if (!shapes.ok()) return shapes.status();
  if (absl::Status s = ValidatePlan(*shapes, plan); !s.ok()) return s;
  absl::StatusOr<model::Model> sub =
      model::CreateModelFromConfig(config_json, PlannedShapes(plan));
  if (!sub.ok()) return sub.status();
  return PlannedFromConfig{*std::move(shapes), *std::move(sub)};
}

// ScatterTensors against the full model's block `shapes`; `model` (full or
// pruned: the block prefixes and head width are the same) names the blocks.
// `plan` is valid for `shapes`.
absl::StatusOr<Scattered> ScatterToShapes(
    const model::ModelImpl& model, const std::vector<model::BlockShape>& shapes,
    const PruningPlan& plan, const NamedTensors& pruned) {
  Scattered out;
  for (const auto& item : pruned) {
    const at::Tensor& t = item.value();
    std::optional<Slice> slice = SliceFor(model, plan, shapes, item.key());
    if (!slice) {
      out.tensors.insert(item.key(), t.detach());
      continue;
    }
    if (t.dim() <= slice->dim || t.size(slice->dim) != slice->index.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pruning: \"", item.key(), "\" has shape ", c10::str(t.sizes()),
          ", the plan keeps ", slice->index.size(0), " entries in dimension ",
          slice->dim));
    }
    if (slice->index.size(0) == slice->full_size) {
      // Kept whole (indices are sorted and unique): already full-size.
      out.tensors.insert(item.key(), t.detach());
      continue;
    }
    std::vector<int64_t> full_shape = t.sizes().vec();
    full_shape[slice->dim] = slice->full_size;
    at::Tensor full = torch::zeros(full_shape, t.options());
    full.index_copy_(slice->dim, slice->index, t.detach());
    at::Tensor coverage = torch::zeros(full_shape, t.options());
    coverage.index_fill_(slice->dim, slice->index, 1.0);
    out.tensors.insert(item.key(), full);
    out.coverage.insert(item.key(), coverage);
  }
  return out;
}

}  // namespace

absl::StatusOr<Scattered> ScatterTensors(const model::ModelImpl& model,
                                         const PruningPlan& plan,
                                         const NamedTensors& pruned) {
  if (absl::Status s = ValidatePlan(model, plan); !s.ok()) return s;
  return ScatterToShapes(model, model.block_shapes(), plan, pruned);
}

absl::StatusOr<Scattered> ScatterTensors(const std::string& config_json,
                                         const PruningPlan& plan,
                                         const NamedTensors& pruned) {
  // The sub-model's structure only names the blocks (no weights are read).
  absl::StatusOr<PlannedFromConfig> planned = PlanFromConfig(config_json, plan);
  if (!planned.ok()) return planned.status();
  return ScatterToShapes(*planned->sub, planned->shapes, plan, pruned);
}

absl::StatusOr<model::Model> ApplyPlan(model::ModelImpl& model,
                                       const PruningPlan& plan) {
  if (absl::Status s = ValidatePlan(model, plan); !s.ok()) return s;
  absl::StatusOr<model::Model> pruned =
      model.WithBlockShapes(PlannedShapes(plan));
  if (!pruned.ok()) return pruned.status();

  const std::vector<lora::AdaptedLinear> adapted = lora::NamedAdapters(model);
  if (!adapted.empty()) {
    lora::LoraOptions options;
    options.rank = adapted.front().adapter->rank();
    options.alpha = adapted.front().adapter->alpha();
    options.dropout = adapted.front().adapter->dropout();
    std::set<std::string> targets;
    for (const lora::AdaptedLinear& a : adapted) {
      if (a.adapter->merged()) {
        return absl::FailedPreconditionError(
            absl::StrCat("pruning: adapter on ", a.path, " is merged"));
      }
      if (a.adapter->rank() != options.rank) {
        return absl::InvalidArgumentError(
            "pruning: adapters of different ranks in one model");
      }
      targets.insert(a.path.substr(a.path.rfind('.') + 1));
    }
    options.target_modules.assign(targets.begin(), targets.end());
    absl::StatusOr<std::vector<std::string>> injected =
        lora::Inject(**pruned, options);
    if (!injected.ok()) return injected.status();
  }
  absl::StatusOr<NamedTensors> sliced =
      SliceTensors(model, plan, model.named_parameters(/*recurse=*/true));
  if (!sliced.ok()) return sliced.status();
  if (absl::Status s = model::LoadWeights(**pruned, *sliced); !s.ok()) return s;
  (*pruned)->train(model.is_training());
  return pruned;
}

absl::StatusOr<model::Model> CreatePrunedModel(const std::string& config_json,
                                               const PruningPlan& plan) {
  absl::StatusOr<PlannedFromConfig> planned = PlanFromConfig(config_json, plan);
  if (!planned.ok()) return planned.status();
  return std::move(planned->sub);
}

absl::StatusOr<model::Model> LoadPrunedModel(
    const std::string& config_json, const PruningPlan& plan,
    const model::SafetensorsReader& weights) {
  absl::StatusOr<PlannedFromConfig> planned = PlanFromConfig(config_json, plan);
  if (!planned.ok()) return planned.status();
  const std::vector<model::BlockShape>& shapes = planned->shapes;
  model::Model& pruned = planned->sub;
  // Block prefixes and the head width are the same in the sub-model.
  torch::NoGradGuard no_grad;
  for (auto& item : pruned->named_parameters(/*recurse=*/true)) {
    const model::SafetensorsEntry* entry = weights.Find(item.key());
    if (entry == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights lack parameter \"", item.key(), "\""));
    }
    std::optional<Slice> slice = SliceFor(*pruned, plan, shapes, item.key());
    if (slice && (slice->dim >= static_cast<int64_t>(entry->shape.size()) ||
                  entry->shape[slice->dim] != slice->full_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights: \"", item.key(), "\" has shape ",
          c10::str(c10::IntArrayRef(entry->shape)), ", expected size ",
          slice->full_size, " in dimension ", slice->dim));
    }
    absl::StatusOr<at::Tensor> value =
        slice ? weights.ReadSlice(
                    *entry, slice->dim,
                    absl::MakeConstSpan(slice->index.data_ptr<int64_t>(),
                                        slice->index.numel()))
              : weights.Read(*entry);
    if (!value.ok()) return value.status();
    at::Tensor& param = item.value();
    if (value->sizes() != param.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights: \"", item.key(), "\" has shape ", c10::str(value->sizes()),
          ", the sub-model needs ", c10::str(param.sizes())));
    }
    param.copy_(*value);
  }
  return std::move(pruned);
}

absl::StatusOr<PruningPlan> ComposePlans(const PruningPlan& outer,
                                         const PruningPlan& inner) {
  if (outer.blocks.size() != inner.blocks.size()) {
    return absl::InvalidArgumentError("compose: plans differ in block count");
  }
  PruningPlan out;
  for (size_t b = 0; b < outer.blocks.size(); ++b) {
    BlockPlan block;
    auto map = [&](const std::vector<int64_t>& o, const std::vector<int64_t>& i,
                   std::vector<int64_t>& result) -> absl::Status {
      for (int64_t x : i) {
        if (x < 0 || x >= static_cast<int64_t>(o.size())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "compose: block ", b, " index ", x, " outside the outer plan"));
        }
        result.push_back(o[x]);
      }
      return absl::OkStatus();
    };
    for (auto [o, i, r] :
         {std::tuple{&outer.blocks[b].heads, &inner.blocks[b].heads,
                     &block.heads},
          std::tuple{&outer.blocks[b].kv_heads, &inner.blocks[b].kv_heads,
                     &block.kv_heads},
          std::tuple{&outer.blocks[b].channels, &inner.blocks[b].channels,
                     &block.channels}}) {
      if (absl::Status s = map(*o, *i, *r); !s.ok()) return s;
    }
    out.blocks.push_back(std::move(block));
  }
  return out;
}

double RemovedFraction(const model::ModelImpl& model, const PruningPlan& plan) {
  const std::vector<model::BlockShape> shapes = model.block_shapes();
  double total = 0;
  double kept = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    std::optional<Slice> slice = SliceFor(model, plan, shapes, item.key());
    if (!slice || absl::StrContains(item.key(), ".adapter.")) continue;
    const double numel = static_cast<double>(item.value().numel());
    total += numel;
    if (slice->full_size > 0) {
      kept += numel * static_cast<double>(slice->index.size(0)) /
              static_cast<double>(slice->full_size);
    }
  }
  return total > 0 ? 1.0 - kept / total : 0.0;
}

double PrunableShare(const model::ModelImpl& model) {
  const PruningPlan full = FullPlan(model);
  const std::vector<model::BlockShape> shapes = model.block_shapes();
  double all = 0, prunable = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (absl::StrContains(item.key(), ".adapter.")) continue;
    const double numel = static_cast<double>(item.value().numel());
    all += numel;
    if (SliceFor(model, full, shapes, item.key())) prunable += numel;
  }
  return all > 0 ? prunable / all : 0.0;
}

}  // namespace fedge::pruning
