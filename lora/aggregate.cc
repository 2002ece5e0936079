#include "lora/aggregate.h"

#include <cmath>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <torch/linalg.h>
#include <torch/types.h>

#include "lora/lora.h"

namespace fedge::lora {
namespace {

// One adapted Linear of one client.
struct Factors {
  std::string path;
  at::Tensor a;  // [r, in], float64.
  at::Tensor b;  // [out, r], float64.
};

const std::string kSuffixA = absl::StrCat(".", kLoraA);
const std::string kSuffixB = absl::StrCat(".", kLoraB);

// Pairs up A and B by path and checks shapes; all float64.
absl::StatusOr<std::vector<Factors>> SplitFactors(const NamedTensors& adapters,
                                                  absl::string_view who) {
  std::vector<Factors> out;
  for (const auto& item : adapters) {
    const std::string& name = item.key();
    if (absl::EndsWith(name, kSuffixB)) continue;
    if (!absl::EndsWith(name, kSuffixA)) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": \"", name, "\" is not a LoRA tensor"));
    }
    const std::string path = name.substr(0, name.size() - kSuffixA.size());
    const at::Tensor* b = adapters.find(path + kSuffixB);
    const at::Tensor& a = item.value();
    if (b == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": \"", path, "\" has lora_A but no lora_B"));
    }
    if (!a.defined() || !b->defined() || a.dim() != 2 || b->dim() != 2 ||
        a.size(0) != b->size(1) || a.size(0) < 1 ||
        !at::isFloatingType(a.scalar_type()) ||
        !at::isFloatingType(b->scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": \"", path,
                       "\" needs float A [r, in] and B [out, r] with r >= 1"));
    }
    if (!torch::isfinite(a).all().item<bool>() ||
        !torch::isfinite(*b).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": \"", path, "\" has NaN or infinite values"));
    }
    out.push_back({path, a.to(torch::kFloat64), b->to(torch::kFloat64)});
  }
  for (const auto& item : adapters) {
    if (absl::EndsWith(item.key(), kSuffixB)) {
      const std::string path =
          item.key().substr(0, item.key().size() - kSuffixB.size());
      if (adapters.find(path + kSuffixA) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(who, ": \"", path, "\" has lora_B but no lora_A"));
      }
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": no adapters"));
  }
  return out;
}

double Scale(double alpha, int64_t rank) { return alpha / double(rank); }

}  // namespace

absl::StatusOr<RankMethod> ParseRankMethod(absl::string_view name) {
  if (name == "zeropad") return RankMethod::kZeroPad;
  if (name == "svd") return RankMethod::kSvd;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown rank aggregation \"", name, "\" (zeropad or svd)"));
}

int64_t ReviveDeadComponents(NamedTensors& adapters, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  int64_t revived = 0;
  for (auto& item : adapters) {
    if (!absl::EndsWith(item.key(), kSuffixA)) continue;
    at::Tensor& a = item.value();
    const std::string path =
        item.key().substr(0, item.key().size() - kSuffixA.size());
    at::Tensor* b = adapters.find(path + kSuffixB);
    if (b == nullptr || a.dim() != 2 || b->dim() != 2 ||
        b->size(1) != a.size(0)) {
      continue;
    }
    const at::Tensor a_norms = a.to(torch::kFloat64).norm(2, {1});
    const at::Tensor b_norms = b->to(torch::kFloat64).norm(2, {0});
    const double a_floor = 1e-3 * a_norms.max().item<double>();
    const double b_floor = 1e-3 * b_norms.max().item<double>();
    const double bound = 1.0 / std::sqrt(static_cast<double>(a.size(1)));
    for (int64_t i = 0; i < a.size(0); ++i) {
      if (a_norms[i].item<double>() > a_floor ||
          b_norms[i].item<double>() > b_floor) {
        continue;
      }
      a[i].uniform_(-bound, bound, generator);
      b->select(1, i).zero_();
      ++revived;
    }
  }
  return revived;
}

absl::StatusOr<NamedTensors> AdapterDeltas(const NamedTensors& adapters,
                                           double alpha) {
  absl::StatusOr<std::vector<Factors>> factors =
      SplitFactors(adapters, "adapter");
  if (!factors.ok()) return factors.status();
  NamedTensors out;
  for (const Factors& f : *factors) {
    out.insert(f.path, torch::matmul(f.b, f.a) * Scale(alpha, f.a.size(0)));
  }
  return out;
}

absl::StatusOr<NamedTensors> AdapterChange(const NamedTensors& update,
                                           const NamedTensors& sent,
                                           double alpha) {
  absl::StatusOr<NamedTensors> trained = AdapterDeltas(update, alpha);
  if (!trained.ok()) return trained.status();
  absl::StatusOr<NamedTensors> given =
      AdapterDeltas(SeparateResiduals(sent).adapters, alpha);
  if (!given.ok()) return given.status();
  NamedTensors change;
  for (const auto& item : *trained) {
    const at::Tensor* before = given->find(item.key());
    if (before == nullptr || before->sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update '", item.key(), "' does not match the payload sent"));
    }
    change.insert(item.key(), item.value() - *before);
  }
  return change;
}

absl::StatusOr<GlobalAdapter> Aggregate(
    absl::Span<const ClientAdapters> clients, RankMethod method, double alpha) {
  if (clients.empty()) {
    return absl::InvalidArgumentError("aggregate: no client adapters");
  }
  if (!(alpha > 0)) return absl::InvalidArgumentError("aggregate: alpha <= 0");
  std::vector<std::vector<Factors>> all;
  double total_weight = 0;
  GlobalAdapter global;
  global.method = method;
  global.alpha = alpha;
  for (size_t k = 0; k < clients.size(); ++k) {
    const std::string who = absl::StrCat("client ", k);
    if (!(clients[k].weight > 0) || !std::isfinite(clients[k].weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": weight must be positive"));
    }
    absl::StatusOr<std::vector<Factors>> f =
        SplitFactors(clients[k].adapters, who);
    if (!f.ok()) return f.status();
    if (k > 0) {
      const std::vector<Factors>& first = all.front();
      if (f->size() != first.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(who, ": adapts ", f->size(),
                         " Linears, client 0 adapts ", first.size()));
      }
      for (size_t i = 0; i < f->size(); ++i) {
        const Factors& mine = (*f)[i];
        if (mine.path != first[i].path ||
            mine.a.size(1) != first[i].a.size(1) ||
            mine.b.size(0) != first[i].b.size(0)) {
          return absl::InvalidArgumentError(absl::StrCat(
              who, ": \"", mine.path, "\" does not match client 0's \"",
              first[i].path, "\" in name or in/out size"));
        }
      }
    }
    for (const Factors& x : *f) {
      global.max_rank = std::max(global.max_rank, x.a.size(0));
    }
    total_weight += clients[k].weight;
    all.push_back(*std::move(f));
  }

  torch::NoGradGuard no_grad;
  const int64_t R = global.max_rank;
  for (size_t i = 0; i < all.front().size(); ++i) {
    const std::string& path = all.front()[i].path;
    const int64_t in = all.front()[i].a.size(1);
    const int64_t out = all.front()[i].b.size(0);
    if (method == RankMethod::kSvd) {
      at::Tensor sum = torch::zeros({out, in}, torch::kFloat64);
      for (size_t k = 0; k < all.size(); ++k) {
        const Factors& f = all[k][i];
        sum += torch::matmul(f.b, f.a) *
               (Scale(alpha, f.a.size(0)) * clients[k].weight);
      }
      global.deltas.insert(path, (sum / total_weight).to(torch::kFloat32));
    } else {
      at::Tensor a_sum = torch::zeros({R, in}, torch::kFloat64);
      at::Tensor b_sum = torch::zeros({out, R}, torch::kFloat64);
      for (size_t k = 0; k < all.size(); ++k) {
        const Factors& f = all[k][i];
        const int64_t r = f.a.size(0);
        // Keep scale_k B_k A_k = scale_R B' A' by rescaling B.
        a_sum.narrow(0, 0, r) += f.a * clients[k].weight;
        b_sum.narrow(1, 0, r) +=
            f.b * (clients[k].weight * Scale(alpha, r) / Scale(alpha, R));
      }
      global.factors.insert(path + kSuffixA,
                            (a_sum / total_weight).to(torch::kFloat32));
      global.factors.insert(path + kSuffixB,
                            (b_sum / total_weight).to(torch::kFloat32));
    }
  }
  return global;
}

absl::StatusOr<RankedAdapter> AdapterForRank(const GlobalAdapter& global,
                                             int64_t rank) {
  if (rank < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter rank must be at least 1, got ", rank));
  }
  torch::NoGradGuard no_grad;
  RankedAdapter result;
  auto record = [&](const std::string& path, double error) {
    result.truncation_error[path] = error;
    result.max_truncation_error = std::max(result.max_truncation_error, error);
  };
  const double scale = Scale(global.alpha, rank);
  if (global.method == RankMethod::kSvd) {
    for (const auto& item : global.deltas) {
      const at::Tensor delta = item.value().to(torch::kFloat64);
      auto [u, s, vh] =
          torch::linalg::svd(delta, /*full_matrices=*/false, c10::nullopt);
      const int64_t k = std::min<int64_t>(rank, s.size(0));
      const at::Tensor root = s.narrow(0, 0, k).sqrt();
      at::Tensor b = torch::zeros({delta.size(0), rank}, torch::kFloat64);
      at::Tensor a = torch::zeros({rank, delta.size(1)}, torch::kFloat64);
      // scale * B A = U_k S_k V_k^T.
      b.narrow(1, 0, k).copy_(u.narrow(1, 0, k) * root / std::sqrt(scale));
      a.narrow(0, 0, k).copy_(root.unsqueeze(1) * vh.narrow(0, 0, k) /
                              std::sqrt(scale));
      const double total = s.pow(2).sum().item<double>();
      const double kept = s.narrow(0, 0, k).pow(2).sum().item<double>();
      record(item.key(),
             total > 0 ? std::sqrt(std::max(0.0, total - kept) / total) : 0.0);
      result.adapters.insert(item.key() + kSuffixA, a.to(torch::kFloat32));
      result.adapters.insert(item.key() + kSuffixB, b.to(torch::kFloat32));
    }
    return result;
  }
  const int64_t R = global.max_rank;
  const int64_t k = std::min(rank, R);
  for (const auto& item : global.factors) {
    if (!absl::EndsWith(item.key(), kSuffixA)) continue;
    const std::string path =
        item.key().substr(0, item.key().size() - kSuffixA.size());
    const at::Tensor a_full = item.value().to(torch::kFloat64);
    const at::Tensor b_full =
        global.factors[path + kSuffixB].to(torch::kFloat64);
    at::Tensor a = torch::zeros({rank, a_full.size(1)}, torch::kFloat64);
    at::Tensor b = torch::zeros({b_full.size(0), rank}, torch::kFloat64);
    a.narrow(0, 0, k).copy_(a_full.narrow(0, 0, k));
    b.narrow(1, 0, k).copy_(b_full.narrow(1, 0, k) *
                            (Scale(global.alpha, R) / scale));
    const at::Tensor full =
        torch::matmul(b_full, a_full) * Scale(global.alpha, R);
    const double norm = full.norm().item<double>();
    record(
        path,
        norm > 0
            ? (full - torch::matmul(b, a) * scale).norm().item<double>() / norm
            : 0.0);
    result.adapters.insert(path + kSuffixA, a.to(torch::kFloat32));
    result.adapters.insert(path + kSuffixB, b.to(torch::kFloat32));
  }
  return result;
}

}  // namespace fedge::lora
