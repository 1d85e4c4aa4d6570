#include "gateway/grpc_service.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <optional>

#include "policies/absl_compat.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gateway/budget.h"
#include "gateway/decision_json.h"
#include "gateway/openai_codec.h"
#include "gateway/status_map.h"

namespace switchyard::gateway {
namespace {

absl::Status FieldError(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("'", policies::Sv(field), "' ", policies::Sv(problem)));
}

void ToProto(const Routed& routed, v1::Decision& out) {
  DecisionToProto(routed, out);
}

void ToProto(const backends::Usage& usage, v1::Usage& out) {
  out.set_prompt_tokens(usage.prompt_tokens);
  out.set_completion_tokens(usage.completion_tokens);
  out.set_total_tokens(usage.prompt_tokens + usage.completion_tokens);
}

// The caller's API key from the `authorization` (Bearer) or `x-api-key` metadata.
absl::StatusOr<Principal> AuthenticateCall(Gateway& gateway,
                                           const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto value = [&](const char* name) -> std::optional<std::string_view> {
    auto it = metadata.find(name);
    if (it == metadata.end()) return std::nullopt;
    return std::string_view(it->second.data(), it->second.size());
  };
  return gateway.Authenticate(PresentedKey(value("authorization"), value("x-api-key")), "grpc");
}

// Converts and routes an authenticated chat request, counting a refusal in the metrics.
// `stream`: the answer goes out as it is generated (StreamChat).
absl::Status Admit(Gateway& gateway, const absl::StatusOr<Principal>& principal,
                   const v1::ChatRequest& proto, bool stream,
                   absl::StatusOr<InboundRequest>& request, Routed& routed) {
  const auto received = std::chrono::steady_clock::now();
  if (!principal.ok()) return principal.status();
  request = FromProto(proto);
  if (!request.ok()) {
    gateway.RecordRejected(request.status(), nullptr, nullptr, "grpc");
    return request.status();
  }
  request->edge = "grpc";
  request->stream = stream;
  ApplyPrincipal(*principal, *request);
  request->received = received;
  return gateway.Admit(*request, routed);
}

// The served-by, retries and fallbacks explanation as trailing metadata (the gRPC twin of the
// HTTP x-switchyard-* headers). Call before Finish.
void AddExplanation(grpc::CallbackServerContext* context, const backends::Completion& completion) {
  if (completion.served_by.empty()) return;
  context->AddTrailingMetadata("x-switchyard-served-by", completion.served_by);
  context->AddTrailingMetadata("x-switchyard-retries", std::to_string(completion.retries));
  context->AddTrailingMetadata("x-switchyard-fallbacks", std::to_string(completion.fallbacks));
}

// A rate or concurrency limit's hint, or an upstream's Retry-After, as trailing metadata
// `retry-after` (whole seconds, like the HTTP header), so gRPC clients can back off as HTTP
// clients do. Call before Finish.
void AddRetryAfter(grpc::CallbackServerContext* context, const absl::Status& status) {
  if (std::optional<int64_t> seconds = RetryAfterSeconds(status)) {
    context->AddTrailingMetadata("retry-after", std::to_string(*seconds));
  }
}

// Shared by the chat reactors: decides who finishes the RPC (exactly once) and owns the backend
// call, so gRPC cancellation, backend completion and reactor teardown can race safely.
class CallState {
 public:
  // Returns true to exactly one caller.
  bool TryFinish() {
    absl::MutexLock lock(&mu_);
    if (finished_) return false;
    finished_ = true;
    return true;
  }
  bool finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  // Adopts the backend call; cancels it at once if the RPC already ended.
  void SetCall(std::unique_ptr<backends::Call> call) {
    {
      absl::MutexLock lock(&mu_);
      if (!torn_down_) {
        call_ = std::move(call);
        return;
      }
    }
    call->Cancel();
  }
  // Cancels the backend call (if any); after this returns no sink method runs.
  void CancelCall(bool tear_down) {
    std::unique_ptr<backends::Call> call;
    {
      absl::MutexLock lock(&mu_);
      torn_down_ = torn_down_ || tear_down;
      call = std::move(call_);
    }
    if (call) call->Cancel();
  }

 private:
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool torn_down_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<backends::Call> call_ ABSL_GUARDED_BY(mu_);
};

class ChatReactor : public grpc::ServerUnaryReactor {
 public:
  ChatReactor(Gateway& gateway, grpc::CallbackServerContext* context,
              absl::StatusOr<Principal> principal, const v1::ChatRequest& request,
              v1::ChatResponse* response)
      : gateway_(gateway), context_(context), response_(response) {
    Begin(principal, request);
  }

  void OnCancel() override {
    if (!state_->TryFinish()) return;
    state_->CancelCall(false);
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }

  void OnDone() override {
    state_->CancelCall(true);
    Unref();
  }

 private:
  class Sink : public backends::ChatSink {
   public:
    Sink(ChatReactor* reactor, std::shared_ptr<CallState> state)
        : reactor_(reactor), state_(std::move(state)) {}
    void OnDelta(std::string_view text) override { text_.append(text); }
    void OnDone(const absl::Status& status, const backends::Completion& completion) override {
      if (!state_->TryFinish()) return;
      AddExplanation(reactor_->context_, completion);
      AddRetryAfter(reactor_->context_, status);
      if (status.ok()) {
        reactor_->response_->set_content(std::move(text_));
        reactor_->response_->set_finish_reason(
            std::string(FinishReasonName(completion.finish_reason)));
        ToProto(completion.usage, *reactor_->response_->mutable_usage());
      }
      reactor_->Finish(ToGrpcStatus(status));
    }

   private:
    ChatReactor* reactor_;
    std::shared_ptr<CallState> state_;
    std::string text_;
  };

  void Begin(const absl::StatusOr<Principal>& principal, const v1::ChatRequest& proto) {
    absl::StatusOr<InboundRequest> request;
    Routed& routed = routed_;
    if (absl::Status status = Admit(gateway_, principal, proto, /*stream=*/false, request, routed);
        !status.ok()) {
      if (status.code() == absl::StatusCode::kPermissionDenied) {
        ToProto(routed, *response_->mutable_decision());
      }
      state_->TryFinish();
      AddRetryAfter(context_, status);
      Finish(ToGrpcStatus(status));
      Unref();
      return;
    }
    request->chat.request_id = gateway_.NewRequestId();
    response_->set_id(request->chat.request_id);
    ToProto(routed, *response_->mutable_decision());
    state_->SetCall(
        gateway_.Dispatch(routed, *request, std::make_shared<Sink>(this, state_)));
    Unref();
  }

  // One reference for Begin, one for gRPC's OnDone: Finish may complete (and OnDone run) on
  // another thread before Begin returns.
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  Gateway& gateway_;
  grpc::CallbackServerContext* const context_;
  // Keeps the runtime (config and backends) of this request alive until the reactor is done, on
  // a gRPC thread, never on a backend thread.
  Routed routed_;
  v1::ChatResponse* response_;
  std::shared_ptr<CallState> state_ = std::make_shared<CallState>();
  std::atomic<int> refs_{2};
};

class StreamChatReactor : public grpc::ServerWriteReactor<v1::ChatChunk> {
 public:
  StreamChatReactor(Gateway& gateway, grpc::CallbackServerContext* context,
                    absl::StatusOr<Principal> principal, const v1::ChatRequest& request)
      : gateway_(gateway), context_(context) {
    Begin(principal, request);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The stream broke: the client is gone.
        queue_.clear();
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client stream closed");
      }
      finish = PumpLocked();
    }
    if (!ok) state_->CancelCall(false);
    if (finish) Finish(*finish);
  }

  void OnCancel() override {
    state_->CancelCall(false);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      queue_.clear();
      if (!final_status_) {
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      }
      finish = PumpLocked();
    }
    if (finish) Finish(*finish);
  }

  void OnDone() override {
    state_->CancelCall(true);
    Unref();
  }

  // Called by the sink on a backend thread. `explained` (with a final status) becomes trailing
  // metadata.
  // `cause`: the backend's status behind `final_status`, for its Retry-After.
  void Enqueue(v1::ChatChunk chunk, std::optional<grpc::Status> final_status,
               const backends::Completion* explained = nullptr,
               const absl::Status* cause = nullptr) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (final_status_) return;  // already ending (cancelled)
      // Under the lock, before final_status_ is set: Finish cannot have been called yet.
      if (explained != nullptr) AddExplanation(context_, *explained);
      if (cause != nullptr) AddRetryAfter(context_, *cause);
      if (chunk.ByteSizeLong() > 0 && !MergeLocked(chunk)) queue_.push_back(std::move(chunk));
      if (final_status) final_status_ = std::move(final_status);
      finish = PumpLocked();
    }
    if (finish) Finish(*finish);
  }

 private:
  class Sink : public backends::ChatSink {
   public:
    Sink(StreamChatReactor* reactor, std::string id) : reactor_(reactor), id_(std::move(id)) {}
    // Text of a burst (deltas that arrived together) is held and goes out as one chunk.
    void BeginBurst() override { in_burst_ = true; }
    void EndBurst() override {
      in_burst_ = false;
      Send();
    }
    void OnDelta(std::string_view text) override {
      held_.append(text);
      if (!in_burst_) Send();
    }
    void OnDone(const absl::Status& status, const backends::Completion& completion) override {
      v1::ChatChunk chunk;
      if (status.ok()) {
        chunk.set_id(id_);
        chunk.set_delta(std::move(held_));
        chunk.set_finish_reason(std::string(FinishReasonName(completion.finish_reason)));
        ToProto(completion.usage, *chunk.mutable_usage());
      } else {
        Send();  // what came before the failure, then the error status
      }
      reactor_->Enqueue(std::move(chunk), ToGrpcStatus(status), &completion, &status);
    }

   private:
    void Send() {
      if (held_.empty()) return;
      v1::ChatChunk chunk;
      chunk.set_id(id_);
      chunk.set_delta(std::move(held_));
      held_.clear();
      reactor_->Enqueue(std::move(chunk), std::nullopt);
    }

    StreamChatReactor* reactor_;
    std::string id_;
    // Sink calls of one request never overlap (backend.h), so these need no lock.
    bool in_burst_ = false;
    std::string held_;
  };

  // While a write is in flight, a chunk without a decision folds into the queued chunk before
  // it unless that one carries the decision or is already the last: its text is appended (a
  // delta is the text since the previous chunk), its finish_reason and usage move over. A
  // client reading slower than the upstream writes gets the same text in fewer messages, so a
  // fast stream costs a write per round trip instead of one per token.
  bool MergeLocked(v1::ChatChunk& chunk) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty() || chunk.has_decision()) return false;
    v1::ChatChunk& last = queue_.back();
    if (last.has_decision() || !last.finish_reason().empty() || last.has_usage()) return false;
    last.mutable_delta()->append(chunk.delta());
    if (!chunk.finish_reason().empty()) last.set_finish_reason(chunk.finish_reason());
    if (chunk.has_usage()) *last.mutable_usage() = std::move(*chunk.mutable_usage());
    return true;
  }

  // Starts the next write, or decides to finish. Returns the status to Finish with (outside the
  // lock) when the stream is over. The last chunk goes out with the status in one operation.
  std::optional<grpc::Status> PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finish_called_) return std::nullopt;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      if (queue_.empty() && final_status_) {
        // No OnWriteDone follows StartWriteAndFinish; OnDone ends the call.
        finish_called_ = true;
        StartWriteAndFinish(&current_, grpc::WriteOptions(), *final_status_);
        return std::nullopt;
      }
      writing_ = true;
      StartWrite(&current_);
      return std::nullopt;
    }
    if (final_status_) {
      finish_called_ = true;
      return final_status_;
    }
    return std::nullopt;
  }

  void Begin(const absl::StatusOr<Principal>& principal, const v1::ChatRequest& proto) {
    absl::StatusOr<InboundRequest> request;
    Routed& routed = routed_;
    if (absl::Status status = Admit(gateway_, principal, proto, /*stream=*/true, request, routed);
        !status.ok()) {
      AddRetryAfter(context_, status);
      Enqueue(v1::ChatChunk(), ToGrpcStatus(status));
      Unref();
      return;
    }
    request->chat.request_id = gateway_.NewRequestId();
    v1::ChatChunk first;
    first.set_id(request->chat.request_id);
    ToProto(routed, *first.mutable_decision());
    Enqueue(std::move(first), std::nullopt);
    state_->SetCall(gateway_.Dispatch(
        routed, *request, std::make_shared<Sink>(this, request->chat.request_id)));
    Unref();
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  Gateway& gateway_;
  grpc::CallbackServerContext* const context_;
  Routed routed_;  // as in ChatReactor
  std::shared_ptr<CallState> state_ = std::make_shared<CallState>();
  std::atomic<int> refs_{2};
  absl::Mutex mu_;
  std::deque<v1::ChatChunk> queue_ ABSL_GUARDED_BY(mu_);
  v1::ChatChunk current_;  // the message of the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<InboundRequest> FromProto(const v1::ChatRequest& proto) {
  InboundRequest request;
  request.requested_model = proto.model().empty() ? "auto" : proto.model();
  if (proto.messages_size() == 0) return FieldError("messages", "must contain at least one message");
  for (int i = 0; i < proto.messages_size(); ++i) {
    const v1::Message& message = proto.messages(i);
    const std::string& role = message.role();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return FieldError(absl::StrCat("messages[", i, "].role"),
                        absl::StrCat("'", role, "' is not one of system, user, assistant, tool"));
    }
    request.chat.messages.push_back({role, message.content()});
  }
  if (proto.has_max_tokens()) {
    if (proto.max_tokens() < 1) return FieldError("max_tokens", "must be a positive integer");
    request.chat.max_tokens = proto.max_tokens();
  }
  if (proto.has_temperature()) {
    if (!(proto.temperature() >= 0 && proto.temperature() <= 2)) {
      return FieldError("temperature", "must be between 0 and 2");
    }
    request.chat.temperature = proto.temperature();
  }
  if (proto.has_top_p()) {
    if (!(proto.top_p() >= 0 && proto.top_p() <= 1)) {
      return FieldError("top_p", "must be between 0 and 1");
    }
    request.chat.top_p = proto.top_p();
  }
  if (proto.stop_size() > 4) return FieldError("stop", "may hold at most 4 sequences");
  for (const std::string& stop : proto.stop()) {
    if (stop.empty()) return FieldError("stop", "must not contain empty strings");
    request.chat.stop.push_back(stop);
  }
  if (proto.has_seed()) request.chat.seed = proto.seed();
  if (proto.has_top_k()) {
    if (proto.top_k() < 0) return FieldError("top_k", "must be at least 0");
    request.chat.top_k = proto.top_k();
  }
  if (proto.has_min_p()) {
    if (!(proto.min_p() >= 0 && proto.min_p() <= 1)) {
      return FieldError("min_p", "must be between 0 and 1");
    }
    request.chat.min_p = proto.min_p();
  }
  if (proto.has_repeat_penalty()) {
    if (!(proto.repeat_penalty() > 0 && proto.repeat_penalty() <= 10)) {
      return FieldError("repeat_penalty", "must be greater than 0 and at most 10");
    }
    request.chat.repeat_penalty = proto.repeat_penalty();
  }
  auto penalty = [](const char* name, float value, std::optional<float>& out) {
    if (!(value >= -2 && value <= 2)) return FieldError(name, "must be between -2 and 2");
    out = value;
    return absl::OkStatus();
  };
  if (proto.has_frequency_penalty()) {
    if (absl::Status s = penalty("frequency_penalty", proto.frequency_penalty(),
                                 request.chat.frequency_penalty);
        !s.ok()) {
      return s;
    }
  }
  if (proto.has_presence_penalty()) {
    if (absl::Status s = penalty("presence_penalty", proto.presence_penalty(),
                                 request.chat.presence_penalty);
        !s.ok()) {
      return s;
    }
  }
  request.chat.user = proto.user();
  for (const auto& [key, value] : proto.metadata()) request.metadata[key] = value;
  return request;
}

grpc::ServerUnaryReactor* GrpcService::Chat(grpc::CallbackServerContext* context,
                                            const v1::ChatRequest* request,
                                            v1::ChatResponse* response) {
  return new ChatReactor(gateway_, context, AuthenticateCall(gateway_, *context), *request,
                         response);
}

grpc::ServerWriteReactor<v1::ChatChunk>* GrpcService::StreamChat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  return new StreamChatReactor(gateway_, context, AuthenticateCall(gateway_, *context),
                               *request);
}

grpc::ServerUnaryReactor* GrpcService::Explain(grpc::CallbackServerContext* context,
                                               const v1::ChatRequest* request,
                                               v1::ExplainResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> principal = AuthenticateCall(gateway_, *context);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  absl::StatusOr<InboundRequest> inbound = FromProto(*request);
  if (!inbound.ok()) {
    reactor->Finish(ToGrpcStatus(inbound.status()));
    return reactor;
  }
  ApplyPrincipal(*principal, *inbound);
  Routed routed;
  absl::Status status = gateway_.Route(*inbound, routed);
  // A denial is an answer here, not an error: Explain says what would happen.
  if (!status.ok() && status.code() != absl::StatusCode::kPermissionDenied) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  ToProto(routed, *response->mutable_decision());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GrpcService::ListModels(grpc::CallbackServerContext* context,
                                                  const v1::ListModelsRequest*,
                                                  v1::ListModelsResponse* response) {
  if (absl::StatusOr<Principal> principal = AuthenticateCall(gateway_, *context);
      !principal.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  const std::shared_ptr<const Runtime> runtime = gateway_.runtime();
  v1::Model* auto_model = response->add_models();
  auto_model->set_id("auto");
  auto_model->set_kind("policy");
  for (const TargetConfig& target : runtime->config.targets) {
    v1::Model* model = response->add_models();
    model->set_id(target.name);
    model->set_kind(std::string(TargetKindName(target.kind)));
    model->set_locality(target.kind == TargetKind::kLocal ? "local" : "remote");
    model->set_model(target.kind == TargetKind::kLocal ? target.local.model : target.remote.model);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace switchyard::gateway
