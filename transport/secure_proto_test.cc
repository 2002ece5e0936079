#include "transport/secure_proto.h"

#include <map>
#include <memory>

#include "gtest/gtest.h"

namespace fedge::transport {
namespace {

// Every message of a 3-device round through its proto and back: the
// coordinator still unmasks the exact sum.
TEST(SecureProtoTest, ARoundThroughTheProtosSumsExactly) {
  SecureSpec spec;
  spec.parameters = {3, 2, 2, 5, 7, 11};
  spec.clip_norm = 1;
  spec.noise_stddev = 0.25;
  spec.min_survivors = 2;
  spec.layout = {{"a.weight", {2, 2}}, {"b.weight", {1}}};
  std::vector<std::unique_ptr<secagg::Device>> devices;
  secagg::Coordinator coordinator(spec.parameters);
  std::vector<secagg::Advertisement> ads;
  for (int64_t i = 0; i < 3; ++i) {
    spec.index = i;
    v1::SecureSpec proto;
    SecureSpecToProto(spec, &proto);
    absl::StatusOr<SecureSpec> back = SecureSpecFromProto(proto);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->index, i);
    EXPECT_EQ(back->layout, spec.layout);
    EXPECT_EQ(back->parameters.graph_seed, 11u);
    EXPECT_EQ(back->noise_stddev, 0.25);
    EXPECT_EQ(back->min_survivors, 2);
    devices.push_back(
        std::make_unique<secagg::Device>(back->parameters, back->index));
    v1::SecAggAdvertisement ad;
    AdvertisementToProto(*devices.back()->Advertise(), &ad);
    absl::StatusOr<secagg::Advertisement> a = AdvertisementFromProto(ad);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(coordinator.AddAdvertisement(*a).ok());
  }
  for (int64_t i = 0; i < 3; ++i) {
    absl::StatusOr<std::vector<secagg::SealedShares>> sealed =
        devices[i]->ShareKeys(coordinator.AdvertisementsFor(i));
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    v1::SecAggShareList list;
    SharesToProto(*sealed, list.mutable_shares());
    absl::StatusOr<std::vector<secagg::SealedShares>> back =
        SharesFromProto(list.shares());
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_TRUE(coordinator.AddShares(i, *back).ok());
  }
  std::vector<uint32_t> plain(5, 0);
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<uint32_t> input = {1u + static_cast<uint32_t>(i), 0xffffffffu,
                                   7, 0, 123456789};
    for (size_t k = 0; k < 5; ++k) plain[k] += input[k];
    absl::StatusOr<std::vector<uint32_t>> masked =
        devices[i]->MaskInput(input, coordinator.SharesFor(i));
    ASSERT_TRUE(masked.ok()) << masked.status();
    const std::string bytes = WordsToBytes(*masked);
    ASSERT_EQ(bytes.size(), 20u);
    absl::StatusOr<std::vector<uint32_t>> words = WordsFromBytes(bytes, 5);
    ASSERT_TRUE(words.ok()) << words.status();
    EXPECT_EQ(*words, *masked);
    ASSERT_TRUE(coordinator.AddMaskedInput(i, *std::move(words)).ok());
  }
  for (int64_t i = 0; i < 3; ++i) {
    v1::SecAggUnmask proto;
    UnmaskToProto(*devices[i]->Unmask(coordinator.Survivors()), &proto);
    absl::StatusOr<secagg::UnmaskShares> back = UnmaskFromProto(proto);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_TRUE(coordinator.AddUnmaskShares(*back).ok());
  }
  absl::StatusOr<std::vector<uint32_t>> sum = coordinator.Sum();
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, plain);
}

TEST(SecureProtoTest, RefusesWhatDoesNotFit) {
  SecureSpec spec;
  spec.parameters = {4, 2, 2, 5, 1, 1};
  spec.clip_norm = 1;
  spec.layout = {{"a.weight", {5}}};
  v1::SecureSpec good;
  SecureSpecToProto(spec, &good);
  ASSERT_TRUE(SecureSpecFromProto(good).ok());
  auto refused = [](v1::SecureSpec p, const char* says) {
    absl::StatusOr<SecureSpec> s = SecureSpecFromProto(p);
    ASSERT_FALSE(s.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(s.status()));
    EXPECT_NE(s.status().message().find(says), absl::string_view::npos)
        << s.status();
  };
  v1::SecureSpec p = good;
  p.set_index(4);
  refused(p, "index 4");
  p = good;
  p.set_clip_norm(std::nan(""));
  refused(p, "clip norm");
  p = good;
  p.mutable_layout(0)->set_shape(0, 6);
  refused(p, "more than 6 words");
  p = good;
  p.mutable_layout(0)->set_shape(0, -5);
  refused(p, "negative");
  p = good;
  p.set_threshold(1);
  refused(p, "threshold");
  p = good;
  p.set_noise_stddev(-1);
  refused(p, "noise standard deviation -1");
  p = good;
  p.set_noise_stddev(0.5);
  refused(p, "noise needs a minimum");
  p.set_min_survivors(5);
  refused(p, "min_survivors 5");
  p.set_min_survivors(3);
  EXPECT_TRUE(SecureSpecFromProto(p).ok());
  p.set_noise_stddev(0);
  refused(p, "a minimum needs noise");
  p = good;
  p.set_length(int64_t{1} << 40);
  refused(p, "words is over");

  v1::SecAggAdvertisement ad;
  ad.set_seal_public(std::string(31, 'k'));
  ad.set_mask_public(std::string(32, 'k'));
  ad.set_seed_digest(std::string(32, 'd'));
  EXPECT_TRUE(absl::IsInvalidArgument(AdvertisementFromProto(ad).status()));

  v1::SecAggUnmask unmask;
  unmask.set_from(1);
  (*unmask.mutable_seed_shares())[2].set_x(0);
  (*unmask.mutable_seed_shares())[2].set_y("y");
  EXPECT_TRUE(absl::IsInvalidArgument(UnmaskFromProto(unmask).status()));
  (*unmask.mutable_seed_shares())[2].set_x(256);
  EXPECT_TRUE(absl::IsInvalidArgument(UnmaskFromProto(unmask).status()));

  v1::SecAggShareList list;
  list.add_shares()->set_to(3);
  EXPECT_TRUE(absl::IsInvalidArgument(SharesFromProto(list.shares()).status()));

  EXPECT_TRUE(absl::IsInvalidArgument(WordsFromBytes("abcde", 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(WordsFromBytes("abcd", 2).status()));
  ASSERT_TRUE(WordsFromBytes("\x01\x02\x03\x04", 1).ok());
  EXPECT_EQ((*WordsFromBytes("\x01\x02\x03\x04", 1))[0], 0x04030201u);
}

}  // namespace
}  // namespace fedge::transport
