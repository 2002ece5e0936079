// fedge-pretrain: trains the default base model (a small ViT) centrally on
// Fashion-MNIST's public split, evaluates it on the test set and writes a
// checkpoint (config.json + model.safetensors) and metrics.json.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <torch/utils.h>

#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/file_io.h"
#include "model/partition.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "model/vit.h"

ABSL_FLAG(std::string, data_dir, fedge::model::kFashionMnistDir,
          "Directory with the Fashion-MNIST IDX files (Debian package "
          "dataset-fashion-mnist).");
ABSL_FLAG(std::string, out, "runs/base",
          "Output directory for config.json, model.safetensors and "
          "metrics.json (created if missing).");
ABSL_FLAG(double, public_fraction, 0.1,
          "Fraction of the 60,000 training images held by the coordinator as "
          "its public split and used here; 1.0 pretrains on all of them.");
ABSL_FLAG(int64_t, epochs, 8, "Passes over the training images.");
ABSL_FLAG(int64_t, batch_size, 128, "Mini-batch size.");
ABSL_FLAG(double, lr, 2e-3, "Peak AdamW learning rate (warm-up, then cosine).");
ABSL_FLAG(double, weight_decay, 0.05, "AdamW decoupled weight decay.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");
ABSL_FLAG(uint64_t, seed, 1, "Seed for initialisation, split and shuffling.");
ABSL_FLAG(int64_t, progress_every, 50, "Print progress every N steps.");
ABSL_FLAG(int64_t, patch_size, fedge::model::VitConfig().patch_size,
          "ViT patch size in pixels (divides 28).");
ABSL_FLAG(int64_t, dim, fedge::model::VitConfig().dim, "ViT width.");
ABSL_FLAG(int64_t, heads, fedge::model::VitConfig().layers[0].num_heads,
          "Attention heads per block (divides --dim).");
ABSL_FLAG(int64_t, mlp_hidden, fedge::model::VitConfig().layers[0].mlp_hidden,
          "MLP hidden width per block.");
ABSL_FLAG(int64_t, layers, fedge::model::VitConfig().layers.size(),
          "Number of transformer blocks.");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "fedge-pretrain: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Pretrains fedge's default ViT on Fashion-MNIST and reports its test "
      "accuracy.\nUsage: fedge-pretrain [--public_fraction=0.1] "
      "[--epochs=8] [--out=runs/base]");
  absl::ParseCommandLine(argc, argv);
  namespace fm = fedge::model;
  const int threads = fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  torch::manual_seed(seed);  // Initialisation.

  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  absl::StatusOr<fm::Dataset> train =
      fm::LoadFashionMnist(data_dir, fm::Split::kTrain);
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<fm::Dataset> test =
      fm::LoadFashionMnist(data_dir, fm::Split::kTest);
  if (!test.ok()) return Fail(test.status());
  absl::StatusOr<fm::PublicSplit> split = fm::SplitPublic(
      train->size(), absl::GetFlag(FLAGS_public_fraction), seed);
  if (!split.ok()) return Fail(split.status());
  absl::StatusOr<fm::Dataset> public_data =
      fm::Subset(*train, split->public_indices);
  if (!public_data.ok()) return Fail(public_data.status());
  if (public_data->size() == 0) {
    return Fail(absl::InvalidArgumentError(
        "--public_fraction leaves no training images"));
  }

  fm::VitConfig config;
  config.patch_size = absl::GetFlag(FLAGS_patch_size);
  config.dim = absl::GetFlag(FLAGS_dim);
  const int64_t heads = absl::GetFlag(FLAGS_heads);
  if (heads <= 0 || config.dim % heads != 0) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--heads=", heads, " must be positive and divide --dim=", config.dim)));
  }
  config.head_dim = config.dim / heads;
  const int64_t num_layers = absl::GetFlag(FLAGS_layers);
  if (num_layers < 1 || num_layers > 64) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--layers=", num_layers, " must be in [1, 64]")));
  }
  config.layers.assign(num_layers,
                       {heads, heads, absl::GetFlag(FLAGS_mlp_hidden)});
  absl::StatusOr<fm::Vit> vit = fm::CreateVit(config);
  if (!vit.ok()) return Fail(vit.status());
  std::printf(
      "fedge-pretrain: ViT with %lld parameters, %lld training images "
      "(public fraction %.2f), %lld test images, %d threads\n",
      static_cast<long long>(fm::CountParameters(**vit)),
      static_cast<long long>(public_data->size()),
      absl::GetFlag(FLAGS_public_fraction),
      static_cast<long long>(test->size()), threads);

  fm::TrainOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  options.seed = seed;
  options.progress_every = absl::GetFlag(FLAGS_progress_every);
  options.on_progress = [](const fm::TrainProgress& p) {
    std::printf(
        "  epoch %lld  step %6lld/%lld (%3.0f%%)  loss %.4f  lr %.2e  "
        "%.0f samples/s\n",
        static_cast<long long>(p.epoch + 1), static_cast<long long>(p.step),
        static_cast<long long>(p.total_steps), 100.0 * p.step / p.total_steps,
        p.loss, p.learning_rate, p.samples_per_second);
    std::fflush(stdout);
  };
  absl::StatusOr<fm::TrainResult> trained =
      fm::Train(**vit, *public_data, options);
  if (!trained.ok()) return Fail(trained.status());

  absl::StatusOr<fm::EvalResult> eval = fm::Evaluate(**vit, *test);
  if (!eval.ok()) return Fail(eval.status());

  const std::string out = absl::GetFlag(FLAGS_out);
  if (absl::Status s = fm::SaveCheckpoint(**vit, out); !s.ok()) return Fail(s);
  const std::string metrics = absl::StrFormat(
      "{\n  \"test_accuracy\": %.6f,\n  \"test_loss\": %.6f,\n"
      "  \"train_images\": %d,\n  \"epochs\": %d,\n  \"steps\": %d,\n"
      "  \"train_seconds\": %.2f,\n  \"threads\": %d\n}\n",
      eval->accuracy, eval->loss, public_data->size(), options.epochs,
      trained->steps, trained->seconds, threads);
  if (absl::Status s = fm::WriteFileAtomically(out + "/metrics.json", metrics);
      !s.ok()) {
    return Fail(s);
  }
  std::printf(
      "fedge-pretrain: test accuracy %.2f%% (loss %.4f) on %lld images after "
      "%.1f s of training; checkpoint in %s/\n",
      100.0 * eval->accuracy, eval->loss, static_cast<long long>(test->size()),
      trained->seconds, out.c_str());
  return 0;
}
