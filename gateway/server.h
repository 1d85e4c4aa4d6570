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

namespace switchyard::backends {
class CurlLoop;
}  // namespace switchyard::backends

namespace switchyard::gateway {

class HttpServer;
class GrpcService;

struct ServerOptions {
  // Threads serving HTTP; 0 = one per CPU the process may run on (its affinity: taskset, a
  // container's cpuset). Each runs an io_context of its own with a libcurl
  // loop attached, and a connection stays on the thread that accepted it (round robin), so an
  // HTTP request and its upstream transfer never change threads.
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
  int http_threads() const { return static_cast<int>(shards_.size()); }
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

  // One HTTP thread: its io_context and the libcurl loop attached to it.
  struct Shard {
    boost::asio::io_context io{1};
    std::shared_ptr<backends::CurlLoop> loop;
    std::thread thread;
  };

  // Declaration order is teardown order reversed: the io_contexts outlive the backends (whose
  // sinks post into them) and the HTTP server (whose sockets live on them). Shutdown() stops the
  // threads and drops the server's loop references first.
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcService> grpc_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::string grpc_host_;
  uint16_t grpc_port_ = 0;
  double drain_timeout_seconds_ = 30;
  bool stopped_ = false;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_SERVER_H_
