#include "task/spec.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "glog/logging.h"

#include "model/dataset.h"
#include "model/file_io.h"
#include "model/json_util.h"

namespace fedge::task {
namespace {

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status FieldError(absl::string_view origin, absl::string_view field,
                        absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(origin, ": field \"", field, "\" ", what));
}

}  // namespace

bool IsText(Objective objective) {
  return objective != Objective::kImageClassification;
}

bool IsRecordTask(Objective objective) {
  return objective == Objective::kInstructionTuning ||
         objective == Objective::kSequenceClassification;
}

absl::string_view ObjectiveName(Objective objective) {
  switch (objective) {
    case Objective::kImageClassification:
      return "image_classification";
    case Objective::kCausalLm:
      return "causal_lm";
    case Objective::kInstructionTuning:
      return "instruction_tuning";
    case Objective::kSequenceClassification:
      return "sequence_classification";
  }
  return "unknown";
}

namespace {

absl::StatusOr<TaskSpec> SpecFromJson(const nlohmann::json& object,
                                      absl::string_view origin) {
  model::JsonReader r(object, std::string(origin));
  r.RejectUnknown({"name", "objective", "base", "tokenizer", "sequence", "data",
                   "evaluation", "simulation", "pretrain"});
  TaskSpec spec;
  spec.origin = std::string(origin);
  spec.name = r.String("name");
  const std::string objective = r.String("objective");
  spec.base_dir = r.String("base");

  model::JsonReader tok = r.Object("tokenizer");
  tok.RejectUnknown({"type", "model"});
  spec.tokenizer.type = tok.String("type", "byte");
  spec.tokenizer.model_path = tok.String("model", "");

  model::JsonReader seq = r.Object("sequence");
  seq.RejectUnknown({"length", "packing"});
  spec.sequence.length = seq.Int("length", spec.sequence.length);
  spec.sequence.packing = seq.Bool("packing", spec.sequence.packing);

  model::JsonReader data = r.Object("data");
  data.RejectUnknown({"format", "corpus", "skip", "record_separator"});
  spec.data.format = data.String("format", "");
  spec.data.corpus = data.String("corpus", "");
  spec.data.skip = data.Strings("skip");
  spec.data.record_separator = data.String("record_separator", "");

  model::JsonReader eval = r.Object("evaluation");
  eval.RejectUnknown({"metric", "examples", "fraction"});
  const std::string metric = eval.String("metric", "");
  spec.evaluation.examples = eval.Int("examples", spec.evaluation.examples);
  spec.evaluation.fraction = eval.Double("fraction", spec.evaluation.fraction);

  model::JsonReader sim = r.Object("simulation");
  sim.RejectUnknown(
      {"public_fraction", "public_by", "partition", "alpha", "seed"});
  spec.simulation.public_fraction =
      sim.Double("public_fraction", spec.simulation.public_fraction);
  spec.simulation.public_by =
      sim.String("public_by", spec.simulation.public_by);
  spec.simulation.partition =
      sim.String("partition", spec.simulation.partition);
  spec.simulation.alpha = sim.Double("alpha", spec.simulation.alpha);
  const int64_t seed = sim.Int("seed", 1);

  model::JsonReader pre = r.Object("pretrain");
  pre.RejectUnknown({"vocab_size", "hidden_size", "layers", "heads", "kv_heads",
                     "intermediate_size", "epochs", "batch_size",
                     "learning_rate"});
  PretrainSpec& p = spec.pretrain;
  p.vocab_size = pre.Int("vocab_size", p.vocab_size);
  p.hidden_size = pre.Int("hidden_size", p.hidden_size);
  p.layers = pre.Int("layers", p.layers);
  p.heads = pre.Int("heads", p.heads);
  p.kv_heads = pre.Int("kv_heads", p.kv_heads);
  p.intermediate_size = pre.Int("intermediate_size", p.intermediate_size);
  p.epochs = pre.Int("epochs", p.epochs);
  p.batch_size = pre.Int("batch_size", p.batch_size);
  p.learning_rate = pre.Double("learning_rate", p.learning_rate);
  if (!r.status().ok()) return r.status();

  // Values, field by field.
  if (!ValidName(spec.name)) {
    return FieldError(origin, "name",
                      "must be 1-128 letters, digits, '.', '_' or '-'");
  }
  if (objective == "image_classification") {
    spec.objective = Objective::kImageClassification;
  } else if (objective == "causal_lm") {
    spec.objective = Objective::kCausalLm;
  } else if (objective == "instruction_tuning") {
    spec.objective = Objective::kInstructionTuning;
  } else if (objective == "sequence_classification") {
    spec.objective = Objective::kSequenceClassification;
  } else {
    return FieldError(
        origin, "objective",
        absl::StrCat("'", objective,
                     "' is not image_classification, causal_lm, "
                     "instruction_tuning or sequence_classification"));
  }
  if (spec.base_dir.empty()) return FieldError(origin, "base", "is empty");
  const bool text = IsText(spec.objective);
  // Record tasks: one JSONL record per window.
  const bool records = IsRecordTask(spec.objective);

  if (spec.tokenizer.type == "sentencepiece") {
    if (spec.tokenizer.model_path.empty()) {
      spec.tokenizer.model_path = spec.base_dir + "/tokenizer.model";
    }
  } else if (spec.tokenizer.type == "byte") {
    if (!spec.tokenizer.model_path.empty()) {
      return FieldError(origin, "tokenizer.model",
                        "is only for type sentencepiece");
    }
  } else if (spec.tokenizer.type == "tokenizer.json" ||
             spec.tokenizer.type == "bpe") {
    return FieldError(
        origin, "tokenizer.type",
        absl::StrCat("'", spec.tokenizer.type,
                     "': byte-level BPE (tokenizer.json) is not supported; "
                     "Debian 12 packages no C++ library for it. Supported: "
                     "sentencepiece (tokenizer.model), byte"));
  } else {
    return FieldError(origin, "tokenizer.type",
                      absl::StrCat("'", spec.tokenizer.type,
                                   "' is not sentencepiece or byte"));
  }

  if (spec.sequence.length < 2 || spec.sequence.length > 8192) {
    return FieldError(origin, "sequence.length", "must be in [2, 8192]");
  }
  if (records) {
    // One window per record; a "packing" field saying otherwise is wrong.
    if (seq.Has("packing") && spec.sequence.packing) {
      return FieldError(
          origin, "sequence.packing",
          absl::StrCat("must be false for ", ObjectiveName(spec.objective),
                       " (one window per record, the prompt "
                       "masked)"));
    }
    spec.sequence.packing = false;
  } else if (text && !spec.sequence.packing) {
    return FieldError(origin, "sequence.packing",
                      "false (one padded window per record) is only built "
                      "for JSONL record tasks; causal_lm packs records");
  }
  const char* format = records ? "jsonl" : text ? "text" : "idx";
  if (spec.data.format.empty()) spec.data.format = format;
  if (text && spec.data.format != format) {
    return FieldError(
        origin, "data.format",
        absl::StrCat("'", spec.data.format, "' is not ", format,
                     " (the format of ", ObjectiveName(spec.objective), ")"));
  }
  if (!text && spec.data.format != "idx") {
    return FieldError(origin, "data.format",
                      absl::StrCat("'", spec.data.format,
                                   "' is not idx (the format of "
                                   "image_classification)"));
  }
  if (!text && spec.data.corpus.empty()) {
    spec.data.corpus = model::kFashionMnistDir;
  }
  if (spec.data.record_separator.find('\n') != std::string::npos) {
    return FieldError(origin, "data.record_separator", "must be a single line");
  }

  if (metric.empty()) {
    spec.evaluation.metric =
        spec.objective == Objective::kSequenceClassification
            ? Metric::kExactMatch
        : text ? Metric::kBitsPerByte
               : Metric::kAccuracy;
  } else {
    bool known = false;
    for (Metric m : {Metric::kAccuracy, Metric::kLoss, Metric::kPerplexity,
                     Metric::kBitsPerByte, Metric::kExactMatch}) {
      if (metric == MetricName(m)) {
        spec.evaluation.metric = m;
        known = true;
      }
    }
    if (!known) {
      return FieldError(origin, "evaluation.metric",
                        absl::StrCat("'", metric,
                                     "' is not accuracy, loss, perplexity, "
                                     "bits_per_byte or exact_match"));
    }
  }
  if (spec.evaluation.metric == Metric::kExactMatch && !records) {
    return FieldError(origin, "evaluation.metric",
                      "exact_match needs instruction_tuning or "
                      "sequence_classification");
  }
  if (!text && (spec.evaluation.metric == Metric::kBitsPerByte ||
                spec.evaluation.metric == Metric::kPerplexity)) {
    return FieldError(origin, "evaluation.metric",
                      "bits_per_byte and perplexity need a text objective");
  }
  if (spec.evaluation.examples < 1) {
    return FieldError(origin, "evaluation.examples", "must be >= 1");
  }
  if (!(spec.evaluation.fraction > 0 && spec.evaluation.fraction < 1)) {
    return FieldError(origin, "evaluation.fraction", "must be in (0, 1)");
  }

  if (!(spec.simulation.public_fraction >= 0 &&
        spec.simulation.public_fraction < 1) ||
      (text &&
       spec.simulation.public_fraction + spec.evaluation.fraction >= 1)) {
    return FieldError(origin, "simulation.public_fraction",
                      "must be in [0, 1) and leave the devices some data "
                      "(with evaluation.fraction, under 1)");
  }
  const std::string& by = spec.simulation.public_by;
  if (by != "record" && !(text && by == "file") &&
      !(records && by == "category")) {
    return FieldError(origin, "simulation.public_by",
                      absl::StrCat("'", by, "' is not record",
                                   records ? ", file or category"
                                   : text  ? " or file"
                                           : ""));
  }
  const std::string& part = spec.simulation.partition;
  if (part != "iid" && part != "dirichlet" && !(text && part == "by_file") &&
      !(records && part == "by_category")) {
    return FieldError(origin, "simulation.partition",
                      absl::StrCat("'", part, "' is not iid, dirichlet",
                                   records ? ", by_file or by_category"
                                   : text  ? " or by_file"
                                           : ""));
  }
  if (!(spec.simulation.alpha > 0) || !std::isfinite(spec.simulation.alpha)) {
    return FieldError(origin, "simulation.alpha", "must be > 0");
  }
  if (seed < 0) return FieldError(origin, "simulation.seed", "must be >= 0");
  spec.simulation.seed = static_cast<uint64_t>(seed);

  struct Range {
    const char* field;
    int64_t value, lo, hi;
  };
  for (const Range& x :
       {Range{"pretrain.vocab_size", p.vocab_size, 64, 65536},
        Range{"pretrain.hidden_size", p.hidden_size, 8, 8192},
        Range{"pretrain.layers", p.layers, 1, 64},
        Range{"pretrain.heads", p.heads, 1, 128},
        Range{"pretrain.kv_heads", p.kv_heads, 1, 128},
        Range{"pretrain.intermediate_size", p.intermediate_size, 1, 65536},
        Range{"pretrain.epochs", p.epochs, 1, 1000},
        Range{"pretrain.batch_size", p.batch_size, 1, 4096}}) {
    if (x.value < x.lo || x.value > x.hi) {
      return FieldError(origin, x.field,
                        absl::StrCat("must be in [", x.lo, ", ", x.hi, "]"));
    }
  }
  if (p.hidden_size % p.heads != 0 || p.heads % p.kv_heads != 0) {
    return FieldError(origin, "pretrain.heads",
                      "must divide pretrain.hidden_size and be a multiple "
                      "of pretrain.kv_heads");
  }
  if (!(p.learning_rate > 0 && p.learning_rate < 1)) {
    return FieldError(origin, "pretrain.learning_rate", "must be in (0, 1)");
  }
  return spec;
}

// Sets the field `override_text` ("a.b=VALUE") names in `object`, making
// the objects on the way where they are missing.
absl::Status ApplyOverride(const std::string& override_text,
                           nlohmann::json& object) {
  const size_t eq = override_text.find('=');
  const std::string path = override_text.substr(0, eq);
  if (eq == std::string::npos || path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--task_set: '", override_text, "' is not FIELD=VALUE"));
  }
  const std::string text = override_text.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr,
                                               /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  nlohmann::json* at = &object;  // A null on the way becomes an object.
  for (absl::string_view key : absl::StrSplit(path, '.')) {
    if (key.empty() || !(at->is_object() || at->is_null())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--task_set: '", path, "' is not a path of objects in the task"));
    }
    at = &(*at)[std::string(key)];
  }
  *at = std::move(value);
  return absl::OkStatus();
}

// The built-in task as a file would say it (tasks/fashion-mnist.json).
std::string BuiltInTaskJson() {
  return absl::StrCat(R"({
  "name": "fashion-mnist",
  "objective": "image_classification",
  "base": "runs/base",
  "data": {"format": "idx", "corpus": ")",
                      model::kFashionMnistDir, R"("},
  "evaluation": {"metric": "accuracy", "examples": 10000},
  "simulation": {"public_fraction": 0.1, "partition": "dirichlet",
                 "alpha": 0.5, "seed": 1}
})");
}
constexpr absl::string_view kBuiltInOrigin = "built-in task fashion-mnist";

}  // namespace

absl::string_view MetricName(Metric metric) {
  switch (metric) {
    case Metric::kAccuracy:
      return "accuracy";
    case Metric::kLoss:
      return "loss";
    case Metric::kPerplexity:
      return "perplexity";
    case Metric::kBitsPerByte:
      return "bits_per_byte";
    case Metric::kExactMatch:
      return "exact_match";
  }
  return "unknown";
}

absl::StatusOr<TaskSpec> ParseTaskSpec(absl::string_view json,
                                       absl::string_view origin) {
  absl::StatusOr<nlohmann::json> object = model::ParseJsonObject(json, origin);
  if (!object.ok()) return object.status();
  return SpecFromJson(*object, origin);
}

absl::StatusOr<TaskSpec> LoadTaskSpec(const std::string& path) {
  return ResolveTask(path, {});
}

TaskSpec FashionMnistTask() {
  absl::StatusOr<TaskSpec> spec =
      ParseTaskSpec(BuiltInTaskJson(), kBuiltInOrigin);
  CHECK(spec.ok()) << spec.status();  // A constant: the tests parse it.
  return *std::move(spec);
}

absl::StatusOr<TaskSpec> ResolveTask(
    const std::string& path, const std::vector<std::string>& overrides) {
  std::string origin(path.empty() ? kBuiltInOrigin : path);
  absl::StatusOr<std::string> text =
      path.empty() ? BuiltInTaskJson() : model::ReadFile(path);
  if (!text.ok()) {
    return absl::Status(
        text.status().code(),
        absl::StrCat("task file ", path, ": ", text.status().message()));
  }
  absl::StatusOr<nlohmann::json> object = model::ParseJsonObject(*text, origin);
  if (!object.ok()) return object.status();
  for (const std::string& o : overrides) {
    if (absl::Status s = ApplyOverride(o, *object); !s.ok()) return s;
  }
  if (!overrides.empty()) absl::StrAppend(&origin, " with --task_set");
  return SpecFromJson(*object, origin);
}

}  // namespace fedge::task
