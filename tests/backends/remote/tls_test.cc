// Remote calls over TLS against the mock upstream in HTTPS mode, with a throwaway CA made by the
// openssl tool: verification is always on, ca_bundle is how a private CA is trusted, the client
// offers HTTP/2 through ALPN and reuses its connection. Also: the proxy environment variables.
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "backends/remote/openai_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/backends/remote/backend_fixture.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::MockUpstream;
using ::switchyard::mocks::TlsFiles;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;

// Sets an environment variable for one scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class TlsTest : public MockUpstreamTest {
 protected:
  // Replaces the base's SetUp: the mock here speaks HTTPS with a throwaway CA.
  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "the openssl tool is not installed";
    }
    dir_ = ::testing::TempDir() + "/switchyard_tls_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("mkdir -p '" + dir_ + "'").c_str()), 0);
    absl::StatusOr<TlsFiles> files = mocks::MakeTestCertificates(dir_);
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = *files;
    auto mock = MockUpstream::Start(0, files_);
    ASSERT_TRUE(mock.ok()) << mock.status();
    mock_ = std::move(*mock);
    auto loop = CurlLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
  }

  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  OpenAiOptions Options() const {
    OpenAiOptions options;
    options.name = "secure";
    options.base_url = mock_->base_url();
    options.model = "m";
    options.timeouts.connect = absl::Seconds(5);
    options.timeouts.first_byte = absl::Seconds(5);
    options.retry.max_attempts = 1;
    return options;
  }

  std::shared_ptr<RecordingSink> Run(const OpenAiOptions& options) {
    auto backend = OpenAiBackend::Create(options, loop_);
    EXPECT_TRUE(backend.ok()) << backend.status();
    auto sink = std::make_shared<RecordingSink>();
    ChatRequest request;
    request.messages = {{"user", "hi"}};
    std::unique_ptr<Call> call = (*backend)->Start(request, sink);
    EXPECT_TRUE(sink->WaitDone()) << "hung";
    // OnDone comes with the terminal event; wait for the transfer to hand its connection back.
    for (int wait = 0; wait < 200 && loop_->active_transfers() > 0; ++wait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return sink;
  }

  std::string dir_;
  TlsFiles files_;
};

TEST_F(TlsTest, TheTargetsCaBundleMakesTheCallSucceed) {
  ASSERT_THAT(mock_->base_url(), ::testing::StartsWith("https://127.0.0.1:"));
  OpenAiOptions options = Options();
  options.ca_bundle_path = files_.ca_cert;
  for (bool stream : {true, false}) {
    options.stream = stream ? StreamUpstream::kAlways : StreamUpstream::kNever;
    auto sink = Run(options);
    ASSERT_TRUE(sink->status().ok()) << sink->status();
    EXPECT_EQ(sink->text(), "Hello, world!");
  }
  // Over TLS the client asks for HTTP/2 first (the mock only speaks HTTP/1.1 and picks that).
  EXPECT_THAT(mock_->alpn_offered(), ::testing::ElementsAre("h2", "http/1.1"));
  // One connection for both requests: keep-alive reuses the TLS session.
  EXPECT_EQ(mock_->connections_accepted(), 1u);
}

TEST_F(TlsTest, WithoutTheCaTheCallFailsWithAPreciseVerificationError) {
  // The system store does not know the throwaway CA: never silently insecure.
  auto sink = Run(Options());
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(), HasSubstr("target 'secure': upstream request failed: "));
  EXPECT_THAT(sink->status().message(), HasSubstr("SSL certificate problem"));
  EXPECT_EQ(mock_->request_count(), 0u);
  // The mock notes its side of the refused handshake a moment after the client gave up.
  for (int wait = 0; wait < 200 && mock_->tls_handshake_failures() == 0; ++wait) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(mock_->tls_handshake_failures(), 1u);
}

TEST_F(TlsTest, AnotherCaIsNoSubstitute) {
  const std::string other = dir_ + "/other";
  ASSERT_EQ(std::system(("mkdir -p '" + other + "'").c_str()), 0);
  absl::StatusOr<TlsFiles> other_files = mocks::MakeTestCertificates(other);
  ASSERT_TRUE(other_files.ok()) << other_files.status();
  OpenAiOptions options = Options();
  options.ca_bundle_path = other_files->ca_cert;
  auto sink = Run(options);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(), HasSubstr("SSL certificate problem"));
  EXPECT_EQ(mock_->request_count(), 0u);
}

TEST_F(TlsTest, AMissingCaBundleFileIsAPreciseError) {
  OpenAiOptions options = Options();
  options.ca_bundle_path = dir_ + "/no-such-bundle.pem";
  auto sink = Run(options);
  EXPECT_EQ(sink->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(sink->status().message(),
              AnyOf(HasSubstr("no-such-bundle.pem"), HasSubstr("CA cert"),
                    HasSubstr("certificate")));
  EXPECT_EQ(mock_->request_count(), 0u);
}

// libcurl takes the proxy from the environment (we never set CURLOPT_PROXY): a plain-HTTP
// target's request goes to the proxy in absolute form.
TEST(ProxyTest, HttpProxyFromTheEnvironmentIsHonoured) {
  auto proxy = MockUpstream::Start();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  auto loop = CurlLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  const std::string proxy_url = "http://127.0.0.1:" + std::to_string((*proxy)->port());
  ScopedEnv http_proxy("http_proxy", proxy_url.c_str());
  ScopedEnv no_proxy("no_proxy", nullptr);
  ScopedEnv no_proxy_upper("NO_PROXY", nullptr);
  OpenAiOptions options;
  options.base_url = "http://upstream.invalid/v1";
  options.model = "m";
  options.retry.max_attempts = 1;
  auto backend = OpenAiBackend::Create(options, *loop);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto sink = std::make_shared<RecordingSink>();
  ChatRequest request;
  request.messages = {{"user", "hi"}};
  std::unique_ptr<Call> call = (*backend)->Start(request, sink);
  ASSERT_TRUE(sink->WaitDone());
  ASSERT_EQ((*proxy)->request_count(), 1u);
  EXPECT_EQ((*proxy)->requests()[0].target, "http://upstream.invalid/v1/chat/completions");
  EXPECT_EQ((*proxy)->requests()[0].Header("host"), "upstream.invalid");
}

}  // namespace
}  // namespace switchyard::backends
