#!/usr/bin/env python3
"""Issue 22's gate, second half: can any per-tier assignment of arms beat the
best uniform arm by 10% in time to target? If even an oracle cannot, the
setup has failed and the bandit has nothing to find.

Runs of fedge-sim on the virtual clock, one strategy each, read from their
output folders (summary.json, <strategy>/clients.csv, <strategy>/rounds.csv).

  fedspine_gate.py best UNIFORM_RUN...
      The best uniform arm by its final held-out value, as RATIO:RANK.

  fedspine_gate.py assign UNIFORM_RUN...
      From the uniform arms' runs, the per-tier oracle's candidate
      assignments, one per line as --device_arms values (nothing printed for
      a candidate that is a uniform arm). What is known in hindsight: each
      device's charged round time under each arm (the virtual clock charges
      the same time for the same arm every round, once the prune-and-tune
      ramp is over) and each arm's final held-out value as a uniform arm.
      A tier is a compute speed (devices charged the same training time under
      the same arm). Candidate k caps the round at the time the k-th slowest
      tier's slowest device takes with the best uniform arm; every device
      plays the best arm (by that final value) that fits under the cap, or
      its fastest arm if none does.

  fedspine_gate.py figures --fraction F [--curve FILE --svg FILE]
                           UNIFORM_RUN... -- ORACLE_RUN... [-- OTHER_RUN...]
      Time to target of every run: the target is base - F x (base - the
      best final value of any uniform arm); a run that never reaches it is
      censored at its last round and flagged. Prints each run's row and
      `figure oracle_tta_over_best_uniform` (the best oracle candidate's time
      over the best uniform arm's); other runs (a bandit's, on the same
      seed) get a row and their time over the best uniform arm's. With --curve (fedge-bench-prune-lora
      --mode=curve's output) and --svg, also draws the gate: held-out value
      against the pruning ratio, and each run's time to target.
"""
import csv
import json
import os
import statistics
import sys


def load(run):
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    if len(summary["strategies"]) != 1:
        sys.exit("%s: one strategy per run expected" % run)
    if os.path.exists(os.path.join(run, "INCONSISTENT")):
        sys.exit("%s: its records failed the consistency check" % run)
    strategy = summary["strategies"][0]
    folder = os.path.join(run, strategy["strategy"].replace(":", "-"))
    with open(os.path.join(folder, "rounds.csv")) as f:
        rounds = list(csv.DictReader(f))
    with open(os.path.join(folder, "clients.csv")) as f:
        clients = list(csv.DictReader(f))
    return summary, strategy, rounds, clients


def arm_of(strategy):  # "fixed:0.2:16" -> (0.2, 16)
    _, ratio, rank = strategy.split(":")
    return float(ratio), int(rank)


def device_times(clients, after_round, column="elapsed_s"):
    """Median charged seconds per device (elapsed_s: download + train +
    upload) over the accepted updates of rounds after `after_round`."""
    times = {}
    for c in clients:
        if c["status"] == "accepted" and int(c["round"]) > after_round:
            times.setdefault(c["device"], []).append(float(c[column]))
    return {d: statistics.median(t) for d, t in times.items()}


def assign(runs, ramp=10):
    arms = {}
    train = {}
    for run in runs:
        _, strategy, _, clients = load(run)
        arm = arm_of(strategy["strategy"])
        arms[arm] = (strategy["final"], device_times(clients, ramp))
        train[arm] = device_times(clients, ramp, "train_s")
    by_quality = sorted(arms, key=lambda a: arms[a][0])
    best_arm = by_quality[0]
    times = {a: t for a, (_, t) in arms.items()}
    devices = sorted(times[best_arm], key=lambda d: int(d.rsplit("-", 1)[1]))
    # A tier is a compute speed: the virtual clock charges the same training
    # time to devices of the same speed under the same arm, whatever their
    # links. Each tier's cap is its slowest device's time under the best arm.
    tier_caps = {}
    for d in devices:
        tier = round(train[best_arm][d], 6)
        tier_caps[tier] = max(tier_caps.get(tier, 0.0), times[best_arm][d])
    caps = sorted(tier_caps.values(), reverse=True)
    seen = set()
    out = []
    for cap in caps[1:]:  # caps[0] is the best uniform arm itself.
        choice = {}
        for d in devices:
            fits = [a for a in by_quality if times[a][d] <= cap + 1e-9]
            choice[d] = fits[0] if fits else min(arms,
                                                 key=lambda a: times[a][d])
        key = tuple(sorted(choice.items()))
        if key in seen or len(set(choice.values())) == 1:
            continue
        seen.add(key)
        out.append(",".join("%s=%g:%d" % (d, a[0], a[1])
                            for d, a in sorted(choice.items())
                            if a != best_arm))
    return best_arm, out


def tta(rounds, target):
    """(seconds, censored): the first committed round's time at or below the
    target, or the last round's time, censored."""
    elapsed = 0.0
    for r in rounds:
        elapsed += float(r["round_s"])
        if (r["committed"] == "1" and r["test_bits_per_byte"] and
                float(r["test_bits_per_byte"]) <= target):
            return elapsed, False
    return elapsed, True


def figures(fraction, uniform, oracle, others=()):
    others = list(others)
    loaded = {run: load(run) for run in uniform + oracle + others}
    base = loaded[uniform[0]][0]["base"]
    best_final = min(loaded[r][1]["final"] for r in uniform)
    target = base - fraction * (base - best_final)
    print("gate: base %.4f, best uniform final %.4f, target %.4f "
          "(base - %.2f x the best uniform gain)" %
          (base, best_final, target, fraction))
    results = {}
    for run in uniform + oracle + others:
        _, strategy, rounds, _ = loaded[run]
        seconds, censored = tta(rounds, target)
        results[run] = (seconds, censored)
        print("gate: %-8s %-40s final %.4f  time to target %8.1f s%s" %
              ("uniform" if run in uniform else
               "oracle" if run in oracle else strategy["strategy"],
               os.path.basename(run.rstrip("/")), strategy["final"], seconds,
               "  (never reached: censored)" if censored else ""))
    best_uniform = min(results[r][0] for r in uniform)
    if not oracle:  # Every candidate was a uniform arm: the oracle is one.
        print("gate: every oracle candidate is a uniform arm")
        best_oracle = best_uniform
    else:
        best_oracle = min(results[r][0] for r in oracle)
    if oracle and all(results[r][1] for r in oracle):
        print("gate: no oracle candidate reached the target; their times are "
              "censored, so the figure is a lower bound")
    print("figure oracle_tta_over_best_uniform %.3f" %
          (best_oracle / best_uniform))
    for run in others:
        print("gate: %s time to target over the best uniform arm's%s: %.3f" %
              (loaded[run][1]["strategy"],
               " (never reached: censored)" if results[run][1] else "",
               results[run][0] / best_uniform))
    return results


def read_curve(path):
    """{series: [(ratio, value)]} from `metric gate_<series>_<metric>_<ratio>
    VALUE` lines; series "oneshot", "recovered60", ..."""
    curves = {}
    for line in open(path):
        parts = line.split()
        if len(parts) != 3 or parts[0] != "metric" or \
                not parts[1].startswith("gate_"):
            continue
        name = parts[1][len("gate_"):]
        series, ratio = name.split("_", 1)[0], name.rsplit("_", 1)[1]
        curves.setdefault(series, []).append((float(ratio), float(parts[2])))
    return curves


def svg_open(width, height, font_size=11):
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'font-family="sans-serif" font-size="%d">' %
            (width, height, font_size))


# A fill for bars of runs that never reached the target: url(#hatch).
HATCH = ('<defs><pattern id="hatch" width="6" height="6" '
         'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
         '<line x1="0" y1="0" x2="0" y2="6" stroke="#555" stroke-width="2"/>'
         '</pattern></defs>')


def svg(path, curves, results, uniform):
    """Two panels: the pruning curve, and time to target per run (censored
    runs hatched)."""
    w, h, pad = 420, 300, 50
    out = [svg_open(2 * w + 40, h + 100) + HATCH]
    values = [v for pts in curves.values() for _, v in pts]
    lo, hi = min(values), max(values)
    ratios = [r for pts in curves.values() for r, _ in pts]
    rmax = max(ratios) or 1

    def x(r):
        return pad + (w - 2 * pad) * r / rmax

    def y(v):
        return h - pad + (pad - (h - pad)) * (v - lo) / ((hi - lo) or 1)
    out.append('<text x="%d" y="20">held-out bits per byte against the '
               'uniform pruning ratio</text>' % pad)
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' %
               (pad, h - pad, w - pad, h - pad))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' %
               (pad, pad, pad, h - pad))
    for r in sorted(set(ratios)):
        out.append('<text x="%.0f" y="%d" text-anchor="middle">%.2f</text>' %
                   (x(r), h - pad + 15, r))
    for v in (lo, hi):
        out.append('<text x="%d" y="%.0f" text-anchor="end">%.3f</text>' %
                   (pad - 4, y(v) + 4, v))
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for i, (series, pts) in enumerate(sorted(curves.items())):
        pts = sorted(pts)
        c = colours[i % len(colours)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" '
                   'points="%s"/>' % (c, " ".join(
                       "%.1f,%.1f" % (x(r), y(v)) for r, v in pts)))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' %
                   (w - pad - 90, pad + 14 * i, c, series))
    # Right panel: bars.
    runs = list(results)
    top = max(t for t, _ in results.values()) or 1
    bw = (w - 2 * pad) / max(len(runs), 1)
    out.append('<text x="%d" y="20">virtual seconds to target (hatched: '
               'never reached)</text>' % (w + pad))
    out.append('<text x="%d" y="%d" text-anchor="end">%.0f s</text>' %
               (w + pad - 4, pad + 4, top))
    for i, run in enumerate(runs):
        t, censored = results[run]
        bh = (h - 2 * pad) * t / top
        bx = w + pad + i * bw
        fill = "url(#hatch)" if censored else (
            "#1f77b4" if run in uniform else "#ff7f0e")
        out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
                   'fill="%s" stroke="black"/>' %
                   (bx + 2, h - pad - bh, bw - 4, bh, fill))
        label = os.path.basename(run.rstrip("/"))
        out.append('<text transform="translate(%.1f,%d) rotate(60)">%s'
                   '</text>' % (bx + bw / 2, h - pad + 8, label))
    out.append('</svg>')
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def best_uniform(runs):
    finals = {}
    for run in runs:
        strategy = load(run)[1]
        finals[arm_of(strategy["strategy"])] = strategy["final"]
    return min(finals, key=finals.get)


def main(argv):
    if len(argv) >= 2 and argv[0] == "best":
        print("%g:%d" % best_uniform(argv[1:]))
        return
    if len(argv) >= 2 and argv[0] == "assign":
        best, candidates = assign(argv[1:])
        print("# best uniform arm: %g:%d" % best, file=sys.stderr)
        for c in candidates:
            print(c)
        return
    if len(argv) >= 5 and argv[0] == "figures" and argv[1] == "--fraction" \
            and "--" in argv:
        rest, curve, picture = argv[3:], None, None
        if rest[0] == "--curve" and rest[2] == "--svg":
            curve, picture, rest = rest[1], rest[3], rest[4:]
        split = rest.index("--")
        uniform, oracle = rest[:split], rest[split + 1:]
        others = []
        if "--" in oracle:
            split = oracle.index("--")
            oracle, others = oracle[:split], oracle[split + 1:]
        results = figures(float(argv[2]), uniform, oracle, others)
        if curve:
            svg(picture, read_curve(curve), results, uniform)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
