#include "tests/testing/prune_reference.h"

#include "absl/strings/str_replace.h"
#include <torch/types.h>

namespace fedge::testing {
namespace {

std::string Name(const std::string& prefix, size_t block,
                 const std::string& rest) {
  return absl::StrReplaceAll(prefix, {{"{}", std::to_string(block)}}) + rest;
}

// Indices of the rows (or columns) of the given units of width `width`.
at::Tensor UnitRows(const std::vector<int64_t>& units, int64_t width) {
  std::vector<int64_t> rows;
  for (int64_t u : units) {
    for (int64_t i = 0; i < width; ++i) rows.push_back(u * width + i);
  }
  return torch::tensor(rows, torch::kLong);
}

}  // namespace

model::NamedTensors ZeroRemoved(const model::NamedTensors& full,
                                const std::string& prefix,
                                const std::vector<BlockKeep>& keep,
                                int64_t head_dim) {
  model::NamedTensors out;
  for (const auto& item : full) out.insert(item.key(), item.value().clone());
  for (size_t b = 0; b < keep.size(); ++b) {
    at::Tensor o = out[Name(prefix, b, "self_attn.o_proj.weight")];
    const int64_t heads = o.size(1) / head_dim;
    for (int64_t h = 0; h < heads; ++h) {
      bool kept = false;
      for (int64_t k : keep[b].heads) kept = kept || k == h;
      if (!kept) o.narrow(1, h * head_dim, head_dim).zero_();
    }
    at::Tensor down = out[Name(prefix, b, "mlp.down_proj.weight")];
    for (int64_t c = 0; c < down.size(1); ++c) {
      bool kept = false;
      for (int64_t k : keep[b].channels) kept = kept || k == c;
      if (!kept) down.select(1, c).zero_();
    }
  }
  return out;
}

model::NamedTensors SliceKept(const model::NamedTensors& full,
                              const std::string& prefix,
                              const std::vector<BlockKeep>& keep,
                              int64_t head_dim) {
  model::NamedTensors out;
  for (const auto& item : full) out.insert(item.key(), item.value().clone());
  auto slice = [&](const std::string& name, int64_t dim,
                   const at::Tensor& idx) {
    if (at::Tensor* t = out.find(name)) *t = t->index_select(dim, idx);
  };
  for (size_t b = 0; b < keep.size(); ++b) {
    const at::Tensor q_rows = UnitRows(keep[b].heads, head_dim);
    const at::Tensor kv_rows = UnitRows(keep[b].kv_heads, head_dim);
    const at::Tensor channels = torch::tensor(keep[b].channels, torch::kLong);
    for (const char* p : {"weight", "bias"}) {
      const std::string s(p);
      slice(Name(prefix, b, "self_attn.q_proj." + s), 0, q_rows);
      slice(Name(prefix, b, "self_attn.k_proj." + s), 0, kv_rows);
      slice(Name(prefix, b, "self_attn.v_proj." + s), 0, kv_rows);
      slice(Name(prefix, b, "mlp.gate_proj." + s), 0, channels);
      slice(Name(prefix, b, "mlp.up_proj." + s), 0, channels);
    }
    slice(Name(prefix, b, "self_attn.o_proj.weight"), 1, q_rows);
    slice(Name(prefix, b, "mlp.down_proj.weight"), 1, channels);
  }
  return out;
}

}  // namespace fedge::testing
