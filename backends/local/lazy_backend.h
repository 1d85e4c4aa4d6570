// A local target's model lifecycle around LocalBackend: load at start or on first use, unload
// after an idle time, and a memory budget shared by all local models of a process.
//
// Threads: each ManagedLocalBackend has one manager thread that loads and unloads the model, so
// Start() never blocks on a load: a request that arrives while the model is not loaded waits in
// the wrapper's own queue, the manager loads the model and then starts the waiting requests on
// the engine (or fails them all with the load error). The model is unloaded only when no request
// is in flight or waiting. Sinks run on the engine thread, or on the manager thread for a load
// failure.
//
// Cancel contract (backend.h) holds in every phase: a request cancelled while it waits for the
// load is dropped without any sink call.
//
// Errors: a request whose model cannot be loaded now (the memory budget is full, or the file is
// missing or broken) fails with kAborted and a message naming the model and the reason; the
// gateway answers that with HTTP 503 / gRPC UNAVAILABLE. The next request tries the load again.
#ifndef SWITCHYARD_BACKENDS_LOCAL_LAZY_BACKEND_H_
#define SWITCHYARD_BACKENDS_LOCAL_LAZY_BACKEND_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "backends/backend.h"
#include "backends/local/llama_backend.h"

namespace switchyard::backends {

// Bytes of model files loaded now, against a limit shared by every local model. Thread-safe.
class MemoryBudget {
 public:
  // 0 means no limit.
  explicit MemoryBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}

  // Reserves `bytes` for `model`, or fails with ResourceExhausted naming the model, its size and
  // what is left.
  absl::Status Reserve(const std::string& model, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Release(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t used() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  mutable absl::Mutex mu_;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

struct ManagedLocalOptions {
  // A model name (searched in `folders`, see ResolveModelPath) or a path. Resolved at every
  // load, so an on-demand model may be put in place after the process started.
  std::string model;
  std::vector<std::string> folders;
  // Engine options; model_path and observer are filled in at each load.
  LocalBackendOptions engine;
  // Load in Create (true) or at the first request (false).
  bool load_at_start = true;
  // Unload after this long without a request in flight; zero means never.
  std::chrono::milliseconds idle_unload{0};
  // Shared by all local targets; nullptr means no limit.
  std::shared_ptr<MemoryBudget> budget;
};

enum class ModelState {
  kUnloaded,  // not loaded yet (on demand) or unloaded after idling
  kLoading,
  kLoaded,
  kFailed,  // the last load failed; the next request tries again
};

std::string_view ModelStateName(ModelState state);

struct ModelStatus {
  ModelState state = ModelState::kUnloaded;
  bool load_at_start = true;
  // A start-up model is ready once it has loaded and its last load did not fail (idle unloading
  // keeps it ready: the next request loads it again). An on-demand model is always ready.
  bool ready = false;
  std::string error;         // the last load error, when kFailed
  uint64_t file_bytes = 0;   // the model file's size, once resolved
  uint64_t model_bytes = 0;  // weights in memory while loaded
};

class ManagedLocalBackend : public Backend {
 public:
  // With load_at_start, loads the model now: a missing, unreadable or corrupt file is returned as
  // an error (a start-up error), while a refusal by the memory budget is not (the target stays in
  // kFailed with that message, see status(), and the process can serve the other targets).
  static absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> Create(ManagedLocalOptions options);

  // Stops the manager thread, fails waiting requests with Unavailable and unloads the model.
  ~ManagedLocalBackend() override;

  std::unique_ptr<Call> Start(const ChatRequest& request, std::shared_ptr<ChatSink> sink) override;
  // Counts with the loaded model's tokenizer; nullopt while the model is not loaded.
  std::optional<int64_t> CountTokens(const std::vector<Message>& messages) const override;

  // Totals include every model instance loaded so far, so counters never go down across an
  // unload; gauges describe the current one (zero while unloaded). queue_depth includes
  // requests waiting for the load.
  EngineStats Stats() const;
  ModelStatus status() const;
  // Applies to the loaded engine and every later load.
  void SetObserver(std::shared_ptr<EngineObserver> observer);

  struct Core;

 private:
  explicit ManagedLocalBackend(std::shared_ptr<Core> core);

  std::shared_ptr<Core> core_;
  std::thread manager_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_LOCAL_LAZY_BACKEND_H_
