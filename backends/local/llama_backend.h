// The in-process local engine: one GGUF model served by llama.cpp with continuous batching.
//
// Threads and ownership: one engine thread per LocalBackend owns the llama_model, llama_context,
// the shared llama_batch and all slots. Start() and Call::Cancel() only push a task onto a queue
// and return; the engine thread admits queued requests into free slots, and every step fills one
// batch with the next token of every generating slot plus prompt chunks of slots still reading
// their prompt (each slot is its own sequence id), decodes it once and samples per slot. A long
// prompt is read in chunks of at most `n_batch` tokens per step, interleaved with the tokens of
// the running streams, so it does not stall them. Sink methods run on the engine thread.
//
// Cancel contract (backend.h): Cancel() returns only when no sink method of the call is running,
// and the sink is never called again; the engine frees the slot at its next step.
//
// Prompt: the messages are rendered with the model's own chat template (tokenizer.chat_template)
// when llama.cpp knows it. Without one (both shared test models) the fallback is plain
// completion: the non-empty message contents in order, joined by "\n", with nothing after the
// last one, so the model continues the last message's text. A single user message "Once upon a
// time" is therefore the raw prompt "Once upon a time".
//
// Finishing: a generation ends with finish reason `stop` on an end-of-generation token, on BOS
// (llama2.c-trained models such as stories260K start a new story with BOS instead of emitting
// EOS) or on a stop sequence, and with `length` at max_tokens or when the slot's context is full.
// Stop tokens and stop sequences are not emitted.
//
// KV reuse: a finished slot keeps its sequence in the KV cache. A new request goes to the idle
// slot whose cached tokens share the longest prefix with its prompt, and only the rest of the
// prompt is evaluated (a shared system prompt is read once per slot, not once per request).
#ifndef SWITCHYARD_BACKENDS_LOCAL_LLAMA_BACKEND_H_
#define SWITCHYARD_BACKENDS_LOCAL_LLAMA_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "backends/local/model_store.h"

namespace switchyard::backends {

// Receives per-token timings for latency histograms. Methods run on the engine thread once per
// sampled token, so they must be quick and must not call into the backend.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // A request's first completion token: seconds since Start() queued it (queueing + prompt).
  virtual void OnFirstToken(double seconds) = 0;
  // Every later token: seconds since the same request's previous token.
  virtual void OnNextToken(double seconds) = 0;
};

struct LocalBackendOptions {
  // Path of the GGUF file (see ResolveModel in model_store.h to turn a name into a path).
  std::string model_path;
  // Decode threads. llama.cpp's own default (4) oversubscribes a 2-core machine and is ~20x
  // slower there for small models; 0 means the default below.
  int32_t n_threads = 2;
  // Context per slot, in tokens: prompt plus completion of one request. 0 means the model's
  // training context. llama.cpp may round it up to a multiple of 256.
  int32_t n_ctx = 2048;
  // Concurrent requests (sequences in the KV cache). KV memory grows with n_ctx * n_slots.
  int32_t n_slots = 4;
  // Most tokens decoded in one step, across all slots; also the prompt chunk size. At least
  // n_slots.
  int32_t n_batch = 512;
  // Requests waiting for a slot beyond this are refused with ResourceExhausted.
  int32_t max_queued = 256;
  // Used when a request leaves a field unset.
  int32_t default_max_tokens = 256;
  float default_temperature = 0.8f;
  float default_top_p = 0.95f;
  int32_t top_k = 40;       // 0 disables
  float min_p = 0.05f;      // 0 disables
  // Repetition penalties look at this many of the latest tokens (prompt included).
  int32_t penalty_last_n = 64;
  // A prompt that does not fit the context: refused with InvalidArgument (false), or truncated
  // by dropping the oldest messages after any leading system messages until it fits (true).
  bool truncate_prompt = false;
  // Seed for requests without one; unset means a fresh random seed per request.
  std::optional<uint32_t> default_seed;
  // Optional; see EngineObserver. LocalBackend::SetObserver replaces it later.
  std::shared_ptr<EngineObserver> observer;
};

// Counters for the gateway's /metrics; totals only grow. Names follow the metric names.
struct EngineStats {
  int64_t queue_depth = 0;   // requests waiting for a slot (started, not yet admitted)
  int64_t slots_active = 0;  // slots reading a prompt or generating
  int64_t slots_total = 0;
  int64_t requests_total = 0;            // requests admitted to a slot
  int64_t requests_failed_total = 0;     // finished with an error (prompt too long, decode...)
  int64_t requests_cancelled_total = 0;  // cancelled before finishing
  int64_t tokens_prompt_total = 0;       // prompt tokens of admitted requests
  int64_t tokens_prompt_cached_total = 0;  // of those, reused from the KV cache
  int64_t tokens_completion_total = 0;   // sampled tokens
  int64_t decode_steps_total = 0;        // llama_decode calls
  // Time to first token (queueing + prompt), a Prometheus summary without quantiles.
  double ttft_seconds_sum = 0;
  int64_t ttft_seconds_count = 0;
  uint64_t model_size_bytes = 0;  // llama_model_size: weights in memory
};

class LocalEngine;

class LocalBackend : public Backend {
 public:
  // Validates the options and the file (ReadGgufInfo), loads the model, creates the context and
  // starts the engine thread. InvalidArgument for bad options or a bad file, NotFound for a
  // missing file, Internal when llama.cpp fails anyway.
  static absl::StatusOr<std::unique_ptr<LocalBackend>> Create(const LocalBackendOptions& options);

  // Stops the engine thread. Requests still queued or running finish with Unavailable. Must not
  // run inside a sink method (those run on the engine thread, which this joins).
  ~LocalBackend() override;

  LocalBackend(const LocalBackend&) = delete;
  LocalBackend& operator=(const LocalBackend&) = delete;

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) override;
  // Tokens of the rendered prompt, BOS included; thread-safe.
  std::optional<int64_t> CountTokens(const std::vector<Message>& messages) const override;

  EngineStats Stats() const;
  // Replaces the observer (nullptr removes it). Takes effect at the engine's next step; the old
  // observer may still be called until then, so it must stay valid on its own (it is shared).
  void SetObserver(std::shared_ptr<EngineObserver> observer);
  // The file's metadata as read at Create (for model listings).
  const GgufInfo& model_info() const { return info_; }
  // Context per slot after llama.cpp's rounding: the most prompt + completion tokens a request
  // can use.
  int32_t n_ctx_slot() const;

 private:
  LocalBackend(GgufInfo info, std::unique_ptr<LocalEngine> engine);

  GgufInfo info_;
  std::unique_ptr<LocalEngine> engine_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_LOCAL_LLAMA_BACKEND_H_
