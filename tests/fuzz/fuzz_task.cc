// Fuzz target: what a user or a device hands fedge as a task: the task
// file (task/spec.h) and the text of a data file (task/text_corpus.h: plain
// text and JSONL instruction records), both split from one input at its
// first NUL byte.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "task/spec.h"
#include "task/text_corpus.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  (void)fedge::task::ParseTaskSpec(json, "fuzz.json");
  if (nul != std::string::npos) {
    std::vector<fedge::task::TextRecord> records;
    (void)fedge::task::AppendRecords(input.substr(nul + 1), "fuzz.txt", 0, "%",
                                     &records);
    (void)fedge::task::AppendRecords(input.substr(nul + 1), "fuzz.txt", 0, "",
                                     &records);
    std::vector<std::string> categories;
    for (auto kind : {fedge::task::JsonlKind::kInstruction,
                      fedge::task::JsonlKind::kClassification}) {
      (void)fedge::task::AppendJsonlRecords(input.substr(nul + 1), "fuzz.jsonl",
                                            0, kind, &categories, &records);
    }
  }
  return 0;
}
