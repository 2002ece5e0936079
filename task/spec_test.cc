#include "task/spec.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::task {
namespace {

using ::testing::HasSubstr;

constexpr char kText[] = R"({
  "name": "fortunes-lm",
  "objective": "causal_lm",
  "base": "runs/text-base",
  "tokenizer": {"type": "sentencepiece"},
  "sequence": {"length": 64},
  "data": {"corpus": "/usr/share/games/fortunes", "skip": ["*.dat"],
           "record_separator": "%"},
  "evaluation": {"examples": 32, "fraction": 0.1},
  "simulation": {"public_fraction": 0.2, "partition": "by_file", "seed": 3}
})";

TEST(TaskSpecTest, ParsesATextTaskAndFillsDefaults) {
  absl::StatusOr<TaskSpec> spec = ParseTaskSpec(kText, "t.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "fortunes-lm");
  EXPECT_EQ(spec->objective, Objective::kCausalLm);
  EXPECT_EQ(spec->tokenizer.model_path, "runs/text-base/tokenizer.model");
  EXPECT_EQ(spec->sequence.length, 64);
  EXPECT_EQ(spec->data.format, "text");
  EXPECT_EQ(spec->data.skip, std::vector<std::string>{"*.dat"});
  EXPECT_EQ(spec->evaluation.metric, Metric::kBitsPerByte);
  EXPECT_EQ(spec->simulation.partition, "by_file");
  EXPECT_EQ(spec->simulation.seed, 3u);
}

TEST(TaskSpecTest, InstructionTuningDefaultsToJsonlWithoutPacking) {
  absl::StatusOr<TaskSpec> spec = ParseTaskSpec(
      R"({"name": "d", "objective": "instruction_tuning", "base": "b",
          "evaluation": {"metric": "exact_match"},
          "simulation": {"public_by": "category", "partition": "by_category"}})",
      "i.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->objective, Objective::kInstructionTuning);
  EXPECT_EQ(spec->data.format, "jsonl");
  EXPECT_FALSE(spec->sequence.packing);
  EXPECT_EQ(spec->evaluation.metric, Metric::kExactMatch);
  EXPECT_TRUE(IsText(spec->objective));
}

TEST(TaskSpecTest, SequenceClassificationDefaultsToExactMatch) {
  absl::StatusOr<TaskSpec> spec = ParseTaskSpec(
      R"({"name": "c", "objective": "sequence_classification", "base": "b"})",
      "c.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->data.format, "jsonl");
  EXPECT_FALSE(spec->sequence.packing);
  EXPECT_EQ(spec->evaluation.metric, Metric::kExactMatch);
  EXPECT_TRUE(IsRecordTask(spec->objective));
  EXPECT_FALSE(IsRecordTask(Objective::kCausalLm));
}

TEST(TaskSpecTest, ImageTaskDefaultsToFashionMnistAndAccuracy) {
  absl::StatusOr<TaskSpec> spec = ParseTaskSpec(
      R"({"name": "fm", "objective": "image_classification",
          "base": "runs/base"})",
      "i.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->data.format, "idx");
  EXPECT_EQ(spec->evaluation.metric, Metric::kAccuracy);
  EXPECT_FALSE(spec->data.corpus.empty());
}

// Each bad file is refused with a message naming the file and the field.
TEST(TaskSpecTest, ErrorsNameTheField) {
  const struct {
    std::string json;
    std::string field;
  } cases[] = {
      {R"({"objective": "causal_lm", "base": "b"})", "\"name\" is missing"},
      {R"({"name": "a b", "objective": "causal_lm", "base": "b"})", "\"name\""},
      {R"({"name": "a", "objective": "vqa", "base": "b"})", "\"objective\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "sequence": {"length": 1}})",
       "\"sequence.length\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "sequence": {"lenght": 64}})",
       "\"lenght\" is not supported"},
      {R"({"name": "a", "objective": "causal_lm", "base": "b", "extra": 1})",
       "\"extra\" is not supported"},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "tokenizer": {"type": "tokenizer.json"}})",
       "byte-level BPE"},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "evaluation": {"metric": "f1"}})",
       "\"evaluation.metric\""},
      {R"({"name": "a", "objective": "image_classification", "base": "b",
           "evaluation": {"metric": "bits_per_byte"}})",
       "need a text objective"},
      {R"({"name": "a", "objective": "image_classification", "base": "b",
           "simulation": {"partition": "by_file"}})",
       "\"simulation.partition\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "simulation": {"public_fraction": 0.95}})",
       "\"simulation.public_fraction\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "sequence": {"length": "64"}})",
       "must be an integer"},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "pretrain": {"heads": 5}})",
       "\"pretrain.heads\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "evaluation": {"metric": "exact_match"}})",
       "exact_match needs instruction_tuning or sequence_classification"},
      {R"({"name": "a", "objective": "instruction_tuning", "base": "b",
           "sequence": {"packing": true}})",
       "\"sequence.packing\" must be false"},
      {R"({"name": "a", "objective": "instruction_tuning", "base": "b",
           "data": {"format": "text"}})",
       "is not jsonl"},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "simulation": {"partition": "by_category"}})",
       "\"simulation.partition\""},
      {R"({"name": "a", "objective": "causal_lm", "base": "b",
           "simulation": {"public_by": "category"}})",
       "\"simulation.public_by\""},
      {R"([1, 2])", "expected a JSON object"},
      {R"({"name": )", "invalid JSON"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<TaskSpec> spec = ParseTaskSpec(c.json, "bad.json");
    ASSERT_FALSE(spec.ok()) << c.json;
    EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
    EXPECT_THAT(spec.status().message(), HasSubstr("bad.json")) << c.json;
    EXPECT_THAT(spec.status().message(), HasSubstr(c.field)) << c.json;
  }
}

TEST(TaskSpecTest, WithoutAFileTheBuiltInTaskRuns) {
  absl::StatusOr<TaskSpec> spec = ResolveTask("", {});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "fashion-mnist");
  EXPECT_EQ(spec->objective, Objective::kImageClassification);
  EXPECT_EQ(spec->base_dir, "runs/base");
  EXPECT_EQ(spec->simulation.partition, "dirichlet");
  EXPECT_DOUBLE_EQ(spec->simulation.alpha, 0.5);
  EXPECT_DOUBLE_EQ(spec->simulation.public_fraction, 0.1);
  EXPECT_EQ(spec->evaluation.examples, 10000);
  EXPECT_EQ(FashionMnistTask().origin, spec->origin);
}

TEST(TaskSpecTest, ShippedTasksParseAndTheBuiltInIsItsFile) {
  // ctest sets FEDGE_TEST_SRCDIR for every test (CMakeLists.txt).
  const char* src = std::getenv("FEDGE_TEST_SRCDIR");
  ASSERT_NE(src, nullptr) << "run through ctest, or set FEDGE_TEST_SRCDIR";
  const std::string tasks_dir = absl::StrCat(src, "/tasks");
  for (const char* name :
       {"fashion-mnist", "fortunes", "wordnet", "wordnet-pos"}) {
    absl::StatusOr<TaskSpec> spec =
        LoadTaskSpec(absl::StrCat(tasks_dir, "/", name, ".json"));
    EXPECT_TRUE(spec.ok()) << spec.status();
  }
  absl::StatusOr<TaskSpec> file =
      LoadTaskSpec(absl::StrCat(tasks_dir, "/fashion-mnist.json"));
  ASSERT_TRUE(file.ok());
  const TaskSpec built_in = FashionMnistTask();
  EXPECT_EQ(file->base_dir, built_in.base_dir);
  EXPECT_EQ(file->data.corpus, built_in.data.corpus);
  EXPECT_EQ(file->evaluation.metric, built_in.evaluation.metric);
  EXPECT_EQ(file->evaluation.examples, built_in.evaluation.examples);
  EXPECT_EQ(file->simulation.partition, built_in.simulation.partition);
  EXPECT_DOUBLE_EQ(file->simulation.alpha, built_in.simulation.alpha);
  EXPECT_DOUBLE_EQ(file->simulation.public_fraction,
                   built_in.simulation.public_fraction);
  EXPECT_EQ(file->simulation.seed, built_in.simulation.seed);
}

TEST(TaskSpecTest, OverridesSetFieldsAndAreCheckedAsTheFileIs) {
  absl::StatusOr<TaskSpec> spec = ResolveTask(
      "", {"base=other/base", "simulation.partition=iid", "simulation.alpha=2",
           "simulation.seed=7", "sequence.packing=false", "name=\"x\""});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "x");
  EXPECT_EQ(spec->base_dir, "other/base");
  EXPECT_EQ(spec->simulation.partition, "iid");
  EXPECT_DOUBLE_EQ(spec->simulation.alpha, 2);
  EXPECT_EQ(spec->simulation.seed, 7u);
  EXPECT_FALSE(spec->sequence.packing);  // An object the file lacked.
  EXPECT_THAT(spec->origin, HasSubstr("--task_set"));

  const struct {
    std::string override_text, says;
  } bad[] = {
      {"simulation.alpha", "not FIELD=VALUE"},
      {"=3", "not FIELD=VALUE"},
      {"simulation.apha=3", "apha"},
      {"simulation.alpha=\"high\"", "\"alpha\" must be a number"},
      {"simulation.partition=zipf", "zipf"},
      {"name.first=a", "name.first"},
      {"simulation..alpha=1", "simulation..alpha"},
  };
  for (const auto& b : bad) {
    absl::StatusOr<TaskSpec> s = ResolveTask("", {b.override_text});
    ASSERT_FALSE(s.ok()) << b.override_text;
    EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
    EXPECT_THAT(s.status().message(), HasSubstr(b.says)) << b.override_text;
  }
}

TEST(TaskSpecTest, MissingFileIsNotFoundNamingIt) {
  absl::StatusOr<TaskSpec> spec = LoadTaskSpec("/nonexistent/task.json");
  EXPECT_TRUE(absl::IsNotFound(spec.status())) << spec.status();
  EXPECT_THAT(spec.status().message(), HasSubstr("/nonexistent/task.json"));
}

}  // namespace
}  // namespace fedge::task
