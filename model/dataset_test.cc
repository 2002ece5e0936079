#include "model/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/file_io.h"

namespace fedge::model {
namespace {

std::string BigEndian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
          static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string Images(uint32_t count, uint32_t rows = 28) {
  std::string out =
      BigEndian(0x803) + BigEndian(count) + BigEndian(rows) + BigEndian(28);
  for (uint32_t i = 0; i < count * rows * 28; ++i) {
    out.push_back(static_cast<char>(i % 256));
  }
  return out;
}

std::string LabelBytes(std::vector<unsigned char> labels) {
  std::string out = BigEndian(0x801) + BigEndian(labels.size());
  for (unsigned char l : labels) out.push_back(static_cast<char>(l));
  return out;
}

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

TEST(DatasetTest, HeadIsTheFirstSamplesOrAll) {
  Dataset data;
  data.inputs = torch::arange(10, torch::kFloat32).reshape({5, 2});
  data.targets = torch::arange(5, torch::kLong);
  data.num_classes = 5;
  const Dataset head = Head(data, 3);
  EXPECT_EQ(head.size(), 3);
  EXPECT_TRUE(torch::equal(head.targets, torch::arange(3, torch::kLong)));
  EXPECT_TRUE(torch::equal(head.inputs, data.inputs.narrow(0, 0, 3)));
  EXPECT_EQ(head.num_classes, 5);
  EXPECT_EQ(Head(data, 0).size(), 5);
  EXPECT_EQ(Head(data, 9).size(), 5);
}

TEST(FashionMnistTest, ParsesImagesAndLabels) {
  absl::StatusOr<Dataset> data =
      ParseFashionMnist(Images(3), LabelBytes({0, 9, 4}));
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->inputs.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_EQ(model::Labels(*data), (std::vector<int64_t>{0, 9, 4}));
  // Pixel 1 of image 0 is byte 1: (1/255 - mean) / std.
  EXPECT_NEAR(data->inputs[0][0][0][1].item<float>(),
              (1 / 255.0 - 0.2860) / 0.3530, 1e-5);
}

TEST(FashionMnistTest, RejectsMalformedFiles) {
  struct Case {
    const char* name;
    std::string images, labels;
    absl::StatusCode code;
  };
  std::string bad_magic = Images(1);
  bad_magic[3] = 0x01;
  const std::vector<Case> cases = {
      {"bad image magic", bad_magic, LabelBytes({1}),
       absl::StatusCode::kInvalidArgument},
      {"bad label magic", Images(1), Images(1),
       absl::StatusCode::kInvalidArgument},
      {"truncated images", Images(2).substr(0, 500), LabelBytes({1, 2}),
       absl::StatusCode::kDataLoss},
      {"truncated labels", Images(2), LabelBytes({1, 2}).substr(0, 9),
       absl::StatusCode::kDataLoss},
      {"count mismatch", Images(2), LabelBytes({1}),
       absl::StatusCode::kInvalidArgument},
      {"label out of range", Images(1), LabelBytes({10}),
       absl::StatusCode::kInvalidArgument},
      {"wrong image size", Images(1, 27), LabelBytes({1}),
       absl::StatusCode::kInvalidArgument},
      {"header only", "abc", LabelBytes({1}), absl::StatusCode::kDataLoss},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Dataset> data = ParseFashionMnist(c.images, c.labels);
    ASSERT_FALSE(data.ok()) << c.name;
    EXPECT_EQ(data.status().code(), c.code) << c.name << ": " << data.status();
  }
}

TEST(FashionMnistTest, LoadsGzipFilesFromADirectory) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/fmnist");
  ASSERT_TRUE(MakeDirectories(dir).ok());
  WriteGzip(dir + "/t10k-images-idx3-ubyte.gz", Images(2));
  WriteGzip(dir + "/t10k-labels-idx1-ubyte.gz", LabelBytes({3, 5}));

  absl::StatusOr<Dataset> data = LoadFashionMnist(dir, Split::kTest);

  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 2);
  absl::StatusOr<Dataset> missing = LoadFashionMnist(dir, Split::kTrain);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("dataset-fashion-mnist"),
            std::string::npos);
}

TEST(FashionMnistTest, PixelsSelectedThenNormalisedEqualTheNormalisedSet) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/fmnist_pixels");
  ASSERT_TRUE(MakeDirectories(dir).ok());
  WriteGzip(dir + "/train-images-idx3-ubyte.gz", Images(4));
  WriteGzip(dir + "/train-labels-idx1-ubyte.gz", LabelBytes({1, 2, 3, 4}));

  absl::StatusOr<Dataset> pixels = LoadFashionMnistPixels(dir, Split::kTrain);
  absl::StatusOr<Dataset> full = LoadFashionMnist(dir, Split::kTrain);

  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(pixels->inputs.scalar_type(), torch::kUInt8);
  EXPECT_EQ(pixels->inputs[1][0][0][1].item<int>(), (28 * 28 + 1) % 256);
  const Dataset shard = NormalizeFashionMnist(*Subset(*pixels, {3, 1}));
  const Dataset expected = *Subset(*full, {3, 1});
  EXPECT_TRUE(torch::equal(shard.inputs, expected.inputs));
  EXPECT_TRUE(torch::equal(shard.targets, expected.targets));
  // Normalised data passes through untouched.
  EXPECT_TRUE(
      torch::equal(NormalizeFashionMnist(expected).inputs, expected.inputs));
}

TEST(FashionMnistTest, AGzipTrailerThatLiesOnlyCostsAReallocation) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/lying.gz");
  const std::string payload = Images(3);
  WriteGzip(path, payload);
  absl::StatusOr<std::string> bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  for (const char size : {'\x01', '\xff'}) {  // 1 byte, then ~4 GiB.
    std::string lying = *bytes;
    lying.replace(lying.size() - 4, 4, std::string(4, size));
    ASSERT_TRUE(WriteFileAtomically(path, lying).ok());
    absl::StatusOr<std::string> read = ReadMaybeGzip(path);
    // zlib checks the length too: a lying trailer is a corrupt stream.
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  }
  const std::string plain = absl::StrCat(::testing::TempDir(), "/plain.idx");
  ASSERT_TRUE(WriteFileAtomically(plain, payload).ok());
  EXPECT_EQ(*ReadMaybeGzip(plain), payload);
}

TEST(FashionMnistTest, TruncatedGzipIsDataLoss) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/cut.gz");
  const std::string full = absl::StrCat(::testing::TempDir(), "/full.gz");
  WriteGzip(full, Images(50));
  absl::StatusOr<std::string> bytes = ReadFile(full);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(
      WriteFileAtomically(path, bytes->substr(0, bytes->size() / 2)).ok());

  EXPECT_EQ(ReadMaybeGzip(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(FashionMnistTest, RealDebianPackageHasTheExpectedSplits) {
  if (::access(kFashionMnistDir, R_OK) != 0) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  absl::StatusOr<Dataset> test =
      LoadFashionMnist(kFashionMnistDir, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->size(), 10000);
  // Balanced classes: 1000 of each in the test split.
  const at::Tensor counts = torch::bincount(test->targets);
  EXPECT_TRUE(torch::equal(counts, torch::full({10}, 1000, torch::kLong)));
}

TEST(ByteTextTest, WindowsAreShiftedByOne) {
  absl::StatusOr<Dataset> data = MakeByteTextDataset("abcdefghij", 4);
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_EQ(data->size(), 2);  // "abcde", "fghij".
  EXPECT_EQ(data->inputs[1][0].item<int64_t>(), 'f');
  EXPECT_EQ(data->targets[1][3].item<int64_t>(), 'j');
  EXPECT_EQ(data->num_classes, 256);
}

TEST(ByteTextTest, RejectsTooShortTextAndBadLength) {
  EXPECT_FALSE(MakeByteTextDataset("abc", 4).ok());
  EXPECT_FALSE(MakeByteTextDataset("abcdef", 0).ok());
  EXPECT_EQ(LoadByteTextFile("/nonexistent.txt", 4).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SubsetTest, SelectsInOrderAndRejectsOutOfRange) {
  absl::StatusOr<Dataset> data =
      ParseFashionMnist(Images(3), LabelBytes({0, 1, 2}));
  ASSERT_TRUE(data.ok());
  absl::StatusOr<Dataset> sub = Subset(*data, {2, 0});
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(model::Labels(*sub), (std::vector<int64_t>{2, 0}));
  EXPECT_FALSE(Subset(*data, {3}).ok());
}

}  // namespace
}  // namespace fedge::model
