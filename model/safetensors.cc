#include "model/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "model/file_io.h"

namespace fedge::model {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; big-endian hosts need a "
              "byte swap that is not implemented");

struct DtypeName {
  const char* name;
  at::ScalarType type;
};

constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble},    {"F32", at::kFloat}, {"F16", at::kHalf},
    {"BF16", at::kBFloat16}, {"I64", at::kLong},  {"I32", at::kInt},
    {"I16", at::kShort},     {"I8", at::kChar},   {"U8", at::kByte},
    {"BOOL", at::kBool},
};

absl::StatusOr<at::ScalarType> DtypeFromName(absl::string_view name) {
  for (const DtypeName& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\""));
}

absl::StatusOr<const char*> NameFromDtype(at::ScalarType type) {
  for (const DtypeName& d : kDtypes) {
    if (type == d.type) return d.name;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype ", c10::toString(type), " cannot be stored in safetensors"));
}

using Entry = SafetensorsEntry;

absl::Status Invalid(absl::string_view tensor, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors tensor \"", tensor, "\": ", what));
}

absl::StatusOr<Entry> ParseEntry(const std::string& name,
                                 const nlohmann::json& value,
                                 uint64_t data_size) {
  Entry entry;
  entry.name = name;
  if (name.empty()) {
    return absl::InvalidArgumentError("safetensors tensor with empty name");
  }
  if (!value.is_object()) return Invalid(name, "entry is not an object");
  const auto dtype = value.find("dtype");
  const auto shape = value.find("shape");
  const auto offsets = value.find("data_offsets");
  if (dtype == value.end() || !dtype->is_string()) {
    return Invalid(name, "missing string field \"dtype\"");
  }
  if (shape == value.end() || !shape->is_array()) {
    return Invalid(name, "missing array field \"shape\"");
  }
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2) {
    return Invalid(name, "\"data_offsets\" must be an array of two integers");
  }
  absl::StatusOr<at::ScalarType> type =
      DtypeFromName(dtype->get_ref<const std::string&>());
  if (!type.ok()) return Invalid(name, type.status().message());
  entry.dtype = *type;

  // numel * element size must not overflow; dims are bounded by the data
  // length anyway, so reject anything larger early.
  uint64_t numel = 1;
  for (const nlohmann::json& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      return Invalid(name, "shape entries must be non-negative integers");
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > data_size && d != 0) {
      return Invalid(name, absl::StrCat("dimension ", d,
                                        " exceeds the data size ", data_size));
    }
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d) {
      return Invalid(name, "shape overflows");
    }
    numel *= d;
    entry.shape.push_back(static_cast<int64_t>(d));
  }
  for (const nlohmann::json& o : *offsets) {
    if (!o.is_number_unsigned()) {
      return Invalid(name, "data_offsets must be non-negative integers");
    }
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.end < entry.begin) return Invalid(name, "data_offsets end < begin");
  if (entry.end > data_size) {
    return Invalid(name,
                   absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                                ") out of range: the data "
                                "section has ",
                                data_size, " bytes"));
  }
  const uint64_t element = c10::elementSize(entry.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / element ||
      numel * element != entry.end - entry.begin) {
    return Invalid(name, absl::StrCat("shape needs ", numel, " x ", element,
                                      " bytes but data_offsets span ",
                                      entry.end - entry.begin));
  }
  return entry;
}

// Parses and validates the JSON header against a data section of
// `data_size` bytes.
absl::StatusOr<SafetensorsLayout> ParseHeader(absl::string_view json,
                                              uint64_t data_size) {
  nlohmann::json root = nlohmann::json::parse(json.begin(), json.end(),
                                              /*cb=*/nullptr,
                                              /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("safetensors header is not valid JSON");
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        "safetensors header is not a JSON object");
  }
  SafetensorsLayout header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        return absl::InvalidArgumentError(
            "safetensors __metadata__ is not an object");
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("safetensors __metadata__ value \"", m.key(),
                           "\" is not a string"));
        }
        header.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    absl::StatusOr<Entry> entry = ParseEntry(it.key(), *it, data_size);
    if (!entry.ok()) return entry.status();
    header.entries.push_back(*std::move(entry));
  }
  std::sort(header.entries.begin(), header.entries.end(),
            [](const Entry& a, const Entry& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  for (size_t i = 1; i < header.entries.size(); ++i) {
    const Entry& previous = header.entries[i - 1];
    const Entry& current = header.entries[i];
    // Empty tensors take no bytes and may share an offset.
    if (current.begin < previous.end && current.begin != current.end) {
      return Invalid(current.name, absl::StrCat("data overlaps tensor \"",
                                                previous.name, "\""));
    }
  }
  return header;
}

// Reads the 8-byte length prefix and checks it against `file_size`.
absl::StatusOr<uint64_t> HeaderLength(const unsigned char prefix[8],
                                      uint64_t file_size) {
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | prefix[i];
  if (length > static_cast<uint64_t>(kMaxHeaderBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header of ", length,
                     " bytes exceeds the limit of ", kMaxHeaderBytes));
  }
  if (length > file_size - 8) {
    return absl::DataLossError(
        absl::StrCat("safetensors file truncated: header says ", length,
                     " bytes but only ", file_size - 8, " follow"));
  }
  return length;
}

at::Tensor EmptyTensor(const Entry& entry) {
  return torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype));
}

}  // namespace

absl::StatusOr<uint64_t> SafetensorsHeadBytes(absl::string_view head,
                                              uint64_t file_size) {
  if (file_size < 8) {
    return absl::DataLossError(
        absl::StrCat("safetensors file truncated: ", file_size,
                     " bytes, shorter than the 8-byte header length"));
  }
  if (head.size() < 8) return 8;
  absl::StatusOr<uint64_t> length = HeaderLength(
      reinterpret_cast<const unsigned char*>(head.data()), file_size);
  if (!length.ok()) return length.status();
  return 8 + *length;
}

absl::StatusOr<SafetensorsLayout> ParseSafetensorsLayout(absl::string_view head,
                                                         uint64_t file_size) {
  absl::StatusOr<uint64_t> needed = SafetensorsHeadBytes(head, file_size);
  if (!needed.ok()) return needed.status();
  if (head.size() < *needed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors header needs ", *needed, " bytes, got ", head.size()));
  }
  absl::StatusOr<SafetensorsLayout> layout =
      ParseHeader(head.substr(8, *needed - 8), file_size - *needed);
  if (!layout.ok()) return layout.status();
  layout->data_start = *needed;
  return layout;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes) {
  absl::StatusOr<SafetensorsLayout> layout =
      ParseSafetensorsLayout(bytes, bytes.size());
  if (!layout.ok()) return layout.status();
  const absl::string_view data = bytes.substr(layout->data_start);
  SafetensorsFile file;
  file.metadata = std::move(layout->metadata);
  for (const Entry& entry : layout->entries) {
    at::Tensor tensor = EmptyTensor(entry);
    if (entry.end > entry.begin) {
      std::memcpy(tensor.data_ptr(), data.data() + entry.begin,
                  entry.end - entry.begin);
    }
    file.tensors.insert(entry.name, std::move(tensor));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", path);
  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader(fd, path));
  const off_t file_size = ::lseek(fd, 0, SEEK_END);
  if (file_size < 0) return ErrnoToStatus(errno, "cannot seek", path);
  const auto size = static_cast<uint64_t>(file_size);
  auto with_path = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  // The length prefix, then the whole header.
  std::string head(std::min<uint64_t>(size, 8), '\0');
  if (absl::Status s = reader->ReadAt(head.data(), head.size(), 0); !s.ok()) {
    return s;
  }
  absl::StatusOr<uint64_t> head_bytes = SafetensorsHeadBytes(head, size);
  if (!head_bytes.ok()) return with_path(head_bytes.status());
  head.resize(*head_bytes);
  if (absl::Status s = reader->ReadAt(head.data() + 8, *head_bytes - 8, 8);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<SafetensorsLayout> layout = ParseSafetensorsLayout(head, size);
  if (!layout.ok()) return with_path(layout.status());
  reader->layout_ = *std::move(layout);
  return reader;
}

SafetensorsReader::~SafetensorsReader() { ::close(fd_); }

const SafetensorsEntry* SafetensorsReader::Find(absl::string_view name) const {
  for (const Entry& entry : layout_.entries) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::Status SafetensorsReader::ReadAt(void* out, uint64_t length,
                                       uint64_t offset) const {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd_, static_cast<char*>(out) + done,
                              length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoToStatus(errno, "cannot read", path_);
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat("safetensors file ", path_, " truncated"));
    }
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> SafetensorsReader::Read(const Entry& entry) const {
  at::Tensor tensor = EmptyTensor(entry);
  if (absl::Status s = ReadAt(tensor.data_ptr(), entry.end - entry.begin,
                              layout_.data_start + entry.begin);
      !s.ok()) {
    return s;
  }
  return tensor;
}

absl::StatusOr<at::Tensor> SafetensorsReader::ReadSlice(
    const Entry& entry, int64_t dim, absl::Span<const int64_t> index) const {
  const int64_t rank = static_cast<int64_t>(entry.shape.size());
  if (dim < 0 || dim >= rank) {
    return Invalid(entry.name, absl::StrCat("cannot slice dimension ", dim,
                                            " of a rank-", rank, " tensor"));
  }
  const int64_t extent = entry.shape[dim];
  for (int64_t i : index) {
    if (i < 0 || i >= extent) {
      return Invalid(entry.name, absl::StrCat("slice index ", i,
                                              " outside [0, ", extent, ")"));
    }
  }
  int64_t outer = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= entry.shape[d];
  // Bytes of one step along `dim`.
  uint64_t inner = c10::elementSize(entry.dtype);
  for (int64_t d = dim + 1; d < rank; ++d) inner *= entry.shape[d];
  std::vector<int64_t> shape = entry.shape;
  shape[dim] = static_cast<int64_t>(index.size());
  at::Tensor out =
      torch::empty(shape, torch::TensorOptions().dtype(entry.dtype));
  char* dst = static_cast<char*>(out.data_ptr());
  const uint64_t base = layout_.data_start + entry.begin;
  // Runs of consecutive indices are read (or copied) in one piece.
  auto for_each_run = [&](const auto& copy) -> absl::Status {
    for (size_t i = 0; i < index.size();) {
      size_t j = i + 1;
      while (j < index.size() && index[j] == index[j - 1] + 1) ++j;
      if (absl::Status s = copy(index[i], i, j - i); !s.ok()) return s;
      i = j;
    }
    return absl::OkStatus();
  };
  if (outer == 1) {  // Slicing the leading dimension: read the runs.
    if (absl::Status s = for_each_run([&](int64_t from, size_t to,
                                          size_t count) {
          return ReadAt(dst + to * inner, count * inner, base + from * inner);
        });
        !s.ok()) {
      return s;
    }
    return out;
  }
  // Otherwise one outer row at a time, gathered from a row buffer.
  const uint64_t row_bytes = extent * inner;
  std::string row(row_bytes, '\0');
  for (int64_t o = 0; o < outer; ++o) {
    if (absl::Status s = ReadAt(row.data(), row_bytes, base + o * row_bytes);
        !s.ok()) {
      return s;
    }
    char* out_row = dst + o * index.size() * inner;
    (void)for_each_run([&](int64_t from, size_t to, size_t count) {
      std::memcpy(out_row + to * inner, row.data() + from * inner,
                  count * inner);
      return absl::OkStatus();
    });
  }
  return out;
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader =
      SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  SafetensorsFile file;
  file.metadata = (*reader)->layout().metadata;
  for (const Entry& entry : (*reader)->layout().entries) {
    absl::StatusOr<at::Tensor> tensor = (*reader)->Read(entry);
    if (!tensor.ok()) return tensor.status();
    file.tensors.insert(entry.name, *std::move(tensor));
  }
  return file;
}

absl::StatusOr<std::string> SafetensorsHeader(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& item : tensors) {
    const std::string& name = item.key();
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid tensor name \"", name, "\""));
    }
    if (header.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate tensor name \"", name, "\""));
    }
    const at::Tensor& value = item.value();
    if (!value.defined() || !value.device().is_cpu()) {
      return Invalid(name, "tensor is undefined or not on the CPU");
    }
    absl::StatusOr<const char*> dtype = NameFromDtype(value.scalar_type());
    if (!dtype.ok()) return Invalid(name, dtype.status().message());
    const uint64_t size = static_cast<uint64_t>(value.nbytes());
    header[name] = {{"dtype", *dtype},
                    {"shape", value.sizes().vec()},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string json = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, which lets
  // readers map tensors in place.
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>(length & 0xff));
    length >>= 8;
  }
  return out + json;
}

namespace {

// Each tensor's bytes, in `tensors`' order. `held` keeps the contiguous
// copies of non-contiguous tensors alive (a contiguous one is not copied).
std::vector<absl::string_view> DataViews(const NamedTensors& tensors,
                                         std::vector<at::Tensor>& held) {
  std::vector<absl::string_view> views;
  views.reserve(tensors.size());
  held.reserve(tensors.size());
  for (const auto& item : tensors) {
    const at::Tensor& c = held.emplace_back(item.value().detach().contiguous());
    views.emplace_back(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  return views;
}

}  // namespace

absl::StatusOr<std::string> SerializeSafetensors(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> out = SafetensorsHeader(tensors, metadata);
  if (!out.ok()) return out.status();
  std::vector<at::Tensor> held;
  const std::vector<absl::string_view> data = DataViews(tensors, held);
  size_t size = out->size();
  for (absl::string_view d : data) size += d.size();
  out->reserve(size);  // One allocation, not a doubling per append.
  for (absl::string_view d : data) out->append(d.data(), d.size());
  return out;
}

absl::Status WriteSafetensors(
    const std::string& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> header = SafetensorsHeader(tensors, metadata);
  if (!header.ok()) return header.status();
  // Written from the tensors' own memory: a checkpoint needs no second copy
  // of the model (the coordinator writes one every round).
  std::vector<at::Tensor> held;
  std::vector<absl::string_view> pieces = DataViews(tensors, held);
  pieces.insert(pieces.begin(), *header);
  return WriteFileAtomically(path, pieces);
}

}  // namespace fedge::model
