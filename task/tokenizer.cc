#include "task/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include <openssl/evp.h>

#include "model/file_io.h"
#include "task/sentencepiece_adapter.h"

namespace fedge::task {
namespace {

class ByteTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int64_t>> Encode(
      absl::string_view text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string Decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    for (int64_t id : ids) {
      if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
    }
    return text;
  }
  int64_t vocab_size() const override { return 256; }
  int64_t eos_id() const override { return -1; }
  int64_t bos_id() const override { return -1; }
  int64_t ByteLength(int64_t id) const override {
    return id >= 0 && id < 256 ? 1 : 0;
  }
  absl::string_view type() const override { return "byte"; }
  const std::string& digest() const override { return digest_; }

 private:
  const std::string digest_ = "byte";
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<spm::Processor> processor,
                         std::string digest)
      : processor_(std::move(processor)), digest_(std::move(digest)) {}
  absl::StatusOr<std::vector<int64_t>> Encode(
      absl::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    if (!processor_->Encode(std::string(text), &ids, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sentencepiece refused the text: ", error));
    }
    return std::vector<int64_t>(ids.begin(), ids.end());
  }
  std::string Decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> in;
    for (int64_t id : ids) {
      if (id >= 0 && id < vocab_size()) in.push_back(static_cast<int>(id));
    }
    return processor_->Decode(in);
  }
  int64_t vocab_size() const override { return processor_->vocab_size(); }
  int64_t eos_id() const override { return processor_->eos_id(); }
  int64_t bos_id() const override { return processor_->bos_id(); }
  int64_t ByteLength(int64_t id) const override {
    return id >= 0 && id < vocab_size()
               ? processor_->ByteLength(static_cast<int>(id))
               : 0;
  }
  absl::string_view type() const override { return "sentencepiece"; }
  const std::string& digest() const override { return digest_; }

 private:
  std::unique_ptr<spm::Processor> processor_;
  std::string digest_;
};

}  // namespace

std::string Sha256Hex(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(),
             nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    absl::StrAppendFormat(&hex, "%02x", digest[i]);
  }
  return hex;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const TokenizerSpec& spec) {
  if (spec.type == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.type != "sentencepiece") {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer type '", spec.type,
                     "' is not supported (sentencepiece, byte)"));
  }
  absl::StatusOr<std::string> bytes = model::ReadFile(spec.model_path);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat("tokenizer ", spec.model_path, ": ",
                                     bytes.status().message()));
  }
  std::string error;
  std::unique_ptr<spm::Processor> processor =
      spm::Processor::Load(spec.model_path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer ", spec.model_path,
                     " is not a SentencePiece model: ", error));
  }
  return std::make_unique<SentencePieceTokenizer>(std::move(processor),
                                                  Sha256Hex(*bytes));
}

absl::Status TrainSentencePiece(const std::string& text_file,
                                int64_t vocab_size,
                                const std::string& model_path, int threads) {
  absl::string_view prefix = model_path;
  if (!absl::ConsumeSuffix(&prefix, ".model")) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer path ", model_path, " must end in .model"));
  }
  const std::vector<std::string> args = {
      "--input=" + text_file,
      absl::StrCat("--model_prefix=", prefix),
      absl::StrCat("--vocab_size=", vocab_size),
      "--model_type=unigram",
      "--character_coverage=1.0",
      "--byte_fallback=true",
      "--normalization_rule_name=identity",
      "--remove_extra_whitespaces=false",
      "--add_dummy_prefix=false",
      "--split_digits=true",
      "--hard_vocab_limit=false",
      "--unk_id=0",
      "--bos_id=1",
      "--eos_id=2",
      "--pad_id=-1",
      "--minloglevel=2",
      absl::StrCat("--num_threads=", threads > 0 ? threads : 1)};
  std::string error;
  if (!spm::Train(args, &error)) {
    return absl::InternalError(
        absl::StrCat("training the SentencePiece tokenizer: ", error));
  }
  return absl::OkStatus();
}

}  // namespace fedge::task
