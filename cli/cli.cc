#include "cli/cli.h"

#include <errno.h>  // program_invocation_short_name (glibc).

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"

namespace fedge::cli {

absl::Status ParseFlags(int argc, char** argv, absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", rest[1], "' (flags are --name=value)"));
  }
  return absl::OkStatus();
}

int Fail(absl::string_view message) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name,
               std::string(message).c_str());
  return 1;
}

int Fail(const absl::Status& status) { return Fail(status.ToString()); }

}  // namespace fedge::cli
