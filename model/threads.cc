#include "model/threads.h"

#include <malloc.h>

#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include "model/asan.h"

namespace fedge::model {

int ConfigureRuntime(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  at::set_num_threads(threads);
  at::globalContext().setFlushDenormal(true);
  // glibc hands blocks above its (adaptive) mmap threshold straight back to
  // the kernel, and the next step's tensors of the same size fault their
  // pages in again: measured 4x the system time of the same model driven
  // from Python and a 10% slower training step. Fixed thresholds keep
  // activation-sized blocks in the heap for reuse; memory above 128 MiB of
  // free heap top is still returned.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  return threads;
}

void ReleaseFreeHeap() {
#if defined(__GLIBC__) && !defined(FEDGE_ASAN)
  malloc_trim(0);
#endif
}

int64_t FreeHeapBytes() {
#if defined(__GLIBC__) && !defined(FEDGE_ASAN)
#if __GLIBC_PREREQ(2, 33)
  return static_cast<int64_t>(mallinfo2().fordblks);
#endif
#endif
  return 0;
}

}  // namespace fedge::model
