#include "cli/cli.h"

#include <errno.h>  // program_invocation_short_name (glibc).

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fedge::cli {

bool IsFedgeFlagFile(absl::string_view file) {
  return !absl::StrContains(file, "absl/");
}

absl::Status ParseFlags(int argc, char** argv, absl::string_view usage) {
  // Abseil's default --help lists only files named after the program
  // (fedge-client.cc), which no fedge binary has: it listed nothing.
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsFedgeFlagFile;
  config.contains_helpshort_flags = IsFedgeFlagFile;
  // "Flags from client/main.cc", not "../../client/main.cc".
  config.normalize_filename = [](absl::string_view file) {
    while (absl::ConsumePrefix(&file, "../")) {
    }
    return std::string(file);
  };
  config.version_string = [] {
    return absl::StrCat(program_invocation_short_name, " fedge ", FEDGE_VERSION,
                        "\n");
  };
  absl::SetFlagsUsageConfig(config);
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
