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
  // Plain text: the record, without the separator line or trailing
  // newline. Instruction records: the response.
  std::string text;
  // Instruction records: the prompt (InstructionPrompt) the response
  // follows; empty for plain text.
  std::string prompt;
  int category = -1;  // Index into TextCorpus::categories; -1: none.
};

struct TextCorpus {
  std::vector<std::string> files;  // Paths, in reading order.
  std::vector<TextRecord> records;
  std::vector<std::string> categories;  // JSONL "category" values, sorted.
};

// The ids that end a record (and that generation stops at): the
// tokenizer's end-of-sequence id, or the encoded newline for a tokenizer
// without one (byte). The tokenizer's errors.
absl::StatusOr<std::vector<int64_t>> RecordEndIds(const Tokenizer& tokenizer);

// fedge's prompt template for instruction records (Alpaca's sections
// without its preamble); the response follows it directly:
//   ### Instruction:\n{instruction}\n\n[### Input:\n{context}\n\n]###
//   Response:\n
// The Input section is left out when the context is empty.
std::string InstructionPrompt(absl::string_view instruction,
                              absl::string_view context);

// fedge's prompt for sequence classification records; the label follows:
//   ### Text:\n{text}\n\n### Label:\n
std::string ClassificationPrompt(absl::string_view text);

// What a JSONL line holds.
enum class JsonlKind {
  kInstruction,     // instruction / context|input / response|output.
  kClassification,  // text / label.
};

// Reads `path`: a file, or a directory whose regular files (not those
// matching a `data.skip` pattern) are read in name order. Format "text":
// records are split at `data.record_separator` lines (or blank lines);
// whitespace-only records are dropped. Format "jsonl": one record of
// `kind` per non-blank line (AppendJsonlRecords). NotFound if `path` does not
// exist; InvalidArgument naming "file:line" for text that is not valid UTF-8 or
// contains a NUL byte; InvalidArgument if no record remains.
absl::StatusOr<TextCorpus> ReadTextCorpus(
    const std::string& path, const DataSpec& data,
    JsonlKind kind = JsonlKind::kInstruction);

// Parses one file's text into `corpus` (file index `file`, named `name`):
// what ReadTextCorpus does per file. Exposed for tests and fuzzing.
absl::Status AppendRecords(absl::string_view text, absl::string_view name,
                           int file, absl::string_view separator,
                           std::vector<TextRecord>* records);

// Parses JSONL records, one JSON object per non-blank line. Instruction
// records: "instruction" (required), "context" (Dolly) or "input" (Alpaca)
// (optional), "response" (Dolly) or "output" (Alpaca) (required).
// Classification records: "text" and "label" (a string or an integer; the
// response), both required. Either kind: "category" (optional, for the
// by_category split and the Dirichlet skew; a classification record
// without one is in its label's category; new names are added to
// `categories`, kept unsorted until ReadTextCorpus sorts them). Other
// fields are ignored. InvalidArgument naming "file:line" for a line that is
// not a JSON object, a missing or blank required field, a field of the
// wrong type, or both spellings of one field.
absl::Status AppendJsonlRecords(absl::string_view text, absl::string_view name,
                                int file, JsonlKind kind,
                                std::vector<std::string>* categories,
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

// One window per instruction record: prompt, response and the
// end-of-sequence id (a newline for the byte tokenizer), the prompt and the
// padding masked (model::kIgnoreTarget), so the loss is the response's.
// Inputs are padded with the end-of-sequence id. target_bytes counts the
// response's bytes. InvalidArgument naming "file:line" if a record has no
// prompt, its response tokenizes to nothing, an id falls outside the
// vocabulary, or the record holds more than `length` + 1 tokens (the
// message gives the prompt's and the response's lengths); FailedPrecondition
// (naming `what`) for no records.
absl::StatusOr<model::Dataset> PadRecords(const TextCorpus& corpus,
                                          absl::Span<const int64_t> records,
                                          const Tokenizer& tokenizer,
                                          int64_t length,
                                          absl::string_view what);

}  // namespace fedge::task
