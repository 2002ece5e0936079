#include "model/threads.h"

#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "model/asan.h"

namespace fedge::model {
namespace {

TEST(FreeHeapBytesTest, CountsABlockFreedIntoTheHeap) {
#if defined(__GLIBC__) && !defined(FEDGE_ASAN)
  ConfigureRuntime(1);  // Its mmap threshold (64 MiB) keeps 8 MiB in the heap.
  constexpr size_t kBytes = 8 << 20;
  char* block = static_cast<char*>(std::malloc(kBytes));
  // A live block after it, so the freed one is not the heap's top, which
  // free may hand back to the kernel.
  char* fence = static_cast<char*>(std::malloc(64));
  ASSERT_NE(block, nullptr);
  ASSERT_NE(fence, nullptr);
  std::memset(block, 1, kBytes);
  asm volatile("" : : "r"(block), "r"(fence) : "memory");
  const int64_t before = FreeHeapBytes();
  std::free(block);
  EXPECT_GE(FreeHeapBytes() - before, static_cast<int64_t>(kBytes));
  std::free(fence);
#else
  EXPECT_EQ(FreeHeapBytes(), 0);  // Not glibc's malloc: nothing to count.
#endif
}

}  // namespace
}  // namespace fedge::model
