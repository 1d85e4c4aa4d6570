#include "backends/remote/http1.h"

#include <curl/curl.h>

#include <limits>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backends/remote/curl_loop.h"

namespace switchyard::backends {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
  void operator()(char* text) const { curl_free(text); }
};
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

// One part of a parsed URL; empty when it is missing.
CurlString UrlPart(CURLU* url, CURLUPart part, unsigned flags = 0) {
  char* text = nullptr;
  if (curl_url_get(url, part, &text, flags) != CURLUE_OK) return nullptr;
  return CurlString(text);
}

}  // namespace

std::optional<PlainHttpOrigin> ParsePlainHttpUrl(const std::string& url) {
  if (!absl::StartsWithIgnoreCase(url, "http://")) return std::nullopt;
  std::unique_ptr<CURLU, UrlDeleter> parsed(curl_url());
  if (parsed == nullptr || curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return std::nullopt;
  }
  if (UrlPart(parsed.get(), CURLUPART_USER) != nullptr ||
      UrlPart(parsed.get(), CURLUPART_PASSWORD) != nullptr) {
    return std::nullopt;
  }
  CurlString host = UrlPart(parsed.get(), CURLUPART_HOST);
  CurlString port = UrlPart(parsed.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  CurlString path = UrlPart(parsed.get(), CURLUPART_PATH);
  CurlString query = UrlPart(parsed.get(), CURLUPART_QUERY);
  PlainHttpOrigin origin;
  int port_number = 0;
  if (host == nullptr || port == nullptr || !absl::SimpleAtoi(port.get(), &port_number) ||
      port_number <= 0 || port_number > 65535) {
    return std::nullopt;
  }
  origin.port = static_cast<uint16_t>(port_number);
  absl::string_view name = host.get();
  const bool bracketed = absl::StartsWith(name, "[") && absl::EndsWith(name, "]");
  if (bracketed) name = name.substr(1, name.size() - 2);
  origin.host = std::string(name);
  boost::system::error_code ec;
  boost::asio::ip::address address = boost::asio::ip::make_address(origin.host, ec);
  if (!ec) origin.address = address;
  origin.host_header = host.get();
  if (origin.port != 80) absl::StrAppend(&origin.host_header, ":", origin.port);
  origin.target = path != nullptr && path.get()[0] != '\0' ? path.get() : "/";
  if (query != nullptr) absl::StrAppend(&origin.target, "?", query.get());
  origin.key = origin.host_header;
  return origin;
}

std::string SerializeRequestHead(const PlainHttpOrigin& origin, const HttpRequest& request) {
  const bool post = !request.body.empty();
  std::string head;
  head.reserve(128 + origin.target.size() + 64 * request.headers.size());
  absl::StrAppend(&head, post ? "POST " : "GET ", origin.target, " HTTP/1.1\r\nHost: ",
                  origin.host_header, "\r\n");
  for (const std::string& line : request.headers) {
    const size_t colon = line.find(':');
    if (colon != std::string::npos &&
        absl::StripAsciiWhitespace(absl::string_view(line).substr(colon + 1)).empty()) {
      continue;
    }
    absl::StrAppend(&head, line, "\r\n");
  }
  if (post) absl::StrAppend(&head, "Content-Length: ", request.body.size(), "\r\n");
  head += "\r\n";
  return head;
}

ResponseParser::ResponseParser(ResponseEvents* events) : events_(events) {
  header_limit(64 << 10);
  // Not boost::none: Beast 1.74 compares a Content-Length against the optional itself, and every
  // number is more than none.
  body_limit(std::numeric_limits<std::uint64_t>::max());
  // Parse the body in the same put() as the head, so one read is one pass.
  eager(true);
}

void ResponseParser::on_response_impl(int code, string_view, int, error_code&) {
  events_->OnStatus(code);
}

void ResponseParser::on_field_impl(boost::beast::http::field, string_view name_string,
                                   string_view value, error_code&) {
  events_->OnField(std::string_view(name_string.data(), name_string.size()),
                   std::string_view(value.data(), value.size()));
}

void ResponseParser::on_header_impl(error_code&) { events_->OnHeaderDone(); }

std::size_t ResponseParser::on_body_impl(string_view body, error_code& ec) {
  if (!events_->OnBody(std::string_view(body.data(), body.size()))) {
    ec = boost::asio::error::operation_aborted;
  }
  return body.size();
}

std::size_t ResponseParser::on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) {
  return on_body_impl(body, ec);
}

}  // namespace switchyard::backends
