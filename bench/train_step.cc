// One training step of the default ViT (--model=vit), or a LoRA step of the
// text task's decoder (--model=llama: the shape of tasks/fortunes.json's
// base, LoRA r8 on all seven projections, 64-token windows), through
// fedge's real trainer (fedge::model::Train): batch gather, forward,
// cross-entropy, backward, gradient clipping and AdamW. bench/train_step.py
// does the same steps in Python with Debian's python3-torch (the same
// LibTorch build), so the two differ only in the language that drives
// LibTorch.
//
// Prints `metric NAME VALUE` lines: step_ms (median), min_step_ms (the
// fastest step: on a shared machine, the least disturbed one), samples_per_s,
// peak_rss_mib.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include <torch/types.h>
#include <torch/utils.h>

#include "bench/step_timer.h"
#include "lora/lora.h"
#include "model/llama.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "model/vit.h"
#include <sys/resource.h>

ABSL_FLAG(std::string, model, "vit", "vit or llama (a LoRA step).");
ABSL_FLAG(int64_t, batch_size, 0, "Mini-batch size (0: 128 vit, 16 llama).");
ABSL_FLAG(int64_t, steps, 30, "Measured steps.");
ABSL_FLAG(int64_t, warmup, 5, "Unmeasured steps first.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace fm = fedge::model;
  const int threads = fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const bool llama = absl::GetFlag(FLAGS_model) == "llama";
  const int64_t batch = absl::GetFlag(FLAGS_batch_size) > 0
                            ? absl::GetFlag(FLAGS_batch_size)
                            : (llama ? 16 : 128);
  const int64_t warmup = absl::GetFlag(FLAGS_warmup);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  torch::manual_seed(0);

  fm::Model model;
  fm::Dataset data;
  const int64_t n = batch * (warmup + steps);
  if (llama) {
    fm::LlamaConfig config;
    config.vocab_size = 2048;
    config.hidden_size = 128;
    config.head_dim = 32;
    config.max_position_embeddings = 64;
    config.tie_word_embeddings = true;
    config.layers.assign(4, {4, 2, 384});
    model = *fm::CreateLlama(config);
    fedge::lora::LoraOptions lora;
    lora.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                           "gate_proj", "up_proj", "down_proj"};
    if (!fedge::lora::Inject(*model, lora).ok()) return 1;
    data.inputs = torch::randint(0, config.vocab_size, {n, 64}, torch::kLong);
    data.targets = torch::randint(0, config.vocab_size, {n, 64}, torch::kLong);
    data.num_classes = config.vocab_size;
  } else {
    model = *fm::CreateVit(fm::VitConfig());
    data.inputs = torch::randn({n, 1, 28, 28});
    data.targets = torch::randint(0, 10, {n}, torch::kLong);
    data.num_classes = 10;
  }

  fedge::bench::StepTimer timer(warmup);
  fm::TrainOptions options;
  options.batch_size = batch;
  timer.Attach(options);
  absl::StatusOr<fm::TrainResult> result = fm::Train(*model, data, options);
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
    return 1;
  }
  std::vector<double> step_ms = timer.step_ms;
  std::sort(step_ms.begin(), step_ms.end());
  const double median = step_ms[step_ms.size() / 2];
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::printf("metric threads %d\n", threads);
  std::printf("metric step_ms %.3f\n", median);
  std::printf("metric min_step_ms %.3f\n", step_ms.front());
  std::printf("metric samples_per_s %.1f\n", batch * 1000.0 / median);
  std::printf("metric peak_rss_mib %.1f\n", usage.ru_maxrss / 1024.0);
  return 0;
}
