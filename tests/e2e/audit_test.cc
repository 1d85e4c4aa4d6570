// The decision log as the running binary writes it (HTTP and gRPC, routed and refused, across a
// restart), verified and summarised by `switchyard audit`, and broken on purpose.
#include <signal.h>
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

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModels + "/stories260K.gguf")) {
      GTEST_SKIP() << "shared models not found at " << kModels;
    }
    dir_ = std::filesystem::temp_directory_path() /
           ("switchyard_audit_test_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_ = (dir_ / "switchyard.yaml").string();
    log_ = (dir_ / "decisions.jsonl").string();
    std::ofstream(config_) << "listeners: {http: 127.0.0.1:0, grpc: 127.0.0.1:0}\n"
                              "auth: {allow_unauthenticated: true}\n"
                              "decision_log: { path: decisions.jsonl }\n"
                              "targets:\n"
                              "  - {name: local, kind: local, model: stories260K.gguf, threads: 1}\n"
                              "policy:\n"
                              "  default: local\n"
                              "  rules:\n"
                              "    - {name: no-forbidden, when: {keywords: [forbidden]}, deny: no}\n"
                              "    - {name: pii-local, when: {findings: [email]}, route: local}\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Starts the server; returns the HTTP base URL and fills `grpc`.
  std::string Start(std::unique_ptr<ChildProcess>& child, std::string& grpc) {
    child = std::make_unique<ChildProcess>(
        std::vector<std::string>{kBinary, "serve", "--config", config_},
        std::vector<std::string>{"SWITCHYARD_MODELS=" + kModels});
    std::optional<std::string> line = child->WaitForLine("listening", 60);
    EXPECT_TRUE(line.has_value()) << child->err();
    if (!line) return "";
    std::smatch match;
    EXPECT_TRUE(std::regex_search(
        *line, match, std::regex("http=127\\.0\\.0\\.1:(\\d+) grpc=127\\.0\\.0\\.1:(\\d+)")));
    grpc = "127.0.0.1:" + match[2].str();
    return "http://127.0.0.1:" + match[1].str();
  }

  std::vector<std::string> Lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  std::string WriteLines(const std::string& name, const std::vector<std::string>& lines) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    for (const std::string& line : lines) out << line << "\n";
    return path;
  }

  std::string ReadConfig() {
    std::ifstream in(config_, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::filesystem::path dir_;
  std::string config_;
  std::string log_;
};

std::string Chat(const std::string& text, const std::string& model = "auto") {
  return json{{"model", model},
              {"max_tokens", 8},
              {"temperature", 0},
              {"messages", {{{"role", "user"}, {"content", text}}}}}
      .dump();
}

TEST_F(AuditTest, TheServersLogVerifiesAndTamperingIsFoundAtTheRightLine) {
  std::unique_ptr<ChildProcess> child;
  std::string grpc;
  std::string http = Start(child, grpc);
  ASSERT_FALSE(http.empty());
  const std::string url = http + "/v1/chat/completions";
  EXPECT_EQ(HttpPost(url, Chat("Once upon a time")).status, 200);
  EXPECT_EQ(HttpPost(url, Chat("mail ann@corpmail.com a story")).status, 200);
  EXPECT_EQ(HttpPost(url, Chat("something forbidden")).status, 403);
  EXPECT_EQ(HttpPost(url, Chat("hi", "gpt-9")).status, 404);
  EXPECT_EQ(HttpPost(url, "{not json").status, 400);
  EXPECT_EQ(HttpPost(http + "/v1/messages",
                     R"({"model":"auto","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]})")
                .status,
            200);
  RunResult chat = RunCommand({kBinary, "chat", "--grpc", grpc, "--max-tokens", "8", "Hello"});
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
  HttpResult metrics = HttpGet(http + "/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("switchyard_decision_log_dropped_total{reason=\"overflow\"} 0"));
  child->Signal(SIGTERM);
  ASSERT_EQ(child->Wait(30), 0) << child->err();

  std::vector<std::string> lines = Lines(log_);
  ASSERT_EQ(lines.size(), 7u);
  std::vector<json> records;
  for (const std::string& line : lines) {
    records.push_back(json::parse(line));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("ann@corpmail.com")));
  }
  EXPECT_EQ(records[0]["decision"], "routed");
  EXPECT_EQ(records[0]["edge"], "openai");
  EXPECT_EQ(records[0]["locality"], "local");
  EXPECT_EQ(records[0]["tokens_out"], 8);
  EXPECT_EQ(records[1]["rule"], "pii-local");
  EXPECT_EQ(records[1]["findings"], json::array({"email"}));
  EXPECT_EQ(records[2]["decision"], "denied");
  EXPECT_EQ(records[2]["rule"], "no-forbidden");
  EXPECT_EQ(records[2]["outcome"], "denied");
  EXPECT_EQ(records[3]["requested_model"], "gpt-9");
  EXPECT_EQ(records[4]["outcome"], "invalid_request");
  EXPECT_EQ(records[5]["edge"], "anthropic");
  EXPECT_EQ(records[6]["edge"], "grpc");
  EXPECT_THAT(records[0]["time"].get<std::string>(),
              ::testing::MatchesRegex("20[0-9-]+T[0-9:]+\\.[0-9]{3}Z"));

  // A restart continues the chain from the file's last line.
  http = Start(child, grpc);
  ASSERT_FALSE(http.empty());
  EXPECT_EQ(HttpPost(http + "/v1/chat/completions", Chat("Once upon a time")).status, 200);
  child->Signal(SIGTERM);
  ASSERT_EQ(child->Wait(30), 0) << child->err();
  lines = Lines(log_);
  ASSERT_EQ(lines.size(), 8u);

  RunResult audit = RunCommand({kBinary, "audit", "--log", log_});
  EXPECT_EQ(audit.exit_code, 0) << audit.out << audit.err;
  EXPECT_THAT(audit.out, HasSubstr("chain ok (8 lines"));
  EXPECT_THAT(audit.out, HasSubstr("8 requests (5 routed, 3 denied)"));
  RunResult as_json = RunCommand({kBinary, "audit", "--log", log_, "--json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  json report = json::parse(as_json.out);
  EXPECT_EQ(report["chain"]["ok"], true);
  EXPECT_EQ(report["requests"]["total"], 8);
  EXPECT_EQ(report["by_level"]["public"][0],
            (json{{"locality", "denied"}, {"target", ""}, {"requests", 1}}));
  EXPECT_EQ(report["by_finding_type"]["email"][0],
            (json{{"locality", "local"}, {"target", "local"}, {"requests", 1}}));
  EXPECT_EQ(report["spend_by_tenant"][""]["requests"], 8);

  // The time range: nothing before the first line's time and after the last.
  const std::string first_time = json::parse(lines[0])["time"];
  const std::string last_time = json::parse(lines[7])["time"];
  RunResult before = RunCommand(
      {kBinary, "audit", "--log", log_, "--json", "--to", first_time});
  EXPECT_EQ(json::parse(before.out)["requests"]["total"], 0);
  RunResult upto_last = RunCommand(
      {kBinary, "audit", "--log", log_, "--json", "--from", first_time, "--to", last_time});
  EXPECT_EQ(json::parse(upto_last.out)["requests"]["total"], 7);
  RunResult bad_time = RunCommand({kBinary, "audit", "--log", log_, "--from", "yesterday"});
  EXPECT_EQ(bad_time.exit_code, 2);
  EXPECT_THAT(bad_time.err, HasSubstr("--from must be an RFC 3339 time"));

  // One altered byte, one deleted line, two swapped lines.
  std::vector<std::string> altered = lines;
  altered[4][altered[4].find("invalid_request")] = 'I';
  RunResult a = RunCommand({kBinary, "audit", "--log", WriteLines("altered.jsonl", altered)});
  EXPECT_EQ(a.exit_code, 1);
  EXPECT_THAT(a.out, HasSubstr("chain BROKEN at line 5: altered"));

  std::vector<std::string> deleted = lines;
  deleted.erase(deleted.begin() + 2);
  RunResult d = RunCommand({kBinary, "audit", "--log", WriteLines("deleted.jsonl", deleted)});
  EXPECT_EQ(d.exit_code, 1);
  EXPECT_THAT(d.out, HasSubstr("chain BROKEN at line 3: deleted"));

  std::vector<std::string> swapped = lines;
  std::swap(swapped[5], swapped[6]);
  RunResult s = RunCommand({kBinary, "audit", "--log", WriteLines("swapped.jsonl", swapped), "--json"});
  EXPECT_EQ(s.exit_code, 1);
  json broken = json::parse(s.out);
  EXPECT_EQ(broken["chain"]["ok"], false);
  EXPECT_EQ(broken["chain"]["line"], 6);
  EXPECT_THAT(broken["chain"]["reason"].get<std::string>(), HasSubstr("out of order"));

  RunResult missing = RunCommand({kBinary, "audit", "--log", (dir_ / "nope.jsonl").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("cannot open decision log"));
}


// Re-deciding the server's own log under a candidate that adds a priced remote target: from
// recorded features when prompts were not logged (naming the rules that need the text), in full
// when they were.
TEST_F(AuditTest, ReplayRedecidesTheLogUnderACandidateConfig) {
  const std::string candidate = (dir_ / "candidate.yaml").string();
  std::ofstream(candidate)
      << "targets:\n"
         "  - {name: local, kind: local, model: stories260K.gguf, threads: 1}\n"
         "  - name: cloud\n"
         "    kind: openai_compatible\n"
         "    base_url: http://127.0.0.1:9/v1\n"
         "    model: x\n"
         "    price: {input_per_million: 1000, output_per_million: 2000}\n"
         "policy:\n"
         "  default: cloud\n"
         "  rules:\n"
         "    - {name: no-forbidden, when: {keywords: [forbidden]}, deny: no}\n"
         "    - {name: pii-local, when: {findings: [email]}, route: local}\n"
         "    - {name: stories-to-cloud, when: {keywords: [story]}, route: cloud}\n";
  for (const bool prompts : {false, true}) {
    SCOPED_TRACE(prompts ? "with prompts" : "without prompts");
    std::string yaml = ReadConfig();
    if (prompts) {
      yaml = std::regex_replace(yaml, std::regex("path: decisions.jsonl"),
                                "path: prompts.jsonl, include_prompts: true");
    }
    std::ofstream(config_, std::ios::trunc) << yaml;
    std::unique_ptr<ChildProcess> child;
    std::string grpc;
    const std::string http = Start(child, grpc);
    ASSERT_FALSE(http.empty());
    const std::string url = http + "/v1/chat/completions";
    EXPECT_EQ(HttpPost(url, Chat("Tell me a story")).status, 200);
    EXPECT_EQ(HttpPost(url, Chat("mail ann@corpmail.com a poem")).status, 200);
    EXPECT_EQ(HttpPost(url, Chat("something forbidden")).status, 403);
    EXPECT_EQ(HttpPost(url, "{not json").status, 400);
    child->Signal(SIGTERM);
    ASSERT_EQ(child->Wait(30), 0) << child->err();
    const std::string log = (dir_ / (prompts ? "prompts.jsonl" : "decisions.jsonl")).string();
    ASSERT_EQ(Lines(log).size(), 4u);
    if (prompts) {
      EXPECT_THAT(Lines(log)[0], HasSubstr("Tell me a story"));
    } else {
      EXPECT_THAT(Lines(log)[0], ::testing::Not(HasSubstr("Tell me a story")));
    }

    RunResult replay =
        RunCommand({kBinary, "replay", "--config", candidate, "--log", log, "--json"});
    ASSERT_EQ(replay.exit_code, 0) << replay.err;
    json report = json::parse(replay.out);
    EXPECT_EQ(report["records"]["total"], 4);
    EXPECT_EQ(report["records"]["redecided"], 3);
    EXPECT_EQ(report["records"]["with_prompts"], prompts ? 3 : 0);
    EXPECT_EQ(report["records"]["skipped"], 1);  // the invalid body
    EXPECT_EQ(report["estimated_usd"]["before"], 0.0);
    EXPECT_GT(report["estimated_usd"]["after"].get<double>(), 0.0);
    auto route = [&](const std::string& locality, const std::string& target) {
      for (const json& row : report["routes"]) {
        if (row["locality"] == locality && row["target"] == target) {
          return std::pair<int, int>(row["before"], row["after"]);
        }
      }
      return std::pair<int, int>(0, 0);
    };
    EXPECT_EQ(route("local", "local"), std::make_pair(2, 1));
    EXPECT_EQ(route("denied", ""), std::make_pair(1, prompts ? 1 : 0));
    EXPECT_EQ(route("remote", "cloud"), std::make_pair(0, prompts ? 1 : 2));
    json first_change = report["examples"][0];
    EXPECT_EQ(first_change["request_id"], json::parse(Lines(log)[0])["request_id"]);
    EXPECT_EQ(first_change["before"]["rule"], "default");
    EXPECT_EQ(first_change["before"]["target"], "local");
    EXPECT_EQ(first_change["after"]["rule"], prompts ? "stories-to-cloud" : "default");
    EXPECT_EQ(first_change["after"]["target"], "cloud");
    if (prompts) {
      EXPECT_EQ(report["changed"], 1);
      EXPECT_EQ(report["not_reevaluated_rules"], json::array());
    } else {
      // Without the text the keyword rules cannot fire: the forbidden request is no longer
      // denied, and the report says which rules could not be evaluated.
      EXPECT_EQ(report["changed"], 2);
      EXPECT_EQ(report["not_reevaluated_rules"], json::array({"no-forbidden", "stories-to-cloud"}));
      bool found = false;
      for (const json& row : report["sensitivity"]) {
        if (row["level"] == "internal" && row["locality"] == "local") {
          found = true;
          EXPECT_EQ(row["before"], 1);
          EXPECT_EQ(row["after"], 1);
        }
      }
      EXPECT_TRUE(found) << report.dump();
      RunResult text = RunCommand({kBinary, "replay", "--config", candidate, "--log", log});
      EXPECT_EQ(text.exit_code, 0);
      EXPECT_THAT(text.out, HasSubstr("changed decisions: 2 of 3"));
      EXPECT_THAT(text.out, HasSubstr(": default/local -> default/cloud"));
      EXPECT_THAT(text.out,
                  HasSubstr("keyword/pattern tests of rules no-forbidden, stories-to-cloud could "
                            "not match"));
    }
  }
  RunResult usage = RunCommand({kBinary, "replay", "--log", "x.jsonl"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("replay needs --config CANDIDATE and --log FILE"));
}

}  // namespace
}  // namespace switchyard::testing
