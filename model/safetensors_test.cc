#include "model/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "model/file_io.h"

namespace fedge::model {
namespace {

// A file with the given JSON header and `data_bytes` zero bytes of data.
std::string MakeFile(const std::string& json, size_t data_bytes) {
  std::string out;
  uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>(length & 0xff));
    length >>= 8;
  }
  return out + json + std::string(data_bytes, '\0');
}

bool SameBytes(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         (a.nbytes() == 0 ||
          std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(),
                      a.nbytes()) == 0);
}

TEST(SafetensorsTest, RoundTripIsBitExactForEveryDtype) {
  torch::manual_seed(0);
  NamedTensors tensors;
  const at::Tensor base = torch::randn({3, 5}) * 100;
  for (auto type :
       {torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kFloat64}) {
    tensors.insert(absl::StrCat("float.", c10::toString(type)), base.to(type));
  }
  tensors.insert("int64", torch::randint(-1000, 1000, {7}, torch::kLong));
  tensors.insert("int32", torch::randint(-1000, 1000, {2, 2}, torch::kInt));
  tensors.insert("int8", torch::randint(-128, 127, {4}, torch::kChar));
  tensors.insert("uint8", torch::randint(0, 255, {4}, torch::kByte));
  tensors.insert("bool", torch::rand({6}) > 0.5);
  tensors.insert("scalar", torch::tensor(3.5f).reshape({}));
  tensors.insert("empty", torch::zeros({0, 4}));
  // Special values must survive bit for bit too.
  tensors.insert(
      "special",
      torch::tensor({std::numeric_limits<float>::quiet_NaN(),
                     std::numeric_limits<float>::infinity(), -0.0f, 1e-40f}));
  tensors.insert("transposed", torch::randn({4, 3}).t());

  absl::StatusOr<std::string> bytes =
      SerializeSafetensors(tensors, {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(*bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  EXPECT_EQ(parsed->metadata.at("format"), "pt");
  ASSERT_EQ(parsed->tensors.size(), tensors.size());
  for (const auto& item : tensors) {
    const at::Tensor* got = parsed->tensors.find(item.key());
    ASSERT_NE(got, nullptr) << item.key();
    EXPECT_TRUE(SameBytes(*got, item.value())) << item.key();
  }
  // Insertion order is kept (by data offset).
  EXPECT_EQ(parsed->tensors.keys(), tensors.keys());
}

TEST(SafetensorsTest, FileRoundTripReadsTheSameTensors) {
  NamedTensors tensors;
  tensors.insert("a", torch::arange(10, torch::kFloat32));
  tensors.insert("b", torch::ones({2, 3}, torch::kBFloat16));
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/roundtrip.safetensors");

  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);

  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(SameBytes(read->tensors["a"], tensors["a"]));
  EXPECT_TRUE(SameBytes(read->tensors["b"], tensors["b"]));
  EXPECT_NE(
      ::access((path + ".tmp." + std::to_string(::getpid())).c_str(), F_OK), 0);
}

TEST(SafetensorsTest, WrittenFileHoldsTheSerializedBytes) {
  NamedTensors tensors;
  tensors.insert("t", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());
  tensors.insert("empty", torch::zeros({0, 5}));
  tensors.insert("i", torch::arange(5, torch::kInt64));
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/written.safetensors");

  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"k", "v"}}).ok());

  absl::StatusOr<std::string> expected =
      SerializeSafetensors(tensors, {{"k", "v"}});
  ASSERT_TRUE(expected.ok()) << expected.status();
  absl::StatusOr<std::string> written = ReadFile(path);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, *expected);
  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(SameBytes(read->tensors["t"], tensors["t"].contiguous()));
}

TEST(SafetensorsTest, DataSectionIsEightByteAligned) {
  NamedTensors tensors;
  tensors.insert("x", torch::ones({3}));
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors);
  ASSERT_TRUE(bytes.ok());
  uint64_t length = 0;
  std::memcpy(&length, bytes->data(), 8);
  EXPECT_EQ((8 + length) % 8, 0u);
}

TEST(SafetensorsTest, ReadsAFileWrittenByTheReferenceLayout) {
  // Hand-built as the Python library writes it: F32 [2] = {1.0, 2.0}.
  const std::string json =
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("__metadata__":{"format":"pt"}})";
  std::string file = MakeFile(json, 0);
  const float values[2] = {1.0f, 2.0f};
  file.append(reinterpret_cast<const char*>(values), sizeof(values));

  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(file);

  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(torch::equal(parsed->tensors["w"], torch::tensor({1.0f, 2.0f})));
}

struct Malformed {
  const char* name;
  std::string bytes;
  absl::StatusCode code;
  const char* message;  // A substring the error must contain.
};

TEST(SafetensorsTest, RejectsEachMalformedFileWithTheRightError) {
  const std::string good_json =
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string huge_length(8, '\0');
  huge_length[4] = 1;  // 2^32 bytes of header.
  const std::vector<Malformed> cases = {
      {"shorter than the length prefix", std::string(5, '\0'),
       absl::StatusCode::kDataLoss, "truncated"},
      {"header longer than the file", MakeFile(good_json, 8).substr(0, 20),
       absl::StatusCode::kDataLoss, "truncated"},
      {"header too large", huge_length + "{}",
       absl::StatusCode::kInvalidArgument, "exceeds the limit"},
      {"not JSON", MakeFile("{nope", 0), absl::StatusCode::kInvalidArgument,
       "not valid JSON"},
      {"not an object", MakeFile("[1,2]", 0),
       absl::StatusCode::kInvalidArgument, "not a JSON object"},
      {"unknown dtype",
       MakeFile(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2),
       absl::StatusCode::kInvalidArgument, "unknown dtype"},
      {"offsets out of range", MakeFile(good_json, 4),
       absl::StatusCode::kInvalidArgument, "out of range"},
      {"shape does not match the byte range",
       MakeFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       absl::StatusCode::kInvalidArgument, "shape needs"},
      {"end before begin",
       MakeFile(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       absl::StatusCode::kInvalidArgument, "end < begin"},
      {"negative dimension",
       MakeFile(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                8),
       absl::StatusCode::kInvalidArgument, "non-negative"},
      {"overflowing shape",
       MakeFile(R"({"w":{"dtype":"F32","shape":[4,4611686018427387904],)"
                R"("data_offsets":[0,8]}})",
                8),
       absl::StatusCode::kInvalidArgument, "exceeds the data size"},
      {"overlapping tensors",
       MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                12),
       absl::StatusCode::kInvalidArgument, "overlaps"},
      {"missing field",
       MakeFile(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8),
       absl::StatusCode::kInvalidArgument, "shape"},
      {"metadata not strings", MakeFile(R"({"__metadata__":{"a":1}})", 0),
       absl::StatusCode::kInvalidArgument, "not a string"},
  };
  for (const Malformed& c : cases) {
    absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(c.bytes);
    ASSERT_FALSE(parsed.ok()) << c.name;
    EXPECT_EQ(parsed.status().code(), c.code)
        << c.name << ": " << parsed.status();
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos)
        << c.name << ": " << parsed.status();
  }
}

TEST(SafetensorsTest, TruncatedFileOnDiskIsDataLossNamingThePath) {
  NamedTensors tensors;
  tensors.insert("w", torch::ones({1000}));
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors);
  ASSERT_TRUE(bytes.ok());
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/cut.safetensors");
  ASSERT_TRUE(
      WriteFileAtomically(path, bytes->substr(0, bytes->size() - 10)).ok());

  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);

  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument)
      << read.status();  // The offsets now point past the data.
  EXPECT_NE(read.status().message().find(path), std::string::npos);
}

TEST(SafetensorsReaderTest, SlicesEqualIndexSelectAlongEveryDimension) {
  NamedTensors tensors;
  tensors.insert("m", torch::randn({6, 5, 4}));
  tensors.insert("h", torch::arange(24, torch::kFloat16).reshape({4, 6}));
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/slices.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader =
      SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();

  // Runs, gaps, a reordering and a repeat.
  const std::vector<int64_t> index = {0, 1, 3, 2, 2};
  for (const char* name : {"m", "h"}) {
    const SafetensorsEntry* entry = (*reader)->Find(name);
    ASSERT_NE(entry, nullptr);
    absl::StatusOr<at::Tensor> whole = (*reader)->Read(*entry);
    ASSERT_TRUE(whole.ok());
    EXPECT_TRUE(SameBytes(*whole, tensors[name]));
    for (int64_t dim = 0; dim < tensors[name].dim(); ++dim) {
      absl::StatusOr<at::Tensor> slice =
          (*reader)->ReadSlice(*entry, dim, index);
      ASSERT_TRUE(slice.ok()) << slice.status();
      EXPECT_TRUE(SameBytes(
          *slice,
          tensors[name].index_select(dim, torch::tensor(index, torch::kLong))))
          << name << " dim " << dim;
    }
  }
  EXPECT_EQ((*reader)->Find("absent"), nullptr);
}

TEST(SafetensorsReaderTest, RejectsBadSlicesAndReportsTruncation) {
  NamedTensors tensors;
  tensors.insert("w", torch::ones({8, 8}));
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/reader_bad.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader =
      SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok());
  const SafetensorsEntry& w = *(*reader)->Find("w");
  EXPECT_EQ((*reader)->ReadSlice(w, 2, {0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*reader)->ReadSlice(w, 1, {8}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*reader)->ReadSlice(w, 0, {-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The file shrinks under an open reader: DataLoss, not garbage.
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  absl::StatusOr<at::Tensor> read = (*reader)->Read(w);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_EQ(
      SafetensorsReader::Open("/nonexistent/x.safetensors").status().code(),
      absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  absl::StatusOr<SafetensorsFile> read =
      ReadSafetensors("/nonexistent/dir/model.safetensors");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, SerializeRejectsBadNamesAndDtypes) {
  NamedTensors reserved;
  reserved.insert("__metadata__", torch::ones({1}));
  EXPECT_EQ(SerializeSafetensors(reserved).status().code(),
            absl::StatusCode::kInvalidArgument);
  NamedTensors complex;
  complex.insert("c", torch::ones({1}, torch::kComplexFloat));
  EXPECT_EQ(SerializeSafetensors(complex).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::model
