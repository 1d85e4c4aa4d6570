#include "backends/local/llama_backend.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "backends/local/llama_log.h"
#include "backends/local/text_stream.h"
#include "backends/sink_guard.h"
#include "llama.h"

namespace switchyard::backends {
namespace {

using Clock = std::chrono::steady_clock;

struct ModelFree {
  void operator()(llama_model* model) const { llama_model_free(model); }
};
struct ContextFree {
  void operator()(llama_context* ctx) const { llama_free(ctx); }
};
struct SamplerFree {
  void operator()(llama_sampler* sampler) const { llama_sampler_free(sampler); }
};
using ModelPtr = std::unique_ptr<llama_model, ModelFree>;
using ContextPtr = std::unique_ptr<llama_context, ContextFree>;
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerFree>;

// One request's link between the engine and its Call handle. Shared because the handle may
// outlive the slot, and the slot may outlive a handle the caller dropped without cancelling.
struct RequestState {
  RequestState(uint64_t id, std::shared_ptr<ChatSink> sink) : id(id), guard(std::move(sink)) {}
  const uint64_t id;
  SinkGuard guard;
  std::atomic<bool> cancel_queued{false};
};

struct Task {
  enum class Kind { kStart, kCancel, kSetObserver };
  Kind kind = Kind::kStart;
  std::shared_ptr<RequestState> state;
  ChatRequest request;  // kStart only
  std::shared_ptr<EngineObserver> observer;  // kSetObserver only
  Clock::time_point enqueued;
};

// The only door into the engine thread. Shared with Call handles, so a Cancel() after the
// backend is gone lands in a closed queue instead of freed memory.
class TaskQueue {
 public:
  // Dropped once the queue is closed.
  void Push(Task task) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    tasks_.push_back(std::move(task));
    cv_.Signal();
  }

  // Takes every queued task. With `wait`, first blocks until there is one or the queue closes.
  std::deque<Task> Take(bool wait, bool* closed) {
    absl::MutexLock lock(&mu_);
    while (wait && tasks_.empty() && !closed_) cv_.Wait(&mu_);
    *closed = closed_;
    return std::exchange(tasks_, {});
  }

  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    cv_.Signal();
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

class LocalCall : public Call {
 public:
  LocalCall(std::shared_ptr<RequestState> state, std::shared_ptr<TaskQueue> queue)
      : state_(std::move(state)), queue_(std::move(queue)) {}

  void Cancel() override {
    // The guard gives the contract at once (it waits out a sink call on the engine thread);
    // the queued task then frees the slot at the engine's next step.
    state_->guard.Cancel();
    if (state_->cancel_queued.exchange(true)) return;
    Task task;
    task.kind = Task::Kind::kCancel;
    task.state = state_;
    queue_->Push(std::move(task));
  }

 private:
  std::shared_ptr<RequestState> state_;
  std::shared_ptr<TaskQueue> queue_;
};

// Owns a llama_batch allocated by llama_batch_init.
class Batch {
 public:
  explicit Batch(int32_t capacity) : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}
  ~Batch() { llama_batch_free(batch_); }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  void Clear() { batch_.n_tokens = 0; }
  // Returns the row index of the token, which is also its output index when `output` is set.
  int32_t Add(llama_token token, llama_pos pos, llama_seq_id seq, bool output) {
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = output ? 1 : 0;
    return i;
  }
  int32_t size() const { return batch_.n_tokens; }
  int32_t capacity() const { return capacity_; }
  const llama_batch& get() const { return batch_; }

 private:
  llama_batch batch_;
  int32_t capacity_;
};

// Renders messages with the model's template, or the plain fallback documented in the header.
// Sets `*templated` when the model's template was used (its text may spell special tokens).
std::string RenderPrompt(const llama_model* model, const std::vector<Message>& messages,
                         bool* templated) {
  *templated = false;
  if (const char* tmpl = llama_model_chat_template(model, nullptr); tmpl != nullptr) {
    std::vector<llama_chat_message> chat;
    chat.reserve(messages.size());
    size_t total = 0;
    for (const Message& m : messages) {
      chat.push_back({m.role.c_str(), m.content.c_str()});
      total += m.role.size() + m.content.size();
    }
    std::string out(2 * total + 256, '\0');
    int32_t n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), /*add_ass=*/true,
                                          out.data(), static_cast<int32_t>(out.size()));
    if (n > static_cast<int32_t>(out.size())) {
      out.resize(n);
      n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), true, out.data(), n);
    }
    // A negative result means llama.cpp does not know this template (it has no Jinja engine).
    if (n >= 0) {
      out.resize(n);
      *templated = true;
      return out;
    }
  }
  std::string prompt;
  for (const Message& m : messages) {
    if (m.content.empty()) continue;
    if (!prompt.empty()) prompt += '\n';
    prompt += m.content;
  }
  return prompt;
}

absl::StatusOr<std::vector<llama_token>> Tokenize(const llama_vocab* vocab,
                                                  const std::string& text, bool parse_special) {
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
    return absl::InvalidArgumentError("prompt is too large to tokenize");
  }
  const auto len = static_cast<int32_t>(text.size());
  // add_special adds BOS only when the vocabulary asks for it.
  int32_t n = llama_tokenize(vocab, text.data(), len, nullptr, 0, /*add_special=*/true,
                             parse_special);
  if (n == INT32_MIN) return absl::InvalidArgumentError("prompt is too large to tokenize");
  std::vector<llama_token> tokens(n < 0 ? -n : n);
  n = llama_tokenize(vocab, text.data(), len, tokens.data(), static_cast<int32_t>(tokens.size()),
                     true, parse_special);
  if (n < 0) return absl::InternalError("tokenizer failed");
  tokens.resize(n);
  // A template that spells "<s>" itself plus add_special would start with two BOS tokens.
  const llama_token bos = llama_vocab_bos(vocab);
  if (parse_special && tokens.size() >= 2 && tokens[0] == bos && tokens[1] == bos) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

std::string TokenPiece(const llama_vocab* vocab, llama_token token) {
  std::string piece(32, '\0');
  int32_t n = llama_token_to_piece(vocab, token, piece.data(), static_cast<int32_t>(piece.size()),
                                   /*lstrip=*/0, /*special=*/false);
  if (n < 0) {
    piece.resize(-n);
    n = llama_token_to_piece(vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0,
                             false);
  }
  piece.resize(std::max(n, 0));
  return piece;
}

struct SamplingParams {
  float temperature = 0;
  float top_p = 1;
  int32_t top_k = 0;
  float min_p = 0;
  float repeat_penalty = 1;
  float frequency_penalty = 0;
  float presence_penalty = 0;
  int32_t penalty_last_n = 64;
  uint32_t seed = LLAMA_DEFAULT_SEED;
};

SamplerPtr MakeSampler(const llama_vocab* vocab, const SamplingParams& p) {
  SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
  // Penalties reshape the logits first, so they apply to greedy decoding too.
  if (p.repeat_penalty != 1 || p.frequency_penalty != 0 || p.presence_penalty != 0) {
    llama_sampler_chain_add(chain.get(),
                            llama_sampler_init_penalties(llama_vocab_n_tokens(vocab),
                                                         p.penalty_last_n, p.repeat_penalty,
                                                         p.frequency_penalty, p.presence_penalty));
  }
  const float temperature = p.temperature;
  const int32_t top_k = p.top_k;
  const float top_p = p.top_p;
  const float min_p = p.min_p;
  const uint32_t seed = p.seed;
  if (temperature <= 0) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
    return chain;
  }
  // The order llama.cpp's own tools use: truncate the distribution, then flatten, then draw.
  if (top_k > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(top_k));
  if (top_p < 1) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(top_p, 1));
  if (min_p > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(min_p, 1));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(temperature));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(seed));
  return chain;
}

uint32_t FoldSeed(uint64_t seed) {
  auto folded = static_cast<uint32_t>(seed ^ (seed >> 32));
  // LLAMA_DEFAULT_SEED asks llama.cpp for a random seed; a caller's seed must stay fixed.
  return folded == LLAMA_DEFAULT_SEED ? folded - 1 : folded;
}

}  // namespace

// Everything that runs on, or talks to, the engine thread. Slot fields are engine-thread only.
class LocalEngine {
 public:
  LocalEngine(const LocalBackendOptions& options, ModelPtr model, ContextPtr ctx)
      : options_(options),
        model_(std::move(model)),
        ctx_(std::move(ctx)),
        vocab_(llama_model_get_vocab(model_.get())),
        bos_(llama_vocab_bos(vocab_)),
        n_ctx_slot_(static_cast<int32_t>(llama_n_ctx_seq(ctx_.get()))),
        batch_(options.n_batch),
        queue_(std::make_shared<TaskQueue>()),
        observer_(options.observer) {
    slots_.resize(options.n_slots);
    for (int32_t i = 0; i < options.n_slots; ++i) slots_[i].seq_id = i;
    absl::MutexLock lock(&stats_mu_);
    stats_.slots_total = options.n_slots;
    stats_.model_size_bytes = llama_model_size(model_.get());
  }

  ~LocalEngine() {
    queue_->Close();
    if (thread_.joinable()) thread_.join();
  }

  void Begin() { thread_ = std::thread([this] { Run(); }); }

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) {
    auto state = std::make_shared<RequestState>(next_id_.fetch_add(1), std::move(sink));
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.queue_depth;
    }
    Task task;
    task.kind = Task::Kind::kStart;
    task.state = state;
    task.request = request;  // the engine thread works on its own copy
    task.enqueued = Clock::now();
    queue_->Push(std::move(task));
    return std::make_unique<LocalCall>(std::move(state), queue_);
  }

  // The vocabulary is immutable after load, so any thread may tokenize.
  std::optional<int64_t> CountTokens(const std::vector<Message>& messages) const {
    bool templated = false;
    const std::string prompt = RenderPrompt(model_.get(), messages, &templated);
    absl::StatusOr<std::vector<llama_token>> tokens = Tokenize(vocab_, prompt, templated);
    if (!tokens.ok()) return std::nullopt;
    return static_cast<int64_t>(tokens->size());
  }

  EngineStats Stats() const {
    absl::MutexLock lock(&stats_mu_);
    return stats_;
  }

  void SetObserver(std::shared_ptr<EngineObserver> observer) {
    Task task;
    task.kind = Task::Kind::kSetObserver;
    task.observer = std::move(observer);
    queue_->Push(std::move(task));
  }

  int32_t n_ctx_slot() const { return n_ctx_slot_; }

 private:
  enum class SlotState {
    kIdle,        // free; its sequence keeps the last request's tokens for prefix reuse
    kPrompt,      // reading the prompt, one chunk per step
    kGenerating,  // has a sampled token that the next step decodes
  };

  struct Slot {
    llama_seq_id seq_id = 0;
    SlotState state = SlotState::kIdle;
    std::shared_ptr<RequestState> request;
    // Tokens whose keys and values are in this sequence's cache; cached[i] sits at position i.
    std::vector<llama_token> cached;
    std::vector<llama_token> prompt;
    size_t n_prompt_done = 0;  // prompt tokens in the cache (prompt[0, n) == cached[0, n))
    int64_t n_prompt_reused = 0;
    llama_token next_token = LLAMA_TOKEN_NULL;
    int32_t n_in_batch = 0;     // tokens this slot put in the current batch
    int32_t output_index = -1;  // its logits row in the current batch, -1 if none
    SamplerPtr sampler;
    int32_t max_tokens = 0;
    int32_t n_generated = 0;
    std::optional<Utf8Holdback> utf8;
    std::optional<StopMatcher> stops;
    Clock::time_point enqueued;
    Clock::time_point last_token;  // when the previous completion token was sampled
  };

  struct Pending {
    std::shared_ptr<RequestState> state;
    ChatRequest request;
    Clock::time_point enqueued;
  };

  // A request ready for a slot: the tokenized prompt and everything derived from the request.
  struct Prepared {
    std::vector<llama_token> prompt;
    SamplerPtr sampler;
    int32_t max_tokens = 0;
  };

  void Run() {
    for (;;) {
      bool closed = false;
      std::deque<Task> tasks = queue_->Take(/*wait=*/!HasWork(), &closed);
      for (Task& task : tasks) {
        if (closed) {
          if (task.kind == Task::Kind::kStart) {
            pending_.push_back({std::move(task.state), std::move(task.request), task.enqueued});
          }
          continue;
        }
        Handle(std::move(task));
      }
      if (closed) {
        FailEverything(absl::UnavailableError("the local engine is shutting down"));
        return;
      }
      Admit();
      Step();
    }
  }

  bool HasWork() const {
    bool any_idle = false;
    for (const Slot& slot : slots_) {
      if (slot.state != SlotState::kIdle) return true;
      any_idle = true;
    }
    return any_idle && !pending_.empty();
  }

  void Handle(Task task) {
    if (task.kind == Task::Kind::kSetObserver) {
      observer_ = std::move(task.observer);
      return;
    }
    if (task.kind == Task::Kind::kStart) {
      // Requests about to take an idle slot do not count as waiting.
      const auto idle = std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) {
        return s.state == SlotState::kIdle;
      });
      if (static_cast<int64_t>(pending_.size()) >= options_.max_queued + idle) {
        DequeuedPending();
        Fail(*task.state, absl::ResourceExhaustedError(
                              "the local engine's queue is full; retry later"));
        return;
      }
      pending_.push_back({std::move(task.state), std::move(task.request), task.enqueued});
      return;
    }
    const uint64_t id = task.state->id;
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->state->id == id) {
        pending_.erase(it);
        DequeuedPending();
        CountCancelled();
        return;
      }
    }
    for (Slot& slot : slots_) {
      if (slot.request != nullptr && slot.request->id == id) {
        CountCancelled();
        Release(slot);
        return;
      }
    }
  }

  void Admit() {
    while (!pending_.empty()) {
      if (std::none_of(slots_.begin(), slots_.end(),
                       [](const Slot& s) { return s.state == SlotState::kIdle; })) {
        return;
      }
      Pending next = std::move(pending_.front());
      pending_.pop_front();
      DequeuedPending();
      if (next.state->guard.finished()) {
        // Cancelled after the task was taken; its cancel task will find nothing to do.
        CountCancelled();
        continue;
      }
      absl::StatusOr<Prepared> prepared = Prepare(next.request);
      if (!prepared.ok()) {
        Fail(*next.state, prepared.status());
        continue;
      }
      Slot& slot = PickSlot(prepared->prompt);
      Occupy(slot, std::move(next), *std::move(prepared));
    }
  }

  absl::StatusOr<Prepared> Prepare(const ChatRequest& request) {
    Prepared out;
    out.max_tokens = request.max_tokens.value_or(options_.default_max_tokens);
    if (out.max_tokens <= 0) return absl::InvalidArgumentError("max_tokens must be positive");
    const float temperature = request.temperature.value_or(options_.default_temperature);
    if (!(temperature >= 0)) return absl::InvalidArgumentError("temperature must be >= 0");
    SamplingParams sampling;
    sampling.temperature = temperature;
    sampling.top_p = request.top_p.value_or(options_.default_top_p);
    if (!(sampling.top_p > 0 && sampling.top_p <= 1)) {
      return absl::InvalidArgumentError("top_p must be in (0, 1]");
    }
    sampling.top_k = request.top_k.value_or(options_.top_k);
    if (sampling.top_k < 0) return absl::InvalidArgumentError("top_k must be >= 0");
    sampling.min_p = request.min_p.value_or(options_.min_p);
    if (!(sampling.min_p >= 0 && sampling.min_p <= 1)) {
      return absl::InvalidArgumentError("min_p must be in [0, 1]");
    }
    sampling.repeat_penalty = request.repeat_penalty.value_or(1.0f);
    if (!(sampling.repeat_penalty > 0)) {
      return absl::InvalidArgumentError("repeat_penalty must be > 0");
    }
    sampling.frequency_penalty = request.frequency_penalty.value_or(0.0f);
    sampling.presence_penalty = request.presence_penalty.value_or(0.0f);
    if (!(std::abs(sampling.frequency_penalty) <= 2 && std::abs(sampling.presence_penalty) <= 2)) {
      return absl::InvalidArgumentError("frequency_penalty and presence_penalty must be in [-2, 2]");
    }
    sampling.penalty_last_n = options_.penalty_last_n;

    absl::StatusOr<std::vector<llama_token>> tokens = FittingPrompt(request.messages);
    if (!tokens.ok()) return tokens.status();
    out.prompt = *std::move(tokens);

    if (request.seed.has_value()) {
      sampling.seed = FoldSeed(*request.seed);
    } else if (options_.default_seed.has_value()) {
      sampling.seed = *options_.default_seed;
    }
    out.sampler = MakeSampler(vocab_, sampling);
    // The penalties count repeats of the latest tokens, the prompt's included.
    const size_t n_history =
        std::min(out.prompt.size(), static_cast<size_t>(std::max(sampling.penalty_last_n, 0)));
    for (size_t i = out.prompt.size() - n_history; i < out.prompt.size(); ++i) {
      llama_sampler_accept(out.sampler.get(), out.prompt[i]);
    }
    return out;
  }

  // The prompt's tokens, if they leave at least one position of the slot's context for the
  // completion. Otherwise refused, or, with truncate_prompt, the oldest messages after any
  // leading system messages are dropped until it fits (the last message is always kept).
  absl::StatusOr<std::vector<llama_token>> FittingPrompt(const std::vector<Message>& messages) {
    size_t keep_from = 0;  // leading system messages always stay
    while (keep_from + 1 < messages.size() && messages[keep_from].role == "system") ++keep_from;
    size_t dropped = 0;
    for (;;) {
      std::vector<Message> kept(messages.begin(), messages.begin() + keep_from);
      kept.insert(kept.end(), messages.begin() + keep_from + dropped, messages.end());
      bool templated = false;
      const std::string text = RenderPrompt(model_.get(), kept, &templated);
      absl::StatusOr<std::vector<llama_token>> tokens = Tokenize(vocab_, text, templated);
      if (!tokens.ok()) return tokens.status();
      if (tokens->empty()) return absl::InvalidArgumentError("the prompt is empty");
      if (static_cast<int64_t>(tokens->size()) < n_ctx_slot_) return tokens;
      const bool can_drop = keep_from + dropped + 1 < messages.size();
      if (!options_.truncate_prompt || !can_drop) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the prompt is ", tokens->size(), " tokens",
            dropped > 0 ? absl::StrCat(" even after dropping its ", dropped, " oldest messages")
                        : "",
            ", but this model's context holds ", n_ctx_slot_,
            " tokens per request, prompt and completion together"));
      }
      ++dropped;
    }
  }

  // The idle slot whose cache shares the longest prefix with `prompt`.
  Slot& PickSlot(const std::vector<llama_token>& prompt) {
    Slot* best = nullptr;
    size_t best_common = 0;
    for (Slot& slot : slots_) {
      if (slot.state != SlotState::kIdle) continue;
      const size_t common = CommonPrefix(slot.cached, prompt);
      if (best == nullptr || common > best_common) {
        best = &slot;
        best_common = common;
      }
    }
    return *best;
  }

  static size_t CommonPrefix(const std::vector<llama_token>& a, const std::vector<llama_token>& b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
  }

  void Occupy(Slot& slot, Pending request, Prepared prepared) {
    // Keep the shared prefix, but always evaluate at least the last prompt token: its logits
    // give the first completion token.
    size_t keep = std::min(CommonPrefix(slot.cached, prepared.prompt), prepared.prompt.size() - 1);
    llama_memory_t mem = llama_get_memory(ctx_.get());
    if (!llama_memory_seq_rm(mem, slot.seq_id, static_cast<llama_pos>(keep), -1)) {
      llama_memory_seq_rm(mem, slot.seq_id, -1, -1);
      keep = 0;
    }
    slot.cached.resize(keep);
    slot.state = SlotState::kPrompt;
    slot.request = std::move(request.state);
    slot.prompt = std::move(prepared.prompt);
    slot.n_prompt_done = keep;
    slot.n_prompt_reused = static_cast<int64_t>(keep);
    slot.next_token = LLAMA_TOKEN_NULL;
    slot.sampler = std::move(prepared.sampler);
    slot.max_tokens = prepared.max_tokens;
    slot.n_generated = 0;
    slot.utf8.emplace();
    slot.stops.emplace(std::move(request.request.stop));
    slot.enqueued = request.enqueued;

    absl::MutexLock lock(&stats_mu_);
    ++stats_.slots_active;
    ++stats_.requests_total;
    stats_.tokens_prompt_total += static_cast<int64_t>(slot.prompt.size());
    stats_.tokens_prompt_cached_total += slot.n_prompt_reused;
  }

  // One decode: the next token of every generating slot first, so streams advance every step,
  // then prompt chunks in the remaining room, so a long prompt is spread over several steps.
  void Step() {
    batch_.Clear();
    for (Slot& slot : slots_) {
      slot.n_in_batch = 0;
      slot.output_index = -1;
      if (slot.state != SlotState::kGenerating) continue;
      slot.output_index = batch_.Add(slot.next_token, static_cast<llama_pos>(slot.cached.size()),
                                     slot.seq_id, /*output=*/true);
      slot.n_in_batch = 1;
    }
    // Prompts fill the remaining room oldest first (first come, first served): the earliest
    // request gets its whole prompt read soonest, so its first token is not held back by prompts
    // that arrived after it. Sharing the room evenly instead would make every prompt wait for all.
    prompt_order_.clear();
    for (Slot& slot : slots_) {
      if (slot.state == SlotState::kPrompt) prompt_order_.push_back(&slot);
    }
    std::sort(prompt_order_.begin(), prompt_order_.end(),
              [](const Slot* a, const Slot* b) { return a->enqueued < b->enqueued; });
    for (Slot* slot : prompt_order_) {
      if (batch_.size() >= batch_.capacity()) break;
      const size_t room = static_cast<size_t>(batch_.capacity() - batch_.size());
      const size_t take = std::min(room, slot->prompt.size() - slot->n_prompt_done);
      for (size_t i = 0; i < take; ++i) {
        const size_t at = slot->n_prompt_done + i;
        const bool last = at + 1 == slot->prompt.size();
        const int32_t row =
            batch_.Add(slot->prompt[at], static_cast<llama_pos>(at), slot->seq_id, last);
        if (last) slot->output_index = row;
      }
      slot->n_in_batch = static_cast<int32_t>(take);
    }
    if (batch_.size() == 0) return;

    const int32_t rc = llama_decode(ctx_.get(), batch_.get());
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.decode_steps_total;
    }
    if (rc != 0) {
      // 1 = no room in the cache, 2 = aborted, < 0 = error. Some of the batch may be in the
      // cache, so the affected sequences are dropped whole.
      llama_memory_t mem = llama_get_memory(ctx_.get());
      for (Slot& slot : slots_) {
        if (slot.n_in_batch == 0) continue;
        llama_memory_seq_rm(mem, slot.seq_id, -1, -1);
        slot.cached.clear();
        std::shared_ptr<RequestState> request = slot.request;
        Release(slot);
        Fail(*request, absl::InternalError(absl::StrCat("llama_decode failed (", rc, ")")));
      }
      return;
    }

    const Clock::time_point now = Clock::now();
    for (Slot& slot : slots_) {
      if (slot.n_in_batch == 0) continue;
      if (slot.state == SlotState::kGenerating) {
        slot.cached.push_back(slot.next_token);
      } else {
        slot.cached.insert(slot.cached.end(), slot.prompt.begin() + slot.n_prompt_done,
                           slot.prompt.begin() + slot.n_prompt_done + slot.n_in_batch);
        slot.n_prompt_done += slot.n_in_batch;
      }
      if (slot.output_index < 0) continue;
      const llama_token token = llama_sampler_sample(slot.sampler.get(), ctx_.get(),
                                                     slot.output_index);
      if (slot.state == SlotState::kPrompt) {
        slot.state = SlotState::kGenerating;
        const double ttft = std::chrono::duration<double>(now - slot.enqueued).count();
        if (observer_ != nullptr) observer_->OnFirstToken(ttft);
        absl::MutexLock lock(&stats_mu_);
        stats_.ttft_seconds_sum += ttft;
        ++stats_.ttft_seconds_count;
      } else if (observer_ != nullptr) {
        observer_->OnNextToken(std::chrono::duration<double>(now - slot.last_token).count());
      }
      slot.last_token = now;
      OnToken(slot, token);
    }
  }

  void OnToken(Slot& slot, llama_token token) {
    ++slot.n_generated;
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.tokens_completion_total;
    }
    if (llama_vocab_is_eog(vocab_, token) || token == bos_) {
      Finish(slot, FinishReason::kStop);
      return;
    }
    StopMatcher::Result out = slot.stops->Push(slot.utf8->Push(TokenPiece(vocab_, token)));
    if (!out.text.empty() && !slot.request->guard.Delta(out.text)) {
      CountCancelled();
      Release(slot);
      return;
    }
    if (out.stopped) {
      Finish(slot, FinishReason::kStop);
    } else if (slot.n_generated >= slot.max_tokens ||
               static_cast<int64_t>(slot.cached.size()) >= n_ctx_slot_) {
      // The second case: no position is left to decode the token just sampled.
      Finish(slot, FinishReason::kLength);
    } else {
      slot.next_token = token;
    }
  }

  // Releases held-back text, reports the completion and frees the slot.
  void Finish(Slot& slot, FinishReason reason) {
    StopMatcher::Result tail = slot.stops->Push(slot.utf8->Flush());
    std::string text = std::move(tail.text);
    if (tail.stopped) {
      reason = FinishReason::kStop;
    } else {
      text += slot.stops->Flush();
    }
    if (!text.empty() && !slot.request->guard.Delta(text)) {
      CountCancelled();
      Release(slot);
      return;
    }
    Completion completion;
    completion.finish_reason = reason;
    completion.usage.prompt_tokens = static_cast<int64_t>(slot.prompt.size());
    completion.usage.completion_tokens = slot.n_generated;
    completion.usage.prompt_reported = completion.usage.completion_reported = true;
    // Free the slot first, so a client that reads Stats() after OnDone sees it free.
    std::shared_ptr<RequestState> request = slot.request;
    Release(slot);
    request->guard.Done(absl::OkStatus(), completion);
  }

  // Frees the slot. Its cache entries stay for prefix reuse; Occupy trims them.
  void Release(Slot& slot) {
    if (slot.state == SlotState::kIdle) return;
    slot.state = SlotState::kIdle;
    slot.request.reset();
    slot.sampler.reset();
    slot.prompt.clear();
    slot.utf8.reset();
    slot.stops.reset();
    slot.n_in_batch = 0;
    slot.output_index = -1;
    absl::MutexLock lock(&stats_mu_);
    --stats_.slots_active;
  }

  void Fail(RequestState& state, const absl::Status& status) {
    {
      absl::MutexLock lock(&stats_mu_);
      ++stats_.requests_failed_total;
    }
    state.guard.Done(status, Completion{});
  }

  void FailEverything(const absl::Status& status) {
    for (Slot& slot : slots_) {
      if (slot.state == SlotState::kIdle) continue;
      std::shared_ptr<RequestState> request = slot.request;
      Release(slot);
      Fail(*request, status);
    }
    for (Pending& pending : pending_) {
      DequeuedPending();
      Fail(*pending.state, status);
    }
    pending_.clear();
  }

  void DequeuedPending() {
    absl::MutexLock lock(&stats_mu_);
    --stats_.queue_depth;
  }

  void CountCancelled() {
    absl::MutexLock lock(&stats_mu_);
    ++stats_.requests_cancelled_total;
  }

  const LocalBackendOptions options_;
  // Declared before the slots so the samplers and batch go first, then the context, then the
  // model (members are destroyed in reverse order).
  ModelPtr model_;
  ContextPtr ctx_;
  const llama_vocab* vocab_;
  const llama_token bos_;
  const int32_t n_ctx_slot_;
  Batch batch_;
  std::vector<Slot> slots_;
  std::deque<Pending> pending_;  // admitted by the engine, waiting for a free slot
  std::vector<Slot*> prompt_order_;  // Step()'s scratch: slots reading their prompt, oldest first

  std::shared_ptr<TaskQueue> queue_;
  std::atomic<uint64_t> next_id_{1};
  std::shared_ptr<EngineObserver> observer_;  // engine thread only

  mutable absl::Mutex stats_mu_;
  EngineStats stats_ ABSL_GUARDED_BY(stats_mu_);

  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<LocalBackend>> LocalBackend::Create(
    const LocalBackendOptions& options) {
  LocalBackendOptions opts = options;
  if (opts.model_path.empty()) return absl::InvalidArgumentError("local model path is empty");
  if (opts.n_threads < 0) return absl::InvalidArgumentError("n_threads must be >= 0");
  if (opts.n_threads == 0) opts.n_threads = LocalBackendOptions().n_threads;
  if (opts.n_ctx < 0) return absl::InvalidArgumentError("n_ctx must be >= 0");
  const auto max_slots = static_cast<int32_t>(llama_max_parallel_sequences());
  if (opts.n_slots < 1 || opts.n_slots > max_slots) {
    return absl::InvalidArgumentError(absl::StrCat("n_slots must be in [1, ", max_slots, "]"));
  }
  if (opts.n_batch < opts.n_slots) {
    return absl::InvalidArgumentError("n_batch must be at least n_slots (one token per slot)");
  }
  if (opts.max_queued < 0) return absl::InvalidArgumentError("max_queued must be >= 0");
  if (opts.default_max_tokens <= 0) {
    return absl::InvalidArgumentError("default_max_tokens must be positive");
  }
  if (!(opts.default_temperature >= 0)) {
    return absl::InvalidArgumentError("default_temperature must be >= 0");
  }
  if (!(opts.default_top_p > 0 && opts.default_top_p <= 1)) {
    return absl::InvalidArgumentError("default_top_p must be in (0, 1]");
  }

  RouteLlamaLogs();
  // Our own checks first: llama.cpp answers a bad file with a log line and a null pointer.
  absl::StatusOr<GgufInfo> info = ReadGgufInfo(opts.model_path);
  if (!info.ok()) return info.status();

  llama_model_params mparams = llama_model_default_params();
  mparams.n_gpu_layers = 0;
  ModelPtr model(llama_model_load_from_file(opts.model_path.c_str(), mparams));
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama.cpp could not load ", opts.model_path, " (unsupported architecture or corrupt "
        "tensors; details in the llama.cpp log)"));
  }

  const int32_t n_ctx_slot = opts.n_ctx > 0 ? opts.n_ctx : llama_model_n_ctx_train(model.get());
  llama_context_params cparams = llama_context_default_params();
  // Each slot gets its own n_ctx_slot positions (non-unified cache), so one long request cannot
  // starve the others of cache space mid-generation.
  cparams.n_ctx = static_cast<uint32_t>(n_ctx_slot) * static_cast<uint32_t>(opts.n_slots);
  cparams.n_seq_max = static_cast<uint32_t>(opts.n_slots);
  cparams.kv_unified = false;
  cparams.n_batch = static_cast<uint32_t>(opts.n_batch);
  cparams.n_ubatch = static_cast<uint32_t>(opts.n_batch);
  cparams.n_threads = opts.n_threads;
  cparams.n_threads_batch = opts.n_threads;
  cparams.no_perf = true;
  ContextPtr ctx(llama_init_from_model(model.get(), cparams));
  if (ctx == nullptr) {
    return absl::InternalError(absl::StrCat("llama.cpp could not create a context for ",
                                            opts.model_path, " (n_ctx ", cparams.n_ctx,
                                            "; details in the llama.cpp log)"));
  }

  auto engine = std::make_unique<LocalEngine>(opts, std::move(model), std::move(ctx));
  engine->Begin();
  return std::unique_ptr<LocalBackend>(new LocalBackend(*std::move(info), std::move(engine)));
}

LocalBackend::LocalBackend(GgufInfo info, std::unique_ptr<LocalEngine> engine)
    : info_(std::move(info)), engine_(std::move(engine)) {}

LocalBackend::~LocalBackend() = default;

std::unique_ptr<Call> LocalBackend::Start(const ChatRequest& request,
                                          std::shared_ptr<ChatSink> sink) {
  return engine_->Start(request, std::move(sink));
}

std::optional<int64_t> LocalBackend::CountTokens(const std::vector<Message>& messages) const {
  return engine_->CountTokens(messages);
}

EngineStats LocalBackend::Stats() const { return engine_->Stats(); }

void LocalBackend::SetObserver(std::shared_ptr<EngineObserver> observer) {
  engine_->SetObserver(std::move(observer));
}

int32_t LocalBackend::n_ctx_slot() const { return engine_->n_ctx_slot(); }

}  // namespace switchyard::backends
