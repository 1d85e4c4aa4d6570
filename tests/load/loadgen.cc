// switchyard_load: a load generator for the gateway's data plane (and for the upstream it calls,
// so both can be measured side by side in one run). See tests/load/README part of README.md.
//
//   switchyard_load (--http http://HOST:PORT | --grpc HOST:PORT)
//       [--concurrency N | --rate R [--connections N]] [--duration S] [--warmup S]
//       [--requests N] [--stream] [--prompt-bytes N] [--max-tokens N] [--model NAME]
//       [--expect-tokens N] [--watch NAME=PID]... [--label TEXT] [--json]
//
// Closed loop (--concurrency N): N connections (gRPC: N calls in flight), each sending its next
// request as soon as the previous answer is complete. Open loop (--rate R): requests are due at
// fixed intervals whatever the server does; a request that finds no free connection waits, and
// latency is measured from the time it was due, so a stalled server is not hidden (no
// coordinated omission). HTTP is HTTP/1.1 keep-alive on one epoll thread; gRPC uses the
// callback API on one channel.
//
// Results count requests due inside the measured window (after --warmup, for --duration); the
// answers of requests still in flight at the end are awaited, never cut off. --requests N sends
// exactly N requests (closed loop, no warm-up) and measures them all.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/load/histogram.h"

namespace switchyard::load {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Watch {
  std::string name;
  int pid = 0;
};

struct Options {
  std::string http_host;
  int http_port = 0;
  std::string http_path = "/v1/chat/completions";
  std::string grpc_target;
  int concurrency = 1;
  double rate = 0;  // > 0: open loop
  int connections = 512;
  double duration_s = 5;
  double warmup_s = 1;
  int64_t requests = 0;  // > 0: exactly this many, closed loop
  bool stream = false;
  int prompt_bytes = 1024;
  int max_tokens = 16;
  std::string model = "auto";
  int64_t expect_tokens = -1;
  std::vector<Watch> watches;
  std::string label;
  bool json = false;
  double drain_timeout_s = 30;
};

// The prompt: plain English prose of exactly `bytes` bytes (no sensitive data, so a policy
// routes it by its default), built from a fixed text so every run sends the same bytes.
std::string Prompt(int bytes) {
  static constexpr std::string_view kText =
      "The committee reviewed the quarterly plan for the regional depots and agreed that the "
      "schedule should favour steady deliveries over large weekly batches. Drivers asked for "
      "clearer loading instructions, and the warehouse team proposed a shared checklist that "
      "covers pallets, cold storage and returns. ";
  std::string out;
  while (out.size() < static_cast<size_t>(bytes)) out.append(kText);
  out.resize(static_cast<size_t>(bytes));
  return out;
}

std::string RequestBody(const Options& o) {
  std::string body = R"({"model":")" + o.model + R"(","max_tokens":)" +
                     std::to_string(o.max_tokens) + R"(,"stream":)" +
                     (o.stream ? "true" : "false") +
                     R"(,"messages":[{"role":"user","content":")" + Prompt(o.prompt_bytes) +
                     R"("}]})";
  return body;
}

// Everything one run measures.
struct Results {
  Histogram latency;    // request due (open loop) or sent (closed loop) -> answer complete
  Histogram ttft;       // -> first non-empty content event (streams)
  Histogram gap;        // between content events of one stream (after the first)
  Histogram per_token;  // (last - first content event) / (tokens - 1), per stream
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t http_errors = 0;     // a status other than 200
  int64_t io_errors = 0;       // connect, reset, closed early
  int64_t protocol_errors = 0; // malformed answer, missing [DONE], wrong token count
  int64_t tokens = 0;
  int64_t sent_total = 0;      // including warm-up
  int64_t completed_total = 0; // answers of any kind, including warm-up
  int64_t max_in_flight = 0;
  int64_t late_starts = 0;     // open loop: requests that waited for a free connection
  std::string first_error;

  void Error(int64_t* kind, std::string_view what) {
    ++errors;
    ++*kind;
    if (first_error.empty()) first_error = std::string(what);
  }
};

// CPU seconds (user + system) and RSS of a process, from /proc.
struct ProcSample {
  double cpu_s = 0;
  int64_t rss_bytes = 0;
  bool ok = false;
};

ProcSample SampleProc(int pid) {
  ProcSample sample;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return sample;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  // After ")": state(3) ... utime is field 14, stime 15 (1-based over the whole line).
  std::vector<std::string> values;
  while (fields >> field) values.push_back(field);
  if (values.size() < 22) return sample;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  sample.cpu_s = (std::stod(values[11]) + std::stod(values[12])) / ticks;
  sample.rss_bytes = std::stoll(values[21]) * sysconf(_SC_PAGESIZE);
  sample.ok = true;
  return sample;
}

double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// The measured window and the CPU spent inside it.
class Window {
 public:
  explicit Window(const Options& o) : options_(o) {}

  // The run starts now (connections are open): warm-up, then the measured window.
  void Start(int64_t now) {
    start_ = now;
    begin_ = now + static_cast<int64_t>(options_.requests > 0 ? 0 : options_.warmup_s * 1e9);
    end_ = begin_ + static_cast<int64_t>(options_.duration_s * 1e9);
  }
  int64_t start() const { return start_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  bool Measured(int64_t due) const {
    return options_.requests > 0 || (due >= begin_ && due < end_);
  }
  // Called often from the issuing loop; takes the CPU samples at the window's edges.
  void Tick(int64_t now) {
    if (!started_ && (options_.requests > 0 || now >= begin_)) {
      started_ = true;
      cpu_begin_ = Sample();
      wall_begin_ = now;
    }
    if (started_ && !ended_ && options_.requests == 0 && now >= end_) End(now);
    if (now - last_rss_sample_ >= 100'000'000) {
      last_rss_sample_ = now;
      rss_peak_.resize(options_.watches.size(), -1);
      for (size_t i = 0; i < options_.watches.size(); ++i) {
        const ProcSample sample = SampleProc(options_.watches[i].pid);
        if (sample.ok) rss_peak_[i] = std::max(rss_peak_[i], sample.rss_bytes);
      }
    }
  }
  void End(int64_t now) {
    if (ended_ || !started_) return;
    ended_ = true;
    cpu_end_ = Sample();
    wall_end_ = now;
  }
  double wall_s() const { return static_cast<double>(wall_end_ - wall_begin_) / 1e9; }
  double self_cpu_s() const { return cpu_end_.self - cpu_begin_.self; }
  // CPU seconds of each watched process inside the window; negative when unreadable.
  std::vector<double> watched_cpu_s() const {
    std::vector<double> out;
    for (size_t i = 0; i < options_.watches.size(); ++i) {
      const bool ok = cpu_begin_.procs[i].ok && cpu_end_.procs[i].ok;
      out.push_back(ok ? cpu_end_.procs[i].cpu_s - cpu_begin_.procs[i].cpu_s : -1);
    }
    return out;
  }
  std::vector<int64_t> watched_rss() const {
    std::vector<int64_t> out;
    for (const ProcSample& s : cpu_end_.procs) out.push_back(s.ok ? s.rss_bytes : -1);
    return out;
  }
  // The largest RSS of each watched process, sampled every 100 ms during the whole run.
  std::vector<int64_t> watched_rss_peak() const {
    std::vector<int64_t> out = rss_peak_;
    out.resize(options_.watches.size(), -1);
    return out;
  }

 private:
  struct Samples {
    double self = 0;
    std::vector<ProcSample> procs;
  };
  Samples Sample() const {
    Samples s;
    s.self = SelfCpuSeconds();
    for (const Watch& w : options_.watches) s.procs.push_back(SampleProc(w.pid));
    return s;
  }

  const Options& options_;
  int64_t start_ = 0;
  int64_t begin_ = 0;
  int64_t end_ = 0;
  bool started_ = false;
  bool ended_ = false;
  Samples cpu_begin_;
  Samples cpu_end_;
  int64_t wall_begin_ = 0;
  int64_t wall_end_ = 0;
  int64_t last_rss_sample_ = 0;
  std::vector<int64_t> rss_peak_;
};

// Counts tokens and timings of one streamed answer.
struct StreamState {
  int64_t first = 0;
  int64_t last = 0;
  int64_t events = 0;
  bool done = false;

  void OnContent(int64_t at, Results& r, bool measured) {
    if (events == 0) {
      first = at;
    } else if (measured) {
      r.gap.Record(at - last);
    }
    last = at;
    ++events;
  }
};

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client on one epoll thread.

class HttpLoad {
 public:
  HttpLoad(const Options& o, Results& r) : o_(o), r_(r) {
    const std::string body = RequestBody(o);
    request_ = "POST " + o.http_path + " HTTP/1.1\r\nHost: " + o.http_host + ":" +
               std::to_string(o.http_port) +
               "\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  bool Run(Window& window) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    const int count = o_.rate > 0 ? o_.connections : o_.concurrency;
    conns_.resize(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      if (!Connect(i)) return false;
      idle_.push_back(i);
    }
    window.Start(NowNs());
    const int64_t start = window.start();
    const int64_t stop_issuing = o_.requests > 0 ? INT64_MAX : window.end();
    const double interval = o_.rate > 0 ? 1e9 / o_.rate : 0;
    int64_t issued = 0;
    int64_t next_due = start;
    std::vector<epoll_event> events(1024);
    int64_t drain_deadline = 0;
    while (true) {
      int64_t now = NowNs();
      window.Tick(now);
      // Open loop: every request due before the end is sent, however late the loop wakes.
      const bool issuing = o_.rate > 0
                               ? next_due < stop_issuing || !backlog_.empty()
                               : now < stop_issuing && (o_.requests == 0 || issued < o_.requests);
      if (issuing) {
        if (o_.rate > 0) {
          while (next_due <= now && next_due < stop_issuing) {
            backlog_.push_back(next_due);
            ++issued;
            next_due = start + static_cast<int64_t>(static_cast<double>(issued) * interval);
          }
          while (!backlog_.empty() && !idle_.empty()) {
            const int64_t due = backlog_.front();
            backlog_.pop_front();
            if (now - due > 1'000'000) ++r_.late_starts;
            Send(Pop(), due, now);
          }
        } else {
          while (!idle_.empty() && (o_.requests == 0 || issued < o_.requests)) {
            Send(Pop(), now, now);
            ++issued;
          }
        }
      } else {
        if (o_.requests > 0) window.End(now);
        if (drain_deadline == 0) {
          drain_deadline = now + static_cast<int64_t>(o_.drain_timeout_s * 1e9);
          backlog_.clear();
        }
        if (in_flight_ == 0) break;
        if (now > drain_deadline) {
          for (size_t i = 0; i < conns_.size(); ++i) {
            if (conns_[i].busy) Fail(static_cast<int>(i), &r_.io_errors, "timed out at the end");
          }
          break;
        }
      }
      // Sleep until the next request is due (open loop), the window's edge, or an event.
      int64_t wake = now + 100'000'000;
      if (issuing && o_.rate > 0 && next_due < stop_issuing) wake = std::min(wake, next_due);
      if (now < window.begin()) wake = std::min(wake, window.begin());
      if (now < window.end()) wake = std::min(wake, window.end());
      const int64_t wait = std::max<int64_t>(0, wake - now);
      timespec timeout{static_cast<time_t>(wait / 1'000'000'000), static_cast<long>(wait % 1'000'000'000)};
      const int n = epoll_pwait2(epoll_, events.data(), static_cast<int>(events.size()), &timeout,
                                 nullptr);
      now = NowNs();
      for (int i = 0; i < n; ++i) OnEvent(static_cast<int>(events[static_cast<size_t>(i)].data.u32), now);
    }
    window.End(NowNs());
    for (Conn& c : conns_) {
      if (c.fd >= 0) ::close(c.fd);
    }
    ::close(epoll_);
    return true;
  }

 private:
  enum class Phase { kHead, kBody, kChunkSize, kChunkData, kChunkCrlf, kTrailer };
  struct Conn {
    int fd = -1;
    bool busy = false;
    bool measured = false;
    int64_t due = 0;
    size_t written = 0;
    std::string in;
    size_t parsed = 0;
    Phase phase = Phase::kHead;
    int status = 0;
    bool chunked = false;
    bool close_after = false;
    bool event_stream = false;
    int64_t remaining = 0;
    std::string body;  // JSON answers
    std::string sse;   // SSE bytes not yet split into events
    StreamState stream;
  };

  int Pop() {
    const int i = idle_.back();
    idle_.pop_back();
    return i;
  }

  bool Connect(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(o_.http_host.c_str(), std::to_string(o_.http_port).c_str(), &hints, &found) !=
            0 ||
        found == nullptr) {
      std::fprintf(stderr, "switchyard_load: cannot resolve %s\n", o_.http_host.c_str());
      return false;
    }
    const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool connected = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0;
    freeaddrinfo(found);
    if (!connected) {
      std::fprintf(stderr, "switchyard_load: cannot connect to %s:%d: %s\n", o_.http_host.c_str(),
                   o_.http_port, std::strerror(errno));
      if (fd >= 0) ::close(fd);
      return false;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c = Conn{};
    c.fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    return true;
  }

  void Send(int i, int64_t due, int64_t now) {
    Conn& c = conns_[static_cast<size_t>(i)];
    c.busy = true;
    c.due = due;
    c.measured = window_measured_(due);
    c.written = 0;
    c.in.clear();
    c.parsed = 0;
    c.phase = Phase::kHead;
    c.body.clear();
    c.sse.clear();
    c.stream = StreamState{};
    ++in_flight_;
    ++r_.sent_total;
    r_.max_in_flight = std::max(r_.max_in_flight, in_flight_);
    (void)now;
    Write(i);
  }

  void Write(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    while (c.written < request_.size()) {
      const ssize_t n = ::send(c.fd, request_.data() + c.written, request_.size() - c.written,
                               MSG_NOSIGNAL);
      if (n > 0) {
        c.written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        SetWriteInterest(i, true);
        return;
      }
      Fail(i, &r_.io_errors, "send failed");
      return;
    }
    SetWriteInterest(i, false);
  }

  void SetWriteInterest(int i, bool on) {
    Conn& c = conns_[static_cast<size_t>(i)];
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u);
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void OnEvent(int i, int64_t now) {
    Conn& c = conns_[static_cast<size_t>(i)];
    if (c.fd < 0) return;
    if (c.busy && c.written < request_.size()) Write(i);
    char buffer[65536];
    while (c.fd >= 0) {
      const ssize_t n = ::recv(c.fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        if (!c.busy) {
          Reconnect(i, "bytes from the server between requests");
          return;
        }
        c.in.append(buffer, static_cast<size_t>(n));
        if (!Parse(i, now)) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      // Closed or reset.
      if (c.busy) {
        Fail(i, &r_.io_errors, n == 0 ? "connection closed mid-answer" : "connection reset");
      } else {
        Reconnect(i, nullptr);
      }
      return;
    }
  }

  // Advances the response parser; false when the connection was recycled.
  bool Parse(int i, int64_t now) {
    Conn& c = conns_[static_cast<size_t>(i)];
    while (true) {
      std::string_view in(c.in.data() + c.parsed, c.in.size() - c.parsed);
      switch (c.phase) {
        case Phase::kHead: {
          const size_t end = in.find("\r\n\r\n");
          if (end == std::string_view::npos) return true;
          const std::string_view head = in.substr(0, end + 2);
          if (!head.starts_with("HTTP/1.1 ") || head.size() < 12) {
            Fail(i, &r_.protocol_errors, "malformed status line");
            return false;
          }
          c.status = std::atoi(std::string(head.substr(9, 3)).c_str());
          c.chunked = HasHeader(head, "transfer-encoding", "chunked");
          c.close_after = HasHeader(head, "connection", "close");
          c.event_stream = HasHeader(head, "content-type", "text/event-stream");
          c.remaining = HeaderNumber(head, "content-length");
          c.parsed += end + 4;
          c.phase = c.chunked ? Phase::kChunkSize : Phase::kBody;
          break;
        }
        case Phase::kBody: {
          const size_t take = std::min<size_t>(in.size(), static_cast<size_t>(c.remaining));
          OnBodyBytes(c, in.substr(0, take), now);
          c.parsed += take;
          c.remaining -= static_cast<int64_t>(take);
          if (c.remaining > 0) return true;
          return Complete(i, now);
        }
        case Phase::kChunkSize: {
          const size_t end = in.find("\r\n");
          if (end == std::string_view::npos) return true;
          c.remaining = std::strtoll(std::string(in.substr(0, end)).c_str(), nullptr, 16);
          c.parsed += end + 2;
          c.phase = c.remaining == 0 ? Phase::kTrailer : Phase::kChunkData;
          break;
        }
        case Phase::kChunkData: {
          if (in.empty()) return true;
          const size_t take = std::min<size_t>(in.size(), static_cast<size_t>(c.remaining));
          OnBodyBytes(c, in.substr(0, take), now);
          c.parsed += take;
          c.remaining -= static_cast<int64_t>(take);
          if (c.remaining > 0) return true;
          c.phase = Phase::kChunkCrlf;
          break;
        }
        case Phase::kChunkCrlf: {
          if (in.size() < 2) return true;
          c.parsed += 2;
          c.phase = Phase::kChunkSize;
          break;
        }
        case Phase::kTrailer: {
          const size_t end = in.find("\r\n");
          if (end == std::string_view::npos) return true;
          c.parsed += end + 2;
          if (end == 0) return Complete(i, now);
          break;
        }
      }
      if (c.parsed > 65536) {
        c.in.erase(0, c.parsed);
        c.parsed = 0;
      }
    }
  }

  void OnBodyBytes(Conn& c, std::string_view bytes, int64_t now) {
    if (!c.event_stream) {
      c.body.append(bytes);
      return;
    }
    c.sse.append(bytes);
    size_t start = 0;
    while (true) {
      const size_t end = c.sse.find("\n\n", start);
      if (end == std::string::npos) break;
      const std::string_view event(c.sse.data() + start, end - start);
      start = end + 2;
      if (!event.starts_with("data: ")) continue;
      const std::string_view data = event.substr(6);
      if (data == "[DONE]") {
        c.stream.done = true;
        continue;
      }
      const size_t content = data.find("\"content\":\"");
      if (content != std::string_view::npos && content + 11 < data.size() &&
          data[content + 11] != '"') {
        c.stream.OnContent(now, r_, c.measured);
      }
    }
    c.sse.erase(0, start);
  }

  bool Complete(int i, int64_t now) {
    Conn& c = conns_[static_cast<size_t>(i)];
    c.in.erase(0, c.parsed);
    c.parsed = 0;
    const bool leftover = !c.in.empty();
    --in_flight_;
    ++r_.completed_total;
    c.busy = false;
    bool good = true;
    if (c.status != 200) {
      good = false;
      if (c.measured) {
        r_.Error(&r_.http_errors, "HTTP " + std::to_string(c.status) + ": " +
                                      c.body.substr(0, 300));
      }
    } else if (o_.stream) {
      int64_t tokens = c.stream.events;
      if (!c.event_stream || !c.stream.done) {
        good = false;
        if (c.measured) r_.Error(&r_.protocol_errors, "stream ended without data: [DONE]");
      } else if (o_.expect_tokens >= 0 && tokens != o_.expect_tokens) {
        good = false;
        if (c.measured) {
          r_.Error(&r_.protocol_errors, "stream had " + std::to_string(tokens) +
                                            " content events, expected " +
                                            std::to_string(o_.expect_tokens));
        }
      }
      if (good && c.measured) {
        r_.tokens += tokens;
        r_.ttft.Record(c.stream.first - c.due);
        if (tokens >= 2) r_.per_token.Record((c.stream.last - c.stream.first) / (tokens - 1));
      }
    } else {
      if (c.body.find("\"chat.completion\"") == std::string::npos) {
        good = false;
        if (c.measured) r_.Error(&r_.protocol_errors, "answer is not a chat.completion");
      } else if (c.measured && o_.expect_tokens >= 0) {
        const std::string needle = "\"completion_tokens\":" + std::to_string(o_.expect_tokens);
        if (c.body.find(needle) == std::string::npos) {
          good = false;
          r_.Error(&r_.protocol_errors, "usage.completion_tokens is not " +
                                            std::to_string(o_.expect_tokens) + ": " +
                                            c.body.substr(0, 300));
        }
      }
      if (good && c.measured) r_.tokens += std::max<int64_t>(o_.expect_tokens, 0);
    }
    if (good && c.measured) {
      ++r_.ok;
      r_.latency.Record(now - c.due);
    }
    if (c.close_after || leftover) {
      Reconnect(i, leftover ? "bytes after the answer" : nullptr);
      return false;
    }
    idle_.push_back(i);
    return true;
  }

  void Fail(int i, int64_t* kind, std::string_view what) {
    Conn& c = conns_[static_cast<size_t>(i)];
    if (c.busy) {
      c.busy = false;
      --in_flight_;
      ++r_.completed_total;
      if (c.measured) r_.Error(kind, what);
    }
    Reconnect(i, nullptr);
  }

  void Reconnect(int i, const char* why) {
    Conn& c = conns_[static_cast<size_t>(i)];
    if (why != nullptr) r_.Error(&r_.protocol_errors, why);
    if (c.fd >= 0) {
      epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
      c.fd = -1;
    }
    if (Connect(i)) idle_.push_back(i);
  }

  static bool HasHeader(std::string_view head, std::string_view name, std::string_view value) {
    size_t pos = 0;
    while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
      pos += 2;
      const std::string_view line = head.substr(pos, head.find("\r\n", pos) - pos);
      if (line.size() <= name.size() || line[name.size()] != ':' ||
          strncasecmp(line.data(), name.data(), name.size()) != 0) {
        continue;
      }
      std::string_view v = line.substr(name.size() + 1);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      if (v.size() >= value.size() && strncasecmp(v.data(), value.data(), value.size()) == 0) {
        return true;
      }
    }
    return false;
  }

  static int64_t HeaderNumber(std::string_view head, std::string_view name) {
    size_t pos = 0;
    while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
      pos += 2;
      const std::string_view line = head.substr(pos, head.find("\r\n", pos) - pos);
      if (line.size() > name.size() && line[name.size()] == ':' &&
          strncasecmp(line.data(), name.data(), name.size()) == 0) {
        return std::strtoll(std::string(line.substr(name.size() + 1)).c_str(), nullptr, 10);
      }
    }
    return 0;
  }

 public:
  std::function<bool(int64_t)> window_measured_;

 private:
  const Options& o_;
  Results& r_;
  std::string request_;
  int epoll_ = -1;
  std::vector<Conn> conns_;
  std::vector<int> idle_;
  std::deque<int64_t> backlog_;
  int64_t in_flight_ = 0;
};

// ---------------------------------------------------------------------------------------------
// gRPC client (callback API). Callbacks run on gRPC's threads, so results are taken under a lock.

class GrpcLoad {
 public:
  GrpcLoad(const Options& o, Results& r) : o_(o), r_(r) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
    channel_ = grpc::CreateCustomChannel(o.grpc_target, grpc::InsecureChannelCredentials(), args);
    stub_ = switchyard::v1::Switchyard::NewStub(channel_);
    request_.set_model(o.model);
    request_.set_max_tokens(o.max_tokens);
    auto* message = request_.add_messages();
    message->set_role("user");
    message->set_content(Prompt(o.prompt_bytes));
  }

  bool Run(Window& window) {
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "switchyard_load: cannot connect to gRPC %s\n", o_.grpc_target.c_str());
      return false;
    }
    window.Start(NowNs());
    const int64_t start = window.start();
    const int64_t stop_issuing = o_.requests > 0 ? INT64_MAX : window.end();
    const double interval = o_.rate > 0 ? 1e9 / o_.rate : 0;
    const int64_t cap = o_.rate > 0 ? o_.connections : o_.concurrency;
    int64_t issued = 0;
    int64_t next_due = start;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      const int64_t now = NowNs();
      window.Tick(now);
      // Open loop: every request due before the end is started, however late the loop wakes.
      const bool issuing = o_.rate > 0
                               ? next_due < stop_issuing || !backlog_.empty()
                               : now < stop_issuing && (o_.requests == 0 || issued < o_.requests);
      if (!issuing) {
        if (o_.requests > 0) window.End(now);
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::milliseconds(static_cast<int64_t>(o_.drain_timeout_s * 1000));
        if (!changed_.wait_until(lock, deadline, [&] { return in_flight_ == 0; })) {
          r_.Error(&r_.io_errors, "calls still running at the end");
          lock.unlock();
          window.End(NowNs());
          return false;
        }
        break;
      }
      if (o_.rate > 0) {
        while (next_due <= now && next_due < stop_issuing) {
          backlog_.push_back(next_due);
          ++issued;
          next_due = start + static_cast<int64_t>(static_cast<double>(issued) * interval);
        }
      } else {
        while (in_flight_ + static_cast<int64_t>(backlog_.size()) < cap &&
               (o_.requests == 0 || issued < o_.requests)) {
          backlog_.push_back(-1);  // due when sent
          ++issued;
        }
      }
      StartDue(now, lock);
      int64_t wake = now + 100'000'000;
      if (o_.rate > 0 && next_due < stop_issuing) wake = std::min(wake, next_due);
      if (now < window.begin()) wake = std::min(wake, window.begin());
      if (now < window.end()) wake = std::min(wake, window.end());
      if (o_.rate > 0) {
        // Open loop: sleep to the due time, unless a call finishing frees a slot for a backlog.
        changed_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(0, wake - now)),
                          [&] { return !backlog_.empty() && in_flight_ < cap; });
      } else {
        changed_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(0, wake - now)), [&] {
          return in_flight_ < cap || (o_.requests > 0 && issued >= o_.requests && in_flight_ == 0);
        });
      }
    }
    lock.unlock();
    window.End(NowNs());
    return true;
  }

 private:
  // Called with `lock` held; starts the calls without it, since a callback may run at once.
  void StartDue(int64_t now, std::unique_lock<std::mutex>& lock) {
    const int64_t cap = o_.rate > 0 ? o_.connections : o_.concurrency;
    std::vector<std::pair<int64_t, bool>> starts;
    while (!backlog_.empty() && in_flight_ < cap) {
      int64_t due = backlog_.front();
      backlog_.pop_front();
      if (due < 0) due = now;
      if (now - due > 1'000'000) ++r_.late_starts;
      ++in_flight_;
      ++r_.sent_total;
      r_.max_in_flight = std::max(r_.max_in_flight, in_flight_);
      starts.emplace_back(due, window_measured_(due));
    }
    if (starts.empty()) return;
    lock.unlock();
    for (const auto& [due, measured] : starts) {
      if (o_.stream) {
        new StreamCall(this, due, measured);
      } else {
        StartUnary(due, measured);
      }
    }
    lock.lock();
  }

  void StartUnary(int64_t due, bool measured) {
    struct Unary {
      grpc::ClientContext context;
      switchyard::v1::ChatResponse response;
    };
    auto* call = new Unary;
    stub_->async()->Chat(&call->context, &request_, &call->response,
                         [this, call, due, measured](grpc::Status status) {
                           const int64_t now = NowNs();
                           Finish(status, due, measured, now, [&] {
                             if (call->response.finish_reason().empty()) {
                               return std::string("answer without finish_reason");
                             }
                             if (o_.expect_tokens >= 0 &&
                                 call->response.usage().completion_tokens() != o_.expect_tokens) {
                               return "usage.completion_tokens is " +
                                      std::to_string(call->response.usage().completion_tokens());
                             }
                             return std::string();
                           }, std::max<int64_t>(o_.expect_tokens, 0), nullptr);
                           delete call;
                         });
  }

  class StreamCall : public grpc::ClientReadReactor<switchyard::v1::ChatChunk> {
   public:
    StreamCall(GrpcLoad* load, int64_t due, bool measured)
        : load_(load), due_(due), measured_(measured) {
      load->stub_->async()->StreamChat(&context_, &load->request_, this);
      StartRead(&chunk_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      const int64_t now = NowNs();
      if (!chunk_.delta().empty()) {
        if (state_.events > 0 && measured_) gaps_.push_back(now - state_.last);
        if (state_.events == 0) state_.first = now;
        state_.last = now;
        ++state_.events;
      }
      if (!chunk_.finish_reason().empty()) state_.done = true;
      if (chunk_.has_usage()) completion_tokens_ = chunk_.usage().completion_tokens();
      StartRead(&chunk_);
    }
    void OnDone(const grpc::Status& status) override {
      const int64_t now = NowNs();
      // The gateway sends tokens that arrived together, or during a write, in one message, so a
      // message may hold several: tokens are counted from the final usage, messages only without
      // one.
      const int64_t tokens = completion_tokens_ >= 0 ? completion_tokens_ : state_.events;
      load_->Finish(status, due_, measured_, now, [&] {
        if (!state_.done) return std::string("stream ended without finish_reason");
        if (state_.events == 0) return std::string("stream had no text");
        if (load_->o_.expect_tokens >= 0 && tokens != load_->o_.expect_tokens) {
          return "stream had " + std::to_string(tokens) + " tokens";
        }
        return std::string();
      }, tokens, this);
      delete this;
    }

    grpc::ClientContext context_;
    switchyard::v1::ChatChunk chunk_;
    GrpcLoad* load_;
    int64_t due_;
    bool measured_;
    StreamState state_;
    int64_t completion_tokens_ = -1;  // from the last chunk's usage
    std::vector<int64_t> gaps_;
  };

  template <typename Check>
  void Finish(const grpc::Status& status, int64_t due, bool measured, int64_t now, Check check,
              int64_t tokens, StreamCall* stream) {
    std::string problem = status.ok() ? check() : std::string();
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    ++r_.completed_total;
    if (measured) {
      if (!status.ok()) {
        r_.Error(&r_.http_errors, "gRPC " + std::to_string(status.error_code()) + ": " +
                                      status.error_message());
      } else if (!problem.empty()) {
        r_.Error(&r_.protocol_errors, problem);
      } else {
        ++r_.ok;
        r_.tokens += tokens;
        r_.latency.Record(now - due);
        if (stream != nullptr) {
          r_.ttft.Record(stream->state_.first - due);
          for (int64_t g : stream->gaps_) r_.gap.Record(g);
          if (tokens >= 2) {
            r_.per_token.Record((stream->state_.last - stream->state_.first) / (tokens - 1));
          }
        }
      }
    }
    changed_.notify_all();
  }

 public:
  std::function<bool(int64_t)> window_measured_;

 private:
  const Options& o_;
  Results& r_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<switchyard::v1::Switchyard::Stub> stub_;
  switchyard::v1::ChatRequest request_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<int64_t> backlog_;
  int64_t in_flight_ = 0;
};

// ---------------------------------------------------------------------------------------------

std::string Micros(int64_t nanos) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", static_cast<double>(nanos) / 1e3);
  return text;
}

std::string HistogramJson(const Histogram& h) {
  return "{\"count\":" + std::to_string(h.count()) + ",\"mean_us\":" +
         Micros(static_cast<int64_t>(h.mean())) + ",\"p50_us\":" + Micros(h.Percentile(0.5)) +
         ",\"p90_us\":" + Micros(h.Percentile(0.9)) + ",\"p99_us\":" +
         Micros(h.Percentile(0.99)) + ",\"p999_us\":" + Micros(h.Percentile(0.999)) +
         ",\"max_us\":" + Micros(h.max()) + "}";
}

std::string Escape(std::string_view text) {
  std::string out;
  for (char ch : text) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out += ' ';
    } else {
      out += ch;
    }
  }
  return out;
}

void Report(const Options& o, const Results& r, const Window& w) {
  const double wall = std::max(w.wall_s(), 1e-9);
  const std::vector<double> cpu = w.watched_cpu_s();
  const std::vector<int64_t> rss = w.watched_rss();
  if (o.json) {
    std::string out = "{\"label\":\"" + Escape(o.label) + "\",\"protocol\":\"" +
                      (o.grpc_target.empty() ? "http" : "grpc") + "\",\"stream\":" +
                      (o.stream ? "true" : "false") + ",\"mode\":\"" +
                      (o.rate > 0 ? "open" : "closed") + "\",\"concurrency\":" +
                      std::to_string(o.concurrency) + ",\"rate\":" + std::to_string(o.rate) +
                      ",\"ok\":" + std::to_string(r.ok) + ",\"errors\":" +
                      std::to_string(r.errors) + ",\"http_errors\":" +
                      std::to_string(r.http_errors) + ",\"io_errors\":" +
                      std::to_string(r.io_errors) + ",\"protocol_errors\":" +
                      std::to_string(r.protocol_errors) + ",\"first_error\":\"" +
                      Escape(r.first_error) + "\",\"sent_total\":" +
                      std::to_string(r.sent_total) + ",\"completed_total\":" +
                      std::to_string(r.completed_total) + ",\"tokens\":" +
                      std::to_string(r.tokens) + ",\"max_in_flight\":" +
                      std::to_string(r.max_in_flight) + ",\"late_starts\":" +
                      std::to_string(r.late_starts) + ",\"wall_s\":" + std::to_string(wall) +
                      ",\"rps\":" + std::to_string(static_cast<double>(r.ok) / wall) +
                      ",\"over_39ms\":" + std::to_string(r.latency.CountAbove(39'000'000)) +
                      ",\"latency\":" + HistogramJson(r.latency) +
                      ",\"ttft\":" + HistogramJson(r.ttft) + ",\"gap\":" + HistogramJson(r.gap) +
                      ",\"per_token\":" + HistogramJson(r.per_token) +
                      ",\"cpu_s\":{\"load\":" + std::to_string(w.self_cpu_s());
    for (size_t i = 0; i < o.watches.size(); ++i) {
      out += ",\"" + Escape(o.watches[i].name) + "\":" + std::to_string(cpu[i]);
    }
    auto per_process = [&](const char* key, const std::vector<int64_t>& values) {
      out += std::string("},\"") + key + "\":{";
      for (size_t i = 0; i < o.watches.size(); ++i) {
        if (i > 0) out += ",";
        out += "\"" + Escape(o.watches[i].name) + "\":" + std::to_string(values[i]);
      }
    };
    per_process("rss_bytes", rss);
    per_process("rss_peak_bytes", w.watched_rss_peak());
    out += "}}";
    std::printf("%s\n", out.c_str());
    return;
  }
  auto line = [](const char* name, const Histogram& h) {
    std::printf("%-10s n=%-8lld p50=%8s us  p90=%8s us  p99=%8s us  p99.9=%8s us  max=%8s us\n",
                name, static_cast<long long>(h.count()), Micros(h.Percentile(0.5)).c_str(),
                Micros(h.Percentile(0.9)).c_str(), Micros(h.Percentile(0.99)).c_str(),
                Micros(h.Percentile(0.999)).c_str(), Micros(h.max()).c_str());
  };
  std::printf("%s%s %s, %s: %lld ok, %lld errors in %.2f s = %.0f req/s\n",
              o.label.empty() ? "" : (o.label + ": ").c_str(),
              o.grpc_target.empty() ? "http" : "grpc", o.stream ? "stream" : "unary",
              o.rate > 0 ? ("open loop " + std::to_string(static_cast<int64_t>(o.rate)) + "/s").c_str()
                         : ("closed loop x" + std::to_string(o.concurrency)).c_str(),
              static_cast<long long>(r.ok), static_cast<long long>(r.errors), wall,
              static_cast<double>(r.ok) / wall);
  line("latency", r.latency);
  if (o.stream) {
    line("ttft", r.ttft);
    line("gap", r.gap);
    line("per-token", r.per_token);
  }
  const std::vector<int64_t> peak = w.watched_rss_peak();
  std::printf("cpu: load %.2f s", w.self_cpu_s());
  for (size_t i = 0; i < o.watches.size(); ++i) {
    std::printf(", %s %.2f s (rss %.1f MiB, peak %.1f MiB)", o.watches[i].name.c_str(), cpu[i],
                static_cast<double>(rss[i]) / (1 << 20), static_cast<double>(peak[i]) / (1 << 20));
  }
  std::printf("\n");
  if (!r.first_error.empty()) std::printf("first error: %s\n", r.first_error.c_str());
}

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr,
               "usage: switchyard_load (--http http://HOST:PORT[/PATH] | --grpc HOST:PORT)\n"
               "         [--concurrency N | --rate R [--connections N]] [--duration S]\n"
               "         [--warmup S] [--requests N] [--stream] [--prompt-bytes N]\n"
               "         [--max-tokens N] [--model NAME] [--expect-tokens N]\n"
               "         [--watch NAME=PID]... [--label TEXT] [--json]\n"
               "%s\n",
               problem.c_str());
  std::exit(2);
}

double Number(const std::string& flag, const std::string& value, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  const double parsed = std::strtod(value.c_str(), &end);
  if (value.empty() || end == value.c_str() || *end != '\0' || errno != 0 || parsed < lo ||
      parsed > hi) {
    Usage(flag + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
          "], got '" + value + "'");
  }
  return parsed;
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    const bool boolean = flag == "--stream" || flag == "--json";
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (!boolean) {
      if (i + 1 >= argc) Usage(flag + " needs a value");
      value = argv[++i];
    }
    if (flag == "--http") {
      std::string_view url = value;
      if (!url.starts_with("http://")) Usage("--http must start with http://");
      url.remove_prefix(7);
      const size_t slash = url.find('/');
      if (slash != std::string_view::npos) {
        o.http_path = std::string(url.substr(slash));
        url = url.substr(0, slash);
      }
      const size_t colon = url.rfind(':');
      if (colon == std::string_view::npos) Usage("--http needs a port: http://HOST:PORT");
      o.http_host = std::string(url.substr(0, colon));
      o.http_port = static_cast<int>(Number("--http port", std::string(url.substr(colon + 1)), 1, 65535));
    } else if (flag == "--grpc") {
      o.grpc_target = value;
    } else if (flag == "--concurrency") {
      o.concurrency = static_cast<int>(Number(flag, value, 1, 100000));
    } else if (flag == "--rate") {
      o.rate = Number(flag, value, 0.001, 1e7);
    } else if (flag == "--connections") {
      o.connections = static_cast<int>(Number(flag, value, 1, 100000));
    } else if (flag == "--duration") {
      o.duration_s = Number(flag, value, 0.001, 86400);
    } else if (flag == "--warmup") {
      o.warmup_s = Number(flag, value, 0, 86400);
    } else if (flag == "--requests") {
      o.requests = static_cast<int64_t>(Number(flag, value, 1, 1e12));
    } else if (flag == "--stream") {
      o.stream = true;
    } else if (flag == "--json") {
      o.json = true;
    } else if (flag == "--prompt-bytes") {
      o.prompt_bytes = static_cast<int>(Number(flag, value, 1, 64 << 20));
    } else if (flag == "--max-tokens") {
      o.max_tokens = static_cast<int>(Number(flag, value, 1, 1 << 30));
    } else if (flag == "--model") {
      if (value.empty() || value.find_first_of("\"\\") != std::string::npos) {
        Usage("--model must be a plain name");
      }
      o.model = value;
    } else if (flag == "--expect-tokens") {
      o.expect_tokens = static_cast<int64_t>(Number(flag, value, 0, 1e12));
    } else if (flag == "--watch") {
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) Usage("--watch takes NAME=PID");
      o.watches.push_back(
          Watch{value.substr(0, eq),
                static_cast<int>(Number("--watch pid", value.substr(eq + 1), 1, 1 << 30))});
    } else if (flag == "--label") {
      o.label = value;
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (o.http_host.empty() == o.grpc_target.empty()) Usage("give exactly one of --http and --grpc");
  if (o.requests > 0 && o.rate > 0) Usage("--requests runs closed loop: drop --rate");
  return o;
}

}  // namespace
}  // namespace switchyard::load

int main(int argc, char** argv) {
  using namespace switchyard::load;
  signal(SIGPIPE, SIG_IGN);
  const Options options = Parse(argc, argv);
  Results results;
  Window window(options);
  auto measured = [&window](int64_t due) { return window.Measured(due); };
  bool ran = false;
  if (!options.http_host.empty()) {
    HttpLoad load(options, results);
    load.window_measured_ = measured;
    ran = load.Run(window);
  } else {
    GrpcLoad load(options, results);
    load.window_measured_ = measured;
    ran = load.Run(window);
  }
  if (!ran) return 1;
  Report(options, results, window);
  return results.errors == 0 && results.ok > 0 ? 0 : 1;
}
