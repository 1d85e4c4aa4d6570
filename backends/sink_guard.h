// Enforces the Call::Cancel() contract of backend.h for one request, so each backend does not
// have to: sink calls and Cancel() are serialised, and after Cancel() returns the sink is never
// called again. A sink method may cancel its own call (the same thread re-enters without
// deadlock).
#ifndef SWITCHYARD_BACKENDS_SINK_GUARD_H_
#define SWITCHYARD_BACKENDS_SINK_GUARD_H_

#include <atomic>
#include <memory>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "backends/backend.h"

namespace switchyard::backends {

class SinkGuard {
 public:
  explicit SinkGuard(std::shared_ptr<ChatSink> sink) : sink_(std::move(sink)) {}

  // Forwards a delta. Returns false when the request was cancelled or already finished, so the
  // producer can stop working on it.
  bool Delta(std::string_view text);
  // Forward ChatSink's burst hints; dropped once the request is finished or cancelled.
  void BeginBurst();
  void EndBurst();
  // Forwards the final result once; later calls and calls after Cancel() are dropped.
  void Done(const absl::Status& status, const Completion& completion);
  // Drops the sink. Blocks while another thread is inside a sink method of this request.
  void Cancel();
  // True once Cancel() was called or Done() delivered; cheap, for polling from hot loops.
  bool finished() const { return finished_.load(std::memory_order_acquire); }

 private:
  // Calls `fn(sink)` under the guard unless the sink is gone; returns whether it is still there.
  template <typename Fn>
  bool Call(Fn fn);
  // Drops the sink while mu_ is held by a sink call lower on this thread's stack.
  void ReleaseHeld();

  absl::Mutex mu_;
  std::shared_ptr<ChatSink> sink_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> finished_{false};
  // The thread currently inside a sink method, so a re-entrant Cancel() does not self-deadlock.
  std::atomic<std::thread::id> calling_thread_{};
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_SINK_GUARD_H_
