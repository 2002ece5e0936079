#include "metrics/registry.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <glog/logging.h>

namespace fedge::metrics {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string LabelText(const Labels& labels,
                      const std::pair<std::string, std::string>* extra) {
  if (labels.empty() && extra == nullptr) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::pair<std::string, std::string>& label) {
    if (!first) out += ",";
    first = false;
    absl::StrAppend(&out, label.first, "=\"", Escape(label.second), "\"");
  };
  for (const auto& label : labels) add(label);
  if (extra != nullptr) add(*extra);
  return out + "}";
}

}  // namespace

void Registry::Declare(const std::string& name, Kind kind,
                       const std::string& help, std::vector<double> bounds) {
  CHECK(ValidName(name)) << "bad metric name " << name;
  absl::MutexLock lock(&mu_);
  CHECK(families_.count(name) == 0) << "metric declared twice: " << name;
  CHECK(std::is_sorted(bounds.begin(), bounds.end()));
  families_[name] = Family{kind, help, std::move(bounds), {}};
  order_.push_back(name);
}

void Registry::DeclareCounter(const std::string& name,
                              const std::string& help) {
  Declare(name, Kind::kCounter, help, {});
}
void Registry::DeclareGauge(const std::string& name, const std::string& help) {
  Declare(name, Kind::kGauge, help, {});
}
void Registry::DeclareHistogram(const std::string& name,
                                const std::string& help,
                                std::vector<double> buckets) {
  Declare(name, Kind::kHistogram, help, std::move(buckets));
}

Registry::Series& Registry::Find(const std::string& name, Kind kind,
                                 const Labels& labels) {
  auto it = families_.find(name);
  CHECK(it != families_.end()) << "undeclared metric " << name;
  CHECK(it->second.kind == kind) << "wrong kind of metric " << name;
  for (const auto& label : labels) {
    CHECK(ValidName(label.first) && label.first != "le")
        << "bad label name " << label.first << " on " << name;
  }
  Series& series = it->second.series[labels];
  if (kind == Kind::kHistogram && series.buckets.empty()) {
    series.buckets.assign(it->second.bounds.size(), 0);
  }
  return series;
}

void Registry::Increment(const std::string& name, const Labels& labels,
                         double value) {
  absl::MutexLock lock(&mu_);
  CHECK(value >= 0) << "counters only go up: " << name;
  Find(name, Kind::kCounter, labels).value += value;
}

void Registry::Set(const std::string& name, const Labels& labels,
                   double value) {
  absl::MutexLock lock(&mu_);
  Find(name, Kind::kGauge, labels).value = value;
}

void Registry::Observe(const std::string& name, const Labels& labels,
                       double value) {
  absl::MutexLock lock(&mu_);
  Series& series = Find(name, Kind::kHistogram, labels);
  const std::vector<double>& bounds = families_.at(name).bounds;
  const size_t bucket =
      std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  if (bucket < bounds.size()) ++series.buckets[bucket];
  ++series.count;
  series.sum += value;
}

double Registry::Value(const std::string& name, const Labels& labels) const {
  absl::MutexLock lock(&mu_);
  auto family = families_.find(name);
  if (family == families_.end()) return 0;
  auto series = family->second.series.find(labels);
  return series == family->second.series.end() ? 0 : series->second.value;
}

std::string Registry::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const std::string& name : order_) {
    const Family& family = families_.at(name);
    const char* type = family.kind == Kind::kCounter ? "counter"
                       : family.kind == Kind::kGauge ? "gauge"
                                                     : "histogram";
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family.help), "\n",
                    "# TYPE ", name, " ", type, "\n");
    for (const auto& [labels, series] : family.series) {
      if (family.kind != Kind::kHistogram) {
        absl::StrAppend(&out, name, LabelText(labels, nullptr), " ",
                        FormatValue(series.value), "\n");
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i < family.bounds.size(); ++i) {
        cumulative += series.buckets[i];
        const std::pair<std::string, std::string> le{
            "le", FormatValue(family.bounds[i])};
        absl::StrAppend(&out, name, "_bucket", LabelText(labels, &le), " ",
                        cumulative, "\n");
      }
      const std::pair<std::string, std::string> inf{"le", "+Inf"};
      absl::StrAppend(&out, name, "_bucket", LabelText(labels, &inf), " ",
                      series.count, "\n", name, "_sum",
                      LabelText(labels, nullptr), " ", FormatValue(series.sum),
                      "\n", name, "_count", LabelText(labels, nullptr), " ",
                      series.count, "\n");
    }
  }
  return out;
}

std::vector<double> SecondsBuckets() {
  std::vector<double> b;
  for (double v = 0.001; v < 1100; v *= 2) b.push_back(v);
  return b;
}

std::vector<double> BytesBuckets() {
  std::vector<double> b;
  for (double v = 1024; v <= 4.0 * (1LL << 30); v *= 4) b.push_back(v);
  return b;
}

}  // namespace fedge::metrics
