#include "gateway/server.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backends/remote/curl_loop.h"
#include "boost/asio/executor_work_guard.hpp"
#include "gateway/backend_factory.h"
#include "gateway/grpc_service.h"
#include "gateway/http_server.h"
#include "gateway/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace switchyard::gateway {
namespace {

std::string HostPort(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

// The CPUs this process may run on: fewer than the machine's under taskset or a container's
// cpuset, where a thread per machine CPU would only take turns.
int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Runs `io` until it is stopped. With a `spin` the thread, once out of ready work, keeps polling
// (epoll_wait with no timeout) for that long before it blocks: at low concurrency the next event
// of a request (the upstream's answer, the client's next request) often comes within tens of
// microseconds, and taking it awake saves the sleep and the wake-up (two context switches, and
// on a virtual machine a trip through the hypervisor) for at most `spin` of CPU. An idle thread
// sleeps after one spin; a busy one never runs out of work to spin on.
void RunEventLoop(boost::asio::io_context& io, std::chrono::microseconds spin) {
  if (spin.count() <= 0) {
    io.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  Clock::time_point last_work = Clock::now();
  while (!io.stopped()) {
    if (io.poll() > 0) {
      last_work = Clock::now();
    } else if (Clock::now() - last_work >= spin) {
      io.run_one();
      last_work = Clock::now();
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Config config, ServerOptions options) {
  std::unique_ptr<Server> server(new Server());
  const ListenerConfig http_listener = config.http;
  const ListenerConfig grpc_listener = config.grpc;
  const int64_t max_body_bytes = config.max_body_bytes;
  const HttpLimits http_limits = HttpLimits::FromConfig(config);
  const std::chrono::microseconds busy_poll(config.busy_poll_microseconds);
  server->drain_timeout_seconds_ = config.drain_timeout_seconds;

  BackendFactory factory =
      options.backend_factory ? options.backend_factory : MakeDefaultBackendFactory();
  absl::StatusOr<std::unique_ptr<Gateway>> gateway =
      Gateway::Create(std::move(config), std::move(factory));
  if (!gateway.ok()) return gateway.status();
  server->gateway_ = *std::move(gateway);

  const int http_threads = options.http_threads > 0 ? options.http_threads : UsableCpus();
  std::vector<boost::asio::io_context*> contexts;
  for (int i = 0; i < http_threads; ++i) {
    auto shard = std::make_unique<Shard>();
    absl::StatusOr<std::shared_ptr<backends::CurlLoop>> loop =
        backends::CurlLoop::Create(shard->io.get_executor());
    if (!loop.ok()) return loop.status();
    shard->loop = *std::move(loop);
    contexts.push_back(&shard->io);
    server->shards_.push_back(std::move(shard));
  }
  server->http_ = std::make_unique<HttpServer>(contexts, *server->gateway_, http_limits);
  if (absl::Status status = server->http_->Start(http_listener); !status.ok()) return status;

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  server->grpc_service_ = std::make_unique<GrpcService>(*server->gateway_);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(HostPort(grpc_listener.host, grpc_listener.port),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(server->grpc_service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_body_bytes));
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("grpc listener: cannot listen on ",
                                               HostPort(grpc_listener.host, grpc_listener.port)));
  }
  server->grpc_host_ = grpc_listener.host;
  server->grpc_port_ = static_cast<uint16_t>(bound_port);

  for (const std::unique_ptr<Shard>& shard : server->shards_) {
    shard->thread = std::thread([shard = shard.get(), busy_poll] {
      backends::CurlLoop::BindToThisThread(shard->loop.get());
      auto guard = boost::asio::make_work_guard(shard->io);
      RunEventLoop(shard->io, busy_poll);
      backends::CurlLoop::BindToThisThread(nullptr);
    });
  }
  return server;
}

Server::~Server() { Shutdown(); }

absl::Status Server::ReloadFromFile(const std::string& path) {
  absl::StatusOr<Config> config = LoadConfigFile(path);
  absl::Status status = config.ok() ? gateway_->Reload(*std::move(config)) : config.status();
  if (!status.ok()) {
    gateway_->metrics().ObserveReloadFailure();
    Log(LogLevel::kError, "reload refused, the running config keeps serving: ", status.message());
    return status;
  }
  Log(LogLevel::kInfo, "reloaded ", path, " (policy ", gateway_->runtime()->config.version, ")");
  return absl::OkStatus();
}

uint16_t Server::http_port() const { return http_->port(); }

std::string Server::ListeningLine() const {
  return absl::StrCat("listening http=", http_->address(),
                      " grpc=", HostPort(grpc_host_, grpc_port_));
}

void Server::Shutdown() {
  if (stopped_) return;
  stopped_ = true;
  // Start() may have failed halfway; tear down only what was built.
  if (http_) http_->BeginDrain();
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(drain_timeout_seconds_));
  // gRPC waits for its own in-flight calls until the deadline, then cancels the rest.
  if (grpc_server_) grpc_server_->Shutdown(deadline);
  auto busy = [this] {
    return (gateway_ && gateway_->in_flight() > 0) || (http_ && http_->active_exchanges() > 0);
  };
  while (busy() && std::chrono::system_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (gateway_ && gateway_->in_flight() > 0) {
    Log(LogLevel::kWarning, "drain timeout: ", gateway_->in_flight(),
        " requests still in flight are being cut off");
  }
  for (const std::unique_ptr<Shard>& shard : shards_) shard->io.stop();
  for (const std::unique_ptr<Shard>& shard : shards_) {
    if (shard->thread.joinable()) shard->thread.join();
    // With no call left holding it, the loop ends here, while the gateway exists. Calls still in
    // flight after the drain keep it, idle, since its io_context runs no more.
    shard->loop.reset();
  }
  if (grpc_server_) grpc_server_->Wait();
}

}  // namespace switchyard::gateway
