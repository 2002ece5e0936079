// Split fine-tuning on a task (issue 8; --task, default the built-in ViT on
// Fashion-MNIST): one device's epoch over its shard with LoRA r8 on q,v,
// trained fully locally and split at k = 1 and 2 (float16, int8 and float32
// activations), with and without SFPrompt's local-loss updates and EL2N dataset
// pruning. Every split step goes through the wire format
// (transport::WireSplitLink), so the bytes are those of the serialized messages
// gRPC carries.
//
// Prints a table on stderr and `metric NAME VALUE` lines on stdout.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include <torch/types.h>

#include "bench/check.h"
#include "bench/task_bench.h"
#include "lora/lora.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/partition.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "split/client.h"
#include "split/server.h"
#include "task/task_flags.h"
#include "transport/split_proto.h"
#include "transport/update_codec.h"

ABSL_FLAG(std::string, base, "",
          "Pretrained checkpoint dir (fedge-pretrain); empty: the task's "
          "base.");
ABSL_FLAG(int64_t, devices, 8,
          "The device holds shard 0 of this many (the task's partition).");
ABSL_FLAG(int64_t, eval_examples, 5000,
          "Held-out examples for the task's metric.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");

namespace fm = fedge::model;
namespace fk = fedge::task;
namespace fs = fedge::split;
namespace ft = fedge::transport;

namespace {

using fedge::bench::Check;
using fedge::bench::TaskMetric;

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Arm {
  std::string label;
  int64_t cut = 0;  // 0: full local training.
  ft::Codec codec = ft::Codec::kFloat16;
  int64_t local_steps = 0;
  double keep = 1.0;
};

struct Outcome {
  double client_gflop = 0;
  double client_s = 0;
  double megabytes = 0;
  double value = 0;  // The task's metric on the held-out examples.
  int64_t exchanges = 0;
};

int64_t EncodedBytes(const fm::NamedTensors& tensors, ft::Codec codec,
                     bool zstd) {
  ft::CodecOptions options;
  options.codec = codec;
  options.zstd = zstd;
  return static_cast<int64_t>(
      Check(ft::EncodeUpdate(tensors, options)).bytes.size());
}

// The adapters a device exchanges with the coordinator per round: the
// payload down (float32 safetensors, counted as float32) and its update up
// (the default int8_row + zstd).
int64_t AdapterBytes(const fm::NamedTensors& adapters) {
  return EncodedBytes(adapters, ft::Codec::kFloat32, false) +
         EncodedBytes(adapters, ft::Codec::kInt8Row, true);
}

Outcome RunArm(const Arm& arm, const std::string& base,
               const fm::Dataset& shard, const fm::Dataset& test,
               fk::Metric metric) {
  torch::manual_seed(1);
  fm::Model device = Check(fm::LoadCheckpoint(base));
  fedge::lora::LoraOptions lora;  // r8 on q_proj, v_proj: the default task.
  Check(fedge::lora::Inject(*device, lora));
  fm::TrainOptions options;
  options.batch_size = 32;
  options.learning_rate = 1e-3;
  options.weight_decay = 0;
  options.seed = 2;
  const int64_t tokens = device->max_tokens();
  const auto blocks = static_cast<int64_t>(device->block_shapes().size());
  Outcome out;
  if (arm.cut == 0) {
    const auto start = Clock::now();
    fm::TrainResult r = Check(fm::Train(*device, shard, options));
    out.client_s = Since(start);
    out.client_gflop =
        fs::TrainingFlops(*device, r.examples, tokens, 0, blocks) / 1e9;
    out.megabytes = AdapterBytes(fedge::lora::ExtractAdapters(*device)) / 1e6;
  } else {
    // The coordinator's copy of the same sub-model and adapter.
    torch::manual_seed(1);
    fm::Model tail_model = Check(fm::LoadCheckpoint(base));
    Check(fedge::lora::Inject(*tail_model, lora));
    Check(fedge::lora::LoadAdapters(*tail_model,
                                    fedge::lora::ExtractAdapters(*device)));
    auto server = Check(fs::SplitServer::Create(tail_model, arm.cut, options));
    ft::CodecOptions codec;
    codec.codec = arm.codec;
    codec.zstd = false;
    ft::WireSplitLink link(server.get(), codec);
    fs::SplitOptions split;
    split.cut = arm.cut;
    split.local_loss_steps = arm.local_steps;
    split.keep_fraction = arm.keep;
    const auto start = Clock::now();
    fs::SplitResult r =
        Check(fs::TrainSplit(*device, shard, options, split, link));
    out.client_s = Since(start) - link.seconds();
    out.exchanges = r.split_steps;
    const double train_flops =
        fs::TrainingFlops(*device, r.train.examples, tokens, 0, arm.cut);
    const double local_flops = fs::TrainingFlops(
        *device, r.local_steps * options.batch_size, tokens, 0, arm.cut);
    // The EL2N pass is a forward only: a third of a training step.
    const double prune_flops =
        arm.keep < 1
            ? fs::TrainingFlops(*device, shard.size(), tokens, 0, arm.cut) / 3
            : 0;
    out.client_gflop = (train_flops + local_flops + prune_flops) / 1e9;
    fm::NamedTensors head_adapters;
    for (const auto& item : fedge::lora::ExtractAdapters(*device)) {
      if (device->InHead(item.key(), arm.cut)) {
        head_adapters.insert(item.key(), item.value());
      }
    }
    out.megabytes =
        (link.bytes_up() + link.bytes_down() + AdapterBytes(head_adapters)) /
        1e6;
    // Put the server's half into the device's model to evaluate the whole.
    torch::NoGradGuard no_grad;
    const fm::NamedTensors tail = server->TailParameters();
    for (auto& item : device->named_parameters(/*recurse=*/true)) {
      if (const at::Tensor* t = tail.find(item.key())) item.value().copy_(*t);
    }
  }
  out.value = TaskMetric(*device, test, metric);
  std::fprintf(stderr,
               "  %-34s %7.1f GFLOP  %6.1f s  %8.2f MB  %8.4f %s  %5lld "
               "exchanges\n",
               arm.label.c_str(), out.client_gflop, out.client_s, out.megabytes,
               out.value, std::string(fk::MetricName(metric)).c_str(),
               static_cast<long long>(out.exchanges));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const fk::TaskSpec spec = Check(fk::TaskFromFlags());
  const std::string base = absl::GetFlag(FLAGS_base).empty()
                               ? spec.base_dir
                               : absl::GetFlag(FLAGS_base);
  std::unique_ptr<fk::TaskData> data = Check(fk::TaskData::Create(spec));
  const fm::Dataset test =
      fm::Head(Check(data->Eval()), absl::GetFlag(FLAGS_eval_examples));
  const fm::Dataset shard =
      Check(data->Shard(0, static_cast<int>(absl::GetFlag(FLAGS_devices))));
  const fk::Metric metric = spec.evaluation.metric;
  const int64_t steps = (shard.size() + 31) / 32;
  std::fprintf(stderr,
               "bench split: one epoch over %lld examples (%lld steps of 32) "
               "of task %s, base %s, LoRA r8 on q,v; client-side figures\n",
               static_cast<long long>(shard.size()),
               static_cast<long long>(steps), spec.name.c_str(), base.c_str());

  const int64_t local = steps / 4;  // A quarter epoch of local-loss steps.
  const std::vector<Arm> arms = {
      {"full local training", 0},
      {"split k=1, float16", 1},
      {"split k=2, float16", 2},
      {"split k=1, int8_row", 1, ft::Codec::kInt8Row},
      {"split k=1, float32", 1, ft::Codec::kFloat32},
      {"split k=1, float16, local loss", 1, ft::Codec::kFloat16, local},
      {"split k=1, float16, local + prune 50%", 1, ft::Codec::kFloat16, local,
       0.5},
      {"split k=2, float16, local + prune 50%", 2, ft::Codec::kFloat16, local,
       0.5},
  };
  std::vector<Outcome> outcomes;
  for (const Arm& arm : arms) {
    outcomes.push_back(RunArm(arm, base, shard, test, metric));
  }

  const std::string name(fk::MetricName(metric));
  // For scale: the base before this epoch, and what classic FedAvg of the
  // whole model (SFPrompt's baseline) would move per round: the float32
  // weights down and an int8_row + zstd update up.
  fm::Model base_model = Check(fm::LoadCheckpoint(base));
  const double base_value = TaskMetric(*base_model, test, metric);
  const fm::NamedTensors weights = fm::CopyWeights(*base_model);
  const double dense_mb = (EncodedBytes(weights, ft::Codec::kFloat32, false) +
                           EncodedBytes(weights, ft::Codec::kInt8Row, true)) /
                          1e6;
  std::fprintf(stderr,
               "  base before the epoch: %.4f %s; whole-model FedAvg would "
               "move %.2f MB per round\n",
               base_value, name.c_str(), dense_mb);
  std::printf("metric base_%s %.4f\n", name.c_str(), base_value);
  std::printf("metric dense_fedavg_mb %.3f\n", dense_mb);

  const Outcome& full = outcomes[0];
  const char* names[] = {"full",
                         "k1_f16",
                         "k2_f16",
                         "k1_int8",
                         "k1_f32",
                         "k1_f16_local",
                         "k1_f16_local_prune",
                         "k2_f16_local_prune"};
  for (size_t i = 0; i < arms.size(); ++i) {
    const Outcome& o = outcomes[i];
    std::printf("metric %s_gflop %.2f\n", names[i], o.client_gflop);
    std::printf("metric %s_client_s %.2f\n", names[i], o.client_s);
    std::printf("metric %s_mb %.3f\n", names[i], o.megabytes);
    std::printf("metric %s_%s %.4f\n", names[i], name.c_str(), o.value);
  }
  std::printf("metric split_k1_client_compute_share %.4f\n",
              outcomes[1].client_gflop / full.client_gflop);
  std::printf("metric split_k1_bytes_over_full %.2f\n",
              outcomes[1].megabytes / full.megabytes);
  std::printf("metric split_k1_%s_minus_full %.4f\n", name.c_str(),
              outcomes[1].value - full.value);
  std::printf("metric savers_bytes_over_plain_split %.3f\n",
              outcomes[6].megabytes / outcomes[1].megabytes);
  return 0;
}
