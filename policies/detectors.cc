#include "policies/detectors.h"

#include <algorithm>
#include <string>

#include "policies/validators.h"

namespace switchyard::policies {
namespace {

char At(std::string_view text, size_t i) { return i < text.size() ? text[i] : '\0'; }
char Before(std::string_view text, size_t start, size_t n) {
  return start >= n ? text[start - n] : '\0';
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAlnum(char c) { return IsDigit(c) || IsAlpha(c); }
// A word byte as Hyperscan's \b sees it (ASCII).
bool IsWordByte(char c) { return IsAlnum(c) || c == '_'; }

// Text pasted from web pages and word processors separates digit groups with U+00A0 NO-BREAK
// SPACE, U+2009 THIN SPACE, U+202F NARROW NO-BREAK SPACE or a typographic hyphen (U+2010 to
// U+2013) as often as with ' ' or '-'. The length of such a separator's UTF-8 bytes at `pos`,
// of the kinds asked for, or 0.
size_t WideSeparatorAt(std::string_view text, size_t pos, bool spaces, bool hyphens) {
  if (pos + 2 <= text.size() && spaces && text[pos] == '\xC2' && text[pos + 1] == '\xA0') {
    return 2;
  }
  if (pos + 3 > text.size() || text[pos] != '\xE2' || text[pos + 1] != '\x80') return 0;
  const auto c = static_cast<unsigned char>(text[pos + 2]);
  if (spaces && (c == 0x89 || c == 0xAF)) return 3;
  if (hyphens && c >= 0x90 && c <= 0x93) return 3;
  return 0;
}

// The length of a separator that ends at `end`: a byte of `ascii`, or a wide one of the kinds
// asked for; 0 if there is none.
size_t SeparatorBefore(std::string_view text, size_t end, std::string_view ascii, bool spaces,
                       bool hyphens) {
  if (end >= 1 && ascii.find(text[end - 1]) != std::string_view::npos) return 1;
  if (end >= 2 && WideSeparatorAt(text, end - 2, spaces, hyphens) == 2) return 2;
  if (end >= 3 && WideSeparatorAt(text, end - 3, spaces, hyphens) == 3) return 3;
  return 0;
}

// Whether every separator in `span` (a non-digit outside `skip`, a wide one counting as one)
// is the same; `first` is set to it, or left empty when there is none.
bool SameSeparators(std::string_view span, std::string_view skip, std::string_view& first) {
  first = {};
  for (size_t i = 0; i < span.size();) {
    if (IsDigit(span[i]) || skip.find(span[i]) != std::string_view::npos) {
      ++i;
      continue;
    }
    const size_t size = std::max<size_t>(1, WideSeparatorAt(span, i, true, true));
    const std::string_view separator = span.substr(i, size);
    if (first.empty()) first = separator;
    if (separator != first) return false;
    i += size;
  }
  return true;
}

// A candidate glued to more digits by '.', '-', '/' or a typographic hyphen is a fragment of
// something longer (an OID, a date, a part number), not a value of its own.
bool PartOfLongerNumber(std::string_view text, size_t start, size_t end) {
  const size_t before = SeparatorBefore(text, start, ".-/", false, true);
  if (before > 0 && IsDigit(Before(text, start, before + 1))) return true;
  const char next = At(text, end);
  const size_t after = next == '.' || next == '-' || next == '/'
                           ? 1
                           : WideSeparatorAt(text, end, false, true);
  return after > 0 && IsDigit(At(text, end + after));
}

// The up to N bytes before a position, lower-cased, for context words. Held inline: validators
// run on every candidate and should not allocate.
template <size_t N>
class ContextBefore {
 public:
  ContextBefore(std::string_view text, size_t start) : size_(std::min(start, N)) {
    for (size_t i = 0; i < size_; ++i) {
      const char c = text[start - size_ + i];
      bytes_[i] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
  }
  std::string_view view() const { return std::string_view(bytes_, size_); }

 private:
  char bytes_[N];
  size_t size_;
};

// True when the word right before `start` introduces a version or build number.
bool AfterVersionWord(std::string_view text, size_t start) {
  const ContextBefore<16> before(text, start);
  std::string_view context = before.view();
  while (!context.empty() && (context.back() == ' ' || context.back() == ':')) {
    context.remove_suffix(1);
  }
  // Every word below ends in one of these; most candidates follow a digit or a separator.
  if (context.empty() ||
      std::string_view("nr.ved").find(context.back()) == std::string_view::npos) {
    return false;
  }
  for (std::string_view word : {"version", "ver", "ver.", "v", "v.", "release", "build", "rev"}) {
    if (context.ends_with(word) &&
        (context.size() == word.size() || !IsAlnum(context[context.size() - word.size() - 1]))) {
      return true;
    }
  }
  return false;
}

// RFC 5322 atext and '.': "o'brien" and "a+b" are whole local parts, which a shorter set cut
// at the apostrophe, leaving "o'" in clear beside the placeholder.
bool IsLocalPartByte(char c) {
  return IsAlnum(c) || std::string_view(".!#$%&'*+/=?^_`{|}~-").find(c) != std::string_view::npos;
}

// The pattern starts at the '@'; the local part is found walking backwards from it. It starts
// with a letter or digit, so a quote or bracket before an address in prose ('bob@x.io') stays
// out. At most 64 bytes are taken, a local part's limit: the address ending a longer run
// ("...?ref=x&user=bob@x.io" in a URL) is still found, with some of the run.
bool ValidateEmail(std::string_view text, size_t& start, size_t& end, double& confidence) {
  constexpr size_t kLongestLocalPart = 64;
  const size_t at = text.rfind('@', end - 1);
  start = at;
  while (start > 0 && at - start < kLongestLocalPart && IsLocalPartByte(text[start - 1])) {
    --start;
  }
  while (start < at && !IsAlnum(text[start])) ++start;
  if (start == at) return false;
  const std::string_view local = text.substr(start, at - start);
  const std::string_view domain = text.substr(at + 1, end - at - 1);
  if (domain.size() > 253) return false;
  if (local.back() == '.' || local.find("..") != std::string_view::npos) return false;
  return !IsExampleEmailDomain(domain);
}

bool ValidateCard(std::string_view text, size_t& start, size_t& end, double& confidence) {
  const std::string_view span = text.substr(start, end - start);
  std::string_view sep;
  if (!SameSeparators(span, "", sep) || PartOfLongerNumber(text, start, end)) return false;
  // Grouped digits continuing past the span in the same style belong to a longer number.
  if (!sep.empty()) {
    if (start > sep.size() && text.substr(start - sep.size(), sep.size()) == sep &&
        IsDigit(text[start - sep.size() - 1])) {
      return false;
    }
    if (text.substr(end, sep.size()) == sep && IsDigit(At(text, end + sep.size()))) return false;
  }
  const std::string digits = DigitsOf(span);
  return CardPrefixValid(digits) && LuhnValid(digits);
}

bool ValidateIban(std::string_view text, size_t& start, size_t& end, double& confidence) {
  std::string compact;
  for (size_t i = start; i < end;) {
    const size_t space = text[i] == ' ' ? 1 : WideSeparatorAt(text, i, true, false);
    if (space > 0) {
      // Printed IBANs are grouped by four; anything else is a different token.
      if (compact.size() % 4 != 0) return false;
      i += space;
      continue;
    }
    compact.push_back(text[i++]);
  }
  return IbanValid(compact);
}

bool SsnContext(std::string_view text, size_t start) {
  const ContextBefore<40> before(text, start);
  const std::string_view context = before.view();
  for (std::string_view word : {"ssn", "social security", "ss#", "ss #", "taxpayer", "tin"}) {
    if (context.find(word) != std::string_view::npos) return true;
  }
  return false;
}

bool ValidateSsn(std::string_view text, size_t& start, size_t& end, double& confidence) {
  if (PartOfLongerNumber(text, start, end)) return false;
  const std::string_view span = text.substr(start, end - start);
  if (!SsnValid(DigitsOf(span))) return false;
  const bool context = SsnContext(text, start);
  // Without a dash, nine digits are too common (order numbers, zip+4) to trust without context.
  const bool dashed = span[3] == '-' || WideSeparatorAt(span, 3, false, true) > 0;
  if (!dashed && !context) return false;
  confidence = context ? 0.99 : 0.85;
  return true;
}

bool ValidateIpv4(std::string_view text, size_t& start, size_t& end, double& confidence) {
  const std::string_view span = text.substr(start, end - start);
  if (PartOfLongerNumber(text, start, end) || AfterVersionWord(text, start)) return false;
  return Ipv4Valid(span) && !IsDocumentationIp(span);
}

bool ValidateIpv6(std::string_view text, size_t& start, size_t& end, double& confidence) {
  const std::string_view span = text.substr(start, end - start);
  const char prev = Before(text, start, 1);
  const char next = At(text, end);
  if (IsWordByte(prev) || prev == ':' || prev == '.') return false;
  if (IsWordByte(next) || next == ':') return false;
  if (std::none_of(span.begin(), span.end(), IsDigit)) return false;
  // Short compressed forms ("a::1") are more often code than addresses; keep the loopback.
  if (span.size() < 6 && span != "::1") return false;
  return Ipv6Valid(span) && !IsDocumentationIp(span);
}


int CountDigits(std::string_view span) {
  return static_cast<int>(std::count_if(span.begin(), span.end(), IsDigit));
}

bool ValidatePhoneInternational(std::string_view text, size_t& start, size_t& end,
                                double& confidence) {
  start = text.rfind('+', end - 1);
  const char prev = Before(text, start, 1);
  if (IsAlnum(prev) || prev == ')' || prev == '+') return false;
  if (PartOfLongerNumber(text, start, end)) return false;
  const std::string_view span = text.substr(start, end - start);
  int digits = CountDigits(span);
  // "+49 (0)30 ..." writes the national trunk prefix in brackets; it is not dialled.
  if (span.find("(0)") != std::string_view::npos) --digits;
  return digits >= 8 && digits <= 15 && span[1] != '0';
}

// North American numbers: NXX-NXX-XXXX with an optional leading 1.
bool ValidatePhoneNanp(std::string_view text, size_t& start, size_t& end, double& confidence) {
  if (PartOfLongerNumber(text, start, end) || Before(text, start, 1) == '+') return false;
  const std::string_view span = text.substr(start, end - start);
  std::string digits = DigitsOf(span);
  if (digits.size() == 11) {
    if (digits[0] != '1') return false;
    digits.erase(0, 1);
  }
  if (digits.size() != 10 || digits[0] < '2' || digits[3] < '2') return false;
  // Without brackets the separators must agree: "415-555.2671" is not a phone number.
  std::string_view separator;
  if (span.find('(') == std::string_view::npos && !SameSeparators(span, "", separator)) {
    return false;
  }
  // 555-0100 through 555-0199 are reserved for fiction.
  if (digits.substr(3, 3) == "555" && digits.substr(6, 2) == "01") return false;
  return true;
}

// National formats with a trunk 0 (UK, France, Germany and most of Europe): 10 or 11 digits.
bool ValidatePhoneNational(std::string_view text, size_t& start, size_t& end,
                           double& confidence) {
  if (PartOfLongerNumber(text, start, end) || AfterVersionWord(text, start)) return false;
  const char prev = Before(text, start, 1);
  if (prev == '+' || IsAlnum(prev)) return false;
  // The tail of a longer run of digit groups (a tracking number) is not a number of its own.
  const size_t space = SeparatorBefore(text, start, " ", true, false);
  if (space > 0 && IsDigit(Before(text, start, space + 1))) return false;
  const std::string_view span = text.substr(start, end - start);
  const int digits = CountDigits(span);
  if (digits < 10 || digits > 11) return false;
  std::string_view separator;
  if (!SameSeparators(span, "()", separator)) return false;
  // Ten bare digits starting with 0 are as likely an account or order number.
  if (separator.empty() && span.front() != '(') return false;
  // Ofcom's drama ranges: 020 7946 0xxx and 07700 900xxx.
  const std::string all = DigitsOf(span);
  if (all.starts_with("02079460") || all.starts_with("07700900") || all.starts_with("01632960")) {
    return false;
  }
  return true;
}

// Start finders: each walks the shape of its pattern back from the match end, so Hyperscan
// need not track starts (for these three that cost about a seventh of the whole scan). Each
// returns the leftmost start of a match ending at `end`, the one Hyperscan would have reported.

// A \b before the byte at `pos`, which is a word byte.
bool WordStartsAt(std::string_view text, size_t pos) {
  return pos == 0 || !IsWordByte(text[pos - 1]);
}

// Exactly `n` digits ending at `end`.
bool DigitsBefore(std::string_view text, size_t end, size_t n) {
  if (end < n) return false;
  for (size_t i = end - n; i < end; ++i) {
    if (!IsDigit(text[i])) return false;
  }
  return true;
}

// \b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b: each group is the whole digit run between dots, so
// the start is unique.
size_t FindIpv4Start(std::string_view text, size_t end) {
  size_t pos = end;
  for (int group = 0; group < 4; ++group) {
    if (group > 0) {
      if (pos == 0 || text[pos - 1] != '.') return std::string_view::npos;
      --pos;
    }
    size_t digits = 0;
    while (pos > 0 && digits < 3 && IsDigit(text[pos - 1])) --pos, ++digits;
    if (digits == 0) return std::string_view::npos;
  }
  return WordStartsAt(text, pos) ? pos : std::string_view::npos;
}

// A separator of the phone patterns ([ .\-] or a wide space or hyphen) ending at `end`.
size_t PhoneSeparatorBefore(std::string_view text, size_t end) {
  return SeparatorBefore(text, end, " .-", true, true);
}

// (?:\b1S?)?(?:\(\d{3}\)W?|\b\d{3}S)\d{3}S\d{4}\b, where S is a phone separator and W a space
// (wide or not): the tail is fixed, at most one area-code form fits before it, and the leftmost
// start takes the optional leading 1.
size_t FindPhoneNanpStart(std::string_view text, size_t end) {
  if (!DigitsBefore(text, end, 4)) return std::string_view::npos;
  const size_t tail_separator = PhoneSeparatorBefore(text, end - 4);
  if (tail_separator == 0 || !DigitsBefore(text, end - 4 - tail_separator, 3)) {
    return std::string_view::npos;
  }
  const size_t middle = end - 4 - tail_separator - 3;
  size_t area;  // where the area code (with its brackets) starts
  bool bracketed = false;
  const size_t area_separator = PhoneSeparatorBefore(text, middle);
  if (area_separator > 0 && DigitsBefore(text, middle - area_separator, 3) &&
      WordStartsAt(text, middle - area_separator - 3)) {
    area = middle - area_separator - 3;
  } else {
    const size_t close = middle - SeparatorBefore(text, middle, " ", true, false);
    if (close < 5 || text[close - 1] != ')' || !DigitsBefore(text, close - 1, 3) ||
        text[close - 5] != '(') {
      return std::string_view::npos;
    }
    area = close - 5;
    bracketed = true;
  }
  // "1" right before unbracketed digits would join their word, so there it needs a separator.
  if (bracketed && area >= 1 && text[area - 1] == '1' && WordStartsAt(text, area - 1)) {
    return area - 1;
  }
  const size_t one_separator = PhoneSeparatorBefore(text, area);
  if (one_separator > 0 && area >= one_separator + 1 && text[area - one_separator - 1] == '1' &&
      WordStartsAt(text, area - one_separator - 1)) {
    return area - one_separator - 1;
  }
  return area;
}

// Whether text[pos, end) is (?:S?\d{2,4}){n} with 1 <= groups + n <= 4, S a separator of the
// national pattern ([ .\-/] or a wide space or hyphen).
bool NationalGroupsMatch(std::string_view text, size_t pos, size_t end, int groups) {
  if (pos == end) return groups >= 1;
  if (groups == 4) return false;
  if (std::string_view(" .-/").find(text[pos]) != std::string_view::npos) {
    ++pos;
  } else {
    pos += WideSeparatorAt(text.substr(0, end), pos, true, true);
  }
  for (size_t digits = 1; digits <= 4 && pos + digits <= end; ++digits) {
    if (!IsDigit(text[pos + digits - 1])) break;
    if (digits >= 2 && NationalGroupsMatch(text, pos + digits, end, groups + 1)) return true;
  }
  return false;
}

// Whether text[start, end) matches (?:\b0\d{1,4}|\(0\d{1,4}\))(?:S?\d{2,4}){1,4}.
bool PhoneNationalMatches(std::string_view text, size_t start, size_t end) {
  const bool bracketed = text[start] == '(';
  size_t pos = start + (bracketed ? 1 : 0);
  if (pos >= end || text[pos] != '0') return false;
  if (!bracketed && !WordStartsAt(text, start)) return false;
  ++pos;
  for (size_t digits = 1; digits <= 4 && pos + digits <= end; ++digits) {
    if (!IsDigit(text[pos + digits - 1])) break;
    size_t head_end = pos + digits;
    if (bracketed) {
      if (head_end >= end || text[head_end] != ')') continue;
      ++head_end;
    }
    if (NationalGroupsMatch(text, head_end, end, 0)) return true;
  }
  return false;
}

// The national pattern's groups can split a digit run many ways, so rather than walk back,
// try each start from the leftmost possible one (the longest match is 35 bytes).
size_t FindPhoneNationalStart(std::string_view text, size_t end) {
  constexpr size_t kLongest = 7 + 4 * 7;  // "(0dddd)" and four groups of a 3-byte separator + 4
  for (size_t start = end > kLongest ? end - kLongest : 0; start + 3 <= end; ++start) {
    if ((text[start] == '0' || text[start] == '(') && PhoneNationalMatches(text, start, end)) {
      return start;
    }
  }
  return std::string_view::npos;
}

bool ValidateAwsKey(std::string_view text, size_t& start, size_t& end, double& confidence) {
  // AWS documentation keys end in EXAMPLE (AKIAIOSFODNN7EXAMPLE).
  return !text.substr(start, end - start).ends_with("EXAMPLE");
}

// Token patterns match a fixed-length head only (long bounded repeats make Hyperscan databases
// slow to build); the validator extends the span over the rest of the token.
size_t ExtendToken(std::string_view text, size_t end, bool allow_dash) {
  while (end < text.size() && (IsWordByte(text[end]) || (allow_dash && text[end] == '-'))) {
    ++end;
  }
  return end;
}

bool ValidateGithubToken(std::string_view text, size_t& start, size_t& end, double& confidence) {
  end = ExtendToken(text, end, /*allow_dash=*/false);
  return end - start <= 255;
}

bool ValidateStripeKey(std::string_view text, size_t& start, size_t& end, double& confidence) {
  end = ExtendToken(text, end, /*allow_dash=*/false);
  return end - start <= 255;
}

// Fixed-length tokens must end where the token ends.
bool ValidateNotContinued(std::string_view text, size_t& start, size_t& end, double& confidence) {
  const char next = At(text, end);
  return !IsWordByte(next) && next != '-';
}

// Random-looking: letters and digits, and enough entropy for its length.
bool LooksRandom(std::string_view value, double min_entropy) {
  const bool has_digit = std::any_of(value.begin(), value.end(), IsDigit);
  const bool has_alpha = std::any_of(value.begin(), value.end(), IsAlpha);
  return has_digit && has_alpha && ShannonEntropy(value) >= min_entropy;
}

bool ValidateTokenBody(std::string_view text, size_t& start, size_t& end, double& confidence) {
  end = ExtendToken(text, end, /*allow_dash=*/true);
  while (end > start && text[end - 1] == '-') --end;
  return LooksRandom(text.substr(start, end - start), 3.0);
}

bool ValidateOpenAiKey(std::string_view text, size_t& start, size_t& end, double& confidence) {
  if (text.substr(start, end - start).starts_with("sk-ant-")) return false;
  return ValidateTokenBody(text, start, end, confidence);
}

bool ValidatePrivateKey(std::string_view text, size_t& start, size_t& end, double& confidence) {
  // The span covers the whole block when its END line is there, so redaction removes the key.
  const size_t footer = text.find("-----END ", end);
  if (footer == std::string_view::npos || footer - end > 65536) return true;
  const size_t close = text.find("-----", footer + 9);
  if (close != std::string_view::npos) end = close + 5;
  return true;
}

bool ValidateJwt(std::string_view text, size_t& start, size_t& end, double& confidence) {
  return JwtHeaderValid(text.substr(start, end - start));
}

// `key = value` assignments whose key names a credential. The pattern stops at the `=` or `:`
// (matching the value too made it the costliest pattern to compile); the finding is the value.
bool ValidateGenericSecret(std::string_view text, size_t& start, size_t& end,
                           double& confidence) {
  size_t value = end;
  while (value < text.size() && (text[value] == ' ' || text[value] == '\t' ||
                                 text[value] == '"' || text[value] == '\'')) {
    ++value;
  }
  size_t value_end = value;
  while (value_end < text.size() && value_end - value < 256 &&
         std::string_view(" \t\r\n\f\v\"'`,;").find(text[value_end]) == std::string_view::npos) {
    ++value_end;
  }
  while (value_end > value && std::string_view(".)]}>").find(text[value_end - 1]) !=
                                  std::string_view::npos) {
    --value_end;
  }
  const std::string_view v = text.substr(value, value_end - value);
  if (v.size() < 8) return false;
  const bool env_reference =
      v.starts_with("${") || v.starts_with("$(") ||
      (v.front() == '$' && std::all_of(v.begin() + 1, v.end(), [](char c) {
         return (c >= 'A' && c <= 'Z') || c == '_' || IsDigit(c);
       })) ||
      (v.front() == '%' && v.back() == '%') || v.starts_with("process.env") ||
      v.starts_with("os.environ");
  if (env_reference || v.find("://") != std::string_view::npos || v.front() == '<' ||
      v.front() == '{') {
    return false;
  }
  if (IsUuid(v) || (v.size() == 40 && IsHex(v))) return false;
  if (!LooksRandom(v, 3.0)) return false;
  start = value;
  end = value_end;
  confidence = v.size() >= 20 && ShannonEntropy(v) >= 3.5 ? 0.85 : 0.7;
  return true;
}

// Separators between digit groups, ASCII or wide (see WideSeparatorAt), as UTF-8 bytes: the
// built-in patterns are scanned byte by byte, without HS_FLAG_UTF8. Macros, so that the table's
// patterns stay string literals.
#define SY_SPACE R"((?:[ ]|\xC2\xA0|\xE2\x80[\x89\xAF]))"
#define SY_HYPHEN R"((?:-|\xE2\x80[\x90-\x93]))"
#define SY_SPACE_OR_HYPHEN R"((?:[ \-]|\xC2\xA0|\xE2\x80[\x89\x90-\x93\xAF]))"
#define SY_PHONE_SEPARATOR R"((?:[ .\-]|\xC2\xA0|\xE2\x80[\x89\x90-\x93\xAF]))"
#define SY_NATIONAL_SEPARATOR R"((?:[ .\-/]|\xC2\xA0|\xE2\x80[\x89\x90-\x93\xAF]))"

constexpr BuiltinPattern kPatterns[] = {
    {"email",
     R"(@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b)",
     false, false, 7, 0.95, ValidateEmail, nullptr},
    {"phone",
     R"(\+\d{1,3}(?:)" SY_PHONE_SEPARATOR R"(?\(0?\d{1,4}\))?(?:)" SY_PHONE_SEPARATOR
     R"(?\d{1,5}){1,6}\b)",
     false, false, 5, 0.9, ValidatePhoneInternational, nullptr},
    {"phone",
     R"((?:\b1)" SY_PHONE_SEPARATOR R"(?)?(?:\(\d{3}\))" SY_SPACE R"(?|\b\d{3})" SY_PHONE_SEPARATOR
     R"()\d{3})" SY_PHONE_SEPARATOR R"(\d{4}\b)",
     false, false, 5, 0.85, ValidatePhoneNanp, FindPhoneNanpStart},
    {"phone",
     R"((?:\b0\d{1,4}|\(0\d{1,4}\))(?:)" SY_NATIONAL_SEPARATOR R"(?\d{2,4}){1,4}\b)", false,
     false, 4, 0.7, ValidatePhoneNational, FindPhoneNationalStart},
    {"credit_card", R"(\b\d{13,19}\b)", false, true, 8, 0.95, ValidateCard, nullptr},
    {"credit_card",
     R"(\b\d{4})" SY_SPACE_OR_HYPHEN R"(\d{4})" SY_SPACE_OR_HYPHEN R"(\d{4})" SY_SPACE_OR_HYPHEN
     R"(\d{1,4}(?:)" SY_SPACE_OR_HYPHEN R"(\d{3})?\b)",
     false, true, 8, 0.95, ValidateCard, nullptr},
    {"credit_card",
     R"(\b\d{4})" SY_SPACE_OR_HYPHEN R"(\d{6})" SY_SPACE_OR_HYPHEN R"(\d{4,5}\b)", false, true,
     8, 0.95, ValidateCard, nullptr},
    {"iban",
     R"(\b[A-Z]{2}\d{2}(?:)" SY_SPACE R"(?[A-Z0-9]{4}){2,7}(?:)" SY_SPACE R"(?[A-Z0-9]{1,3})?\b)",
     false, true, 8, 0.97, ValidateIban, nullptr},
    {"us_ssn", R"(\b\d{3})" SY_HYPHEN R"(\d{2})" SY_HYPHEN R"(\d{4}\b)", false, true, 7, 0.85,
     ValidateSsn, nullptr},
    {"us_ssn", R"(\b\d{3})" SY_SPACE R"(\d{2})" SY_SPACE R"(\d{4}\b|\b\d{9}\b)", false, true, 6,
     0.85, ValidateSsn, nullptr},
    {"ip_address", R"(\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b)", false, false, 6, 0.9, ValidateIpv4,
     FindIpv4Start},
    {"ip_address",
     R"([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}\.\d{1,3}\.\d{1,3})?)", false, true, 6,
     0.9, ValidateIpv6, nullptr},
    {"secret.aws_access_key", R"(\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b)", false, true, 10, 0.95,
     ValidateAwsKey, nullptr},
    {"secret.github_token", R"(\bgh[pousr]_[A-Za-z0-9]{36})", false, true, 10, 0.97,
     ValidateGithubToken, nullptr},
    {"secret.github_token", R"(\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{8})", false, true, 10, 0.97,
     ValidateGithubToken, nullptr},
    {"secret.slack_token", R"(\bxox[abposr]-[A-Za-z0-9\-]{10})", false, true, 10, 0.95,
     ValidateTokenBody, nullptr},
    {"secret.slack_webhook",
     R"(https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{16,32})",
     false, true, 10, 0.97, nullptr, nullptr},
    {"secret.stripe_key", R"(\b[rs]k_(?:live|test)_[A-Za-z0-9]{16})", false, true, 10, 0.97,
     ValidateStripeKey, nullptr},
    {"secret.openai_api_key", R"(\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20})", false, true,
     9, 0.9, ValidateOpenAiKey, nullptr},
    {"secret.anthropic_api_key", R"(\bsk-ant-[A-Za-z0-9_\-]{20})", false, true, 10, 0.95,
     ValidateTokenBody, nullptr},
    {"secret.google_api_key", R"(\bAIza[0-9A-Za-z_\-]{35})", false, true, 10, 0.95,
     ValidateNotContinued, nullptr},
    {"secret.google_oauth_token", R"(\bya29\.[0-9A-Za-z_\-]{20})", false, true, 10, 0.9,
     ValidateTokenBody, nullptr},
    {"secret.private_key", R"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)", false, true, 11,
     0.99, ValidatePrivateKey, nullptr},
    {"secret.jwt", R"(\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,})",
     false, true, 9, 0.95, ValidateJwt, nullptr},
    {"secret.generic",
     R"((?:api[_.\-]?key|secret|token|passw(?:or)?d|pwd|access[_.\-]?key|auth[_.\-]?key|credentials?|private[_.\-]?key)[A-Za-z0-9_.\-]*["']?[ \t]*(?::=|=>|[:=]))",
     true, false, 3, 0.7, ValidateGenericSecret, nullptr},
};

#undef SY_SPACE
#undef SY_HYPHEN
#undef SY_SPACE_OR_HYPHEN
#undef SY_PHONE_SEPARATOR
#undef SY_NATIONAL_SEPARATOR

}  // namespace

std::span<const BuiltinPattern> BuiltinPatterns() { return kPatterns; }

const std::vector<std::string_view>& BuiltinTypes() {
  static const auto* types = [] {
    auto* out = new std::vector<std::string_view>;
    for (const BuiltinPattern& pattern : kPatterns) {
      if (std::find(out->begin(), out->end(), pattern.type) == out->end()) {
        out->push_back(pattern.type);
      }
    }
    return out;
  }();
  return *types;
}

}  // namespace switchyard::policies
