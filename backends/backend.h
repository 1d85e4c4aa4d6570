// The internal request/response types every backend speaks, and the one interface they implement.
//
// The gateway converts wire formats (OpenAI JSON, protobuf) into these types at the edge; a
// backend never sees JSON from a client and never knows which client dialect a request came in.
#ifndef SWITCHYARD_BACKENDS_BACKEND_H_
#define SWITCHYARD_BACKENDS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace switchyard::backends {

struct Message {
  std::string role;  // "system", "user", "assistant", "tool"
  std::string content;
};

// A chat request after the gateway has parsed and validated it. Optional fields left unset mean
// "the backend's default".
struct ChatRequest {
  std::string request_id;  // for logs; "chatcmpl-..."
  std::vector<Message> messages;
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<uint64_t> seed;
  // Sampling extensions (llama.cpp / vLLM names); remote targets forward what their API knows.
  std::optional<int32_t> top_k;             // 0 disables
  std::optional<float> min_p;               // 0 disables
  std::optional<float> repeat_penalty;      // 1 disables
  std::optional<float> frequency_penalty;   // OpenAI's, in [-2, 2]; 0 disables
  std::optional<float> presence_penalty;    // OpenAI's, in [-2, 2]; 0 disables
  std::vector<std::string> stop;
  std::string user;
  // The client reads the answer as it is generated. A remote target streaming in `kAuto` mode
  // (StreamUpstream below) asks its upstream for an event stream only then, and otherwise for
  // one JSON body, which costs both sides less.
  bool stream = true;
};

// When a request asks its upstream for an event stream (SSE) rather than one JSON body.
enum class StreamUpstream {
  // As the client asked (ChatRequest::stream): a unary request gets one body, which costs the
  // gateway and the upstream less than a stream of chunks.
  kAuto,
  // Every request: the first-byte and idle timeouts then catch a stalled generation early, for
  // unary requests too.
  kAlways,
  // Never: for providers or proxies that cannot stream. A streaming client gets the answer as
  // one delta.
  kNever,
};

// Whether `request` asks its upstream for an event stream under `mode`.
inline bool StreamsUpstream(StreamUpstream mode, const ChatRequest& request) {
  return mode == StreamUpstream::kAlways || (mode == StreamUpstream::kAuto && request.stream);
}

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Whether the backend counted each: the local engine always does, a remote target when its
  // upstream reported a plausible count. For a count not reported (an OpenAI-compatible server
  // that ignores stream_options.include_usage) the gateway meters its own estimate.
  bool prompt_reported = false;
  bool completion_reported = false;
};

// The largest token count believed from an upstream. No request comes near it; a count above it,
// or below zero, comes from a broken or hostile upstream, and pricing it would charge a tenant
// absurdly or, negative, hand its budget back.
inline constexpr int64_t kMaxTokenCount = 1'000'000'000;
inline bool PlausibleTokenCount(int64_t count) { return count >= 0 && count <= kMaxTokenCount; }

// kContentFilter: the provider's safety filter ended or withheld the answer (OpenAI
// "content_filter", Anthropic "refusal", Gemini SAFETY, RECITATION, ...), which a client must be
// able to tell from a complete answer.
enum class FinishReason { kStop, kLength, kContentFilter };

// What a finished generation reports once, after its last delta; on failure only the fields
// that explain the attempt (served_by, retries, fallbacks) and the usage counted before it failed
// are meaningful.
struct Completion {
  FinishReason finish_reason = FinishReason::kStop;
  Usage usage;
  // The target that produced the answer (or the last one tried, on failure); set by the
  // dispatcher, which knows target names. Empty when no target was tried.
  std::string served_by;
  // Upstream attempts repeated after a failure, over every target tried.
  int32_t retries = 0;
  // Targets given up on before `served_by`.
  int32_t fallbacks = 0;
};

// Receives the output of one request. Calls for one request never overlap: zero or more
// OnDelta, then exactly one OnDone. OnDone carries OK with the completion, or an error status
// whose message is safe to show a client (no secrets, no prompt text).
//
// Sink methods run on a backend thread: they must be quick and must not block (hand the data to
// the client's own thread or queue). They may call Call::Cancel() on their own call.
class ChatSink {
 public:
  virtual ~ChatSink() = default;
  // `text` is valid UTF-8 (a backend holds back an incomplete multi-byte sequence until the rest
  // arrives) and may be empty only if the backend has nothing to say yet.
  virtual void OnDelta(std::string_view text) = 0;
  virtual void OnDone(const absl::Status& status, const Completion& completion) = 0;
  // Optional hints: the deltas between BeginBurst() and EndBurst() arrived together (a remote
  // backend's network read held several tokens), so a sink may send them as one message. A burst
  // may also end with OnDone, or with nothing when the request is cancelled. Sinks that wrap
  // another sink forward them; sinks that ignore them still get every delta.
  virtual void BeginBurst() {}
  virtual void EndBurst() {}
};

// A request in flight. Destroying the handle does not cancel it; call Cancel(). A handle may
// outlive its Backend (shutdown order): Cancel() is then a no-op and destruction is safe.
class Call {
 public:
  virtual ~Call() = default;
  // Stops the request as soon as possible and releases its resources (slot, upstream transfer).
  // Contract: after Cancel() returns, no further sink method is called for this request, not
  // even OnDone. Safe to call from any thread, more than once, and from inside a sink method.
  virtual void Cancel() = 0;
};

// One configured target: the local engine for one model, or one remote API.
class Backend {
 public:
  virtual ~Backend() = default;
  // Starts a request. Never blocks on generation: the work is queued and the sink is fed from a
  // backend thread. The backend keeps `sink` alive until OnDone returns or Cancel() returns.
  // Errors found before any work starts (e.g. a prompt too long) are still reported through
  // sink->OnDone, so callers have one path for failures. `request` is read during the call only:
  // a backend that needs it later keeps its own copy (a remote one only encodes it).
  virtual std::unique_ptr<Call> Start(const ChatRequest& request,
                                      std::shared_ptr<ChatSink> sink) = 0;
  // Whether the target takes requests now: false while a remote target's circuit breaker has
  // ejected it after repeated upstream failures (a request then fails at once with kUnavailable),
  // so a dispatcher can move on to a fallback without waiting. Cheap and thread-safe.
  virtual bool Available() const { return true; }
  // Counts prompt tokens with this backend's tokenizer when it has one; nullopt otherwise.
  virtual std::optional<int64_t> CountTokens(const std::vector<Message>& messages) const {
    return std::nullopt;
  }
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_BACKEND_H_
