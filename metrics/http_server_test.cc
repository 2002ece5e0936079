#include "metrics/http_server.h"

#include <atomic>

#include "gtest/gtest.h"

namespace fedge::metrics {
namespace {

TEST(HttpServerTest, ServesMetricsAndRejectsOtherPaths) {
  std::atomic<int> scrapes{0};
  auto server = HttpServer::Start("127.0.0.1", 0, [&] {
    ++scrapes;
    return std::string("up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_GT((*server)->port(), 0);
  auto body = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "up 1\n");
  EXPECT_EQ(scrapes, 1);
  auto missing = HttpGet("127.0.0.1", (*server)->port(), "/secret");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("404"), std::string::npos);
}

TEST(HttpServerTest, BindFailureIsAClearError) {
  auto first = HttpServer::Start("127.0.0.1", 0, [] { return ""; });
  ASSERT_TRUE(first.ok());
  auto second =
      HttpServer::Start("127.0.0.1", (*first)->port(), [] { return ""; });
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status();
}

}  // namespace
}  // namespace fedge::metrics
