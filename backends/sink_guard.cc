#include "backends/sink_guard.h"

namespace switchyard::backends {

template <typename Fn>
bool SinkGuard::Call(Fn fn) {
  absl::MutexLock lock(&mu_);
  if (sink_ == nullptr) return false;
  // A local reference keeps the sink alive if it cancels itself inside the call.
  std::shared_ptr<ChatSink> sink = sink_;
  calling_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  fn(*sink);
  calling_thread_.store(std::thread::id(), std::memory_order_relaxed);
  return sink_ != nullptr;
}

bool SinkGuard::Delta(std::string_view text) {
  return Call([text](ChatSink& sink) { sink.OnDelta(text); });
}

void SinkGuard::BeginBurst() {
  Call([](ChatSink& sink) { sink.BeginBurst(); });
}

void SinkGuard::EndBurst() {
  Call([](ChatSink& sink) { sink.EndBurst(); });
}

void SinkGuard::Done(const absl::Status& status, const Completion& completion) {
  absl::MutexLock lock(&mu_);
  if (sink_ == nullptr) return;
  // Keep the sink alive through the call even if it cancels itself inside OnDone.
  std::shared_ptr<ChatSink> sink = std::move(sink_);
  finished_.store(true, std::memory_order_release);
  calling_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  sink->OnDone(status, completion);
  calling_thread_.store(std::thread::id(), std::memory_order_relaxed);
}

void SinkGuard::Cancel() {
  finished_.store(true, std::memory_order_release);
  if (calling_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
    // Re-entered from a sink method on this thread: the frame below us holds mu_.
    mu_.AssertHeld();
    ReleaseHeld();
    return;
  }
  std::shared_ptr<ChatSink> sink;
  {
    absl::MutexLock lock(&mu_);
    sink = std::move(sink_);
  }
  // The sink is destroyed outside the lock.
}

void SinkGuard::ReleaseHeld() ABSL_NO_THREAD_SAFETY_ANALYSIS { sink_.reset(); }

}  // namespace switchyard::backends
