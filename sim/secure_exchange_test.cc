#include "sim/secure_exchange.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "tests/testing/tiny_models.h"

namespace fedge::sim {
namespace {

namespace fc = coordinator;

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

transport::LinkProfile Link(double rtt_s, double mbps) {
  transport::LinkProfile link;
  link.name = "test";
  link.uplink_mbps = link.downlink_mbps = mbps;
  link.rtt = absl::Seconds(rtt_s);
  return link;
}

// Four devices, one of them on a slow link: the key exchange's phases wait
// for it, masking and unmasking run through the engine, and the round
// commits once the last unmasking shares arrive.
TEST(SecureExchangeTest, PhasesWaitForTheSlowestLinkAndTheRoundCommits) {
  const int n = 4;
  std::vector<fc::RoundRecord> closed;
  fc::EngineOptions o;
  o.rounds = 1;
  o.min_devices = n;
  o.round_deadline = absl::Seconds(600);
  o.heartbeat_timeout = absl::Seconds(600);
  o.split.mode = "off";
  o.secure.enabled = true;
  fc::EngineHooks hooks;
  hooks.on_round_closed = [&closed](const fc::RoundRecord& r,
                                    const fc::EngineState&) {
    closed.push_back(r);
    return absl::OkStatus();
  };
  torch::manual_seed(0);
  auto global = fc::GlobalModel::Create(testing::TinyVit(16), o.mode, {});
  ASSERT_TRUE(global.ok());
  auto engine = fc::Engine::Create(std::move(*global), o, hooks);
  ASSERT_TRUE(engine.ok()) << engine.status();
  fc::Engine& e = **engine;
  std::vector<SecureParty> parties(n);
  for (int i = 0; i < n; ++i) {
    fc::DeviceFacts f;
    f.device_id = "pi-" + std::to_string(i);
    ASSERT_TRUE(e.Register(f, kStart).ok());
  }
  ASSERT_TRUE(e.Tick(kStart).ok());
  for (int i = 0; i < n; ++i) {
    SecureParty& p = parties[i];
    p.device_id = "pi-" + std::to_string(i);
    auto task = e.GetTask(p.device_id, kStart);
    ASSERT_TRUE(task.ok()) << task.status();
    p.task = *task;
    // Device 3: a 1 s round trip; the others 10 ms. All at 8 Mbit/s.
    p.link = Link(i == 3 ? 1.0 : 0.01, 8);
  }

  ASSERT_TRUE(ExchangeKeys(e, parties, kStart, kStart).ok());
  EXPECT_EQ(e.secure_phase(), fc::SecurePhase::kMaskedInput);
  for (const SecureParty& p : parties) {
    EXPECT_EQ(p.inbox.size(), static_cast<size_t>(n - 1)) << p.device_id;
    // Two phases, each waiting for device 3's message (a round trip of
    // 1 s), then the inbox's own round trip.
    EXPECT_GE(p.inbox_at - kStart, absl::Seconds(2)) << p.device_id;
    EXPECT_GT(p.bytes_up, 0);
    EXPECT_GT(p.bytes_down, 0);
    EXPECT_GT(p.work_s, 0);
  }
  EXPECT_LT(parties[0].inbox_at, parties[3].inbox_at);

  const int64_t length = parties[0].task.secure->layout->length();
  absl::Time submitted = kStart;
  for (SecureParty& p : parties) {
    auto masked =
        MaskChange(p, std::vector<float>(static_cast<size_t>(length), 0.01f));
    ASSERT_TRUE(masked.ok()) << masked.status();
    EXPECT_EQ(static_cast<int64_t>(masked->size()), length);
    fc::Submission s;
    s.device_id = p.device_id;
    s.round = p.task.round;
    s.nonce = p.task.nonce;
    s.num_examples = 10;
    s.masked = *std::move(masked);
    submitted = std::max(submitted, p.inbox_at);
    ASSERT_TRUE(e.Submit(s, submitted).ok()) << p.device_id;
  }
  ASSERT_TRUE(e.Tick(submitted).ok());
  EXPECT_EQ(e.secure_phase(), fc::SecurePhase::kUnmask);
  std::vector<SecureParty*> survivors;
  for (SecureParty& p : parties) survivors.push_back(&p);
  absl::StatusOr<absl::Time> unmasked = Unmask(e, survivors, submitted);
  ASSERT_TRUE(unmasked.ok()) << unmasked.status();
  EXPECT_GE(*unmasked - submitted, absl::Seconds(2));  // Device 3's trips.
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_TRUE(closed[0].committed);
  ASSERT_TRUE(closed[0].secure.has_value());
  EXPECT_EQ(closed[0].secure->unmasked, n);
}

}  // namespace
}  // namespace fedge::sim
