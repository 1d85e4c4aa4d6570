#include "backends/remote/openai_chunk.h"

#include <cmath>
#include <cstdlib>

#include "backends/json_text.h"

namespace switchyard::backends {
namespace {

constexpr int kMaxDepth = 64;
constexpr int kMaxIntegerDigits = 18;  // always fits int64_t

// A validating recursive-descent pass over one JSON text. Every method returns false when the
// text is invalid or outside what the scanner vouches for; the whole scan then declines.
// `message_key` names the choice member that holds the content: "delta" in a chunk, "message"
// in a completion.
class Scanner {
 public:
  Scanner(std::string_view text, std::string_view message_key)
      : s_(text), message_key_(message_key) {}

  bool Document(OpenAiChunkFields* f) {
    SkipWs();
    if (!Eat('{')) return false;
    bool seen_usage = false, seen_choices = false;
    if (!Members([&](std::string_view key) {
          if (key == "error") {
            f->has_error = true;
            return SkipValue(1);
          }
          if (key == "usage") {
            if (seen_usage) return false;
            seen_usage = true;
            return Peek() == '{' ? Usage(f) : SkipValue(1);
          }
          if (key == "choices") {
            if (seen_choices) return false;
            seen_choices = true;
            return Peek() == '[' ? Choices(f) : SkipValue(1);
          }
          return SkipValue(1);
        })) {
      return false;
    }
    SkipWs();
    return i_ == s_.size();
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  void SkipWs() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
      ++i_;
    }
  }

  // An object's members after its '{': `on_member(key)` reads each value (whitespace before it
  // already skipped). Keys with escapes decline: the fields we read are plain ASCII names.
  template <typename OnMember>
  bool Members(OnMember on_member) {
    SkipWs();
    if (Eat('}')) return true;
    while (true) {
      SkipWs();
      std::string_view key;
      if (!Key(&key)) return false;
      SkipWs();
      if (!Eat(':')) return false;
      SkipWs();
      if (!on_member(key)) return false;
      SkipWs();
      if (Eat('}')) return true;
      if (!Eat(',')) return false;
    }
  }

  bool Key(std::string_view* key) {
    if (!Eat('"')) return false;
    const size_t start = i_;
    while (true) {
      i_ = PlainJsonTextEnd(s_, i_);
      if (i_ >= s_.size()) return false;
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') break;
      if (c == '\\') return false;  // an escaped key: let the DOM decide
      if (c < 0x20) return false;
      if (!Utf8()) return false;  // c >= 0x80
    }
    ++i_;  // the closing quote
    *key = s_.substr(start, i_ - 1 - start);
    return true;
  }

  bool Usage(OpenAiChunkFields* f) {
    ++i_;  // '{'
    bool seen_prompt = false, seen_completion = false;
    return Members([&](std::string_view key) {
      std::optional<int64_t>* slot = nullptr;
      if (key == "prompt_tokens") {
        if (seen_prompt) return false;
        seen_prompt = true;
        slot = &f->prompt_tokens;
      } else if (key == "completion_tokens") {
        if (seen_completion) return false;
        seen_completion = true;
        slot = &f->completion_tokens;
      }
      if (slot != nullptr && (Peek() == '-' || (Peek() >= '0' && Peek() <= '9'))) {
        return Number(slot);
      }
      return SkipValue(2);
    });
  }

  bool Choices(OpenAiChunkFields* f) {
    ++i_;  // '['
    SkipWs();
    if (Eat(']')) return true;
    bool first = true;
    while (true) {
      SkipWs();
      if (first && Peek() == '{') {
        if (!Choice(f)) return false;
      } else if (!SkipValue(2)) {
        return false;
      }
      first = false;
      SkipWs();
      if (Eat(']')) return true;
      if (!Eat(',')) return false;
    }
  }

  bool Choice(OpenAiChunkFields* f) {
    ++i_;  // '{'
    bool seen_message = false, seen_finish = false;
    return Members([&](std::string_view key) {
      if (key == message_key_) {
        if (seen_message) return false;
        seen_message = true;
        if (Peek() != '{') return SkipValue(3);
        f->has_message = true;
        return Message(f);
      }
      if (key == "finish_reason") {
        if (seen_finish) return false;
        seen_finish = true;
        if (Peek() == 'n') return Literal("null");
        f->finish_reason = true;
        if (Peek() != '"') return SkipValue(3);
        std::string reason;
        if (!String(&reason)) return false;
        f->finish_is_length = reason == "length";
        f->finish_is_content_filter = reason == "content_filter";
        return true;
      }
      return SkipValue(3);
    });
  }

  bool Message(OpenAiChunkFields* f) {
    ++i_;  // '{'
    bool seen_content = false;
    return Members([&](std::string_view key) {
      if (key == "content") {
        if (seen_content) return false;
        seen_content = true;
        if (Peek() != '"') return SkipValue(4);
        std::string content;
        if (!String(&content)) return false;
        f->content = std::move(content);
        return true;
      }
      return SkipValue(4);
    });
  }

  bool SkipValue(int depth) {
    if (depth > kMaxDepth) return false;
    switch (Peek()) {
      case '{':
        ++i_;
        return Members([&](std::string_view) { return SkipValue(depth + 1); });
      case '[': {
        ++i_;
        SkipWs();
        if (Eat(']')) return true;
        while (true) {
          SkipWs();
          if (!SkipValue(depth + 1)) return false;
          SkipWs();
          if (Eat(']')) return true;
          if (!Eat(',')) return false;
        }
      }
      case '"':
        return String(nullptr);
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Number(nullptr);
    }
  }

  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; `integer` gets the value of an integer.
  bool Number(std::optional<int64_t>* integer) {
    const size_t start = i_;
    const bool negative = Eat('-');
    const size_t digits_start = i_;
    if (Peek() == '0') {
      ++i_;
    } else if (Peek() >= '1' && Peek() <= '9') {
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    } else {
      return false;
    }
    const size_t digits = i_ - digits_start;
    bool is_integer = true;
    if (Eat('.')) {
      is_integer = false;
      if (!(Peek() >= '0' && Peek() <= '9')) return false;
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      is_integer = false;
      ++i_;
      if (Peek() == '+' || Peek() == '-') ++i_;
      if (!(Peek() >= '0' && Peek() <= '9')) return false;
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    }
    if (!is_integer || digits > kMaxIntegerDigits) {
      // nlohmann::json refuses a number that overflows a double (1e999, 400 digits); so do we.
      const std::string token(s_.substr(start, i_ - start));
      if (!std::isfinite(std::strtod(token.c_str(), nullptr))) return false;
    }
    if (integer == nullptr || !is_integer) return true;
    if (digits > kMaxIntegerDigits) return false;
    int64_t value = 0;
    for (size_t k = digits_start; k < digits_start + digits; ++k) value = value * 10 + (s_[k] - '0');
    *integer = negative ? -value : value;
    return true;
  }

  // A string at '"'; appends its decoded value to `out` unless null.
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    size_t run = i_;  // start of the bytes not yet copied
    while (true) {
      i_ = PlainJsonTextEnd(s_, i_);
      if (i_ >= s_.size()) return false;
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        if (out != nullptr) out->append(s_.data() + run, i_ - run);
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c >= 0x80) {
        if (!Utf8()) return false;
        continue;
      }
      // c is a backslash.
      if (out != nullptr) out->append(s_.data() + run, i_ - run);
      ++i_;
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      char plain = 0;
      switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          uint32_t code = 0;
          if (!Hex4(&code)) return false;
          if (code >= 0xDC00 && code <= 0xDFFF) return false;  // a low surrogate alone
          if (code >= 0xD800 && code <= 0xDBFF) {
            uint32_t low = 0;
            if (!Eat('\\') || !Eat('u') || !Hex4(&low) || low < 0xDC00 || low > 0xDFFF) {
              return false;
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          if (out != nullptr) AppendUtf8(code, out);
          run = i_;
          continue;
        }
        default:
          return false;
      }
      if (out != nullptr) out->push_back(plain);
      run = i_;
    }
  }

  bool Hex4(uint32_t* value) {
    if (s_.size() - i_ < 4) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return false;
      }
    }
    *value = v;
    return true;
  }

  static void AppendUtf8(uint32_t code, std::string* out) {
    if (code < 0x80) {
      out->push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (code >> 6)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (code >> 12)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (code >> 18)));
      out->push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  // One multi-byte UTF-8 character at i_; advances past it.
  bool Utf8() {
    const size_t length = Utf8SequenceLength(s_, i_);
    i_ += length;
    return length != 0;
  }

  const std::string_view s_;
  const std::string_view message_key_;
  size_t i_ = 0;
};

bool Scan(std::string_view json, std::string_view message_key, OpenAiChunkFields* fields) {
  OpenAiChunkFields scanned;
  if (!Scanner(json, message_key).Document(&scanned)) return false;
  *fields = std::move(scanned);
  return true;
}

}  // namespace

bool ScanOpenAiChunk(std::string_view json, OpenAiChunkFields* fields) {
  return Scan(json, "delta", fields);
}

bool ScanOpenAiCompletion(std::string_view json, OpenAiChunkFields* fields) {
  return Scan(json, "message", fields);
}

}  // namespace switchyard::backends
