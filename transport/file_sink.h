// Stages a payload on disk instead of in the process's memory: the
// coordinator keeps each complete upload until its update is accepted (a
// refused submission must not destroy it), and with dense models every
// upload is as large as the model, so holding them in memory made the
// coordinator's footprint grow with the number of devices uploading.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

#include "transport/transfer.h"

namespace fedge::transport {

// Writes the payload to an unnamed file in a directory (O_TMPFILE, or a
// file unlinked as soon as it is created where the file system lacks it),
// so nothing is left behind when the sink or the process goes. Its pages
// live in the kernel's page cache, not in the process's heap. Not
// thread-safe (like every sink, one writer; Read may follow from another
// thread once the writes are done).
class FileSink final : public StoringSink {
 public:
  // Unavailable naming `dir` and the system's reason if no file can be
  // created there (missing, not writable, out of inodes).
  static absl::StatusOr<std::unique_ptr<FileSink>> Create(
      const std::string& dir);
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  // Unavailable when the disk is full or failing: none of `data` counts
  // (the bytes before `offset` stay), so the chunk may be written again.
  absl::Status Write(int64_t offset, absl::string_view data) override;
  // Copies [offset, offset + out.size()) of the bytes written into `out`
  // with pread, without mapping them. OutOfRange if the range leaves them;
  // Unavailable if the disk fails. Safe from several threads once the
  // writes are done.
  absl::Status ReadAt(int64_t offset, absl::Span<char> out) const;
  // Maps the bytes written so far read-only. Each call maps them anew, and
  // the mapping goes with the last reference to it, so pages a reader
  // touched count in the process's memory only while it reads.
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> Read() override;

 private:
  FileSink(int fd, std::string dir) : fd_(fd), dir_(std::move(dir)) {}
  int fd_;
  std::string dir_;
  int64_t size_ = 0;
};

// `source` copied once into an unnamed file in `dir` (a FileSink) and read
// back from it on every Read (FileSink::ReadAt): its pages live in the
// kernel's page cache, not in the process's memory, however many devices
// it is served to. For a large payload that is served often and whose
// in-memory form can then go (the dense coordinator's base). Thread-safe.
// FileSink::Create's and Write's errors, naming `dir`.
absl::StatusOr<std::unique_ptr<PayloadSource>> StageOnDisk(
    const PayloadSource& source, const std::string& dir);

}  // namespace fedge::transport
