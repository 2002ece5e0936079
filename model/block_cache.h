// A LibTorch CPU allocator that keeps large freed blocks for the next
// tensor of the same size, so that a process that allocates the same
// model-sized tensors round after round (the coordinator's sums, means
// and decoded updates in dense mode) neither grows its malloc heap with
// freed blocks wedged between live small ones nor hands them back to the
// kernel to fault them in again (docs/architecture.md, "The block cache").
//
// Requests of at least `min_bytes` get a private anonymous mapping of
// their own, rounded up to whole pages. When the tensor holding one dies,
// the block is kept, still mapped and resident, in a cache of at most
// `cache_bytes`; the least recently freed blocks are unmapped to make
// room. A request takes a cached block of its rounded size, or one at most
// an eighth larger (never a smaller one). Smaller requests are malloc'd
// as LibTorch's default allocator does (c10::alloc_cpu). Every block, of
// either kind, has the data pointer as its context and one deleter, so
// LibTorch's raw interface (raw_allocate, raw_deallocate), which some
// kernels use for scratch memory, works.
//
// Memory cost: what the cache holds (at most `cache_bytes`) on top of the
// live tensors; a cached block's pages stay resident. Release() unmaps
// every cached block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include <c10/core/Allocator.h>

namespace fedge::model {

struct BlockCacheOptions {
  // Smallest request served from a mapping of its own; at least a page.
  size_t min_bytes = 256 << 10;
  // Most freed bytes kept for reuse.
  size_t cache_bytes = 256 << 20;
};

struct BlockCacheStats {
  int64_t live_bytes = 0;    // In blocks handed out and not yet freed.
  int64_t cached_bytes = 0;  // Freed, kept mapped for reuse.
  int64_t reused = 0;        // Requests served from the cache.
  int64_t mapped = 0;        // Requests that mapped a new block.
  int64_t unmapped = 0;      // Blocks handed back to the kernel.
};

// Thread-safe. Must outlive every block it handed out (the installed one
// is never destroyed).
class BlockCache final : public c10::Allocator {
 public:
  // InvalidArgument for min_bytes under a page.
  static absl::StatusOr<std::unique_ptr<BlockCache>> Create(
      const BlockCacheOptions& options);
  ~BlockCache() override;

  // Throws c10::Error (as LibTorch's own allocator does) when the kernel
  // refuses a mapping.
  c10::DataPtr allocate(size_t bytes) const override;
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  BlockCacheStats stats() const ABSL_LOCKS_EXCLUDED(mu_);
  // Changes how much freed memory is kept, unmapping the oldest blocks
  // over the new bound.
  void SetCacheBytes(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Unmaps every cached block.
  void Release() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Block;
  explicit BlockCache(const BlockCacheOptions& options);
  // Frees what any BlockCache allocated: a mapped block goes back to its
  // cache, anything else to free.
  static void Delete(void* data);
  // A cached block of `size` bytes or at most an eighth more, taken out
  // of the cache; nullptr if none.
  Block* TakeCached(size_t size) const ABSL_LOCKS_EXCLUDED(mu_);
  void Recycle(Block* block) const ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the oldest cached blocks out until at most `keep` bytes stay
  // cached, counting them unmapped; the caller unmaps them outside the
  // lock.
  std::list<Block*> EvictTo(size_t keep) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Unmap(const std::list<Block*>& blocks);

  const size_t min_bytes_;
  mutable absl::Mutex mu_;
  size_t cache_bytes_ ABSL_GUARDED_BY(mu_);
  // Freed blocks: by size for reuse, and oldest first for eviction.
  mutable std::multimap<size_t, Block*> by_size_ ABSL_GUARDED_BY(mu_);
  mutable std::list<Block*> by_age_ ABSL_GUARDED_BY(mu_);
  mutable BlockCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

// Makes `options`' cache LibTorch's CPU allocator for every tensor
// allocated from then on (those allocated before keep theirs), for the
// rest of the process, and returns it. Call once, at start-up, before any
// thread allocates tensors; FailedPrecondition on a second call,
// InvalidArgument for bad options.
absl::StatusOr<BlockCache*> InstallBlockCache(const BlockCacheOptions& options);
// The installed cache; nullptr before InstallBlockCache.
BlockCache* InstalledBlockCache();

}  // namespace fedge::model
