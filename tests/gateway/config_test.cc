// Config validation: table-driven from inline YAML, every error precise to file:line:column.
#include "gateway/config.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gateway/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;

constexpr char kValid[] = R"EOF(
listeners:
  http: 0.0.0.0:9000
  grpc: "[::1]:0"
  busy_poll_microseconds: 50
limits:
  max_body_bytes: 2048
  drain_timeout_seconds: 5
  write_timeout_seconds: 7.5
models:
  dirs: [models, /opt/models]
targets:
  - name: local
    kind: local
    model: stories260K.gguf
    threads: 1
    slots: 2
  - name: gpt
    kind: openai_compatible
    base_url: https://api.example.com/v1/
    model: gpt-4o
    api_key_env: EXAMPLE_KEY
    price: { input_per_million: 2.5, output_per_million: 10 }
    timeouts: { connect_seconds: 3, total_seconds: 0 }
policy:
  default: local
  rules:
    - name: big-to-gpt
      when: { model: gpt }
      route: gpt
)EOF";

TEST(ConfigTest, ParsesEveryFieldAndFillsDefaults) {
  absl::StatusOr<Config> config = ParseConfig(kValid, "gw.yaml", "/etc/switchyard");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->http.host, "0.0.0.0");
  EXPECT_EQ(config->http.port, 9000);
  EXPECT_EQ(config->grpc.host, "::1");
  EXPECT_EQ(config->grpc.port, 0);
  EXPECT_EQ(config->busy_poll_microseconds, 50);
  EXPECT_EQ(config->max_body_bytes, 2048);
  EXPECT_EQ(config->drain_timeout_seconds, 5);
  EXPECT_EQ(config->write_timeout_seconds, 7.5);
  EXPECT_EQ(config->max_stream_buffer_bytes, 4 << 20);  // default
  EXPECT_THAT(config->model_dirs,
              ::testing::ElementsAre("/etc/switchyard/models", "/opt/models"));
  ASSERT_EQ(config->targets.size(), 2u);
  const TargetConfig& local = config->targets[0];
  EXPECT_EQ(local.kind, TargetKind::kLocal);
  EXPECT_EQ(local.local.threads, 1);
  EXPECT_EQ(local.local.slots, 2);
  EXPECT_EQ(local.local.context, 2048);  // default
  EXPECT_EQ(local.local.max_tokens, 256);
  const TargetConfig& gpt = config->targets[1];
  EXPECT_EQ(gpt.kind, TargetKind::kOpenAiCompatible);
  EXPECT_EQ(gpt.remote.base_url, "https://api.example.com/v1");  // trailing slash dropped
  EXPECT_EQ(gpt.remote.api_key_env, "EXAMPLE_KEY");
  EXPECT_EQ(gpt.price.input_per_million, 2.5);
  EXPECT_EQ(gpt.price.output_per_million, 10);
  EXPECT_EQ(gpt.remote.connect_timeout_seconds, 3);
  EXPECT_EQ(gpt.remote.total_timeout_seconds, 0);
  EXPECT_EQ(gpt.remote.first_byte_timeout_seconds, 60);
  EXPECT_EQ(gpt.remote.stream, backends::StreamUpstream::kAuto);
  EXPECT_THAT(config->version, ::testing::StartsWith("sha256:"));
  ASSERT_NE(config->policy, nullptr);
  EXPECT_EQ(config->FindTarget("gpt"), &config->targets[1]);
  EXPECT_EQ(config->FindTarget("nope"), nullptr);
}

TEST(ConfigTest, VersionIsTheContentHash) {
  absl::StatusOr<Config> a = ParseConfig(kValid, "a.yaml", "");
  absl::StatusOr<Config> b = ParseConfig(kValid, "b.yaml", "");
  absl::StatusOr<Config> c = ParseConfig(std::string(kValid) + "\n# changed\n", "c.yaml", "");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->version, b->version);
  EXPECT_NE(a->version, c->version);
}

TEST(ConfigTest, EmbeddedDefaultIsValidAndLocalOnly) {
  absl::StatusOr<Config> config = DefaultConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->http.port, 8080);
  EXPECT_EQ(config->grpc.port, 50051);
  EXPECT_EQ(config->busy_poll_microseconds, 0) << "threads sleep at once unless asked";
  for (const TargetConfig& target : config->targets) {
    EXPECT_EQ(target.kind, TargetKind::kLocal) << target.name;
  }
  EXPECT_EQ(config->targets[0].local.model, "stories260K.gguf");
}

TEST(ConfigTest, ExampleConfigsInDeployAreValid) {
  int checked = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(
           std::filesystem::path(SWITCHYARD_SOURCE_DIR) / "deploy")) {
    if (entry.path().extension() != ".yaml") continue;
    if (entry.path().string().find("prometheus") != std::string::npos) continue;
    absl::StatusOr<Config> config = LoadConfigFile(entry.path().string());
    EXPECT_TRUE(config.ok()) << entry.path() << ": " << config.status();
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

struct BadCase {
  std::string name;
  std::string yaml;
  std::string error;  // expected substring, starting with file:line:column
};

class ConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrorTest, ReportsFileLineColumn) {
  absl::StatusOr<Config> config = ParseConfig(GetParam().yaml, "bad.yaml", "");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(GetParam().error));
}

constexpr char kTargets[] = R"(targets:
  - name: local
    kind: local
    model: m.gguf
policy:
  default: local
)";

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigErrorTest,
    ::testing::Values(
        BadCase{"TypoTopLevel", std::string("listners:\n  http: 1.2.3.4:1\n") + kTargets,
                "bad.yaml:1:1: unknown key 'listners' in the config (did you mean 'listeners'?)"},
        BadCase{"TypoInTarget",
                "targets:\n  - name: local\n    kind: local\n    model: m.gguf\n    thread: 2\n"
                "policy:\n  default: local\n",
                "bad.yaml:5:5: unknown key 'thread' in target 'local' (did you mean 'threads'?)"},
        BadCase{"BadPort", std::string("listeners:\n  http: localhost:99999\n") + kTargets,
                "bad.yaml:2:9: listener 'http' must be \"host:port\""},
        BadCase{"BusyPollOutOfRange",
                std::string("listeners:\n  busy_poll_microseconds: 20000\n") + kTargets,
                "bad.yaml:2:27: 'busy_poll_microseconds' must be between 0 and 10000, not 20000"},
        BadCase{"MissingTargets", "policy:\n  default: local\n",
                "bad.yaml:1:1: missing required key 'targets'"},
        BadCase{"EmptyTargets", "targets: []\npolicy:\n  default: x\n",
                "bad.yaml:1:10: 'targets' must be a non-empty list"},
        BadCase{"UnknownKind",
                "targets:\n  - name: x\n    kind: magic\npolicy:\n  default: x\n",
                "bad.yaml:3:11: unknown target kind 'magic'"},
        BadCase{"MissingModel", "targets:\n  - name: x\n    kind: local\npolicy:\n  default: x\n",
                "bad.yaml:2:5: missing required key 'model'"},
        BadCase{"DuplicateName",
                "targets:\n  - {name: a, kind: local, model: m}\n  - {name: a, kind: local, model: "
                "m}\npolicy:\n  default: a\n",
                "bad.yaml:3:12: duplicate target name 'a'"},
        BadCase{"AutoIsReserved",
                "targets:\n  - {name: auto, kind: local, model: m}\npolicy:\n  default: auto\n",
                "must be non-empty and not \"auto\""},
        BadCase{"BadBaseUrl",
                "targets:\n  - {name: r, kind: openai_compatible, model: m, base_url: ftp://x}\n"
                "policy:\n  default: r\n",
                "bad.yaml:2:60: 'base_url' must start with http:// or https://"},
        BadCase{"WrongType",
                "targets:\n  - {name: a, kind: local, model: m, threads: many}\npolicy:\n"
                "  default: a\n",
                "bad.yaml:2:47: 'threads' must be an integer"},
        BadCase{"OutOfRange",
                "targets:\n  - {name: a, kind: local, model: m, slots: 0}\npolicy:\n"
                "  default: a\n",
                "'slots' must be between 1 and 256, not 0"},
        BadCase{"NegativePrice",
                "targets:\n  - {name: a, kind: local, model: m, price: {input_per_million: -1}}\n"
                "policy:\n  default: a\n",
                "'input_per_million' must be between 0"},
        BadCase{"MissingPolicy", "targets:\n  - {name: a, kind: local, model: m}\n",
                "bad.yaml:1:1: missing required key 'policy'"},
        BadCase{"PolicyUnknownTarget",
                "targets:\n  - {name: a, kind: local, model: m}\npolicy:\n  default: b\n",
                "bad.yaml:4:12:"},
        BadCase{"YamlSyntax", "targets: [\n  - oops: {\n", "bad.yaml:"},
        BadCase{"NotAMap", "- just\n- a list\n", "bad.yaml:1:1: the config must be a YAML map"},
        BadCase{"BadLoadMode",
                "targets:\n  - {name: a, kind: local, model: m, load: lazy}\npolicy:\n"
                "  default: a\n",
                "bad.yaml:2:44: 'load' must be startup or on_demand, not \"lazy\""},
        BadCase{"BadStreamMode",
                "targets:\n  - {name: r, kind: openai_compatible, model: m, base_url: http://x,\n"
                "     stream: sometimes}\npolicy:\n  default: r\n",
                "bad.yaml:3:14: 'stream' must be auto, always or never, not \"sometimes\""},
        BadCase{"BadContextOverflow",
                "targets:\n  - {name: a, kind: local, model: m, context_overflow: drop}\n"
                "policy:\n  default: a\n",
                "bad.yaml:2:56: 'context_overflow' must be refuse or truncate, not \"drop\""},
        BadCase{"NegativeIdleUnload",
                "targets:\n  - {name: a, kind: local, model: m, idle_unload_seconds: -1}\n"
                "policy:\n  default: a\n",
                "'idle_unload_seconds' must be between 0"},
        BadCase{"TypoInLimits",
                std::string("limits:\n  local_model_memory: 10\n") + kTargets,
                "bad.yaml:2:3: unknown key 'local_model_memory' in limits"},
        // yaml-cpp keeps both: the policy was read from the first, a loop would see both.
        BadCase{"DuplicatePolicySection",
                std::string(kTargets) + "  rules: []\npolicy:\n  default: local\n",
                "bad.yaml:8:1: duplicate key 'policy' (first at line 5)"},
        BadCase{"DuplicateTargetKey",
                "targets:\n  - {name: a, kind: local, model: m, model: n}\npolicy:\n"
                "  default: a\n",
                "bad.yaml:2:38: duplicate key 'model' (first at line 2)"},
        BadCase{"NegativeBudget",
                std::string("limits:\n  local_model_memory_bytes: -5\n") + kTargets,
                "'local_model_memory_bytes' must be between 0"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST(ConfigTest, AnthropicAndGeminiTargetsDefaultTheirBaseUrls) {
  auto config = ParseConfig(R"EOF(
targets:
  - {name: claude, kind: anthropic, model: claude-sonnet-4-5, api_key_env: ANTHROPIC_API_KEY}
  - {name: gemini, kind: gemini, model: gemini-2.0-flash, timeouts: {idle_seconds: 7},
     stream: always}
  - {name: proxied, kind: anthropic, model: m, base_url: "http://127.0.0.1:9/v1/", stream: never}
policy:
  default: claude
)EOF",
                            "t.yaml", "/");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->targets.size(), 3u);
  EXPECT_EQ(config->targets[0].kind, TargetKind::kAnthropic);
  EXPECT_EQ(TargetKindName(config->targets[0].kind), "anthropic");
  EXPECT_EQ(config->targets[0].remote.base_url, "https://api.anthropic.com/v1");
  EXPECT_EQ(config->targets[0].remote.api_key_env, "ANTHROPIC_API_KEY");
  EXPECT_EQ(config->targets[1].kind, TargetKind::kGemini);
  EXPECT_EQ(TargetKindName(config->targets[1].kind), "gemini");
  EXPECT_EQ(config->targets[1].remote.base_url,
            "https://generativelanguage.googleapis.com/v1beta");
  EXPECT_EQ(config->targets[1].remote.idle_timeout_seconds, 7);
  EXPECT_EQ(config->targets[1].remote.stream, backends::StreamUpstream::kAlways);
  EXPECT_EQ(config->targets[2].remote.base_url, "http://127.0.0.1:9/v1");
  EXPECT_EQ(config->targets[2].remote.stream, backends::StreamUpstream::kNever);
  // openai_compatible has no public default: the base_url stays required.
  auto missing = ParseConfig(
      "targets:\n  - {name: r, kind: openai_compatible, model: m}\npolicy:\n  default: r\n",
      "t.yaml", "/");
  EXPECT_THAT(missing.status().message(), HasSubstr("missing required key 'base_url'"));
}

TEST(ConfigTest, LocalModelLifecycleKeys) {
  absl::StatusOr<Config> config = ParseConfig(R"EOF(
limits:
  local_model_memory_bytes: 1000000
targets:
  - { name: eager, kind: local, model: a.gguf }
  - { name: lazy, kind: local, model: b.gguf, load: on_demand, idle_unload_seconds: 1.5 }
  - { name: pinned, kind: local, model: c.gguf, load: startup, idle_unload_seconds: 0,
      context_overflow: truncate }
policy:
  default: eager
)EOF",
                                              "gw.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->local_model_memory_bytes, 1000000u);
  ASSERT_EQ(config->targets.size(), 3u);
  EXPECT_FALSE(config->targets[0].local.load_on_demand);
  EXPECT_EQ(config->targets[0].local.idle_unload_seconds, 0);
  EXPECT_TRUE(config->targets[1].local.load_on_demand);
  EXPECT_EQ(config->targets[1].local.idle_unload_seconds, 1.5);
  EXPECT_FALSE(config->targets[2].local.load_on_demand);
  EXPECT_FALSE(config->targets[0].local.truncate_prompt);
  EXPECT_TRUE(config->targets[2].local.truncate_prompt);

  absl::StatusOr<Config> defaults = ParseConfig(kValid, "gw.yaml", "");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->local_model_memory_bytes, 0u);
}

TEST(ConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<Config> config = LoadConfigFile("/nonexistent/switchyard.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("/nonexistent/switchyard.yaml"));
}

// Only regular files of sane size are read: a folder, a device or a pipe given as the config (or
// as its key file) is a clear error at once, never an endless read or a wait for a writer.
TEST(ConfigTest, OnlyRegularFilesOfSaneSizeAreRead) {
  const std::string dir =
      std::filesystem::path(::testing::TempDir() + "/config_sources").lexically_normal().string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string fifo = dir + "/fifo.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string big = dir + "/big.yaml";
  std::filesystem::resize_file((std::ofstream(big), big), kMaxConfigSourceBytes + 1);
  const struct {
    std::string path;
    std::string error;
  } cases[] = {
      {dir, "not a regular file (a directory)"},
      {"/dev/zero", "not a regular file (a device or pipe)"},
      {fifo, "not a regular file (a device or pipe)"},
      {big, "16777217 bytes; a config file may have at most 16777216"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<Config> config = LoadConfigFile(c.path);
    ASSERT_FALSE(config.ok()) << c.path;
    EXPECT_THAT(config.status().message(), HasSubstr(c.path + ": " + c.error));
    const std::string keyed = std::string(kValid) + "auth: {key_file: " + c.path + "}\n";
    config = ParseConfig(keyed, "gw.yaml", "");
    ASSERT_FALSE(config.ok()) << c.path;
    EXPECT_THAT(config.status().message(), HasSubstr("key file: " + c.path + ": " + c.error));
  }
  std::filesystem::remove_all(dir);
}

// A key file's content is part of the config's version: revoking a key changes it.
TEST(ConfigTest, VersionCoversTheKeyFile) {
  const std::string dir =
      std::filesystem::path(::testing::TempDir() + "/config_key_version").lexically_normal().string();
  std::filesystem::create_directories(dir);
  const std::string keys = dir + "/keys.yaml";
  const std::string yaml = std::string(kValid) + "auth: {key_file: keys.yaml}\n";
  std::ofstream(keys, std::ios::trunc) << "- {name: a, tenant: t, sha256: " << std::string(64, 'a')
                                       << "}\n";
  absl::StatusOr<Config> first = ParseConfig(yaml, "gw.yaml", dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->sources, std::vector<std::string>{keys});
  std::ofstream(keys, std::ios::trunc) << "[]\n";
  absl::StatusOr<Config> second = ParseConfig(yaml, "gw.yaml", dir);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->version, second->version);
  EXPECT_EQ(second->version, ConfigVersion({ContentHash(yaml), ContentHash("[]\n")}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace switchyard::gateway
