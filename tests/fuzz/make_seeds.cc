// Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/)
// from fedge's own encoders, so every seed is a valid input to start
// mutating from. Run after a format change:
//   build/dev/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/types.h>

#include "model/llama.h"
#include "model/safetensors.h"
#include "model/vit.h"
#include "transport/split_proto.h"
#include "transport/task_proto.h"
#include "transport/tensor_proto.h"
#include "transport/update_codec.h"

namespace {

namespace fm = fedge::model;
namespace ft = fedge::transport;

void Write(const std::string& dir, const std::string& name,
           const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

fm::NamedTensors Tensors() {
  torch::manual_seed(1);
  fm::NamedTensors t;
  t.insert("layers.0.self_attn.q_proj.adapter.lora_A", torch::randn({2, 8}));
  t.insert("layers.0.self_attn.q_proj.adapter.lora_B", torch::randn({8, 2}));
  t.insert("bias", torch::randn({3}));
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  const fm::NamedTensors tensors = Tensors();

  const std::string st = *fm::SerializeSafetensors(tensors);
  Write(root + "/safetensors", "three_tensors", st);
  Write(root + "/chunks", "three_tensors_chunk7", std::string(1, '\x06') + st);
  Write(root + "/chunks", "three_tensors_chunk64", std::string(1, '\x3f') + st);

  for (ft::Codec codec :
       {ft::Codec::kFloat32, ft::Codec::kFloat16, ft::Codec::kBFloat16,
        ft::Codec::kInt8Row, ft::Codec::kTopK}) {
    for (bool zstd : {false, true}) {
      ft::CodecOptions options;
      options.codec = codec;
      options.zstd = zstd;
      options.topk_fraction = 0.25;
      Write(root + "/update_codec",
            std::string(ft::CodecName(codec)) + (zstd ? "_zstd" : ""),
            ft::EncodeUpdate(tensors, options)->bytes);
    }
  }

  fedge::v1::NamedTensors proto;
  (void)ft::ToProto(tensors, &proto);
  Write(root + "/tensor_proto", "named_tensors",
        std::string(1, '\0') + proto.SerializeAsString());
  fedge::split::StepRequest step;
  step.step = 2;
  step.applied_steps = 1;
  step.total_steps = 4;
  step.activations = torch::randn({2, 3, 4});
  step.targets = torch::tensor({1, 0}, torch::kLong);
  for (ft::Codec codec : {ft::Codec::kFloat16, ft::Codec::kInt8Row}) {
    ft::CodecOptions options;
    options.codec = codec;
    options.zstd = false;
    fedge::v1::SplitMessage message;
    (void)ft::StepRequestToProto(step, options, &message);
    fedge::split::StepReply reply;
    reply.gradients = step.activations;
    (void)ft::StepReplyToProto(reply, options, &message);
    Write(root + "/tensor_proto",
          std::string("split_step_") + ft::CodecName(codec),
          std::string(1, '\1') + message.SerializeAsString());
  }
  fedge::v1::Task task;
  task.set_round(3);
  fedge::pruning::PruningPlan plan;
  plan.blocks.resize(2);
  plan.blocks[0].heads = {0, 2};
  plan.blocks[0].kv_heads = {0, 2};
  plan.blocks[0].channels = {1, 5, 9};
  plan.blocks[1].heads = {1};
  plan.blocks[1].kv_heads = {1};
  plan.blocks[1].channels = {0};
  ft::PlanToProto(plan, task.mutable_plan());
  task.mutable_split()->set_cut_layer(1);
  task.mutable_split()->set_activation_codec(fedge::v1::CODEC_INT8_ROW);
  Write(root + "/tensor_proto", "task",
        std::string(1, '\2') + task.SerializeAsString());

  Write(root + "/config", "vit", fm::VitConfigToJson(fm::VitConfig()));
  fm::LlamaConfig llama;
  llama.layers = {{4, 2, 32}, {4, 2, 16}};
  Write(root + "/config", "llama", fm::LlamaConfigToJson(llama));
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
