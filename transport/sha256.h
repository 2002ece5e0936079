// Incremental SHA-256 (OpenSSL EVP), for transfer digests and model cache
// keys. Not thread-safe; one hasher per stream.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::transport {

inline constexpr int kSha256Bytes = 32;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // The 32-byte digest of everything passed to Update. Ends the hasher.
  std::string Finish();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

// One-shot digest of `data` (32 raw bytes).
std::string Sha256Of(absl::string_view data);

// Digest of a file's contents, read in 1 MiB pieces (bounded memory).
// NotFound if it does not exist; other OS errors as model::ErrnoToStatus.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

// Lower-case hex of `bytes`.
std::string ToHex(absl::string_view bytes);

}  // namespace fedge::transport
