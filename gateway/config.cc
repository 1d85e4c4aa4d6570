#include "gateway/config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "policies/absl_compat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "gateway/embedded_config.h"
#include "gateway/hash.h"
#include "gateway/status_macros.h"
#include "policies/yaml_util.h"

namespace switchyard::gateway {
namespace {

using policies::YamlReader;

absl::Status ParseListener(const YamlReader& yaml, const YAML::Node& listeners,
                           std::string_view key, ListenerConfig& out) {
  const YAML::Node node = listeners[std::string(key)];
  if (!node) return absl::OkStatus();
  if (!node.IsScalar()) {
    return yaml.Error(node, absl::StrCat("listener '", policies::Sv(key), "' must be \"host:port\""));
  }
  const std::string& address = node.Scalar();
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port > 65535) {
    return yaml.Error(node, absl::StrCat("listener '", policies::Sv(key), "' must be \"host:port\" with a port "
                                         "from 0 to 65535, not \"", address, "\""));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  out.host = host;
  out.port = static_cast<uint16_t>(port);
  return absl::OkStatus();
}

absl::Status ParsePrice(const YamlReader& yaml, const YAML::Node& target, Price& out) {
  const YAML::Node node = target["price"];
  if (!node) return absl::OkStatus();
  SY_RETURN_IF_ERROR(yaml.ExpectMap(node, "price", {"input_per_million", "output_per_million"}));
  SY_ASSIGN_OR_RETURN(input, yaml.Double(node, "input_per_million", 0, 1e6));
  SY_ASSIGN_OR_RETURN(output, yaml.Double(node, "output_per_million", 0, 1e6));
  out.input_per_million = input.value_or(0);
  out.output_per_million = output.value_or(0);
  return absl::OkStatus();
}

absl::Status ParseLocalTarget(const YamlReader& yaml, const YAML::Node& node,
                              TargetConfig& target) {
  SY_RETURN_IF_ERROR(yaml.ExpectMap(
      node, absl::StrCat("target '", target.name, "'"),
      {"name", "kind", "model", "threads", "context", "slots", "max_tokens", "load",
       "idle_unload_seconds", "context_overflow", "price"}));
  SY_ASSIGN_OR_RETURN(model, yaml.String(node, "model", /*required=*/true));
  SY_ASSIGN_OR_RETURN(threads, yaml.Int(node, "threads", 1, 256));
  SY_ASSIGN_OR_RETURN(context, yaml.Int(node, "context", 64, 1 << 20));
  SY_ASSIGN_OR_RETURN(slots, yaml.Int(node, "slots", 1, 256));
  SY_ASSIGN_OR_RETURN(max_tokens, yaml.Int(node, "max_tokens", 1, 1 << 20));
  SY_ASSIGN_OR_RETURN(load, yaml.String(node, "load"));
  SY_ASSIGN_OR_RETURN(idle_unload, yaml.Double(node, "idle_unload_seconds", 0, 86400 * 365));
  SY_ASSIGN_OR_RETURN(overflow, yaml.String(node, "context_overflow"));
  LocalTargetConfig& local = target.local;
  if (overflow.has_value() && *overflow != "refuse" && *overflow != "truncate") {
    return yaml.Error(node["context_overflow"],
                      absl::StrCat("'context_overflow' must be refuse or truncate, not \"",
                                   *overflow, "\""));
  }
  local.truncate_prompt = overflow.value_or("refuse") == "truncate";
  if (load.has_value() && *load != "startup" && *load != "on_demand") {
    return yaml.Error(node["load"],
                      absl::StrCat("'load' must be startup or on_demand, not \"", *load, "\""));
  }
  local.load_on_demand = load.value_or("startup") == "on_demand";
  local.idle_unload_seconds = idle_unload.value_or(0);
  local.model = *model;
  if (local.model.empty()) return yaml.Error(node["model"], "'model' must not be empty");
  local.threads = static_cast<int32_t>(threads.value_or(local.threads));
  local.context = static_cast<int32_t>(context.value_or(local.context));
  local.slots = static_cast<int32_t>(slots.value_or(local.slots));
  local.max_tokens = static_cast<int32_t>(max_tokens.value_or(local.max_tokens));
  return absl::OkStatus();
}

// `default_base_url` is the provider's public API root; empty makes base_url required.
absl::Status ParseRemoteTarget(const YamlReader& yaml, const YAML::Node& node,
                               std::string_view default_base_url, TargetConfig& target) {
  SY_RETURN_IF_ERROR(yaml.ExpectMap(node, absl::StrCat("target '", target.name, "'"),
                                    {"name", "kind", "model", "base_url", "api_key_env", "price",
                                     "timeouts", "ca_bundle", "max_response_bytes", "stream"}));
  RemoteTargetConfig& remote = target.remote;
  SY_ASSIGN_OR_RETURN(model, yaml.String(node, "model", /*required=*/true));
  SY_ASSIGN_OR_RETURN(base_url,
                      yaml.String(node, "base_url", /*required=*/default_base_url.empty()));
  SY_ASSIGN_OR_RETURN(api_key_env, yaml.String(node, "api_key_env"));
  SY_ASSIGN_OR_RETURN(ca_bundle, yaml.String(node, "ca_bundle"));
  SY_ASSIGN_OR_RETURN(max_response,
                      yaml.Int(node, "max_response_bytes", 1024, int64_t{1} << 32));
  SY_ASSIGN_OR_RETURN(stream, yaml.String(node, "stream"));
  if (stream.has_value()) {
    if (*stream == "always") {
      remote.stream = backends::StreamUpstream::kAlways;
    } else if (*stream == "never") {
      remote.stream = backends::StreamUpstream::kNever;
    } else if (*stream != "auto") {
      return yaml.Error(node["stream"], absl::StrCat("'stream' must be auto, always or never, "
                                                     "not \"", *stream, "\""));
    }
  }
  remote.model = *model;
  remote.base_url = base_url.value_or(std::string(default_base_url));
  remote.api_key_env = api_key_env.value_or("");
  remote.ca_bundle = ca_bundle.value_or("");
  remote.max_response_bytes = max_response.value_or(remote.max_response_bytes);
  if (!remote.base_url.starts_with("http://") && !remote.base_url.starts_with("https://")) {
    return yaml.Error(node["base_url"], "'base_url' must start with http:// or https://");
  }
  while (remote.base_url.ends_with('/')) remote.base_url.pop_back();
  if (const YAML::Node timeouts = node["timeouts"]) {
    SY_RETURN_IF_ERROR(yaml.ExpectMap(timeouts, "timeouts",
                                      {"connect_seconds", "first_byte_seconds", "idle_seconds",
                                       "total_seconds"}));
    struct Field {
      const char* key;
      double* out;
    };
    for (const Field& field : {Field{"connect_seconds", &remote.connect_timeout_seconds},
                               Field{"first_byte_seconds", &remote.first_byte_timeout_seconds},
                               Field{"idle_seconds", &remote.idle_timeout_seconds},
                               Field{"total_seconds", &remote.total_timeout_seconds}}) {
      SY_ASSIGN_OR_RETURN(value, yaml.Double(timeouts, field.key, 0, 86400));
      // 0 means "no timeout"; normalised here so request code never special-cases it.
      if (value.has_value()) *field.out = *value == 0 ? 0 : *value;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTargets(const YamlReader& yaml, const YAML::Node& root, Config& config) {
  const YAML::Node targets = root["targets"];
  if (!targets) return yaml.Error(root, "missing required key 'targets'");
  if (!targets.IsSequence() || targets.size() == 0) {
    return yaml.Error(targets, "'targets' must be a non-empty list");
  }
  std::set<std::string> names;
  for (const YAML::Node& node : targets) {
    if (!node.IsMap()) return yaml.Error(node, "each target must be a map");
    TargetConfig target;
    SY_ASSIGN_OR_RETURN(name, yaml.String(node, "name", /*required=*/true));
    SY_ASSIGN_OR_RETURN(kind, yaml.String(node, "kind", /*required=*/true));
    target.name = *name;
    if (target.name.empty() || target.name == "auto") {
      return yaml.Error(node["name"], "target name must be non-empty and not \"auto\"");
    }
    if (!names.insert(target.name).second) {
      return yaml.Error(node["name"], absl::StrCat("duplicate target name '", target.name, "'"));
    }
    if (*kind == "local") {
      target.kind = TargetKind::kLocal;
      SY_RETURN_IF_ERROR(ParseLocalTarget(yaml, node, target));
    } else if (*kind == "openai_compatible") {
      target.kind = TargetKind::kOpenAiCompatible;
      SY_RETURN_IF_ERROR(ParseRemoteTarget(yaml, node, "", target));
    } else if (*kind == "anthropic") {
      target.kind = TargetKind::kAnthropic;
      SY_RETURN_IF_ERROR(ParseRemoteTarget(yaml, node, "https://api.anthropic.com/v1", target));
    } else if (*kind == "gemini") {
      target.kind = TargetKind::kGemini;
      SY_RETURN_IF_ERROR(ParseRemoteTarget(
          yaml, node, "https://generativelanguage.googleapis.com/v1beta", target));
    } else {
      return yaml.Error(node["kind"],
                        absl::StrCat("unknown target kind '", *kind,
                                     "' (expected local, openai_compatible, anthropic or gemini)"));
    }
    SY_RETURN_IF_ERROR(ParsePrice(yaml, node, target.price));
    config.targets.push_back(std::move(target));
  }
  return absl::OkStatus();
}

absl::Status ParseLimits(const YamlReader& yaml, const YAML::Node& node, std::string_view what,
                         Limits& out) {
  SY_RETURN_IF_ERROR(yaml.ExpectMap(node, what,
                                    {"usd_per_day", "usd_per_month", "tokens_per_minute",
                                     "requests_per_minute", "max_concurrent", "on_exhausted"}));
  SY_ASSIGN_OR_RETURN(per_day, yaml.Double(node, "usd_per_day", 0, 1e12));
  SY_ASSIGN_OR_RETURN(per_month, yaml.Double(node, "usd_per_month", 0, 1e12));
  SY_ASSIGN_OR_RETURN(tokens, yaml.Int(node, "tokens_per_minute", 1, int64_t{1} << 50));
  SY_ASSIGN_OR_RETURN(requests, yaml.Int(node, "requests_per_minute", 1, int64_t{1} << 50));
  SY_ASSIGN_OR_RETURN(concurrent, yaml.Int(node, "max_concurrent", 1, int64_t{1} << 30));
  SY_ASSIGN_OR_RETURN(on_exhausted, yaml.String(node, "on_exhausted"));
  out.usd_per_day = per_day;
  out.usd_per_month = per_month;
  out.tokens_per_minute = tokens;
  out.requests_per_minute = requests;
  out.max_concurrent = concurrent;
  if (on_exhausted.has_value() && *on_exhausted != "reject" && *on_exhausted != "downgrade") {
    return yaml.Error(node["on_exhausted"],
                      absl::StrCat("'on_exhausted' must be reject or downgrade, not \"",
                                   *on_exhausted, "\""));
  }
  out.on_exhausted = on_exhausted.value_or("reject") == "downgrade"
                         ? Limits::OnExhausted::kDowngrade
                         : Limits::OnExhausted::kReject;
  return absl::OkStatus();
}

// One list of key entries, from the config or a key file (`yaml` names the file).
absl::Status ParseKeyList(const YamlReader& yaml, const YAML::Node& list, AuthConfig& auth) {
  if (!list.IsSequence()) return yaml.Error(list, "'keys' must be a list of key entries");
  for (const YAML::Node& node : list) {
    if (!node.IsMap()) return yaml.Error(node, "each key must be a map with name, tenant, sha256");
    SY_ASSIGN_OR_RETURN(name, yaml.String(node, "name", /*required=*/true));
    SY_RETURN_IF_ERROR(yaml.ExpectMap(node, absl::StrCat("key '", *name, "'"),
                                      {"name", "tenant", "sha256", "limits"}));
    SY_ASSIGN_OR_RETURN(tenant, yaml.String(node, "tenant", /*required=*/true));
    SY_ASSIGN_OR_RETURN(sha256, yaml.String(node, "sha256", /*required=*/true));
    ApiKey key;
    key.name = *name;
    key.tenant = *tenant;
    if (key.name.empty()) return yaml.Error(node["name"], "key name must not be empty");
    if (key.tenant.empty() || key.tenant == "anonymous") {
      return yaml.Error(node["tenant"], "tenant must be non-empty and not \"anonymous\"");
    }
    std::optional<std::array<unsigned char, 32>> digest = ParseSha256Hex(*sha256);
    if (!digest) {
      return yaml.Error(node["sha256"],
                        "'sha256' must be 64 hex digits (the output of `switchyard hash-key`)");
    }
    key.sha256 = *digest;
    if (auth.FindKey(key.name) != nullptr) {
      return yaml.Error(node["name"], absl::StrCat("duplicate key name '", key.name, "'"));
    }
    for (const ApiKey& other : auth.keys) {
      if (other.sha256 == key.sha256) {
        return yaml.Error(node["sha256"], absl::StrCat("key '", key.name,
                                                       "' has the same hash as key '", other.name,
                                                       "'"));
      }
    }
    if (const YAML::Node limits = node["limits"]) {
      SY_RETURN_IF_ERROR(ParseLimits(yaml, limits, absl::StrCat("limits of key '", key.name, "'"),
                                     key.limits));
    }
    auth.keys.push_back(std::move(key));
  }
  return absl::OkStatus();
}

std::string Resolve(std::string_view base_dir, const std::string& path) {
  std::filesystem::path resolved(path);
  if (resolved.is_relative() && !base_dir.empty()) {
    resolved = std::filesystem::path(base_dir) / resolved;
  }
  return resolved.lexically_normal().string();
}

absl::Status ParseAuth(const YamlReader& yaml, const YAML::Node& root, std::string_view base_dir,
                       Config& config) {
  AuthConfig& auth = config.auth;
  if (const YAML::Node node = root["auth"]) {
    SY_RETURN_IF_ERROR(
        yaml.ExpectMap(node, "auth", {"allow_unauthenticated", "keys", "key_file"}));
    SY_ASSIGN_OR_RETURN(allow, yaml.Bool(node, "allow_unauthenticated"));
    auth.allow_unauthenticated = allow.value_or(false);
    if (const YAML::Node keys = node["keys"]) SY_RETURN_IF_ERROR(ParseKeyList(yaml, keys, auth));
    SY_ASSIGN_OR_RETURN(key_file, yaml.String(node, "key_file"));
    if (key_file.has_value()) {
      const std::string path = Resolve(base_dir, *key_file);
      absl::StatusOr<std::string> text = ReadConfigSource(path);
      if (!text.ok()) {
        return yaml.Error(node["key_file"], absl::StrCat("key file: ", text.status().message()));
      }
      SY_ASSIGN_OR_RETURN(keys, policies::ParseYaml(*text, path));
      SY_RETURN_IF_ERROR(ParseKeyList(YamlReader{path}, keys, auth));
      // Revoking a key in this file is a change of config: watched, and in the version.
      config.sources.push_back(path);
      config.version = ConfigVersion({config.version, ContentHash(*text)});
    }
  }
  if (const YAML::Node tenants = root["tenants"]) {
    if (!tenants.IsMap()) {
      return yaml.Error(tenants, "'tenants' must be a map from tenant name to its limits");
    }
    for (const auto& entry : tenants) {
      TenantConfig tenant;
      tenant.name = entry.first.Scalar();
      if (tenant.name.empty() || tenant.name == "anonymous") {
        return yaml.Error(entry.first, "tenant must be non-empty and not \"anonymous\"");
      }
      SY_RETURN_IF_ERROR(ParseLimits(yaml, entry.second,
                                     absl::StrCat("limits of tenant '", tenant.name, "'"),
                                     tenant.limits));
      auth.tenants.push_back(std::move(tenant));
    }
  }
  // Every tenant a key names is a configured tenant (for metrics labels), limits or not.
  for (const ApiKey& key : auth.keys) {
    if (auth.FindTenant(key.tenant) == nullptr) auth.tenants.push_back({key.tenant, Limits{}});
  }
  return absl::OkStatus();
}

absl::Status CheckDowngradeTargets(const YamlReader& yaml, const YAML::Node& root,
                                   const Config& config) {
  bool any_local = false;
  for (const TargetConfig& target : config.targets) {
    any_local = any_local || target.kind == TargetKind::kLocal;
  }
  if (any_local) return absl::OkStatus();
  auto downgrades = [](const Limits& limits) {
    return limits.on_exhausted == Limits::OnExhausted::kDowngrade;
  };
  for (const TenantConfig& tenant : config.auth.tenants) {
    if (downgrades(tenant.limits)) {
      return yaml.Error(root["tenants"][tenant.name],
                        absl::StrCat("tenant '", tenant.name,
                                     "': on_exhausted: downgrade needs a local target"));
    }
  }
  for (const ApiKey& key : config.auth.keys) {
    if (downgrades(key.limits)) {
      return yaml.Error(root["auth"],
                        absl::StrCat("key '", key.name,
                                     "': on_exhausted: downgrade needs a local target"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseMetering(const YamlReader& yaml, const YAML::Node& root,
                           std::string_view base_dir, Config& config) {
  if (const YAML::Node node = root["metering"]) {
    SY_RETURN_IF_ERROR(yaml.ExpectMap(node, "metering", {"state_file", "reference_target"}));
    SY_ASSIGN_OR_RETURN(state_file, yaml.String(node, "state_file"));
    SY_ASSIGN_OR_RETURN(reference, yaml.String(node, "reference_target"));
    if (state_file.has_value()) {
      if (state_file->empty()) {
        return yaml.Error(node["state_file"], "'state_file' must not be empty");
      }
      config.metering.state_file = Resolve(base_dir, *state_file);
    }
    if (reference.has_value()) {
      if (config.FindTarget(*reference) == nullptr) {
        return yaml.Error(node["reference_target"],
                          absl::StrCat("reference_target '", *reference,
                                       "' is not a configured target"));
      }
      config.metering.reference_target = *reference;
    }
  }
  if (const YAML::Node node = root["metrics"]) {
    SY_RETURN_IF_ERROR(yaml.ExpectMap(node, "metrics", {"per_key_labels"}));
    SY_ASSIGN_OR_RETURN(per_key, yaml.Bool(node, "per_key_labels"));
    config.metrics_per_key_labels = per_key.value_or(false);
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view TargetKindName(TargetKind kind) {
  switch (kind) {
    case TargetKind::kLocal:
      return "local";
    case TargetKind::kOpenAiCompatible:
      return "openai_compatible";
    case TargetKind::kAnthropic:
      return "anthropic";
    case TargetKind::kGemini:
      return "gemini";
  }
  return "unknown";
}

const TargetConfig* Config::FindTarget(std::string_view name) const {
  for (const TargetConfig& target : targets) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file,
                                   std::string_view base_dir) {
  SY_ASSIGN_OR_RETURN(root, policies::ParseYaml(text, file));
  YamlReader yaml{std::string(file)};
  if (!root.IsMap()) return yaml.Error(root, "the config must be a YAML map");
  SY_RETURN_IF_ERROR(yaml.ExpectMap(root, "the config",
                                    {"listeners", "limits", "models", "targets", "decision_log",
                                     "policy", "auth", "tenants", "metering", "metrics"}));
  Config config;
  config.file = std::string(file);
  config.version = ContentHash(text);

  if (const YAML::Node listeners = root["listeners"]) {
    SY_RETURN_IF_ERROR(
        yaml.ExpectMap(listeners, "listeners", {"http", "grpc", "busy_poll_microseconds"}));
    SY_RETURN_IF_ERROR(ParseListener(yaml, listeners, "http", config.http));
    SY_RETURN_IF_ERROR(ParseListener(yaml, listeners, "grpc", config.grpc));
    SY_ASSIGN_OR_RETURN(busy_poll, yaml.Int(listeners, "busy_poll_microseconds", 0, 10000));
    config.busy_poll_microseconds = busy_poll.value_or(0);
  }
  if (const YAML::Node limits = root["limits"]) {
    SY_RETURN_IF_ERROR(
        yaml.ExpectMap(limits, "limits", {"max_body_bytes", "drain_timeout_seconds",
                                          "write_timeout_seconds", "max_stream_buffer_bytes",
                                          "local_model_memory_bytes"}));
    SY_ASSIGN_OR_RETURN(max_body, yaml.Int(limits, "max_body_bytes", 1024, int64_t{1} << 30));
    SY_ASSIGN_OR_RETURN(drain, yaml.Double(limits, "drain_timeout_seconds", 0, 3600));
    config.max_body_bytes = max_body.value_or(config.max_body_bytes);
    config.drain_timeout_seconds = drain.value_or(config.drain_timeout_seconds);
    SY_ASSIGN_OR_RETURN(write_timeout, yaml.Double(limits, "write_timeout_seconds", 0, 86400));
    config.write_timeout_seconds = write_timeout.value_or(config.write_timeout_seconds);
    SY_ASSIGN_OR_RETURN(stream_buffer, yaml.Int(limits, "max_stream_buffer_bytes", 4096,
                                                int64_t{1} << 30));
    config.max_stream_buffer_bytes = stream_buffer.value_or(config.max_stream_buffer_bytes);
    SY_ASSIGN_OR_RETURN(budget, yaml.Int(limits, "local_model_memory_bytes", 0,
                                         std::numeric_limits<int64_t>::max()));
    config.local_model_memory_bytes = static_cast<uint64_t>(budget.value_or(0));
  }
  if (const YAML::Node models = root["models"]) {
    SY_RETURN_IF_ERROR(yaml.ExpectMap(models, "models", {"dirs"}));
    SY_ASSIGN_OR_RETURN(dirs, yaml.StringList(models, "dirs"));
    for (std::string& dir : dirs) {
      std::filesystem::path path(dir);
      if (path.is_relative() && !base_dir.empty()) path = std::filesystem::path(base_dir) / path;
      config.model_dirs.push_back(path.lexically_normal().string());
    }
  }
  SY_RETURN_IF_ERROR(ParseTargets(yaml, root, config));
  if (const YAML::Node log = root["decision_log"]) {
    SY_RETURN_IF_ERROR(yaml.ExpectMap(log, "decision_log", {"path", "include_prompts"}));
    SY_ASSIGN_OR_RETURN(path, yaml.String(log, "path", /*required=*/true));
    SY_ASSIGN_OR_RETURN(include_prompts, yaml.Bool(log, "include_prompts"));
    if (path->empty()) return yaml.Error(log["path"], "'path' must not be empty");
    std::filesystem::path resolved(*path);
    if (resolved.is_relative() && !base_dir.empty()) {
      resolved = std::filesystem::path(base_dir) / resolved;
    }
    config.decision_log.path = resolved.lexically_normal().string();
    config.decision_log.include_prompts = include_prompts.value_or(false);
  }
  SY_RETURN_IF_ERROR(ParseAuth(yaml, root, base_dir, config));
  SY_RETURN_IF_ERROR(CheckDowngradeTargets(yaml, root, config));
  SY_RETURN_IF_ERROR(ParseMetering(yaml, root, base_dir, config));

  const YAML::Node policy = root["policy"];
  if (!policy) return yaml.Error(root, "missing required key 'policy'");
  std::vector<policies::TargetInfo> infos;
  for (const TargetConfig& target : config.targets) {
    infos.push_back({target.name,
                     target.kind == TargetKind::kLocal ? policies::Locality::kLocal
                                                       : policies::Locality::kRemote,
                     target.price.input_per_million, target.price.output_per_million});
  }
  SY_ASSIGN_OR_RETURN(policy_set, policies::PolicySet::FromYaml(policy, file, infos,
                                                                config.version));
  config.policy = std::move(policy_set);
  return config;
}

absl::StatusOr<std::string> ReadConfigSource(const std::string& path) {
  // stat first: opening a FIFO would wait for a writer, and /dev/zero never ends.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a regular file (", S_ISDIR(st.st_mode) ? "a directory" : "a device or pipe",
        ")"));
  }
  if (st.st_size > kMaxConfigSourceBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size,
                                                   " bytes; a config file may have at most ",
                                                   kMaxConfigSourceBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string text(static_cast<size_t>(kMaxConfigSourceBytes) + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat(path, ": read error"));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxConfigSourceBytes)) {  // grew since the stat
    return absl::InvalidArgumentError(absl::StrCat(path, ": a config file may have at most ",
                                                   kMaxConfigSourceBytes, " bytes"));
  }
  return text;
}

std::string ConfigVersion(const std::vector<std::string>& hashes) {
  return hashes.size() == 1 ? hashes.front() : ContentHash(absl::StrJoin(hashes, "\n"));
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  SY_ASSIGN_OR_RETURN(text, ReadConfigSource(path));
  const std::string base = std::filesystem::path(path).parent_path().string();
  return ParseConfig(text, path, base);
}

std::string_view DefaultConfigText() { return kEmbeddedDefaultConfig; }

absl::StatusOr<Config> DefaultConfig() {
  return ParseConfig(kEmbeddedDefaultConfig, "<embedded default>", "");
}

}  // namespace switchyard::gateway
