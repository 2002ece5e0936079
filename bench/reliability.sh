#!/usr/bin/env bash
# Reliability scenarios against real fedge-coordinator processes
# (docs/reliability.md). Each part writes OUT/<part>.txt with `metric NAME
# VALUE` lines and the logs beside it, and fails (exit 1) if what it
# checks does not hold.
#
# Usage: bench/reliability.sh BIN_DIR BASE_DIR OUT_DIR [PART...]
#   BIN_DIR   fedge-coordinator, fedge-bench-load, fedge-link
#   BASE_DIR  the base model the coordinator serves (fedge-pretrain)
#   PART      fuzz | load | limits | identity | fault   (default: all)
# Sizes come from the environment: LOAD_CLIENTS (500), LOAD_ROUNDS (3),
# LIMITS_CLIENTS (50), FAULT_CLIENTS (10), FAULT_ROUNDS (6), FUZZ_SECONDS
# (60 per target); ctest runs all but fuzz small
# (tests/integration/reliability_test.sh).
set -euo pipefail
bin=$(cd "$1" && pwd)
base=$(cd "$2" && pwd)
out=$3
shift 3
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(fuzz load limits identity fault)
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
fail() { echo "reliability.sh: $*" >&2; exit 1; }
metric() { awk -v n="$2" '$1 == "metric" && $2 == n { print $3 }' "$1"; }
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# wait_line FILE SKIP PATTERN: the first line after SKIP lines matching
# PATTERN, once it is there (a process announcing its port); fails after
# 60 s.
wait_line() {
  local i line
  for i in $(seq 600); do
    line=$(tail -n +$(($2 + 1)) "$1" 2>/dev/null | grep -m1 -E "$3" || true)
    [ -n "$line" ] && { echo "$line"; return; }
    sleep 0.1
  done
  fail "no '$3' in $1"
}

# coordinator DIR PORT [FLAG...]: starts one in the background (PORT 0:
# any free port) and waits until it serves; sets $cpid and $port.
coordinator() {
  local dir=$1 want=$2 skip
  shift 2
  skip=$(lines "$dir/coordinator.log")
  "$bin/fedge-coordinator" --listen=127.0.0.1:"$want" --task_set=base="$base" \
    --run_dir="$dir/run" --evaluate=false --metrics_listen= --threads=1 --quiet \
    --retry_after_ms=1000 "$@" >>"$dir/coordinator.log" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  port=$(wait_line "$dir/coordinator.log" "$skip" 'serving on port|fedge-coordinator: ' |
         sed -nE 's/.*serving on port ([0-9]+).*/\1/p')
  [ -n "$port" ] || fail "coordinator did not start: $(tail -3 "$dir/coordinator.log")"
}

# Fuzzing: every decoder's libFuzzer target (scripts/fuzz builds the fuzz
# preset), executions and coverage per target.
part_fuzz() {
  echo "reliability.sh: fuzz, ${FUZZ_SECONDS:-60} s per target" >&2
  "$here/scripts/fuzz" "${FUZZ_SECONDS:-60}" >"$out/fuzz.log" 2>&1 ||
    fail "fuzzing found a crash: $(tail -5 "$out/fuzz.log")"
  awk 'f && NF == 6 { printf "metric fuzz_%s_executions %s\nmetric fuzz_%s_cov %s\n", $1, $2, $1, $4 }
       $1 == "target" { f = 1 }' "$out/fuzz.log" | tee "$out/fuzz.txt" >&2
}

# Load: one coordinator, LOAD_CLIENTS clients, every update accounted for.
part_load() {
  local n=${LOAD_CLIENTS:-500} rounds=${LOAD_ROUNDS:-3} dir=$out/load
  rm -rf "$dir" && mkdir -p "$dir"
  echo "reliability.sh: load, $n clients, $rounds rounds" >&2
  coordinator "$dir" 0 --insecure --rounds="$rounds" --min_devices="$n"
  "$bin/fedge-bench-load" --coordinator=127.0.0.1:"$port" --clients="$n" \
    --coordinator_pid="$cpid" --clients_csv="$dir/run/clients.csv" \
    >"$out/load.txt" 2>"$dir/load.err" || fail "load run failed"
  grep -v '^metric rpc_' "$out/load.txt" >&2
  [ "$(metric "$out/load.txt" lost_updates)" = 0 ] || fail "updates lost"
  [ "$(metric "$out/load.txt" updates_accepted)" = $((n * rounds)) ] ||
    fail "not every client's update was accepted every round"
}

# Limits: honest clients' round times alone, then beside a registration
# flood, slow-loris uploads and oversize/unannounced uploads.
part_limits() {
  local n=${LIMITS_CLIENTS:-50} loris=5 rounds=5 run dir
  echo "reliability.sh: limits, $n honest clients, $rounds rounds, with and without attackers" >&2
  for run in calm attacked; do
    dir=$out/limits_$run
    rm -rf "$dir" && mkdir -p "$dir"
    # Every device is invited; a round closes at n updates, so the $loris
    # stalled devices (and in the calm run, the $loris slowest honest
    # ones) are not waited for. Streams idle for 2 s are cancelled, so that
    # a stalled upload is seen cancelled within even a short run.
    coordinator "$dir" 0 --insecure --rounds="$rounds" \
      --min_devices=$((n + loris)) --selection=deadline \
      --clients_per_round="$n" --overcommit=2 --stream_idle_timeout_s=2 \
      --max_registrations_per_s=100 --registration_burst=200
    local flags=()
    [ "$run" = attacked ] && flags=(--slowloris="$loris" --flood_per_s=1000 --probes)
    "$bin/fedge-bench-load" --coordinator=127.0.0.1:"$port" \
      --clients=$((n + loris)) --coordinator_pid="$cpid" \
      --clients_csv="$dir/run/clients.csv" --give_up_s=10 "${flags[@]}" \
      >"$out/limits_$run.txt" 2>"$dir/load.err" || fail "limits $run failed"
    grep -E 'accepted in|mean_round_s|slowloris|probe|flood|peak_rss' \
      "$out/limits_$run.txt" >&2
    [ "$(metric "$out/limits_$run.txt" lost_updates)" = 0 ] || fail "updates lost"
  done
  local t=$out/limits_attacked.txt
  [ "$(metric "$t" slowloris_streams_CANCELLED)" -gt 0 ] || fail "no slow-loris stream was cancelled"
  awk -v h="$(metric "$t" slowloris_max_held_s)" 'BEGIN { exit !(h < 2 + 3) }' ||
    fail "a slow-loris stream was held past the idle timeout"
  [ "$(metric "$t" probe_oversize_upload_code)" = RESOURCE_EXHAUSTED ] || fail "oversize upload accepted"
  [ "$(metric "$t" probe_unannounced_upload_code)" = NOT_FOUND ] || fail "unannounced upload accepted"
  [ "$(metric "$t" flood_refused)" -gt 0 ] || fail "the flood was never refused"
}

# Identity and replay: mutual TLS, client 0 replays and impersonates.
part_identity() {
  local n=4 dir=$out/identity ids=()
  rm -rf "$dir" && mkdir -p "$dir"
  for i in $(seq 0 $((n - 1))); do ids+=("load-$i"); done
  echo "reliability.sh: identity, mutual TLS, $n clients" >&2
  "$here/deploy/certs/make_dev_certs.sh" "$dir/certs" "${ids[@]}" >/dev/null
  coordinator "$dir" 0 --rounds=3 --min_devices="$n" \
    --tls_cert="$dir/certs/server.pem" --tls_key="$dir/certs/server.key" \
    --tls_ca="$dir/certs/ca.pem" --mtls
  "$bin/fedge-bench-load" --coordinator=127.0.0.1:"$port" --clients="$n" \
    --tls_dir="$dir/certs" --attacks --coordinator_pid="$cpid" \
    --clients_csv="$dir/run/clients.csv" \
    >"$out/identity.txt" 2>"$dir/load.err" || fail "identity run failed"
  grep -E 'attack|lost_updates|accepted in' "$out/identity.txt" >&2
  local t=$out/identity.txt a
  for a in steal_task forge_submission hijack_upload; do
    [ "$(metric "$t" "attack_${a}_code")" = PERMISSION_DENIED ] || fail "$a not denied"
  done
  case "$(metric "$t" attack_replay_submission_code)" in
    FAILED_PRECONDITION|NOT_FOUND) ;;
    *) fail "replayed submission not rejected" ;;
  esac
  [ "$(metric "$t" lost_updates)" = 0 ] || fail "updates lost"
  [ "$(metric "$t" updates_accepted)" = $((n * 3)) ] || fail "victim's updates lost"
}

# Faults: FAULT_CLIENTS client processes; a reference run, then a run with
# one client in ten killed (-9) and restarted every round, the links of
# half the clients cut (their shaping proxies killed and restarted), and
# the coordinator killed during a round's aggregation and, after resuming,
# halfway through writing a checkpoint. Every round must commit once with
# the same accepted updates, and the final models must agree.
part_fault() {
  local n=${FAULT_CLIENTS:-10} rounds=${FAULT_ROUNDS:-6} run
  local common=(--insecure --rounds="$rounds" --min_devices="$n" --bandit=fixed
                --fixed_ratio=0.2 --fixed_rank=4 --deadline_s=120
                --heartbeat_timeout_s=60)
  for run in reference faulty; do
    local dir=$out/fault_$run clients=() proxies=() proxy_ports=() i
    rm -rf "$dir" && mkdir -p "$dir"
    echo "reliability.sh: fault, $run run, $n clients, $rounds rounds" >&2
    if [ "$run" = faulty ]; then
      FEDGE_KILL_POINT=aggregate@2 coordinator "$dir" 0 "${common[@]}"
    else
      coordinator "$dir" 0 "${common[@]}"
    fi
    # client I: straight to the coordinator, or (odd I, faulty run) through
    # a proxy shaped as a poor LTE link (1 Mbit/s up, 2 down, so that
    # transfers are in flight when it is killed), killed now and then.
    # The restarted proxy keeps its port, as a link that comes back.
    start_proxy() {
      local skip
      skip=$(lines "$dir/proxy-$1.log")
      "$bin/fedge-link" --target=127.0.0.1:"$port" --link=lte:1/2/40 \
        --listen_port="${proxy_ports[$1]:-0}" >>"$dir/proxy-$1.log" 2>&1 &
      proxies[$1]=$!
      pids+=("${proxies[$1]}")
      proxy_ports[$1]=$(wait_line "$dir/proxy-$1.log" "$skip" 'listening on' |
                        sed -nE 's/.*listening on [0-9.]+:([0-9]+).*/\1/p')
    }
    start_client() {
      local target=127.0.0.1:$port
      if [ "$run" = faulty ] && [ $(($1 % 2)) = 1 ]; then
        target=127.0.0.1:${proxy_ports[$1]}
      fi
      "$bin/fedge-bench-load" --coordinator="$target" --clients=1 \
        --first_index="$1" --timeout_s=600 >>"$dir/client-$1.txt" \
        2>>"$dir/client-$1.err" &
      clients[$1]=$!
      pids+=("${clients[$1]}")
    }
    for i in $(seq 0 $((n - 1))); do
      [ "$run" = faulty ] && [ $((i % 2)) = 1 ] && start_proxy "$i"
      start_client "$i"
    done
    committed() { awk -F, 'NR > 1 && $3 == 1' "$dir/run/rounds.csv" 2>/dev/null | wc -l; }
    local seen=0 restarts=0 kills=0 cuts=0 temps=0 deadline=$((SECONDS + 900))
    while [ $SECONDS -lt $deadline ]; do
      if ! kill -0 "$cpid" 2>/dev/null; then
        wait "$cpid" 2>/dev/null && break  # Finished (exit 0).
        restarts=$((restarts + 1))
        # What the kill left: a checkpoint write's temporary file, if any.
        temps=$((temps + $(find "$dir/run/checkpoint" -name '*.tmp.*' | wc -l)))
        echo "reliability.sh: coordinator died (restart $restarts) after $(committed) rounds" >&2
        # The first resume dies halfway through its second checkpoint write.
        if [ $restarts = 1 ]; then
          FEDGE_KILL_POINT=atomic_write@2 coordinator "$dir" "$port" "${common[@]}" --resume
        else
          coordinator "$dir" "$port" "${common[@]}" --resume
        fi
        continue
      fi
      if [ "$run" = faulty ] && [ "$(committed)" -gt "$seen" ] &&
         [ "$(committed)" -lt "$rounds" ]; then
        seen=$(committed)
        # A new round is open: kill one client in ten and one proxy.
        sleep 0.$((RANDOM % 5))
        for i in $(shuf -i 0-$((n - 1)) -n $(((n + 9) / 10))); do
          kill -9 "${clients[$i]}" 2>/dev/null || true
          kills=$((kills + 1))
          start_client "$i"
        done
        i=$(( (RANDOM % (n / 2)) * 2 + 1 ))
        kill -9 "${proxies[$i]}" 2>/dev/null || true
        cuts=$((cuts + 1))
        start_proxy "$i"
      fi
      sleep 0.2
    done
    kill -0 "$cpid" 2>/dev/null && fail "$run run did not finish"
    for i in $(seq 0 $((n - 1))); do wait "${clients[$i]}" 2>/dev/null || true; done
    for p in "${proxies[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    {
      echo "metric coordinator_restarts $restarts"
      echo "metric client_kills $kills"
      echo "metric link_cuts $cuts"
      echo "metric temp_files_left_by_kills $temps"
      awk '$2 == "transfer_resumes" { s += $3 } END { print "metric transfer_resumes", s + 0 }' \
        "$dir"/client-*.txt
      ls "$dir/run/checkpoint" | grep -c '\.tmp\.' | sed 's/^/metric stale_temp_files /' || true
    } >"$out/fault_$run.txt"
  done
  # The same accepted (round, device) pairs, each round committed once.
  accepted() { awk -F, 'NR > 1 && $5 == "accepted" { print $1, $3 }' "$1" | sort; }
  local ref=$out/fault_reference/run fau=$out/fault_faulty/run
  local lost dup
  lost=$(comm -23 <(accepted "$ref/clients.csv" | uniq) <(accepted "$fau/clients.csv" | uniq) | wc -l)
  dup=$(accepted "$fau/clients.csv" | uniq -d | wc -l)
  local committed_rounds
  committed_rounds=$(awk -F, 'NR > 1 && $3 == 1 { print $1 }' "$fau/rounds.csv" | sort -u | wc -l)
  "$bin/fedge-bench-load" --compare="$ref/checkpoint/coordinator.safetensors,$fau/checkpoint/coordinator.safetensors" \
    >>"$out/fault_faulty.txt"
  {
    echo "metric accepted_missing $lost"
    echo "metric accepted_twice $dup"
    echo "metric lost_rounds $((rounds - committed_rounds))"
  } >>"$out/fault_faulty.txt"
  cat "$out/fault_faulty.txt" >&2
  [ "$lost" = 0 ] && [ "$dup" = 0 ] || fail "accepted updates differ from the reference run"
  [ $((rounds - committed_rounds)) = 0 ] || fail "rounds lost"
  [ "$(metric "$out/fault_faulty.txt" coordinator_restarts)" = 2 ] || fail "the kill points did not fire"
  [ "$(metric "$out/fault_faulty.txt" stale_temp_files)" = 0 ] || fail "temporary files left behind"
  [ "$(metric "$out/fault_faulty.txt" max_abs_diff)" = 0 ] ||
    echo "reliability.sh: note: final models differ by $(metric "$out/fault_faulty.txt" max_abs_diff)" >&2
}

for part in "${parts[@]}"; do
  case "$part" in
    fuzz|load|limits|identity|fault) "part_$part" ;;
    *) fail "unknown part '$part' (fuzz, load, limits, identity, fault)" ;;
  esac
done
