#include "task/task_data.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "model/partition.h"
#include "task/text_corpus.h"

namespace fedge::task {
namespace {

absl::Status CheckCount(int count) {
  if (count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("device count ", count, ": need at least 1"));
  }
  return absl::OkStatus();
}

// At least 32 examples per device; in federations too large for that to be
// likely under skew (more than ~170 devices), a tenth of the average share.
int64_t MinShard(size_t total, int count) {
  const int64_t average = static_cast<int64_t>(total) / count;
  return std::max<int64_t>(1, std::min<int64_t>(32, average / 10));
}

// Fashion-MNIST: the built-in image task, exactly as before tasks existed.
class ImageTaskData : public TaskData {
 public:
  explicit ImageTaskData(TaskSpec spec) : TaskData(std::move(spec), nullptr) {}

  absl::StatusOr<model::Dataset> Public() override {
    absl::Status s = LoadTrain();
    if (!s.ok()) return s;
    absl::StatusOr<model::PublicSplit> split =
        model::SplitPublic(train_.size(), spec().simulation.public_fraction,
                           spec().simulation.seed);
    if (!split.ok()) return split.status();
    return Select(split->public_indices);
  }

  absl::StatusOr<model::Dataset> Eval() override {
    absl::StatusOr<model::Dataset> test =
        model::LoadFashionMnist(spec().data.corpus, model::Split::kTest);
    if (!test.ok()) return test.status();
    return model::Head(*test, spec().evaluation.examples);
  }

  absl::StatusOr<std::vector<model::Dataset>> Shards(int count) override {
    absl::StatusOr<model::Partition> parts = Partition(count);
    if (!parts.ok()) return parts.status();
    std::vector<model::Dataset> out;
    for (const std::vector<int64_t>& part : *parts) {
      absl::StatusOr<model::Dataset> shard = Select(part);
      if (!shard.ok()) return shard.status();
      out.push_back(*std::move(shard));
    }
    return out;
  }

  absl::StatusOr<model::Dataset> Shard(int index, int count) override {
    if (index < 0 || index >= count) return TaskData::Shard(index, count);
    absl::StatusOr<model::Partition> parts = Partition(count);
    if (!parts.ok()) return parts.status();
    return Select((*parts)[static_cast<size_t>(index)]);
  }

  absl::StatusOr<model::Dataset> DeviceData(const std::string& path) override {
    return model::LoadFashionMnist(path, model::Split::kTrain);
  }

 private:
  // The training set stays as stored (uint8): a device keeps its shard
  // and the coordinator the public split, each normalised once selected,
  // so neither holds the whole set as float32.
  absl::Status LoadTrain() {
    if (train_.size() > 0) return absl::OkStatus();
    absl::StatusOr<model::Dataset> train =
        model::LoadFashionMnistPixels(spec().data.corpus, model::Split::kTrain);
    if (!train.ok()) return train.status();
    train_ = *std::move(train);
    return absl::OkStatus();
  }

  absl::StatusOr<model::Dataset> Select(absl::Span<const int64_t> indices) {
    absl::StatusOr<model::Dataset> subset = model::Subset(train_, indices);
    if (!subset.ok()) return subset.status();
    return model::NormalizeFashionMnist(*std::move(subset));
  }

  absl::StatusOr<model::Partition> Partition(int count) {
    if (absl::Status s = CheckCount(count); !s.ok()) return s;
    if (absl::Status s = LoadTrain(); !s.ok()) return s;
    const SimulationSpec& sim = spec().simulation;
    absl::StatusOr<model::PublicSplit> split =
        model::SplitPublic(train_.size(), sim.public_fraction, sim.seed);
    if (!split.ok()) return split.status();
    if (sim.partition == "iid") {
      return model::PartitionIid(split->private_indices, count, sim.seed);
    }
    return model::PartitionDirichlet(
        split->private_indices, model::Labels(train_), 10, count, sim.alpha,
        sim.seed, MinShard(split->private_indices.size(), count));
  }

  model::Dataset train_;
};

// Text: causal language modelling on plain text (records packed into
// windows), and instruction tuning on JSONL records (one window each, the
// prompt masked). The two differ only in how records become windows.
class TextTaskData : public TaskData {
 public:
  TextTaskData(TaskSpec spec, std::unique_ptr<Tokenizer> tokenizer)
      : TaskData(std::move(spec), std::move(tokenizer)) {}

  absl::StatusOr<model::Dataset> Public() override {
    if (absl::Status s = Split(); !s.ok()) return s;
    return Pack(public_, "the public split");
  }

  absl::StatusOr<model::Dataset> Eval() override {
    if (absl::Status s = Split(); !s.ok()) return s;
    absl::StatusOr<model::Dataset> eval = Pack(eval_, "the held-out split");
    if (!eval.ok()) return eval.status();
    return model::Head(*eval, spec().evaluation.examples);
  }

  absl::StatusOr<std::vector<model::Dataset>> Shards(int count) override {
    if (absl::Status s = CheckCount(count); !s.ok()) return s;
    if (absl::Status s = Split(); !s.ok()) return s;
    absl::StatusOr<model::Partition> parts = Partition(count);
    if (!parts.ok()) return parts.status();
    std::vector<model::Dataset> out;
    for (size_t i = 0; i < parts->size(); ++i) {
      std::sort((*parts)[i].begin(), (*parts)[i].end());
      absl::StatusOr<model::Dataset> shard =
          Pack((*parts)[i], absl::StrCat("device ", i, "'s shard"));
      if (!shard.ok()) return shard.status();
      out.push_back(*std::move(shard));
    }
    return out;
  }

  absl::StatusOr<model::Dataset> DeviceData(const std::string& path) override {
    absl::StatusOr<TextCorpus> corpus = Read(path);
    if (!corpus.ok()) return corpus.status();
    std::vector<int64_t> all(corpus->records.size());
    std::iota(all.begin(), all.end(), 0);
    return Windows(*corpus, all, absl::StrCat("data ", path));
  }

  absl::StatusOr<std::string> PublicText() {
    if (absl::Status s = Split(); !s.ok()) return s;
    std::string text;
    for (int64_t i : public_) {
      const TextRecord& r = corpus_->records[static_cast<size_t>(i)];
      absl::StrAppend(&text, r.prompt, r.text, "\n");
    }
    return text;
  }

 private:
  // Reads the corpus once and splits its records into held-out, public and
  // private, each sorted (records keep their corpus order).
  absl::Status Split() {
    if (corpus_.has_value()) return absl::OkStatus();
    if (spec().data.corpus.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          spec().origin,
          ": field \"data.corpus\" is empty; the coordinator "
          "evaluates on held-out text from it (and simulations split it)"));
    }
    absl::StatusOr<TextCorpus> corpus = Read(spec().data.corpus);
    if (!corpus.ok()) return corpus.status();
    const SimulationSpec& sim = spec().simulation;
    if (sim.public_by != "record") {
      if (absl::Status s = SplitByGroup(*corpus); !s.ok()) return s;
    } else {
      const int64_t n = static_cast<int64_t>(corpus->records.size());
      absl::StatusOr<model::PublicSplit> held =
          model::SplitPublic(n, spec().evaluation.fraction, sim.seed);
      if (!held.ok()) return held.status();
      // The public fraction is of the whole corpus.
      const double rest = 1 - spec().evaluation.fraction;
      absl::StatusOr<model::PublicSplit> pub =
          model::SplitPublic(static_cast<int64_t>(held->private_indices.size()),
                             sim.public_fraction / rest, sim.seed + 1);
      if (!pub.ok()) return pub.status();
      eval_ = held->public_indices;
      for (int64_t i : pub->public_indices) {
        public_.push_back(held->private_indices[static_cast<size_t>(i)]);
      }
      for (int64_t i : pub->private_indices) {
        private_.push_back(held->private_indices[static_cast<size_t>(i)]);
      }
    }
    corpus_ = *std::move(corpus);
    return absl::OkStatus();
  }

  // The group of `r` a split by `how` ("file" or "category") keeps whole;
  // InvalidArgument for a record without a category.
  absl::StatusOr<size_t> Group(const TextCorpus& corpus, const TextRecord& r,
                               absl::string_view how) const {
    if (how != "category") return static_cast<size_t>(r.file);
    if (r.category < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          corpus.files[static_cast<size_t>(r.file)], ":", r.line,
          ": a split by category needs a \"category\" on every record"));
    }
    return static_cast<size_t>(r.category);
  }

  // Whole files (public_by file) or categories (public_by category), in an
  // order shuffled by the seed, go public until they hold public_fraction
  // of the corpus's bytes; evaluation.fraction of the other groups' records
  // is held out, the rest is the devices'.
  absl::Status SplitByGroup(const TextCorpus& corpus) {
    const SimulationSpec& sim = spec().simulation;
    const size_t groups = sim.public_by == "category" ? corpus.categories.size()
                                                      : corpus.files.size();
    std::vector<int64_t> bytes(groups, 0);
    std::vector<size_t> group;
    int64_t total = 0;
    for (const TextRecord& r : corpus.records) {
      absl::StatusOr<size_t> g = Group(corpus, r, sim.public_by);
      if (!g.ok()) return g.status();
      group.push_back(*g);
      const auto size = static_cast<int64_t>(r.prompt.size() + r.text.size());
      bytes[*g] += size;
      total += size;
    }
    std::vector<size_t> order(groups);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(sim.seed);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<bool> is_public(groups, false);
    int64_t taken = 0;
    for (size_t f : order) {
      if (taken >= sim.public_fraction * static_cast<double>(total)) break;
      is_public[f] = true;
      taken += bytes[f];
    }
    std::vector<int64_t> domain;
    for (size_t i = 0; i < corpus.records.size(); ++i) {
      if (is_public[group[i]]) {
        public_.push_back(static_cast<int64_t>(i));
      } else {
        domain.push_back(static_cast<int64_t>(i));
      }
    }
    if (domain.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec().origin, ": simulation.public_fraction ",
                       sim.public_fraction, " leaves no ", sim.public_by,
                       " of ", spec().data.corpus, " to the devices"));
    }
    absl::StatusOr<model::PublicSplit> held =
        model::SplitPublic(static_cast<int64_t>(domain.size()),
                           spec().evaluation.fraction, sim.seed);
    if (!held.ok()) return held.status();
    for (int64_t i : held->public_indices) {
      eval_.push_back(domain[static_cast<size_t>(i)]);
    }
    for (int64_t i : held->private_indices) {
      private_.push_back(domain[static_cast<size_t>(i)]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<TextCorpus> Read(const std::string& path) const {
    return ReadTextCorpus(path, spec().data,
                          spec().objective == Objective::kSequenceClassification
                              ? JsonlKind::kClassification
                              : JsonlKind::kInstruction);
  }

  absl::StatusOr<model::Dataset> Pack(const std::vector<int64_t>& records,
                                      absl::string_view what) {
    return Windows(*corpus_, records,
                   absl::StrCat(what, " of ", spec().data.corpus));
  }

  absl::StatusOr<model::Dataset> Windows(const TextCorpus& corpus,
                                         const std::vector<int64_t>& records,
                                         absl::string_view what) const {
    return IsRecordTask(spec().objective)
               ? PadRecords(corpus, records, *tokenizer(),
                            spec().sequence.length, what)
               : PackRecords(corpus, records, *tokenizer(),
                             spec().sequence.length, what);
  }

  absl::StatusOr<model::Partition> Partition(int count) {
    const SimulationSpec& sim = spec().simulation;
    if (sim.partition == "iid") {
      return model::PartitionIid(private_, count, sim.seed);
    }
    const int files = static_cast<int>(corpus_->files.size());
    if (sim.partition == "dirichlet") {
      std::vector<int64_t> labels;
      // Skew over categories (labels) when every record has one, else over
      // source files.
      const bool by_category =
          std::all_of(corpus_->records.begin(), corpus_->records.end(),
                      [](const TextRecord& r) { return r.category >= 0; });
      for (const TextRecord& r : corpus_->records) {
        labels.push_back(by_category ? r.category : r.file);
      }
      const int classes =
          by_category ? static_cast<int>(corpus_->categories.size()) : files;
      return model::PartitionDirichlet(private_, labels, classes, count,
                                       sim.alpha, sim.seed,
                                       MinShard(private_.size(), count));
    }
    // by_file / by_category: whole groups, the largest first, each to the
    // device holding the fewest bytes so far (deterministic; sizes stay
    // close). Ties go by a seeded permutation of the devices, not by their
    // index: the first groups are the largest, and device 0 taking the
    // largest would tie shard size to whatever the device list orders
    // (fedge-sim lists its speed tiers slowest first).
    const bool by_category = sim.partition == "by_category";
    const int groups =
        by_category ? static_cast<int>(corpus_->categories.size()) : files;
    std::vector<int64_t> bytes(static_cast<size_t>(groups), 0);
    std::vector<std::vector<int64_t>> by_group(static_cast<size_t>(groups));
    for (int64_t i : private_) {
      const TextRecord& r = corpus_->records[static_cast<size_t>(i)];
      absl::StatusOr<size_t> group =
          Group(*corpus_, r, by_category ? "category" : "file");
      if (!group.ok()) return group.status();
      bytes[*group] += static_cast<int64_t>(r.prompt.size() + r.text.size());
      by_group[*group].push_back(i);
    }
    const int64_t with_data =
        std::count_if(by_group.begin(), by_group.end(),
                      [](const std::vector<int64_t>& r) { return !r.empty(); });
    if (with_data < count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "simulation.partition ", sim.partition, ": ", with_data,
          by_category ? " categories" : " files", " of ", spec().data.corpus,
          " hold the devices' data; they cannot serve ", count, " devices"));
    }
    std::vector<int> order(static_cast<size_t>(groups));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return bytes[static_cast<size_t>(a)] > bytes[static_cast<size_t>(b)];
    });
    model::Partition parts(static_cast<size_t>(count));
    std::vector<int64_t> load(static_cast<size_t>(count), 0);
    const std::vector<int64_t> devices = model::Permutation(count, sim.seed);
    for (int f : order) {
      const size_t device = static_cast<size_t>(*std::min_element(
          devices.begin(), devices.end(), [&](int64_t a, int64_t b) {
            return load[static_cast<size_t>(a)] < load[static_cast<size_t>(b)];
          }));
      load[device] += bytes[static_cast<size_t>(f)];
      const std::vector<int64_t>& records = by_group[static_cast<size_t>(f)];
      parts[device].insert(parts[device].end(), records.begin(), records.end());
    }
    return parts;
  }

  std::optional<TextCorpus> corpus_;
  std::vector<int64_t> eval_, public_, private_;
};

}  // namespace

absl::Status CheckIdentity(const TaskIdentity& coordinator,
                           const TaskIdentity& device) {
  std::vector<std::string> differ;
  const auto check = [&](absl::string_view field, const std::string& a,
                         const std::string& b) {
    if (a != b) {
      differ.push_back(
          absl::StrCat(field, " '", b, "' (coordinator: '", a, "')"));
    }
  };
  check("name", coordinator.name, device.name);
  check("objective", coordinator.objective, device.objective);
  check("tokenizer digest", coordinator.tokenizer_digest,
        device.tokenizer_digest);
  check("sequence length", absl::StrCat(coordinator.sequence_length),
        absl::StrCat(device.sequence_length));
  if (differ.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("this device's task does not match the coordinator's: ",
                   absl::StrJoin(differ, "; ")));
}

absl::StatusOr<std::unique_ptr<TaskData>> TaskData::Create(TaskSpec spec) {
  switch (spec.objective) {
    case Objective::kImageClassification:
      return std::unique_ptr<TaskData>(new ImageTaskData(std::move(spec)));
    case Objective::kCausalLm:
    case Objective::kInstructionTuning:
    case Objective::kSequenceClassification: {
      absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
          LoadTokenizer(spec.tokenizer);
      if (!tokenizer.ok()) return tokenizer.status();
      return std::unique_ptr<TaskData>(
          new TextTaskData(std::move(spec), *std::move(tokenizer)));
    }
  }
  return absl::InvalidArgumentError("unknown objective");
}

absl::Status CheckModelFitsTask(const TaskData& data,
                                const model::ModelImpl& model) {
  const bool text = IsText(data.spec().objective);
  if (text != (model.task() == model::Task::kLanguageModel)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the task's objective is ",
                     ObjectiveName(data.spec().objective), " but the model is ",
                     text ? "an image classifier" : "a language model"));
  }
  if (!text) return absl::OkStatus();
  if (data.tokenizer()->vocab_size() > model.num_outputs()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer (", data.spec().tokenizer.model_path, ") has ",
        data.tokenizer()->vocab_size(), " ids but the model's embedding only ",
        model.num_outputs()));
  }
  if (data.spec().sequence.length > model.max_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence.length ", data.spec().sequence.length,
        " exceeds the model's context of ", model.max_tokens(), " tokens"));
  }
  return absl::OkStatus();
}

double MetricValue(Metric metric, const model::EvalResult& result) {
  switch (metric) {
    case Metric::kAccuracy:
      return result.accuracy;
    case Metric::kLoss:
      return result.loss;
    case Metric::kPerplexity:
      return result.perplexity;
    case Metric::kBitsPerByte:
      return result.bits_per_byte;
    case Metric::kExactMatch:
      return result.exact_match;
  }
  return result.accuracy;
}

absl::StatusOr<std::string> PublicText(const TaskSpec& spec) {
  if (!IsText(spec.objective)) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.origin, ": not a text task"));
  }
  TextTaskData data(spec, nullptr);
  return data.PublicText();
}

TaskIdentity IdentityOf(const TaskSpec& spec, const Tokenizer* tokenizer) {
  TaskIdentity id;
  id.name = spec.name;
  id.objective = std::string(ObjectiveName(spec.objective));
  if (tokenizer != nullptr) {
    id.tokenizer_digest = tokenizer->digest();
    id.sequence_length = spec.sequence.length;
  }
  return id;
}

TaskIdentity TaskData::Identity() const {
  return IdentityOf(spec_, tokenizer_.get());
}

absl::StatusOr<model::Dataset> TaskData::Shard(int index, int count) {
  if (count < 1 || index < 0 || index >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", index, "/", count, ": need 0 <= I < N"));
  }
  absl::StatusOr<std::vector<model::Dataset>> shards = Shards(count);
  if (!shards.ok()) return shards.status();
  return std::move((*shards)[static_cast<size_t>(index)]);
}

}  // namespace fedge::task
