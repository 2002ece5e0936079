#!/usr/bin/env bash
# kill -9 of a real fedge-coordinator mid-federation, then --resume: every
# round is committed exactly once, each with both devices' updates, and the
# clients (which retry with back-off) finish without being restarted.
#
# With `text`, the same on a tiny text task (docs/tasks.md): a SentencePiece
# tokenizer and decoder pretrained on two of six fortune files, each client
# holding other files.
#
# With `dense`, the image task in --mode=dense (FedAvg of every weight):
# the base served from the staging directory, and LibTorch's allocator
# replaced by the coordinator's block cache (model/block_cache.h).
#
# Usage: kill_resume_test.sh BIN_DIR [text|dense]   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'kill -9 ${pids[*]:-} 2>/dev/null || true; rm -rf "$work"' EXIT
pids=()

if [ "${2:-}" = text ]; then
  mkdir -p "$work/corpus"
  for f in art computers food law science work; do
    head -c 30000 "/usr/share/games/fortunes/$f" | sed '$d' >"$work/corpus/$f"
  done
  cat >"$work/task.json" <<JSON
{"name": "fortunes-tiny", "objective": "causal_lm", "base": "$work/base",
 "tokenizer": {"type": "sentencepiece"}, "sequence": {"length": 32},
 "data": {"corpus": "$work/corpus", "record_separator": "%"},
 "evaluation": {"examples": 32},
 "simulation": {"public_fraction": 0.34, "public_by": "file",
                "partition": "by_file"},
 "pretrain": {"vocab_size": 400, "hidden_size": 32, "layers": 2, "heads": 2,
              "kv_heads": 1, "intermediate_size": 64, "epochs": 1}}
JSON
  task=(--task="$work/task.json")
  client_task=("${task[@]}")
  "$bin/fedge-pretrain" "${task[@]}" --threads=1 --progress_every=100000 \
    >"$work/pretrain.log"
else
  task=(--task_set=base="$work/base")
  client_task=()
  "$bin/fedge-pretrain" --out="$work/base" --task_set=simulation.public_fraction=0.02 --epochs=1 \
    --dim=32 --heads=4 --mlp_hidden=32 --layers=2 --threads=1 \
    --progress_every=1000 >"$work/pretrain.log"
fi

mode=()
[ "${2:-}" = dense ] && mode=(--mode=dense)
port=$((20000 + RANDOM % 20000))
coordinator() {
  "$bin/fedge-coordinator" --insecure --listen=127.0.0.1:$port \
    "${task[@]}" ${mode[@]+"${mode[@]}"} --run_dir="$work/run" --rounds=4 \
    --min_devices=2 --max_steps=5 --eval_examples=300 --retry_after_ms=100 \
    --metrics_listen= --threads=1 --quiet "$@" >>"$work/coordinator.log" 2>&1 &
  c=$!
}
committed() {  # rounds with a committed row in rounds.csv
  awk -F, 'NR > 1 && $3 == 1 { print $1 }' "$work/run/rounds.csv" 2>/dev/null |
    wc -l
}

coordinator
pids+=("$c")
for i in 0 1; do
  "$bin/fedge-client" --insecure --coordinator=127.0.0.1:$port \
    --device_id=dev-$i --shard=$i/2 --threads=1 --quiet --benchmark=false \
    ${client_task[@]+"${client_task[@]}"} \
    --cache_dir="$work/cache-$i" --give_up_after_s=120 \
    >"$work/client-$i.log" 2>&1 &
  pids+=($!)
done

for _ in $(seq 600); do
  [ "$(committed)" -ge 2 ] && break
  sleep 0.1
done
[ "$(committed)" -ge 2 ] || { echo "round 2 never committed"; cat "$work/coordinator.log"; exit 1; }
kill -9 "$c"
wait "$c" 2>/dev/null || true
echo "killed the coordinator after round $(committed)"

coordinator --resume
pids+=("$c")
wait "$c" || { echo "resumed coordinator failed"; cat "$work/coordinator.log"; exit 1; }
for p in "${pids[@]:1:2}"; do
  wait "$p" || { echo "a client failed"; cat "$work"/client-*.log; exit 1; }
done

# No round committed twice. (rounds.csv rows come from the evaluator after
# the checkpoint, so a kill between the two can lose a round's row; the
# clients.csv rows below are written before the checkpoint.)
dups=$(awk -F, 'NR > 1 && $3 == 1 { print $1 }' "$work/run/rounds.csv" | sort | uniq -d)
if [ -n "$dups" ]; then
  echo "rounds committed twice: $dups"; cat "$work/run/rounds.csv"; exit 1
fi
# ...with each device's update accepted exactly once per round.
rows=$(awk -F, 'NR > 1 && $5 == "accepted" { print $1, $3 }' "$work/run/clients.csv" | sort | uniq -c | awk '{ print $1 }' | sort -u)
count=$(awk -F, 'NR > 1 && $5 == "accepted"' "$work/run/clients.csv" | wc -l)
if [ "$rows" != "1" ] || [ "$count" != "8" ]; then
  echo "accepted rows per (round, device) not exactly one, or not 8 in all:"
  cat "$work/run/clients.csv"; exit 1
fi
echo "ok: 8 accepted updates, one per device and round, no round twice, after kill -9 + --resume"
