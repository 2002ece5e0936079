#include "task/text_corpus.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <torch/types.h>

#include "model/file_io.h"

namespace fedge::task {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if invalid.
size_t Utf8Length(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t min = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool Blank(absl::string_view text) {
  return absl::StripAsciiWhitespace(text).empty();
}

}  // namespace

absl::Status AppendRecords(absl::string_view text, absl::string_view name,
                           int file, absl::string_view separator,
                           std::vector<TextRecord>* records) {
  int64_t line = 1;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ":", line, ": contains a NUL byte (binary file?)"));
    }
    const size_t n = Utf8Length(text, i);
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ":", line, ": not valid UTF-8"));
    }
    if (text[i] == '\n') ++line;
    i += n;
  }
  std::string body;
  int64_t start = 1;
  line = 0;
  const auto flush = [&] {
    while (!body.empty() && body.back() == '\n') body.pop_back();
    if (!Blank(body)) {
      records->push_back(TextRecord{file, start, std::move(body)});
    }
    body.clear();
  };
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    ++line;
    absl::string_view content = l;
    if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
    const bool ends = separator.empty() ? Blank(content) : content == separator;
    if (ends) {
      flush();
      start = line + 1;
      continue;
    }
    if (body.empty()) start = line;
    absl::StrAppend(&body, l, "\n");
  }
  flush();
  return absl::OkStatus();
}

absl::StatusOr<TextCorpus> ReadTextCorpus(const std::string& path,
                                          const DataSpec& data) {
  namespace fs = std::filesystem;
  std::error_code error;
  TextCorpus corpus;
  if (fs::is_directory(path, error)) {
    for (const fs::directory_entry& entry :
         fs::directory_iterator(path, error)) {
      if (!entry.is_regular_file(error)) continue;
      const std::string file_name = entry.path().filename().string();
      bool skipped = false;
      for (const std::string& pattern : data.skip) {
        skipped =
            skipped || fnmatch(pattern.c_str(), file_name.c_str(), 0) == 0;
      }
      if (!skipped) corpus.files.push_back(entry.path().string());
    }
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot list ", path, ": ", error.message()));
    }
    std::sort(corpus.files.begin(), corpus.files.end());
  } else if (fs::exists(path, error)) {
    corpus.files.push_back(path);
  } else {
    return absl::NotFoundError(
        absl::StrCat("text data ", path, " does not exist"));
  }
  for (size_t f = 0; f < corpus.files.size(); ++f) {
    absl::StatusOr<std::string> text = model::ReadFile(corpus.files[f]);
    if (!text.ok()) return text.status();
    if (absl::Status s =
            AppendRecords(*text, corpus.files[f], static_cast<int>(f),
                          data.record_separator, &corpus.records);
        !s.ok()) {
      return s;
    }
  }
  if (corpus.records.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text data ", path, " holds no text (",
                     corpus.files.size(), " files read)"));
  }
  return corpus;
}

absl::StatusOr<model::Dataset> PackRecords(const TextCorpus& corpus,
                                           absl::Span<const int64_t> records,
                                           const Tokenizer& tokenizer,
                                           int64_t length,
                                           absl::string_view what) {
  std::vector<int64_t> stream;
  std::vector<int64_t> separator;
  if (tokenizer.eos_id() >= 0) {
    separator.push_back(tokenizer.eos_id());
  } else {
    absl::StatusOr<std::vector<int64_t>> newline = tokenizer.Encode("\n");
    if (!newline.ok()) return newline.status();
    separator = *newline;
  }
  const int64_t vocab = tokenizer.vocab_size();
  for (int64_t index : records) {
    if (index < 0 || index >= static_cast<int64_t>(corpus.records.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("record index ", index, " out of range"));
    }
    const TextRecord& record = corpus.records[static_cast<size_t>(index)];
    absl::StatusOr<std::vector<int64_t>> ids = tokenizer.Encode(record.text);
    const std::string where = absl::StrCat(
        corpus.files[static_cast<size_t>(record.file)], ":", record.line);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", ids.status().message()));
    }
    if (ids->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the text tokenizes to nothing"));
    }
    for (int64_t id : *ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": token id ", id, " outside the vocabulary of ", vocab));
      }
    }
    stream.insert(stream.end(), ids->begin(), ids->end());
    stream.insert(stream.end(), separator.begin(), separator.end());
  }
  const int64_t window = length + 1;
  const int64_t n = static_cast<int64_t>(stream.size()) / window;
  if (n < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " holds ", stream.size(), " tokens, fewer than one window of ",
        window, " (sequence.length + 1)"));
  }
  at::Tensor all =
      torch::from_blob(stream.data(), {n, window}, torch::kLong).clone();
  model::Dataset out;
  out.inputs = all.narrow(1, 0, length).contiguous();
  out.targets = all.narrow(1, 1, length).contiguous();
  out.num_classes = vocab;
  std::vector<int64_t> bytes(static_cast<size_t>(n), 0);
  for (int64_t w = 0; w < n; ++w) {
    for (int64_t t = 1; t < window; ++t) {
      bytes[static_cast<size_t>(w)] +=
          tokenizer.ByteLength(stream[static_cast<size_t>(w * window + t)]);
    }
  }
  out.target_bytes = torch::tensor(bytes, torch::kLong);
  return out;
}

}  // namespace fedge::task
