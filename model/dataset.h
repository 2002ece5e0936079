// In-memory datasets: a stack of inputs and the matching targets, plus the
// readers of fedge's built-in data (Fashion-MNIST IDX files, byte-level text).
//
// All readers validate their files and return InvalidArgument or DataLoss
// naming the file and the problem; nothing malformed reaches LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include <ATen/core/Tensor.h>

namespace fedge::model {

// inputs[i] pairs with targets[i]. For classification inputs are float
// images [N, C, H, W] and targets int64 labels [N]; for language modelling
// both are int64 token windows [N, T] with targets shifted by one.
// A language-model target that is not scored (prompt and padding positions
// of instruction records): LibTorch's cross-entropy ignore_index.
inline constexpr int64_t kIgnoreTarget = -100;

struct Dataset {
  at::Tensor inputs;
  at::Tensor targets;       // Language models may hold kIgnoreTarget.
  int64_t num_classes = 0;  // Label count or vocabulary size.
  // Text only, optional: int64 [N], the UTF-8 bytes of text that example
  // i's targets stand for (bits per byte divides the loss by their sum).
  at::Tensor target_bytes;

  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
};

// The samples at `indices`, in that order. InvalidArgument if an index is
// out of range.
absl::StatusOr<Dataset> Subset(const Dataset& data,
                               absl::Span<const int64_t> indices);

// The first `n` samples (all of them if n <= 0 or n >= size), sharing
// storage with `data`: the coordinator's evaluation set and its twins.
Dataset Head(const Dataset& data, int64_t n);

// The classification labels as a vector (for partitioners).
std::vector<int64_t> Labels(const Dataset& data);

// --- Fashion-MNIST -----------------------------------------------------------

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

enum class Split { kTrain, kTest };

// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`.
// Images come back as float [N, 1, 28, 28] normalised with the training
// set's mean and standard deviation; labels as int64 [N] in [0, 10).
// NotFound (naming the Debian package to install) if the files are missing;
// DataLoss/InvalidArgument for a bad magic number, a truncated file, counts
// that disagree or a label out of range.
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split);

// The same files with the same checks, the images left as they are stored:
// uint8 [N, 1, 28, 28], a quarter of the float32 size (47 MB for the
// training set instead of 188). For a process that keeps a part of the set
// (a device's shard, the public split): select, then NormalizeFashionMnist.
absl::StatusOr<Dataset> LoadFashionMnistPixels(const std::string& dir,
                                               Split split);

// uint8 pixels as LoadFashionMnist returns them (float32, normalised);
// anything else (already normalised) is returned as is.
Dataset NormalizeFashionMnist(Dataset pixels);

// Parses IDX bytes (already decompressed). Exposed for tests and fuzzing.
absl::StatusOr<Dataset> ParseFashionMnist(const std::string& image_bytes,
                                          const std::string& label_bytes);

// Reads a whole file, transparently decompressing gzip. The string is
// sized once (from the gzip trailer), not grown by doubling.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path);

inline constexpr char kFashionMnistClasses[10][12] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// --- Byte-level text ---------------------------------------------------------

// Next-token prediction over raw bytes (vocabulary 256): the text is cut
// into non-overlapping windows of seq_len + 1 bytes; inputs are the first
// seq_len, targets the last seq_len. A trailing partial window is dropped.
// InvalidArgument if seq_len < 1 or the text is shorter than one window.
absl::StatusOr<Dataset> MakeByteTextDataset(const std::string& text,
                                            int64_t seq_len);

// Reads `path` (NotFound if missing) and calls MakeByteTextDataset.
absl::StatusOr<Dataset> LoadByteTextFile(const std::string& path,
                                         int64_t seq_len);

}  // namespace fedge::model
