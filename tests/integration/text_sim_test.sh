#!/usr/bin/env bash
# The text task end to end, small (docs/tasks.md): six topic files of
# Debian's fortune files, a tiny SentencePiece tokenizer and LLaMA-style
# decoder pretrained on two of them (fedge-pretrain --task), then
# 1. fedge-sim --task: 3 devices, each holding other topics' files whole, 3
#    rounds of LoRA on all seven projections over real gRPC; the held-out
#    bits per byte fall below the base's and the report plots them;
# 2. the production path: a fedge-coordinator and a fedge-client that reads
#    its own text file (--data), one round; the coordinator records held-out
#    bits per byte.
#
# Usage: text_sim_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
src=/usr/share/games/fortunes
mkdir -p "$work/corpus"
for f in art computers food law science work; do
  head -c 40000 "$src/$f" | sed '$d' >"$work/corpus/$f"
done
cat >"$work/task.json" <<JSON
{
  "name": "fortunes-tiny",
  "objective": "causal_lm",
  "base": "$work/base",
  "tokenizer": {"type": "sentencepiece"},
  "sequence": {"length": 32},
  "data": {"corpus": "$work/corpus", "record_separator": "%"},
  "evaluation": {"examples": 64, "fraction": 0.1},
  "simulation": {"public_fraction": 0.34, "public_by": "file",
                 "partition": "by_file", "seed": 1},
  "pretrain": {"vocab_size": 400, "hidden_size": 32, "layers": 2, "heads": 2,
               "kv_heads": 1, "intermediate_size": 64, "epochs": 2,
               "batch_size": 16, "learning_rate": 0.005}
}
JSON
"$bin/fedge-pretrain" --task="$work/task.json" --threads=1 \
  --progress_every=1000 >"$work/pretrain.log"
test -f "$work/base/tokenizer.model"

lora="--lr=1e-2 --batch_size=16 --lora_targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
"$bin/fedge-sim" --task="$work/task.json" --out="$work/sim" --clients=3 \
  --rounds=3 --local_steps=20 --cache_dir="$work/cache" \
  --coordinator_flags="$lora" | tee "$work/sim.log"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/sim/summary.json"))
assert summary["metric"] == "test_bits_per_byte", summary["metric"]
base, s = summary["base"], summary["strategies"][0]
print(f"text: base {base:.4f} bits per byte, final {s['final']:.4f}")
assert s["rounds"] == 3, s
assert 0 < s["final"] < base, (base, s["final"])
html = open(f"{work}/sim/report.html").read()
assert "bits per byte versus wall time" in html, "plot missing"
PY
grep -q "bits/byte" "$work/sim.log"

# The production path: a device's own text file.
"$bin/fedge-coordinator" --insecure --listen=127.0.0.1:0 --task="$work/task.json" \
  --run_dir="$work/run" --rounds=1 --min_devices=1 --max_steps=5 \
  --metrics_listen= --threads=1 $lora >"$work/coordinator.log" 2>&1 &
for _ in $(seq 300); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/coordinator.log")
  [ -n "$port" ] && break
  sleep 0.2
done
[ -n "$port" ] || { cat "$work/coordinator.log"; exit 1; }
"$bin/fedge-client" --insecure --coordinator="127.0.0.1:$port" \
  --device_id=board-1 --task="$work/task.json" --data="$work/corpus/food" \
  --cache_dir="$work/client-cache" --benchmark=false --threads=1 --quiet
wait
python3 - "$work/run/rounds.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert rows and rows[-1]["committed"] == "1", rows
assert float(rows[-1]["test_bits_per_byte"]) > 0, rows
print("production path: round committed, held-out", rows[-1]["test_bits_per_byte"], "bits per byte")
PY
