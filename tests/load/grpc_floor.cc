// switchyard_grpc_floor: the gRPC stack with no gateway behind it, to show what gRPC itself costs
// on this machine. It serves switchyard.v1.Switchyard's Chat and StreamChat with a canned answer
// of --tokens tokens ("tok tok tok..."), using the same gRPC library and callback API as the
// gateway, so the load tool's gRPC runs against it measure the floor any gRPC front end pays here
// (client and server stack, HTTP/2, protobuf, their threads) and gateway minus floor is what the
// gateway's own work adds.
//
//   switchyard_grpc_floor [--port N] [--tokens N]
//
// A stream is shaped like the gateway's answer to an upstream that sends every token at once:
// the decision, the first token, then the other tokens with finish_reason and usage (the gateway
// merges text that arrives while a chunk is being written). Prints "grpc floor listening on
// 127.0.0.1:PORT" on stderr; runs until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "grpcpp/grpcpp.h"
#include "switchyard/v1/switchyard.grpc.pb.h"
#include "tests/load/parse_int.h"

namespace {

namespace v1 = ::switchyard::v1;
using ::switchyard::load::ParseInt;

struct Answer {
  v1::ChatResponse unary;
  v1::ChatChunk decision;
  v1::ChatChunk first;
  v1::ChatChunk rest;  // the other tokens, finish_reason and usage
};

Answer Render(int tokens) {
  Answer answer;
  v1::Decision decision;
  decision.set_target("cloud");
  decision.set_rule("default");
  decision.set_locality("remote");
  v1::Usage usage;
  usage.set_prompt_tokens(7);
  usage.set_completion_tokens(tokens);
  usage.set_total_tokens(7 + tokens);
  std::string rest;
  for (int i = 1; i < tokens; ++i) rest += " tok";

  answer.unary.set_id("chatcmpl-floor");
  answer.unary.set_content("tok" + rest);
  answer.unary.set_finish_reason("stop");
  *answer.unary.mutable_usage() = usage;
  *answer.unary.mutable_decision() = decision;
  answer.decision.set_id("chatcmpl-floor");
  *answer.decision.mutable_decision() = decision;
  answer.first.set_id("chatcmpl-floor");
  answer.first.set_delta("tok");
  answer.rest.set_id("chatcmpl-floor");
  answer.rest.set_delta(rest);
  answer.rest.set_finish_reason("stop");
  *answer.rest.mutable_usage() = usage;
  return answer;
}

class StreamReactor : public grpc::ServerWriteReactor<v1::ChatChunk> {
 public:
  explicit StreamReactor(const Answer& answer) : answer_(answer) { StartWrite(&answer_.decision); }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stream closed"));
      return;
    }
    if (++written_ == 1) {
      StartWrite(&answer_.first);
    } else {
      StartWriteAndFinish(&answer_.rest, grpc::WriteOptions(), grpc::Status::OK);
    }
  }
  void OnDone() override { delete this; }

 private:
  const Answer& answer_;
  int written_ = 0;
};

class FloorService : public v1::Switchyard::CallbackService {
 public:
  explicit FloorService(int tokens) : answer_(Render(tokens)) {}

  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* context, const v1::ChatRequest*,
                                 v1::ChatResponse* response) override {
    *response = answer_.unary;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerWriteReactor<v1::ChatChunk>* StreamChat(grpc::CallbackServerContext*,
                                                      const v1::ChatRequest*) override {
    return new StreamReactor(answer_);
  }

 private:
  const Answer answer_;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t port = 0;
  int64_t tokens = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    int64_t number = 0;
    if (flag == "--port" && ParseInt(value, 65535, &number)) {
      port = number;
    } else if (flag == "--tokens" && ParseInt(value, 1'000'000, &number) && number >= 1) {
      tokens = number;
    } else {
      std::fprintf(stderr, "usage: switchyard_grpc_floor [--port N] [--tokens N]\n"
                           "bad argument: %s %s\n", argv[i], value);
      return 2;
    }
    ++i;
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  FloorService service(static_cast<int>(tokens));
  int bound = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound == 0) {
    std::fprintf(stderr, "switchyard_grpc_floor: cannot listen on 127.0.0.1:%lld\n",
                 static_cast<long long>(port));
    return 1;
  }
  std::fprintf(stderr, "grpc floor listening on 127.0.0.1:%d\n", bound);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown();
  return 0;
}
