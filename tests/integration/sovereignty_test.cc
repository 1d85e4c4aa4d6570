// Data sovereignty under failure: findings planted at random in generated prompts never reach a
// remote upstream under a keep-local policy, even when the local target fails or is overloaded
// and the route names the remote target as a fallback. Prompts without findings do fall back to
// the remote target, which shows the upstream is reachable and the test can fail.
#include <random>
#include <string>
#include <vector>

#include "gateway/backend_factory.h"
#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/fake_backend.h"
#include "tests/support/http_client.h"

namespace switchyard::gateway {
namespace {

using json = nlohmann::json;

class Planter {
 public:
  explicit Planter(uint32_t seed) : random_(seed) {}

  // A random value of finding type `type` (one of kTypes) that the detectors must catch.
  std::string Value(int type) {
    switch (type) {
      case 0:
        return Pick({"ann", "li.wei", "j.smith", "ops"}) + std::to_string(Int(1, 999)) + "@" +
               Pick({"acmecorp", "globex", "initech", "umbrella"}) + ".com";
      case 1:
        return Luhn("4", 16);
      case 2:
        return Iban();
      case 3:
        return Pad(Int(101, 665), 3) + "-" + Pad(Int(1, 99), 2) + "-" + Pad(Int(1, 9999), 4);
      case 4:
        return std::to_string(Int(11, 90)) + "." + std::to_string(Int(1, 254)) + "." +
               std::to_string(Int(1, 254)) + "." + std::to_string(Int(1, 254));
      case 5:
        return "AKIA" + Chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16);
      default:
        return "ghp_" + Chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 36);
    }
  }

  // Filler prose with `value` (if any) at a random word position.
  std::string Prompt(const std::string& value) {
    static const std::vector<std::string> kWords = {
        "please", "review", "the", "quarterly", "numbers", "and", "summarise", "what",
        "changed", "for", "our", "team", "before", "Friday", "thanks", "report"};
    std::vector<std::string> words;
    const int count = Int(5, 40);
    for (int i = 0; i < count; ++i) words.push_back(kWords[Int(0, kWords.size() - 1)]);
    if (!value.empty()) words.insert(words.begin() + Int(0, count), value);
    std::string text;
    for (const std::string& word : words) text += (text.empty() ? "" : " ") + word;
    return text;
  }

  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(random_); }

 private:
  std::string Pick(std::vector<std::string> options) { return options[Int(0, options.size() - 1)]; }
  std::string Chars(const std::string& alphabet, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += alphabet[Int(0, alphabet.size() - 1)];
    return out;
  }
  static std::string Pad(int value, int width) {
    std::string text = std::to_string(value);
    return std::string(width - text.size(), '0') + text;
  }
  std::string Luhn(const std::string& prefix, int length) {
    std::string digits = prefix;
    while (static_cast<int>(digits.size()) < length - 1) digits += static_cast<char>('0' + Int(0, 9));
    int sum = 0;
    for (int i = 0; i < static_cast<int>(digits.size()); ++i) {
      int d = digits[digits.size() - 1 - i] - '0';
      if (i % 2 == 0) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
      sum += d;
    }
    return digits + static_cast<char>('0' + (10 - sum % 10) % 10);
  }
  std::string Iban() {
    std::string bban;
    for (int i = 0; i < 18; ++i) bban += static_cast<char>('0' + Int(0, 9));
    // mod 97 of bban + "DE00" with letters as numbers (D=13, E=14).
    int remainder = 0;
    for (char c : bban + "131400") remainder = (remainder * 10 + (c - '0')) % 97;
    return "DE" + Pad(98 - remainder, 2) + bban;
  }

  std::mt19937 random_;
};

class SovereigntyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<mocks::MockUpstream>> upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
targets:
  - { name: local, kind: local, model: unused.gguf }
  - name: cloud
    kind: openai_compatible
    base_url: )" + upstream_->base_url() + R"(
    model: frontier
    timeouts: { connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, total_seconds: 10 }
policy:
  default: local
  clearance: { cloud: public }
  rules:
    - name: local-first
      description: Everything prefers the local engine; only public text may fall back
      route: [local, cloud]
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "sovereignty.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    ServerOptions options;
    BackendFactory real = MakeDefaultBackendFactory();
    options.backend_factory = [this, real](const TargetConfig& target, const Config& config)
        -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
      if (target.name == "local") return std::shared_ptr<backends::Backend>(local_);
      return real(target, config);
    };
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    url_ = "http://127.0.0.1:" + std::to_string(server_->http_port()) + "/v1/chat/completions";
  }

  testing::HttpResult Send(const std::string& text, bool stream) {
    return testing::HttpPost(url_, json{{"model", "auto"},
                                        {"stream", stream},
                                        {"messages", {{{"role", "user"}, {"content", text}}}}}
                                       .dump());
  }

  std::shared_ptr<testing::FakeBackend> local_ = std::make_shared<testing::FakeBackend>();
  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<Server> server_;
  std::string url_;
};

TEST_F(SovereigntyTest, PlantedFindingsNeverReachTheRemoteWhenLocalFails) {
  Planter planter(20261123);
  std::vector<std::string> planted;
  for (int i = 0; i < 140; ++i) {
    // Half the time the local engine is down, half the time it is overloaded.
    local_->set_script(testing::Script(
        {}, {},
        i % 2 == 0 ? absl::UnavailableError("engine failed")
                   : absl::ResourceExhaustedError("local engine queue is full")));
    const std::string value = planter.Value(i % 7);
    planted.push_back(value);
    testing::HttpResult result = Send(planter.Prompt(value), /*stream=*/i % 3 == 0);
    // The request fails (local is down and the remote may not have it): never a remote answer.
    EXPECT_TRUE(result.status == 502 || result.status == 429) << result.status << " " << value;
    EXPECT_NE(result.headers["x-switchyard-sensitivity"], "public") << value;
  }
  EXPECT_EQ(upstream_->request_count(), 0u);
  for (const mocks::RecordedRequest& request : upstream_->requests()) {
    for (const std::string& value : planted) EXPECT_EQ(request.body.find(value), std::string::npos);
  }

  // Control: public text does fall back to the remote target, so the path above was open.
  for (int i = 0; i < 20; ++i) {
    local_->set_script(testing::Script({}, {}, absl::UnavailableError("engine failed")));
    testing::HttpResult result = Send(planter.Prompt(""), /*stream=*/i % 2 == 0);
    EXPECT_EQ(result.status, 200) << result.body;
  }
  EXPECT_EQ(upstream_->request_count(), 20u);
}

}  // namespace
}  // namespace switchyard::gateway
