// Conversions between the task-related protos (fedge/v1/task.proto) and the
// domain types the coordinator and the client both use, so that each
// mapping is written once. Codecs convert in transport/update_codec.h.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

#include "fedge/v1/coordinator_service.pb.h"
#include "fedge/v1/task.pb.h"
#include "pruning/plan.h"
#include "task/task_data.h"
#include "transport/update_codec.h"

namespace fedge::transport {

// How the task wants its update encoded (codec, zstd, top-k share).
CodecOptions UploadCodecOptions(const v1::Task& task);

pruning::PruningPlan PlanFromProto(const v1::PruningPlan& proto);
void PlanToProto(const pruning::PruningPlan& plan, v1::PruningPlan* proto);

// "ethernet", "wifi", "lte", "5g-sa"; "" for LINK_TYPE_UNSPECIFIED.
std::string LinkName(v1::LinkType link);
// The inverse; LINK_TYPE_UNSPECIFIED for an unknown name.
v1::LinkType ParseLinkType(absl::string_view name);

task::TaskIdentity IdentityFromProto(const v1::TaskIdentity& proto);
void IdentityToProto(const task::TaskIdentity& identity,
                     v1::TaskIdentity* proto);

}  // namespace fedge::transport
