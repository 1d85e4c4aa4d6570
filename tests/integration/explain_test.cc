// Explainability on the real gateway with the real llama.cpp engine (stories260K) and a mock
// remote upstream: POST /v1/route/explain and gRPC Explain carry every target's estimated cost and
// why every other target lost, findings as type and span only; the local target's prompt tokens
// are its own tokenizer's count, equal to what the engine then reports.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/mocks/mock_upstream.h"
#include "tests/support/http_client.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::HttpPost;
using ::switchyard::testing::HttpResult;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

const std::string kModels = SWITCHYARD_SHARED_MODELS;
constexpr char kEmail[] = "ann.lee@initech.com";

class ExplainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModels + "/stories260K.gguf")) {
      GTEST_SKIP() << "shared models not found at " << kModels;
    }
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    auto upstream = mocks::MockUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    const std::string yaml = R"(
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth: { allow_unauthenticated: true }
models: { dirs: [")" + kModels + R"("] }
targets:
  - { name: local, kind: local, model: stories260K.gguf, threads: 1, context: 256 }
  - name: cloud
    kind: openai_compatible
    model: frontier
    base_url: )" + upstream_->base_url() + R"(
    price: { input_per_million: 2.5, output_per_million: 10 }
policy:
  default: cloud
  clearance: { cloud: public }
  rules:
    - { name: stories, when: { keywords: [once] }, route: [local, cloud] }
)";
    absl::StatusOr<Config> config = ParseConfig(yaml, "explain_test.yaml", "");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    base_ = "http://127.0.0.1:" + std::to_string(server_->http_port());
  }

  static std::string Body(const std::string& text, int max_tokens) {
    return json{{"model", "auto"},
                {"max_tokens", max_tokens},
                {"temperature", 0},
                {"messages", {{{"role", "user"}, {"content", text}}}}}
        .dump();
  }

  std::unique_ptr<mocks::MockUpstream> upstream_;
  std::unique_ptr<Server> server_;
  std::string base_;
};

TEST_F(ExplainTest, LocalCostUsesTheModelsTokenizer) {
  const std::string text = "Once upon a time, in a faraway land, there lived a tiny dragon.";
  HttpResult explained = HttpPost(base_ + "/v1/route/explain", Body(text, 4));
  ASSERT_EQ(explained.status, 200) << explained.body;
  const json decision = json::parse(explained.body);
  ASSERT_EQ(decision["target"], "local");
  const json& local = decision["cost"]["targets"][0];
  const json& cloud = decision["cost"]["targets"][1];
  ASSERT_EQ(local["target"], "local");
  ASSERT_EQ(cloud["target"], "cloud");

  const std::shared_ptr<const Runtime> runtime = server_->gateway().runtime();
  const std::optional<int64_t> counted =
      runtime->backends.at("local")->CountTokens({{"user", text}});
  ASSERT_TRUE(counted.has_value());
  EXPECT_EQ(local["prompt_tokens"], *counted);
  EXPECT_EQ(local["prompt_tokens_exact"], true);
  EXPECT_EQ(decision["cost"]["prompt_tokens"], *counted);  // the chosen target's figure
  // The remote target keeps the documented estimate: ceil(bytes / 4) + 4 per message.
  const int64_t estimate = static_cast<int64_t>(std::ceil(text.size() / 4.0)) + 4;
  ASSERT_NE(estimate, *counted);  // or the comparison below proves nothing
  EXPECT_EQ(cloud["prompt_tokens"], estimate);
  EXPECT_EQ(cloud["prompt_tokens_exact"], false);
  EXPECT_DOUBLE_EQ(cloud["estimated_usd"].get<double>(), (estimate * 2.5 + 4 * 10) / 1e6);

  // Running it, the engine reports exactly the prompt tokens the estimate used.
  HttpResult ran = HttpPost(base_ + "/v1/chat/completions", Body(text, 4));
  ASSERT_EQ(ran.status, 200) << ran.body;
  EXPECT_EQ(json::parse(ran.body)["usage"]["prompt_tokens"], *counted);
}

TEST_F(ExplainTest, HttpAndGrpcExplainCostsAndRejections) {
  const std::string text = std::string("Once more, write to ") + kEmail;
  HttpResult explained = HttpPost(base_ + "/v1/route/explain", Body(text, 16));
  ASSERT_EQ(explained.status, 200) << explained.body;
  EXPECT_THAT(explained.body, Not(HasSubstr(kEmail)));
  const json decision = json::parse(explained.body);
  EXPECT_EQ(decision["target"], "local");
  EXPECT_EQ(decision["targets"], json::array({"local"}));
  EXPECT_EQ(decision["sensitivity"]["level"], "internal");
  EXPECT_EQ(decision["rejected"],
            json::parse(R"([{"target":"cloud","reason":"not cleared for internal"}])"));
  ASSERT_EQ(decision["cost"]["targets"].size(), 2u);
  const json& finding = decision["sensitivity"]["findings"][0];
  EXPECT_EQ(finding["type"], "email");
  EXPECT_EQ(text.substr(finding["start"], finding["end"].get<size_t>() - finding["start"].get<size_t>()),
            kEmail);

  auto stub = v1::Switchyard::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::ChatRequest request;
  request.set_max_tokens(16);
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content(text);
  grpc::ClientContext context;
  v1::ExplainResponse response;
  ASSERT_TRUE(stub->Explain(&context, request, &response).ok());
  EXPECT_THAT(response.SerializeAsString(), Not(HasSubstr(kEmail)));
  const v1::Decision& proto = response.decision();
  EXPECT_EQ(proto.target(), "local");
  EXPECT_EQ(proto.level(), "internal");
  ASSERT_EQ(proto.targets_size(), 1);
  ASSERT_EQ(proto.rejected_size(), 1);
  EXPECT_EQ(proto.rejected(0).target(), "cloud");
  EXPECT_EQ(proto.rejected(0).reason(), "not cleared for internal");
  ASSERT_EQ(proto.findings_size(), 1);
  EXPECT_EQ(proto.findings(0).type(), "email");
  EXPECT_EQ(proto.findings(0).start(), finding["start"].get<uint64_t>());
  EXPECT_EQ(proto.findings(0).end(), finding["end"].get<uint64_t>());
  ASSERT_EQ(proto.cost().targets_size(), 2);
  EXPECT_EQ(proto.cost().targets(0).target(), "local");
  EXPECT_EQ(proto.cost().targets(0).prompt_tokens(),
            decision["cost"]["targets"][0]["prompt_tokens"].get<int64_t>());
  EXPECT_TRUE(proto.cost().targets(0).prompt_tokens_exact());
  EXPECT_EQ(proto.cost().targets(1).target(), "cloud");
  EXPECT_DOUBLE_EQ(proto.cost().targets(1).estimated_usd(),
                   decision["cost"]["targets"][1]["estimated_usd"].get<double>());
  EXPECT_GT(proto.cost().targets(1).estimated_usd(), 0);
  EXPECT_EQ(proto.cost().completion_tokens(), 16);
  EXPECT_EQ(proto.difficulty().tier(), decision["difficulty"]["tier"]);
  EXPECT_EQ(proto.difficulty().features_size(), 7);

  // Naming the remote target changes nothing: the content rule keeps the email local.
  request.set_model("cloud");
  grpc::ClientContext pinned_context;
  v1::ExplainResponse pinned;
  ASSERT_TRUE(stub->Explain(&pinned_context, request, &pinned).ok());
  EXPECT_EQ(pinned.decision().rule(), "stories");  // the content rule wins over the pin
  EXPECT_EQ(upstream_->request_count(), 0u);
}

}  // namespace
}  // namespace switchyard::gateway
