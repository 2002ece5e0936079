#include "secagg/crypto.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "gtest/gtest.h"
#include <openssl/evp.h>

namespace fedge::secagg {
namespace {

TEST(CryptoTest, BothSidesAgreeOnAKeyPerContext) {
  const KeyPair a = *GenerateKeyPair();
  const KeyPair b = *GenerateKeyPair();
  ASSERT_EQ(a.public_key.size(), 32u);
  const absl::StatusOr<std::string> ab =
      AgreeKey(a.private_key, b.public_key, "mask");
  const absl::StatusOr<std::string> ba =
      AgreeKey(b.private_key, a.public_key, "mask");
  ASSERT_TRUE(ab.ok()) << ab.status();
  ASSERT_TRUE(ba.ok()) << ba.status();
  EXPECT_EQ(*ab, *ba);
  EXPECT_NE(*AgreeKey(a.private_key, b.public_key, "seal"), *ab);
  const KeyPair c = *GenerateKeyPair();
  EXPECT_NE(*AgreeKey(a.private_key, c.public_key, "mask"), *ab);
}

TEST(CryptoTest, BadPeerKeysAreRefused) {
  const KeyPair a = *GenerateKeyPair();
  EXPECT_EQ(AgreeKey(a.private_key, "short", "mask").status().code(),
            absl::StatusCode::kInvalidArgument);
  // The all-zero point has small order: the agreed secret would be zero.
  EXPECT_EQ(
      AgreeKey(a.private_key, std::string(32, '\0'), "mask").status().code(),
      absl::StatusCode::kInvalidArgument);
}

// RFC 8439 appendix A.1, test vector 1: key, counter and nonce all zero.
TEST(CryptoTest, TheMaskIsTheChaCha20Keystream) {
  const std::vector<uint32_t> mask = *ExpandMask(std::string(32, '\0'), 4);
  EXPECT_EQ(mask[0], 0xade0b876u);  // Bytes 76 b8 e0 ad.
  EXPECT_EQ(mask[1], 0x903df1a0u);  // a0 f1 3d 90.
  EXPECT_EQ(mask[2], 0xe56a5d40u);  // 40 5d 6a e5.
  EXPECT_EQ(mask[3], 0x28bd8653u);  // 53 86 bd 28.
}

TEST(CryptoTest, MasksAreRepeatableAndLookUniform) {
  const std::string seed(32, '\x07');
  const std::vector<uint32_t> long_mask = *ExpandMask(seed, 100000);
  const std::vector<uint32_t> short_mask = *ExpandMask(seed, 10);
  EXPECT_TRUE(
      std::equal(short_mask.begin(), short_mask.end(), long_mask.begin()));
  EXPECT_NE(*ExpandMask(std::string(32, '\x08'), 10), short_mask);
  double mean = 0;
  for (uint32_t w : long_mask) mean += w / 4294967296.0;
  mean /= long_mask.size();
  EXPECT_NEAR(mean, 0.5, 0.005);  // Stddev of the mean: 0.0009.
  EXPECT_FALSE(ExpandMask("short", 10).ok());
}

// The streamed keystream (16 KiB pieces) continues across its pieces: the
// words from 4096 on are ChaCha20's blocks from counter 256, computed here
// in one call; adding then subtracting it gives the vector back.
TEST(CryptoTest, TheStreamedMaskContinuesAcrossPiecesAndCancels) {
  const std::string seed(32, '\x05');
  const std::vector<uint32_t> mask = *ExpandMask(seed, 10000);
  std::array<unsigned char, 16> iv{};
  iv[1] = 1;  // Counter 256, little-endian.
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ASSERT_EQ(EVP_EncryptInit_ex(
                ctx, EVP_chacha20(), nullptr,
                reinterpret_cast<const unsigned char*>(seed.data()), iv.data()),
            1);
  std::vector<unsigned char> stream(4 * (10000 - 4096), 0);
  int written = 0;
  ASSERT_EQ(EVP_EncryptUpdate(ctx, stream.data(), &written, stream.data(),
                              static_cast<int>(stream.size())),
            1);
  EVP_CIPHER_CTX_free(ctx);
  for (size_t k = 0; k < 10000 - 4096; ++k) {
    const unsigned char* b = stream.data() + 4 * k;
    const uint32_t w =
        b[0] | b[1] << 8 | b[2] << 16 | static_cast<uint32_t>(b[3]) << 24;
    ASSERT_EQ(mask[4096 + k], w) << "word " << 4096 + k;
  }
  std::vector<uint32_t> y(10000);
  for (size_t k = 0; k < y.size(); ++k) y[k] = static_cast<uint32_t>(7 * k);
  const std::vector<uint32_t> before = y;
  ASSERT_TRUE(AddKeystream(seed, true, absl::MakeSpan(y)).ok());
  for (size_t k = 0; k < y.size(); ++k) ASSERT_EQ(y[k], before[k] + mask[k]);
  ASSERT_TRUE(AddKeystream(seed, false, absl::MakeSpan(y)).ok());
  EXPECT_EQ(y, before);
  EXPECT_FALSE(AddKeystream("short", true, absl::MakeSpan(y)).ok());
}

// The noise is N(0, stddev^2) rounded: its moments and its one-sigma mass
// match (200,000 draws: the mean within 5 standard errors), the same seed
// gives the same noise and another seed other noise.
TEST(CryptoTest, GaussianNoiseHasTheStatedSpreadAndFollowsItsSeed) {
  const std::string seed(32, '\x05');
  const double stddev = 1000;
  std::vector<uint32_t> words(200001, 0);
  ASSERT_TRUE(AddGaussianNoise(seed, stddev, absl::MakeSpan(words)).ok());
  double sum = 0, squares = 0, within = 0;
  for (uint32_t w : words) {
    const double v = static_cast<int32_t>(w);
    sum += v;
    squares += v * v;
    within += std::abs(v) <= stddev ? 1 : 0;
  }
  const double n = static_cast<double>(words.size());
  EXPECT_LT(std::abs(sum / n), 5 * stddev / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(squares / n) / stddev, 1.0, 0.01);
  EXPECT_NEAR(within / n, 0.6827, 0.005);
  std::vector<uint32_t> again(words.size(), 0), other(words.size(), 0);
  ASSERT_TRUE(AddGaussianNoise(seed, stddev, absl::MakeSpan(again)).ok());
  EXPECT_EQ(again, words);
  ASSERT_TRUE(
      AddGaussianNoise(std::string(32, '\x06'), stddev, absl::MakeSpan(other))
          .ok());
  EXPECT_NE(other, words);
  // Added, not written: zero noise leaves the words alone.
  std::vector<uint32_t> kept = {1, 2, 3};
  ASSERT_TRUE(AddGaussianNoise(seed, 0, absl::MakeSpan(kept)).ok());
  EXPECT_EQ(kept, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_FALSE(AddGaussianNoise(seed, -1, absl::MakeSpan(kept)).ok());
  EXPECT_FALSE(AddGaussianNoise(seed, NAN, absl::MakeSpan(kept)).ok());
  EXPECT_FALSE(AddGaussianNoise("short", 1, absl::MakeSpan(kept)).ok());
}

TEST(CryptoTest, SealedSharesOpenOnlyUnchangedAndWithTheKey) {
  const std::string key(32, '\x01');
  const std::string sealed = *Seal(key, "share bytes", "from 3 to 7");
  absl::StatusOr<std::string> opened = Open(key, sealed, "from 3 to 7");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "share bytes");
  EXPECT_FALSE(Open(key, sealed, "from 4 to 7").ok());
  EXPECT_FALSE(Open(std::string(32, '\x02'), sealed, "from 3 to 7").ok());
  std::string changed = sealed;
  changed[14] ^= 1;
  EXPECT_FALSE(Open(key, changed, "from 3 to 7").ok());
  EXPECT_FALSE(Open(key, "tiny", "").ok());
  EXPECT_NE(*Seal(key, "share bytes", "from 3 to 7"), sealed);  // Nonce.
}

TEST(CryptoTest, AnyThresholdOfSharesRebuildsTheSecret) {
  const std::string secret = "0123456789abcdef0123456789abcdef";
  const std::vector<Share> shares = *SplitSecret(secret, 3, 7);
  ASSERT_EQ(shares.size(), 7u);
  for (size_t a = 0; a < shares.size(); ++a) {
    for (size_t b = a + 1; b < shares.size(); ++b) {
      for (size_t c = b + 1; c < shares.size(); ++c) {
        EXPECT_EQ(*CombineShares({shares[a], shares[b], shares[c]}, 3), secret);
      }
    }
  }
  // Two shares of a threshold-3 secret say nothing of it: combined as if
  // two were enough, they give something else.
  EXPECT_NE(*CombineShares({shares[0], shares[1]}, 2), secret);
  EXPECT_FALSE(CombineShares({shares[0], shares[1]}, 3).ok());
  EXPECT_FALSE(CombineShares({shares[0], shares[0], shares[1]}, 3).ok());
  EXPECT_FALSE(SplitSecret(secret, 4, 3).ok());
  EXPECT_FALSE(SplitSecret(secret, 1, 256).ok());
  // Threshold 1: every share is the secret itself.
  EXPECT_EQ(*CombineShares({(*SplitSecret(secret, 1, 2))[1]}, 1), secret);
}

}  // namespace
}  // namespace fedge::secagg
