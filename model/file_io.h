// Small file helpers with absl::Status errors, shared by checkpoints,
// datasets and configs.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedge::model {

// Reads a whole file. NotFound if it does not exist, PermissionDenied if it
// cannot be opened for that reason, Internal for other OS errors.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` atomically: a temporary file in the same
// directory, fsync, then rename over `path`. A crash at any point leaves
// either the old file or the new one, never a mix. Creates no directories.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// The same, with the contents given as pieces written back to back: a
// gather write, so a file of model-sized parts (a checkpoint written from
// the tensors' own memory) needs no buffer holding all of it.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces);

// Creates `path` and its missing parents (like mkdir -p).
absl::Status MakeDirectories(const std::string& path);

// Maps an errno value from an operation on `path` to a status.
absl::Status ErrnoToStatus(int error_number, absl::string_view operation,
                           const std::string& path);

}  // namespace fedge::model
