// One event loop that drives every remote HTTP call of the process through one libcurl multi
// handle, with libcurl's multi-socket API on Boost.Asio: Asio waits on libcurl's sockets and
// timer and tells libcurl what became ready (curl_multi_socket_action). Plain-HTTP calls take a
// shorter road on the same loop, without libcurl (LoopOptions::direct_http).
//
// Why one loop: a multi handle keeps one connection cache (keep-alive and HTTP/2 multiplexing are
// shared by all requests to the same provider), and one loop scales to thousands of concurrent
// streams without a thread each. Why Asio: attached to the HTTP server's io_context, a request
// goes HTTP read -> policy -> upstream send -> upstream answer -> client write on one thread,
// without a hand-off (each costs a context switch and a wake-up). Callers without an event loop
// (gRPC-only use, CLI tools, tests) get a loop on its own thread.
//
// Several loops may run in one process: a server with one io_context per thread attaches one loop
// to each and binds it to that thread (BindToThisThread), and a remote call starts on the loop of
// the thread it is made on (ForThisThread), falling back to a loop of its own otherwise.
//
// Threads: Start() and Cancel() may be called from any thread. Cancel() posts to the loop's
// executor; so does Start(), except that a plain-HTTP request due now, started by another thread
// while the loop is idle, is written at once on the calling thread (under the loop's mutex),
// which saves waking the loop's thread for it. Every libcurl call and every TransferHandler call
// runs on a thread of that executor, one at a time (a mutex serialises them when several threads
// run the executor). Sockets are opened and closed for libcurl by the loop
// (CURLOPT_OPENSOCKETFUNCTION / CLOSESOCKETFUNCTION), so each fd has one owner, an Asio
// descriptor. Easy handles are reused (curl_easy_reset) from a small free list.
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
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "boost/asio/any_io_executor.hpp"

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

// Receives the result of one transfer. All methods run on the loop, one at a time, in order: at
// most one OnHead, then OnBody calls, then exactly one OnComplete, unless CurlLoop::Cancel()
// removed the transfer first, in which case nothing more is called. They must not block.
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

struct LoopOptions {
  // Plain "http://" URLs go through the loop's own HTTP/1.1 client instead of libcurl: the
  // loop's Asio sockets, Boost.Beast's response parser, and a pool of idle connections per origin
  // (up to 128, each for at most 118 s, libcurl's default). A request that finds its pooled
  // connection closed by the server before any reply is sent once more on a new one, as libcurl
  // does. A request costs one write and one read where libcurl adds two poll() calls, an epoll
  // re-arm, a header callback per line and its own bookkeeping. HTTPS, URLs with credentials, and
  // every URL while a proxy variable (http_proxy, all_proxy, ALL_PROXY) is set go through libcurl.
  bool direct_http = true;
};

class CurlLoop : public std::enable_shared_from_this<CurlLoop> {
 public:
  using TransferId = uint64_t;

  // Starts a loop on its own thread. Fails only when libcurl cannot be initialised.
  static absl::StatusOr<std::shared_ptr<CurlLoop>> Create(LoopOptions options = {});
  // A loop on `executor` (an io_context's, or a strand of one), run by whatever threads run it;
  // no thread of its own. The io_context must outlive the loop; once it stops running, transfers
  // simply make no progress until the loop is destroyed.
  static absl::StatusOr<std::shared_ptr<CurlLoop>> Create(boost::asio::any_io_executor executor,
                                                          LoopOptions options = {});
  // Stops the loop; transfers still running complete with kUnavailable (on the loop's own thread,
  // or on the calling thread for an attached loop). May run inside a handler (holding the last
  // reference): the loop then shuts down when that handler returns.
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Queues a transfer and returns at once (never calls the handler itself); it begins after
  // `delay` (a retry's backoff), during which Cancel() drops it like a running one. Thread-safe;
  // called from a thread that does not run the loop it may take the loop's lock (to send a
  // plain-HTTP request at once), so the caller must not hold a lock that the handler's methods
  // take.
  TransferId Start(HttpRequest request, std::shared_ptr<TransferHandler> handler,
                   absl::Duration delay = absl::ZeroDuration());
  // The same with a request that several transfers may share (a request's retries): the loop
  // keeps it until the transfer ends, and never changes it.
  TransferId Start(std::shared_ptr<const HttpRequest> request,
                   std::shared_ptr<TransferHandler> handler,
                   absl::Duration delay = absl::ZeroDuration());
  // Aborts a transfer as soon as the loop runs next: its handle is removed from the multi handle
  // (closing the connection) and its handler is released without further calls. Unknown or
  // finished ids are ignored. Thread-safe, also from inside a handler method.
  void Cancel(TransferId id);

  // Number of transfers the loop currently drives or holds for a delayed start; for tests and
  // metrics.
  size_t active_transfers() const;

  // Makes `loop` the calling thread's loop (null: none). A server thread that runs an
  // io_context with a loop attached binds it, so the upstream transfers of the requests it
  // serves stay on that thread. The binding holds no reference: unbind before the loop ends.
  static void BindToThisThread(CurlLoop* loop);
  // The calling thread's loop if one is bound, else `fallback`.
  static std::shared_ptr<CurlLoop> ForThisThread(const std::shared_ptr<CurlLoop>& fallback);

 private:
  // Everything the loop touches. Pending Asio operations co-own it, so the last CurlLoop reference
  // may be dropped anywhere, even by a handler running on the loop itself.
  class Core;
  // The io_context and thread of a loop created without an executor.
  struct OwnThread;
  CurlLoop(std::shared_ptr<Core> core, std::shared_ptr<OwnThread> own);

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<OwnThread> own_;  // null when attached to an executor
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_CURL_LOOP_H_
