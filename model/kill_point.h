// Kill points for crash testing (as RocksDB's): named places in the code
// where a crash would be worst, e.g. halfway through writing a checkpoint.
// When the environment variable FEDGE_KILL_POINT names a point, the process
// sends itself SIGKILL there, exactly as `kill -9` at that instant would:
//
//   FEDGE_KILL_POINT=NAME      the first time NAME is reached
//   FEDGE_KILL_POINT=NAME@N    the N-th time (1-based)
//
// Unset (the normal case) every point is a no-op costing one load of a
// cached flag. bench/reliability.sh uses them to show that a coordinator
// killed during aggregation or a checkpoint write resumes losing nothing.
#pragma once

namespace fedge::model {

// Points in fedge: "atomic_write" (WriteFileAtomically, half the bytes in
// the temporary file, nothing renamed), "aggregate" (a round's updates all
// accepted, before the global model commits them).
void KillPoint(const char* name);

}  // namespace fedge::model
