#include "metrics/registry.h"

#include "gtest/gtest.h"

namespace fedge::metrics {
namespace {

TEST(RegistryTest, RendersCountersGaugesAndHistograms) {
  Registry r;
  r.DeclareCounter("fedge_updates_total", "Updates accepted.");
  r.DeclareGauge("fedge_round", "Current round.");
  r.DeclareHistogram("fedge_phase_seconds", "Phase time.", {0.1, 1, 10});
  r.Increment("fedge_updates_total", {{"link", "wifi"}});
  r.Increment("fedge_updates_total", {{"link", "wifi"}}, 2);
  r.Set("fedge_round", {}, 7);
  r.Observe("fedge_phase_seconds", {{"phase", "upload"}}, 0.5);
  r.Observe("fedge_phase_seconds", {{"phase", "upload"}}, 20);
  EXPECT_EQ(r.Value("fedge_updates_total", {{"link", "wifi"}}), 3);
  EXPECT_EQ(r.Render(),
            "# HELP fedge_updates_total Updates accepted.\n"
            "# TYPE fedge_updates_total counter\n"
            "fedge_updates_total{link=\"wifi\"} 3\n"
            "# HELP fedge_round Current round.\n"
            "# TYPE fedge_round gauge\n"
            "fedge_round 7\n"
            "# HELP fedge_phase_seconds Phase time.\n"
            "# TYPE fedge_phase_seconds histogram\n"
            "fedge_phase_seconds_bucket{phase=\"upload\",le=\"0."
            "10000000000000001\"} 0\n"
            "fedge_phase_seconds_bucket{phase=\"upload\",le=\"1\"} 1\n"
            "fedge_phase_seconds_bucket{phase=\"upload\",le=\"10\"} 1\n"
            "fedge_phase_seconds_bucket{phase=\"upload\",le=\"+Inf\"} 2\n"
            "fedge_phase_seconds_sum{phase=\"upload\"} 20.5\n"
            "fedge_phase_seconds_count{phase=\"upload\"} 2\n");
}

TEST(RegistryTest, EscapesLabelValues) {
  Registry r;
  r.DeclareGauge("g", "help with \\ and\nnewline");
  r.Set("g", {{"device", "a\"b\\c\nd"}}, 1);
  EXPECT_NE(r.Render().find("g{device=\"a\\\"b\\\\c\\nd\"} 1"),
            std::string::npos)
      << r.Render();
  EXPECT_NE(r.Render().find("# HELP g help with \\\\ and\\nnewline"),
            std::string::npos);
}

TEST(RegistryDeathTest, MisuseIsAProgrammingError) {
  Registry r;
  r.DeclareGauge("g", "");
  EXPECT_DEATH(r.Increment("g"), "wrong kind");
  EXPECT_DEATH(r.Set("nope", {}, 1), "undeclared");
  EXPECT_DEATH(r.DeclareGauge("g", ""), "twice");
  EXPECT_DEATH(r.DeclareGauge("1bad", ""), "bad metric name");
}

}  // namespace
}  // namespace fedge::metrics
