#include "backends/remote/curl_loop.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace switchyard::backends {
namespace {

using Clock = std::chrono::steady_clock;

// Longest the loop sleeps without a reason; only bounds how late a bug could be noticed, every
// real deadline is computed exactly.
constexpr int kMaxPollMs = 1000;

Clock::duration ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

// One request on its way through the loop.
struct Transfer {
  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (header_list != nullptr) curl_slist_free_all(header_list);
  }

  CurlLoop::TransferId id = 0;
  Clock::time_point not_before;
  HttpRequest request;
  std::shared_ptr<TransferHandler> handler;
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
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

}  // namespace

std::string_view HttpResponseHead::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

class CurlLoop::Core {
 public:
  explicit Core(CURLM* multi) : multi_(multi) {}
  ~Core() { curl_multi_cleanup(multi_); }

  TransferId Enqueue(std::unique_ptr<Transfer> transfer);
  void EnqueueCancel(TransferId id);
  void Stop();
  size_t active() const;
  void Run();

 private:
  struct Command {
    TransferId id = 0;
    // Set for a start; null for a cancel.
    std::unique_ptr<Transfer> transfer;
  };

  void DrainCommands();
  void StartDueTransfers();
  void AddTransfer(std::unique_ptr<Transfer> transfer);
  void FinishTransfer(TransferId id, const absl::Status& status);
  void ReadFinished();
  void EnforceDeadlines();
  int PollTimeoutMs() const;

  static size_t WriteCallback(char* data, size_t size, size_t count, void* user);
  static size_t HeaderCallback(char* data, size_t size, size_t count, void* user);

  CURLM* const multi_;

  mutable absl::Mutex mu_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  TransferId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Transfers running or waiting for a delayed start.
  size_t active_ ABSL_GUARDED_BY(mu_) = 0;

  // Loop thread only.
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> transfers_;
  // Accepted but not begun: waiting for their start time.
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> delayed_;
  // Transfers that received data in the current curl_multi_perform, told OnBodyDone after it.
  std::vector<Transfer*> received_;
};

absl::StatusOr<std::shared_ptr<CurlLoop>> CurlLoop::Create() {
  static std::once_flag init_once;
  static CURLcode init_result = CURLE_OK;
  std::call_once(init_once, [] { init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_result != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init failed: ", curl_easy_strerror(init_result)));
  }
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return absl::InternalError("curl_multi_init failed");
  auto core = std::make_shared<Core>(multi);
  std::thread thread([core] { core->Run(); });
  return std::shared_ptr<CurlLoop>(new CurlLoop(std::move(core), std::move(thread)));
}

CurlLoop::CurlLoop(std::shared_ptr<Core> core, std::thread thread)
    : core_(std::move(core)), thread_(std::move(thread)) {}

CurlLoop::~CurlLoop() {
  core_->Stop();
  if (thread_.get_id() == std::this_thread::get_id()) {
    // A handler released the last reference; the thread finishes on its own and frees the core.
    thread_.detach();
  } else {
    thread_.join();
  }
}

CurlLoop::TransferId CurlLoop::Start(HttpRequest request,
                                     std::shared_ptr<TransferHandler> handler,
                                     absl::Duration delay) {
  auto transfer = std::make_unique<Transfer>();
  transfer->not_before = Clock::now() + ToChrono(std::max(delay, absl::ZeroDuration()));
  transfer->request = std::move(request);
  transfer->handler = std::move(handler);
  return core_->Enqueue(std::move(transfer));
}

void CurlLoop::Cancel(TransferId id) { core_->EnqueueCancel(id); }

size_t CurlLoop::active_transfers() const { return core_->active(); }

CurlLoop::TransferId CurlLoop::Core::Enqueue(std::unique_ptr<Transfer> transfer) {
  TransferId id;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    transfer->id = id;
    commands_.push_back(Command{id, std::move(transfer)});
  }
  curl_multi_wakeup(multi_);
  return id;
}

void CurlLoop::Core::EnqueueCancel(TransferId id) {
  {
    absl::MutexLock lock(&mu_);
    commands_.push_back(Command{id, nullptr});
  }
  curl_multi_wakeup(multi_);
}

void CurlLoop::Core::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_);
}

size_t CurlLoop::Core::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

void CurlLoop::Core::Run() {
  CURLM* multi = multi_;
  while (true) {
    DrainCommands();
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    StartDueTransfers();
    int running = 0;
    curl_multi_perform(multi, &running);
    // Every transfer is still alive here: cancels wait for DrainCommands, ends for ReadFinished.
    for (Transfer* t : received_) {
      t->on_received = false;
      t->handler->OnBodyDone();
    }
    received_.clear();
    ReadFinished();
    EnforceDeadlines();
    // Also returns early on curl_multi_wakeup() and when libcurl's own timers are due.
    curl_multi_poll(multi, nullptr, 0, PollTimeoutMs(), nullptr);
  }

  const absl::Status shutdown = absl::UnavailableError("remote backend loop is shutting down");
  std::vector<TransferId> ids;
  for (const auto& [id, transfer] : transfers_) ids.push_back(id);
  for (TransferId id : ids) FinishTransfer(id, shutdown);
  for (auto& [id, transfer] : delayed_) transfer->handler->OnComplete(shutdown);
  delayed_.clear();
  std::deque<Command> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(commands_);
  }
  for (Command& command : pending) {
    if (command.transfer != nullptr) command.transfer->handler->OnComplete(shutdown);
  }
}

void CurlLoop::Core::DrainCommands() {
  std::deque<Command> commands;
  {
    absl::MutexLock lock(&mu_);
    commands.swap(commands_);
  }
  for (Command& command : commands) {
    if (command.transfer != nullptr) {
      {
        absl::MutexLock lock(&mu_);
        ++active_;
      }
      delayed_.emplace(command.id, std::move(command.transfer));
      continue;
    }
    if (delayed_.erase(command.id) > 0) {
      absl::MutexLock lock(&mu_);
      --active_;
      continue;
    }
    auto it = transfers_.find(command.id);
    if (it == transfers_.end()) continue;
    // Removing the handle closes its connection (or stream) right away; the handler is dropped
    // without a call, as Cancel() promises.
    curl_multi_remove_handle(multi_, it->second->easy);
    transfers_.erase(it);
    absl::MutexLock lock(&mu_);
    --active_;
  }
}

void CurlLoop::Core::StartDueTransfers() {
  const Clock::time_point now = Clock::now();
  std::vector<std::unique_ptr<Transfer>> due;
  for (auto it = delayed_.begin(); it != delayed_.end();) {
    if (it->second->not_before <= now) {
      due.push_back(std::move(it->second));
      it = delayed_.erase(it);
    } else {
      ++it;
    }
  }
  // In id order, so transfers queued together start in the order they were queued.
  std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  for (std::unique_ptr<Transfer>& transfer : due) AddTransfer(std::move(transfer));
}

// Moves a transfer onto the multi handle; `active_` already counts it.
void CurlLoop::Core::AddTransfer(std::unique_ptr<Transfer> transfer) {
  Transfer& t = *transfer;
  t.started = t.last_activity = Clock::now();
  auto fail = [this, &t](const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      --active_;
    }
    t.handler->OnComplete(status);
  };
  t.easy = curl_easy_init();
  if (t.easy == nullptr) {
    fail(absl::UnavailableError("curl_easy_init failed"));
    return;
  }
  const HttpRequest& r = t.request;
  CURL* easy = t.easy;
  curl_easy_setopt(easy, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t.error);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Core::WriteCallback);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  t.received = &received_;
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Core::HeaderCallback);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
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

  if (CURLMcode code = curl_multi_add_handle(multi_, easy); code != CURLM_OK) {
    fail(absl::UnavailableError(
        absl::StrCat("curl_multi_add_handle failed: ", curl_multi_strerror(code))));
    return;
  }
  transfers_.emplace(t.id, std::move(transfer));
}

void CurlLoop::Core::FinishTransfer(TransferId id, const absl::Status& status) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  std::unique_ptr<Transfer> transfer = std::move(it->second);
  transfers_.erase(it);
  curl_multi_remove_handle(multi_, transfer->easy);
  {
    absl::MutexLock lock(&mu_);
    --active_;
  }
  if (status.ok() && !transfer->head_delivered && transfer->status_line_seen) {
    transfer->head_delivered = true;
    transfer->handler->OnHead(transfer->head);
  }
  // Called after the transfer left the loop's books, so the handler may start or cancel others.
  transfer->handler->OnComplete(status);
}

void CurlLoop::Core::ReadFinished() {
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
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

void CurlLoop::Core::EnforceDeadlines() {
  const Clock::time_point now = Clock::now();
  std::vector<std::pair<TransferId, absl::Status>> expired;
  for (const auto& [id, t] : transfers_) {
    const HttpTimeouts& limits = t->request.timeouts;
    if (!t->status_line_seen) {
      if (limits.first_byte != absl::InfiniteDuration() &&
          now - t->started >= ToChrono(limits.first_byte)) {
        expired.emplace_back(id, absl::DeadlineExceededError(absl::StrCat(
                                     "upstream sent no response within ",
                                     absl::FormatDuration(limits.first_byte))));
      }
    } else if (limits.idle != absl::InfiniteDuration() &&
               now - t->last_activity >= ToChrono(limits.idle)) {
      expired.emplace_back(id, absl::DeadlineExceededError(absl::StrCat(
                                   "upstream stalled: no data for ",
                                   absl::FormatDuration(limits.idle))));
    }
  }
  for (const auto& [id, status] : expired) FinishTransfer(id, status);
}

int CurlLoop::Core::PollTimeoutMs() const {
  const Clock::time_point now = Clock::now();
  Clock::duration wait = std::chrono::milliseconds(kMaxPollMs);
  for (const auto& [id, t] : delayed_) wait = std::min(wait, t->not_before - now);
  for (const auto& [id, t] : transfers_) {
    const HttpTimeouts& limits = t->request.timeouts;
    if (!t->status_line_seen && limits.first_byte != absl::InfiniteDuration()) {
      wait = std::min(wait, t->started + ToChrono(limits.first_byte) - now);
    } else if (t->status_line_seen && limits.idle != absl::InfiniteDuration()) {
      wait = std::min(wait, t->last_activity + ToChrono(limits.idle) - now);
    }
  }
  // Round up so the loop does not spin waking a fraction of a millisecond early.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, kMaxPollMs));
}

size_t CurlLoop::Core::HeaderCallback(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  absl::string_view line(data, n);
  t->last_activity = Clock::now();
  if (t->head_delivered) return n;  // trailers
  if (absl::StartsWith(line, "HTTP/")) {
    // A new status line: an interim 1xx response or the final one. Either way start over.
    t->status_line_seen = true;
    t->head = HttpResponseHead();
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 2));
    int status = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[1]), &status)) {
      t->head.status = status;
    }
    return n;
  }
  absl::string_view trimmed = absl::StripAsciiWhitespace(line);
  if (trimmed.empty()) {
    if (t->head.status >= 200) {
      t->head_delivered = true;
      t->handler->OnHead(t->head);
    }
    return n;
  }
  const size_t colon = trimmed.find(':');
  if (colon == absl::string_view::npos) return n;
  t->head.headers.emplace_back(absl::AsciiStrToLower(trimmed.substr(0, colon)),
                               std::string(absl::StripAsciiWhitespace(trimmed.substr(colon + 1))));
  return n;
}

size_t CurlLoop::Core::WriteCallback(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  t->last_activity = Clock::now();
  if (!t->head_delivered) {
    t->head_delivered = true;
    t->handler->OnHead(t->head);
  }
  t->body_bytes += n;
  if (t->body_bytes > t->request.max_body_bytes) {
    t->abort_status = absl::OutOfRangeError(absl::StrCat(
        "upstream response body exceeds the limit of ", t->request.max_body_bytes, " bytes"));
    return 0;  // any short count makes libcurl fail the transfer with CURLE_WRITE_ERROR
  }
  if (!t->on_received) {
    t->on_received = true;
    t->received->push_back(t);
  }
  if (!t->handler->OnBody(std::string_view(data, n))) {
    t->abort_status = absl::CancelledError("transfer aborted by its handler");
    return 0;
  }
  return n;
}

}  // namespace switchyard::backends
