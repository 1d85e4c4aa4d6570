#include "gateway/auth.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;

// sha256("sk-acme-ci") and sha256("sk-beta"), as `switchyard hash-key` prints them.
const std::string kAcmeKey = "sk-acme-ci";
const std::string kBetaKey = "sk-beta";

std::string ConfigWith(const std::string& auth) {
  return R"(
targets:
  - { name: local, kind: local, model: stories260K.gguf }
  - { name: frontier, kind: openai_compatible, base_url: "http://127.0.0.1:9", model: m,
      price: { input_per_million: 3, output_per_million: 15 } }
policy:
  default: local
)" + auth;
}

std::string Keys() {
  return "auth:\n  keys:\n    - { name: ci-bot, tenant: acme, sha256: " + Sha256Hex(kAcmeKey) +
         " }\n    - { name: beta-app, tenant: beta, sha256: " + Sha256Hex(kBetaKey) +
         ", limits: { requests_per_minute: 5 } }\n";
}

TEST(AuthTest, PresentedKeyReadsBearerThenXApiKey) {
  EXPECT_EQ(PresentedKey("Bearer abc", std::nullopt), "abc");
  EXPECT_EQ(PresentedKey("bearer  abc ", std::nullopt), "abc");
  EXPECT_EQ(PresentedKey(std::nullopt, "xyz"), "xyz");
  EXPECT_EQ(PresentedKey("Bearer abc", "xyz"), "abc");
  // Another scheme is a key we cannot use: present and wrong, unless x-api-key has one.
  EXPECT_EQ(PresentedKey("Basic Zm9vOmJhcg==", std::nullopt), "");
  EXPECT_EQ(PresentedKey("Basic Zm9vOmJhcg==", "xyz"), "xyz");
  EXPECT_EQ(PresentedKey(std::nullopt, std::nullopt), std::nullopt);
}

TEST(AuthTest, KnownKeysResolveToTheirTenantAndOthersAreRefused) {
  absl::StatusOr<Config> config = ParseConfig(ConfigWith(Keys()), "auth.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->auth.allow_unauthenticated);

  absl::StatusOr<Principal> acme = Authenticate(config->auth, kAcmeKey);
  ASSERT_TRUE(acme.ok()) << acme.status();
  EXPECT_EQ(acme->tenant, "acme");
  EXPECT_EQ(acme->key_name, "ci-bot");
  absl::StatusOr<Principal> beta = Authenticate(config->auth, kBetaKey);
  ASSERT_TRUE(beta.ok());
  EXPECT_EQ(beta->tenant, "beta");

  for (const std::string& wrong :
       std::vector<std::string>{"sk-acme-c", "sk-acme-ci ", "", Sha256Hex(kAcmeKey)}) {
    absl::StatusOr<Principal> refused = Authenticate(config->auth, wrong);
    ASSERT_FALSE(refused.ok()) << wrong;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(refused.status().message(), "invalid API key");
  }
  absl::StatusOr<Principal> missing = Authenticate(config->auth, std::nullopt);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing API key"));
}

TEST(AuthTest, AnonymousAccessWhenAllowedButPresentedKeysAreStillChecked) {
  absl::StatusOr<Config> config =
      ParseConfig(ConfigWith(Keys() + "  allow_unauthenticated: true\n"), "auth.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Principal> anonymous = Authenticate(config->auth, std::nullopt);
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ(anonymous->tenant, "");
  EXPECT_FALSE(Authenticate(config->auth, "sk-wrong").ok());
}

TEST(AuthTest, WithoutKeysAPresentedKeyIsIgnoredAndAnonymousAccessDecides) {
  absl::StatusOr<Config> open = DefaultConfig();
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_TRUE(open->auth.allow_unauthenticated);
  EXPECT_TRUE(Authenticate(open->auth, "unused").ok());
  EXPECT_TRUE(Authenticate(open->auth, std::nullopt).ok());

  absl::StatusOr<Config> closed = ParseConfig(ConfigWith(""), "closed.yaml", "");
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_FALSE(closed->auth.allow_unauthenticated);
  EXPECT_EQ(Authenticate(closed->auth, "unused").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthTest, ApplyPrincipalOverridesTheCallersTenantMetadata) {
  InboundRequest request;
  request.metadata["tenant"] = "someone-else";
  ApplyPrincipal(Principal{"acme", "ci-bot"}, request);
  EXPECT_EQ(request.tenant, "acme");
  EXPECT_EQ(request.key_name, "ci-bot");
  EXPECT_EQ(request.metadata["tenant"], "acme");
}

TEST(AuthTest, TenantsKeysLimitsAndMeteringParse) {
  absl::StatusOr<Config> config = ParseConfig(ConfigWith(Keys() + R"(
tenants:
  acme: { usd_per_day: 5, usd_per_month: 50, tokens_per_minute: 20000, requests_per_minute: 60,
          max_concurrent: 4, on_exhausted: downgrade }
  gamma: { usd_per_day: 1 }
metering: { state_file: state/metering.json, reference_target: frontier }
metrics: { per_key_labels: true }
)"),
                                              "auth.yaml", "/etc/switchyard");
  ASSERT_TRUE(config.ok()) << config.status();
  const TenantConfig* acme = config->auth.FindTenant("acme");
  ASSERT_NE(acme, nullptr);
  EXPECT_EQ(acme->limits.usd_per_day, 5);
  EXPECT_EQ(acme->limits.usd_per_month, 50);
  EXPECT_EQ(acme->limits.tokens_per_minute, 20000);
  EXPECT_EQ(acme->limits.requests_per_minute, 60);
  EXPECT_EQ(acme->limits.max_concurrent, 4);
  EXPECT_EQ(acme->limits.on_exhausted, Limits::OnExhausted::kDowngrade);
  ASSERT_NE(config->auth.FindTenant("gamma"), nullptr);
  EXPECT_EQ(config->auth.FindTenant("gamma")->limits.on_exhausted, Limits::OnExhausted::kReject);
  // A tenant named only by a key is still a configured tenant, without limits.
  ASSERT_NE(config->auth.FindTenant("beta"), nullptr);
  EXPECT_EQ(config->auth.FindTenant("beta")->limits, Limits{});
  EXPECT_EQ(config->auth.FindKey("beta-app")->limits.requests_per_minute, 5);
  EXPECT_EQ(config->metering.state_file, "/etc/switchyard/state/metering.json");
  EXPECT_EQ(config->metering.reference_target, "frontier");
  EXPECT_TRUE(config->metrics_per_key_labels);
}

TEST(AuthTest, KeyFileEntriesJoinTheConfigsKeys) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/auth_test_keys.yaml";
  {
    std::ofstream out(path);
    out << "- { name: file-key, tenant: delta, sha256: " << Sha256Hex("sk-from-file") << " }\n";
  }
  absl::StatusOr<Config> config =
      ParseConfig(ConfigWith(Keys() + "  key_file: auth_test_keys.yaml\n"), "auth.yaml", dir);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Principal> principal = Authenticate(config->auth, "sk-from-file");
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->tenant, "delta");

  {
    std::ofstream out(path);
    out << "- { name: file-key, tenant: delta, sha256: nothex }\n";
  }
  absl::StatusOr<Config> broken =
      ParseConfig(ConfigWith(Keys() + "  key_file: auth_test_keys.yaml\n"), "auth.yaml", dir);
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.status().message(),
              HasSubstr(std::filesystem::path(path).lexically_normal().string() + ":1:44:"));
  EXPECT_THAT(broken.status().message(), HasSubstr("64 hex digits"));
}

TEST(AuthTest, BadAuthConfigIsAPreciseError) {
  struct Case {
    std::string yaml;
    std::string error;
  };
  const std::string hash = Sha256Hex(kAcmeKey);
  const Case cases[] = {
      {"auth:\n  keys:\n    - { name: a, tenant: t, sha256: abc }\n",
       "auth.yaml:10:37: 'sha256' must be 64 hex digits"},
      {"auth:\n  keys:\n    - { name: a, sha256: " + hash + " }\n", "auth.yaml:10:7:"},
      {"auth:\n  keys:\n    - { name: a, tenant: t, sha256: " + hash +
           " }\n    - { name: a, tenant: u, sha256: " + Sha256Hex("x") + " }\n",
       "auth.yaml:11:15: duplicate key name 'a'"},
      {"auth:\n  keys:\n    - { name: a, tenant: t, sha256: " + hash +
           " }\n    - { name: b, tenant: u, sha256: " + hash + " }\n",
       "same hash as key 'a'"},
      {"auth:\n  allow_unauthenticated: maybe\n", "auth.yaml:9:26:"},
      {"auth:\n  keyz: []\n", "auth.yaml:9:3:"},
      {"auth:\n  key_file: /nonexistent/keys.yaml\n",
       "key file: /nonexistent/keys.yaml: cannot open"},
      {"tenants:\n  acme: { usd_per_day: -1 }\n", "auth.yaml:9:24:"},
      {"tenants:\n  acme: { on_exhausted: refund }\n",
       "'on_exhausted' must be reject or downgrade"},
      {"tenants:\n  acme: { usd_per_dya: 3 }\n", "auth.yaml:9:11:"},
      {"tenants:\n  anonymous: { usd_per_day: 3 }\n", "not \"anonymous\""},
      {"metering: { reference_target: nowhere }\n",
       "auth.yaml:8:31: reference_target 'nowhere' is not a configured target"},
      {"metrics: { per_key_label: true }\n", "auth.yaml:8:12:"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Config> config = ParseConfig(ConfigWith(c.yaml), "auth.yaml", "");
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr(c.error)) << c.yaml;
  }
}

TEST(AuthTest, DowngradeNeedsALocalTarget) {
  absl::StatusOr<Config> config = ParseConfig(R"(
targets:
  - { name: frontier, kind: openai_compatible, base_url: "http://127.0.0.1:9", model: m }
policy:
  default: frontier
tenants:
  acme: { usd_per_day: 1, on_exhausted: downgrade }
)",
                                              "remote_only.yaml", "");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              HasSubstr("remote_only.yaml:7:9: tenant 'acme': on_exhausted: downgrade needs a "
                        "local target"));
}

TEST(AuthTest, HashKeyPrintsTheSha256OfStdinWithoutItsNewline) {
  std::istringstream in(kAcmeKey + "\n");
  std::ostringstream out, err;
  EXPECT_EQ(HashKeyCommand(in, out, err), 0);
  EXPECT_EQ(out.str(), Sha256Hex(kAcmeKey) + "\n");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  std::istringstream empty("\n");
  std::ostringstream out2, err2;
  EXPECT_EQ(HashKeyCommand(empty, out2, err2), 1);
  EXPECT_EQ(out2.str(), "");
  EXPECT_THAT(err2.str(), HasSubstr("got none"));
}

TEST(AuthTest, TheReadmesAuthExampleLoadsAndAuthenticates) {
  std::ifstream in(std::string(SWITCHYARD_SOURCE_DIR) + "/README.md");
  std::stringstream readme;
  readme << in.rdbuf();
  const std::string text = readme.str();
  const size_t section = text.find("## Auth, tenants and budgets");
  ASSERT_NE(section, std::string::npos);
  const size_t start = text.find("```yaml\n", section);
  ASSERT_NE(start, std::string::npos);
  const size_t end = text.find("```", start + 8);
  absl::StatusOr<Config> config =
      ParseConfig(text.substr(start + 8, end - start - 8), "README.md", "/srv/switchyard");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<Principal> principal = Authenticate(config->auth, "sk-example-ci-bot");
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->tenant, "acme");
  EXPECT_EQ(config->auth.FindTenant("acme")->limits.on_exhausted, Limits::OnExhausted::kDowngrade);
  EXPECT_EQ(config->metering.state_file, "/srv/switchyard/metering.json");
}

}  // namespace
}  // namespace switchyard::gateway
