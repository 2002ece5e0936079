// Fuzz target: chunk reassembly of a streamed safetensors payload (what a
// client does with a downloaded adapter). The first byte picks the chunk
// size; the rest is the payload, declared with its true size and digest so
// that reassembly and the tensor sink's header parsing run to the end.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/strings/string_view.h"

#include "transport/sha256.h"
#include "transport/transfer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t chunk = 1 + data[0] % 64;
  const absl::string_view payload(reinterpret_cast<const char*>(data) + 1,
                                  size - 1);
  fedge::transport::TransferInfo info;
  info.transfer_id = "fuzz";
  info.total_bytes = static_cast<int64_t>(payload.size());
  info.sha256 = fedge::transport::Sha256Of(payload);
  auto sink = std::make_unique<fedge::transport::TensorSink>();
  fedge::transport::TensorSink* tensors = sink.get();
  auto assembler =
      fedge::transport::ChunkAssembler::Create(info, std::move(sink));
  if (!assembler.ok()) return 0;
  (*assembler)->sink()->Begin(info);
  for (int64_t offset = 0; offset < info.total_bytes; offset += chunk) {
    if (!(*assembler)->Append(offset, payload.substr(offset, chunk)).ok()) {
      return 0;
    }
  }
  if ((*assembler)->Finish().ok()) (void)tensors->Take();
  return 0;
}
