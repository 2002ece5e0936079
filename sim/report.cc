#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include <nlohmann/json.hpp>

#include "metrics/csv.h"
#include "strategies/reward.h"

namespace fedge::sim {
namespace {

// Adds an accepted client row's phase times to `p`.
void AddPhases(PhaseShares& p, const Row& c) {
  p.download += RowNumber(c, "download_s");
  p.train += RowNumber(c, "train_s");
  p.upload += RowNumber(c, "upload_s");
  p.wait += RowNumber(c, "wait_s");
  ++p.rows;
}

std::string Escape(absl::string_view text) {
  return absl::StrReplaceAll(
      text, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                   "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                   "#bcbd22", "#17becf"};
const char* Color(size_t i) { return kColors[i % std::size(kColors)]; }

// A plot area of w x h with margins, mapping data to pixels.
struct Frame {
  double w = 640, h = 300, left = 60, right = 160, top = 20, bottom = 45;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  // x ticks: 5 evenly spaced, one per integer (rounds), or none.
  enum class XTicks { kEven, kIntegers, kNone } x_ticks = XTicks::kEven;
  double X(double x) const {
    return left + (x - x0) / std::max(1e-12, x1 - x0) * (w - left - right);
  }
  double Y(double y) const {
    return h - bottom -
           (y - y0) / std::max(1e-12, y1 - y0) * (h - top - bottom);
  }
  std::string Open(const std::string& title) const {
    return absl::StrFormat(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
        "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"11\">"
        "<title>%s</title><rect width=\"100%%\" height=\"100%%\" "
        "fill=\"white\"/>",
        w, h, Escape(title));
  }
  // Axes with 5 ticks each and labels.
  std::string Axes(const std::string& x_label, const std::string& y_label,
                   int y_decimals = 2) const {
    std::string s = absl::StrFormat(
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
        "stroke=\"black\"/><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
        "y2=\"%.1f\" stroke=\"black\"/>",
        left, h - bottom, w - right, h - bottom, left, top, left, h - bottom);
    std::vector<double> xs;
    if (x_ticks == XTicks::kEven) {
      for (int i = 0; i <= 4; ++i) xs.push_back(x0 + (x1 - x0) * i / 4);
    } else if (x_ticks == XTicks::kIntegers) {
      const int step = std::max(1, static_cast<int>((x1 - x0) / 15) + 1);
      for (int x = static_cast<int>(std::ceil(x0)); x <= x1; x += step) {
        xs.push_back(x);
      }
    }
    for (double xv : xs) {
      absl::StrAppendFormat(
          &s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3g</text>",
          X(xv), h - bottom + 14, xv);
    }
    for (int i = 0; i <= 4; ++i) {
      const double yv = y0 + (y1 - y0) * i / 4;
      absl::StrAppendFormat(&s,
                            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                            "y2=\"%.1f\" stroke=\"#ddd\"/>",
                            left, Y(yv), w - right, Y(yv));
      absl::StrAppendFormat(&s,
                            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                            left - 4, Y(yv) + 4);
      absl::StrAppend(&s, absl::StrFormat("%.*f", y_decimals, yv), "</text>");
    }
    absl::StrAppendFormat(
        &s,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>"
        "<text transform=\"translate(14,%.1f) rotate(-90)\" "
        "text-anchor=\"middle\">%s</text>",
        (left + w - right) / 2, h - 8, Escape(x_label), (top + h - bottom) / 2,
        Escape(y_label));
    return s;
  }
  std::string Legend(size_t index, const std::string& label,
                     const std::string& color) const {
    const double y = top + 14 * index + 6;
    return absl::StrFormat(
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" "
        "fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>",
        w - right + 10, y - 8, color, w - right + 24, y + 1, Escape(label));
  }
};

// The metric after each evaluated round against seconds since the start.
std::vector<std::pair<double, double>> MetricCurve(const StrategyRun& run) {
  std::vector<std::pair<double, double>> points;
  if (run.base_value >= 0) points.push_back({0, run.base_value});
  for (const Row& r : run.rounds) {
    const double value = run.metric.Read(r);
    if (RowText(r, "committed") != "1" || value < 0) continue;
    points.push_back({RowNumber(r, "unix_time") - run.start_unix, value});
  }
  return points;
}

std::string MetricChart(const std::vector<StrategyRun>& runs,
                        const Metric& metric, double target) {
  Frame f;
  f.w = 760;
  f.right = 220;
  double x_max = 1;
  double y_min = std::numeric_limits<double>::infinity();
  double y_max = -std::numeric_limits<double>::infinity();
  for (const StrategyRun& run : runs) {
    for (auto [x, y] : MetricCurve(run)) {
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  }
  if (y_min > y_max) y_min = 0, y_max = 1;
  f.x1 = x_max;
  const double pad = metric.percent ? 0.02 : 0.05 * (y_max - y_min + 1e-3);
  f.y0 = std::max(0.0, y_min - pad);
  f.y1 = metric.percent ? std::min(1.0, y_max + pad) : y_max + pad;
  std::string s = f.Open(metric.label + " versus wall time");
  // Bits per byte move in the third decimal.
  s += f.Axes("wall time (s)", "global held-out " + metric.label,
              metric.percent ? 2 : 4);
  if (target > f.y0 && target < f.y1) {
    absl::StrAppendFormat(
        &s,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
        "y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4\"/>",
        f.X(0), f.Y(target), f.X(x_max), f.Y(target));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    std::vector<std::string> points;
    for (auto [x, y] : MetricCurve(runs[i])) {
      points.push_back(absl::StrFormat("%.1f,%.1f", f.X(x), f.Y(y)));
    }
    absl::StrAppendFormat(&s,
                          "<polyline class=\"metric\" fill=\"none\" "
                          "stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>",
                          Color(i), absl::StrJoin(points, " "));
    s += f.Legend(i, runs[i].name, Color(i));
  }
  return s + "</svg>";
}

// Per link type: stacked mean download/train/upload/wait per round, plus the
// round's aggregation time.
std::string BreakdownChart(const StrategyRun& run) {
  std::map<std::string, std::map<int64_t, PhaseShares>> by_link;
  std::map<int64_t, double> aggregate;
  for (const Row& r : run.rounds) {
    if (RowText(r, "committed") == "1") {
      aggregate[static_cast<int64_t>(RowNumber(r, "round"))] =
          RowNumber(r, "aggregate_s");
    }
  }
  for (const Row& c : run.clients) {
    if (RowText(c, "status") != "accepted") continue;
    AddPhases(by_link[RowText(c, "link")]
                     [static_cast<int64_t>(RowNumber(c, "round"))],
              c);
  }
  std::string out;
  const char* names[] = {"download", "train", "upload", "wait", "aggregate"};
  const char* colors[] = {"#1f77b4", "#2ca02c", "#d62728", "#c7c7c7",
                          "#9467bd"};
  for (const auto& [link, rounds] : by_link) {
    Frame f;
    f.w = 420;
    f.right = 100;
    f.h = 240;
    double y_max = 0;
    for (const auto& [round, p] : rounds) {
      y_max =
          std::max(y_max, (p.download + p.train + p.upload + p.wait) / p.rows +
                              aggregate[round]);
    }
    f.x0 = 0.5;
    f.x1 = rounds.empty() ? 1.5 : rounds.rbegin()->first + 0.5;
    f.x_ticks = Frame::XTicks::kIntegers;
    f.y1 = std::max(1e-3, y_max * 1.05);
    std::string s = f.Open("time breakdown per round, " + link);
    s += f.Axes("round", "seconds (mean per device)", 1);
    const double bar = 0.6 * (f.X(1) - f.X(0));
    for (const auto& [round, p] : rounds) {
      const double parts[] = {p.download / p.rows, p.train / p.rows,
                              p.upload / p.rows, p.wait / p.rows,
                              aggregate[round]};
      double base = 0;
      for (int k = 0; k < 5; ++k) {
        absl::StrAppendFormat(
            &s,
            "<rect class=\"phase-%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
            "height=\"%.1f\" fill=\"%s\"><title>round %d %s %.3f s</title>"
            "</rect>",
            names[k], f.X(round) - bar / 2, f.Y(base + parts[k]), bar,
            f.Y(base) - f.Y(base + parts[k]), colors[k], round, names[k],
            parts[k]);
        base += parts[k];
      }
    }
    for (int k = 0; k < 5; ++k) s += f.Legend(k, names[k], colors[k]);
    absl::StrAppendFormat(&s,
                          "<text x=\"%.1f\" y=\"14\" font-weight=\"bold\">%s"
                          "</text>",
                          f.left, Escape(link));
    out += s + "</svg>";
  }
  return out;
}

// Devices x rounds; each cell coloured by the pruning ratio, labelled with
// the LoRA rank.
std::string ArmsChart(const StrategyRun& run) {
  std::set<std::string> devices;
  int64_t last_round = 0;
  std::map<std::pair<std::string, int64_t>, const Row*> cells;
  for (const Row& c : run.clients) {
    const int64_t round = static_cast<int64_t>(RowNumber(c, "round"));
    devices.insert(RowText(c, "device"));
    last_round = std::max(last_round, round);
    cells[{RowText(c, "device"), round}] = &c;
  }
  const double cell = 28, left = 150, top = 30;
  std::string s = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
      "height=\"%.0f\" font-family=\"sans-serif\" font-size=\"10\">"
      "<title>arms per device</title><rect width=\"100%%\" "
      "height=\"100%%\" fill=\"white\"/>",
      std::max(left + cell * last_round + 40, 620.0),
      top + cell * devices.size() + 30);
  for (int64_t r = 1; r <= last_round; ++r) {
    absl::StrAppendFormat(&s,
                          "<text x=\"%.1f\" y=\"%.1f\" "
                          "text-anchor=\"middle\">%d</text>",
                          left + cell * (r - 0.5), top - 6, r);
  }
  int row = 0;
  for (const std::string& device : devices) {
    const double y = top + cell * row++;
    std::string label = device;
    auto profile = run.device_profiles.find(device);
    if (profile != run.device_profiles.end()) {
      label += " (" + profile->second + ")";
    }
    absl::StrAppendFormat(&s,
                          "<text x=\"%.1f\" y=\"%.1f\" "
                          "text-anchor=\"end\">%s</text>",
                          left - 6, y + cell / 2 + 4, Escape(label));
    for (int64_t r = 1; r <= last_round; ++r) {
      auto it = cells.find({device, r});
      if (it == cells.end()) continue;
      const Row& c = *it->second;
      const double ratio = RowNumber(c, "arm_prune_ratio");
      const int shade = static_cast<int>(255 - 200 * std::min(1.0, ratio));
      const bool accepted = RowText(c, "status") == "accepted";
      absl::StrAppendFormat(
          &s,
          "<rect class=\"arm\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
          "height=\"%.1f\" fill=\"rgb(255,%d,%d)\" stroke=\"%s\"><title>%s "
          "round %d: prune %.2f rank %s (%s)</title></rect><text x=\"%.1f\" "
          "y=\"%.1f\" text-anchor=\"middle\">%s</text>",
          left + cell * (r - 1) + 1, y + 1, cell - 2, cell - 2, shade, shade,
          accepted ? "#fff" : "#000", Escape(device), r, ratio,
          RowText(c, "rank"), RowText(c, "status"), left + cell * (r - 0.5),
          y + cell / 2 + 4, RowText(c, "rank"));
    }
  }
  absl::StrAppendFormat(
      &s,
      "<text x=\"%.1f\" y=\"%.1f\">cell: LoRA rank; darker red: higher "
      "pruning ratio; black border: not accepted</text></svg>",
      left, top + cell * devices.size() + 20);
  return s;
}

std::string MemoryChart(const StrategyRun& run) {
  std::map<std::string, double> peak;
  for (const Row& c : run.clients) {
    if (RowText(c, "status") != "accepted") continue;
    double& p = peak[RowText(c, "device")];
    p = std::max(p, RowNumber(c, "peak_rss_mb"));
  }
  Frame f;
  f.w = 640;
  f.right = 40;
  f.bottom = 80;
  f.x_ticks = Frame::XTicks::kNone;
  f.x0 = 0;
  f.x1 = std::max<double>(1, peak.size());
  double y_max = 1;
  for (const auto& [d, mb] : peak) y_max = std::max(y_max, mb);
  f.y1 = y_max * 1.1;
  std::string s = f.Open("peak memory per device");
  s += f.Axes("", "peak RSS (MiB)", 0);
  int i = 0;
  const double bar = 0.7 * (f.X(1) - f.X(0));
  for (const auto& [device, mb] : peak) {
    const double x = f.X(i + 0.5);
    absl::StrAppendFormat(
        &s,
        "<rect class=\"memory\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"%.1f\" fill=\"#1f77b4\"><title>%s %.0f MiB</title></rect>"
        "<text transform=\"translate(%.1f,%.1f) rotate(-40)\" "
        "text-anchor=\"end\">%s</text>",
        x - bar / 2, f.Y(mb), bar, f.Y(0) - f.Y(mb), Escape(device), mb, x,
        f.Y(0) + 12, Escape(device));
    ++i;
  }
  return s + "</svg>";
}

// Refused updates per strategy, device and status code, with the last
// message: a device whose updates are refused is visible here, not only
// as a straggler.
std::string RefusalsTable(const std::vector<StrategyRun>& runs) {
  std::string h = "<h2>Refused updates</h2>";
  struct Count {
    int64_t n = 0;
    std::string last;
  };
  std::map<std::tuple<std::string, std::string, std::string>, Count> counts;
  for (const StrategyRun& run : runs) {
    for (const Row& r : run.refusals) {
      Count& c =
          counts[{run.name, RowText(r, "device_id"), RowText(r, "code")}];
      ++c.n;
      c.last = RowText(r, "message");
    }
  }
  if (counts.empty()) {
    return h +
           "<p id=\"refusals\">None: the coordinator accepted or "
           "waited out every update it was sent.</p>";
  }
  absl::StrAppend(&h,
                  "<table id=\"refusals\"><tr><th>strategy</th><th>device"
                  "</th><th>code</th><th>refused</th><th>last reason</th>"
                  "</tr>");
  for (const auto& [key, c] : counts) {
    absl::StrAppendFormat(
        &h, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%s</td></tr>",
        Escape(std::get<0>(key)), Escape(std::get<1>(key)),
        Escape(std::get<2>(key)), c.n, Escape(c.last));
  }
  return h + "</table>";
}

// rounds.csv's secure-aggregation columns Summarize takes the median of,
// and where it keeps each.
struct SecureColumn {
  const char* column;
  double StrategySummary::Secure::*median;
};
constexpr SecureColumn kSecureColumns[] = {
    {"secagg_advertise_s", &StrategySummary::Secure::advertise_s},
    {"secagg_share_keys_s", &StrategySummary::Secure::share_keys_s},
    {"secagg_mask_s", &StrategySummary::Secure::mask_s},
    {"secagg_unmask_s", &StrategySummary::Secure::unmask_s},
    {"secagg_sum_s", &StrategySummary::Secure::sum_s},
    {"secagg_bytes_up", &StrategySummary::Secure::bytes_up},
    {"secagg_bytes_down", &StrategySummary::Secure::bytes_down}};

// The runs with secure aggregation, a row each; nothing if none had it.
std::string SecureTable(const std::vector<StrategySummary>& summaries) {
  std::string rows;
  for (const StrategySummary& s : summaries) {
    const StrategySummary::Secure& x = s.secure;
    if (x.attempts == 0) continue;
    absl::StrAppendFormat(
        &rows,
        "<tr><td>%s</td><td>%d</td><td>%.3f s</td><td>%.3f s</td>"
        "<td>%.3f s</td><td>%.3f s</td><td>%.3f s</td><td>%.1f</td>"
        "<td>%.1f</td><td>%d</td></tr>",
        Escape(s.name), x.attempts, x.advertise_s, x.share_keys_s, x.mask_s,
        x.unmask_s, x.sum_s, x.bytes_up / 1e3, x.bytes_down / 1e3, x.excluded);
  }
  if (rows.empty()) return "";
  return absl::StrCat(
      "<h2>Secure aggregation</h2><p>Median per round attempt: how long "
      "the key exchange's phases and the unmasking stayed open, the slowest "
      "device's masking, the coordinator's CPU to remove the masks, and the "
      "key, share and unmasking messages (the masked vectors are the "
      "updates' bytes up). docs/privacy.md.</p><table id=\"secure\"><tr>"
      "<th>strategy</th><th>attempts</th><th>advertise</th><th>share keys</th>"
      "<th>masking</th><th>unmask</th><th>unmask CPU</th><th>kB up</th>"
      "<th>kB down</th><th>excluded</th></tr>",
      rows, "</table>");
}

std::string Seconds(double s) {
  return s < 0 ? "not reached" : absl::StrFormat("%.1f s", s);
}

}  // namespace

std::string Metric::Format(double value) const {
  if (value < 0) return "-";
  return percent ? absl::StrFormat("%.2f%%", 100 * value)
                 : absl::StrFormat("%.4f", value);
}

bool Metric::Reaches(double value, double target) const {
  return higher_is_better ? value >= target : value <= target;
}

double Metric::Read(const Row& row) const {
  const double value = RowNumber(row, column, -1);
  return value < 0 || !exponent ? value : std::exp(value);
}

Metric AccuracyMetric() { return Metric(); }

Metric LossMetric() {
  Metric m;
  m.column = "test_loss";
  m.label = "loss";
  m.higher_is_better = false;
  m.percent = false;
  return m;
}

Metric PerplexityMetric() {
  Metric m = LossMetric();
  m.label = "perplexity";
  m.exponent = true;
  return m;
}

Metric ExactMatchMetric() {
  Metric m;
  m.column = "test_exact_match";
  m.label = "exact match";
  return m;
}

Metric BitsPerByteMetric() {
  Metric m;
  m.column = "test_bits_per_byte";
  m.label = "bits per byte";
  m.higher_is_better = false;
  m.percent = false;
  return m;
}

std::string RowText(const Row& row, const std::string& column) {
  auto it = row.find(column);
  return it == row.end() ? "" : it->second;
}

double RowNumber(const Row& row, const std::string& column, double fallback) {
  double value = 0;
  auto it = row.find(column);
  return it != row.end() && absl::SimpleAtod(it->second, &value) ? value
                                                                 : fallback;
}

double PhaseShares::upload_share() const {
  const double total = download + train + upload + wait;
  return total > 0 ? upload / total : 0;
}

absl::StatusOr<StrategyRun> LoadRun(const std::string& name,
                                    const std::string& run_dir,
                                    double start_unix) {
  StrategyRun run;
  run.name = name;
  run.run_dir = run_dir;
  run.start_unix = start_unix;
  absl::StatusOr<std::vector<Row>> rounds =
      metrics::ReadCsvFile(run_dir + "/rounds.csv");
  if (!rounds.ok()) return rounds.status();
  absl::StatusOr<std::vector<Row>> clients =
      metrics::ReadCsvFile(run_dir + "/clients.csv");
  if (!clients.ok()) return clients.status();
  run.rounds = *std::move(rounds);
  run.clients = *std::move(clients);
  std::error_code error;
  if (std::filesystem::exists(run_dir + "/refusals.csv", error)) {
    absl::StatusOr<std::vector<Row>> refusals =
        metrics::ReadCsvFile(run_dir + "/refusals.csv");
    if (!refusals.ok()) return refusals.status();
    run.refusals = *std::move(refusals);
  }
  for (const auto& entry :
       std::filesystem::directory_iterator(run_dir, error)) {
    const std::string file = entry.path().filename().string();
    if (!absl::StartsWith(file, "device-") || !absl::EndsWith(file, ".csv")) {
      continue;
    }
    absl::StatusOr<std::vector<Row>> rows =
        metrics::ReadCsvFile(entry.path().string());
    if (!rows.ok()) return rows.status();
    run.device_reports[file.substr(0, file.size() - 4)] = *std::move(rows);
  }
  return run;
}

StrategySummary Summarize(const StrategyRun& run, double target) {
  StrategySummary s;
  s.name = run.name;
  for (const Row& r : run.rounds) {
    if (RowText(r, "committed") != "1") continue;
    ++s.rounds;
    if (!RowText(r, "dp_epsilon").empty()) {
      s.dp_epsilon = RowNumber(r, "dp_epsilon");
    }
    const double t = RowNumber(r, "unix_time") - run.start_unix;
    s.wall_s = std::max(s.wall_s, t);
    const double value = run.metric.Read(r);
    if (value < 0) continue;
    s.final_value = value;
    if (s.best_value < 0 || run.metric.Reaches(value, s.best_value)) {
      s.best_value = value;
    }
    if (s.time_to_target_s < 0 && run.metric.Reaches(value, target)) {
      s.time_to_target_s = t;
    }
  }
  StrategySummary::Secure& secure = s.secure;
  std::vector<std::vector<double>> values(std::size(kSecureColumns));
  for (const Row& r : run.rounds) {
    if (RowText(r, "secagg_advertise_s").empty()) continue;
    ++secure.attempts;
    secure.excluded += static_cast<int64_t>(RowNumber(r, "secagg_excluded"));
    for (size_t k = 0; k < std::size(kSecureColumns); ++k) {
      values[k].push_back(RowNumber(r, kSecureColumns[k].column));
    }
  }
  for (size_t k = 0; k < std::size(kSecureColumns); ++k) {
    secure.*kSecureColumns[k].median = strategies::Median(std::move(values[k]));
  }
  int64_t accepted = 0;
  std::map<std::string, std::vector<double>> uploads;  // By link.
  for (const Row& c : run.clients) {
    if (RowText(c, "status") != "accepted") continue;
    ++accepted;
    s.mean_prune_ratio += RowNumber(c, "prune_ratio");
    s.mean_rank += RowNumber(c, "rank");
    s.bytes_up += static_cast<int64_t>(RowNumber(c, "bytes_up"));
    s.bytes_down += static_cast<int64_t>(RowNumber(c, "bytes_down"));
    AddPhases(s.by_link[RowText(c, "link")], c);
    uploads[RowText(c, "link")].push_back(RowNumber(c, "upload_s"));
  }
  if (accepted > 0) {
    s.mean_prune_ratio /= accepted;
    s.mean_rank /= accepted;
  }
  for (auto& [link, p] : s.by_link) {
    p.download /= p.rows;
    p.train /= p.rows;
    p.upload /= p.rows;
    p.wait /= p.rows;
    p.upload_median = strategies::Median(std::move(uploads[link]));
  }
  return s;
}

double DefaultTarget(const std::vector<StrategyRun>& runs, const Metric& metric,
                     double base_value) {
  const double sign = metric.higher_is_better ? 1 : -1;
  double best = base_value;
  for (const StrategyRun& run : runs) {
    // A target nothing reaches, so that the summary is only of values.
    const double value = Summarize(run, sign * 1e9).best_value;
    if (value >= 0 && metric.Reaches(value, best)) best = value;
  }
  const double halfway = base_value + 0.5 * (best - base_value);
  const double least = base_value + sign * 0.005;
  return metric.Reaches(halfway, least) ? halfway : least;
}

std::vector<std::string> CheckConsistency(const StrategyRun& run) {
  std::vector<std::string> problems;
  std::map<int64_t, double> round_s;
  for (const Row& r : run.rounds) {
    const double accuracy = RowNumber(r, "accuracy", 0);
    if (accuracy < 0 || accuracy > 1) {
      problems.push_back(absl::StrCat("round ", RowText(r, "round"),
                                      ": accuracy ", RowText(r, "accuracy")));
    }
    const double bpb = RowNumber(r, "test_bits_per_byte", 0);
    if (!(bpb >= 0) || !std::isfinite(bpb)) {
      problems.push_back(absl::StrCat("round ", RowText(r, "round"),
                                      ": bits per byte ",
                                      RowText(r, "test_bits_per_byte")));
    }
    round_s[static_cast<int64_t>(RowNumber(r, "round"))] =
        RowNumber(r, "round_s");
  }
  for (const Row& c : run.clients) {
    if (RowText(c, "status") != "accepted") continue;
    const std::string where =
        absl::StrCat("round ", RowText(c, "round"), " ", RowText(c, "device"));
    const double phases = RowNumber(c, "download_s") + RowNumber(c, "train_s") +
                          RowNumber(c, "upload_s");
    const double elapsed = RowNumber(c, "elapsed_s");
    if (phases > elapsed * 1.05 + 0.05) {
      problems.push_back(absl::StrFormat(
          "%s: download + train + upload = %.3f s > elapsed %.3f s", where,
          phases, elapsed));
    }
    const double round = round_s[static_cast<int64_t>(RowNumber(c, "round"))];
    const double total = elapsed + RowNumber(c, "wait_s");
    if (std::abs(total - round) > 0.1 * round + 0.5) {
      problems.push_back(
          absl::StrFormat("%s: elapsed + wait = %.3f s, the round took %.3f s",
                          where, total, round));
    }
    if (RowNumber(c, "bytes_up") <= 0 || RowNumber(c, "bytes_down") <= 0) {
      problems.push_back(where + ": no bytes recorded");
    }
    auto reports = run.device_reports.find(RowText(c, "device"));
    if (reports == run.device_reports.end()) continue;
    const Row* own = nullptr;
    for (const Row& r : reports->second) {
      if (RowText(r, "round") == RowText(c, "round")) own = &r;
    }
    if (own == nullptr) {
      problems.push_back(where + ": the device reported no such round");
    } else if (RowText(*own, "bytes_up") != RowText(c, "bytes_up") ||
               RowText(*own, "bytes_down") != RowText(c, "bytes_down")) {
      problems.push_back(absl::StrCat(
          where, ": coordinator recorded ", RowText(c, "bytes_down"), "/",
          RowText(c, "bytes_up"), " bytes down/up, the device counted ",
          RowText(*own, "bytes_down"), "/", RowText(*own, "bytes_up")));
    }
  }
  return problems;
}

std::string SummaryJson(const std::vector<StrategySummary>& summaries,
                        const ReportInfo& info) {
  nlohmann::json out = {{"title", info.title},
                        {"notes", info.notes},
                        {"metric", info.metric.column},
                        {"target", info.target},
                        {"base", info.base_value}};
  nlohmann::json list = nlohmann::json::array();
  for (const StrategySummary& s : summaries) {
    nlohmann::json links = nlohmann::json::object();
    for (const auto& [link, p] : s.by_link) {
      links[link] = {{"download_s", p.download},
                     {"train_s", p.train},
                     {"upload_s", p.upload},
                     {"wait_s", p.wait},
                     {"upload_median_s", p.upload_median},
                     {"updates", p.rows},
                     {"upload_share", p.upload_share()}};
    }
    list.push_back({{"strategy", s.name},
                    {"rounds", s.rounds},
                    {"final", s.final_value},
                    {"best", s.best_value},
                    {"time_to_target_s", s.time_to_target_s},
                    {"wall_s", s.wall_s},
                    {"mean_prune_ratio", s.mean_prune_ratio},
                    {"mean_rank", s.mean_rank},
                    {"bytes_up", s.bytes_up},
                    {"bytes_down", s.bytes_down},
                    {"dp_epsilon", s.dp_epsilon},
                    {"links", links}});
    if (s.secure.attempts > 0) {
      nlohmann::json secure = {{"attempts", s.secure.attempts},
                               {"excluded", s.secure.excluded}};
      for (const SecureColumn& c : kSecureColumns) {
        // "secagg_mask_s" -> "mask_s".
        secure[std::string(absl::StripPrefix(c.column, "secagg_"))] =
            s.secure.*c.median;
      }
      list.back()["secure_aggregation"] = std::move(secure);
    }
  }
  out["strategies"] = list;
  return out.dump(2);
}

std::string HtmlReport(const std::vector<StrategyRun>& runs,
                       const std::vector<StrategySummary>& summaries,
                       const ReportInfo& info) {
  std::string h = absl::StrCat(
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>",
      Escape(info.title),
      "</title><style>body{font-family:sans-serif;margin:24px;max-width:"
      "1100px}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
      "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child"
      "{text-align:left}svg{margin:6px 12px 6px 0}</style></head><body><h1>",
      Escape(info.title), "</h1><ul>");
  for (const std::string& note : info.notes) {
    absl::StrAppend(&h, "<li>", Escape(note), "</li>");
  }
  absl::StrAppend(
      &h,
      "</ul><h2>Strategies</h2><table id=\"strategies\"><tr>"
      "<th>strategy</th><th>rounds</th><th>final ",
      Escape(info.metric.label), "</th>",
      absl::StrFormat("<th>time to %s</th>", info.metric.Format(info.target)),
      "<th>wall time</th><th>mean pruning</th><th>mean rank</th>"
      "<th>MB up</th><th>MB down</th><th>DP epsilon</th><th>speedup of the "
      "first </th></tr>");
  const double first = summaries.empty() ? -1 : summaries[0].time_to_target_s;
  for (const StrategySummary& s : summaries) {
    const std::string speedup =
        first > 0 && s.time_to_target_s > 0
            ? absl::StrFormat("%.2fx", s.time_to_target_s / first)
            : "-";
    absl::StrAppendFormat(
        &h,
        "<tr><td>%s</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td>"
        "<td>%.3f</td><td>%.1f</td><td>%.2f</td><td>%.2f</td><td>%s</td>"
        "<td>%s</td></tr>",
        Escape(s.name), s.rounds, info.metric.Format(s.final_value),
        Seconds(s.time_to_target_s), Seconds(s.wall_s), s.mean_prune_ratio,
        s.mean_rank, s.bytes_up / 1e6, s.bytes_down / 1e6,
        s.dp_epsilon >= 0 ? absl::StrFormat("%.2f", s.dp_epsilon)
                          : std::string("-"),
        speedup);
  }
  absl::StrAppend(&h, "</table>", SecureTable(summaries), RefusalsTable(runs),
                  "<h2>Held-out ", Escape(info.metric.label),
                  " versus wall time</h2>",
                  MetricChart(runs, info.metric, info.target));
  if (!runs.empty()) {
    const StrategyRun& run = runs.front();
    absl::StrAppend(&h, "<h2>Time per round by link type (", Escape(run.name),
                    ")</h2><p>Mean per device of download, local training "
                    "(sub-model build, training, encoding), upload and "
                    "waiting for the round to close, plus the server's "
                    "aggregation, as in \"Federated Learning over 5G, WiFi, "
                    "and Ethernet\" (arXiv 2504.04678).</p>",
                    BreakdownChart(run));
    if (!summaries.empty()) {
      absl::StrAppend(&h,
                      "<table id=\"links\"><tr><th>link</th><th>download"
                      "</th><th>train</th><th>upload</th><th>wait</th>"
                      "<th>upload share</th></tr>");
      for (const auto& [link, p] : summaries.front().by_link) {
        absl::StrAppendFormat(
            &h,
            "<tr><td>%s</td><td>%.2f s</td><td>%.2f s</td><td>%.2f s</td>"
            "<td>%.2f s</td><td>%.1f%%</td></tr>",
            Escape(link), p.download, p.train, p.upload, p.wait,
            100 * p.upload_share());
      }
      absl::StrAppend(&h, "</table>");
    }
    absl::StrAppend(&h, "<h2>Arms chosen per device (", Escape(run.name),
                    ")</h2>", ArmsChart(run), "<h2>Peak memory per device (",
                    Escape(run.name), ")</h2>", MemoryChart(run));
  }
  absl::StrAppend(&h, "</body></html>\n");
  return h;
}

}  // namespace fedge::sim
