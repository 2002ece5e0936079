#include "task/text_corpus.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <torch/types.h>

namespace fedge::task {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> Bytes() {
  TokenizerSpec spec;
  spec.type = "byte";
  return *LoadTokenizer(spec);
}

TEST(TextCorpusTest, SplitsRecordsAtSeparatorLinesAndKeepsLines) {
  std::vector<TextRecord> records;
  ASSERT_TRUE(
      AppendRecords("one\ntwo\n%\nthree\n%\n\n%\nfour", "f", 0, "%", &records)
          .ok());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "one\ntwo");
  EXPECT_EQ(records[0].line, 1);
  EXPECT_EQ(records[1].text, "three");
  EXPECT_EQ(records[1].line, 4);
  EXPECT_EQ(records[2].text, "four");
  EXPECT_EQ(records[2].line, 8);
}

TEST(TextCorpusTest, BlankLinesSeparateParagraphsByDefault) {
  std::vector<TextRecord> records;
  ASSERT_TRUE(AppendRecords("a b\nc\n\n\nd\n", "f", 0, "", &records).ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text, "a b\nc");
  EXPECT_EQ(records[1].text, "d");
  EXPECT_EQ(records[1].line, 5);
}

TEST(TextCorpusTest, InvalidUtf8AndNulAreRefusedWithFileAndLine) {
  std::vector<TextRecord> records;
  absl::Status s =
      AppendRecords("ok\nbad \xff here\n", "corpus.txt", 0, "", &records);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("corpus.txt:2: not valid UTF-8"));
  s = AppendRecords(std::string("a\0b", 3), "bin", 0, "", &records);
  EXPECT_THAT(s.message(), HasSubstr("bin:1: contains a NUL byte"));
  // An overlong encoding and a lone continuation byte are invalid too.
  EXPECT_FALSE(AppendRecords("\xc0\xaf", "f", 0, "", &records).ok());
  EXPECT_FALSE(AppendRecords("\x80", "f", 0, "", &records).ok());
  EXPECT_TRUE(
      AppendRecords("caf\xc3\xa9 \xe2\x82\xac", "f", 0, "", &records).ok());
}

TEST(TextCorpusTest, PacksWindowsWithShiftedTargetsAndByteCounts) {
  TextCorpus corpus;
  corpus.files = {"f"};
  ASSERT_TRUE(AppendRecords("abc\n\ndefgh", "f", 0, "", &corpus.records).ok());
  // Stream: "abc\ndefgh\n" = 10 bytes; windows of 4+1: two of them.
  absl::StatusOr<model::Dataset> data =
      PackRecords(corpus, {0, 1}, *Bytes(), 4, "test");
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_EQ(data->size(), 2);
  EXPECT_EQ(data->inputs[0][0].item<int64_t>(), 'a');
  EXPECT_EQ(data->targets[0][0].item<int64_t>(), 'b');
  EXPECT_EQ(data->targets[0][3].item<int64_t>(), 'd');
  EXPECT_EQ(data->inputs[1][0].item<int64_t>(), 'e');
  EXPECT_EQ(data->target_bytes[0].item<int64_t>(), 4);
  EXPECT_EQ(data->num_classes, 256);
}

TEST(TextCorpusTest, TooLittleTextForOneWindowIsAClearError) {
  TextCorpus corpus;
  corpus.files = {"f"};
  ASSERT_TRUE(AppendRecords("hi", "f", 0, "", &corpus.records).ok());
  absl::StatusOr<model::Dataset> data =
      PackRecords(corpus, {0}, *Bytes(), 64, "data /x");
  EXPECT_TRUE(absl::IsFailedPrecondition(data.status()));
  EXPECT_THAT(data.status().message(), HasSubstr("data /x holds 3 tokens"));
}

TEST(TextCorpusTest, JsonlTakesDollyAndAlpacaFieldsIntoThePromptTemplate) {
  std::vector<TextRecord> records;
  std::vector<std::string> categories;
  ASSERT_TRUE(
      AppendJsonlRecords(
          R"({"instruction": "Add.", "context": "1 2", "response": "3", "category": "math"})"
          "\n\n"
          R"({"instruction": "Greet.", "input": "", "output": "hi", "id": 7})"
          "\n",
          "d.jsonl", 0, JsonlKind::kInstruction, &categories, &records)
          .ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].prompt,
            "### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:\n");
  EXPECT_EQ(records[0].text, "3");
  EXPECT_EQ(records[0].category, 0);
  EXPECT_EQ(categories, std::vector<std::string>{"math"});
  EXPECT_EQ(records[1].prompt, "### Instruction:\nGreet.\n\n### Response:\n");
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(records[1].category, -1);
}

TEST(TextCorpusTest, ClassificationRecordsAnswerWithTheirLabel) {
  std::vector<TextRecord> records;
  std::vector<std::string> categories;
  ASSERT_TRUE(
      AppendJsonlRecords(R"({"text": "a cat", "label": "noun"})"
                         "\n"
                         R"({"text": "to run", "label": 3})"
                         "\n"
                         R"({"text": "x", "label": "n", "category": "c"})",
                         "c.jsonl", 0, JsonlKind::kClassification, &categories,
                         &records)
          .ok());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].prompt, "### Text:\na cat\n\n### Label:\n");
  EXPECT_EQ(records[0].text, "noun");
  EXPECT_EQ(records[1].text, "3");  // Integer labels become their digits.
  // Without a category a record is in its label's.
  EXPECT_EQ(categories, (std::vector<std::string>{"noun", "3", "c"}));
  EXPECT_EQ(records[2].category, 2);
  const absl::Status s =
      AppendJsonlRecords(R"({"text": "no label"})", "c.jsonl", 0,
                         JsonlKind::kClassification, &categories, &records);
  EXPECT_THAT(s.message(), HasSubstr("c.jsonl:1: field \"label\" is missing"));
  EXPECT_THAT(
      AppendJsonlRecords(R"({"text": "t", "label": 1.5})", "c.jsonl", 0,
                         JsonlKind::kClassification, &categories, &records)
          .message(),
      HasSubstr("\"label\" is not a string"));
}

TEST(TextCorpusTest, BadJsonlLinesAreNamedByFileAndLine) {
  const struct {
    std::string line;
    std::string error;
  } cases[] = {
      {R"({"instruction": "x", "response": )", "d.jsonl:2: not a JSON object"},
      {R"(["x"])", "d.jsonl:2: not a JSON object"},
      {R"({"response": "y"})", "\"instruction\" is missing or blank"},
      {R"({"instruction": "x"})", "\"response\" is missing or blank"},
      {R"({"instruction": "x", "response": "  "})", "\"response\" is missing"},
      {R"({"instruction": 3, "response": "y"})",
       "\"instruction\" is not a string"},
      {R"({"instruction": "x", "response": "y", "output": "z"})",
       "both \"response\" and \"output\""},
  };
  for (const auto& c : cases) {
    std::vector<TextRecord> records;
    std::vector<std::string> categories;
    const absl::Status s = AppendJsonlRecords(
        R"({"instruction": "ok", "response": "ok"})"
        "\n" +
            c.line,
        "d.jsonl", 0, JsonlKind::kInstruction, &categories, &records);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.line;
    EXPECT_THAT(s.message(), HasSubstr("d.jsonl:2")) << c.line;
    EXPECT_THAT(s.message(), HasSubstr(c.error)) << c.line;
  }
}

TEST(TextCorpusTest, PadRecordsScoresTheResponseAndItsEndOnly) {
  TextCorpus corpus;
  corpus.files = {"d.jsonl"};
  corpus.records = {TextRecord{0, 1, "ab", "P:"}, TextRecord{0, 2, "c", "Q"}};
  const std::unique_ptr<Tokenizer> bytes = Bytes();
  absl::StatusOr<model::Dataset> data =
      PadRecords(corpus, {0, 1}, *bytes, 6, "test");
  ASSERT_TRUE(data.ok()) << data.status();
  const int64_t nl = '\n', x = model::kIgnoreTarget;
  const int64_t P = 'P', colon = ':', a = 'a', b = 'b', c = 'c';
  auto row = [](std::vector<int64_t> v) { return torch::tensor(v); };
  // "P:ab\n": inputs P : a b, targets (masked) a b \n, padding after.
  EXPECT_TRUE(torch::equal(data->inputs[0], row({P, colon, a, b, nl, nl})));
  EXPECT_TRUE(torch::equal(data->targets[0], row({x, a, b, nl, x, x})));
  EXPECT_TRUE(torch::equal(data->targets[1], row({c, nl, x, x, x, x})));
  EXPECT_EQ(data->target_bytes[0].item<int64_t>(), 3);  // "ab\n".
  EXPECT_EQ(data->target_bytes[1].item<int64_t>(), 2);
}

TEST(TextCorpusTest, AnInstructionRecordLongerThanTheWindowIsNamed) {
  TextCorpus corpus;
  corpus.files = {"d.jsonl"};
  corpus.records = {TextRecord{0, 1, "ok", "P"},
                    TextRecord{0, 9, "far too long", "Prompt"}};
  absl::StatusOr<model::Dataset> data =
      PadRecords(corpus, {0, 1}, *Bytes(), 8, "test");
  ASSERT_TRUE(absl::IsInvalidArgument(data.status()));
  EXPECT_THAT(data.status().message(), HasSubstr("d.jsonl:9"));
  EXPECT_THAT(data.status().message(),
              HasSubstr("prompt 6, response and end 13"));
  // A plain-text record is not an instruction record.
  corpus.records[0].prompt.clear();
  EXPECT_THAT(PadRecords(corpus, {0}, *Bytes(), 8, "test").status().message(),
              HasSubstr("d.jsonl:1: not an instruction record"));
}

TEST(TextCorpusTest, ReadsADirectoryInNameOrderSkippingPatterns) {
  const std::string dir =
      ::testing::TempDir() + "/corpus_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/b") << "bee\n%\nbuzz\n";
  std::ofstream(dir + "/a") << "ant\n";
  std::ofstream(dir + "/a.dat") << std::string("\0\1", 2);
  DataSpec spec;
  spec.record_separator = "%";
  spec.skip = {"*.dat"};
  absl::StatusOr<TextCorpus> corpus = ReadTextCorpus(dir, spec);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  ASSERT_EQ(corpus->files.size(), 2u);
  EXPECT_THAT(corpus->files[0], HasSubstr("/a"));
  ASSERT_EQ(corpus->records.size(), 3u);
  EXPECT_EQ(corpus->records[2].text, "buzz");
  EXPECT_EQ(corpus->records[2].file, 1);
  // Without the skip pattern the binary file is named in the error.
  spec.skip.clear();
  absl::StatusOr<TextCorpus> bad = ReadTextCorpus(dir, spec);
  EXPECT_THAT(bad.status().message(), HasSubstr("a.dat:1"));
  EXPECT_TRUE(absl::IsNotFound(ReadTextCorpus(dir + "/none", spec).status()));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedge::task
