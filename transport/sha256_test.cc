#include "transport/sha256.h"

#include "gtest/gtest.h"

#include "model/file_io.h"

namespace fedge::transport {
namespace {

TEST(Sha256Test, MatchesKnownVectorsIncrementally) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(ToHex(Sha256Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ToHex(Sha256Of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 hasher;
  hasher.Update("a");
  hasher.Update("bc");
  EXPECT_EQ(hasher.Finish(), Sha256Of("abc"));
}

TEST(Sha256Test, FileDigestEqualsTheDigestOfItsBytes) {
  // Longer than the 1 MiB read size, not a multiple of it.
  std::string bytes((3 << 20) + 17, 'x');
  for (size_t i = 0; i < bytes.size(); i += 4097) bytes[i] = char(i);
  const std::string path = ::testing::TempDir() + "/sha256_file";
  ASSERT_TRUE(model::WriteFileAtomically(path, bytes).ok());
  absl::StatusOr<std::string> digest = Sha256OfFile(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Of(bytes));
  EXPECT_EQ(Sha256OfFile(path + ".absent").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedge::transport
