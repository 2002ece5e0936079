#include "model/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "model/file_io.h"

namespace fedge::model {

absl::StatusOr<Dataset> Subset(const Dataset& data,
                               absl::Span<const int64_t> indices) {
  const int64_t n = data.size();
  for (int64_t i : indices) {
    if (i < 0 || i >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample index ", i, " out of range [0, ", n, ")"));
    }
  }
  const at::Tensor index = torch::tensor(
      std::vector<int64_t>(indices.begin(), indices.end()), torch::kLong);
  Dataset out;
  out.inputs = data.inputs.index_select(0, index);
  out.targets = data.targets.index_select(0, index);
  out.num_classes = data.num_classes;
  if (data.target_bytes.defined()) {
    out.target_bytes = data.target_bytes.index_select(0, index);
  }
  return out;
}

Dataset Head(const Dataset& data, int64_t n) {
  if (n <= 0 || n >= data.size()) return data;
  Dataset out;
  out.inputs = data.inputs.narrow(0, 0, n);
  out.targets = data.targets.narrow(0, 0, n);
  out.num_classes = data.num_classes;
  if (data.target_bytes.defined()) {
    out.target_bytes = data.target_bytes.narrow(0, 0, n);
  }
  return out;
}

std::vector<int64_t> Labels(const Dataset& data) {
  const at::Tensor t = data.targets.to(torch::kLong).contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

namespace {

// The size ReadMaybeGzip will read, to reserve: a gzip file's trailer holds
// its uncompressed size modulo 2^32 (of its last member); any other file
// is read as it is. A hint only: a wrong one costs a reallocation.
size_t ExpectedSize(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return 0;
  unsigned char magic[2] = {0, 0};
  unsigned char trailer[4] = {0, 0, 0, 0};
  size_t size = 0;
  if (std::fread(magic, 1, 2, file) == 2 &&
      std::fseek(file, 0, SEEK_END) == 0) {
    const long end = std::ftell(file);
    if (magic[0] != 0x1f || magic[1] != 0x8b) {
      size = end > 0 ? static_cast<size_t>(end) : 0;
    } else if (end >= 18 && std::fseek(file, -4, SEEK_END) == 0 &&
               std::fread(trailer, 1, 4, file) == 4) {
      size = size_t{trailer[0]} | size_t{trailer[1]} << 8 |
             size_t{trailer[2]} << 16 | size_t{trailer[3]} << 24;
      // A corrupt trailer must not reserve gigabytes: deflate expands at
      // most ~1032-fold.
      size = std::min({size, static_cast<size_t>(end) * 1032, size_t{1} << 30});
    }
  }
  std::fclose(file);
  return size;
}

}  // namespace

absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return ErrnoToStatus(errno, "cannot open", path);
  std::string out;
  // One byte more than expected, so reaching the end does not grow it.
  out.reserve(ExpectedSize(path) + 1);
  char buffer[1 << 16];
  while (true) {
    const int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      return absl::DataLossError(
          absl::StrCat("cannot decompress ", path, ": ", message));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  // gzread returns a short read at a truncated gzip stream; gzclose_r then
  // reports Z_BUF_ERROR ("unexpected end of file").
  const int close = gzclose_r(file);
  if (close != Z_OK) {
    return absl::DataLossError(absl::StrCat("cannot decompress ", path,
                                            ": truncated or corrupt "
                                            "gzip stream (zlib error ",
                                            close, ")"));
  }
  return out;
}

namespace {

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Mean and standard deviation of the Fashion-MNIST training pixels in [0, 1].
constexpr float kPixelMean = 0.2860f;
constexpr float kPixelStd = 0.3530f;

}  // namespace

namespace {

// IDX bytes to a dataset of uint8 pixels, with every check. The pixels are
// the image file's own bytes (no copy): the tensor keeps `image_bytes`.
absl::StatusOr<Dataset> ParsePixels(std::string image_bytes,
                                    const std::string& label_bytes) {
  if (image_bytes.size() < 16) {
    return absl::DataLossError("IDX images: file shorter than its header");
  }
  if (label_bytes.size() < 8) {
    return absl::DataLossError("IDX labels: file shorter than its header");
  }
  if (BigEndian32(image_bytes, 0) != 0x00000803) {
    return absl::InvalidArgumentError(
        "IDX images: bad magic number (expected 0x00000803, ubyte x 3 dims)");
  }
  if (BigEndian32(label_bytes, 0) != 0x00000801) {
    return absl::InvalidArgumentError(
        "IDX labels: bad magic number (expected 0x00000801, ubyte x 1 dim)");
  }
  const uint64_t count = BigEndian32(image_bytes, 4);
  const uint64_t rows = BigEndian32(image_bytes, 8);
  const uint64_t cols = BigEndian32(image_bytes, 12);
  const uint64_t label_count = BigEndian32(label_bytes, 4);
  if (rows != 28 || cols != 28) {
    return absl::InvalidArgumentError(absl::StrCat(
        "IDX images: ", rows, "x", cols, " pixels, expected 28x28"));
  }
  if (count != label_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX: ", count, " images but ", label_count, " labels"));
  }
  if (image_bytes.size() - 16 != count * rows * cols) {
    return absl::DataLossError(absl::StrCat(
        "IDX images: header promises ", count, " images (", count * rows * cols,
        " bytes) but ", image_bytes.size() - 16, " bytes follow"));
  }
  if (label_bytes.size() - 8 != count) {
    return absl::DataLossError(
        absl::StrCat("IDX labels: header promises ", count, " labels but ",
                     label_bytes.size() - 8, " bytes follow"));
  }
  at::Tensor labels = torch::empty({static_cast<int64_t>(count)}, torch::kLong);
  int64_t* out = labels.data_ptr<int64_t>();
  for (uint64_t i = 0; i < count; ++i) {
    const auto label = static_cast<unsigned char>(label_bytes[8 + i]);
    if (label >= 10) {
      return absl::InvalidArgumentError(absl::StrCat("IDX labels: label ",
                                                     int{label}, " at sample ",
                                                     i, " is outside [0, 10)"));
    }
    out[i] = label;
  }
  auto owner = std::make_shared<std::string>(std::move(image_bytes));
  Dataset data;
  data.inputs = torch::from_blob(
      owner->data() + 16, {static_cast<int64_t>(count), 1, 28, 28},
      [owner](void*) mutable { owner.reset(); }, torch::kUInt8);
  data.targets = labels;
  data.num_classes = 10;
  return data;
}

}  // namespace

Dataset NormalizeFashionMnist(Dataset pixels) {
  if (pixels.inputs.scalar_type() != torch::kUInt8) return pixels;
  // In place: as one expression, the four float32 temporaries of the whole
  // training set (188 MB each) were alive at once, and made a device's peak.
  pixels.inputs = pixels.inputs.to(torch::kFloat32)
                      .div_(255.0f)
                      .sub_(kPixelMean)
                      .div_(kPixelStd);
  return pixels;
}

absl::StatusOr<Dataset> ParseFashionMnist(const std::string& image_bytes,
                                          const std::string& label_bytes) {
  absl::StatusOr<Dataset> pixels = ParsePixels(image_bytes, label_bytes);
  if (!pixels.ok()) return pixels.status();
  return NormalizeFashionMnist(*std::move(pixels));
}

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split) {
  absl::StatusOr<Dataset> pixels = LoadFashionMnistPixels(dir, split);
  if (!pixels.ok()) return pixels.status();
  return NormalizeFashionMnist(*std::move(pixels));
}

absl::StatusOr<Dataset> LoadFashionMnistPixels(const std::string& dir,
                                               Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  std::string files[2] = {absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte"),
                          absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte")};
  std::string bytes[2];
  for (int i = 0; i < 2; ++i) {
    // Debian ships the .gz files; accept unpacked copies too.
    std::string path = files[i] + ".gz";
    if (::access(path.c_str(), R_OK) != 0) path = files[i];
    if (::access(path.c_str(), R_OK) != 0) {
      return absl::NotFoundError(absl::StrCat(
          "Fashion-MNIST file ", files[i],
          "[.gz] not found; install the "
          "Debian package dataset-fashion-mnist (scripts/setup does) or pass "
          "a directory that holds the IDX files"));
    }
    absl::StatusOr<std::string> read = ReadMaybeGzip(path);
    if (!read.ok()) return read.status();
    bytes[i] = *std::move(read);
  }
  absl::StatusOr<Dataset> data = ParsePixels(std::move(bytes[0]), bytes[1]);
  if (!data.ok()) {
    return absl::Status(
        data.status().code(),
        absl::StrCat(dir, " (", prefix, "): ", data.status().message()));
  }
  return data;
}

absl::StatusOr<Dataset> MakeByteTextDataset(const std::string& text,
                                            int64_t seq_len) {
  if (seq_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_len must be at least 1, got ", seq_len));
  }
  const int64_t windows = static_cast<int64_t>(text.size()) / (seq_len + 1);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("text of ", text.size(),
                                                   " bytes is shorter than one "
                                                   "window of ",
                                                   seq_len + 1, " bytes"));
  }
  at::Tensor bytes = torch::empty({windows, seq_len + 1}, torch::kUInt8);
  std::memcpy(bytes.data_ptr(), text.data(), windows * (seq_len + 1));
  bytes = bytes.to(torch::kLong);
  Dataset data;
  data.inputs = bytes.narrow(1, 0, seq_len).contiguous();
  data.targets = bytes.narrow(1, 1, seq_len).contiguous();
  data.num_classes = 256;
  return data;
}

absl::StatusOr<Dataset> LoadByteTextFile(const std::string& path,
                                         int64_t seq_len) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<Dataset> data = MakeByteTextDataset(*text, seq_len);
  if (!data.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", data.status().message()));
  }
  return data;
}

}  // namespace fedge::model
