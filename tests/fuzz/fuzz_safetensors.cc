// Fuzz target: a safetensors file as it arrives from disk or a peer.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)fedge::model::ParseSafetensors(bytes);
  return 0;
}
