#include "transport/update_codec.h"

#include <zstd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include <torch/types.h>

#include "fedge/v1/transfer.pb.h"
#include "transport/transfer.h"

namespace fedge::transport {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

constexpr struct {
  Codec codec;
  const char* name;
} kCodecNames[] = {{Codec::kFloat32, "float32"},
                   {Codec::kFloat16, "float16"},
                   {Codec::kBFloat16, "bfloat16"},
                   {Codec::kInt8Row, "int8_row"},
                   {Codec::kTopK, "topk"}};

// The large byte fields (a tensor's values, scales and indices, and the
// payload's data) bypass protobuf: they are written straight from their
// tensors into the payload and read as views of it, so that a model-sized
// update is copied once on each side rather than once per nesting level.
// The small fields go through protobuf; the bytes are ordinary wire format
// (the large fields come last, which any parser accepts).
constexpr int kDataField = v1::CompressedPayload::kDataFieldNumber;
constexpr int kTensorsField = v1::EncodedUpdate::kTensorsFieldNumber;
constexpr int kValuesField = v1::EncodedTensor::kValuesFieldNumber;
constexpr int kScalesField = v1::EncodedTensor::kScalesFieldNumber;
constexpr int kIndicesField = v1::EncodedTensor::kIndicesFieldNumber;

uint32_t LengthDelimitedTag(int field) {
  return static_cast<uint32_t>(field) << 3 | 2;
}

size_t FieldSize(int field, size_t bytes) {
  return CodedOutputStream::VarintSize32(LengthDelimitedTag(field)) +
         CodedOutputStream::VarintSize64(bytes) + bytes;
}

uint8_t* WriteFieldHeader(int field, size_t bytes, uint8_t* out) {
  out = CodedOutputStream::WriteVarint32ToArray(LengthDelimitedTag(field), out);
  return CodedOutputStream::WriteVarint64ToArray(bytes, out);
}

// One tensor's encoding: its small fields in `meta`, its large ones still
// in contiguous tensors.
struct TensorEncoding {
  v1::EncodedTensor meta;
  std::vector<std::pair<int, at::Tensor>> fields;  // Field number, data.
  size_t size = 0;  // The serialized EncodedTensor's bytes (MeasureUpdate).

  void Add(int field, const at::Tensor& data) {
    fields.emplace_back(field, data.contiguous());
  }
};

// Sets each tensor's size (and caches its meta's) and returns the
// serialized EncodedUpdate's bytes.
size_t MeasureUpdate(std::vector<TensorEncoding>& tensors) {
  size_t total = 0;
  for (TensorEncoding& t : tensors) {
    t.size = t.meta.ByteSizeLong();
    for (const auto& [field, data] : t.fields) {
      // As protobuf does for proto3: an empty bytes field is not written.
      if (data.nbytes() > 0) t.size += FieldSize(field, data.nbytes());
    }
    total += FieldSize(kTensorsField, t.size);
  }
  return total;
}

// Writes the EncodedUpdate that MeasureUpdate sized; returns its end.
uint8_t* WriteUpdate(const std::vector<TensorEncoding>& tensors, uint8_t* out) {
  for (const TensorEncoding& t : tensors) {
    out = WriteFieldHeader(kTensorsField, t.size, out);
    out = t.meta.SerializeWithCachedSizesToArray(out);
    for (const auto& [field, data] : t.fields) {
      if (data.nbytes() == 0) continue;
      out = WriteFieldHeader(field, data.nbytes(), out);
      std::memcpy(out, data.data_ptr(), data.nbytes());
      out += data.nbytes();
    }
  }
  return out;
}

// Splits one serialized message: the length-delimited fields numbered in
// `viewed` become views of `bytes` (in order; for a singular field the
// last one counts, as in a parse), and every other field is copied to
// `rest` for protobuf to parse. False where `bytes` is not wire format (or
// holds a group, which no fedge message has).
bool SplitFields(absl::string_view bytes, std::initializer_list<int> viewed,
                 std::vector<std::pair<int, absl::string_view>>* views,
                 std::string* rest) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) return false;
  const int size = static_cast<int>(bytes.size());
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), size);
  while (in.CurrentPosition() < size) {
    const int start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    const int field = static_cast<int>(tag >> 3);
    if (field == 0) return false;
    uint64_t word = 0;
    uint32_t word32 = 0;
    switch (tag & 7) {
      case 0:  // Varint.
        if (!in.ReadVarint64(&word)) return false;
        break;
      case 1:  // Fixed 64 bits.
        if (!in.ReadLittleEndian64(&word)) return false;
        break;
      case 5:  // Fixed 32 bits.
        if (!in.ReadLittleEndian32(&word32)) return false;
        break;
      case 2: {  // Length-delimited.
        if (!in.ReadVarint32(&word32) || word32 > INT_MAX) return false;
        const int at = in.CurrentPosition();
        if (!in.Skip(static_cast<int>(word32))) return false;
        if (std::find(viewed.begin(), viewed.end(), field) != viewed.end()) {
          views->emplace_back(field, bytes.substr(at, word32));
          continue;
        }
        break;
      }
      default:
        return false;
    }
    rest->append(bytes.data() + start, in.CurrentPosition() - start);
  }
  return true;
}

// The last view of `field` (empty if none: an absent bytes field).
absl::string_view LastView(
    const std::vector<std::pair<int, absl::string_view>>& views, int field) {
  absl::string_view found;
  for (const auto& [number, view] : views) {
    if (number == field) found = view;
  }
  return found;
}

// Rows for int8_row: every dimension but the last; a vector is one row.
int64_t RowLength(const at::Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

// int8_row scales the longer axis of a matrix (see scale_columns).
bool ScaleColumns(const at::Tensor& t) {
  return t.dim() == 2 && t.size(0) > t.size(1);
}

absl::Status Bad(absl::string_view tensor, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("update tensor \"", tensor, "\": ", what));
}

// Builds a tensor from raw bytes after checking the size.
absl::StatusOr<at::Tensor> FromBytes(absl::string_view name,
                                     absl::string_view bytes,
                                     at::ScalarType type, int64_t numel,
                                     absl::string_view field) {
  const int64_t element = static_cast<int64_t>(c10::elementSize(type));
  if (static_cast<int64_t>(bytes.size()) != numel * element) {
    return Bad(name, absl::StrCat(field, " has ", bytes.size(), " bytes, ",
                                  numel * element, " expected"));
  }
  at::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(type));
  if (numel > 0) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

// A tensor's large fields, as views of the payload.
struct TensorBytes {
  absl::string_view values, scales, indices;
};

absl::StatusOr<at::Tensor> DecodeTensor(const v1::EncodedTensor& e,
                                        const TensorBytes& bytes,
                                        const DecodeLimits& limits) {
  const std::string& name = e.name();
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (int64_t d : e.shape()) {
    if (d < 0) return Bad(name, "negative dimension");
    if (d > 0 && numel > limits.max_tensor_elements / d) {
      return absl::ResourceExhaustedError(
          absl::StrCat("update tensor \"", name, "\" declares more than ",
                       limits.max_tensor_elements, " elements"));
    }
    numel *= d;
    shape.push_back(d);
  }
  at::Tensor flat;
  switch (e.codec()) {
    case v1::CODEC_FLOAT32:
    case v1::CODEC_FLOAT16:
    case v1::CODEC_BFLOAT16: {
      const at::ScalarType type =
          e.codec() == v1::CODEC_FLOAT32   ? torch::kFloat32
          : e.codec() == v1::CODEC_FLOAT16 ? torch::kFloat16
                                           : torch::kBFloat16;
      absl::StatusOr<at::Tensor> t =
          FromBytes(name, bytes.values, type, numel, "values");
      if (!t.ok()) return t.status();
      flat = t->to(torch::kFloat32);
      break;
    }
    case v1::CODEC_INT8_ROW: {
      if (e.scale_columns() && shape.size() != 2) {
        return Bad(name, "scale_columns needs a matrix");
      }
      const int64_t row =
          shape.empty() ? 1 : (e.scale_columns() ? shape[0] : shape.back());
      const int64_t rows = row == 0 ? 0 : numel / row;
      absl::StatusOr<at::Tensor> q =
          FromBytes(name, bytes.values, torch::kInt8, numel, "values");
      if (!q.ok()) return q.status();
      if (numel > 0 && q->min().item<int8_t>() < -127) {
        return Bad(name, "int8 values must be in [-127, 127]");
      }
      if (e.scales_dtype() != v1::DTYPE_UNSPECIFIED &&
          e.scales_dtype() != v1::DTYPE_FLOAT32 &&
          e.scales_dtype() != v1::DTYPE_FLOAT16) {
        return Bad(name, "int8 scales must be float16 or float32");
      }
      absl::StatusOr<at::Tensor> scales =
          FromBytes(name, bytes.scales,
                    e.scales_dtype() == v1::DTYPE_FLOAT16 ? torch::kFloat16
                                                          : torch::kFloat32,
                    rows, "scales");
      if (!scales.ok()) return scales.status();
      *scales = scales->to(torch::kFloat32);
      if (!torch::isfinite(*scales).all().item<bool>() ||
          (rows > 0 && scales->min().item<float>() < 0)) {
        return Bad(name, "scales must be finite and non-negative");
      }
      flat = q->to(torch::kFloat32).view({rows, row}) * scales->unsqueeze(1);
      flat = (e.scale_columns() ? flat.t() : flat).reshape({numel});
      break;
    }
    case v1::CODEC_TOPK: {
      if (bytes.indices.size() % 4 != 0) {
        return Bad(name, "indices not uint32");
      }
      const int64_t k = static_cast<int64_t>(bytes.indices.size() / 4);
      if (k > numel) return Bad(name, "more indices than elements");
      const at::ScalarType type = e.values_dtype() == v1::DTYPE_FLOAT16
                                      ? torch::kFloat16
                                      : torch::kFloat32;
      if (e.values_dtype() != v1::DTYPE_FLOAT16 &&
          e.values_dtype() != v1::DTYPE_FLOAT32) {
        return Bad(name, "top-k values must be float32 or float16");
      }
      absl::StatusOr<at::Tensor> values =
          FromBytes(name, bytes.values, type, k, "values");
      if (!values.ok()) return values.status();
      std::vector<uint32_t> idx(k);
      if (k > 0)
        std::memcpy(idx.data(), bytes.indices.data(), bytes.indices.size());
      for (int64_t i = 0; i < k; ++i) {
        if (idx[i] >= numel || (i > 0 && idx[i] <= idx[i - 1])) {
          return Bad(name, "top-k indices must be ascending and in range");
        }
      }
      flat = torch::zeros({numel}, torch::kFloat32);
      if (k > 0) {
        const at::Tensor index =
            torch::from_blob(idx.data(), {k}, torch::kInt32).to(torch::kLong);
        flat.index_put_({index}, values->to(torch::kFloat32));
      }
      break;
    }
    default:
      return Bad(name,
                 absl::StrCat("unknown codec ", static_cast<int>(e.codec())));
  }
  if (!torch::isfinite(flat).all().item<bool>()) {
    return Bad(name, "contains NaN or infinite values");
  }
  return flat.view(shape);
}

}  // namespace

v1::Codec CodecToProto(Codec codec) {
  switch (codec) {
    case Codec::kFloat32:
      return v1::CODEC_FLOAT32;
    case Codec::kFloat16:
      return v1::CODEC_FLOAT16;
    case Codec::kBFloat16:
      return v1::CODEC_BFLOAT16;
    case Codec::kInt8Row:
      return v1::CODEC_INT8_ROW;
    case Codec::kTopK:
      return v1::CODEC_TOPK;
  }
  return v1::CODEC_INT8_ROW;
}

Codec CodecFromProto(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_FLOAT32:
      return Codec::kFloat32;
    case v1::CODEC_FLOAT16:
      return Codec::kFloat16;
    case v1::CODEC_BFLOAT16:
      return Codec::kBFloat16;
    case v1::CODEC_TOPK:
      return Codec::kTopK;
    default:
      return Codec::kInt8Row;
  }
}

absl::StatusOr<Codec> ParseCodec(absl::string_view name) {
  for (const auto& c : kCodecNames) {
    if (name == c.name) return c.codec;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec \"", name,
                   "\" (float32, float16, bfloat16, int8_row, topk)"));
}

const char* CodecName(Codec codec) {
  for (const auto& c : kCodecNames) {
    if (codec == c.codec) return c.name;
  }
  return "?";
}

absl::Status CodecOptions::Validate() const {
  if (!(topk_fraction > 0 && topk_fraction <= 1)) {
    return absl::InvalidArgumentError("topk_fraction must be in (0, 1]");
  }
  if (zstd && (zstd_level < 1 || zstd_level > ZSTD_maxCLevel())) {
    return absl::InvalidArgumentError(
        absl::StrCat("zstd_level must be in [1, ", ZSTD_maxCLevel(), "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<EncodedPayload> EncodeUpdate(const NamedTensors& update,
                                            const CodecOptions& options,
                                            ErrorFeedback* feedback) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  torch::NoGradGuard no_grad;
  if (feedback != nullptr) {
    // The residual carries over only while the update has the same tensors
    // (a new pruning plan or rank changes them).
    bool same = feedback->residual.size() == update.size();
    for (const auto& item : update) {
      const at::Tensor* r = feedback->residual.find(item.key());
      same = same && r != nullptr && item.value().defined() &&
             r->numel() == item.value().numel();
    }
    if (!same) feedback->residual = NamedTensors();
  }
  std::vector<TensorEncoding> encoded;
  encoded.reserve(update.size());
  EncodedPayload out;
  std::set<std::string> names;
  for (const auto& item : update) {
    const std::string& name = item.key();
    at::Tensor t = item.value().detach();
    if (!names.insert(name).second || name.empty()) {
      return Bad(name, "empty or duplicate name");
    }
    if (!t.defined() || !at::isFloatingType(t.scalar_type())) {
      return Bad(name, "not a float tensor");
    }
    t = t.to(torch::kFloat32).contiguous();
    if (!torch::isfinite(t).all().item<bool>()) {
      return Bad(name, "contains NaN or infinite values");
    }
    out.raw_bytes += t.nbytes();
    TensorEncoding& encoding = encoded.emplace_back();
    v1::EncodedTensor* e = &encoding.meta;
    e->set_name(name);
    e->set_codec(CodecToProto(options.codec));
    for (int64_t d : t.sizes()) e->add_shape(d);
    switch (options.codec) {
      case Codec::kFloat32:
        encoding.Add(kValuesField, t);
        break;
      case Codec::kFloat16:
        encoding.Add(kValuesField, t.to(torch::kFloat16));
        break;
      case Codec::kBFloat16:
        encoding.Add(kValuesField, t.to(torch::kBFloat16));
        break;
      case Codec::kInt8Row: {
        const bool columns = ScaleColumns(t);
        const at::Tensor m = columns ? t.t().contiguous() : t;
        e->set_scale_columns(columns);
        const int64_t row = RowLength(m);
        const at::Tensor rows =
            m.reshape({row == 0 ? 0 : m.numel() / row, row});
        // Float16 scales (2 bytes per row, not 4), rounded up so that no
        // value needs more than 127 steps: quantising with the stored scale
        // keeps the error within half a step. Rows too large for float16
        // keep float32 scales.
        const at::Tensor needed = rows.abs().amax(1) / 127.0;
        const bool half =
            rows.numel() == 0 || needed.max().item<float>() < 60000.0f;
        at::Tensor scale = needed;
        if (half) {
          scale = needed.to(torch::kFloat16);
          // The next float16 up is the next bit pattern (scales are >= 0).
          const at::Tensor up =
              (scale.view(torch::kInt16) + 1).view(torch::kFloat16);
          scale = torch::where(scale.to(torch::kFloat32) < needed, up, scale);
        }
        const at::Tensor stored = scale.to(torch::kFloat32);
        const at::Tensor safe =
            torch::where(stored > 0, stored, torch::ones_like(stored));
        const at::Tensor q = (rows / safe.unsqueeze(1))
                                 .round()
                                 .clamp(-127, 127)
                                 .to(torch::kInt8);
        encoding.Add(kValuesField, q);
        encoding.Add(kScalesField, scale);
        e->set_scales_dtype(half ? v1::DTYPE_FLOAT16 : v1::DTYPE_FLOAT32);
        break;
      }
      case Codec::kTopK: {
        at::Tensor flat = t.reshape({-1});
        if (feedback != nullptr) {
          if (const at::Tensor* r = feedback->residual.find(name);
              r != nullptr && r->sizes() == flat.sizes()) {
            flat = flat + *r;
          }
        }
        const int64_t n = flat.numel();
        const int64_t k = std::min<int64_t>(
            n, static_cast<int64_t>(std::ceil(options.topk_fraction * n)));
        const at::Tensor index =
            std::get<0>(std::get<1>(flat.abs().topk(k)).sort());
        const at::Tensor values = flat.index_select(0, index);
        encoding.Add(kValuesField, values);
        e->set_values_dtype(v1::DTYPE_FLOAT32);
        encoding.Add(kIndicesField, index.to(torch::kInt32));
        if (feedback != nullptr) {
          at::Tensor residual = flat.clone();
          residual.index_fill_(0, index, 0.0);
          if (feedback->residual.contains(name)) {
            feedback->residual[name] = residual;
          } else {
            feedback->residual.insert(name, residual);
          }
        }
        break;
      }
    }
  }
  const size_t update_bytes = MeasureUpdate(encoded);
  v1::CompressedPayload payload;
  payload.set_uncompressed_bytes(static_cast<int64_t>(update_bytes));
  if (options.zstd) {
    std::string serialized(update_bytes, '\0');
    uint8_t* start = reinterpret_cast<uint8_t*>(serialized.data());
    if (WriteUpdate(encoded, start) != start + update_bytes) {
      return absl::InternalError("update size mismatch");
    }
    encoded.clear();
    std::string compressed(ZSTD_compressBound(serialized.size()), '\0');
    const size_t n =
        ZSTD_compress(compressed.data(), compressed.size(), serialized.data(),
                      serialized.size(), options.zstd_level);
    if (ZSTD_isError(n)) {
      return absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(n)));
    }
    compressed.resize(n);
    payload.set_compression(v1::COMPRESSION_ZSTD);
    payload.set_data(std::move(compressed));
    out.bytes = payload.SerializeAsString();
  } else {
    // The payload's fields, then its data: the update, written in place.
    payload.set_compression(v1::COMPRESSION_NONE);
    const size_t head = payload.ByteSizeLong();
    out.bytes.resize(head + FieldSize(kDataField, update_bytes));
    uint8_t* start = reinterpret_cast<uint8_t*>(out.bytes.data());
    uint8_t* at = payload.SerializeWithCachedSizesToArray(start);
    at = WriteFieldHeader(kDataField, update_bytes, at);
    at = WriteUpdate(encoded, at);
    if (at != start + out.bytes.size()) {
      return absl::InternalError("update payload size mismatch");
    }
  }
  return out;
}

bool CarriesChange(Codec codec) { return codec == Codec::kTopK; }

absl::StatusOr<NamedTensors> UpdateToSend(const NamedTensors& trained,
                                          const NamedTensors& sent,
                                          Codec codec) {
  if (!CarriesChange(codec)) return trained;
  NamedTensors change;
  for (const auto& item : trained) {
    const at::Tensor* start = sent.find(item.key());
    if (start == nullptr || start->sizes() != item.value().sizes()) {
      return Bad(item.key(), "not in the payload sent, or of another shape");
    }
    change.insert(item.key(), item.value() - *start);
  }
  return change;
}

namespace {

// DecodeUpdate of `bytes`, which are `source`'s view if `source` is set.
absl::StatusOr<NamedTensors> Decode(absl::string_view bytes,
                                    const DecodeLimits& limits,
                                    const CodecOptions* required,
                                    const PayloadBytes* source) {
  // The data (the update, maybe compressed) stays where it is.
  std::vector<std::pair<int, absl::string_view>> views;
  std::string head;
  v1::CompressedPayload payload;
  if (!SplitFields(bytes, {kDataField}, &views, &head) ||
      !payload.ParseFromString(head)) {
    return absl::InvalidArgumentError(
        "update payload is not a CompressedPayload");
  }
  const absl::string_view data = LastView(views, kDataField);
  if (required != nullptr) {
    const v1::Compression want =
        required->zstd ? v1::COMPRESSION_ZSTD : v1::COMPRESSION_NONE;
    if (payload.compression() != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update compression is ", v1::Compression_Name(payload.compression()),
          ", but the task asks for ", v1::Compression_Name(want),
          " (Task.upload_compression)"));
    }
  }
  if (payload.uncompressed_bytes() < 0 ||
      payload.uncompressed_bytes() > limits.max_payload_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("update declares ", payload.uncompressed_bytes(),
                     " bytes, the limit is ", limits.max_payload_bytes));
  }
  std::string decompressed;
  absl::string_view serialized;
  switch (payload.compression()) {
    case v1::COMPRESSION_NONE:
      serialized = data;
      break;
    case v1::COMPRESSION_ZSTD: {
      const unsigned long long content =
          ZSTD_getFrameContentSize(data.data(), data.size());
      if (content == ZSTD_CONTENTSIZE_ERROR ||
          content == ZSTD_CONTENTSIZE_UNKNOWN ||
          content !=
              static_cast<unsigned long long>(payload.uncompressed_bytes())) {
        return absl::InvalidArgumentError(
            "zstd frame size missing or different from the declared size");
      }
      decompressed.resize(content);
      const size_t n = ZSTD_decompress(decompressed.data(), decompressed.size(),
                                       data.data(), data.size());
      if (ZSTD_isError(n) || n != content) {
        return absl::InvalidArgumentError(absl::StrCat(
            "zstd decompression failed: ",
            ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
      }
      serialized = decompressed;
      if (source != nullptr) source->DoneWith(data);
      break;
    }
    default:
      return absl::InvalidArgumentError("unknown update compression");
  }
  if (static_cast<int64_t>(serialized.size()) != payload.uncompressed_bytes()) {
    return absl::InvalidArgumentError(
        "update size differs from the declared size");
  }
  // Each tensor's values are copied once, from the payload into the tensor.
  const absl::Status not_an_update =
      absl::InvalidArgumentError("update is not an EncodedUpdate");
  std::vector<std::pair<int, absl::string_view>> tensors;
  std::string other;
  v1::EncodedUpdate rest;
  if (!SplitFields(serialized, {kTensorsField}, &tensors, &other) ||
      !rest.ParseFromString(other)) {
    return not_an_update;
  }
  if (static_cast<int64_t>(tensors.size()) > limits.max_tensors) {
    return absl::ResourceExhaustedError("update has too many tensors");
  }
  NamedTensors out;
  for (const auto& [field, tensor] : tensors) {
    std::vector<std::pair<int, absl::string_view>> large;
    std::string small;
    v1::EncodedTensor e;
    if (!SplitFields(tensor, {kValuesField, kScalesField, kIndicesField},
                     &large, &small) ||
        !e.ParseFromString(small)) {
      return not_an_update;
    }
    if (e.name().empty() || out.contains(e.name())) {
      return Bad(e.name(), "empty or duplicate name");
    }
    if (required != nullptr && e.codec() != CodecToProto(required->codec)) {
      return Bad(e.name(),
                 absl::StrCat("encoded as ", v1::Codec_Name(e.codec()),
                              ", but the task asks for ",
                              v1::Codec_Name(CodecToProto(required->codec)),
                              " (Task.upload_codec)"));
    }
    const TensorBytes in_place{LastView(large, kValuesField),
                               LastView(large, kScalesField),
                               LastView(large, kIndicesField)};
    absl::StatusOr<at::Tensor> t = DecodeTensor(e, in_place, limits);
    if (!t.ok()) return t.status();
    out.insert(e.name(), *std::move(t));
    if (source != nullptr && payload.compression() == v1::COMPRESSION_NONE) {
      source->DoneWith(tensor);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<NamedTensors> DecodeUpdate(absl::string_view payload,
                                          const DecodeLimits& limits,
                                          const CodecOptions* required) {
  return Decode(payload, limits, required, nullptr);
}

absl::StatusOr<NamedTensors> DecodeUpdate(const PayloadBytes& payload,
                                          const DecodeLimits& limits,
                                          const CodecOptions* required) {
  return Decode(payload.view(), limits, required, &payload);
}

}  // namespace fedge::transport
