#include "backends/remote/curl_loop.h"

#include <curl/curl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "backends/remote/http1.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/posix/stream_descriptor.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/error.hpp"

namespace switchyard::backends {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// Idle easy handles kept for reuse; beyond this, finished handles are freed.
constexpr size_t kMaxIdleEasyHandles = 64;
// The direct path's pool: idle connections kept per origin, and for how long at most (libcurl's
// default CURLOPT_MAXAGE_CONN).
constexpr size_t kMaxIdleConnectionsPerOrigin = 128;
constexpr std::chrono::seconds kMaxIdleConnectionAge{118};
// Parsed origins remembered by URL (a target's URL repeats on every request).
constexpr size_t kMaxCachedOrigins = 256;
// Bytes asked for per read of a direct connection.
constexpr size_t kDirectReadBytes = 16 << 10;

Clock::duration ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

// When the loop looks at a transfer next (its delayed start, first-byte or idle deadline).
using Checks = std::multimap<Clock::time_point, CurlLoop::TransferId>;

// A connection of the direct path (LoopOptions::direct_http).
struct DirectConnection {
  explicit DirectConnection(const asio::any_io_executor& executor) : socket(executor) {}

  asio::ip::tcp::socket socket;
  boost::beast::flat_buffer buffer;  // read, not yet parsed
  std::string key;                   // its origin: the pool it goes back to
  Clock::time_point idle_since;      // when it went back to the pool
};

// What a transfer on the direct path holds instead of an easy handle.
struct Direct {
  std::shared_ptr<const PlainHttpOrigin> origin;
  std::shared_ptr<DirectConnection> conn;
  std::unique_ptr<asio::ip::tcp::resolver> resolver;
  std::optional<ResponseParser> parser;  // reports to its transfer
  std::string head;  // the request head
  size_t sent = 0;   // bytes of head and body written
  bool connected = false;
  Clock::time_point connect_started;  // of the current connection: the connect limit counts
                                      // from here, so a retried request gets all of it
  // The connection came from the pool: failing before any reply, the request is sent once more
  // on a new connection.
  bool reused = false;
  bool replied = false;  // a byte of the response arrived
};

// One request on its way through the loop. On the direct path its response parser reports to
// it (ResponseEvents), as libcurl's header and write callbacks do on the other.
struct Transfer final : ResponseEvents {
  ~Transfer() override {
    if (header_list != nullptr) curl_slist_free_all(header_list);
  }

  void OnStatus(int status) override;
  void OnField(std::string_view name, std::string_view value) override;
  void OnHeaderDone() override;
  bool OnBody(std::string_view data) override;

  CurlLoop::TransferId id = 0;
  Clock::time_point not_before;
  std::shared_ptr<const HttpRequest> request;  // shared by a request's attempts
  std::shared_ptr<TransferHandler> handler;
  CURL* easy = nullptr;  // owned by the loop's free list once the transfer ends
  curl_slist* header_list = nullptr;
  std::unique_ptr<Direct> direct;  // instead of `easy`, on the direct path
  // Its entry in the loop's checks, if any: the delayed start, then the first-byte and idle
  // deadlines.
  std::optional<Checks::iterator> check;
  Clock::time_point started;
  Clock::time_point last_activity;
  // A status line arrived (the first-byte deadline is met).
  bool status_line_seen = false;
  bool head_delivered = false;
  HttpResponseHead head;
  size_t body_bytes = 0;
  // The loop's list of transfers that received data in the current pass; set while on it.
  std::vector<Transfer*>* received = nullptr;
  bool on_received = false;
  // Set by a callback that stops the transfer; overrides libcurl's own result code.
  absl::Status abort_status;
  char error[CURL_ERROR_SIZE] = {};
};

// The response head: a status line starts it over (an interim 1xx response, then the final one),
// header fields add to it, and its end hands a final response's head to the handler.
void BeginHead(Transfer& t, int status) {
  t.last_activity = Clock::now();
  t.status_line_seen = true;
  t.head = HttpResponseHead();
  t.head.status = status;
}

void AddHeadField(Transfer& t, absl::string_view name, absl::string_view value) {
  if (t.head_delivered) return;  // trailers
  t.head.headers.emplace_back(absl::AsciiStrToLower(name),
                              std::string(absl::StripAsciiWhitespace(value)));
}

void EndHead(Transfer& t) {
  if (t.head_delivered || t.head.status < 200) return;
  t.head_delivered = true;
  t.handler->OnHead(t.head);
}

// A piece of the body for the handler; false stops the transfer, with `abort_status` set.
bool DeliverBody(Transfer& t, std::string_view data) {
  t.last_activity = Clock::now();
  if (!t.head_delivered) {
    t.head_delivered = true;
    t.handler->OnHead(t.head);
  }
  t.body_bytes += data.size();
  if (t.body_bytes > t.request->max_body_bytes) {
    t.abort_status = absl::OutOfRangeError(absl::StrCat(
        "upstream response body exceeds the limit of ", t.request->max_body_bytes, " bytes"));
    return false;
  }
  if (!t.on_received) {
    t.on_received = true;
    t.received->push_back(&t);
  }
  if (!t.handler->OnBody(data)) {
    t.abort_status = absl::CancelledError("transfer aborted by its handler");
    return false;
  }
  return true;
}

void Transfer::OnStatus(int status) { BeginHead(*this, status); }
void Transfer::OnField(std::string_view name, std::string_view value) {
  AddHeadField(*this, absl::string_view(name.data(), name.size()),
               absl::string_view(value.data(), value.size()));
}
void Transfer::OnHeaderDone() { EndHead(*this); }
bool Transfer::OnBody(std::string_view data) { return DeliverBody(*this, data); }

// One socket libcurl asked the loop to watch.
struct Socket {
  explicit Socket(const asio::any_io_executor& executor) : descriptor(executor) {}

  asio::posix::stream_descriptor descriptor;
  // Opened by the loop for libcurl (closed when libcurl says so); otherwise a descriptor libcurl
  // made itself (the threaded resolver's socket pair), only watched.
  bool owned = false;
  bool closed = false;
  // What libcurl waits for: CURL_POLL_IN / OUT / INOUT, 0 when nothing.
  int want = 0;
  bool read_armed = false;
  bool write_armed = false;
  // Became readable while libcurl did not wait for it; owed an action once it does. Asio's epoll
  // is edge-triggered, so a readiness nobody waited for is not reported again.
  bool read_ready = false;
};

}  // namespace

std::string_view HttpResponseHead::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

namespace {
// The loop of the calling thread (BindToThisThread).
thread_local CurlLoop* bound_loop = nullptr;
}  // namespace

struct CurlLoop::OwnThread {
  asio::io_context io{1};
  std::thread thread;
};

class CurlLoop::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(CURLM* multi, asio::any_io_executor executor, asio::io_context* own_io,
       LoopOptions options)
      : executor_(std::move(executor)), own_io_(own_io), options_(options), multi_(multi) {}
  ~Core() {
    // Shutdown() normally ran already; this covers a loop never started.
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
  }

  // Installs the multi handle's callbacks; once, right after construction.
  void Init();

  TransferId Start(std::unique_ptr<Transfer> transfer);
  void Cancel(TransferId id);
  size_t active() const { return active_.load(std::memory_order_relaxed); }
  // From ~CurlLoop: inside a loop handler the shutdown follows when that handler returns,
  // elsewhere it happens now (`inline_ok`) or is posted to the loop (own thread).
  bool InLoop() const { return current_ == this; }
  void RequestStopInLoop() ABSL_NO_THREAD_SAFETY_ANALYSIS { stop_requested_ = true; }
  void ShutdownNow();
  const asio::any_io_executor& executor() const { return executor_; }

 private:
  // Runs `body` as the loop: under mu_, marked as inside the loop on this thread, and followed
  // by the shutdown a handler asked for. Returns false (without running `body`) once stopped.
  template <typename Body>
  bool RunInLoop(Body&& body);
  template <typename Body>
  bool RunHoldingLock(Body& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A plain-HTTP transfer due now, started by a thread that does not run the loop (a gRPC
  // thread) while the loop has nothing in flight, goes out at once on that thread instead of
  // being posted: a post wakes the loop's thread (an interrupt of its epoll wait, then a lock it
  // contends for) only to send what the caller can send itself, and the loop's thread is woken
  // later by the answer anyway.
  // Safe because starting a direct transfer never calls its handler (the write, connect and read
  // it begins complete on the loop; a pooled connection the server closed is redialled, not
  // failed), so every handler call still runs on the loop. Returns false, leaving `transfer`
  // untouched, when the transfer must be posted.
  bool StartDirectNow(std::unique_ptr<Transfer>& transfer) ABSL_LOCKS_EXCLUDED(mu_);
  void AddTransfer(std::unique_ptr<Transfer> transfer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // AddTransfer for a plain-HTTP transfer, whose DirectOrigin the caller has looked up.
  void AddDirectTransfer(std::unique_ptr<Transfer> transfer,
                         std::shared_ptr<const PlainHttpOrigin> origin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a running transfer off the multi handle and the loop's books (its easy handle goes
  // back to the free list); null when `id` is not running.
  std::unique_ptr<Transfer> DetachTransfer(TransferId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishTransfer(TransferId id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelLocked(TransferId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Action(curl_socket_t fd, int events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ShutdownLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecycleEasy(CURL* easy) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Deadlines of every transfer go through one timer, armed for the earliest check and never
  // recalled: a check that finds nothing due schedules the next one. So starting and finishing a
  // transfer costs no timer syscall.
  void ScheduleCheck(Transfer& t, Clock::time_point when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveCheck(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmDeadline(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmCheckTimer(Clock::time_point when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunChecks(uint64_t generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckTransfer(TransferId id, Clock::time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // libcurl's timer: due now is a post, later an Asio timer that is only ever moved earlier.
  void SetCurlTimeout(long timeout_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmCurlTimer(Clock::time_point when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnCurlTimer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void ArmRead(const std::shared_ptr<Socket>& socket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmWrite(const std::shared_ptr<Socket>& socket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PostAction(curl_socket_t fd, int events);
  // Drops the record of `fd`; a watched-only descriptor is released, not closed.
  void ForgetSocket(curl_socket_t fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OnBodyDone for each transfer that received data since the last call.
  void FlushReceived() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The direct path (LoopOptions::direct_http). Where a URL goes; null: through libcurl.
  std::shared_ptr<const PlainHttpOrigin> DirectOrigin(const std::string& url)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartDirect(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ConnectDirect(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDirectConnected(Transfer& t, const boost::system::error_code& ec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes what the socket takes now, then waits to write the rest or reads the reply.
  void WriteDirect(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WaitWritable(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadDirect(Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Parses what a read brought; may finish the transfer.
  void OnDirectRead(Transfer& t, boost::system::error_code ec, size_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A completion handler for an operation on `conn`: in the loop, `body(transfer, result...)`
  // runs if the transfer still runs on that connection (a cancel, an end or a retry on a new
  // connection each mean it does not). It holds the connection: Asio needs the socket until the
  // operation completes.
  template <typename Body>
  auto OnDirect(TransferId id, std::shared_ptr<DirectConnection> conn, Body body);
  // A network failure: retried once on a new connection when a pooled one failed before any
  // reply (the server closed it while idle), else the transfer's end.
  void FailDirect(Transfer& t, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteDirect(Transfer& t, bool reusable) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PoolConnection(std::shared_ptr<DirectConnection> conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<DirectConnection> TakePooled(const std::string& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // libcurl callbacks; they run inside a libcurl call made by the loop, so mu_ is held.
  static int SocketCallback(CURL* easy, curl_socket_t fd, int what, void* user, void* socketp);
  static int TimerCallback(CURLM* multi, long timeout_ms, void* user);
  static curl_socket_t OpenSocketCallback(void* user, curlsocktype purpose,
                                          curl_sockaddr* address);
  static int CloseSocketCallback(void* user, curl_socket_t fd);
  static size_t WriteCallback(char* data, size_t size, size_t count, void* user);
  static size_t HeaderCallback(char* data, size_t size, size_t count, void* user);

  // The loop this thread is running inside, if any.
  static thread_local const Core* current_;

  const asio::any_io_executor executor_;
  asio::io_context* const own_io_;  // the loop's own io_context, stopped after shutdown
  const LoopOptions options_;
  std::atomic<TransferId> next_id_{1};
  // Transfers running or waiting for a delayed start.
  std::atomic<size_t> active_{0};

  absl::Mutex mu_;
  CURLM* multi_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> transfers_ ABSL_GUARDED_BY(mu_);
  // Accepted but not begun: waiting for their start time.
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> delayed_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<curl_socket_t, std::shared_ptr<Socket>> sockets_ ABSL_GUARDED_BY(mu_);
  std::vector<CURL*> idle_easy_ ABSL_GUARDED_BY(mu_);
  Checks checks_ ABSL_GUARDED_BY(mu_);
  std::optional<asio::steady_timer> check_timer_ ABSL_GUARDED_BY(mu_);
  // The pending wait of check_timer_, if any; a generation tells a stale wait from the current
  // one, since re-arming cannot recall a wait that already fired.
  std::optional<Clock::time_point> check_timer_at_ ABSL_GUARDED_BY(mu_);
  uint64_t check_timer_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // libcurl's own timer (CURLMOPT_TIMERFUNCTION): when it is due, if set.
  std::optional<Clock::time_point> curl_due_ ABSL_GUARDED_BY(mu_);
  std::optional<asio::steady_timer> curl_timer_ ABSL_GUARDED_BY(mu_);
  std::optional<Clock::time_point> curl_timer_at_ ABSL_GUARDED_BY(mu_);
  uint64_t curl_timer_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool curl_kick_posted_ ABSL_GUARDED_BY(mu_) = false;
  bool adding_ ABSL_GUARDED_BY(mu_) = false;  // inside AddTransfer's curl_multi_add_handle
  // Transfers that received data in the current libcurl call, told OnBodyDone after it.
  std::vector<Transfer*> received_ ABSL_GUARDED_BY(mu_);
  // The direct path: idle connections by origin (most recently used last), parsed URLs.
  std::unordered_map<std::string, std::vector<std::shared_ptr<DirectConnection>>> idle_connections_
      ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::shared_ptr<const PlainHttpOrigin>> origins_
      ABSL_GUARDED_BY(mu_);
};

thread_local const CurlLoop::Core* CurlLoop::Core::current_ = nullptr;

namespace {

absl::Status InitCurl() {
  static std::once_flag init_once;
  static CURLcode init_result = CURLE_OK;
  std::call_once(init_once, [] { init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_result != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init failed: ", curl_easy_strerror(init_result)));
  }
  return absl::OkStatus();
}

// A multi handle, libcurl initialised first.
absl::StatusOr<CURLM*> NewMulti() {
  if (absl::Status status = InitCurl(); !status.ok()) return status;
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return absl::InternalError("curl_multi_init failed");
  return multi;
}

absl::Status ShutdownStatus() {
  return absl::UnavailableError("remote backend loop is shutting down");
}

}  // namespace

absl::StatusOr<std::shared_ptr<CurlLoop>> CurlLoop::Create(LoopOptions options) {
  absl::StatusOr<CURLM*> multi = NewMulti();
  if (!multi.ok()) return multi.status();
  auto own = std::make_shared<OwnThread>();
  auto core = std::make_shared<Core>(*multi, own->io.get_executor(), &own->io, options);
  core->Init();
  // The thread co-owns the io_context: a loop destroyed by one of its own handlers finishes on
  // its own.
  own->thread = std::thread([own_ref = own] {
    auto guard = asio::make_work_guard(own_ref->io);
    own_ref->io.run();
  });
  return std::shared_ptr<CurlLoop>(new CurlLoop(std::move(core), std::move(own)));
}

absl::StatusOr<std::shared_ptr<CurlLoop>> CurlLoop::Create(asio::any_io_executor executor,
                                                          LoopOptions options) {
  if (!executor) return absl::InvalidArgumentError("CurlLoop::Create: empty executor");
  absl::StatusOr<CURLM*> multi = NewMulti();
  if (!multi.ok()) return multi.status();
  auto core = std::make_shared<Core>(*multi, std::move(executor), nullptr, options);
  core->Init();
  return std::shared_ptr<CurlLoop>(new CurlLoop(std::move(core), nullptr));
}

CurlLoop::CurlLoop(std::shared_ptr<Core> core, std::shared_ptr<OwnThread> own)
    : core_(std::move(core)), own_(std::move(own)) {}

CurlLoop::~CurlLoop() {
  if (core_->InLoop()) {
    // A handler released the last reference: the loop shuts down when it returns (and its own
    // thread, if any, then ends and frees the io_context).
    core_->RequestStopInLoop();
    if (own_ != nullptr) own_->thread.detach();
    return;
  }
  if (own_ == nullptr) {
    core_->ShutdownNow();
    return;
  }
  if (std::this_thread::get_id() == own_->thread.get_id()) {
    // Released on the loop's own thread outside a loop handler (an object a handler captured):
    // nothing else runs the loop now, and the thread ends once this handler returns.
    core_->ShutdownNow();
    own_->thread.detach();
    return;
  }
  // Shut down on the loop's thread, as every other handler call happens there.
  asio::post(own_->io, [core = core_] { core->ShutdownNow(); });
  own_->thread.join();
}

CurlLoop::TransferId CurlLoop::Start(HttpRequest request,
                                     std::shared_ptr<TransferHandler> handler,
                                     absl::Duration delay) {
  return Start(std::make_shared<const HttpRequest>(std::move(request)), std::move(handler),
               delay);
}

CurlLoop::TransferId CurlLoop::Start(std::shared_ptr<const HttpRequest> request,
                                     std::shared_ptr<TransferHandler> handler,
                                     absl::Duration delay) {
  auto transfer = std::make_unique<Transfer>();
  transfer->not_before = Clock::now() + ToChrono(std::max(delay, absl::ZeroDuration()));
  transfer->request = std::move(request);
  transfer->handler = std::move(handler);
  return core_->Start(std::move(transfer));
}

void CurlLoop::Cancel(TransferId id) { core_->Cancel(id); }

size_t CurlLoop::active_transfers() const { return core_->active(); }

void CurlLoop::BindToThisThread(CurlLoop* loop) { bound_loop = loop; }

std::shared_ptr<CurlLoop> CurlLoop::ForThisThread(const std::shared_ptr<CurlLoop>& fallback) {
  return bound_loop != nullptr ? bound_loop->shared_from_this() : fallback;
}

void CurlLoop::Core::Init() {
  absl::MutexLock lock(&mu_);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Core::SocketCallback);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Core::TimerCallback);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  curl_timer_.emplace(executor_);
  check_timer_.emplace(executor_);
}

template <typename Body>
bool CurlLoop::Core::RunInLoop(Body&& body) {
  absl::MutexLock lock(&mu_);
  return RunHoldingLock(body);
}

template <typename Body>
bool CurlLoop::Core::RunHoldingLock(Body& body) {
  if (stopped_) return false;
  const Core* outer = current_;
  current_ = this;
  body();
  if (stop_requested_) ShutdownLocked();
  current_ = outer;
  return true;
}

CurlLoop::TransferId CurlLoop::Core::Start(std::unique_ptr<Transfer> transfer) {
  const TransferId id = next_id_.fetch_add(1, std::memory_order_relaxed);
  transfer->id = id;
  if (StartDirectNow(transfer)) return id;
  // Posted even when called on the loop: the caller may hold its own locks, or be inside a
  // libcurl callback, where adding a handle is not allowed.
  asio::post(executor_, [self = shared_from_this(), transfer = std::move(transfer)]() mutable {
    // No reference to the handler may outlive RunInLoop here: a transfer can finish inside it,
    // and its handler may hold the last reference to the loop.
    const bool ran = self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      self->active_.fetch_add(1, std::memory_order_relaxed);
      if (transfer->not_before <= Clock::now()) {
        self->AddTransfer(std::move(transfer));
        return;
      }
      Transfer& t = *transfer;
      self->delayed_.emplace(t.id, std::move(transfer));
      self->ScheduleCheck(t, t.not_before);
    });
    if (!ran) transfer->handler->OnComplete(ShutdownStatus());
  });
  return id;
}

bool CurlLoop::Core::StartDirectNow(std::unique_ptr<Transfer>& transfer) {
  // Inside a handler of any loop, posting keeps the rules above (and no thread ever holds two
  // loops' locks); a libcurl transfer or a delayed one is not started here either.
  if (current_ != nullptr || transfer->not_before > Clock::now()) return false;
  // Only where it saves a wake-up: from a thread that does not run the loop, while the loop has
  // nothing in flight (so it sleeps, and a post would wake it). A loop with transfers in flight
  // is woken by them anyway, and other threads taking its lock (a busy loop holds it often)
  // would cost more than they save. On the loop's own thread (an HTTP thread) the post wakes
  // nothing; sending there at once measured no better, and streams at concurrency 64 took
  // about 5% more CPU.
  const bool loop_thread = bound_loop != nullptr && bound_loop->core_.get() == this;
  if (loop_thread || active() != 0) return false;
  if (!mu_.TryLock()) return false;
  bool started = false;
  auto start = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    std::shared_ptr<const PlainHttpOrigin> origin = DirectOrigin(transfer->request->url);
    if (origin == nullptr) return;
    active_.fetch_add(1, std::memory_order_relaxed);
    AddDirectTransfer(std::move(transfer), std::move(origin));
    started = true;
  };
  RunHoldingLock(start);
  mu_.Unlock();
  return started;
}

void CurlLoop::Core::Cancel(TransferId id) {
  asio::post(executor_, [self = shared_from_this(), id] {
    self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { self->CancelLocked(id); });
  });
}

void CurlLoop::Core::CancelLocked(TransferId id) {
  if (auto it = delayed_.find(id); it != delayed_.end()) {
    RemoveCheck(*it->second);
    delayed_.erase(it);
    active_.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  // Removing the handle closes its connection (or stream) right away; the handler is dropped
  // without a call, as Cancel() promises.
  DetachTransfer(id);
}

void CurlLoop::Core::ShutdownNow() {
  absl::MutexLock lock(&mu_);
  const Core* outer = current_;
  current_ = this;
  ShutdownLocked();
  current_ = outer;
}

void CurlLoop::Core::ShutdownLocked() {
  if (stopped_) return;
  stopped_ = true;
  const absl::Status shutdown = ShutdownStatus();
  std::vector<TransferId> ids;
  for (const auto& [id, transfer] : transfers_) ids.push_back(id);
  for (TransferId id : ids) FinishTransfer(id, shutdown);
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> delayed;
  delayed.swap(delayed_);
  for (auto& [id, transfer] : delayed) {
    RemoveCheck(*transfer);
    active_.fetch_sub(1, std::memory_order_relaxed);
    transfer->handler->OnComplete(shutdown);
  }
  delayed.clear();
  // Closes the cached connections through CloseSocketCallback while the descriptors still exist.
  curl_multi_cleanup(multi_);
  multi_ = nullptr;
  for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
  idle_easy_.clear();
  std::vector<curl_socket_t> fds;
  for (const auto& [fd, socket] : sockets_) fds.push_back(fd);
  for (curl_socket_t fd : fds) ForgetSocket(fd);
  for (auto& [key, idle] : idle_connections_) {
    for (const std::shared_ptr<DirectConnection>& conn : idle) {
      boost::system::error_code ignored;
      conn->socket.close(ignored);
    }
  }
  idle_connections_.clear();
  // No Asio object outlives the shutdown, so the Core may outlive its io_context.
  curl_timer_.reset();
  check_timer_.reset();
  if (own_io_ != nullptr) own_io_->stop();
}

void CurlLoop::Core::RecycleEasy(CURL* easy) {
  if (easy == nullptr) return;
  if (idle_easy_.size() >= kMaxIdleEasyHandles || stopped_) {
    curl_easy_cleanup(easy);
    return;
  }
  curl_easy_reset(easy);
  idle_easy_.push_back(easy);
}

// Moves a transfer onto the multi handle; `active_` already counts it.
void CurlLoop::Core::AddDirectTransfer(std::unique_ptr<Transfer> transfer,
                                        std::shared_ptr<const PlainHttpOrigin> origin) {
  Transfer& t = *transfer;
  t.started = t.last_activity = Clock::now();
  t.received = &received_;
  t.direct = std::make_unique<Direct>();
  t.direct->origin = std::move(origin);
  t.direct->connect_started = t.started;
  transfers_.emplace(t.id, std::move(transfer));
  ArmDeadline(t);
  StartDirect(t);  // may finish the transfer: `t` is not touched after it
}

void CurlLoop::Core::AddTransfer(std::unique_ptr<Transfer> transfer) {
  if (std::shared_ptr<const PlainHttpOrigin> origin = DirectOrigin(transfer->request->url)) {
    AddDirectTransfer(std::move(transfer), std::move(origin));
    return;
  }
  Transfer& t = *transfer;
  t.started = t.last_activity = Clock::now();
  t.received = &received_;
  auto fail = [this, &t](const absl::Status& status) {
    active_.fetch_sub(1, std::memory_order_relaxed);
    t.handler->OnComplete(status);
  };
  if (!idle_easy_.empty()) {
    t.easy = idle_easy_.back();
    idle_easy_.pop_back();
  } else {
    t.easy = curl_easy_init();
  }
  if (t.easy == nullptr) {
    fail(absl::UnavailableError("curl_easy_init failed"));
    return;
  }
  const HttpRequest& r = *t.request;
  CURL* easy = t.easy;
  curl_easy_setopt(easy, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t.error);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Core::WriteCallback);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Core::HeaderCallback);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  // The loop owns every socket: libcurl opens and closes them through it.
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &Core::OpenSocketCallback);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, this);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &Core::CloseSocketCallback);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);
  // Signals are process-wide and unsafe with threads; timeouts are enforced by the loop instead.
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  // Streams are many small writes; Nagle would hold each token back.
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!r.ca_bundle_path.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, r.ca_bundle_path.c_str());
  // libcurl reads 0 as "no limit", so a finite limit is at least 1 ms.
  auto limit_ms = [](absl::Duration d) {
    return static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
  };
  if (r.timeouts.connect != absl::InfiniteDuration()) {
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, limit_ms(r.timeouts.connect));
  }
  if (!r.streaming && r.timeouts.total != absl::InfiniteDuration()) {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, limit_ms(r.timeouts.total));
  }
  if (!r.body.empty()) {
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r.body.data());
  }
  for (const std::string& line : r.headers) {
    t.header_list = curl_slist_append(t.header_list, line.c_str());
  }
  // libcurl would otherwise send "Expect: 100-continue" for larger bodies and wait up to a
  // second for a go-ahead that many servers never send.
  t.header_list = curl_slist_append(t.header_list, "Expect:");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t.header_list);

  // libcurl asks for a timeout of 0 from inside curl_multi_add_handle; the OnCurlTimer() below
  // serves it, so it needs no post of its own.
  adding_ = true;
  const CURLMcode code = curl_multi_add_handle(multi_, easy);
  adding_ = false;
  if (code != CURLM_OK) {
    OnCurlTimer();  // whatever libcurl asked for meanwhile
    RecycleEasy(easy);
    t.easy = nullptr;
    fail(absl::UnavailableError(
        absl::StrCat("curl_multi_add_handle failed: ", curl_multi_strerror(code))));
    return;
  }
  transfers_.emplace(t.id, std::move(transfer));
  ArmDeadline(t);
  // libcurl asked for an immediate timeout (TimerCallback): serve it now rather than on the next
  // turn of the loop, so the request goes out in the handler that started it. This may finish
  // the transfer, so `t` is not touched after it.
  OnCurlTimer();
}

std::unique_ptr<Transfer> CurlLoop::Core::DetachTransfer(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return nullptr;
  std::unique_ptr<Transfer> transfer = std::move(it->second);
  transfers_.erase(it);
  RemoveCheck(*transfer);
  if (transfer->direct != nullptr) {
    // A connection still held is mid-exchange: closing it is the only way to stop the reply.
    if (transfer->direct->conn != nullptr) {
      boost::system::error_code ignored;
      transfer->direct->conn->socket.close(ignored);
      transfer->direct->conn.reset();
    }
    transfer->direct->resolver.reset();
  } else {
    curl_multi_remove_handle(multi_, transfer->easy);
    RecycleEasy(transfer->easy);
    transfer->easy = nullptr;
  }
  active_.fetch_sub(1, std::memory_order_relaxed);
  return transfer;
}

void CurlLoop::Core::FinishTransfer(TransferId id, const absl::Status& status) {
  std::unique_ptr<Transfer> transfer = DetachTransfer(id);
  if (transfer == nullptr) return;
  if (status.ok() && !transfer->head_delivered && transfer->status_line_seen) {
    transfer->head_delivered = true;
    transfer->handler->OnHead(transfer->head);
  }
  // Called after the transfer left the loop's books, so the handler may start or cancel others.
  transfer->handler->OnComplete(status);
}

void CurlLoop::Core::ReadFinished() {
  int queued = 0;
  while (multi_ != nullptr) {
    CURLMsg* msg = curl_multi_info_read(multi_, &queued);
    if (msg == nullptr) break;
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    const CURLcode code = msg->data.result;
    absl::Status status;
    if (!t->abort_status.ok()) {
      status = t->abort_status;
    } else if (code == CURLE_OK) {
      status = absl::OkStatus();
    } else {
      const char* detail = t->error[0] != '\0' ? t->error : curl_easy_strerror(code);
      if (code == CURLE_OPERATION_TIMEDOUT) {
        status = absl::DeadlineExceededError(absl::StrCat("upstream timed out: ", detail));
      } else {
        status = absl::UnavailableError(absl::StrCat("upstream request failed: ", detail));
      }
    }
    FinishTransfer(t->id, status);
  }
}

void CurlLoop::Core::Action(curl_socket_t fd, int events) {
  int running = 0;
  curl_multi_socket_action(multi_, fd, events, &running);
  // Every transfer on the list is still alive: cancels are posted, ends wait for ReadFinished.
  FlushReceived();
  ReadFinished();
}

void CurlLoop::Core::FlushReceived() {
  for (Transfer* t : received_) {
    t->on_received = false;
    t->handler->OnBodyDone();
  }
  received_.clear();
}

void CurlLoop::Core::ScheduleCheck(Transfer& t, Clock::time_point when) {
  RemoveCheck(t);
  t.check = checks_.emplace(when, t.id);
  if (!check_timer_at_.has_value() || when < *check_timer_at_) ArmCheckTimer(when);
}

void CurlLoop::Core::RemoveCheck(Transfer& t) {
  if (!t.check.has_value()) return;
  checks_.erase(*t.check);
  t.check.reset();
}

void CurlLoop::Core::ArmCheckTimer(Clock::time_point when) {
  check_timer_->expires_at(when);
  check_timer_at_ = when;
  const uint64_t generation = ++check_timer_generation_;
  check_timer_->async_wait([self = shared_from_this(), generation](const boost::system::error_code&) {
    // Whatever the error code: a stale wait is told by its generation, and every check is
    // compared with the clock.
    self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { self->RunChecks(generation); });
  });
}

void CurlLoop::Core::RunChecks(uint64_t generation) {
  if (generation != check_timer_generation_) return;
  check_timer_at_.reset();
  const Clock::time_point now = Clock::now();
  std::vector<TransferId> due;
  while (!checks_.empty() && checks_.begin()->first <= now) {
    const TransferId id = checks_.begin()->second;
    checks_.erase(checks_.begin());
    if (auto it = delayed_.find(id); it != delayed_.end()) {
      it->second->check.reset();
    } else if (auto running = transfers_.find(id); running != transfers_.end()) {
      running->second->check.reset();
    }
    due.push_back(id);
  }
  // In id order, so transfers queued together start in the order they were queued.
  std::sort(due.begin(), due.end());
  for (TransferId id : due) CheckTransfer(id, now);
  // The checks above may have armed the timer for a new entry later than ones already waiting.
  if (!checks_.empty() &&
      (!check_timer_at_.has_value() || checks_.begin()->first < *check_timer_at_)) {
    ArmCheckTimer(checks_.begin()->first);
  }
}

// One wait per transfer, never moved earlier: before the status line it is due no later than one
// idle period ahead, so an idle deadline that starts with the status line is never missed; each
// check compares with the clock and schedules the next.
void CurlLoop::Core::ArmDeadline(Transfer& t) {
  const HttpTimeouts& limits = t.request->timeouts;
  const bool has_idle = limits.idle != absl::InfiniteDuration();
  std::optional<Clock::time_point> when;
  auto no_later_than = [&when](Clock::time_point deadline) {
    when = when.has_value() ? std::min(*when, deadline) : deadline;
  };
  // libcurl keeps the connect and total limits of its own transfers; the direct path's are here.
  if (t.direct != nullptr) {
    if (!t.direct->connected && limits.connect != absl::InfiniteDuration()) {
      no_later_than(t.direct->connect_started + ToChrono(limits.connect));
    }
    if (!t.request->streaming && limits.total != absl::InfiniteDuration()) {
      no_later_than(t.started + ToChrono(limits.total));
    }
  }
  if (t.status_line_seen) {
    if (has_idle) no_later_than(t.last_activity + ToChrono(limits.idle));
  } else {
    if (limits.first_byte != absl::InfiniteDuration()) {
      no_later_than(t.started + ToChrono(limits.first_byte));
    }
    if (has_idle) no_later_than(Clock::now() + ToChrono(limits.idle));
  }
  if (when.has_value()) ScheduleCheck(t, *when);
}

void CurlLoop::Core::CheckTransfer(TransferId id, Clock::time_point now) {
  if (auto it = delayed_.find(id); it != delayed_.end()) {
    Transfer& t = *it->second;
    if (now < t.not_before) {
      ScheduleCheck(t, t.not_before);
      return;
    }
    std::unique_ptr<Transfer> transfer = std::move(it->second);
    delayed_.erase(it);
    AddTransfer(std::move(transfer));
    return;
  }
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  Transfer& t = *it->second;
  const HttpTimeouts& limits = t.request->timeouts;
  if (t.direct != nullptr) {
    if (!t.direct->connected && limits.connect != absl::InfiniteDuration() &&
        now - t.direct->connect_started >= ToChrono(limits.connect)) {
      FinishTransfer(id, absl::DeadlineExceededError(absl::StrCat(
                             "upstream timed out: no connection to ", t.direct->origin->key,
                             " within ", absl::FormatDuration(limits.connect))));
      return;
    }
    if (!t.request->streaming && limits.total != absl::InfiniteDuration() &&
        now - t.started >= ToChrono(limits.total)) {
      FinishTransfer(id, absl::DeadlineExceededError(
                             absl::StrCat("upstream timed out: no complete response within ",
                                          absl::FormatDuration(limits.total))));
      return;
    }
  }
  if (!t.status_line_seen) {
    if (limits.first_byte != absl::InfiniteDuration() &&
        now - t.started >= ToChrono(limits.first_byte)) {
      FinishTransfer(id, absl::DeadlineExceededError(
                             absl::StrCat("upstream sent no response within ",
                                          absl::FormatDuration(limits.first_byte))));
      return;
    }
  } else if (limits.idle != absl::InfiniteDuration() &&
             now - t.last_activity >= ToChrono(limits.idle)) {
    FinishTransfer(id, absl::DeadlineExceededError(absl::StrCat(
                           "upstream stalled: no data for ", absl::FormatDuration(limits.idle))));
    return;
  }
  ArmDeadline(t);
}

void CurlLoop::Core::ArmCurlTimer(Clock::time_point when) {
  curl_timer_->expires_at(when);
  curl_timer_at_ = when;
  const uint64_t generation = ++curl_timer_generation_;
  curl_timer_->async_wait([self = shared_from_this(), generation](const boost::system::error_code&) {
    self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      if (generation != self->curl_timer_generation_) return;
      self->curl_timer_at_.reset();
      self->OnCurlTimer();
    });
  });
}

void CurlLoop::Core::OnCurlTimer() {
  if (!curl_due_.has_value()) return;
  const Clock::time_point now = Clock::now();
  if (*curl_due_ > now) {
    // Woken early by a wait armed for an earlier timeout libcurl has moved since.
    if (!curl_timer_at_.has_value()) ArmCurlTimer(*curl_due_);
    return;
  }
  curl_due_.reset();
  Action(CURL_SOCKET_TIMEOUT, 0);
  // libcurl reports its timeout only when it changes, in whole milliseconds rounded down: a wait
  // that ended a little before libcurl's expiry leaves it unchanged, and so unreported. Ask.
  if (!curl_due_.has_value() && multi_ != nullptr) {
    long timeout_ms = -1;
    curl_multi_timeout(multi_, &timeout_ms);
    SetCurlTimeout(timeout_ms);
  }
}

void CurlLoop::Core::ArmRead(const std::shared_ptr<Socket>& socket) {
  if (socket->read_armed || socket->read_ready || socket->closed) return;
  socket->read_armed = true;
  socket->descriptor.async_wait(
      asio::posix::descriptor_base::wait_read,
      [self = shared_from_this(), socket](const boost::system::error_code& ec) {
        self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          socket->read_armed = false;
          if (socket->closed) return;
          const curl_socket_t fd = socket->descriptor.native_handle();
          if (ec) {
            if (ec != asio::error::operation_aborted) self->Action(fd, CURL_CSELECT_ERR);
            return;
          }
          if ((socket->want & CURL_POLL_IN) == 0) {
            socket->read_ready = true;
            return;
          }
          // Waiting again before libcurl reads means no readiness can slip between its last read
          // and the next wait; at worst libcurl is woken once for nothing.
          self->ArmRead(socket);
          self->Action(fd, CURL_CSELECT_IN);
        });
      });
}

void CurlLoop::Core::ArmWrite(const std::shared_ptr<Socket>& socket) {
  if (socket->write_armed || socket->closed || (socket->want & CURL_POLL_OUT) == 0) return;
  socket->write_armed = true;
  socket->descriptor.async_wait(
      asio::posix::descriptor_base::wait_write,
      [self = shared_from_this(), socket](const boost::system::error_code& ec) {
        self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          socket->write_armed = false;
          if (socket->closed) return;
          const curl_socket_t fd = socket->descriptor.native_handle();
          if (ec) {
            if (ec != asio::error::operation_aborted) self->Action(fd, CURL_CSELECT_ERR);
            return;
          }
          if ((socket->want & CURL_POLL_OUT) == 0) return;
          self->ArmWrite(socket);
          self->Action(fd, CURL_CSELECT_OUT);
        });
      });
}

void CurlLoop::Core::PostAction(curl_socket_t fd, int events) {
  asio::post(executor_, [self = shared_from_this(), fd, events] {
    self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      // The socket may have been closed (and its number reused) since: libcurl ignores sockets
      // it does not know, and a spurious readiness costs it one EAGAIN.
      if (self->sockets_.count(fd) > 0) self->Action(fd, events);
    });
  });
}

void CurlLoop::Core::ForgetSocket(curl_socket_t fd) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end()) return;
  std::shared_ptr<Socket> socket = std::move(it->second);
  sockets_.erase(it);
  socket->closed = true;
  boost::system::error_code ignored;
  if (socket->owned) {
    socket->descriptor.close(ignored);
  } else {
    socket->descriptor.release();
  }
}

int CurlLoop::Core::SocketCallback(CURL*, curl_socket_t fd, int what, void* user, void*) {
  auto* core = static_cast<Core*>(user);
  core->mu_.AssertHeld();
  auto it = core->sockets_.find(fd);
  if (what == CURL_POLL_REMOVE) {
    if (it == core->sockets_.end()) return 0;
    it->second->want = 0;
    // An owned socket stays known until libcurl closes it (it may sit in the connection cache);
    // a watched-only one is let go now.
    if (!it->second->owned) core->ForgetSocket(fd);
    return 0;
  }
  if (it == core->sockets_.end()) {
    // A descriptor libcurl opened itself: watch it without taking it over.
    auto socket = std::make_shared<Socket>(core->executor_);
    boost::system::error_code ec;
    socket->descriptor.assign(fd, ec);
    if (ec) return -1;
    it = core->sockets_.emplace(fd, std::move(socket)).first;
  }
  const std::shared_ptr<Socket>& socket = it->second;
  const int added = what & ~socket->want;
  socket->want = what;
  if ((added & CURL_POLL_IN) != 0 && socket->read_ready) {
    socket->read_ready = false;
    core->PostAction(fd, CURL_CSELECT_IN);
  }
  core->ArmRead(socket);
  core->ArmWrite(socket);
  if ((added & CURL_POLL_OUT) != 0) {
    // A writable edge may have passed before the wait was queued (another thread running the
    // io_context can take it); ask the kernel once.
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      core->PostAction(fd, CURL_CSELECT_OUT);
    }
  }
  return 0;
}

int CurlLoop::Core::TimerCallback(CURLM*, long timeout_ms, void* user) {
  auto* core = static_cast<Core*>(user);
  core->mu_.AssertHeld();
  core->SetCurlTimeout(timeout_ms);
  return 0;
}

void CurlLoop::Core::SetCurlTimeout(long timeout_ms) {
  if (!curl_timer_) return;  // shutting down
  if (timeout_ms < 0) {
    // A pending wait is left to fire and find nothing due; recalling it costs more.
    curl_due_.reset();
    return;
  }
  const Clock::time_point due = Clock::now() + std::chrono::milliseconds(timeout_ms);
  curl_due_ = due;
  if (timeout_ms == 0) {
    // The common case (a handle was just added): no timer, the loop runs libcurl next.
    if (!curl_kick_posted_ && !adding_) {
      curl_kick_posted_ = true;
      asio::post(executor_, [self = shared_from_this()] {
        self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          self->curl_kick_posted_ = false;
          self->OnCurlTimer();
        });
      });
    }
    return;
  }
  if (!curl_timer_at_.has_value() || due < *curl_timer_at_) ArmCurlTimer(due);
}

curl_socket_t CurlLoop::Core::OpenSocketCallback(void* user, curlsocktype,
                                                 curl_sockaddr* address) {
  auto* core = static_cast<Core*>(user);
  core->mu_.AssertHeld();
  const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  // A watched-only record left under this number belongs to a descriptor closed since.
  core->ForgetSocket(fd);
  auto socket = std::make_shared<Socket>(core->executor_);
  boost::system::error_code ec;
  socket->descriptor.assign(fd, ec);
  if (ec) {
    ::close(fd);
    return CURL_SOCKET_BAD;
  }
  socket->owned = true;
  core->sockets_.emplace(fd, std::move(socket));
  return fd;
}

int CurlLoop::Core::CloseSocketCallback(void* user, curl_socket_t fd) {
  auto* core = static_cast<Core*>(user);
  core->mu_.AssertHeld();
  auto it = core->sockets_.find(fd);
  if (it == core->sockets_.end() || !it->second->owned) return ::close(fd);
  core->ForgetSocket(fd);
  return 0;
}

size_t CurlLoop::Core::HeaderCallback(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  absl::string_view line(data, n);
  t->last_activity = Clock::now();
  if (t->head_delivered) return n;  // trailers
  if (absl::StartsWith(line, "HTTP/")) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 2));
    int status = 0;
    if (parts.size() < 2 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[1]), &status)) {
      status = 0;
    }
    BeginHead(*t, status);
    return n;
  }
  absl::string_view trimmed = absl::StripAsciiWhitespace(line);
  if (trimmed.empty()) {
    EndHead(*t);
    return n;
  }
  const size_t colon = trimmed.find(':');
  if (colon == absl::string_view::npos) return n;
  AddHeadField(*t, trimmed.substr(0, colon), trimmed.substr(colon + 1));
  return n;
}

size_t CurlLoop::Core::WriteCallback(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  // Any short count makes libcurl fail the transfer with CURLE_WRITE_ERROR; abort_status says why.
  return DeliverBody(*t, std::string_view(data, n)) ? n : 0;
}

std::shared_ptr<const PlainHttpOrigin> CurlLoop::Core::DirectOrigin(const std::string& url) {
  if (!options_.direct_http) return nullptr;
  // The variables libcurl reads for a plain-HTTP URL (it ignores HTTP_PROXY in upper case); with
  // any of them set, libcurl decides, no_proxy included. Read per request, as libcurl does.
  for (const char* name : {"http_proxy", "all_proxy", "ALL_PROXY"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return nullptr;
  }
  if (auto it = origins_.find(url); it != origins_.end()) return it->second;
  std::shared_ptr<const PlainHttpOrigin> origin;
  if (std::optional<PlainHttpOrigin> parsed = ParsePlainHttpUrl(url)) {
    origin = std::make_shared<const PlainHttpOrigin>(*std::move(parsed));
  }
  if (origins_.size() >= kMaxCachedOrigins) origins_.clear();
  origins_.emplace(url, origin);
  return origin;
}

void CurlLoop::Core::StartDirect(Transfer& t) {
  Direct& d = *t.direct;
  d.head = SerializeRequestHead(*d.origin, *t.request);
  d.parser.emplace(&t);
  if (std::shared_ptr<DirectConnection> conn = TakePooled(d.origin->key)) {
    d.conn = std::move(conn);
    d.reused = true;
    d.connected = true;
    WriteDirect(t);
    return;
  }
  ConnectDirect(t);
}

template <typename Body>
auto CurlLoop::Core::OnDirect(TransferId id, std::shared_ptr<DirectConnection> conn, Body body) {
  return [self = shared_from_this(), id, conn = std::move(conn),
          body = std::move(body)](const auto&... result) mutable {
    self->RunInLoop([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      auto it = self->transfers_.find(id);
      if (it == self->transfers_.end()) return;
      Transfer& t = *it->second;
      if (t.direct == nullptr || t.direct->conn != conn) return;
      body(t, result...);
    });
  };
}

void CurlLoop::Core::ConnectDirect(Transfer& t) {
  Direct& d = *t.direct;
  d.reused = false;
  d.connected = false;
  d.connect_started = Clock::now();
  auto conn = std::make_shared<DirectConnection>(executor_);
  conn->key = d.origin->key;
  d.conn = conn;
  // Called with the endpoint connected to when a resolver's list was tried; it is not needed.
  auto connected = OnDirect(t.id, conn,
                            [this](Transfer& t, const boost::system::error_code& ec,
                                   const auto&...) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                              OnDirectConnected(t, ec);
                            });
  const PlainHttpOrigin& origin = *d.origin;
  if (origin.address.has_value()) {
    conn->socket.async_connect(asio::ip::tcp::endpoint(*origin.address, origin.port),
                               std::move(connected));
    return;
  }
  d.resolver = std::make_unique<asio::ip::tcp::resolver>(executor_);
  d.resolver->async_resolve(
      origin.host, std::to_string(origin.port),
      OnDirect(t.id, conn,
               [this, connected = std::move(connected)](
                   Transfer& t, const boost::system::error_code& ec,
                   const asio::ip::tcp::resolver::results_type& endpoints) mutable
                   ABSL_NO_THREAD_SAFETY_ANALYSIS {
                     if (ec) {
                       FinishTransfer(t.id, absl::UnavailableError(absl::StrCat(
                                                "upstream request failed: cannot resolve ",
                                                t.direct->origin->host, ": ", ec.message())));
                       return;
                     }
                     asio::async_connect(t.direct->conn->socket, endpoints, std::move(connected));
                   }));
}

void CurlLoop::Core::OnDirectConnected(Transfer& t, const boost::system::error_code& ec) {
  if (ec) {
    FinishTransfer(t.id, absl::UnavailableError(absl::StrCat(
                             "upstream request failed: cannot connect to ",
                             t.direct->origin->key, ": ", ec.message())));
    return;
  }
  asio::ip::tcp::socket& socket = t.direct->conn->socket;
  boost::system::error_code ignored;
  // Streams are many small writes; Nagle would hold each token back.
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::keep_alive(true), ignored);
  // Reads and writes are tried at once and return would_block instead of waiting.
  socket.non_blocking(true, ignored);
  t.direct->connected = true;
  t.direct->resolver.reset();
  WriteDirect(t);
}

void CurlLoop::Core::WriteDirect(Transfer& t) {
  Direct& d = *t.direct;
  const std::string& body = t.request->body;
  const size_t total = d.head.size() + body.size();
  while (d.sent < total) {
    std::array<asio::const_buffer, 2> pieces;
    if (d.sent < d.head.size()) {
      pieces = {asio::buffer(d.head) + d.sent, asio::buffer(body)};
    } else {
      pieces = {asio::buffer(body) + (d.sent - d.head.size()), asio::const_buffer()};
    }
    boost::system::error_code ec;
    const size_t written = d.conn->socket.write_some(pieces, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      WaitWritable(t);
      return;
    }
    if (ec) {
      FailDirect(t, absl::UnavailableError(
                        absl::StrCat("upstream request failed: send: ", ec.message())));
      return;
    }
    d.sent += written;
  }
  ReadDirect(t);
}

void CurlLoop::Core::WaitWritable(Transfer& t) {
  t.direct->conn->socket.async_wait(
      asio::socket_base::wait_write,
      OnDirect(t.id, t.direct->conn,
               [this](Transfer& t, const boost::system::error_code& ec)
                   ABSL_NO_THREAD_SAFETY_ANALYSIS {
                     if (ec) {
                       FailDirect(t, absl::UnavailableError(absl::StrCat(
                                         "upstream request failed: send: ", ec.message())));
                       return;
                     }
                     WriteDirect(t);
                   }));
}

// An Asio read, not a wait: a wait re-arms the descriptor in epoll (a system call) every time,
// while a read after one that emptied the socket is queued without any, and a read that may find
// data already there tries it at once.
void CurlLoop::Core::ReadDirect(Transfer& t) {
  DirectConnection& conn = *t.direct->conn;
  conn.socket.async_read_some(
      conn.buffer.prepare(kDirectReadBytes),
      OnDirect(t.id, t.direct->conn,
               [this](Transfer& t, const boost::system::error_code& ec, size_t bytes)
                   ABSL_NO_THREAD_SAFETY_ANALYSIS { OnDirectRead(t, ec, bytes); }));
}

void CurlLoop::Core::OnDirectRead(Transfer& t, boost::system::error_code ec, size_t bytes) {
  Direct& d = *t.direct;
  DirectConnection& conn = *d.conn;
  const TransferId id = t.id;
  if (ec == asio::error::eof) {
    if (!d.replied) {
      FailDirect(t, absl::UnavailableError(
                        "upstream request failed: connection closed before a response"));
      return;
    }
    // A body that runs to the connection's end is complete now; any other is cut short.
    d.parser->put_eof(ec);
    if (ec || !d.parser->is_done()) {
      FinishTransfer(id, absl::UnavailableError(
                             absl::StrCat("upstream request failed: response cut short: ",
                                          ec ? ec.message() : "connection closed")));
      return;
    }
    CompleteDirect(t, /*reusable=*/false);
    return;
  }
  if (ec) {
    FailDirect(t, absl::UnavailableError(
                      absl::StrCat("upstream request failed: receive: ", ec.message())));
    return;
  }
  conn.buffer.commit(bytes);
  d.replied = true;
  t.last_activity = Clock::now();
  absl::Status parsed;
  bool done = false;
  while (conn.buffer.size() > 0) {
    const size_t used = d.parser->put(conn.buffer.data(), ec);
    conn.buffer.consume(used);
    if (ec == boost::beast::http::error::need_more) break;
    if (ec) {
      parsed = !t.abort_status.ok()
                   ? t.abort_status
                   : absl::UnavailableError(absl::StrCat(
                         "upstream request failed: malformed HTTP response: ", ec.message()));
      break;
    }
    if (!d.parser->is_done()) continue;
    if (t.head.status >= 200 || t.head.status == 0) {
      done = true;
      break;
    }
    // An interim (1xx) response: the final one follows on the same connection.
    d.parser.emplace(&t);
  }
  // Everything of this read went to the handler: one OnBodyDone for it.
  FlushReceived();
  if (!parsed.ok()) {
    FinishTransfer(id, parsed);
    return;
  }
  if (done) {
    CompleteDirect(t, d.parser->keep_alive() && conn.buffer.size() == 0);
    return;
  }
  ReadDirect(t);
}

void CurlLoop::Core::FailDirect(Transfer& t, absl::Status status) {
  Direct& d = *t.direct;
  if (d.reused && !d.replied && !stopped_) {
    // The server closed the pooled connection while it was idle, and the request never reached
    // it (or was never answered): send it once more, on a new connection, as libcurl does.
    boost::system::error_code ignored;
    d.conn->socket.close(ignored);
    d.sent = 0;
    d.parser.emplace(&t);
    ConnectDirect(t);
    ArmDeadline(t);  // the new connection's connect limit
    return;
  }
  FinishTransfer(t.id, status);
}

void CurlLoop::Core::CompleteDirect(Transfer& t, bool reusable) {
  std::shared_ptr<DirectConnection> conn = std::move(t.direct->conn);
  if (reusable && !stopped_) {
    PoolConnection(std::move(conn));
  } else {
    boost::system::error_code ignored;
    conn->socket.close(ignored);
  }
  FinishTransfer(t.id, absl::OkStatus());
}

// No wait watches an idle connection (each would cost a system call per request to arm): one
// the server closed meanwhile is found out by the next request on it, which then goes out again
// on a new connection (FailDirect). Connections past their age are closed as the pool is used.
void CurlLoop::Core::PoolConnection(std::shared_ptr<DirectConnection> conn) {
  std::vector<std::shared_ptr<DirectConnection>>& idle = idle_connections_[conn->key];
  const Clock::time_point now = Clock::now();
  boost::system::error_code ignored;
  while (!idle.empty() && now - idle.front()->idle_since > kMaxIdleConnectionAge) {
    idle.front()->socket.close(ignored);
    idle.erase(idle.begin());
  }
  if (idle.size() >= kMaxIdleConnectionsPerOrigin) {
    conn->socket.close(ignored);
    return;
  }
  conn->idle_since = now;
  idle.push_back(std::move(conn));
}

std::shared_ptr<DirectConnection> CurlLoop::Core::TakePooled(const std::string& key) {
  auto it = idle_connections_.find(key);
  if (it == idle_connections_.end()) return nullptr;
  std::vector<std::shared_ptr<DirectConnection>>& idle = it->second;
  const Clock::time_point now = Clock::now();
  while (!idle.empty()) {
    std::shared_ptr<DirectConnection> conn = std::move(idle.back());
    idle.pop_back();
    if (now - conn->idle_since <= kMaxIdleConnectionAge) return conn;
    boost::system::error_code ignored;
    conn->socket.close(ignored);
  }
  return nullptr;
}

}  // namespace switchyard::backends
