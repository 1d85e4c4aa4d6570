#include "gateway/cli.h"

#include <signal.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gateway/allocator.h"
#include "gateway/audit_command.h"
#include "gateway/auth.h"
#include "gateway/backend_factory.h"
#include "gateway/classify_command.h"
#include "gateway/config.h"
#include "gateway/config_watcher.h"
#include "gateway/log.h"
#include "gateway/model_commands.h"
#include "gateway/replay_command.h"
#include "gateway/server.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "switchyard/v1/switchyard.grpc.pb.h"

namespace switchyard::gateway {
namespace {

constexpr char kUsage[] = R"(switchyard: one endpoint for local and frontier LLMs, routed by policy

Usage:
  switchyard serve [--config FILE] [--http-port N] [--grpc-port N]
      Run the gateway. Without --config it runs the embedded default (the local
      llama.cpp engine on stories260K.gguf, default policy, no API keys). Port 0
      picks a free port; the first log line names the bound addresses.
      SIGINT/SIGTERM drain in-flight requests and exit 0. SIGHUP, or a change
      to the config file, reloads it (an invalid file is refused and logged).
  switchyard check --config FILE [--syntax-only]
      Validate a config file and its policy; errors print as file:line:column.
      Then check this machine: local models found, api_key_env variables set,
      ca_bundle files readable, log and state folders writable (--syntax-only
      skips this).
  switchyard chat [--grpc HOST:PORT] [--model NAME] [--max-tokens N]
                  [--temperature T] [--stream] [--explain] TEXT
      Send one chat message over gRPC (default 127.0.0.1:50051) and print the
      answer and the routing decision.
  switchyard models [--config FILE]
      List the GGUF files on the model search path: size, architecture,
      quantisation, parameter count and context length.
  switchyard pull URL --sha256 HEX [--dir DIR] [--config FILE]
      Download a GGUF file into the model folder (--dir, else the first of
      models.dirs, $SWITCHYARD_MODELS, ./models). An interrupted download resumes
      from its .part file; the SHA-256 and the GGUF header are checked before the
      file gets its final name.
  switchyard classify [--config FILE]
      Decide requests offline: JSON Lines on stdin ({"messages":[...]} or
      {"text":"..."}, optional "model" and "metadata"), one decision per line
      on stdout (target, rule, policy_version, sensitivity level and findings).
  switchyard audit --log FILE [--from TIME] [--to TIME] [--json]
      Verify a decision log's hash chain (exit 1 naming the first bad line and
      why: altered, deleted, out of order), then report per sensitivity level
      and finding type where requests went (locality, target) and spend per
      tenant. TIME is RFC 3339 (2026-01-02T15:04:05Z); --from inclusive, --to
      exclusive.
  switchyard replay --config CANDIDATE --log FILE [--json] [--examples N]
      Re-decide the requests of a decision log under a candidate config without
      sending anything; report how the route split (locality, target),
      sensitivity outcomes (level x locality) and estimated spend would change,
      with examples of changed decisions. Records without prompt text are
      re-decided from their recorded features; the report names the rules that
      could not be re-evaluated.
  switchyard hash-key
      Read an API key on stdin and print its SHA-256, for the sha256 field of
      an auth.keys entry (the key itself is never stored in the config).
  switchyard --version | --help

Models are searched in the config's models.dirs, then in $SWITCHYARD_MODELS
(colon-separated folders).
)";

struct Args {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;  // --name value
  std::vector<std::string> flags;                            // --name
};

// Parses "--name value" options (those in `with_value`) and bare flags; anything else is an error.
std::optional<Args> ParseArgs(int argc, char** argv, int start,
                              const std::vector<std::string>& with_value,
                              const std::vector<std::string>& flags, std::string& error) {
  Args args;
  for (int i = start; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() > 2 && arg.starts_with("--")) {
      std::string name = arg.substr(2);
      std::optional<std::string> inline_value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      if (std::find(with_value.begin(), with_value.end(), name) != with_value.end()) {
        if (!inline_value) {
          if (i + 1 >= argc) {
            error = absl::StrCat("option --", name, " needs a value");
            return std::nullopt;
          }
          inline_value = argv[++i];
        }
        args.options.emplace_back(name, *inline_value);
        continue;
      }
      if (std::find(flags.begin(), flags.end(), name) != flags.end() && !inline_value) {
        args.flags.push_back(name);
        continue;
      }
      error = absl::StrCat("unknown option --", name);
      return std::nullopt;
    }
    args.positional.push_back(arg);
  }
  return args;
}

std::optional<std::string> Option(const Args& args, std::string_view name) {
  std::optional<std::string> value;
  for (const auto& [key, v] : args.options) {
    if (key == name) value = v;
  }
  return value;
}

bool Flag(const Args& args, std::string_view name) {
  return std::find(args.flags.begin(), args.flags.end(), name) != args.flags.end();
}

int UsageError(const std::string& message) {
  std::cerr << "switchyard: " << message << "\nRun 'switchyard --help' for usage.\n";
  return 2;
}

std::optional<uint16_t> ParsePort(const std::string& text) {
  uint32_t port = 0;
  if (!absl::SimpleAtoi(text, &port) || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

int Serve(int argc, char** argv) {
  std::string error;
  std::optional<Args> args =
      ParseArgs(argc, argv, 2, {"config", "http-port", "grpc-port"}, {}, error);
  if (!args) return UsageError(error);
  if (!args->positional.empty()) return UsageError("serve takes no positional arguments");

  std::optional<std::string> config_path = Option(*args, "config");
  absl::StatusOr<Config> config = config_path ? LoadConfigFile(*config_path) : DefaultConfig();
  if (!config.ok()) {
    std::cerr << "switchyard: " << config.status().message() << "\n";
    return 1;
  }
  for (const char* name : {"http-port", "grpc-port"}) {
    if (std::optional<std::string> value = Option(*args, name)) {
      std::optional<uint16_t> port = ParsePort(*value);
      if (!port) return UsageError(absl::StrCat("--", name, " must be a port from 0 to 65535"));
      (std::string_view(name) == "http-port" ? config->http : config->grpc).port = *port;
    }
  }

  // Signals are taken synchronously by this thread only: block them before any thread starts
  // so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Debian's Abseil is built with Mutex deadlock detection on, which takes a process-wide lock
  // and updates a lock graph on every Mutex::Lock: a debugging aid the tests keep and a serving
  // process should not pay for on every request.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(config));
  if (!server.ok()) {
    std::cerr << "switchyard: " << server.status().message() << "\n";
    return 1;
  }
  // Loading the model and building the policies freed more than serving will reuse.
  ReleaseFreeMemory();
  Log(LogLevel::kInfo, (*server)->ListeningLine());
  // Reload on SIGHUP and when the file changes.
  // After a reload the watcher follows the files the new config names.
  auto reload = [&server, &config_path](ConfigWatcher& watcher) {
    if (!(*server)->ReloadFromFile(*config_path).ok()) return;
    const std::shared_ptr<const Runtime> runtime = (*server)->gateway().runtime();
    watcher.Watch(runtime->config.sources, runtime->config.version);
  };
  std::unique_ptr<ConfigWatcher> watcher;
  if (config_path) {
    const std::shared_ptr<const Runtime> runtime = (*server)->gateway().runtime();
    watcher = std::make_unique<ConfigWatcher>(*config_path, runtime->config.sources,
                                              runtime->config.version,
                                              std::chrono::milliseconds(1000), reload);
  }
  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    if (config_path) {
      reload(*watcher);
    } else {
      Log(LogLevel::kWarning, "SIGHUP ignored: the embedded default config has no file to reload");
    }
  }
  watcher.reset();
  Log(LogLevel::kInfo, "received ", signal_number == SIGINT ? "SIGINT" : "SIGTERM",
      ", draining in-flight requests");
  (*server)->Shutdown();
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

int Check(int argc, char** argv) {
  std::string error;
  std::optional<Args> args = ParseArgs(argc, argv, 2, {"config"}, {"syntax-only"}, error);
  if (!args) return UsageError(error);
  std::optional<std::string> path = Option(*args, "config");
  if (!path && args->positional.size() == 1) path = args->positional[0];
  if (!path) return UsageError("check needs --config FILE");
  absl::StatusOr<Config> config = LoadConfigFile(*path);
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 1;
  }
  if (!Flag(*args, "syntax-only")) {
    const std::vector<std::string> problems = CheckEnvironment(*config);
    for (const std::string& problem : problems) std::cerr << *path << ": " << problem << "\n";
    if (!problems.empty()) return 1;
  }
  std::cout << *path << ": ok (" << config->targets.size() << " targets, policy "
            << config->version << ")\n";
  return 0;
}

int Classify(int argc, char** argv) {
  std::string error;
  std::optional<Args> args = ParseArgs(argc, argv, 2, {"config"}, {}, error);
  if (!args) return UsageError(error);
  if (!args->positional.empty()) return UsageError("classify reads JSON Lines on stdin");
  std::optional<std::string> path = Option(*args, "config");
  absl::StatusOr<Config> config = path ? LoadConfigFile(*path) : DefaultConfig();
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 1;
  }
  return RunClassify(*config, std::cin, std::cout);
}

std::optional<absl::Time> ParseRfc3339(const std::string& text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &time, &error)) return std::nullopt;
  return time;
}

int Audit(int argc, char** argv) {
  std::string error;
  std::optional<Args> args = ParseArgs(argc, argv, 2, {"log", "from", "to"}, {"json"}, error);
  if (!args) return UsageError(error);
  if (!args->positional.empty()) return UsageError("audit takes no positional arguments");
  AuditOptions options;
  std::optional<std::string> log = Option(*args, "log");
  if (!log) return UsageError("audit needs --log FILE");
  options.log_path = *log;
  for (const char* name : {"from", "to"}) {
    if (std::optional<std::string> value = Option(*args, name)) {
      std::optional<absl::Time> time = ParseRfc3339(*value);
      if (!time) {
        return UsageError(absl::StrCat("--", name, " must be an RFC 3339 time such as "
                                       "2026-01-02T15:04:05Z, not \"", *value, "\""));
      }
      (std::string_view(name) == "from" ? options.from : options.to) = time;
    }
  }
  options.json = Flag(*args, "json");
  return RunAudit(options, std::cout, std::cerr);
}

int Replay(int argc, char** argv) {
  std::string error;
  std::optional<Args> args =
      ParseArgs(argc, argv, 2, {"config", "log", "examples"}, {"json"}, error);
  if (!args) return UsageError(error);
  if (!args->positional.empty()) return UsageError("replay takes no positional arguments");
  std::optional<std::string> path = Option(*args, "config");
  std::optional<std::string> log = Option(*args, "log");
  if (!path || !log) return UsageError("replay needs --config CANDIDATE and --log FILE");
  ReplayOptions options;
  options.log_path = *log;
  options.json = Flag(*args, "json");
  if (std::optional<std::string> value = Option(*args, "examples")) {
    if (!absl::SimpleAtoi(*value, &options.examples) || options.examples < 0) {
      return UsageError("--examples must be a non-negative integer");
    }
  }
  absl::StatusOr<Config> config = LoadConfigFile(*path);
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 1;
  }
  return RunReplay(*config, options, std::cout, std::cerr);
}

int Chat(int argc, char** argv) {
  std::string error;
  std::optional<Args> args = ParseArgs(argc, argv, 2,
                                       {"grpc", "model", "max-tokens", "temperature"},
                                       {"stream", "explain"}, error);
  if (!args) return UsageError(error);
  if (args->positional.size() != 1) return UsageError("chat takes exactly one TEXT argument");
  const std::string address = Option(*args, "grpc").value_or("127.0.0.1:50051");
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::Switchyard::NewStub(channel);

  v1::ChatRequest request;
  request.set_model(Option(*args, "model").value_or("auto"));
  v1::Message* message = request.add_messages();
  message->set_role("user");
  message->set_content(args->positional[0]);
  if (std::optional<std::string> value = Option(*args, "max-tokens")) {
    int32_t max_tokens = 0;
    if (!absl::SimpleAtoi(*value, &max_tokens)) return UsageError("--max-tokens must be an integer");
    request.set_max_tokens(max_tokens);
  }
  if (std::optional<std::string> value = Option(*args, "temperature")) {
    float temperature = 0;
    if (!absl::SimpleAtof(*value, &temperature)) return UsageError("--temperature must be a number");
    request.set_temperature(temperature);
  }
  auto print_decision = [](const v1::Decision& decision) {
    std::cerr << "[target=" << decision.target() << " rule=" << decision.rule()
              << " locality=" << decision.locality()
              << " policy=" << decision.policy_version() << "]\n";
  };
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  grpc::Status status;
  if (Flag(*args, "explain")) {
    v1::ExplainResponse response;
    status = stub->Explain(&context, request, &response);
    if (status.ok()) {
      print_decision(response.decision());
      if (response.decision().denied()) std::cout << "denied: " << response.decision().reason() << "\n";
    }
  } else if (Flag(*args, "stream")) {
    auto reader = stub->StreamChat(&context, request);
    v1::ChatChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.has_decision()) print_decision(chunk.decision());
      std::cout << chunk.delta() << std::flush;
      if (!chunk.finish_reason().empty()) {
        std::cout << "\n";
        std::cerr << "[finish=" << chunk.finish_reason()
                  << " prompt_tokens=" << chunk.usage().prompt_tokens()
                  << " completion_tokens=" << chunk.usage().completion_tokens() << "]\n";
      }
    }
    status = reader->Finish();
  } else {
    v1::ChatResponse response;
    status = stub->Chat(&context, request, &response);
    if (status.ok()) {
      print_decision(response.decision());
      std::cout << response.content() << "\n";
      std::cerr << "[finish=" << response.finish_reason()
                << " prompt_tokens=" << response.usage().prompt_tokens()
                << " completion_tokens=" << response.usage().completion_tokens() << "]\n";
    }
  }
  if (!status.ok()) {
    std::cerr << "switchyard: gRPC error " << status.error_code() << ": " << status.error_message()
              << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int RunCli(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (command == "--version" || command == "version") {
    std::cout << "switchyard " << SWITCHYARD_VERSION << " (allocator: " << AllocatorName() << ")\n";
    return 0;
  }
  if (command == "serve") return Serve(argc, argv);
  if (command == "check") return Check(argc, argv);
  if (command == "chat") return Chat(argc, argv);
  if (command == "classify") return Classify(argc, argv);
  if (command == "audit") return Audit(argc, argv);
  if (command == "replay") return Replay(argc, argv);
  if (command == "models") return ModelsCommand(argc, argv);
  if (command == "pull") return PullCommand(argc, argv);
  if (command == "hash-key") {
    if (argc > 2) return UsageError("hash-key reads the key on stdin and takes no arguments");
    return HashKeyCommand(std::cin, std::cout, std::cerr);
  }
  return UsageError(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace switchyard::gateway
