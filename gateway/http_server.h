// The OpenAI-compatible HTTP/1.1 endpoint (Boost.Beast): /v1/chat/completions (JSON and SSE),
// /v1/models, /healthz, /metrics.
//
// Threads: the server spreads connections round robin over the io_contexts it is given, each run
// by exactly one thread, so a connection's handlers run one at a time without a strand. Handlers
// never block: a chat request is dispatched to a backend, whose sink posts results back to the
// connection's io_context. A client that disconnects mid-request cancels its backend call at once.
#ifndef SWITCHYARD_GATEWAY_HTTP_SERVER_H_
#define SWITCHYARD_GATEWAY_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "gateway/config.h"
#include "gateway/gateway.h"

namespace switchyard::gateway {

// What a connection may hold or wait for (Config's `limits`).
struct HttpLimits {
  int64_t max_body_bytes = 1 << 20;
  // How long a write may make no progress (no byte taken by the client's socket) before the
  // connection is closed; zero = no limit.
  std::chrono::milliseconds write_timeout{120'000};
  // Stream bytes that may wait behind a write in progress before the stream is cancelled.
  int64_t max_stream_buffer_bytes = 4 << 20;

  static HttpLimits FromConfig(const Config& config);
};

// State every connection of one server shares.
struct HttpShared {
  Gateway* gateway = nullptr;
  HttpLimits limits;
  std::atomic<bool> draining{false};
  // Requests read and not yet fully answered.
  std::atomic<int64_t> active_exchanges{0};
};

class HttpServer {
 public:
  // `contexts` (at least one, each run by one thread) outlive the server; the listener runs on
  // the first.
  HttpServer(std::vector<boost::asio::io_context*> contexts, Gateway& gateway,
             HttpLimits limits);
  ~HttpServer();

  // Binds and starts accepting. Port 0 picks a free port; port() tells which.
  absl::Status Start(const ListenerConfig& listener);
  uint16_t port() const { return port_; }
  std::string address() const;

  // Stops accepting; connections finish their current exchange and close.
  void BeginDrain();
  int64_t active_exchanges() const { return shared_->active_exchanges.load(); }

 private:
  void Accept();

  const std::vector<boost::asio::io_context*> contexts_;
  size_t next_context_ = 0;  // where the next connection goes; on the acceptor's thread
  boost::asio::ip::tcp::acceptor acceptor_;
  // After a failed accept (out of file descriptors, say), the next try waits on this timer: the
  // listening socket stays readable, so trying again at once would spin. On the acceptor's
  // thread, as is the count of failures in a row.
  boost::asio::steady_timer accept_retry_;
  int64_t accept_failures_ = 0;
  std::shared_ptr<HttpShared> shared_;
  std::string host_;
  uint16_t port_ = 0;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_HTTP_SERVER_H_
