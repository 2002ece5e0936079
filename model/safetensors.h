// Reader and writer of the safetensors format (Hugging Face), the on-disk
// form of every fedge checkpoint and exported adapter.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON mapping
// each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (plus
// an optional "__metadata__" object of string values), then the raw
// little-endian tensor bytes. Offsets are relative to the end of the header.
//
// Every malformed input is rejected with an absl::Status before any byte
// reaches LibTorch: a truncated file, a header longer than kMaxHeaderBytes,
// invalid JSON, an unknown dtype, offsets outside the data or overlapping,
// and a byte range that does not match the shape all give InvalidArgument
// (DataLoss for a file shorter than its header says), naming the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

namespace fedge::model {

// Named tensors in file order. LibTorch's own type, as named_parameters().
using NamedTensors = torch::OrderedDict<std::string, at::Tensor>;

// Header length above which a file is rejected (the reference
// implementation's limit), so a hostile length cannot make us allocate.
inline constexpr int64_t kMaxHeaderBytes = 100 * 1024 * 1024;

struct SafetensorsFile {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__", if any.
};

// One tensor's place in a file, validated against the file size.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // Relative to data_start.
  uint64_t end = 0;
};

// The parsed header of a file: where each tensor's bytes are.
struct SafetensorsLayout {
  uint64_t data_start = 0;                // 8 + header length.
  std::vector<SafetensorsEntry> entries;  // Sorted by offset.
  std::map<std::string, std::string> metadata;
};

// How many leading bytes of a file ParseSafetensorsLayout needs: 8 before
// the length prefix is known, then 8 + header length. Same errors as
// ParseSafetensors for a bad length prefix.
absl::StatusOr<uint64_t> SafetensorsHeadBytes(absl::string_view head,
                                              uint64_t file_size);

// Parses and validates the header of a file of `file_size` bytes from its
// first SafetensorsHeadBytes() bytes (`head` may hold more). Lets a
// receiver allocate tensors and fill them as bytes stream in.
absl::StatusOr<SafetensorsLayout> ParseSafetensorsLayout(absl::string_view head,
                                                         uint64_t file_size);

// The bytes SerializeSafetensors writes before the tensor data (length
// prefix and padded JSON); the data follows in `tensors`' order, each
// tensor's contiguous bytes back to back.
absl::StatusOr<std::string> SafetensorsHeader(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Decodes a whole safetensors file held in memory. Tensors are copied out of
// `bytes` (they own their memory). Supported dtypes: F64, F32, F16, BF16,
// I64, I32, I16, I8, U8, BOOL; the order of `tensors` is by data offset.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes);

// Reads a safetensors file, reading each tensor's bytes straight into its
// own storage (peak memory is the tensors, not twice the file).
// NotFound if the file does not exist; otherwise as ParseSafetensors.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

// Random access to a safetensors file on disk: the header is parsed and
// validated once, then tensors, or slices of them, are read on demand, so a
// caller that needs part of a large file holds memory for that part only
// (plus one row of the sliced tensor while slicing along dimension > 0).
// Thread-compatible; the file stays open while the reader lives.
class SafetensorsReader {
 public:
  // NotFound if `path` does not exist; DataLoss/InvalidArgument for a bad
  // header, as ParseSafetensors, with the path in the message.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(
      const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const SafetensorsLayout& layout() const { return layout_; }
  // The entry called `name`, or nullptr.
  const SafetensorsEntry* Find(absl::string_view name) const;

  // The whole tensor. DataLoss if the file was truncated since Open.
  absl::StatusOr<at::Tensor> Read(const SafetensorsEntry& entry) const;

  // The tensor restricted to `index` (in range, any order) along `dim`:
  // the result's size in `dim` is index.size(). InvalidArgument for a dim
  // or index out of range.
  absl::StatusOr<at::Tensor> ReadSlice(const SafetensorsEntry& entry,
                                       int64_t dim,
                                       absl::Span<const int64_t> index) const;

 private:
  SafetensorsReader(int fd, std::string path)
      : fd_(fd), path_(std::move(path)) {}
  // pread of exactly `length` bytes at data offset `offset`.
  absl::Status ReadAt(void* out, uint64_t length, uint64_t offset) const;

  const int fd_;
  const std::string path_;
  SafetensorsLayout layout_;
};

// Encodes `tensors` (any device-CPU dtype listed above; non-contiguous
// tensors are made contiguous) in insertion order, with `metadata`.
// InvalidArgument for an unsupported dtype, an empty or duplicate name, or
// the reserved name "__metadata__".
absl::StatusOr<std::string> SerializeSafetensors(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Writes SerializeSafetensors' bytes to `path` atomically: to a temporary
// file in the same directory, flushed, then renamed, so a crash never leaves
// a half-written checkpoint. Internal/Unavailable-style errors from the OS
// are returned as the matching absl code with the path and errno text.
absl::Status WriteSafetensors(
    const std::string& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace fedge::model
