// A scripted in-process Backend for gateway tests: emits given deltas from its own thread (one
// per request), records what it was asked, and reports whether a call was cancelled. It honours
// the Call contract of backends/backend.h through the real SinkGuard.
#ifndef SWITCHYARD_TESTS_SUPPORT_FAKE_BACKEND_H_
#define SWITCHYARD_TESTS_SUPPORT_FAKE_BACKEND_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "backends/backend.h"

namespace switchyard::testing {

struct FakeScript {
  std::vector<std::string> deltas = {"Hello", ", ", "world"};
  std::chrono::milliseconds delay{0};  // before each delta
  absl::Status status;                 // OnDone status; deltas are still sent first
  backends::Usage usage{3, 3, true, true};
  bool burst = false;  // the deltas go out as one burst (ChatSink::BeginBurst ... EndBurst)
};

inline FakeScript Script(std::vector<std::string> deltas,
                         std::chrono::milliseconds delay = std::chrono::milliseconds(0),
                         absl::Status status = absl::OkStatus()) {
  FakeScript script;
  script.deltas = std::move(deltas);
  script.delay = delay;
  script.status = std::move(status);
  return script;
}

class FakeBackend : public backends::Backend {
 public:
  explicit FakeBackend(FakeScript script = {}) : script_(std::move(script)) {}
  ~FakeBackend() override;

  std::unique_ptr<backends::Call> Start(const backends::ChatRequest& request,
                                        std::shared_ptr<backends::ChatSink> sink) override;

  void set_script(FakeScript script);
  std::vector<backends::ChatRequest> requests() const;
  int started() const;
  int cancelled() const { return cancelled_.load(); }

 private:
  mutable absl::Mutex mu_;
  FakeScript script_ ABSL_GUARDED_BY(mu_);
  std::vector<backends::ChatRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> cancelled_{0};
};

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_SUPPORT_FAKE_BACKEND_H_
