#!/usr/bin/env python3
"""Tests of issue 22's figure rules (fedspine_compare.py, fedspine_gate.py)
on hand-made records: re-adaptation with and without censoring, time to
target with censoring, and FedSpine's ratios over the baselines."""
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedspine_compare as compare  # noqa: E402
import fedspine_gate as gate  # noqa: E402


def rows(device, link, arms, first_round=1):
    """clients.csv rows of one device playing arms[i] in round first + i."""
    return [{"device": device, "link": link, "round": str(first_round + i),
             "rank": str(rank), "prune_ratio": str(ratio),
             "status": "accepted", "download_s": "1", "train_s": str(rank),
             "upload_s": "0.5"} for i, (rank, ratio) in enumerate(arms)]


class ReadaptTest(unittest.TestCase):
    # Device 0 was slow (rank 4, pruned 0.4), device 1 fast (rank 32,
    # dense), same link; they swap speeds from round 6 on, 10 rounds in all.
    def test_counts_rounds_until_three_of_five_follow(self):
        slow, fast = (4, 0.4), (32, 0.0)
        clients = (rows("device-0", "lte", [slow] * 5 + [slow, fast, fast,
                                                          slow, fast]) +
                   rows("device-1", "lte", [fast] * 5 + [fast, fast, slow,
                                                          slow, slow]))
        moved = compare.readapt(clients, (6, [(0, 1)]))
        # device-0 follows device-1's old arm in rounds 7, 8 and 10.
        self.assertEqual(moved["device-0"], (1, False))
        # device-1 follows device-0's old arm from round 8 on.
        self.assertEqual(moved["device-1"], (2, False))

    def test_a_device_that_never_follows_is_censored(self):
        slow, fast = (4, 0.4), (32, 0.0)
        clients = (rows("device-0", "lte", [slow] * 12) +
                   rows("device-1", "lte", [fast] * 5 + [fast] * 2 +
                        [slow] * 5))
        moved = compare.readapt(clients, (6, [(0, 1)]))
        self.assertEqual(moved["device-0"], (7, True))  # Rounds 6..12 left.
        self.assertEqual(moved["device-1"], (2, False))  # From round 8.
        late = (rows("device-0", "lte", [slow] * 12) +
                rows("device-1", "lte", [fast] * 9 + [slow] * 3))
        self.assertEqual(compare.readapt(late, (6, [(0, 1)]))["device-1"],
                         (4, False))  # Rounds 10, 11, 12: the run ends.
        once = (rows("device-0", "lte", [slow] * 12) +
                rows("device-1", "lte", [fast] * 5 + [slow, fast, fast,
                                                      slow, fast, slow, fast]))
        # Round 6 follows but only 2 of 6..10 do; round 9: 9, 11 of 9..13.
        self.assertEqual(compare.readapt(once, (6, [(0, 1)]))["device-1"],
                         (7, True))

    def test_a_ratio_within_half_a_step_follows(self):
        clients = (rows("device-0", "wifi",
                        [(4, 0.4)] * 5 + [(16, 0.08)] * 5) +
                   rows("device-1", "wifi", [(16, 0.0)] * 10))
        self.assertEqual(compare.readapt(clients, (6, [(0, 1)]))["device-0"],
                         (0, False))
        clients = (rows("device-0", "wifi", [(4, 0.4)] * 5 + [(16, 0.2)] * 5) +
                   rows("device-1", "wifi", [(16, 0.0)] * 10))
        self.assertTrue(
            compare.readapt(clients, (6, [(0, 1)]))["device-0"][1])

    def test_partners_on_different_links_are_refused(self):
        clients = rows("device-0", "lte", [(4, 0)] * 8) + rows(
            "device-1", "wifi", [(32, 0)] * 8)
        with self.assertRaises(SystemExit):
            compare.readapt(clients, (6, [(0, 1)]))

    def test_parse_swap(self):
        self.assertEqual(compare.parse_swap("16:0-12,1-13"),
                         (16, [(0, 12), (1, 13)]))


def write_run(seed_dir, name, strategy, base, bpb_by_round, final=None,
              arms=None):
    """A run directory as fedge-sim leaves it: 10 s rounds; `arms`: each
    device's (rank, ratio) per round, on one link."""
    run = os.path.join(seed_dir, name)
    folder = os.path.join(run, strategy.replace(":", "-"))
    os.makedirs(folder)
    json.dump({"base": base, "strategies": [
        {"strategy": strategy, "final": final or bpb_by_round[-1]}]},
        open(os.path.join(run, "summary.json"), "w"))
    with open(os.path.join(folder, "rounds.csv"), "w") as f:
        w = csv.writer(f)
        w.writerow(["round", "round_s", "committed", "test_bits_per_byte"])
        for i, v in enumerate(bpb_by_round):
            w.writerow([i + 1, 10, 1, v])
    with open(os.path.join(folder, "clients.csv"), "w") as f:
        w = csv.DictWriter(f, ["round", "device", "link", "status", "rank",
                               "prune_ratio", "download_s", "train_s",
                               "upload_s"])
        w.writeheader()
        for device, played in enumerate(arms or []):
            for row in rows("device-%d" % device, "lte", played):
                w.writerow(row)
    with open(run + ".log", "w") as f:  # fedge-sim's plan lines.
        for device in range(len(arms or [])):
            f.write("  device-%d: cpu:%g (a board), speed %.2f of a laptop "
                    "core, link lte\n" % (device, 0.1 + device, 0.1 + device))


def printed_figures(seed_dir):
    """{name: value} of the `figure` lines figures() prints for one seed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        compare.figures(0.75, [seed_dir])
    return {line.split()[1]: line.split()[2]
            for line in printed.getvalue().splitlines()
            if line.startswith("figure ")}


class FiguresTest(unittest.TestCase):
    def test_ratios_censoring_and_quality(self):
        with tempfile.TemporaryDirectory() as tmp:
            seed = os.path.join(tmp, "seed_1")
            # Base 3.0; best uniform final 2.0: the target is 2.25 at 0.75.
            write_run(seed, "uniform_0_4", "fixed:0:4", 3.0,
                      [2.8, 2.5, 2.2, 2.0])  # 30 s.
            write_run(seed, "uniform_0_32", "fixed:0:32", 3.0,
                      [2.9, 2.8, 2.7, 2.6])  # Never: censored at 40 s.
            write_run(seed, "fedspine", "fedspine", 3.0, [2.6, 2.2, 2.1])
            write_run(seed, "static", "static", 3.0, [2.7, 2.5, 2.4, 2.3])
            figures = printed_figures(seed)
            self.assertEqual(figures["fedspine_tta_over_best_uniform"],
                             "0.667")  # 20 s over 30 s.
            # static never reaches 2.25: censored at 40 s, and flagged.
            self.assertEqual(figures["static_tta_over_best_uniform_seeds"],
                             "1.333*")
            self.assertEqual(figures["fedspine_tta_over_static_rule_seeds"],
                             "0.500*")
            self.assertEqual(figures["fedspine_bpb_minus_best_uniform"],
                             "0.100")

    def test_the_report_draws_every_panel(self):
        slow, fast = (4, 0.4), (32, 0.0)
        arms = [[slow] * 6, [fast] * 6]
        swapped = [[slow] * 3 + [fast] * 3, [fast] * 3 + [slow] * 3]
        with tempfile.TemporaryDirectory() as tmp:
            seed = os.path.join(tmp, "seed_1")
            for name, strategy, curve, played in (
                    ("uniform_0_32", "fixed:0:32", [2.8, 2.6, 2.4, 2.3, 2.2,
                                                    2.1], arms),
                    ("oracle_1", "fixed:0:32", [2.6, 2.3, 2.2, 2.1, 2.1,
                                                2.1], arms),
                    ("fedspine", "fedspine", [2.7, 2.4, 2.2, 2.1, 2.1, 2.1],
                     arms),
                    ("fedspine_swap", "fedspine", [2.7] * 6, swapped),
                    ("static_swap", "static", [2.7] * 6, arms)):
                write_run(seed, name, strategy, 3.0, curve, arms=played)
            html = os.path.join(tmp, "report.html")
            gate_svg = os.path.join(tmp, "gate.svg")
            with open(gate_svg, "w") as f:
                f.write('<svg id="gate"></svg>')
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                compare.figures(0.75, [seed], (4, [(0, 1)]), html, gate_svg)
            with open(html) as f:
                page = f.read()
            # The gate, time, quality, regret, phases per tier, FedSpine's
            # arms, and its swapped run.
            self.assertEqual(page.count("<svg"), 7)
            self.assertIn('<svg id="gate">', page)
            self.assertIn("speeds 0.1, 1.1", page)
            # Rank 4 trains 4 s.
            self.assertIn("fedspine, speed 0.1: 4.00 s", page)
            self.assertIn("unpruned, rank 32", page)
            self.assertIn("speeds swapped from round 4 (0-1)", page)
            self.assertIn("figure fedspine_readapt_rounds 0.000\n",
                          printed.getvalue())
            self.assertIn("figure static_readapt_rounds 3.000\n",
                          printed.getvalue())  # Never: 3 rounds left.
            self.assertIn("figure static_readapt_rounds_seeds 3*\n",
                          printed.getvalue())

    def test_the_part_at_a_common_sparsity_has_its_own_figures(self):
        with tempfile.TemporaryDirectory() as tmp:
            seed = os.path.join(tmp, "seed_1")
            write_run(seed, "uniform_0_4", "fixed:0:4", 3.0, [2.5, 2.0])
            write_run(seed, "fedspine", "fedspine", 3.0, [2.4, 2.0])
            sparse = os.path.join(seed, "sparse")
            # Target 3.0 - 0.75 x (3.0 - 2.2) = 2.4.
            write_run(sparse, "uniform_0_4", "fixed:0:4", 3.0,
                      [2.8, 2.5, 2.4, 2.2])
            write_run(sparse, "fedspine", "fedspine", 3.0, [2.6, 2.4, 2.3])
            write_run(sparse, "oneshot", "fixed:0:4", 3.0, [2.9, 2.9, 2.7])
            figures = printed_figures(seed)
            self.assertEqual(figures["sparse_fedspine_tta_over_best_uniform"],
                             "0.667")  # 20 s over 30 s.
            self.assertEqual(figures["sparse_fedspine_tta_over_oneshot_seeds"],
                             "0.667*")  # One-shot never: 30 s, censored.
            self.assertEqual(figures["sparse_fedspine_bpb_minus_best_uniform"],
                             "0.100")
            self.assertNotIn("sparse_oracle_tta_over_best_uniform", figures)
            self.assertIn("fedspine_tta_over_best_uniform", figures)

    def test_tta_is_censored_at_the_last_round(self):
        rounds = [{"round_s": "5", "committed": "1",
                   "test_bits_per_byte": "2.5"}] * 3
        self.assertEqual(gate.tta(rounds, 2.4), (15.0, True))
        self.assertEqual(gate.tta(rounds, 2.5), (5.0, False))


if __name__ == "__main__":
    unittest.main()
