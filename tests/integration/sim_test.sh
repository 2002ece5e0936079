#!/usr/bin/env bash
# fedge-sim end to end, small: a tiny base model, 4 devices (one of each
# profile, mixed links), 3 rounds over real gRPC. fedge-sim itself fails
# (exit 2) if any record is inconsistent: phases that do not fit a device's
# elapsed time, elapsed + wait not matching the round, bytes that differ
# from what the device counted. Here: it succeeds, the global accuracy rose
# above the base model's, and the report has its plots. If chromium is
# installed, the report is rendered headless to a screenshot.
# Then the same on the virtual clock with 300 devices, 6 invited per round:
# accuracy rises, every round invites 6, and each device's transfer times
# are exactly RTT + bytes / its link's rate (transport/link_profile.cc).
# A rerun of fedge-vclock with the first run's compute-cost table charges
# the same work the same.
# Then secure aggregation on the virtual clock against the same run without.
# Last, time dilation (the fallback without cgroups): a Raspberry Pi 4
# (speed 0.16) reports several times the laptop's training time.
#
# Usage: sim_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin/fedge-pretrain" --out="$work/base" --task_set=simulation.public_fraction=0.02 --epochs=1 \
  --dim=32 --heads=4 --mlp_hidden=32 --layers=2 --threads=1 \
  --progress_every=1000 >"$work/pretrain.log"
"$bin/fedge-sim" --task_set=base="$work/base" --out="$work/sim" --clients=4 \
  --rounds=3 --local_steps=20 --eval_examples=1000 --cache_dir="$work/cache" \
  --coordinator_flags="--lr=5e-3" | tee "$work/sim.log"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/sim/summary.json"))
base = summary["base"]  # On the same evaluation images.
s = summary["strategies"][0]
print(f"base accuracy {base:.4f}, final {s['final']:.4f}")
assert s["rounds"] == 3, s
assert s["final"] > base + 0.02, (base, s["final"])
assert set(s["links"]) == {"ethernet", "wifi", "5g-sa"}, s["links"]
html = open(f"{work}/sim/report.html").read()
assert html.count("<svg") >= 5 and 'class="metric"' in html, "plots missing"
PY
grep -q "round 3/3" "$work/sim.log"

"$bin/fedge-sim" --clock=virtual --task_set=base="$work/base" --out="$work/vsim" \
  --clients=300 --clients_per_round=6 --rounds=4 --local_steps=20 \
  --eval_examples=1000 --coordinator_flags="--lr=5e-3" | tee "$work/vsim.log"
python3 - "$work" <<'PY'
import csv, json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/vsim/summary.json"))
assert "VIRTUAL CLOCK" in summary["notes"][0], summary["notes"]
base = summary["base"]
s = summary["strategies"][0]
print(f"virtual: base accuracy {base:.4f}, final {s['final']:.4f}")
assert s["rounds"] == 4, s
assert s["final"] > base + 0.02, (base, s["final"])
rounds = list(csv.DictReader(open(f"{work}/vsim/fedspine/rounds.csv")))
assert [r["invited"] for r in rounds] == ["6"] * 4, rounds
# Mbit/s up, down and RTT seconds of the built-in links.
links = {"ethernet": (940, 940, 0.0005), "wifi": (500, 500, 0.004),
         "5g-sa": (28, 100, 0.015)}
rows = list(csv.DictReader(open(f"{work}/vsim/fedspine/clients.csv")))
devices = set()
for r in rows:
    up, down, rtt = links[r["link"]]
    devices.add(r["device"])
    for phase, rate, size in (("download_s", down, "bytes_down"),
                              ("upload_s", up, "bytes_up")):
        want = rtt + int(r[size]) * 8 / (rate * 1e6)
        assert abs(float(r[phase]) - want) <= 1e-4 * want + 1e-6, (r, phase)
assert len(devices) > 6, devices  # Different samples each round.
PY
# The virtual clock writes the federation's result as the coordinator does.
test -f "$work/vsim/fedspine/model/config.json"

# The compute-cost table: the first run measures this machine's seconds
# per training FLOP; a rerun with the same seeds and the same table
# measures nothing and charges every device exactly what it was charged
# the first time, where CPU time alone varies by several percent.
for run in 1 2; do
  "$bin/fedge-vclock" --quiet --task_set=base="$work/base" --run_dir="$work/c$run" \
    --clients=4 --devices=mix --rounds=2 --max_steps=10 --eval_examples=200 \
    --lr=5e-3 --compute_costs="$work/costs.tsv" >/dev/null
  wc -l <"$work/costs.tsv" >"$work/costs$run.lines"
done
python3 - "$work" <<'PY'
import csv, sys
work = sys.argv[1]
lines = [int(open(f"{work}/costs{r}.lines").read()) for r in (1, 2)]
assert lines == [1, 1], lines  # One rate (LoRA mode), measured once.
def train(run):
    return {(r["round"], r["device"]): float(r["train_s"])
            for r in csv.DictReader(open(f"{work}/c{run}/clients.csv"))}
first, second = train(1), train(2)
assert first.keys() == second.keys() and len(first) == 8, (first, second)
worst = max(abs(first[k] - second[k]) / first[k] for k in first)
print(f"compute-cost table: rerun charged within {worst:.1e}")
assert worst < 1e-5, (first, second)
PY

# Secure aggregation on the virtual clock (docs/privacy.md): the same
# federation with and without it. Every round commits and records its
# exchange, and the masked uploads are 4 bytes a word of the full layout.
# The models are not equal: under secure aggregation every device weighs
# the same, where the plain mean weighs devices by their examples
# (secure_sum_test checks equality at equal weights); a sum that did not
# unmask would be noise, so the held-out loss must stay within 5%.
for mode in plain secure; do
  extra=()
  [[ $mode == secure ]] && extra=(--secure_aggregation --secure_clip_norm=100)
  "$bin/fedge-vclock" --quiet --task_set=base="$work/base" \
    --run_dir="$work/$mode" --clients=4 --devices=mix --rounds=2 \
    --max_steps=10 --eval_examples=200 --lr=5e-3 --split=off \
    --min_devices=4 --compute_costs="$work/costs.tsv" "${extra[@]}" >/dev/null
done
python3 - "$work" <<'PY'
import csv, sys
work = sys.argv[1]
rows = {m: list(csv.DictReader(open(f"{work}/{m}/rounds.csv")))
        for m in ("plain", "secure")}
secure = rows["secure"]
assert [r["committed"] for r in secure] == ["1", "1"], secure
for r in secure:
    assert r["secagg_excluded"] == "0", r
    assert int(r["secagg_bytes_up"]) > 0 and float(r["secagg_unmask_s"]) > 0, r
    assert float(r["secagg_mask_s"]) > 0, r
    assert rows["plain"][0]["secagg_bytes_up"] == "", rows["plain"][0]
a, b = (float(rows[m][-1]["test_loss"]) for m in ("plain", "secure"))
print(f"secure aggregation: held-out loss {b:.4f} vs plain {a:.4f}; "
      f"round-1 time {float(secure[0]['round_s']):.3f} s vs "
      f"{float(rows['plain'][0]['round_s']):.3f} s")
assert abs(a - b) <= 0.05 * a, (a, b)
accepted = [r for r in csv.DictReader(open(f"{work}/secure/clients.csv"))
            if r["status"] == "accepted"]
for r in accepted:  # Masking is charged as the device's compute.
    assert 0 < float(r["secagg_mask_s"]) <= float(r["train_s"]), r
ups = {int(r["bytes_up"]) for r in accepted}
assert len(ups) == 1 and ups.pop() % 4 == 0, ups
PY

# --fill_pace=1: every device trains the same 20 steps. By default a fast
# device fills the round's pace with up to 4 times the steps, so the laptop
# could train as long as the Pi 4 with dilation working.
"$bin/fedge-sim" --emulate_cpu=dilate --task_set=base="$work/base" \
  --out="$work/dsim" --clients=4 --rounds=2 --local_steps=20 --fill_pace=1 \
  --eval_examples=500 --cache_dir="$work/cache" >"$work/dsim.log"
python3 - "$work" <<'PY'
import csv, json, sys
work = sys.argv[1]
notes = json.load(open(f"{work}/dsim/summary.json"))["notes"]
assert any("time dilation" in n for n in notes), notes
train = {}
for r in csv.DictReader(open(f"{work}/dsim/fedspine/clients.csv")):
    train.setdefault(r["device"], []).append(float(r["train_s"]))
    assert r["max_steps"] == "20", r
pi4, laptop = sum(train["device-0"]), sum(train["device-3"])
print(f"dilated training: pi4 {pi4:.2f} s, laptop {laptop:.2f} s")
assert pi4 > 3 * laptop, train
PY

if command -v chromium >/dev/null; then
  chromium --headless --no-sandbox --disable-gpu --window-size=1200,2400 \
    --screenshot="$work/report.png" "file://$work/sim/report.html" \
    >/dev/null 2>&1
  # A rendered page is a PNG of real size, not a blank error page.
  size=$(stat -c %s "$work/report.png")
  echo "report screenshot: $size bytes"
  [[ $size -gt 50000 ]]
  if [[ -n ${FEDGE_KEEP_SCREENSHOT:-} ]]; then
    cp "$work/report.png" "$FEDGE_KEEP_SCREENSHOT"
  fi
fi
