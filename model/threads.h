// The LibTorch thread pool size, set once at start-up by each binary.
#pragma once

namespace fedge::model {

// Sets LibTorch's intra-op threads (and OpenMP's, which OpenBLAS uses) to
// `threads`, or to the number of online cores when `threads` <= 0. Debian's
// LibTorch otherwise starts with one thread. Returns the count applied.
// Call once, before any tensor work.
int ConfigureThreads(int threads);

}  // namespace fedge::model
