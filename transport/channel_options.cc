#include "transport/channel_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include <grpcpp/create_channel.h>

#include "model/file_io.h"

namespace fedge::transport {
namespace {

int Millis(absl::Duration d) {
  return static_cast<int>(absl::ToInt64Milliseconds(d));
}

// Reads a PEM file, or returns "" for an empty path.
absl::StatusOr<std::string> ReadPem(const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> pem = model::ReadFile(path);
  if (!pem.ok()) return pem.status();
  if (pem->find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a PEM file"));
  }
  return pem;
}

}  // namespace

absl::Status ChannelOptions::Validate() const {
  if (max_message_bytes < 1024 || max_message_bytes > (1LL << 31) - 1) {
    return absl::InvalidArgumentError(
        "max_message_bytes must be in [1 KiB, 2 GiB)");
  }
  if (keepalive_time < absl::Seconds(1) ||
      keepalive_timeout < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("keepalive intervals too short");
  }
  if (min_reconnect_backoff <= absl::ZeroDuration() ||
      max_reconnect_backoff < min_reconnect_backoff) {
    return absl::InvalidArgumentError("reconnect back-off bounds are inverted");
  }
  return absl::OkStatus();
}

int64_t MaxFrameBytes(const ChannelOptions& options) {
  if (options.stream_window_bytes <= 0) return 0;
  return std::clamp<int64_t>(options.stream_window_bytes, kMinFrameBytes,
                             kMaxFrameBytes);
}

grpc::ChannelArguments ClientChannelArguments(const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(options.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              Millis(options.min_reconnect_backoff));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              Millis(options.min_reconnect_backoff));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              Millis(options.max_reconnect_backoff));
  if (options.stream_window_bytes > 0) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                static_cast<int>(options.stream_window_bytes));
    args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE,
                static_cast<int>(MaxFrameBytes(options)));
  }
  return args;
}

void ConfigureServer(const ChannelOptions& options,
                     grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Accept the clients' keepalive pings even between calls, no more often
  // than they are configured to send them.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      Millis(options.keepalive_time) / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  if (options.stream_window_bytes > 0) {
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                               static_cast<int>(options.stream_window_bytes));
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE,
                               static_cast<int>(MaxFrameBytes(options)));
  }
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files) {
  if (files.insecure()) return grpc::InsecureChannelCredentials();
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "client TLS needs both a certificate and a key");
  }
  if (files.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "client TLS needs the CA file that signed the server");
  }
  grpc::SslCredentialsOptions ssl;
  for (auto [path, out] : {std::pair{&files.ca_file, &ssl.pem_root_certs},
                           std::pair{&files.cert_file, &ssl.pem_cert_chain},
                           std::pair{&files.key_file, &ssl.pem_private_key}}) {
    absl::StatusOr<std::string> pem = ReadPem(*path);
    if (!pem.ok()) return pem.status();
    *out = *std::move(pem);
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files) {
  if (files.insecure()) return grpc::InsecureServerCredentials();
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "server TLS needs a certificate and a key");
  }
  if (files.require_client_cert && files.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs the CA file of the clients");
  }
  grpc::SslServerCredentialsOptions ssl(
      files.require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  absl::StatusOr<std::string> cert = ReadPem(files.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(files.key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadPem(files.ca_file);
  if (!ca.ok()) return ca.status();
  ssl.pem_root_certs = *ca;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ChannelOptions& options,
    const TlsFiles& files, const std::string& tls_server_name) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ClientCredentials(files);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args = ClientChannelArguments(options);
  if (!tls_server_name.empty()) args.SetSslTargetNameOverride(tls_server_name);
  return grpc::CreateCustomChannel(target, *credentials, args);
}

}  // namespace fedge::transport
