#include "coordinator/device_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include <glog/logging.h>

namespace fedge::coordinator {

DeviceRegistry::DeviceRegistry(const EngineOptions* options,
                               const strategies::WorkShares& shares)
    : options_(*options), shares_(shares) {}

Device DeviceRegistry::NewDevice(const std::string& id) const {
  Device device;
  absl::StatusOr<std::unique_ptr<strategies::Bandit>> bandit =
      strategies::CreateBandit(BanditFor(options_, id));
  CHECK(bandit.ok()) << bandit.status();  // Checked by Engine::Create.
  device.bandit = *std::move(bandit);
  device.times = strategies::DeviceTimeModel(shares_);
  return device;
}

absl::Status DeviceRegistry::Register(
    const DeviceFacts& facts, absl::Time now,
    const std::function<bool(const std::string&)>& busy) {
  if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) return s;
  if (!options_.allow_list.empty() &&
      options_.allow_list.count(facts.device_id) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("device ", facts.device_id, " is not on the allow-list"));
  }
  auto it = devices_.find(facts.device_id);
  if (it == devices_.end()) {
    if (size() >= options_.max_devices && !EvictOneSilent(now, busy)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("registry full (", options_.max_devices, " devices)"));
    }
    it = devices_.emplace(facts.device_id, NewDevice(facts.device_id)).first;
  }
  it->second.facts = facts;
  it->second.last_seen = now;
  it->second.polled = false;
  return absl::OkStatus();
}

bool DeviceRegistry::EvictOneSilent(
    absl::Time now, const std::function<bool(const std::string&)>& busy) {
  auto victim = devices_.end();
  for (auto it = devices_.begin(); it != devices_.end(); ++it) {
    if (it->second.polled ||
        now - it->second.last_seen <= options_.heartbeat_timeout ||
        busy(it->first)) {
      continue;
    }
    if (victim == devices_.end() ||
        it->second.last_seen < victim->second.last_seen) {
      victim = it;
    }
  }
  if (victim == devices_.end()) return false;
  LOG(INFO) << "registry full: forgetting device " << victim->first
            << ", which never asked for work";
  devices_.erase(victim);
  return true;
}

absl::StatusOr<Device*> DeviceRegistry::Touch(const std::string& id,
                                              absl::Time now) {
  auto device = devices_.find(id);
  if (device == devices_.end()) {
    return absl::NotFoundError(
        absl::StrCat("device ", id, " is not registered"));
  }
  device->second.last_seen = now;
  return &device->second;
}

Device& DeviceRegistry::at(const std::string& id) {
  auto it = devices_.find(id);
  CHECK(it != devices_.end()) << "unknown device " << id;
  return it->second;
}

const Device& DeviceRegistry::at(const std::string& id) const {
  auto it = devices_.find(id);
  CHECK(it != devices_.end()) << "unknown device " << id;
  return it->second;
}

int64_t DeviceRegistry::MostPlays() const {
  int64_t most = 0;
  for (const auto& [id, device] : devices_) {
    most = std::max(most, device.plays);
  }
  return most;
}

void DeviceRegistry::Play(const std::string& id, const strategies::Arm& arm,
                          double reward) {
  Device& device = at(id);
  device.bandit->Update(arm, reward);
  ++device.plays;
  plays_.push_back({id, arm, reward});
}

void DeviceRegistry::Save(EngineState& state) const {
  for (const auto& [id, device] : devices_) {
    state.devices.push_back(device.facts);
    state.expected_seconds[id] = device.expected_seconds;
    state.time_models[id] = device.times.state();
  }
  state.plays = plays_;
}

absl::Status DeviceRegistry::Restore(const EngineState& state) {
  if (!devices_.empty() || !plays_.empty()) {
    return absl::FailedPreconditionError("restore needs an empty registry");
  }
  std::map<std::string, Device> devices;
  for (const DeviceFacts& facts : state.devices) {
    if (absl::Status s = ValidateDeviceFacts(facts); !s.ok()) return s;
    Device device = NewDevice(facts.device_id);
    device.facts = facts;
    if (auto times = state.time_models.find(facts.device_id);
        times != state.time_models.end()) {
      device.times.Restore(times->second);
    }
    if (auto seconds = state.expected_seconds.find(facts.device_id);
        seconds != state.expected_seconds.end()) {
      device.expected_seconds = seconds->second;
    }
    devices[facts.device_id] = std::move(device);
  }
  for (const BanditPlay& play : state.plays) {
    auto device = devices.find(play.device_id);
    if (device == devices.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint: bandit play of unknown device ", play.device_id));
    }
    device->second.bandit->Update(play.arm, play.reward);
    ++device->second.plays;
  }
  devices_ = std::move(devices);
  plays_ = state.plays;
  return absl::OkStatus();
}

}  // namespace fedge::coordinator
