// The virtual-clock federation: the real round engine (the coordinator's
// bandits, selection, deadlines, aggregation and prune-and-tune) driven
// in-process on simulated time, for federations of hundreds to thousands
// of devices on a 2-core machine.
//
// Each round the engine invites its sample of devices (e.g. --selection=
// random --clients_per_round=10 of 1000); every invited device trains for
// real (client::TrainLocally, the client daemon's own code, one LibTorch
// thread per device, `workers` devices at a time), encodes its update with
// the task's codec, and the engine receives the decoded update, as over
// gRPC. Nothing is slept: each device's time is charged from its profiles,
//
//   download = RTT + payload bytes (as the coordinator serves them)
//                    / link downlink rate
//   compute  = the FLOPs it trained (client::LocalResult::train_flops)
//               x this machine's CPU seconds (build + train + encode) per
//               training FLOP, measured once on the first job (its
//               training the least of 3 timings) and shared through the
//               compute-cost table (sim/compute_costs.h)
//               / device relative speed (this machine's core = laptop);
//               split tasks: the CPU seconds of its thread as measured
//               (CPU time, not wall time: waiting for a core is free)
//   upload   = RTT + encoded update bytes / link uplink rate
//
// and the engine sees its update at round open + download + compute +
// upload, in finishing order, with deadlines, stragglers and memory-budget
// declines as in a real run. The engine's own work (aggregating, measuring
// any pruning cost a round lacks as it opens) is charged as the CPU seconds
// of the thread that drives it (this machine's core stands for the
// server). Its measuring of the next round's pruning costs, once the
// round's tasks are out, overlaps the devices' work: no update is heard
// before it is done.
// Under secure aggregation (EngineOptions::secure) every device's part in
// the exchange runs through the engine too (sim/secure_exchange.h): the key
// exchange beside downloads and training, its change, encoding and masking
// as its compute, its masked vector as its upload, and the round's
// unmasking charged before it closes.
// The run directory gets the coordinator's clients.csv and rounds.csv
// (unix_time is virtual seconds since the start), so sim/report.h reads it
// like a real run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"

#include "coordinator/engine.h"
#include "sim/profiles.h"
#include "task/spec.h"

namespace fedge::sim {

struct VirtualConfig {
  // The task (base, held-out data, the devices' shards: task/task_data.h).
  task::TaskSpec task = task::FashionMnistTask();
  // Gets clients.csv and rounds.csv, and the result: model/ and, in LoRA
  // mode with an unpruned global model, adapter/ (coordinator::FinalExport).
  std::string run_dir;
  int64_t eval_examples = 2000;
  // Examples of the public split (never in a device's shard) the engine
  // measures each task's pruning cost on (EngineHooks::validation_loss);
  // 0: not measured.
  int64_t validation_examples = 256;
  int64_t eval_every = 1;
  std::vector<DeviceProfile> devices;  // One per device.
  // Devices that trade compute speeds from a round on (ParseSpeedSwap).
  SpeedSwap swap;
  std::vector<std::string> links;  // Link specs, one per device.
  int workers = 1;  // Devices trained at once (each on one thread).
  // The compute-cost table (sim/compute_costs.h) to read and extend; empty:
  // one kept in memory for this run (calibrated on its first job).
  std::string compute_costs;
  // Resident bytes of a client process before training (runtime, shard,
  // sub-model), added to the training estimate for the memory check;
  // fedge-client measured ~200 MB on the default task (bench/run client).
  int64_t runtime_bytes = 200LL << 20;
  // Hostile devices (docs/reliability.md): the first `malicious` devices
  // replace their trained update u (sent the payload p) by
  //   scale     p + attack_scale * (u - p)
  //   signflip  p - attack_scale * (u - p)
  //   nan       u with a NaN (crafted past the encoder, which refuses it)
  // The coordinator must reject what it can recognise (NaN) and the
  // aggregator must bound the rest.
  int64_t malicious = 0;
  std::string attack = "signflip";
  double attack_scale = 10.0;
  std::FILE* progress = nullptr;  // Per-round lines; null: silent.
};

// Runs the federation `engine` describes to its end. InvalidArgument for
// a bad configuration, the engine's failure if it gave up on a round.
absl::Status RunVirtualFederation(const VirtualConfig& config,
                                  const coordinator::EngineOptions& engine);

}  // namespace fedge::sim
