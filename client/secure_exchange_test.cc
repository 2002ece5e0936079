#include "client/secure_exchange.h"

#include <deque>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::client {
namespace {

using ::testing::HasSubstr;

v1::Task SecureTask(absl::Duration deadline = absl::Minutes(1)) {
  v1::Task task;
  task.set_round(3);
  task.set_nonce("n");
  task.set_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + deadline));
  transport::SecureSpec spec;
  spec.parameters = {3, 2, 2, 4, 3, 9};
  spec.index = 1;
  spec.clip_norm = 1;
  spec.layout = {{"w.weight", {2, 2}}};
  transport::SecureSpecToProto(spec, task.mutable_secure());
  return task;
}

// A coordinator that answers every request with the next scripted phase
// (the last one again once the script runs out), recording the requests.
struct Scripted {
  std::deque<v1::SecurePhase> phases;
  std::vector<v1::SecureRequest> requests;
  SecureExchange::Call call() {
    return [this](const v1::SecureRequest& request, v1::SecureResponse* reply) {
      requests.push_back(request);
      reply->set_phase(phases.front());
      if (phases.size() > 1) phases.pop_front();
      return absl::OkStatus();
    };
  }
};

SecureExchange::Wait NoWait() {
  return [](absl::Duration) { return true; };
}

TEST(SecureExchangeTest, RefusesATaskWhoseSpecDoesNotValidate) {
  v1::Task task = SecureTask();
  task.mutable_secure()->set_index(7);
  Scripted coordinator;
  absl::StatusOr<std::unique_ptr<SecureExchange>> exchange =
      SecureExchange::Create("d", task, coordinator.call(), NoWait());
  ASSERT_FALSE(exchange.ok());
  EXPECT_THAT(exchange.status().message(), HasSubstr("index 7"));
}

TEST(SecureExchangeTest, ARoundThatMovedOnWithoutTheDeviceIsAbandoned) {
  Scripted coordinator;
  // Advertised, then the round is already past sharing keys.
  coordinator.phases = {v1::SECURE_PHASE_ADVERTISE,
                        v1::SECURE_PHASE_MASKED_INPUT};
  auto exchange =
      *SecureExchange::Create("d", SecureTask(), coordinator.call(), NoWait());
  const absl::Status s = exchange->ExchangeKeys();
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("needed share keys"));
  ASSERT_EQ(coordinator.requests.size(), 2u);
  // The first request advertised, with the task's ids.
  EXPECT_TRUE(coordinator.requests[0].has_advertise());
  EXPECT_EQ(coordinator.requests[0].advertise().device(), 1);
  EXPECT_EQ(coordinator.requests[0].round(), 3);
  EXPECT_EQ(coordinator.requests[0].nonce(), "n");
  EXPECT_EQ(coordinator.requests[1].message_case(),
            v1::SecureRequest::MESSAGE_NOT_SET);
  // Nothing to mask with.
  EXPECT_TRUE(
      absl::IsFailedPrecondition(exchange->Mask({0, 0, 0, 0}).status()));
}

TEST(SecureExchangeTest, WaitingStopsAtTheDeadlineOrWhenStopped) {
  Scripted coordinator;
  coordinator.phases = {v1::SECURE_PHASE_ADVERTISE};
  auto late = *SecureExchange::Create("d", SecureTask(absl::Milliseconds(100)),
                                      coordinator.call(), [](absl::Duration d) {
                                        absl::SleepFor(d);
                                        return true;
                                      });
  const absl::Status s = late->ExchangeKeys();
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("waiting for share keys"));

  auto stopped = *SecureExchange::Create("d", SecureTask(), coordinator.call(),
                                         [](absl::Duration) { return false; });
  EXPECT_TRUE(absl::IsCancelled(stopped->ExchangeKeys()));
}

TEST(SecureExchangeTest, UnmaskingPastTheRoundPostsNothing) {
  Scripted coordinator;
  coordinator.phases = {v1::SECURE_PHASE_MASKED_INPUT, v1::SECURE_PHASE_DONE};
  auto exchange =
      *SecureExchange::Create("d", SecureTask(), coordinator.call(), NoWait());
  EXPECT_TRUE(exchange->Unmask().ok());
  ASSERT_EQ(coordinator.requests.size(), 2u);
  for (const v1::SecureRequest& r : coordinator.requests) {
    EXPECT_EQ(r.message_case(), v1::SecureRequest::MESSAGE_NOT_SET);
  }
  EXPECT_GT(exchange->bytes_up(), 0);
  EXPECT_GT(exchange->bytes_down(), 0);
}

TEST(SecureExchangeTest, ErrorsOfTheCallComeBack) {
  auto exchange = *SecureExchange::Create(
      "d", SecureTask(),
      [](const v1::SecureRequest&, v1::SecureResponse*) {
        return absl::InvalidArgumentError("excluded: a second key");
      },
      NoWait());
  const absl::Status s = exchange->ExchangeKeys();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
}

}  // namespace
}  // namespace fedge::client
