#include "backends/local/llama_log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "llama.h"

namespace switchyard::backends {
namespace {

std::atomic<bool> g_log_everything{false};
// A GGML_LOG_LEVEL_CONT piece continues the previous message and takes its level.
std::atomic<int> g_last_level{GGML_LOG_LEVEL_NONE};

void FilterLog(ggml_log_level level, const char* text, void* /*user_data*/) {
  int effective = level;
  if (level == GGML_LOG_LEVEL_CONT) {
    effective = g_last_level.load(std::memory_order_relaxed);
  } else {
    g_last_level.store(level, std::memory_order_relaxed);
  }
  if (effective < GGML_LOG_LEVEL_ERROR && !g_log_everything.load(std::memory_order_relaxed)) {
    return;
  }
  if (level == GGML_LOG_LEVEL_CONT) {
    fputs(text, stderr);
  } else {
    fprintf(stderr, "llama.cpp: %s", text);
  }
}

}  // namespace

void RouteLlamaLogs() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* setting = getenv("SWITCHYARD_LLAMA_LOG");
    g_log_everything.store(setting != nullptr && strcmp(setting, "all") == 0);
    llama_log_set(FilterLog, nullptr);
    llama_backend_init();
  });
}

}  // namespace switchyard::backends
