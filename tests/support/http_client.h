// A small blocking HTTP client for tests (libcurl easy): real requests over loopback, with the
// status, headers and body as received, and SSE streams read event by event.
#ifndef SWITCHYARD_TESTS_SUPPORT_HTTP_CLIENT_H_
#define SWITCHYARD_TESTS_SUPPORT_HTTP_CLIENT_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace switchyard::testing {

struct HttpResult {
  long status = 0;         // 0 when the transfer failed
  std::string error;       // libcurl's message when status == 0
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct HttpOptions {
  std::vector<std::string> headers;  // "Name: value"
  double timeout_seconds = 60;
  // Called with each received body piece; return false to abort (a client going away).
  std::function<bool(const std::string&)> on_data;
};

HttpResult HttpGet(const std::string& url, const HttpOptions& options = {});
HttpResult HttpPost(const std::string& url, const std::string& body,
                    const HttpOptions& options = {});

// Splits an SSE body into the payloads of its "data:" lines.
std::vector<std::string> SseData(const std::string& body);

}  // namespace switchyard::testing

#endif  // SWITCHYARD_TESTS_SUPPORT_HTTP_CLIENT_H_
