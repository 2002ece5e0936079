// Typed, non-throwing reads from JSON config files (config.json and
// friends). nlohmann::json throws on a type mismatch; JsonReader checks each
// field's type first and keeps the first error, so a config parser reads all
// fields in a row and checks status() once.
//
// Thread-compatible. Include only from .cc files: it pulls in nlohmann/json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include <nlohmann/json.hpp>

namespace fedge::model {

// Parses `text` as a JSON object. InvalidArgument "<context>: ..." if it is
// not valid JSON or not an object.
absl::StatusOr<nlohmann::json> ParseJsonObject(absl::string_view text,
                                               absl::string_view context);

class JsonReader {
 public:
  // `object` must outlive the reader; `context` prefixes error messages.
  JsonReader(const nlohmann::json& object, std::string context);

  // Required fields: a missing field or the wrong type records
  // InvalidArgument and returns a zero value.
  int64_t Int(absl::string_view key);
  double Double(absl::string_view key);
  std::string String(absl::string_view key);
  bool Bool(absl::string_view key);
  // Optional fields: `fallback` when absent or null; a present field of the
  // wrong type still records an error.
  int64_t Int(absl::string_view key, int64_t fallback);
  double Double(absl::string_view key, double fallback);
  std::string String(absl::string_view key, absl::string_view fallback);
  bool Bool(absl::string_view key, bool fallback);
  bool Has(absl::string_view key) const;
  // A nested object; absent or null reads as an empty object (every field
  // then takes its fallback). A present non-object records an error.
  JsonReader Object(absl::string_view key);
  // An optional array of strings; absent: empty.
  std::vector<std::string> Strings(absl::string_view key);
  // Records InvalidArgument naming the first field not in `known`, so that
  // a misspelt or unsupported field is refused rather than ignored.
  void RejectUnknown(const std::vector<absl::string_view>& known);

  // The elements of an array of objects; each child reports errors into this
  // reader's status. Missing: records an error unless `optional`.
  std::vector<JsonReader> Objects(absl::string_view key, bool optional = false);

  // OK, or the first error recorded by this reader or any child.
  const absl::Status& status() const { return *status_; }

 private:
  JsonReader(const nlohmann::json& object, std::string context,
             std::shared_ptr<absl::Status> status);
  const nlohmann::json* Field(absl::string_view key, bool required);
  void Fail(absl::string_view key, absl::string_view what);

  const nlohmann::json& object_;
  std::string context_;
  std::shared_ptr<absl::Status> status_;
};

}  // namespace fedge::model
