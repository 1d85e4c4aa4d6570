// The real gateway with the real llama.cpp engine on stories260K.gguf: per-model engine metrics
// on /metrics.
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

std::unique_ptr<Server> StartServer(const std::string& targets_and_limits) {
  const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
models: { dirs: [")" + kModels + R"("] }
)" + targets_and_limits + R"(
policy:
  default: local
)";
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

}  // namespace
}  // namespace switchyard::gateway
