// Fixtures the remote backend tests share: an in-process mock upstream and a CurlLoop; for the
// provider adapters also options with short timeouts and no retries, and a helper that runs one
// request to its end.
#ifndef SWITCHYARD_TESTS_BACKENDS_REMOTE_BACKEND_FIXTURE_H_
#define SWITCHYARD_TESTS_BACKENDS_REMOTE_BACKEND_FIXTURE_H_

#include <stdlib.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/remote/curl_loop.h"
#include "gtest/gtest.h"
#include "tests/backends/remote/recording_sink.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {

inline ChatRequest SimpleRequest() {
  ChatRequest request;
  request.request_id = "chatcmpl-test";
  request.messages = {{"user", "Say hello"}};
  return request;
}

// An in-process mock upstream and a CurlLoop for each test.
class MockUpstreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A proxy from the developer's environment must not intercept calls to the local mock.
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
  }

  void SetUp() override {
    auto mock = mocks::MockUpstream::Start();
    ASSERT_TRUE(mock.ok()) << mock.status();
    mock_ = std::move(*mock);
    auto loop = CurlLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
  }

  // Declared first so it outlives the loop and its transfers.
  std::unique_ptr<mocks::MockUpstream> mock_;
  std::shared_ptr<CurlLoop> loop_;
};

// `Backend` is an adapter with `static StatusOr<unique_ptr<Backend>> Create(const Options&,
// shared_ptr<CurlLoop>)`; `Options` its options struct (base_url, model, api_key, timeouts,
// retry).
template <typename Backend, typename Options>
class RemoteBackendTest : public MockUpstreamTest {
 protected:
  // Options aimed at the mock: short timeouts, and one attempt, so fault tests see each failure
  // as it is (the retry tests turn retries back on).
  static Options MockOptions(std::string base_url, std::string model, std::string api_key) {
    Options options;
    options.base_url = std::move(base_url);
    options.model = std::move(model);
    options.api_key = std::move(api_key);
    options.timeouts.connect = absl::Seconds(2);
    options.timeouts.first_byte = absl::Seconds(5);
    options.timeouts.idle = absl::Seconds(5);
    options.timeouts.total = absl::Seconds(10);
    options.retry.max_attempts = 1;
    return options;
  }

  std::unique_ptr<Backend> MakeBackend(const Options& options) {
    auto backend = Backend::Create(options, loop_);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

  // Runs one request to completion and returns its sink.
  std::shared_ptr<RecordingSink> Run(const Options& options, ChatRequest request = SimpleRequest()) {
    std::unique_ptr<Backend> backend = MakeBackend(options);
    if (backend == nullptr) return std::make_shared<RecordingSink>();
    return Run(*backend, std::move(request));
  }

  // The same on a backend the test keeps (to read its counters).
  std::shared_ptr<RecordingSink> Run(Backend& backend, ChatRequest request = SimpleRequest()) {
    auto sink = std::make_shared<RecordingSink>();
    std::unique_ptr<Call> call = backend.Start(std::move(request), sink);
    EXPECT_TRUE(sink->WaitDone()) << "no OnDone within the time limit";
    EXPECT_EQ(sink->contract_violations(), 0);
    return sink;
  }

  // One request against a mock that sends one token, then an event whose data is `data` (the
  // dialect's chunk cut off mid-string when empty); not streamed, `data` is the whole body.
  std::shared_ptr<RecordingSink> RunMalformed(const Options& options, const std::string& data) {
    mocks::Behaviour behaviour;
    behaviour.kind = mocks::Behaviour::Kind::kMalformedSse;
    behaviour.malformed_data = data;
    mock_->SetBehaviour(behaviour);
    return Run(options);
  }
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_TESTS_BACKENDS_REMOTE_BACKEND_FIXTURE_H_
