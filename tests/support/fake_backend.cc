#include "tests/support/fake_backend.h"

#include "backends/sink_guard.h"

namespace switchyard::testing {
namespace {

class FakeCall : public backends::Call {
 public:
  FakeCall(std::shared_ptr<backends::SinkGuard> guard, std::atomic<int>* cancelled)
      : guard_(std::move(guard)), cancelled_(cancelled) {}
  void Cancel() override {
    if (!guard_->finished()) cancelled_->fetch_add(1);
    guard_->Cancel();
  }

 private:
  std::shared_ptr<backends::SinkGuard> guard_;
  std::atomic<int>* cancelled_;
};

}  // namespace

FakeBackend::~FakeBackend() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (std::thread& thread : threads) thread.join();
}

std::unique_ptr<backends::Call> FakeBackend::Start(const backends::ChatRequest& request,
                                                   std::shared_ptr<backends::ChatSink> sink) {
  auto guard = std::make_shared<backends::SinkGuard>(std::move(sink));
  absl::MutexLock lock(&mu_);
  requests_.push_back(request);
  FakeScript script = script_;
  threads_.emplace_back([guard, script] {
    if (script.burst) guard->BeginBurst();
    for (const std::string& delta : script.deltas) {
      // Sleep in small steps so a cancelled request stops promptly.
      for (auto slept = std::chrono::milliseconds(0); slept < script.delay;
           slept += std::chrono::milliseconds(5)) {
        if (guard->finished()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (!guard->Delta(delta)) return;
    }
    if (script.burst) guard->EndBurst();
    backends::Completion completion;
    completion.usage = script.usage;
    guard->Done(script.status, completion);
  });
  return std::make_unique<FakeCall>(guard, &cancelled_);
}

void FakeBackend::set_script(FakeScript script) {
  absl::MutexLock lock(&mu_);
  script_ = std::move(script);
}

std::vector<backends::ChatRequest> FakeBackend::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

int FakeBackend::started() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(requests_.size());
}

}  // namespace switchyard::testing
