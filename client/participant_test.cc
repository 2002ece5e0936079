#include "client/participant.h"

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lora/lora.h"
#include "model/safetensors.h"
#include "pruning/plan.h"
#include "task/spec.h"
#include "tests/testing/tiny_models.h"
#include "transport/sha256.h"
#include "transport/task_proto.h"

namespace fedge::client {
namespace {

using ::testing::HasSubstr;

// A coordinator in memory, scripted by the test: what each RPC answers,
// and which errors it returns first. Records every call.
class FakeCoordinator final : public CoordinatorLink {
 public:
  // Errors returned, in order, before an RPC ("Register", "GetTask",
  // "SubmitUpdate", "DeclineTask", "Download", "Upload") answers normally.
  std::map<std::string, std::deque<absl::Status>> errors;
  std::map<std::string, int> calls;
  // Called on each call, with its RPC's name (a test stops the
  // participant from here).
  std::function<void(const std::string&)> on_call;

  v1::RegisterResponse registration;
  // GetTask answers these in order, then OUT_OF_RANGE (finished).
  std::deque<v1::GetTaskResponse> tasks;
  std::map<std::string, std::string> payloads;  // By transfer id.
  std::map<std::string, std::string> uploads;   // By transfer id.
  std::vector<v1::SubmitUpdateRequest> submitted;

  absl::Status Register(const v1::RegisterRequest&, absl::Time,
                        v1::RegisterResponse* response) override {
    if (absl::Status s = Call("Register"); !s.ok()) return s;
    *response = registration;
    return absl::OkStatus();
  }
  absl::Status GetTask(const v1::GetTaskRequest& request, absl::Time,
                       v1::GetTaskResponse* response) override {
    if (absl::Status s = Call("GetTask"); !s.ok()) return s;
    if (request.session_id() != registration.session_id()) {
      return absl::NotFoundError("unknown session");
    }
    if (tasks.empty()) return absl::OutOfRangeError("federation finished");
    *response = tasks.front();
    tasks.pop_front();
    return absl::OkStatus();
  }
  absl::Status Heartbeat(const v1::HeartbeatRequest&, absl::Time) override {
    ++calls["Heartbeat"];
    return absl::OkStatus();
  }
  absl::Status SubmitUpdate(const v1::SubmitUpdateRequest& request, absl::Time,
                            v1::SubmitUpdateResponse*) override {
    if (absl::Status s = Call("SubmitUpdate"); !s.ok()) return s;
    submitted.push_back(request);
    return absl::OkStatus();
  }
  absl::Status DeclineTask(const v1::DeclineTaskRequest&, absl::Time) override {
    return Call("DeclineTask");
  }
  absl::Status Secure(const v1::SecureRequest&, absl::Time,
                      v1::SecureResponse*) override {
    if (absl::Status s = Call("Secure"); !s.ok()) return s;
    return absl::UnimplementedError("no secure aggregation in this fake");
  }
  absl::StatusOr<transport::TransferStats> Download(
      const std::string&, const std::string& transfer_id, int64_t chunk_bytes,
      transport::ChunkSink* sink) override {
    if (absl::Status s = Call("Download"); !s.ok()) return s;
    auto it = payloads.find(transfer_id);
    if (it == payloads.end()) return absl::NotFoundError(transfer_id);
    const transport::StringSource source(it->second);
    absl::StatusOr<transport::TransferInfo> info =
        transport::DescribePayload(source, transfer_id, source.size(),
                                   transport::PayloadFormat::kSafetensors);
    if (!info.ok()) return info.status();
    sink->Begin(*info);
    if (chunk_bytes == 0) chunk_bytes = 1024;  // The server's default.
    for (int64_t at = 0; at < source.size(); at += chunk_bytes) {
      const absl::string_view chunk =
          absl::string_view(it->second).substr(at, chunk_bytes);
      if (absl::Status s = sink->Write(at, chunk); !s.ok()) return s;
    }
    transport::TransferStats stats;
    stats.bytes = source.size();
    return stats;
  }
  absl::StatusOr<transport::TransferStats> Upload(
      const std::string&, const transport::TransferInfo& info,
      const transport::PayloadSource& source, int64_t) override {
    if (absl::Status s = Call("Upload"); !s.ok()) return s;
    std::string bytes(source.size(), '\0');
    if (absl::Status s = source.Read(0, absl::MakeSpan(bytes)); !s.ok()) {
      return s;
    }
    uploads[info.transfer_id] = bytes;
    transport::TransferStats stats;
    stats.bytes = source.size();
    return stats;
  }
  absl::StatusOr<std::unique_ptr<DeviceSplitLink>> OpenSplit(
      const std::string&, const v1::Task&, absl::Time) override {
    return absl::UnimplementedError("no split in these tests");
  }

 private:
  absl::Status Call(const std::string& rpc) {
    ++calls[rpc];
    if (on_call) on_call(rpc);
    std::deque<absl::Status>& queue = errors[rpc];
    if (queue.empty()) return absl::OkStatus();
    absl::Status status = queue.front();
    queue.pop_front();
    return status;
  }
};

class ParticipantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    model::Vit full = testing::TinyVit(16);
    cache_dir_ =
        ::testing::TempDir() + "/participant_" +
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(cache_dir_);

    const std::string base_path = cache_dir_ + ".base.safetensors";
    ASSERT_TRUE(
        model::WriteSafetensors(base_path, full->named_parameters()).ok());
    std::ifstream in(base_path, std::ios::binary);
    base_bytes_.assign(std::istreambuf_iterator<char>(in), {});
    absl::StatusOr<std::string> digest = transport::Sha256OfFile(base_path);
    ASSERT_TRUE(digest.ok());

    identity_ = task::IdentityOf(task::FashionMnistTask(), nullptr);
    v1::RegisterResponse& r = fake_.registration;
    r.set_session_id("session-1");
    r.set_base_model_digest(transport::ToHex(*digest));
    r.set_base_transfer_id("base");
    r.set_max_chunk_bytes(4096);
    r.set_model_config_json(full->ConfigJson());
    r.set_heartbeat_interval_ms(1000);
    transport::IdentityToProto(identity_, r.mutable_task());
    fake_.payloads["base"] = base_bytes_;

    // Each task: the whole model, rank 2 on q and v, 4 steps of 8.
    plan_ = pruning::FullPlan(*full);
    lora::LoraOptions lora;
    lora.rank = 2;
    lora.alpha = 4;
    lora.target_modules = {"q_proj", "v_proj"};
    ASSERT_TRUE(lora::Inject(*full, lora).ok());
    absl::StatusOr<std::unique_ptr<transport::SafetensorsSource>> adapter =
        transport::SafetensorsSource::Create(lora::ExtractAdapters(*full));
    ASSERT_TRUE(adapter.ok());
    std::string bytes((*adapter)->size(), '\0');
    ASSERT_TRUE((*adapter)->Read(0, absl::MakeSpan(bytes)).ok());
    fake_.payloads["adapter"] = bytes;

    data_.inputs = torch::rand({32, 1, 28, 28});
    data_.targets = torch::randint(0, 10, {32}, torch::kLong);
    data_.num_classes = 10;
  }

  // Round `round`'s task; `nonce` tells a new task from one offered again.
  v1::GetTaskResponse TaskFor(int64_t round, const std::string& nonce) const {
    v1::GetTaskResponse response;
    v1::Task* task = response.mutable_task();
    task->set_round(round);
    task->set_nonce(nonce);
    task->set_adapter_transfer_id("adapter");
    task->set_upload_transfer_id("up-" + nonce);
    task->set_chunk_bytes(4096);
    transport::PlanToProto(plan_, task->mutable_plan());
    task->mutable_lora()->set_rank(2);
    task->mutable_lora()->set_alpha(4);
    task->mutable_lora()->add_target_modules("q_proj");
    task->mutable_lora()->add_target_modules("v_proj");
    v1::TrainConfig* train = task->mutable_train();
    train->set_epochs(1);
    train->set_max_steps(4);
    train->set_batch_size(8);
    train->set_learning_rate(1e-2);
    train->set_seed(5);
    return response;
  }

  ParticipantOptions Options() const {
    ParticipantOptions options;
    options.device_id = "pi-0";
    options.task = identity_;
    options.cache_dir = cache_dir_;
    options.run_benchmark = false;
    options.progress = ParticipantOptions::Progress::kNone;
    options.initial_backoff = absl::Milliseconds(1);
    options.max_backoff = absl::Milliseconds(4);
    options.give_up_after = absl::Seconds(30);
    return options;
  }

  FakeCoordinator fake_;
  std::string cache_dir_;
  std::string base_bytes_;
  task::TaskIdentity identity_;
  pruning::PruningPlan plan_;
  model::Dataset data_;
};

TEST_F(ParticipantTest, TransientErrorsAreRetriedUntilTheCallSucceeds) {
  fake_.errors["Register"] = {absl::UnavailableError("down"),
                              absl::DeadlineExceededError("slow"),
                              absl::ResourceExhaustedError("busy")};
  Participant participant(Options(), &fake_, data_);

  const absl::Status status = participant.Run();

  EXPECT_TRUE(status.ok()) << status;  // No task: the federation finished.
  EXPECT_EQ(fake_.calls["Register"], 4);
  EXPECT_EQ(fake_.calls["GetTask"], 1);
}

TEST_F(ParticipantTest, GivesUpNamingTheCallWhenTheCoordinatorStaysAway) {
  fake_.errors["Register"].assign(1000, absl::UnavailableError("down"));
  ParticipantOptions options = Options();
  options.give_up_after = absl::Milliseconds(20);
  Participant participant(options, &fake_, data_);

  const absl::Status status = participant.Run();

  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("Register: coordinator unreachable"));
  EXPECT_THAT(status.message(), HasSubstr("down"));
  EXPECT_GT(fake_.calls["Register"], 1);
  EXPECT_EQ(fake_.calls["Download"], 0);
}

TEST_F(ParticipantTest, ErrorsThatWillNotPassAreNotRetried) {
  fake_.errors["Register"] = {absl::PermissionDeniedError("not enrolled")};
  Participant participant(Options(), &fake_, data_);

  const absl::Status status = participant.Run();

  EXPECT_TRUE(absl::IsPermissionDenied(status)) << status;
  EXPECT_EQ(fake_.calls["Register"], 1);
}

TEST_F(ParticipantTest, RefusesACoordinatorRunningAnotherTask) {
  task::TaskIdentity other = identity_;
  other.name = "someone-elses-task";
  transport::IdentityToProto(other, fake_.registration.mutable_task());
  fake_.tasks.push_back(TaskFor(1, "n1"));
  Participant participant(Options(), &fake_, data_);

  const absl::Status status = participant.Run();

  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("someone-elses-task"));
  EXPECT_EQ(fake_.calls["Download"], 0);  // Not even the base model.
  EXPECT_EQ(fake_.calls["GetTask"], 0);
}

TEST_F(ParticipantTest, TrainsUploadsAndSubmitsEachTaskOnce) {
  fake_.tasks = {TaskFor(1, "n1"), TaskFor(1, "n1"), TaskFor(2, "n2")};
  Participant participant(Options(), &fake_, data_);
  std::vector<RoundReport> reports;
  participant.on_round = [&](const RoundReport& r) { reports.push_back(r); };

  ASSERT_TRUE(participant.Run().ok());

  // The task offered twice (same nonce) is done once.
  ASSERT_EQ(fake_.submitted.size(), 2u);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(fake_.calls["Download"], 1 + 2);  // The base once, two adapters.
  for (int i = 0; i < 2; ++i) {
    const v1::UpdateReport& r = fake_.submitted[i].report();
    EXPECT_EQ(r.round(), i + 1);
    EXPECT_EQ(r.device_id(), "pi-0");
    EXPECT_EQ(r.num_examples(), 32);
    EXPECT_EQ(r.upload_transfer_id(), "up-n" + std::to_string(i + 1));
    ASSERT_TRUE(fake_.uploads.count(r.upload_transfer_id()));
    EXPECT_EQ(
        r.timings().bytes_up(),
        static_cast<int64_t>(fake_.uploads.at(r.upload_transfer_id()).size()));
    EXPECT_TRUE(reports[i].accepted);
  }
}

TEST_F(ParticipantTest, ASubmitWhoseAnswerWasLostCountsAsAccepted) {
  fake_.tasks = {TaskFor(1, "n1")};
  fake_.errors["SubmitUpdate"] = {absl::UnavailableError("link cut"),
                                  absl::AlreadyExistsError("have it")};
  Participant participant(Options(), &fake_, data_);
  int rounds = 0;
  participant.on_round = [&](const RoundReport& r) {
    ++rounds;
    EXPECT_TRUE(r.accepted);
  };

  ASSERT_TRUE(participant.Run().ok());

  EXPECT_EQ(fake_.calls["SubmitUpdate"], 2);
  EXPECT_EQ(rounds, 1);
  EXPECT_EQ(fake_.calls["Upload"], 1);  // The update is not sent again.
}

TEST_F(ParticipantTest, AFailedRoundIsAbandonedAndTheNextTaskRuns) {
  fake_.tasks = {TaskFor(1, "n1"), TaskFor(2, "n2")};
  // The base downloads; the first adapter fails for good.
  fake_.errors["Download"] = {absl::OkStatus(),
                              absl::DataLossError("digest mismatch")};
  Participant participant(Options(), &fake_, data_);

  ASSERT_TRUE(participant.Run().ok());

  ASSERT_EQ(fake_.submitted.size(), 1u);
  EXPECT_EQ(fake_.submitted[0].report().round(), 2);
}

TEST_F(ParticipantTest, AForgottenDeviceRegistersAgain) {
  fake_.tasks = {TaskFor(1, "n1")};
  fake_.errors["GetTask"] = {absl::NotFoundError("unknown device")};
  Participant participant(Options(), &fake_, data_);

  ASSERT_TRUE(participant.Run().ok());

  EXPECT_EQ(fake_.calls["Register"], 2);
  EXPECT_EQ(fake_.submitted.size(), 1u);
  EXPECT_EQ(fake_.calls["Download"], 1 + 1);  // The cached base is kept.
}

TEST_F(ParticipantTest, TheBaseModelIsCachedAndARottenCopyFetchedAgain) {
  {
    Participant first(Options(), &fake_, data_);
    ASSERT_TRUE(first.Run().ok());
  }
  EXPECT_EQ(fake_.calls["Download"], 1);
  const std::string cached = cache_dir_ + "/base-" +
                             fake_.registration.base_model_digest() +
                             ".safetensors";
  ASSERT_TRUE(std::filesystem::exists(cached));
  {
    Participant second(Options(), &fake_, data_);  // A restart.
    ASSERT_TRUE(second.Run().ok());
  }
  EXPECT_EQ(fake_.calls["Download"], 1);  // Read from the cache.

  {
    std::fstream file(cached, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(base_bytes_.size() / 2));
    file.write("rot", 3);
  }
  Participant third(Options(), &fake_, data_);
  ASSERT_TRUE(third.Run().ok());
  EXPECT_EQ(fake_.calls["Download"], 2);
  std::ifstream in(cached, std::ios::binary);
  const std::string now((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(now, base_bytes_);
}

TEST_F(ParticipantTest, StopDuringBackOffReturnsCancelled) {
  fake_.errors["Register"].assign(1000, absl::UnavailableError("down"));
  ParticipantOptions options = Options();
  options.initial_backoff = options.max_backoff = absl::Seconds(10);
  Participant participant(options, &fake_, data_);
  fake_.on_call = [&](const std::string&) { participant.Stop(); };

  const absl::Status status = participant.Run();

  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_EQ(fake_.calls["Register"], 1);
}

}  // namespace
}  // namespace fedge::client
