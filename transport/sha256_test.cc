#include "transport/sha256.h"

#include "gtest/gtest.h"

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

}  // namespace
}  // namespace fedge::transport
