// The one place that sets gRPC transport limits, keepalive, reconnect
// back-off and TLS credentials, for both ends (STYLE.md H6).
//
// Chunked transfers keep every message at or below the chunk size, so the
// message limit only needs headroom over it; keepalive pings keep a channel
// open while a slow board trains for many minutes between RPCs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

namespace fedge::transport {

struct ChannelOptions {
  // Largest message either side accepts or sends.
  int64_t max_message_bytes = 16 << 20;
  // Client pings an idle channel this often, and drops it if a ping is not
  // answered within keepalive_timeout.
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Reconnect back-off bounds after a lost connection.
  absl::Duration min_reconnect_backoff = absl::Milliseconds(500);
  absl::Duration max_reconnect_backoff = absl::Seconds(30);
  // HTTP/2 flow-control window per stream, in bytes: how much a receiver
  // lets the sender run ahead of what it has read, so it bounds what each
  // side buffers (one 1 MiB chunk in flight). 1 MiB is 4x the largest
  // bandwidth-delay product of the built-in link profiles (WiFi: 500
  // Mbit/s x 4 ms). 0 leaves gRPC's adaptive (BDP-probed) window, which
  // grows to tens of MiB of buffers on a fast link. A fixed window also
  // stops gRPC from growing the HTTP/2 frames it accepts (it sizes them
  // from the same probe), so each side then advertises frames as large as
  // the window (MaxFrameBytes) instead of HTTP/2's 16 KiB default, which
  // made uploads through the link emulator at 500 Mbit/s a fifth to a
  // half slower than their ideal time (docs/architecture.md).
  int64_t stream_window_bytes = 1 << 20;

  absl::Status Validate() const;
};

// PEM files. An empty ca_file/cert_file/key_file means insecure (dev mode
// only; binaries require --insecure for that).
struct TlsFiles {
  std::string ca_file;    // CA that signed the peer's certificate.
  std::string cert_file;  // This side's certificate chain.
  std::string key_file;   // This side's private key.
  // Server: require and verify a client certificate (mutual TLS).
  bool require_client_cert = false;

  bool insecure() const {
    return ca_file.empty() && cert_file.empty() && key_file.empty();
  }
};

// HTTP/2's bounds on SETTINGS_MAX_FRAME_SIZE (RFC 9113, 6.5.2).
inline constexpr int64_t kMinFrameBytes = 16 << 10;
inline constexpr int64_t kMaxFrameBytes = (16 << 20) - 1;

// The largest HTTP/2 frame each side accepts: the stream window within
// HTTP/2's bounds, or 0 (gRPC's own choice) with the adaptive window.
int64_t MaxFrameBytes(const ChannelOptions& options);

grpc::ChannelArguments ClientChannelArguments(const ChannelOptions& options);

// Applies limits and keepalive policy to a server under construction.
void ConfigureServer(const ChannelOptions& options,
                     grpc::ServerBuilder& builder);

// Client credentials: TLS verifying the server against ca_file, presenting
// cert/key when given (mutual TLS). NotFound/PermissionDenied if a file
// cannot be read; InvalidArgument for a partial set (cert without key).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files);

// Server credentials from cert/key (required) and, for mutual TLS, ca_file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files);

// A client channel to `target` with the options and credentials above.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ChannelOptions& options,
    const TlsFiles& files, const std::string& tls_server_name = "");

}  // namespace fedge::transport
