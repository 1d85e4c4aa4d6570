// What the HTTP path spends on one request's JSON without any I/O: reading the client's chat
// completions body, and writing the OpenAI-compatible upstream body, directly and through the
// DOM it replaced. Not a test: run it by hand (./request_bench).
#include <memory>
#include <string>

#include "backends/remote/curl_loop.h"
#include "backends/remote/openai_backend.h"
#include "benchmark/benchmark.h"
#include "gateway/json_view.h"
#include "gateway/openai_codec.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

// About 1 KiB of prose with the odd quote and newline, like the data-plane benchmark's prompt.
std::string Prompt() {
  std::string text;
  while (text.size() < 1024) text += "The quick \"brown\" fox jumps over the lazy dog.\n";
  return text;
}

backends::ChatRequest Request() {
  backends::ChatRequest request;
  request.messages = {{"system", "You are brief."}, {"user", Prompt()}};
  request.max_tokens = 16;
  request.temperature = 0.7f;
  return request;
}

std::unique_ptr<backends::OpenAiBackend> Backend() {
  static std::shared_ptr<backends::CurlLoop> loop = *backends::CurlLoop::Create();
  backends::OpenAiOptions options;
  options.base_url = "http://127.0.0.1:9/v1";
  options.model = "gpt-4o-mini";
  return *backends::OpenAiBackend::Create(options, loop);
}

void BM_UpstreamBodyDirect(benchmark::State& state) {
  auto backend = Backend();
  const backends::ChatRequest request = Request();
  for (auto _ : state) benchmark::DoNotOptimize(backend->BuildRequestBody(request));
}
BENCHMARK(BM_UpstreamBodyDirect);

void BM_UpstreamBodyDom(benchmark::State& state) {
  auto backend = Backend();
  const backends::ChatRequest request = Request();
  for (auto _ : state) benchmark::DoNotOptimize(backend->DomRequestBody(request));
}
BENCHMARK(BM_UpstreamBodyDom);

std::string ClientBody() {
  return nlohmann::json{{"model", "auto"},
                        {"max_tokens", 16},
                        {"messages", {{{"role", "user"}, {"content", Prompt()}}}}}
      .dump();
}

void BM_ParseChatCompletionRequest(benchmark::State& state) {
  const std::string body = ClientBody();
  for (auto _ : state) benchmark::DoNotOptimize(gateway::ParseChatCompletionRequest(body));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseChatCompletionRequest);

// The same request read off nlohmann's DOM, the path for bodies simdjson declines (and, before
// session 14, every body's path after simdjson had validated it).
void BM_ParseChatCompletionRequestNlohmann(benchmark::State& state) {
  const std::string body = ClientBody();
  for (auto _ : state) {
    benchmark::DoNotOptimize(gateway::ChatCompletionFromJson(nlohmann::json::parse(body)));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseChatCompletionRequestNlohmann);

// The body to a DOM: simdjson's (what the gateway does) against nlohmann's.
void BM_ParseJsonBody(benchmark::State& state) {
  const std::string body = ClientBody();
  for (auto _ : state) benchmark::DoNotOptimize(gateway::JsonBody::Parse(body));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseJsonBody);

void BM_ParseJsonNlohmann(benchmark::State& state) {
  const std::string body = ClientBody();
  for (auto _ : state) {
    benchmark::DoNotOptimize(nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseJsonNlohmann);

}  // namespace
}  // namespace switchyard

BENCHMARK_MAIN();
