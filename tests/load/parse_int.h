// Parses a whole decimal flag value in [0, max]; shared by the load-test servers.
#ifndef SWITCHYARD_TESTS_LOAD_PARSE_INT_H_
#define SWITCHYARD_TESTS_LOAD_PARSE_INT_H_

#include <cerrno>
#include <cstdint>
#include <cstdlib>

namespace switchyard::load {

inline bool ParseInt(const char* text, int64_t max, int64_t* value) {
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || parsed < 0 || parsed > max) return false;
  *value = parsed;
  return true;
}

}  // namespace switchyard::load

#endif  // SWITCHYARD_TESTS_LOAD_PARSE_INT_H_
