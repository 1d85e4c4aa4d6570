// Incremental parser for Server-Sent Events (the WHATWG "text/event-stream" format), as used by
// streaming LLM APIs. Bytes go in as they arrive from the network, split anywhere; complete events
// come out. Kept free of I/O so it is tested on its own.
#ifndef SWITCHYARD_BACKENDS_REMOTE_SSE_PARSER_H_
#define SWITCHYARD_BACKENDS_REMOTE_SSE_PARSER_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace switchyard::backends {

struct SseEvent {
  std::string event;  // the "event:" field; empty means "message"
  std::string data;   // "data:" lines joined with '\n'
  std::string id;
};

// Follows the spec: lines end in CRLF, LF or CR (a CRLF split across two Feed calls counts once);
// a blank line dispatches the event; lines starting with ':' are comments; one space after the
// field's colon is dropped; unknown fields are ignored; an event without data is not dispatched.
class SseParser {
 public:
  // `max_line_bytes` bounds memory when an upstream never ends a line.
  explicit SseParser(size_t max_line_bytes = 1 << 20) : max_line_bytes_(max_line_bytes) {}

  // Calls `on_event` for each event completed by `bytes`, in order. The event lives in the
  // parser and is valid only during the call, which lets its buffers serve every event of a
  // stream: no allocation per event once they have grown. `on_event` returns false to stop; Feed
  // then returns at once, drops the rest of `bytes`, and the parser must not be fed again. Fails
  // (and stays failed) on a line longer than the limit, after the events before that line.
  absl::Status Feed(std::string_view bytes, absl::FunctionRef<bool(const SseEvent&)> on_event);

  // True when bytes of an undispatched event are buffered: a stream that ends here was cut off.
  bool HasPartialEvent() const;

 private:
  // False when `on_event` asked to stop.
  bool ProcessLine(std::string_view line, absl::FunctionRef<bool(const SseEvent&)> on_event);

  const size_t max_line_bytes_;
  std::string line_;
  bool skip_next_lf_ = false;  // the previous chunk ended in CR
  bool has_data_ = false;
  SseEvent pending_;
  absl::Status status_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_SSE_PARSER_H_
