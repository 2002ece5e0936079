#include "metrics/csv.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::metrics {

std::string CsvLine(const std::vector<std::string>& fields) {
  std::vector<std::string> quoted;
  for (const std::string& field : fields) {
    if (field.find_first_of(",\"\n\r") == std::string::npos) {
      quoted.push_back(field);
      continue;
    }
    std::string q = "\"";
    for (char c : field) {
      if (c == '"') q += '"';
      q += c;
    }
    quoted.push_back(q + "\"");
  }
  return absl::StrJoin(quoted, ",");
}

std::vector<std::string> ParseCsvLine(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

absl::StatusOr<std::vector<std::map<std::string, std::string>>> ReadCsvFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = ParseCsvLine(line);
  std::vector<std::map<std::string, std::string>> rows;
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::vector<std::string> fields = ParseCsvLine(line);
    if (fields.size() > header.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " line ", number, ": ", fields.size(),
                       " fields, the header has ", header.size()));
    }
    std::map<std::string, std::string>& row = rows.emplace_back();
    for (size_t i = 0; i < fields.size(); ++i) row[header[i]] = fields[i];
  }
  return rows;
}

absl::StatusOr<std::unique_ptr<CsvWriter>> CsvWriter::Open(
    const std::string& path, const std::vector<std::string>& columns) {
  const std::string header = CsvLine(columns);
  std::string first_line;
  {
    std::ifstream in(path);
    if (in) std::getline(in, first_line);
  }
  if (!first_line.empty() && first_line != header) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has header '", first_line, "'; expected '", header,
                     "' (a different layout: move the file away)"));
  }
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (first_line.empty()) {
    std::fprintf(file, "%s\n", header.c_str());
    std::fflush(file);
  }
  return std::unique_ptr<CsvWriter>(new CsvWriter(file, path, columns.size()));
}

absl::StatusOr<std::unique_ptr<CsvWriter>> CsvWriter::OpenTruncated(
    const std::string& path, const std::vector<std::string>& columns,
    const std::string& column, int64_t limit) {
  size_t index = 0;
  while (index < columns.size() && columns[index] != column) ++index;
  if (index == columns.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no column '", column, "' in ", path));
  }
  std::ifstream in(path);
  if (in) {
    std::string line, kept;
    std::getline(in, line);
    if (line != CsvLine(columns)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " has header '", line, "'; expected '", CsvLine(columns), "'"));
    }
    kept = line + "\n";
    while (std::getline(in, line)) {
      const std::vector<std::string> fields = ParseCsvLine(line);
      int64_t value = 0;
      if (index < fields.size() && absl::SimpleAtoi(fields[index], &value) &&
          value >= limit) {
        continue;
      }
      kept += line + "\n";
    }
    in.close();
    const std::string temp = path + ".tmp";
    std::ofstream out(temp, std::ios::trunc);
    out << kept;
    out.close();
    if (!out || std::rename(temp.c_str(), path.c_str()) != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot rewrite ", path, ": ", std::strerror(errno)));
    }
  }
  return Open(path, columns);
}

CsvWriter::~CsvWriter() { std::fclose(file_); }

absl::Status CsvWriter::Write(const std::vector<std::string>& fields) {
  if (fields.size() != columns_) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": row has ", fields.size(), " fields; header has ", columns_));
  }
  const std::string line = CsvLine(fields) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0) {
    return absl::UnavailableError(
        absl::StrCat("write ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace fedge::metrics
