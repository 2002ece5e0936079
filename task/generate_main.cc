// fedge-generate: a text task's model answering prompts, so a person can see
// what fine-tuning changed. Loads a checkpoint in the Hugging Face layout
// (the task's base by default, or the merged and pruned model a federation
// leaves in <run_dir>/model) and either generates from a prompt or scores a
// data file in the task's format.
//
//   fedge-generate --task=tasks/wordnet.json --instruction="Define the word."
//       --context=harbor [--model=runs/x/fedspine/model]
//   fedge-generate --task=tasks/fortunes.json --prompt="The computer"
//   fedge-generate --task=tasks/wordnet.json --score=mine.jsonl
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

#include "cli/cli.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/threads.h"
#include "model/trainer.h"
#include "task/spec.h"
#include "task/task_data.h"
#include "task/task_flags.h"
#include "task/text_corpus.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (config.json + model.safetensors or shards); "
          "empty: the task's base. A federation's result is "
          "<run_dir>/model.");
ABSL_FLAG(std::string, prompt, "",
          "Raw text to continue (causal_lm tasks, or any text).");
ABSL_FLAG(std::string, instruction, "",
          "An instruction, put in the task's prompt template with --context "
          "(instruction_tuning tasks; docs/tasks.md).");
ABSL_FLAG(std::string, context, "", "The instruction's input (optional).");
ABSL_FLAG(std::string, score, "",
          "Instead of generating: a data file (or directory) in the task's "
          "format to evaluate the model on; prints loss, perplexity, bits "
          "per byte and, for instruction records, exact match.");
ABSL_FLAG(int64_t, max_new_tokens, 64,
          "Most tokens to generate; generation also stops at the end of "
          "sequence and when the model's context is full.");
ABSL_FLAG(double, temperature, 0,
          "0: greedy; otherwise sample from softmax(logits / temperature).");
ABSL_FLAG(int64_t, top_k, 0, "Sampling: only the k likeliest tokens (0: all).");
ABSL_FLAG(uint64_t, seed, 1, "Sampling seed.");
ABSL_FLAG(int, threads, 0, "LibTorch threads; 0 = all cores.");

namespace {

namespace fm = fedge::model;
namespace ft = fedge::task;

using fedge::cli::Fail;

int Score(fm::ModelImpl& model, ft::TaskData& data, const std::string& path) {
  absl::StatusOr<fm::Dataset> dataset = data.DeviceData(path);
  if (!dataset.ok()) return Fail(dataset.status());
  absl::StatusOr<fm::EvalResult> eval = fm::Evaluate(model, *dataset, 32);
  if (!eval.ok()) return Fail(eval.status());
  std::printf(
      "%s: %lld examples, loss %.4f, perplexity %.2f, %.4f bits per byte",
      path.c_str(), static_cast<long long>(eval->examples), eval->loss,
      eval->perplexity, eval->bits_per_byte);
  if (eval->exact_match >= 0) {
    std::printf(", exact match %.1f%%", 100 * eval->exact_match);
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (absl::Status s = fedge::cli::ParseFlags(
          argc, argv,
          "Generates text from a text task's model, or scores a data file.\n"
          "Usage: fedge-generate --task=FILE (--prompt=TEXT | "
          "--instruction=TEXT "
          "[--context=TEXT] | --score=PATH) [--model=DIR]");
      !s.ok()) {
    return Fail(s);
  }
  fm::ConfigureRuntime(absl::GetFlag(FLAGS_threads));
  const int modes = !absl::GetFlag(FLAGS_prompt).empty() +
                    !absl::GetFlag(FLAGS_instruction).empty() +
                    !absl::GetFlag(FLAGS_score).empty();
  if (modes != 1) {
    return Fail(absl::InvalidArgumentError(
        "give exactly one of --prompt, --instruction and --score"));
  }
  if (!absl::GetFlag(FLAGS_context).empty() &&
      absl::GetFlag(FLAGS_instruction).empty()) {
    return Fail(absl::InvalidArgumentError("--context needs --instruction"));
  }
  absl::StatusOr<ft::TaskSpec> spec = ft::TaskFromFlags();
  if (!spec.ok()) return Fail(spec.status());
  if (!ft::IsText(spec->objective)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        spec->origin, " is not a text task (give one with --task)")));
  }
  absl::StatusOr<std::unique_ptr<ft::TaskData>> data =
      ft::TaskData::Create(*spec);
  if (!data.ok()) return Fail(data.status());
  const std::string dir = absl::GetFlag(FLAGS_model).empty()
                              ? spec->base_dir
                              : absl::GetFlag(FLAGS_model);
  absl::StatusOr<fm::Model> model = fm::LoadCheckpoint(dir);
  if (!model.ok()) return Fail(model.status());
  if (absl::Status s = ft::CheckModelFitsTask(**data, **model); !s.ok()) {
    return Fail(s);
  }
  if (!absl::GetFlag(FLAGS_score).empty()) {
    return Score(**model, **data, absl::GetFlag(FLAGS_score));
  }
  const ft::Tokenizer& tokenizer = *(*data)->tokenizer();
  const std::string prompt =
      absl::GetFlag(FLAGS_instruction).empty()
          ? absl::GetFlag(FLAGS_prompt)
          : ft::InstructionPrompt(absl::GetFlag(FLAGS_instruction),
                                  absl::GetFlag(FLAGS_context));
  absl::StatusOr<std::vector<int64_t>> ids = tokenizer.Encode(prompt);
  if (!ids.ok()) return Fail(ids.status());
  // Generation ends where a record ends.
  absl::StatusOr<std::vector<int64_t>> end = ft::RecordEndIds(tokenizer);
  if (!end.ok()) return Fail(end.status());
  const int64_t stop = end->front();
  fm::GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.stop_id = stop;
  absl::StatusOr<std::vector<int64_t>> out =
      fm::Generate(**model, *ids, options);
  if (!out.ok()) return Fail(out.status());
  if (!out->empty() && out->back() == stop) out->pop_back();
  std::printf("%s%s\n", prompt.c_str(), tokenizer.Decode(*out).c_str());
  return 0;
}
