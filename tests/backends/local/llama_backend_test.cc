// End-to-end tests of the local engine on the shared tiny models (see shared/models/README.md).
#include "backends/local/llama_backend.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kModels = SWITCHYARD_SHARED_MODELS;
const std::string kStories = kModels + "/stories260K.gguf";
const std::string kRandom = kModels + "/llama-2-tiny-random.gguf";
constexpr char kOnceUponATime[] = "Once upon a time";

// Records everything a request reports; counts calls so tests can check the cancel contract.
class RecordingSink : public ChatSink {
 public:
  void OnDelta(std::string_view text) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    deltas_.emplace_back(text);
    if (cancel_after_deltas_ > 0 && static_cast<int>(deltas_.size()) == cancel_after_deltas_) {
      // The test hands over the call right after Start() returns; wait for it, so the cancel
      // lands exactly here however fast the engine is.
      mu_.Await(absl::Condition(
          +[](Call** call) { return *call != nullptr; }, &call_));
      call_->Cancel();  // re-entrant cancel from inside a sink method
    }
  }
  void OnDone(const absl::Status& status, const Completion& completion) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    ++done_count_;
    status_ = status;
    completion_ = completion;
  }

  // Waits for OnDone; false on timeout.
  bool WaitDone(absl::Duration timeout = absl::Seconds(60)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &RecordingSink::DoneLocked), timeout);
  }
  bool WaitDeltas(size_t n, absl::Duration timeout = absl::Seconds(60)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return deltas_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

  // Cancels the call from inside OnDelta when the n-th delta arrives. Set before Start().
  void CancelAfterDeltas(int n) {
    absl::MutexLock lock(&mu_);
    cancel_after_deltas_ = n;
  }
  void SetCall(Call* call) {
    absl::MutexLock lock(&mu_);
    call_ = call;
  }

  std::string text() const {
    absl::MutexLock lock(&mu_);
    std::string out;
    for (const std::string& d : deltas_) out += d;
    return out;
  }
  std::vector<std::string> deltas() const {
    absl::MutexLock lock(&mu_);
    return deltas_;
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  Completion completion() const {
    absl::MutexLock lock(&mu_);
    return completion_;
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  int done_count() const {
    absl::MutexLock lock(&mu_);
    return done_count_;
  }

 private:
  bool DoneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_count_ > 0; }

  mutable absl::Mutex mu_;
  std::vector<std::string> deltas_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  Completion completion_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int done_count_ ABSL_GUARDED_BY(mu_) = 0;
  int cancel_after_deltas_ ABSL_GUARDED_BY(mu_) = 0;
  Call* call_ ABSL_GUARDED_BY(mu_) = nullptr;
};

ChatRequest UserPrompt(const std::string& text, int32_t max_tokens) {
  ChatRequest request;
  request.request_id = "test";
  request.messages.push_back({"user", text});
  request.max_tokens = max_tokens;
  request.temperature = 0.0f;
  return request;
}

std::unique_ptr<LocalBackend> MakeBackend(const std::string& path, int32_t n_slots = 4,
                                          int32_t n_batch = 512, int32_t n_ctx = 2048) {
  LocalBackendOptions options;
  options.model_path = path;
  // One thread: ggml's threads spin at barriers, which costs far more than it gains on a
  // loaded 2-core CI machine with these tiny models. Results do not depend on it.
  options.n_threads = 1;
  options.n_slots = n_slots;
  options.n_batch = n_batch;
  options.n_ctx = n_ctx;
  absl::StatusOr<std::unique_ptr<LocalBackend>> backend = LocalBackend::Create(options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? *std::move(backend) : nullptr;
}

// Runs one request to completion.
std::shared_ptr<RecordingSink> RunOne(LocalBackend& backend, ChatRequest request) {
  auto sink = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> call = backend.Start(std::move(request), sink);
  EXPECT_TRUE(sink->WaitDone());
  return sink;
}

// An independent strict UTF-8 check (not the engine's own code).
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      n = 1, cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

TEST(LocalBackendTest, GreedyStoryIsTheKnownText) {
  // Default options (2 threads, 4 slots, 2048 context), as the gateway would use them.
  LocalBackendOptions options;
  options.model_path = kStories;
  absl::StatusOr<std::unique_ptr<LocalBackend>> created = LocalBackend::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<LocalBackend> backend = *std::move(created);
  EXPECT_EQ(backend->n_ctx_slot(), 2048);
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, UserPrompt(kOnceUponATime, 60));
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_THAT(kOnceUponATime + sink->text(),
              StartsWith("Once upon a time, there was a little girl named Lily. She loved to play "
                         "outside in the park."));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 5);  // BOS + 4, per the models README

  // Deterministic: the same again, token for token.
  std::shared_ptr<RecordingSink> again = RunOne(*backend, UserPrompt(kOnceUponATime, 60));
  EXPECT_EQ(again->text(), sink->text());
  EXPECT_EQ(again->deltas(), sink->deltas());
}

TEST(LocalBackendTest, MaxTokensEndsWithLengthAndExactCount) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  for (int32_t max_tokens : {1, 7, 30}) {
    std::shared_ptr<RecordingSink> sink = RunOne(*backend, UserPrompt(kOnceUponATime, max_tokens));
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
    EXPECT_EQ(sink->completion().usage.completion_tokens, max_tokens);
    EXPECT_EQ(sink->completion().usage.prompt_tokens, 5);
    // One delta per token (the story text is ASCII and has no stop sequences).
    EXPECT_EQ(static_cast<int32_t>(sink->deltas().size()), max_tokens);
  }
  // The default cap applies when the request has none.
  ChatRequest request = UserPrompt(kOnceUponATime, 1);
  request.max_tokens.reset();
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, request);
  EXPECT_EQ(sink->completion().usage.completion_tokens, LocalBackendOptions().default_max_tokens);
}

TEST(LocalBackendTest, StopSequencesEndTheStreamAndAreNotEmitted) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  ChatRequest request = UserPrompt(kOnceUponATime, 60);
  request.stop = {"Lily", "never appears"};
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->text(), ", there was a little girl named ");
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kStop);
  EXPECT_LT(sink->completion().usage.completion_tokens, 60);

  // A stop sequence that spans several tokens and starts mid-token.
  request.stop = {"ttle gi"};
  sink = RunOne(*backend, request);
  EXPECT_EQ(sink->text(), ", there was a li");
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kStop);
  // Held-back text was a false start: nothing is lost.
  request.stop = {"little boy"};
  request.max_tokens = 15;
  sink = RunOne(*backend, request);
  std::shared_ptr<RecordingSink> plain = RunOne(*backend, UserPrompt(kOnceUponATime, 15));
  EXPECT_EQ(sink->text(), plain->text());
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
}

TEST(LocalBackendTest, ConcurrentRequestsMatchSequentialOnes) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, /*n_slots=*/4);
  ASSERT_NE(backend, nullptr);
  const std::vector<std::string> prompts = {kOnceUponATime, "Tom and his dog", "The sun was",
                                            "One day, a little bird"};
  std::vector<std::string> sequential;
  for (const std::string& p : prompts) sequential.push_back(RunOne(*backend, UserPrompt(p, 40))->text());

  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::unique_ptr<Call>> calls;
  for (const std::string& p : prompts) {
    sinks.push_back(std::make_shared<RecordingSink>());
    calls.push_back(backend->Start(UserPrompt(p, 40), sinks.back()));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone());
    EXPECT_TRUE(sinks[i]->status().ok()) << sinks[i]->status();
    EXPECT_EQ(sinks[i]->text(), sequential[i]) << prompts[i];
    EXPECT_EQ(sinks[i]->completion().usage.completion_tokens, 40);
  }
  // More requests than slots: the extra ones wait their turn and still finish.
  sinks.clear();
  calls.clear();
  for (int i = 0; i < 10; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    calls.push_back(backend->Start(UserPrompt(prompts[i % prompts.size()], 20), sinks.back()));
  }
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone());
    EXPECT_THAT(sequential[i % prompts.size()], StartsWith(sinks[i]->text()));
  }
  const EngineStats stats = backend->Stats();
  EXPECT_EQ(stats.slots_active, 0);
  EXPECT_EQ(stats.queue_depth, 0);
  EXPECT_EQ(stats.slots_total, 4);
}

TEST(LocalBackendTest, CancelFreesTheSlotAndSilencesTheSink) {
  // One slot: the next request can only run if Cancel freed it.
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, /*n_slots=*/1);
  ASSERT_NE(backend, nullptr);
  auto sink = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> call = backend->Start(UserPrompt(kOnceUponATime, 1500), sink);
  ASSERT_TRUE(sink->WaitDeltas(3));
  call->Cancel();
  const int calls_at_cancel = sink->calls();
  call->Cancel();  // idempotent

  std::shared_ptr<RecordingSink> next = RunOne(*backend, UserPrompt(kOnceUponATime, 10));
  EXPECT_TRUE(next->status().ok()) << next->status();
  EXPECT_EQ(next->completion().usage.completion_tokens, 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(sink->calls(), calls_at_cancel);
  EXPECT_EQ(sink->done_count(), 0);
  EXPECT_LT(static_cast<int>(sink->deltas().size()), 1500);
  EXPECT_GE(backend->Stats().requests_cancelled_total, 1);
}

TEST(LocalBackendTest, CancelFromInsideTheSink) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, /*n_slots=*/1);
  ASSERT_NE(backend, nullptr);
  auto sink = std::make_shared<RecordingSink>();
  sink->CancelAfterDeltas(2);
  std::unique_ptr<Call> call = backend->Start(UserPrompt(kOnceUponATime, 500), sink);
  sink->SetCall(call.get());
  std::shared_ptr<RecordingSink> next = RunOne(*backend, UserPrompt(kOnceUponATime, 5));
  EXPECT_TRUE(next->status().ok()) << next->status();
  // Cancelled at the second delta: nothing after it, and no OnDone.
  EXPECT_EQ(sink->deltas().size(), 2u);
  EXPECT_EQ(sink->done_count(), 0);
}

TEST(LocalBackendTest, CancelWhileQueued) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, /*n_slots=*/1);
  ASSERT_NE(backend, nullptr);
  auto busy = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> busy_call = backend->Start(UserPrompt(kOnceUponATime, 300), busy);
  auto queued = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> queued_call = backend->Start(UserPrompt(kOnceUponATime, 300), queued);
  queued_call->Cancel();
  ASSERT_TRUE(busy->WaitDone());
  std::shared_ptr<RecordingSink> next = RunOne(*backend, UserPrompt(kOnceUponATime, 3));
  EXPECT_TRUE(next->status().ok());
  EXPECT_EQ(queued->calls(), 0);
  EXPECT_EQ(backend->Stats().queue_depth, 0);
}

TEST(LocalBackendTest, FullQueueRefusesWithResourceExhausted) {
  LocalBackendOptions options;
  options.model_path = kRandom;
  options.n_threads = 1;
  options.n_slots = 1;
  options.max_queued = 1;
  absl::StatusOr<std::unique_ptr<LocalBackend>> backend = LocalBackend::Create(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    calls.push_back((*backend)->Start(UserPrompt(kOnceUponATime, 100), sinks.back()));
  }
  // One runs, one waits, the third finds the queue full.
  for (auto& sink : sinks) ASSERT_TRUE(sink->WaitDone());
  EXPECT_TRUE(sinks[0]->status().ok()) << sinks[0]->status();
  EXPECT_TRUE(sinks[1]->status().ok()) << sinks[1]->status();
  EXPECT_EQ(sinks[2]->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*backend)->Stats().requests_failed_total, 1);
}

TEST(LocalBackendTest, DeltasAreValidUtf8OnAMultiScriptModel) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kRandom);
  ASSERT_NE(backend, nullptr);
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, UserPrompt(kOnceUponATime, 200));
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  std::string all;
  for (const std::string& delta : sink->deltas()) {
    EXPECT_FALSE(delta.empty());
    EXPECT_TRUE(IsValidUtf8(delta)) << testing::PrintToString(delta);
    all += delta;
  }
  // The README sample: Cyrillic and Thai appear, so multi-byte pieces were really exercised.
  EXPECT_THAT(all, AllOf(HasSubstr("попу"), HasSubstr("โ")));
  EXPECT_THAT(kOnceUponATime + all, StartsWith("Once upon a timeernalrightarrow попуdevelopment"));
  EXPECT_EQ(sink->completion().usage.prompt_tokens, 5);
}

TEST(LocalBackendTest, PromptBeyondContextIsInvalidArgument) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, 2, 512, /*n_ctx=*/256);
  ASSERT_NE(backend, nullptr);
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "Once upon a time ";
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, UserPrompt(long_prompt, 10));
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sink->status().message(), AllOf(HasSubstr("prompt"), HasSubstr("256")));
  EXPECT_TRUE(sink->deltas().empty());
  // The engine is fine afterwards.
  EXPECT_TRUE(RunOne(*backend, UserPrompt(kOnceUponATime, 3))->status().ok());
}

TEST(LocalBackendTest, TruncationDropsTheOldestMessagesButKeepsSystemAndLast) {
  LocalBackendOptions options;
  options.model_path = kStories;
  options.n_threads = 1;
  options.n_slots = 1;
  options.n_ctx = 256;
  options.truncate_prompt = true;
  absl::StatusOr<std::unique_ptr<LocalBackend>> created = LocalBackend::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  LocalBackend& backend = **created;
  ASSERT_EQ(backend.n_ctx_slot(), 256);

  ChatRequest request = UserPrompt("Once upon a time", 4);
  std::vector<Message> history = {{"system", "Tell a short story."}};
  for (int i = 0; i < 12; ++i) {
    history.push_back({"user", "Tell me about the little girl and her red ball in the park."});
    history.push_back({"assistant", "She played with the ball all day and she was very happy."});
  }
  history.push_back({"user", kOnceUponATime});
  request.messages = history;
  const int64_t whole = *backend.CountTokens(history);
  ASSERT_GT(whole, 256);

  std::shared_ptr<RecordingSink> sink = RunOne(backend, request);
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  const int64_t prompt_tokens = sink->completion().usage.prompt_tokens;
  EXPECT_LT(prompt_tokens, 256);
  // It dropped only as much as needed: one more message would not have fitted... and what is
  // left is the system message plus the newest messages, ending with the last one.
  bool found = false;
  for (size_t dropped = 1; dropped + 2 < history.size(); ++dropped) {
    std::vector<Message> kept = {history[0]};
    kept.insert(kept.end(), history.begin() + 1 + static_cast<long>(dropped), history.end());
    if (*backend.CountTokens(kept) == prompt_tokens) {
      std::vector<Message> one_less = {history[0]};
      one_less.insert(one_less.end(), history.begin() + static_cast<long>(dropped), history.end());
      EXPECT_GE(*backend.CountTokens(one_less), 256);
      found = true;
      break;
    }
  }
  EXPECT_TRUE(found) << "prompt_tokens " << prompt_tokens << " matches no suffix of the history";

  // A last message that alone exceeds the context cannot be truncated into it.
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "Once upon a time ";
  request.messages = {{"system", "Tell a short story."}, {"user", "hi"}, {"user", long_prompt}};
  sink = RunOne(backend, request);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sink->status().message(), HasSubstr("even after dropping its 1 oldest messages"));
}

TEST(LocalBackendTest, RepeatPenaltyChangesGreedyTextDeterministically) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  const std::string plain = RunOne(*backend, UserPrompt(kOnceUponATime, 60))->text();
  ChatRequest penalized = UserPrompt(kOnceUponATime, 60);
  penalized.repeat_penalty = 1.5f;
  const std::string first = RunOne(*backend, penalized)->text();
  EXPECT_NE(first, plain);
  EXPECT_EQ(RunOne(*backend, penalized)->text(), first);
  ChatRequest frequency = UserPrompt(kOnceUponATime, 60);
  frequency.frequency_penalty = 1.5f;
  EXPECT_NE(RunOne(*backend, frequency)->text(), plain);
}

TEST(LocalBackendTest, TopKOfOneSamplesLikeGreedy) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  const std::string greedy = RunOne(*backend, UserPrompt(kOnceUponATime, 40))->text();
  for (uint64_t seed : {1u, 2u, 3u}) {
    ChatRequest request = UserPrompt(kOnceUponATime, 40);
    request.temperature = 1.5f;
    request.top_k = 1;
    request.seed = seed;
    EXPECT_EQ(RunOne(*backend, request)->text(), greedy) << seed;
  }
  ChatRequest bad = UserPrompt(kOnceUponATime, 4);
  bad.min_p = 2.0f;
  EXPECT_THAT(RunOne(*backend, bad)->status().message(), HasSubstr("min_p"));
}

TEST(LocalBackendTest, GenerationStopsWhenTheContextIsFull) {
  // The random model never emits EOS or BOS, so only the context can end this generation.
  std::unique_ptr<LocalBackend> backend = MakeBackend(kRandom, 1, 512, /*n_ctx=*/256);
  ASSERT_NE(backend, nullptr);
  ASSERT_EQ(backend->n_ctx_slot(), 256);
  std::shared_ptr<RecordingSink> sink = RunOne(*backend, UserPrompt(kOnceUponATime, 1000));
  ASSERT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->completion().finish_reason, FinishReason::kLength);
  // Prompt plus every decoded token fills the context; the last sampled token needs no slot.
  EXPECT_EQ(sink->completion().usage.prompt_tokens + sink->completion().usage.completion_tokens,
            256 + 1);
}

TEST(LocalBackendTest, CountTokensUsesTheRealTokenizer) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->CountTokens({{"user", kOnceUponATime}}), 5);
  // Fallback template: contents joined by newlines, so two messages cost more than one.
  EXPECT_GT(*backend->CountTokens({{"system", "Be nice."}, {"user", kOnceUponATime}}), 5);
}

TEST(LocalBackendTest, FallbackTemplateJoinsMessages) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  // A trailing assistant message is continued, as in plain completion.
  ChatRequest request = UserPrompt("", 10);
  request.messages = {{"system", ""}, {"user", "Once upon"}, {"assistant", "a time"}};
  std::shared_ptr<RecordingSink> joined = RunOne(*backend, request);
  std::shared_ptr<RecordingSink> direct = RunOne(*backend, UserPrompt("Once upon\na time", 10));
  EXPECT_EQ(joined->text(), direct->text());
  EXPECT_EQ(joined->completion().usage.prompt_tokens, direct->completion().usage.prompt_tokens);
}

// A copy of stories260K with a ChatML template added, to exercise the model-template path
// (neither shared model has one).
std::string StoriesWithChatTemplate() {
  const std::string path = ::testing::TempDir() + "/local_backend_chatml.gguf";
  gguf_init_params params = {/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* gguf = gguf_init_from_file(kStories.c_str(), params);
  EXPECT_NE(gguf, nullptr);
  if (gguf == nullptr) return "";
  const size_t data_offset = gguf_get_data_offset(gguf);
  gguf_set_val_str(gguf, "tokenizer.chat_template",
                   "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                   "'<|im_end|>\\n'}}{% endfor %}{{'<|im_start|>assistant\\n'}}");
  // New metadata (padded to the alignment), then the original tensor data unchanged: tensor
  // offsets are relative to the data section.
  std::string meta(gguf_get_meta_size(gguf), '\0');
  gguf_get_meta_data(gguf, meta.data());
  gguf_free(gguf);
  std::ifstream in(kStories, std::ios::binary);
  const std::string original(std::istreambuf_iterator<char>(in), {});
  std::ofstream(path, std::ios::binary) << meta << original.substr(data_offset);
  return path;
}

TEST(LocalBackendTest, ModelChatTemplateIsApplied) {
  const std::string path = StoriesWithChatTemplate();
  std::unique_ptr<LocalBackend> templated = MakeBackend(path);
  std::unique_ptr<LocalBackend> plain = MakeBackend(kStories);
  ASSERT_NE(templated, nullptr);
  ASSERT_NE(plain, nullptr);
  EXPECT_TRUE(templated->model_info().has_chat_template);
  const std::vector<Message> chat = {{"user", kOnceUponATime}};
  // ChatML adds role markers around the 4 text tokens; this vocabulary spells them out in
  // ordinary pieces, so the rendered prompt is much longer than the plain fallback.
  EXPECT_EQ(plain->CountTokens(chat), 5);
  EXPECT_GT(*templated->CountTokens(chat), 5 + 10);
  std::shared_ptr<RecordingSink> sink = RunOne(*templated, UserPrompt(kOnceUponATime, 10));
  EXPECT_TRUE(sink->status().ok()) << sink->status();
  EXPECT_EQ(sink->completion().usage.prompt_tokens, *templated->CountTokens(chat));
  // Different prompt, different continuation from the same weights.
  EXPECT_NE(sink->text(), RunOne(*plain, UserPrompt(kOnceUponATime, 10))->text());
  std::filesystem::remove(path);
}

TEST(LocalBackendTest, LongPromptInChunksGivesTheSameTextAndDoesNotStallStreams) {
  std::string long_prompt = "Once upon a time, there was a little girl named Lily. She loved to "
                            "play outside in the park. One day, she saw a big, red ball.";
  std::unique_ptr<LocalBackend> whole = MakeBackend(kStories, 2, /*n_batch=*/512);
  std::unique_ptr<LocalBackend> chunked = MakeBackend(kStories, 2, /*n_batch=*/4);
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(chunked, nullptr);
  std::shared_ptr<RecordingSink> want = RunOne(*whole, UserPrompt(long_prompt, 30));

  // A stream is running when the long prompt arrives; both finish, and the prompt was read
  // over several steps (4 tokens each) alongside the stream.
  auto stream = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> stream_call = chunked->Start(UserPrompt(kOnceUponATime, 200), stream);
  ASSERT_TRUE(stream->WaitDeltas(1));
  const int64_t steps_before = chunked->Stats().decode_steps_total;
  auto got = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> got_call = chunked->Start(UserPrompt(long_prompt, 30), got);
  ASSERT_TRUE(got->WaitDone());
  ASSERT_TRUE(stream->WaitDone());
  EXPECT_EQ(got->text(), want->text());
  const int64_t prompt_tokens = got->completion().usage.prompt_tokens;
  EXPECT_GE(chunked->Stats().decode_steps_total - steps_before, prompt_tokens / 4);
  EXPECT_EQ(stream->completion().usage.completion_tokens, 200);
}

TEST(LocalBackendTest, SharedPrefixIsReusedFromTheCache) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories, /*n_slots=*/1);
  ASSERT_NE(backend, nullptr);
  const std::string system = "Once upon a time, there was a little girl named Lily.";
  ChatRequest first = UserPrompt("", 20);
  first.messages = {{"system", system}, {"user", "She had a cat."}};
  ChatRequest second = UserPrompt("", 20);
  second.messages = {{"system", system}, {"user", "She liked to run."}};

  std::shared_ptr<RecordingSink> a = RunOne(*backend, first);
  const int64_t cached_before = backend->Stats().tokens_prompt_cached_total;
  std::shared_ptr<RecordingSink> b = RunOne(*backend, second);
  const int64_t reused = backend->Stats().tokens_prompt_cached_total - cached_before;
  EXPECT_GE(reused, 10);  // at least the system prompt's tokens
  EXPECT_LT(reused, b->completion().usage.prompt_tokens);

  // Same text as a fresh engine that had nothing cached.
  std::unique_ptr<LocalBackend> fresh = MakeBackend(kStories, 1);
  EXPECT_EQ(RunOne(*fresh, second)->text(), b->text());
  EXPECT_EQ(fresh->Stats().tokens_prompt_cached_total, 0);
}

TEST(LocalBackendTest, StatsCountTokensAndTtft) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  RunOne(*backend, UserPrompt(kOnceUponATime, 12));
  const EngineStats stats = backend->Stats();
  EXPECT_EQ(stats.requests_total, 1);
  EXPECT_EQ(stats.tokens_prompt_total, 5);
  EXPECT_EQ(stats.tokens_completion_total, 12);
  EXPECT_EQ(stats.ttft_seconds_count, 1);
  EXPECT_GT(stats.ttft_seconds_sum, 0);
  EXPECT_GT(stats.model_size_bytes, 1'000'000u);  // 292,800 F32 parameters
  EXPECT_EQ(backend->model_info().architecture, "llama");
}

TEST(LocalBackendTest, BadRequestFieldsAreInvalidArgument) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(RunOne(*backend, UserPrompt(kOnceUponATime, 0))->status().code(),
            absl::StatusCode::kInvalidArgument);
  ChatRequest request = UserPrompt(kOnceUponATime, 5);
  request.top_p = 1.5f;
  EXPECT_EQ(RunOne(*backend, request)->status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalBackendTest, SampledOutputIsReproducibleWithASeed) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kStories);
  ASSERT_NE(backend, nullptr);
  ChatRequest request = UserPrompt(kOnceUponATime, 40);
  request.temperature = 1.0f;
  request.seed = 1234;
  const std::string a = RunOne(*backend, request)->text();
  EXPECT_EQ(RunOne(*backend, request)->text(), a);
  request.seed = 99;
  EXPECT_NE(RunOne(*backend, request)->text(), a);
}

TEST(LocalBackendTest, DestroyingTheBackendFinishesRunningRequests) {
  std::unique_ptr<LocalBackend> backend = MakeBackend(kRandom, 1);
  ASSERT_NE(backend, nullptr);
  auto running = std::make_shared<RecordingSink>();
  auto queued = std::make_shared<RecordingSink>();
  std::unique_ptr<Call> c1 = backend->Start(UserPrompt(kOnceUponATime, 1500), running);
  std::unique_ptr<Call> c2 = backend->Start(UserPrompt(kOnceUponATime, 10), queued);
  ASSERT_TRUE(running->WaitDeltas(1));
  backend.reset();
  EXPECT_EQ(running->done_count(), 1);
  EXPECT_EQ(running->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(queued->done_count(), 1);
  c1->Cancel();  // after the backend is gone: harmless
}

class BadModelFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = ::testing::TempDir() + "/local_backend_" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string Stories() {
    std::ifstream in(kStories, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static absl::Status CreateStatus(const std::string& path) {
    LocalBackendOptions options;
    options.model_path = path;
    return LocalBackend::Create(options).status();
  }
};

TEST_F(BadModelFileTest, ClearErrorsAtCreate) {
  const std::string stories = Stories();
  ASSERT_EQ(stories.size(), 1185376u);
  struct Case {
    std::string name;
    std::string bytes;
    const char* want;
  };
  std::string bad_kv = stories;
  bad_kv[16] = '\x7F';  // n_kv low byte: far more keys than the file holds
  bad_kv[22] = '\x01';
  std::string bad_string = stories;
  // The first key's length (offset 24): a string longer than the rest of the file.
  for (int i = 24; i < 32; ++i) bad_string[i] = '\x40';
  const std::vector<Case> cases = {
      {"text.gguf", "hello, I am not a model\n", "not a GGUF file"},
      {"header_only.gguf", stories.substr(0, 10), "truncated"},
      {"metadata_cut.gguf", stories.substr(0, 4000), "corrupt"},
      {"data_cut.gguf", stories.substr(0, stories.size() - 1000), "truncated"},
      {"bad_kv.gguf", bad_kv, "corrupt"},
      {"bad_string.gguf", bad_string, "corrupt"},
  };
  for (const Case& c : cases) {
    const std::string path = Write(c.name, c.bytes);
    const absl::Status status = CreateStatus(path);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
    EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr(c.want))) << c.name;
    fs::remove(path);
  }
}

TEST_F(BadModelFileTest, MissingModelListsTheSearchPath) {
  EXPECT_EQ(CreateStatus("/nonexistent/model.gguf").code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> path = ResolveModel("no-such-model", kModels);
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(path.status().message(), HasSubstr(kModels));
  // And a real name resolves without its suffix.
  absl::StatusOr<std::string> stories = ResolveModel("stories260K", kModels);
  ASSERT_TRUE(stories.ok()) << stories.status();
  EXPECT_EQ(fs::path(*stories), fs::path(kStories));
}

TEST_F(BadModelFileTest, InfoOfTheSharedModels) {
  absl::StatusOr<GgufInfo> stories = ReadGgufInfo(kStories);
  ASSERT_TRUE(stories.ok()) << stories.status();
  EXPECT_EQ(stories->architecture, "llama");
  EXPECT_EQ(stories->n_params, 292800);
  EXPECT_EQ(stories->context_length, 2048);
  EXPECT_EQ(stories->n_tensors, 48);
  EXPECT_EQ(stories->size_bytes, 1185376u);
  EXPECT_EQ(stories->version, 3u);
  EXPECT_FALSE(stories->has_chat_template);

  absl::StatusOr<GgufInfo> random = ReadGgufInfo(kRandom);
  ASSERT_TRUE(random.ok()) << random.status();
  EXPECT_EQ(random->n_params, 513048);
  EXPECT_EQ(random->context_length, 4096);
  EXPECT_EQ(random->name, "LLaMA v2");
  EXPECT_THAT(random->file_type, HasSubstr("F16"));
}

}  // namespace
}  // namespace switchyard::backends
