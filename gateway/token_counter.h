// Exact prompt token counts for the policy's cost estimate: a local target's own tokenizer,
// asked through its backend (policies/ stays free of engines).
#ifndef SWITCHYARD_GATEWAY_TOKEN_COUNTER_H_
#define SWITCHYARD_GATEWAY_TOKEN_COUNTER_H_

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "gateway/gateway.h"
#include "policies/policy_set.h"

namespace switchyard::gateway {

// Counts `messages` with the backend of the named target. Views `runtime` and `messages`, which
// must outlive it; thread-safe (Backend::CountTokens is).
class BackendTokenCounter : public policies::TokenCounter {
 public:
  BackendTokenCounter(const Runtime& runtime, const std::vector<backends::Message>& messages)
      : runtime_(runtime), messages_(messages) {}

  std::optional<int64_t> CountPromptTokens(std::string_view target) const override {
    auto backend = runtime_.backends.find(target);
    if (backend == runtime_.backends.end()) return std::nullopt;
    return backend->second->CountTokens(messages_);
  }

 private:
  const Runtime& runtime_;
  const std::vector<backends::Message>& messages_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_TOKEN_COUNTER_H_
