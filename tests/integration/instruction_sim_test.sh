#!/usr/bin/env bash
# The instruction task end to end, small (docs/tasks.md "Instruction
# records"): WordNet definitions as JSONL records (scripts/wordnet-
# instructions, 12 per category), a tiny tokenizer and decoder pretrained on
# whole categories, then
# 1. fedge-sim --task: 3 devices, each holding other categories whole
#    (by_category), 3 rounds of LoRA over real gRPC; the held-out bits per
#    byte of the responses fall below the base's and exact match is recorded
#    in rounds.csv;
# 2. the coordinator's final model (merged, pruned, with its tokenizer)
#    answers an instruction and scores the records with fedge-generate;
# 3. a device's own JSONL file with a malformed line is refused, naming the
#    file and line, before any training.
#
# Usage: instruction_sim_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
"$src/scripts/wordnet-instructions" "$work/data.jsonl" --per_category=12 \
  --max_chars=40
cat >"$work/task.json" <<JSON
{
  "name": "wordnet-tiny",
  "objective": "instruction_tuning",
  "base": "$work/base",
  "tokenizer": {"type": "sentencepiece"},
  "sequence": {"length": 96},
  "data": {"format": "jsonl", "corpus": "$work/data.jsonl"},
  "evaluation": {"metric": "bits_per_byte", "examples": 64, "fraction": 0.15},
  "simulation": {"public_fraction": 0.3, "public_by": "category",
                 "partition": "by_category", "seed": 1},
  "pretrain": {"vocab_size": 400, "hidden_size": 32, "layers": 2, "heads": 2,
               "kv_heads": 1, "intermediate_size": 64, "epochs": 3,
               "batch_size": 16, "learning_rate": 0.005}
}
JSON
"$bin/fedge-pretrain" --task="$work/task.json" --threads=1 \
  --progress_every=1000 >"$work/pretrain.log"

lora="--lr=1e-2 --batch_size=16 --lora_targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
"$bin/fedge-sim" --task="$work/task.json" --out="$work/sim" --clients=3 \
  --rounds=3 --local_steps=20 --cache_dir="$work/cache" \
  --coordinator_flags="$lora" | tee "$work/sim.log"
python3 - "$work" <<'PY'
import csv, glob, json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/sim/summary.json"))
assert summary["metric"] == "test_bits_per_byte", summary["metric"]
base, s = summary["base"], summary["strategies"][0]
print(f"instruction: base {base:.4f} bits per byte, final {s['final']:.4f}")
assert s["rounds"] == 3, s
assert 0 < s["final"] < base, (base, s["final"])
rows = [r for f in glob.glob(f"{work}/sim/*/rounds.csv")
        for r in csv.DictReader(open(f)) if r["test_bits_per_byte"]]
assert rows, "no evaluated round"
for r in rows:
    assert 0 <= float(r["test_exact_match"]) <= 1, r
PY
grep -q "exact match" "$work/sim.log"

# The federation's result: a merged, pruned checkpoint with the tokenizer,
# which fedge-generate loads to answer and to score.
model=$(ls -d "$work"/sim/*/model)
test -f "$model/config.json" -a -f "$model/model.safetensors" -a -f "$model/tokenizer.model"
"$bin/fedge-generate" --task="$work/task.json" --model="$model" --threads=1 \
  --instruction="Define the word." --context="harbor" --max_new_tokens=16 \
  | tee "$work/generate.log"
grep -q "### Response:" "$work/generate.log"
"$bin/fedge-generate" --task="$work/task.json" --model="$model" --threads=1 \
  --score="$work/data.jsonl" | tee "$work/score.log"
grep -q "540 examples.*exact match" "$work/score.log"
# The global change as a PEFT adapter for the base (FedSpine's global
# model stays unpruned without --target_sparsity), at the largest rank.
python3 - "$(ls -d "$work"/sim/*/adapter)" <<'PY'
import json, struct, sys
adapter = sys.argv[1]
config = json.load(open(f"{adapter}/adapter_config.json"))
assert config["peft_type"] == "LORA" and config["r"] == 16, config
assert config["task_type"] == "CAUSAL_LM", config
assert "down_proj" in config["target_modules"], config
with open(f"{adapter}/adapter_model.safetensors", "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
a = [k for k in header if k.endswith("lora_A.weight")]
assert len(a) == 7 * 2 and all(header[k]["shape"][0] == 16 for k in a), a
print(f"adapter: {len(a)} LoRA pairs at rank 16")
PY
if "$bin/fedge-generate" --task="$work/task.json" --prompt=x --score=y 2>/dev/null; then
  echo "fedge-generate accepted two modes"; exit 1
fi

# A device's own file with a broken line: refused by file and line.
{ head -3 "$work/data.jsonl"; echo '{"instruction": "Define the word."}'; } \
  >"$work/mine.jsonl"
if "$bin/fedge-client" --insecure --coordinator=127.0.0.1:1 \
  --device_id=board-1 --task="$work/task.json" --data="$work/mine.jsonl" \
  --cache_dir="$work/client-cache" --benchmark=false --threads=1 --quiet \
  2>"$work/client.err"; then
  echo "a malformed JSONL line was accepted"; exit 1
fi
grep -q 'mine.jsonl:4: field "response" is missing or blank' "$work/client.err" ||
  { cat "$work/client.err"; exit 1; }
echo "instruction_sim_test: OK"
