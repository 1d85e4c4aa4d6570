// switchyard_load_mock: a lean OpenAI-compatible upstream for load tests. Unlike
// tests/mocks/mock_upstream (a thread per connection, every request recorded, JSON built per
// token), it runs one epoll loop per thread over pre-rendered responses, so it costs a few
// microseconds per request and holds thousands of paced streams in one thread.
//
//   switchyard_load_mock [--port N] [--threads N] [--tokens N] [--delay-us N]
//                        [--token-delay-us N]
//
// POST /v1/chat/completions answers after --delay-us with a completion of --tokens tokens
// ("tok tok tok..."): one chat.completion JSON, or with "stream": true an SSE stream of
// chat.completion.chunk events (one token every --token-delay-us, on an absolute schedule so
// pacing does not drift), a usage chunk when stream_options.include_usage is true, and
// "data: [DONE]". GET /stats answers {"requests":N,"streams":N,"tokens":N,"aborted":N} counted
// since start. HTTP/1.1 keep-alive and pipelining; request bodies need Content-Length.
// Prints "load mock listening on 127.0.0.1:PORT" on stderr; runs until SIGINT or SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tests/load/parse_int.h"

namespace {

using ::switchyard::load::ParseInt;

struct Options {
  int port = 0;
  int threads = 1;
  int tokens = 16;
  int64_t delay_us = 0;
  int64_t token_delay_us = 0;
};

std::atomic<int64_t> g_requests{0};
std::atomic<int64_t> g_streams{0};
std::atomic<int64_t> g_tokens{0};
std::atomic<int64_t> g_aborted{0};
std::atomic<bool> g_stop{false};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Chunk(std::string_view data) {
  char size[24];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string out = size;
  out.append(data);
  out += "\r\n";
  return out;
}

std::string Event(std::string_view delta, std::string_view finish) {
  std::string json =
      R"({"id":"chatcmpl-load","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"load-mock","choices":[{"index":0,"delta":)";
  json.append(delta);
  json += R"(,"finish_reason":)";
  json.append(finish);
  json += "}]}";
  return Chunk("data: " + json + "\n\n");
}

// Every byte the mock ever sends, rendered once.
struct Rendered {
  std::string json_response;
  std::string stream_head;  // status line, headers and the role chunk
  std::string first_token;
  std::string next_token;
  std::string tail;        // finish chunk, [DONE], last chunk
  std::string usage_tail;  // finish chunk, usage chunk, [DONE], last chunk

  explicit Rendered(const Options& o) {
    std::string text;
    for (int i = 0; i < o.tokens; ++i) text += i == 0 ? "tok" : " tok";
    const std::string usage = R"({"prompt_tokens":7,"completion_tokens":)" +
                              std::to_string(o.tokens) +
                              R"(,"total_tokens":)" + std::to_string(7 + o.tokens) + "}";
    const std::string body =
        R"({"id":"chatcmpl-load","object":"chat.completion","created":1700000000,)"
        R"("model":"load-mock","choices":[{"index":0,"message":{"role":"assistant","content":")" +
        text + R"("},"finish_reason":"stop"}],"usage":)" + usage + "}";
    json_response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
    stream_head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "Transfer-Encoding: chunked\r\n\r\n" +
        Event(R"({"role":"assistant","content":""})", "null");
    first_token = Event(R"({"content":"tok"})", "null");
    next_token = Event(R"({"content":" tok"})", "null");
    const std::string finish = Event("{}", R"("stop")");
    const std::string done = Chunk("data: [DONE]\n\n") + "0\r\n\r\n";
    tail = finish + done;
    usage_tail = finish +
                 Chunk(R"(data: {"id":"chatcmpl-load","object":"chat.completion.chunk",)"
                       R"("created":1700000000,"model":"load-mock","choices":[],"usage":)" +
                       usage + "}\n\n") +
                 done;
  }
};

// True when `body` has `"key"` followed by optional spaces, ':', optional spaces and `true`.
bool JsonFlagTrue(std::string_view body, std::string_view key) {
  size_t at = 0;
  while ((at = body.find(key, at)) != std::string_view::npos) {
    size_t i = at + key.size();
    at = i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != ':') continue;
    ++i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (body.substr(i, 4) == "true") return true;
  }
  return false;
}

bool HeaderIs(std::string_view headers, std::string_view name, std::string_view value) {
  // Case-insensitive search of "\r\nName: value" among the header lines.
  size_t pos = 0;
  while ((pos = headers.find("\r\n", pos)) != std::string_view::npos) {
    pos += 2;
    std::string_view line = headers.substr(pos, headers.find("\r\n", pos) - pos);
    if (line.size() <= name.size() || line[name.size()] != ':') continue;
    if (strncasecmp(line.data(), name.data(), name.size()) != 0) continue;
    std::string_view v = line.substr(name.size() + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    if (value.empty() || (v.size() >= value.size() &&
                          strncasecmp(v.data(), value.data(), value.size()) == 0)) {
      return true;
    }
  }
  return false;
}

int64_t ContentLength(std::string_view headers) {
  size_t pos = 0;
  constexpr std::string_view kName = "content-length:";
  while ((pos = headers.find("\r\n", pos)) != std::string_view::npos) {
    pos += 2;
    if (headers.size() - pos > kName.size() &&
        strncasecmp(headers.data() + pos, kName.data(), kName.size()) == 0) {
      return std::strtoll(headers.data() + pos + kName.size(), nullptr, 10);
    }
  }
  return 0;
}

class Loop {
 public:
  Loop(const Options& options, const Rendered& rendered, int listen_fd)
      : options_(options), rendered_(rendered), listen_fd_(listen_fd) {}

  void Run(int wake_fd) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    Watch(listen_fd_, EPOLLIN);
    Watch(wake_fd, EPOLLIN);
    std::vector<epoll_event> events(512);
    while (!g_stop.load(std::memory_order_relaxed)) {
      int timeout_ms = -1;
      if (!timers_.empty()) {
        const int64_t wait = timers_.top().deadline - NowNs();
        timeout_ms = wait <= 0 ? 0 : static_cast<int>((wait + 999'999) / 1'000'000);
      }
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), timeout_ms);
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<size_t>(i)].data.fd;
        if (fd == listen_fd_) {
          Accept();
        } else if (fd != wake_fd) {
          OnEvent(fd, events[static_cast<size_t>(i)].events);
        }
      }
      FireTimers();
    }
    for (auto& [fd, conn] : conns_) ::close(fd);
    ::close(epoll_);
  }

 private:
  enum class State { kReading, kDelaying, kStreaming };
  struct Conn {
    std::string in;
    std::string out;
    State state = State::kReading;
    uint64_t generation = 0;
    bool stream = false;
    bool include_usage = false;
    bool close_after = false;
    int sent_tokens = 0;
    int64_t stream_start = 0;
    bool want_write = false;
  };
  struct Timer {
    int64_t deadline;
    int fd;
    uint64_t generation;
    bool operator>(const Timer& other) const { return deadline > other.deadline; }
  };

  void Watch(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Accept() {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      Conn& conn = conns_[fd];
      conn = Conn{};
      conn.generation = ++generations_;
      Watch(fd, EPOLLIN | EPOLLRDHUP);
    }
  }

  void OnEvent(int fd, uint32_t events) {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    Conn& conn = it->second;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      char buffer[16384];
      while (true) {
        const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
        if (n > 0) {
          conn.in.append(buffer, static_cast<size_t>(n));
          continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          Close(fd, conn.state != State::kReading);
          return;
        }
        if (errno != EINTR) break;
      }
    }
    if ((events & EPOLLOUT) && !Flush(fd, conn)) return;
    Process(fd, conn);
  }

  // Parses and starts as many requests as the connection's state allows.
  void Process(int fd, Conn& conn) {
    while (conn.state == State::kReading && conn.out.empty() && !conn.close_after) {
      const size_t head_end = conn.in.find("\r\n\r\n");
      if (head_end == std::string::npos) {
        if (conn.in.size() > 65536) Fail(fd, conn, 431, "header too large");
        return;
      }
      const std::string_view head(conn.in.data(), head_end + 2);
      if (HeaderIs(head, "transfer-encoding", "chunked")) {
        Fail(fd, conn, 411, "send the body with Content-Length");
        return;
      }
      const int64_t length = ContentLength(head);
      if (length < 0 || length > (64 << 20)) {
        Fail(fd, conn, 413, "bad Content-Length");
        return;
      }
      const size_t total = head_end + 4 + static_cast<size_t>(length);
      if (conn.in.size() < total) return;
      const std::string_view line = head.substr(0, head.find("\r\n"));
      const std::string_view body(conn.in.data() + head_end + 4, static_cast<size_t>(length));
      conn.close_after = HeaderIs(head, "connection", "close");
      if (line.starts_with("POST /v1/chat/completions ")) {
        g_requests.fetch_add(1, std::memory_order_relaxed);
        conn.stream = JsonFlagTrue(body, "\"stream\"");
        conn.include_usage = conn.stream && JsonFlagTrue(body, "\"include_usage\"");
        conn.in.erase(0, total);
        if (options_.delay_us > 0) {
          conn.state = State::kDelaying;
          AddTimer(fd, conn, NowNs() + options_.delay_us * 1000);
          return;
        }
        if (!Answer(fd, conn)) return;
      } else if (line.starts_with("GET /stats ")) {
        conn.in.erase(0, total);
        const std::string stats = "{\"requests\":" + std::to_string(g_requests.load()) +
                                  ",\"streams\":" + std::to_string(g_streams.load()) +
                                  ",\"tokens\":" + std::to_string(g_tokens.load()) +
                                  ",\"aborted\":" + std::to_string(g_aborted.load()) + "}";
        conn.out += "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(stats.size()) + "\r\n\r\n" + stats;
        if (!Flush(fd, conn)) return;
      } else {
        conn.in.erase(0, total);
        Fail(fd, conn, 404, "no route");
        return;
      }
    }
    if (conn.close_after && conn.out.empty() && conn.state == State::kReading) Close(fd, false);
  }

  // Starts the answer to the request just read; false when the connection closed.
  bool Answer(int fd, Conn& conn) {
    if (!conn.stream) {
      conn.out += rendered_.json_response;
      g_tokens.fetch_add(options_.tokens, std::memory_order_relaxed);
      conn.state = State::kReading;
      return Flush(fd, conn);
    }
    g_streams.fetch_add(1, std::memory_order_relaxed);
    conn.out += rendered_.stream_head;
    conn.sent_tokens = 0;
    conn.stream_start = NowNs();
    conn.state = State::kStreaming;
    if (options_.token_delay_us > 0) {
      AddTimer(fd, conn, conn.stream_start + options_.token_delay_us * 1000);
      return Flush(fd, conn);
    }
    while (conn.sent_tokens < options_.tokens) AppendToken(conn);
    return FinishStream(fd, conn);
  }

  void AppendToken(Conn& conn) {
    conn.out += conn.sent_tokens == 0 ? rendered_.first_token : rendered_.next_token;
    ++conn.sent_tokens;
    g_tokens.fetch_add(1, std::memory_order_relaxed);
  }

  bool FinishStream(int fd, Conn& conn) {
    conn.out += conn.include_usage ? rendered_.usage_tail : rendered_.tail;
    conn.state = State::kReading;
    return Flush(fd, conn);
  }

  void OnTimer(int fd, Conn& conn) {
    if (conn.state == State::kDelaying) {
      if (Answer(fd, conn)) Process(fd, conn);
      return;
    }
    if (conn.state != State::kStreaming) return;
    AppendToken(conn);
    if (conn.sent_tokens < options_.tokens) {
      AddTimer(fd, conn,
               conn.stream_start + (conn.sent_tokens + 1) * options_.token_delay_us * 1000);
      Flush(fd, conn);
      return;
    }
    if (FinishStream(fd, conn)) Process(fd, conn);
  }

  void AddTimer(int fd, const Conn& conn, int64_t deadline) {
    timers_.push(Timer{deadline, fd, conn.generation});
  }

  void FireTimers() {
    const int64_t now = NowNs();
    while (!timers_.empty() && timers_.top().deadline <= now) {
      const Timer timer = timers_.top();
      timers_.pop();
      auto it = conns_.find(timer.fd);
      if (it == conns_.end() || it->second.generation != timer.generation) continue;
      OnTimer(timer.fd, it->second);
    }
  }

  void Fail(int fd, Conn& conn, int status, std::string_view message) {
    const std::string body = std::string(R"({"error":{"message":")") + std::string(message) +
                             R"(","type":"invalid_request_error"}})";
    conn.out += "HTTP/1.1 " + std::to_string(status) +
                " Error\r\nContent-Type: application/json\r\nConnection: close\r\n"
                "Content-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body;
    conn.close_after = true;
    conn.in.clear();
    Flush(fd, conn);
  }

  // Writes what it can; false when the connection was closed.
  bool Flush(int fd, Conn& conn) {
    while (!conn.out.empty()) {
      const ssize_t n = ::send(fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        conn.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      Close(fd, true);
      return false;
    }
    const bool want_write = !conn.out.empty();
    if (want_write != conn.want_write) {
      conn.want_write = want_write;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP | (want_write ? EPOLLOUT : 0u);
      ev.data.fd = fd;
      epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev);
    }
    if (!want_write && conn.close_after && conn.state == State::kReading) {
      Close(fd, false);
      return false;
    }
    return true;
  }

  void Close(int fd, bool aborted) {
    if (aborted) g_aborted.fetch_add(1, std::memory_order_relaxed);
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns_.erase(fd);
  }

  const Options& options_;
  const Rendered& rendered_;
  const int listen_fd_;
  int epoll_ = -1;
  uint64_t generations_ = 0;
  std::unordered_map<int, Conn> conns_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
};

int Listen(int port, bool reuse_port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd, 4096) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::string value;
    if (const size_t eq = flag.find('='); eq != std::string_view::npos) {
      value = std::string(flag.substr(eq + 1));
      flag = flag.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    }
    int64_t number = 0;
    const bool ok = ParseInt(value.c_str(), 1'000'000'000'000, &number);
    if (ok && flag == "--port" && number <= 65535) {
      options.port = static_cast<int>(number);
    } else if (ok && flag == "--threads" && number >= 1 && number <= 64) {
      options.threads = static_cast<int>(number);
    } else if (ok && flag == "--tokens" && number >= 1 && number <= 1'000'000) {
      options.tokens = static_cast<int>(number);
    } else if (ok && flag == "--delay-us") {
      options.delay_us = number;
    } else if (ok && flag == "--token-delay-us") {
      options.token_delay_us = number;
    } else {
      std::fprintf(stderr,
                   "usage: switchyard_load_mock [--port N] [--threads N] [--tokens N] "
                   "[--delay-us N] [--token-delay-us N]\nbad argument: %s %s\n",
                   std::string(flag).c_str(), value.c_str());
      return 2;
    }
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // One listening socket per thread on the same port (SO_REUSEPORT), so the kernel spreads
  // connections and no thread hands work to another.
  std::vector<int> listeners;
  int port = options.port;
  for (int t = 0; t < options.threads; ++t) {
    const int fd = Listen(port, options.threads > 1);
    if (fd < 0) {
      std::fprintf(stderr, "switchyard_load_mock: cannot listen on 127.0.0.1:%d: %s\n", port,
                   std::strerror(errno));
      return 1;
    }
    if (port == 0) {
      sockaddr_in bound{};
      socklen_t size = sizeof(bound);
      getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size);
      port = ntohs(bound.sin_port);
    }
    listeners.push_back(fd);
  }

  const Rendered rendered(options);
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::vector<std::thread> threads;
  for (int fd : listeners) {
    threads.emplace_back([&options, &rendered, fd, wake_fd] {
      Loop loop(options, rendered, fd);
      loop.Run(wake_fd);
    });
  }
  std::fprintf(stderr, "load mock listening on 127.0.0.1:%d\n", port);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  g_stop.store(true);
  const uint64_t one = 1;
  if (::write(wake_fd, &one, sizeof(one)) < 0) return 1;
  for (std::thread& thread : threads) thread.join();
  return 0;
}
