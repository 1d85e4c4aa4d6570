// A ChatSink for backend tests: records what a backend delivers and checks the sink contract of
// backend.h (nothing after OnDone, exactly one OnDone) on the way.
#ifndef SWITCHYARD_TESTS_BACKENDS_REMOTE_RECORDING_SINK_H_
#define SWITCHYARD_TESTS_BACKENDS_REMOTE_RECORDING_SINK_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "backends/backend.h"

namespace switchyard::backends {

// Records what a backend delivers and checks the sink contract on the way.
class RecordingSink : public ChatSink {
 public:
  void OnDelta(std::string_view text) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) ++contract_violations_;
      deltas_.emplace_back(text);
      if (deltas_.size() == 1) first_delta_at_ = std::chrono::steady_clock::now();
      ++calls_;
      hook = on_delta_;
    }
    changed_.notify_all();
    if (hook) hook();
  }

  // Bursts as [first delta, end) index ranges; a burst inside a burst breaks the contract.
  void BeginBurst() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_ || burst_start_ >= 0) ++contract_violations_;
    burst_start_ = static_cast<int64_t>(deltas_.size());
  }
  void EndBurst() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_ || burst_start_ < 0) ++contract_violations_;
    bursts_.emplace_back(static_cast<size_t>(burst_start_), deltas_.size());
    burst_start_ = -1;
  }

  void OnDone(const absl::Status& status, const Completion& completion) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) ++contract_violations_;
      done_ = true;
      if (burst_start_ >= 0) {  // OnDone may end a burst
        bursts_.emplace_back(static_cast<size_t>(burst_start_), deltas_.size());
        burst_start_ = -1;
      }
      status_ = status;
      completion_ = completion;
      done_at_ = std::chrono::steady_clock::now();
      ++calls_;
    }
    changed_.notify_all();
  }

  bool WaitDone(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, timeout, [&] { return done_; });
  }
  bool WaitDeltas(size_t count, std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, timeout, [&] { return deltas_.size() >= count || done_; }) &&
           deltas_.size() >= count;
  }
  void set_on_delta(std::function<void()> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    on_delta_ = std::move(hook);
  }

  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  Completion completion() {
    std::lock_guard<std::mutex> lock(mu_);
    return completion_;
  }
  std::vector<std::string> deltas() {
    std::lock_guard<std::mutex> lock(mu_);
    return deltas_;
  }
  std::vector<std::pair<size_t, size_t>> bursts() {
    std::lock_guard<std::mutex> lock(mu_);
    return bursts_;
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string all;
    for (const std::string& d : deltas_) all += d;
    return all;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  int contract_violations() {
    std::lock_guard<std::mutex> lock(mu_);
    return contract_violations_;
  }
  std::chrono::steady_clock::time_point first_delta_at() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_delta_at_;
  }
  std::chrono::steady_clock::time_point done_at() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_at_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::string> deltas_;
  std::vector<std::pair<size_t, size_t>> bursts_;
  int64_t burst_start_ = -1;  // the open burst's first delta, or -1
  bool done_ = false;
  absl::Status status_;
  Completion completion_;
  int calls_ = 0;
  int contract_violations_ = 0;
  std::chrono::steady_clock::time_point first_delta_at_;
  std::chrono::steady_clock::time_point done_at_;
  std::function<void()> on_delta_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_TESTS_BACKENDS_REMOTE_RECORDING_SINK_H_
