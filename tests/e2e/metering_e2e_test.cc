// The built `switchyard` binary with API keys and budgets: `hash-key`, keys and prompts never in
// the log or /metrics, and spend that survives a kill -9 and restart through the state file.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

const std::string kBinary = SWITCHYARD_BINARY;
constexpr char kKey[] = "sk-e2e-acme-5f1c9e27d3";
constexpr char kWrongKey[] = "sk-e2e-wrong-77aa01";
constexpr char kPromptMarker[] = "PROMPT-MARKER-d41d8cd9";

double Sample(const std::string& metrics, const std::string& series) {
  const size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class MeteringE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("switchyard_metering_e2e_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    absl::StatusOr<std::unique_ptr<mocks::MockUpstream>> upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string HashKey(const std::string& key) {
    RunResult result = RunCommand({kBinary, "hash-key"}, key + "\n");
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return result.out.substr(0, result.out.find('\n'));
  }

  std::string WriteConfig() {
    const std::string path = (dir_ / "switchyard.yaml").string();
    std::ofstream(path) << R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth:
  keys:
    - { name: ci-bot, tenant: acme, sha256: )"
                        << HashKey(kKey) << R"( }
tenants:
  acme: { usd_per_day: 1.0, usd_per_month: 10 }
metering: { state_file: state.json, reference_target: cheap }
targets:
  - name: cheap
    kind: openai_compatible
    base_url: )" << upstream_->base_url()
                        << R"(
    model: cheap-small
    price: { input_per_million: 1000, output_per_million: 2000 }
policy:
  default: cheap
)";
    return path;
  }

  // Starts the server; returns its HTTP base URL.
  std::string Serve(const std::string& config) {
    child_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBinary, "serve", "--config", config});
    std::optional<std::string> line = child_->WaitForLine("listening", 60);
    EXPECT_TRUE(line.has_value()) << child_->err();
    std::smatch match;
    if (!line || !std::regex_search(*line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+)"))) {
      return "";
    }
    return "http://127.0.0.1:" + match[1].str();
  }

  static std::string Body(const std::string& text) {
    return json{
        {"model", "auto"}, {"max_tokens", 4}, {"messages", {{{"role", "user"}, {"content", text}}}}}
        .dump();
  }

  static HttpOptions Bearer(const std::string& key) {
    HttpOptions options;
    options.headers.push_back("Authorization: Bearer " + key);
    return options;
  }

  std::filesystem::path dir_;
  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<ChildProcess> child_;
};

TEST_F(MeteringE2eTest, HashKeyPrintsTheSha256OfStdin) {
  RunResult result = RunCommand({kBinary, "hash-key"}, "abc\n");
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n");
  RunResult empty = RunCommand({kBinary, "hash-key"}, "");
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_THAT(empty.err, HasSubstr("got none"));
}

TEST_F(MeteringE2eTest, KeysAndPromptsNeverReachTheLogOrMetrics) {
  const std::string base = Serve(WriteConfig());
  ASSERT_FALSE(base.empty());
  HttpResult ok = HttpPost(base + "/v1/chat/completions",
                           Body(std::string("tell me about ") + kPromptMarker), Bearer(kKey));
  ASSERT_EQ(ok.status, 200) << ok.body;
  HttpResult wrong = HttpPost(base + "/v1/chat/completions",
                              Body(std::string("and ") + kPromptMarker), Bearer(kWrongKey));
  ASSERT_EQ(wrong.status, 401);
  HttpOptions x_api_key;
  x_api_key.headers.push_back(std::string("x-api-key: ") + kWrongKey);
  ASSERT_EQ(HttpGet(base + "/v1/models", x_api_key).status, 401);
  const std::string metrics = HttpGet(base + "/metrics").body;
  EXPECT_GT(Sample(metrics, R"(switchyard_spend_usd_total{tenant="acme",target="cheap"})"), 0);
  child_->Signal(SIGTERM);
  EXPECT_EQ(child_->Wait(30), 0);
  const std::string log = child_->err();
  ASSERT_THAT(log, HasSubstr("listening"));
  for (const std::string& secret :
       {std::string(kKey), std::string(kWrongKey), std::string(kPromptMarker)}) {
    EXPECT_THAT(log, Not(HasSubstr(secret)));
    EXPECT_THAT(metrics, Not(HasSubstr(secret)));
  }
  EXPECT_THAT(ReadFile((dir_ / "state.json").string()), Not(HasSubstr(kKey)));
}

TEST_F(MeteringE2eTest, SpendSurvivesKillAndRestart) {
  const std::string config = WriteConfig();
  const std::string state = (dir_ / "state.json").string();
  std::string base = Serve(config);
  ASSERT_FALSE(base.empty());
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(HttpPost(base + "/v1/chat/completions", Body("hi"), Bearer(kKey)).status, 200);
  }
  const double remaining = Sample(HttpGet(base + "/metrics").body,
                                  R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})");
  EXPECT_NEAR(remaining, 1.0 - 3 * 0.015, 1e-9);
  // The state file is rewritten shortly after each change; wait for the third request in it.
  bool written = false;
  for (int i = 0; i < 100 && !written; ++i) {
    json saved = json::parse(ReadFile(state), nullptr, /*allow_exceptions=*/false);
    written = saved.is_object() && saved["scopes"].contains("tenant:acme") &&
              saved["scopes"]["tenant:acme"]["day_usd"].get<double>() > 0.0449;
    if (!written) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(written) << ReadFile(state);
  child_->Signal(SIGKILL);
  child_->Wait(10);

  base = Serve(config);
  ASSERT_FALSE(base.empty());
  const std::string metrics = HttpGet(base + "/metrics").body;
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="day"})"),
              remaining, 1e-9);
  EXPECT_NEAR(Sample(metrics, R"(switchyard_budget_remaining_usd{tenant="acme",window="month"})"),
              10 - 3 * 0.015, 1e-9);
  child_->Signal(SIGTERM);
  EXPECT_EQ(child_->Wait(30), 0);

  // A state file that is not ours is refused at start with its name, not silently reset.
  std::ofstream(state) << "{ not json";
  RunResult refused = RunCommand({kBinary, "serve", "--config", config}, "", 30);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr(state + ": cannot read the metering state"));
}

}  // namespace
}  // namespace switchyard::testing
