// Classify cost: a 4 KiB prompt against every built-in detector plus a 10,000-term dictionary.
// Run: taskset -c 1 policies_bench --benchmark_repetitions=20 --benchmark_report_aggregates_only=true
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "policies/policy_set.h"
#include "policies/yaml_util.h"

namespace switchyard::policies {
namespace {

std::string Word(std::mt19937& rng, int min_len, int max_len) {
  std::uniform_int_distribution<int> len(min_len, max_len);
  std::uniform_int_distribution<int> letter(0, 25);
  std::string out;
  for (int i = len(rng); i > 0; --i) out.push_back(static_cast<char>('a' + letter(rng)));
  return out;
}

// 10,000 made-up customer and project names, one in ten a two-word phrase.
std::vector<std::string> Dictionary() {
  std::mt19937 rng(42);
  std::vector<std::string> terms;
  for (int i = 0; i < 10000; ++i) {
    std::string term = Word(rng, 5, 11);
    if (i % 10 == 0) term += " " + Word(rng, 4, 8);
    terms.push_back(std::move(term));
  }
  return terms;
}

std::shared_ptr<const PolicySet> LoadPolicy(const std::vector<std::string>& terms) {
  std::string yaml = R"EOF(
policy:
  default: local
  sensitivity:
    dictionaries:
      - name: customers
        level: confidential
        terms:
)EOF";
  for (const std::string& term : terms) yaml += "          - \"" + term + "\"\n";
  yaml += R"EOF(
  clearance: { frontier: internal }
  rules:
    - name: secrets-local
      when: { findings: [secret, credit_card, us_ssn] }
      route: local
    - name: confidential-local
      when: { min_level: confidential }
      route: local
    - name: block
      when: { keywords: [forbidden, "do not send"] }
      deny: blocked
    - name: rest
      route: frontier
)EOF";
  auto root = ParseYaml(yaml, "bench.yaml");
  if (!root.ok()) std::abort();
  auto set = PolicySet::FromYaml((*root)["policy"], "bench.yaml",
                                 {{"local", Locality::kLocal}, {"frontier", Locality::kRemote}},
                                 "bench");
  if (!set.ok()) std::abort();
  return *set;
}

// Prose with numbers, dates, versions and, when `with_findings`, an e-mail, a phone number and
// an IP address every eight sentences plus one dictionary term (about 22 findings per 4 KiB).
std::string Prompt(const std::vector<std::string>& terms, size_t bytes, bool with_findings) {
  std::vector<std::string> sentences = {
      "Please summarise the quarterly report and list the three biggest risks. ",
      "The deployment on 2024-03-15 moved the service to version 2.14.1 and cut latency by 12%. ",
      "Contact jane.doe@acme-corp.com or call +44 20 7123 4567 if the build breaks again. ",
      "The cluster at 10.20.30.40 handled 1,234,567 requests with a p99 of 250 ms. ",
      "Refactor the function below so it handles empty input and returns early. ",
      "Order #112-3456789-0123456 shipped; tracking 1Z999AA10123456784 arrives Friday. ",
      "We compared commit 3f786850e387550fdab836ed7e6dc881de23001b against main. ",
      "Write a short poem about autumn leaves in the style of a haiku sequence. ",
  };
  if (!with_findings) {
    sentences[2] = "Contact the on-call engineer if the build breaks again tonight. ";
    sentences[3] = "The cluster handled 1,234,567 requests with a p99 of 250 ms. ";
  }
  std::string out;
  for (size_t i = 0; out.size() < bytes; ++i) {
    out += sentences[i % sentences.size()];
    if (i == 20 && with_findings) out += "The " + terms[777] + " account renewal is due. ";
  }
  out.resize(bytes);
  return out;
}

// range(0): prompt bytes; range(1): 1 with findings, 0 plain prose.
void BM_Classify(benchmark::State& state) {
  static const std::vector<std::string> terms = Dictionary();
  static const std::shared_ptr<const PolicySet> set = LoadPolicy(terms);
  const std::string prompt =
      Prompt(terms, static_cast<size_t>(state.range(0)), state.range(1) != 0);
  RequestFeatures request;
  request.texts = {prompt};
  for (auto _ : state) {
    Decision decision = set->Classify(request);
    benchmark::DoNotOptimize(decision);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
  const Decision decision = set->Classify(request);
  state.counters["findings"] = static_cast<double>(decision.findings.size());
}
BENCHMARK(BM_Classify)
    ->ArgNames({"bytes", "findings"})
    ->Args({4096, 1})
    ->Args({4096, 0})
    ->Args({65536, 1})
    ->Unit(benchmark::kMicrosecond);

// The difficulty heuristic's own pass (part of every Classify above).
void BM_Difficulty(benchmark::State& state) {
  static const std::vector<std::string> terms = Dictionary();
  const std::string prompt = Prompt(terms, static_cast<size_t>(state.range(0)), true);
  const HeuristicDifficultyScorer scorer{HeuristicDifficultyScorer::Options{}};
  RequestFeatures request;
  request.texts = {prompt};
  for (auto _ : state) {
    DifficultyScore score = scorer.Score(request, 1000);
    benchmark::DoNotOptimize(score);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Difficulty)->ArgNames({"bytes"})->Arg(4096)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace switchyard::policies

BENCHMARK_MAIN();
