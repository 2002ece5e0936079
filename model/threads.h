// LibTorch's process-wide settings, applied once at start-up by each binary.
#pragma once

#include <cstdint>

namespace fedge::model {

// Sets LibTorch's intra-op threads (and OpenMP's, which OpenBLAS uses) to
// `threads`, or to the number of online cores when `threads` <= 0 (Debian's
// LibTorch otherwise starts with one thread), and flushes denormal floats to
// zero: Adam's second-moment estimates decay into the denormal range late in
// training, where x86 arithmetic on them is many times slower. Returns the
// thread count applied. Also fixes glibc's malloc thresholds so that
// activation-sized tensors are reused instead of being unmapped and faulted
// in again every step (threads.cc). Call once, before any tensor work.
int ConfigureRuntime(int threads);

// Returns heap memory freed since the last call to the operating system
// (glibc malloc_trim). A no-op where malloc is not glibc's, and under
// AddressSanitizer, whose allocator serves every allocation: there glibc's
// arenas are never set up, and two threads' first malloc_trim raced on
// initialising them (a CI crash). Thread-safe; can take tens of ms.
void ReleaseFreeHeap();

// Bytes of freed memory that glibc's malloc holds for reuse, over every
// arena (mallinfo2's fordblks). After ReleaseFreeHeap most of it is no
// longer resident, though still counted. 0 where malloc is not glibc's
// (2.33 or later) and under AddressSanitizer. Thread-safe; walks the
// arenas' free lists (microseconds to a few ms).
int64_t FreeHeapBytes();

}  // namespace fedge::model
