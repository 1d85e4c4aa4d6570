// A short smoke run of the load tool against the real binary and the load mock: it works over
// HTTP and gRPC, unary and streamed, closed and open loop, and every request it says it sent is
// counted once by the gateway and once by the upstream. Speed is not asserted here (see
// scripts/bench_gateway.sh and BENCHMARKS.md).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kGateway = SWITCHYARD_BIN;
const std::string kLoad = SWITCHYARD_LOAD_BIN;
const std::string kMock = SWITCHYARD_LOAD_MOCK_BIN;
const std::string kGrpcFloor = SWITCHYARD_GRPC_FLOOR_BIN;
constexpr int kTokens = 8;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Sums every sample of a Prometheus counter family in a /metrics page.
double CounterSum(const std::string& page, const std::string& name) {
  double sum = 0;
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

class LoadSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mock_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kMock, "--port", "0", "--tokens", std::to_string(kTokens)});
    std::optional<std::string> mock_line = mock_->WaitForLine("listening", 30);
    ASSERT_TRUE(mock_line.has_value()) << mock_->err();
    std::smatch match;
    ASSERT_TRUE(std::regex_search(*mock_line, match, std::regex("127\\.0\\.0\\.1:(\\d+)")));
    mock_http_ = "http://127.0.0.1:" + match[1].str();

    // The committed bench config, pointed at this mock.
    std::string config = ReadFile(std::string(SWITCHYARD_SOURCE_DIR) + "/tests/load/bench.yaml");
    ASSERT_THAT(config, HasSubstr("base_url: @MOCK_URL@"));
    for (size_t at; (at = config.find("@MOCK_URL@")) != std::string::npos;) {
      config.replace(at, 10, mock_http_ + "/v1");
    }
    config_path_ = ::testing::TempDir() + "load_smoke_" + std::to_string(getpid()) + ".yaml";
    std::ofstream(config_path_) << config;

    gateway_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kGateway, "serve", "--config", config_path_});
    std::optional<std::string> line = gateway_->WaitForLine("listening", 60);
    ASSERT_TRUE(line.has_value()) << gateway_->err();
    ASSERT_TRUE(std::regex_search(
        *line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+) grpc=127\\.0\\.0\\.1:(\\d+)")))
        << *line;
    http_ = "http://127.0.0.1:" + match[1].str();
    grpc_ = "127.0.0.1:" + match[2].str();
  }

  void TearDown() override {
    gateway_.reset();
    mock_.reset();
    if (!config_path_.empty()) std::filesystem::remove(config_path_);
  }

  // Runs the load tool with --json; returns its report (empty on a malformed one).
  json Load(std::vector<std::string> args, int expected_exit = 0) {
    args.insert(args.begin(), kLoad);
    args.push_back("--json");
    RunResult run = RunCommand(args, "", 60);
    EXPECT_EQ(run.exit_code, expected_exit) << run.out << run.err;
    json report = json::parse(run.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(report.is_object()) << run.out << run.err;
    return report.is_object() ? report : json::object();
  }

  std::unique_ptr<ChildProcess> mock_;
  std::unique_ptr<ChildProcess> gateway_;
  std::string config_path_;
  std::string mock_http_;
  std::string http_;
  std::string grpc_;
};

TEST_F(LoadSmokeTest, CountsEveryRequestOverHttpAndGrpcUnaryAndStreamed) {
  const std::string tokens = std::to_string(kTokens);
  json unary = Load({"--http", http_, "--requests", "120", "--concurrency", "4",
                     "--expect-tokens", tokens});
  EXPECT_EQ(unary["ok"], 120);
  EXPECT_EQ(unary["errors"], 0) << unary["first_error"];
  EXPECT_EQ(unary["sent_total"], 120);
  EXPECT_EQ(unary["latency"]["count"], 120);
  EXPECT_EQ(unary["tokens"], 120 * kTokens);
  EXPECT_LE(unary["max_in_flight"], 4);
  EXPECT_GT(unary["latency"]["p50_us"].get<double>(), 0);

  json stream = Load({"--http", http_, "--requests", "40", "--concurrency", "3", "--stream",
                      "--expect-tokens", tokens});
  EXPECT_EQ(stream["ok"], 40);
  EXPECT_EQ(stream["errors"], 0) << stream["first_error"];
  EXPECT_EQ(stream["tokens"], 40 * kTokens);
  EXPECT_EQ(stream["ttft"]["count"], 40);
  EXPECT_EQ(stream["per_token"]["count"], 40);
  EXPECT_EQ(stream["gap"]["count"], 40 * (kTokens - 1));
  EXPECT_LE(stream["ttft"]["p50_us"].get<double>(), stream["latency"]["p50_us"].get<double>());

  json grpc_unary = Load({"--grpc", grpc_, "--requests", "30", "--concurrency", "2",
                          "--expect-tokens", tokens});
  EXPECT_EQ(grpc_unary["ok"], 30);
  EXPECT_EQ(grpc_unary["errors"], 0) << grpc_unary["first_error"];
  EXPECT_EQ(grpc_unary["protocol"], "grpc");

  json grpc_stream = Load({"--grpc", grpc_, "--requests", "30", "--concurrency", "5", "--stream",
                           "--expect-tokens", tokens});
  EXPECT_EQ(grpc_stream["ok"], 30);
  EXPECT_EQ(grpc_stream["errors"], 0) << grpc_stream["first_error"];
  EXPECT_EQ(grpc_stream["tokens"], 30 * kTokens);
  EXPECT_EQ(grpc_stream["ttft"]["count"], 30);

  // The gateway and the upstream each saw every request exactly once.
  HttpResult metrics = HttpGet(http_ + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(CounterSum(metrics.body, "switchyard_requests_total"), 120 + 40 + 30 + 30)
      << metrics.body;
  HttpResult stats = HttpGet(mock_http_ + "/stats");
  ASSERT_EQ(stats.status, 200);
  json counts = json::parse(stats.body);
  EXPECT_EQ(counts["requests"], 120 + 40 + 30 + 30) << stats.body;
  EXPECT_EQ(counts["aborted"], 0) << stats.body;
}

TEST_F(LoadSmokeTest, OpenLoopKeepsItsRateAndMeasuresOnlyTheWindow) {
  // Direct to the mock, as the benchmark's baseline: 400/s for 0.25 s of warm-up and 0.5 s
  // measured is 300 requests sent, 200 of them measured.
  json run = Load({"--http", mock_http_, "--rate", "400", "--warmup", "0.25", "--duration", "0.5",
                   "--stream", "--expect-tokens", std::to_string(kTokens), "--watch",
                   "self=" + std::to_string(getpid())});
  EXPECT_EQ(run["mode"], "open");
  EXPECT_EQ(run["errors"], 0) << run["first_error"];
  EXPECT_EQ(run["sent_total"], 300);
  EXPECT_EQ(run["completed_total"], 300);
  EXPECT_EQ(run["ok"], 200);
  EXPECT_EQ(run["latency"]["count"], 200);
  EXPECT_NEAR(run["wall_s"].get<double>(), 0.5, 0.1);
  EXPECT_GT(run["rss_bytes"]["self"].get<double>(), 0);
  EXPECT_GE(run["cpu_s"]["self"].get<double>(), 0);

  HttpResult stats = HttpGet(mock_http_ + "/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(json::parse(stats.body)["requests"], 300) << stats.body;
  EXPECT_EQ(json::parse(stats.body)["tokens"], 300 * kTokens) << stats.body;
}

TEST_F(LoadSmokeTest, AWrongAnswerFailsTheRun) {
  json run = Load({"--http", http_, "--requests", "10", "--stream", "--expect-tokens",
                   std::to_string(kTokens + 1)},
                  /*expected_exit=*/1);
  EXPECT_EQ(run["ok"], 0);
  EXPECT_EQ(run["protocol_errors"], 10);
  EXPECT_THAT(run["first_error"].get<std::string>(),
              HasSubstr("8 content events, expected 9"));

  // An error status is counted as such; the server closing the connection after it is not.
  json missing = Load({"--http", mock_http_ + "/v1/nope", "--requests", "3"}, /*expected_exit=*/1);
  EXPECT_EQ(missing["ok"], 0);
  EXPECT_EQ(missing["http_errors"], 3);
  EXPECT_EQ(missing["io_errors"], 0);
  EXPECT_THAT(missing["first_error"].get<std::string>(), HasSubstr("HTTP 404"));
}

// The gRPC floor answers the load tool like the gateway would, unary and streamed, with the
// token count the benchmark expects.
TEST_F(LoadSmokeTest, GrpcFloorAnswersLikeTheGateway) {
  ChildProcess floor({kGrpcFloor, "--port", "0", "--tokens", std::to_string(kTokens)});
  std::optional<std::string> line = floor.WaitForLine("listening", 30);
  ASSERT_TRUE(line.has_value()) << floor.err();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(*line, match, std::regex("127\\.0\\.0\\.1:(\\d+)")));
  const std::string address = "127.0.0.1:" + match[1].str();
  for (bool stream : {false, true}) {
    std::vector<std::string> args = {"--grpc", address, "--requests", "20", "--concurrency", "2",
                                     "--expect-tokens", std::to_string(kTokens)};
    if (stream) args.push_back("--stream");
    json run = Load(args);
    EXPECT_EQ(run["ok"], 20) << run["first_error"];
    EXPECT_EQ(run["tokens"], 20 * kTokens);
    if (stream) {
      EXPECT_EQ(run["ttft"]["count"], 20);
      EXPECT_EQ(run["per_token"]["count"], 20);
    }
  }
  Load({"--grpc", address, "--requests", "2", "--expect-tokens", std::to_string(kTokens + 1)},
       /*expected_exit=*/1);
}

TEST(LoadToolTest, BadArgumentsExitTwoWithTheReason) {
  RunResult none = RunCommand({kLoad}, "", 30);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.err, HasSubstr("give exactly one of --http and --grpc"));
  RunResult rate = RunCommand({kLoad, "--http", "http://127.0.0.1:1", "--rate", "fast"}, "", 30);
  EXPECT_EQ(rate.exit_code, 2);
  EXPECT_THAT(rate.err, HasSubstr("--rate must be a number"));
  RunResult mock = RunCommand({kMock, "--tokens", "0"}, "", 30);
  EXPECT_EQ(mock.exit_code, 2);
  EXPECT_THAT(mock.err, HasSubstr("bad argument: --tokens 0"));
}

}  // namespace
}  // namespace switchyard::testing
