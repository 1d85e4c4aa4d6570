// The pieces of the loop's own HTTP/1.1 client (CurlLoop's direct path, see curl_loop.h) that
// need no socket: where a plain "http://" URL points, the request head to send, and a response
// parser (Boost.Beast's) that hands the status, the headers and each piece of the body on as
// they arrive, whatever the framing (Content-Length, chunked, or up to the connection's end).
#ifndef SWITCHYARD_BACKENDS_REMOTE_HTTP1_H_
#define SWITCHYARD_BACKENDS_REMOTE_HTTP1_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "boost/asio/ip/address.hpp"
#include "boost/beast/http/basic_parser.hpp"

namespace switchyard::backends {

struct HttpRequest;

// Where a plain-HTTP request goes.
struct PlainHttpOrigin {
  std::string host;  // a name or an address, IPv6 without brackets
  uint16_t port = 80;
  // The address when `host` is a literal one, so no resolver is needed.
  std::optional<boost::asio::ip::address> address;
  std::string host_header;  // the Host header's value: host (bracketed if IPv6), ":port" unless 80
  std::string target;       // path and query as the request line carries them
  std::string key;          // "host_header", the connection pool's key
};

// The origin of an "http://" URL (libcurl's URL parser). Empty for any other scheme, for a URL
// libcurl refuses, and for one that carries user credentials (left to libcurl, which knows how
// to send them).
std::optional<PlainHttpOrigin> ParsePlainHttpUrl(const std::string& url);

// The request line and headers, up to and including the empty line: POST when the request has a
// body (with its Content-Length), GET otherwise; Host first, then the caller's header lines as
// given ("Name: value"; a line "Name:" with nothing after the colon is skipped, as libcurl
// reads it as "do not send this header").
std::string SerializeRequestHead(const PlainHttpOrigin& origin, const HttpRequest& request);

// What a ResponseParser reports, in this order: OnStatus, OnField for each header, OnHeaderDone,
// then OnBody for each piece of the body. An interim (1xx) response is reported the same way and
// is followed by the final one, after the caller resets the parser.
class ResponseEvents {
 public:
  virtual ~ResponseEvents() = default;
  virtual void OnStatus(int status) = 0;
  virtual void OnField(std::string_view name, std::string_view value) = 0;
  virtual void OnHeaderDone() = 0;
  // Return false to stop: the parse then fails with operation_aborted.
  virtual bool OnBody(std::string_view data) = 0;
};

// A Beast response parser that keeps nothing itself: every piece goes to `events`. The body has
// no size limit here (the caller counts); the head may be 64 KiB.
class ResponseParser final : public boost::beast::http::basic_parser<false> {
 public:
  explicit ResponseParser(ResponseEvents* events);

 private:
  using error_code = boost::beast::error_code;
  using string_view = boost::beast::string_view;

  void on_request_impl(boost::beast::http::verb, string_view, string_view, int,
                       error_code&) override {}
  void on_response_impl(int code, string_view reason, int version, error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         error_code& ec) override {}
  std::size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, string_view extensions,
                            error_code& ec) override {}
  std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body,
                                 error_code& ec) override;
  void on_finish_impl(error_code& ec) override {}

  ResponseEvents* const events_;
};

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_HTTP1_H_
