#include "transport/channel_options.h"

#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace fedge::transport {
namespace {

// The integer value of `key` in `args`, if set.
std::optional<int> IntArg(const grpc::ChannelArguments& args,
                          const std::string& key) {
  const grpc_channel_args c = args.c_channel_args();
  for (size_t i = 0; i < c.num_args; ++i) {
    if (key == c.args[i].key && c.args[i].type == GRPC_ARG_INTEGER) {
      return c.args[i].value.integer;
    }
  }
  return std::nullopt;
}

TEST(ChannelOptionsTest, AFixedWindowAcceptsFramesAsLargeAsItself) {
  ChannelOptions options;  // The 1 MiB default window.
  EXPECT_EQ(MaxFrameBytes(options), 1 << 20);
  const grpc::ChannelArguments args = ClientChannelArguments(options);
  EXPECT_EQ(IntArg(args, GRPC_ARG_HTTP2_MAX_FRAME_SIZE), 1 << 20);
  EXPECT_EQ(IntArg(args, GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES), 1 << 20);
  EXPECT_EQ(IntArg(args, GRPC_ARG_HTTP2_BDP_PROBE), 0);
}

TEST(ChannelOptionsTest, FrameSizeStaysWithinHttp2Bounds) {
  ChannelOptions options;
  options.stream_window_bytes = 4 << 10;
  EXPECT_EQ(MaxFrameBytes(options), kMinFrameBytes);
  options.stream_window_bytes = 64 << 20;
  EXPECT_EQ(MaxFrameBytes(options), kMaxFrameBytes);
}

TEST(ChannelOptionsTest, TheAdaptiveWindowLeavesFramesToGrpc) {
  ChannelOptions options;
  options.stream_window_bytes = 0;
  EXPECT_EQ(MaxFrameBytes(options), 0);
  const grpc::ChannelArguments args = ClientChannelArguments(options);
  EXPECT_FALSE(IntArg(args, GRPC_ARG_HTTP2_MAX_FRAME_SIZE).has_value());
  EXPECT_FALSE(IntArg(args, GRPC_ARG_HTTP2_BDP_PROBE).has_value());
}

}  // namespace
}  // namespace fedge::transport
