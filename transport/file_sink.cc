#include "transport/file_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

#include <sys/mman.h>

namespace fedge::transport {
namespace {

absl::Status SystemError(absl::string_view what, const std::string& dir,
                         int error) {
  return absl::UnavailableError(absl::StrCat(what, " in upload staging ",
                                             "directory ", dir, ": ",
                                             std::strerror(error)));
}

class MappedBytes final : public PayloadBytes {
 public:
  MappedBytes(const void* data, size_t size) : data_(data), size_(size) {}
  ~MappedBytes() override { munmap(const_cast<void*>(data_), size_); }
  absl::string_view view() const override {
    return absl::string_view(static_cast<const char*>(data_), size_);
  }
  void DoneWith(absl::string_view part) const override {
    const auto begin = reinterpret_cast<uintptr_t>(data_);
    const auto first = reinterpret_cast<uintptr_t>(part.data());
    if (part.empty() || first < begin || first + part.size() > begin + size_) {
      return;
    }
    // The pages wholly inside `part`: a page it shares with its neighbours
    // may still be read.
    static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t from = (first + page - 1) / page * page;
    const uintptr_t to = (first + part.size()) / page * page;
    // A hint: if it fails the pages stay, as they would have.
    if (from < to) {
      (void)madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
    }
  }

 private:
  const void* data_;
  size_t size_;
};

class EmptyBytes final : public PayloadBytes {
 public:
  absl::string_view view() const override { return {}; }
};

class StagedSource final : public PayloadSource {
 public:
  explicit StagedSource(std::unique_ptr<FileSink> sink, int64_t size)
      : sink_(std::move(sink)), size_(size) {}
  int64_t size() const override { return size_; }
  absl::Status Read(int64_t offset, absl::Span<char> out) const override {
    return sink_->ReadAt(offset, out);
  }

 private:
  const std::unique_ptr<FileSink> sink_;
  const int64_t size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileSink>> FileSink::Create(
    const std::string& dir) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // A file system without O_TMPFILE: a named file, unlinked at once.
    std::string path = dir + "/upload-XXXXXX";
    fd = mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) return SystemError("cannot create a file", dir, errno);
  return std::unique_ptr<FileSink>(new FileSink(fd, dir));
}

FileSink::~FileSink() { close(fd_); }

absl::Status FileSink::Write(int64_t offset, absl::string_view data) {
  if (offset != size_) {
    return absl::InternalError("file sink: bytes out of order");
  }
  int64_t end = offset;
  for (absl::string_view rest = data; !rest.empty();) {
    const ssize_t n = pwrite(fd_, rest.data(), rest.size(), end);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Nothing of this chunk counts: the same chunk may be sent again.
      return SystemError(absl::StrCat("cannot write ", data.size(),
                                      " bytes at offset ", offset),
                         dir_, errno);
    }
    rest.remove_prefix(static_cast<size_t>(n));
    end += n;
  }
  size_ = end;
  return absl::OkStatus();
}

absl::Status FileSink::ReadAt(int64_t offset, absl::Span<char> out) const {
  if (offset < 0 || offset + static_cast<int64_t>(out.size()) > size_) {
    return absl::OutOfRangeError(
        absl::StrCat("read [", offset, ", +", out.size(), ") of ", size_));
  }
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = pread(fd_, out.data() + done, out.size() - done,
                            offset + static_cast<int64_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // 0: the file lost bytes written to it.
      return SystemError(
          absl::StrCat("cannot read ", out.size(), " bytes at offset ", offset),
          dir_, n < 0 ? errno : EIO);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const PayloadBytes>> FileSink::Read() {
  if (size_ == 0) return std::make_shared<EmptyBytes>();
  // Not populated at once: a reader that gives pages back as it goes
  // (PayloadBytes::DoneWith) then never holds the whole file. A read fault
  // maps the pages around it too (the kernel's fault-around), so this costs
  // a fault per 16 pages, not per page.
  void* data =
      mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd_, 0);
  if (data == MAP_FAILED) {
    return SystemError(absl::StrCat("cannot map ", size_, " staged bytes"),
                       dir_, errno);
  }
  return std::make_shared<MappedBytes>(data, static_cast<size_t>(size_));
}

absl::StatusOr<std::unique_ptr<PayloadSource>> StageOnDisk(
    const PayloadSource& source, const std::string& dir) {
  absl::StatusOr<std::unique_ptr<FileSink>> sink = FileSink::Create(dir);
  if (!sink.ok()) return sink.status();
  constexpr int64_t kPiece = int64_t{4} << 20;
  std::string piece;
  for (int64_t offset = 0; offset < source.size(); offset += kPiece) {
    piece.resize(static_cast<size_t>(std::min(kPiece, source.size() - offset)));
    if (absl::Status s = source.Read(offset, absl::MakeSpan(piece)); !s.ok()) {
      return s;
    }
    if (absl::Status s = (*sink)->Write(offset, piece); !s.ok()) return s;
  }
  return std::make_unique<StagedSource>(*std::move(sink), source.size());
}

}  // namespace fedge::transport
