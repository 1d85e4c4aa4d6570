// The gateway's configuration: one YAML file, validated whole at load time, immutable after.
//
// Every default is filled in here, so request code never re-interprets raw config. Unknown keys
// are errors, reported as "file:line:column: message".
#ifndef SWITCHYARD_GATEWAY_CONFIG_H_
#define SWITCHYARD_GATEWAY_CONFIG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "gateway/auth.h"
#include "policies/policy_set.h"

namespace switchyard::gateway {

enum class TargetKind { kLocal, kOpenAiCompatible, kAnthropic, kGemini };

std::string_view TargetKindName(TargetKind kind);

struct Price {
  double input_per_million = 0;   // USD per million prompt tokens
  double output_per_million = 0;  // USD per million completion tokens
};

struct LocalTargetConfig {
  std::string model;  // GGUF file name (searched on the model path) or a path
  int32_t threads = 2;
  int32_t context = 2048;
  int32_t slots = 4;
  int32_t max_tokens = 256;  // default when a request sets none
  bool load_on_demand = false;     // `load: on_demand`: load at the first request, not at start
  double idle_unload_seconds = 0;  // unload after this long without requests; 0 = never
  bool truncate_prompt = false;    // `context_overflow: truncate`: drop the oldest messages

  bool operator==(const LocalTargetConfig&) const = default;
};

struct RemoteTargetConfig {
  // e.g. https://api.openai.com/v1; defaults to the provider's own for anthropic and gemini
  std::string base_url;
  std::string model;        // upstream model name
  std::string api_key_env;  // name of the environment variable holding the key; "" = no key
  double connect_timeout_seconds = 10;
  double first_byte_timeout_seconds = 60;
  double idle_timeout_seconds = 60;
  double total_timeout_seconds = 600;  // non-streaming only
  std::string ca_bundle;               // "" = the system's
  int64_t max_response_bytes = 8 << 20;  // a body, or a whole stream, larger fails with 502
  // `stream:` when a request streams upstream: auto (as the client asked), always or never.
  backends::StreamUpstream stream = backends::StreamUpstream::kAuto;

  bool operator==(const RemoteTargetConfig&) const = default;
};

struct TargetConfig {
  std::string name;
  TargetKind kind = TargetKind::kLocal;
  Price price;
  LocalTargetConfig local;    // kind == kLocal
  RemoteTargetConfig remote;  // any other kind
};

struct ListenerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
};

// `decision_log:`: one JSON line per request, hash-chained (gateway/decision_log.h).
struct DecisionLogConfig {
  std::string path;              // "" = no decision log; relative paths resolve to the config's dir
  bool include_prompts = false;  // record the messages too (needed for a full `replay`)

  bool operator==(const DecisionLogConfig&) const = default;
};

struct MeteringConfig {
  std::string state_file;        // "" = spend is not kept across restarts
  std::string reference_target;  // the frontier target savings are measured against; "" = none
};

struct Config {
  std::string file;     // where it came from ("<embedded default>" for the built-in one)
  // Content hash of the file and the files it names (policy_version): ConfigVersion of theirs.
  std::string version;
  std::vector<std::string> sources;  // files read besides this one (auth.key_file)
  ListenerConfig http{"127.0.0.1", 8080};
  ListenerConfig grpc{"127.0.0.1", 50051};
  // `listeners.busy_poll_microseconds`: how long an HTTP thread keeps looking for its next event
  // before it sleeps; 0 = it sleeps at once (gateway/server.cc, RunEventLoop).
  int64_t busy_poll_microseconds = 0;
  int64_t max_body_bytes = 1 << 20;
  double drain_timeout_seconds = 30;
  // `limits.write_timeout_seconds`: how long an HTTP answer may go without a byte reaching the
  // client before the connection is closed (and its backend call cancelled); 0 = no limit.
  double write_timeout_seconds = 120;
  // `limits.max_stream_buffer_bytes`: how much of a stream may wait for a client that reads more
  // slowly than the backend writes before the stream is cancelled.
  int64_t max_stream_buffer_bytes = 4 << 20;
  uint64_t local_model_memory_bytes = 0;  // budget for loaded local model files; 0 = none
  std::vector<std::string> model_dirs;  // searched before $SWITCHYARD_MODELS
  std::vector<TargetConfig> targets;
  DecisionLogConfig decision_log;
  std::shared_ptr<const policies::PolicySet> policy;
  AuthConfig auth;  // keys, tenants and their limits
  MeteringConfig metering;
  bool metrics_per_key_labels = false;  // `metrics.per_key_labels`: a `key` label on spend

  const TargetConfig* FindTarget(std::string_view name) const;
};

// Parses and validates a config text. `file` names it in errors; relative model dirs resolve
// against `base_dir`.
absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file,
                                   std::string_view base_dir);

// Reads and parses a config file.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// The largest config or key file read; a bigger one is a mistake (a log, a model), not a config.
inline constexpr int64_t kMaxConfigSourceBytes = 16 << 20;

// Reads a config file, or a file a config names, refusing what is not a regular file or is
// larger than kMaxConfigSourceBytes.
absl::StatusOr<std::string> ReadConfigSource(const std::string& path);

// A config's version from the ContentHash of each of its files, the config file first.
std::string ConfigVersion(const std::vector<std::string>& hashes);

// The embedded default: the local engine on stories260K.gguf and the default policy.
absl::StatusOr<Config> DefaultConfig();
std::string_view DefaultConfigText();

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_CONFIG_H_
