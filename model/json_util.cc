#include "model/json_util.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace fedge::model {

absl::StatusOr<nlohmann::json> ParseJsonObject(absl::string_view text,
                                               absl::string_view context) {
  nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(),
                                              /*cb=*/nullptr,
                                              /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": invalid JSON"));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, ": expected a JSON object"));
  }
  return json;
}

JsonReader::JsonReader(const nlohmann::json& object, std::string context)
    : JsonReader(object, std::move(context), std::make_shared<absl::Status>()) {
}

JsonReader::JsonReader(const nlohmann::json& object, std::string context,
                       std::shared_ptr<absl::Status> status)
    : object_(object),
      context_(std::move(context)),
      status_(std::move(status)) {}

void JsonReader::Fail(absl::string_view key, absl::string_view what) {
  if (status_->ok()) {
    *status_ = absl::InvalidArgumentError(
        absl::StrCat(context_, ": field \"", key, "\" ", what));
  }
}

bool JsonReader::Has(absl::string_view key) const {
  if (!object_.is_object()) return false;
  auto it = object_.find(std::string(key));
  return it != object_.end() && !it->is_null();
}

const nlohmann::json* JsonReader::Field(absl::string_view key, bool required) {
  if (!object_.is_object()) {
    Fail(key, "cannot be read: the enclosing value is not an object");
    return nullptr;
  }
  auto it = object_.find(std::string(key));
  if (it == object_.end() || it->is_null()) {
    if (required) Fail(key, "is missing");
    return nullptr;
  }
  return &*it;
}

int64_t JsonReader::Int(absl::string_view key) {
  const nlohmann::json* v = Field(key, true);
  if (v == nullptr) return 0;
  if (!v->is_number_integer()) {
    Fail(key, "must be an integer");
    return 0;
  }
  return v->get<int64_t>();
}

int64_t JsonReader::Int(absl::string_view key, int64_t fallback) {
  return Has(key) ? Int(key) : fallback;
}

double JsonReader::Double(absl::string_view key) {
  const nlohmann::json* v = Field(key, true);
  if (v == nullptr) return 0;
  if (!v->is_number()) {
    Fail(key, "must be a number");
    return 0;
  }
  return v->get<double>();
}

double JsonReader::Double(absl::string_view key, double fallback) {
  return Has(key) ? Double(key) : fallback;
}

std::string JsonReader::String(absl::string_view key) {
  const nlohmann::json* v = Field(key, true);
  if (v == nullptr) return "";
  if (!v->is_string()) {
    Fail(key, "must be a string");
    return "";
  }
  return v->get<std::string>();
}

std::string JsonReader::String(absl::string_view key,
                               absl::string_view fallback) {
  return Has(key) ? String(key) : std::string(fallback);
}

bool JsonReader::Bool(absl::string_view key) {
  const nlohmann::json* v = Field(key, true);
  if (v == nullptr) return false;
  if (!v->is_boolean()) {
    Fail(key, "must be true or false");
    return false;
  }
  return v->get<bool>();
}

bool JsonReader::Bool(absl::string_view key, bool fallback) {
  return Has(key) ? Bool(key) : fallback;
}

std::vector<JsonReader> JsonReader::Objects(absl::string_view key,
                                            bool optional) {
  std::vector<JsonReader> out;
  const nlohmann::json* v = Field(key, !optional);
  if (v == nullptr) return out;
  if (!v->is_array()) {
    Fail(key, "must be an array");
    return out;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const nlohmann::json& element = (*v)[i];
    std::string context = absl::StrCat(context_, ".", key, "[", i, "]");
    if (!element.is_object()) {
      Fail(key, absl::StrCat("element ", i, " must be an object"));
      continue;
    }
    out.push_back(JsonReader(element, std::move(context), status_));
  }
  return out;
}

JsonReader JsonReader::Object(absl::string_view key) {
  static const nlohmann::json* const kEmpty =
      new nlohmann::json(nlohmann::json::object());
  std::string context = absl::StrCat(context_, ".", key);
  const nlohmann::json* v = Field(key, false);
  if (v == nullptr) return JsonReader(*kEmpty, std::move(context), status_);
  if (!v->is_object()) {
    Fail(key, "must be an object");
    return JsonReader(*kEmpty, std::move(context), status_);
  }
  return JsonReader(*v, std::move(context), status_);
}

std::vector<std::string> JsonReader::Strings(absl::string_view key) {
  std::vector<std::string> out;
  const nlohmann::json* v = Field(key, false);
  if (v == nullptr) return out;
  if (!v->is_array()) {
    Fail(key, "must be an array of strings");
    return out;
  }
  for (const nlohmann::json& element : *v) {
    if (!element.is_string()) {
      Fail(key, "must be an array of strings");
      return {};
    }
    out.push_back(element.get<std::string>());
  }
  return out;
}

void JsonReader::RejectUnknown(const std::vector<absl::string_view>& known) {
  if (!object_.is_object()) return;
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    bool found = false;
    for (absl::string_view k : known) found = found || it.key() == k;
    if (!found) {
      Fail(it.key(), "is not supported (misspelt, or a feature fedge lacks)");
      return;
    }
  }
}

}  // namespace fedge::model
