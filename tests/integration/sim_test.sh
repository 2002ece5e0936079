#!/usr/bin/env bash
# fedge-sim end to end, small: a tiny base model, 4 devices (one of each
# profile, mixed links), 3 rounds over real gRPC. fedge-sim itself fails
# (exit 2) if any record is inconsistent: phases that do not fit a device's
# elapsed time, elapsed + wait not matching the round, bytes that differ
# from what the device counted. Here: it succeeds, the global accuracy rose
# above the base model's, and the report has its plots. If chromium is
# installed, the report is rendered headless to a screenshot.
#
# Usage: sim_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin/fedge-pretrain" --out="$work/base" --public_fraction=0.02 --epochs=1 \
  --dim=32 --heads=4 --mlp_hidden=32 --layers=2 --threads=1 \
  --progress_every=1000 >"$work/pretrain.log"
"$bin/fedge-sim" --base_dir="$work/base" --out="$work/sim" --clients=4 \
  --rounds=3 --local_steps=20 --eval_examples=1000 --cache_dir="$work/cache" \
  --coordinator_flags="--lr=5e-3" | tee "$work/sim.log"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/sim/summary.json"))
base = summary["base_accuracy"]  # On the same evaluation images.
s = summary["strategies"][0]
print(f"base accuracy {base:.4f}, final {s['final_accuracy']:.4f}")
assert s["rounds"] == 3, s
assert s["final_accuracy"] > base + 0.02, (base, s["final_accuracy"])
assert set(s["links"]) == {"ethernet", "wifi", "5g-sa"}, s["links"]
html = open(f"{work}/sim/report.html").read()
assert html.count("<svg") >= 5 and 'class="accuracy"' in html, "plots missing"
PY
grep -q "round 3/3" "$work/sim.log"

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
