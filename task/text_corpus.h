// Plain-text corpora for language-model tasks: reading files into records,
// and tokenizing records into the packed windows the trainer takes.
//
// A record is one unit of text that is never split between the
// public/held-out/device parts: a paragraph, or what lies between two
// separator lines (fortune files: "%"). Records keep their source file and
// first line, so every error names both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

#include "model/dataset.h"
#include "task/spec.h"
#include "task/tokenizer.h"

namespace fedge::task {

struct TextRecord {
  int file = 0;      // Index into TextCorpus::files.
  int64_t line = 0;  // 1-based line where the record starts.
  std::string text;  // Without the separator line or trailing newline.
};

struct TextCorpus {
  std::vector<std::string> files;  // Paths, in reading order.
  std::vector<TextRecord> records;
};

// Reads `path`: a file, or a directory whose regular files (not those
// matching a `data.skip` pattern) are read in name order. Records are split
// at `data.record_separator` lines (or blank lines); whitespace-only records
// are dropped. NotFound if `path` does not exist; InvalidArgument naming
// "file:line" for text that is not valid UTF-8 or contains a NUL byte;
// InvalidArgument if no record remains.
absl::StatusOr<TextCorpus> ReadTextCorpus(const std::string& path,
                                          const DataSpec& data);

// Parses one file's text into `corpus` (file index `file`, named `name`):
// what ReadTextCorpus does per file. Exposed for tests and fuzzing.
absl::Status AppendRecords(absl::string_view text, absl::string_view name,
                           int file, absl::string_view separator,
                           std::vector<TextRecord>* records);

// Tokenizes `records` of `corpus` in order, ends each with the tokenizer's
// end-of-sequence id (a newline for the byte tokenizer), concatenates them
// and cuts the stream into non-overlapping windows of length + 1 tokens:
// inputs are a window's first `length` ids, targets its last `length`;
// target_bytes counts the text bytes the targets stand for. A trailing
// partial window is dropped. InvalidArgument naming "file:line" if a
// non-blank record tokenizes to nothing or to an id outside the vocabulary;
// FailedPrecondition (naming `what`) if the records hold fewer tokens than
// one window.
absl::StatusOr<model::Dataset> PackRecords(const TextCorpus& corpus,
                                           absl::Span<const int64_t> records,
                                           const Tokenizer& tokenizer,
                                           int64_t length,
                                           absl::string_view what);

}  // namespace fedge::task
