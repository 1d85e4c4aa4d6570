// Minimal leveled logging to stderr: one line per event, never prompt text or keys.
#ifndef SWITCHYARD_GATEWAY_LOG_H_
#define SWITCHYARD_GATEWAY_LOG_H_

#include <string_view>

#include "absl/strings/str_cat.h"

namespace switchyard::gateway {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Writes "<RFC 3339 UTC time> <level> <message>\n" in one write, so concurrent lines never mix.
void LogLine(LogLevel level, std::string_view message);

template <typename... Args>
void Log(LogLevel level, const Args&... args) {
  if (LogEnabled(level)) LogLine(level, absl::StrCat(args...));
}

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_LOG_H_
