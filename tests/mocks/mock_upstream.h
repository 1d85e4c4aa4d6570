// An in-process fake LLM provider for tests: an HTTP/1.1 server on 127.0.0.1 that speaks a
// provider's wire format, records every request it receives, and misbehaves on demand (errors,
// delays, resets, malformed streams, silence).
//
// Dialects: each wire format is a Handler registered for a path prefix. Built in: OpenAI Chat
// Completions at "/v1/chat/completions", Anthropic Messages at "/v1/messages" and Gemini
// generateContent / streamGenerateContent at "/v1beta/models/". More plug in with AddHandler(),
// reusing Behaviour and Responder, so faults are scripted identically for every provider.
//
// TLS: started with TlsFiles, the mock speaks HTTPS only (HTTP/1.1 over TLS; it records the ALPN
// protocols each client offers, so a test can see whether a client asked for HTTP/2).
// MakeTestCertificates writes a throwaway CA and a server certificate for 127.0.0.1 with the
// `openssl` command-line tool.
//
// Threads: one accept thread and one thread per connection; all public methods are thread-safe.
// The destructor closes every connection and joins every thread, so a test never leaks a hang.
#ifndef SWITCHYARD_TESTS_MOCKS_MOCK_UPSTREAM_H_
#define SWITCHYARD_TESTS_MOCKS_MOCK_UPSTREAM_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::mocks {

struct RecordedRequest {
  std::string method;
  std::string target;  // path and query, as sent
  // Names lower-cased, in arrival order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header named `name` (lower-case), or empty.
  std::string Header(std::string_view name) const;
};

// What the mock does with a request. Every dialect honours every field that makes sense for it.
struct Behaviour {
  enum class Kind {
    // A normal completion: streamed when the request asks for it ("stream": true for OpenAI),
    // one JSON body otherwise.
    kOk,
    // `http_status` with the dialect's error JSON carrying `error_message`.
    kHttpError,
    // Streams `reset_after_tokens` tokens, then resets the TCP connection (RST, no clean end).
    kResetMidStream,
    // Streams one token, then an event whose data is not valid JSON (`malformed_data` when set),
    // then ends normally. OpenAI, not streamed: `malformed_data` as the body, when set.
    kMalformedSse,
    // Reads the request and never answers; waits until the client goes away.
    kNeverAnswer,
    // Streams `reset_after_tokens` tokens, then the dialect's in-stream error event carrying
    // `error_message` (Anthropic "event: error" overloaded_error, OpenAI and Gemini
    // "data: {"error": ...}"), then ends the response normally.
    kStreamError,
    // A normal answer (streamed or not) whose one token is `oversized_bytes` long.
    kOversizedBody,
    // 200 with an HTML page (a captive portal, a misrouted proxy), whatever was asked for.
    kWrongContentType,
  };
  Kind kind = Kind::kOk;
  // The completion, token by token; a non-streamed answer is their concatenation.
  std::vector<std::string> tokens = {"Hello", ",", " world", "!"};
  int64_t prompt_tokens = 7;
  // Negative means "the number of tokens".
  int64_t completion_tokens = -1;
  std::string finish_reason = "stop";
  // Before the status line.
  std::chrono::milliseconds delay{0};
  // Before each streamed token.
  std::chrono::milliseconds token_delay{0};
  int http_status = 500;
  std::string error_message = "mock upstream failure";
  std::optional<int> retry_after_seconds;
  int reset_after_tokens = 1;
  // Answer with one JSON body even when the request asks for a stream, as some servers do.
  bool ignore_stream = false;
  // false: no usage anywhere (OpenAI "usage" and the usage chunk, Anthropic "usage", Gemini
  // "usageMetadata"), as from servers that ignore stream_options.include_usage.
  bool send_usage = true;
  // Anthropic: after the first token, an event of a type no client knows ("event: future_event").
  // Gemini: a chunk whose only part is not text (executableCode).
  bool unknown_event = false;
  // kMalformedSse: the broken event's data, say a number past double's range; empty: the
  // dialect's chunk cut off mid-string.
  std::string malformed_data;
  // kOversizedBody: the length of its one token.
  size_t oversized_bytes = 64 << 10;
  // Slow drip: when positive, every byte of the response (head included) goes out in pieces of
  // `drip_bytes`, with `drip_interval` before each piece.
  std::chrono::milliseconds drip_interval{0};
  size_t drip_bytes = 64;
  // A stream goes out in one write at its end (head and every event), as the tokens of a fast
  // upstream arrive together in one network read.
  bool one_write = false;
  // Holds the answer until the mock has received this many requests in all (0: no wait), so a
  // test can have N requests in flight at once before any of them fails.
  size_t hold_until_requests = 0;
};

// Writes one response on one connection. Every method returns false once the client has gone
// away (or the mock is stopping); a handler then just returns.
class Responder {
 public:
  virtual ~Responder() = default;
  // Sleeps, but wakes at once and returns false when the client closes the connection.
  virtual bool Wait(std::chrono::milliseconds duration) = 0;
  // Blocks until the client closes the connection or the mock stops.
  virtual void WaitForClose() = 0;
  // A complete response with Content-Length.
  virtual bool Send(int status, std::string_view content_type, std::string_view body,
                    const std::vector<std::pair<std::string, std::string>>& extra_headers = {}) = 0;
  // A chunked response: the head, then one chunk per Write(), then End().
  virtual bool StartStream(int status, std::string_view content_type) = 0;
  virtual bool Write(std::string_view data) = 0;
  virtual bool End() = 0;
  // Aborts the connection with a TCP reset.
  virtual void Reset() = 0;
};

enum class Dialect { kOpenAi, kAnthropic, kGemini };

// PEM files for a TLS mock.
struct TlsFiles {
  std::string ca_cert;     // the CA that signed the server certificate: a client's ca_bundle
  std::string cert_chain;  // the server certificate (for 127.0.0.1 and localhost)
  std::string private_key;
};

// Generates a fresh CA and a server certificate signed by it in `dir` (which must exist), valid
// for a day. Fails with the openssl tool's output when it is missing or refuses.
absl::StatusOr<TlsFiles> MakeTestCertificates(const std::string& dir);

class MockUpstream {
 public:
  using Handler =
      std::function<void(const RecordedRequest&, const Behaviour&, Responder&)>;

  // Listens on 127.0.0.1:`port` (0 picks a free port) and serves until destroyed; over TLS when
  // `tls` is given.
  static absl::StatusOr<std::unique_ptr<MockUpstream>> Start(
      uint16_t port = 0, const std::optional<TlsFiles>& tls = std::nullopt);
  ~MockUpstream();
  MockUpstream(const MockUpstream&) = delete;
  MockUpstream& operator=(const MockUpstream&) = delete;

  uint16_t port() const;
  // "http://127.0.0.1:PORT/v1" ("https://" in TLS mode), the base_url an OpenAI-compatible client
  // expects.
  std::string base_url() const;
  // "http://127.0.0.1:PORT/v1beta", the base_url of the Gemini dialect.
  std::string gemini_base_url() const;

  // The behaviour for every request that finds no queued one.
  void SetBehaviour(Behaviour behaviour);
  // Used once, by the next request, ahead of the default (script a failure then a success).
  void EnqueueBehaviour(Behaviour behaviour);
  // Serves requests whose path starts with `path_prefix` (longest prefix wins).
  void AddHandler(std::string path_prefix, Handler handler);
  static Handler HandlerFor(Dialect dialect);

  std::vector<RecordedRequest> requests() const;
  size_t request_count() const;
  bool WaitForRequests(size_t count, std::chrono::milliseconds timeout) const;
  // Responses cut short because the client closed the connection first.
  size_t aborted_responses() const;
  bool WaitForAbortedResponses(size_t count, std::chrono::milliseconds timeout) const;
  size_t connections_accepted() const;
  // TLS mode: the ALPN protocols the latest client offered in its handshake, in its order.
  std::vector<std::string> alpn_offered() const;
  // TLS mode: handshakes that failed (e.g. the client did not trust the certificate).
  size_t tls_handshake_failures() const;

 private:
  struct State;
  explicit MockUpstream(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::mocks

#endif  // SWITCHYARD_TESTS_MOCKS_MOCK_UPSTREAM_H_
