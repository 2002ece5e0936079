#include "split/client.h"

#include <functional>
#include <map>
#include <string>

#include "glog/logging.h"
#include "gtest/gtest.h"
#include <torch/types.h>

#include "split/server.h"
#include "tests/testing/tiny_models.h"

namespace fedge::split {
namespace {

using Grads = std::map<std::string, at::Tensor>;

void Capture(const torch::nn::Module& module, Grads* out) {
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().grad().defined()) {
      (*out)[item.key()] = item.value().grad().clone();
    }
  }
}

model::Dataset RandomData(int64_t n) {
  model::Dataset data;
  data.inputs = torch::randn({n, 1, 28, 28});
  data.targets = torch::randint(0, 10, {n}, torch::kLong);
  return data;
}

model::Vit Clone(const model::Vit& source) {
  model::Vit copy = testing::TinyVit(64);
  CHECK(model::LoadWeights(*copy, model::CopyWeights(*source)).ok());
  return copy;
}

model::TrainOptions Options() {
  model::TrainOptions o;
  o.batch_size = 8;
  o.max_grad_norm = 0;  // Clipping is per side in split training.
  o.schedule = model::LrSchedule::kConstant;
  o.warmup_fraction = 0;
  return o;
}

// Calls the server directly; fails (as a dropped connection would) from
// step `fail_at` on, either before the request reaches the server or after
// the server took it and the reply was lost.
class DirectLink : public SplitLink {
 public:
  explicit DirectLink(SplitServer* server) : server_(server) {}
  int64_t fail_at = 0;
  bool reply_lost = false;
  absl::StatusOr<StepReply> Step(const StepRequest& request) override {
    if (fail_at > 0 && request.step >= fail_at) {
      if (reply_lost) (void)server_->Step(request);
      dropped_ = true;
      return absl::UnavailableError("connection dropped");
    }
    return server_->Step(request);
  }
  absl::Status Finish(int64_t applied) override {
    if (dropped_) return absl::UnavailableError("connection dropped");
    return server_->Settle(applied);
  }

 private:
  SplitServer* server_;
  bool dropped_ = false;
};

void ExpectSameWeights(const torch::nn::Module& a, const torch::nn::Module& b,
                       const std::function<bool(const std::string&)>& which) {
  const model::NamedTensors wb = model::CopyWeights(b);
  int compared = 0;
  for (const auto& item : model::CopyWeights(a)) {
    if (!which(item.key())) continue;
    EXPECT_TRUE(torch::allclose(item.value(), wb[item.key()], 1e-5, 1e-6))
        << item.key();
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

TEST(TrainSplitTest, GradientsAndStepsEqualTheUnsplitModels) {
  for (int64_t cut : {1, 2}) {
    torch::manual_seed(7);
    const model::Vit whole = testing::TinyVit(64);
    const model::Vit device = Clone(whole);
    const model::Vit server_side = Clone(whole);
    const model::Dataset data = RandomData(24);

    Grads unsplit;
    model::TrainOptions options = Options();
    options.max_steps = 1;
    options.after_backward = [&] { Capture(*whole, &unsplit); };
    ASSERT_TRUE(model::Train(*whole, data, options).ok());

    Grads split;
    model::TrainOptions server_options = options;
    server_options.after_backward = [&] { Capture(*server_side, &split); };
    absl::StatusOr<std::unique_ptr<SplitServer>> server =
        SplitServer::Create(server_side, cut, server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    DirectLink link(server->get());
    options.after_backward = [&] { Capture(*device, &split); };
    SplitOptions split_options;
    split_options.cut = cut;
    absl::StatusOr<SplitResult> result =
        TrainSplit(*device, data, options, split_options, link);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->split_steps, 1);

    // Every parameter got the whole model's gradient on its side of the cut.
    ASSERT_EQ(split.size(), unsplit.size());
    for (const auto& [name, grad] : unsplit) {
      ASSERT_TRUE(split.count(name)) << name;
      EXPECT_TRUE(torch::allclose(split[name], grad, 1e-5, 1e-6))
          << "cut " << cut << ": " << name << " max diff "
          << (split[name] - grad).abs().max().item<double>();
    }
    // And each side stepped exactly as the whole model did.
    ExpectSameWeights(*device, *whole, [&](const std::string& n) {
      return whole->InHead(n, cut);
    });
    ExpectSameWeights(*server_side, *whole, [&](const std::string& n) {
      return !whole->InHead(n, cut);
    });
  }
}

TEST(TrainSplitTest, ADroppedLinkLeavesBothSidesAtTheSameStep) {
  const int64_t cut = 1;
  for (bool reply_lost : {false, true}) {
    torch::manual_seed(11);
    const model::Vit start = testing::TinyVit(64);
    const model::Dataset data = RandomData(40);  // 5 steps of 8.

    // Reference: two clean steps.
    const model::Vit ref_device = Clone(start);
    const model::Vit ref_server_model = Clone(start);
    model::TrainOptions options = Options();
    options.max_steps = 2;
    auto ref_server = SplitServer::Create(ref_server_model, cut, options);
    ASSERT_TRUE(ref_server.ok());
    DirectLink ref_link(ref_server->get());
    ASSERT_TRUE(
        TrainSplit(*ref_device, data, options, {cut, 0, 1.0}, ref_link).ok());
    ASSERT_EQ((*ref_server)->applied_steps(), 2);

    // The same run, but the connection drops at step 3 of 5.
    const model::Vit device = Clone(start);
    const model::Vit server_model = Clone(start);
    options.max_steps = 0;
    auto server = SplitServer::Create(server_model, cut, options);
    ASSERT_TRUE(server.ok());
    DirectLink link(server->get());
    link.fail_at = 3;
    link.reply_lost = reply_lost;
    absl::StatusOr<SplitResult> result =
        TrainSplit(*device, data, options, {cut, 0, 1.0}, link);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
    // The server applies a step only when told the device applied it: it
    // holds step 2 pending (the drop came before step 3 told it), or, if
    // step 3 reached it, has applied 2 and holds step 3 pending.
    EXPECT_EQ((*server)->applied_steps(), reply_lost ? 2 : 1);
    EXPECT_TRUE((*server)->has_pending());
    // The device reports (on reconnecting or with its update) two applied
    // steps: the server drops what is pending.
    ASSERT_TRUE((*server)->Settle(2).ok());
    ExpectSameWeights(*device, *ref_device, [&](const std::string& n) {
      return start->InHead(n, cut);
    });
    ExpectSameWeights(
        *server_model, *ref_server_model,
        [&](const std::string& n) { return !start->InHead(n, cut); });
  }
}

TEST(TrainSplitTest, LocalLossAndPruningCutTheExchanges) {
  torch::manual_seed(5);
  const model::Vit device = testing::TinyVit(64);
  const model::Vit server_model = Clone(device);
  const model::Dataset data = RandomData(64);
  model::TrainOptions options = Options();
  auto server = SplitServer::Create(server_model, 1, options);
  ASSERT_TRUE(server.ok());
  DirectLink link(server->get());
  SplitOptions split;
  split.cut = 1;
  split.local_loss_steps = 4;
  split.keep_fraction = 0.5;
  absl::StatusOr<SplitResult> result =
      TrainSplit(*device, data, options, split, link);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->local_steps, 4);
  EXPECT_EQ(result->kept_examples, 32);
  EXPECT_EQ(result->split_steps, 4);  // 32 kept samples in batches of 8.
  EXPECT_EQ((*server)->applied_steps(), 4);
}

TEST(TrainSplitTest, RejectsBadOptionsAndReplies) {
  const model::Vit device = testing::TinyVit(64);
  const model::Dataset data = RandomData(16);
  struct BadLink : SplitLink {
    absl::StatusOr<StepReply> Step(const StepRequest& r) override {
      StepReply reply;
      reply.gradients = torch::zeros_like(r.activations);
      reply.gradients[0][0][0] = NAN;
      return reply;
    }
    absl::Status Finish(int64_t applied) override {
      finished = applied;
      return absl::OkStatus();
    }
    int64_t finished = -1;
  } bad;
  SplitOptions split;
  split.keep_fraction = 0.5;  // Without local-loss steps.
  EXPECT_EQ(TrainSplit(*device, data, Options(), split, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  split = SplitOptions{};
  split.cut = 3;
  EXPECT_EQ(TrainSplit(*device, data, Options(), split, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  split.cut = 1;
  EXPECT_EQ(TrainSplit(*device, data, Options(), split, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.finished, 0);  // Told the server nothing was applied.
}

TEST(TrainingFlopsTest, SplitsTheBlocksCompute) {
  const model::Vit vit = testing::TinyVit(64);
  const double all = TrainingFlops(*vit, 8, 17, 0, 2);
  EXPECT_NEAR(TrainingFlops(*vit, 8, 17, 0, 1), all / 2, 1e-6 * all);
  // One block: q,k,v,o 32x32 and the MLP 2 x 32x64 per token, plus 2 T^2 d.
  const double macs = 17 * (4 * 32 * 32 + 2 * 32 * 64) + 2.0 * 17 * 17 * 32;
  EXPECT_DOUBLE_EQ(TrainingFlops(*vit, 8, 17, 0, 1), 6 * macs * 8);
}

}  // namespace
}  // namespace fedge::split
