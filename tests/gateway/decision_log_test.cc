// The decision log: line format and its round trip, the hash chain and what breaks it, the
// writer (restart, torn tail, overflow, write errors, drain) and the gateway's one record per
// request, dispatched or refused.
#include "gateway/decision_log.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/synchronization/notification.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_backend.h"
#include "tests/support/recording_sink.h"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("switchyard_decision_log_test_" + std::to_string(getpid()) + "_" + name))
      .string();
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

RequestRecord Sample(int n) {
  RequestRecord record;
  record.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1767225600123));
  record.request_id = "req-" + std::to_string(n);
  record.edge = "openai";
  record.tenant = "acme";
  record.key_name = "ci";
  record.policy_version = "sha256:0123456789abcdef";
  record.rule = "keep-local";
  record.level = "confidential";
  record.finding_types = {"email", "secret.aws_key", "email"};
  record.target = "local";
  record.served_by = "local";
  record.locality = "local";
  record.usage = {12, 34};
  record.cost_usd = 0.25;
  record.savings_usd = 1.5;
  record.estimated_usd = 0.5;
  record.outcome = "ok";
  record.duration_seconds = 0.75;
  record.ttft_seconds = 0.125;
  record.requested_model = "auto";
  record.metadata = {{"team", "ml"}};
  record.max_tokens = 64;
  record.estimated_prompt_tokens = 17;
  record.difficulty_score = 0.375;
  record.difficulty_tier = "medium";
  record.messages = {{"user", "my secret prompt"}};
  return record;
}

struct Counters {
  MetricsRegistry registry;
  Family<Counter>& lines = registry.AddCounter("lines_total", "l");
  Family<Counter>& dropped = registry.AddCounter("dropped_total", "d", {"reason"});
  DecisionLogCounters get() {
    return {lines.WithLabels({}), dropped.WithLabels({"overflow"}),
            dropped.WithLabels({"write_error"})};
  }
  double written() { return lines.WithLabels({}).Value(); }
  double overflow() { return dropped.WithLabels({"overflow"}).Value(); }
  double write_error() { return dropped.WithLabels({"write_error"}).Value(); }
};

TEST(DecisionLogLineTest, RoundTripsEveryFieldAndOmitsPromptsUnlessAsked) {
  const std::string line = DecisionLogLine(Sample(1), Sha256Hex("x"), false);
  EXPECT_THAT(line, Not(HasSubstr("my secret prompt")));
  EXPECT_THAT(line, HasSubstr(R"("time":"2026-01-01T00:00:00.123Z")"));
  EXPECT_THAT(line, HasSubstr(R"("findings":["email","secret.aws_key"])"));
  EXPECT_THAT(line, HasSubstr(R"("decision":"routed")"));
  EXPECT_THAT(line, HasSubstr(R"("prev":")" + Sha256Hex("x") + "\""));
  absl::StatusOr<RequestRecord> back = ParseDecisionLogLine(line);
  ASSERT_TRUE(back.ok()) << back.status();
  const RequestRecord want = Sample(1);
  EXPECT_EQ(back->time, want.time);
  EXPECT_EQ(back->request_id, want.request_id);
  EXPECT_EQ(back->edge, "openai");
  EXPECT_EQ(back->tenant, "acme");
  EXPECT_EQ(back->key_name, "ci");
  EXPECT_EQ(back->rule, "keep-local");
  EXPECT_EQ(back->level, "confidential");
  EXPECT_EQ(back->finding_types, (std::vector<std::string>{"email", "secret.aws_key"}));
  EXPECT_EQ(back->served_by, "local");
  EXPECT_EQ(back->locality, "local");
  EXPECT_EQ(back->usage.prompt_tokens, 12);
  EXPECT_EQ(back->usage.completion_tokens, 34);
  EXPECT_EQ(back->cost_usd, 0.25);
  EXPECT_EQ(back->savings_usd, 1.5);
  EXPECT_EQ(back->estimated_usd, 0.5);
  EXPECT_EQ(back->duration_seconds, 0.75);
  EXPECT_EQ(back->metadata, want.metadata);
  EXPECT_EQ(back->max_tokens, 64);
  EXPECT_EQ(back->estimated_prompt_tokens, 17);
  EXPECT_EQ(back->difficulty_score, 0.375);
  EXPECT_EQ(back->difficulty_tier, "medium");
  EXPECT_TRUE(back->messages.empty());

  const std::string with_prompts = DecisionLogLine(Sample(1), Sha256Hex("x"), true);
  absl::StatusOr<RequestRecord> full = ParseDecisionLogLine(with_prompts);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->messages.size(), 1u);
  EXPECT_EQ(full->messages[0].content, "my secret prompt");

  RequestRecord denied = Sample(2);
  denied.denied = true;
  denied.locality.clear();
  EXPECT_THAT(DecisionLogLine(denied, "", false), HasSubstr(R"("decision":"denied")"));

  EXPECT_EQ(ParseDecisionLogLine("{\"time\": 3}").status().message(),
            "missing or malformed field 'time'");
  EXPECT_EQ(ParseDecisionLogLine("nope").status().message(), "not a JSON object");
}

std::vector<std::string> Chain(int n) {
  std::vector<std::string> lines;
  std::string prev = Sha256Hex(kDecisionLogGenesis);
  for (int i = 0; i < n; ++i) {
    lines.push_back(DecisionLogLine(Sample(i), prev, false));
    prev = Sha256Hex(lines.back());
  }
  return lines;
}

TEST(DecisionLogChainTest, NamesTheFirstBadLineAndWhy) {
  std::vector<std::string> lines = Chain(6);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  EXPECT_FALSE(VerifyDecisionLogChain({}).has_value());

  for (size_t at : {0u, 3u, 5u}) {  // first, middle and last line altered by one byte
    std::vector<std::string> altered = lines;
    const size_t pos = altered[at].find("req-") + 4;
    altered[at][pos] = altered[at][pos] == '9' ? '8' : '9';
    std::optional<ChainBreak> broken = VerifyDecisionLogChain(altered);
    ASSERT_TRUE(broken.has_value());
    EXPECT_EQ(broken->line, static_cast<int64_t>(at + 1));
    EXPECT_THAT(broken->reason, HasSubstr("altered"));
  }
  {
    std::vector<std::string> deleted = lines;
    deleted.erase(deleted.begin() + 2);
    std::optional<ChainBreak> broken = VerifyDecisionLogChain(deleted);
    ASSERT_TRUE(broken.has_value());
    EXPECT_EQ(broken->line, 3);
    EXPECT_THAT(broken->reason, HasSubstr("deleted"));
  }
  {
    std::vector<std::string> first_gone(lines.begin() + 1, lines.end());
    std::optional<ChainBreak> broken = VerifyDecisionLogChain(first_gone);
    ASSERT_TRUE(broken.has_value());
    EXPECT_EQ(broken->line, 1);
    EXPECT_THAT(broken->reason, HasSubstr("deleted"));
  }
  {
    std::vector<std::string> swapped = lines;
    std::swap(swapped[3], swapped[4]);
    std::optional<ChainBreak> broken = VerifyDecisionLogChain(swapped);
    ASSERT_TRUE(broken.has_value());
    EXPECT_EQ(broken->line, 4);
    EXPECT_EQ(broken->reason, "out of order: it follows line 5 in the chain, not line 3");
  }
  {
    // Forging a line needs its hash recomputed; the next line's `prev` still gives it away.
    std::vector<std::string> forged = lines;
    RequestRecord fake = Sample(2);
    fake.locality = "remote";
    forged[2] = DecisionLogLine(fake, Sha256Hex(forged[1]), false);
    std::optional<ChainBreak> broken = VerifyDecisionLogChain(forged);
    ASSERT_TRUE(broken.has_value());
    EXPECT_EQ(broken->line, 4);
  }
}

TEST(DecisionLogTest, WritesAChainThatSurvivesRestartsAndTornTails) {
  const std::string path = TempPath("chain.jsonl");
  std::filesystem::remove(path);
  Counters counters;
  {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log = DecisionLog::Open(path, false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 50; ++i) (*log)->Append(Sample(i));
    (*log)->Flush();
    EXPECT_EQ(ReadLines(path).size(), 50u);
    for (int i = 50; i < 60; ++i) (*log)->Append(Sample(i));
  }  // the destructor drains
  std::vector<std::string> lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 60u);
  EXPECT_EQ(counters.written(), 60);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  EXPECT_THAT(lines[0], HasSubstr(Sha256Hex(kDecisionLogGenesis)));
  EXPECT_THAT(lines[59], HasSubstr("req-59"));

  // A crash mid-write left half a line: the next start cuts it off and chains on.
  { std::ofstream(path, std::ios::app) << lines[5].substr(0, 40); }
  {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log = DecisionLog::Open(path, false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append(Sample(60));
  }
  lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 61u);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  EXPECT_EQ(ReadAll(path).back(), '\n');

  // A torn file of one partial line starts over from the genesis.
  { std::ofstream(path, std::ios::trunc) << "{\"time\":\"2026"; }
  {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log = DecisionLog::Open(path, false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append(Sample(0));
  }
  lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  std::filesystem::remove(path);
}

// The tail is cut only when it is a torn record: a whole record that lost its newline is kept,
// and a file that is not a decision log is refused and left as it was.
TEST(DecisionLogTest, KeepsAWholeLastRecordAndRefusesOtherFiles) {
  const std::string path = TempPath("newline.jsonl");
  std::filesystem::remove(path);
  Counters counters;
  {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log =
        DecisionLog::Open(path, false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 3; ++i) (*log)->Append(Sample(i));
  }
  std::string text = ReadAll(path);
  ASSERT_EQ(text.back(), '\n');
  text.pop_back();
  { std::ofstream(path, std::ios::trunc) << text; }
  {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log =
        DecisionLog::Open(path, false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append(Sample(3));
  }
  std::vector<std::string> lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_THAT(lines[2], HasSubstr("req-2"));
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());

  // Not a decision log: with or without a newline at the end, and even if its last line could be
  // the start of a record, the file is refused and keeps every byte.
  for (const std::string notes :
       {"line one\nsome text without a newline", "line one\nline two\n", "just one line",
        "line one\n{\"time\":\"2026"}) {
    { std::ofstream(path, std::ios::trunc) << notes; }
    absl::StatusOr<std::unique_ptr<DecisionLog>> log =
        DecisionLog::Open(path, false, counters.get());
    ASSERT_FALSE(log.ok()) << notes;
    EXPECT_THAT(log.status().message(), HasSubstr("is not a decision record"));
    EXPECT_EQ(ReadAll(path), notes);
  }
  std::filesystem::remove(path);
}

TEST(DecisionLogTest, LongLinesAcrossTheReadBackChunk) {
  const std::string path = TempPath("long.jsonl");
  std::filesystem::remove(path);
  Counters counters;
  RequestRecord big = Sample(0);
  big.messages = {{"user", std::string(200 * 1024, 'a')}};
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log = DecisionLog::Open(path, true, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append(big);
    (*log)->Append(big);
  }
  std::vector<std::string> lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  std::filesystem::remove(path);
}

TEST(DecisionLogTest, OverflowAndWriteErrorsAreCountedNotBlocking) {
  Counters counters;
  {
    const std::string path = TempPath("overflow.jsonl");
    absl::StatusOr<std::unique_ptr<DecisionLog>> log =
        DecisionLog::Open(path, false, counters.get(), /*queue_capacity=*/0);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 3; ++i) (*log)->Append(Sample(i));
    (*log)->Flush();
    EXPECT_EQ(counters.overflow(), 3);
    EXPECT_EQ(ReadAll(path), "");
    std::filesystem::remove(path);
  }
  if (std::filesystem::exists("/dev/full")) {
    absl::StatusOr<std::unique_ptr<DecisionLog>> log =
        DecisionLog::Open("/dev/full", false, counters.get());
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append(Sample(0));
    (*log)->Append(Sample(1));
    (*log)->Flush();
    EXPECT_EQ(counters.write_error(), 2);
  }
  absl::StatusOr<std::unique_ptr<DecisionLog>> bad =
      DecisionLog::Open("/nonexistent-dir/x.jsonl", false, counters.get());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("/nonexistent-dir/x.jsonl: cannot open"));
}

TEST(DecisionLogConfigTest, ParsesAndReportsFileLineColumn) {
  constexpr char kBase[] =
      "targets:\n"
      "  - { name: local, kind: local, model: m.gguf }\n"
      "policy: { default: local }\n";
  absl::StatusOr<Config> none = ParseConfig(kBase, "c.yaml", "/etc/sy");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->decision_log.path, "");
  absl::StatusOr<Config> config = ParseConfig(
      std::string(kBase) + "decision_log: { path: logs/decisions.jsonl, include_prompts: true }\n",
      "c.yaml", "/etc/sy");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->decision_log.path, "/etc/sy/logs/decisions.jsonl");
  EXPECT_TRUE(config->decision_log.include_prompts);
  absl::StatusOr<Config> typo = ParseConfig(
      std::string(kBase) + "decision_log:\n  path: d.jsonl\n  include_prompt: true\n", "c.yaml",
      "");
  EXPECT_EQ(typo.status().message(),
            "c.yaml:6:3: unknown key 'include_prompt' in decision_log (did you mean "
            "'include_prompts'?)");
  absl::StatusOr<Config> not_bool = ParseConfig(
      std::string(kBase) + "decision_log: { path: d.jsonl, include_prompts: maybe }\n", "c.yaml",
      "");
  EXPECT_THAT(not_bool.status().message(), HasSubstr("c.yaml:4:"));
  EXPECT_THAT(not_bool.status().message(), HasSubstr("include_prompts"));
  absl::StatusOr<Config> no_path =
      ParseConfig(std::string(kBase) + "decision_log: { include_prompts: true }\n", "c.yaml", "");
  EXPECT_THAT(no_path.status().message(), HasSubstr("c.yaml:4:"));
  EXPECT_THAT(no_path.status().message(), HasSubstr("path"));
}

constexpr char kGatewayConfig[] = R"EOF(
targets:
  - { name: local, kind: local, model: m.gguf }
policy:
  default: local
  rules:
    - { name: no-forbidden, when: { keywords: [forbidden] }, deny: "not allowed" }
)EOF";

using ::switchyard::testing::RecordingSink;

// Every request, dispatched or refused, ends in exactly one line; the metrics count each once.
TEST(DecisionLogGatewayTest, OneLinePerRequestDispatchedOrRefused) {
  const std::string path = TempPath("gateway.jsonl");
  std::filesystem::remove(path);
  absl::StatusOr<Config> config = ParseConfig(
      std::string(kGatewayConfig) + "decision_log: { path: " + path + " }\n", "g.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  auto local = std::make_shared<testing::FakeBackend>();
  absl::StatusOr<std::unique_ptr<Gateway>> gateway = Gateway::Create(
      *std::move(config),
      [&](const TargetConfig&, const Config&) -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
        return std::shared_ptr<backends::Backend>(local);
      });
  ASSERT_TRUE(gateway.ok()) << gateway.status();

  InboundRequest ok;
  ok.edge = "openai";
  ok.tenant = "acme";
  ok.chat.messages = {{"user", "write to ann@corpmail.com please"}};
  ok.chat.request_id = "chat-1";
  Routed routed;
  ASSERT_TRUE((*gateway)->Admit(ok, routed).ok());
  auto sink = std::make_shared<RecordingSink>();
  auto call = (*gateway)->Dispatch(routed, ok, sink);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  call.reset();

  InboundRequest denied = ok;
  denied.chat.messages = {{"user", "something forbidden"}};
  denied.chat.request_id.clear();
  Routed denied_routed;
  EXPECT_EQ((*gateway)->Admit(denied, denied_routed).code(), absl::StatusCode::kPermissionDenied);

  InboundRequest unknown = ok;
  unknown.requested_model = "gpt-9";
  unknown.chat.request_id.clear();
  Routed unknown_routed;
  EXPECT_EQ((*gateway)->Admit(unknown, unknown_routed).code(), absl::StatusCode::kNotFound);

  (*gateway)->RecordRejected(absl::InvalidArgumentError("bad body"), nullptr, nullptr,
                             "anthropic");
  // No key where the config asks for one: refused, and logged under the edge it came in on.
  EXPECT_EQ((*gateway)->Authenticate(std::nullopt, "grpc").status().code(),
            absl::StatusCode::kUnauthenticated);
  (*gateway)->decision_log()->Flush();

  std::vector<std::string> lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 5u) << ReadAll(path);
  EXPECT_FALSE(VerifyDecisionLogChain(lines).has_value());
  std::vector<RequestRecord> records;
  for (const std::string& line : lines) {
    EXPECT_THAT(line, Not(HasSubstr("ann@corpmail.com")));
    absl::StatusOr<RequestRecord> record = ParseDecisionLogLine(line);
    ASSERT_TRUE(record.ok()) << record.status() << line;
    records.push_back(*record);
  }
  EXPECT_EQ(records[0].request_id, "chat-1");
  EXPECT_FALSE(records[0].denied);
  EXPECT_EQ(records[0].locality, "local");
  EXPECT_EQ(records[0].served_by, "local");
  EXPECT_EQ(records[0].outcome, "ok");
  EXPECT_EQ(records[0].tenant, "acme");
  EXPECT_EQ(records[0].finding_types, std::vector<std::string>{"email"});
  EXPECT_EQ(records[0].usage.prompt_tokens, 3);
  EXPECT_GT(records[0].estimated_prompt_tokens, 0);
  EXPECT_EQ(records[0].difficulty_tier, "easy");

  EXPECT_TRUE(records[1].denied);
  EXPECT_EQ(records[1].rule, "no-forbidden");
  EXPECT_EQ(records[1].outcome, "denied");
  EXPECT_EQ(records[1].locality, "");
  EXPECT_FALSE(records[1].request_id.empty());
  EXPECT_TRUE(records[2].denied);
  EXPECT_EQ(records[2].rule, "");
  EXPECT_EQ(records[2].requested_model, "gpt-9");
  EXPECT_EQ(records[3].edge, "anthropic");
  EXPECT_EQ(records[3].outcome, "invalid_request");
  EXPECT_EQ(records[4].edge, "grpc");
  EXPECT_EQ(records[4].outcome, "unauthenticated");
  EXPECT_TRUE(records[4].denied);

  const std::string metrics = (*gateway)->metrics().Render();
  EXPECT_THAT(metrics, HasSubstr("switchyard_requests_total{tenant=\"acme\",target=\"local\",rule=\"default\","
                                 "locality=\"local\",outcome=\"ok\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_requests_rejected_total{rule=\"no-forbidden\","
                                 "outcome=\"denied\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_decision_log_lines_total 5\n"));
  EXPECT_THAT(metrics, HasSubstr("switchyard_decision_log_dropped_total{reason=\"overflow\"} 0\n"));
  EXPECT_THAT(metrics, Not(HasSubstr("outcome=\"denied\"} 2")));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace switchyard::gateway
