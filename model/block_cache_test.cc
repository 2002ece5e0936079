#include "model/block_cache.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include <ATen/EmptyTensor.h>
#include <torch/types.h>

namespace fedge::model {
namespace {

constexpr size_t kMiB = 1 << 20;

BlockCacheOptions Options(size_t cache_bytes) {
  BlockCacheOptions options;
  options.min_bytes = 256 << 10;
  options.cache_bytes = cache_bytes;
  return options;
}

std::unique_ptr<BlockCache> MakeCache(size_t cache_bytes = 16 * kMiB) {
  absl::StatusOr<std::unique_ptr<BlockCache>> cache =
      BlockCache::Create(Options(cache_bytes));
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

// A float tensor of `elements` from `cache`.
at::Tensor FloatsFrom(BlockCache& cache, int64_t elements) {
  return at::detail::empty_generic({elements}, &cache,
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   at::kFloat, c10::nullopt);
}

TEST(BlockCacheTest, AFreedBlockServesTheNextTensorOfItsSize) {
  std::unique_ptr<BlockCache> cache = MakeCache();
  const void* first_address;
  {
    at::Tensor t = FloatsFrom(*cache, 1 << 20);
    t.fill_(2);
    EXPECT_EQ(t.sum().item<float>(), 2.0f * (1 << 20));
    first_address = t.data_ptr();
    EXPECT_EQ(cache->stats().live_bytes, 4 * kMiB);
  }
  EXPECT_EQ(cache->stats().live_bytes, 0);
  EXPECT_EQ(cache->stats().cached_bytes, 4 * kMiB);
  at::Tensor again = FloatsFrom(*cache, 1 << 20);
  EXPECT_EQ(again.data_ptr(), first_address);
  const BlockCacheStats stats = cache->stats();
  EXPECT_EQ(stats.mapped, 1);
  EXPECT_EQ(stats.reused, 1);
  EXPECT_EQ(stats.cached_bytes, 0);
}

TEST(BlockCacheTest, SmallTensorsGoToTheDefaultAllocator) {
  std::unique_ptr<BlockCache> cache = MakeCache();
  at::Tensor small = FloatsFrom(*cache, 1000);
  small.fill_(1);
  EXPECT_EQ(small.sum().item<float>(), 1000.0f);
  const BlockCacheStats stats = cache->stats();
  EXPECT_EQ(stats.mapped, 0);
  EXPECT_EQ(stats.live_bytes, 0);
}

TEST(BlockCacheTest, TakesNoSmallerBlockAndNoneMuchLarger) {
  std::unique_ptr<BlockCache> cache = MakeCache();
  FloatsFrom(*cache, 1 << 20);  // 4 MiB, freed at once.
  {
    at::Tensor larger = FloatsFrom(*cache, (1 << 20) + 4096);
    EXPECT_EQ(cache->stats().reused, 0);
  }
  // Cached now: 4 MiB and 4 MiB + 16 KiB. Half the size takes neither.
  at::Tensor half = FloatsFrom(*cache, 1 << 19);
  EXPECT_EQ(cache->stats().reused, 0);
  // A little smaller takes the 4 MiB block, the smallest that fits.
  at::Tensor slightly_smaller = FloatsFrom(*cache, (1 << 20) - 4096);
  EXPECT_EQ(cache->stats().reused, 1);
  EXPECT_EQ(cache->stats().cached_bytes, 4 * kMiB + 16384);
}

TEST(BlockCacheTest, KeepsAtMostItsBoundUnmappingTheOldestFirst) {
  std::unique_ptr<BlockCache> cache = MakeCache(10 * kMiB);
  {
    at::Tensor a = FloatsFrom(*cache, 1 << 20);  // 4 MiB each.
    at::Tensor b = FloatsFrom(*cache, 1 << 20);
    at::Tensor c = FloatsFrom(*cache, 1 << 20);
    at::Tensor big = FloatsFrom(*cache, 3 << 20);  // 12 MiB: over the bound.
    big.reset();
    EXPECT_EQ(cache->stats().unmapped, 1);
    EXPECT_EQ(cache->stats().cached_bytes, 0);
    a.reset();
    b.reset();
    EXPECT_EQ(cache->stats().cached_bytes, 8 * kMiB);
  }  // c: a goes.
  BlockCacheStats stats = cache->stats();
  EXPECT_EQ(stats.cached_bytes, 8 * kMiB);
  EXPECT_EQ(stats.unmapped, 2);

  cache->SetCacheBytes(4 * kMiB);
  EXPECT_EQ(cache->stats().cached_bytes, 4 * kMiB);
  cache->Release();
  stats = cache->stats();
  EXPECT_EQ(stats.cached_bytes, 0);
  EXPECT_EQ(stats.unmapped, 4);
  // Release keeps the bound: a freed block is cached again.
  FloatsFrom(*cache, 1 << 20);
  EXPECT_EQ(cache->stats().cached_bytes, 4 * kMiB);
}

TEST(BlockCacheTest, ServesLibTorchsRawInterface) {
  std::unique_ptr<BlockCache> cache = MakeCache();
  for (size_t bytes : {size_t{0}, size_t{100}, size_t{4096}, 4 * kMiB}) {
    void* data = cache->raw_allocate(bytes);
    if (bytes > 0) {
      ASSERT_NE(data, nullptr);
      static_cast<char*>(data)[bytes - 1] = 1;
    }
    cache->raw_deallocate(data);
  }
  const BlockCacheStats stats = cache->stats();
  EXPECT_EQ(stats.mapped, 1);
  EXPECT_EQ(stats.live_bytes, 0);
  EXPECT_EQ(stats.cached_bytes, 4 * kMiB);
}

TEST(BlockCacheTest, ThreadsShareItSafely) {
  std::unique_ptr<BlockCache> cache = MakeCache(8 * kMiB);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 200; ++i) {
        at::Tensor x = FloatsFrom(*cache, (1 << 16) * (1 + (i + t) % 5));
        x.fill_(static_cast<float>(t));
        ASSERT_EQ(x[0].item<float>(), static_cast<float>(t));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const BlockCacheStats stats = cache->stats();
  EXPECT_EQ(stats.live_bytes, 0);
  EXPECT_LE(stats.cached_bytes, static_cast<int64_t>(8 * kMiB));
  EXPECT_EQ(stats.mapped + stats.reused, 800);
  EXPECT_GT(stats.reused, 0);
}

TEST(BlockCacheTest, RefusesABlockUnderAPage) {
  BlockCacheOptions options;
  options.min_bytes = 100;
  absl::StatusOr<std::unique_ptr<BlockCache>> cache =
      BlockCache::Create(options);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cache.status().message().find("under a page"),
            absl::string_view::npos);
}

// Last: it changes the process's allocator.
TEST(BlockCacheTest, NoneIsInstalledUntilOneIs) {
  EXPECT_EQ(InstalledBlockCache(), nullptr);
}

TEST(BlockCacheTest, InstalledItServesLibTorchsLargeTensors) {
  absl::StatusOr<BlockCache*> cache = InstallBlockCache(Options(64 * kMiB));
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(InstalledBlockCache(), *cache);
  { at::Tensor t = torch::ones({512, 1024}); }
  at::Tensor again = torch::ones({512, 1024}) * 3;
  EXPECT_EQ(again.sum().item<float>(), 3.0f * 512 * 1024);
  // GELU's kernel takes scratch memory through the raw interface, which
  // an allocator without raw_deleter fails (an assertion in LibTorch).
  at::Tensor gelu = at::gelu(torch::randn({64, 4096}));
  EXPECT_TRUE(gelu.isfinite().all().item<bool>());
  const BlockCacheStats stats = (*cache)->stats();
  EXPECT_GE(stats.mapped, 1);
  EXPECT_GE(stats.reused, 1);
  EXPECT_EQ(InstallBlockCache({}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedge::model
