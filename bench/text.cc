// The text task's reference points for bench/run text.
//
//   fedge-bench-text --mode=central --task=FILE --clients=N [--rank=8]
//       LoRA fine-tuning of the task's base, centrally, on the union of the
//       N simulated devices' shards (exactly what the federation's devices
//       hold together), `--epochs` passes with the federation's batch size
//       and learning rate; prints the held-out bits per byte before and
//       after. The federation is compared with it.
//   fedge-bench-text --mode=logits --out=DIR
//       writes two small random LLaMA-family checkpoints in the Hugging
//       Face layout, every weight perturbed: DIR/llama (grouped KV heads,
//       tied embeddings, llama3 rope scaling, non-default rope_theta and
//       rms_norm_eps) and DIR/qwen2 (q/k/v biases, bf16 weights in two
//       shards with an index), each with a batch of token ids and the
//       logits of the model fedge's loader reads back, for
//       bench/llama_reference.py.
//   fedge-bench-text --mode=ids --task=FILE --out=PATH
//       writes every record of the corpus (held-out ones included) with
//       fedge's token ids, one JSON object per line, for
//       bench/tokenizer_reference.py to compare with Debian's
//       python3-sentencepiece.
//
// Prints `metric NAME VALUE` lines for bench/run.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <nlohmann/json.hpp>
#include <torch/types.h>
#include <torch/utils.h>

#include "bench/check.h"
#include "lora/lora.h"
#include "model/checkpoint.h"
#include "model/file_io.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "task/task_flags.h"
#include "task/text_corpus.h"

ABSL_FLAG(std::string, mode, "central", "central | logits | ids");
ABSL_FLAG(int, clients, 8, "central: devices whose shards are pooled.");
ABSL_FLAG(int64_t, rank, 8, "central: LoRA rank.");
ABSL_FLAG(std::string, lora_targets,
          "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
          "central: LoRA target modules.");
ABSL_FLAG(int64_t, epochs, 1, "central: passes over the pooled shards.");
ABSL_FLAG(int64_t, max_steps, 0,
          "central: stop after this many optimizer steps (0: --epochs "
          "decides), e.g. the federation's devices x rounds x local steps "
          "for a comparison at equal steps.");
ABSL_FLAG(int64_t, batch_size, 32, "central: mini-batch size.");
ABSL_FLAG(double, lr, 3e-3, "central: peak learning rate.");
ABSL_FLAG(std::string, out, "",
          "ids: output JSONL file; logits: output directory.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");

namespace {

namespace fb = fedge::bench;
namespace fm = fedge::model;
namespace ft = fedge::task;

int Central(const ft::TaskSpec& spec) {
  auto data = fb::Check(ft::TaskData::Create(spec));
  std::vector<fm::Dataset> shards =
      fb::Check(data->Shards(absl::GetFlag(FLAGS_clients)));
  fm::Dataset pooled;
  std::vector<at::Tensor> inputs, targets, bytes;
  for (const fm::Dataset& s : shards) {
    inputs.push_back(s.inputs);
    targets.push_back(s.targets);
    bytes.push_back(s.target_bytes);
  }
  pooled.inputs = torch::cat(inputs);
  pooled.targets = torch::cat(targets);
  pooled.target_bytes = torch::cat(bytes);
  pooled.num_classes = shards.front().num_classes;
  const fm::Dataset eval = fb::Check(data->Eval());
  fm::Model model = fb::Check(fm::LoadCheckpoint(spec.base_dir));
  const fm::EvalResult before = fb::Check(fm::Evaluate(*model, eval, 64));
  fedge::lora::LoraOptions lora;
  lora.rank = absl::GetFlag(FLAGS_rank);
  lora.target_modules.clear();
  for (absl::string_view t :
       absl::StrSplit(absl::GetFlag(FLAGS_lora_targets), ',')) {
    lora.target_modules.emplace_back(t);
  }
  fb::Check(fedge::lora::Inject(*model, lora));
  fm::TrainOptions options;
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.max_steps = absl::GetFlag(FLAGS_max_steps);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.learning_rate = absl::GetFlag(FLAGS_lr);
  options.weight_decay = 0;
  options.seed = 1;
  options.progress_every = 100;
  options.on_progress = [](const fm::TrainProgress& p) {
    std::printf("  step %lld/%lld loss %.4f\n", static_cast<long long>(p.step),
                static_cast<long long>(p.total_steps), p.loss);
    std::fflush(stdout);
  };
  const fm::TrainResult trained = fb::Check(fm::Train(*model, pooled, options));
  const fm::EvalResult after = fb::Check(fm::Evaluate(*model, eval, 64));
  std::printf(
      "central LoRA r%lld on the union of %d shards (%lld windows, %lld "
      "steps, %.1f s): held-out %.4f -> %.4f bits per byte\n",
      static_cast<long long>(lora.rank), absl::GetFlag(FLAGS_clients),
      static_cast<long long>(pooled.size()),
      static_cast<long long>(trained.steps), trained.seconds,
      before.bits_per_byte, after.bits_per_byte);
  std::printf("metric text_central_base_bits_per_byte %.6f\n",
              before.bits_per_byte);
  std::printf("metric text_central_bits_per_byte %.6f\n", after.bits_per_byte);
  std::printf("metric text_central_steps %lld\n",
              static_cast<long long>(trained.steps));
  return 0;
}

// Writes `model`'s weights as bfloat16 in two shards with
// model.safetensors.index.json, and its config.json, into `dir`, as a
// Hugging Face export of a larger model would.
void WriteShardedBf16(fm::LlamaImpl& model, const std::string& dir) {
  fb::Check(fm::MakeDirectories(dir));
  fm::NamedTensors shards[2];
  nlohmann::json map = nlohmann::json::object();
  const auto params = model.named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const int shard = i < params.size() / 2 ? 0 : 1;
    const std::string file =
        absl::StrCat("model-0000", shard + 1, "-of-00002.safetensors");
    shards[shard].insert(params[i].key(),
                         params[i].value().detach().to(torch::kBFloat16));
    map[params[i].key()] = file;
  }
  for (int shard = 0; shard < 2; ++shard) {
    fb::Check(fm::WriteSafetensors(
        absl::StrCat(dir, "/model-0000", shard + 1, "-of-00002.safetensors"),
        shards[shard]));
  }
  fb::Check(fm::WriteFileAtomically(
      dir + "/" + fm::kWeightsIndexFile,
      nlohmann::json{{"metadata", nlohmann::json::object()},
                     {"weight_map", map}}
          .dump(2)));
  fb::Check(
      fm::WriteFileAtomically(dir + "/" + fm::kConfigFile, model.ConfigJson()));
}

// One random checkpoint of `config` in `dir` (float32 single file, or
// bf16 shards), read back through fedge's loader, and that model's logits
// for a batch of random tokens.
void WriteLogits(const fm::LlamaConfig& config, const std::string& dir,
                 bool sharded_bf16) {
  fm::Llama llama = fb::Check(fm::CreateLlama(config));
  {
    torch::NoGradGuard no_grad;
    for (at::Tensor& p : llama->parameters())
      p.add_(torch::randn_like(p) * 0.05);
  }
  if (sharded_bf16) {
    WriteShardedBf16(*llama, dir);
  } else {
    fb::Check(fm::SaveCheckpoint(*llama, dir));
  }
  fm::Model loaded = fb::Check(fm::LoadCheckpoint(dir));
  const at::Tensor tokens =
      torch::randint(0, config.vocab_size, {3, 40}, torch::kLong);
  at::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    loaded->eval();
    logits = loaded->forward(tokens);
  }
  fm::NamedTensors out;
  out.insert("tokens", tokens);
  out.insert("logits", logits.contiguous());
  fb::Check(fm::WriteSafetensors(dir + "/fedge_logits.safetensors", out));
  std::printf(
      "logits: %s checkpoint and fedge's logits [%lld, %lld, %lld] in %s\n",
      config.model_type.c_str(), static_cast<long long>(logits.size(0)),
      static_cast<long long>(logits.size(1)),
      static_cast<long long>(logits.size(2)), dir.c_str());
}

int Logits() {
  const std::string dir = absl::GetFlag(FLAGS_out);
  fm::LlamaConfig config;
  config.vocab_size = 320;
  config.hidden_size = 96;
  config.head_dim = 16;
  config.rms_norm_eps = 1e-6;
  config.rope_theta = 500000;
  config.max_position_embeddings = 64;
  config.tie_word_embeddings = true;
  // Llama 3.1's scaling with a context short enough that the 8 frequencies
  // fall in all three of its regimes (kept, blended, stretched).
  config.rope_scaling.kind = fm::RopeScaling::Kind::kLlama3;
  config.rope_scaling.factor = 8;
  config.rope_scaling.low_freq_factor = 1;
  config.rope_scaling.high_freq_factor = 4;
  config.rope_scaling.original_max_position_embeddings = 64;
  // Uniform blocks: the standard config keys describe them (fedge's
  // per-block "fedge_layers" extension is not what a reference reads).
  config.layers = {{6, 2, 160}, {6, 2, 160}, {6, 2, 160}};
  WriteLogits(config, dir + "/llama", /*sharded_bf16=*/false);

  // Qwen2: q/k/v biases, untied head, bf16 shards.
  fm::LlamaConfig qwen2 = config;
  qwen2.model_type = "qwen2";
  qwen2.qkv_bias = true;
  qwen2.tie_word_embeddings = false;
  qwen2.rope_scaling = {};
  qwen2.rope_theta = 1e6;
  WriteLogits(qwen2, dir + "/qwen2", /*sharded_bf16=*/true);
  return 0;
}

// Every record of the corpus with the ids fedge's tokenizer gives it.
int Ids(const ft::TaskSpec& spec) {
  auto data = fb::Check(ft::TaskData::Create(spec));
  const ft::TextCorpus corpus =
      fb::Check(ft::ReadTextCorpus(spec.data.corpus, spec.data));
  std::ofstream out(absl::GetFlag(FLAGS_out));
  int64_t records = 0, tokens = 0;
  for (const ft::TextRecord& r : corpus.records) {
    const std::vector<int64_t> ids =
        fb::Check(data->tokenizer()->Encode(r.text));
    out << nlohmann::json{{"text", r.text}, {"ids", ids}}.dump() << "\n";
    ++records;
    tokens += static_cast<int64_t>(ids.size());
  }
  std::printf("ids: %lld records, %lld tokens written to %s\n",
              static_cast<long long>(records), static_cast<long long>(tokens),
              absl::GetFlag(FLAGS_out).c_str());
  return out.good() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  torch::manual_seed(1);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "logits") return Logits();
  const ft::TaskSpec spec = fb::Check(ft::TaskFromFlags());
  if (!ft::IsText(spec.objective)) {
    fb::Die(absl::InvalidArgumentError(
        "--task must be a text task (e.g. tasks/fortunes.json)"));
  }
  if (mode == "central") return Central(spec);
  if (mode == "ids") return Ids(spec);
  fb::Die(absl::InvalidArgumentError("--mode: central, logits or ids"));
}
