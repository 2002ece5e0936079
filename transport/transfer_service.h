// Chunked, resumable transfers over gRPC: the server side (a store of
// offered payloads and uploads in progress, and the Download / Upload /
// UploadStatus handlers of fedge.v1.Coordinator) and the client side
// (download and upload with resume after a broken stream).
//
// TransferService implements only those three RPCs; the coordinator's
// service extends it with the rest. Handlers never block: a download
// writes one chunk per completed write, an upload appends one chunk per
// completed read.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include <grpcpp/grpcpp.h>

#include "fedge/v1/coordinator_service.grpc.pb.h"
#include "transport/stream_watchdog.h"
#include "transport/transfer.h"

namespace fedge::transport {

// Where uploads wait, from their first byte until DropUpload: in memory,
// or, those that declare at least `min_bytes` when `dir` is set, in
// unnamed files in `dir` (FileSink), so that the store's memory does not
// grow with the number of large uploads in flight.
struct UploadStaging {
  std::string dir;  // Empty: every upload in memory.
  int64_t min_bytes = 1 << 20;
};

// Thread-safe.
class TransferStore {
 public:
  // `expected_uploads_only`: BeginUpload accepts only ids announced with
  // ExpectUpload (a coordinator: one upload per task, of a bounded size),
  // so a peer cannot make the store buffer uploads nobody asked for.
  explicit TransferStore(AssemblerLimits limits = {},
                         bool expected_uploads_only = false,
                         UploadStaging staging = {})
      : limits_(limits),
        expected_only_(expected_uploads_only),
        staging_(std::move(staging)) {}

  // Makes a payload downloadable under info.transfer_id (replacing any).
  void Offer(const TransferInfo& info,
             std::shared_ptr<const PayloadSource> source)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Offered {
    TransferInfo info;
    std::shared_ptr<const PayloadSource> source;
  };
  // NotFound for an unknown id.
  absl::StatusOr<Offered> Find(const std::string& transfer_id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Announces an upload: at most `max_bytes` under `transfer_id`, from the
  // peer `owner` (a device id; empty: anyone). Idempotent: an upload in
  // progress under the id is kept.
  void ExpectUpload(const std::string& transfer_id, int64_t max_bytes,
                    std::string owner) ABSL_LOCKS_EXCLUDED(mu_);
  // Who may upload under `transfer_id` (ExpectUpload's owner); empty when
  // anyone may, or nothing was announced.
  std::string UploadOwner(const std::string& transfer_id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Starts an upload, or resumes it if `info` equals what was declared
  // before under its id; a different `info` starts it over (the device
  // re-encoded its update), dropping the bytes stored. InvalidArgument for
  // a malformed or empty header or one that says
  // PayloadFormat::kSafetensors (an upload is an update); ResourceExhausted
  // over the limits or the announced size; NotFound if uploads must be
  // announced and this one was not (or its round has been withdrawn);
  // Unavailable if the staging directory cannot take a file.
  absl::Status BeginUpload(const TransferInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  // Appends at `offset` (which must equal the committed size). The chunk
  // that completes the payload is followed by the digest check: DataLoss
  // on a mismatch, and the upload is dropped (send it again from 0).
  // Unavailable if the staging file cannot be written (disk full); what
  // was committed before stays.
  absl::Status AppendUpload(const std::string& transfer_id, int64_t offset,
                            absl::string_view data) ABSL_LOCKS_EXCLUDED(mu_);
  // Bytes committed so far; NotFound if the upload is unknown.
  absl::StatusOr<int64_t> UploadCommitted(const std::string& transfer_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The committed bytes and the header of the upload under `transfer_id`.
  // NotFound if unknown.
  absl::StatusOr<std::pair<int64_t, TransferInfo>> UploadProgress(
      const std::string& transfer_id) const ABSL_LOCKS_EXCLUDED(mu_);
  // The bytes of a complete, verified upload. It stays stored (a refused
  // submission must not destroy the upload it names) until DropUpload,
  // a replacing BeginUpload or Withdraw; the bytes returned stay valid
  // while the caller holds them. FailedPrecondition if incomplete (the
  // message says how far it got), NotFound if unknown (or dropped after a
  // digest mismatch), Unavailable if a staged file cannot be mapped.
  absl::StatusOr<std::shared_ptr<const PayloadBytes>> CompletedUpload(
      const std::string& transfer_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets an upload (once its update was accepted).
  void DropUpload(const std::string& transfer_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Forgets every offer, announced upload and upload whose id starts with
  // `prefix` (a closed round's payloads and unfinished updates); returns
  // how many offers and uploads.
  int64_t Withdraw(absl::string_view prefix) ABSL_LOCKS_EXCLUDED(mu_);

  const AssemblerLimits& limits() const { return limits_; }

 private:
  // One upload; its own lock keeps appends to different uploads parallel.
  struct UploadEntry {
    absl::Mutex mu;
    // Its sink is a StoringSink.
    std::unique_ptr<ChunkAssembler> assembler ABSL_GUARDED_BY(mu);
    // Set once the payload is complete and its digest matched.
    bool complete ABSL_GUARDED_BY(mu) = false;
  };
  std::shared_ptr<UploadEntry> FindUpload(const std::string& transfer_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Removes `transfer_id`'s upload if it is still `entry` (not replaced).
  // Lock order: an entry's mu, then mu_.
  void EraseUpload(const std::string& transfer_id, const UploadEntry* entry)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Expected {
    int64_t max_bytes;
    std::string owner;
  };

  const AssemblerLimits limits_;
  const bool expected_only_;
  const UploadStaging staging_;
  mutable absl::Mutex mu_;
  std::map<std::string, Offered> offered_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Expected> expected_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<UploadEntry>> uploads_
      ABSL_GUARDED_BY(mu_);
};

// The generated CallbackService with Download served raw (gRPC's raw
// callback method): each chunk goes out as a ByteBuffer from EncodeChunk,
// so the payload's bytes are not copied into a message and again into
// gRPC's slices for every stream. The wire format is fedge.v1.Chunk, as
// before; clients see no difference. Spelled out rather than stacked on
// CallbackService, whose typed Download the raw one would hide (clang's
// -Woverloaded-virtual). Every RPC of fedge.v1.Coordinator must appear: one
// left out would stay synchronous, which this server does not serve
// (TransferServiceBaseTest.EveryRpcIsACallbackOne checks).
using CoordinatorCallbackBase = v1::Coordinator::WithCallbackMethod_Register<
    v1::Coordinator::WithCallbackMethod_GetTask<
        v1::Coordinator::WithRawCallbackMethod_Download<
            v1::Coordinator::WithCallbackMethod_Upload<
                v1::Coordinator::WithCallbackMethod_UploadStatus<
                    v1::Coordinator::WithCallbackMethod_SubmitUpdate<
                        v1::Coordinator::WithCallbackMethod_Heartbeat<
                            v1::Coordinator::WithCallbackMethod_DeclineTask<
                                v1::Coordinator::WithCallbackMethod_Split<
                                    v1::Coordinator::WithCallbackMethod_Secure<
                                        v1::Coordinator::Service>>>>>>>>>>;

class TransferService : public CoordinatorCallbackBase {
 public:
  // `store` must outlive the service. Download and Upload streams that make
  // no progress (no chunk written or read) for `stream_idle_timeout` are
  // cancelled (StreamWatchdog); infinite: never.
  explicit TransferService(
      TransferStore* store, int64_t default_chunk_bytes = kDefaultChunkBytes,
      absl::Duration stream_idle_timeout = absl::InfiniteDuration());

  // The typed overloads stay declared (unused: the raw one serves).
  using CoordinatorCallbackBase::Download;
  // `request` is a serialized fedge.v1.DownloadRequest (InvalidArgument if
  // it does not parse).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Download(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<v1::Chunk>* Upload(
      grpc::CallbackServerContext* context,
      v1::UploadResponse* response) override;
  grpc::ServerUnaryReactor* UploadStatus(
      grpc::CallbackServerContext* context,
      const v1::UploadStatusRequest* request,
      v1::UploadStatusResponse* response) override;

  // Whether the caller of `context` may upload as `owner` (a device id,
  // non-empty): OK or PermissionDenied. Default: anyone may; a service
  // that knows its peers' identities (mutual TLS) overrides it.
  virtual absl::Status AuthorizeUpload(grpc::CallbackServerContext* context,
                                       const std::string& owner) const;

  // Streams of this service (and of subclasses' streaming handlers).
  StreamWatchdog& watchdog() { return watchdog_; }

 protected:
  TransferStore* store() const { return store_; }

 private:
  TransferStore* const store_;  // Not owned.
  const int64_t default_chunk_bytes_;
  StreamWatchdog watchdog_;
};

struct TransferStats {
  int64_t bytes = 0;    // Payload bytes received or sent in this call.
  int64_t resumes = 0;  // Streams restarted after an error.
  double seconds = 0;   // Wall time, monotonic clock.
};

struct RetryPolicy {
  int max_attempts = 8;  // Streams per transfer, first one included.
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  absl::Duration stream_deadline = absl::Minutes(30);
};

// Client side, over a fedge.v1.Coordinator stub. Thread-compatible.
class TransferClient {
 public:
  // `stub` must outlive the client.
  explicit TransferClient(v1::Coordinator::StubInterface* stub,
                          RetryPolicy retry = {})
      : stub_(stub), retry_(retry) {}

  // Downloads `transfer_id` into `sink` (borrowed), resuming after
  // UNAVAILABLE, DEADLINE_EXCEEDED or a broken stream with capped
  // exponential back-off. Other errors, and DataLoss on a digest mismatch,
  // are returned. InvalidArgument if the payload changes between streams.
  absl::StatusOr<TransferStats> Download(const std::string& device_id,
                                         const std::string& transfer_id,
                                         int64_t chunk_bytes, ChunkSink* sink);

  // Convenience: a safetensors payload straight into named tensors.
  absl::StatusOr<model::NamedTensors> DownloadTensors(
      const std::string& device_id, const std::string& transfer_id,
      int64_t chunk_bytes, TransferStats* stats = nullptr);

  // Uploads `source` (described by `info`), asking UploadStatus where to
  // resume after a broken stream.
  absl::StatusOr<TransferStats> Upload(const std::string& device_id,
                                       const TransferInfo& info,
                                       const PayloadSource& source,
                                       int64_t chunk_bytes);

 private:
  // Runs `attempt` until it succeeds, fails for good, or the policy's
  // attempts are spent (capped exponential back-off between them); fills
  // in resumes and seconds.
  absl::StatusOr<TransferStats> WithRetries(
      absl::string_view what,
      const std::function<absl::Status(TransferStats&)>& attempt);
  // Checks the first chunk of a download stream: creates the assembler on
  // the first stream, or checks a resumed stream serves the same payload.
  static absl::Status StartOrResume(const v1::Chunk& chunk, ChunkSink* sink,
                                    std::unique_ptr<ChunkAssembler>& assembler);

  v1::Coordinator::StubInterface* const stub_;  // Not owned.
  const RetryPolicy retry_;
};

// The proto form of a TransferInfo and back (validated by the assembler).
void ToProto(const TransferInfo& info, v1::TransferHeader* header);
TransferInfo FromProto(const v1::TransferHeader& header);

// A serialized fedge.v1.Chunk of [offset, offset + size) of `source`,
// carrying `header` if not null (a stream's first chunk): byte for byte
// what the message's own serialization gives. Where the source can View the
// range, the data are slices of its own memory, each keeping the source
// alive until gRPC lets go of it; otherwise they are Read once into a slice
// of their own. OutOfRange for a range that leaves the payload; the
// source's Read errors.
absl::StatusOr<grpc::ByteBuffer> EncodeChunk(
    const TransferInfo* header, int64_t offset, int64_t size,
    const std::shared_ptr<const PayloadSource>& source);

}  // namespace fedge::transport
