#!/usr/bin/env bash
# bench/sim_runs.sh with a stand-in for fedge-sim that records when each run
# starts and ends: runs one at a time by default; with FEDGE_FEDSPINE_JOBS=2
# the run that calibrates the compute-cost table alone, then two at once;
# a failed run named by fedspine_wait, an inconsistent one kept and marked;
# a finished run of the same command kept; a bad FEDGE_FEDSPINE_JOBS refused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

bin="$tmp/bin"
mkdir -p "$bin"
# The stand-in: --strategies=fail exits 1, =inconsistent exits 2 after
# writing its summary; it writes the compute-cost table if there is none.
cat >"$bin/fedge-sim" <<'EOF'
#!/usr/bin/env bash
for a in "$@"; do
  case "$a" in
    --out=*) out="${a#--out=}" ;;
    --strategies=*) strategy="${a#--strategies=}" ;;
    --compute_costs=*) table="${a#--compute_costs=}" ;;
  esac
done
echo "start $(basename "$out") $(date +%s.%N)" >>"$EVENTS"
sleep 1
[ -f "$table" ] || echo "seconds_per_training_flop lora 1e-11" >"$table"
[ "$strategy" = fail ] && exit 1
mkdir -p "$out"
echo '{}' >"$out/summary.json"
echo "end $(basename "$out") $(date +%s.%N)" >>"$EVENTS"
[ "$strategy" = inconsistent ] && exit 2
exit 0
EOF
chmod +x "$bin/fedge-sim"
export EVENTS="$tmp/events"

# at KIND RUN: the time of RUN's start or end.
at() { awk -v k="$1" -v r="$2" '$1 == k && $2 == r { print $3 }' "$EVENTS"; }
before() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# One at a time by default.
(
  unset FEDGE_FEDSPINE_JOBS
  . "$here/sim_runs.sh"
  federation=(--compute_costs="$tmp/one.tsv")
  : >"$EVENTS"
  fedspine_run "$tmp/a" fixed:0:4 "--seed=1" 2>/dev/null
  fedspine_run "$tmp/b" fixed:0:4 "--seed=1" 2>/dev/null
  [ -f "$tmp/a/command.txt" ] && [ -f "$tmp/b/command.txt" ] ||
    fail "a run's command was not recorded"
  before "$(at end a)" "$(at start b)" || fail "default runs overlapped"
)

# Two at once, after the run that calibrates the table.
(
  export FEDGE_FEDSPINE_JOBS=2
  . "$here/sim_runs.sh"
  federation=(--compute_costs="$tmp/two.tsv")
  : >"$EVENTS"
  for run in c1 c2 c3; do
    fedspine_run "$tmp/$run" fixed:0:16 "--seed=1" 2>/dev/null
  done
  fedspine_wait 2>/dev/null || fail "fedspine_wait failed with every run fine"
  for run in c1 c2 c3; do
    [ -f "$tmp/$run/command.txt" ] || fail "$run was not collected"
  done
  before "$(at end c1)" "$(at start c2)" ||
    fail "a run started before the table was calibrated"
  before "$(at start c3)" "$(at end c2)" || fail "c2 and c3 did not overlap"

  # A failed run is named; an inconsistent one is kept and marked.
  fedspine_run "$tmp/bad" fail "--seed=1" 2>/dev/null
  fedspine_run "$tmp/odd" inconsistent "--seed=1" 2>/dev/null
  if fedspine_wait 2>"$tmp/wait.err"; then fail "a failed run went unnoticed"; fi
  grep -q "failed: $tmp/bad " "$tmp/wait.err" || fail "the failed run not named"
  grep -q "odd" "$tmp/wait.err" && fail "the inconsistent run named as failed"
  [ -f "$tmp/odd/INCONSISTENT" ] || fail "the inconsistent run is not marked"
  fedspine_wait || fail "fedspine_wait still reports a collected failure"
)

# A finished run of the same binaries and command is kept.
(
  . "$here/sim_runs.sh"
  federation=(--compute_costs="$tmp/one.tsv")
  fedspine_version=v1
  : >"$EVENTS"
  fedspine_run "$tmp/k" fixed:0:4 "--seed=1" 2>/dev/null
  fedspine_run "$tmp/k" fixed:0:4 "--seed=1" 2>"$tmp/kept.err"
  grep -q "kept $tmp/k" "$tmp/kept.err" || fail "a finished run was not kept"
  [ "$(grep -c '^start k ' "$EVENTS")" -eq 1 ] || fail "a kept run ran again"
  fedspine_run "$tmp/k" fixed:0:4 "--seed=2" 2>/dev/null
  [ "$(grep -c '^start k ' "$EVENTS")" -eq 2 ] ||
    fail "a run with another command was kept"
)

# A bad job count is refused when bench/run starts.
for jobs in 0 x -1; do
  if (FEDGE_FEDSPINE_JOBS=$jobs . "$here/sim_runs.sh") 2>"$tmp/jobs.err"; then
    fail "FEDGE_FEDSPINE_JOBS=$jobs accepted"
  fi
  grep -q "FEDGE_FEDSPINE_JOBS must be a positive integer" "$tmp/jobs.err" ||
    fail "FEDGE_FEDSPINE_JOBS=$jobs refused without saying why"
done
echo "PASS"
