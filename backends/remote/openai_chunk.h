// A one-pass reader for the event that dominates an OpenAI-compatible stream, the
// chat.completion.chunk, and for a whole chat.completion body. Building a JSON DOM for every
// token was the largest single cost of a streamed request, and the DOM of a body a fifth of a
// unary request's (issue 7); this scanner validates the whole text as JSON and picks out only
// the fields OpenAiReader uses, without building anything.
//
// Contract: when ScanOpenAiChunk returns true the text is valid JSON and the fields are exactly
// what reading the DOM gives. It returns false (declines) for anything it does not vouch for:
// invalid JSON, a top-level value that is not an object, nesting deeper than 64, integers beyond
// 18 digits, an escaped or repeated key among the ones it reads. The caller then parses the
// text with nlohmann::json, so behaviour (errors included) is unchanged.
#ifndef SWITCHYARD_BACKENDS_REMOTE_OPENAI_CHUNK_H_
#define SWITCHYARD_BACKENDS_REMOTE_OPENAI_CHUNK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace switchyard::backends {

struct OpenAiChunkFields {
  // The object has an "error" member (of any type).
  bool has_error = false;
  // usage.prompt_tokens / usage.completion_tokens when usage is an object and they are integers.
  std::optional<int64_t> prompt_tokens;
  std::optional<int64_t> completion_tokens;
  // choices[0].delta (in a chat.completion: choices[0].message) is an object.
  bool has_message = false;
  // choices[0].delta.content (choices[0].message.content) when it is a string.
  std::optional<std::string> content;
  // choices[0].finish_reason is present and not null; `finish_is_length` when it is "length",
  // `finish_is_content_filter` when it is "content_filter".
  bool finish_reason = false;
  bool finish_is_length = false;
  bool finish_is_content_filter = false;
};

bool ScanOpenAiChunk(std::string_view json, OpenAiChunkFields* fields);
// The same for a non-streamed answer, whose choices carry "message" rather than "delta".
bool ScanOpenAiCompletion(std::string_view json, OpenAiChunkFields* fields);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_REMOTE_OPENAI_CHUNK_H_
