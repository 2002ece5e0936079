// A task: everything that says *what* a federation learns, in one JSON file
// that every binary takes with --task (fedge-coordinator, fedge-client,
// fedge-sim, fedge-vclock, fedge-pretrain and the benchmarks). The file names
// the model (its base checkpoint), the objective, the tokenizer, the data and
// how it is split in simulation, the sequence length and the evaluation
// metric. docs/tasks.md documents every field; tasks/ holds the built-in ones.
//
// Parsing is strict: a missing required field, a value of the wrong type or
// out of range, and any field fedge does not know are refused with
// InvalidArgument naming the file and the field ("tasks/x.json: field
// \"sequence.length\" must be in [2, 8192]").
//
// Relative paths in the file are taken relative to the current directory,
// as flags are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::task {

enum class Objective {
  kImageClassification,  // Images -> class logits; cross-entropy on labels.
  kCausalLm,             // Plain text -> next-token cross-entropy.
  // JSONL instruction / optional context / response records (Alpaca or
  // Dolly fields) in a prompt template (docs/tasks.md); next-token
  // cross-entropy on the response tokens only, one window per record.
  kInstructionTuning,
  // JSONL text + label records: the label is the response to a fixed
  // prompt around the text (docs/tasks.md), so the decoder classifies by
  // generating it; exact match is the classification accuracy.
  kSequenceClassification,
};

// "image_classification", "causal_lm", "instruction_tuning",
// "sequence_classification".
absl::string_view ObjectiveName(Objective objective);

enum class Metric {
  kAccuracy,     // Top-1 accuracy (higher is better).
  kLoss,         // Mean cross-entropy per target (lower is better).
  kPerplexity,   // exp(loss) per token (lower is better).
  kBitsPerByte,  // Total cross-entropy in bits over the UTF-8 bytes the
                 // targets cover: comparable across tokenizers.
  kExactMatch,   // Record tasks: share of held-out records whose greedy
                 // answer is the response (the label) exactly (higher is
                 // better).
};

// "accuracy", "loss", "perplexity", "bits_per_byte", "exact_match": the
// name evaluation.metric takes.
absl::string_view MetricName(Metric metric);

// True for the text objectives (all but image_classification).
bool IsText(Objective objective);
// True for the objectives whose JSONL records each fill one window with a
// masked prompt (instruction_tuning, sequence_classification).
bool IsRecordTask(Objective objective);

struct TokenizerSpec {
  // "byte" (one id per UTF-8 byte, vocabulary 256) or "sentencepiece"
  // (a SentencePiece model file, LLaMA-1/2, TinyLlama, Mistral shapes).
  std::string type = "byte";
  std::string model_path;  // sentencepiece: the tokenizer.model file.
};

struct DataSpec {
  // "idx" (Fashion-MNIST IDX files in `corpus`), "text" (UTF-8 plain text:
  // a file or a directory of files) or "jsonl" (one JSON record per line:
  // instruction_tuning).
  std::string format = "idx";
  // The public corpus fedge-sim, fedge-vclock, CI and fedge-pretrain split;
  // a device in production reads its own data instead (fedge-client --data).
  std::string corpus;
  // text: file-name patterns (fnmatch) left out when `corpus` or a device's
  // --data is a directory, e.g. "*.dat".
  std::vector<std::string> skip;
  // text: a line equal to this ends a record (fortune files use "%"); empty:
  // a blank line ends a record.
  std::string record_separator;
};

struct SequenceSpec {
  int64_t length = 128;  // Tokens per training window (the context).
  // Pack records end to end (separated by the tokenizer's end-of-sequence
  // id) into full windows; false: one window per record, cut at `length`.
  bool packing = true;
};

struct EvaluationSpec {
  Metric metric = Metric::kAccuracy;
  int64_t examples = 1000;  // Held-out examples the coordinator evaluates.
  // text: fraction of the corpus's records held out for evaluation (never
  // seen by the base's pretraining or by any device).
  double fraction = 0.1;
};

// How a public corpus becomes a federation in simulation.
struct SimulationSpec {
  // Share of the training data the coordinator holds as its public split:
  // the base model is pretrained on it and pruning costs are measured on it.
  double public_fraction = 0.1;
  // text: what the public split is made of. "record": records drawn from
  // every file (the base has seen every topic); "file": whole files (the
  // base has seen other topics than the devices: a domain the federation
  // adapts it to), and the held-out records come from the devices' files;
  // "category" (jsonl): whole categories, likewise.
  std::string public_by = "record";
  // "iid", "dirichlet" (label skew; text: skew over source files),
  // "by_file" (text: each source file goes whole to one device) or
  // "by_category" (jsonl: each record category goes whole to one device).
  std::string partition = "dirichlet";
  double alpha = 0.5;  // Dirichlet concentration.
  uint64_t seed = 1;   // The split's seed (public/eval/private and shards).
};

// The shape of the base fedge-pretrain trains when the task's base does not
// exist (language models; the ViT keeps fedge-pretrain's own flags).
struct PretrainSpec {
  int64_t vocab_size = 2048;  // SentencePiece vocabulary trained with it.
  int64_t hidden_size = 192;
  int64_t layers = 4;
  int64_t heads = 6;
  int64_t kv_heads = 2;
  int64_t intermediate_size = 512;
  int64_t epochs = 4;
  int64_t batch_size = 16;
  double learning_rate = 3e-3;
};

struct TaskSpec {
  std::string name;  // Letters, digits, '.', '_', '-'.
  Objective objective = Objective::kImageClassification;
  std::string base_dir;  // config.json + model.safetensors (+ tokenizer).
  TokenizerSpec tokenizer;
  SequenceSpec sequence;
  DataSpec data;
  EvaluationSpec evaluation;
  SimulationSpec simulation;
  PretrainSpec pretrain;
  std::string origin;  // The file it was read from, for messages.
};

// Parses a task file's text; `origin` names it in errors.
absl::StatusOr<TaskSpec> ParseTaskSpec(absl::string_view json,
                                       absl::string_view origin);
// Reads and parses `path`. NotFound if it does not exist.
absl::StatusOr<TaskSpec> LoadTaskSpec(const std::string& path);

// The task a binary runs: the task file at `path` (an empty `path`: the
// built-in task, FashionMnistTask()), with `overrides` applied to its JSON
// before it is validated. An override is "FIELD=VALUE": FIELD a dotted path
// ("simulation.alpha", "base"), VALUE JSON ("0.1", "true", "\"x\"") or, if
// it does not parse as JSON, a string ("runs/base2"). The result is checked
// exactly as a file is, so an unknown field or a wrong value is refused by
// name; an override that is not FIELD=VALUE, or whose path crosses a
// non-object, is InvalidArgument naming it.
absl::StatusOr<TaskSpec> ResolveTask(const std::string& path,
                                     const std::vector<std::string>& overrides);

// The built-in task that binaries run without --task: fedge's ViT on
// Fashion-MNIST from runs/base, exactly as before tasks existed (the
// label-Dirichlet split, alpha 0.5, of the training images left over by a
// 10% public fraction; accuracy on the whole test split). The same as
// tasks/fashion-mnist.json.
TaskSpec FashionMnistTask();

}  // namespace fedge::task
