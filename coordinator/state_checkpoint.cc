#include "coordinator/state_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "model/file_io.h"
#include "model/json_util.h"
#include "model/safetensors.h"

namespace fedge::coordinator {
namespace {

constexpr char kMetadataKey[] = "fedge_coordinator_state";
constexpr int64_t kVersion = 1;

nlohmann::json FactsToJson(const DeviceFacts& f) {
  return {{"device_id", f.device_id},
          {"cores", f.cores},
          {"memory_total_bytes", f.memory_total_bytes},
          {"memory_available_bytes", f.memory_available_bytes},
          {"memory_budget_bytes", f.memory_budget_bytes},
          {"arch", f.arch},
          {"cpu_model", f.cpu_model},
          {"benchmark_gflops", f.benchmark_gflops},
          {"link", f.link},
          {"software_version", f.software_version}};
}

DeviceFacts FactsFromJson(model::JsonReader& r) {
  DeviceFacts f;
  f.device_id = r.String("device_id");
  f.cores = static_cast<int32_t>(r.Int("cores"));
  f.memory_total_bytes = r.Int("memory_total_bytes");
  f.memory_available_bytes = r.Int("memory_available_bytes");
  f.memory_budget_bytes = r.Int("memory_budget_bytes");
  f.arch = r.String("arch");
  f.cpu_model = r.String("cpu_model");
  f.benchmark_gflops = r.Double("benchmark_gflops");
  f.link = r.String("link");
  f.software_version = r.String("software_version");
  return f;
}

// fsync of the directory makes the rename itself durable.
void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

std::string CheckpointPath(const std::string& dir) {
  return dir + "/coordinator.safetensors";
}

absl::Status SaveCheckpoint(const std::string& dir,
                            const Checkpoint& checkpoint) {
  if (absl::Status s = model::MakeDirectories(dir); !s.ok()) return s;
  const EngineState& state = checkpoint.state;
  nlohmann::json json = {{"version", kVersion},
                         {"next_round", state.next_round},
                         {"base_digest", checkpoint.base_digest},
                         {"mode", checkpoint.mode}};
  json["devices"] = nlohmann::json::array();
  for (const DeviceFacts& f : state.devices) {
    nlohmann::json d = FactsToJson(f);
    auto seconds = state.expected_seconds.find(f.device_id);
    d["expected_seconds"] =
        seconds == state.expected_seconds.end() ? -1.0 : seconds->second;
    if (auto times = state.time_models.find(f.device_id);
        times != state.time_models.end()) {
      const strategies::TimeModelState& t = times->second;
      d["time_model"] = {{"observations", t.observations},
                         {"work_s", t.work_s},
                         {"byte_s", t.byte_s},
                         {"other_s", t.other_s}};
    }
    json["devices"].push_back(std::move(d));
  }
  json["plays"] = nlohmann::json::array();
  for (const BanditPlay& p : state.plays) {
    json["plays"].push_back({{"device_id", p.device_id},
                             {"prune_ratio", p.arm.prune_ratio},
                             {"rank", p.arm.rank},
                             {"reward", p.reward}});
  }
  if (!state.privacy.rdp.empty()) {
    json["privacy"] = {{"clip_norm", state.privacy.clip_norm},
                       {"rdp", state.privacy.rdp}};
  }
  // nlohmann writes doubles with round-trip precision, so replayed rewards
  // and the accountant are bit-identical.
  // A coordinator killed mid-write leaves its temporary file (named after
  // its process id); the checkpoint itself is intact (atomic rename).
  const std::string stale =
      std::filesystem::path(CheckpointPath(dir)).filename().string() + ".tmp.";
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (absl::StartsWith(entry.path().filename().string(), stale)) {
      std::filesystem::remove(entry.path(), error);
    }
  }
  absl::Status status = model::WriteSafetensors(
      CheckpointPath(dir), state.global, {{kMetadataKey, json.dump()}});
  if (status.ok()) SyncDirectory(dir);
  return status;
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir) {
  const std::string path = CheckpointPath(dir);
  absl::StatusOr<model::SafetensorsFile> file = model::ReadSafetensors(path);
  if (!file.ok()) {
    if (absl::IsNotFound(file.status())) return file.status();
    return absl::DataLossError(absl::StrCat(
        "checkpoint ", path, " is unreadable: ", file.status().message()));
  }
  auto meta = file->metadata.find(kMetadataKey);
  if (meta == file->metadata.end()) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a fedge coordinator checkpoint"));
  }
  absl::StatusOr<nlohmann::json> json =
      model::ParseJsonObject(meta->second, path);
  if (!json.ok()) return absl::DataLossError(json.status().message());
  model::JsonReader r(*json, path);
  Checkpoint checkpoint;
  if (r.Int("version") != kVersion) {
    return absl::DataLossError(
        absl::StrCat(path, ": unsupported checkpoint version"));
  }
  checkpoint.state.next_round = r.Int("next_round");
  checkpoint.base_digest = r.String("base_digest");
  checkpoint.mode = r.String("mode");
  for (model::JsonReader& d : r.Objects("devices")) {
    DeviceFacts f = FactsFromJson(d);
    checkpoint.state.expected_seconds[f.device_id] =
        d.Double("expected_seconds");
    // Checkpoints before the time models have none: rebuilt from the
    // device's next task.
    if (d.Has("time_model")) {
      model::JsonReader t = d.Object("time_model");
      strategies::TimeModelState& times =
          checkpoint.state.time_models[f.device_id];
      times.observations = t.Int("observations");
      times.work_s = t.Double("work_s");
      times.byte_s = t.Double("byte_s");
      times.other_s = t.Double("other_s");
      if (times.observations < 0 || !(times.work_s >= 0) ||
          !(times.byte_s >= 0) || !(times.other_s >= 0) ||
          !std::isfinite(times.work_s + times.byte_s + times.other_s)) {
        return absl::DataLossError(absl::StrCat(
            path, ": device ", f.device_id, " has an impossible time_model"));
      }
    }
    checkpoint.state.devices.push_back(std::move(f));
  }
  for (model::JsonReader& p : r.Objects("plays")) {
    BanditPlay play;
    play.device_id = p.String("device_id");
    play.arm.prune_ratio = p.Double("prune_ratio");
    play.arm.rank = p.Int("rank");
    play.reward = p.Double("reward");
    checkpoint.state.plays.push_back(std::move(play));
  }
  if (r.Has("privacy")) {
    model::JsonReader privacy = r.Object("privacy");
    checkpoint.state.privacy.clip_norm = privacy.Double("clip_norm");
    const nlohmann::json& rdp = (*json)["privacy"]["rdp"];
    if (!rdp.is_array() || rdp.empty()) {
      return absl::DataLossError(
          absl::StrCat(path, ": privacy.rdp is not a non-empty array"));
    }
    for (const nlohmann::json& value : rdp) {
      if (!value.is_number()) {
        return absl::DataLossError(
            absl::StrCat(path, ": privacy.rdp holds a non-number"));
      }
      checkpoint.state.privacy.rdp.push_back(value.get<double>());
    }
  }
  if (!r.status().ok()) return absl::DataLossError(r.status().message());
  checkpoint.state.global = std::move(file->tensors);
  return checkpoint;
}

}  // namespace fedge::coordinator
