// The socket-free pieces of the direct plain-HTTP path: which URLs it takes and where they point,
// and the request head it writes.
#include "backends/remote/http1.h"

#include "backends/remote/curl_loop.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::backends {
namespace {

TEST(ParsePlainHttpUrlTest, AddressPortAndTarget) {
  std::optional<PlainHttpOrigin> origin =
      ParsePlainHttpUrl("http://127.0.0.1:8080/v1/chat/completions?alt=sse");
  ASSERT_TRUE(origin.has_value());
  EXPECT_EQ(origin->host, "127.0.0.1");
  EXPECT_EQ(origin->port, 8080);
  ASSERT_TRUE(origin->address.has_value());
  EXPECT_EQ(origin->address->to_string(), "127.0.0.1");
  EXPECT_EQ(origin->host_header, "127.0.0.1:8080");
  EXPECT_EQ(origin->target, "/v1/chat/completions?alt=sse");
  EXPECT_EQ(origin->key, "127.0.0.1:8080");
}

TEST(ParsePlainHttpUrlTest, NamesDefaultPortAndIpv6) {
  std::optional<PlainHttpOrigin> named = ParsePlainHttpUrl("HTTP://vllm.internal");
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ(named->host, "vllm.internal");
  EXPECT_EQ(named->port, 80);
  EXPECT_FALSE(named->address.has_value()) << "a name goes to the resolver";
  EXPECT_EQ(named->host_header, "vllm.internal");
  EXPECT_EQ(named->target, "/");

  std::optional<PlainHttpOrigin> v6 = ParsePlainHttpUrl("http://[::1]:9000/v1/models");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "::1");
  ASSERT_TRUE(v6->address.has_value());
  EXPECT_TRUE(v6->address->is_v6());
  EXPECT_EQ(v6->host_header, "[::1]:9000");
  EXPECT_EQ(v6->target, "/v1/models");
}

TEST(ParsePlainHttpUrlTest, LeavesEverythingElseToLibcurl) {
  EXPECT_FALSE(ParsePlainHttpUrl("https://api.openai.com/v1/chat/completions").has_value());
  EXPECT_FALSE(ParsePlainHttpUrl("http://user:secret@10.0.0.1/v1").has_value())
      << "credentials";
  EXPECT_FALSE(ParsePlainHttpUrl("http://").has_value());
  EXPECT_FALSE(ParsePlainHttpUrl("http://host:99999/").has_value());
  EXPECT_FALSE(ParsePlainHttpUrl("ftp://host/file").has_value());
}

TEST(SerializeRequestHeadTest, PostWithBodyAndHeaders) {
  std::optional<PlainHttpOrigin> origin = ParsePlainHttpUrl("http://10.0.0.7:8000/v1/chat");
  ASSERT_TRUE(origin.has_value());
  HttpRequest request;
  request.url = "http://10.0.0.7:8000/v1/chat";
  request.headers = {"Content-Type: application/json", "Expect:", "Authorization: Bearer k"};
  request.body = R"({"a":1})";
  EXPECT_EQ(SerializeRequestHead(*origin, request),
            "POST /v1/chat HTTP/1.1\r\n"
            "Host: 10.0.0.7:8000\r\n"
            "Content-Type: application/json\r\n"
            "Authorization: Bearer k\r\n"
            "Content-Length: 7\r\n"
            "\r\n");
}

TEST(SerializeRequestHeadTest, GetWithoutBody) {
  std::optional<PlainHttpOrigin> origin = ParsePlainHttpUrl("http://example.test/v1/models");
  ASSERT_TRUE(origin.has_value());
  HttpRequest request;
  EXPECT_EQ(SerializeRequestHead(*origin, request),
            "GET /v1/models HTTP/1.1\r\nHost: example.test\r\n\r\n");
}

}  // namespace
}  // namespace switchyard::backends
