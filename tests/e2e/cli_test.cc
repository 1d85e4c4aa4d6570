// The built `switchyard` binary, as a user runs it: the CLI, and `serve` with the real llama.cpp
// engine on ../shared/models, answering HTTP and gRPC, then draining on SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/subprocess.h"

namespace switchyard::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kBinary = SWITCHYARD_BINARY;
const std::string kModels = SWITCHYARD_SHARED_MODELS;
// "tcmalloc" in the default build (CMake option SWITCHYARD_TCMALLOC), "glibc" without it.
const std::string kAllocator = SWITCHYARD_ALLOCATOR;

std::string WriteTemp(const std::string& name, const std::string& content) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("switchyard_cli_test_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

TEST(CliTest, VersionAndHelp) {
  RunResult version = RunCommand({kBinary, "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.out,
              ::testing::MatchesRegex("switchyard [0-9]+\\.[0-9]+\\.[0-9]+ \\(allocator: " +
                                      kAllocator + "\\)\n"));
  RunResult help = RunCommand({kBinary, "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("switchyard serve [--config FILE]"));
  RunResult bad = RunCommand({kBinary, "frobnicate"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("unknown command 'frobnicate'"));
  RunResult bad_flag = RunCommand({kBinary, "serve", "--htp-port", "1"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_THAT(bad_flag.err, HasSubstr("unknown option --htp-port"));
}

TEST(CliTest, CheckAcceptsTheShippedConfigs) {
  for (const char* file : {"deploy/switchyard.yaml", "deploy/examples/hybrid.yaml"}) {
    const std::string path = std::string(SWITCHYARD_SOURCE_DIR) + "/" + file;
    RunResult result = RunCommand({"/usr/bin/env", "SWITCHYARD_MODELS=" + kModels,
                                   "OPENAI_API_KEY=sk-test", kBinary, "check", "--config", path});
    EXPECT_EQ(result.exit_code, 0) << file << result.err;
    EXPECT_THAT(result.out, HasSubstr(": ok ("));
  }
}

// What parsing cannot see but would stop `serve` here: each problem named, exit 1; and
// --syntax-only for validating without the machine's models and secrets.
TEST(CliTest, CheckReportsWhatWouldStopServeOnThisMachine) {
  const std::string path = std::string(SWITCHYARD_SOURCE_DIR) + "/deploy/examples/hybrid.yaml";
  RunResult result = RunCommand({"/usr/bin/env", "-u", "SWITCHYARD_MODELS", "-u",
                                 "OPENAI_API_KEY", kBinary, "check", "--config", path});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(path + ": target 'local': "));
  EXPECT_THAT(result.err, HasSubstr("stories260K.gguf"));
  EXPECT_THAT(result.err,
              HasSubstr("environment variable OPENAI_API_KEY (api_key_env) is not set"));
  EXPECT_EQ(result.out, "");

  const std::string broken = WriteTemp(
      "check_env.yaml",
      "targets:\n"
      "  - {name: cloud, kind: openai_compatible, base_url: https://api.example.com/v1,\n"
      "     model: m, ca_bundle: /nonexistent/ca.pem}\n"
      "decision_log: {path: /nonexistent/dir/decisions.jsonl}\n"
      "metering: {state_file: /nonexistent/dir/metering.json}\n"
      "policy: {default: cloud}\n");
  result = RunCommand({kBinary, "check", "--config", broken});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(broken + ": target 'cloud': ca_bundle /nonexistent/ca.pem "
                                             "cannot be read: No such file or directory"));
  EXPECT_THAT(result.err, HasSubstr(broken + ": decision_log: cannot write "
                                             "/nonexistent/dir/decisions.jsonl"));
  EXPECT_THAT(result.err,
              HasSubstr(broken + ": metering: cannot write /nonexistent/dir/metering.json"));

  result = RunCommand({kBinary, "check", "--syntax-only", "--config", broken});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr(": ok ("));
  std::filesystem::remove(broken);
}

TEST(CliTest, CheckReportsFileLineColumnAndFails) {
  const std::string path = WriteTemp("typo.yaml",
                                     "targets:\n"
                                     "  - name: local\n"
                                     "    kind: local\n"
                                     "    modle: stories260K.gguf\n"
                                     "policy:\n"
                                     "  default: local\n");
  RunResult result = RunCommand({kBinary, "check", "--config", path});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err, path + ":4:5: unknown key 'modle' in target 'local' (did you mean 'model'?)\n");
  RunResult missing = RunCommand({kBinary, "check", "--config", "/nonexistent.yaml"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent.yaml: cannot open: No such file or directory"));
  std::filesystem::remove(path);
}

TEST(CliTest, ClassifyDecidesJsonLinesOffline) {
  const std::string input =
      "{\"text\":\"my password is hunter2, mail me at ann@corpmail.com\"}\n"
      "{\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]}\n"
      "{\"text\": 42}\n"
      "not json\n";
  RunResult result = RunCommand({kBinary, "classify"}, input);
  EXPECT_EQ(result.exit_code, 1) << result.err;  // two lines were invalid
  std::vector<json> lines;
  std::istringstream out(result.out);
  for (std::string line; std::getline(out, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 4u) << result.out;
  EXPECT_EQ(lines[0]["target"], "local");
  EXPECT_EQ(lines[0]["rule"], "keep-sensitive-local");
  EXPECT_THAT(lines[0]["policy_version"].get<std::string>(), ::testing::StartsWith("sha256:"));
  ASSERT_EQ(lines[0]["sensitivity"]["findings"].size(), 1u);
  EXPECT_EQ(lines[0]["sensitivity"]["findings"][0]["type"], "email");
  EXPECT_EQ(lines[0]["sensitivity"]["findings"][0]["start"], 35);
  EXPECT_EQ(lines[0]["sensitivity"]["findings"][0]["end"], 51);
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("ann@corpmail.com")));
  EXPECT_EQ(lines[1]["rule"], "default");
  EXPECT_EQ(lines[1]["sensitivity"]["findings"].size(), 0u);
  EXPECT_EQ(lines[2]["line"], 3);
  EXPECT_THAT(lines[2]["error"].get<std::string>(), HasSubstr("'text' must be a string"));
  EXPECT_EQ(lines[3]["line"], 4);
  EXPECT_THAT(lines[3]["error"].get<std::string>(), HasSubstr("not valid JSON"));
}

TEST(CliTest, ServeFailsClearlyOnMissingOrCorruptModel) {
  const std::string corrupt = WriteTemp("corrupt.gguf", "GGUF this is not really a model file");
  const std::string config = WriteTemp("corrupt.yaml",
                                       "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
                                       "targets:\n"
                                       "  - {name: local, kind: local, model: " + corrupt + "}\n"
                                       "policy: {default: local}\n");
  RunResult bad = RunCommand({kBinary, "serve", "--config", config}, "", 60);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("target 'local'"));
  EXPECT_THAT(bad.err, HasSubstr(corrupt));

  const std::string missing = WriteTemp("missing.yaml",
                                        "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
                                        "targets:\n"
                                        "  - {name: local, kind: local, model: no-such-model.gguf}\n"
                                        "policy: {default: local}\n");
  RunResult absent = RunCommand({kBinary, "serve", "--config", missing}, "", 60);
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_THAT(absent.err, HasSubstr("no-such-model.gguf"));
  for (const std::string& path : {corrupt, config, missing}) std::filesystem::remove(path);
}

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModels + "/stories260K.gguf")) {
      GTEST_SKIP() << "shared models not found at " << kModels;
    }
    child_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBinary, "serve", "--http-port", "0", "--grpc-port", "0"},
        std::vector<std::string>{"SWITCHYARD_MODELS=" + kModels});
    std::optional<std::string> line = child_->WaitForLine("listening", 60);
    ASSERT_TRUE(line.has_value()) << child_->err();
    std::smatch match;
    ASSERT_TRUE(std::regex_search(
        *line, match, std::regex("listening http=127\\.0\\.0\\.1:(\\d+) grpc=127\\.0\\.0\\.1:(\\d+)")))
        << *line;
    http_ = "http://127.0.0.1:" + match[1].str();
    grpc_ = "127.0.0.1:" + match[2].str();
    // The listening line is the first line of the log.
    EXPECT_EQ(child_->err().find("listening"), child_->err().find(' ', 0) + 6) << child_->err();
  }

  std::unique_ptr<ChildProcess> child_;
  std::string http_;
  std::string grpc_;
};

TEST_F(ServeTest, DefaultConfigServesDeterministicStoriesOverHttpAndGrpc) {
  const std::string body =
      R"({"model":"auto","temperature":0,"max_tokens":24,"messages":[{"role":"user","content":"Once upon a time"}]})";
  HttpResult first = HttpPost(http_ + "/v1/chat/completions", body);
  ASSERT_EQ(first.status, 200) << first.body;
  json answer = json::parse(first.body);
  const std::string text = answer["choices"][0]["message"]["content"];
  EXPECT_THAT(text, ::testing::StartsWith(", there was a little girl named Lily"));
  EXPECT_EQ(answer["usage"]["completion_tokens"], 24);
  EXPECT_EQ(answer["usage"]["prompt_tokens"], 5);  // BOS + 4, per the model card
  EXPECT_EQ(answer["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(first.headers["x-switchyard-target"], "local");

  HttpResult second = HttpPost(http_ + "/v1/chat/completions", body);
  ASSERT_EQ(second.status, 200);
  EXPECT_EQ(json::parse(second.body)["choices"][0]["message"]["content"], text);

  // The same prompt streamed: the deltas add up to the same text.
  const std::string stream_body =
      R"({"model":"auto","stream":true,"temperature":0,"max_tokens":24,"messages":[{"role":"user","content":"Once upon a time"}]})";
  HttpResult streamed = HttpPost(http_ + "/v1/chat/completions", stream_body);
  ASSERT_EQ(streamed.status, 200);
  std::string joined;
  std::vector<std::string> events = SseData(streamed.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      joined += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(joined, text);

  // And over gRPC through the CLI's client.
  RunResult grpc = RunCommand({kBinary, "chat", "--grpc", grpc_, "--max-tokens", "24",
                               "--temperature", "0", "Once upon a time"});
  EXPECT_EQ(grpc.exit_code, 0) << grpc.err;
  EXPECT_EQ(grpc.out, text + "\n");
  EXPECT_THAT(grpc.err, HasSubstr("target=local"));

  HttpResult metrics = HttpGet(http_ + "/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("switchyard_tokens_completion_total{target=\"local\"} 96"));

  child_->Signal(SIGTERM);
  EXPECT_EQ(child_->Wait(30), 0) << child_->err();
  EXPECT_THAT(child_->err(), HasSubstr("received SIGTERM"));
}

TEST_F(ServeTest, SighupAndFileChangesReloadTheConfig) {
  // A second server with a config file, so there is something to reload.
  std::string yaml =
      "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
      "auth: {allow_unauthenticated: true}\n"
      "targets:\n"
      "  - {name: local, kind: local, model: stories260K.gguf, threads: 1}\n"
      "policy:\n"
      "  default: local\n"
      "  rules:\n"
      "    - {name: first, when: {keywords: [alpha]}, route: local}\n";
  const std::string path = WriteTemp("reload.yaml", yaml);
  ChildProcess child({kBinary, "serve", "--config", path},
                     {"SWITCHYARD_MODELS=" + kModels});
  std::optional<std::string> line = child.WaitForLine("listening", 60);
  ASSERT_TRUE(line.has_value()) << child.err();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(*line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+)")));
  const std::string explain = "http://127.0.0.1:" + match[1].str() + "/v1/route/explain";
  const std::string body = R"({"messages":[{"role":"user","content":"beta"}]})";
  EXPECT_EQ(json::parse(HttpPost(explain, body).body)["rule"], "default");

  // Each edit replaces the file whole (write, then rename), as editors and config managers do,
  // so the watcher never reads a half-written file.
  auto rewrite = [&path](const std::string& text) {
    std::ofstream(path + ".tmp", std::ios::trunc) << text;
    std::filesystem::rename(path + ".tmp", path);
  };
  // Edit the file: the watcher picks it up.
  rewrite(yaml + "    - {name: second, when: {keywords: [beta]}, route: local}\n");
  ASSERT_TRUE(child.WaitForLine("reloaded", 20).has_value()) << child.err();
  EXPECT_EQ(json::parse(HttpPost(explain, body).body)["rule"], "second");

  // A broken edit is refused and logged; the last good config keeps serving.
  rewrite(yaml + "    - {name: third, when: {keywrds: [beta]}, route: local}\n");
  std::optional<std::string> refused = child.WaitForLine("reload refused", 20);
  ASSERT_TRUE(refused.has_value()) << child.err();
  EXPECT_THAT(*refused, HasSubstr(path + ":9:"));
  EXPECT_EQ(json::parse(HttpPost(explain, body).body)["rule"], "second");

  // SIGHUP reloads too (here: back to the first version).
  rewrite(yaml);
  child.Signal(SIGHUP);
  ASSERT_TRUE(child.WaitForLine("reloaded", 20).has_value()) << child.err();
  EXPECT_EQ(json::parse(HttpPost(explain, body).body)["rule"], "default");

  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(30), 0) << child.err();
  std::filesystem::remove(path);
}

// The key file a config names is watched as the config is: revoking a key there takes effect
// without a SIGHUP, and changes the policy version.
TEST(ServeKeyFileTest, EditingTheKeyFileReloads) {
  // sha256("sk-e2e-rotate")
  const std::string keys = WriteTemp(
      "rotate_keys.yaml",
      "- {name: rotating, tenant: acme, sha256: "
      "843db942b4ae7b44f6b05d6e8441eeb1eaecaea9cec95ccefb02b31bb6ed815d}\n");
  const std::string path = WriteTemp(
      "rotate.yaml",
      "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
      "auth: {key_file: " + keys + "}\n"
      "targets:\n"
      "  - {name: local, kind: local, model: stories260K.gguf, threads: 1}\n"
      "policy: {default: local}\n");
  ChildProcess child({kBinary, "serve", "--config", path}, {"SWITCHYARD_MODELS=" + kModels});
  std::optional<std::string> line = child.WaitForLine("listening", 60);
  ASSERT_TRUE(line.has_value()) << child.err();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(*line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+)")));
  const std::string explain = "http://127.0.0.1:" + match[1].str() + "/v1/route/explain";
  const std::string body = R"({"messages":[{"role":"user","content":"hello"}]})";
  HttpOptions keyed;
  keyed.headers = {"Authorization: Bearer sk-e2e-rotate"};
  HttpResult before = HttpPost(explain, body, keyed);
  ASSERT_EQ(before.status, 200) << before.body;

  std::ofstream(keys + ".tmp", std::ios::trunc) << "[]\n";
  std::filesystem::rename(keys + ".tmp", keys);
  ASSERT_TRUE(child.WaitForLine("reloaded", 20).has_value()) << child.err();
  HttpResult after = HttpPost(explain, body, keyed);
  EXPECT_EQ(after.status, 401) << after.body;

  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(30), 0) << child.err();
  std::filesystem::remove(path);
  std::filesystem::remove(keys);
}

// Out of file descriptors, the listener cannot accept: it waits and tries again, logging the
// failure once, rather than retrying at once on a socket that stays readable (which flooded the
// log with hundreds of thousands of lines a second and spun a core). It serves again as soon as
// descriptors are free.
TEST(ServeLimitsTest, OutOfFileDescriptorsWaitsInsteadOfSpinning) {
  const std::string path = WriteTemp(
      "fd_limit.yaml",
      "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
      "auth: {allow_unauthenticated: true}\n"
      "targets:\n"
      "  - {name: local, kind: local, model: stories260K.gguf, threads: 1}\n"
      "policy: {default: local}\n");
  ChildProcess child(
      {"/bin/sh", "-c", "ulimit -n 64 && exec " + kBinary + " serve --config " + path},
      {"SWITCHYARD_MODELS=" + kModels});
  std::optional<std::string> line = child.WaitForLine("listening", 60);
  ASSERT_TRUE(line.has_value()) << child.err();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(*line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+)")));
  const int port = std::stoi(match[1].str());

  // Connections the kernel completes in the listen backlog, more than the process can accept.
  std::vector<int> sockets;
  for (int i = 0; i < 80; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    sockets.push_back(fd);
  }
  std::optional<std::string> failed = child.WaitForLine("http accept failed", 20);
  ASSERT_TRUE(failed.has_value()) << child.err();
  EXPECT_THAT(*failed, HasSubstr("Too many open files"));
  // A second of failing: one line, not one per try.
  child.WaitForLine("no such line", 1.0);
  size_t lines = 0;
  for (size_t at = 0; (at = child.err().find("accept failed", at)) != std::string::npos; ++at) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << child.err().substr(0, 2000);

  for (int fd : sockets) ::close(fd);
  EXPECT_TRUE(child.WaitForLine("http accept works again", 20).has_value()) << child.err();
  HttpResult health = HttpGet("http://127.0.0.1:" + std::to_string(port) + "/healthz");
  EXPECT_EQ(health.status, 200) << health.error;

  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(30), 0) << child.err();
  std::filesystem::remove(path);
}

TEST_F(ServeTest, SigintDrainsAStreamInFlight) {
  const std::string body =
      R"({"model":"auto","stream":true,"temperature":0,"max_tokens":400,"messages":[{"role":"user","content":"Once upon a time"}]})";
  HttpResult result;
  bool signalled = false;
  HttpOptions options;
  options.on_data = [&](const std::string&) {
    if (!signalled) {
      signalled = true;
      child_->Signal(SIGINT);
    }
    return true;
  };
  result = HttpPost(http_ + "/v1/chat/completions", body, options);
  EXPECT_TRUE(signalled);
  ASSERT_EQ(result.status, 200);
  std::vector<std::string> events = SseData(result.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");  // the stream in flight finished normally
  EXPECT_EQ(child_->Wait(30), 0) << child_->err();
}

}  // namespace
}  // namespace switchyard::testing
