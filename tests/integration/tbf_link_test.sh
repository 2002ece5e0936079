#!/usr/bin/env bash
# fedge-link (the user-space shaping proxy) against the kernel: for each
# tested link profile, iperf3 throughput in both directions through
# fedge-link on loopback and through a veth pair in a network namespace
# shaped by tbf (scripts/netns_link) must agree within 10%. tbf adds no
# delay (netem is not available), so fedge-link runs with --no_delay.
#
# Needs root (network namespaces), iproute2 and iperf3; exits 77 (ctest:
# skipped) without root or namespaces.
# Usage: tbf_link_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -uo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
ns="fedge-tbf-$$"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null
  "$here/scripts/netns_link" down "$ns"
}
trap cleanup EXIT

if [[ $(id -u) -ne 0 ]] || ! ip netns add "$ns-probe" 2>/dev/null; then
  echo "skipped: needs root and network namespaces"
  exit 77
fi
ip netns del "$ns-probe"
command -v iperf3 >/dev/null ||
  { echo "FAIL: iperf3 missing: run scripts/setup"; exit 1; }

# rate RESULT_JSON: the receiver's throughput in Mbit/s.
rate() {
  python3 -c 'import json, sys
print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))'
}
# measure HOST PORT DIRECTION [ip netns exec NS]: DIRECTION up or down.
measure() {
  local host=$1 port=$2 dir=$3
  shift 3
  local reverse=""
  [[ $dir == down ]] && reverse="-R"
  "$@" iperf3 -c "$host" -p "$port" -t 3 -O 1 $reverse -J | rate
}

failures=0
n=$((RANDOM % 200 + 20))
port=$((20000 + RANDOM % 20000))
printf '%-8s %-5s %10s %10s %10s %8s\n' profile dir "nominal" kernel fedge-link ratio
for profile in 5g-sa:28:100 lte:10:30; do
  IFS=: read -r name up down <<<"$profile"
  "$here/scripts/netns_link" up "$ns" "$up" "$down" "$n" >/dev/null || exit 1
  iperf3 -s -B "10.77.$n.1" -p "$port" >/dev/null 2>&1 &
  pids+=($!)
  iperf3 -s -B 127.0.0.1 -p $((port + 1)) >/dev/null 2>&1 &
  pids+=($!)
  "$bin/fedge-link" --target=127.0.0.1:$((port + 1)) --link="$name" \
    --no_delay --listen_port=$((port + 2)) >/dev/null &
  pids+=($!)
  sleep 0.5
  for dir in up down; do
    nominal=$up
    [[ $dir == down ]] && nominal=$down
    kernel=$(measure "10.77.$n.1" "$port" "$dir" ip netns exec "$ns")
    proxy=$(measure 127.0.0.1 $((port + 2)) "$dir")
    ratio=$(awk -v p="$proxy" -v k="$kernel" 'BEGIN { printf "%.3f", p / k }')
    printf '%-8s %-5s %10s %10s %10s %8s\n' "$name" "$dir" "$nominal" "$kernel" "$proxy" "$ratio"
    if ! awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9 && r <= 1.1) }'; then
      echo "FAIL: $name $dir: fedge-link $proxy Mbit/s vs kernel tbf $kernel Mbit/s"
      failures=$((failures + 1))
    fi
  done
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  pids=()
  "$here/scripts/netns_link" down "$ns"
  port=$((port + 3))
done
exit $((failures > 0))
