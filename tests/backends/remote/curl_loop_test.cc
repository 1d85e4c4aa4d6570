// CurlLoop attached to an io_context the test runs itself: transfers, cancel, timeouts, delayed
// starts, connection and handle reuse, shutdown from inside a handler, several threads running
// the io_context; each through libcurl and through the direct plain-HTTP path. Then what only
// the direct path does: its pool of idle connections (a connection the server closed, one it
// closes on the next request), and the framings and faults of HTTP/1.1 responses, against a
// bare TCP server that writes exactly the bytes a test gives it. The other remote tests cover
// the loop on its own thread.
#include "backends/remote/curl_loop.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
    head_ = head;
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
  HttpResponseHead head() const {
    absl::MutexLock lock(&mu_);
    return head_;
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
  HttpResponseHead head_;
};

// A mock upstream and a loop attached to an io_context the test runs.
class AttachedLoopFixture : public ::testing::Test {
 protected:
  // LoopOptions::direct_http: plain HTTP through the loop's own client, else through libcurl.
  virtual bool DirectHttp() const = 0;

  void SetUp() override {
    auto mock = MockUpstream::Start();
    ASSERT_TRUE(mock.ok()) << mock.status();
    mock_ = *std::move(mock);
    auto loop = CurlLoop::Create(io_.get_executor(), LoopOptions{.direct_http = DirectHttp()});
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

// Every behaviour both ways: the param is DirectHttp().
class CurlLoopAttachedTest : public AttachedLoopFixture,
                             public ::testing::WithParamInterface<bool> {
 protected:
  bool DirectHttp() const override { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(BothPaths, CurlLoopAttachedTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Direct" : "Libcurl";
                         });


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

TEST_P(CurlLoopAttachedTest, CompletesOnTheCallersIoContext) {
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

TEST_P(CurlLoopAttachedTest, ReusesTheConnectionAcrossTransfers) {
  for (int i = 0; i < 20; ++i) {
    auto recorder = NewRecorder();
    loop_->Start(Request(), recorder);
    ASSERT_TRUE(RunUntil([&] { return recorder->done(); })) << "transfer " << i;
    ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  }
  EXPECT_EQ(mock_->request_count(), 20u);
  EXPECT_EQ(mock_->connections_accepted(), 1u);
}

TEST_P(CurlLoopAttachedTest, CancelDropsTheTransferAndClosesItsConnection) {
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

TEST_P(CurlLoopAttachedTest, FirstByteAndIdleTimeouts) {
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

TEST_P(CurlLoopAttachedTest, DelayedStartRunsLaterOrNotAtAllWhenCancelled) {
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
TEST_P(CurlLoopAttachedTest, DelayedStartsEachRunOnTime) {
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

TEST_P(CurlLoopAttachedTest, LastReferenceDroppedInsideAHandlerShutsDownAfterIt) {
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

TEST_P(CurlLoopAttachedTest, DestroyedOffTheLoopCompletesRunningTransfers) {
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

TEST_P(CurlLoopAttachedTest, SeveralThreadsRunningTheIoContext) {
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

// Reads one HTTP request from a socket (head, then as many body bytes as Content-Length says);
// false when the client closed the connection first.
bool ReadOneRequest(int fd) {
  std::string data;
  char buffer[4096];
  size_t head_end = std::string::npos;
  size_t body_length = 0;
  for (;;) {
    if (head_end == std::string::npos) {
      head_end = data.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const size_t at = data.find("Content-Length: ");
        if (at != std::string::npos && at < head_end) {
          const size_t end = data.find("\r\n", at);
          if (!absl::SimpleAtoi(data.substr(at + 16, end - at - 16), &body_length)) {
            body_length = 0;
          }
        }
      }
    }
    if (head_end != std::string::npos && data.size() >= head_end + 4 + body_length) {
      return true;
    }
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n <= 0) return false;
    data.append(buffer, static_cast<size_t>(n));
  }
}

// A listening socket on 127.0.0.1, on a port the kernel picks; `address` receives it.
int ListenOnLoopback(int backlog, sockaddr_in& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(fd, backlog) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ADD_FAILURE() << "cannot listen on 127.0.0.1";
  }
  return fd;
}

// A bare TCP server on 127.0.0.1 for what the mock upstream cannot script: each connection it
// accepts runs `script` on a thread of its own, given the socket and the connection's number (0
// for the first). The destructor shuts every connection down, so a script blocked in a read
// ends, and joins every thread.
class RawServer {
 public:
  using Script = std::function<void(int fd, int index)>;

  explicit RawServer(Script script) : script_(std::move(script)) {
    sockaddr_in address{};
    listen_fd_ = ListenOnLoopback(16, address);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~RawServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
    acceptor_.join();
    {
      absl::MutexLock lock(&mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& thread : threads_) thread.join();
    absl::MutexLock lock(&mu_);
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }

  std::string url(absl::string_view host = "127.0.0.1") const {
    return absl::StrCat("http://", host, ":", port_, "/v1/chat/completions");
  }
  int connections() const { return connections_.load(); }
  int requests() const { return requests_.load(); }

  // Reads one request; false when the client closed the connection first.
  bool ReadRequest(int fd) {
    if (!ReadOneRequest(fd)) return false;
    ++requests_;
    return true;
  }

  // False once the client has gone.
  static bool Write(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 private:
  void Accept() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      const int index = connections_++;
      absl::MutexLock lock(&mu_);
      fds_.push_back(fd);
      threads_.emplace_back([this, fd, index] {
        script_(fd, index);
        ::shutdown(fd, SHUT_RDWR);  // the client sees the end; closed by the destructor
      });
    }
  }

  const Script script_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);  // closed when the server is destroyed
  std::vector<std::thread> threads_;           // touched by the acceptor, then the destructor
};

constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

class CurlLoopDirectTest : public AttachedLoopFixture {
 protected:
  bool DirectHttp() const override { return true; }

  HttpRequest RequestTo(const std::string& url, bool stream = false) const {
    HttpRequest request = Request(stream);
    request.url = url;
    return request;
  }

  // Runs one transfer to its end.
  std::shared_ptr<Recorder> Run(const HttpRequest& request) {
    auto recorder = NewRecorder();
    loop_->Start(request, recorder);
    EXPECT_TRUE(RunUntil([&] { return recorder->done(); })) << "hung";
    return recorder;
  }
};

// The server closes the connection after its answer, while it idles in the pool: the next
// request finds it closed before any reply and goes out again on a new connection.
TEST_F(CurlLoopDirectTest, APooledConnectionTheServerClosedIsNotUsedAgain) {
  RawServer closing([&closing](int fd, int index) {
    if (index == 0) {
      if (closing.ReadRequest(fd)) RawServer::Write(fd, kOk);
      ::shutdown(fd, SHUT_WR);
      return;
    }
    while (closing.ReadRequest(fd)) RawServer::Write(fd, kOk);
  });
  std::shared_ptr<Recorder> first = Run(RequestTo(closing.url()));
  EXPECT_TRUE(first->status().ok()) << first->status();
  io_.run_for(milliseconds(100));  // the end of the connection arrives while it idles
  io_.restart();
  std::shared_ptr<Recorder> second = Run(RequestTo(closing.url()));
  EXPECT_TRUE(second->status().ok()) << second->status();
  EXPECT_EQ(second->body(), "ok");
  EXPECT_EQ(closing.connections(), 2);
  EXPECT_EQ(closing.requests(), 2);
}

// The server takes the next request on a kept-alive connection and closes it unanswered (its
// idle timeout raced the request): the request goes out once more on a new connection.
TEST_F(CurlLoopDirectTest, ARequestAPooledConnectionDropsIsSentAgainOnANewOne) {
  RawServer racing([&racing](int fd, int index) {
    if (index == 0) {
      if (racing.ReadRequest(fd)) RawServer::Write(fd, kOk);
      racing.ReadRequest(fd);  // and no answer
      return;
    }
    while (racing.ReadRequest(fd)) RawServer::Write(fd, kOk);
  });
  std::shared_ptr<Recorder> first = Run(RequestTo(racing.url()));
  EXPECT_TRUE(first->status().ok()) << first->status();
  std::shared_ptr<Recorder> second = Run(RequestTo(racing.url()));
  EXPECT_TRUE(second->status().ok()) << second->status();
  EXPECT_EQ(second->body(), "ok");
  EXPECT_EQ(racing.connections(), 2);
  EXPECT_EQ(racing.requests(), 3);
}

// Started outside the loop's handlers, a request on a pooled connection goes out on the calling
// thread at once, before the loop runs again; every handler call still runs on the loop.
TEST_F(CurlLoopDirectTest, ARequestOnAPooledConnectionIsSentByTheCallingThread) {
  RawServer server([&server](int fd, int) {
    while (server.ReadRequest(fd)) RawServer::Write(fd, kOk);
  });
  std::shared_ptr<Recorder> first = Run(RequestTo(server.url()));
  ASSERT_TRUE(first->status().ok()) << first->status();
  auto second = NewRecorder();
  loop_->Start(RequestTo(server.url()), second);
  // Nothing runs the io_context here: only this thread can have sent the request.
  const auto deadline = Clock::now() + milliseconds(5000);
  while (server.requests() < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_EQ(server.requests(), 2);
  EXPECT_FALSE(second->done());
  ASSERT_TRUE(RunUntil([&] { return second->done(); }));
  EXPECT_TRUE(second->status().ok()) << second->status();
  EXPECT_EQ(second->body(), "ok");
  EXPECT_FALSE(second->off_loop_call());
  EXPECT_EQ(server.connections(), 1);
}

// A new connection that ends without an answer is an error, not a retry.
TEST_F(CurlLoopDirectTest, ANewConnectionClosedWithoutAnAnswerFails) {
  RawServer silent([&silent](int fd, int) { silent.ReadRequest(fd); });
  std::shared_ptr<Recorder> recorder = Run(RequestTo(silent.url()));
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(recorder->status().message(), HasSubstr("connection closed before a response"));
  EXPECT_EQ(silent.connections(), 1);
}

struct Framing {
  std::string name;
  // Written in pieces, with a pause between them so the client reads each on its own.
  std::vector<std::string> pieces;
  bool close_after = false;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string body_or_error;  // the body, or a substring of the error
  int status = 200;
};

TEST_F(CurlLoopDirectTest, ResponseFramingsAndFaults) {
  const std::vector<Framing> framings = {
      {"content length, head and body apart",
       {"HTTP/1.1 200 OK\r\nX-Request-Id:  abc \r\nContent-Length: 11\r\n\r\n", "hello", " world"},
       false, absl::StatusCode::kOk, "hello world"},
      {"chunked, chunks split across reads",
       {"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "lo\r\n6\r\n world\r\n", "0\r\n\r\n"},
       false, absl::StatusCode::kOk, "hello world"},
      {"body up to the end of the connection",
       {"HTTP/1.0 200 OK\r\nX-Request-Id: abc\r\n\r\nhello", " world"},
       true, absl::StatusCode::kOk, "hello world"},
      {"an interim 100 before the answer",
       {"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 201 Created\r\nX-Request-Id: abc\r\n"
                                         "Content-Length: 11\r\n\r\nhello world"},
       false, absl::StatusCode::kOk, "hello world", 201},
      {"an error status is still a complete transfer",
       {"HTTP/1.1 503 Service Unavailable\r\nX-Request-Id: abc\r\nContent-Length: 11\r\n\r\n"
        "hello world"},
       false, absl::StatusCode::kOk, "hello world", 503},
      {"body shorter than its Content-Length",
       {"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello"},
       true, absl::StatusCode::kUnavailable, "response cut short"},
      {"chunked body cut off",
       {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
       true, absl::StatusCode::kUnavailable, "response cut short"},
      {"not HTTP", {"SSH-2.0-OpenSSH_9.2\r\n\r\n"}, true, absl::StatusCode::kUnavailable,
       "malformed HTTP response"},
      {"bad chunk size", {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}, true,
       absl::StatusCode::kUnavailable, "malformed HTTP response"},
  };
  for (const Framing& framing : framings) {
    SCOPED_TRACE(framing.name);
    RawServer server([&server, &framing](int fd, int) {
      if (!server.ReadRequest(fd)) return;
      for (const std::string& piece : framing.pieces) {
        RawServer::Write(fd, piece);
        std::this_thread::sleep_for(milliseconds(20));
      }
      if (framing.close_after) {
        ::shutdown(fd, SHUT_WR);
        return;
      }
      server.ReadRequest(fd);  // keeps the connection open until the client is done
    });
    std::shared_ptr<Recorder> recorder = Run(RequestTo(server.url()));
    ASSERT_EQ(recorder->status().code(), framing.code) << recorder->status();
    if (framing.code != absl::StatusCode::kOk) {
      EXPECT_THAT(recorder->status().message(), HasSubstr(framing.body_or_error));
      continue;
    }
    EXPECT_EQ(recorder->body(), framing.body_or_error);
    EXPECT_EQ(recorder->heads(), 1);
    EXPECT_EQ(recorder->status_code(), framing.status);
    EXPECT_EQ(recorder->head().Header("x-request-id"), "abc") << "lower-cased, trimmed";
  }
}

TEST_F(CurlLoopDirectTest, TotalTimeoutEndsADrippingAnswer) {
  RawServer dripping([&dripping](int fd, int) {
    if (!dripping.ReadRequest(fd)) return;
    RawServer::Write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    for (int i = 0; i < 100 && RawServer::Write(fd, "x"); ++i) {
      std::this_thread::sleep_for(milliseconds(20));
    }
  });
  HttpRequest request = RequestTo(dripping.url());
  request.timeouts.idle = absl::Seconds(5);
  request.timeouts.total = absl::Milliseconds(300);
  const auto started = Clock::now();
  std::shared_ptr<Recorder> recorder = Run(request);
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(recorder->status().message(), HasSubstr("no complete response within 300ms"));
  EXPECT_GE(Clock::now() - started, milliseconds(300));
  EXPECT_EQ(recorder->heads(), 1);
}

TEST_F(CurlLoopDirectTest, BodyOverTheLimitIsOutOfRange) {
  HttpRequest request = RequestTo(mock_->base_url() + "/chat/completions");
  request.max_body_bytes = 16;
  std::shared_ptr<Recorder> recorder = Run(request);
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(recorder->status().message(), HasSubstr("exceeds the limit of 16 bytes"));
}

TEST_F(CurlLoopDirectTest, HostNamesAreResolved) {
  RawServer server([&server](int fd, int) {
    while (server.ReadRequest(fd)) RawServer::Write(fd, kOk);
  });
  std::shared_ptr<Recorder> named = Run(RequestTo(server.url("localhost")));
  EXPECT_TRUE(named->status().ok()) << named->status();
  EXPECT_EQ(named->body(), "ok");
  std::shared_ptr<Recorder> unknown = Run(RequestTo("http://upstream.invalid/v1/chat/completions"));
  EXPECT_EQ(unknown->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(unknown->status().message(), HasSubstr("cannot resolve upstream.invalid"));
}

// A listener with a backlog of one that the test accepts from itself. Once Fill() has queued
// connections up to the backlog, the kernel drops further SYNs, so a connect neither succeeds
// nor fails.
class BacklogListener {
 public:
  BacklogListener() : fd_(ListenOnLoopback(0, address_)) {}
  ~BacklogListener() {
    for (int fd : fillers_) ::close(fd);
    ::close(fd_);
  }

  std::string url() const {
    return absl::StrCat("http://127.0.0.1:", ntohs(address_.sin_port), "/v1/chat/completions");
  }
  int Accept() { return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC); }
  void Fill() {
    for (int i = 0; i < 4; ++i) {
      fillers_.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(fillers_.back(), reinterpret_cast<const sockaddr*>(&address_), sizeof(address_));
    }
    std::this_thread::sleep_for(milliseconds(50));
  }

 private:
  sockaddr_in address_{};  // before fd_: the constructor fills it while opening fd_
  int fd_ = -1;
  std::vector<int> fillers_;
};

TEST_F(CurlLoopDirectTest, ConnectTimeout) {
  BacklogListener listener;
  listener.Fill();
  HttpRequest request = RequestTo(listener.url());
  request.timeouts.connect = absl::Milliseconds(200);
  const auto started = Clock::now();
  std::shared_ptr<Recorder> recorder = Run(request);
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kDeadlineExceeded) << recorder->status();
  EXPECT_THAT(recorder->status().message(), HasSubstr("no connection to 127.0.0.1:"));
  EXPECT_GE(Clock::now() - started, milliseconds(200));
}

// A request that waited on a pooled connection longer than the connect limit before the server
// dropped it unanswered: its new connection gets the whole limit, counted from its own start.
TEST_F(CurlLoopDirectTest, ARetriedRequestsConnectLimitStartsWithItsNewConnection) {
  BacklogListener listener;
  std::atomic<bool> dropped{false};
  Clock::time_point dropped_at;
  std::thread server([&] {
    const int fd = listener.Accept();
    if (ReadOneRequest(fd)) RawServer::Write(fd, kOk);
    ReadOneRequest(fd);  // the second request, held past the connect limit
    listener.Fill();         // so the retry's connect hangs
    std::this_thread::sleep_for(milliseconds(300));
    dropped_at = Clock::now();
    dropped = true;
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
  });
  HttpRequest request = RequestTo(listener.url());
  request.timeouts.connect = absl::Milliseconds(200);
  request.timeouts.total = absl::Seconds(4);
  std::shared_ptr<Recorder> first = Run(request);
  EXPECT_TRUE(first->status().ok()) << first->status();
  std::shared_ptr<Recorder> second = Run(request);
  server.join();
  ASSERT_TRUE(dropped);
  EXPECT_EQ(second->status().code(), absl::StatusCode::kDeadlineExceeded) << second->status();
  EXPECT_THAT(second->status().message(), HasSubstr("no connection to 127.0.0.1:"));
  // Ended by its connect limit, not by the total one still 3.7 s away.
  const auto after_drop = Clock::now() - dropped_at;
  EXPECT_GE(after_drop, milliseconds(200));
  EXPECT_LT(after_drop, milliseconds(2000));
}

TEST_F(CurlLoopDirectTest, ConnectFailureIsUnavailable) {
  std::shared_ptr<Recorder> refused = Run(RequestTo("http://127.0.0.1:1/v1/chat/completions"));
  EXPECT_EQ(refused->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused->status().message(), HasSubstr("cannot connect to 127.0.0.1:1"));
}

}  // namespace
}  // namespace switchyard::backends
