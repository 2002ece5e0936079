// Chunked transfers: a payload of any size crosses as a sequence of chunks
// with bounded memory on both ends, is checked against its SHA-256 digest
// on arrival, and an interrupted transfer resumes from the last byte the
// receiver committed.
//
// Sender side: a PayloadSource serves byte ranges. SafetensorsSource
// serves a set of named tensors as a safetensors file without ever
// materialising it (header bytes, then each tensor's bytes read in place).
// Receiver side: a ChunkAssembler accepts consecutive chunks, hashes them,
// and hands the bytes to a sink: StringSink for small payloads (updates),
// FileSink (file_sink.h) to stage large ones on disk, TensorSink to
// rebuild named tensors directly in their own storage.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "model/model.h"
#include "model/safetensors.h"
#include "transport/sha256.h"

namespace fedge::transport {

inline constexpr int64_t kDefaultChunkBytes = 1 << 20;

// What a payload's bytes are (fedge.v1.PayloadFormat).
enum class PayloadFormat {
  kUnspecified,
  kSafetensors,    // A safetensors file: base models and adapters.
  kEncodedUpdate,  // A serialized fedge.v1.CompressedPayload: updates.
  kMaskedWords,    // Secure aggregation's masked vector (uint32 words).
};

// Describes a whole payload; travels in the first chunk of a stream.
struct TransferInfo {
  std::string transfer_id;
  int64_t total_bytes = 0;
  std::string sha256;     // 32 raw bytes.
  int64_t raw_bytes = 0;  // Size before codec/compression, for metrics.
  PayloadFormat format = PayloadFormat::kUnspecified;
};

// Random access to a payload's bytes. Thread-compatible; Read is const and
// may be called from several streams at once.
class PayloadSource {
 public:
  virtual ~PayloadSource() = default;
  virtual int64_t size() const = 0;
  // Copies [offset, offset + out.size()) into `out`. OutOfRange if the range
  // leaves the payload.
  virtual absl::Status Read(int64_t offset, absl::Span<char> out) const = 0;
  // Where [offset, offset + size) already lies in memory that stays valid
  // and unchanged for as long as the source lives: appends the pieces that
  // make up the range, in order, to `out` and returns true, so that a
  // sender can hand them to the wire without copying (a download's chunks,
  // transfer_service.cc). False, with `out` unchanged, for a source whose
  // bytes must be copied out with Read (a file) or a range that leaves the
  // payload. The default is false.
  virtual bool View(int64_t offset, int64_t size,
                    std::vector<absl::string_view>* out) const;
};

// A payload held in memory.
class StringSource final : public PayloadSource {
 public:
  explicit StringSource(std::string bytes) : bytes_(std::move(bytes)) {}
  int64_t size() const override { return static_cast<int64_t>(bytes_.size()); }
  absl::Status Read(int64_t offset, absl::Span<char> out) const override;
  bool View(int64_t offset, int64_t size,
            std::vector<absl::string_view>* out) const override;

 private:
  std::string bytes_;
};

// Named tensors served as a safetensors file, read in place (the tensors
// are shared, not copied; non-contiguous ones are made contiguous once).
class SafetensorsSource final : public PayloadSource {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsSource>> Create(
      const model::NamedTensors& tensors);
  int64_t size() const override { return size_; }
  absl::Status Read(int64_t offset, absl::Span<char> out) const override;
  // The header's and the tensors' own bytes.
  bool View(int64_t offset, int64_t size,
            std::vector<absl::string_view>* out) const override;

 private:
  SafetensorsSource() = default;
  std::string header_;
  std::vector<at::Tensor> tensors_;
  std::vector<int64_t> starts_;  // Offset of each tensor's bytes.
  int64_t size_ = 0;
};

// Hashes the whole source once (one read pass, `chunk_bytes` at a time).
absl::StatusOr<TransferInfo> DescribePayload(
    const PayloadSource& source, std::string transfer_id, int64_t raw_bytes,
    PayloadFormat format, int64_t chunk_bytes = kDefaultChunkBytes);

// Where an assembler puts the bytes. Begin is called once, when the
// assembler is created; bytes then arrive in order, exactly once.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual void Begin(const TransferInfo& /*info*/) {}
  virtual absl::Status Write(int64_t offset, absl::string_view data) = 0;
};

// A complete payload's bytes, read-only, valid while this object lives.
class PayloadBytes {
 public:
  virtual ~PayloadBytes() = default;
  virtual absl::string_view view() const = 0;
  // The reader will not read `part` (a range of view()) again, so memory
  // that holds only it may be given back; reading it again stays correct.
  // A mapped file gives back at least the pages wholly inside `part` (the
  // kernel may give back a large folio whole); they are read from the file
  // again if touched. Bytes in memory are kept.
  virtual void DoneWith(absl::string_view /*part*/) const {}
};

// A sink that keeps the whole payload, to be read once every byte arrived.
class StoringSink : public ChunkSink {
 public:
  // The bytes written, for as long as the caller holds them (they outlive
  // the sink). May be called more than once.
  virtual absl::StatusOr<std::shared_ptr<const PayloadBytes>> Read() = 0;
};

// Accumulates the payload in memory.
class StringSink final : public StoringSink {
 public:
  StringSink() : bytes_(std::make_shared<std::string>()) {}
  // Reserves the declared size (the store checked it against its limits
  // first), so a large payload is not copied as the string grows.
  void Begin(const TransferInfo& info) override {
    bytes_->reserve(static_cast<size_t>(info.total_bytes));
  }
  absl::Status Write(int64_t offset, absl::string_view data) override;
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> Read() override;
  std::string& bytes() { return *bytes_; }

 private:
  std::shared_ptr<std::string> bytes_;
};

// Rebuilds the named tensors of a safetensors payload as it streams in:
// buffers only the header, then copies each chunk into the tensors'
// storage. The header is validated as soon as it is complete.
class TensorSink final : public ChunkSink {
 public:
  void Begin(const TransferInfo& info) override {
    total_bytes_ = info.total_bytes;
  }
  absl::Status Write(int64_t offset, absl::string_view data) override;
  // The tensors, once every byte has arrived.
  absl::StatusOr<model::NamedTensors> Take();

 private:
  int64_t total_bytes_ = 0;
  std::string head_;
  bool parsed_ = false;
  model::SafetensorsLayout layout_;
  model::NamedTensors tensors_;
  int64_t received_ = 0;
};

struct AssemblerLimits {
  int64_t max_total_bytes = 4LL << 30;
  int64_t max_chunk_bytes = 4 << 20;
};

// Receives one transfer. Not thread-safe (one stream at a time per
// transfer; the owner serialises resumed streams).
class ChunkAssembler {
 public:
  // InvalidArgument for a malformed info; ResourceExhausted if the declared
  // size is above the limit. `sink` receives the bytes.
  static absl::StatusOr<std::unique_ptr<ChunkAssembler>> Create(
      const TransferInfo& info, std::unique_ptr<ChunkSink> sink,
      const AssemblerLimits& limits = {});

  // Accepts the chunk at `offset`, which must equal committed().
  // InvalidArgument if it does not, if it runs past the declared size or
  // is larger than the chunk limit; errors from the sink are returned as is.
  absl::Status Append(int64_t offset, absl::string_view data);

  // Checks completeness and the digest. FailedPrecondition if bytes are
  // missing; DataLoss on a digest mismatch. The sink then holds the payload.
  absl::Status Finish();

  int64_t committed() const { return committed_; }
  const TransferInfo& info() const { return info_; }
  ChunkSink* sink() { return sink_.get(); }

 private:
  ChunkAssembler(TransferInfo info, std::unique_ptr<ChunkSink> sink,
                 AssemblerLimits limits)
      : info_(std::move(info)), sink_(std::move(sink)), limits_(limits) {}
  TransferInfo info_;
  std::unique_ptr<ChunkSink> sink_;
  AssemblerLimits limits_;
  Sha256 hasher_;
  int64_t committed_ = 0;
  bool finished_ = false;
  bool digest_matches_ = false;
};

}  // namespace fedge::transport
