// The whole gateway process minus the CLI: backends, the HTTP and gRPC servers, and the drain on
// shutdown. Tests run the real server in-process through this class.
#ifndef SWITCHYARD_GATEWAY_SERVER_H_
#define SWITCHYARD_GATEWAY_SERVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "grpcpp/server.h"

namespace switchyard::gateway {

class HttpServer;
class GrpcService;

struct ServerOptions {
  // Threads running the HTTP server; 0 = one per two cores (at least one). Every request also
  // uses the remote backends' libcurl thread, and a second HTTP thread on a two-core machine
  // mostly adds hand-offs between threads: a streamed request cost 25% more CPU with two.
  int http_threads = 0;
  // Builds backends; empty = the real ones (llama.cpp engine, libcurl providers).
  BackendFactory backend_factory;
};

class Server {
 public:
  // Loads models and binds both listeners; returns once the server is accepting.
  static absl::StatusOr<std::unique_ptr<Server>> Start(Config config, ServerOptions options = {});
  ~Server();

  uint16_t http_port() const;
  uint16_t grpc_port() const { return grpc_port_; }
  // "listening http=HOST:PORT grpc=HOST:PORT"
  std::string ListeningLine() const;

  Gateway& gateway() { return *gateway_; }

  // Re-reads `path` and swaps it in (Gateway::Reload). An invalid file is refused with a logged
  // error and counted; the running config keeps serving.
  absl::Status ReloadFromFile(const std::string& path);

  // Stops accepting, waits up to the configured drain timeout for in-flight requests, then stops
  // everything. Idempotent.
  void Shutdown();

 private:
  Server() = default;

  // Declaration order is teardown order reversed: the io_context outlives the backends (whose
  // sinks post into it) and the HTTP server (whose sockets live on it).
  boost::asio::io_context io_;
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcService> grpc_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::vector<std::thread> threads_;
  std::string grpc_host_;
  uint16_t grpc_port_ = 0;
  double drain_timeout_seconds_ = 30;
  bool stopped_ = false;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_SERVER_H_
