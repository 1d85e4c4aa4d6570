#include "gateway/readiness.h"

#include "backends/local/lazy_backend.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {

Readiness CheckReadiness(const Runtime& runtime) {
  Readiness readiness;
  readiness.ready = true;
  nlohmann::ordered_json targets = nlohmann::ordered_json::object();
  for (const TargetConfig& target : runtime.config.targets) {
    nlohmann::ordered_json entry;
    entry["kind"] = std::string(TargetKindName(target.kind));
    auto found = runtime.backends.find(target.name);
    const auto* local = found == runtime.backends.end()
                            ? nullptr
                            : dynamic_cast<const backends::ManagedLocalBackend*>(
                                  found->second.get());
    if (local == nullptr) {
      entry["ready"] = found != runtime.backends.end();
    } else {
      const backends::ModelStatus status = local->status();
      entry["load"] = status.load_at_start ? "startup" : "on_demand";
      entry["state"] = std::string(backends::ModelStateName(status.state));
      entry["ready"] = status.ready;
      entry["file_bytes"] = status.file_bytes;
      entry["model_bytes"] = status.model_bytes;
      if (!status.error.empty()) entry["error"] = status.error;
    }
    readiness.ready = readiness.ready && entry["ready"].get<bool>();
    targets[target.name] = std::move(entry);
  }
  nlohmann::ordered_json body;
  body["status"] = readiness.ready ? "ready" : "not_ready";
  body["targets"] = std::move(targets);
  readiness.json = body.dump();
  return readiness;
}

}  // namespace switchyard::gateway
