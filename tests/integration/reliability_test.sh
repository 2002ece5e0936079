#!/usr/bin/env bash
# The fast parts of bench/reliability.sh on a tiny model: 50 clients' load
# with every update accounted for; a registration flood, slow-loris and
# oversize uploads beside honest clients; replay and identity attacks over
# mutual TLS; kill -9 of clients, links and the coordinator (during
# aggregation and a checkpoint write) against an uninterrupted run.
#
# Usage: reliability_test.sh BIN_DIR   (ctest passes build/<preset>/bin)
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/fedge-pretrain" --out="$work/base" --task_set=simulation.public_fraction=0.02 --epochs=1 \
  --dim=32 --heads=4 --mlp_hidden=32 --layers=2 --threads=1 \
  --progress_every=1000 >"$work/pretrain.log"
LOAD_CLIENTS=50 LIMITS_CLIENTS=10 FAULT_CLIENTS=4 FAULT_ROUNDS=4 \
  "$(dirname "$0")/../../bench/reliability.sh" "$bin" "$work/base" "$work/out" \
  load limits identity fault
