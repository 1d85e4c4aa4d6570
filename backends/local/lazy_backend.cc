#include "backends/local/lazy_backend.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "backends/local/model_store.h"
#include "backends/sink_guard.h"

namespace switchyard::backends {
namespace {

using Clock = std::chrono::steady_clock;

void AddTotals(const EngineStats& from, EngineStats& to) {
  to.requests_total += from.requests_total;
  to.requests_failed_total += from.requests_failed_total;
  to.requests_cancelled_total += from.requests_cancelled_total;
  to.tokens_prompt_total += from.tokens_prompt_total;
  to.tokens_prompt_cached_total += from.tokens_prompt_cached_total;
  to.tokens_completion_total += from.tokens_completion_total;
  to.decode_steps_total += from.decode_steps_total;
  to.ttft_seconds_sum += from.ttft_seconds_sum;
  to.ttft_seconds_count += from.ttft_seconds_count;
}

}  // namespace

absl::Status MemoryBudget::Reserve(const std::string& model, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (limit_ != 0 && bytes > limit_ - std::min(used_, limit_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model '", model, "' (", bytes, " bytes) does not fit in the local model memory budget: ",
        limit_ - std::min(used_, limit_), " of ", limit_,
        " bytes are free (limits.local_model_memory_bytes)"));
  }
  used_ += bytes;
  return absl::OkStatus();
}

void MemoryBudget::Release(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ -= std::min(used_, bytes);
}

uint64_t MemoryBudget::used() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

std::string_view ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kUnloaded:
      return "unloaded";
    case ModelState::kLoading:
      return "loading";
    case ModelState::kLoaded:
      return "loaded";
    case ModelState::kFailed:
      return "failed";
  }
  return "unknown";
}

// One request's state across the wait for the load and the engine call. The guard gives the
// cancel contract in both phases; `ended` makes the in-flight count drop exactly once.
struct CallState {
  CallState(std::shared_ptr<ChatSink> sink, std::shared_ptr<ManagedLocalBackend::Core> core)
      : guard(std::move(sink)), core(std::move(core)) {}
  void End();

  SinkGuard guard;
  const std::shared_ptr<ManagedLocalBackend::Core> core;
  std::atomic<bool> ended{false};
  absl::Mutex mu;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  std::unique_ptr<Call> inner ABSL_GUARDED_BY(mu);
};

struct ManagedLocalBackend::Core {
  struct Waiting {
    ChatRequest request;
    std::shared_ptr<CallState> call;
  };

  explicit Core(ManagedLocalOptions options) : options(std::move(options)) {}

  // Resolves, reserves and loads; on the manager thread or in Create. No lock held.
  absl::StatusOr<std::shared_ptr<LocalBackend>> Load(uint64_t* file_bytes) {
    absl::StatusOr<std::string> path = ResolveModelPath(options.model, options.folders);
    if (!path.ok()) return path.status();
    std::error_code error;
    const uint64_t bytes = std::filesystem::file_size(*path, error);
    if (error) return absl::NotFoundError(absl::StrCat(*path, ": ", error.message()));
    *file_bytes = bytes;
    if (options.budget != nullptr) {
      if (absl::Status status = options.budget->Reserve(options.model, bytes); !status.ok()) {
        return status;
      }
    }
    LocalBackendOptions engine = options.engine;
    engine.model_path = *path;
    {
      absl::MutexLock lock(&mu);
      engine.observer = observer;
    }
    absl::StatusOr<std::unique_ptr<LocalBackend>> backend = LocalBackend::Create(engine);
    if (!backend.ok()) {
      if (options.budget != nullptr) options.budget->Release(bytes);
      return backend.status();
    }
    return std::shared_ptr<LocalBackend>(*std::move(backend));
  }

  void Loaded(absl::StatusOr<std::shared_ptr<LocalBackend>> backend, uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    file_bytes = bytes;
    if (backend.ok()) {
      engine = *std::move(backend);
      reserved = bytes;
      state = ModelState::kLoaded;
      ever_loaded = true;
      error.clear();
    } else {
      state = ModelState::kFailed;
      error = std::string(backend.status().message());
    }
  }

  // Starts one request on the loaded engine. No lock held.
  static void Dispatch(const std::shared_ptr<LocalBackend>& engine, const ChatRequest& request,
                       const std::shared_ptr<CallState>& call);

  void Ended() {
    absl::MutexLock lock(&mu);
    if (--in_flight == 0) {
      idle_since = Clock::now();
      cv.Signal();
    }
  }

  void Run() {
    absl::MutexLock lock(&mu);
    while (!stop) {
      if (!waiting.empty() && state != ModelState::kLoaded) {
        state = ModelState::kLoading;
        mu.Unlock();
        uint64_t bytes = 0;
        absl::StatusOr<std::shared_ptr<LocalBackend>> loaded = Load(&bytes);
        mu.Lock();
        Loaded(std::move(loaded), bytes);
        if (state == ModelState::kFailed) {
          for (Waiting& w : waiting) failing.push_back(std::move(w));
          waiting.clear();
        }
        continue;
      }
      if (!waiting.empty()) {
        std::deque<Waiting> starting = std::exchange(waiting, {});
        std::shared_ptr<LocalBackend> current = engine;
        mu.Unlock();
        for (Waiting& w : starting) Dispatch(current, w.request, w.call);
        mu.Lock();
        continue;
      }
      if (!failing.empty()) {
        std::deque<Waiting> failed = std::exchange(failing, {});
        const absl::Status status = absl::AbortedError(
            absl::StrCat("local model '", options.model, "' is not available: ", error));
        mu.Unlock();
        for (Waiting& w : failed) {
          w.call->guard.Done(status, Completion{});
          w.call->End();
        }
        mu.Lock();
        continue;
      }
      if (state == ModelState::kLoaded && options.idle_unload.count() > 0 && in_flight == 0) {
        const Clock::time_point deadline = idle_since + options.idle_unload;
        if (Clock::now() >= deadline) {
          Unload();
          continue;
        }
        cv.WaitWithTimeout(&mu, absl::FromChrono(deadline - Clock::now()));
        continue;
      }
      cv.Wait(&mu);
    }
  }

  void Unload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::shared_ptr<LocalBackend> old = std::move(engine);
    AddTotals(old->Stats(), base);
    state = ModelState::kUnloaded;
    const uint64_t bytes = std::exchange(reserved, 0);
    mu.Unlock();
    old.reset();  // joins the engine thread
    if (options.budget != nullptr) options.budget->Release(bytes);
    mu.Lock();
  }

  const ManagedLocalOptions options;
  absl::Mutex mu;
  absl::CondVar cv;
  bool stop ABSL_GUARDED_BY(mu) = false;
  ModelState state ABSL_GUARDED_BY(mu) = ModelState::kUnloaded;
  bool ever_loaded ABSL_GUARDED_BY(mu) = false;
  std::string error ABSL_GUARDED_BY(mu);
  uint64_t file_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t reserved ABSL_GUARDED_BY(mu) = 0;
  std::shared_ptr<LocalBackend> engine ABSL_GUARDED_BY(mu);
  std::shared_ptr<EngineObserver> observer ABSL_GUARDED_BY(mu);
  // Requests waiting for the load, and requests whose load failed, to be answered.
  std::deque<Waiting> waiting ABSL_GUARDED_BY(mu);
  std::deque<Waiting> failing ABSL_GUARDED_BY(mu);
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;  // started and not ended, waiting ones included
  Clock::time_point idle_since ABSL_GUARDED_BY(mu) = Clock::now();
  EngineStats base ABSL_GUARDED_BY(mu);  // totals of unloaded instances
};

void CallState::End() {
  if (!ended.exchange(true)) core->Ended();
}

namespace {

// Feeds the engine's output through the request's guard.
class ForwardingSink : public ChatSink {
 public:
  explicit ForwardingSink(std::shared_ptr<CallState> call) : call_(std::move(call)) {}
  void OnDelta(std::string_view text) override { call_->guard.Delta(text); }
  void BeginBurst() override { call_->guard.BeginBurst(); }
  void EndBurst() override { call_->guard.EndBurst(); }
  void OnDone(const absl::Status& status, const Completion& completion) override {
    call_->guard.Done(status, completion);
    call_->End();
  }

 private:
  std::shared_ptr<CallState> call_;
};

class ManagedCall : public Call {
 public:
  explicit ManagedCall(std::shared_ptr<CallState> call) : call_(std::move(call)) {}
  void Cancel() override {
    call_->guard.Cancel();
    std::unique_ptr<Call> inner;
    {
      absl::MutexLock lock(&call_->mu);
      call_->cancelled = true;
      inner = std::move(call_->inner);
    }
    if (inner != nullptr) inner->Cancel();
    call_->End();
  }

 private:
  std::shared_ptr<CallState> call_;
};

}  // namespace

void ManagedLocalBackend::Core::Dispatch(const std::shared_ptr<LocalBackend>& engine,
                                         const ChatRequest& request,
                                         const std::shared_ptr<CallState>& call) {
  absl::MutexLock lock(&call->mu);
  if (call->cancelled) return;
  call->inner = engine->Start(request, std::make_shared<ForwardingSink>(call));
}

absl::StatusOr<std::unique_ptr<ManagedLocalBackend>> ManagedLocalBackend::Create(
    ManagedLocalOptions options) {
  if (options.model.empty()) return absl::InvalidArgumentError("local model name is empty");
  auto core = std::make_shared<Core>(std::move(options));
  if (core->options.load_at_start) {
    uint64_t bytes = 0;
    absl::StatusOr<std::shared_ptr<LocalBackend>> loaded = core->Load(&bytes);
    // Only a budget refusal leaves the target up: anything else is a broken config.
    if (!loaded.ok() && loaded.status().code() != absl::StatusCode::kResourceExhausted) {
      return loaded.status();
    }
    absl::MutexLock lock(&core->mu);
    core->Loaded(std::move(loaded), bytes);
  }
  return std::unique_ptr<ManagedLocalBackend>(new ManagedLocalBackend(std::move(core)));
}

ManagedLocalBackend::ManagedLocalBackend(std::shared_ptr<Core> core)
    : core_(std::move(core)), manager_([core = core_.get()] { core->Run(); }) {}

ManagedLocalBackend::~ManagedLocalBackend() {
  {
    absl::MutexLock lock(&core_->mu);
    core_->stop = true;
    core_->cv.Signal();
  }
  manager_.join();
  std::deque<Core::Waiting> left;
  std::shared_ptr<LocalBackend> engine;
  {
    absl::MutexLock lock(&core_->mu);
    left = std::exchange(core_->waiting, {});
    for (Core::Waiting& w : core_->failing) left.push_back(std::move(w));
    core_->failing.clear();
    engine = std::move(core_->engine);
    core_->state = ModelState::kUnloaded;
  }
  for (Core::Waiting& w : left) {
    w.call->guard.Done(absl::UnavailableError("the local engine is shutting down"), Completion{});
    w.call->End();
  }
  engine.reset();
  absl::MutexLock lock(&core_->mu);
  if (core_->options.budget != nullptr) {
    core_->options.budget->Release(std::exchange(core_->reserved, 0));
  }
}

std::unique_ptr<Call> ManagedLocalBackend::Start(const ChatRequest& request,
                                                 std::shared_ptr<ChatSink> sink) {
  auto call = std::make_shared<CallState>(std::move(sink), core_);
  std::shared_ptr<LocalBackend> engine;
  {
    absl::MutexLock lock(&core_->mu);
    ++core_->in_flight;
    if (core_->state == ModelState::kLoaded && core_->waiting.empty()) {
      engine = core_->engine;
    } else {
      core_->waiting.push_back({request, call});
      core_->cv.Signal();
    }
  }
  if (engine != nullptr) Core::Dispatch(engine, request, call);
  return std::make_unique<ManagedCall>(std::move(call));
}

std::optional<int64_t> ManagedLocalBackend::CountTokens(
    const std::vector<Message>& messages) const {
  std::shared_ptr<LocalBackend> engine;
  {
    absl::MutexLock lock(&core_->mu);
    engine = core_->engine;
  }
  if (engine == nullptr) return std::nullopt;
  return engine->CountTokens(messages);
}

EngineStats ManagedLocalBackend::Stats() const {
  absl::MutexLock lock(&core_->mu);
  EngineStats stats;
  if (core_->engine != nullptr) stats = core_->engine->Stats();
  AddTotals(core_->base, stats);
  stats.queue_depth += static_cast<int64_t>(core_->waiting.size());
  stats.slots_total = core_->options.engine.n_slots;
  return stats;
}

ModelStatus ManagedLocalBackend::status() const {
  absl::MutexLock lock(&core_->mu);
  ModelStatus status;
  status.state = core_->state;
  status.load_at_start = core_->options.load_at_start;
  status.ready = !core_->options.load_at_start ||
                 (core_->ever_loaded && core_->state != ModelState::kFailed);
  status.error = core_->error;
  status.file_bytes = core_->file_bytes;
  if (core_->engine != nullptr) status.model_bytes = core_->engine->Stats().model_size_bytes;
  return status;
}

void ManagedLocalBackend::SetObserver(std::shared_ptr<EngineObserver> observer) {
  absl::MutexLock lock(&core_->mu);
  core_->observer = observer;
  if (core_->engine != nullptr) core_->engine->SetObserver(std::move(observer));
}

}  // namespace switchyard::backends
