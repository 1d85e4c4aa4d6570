// JSON text written directly, without building a DOM first, for the per-request hot path.
// Every function writes the same bytes nlohmann::json::dump() writes for the same value (compact,
// no ASCII escaping), so a DOM-built reference can check it byte for byte.
#ifndef SWITCHYARD_BACKENDS_JSON_TEXT_H_
#define SWITCHYARD_BACKENDS_JSON_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace switchyard::backends {

// Appends `text` as a quoted JSON string. Returns false when `text` is not valid UTF-8: dump()
// would replace or reject such bytes, so the caller discards `out` and takes its DOM path.
bool AppendJsonString(std::string_view text, std::string& out);

// The position of the first byte at or after `from` that a JSON string cannot carry as it is:
// '"', '\\', a control character (below 0x20) or the start of a multi-byte UTF-8 character
// (0x80 and up, which the caller validates); text.size() when there is none. Sixteen bytes a
// step where SSE2 is available, so plain ASCII text costs about one instruction per byte.
size_t PlainJsonTextEnd(std::string_view text, size_t from);

// The length (2 to 4) of the multi-byte UTF-8 character starting at text[at], with the ranges of
// RFC 3629 (no overlongs, no surrogates, nothing past U+10FFFF); 0 when the bytes there are not
// one.
size_t Utf8SequenceLength(std::string_view text, size_t at);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_JSON_TEXT_H_
