// Split fine-tuning on the default task (issue 8): one device's epoch over
// its shard with the default ViT and LoRA r8 on q,v, trained fully locally
// and split at k = 1 and 2 (float16, int8 and float32 activations), with
// and without SFPrompt's local-loss updates and EL2N dataset pruning.
// Every split step goes through the wire format (transport::WireSplitLink),
// so the bytes are those of the serialized messages gRPC carries.
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
#include "lora/lora.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/partition.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "split/client.h"
#include "split/server.h"
#include "transport/split_proto.h"
#include "transport/update_codec.h"

ABSL_FLAG(std::string, base, "",
          "Pretrained ViT checkpoint dir (fedge-pretrain).");
ABSL_FLAG(std::string, data_dir, fedge::model::kFashionMnistDir,
          "Fashion-MNIST directory.");
ABSL_FLAG(double, public_fraction, 0.1,
          "The base's public split (fedge-pretrain --public_fraction).");
ABSL_FLAG(int64_t, devices, 8, "The device's shard is 1/devices of the rest.");
ABSL_FLAG(int64_t, eval_examples, 5000, "Test images for accuracy.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");

namespace fm = fedge::model;
namespace fs = fedge::split;
namespace ft = fedge::transport;

namespace {

using fedge::bench::Check;

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
  double accuracy = 0;
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

Outcome RunArm(const Arm& arm, const fm::Dataset& shard,
               const fm::Dataset& test) {
  torch::manual_seed(1);
  fm::Model device = Check(fm::LoadCheckpoint(absl::GetFlag(FLAGS_base)));
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
    fm::Model tail_model = Check(fm::LoadCheckpoint(absl::GetFlag(FLAGS_base)));
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
  out.accuracy = 100 * Check(fm::Evaluate(*device, test)).accuracy;
  std::fprintf(stderr,
               "  %-34s %7.1f GFLOP  %6.1f s  %8.2f MB  %6.2f %%  %5lld "
               "exchanges\n",
               arm.label.c_str(), out.client_gflop, out.client_s, out.megabytes,
               out.accuracy, static_cast<long long>(out.exchanges));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_base).empty()) {
    std::fprintf(stderr, "bench split: --base is required\n");
    return 2;
  }
  fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const std::string dir = absl::GetFlag(FLAGS_data_dir);
  const fm::Dataset all = Check(fm::LoadFashionMnist(dir, fm::Split::kTrain));
  const fm::Dataset test =
      fm::Head(Check(fm::LoadFashionMnist(dir, fm::Split::kTest)),
               absl::GetFlag(FLAGS_eval_examples));
  const fm::PublicSplit split = Check(
      fm::SplitPublic(all.size(), absl::GetFlag(FLAGS_public_fraction), 1));
  const fm::Dataset rest = Check(fm::Subset(all, split.private_indices));
  const fm::Dataset shard =
      fm::Head(rest, rest.size() / absl::GetFlag(FLAGS_devices));
  const int64_t steps = (shard.size() + 31) / 32;
  std::fprintf(stderr,
               "bench split: one epoch over %lld images (%lld steps of 32), "
               "default ViT, LoRA r8 on q,v; client-side figures\n",
               static_cast<long long>(shard.size()),
               static_cast<long long>(steps));

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
  for (const Arm& arm : arms) outcomes.push_back(RunArm(arm, shard, test));

  // For scale: the base before this epoch, and what classic FedAvg of the
  // whole model (SFPrompt's baseline) would move per round: the float32
  // weights down and an int8_row + zstd update up.
  fm::Model base = Check(fm::LoadCheckpoint(absl::GetFlag(FLAGS_base)));
  const double base_accuracy = 100 * Check(fm::Evaluate(*base, test)).accuracy;
  const fm::NamedTensors weights = fm::CopyWeights(*base);
  const double dense_mb = (EncodedBytes(weights, ft::Codec::kFloat32, false) +
                           EncodedBytes(weights, ft::Codec::kInt8Row, true)) /
                          1e6;
  std::fprintf(stderr,
               "  base before the epoch: %.2f %%; whole-model FedAvg would "
               "move %.2f MB per round\n",
               base_accuracy, dense_mb);
  std::printf("metric base_accuracy %.2f\n", base_accuracy);
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
    std::printf("metric %s_accuracy %.2f\n", names[i], o.accuracy);
  }
  std::printf("metric split_k1_client_compute_share %.4f\n",
              outcomes[1].client_gflop / full.client_gflop);
  std::printf("metric split_k1_bytes_over_full %.2f\n",
              outcomes[1].megabytes / full.megabytes);
  std::printf("metric split_k1_accuracy_minus_full %.2f\n",
              outcomes[1].accuracy - full.accuracy);
  std::printf("metric savers_bytes_over_plain_split %.3f\n",
              outcomes[6].megabytes / outcomes[1].megabytes);
  return 0;
}
