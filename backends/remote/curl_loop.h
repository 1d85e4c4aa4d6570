// One thread that drives every remote HTTP call of the process through one libcurl multi handle.
//
// Why one loop: a multi handle keeps one connection cache (keep-alive and HTTP/2 multiplexing are
// shared by all requests to the same provider), and one thread scales to thousands of concurrent
// streams without a thread each. Requests and cancels enter through a mutex-guarded queue and
// wake the loop with curl_multi_wakeup(); every libcurl call happens on the loop thread.
//
// Timeouts are enforced per transfer: connect (libcurl), first byte (no response header within
// the limit after the start), idle (no bytes for the limit, the low-speed guard that catches a
// stalled stream) and total (libcurl, non-streaming requests only, because a stream's length is
// the model's business). Proxies come from the usual environment variables (http_proxy,
// https_proxy, no_proxy), which libcurl honours because we never set CURLOPT_PROXY.
#ifndef SWITCHYARD_BACKENDS_REMOTE_CURL_LOOP_H_
#define SWITCHYARD_BACKENDS_REMOTE_CURL_LOOP_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::backends {

// Limits of one transfer. InfiniteDuration() means "no limit"; the owner of the config normalises
// zero or missing values to that before building a request.
struct HttpTimeouts {
  absl::Duration connect = absl::Seconds(10);
  // From the start of the transfer until the response status line arrives.
  absl::Duration first_byte = absl::Seconds(60);
  // Longest silence allowed between two received pieces of the response.
  absl::Duration idle = absl::Seconds(30);
  // Whole transfer; ignored for streaming requests.
  absl::Duration total = absl::Seconds(600);
};

struct HttpRequest {
  std::string url;
  // Full header lines, "Name: value". May hold secrets: never logged, never put into errors.
  std::vector<std::string> headers;
  std::string body;  // sent with POST
  bool streaming = false;
  HttpTimeouts timeouts;
  // Response bodies longer than this fail the transfer (a misbehaving upstream must not eat the
  // gateway's memory).
  size_t max_body_bytes = 8 << 20;
  // PEM bundle to verify TLS peers with; empty means the system default. Verification is always on.
  std::string ca_bundle_path;
};

// Status line and headers of the final (non-1xx) response.
struct HttpResponseHead {
  int status = 0;
  // Header names lower-cased; values trimmed.
  std::vector<std::pair<std::string, std::string>> headers;
  // The first header named `name` (lower-case), or empty.
  std::string_view Header(std::string_view name) const;
};

// Receives the result of one transfer. All methods run on the loop thread, in order: at most one
// OnHead, then OnBody calls, then exactly one OnComplete, unless CurlLoop::Cancel() removed the
// transfer first, in which case nothing more is called. They must not block.
class TransferHandler {
 public:
  virtual ~TransferHandler() = default;
  virtual void OnHead(const HttpResponseHead& head) = 0;
  // Return false to abort the transfer at once; OnComplete then follows with kCancelled.
  virtual bool OnBody(std::string_view data) = 0;
  // Everything that arrived in one pass of the loop has gone through OnBody (libcurl hands over
  // each HTTP chunk separately, so several OnBody calls may hold data of one network read).
  // Called once per pass in which OnBody was called.
  virtual void OnBodyDone() {}
  // `status` is the transport outcome: OK when a whole HTTP response arrived, whatever its HTTP
  // status. Errors: kUnavailable (connect/TLS/network failure, loop shutting down),
  // kOutOfRange (body over max_body_bytes), kDeadlineExceeded (any timeout), kCancelled (OnBody
  // returned false).
  virtual void OnComplete(const absl::Status& status) = 0;
};

class CurlLoop {
 public:
  using TransferId = uint64_t;

  // Starts the loop thread. Fails only when libcurl cannot be initialised.
  static absl::StatusOr<std::shared_ptr<CurlLoop>> Create();
  // Stops the thread; transfers still running complete with kUnavailable. May run on the loop
  // thread itself (a handler holding the last reference), which then finishes on its own.
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Queues a transfer and returns at once; it begins after `delay` (a retry's backoff), during
  // which Cancel() drops it like a running one. Thread-safe.
  TransferId Start(HttpRequest request, std::shared_ptr<TransferHandler> handler,
                   absl::Duration delay = absl::ZeroDuration());
  // Aborts a transfer as soon as the loop wakes: its handle is removed from the multi handle
  // (closing the connection) and its handler is released without further calls. Unknown or
  // finished ids are ignored. Thread-safe, also from inside a handler method.
  void Cancel(TransferId id);

  // Number of transfers the loop currently drives or holds for a delayed start; for tests and
  // metrics.
  size_t active_transfers() const;

 private:
  // Everything the loop thread touches. The thread co-owns it, so the last CurlLoop reference may
  // be dropped anywhere, even by a handler running on the loop thread itself.
  class Core;
  CurlLoop(std::shared_ptr<Core> core, std::thread thread);

  const std::shared_ptr<Core> core_;
  std::thread thread_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_CURL_LOOP_H_
