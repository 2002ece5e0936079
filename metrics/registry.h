// Prometheus metrics: counters, gauges and histograms with labels, rendered
// in the text exposition format (version 0.0.4) that Prometheus scrapes.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fedge::metrics {

// Label name/value pairs, e.g. {{"phase", "upload"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Thread-safe.
class Registry {
 public:
  // Declares a family once, before use. Names and label names must follow
  // Prometheus' rules ([a-zA-Z_:][a-zA-Z0-9_:]*); a bad or repeated name is
  // a programming error (CHECK).
  void DeclareCounter(const std::string& name, const std::string& help);
  void DeclareGauge(const std::string& name, const std::string& help);
  // `buckets`: ascending upper bounds; +Inf is implicit.
  void DeclareHistogram(const std::string& name, const std::string& help,
                        std::vector<double> buckets);

  // Using an undeclared name or the wrong kind is a programming error.
  void Increment(const std::string& name, const Labels& labels = {},
                 double value = 1);
  void Set(const std::string& name, const Labels& labels, double value);
  void Observe(const std::string& name, const Labels& labels, double value);

  // The value of a counter or gauge series (0 if never set); for tests and
  // progress output.
  double Value(const std::string& name, const Labels& labels = {}) const;

  // Every family, in declaration order, series sorted by labels.
  std::string Render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Series {
    double value = 0;               // Counter, gauge.
    std::vector<uint64_t> buckets;  // Histogram: per bucket (not cumul.).
    uint64_t count = 0;
    double sum = 0;
  };
  struct Family {
    Kind kind;
    std::string help;
    std::vector<double> bounds;
    std::map<Labels, Series> series;
  };

  void Declare(const std::string& name, Kind kind, const std::string& help,
               std::vector<double> bounds);
  Series& Find(const std::string& name, Kind kind, const Labels& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

// Buckets for durations in seconds, 1 ms to about 17 minutes.
std::vector<double> SecondsBuckets();
// Buckets for sizes in bytes, 1 KiB to 4 GiB in powers of 4.
std::vector<double> BytesBuckets();

}  // namespace fedge::metrics
