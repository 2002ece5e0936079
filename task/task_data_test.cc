#include "task/task_data.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/file_io.h"
#include "task/text_corpus.h"

namespace fedge::task {
namespace {

using ::testing::HasSubstr;

// A corpus of six "topic" files whose records differ by topic, and a task
// over it with a SentencePiece tokenizer trained on the public split.
class TextTaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/task_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_ + "/corpus");
    const char* topics[] = {"apples", "boats", "cats",
                            "dunes",  "eels",  "frost"};
    for (int f = 0; f < 6; ++f) {
      std::ofstream out(absl::StrCat(dir_, "/corpus/", topics[f], ".txt"));
      for (int r = 0; r < 40; ++r) {
        out << "The " << topics[f] << " number " << r
            << " said: " << topics[(f + r) % 6] << " and more " << topics[f]
            << ".\nA second line, " << r * 7 << ".\n%\n";
      }
    }
    std::ofstream(dir_ + "/corpus/skip.bin") << std::string("\0\0", 2);
    spec_.name = "toy";
    spec_.objective = Objective::kCausalLm;
    spec_.base_dir = dir_ + "/base";
    spec_.tokenizer.type = "sentencepiece";
    spec_.tokenizer.model_path = dir_ + "/base/tokenizer.model";
    spec_.sequence.length = 16;
    spec_.data.format = "text";
    spec_.data.corpus = dir_ + "/corpus";
    spec_.data.skip = {"*.bin"};
    spec_.data.record_separator = "%";
    spec_.evaluation.metric = Metric::kBitsPerByte;
    spec_.evaluation.examples = 1000;
    spec_.evaluation.fraction = 0.1;
    spec_.simulation.public_fraction = 0.2;
    spec_.simulation.partition = "by_file";
    std::filesystem::create_directories(spec_.base_dir);
    absl::StatusOr<std::string> text = PublicText(spec_);
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_TRUE(model::WriteFileAtomically(dir_ + "/public.txt", *text).ok());
    ASSERT_TRUE(TrainSentencePiece(dir_ + "/public.txt", 320,
                                   spec_.tokenizer.model_path, 1)
                    .ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  TaskSpec spec_;
};

TEST_F(TextTaskTest, SentencePieceRoundTripsTextAndCountsItsBytes) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadTokenizer(spec_.tokenizer);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_LE((*tok)->vocab_size(), 320);
  EXPECT_EQ((*tok)->eos_id(), 2);
  EXPECT_EQ((*tok)->digest().size(), 64u);
  // Newlines, tabs, unseen characters (byte fallback) all survive.
  const std::string text = "The cats said:\n\tboats  and \xc3\xa9t\xc3\xa9 #42";
  absl::StatusOr<std::vector<int64_t>> ids = (*tok)->Encode(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*tok)->Decode(*ids), text);
  int64_t bytes = 0;
  for (int64_t id : *ids) bytes += (*tok)->ByteLength(id);
  EXPECT_EQ(bytes, static_cast<int64_t>(text.size()));
}

TEST_F(TextTaskTest, SplitsAreDisjointAndByFileGivesWholeFiles) {
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec_);
  ASSERT_TRUE(data.ok()) << data.status();
  absl::StatusOr<model::Dataset> pub = (*data)->Public();
  absl::StatusOr<model::Dataset> eval = (*data)->Eval();
  absl::StatusOr<std::vector<model::Dataset>> shards = (*data)->Shards(3);
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_TRUE(shards.ok()) << shards.status();
  ASSERT_EQ(shards->size(), 3u);
  // Every window's bytes, in every part, add up to about the corpus (minus
  // the partial windows dropped at each part's end).
  int64_t bytes = pub->target_bytes.sum().item<int64_t>() +
                  eval->target_bytes.sum().item<int64_t>();
  for (const model::Dataset& s : *shards) {
    EXPECT_GT(s.size(), 0);
    bytes += s.target_bytes.sum().item<int64_t>();
  }
  int64_t corpus_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(spec_.data.corpus)) {
    if (e.path().extension() == ".txt") corpus_bytes += e.file_size();
  }
  // Separator lines ("%\n", 2 bytes per record) are not text.
  EXPECT_LE(bytes, corpus_bytes);
  EXPECT_GT(bytes, corpus_bytes * 8 / 10);
  // by_file: 6 files over 3 devices of about equal size: two files each.
  for (const model::Dataset& s : *shards) {
    EXPECT_NEAR(s.size(), (*shards)[0].size(), (*shards)[0].size() / 3 + 2);
  }
  absl::StatusOr<std::vector<model::Dataset>> too_many = (*data)->Shards(7);
  EXPECT_THAT(too_many.status().message(), HasSubstr("cannot serve 7"));
  // Dirichlet over files and IID work too.
  TaskSpec iid = spec_;
  iid.simulation.partition = "iid";
  absl::StatusOr<std::unique_ptr<TaskData>> iid_data = TaskData::Create(iid);
  ASSERT_TRUE(iid_data.ok());
  EXPECT_TRUE((*iid_data)->Shards(7).ok());
}

// The largest file does not always land on device 0: ties among empty
// devices go by a seeded permutation, so shard size is not tied to the
// device list's order (fedge-sim's tiers).
TEST_F(TextTaskTest, ByFileDoesNotGiveTheLargestShardToDeviceZero) {
  std::set<size_t> largest;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    TaskSpec spec = spec_;
    spec.simulation.seed = seed;
    absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec);
    ASSERT_TRUE(data.ok()) << data.status();
    absl::StatusOr<std::vector<model::Dataset>> shards = (*data)->Shards(6);
    ASSERT_TRUE(shards.ok()) << shards.status();
    std::vector<int64_t> bytes;
    for (const model::Dataset& s : *shards) {
      bytes.push_back(s.target_bytes.sum().item<int64_t>());
    }
    largest.insert(static_cast<size_t>(
        std::max_element(bytes.begin(), bytes.end()) - bytes.begin()));
  }
  EXPECT_GT(largest.size(), 1u);
}

// public_by file: the base's files and the devices' files are disjoint, and
// the held-out records come from the devices' files.
TEST_F(TextTaskTest, PublicByFileKeepsTheDevicesDomainApart) {
  TaskSpec spec = spec_;
  spec.simulation.public_by = "file";
  spec.simulation.public_fraction = 0.3;
  spec.tokenizer.type = "byte";
  spec.tokenizer.model_path.clear();
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec);
  ASSERT_TRUE(data.ok());
  // Decode each part back to text and see which topics it names first.
  const auto topics = [&](const model::Dataset& d) {
    std::set<std::string> seen;
    const std::string text = (*data)->tokenizer()->Decode(
        std::vector<int64_t>(d.inputs.data_ptr<int64_t>(),
                             d.inputs.data_ptr<int64_t>() + d.inputs.numel()));
    for (const char* t :
         {"apples", "boats", "cats", "dunes", "eels", "frost"}) {
      if (text.find(std::string("The ") + t) != std::string::npos)
        seen.insert(t);
    }
    return seen;
  };
  absl::StatusOr<model::Dataset> pub = (*data)->Public();
  absl::StatusOr<model::Dataset> eval = (*data)->Eval();
  absl::StatusOr<std::vector<model::Dataset>> shards = (*data)->Shards(2);
  ASSERT_TRUE(pub.ok() && eval.ok() && shards.ok());
  const std::set<std::string> base_topics = topics(*pub);
  std::set<std::string> device_topics = topics((*shards)[0]);
  for (const std::string& t : topics((*shards)[1])) device_topics.insert(t);
  EXPECT_EQ(base_topics.size(), 2u);  // 30% of six equal files: two.
  EXPECT_EQ(device_topics.size(), 4u);
  for (const std::string& t : base_topics) {
    EXPECT_EQ(device_topics.count(t), 0u) << t;
  }
  for (const std::string& t : topics(*eval)) {
    EXPECT_EQ(base_topics.count(t), 0u) << t;
  }
}

TEST_F(TextTaskTest, DeviceDataReadsAFileAndNamesBadLines) {
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec_);
  ASSERT_TRUE(data.ok());
  absl::StatusOr<model::Dataset> own =
      (*data)->DeviceData(dir_ + "/corpus/cats.txt");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->inputs.size(1), 16);
  std::ofstream(dir_ + "/bad.txt") << "fine\n%\nbroken \xfe\n";
  absl::StatusOr<model::Dataset> bad = (*data)->DeviceData(dir_ + "/bad.txt");
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.txt:3: not valid UTF-8"));
}

TEST_F(TextTaskTest, IdentityMismatchIsRefusedNamingEachField) {
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec_);
  ASSERT_TRUE(data.ok());
  const TaskIdentity coordinator = (*data)->Identity();
  EXPECT_TRUE(CheckIdentity(coordinator, coordinator).ok());
  TaskSpec other = spec_;
  other.tokenizer.type = "byte";
  other.sequence.length = 32;
  absl::StatusOr<std::unique_ptr<TaskData>> device = TaskData::Create(other);
  ASSERT_TRUE(device.ok());
  const absl::Status s = CheckIdentity(coordinator, (*device)->Identity());
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(s.message(), HasSubstr("tokenizer digest 'byte'"));
  EXPECT_THAT(s.message(), HasSubstr("sequence length '32'"));
}

// The built-in image task: the coordinator's public split and the devices'
// shards partition the training images; the held-out images are the test
// split's first evaluation.examples.
TEST(TaskDataTest, FashionMnistPublicAndShardsShareNoImage) {
  TaskSpec spec = FashionMnistTask();
  spec.evaluation.examples = 500;
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ((*data)->tokenizer(), nullptr);
  absl::StatusOr<model::Dataset> pub = (*data)->Public();
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->size(), 6000);
  absl::StatusOr<std::vector<model::Dataset>> shards = (*data)->Shards(5);
  ASSERT_TRUE(shards.ok()) << shards.status();
  int64_t devices = 0;
  for (const model::Dataset& s : *shards) devices += s.size();
  EXPECT_EQ(devices, 54000);
  absl::StatusOr<model::Dataset> one = (*data)->Shard(3, 5);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(torch::equal(one->targets, (*shards)[3].targets));
  EXPECT_EQ((*data)->Eval()->size(), 500);
  EXPECT_TRUE(absl::IsInvalidArgument((*data)->Shard(5, 5).status()));
}

// Instruction records in six categories, byte tokenizer: whole categories
// go public or to one device, every window holds one record with its prompt
// masked, and a device's own JSONL file is read the same way.
TEST(TaskDataTest, InstructionTaskSplitsByCategoryAndMasksPrompts) {
  const std::string dir =
      ::testing::TempDir() + "/instruct_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir + "/data.jsonl");
    for (int r = 0; r < 240; ++r) {
      out << R"({"instruction": "Name it.", "context": "item )" << r
          << R"(", "response": "thing )" << r % 13 << R"(", "category": "c)"
          << r % 6 << "\"}\n";
    }
  }
  TaskSpec spec;
  spec.name = "toy-instruct";
  spec.objective = Objective::kInstructionTuning;
  spec.tokenizer.type = "byte";
  spec.sequence.length = 96;
  spec.sequence.packing = false;
  spec.data.format = "jsonl";
  spec.data.corpus = dir + "/data.jsonl";
  spec.evaluation.fraction = 0.1;
  spec.simulation.public_fraction = 0.2;
  spec.simulation.public_by = "category";
  spec.simulation.partition = "by_category";
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec);
  ASSERT_TRUE(data.ok()) << data.status();
  absl::StatusOr<model::Dataset> pub = (*data)->Public();
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->size() % 40, 0);  // Whole categories of 40 records.
  absl::StatusOr<std::vector<model::Dataset>> shards = (*data)->Shards(4);
  ASSERT_TRUE(shards.ok()) << shards.status();
  int64_t total = pub->size() + (*data)->Eval()->size();
  for (const model::Dataset& shard : *shards) {
    EXPECT_GT(shard.size(), 0);
    total += shard.size();
    // Every window scores its response only: the first target is masked.
    EXPECT_TRUE(
        shard.targets.select(1, 0).eq(model::kIgnoreTarget).all().item<bool>());
  }
  EXPECT_EQ(total, 240);
  EXPECT_THAT((*data)->Shards(6).status().message(), HasSubstr("categories"));
  absl::StatusOr<model::Dataset> own = (*data)->DeviceData(dir + "/data.jsonl");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->size(), 240);
  std::ofstream(dir + "/bad.jsonl") << "{\"instruction\": \"x\"}\n";
  EXPECT_THAT((*data)->DeviceData(dir + "/bad.jsonl").status().message(),
              HasSubstr("bad.jsonl:1"));
  std::filesystem::remove_all(dir);
}

TEST(TaskDataTest, MissingTokenizerIsNotFoundNamingTheFile) {
  TaskSpec spec;
  spec.name = "x";
  spec.objective = Objective::kCausalLm;
  spec.tokenizer.type = "sentencepiece";
  spec.tokenizer.model_path = "/nonexistent/tokenizer.model";
  absl::StatusOr<std::unique_ptr<TaskData>> data = TaskData::Create(spec);
  EXPECT_TRUE(absl::IsNotFound(data.status())) << data.status();
  EXPECT_THAT(data.status().message(), HasSubstr("/nonexistent/tokenizer"));
}

TEST(TaskDataTest, AGarbageTokenizerFileIsInvalidArgument) {
  const std::string path = ::testing::TempDir() + "/garbage.model";
  std::ofstream(path) << "not a model";
  TokenizerSpec spec;
  spec.type = "sentencepiece";
  spec.model_path = path;
  EXPECT_TRUE(absl::IsInvalidArgument(LoadTokenizer(spec).status()));
}

}  // namespace
}  // namespace fedge::task
