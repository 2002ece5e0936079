// The cryptographic building blocks of secure aggregation (SecAgg, Bonawitz
// et al. 2017; SecAgg+, Bell et al. 2020), over OpenSSL 3: X25519 key
// agreement, HKDF-SHA256 to derive seeds and keys from what two parties
// agree, a ChaCha20 keystream as the pseudorandom generator that expands a
// seed into a mask over the ring Z_2^32, AES-256-GCM for the shares two
// devices pass each other through the coordinator, and Shamir t-of-n
// secret sharing over GF(2^8), byte by byte. docs/privacy.md.
//
// Pure functions of their arguments except GenerateKeyPair and
// SplitSecret, which draw from OpenSSL's CSPRNG. All thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedge::secagg {

inline constexpr int kKeyBytes = 32;    // X25519 keys, seeds, AES keys.
inline constexpr int kMaxShares = 255;  // GF(2^8) has 255 non-zero points.

struct KeyPair {
  std::string private_key;  // kKeyBytes, raw.
  std::string public_key;   // kKeyBytes, raw.
};

absl::StatusOr<KeyPair> GenerateKeyPair();
// The public key of an X25519 private key (kKeyBytes each).
absl::StatusOr<std::string> PublicKeyOf(absl::string_view private_key);

// `n` bytes from OpenSSL's CSPRNG.
absl::StatusOr<std::string> RandomBytes(size_t n);

// SHA-256 of `data` (32 bytes): a commitment to a random secret.
std::string Sha256(absl::string_view data);

// X25519(my_private, peer_public), through HKDF-SHA256 with `context` as
// its info: kKeyBytes both parties derive alike (they must use the same
// context). InvalidArgument for keys of the wrong length or a peer key
// that yields the all-zero secret (a small-order point).
absl::StatusOr<std::string> AgreeKey(absl::string_view my_private,
                                     absl::string_view peer_public,
                                     absl::string_view context);

// `n` words of the ChaCha20 keystream under `seed` (kKeyBytes), the
// counter and nonce at zero: a mask over Z_2^32.
absl::StatusOr<std::vector<uint32_t>> ExpandMask(absl::string_view seed,
                                                 size_t n);
// words += ExpandMask(seed, words.size()) (or -= when !add), over
// Z_2^32, streamed in cache-sized pieces: what masking and unmasking use,
// so that no vector-sized mask is allocated per neighbour.
absl::Status AddKeystream(absl::string_view seed, bool add,
                          absl::Span<uint32_t> words);

// words += round(N(0, stddev^2)) each, over Z_2^32, `stddev` in ring steps
// (in [0, 1e9)): Gaussian noise from the ChaCha20 keystream under `seed`
// (kKeyBytes; draw it with RandomBytes, and never reuse it), through
// Box-Muller on 53-bit uniforms, rounded to whole steps. Distributed
// differential privacy's share of a device (RingCodec::AddNoise).
absl::Status AddGaussianNoise(absl::string_view seed, double stddev,
                              absl::Span<uint32_t> words);

// AES-256-GCM under `key` (kKeyBytes) with a random 12-byte nonce, which
// leads the result, and `associated` authenticated but not encrypted.
absl::StatusOr<std::string> Seal(absl::string_view key,
                                 absl::string_view plaintext,
                                 absl::string_view associated);
// Seal's inverse; InvalidArgument when the ciphertext or the associated
// data were changed, or the key is not the sealer's.
absl::StatusOr<std::string> Open(absl::string_view key,
                                 absl::string_view sealed,
                                 absl::string_view associated);

struct Share {
  uint8_t x = 0;  // The point, 1..255.
  std::string y;  // One byte per byte of the secret.
};

// Splits `secret` into `count` shares, any `threshold` of which rebuild it
// and fewer reveal nothing. InvalidArgument unless
// 1 <= threshold <= count <= kMaxShares.
absl::StatusOr<std::vector<Share>> SplitSecret(absl::string_view secret,
                                               int threshold, int count);
// Rebuilds the secret from at least `threshold` shares with distinct
// points (extra shares are ignored). InvalidArgument for too few shares,
// repeated or zero points, or shares of different lengths.
absl::StatusOr<std::string> CombineShares(const std::vector<Share>& shares,
                                          int threshold);

}  // namespace fedge::secagg
