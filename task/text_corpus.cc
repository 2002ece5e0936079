#include "task/text_corpus.h"

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <nlohmann/json.hpp>
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

// InvalidArgument naming "name:line" for a NUL byte or invalid UTF-8.
absl::Status CheckText(absl::string_view text, absl::string_view name) {
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
  return absl::OkStatus();
}

std::string Where(const TextCorpus& corpus, const TextRecord& record) {
  return absl::StrCat(corpus.files[static_cast<size_t>(record.file)], ":",
                      record.line);
}

// `text`'s ids, every one inside the vocabulary; `where` names the record.
absl::StatusOr<std::vector<int64_t>> EncodeChecked(const Tokenizer& tokenizer,
                                                   absl::string_view text,
                                                   absl::string_view where,
                                                   absl::string_view what) {
  absl::StatusOr<std::vector<int64_t>> ids = tokenizer.Encode(text);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", ids.status().message()));
  }
  if (ids->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the ", what, " tokenizes to nothing"));
  }
  for (int64_t id : *ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": token id ", id, " outside the vocabulary of ",
                       tokenizer.vocab_size()));
    }
  }
  return ids;
}

absl::Status CheckIndex(const TextCorpus& corpus, int64_t index) {
  if (index < 0 || index >= static_cast<int64_t>(corpus.records.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("record index ", index, " out of range"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> RecordEndIds(const Tokenizer& tokenizer) {
  if (tokenizer.eos_id() >= 0) return std::vector<int64_t>{tokenizer.eos_id()};
  return tokenizer.Encode("\n");
}

std::string InstructionPrompt(absl::string_view instruction,
                              absl::string_view context) {
  std::string prompt = absl::StrCat("### Instruction:\n", instruction, "\n\n");
  if (!context.empty())
    absl::StrAppend(&prompt, "### Input:\n", context, "\n\n");
  absl::StrAppend(&prompt, "### Response:\n");
  return prompt;
}

std::string ClassificationPrompt(absl::string_view text) {
  return absl::StrCat("### Text:\n", text, "\n\n### Label:\n");
}

absl::Status AppendJsonlRecords(absl::string_view text, absl::string_view name,
                                int file, JsonlKind kind,
                                std::vector<std::string>* categories,
                                std::vector<TextRecord>* records) {
  if (absl::Status s = CheckText(text, name); !s.ok()) return s;
  int64_t line = 0;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    ++line;
    if (Blank(l)) continue;
    const std::string where = absl::StrCat(name, ":", line);
    const nlohmann::json json =
        nlohmann::json::parse(l, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (!json.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not a JSON object"));
    }
    // The value of the first of `keys` present; "" when none is.
    auto field = [&](std::initializer_list<const char*> keys,
                     bool required) -> absl::StatusOr<std::string> {
      const char* found = nullptr;
      std::string value;
      for (const char* key : keys) {
        const auto it = json.find(key);
        if (it == json.end() || it->is_null()) continue;
        if (found != nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": both \"", found, "\" and \"", key, "\" are given"));
        }
        if (it->is_string()) {
          value = it->get<std::string>();
        } else if (it->is_number_integer() &&
                   absl::string_view(key) == "label") {
          value = std::to_string(it->get<int64_t>());
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": field \"", key, "\" is not a string"));
        }
        found = key;
      }
      if (required && Blank(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": field \"", *keys.begin(), "\" is missing or blank"));
      }
      return value;
    };
    TextRecord record{file, line, "", ""};
    absl::StatusOr<std::string> category = field({"category"}, false);
    if (!category.ok()) return category.status();
    if (kind == JsonlKind::kClassification) {
      absl::StatusOr<std::string> input = field({"text"}, true);
      if (!input.ok()) return input.status();
      absl::StatusOr<std::string> label = field({"label"}, true);
      if (!label.ok()) return label.status();
      record.prompt = ClassificationPrompt(*input);
      record.text = *std::move(label);
      if (category->empty()) *category = record.text;
    } else {
      absl::StatusOr<std::string> instruction = field({"instruction"}, true);
      if (!instruction.ok()) return instruction.status();
      absl::StatusOr<std::string> context = field({"context", "input"}, false);
      if (!context.ok()) return context.status();
      absl::StatusOr<std::string> response =
          field({"response", "output"}, true);
      if (!response.ok()) return response.status();
      record.prompt = InstructionPrompt(*instruction, *context);
      record.text = *std::move(response);
    }
    if (!category->empty()) {
      auto it = std::find(categories->begin(), categories->end(), *category);
      record.category = static_cast<int>(it - categories->begin());
      if (it == categories->end()) categories->push_back(*category);
    }
    records->push_back(std::move(record));
  }
  return absl::OkStatus();
}

absl::Status AppendRecords(absl::string_view text, absl::string_view name,
                           int file, absl::string_view separator,
                           std::vector<TextRecord>* records) {
  if (absl::Status s = CheckText(text, name); !s.ok()) return s;
  std::string body;
  int64_t start = 1;
  int64_t line = 0;
  const auto flush = [&] {
    while (!body.empty() && body.back() == '\n') body.pop_back();
    if (!Blank(body)) {
      records->push_back(TextRecord{file, start, std::move(body), ""});
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
                                          const DataSpec& data,
                                          JsonlKind kind) {
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
  const bool jsonl = data.format == "jsonl";
  for (size_t f = 0; f < corpus.files.size(); ++f) {
    absl::StatusOr<std::string> text = model::ReadFile(corpus.files[f]);
    if (!text.ok()) return text.status();
    const absl::Status s =
        jsonl ? AppendJsonlRecords(*text, corpus.files[f], static_cast<int>(f),
                                   kind, &corpus.categories, &corpus.records)
              : AppendRecords(*text, corpus.files[f], static_cast<int>(f),
                              data.record_separator, &corpus.records);
    if (!s.ok()) return s;
  }
  // Category indices in name order, so they do not depend on file order.
  std::vector<std::string> sorted = corpus.categories;
  std::sort(sorted.begin(), sorted.end());
  for (TextRecord& r : corpus.records) {
    if (r.category < 0) continue;
    r.category = static_cast<int>(
        std::lower_bound(sorted.begin(), sorted.end(),
                         corpus.categories[static_cast<size_t>(r.category)]) -
        sorted.begin());
  }
  corpus.categories = std::move(sorted);
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
  absl::StatusOr<std::vector<int64_t>> separator = RecordEndIds(tokenizer);
  if (!separator.ok()) return separator.status();
  const int64_t vocab = tokenizer.vocab_size();
  for (int64_t index : records) {
    if (absl::Status s = CheckIndex(corpus, index); !s.ok()) return s;
    const TextRecord& record = corpus.records[static_cast<size_t>(index)];
    absl::StatusOr<std::vector<int64_t>> ids =
        EncodeChecked(tokenizer, record.text, Where(corpus, record), "text");
    if (!ids.ok()) return ids.status();
    stream.insert(stream.end(), ids->begin(), ids->end());
    stream.insert(stream.end(), separator->begin(), separator->end());
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

absl::StatusOr<model::Dataset> PadRecords(const TextCorpus& corpus,
                                          absl::Span<const int64_t> records,
                                          const Tokenizer& tokenizer,
                                          int64_t length,
                                          absl::string_view what) {
  if (records.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(what, " has no records"));
  }
  absl::StatusOr<std::vector<int64_t>> end = RecordEndIds(tokenizer);
  if (!end.ok()) return end.status();
  const auto n = static_cast<int64_t>(records.size());
  at::Tensor inputs = torch::full({n, length}, end->front(), torch::kLong);
  at::Tensor targets =
      torch::full({n, length}, model::kIgnoreTarget, torch::kLong);
  std::vector<int64_t> bytes(records.size(), 0);
  auto in = inputs.accessor<int64_t, 2>();
  auto out = targets.accessor<int64_t, 2>();
  for (int64_t w = 0; w < n; ++w) {
    const int64_t index = records[static_cast<size_t>(w)];
    if (absl::Status s = CheckIndex(corpus, index); !s.ok()) return s;
    const TextRecord& record = corpus.records[static_cast<size_t>(index)];
    const std::string where = Where(corpus, record);
    if (record.prompt.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not an instruction record (no prompt)"));
    }
    absl::StatusOr<std::vector<int64_t>> prompt =
        EncodeChecked(tokenizer, record.prompt, where, "prompt");
    if (!prompt.ok()) return prompt.status();
    absl::StatusOr<std::vector<int64_t>> answer =
        EncodeChecked(tokenizer, record.text, where, "response");
    if (!answer.ok()) return answer.status();
    answer->insert(answer->end(), end->begin(), end->end());
    const auto p = static_cast<int64_t>(prompt->size());
    const auto a = static_cast<int64_t>(answer->size());
    if (p + a > length + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the record is ", p + a, " tokens (prompt ", p,
                       ", response and end ", a,
                       "), more than sequence.length + 1 = ", length + 1));
    }
    // Position t reads token t and predicts token t + 1; the response's
    // tokens (and the end) are scored.
    std::vector<int64_t> full = *std::move(prompt);
    full.insert(full.end(), answer->begin(), answer->end());
    for (int64_t t = 0; t + 1 < p + a; ++t) {
      in[w][t] = full[static_cast<size_t>(t)];
      if (t + 1 < p) continue;
      const int64_t id = full[static_cast<size_t>(t + 1)];
      out[w][t] = id;
      bytes[static_cast<size_t>(w)] += tokenizer.ByteLength(id);
    }
  }
  model::Dataset data;
  data.inputs = inputs;
  data.targets = targets;
  data.num_classes = tokenizer.vocab_size();
  data.target_bytes = torch::tensor(bytes, torch::kLong);
  return data;
}

}  // namespace fedge::task
