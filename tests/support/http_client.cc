#include "tests/support/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <sstream>

namespace switchyard::testing {
namespace {

struct Transfer {
  HttpResult* result;
  const HttpOptions* options;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  std::string piece(data, size * count);
  transfer->result->body += piece;
  if (transfer->options->on_data && !transfer->options->on_data(piece)) return 0;
  return size * count;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  std::string line(data, size * count);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    transfer->result->headers[name] = value;
  }
  return size * count;
}

HttpResult Perform(const std::string& url, const std::string* body, const HttpOptions& options) {
  HttpResult result;
  CURL* curl = curl_easy_init();
  Transfer transfer{&result, &options};
  curl_slist* headers = nullptr;
  for (const std::string& header : options.headers) headers = curl_slist_append(headers, header.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout_seconds * 1000));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  if (body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  if (headers != nullptr) curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  CURLcode code = curl_easy_perform(curl);
  if (code == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  } else {
    result.error = curl_easy_strerror(code);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return result;
}

}  // namespace

HttpResult HttpGet(const std::string& url, const HttpOptions& options) {
  return Perform(url, nullptr, options);
}

HttpResult HttpPost(const std::string& url, const std::string& body, const HttpOptions& options) {
  HttpOptions with_type = options;
  with_type.headers.push_back("Content-Type: application/json");
  return Perform(url, &body, with_type);
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> data;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("data: ", 0) == 0) data.push_back(line.substr(6));
  }
  return data;
}

}  // namespace switchyard::testing
