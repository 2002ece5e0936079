// fedge-pretrain: trains a task's base model centrally on the task's public
// split, evaluates it on the held-out data and writes a checkpoint
// (config.json + model.safetensors, and tokenizer.model for text) and
// metrics.json. Without --task: the default ViT on Fashion-MNIST. With a
// text task: a SentencePiece tokenizer trained on the public split, then a
// small LLaMA-style decoder of the task's "pretrain" shape, written in the
// Hugging Face layout.
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <torch/utils.h>

#include "cli/cli.h"
#include "model/checkpoint.h"
#include "model/dataset.h"
#include "model/file_io.h"
#include "model/llama.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "model/vit.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "task/task_flags.h"
#include "task/tokenizer.h"

ABSL_FLAG(std::string, out, "",
          "Output directory for config.json, model.safetensors and "
          "metrics.json (created if missing); empty: the task's base "
          "(runs/base without --task).");
ABSL_FLAG(int64_t, epochs, 8,
          "Passes over the training images (text tasks: the task's "
          "pretrain.epochs).");
ABSL_FLAG(int64_t, batch_size, 128,
          "Mini-batch size (text tasks: pretrain.batch_size).");
ABSL_FLAG(double, lr, 2e-3,
          "Peak AdamW learning rate, warm-up then cosine (text tasks: "
          "pretrain.learning_rate).");
ABSL_FLAG(double, weight_decay, 0.05, "AdamW decoupled weight decay.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");
ABSL_FLAG(uint64_t, seed, 1,
          "Seed for initialisation and shuffling (the split's is the task's "
          "simulation.seed).");
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

using fedge::cli::Fail;

void PrintProgress(const fedge::model::TrainProgress& p) {
  std::printf(
      "  epoch %lld  step %6lld/%lld (%3.0f%%)  loss %.4f  lr %.2e  "
      "%.0f samples/s\n",
      static_cast<long long>(p.epoch + 1), static_cast<long long>(p.step),
      static_cast<long long>(p.total_steps), 100.0 * p.step / p.total_steps,
      p.loss, p.learning_rate, p.samples_per_second);
  std::fflush(stdout);
}

// A text task's base: tokenizer, then a LLaMA-style decoder, both trained
// on the public split; evaluated on the held-out split.
int PretrainText(const fedge::task::TaskSpec& spec, const std::string& out,
                 bool train_tokenizer, int threads, uint64_t seed) {
  namespace fm = fedge::model;
  namespace ft = fedge::task;
  if (absl::Status s = fm::MakeDirectories(out); !s.ok()) return Fail(s);
  if (train_tokenizer) {
    absl::StatusOr<std::string> text = ft::PublicText(spec);
    if (!text.ok()) return Fail(text.status());
    const std::string corpus = out + "/tokenizer_corpus.txt";
    if (absl::Status s = fm::WriteFileAtomically(corpus, *text); !s.ok()) {
      return Fail(s);
    }
    std::printf(
        "fedge-pretrain: training a %lld-piece SentencePiece "
        "tokenizer on %zu bytes of public text\n",
        static_cast<long long>(spec.pretrain.vocab_size), text->size());
    std::fflush(stdout);
    if (absl::Status s =
            ft::TrainSentencePiece(corpus, spec.pretrain.vocab_size,
                                   spec.tokenizer.model_path, threads);
        !s.ok()) {
      return Fail(s);
    }
    std::remove(corpus.c_str());
  }
  absl::StatusOr<std::unique_ptr<ft::TaskData>> data =
      ft::TaskData::Create(spec);
  if (!data.ok()) return Fail(data.status());
  absl::StatusOr<fm::Dataset> train = (*data)->Public();
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<fm::Dataset> eval = (*data)->Eval();
  if (!eval.ok()) return Fail(eval.status());

  const ft::PretrainSpec& p = spec.pretrain;
  fm::LlamaConfig config;
  config.vocab_size = (*data)->tokenizer()->vocab_size();
  config.hidden_size = p.hidden_size;
  config.head_dim = p.hidden_size / p.heads;
  config.max_position_embeddings = spec.sequence.length;
  config.tie_word_embeddings = true;
  config.layers.assign(p.layers, {p.heads, p.kv_heads, p.intermediate_size});
  absl::StatusOr<fm::Llama> llama = fm::CreateLlama(config);
  if (!llama.ok()) return Fail(llama.status());
  std::printf(
      "fedge-pretrain: LLaMA-style decoder with %lld parameters, %lld "
      "windows of %lld tokens (%lld bytes of text) to train on, %lld "
      "held out, %d threads\n",
      static_cast<long long>(fm::CountParameters(**llama)),
      static_cast<long long>(train->size()),
      static_cast<long long>(spec.sequence.length),
      static_cast<long long>(train->target_bytes.sum().item<int64_t>()),
      static_cast<long long>(eval->size()), threads);
  fm::TrainOptions options;
  options.epochs = p.epochs;
  options.batch_size = p.batch_size;
  options.learning_rate = p.learning_rate;
  options.weight_decay = 0.1;
  options.seed = seed;
  options.progress_every = absl::GetFlag(FLAGS_progress_every);
  options.on_progress = PrintProgress;
  absl::StatusOr<fm::TrainResult> trained = fm::Train(**llama, *train, options);
  if (!trained.ok()) return Fail(trained.status());
  absl::StatusOr<fm::EvalResult> result = fm::Evaluate(**llama, *eval, 32);
  if (!result.ok()) return Fail(result.status());
  if (absl::Status s = fm::SaveCheckpoint(**llama, out); !s.ok()) {
    return Fail(s);
  }
  const std::string metrics = absl::StrFormat(
      "{\n  \"task\": \"%s\",\n  \"eval_bits_per_byte\": %.6f,\n"
      "  \"eval_loss\": %.6f,\n  \"eval_perplexity\": %.4f,\n"
      "  \"eval_windows\": %d,\n  \"train_windows\": %d,\n"
      "  \"steps\": %d,\n  \"train_seconds\": %.2f,\n  \"threads\": %d\n}\n",
      spec.name, result->bits_per_byte, result->loss, result->perplexity,
      eval->size(), train->size(), trained->steps, trained->seconds, threads);
  if (absl::Status s = fm::WriteFileAtomically(out + "/metrics.json", metrics);
      !s.ok()) {
    return Fail(s);
  }
  std::printf(
      "fedge-pretrain: held-out %.4f bits per byte (loss %.4f, perplexity "
      "%.2f) on %lld windows after %.1f s of training; checkpoint in %s/\n",
      result->bits_per_byte, result->loss, result->perplexity,
      static_cast<long long>(eval->size()), trained->seconds, out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Pretrains a task's base model on the task's public split and "
          "reports its held-out metric.\nUsage: fedge-pretrain [--task=FILE] "
          "[--task_set=FIELD=VALUE,...] [--out=DIR]\n"
          "  e.g. fedge-pretrain --task_set=simulation.public_fraction=1.0 "
          "--epochs=8   (the built-in ViT, on all of Fashion-MNIST's training "
          "images)");
      !s.ok()) {
    return Fail(s);
  }
  namespace fm = fedge::model;
  namespace ft = fedge::task;
  const int threads = fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  torch::manual_seed(seed);  // Initialisation.

  absl::StatusOr<ft::TaskSpec> resolved = ft::TaskFromFlags();
  if (!resolved.ok()) return Fail(resolved.status());
  ft::TaskSpec spec = *std::move(resolved);
  const std::string out = absl::GetFlag(FLAGS_out).empty()
                              ? spec.base_dir
                              : absl::GetFlag(FLAGS_out);
  if (ft::IsText(spec.objective)) {
    // A tokenizer that lives in the base is trained with it; one from
    // elsewhere (a user's tokenizer.model) is used as it is.
    const bool train_tokenizer =
        spec.tokenizer.type == "sentencepiece" &&
        spec.tokenizer.model_path == spec.base_dir + "/tokenizer.model";
    if (train_tokenizer) spec.tokenizer.model_path = out + "/tokenizer.model";
    return PretrainText(spec, out, train_tokenizer, threads, seed);
  }
  absl::StatusOr<std::unique_ptr<ft::TaskData>> data =
      ft::TaskData::Create(spec);
  if (!data.ok()) return Fail(data.status());
  absl::StatusOr<fm::Dataset> public_data = (*data)->Public();
  if (!public_data.ok()) return Fail(public_data.status());
  absl::StatusOr<fm::Dataset> test = (*data)->Eval();
  if (!test.ok()) return Fail(test.status());
  if (public_data->size() == 0) {
    return Fail(absl::InvalidArgumentError(
        "simulation.public_fraction leaves no training images"));
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
      "(public fraction %g), %lld test images, %d threads\n",
      static_cast<long long>(fm::CountParameters(**vit)),
      static_cast<long long>(public_data->size()),
      spec.simulation.public_fraction, static_cast<long long>(test->size()),
      threads);

  fm::TrainOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  options.seed = seed;
  options.progress_every = absl::GetFlag(FLAGS_progress_every);
  options.on_progress = PrintProgress;
  absl::StatusOr<fm::TrainResult> trained =
      fm::Train(**vit, *public_data, options);
  if (!trained.ok()) return Fail(trained.status());

  absl::StatusOr<fm::EvalResult> eval = fm::Evaluate(**vit, *test);
  if (!eval.ok()) return Fail(eval.status());

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
