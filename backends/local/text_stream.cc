#include "backends/local/text_stream.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace switchyard::backends {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Length a lead byte announces, or 0 when it cannot start a sequence (continuation bytes, the
// overlong leads C0/C1, and F5..FF which would encode beyond U+10FFFF).
size_t SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// The second byte of a sequence has a narrower range for some leads (RFC 3629 table): this
// rules out overlongs (E0, F0), surrogates (ED) and code points above U+10FFFF (F4).
bool ValidSecondByte(uint8_t lead, uint8_t second) {
  switch (lead) {
    case 0xE0: return second >= 0xA0 && second <= 0xBF;
    case 0xED: return second >= 0x80 && second <= 0x9F;
    case 0xF0: return second >= 0x90 && second <= 0xBF;
    case 0xF4: return second >= 0x80 && second <= 0x8F;
    default: return IsContinuation(second);
  }
}

// Number of bytes of `s` from `pos` that form a valid prefix of one sequence (up to its full
// length). Returns 0 when the byte at `pos` cannot start a sequence.
size_t ValidPrefixAt(std::string_view s, size_t pos, size_t* expected) {
  const auto lead = static_cast<uint8_t>(s[pos]);
  *expected = SequenceLength(lead);
  if (*expected == 0) return 0;
  size_t n = 1;
  while (n < *expected && pos + n < s.size()) {
    const auto b = static_cast<uint8_t>(s[pos + n]);
    if (n == 1 ? !ValidSecondByte(lead, b) : !IsContinuation(b)) break;
    ++n;
  }
  return n;
}

}  // namespace

size_t Utf8CompletePrefixLength(std::string_view bytes) {
  // A sequence is at most 4 bytes, so only a lead within the last 3 bytes can be incomplete.
  const size_t first = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t pos = bytes.size(); pos-- > first;) {
    const auto b = static_cast<uint8_t>(bytes[pos]);
    if (IsContinuation(b)) continue;
    size_t expected = 0;
    const size_t valid = ValidPrefixAt(bytes, pos, &expected);
    // Incomplete only if every byte up to the end is a valid part of it and some are missing.
    if (expected > 1 && valid == bytes.size() - pos && valid < expected) return pos;
    return bytes.size();
  }
  return bytes.size();
}

std::string SanitizeUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t expected = 0;
    const size_t valid = ValidPrefixAt(bytes, pos, &expected);
    if (valid != 0 && valid == expected) {
      out.append(bytes.substr(pos, valid));
      pos += valid;
    } else {
      // One replacement per maximal invalid subpart (the Unicode "substitution of maximal
      // subparts" practice), so a truncated 3-byte sequence yields one U+FFFD, not three.
      out.append(kReplacement);
      pos += std::max<size_t>(valid, 1);
    }
  }
  return out;
}

std::string Utf8Holdback::Push(std::string_view piece) {
  pending_.append(piece);
  const size_t cut = Utf8CompletePrefixLength(pending_);
  std::string ready = SanitizeUtf8(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return ready;
}

std::string Utf8Holdback::Flush() {
  std::string rest = SanitizeUtf8(pending_);
  pending_.clear();
  return rest;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

StopMatcher::Result StopMatcher::Push(std::string_view text) {
  Result result;
  if (stopped_) return result;
  held_.append(text);
  // Earliest match wins, whichever stop sequence it is: text before it is all the client sees.
  size_t match = std::string::npos;
  for (const std::string& stop : stops_) {
    match = std::min(match, held_.find(stop));
  }
  if (match != std::string::npos) {
    result.text = held_.substr(0, match);
    result.stopped = true;
    stopped_ = true;
    held_.clear();
    return result;
  }
  // Keep the longest suffix that is a proper prefix of some stop sequence. Earlier text cannot
  // be part of a match: any match would have to cover this suffix, which is all we keep.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    const size_t limit = std::min(held_.size(), stop.size() - 1);
    for (size_t len = limit; len > keep; --len) {
      if (std::string_view(held_).substr(held_.size() - len) ==
          std::string_view(stop).substr(0, len)) {
        keep = len;
        break;
      }
    }
  }
  result.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopMatcher::Flush() {
  std::string rest = std::move(held_);
  held_.clear();
  return stopped_ ? std::string() : rest;
}

}  // namespace switchyard::backends
