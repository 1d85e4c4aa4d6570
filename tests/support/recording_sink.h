// A ChatSink that keeps what a request reported, for tests that run one request and then look.
// Not synchronised: read it only after done_ was notified.
#ifndef SWITCHYARD_TESTS_SUPPORT_RECORDING_SINK_H_
#define SWITCHYARD_TESTS_SUPPORT_RECORDING_SINK_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "backends/backend.h"

namespace switchyard::testing {

class RecordingSink : public backends::ChatSink {
 public:
  void OnDelta(std::string_view text) override { text_ += text; }
  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    status_ = status;
    completion_ = completion;
    done_.Notify();
  }

  absl::Notification done_;
  std::string text_;
  absl::Status status_;
  backends::Completion completion_;
};

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_SUPPORT_RECORDING_SINK_H_
