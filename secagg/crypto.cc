#include "secagg/crypto.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

namespace fedge::secagg {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* Bytes(std::string& s) {
  return reinterpret_cast<unsigned char*>(s.data());
}

absl::Status KeyLength(absl::string_view what, absl::string_view key) {
  if (key.size() == kKeyBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", key.size(), " bytes; expected ", kKeyBytes));
}

absl::Status Failed(absl::string_view what) {
  return absl::InternalError(absl::StrCat("OpenSSL: ", what, " failed"));
}

// GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, through
// exponent and logarithm tables of the generator 3.
struct Field {
  std::array<uint8_t, 512> exp{};
  std::array<int, 256> log{};
  Field() {
    int x = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = static_cast<uint8_t>(x);
      log[x] = i;
      x ^= (x << 1) ^ ((x & 0x80) ? 0x11b : 0);  // x * 3.
    }
    for (int i = 255; i < 512; ++i) exp[i] = exp[i - 255];
  }
  uint8_t Mul(uint8_t a, uint8_t b) const {
    if (a == 0 || b == 0) return 0;
    return exp[log[a] + log[b]];
  }
  uint8_t Div(uint8_t a, uint8_t b) const {  // b != 0.
    if (a == 0) return 0;
    return exp[log[a] + 255 - log[b]];
  }
};

const Field& GF() {
  static const Field* field = new Field();
  return *field;
}

}  // namespace

absl::StatusOr<KeyPair> GenerateKeyPair() {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!key) return Failed("X25519 key generation");
  KeyPair pair;
  pair.private_key.resize(kKeyBytes);
  pair.public_key.resize(kKeyBytes);
  size_t length = kKeyBytes;
  if (EVP_PKEY_get_raw_private_key(key.get(), Bytes(pair.private_key),
                                   &length) != 1 ||
      length != kKeyBytes) {
    return Failed("reading the X25519 private key");
  }
  length = kKeyBytes;
  if (EVP_PKEY_get_raw_public_key(key.get(), Bytes(pair.public_key), &length) !=
          1 ||
      length != kKeyBytes) {
    return Failed("reading the X25519 public key");
  }
  return pair;
}

absl::StatusOr<std::string> PublicKeyOf(absl::string_view private_key) {
  if (absl::Status s = KeyLength("private key", private_key); !s.ok()) {
    return s;
  }
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr,
                                        Bytes(private_key), kKeyBytes));
  std::string public_key(kKeyBytes, '\0');
  size_t length = kKeyBytes;
  if (!key ||
      EVP_PKEY_get_raw_public_key(key.get(), Bytes(public_key), &length) != 1) {
    return absl::InvalidArgumentError("unusable X25519 private key");
  }
  return public_key;
}

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string bytes(n, '\0');
  if (n > 0 && RAND_bytes(Bytes(bytes), static_cast<int>(n)) != 1) {
    return Failed("RAND_bytes");
  }
  return bytes;
}

std::string Sha256(absl::string_view data) {
  std::string digest(32, '\0');
  unsigned int length = 32;
  EVP_Digest(data.data(), data.size(), Bytes(digest), &length, EVP_sha256(),
             nullptr);
  return digest;
}

absl::StatusOr<std::string> AgreeKey(absl::string_view my_private,
                                     absl::string_view peer_public,
                                     absl::string_view context) {
  if (absl::Status s = KeyLength("private key", my_private); !s.ok()) return s;
  if (absl::Status s = KeyLength("peer public key", peer_public); !s.ok()) {
    return s;
  }
  Pkey mine(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr,
                                         Bytes(my_private), kKeyBytes));
  Pkey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr,
                                        Bytes(peer_public), kKeyBytes));
  if (!mine || !peer) return absl::InvalidArgumentError("unusable X25519 key");
  PkeyCtx derive(EVP_PKEY_CTX_new(mine.get(), nullptr));
  std::string secret(kKeyBytes, '\0');
  size_t length = kKeyBytes;
  if (!derive || EVP_PKEY_derive_init(derive.get()) != 1 ||
      EVP_PKEY_derive_set_peer(derive.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(derive.get(), Bytes(secret), &length) != 1 ||
      length != kKeyBytes) {
    // OpenSSL refuses a peer key of small order (an all-zero secret).
    return absl::InvalidArgumentError(
        "X25519 agreement failed: the peer's public key is unusable");
  }
  if (secret == std::string(kKeyBytes, '\0')) {
    return absl::InvalidArgumentError(
        "X25519 agreement gave the all-zero secret");
  }
  PkeyCtx hkdf(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  std::string key(kKeyBytes, '\0');
  length = kKeyBytes;
  if (!hkdf || EVP_PKEY_derive_init(hkdf.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(hkdf.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(hkdf.get(), Bytes(secret), kKeyBytes) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(hkdf.get(), Bytes(context),
                                  static_cast<int>(context.size())) != 1 ||
      EVP_PKEY_derive(hkdf.get(), Bytes(key), &length) != 1) {
    return Failed("HKDF-SHA256");
  }
  return key;
}

namespace {

// The ChaCha20 keystream under a seed (counter and nonce at zero) as
// little-endian 32-bit words on any host, 16 KiB at a time into a buffer
// that stays in cache, so nothing of a vector's size is ever made.
class Keystream {
 public:
  static constexpr size_t kWords = 4096;

  absl::Status Start(absl::string_view seed) {
    if (absl::Status s = KeyLength("keystream seed", seed); !s.ok()) return s;
    const std::array<unsigned char, 16> iv{};
    if (!ctx_ || EVP_EncryptInit_ex(ctx_.get(), EVP_chacha20(), nullptr,
                                    Bytes(seed), iv.data()) != 1) {
      return Failed("ChaCha20 set-up");
    }
    return absl::OkStatus();
  }

  // The next `n` <= kWords words.
  absl::StatusOr<const uint32_t*> Next(size_t n) {
    const int bytes = static_cast<int>(4 * n);
    stream_.fill(0);  // Encrypting zeros gives the keystream.
    int written = 0;
    if (EVP_EncryptUpdate(ctx_.get(), stream_.data(), &written, stream_.data(),
                          bytes) != 1 ||
        written != bytes) {
      return Failed("ChaCha20");
    }
    for (size_t k = 0; k < n; ++k) {
      const unsigned char* b = stream_.data() + 4 * k;
      words_[k] =
          static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
          static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
    }
    return words_.data();
  }

 private:
  CipherCtx ctx_{EVP_CIPHER_CTX_new()};
  std::array<unsigned char, 4 * kWords> stream_;
  std::array<uint32_t, kWords> words_;
};

// A uniform double in (0, 1] from two keystream words (53 bits).
double Uniform(uint32_t high, uint32_t low) {
  const uint64_t bits = (static_cast<uint64_t>(high) << 21) | (low >> 11);
  return (static_cast<double>(bits) + 1.0) * 0x1.0p-53;
}

}  // namespace

absl::Status AddKeystream(absl::string_view seed, bool add,
                          absl::Span<uint32_t> words) {
  Keystream stream;
  if (absl::Status s = stream.Start(seed); !s.ok()) return s;
  for (size_t at = 0; at < words.size(); at += Keystream::kWords) {
    const size_t n = std::min(Keystream::kWords, words.size() - at);
    absl::StatusOr<const uint32_t*> m = stream.Next(n);
    if (!m.ok()) return m.status();
    for (size_t k = 0; k < n; ++k) {
      words[at + k] = add ? words[at + k] + (*m)[k] : words[at + k] - (*m)[k];
    }
  }
  return absl::OkStatus();
}

absl::Status AddGaussianNoise(absl::string_view seed, double stddev,
                              absl::Span<uint32_t> words) {
  if (!(stddev >= 0) || !(stddev < 1e9)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "noise standard deviation ", stddev, " is not in [0, 1e9) steps"));
  }
  Keystream stream;
  if (absl::Status s = stream.Start(seed); !s.ok()) return s;
  // Box-Muller: four words give two normals.
  constexpr size_t kPairs = Keystream::kWords / 4;
  for (size_t at = 0; at < words.size(); at += 2 * kPairs) {
    const size_t values = std::min(2 * kPairs, words.size() - at);
    const size_t pairs = (values + 1) / 2;
    absl::StatusOr<const uint32_t*> m = stream.Next(4 * pairs);
    if (!m.ok()) return m.status();
    for (size_t p = 0; p < pairs; ++p) {
      const uint32_t* w = *m + 4 * p;
      const double radius =
          stddev * std::sqrt(-2 * std::log(Uniform(w[0], w[1])));
      const double angle = 2 * M_PI * Uniform(w[2], w[3]);
      const double normals[2] = {radius * std::cos(angle),
                                 radius * std::sin(angle)};
      for (size_t j = 0; j < 2 && 2 * p + j < values; ++j) {
        // Rounded to whole steps, added over Z_2^32 (two's complement).
        words[at + 2 * p + j] += static_cast<uint32_t>(
            static_cast<int64_t>(std::llround(normals[j])));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> ExpandMask(absl::string_view seed,
                                                 size_t n) {
  std::vector<uint32_t> mask(n, 0);
  if (absl::Status s = AddKeystream(seed, true, absl::MakeSpan(mask));
      !s.ok()) {
    return s;
  }
  return mask;
}

absl::StatusOr<std::string> Seal(absl::string_view key,
                                 absl::string_view plaintext,
                                 absl::string_view associated) {
  if (absl::Status s = KeyLength("sealing key", key); !s.ok()) return s;
  std::string sealed(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  if (RAND_bytes(Bytes(sealed), kNonceBytes) != 1) return Failed("RAND_bytes");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int written = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, Bytes(key),
                         Bytes(sealed)) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &written, Bytes(associated),
                        static_cast<int>(associated.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), Bytes(sealed) + kNonceBytes, &written,
                        Bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), Bytes(sealed) + kNonceBytes + written,
                          &written) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          Bytes(sealed) + kNonceBytes + plaintext.size()) !=
          1) {
    return Failed("AES-256-GCM sealing");
  }
  return sealed;
}

absl::StatusOr<std::string> Open(absl::string_view key,
                                 absl::string_view sealed,
                                 absl::string_view associated) {
  if (absl::Status s = KeyLength("opening key", key); !s.ok()) return s;
  if (sealed.size() < kNonceBytes + kTagBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sealed message of ", sealed.size(), " bytes is too short"));
  }
  const size_t length = sealed.size() - kNonceBytes - kTagBytes;
  std::string plain(length, '\0');
  std::string tag(sealed.substr(kNonceBytes + length));
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int written = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, Bytes(key),
                         Bytes(sealed)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &written, Bytes(associated),
                        static_cast<int>(associated.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), Bytes(plain), &written,
                        Bytes(sealed) + kNonceBytes,
                        static_cast<int>(length)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                          Bytes(tag)) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), Bytes(plain) + written, &written) != 1) {
    return absl::InvalidArgumentError(
        "sealed message does not authenticate (changed, or another key)");
  }
  return plain;
}

absl::StatusOr<std::vector<Share>> SplitSecret(absl::string_view secret,
                                               int threshold, int count) {
  if (!(threshold >= 1 && threshold <= count && count <= kMaxShares)) {
    return absl::InvalidArgumentError(
        absl::StrCat("secret sharing needs 1 <= threshold (", threshold,
                     ") <= shares (", count, ") <= ", kMaxShares));
  }
  const Field& f = GF();
  // Per byte of the secret, a polynomial of degree threshold - 1 with the
  // byte as its constant term and random other coefficients.
  std::string coefficients(secret.size() * (threshold - 1), '\0');
  if (!coefficients.empty() &&
      RAND_bytes(Bytes(coefficients), static_cast<int>(coefficients.size())) !=
          1) {
    return Failed("RAND_bytes");
  }
  std::vector<Share> shares(count);
  for (int i = 0; i < count; ++i) {
    const auto x = static_cast<uint8_t>(i + 1);
    shares[i].x = x;
    shares[i].y.resize(secret.size());
    for (size_t b = 0; b < secret.size(); ++b) {
      // Horner, highest coefficient first.
      uint8_t y = 0;
      for (int k = threshold - 2; k >= 0; --k) {
        y = f.Mul(y, x) ^
            static_cast<uint8_t>(coefficients[b * (threshold - 1) + k]);
      }
      shares[i].y[b] =
          static_cast<char>(f.Mul(y, x) ^ static_cast<uint8_t>(secret[b]));
    }
  }
  return shares;
}

absl::StatusOr<std::string> CombineShares(const std::vector<Share>& shares,
                                          int threshold) {
  if (threshold < 1 || static_cast<int>(shares.size()) < threshold) {
    return absl::InvalidArgumentError(
        absl::StrCat(shares.size(), " shares; ", threshold, " needed"));
  }
  std::set<uint8_t> points;
  for (int i = 0; i < threshold; ++i) {
    if (shares[i].x == 0 || !points.insert(shares[i].x).second ||
        shares[i].y.size() != shares[0].y.size()) {
      return absl::InvalidArgumentError(
          "shares must have distinct non-zero points and equal lengths");
    }
  }
  const Field& f = GF();
  // Lagrange at 0: the weight of share i is prod_{j != i} x_j / (x_j - x_i),
  // subtraction being XOR in GF(2^8).
  std::string secret(shares[0].y.size(), '\0');
  for (int i = 0; i < threshold; ++i) {
    uint8_t weight = 1;
    for (int j = 0; j < threshold; ++j) {
      if (j == i) continue;
      weight = f.Mul(weight, f.Div(shares[j].x, shares[j].x ^ shares[i].x));
    }
    for (size_t b = 0; b < secret.size(); ++b) {
      secret[b] = static_cast<char>(
          static_cast<uint8_t>(secret[b]) ^
          f.Mul(weight, static_cast<uint8_t>(shares[i].y[b])));
    }
  }
  return secret;
}

}  // namespace fedge::secagg
