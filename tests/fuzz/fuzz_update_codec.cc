// Fuzz target: an uploaded update (every codec, with and without zstd), as
// the coordinator decodes it before any tensor is built.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

#include "transport/update_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fedge::transport::DecodeLimits limits;
  limits.max_payload_bytes = 16 << 20;  // Keep the fuzzer's RSS small.
  limits.max_tensor_elements = 4 << 20;
  (void)fedge::transport::DecodeUpdate(
      absl::string_view(reinterpret_cast<const char*>(data), size), limits);
  return 0;
}
