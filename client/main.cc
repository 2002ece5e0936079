// fedge-client: the daemon on an edge device. It joins a coordinator and
// fine-tunes on local data every round until the federation finishes.
// Every flag is in --help; --flagfile=FILE reads them from a file (see
// deploy/client.flags).
#include <atomic>
#include <csignal>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include <glog/logging.h>

#include "cli/cli.h"
#include "client/participant.h"
#include "metrics/csv.h"
#include "model/threads.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "task/task_flags.h"
#include "transport/channel_options.h"
#include "transport/task_proto.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070",
          "Coordinator address host:port.");
ABSL_FLAG(std::string, device_id, "",
          "This device's id (letters, digits, '.', '_', '-'); required. "
          "With mutual TLS it must equal the certificate's common name.");
ABSL_FLAG(std::string, link, "",
          "Link type to report: ethernet, wifi, lte, 5g-sa (empty: unknown).");
ABSL_FLAG(std::string, data, "",
          "This device's own training data in the task's format: a text file "
          "or a directory of them (causal_lm), or a directory with "
          "Fashion-MNIST IDX training files (image_classification). The "
          "production path. Empty: a simulated shard of the task's public "
          "corpus (--shard).");
ABSL_FLAG(std::string, shard, "0/1",
          "Simulation, without --data: this device holds shard I/N of the "
          "task's corpus (the part its public fraction leaves over, split "
          "as the task's simulation.partition says).");
ABSL_FLAG(std::string, cache_dir, "cache",
          "Where the base model is cached by digest.");
ABSL_FLAG(int, threads, 0, "LibTorch threads (0: all cores).");
ABSL_FLAG(double, compute_slowdown, 1.0,
          "Emulation only, for simulators without cgroups: stretch each "
          "round's local compute to this many times its measured length by "
          "waiting (heartbeating) before the upload, as a slower board "
          "would take; reported as training time. 1: off.");
ABSL_FLAG(int64_t, memory_budget_mb, 0,
          "Memory this process may use (MiB; 0: no limit). A task whose "
          "estimated peak exceeds it is declined and the coordinator told.");
ABSL_FLAG(double, release_memory_after_s, 10,
          "Memory a round freed stays with the process while rounds follow "
          "each other (faulting it in again slowed dense rounds by ~20%); it "
          "goes back to the system after this many seconds without a task, "
          "or at once when a task would otherwise exceed "
          "--memory_budget_mb. 0: before every round.");
ABSL_FLAG(int64_t, max_rounds, 0, "Leave after N rounds (0: until the end).");
ABSL_FLAG(bool, insecure, false, "Connect without TLS (development only).");
ABSL_FLAG(std::string, tls_ca, "", "CA that signed the coordinator (PEM).");
ABSL_FLAG(std::string, tls_cert, "", "Client certificate for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "Client key for mutual TLS.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the coordinator's certificate (default: host).");
ABSL_FLAG(double, give_up_after_s, 1800,
          "Exit if the coordinator is unreachable this long.");
ABSL_FLAG(bool, quiet, false, "No progress lines.");
ABSL_FLAG(std::string, progress_format, "text",
          "Progress on stdout: text (lines for people) or json (one object "
          "per line with device, event, round and the event's numbers, for "
          "log collectors).");
ABSL_FLAG(std::string, report_csv, "",
          "Append this device's own per-round measurements (phase times, "
          "bytes, losses, peak RSS) to this CSV file.");
ABSL_FLAG(bool, benchmark, true, "Time a short matmul at registration.");

namespace {

// A signal that arrives before the participant exists (while the shard
// loads) is remembered and honoured as soon as it does.
std::atomic<fedge::client::Participant*> g_participant{nullptr};
std::atomic<bool> g_stop_requested{false};
extern "C" void OnSignal(int) {
  g_stop_requested = true;
  if (fedge::client::Participant* p = g_participant.load()) p->Stop();
}

using fedge::cli::Fail;

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Runs a fedge client on an edge device.\nUsage: fedge-client "
          "--device_id=ID --coordinator=HOST:PORT [--flag=value...]");
      !s.ok()) {
    return Fail(s);
  }
  fedge::client::ParticipantOptions options;
  options.device_id = absl::GetFlag(FLAGS_device_id);
  if (options.device_id.empty()) {
    return Fail(absl::InvalidArgumentError("--device_id is required"));
  }
  options.link = absl::GetFlag(FLAGS_link);
  if (!options.link.empty() && fedge::transport::ParseLinkType(options.link) ==
                                   fedge::v1::LINK_TYPE_UNSPECIFIED) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--link: '", options.link, "' is not ethernet, wifi, lte or 5g-sa")));
  }
  options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  if (absl::GetFlag(FLAGS_memory_budget_mb) < 0 ||
      absl::GetFlag(FLAGS_max_rounds) < 0 || absl::GetFlag(FLAGS_threads) < 0 ||
      !(absl::GetFlag(FLAGS_release_memory_after_s) >= 0) ||
      !(absl::GetFlag(FLAGS_give_up_after_s) > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--memory_budget_mb, --max_rounds, --threads and "
        "--release_memory_after_s must be >= 0, --give_up_after_s > 0"));
  }
  options.release_memory_after =
      absl::Seconds(absl::GetFlag(FLAGS_release_memory_after_s));
  options.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_mb) << 20;
  options.max_rounds = absl::GetFlag(FLAGS_max_rounds);
  using Progress = fedge::client::ParticipantOptions::Progress;
  const std::string format = absl::GetFlag(FLAGS_progress_format);
  if (format != "text" && format != "json") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--progress_format: '", format, "' is not text or json")));
  }
  options.progress = absl::GetFlag(FLAGS_quiet) ? Progress::kNone
                     : format == "json"         ? Progress::kJson
                                                : Progress::kText;
  options.run_benchmark = absl::GetFlag(FLAGS_benchmark);
  options.compute_slowdown = absl::GetFlag(FLAGS_compute_slowdown);
  if (!(options.compute_slowdown >= 1) || options.compute_slowdown > 1000) {
    return Fail(
        absl::InvalidArgumentError("--compute_slowdown must be in [1, 1000]"));
  }
  options.give_up_after = absl::Seconds(absl::GetFlag(FLAGS_give_up_after_s));

  namespace ft = fedge::task;
  absl::StatusOr<ft::TaskSpec> spec = ft::TaskFromFlags();
  if (!spec.ok()) return Fail(spec.status());
  absl::StatusOr<std::unique_ptr<ft::TaskData>> task_data =
      ft::TaskData::Create(*spec);
  if (!task_data.ok()) return Fail(task_data.status());
  options.task = (*task_data)->Identity();
  absl::StatusOr<fedge::model::Dataset> data;
  if (!absl::GetFlag(FLAGS_data).empty()) {
    data = (*task_data)->DeviceData(absl::GetFlag(FLAGS_data));
  } else {
    int index = 0, count = 0;
    std::vector<std::string> parts =
        absl::StrSplit(absl::GetFlag(FLAGS_shard), '/');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &index) ||
        !absl::SimpleAtoi(parts[1], &count)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--shard: '", absl::GetFlag(FLAGS_shard), "' is not I/N")));
    }
    data = (*task_data)->Shard(index, count);
  }
  if (!data.ok()) return Fail(data.status());
  task_data->reset();  // The data is loaded: end the tokenizer's helper.

  fedge::transport::TlsFiles tls;
  tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  if (absl::GetFlag(FLAGS_insecure) != tls.insecure()) {
    return Fail(absl::InvalidArgumentError(
        tls.insecure() ? "TLS is the default: pass --tls_ca (and --tls_cert/"
                         "--tls_key for mutual TLS), or --insecure"
                       : "--insecure cannot be combined with --tls_*"));
  }
  fedge::model::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      fedge::transport::CreateClientChannel(
          absl::GetFlag(FLAGS_coordinator), {}, tls,
          absl::GetFlag(FLAGS_tls_server_name));
  if (!channel.ok()) return Fail(channel.status());
  auto stub = fedge::v1::Coordinator::NewStub(*channel);
  fedge::client::GrpcCoordinatorLink link(stub.get());
  fedge::client::Participant participant(options, &link, *data);
  std::unique_ptr<fedge::metrics::CsvWriter> report;
  if (!absl::GetFlag(FLAGS_report_csv).empty()) {
    auto writer = fedge::metrics::CsvWriter::Open(
        absl::GetFlag(FLAGS_report_csv),
        {"round", "prune_ratio", "rank", "download_s", "build_s", "train_s",
         "encode_s", "upload_s", "total_s", "bytes_down", "bytes_up",
         "raw_bytes_up", "examples", "loss_before", "loss_after", "peak_rss_mb",
         "estimated_peak_mb"});
    if (!writer.ok()) return Fail(writer.status());
    report = std::move(*writer);
    participant.on_round = [&report](const fedge::client::RoundReport& r) {
      auto f = [](double v) { return absl::StrFormat("%.6g", v); };
      const absl::Status s = report->Write(
          {std::to_string(r.round), f(r.prune_ratio), std::to_string(r.rank),
           f(r.download_s), f(r.build_s), f(r.train_s), f(r.encode_s),
           f(r.upload_s), f(r.total_s), std::to_string(r.bytes_down),
           std::to_string(r.bytes_up), std::to_string(r.raw_bytes_up),
           std::to_string(r.examples), f(r.loss_before), f(r.loss_after),
           f(r.peak_rss_bytes / 1048576.0),
           f(r.estimated_peak_bytes / 1048576.0)});
      if (!s.ok()) LOG(WARNING) << s;
    };
  }
  g_participant = &participant;
  if (g_stop_requested) return 0;  // SIGTERM while starting up.
  const absl::Status status = participant.Run();
  g_participant = nullptr;
  if (absl::IsCancelled(status)) return 0;  // SIGTERM: a clean stop.
  if (!status.ok()) return Fail(status);
  return 0;
}
