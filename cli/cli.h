// What every fedge binary's main() does before its own work: set the
// usage text, parse the flags, refuse stray arguments, and fail with one
// line on stderr that names the program. Binaries are wiring (STYLE.md):
// this keeps their preambles one line each.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fedge::cli {

// Sets `usage` as the --help text and parses argv's flags (a bad flag
// exits, as Abseil does). InvalidArgument naming the first argument that
// is not a flag. --help lists every flag the binary's fedge sources
// define (IsFedgeFlagFile); --version prints "PROGRAM fedge VERSION".
absl::Status ParseFlags(int argc, char** argv, absl::string_view usage);

// Whether --help lists the flags defined in source file `file`: fedge's
// own, not Abseil's (--flagfile and the like are in --helpfull).
bool IsFedgeFlagFile(absl::string_view file);

// Prints "PROGRAM: MESSAGE" (the program's short name) to stderr and
// returns 1, the exit code: `return cli::Fail(status);`.
int Fail(const absl::Status& status);
int Fail(absl::string_view message);

}  // namespace fedge::cli
