// fedge-coordinator: the server of a fedge federation. Every flag is
// documented in --help; any flag may also come from a file with
// --flagfile=FILE (one --name=value per line; see deploy/coordinator.flags).
#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

#include "cli/cli.h"
#include "coordinator/engine_flags.h"
#include "coordinator/server.h"
#include "model/block_cache.h"
#include "model/dataset.h"
#include "model/threads.h"
#include "strategies/server_optimizer.h"
#include "task/task_flags.h"
#include <sys/resource.h>

ABSL_FLAG(bool, evaluate, true,
          "Read the task's data: evaluate the global model on its held-out "
          "part and measure pruning costs on its public part (false: no data "
          "on this machine; no metric in rounds.csv, no pruning cost).");
ABSL_FLAG(int64_t, eval_examples, 0,
          "Held-out examples to evaluate on (0: the task's "
          "evaluation.examples).");
ABSL_FLAG(int64_t, eval_every, 1, "Evaluate every N committed rounds.");
ABSL_FLAG(int64_t, validation_examples, 256,
          "Examples of the task's public split (which no device holds) on "
          "which the coordinator measures what each pruning ratio costs the "
          "global model (--reward_pruning_cost); 0: not measured.");
ABSL_FLAG(std::string, run_dir, "runs/coordinator",
          "Where clients.csv, rounds.csv and checkpoint/ go.");
ABSL_FLAG(std::string, upload_staging_dir, "",
          "Where uploads wait between their last byte and the acceptance of "
          "their update, as unnamed files that vanish with the coordinator "
          "(empty: RUN_DIR/uploads). Dense updates are the model's size: on "
          "disk, the coordinator's memory does not grow with the devices "
          "uploading at once. In --mode=dense the base model is served from "
          "an unnamed file here too, so the coordinator holds it once.");
ABSL_FLAG(int64_t, upload_staging_min_kb, 1024,
          "Uploads declaring at least this many KiB go to "
          "--upload_staging_dir, smaller ones (LoRA adapters) stay in memory; "
          "-1: every upload, and a dense base, in memory.");
ABSL_FLAG(int64_t, tensor_cache_mb, 1024,
          "Dense mode: tensors of 256 KiB or more get memory of their own, "
          "and once freed up to this many MiB of it is kept for the next "
          "tensor of the same size (model/block_cache.h): rounds allocate "
          "the same model-sized buffers again and again, and reusing them "
          "keeps the heap from growing round over round and spares faulting "
          "them in again. It never holds more than the largest amount such "
          "tensors held at once. 0: off, tensors come from malloc.");
ABSL_FLAG(bool, resume, false,
          "Continue the federation checkpointed in --run_dir (an error if "
          "there is no checkpoint).");
ABSL_FLAG(bool, resume_if_present, false,
          "Continue the checkpointed federation if there is one, else start "
          "a new one (for service managers that restart the coordinator).");
ABSL_FLAG(std::string, listen, "0.0.0.0:7070",
          "gRPC address (port 0 picks a free one and prints it).");
ABSL_FLAG(bool, insecure, false,
          "Serve without TLS (development only). Without it, --tls_cert and "
          "--tls_key are required.");
ABSL_FLAG(std::string, tls_cert, "", "Server certificate chain (PEM).");
ABSL_FLAG(std::string, tls_key, "", "Server private key (PEM).");
ABSL_FLAG(std::string, tls_ca, "",
          "CA of client certificates; with --mtls, required.");
ABSL_FLAG(bool, mtls, false,
          "Mutual TLS: clients must present a certificate whose common name "
          "is their device id.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address; empty disables it.");
ABSL_FLAG(int64_t, retry_after_ms, 500,
          "How long a device without a task waits before asking again.");
ABSL_FLAG(double, max_registrations_per_s, 100,
          "Register calls allowed a second (with --registration_burst saved "
          "up); more get RESOURCE_EXHAUSTED and clients retry. 0: no limit.");
ABSL_FLAG(double, registration_burst, 1000,
          "Registrations allowed at once above the steady rate (a fleet "
          "coming back after an outage).");
ABSL_FLAG(double, stream_idle_timeout_s, 60,
          "Cancel a download, upload or split stream with no message for "
          "this long (slow-loris peers; clients resume). 0: never.");
ABSL_FLAG(int, rpc_workers, 4,
          "Threads in each of two pools, one answering GetTask (task "
          "builds), the other SubmitUpdate (decoding, folding) and split "
          "steps, so that gRPC's own threads only read requests and answer "
          "(>= 1).");
ABSL_FLAG(int64_t, decode_budget_mb, 64,
          "MiB of uploaded updates decoded, checked and folded at once; "
          "further submissions wait their turn, their uploads staged. Bounds "
          "the coordinator's memory with dense updates (each costs a few "
          "times its size in hand; one larger than the budget runs alone). "
          "0: no bound.");
ABSL_FLAG(int, threads, 0, "LibTorch threads for evaluation (0: all).");
ABSL_FLAG(bool, quiet, false, "No per-round progress lines.");

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_signalled{false};
extern "C" void OnSignal(int) {
  g_signalled = true;
  g_stop = true;
}

using fedge::cli::Fail;

absl::StatusOr<fedge::coordinator::ServerConfig> ConfigFromFlags() {
  namespace fc = fedge::coordinator;
  fc::ServerConfig c;
  absl::StatusOr<fedge::task::TaskSpec> task = fedge::task::TaskFromFlags();
  if (!task.ok()) return task.status();
  c.task = *std::move(task);
  c.evaluate = absl::GetFlag(FLAGS_evaluate);
  c.eval_examples = absl::GetFlag(FLAGS_eval_examples);
  c.eval_every = absl::GetFlag(FLAGS_eval_every);
  c.validation_examples = absl::GetFlag(FLAGS_validation_examples);
  if (c.eval_every < 1) {
    return absl::InvalidArgumentError("--eval_every must be >= 1");
  }
  c.run_dir = absl::GetFlag(FLAGS_run_dir);
  c.upload_staging_dir = absl::GetFlag(FLAGS_upload_staging_dir);
  const int64_t staging_kb = absl::GetFlag(FLAGS_upload_staging_min_kb);
  if (staging_kb < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--upload_staging_min_kb must be -1 (memory) or >= 0, not ",
        staging_kb));
  }
  c.upload_staging_min_bytes = staging_kb < 0 ? -1 : staging_kb * 1024;
  c.resume = absl::GetFlag(FLAGS_resume);
  c.resume_if_present = absl::GetFlag(FLAGS_resume_if_present);
  c.listen = absl::GetFlag(FLAGS_listen);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.quiet = absl::GetFlag(FLAGS_quiet);
  c.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  c.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  c.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  c.tls.require_client_cert = absl::GetFlag(FLAGS_mtls);
  if (absl::GetFlag(FLAGS_insecure)) {
    if (!c.tls.insecure() || c.tls.require_client_cert) {
      return absl::InvalidArgumentError(
          "--insecure cannot be combined with --tls_* or --mtls");
    }
  } else if (c.tls.cert_file.empty() || c.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS is the default: pass --tls_cert and --tls_key (and --tls_ca "
        "with --mtls), or --insecure for local development");
  } else if (c.tls.require_client_cert && c.tls.ca_file.empty()) {
    return absl::InvalidArgumentError("--mtls needs --tls_ca");
  }

  absl::StatusOr<fc::EngineOptions> engine =
      fc::EngineOptionsFromFlags(c.task.objective);
  if (!engine.ok()) return engine.status();
  if (engine->bandit.kind == fedge::strategies::BanditKind::kOracle) {
    return absl::InvalidArgumentError(
        "--bandit=oracle needs each arm's expected reward; only fedge-sim, "
        "which knows its profiles, can run it");
  }
  c.engine = *std::move(engine);
  c.service.retry_after_ms = absl::GetFlag(FLAGS_retry_after_ms);
  c.service.max_registrations_per_s =
      absl::GetFlag(FLAGS_max_registrations_per_s);
  c.service.registration_burst = absl::GetFlag(FLAGS_registration_burst);
  const double idle = absl::GetFlag(FLAGS_stream_idle_timeout_s);
  if (c.service.max_registrations_per_s < 0 ||
      c.service.registration_burst < 1 || idle < 0) {
    return absl::InvalidArgumentError(
        "--max_registrations_per_s and --stream_idle_timeout_s must be >= 0, "
        "--registration_burst >= 1");
  }
  c.service.stream_idle_timeout =
      idle > 0 ? absl::Seconds(idle) : absl::InfiniteDuration();
  const int64_t decode_budget_mb = absl::GetFlag(FLAGS_decode_budget_mb);
  if (decode_budget_mb < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--decode_budget_mb must be >= 0 (0: no bound), not ",
                     decode_budget_mb));
  }
  c.service.decode_budget_bytes = decode_budget_mb << 20;
  // Used by main(), which installs the cache before the server starts.
  if (absl::GetFlag(FLAGS_tensor_cache_mb) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tensor_cache_mb must be 0 (off) or more, not ",
                     absl::GetFlag(FLAGS_tensor_cache_mb)));
  }
  c.service.workers = absl::GetFlag(FLAGS_rpc_workers);
  if (c.service.workers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rpc_workers must be >= 1, not ", c.service.workers));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Runs a fedge coordinator: rounds, the FedSpine bandit, aggregation, "
          "checkpoints and metrics.\nUsage: fedge-coordinator "
          "[--flag=value...] [--flagfile=FILE]");
      !s.ok()) {
    return Fail(s);
  }
  absl::StatusOr<fedge::coordinator::ServerConfig> config = ConfigFromFlags();
  if (!config.ok()) return Fail(config.status());
  fedge::model::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  // Dense rounds pass model-sized buffers through many threads (gRPC's and
  // the workers'); glibc gives each thread an arena of its own, and what
  // the arenas kept of the freed buffers added up: one arena cut the
  // coordinator's peak at 4 dense devices from 1,019 to 649 MiB (bench/run
  // dense). LoRA keeps glibc's default: there one arena cost a 500-device
  // load run a fifth of its updates a second. MALLOC_ARENA_MAX wins.
  if (config->engine.mode == fedge::coordinator::Mode::kDense &&
      std::getenv("MALLOC_ARENA_MAX") == nullptr) {
    mallopt(M_ARENA_MAX, 1);
  }
  if (config->engine.mode == fedge::coordinator::Mode::kDense &&
      absl::GetFlag(FLAGS_tensor_cache_mb) > 0) {
    fedge::model::BlockCacheOptions cache;
    cache.cache_bytes =
        static_cast<size_t>(absl::GetFlag(FLAGS_tensor_cache_mb)) << 20;
    absl::StatusOr<fedge::model::BlockCache*> installed =
        fedge::model::InstallBlockCache(cache);
    if (!installed.ok()) return Fail(installed.status());
  }
  // One socket per device, and one staged file per large upload waiting
  // for its submission: the soft limit on open files (often 1024) would
  // refuse devices long before the hard one.
  if (struct rlimit files; getrlimit(RLIMIT_NOFILE, &files) == 0 &&
                           files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  auto server = fedge::coordinator::CoordinatorServer::Start(*config);
  if (!server.ok()) return Fail(server.status());
  std::printf(
      "fedge-coordinator: serving on port %d (%s), task %s, base %s, "
      "digest %.12s..., metrics %s, run dir %s, server step %s\n",
      (*server)->port(), config->tls.insecure() ? "insecure" : "TLS",
      config->task.name.c_str(), config->task.base_dir.c_str(),
      (*server)->base_digest().c_str(),
      (*server)->metrics_port() > 0
          ? absl::StrCat("port ", (*server)->metrics_port()).c_str()
          : "off",
      config->run_dir.c_str(),
      fedge::strategies::Describe(config->engine.server_optimizer).c_str());
  if (const std::string privacy =
          fedge::coordinator::PrivacySummary(config->engine);
      !privacy.empty()) {
    std::printf("fedge-coordinator: %s\n", privacy.c_str());
  }
  std::fflush(stdout);
  std::thread watcher([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!g_signalled) return;
    std::printf(
        "fedge-coordinator: stopping (the last completed round is "
        "checkpointed; --resume continues)\n");
    std::fflush(stdout);
    (*server)->Stop();
  });
  const absl::Status status = (*server)->Wait();
  g_stop = true;
  watcher.join();
  if (!status.ok()) return Fail(status);
  std::printf("fedge-coordinator: done; records in %s\n",
              config->run_dir.c_str());
  return 0;
}
