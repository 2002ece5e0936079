#!/usr/bin/env python3
"""Dense FedAvg of a ~10M-parameter model over loopback (issue 27).

Runs a real fedge-coordinator (--mode=dense, plain FedAvg of every weight,
one local step per round) and N real fedge-client processes on 127.0.0.1,
for each N in --clients, and measures where a round's time and memory go:

  per round   round_s (coordinator's rounds.csv), the longest pure training
              time (each client's train_s; model build and update encoding
              reported apart), overhead = round_s - longest train_s, bytes
              each way (clients.csv)
  per run     the coordinator's peak RSS, CPU seconds (kernel share apart)
              and page faults, each client's true
              peak RSS (VmHWM sampled every 50 ms: a client resets the
              kernel's counter each round, so its exit rusage is not the peak)

Steady figures are the median of rounds 2..R. In the same run it measures
the physical references: loopback TCP throughput (fedge-bench-transport's
raw-socket part, as `bench/run transport`) and memcpy bandwidth, and reports
the overhead also as a multiple of (bytes moved / loopback throughput).

Then compressed downloads (--download_codec=int8_row against float32, both
with zstd): the bytes down per steady round with 4 clients on the same
model, and the accuracy effect where training moves the model: the default
ViT, 4 clients, 10 rounds of 10 steps, same seeds, full test set.

Prints a table on stderr and `metric NAME VALUE` lines on stdout.

Usage: dense.py BIN_DIR OUT_DIR [--clients=4,16] [--rounds=5] [--threads=1]
"""
import argparse
import csv
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A ViT of 9.9M parameters on Fashion-MNIST: the shape the issue measured.
VIT_FLAGS = ["--dim=320", "--heads=4", "--mlp_hidden=1280", "--layers=8"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    """VmHWM and VmRSS of a live process in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M))
    if "VmHWM" not in values:
        return None
    return int(values["VmHWM"]) / 1024.0, int(values["VmRSS"]) / 1024.0


class PeakSampler(threading.Thread):
    """Largest VmHWM / VmRSS seen per pid, sampled every `period` s while
    the `with` block runs."""

    def __init__(self, period=0.05):
        super().__init__(daemon=True)
        self.period = period
        self.pids = {}
        self.peak = {}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def watch(self, name, pid):
        with self.lock:
            self.pids[name] = pid
            self.peak[name] = 0.0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()

    def run(self):
        while not self.done.is_set():
            with self.lock:
                items = list(self.pids.items())
            for name, pid in items:
                status = proc_status(pid)
                if status is not None:
                    with self.lock:
                        self.peak[name] = max(self.peak[name], *status)
            self.done.wait(self.period)


def memcpy_gb_per_s():
    """Best of 5 copies of 256 MiB (numpy's copy is a memcpy)."""
    src = np.ones(64 << 20, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return src.nbytes / best / 1e9


def metric_values(text):
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^metric (\S+) (\S+)$", text, re.M)}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pretrain(bin_dir, base, task, vit_flags=VIT_FLAGS):
    """The task's base in `base`, unless an earlier run left it there."""
    if os.path.exists(os.path.join(base, "metrics.json")):
        return
    log(f"dense: pretraining a ViT base {' '.join(vit_flags) or '(default)'} "
        "(a few steps)")
    subprocess.run(
        [os.path.join(bin_dir, "fedge-pretrain"), f"--task={task}",
         f"--out={base}", "--epochs=1", "--progress_every=1000000",
         "--task_set=simulation.public_fraction=0.01",
         "--task_set=evaluation.examples=256"] + vit_flags,
        check=True, stdout=subprocess.DEVNULL)


def startup_peak_mb(bin_dir, out, task):
    """A client's start-up peak: it loads its shard, then finds no
    coordinator and gives up, so its whole life is start-up. The sampled
    VmHWM only: the exit rusage's ru_maxrss keeps the high-water mark of
    the memory the child had before exec, a copy of this Python process
    (hundreds of MiB after the memcpy reference), not the client's own."""
    with PeakSampler(period=0.01) as sampler:
        p = subprocess.Popen(
            [os.path.join(bin_dir, "fedge-client"), "--insecure",
             f"--coordinator=127.0.0.1:{free_port()}", f"--task={task}",
             "--device_id=startup", "--shard=0/16", "--quiet",
             "--benchmark=false", "--give_up_after_s=1",
             f"--cache_dir={out}/startup_cache"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler.watch("client", p.pid)
        p.wait()
    return sampler.peak["client"]


def wait_federation(coordinator, procs, grace_s=60, limit_s=3600):
    """Waits for the coordinator (its rusage kept in coordinator.usage)
    and the clients; returns what failed. Clients still running `grace_s`
    after the coordinator exited are killed and reported (they would
    retry a dead coordinator for --give_up_after_s), as is everything
    still running after `limit_s`."""
    failed, pending = [], dict(enumerate(procs))
    start, exited_at = time.time(), None
    while pending or exited_at is None:
        if exited_at is None:
            pid, status, usage = os.wait4(coordinator.pid, os.WNOHANG)
            if pid:
                exited_at, coordinator.usage = time.time(), usage
                coordinator.returncode = os.waitstatus_to_exitcode(status)
                if coordinator.returncode != 0:
                    failed.append(f"coordinator exited {coordinator.returncode}")
        for i, p in list(pending.items()):
            if p.poll() is not None:
                if p.returncode != 0:
                    failed.append(f"client {i} exited {p.returncode}")
                del pending[i]
        late = exited_at is not None and time.time() - exited_at > grace_s
        if late or time.time() - start > limit_s:
            for i, p in pending.items():
                p.kill()
                p.wait()
                failed.append(f"client {i} still running "
                              + (f"{grace_s} s after the coordinator exited"
                                 if late else f"after {limit_s} s"))
            pending.clear()
            if exited_at is None:
                coordinator.kill()
                _, _, coordinator.usage = os.wait4(coordinator.pid, 0)
                exited_at = time.time()
                failed.append(f"coordinator still running after {limit_s} s")
        time.sleep(0.2)
    return failed


def run_federation(bin_dir, out, task, clients, rounds, threads, name=None,
                   flags=()):
    """One coordinator and `clients` client processes; returns the figures.
    `flags` go to the coordinator after the defaults (the last one wins)."""
    run_dir = os.path.join(out, name or f"run_{clients}")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    os.makedirs(run_dir)
    port = free_port()
    coordinator_cmd = [
        os.path.join(bin_dir, "fedge-coordinator"), "--insecure",
        f"--listen=127.0.0.1:{port}", f"--task={task}", "--mode=dense",
        f"--rounds={rounds}", f"--min_devices={clients}", "--max_steps=1",
        "--bandit=fixed", "--fixed_ratio=0", "--upload_codec=float32",
        "--zstd=false",
        "--batch_size=32", "--evaluate=false", "--metrics_listen=",
        f"--run_dir={run_dir}/coordinator", "--quiet", "--retry_after_ms=50",
        f"--threads={threads}", "--deadline_s=600"] + list(flags)
    with PeakSampler() as sampler:
        coordinator_log = open(os.path.join(run_dir, "coordinator.log"), "w")
        coordinator = subprocess.Popen(coordinator_cmd, stdout=coordinator_log,
                                       stderr=subprocess.STDOUT)
        sampler.watch("coordinator", coordinator.pid)
        procs = []
        for i in range(clients):
            client_log = open(os.path.join(run_dir, f"client{i}.log"), "w")
            p = subprocess.Popen(
                [os.path.join(bin_dir, "fedge-client"), "--insecure",
                 f"--coordinator=127.0.0.1:{port}", f"--task={task}",
                 f"--device_id=dense{i}", f"--shard={i}/{clients}",
                 f"--threads={threads}", "--quiet", "--benchmark=false",
                 f"--cache_dir={run_dir}/cache{i}",
                 f"--report_csv={run_dir}/client{i}.csv"],
                stdout=client_log, stderr=subprocess.STDOUT)
            sampler.watch(f"client{i}", p.pid)
            procs.append(p)
        failed = wait_federation(coordinator, procs)
    if failed:
        raise SystemExit(f"dense: {clients} clients: " + "; ".join(failed) +
                         f" (logs in {run_dir})")

    round_rows = [r for r in read_csv(f"{run_dir}/coordinator/rounds.csv")
                  if r["committed"] == "1"]
    client_rows = read_csv(f"{run_dir}/coordinator/clients.csv")
    local = [read_csv(f"{run_dir}/client{i}.csv") for i in range(clients)]
    per_round = []
    for r in round_rows:
        n = int(r["round"])
        accepted = [c for c in client_rows
                    if int(c["round"]) == n and c["status"] == "accepted"]
        mine = [row for rows in local for row in rows if int(row["round"]) == n]
        if len(accepted) != clients or len(mine) != clients:
            raise SystemExit(
                f"dense: round {n} has {len(accepted)} accepted updates and "
                f"{len(mine)} client records, want {clients} of each: the "
                "records are inconsistent, no figure")
        train = max(float(row["train_s"]) for row in mine)
        per_round.append({
            "round": n,
            "round_s": float(r["round_s"]),
            "train_s": train,
            "build_s": max(float(row["build_s"]) for row in mine),
            "encode_s": max(float(row["encode_s"]) for row in mine),
            "overhead_s": float(r["round_s"]) - train,
            "bytes_down": sum(int(c["bytes_down"]) for c in accepted),
            "bytes_up": sum(int(c["bytes_up"]) for c in accepted),
        })
    if len(per_round) != rounds:
        raise SystemExit(f"dense: {len(per_round)} of {rounds} rounds committed")
    evaluated = [r["accuracy"] for r in round_rows if r["accuracy"]]
    client_peaks = [sampler.peak[f"client{i}"] for i in range(clients)]
    coordinator_peak = sampler.peak["coordinator"]
    return {
        "rounds": per_round,
        "coordinator_cpu_s": (coordinator.usage.ru_utime
                              + coordinator.usage.ru_stime),
        "coordinator_sys_s": coordinator.usage.ru_stime,
        "coordinator_minor_faults": coordinator.usage.ru_minflt,
        # Sampled only (see startup_peak_mb for why not ru_maxrss).
        "coordinator_peak_mb": coordinator_peak,
        "client_peak_mb": client_peaks,
        "final_accuracy": float(evaluated[-1]) if evaluated else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bin_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--clients", default="4,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="LibTorch threads per process")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    task = os.path.join(args.out_dir, "task.json")
    with open(os.path.join(ROOT, "tasks", "fashion-mnist.json")) as f:
        spec = json.load(f)
    spec["base"] = os.path.join(args.out_dir, "base")
    with open(task, "w") as f:
        json.dump(spec, f)
    pretrain(args.bin_dir, spec["base"], task)
    model_bytes = os.path.getsize(
        os.path.join(spec["base"], "model.safetensors"))

    log("dense: physical references (loopback TCP, memcpy)")
    transport = subprocess.run(
        [os.path.join(args.bin_dir, "fedge-bench-transport"),
         "--only=throughput"], check=True, capture_output=True, text=True)
    tcp_mb_per_s = metric_values(transport.stdout)["tcp_mb_per_s"]
    memcpy = memcpy_gb_per_s()
    print(f"metric dense_model_mb {model_bytes / 1e6:.1f}")
    print(f"metric loopback_tcp_mb_per_s {tcp_mb_per_s:.1f}")
    print(f"metric memcpy_gb_per_s {memcpy:.2f}")

    # The default task's client (Fashion-MNIST, shard 1 of 16).
    startup = startup_peak_mb(args.bin_dir, args.out_dir,
                              os.path.join(ROOT, "tasks", "fashion-mnist.json"))
    print(f"metric client_peak_rss_mb_startup {startup:.0f}")

    total_bytes = 0
    total_cpu = 0.0
    for clients in [int(c) for c in args.clients.split(",")]:
        log(f"dense: {clients} clients x {args.rounds} rounds")
        run = run_federation(args.bin_dir, args.out_dir, task, clients,
                             args.rounds, args.threads)
        steady = run["rounds"][1:] or run["rounds"]
        med = {key: statistics.median(r[key] for r in steady)
               for key in ("round_s", "train_s", "build_s", "encode_s",
                           "overhead_s", "bytes_down", "bytes_up")}
        moved = med["bytes_down"] + med["bytes_up"]
        wire_s = moved / (tcp_mb_per_s * 1e6)
        for r in run["rounds"]:
            log(f"  round {r['round']}: {r['round_s']:.2f} s, train "
                f"{r['train_s']:.2f} s (build {r['build_s']:.2f}, encode "
                f"{r['encode_s']:.2f}), overhead {r['overhead_s']:.2f} s, "
                f"{r['bytes_down'] / 1e6:.0f} MB down, "
                f"{r['bytes_up'] / 1e6:.0f} MB up")
        log(f"  coordinator: peak {run['coordinator_peak_mb']:.0f} MiB, "
            f"CPU {run['coordinator_cpu_s']:.1f} s; client peaks "
            + " ".join(f"{p:.0f}" for p in run["client_peak_mb"]) + " MiB")
        n = clients
        print(f"metric dense_round_s_{n}_clients {med['round_s']:.3f}")
        print(f"metric dense_train_s_{n}_clients {med['train_s']:.3f}")
        print(f"metric dense_build_s_{n}_clients {med['build_s']:.3f}")
        print(f"metric dense_encode_s_{n}_clients {med['encode_s']:.3f}")
        print(f"metric dense_overhead_s_{n}_clients {med['overhead_s']:.3f}")
        print(f"metric dense_mb_moved_per_round_{n}_clients {moved / 1e6:.1f}")
        print(f"metric dense_overhead_over_wire_time_{n}_clients "
              f"{med['overhead_s'] / wire_s:.2f}")
        print(f"metric dense_coordinator_rss_mb_{n}_clients "
              f"{run['coordinator_peak_mb']:.0f}")
        print(f"metric dense_coordinator_rss_over_model_{n}_clients "
              f"{run['coordinator_peak_mb'] * (1 << 20) / model_bytes:.2f}")
        print(f"metric dense_coordinator_cpu_s_{n}_clients "
              f"{run['coordinator_cpu_s']:.1f}")
        print(f"metric dense_coordinator_sys_s_{n}_clients "
              f"{run['coordinator_sys_s']:.1f}")
        print(f"metric dense_coordinator_page_faults_{n}_clients "
              f"{run['coordinator_minor_faults']}")
        print(f"metric dense_client_peak_rss_mb_max_{n}_clients "
              f"{max(run['client_peak_mb']):.0f}")
        total_bytes += sum(r["bytes_down"] + r["bytes_up"] for r in run["rounds"])
        total_cpu += run["coordinator_cpu_s"]
    print(f"metric dense_coordinator_cpu_s_per_gb_moved "
          f"{total_cpu / (total_bytes / 1e9):.2f}")

    downlink(args, task)


def downlink(args, task):
    """Compressed downloads (--download_codec): the bytes on the 10M model,
    then the accuracy effect where training moves the model, on the default
    ViT (fast enough for 10 rounds of 10 steps), float32 against int8_row
    with the same seeds, shards and schedule."""
    clients = 4
    log(f"dense: {clients} clients x {args.rounds} rounds, int8_row downloads")
    runs = {}
    for codec in ("float32", "int8_row"):
        runs[codec] = run_federation(
            args.bin_dir, args.out_dir, task, clients, args.rounds,
            args.threads, name=f"down_{codec}",
            flags=[f"--download_codec={codec}", "--zstd=true"])
    # Round 1 has no previous version to change from: steady rounds only.
    down = {codec: statistics.median(r["bytes_down"]
                                     for r in run["rounds"][1:])
            for codec, run in runs.items()}
    log(f"  bytes down per steady round: float32 {down['float32'] / 1e6:.1f}"
        f" MB, int8_row {down['int8_row'] / 1e6:.1f} MB; coordinator peak "
        f"{runs['int8_row']['coordinator_peak_mb']:.0f} MiB with int8_row")
    print(f"metric dense_downlink_bytes_over_float32 "
          f"{down['int8_row'] / down['float32']:.3f}")
    print(f"metric dense_coordinator_rss_mb_4_clients_int8_download "
          f"{runs['int8_row']['coordinator_peak_mb']:.0f}")

    small = os.path.join(args.out_dir, "small_task.json")
    with open(task) as f:
        spec = json.load(f)
    spec["base"] = os.path.join(args.out_dir, "small_base")
    with open(small, "w") as f:
        json.dump(spec, f)
    pretrain(args.bin_dir, spec["base"], small, vit_flags=[])
    rounds = 10
    accuracy = {}
    for codec in ("float32", "int8_row"):
        log(f"dense: accuracy, default ViT, {clients} clients x {rounds} "
            f"rounds of 10 steps, {codec} downloads")
        run = run_federation(
            args.bin_dir, args.out_dir, small, clients, rounds, args.threads,
            name=f"accuracy_{codec}",
            flags=[f"--download_codec={codec}", "--zstd=true",
                   "--max_steps=10", "--evaluate=true",
                   "--eval_examples=10000", f"--eval_every={rounds}"])
        if run["final_accuracy"] is None:
            raise SystemExit(f"dense: the {codec} accuracy run recorded no "
                             "evaluation: no figure")
        accuracy[codec] = run["final_accuracy"]
        log(f"  final accuracy {accuracy[codec]:.4f}")
    print(f"metric dense_accuracy_float32_download {accuracy['float32']:.4f}")
    print(f"metric dense_accuracy_int8_row_download {accuracy['int8_row']:.4f}")
    print(f"metric dense_int8_download_accuracy_change "
          f"{accuracy['int8_row'] - accuracy['float32']:+.4f}")


if __name__ == "__main__":
    main()
