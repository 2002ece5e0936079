// Which registered devices are invited to a round.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::strategies {

enum class SelectionKind {
  kAll,      // Every available device.
  kRandomK,  // k devices uniformly at random.
  // Deadline-aware with over-commit: invite ceil(k * overcommit) devices,
  // those expected to finish within the deadline first (randomly among
  // them), then those never measured, then the slowest last; the round
  // closes when k updates arrived or at the deadline.
  kDeadlineAware,
  // Each device independently with probability sampling_rate (Poisson
  // sampling, what differential privacy's accountant assumes); the round
  // closes when every invited device has answered or at the deadline.
  kPoisson,
};

// "all", "random", "deadline", "poisson". InvalidArgument otherwise.
absl::StatusOr<SelectionKind> ParseSelectionKind(absl::string_view name);

struct SelectionOptions {
  SelectionKind kind = SelectionKind::kAll;
  int clients_per_round = 0;   // k; 0 means all available.
  double overcommit = 1.3;     // kDeadlineAware, >= 1.
  double sampling_rate = 1.0;  // kPoisson, in (0, 1].
};

struct Candidate {
  std::string id;
  // Expected seconds from task to update (from past rounds); < 0 unknown.
  double expected_seconds = -1;
};

struct Selection {
  std::vector<std::string> invited;  // In candidate order.
  int64_t target_updates = 0;        // Close the round early at this many.
};

// Picks from `candidates` (ids unique). `deadline_seconds` is the round's
// length. Deterministic given `rng`.
Selection SelectClients(const std::vector<Candidate>& candidates,
                        const SelectionOptions& options,
                        double deadline_seconds, std::mt19937_64& rng);

}  // namespace fedge::strategies
