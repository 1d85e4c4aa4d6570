// The real gateway with the real llama.cpp engine on the shared models: per-model engine metrics
// on /metrics, models loaded on demand and unloaded when idle, /readyz, the memory budget.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::HttpGet;
using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kModels = SWITCHYARD_SHARED_MODELS;

// The value of the sample `series` (name and labels exactly as rendered), if present.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  const std::string padded = "\n" + text;
  const std::string prefix = "\n" + series + " ";
  const size_t at = padded.find(prefix);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(padded.c_str() + at + prefix.size(), nullptr);
}

std::unique_ptr<Server> StartServer(const std::string& targets_and_limits,
                                    const std::string& default_target = "local") {
  const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
models: { dirs: [")" + kModels + R"("] }
)" + targets_and_limits + R"(
policy:
  default: )" + default_target + "\n";
  absl::StatusOr<Config> config = ParseConfig(yaml, "local_engine_test.yaml", "");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  return *std::move(server);
}

std::string ChatBody(const std::string& model, int max_tokens) {
  return json{{"model", model},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}}}
      .dump();
}

TEST(LocalEngineServerTest, EngineMetricsPerTarget) {
  std::unique_ptr<Server> server = StartServer(R"(
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 2, context: 256 }
)");
  ASSERT_NE(server, nullptr);
  const std::string base = "http://127.0.0.1:" + std::to_string(server->http_port());

  HttpResult before = HttpGet(base + "/metrics");
  ASSERT_EQ(before.status, 200);
  EXPECT_EQ(Sample(before.body, R"(switchyard_engine_tokens_completion_total{target="local"})"), 0);

  HttpResult chat = HttpPost(base + "/v1/chat/completions", ChatBody("local", 12));
  ASSERT_EQ(chat.status, 200) << chat.body;
  const json usage = json::parse(chat.body)["usage"];

  HttpResult metrics = HttpGet(base + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string& text = metrics.body;
  auto value = [&](const std::string& name) {
    return Sample(text, name + R"({target="local"})");
  };
  EXPECT_EQ(value("switchyard_engine_queue_depth"), 0);
  EXPECT_EQ(value("switchyard_engine_slots_active"), 0);
  EXPECT_EQ(value("switchyard_engine_slots"), 2);
  EXPECT_EQ(value("switchyard_engine_tokens_prompt_total"), usage["prompt_tokens"].get<double>());
  const std::optional<double> completion = value("switchyard_engine_tokens_completion_total");
  ASSERT_TRUE(completion.has_value()) << text;
  // The engine counts every sampled token, a stop token too; usage counts emitted ones.
  EXPECT_GE(*completion, usage["completion_tokens"].get<double>());
  EXPECT_GE(*completion, 1);
  EXPECT_GT(value("switchyard_engine_model_bytes").value_or(0), 0);
  EXPECT_EQ(value("switchyard_engine_time_to_first_token_seconds_count"), 1);
  EXPECT_GT(value("switchyard_engine_time_to_first_token_seconds_sum").value_or(0), 0);
  // One inter-token gap per token after the first.
  EXPECT_EQ(value("switchyard_engine_inter_token_seconds_count"), *completion - 1);
  EXPECT_THAT(text, HasSubstr("# TYPE switchyard_engine_tokens_prompt_total counter"));
  EXPECT_THAT(text, HasSubstr("# TYPE switchyard_engine_queue_depth gauge"));
  EXPECT_THAT(text, HasSubstr("# TYPE switchyard_engine_inter_token_seconds histogram"));

  if (access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool not installed";
  testing::RunResult check = testing::RunCommand({"/usr/bin/promtool", "check", "metrics"}, text);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST(LocalEngineServerTest, ReloadExportsTheEngineMetricsOfAddedTargetsAndDropsRemovedOnes) {
  const std::string one = R"(
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 2, context: 256 }
)";
  std::unique_ptr<Server> server = StartServer(one);
  ASSERT_NE(server, nullptr);
  const std::string base = "http://127.0.0.1:" + std::to_string(server->http_port());
  const std::string slots_of_second = R"(switchyard_engine_slots{target="second"})";
  EXPECT_EQ(Sample(HttpGet(base + "/metrics").body, slots_of_second), std::nullopt);

  const std::string path = ::testing::TempDir() + "/engine_reload_test.yaml";
  std::ofstream(path) << R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
models: { dirs: [")" + kModels + R"("] }
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 2, context: 256 }
  - { name: second, kind: local, model: stories260K.gguf, threads: 1, slots: 3, context: 256 }
policy:
  default: local
)";
  ASSERT_TRUE(server->ReloadFromFile(path).ok());
  HttpResult answer = HttpPost(base + "/v1/chat/completions", ChatBody("second", 5));
  ASSERT_EQ(answer.status, 200) << answer.body;
  std::string text = HttpGet(base + "/metrics").body;
  EXPECT_EQ(Sample(text, slots_of_second), 3);
  EXPECT_EQ(Sample(text, R"(switchyard_engine_tokens_completion_total{target="second"})"), 5);
  EXPECT_EQ(Sample(text, R"(switchyard_engine_time_to_first_token_seconds_count{target="second"})"),
            1);
  EXPECT_EQ(Sample(text, R"(switchyard_engine_slots{target="local"})"), 2);

  // Removed again: its gauges go (the histogram keeps what it observed).
  std::ofstream(path, std::ios::trunc) << R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
models: { dirs: [")" + kModels + R"("] }
)" + one + R"(
policy:
  default: local
)";
  ASSERT_TRUE(server->ReloadFromFile(path).ok());
  text = HttpGet(base + "/metrics").body;
  EXPECT_EQ(Sample(text, slots_of_second), std::nullopt);
  EXPECT_EQ(Sample(text, R"(switchyard_engine_slots{target="local"})"), 2);
}

json Readyz(const std::string& base, long* status) {
  HttpResult result = HttpGet(base + "/readyz");
  *status = result.status;
  return json::parse(result.body, nullptr, /*allow_exceptions=*/false);
}

// Polls `done` every 50 ms for up to `seconds`.
bool WaitFor(const std::function<bool()>& done, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// stories260K.gguf is 1185376 bytes and llama-2-tiny-random.gguf 1750560: a 2000000-byte budget
// holds either one alone, never both.
TEST(LocalEngineServerTest, OnDemandLoadIdleUnloadAndBudget) {
  std::unique_ptr<Server> server = StartServer(R"(
limits: { local_model_memory_bytes: 2000000 }
targets:
  - { name: stories, kind: local, model: stories260K.gguf, threads: 1, slots: 1, context: 256,
      load: on_demand, idle_unload_seconds: 1 }
  - { name: tiny, kind: local, model: llama-2-tiny-random.gguf, threads: 1, slots: 1,
      context: 256, load: on_demand }
)",
                                              "stories");
  ASSERT_NE(server, nullptr);
  const std::string base = "http://127.0.0.1:" + std::to_string(server->http_port());

  // Nothing loaded yet, and on-demand models do not hold readiness back.
  long status = 0;
  json ready = Readyz(base, &status);
  EXPECT_EQ(status, 200) << ready.dump();
  EXPECT_EQ(ready["status"], "ready");
  EXPECT_EQ(ready["targets"]["stories"]["state"], "unloaded");
  EXPECT_EQ(ready["targets"]["stories"]["load"], "on_demand");
  EXPECT_EQ(ready["targets"]["tiny"]["state"], "unloaded");
  EXPECT_THAT(HttpGet(base + "/metrics").body,
              HasSubstr("switchyard_engine_loaded{target=\"stories\"} 0"));

  // The first request loads the model and is answered like any other.
  HttpResult first = HttpPost(base + "/v1/chat/completions", ChatBody("stories", 8));
  ASSERT_EQ(first.status, 200) << first.body;
  const std::string text = json::parse(first.body)["choices"][0]["message"]["content"];
  EXPECT_FALSE(text.empty());
  ready = Readyz(base, &status);
  EXPECT_EQ(ready["targets"]["stories"]["state"], "loaded");
  EXPECT_EQ(ready["targets"]["stories"]["file_bytes"], 1185376);
  EXPECT_GT(ready["targets"]["stories"]["model_bytes"].get<int64_t>(), 0);

  // The other model does not fit next to it: 503, a clear message, and the gateway serves on.
  HttpResult refused = HttpPost(base + "/v1/chat/completions", ChatBody("tiny", 8));
  EXPECT_EQ(refused.status, 503) << refused.body;
  const std::string message = json::parse(refused.body)["error"]["message"];
  EXPECT_THAT(message, HasSubstr("llama-2-tiny-random.gguf"));
  EXPECT_THAT(message, HasSubstr("local model memory budget"));
  EXPECT_THAT(message, HasSubstr("limits.local_model_memory_bytes"));
  ready = Readyz(base, &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(ready["targets"]["tiny"]["state"], "failed");
  EXPECT_THAT(ready["targets"]["tiny"]["error"].get<std::string>(),
              HasSubstr("does not fit in the local model memory budget"));

  // gRPC sees the same refusal as UNAVAILABLE.
  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  request.set_model("tiny");
  request.set_max_tokens(4);
  v1::Message* user = request.add_messages();
  user->set_role("user");
  user->set_content("Once upon a time");
  v1::ChatResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status grpc_status = stub->Chat(&context, request, &response);
  EXPECT_EQ(grpc_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(grpc_status.error_message(), HasSubstr("local model memory budget"));

  // After a second without requests the first model unloads, frees the budget, and the second
  // one loads.
  EXPECT_TRUE(WaitFor(
      [&] { return Readyz(base, &status)["targets"]["stories"]["state"] == "unloaded"; }, 15));
  EXPECT_THAT(HttpGet(base + "/metrics").body,
              HasSubstr("switchyard_engine_loaded{target=\"stories\"} 0"));
  HttpResult second = HttpPost(base + "/v1/chat/completions", ChatBody("tiny", 8));
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(Readyz(base, &status)["targets"]["tiny"]["state"], "loaded");

  // Counters survive the unload: the completion tokens of the first load still count.
  const std::string metrics = HttpGet(base + "/metrics").body;
  EXPECT_GE(Sample(metrics, R"(switchyard_engine_tokens_completion_total{target="stories"})")
                .value_or(0),
            1);
}

TEST(LocalEngineServerTest, StartupModelOverBudgetIsRefusedAndGatewayServesTheRest) {
  std::unique_ptr<Server> server = StartServer(R"(
limits: { local_model_memory_bytes: 2000000 }
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 1, context: 256 }
  - { name: tiny, kind: local, model: llama-2-tiny-random.gguf, threads: 1, slots: 1,
      context: 256 }
)");
  ASSERT_NE(server, nullptr);
  const std::string base = "http://127.0.0.1:" + std::to_string(server->http_port());

  long status = 0;
  json ready = Readyz(base, &status);
  EXPECT_EQ(status, 503) << ready.dump();
  EXPECT_EQ(ready["status"], "not_ready");
  EXPECT_EQ(ready["targets"]["local"]["state"], "loaded");
  EXPECT_EQ(ready["targets"]["local"]["ready"], true);
  EXPECT_EQ(ready["targets"]["tiny"]["state"], "failed");
  EXPECT_EQ(ready["targets"]["tiny"]["ready"], false);
  EXPECT_EQ(HttpGet(base + "/healthz").status, 200);

  HttpResult ok = HttpPost(base + "/v1/chat/completions", ChatBody("local", 4));
  EXPECT_EQ(ok.status, 200) << ok.body;
  HttpResult refused = HttpPost(base + "/v1/chat/completions", ChatBody("tiny", 4));
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("local model memory budget"));
}

TEST(LocalEngineServerTest, ReadyWhenEveryStartupModelIsLoaded) {
  std::unique_ptr<Server> server = StartServer(R"(
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, slots: 1, context: 256 }
)");
  ASSERT_NE(server, nullptr);
  long status = 0;
  json ready = Readyz("http://127.0.0.1:" + std::to_string(server->http_port()), &status);
  EXPECT_EQ(status, 200) << ready.dump();
  EXPECT_EQ(ready["status"], "ready");
  EXPECT_EQ(ready["targets"]["local"]["kind"], "local");
  EXPECT_EQ(ready["targets"]["local"]["load"], "startup");
  EXPECT_EQ(ready["targets"]["local"]["state"], "loaded");
}

}  // namespace
}  // namespace switchyard::gateway
