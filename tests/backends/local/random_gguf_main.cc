// switchyard_random_gguf: writes a random-weight Llama GGUF for the engine benchmark.
//
//   switchyard_random_gguf --tokenizer-from stories260K.gguf --out random-200m.gguf
//       [--embd 1024] [--layers 16] [--heads 16] [--kv-heads 16] [--ff 2816] [--type q8_0]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tests/backends/local/random_gguf.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: switchyard_random_gguf --tokenizer-from GGUF --out FILE [--embd N] "
               "[--layers N] [--heads N] [--kv-heads N] [--ff N] [--type q8_0|q4_0|f16] "
               "[--seed N]\n");
  return 2;
}

bool ParseInt(const char* text, int32_t& out) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value <= 0 || value > (1 << 20)) return false;
  out = static_cast<int32_t>(value);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  switchyard::testing::RandomGgufOptions options;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) return Usage();
    const char* value = argv[++i];
    bool ok = true;
    if (flag == "--tokenizer-from") {
      options.tokenizer_from = value;
    } else if (flag == "--out") {
      out = value;
    } else if (flag == "--embd") {
      ok = ParseInt(value, options.n_embd);
    } else if (flag == "--layers") {
      ok = ParseInt(value, options.n_layer);
    } else if (flag == "--heads") {
      ok = ParseInt(value, options.n_head);
    } else if (flag == "--kv-heads") {
      ok = ParseInt(value, options.n_head_kv);
    } else if (flag == "--ff") {
      ok = ParseInt(value, options.n_ff);
    } else if (flag == "--type") {
      options.type = value;
    } else if (flag == "--seed") {
      options.seed = std::strtoull(value, nullptr, 10);
    } else {
      std::fprintf(stderr, "switchyard_random_gguf: unknown flag %s\n", argv[i - 1]);
      return Usage();
    }
    if (!ok) {
      std::fprintf(stderr, "switchyard_random_gguf: %s needs a positive integer, got '%s'\n",
                   argv[i - 1], value);
      return 2;
    }
  }
  if (options.tokenizer_from.empty() || out.empty()) return Usage();
  auto info = switchyard::testing::WriteRandomGguf(options, out);
  if (!info.ok()) {
    std::fprintf(stderr, "switchyard_random_gguf: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  std::printf("%s: %.1fM parameters, vocab %lld, %.1f MiB\n", out.c_str(),
              static_cast<double>(info->parameters) / 1e6, static_cast<long long>(info->n_vocab),
              static_cast<double>(info->bytes) / (1024.0 * 1024.0));
  return 0;
}
