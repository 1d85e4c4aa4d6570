// ManagedLocalBackend on the shared tiny models: load on demand, cancel while waiting for the
// load, idle unload with totals kept, the memory budget, and start-up errors.
#include "backends/local/lazy_backend.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

using ::testing::HasSubstr;

const std::string kModels = SWITCHYARD_SHARED_MODELS;

class Sink : public ChatSink {
 public:
  void OnDelta(std::string_view text) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    text_ += text;
  }
  void OnDone(const absl::Status& status, const Completion& completion) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    done_ = true;
    status_ = status;
  }
  bool WaitDone() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), absl::Seconds(60));
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  std::string text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::string text_ ABSL_GUARDED_BY(mu_);
};

ManagedLocalOptions Options(const std::string& model, bool at_start) {
  ManagedLocalOptions options;
  options.model = model;
  options.folders = {kModels};
  options.engine.n_threads = 1;
  options.engine.n_slots = 1;
  options.engine.n_ctx = 256;
  options.load_at_start = at_start;
  return options;
}

ChatRequest Request(int max_tokens) {
  ChatRequest request;
  request.messages = {{"user", "Once upon a time"}};
  request.max_tokens = max_tokens;
  request.temperature = 0;
  return request;
}

bool WaitForState(const ManagedLocalBackend& backend, ModelState state) {
  for (int i = 0; i < 300; ++i) {
    if (backend.status().state == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(ManagedLocalBackendTest, LoadsOnFirstRequestAndUnloadsWhenIdle) {
  ManagedLocalOptions options = Options("stories260K.gguf", /*at_start=*/false);
  // Long enough that the model cannot idle out between the answer and the check that it is
  // loaded, however slowly a busy machine runs the test.
  options.idle_unload = std::chrono::milliseconds(2000);
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> backend =
      ManagedLocalBackend::Create(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->status().state, ModelState::kUnloaded);
  EXPECT_TRUE((*backend)->status().ready);
  EXPECT_EQ((*backend)->CountTokens({{"user", "hi"}}), std::nullopt);

  auto first = std::make_shared<Sink>();
  std::unique_ptr<Call> call = (*backend)->Start(Request(8), first);
  ASSERT_TRUE(first->WaitDone());
  ASSERT_TRUE(first->status().ok()) << first->status();
  EXPECT_EQ((*backend)->status().state, ModelState::kLoaded);
  const int64_t tokens = (*backend)->Stats().tokens_completion_total;
  EXPECT_GE(tokens, 1);

  ASSERT_TRUE(WaitForState(**backend, ModelState::kUnloaded));
  EXPECT_EQ((*backend)->Stats().model_size_bytes, 0u);
  EXPECT_EQ((*backend)->Stats().tokens_completion_total, tokens);

  // Loads again, and greedy decoding gives the same text as before.
  auto second = std::make_shared<Sink>();
  call = (*backend)->Start(Request(8), second);
  ASSERT_TRUE(second->WaitDone());
  EXPECT_EQ(second->text(), first->text());
  EXPECT_EQ((*backend)->Stats().tokens_completion_total, 2 * tokens);
}

TEST(ManagedLocalBackendTest, CancelWhileWaitingForTheLoadCallsNothing) {
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> backend =
      ManagedLocalBackend::Create(Options("stories260K.gguf", /*at_start=*/false));
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto cancelled = std::make_shared<Sink>();
  std::unique_ptr<Call> call = (*backend)->Start(Request(32), cancelled);
  call->Cancel();
  auto next = std::make_shared<Sink>();
  std::unique_ptr<Call> next_call = (*backend)->Start(Request(4), next);
  ASSERT_TRUE(next->WaitDone());
  EXPECT_TRUE(next->status().ok()) << next->status();
  EXPECT_EQ(cancelled->calls(), 0);
  EXPECT_EQ((*backend)->Stats().queue_depth, 0);
}

TEST(ManagedLocalBackendTest, BudgetRefusesAndReleases) {
  auto budget = std::make_shared<MemoryBudget>(2'000'000);
  ManagedLocalOptions stories = Options("stories260K.gguf", /*at_start=*/true);
  stories.budget = budget;
  // The first model must still hold its bytes while the second is refused: an idle timeout of
  // 200 ms ran out under a busy machine's delays (a flake seen once), so it is 2 s.
  stories.idle_unload = std::chrono::milliseconds(2000);
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> first =
      ManagedLocalBackend::Create(stories);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(budget->used(), 1185376u);

  // A start-up model over the budget is not a start-up error: it reports kFailed.
  ManagedLocalOptions tiny = Options("llama-2-tiny-random.gguf", /*at_start=*/true);
  tiny.budget = budget;
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> second = ManagedLocalBackend::Create(tiny);
  ASSERT_TRUE(second.ok()) << second.status();
  const ModelStatus status = (*second)->status();
  EXPECT_EQ(status.state, ModelState::kFailed);
  EXPECT_FALSE(status.ready);
  EXPECT_THAT(status.error, HasSubstr("does not fit in the local model memory budget"));

  auto refused = std::make_shared<Sink>();
  std::unique_ptr<Call> call = (*second)->Start(Request(4), refused);
  ASSERT_TRUE(refused->WaitDone());
  EXPECT_EQ(refused->status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(refused->status().message(), HasSubstr("llama-2-tiny-random.gguf"));

  // Once the first model idles out, its bytes are free and the second loads.
  ASSERT_TRUE(WaitForState(**first, ModelState::kUnloaded));
  EXPECT_EQ(budget->used(), 0u);
  auto served = std::make_shared<Sink>();
  call = (*second)->Start(Request(4), served);
  ASSERT_TRUE(served->WaitDone());
  EXPECT_TRUE(served->status().ok()) << served->status();
  EXPECT_EQ(budget->used(), 1750560u);
  EXPECT_TRUE((*second)->status().ready);
}

TEST(ManagedLocalBackendTest, MissingOrBrokenStartupModelIsAnError) {
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> missing =
      ManagedLocalBackend::Create(Options("no-such-model.gguf", /*at_start=*/true));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  // On demand, the same file is an error for the request only.
  absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> lazy =
      ManagedLocalBackend::Create(Options("no-such-model.gguf", /*at_start=*/false));
  ASSERT_TRUE(lazy.ok()) << lazy.status();
  auto sink = std::make_shared<Sink>();
  std::unique_ptr<Call> call = (*lazy)->Start(Request(4), sink);
  ASSERT_TRUE(sink->WaitDone());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(sink->status().message(), HasSubstr("no-such-model.gguf"));
  EXPECT_EQ((*lazy)->status().state, ModelState::kFailed);
}

}  // namespace
}  // namespace switchyard::backends
