// CurlLoop attached to an io_context the test runs itself: transfers, cancel, timeouts, delayed
// starts, connection and handle reuse, shutdown from inside a handler, several threads running
// the io_context. The other remote tests cover the loop on its own thread.
#include "backends/remote/curl_loop.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/strand.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mocks/mock_upstream.h"

namespace switchyard::backends {
namespace {

using ::switchyard::mocks::Behaviour;
using ::switchyard::mocks::MockUpstream;
using ::testing::HasSubstr;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Records one transfer; checks every call happens on a thread running the io_context.
class Recorder : public TransferHandler {
 public:
  explicit Recorder(boost::asio::io_context& io) : io_(io) {}

  void OnHead(const HttpResponseHead& head) override {
    CheckThread();
    absl::MutexLock lock(&mu_);
    ++heads_;
    status_code_ = head.status;
  }
  bool OnBody(std::string_view data) override {
    CheckThread();
    absl::MutexLock lock(&mu_);
    body_.append(data);
    return true;
  }
  void OnComplete(const absl::Status& status) override {
    CheckThread();
    {
      absl::MutexLock lock(&mu_);
      ++completes_;
      status_ = status;
    }
    if (on_complete) on_complete();
  }

  bool done() const {
    absl::MutexLock lock(&mu_);
    return completes_ > 0;
  }
  int completes() const {
    absl::MutexLock lock(&mu_);
    return completes_;
  }
  int heads() const {
    absl::MutexLock lock(&mu_);
    return heads_;
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  int status_code() const {
    absl::MutexLock lock(&mu_);
    return status_code_;
  }
  std::string body() const {
    absl::MutexLock lock(&mu_);
    return body_;
  }
  bool off_loop_call() const { return off_loop_call_.load(); }

  std::function<void()> on_complete;

 private:
  void CheckThread() {
    if (!io_.get_executor().running_in_this_thread()) off_loop_call_ = true;
  }

  boost::asio::io_context& io_;
  std::atomic<bool> off_loop_call_{false};
  mutable absl::Mutex mu_;
  int heads_ = 0;
  int completes_ = 0;
  int status_code_ = 0;
  absl::Status status_;
  std::string body_;
};

class CurlLoopAttachedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mock = MockUpstream::Start();
    ASSERT_TRUE(mock.ok()) << mock.status();
    mock_ = *std::move(mock);
    auto loop = CurlLoop::Create(io_.get_executor());
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }

  HttpRequest Request(bool stream = false) const {
    HttpRequest request;
    request.url = mock_->base_url() + "/chat/completions";
    request.headers = {"Content-Type: application/json"};
    request.body = stream ? R"({"model":"m","messages":[],"stream":true})"
                          : R"({"model":"m","messages":[]})";
    request.streaming = stream;
    return request;
  }

  std::shared_ptr<Recorder> NewRecorder() { return std::make_shared<Recorder>(io_); }

  // Runs the io_context on this thread until `done` or the timeout.
  bool RunUntil(const std::function<bool()>& done, milliseconds timeout = milliseconds(5000)) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      io_.run_one_for(milliseconds(10));
      if (io_.stopped()) io_.restart();
    }
    return true;
  }

  // Declared first, destroyed last: the loop's pending operations live on it.
  boost::asio::io_context io_;
  std::unique_ptr<MockUpstream> mock_;
  std::shared_ptr<CurlLoop> loop_;
};

TEST(CurlLoopCreateTest, RejectsAnEmptyExecutor) {
  EXPECT_EQ(CurlLoop::Create(boost::asio::any_io_executor()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CurlLoopBindingTest, ForThisThreadIsTheBoundLoopElseTheFallback) {
  boost::asio::io_context io;
  auto own = CurlLoop::Create();
  auto attached = CurlLoop::Create(io.get_executor());
  ASSERT_TRUE(own.ok() && attached.ok());
  EXPECT_EQ(CurlLoop::ForThisThread(*own), *own);
  CurlLoop::BindToThisThread(attached->get());
  EXPECT_EQ(CurlLoop::ForThisThread(*own), *attached);
  std::shared_ptr<CurlLoop> elsewhere;
  std::thread([&] { elsewhere = CurlLoop::ForThisThread(*own); }).join();
  EXPECT_EQ(elsewhere, *own) << "a binding belongs to one thread";
  CurlLoop::BindToThisThread(nullptr);
  EXPECT_EQ(CurlLoop::ForThisThread(*own), *own);
}

// A handler that drops the last reference to its loop when its transfer completes.
class LastReferenceHandler : public TransferHandler {
 public:
  explicit LastReferenceHandler(std::shared_ptr<CurlLoop> loop) : loop_(std::move(loop)) {}
  void OnHead(const HttpResponseHead&) override {}
  bool OnBody(std::string_view) override { return true; }
  void OnComplete(const absl::Status& status) override {
    loop_.reset();
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }
  bool WaitDone() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), absl::Seconds(5));
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  std::shared_ptr<CurlLoop> loop_;
  absl::Mutex mu_;
  bool done_ = false;
  absl::Status status_;
};

// The loop on its own thread, released by a handler whose transfer failed inside the handler
// that started it (nothing listens on the port).
TEST(CurlLoopOwnThreadTest, LastReferenceHeldByATransferThatFailsAtOnce) {
  for (int i = 0; i < 20; ++i) {
    auto loop = CurlLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status();
    auto handler = std::make_shared<LastReferenceHandler>(*loop);
    HttpRequest request;
    request.url = "http://127.0.0.1:1/v1/chat/completions";
    request.body = "{}";
    (*loop)->Start(request, handler);
    loop->reset();
    ASSERT_TRUE(handler->WaitDone());
    EXPECT_EQ(handler->status().code(), absl::StatusCode::kUnavailable) << handler->status();
  }
}

TEST_F(CurlLoopAttachedTest, CompletesOnTheCallersIoContext) {
  auto unary = NewRecorder();
  auto stream = NewRecorder();
  loop_->Start(Request(), unary);
  loop_->Start(Request(/*stream=*/true), stream);
  ASSERT_TRUE(RunUntil([&] { return unary->done() && stream->done(); }));
  EXPECT_TRUE(unary->status().ok()) << unary->status();
  EXPECT_EQ(unary->status_code(), 200);
  EXPECT_EQ(unary->heads(), 1);
  EXPECT_THAT(unary->body(), HasSubstr("Hello, world!"));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_THAT(stream->body(), HasSubstr("data: [DONE]"));
  EXPECT_FALSE(unary->off_loop_call());
  EXPECT_FALSE(stream->off_loop_call());
  EXPECT_EQ(loop_->active_transfers(), 0u);
}

TEST_F(CurlLoopAttachedTest, ReusesTheConnectionAcrossTransfers) {
  for (int i = 0; i < 20; ++i) {
    auto recorder = NewRecorder();
    loop_->Start(Request(), recorder);
    ASSERT_TRUE(RunUntil([&] { return recorder->done(); })) << "transfer " << i;
    ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  }
  EXPECT_EQ(mock_->request_count(), 20u);
  EXPECT_EQ(mock_->connections_accepted(), 1u);
}

TEST_F(CurlLoopAttachedTest, CancelDropsTheTransferAndClosesItsConnection) {
  Behaviour never;
  never.kind = Behaviour::Kind::kNeverAnswer;
  mock_->SetBehaviour(never);
  auto recorder = NewRecorder();
  const CurlLoop::TransferId id = loop_->Start(Request(), recorder);
  ASSERT_TRUE(RunUntil([&] { return mock_->request_count() == 1; }));
  loop_->Cancel(id);
  ASSERT_TRUE(RunUntil([&] { return loop_->active_transfers() == 0; }));
  ASSERT_TRUE(RunUntil([&] { return mock_->aborted_responses() == 1; }));
  io_.run_for(milliseconds(50));
  EXPECT_EQ(recorder->completes(), 0);
  EXPECT_EQ(recorder->heads(), 0);
}

TEST_F(CurlLoopAttachedTest, FirstByteAndIdleTimeouts) {
  Behaviour never;
  never.kind = Behaviour::Kind::kNeverAnswer;
  mock_->EnqueueBehaviour(never);
  HttpRequest silent = Request();
  silent.timeouts.first_byte = absl::Milliseconds(200);
  auto first_byte = NewRecorder();
  const auto started = Clock::now();
  loop_->Start(silent, first_byte);
  ASSERT_TRUE(RunUntil([&] { return first_byte->done(); }));
  EXPECT_EQ(first_byte->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(first_byte->status().message(), HasSubstr("no response within 200ms"));
  EXPECT_GE(Clock::now() - started, milliseconds(200));

  Behaviour drip;
  drip.tokens = {"a", "b", "c", "d", "e", "f"};
  drip.token_delay = milliseconds(400);
  mock_->SetBehaviour(drip);
  HttpRequest stalled = Request(/*stream=*/true);
  stalled.timeouts.idle = absl::Milliseconds(150);
  auto idle = NewRecorder();
  loop_->Start(stalled, idle);
  ASSERT_TRUE(RunUntil([&] { return idle->done(); }));
  EXPECT_EQ(idle->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(idle->status().message(), HasSubstr("no data for 150ms"));
  EXPECT_EQ(idle->heads(), 1);
}

TEST_F(CurlLoopAttachedTest, DelayedStartRunsLaterOrNotAtAllWhenCancelled) {
  auto later = NewRecorder();
  auto dropped = NewRecorder();
  const auto started = Clock::now();
  loop_->Start(Request(), later, absl::Milliseconds(150));
  const CurlLoop::TransferId id = loop_->Start(Request(), dropped, absl::Milliseconds(150));
  loop_->Cancel(id);
  ASSERT_TRUE(RunUntil([&] { return later->done(); }));
  EXPECT_GE(Clock::now() - started, milliseconds(150));
  EXPECT_TRUE(later->status().ok()) << later->status();
  io_.run_for(milliseconds(200));
  EXPECT_EQ(dropped->completes(), 0);
  EXPECT_EQ(mock_->request_count(), 1u);
}

// The first start arms the deadline timer for its own (far) deadlines; the second, nearer start
// must still run on time.
TEST_F(CurlLoopAttachedTest, DelayedStartsEachRunOnTime) {
  auto first = NewRecorder();
  auto second = NewRecorder();
  const auto started = Clock::now();
  loop_->Start(Request(), first, absl::Milliseconds(20));
  loop_->Start(Request(), second, absl::Milliseconds(120));
  ASSERT_TRUE(RunUntil([&] { return first->done() && second->done(); }, milliseconds(3000)));
  EXPECT_LT(Clock::now() - started, milliseconds(2000));
  EXPECT_TRUE(first->status().ok()) << first->status();
  EXPECT_TRUE(second->status().ok()) << second->status();
}

TEST_F(CurlLoopAttachedTest, LastReferenceDroppedInsideAHandlerShutsDownAfterIt) {
  Behaviour never;
  never.kind = Behaviour::Kind::kNeverAnswer;
  mock_->SetBehaviour(never);
  auto stuck = NewRecorder();
  loop_->Start(Request(), stuck);
  ASSERT_TRUE(RunUntil([&] { return mock_->request_count() == 1; }));
  // The next request is answered; its handler holds the only reference left and drops it.
  mock_->EnqueueBehaviour(Behaviour());
  auto finishing = NewRecorder();
  auto holder = std::make_shared<std::shared_ptr<CurlLoop>>(loop_);
  finishing->on_complete = [holder] { holder->reset(); };
  loop_->Start(Request(), finishing);
  loop_.reset();
  ASSERT_TRUE(RunUntil([&] { return finishing->done() && stuck->done(); }));
  EXPECT_TRUE(finishing->status().ok()) << finishing->status();
  EXPECT_EQ(stuck->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(stuck->status().message(), HasSubstr("shutting down"));
  EXPECT_FALSE(stuck->off_loop_call());
  EXPECT_TRUE(mock_->WaitForAbortedResponses(1, milliseconds(2000)));
  // Nothing of the loop keeps the io_context busy afterwards.
  io_.restart();
  io_.run_for(milliseconds(100));
  EXPECT_TRUE(io_.stopped());
}

TEST_F(CurlLoopAttachedTest, DestroyedOffTheLoopCompletesRunningTransfers) {
  Behaviour never;
  never.kind = Behaviour::Kind::kNeverAnswer;
  mock_->SetBehaviour(never);
  auto stuck = NewRecorder();
  loop_->Start(Request(), stuck);
  ASSERT_TRUE(RunUntil([&] { return mock_->request_count() == 1; }));
  // The io_context is not running now (as after the HTTP server stopped): the loop shuts down on
  // this thread.
  loop_.reset();
  EXPECT_EQ(stuck->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(mock_->WaitForAbortedResponses(1, milliseconds(2000)));
}

TEST_F(CurlLoopAttachedTest, SeveralThreadsRunningTheIoContext) {
  constexpr int kTransfers = 64;
  auto guard = boost::asio::make_work_guard(io_);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back([this] { io_.run(); });
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < kTransfers; ++i) {
    recorders.push_back(NewRecorder());
    loop_->Start(Request(/*stream=*/i % 2 == 1), recorders.back());
  }
  const auto deadline = Clock::now() + milliseconds(10000);
  auto all_done = [&] {
    for (const auto& r : recorders) {
      if (!r->done()) return false;
    }
    return true;
  };
  while (!all_done() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(5));
  guard.reset();
  loop_.reset();  // from this thread while others run the io_context
  io_.stop();
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kTransfers; ++i) {
    ASSERT_TRUE(recorders[i]->done()) << "transfer " << i;
    EXPECT_TRUE(recorders[i]->status().ok()) << i << ": " << recorders[i]->status();
    EXPECT_EQ(recorders[i]->completes(), 1);
  }
}

}  // namespace
}  // namespace switchyard::backends
