#!/usr/bin/env python3
"""Issue 22's comparison: FedSpine against the baselines over seeds.

Runs of fedge-sim on the virtual clock, one strategy each, laid out by
bench/run fedspine_compare as SEED_DIR/<run>/ with uniform arms named
uniform_<ratio>_<rank> and the per-tier oracle's candidates oracle_<k>
(read as fedspine_gate.py reads them).

  fedspine_compare.py hetlora --ranks R1,R2,... RUN
      The HetLoRA-style baseline's arms as a --device_arms value: rank by
      the device's uplink, no extra pruning. Links are ordered by the
      median uplink rate their devices achieved in RUN (bytes_up /
      upload_s in clients.csv); the slowest link gets the smallest rank,
      the fastest the largest, and link i of n the rank at index
      round(i * (ranks - 1) / (n - 1)).

  fedspine_compare.py figures --fraction F [--swap ROUND:A-B,...] SEED_DIR...
      Per seed: the target is base - F x (base - the best final value of
      any uniform arm on that seed), fixed before any strategy's time is
      read; every run's time to it, censored at the run's end when never
      reached. Each strategy's time over the best uniform arm's (in
      hindsight) and over the median uniform arm's; the oracle is its best
      candidate. FedSpine's time over each other strategy's, and its final
      value minus the best uniform arm's. Prints every seed beside the
      median over seeds, `*` marking a seed where a side was censored (the
      ratio is then a bound, not a value), and one `figure NAME VALUE` line
      per median.

      With --swap (fedge-sim's --swap_speeds of the runs named <strategy>_swap,
      whose pairs share a link): re-adaptation. A swapped device's new tier
      arm is the median rank and pruning ratio its partner, which had the
      device's new speed and the same link, played in the 5 rounds before
      the swap. A round follows the new tier when the device plays that rank
      at a ratio within 0.1 of that ratio (half the grid's step); the device
      has re-adapted k rounds after the swap when round swap + k is the first
      that follows with at least 3 of the 5 rounds from it on following
      (rounds past the run's end do not), censored at the rounds left when
      it never does. A run's figure is its slowest swapped device's k. These rules
      were fixed before any swapped run was read.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedspine_gate as gate  # noqa: E402


def hetlora(ranks, run):
    _, _, _, clients = gate.load(run)
    rates, link_of = {}, {}
    for c in clients:
        if c["status"] != "accepted" or float(c["upload_s"]) <= 0:
            continue
        link_of[c["device"]] = c["link"]
        rates.setdefault(c["link"], []).append(
            float(c["bytes_up"]) / float(c["upload_s"]))
    if not rates:
        sys.exit("%s: no accepted upload to measure links by" % run)
    links = sorted(rates, key=lambda l: statistics.median(rates[l]))
    rank_of = {}
    for i, link in enumerate(links):
        at = 0 if len(links) == 1 else round(i * (len(ranks) - 1) /
                                             (len(links) - 1))
        rank_of[link] = ranks[at]
    devices = sorted(link_of, key=lambda d: int(d.rsplit("-", 1)[1]))
    return ",".join("%s=0:%d" % (d, rank_of[link_of[d]]) for d in devices)


def readapt(clients, swap, window=5, need=3, reference=5):
    """{device: (rounds, censored)} for each device of swap = (round,
    [(a, b), ...]) in one run's clients.csv rows (module docstring)."""
    swap_round, pairs = swap
    arm, link = {}, {}
    for c in clients:  # A device's first row of a round names its arm.
        arm.setdefault((c["device"], int(c["round"])),
                       (int(c["rank"]), float(c["prune_ratio"])))
        link[c["device"]] = c["link"]
    last = max(r for _, r in arm)
    out = {}
    for a, b in pairs:
        for device, partner in ((a, b), (b, a)):
            d, p = "device-%d" % device, "device-%d" % partner
            if link.get(d) != link.get(p):
                sys.exit("--swap: %s and %s do not share a link, so neither "
                         "names the other's new tier" % (d, p))
            before = [arm[(p, r)] for r in range(swap_round - reference,
                                                 swap_round) if (p, r) in arm]
            if not before:
                sys.exit("--swap: %s has no round before round %d" %
                         (p, swap_round))
            rank = statistics.median_low(x for x, _ in before)
            ratio = statistics.median(y for _, y in before)

            def follows(r):
                played = arm.get((d, r))
                return (played is not None and played[0] == rank and
                        abs(played[1] - ratio) <= 0.1 + 1e-9)
            out[d] = (last - swap_round + 1, True)
            for t in range(swap_round, last + 1):
                if follows(t) and sum(follows(t + i)
                                      for i in range(window)) >= need:
                    out[d] = (t - swap_round, False)
                    break
    return out


def parse_swap(spec):
    """"16:0-12,1-13" -> (16, [(0, 12), (1, 13)])."""
    at, pairs = spec.split(":", 1)
    return int(at), [tuple(int(x) for x in p.split("-"))
                     for p in pairs.split(",")]


def seed_results(fraction, seed_dir):
    """{name: (seconds, censored, final)} for every run in seed_dir, the
    best and median uniform arms' times and the target."""
    runs = sorted(d for d in os.listdir(seed_dir)
                  if os.path.isfile(os.path.join(seed_dir, d, "summary.json")))
    loaded = {}
    for run in runs:
        path = os.path.join(seed_dir, run)
        if os.path.exists(os.path.join(path, "INCONSISTENT")):
            print("compare: %s: records inconsistent, no figure" % path)
            continue
        loaded[run] = gate.load(path)
    uniform = [r for r in loaded if r.startswith("uniform_")]
    if not uniform:
        sys.exit("%s: no uniform arm's run" % seed_dir)
    base = loaded[uniform[0]][0]["base"]
    best_final = min(loaded[r][1]["final"] for r in uniform)
    target = base - fraction * (base - best_final)
    out = {}
    for run, (_, strategy, rounds, _) in loaded.items():
        seconds, censored = gate.tta(rounds, target)
        out[run] = (seconds, censored, strategy["final"])
    # The best uniform arm in hindsight is the fastest to the target; a
    # censored time is a lower bound, so it ranks last among equals.
    ranked = sorted(uniform, key=lambda r: (out[r][0], out[r][1]))
    best = ranked[0]
    median = ranked[len(ranked) // 2]
    # Every candidate a uniform arm (none run): the oracle is the best one.
    oracle = [r for r in loaded if r.startswith("oracle_")] or [best]
    out["oracle"] = min((out[r] for r in oracle), key=lambda v: (v[0], v[1]))
    return out, best, median, target, base


def print_figure(key, values, shown):
    """The median of per-seed values beside every seed's."""
    print("compare: %s median %.3f, per seed %s" %
          (key, statistics.median(values), " ".join(shown)))
    print("figure %s %.3f" % (key, statistics.median(values)))
    print("figure %s_seeds %s" % (key, ",".join(shown)))


def figures(fraction, seed_dirs, swap=None):
    per_seed = []
    for seed_dir in seed_dirs:
        out, best, median, target, base = seed_results(fraction, seed_dir)
        print("compare: %s: base %.4f, target %.4f; best uniform %s, median "
              "uniform %s" % (seed_dir, base, target, best, median))
        for run in sorted(out):
            seconds, censored, final = out[run]
            print("compare: %s %-22s final %.4f  time to target %7.1f s%s" %
                  (os.path.basename(seed_dir.rstrip("/")), run, final,
                   seconds, "  (never reached: censored)" if censored
                   else ""))
        per_seed.append((out, best, median))
    # Runs with swapped speeds compare only with each other.
    names = sorted(set.intersection(*(set(o) for o, _, _ in per_seed)) -
                   {r for o, _, _ in per_seed for r in o
                    if r.startswith("uniform_") or r.startswith("oracle_") or
                    r.endswith("_swap")})
    names.append("median_uniform")
    for name in names:
        for against in ("best", "median"):
            if name == "median_uniform" and against == "median":
                continue
            values, shown = [], []
            for out, best, median in per_seed:
                run = median if name == "median_uniform" else name
                ref = best if against == "best" else median
                ratio = out[run][0] / out[ref][0]
                values.append(ratio)
                flag = "*" if out[run][1] or out[ref][1] else ""
                shown.append("%.3f%s" % (ratio, flag))
            print_figure("%s_tta_over_%s_uniform" % (name, against), values,
                         shown)
    if "fedspine" not in names:
        return
    # FedSpine against each other strategy, and its final quality.
    others = {"static": "static_rule", "random": "random", "ucb1": "ucb1",
              "hetlora": "hetlora", "oracle": "oracle"}
    for name in (n for n in names if n in others):
        values, shown = [], []
        for out, _, _ in per_seed:
            values.append(out["fedspine"][0] / out[name][0])
            flag = "*" if out["fedspine"][1] or out[name][1] else ""
            shown.append("%.3f%s" % (values[-1], flag))
        print_figure("fedspine_tta_over_%s" % others[name], values, shown)
    values = [out["fedspine"][2] - out[best][2] for out, best, _ in per_seed]
    print_figure("fedspine_bpb_minus_best_uniform", values,
                 ["%.4f" % v for v in values])
    if swap is None:
        return
    for name in ("fedspine_swap", "static_swap"):
        values, shown = [], []
        for seed_dir in seed_dirs:
            run = os.path.join(seed_dir, name)
            if not os.path.isfile(os.path.join(run, "summary.json")):
                sys.exit("--swap: %s has not run" % run)
            moved = readapt(gate.load(run)[3], swap)
            slowest = max(moved, key=lambda d: moved[d])
            for d in sorted(moved):
                print("compare: %s %s re-adapted after %d rounds%s" %
                      (run, d, moved[d][0],
                       " (never: censored)" if moved[d][1] else ""))
            values.append(moved[slowest][0])
            shown.append("%d%s" % (moved[slowest][0],
                                   "*" if moved[slowest][1] else ""))
        print_figure("%s_readapt_rounds" % name.replace("_swap", ""), values,
                     shown)


def main(argv):
    if len(argv) == 4 and argv[0] == "hetlora" and argv[1] == "--ranks":
        print(hetlora([int(r) for r in argv[2].split(",")], argv[3]))
        return
    if len(argv) >= 4 and argv[0] == "figures" and argv[1] == "--fraction":
        if len(argv) >= 6 and argv[3] == "--swap":
            figures(float(argv[2]), argv[5:], parse_swap(argv[4]))
        else:
            figures(float(argv[2]), argv[3:])
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
