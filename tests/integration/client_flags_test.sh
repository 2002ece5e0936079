#!/usr/bin/env bash
# fedge-client refuses bad flags and unreadable data with a message that
# names the problem, and exits 1 (never a crash or a hang).
#
# Usage: client_flags_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -uo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect "MESSAGE PART" flags...: exit status 1 and stderr containing it.
expect() {
  local want=$1
  shift
  local out rc
  out=$(timeout 60 "$bin/fedge-client" "$@" 2>&1 >/dev/null)
  rc=$?
  if [[ $rc -ne 1 || $out != *"$want"* ]]; then
    echo "FAIL: fedge-client $* -> rc $rc, stderr: $out (wanted: $want)"
    failures=$((failures + 1))
  else
    echo "ok: $* -> ${out##*: }"
  fi
}

# A Fashion-MNIST directory whose training images are cut short.
mkdir -p "$work/cut"
src=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte; do
  if [[ -f $src/$f.gz ]]; then zcat "$src/$f.gz" >"$work/cut/$f"; else cp "$src/$f" "$work/cut/$f"; fi
done
truncate -s 100000 "$work/cut/train-images-idx3-ubyte"

# --help lists the binary's own flags (it once listed none) and
# --version names the release.
help=$(timeout 60 "$bin/fedge-client" --help 2>&1)
for flag in --device_id --coordinator --task --memory_budget_mb; do
  if [[ $help != *"$flag"* ]]; then
    echo "FAIL: fedge-client --help does not list $flag"
    failures=$((failures + 1))
  fi
done
version=$(timeout 60 "$bin/fedge-client" --version 2>&1)
if [[ $version != "fedge-client fedge "[0-9]* ]]; then
  echo "FAIL: fedge-client --version printed: $version"
  failures=$((failures + 1))
fi

expect "--device_id is required"
expect "Unknown command line flag 'bogus'" --device_id=a --bogus=1
expect "unexpected argument 'extra'" --device_id=a --insecure extra
expect "--link: 'sat'" --device_id=a --link=sat
expect "--shard: '3' is not I/N" --device_id=a --shard=3
expect "shard 5/4" --device_id=a --shard=5/4
expect "--progress_format: 'xml'" --device_id=a --insecure --progress_format=xml
expect "--memory_budget_mb" --device_id=a --insecure --memory_budget_mb=-3
expect "--release_memory_after_s must be >= 0" --device_id=a --insecure --release_memory_after_s=-1
expect "/nonexistent/train-images" --device_id=a --insecure --data=/nonexistent
expect "/nonexistent/train-images" --device_id=a --insecure --task_set=data.corpus=/nonexistent
expect "header promises 60000 images" --device_id=a --insecure --data="$work/cut"
expect "--task_set: 'alpha' is not FIELD=VALUE" --device_id=a --insecure --task_set=alpha
expect 'field "apha" is not supported' --device_id=a --insecure --task_set=simulation.apha=1
expect "TLS is the default" --device_id=a
# Task files and a device's own text (docs/tasks.md).
expect "task file $work/none.json" --device_id=a --insecure --task="$work/none.json"
printf '{"name": "t", "objective": "causal_lm", "base": "b",\n "sequence": {"lenght": 8}}' >"$work/typo.json"
expect 'field "lenght" is not supported' --device_id=a --insecure --task="$work/typo.json"
printf '{"name": "t", "objective": "causal_lm", "base": "b",\n "sequence": {"length": 8}}' >"$work/bytes.json"
printf 'good text\n\nbad \xff text\n' >"$work/bad.txt"
expect "$work/bad.txt:3: not valid UTF-8" --device_id=a --insecure --task="$work/bytes.json" --data="$work/bad.txt"
printf 'hi\n' >"$work/short.txt"
expect "fewer than one window of 9" --device_id=a --insecure --task="$work/bytes.json" --data="$work/short.txt"
expect "does not exist" --device_id=a --insecure --task="$work/bytes.json" --data="$work/absent.txt"
expect "$work/absent-ca.pem" --device_id=a --tls_ca="$work/absent-ca.pem"
# The systemd unit's configuration file (deploy/fedge-client.service.in).
expect "Can't open flagfile $work/none.flags" --flagfile="$work/none.flags"
# Nothing listens there: give up after the deadline with a clear status.
expect "coordinator unreachable" --device_id=a --insecure \
  --coordinator=127.0.0.1:1 --give_up_after_s=2 --benchmark=false --quiet

# SIGTERM while retrying with back-off: a clean exit (0) within seconds.
# Wait (up to 60 s: startup is slow under sanitizers) until it is retrying.
"$bin/fedge-client" --device_id=a --insecure --coordinator=127.0.0.1:1 \
  --give_up_after_s=600 --benchmark=false --quiet 2>"$work/backoff.log" &
pid=$!
for _ in $(seq 600); do
  grep -q "retrying in" "$work/backoff.log" && break
  sleep 0.1
done
start=$(date +%s)
kill -TERM $pid
wait $pid
rc=$?
took=$(($(date +%s) - start))
if [[ $rc -ne 0 || $took -gt 3 ]]; then
  echo "FAIL: SIGTERM during back-off: rc $rc after $took s"
  failures=$((failures + 1))
else
  echo "ok: SIGTERM during back-off -> exit 0 in $took s"
fi

if [[ $failures -ne 0 ]]; then
  echo "$failures case(s) failed"
  exit 1
fi
