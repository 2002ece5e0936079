#include "transport/tensor_offers.h"

#include <string>

#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::transport {
namespace {

model::NamedTensors Weights() {
  model::NamedTensors t;
  t.insert("a.weight", torch::randn({64, 32}));
  t.insert("a.bias", torch::randn({64}));
  return t;
}

std::string Bytes(const PayloadSource& source) {
  std::string out(source.size(), '\0');
  EXPECT_TRUE(source.Read(0, absl::MakeSpan(out.data(), out.size())).ok());
  return out;
}

TEST(TensorOffersTest, TheSameTensorsAreDescribedOnceAndReadFromOneSource) {
  TensorOffers offers;
  const model::NamedTensors weights = Weights();
  absl::StatusOr<TensorOffers::Offer> first = offers.Make("r1/dev-a", weights);
  absl::StatusOr<TensorOffers::Offer> second = offers.Make("r1/dev-b", weights);
  ASSERT_TRUE(first.ok() && second.ok());

  EXPECT_EQ(offers.described(), 1);
  EXPECT_EQ(first->source.get(), second->source.get());
  EXPECT_EQ(first->info.transfer_id, "r1/dev-a");
  EXPECT_EQ(second->info.transfer_id, "r1/dev-b");
  EXPECT_EQ(first->info.sha256, second->info.sha256);
  EXPECT_EQ(first->info.total_bytes, second->info.total_bytes);
  // What is served is what a source of its own would serve.
  absl::StatusOr<std::unique_ptr<SafetensorsSource>> own =
      SafetensorsSource::Create(weights);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(Bytes(*second->source), Bytes(**own));
}

TEST(TensorOffersTest, OtherTensorsWithEqualValuesGetTheirOwnSource) {
  TensorOffers offers;
  const model::NamedTensors weights = Weights();
  model::NamedTensors copy;
  for (const auto& item : weights)
    copy.insert(item.key(), item.value().clone());
  absl::StatusOr<TensorOffers::Offer> a = offers.Make("x", weights);
  absl::StatusOr<TensorOffers::Offer> b = offers.Make("y", copy);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(offers.described(), 2);
  EXPECT_NE(a->source.get(), b->source.get());
  EXPECT_EQ(a->info.sha256, b->info.sha256);  // Same bytes, hashed twice.
  // A view of the same storage with another shape is other tensors too.
  model::NamedTensors view;
  view.insert("a.weight", weights["a.weight"].view({32, 64}));
  view.insert("a.bias", weights["a.bias"]);
  ASSERT_TRUE(offers.Make("z", view).ok());
  EXPECT_EQ(offers.described(), 3);
}

TEST(TensorOffersTest, ASourceNobodyHoldsIsNotReused) {
  TensorOffers offers;
  const model::NamedTensors weights = Weights();
  {
    absl::StatusOr<TensorOffers::Offer> once = offers.Make("r1/a", weights);
    ASSERT_TRUE(once.ok());
  }  // Withdrawn everywhere: the source is gone.
  ASSERT_TRUE(offers.Make("r2/a", weights).ok());
  EXPECT_EQ(offers.described(), 2);
}

TEST(TensorOffersTest, WithoutSharingEveryOfferIsItsOwn) {
  TensorOffers offers(/*share=*/false);
  const model::NamedTensors weights = Weights();
  absl::StatusOr<TensorOffers::Offer> a = offers.Make("a", weights);
  absl::StatusOr<TensorOffers::Offer> b = offers.Make("b", weights);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->source.get(), b->source.get());
  EXPECT_EQ(a->info.sha256, b->info.sha256);
  EXPECT_EQ(offers.described(), 2);
}

TEST(TensorOffersTest, AnUndefinedTensorIsAnErrorNotACrash) {
  TensorOffers offers;
  model::NamedTensors bad;
  bad.insert("w", at::Tensor());
  EXPECT_FALSE(offers.Make("id", bad).ok());
}

}  // namespace
}  // namespace fedge::transport
