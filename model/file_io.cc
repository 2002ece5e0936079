#include "model/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

#include "model/kill_point.h"
#include <sys/stat.h>

namespace fedge::model {

absl::Status ErrnoToStatus(int error_number, absl::string_view operation,
                           const std::string& path) {
  const std::string message =
      absl::StrCat(operation, " ", path, ": ", std::strerror(error_number));
  switch (error_number) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", path);
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      return ErrnoToStatus(saved, "cannot read", path);
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return contents;
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  return WriteFileAtomically(path, absl::MakeConstSpan(&contents, 1));
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces) {
  const std::string temp =
      absl::StrCat(path, ".tmp.", static_cast<int64_t>(::getpid()));
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "cannot create", temp);
  size_t total = 0;
  for (absl::string_view piece : pieces) total += piece.size();
  // Crash tests: die with half the bytes in the temporary file.
  const size_t half = total / 2;
  size_t written = 0;  // Over all the pieces.
  for (absl::string_view piece : pieces) {
    size_t done = 0;
    while (done < piece.size()) {
      if (written == half && half > 0) KillPoint("atomic_write");
      size_t chunk = piece.size() - done;
      if (written < half) chunk = std::min(chunk, half - written);
      const ssize_t n = ::write(fd, piece.data() + done, chunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int saved = errno;
        ::close(fd);
        ::unlink(temp.c_str());
        return ErrnoToStatus(saved, "cannot write", temp);
      }
      done += static_cast<size_t>(n);
      written += static_cast<size_t>(n);
    }
  }
  // fsync before rename: otherwise a power loss can leave the new name
  // pointing at an empty file on some file systems.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    return ErrnoToStatus(saved, "cannot flush", temp);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    return ErrnoToStatus(saved, "cannot rename onto", path);
  }
  return absl::OkStatus();
}

absl::Status MakeDirectories(const std::string& path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error)
    return ErrnoToStatus(error.value(), "cannot create directory", path);
  return absl::OkStatus();
}

}  // namespace fedge::model
