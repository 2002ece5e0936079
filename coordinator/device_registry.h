// The devices a coordinator knows: what each reported, its bandit, its
// time model, when it was last heard from, and the log of every reward fed
// to the bandits (a checkpoint replays it to rebuild them).
//
// Not thread-safe: the engine's lock guards the registry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "coordinator/engine_types.h"
#include "strategies/bandit.h"
#include "strategies/time_model.h"

namespace fedge::coordinator {

struct Device {
  DeviceFacts facts;
  std::unique_ptr<strategies::Bandit> bandit;
  absl::Time last_seen;
  bool polled = false;           // Asked for a task since registering.
  double expected_seconds = -1;  // EMA of task-to-submission seconds.
  // Set by the latest registration; empty for a device restored from a
  // checkpoint (it must register again).
  std::string session;
  // How long its tasks take under each arm.
  strategies::DeviceTimeModel times{strategies::WorkShares{1.0, 0.0}};
  int64_t plays = 0;  // Rewards fed to its bandit: its ramp's progress.
};

class DeviceRegistry {
 public:
  // `options` must outlive the registry and hold a valid bandit kind
  // (EngineOptions::Validate and strategies::CreateBandit accepted it).
  // `shares` (of the base's training work) start every device's time
  // model.
  DeviceRegistry(const EngineOptions* options,
                 const strategies::WorkShares& shares);

  // Adds `facts`' device, or refreshes it (it keeps its bandit and
  // history), marked seen at `now` and not yet polled. When the registry is
  // full (EngineOptions::max_devices), forgets the longest-silent device
  // that never asked for work, has been silent past the heartbeat timeout
  // and for which `busy(id)` (in the open round) is false.
  // InvalidArgument for bad facts; PermissionDenied if not on the
  // allow-list; ResourceExhausted if full with no device to forget.
  absl::Status Register(const DeviceFacts& facts, absl::Time now,
                        const std::function<bool(const std::string&)>& busy);

  // The device, marked seen at `now`. NotFound if unknown.
  absl::StatusOr<Device*> Touch(const std::string& id, absl::Time now);

  // A registered device (CHECK-fails for an unknown id: the engine only
  // asks for ids it holds).
  Device& at(const std::string& id);
  const Device& at(const std::string& id) const;
  const std::map<std::string, Device>& devices() const { return devices_; }
  int64_t size() const { return static_cast<int64_t>(devices_.size()); }
  // The most rewards any one device's bandit has had.
  int64_t MostPlays() const;

  // Feeds `reward` for `arm` to the device's bandit and logs the play.
  void Play(const std::string& id, const strategies::Arm& arm, double reward);

  // Writes the devices, their timing estimates and the plays into `state`.
  void Save(EngineState& state) const;
  // Rebuilds the devices and their bandits from `state` into an empty
  // registry. InvalidArgument for bad facts or a play of an unknown
  // device; FailedPrecondition if not empty.
  absl::Status Restore(const EngineState& state);

 private:
  // A device with its bandit (BanditFor its id) and a fresh time model.
  Device NewDevice(const std::string& id) const;
  bool EvictOneSilent(absl::Time now,
                      const std::function<bool(const std::string&)>& busy);

  const EngineOptions& options_;
  const strategies::WorkShares shares_;
  std::map<std::string, Device> devices_;
  std::vector<BanditPlay> plays_;  // Every bandit update, in order.
};

}  // namespace fedge::coordinator
