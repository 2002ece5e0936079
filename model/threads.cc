#include "model/threads.h"

#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>

namespace fedge::model {

int ConfigureRuntime(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  at::set_num_threads(threads);
  at::globalContext().setFlushDenormal(true);
  return threads;
}

}  // namespace fedge::model
