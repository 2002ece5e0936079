# Sourced by bench/run: how its benchmarks start fedge-sim runs and read
# their exit status. Tested by bench/sim_runs_test.sh with a stand-in for
# fedge-sim. Needs `bin` (where fedge-sim is) and, for fedspine_run, the
# caller's `federation` (fedge-sim's flags) and fedspine_version.

# sim_ok RC DIR, after `fedge-sim ... --out=DIR || sim_ok $? DIR`: exit 2
# means the run finished but its records failed fedge-sim's consistency
# check, so it yields no figure: DIR/INCONSISTENT marks it for the figures'
# code, which skips it and says so. Any other failure stops bench/run.
sim_ok() {
  [ "$1" -eq 2 ] || return "$1"
  echo "bench/run: $2: records inconsistent; no figure from this run" >&2
  touch "$2/INCONSISTENT"
}

# fedspine_run DIR STRATEGY COORDINATOR_FLAGS: one fedge-sim run of the
# federation in the caller's `federation` into DIR (log DIR.log). Where
# fedspine_version is set (a digest of the binaries), a finished run of the
# same binaries and command is kept. With FEDGE_FEDSPINE_JOBS=N > 1 it runs
# in the background, at most N at once (fedspine_wait collects them), except
# while the federation's compute-cost table does not exist yet: the run that
# calibrates it runs alone, so that every run charges one rate measured on
# an otherwise idle machine. The virtual clock charges training by FLOPs
# from that table, so running side by side changes no run's times beyond
# the engine's own CPU-timed work.
fedspine_version=""
fedspine_jobs="${FEDGE_FEDSPINE_JOBS:-1}"
[[ "$fedspine_jobs" =~ ^[1-9][0-9]*$ ]] || {
  echo "bench/run: FEDGE_FEDSPINE_JOBS must be a positive integer, not '$fedspine_jobs'" >&2
  exit 2
}
fedspine_spawned=()  # Run directories started in the background.
fedspine_run() {
  local key="$fedspine_version fedge-sim ${federation[*]} --strategies=$2 --coordinator_flags=$3"
  if [ -n "$fedspine_version" ] && [ -f "$1/summary.json" ] &&
     [ "$(cat "$1/command.txt" 2>/dev/null)" = "$key" ]; then
    echo "bench/run: kept $1" >&2
    return
  fi
  local table="" flag
  for flag in "${federation[@]}"; do
    [[ "$flag" == --compute_costs=* ]] && table="${flag#--compute_costs=}"
  done
  echo "bench/run: $1 ($2)" >&2
  rm -rf "$1"
  if [ "$fedspine_jobs" -gt 1 ] && [ -f "$table" ]; then
    # Runs left behind by an interrupted bench/run are stopped with it.
    trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
    while [ "$(jobs -rp | wc -l)" -ge "$fedspine_jobs" ]; do wait -n || true; done
    fedspine_spawned+=("$1")
    fedspine_exec "$1" "$2" "$3" "$key" &
    return
  fi
  fedspine_exec "$1" "$2" "$3" "$key"
}

# fedspine_exec DIR STRATEGY COORDINATOR_FLAGS KEY: fedspine_run's fedge-sim
# run; KEY in DIR/command.txt marks it finished (fedspine_wait, and keeping
# a finished run).
fedspine_exec() {
  "$bin/fedge-sim" "${federation[@]}" --out="$1" --strategies="$2" \
    --coordinator_flags="$3" >"$1.log" || sim_ok $? "$1"
  echo "$4" >"$1/command.txt"
}

# fedspine_wait: waits for every run fedspine_run started in the background;
# fails naming those that did not finish (their logs say why).
fedspine_wait() {
  local run failed=()
  wait
  for run in "${fedspine_spawned[@]}"; do
    [ -f "$run/command.txt" ] || failed+=("$run")
  done
  fedspine_spawned=()
  if [ ${#failed[@]} -gt 0 ]; then
    echo "bench/run: failed: ${failed[*]} (see each one's .log)" >&2
    return 1
  fi
}
