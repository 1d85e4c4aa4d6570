#include "policies/validators.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace switchyard::policies {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsHexDigit(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The leading `n` digits as a number (n <= 9).
int Prefix(std::string_view digits, size_t n) {
  int value = 0;
  for (size_t i = 0; i < n && i < digits.size(); ++i) value = value * 10 + (digits[i] - '0');
  return value;
}

struct IbanCountry {
  char code[3];
  int length;
};

// ISO 13616 registry lengths; an IBAN of another length is a typo or not an IBAN at all.
constexpr IbanCountry kIbanCountries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
    {"BG", 22}, {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28},
    {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24},
    {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
    {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23},
    {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32},
    {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24}, {"ME", 22},
    {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
    {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
    {"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28},
    {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
};

bool ParseIpv4(std::string_view text) {
  int octets = 0;
  size_t i = 0;
  while (true) {
    size_t start = i;
    int value = 0;
    while (i < text.size() && IsDigit(text[i]) && i - start < 4) value = value * 10 + (text[i++] - '0');
    const size_t len = i - start;
    if (len == 0 || len > 3 || value > 255 || (len > 1 && text[start] == '0')) return false;
    ++octets;
    if (i == text.size()) break;
    if (text[i] != '.' || octets == 4) return false;
    ++i;
  }
  return octets == 4;
}

// Counts the 16-bit groups of one side of "::"; -1 when malformed. `allow_ipv4` lets the last
// item be a dotted quad (two groups).
int CountGroups(std::string_view side, bool allow_ipv4) {
  if (side.empty()) return 0;
  int groups = 0;
  size_t start = 0;
  while (true) {
    size_t colon = side.find(':', start);
    std::string_view item =
        side.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start);
    const bool last = colon == std::string_view::npos;
    if (last && allow_ipv4 && item.find('.') != std::string_view::npos) {
      if (!ParseIpv4(item)) return -1;
      return groups + 2;
    }
    if (item.empty() || item.size() > 4) return -1;
    for (char c : item) {
      if (!IsHexDigit(c)) return -1;
    }
    ++groups;
    if (last) return groups;
    start = colon + 1;
  }
}

int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (IsDigit(c)) return c - '0' + 52;
  if (c == '-' || c == '+') return 62;
  if (c == '_' || c == '/') return 63;
  return -1;
}

}  // namespace

std::string DigitsOf(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (IsDigit(c)) out.push_back(c);
  }
  return out;
}

bool LuhnValid(std::string_view digits) {
  if (digits.empty()) return false;
  int sum = 0;
  bool twice = false;
  for (size_t i = digits.size(); i-- > 0;) {
    if (!IsDigit(digits[i])) return false;
    int d = digits[i] - '0';
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

bool CardPrefixValid(std::string_view digits) {
  const size_t n = digits.size();
  if (n < 12 || n > 19) return false;
  const int p1 = Prefix(digits, 1);
  const int p2 = Prefix(digits, 2);
  const int p3 = Prefix(digits, 3);
  const int p4 = Prefix(digits, 4);
  const int p6 = Prefix(digits, 6);
  if (p1 == 4) return n == 13 || n == 16 || n == 19;                               // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n == 16;        // Mastercard
  if (p2 == 34 || p2 == 37) return n == 15;                                         // Amex
  if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649) ||
      (p6 >= 622126 && p6 <= 622925)) {
    return n >= 16;                                                                 // Discover
  }
  if (p4 >= 3528 && p4 <= 3589) return n >= 16;                                     // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39) return n >= 14;  // Diners
  if (p2 == 62) return n >= 16;                                                     // UnionPay
  if (p2 == 50 || (p2 >= 56 && p2 <= 69)) return n >= 12;                           // Maestro
  return false;
}

bool IbanValid(std::string_view compact) {
  if (compact.size() < 15 || compact.size() > 34) return false;
  const IbanCountry* country = nullptr;
  for (const IbanCountry& c : kIbanCountries) {
    if (compact.substr(0, 2) == c.code) country = &c;
  }
  if (country == nullptr || static_cast<int>(compact.size()) != country->length) return false;
  if (!IsDigit(compact[2]) || !IsDigit(compact[3])) return false;
  // Moves the first four characters to the end and reads letters as 10..35, in base 10, mod 97.
  int remainder = 0;
  for (size_t k = 0; k < compact.size(); ++k) {
    const char c = compact[(k + 4) % compact.size()];
    if (IsDigit(c)) {
      remainder = (remainder * 10 + (c - '0')) % 97;
    } else if (c >= 'A' && c <= 'Z') {
      remainder = (remainder * 100 + (c - 'A' + 10)) % 97;
    } else {
      return false;
    }
  }
  return remainder == 1;
}

bool SsnValid(std::string_view digits) {
  if (digits.size() != 9) return false;
  for (char c : digits) {
    if (!IsDigit(c)) return false;
  }
  const int area = Prefix(digits, 3);
  const int group = Prefix(digits.substr(3), 2);
  const int serial = Prefix(digits.substr(5), 4);
  if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return false;
  // Published examples: the Woolworth wallet card, the SSA's own sample, advertising numbers.
  if (digits == "078051120" || digits == "219099999" || digits == "123456789") return false;
  if (digits.substr(0, 8) == "98765432") return false;
  return true;
}

bool Ipv4Valid(std::string_view text) { return ParseIpv4(text); }

bool Ipv6Valid(std::string_view text) {
  if (text.size() < 2 || text.size() > 45) return false;
  const size_t gap = text.find("::");
  if (gap == std::string_view::npos) return CountGroups(text, /*allow_ipv4=*/true) == 8;
  if (text.find("::", gap + 1) != std::string_view::npos) return false;
  const int left = CountGroups(text.substr(0, gap), /*allow_ipv4=*/false);
  const int right = CountGroups(text.substr(gap + 2), /*allow_ipv4=*/true);
  return left >= 0 && right >= 0 && left + right <= 7;
}

bool IsDocumentationIp(std::string_view text) {
  if (text.find(':') != std::string_view::npos) {
    // 2001:db8::/32, in any letter case and with or without leading zeros.
    std::string lower(text);
    for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (!lower.starts_with("2001:")) return false;
    size_t i = 5;
    while (i < lower.size() && lower[i] == '0') ++i;
    return lower.compare(i, 4, "db8:") == 0;
  }
  return text.starts_with("192.0.2.") || text.starts_with("198.51.100.") ||
         text.starts_with("203.0.113.");
}

bool IsExampleEmailDomain(std::string_view domain) {
  // Case-insensitive "is `suffix` or ends with '.' + `suffix`", without allocating: this runs
  // for every e-mail candidate.
  auto ends_with = [&](std::string_view suffix, bool whole_label) {
    if (domain.size() < suffix.size()) return false;
    const size_t offset = domain.size() - suffix.size();
    for (size_t i = 0; i < suffix.size(); ++i) {
      const char c = domain[offset + i];
      if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != suffix[i]) return false;
    }
    return !whole_label || offset == 0 || domain[offset - 1] == '.';
  };
  for (std::string_view reserved : {"example.com", "example.org", "example.net"}) {
    if (ends_with(reserved, /*whole_label=*/true)) return true;
  }
  for (std::string_view tld : {".example", ".test", ".invalid", ".localhost"}) {
    if (ends_with(tld, /*whole_label=*/false)) return true;
  }
  return false;
}

bool JwtHeaderValid(std::string_view token) {
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos) return false;
  std::string header;
  uint32_t bits = 0;
  int count = 0;
  for (char c : token.substr(0, dot)) {
    const int v = Base64UrlValue(c);
    if (v < 0) return false;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      header.push_back(static_cast<char>((bits >> count) & 0xFF));
    }
  }
  return header.starts_with("{") && header.find("\"alg\"") != std::string::npos;
}

double ShannonEntropy(std::string_view text) {
  if (text.empty()) return 0;
  std::array<int, 256> counts{};
  for (unsigned char c : text) ++counts[c];
  double entropy = 0;
  for (int count : counts) {
    if (count == 0) continue;
    const double p = static_cast<double>(count) / static_cast<double>(text.size());
    entropy -= p * std::log2(p);
  }
  return entropy;
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !IsHexDigit(text[i])) return false;
  }
  return true;
}

bool IsHex(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!IsHexDigit(c)) return false;
  }
  return true;
}

}  // namespace switchyard::policies
