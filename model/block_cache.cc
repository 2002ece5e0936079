#include "model/block_cache.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

namespace fedge::model {

struct BlockCache::Block {
  const BlockCache* owner;
  void* address;
  size_t size;  // Whole pages.
  // While cached: its entries in by_size_ and by_age_.
  std::multimap<size_t, Block*>::iterator size_entry;
  std::list<Block*>::iterator age_entry;
};

namespace {

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// Every cache's blocks handed out, by address, so that one deleter serves
// them and malloc'd memory alike. Only page-aligned pointers are looked
// up: a mapping always is, malloc's rarely.
ABSL_CONST_INIT absl::Mutex registry_mu(absl::kConstInit);
std::unordered_map<void*, void*>& Registry()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(registry_mu) {
  static auto* registry = new std::unordered_map<void*, void*>;
  return *registry;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlockCache>> BlockCache::Create(
    const BlockCacheOptions& options) {
  if (options.min_bytes < PageSize()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the block cache's smallest block (", options.min_bytes,
                     " bytes) is under a page (", PageSize(), " bytes)"));
  }
  return std::unique_ptr<BlockCache>(new BlockCache(options));
}

BlockCache::BlockCache(const BlockCacheOptions& options)
    : min_bytes_(options.min_bytes), cache_bytes_(options.cache_bytes) {}

BlockCache::~BlockCache() { Release(); }

c10::DataPtr BlockCache::allocate(size_t bytes) const {
  if (bytes < min_bytes_) {
    void* data = c10::alloc_cpu(bytes);
    return {data, data, &BlockCache::Delete, c10::Device(c10::kCPU)};
  }
  const size_t size = (bytes + PageSize() - 1) / PageSize() * PageSize();
  Block* block = TakeCached(size);
  if (block == nullptr) {
    void* address = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(address != MAP_FAILED, "fedge's block cache could not map ",
                size, " bytes for a tensor (errno ", errno, ")");
    block = new Block{this, address, size, {}, {}};
    absl::MutexLock lock(&mu_);
    stats_.live_bytes += size;
    ++stats_.mapped;
  }
  {
    absl::MutexLock lock(&registry_mu);
    Registry().emplace(block->address, block);
  }
  return {block->address, block->address, &BlockCache::Delete,
          c10::Device(c10::kCPU)};
}

BlockCache::Block* BlockCache::TakeCached(size_t size) const {
  absl::MutexLock lock(&mu_);
  auto it = by_size_.lower_bound(size);
  if (it == by_size_.end() || it->first > size + size / 8) return nullptr;
  Block* block = it->second;
  by_size_.erase(it);
  by_age_.erase(block->age_entry);
  stats_.cached_bytes -= block->size;
  stats_.live_bytes += block->size;
  ++stats_.reused;
  return block;
}

void BlockCache::Delete(void* data) {
  if (data == nullptr) return;
  Block* block = nullptr;
  if (reinterpret_cast<uintptr_t>(data) % PageSize() == 0) {
    absl::MutexLock lock(&registry_mu);
    auto it = Registry().find(data);
    if (it != Registry().end()) {
      block = static_cast<Block*>(it->second);
      Registry().erase(it);
    }
  }
  if (block == nullptr) {
    c10::free_cpu(data);
    return;
  }
  block->owner->Recycle(block);
}

void BlockCache::Recycle(Block* block) const {
  std::list<Block*> evicted;
  {
    absl::MutexLock lock(&mu_);
    stats_.live_bytes -= block->size;
    if (block->size <= cache_bytes_) {
      evicted = EvictTo(cache_bytes_ - block->size);
      block->age_entry = by_age_.insert(by_age_.end(), block);
      block->size_entry = by_size_.emplace(block->size, block);
      stats_.cached_bytes += block->size;
    } else {
      evicted.push_back(block);
      ++stats_.unmapped;
    }
  }
  Unmap(evicted);
}

void BlockCache::Unmap(const std::list<Block*>& blocks) {
  for (Block* b : blocks) {
    munmap(b->address, b->size);
    delete b;
  }
}

std::list<BlockCache::Block*> BlockCache::EvictTo(size_t keep) const {
  std::list<Block*> evicted;
  while (static_cast<size_t>(stats_.cached_bytes) > keep) {
    Block* oldest = by_age_.front();
    by_age_.pop_front();
    by_size_.erase(oldest->size_entry);
    stats_.cached_bytes -= oldest->size;
    ++stats_.unmapped;
    evicted.push_back(oldest);
  }
  return evicted;
}

BlockCacheStats BlockCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void BlockCache::SetCacheBytes(size_t bytes) {
  std::list<Block*> evicted;
  {
    absl::MutexLock lock(&mu_);
    cache_bytes_ = bytes;
    evicted = EvictTo(bytes);
  }
  Unmap(evicted);
}

void BlockCache::Release() {
  std::list<Block*> evicted;
  {
    absl::MutexLock lock(&mu_);
    evicted = EvictTo(0);
  }
  Unmap(evicted);
}

namespace {
std::atomic<BlockCache*> installed{nullptr};
}  // namespace

absl::StatusOr<BlockCache*> InstallBlockCache(
    const BlockCacheOptions& options) {
  absl::StatusOr<std::unique_ptr<BlockCache>> cache =
      BlockCache::Create(options);
  if (!cache.ok()) return cache.status();
  BlockCache* expected = nullptr;
  if (!installed.compare_exchange_strong(expected, cache->get())) {
    return absl::FailedPreconditionError(
        "the block cache is installed already");
  }
  // LibTorch takes it and never frees it, so the cache outlives every
  // tensor, as the blocks' deleters need.
  BlockCache* raw = cache->release();
  c10::SetCPUAllocator(raw, /*priority=*/1);
  return raw;
}

BlockCache* InstalledBlockCache() { return installed.load(); }

}  // namespace fedge::model
