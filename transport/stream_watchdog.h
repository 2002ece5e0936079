// Cancels server streams that stop making progress (slow-loris peers).
//
// A streaming handler registers its call with Watch(), reports each
// completed read or write with Touch(), and calls Forget() in OnDone before
// the call's context goes away. A background thread cancels
// (ServerContextBase::TryCancel) every watched call whose last progress is
// older than the idle timeout; the handler then sees its pending read or
// write fail and finishes as for a broken stream, so an honest client
// resumes while a stalled peer stops holding a stream and its buffers.
#pragma once

#include <cstdint>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include <grpcpp/server_context.h>

namespace fedge::transport {

// Thread-safe.
class StreamWatchdog {
 public:
  // `idle_timeout` <= 0 or infinite: nothing is ever cancelled (and no
  // thread runs). Calls are checked every `period` (at most half the
  // timeout).
  explicit StreamWatchdog(absl::Duration idle_timeout,
                          absl::Duration period = absl::Seconds(1));
  ~StreamWatchdog();  // Stops the thread; cancels nothing more.
  StreamWatchdog(const StreamWatchdog&) = delete;
  StreamWatchdog& operator=(const StreamWatchdog&) = delete;

  // Starts watching `context` (borrowed until Forget); returns its handle.
  int64_t Watch(grpc::ServerContextBase* context) ABSL_LOCKS_EXCLUDED(mu_);
  // Progress on the call: its idle time starts again.
  void Touch(int64_t handle) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops watching; after it returns the watchdog never touches the
  // context again. Idempotent.
  void Forget(int64_t handle) ABSL_LOCKS_EXCLUDED(mu_);

  // Calls cancelled so far, and calls watched now.
  int64_t cancelled() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t watched() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Duration idle_timeout() const { return idle_timeout_; }

 private:
  struct Entry {
    grpc::ServerContextBase* context;
    absl::Time last;
    bool cancelled = false;
  };
  void Loop();

  const absl::Duration idle_timeout_;
  const absl::Duration period_;
  mutable absl::Mutex mu_;
  std::map<int64_t, Entry> calls_ ABSL_GUARDED_BY(mu_);
  int64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fedge::transport
