// fedge-bench-load: many lightweight clients against one running
// coordinator (docs/reliability.md, "Load" and "Resource limits").
//
// Each client has its own gRPC connection and runs the real protocol:
// Register, GetTask polling, Download of its task's adapter, Upload of an
// update and SubmitUpdate, every round until the federation finishes. It
// does not train: its update is the adapter plus a small seeded change,
// encoded with the task's codec, so that one machine can run hundreds of
// clients and the coordinator is what is measured.
//
// Reports updates a second, latency percentiles per RPC (transfers count
// as one call each), the coordinator's peak RSS and CPU (sampled from
// /proc with --coordinator_pid), and, with --clients_csv, checks every
// update a client saw accepted against the coordinator's records: none
// lost, none counted twice.
//
// Adversaries on demand: --flood_per_s registrations a second under fresh
// ids that never ask for work; --slowloris clients that open their upload
// and stall; --probes (client 0, first round): an upload declaring more
// than its task allows and one under an id no task announced; --attacks
// (client 0, from its second round; run with mutual TLS): a replayed
// submission, and requests and an upload under client 1's identity.
// Each adversary's outcome is printed as `metric` lines.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include "bench/check.h"
#include "fedge/v1/coordinator_service.grpc.pb.h"
#include "lora/lora.h"
#include "model/safetensors.h"
#include "strategies/time_model.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "transport/channel_options.h"
#include "transport/status_convert.h"
#include "transport/task_proto.h"
#include "transport/transfer.h"
#include "transport/transfer_service.h"
#include "transport/update_codec.h"
#include <sys/resource.h>

ABSL_FLAG(std::string, coordinator, "", "Coordinator address host:port.");
ABSL_FLAG(int, clients, 500, "Lightweight clients (one connection each).");
ABSL_FLAG(int, first_index, 0,
          "Index of the first client (ids PREFIX-FIRST ...), so that several "
          "processes make one fleet; the fault run kills them one by one.");
ABSL_FLAG(std::string, id_prefix, "load", "Device ids: PREFIX-0, PREFIX-1...");
ABSL_FLAG(int, coordinator_pid, 0,
          "Sample this process's CPU and RSS from /proc (0: do not).");
ABSL_FLAG(std::string, clients_csv, "",
          "The coordinator's clients.csv, checked against what the clients "
          "saw accepted once the federation finished (empty: no check).");
ABSL_FLAG(std::string, tls_dir, "",
          "Mutual TLS: DIR/ca.pem and DIR/client-<device id>.{pem,key} "
          "(deploy/certs/make_dev_certs.sh); empty: insecure.");
ABSL_FLAG(double, flood_per_s, 0,
          "Registrations a second under fresh ids that never ask for work.");
ABSL_FLAG(int, slowloris, 0,
          "Clients (the last N) that open each upload with one chunk and "
          "then stall.");
ABSL_FLAG(bool, probes, false,
          "Client 0, first round: an oversize and an unannounced upload.");
ABSL_FLAG(bool, attacks, false,
          "Client 0, second round: replay and identity attacks (use with "
          "--tls_dir).");
ABSL_FLAG(double, timeout_s, 900, "Give up after this long.");
ABSL_FLAG(double, give_up_s, 30,
          "A client stops after the coordinator has been unreachable this "
          "long (it exited after the last round, or crashed for good).");
ABSL_FLAG(std::string, compare, "",
          "A,B: instead of a load, compare the tensors of two safetensors "
          "files (coordinator checkpoints) and print the largest difference.");

namespace fedge::bench {
namespace {

// Nearest-rank quantiles, as every fedge benchmark reports them.
using fedge::strategies::Quantile;

namespace v1 = ::fedge::v1;
using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since)
      .count();
}

// What every client shares: latencies, accepted updates, outcomes.
struct Results {
  std::mutex mu;
  std::map<std::string, std::vector<double>> latency_ms;  // By method.
  std::set<std::pair<int64_t, std::string>> accepted;     // (round, device)
  std::map<std::string, int64_t> errors;       // "method code" -> count
  std::map<std::string, std::string> outcome;  // Adversaries' metrics.
  int64_t resumes = 0;  // Transfer streams restarted after a broken link.
  std::map<std::string, int64_t> slowloris_ends;  // By status code.
  double slowloris_max_held_s = 0;
  std::atomic<int> registered{0};  // Clients registered at least once.
  // Upload ids of current tasks by device (for the identity attack).
  std::map<std::string, std::string> upload_ids;
  Clock::time_point first_task = Clock::time_point::max();
  Clock::time_point last_accept = Clock::time_point::min();

  void Latency(const std::string& method, double ms) {
    std::lock_guard<std::mutex> lock(mu);
    latency_ms[method].push_back(ms);
  }
  void Error(const std::string& method, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    ++errors[absl::StrCat(method, " ",
                          absl::StatusCodeToString(status.code()))];
  }
  void Outcome(const std::string& name, const std::string& value) {
    std::lock_guard<std::mutex> lock(mu);
    outcome[name] = value;
  }
};

std::shared_ptr<grpc::Channel> Connect(const std::string& device_id) {
  transport::ChannelOptions options;
  grpc::ChannelArguments args = transport::ClientChannelArguments(options);
  // One TCP connection per client, as separate boards would have.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  const std::string dir = absl::GetFlag(FLAGS_tls_dir);
  if (!dir.empty()) {
    credentials = Check(transport::ClientCredentials(
        {dir + "/ca.pem", dir + "/client-" + device_id + ".pem",
         dir + "/client-" + device_id + ".key", false}));
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_coordinator),
                                   credentials, args);
}

// A board's registration: plausible hardware facts, no benchmark run.
v1::RegisterRequest Registration(const std::string& device_id) {
  v1::RegisterRequest request;
  v1::DeviceInfo* d = request.mutable_device();
  d->set_device_id(device_id);
  d->set_cores(4);
  d->set_memory_total_bytes(4LL << 30);
  d->set_memory_available_bytes(2LL << 30);
  d->set_arch("aarch64");
  d->set_cpu_model("load generator");
  d->set_benchmark_gflops(10);
  d->set_link_type(v1::LINK_TYPE_ETHERNET);
  d->set_software_version("fedge-bench-load");
  // The coordinator runs the built-in task (bench/reliability.sh).
  transport::IdentityToProto(
      task::IdentityOf(task::FashionMnistTask(), nullptr),
      request.mutable_task());
  return request;
}

class LoadClient {
 public:
  LoadClient(int index, Results* results, const std::atomic<bool>* stop)
      : index_(index),
        id_(absl::StrCat(absl::GetFlag(FLAGS_id_prefix), "-", index)),
        results_(results),
        stop_(stop),
        stub_(v1::Coordinator::NewStub(Connect(id_))),
        transfers_(stub_.get()) {}

  bool slowloris = false;

  // Runs until the federation finishes (OUT_OF_RANGE) or `stop`.
  void Run() {
    if (!Register()) return;
    std::string last_nonce;
    int64_t rounds = 0;
    while (!*stop_) {
      v1::GetTaskRequest request;
      request.set_device_id(id_);
      request.set_session_id(session_);
      v1::GetTaskResponse response;
      absl::Status status = Call("GetTask", [&](grpc::ClientContext& c) {
        return stub_->GetTask(&c, request, &response);
      });
      // Finished, or the coordinator is gone for good.
      if (absl::IsOutOfRange(status) || absl::IsUnavailable(status)) return;
      if (absl::IsNotFound(status)) {  // The coordinator forgot us.
        if (!Register()) return;
        continue;
      }
      if (!status.ok() || !response.has_task() ||
          response.task().nonce() == last_nonce) {
        absl::SleepFor(absl::Milliseconds(
            std::max<int64_t>(response.retry_after_ms(), 100)));
        continue;
      }
      const v1::Task& task = response.task();
      last_nonce = task.nonce();
      {
        std::lock_guard<std::mutex> lock(results_->mu);
        results_->first_task = std::min(results_->first_task, Clock::now());
        results_->upload_ids[id_] = task.upload_transfer_id();
      }
      ++rounds;
      if (index_ == 0 && rounds == 1 && absl::GetFlag(FLAGS_probes)) {
        Probes(task);
      }
      if (index_ == 0 && rounds == 2 && absl::GetFlag(FLAGS_attacks)) {
        Attacks(task);
      }
      absl::Status round = Round(task);
      if (!round.ok() && !slowloris) {
        std::fprintf(stderr, "%s: round %ld: %s\n", id_.c_str(),
                     static_cast<long>(task.round()), round.ToString().c_str());
      }
    }
  }

 private:
  // Runs a unary call with a deadline, retrying transient failures;
  // records its latency (each try) and errors.
  absl::Status Call(
      const std::string& method,
      const std::function<grpc::Status(grpc::ClientContext&)>& rpc) {
    absl::Duration backoff = absl::Milliseconds(100);
    const absl::Time give_up =
        absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_give_up_s));
    while (true) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      const auto start = Clock::now();
      const absl::Status status = transport::FromGrpcStatus(rpc(context));
      results_->Latency(method, Ms(start));
      if (status.ok()) return status;
      results_->Error(method, status);
      const bool transient = absl::IsUnavailable(status) ||
                             absl::IsDeadlineExceeded(status) ||
                             absl::IsResourceExhausted(status);
      if (!transient || *stop_ || absl::Now() > give_up) return status;
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
  }

  bool Register() {
    const v1::RegisterRequest request = Registration(id_);
    v1::RegisterResponse response;
    const absl::Status status = Call("Register", [&](grpc::ClientContext& c) {
      return stub_->Register(&c, request, &response);
    });
    if (!status.ok()) {
      std::fprintf(stderr, "%s: register: %s\n", id_.c_str(),
                   status.ToString().c_str());
      return false;
    }
    if (session_.empty()) ++results_->registered;
    session_ = response.session_id();
    return true;
  }

  // The update: the adapter plus 1e-3 of seeded noise (not training). A
  // residual of the global change that came with it is never uploaded
  // (docs/protocol.md, section 4).
  absl::StatusOr<transport::EncodedPayload> MakeUpdate(
      const v1::Task& task, const model::NamedTensors& payload) {
    torch::NoGradGuard no_grad;
    auto generator = at::detail::createCPUGenerator(
        static_cast<uint64_t>(index_) * 100003 + task.round());
    model::NamedTensors update;
    for (const auto& item : lora::SeparateResiduals(payload).adapters) {
      const at::Tensor& t = item.value();
      update.insert(item.key(),
                    t + 1e-3 * at::randn(t.sizes(), generator, t.options()));
    }
    return transport::EncodeUpdate(update, transport::UploadCodecOptions(task),
                                   &feedback_);
  }

  absl::Status Round(const v1::Task& task) {
    auto start = Clock::now();
    transport::TransferStats down;
    absl::StatusOr<model::NamedTensors> payload = transfers_.DownloadTensors(
        id_, task.adapter_transfer_id(), task.chunk_bytes(), &down);
    results_->Latency("Download", Ms(start));
    {
      std::lock_guard<std::mutex> lock(results_->mu);
      results_->resumes += down.resumes;
    }
    if (!payload.ok()) {
      results_->Error("Download", payload.status());
      return payload.status();
    }
    absl::StatusOr<transport::EncodedPayload> encoded =
        MakeUpdate(task, *payload);
    if (!encoded.ok()) return encoded.status();
    const int64_t raw = encoded->raw_bytes;
    const transport::StringSource source(std::move(encoded->bytes));
    absl::StatusOr<transport::TransferInfo> info =
        transport::DescribePayload(source, task.upload_transfer_id(), raw,
                                   transport::PayloadFormat::kEncodedUpdate);
    if (!info.ok()) return info.status();
    if (slowloris) return Stall(*info, source);
    start = Clock::now();
    absl::StatusOr<transport::TransferStats> up =
        transfers_.Upload(id_, *info, source, task.chunk_bytes());
    results_->Latency("Upload", Ms(start));
    if (!up.ok()) {
      results_->Error("Upload", up.status());
      return up.status();
    }
    {
      std::lock_guard<std::mutex> lock(results_->mu);
      results_->resumes += up->resumes;
    }
    v1::SubmitUpdateRequest request = Report(task, source.size());
    v1::SubmitUpdateResponse response;
    const absl::Status status =
        Call("SubmitUpdate", [&](grpc::ClientContext& c) {
          return stub_->SubmitUpdate(&c, request, &response);
        });
    // ALREADY_EXISTS: a retried call whose first answer was lost.
    if (!status.ok() && !absl::IsAlreadyExists(status)) return status;
    last_report_ = request;
    std::lock_guard<std::mutex> lock(results_->mu);
    results_->accepted.insert({task.round(), id_});
    results_->last_accept = std::max(results_->last_accept, Clock::now());
    return absl::OkStatus();
  }

  v1::SubmitUpdateRequest Report(const v1::Task& task, int64_t bytes_up) {
    v1::SubmitUpdateRequest request;
    v1::UpdateReport* r = request.mutable_report();
    r->set_device_id(id_);
    r->set_round(task.round());
    r->set_nonce(task.nonce());
    r->set_upload_transfer_id(task.upload_transfer_id());
    r->set_num_examples(100);
    r->set_loss_before(2.0);
    r->set_loss_after(1.9);
    r->mutable_timings()->set_bytes_up(bytes_up);
    return request;
  }

  // Slow-loris: the header and one small chunk, then nothing, the stream
  // held open until the coordinator gives up on it.
  absl::Status Stall(const transport::TransferInfo& info,
                     const transport::StringSource& source) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(10)));
    v1::UploadResponse response;
    const auto start = Clock::now();
    auto writer = stub_->Upload(&context, &response);
    v1::Chunk chunk;
    transport::ToProto(info, chunk.mutable_header());
    std::string first(16, '\0');
    (void)source.Read(0, absl::MakeSpan(first));
    chunk.set_data(first);
    writer->Write(chunk);
    const absl::Status status = transport::FromGrpcStatus(writer->Finish());
    const double held_s = Ms(start) / 1000.0;
    std::lock_guard<std::mutex> lock(results_->mu);
    // How the stalled streams ended: CANCELLED by the coordinator's
    // watchdog; NOT_FOUND when the round had closed before the upload.
    ++results_->slowloris_ends[absl::StatusCodeToString(status.code())];
    results_->slowloris_max_held_s =
        std::max(results_->slowloris_max_held_s, held_s);
    return status;
  }

  // Sends `chunks` as one upload stream; its status.
  absl::Status Upload(const std::vector<v1::Chunk>& chunks) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::UploadResponse response;
    auto writer = stub_->Upload(&context, &response);
    for (const v1::Chunk& c : chunks) {
      if (!writer->Write(c)) break;
    }
    writer->WritesDone();
    return transport::FromGrpcStatus(writer->Finish());
  }

  void Probes(const v1::Task& task) {
    v1::Chunk oversize;
    v1::TransferHeader* h = oversize.mutable_header();
    h->set_transfer_id(task.upload_transfer_id());
    h->set_total_bytes(1LL << 40);
    h->set_sha256(std::string(32, 'x'));
    results_->Outcome("probe_oversize_upload_code",
                      absl::StatusCodeToString(Upload({oversize}).code()));
    v1::Chunk unannounced = oversize;
    unannounced.mutable_header()->set_transfer_id("round-1.0/nobody/update");
    unannounced.mutable_header()->set_total_bytes(100);
    unannounced.set_data(std::string(100, 'x'));
    results_->Outcome("probe_unannounced_upload_code",
                      absl::StatusCodeToString(Upload({unannounced}).code()));
  }

  // From its own connection (its own certificate), as client 0.
  void Attacks(const v1::Task& task) {
    auto record = [&](const std::string& name, const absl::Status& s) {
      results_->Outcome("attack_" + name + "_code",
                        absl::StatusCodeToString(s.code()));
    };
    // Replay of last round's accepted submission.
    v1::SubmitUpdateResponse ignored;
    grpc::ClientContext replay;
    record("replay_submission", transport::FromGrpcStatus(stub_->SubmitUpdate(
                                    &replay, last_report_, &ignored)));
    // Client 1's identity: its task, a submission in its name, an upload
    // under its (leaked) upload id.
    const std::string victim =
        absl::StrCat(absl::GetFlag(FLAGS_id_prefix), "-1");
    v1::GetTaskRequest get;
    get.set_device_id(victim);
    v1::GetTaskResponse got;
    grpc::ClientContext c1;
    record("steal_task",
           transport::FromGrpcStatus(stub_->GetTask(&c1, get, &got)));
    v1::SubmitUpdateRequest forged = Report(task, 0);
    forged.mutable_report()->set_device_id(victim);
    grpc::ClientContext c2;
    record("forge_submission", transport::FromGrpcStatus(
                                   stub_->SubmitUpdate(&c2, forged, &ignored)));
    std::string victim_upload;
    for (int i = 0; i < 100 && victim_upload.empty(); ++i) {
      {
        std::lock_guard<std::mutex> lock(results_->mu);
        auto it = results_->upload_ids.find(victim);
        if (it != results_->upload_ids.end() &&
            absl::StartsWith(it->second,
                             absl::StrCat("round-", task.round(), "."))) {
          victim_upload = it->second;
        }
      }
      if (victim_upload.empty()) absl::SleepFor(absl::Milliseconds(100));
    }
    v1::Chunk hijack;
    v1::TransferHeader* h = hijack.mutable_header();
    h->set_transfer_id(victim_upload);
    h->set_total_bytes(100);
    h->set_sha256(std::string(32, 'x'));
    hijack.set_data(std::string(100, 'x'));
    record("hijack_upload", Upload({hijack}));
  }

  const int index_;
  const std::string id_;
  Results* const results_;
  const std::atomic<bool>* const stop_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  transport::TransferClient transfers_;
  transport::ErrorFeedback feedback_;
  std::string session_;
  v1::SubmitUpdateRequest last_report_;
};

// Registrations under fresh ids, `per_s` a second in all, that never ask
// for work, from when every client has registered until `stop`.
void Flood(int thread, int threads, double per_s, Results* results,
           const std::atomic<bool>* stop) {
  auto stub = v1::Coordinator::NewStub(
      Connect(absl::StrCat(absl::GetFlag(FLAGS_id_prefix), "-0")));
  // The fleet registers first; the flood then hits a running federation.
  while (!*stop && results->registered < absl::GetFlag(FLAGS_clients)) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const absl::Duration every = absl::Seconds(threads / per_s);
  absl::Time next = absl::Now();
  int64_t ok = 0, refused = 0, other = 0;
  for (int64_t n = 0; !*stop; ++n) {
    const v1::RegisterRequest request =
        Registration(absl::StrCat("flood-", thread, "-", n));
    v1::RegisterResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    const absl::Status s =
        transport::FromGrpcStatus(stub->Register(&context, request, &response));
    if (s.ok()) {
      ++ok;
    } else if (absl::IsResourceExhausted(s)) {
      ++refused;
    } else {
      ++other;
    }
    next += every;
    absl::SleepFor(next - absl::Now());
  }
  std::lock_guard<std::mutex> lock(results->mu);
  results->errors["flood registered"] += ok;
  results->errors["flood refused"] += refused;
  results->errors["flood failed"] += other;
}

// Samples a process's CPU time and RSS from /proc until `stop`.
struct ProcessSampler {
  double peak_rss_mib = 0;
  double cpu_s = 0;
  double peak_cores = 0;
  double seconds = 0;

  void Run(int pid, const std::atomic<bool>* stop) {
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    const auto start = Clock::now();
    double first_cpu = -1, last_cpu = 0;
    Clock::time_point last_time;
    while (!*stop) {
      std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
      std::string line;
      if (!std::getline(stat, line)) break;  // The process ended.
      // Fields after the command's closing parenthesis; utime and stime
      // are the 14th and 15th fields of the line.
      std::istringstream rest(line.substr(line.rfind(')') + 2));
      std::vector<std::string> f;
      for (std::string x; rest >> x;) f.push_back(x);
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / tick;
      std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
      while (std::getline(status, line)) {
        if (absl::StartsWith(line, "VmRSS:")) {
          peak_rss_mib =
              std::max(peak_rss_mib, std::stod(line.substr(6)) / 1024.0);  // kB
        }
      }
      const auto now = Clock::now();
      if (first_cpu < 0) {  // CPU before the first sample is not counted.
        first_cpu = last_cpu = cpu;
        last_time = now;
      }
      // The busiest window of about a second.
      const double dt = std::chrono::duration<double>(now - last_time).count();
      if (dt > 0.9) {
        peak_cores = std::max(peak_cores, (cpu - last_cpu) / dt);
        last_cpu = cpu;
        last_time = now;
      }
      cpu_s = cpu - first_cpu;
      seconds = std::chrono::duration<double>(now - start).count();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
};

// Accepted (round, device) rows of the coordinator's clients.csv whose
// device id starts with `prefix`, and how many were there twice.
std::set<std::pair<int64_t, std::string>> AcceptedRecords(
    const std::string& path, const std::string& prefix, int64_t* duplicates) {
  std::ifstream in(path);
  if (!in) Die(absl::NotFoundError("cannot read " + path));
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = absl::StrSplit(line, ',');
  auto column = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      Die(absl::InvalidArgumentError(path + " has no column " + name));
    }
    return static_cast<size_t>(it - header.begin());
  };
  const size_t round = column("round"), device = column("device"),
               status = column("status");
  std::set<std::pair<int64_t, std::string>> out;
  *duplicates = 0;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() != header.size() || f[status] != "accepted" ||
        !absl::StartsWith(f[device], prefix)) {
      continue;
    }
    if (!out.insert({std::stoll(f[round]), f[device]}).second) ++*duplicates;
  }
  return out;
}

// Mean and largest round_s of the committed rounds in rounds.csv.
void RoundTimes(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return;
  const std::vector<std::string> header = absl::StrSplit(line, ',');
  const auto find = [&](const char* name) {
    return std::find(header.begin(), header.end(), name) - header.begin();
  };
  const size_t committed = find("committed"), round_s = find("round_s");
  if (round_s >= header.size()) return;
  std::vector<double> times;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() == header.size() && f[committed] == "1") {
      times.push_back(std::stod(f[round_s]));
    }
  }
  if (times.empty()) return;
  double sum = 0;
  for (double t : times) sum += t;
  std::printf(
      "metric rounds %zu\nmetric mean_round_s %.3f\n"
      "metric max_round_s %.3f\n",
      times.size(), sum / times.size(),
      *std::max_element(times.begin(), times.end()));
}

// --compare: the largest absolute difference between same-named tensors.
int Compare(const std::string& spec) {
  const std::vector<std::string> paths = absl::StrSplit(spec, ',');
  if (paths.size() != 2) {
    Die(absl::InvalidArgumentError("--compare needs two paths: A,B"));
  }
  const model::SafetensorsFile a = Check(model::ReadSafetensors(paths[0]));
  const model::SafetensorsFile b = Check(model::ReadSafetensors(paths[1]));
  double diff = 0, scale = 0;
  int64_t mismatched = a.tensors.size() == b.tensors.size() ? 0 : 1;
  for (const auto& item : a.tensors) {
    const at::Tensor* other = b.tensors.find(item.key());
    if (other == nullptr || other->sizes() != item.value().sizes()) {
      ++mismatched;
      continue;
    }
    const at::Tensor x = item.value().to(torch::kFloat64);
    diff = std::max(
        diff, (x - other->to(torch::kFloat64)).abs().max().item<double>());
    scale = std::max(scale, x.abs().max().item<double>());
  }
  std::printf(
      "metric tensors %zu\nmetric mismatched_tensors %ld\n"
      "metric max_abs_diff %.6g\nmetric max_abs %.6g\n",
      a.tensors.size(), static_cast<long>(mismatched), diff, scale);
  return mismatched == 0 ? 0 : 1;
}

int Main() {
  if (!absl::GetFlag(FLAGS_compare).empty()) {
    return Compare(absl::GetFlag(FLAGS_compare));
  }
  if (absl::GetFlag(FLAGS_coordinator).empty()) {
    Die(absl::InvalidArgumentError("--coordinator is required"));
  }
  const int n = absl::GetFlag(FLAGS_clients);
  if (n < 1) Die(absl::InvalidArgumentError("--clients must be >= 1"));
  // A connection per client: raise the descriptor limit to the hard one.
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  torch::set_num_threads(1);
  Results results;
  std::atomic<bool> stop{false}, stop_sampler{false};
  ProcessSampler sampler;
  std::thread sampler_thread;
  if (absl::GetFlag(FLAGS_coordinator_pid) > 0) {
    sampler_thread = std::thread([&] {
      sampler.Run(absl::GetFlag(FLAGS_coordinator_pid), &stop_sampler);
    });
  }
  std::vector<std::unique_ptr<LoadClient>> clients;
  const int first = absl::GetFlag(FLAGS_first_index);
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<LoadClient>(first + i, &results, &stop));
    clients.back()->slowloris = i >= n - absl::GetFlag(FLAGS_slowloris);
  }
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back([&c] { c->Run(); });
  std::vector<std::thread> flood;
  const double flood_per_s = absl::GetFlag(FLAGS_flood_per_s);
  const int flood_threads = 4;
  if (flood_per_s > 0) {
    for (int t = 0; t < flood_threads; ++t) {
      flood.emplace_back(Flood, t, flood_threads, flood_per_s, &results, &stop);
    }
  }
  std::thread timeout([&] {
    const auto limit =
        start + std::chrono::duration<double>(absl::GetFlag(FLAGS_timeout_s));
    while (!stop && Clock::now() < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!stop) {
      std::fprintf(stderr, "fedge-bench-load: timed out; stopping\n");
      stop = true;
    }
  });
  std::fprintf(stderr, "fedge-bench-load: %d clients started\n", n);
  for (auto& t : threads) t.join();
  const double wall_s =
      std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : flood) t.join();
  timeout.join();
  // Let the coordinator finish writing and exit before reading its files.
  if (absl::GetFlag(FLAGS_coordinator_pid) > 0) {
    for (int i = 0;
         i < 300 && kill(absl::GetFlag(FLAGS_coordinator_pid), 0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    stop_sampler = true;
    sampler_thread.join();
  }

  const double active_s = results.accepted.empty()
                              ? 0
                              : std::chrono::duration<double>(
                                    results.last_accept - results.first_task)
                                    .count();
  const int64_t accepted = static_cast<int64_t>(results.accepted.size());
  std::printf(
      "fedge-bench-load: %d clients (%d slow-loris), %ld updates "
      "accepted in %.1f s (%.1f s from the first task to the last "
      "update)\n",
      n, absl::GetFlag(FLAGS_slowloris), static_cast<long>(accepted), wall_s,
      active_s);
  std::printf("%-14s %8s %9s %9s %9s\n", "rpc", "calls", "p50_ms", "p99_ms",
              "max_ms");
  std::vector<double> all;
  for (const auto& [method, v] : results.latency_ms) {
    std::printf("%-14s %8zu %9.2f %9.2f %9.2f\n", method.c_str(), v.size(),
                Quantile(v, 0.5), Quantile(v, 0.99), Quantile(v, 1.0));
    all.insert(all.end(), v.begin(), v.end());
    std::printf("metric rpc_%s_p50_ms %.3f\nmetric rpc_%s_p99_ms %.3f\n",
                method.c_str(), Quantile(v, 0.5), method.c_str(),
                Quantile(v, 0.99));
  }
  for (const auto& [what, count] : results.errors) {
    std::printf("errors: %s x%ld\n", what.c_str(), static_cast<long>(count));
  }
  std::printf("metric clients %d\n", n);
  std::printf("metric updates_accepted %ld\n", static_cast<long>(accepted));
  std::printf("metric updates_per_s %.3f\n",
              active_s > 0 ? accepted / active_s : 0);
  std::printf("metric transfer_resumes %ld\n",
              static_cast<long>(results.resumes));
  std::printf("metric p50_rpc_ms %.3f\n", Quantile(all, 0.5));
  std::printf("metric p99_rpc_ms %.3f\n", Quantile(all, 0.99));
  std::printf("metric wall_s %.3f\n", wall_s);
  if (absl::GetFlag(FLAGS_coordinator_pid) > 0) {
    std::printf("metric coordinator_peak_rss_mib %.1f\n", sampler.peak_rss_mib);
    std::printf("metric coordinator_cpu_s %.2f\n", sampler.cpu_s);
    std::printf("metric coordinator_mean_cores %.3f\n",
                sampler.seconds > 0 ? sampler.cpu_s / sampler.seconds : 0);
    std::printf("metric coordinator_peak_cores %.3f\n", sampler.peak_cores);
  }
  for (const auto& [code, count] : results.slowloris_ends) {
    std::printf("metric slowloris_streams_%s %ld\n", code.c_str(),
                static_cast<long>(count));
  }
  if (!results.slowloris_ends.empty()) {
    std::printf("metric slowloris_max_held_s %.3f\n",
                results.slowloris_max_held_s);
  }
  for (const auto& [name, value] : results.outcome) {
    std::printf("metric %s %s\n", name.c_str(), value.c_str());
  }
  for (const auto& [what, count] : results.errors) {
    if (absl::StartsWith(what, "flood ")) {
      std::printf("metric %s %ld\n",
                  absl::StrReplaceAll(what, {{" ", "_"}}).c_str(),
                  static_cast<long>(count));
    }
  }
  const std::string csv = absl::GetFlag(FLAGS_clients_csv);
  if (!csv.empty()) {
    int64_t duplicates = 0;
    const auto recorded =
        AcceptedRecords(csv, absl::GetFlag(FLAGS_id_prefix) + "-", &duplicates);
    int64_t lost = 0, extra = 0;
    for (const auto& key : results.accepted) lost += recorded.count(key) == 0;
    for (const auto& key : recorded) extra += results.accepted.count(key) == 0;
    std::printf(
        "records: %zu accepted rows; %ld lost, %ld duplicated, %ld "
        "the clients never saw accepted\n",
        recorded.size(), static_cast<long>(lost), static_cast<long>(duplicates),
        static_cast<long>(extra));
    std::printf("metric lost_updates %ld\n",
                static_cast<long>(lost + duplicates + extra));
    RoundTimes(csv.substr(0, csv.rfind('/') + 1) + "rounds.csv");
  }
  return stop && results.accepted.empty() ? 1 : 0;
}

}  // namespace
}  // namespace fedge::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fedge::bench::Main();
}
