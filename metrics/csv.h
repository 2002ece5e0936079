// Append-only CSV files for per-round records: a header once, then one
// flushed line per row, fields quoted as RFC 4180 wants.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedge::metrics {

// Not thread-safe.
class CsvWriter {
 public:
  // Opens `path` for appending. A new or empty file gets `columns` as its
  // header; an existing one must start with exactly that header
  // (FailedPrecondition otherwise, so a resumed run never mixes layouts).
  static absl::StatusOr<std::unique_ptr<CsvWriter>> Open(
      const std::string& path, const std::vector<std::string>& columns);
  // Like Open, but first drops the rows whose `column` (an integer) is >=
  // `limit`: after a resume, the rows of rounds the checkpoint does not
  // hold are written again, so they must not stay twice. The file is
  // rewritten atomically.
  static absl::StatusOr<std::unique_ptr<CsvWriter>> OpenTruncated(
      const std::string& path, const std::vector<std::string>& columns,
      const std::string& column, int64_t limit);
  ~CsvWriter();

  // One row; InvalidArgument if the field count differs from the header.
  // Written and flushed before returning.
  absl::Status Write(const std::vector<std::string>& fields);

  const std::string& path() const { return path_; }

 private:
  CsvWriter(std::FILE* file, std::string path, size_t columns)
      : file_(file), path_(std::move(path)), columns_(columns) {}
  std::FILE* const file_;
  const std::string path_;
  const size_t columns_;
};

// One CSV line (no newline) with fields quoted where needed.
std::string CsvLine(const std::vector<std::string>& fields);

// Splits one CSV line (as CsvLine writes them) into fields.
std::vector<std::string> ParseCsvLine(const std::string& line);

// Reads a CSV file with a header line into one map per row, by column
// name. NotFound if the file does not exist; InvalidArgument naming the
// file and line for a row with more fields than the header.
absl::StatusOr<std::vector<std::map<std::string, std::string>>> ReadCsvFile(
    const std::string& path);

}  // namespace fedge::metrics
