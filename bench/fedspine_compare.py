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

  fedspine_compare.py figures --fraction F [--swap ROUND:A-B,...]
                             [--html FILE [--gate SVG]] SEED_DIR...
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

      Where every SEED_DIR has a sparse/ part (runs at a common sparsity,
      laid out alike; dense LoRA pruned one-shot is `oneshot`), the same
      figures for it, prefixed sparse_, with its own target.

      With --swap (fedge-sim's --swap_speeds of the runs named <strategy>_swap,
      whose pairs share a link): re-adaptation. A swapped device's new tier
      arm is the median rank and pruning ratio its partner, which had the
      device's new speed and the same link, played in the 5 rounds before
      the swap. A round follows the new tier when the device plays that rank
      at a ratio within 0.1 of that ratio (half the grid's step); the device
      has re-adapted k rounds after the swap when round swap + k is the first
      that follows with at least 3 of the 5 rounds from it on following
      (rounds past the run's end do not), censored at the rounds left when
      it never does. A run's figure is its slowest swapped device's k.
      These rules were fixed before any swapped run was read.

      With --html FILE: the comparison's report (svg panels in one page):
      the gate's pruning curve and times (--gate, bench/run fedspine's
      gate.svg, where it has run); time to target per strategy (bar at the
      median over seeds, whisker from the least to the most, hatched where a
      seed never reached it);
      final bits per byte per strategy with the unpruned FedAvg of LoRA at
      the largest rank (uniform 0:32) as a line; each strategy's median
      download, train and upload time per speed tier (first seed; tiers read
      from fedge-sim's plan lines in <run>.log); FedSpine's arm per device
      and round on each seed (and on the swapped run, the swap marked),
      devices in index order, which is tier order in bench/run's
      federation; and FedSpine's elapsed time less the per-tier oracle's
      best candidate's, round by round (regret in seconds).
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


def arms_played(clients):
    """{(device, round): (rank, pruning ratio)} from one run's clients.csv
    rows: a device's first row of a round names its arm."""
    arm = {}
    for c in clients:
        arm.setdefault((c["device"], int(c["round"])),
                       (int(c["rank"]), float(c["prune_ratio"])))
    return arm


def readapt(clients, swap, window=5, need=3, reference=5):
    """{device: (rounds, censored)} for each device of swap = (round,
    [(a, b), ...]) in one run's clients.csv rows (module docstring)."""
    swap_round, pairs = swap
    arm = arms_played(clients)
    link = {c["device"]: c["link"] for c in clients}
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


def best_oracle(out):
    """The per-tier oracle's fastest candidate run in seed_results' `out`
    (a censored time ranks last among equals), or None where none ran."""
    oracles = [r for r in out if r.startswith("oracle_")]
    return min(oracles, key=lambda r: out[r][:2]) if oracles else None


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
    out["oracle"] = out[best_oracle(out) or best]
    return out, best, median, target, base


def print_figure(key, values, shown):
    """The median of per-seed values beside every seed's."""
    print("compare: %s median %.3f, per seed %s" %
          (key, statistics.median(values), " ".join(shown)))
    print("figure %s %.3f" % (key, statistics.median(values)))
    print("figure %s_seeds %s" % (key, ",".join(shown)))


def print_time_ratio(key, pairs):
    """pairs: per seed, two (seconds, censored) times; the first over the
    second, `*` where either side is censored."""
    values = [a[0] / b[0] for a, b in pairs]
    print_figure(key, values, ["%.3f%s" % (v, "*" if a[1] or b[1] else "")
                               for v, (a, b) in zip(values, pairs)])


def bars_svg(title, series, unit, line=None):
    """series: [(label, [(value, censored) per seed])]: a bar at the median,
    a whisker over the range, hatched if any seed is censored; `line`: a
    (value, label) drawn across."""
    w, h, pad = 100 + 56 * len(series), 300, 60
    values = [v for _, vs in series for v, _ in vs] + (
        [line[0]] if line else [])
    lo, hi = min(0.0, min(values)), max(values) * 1.05 or 1.0
    if unit == "bits per byte":  # Differences are small: zoom on them.
        span = max(max(values) - min(values), 0.01)
        lo, hi = min(values) - 0.2 * span, max(values) + 0.2 * span

    def y(v):
        return h - pad - (h - 2 * pad) * (v - lo) / ((hi - lo) or 1)
    out = [gate.svg_open(w, h + 40) + gate.HATCH,
           '<text x="10" y="16">%s</text>' % title,
           '<text x="%d" y="%.0f" text-anchor="end">%.4g</text>' %
           (pad - 4, y(hi) + 4, hi),
           '<text x="%d" y="%.0f" text-anchor="end">%.4g</text>' %
           (pad - 4, y(lo) + 4, lo)]
    for i, (label, vs) in enumerate(series):
        x = pad + 56 * i
        mid = statistics.median(v for v, _ in vs)
        fill = "url(#hatch)" if any(c for _, c in vs) else (
            "#ff7f0e" if label == "fedspine" else "#1f77b4")
        out.append('<rect x="%.1f" y="%.1f" width="40" height="%.1f" '
                   'fill="%s" stroke="black"><title>%s: %s</title></rect>' %
                   (x, y(mid), y(lo) - y(mid), fill, label, ", ".join(
                       "%.4g%s" % (v, "*" if c else "") for v, c in vs)))
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" '
                   'stroke="black"/>' % (x + 20, y(min(v for v, _ in vs)),
                                         x + 20, y(max(v for v, _ in vs))))
        out.append('<text transform="translate(%.1f,%d) rotate(50)">%s'
                   '</text>' % (x + 14, h - pad + 10, label))
    if line:
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="red" '
                   'stroke-dasharray="4"/><text x="%d" y="%.1f" fill="red">'
                   '%s</text>' % (pad, y(line[0]), w - 10, y(line[0]), pad,
                                  y(line[0]) - 4, line[1]))
    return "\n".join(out + ["</svg>"])


def heatmap_svg(title, clients, swap_round=None):
    """Each device's arm per round: colour by rank, the pruning ratio in
    tenths as the cell's number."""
    arm = {(int(d.rsplit("-", 1)[1]), r): played
           for (d, r), played in arms_played(clients).items()}
    devices = sorted({d for d, _ in arm})
    rounds = sorted({r for _, r in arm})
    ranks = sorted({k for k, _ in arm.values()})
    palette = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#999999"]
    colour = {k: palette[min(i, len(palette) - 1)]
              for i, k in enumerate(ranks)}
    cw, ch, left, top = 16, 14, 70, 40
    out = [gate.svg_open(max(left + cw * len(rounds) + 20, 460),
                    top + ch * len(devices) + 40, 9),
           '<text x="4" y="14" font-size="11">%s</text>' % title,
           '<text x="4" y="28">colour: rank (%s); number: pruning ratio '
           'in tenths</text>' % ", ".join(
               '<tspan fill="%s">&#9632;</tspan> %d' % (colour[k], k)
               for k in ranks)]
    for j, r in enumerate(rounds):
        if r % 5 == 0:
            out.append('<text x="%d" y="%d">%d</text>' %
                       (left + cw * j, top + ch * len(devices) + 12, r))
    for i, d in enumerate(devices):
        out.append('<text x="4" y="%d">device-%d</text>' %
                   (top + ch * i + 10, d))
        for j, r in enumerate(rounds):
            if (d, r) not in arm:
                continue
            rank, ratio = arm[(d, r)]
            x, yy = left + cw * j, top + ch * i
            out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s">'
                       '<title>device-%d round %d: rank %d, ratio %.3f'
                       '</title></rect>' % (x, yy, cw - 1, ch - 1,
                                            colour[rank], d, r, rank, ratio))
            out.append('<text x="%d" y="%d" fill="%s">%d</text>' %
                       (x + 4, yy + 10, "white" if rank >= ranks[-1] else
                        "black", round(ratio * 10)))
    if swap_round in rounds:
        x = left + cw * rounds.index(swap_round) - 1
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="red" '
                   'stroke-width="2"/>' % (x, top - 4, x,
                                           top + ch * len(devices)))
    return "\n".join(out + ["</svg>"])


def regret_svg(lines):
    """lines: [(label, [seconds per round])]: FedSpine's elapsed time less
    the oracle's."""
    w, h, pad = 460, 260, 50
    values = [v for _, vs in lines for v in vs] + [0.0]
    lo, hi = min(values), max(values)
    n = max(len(vs) for _, vs in lines)

    def x(i):
        return pad + (w - 2 * pad) * i / max(n - 1, 1)

    def y(v):
        return h - pad - (h - 2 * pad) * (v - lo) / ((hi - lo) or 1)
    out = [gate.svg_open(w, h),
           '<text x="10" y="16">FedSpine elapsed - per-tier oracle elapsed '
           '(s), by round</text>',
           '<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999"/>' %
           (pad, y(0), w - pad, y(0)),
           '<text x="%d" y="%.0f" text-anchor="end">%.1f</text>' %
           (pad - 4, y(hi) + 4, hi),
           '<text x="%d" y="%.0f" text-anchor="end">%.1f</text>' %
           (pad - 4, y(lo) + 4, lo),
           '<text x="%d" y="%d">round 1 .. %d</text>' % (pad, h - pad + 16, n)]
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    for i, (label, vs) in enumerate(lines):
        c = colours[i % len(colours)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" '
                   'points="%s"/><text x="%d" y="%d" fill="%s">%s</text>' %
                   (c, " ".join("%.1f,%.1f" % (x(j), y(v))
                                for j, v in enumerate(vs)),
                    w - pad - 60, pad + 14 * i, c, label))
    return "\n".join(out + ["</svg>"])


def speeds(log):
    """{device: speed} from fedge-sim's plan lines ("  device-3: ...,
    speed 0.20 of a laptop core, ...") in a run's log."""
    out = {}
    with open(log) as f:
        for line in f:
            words = line.split()
            if (len(words) > 4 and words[0].startswith("device-") and
                    "speed" in words):
                out[words[0].rstrip(":")] = float(
                    words[words.index("speed") + 1])
    return out


def tier_phases(seed_dir, run):
    """{speed: (download, train, upload)}: median seconds of each phase over
    the accepted updates of the tier's devices, all rounds."""
    tier = speeds(os.path.join(seed_dir, run + ".log"))
    phases = {}
    for c in gate.load(os.path.join(seed_dir, run))[3]:
        if c["status"] == "accepted" and c["device"] in tier:
            phases.setdefault(tier[c["device"]], []).append(
                [float(c[k]) for k in ("download_s", "train_s", "upload_s")])
    return {t: tuple(statistics.median(p[i] for p in ps) for i in range(3))
            for t, ps in phases.items()}


def tiers_svg(title, groups):
    """groups: [(strategy, {speed: (download, train, upload)})]: per
    strategy a stacked bar per tier."""
    tiers = sorted({t for _, g in groups for t in g})
    top = max(sum(v) for _, g in groups for v in g.values()) or 1.0
    bw, gap, pad, h = 14, 18, 50, 300
    w = pad + len(groups) * (len(tiers) * bw + gap) + 20
    colours = ["#9ecae1", "#3182bd", "#fd8d3c"]  # Download, train, upload.
    out = [gate.svg_open(max(w, 460), h + 60),
           '<text x="10" y="16">%s</text>' % title,
           '<text x="10" y="30">stacked: <tspan fill="%s">download</tspan>, '
           '<tspan fill="%s">train</tspan>, <tspan fill="%s">upload</tspan>'
           '; bars per tier, slowest first (speeds %s)</text>' %
           (colours[0], colours[1], colours[2],
            ", ".join("%g" % t for t in tiers)),
           '<text x="%d" y="%d" text-anchor="end">%.1f s</text>' %
           (pad - 4, pad + 4, top)]
    for i, (name, g) in enumerate(groups):
        x0 = pad + i * (len(tiers) * bw + gap)
        for j, t in enumerate(tiers):
            y = h - pad
            for k, v in enumerate(g.get(t, (0, 0, 0))):
                bh = (h - 2 * pad) * v / top
                out.append('<rect x="%d" y="%.1f" width="%d" height="%.1f" '
                           'fill="%s"><title>%s, speed %g: %.2f s</title>'
                           '</rect>' % (x0 + j * bw, y - bh, bw - 2, bh,
                                        colours[k], name, t, v))
                y -= bh
        out.append('<text transform="translate(%d,%d) rotate(50)">%s</text>'
                   % (x0 + 4, h - pad + 10, name))
    return "\n".join(out + ["</svg>"])


def elapsed(rounds):
    total, out = 0.0, []
    for r in rounds:
        total += float(r["round_s"])
        out.append(total)
    return out


def write_report(path, seed_dirs, per_seed, swap, gate_svg=None):
    names = ["fedspine", "static", "hetlora", "ucb1", "random", "oracle"]
    tta, final, regret, panels = [], [], [], []
    for label in names + ["best_uniform", "median_uniform"]:
        runs = [(best if label == "best_uniform" else
                 median if label == "median_uniform" else label, out)
                for out, best, median in per_seed]
        if all(run in out for run, out in runs):
            tta.append((label, [out[run][:2] for run, out in runs]))
            final.append((label, [(out[run][2], False) for run, out in runs]))
    ceiling = [out["uniform_0_32"][2] for out, _, _ in per_seed
               if "uniform_0_32" in out]
    for seed_dir, (out, _, _) in zip(seed_dirs, per_seed):
        seed = os.path.basename(seed_dir.rstrip("/"))
        if "fedspine" not in out:
            continue
        fedspine = gate.load(os.path.join(seed_dir, "fedspine"))
        panels.append(heatmap_svg("%s: FedSpine's arms" % seed, fedspine[3]))
        oracle = best_oracle(out)
        if oracle:
            theirs = elapsed(gate.load(os.path.join(seed_dir, oracle))[2])
            mine = elapsed(fedspine[2])
            regret.append((seed, [a - b for a, b in zip(mine, theirs)]))
        swapped = os.path.join(seed_dir, "fedspine_swap")
        if swap and os.path.isfile(os.path.join(swapped, "summary.json")):
            panels.append(heatmap_svg(
                "%s: FedSpine's arms, speeds swapped from round %d (%s)" %
                (seed, swap[0], ", ".join("%d-%d" % p for p in swap[1])),
                gate.load(swapped)[3], swap[0]))
    body = [bars_svg("virtual seconds to target (hatched: a seed never "
                     "reached it)", tta, "s"),
            bars_svg("final held-out bits per byte (lower is better)", final,
                     "bits per byte",
                     (statistics.median(ceiling), "unpruned, rank 32")
                     if ceiling else None)]
    if regret:
        body.append(regret_svg(regret))
    # Per-tier phases on the first seed (the others are alike by design).
    out, best, _ = per_seed[0]
    groups = []
    for label in names + ["best_uniform"]:
        run = best if label == "best_uniform" else label
        if label == "oracle":
            run = best_oracle(out)
        if run in out and os.path.isfile(
                os.path.join(seed_dirs[0], run + ".log")):
            groups.append((label, tier_phases(seed_dirs[0], run)))
    if groups and any(g for _, g in groups):
        body.append(tiers_svg(
            "%s: a device's median download, train and upload time per "
            "speed tier" % os.path.basename(seed_dirs[0].rstrip("/")),
            groups))
    if gate_svg:  # bench/run fedspine's: the pruning curve and the gate.
        with open(gate_svg) as f:
            body.insert(0, "<p>The gate (bench/run fedspine, its pilot "
                        "seed):</p>" + f.read())
    with open(path, "w") as f:
        f.write("<!doctype html><meta charset=\"utf-8\"><title>fedge: "
                "FedSpine against the baselines</title><h1>FedSpine "
                "against the baselines</h1><p>Seeds: %s. Bars: median over "
                "seeds; whiskers: range; hover for every seed's value.</p>"
                % ", ".join(os.path.basename(d.rstrip("/"))
                            for d in seed_dirs))
        f.write("\n".join("<div>%s</div>" % b for b in body + panels))


def time_figures(fraction, seed_dirs, prefix=""):
    """One part's table and figures (names prefixed): times to target over
    the uniform arms and FedSpine's over each other strategy's, and
    FedSpine's final value less the best uniform arm's. Returns per seed
    (results, best uniform run, median uniform run)."""
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
    # Runs with swapped speeds compare only with each other. A part without
    # oracle candidates has no oracle (seed_results' stand-in is a uniform
    # arm).
    names = sorted(set.intersection(*(set(o) for o, _, _ in per_seed)) -
                   {r for o, _, _ in per_seed for r in o
                    if r.startswith("uniform_") or r.startswith("oracle_") or
                    r.endswith("_swap")})
    if not any(best_oracle(o) for o, _, _ in per_seed):
        names = [n for n in names if n != "oracle"]
    names.append("median_uniform")
    for name in names:
        for against in ("best", "median"):
            if name == "median_uniform" and against == "median":
                continue
            print_time_ratio(
                "%s%s_tta_over_%s_uniform" % (prefix, name, against),
                [(out[median if name == "median_uniform" else name],
                  out[best if against == "best" else median])
                 for out, best, median in per_seed])
    if "fedspine" not in names:
        return per_seed
    # FedSpine against each other strategy, and its final quality.
    others = {"static": "static_rule", "random": "random", "ucb1": "ucb1",
              "hetlora": "hetlora", "oracle": "oracle", "oneshot": "oneshot"}
    for name in (n for n in names if n in others):
        print_time_ratio("%sfedspine_tta_over_%s" % (prefix, others[name]),
                         [(out["fedspine"], out[name])
                          for out, _, _ in per_seed])
    values = [out["fedspine"][2] - out[best][2] for out, best, _ in per_seed]
    print_figure("%sfedspine_bpb_minus_best_uniform" % prefix, values,
                 ["%.4f" % v for v in values])
    return per_seed


def figures(fraction, seed_dirs, swap=None, html=None, gate_svg=None):
    per_seed = time_figures(fraction, seed_dirs)
    if html:
        write_report(html, seed_dirs, per_seed, swap, gate_svg)
    # The part at a common sparsity, where every seed has it.
    sparse = [os.path.join(d, "sparse") for d in seed_dirs]
    if all(os.path.isdir(d) for d in sparse):
        time_figures(fraction, sparse, "sparse_")
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
                print(("compare: %s %s did not re-adapt in the %d rounds "
                       "left (censored)" if moved[d][1] else
                       "compare: %s %s re-adapted after %d rounds") %
                      (run, d, moved[d][0]))
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
        options, rest = {}, argv[3:]
        while len(rest) >= 2 and rest[0] in ("--swap", "--html", "--gate"):
            options[rest[0]] = rest[1]
            rest = rest[2:]
        if not rest:
            sys.exit(__doc__)
        swap = options.get("--swap")
        figures(float(argv[2]), rest, parse_swap(swap) if swap else None,
                options.get("--html"), options.get("--gate"))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
