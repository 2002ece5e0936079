// Tokenizers: text -> token ids for language-model tasks.
//
// Two kinds: "byte" (each UTF-8 byte is its id, vocabulary 256, no special
// ids) and "sentencepiece" (a tokenizer.model through Debian's
// libsentencepiece-dev: LLaMA-1/2, TinyLlama, Mistral and fedge's own base).
// Byte-level BPE (tokenizer.json) is refused when the task is parsed: Debian
// 12 packages no C++ library for it, and fedge does not hand-write one.
//
// Every tokenizer has a digest (SHA-256 hex of its definition) that is part
// of a task's identity: a device whose tokenizer differs from the
// coordinator's is refused at registration.
//
// Thread-safe once created (Encode and Decode are const).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "task/spec.h"

namespace fedge::task {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`, without BOS/EOS. InvalidArgument if the tokenizer
  // refuses the text.
  virtual absl::StatusOr<std::vector<int64_t>> Encode(
      absl::string_view text) const = 0;
  // The text of `ids`; ids out of range are skipped.
  virtual std::string Decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // End-of-sequence id placed between packed records; -1 if none (the byte
  // tokenizer joins records with a newline instead).
  virtual int64_t eos_id() const = 0;
  // Beginning-of-sequence id placed before a prompt; -1 if none.
  virtual int64_t bos_id() const = 0;
  // UTF-8 bytes of input that token `id` stands for (0 for special ids):
  // bits per byte divides the loss by the sum of these over the targets.
  virtual int64_t ByteLength(int64_t id) const = 0;
  // "byte" or "sentencepiece".
  virtual absl::string_view type() const = 0;
  // SHA-256 hex of the model file; "byte" for the byte tokenizer.
  virtual const std::string& digest() const = 0;
};

// NotFound if a sentencepiece model file is missing; InvalidArgument naming
// the file if it does not parse.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const TokenizerSpec& spec);

// Trains a SentencePiece unigram model of `vocab_size` pieces on the UTF-8
// text in `text_file` (one sentence per line) and writes it to
// `model_path` (and its .vocab beside it); `vocab_size` is an upper bound
// (a small corpus may yield fewer pieces). Byte fallback on, identity
// normalisation, no dummy prefix: every text round-trips exactly, newlines
// included, and ByteLength sums to the text's length. ids: 0 <unk>, 1 <s>,
// 2 </s>. Internal with SentencePiece's message on failure.
absl::Status TrainSentencePiece(const std::string& text_file,
                                int64_t vocab_size,
                                const std::string& model_path, int threads);

// SHA-256 hex of `bytes`.
std::string Sha256Hex(absl::string_view bytes);

}  // namespace fedge::task
