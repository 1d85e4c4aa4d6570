#include "gateway/redaction.h"

#include "policies/redact.h"

namespace switchyard::gateway {
namespace {

// Restores placeholders in the answer of one redacted call. Sink calls of one request never
// overlap (backend.h), so the Restorer needs no lock.
class RestoringSink : public backends::ChatSink {
 public:
  RestoringSink(std::vector<std::pair<std::string, std::string>> restore,
                std::shared_ptr<backends::ChatSink> inner)
      : restorer_(std::move(restore)), inner_(std::move(inner)) {}

  void OnDelta(std::string_view text) override {
    const std::string out = restorer_.Push(text);
    if (!out.empty()) inner_->OnDelta(out);
  }
  void BeginBurst() override { inner_->BeginBurst(); }
  void EndBurst() override { inner_->EndBurst(); }

  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    // A failed call drops what it held back (at most the start of a placeholder): emitting it
    // would count as a started answer and stop a fallback that nothing was shown for.
    if (status.ok()) {
      const std::string tail = restorer_.Finish();
      if (!tail.empty()) inner_->OnDelta(tail);
    }
    inner_->OnDone(status, completion);
  }

 private:
  policies::Restorer restorer_;
  std::shared_ptr<backends::ChatSink> inner_;
};

}  // namespace

Sender::Sender(std::shared_ptr<const policies::PolicySet> policy, policies::Decision decision,
               backends::ChatRequest chat)
    : policy_(std::move(policy)), decision_(std::move(decision)), chat_(std::move(chat)) {
  if (!decision_.redact) return;
  std::vector<policies::Finding> hidden;
  for (const policies::Finding& finding : decision_.findings) {
    if (finding.redacted) hidden.push_back(finding);
  }
  if (hidden.empty()) return;
  std::vector<std::string_view> texts;
  texts.reserve(chat_.messages.size());
  for (const backends::Message& message : chat_.messages) texts.push_back(message.content);
  policies::Redaction redaction = policies::Redact(texts, hidden);
  redacted_ = chat_;
  for (size_t i = 0; i < redacted_->messages.size(); ++i) {
    redacted_->messages[i].content = std::move(redaction.texts[i]);
  }
  restore_ = std::move(redaction.restore);
}

bool Sender::MayReceive(std::string_view target) const {
  return policy_->MayReceive(decision_, target);
}

std::unique_ptr<backends::Call> Sender::Start(backends::Backend& backend, std::string_view target,
                                              std::shared_ptr<backends::ChatSink> sink) const {
  if (!redacted_.has_value() || !policy_->Redacts(decision_, target)) {
    return backend.Start(chat_, std::move(sink));
  }
  return backend.Start(*redacted_, std::make_shared<RestoringSink>(restore_, std::move(sink)));
}

}  // namespace switchyard::gateway
