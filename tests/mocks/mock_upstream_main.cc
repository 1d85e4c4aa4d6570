// Serves the mock OpenAI-compatible upstream on a fixed port, for demos and load tests:
//   mock_upstream --port 8081 --tokens 64 --delay-ms 200 --token-delay-ms 10
// Every request gets a completion of --tokens tokens after --delay-ms; streamed requests get one
// token every --token-delay-ms. Runs until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "tests/mocks/mock_upstream.h"

namespace {

bool ParseFlag(std::string_view arg, std::string_view name, long* value) {
  if (arg.substr(0, name.size()) != name || arg.size() <= name.size() || arg[name.size()] != '=') {
    return false;
  }
  std::string text(arg.substr(name.size() + 1));
  char* end = nullptr;
  *value = std::strtol(text.c_str(), &end, 10);
  return end != text.c_str() && *end == '\0' && *value >= 0;
}

}  // namespace

int main(int argc, char** argv) {
  long port = 8081, tokens = 16, delay_ms = 0, token_delay_ms = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    // Accept both "--flag=value" and "--flag value".
    if (arg.rfind("--", 0) == 0 && arg.find('=') == std::string::npos && i + 1 < argc) {
      arg += "=";
      arg += argv[++i];
    }
    if (!ParseFlag(arg, "--port", &port) && !ParseFlag(arg, "--tokens", &tokens) &&
        !ParseFlag(arg, "--delay-ms", &delay_ms) &&
        !ParseFlag(arg, "--token-delay-ms", &token_delay_ms)) {
      std::fprintf(stderr,
                   "usage: mock_upstream [--port N] [--tokens N] [--delay-ms N] "
                   "[--token-delay-ms N]\nbad argument: %s\n",
                   arg.c_str());
      return 2;
    }
  }
  if (port > 65535) {
    std::fprintf(stderr, "--port must be at most 65535\n");
    return 2;
  }

  // Block the stop signals before the server starts its threads, so they inherit the mask and
  // sigwait() below is the only receiver.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = switchyard::mocks::MockUpstream::Start(static_cast<uint16_t>(port));
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  switchyard::mocks::Behaviour behaviour;
  behaviour.tokens.clear();
  for (long i = 0; i < tokens; ++i) behaviour.tokens.push_back(i == 0 ? "tok" : " tok");
  behaviour.delay = std::chrono::milliseconds(delay_ms);
  behaviour.token_delay = std::chrono::milliseconds(token_delay_ms);
  (*server)->SetBehaviour(behaviour);
  std::printf("mock upstream listening on %s\n", (*server)->base_url().c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  return 0;
}
