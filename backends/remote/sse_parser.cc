#include "backends/remote/sse_parser.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace switchyard::backends {
namespace {

// The first CR or LF at or after `from`. Two memchr scans: string_view::find_first_of would call
// memchr on the two-byte set once per byte of the line.
size_t FindLineEnd(std::string_view bytes, size_t from) {
  const char* begin = bytes.data() + from;
  const size_t size = bytes.size() - from;
  const void* lf = std::memchr(begin, '\n', size);
  const size_t lf_at = lf != nullptr ? static_cast<size_t>(static_cast<const char*>(lf) - begin)
                                     : size;
  const void* cr = std::memchr(begin, '\r', lf_at);
  if (cr != nullptr) return from + static_cast<size_t>(static_cast<const char*>(cr) - begin);
  return lf != nullptr ? from + lf_at : std::string_view::npos;
}

}  // namespace

absl::Status SseParser::Feed(std::string_view bytes,
                             absl::FunctionRef<bool(const SseEvent&)> on_event) {
  if (!status_.ok()) return status_;
  size_t i = 0;
  if (skip_next_lf_ && !bytes.empty()) {
    skip_next_lf_ = false;
    if (bytes[0] == '\n') i = 1;
  }
  while (i < bytes.size()) {
    const size_t end = FindLineEnd(bytes, i);
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(i));
      break;
    }
    bool go_on = true;
    if (line_.empty()) {
      go_on = ProcessLine(bytes.substr(i, end - i), on_event);
    } else {
      line_.append(bytes.substr(i, end - i));
      go_on = ProcessLine(line_, on_event);
      line_.clear();
    }
    if (!go_on) return status_;
    i = end + 1;
    if (bytes[end] == '\r') {
      if (i == bytes.size()) {
        skip_next_lf_ = true;
      } else if (bytes[i] == '\n') {
        ++i;
      }
    }
  }
  if (line_.size() > max_line_bytes_) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("SSE line longer than ", max_line_bytes_, " bytes"));
  }
  return status_;
}

bool SseParser::HasPartialEvent() const {
  return !line_.empty() || has_data_ || !pending_.event.empty() || !pending_.id.empty();
}

bool SseParser::ProcessLine(std::string_view line,
                            absl::FunctionRef<bool(const SseEvent&)> on_event) {
  if (line.empty()) {
    bool go_on = true;
    if (has_data_) {
      pending_.data.pop_back();  // the '\n' after the last data line
      go_on = on_event(pending_);
    }
    // Cleared, not replaced: the next event reuses the buffers.
    pending_.event.clear();
    pending_.data.clear();
    pending_.id.clear();
    has_data_ = false;
    return go_on;
  }
  if (line[0] == ':') return true;  // comment, e.g. a keep-alive ": ping"
  const size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    pending_.data.append(value);
    pending_.data.push_back('\n');
    has_data_ = true;
  } else if (field == "event") {
    pending_.event.assign(value);
  } else if (field == "id") {
    pending_.id.assign(value);
  }
  // "retry" and unknown fields are ignored, as the spec requires.
  return true;
}

}  // namespace switchyard::backends
