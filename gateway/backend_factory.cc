#include "gateway/backend_factory.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "backends/local/lazy_backend.h"
#include "backends/local/model_store.h"
#include "backends/remote/anthropic_backend.h"
#include "backends/remote/curl_loop.h"
#include "backends/remote/gemini_backend.h"
#include "backends/remote/openai_backend.h"
#include "gateway/log.h"

namespace switchyard::gateway {
namespace {

absl::Duration Seconds(double seconds) {
  // 0 is "no timeout" in config; the transport takes an infinite duration for that.
  return seconds == 0 ? absl::InfiniteDuration() : absl::Seconds(seconds);
}

absl::StatusOr<std::shared_ptr<backends::Backend>> CreateLocal(
    const TargetConfig& target, const Config& config,
    std::shared_ptr<backends::MemoryBudget> budget) {
  backends::ManagedLocalOptions options;
  options.model = target.local.model;
  options.folders = ModelFolders(config.model_dirs);
  options.engine.n_threads = target.local.threads;
  options.engine.n_ctx = target.local.context;
  options.engine.n_slots = target.local.slots;
  options.engine.default_max_tokens = target.local.max_tokens;
  options.engine.truncate_prompt = target.local.truncate_prompt;
  options.load_at_start = !target.local.load_on_demand;
  options.idle_unload = std::chrono::milliseconds(
      static_cast<int64_t>(target.local.idle_unload_seconds * 1000));
  options.budget = std::move(budget);
  absl::StatusOr<std::unique_ptr<backends::ManagedLocalBackend>> backend =
      backends::ManagedLocalBackend::Create(std::move(options));
  if (!backend.ok()) return backend.status();
  if (const backends::ModelStatus status = (*backend)->status();
      status.state == backends::ModelState::kFailed) {
    // A budget refusal: the target answers 503 and /readyz stays 503, the rest serves.
    Log(LogLevel::kError, "target '", target.name, "': ", status.error);
  }
  return std::shared_ptr<backends::Backend>(*std::move(backend));
}

// The options every remote kind shares, from the target's config and the environment.
absl::Status FillRemoteOptions(const TargetConfig& target, backends::RemoteOptions& options) {
  options.name = target.name;
  options.base_url = target.remote.base_url;
  options.model = target.remote.model;
  if (!target.remote.api_key_env.empty()) {
    const char* key = std::getenv(target.remote.api_key_env.c_str());
    if (key == nullptr || *key == '\0') {
      return absl::FailedPreconditionError(absl::StrCat(
          "environment variable ", target.remote.api_key_env, " (api_key_env) is not set"));
    }
    options.api_key = key;
  }
  options.timeouts.connect = Seconds(target.remote.connect_timeout_seconds);
  options.timeouts.first_byte = Seconds(target.remote.first_byte_timeout_seconds);
  options.timeouts.idle = Seconds(target.remote.idle_timeout_seconds);
  options.timeouts.total = Seconds(target.remote.total_timeout_seconds);
  options.ca_bundle_path = target.remote.ca_bundle;
  options.max_body_bytes = static_cast<size_t>(target.remote.max_response_bytes);
  options.stream = target.remote.stream;
  return absl::OkStatus();
}

template <typename BackendT, typename OptionsT>
absl::StatusOr<std::shared_ptr<backends::Backend>> CreateRemoteAs(
    const TargetConfig& target, std::shared_ptr<backends::CurlLoop> loop) {
  OptionsT options;
  if (absl::Status filled = FillRemoteOptions(target, options); !filled.ok()) return filled;
  absl::StatusOr<std::unique_ptr<BackendT>> backend =
      BackendT::Create(std::move(options), std::move(loop));
  if (!backend.ok()) return backend.status();
  return std::shared_ptr<backends::Backend>(*std::move(backend));
}

absl::StatusOr<std::shared_ptr<backends::Backend>> CreateRemote(
    const TargetConfig& target, std::shared_ptr<backends::CurlLoop> loop) {
  switch (target.kind) {
    case TargetKind::kAnthropic:
      return CreateRemoteAs<backends::AnthropicBackend, backends::AnthropicOptions>(
          target, std::move(loop));
    case TargetKind::kGemini:
      return CreateRemoteAs<backends::GeminiBackend, backends::GeminiOptions>(target,
                                                                              std::move(loop));
    case TargetKind::kOpenAiCompatible:
    case TargetKind::kLocal:
      break;
  }
  return CreateRemoteAs<backends::OpenAiBackend, backends::OpenAiOptions>(target,
                                                                          std::move(loop));
}

}  // namespace

std::vector<std::string> ModelFolders(const std::vector<std::string>& model_dirs) {
  std::vector<std::string> folders = model_dirs;
  for (std::string& folder :
       backends::ModelSearchFolders("", std::getenv(backends::kModelsEnvVar))) {
    if (std::find(folders.begin(), folders.end(), folder) == folders.end()) {
      folders.push_back(std::move(folder));
    }
  }
  return folders;
}

std::vector<std::string> CheckEnvironment(const Config& config) {
  std::vector<std::string> problems;
  const std::vector<std::string> folders = ModelFolders(config.model_dirs);
  // Whether a file can be opened for reading, by the process as it runs now.
  auto readable = [](const std::string& path) { return ::access(path.c_str(), R_OK) == 0; };
  // Whether a file there can be created or replaced: its folder exists and is writable.
  auto writable_folder = [](const std::string& path) {
    const std::filesystem::path folder = std::filesystem::path(path).parent_path();
    return ::access(folder.empty() ? "." : folder.c_str(), W_OK | X_OK) == 0;
  };
  for (const TargetConfig& target : config.targets) {
    const std::string prefix = absl::StrCat("target '", target.name, "': ");
    if (target.kind == TargetKind::kLocal) {
      absl::StatusOr<std::string> path = backends::ResolveModelPath(target.local.model, folders);
      absl::Status header = path.ok() ? backends::CheckGgufHeader(*path) : path.status();
      if (!header.ok()) problems.push_back(absl::StrCat(prefix, header.message()));
      continue;
    }
    backends::RemoteOptions options;
    if (absl::Status filled = FillRemoteOptions(target, options); !filled.ok()) {
      problems.push_back(absl::StrCat(prefix, filled.message()));
    }
    if (!target.remote.ca_bundle.empty() && !readable(target.remote.ca_bundle)) {
      problems.push_back(absl::StrCat(prefix, "ca_bundle ", target.remote.ca_bundle,
                                      " cannot be read: ", std::strerror(errno)));
    }
  }
  if (!config.decision_log.path.empty() && !writable_folder(config.decision_log.path)) {
    problems.push_back(absl::StrCat("decision_log: cannot write ", config.decision_log.path,
                                    ": ", std::strerror(errno)));
  }
  if (!config.metering.state_file.empty() && !writable_folder(config.metering.state_file)) {
    problems.push_back(absl::StrCat("metering: cannot write ", config.metering.state_file, ": ",
                                    std::strerror(errno)));
  }
  return problems;
}

BackendFactory MakeDefaultBackendFactory() {
  // Created on first use, so a config without remote targets starts no libcurl thread.
  auto loop = std::make_shared<std::shared_ptr<backends::CurlLoop>>();
  // One budget for every local target this factory builds.
  auto budget = std::make_shared<std::shared_ptr<backends::MemoryBudget>>();
  return [loop, budget](const TargetConfig& target, const Config& config)
             -> absl::StatusOr<std::shared_ptr<backends::Backend>> {
    if (target.kind == TargetKind::kLocal) {
      if (*budget == nullptr) {
        *budget = std::make_shared<backends::MemoryBudget>(config.local_model_memory_bytes);
      }
      return CreateLocal(target, config, *budget);
    }
    if (*loop == nullptr) {
      absl::StatusOr<std::shared_ptr<backends::CurlLoop>> created = backends::CurlLoop::Create();
      if (!created.ok()) return created.status();
      *loop = *std::move(created);
    }
    return CreateRemote(target, *loop);
  };
}

}  // namespace switchyard::gateway
