#include "transport/transfer_service.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include <grpc/slice.h>

#include "transport/file_sink.h"
#include "transport/status_convert.h"

namespace fedge::transport {
namespace {

bool SameTransfer(const TransferInfo& a, const TransferInfo& b) {
  return a.transfer_id == b.transfer_id && a.total_bytes == b.total_bytes &&
         a.sha256 == b.sha256 && a.format == b.format;
}

v1::PayloadFormat FormatToProto(PayloadFormat format) {
  switch (format) {
    case PayloadFormat::kSafetensors:
      return v1::PAYLOAD_FORMAT_SAFETENSORS;
    case PayloadFormat::kEncodedUpdate:
      return v1::PAYLOAD_FORMAT_ENCODED_UPDATE;
    case PayloadFormat::kMaskedWords:
      return v1::PAYLOAD_FORMAT_MASKED_WORDS;
    case PayloadFormat::kUnspecified:
      break;
  }
  return v1::PAYLOAD_FORMAT_UNSPECIFIED;
}

PayloadFormat FormatFromProto(v1::PayloadFormat format) {
  switch (format) {
    case v1::PAYLOAD_FORMAT_SAFETENSORS:
      return PayloadFormat::kSafetensors;
    case v1::PAYLOAD_FORMAT_ENCODED_UPDATE:
      return PayloadFormat::kEncodedUpdate;
    case v1::PAYLOAD_FORMAT_MASKED_WORDS:
      return PayloadFormat::kMaskedWords;
    default:
      return PayloadFormat::kUnspecified;
  }
}

bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsAborted(s) || absl::IsCancelled(s);
}

// Lets an assembler write into a sink the caller keeps.
class BorrowedSink final : public ChunkSink {
 public:
  explicit BorrowedSink(ChunkSink* target) : target_(target) {}
  void Begin(const TransferInfo& info) override { target_->Begin(info); }
  absl::Status Write(int64_t offset, absl::string_view data) override {
    return target_->Write(offset, data);
  }

 private:
  ChunkSink* const target_;
};

class DownloadReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  DownloadReactor(TransferStore::Offered offered, int64_t offset,
                  int64_t chunk_bytes, grpc::CallbackServerContext* context,
                  StreamWatchdog* watchdog)
      : offered_(std::move(offered)),
        offset_(offset),
        chunk_bytes_(chunk_bytes),
        watchdog_(watchdog),
        watch_(watchdog->Watch(context)) {
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(
          grpc::Status(grpc::StatusCode::CANCELLED, "download stream broken"));
      return;
    }
    watchdog_->Touch(watch_);
    offset_ += last_size_;
    WriteNext();
  }
  void OnDone() override {
    watchdog_->Forget(watch_);
    delete this;
  }

 private:
  void WriteNext() {
    const int64_t size = offered_.info.total_bytes;
    if (!first_ && offset_ >= size) {
      Finish(grpc::Status::OK);
      return;
    }
    last_size_ = std::min(chunk_bytes_, size - offset_);
    absl::StatusOr<grpc::ByteBuffer> message =
        EncodeChunk(first_ ? &offered_.info : nullptr, offset_, last_size_,
                    offered_.source);
    first_ = false;
    if (!message.ok()) {
      Finish(ToGrpcStatus(message.status()));
      return;
    }
    // The last chunk's slices go as this one replaces them (gRPC holds
    // its own references while it still needs them).
    message_ = *std::move(message);
    StartWrite(&message_);
  }

  const TransferStore::Offered offered_;
  int64_t offset_;
  const int64_t chunk_bytes_;
  StreamWatchdog* const watchdog_;
  const int64_t watch_;
  int64_t last_size_ = 0;
  bool first_ = true;
  grpc::ByteBuffer message_;
};

// A view slice's hold on its source (EncodeChunk).
void ReleaseSource(void* source) {
  delete static_cast<std::shared_ptr<const PayloadSource>*>(source);
}

class UploadReactor final : public grpc::ServerReadReactor<v1::Chunk> {
 public:
  UploadReactor(const TransferService* service, TransferStore* store,
                grpc::CallbackServerContext* context,
                v1::UploadResponse* response, StreamWatchdog* watchdog)
      : service_(service),
        store_(store),
        context_(context),
        response_(response),
        watchdog_(watchdog),
        watch_(watchdog->Watch(context)) {
    StartRead(&chunk_);
  }
  void OnReadDone(bool ok) override {
    watchdog_->Touch(watch_);
    if (!ok) {  // The client closed its side: report what we have.
      if (transfer_id_.empty()) {
        Finish(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty upload"));
        return;
      }
      absl::StatusOr<int64_t> committed = store_->UploadCommitted(transfer_id_);
      if (committed.ok()) response_->set_committed_bytes(*committed);
      Finish(ToGrpcStatus(committed.status()));
      return;
    }
    absl::Status status;
    if (transfer_id_.empty()) {
      if (!chunk_.has_header()) {
        Finish(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                         "the first chunk of an upload must carry its header"));
        return;
      }
      const std::string owner =
          store_->UploadOwner(chunk_.header().transfer_id());
      if (!owner.empty()) status = service_->AuthorizeUpload(context_, owner);
      if (status.ok()) status = store_->BeginUpload(FromProto(chunk_.header()));
      if (!status.ok()) {
        Finish(ToGrpcStatus(status));
        return;
      }
      transfer_id_ = chunk_.header().transfer_id();
    }
    if (status.ok()) {
      status =
          store_->AppendUpload(transfer_id_, chunk_.offset(), chunk_.data());
    }
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    StartRead(&chunk_);
  }
  void OnDone() override {
    watchdog_->Forget(watch_);
    delete this;
  }

 private:
  const TransferService* const service_;
  TransferStore* const store_;
  grpc::CallbackServerContext* const context_;
  v1::UploadResponse* const response_;
  StreamWatchdog* const watchdog_;
  const int64_t watch_;
  std::string transfer_id_;
  v1::Chunk chunk_;
};

}  // namespace

void ToProto(const TransferInfo& info, v1::TransferHeader* header) {
  header->set_transfer_id(info.transfer_id);
  header->set_total_bytes(info.total_bytes);
  header->set_sha256(info.sha256);
  header->set_raw_bytes(info.raw_bytes);
  header->set_format(FormatToProto(info.format));
}

TransferInfo FromProto(const v1::TransferHeader& header) {
  TransferInfo info;
  info.transfer_id = header.transfer_id();
  info.total_bytes = header.total_bytes();
  info.sha256 = header.sha256();
  info.raw_bytes = header.raw_bytes();
  info.format = FormatFromProto(header.format());
  return info;
}

absl::StatusOr<grpc::ByteBuffer> EncodeChunk(
    const TransferInfo* header, int64_t offset, int64_t size,
    const std::shared_ptr<const PayloadSource>& source) {
  if (offset < 0 || size < 0 || offset > source->size() - size ||
      size > std::numeric_limits<int32_t>::max()) {
    return absl::OutOfRangeError(absl::StrCat(
        "chunk [", offset, ", +", size, ") of ", source->size(), " bytes"));
  }
  // The fields before the data, serialized by protobuf (field order: the
  // header, the offset, then the data, as SerializeToString writes them).
  v1::Chunk fields;
  if (header != nullptr) ToProto(*header, fields.mutable_header());
  fields.set_offset(offset);
  std::string prefix = fields.SerializeAsString();
  if (size > 0) {  // proto3 leaves empty bytes out.
    using google::protobuf::internal::WireFormatLite;
    google::protobuf::io::StringOutputStream stream(&prefix);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteTag(
        WireFormatLite::MakeTag(v1::Chunk::kDataFieldNumber,
                                WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    coded.WriteVarint32(static_cast<uint32_t>(size));
  }
  std::vector<grpc::Slice> slices;
  slices.emplace_back(prefix);
  std::vector<absl::string_view> pieces;
  if (size > 0 && source->View(offset, size, &pieces)) {
    for (absl::string_view piece : pieces) {
      // gRPC only reads the bytes; its constructor takes them non-const.
      slices.emplace_back(const_cast<char*>(piece.data()), piece.size(),
                          &ReleaseSource,
                          new std::shared_ptr<const PayloadSource>(source));
    }
  } else if (size > 0) {
    grpc::Slice copy(grpc_slice_malloc(static_cast<size_t>(size)),
                     grpc::Slice::STEAL_REF);
    // A fresh slice, referenced only here until the buffer is built.
    char* data = reinterpret_cast<char*>(const_cast<uint8_t*>(copy.begin()));
    if (absl::Status s = source->Read(
            offset, absl::MakeSpan(data, static_cast<size_t>(size)));
        !s.ok()) {
      return s;
    }
    slices.push_back(std::move(copy));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

void TransferStore::Offer(const TransferInfo& info,
                          std::shared_ptr<const PayloadSource> source) {
  absl::MutexLock lock(&mu_);
  offered_[info.transfer_id] = Offered{info, std::move(source)};
}

int64_t TransferStore::Withdraw(absl::string_view prefix) {
  absl::MutexLock lock(&mu_);
  auto drop = [&](auto& map) {
    int64_t removed = 0;
    for (auto it = map.lower_bound(std::string(prefix));
         it != map.end() && absl::StartsWith(it->first, prefix);) {
      it = map.erase(it);
      ++removed;
    }
    return removed;
  };
  drop(expected_);
  return drop(offered_) + drop(uploads_);
}

absl::StatusOr<TransferStore::Offered> TransferStore::Find(
    const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = offered_.find(transfer_id);
  if (it == offered_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no payload \"", transfer_id, "\""));
  }
  return it->second;
}

std::shared_ptr<TransferStore::UploadEntry> TransferStore::FindUpload(
    const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = uploads_.find(transfer_id);
  return it == uploads_.end() ? nullptr : it->second;
}

void TransferStore::ExpectUpload(const std::string& transfer_id,
                                 int64_t max_bytes, std::string owner) {
  absl::MutexLock lock(&mu_);
  expected_.emplace(transfer_id, Expected{max_bytes, std::move(owner)});
}

std::string TransferStore::UploadOwner(const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = expected_.find(transfer_id);
  return it == expected_.end() ? std::string() : it->second.owner;
}

absl::Status TransferStore::BeginUpload(const TransferInfo& info) {
  if (info.format == PayloadFormat::kSafetensors) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upload ", info.transfer_id,
        ": its header says PAYLOAD_FORMAT_SAFETENSORS, but an update travels "
        "as PAYLOAD_FORMAT_ENCODED_UPDATE (a serialized CompressedPayload)"));
  }
  if (info.total_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("upload ", info.transfer_id, " declares 0 bytes"));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = expected_.find(info.transfer_id);
    if (it == expected_.end() && expected_only_) {
      return absl::NotFoundError(absl::StrCat(
          "no upload is expected under \"", info.transfer_id,
          "\" (not a current task's upload id, or its round closed)"));
    }
    if (it != expected_.end() && info.total_bytes > it->second.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "upload ", info.transfer_id, " declares ", info.total_bytes,
          " bytes; this task's update is at most ", it->second.max_bytes));
    }
  }
  if (std::shared_ptr<UploadEntry> entry = FindUpload(info.transfer_id)) {
    absl::MutexLock lock(&entry->mu);
    if (SameTransfer(entry->assembler->info(), info)) return absl::OkStatus();
  }
  // New, or a different payload under the same id: the device re-encoded
  // its update (after a refusal, or a restart mid-upload), which replaces
  // what was stored.
  std::unique_ptr<StoringSink> sink;
  if (!staging_.dir.empty() && info.total_bytes >= staging_.min_bytes) {
    absl::StatusOr<std::unique_ptr<FileSink>> file =
        FileSink::Create(staging_.dir);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("upload ", info.transfer_id, ": ",
                                       file.status().message()));
    }
    sink = *std::move(file);
  } else {
    sink = std::make_unique<StringSink>();
  }
  absl::StatusOr<std::unique_ptr<ChunkAssembler>> assembler =
      ChunkAssembler::Create(info, std::move(sink), limits_);
  if (!assembler.ok()) return assembler.status();
  auto entry = std::make_shared<UploadEntry>();
  {
    absl::MutexLock entry_lock(&entry->mu);
    entry->assembler = *std::move(assembler);
  }
  absl::MutexLock lock(&mu_);
  uploads_[info.transfer_id] = std::move(entry);
  return absl::OkStatus();
}

absl::Status TransferStore::AppendUpload(const std::string& transfer_id,
                                         int64_t offset,
                                         absl::string_view data) {
  std::shared_ptr<UploadEntry> entry = FindUpload(transfer_id);
  if (!entry)
    return absl::NotFoundError(absl::StrCat("no upload ", transfer_id));
  absl::MutexLock lock(&entry->mu);
  if (entry->complete) {
    // Complete already: a resumed stream that had nothing left to send.
    if (data.empty() && offset == entry->assembler->committed()) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrCat("upload ", transfer_id, " is complete (",
                     entry->assembler->committed(), " bytes)"));
  }
  if (absl::Status s = entry->assembler->Append(offset, data); !s.ok()) {
    return s;
  }
  if (entry->assembler->committed() < entry->assembler->info().total_bytes) {
    return absl::OkStatus();
  }
  // The last byte: check the digest now, so the uploader learns of a
  // corrupted payload from Upload itself, not from a later SubmitUpdate.
  absl::Status finished = entry->assembler->Finish();
  if (!finished.ok()) {
    EraseUpload(transfer_id, entry.get());
    return absl::Status(
        finished.code(),
        absl::StrCat("upload ", transfer_id, ": ", finished.message(),
                     "; the upload was dropped: send it "
                     "again from offset 0"));
  }
  entry->complete = true;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> TransferStore::UploadCommitted(
    const std::string& transfer_id) const {
  absl::StatusOr<std::pair<int64_t, TransferInfo>> progress =
      UploadProgress(transfer_id);
  if (!progress.ok()) return progress.status();
  return progress->first;
}

absl::StatusOr<std::pair<int64_t, TransferInfo>> TransferStore::UploadProgress(
    const std::string& transfer_id) const {
  std::shared_ptr<UploadEntry> entry = FindUpload(transfer_id);
  if (!entry)
    return absl::NotFoundError(absl::StrCat("no upload ", transfer_id));
  absl::MutexLock lock(&entry->mu);
  return std::make_pair(entry->assembler->committed(),
                        entry->assembler->info());
}

absl::StatusOr<std::shared_ptr<const PayloadBytes>>
TransferStore::CompletedUpload(const std::string& transfer_id) {
  std::shared_ptr<UploadEntry> entry = FindUpload(transfer_id);
  if (!entry)
    return absl::NotFoundError(absl::StrCat("no upload ", transfer_id));
  absl::MutexLock lock(&entry->mu);
  if (entry->complete) {
    return static_cast<StoringSink*>(entry->assembler->sink())->Read();
  }
  // AppendUpload verifies the last byte and BeginUpload refuses empty
  // payloads, so an upload without bytes is incomplete.
  return absl::FailedPreconditionError(absl::StrCat(
      "upload ", transfer_id, " is incomplete: ", entry->assembler->committed(),
      " of ", entry->assembler->info().total_bytes,
      " bytes; finish it (UploadStatus says where to resume)"));
}

void TransferStore::DropUpload(const std::string& transfer_id) {
  absl::MutexLock lock(&mu_);
  uploads_.erase(transfer_id);
}

void TransferStore::EraseUpload(const std::string& transfer_id,
                                const UploadEntry* entry) {
  absl::MutexLock lock(&mu_);
  auto it = uploads_.find(transfer_id);
  if (it != uploads_.end() && it->second.get() == entry) uploads_.erase(it);
}

TransferService::TransferService(TransferStore* store,
                                 int64_t default_chunk_bytes,
                                 absl::Duration stream_idle_timeout)
    : store_(store),
      default_chunk_bytes_(default_chunk_bytes),
      watchdog_(stream_idle_timeout) {}

absl::Status TransferService::AuthorizeUpload(grpc::CallbackServerContext*,
                                              const std::string&) const {
  return absl::OkStatus();
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TransferService::Download(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  v1::DownloadRequest request;
  grpc::ByteBuffer copy(*raw);  // Deserialize takes its slices.
  absl::StatusOr<TransferStore::Offered> offered =
      grpc::SerializationTraits<v1::DownloadRequest>::Deserialize(&copy,
                                                                  &request)
              .ok()
          ? store_->Find(request.transfer_id())
          : absl::InvalidArgumentError("malformed DownloadRequest");
  absl::Status status = offered.status();
  int64_t chunk =
      request.chunk_bytes() > 0 ? request.chunk_bytes() : default_chunk_bytes_;
  chunk = std::min<int64_t>(chunk, store_->limits().max_chunk_bytes);
  if (status.ok() &&
      (request.offset() < 0 || request.offset() > offered->info.total_bytes)) {
    status = absl::OutOfRangeError(
        absl::StrCat("offset ", request.offset(), " outside the payload of ",
                     offered->info.total_bytes, " bytes"));
  }
  if (!status.ok()) {
    // A reactor that finishes at once with the error.
    class Failed final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      explicit Failed(const grpc::Status& s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    return new Failed(ToGrpcStatus(status));
  }
  return new DownloadReactor(*std::move(offered), request.offset(), chunk,
                             context, &watchdog_);
}

grpc::ServerReadReactor<v1::Chunk>* TransferService::Upload(
    grpc::CallbackServerContext* context, v1::UploadResponse* response) {
  return new UploadReactor(this, store_, context, response, &watchdog_);
}

grpc::ServerUnaryReactor* TransferService::UploadStatus(
    grpc::CallbackServerContext* context,
    const v1::UploadStatusRequest* request,
    v1::UploadStatusResponse* response) {
  absl::StatusOr<std::pair<int64_t, TransferInfo>> progress =
      store_->UploadProgress(request->transfer_id());
  if (progress.ok()) {
    response->set_committed_bytes(progress->first);
    ToProto(progress->second, response->mutable_header());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(progress.status()));
  return reactor;
}

absl::StatusOr<TransferStats> TransferClient::WithRetries(
    absl::string_view what,
    const std::function<absl::Status(TransferStats&)>& attempt) {
  const auto start = std::chrono::steady_clock::now();
  TransferStats stats;
  absl::Duration backoff = retry_.initial_backoff;
  absl::Status last;
  for (int i = 0; i < retry_.max_attempts; ++i) {
    if (i > 0) {
      ++stats.resumes;
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
      backoff = std::min(backoff * 2, retry_.max_backoff);
    }
    last = attempt(stats);
    if (last.ok()) {
      stats.seconds = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
      return stats;
    }
    if (!Retryable(last)) return last;
  }
  return absl::Status(last.code(),
                      absl::StrCat(what, " failed after ", retry_.max_attempts,
                                   " attempts: ", last.message()));
}

absl::StatusOr<TransferStats> TransferClient::Download(
    const std::string& device_id, const std::string& transfer_id,
    int64_t chunk_bytes, ChunkSink* sink) {
  std::unique_ptr<ChunkAssembler> assembler;  // Survives broken streams.
  // One stream from the committed offset. OK once everything arrived and
  // the digest matched; a retryable error if the stream broke.
  auto stream = [&](TransferStats& stats) -> absl::Status {
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + retry_.stream_deadline));
    v1::DownloadRequest request;
    request.set_device_id(device_id);
    request.set_transfer_id(transfer_id);
    request.set_offset(assembler ? assembler->committed() : 0);
    request.set_chunk_bytes(chunk_bytes);
    std::unique_ptr<grpc::ClientReaderInterface<v1::Chunk>> reader =
        stub_->Download(&context, request);
    v1::Chunk chunk;
    absl::Status error;
    for (bool first = true; error.ok() && reader->Read(&chunk); first = false) {
      if (first) error = StartOrResume(chunk, sink, assembler);
      if (error.ok()) error = assembler->Append(chunk.offset(), chunk.data());
      if (error.ok()) stats.bytes += static_cast<int64_t>(chunk.data().size());
    }
    if (!error.ok()) {
      // Our own verdict on the bytes is final: not a transport failure.
      context.TryCancel();
      reader->Finish();
      return absl::Status(absl::IsUnavailable(error)
                              ? absl::StatusCode::kInternal
                              : error.code(),
                          error.message());
    }
    if (absl::Status s = FromGrpcStatus(reader->Finish()); !s.ok()) return s;
    if (!assembler || assembler->committed() != assembler->info().total_bytes) {
      return absl::UnavailableError("download stream ended early");
    }
    return assembler->Finish();
  };
  return WithRetries(absl::StrCat("download of ", transfer_id), stream);
}

absl::Status TransferClient::StartOrResume(
    const v1::Chunk& chunk, ChunkSink* sink,
    std::unique_ptr<ChunkAssembler>& assembler) {
  if (!chunk.has_header()) {
    return absl::InvalidArgumentError("download without a header");
  }
  const TransferInfo info = FromProto(chunk.header());
  if (assembler) {
    if (!SameTransfer(info, assembler->info())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "payload ", info.transfer_id, " changed during the download"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<ChunkAssembler>> created =
      ChunkAssembler::Create(info, std::make_unique<BorrowedSink>(sink));
  if (!created.ok()) return created.status();
  assembler = *std::move(created);
  return absl::OkStatus();
}

absl::StatusOr<model::NamedTensors> TransferClient::DownloadTensors(
    const std::string& device_id, const std::string& transfer_id,
    int64_t chunk_bytes, TransferStats* stats) {
  TensorSink sink;
  absl::StatusOr<TransferStats> done =
      Download(device_id, transfer_id, chunk_bytes, &sink);
  if (!done.ok()) return done.status();
  if (stats != nullptr) *stats = *done;
  return sink.Take();
}

absl::StatusOr<TransferStats> TransferClient::Upload(
    const std::string& device_id, const TransferInfo& info,
    const PayloadSource& source, int64_t chunk_bytes) {
  if (chunk_bytes < 1) return absl::InvalidArgumentError("chunk_bytes < 1");
  auto stream = [&](TransferStats& stats) -> absl::Status {
    // Always ask where to start: a client restarted after a crash resumes
    // an upload it began before, like one whose stream just broke.
    int64_t offset = 0;
    grpc::ClientContext status_context;
    status_context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::UploadStatusRequest status_request;
    status_request.set_device_id(device_id);
    status_request.set_transfer_id(info.transfer_id);
    v1::UploadStatusResponse status_response;
    const absl::Status status = FromGrpcStatus(
        stub_->UploadStatus(&status_context, status_request, &status_response));
    if (status.ok()) {
      // Resume only our own payload; another one stored under the id (an
      // earlier encoding of the update) is replaced from offset 0.
      if (SameTransfer(FromProto(status_response.header()), info)) {
        offset = status_response.committed_bytes();
      }
    } else if (!absl::IsNotFound(status)) {
      return status;
    }
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + retry_.stream_deadline));
    v1::UploadResponse response;
    std::unique_ptr<grpc::ClientWriterInterface<v1::Chunk>> writer =
        stub_->Upload(&context, &response);
    v1::Chunk chunk;
    bool broken = false;
    for (bool first = true; !broken && (first || offset < info.total_bytes);
         first = false) {
      chunk.Clear();
      if (first) ToProto(info, chunk.mutable_header());
      const int64_t n = std::min(chunk_bytes, info.total_bytes - offset);
      chunk.set_offset(offset);
      chunk.mutable_data()->resize(n);
      if (absl::Status s =
              source.Read(offset, absl::MakeSpan(*chunk.mutable_data()));
          !s.ok()) {
        context.TryCancel();
        writer->Finish();
        return absl::Status(absl::StatusCode::kInternal, s.message());
      }
      broken = !writer->Write(chunk);
      if (!broken) {
        offset += n;
        stats.bytes += n;
      }
    }
    if (!broken) writer->WritesDone();
    if (absl::Status s = FromGrpcStatus(writer->Finish()); !s.ok()) return s;
    if (response.committed_bytes() != info.total_bytes) {
      return absl::UnavailableError("upload stream ended early");
    }
    return absl::OkStatus();
  };
  return WithRetries(absl::StrCat("upload of ", info.transfer_id), stream);
}

}  // namespace fedge::transport
