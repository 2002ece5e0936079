#include "transport/transfer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include <torch/types.h>

namespace fedge::transport {

namespace {

bool InRange(int64_t offset, int64_t size, int64_t total) {
  return offset >= 0 && size >= 0 && offset <= total - size;
}

// Read for a source whose every range has a View: copies its pieces.
absl::Status ReadThroughView(const PayloadSource& source, int64_t offset,
                             absl::Span<char> out) {
  std::vector<absl::string_view> pieces;
  if (!source.View(offset, static_cast<int64_t>(out.size()), &pieces)) {
    return absl::OutOfRangeError(absl::StrCat(
        "read [", offset, ", +", out.size(), ") of ", source.size()));
  }
  char* dst = out.data();
  for (absl::string_view piece : pieces) {
    std::memcpy(dst, piece.data(), piece.size());
    dst += piece.size();
  }
  return absl::OkStatus();
}

}  // namespace

bool PayloadSource::View(int64_t, int64_t,
                         std::vector<absl::string_view>*) const {
  return false;
}

absl::Status StringSource::Read(int64_t offset, absl::Span<char> out) const {
  return ReadThroughView(*this, offset, out);
}

bool StringSource::View(int64_t offset, int64_t size,
                        std::vector<absl::string_view>* out) const {
  if (!InRange(offset, size, this->size())) return false;
  if (size > 0) out->push_back(absl::string_view(bytes_).substr(offset, size));
  return true;
}

absl::StatusOr<std::unique_ptr<SafetensorsSource>> SafetensorsSource::Create(
    const model::NamedTensors& tensors) {
  auto source = std::unique_ptr<SafetensorsSource>(new SafetensorsSource());
  absl::StatusOr<std::string> header = model::SafetensorsHeader(tensors);
  if (!header.ok()) return header.status();
  source->header_ = *std::move(header);
  int64_t offset = static_cast<int64_t>(source->header_.size());
  for (const auto& item : tensors) {
    source->tensors_.push_back(item.value().detach().contiguous());
    source->starts_.push_back(offset);
    offset += static_cast<int64_t>(source->tensors_.back().nbytes());
  }
  source->size_ = offset;
  return source;
}

absl::Status SafetensorsSource::Read(int64_t offset,
                                     absl::Span<char> out) const {
  return ReadThroughView(*this, offset, out);
}

bool SafetensorsSource::View(int64_t offset, int64_t size,
                             std::vector<absl::string_view>* out) const {
  if (!InRange(offset, size, size_)) return false;
  const int64_t end = offset + size;
  int64_t pos = offset;
  // Header part.
  const auto header_size = static_cast<int64_t>(header_.size());
  if (pos < header_size && pos < end) {
    const int64_t n = std::min(end, header_size) - pos;
    out->push_back(absl::string_view(header_).substr(pos, n));
    pos += n;
  }
  // Tensor parts: find the first tensor that ends after `pos`.
  size_t i =
      std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin();
  i = i == 0 ? 0 : i - 1;
  for (; pos < end && i < tensors_.size(); ++i) {
    const int64_t start = starts_[i];
    const auto length = static_cast<int64_t>(tensors_[i].nbytes());
    if (pos >= start + length) continue;
    const int64_t n = std::min(end, start + length) - pos;
    out->push_back(absl::string_view(
        static_cast<const char*>(tensors_[i].data_ptr()) + (pos - start), n));
    pos += n;
  }
  return true;
}

absl::StatusOr<TransferInfo> DescribePayload(const PayloadSource& source,
                                             std::string transfer_id,
                                             int64_t raw_bytes,
                                             PayloadFormat format,
                                             int64_t chunk_bytes) {
  if (chunk_bytes < 1) return absl::InvalidArgumentError("chunk_bytes < 1");
  Sha256 hasher;
  std::string buffer(
      std::min<int64_t>(chunk_bytes, std::max<int64_t>(source.size(), 1)),
      '\0');
  for (int64_t offset = 0; offset < source.size();) {
    const int64_t n = std::min<int64_t>(buffer.size(), source.size() - offset);
    if (absl::Status s = source.Read(offset, absl::MakeSpan(buffer.data(), n));
        !s.ok()) {
      return s;
    }
    hasher.Update(absl::string_view(buffer.data(), n));
    offset += n;
  }
  TransferInfo info;
  info.transfer_id = std::move(transfer_id);
  info.total_bytes = source.size();
  info.sha256 = hasher.Finish();
  info.raw_bytes = raw_bytes;
  info.format = format;
  return info;
}

absl::Status StringSink::Write(int64_t offset, absl::string_view data) {
  if (offset != static_cast<int64_t>(bytes_->size())) {
    return absl::InternalError("string sink: bytes out of order");
  }
  bytes_->append(data.data(), data.size());
  return absl::OkStatus();
}

namespace {

class SharedStringBytes final : public PayloadBytes {
 public:
  explicit SharedStringBytes(std::shared_ptr<const std::string> bytes)
      : bytes_(std::move(bytes)) {}
  absl::string_view view() const override { return *bytes_; }

 private:
  std::shared_ptr<const std::string> bytes_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const PayloadBytes>> StringSink::Read() {
  return std::make_shared<SharedStringBytes>(bytes_);
}

absl::Status TensorSink::Write(int64_t offset, absl::string_view data) {
  if (offset != received_) {
    return absl::InternalError("tensor sink: bytes out of order");
  }
  received_ += static_cast<int64_t>(data.size());
  if (!parsed_) {
    // Buffer until the header is complete, then parse and allocate.
    absl::StatusOr<uint64_t> needed =
        model::SafetensorsHeadBytes(head_, static_cast<uint64_t>(total_bytes_));
    while (needed.ok() && head_.size() < *needed && !data.empty()) {
      const size_t n = std::min<size_t>(*needed - head_.size(), data.size());
      head_.append(data.data(), n);
      data.remove_prefix(n);
      offset += static_cast<int64_t>(n);
      needed = model::SafetensorsHeadBytes(head_,
                                           static_cast<uint64_t>(total_bytes_));
    }
    if (!needed.ok()) return needed.status();
    if (head_.size() < *needed) return absl::OkStatus();
    absl::StatusOr<model::SafetensorsLayout> layout =
        model::ParseSafetensorsLayout(head_,
                                      static_cast<uint64_t>(total_bytes_));
    if (!layout.ok()) return layout.status();
    layout_ = *std::move(layout);
    for (const model::SafetensorsEntry& e : layout_.entries) {
      tensors_.insert(
          e.name, torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype)));
    }
    parsed_ = true;
    head_.clear();
    head_.shrink_to_fit();
  }
  // Copy the data section's bytes into every tensor they overlap.
  const int64_t data_offset = offset - static_cast<int64_t>(layout_.data_start);
  const int64_t data_end = data_offset + static_cast<int64_t>(data.size());
  for (size_t i = 0; i < layout_.entries.size() && !data.empty(); ++i) {
    const model::SafetensorsEntry& e = layout_.entries[i];
    const auto begin = static_cast<int64_t>(e.begin);
    const auto end = static_cast<int64_t>(e.end);
    const int64_t lo = std::max(begin, data_offset);
    const int64_t hi = std::min(end, data_end);
    if (lo >= hi) continue;
    std::memcpy(static_cast<char*>(tensors_[e.name].data_ptr()) + (lo - begin),
                data.data() + (lo - data_offset), hi - lo);
  }
  return absl::OkStatus();
}

absl::StatusOr<model::NamedTensors> TensorSink::Take() {
  if (!parsed_ || received_ != total_bytes_) {
    return absl::FailedPreconditionError("tensor payload incomplete");
  }
  return std::move(tensors_);
}

absl::StatusOr<std::unique_ptr<ChunkAssembler>> ChunkAssembler::Create(
    const TransferInfo& info, std::unique_ptr<ChunkSink> sink,
    const AssemblerLimits& limits) {
  if (info.transfer_id.empty()) {
    return absl::InvalidArgumentError("transfer without an id");
  }
  if (info.sha256.size() != kSha256Bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "transfer ", info.transfer_id, ": digest must be 32 bytes of SHA-256"));
  }
  if (info.total_bytes < 0) {
    return absl::InvalidArgumentError("negative transfer size");
  }
  if (info.total_bytes > limits.max_total_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "transfer ", info.transfer_id, " declares ", info.total_bytes,
        " bytes, the limit is ", limits.max_total_bytes));
  }
  sink->Begin(info);
  return std::unique_ptr<ChunkAssembler>(
      new ChunkAssembler(info, std::move(sink), limits));
}

absl::Status ChunkAssembler::Append(int64_t offset, absl::string_view data) {
  if (finished_)
    return absl::FailedPreconditionError("transfer already finished");
  if (offset != committed_) {
    return absl::InvalidArgumentError(
        absl::StrCat("transfer ", info_.transfer_id, ": chunk at ", offset,
                     " but ", committed_, " bytes are committed"));
  }
  if (static_cast<int64_t>(data.size()) > limits_.max_chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk of ", data.size(), " bytes exceeds ", limits_.max_chunk_bytes));
  }
  if (committed_ + static_cast<int64_t>(data.size()) > info_.total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "transfer ", info_.transfer_id, ": chunk runs past the declared ",
        info_.total_bytes, " bytes"));
  }
  if (absl::Status s = sink_->Write(offset, data); !s.ok()) return s;
  hasher_.Update(data);
  committed_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::Status ChunkAssembler::Finish() {
  if (committed_ != info_.total_bytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("transfer ", info_.transfer_id, " has ", committed_,
                     " of ", info_.total_bytes, " bytes"));
  }
  if (!finished_) {
    finished_ = true;
    digest_matches_ = hasher_.Finish() == info_.sha256;
  }
  if (!digest_matches_) {
    return absl::DataLossError(absl::StrCat("transfer ", info_.transfer_id,
                                            ": SHA-256 digest mismatch"));
  }
  return absl::OkStatus();
}

}  // namespace fedge::transport
