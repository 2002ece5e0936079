#include "transport/task_proto.h"

namespace fedge::transport {

CodecOptions UploadCodecOptions(const v1::Task& task) {
  CodecOptions codec;
  codec.codec = CodecFromProto(task.upload_codec());
  codec.zstd = task.upload_compression() == v1::COMPRESSION_ZSTD;
  codec.topk_fraction = task.topk_fraction() > 0 ? task.topk_fraction() : 0.01;
  return codec;
}

pruning::PruningPlan PlanFromProto(const v1::PruningPlan& proto) {
  pruning::PruningPlan plan;
  for (const v1::BlockPlan& b : proto.blocks()) {
    plan.blocks.push_back({{b.heads().begin(), b.heads().end()},
                           {b.kv_heads().begin(), b.kv_heads().end()},
                           {b.channels().begin(), b.channels().end()}});
  }
  return plan;
}

void PlanToProto(const pruning::PruningPlan& plan, v1::PruningPlan* proto) {
  proto->Clear();
  for (const pruning::BlockPlan& b : plan.blocks) {
    v1::BlockPlan* out = proto->add_blocks();
    out->mutable_heads()->Add(b.heads.begin(), b.heads.end());
    out->mutable_kv_heads()->Add(b.kv_heads.begin(), b.kv_heads.end());
    out->mutable_channels()->Add(b.channels.begin(), b.channels.end());
  }
}

std::string LinkName(v1::LinkType link) {
  switch (link) {
    case v1::LINK_TYPE_ETHERNET:
      return "ethernet";
    case v1::LINK_TYPE_WIFI:
      return "wifi";
    case v1::LINK_TYPE_LTE:
      return "lte";
    case v1::LINK_TYPE_5G_SA:
      return "5g-sa";
    default:
      return "";
  }
}

v1::LinkType ParseLinkType(absl::string_view name) {
  for (v1::LinkType t : {v1::LINK_TYPE_ETHERNET, v1::LINK_TYPE_WIFI,
                         v1::LINK_TYPE_LTE, v1::LINK_TYPE_5G_SA}) {
    if (LinkName(t) == name) return t;
  }
  return v1::LINK_TYPE_UNSPECIFIED;
}

task::TaskIdentity IdentityFromProto(const v1::TaskIdentity& proto) {
  task::TaskIdentity identity;
  identity.name = proto.name();
  identity.objective = proto.objective();
  identity.tokenizer_digest = proto.tokenizer_digest();
  identity.sequence_length = proto.sequence_length();
  return identity;
}

void IdentityToProto(const task::TaskIdentity& identity,
                     v1::TaskIdentity* proto) {
  proto->set_name(identity.name);
  proto->set_objective(identity.objective);
  proto->set_tokenizer_digest(identity.tokenizer_digest);
  proto->set_sequence_length(identity.sequence_length);
}

}  // namespace fedge::transport
