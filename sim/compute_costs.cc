#include "sim/compute_costs.h"

#include <cerrno>
#include <cmath>
#include <ctime>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

#include "model/file_io.h"

namespace fedge::sim {

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) +
         1e-9 * static_cast<double>(ts.tv_nsec);
}

absl::StatusOr<std::unique_ptr<ComputeCostTable>> ComputeCostTable::Open(
    const std::string& path) {
  if (path.empty()) {
    return std::unique_ptr<ComputeCostTable>(
        new ComputeCostTable("", nullptr, {}));
  }
  Costs costs;
  absl::StatusOr<std::string> text = model::ReadFile(path);
  if (!text.ok() && !absl::IsNotFound(text.status())) return text.status();
  if (text.ok() && !text->empty()) {
    if (text->back() != '\n') {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": truncated (its last line has no newline)"));
    }
    text->pop_back();
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      ++line_number;
      const std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
      double seconds = 0;
      if (fields.size() != 2 || fields[0].empty() ||
          !absl::SimpleAtod(fields[1], &seconds) || !std::isfinite(seconds) ||
          seconds < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_number,
            ": expected KEY<tab>SECONDS with a finite cost >= 0, got \"", line,
            "\""));
      }
      if (!costs.emplace(std::string(fields[0]), seconds).second) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number,
                                                       ": key \"", fields[0],
                                                       "\" is there twice"));
      }
    }
  }
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return model::ErrnoToStatus(errno, "open for appending", path);
  }
  return std::unique_ptr<ComputeCostTable>(
      new ComputeCostTable(path, file, std::move(costs)));
}

ComputeCostTable::ComputeCostTable(std::string path, std::FILE* file,
                                   Costs costs)
    : path_(std::move(path)), file_(file), costs_(std::move(costs)) {}

ComputeCostTable::~ComputeCostTable() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr) std::fclose(file_);
}

std::optional<double> ComputeCostTable::Find(absl::string_view key) const {
  absl::MutexLock lock(&mu_);
  if (auto it = costs_.find(key); it != costs_.end()) return it->second;
  return std::nullopt;
}

double ComputeCostTable::Charge(absl::string_view key, double measured) {
  absl::MutexLock lock(&mu_);
  if (auto it = costs_.find(key); it != costs_.end()) return it->second;
  costs_.emplace(std::string(key), measured);
  if (file_ != nullptr && !write_failed_) {
    // %.17g: the cost read back is the one charged.
    const std::string line = absl::StrFormat("%s\t%.17g\n", key, measured);
    if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0) {
      write_failed_ = true;
      std::fprintf(stderr,
                   "fedge-vclock: cannot append to %s; compute costs are "
                   "kept in memory only\n",
                   path_.c_str());
    }
  }
  return measured;
}

size_t ComputeCostTable::size() const {
  absl::MutexLock lock(&mu_);
  return costs_.size();
}

}  // namespace fedge::sim
