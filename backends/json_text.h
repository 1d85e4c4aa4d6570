// JSON text written directly, without building a DOM first, for the per-request hot path.
// Every function writes the same bytes nlohmann::json::dump() writes for the same value (compact,
// no ASCII escaping), so a DOM-built reference can check it byte for byte.
#ifndef SWITCHYARD_BACKENDS_JSON_TEXT_H_
#define SWITCHYARD_BACKENDS_JSON_TEXT_H_

#include <string>
#include <string_view>

namespace switchyard::backends {

// Appends `text` as a quoted JSON string. Returns false when `text` is not valid UTF-8: dump()
// would replace or reject such bytes, so the caller discards `out` and takes its DOM path.
bool AppendJsonString(std::string_view text, std::string& out);

}  // namespace switchyard::backends

#endif  // SWITCHYARD_BACKENDS_JSON_TEXT_H_
